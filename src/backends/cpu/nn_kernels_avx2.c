/* AVX2/FMA/F16C versions of the nn primitives (see nn_kernels.h). Tails
 * shorter than a vector run the scalar formulas. */
#include <immintrin.h>
#include <math.h>

#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/simd_exp_avx2.h"

static inline __m256 ld8_f32(const void *p, int64_t i) { return _mm256_loadu_ps((const float *)p + i); }
static inline __m256 ld8_bf16(const void *p, int64_t i) {
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256 ld8_f16(const void *p, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}
static inline float ld1_f32(const void *p, int64_t i) { return ((const float *)p)[i]; }
static inline float ld1_bf16(const void *p, int64_t i) { return afo_bf16_to_f32(((const uint16_t *)p)[i]); }
static inline float ld1_f16(const void *p, int64_t i) { return afo_f16_to_f32(((const uint16_t *)p)[i]); }

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Two accumulators hide the FMA latency on 64-128 long rows. */
#define AVX2_DOT_AXPY(SUF)                                                                     \
    static float dot_##SUF(const float *q, const void *k, int64_t n) {                        \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                             \
        int64_t i = 0;                                                                         \
        for (; i + 16 <= n; i += 16) {                                                         \
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), ld8_##SUF(k, i), a0);                 \
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), ld8_##SUF(k, i + 8), a1);         \
        }                                                                                      \
        if (i + 8 <= n) {                                                                      \
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), ld8_##SUF(k, i), a0);                 \
            i += 8;                                                                            \
        }                                                                                      \
        float s = hsum(_mm256_add_ps(a0, a1));                                                 \
        for (; i < n; i++) s += q[i] * ld1_##SUF(k, i);                                        \
        return s;                                                                              \
    }                                                                                          \
    static void axpy_##SUF(float *acc, float a, const void *v, int64_t n) {                   \
        __m256 va = _mm256_set1_ps(a);                                                         \
        int64_t i = 0;                                                                         \
        for (; i + 8 <= n; i += 8)                                                             \
            _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(va, ld8_##SUF(v, i), _mm256_loadu_ps(acc + i))); \
        for (; i < n; i++) acc[i] += a * ld1_##SUF(v, i);                                      \
    }
AVX2_DOT_AXPY(f32)
AVX2_DOT_AXPY(bf16)
AVX2_DOT_AXPY(f16)
AFO_NN_ROWWISE_DOTS_AXPYS(f32)
AFO_NN_ROWWISE_DOTS_AXPYS(bf16)
AFO_NN_ROWWISE_DOTS_AXPYS(f16)

/* Attention's products in register tiles (row lengths a multiple of 8,
 * else row-wise). dots: nh heads by nk key rows, each key chunk loaded
 * (and converted) once for the nh heads, each query chunk once for the nk
 * keys; 4 keys' sums leave together through two hadd levels. axpys: nh
 * heads by nv vectors of a value row, the p of a head broadcast once per
 * row; blocks of 64 rows stay in L1 while every head and chunk passes. A
 * decode step called the row primitives once per (head, key), and the
 * calls, horizontal sums and accumulator loads and stores took more time
 * than the arithmetic. */
#define AVX2_DOTS_AXPYS(SUF)                                                                                    \
    static inline __attribute__((always_inline)) void dots_tile_##SUF(int nh, int nk, const float *q, int64_t D, \
                                                                       const char *k, size_t kb, float *s,      \
                                                                       int64_t ls) {                            \
        __m256 a[2][4];                                                                                         \
        _Pragma("GCC unroll 4") for (int h = 0; h < nh; h++)                                                                            \
            _Pragma("GCC unroll 4") for (int x = 0; x < nk; x++) a[h][x] = _mm256_setzero_ps();                                         \
        for (int64_t i = 0; i < D; i += 8) {                                                                    \
            __m256 kv[4];                                                                                       \
            _Pragma("GCC unroll 4") for (int x = 0; x < nk; x++) kv[x] = ld8_##SUF(k + x * kb, i);                                      \
            _Pragma("GCC unroll 4") for (int h = 0; h < nh; h++) {                                                                      \
                __m256 qv = _mm256_loadu_ps(q + h * D + i);                                                     \
                _Pragma("GCC unroll 4") for (int x = 0; x < nk; x++) a[h][x] = _mm256_fmadd_ps(qv, kv[x], a[h][x]);                     \
            }                                                                                                   \
        }                                                                                                       \
        _Pragma("GCC unroll 4") for (int h = 0; h < nh; h++) {                                                                          \
            if (nk == 4) {                                                                                      \
                __m256 r = _mm256_hadd_ps(_mm256_hadd_ps(a[h][0], a[h][1]), _mm256_hadd_ps(a[h][2], a[h][3]));  \
                _mm_storeu_ps(s + h * ls, _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1)));  \
            } else {                                                                                            \
                _Pragma("GCC unroll 4") for (int x = 0; x < nk; x++) s[h * ls + x] = hsum(a[h][x]);                                     \
            }                                                                                                   \
        }                                                                                                       \
    }                                                                                                           \
    void afo_nn_dots_avx2_##SUF(const float *q, int64_t nq, int64_t D, const void *k, int64_t ks, int64_t n,    \
                                float *s, int64_t ls) {                                                         \
        if (D % 8) {                                                                                            \
            rowwise_dots_##SUF(q, nq, D, k, ks, n, s, ls);                                                      \
            return;                                                                                             \
        }                                                                                                       \
        size_t kb = (size_t)ks * AFO_NN_ESIZE_##SUF;                                                            \
        for (int64_t x = 0; x < n;) {                                                                           \
            const char *kx = (const char *)k + x * kb;                                                          \
            int nk = n - x >= 4 ? 4 : 1;                                                                        \
            int64_t t = 0;                                                                                      \
            for (; t + 2 <= nq; t += 2) {                                                                       \
                if (nk == 4) dots_tile_##SUF(2, 4, q + t * D, D, kx, kb, s + t * ls + x, ls);                   \
                else dots_tile_##SUF(2, 1, q + t * D, D, kx, kb, s + t * ls + x, ls);                           \
            }                                                                                                   \
            if (t < nq) {                                                                                       \
                if (nk == 4) dots_tile_##SUF(1, 4, q + t * D, D, kx, kb, s + t * ls + x, ls);                   \
                else dots_tile_##SUF(1, 1, q + t * D, D, kx, kb, s + t * ls + x, ls);                           \
            }                                                                                                   \
            x += nk;                                                                                            \
        }                                                                                                       \
    }                                                                                                           \
    /* zero: acc starts at zero, not loaded (scores_t's use) */                                               \
    static inline __attribute__((always_inline)) void axpys_tile_##SUF(int nh, int nv, bool zero, float *acc,   \
                                                                        int64_t Dv, const float *p, int64_t ls, \
                                                                        const char *v, size_t vb, int64_t c,    \
                                                                        int64_t n) {                            \
        __m256 a[6][4];                                                                                         \
        _Pragma("GCC unroll 6") for (int h = 0; h < nh; h++)                                                                            \
            _Pragma("GCC unroll 4") for (int j = 0; j < nv; j++)                                                                        \
                a[h][j] = zero ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + h * Dv + c + 8 * j);               \
        for (int64_t x = 0; x < n; x++) {                                                                       \
            __m256 vv[4];                                                                                       \
            _Pragma("GCC unroll 4") for (int j = 0; j < nv; j++) vv[j] = ld8_##SUF(v + x * vb, c + 8 * j);                              \
            _Pragma("GCC unroll 6") for (int h = 0; h < nh; h++) {                                                                      \
                __m256 pb = _mm256_broadcast_ss(p + h * ls + x);                                                \
                _Pragma("GCC unroll 4") for (int j = 0; j < nv; j++) a[h][j] = _mm256_fmadd_ps(pb, vv[j], a[h][j]);                     \
            }                                                                                                   \
        }                                                                                                       \
        _Pragma("GCC unroll 6") for (int h = 0; h < nh; h++)                                                                            \
            _Pragma("GCC unroll 4") for (int j = 0; j < nv; j++) _mm256_storeu_ps(acc + h * Dv + c + 8 * j, a[h][j]);                   \
    }                                                                                                           \
    void afo_nn_axpys_avx2_##SUF(float *acc, int64_t nq, int64_t Dv, const float *p, int64_t ls,                \
                                 const void *v, int64_t vs, int64_t n) {                                        \
        if (Dv % 8) {                                                                                           \
            rowwise_axpys_##SUF(acc, nq, Dv, p, ls, v, vs, n);                                                  \
            return;                                                                                             \
        }                                                                                                       \
        size_t vb = (size_t)vs * AFO_NN_ESIZE_##SUF;                                                            \
        for (int64_t x0 = 0; x0 < n; x0 += 64) {                                                                \
            int64_t nx = n - x0 < 64 ? n - x0 : 64;                                                             \
            const char *vx = (const char *)v + x0 * vb;                                                         \
            for (int64_t t = 0; t < nq; t += 2) {                                                               \
                float *at = acc + t * Dv;                                                                       \
                const float *pt = p + t * ls + x0;                                                              \
                int64_t c = 0;                                                                                  \
                if (t + 2 <= nq) {                                                                              \
                    for (; c + 32 <= Dv; c += 32) axpys_tile_##SUF(2, 4, false, at, Dv, pt, ls, vx, vb, c, nx);        \
                    for (; c < Dv; c += 8) axpys_tile_##SUF(2, 1, false, at, Dv, pt, ls, vx, vb, c, nx);               \
                } else {                                                                                        \
                    for (; c + 32 <= Dv; c += 32) axpys_tile_##SUF(1, 4, false, at, Dv, pt, ls, vx, vb, c, nx);        \
                    for (; c < Dv; c += 8) axpys_tile_##SUF(1, 1, false, at, Dv, pt, ls, vx, vb, c, nx);               \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
    }
AVX2_DOTS_AXPYS(f32)
AVX2_DOTS_AXPYS(bf16)
AVX2_DOTS_AXPYS(f16)

/* max_ps returns its second operand when the first is NaN, so NaN is
 * skipped as in the scalar comparison */
static float max_avx2(const float *x, int64_t n) {
    __m256 acc = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_max_ps(_mm256_loadu_ps(x + i), acc);
    __m128 m = _mm_max_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
    m = _mm_max_ps(_mm_movehl_ps(m, m), m);
    float r = _mm_cvtss_f32(_mm_max_ss(_mm_movehdup_ps(m), m));
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

static float exp_sum_avx2(float *s, int64_t n, float max) {
    __m256 vm = _mm256_set1_ps(max), acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = afo_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum(acc);
    for (; i < n; i++) sum += (s[i] = expf(s[i] - max));
    return sum;
}

static float sum_avx2(const float *x, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
    float s = hsum(acc);
    for (; i < n; i++) s += x[i];
    return s;
}

static float sq_dev_sum_avx2(const float *x, int64_t n, float c) {
    __m256 acc = _mm256_setzero_ps(), vc = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vc);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float s = hsum(acc);
    for (; i < n; i++) s += (x[i] - c) * (x[i] - c);
    return s;
}

static void norm_apply_avx2(float *x, int64_t n, float c, float inv, const float *w, const float *b) {
    __m256 vc = _mm256_set1_ps(c), vi = _mm256_set1_ps(inv);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 y = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vc), vi);
        _mm256_storeu_ps(x + i, _mm256_fmadd_ps(y, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) x[i] = (x[i] - c) * inv * w[i] + b[i];
}

static void rotate_halves_avx2(float *x, int64_t half, const float *c, const float *s) {
    int64_t i = 0;
    for (; i + 8 <= half; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + half + i);
        __m256 vc = _mm256_loadu_ps(c + i), vs = _mm256_loadu_ps(s + i);
        _mm256_storeu_ps(x + i, _mm256_fmsub_ps(a, vc, _mm256_mul_ps(b, vs)));
        _mm256_storeu_ps(x + half + i, _mm256_fmadd_ps(a, vs, _mm256_mul_ps(b, vc)));
    }
    for (; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = a * s[i] + b * c[i];
    }
}

/* scores_t in axpys_f32's tiles of up to 6 rows by 16 keys (two vectors;
 * the transposed keys as its rows, q as its weights, zeroed first): no
 * sums across lanes. */
static void scores_t_avx2(const float *q, int64_t nq, int64_t D, const float *kt, int64_t kts, int64_t nk, float *s,
                          int64_t ls) {
    const size_t kb = (size_t)kts * sizeof(float);
    for (int64_t t = 0; t < nq; t += 6) {
        const int64_t nr = nq - t < 6 ? nq - t : 6;
        for (int64_t x = 0; x < nk; x += 16) {
            const float *qt = q + t * D;
            const char *kx = (const char *)(kt + x);
            float *sx = s + t * ls + x;
            switch (nr) {
            case 1: axpys_tile_f32(1, 2, true, sx, ls, qt, D, kx, kb, 0, D); break;
            case 2: axpys_tile_f32(2, 2, true, sx, ls, qt, D, kx, kb, 0, D); break;
            case 3: axpys_tile_f32(3, 2, true, sx, ls, qt, D, kx, kb, 0, D); break;
            case 4: axpys_tile_f32(4, 2, true, sx, ls, qt, D, kx, kb, 0, D); break;
            case 5: axpys_tile_f32(5, 2, true, sx, ls, qt, D, kx, kb, 0, D); break;
            default: axpys_tile_f32(6, 2, true, sx, ls, qt, D, kx, kb, 0, D); break;
            }
        }
    }
}

const afo_nn_prims afo_nn_prims_avx2 = {
    "avx2", {afo_nn_dots_avx2_f32, afo_nn_dots_avx2_bf16, afo_nn_dots_avx2_f16},
    {afo_nn_axpys_avx2_f32, afo_nn_axpys_avx2_bf16, afo_nn_axpys_avx2_f16}, scores_t_avx2,
    max_avx2, exp_sum_avx2, sum_avx2, sq_dev_sum_avx2, norm_apply_avx2, rotate_halves_avx2,
};
