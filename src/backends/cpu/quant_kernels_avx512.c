/* AVX-512 quantized matvec: the AVX2 kernel's scheme (quant_kernels_avx2.c)
 * on 512-bit vectors for 4 and 8 bits, with VNNI's vpdpbusd for the 4-bit
 * int8 dot where the CPU has it; other widths run the AVX2 kernel. Built
 * with -mavx512vnni: the VNNI instruction is only reached when the CPU
 * reports it. */
#include <immintrin.h>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/quant_kernels.h"
#include "backends/cpu/quant_x86.h"

/* Pass j's rows (quant_x86.h), and their accumulators zeroed. */
static inline __attribute__((always_inline)) void rows_begin(const afo_qmv_args *a, int64_t n0, int64_t n1, int64_t j,
                                                              int nr, int mc, const uint8_t **row,
                                                              __m512 acc[NR_MAX][4]) {
    pass_rows(a, n0, n1, j, nr, row);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) acc[r][i] = _mm512_setzero_ps();
}

static inline __attribute__((always_inline)) void rows_end(const afo_qmv_args *a, int64_t n0, int64_t n1, int64_t j,
                                                            int nr, int mc, int m0, __m512 acc[NR_MAX][4],
                                                            float bsum[NR_MAX][4]) {
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++)
            a->y[(m0 + i) * a->ldy + pass_row(n0, n1, nr, j, r)] = _mm512_reduce_add_ps(acc[r][i]) + bsum[r][i];
}

/* The int32 dot of 128 levels with x: u8 even levels q_even against x's
 * evens, then the odd ones against its odds, into one vector whose lane i
 * sums elements 8i .. 8i + 7 (< 2 * 3810 per int16 pair without VNNI). */
static inline __attribute__((always_inline)) __m512i dot128_u8s8(int vnni, __m512i q_even, __m512i x_even,
                                                                  __m512i q_odd, __m512i x_odd) {
    if (vnni) return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q_even, x_even), q_odd, x_odd);
    __m512i h = _mm512_add_epi16(_mm512_maddubs_epi16(q_even, x_even), _mm512_maddubs_epi16(q_odd, x_odd));
    return _mm512_madd_epi16(h, _mm512_set1_epi16(1));
}

/* 4 bits: a 64-byte load holds 128 levels, the even elements in the low
 * nibbles and the odd ones in the high. x8 keeps per chunk of 64 its evens,
 * then its odds (32 bytes each); two chunks are regrouped once per load of
 * x, for all the weight rows, into the 64 evens and the 64 odds of the 128, so
 * the levels need no shuffle and one dot vector covers the 128: lane i is
 * block i / 4, whose x scales sx8 holds four times in that order, and
 * group 8i / gs, whose scale a permute of the row's scales spreads. One
 * conversion, multiply and FMA per 128 levels, not per 64 (a Zen 5 EPYC
 * ran the earlier per-64 form at ~40 GB/s a core from L2). Masked loads
 * end a row exactly; the x8 row is padded to 128 with zeros. nr weight
 * rows (2 or 4 when M = 1: qmv4_rows) by mc rows of x. */
static inline __attribute__((always_inline)) void qmv4_block(int vnni, int nr, int mc, const afo_qmv_args *a, int m0,
                                                              int64_t n0, int64_t n1) {
    const afo_qx *qx = a->qx;
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    const __m512i group_of_lane = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                    a->gs == 32 ? 2 : a->gs == 64 ? 3 : 4); /* 8 lane / gs */
    const __mmask16 groups = a->gs == 32 ? 0xf : a->gs == 64 ? 0x3 : 0x1;
    int64_t nbytes = a->K / 2, ld8 = qx->ldx / 64 * 8, span = AFO_QMV_PIECE * a->gs;
    float sf[NR_MAX][AFO_QMV_PIECE + 4];
    for (int64_t j = 0; j < (n1 - n0) / nr; j++) {
        const uint8_t *row[NR_MAX];
        __m512 acc[NR_MAX][4];
        float bsum[NR_MAX][4] = {{0}};
        rows_begin(a, n0, n1, j, nr, mc, row, acc);
        for (int64_t k0 = 0; k0 < a->K; k0 += span) {
            int64_t p1 = (k0 + span < a->K ? k0 + span : a->K) / 2;
            for (int r = 0; r < nr; r++) row_params(a, pass_row(n0, n1, nr, j, r), k0 / a->gs, sf[r], bsum[r], m0, mc);
            for (int64_t p = k0 / 2; p < p1; p += 64) {
                __mmask64 k = nbytes - p >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (nbytes - p)) - 1;
                __m512i q_even[NR_MAX], q_odd[NR_MAX];
                __m512 sv[NR_MAX];
#pragma GCC unroll 4
                for (int r = 0; r < nr; r++) {
                    _mm_prefetch((const char *)(row[r] + p + a->words * 4), _MM_HINT_T0); /* the stream's next row */
                    __m512i v = _mm512_maskz_loadu_epi8(k, row[r] + p);
                    q_even[r] = _mm512_and_si512(v, lo4);
                    q_odd[r] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
                    sv[r] = _mm512_permutexvar_ps(group_of_lane,
                                                  _mm512_maskz_loadu_ps(groups, sf[r] + (2 * p - k0) / a->gs));
                }
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) {
                    const int8_t *xq = (const int8_t *)qx->xq + (m0 + i) * qx->ldx + 2 * p;
                    __m512i x0 = _mm512_loadu_si512(xq), x1 = _mm512_loadu_si512(xq + 64);
                    __m512i x_even = _mm512_shuffle_i64x2(x0, x1, _MM_SHUFFLE(1, 0, 1, 0));
                    __m512i x_odd = _mm512_shuffle_i64x2(x0, x1, _MM_SHUFFLE(3, 2, 3, 2));
                    __m512 sx = _mm512_loadu_ps(qx->sx8 + (m0 + i) * ld8 + p / 4);
#pragma GCC unroll 4
                    for (int r = 0; r < nr; r++) {
                        __m512 t = _mm512_cvtepi32_ps(dot128_u8s8(vnni, q_even[r], x_even, q_odd[r], x_odd));
                        acc[r][i] = _mm512_fmadd_ps(_mm512_mul_ps(t, sx), sv[r], acc[r][i]);
                    }
                }
            }
        }
        rows_end(a, n0, n1, j, nr, mc, m0, acc, bsum);
    }
}

/* 8 bits, int16 activations: a block of 32 levels widened to 16 bits meets
 * its 32 xq in one vpmaddwd (products below 2^23); sx per block, the
 * group's scale per group. */
static inline __attribute__((always_inline)) void qmv8_block(int nr, int mc, const afo_qmv_args *a, int m0, int64_t n0,
                                                              int64_t n1) {
    const afo_qx *qx = a->qx;
    int64_t nb = qx->ldx / 32;
    float sf[NR_MAX][AFO_QMV_PIECE + 4];
    for (int64_t j = 0; j < (n1 - n0) / nr; j++) {
        const uint8_t *row[NR_MAX];
        __m512 acc[NR_MAX][4];
        float bsum[NR_MAX][4] = {{0}};
        rows_begin(a, n0, n1, j, nr, mc, row, acc);
        for (int64_t g = 0; g < a->G; g++) {
            int64_t lg = g % AFO_QMV_PIECE;
            if (lg == 0)
                for (int r = 0; r < nr; r++) row_params(a, pass_row(n0, n1, nr, j, r), g, sf[r], bsum[r], m0, mc);
            __m512 d[NR_MAX][4];
#pragma GCC unroll 2
            for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) d[r][i] = _mm512_setzero_ps();
            for (int64_t c = g * a->gs; c < (g + 1) * a->gs; c += 32) {
                __m512i q[NR_MAX];
#pragma GCC unroll 4
                for (int r = 0; r < nr; r++) {
                    _mm_prefetch((const char *)(row[r] + c + a->words * 4), _MM_HINT_T0);
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
        rows_end(a, n0, n1, j, nr, mc, m0, acc, bsum);
    }
}

/* M = 1 (decode) reads afo_cpu_qmv_streams() streams of weight rows
 * (quant_x86.h); on a Zen 4, before streams, four adjacent rows a pass had
 * beaten two (0.86-0.97). */
static inline __attribute__((always_inline)) void qmv4_rows(int vnni, const afo_qmv_args *a, int64_t n0, int64_t n1) {
#define CALL(mc) qmv4_block(vnni, 1, mc, a, m0, n0, n1)
    AFO_QMV_DISPATCH(qmv4_block, afo_cpu_qmv_streams(), vnni, );
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
