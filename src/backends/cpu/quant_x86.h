/* Pieces the x86 quantized matvecs (AVX2, AVX-512) share; included only by
 * files built with AVX2 and F16C. */
#ifndef AFO_QUANT_X86_H
#define AFO_QUANT_X86_H

#include <immintrin.h>

#include "backends/cpu/quant_kernels.h"

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* The kernels prefetch each weight row at the same offset in the row they
 * take next (AVX-512: the rows nr further on, next in memory; AVX2: the
 * next row of each stream, quant_kernels_avx2.c): with a few slow streams
 * per thread and 4 KiB pages, which hardware prefetchers do not cross, a
 * one-thread 4-bit matvec read DRAM at about a third of the streaming rate
 * without it; with it, between a third and two thirds over runs on the
 * shared 2-core machine. */

/* Groups whose parameters a matvec converts to float at a time. */
#define AFO_QMV_PIECE 128

/* Elements i0.. i0+n of a scale or bias array of dtype dt into f, inline:
 * a tall matrix (an lm_head of 32000 rows) calls this twice per row, and
 * the dispatched converter's call cost showed in 8-bit decode. */
static inline void to_f32(afo_dtype dt, const void *p, int64_t i0, int64_t n, float *f) {
    const uint16_t *h = (const uint16_t *)p + i0;
    int64_t i = 0;
    if (dt == AFO_FLOAT32) {
        memcpy(f, (const float *)p + i0, (size_t)n * sizeof(float));
        return;
    }
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(h + i));
        __m256 r = dt == AFO_BFLOAT16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16))
                                      : _mm256_cvtph_ps(v);
        _mm256_storeu_ps(f + i, r);
    }
    for (; i < n; i++) {
        uint32_t u = (uint32_t)h[i] << 16;
        if (dt == AFO_FLOAT16) f[i] = _cvtsh_ss(h[i]);
        else memcpy(f + i, &u, sizeof u);
    }
}

/* Row n's scales of groups g0.. (up to AFO_QMV_PIECE, then zeros for the
 * groups past the row that a last chunk's lanes meet) into s in float, and the biases' share
 * sum_g b[n, g] * xsum[m, g] over those groups added to bsum[i] for x rows
 * m0 + i, i < mc. */
static inline void row_params(const afo_qmv_args *a, int64_t n, int64_t g0, float *s, float *bsum, int m0, int mc) {
    int64_t ng = a->G - g0 < AFO_QMV_PIECE ? a->G - g0 : AFO_QMV_PIECE;
    float b[AFO_QMV_PIECE];
    to_f32(a->sdt, a->s, n * a->G + g0, ng, s);
    to_f32(a->sdt, a->b, n * a->G + g0, ng, b);
    for (int j = 0; j < 4; j++) s[ng + j] = 0.0f;
    for (int i = 0; i < mc; i++) {
        const float *xs = a->qx->xsum + (m0 + i) * a->G + g0;
        __m256 t = _mm256_setzero_ps();
        int64_t g = 0;
        for (; g + 8 <= ng; g += 8) t = _mm256_fmadd_ps(_mm256_loadu_ps(b + g), _mm256_loadu_ps(xs + g), t);
        float r = hsum(t);
        for (; g < ng; g++) r += b[g] * xs[g];
        bsum[i] += r;
    }
}

/* mc (1..4, a constant in each instance of call) rows of x per pass over
 * the weight rows, so a weight chunk is unpacked once for all of them. */
#define AFO_QMV_ROWS(call)                                                                                             \
    for (int m0 = 0; m0 < a->M; m0 += 4) {                                                                             \
        switch (a->M - m0) {                                                                                           \
        case 1: call(1); break;                                                                                        \
        case 2: call(2); break;                                                                                        \
        case 3: call(3); break;                                                                                        \
        default: call(4); break;                                                                                       \
        }                                                                                                              \
    }

/* Calls of block(args..., nr, mc, a, m0, n0, n1): M = 1 takes weight rows
 * in pairs (two accumulator chains, one load of x for both); otherwise
 * CALL(mc) runs mc rows of x per pass. */
#define AFO_QMV_DISPATCH(block, ...)                                                                                   \
    do {                                                                                                               \
        if (a->M == 1) {                                                                                               \
            int64_t n2 = n0 + (n1 - n0) / 2 * 2;                                                                       \
            block(__VA_ARGS__ 2, 1, a, 0, n0, n2);                                                                     \
            block(__VA_ARGS__ 1, 1, a, 0, n2, n1);                                                                     \
            return;                                                                                                    \
        }                                                                                                              \
        AFO_QMV_ROWS(CALL)                                                                                             \
    } while (0)

#endif
