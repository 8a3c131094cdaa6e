// What the two attention kernels share: which keys a query sees, the
// mask's values, and the entry of the tensor-core kernel (attention_mma.cu)
// for the dispatch in attention.cu.
#ifndef AFO_CUDA_ATTENTION_CUH
#define AFO_CUDA_ATTENTION_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "backends/cuda/nn_kernels.h"

namespace afo_cuda {

// Query i sits at key position pos (Lk - Lq + i, or *position + i) and sees the keys
// [key_lo(pos), key_hi(pos)); both only grow with pos.
__device__ __forceinline__ int64_t key_lo(const afo_cuda_sdpa &p, int64_t pos) {
    return p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
}

__device__ __forceinline__ int64_t key_hi(const afo_cuda_sdpa &p, int64_t pos) {
    return p.causal && pos + 1 < p.Lk ? pos + 1 : p.Lk;
}

__device__ __forceinline__ double mask_at(const void *m, afo_dtype dt, int64_t i) {
    switch (dt) {
    case AFO_BOOL: return ((const uint8_t *)m)[i] ? 0.0 : -INFINITY;
    case AFO_FLOAT16: return __half2float(((const __half *)m)[i]);
    case AFO_BFLOAT16: return __bfloat162float(((const __nv_bfloat16 *)m)[i]);
    case AFO_FLOAT32: return ((const float *)m)[i];
    default: return ((const double *)m)[i];
    }
}

// float16/bfloat16 attention with D == Dv of 64 or 128, q, k and v 16-byte
// aligned (pointers and strides), G query heads per kv head; no split-K.
cudaError_t sdpa_mma(const afo_cuda_sdpa &p, int64_t G, cudaStream_t st);

} // namespace afo_cuda

#endif
