// Device helpers shared by the quantized kernels (quant.cu, quant_mm.cu,
// quant_mv.cu, decode_step.cu): float loads and stores in the dtypes scales,
// biases and activations may have, and the int8 dot product.
#ifndef AFO_CUDA_QUANT_COMMON_CUH
#define AFO_CUDA_QUANT_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/quant_kernels.h"

namespace afo_q {

__device__ __forceinline__ float load_f(const void *p, int64_t i, afo_dtype dt) {
    switch (dt) {
    case AFO_BFLOAT16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case AFO_FLOAT16: return __half2float(((const __half *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

// Rounds as the CPU's afo_f32_to_bf16 and afo_f32_to_f16 do, NaNs included,
// so that results meant to be bit-exact stay so for every input.
__device__ __forceinline__ uint16_t bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
__device__ __forceinline__ uint16_t f16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(((u >> 16) & 0x8000u) | 0x7e00u);
    return __half_as_ushort(__float2half_rn(f));
}

__device__ __forceinline__ void store_f(void *p, int64_t i, afo_dtype dt, float v) {
    switch (dt) {
    case AFO_BFLOAT16: ((uint16_t *)p)[i] = bf16_bits(v); break;
    case AFO_FLOAT16: ((uint16_t *)p)[i] = f16_bits(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

// acc + the dot product of four unsigned bytes (4-bit levels, or 16 times
// them) and four signed int8 activations.
__device__ __forceinline__ int dot4_u8_s8(uint32_t levels, int x, int acc) {
    int r;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(levels), "r"(x), "r"(acc));
    return r;
}

// Activation types as template parameters.
using afo_cuda::from_f;
using afo_cuda::to_f;

} // namespace afo_q

#endif
