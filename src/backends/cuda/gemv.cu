// Decode-sized products x [R, K] · Wᵀ (W row-major [N, K], R ≤ 8): kSplit
// warps share output column n, each streaming a quarter of W's row n with
// 16-byte loads, kUnroll of them in flight per lane, and keeping R sums
// that meet in shared memory; x is small and read through the cache by
// every warp. cuBLAS spends more host time choosing and launching its
// kernel than this one takes on the GPU at decode sizes. Many short warps
// hide HBM's latency best: against one warp per row with 8 loads in flight
// (the previous kernel), 4 warps per row with 2 loads each read 4096x14336
// at 3759 GB/s instead of 2498 and 4096x4096 at 2877 instead of 2269 on an
// H200 (variants timed side by side; one warp with fewer loads, 2 or 8
// warps, and cp.async rings were all slower).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/nn_kernels.h"
#include "backends/cuda/stream_load.cuh"
#include "backends/cuda/warp.cuh"

namespace {

constexpr int kMaxRows = 8;
constexpr int kWarps = 8;
constexpr int kSplit = 4;
constexpr int kUnroll = 2;

using afo_cuda::to_f;
using afo_cuda::unpack;

// n consecutive elements of T from 16-byte aligned memory, as floats;
// GLOBAL: through the read-only cache (not for shared memory).
template <typename T, int n, bool GLOBAL = true> __device__ inline void load_vec(const T *p, float *out) {
    constexpr int per = 16 / sizeof(T);
#pragma unroll
    for (int c = 0; c < (n + per - 1) / per; c++) {
        uint4 raw = GLOBAL ? __ldg((const uint4 *)p + c) : ((const uint4 *)p)[c];
        const T *v = (const T *)&raw;
#pragma unroll
        for (int i = 0; i < per && c * per + i < n; i++) out[c * per + i] = to_f(v[i]);
    }
}

// MAXR: the rows of x the kernel is compiled for (1 for decode, so that
// no registers go to the other seven sums).
template <typename W, typename X, int MAXR>
__global__ void __launch_bounds__(kWarps * 32, 4)
    gemv(const W *w, const X *x, void *out, afo_dtype out_dtype, int64_t N, int64_t K, int64_t x_row, int R, bool vector,
         afo_cuda_gemv_fusion fuse) {
    afo_cuda::follow_prior_grid();
    __shared__ float partial[kWarps][MAXR];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, part = warp % kSplit;
    const int64_t n = (int64_t)blockIdx.x * (kWarps / kSplit) + warp / kSplit;
    float acc[MAXR] = {};
    if (n < N && vector) { // K a multiple of the vector width, rows and x 16-byte aligned
        constexpr int V = 16 / sizeof(W);
        const int64_t pieces = K / V, lo = pieces * part / kSplit, hi = pieces * (part + 1) / kSplit;
        const uint4 *row = (const uint4 *)(w + n * K);
        for (int64_t p0 = lo + lane; p0 < hi; p0 += 32 * kUnroll) {
            uint4 raw[kUnroll]; // kept packed until used: registers for more loads in flight
#pragma unroll
            for (int u = 0; u < kUnroll; u++)
                if (p0 + u * 32 < hi) raw[u] = __ldg(row + p0 + u * 32);
#pragma unroll
            for (int u = 0; u < kUnroll; u++) {
                const int64_t k = (p0 + u * 32) * V;
                if (p0 + u * 32 >= hi) break;
                float wv[V];
                unpack<W>(raw[u], wv);
#pragma unroll
                for (int r = 0; r < MAXR; r++) {
                    if (r >= R) break;
                    float xv[V];
                    load_vec<X, V>(x + r * x_row + k, xv);
#pragma unroll
                    for (int i = 0; i < V; i++) acc[r] = fmaf(wv[i], xv[i], acc[r]);
                }
            }
        }
    } else if (n < N) {
        const int64_t lo = K * part / kSplit, hi = K * (part + 1) / kSplit;
        for (int64_t k = lo + lane; k < hi; k += 32) {
            float wv = to_f(w[n * K + k]);
            for (int r = 0; r < R && r < MAXR; r++) acc[r] += wv * to_f(x[r * x_row + k]);
        }
    }
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
        const float v = afo_cuda::warp_sum(acc[r]);
        if (lane == 0) partial[warp][r] = v;
    }
    __syncthreads();
    if (part == 0 && lane < R && n < N) {
        float v = 0.0f;
        for (int i = 0; i < kSplit; i++) v += partial[warp + i][lane];
        afo_cuda::store_from(out, lane * N + n, out_dtype, afo_cuda::plus_addend(v, fuse.addend, lane * N + n));
    }
}

// One row of x (decode) with the vector layout: a grid of a few blocks per
// SM, each looping over pairs of rows, and every lane keeping kDepth
// 16-byte loads in flight across the end of a row: the first loads of the
// next row go out before this one's sums meet. A block per pair of rows
// (the kernel above) drains its loads and reduces before the next block
// starts, and the 4096-row products of a decode step read 2.5-2.7 TB/s.
// NORM: x is the input of an rms norm whose output the product takes;
// every block normalizes x itself into shared memory (x is a few KB, read
// from L2 while the first weight loads are in flight), and the rows read
// it from there. Normalizing in the loop instead, per row, made 8B bf16
// decode 8% slower: the product is close to bound by instruction issue.
constexpr int kDepth = 2, kBlocksPerSM = 4;
constexpr size_t kMaxNormedBytes = 48 * 1024; // without opting in to more shared memory

template <typename W, typename X, bool NORM>
__global__ void __launch_bounds__(kWarps * 32, kBlocksPerSM)
    gemv_stream(const W *w, const X *x, void *out, afo_dtype out_dtype, int64_t N, int64_t K,
                afo_cuda_gemv_fusion fuse) {
    afo_cuda::follow_prior_grid();
    constexpr int V = 16 / sizeof(W), kRows = kWarps / kSplit;
    __shared__ float partial[2][kWarps]; // by parity of the pass: one barrier a pass
    extern __shared__ uint4 normed[];    // NORM: x normalized, K elements of X
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, part = warp % kSplit, sub = warp / kSplit;
    const int64_t pieces = K / V, lo = pieces * part / kSplit, hi = pieces * (part + 1) / kSplit;
    const int64_t groups = (N + kRows - 1) / kRows;
    uint4 next[kDepth];
    const uint64_t policy = afo_cuda::evict_first_policy();
    auto fetch = [&](int64_t n, int64_t p0) {
        const uint4 *row = (const uint4 *)(w + n * K);
#pragma unroll
        for (int d = 0; d < kDepth; d++)
            if (n < N && p0 + d * 32 < hi) next[d] = afo_cuda::load_streamed(row + p0 + d * 32, policy);
    };
    int64_t g = blockIdx.x;
    fetch(g * kRows + sub, lo + lane);
    if constexpr (NORM) {
        constexpr int XV = 16 / sizeof(X); // x's elements per 16 bytes
        const uint4 *xq = (const uint4 *)x, *wq = (const uint4 *)fuse.norm_weight;
        float ss = 0.0f, f[XV];
        for (int64_t i = threadIdx.x; i < K / XV; i += kWarps * 32) {
            unpack<X>(__ldg(xq + i), f);
#pragma unroll
            for (int e = 0; e < XV; e++) ss += f[e] * f[e];
        }
        ss = afo_cuda::warp_sum(ss);
        if (lane == 0) partial[0][warp] = ss;
        __syncthreads();
        ss = 0.0f;
        for (int i = 0; i < kWarps; i++) ss += partial[0][i];
        const float inv = 1.f / sqrtf(ss / (float)K + fuse.eps); // as the norm kernel computes it
        for (int64_t i = threadIdx.x; i < K / XV; i += kWarps * 32) {
            float nw[XV];
            unpack<X>(__ldg(xq + i), f);
            unpack<X>(__ldg(wq + i), nw);
            X *o = (X *)&normed[i];
#pragma unroll
            for (int e = 0; e < XV; e++) o[e] = afo_cuda::from_f<X>(f[e] * inv * nw[e]); // as the norm kernel stores it
        }
        __syncthreads(); // also keeps pass 0's partial sums from the squares'
        x = (const X *)normed;
    }
    for (int pass = 0; g < groups; g += gridDim.x, pass ^= 1) {
        const int64_t n = g * kRows + sub;
        float acc = 0.0f;
        for (int64_t p0 = lo + lane; p0 < hi; p0 += 32 * kDepth) {
            uint4 cur[kDepth];
#pragma unroll
            for (int d = 0; d < kDepth; d++) cur[d] = next[d];
            // the rest of this row, or the start of the block's next one
            if (p0 + 32 * kDepth < hi) fetch(n, p0 + 32 * kDepth);
            else fetch((g + gridDim.x) * kRows + sub, lo + lane);
#pragma unroll
            for (int d = 0; d < kDepth; d++) {
                if (p0 + d * 32 >= hi) break;
                float wv[V], xv[V];
                unpack<W>(cur[d], wv);
                if constexpr (NORM) load_vec<X, V, false>(x + (p0 + d * 32) * V, xv);
                else load_vec<X, V>(x + (p0 + d * 32) * V, xv);
#pragma unroll
                for (int i = 0; i < V; i++) acc = fmaf(wv[i], xv[i], acc);
            }
        }
        acc = afo_cuda::warp_sum(acc);
        if (lane == 0) partial[pass][warp] = acc;
        __syncthreads();
        if (part == 0 && lane == 0 && n < N) {
            float v = 0.0f;
            for (int i = 0; i < kSplit; i++) v += partial[pass][warp + i];
            afo_cuda::store_from(out, n, out_dtype, afo_cuda::plus_addend(v, fuse.addend, n));
        }
    }
}

template <typename W, typename X>
bool launch(const void *w, const void *x, void *out, afo_dtype out_dtype, int64_t N, int64_t K, int64_t x_row, int R,
            const afo_cuda_gemv_fusion &fuse, cudaStream_t s) {
    constexpr int V = 16 / sizeof(W);
    bool vector = K % V == 0 && (uintptr_t)w % 16 == 0 && (x_row % V == 0) && (uintptr_t)x % (sizeof(X) * V) == 0;
    const bool norm = fuse.norm_weight != nullptr;
    const size_t normed_bytes = norm ? (size_t)K * sizeof(X) : 0;
    if (norm && (R != 1 || !vector || K % (16 / sizeof(X)) != 0 || (uintptr_t)x % 16 != 0 ||
                 (uintptr_t)fuse.norm_weight % 16 != 0 || normed_bytes > kMaxNormedBytes))
        return false;
    constexpr int rows_per_block = kWarps / kSplit;
    unsigned blocks = (unsigned)((N + rows_per_block - 1) / rows_per_block);
    const W *wt = (const W *)w;
    const X *xt = (const X *)x;
    if (R == 1 && vector) {
        const unsigned most = (unsigned)afo_cuda_multiprocessors() * kBlocksPerSM;
        const unsigned grid = blocks < most ? blocks : most;
        afo_cuda::launch_early(norm ? gemv_stream<W, X, true> : gemv_stream<W, X, false>, dim3(grid),
                               dim3(kWarps * 32), normed_bytes, s, wt, xt, out, out_dtype, N, K, fuse);
    } else {
        afo_cuda::launch_early(R == 1 ? gemv<W, X, 1> : gemv<W, X, kMaxRows>, dim3(blocks), dim3(kWarps * 32), 0, s,
                               wt, xt, out, out_dtype, N, K, x_row, R, vector, fuse);
    }
    return true;
}

template <typename W>
bool launch_x(const void *w, const void *x, afo_dtype x_dtype, void *out, afo_dtype out_dtype, int64_t N, int64_t K,
              int64_t x_row, int R, const afo_cuda_gemv_fusion &fuse, cudaStream_t s) {
    switch (x_dtype) {
    case AFO_FLOAT16: return launch<W, __half>(w, x, out, out_dtype, N, K, x_row, R, fuse, s);
    case AFO_BFLOAT16: return launch<W, __nv_bfloat16>(w, x, out, out_dtype, N, K, x_row, R, fuse, s);
    default: return launch<W, float>(w, x, out, out_dtype, N, K, x_row, R, fuse, s);
    }
}

} // namespace

extern "C" int afo_cuda_gemv_max_rows(void) { return kMaxRows; }

extern "C" bool afo_cuda_gemv(const void *w, afo_dtype w_dtype, const void *x, afo_dtype x_dtype, int64_t x_row,
                              void *out, afo_dtype out_dtype, int64_t R, int64_t N, int64_t K,
                              const afo_cuda_gemv_fusion *fuse, cudaStream_t stream) {
    const afo_cuda_gemv_fusion f = fuse ? *fuse : afo_cuda_gemv_fusion{};
    switch (w_dtype) {
    case AFO_FLOAT16: return launch_x<__half>(w, x, x_dtype, out, out_dtype, N, K, x_row, (int)R, f, stream);
    case AFO_BFLOAT16: return launch_x<__nv_bfloat16>(w, x, x_dtype, out, out_dtype, N, K, x_row, (int)R, f, stream);
    default: return launch_x<float>(w, x, x_dtype, out, out_dtype, N, K, x_row, (int)R, f, stream);
    }
}
