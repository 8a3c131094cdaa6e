/* AVX-512 (F/BW/VL/DQ) kernels: row conversions, weight-layout matvec, the
 * 12x32 f32 GEMM microkernel, k-pair packing and, for CPUs with
 * AVX512_BF16, a 12x32 bf16 microkernel on k-pair panels using vdpbf16ps. */
#include <immintrin.h>

#include "backends/cpu/gemm.h"

#define AI static inline __attribute__((always_inline))

/* ---------------------------------------------------------------- conversion */

AI __mmask16 tail_mask(int64_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

AI __m512 bf16x16_to_f32(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

/* Bit-exact with afo_f32_to_bf16: round to nearest even, NaN quietened with
 * its payload kept. (vcvtneps2bf16 would flush subnormals.) */
AI __m256i f32x16_to_bf16(__m512 f) {
    __m512i u = _mm512_castps_si512(f);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

/* vcvtps2ph rounds to nearest even like afo_f32_to_f16 but keeps NaN
 * payloads where the scalar code returns the canonical quiet NaN. */
AI __m256i f32x16_to_f16(__m512 f) {
    __m256i h = _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
    __m256i canon = _mm256_or_si256(_mm256_and_si256(h, _mm256_set1_epi16((short)0x8000)), _mm256_set1_epi16(0x7e00));
    return _mm256_mask_blend_epi16(nan, h, canon);
}

/* Loads n <= 16 elements (masked: nothing past them is touched), zeros after. */
AI __m512 load16(afo_dtype t, const void *p, __mmask16 m) {
    switch (t) {
    case AFO_FLOAT16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    case AFO_BFLOAT16: return bf16x16_to_f32(_mm256_maskz_loadu_epi16(m, p));
    default: return _mm512_maskz_loadu_ps(m, p);
    }
}

AI void store16(afo_dtype t, void *p, __m512 v, __mmask16 m) {
    switch (t) {
    case AFO_FLOAT16: _mm256_mask_storeu_epi16(p, m, f32x16_to_f16(v)); break;
    case AFO_BFLOAT16: _mm256_mask_storeu_epi16(p, m, f32x16_to_bf16(v)); break;
    default: _mm512_mask_storeu_ps(p, m, v); break;
    }
}

static void convert_avx512(afo_dtype from, const void *src, afo_dtype to, void *dst, int64_t n) {
    bool ok = (from == AFO_FLOAT32 || from == AFO_FLOAT16 || from == AFO_BFLOAT16) &&
              (to == AFO_FLOAT32 || to == AFO_FLOAT16 || to == AFO_BFLOAT16);
    if (!ok || from == to) {
        afo_gemm_kernels_scalar.convert(from, src, to, dst, n);
        return;
    }
    size_t fs = from == AFO_FLOAT32 ? 4 : 2, ts = to == AFO_FLOAT32 ? 4 : 2;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        store16(to, (char *)dst + i * ts, load16(from, (const char *)src + i * fs, m), m);
    }
}

/* ---------------------------------------------------------------- matvec */

/* MR rows of A against NR consecutive weight rows; each weight vector is
 * loaded (and widened) once and used for all MR rows. The K tail is one
 * more masked step. bf16 rows go 32 elements a step: one shift and one mask
 * make a 64-byte load's even and odd elements floats, against A's chunk
 * split the same way (two permutes, shared by the NR rows); widening 16 at
 * a time (vpmovzxwd, a lane-crossing shuffle, and a shift) held the matvec
 * to 47% of read bandwidth on a Zen 4 EPYC, against 82% for f32 rows. */
AI void mv_tile(afo_dtype t, const int MR, const int NR, int64_t K, const float *a, int64_t lda,
                const char *w, int64_t ldw_bytes, float *out, int64_t ldo, int64_t os, int64_t pf) {
    size_t es = t == AFO_FLOAT32 ? 4 : 2;
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) acc[m][r] = _mm512_setzero_ps();
    int64_t k = 0;
    if (t == AFO_BFLOAT16) {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        const __m512i high = _mm512_set1_epi32((int)0xffff0000u);
        for (; k + 32 <= K; k += 32) {
            __m512 we[4], wo[4];
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++) {
                _mm_prefetch(w + r * ldw_bytes + k * 2 + pf, _MM_HINT_T0);
                __m512i v = _mm512_loadu_si512(w + r * ldw_bytes + k * 2);
                we[r] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                wo[r] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
            }
#pragma GCC unroll 4
            for (int m = 0; m < MR; m++) {
                __m512 lo = _mm512_loadu_ps(a + m * lda + k), hi = _mm512_loadu_ps(a + m * lda + k + 16);
                __m512 ae = _mm512_permutex2var_ps(lo, even, hi), ao = _mm512_permutex2var_ps(lo, odd, hi);
#pragma GCC unroll 4
                for (int r = 0; r < NR; r++) acc[m][r] = _mm512_fmadd_ps(ao, wo[r], _mm512_fmadd_ps(ae, we[r], acc[m][r]));
            }
        }
    }
    for (; k < K; k += 16) {
        __mmask16 mask = tail_mask(K - k);
        __m512 wv[4];
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            if ((k * (int64_t)es) % 64 == 0) _mm_prefetch(w + r * ldw_bytes + k * es + pf, _MM_HINT_T0);
            wv[r] = load16(t, w + r * ldw_bytes + k * es, mask);
        }
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++) {
            __m512 av = _mm512_maskz_loadu_ps(mask, a + m * lda + k);
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++) acc[m][r] = _mm512_fmadd_ps(av, wv[r], acc[m][r]);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) out[m * ldo + r * os] = _mm512_reduce_add_ps(acc[m][r]);
}

AI void mv_typed(afo_dtype t, int M, int64_t K, const float *a, int64_t lda, const void *w, int64_t ldw,
                 int64_t n0, int64_t n1, float *out, int64_t ldo) {
    AFO_MV_PASSES(4, t, M, K, a, lda, w, ldw, n0, n1, out, ldo);
}

static void matvec_avx512(afo_dtype wdt, int M, int64_t K, const float *a, int64_t lda, const void *w,
                          int64_t ldw, int64_t n0, int64_t n1, float *out, int64_t ldo) {
    switch (wdt) {
    case AFO_FLOAT16: mv_typed(AFO_FLOAT16, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    case AFO_BFLOAT16: mv_typed(AFO_BFLOAT16, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    default: mv_typed(AFO_FLOAT32, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    }
}

/* ---------------------------------------------------------------- GEMM microkernels */

enum { MR = 12, NR = 32 };

AI void store_tile(__m512 acc[MR][2], float *c, int64_t ldc, bool accumulate) {
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        if (accumulate) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_loadu_ps(ci));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_loadu_ps(ci + 16));
        }
        _mm512_storeu_ps(ci, acc[i][0]);
        _mm512_storeu_ps(ci + 16, acc[i][1]);
    }
}

AI void prefetch_tile(const float *c, int64_t ldc) {
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
    }
}

/* 24 accumulators of the 32 zmm registers; per k: 2 B loads, 12
 * broadcasts, 24 FMAs. */
static void ukr_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, bool accumulate) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    prefetch_tile(c, ldc);
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b + k * NR), b1 = _mm512_load_ps(b + k * NR + 16);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512 av = _mm512_set1_ps(a[k * MR + i]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    store_tile(acc, c, ldc, accumulate);
}

/* Same tile from bf16 k-pair panels: vdpbf16ps adds both products of a pair
 * into each f32 lane, so one instruction does 32 multiply-adds. */
static void ukr_bf16_avx512(int64_t kc2, const uint16_t *a, const uint16_t *b, float *c, int64_t ldc,
                            bool accumulate) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    prefetch_tile(c, ldc);
    const int32_t *ap = (const int32_t *)a; /* one bf16 pair per int32 */
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc2; k++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(b + k * NR * 2);
        __m512bh b1 = (__m512bh)_mm512_load_si512(b + k * NR * 2 + 32);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32(ap[k * MR + i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
        }
    }
    store_tile(acc, c, ldc, accumulate);
}

/* ---------------------------------------------------------------- packing */

/* Transposes a 16x16 matrix of 32-bit elements held one row per register. */
AI void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
#pragma GCC unroll 8
    for (int m = 0; m < 8; m++) {
        t[2 * m] = _mm512_unpacklo_epi32(r[2 * m], r[2 * m + 1]);
        t[2 * m + 1] = _mm512_unpackhi_epi32(r[2 * m], r[2 * m + 1]);
    }
    /* u[4g + j], 128-bit lane l: column 4l + j of rows 4g..4g+3 */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44), v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xee);
        __m512i w0 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44), w1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xee);
        r[j] = _mm512_shuffle_i32x4(v0, w0, 0x88), r[4 + j] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
        r[8 + j] = _mm512_shuffle_i32x4(v1, w1, 0x88), r[12 + j] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
    }
}

/* A k-pair is 32 bits, so packing pairs is a 32-bit transpose: 16 rows by
 * 16 pairs at a time (the scalar loop stores one pair at a time, and was
 * most of a bf16 GEMM's packing time). */
static int64_t pack_pairs_avx512(const uint16_t *x, int64_t rs, int pr, int64_t cols, int P, uint16_t *d) {
    if (P % 16) return 0;
    int64_t q0 = 0;
    for (; 2 * (q0 + 16) <= cols; q0 += 16)
        for (int h = 0; h < P; h += 16) {
            __m512i r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = h + i < pr ? _mm512_loadu_si512(x + (h + i) * rs + 2 * q0) : _mm512_setzero_si512();
            transpose16(r);
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++) _mm512_storeu_si512(d + ((q0 + c) * P + h) * 2, r[c]);
        }
    return q0;
}

const afo_gemm_kernels afo_gemm_kernels_avx512 = {
    .mr = MR, .nr = NR, .ukr = ukr_avx512,
    .mr_bf16 = MR, .nr_bf16 = NR, .ukr_bf16 = ukr_bf16_avx512, .pack_pairs = pack_pairs_avx512,
    .kc = 256, .mc = 96, .nc = 3072,
    .matvec = matvec_avx512, .convert = convert_avx512,
};
