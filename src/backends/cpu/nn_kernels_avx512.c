/* AVX-512 versions of the nn primitives (see nn_kernels.h): 16 lanes, tails
 * through masked loads and stores, so no scalar remainder loop. */
#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/simd_exp_avx512.h"

static inline size_t st_bytes(int st) { return st == AFO_NN_F32 ? 4 : 2; }

/* 16 elements from i of a row of storage type st (a constant per instance). */
static inline __attribute__((always_inline)) __m512 ld16(int st, const char *row, int64_t i) {
    if (st == AFO_NN_F32) return _mm512_loadu_ps((const float *)row + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
    if (st == AFO_NN_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Attention's products in register tiles, as AVX2's (nn_kernels_avx2.c) on
 * 16 lanes and up to 4 heads a tile: dots takes nh heads by nk keys, each
 * key chunk loaded once for the nh heads, 4 keys' sums leaving together
 * through a 256-bit fold and two hadd levels; axpys takes nh heads by nv
 * vectors of a value row, a block of 64 rows staying in L1 while every head
 * passes. Row lengths that are not a multiple of 16 take AVX2's tiles. On a
 * Zen 5 EPYC, AVX2's tiles took 1.25x less time than the row-at-a-time
 * 512-bit primitives these replace (a call and a horizontal sum per head
 * and key) in a 4-bit TinyLlama decode at a 512-token context. A decode
 * step's keys and values come from memory in short runs (a kv head's rows,
 * 150 KB at 576 positions), so both products prefetch the rows they reach
 * next: ab_decode (4-bit, 24 pairs) read 0.970 and 0.979 of the time at a
 * 1024-token prompt, 0.981 and 0.988 at 512. */
enum { KEYS_AHEAD = 16, VALUES_AHEAD = 64 };
static inline __attribute__((always_inline)) void dots_tile(int st, int nh, int nk, const float *q, int64_t D,
                                                             const char *k, size_t kb, float *s, int64_t ls) {
    __m512 a[4][4];
#pragma GCC unroll 4
    for (int h = 0; h < nh; h++)
#pragma GCC unroll 4
        for (int x = 0; x < nk; x++) a[h][x] = _mm512_setzero_ps();
    for (int64_t i = 0; i < D; i += 16) {
        __m512 kv[4];
#pragma GCC unroll 4
        for (int x = 0; x < nk; x++) kv[x] = ld16(st, k + x * kb, i);
#pragma GCC unroll 4
        for (int h = 0; h < nh; h++) {
            __m512 qv = _mm512_loadu_ps(q + h * D + i);
#pragma GCC unroll 4
            for (int x = 0; x < nk; x++) a[h][x] = _mm512_fmadd_ps(qv, kv[x], a[h][x]);
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < nh; h++) {
        if (nk == 4) {
            __m256 f[4];
#pragma GCC unroll 4
            for (int x = 0; x < 4; x++) f[x] = _mm256_add_ps(_mm512_castps512_ps256(a[h][x]), _mm512_extractf32x8_ps(a[h][x], 1));
            __m256 r = _mm256_hadd_ps(_mm256_hadd_ps(f[0], f[1]), _mm256_hadd_ps(f[2], f[3]));
            _mm_storeu_ps(s + h * ls, _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1)));
        } else {
            s[h * ls] = _mm512_reduce_add_ps(a[h][0]);
        }
    }
}

static inline __attribute__((always_inline)) void dots_st(int st, const float *q, int64_t nq, int64_t D, const void *k,
                                                           int64_t ks, int64_t n, float *s, int64_t ls) {
    size_t kb = (size_t)ks * st_bytes(st);
    for (int64_t x = 0; x < n;) {
        const char *kx = (const char *)k + x * kb;
        int nk = n - x >= 4 ? 4 : 1;
        if (x + KEYS_AHEAD + 4 <= n)
            for (size_t o = 0; o < 4 * kb; o += 64) _mm_prefetch(kx + KEYS_AHEAD * kb + o, _MM_HINT_T0);
        for (int64_t t = 0; t < nq; t += 4) {
            int64_t nh = nq - t < 4 ? nq - t : 4;
#define DT(NH)                                                                                   \
    (nk == 4 ? dots_tile(st, NH, 4, q + t * D, D, kx, kb, s + t * ls + x, ls)                     \
             : dots_tile(st, NH, 1, q + t * D, D, kx, kb, s + t * ls + x, ls))
            switch (nh) {
            case 1: DT(1); break;
            case 2: DT(2); break;
            case 3: DT(3); break;
            default: DT(4); break;
            }
#undef DT
        }
        x += nk;
    }
}

/* out[h * os + c + i] (+)= sum_x w[h * ws + x] * row_x[c + i] for h < nh,
 * i < 16 nv, rows x < n of storage type st a vb bytes apart: nh x nv
 * accumulators, a row's vectors loaded once a step and one weight of each
 * h broadcast. axpys' tile (w the probabilities, the rows values, adding
 * to acc) and scores_t's (w the queries, the rows the transposed keys,
 * out zeroed first: no sums across lanes). prefetch: also request each
 * row's columns VALUES_AHEAD rows further on. */
static inline __attribute__((always_inline)) void bcast_tile(int st, int nh, int nv, bool zero, float *out, int64_t os,
                                                              const float *w, int64_t ws, const char *v, size_t vb,
                                                              int64_t c, int64_t n, bool prefetch) {
    __m512 a[8][4];
#pragma GCC unroll 8
    for (int h = 0; h < nh; h++)
#pragma GCC unroll 4
        for (int j = 0; j < nv; j++) a[h][j] = zero ? _mm512_setzero_ps() : _mm512_loadu_ps(out + h * os + c + 16 * j);
    for (int64_t x = 0; x < n; x++) {
        __m512 vv[4];
#pragma GCC unroll 4
        for (int j = 0; j < nv; j++) {
            if (prefetch) _mm_prefetch(v + (x + VALUES_AHEAD) * vb + (c + 16 * j) * st_bytes(st), _MM_HINT_T0);
            vv[j] = ld16(st, v + x * vb, c + 16 * j);
        }
#pragma GCC unroll 8
        for (int h = 0; h < nh; h++) {
            __m512 pb = _mm512_set1_ps(w[h * ws + x]);
#pragma GCC unroll 4
            for (int j = 0; j < nv; j++) a[h][j] = _mm512_fmadd_ps(pb, vv[j], a[h][j]);
        }
    }
#pragma GCC unroll 8
    for (int h = 0; h < nh; h++)
#pragma GCC unroll 4
        for (int j = 0; j < nv; j++) _mm512_storeu_ps(out + h * os + c + 16 * j, a[h][j]);
}

static inline __attribute__((always_inline)) void axpys_st(int st, float *acc, int64_t nq, int64_t Dv, const float *p,
                                                            int64_t ls, const void *v, int64_t vs, int64_t n) {
    size_t vb = (size_t)vs * st_bytes(st);
    for (int64_t x0 = 0; x0 < n; x0 += 64) {
        int64_t nx = n - x0 < 64 ? n - x0 : 64;
        const char *vx = (const char *)v + x0 * vb;
        for (int64_t t = 0; t < nq; t += 4) {
            int64_t nh = nq - t < 4 ? nq - t : 4;
            bool ahead = t == 0 && x0 + 64 + VALUES_AHEAD <= n; /* the next block's rows, on its first pass */
            for (int64_t c = 0; c < Dv;) {
                int wide = Dv - c >= 64;
#define AT(NH)                                                                                              \
    (wide ? bcast_tile(st, NH, 4, false, acc + t * Dv, Dv, p + t * ls + x0, ls, vx, vb, c, nx, ahead)       \
          : bcast_tile(st, NH, 1, false, acc + t * Dv, Dv, p + t * ls + x0, ls, vx, vb, c, nx, ahead))
                switch (nh) {
                case 1: AT(1); break;
                case 2: AT(2); break;
                case 3: AT(3); break;
                default: AT(4); break;
                }
#undef AT
                c += wide ? 64 : 16;
            }
        }
    }
}

#define AVX512_DOTS_AXPYS(SUF, ST)                                                                                \
    static void dots_##SUF(const float *q, int64_t nq, int64_t D, const void *k, int64_t ks, int64_t n, float *s, \
                           int64_t ls) {                                                                          \
        if (D % 16) afo_nn_dots_avx2_##SUF(q, nq, D, k, ks, n, s, ls);                                            \
        else dots_st(ST, q, nq, D, k, ks, n, s, ls);                                                              \
    }                                                                                                             \
    static void axpys_##SUF(float *acc, int64_t nq, int64_t Dv, const float *p, int64_t ls, const void *v,        \
                            int64_t vs, int64_t n) {                                                              \
        if (Dv % 16) afo_nn_axpys_avx2_##SUF(acc, nq, Dv, p, ls, v, vs, n);                                       \
        else axpys_st(ST, acc, nq, Dv, p, ls, v, vs, n);                                                          \
    }
AVX512_DOTS_AXPYS(f32, AFO_NN_F32)
AVX512_DOTS_AXPYS(bf16, AFO_NN_BF16)
AVX512_DOTS_AXPYS(f16, AFO_NN_F16)

/* lanes past the tail keep acc; max_ps skips a NaN first operand */
static float max_avx512(const float *x, int64_t n) {
    __m512 acc = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        acc = _mm512_mask_max_ps(acc, m, _mm512_maskz_loadu_ps(m, x + i), acc);
    }
    return _mm512_reduce_max_ps(acc);
}

static float exp_sum_avx512(float *s, int64_t n, float max) {
    __m512 vm = _mm512_set1_ps(max), acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 e = afo_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vm));
        _mm512_mask_storeu_ps(s + i, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

static float sum_avx512(const float *x, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(afo_tail_mask16(n - i), x + i));
    return _mm512_reduce_add_ps(acc);
}

static float sq_dev_sum_avx512(const float *x, int64_t n, float c) {
    __m512 acc = _mm512_setzero_ps(), vc = _mm512_set1_ps(c);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), vc);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static void norm_apply_avx512(float *x, int64_t n, float c, float inv, const float *w, const float *b) {
    __m512 vc = _mm512_set1_ps(c), vi = _mm512_set1_ps(inv);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = afo_tail_mask16(n - i);
        __m512 y = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vc), vi);
        y = _mm512_fmadd_ps(y, _mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(x + i, m, y);
    }
}

static void rotate_halves_avx512(float *x, int64_t half, const float *c, const float *s) {
    for (int64_t i = 0; i < half; i += 16) {
        __mmask16 m = afo_tail_mask16(half - i);
        __m512 a = _mm512_maskz_loadu_ps(m, x + i), b = _mm512_maskz_loadu_ps(m, x + half + i);
        __m512 vc = _mm512_maskz_loadu_ps(m, c + i), vs = _mm512_maskz_loadu_ps(m, s + i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_fmsub_ps(a, vc, _mm512_mul_ps(b, vs)));
        _mm512_mask_storeu_ps(x + half + i, m, _mm512_fmadd_ps(a, vs, _mm512_mul_ps(b, vc)));
    }
}

/* scores_t in bcast_tile's tiles of 8 rows by 32 keys (dots' 4 x 4 tiles
 * read 2 loads an FMA and fold every sum across lanes). */
static void scores_t_avx512(const float *q, int64_t nq, int64_t D, const float *kt, int64_t kts, int64_t nk, float *s,
                            int64_t ls) {
    const size_t kb = (size_t)kts * sizeof(float);
    for (int64_t t = 0; t < nq; t += 8) {
        const int64_t nr = nq - t < 8 ? nq - t : 8;
        for (int64_t x = 0; x < nk; x += 32) {
            const int w = nk - x >= 32 ? 2 : 1;
#define ST(NR)                                                                                                 \
    (w == 2 ? bcast_tile(AFO_NN_F32, NR, 2, true, s + t * ls + x, ls, q + t * D, D, (const char *)(kt + x), \
                         kb, 0, D, false)                                                                    \
            : bcast_tile(AFO_NN_F32, NR, 1, true, s + t * ls + x, ls, q + t * D, D, (const char *)(kt + x), \
                         kb, 0, D, false))
            switch (nr) {
            case 1: ST(1); break;
            case 2: ST(2); break;
            case 3: ST(3); break;
            case 4: ST(4); break;
            case 5: ST(5); break;
            case 6: ST(6); break;
            case 7: ST(7); break;
            default: ST(8); break;
            }
#undef ST
        }
    }
}

const afo_nn_prims afo_nn_prims_avx512 = {
    "avx512", {dots_f32, dots_bf16, dots_f16}, {axpys_f32, axpys_bf16, axpys_f16}, scores_t_avx512,
    max_avx512, exp_sum_avx512, sum_avx512, sq_dev_sum_avx512, norm_apply_avx512, rotate_halves_avx512,
};
