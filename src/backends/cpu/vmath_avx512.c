/* AVX-512 float32 math: the AVX2 algorithm on 16 lanes with masked tails. */
#include <immintrin.h>
#include <math.h>

#include "backends/cpu/vmath.h"

static inline __m512 exp16(__m512 x) {
    __mmask16 too_big = _mm512_cmp_ps_mask(x, _mm512_set1_ps(AFO_EXP_HI), _CMP_GT_OQ);
    __mmask16 too_small = _mm512_cmp_ps_mask(x, _mm512_set1_ps(AFO_EXP_LO), _CMP_LT_OQ);
    __mmask16 is_nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(AFO_EXP_LO)), _mm512_set1_ps(AFO_EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(AFO_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AFO_LN2_HI), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AFO_LN2_LO), r);
    __m512 p = _mm512_set1_ps(AFO_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AFO_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AFO_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AFO_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AFO_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AFO_EXP_P5));
    __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    __m512i ni = _mm512_cvtps_epi32(n), n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    const __m512i bias = _mm512_set1_epi32(127);
    e = _mm512_mul_ps(e, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23)));
    e = _mm512_mul_ps(e, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23)));
    e = _mm512_mask_mov_ps(e, too_big, _mm512_set1_ps(INFINITY));
    e = _mm512_mask_mov_ps(e, too_small, _mm512_setzero_ps());
    return _mm512_mask_mov_ps(e, is_nan, x);
}

static inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1); }

static void exp_avx512(int64_t n, float *y, const float *x) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

static void sigmoid_avx512(int64_t n, float *y, const float *x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_maskz_loadu_ps(m, x + i)));
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(one, _mm512_add_ps(one, e)));
    }
}

static void silu_avx512(int64_t n, float *y, const float *x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(v, _mm512_add_ps(one, e)));
    }
}

static void softmax_avx512(int64_t n, float *y, const float *x) {
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16)
        vm = _mm512_mask_max_ps(vm, tail_mask(n - i), vm, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(vm)), vs = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
        _mm512_mask_storeu_ps(y + i, m, e);
        vs = _mm512_mask_add_ps(vs, m, vs, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vs));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + i), inv));
    }
}

const afo_vmath afo_vmath_avx512 = {exp_avx512, sigmoid_avx512, silu_avx512, softmax_avx512};
