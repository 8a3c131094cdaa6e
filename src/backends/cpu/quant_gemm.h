/* Integer GEMM of quantized prefill (M > AFO_MATVEC_MAX_M rows of x, 4- and
 * 8-bit weights): the float path dequantizes weight panels and runs the f32
 * GEMM, which caps prefill at the float FMA rate; here x is quantized once
 * (afo_qx: int8 per block of 32 against 4-bit levels, int16 against 8-bit
 * ones, as in the matvec) and the weights are unpacked once per panel into
 * integer levels laid out for outer-product micro-kernels: one 32-bit
 * broadcast of x meets AFO_QMM_NR columns in one multiply-add.
 *
 * Panel layout, per tile of AFO_QMM_NR columns (weight rows), per block of
 * 32 along K, per step: AFO_QMM_NR columns of 4 bytes. A step of 4-bit
 * weights holds 4 levels as bytes, the elements that 4 consecutive bytes of
 * the x8 layout hold (steps 0-3 the block's even elements, 4-7 its odd
 * ones); a step of 8-bit weights holds 2 consecutive levels as int16. The
 * scales and biases of the tile's columns are floats per group:
 * [tile][group][AFO_QMM_NR]. Columns past N have zero levels and
 * parameters. */
#ifndef AFO_QUANT_GEMM_H
#define AFO_QUANT_GEMM_H

#include <string.h>

#include "backends/cpu/quant_kernels.h"

#define AFO_QMM_NR 16

/* Steps per block of 32 elements. */
static inline int afo_qmm_steps(int bits) { return bits == 4 ? 8 : 16; }

/* Byte offset in a row of qx->xq of the elements step j of block blk
 * takes: 4 bits, the x8 layout's (steps 0-3 the block's even elements,
 * 4-7 its odd ones, 32 bytes on); 8 bits, int16 in element order. */
static inline size_t afo_qmm_x_offset(int bits, int64_t blk, int j) {
    return bits == 4 ? (size_t)(64 * (blk >> 1) + 16 * (blk & 1) + 4 * (j & 3) + 32 * (j >> 2)) : (size_t)(64 * blk + 4 * j);
}

/* x rows m0 <= m < m1 against the columns n0 .. n0 + ncols of one panel
 * (ntiles tiles) over the blocks blk0 .. blk0 + nblk (whole groups):
 * y[m * ldy + n] = sum over the panel's groups g of b[n, g] * xsum[m, g]
 * + sum over its blocks of s[n, g] * sx[m, blk] * (levels . xq), stored,
 * or added to y when `accumulate` (a later panel of K). */
typedef struct afo_qmm_panel {
    const afo_qmv_args *a;
    int m0, m1;
    int64_t n0, ncols;
    int ntiles;
    int64_t blk0, nblk;
    const uint8_t *lv;
    const float *s, *b;
    bool accumulate;
} afo_qmm_panel;

typedef void (*afo_qmm_fn)(const afo_qmm_panel *p);

/* Row m of x's AFO_QMM_NR results r against tile t into y: stored, or
 * added (a later panel of K); the tile's columns past the panel's are not
 * there. */
static inline void afo_qmm_store(const afo_qmm_panel *p, int t, int64_t m, const float *r) {
    int64_t n = p->n0 + AFO_QMM_NR * t, cols = p->ncols - AFO_QMM_NR * t < AFO_QMM_NR ? p->ncols - AFO_QMM_NR * t : AFO_QMM_NR;
    float *y = p->a->y + m * p->a->ldy + n;
    if (cols == AFO_QMM_NR && p->accumulate)
        for (int k = 0; k < AFO_QMM_NR; k++) y[k] += r[k]; /* a fixed count the compiler vectorizes */
    else
        for (int64_t k = 0; k < cols; k++) y[k] = p->accumulate ? y[k] + r[k] : r[k];
}

/* One tile's levels over nblk blocks into dst, in the panel layout: col[r]
 * points at column r's packed bytes of the first block (4 * bits bytes a
 * block). Columns past N repeat the last one: their results are not
 * stored, and their parameters are zero. */
typedef void (*afo_qmm_pack_fn)(int bits, const uint8_t *const col[AFO_QMM_NR], int64_t nblk, uint8_t *dst);
void afo_qmm_pack_scalar(int bits, const uint8_t *const col[AFO_QMM_NR], int64_t nblk, uint8_t *dst);

typedef struct afo_qmm_level {
    afo_qmm_pack_fn pack;
    afo_qmm_fn kernel;
} afo_qmm_level;
#if defined(__x86_64__)
void afo_qmm_pack_avx2(int bits, const uint8_t *const col[AFO_QMM_NR], int64_t nblk, uint8_t *dst);
void afo_quant_qmm_avx2(const afo_qmm_panel *p);
void afo_quant_qmm_avx512(const afo_qmm_panel *p); /* needs AVX512-VNNI */
#elif defined(__aarch64__)
void afo_quant_qmm_neon(const afo_qmm_panel *p);
#endif
/* What a panel kernel's tile t reads: its levels (w), its columns' scales
 * and biases per group (s, b: 16 a group), over ng groups of `per` blocks
 * from group g0 of the row. */
typedef struct afo_qmm_tile {
    const uint8_t *w;
    const float *s, *b;
    int64_t ng, g0;
    int per, steps;
} afo_qmm_tile;

static inline __attribute__((always_inline)) afo_qmm_tile afo_qmm_tile_of(const afo_qmm_panel *p, int bits, int t) {
    afo_qmm_tile u = {.per = p->a->gs / 32, .steps = afo_qmm_steps(bits)};
    u.ng = p->nblk / u.per, u.g0 = p->blk0 / u.per;
    u.w = p->lv + (size_t)t * (size_t)p->nblk * (size_t)u.steps * 64;
    u.s = p->s + t * u.ng * AFO_QMM_NR, u.b = p->b + t * u.ng * AFO_QMM_NR;
    return u;
}

/* The 4 bytes of x a step broadcasts. */
static inline int32_t afo_qmm_x4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Where rows m .. m + mr (mr <= 8) of x are, for a panel kernel's tile:
 * their activations (xq: int8, or int16 at 8 bits), sx per block of 32 and
 * sums per group. */
typedef struct afo_qmm_x_rows {
    const uint8_t *xq[8];
    const float *sx[8], *xsum[8];
} afo_qmm_x_rows;

static inline __attribute__((always_inline)) afo_qmm_x_rows afo_qmm_x_rows_of(const afo_qmm_panel *p, int bits, int m,
                                                                              int mr) {
    const afo_qx *qx = p->a->qx;
    afo_qmm_x_rows r;
    for (int i = 0; i < mr; i++) {
        r.xq[i] = (const uint8_t *)qx->xq + (size_t)(m + i) * (size_t)qx->ldx * (bits == 4 ? 1 : 2);
        r.sx[i] = qx->sx + (m + i) * (qx->ldx / 32);
        r.xsum[i] = qx->xsum + (m + i) * p->a->G;
    }
    return r;
}

/* A panel kernel's loop: MR (at most 8) rows of x at a time, in L1, meet
 * every tile of the panel, in L2, through TILE(bits, mr, p, m, t), whose mr
 * is a constant in each call (the rows past the last whole MR as 1 .. 7;
 * the counts of MR and more are never reached there, and their calls are
 * compiled out). */
#define AFO_QMM_REST(TILE, MR, bits, p, k)                                                                                 else if ((k) < (MR) && left_ == (k)) TILE(bits, (k) % (MR), p, m_, t_);
#define AFO_QMM_PANEL(TILE, MR, bits, p)                                                                                   for (int m_ = (p)->m0; m_ < (p)->m1; m_ += (MR))                                                                           for (int t_ = 0; t_ < (p)->ntiles; t_++) {                                                                                 int left_ = (p)->m1 - m_;                                                                                              if (left_ >= (MR)) TILE(bits, (MR), p, m_, t_);                                                                        AFO_QMM_REST(TILE, MR, bits, p, 1)                                                                                     AFO_QMM_REST(TILE, MR, bits, p, 2)                                                                                     AFO_QMM_REST(TILE, MR, bits, p, 3)                                                                                     AFO_QMM_REST(TILE, MR, bits, p, 4)                                                                                     AFO_QMM_REST(TILE, MR, bits, p, 5)                                                                                     AFO_QMM_REST(TILE, MR, bits, p, 6)                                                                                     AFO_QMM_REST(TILE, MR, bits, p, 7)                                                                                 }

/* The pack and panel kernels of the current level for this width, or NULL
 * (scalar level, other widths): the float path then runs. */
const afo_qmm_level *afo_quant_qmm_best(int bits);

/* y [a->M, N] (ldy a->ldy) = x @ W^T with x given as a->qx, threaded over
 * N (and M where N has too few tiles for the threads), through lv, a panel
 * of about afo_qmm_panel_bytes of levels at a time (tests lower it to
 * cover several panels along K). */
extern int64_t afo_qmm_panel_bytes;
afo_status afo_quant_qmm(const afo_qmv_args *a, int64_t N, const afo_qmm_level *lv);

/* The same arithmetic in plain C, straight from the packed rows and qx
 * (columns n0 <= n < n1), per row of y summed in K order: the reference
 * tests hold the panel kernels to. */
void afo_quant_qmm_ref(const afo_qmv_args *a, int64_t n0, int64_t n1);

#endif
