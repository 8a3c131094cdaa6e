// What every kernel that applies rope shares (norm_rope.cu's rope kernels,
// decode attention roping q as it loads it): the angles, in double as on
// the CPU, and the rotation, written without contraction so that a kernel
// that ropes on the way computes the rope kernel's values bit for bit.
#ifndef AFO_CUDA_ROPE_CUH
#define AFO_CUDA_ROPE_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "backends/cuda/nn_kernels.h"

namespace afo_cuda {

// Weights, biases and frequencies may have any float dtype.
__device__ __forceinline__ double vec_at(const afo_cuda_vec &v, int64_t i, double fill) {
    if (!v.data) return fill;
    int64_t k = i * v.stride;
    switch (v.dtype) {
    case AFO_FLOAT16: return __half2float(((const __half *)v.data)[k]);
    case AFO_BFLOAT16: return __bfloat162float(((const __nv_bfloat16 *)v.data)[k]);
    case AFO_FLOAT32: return ((const float *)v.data)[k];
    default: return ((const double *)v.data)[k];
    }
}

// cos and sin of pair j's angle at position pos (sin negated for the
// inverse rope).
__device__ __forceinline__ void rope_angle(const afo_cuda_rope &p, int64_t pos, int64_t j, double *cs, double *sn) {
    const double inv_freq = p.freqs.data             ? 1.0 / vec_at(p.freqs, j, 1.0)
                            : j < AFO_CUDA_ROPE_TABLE ? p.inv_freq[j]
                                                      : pow(p.base, -2.0 * (double)j / (double)p.dims);
    sincos((double)pos * p.scale * inv_freq, sn, cs);
    if (p.inverse) *sn = -*sn;
}

// The pair (a, o) turned by the angle of cos cs and sin sn.
__device__ __forceinline__ void rope_rotate(float a, float o, float cs, float sn, float *ra, float *ro) {
    *ra = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(o, sn));
    *ro = __fadd_rn(__fmul_rn(a, sn), __fmul_rn(o, cs));
}
__device__ __forceinline__ void rope_rotate(double a, double o, double cs, double sn, double *ra, double *ro) {
    *ra = __dsub_rn(__dmul_rn(a, cs), __dmul_rn(o, sn));
    *ro = __dadd_rn(__dmul_rn(a, sn), __dmul_rn(o, cs));
}

} // namespace afo_cuda

#endif
