// rms_norm / layer_norm (one block per row) and rope (a thread per rotated
// pair and position). float16/bfloat16/float32 compute in float32, float64
// in double, following the CPU kernels: two-pass statistics, rope angles in
// double.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "backends/cuda/nn_kernels.h"
#include "backends/cuda/warp.cuh"

namespace {

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T, typename C> __device__ __forceinline__ C load(const T *p, int64_t i) { return (C)to_f(p[i]); }
template <> __device__ __forceinline__ double load<double, double>(const double *p, int64_t i) { return p[i]; }

template <typename T> __device__ __forceinline__ void store(T *p, int64_t i, float v);
template <> __device__ __forceinline__ void store<float>(float *p, int64_t i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void store<__half>(__half *p, int64_t i, float v) { p[i] = __float2half_rn(v); }
template <> __device__ __forceinline__ void store<__nv_bfloat16>(__nv_bfloat16 *p, int64_t i, float v) {
    p[i] = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void store(double *p, int64_t i, double v) { p[i] = v; }

// Weights, biases and frequencies may have any float dtype.
__device__ double vec_at(const afo_cuda_vec &v, int64_t i, double fill) {
    if (!v.data) return fill;
    int64_t k = i * v.stride;
    switch (v.dtype) {
    case AFO_FLOAT16: return __half2float(((const __half *)v.data)[k]);
    case AFO_BFLOAT16: return __bfloat162float(((const __nv_bfloat16 *)v.data)[k]);
    case AFO_FLOAT32: return ((const float *)v.data)[k];
    default: return ((const double *)v.data)[k];
    }
}

// Offset of row r (C order over the axes before the last). Row counts fit
// 32 bits in practice, and a 32-bit division is a fraction of a 64-bit
// one, which every thread of a norm or rope pays for each of its rows.
template <typename I> __device__ int64_t row_offset_in(const afo_cuda_rows &x, I r) {
    int64_t off = 0;
    for (int a = x.ndim - 1; a >= 0; a--) {
        const I n = (I)x.shape[a];
        off += (int64_t)(r % n) * x.strides[a];
        r /= n;
    }
    return off;
}

__device__ int64_t row_offset(const afo_cuda_rows &x, int64_t r) {
    return x.rows <= (int64_t)UINT32_MAX ? row_offset_in<uint32_t>(x, (uint32_t)r) : row_offset_in<int64_t>(x, r);
}

template <typename C> __device__ C block_sum(C v, C *red) {
    v = afo_cuda::warp_sum(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads(); // red may still be read from the previous reduction
    if (lane == 0) red[warp] = v;
    __syncthreads();
    C s = 0;
    for (int w = 0; w < nw; w++) s += red[w];
    return s;
}

// A row of up to kHeld elements a thread is loaded once, into registers,
// with every load issued before the first sum: the loop that read it three
// times made each of a decode step's 65 norms wait for memory eight times
// in a row (7.7 us for 4096 elements on an H200).
constexpr int kHeld = 16;

template <typename T, typename C>
__global__ void norm_kernel(afo_cuda_rows x, const T *xd, T *out, afo_cuda_vec w, afo_cuda_vec b, int center,
                            double eps) {
    __shared__ C red[32];
    int64_t r = blockIdx.x, n = x.n;
    const T *row = xd + row_offset(x, r);
    if (n <= (int64_t)kHeld * blockDim.x) {
        C v[kHeld];
#pragma unroll
        for (int k = 0; k < kHeld; k++) {
            int64_t i = threadIdx.x + (int64_t)k * blockDim.x;
            v[k] = i < n ? load<T, C>(row, i * x.step) : (C)0;
        }
        C c = 0;
        if (center) {
            C s = 0;
#pragma unroll
            for (int k = 0; k < kHeld; k++) s += v[k];
            c = block_sum(s, red) / (C)n;
        }
        C ss = 0;
#pragma unroll
        for (int k = 0; k < kHeld; k++)
            if (threadIdx.x + (int64_t)k * blockDim.x < n) ss += (v[k] - c) * (v[k] - c);
        C inv = (C)1 / sqrt(block_sum(ss, red) / (C)n + (C)eps);
#pragma unroll
        for (int k = 0; k < kHeld; k++) {
            int64_t i = threadIdx.x + (int64_t)k * blockDim.x;
            if (i < n) store(out, r * n + i, (v[k] - c) * inv * (C)vec_at(w, i, 1.0) + (C)vec_at(b, i, 0.0));
        }
        return;
    }
    C c = 0;
    if (center) {
        C s = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += load<T, C>(row, i * x.step);
        c = block_sum(s, red) / (C)n;
    }
    C ss = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        C d = load<T, C>(row, i * x.step) - c;
        ss += d * d;
    }
    C inv = (C)1 / sqrt(block_sum(ss, red) / (C)n + (C)eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        C v = (load<T, C>(row, i * x.step) - c) * inv * (C)vec_at(w, i, 1.0) + (C)vec_at(b, i, 0.0);
        store(out, r * n + i, v);
    }
}

// Rows at one position (r = l + k L) share their angles: a thread takes a
// rotated pair, or a column past dims, at one position for `per_thread` of
// those rows, so that one float64 sincos serves them all. With a thread
// per element, a 4096-token prefill's rope took 50 us a call on an H200,
// most of it in 8.4M double-precision sincos. A decode step (L = 1) keeps
// a row a thread: its rows' loads would wait for each other in the loop.
constexpr int kRopeRows = 8, kRopeSharedFrom = 64;

template <typename T, typename C>
__global__ void rope_kernel(afo_cuda_rows x, const T *xd, T *out, afo_cuda_rope p, int64_t cols, int64_t chunks,
                            int per_thread) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, j = t % cols, l = t / cols % p.L,
                  chunk = t / cols / p.L;
    if (chunk >= chunks) return;
    const int64_t n = x.n, half = p.dims / 2, per_position = x.rows / p.L;
    const bool rotated = j < half;
    // Pairs are (2i, 2i+1) when traditional, else (i, i + half).
    const int64_t d = !rotated ? p.dims + (j - half) : p.traditional ? 2 * j : j;
    const int64_t partner = p.traditional ? d + 1 : d + half;
    C cs = 1, sn = 0;
    if (rotated) {
        double inv_freq = p.freqs.data             ? 1.0 / vec_at(p.freqs, j, 1.0)
                          : j < AFO_CUDA_ROPE_TABLE ? p.inv_freq[j]
                                                    : pow(p.base, -2.0 * (double)j / (double)p.dims);
        int64_t pos = p.offset + (p.position ? *p.position : 0) + l;
        double th = (double)pos * p.scale * inv_freq, s, c;
        sincos(th, &s, &c);
        if (p.inverse) s = -s;
        cs = (C)c, sn = (C)s;
    }
    for (int k = 0; k < per_thread; k++) {
        const int64_t q = chunk * per_thread + k, r = l + q * p.L;
        if (q >= per_position) break;
        const T *row = xd + row_offset(x, r);
        C a = load<T, C>(row, d * x.step);
        if (!rotated) {
            store(out, r * n + d, a);
            continue;
        }
        C other = load<T, C>(row, partner * x.step);
        store(out, r * n + d, a * cs - other * sn);
        store(out, r * n + partner, a * sn + other * cs);
    }
}

int norm_threads(int64_t n) { return n >= 2048 ? 512 : n >= 512 ? 256 : n >= 128 ? 128 : 32; }

template <typename T, typename C>
void norm_launch(const afo_cuda_rows *x, const void *xd, void *out, afo_cuda_vec w, afo_cuda_vec b, int center,
                 double eps, cudaStream_t st) {
    norm_kernel<T, C><<<(unsigned)x->rows, norm_threads(x->n), 0, st>>>(*x, (const T *)xd, (T *)out, w, b, center,
                                                                        eps);
}

template <typename T, typename C>
void rope_launch(const afo_cuda_rows *x, const void *xd, void *out, const afo_cuda_rope *p, cudaStream_t st) {
    if (x->rows == 0 || x->n == 0) return;
    const int per_thread = p->L >= kRopeSharedFrom ? kRopeRows : 1;
    const int64_t cols = p->dims / 2 + (x->n - p->dims), chunks = (x->rows / p->L + per_thread - 1) / per_thread;
    const int64_t threads = chunks * p->L * cols;
    rope_kernel<T, C><<<(unsigned)((threads + 255) / 256), 256, 0, st>>>(*x, (const T *)xd, (T *)out, *p, cols,
                                                                         chunks, per_thread);
}

} // namespace

extern "C" void afo_cuda_norm(const afo_cuda_rows *x, const void *xd, afo_dtype dt, void *out, afo_cuda_vec w,
                              afo_cuda_vec b, int center, double eps, cudaStream_t st) {
    switch (dt) {
    case AFO_FLOAT16: norm_launch<__half, float>(x, xd, out, w, b, center, eps, st); break;
    case AFO_BFLOAT16: norm_launch<__nv_bfloat16, float>(x, xd, out, w, b, center, eps, st); break;
    case AFO_FLOAT32: norm_launch<float, float>(x, xd, out, w, b, center, eps, st); break;
    default: norm_launch<double, double>(x, xd, out, w, b, center, eps, st); break;
    }
}

extern "C" void afo_cuda_rope_apply(const afo_cuda_rows *x, const void *xd, afo_dtype dt, void *out,
                                    const afo_cuda_rope *p, cudaStream_t st) {
    switch (dt) {
    case AFO_FLOAT16: rope_launch<__half, float>(x, xd, out, p, st); break;
    case AFO_BFLOAT16: rope_launch<__nv_bfloat16, float>(x, xd, out, p, st); break;
    case AFO_FLOAT32: rope_launch<float, float>(x, xd, out, p, st); break;
    default: rope_launch<double, double>(x, xd, out, p, st); break;
    }
}
