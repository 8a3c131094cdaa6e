// Elementwise kernels over strided operands: one thread per output element,
// values converted to the compute type on load and back on store, with the
// CPU backend's semantics (integers wrap, float to int truncates and
// saturates, to bool tests != 0, NaN propagates through max/min).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace {
using namespace afo_cuda;

__device__ int64_t ipow(int64_t base, int64_t e) {
    if (e < 0) return base == 1 ? 1 : base == -1 ? (e % 2 ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)base;
    while (e) {
        if (e & 1) r *= b;
        b *= b;
        e >>= 1;
    }
    return (int64_t)r;
}

__device__ float fpow(float a, float b) { return powf(a, b); }
__device__ double fpow(double a, double b) { return pow(a, b); }
__device__ int64_t fpow(int64_t a, int64_t b) { return ipow(a, b); }

template <typename T> __device__ bool is_nan(T v) { return v != v; }

// The precision float math runs in: float for float32 (and the halves,
// which compute in float32), double otherwise. CUDA's float overloads of
// exp, log, erfc... are expf, logf, erfcf...; the int64 instantiation
// never reaches these ops (the shape rules give them float outputs).
template <typename T> struct math_type { using type = double; };
template <> struct math_type<float> { using type = float; };

template <typename T> __device__ T unary(afo_op op, T x) {
    switch (op) {
    case AFO_OP_NEG: return (T)(0 - x);
    case AFO_OP_ABS: return x < (T)0 ? (T)(0 - x) : x;
    case AFO_OP_SQUARE: return x * x;
    case AFO_OP_RELU: return x > (T)0 ? x : (T)0;
    case AFO_OP_LOGICAL_NOT: return (T)(x == (T)0);
    default: break;
    }
    using M = typename math_type<T>::type;
    const M f = (M)x, one = 1;
    switch (op) {
    case AFO_OP_EXP: return (T)exp(f);
    case AFO_OP_LOG: return (T)log(f);
    case AFO_OP_LOG1P: return (T)log1p(f);
    case AFO_OP_SQRT: return (T)sqrt(f);
    case AFO_OP_RSQRT: return (T)(one / sqrt(f));
    case AFO_OP_TANH: return (T)tanh(f);
    case AFO_OP_ERF: return (T)erf(f);
    case AFO_OP_SIGMOID: return (T)(one / (one + exp(-f)));
    case AFO_OP_SILU: return (T)(f / (one + exp(-f)));
    case AFO_OP_GELU: return (T)((M)0.5 * f * erfc(-f * (M)0.70710678118654752));
    case AFO_OP_GELU_TANH: return (T)(f / (one + exp((M)-1.5957691216057308 * (f + (M)0.044715 * f * f * f))));
    case AFO_OP_SIN: return (T)sin(f);
    case AFO_OP_COS: return (T)cos(f);
    default: return x;
    }
}

template <typename T> __device__ T wrap_add(T a, T b) { return a + b; }
template <> __device__ int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
template <typename T> __device__ T wrap_sub(T a, T b) { return a - b; }
template <> __device__ int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
template <typename T> __device__ T wrap_mul(T a, T b) { return a * b; }
template <> __device__ int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

template <typename T> __device__ T binary(afo_op op, T a, T b) {
    switch (op) {
    case AFO_OP_ADD: return wrap_add(a, b);
    case AFO_OP_SUB: return wrap_sub(a, b);
    case AFO_OP_MUL: return wrap_mul(a, b);
    case AFO_OP_DIV: return a / b; // float types only (the shape rule)
    case AFO_OP_MAXIMUM: return (a > b || is_nan(a)) ? a : b;
    case AFO_OP_MINIMUM: return (a < b || is_nan(a)) ? a : b;
    case AFO_OP_POW: return fpow(a, b);
    case AFO_OP_EQUAL: return (T)(a == b);
    case AFO_OP_NOT_EQUAL: return (T)(a != b);
    case AFO_OP_LESS: return (T)(a < b);
    case AFO_OP_LESS_EQUAL: return (T)(a <= b);
    case AFO_OP_GREATER: return (T)(a > b);
    case AFO_OP_GREATER_EQUAL: return (T)(a >= b);
    case AFO_OP_LOGICAL_AND: return (T)(a != (T)0 && b != (T)0);
    case AFO_OP_LOGICAL_OR: return (T)(a != (T)0 || b != (T)0);
    case AFO_OP_SWIGLU: { // float types only (the shape rule)
        using M = typename math_type<T>::type;
        return (T)swiglu_of<M>((M)a, (M)b);
    }
    default: return a;
    }
}

// Adds each operand's offset of element idx (C order over d's shape) to
// off. Dividing by the extents dominated large elementwise ops (a 64-bit
// division is a long instruction sequence): operands whose axes merged into
// one need none, and extents that fit 32 bits take the short division.
// The operand loops run to the compile-time bound, so that off stays in
// registers (indexed by the runtime count it went to local memory).
template <typename I> __device__ void add_offsets(const afo_cuda_strided &d, I idx, int64_t *off) {
    for (int ax = d.ndim - 1; ax >= 0; ax--) {
        I n = (I)d.shape[ax], c = idx % n;
        idx /= n;
#pragma unroll
        for (int k = 0; k < AFO_CUDA_MAX_OPERANDS; k++)
            if (k < d.nops) off[k] += (int64_t)c * d.strides[k][ax];
    }
}

// Every operand's offset of element idx.
__device__ void operand_offsets(const afo_cuda_strided &d, int64_t idx, int64_t shifted, int64_t *off) {
    off[0] = shifted;
#pragma unroll
    for (int k = 1; k < AFO_CUDA_MAX_OPERANDS; k++) off[k] = 0;
    if (d.ndim == 1) {
#pragma unroll
        for (int k = 0; k < AFO_CUDA_MAX_OPERANDS; k++)
            if (k < d.nops) off[k] += idx * d.strides[k][0];
    } else if (d.size <= (int64_t)UINT32_MAX)
        add_offsets<uint32_t>(d, (uint32_t)idx, off);
    else
        add_offsets<int64_t>(d, idx, off);
}

template <typename T> __global__ void ew_kernel(afo_cuda_strided d, afo_op op) {
    afo_cuda::follow_prior_grid();
    const int64_t step = (int64_t)gridDim.x * blockDim.x, shifted = slot_offset(d.shift);
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < d.size; idx += step) {
        int64_t off[AFO_CUDA_MAX_OPERANDS];
        operand_offsets(d, idx, shifted, off);
        T a = load_as<T>(d.data[1], off[1], d.dtype[1]), v;
        if (op == AFO_OP_WHERE) {
            T x = load_as<T>(d.data[2], off[2], d.dtype[2]), y = load_as<T>(d.data[3], off[3], d.dtype[3]);
            v = a != (T)0 ? x : y;
        } else if (d.nops == 3) {
            v = binary(op, a, load_as<T>(d.data[2], off[2], d.dtype[2]));
        } else if (op == AFO_OP_ASTYPE) {
            v = a;
        } else {
            v = unary(op, a);
        }
        store_from(d.data[0], off[0], d.dtype[0], v);
    }
}

// The ops a prefill streams over whole activations (residual adds, the
// gated MLP, copies) get vector kernels of their own. The switch over every
// op, inlined for each element of 4 vectors, made a kernel body of 35K PTX
// lines, and the flat kernel ran slower than one vector a thread did.
enum Hot { kGeneric, kAdd, kMul, kSwiglu, kCopy };

int hot_of(afo_op op, int nops) {
    if (nops == 2) return op == AFO_OP_ASTYPE ? kCopy : kGeneric;
    return op == AFO_OP_ADD ? kAdd : op == AFO_OP_MUL ? kMul : op == AFO_OP_SWIGLU ? kSwiglu : kGeneric;
}

template <int H> __device__ __forceinline__ float apply1(afo_op op, int nops, float x, float y) {
    if constexpr (H == kAdd) return binary(AFO_OP_ADD, x, y);
    else if constexpr (H == kMul) return binary(AFO_OP_MUL, x, y);
    else if constexpr (H == kSwiglu) return binary(AFO_OP_SWIGLU, x, y);
    else if constexpr (H == kCopy) return x;
    else return nops == 3 ? binary(op, x, y) : op == AFO_OP_ASTYPE ? x : unary(op, x);
}

// o = op(a[, b]) over the 16 / sizeof(S) elements of the vectors.
template <typename S, int H>
__device__ __forceinline__ void apply_vec(afo_op op, int nops, const uint4 &a, const uint4 &b, uint4 &o) {
    const S *av = (const S *)&a, *bv = (const S *)&b;
    S *ov = (S *)&o;
#pragma unroll
    for (int e = 0; e < 16 / (int)sizeof(S); e++) ov[e] = (S)apply1<H>(op, nops, (float)av[e], (float)bv[e]);
}

// Operands of one float dtype, contiguous along the last axis (a
// transpose's rows, a cache's slots), handled as vectors of 16 bytes
// (16 / sizeof(S) elements) with one load and store each: one element a
// thread, the kernel above ran a 4096-token prefill's elementwise steps at
// a ninth of HBM bandwidth (swiglu over [2048, 14336] bf16: 397 us for
// 176 MB on an H200). Descriptor shapes and strides count vectors here.
template <typename S, int H> __global__ void ew_vec_kernel(afo_cuda_strided d, afo_op op) {
    afo_cuda::follow_prior_grid();
    const int64_t step = (int64_t)gridDim.x * blockDim.x, shifted = slot_offset(d.shift);
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < d.size; idx += step) {
        int64_t off[AFO_CUDA_MAX_OPERANDS];
        operand_offsets(d, idx, shifted, off);
        const uint4 a = ((const uint4 *)d.data[1])[off[1]];
        uint4 b = a, o;
        if (d.nops == 3) b = ((const uint4 *)d.data[2])[off[2]];
        apply_vec<S, H>(op, d.nops, a, b, o);
        ((uint4 *)d.data[0])[off[0]] = o;
    }
}

// Operands merged into one axis, each contiguous or one value broadcast
// (a fill): no offsets to compute, and for the hot ops kFlatUnroll vectors
// a thread, every load issued before the first store. (The kernel above
// ran a 4096-token prefill's swiglu at 1.8 TB/s; the fill of a fresh KV
// cache, one element a thread in ew_kernel, at 90 GB/s.)
constexpr int kFlatUnroll = 4;

template <int H> struct flat_unroll { static constexpr int value = H == kGeneric ? 1 : kFlatUnroll; };

template <typename S> __device__ uint4 flat_load(const void *p, int64_t stride, int64_t i) {
    if (stride) return ((const uint4 *)p)[i];
    uint4 v;
    S *e = (S *)&v;
    const S x = *(const S *)p;
#pragma unroll
    for (int k = 0; k < 16 / (int)sizeof(S); k++) e[k] = x;
    return v;
}

template <typename S, int H> __global__ void ew_flat_kernel(afo_cuda_strided d, afo_op op) {
    afo_cuda::follow_prior_grid();
    constexpr int U = flat_unroll<H>::value;
    uint4 *out = (uint4 *)d.data[0] + slot_offset(d.shift);
    const int64_t first = (int64_t)blockIdx.x * blockDim.x * U + threadIdx.x;
    uint4 a[U], b[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int64_t i = first + (int64_t)u * blockDim.x;
        if (i >= d.size) break;
        a[u] = flat_load<S>(d.data[1], d.strides[1][0], i);
        b[u] = d.nops == 3 ? flat_load<S>(d.data[2], d.strides[2][0], i) : a[u];
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int64_t i = first + (int64_t)u * blockDim.x;
        if (i >= d.size) break;
        uint4 o;
        apply_vec<S, H>(op, d.nops, a[u], b[u], o);
        out[i] = o;
    }
}

template <typename S, int H> void launch_vec(const afo_cuda_strided &v, afo_op op, cudaStream_t st) {
    const int threads = 256;
    if (v.ndim == 1) {
        const int64_t per_block = (int64_t)threads * flat_unroll<H>::value;
        afo_cuda::launch_early(ew_flat_kernel<S, H>, dim3((unsigned)((v.size + per_block - 1) / per_block)),
                               dim3(threads), 0, st, v, op);
        return;
    }
    int64_t blocks = (v.size + threads - 1) / threads;
    if (blocks > 65535 * 8) blocks = 65535 * 8;
    afo_cuda::launch_early(ew_vec_kernel<S, H>, dim3((unsigned)blocks), dim3(threads), 0, st, v, op);
}

template <typename S> void launch_vec_as(const afo_cuda_strided &v, afo_op op, cudaStream_t st) {
    switch (hot_of(op, v.nops)) {
    case kAdd: launch_vec<S, kAdd>(v, op, st); break;
    case kMul: launch_vec<S, kMul>(v, op, st); break;
    case kSwiglu: launch_vec<S, kSwiglu>(v, op, st); break;
    case kCopy: launch_vec<S, kCopy>(v, op, st); break;
    default: launch_vec<S, kGeneric>(v, op, st); break;
    }
}

// Whether the vector kernels take d (ew_flat_kernel when its axes merged
// into one), and its descriptor in vectors. Not below kVectorMin elements:
// a decode step's small operands ran slower as vectors (Llama-3.1-8B bf16
// decode on an H200: 151 tok/s with every operand vectorized, 160 with
// none or with this bound; prefill the same).
constexpr int64_t kVectorMin = 65536;

bool vectorized(const afo_cuda_strided *d, afo_op op, afo_cuda_ctype ct, afo_cuda_strided *v) {
    const afo_dtype t = d->dtype[0];
    if (d->size < kVectorMin || op == AFO_OP_WHERE || ct != AFO_CUDA_F32 || d->ndim < 1 || d->nops > 3 ||
        (t != AFO_FLOAT32 && t != AFO_FLOAT16 && t != AFO_BFLOAT16))
        return false;
    const int V = t == AFO_FLOAT32 ? 4 : 8, last = d->ndim - 1;
    if (d->shape[last] % V != 0 || (d->shift.at && d->shift.stride % V != 0)) return false;
    for (int k = 0; k < d->nops; k++) {
        if (d->dtype[k] != t) return false;
        if (k > 0 && d->ndim == 1 && d->strides[k][0] == 0) continue; // a fill, which the flat kernel takes
        if ((uintptr_t)d->data[k] % 16 != 0 || d->strides[k][last] != 1) return false;
        for (int ax = 0; ax < last; ax++)
            if (d->strides[k][ax] % V != 0) return false;
    }
    *v = *d;
    v->shape[last] /= V;
    v->size /= V;
    v->shift.stride /= V;
    for (int k = 0; k < d->nops; k++)
        for (int ax = 0; ax < last; ax++) v->strides[k][ax] /= V;
    return true;
}

} // namespace

extern "C" void afo_cuda_elementwise(const afo_cuda_strided *d, afo_op op, afo_cuda_ctype ct, cudaStream_t stream) {
    if (d->size == 0) return;
    int threads = 256;
    afo_cuda_strided v;
    if (vectorized(d, op, ct, &v)) {
        switch (d->dtype[0]) {
        case AFO_FLOAT16: launch_vec_as<__half>(v, op, stream); break;
        case AFO_BFLOAT16: launch_vec_as<__nv_bfloat16>(v, op, stream); break;
        default: launch_vec_as<float>(v, op, stream); break;
        }
        return;
    }
    int64_t blocks = (d->size + threads - 1) / threads;
    if (blocks > 65535 * 8) blocks = 65535 * 8;
    auto kernel = ct == AFO_CUDA_F32 ? ew_kernel<float> : ct == AFO_CUDA_F64 ? ew_kernel<double> : ew_kernel<int64_t>;
    afo_cuda::launch_early(kernel, dim3((unsigned)blocks), dim3(threads), 0, stream, *d, op);
}
