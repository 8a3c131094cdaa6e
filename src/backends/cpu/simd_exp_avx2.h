/* AVX2+FMA float32 exp shared by the vectorised math and the nn kernels:
 * range reduction to [-ln2/2, ln2/2] and a degree-6 polynomial (Cephes'
 * coefficients); constants and limits in vmath.h. */
#ifndef AFO_SIMD_EXP_AVX2_H
#define AFO_SIMD_EXP_AVX2_H

#include <immintrin.h>
#include <math.h>

#include "backends/cpu/vmath.h"

static inline __m256 afo_exp8(__m256 x) {
    __m256 too_big = _mm256_cmp_ps(x, _mm256_set1_ps(AFO_EXP_HI), _CMP_GT_OQ);
    __m256 too_small = _mm256_cmp_ps(x, _mm256_set1_ps(AFO_EXP_LO), _CMP_LT_OQ);
    __m256 is_nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(AFO_EXP_LO)), _mm256_set1_ps(AFO_EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(AFO_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AFO_LN2_HI), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AFO_LN2_LO), r);
    __m256 p = _mm256_set1_ps(AFO_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AFO_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AFO_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AFO_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AFO_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AFO_EXP_P5));
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    e = _mm256_mul_ps(e, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23)));
    e = _mm256_mul_ps(e, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23)));
    e = _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY), too_big);
    e = _mm256_blendv_ps(e, _mm256_setzero_ps(), too_small);
    return _mm256_blendv_ps(e, x, is_nan);
}

#endif
