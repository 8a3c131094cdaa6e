// Small copies as kernels (core_kernels.h says why).
#include <string.h>

#include "backends/cuda/core_kernels.h"

namespace {

struct Bytes {
    unsigned char b[AFO_CUDA_SMALL_COPY];
};

__global__ void put_small(unsigned char *dst, Bytes bytes, int n) {
    for (int i = 0; i < n; i++) dst[i] = bytes.b[i];
}

__global__ void copy_small(unsigned char *dst, const unsigned char *src, int n) {
    for (int i = 0; i < n; i++) dst[i] = src[i];
    __threadfence_system(); // (for a host reader)
}

} // namespace

extern "C" cudaError_t afo_cuda_put_small(void *dst, const void *bytes, size_t n, cudaStream_t stream) {
    if (n > AFO_CUDA_SMALL_COPY) return cudaErrorInvalidValue;
    Bytes b = {};
    memcpy(b.b, bytes, n);
    put_small<<<1, 1, 0, stream>>>((unsigned char *)dst, b, (int)n);
    return cudaGetLastError();
}

extern "C" cudaError_t afo_cuda_copy_small(void *dst, const void *src, size_t n, cudaStream_t stream) {
    if (n > AFO_CUDA_SMALL_COPY) return cudaErrorInvalidValue;
    copy_small<<<1, 1, 0, stream>>>((unsigned char *)dst, (const unsigned char *)src, (int)n);
    return cudaGetLastError();
}
