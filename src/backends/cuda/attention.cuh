// What the attention kernels share: which keys a query sees, the mask's
// values, the conversions to and from the compute type, and the entries
// of the tensor-core kernel (attention_mma.cu) and the decode kernel
// (attention_decode.cu) for the dispatch in attention.cu.
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

__device__ __forceinline__ float to_c(float v) { return v; }
__device__ __forceinline__ float to_c(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_c(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ double to_c(double v) { return v; }

__device__ __forceinline__ void put(float *p, float v) { *p = v; }
__device__ __forceinline__ void put(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void put(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void put(double *p, double v) { *p = v; }

inline bool aligned16(const void *p, int64_t stride, size_t es) {
    return (uintptr_t)p % 16 == 0 && stride * (int64_t)es % 16 == 0;
}

// What attention.cu's dispatch passes its kernels and the decode kernel.
struct SdpaArgs {
    // p.q_rope set: the decode kernel ropes q (a host pointer, only tested
    // on the device; the rope itself, ~2 KB with its table, is that
    // kernel's second parameter, so that no other launch carries it)
    afo_cuda_sdpa p;
    int64_t G, R, nrb; // query heads per kv head, rows per kv head, row blocks per kv head
    int vec;           // rows of k and v may be read 16 bytes at a time
    int mma;           // for afo_cuda::sdpa_mma
};

// float16/bfloat16 attention with D == Dv of 64 or 128, q, k and v 16-byte
// aligned (pointers and strides), G query heads per kv head; no split-K.
cudaError_t sdpa_mma(const afo_cuda_sdpa &p, int64_t G, cudaStream_t st);

// The decode kernel (attention_decode.cu): whether it takes p, how many
// splits of the keys it wants, and its launch. Up to DEC_CLUSTER splits
// merge in a cluster's shared memory; more merge through p.scratch.
constexpr int DEC_CLUSTER = 8;
bool decode_applies(const afo_cuda_sdpa &p, const SdpaArgs &a);
int64_t decode_splits(const afo_cuda_sdpa &p);
cudaError_t sdpa_decode(const SdpaArgs &a, cudaStream_t st);

} // namespace afo_cuda

#endif
