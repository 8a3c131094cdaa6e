/* NEON float32 exp shared by the vectorised math and the nn kernels (the
 * algorithm of simd_exp_avx2.h on 4 lanes). */
#ifndef AFO_SIMD_EXP_NEON_H
#define AFO_SIMD_EXP_NEON_H

#include <arm_neon.h>
#include <math.h>

#include "backends/cpu/vmath.h"

static inline float32x4_t afo_exp4(float32x4_t x) {
    uint32x4_t too_big = vcgtq_f32(x, vdupq_n_f32(AFO_EXP_HI));
    uint32x4_t too_small = vcltq_f32(x, vdupq_n_f32(AFO_EXP_LO));
    uint32x4_t not_nan = vceqq_f32(x, x);
    float32x4_t xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(AFO_EXP_LO)), vdupq_n_f32(AFO_EXP_HI));
    float32x4_t n = vrndnq_f32(vmulq_f32(xc, vdupq_n_f32(AFO_LOG2E)));
    float32x4_t r = vfmsq_f32(xc, n, vdupq_n_f32(AFO_LN2_HI));
    r = vfmsq_f32(r, n, vdupq_n_f32(AFO_LN2_LO));
    float32x4_t p = vdupq_n_f32(AFO_EXP_P0);
    p = vfmaq_f32(vdupq_n_f32(AFO_EXP_P1), p, r);
    p = vfmaq_f32(vdupq_n_f32(AFO_EXP_P2), p, r);
    p = vfmaq_f32(vdupq_n_f32(AFO_EXP_P3), p, r);
    p = vfmaq_f32(vdupq_n_f32(AFO_EXP_P4), p, r);
    p = vfmaq_f32(vdupq_n_f32(AFO_EXP_P5), p, r);
    float32x4_t e = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0f));
    int32x4_t ni = vcvtq_s32_f32(n), n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    const int32x4_t bias = vdupq_n_s32(127);
    e = vmulq_f32(e, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23)));
    e = vmulq_f32(e, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23)));
    e = vbslq_f32(too_big, vdupq_n_f32(INFINITY), e);
    e = vbslq_f32(too_small, vdupq_n_f32(0.0f), e);
    return vbslq_f32(not_nan, e, x);
}

#endif
