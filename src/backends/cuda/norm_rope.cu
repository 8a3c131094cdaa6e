// rms_norm / layer_norm (one block per row) and rope (a thread per rotated
// pair and position). float16/bfloat16/float32 compute in float32, float64
// in double, following the CPU kernels: two-pass statistics, rope angles in
// double.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/nn_kernels.h"
#include "backends/cuda/rope.cuh"
#include "backends/cuda/warp.cuh"

namespace {

using afo_cuda::rope_angle;
using afo_cuda::rope_rotate;
using afo_cuda::to_f;
using afo_cuda::unpack;
using afo_cuda::vec_at;

template <typename T> constexpr afo_dtype dtype_of() {
    return std::is_same<T, __half>::value ? AFO_FLOAT16 : std::is_same<T, __nv_bfloat16>::value ? AFO_BFLOAT16
           : std::is_same<T, float>::value ? AFO_FLOAT32 : AFO_FLOAT64;
}

template <typename T, typename C> __device__ __forceinline__ C load(const T *p, int64_t i) { return (C)to_f(p[i]); }
template <> __device__ __forceinline__ double load<double, double>(const double *p, int64_t i) { return p[i]; }

template <typename T> __device__ __forceinline__ void store(T *p, int64_t i, float v);
template <> __device__ __forceinline__ void store<float>(float *p, int64_t i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void store<__half>(__half *p, int64_t i, float v) { p[i] = __float2half_rn(v); }
template <> __device__ __forceinline__ void store<__nv_bfloat16>(__nv_bfloat16 *p, int64_t i, float v) {
    p[i] = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void store(double *p, int64_t i, double v) { p[i] = v; }

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

// Elements first + k * step (k < N, below n) of a weight, bias or
// frequency vector, or fill: one switch on the dtype, then N loads in
// flight together. A switch per element converts each value in its own
// branch, so each load waited for the one before.
template <typename C, int N>
__device__ void load_vec(const afo_cuda_vec &v, int64_t first, int64_t step, int64_t n, C fill, C (&out)[N]) {
#define AFO_LOAD_VEC(ty, conv)                                                                                       \
    for (int k = 0; k < N; k++) {                                                                                    \
        const int64_t i = first + k * step;                                                                          \
        out[k] = i < n ? (C)conv(((const ty *)v.data)[i * v.stride]) : fill;                                         \
    }
    switch (v.data ? v.dtype : AFO_BOOL) {
    case AFO_FLOAT16: AFO_LOAD_VEC(__half, __half2float) break;
    case AFO_BFLOAT16: AFO_LOAD_VEC(__nv_bfloat16, __bfloat162float) break;
    case AFO_FLOAT32: AFO_LOAD_VEC(float, ) break;
    case AFO_FLOAT64: AFO_LOAD_VEC(double, ) break;
    default:
        for (int k = 0; k < N; k++) out[k] = fill;
    }
#undef AFO_LOAD_VEC
}

// A row of up to HELD elements a thread (HELD > 0) is loaded once, into
// registers, with its weights and biases, every load issued before the
// first sum: the loop that read it three times made each of a decode
// step's 65 norms wait for memory eight times in a row (7.7 us for 4096
// elements on an H200), and weights read between the stores (which may
// alias them) waited for each other (a 2048 x 4096 prefill norm took
// 63 us, against about 8 for its bytes). HELD is the least of 4, 8, 16
// that holds the row, so that short rows keep the registers of few.
constexpr int kNormThreads = 512;

template <typename T, typename C, int HELD>
__global__ void __launch_bounds__(kNormThreads) norm_kernel(afo_cuda_rows x, const T *xd, T *out, afo_cuda_vec w,
                                                            afo_cuda_vec b, int center, double eps) {
    afo_cuda::follow_prior_grid();
    __shared__ C red[32];
    int64_t r = blockIdx.x, n = x.n;
    const T *row = xd + row_offset(x, r);
    if constexpr (HELD > 0) {
        C v[HELD], wv[HELD], bv[HELD];
#pragma unroll
        for (int k = 0; k < HELD; k++) {
            int64_t i = threadIdx.x + (int64_t)k * blockDim.x;
            v[k] = i < n ? load<T, C>(row, i * x.step) : (C)0;
        }
        load_vec(w, threadIdx.x, blockDim.x, n, (C)1, wv);
        load_vec(b, threadIdx.x, blockDim.x, n, (C)0, bv);
        C c = 0;
        if (center) {
            C s = 0;
#pragma unroll
            for (int k = 0; k < HELD; k++) s += v[k];
            c = afo_cuda::block_sum(s, red) / (C)n;
        }
        C ss = 0;
#pragma unroll
        for (int k = 0; k < HELD; k++)
            if (threadIdx.x + (int64_t)k * blockDim.x < n) ss += (v[k] - c) * (v[k] - c);
        C inv = (C)1 / sqrt(afo_cuda::block_sum(ss, red) / (C)n + (C)eps);
#pragma unroll
        for (int k = 0; k < HELD; k++) {
            int64_t i = threadIdx.x + (int64_t)k * blockDim.x;
            if (i < n) store(out, r * n + i, (v[k] - c) * inv * wv[k] + bv[k]);
        }
        return;
    }
    C c = 0;
    if (center) {
        C s = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += load<T, C>(row, i * x.step);
        c = afo_cuda::block_sum(s, red) / (C)n;
    }
    C ss = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        C d = load<T, C>(row, i * x.step) - c;
        ss += d * d;
    }
    C inv = (C)1 / sqrt(afo_cuda::block_sum(ss, red) / (C)n + (C)eps);
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
__global__ void rope_kernel(afo_cuda_rows x, const T *xd, afo_cuda_rope_dst dst, afo_cuda_rope p, int64_t cols,
                            int64_t chunks, int per_thread) {
    afo_cuda::follow_prior_grid();
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, j = t % cols, l = t / cols % p.L,
                  chunk = t / cols / p.L;
    if (chunk >= chunks) return;
    const int64_t half = p.dims / 2, per_position = x.rows / p.L;
    const bool rotated = j < half;
    // Pairs are (2i, 2i+1) when traditional, else (i, i + half).
    const int64_t d = !rotated ? p.dims + (j - half) : p.traditional ? 2 * j : j;
    const int64_t partner = p.traditional ? d + 1 : d + half;
    C cs = 1, sn = 0;
    if (rotated) {
        double c, s;
        rope_angle(p, p.offset + (p.position ? *p.position : 0) + l, j, &c, &s);
        cs = (C)c, sn = (C)s;
    }
    T *const slot = (T *)dst.data + afo_cuda::slot_offset(dst.shift);
    for (int k = 0; k < per_thread; k++) {
        const int64_t q = chunk * per_thread + k, r = l + q * p.L;
        if (q >= per_position) break;
        const T *row = xd + row_offset(x, r);
        T *out = slot + row_offset(dst.rows, r);
        C a = load<T, C>(row, d * x.step);
        if (!rotated) {
            store(out, d, a);
            continue;
        }
        C other = load<T, C>(row, partner * x.step), ra, ro;
        rope_rotate(a, other, cs, sn, &ra, &ro);
        store(out, d, ra);
        store(out, partner, ro);
    }
}

// Rows of 16-bit or float32 values, contiguous and 16-byte aligned, as
// are their weight and bias (of the same dtype): 16-byte loads, 4 warps a
// row and NV vectors a thread, so that 6 rows of 4096 are in flight on an
// SM where 2 were with a scalar load a thread (a 2048 x 4096 prefill norm
// took 30 us against about 8 for its bytes, 2048 x 2048 ones 20 us).
constexpr int kNormVecThreads = 128;

template <typename T> __device__ __forceinline__ uint4 pack(const float *f) {
    uint4 v;
    T *e = (T *)&v;
#pragma unroll
    for (int k = 0; k < 16 / (int)sizeof(T); k++) store(e, k, f[k]);
    return v;
}

template <typename T, int NV>
__global__ void __launch_bounds__(kNormVecThreads) norm_vec_kernel(afo_cuda_rows x, const T *xd, T *out, const T *w,
                                                                    const T *b, int center, float eps) {
    afo_cuda::follow_prior_grid();
    constexpr int V = 16 / sizeof(T);
    __shared__ float red[32];
    const int64_t r = blockIdx.x, nv = x.n / V;
    const uint4 *row = (const uint4 *)(xd + row_offset(x, r));
    uint4 xv[NV], wv[NV], bv[NV];
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int64_t i = threadIdx.x + (int64_t)k * kNormVecThreads;
        if (i < nv) {
            xv[k] = row[i];
            if (w) wv[k] = ((const uint4 *)w)[i];
            if (b) bv[k] = ((const uint4 *)b)[i];
        }
    }
    // the sum over this thread's elements of (x - c), or of its squares
    auto thread_sum = [&](float c, bool squares) {
        float sum = 0, f[V];
#pragma unroll
        for (int k = 0; k < NV; k++)
            if (threadIdx.x + (int64_t)k * kNormVecThreads < nv) {
                unpack<T>(xv[k], f);
#pragma unroll
                for (int e = 0; e < V; e++) sum += squares ? (f[e] - c) * (f[e] - c) : f[e] - c;
            }
        return sum;
    };
    const float c = center ? afo_cuda::block_sum(thread_sum(0.f, false), red) / (float)x.n : 0.f;
    const float ss = thread_sum(c, true);
    float f[V];
    const float inv = 1.f / sqrtf(afo_cuda::block_sum(ss, red) / (float)x.n + eps);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int64_t i = threadIdx.x + (int64_t)k * kNormVecThreads;
        if (i >= nv) continue;
        float wf[V], bf[V];
        unpack<T>(xv[k], f);
        if (w) unpack<T>(wv[k], wf);
        if (b) unpack<T>(bv[k], bf);
#pragma unroll
        for (int e = 0; e < V; e++) f[e] = (f[e] - c) * inv * (w ? wf[e] : 1.f) + (b ? bf[e] : 0.f);
        ((uint4 *)(out + r * x.n))[i] = pack<T>(f);
    }
}

// The vector kernels' condition on a row array: contiguous rows starting
// 16 bytes apart from a 16-byte aligned base.
bool rows_vectorizable(const afo_cuda_rows *x, const void *data, int V) {
    if (x->step != 1 || x->n % V != 0 || (uintptr_t)data % 16 != 0) return false;
    for (int a = 0; a < x->ndim; a++)
        if (x->strides[a] % V != 0) return false;
    return true;
}

bool vec_vectorizable(const afo_cuda_vec &v, afo_dtype dt) {
    return !v.data || (v.dtype == dt && v.stride == 1 && (uintptr_t)v.data % 16 == 0);
}

// rope over rows of 16-bit or float32 values, contiguous and aligned, with
// the rotated halves of a row (not traditional) a multiple of a vector: a
// thread rotates one vector of each half of a row, the angles of the
// block's positions computed once in shared memory (one float64 sincos
// per pair and position, as before). The kernel above reads 2 bytes a
// load (a prefill's rope of q, 2048 positions of 32 heads: 40 us).
constexpr int kRopeVecThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kRopeVecThreads)
    rope_vec_kernel(afo_cuda_rows x, const T *xd, afo_cuda_rope_dst dst, afo_cuda_rope p, int64_t items) {
    afo_cuda::follow_prior_grid();
    constexpr int V = 16 / sizeof(T);
    extern __shared__ float angles[]; // [positions of the block][half][cos, sin]
    const int64_t half = p.dims / 2, per_position = x.rows / p.L, chunks = half / V;
    const int64_t per_l = per_position * chunks, first = (int64_t)blockIdx.x * kRopeVecThreads;
    const int64_t last = first + kRopeVecThreads - 1 < items ? first + kRopeVecThreads - 1 : items - 1;
    const int64_t l0 = first / per_l, l1 = last / per_l;
    const int64_t shift = p.offset + (p.position ? *p.position : 0);
    for (int64_t t = threadIdx.x; t < (l1 - l0 + 1) * half; t += kRopeVecThreads) {
        double cs, sn;
        rope_angle(p, shift + l0 + t / half, t % half, &cs, &sn);
        angles[2 * t] = (float)cs, angles[2 * t + 1] = (float)sn;
    }
    __syncthreads();
    const int64_t item = first + threadIdx.x;
    if (item >= items) return;
    const int64_t l = item / per_l, q = item % per_l / chunks, j = item % chunks * V, r = l + q * p.L;
    const T *row = xd + row_offset(x, r);
    float a[V], o[V], ra[V], ro[V];
    unpack<T>(*(const uint4 *)(row + j), a);
    unpack<T>(*(const uint4 *)(row + j + half), o);
    const float *ang = angles + 2 * ((l - l0) * half + j);
#pragma unroll
    for (int e = 0; e < V; e++) rope_rotate(a[e], o[e], ang[2 * e], ang[2 * e + 1], &ra[e], &ro[e]);
    T *out = (T *)dst.data + row_offset(dst.rows, r) + afo_cuda::slot_offset(dst.shift);
    *(uint4 *)(out + j) = pack<T>(ra);
    *(uint4 *)(out + j + half) = pack<T>(ro);
}

int norm_threads(int64_t n) { return n >= 2048 ? kNormThreads : n >= 512 ? 256 : n >= 128 ? 128 : 32; }

template <typename T, typename C>
void norm_launch(const afo_cuda_rows *x, const void *xd, void *out, afo_cuda_vec w, afo_cuda_vec b, int center,
                 double eps, cudaStream_t st) {
    constexpr int V = 16 / sizeof(T);
    if constexpr (sizeof(T) <= 4) {
        const int64_t nv = x->n / V, per_thread = (nv + kNormVecThreads - 1) / kNormVecThreads;
        if (per_thread <= 8 && rows_vectorizable(x, xd, V) && vec_vectorizable(w, dtype_of<T>()) &&
            vec_vectorizable(b, dtype_of<T>())) {
            auto kernel = per_thread <= 1   ? norm_vec_kernel<T, 1>
                          : per_thread <= 2 ? norm_vec_kernel<T, 2>
                          : per_thread <= 4 ? norm_vec_kernel<T, 4>
                                            : norm_vec_kernel<T, 8>;
            afo_cuda::launch_early(kernel, dim3((unsigned)x->rows), dim3(kNormVecThreads), 0, st, *x, (const T *)xd,
                                   (T *)out, (const T *)w.data, (const T *)b.data, center, (float)eps);
            return;
        }
    }
    const int threads = norm_threads(x->n);
    const int64_t held = (x->n + threads - 1) / threads;
    const unsigned rows = (unsigned)x->rows;
    auto kernel = held <= 4    ? norm_kernel<T, C, 4>
                  : held <= 8  ? norm_kernel<T, C, 8>
                  : held <= 16 ? norm_kernel<T, C, 16>
                               : norm_kernel<T, C, 0>;
    afo_cuda::launch_early(kernel, dim3(rows), dim3(threads), 0, st, *x, (const T *)xd, (T *)out, w, b, center, eps);
}

template <typename T, typename C>
void rope_launch(const afo_cuda_rows *x, const void *xd, const afo_cuda_rope_dst *out, const afo_cuda_rope *p,
                 cudaStream_t st) {
    if (x->rows == 0 || x->n == 0) return;
    constexpr int V = 16 / sizeof(T);
    if constexpr (sizeof(T) <= 4) {
        const int64_t half = p->dims / 2;
        if (!p->traditional && p->dims == x->n && half % V == 0 && p->L >= kRopeSharedFrom &&
            rows_vectorizable(x, xd, V) && rows_vectorizable(&out->rows, out->data, V) &&
            out->shift.stride % V == 0) {
            const int64_t per_l = x->rows / p->L * (half / V), items = p->L * per_l;
            const int64_t positions = kRopeVecThreads / per_l + 2; // the most a block of items spans
            const size_t smem = (size_t)(positions < p->L ? positions : p->L) * half * 2 * sizeof(float);
            afo_cuda::launch_early(rope_vec_kernel<T>,
                                   dim3((unsigned)((items + kRopeVecThreads - 1) / kRopeVecThreads)),
                                   dim3(kRopeVecThreads), smem, st, *x, (const T *)xd, *out, *p, items);
            return;
        }
    }
    const int per_thread = p->L >= kRopeSharedFrom ? kRopeRows : 1;
    const int64_t cols = p->dims / 2 + (x->n - p->dims), chunks = (x->rows / p->L + per_thread - 1) / per_thread;
    const int64_t threads = chunks * p->L * cols;
    afo_cuda::launch_early(rope_kernel<T, C>, dim3((unsigned)((threads + 255) / 256)), dim3(256), 0, st, *x,
                           (const T *)xd, *out, *p, cols, chunks, per_thread);
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

extern "C" void afo_cuda_rope_apply(const afo_cuda_rows *x, const void *xd, afo_dtype dt, const afo_cuda_rope_dst *out,
                                    const afo_cuda_rope *p, cudaStream_t st) {
    switch (dt) {
    case AFO_FLOAT16: rope_launch<__half, float>(x, xd, out, p, st); break;
    case AFO_BFLOAT16: rope_launch<__nv_bfloat16, float>(x, xd, out, p, st); break;
    case AFO_FLOAT32: rope_launch<float, float>(x, xd, out, p, st); break;
    default: rope_launch<double, double>(x, xd, out, p, st); break;
    }
}
