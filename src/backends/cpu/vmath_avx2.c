/* AVX2+FMA float32 math: exp by range reduction to [-ln2/2, ln2/2] and a
 * degree-6 polynomial (Cephes' coefficients), 8 lanes at a time; tails go to
 * the scalar loop so results never depend on alignment. */
#include <immintrin.h>
#include <math.h>

#include "backends/cpu/vmath.h"

static inline __m256 exp8(__m256 x) {
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

static void exp_avx2(int64_t n, float *y, const float *x) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    afo_vmath_scalar.exp(n - i, y + i, x + i);
}

static void sigmoid_avx2(int64_t n, float *y, const float *x) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(x + i)));
        _mm256_storeu_ps(y + i, _mm256_div_ps(one, _mm256_add_ps(one, e)));
    }
    afo_vmath_scalar.sigmoid(n - i, y + i, x + i);
}

static void silu_avx2(int64_t n, float *y, const float *x) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    afo_vmath_scalar.silu(n - i, y + i, x + i);
}

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static void softmax_avx2(int64_t n, float *y, const float *x) {
    int64_t i = 0;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    float m = hmax8(vm);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    __m256 vmax = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(y + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    float s = hsum8(vs);
    for (; i < n; i++) s += (y[i] = expf(x[i] - m));
    __m256 inv = _mm256_set1_ps(1.0f / s);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), inv));
    for (; i < n; i++) y[i] *= 1.0f / s;
}

const afo_vmath afo_vmath_avx2 = {exp_avx2, sigmoid_avx2, silu_avx2, softmax_avx2};
