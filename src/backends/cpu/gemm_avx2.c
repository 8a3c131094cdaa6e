/* AVX2 + FMA + F16C kernels: row conversions, weight-layout matvec and the
 * 6x16 f32 GEMM microkernel. */
#include <immintrin.h>
#include <string.h>

#include "backends/cpu/gemm.h"

#define AI static inline __attribute__((always_inline))

/* ---------------------------------------------------------------- conversion */

AI __m256 bf16x8_to_f32(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Bit-exact with afo_f32_to_bf16: round to nearest even, NaN quietened with
 * its payload kept. */
AI __m128i f32x8_to_bf16(__m256 f) {
    __m256i u = _mm256_castps_si256(f);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    __m256i isnan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, nan, isnan);
    __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
    return _mm_packus_epi32(lo, hi);
}

/* F16C rounds to nearest even like afo_f32_to_f16, but keeps NaN payloads
 * where the scalar code returns the canonical quiet NaN. */
AI __m128i f32x8_to_f16(__m256 f) {
    __m128i h = _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256i isnan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    __m128i n = _mm_packs_epi32(_mm256_castsi256_si128(isnan), _mm256_extracti128_si256(isnan, 1));
    __m128i sign = _mm_and_si128(h, _mm_set1_epi16((short)0x8000));
    __m128i canon = _mm_or_si128(sign, _mm_set1_epi16(0x7e00));
    return _mm_blendv_epi8(h, canon, n);
}

AI __m256 load8(afo_dtype t, const void *p) {
    switch (t) {
    case AFO_FLOAT16: return _mm256_cvtph_ps(_mm_loadu_si128(p));
    case AFO_BFLOAT16: return bf16x8_to_f32(_mm_loadu_si128(p));
    default: return _mm256_loadu_ps(p);
    }
}

AI void store8(afo_dtype t, void *p, __m256 v) {
    switch (t) {
    case AFO_FLOAT16: _mm_storeu_si128(p, f32x8_to_f16(v)); break;
    case AFO_BFLOAT16: _mm_storeu_si128(p, f32x8_to_bf16(v)); break;
    default: _mm256_storeu_ps(p, v); break;
    }
}

static void convert_avx2(afo_dtype from, const void *src, afo_dtype to, void *dst, int64_t n) {
    bool ok = (from == AFO_FLOAT32 || from == AFO_FLOAT16 || from == AFO_BFLOAT16) &&
              (to == AFO_FLOAT32 || to == AFO_FLOAT16 || to == AFO_BFLOAT16);
    if (!ok || from == to) {
        afo_gemm_kernels_scalar.convert(from, src, to, dst, n);
        return;
    }
    size_t fs = from == AFO_FLOAT32 ? 4 : 2, ts = to == AFO_FLOAT32 ? 4 : 2;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        store8(to, (char *)dst + i * ts, load8(from, (const char *)src + i * fs));
    if (i < n) afo_gemm_kernels_scalar.convert(from, (const char *)src + i * fs, to, (char *)dst + i * ts, n - i);
}

/* ---------------------------------------------------------------- matvec */

AI float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI float load1(afo_dtype t, const void *p, int64_t i) {
    switch (t) {
    case AFO_FLOAT16: return _cvtsh_ss(((const uint16_t *)p)[i]);
    case AFO_BFLOAT16: {
        uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    default: return ((const float *)p)[i];
    }
}

/* MR rows of A against NR consecutive weight rows; each weight vector is
 * loaded (and widened) once and used for all MR rows. */
AI void mv_tile(afo_dtype t, const int MR, const int NR, int64_t K, const float *a, int64_t lda,
                const char *w, int64_t ldw_bytes, float *out, int64_t ldo, int64_t os, int64_t pf) {
    size_t es = t == AFO_FLOAT32 ? 4 : 2;
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) acc[m][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            if ((k * (int64_t)es) % 64 == 0) _mm_prefetch(w + r * ldw_bytes + k * es + pf, _MM_HINT_T0);
            wv[r] = load8(t, w + r * ldw_bytes + k * es);
        }
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++) {
            __m256 av = _mm256_loadu_ps(a + m * lda + k);
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++) acc[m][r] = _mm256_fmadd_ps(av, wv[r], acc[m][r]);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            float s = hsum(acc[m][r]);
            for (int64_t kk = k; kk < K; kk++) s += a[m * lda + kk] * load1(t, w + r * ldw_bytes, kk);
            out[m * ldo + r * os] = s;
        }
}

/* Four rows a pass for up to 2 rows of A, else two (16 ymm registers). */
AI void mv_typed(afo_dtype t, int M, int64_t K, const float *a, int64_t lda, const void *w, int64_t ldw,
                 int64_t n0, int64_t n1, float *out, int64_t ldo) {
    if (M <= 2) AFO_MV_PASSES(4, t, M, K, a, lda, w, ldw, n0, n1, out, ldo);
    else AFO_MV_PASSES(2, t, M, K, a, lda, w, ldw, n0, n1, out, ldo);
}

static void matvec_avx2(afo_dtype wdt, int M, int64_t K, const float *a, int64_t lda, const void *w,
                        int64_t ldw, int64_t n0, int64_t n1, float *out, int64_t ldo) {
    switch (wdt) {
    case AFO_FLOAT16: mv_typed(AFO_FLOAT16, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    case AFO_BFLOAT16: mv_typed(AFO_BFLOAT16, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    default: mv_typed(AFO_FLOAT32, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    }
}

/* ---------------------------------------------------------------- GEMM microkernel */

enum { MR = 6, NR = 16 };

/* 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers;
 * per k: 2 loads, 6 broadcasts, 12 FMAs. */
static void ukr_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, bool accumulate) {
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b + k * NR), b1 = _mm256_load_ps(b + k * NR + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 av = _mm256_broadcast_ss(a + k * MR + i);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        if (accumulate) {
            acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(ci));
            acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(ci + 8));
        }
        _mm256_storeu_ps(ci, acc[i][0]);
        _mm256_storeu_ps(ci + 8, acc[i][1]);
    }
}

const afo_gemm_kernels afo_gemm_kernels_avx2 = {
    .mr = MR, .nr = NR, .ukr = ukr_avx2,
    .kc = 256, .mc = 144, .nc = 2048,
    .matvec = matvec_avx2, .convert = convert_avx2,
};
