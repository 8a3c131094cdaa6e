/* NEON panel kernel of the integer prefill GEMM (quant_gemm.h): tiles of 4
 * rows of x by 16 columns, 4 columns per vector. */
#include <arm_neon.h>

#include "backends/cpu/quant_gemm.h"

enum { MR = 4, NV = AFO_QMM_NR / 4 };

/* One step of 4 columns: w holds each column's 4 levels as bytes (4 bits)
 * or 2 as int16 (8 bits), x the same elements of x in every 32-bit lane.
 * Without sdot, products of levels < 16 and |x| <= 127 summed in pairs
 * stay below 2^15. */
static inline __attribute__((always_inline)) int32x4_t step(int bits, int32x4_t acc, uint8x16_t w, int32x4_t x) {
    if (bits == 4) {
        int8x16_t q = vreinterpretq_s8_u8(w), xb = vreinterpretq_s8_s32(x);
#if defined(__ARM_FEATURE_DOTPROD)
        return vdotq_s32(acc, q, xb);
#else
        int16x8_t p = vpaddq_s16(vmull_s8(vget_low_s8(q), vget_low_s8(xb)), vmull_high_s8(q, xb));
        return vpadalq_s16(acc, p);
#endif
    }
    int16x8_t q = vreinterpretq_s16_u8(w), xh = vreinterpretq_s16_s32(x);
    return vaddq_s32(acc, vpaddq_s32(vmull_s16(vget_low_s16(q), vget_low_s16(xh)), vmull_high_s16(q, xh)));
}

/* Rows m .. m + mr of x against tile t of the panel. */
static inline __attribute__((always_inline)) void tile(int bits, int mr, const afo_qmm_panel *p, int m, int t) {
    const afo_qmm_tile u = afo_qmm_tile_of(p, bits, t);
    const uint8_t *w = u.w;
    const afo_qmm_x_rows rows = afo_qmm_x_rows_of(p, bits, m, mr);
    float32x4_t c[MR][NV];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[i][v] = vdupq_n_f32(0.0f);
    for (int64_t g = 0; g < u.ng; g++) {
        float32x4_t s[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            s[v] = vld1q_f32(u.s + 16 * g + 4 * v);
            float32x4_t b = vld1q_f32(u.b + 16 * g + 4 * v);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) c[i][v] = vfmaq_n_f32(c[i][v], b, rows.xsum[i][u.g0 + g]);
        }
        for (int64_t blk = p->blk0 + g * u.per; blk < p->blk0 + (g + 1) * u.per; blk++) {
            int32x4_t acc[MR][NV];
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i][v] = vdupq_n_s32(0);
            for (int j = 0; j < u.steps; j++, w += 64) {
                uint8x16_t wv[NV];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) wv[v] = vld1q_u8(w + 16 * v);
                size_t o = afo_qmm_x_offset(bits, blk, j);
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++) {
                    int32x4_t x = vdupq_n_s32(afo_qmm_x4(rows.xq[i] + o));
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[i][v] = step(bits, acc[i][v], wv[v], x);
                }
            }
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                float sx = rows.sx[i][blk];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    c[i][v] = vfmaq_f32(c[i][v], vcvtq_f32_s32(acc[i][v]), vmulq_n_f32(s[v], sx));
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        float r[16];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) vst1q_f32(r + 4 * v, c[i][v]);
        afo_qmm_store(p, t, m + i, r);
    }
}

void afo_quant_qmm_neon(const afo_qmm_panel *p) {
    if (p->a->bits == 4) AFO_QMM_PANEL(tile, MR, 4, p)
    else AFO_QMM_PANEL(tile, MR, 8, p)
}
