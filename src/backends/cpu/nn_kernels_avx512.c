/* AVX-512 versions of the nn primitives (see nn_kernels.h): 16 lanes, tails
 * through masked loads and stores, so no scalar remainder loop. Attention's
 * two products are AVX2's register tiles: the row-at-a-time 512-bit ones
 * (a call and a horizontal sum per head and key) had a Zen 5 EPYC's 4-bit
 * TinyLlama decode at a 512-token context take 1.25x as long. */
#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/simd_exp_avx512.h"

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
    "avx512", {afo_nn_dots_avx2_f32, afo_nn_dots_avx2_bf16, afo_nn_dots_avx2_f16},
    {afo_nn_axpys_avx2_f32, afo_nn_axpys_avx2_bf16, afo_nn_axpys_avx2_f16},
    max_avx512, exp_sum_avx512, sum_avx512, sq_dev_sum_avx512, norm_apply_avx512, rotate_halves_avx512,
};
