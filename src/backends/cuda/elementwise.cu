// Elementwise kernels over strided operands: one thread per output element,
// values converted to the compute type on load and back on store, with the
// CPU backend's semantics (integers wrap, float to int truncates and
// saturates, to bool tests != 0, NaN propagates through max/min).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/kernels.h"

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
        const M f = (M)a;
        return (T)(f / ((M)1 + exp(-f)) * (M)b);
    }
    default: return a;
    }
}

// Adds each operand's offset of element idx (C order over d's shape) to
// off. Dividing by the extents dominated large elementwise ops (a 64-bit
// division is a long instruction sequence): operands whose axes merged into
// one need none, and extents that fit 32 bits take the short division.
template <typename I> __device__ void add_offsets(const afo_cuda_strided &d, I idx, int64_t *off) {
    for (int ax = d.ndim - 1; ax >= 0; ax--) {
        I n = (I)d.shape[ax], c = idx % n;
        idx /= n;
        for (int k = 0; k < d.nops; k++) off[k] += (int64_t)c * d.strides[k][ax];
    }
}

// The output's extra offset when its position is read on the device.
__device__ int64_t output_shift(const afo_cuda_strided &d) {
    if (!d.shift) return 0;
    return (*d.shift < 0 ? 0 : *d.shift > d.shift_max ? d.shift_max : *d.shift) * d.shift_stride;
}

// Every operand's offset of element idx.
__device__ void operand_offsets(const afo_cuda_strided &d, int64_t idx, int64_t shifted, int64_t *off) {
    off[0] = shifted;
    for (int k = 1; k < AFO_CUDA_MAX_OPERANDS; k++) off[k] = 0;
    if (d.ndim == 1)
        for (int k = 0; k < d.nops; k++) off[k] += idx * d.strides[k][0];
    else if (d.size <= (int64_t)UINT32_MAX)
        add_offsets<uint32_t>(d, (uint32_t)idx, off);
    else
        add_offsets<int64_t>(d, idx, off);
}

template <typename T> __global__ void ew_kernel(afo_cuda_strided d, afo_op op) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x, shifted = output_shift(d);
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

// Operands of one float dtype, contiguous along the last axis (the whole
// array once axes merged, a transpose's rows, a cache's slots), handled
// as vectors of V elements with 16-byte loads and stores: one element a
// thread, the kernel above ran a 4096-token prefill's elementwise steps at
// a ninth of HBM bandwidth (swiglu over [2048, 14336] bf16: 397 us for
// 176 MB on an H200). Descriptor shapes and strides count vectors here.
template <typename S> __global__ void ew_vec_kernel(afo_cuda_strided d, afo_op op) {
    constexpr int V = 16 / sizeof(S);
    const int64_t step = (int64_t)gridDim.x * blockDim.x, shifted = output_shift(d);
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < d.size; idx += step) {
        int64_t off[AFO_CUDA_MAX_OPERANDS];
        operand_offsets(d, idx, shifted, off);
        const uint4 a = ((const uint4 *)d.data[1])[off[1]];
        uint4 b = a, o;
        if (d.nops == 3) b = ((const uint4 *)d.data[2])[off[2]];
        const S *av = (const S *)&a, *bv = (const S *)&b;
        S *ov = (S *)&o;
#pragma unroll
        for (int e = 0; e < V; e++) {
            const float x = (float)av[e];
            const float v = d.nops == 3 ? binary(op, x, (float)bv[e]) : op == AFO_OP_ASTYPE ? x : unary(op, x);
            ov[e] = (S)v;
        }
        ((uint4 *)d.data[0])[off[0]] = o;
    }
}

// Whether ew_vec_kernel takes d, and its descriptor in vectors. Not below
// kVectorMin elements: a decode step's small operands ran slower as
// vectors (Llama-3.1-8B bf16 decode on an H200: 151 tok/s with every
// operand vectorized, 160 with none or with this bound; prefill the same).
constexpr int64_t kVectorMin = 65536;

bool vectorized(const afo_cuda_strided *d, afo_op op, afo_cuda_ctype ct, afo_cuda_strided *v) {
    const afo_dtype t = d->dtype[0];
    if (d->size < kVectorMin || op == AFO_OP_WHERE || ct != AFO_CUDA_F32 || d->ndim < 1 || d->nops > 3 ||
        (t != AFO_FLOAT32 && t != AFO_FLOAT16 && t != AFO_BFLOAT16))
        return false;
    const int V = t == AFO_FLOAT32 ? 4 : 8, last = d->ndim - 1;
    if (d->shape[last] % V != 0 || (d->shift && d->shift_stride % V != 0)) return false;
    for (int k = 0; k < d->nops; k++) {
        if (d->dtype[k] != t || (uintptr_t)d->data[k] % 16 != 0 || d->strides[k][last] != 1) return false;
        for (int ax = 0; ax < last; ax++)
            if (d->strides[k][ax] % V != 0) return false;
    }
    *v = *d;
    v->shape[last] /= V;
    v->size /= V;
    v->shift_stride /= V;
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
        int64_t blocks = (v.size + threads - 1) / threads;
        if (blocks > 65535 * 8) blocks = 65535 * 8;
        switch (d->dtype[0]) {
        case AFO_FLOAT16: ew_vec_kernel<__half><<<(unsigned)blocks, threads, 0, stream>>>(v, op); break;
        case AFO_BFLOAT16: ew_vec_kernel<__nv_bfloat16><<<(unsigned)blocks, threads, 0, stream>>>(v, op); break;
        default: ew_vec_kernel<float><<<(unsigned)blocks, threads, 0, stream>>>(v, op); break;
        }
        return;
    }
    int64_t blocks = (d->size + threads - 1) / threads;
    if (blocks > 65535 * 8) blocks = 65535 * 8;
    switch (ct) {
    case AFO_CUDA_F32: ew_kernel<float><<<(unsigned)blocks, threads, 0, stream>>>(*d, op); break;
    case AFO_CUDA_F64: ew_kernel<double><<<(unsigned)blocks, threads, 0, stream>>>(*d, op); break;
    default: ew_kernel<int64_t><<<(unsigned)blocks, threads, 0, stream>>>(*d, op); break;
    }
}
