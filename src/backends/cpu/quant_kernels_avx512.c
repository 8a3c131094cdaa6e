/* AVX-512 quantized matvec: the AVX2 kernel's scheme (quant_kernels_avx2.c)
 * on 512-bit vectors for 4 and 8 bits, with VNNI's vpdpbusd for the 4-bit
 * int8 dot where the CPU has it; other widths run the AVX2 kernel. Built
 * with -mavx512vnni: the VNNI instruction is only reached when the CPU
 * reports it. */
#include <immintrin.h>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/quant_kernels.h"
#include "backends/cpu/quant_x86.h"

/* Rows n.. n+nr of the packed matrix, and their accumulators zeroed. */
static inline __attribute__((always_inline)) void rows_begin(const afo_qmv_args *a, int64_t n, int nr, int mc,
                                                              const uint8_t **row, __m512 acc[4][4]) {
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        row[r] = (const uint8_t *)(a->w + (n + r) * a->words);
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) acc[r][i] = _mm512_setzero_ps();
    }
}

static inline __attribute__((always_inline)) void rows_end(const afo_qmv_args *a, int64_t n, int nr, int mc, int m0,
                                                            __m512 acc[4][4], float bsum[4][4]) {
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) a->y[(m0 + i) * a->ldy + n + r] = _mm512_reduce_add_ps(acc[r][i]) + bsum[r][i];
}

/* Scale vector of the chunk lc (64 elements) of a piece whose scales are
 * s: its int32 dot lanes are [block 2lc x4, block 2lc+1 x4] twice (see
 * qmv4_block), and group size 32 puts the two blocks in different groups. */
static inline __attribute__((always_inline)) __m512 chunk_scale(int gs, const float *s, int64_t lc) {
    if (gs != 32) return _mm512_set1_ps(s[gs == 64 ? lc : lc / 2]); /* no division per chunk */
    __m256 h = _mm256_setr_m128(_mm_broadcast_ss(s + 2 * lc), _mm_broadcast_ss(s + 2 * lc + 1));
    return _mm512_insertf32x8(_mm512_castps256_ps512(h), h, 1);
}

/* The int32 dot of u8 levels q and s8 activations x, 4 products per lane. */
static inline __attribute__((always_inline)) __m512i dot_u8s8(int vnni, __m512i q, __m512i x) {
    if (vnni) return _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, x);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(q, x), _mm512_set1_epi16(1));
}

/* 4 bits: a 64-byte load holds two chunks of 64 levels, 128-bit lane L the
 * 32 levels of block L, even elements in the low nibbles. The x8 layout of
 * a chunk is [even b0, even b1, odd b0, odd b1], so 128-bit lanes are
 * regrouped: chunk 0 = [lo.0, lo.1, hi.0, hi.1], chunk 1 = [lo.2, lo.3,
 * hi.2, hi.3]. Its int32 lanes are then [b0 x4, b1 x4, b0 x4, b1 x4],
 * matching sx8's eight floats broadcast to both halves. Masked loads end a
 * row exactly; the x8 row is padded to 128 with zeros. nr weight rows (4
 * when M = 1: qmv4_rows) by mc rows of x. */
static inline __attribute__((always_inline)) void qmv4_block(int vnni, int nr, int mc, const afo_qmv_args *a, int m0,
                                                              int64_t n0, int64_t n1) {
    const afo_qx *qx = a->qx;
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    int64_t nbytes = a->K / 2, ld8 = qx->ldx / 64 * 8, span = AFO_QMV_PIECE * a->gs;
    float sf[4][AFO_QMV_PIECE + 4];
    for (int64_t n = n0; n + nr <= n1; n += nr) {
        const uint8_t *row[4];
        __m512 acc[4][4];
        float bsum[4][4] = {{0}};
        rows_begin(a, n, nr, mc, row, acc);
        for (int64_t k0 = 0; k0 < a->K; k0 += span) {
            int64_t c0 = k0 / 64, p1 = (k0 + span < a->K ? k0 + span : a->K) / 2;
            for (int r = 0; r < nr; r++) row_params(a, n + r, k0 / a->gs, sf[r], bsum[r], m0, mc);
            for (int64_t p = k0 / 2; p < p1; p += 64) {
                __mmask64 k = nbytes - p >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (nbytes - p)) - 1;
                int64_t c = p / 32; /* first chunk */
                __m512i q[4][2];
                __m512 sv[4][2];
#pragma GCC unroll 4
                for (int r = 0; r < nr; r++) {
                    _mm_prefetch((const char *)(row[r] + p + nr * a->words * 4), _MM_HINT_T0); /* see quant_x86.h */
                    __m512i v = _mm512_maskz_loadu_epi8(k, row[r] + p);
                    __m512i lo = _mm512_and_si512(v, lo4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
                    q[r][0] = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(1, 0, 1, 0));
                    q[r][1] = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(3, 2, 3, 2));
                    sv[r][0] = chunk_scale(a->gs, sf[r], c - c0);
                    sv[r][1] = chunk_scale(a->gs, sf[r], c + 1 - c0);
                }
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) {
                    const int8_t *xq = (const int8_t *)qx->xq + (m0 + i) * qx->ldx + 64 * c;
                    const float *sxp = qx->sx8 + (m0 + i) * ld8 + 8 * c;
#pragma GCC unroll 2
                    for (int h = 0; h < 2; h++) {
                        __m512i x = _mm512_loadu_si512(xq + 64 * h);
                        __m512 sx = _mm512_broadcast_f32x8(_mm256_loadu_ps(sxp + 8 * h));
#pragma GCC unroll 4
                        for (int r = 0; r < nr; r++) {
                            __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(dot_u8s8(vnni, q[r][h], x)), sx);
                            acc[r][i] = _mm512_fmadd_ps(t, sv[r][h], acc[r][i]);
                        }
                    }
                }
            }
        }
        rows_end(a, n, nr, mc, m0, acc, bsum);
    }
}

/* 8 bits, int16 activations: a block of 32 levels widened to 16 bits meets
 * its 32 xq in one vpmaddwd (products below 2^23); sx per block, the
 * group's scale per group. */
static inline __attribute__((always_inline)) void qmv8_block(int nr, int mc, const afo_qmv_args *a, int m0, int64_t n0,
                                                              int64_t n1) {
    const afo_qx *qx = a->qx;
    int64_t nb = qx->ldx / 32;
    float sf[4][AFO_QMV_PIECE + 4];
    for (int64_t n = n0; n + nr <= n1; n += nr) {
        const uint8_t *row[4];
        __m512 acc[4][4];
        float bsum[4][4] = {{0}};
        rows_begin(a, n, nr, mc, row, acc);
        for (int64_t g = 0; g < a->G; g++) {
            int64_t lg = g % AFO_QMV_PIECE;
            if (lg == 0)
                for (int r = 0; r < nr; r++) row_params(a, n + r, g, sf[r], bsum[r], m0, mc);
            __m512 d[2][4];
#pragma GCC unroll 2
            for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) d[r][i] = _mm512_setzero_ps();
            for (int64_t c = g * a->gs; c < (g + 1) * a->gs; c += 32) {
                __m512i q[2];
#pragma GCC unroll 4
                for (int r = 0; r < nr; r++) {
                    _mm_prefetch((const char *)(row[r] + c + nr * a->words * 4), _MM_HINT_T0);
                    q[r] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(row[r] + c)));
                }
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) {
                    __m512i x = _mm512_loadu_si512((const int16_t *)qx->xq + (m0 + i) * qx->ldx + c);
                    __m512 sx = _mm512_set1_ps(qx->sx[(m0 + i) * nb + c / 32]);
#pragma GCC unroll 2
                    for (int r = 0; r < nr; r++)
                        d[r][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(q[r], x)), sx, d[r][i]);
                }
            }
#pragma GCC unroll 2
            for (int r = 0; r < nr; r++) {
                __m512 sv = _mm512_set1_ps(sf[r][lg]);
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) acc[r][i] = _mm512_fmadd_ps(d[r][i], sv, acc[r][i]);
            }
        }
        rows_end(a, n, nr, mc, m0, acc, bsum);
    }
}

/* M = 1 (decode) takes weight rows four at a time: four accumulator
 * chains and four rows' loads in flight. With two (the 8-bit kernel's
 * pairs) the 4-bit decode was slower on a Zen 4 EPYC: ab_decode
 * (TinyLlama 4-bit, 40 pairs of 8 tokens) read four-row/two-row time
 * 0.872, 0.867, 0.973, 0.878, 0.856, a copy against itself 1.006. */
static inline __attribute__((always_inline)) void qmv4_rows(int vnni, const afo_qmv_args *a, int64_t n0, int64_t n1) {
#define CALL(mc) qmv4_block(vnni, 1, mc, a, m0, n0, n1)
    AFO_QMV_DISPATCH(qmv4_block, 4, vnni, );
#undef CALL
}

static void qmv4_vnni(const afo_qmv_args *a, int64_t n0, int64_t n1) { qmv4_rows(1, a, n0, n1); }
static void qmv4(const afo_qmv_args *a, int64_t n0, int64_t n1) { qmv4_rows(0, a, n0, n1); }

static void qmv8(const afo_qmv_args *a, int64_t n0, int64_t n1) {
#define CALL(mc) qmv8_block(1, mc, a, m0, n0, n1)
    AFO_QMV_DISPATCH(qmv8_block, 2, );
#undef CALL
}

void afo_quant_qmv_avx512(const afo_qmv_args *a, int64_t n0, int64_t n1) {
    if (a->bits == 4) {
        if (afo_cpu_get_features()->avx512_vnni) qmv4_vnni(a, n0, n1);
        else qmv4(a, n0, n1);
    } else if (a->bits == 8) {
        qmv8(a, n0, n1);
    } else {
        afo_quant_qmv_avx2(a, n0, n1);
    }
}
