/* Scalar reference and dispatch for the vectorised math kernels. */
#include "backends/cpu/vmath.h"

#include <math.h>
#include <stddef.h>

static void exp_scalar(int64_t n, float *y, const float *x) {
    for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

static void sigmoid_scalar(int64_t n, float *y, const float *x) {
    for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void silu_scalar(int64_t n, float *y, const float *x) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

static void softmax_scalar(int64_t n, float *y, const float *x) {
    float m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int64_t i = 0; i < n; i++) s += (y[i] = expf(x[i] - m));
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; i++) y[i] *= inv;
}

const afo_vmath afo_vmath_scalar = {exp_scalar, sigmoid_scalar, silu_scalar, softmax_scalar};

const afo_vmath *afo_vmath_for_level(afo_cpu_level level) {
    if (!afo_cpu_level_supported(level)) return NULL;
    switch (level) {
#if defined(__x86_64__)
    case AFO_CPU_AVX2: return &afo_vmath_avx2;
    case AFO_CPU_AMX: /* AMX adds only bf16 GEMM tiles */
    case AFO_CPU_AVX512: return &afo_vmath_avx512;
#elif defined(__aarch64__)
    case AFO_CPU_NEON: return &afo_vmath_neon;
#endif
    case AFO_CPU_SCALAR: return &afo_vmath_scalar;
    default: return NULL;
    }
}

const afo_vmath *afo_vmath_current(void) {
    const afo_vmath *v = afo_vmath_for_level(afo_cpu_kernel_level());
    return v ? v : &afo_vmath_scalar;
}
