/* Vectorised float32 math for elementwise ops and softmax, dispatched at run
 * time like the GEMM kernels. Every level agrees with the scalar reference
 * to a few ulp (tests/test_vmath.c states the bounds). */
#ifndef AFO_VMATH_H
#define AFO_VMATH_H

#include <stdint.h>

#include "backends/cpu/cpu_features.h"

typedef struct afo_vmath {
    void (*exp)(int64_t n, float *y, const float *x);
    void (*sigmoid)(int64_t n, float *y, const float *x);
    void (*silu)(int64_t n, float *y, const float *x);
    /* y = softmax(x) over n elements (y may alias x) */
    void (*softmax)(int64_t n, float *y, const float *x);
} afo_vmath;

/* The table for the current kernel level (afo_cpu_kernel_level). */
const afo_vmath *afo_vmath_current(void);
/* The table of a given level, or NULL when this build or CPU lacks it. */
const afo_vmath *afo_vmath_for_level(afo_cpu_level level);

extern const afo_vmath afo_vmath_scalar;
#if defined(__x86_64__)
extern const afo_vmath afo_vmath_avx2;
extern const afo_vmath afo_vmath_avx512;
#elif defined(__aarch64__)
extern const afo_vmath afo_vmath_neon;
#endif

/* exp(x) = 2^n * p(r): 2^n is applied as two factors 2^(n>>1) * 2^(n-(n>>1))
 * so results near FLT_MAX and in the subnormal range stay exact; above HI
 * the result is inf, below LO it is 0. Shared constants of the polynomial. */
#define AFO_EXP_HI 88.7228394f
#define AFO_EXP_LO -103.972084f
#define AFO_LOG2E 1.44269504088896341f
#define AFO_LN2_HI 0.693359375f
#define AFO_LN2_LO -2.12194440e-4f
#define AFO_EXP_P0 1.9875691500E-4f
#define AFO_EXP_P1 1.3981999507E-3f
#define AFO_EXP_P2 8.3334519073E-3f
#define AFO_EXP_P3 4.1665795894E-2f
#define AFO_EXP_P4 1.6666665459E-1f
#define AFO_EXP_P5 5.0000001201E-1f

#endif
