/* Pieces the x86 quantized matvecs (AVX2, AVX-512) share; included only by
 * files built with AVX2 and F16C. */
#ifndef AFO_QUANT_X86_H
#define AFO_QUANT_X86_H

#include <immintrin.h>

#include "backends/cpu/quant_kernels.h"

/* Element i of a scale or bias row of dtype dt, in float. */
static inline float param(afo_dtype dt, const void *p, int64_t i) {
    if (dt == AFO_BFLOAT16) {
        uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    if (dt == AFO_FLOAT16) return _cvtsh_ss(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* sum_g b[n, g] * xsum[m, g]: the biases' share of output (m, n). */
static inline float bias_dot(const afo_qmv_args *a, int64_t n, int m) {
    const float *xs = a->qx->xsum + m * a->G;
    float t = 0.0f;
    for (int64_t g = 0; g < a->G; g++) t += param(a->sdt, a->b, n * a->G + g) * xs[g];
    return t;
}

/* mc (1..4, a constant in each instance of call) rows of x per pass over
 * the weight rows, so a weight chunk is unpacked once for all of them. */
#define AFO_QMV_ROWS(call)                                                                                             \
    for (int m0 = 0; m0 < a->M; m0 += 4) {                                                                             \
        switch (a->M - m0) {                                                                                           \
        case 1: call(1); break;                                                                                        \
        case 2: call(2); break;                                                                                        \
        case 3: call(3); break;                                                                                        \
        default: call(4); break;                                                                                       \
        }                                                                                                              \
    }

#endif
