/* AVX-512 float32 exp shared by the vectorised math and the nn kernels
 * (the algorithm of simd_exp_avx2.h on 16 lanes). */
#ifndef AFO_SIMD_EXP_AVX512_H
#define AFO_SIMD_EXP_AVX512_H

#include <immintrin.h>
#include <math.h>

#include "backends/cpu/vmath.h"

static inline __m512 afo_exp16(__m512 x) {
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

/* Mask of the first min(left, 16) lanes. */
static inline __mmask16 afo_tail_mask16(int64_t left) { return left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1); }

#endif
