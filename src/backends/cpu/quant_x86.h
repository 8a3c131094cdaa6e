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

/* Weight rows a pass of the matvec takes at M = 1: that many streams and
 * accumulator chains, one load of x for all; NR_MAX bounds the kernels'
 * arrays. How many suits the memory system differs between CPUs. On a Zen
 * 5 EPYC, ab_decode (TinyLlama 4-bit, prompt 512) read two streams against
 * four 0.916 (the AVX2 kernel 0.922), one against two 1.075; on an Intel
 * Xeon (Emerald Rapids, 2 vCPUs, 31 GB/s) four against two 0.951 and 0.955
 * for the AVX-512 4-bit kernel, which so takes afo_cpu_qmv_streams(), but
 * 1.127 for the AVX2 8-bit one (which AVX-512 hosts run too): the others
 * take two. */
enum { NR_MAX = 4 };

/* A matvec kernel takes rows n0 .. n1 (nr dividing their count) in passes
 * of nr rows a stride L = (n1 - n0) / nr apart: pass j's rows n0 + j + r L
 * each continue a sequential stream through memory. Read as nr long
 * streams, a thread's share of the matrix comes from DRAM about 1.5x as
 * fast as when a pass takes nr adjacent short rows (at K = 2048, 4
 * streams of 1 KiB per 4 KiB page), which the hardware prefetchers do not
 * follow (AVX2 on Zen 3; on a Zen 5 the AVX-512 4-bit kernel's decode
 * took 0.91 of the time with streams). The kernels prefetch each line they
 * read in the stream's next row (the next pass), and pass_rows the next
 * rows' scales and biases: with a few slow streams per thread and 4 KiB
 * pages, which hardware prefetchers do not cross, a one-thread 4-bit matvec
 * had read DRAM at about a third of the streaming rate without it (Zen 3),
 * and a Zen 5 decode took 1.26x as long. */
static inline int64_t pass_row(int64_t n0, int64_t n1, int nr, int64_t j, int r) { return n0 + j + r * ((n1 - n0) / nr); }

static inline __attribute__((always_inline)) void pass_rows(const afo_qmv_args *a, int64_t n0, int64_t n1, int64_t j,
                                                             int nr, const uint8_t **row) {
    /* the size inline, not afo_dtype_size's call once a pass (perf: 0.5% of
     * a 4-bit decode's samples); scales are float32, float16 or bfloat16 */
    size_t pb = (size_t)a->G * (a->sdt == AFO_FLOAT32 ? 4 : 2);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        int64_t n = pass_row(n0, n1, nr, j, r);
        row[r] = (const uint8_t *)(a->w + n * a->words);
        _mm_prefetch((const char *)a->s + pb * (size_t)(n + 1), _MM_HINT_T0);
        _mm_prefetch((const char *)a->b + pb * (size_t)(n + 1), _MM_HINT_T0);
    }
}

/* Groups whose parameters a matvec converts to float at a time. */
#define AFO_QMV_PIECE 128

/* 8 elements from i of a scale or bias array of dtype dt (a constant in
 * each instance) in float. */
static inline __attribute__((always_inline)) __m256 load8_f32(afo_dtype dt, const void *p, int64_t i) {
    if (dt == AFO_FLOAT32) return _mm256_loadu_ps((const float *)p + i);
    __m128i v = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    return dt == AFO_BFLOAT16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16)) : _mm256_cvtph_ps(v);
}

static inline float load1_f32(afo_dtype dt, const void *p, int64_t i) {
    if (dt == AFO_FLOAT32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (dt == AFO_FLOAT16) return _cvtsh_ss(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Row n's scales of groups g0.. (up to AFO_QMV_PIECE, then zeros for the
 * groups past the row that a last chunk's lanes meet) into s in float, and
 * the biases' share sum_g b[n, g] * xsum[m, g] over those groups added to
 * bsum[i] for x rows m0 + i, i < mc. Inline, and one loop per dtype: a
 * short row (K = 2048: 32 groups) has few chunks to spread this over, and
 * the generic version (a call per conversion, the dtype tested per vector)
 * cost the 4-bit matvec a fifth of its time there. */
static inline __attribute__((always_inline)) void row_params_dt(afo_dtype dt, const afo_qmv_args *a, int64_t n,
                                                                int64_t g0, float *s, float *bsum, int m0, int mc) {
    int64_t ng = a->G - g0 < AFO_QMV_PIECE ? a->G - g0 : AFO_QMV_PIECE, i0 = n * a->G + g0, g = 0;
    const float *xs[4];
    __m256 t[4];
    for (int i = 0; i < mc; i++) {
        xs[i] = a->qx->xsum + (m0 + i) * a->G + g0;
        t[i] = _mm256_setzero_ps();
    }
    for (; g + 8 <= ng; g += 8) {
        _mm256_storeu_ps(s + g, load8_f32(dt, a->s, i0 + g));
        __m256 b = load8_f32(dt, a->b, i0 + g);
        for (int i = 0; i < mc; i++) t[i] = _mm256_fmadd_ps(b, _mm256_loadu_ps(xs[i] + g), t[i]);
    }
    float r[4];
    for (int i = 0; i < mc; i++) r[i] = hsum(t[i]);
    for (; g < ng; g++) {
        s[g] = load1_f32(dt, a->s, i0 + g);
        float b = load1_f32(dt, a->b, i0 + g);
        for (int i = 0; i < mc; i++) r[i] += b * xs[i][g];
    }
    for (int j = 0; j < 4; j++) s[ng + j] = 0.0f;
    for (int i = 0; i < mc; i++) bsum[i] += r[i];
}

static inline __attribute__((always_inline)) void row_params(const afo_qmv_args *a, int64_t n, int64_t g0, float *s,
                                                             float *bsum, int m0, int mc) {
    switch (a->sdt) {
    case AFO_BFLOAT16: row_params_dt(AFO_BFLOAT16, a, n, g0, s, bsum, m0, mc); break;
    case AFO_FLOAT16: row_params_dt(AFO_FLOAT16, a, n, g0, s, bsum, m0, mc); break;
    default: row_params_dt(AFO_FLOAT32, a, n, g0, s, bsum, m0, mc); break;
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
 * `streams` (2 or 4) at a time, the remainder one at a time; otherwise
 * CALL(mc) runs mc rows of x per pass. */
#define AFO_QMV_M1(block, nr, ...)                                                                                     \
    do {                                                                                                               \
        int64_t nr_end = n0 + (n1 - n0) / (nr) * (nr);                                                                 \
        block(__VA_ARGS__ nr, 1, a, 0, n0, nr_end);                                                                    \
        block(__VA_ARGS__ 1, 1, a, 0, nr_end, n1);                                                                     \
    } while (0)
#define AFO_QMV_DISPATCH(block, streams, ...)                                                                          \
    do {                                                                                                               \
        if (a->M == 1) {                                                                                               \
            if ((streams) == 4) AFO_QMV_M1(block, 4, __VA_ARGS__);                                                     \
            else AFO_QMV_M1(block, 2, __VA_ARGS__);                                                                    \
            return;                                                                                                    \
        }                                                                                                              \
        AFO_QMV_ROWS(CALL)                                                                                             \
    } while (0)

#endif
