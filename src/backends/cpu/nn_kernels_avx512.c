/* AVX-512 versions of the nn primitives (see nn_kernels.h): 16 lanes, tails
 * through masked loads and stores, so no scalar remainder loop. */
#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/simd_exp_avx512.h"

static inline __m512 ld16_f32(const void *p, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}
static inline __m512 ld16_bf16(const void *p, int64_t i, __mmask16 m) {
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline __m512 ld16_f16(const void *p, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
}

#define AVX512_DOT_AXPY(SUF)                                                                      \
    static float dot_##SUF(const float *q, const void *k, int64_t n) {                           \
        __m512 acc = _mm512_setzero_ps();                                                         \
        for (int64_t i = 0; i < n; i += 16) {                                                     \
            __mmask16 m = afo_tail_mask16(n - i);                                                 \
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), ld16_##SUF(k, i, m), acc);     \
        }                                                                                         \
        return _mm512_reduce_add_ps(acc);                                                         \
    }                                                                                             \
    static void axpy_##SUF(float *acc, float a, const void *v, int64_t n) {                      \
        __m512 va = _mm512_set1_ps(a);                                                            \
        for (int64_t i = 0; i < n; i += 16) {                                                     \
            __mmask16 m = afo_tail_mask16(n - i);                                                 \
            __m512 y = _mm512_fmadd_ps(va, ld16_##SUF(v, i, m), _mm512_maskz_loadu_ps(m, acc + i)); \
            _mm512_mask_storeu_ps(acc + i, m, y);                                                 \
        }                                                                                         \
    }
AVX512_DOT_AXPY(f32)
AFO_NN_ROWWISE_DOTS_AXPYS(f32)
AVX512_DOT_AXPY(bf16)
AFO_NN_ROWWISE_DOTS_AXPYS(bf16)
AVX512_DOT_AXPY(f16)
AFO_NN_ROWWISE_DOTS_AXPYS(f16)

/* lanes past the tail keep acc; max_ps skips a NaN first operand */
static float max_avx512(const float *x, int64_t n) {
    __m512 acc = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        acc = _mm512_mask_max_ps(acc, m, _mm512_maskz_loadu_ps(m, x + i), acc);
    }
    return _mm512_reduce_max_ps(acc);
}

static float exp_sum_avx512(float *s, int64_t n, float max) {
    __m512 vm = _mm512_set1_ps(max), acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 e = afo_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vm));
        _mm512_mask_storeu_ps(s + i, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

static float sum_avx512(const float *x, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(afo_tail_mask16(n - i), x + i));
    return _mm512_reduce_add_ps(acc);
}

static float sq_dev_sum_avx512(const float *x, int64_t n, float c) {
    __m512 acc = _mm512_setzero_ps(), vc = _mm512_set1_ps(c);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), vc);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static void norm_apply_avx512(float *x, int64_t n, float c, float inv, const float *w, const float *b) {
    __m512 vc = _mm512_set1_ps(c), vi = _mm512_set1_ps(inv);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 y = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vc), vi);
        y = _mm512_fmadd_ps(y, _mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(x + i, m, y);
    }
}

static void rotate_halves_avx512(float *x, int64_t half, const float *c, const float *s) {
    for (int64_t i = 0; i < half; i += 16) {
        __mmask16 m = afo_tail_mask16(half - i);
        __m512 a = _mm512_maskz_loadu_ps(m, x + i), b = _mm512_maskz_loadu_ps(m, x + half + i);
        __m512 vc = _mm512_maskz_loadu_ps(m, c + i), vs = _mm512_maskz_loadu_ps(m, s + i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_fmsub_ps(a, vc, _mm512_mul_ps(b, vs)));
        _mm512_mask_storeu_ps(x + half + i, m, _mm512_fmadd_ps(a, vs, _mm512_mul_ps(b, vc)));
    }
}

const afo_nn_prims afo_nn_prims_avx512 = {
    "avx512", {rowwise_dots_f32, rowwise_dots_bf16, rowwise_dots_f16},
    {rowwise_axpys_f32, rowwise_axpys_bf16, rowwise_axpys_f16},
    max_avx512, exp_sum_avx512, sum_avx512, sq_dev_sum_avx512, norm_apply_avx512, rotate_halves_avx512,
};
