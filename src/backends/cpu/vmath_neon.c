/* NEON float32 math: the AVX2 algorithm on 4 lanes; tails use the scalar
 * loop. */
#include "backends/cpu/simd_exp_neon.h"

static void exp_neon(int64_t n, float *y, const float *x) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, afo_exp4(vld1q_f32(x + i)));
    afo_vmath_scalar.exp(n - i, y + i, x + i);
}

static void sigmoid_neon(int64_t n, float *y, const float *x) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t e = afo_exp4(vnegq_f32(vld1q_f32(x + i)));
        vst1q_f32(y + i, vdivq_f32(vdupq_n_f32(1.0f), vaddq_f32(vdupq_n_f32(1.0f), e)));
    }
    afo_vmath_scalar.sigmoid(n - i, y + i, x + i);
}

static void silu_neon(int64_t n, float *y, const float *x) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        vst1q_f32(y + i, vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), afo_exp4(vnegq_f32(v)))));
    }
    afo_vmath_scalar.silu(n - i, y + i, x + i);
}

static void softmax_neon(int64_t n, float *y, const float *x) {
    int64_t i = 0;
    float32x4_t vm = vdupq_n_f32(-INFINITY);
    for (; i + 4 <= n; i += 4) vm = vmaxq_f32(vm, vld1q_f32(x + i));
    float m = vmaxvq_f32(vm);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    float32x4_t vmax = vdupq_n_f32(m), vs = vdupq_n_f32(0.0f);
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t e = afo_exp4(vsubq_f32(vld1q_f32(x + i), vmax));
        vst1q_f32(y + i, e);
        vs = vaddq_f32(vs, e);
    }
    float s = vaddvq_f32(vs);
    for (; i < n; i++) s += (y[i] = expf(x[i] - m));
    float inv = 1.0f / s;
    for (i = 0; i < n; i++) y[i] *= inv;
}

const afo_vmath afo_vmath_neon = {exp_neon, sigmoid_neon, silu_neon, softmax_neon};
