// Loads of what a decode step reads once, a product's weights: not kept in
// L1, and first out of L2 (an evict-first cache policy), so that the stream
// leaves L2 to the activations and the KV cache. On an H200 (afo bench,
// builds in turn) 8B 4-bit decode went 489.8, 494.0 -> 497.4, 497.3 tok/s
// and 8B bf16 221.0, 222.1 -> 222.8, 224.2; the int8 matvec's 8-bit
// weights lost with it (359.0 -> 348.8) and keep __ldg.
#ifndef AFO_CUDA_STREAM_LOAD_CUH
#define AFO_CUDA_STREAM_LOAD_CUH

#include <stdint.h>

namespace afo_cuda {

__device__ __forceinline__ uint64_t evict_first_policy() {
    uint64_t p;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}

__device__ __forceinline__ uint4 load_streamed(const uint4 *p, uint64_t policy) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "l"(policy));
    return v;
}

__device__ __forceinline__ uint16_t load_streamed(const uint16_t *p, uint64_t policy) {
    uint16_t v;
    asm("ld.global.nc.L1::no_allocate.L2::cache_hint.u16 %0, [%1], %2;" : "=h"(v) : "l"(p), "l"(policy));
    return v;
}

} // namespace afo_cuda

#endif
