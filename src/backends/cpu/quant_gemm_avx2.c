/* AVX2 panel kernel of the integer prefill GEMM (quant_gemm.h): tiles of 4
 * rows of x by 16 columns, n along the lanes of two vectors. */
#include <immintrin.h>

#include "backends/cpu/quant_gemm.h"

enum { MR = 4 };

/* 8x8 transpose of 32-bit elements: row i of r becomes column i. */
static inline __attribute__((always_inline)) void transpose8(__m256i r[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

/* Per block, each group of 8 columns' levels as 8 vectors of their steps
 * (a column's 4-bit block unpacks to its 8 steps in order: low nibbles,
 * then high ones; an 8-bit block widens to 16 steps of int16 pairs), then
 * transposed into 8 vectors of one step for the 8 columns. */
void afo_qmm_pack_avx2(int bits, const uint8_t *const col[AFO_QMM_NR], int64_t nblk, uint8_t *dst) {
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    const int steps = afo_qmm_steps(bits);
    for (int64_t i = 0; i < nblk; i++, dst += (size_t)steps * 64)
        for (int cg = 0; cg < 2; cg++) {
            __m256i r[2][8];
            for (int c = 0; c < 8; c++) {
                const uint8_t *p = col[8 * cg + c] + (size_t)i * (size_t)(4 * bits);
                if (bits == 4) {
                    __m128i v = _mm_loadu_si128((const __m128i *)p);
                    r[0][c] = _mm256_setr_m128i(_mm_and_si128(v, lo4), _mm_and_si128(_mm_srli_epi16(v, 4), lo4));
                } else {
                    __m256i v = _mm256_loadu_si256((const __m256i *)p);
                    r[0][c] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v));
                    r[1][c] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1));
                }
            }
            for (int h = 0; h < steps / 8; h++) {
                transpose8(r[h]);
                for (int j = 0; j < 8; j++) _mm256_storeu_si256((__m256i *)(dst + (8 * h + j) * 64 + 32 * cg), r[h][j]);
            }
        }
}

/* One step into a column vector's accumulator. 4 bits: vpmaddubsw of
 * levels (< 16) and int8 x sums pairs below 2 * 15 * 127, and the 8 steps
 * of a block add 16 products per int16 lane, below 2^15, so the block
 * stays in int16; 8 bits: vpmaddwd of int16 levels and x into int32. */
static inline __attribute__((always_inline)) __m256i step(int bits, __m256i acc, __m256i w, __m256i x) {
    acc = bits == 4 ? _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, x)) : _mm256_add_epi32(acc, _mm256_madd_epi16(w, x));
    /* integer adds associate, and GCC turns the unrolled chain of a block
     * into a tree whose products stay live at once, spilling; the empty asm
     * keeps one running sum per register */
    __asm__("" : "+x"(acc));
    return acc;
}

/* Rows m .. m + mr of x against tile t of the panel. */
static inline __attribute__((always_inline)) void tile(int bits, int mr, const afo_qmm_panel *p, int m, int t) {
    const afo_qmm_tile u = afo_qmm_tile_of(p, bits, t);
    const __m256i ones = _mm256_set1_epi16(1);
    const uint8_t *w = u.w;
    const afo_qmm_x_rows rows = afo_qmm_x_rows_of(p, bits, m, mr);
    __m256 c[MR][2];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (int64_t g = 0; g < u.ng; g++) {
        __m256 s[2], b[2];
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) {
            s[v] = _mm256_loadu_ps(u.s + 16 * g + 8 * v);
            b[v] = _mm256_loadu_ps(u.b + 16 * g + 8 * v);
        }
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            __m256 xs = _mm256_broadcast_ss(rows.xsum[i] + u.g0 + g);
            c[i][0] = _mm256_fmadd_ps(xs, b[0], c[i][0]);
            c[i][1] = _mm256_fmadd_ps(xs, b[1], c[i][1]);
        }
        for (int64_t blk = p->blk0 + g * u.per; blk < p->blk0 + (g + 1) * u.per; blk++) {
            __m256i acc[MR][2];
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
#pragma GCC unroll 16
            for (int j = 0; j < u.steps; j++, w += 64) {
                __m256i w0 = _mm256_loadu_si256((const __m256i *)w), w1 = _mm256_loadu_si256((const __m256i *)(w + 32));
                size_t o = afo_qmm_x_offset(bits, blk, j);
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++) {
                    __m256i x = _mm256_set1_epi32(afo_qmm_x4(rows.xq[i] + o));
                    acc[i][0] = step(bits, acc[i][0], w0, x);
                    acc[i][1] = step(bits, acc[i][1], w1, x);
                }
            }
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                __m256 sx = _mm256_broadcast_ss(rows.sx[i] + blk);
#pragma GCC unroll 2
                for (int v = 0; v < 2; v++) {
                    __m256i d = bits == 4 ? _mm256_madd_epi16(acc[i][v], ones) : acc[i][v];
                    c[i][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(s[v], sx), c[i][v]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        float r[16];
        _mm256_storeu_ps(r, c[i][0]);
        _mm256_storeu_ps(r + 8, c[i][1]);
        afo_qmm_store(p, t, m + i, r);
    }
}

void afo_quant_qmm_avx2(const afo_qmm_panel *p) {
    if (p->a->bits == 4) AFO_QMM_PANEL(tile, MR, 4, p)
    else AFO_QMM_PANEL(tile, MR, 8, p)
}
