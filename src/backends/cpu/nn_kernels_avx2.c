/* AVX2/FMA/F16C versions of the nn primitives (see nn_kernels.h). Tails
 * shorter than a vector run the scalar formulas. */
#include <immintrin.h>
#include <math.h>

#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/simd_exp_avx2.h"

static inline __m256 ld8_f32(const void *p, int64_t i) { return _mm256_loadu_ps((const float *)p + i); }
static inline __m256 ld8_bf16(const void *p, int64_t i) {
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256 ld8_f16(const void *p, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}
static inline float ld1_f32(const void *p, int64_t i) { return ((const float *)p)[i]; }
static inline float ld1_bf16(const void *p, int64_t i) { return afo_bf16_to_f32(((const uint16_t *)p)[i]); }
static inline float ld1_f16(const void *p, int64_t i) { return afo_f16_to_f32(((const uint16_t *)p)[i]); }

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Two accumulators hide the FMA latency on 64-128 long rows. */
#define AVX2_DOT_AXPY(SUF)                                                                     \
    static float dot_##SUF(const float *q, const void *k, int64_t n) {                        \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                             \
        int64_t i = 0;                                                                         \
        for (; i + 16 <= n; i += 16) {                                                         \
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), ld8_##SUF(k, i), a0);                 \
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), ld8_##SUF(k, i + 8), a1);         \
        }                                                                                      \
        if (i + 8 <= n) {                                                                      \
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), ld8_##SUF(k, i), a0);                 \
            i += 8;                                                                            \
        }                                                                                      \
        float s = hsum(_mm256_add_ps(a0, a1));                                                 \
        for (; i < n; i++) s += q[i] * ld1_##SUF(k, i);                                        \
        return s;                                                                              \
    }                                                                                          \
    static void axpy_##SUF(float *acc, float a, const void *v, int64_t n) {                   \
        __m256 va = _mm256_set1_ps(a);                                                         \
        int64_t i = 0;                                                                         \
        for (; i + 8 <= n; i += 8)                                                             \
            _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(va, ld8_##SUF(v, i), _mm256_loadu_ps(acc + i))); \
        for (; i < n; i++) acc[i] += a * ld1_##SUF(v, i);                                      \
    }
AVX2_DOT_AXPY(f32)
AVX2_DOT_AXPY(bf16)
AVX2_DOT_AXPY(f16)

static float exp_sum_avx2(float *s, int64_t n, float max) {
    __m256 vm = _mm256_set1_ps(max), acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = afo_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum(acc);
    for (; i < n; i++) sum += (s[i] = expf(s[i] - max));
    return sum;
}

static float sum_avx2(const float *x, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
    float s = hsum(acc);
    for (; i < n; i++) s += x[i];
    return s;
}

static float sq_dev_sum_avx2(const float *x, int64_t n, float c) {
    __m256 acc = _mm256_setzero_ps(), vc = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vc);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float s = hsum(acc);
    for (; i < n; i++) s += (x[i] - c) * (x[i] - c);
    return s;
}

static void norm_apply_avx2(float *x, int64_t n, float c, float inv, const float *w, const float *b) {
    __m256 vc = _mm256_set1_ps(c), vi = _mm256_set1_ps(inv);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 y = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vc), vi);
        _mm256_storeu_ps(x + i, _mm256_fmadd_ps(y, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) x[i] = (x[i] - c) * inv * w[i] + b[i];
}

static void rotate_halves_avx2(float *x, int64_t half, const float *c, const float *s) {
    int64_t i = 0;
    for (; i + 8 <= half; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + half + i);
        __m256 vc = _mm256_loadu_ps(c + i), vs = _mm256_loadu_ps(s + i);
        _mm256_storeu_ps(x + i, _mm256_fmsub_ps(a, vc, _mm256_mul_ps(b, vs)));
        _mm256_storeu_ps(x + half + i, _mm256_fmadd_ps(a, vs, _mm256_mul_ps(b, vc)));
    }
    for (; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = a * s[i] + b * c[i];
    }
}

const afo_nn_prims afo_nn_prims_avx2 = {
    "avx2", {dot_f32, dot_bf16, dot_f16}, {axpy_f32, axpy_bf16, axpy_f16},
    exp_sum_avx2, sum_avx2, sq_dev_sum_avx2, norm_apply_avx2, rotate_halves_avx2,
};
