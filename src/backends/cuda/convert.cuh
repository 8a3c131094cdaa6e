// Loading any afo dtype as a compute type and storing it back, with the CPU
// backend's conversions (float to int truncates and saturates, to bool tests
// != 0, to float16/bfloat16 rounds through float32). Shared by the .cu files.
#ifndef AFO_CUDA_CONVERT_CUH
#define AFO_CUDA_CONVERT_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "afo/base.h"
#include "backends/cuda/kernels.h"

namespace afo_cuda {

template <typename T> __device__ T load_as(const void *base, int64_t i, afo_dtype dt) {
    switch (dt) {
    case AFO_BOOL: return (T)(((const uint8_t *)base)[i] != 0);
    case AFO_INT8: return (T)((const int8_t *)base)[i];
    case AFO_UINT8: return (T)((const uint8_t *)base)[i];
    case AFO_INT32: return (T)((const int32_t *)base)[i];
    case AFO_UINT32: return (T)((const uint32_t *)base)[i];
    case AFO_INT64: return (T)((const int64_t *)base)[i];
    case AFO_FLOAT16: return (T)__half2float(((const __half *)base)[i]);
    case AFO_BFLOAT16: return (T)__bfloat162float(((const __nv_bfloat16 *)base)[i]);
    case AFO_FLOAT32: return (T)((const float *)base)[i];
    default: return (T)((const double *)base)[i];
    }
}

// v plus element i of a product's addend, where it has one.
__device__ __forceinline__ float plus_addend(float v, const afo_cuda_addend &a, int64_t i) {
    return a.data ? v + load_as<float>(a.data, i, a.dtype) : v;
}

// Elements a write moves along by s (afo_cuda_shift).
__device__ __forceinline__ int64_t slot_offset(const afo_cuda_shift &s) {
    if (!s.at) return 0;
    return (int64_t)(*s.at < 0 ? 0 : *s.at > s.max ? s.max : *s.at) * s.stride;
}

// swiglu(gate, up) = silu(gate) * up in M (float or double): the
// elementwise kernel's, and the int8 matvec's that computes it as it
// quantizes its input, so that the two give the same bits.
template <typename M> __device__ __forceinline__ M swiglu_of(M gate, M up) {
    return gate / ((M)1 + exp(-gate)) * up;
}

// A float value of each activation type, for kernels templated on it.
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

// A float stored as each activation type (round to nearest even).
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

// The 16 / sizeof(T) elements of a 16-byte vector, as floats.
template <typename T> __device__ __forceinline__ void unpack(const uint4 &raw, float *out) {
    const T *v = (const T *)&raw;
#pragma unroll
    for (int i = 0; i < (int)(16 / sizeof(T)); i++) out[i] = to_f(v[i]);
}

template <typename T> __device__ int64_t to_int(T v, double lo, double hi) {
    double d = (double)v;
    if (d != d) return 0;
    if (d <= lo) return (int64_t)lo;
    if (d >= hi) return (int64_t)hi;
    return (int64_t)d;
}
template <> __device__ inline int64_t to_int<int64_t>(int64_t v, double, double) { return v; }

template <typename T> __device__ void store_from(void *base, int64_t i, afo_dtype dt, T v) {
    switch (dt) {
    case AFO_BOOL: ((uint8_t *)base)[i] = v != (T)0; break;
    case AFO_INT8: ((int8_t *)base)[i] = (int8_t)to_int(v, -128.0, 127.0); break;
    case AFO_UINT8: ((uint8_t *)base)[i] = (uint8_t)to_int(v, 0.0, 255.0); break;
    case AFO_INT32: ((int32_t *)base)[i] = (int32_t)to_int(v, -2147483648.0, 2147483647.0); break;
    case AFO_UINT32: ((uint32_t *)base)[i] = (uint32_t)to_int(v, 0.0, 4294967295.0); break;
    case AFO_INT64: ((int64_t *)base)[i] = to_int(v, -9223372036854775808.0, 9223372036854774784.0); break;
    case AFO_FLOAT16: ((__half *)base)[i] = __float2half_rn((float)v); break;
    case AFO_BFLOAT16: ((__nv_bfloat16 *)base)[i] = __float2bfloat16_rn((float)v); break;
    case AFO_FLOAT32: ((float *)base)[i] = (float)v; break;
    default: ((double *)base)[i] = (double)v; break;
    }
}

} // namespace afo_cuda

#endif
