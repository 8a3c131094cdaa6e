/* AVX-512 VNNI panel kernel of the integer prefill GEMM (quant_gemm.h): a
 * tile's 16 columns are the 16 lanes of one vector, so a step is one load
 * of levels and, per row of x, one broadcast and one vpdpbusd (4-bit: four
 * u8 levels by four s8 x) or vpdpwssd (8-bit: two int16 pairs), summed in
 * int32 as the AVX2 kernel's int16 and vpmaddwd sums are (same integers,
 * same float steps, so the same results). Eight rows of x a pass, twice the
 * AVX2 kernel's four: the levels are loaded once for all of them. The
 * AVX2 kernel on a Zen 4 EPYC (2 threads) left 4-bit prefill at 0.87 of
 * llama.cpp's Q4_0 prefill on the same weights. Built with -mavx512vnni;
 * reached only on CPUs that report it (afo_quant_qmm_best). */
#include <immintrin.h>

#include "backends/cpu/quant_gemm.h"

enum { MR = 8 };

/* Rows m .. m + mr of x against tile t of the panel. */
static inline __attribute__((always_inline)) void tile(int bits, int mr, const afo_qmm_panel *p, int m, int t) {
    const afo_qmm_tile u = afo_qmm_tile_of(p, bits, t);
    const uint8_t *w = u.w;
    const afo_qmm_x_rows rows = afo_qmm_x_rows_of(p, bits, m, mr);
    __m512 c[MR];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) c[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < u.ng; g++) {
        __m512 s = _mm512_loadu_ps(u.s + 16 * g), b = _mm512_loadu_ps(u.b + 16 * g);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) c[i] = _mm512_fmadd_ps(_mm512_set1_ps(rows.xsum[i][u.g0 + g]), b, c[i]);
        for (int64_t blk = p->blk0 + g * u.per; blk < p->blk0 + (g + 1) * u.per; blk++) {
            __m512i acc[MR];
#pragma GCC unroll 8
            for (int i = 0; i < mr; i++) acc[i] = _mm512_setzero_si512();
#pragma GCC unroll 16
            for (int j = 0; j < u.steps; j++, w += 64) {
                __m512i lv = _mm512_loadu_si512(w);
                size_t o = afo_qmm_x_offset(bits, blk, j);
#pragma GCC unroll 8
                for (int i = 0; i < mr; i++) {
                    __m512i x = _mm512_set1_epi32(afo_qmm_x4(rows.xq[i] + o));
                    acc[i] = bits == 4 ? _mm512_dpbusd_epi32(acc[i], lv, x) : _mm512_dpwssd_epi32(acc[i], lv, x);
                }
            }
#pragma GCC unroll 8
            for (int i = 0; i < mr; i++)
                c[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i]), _mm512_mul_ps(s, _mm512_set1_ps(rows.sx[i][blk])), c[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        float r[16];
        _mm512_storeu_ps(r, c[i]);
        afo_qmm_store(p, t, m + i, r);
    }
}

void afo_quant_qmm_avx512(const afo_qmm_panel *p) {
    if (p->a->bits == 4) AFO_QMM_PANEL(tile, MR, 4, p)
    else AFO_QMM_PANEL(tile, MR, 8, p)
}
