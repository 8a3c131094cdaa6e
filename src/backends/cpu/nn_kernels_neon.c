/* NEON versions of the nn primitives (see nn_kernels.h). Tails shorter
 * than a vector run the scalar formulas. */
#include <arm_neon.h>
#include <math.h>

#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/simd_exp_neon.h"

static inline float32x4_t ld4_f32(const void *p, int64_t i) { return vld1q_f32((const float *)p + i); }
static inline float32x4_t ld4_bf16(const void *p, int64_t i) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)p + i), 16));
}
static inline float32x4_t ld4_f16(const void *p, int64_t i) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p + i)));
}
static inline float ld1_f32(const void *p, int64_t i) { return ((const float *)p)[i]; }
static inline float ld1_bf16(const void *p, int64_t i) { return afo_bf16_to_f32(((const uint16_t *)p)[i]); }
static inline float ld1_f16(const void *p, int64_t i) { return afo_f16_to_f32(((const uint16_t *)p)[i]); }

/* Two accumulators hide the FMA latency on 64-128 long rows. */
#define NEON_DOT_AXPY(SUF)                                                                   \
    static float dot_##SUF(const float *q, const void *k, int64_t n) {                      \
        float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);                                \
        int64_t i = 0;                                                                       \
        for (; i + 8 <= n; i += 8) {                                                         \
            a0 = vfmaq_f32(a0, vld1q_f32(q + i), ld4_##SUF(k, i));                           \
            a1 = vfmaq_f32(a1, vld1q_f32(q + i + 4), ld4_##SUF(k, i + 4));                   \
        }                                                                                    \
        if (i + 4 <= n) {                                                                    \
            a0 = vfmaq_f32(a0, vld1q_f32(q + i), ld4_##SUF(k, i));                           \
            i += 4;                                                                          \
        }                                                                                    \
        float s = vaddvq_f32(vaddq_f32(a0, a1));                                             \
        for (; i < n; i++) s += q[i] * ld1_##SUF(k, i);                                      \
        return s;                                                                            \
    }                                                                                        \
    static void axpy_##SUF(float *acc, float a, const void *v, int64_t n) {                 \
        int64_t i = 0;                                                                       \
        for (; i + 4 <= n; i += 4) vst1q_f32(acc + i, vfmaq_n_f32(vld1q_f32(acc + i), ld4_##SUF(v, i), a)); \
        for (; i < n; i++) acc[i] += a * ld1_##SUF(v, i);                                    \
    }
NEON_DOT_AXPY(f32)
AFO_NN_ROWWISE_DOTS_AXPYS(f32)
NEON_DOT_AXPY(bf16)
AFO_NN_ROWWISE_DOTS_AXPYS(bf16)
NEON_DOT_AXPY(f16)
AFO_NN_ROWWISE_DOTS_AXPYS(f16)

/* maxnm returns the number when one operand is NaN */
static float max_neon(const float *x, int64_t n) {
    float32x4_t acc = vdupq_n_f32(-INFINITY);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) acc = vmaxnmq_f32(acc, vld1q_f32(x + i));
    float r = vmaxnmvq_f32(acc);
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

static float exp_sum_neon(float *s, int64_t n, float max) {
    float32x4_t vm = vdupq_n_f32(max), acc = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t e = afo_exp4(vsubq_f32(vld1q_f32(s + i), vm));
        vst1q_f32(s + i, e);
        acc = vaddq_f32(acc, e);
    }
    float sum = vaddvq_f32(acc);
    for (; i < n; i++) sum += (s[i] = expf(s[i] - max));
    return sum;
}

static float sum_neon(const float *x, int64_t n) {
    float32x4_t acc = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) acc = vaddq_f32(acc, vld1q_f32(x + i));
    float s = vaddvq_f32(acc);
    for (; i < n; i++) s += x[i];
    return s;
}

static float sq_dev_sum_neon(const float *x, int64_t n, float c) {
    float32x4_t acc = vdupq_n_f32(0), vc = vdupq_n_f32(c);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t d = vsubq_f32(vld1q_f32(x + i), vc);
        acc = vfmaq_f32(acc, d, d);
    }
    float s = vaddvq_f32(acc);
    for (; i < n; i++) s += (x[i] - c) * (x[i] - c);
    return s;
}

static void norm_apply_neon(float *x, int64_t n, float c, float inv, const float *w, const float *b) {
    float32x4_t vc = vdupq_n_f32(c);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t y = vmulq_n_f32(vsubq_f32(vld1q_f32(x + i), vc), inv);
        vst1q_f32(x + i, vfmaq_f32(vld1q_f32(b + i), y, vld1q_f32(w + i)));
    }
    for (; i < n; i++) x[i] = (x[i] - c) * inv * w[i] + b[i];
}

static void rotate_halves_neon(float *x, int64_t half, const float *c, const float *s) {
    int64_t i = 0;
    for (; i + 4 <= half; i += 4) {
        float32x4_t a = vld1q_f32(x + i), b = vld1q_f32(x + half + i);
        float32x4_t vc = vld1q_f32(c + i), vs = vld1q_f32(s + i);
        vst1q_f32(x + i, vfmsq_f32(vmulq_f32(a, vc), b, vs));
        vst1q_f32(x + half + i, vfmaq_f32(vmulq_f32(b, vc), a, vs));
    }
    for (; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = a * s[i] + b * c[i];
    }
}

const afo_nn_prims afo_nn_prims_neon = {
    "neon", {rowwise_dots_f32, rowwise_dots_bf16, rowwise_dots_f16},
    {rowwise_axpys_f32, rowwise_axpys_bf16, rowwise_axpys_f16}, NULL,
    max_neon, exp_sum_neon, sum_neon, sq_dev_sum_neon, norm_apply_neon, rotate_halves_neon,
};
