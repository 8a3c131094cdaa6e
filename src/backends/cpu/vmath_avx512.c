/* AVX-512 float32 math: the AVX2 algorithm on 16 lanes with masked tails. */
#include "backends/cpu/simd_exp_avx512.h"

static void exp_avx512(int64_t n, float *y, const float *x) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, afo_exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

static void sigmoid_avx512(int64_t n, float *y, const float *x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 e = afo_exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_maskz_loadu_ps(m, x + i)));
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(one, _mm512_add_ps(one, e)));
    }
}

static void silu_avx512(int64_t n, float *y, const float *x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = afo_exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(v, _mm512_add_ps(one, e)));
    }
}

static void softmax_avx512(int64_t n, float *y, const float *x) {
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16)
        vm = _mm512_mask_max_ps(vm, afo_tail_mask16(n - i), vm, _mm512_maskz_loadu_ps(afo_tail_mask16(n - i), x + i));
    __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(vm)), vs = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 e = afo_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
        _mm512_mask_storeu_ps(y + i, m, e);
        vs = _mm512_mask_add_ps(vs, m, vs, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vs));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + i), inv));
    }
}

const afo_vmath afo_vmath_avx512 = {exp_avx512, sigmoid_avx512, silu_avx512, softmax_avx512};
