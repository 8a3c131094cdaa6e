// Decode-sized products x [R, K] · Wᵀ (W row-major [N, K], R ≤ 8): one warp
// per output column n streams W's row n once with 16-byte loads and keeps R
// sums; x is small and read through the cache by every warp. cuBLAS spends
// more host time choosing and launching its kernel than this one takes on
// the GPU at decode sizes. Each lane issues kUnroll loads of W before using
// any: with one in flight per warp, HBM saw a quarter of its bandwidth
// (bench_cuda_gemv).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/nn_kernels.h"
#include "backends/cuda/warp.cuh"

namespace {

constexpr int kMaxRows = 8;
constexpr int kWarps = 8;
constexpr int kUnroll = 8;

__device__ inline float to_f(float v) { return v; }
__device__ inline float to_f(__half v) { return __half2float(v); }
__device__ inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

// n consecutive elements of T from 16-byte aligned memory, as floats.
template <typename T, int n> __device__ inline void load_vec(const T *p, float *out) {
    constexpr int per = 16 / sizeof(T);
#pragma unroll
    for (int c = 0; c < (n + per - 1) / per; c++) {
        uint4 raw = __ldg((const uint4 *)p + c);
        const T *v = (const T *)&raw;
#pragma unroll
        for (int i = 0; i < per && c * per + i < n; i++) out[c * per + i] = to_f(v[i]);
    }
}

// The 16 / sizeof(T) elements of a loaded vector, as floats.
template <typename T> __device__ inline void unpack(const uint4 &raw, float *out) {
    const T *v = (const T *)&raw;
#pragma unroll
    for (int i = 0; i < (int)(16 / sizeof(T)); i++) out[i] = to_f(v[i]);
}

template <typename W, typename X>
__global__ void gemv(const W *w, const X *x, void *out, afo_dtype out_dtype, int64_t N, int64_t K, int64_t x_row,
                     int R, bool vector) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t n = (int64_t)blockIdx.x * kWarps + warp;
    if (n >= N) return;
    const W *row = w + n * K;
    float acc[kMaxRows] = {};
    if (vector) { // K a multiple of the vector width, rows and x 16-byte aligned
        constexpr int V = 16 / sizeof(W);
        for (int64_t k0 = (int64_t)lane * V; k0 < K; k0 += 32 * V * kUnroll) {
            uint4 raw[kUnroll]; // kept packed until used: registers for more loads in flight
#pragma unroll
            for (int u = 0; u < kUnroll; u++)
                if (k0 + u * 32 * V < K) raw[u] = __ldg((const uint4 *)(row + k0 + u * 32 * V));
#pragma unroll
            for (int u = 0; u < kUnroll; u++) {
                int64_t k = k0 + u * 32 * V;
                if (k >= K) break;
                float wv[V];
                unpack<W>(raw[u], wv);
#pragma unroll
                for (int r = 0; r < kMaxRows; r++) {
                    if (r >= R) break;
                    float xv[V];
                    load_vec<X, V>(x + r * x_row + k, xv);
#pragma unroll
                    for (int i = 0; i < V; i++) acc[r] = fmaf(wv[i], xv[i], acc[r]);
                }
            }
        }
    } else {
        for (int64_t k = lane; k < K; k += 32) {
            float wv = to_f(row[k]);
            for (int r = 0; r < R; r++) acc[r] += wv * to_f(x[r * x_row + k]);
        }
    }
#pragma unroll
    for (int r = 0; r < kMaxRows; r++) {
        if (r >= R) break;
        float v = afo_cuda::warp_sum(acc[r]);
        if (lane == 0) afo_cuda::store_from(out, r * N + n, out_dtype, v);
    }
}

template <typename W, typename X>
void launch(const void *w, const void *x, void *out, afo_dtype out_dtype, int64_t N, int64_t K, int64_t x_row,
            int R, cudaStream_t s) {
    constexpr int V = 16 / sizeof(W);
    bool vector = K % V == 0 && (uintptr_t)w % 16 == 0 && (x_row % V == 0) && (uintptr_t)x % (sizeof(X) * V) == 0;
    unsigned blocks = (unsigned)((N + kWarps - 1) / kWarps);
    gemv<W, X><<<blocks, kWarps * 32, 0, s>>>((const W *)w, (const X *)x, out, out_dtype, N, K, x_row, R, vector);
}

template <typename W>
void launch_x(const void *w, const void *x, afo_dtype x_dtype, void *out, afo_dtype out_dtype, int64_t N, int64_t K,
              int64_t x_row, int R, cudaStream_t s) {
    switch (x_dtype) {
    case AFO_FLOAT16: launch<W, __half>(w, x, out, out_dtype, N, K, x_row, R, s); break;
    case AFO_BFLOAT16: launch<W, __nv_bfloat16>(w, x, out, out_dtype, N, K, x_row, R, s); break;
    default: launch<W, float>(w, x, out, out_dtype, N, K, x_row, R, s); break;
    }
}

} // namespace

extern "C" int afo_cuda_gemv_max_rows(void) { return kMaxRows; }

extern "C" void afo_cuda_gemv(const void *w, afo_dtype w_dtype, const void *x, afo_dtype x_dtype, int64_t x_row,
                              void *out, afo_dtype out_dtype, int64_t R, int64_t N, int64_t K, cudaStream_t stream) {
    switch (w_dtype) {
    case AFO_FLOAT16: launch_x<__half>(w, x, x_dtype, out, out_dtype, N, K, x_row, (int)R, stream); break;
    case AFO_BFLOAT16: launch_x<__nv_bfloat16>(w, x, x_dtype, out, out_dtype, N, K, x_row, (int)R, stream); break;
    default: launch_x<float>(w, x, x_dtype, out, out_dtype, N, K, x_row, (int)R, stream); break;
    }
}
