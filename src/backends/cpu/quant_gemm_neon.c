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
    const afo_qmv_args *a = p->a;
    const afo_qx *qx = a->qx;
    const int steps = afo_qmm_steps(bits), per = a->gs / 32;
    int64_t ng = p->nblk / per, g0 = p->blk0 / per, nbx = qx->ldx / 32;
    const uint8_t *w = p->lv + (size_t)t * (size_t)p->nblk * (size_t)steps * 64;
    const float *ps = p->s + t * ng * 16, *pb = p->b + t * ng * 16;
    const uint8_t *xr[MR];
    const float *sxr[MR], *xsr[MR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        xr[i] = (const uint8_t *)qx->xq + (size_t)(m + i) * (size_t)qx->ldx * (bits == 4 ? 1 : 2);
        sxr[i] = qx->sx + (m + i) * nbx;
        xsr[i] = qx->xsum + (m + i) * a->G;
    }
    float32x4_t c[MR][NV];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[i][v] = vdupq_n_f32(0.0f);
    for (int64_t g = 0; g < ng; g++) {
        float32x4_t s[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            s[v] = vld1q_f32(ps + 16 * g + 4 * v);
            float32x4_t b = vld1q_f32(pb + 16 * g + 4 * v);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) c[i][v] = vfmaq_n_f32(c[i][v], b, xsr[i][g0 + g]);
        }
        for (int64_t blk = p->blk0 + g * per; blk < p->blk0 + (g + 1) * per; blk++) {
            int32x4_t acc[MR][NV];
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i][v] = vdupq_n_s32(0);
            for (int j = 0; j < steps; j++, w += 64) {
                uint8x16_t wv[NV];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) wv[v] = vld1q_u8(w + 16 * v);
                size_t o = afo_qmm_x_offset(bits, blk, j);
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++) {
                    int32_t x4;
                    memcpy(&x4, xr[i] + o, sizeof x4);
                    int32x4_t x = vdupq_n_s32(x4);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[i][v] = step(bits, acc[i][v], wv[v], x);
                }
            }
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                float sx = sxr[i][blk];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    c[i][v] = vfmaq_f32(c[i][v], vcvtq_f32_s32(acc[i][v]), vmulq_n_f32(s[v], sx));
            }
        }
    }
    int64_t n = p->n0 + 16 * t, cols = p->ncols - 16 * t < 16 ? p->ncols - 16 * t : 16;
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        float r[16];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) vst1q_f32(r + 4 * v, c[i][v]);
        afo_qmm_store(a->y + (m + i) * a->ldy + n, r, cols, p->accumulate);
    }
}

static inline __attribute__((always_inline)) void panel(int bits, const afo_qmm_panel *p) {
    for (int m = p->m0; m < p->m1; m += MR)
        for (int t = 0; t < p->ntiles; t++) {
            switch (p->m1 - m) {
            case 1: tile(bits, 1, p, m, t); break;
            case 2: tile(bits, 2, p, m, t); break;
            case 3: tile(bits, 3, p, m, t); break;
            default: tile(bits, MR, p, m, t); break;
            }
        }
}

void afo_quant_qmm_neon(const afo_qmm_panel *p) {
    if (p->a->bits == 4) panel(4, p);
    else panel(8, p);
}
