/* AVX2 unpackers of packed quantized rows: 4 and 8 bits (the common model
 * formats) in registers; other widths go through the scalar reference. */
#include <immintrin.h>

#include "backends/cpu/quant_kernels.h"
#include "backends/cpu/quant_x86.h"

/* 16 bytes hold 32 nibbles, element 2j in the low half of byte j. */
static void unpack4(const uint32_t *row, int64_t c0, int64_t n, float *q) {
    const uint8_t *p = (const uint8_t *)row + c0 / 2;
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n; i += 32, p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i lo = _mm_and_si128(v, lo4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
        __m128i a = _mm_unpacklo_epi8(lo, hi), b = _mm_unpackhi_epi8(lo, hi);
        _mm256_storeu_ps(q + i, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(a)));
        _mm256_storeu_ps(q + i + 8, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(a, 8))));
        _mm256_storeu_ps(q + i + 16, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)));
        _mm256_storeu_ps(q + i + 24, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8))));
    }
}

static void unpack8(const uint32_t *row, int64_t c0, int64_t n, float *q) {
    const uint8_t *p = (const uint8_t *)row + c0;
    for (int64_t i = 0; i < n; i += 8)
        _mm256_storeu_ps(q + i, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + i)))));
}

void afo_quant_unpack_avx2(int bits, const uint32_t *row, int64_t c0, int64_t n, float *q) {
    if (bits == 4) unpack4(row, c0, n, q);
    else if (bits == 8) unpack8(row, c0, n, q);
    else afo_quant_unpack_scalar(bits, row, c0, n, q);
}

/* ------------------------------------------------------------ activations */

static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

/* The same arithmetic as afo_qx_prep_scalar (max, lim / max, rint by the
 * default rounding mode), so xq and sx match it bit for bit. */
void afo_qx_prep_avx2(afo_qx *qx, const float *x) {
    int64_t nb = qx->ldx / 32, K = qx->K;
    float lim = qx->x8 ? 127.0f : 32767.0f;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    /* within each lane: the 8 even bytes, then the 8 odd ones */
    const __m256i evod = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                          0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for (int m = 0; m < qx->M; m++) {
        const float *xr = x + m * K;
        float *xsum = qx->xsum + m * qx->G, *sx = qx->sx + m * nb;
        for (int64_t g = 0; g < qx->G; g++) xsum[g] = 0.0f;
        for (int64_t blk = 0; blk < nb; blk++) {
            __m256 v[4], amax = _mm256_setzero_ps(), sum = _mm256_setzero_ps();
            for (int j = 0; j < 4; j++) {
                v[j] = blk * 32 < K ? _mm256_loadu_ps(xr + blk * 32 + 8 * j) : _mm256_setzero_ps();
                amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[j]));
                sum = _mm256_add_ps(sum, v[j]);
            }
            float mx = hmax(amax), inv = mx > 0.0f ? lim / mx : 0.0f;
            if (blk * 32 < K) xsum[blk * 32 / qx->gs] += hsum(sum);
            sx[blk] = mx / lim;
            __m256 vi = _mm256_set1_ps(inv);
            __m256i q[4];
            for (int j = 0; j < 4; j++) q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], vi));
            /* packs work per 128-bit lane; the permutes put elements back in order */
            __m256i w0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xd8);
            __m256i w1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xd8);
            if (!qx->x8) {
                int16_t *d = (int16_t *)qx->xq + m * qx->ldx + blk * 32;
                _mm256_storeu_si256((__m256i *)d, w0);
                _mm256_storeu_si256((__m256i *)(d + 16), w1);
                continue;
            }
            __m256i b = _mm256_permute4x64_epi64(_mm256_packs_epi16(w0, w1), 0xd8);
            b = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(b, evod), 0xd8); /* 16 even, then 16 odd */
            int8_t *d = (int8_t *)qx->xq + m * qx->ldx + blk / 2 * 64 + blk % 2 * 16;
            _mm_storeu_si128((__m128i *)d, _mm256_castsi256_si128(b));
            _mm_storeu_si128((__m128i *)(d + 32), _mm256_extracti128_si256(b, 1));
            _mm_storeu_ps(qx->sx8 + m * nb * 4 + blk / 2 * 8 + blk % 2 * 4, _mm_set1_ps(mx / lim));
        }
    }
}

/* ------------------------------------------------------------ matvec */

/* Pass j's rows (quant_x86.h), and their accumulators zeroed. */
static inline __attribute__((always_inline)) void rows_begin(const afo_qmv_args *a, int64_t n0, int64_t n1, int64_t j,
                                                              int nr, int mc, const uint8_t **row,
                                                              __m256 acc[NR_MAX][4]) {
    pass_rows(a, n0, n1, j, nr, row);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) acc[r][i] = _mm256_setzero_ps();
}

static inline __attribute__((always_inline)) void rows_end(const afo_qmv_args *a, int64_t n0, int64_t n1, int64_t j,
                                                            int nr, int mc, int m0, __m256 acc[NR_MAX][4],
                                                            float bsum[NR_MAX][4]) {
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) a->y[(m0 + i) * a->ldy + pass_row(n0, n1, nr, j, r)] = hsum(acc[r][i]) + bsum[r][i];
}

/* 4 bits, int8 activations: a 32-byte load holds 64 levels, the low nibbles
 * the even elements of each 32-block (one per 128-bit lane), the high ones
 * the odd elements, which is the x8 layout; vpmaddubsw pairs stay below
 * 2 * 15 * 127 and their sum below 2^15. Lanes 0-3 of the int32 dot belong
 * to block 0, 4-7 to block 1, hence the sx8 vector. For group size 32 a
 * chunk spans two groups, so its scale vector is split the same way. */
static inline __attribute__((always_inline)) __m256 chunk_scale(int gs, const float *s, int64_t lc) {
    if (gs != 32) return _mm256_broadcast_ss(s + (gs == 64 ? lc : lc / 2));
    return _mm256_setr_m128(_mm_broadcast_ss(s + 2 * lc), _mm_broadcast_ss(s + 2 * lc + 1));
}

/* acc + sv * sx * (levels . xq) for the 64 levels at p (the first 32 when
 * half: the row's last chunk of K % 64 == 32, whose x8 half is zero). */
static inline __attribute__((always_inline)) __m256 qmv4_dot(bool half, const uint8_t *p, __m256i xa, __m256i xb,
                                                            __m256 sx, __m256 sv, __m256 acc) {
    const __m256i lo4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256i v = half ? _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)p)) : _mm256_loadu_si256((const __m256i *)p);
    __m256i lo = _mm256_and_si256(v, lo4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
    __m256i q = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
    return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(q, ones)), sx), sv, acc);
}

/* Chunk c of the nr weight rows against the mc rows of x, in qmv4_block. */
#define QMV4_CHUNK(c, half)                                                                                            \
    _Pragma("GCC unroll 4") for (int i = 0; i < mc; i++) {                                                             \
        __m256i xa = _mm256_loadu_si256((const __m256i *)(xr[i] + 64 * (c)));                                         \
        __m256i xb = _mm256_loadu_si256((const __m256i *)(xr[i] + 64 * (c) + 32));                                    \
        __m256 sx = _mm256_loadu_ps(sxr[i] + 8 * (c));                                                                 \
        _Pragma("GCC unroll 4") for (int r = 0; r < nr; r++) acc[r][i] =                                              \
            qmv4_dot(half, row[r] + 32 * (c), xa, xb, sx, chunk_scale(gs, sf[r], (c) - c0), acc[r][i]);              \
    }

/* Rows n0 .. n1 in passes of nr (see rows_begin) by mc rows of x, group
 * size gs a constant (its scale lookup branch-free); every other chunk
 * starts a 64-byte line. Pointers and accumulators stay in local arrays of
 * this function, the chunk a local macro: passed to helpers, GCC kept them
 * in memory and reloaded them per chunk. */
static inline __attribute__((always_inline)) void qmv4_block(int gs, int nr, int mc, const afo_qmv_args *a, int m0,
                                                              int64_t n0, int64_t n1) {
    const afo_qx *qx = a->qx;
    int64_t span = (int64_t)AFO_QMV_PIECE * gs, rowb = a->words * 4;
    const int8_t *xr[4];
    const float *sxr[4];
#pragma GCC unroll 4
    for (int i = 0; i < mc; i++) {
        xr[i] = (const int8_t *)qx->xq + (m0 + i) * qx->ldx;
        sxr[i] = qx->sx8 + (m0 + i) * (qx->ldx / 64 * 8);
    }
    float sf[NR_MAX][AFO_QMV_PIECE + 4];
    for (int64_t j = 0; j < (n1 - n0) / nr; j++) {
        const uint8_t *row[NR_MAX];
        __m256 acc[NR_MAX][4];
        float bsum[NR_MAX][4] = {{0}};
        rows_begin(a, n0, n1, j, nr, mc, row, acc);
        for (int64_t k0 = 0; k0 < a->K; k0 += span) {
            int64_t c0 = k0 / 64, c1 = (k0 + span) / 64 < a->K / 64 ? (k0 + span) / 64 : a->K / 64; /* full chunks */
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) row_params(a, pass_row(n0, n1, nr, j, r), k0 / gs, sf[r], bsum[r], m0, mc);
            for (int64_t c = c0; c < c1; c++) {
                if (c % 2 == 0)
#pragma GCC unroll 4
                    for (int r = 0; r < nr; r++) _mm_prefetch((const char *)(row[r] + 32 * c + rowb), _MM_HINT_T0);
                QMV4_CHUNK(c, false)
            }
            if (k0 + span >= a->K && a->K % 64) {
                QMV4_CHUNK(a->K / 64, true)
            }
        }
        rows_end(a, n0, n1, j, nr, mc, m0, acc, bsum);
    }
}
#undef QMV4_CHUNK

/* Shuffle and multiplier that put element j of 8 consecutive `bits`-wide
 * levels (bits 2, 3, 5, 6) in 16-bit lane j, its top bit at bit 15: the
 * lane takes the two bytes the element starts in, and the multiply shifts
 * it left by a per-lane amount (AVX2 has no per-lane 16-bit shift). */
typedef struct lv16 {
    __m256i shuf, mul;
    int bits;
} lv16;

static lv16 lv16_make(int bits) {
    int8_t sh[32];
    int16_t mu[16];
    for (int j = 0; j < 16; j++) {
        int bit = (j % 8) * bits;
        sh[2 * j] = (int8_t)(bit / 8);
        sh[2 * j + 1] = (int8_t)(bit / 8 + 1);
        mu[j] = (int16_t)(1 << (16 - bit % 8 - bits));
    }
    return (lv16){_mm256_loadu_si256((const __m256i *)sh), _mm256_loadu_si256((const __m256i *)mu), bits};
}

/* The 16 levels at element c (a multiple of 16) as int16. Each lane loads 16
 * bytes from the byte of its first element; near the row's end (nbytes)
 * they come from a copy, so no load passes the matrix. */
static inline __attribute__((always_inline)) __m256i levels16(const lv16 *lv, int bits, const uint8_t *row,
                                                               int64_t c, int64_t nbytes) {
    if (bits == 8) return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(row + c)));
    int64_t off = c * bits / 8;
    __m256i v;
    if (off + bits + 16 <= nbytes) {
        v = _mm256_loadu2_m128i((const __m128i *)(row + off + bits), (const __m128i *)(row + off));
    } else {
        uint8_t tmp[32] = {0};
        memcpy(tmp, row + off, (size_t)(2 * bits));
        v = _mm256_loadu2_m128i((const __m128i *)(tmp + bits), (const __m128i *)tmp);
    }
    v = _mm256_mullo_epi16(_mm256_shuffle_epi8(v, lv->shuf), lv->mul);
    return _mm256_srl_epi16(v, _mm_cvtsi32_si128(16 - bits));
}

/* Other widths, int16 activations: per block of 32, two vpmaddwd of levels
 * and xq (each product below 2^23), the block's sx applied in float, and
 * the group's scale once per group. */
static inline __attribute__((always_inline)) void qmv16_block(int bits, int nr, int mc, const afo_qmv_args *a, int m0,
                                                               int64_t n0, int64_t n1) {
    const afo_qx *qx = a->qx;
    bits = bits ? bits : a->bits; /* 0: the instance for every width that straddles bytes */
    lv16 lv = lv16_make(bits == 8 ? 2 : bits);
    int64_t nbytes = a->words * 4, nb = qx->ldx / 32;
    float sf[NR_MAX][AFO_QMV_PIECE + 4];
    for (int64_t j = 0; j < (n1 - n0) / nr; j++) {
        const uint8_t *row[NR_MAX];
        __m256 acc[NR_MAX][4];
        float bsum[NR_MAX][4] = {{0}};
        rows_begin(a, n0, n1, j, nr, mc, row, acc);
        for (int64_t g = 0; g < a->G; g++) {
            int64_t lg = g % AFO_QMV_PIECE;
            if (lg == 0)
                for (int r = 0; r < nr; r++) row_params(a, pass_row(n0, n1, nr, j, r), g, sf[r], bsum[r], m0, mc);
            __m256 d[NR_MAX][4];
#pragma GCC unroll 2
            for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) d[r][i] = _mm256_setzero_ps();
            for (int64_t c = g * a->gs; c < (g + 1) * a->gs; c += 32) {
                __m256i q0[NR_MAX], q1[NR_MAX];
#pragma GCC unroll 2
                for (int r = 0; r < nr; r++) {
                    _mm_prefetch((const char *)(row[r] + c * bits / 8 + nbytes), _MM_HINT_T0);
                    q0[r] = levels16(&lv, bits, row[r], c, nbytes);
                    q1[r] = levels16(&lv, bits, row[r], c + 16, nbytes);
                }
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) {
                    const int16_t *xq = (const int16_t *)qx->xq + (m0 + i) * qx->ldx + c;
                    __m256i xa = _mm256_loadu_si256((const __m256i *)xq), xb = _mm256_loadu_si256((const __m256i *)(xq + 16));
                    __m256 sx = _mm256_broadcast_ss(qx->sx + (m0 + i) * nb + c / 32);
#pragma GCC unroll 2
                    for (int r = 0; r < nr; r++) {
                        __m256i p = _mm256_add_epi32(_mm256_madd_epi16(q0[r], xa), _mm256_madd_epi16(q1[r], xb));
                        d[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sx, d[r][i]);
                    }
                }
            }
#pragma GCC unroll 2
            for (int r = 0; r < nr; r++) {
                __m256 sv = _mm256_broadcast_ss(sf[r] + lg);
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) acc[r][i] = _mm256_fmadd_ps(d[r][i], sv, acc[r][i]);
            }
        }
        rows_end(a, n0, n1, j, nr, mc, m0, acc, bsum);
    }
}

static inline __attribute__((always_inline)) void qmv4_gs(int gs, const afo_qmv_args *a, int64_t n0, int64_t n1) {
#define CALL(mc) qmv4_block(gs, 1, mc, a, m0, n0, n1)
    AFO_QMV_DISPATCH(qmv4_block, 2, gs, );
#undef CALL
}

static void qmv4(const afo_qmv_args *a, int64_t n0, int64_t n1) {
    switch (a->gs) {
    case 32: qmv4_gs(32, a, n0, n1); break;
    case 64: qmv4_gs(64, a, n0, n1); break;
    default: qmv4_gs(128, a, n0, n1); break;
    }
}

static inline __attribute__((always_inline)) void qmv16(int bits, const afo_qmv_args *a, int64_t n0, int64_t n1) {
#define CALL(mc) qmv16_block(bits, 1, mc, a, m0, n0, n1)
    AFO_QMV_DISPATCH(qmv16_block, 2, bits, );
#undef CALL
}

void afo_quant_qmv_avx2(const afo_qmv_args *a, int64_t n0, int64_t n1) {
    switch (a->bits) {
    case 4: qmv4(a, n0, n1); break;
    case 8: qmv16(8, a, n0, n1); break;
    default: qmv16(0, a, n0, n1); break;
    }
}
