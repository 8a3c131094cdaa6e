/* CPU kernels of the fused neural-network ops (rms_norm, layer_norm, rope,
 * scaled_dot_product_attention) and the float32 vector primitives they run
 * on. The primitives come in a scalar reference version and SIMD versions
 * (AVX2, AVX-512, NEON) picked at run time; tests compare them. */
#ifndef AFO_NN_KERNELS_H
#define AFO_NN_KERNELS_H

#include "core/internal.h"

/* Storage types the primitives read directly (others go through a float32
 * row first). */
typedef enum afo_nn_st { AFO_NN_F32 = 0, AFO_NN_BF16, AFO_NN_F16, AFO_NN_ST_COUNT } afo_nn_st;
/* The primitives' storage type for dt, or -1 when they cannot read it. */
int afo_nn_st_of(afo_dtype dt);

typedef struct afo_nn_prims {
    const char *name;
    /* Attention's two products, over n rows of keys or values (the table's
     * storage type, row x at element x * stride) and nq query heads at once,
     * so that a decode step's query heads of one kv head share each row's
     * loads: s[t * ls + x] = sum_i q[t * D + i] * k[x * ks + i], and
     * acc[t * Dv + i] += sum_x p[t * ls + x] * v[x * vs + i] (x in order). */
    void (*dots[AFO_NN_ST_COUNT])(const float *q, int64_t nq, int64_t D, const void *k, int64_t ks, int64_t n,
                                  float *s, int64_t ls);
    void (*axpys[AFO_NN_ST_COUNT])(float *acc, int64_t nq, int64_t Dv, const float *p, int64_t ls, const void *v,
                                   int64_t vs, int64_t n);
    /* A prefill tile's scores against nk keys stored transposed (kt[i *
     * kts + x] is key x's element i; nk a multiple of 16, keys past the
     * real ones zero): s[t * ls + x] = sum_i q[t * D + i] * kt[i * kts + x]
     * for t < nq, x < nk. NULL in tables without a blocked version (prefill
     * attention then goes row by row). */
    void (*scores_t)(const float *q, int64_t nq, int64_t D, const float *kt, int64_t kts, int64_t nk, float *s,
                     int64_t ls);
    /* the largest x[i], NaN skipped; -inf when there is none (n = 0) */
    float (*max)(const float *x, int64_t n);
    /* s[i] = exp(s[i] - max); returns the sum of the new s[i] */
    float (*exp_sum)(float *s, int64_t n, float max);
    /* sum_i x[i] */
    float (*sum)(const float *x, int64_t n);
    /* sum_i (x[i] - c)^2 */
    float (*sq_dev_sum)(const float *x, int64_t n, float c);
    /* x[i] = (x[i] - c) * inv * w[i] + b[i] */
    void (*norm_apply)(float *x, int64_t n, float c, float inv, const float *w, const float *b);
    /* rotated halves: (x[i], x[i+half]) -> (x[i] c[i] - x[i+half] s[i], x[i] s[i] + x[i+half] c[i]) */
    void (*rotate_halves)(float *x, int64_t half, const float *c, const float *s);
} afo_nn_prims;

/* rowwise_dots_SUF and rowwise_axpys_SUF, one row and one head at a time,
 * from a level's row primitives float dot_SUF(q, k, n) (sum q[i] k[i]) and
 * void axpy_SUF(acc, a, v, n) (acc[i] += a v[i]): the scalar reference,
 * the levels without a blocked version, and AVX2's for odd row lengths. */
#define AFO_NN_ROWWISE_DOTS_AXPYS(SUF)                                                                         \
    static void rowwise_dots_##SUF(const float *q, int64_t nq, int64_t D, const void *k, int64_t ks, int64_t n, \
                                   float *s, int64_t ls) {                                                    \
        for (int64_t x = 0; x < n; x++)                                                                       \
            for (int64_t t = 0; t < nq; t++)                                                                  \
                s[t * ls + x] = dot_##SUF(q + t * D, (const char *)k + x * ks * AFO_NN_ESIZE_##SUF, D);       \
    }                                                                                                         \
    static void rowwise_axpys_##SUF(float *acc, int64_t nq, int64_t Dv, const float *p, int64_t ls,           \
                                    const void *v, int64_t vs, int64_t n) {                                   \
        for (int64_t x = 0; x < n; x++)                                                                       \
            for (int64_t t = 0; t < nq; t++)                                                                  \
                axpy_##SUF(acc + t * Dv, p[t * ls + x], (const char *)v + x * vs * AFO_NN_ESIZE_##SUF, Dv);   \
    }
enum { AFO_NN_ESIZE_f32 = 4, AFO_NN_ESIZE_bf16 = 2, AFO_NN_ESIZE_f16 = 2 };

extern const afo_nn_prims afo_nn_prims_scalar;
/* scores_t's reference, for the tests (no table holds it). */
void afo_nn_scores_t_scalar(const float *q, int64_t nq, int64_t D, const float *kt, int64_t kts, int64_t nk, float *s,
                            int64_t ls);
#if defined(__x86_64__) || defined(__i386__)
extern const afo_nn_prims afo_nn_prims_avx2;
extern const afo_nn_prims afo_nn_prims_avx512;
/* AVX2's register-tiled attention products (AVX-512's for rows that are not
 * a multiple of 16 long). */
#define AFO_NN_TILED_AVX2(SUF)                                                                                    \
    void afo_nn_dots_avx2_##SUF(const float *q, int64_t nq, int64_t D, const void *k, int64_t ks, int64_t n,      \
                                float *s, int64_t ls);                                                            \
    void afo_nn_axpys_avx2_##SUF(float *acc, int64_t nq, int64_t Dv, const float *p, int64_t ls, const void *v, \
                                 int64_t vs, int64_t n);
AFO_NN_TILED_AVX2(f32)
AFO_NN_TILED_AVX2(bf16)
AFO_NN_TILED_AVX2(f16)
#undef AFO_NN_TILED_AVX2
#endif
#if defined(__aarch64__)
extern const afo_nn_prims afo_nn_prims_neon;
#endif
/* The fastest table this CPU runs. */
const afo_nn_prims *afo_nn_prims_best(void);

/* Attribute layouts, shared by the ops (src/ops/nn.c) and the kernels.
 * rms_norm/layer_norm: inputs x[, weight][, bias]. */
enum { AFO_NORM_I_HAS_WEIGHT = 0, AFO_NORM_I_HAS_BIAS, AFO_NORM_NI };
enum { AFO_NORM_F_EPS = 0, AFO_NORM_NF };
/* rope: inputs x[, freqs][, position]. INVERSE rotates by the negated angle
 * (the vjp); with HAS_POSITION the offset is OFFSET plus the value of the
 * last input (int32, read when the kernel runs). */
enum { AFO_ROPE_I_DIMS = 0, AFO_ROPE_I_TRADITIONAL, AFO_ROPE_I_OFFSET, AFO_ROPE_I_INVERSE,
       AFO_ROPE_I_HAS_FREQS, AFO_ROPE_I_HAS_POSITION, AFO_ROPE_NI };
enum { AFO_ROPE_F_BASE = 0, AFO_ROPE_F_SCALE, AFO_ROPE_NF };
/* sdpa: inputs q, k, v[, mask][, position]; with HAS_POSITION query i sits
 * at the position's value + i (causal only). */
enum { AFO_SDPA_I_CAUSAL = 0, AFO_SDPA_I_WINDOW, AFO_SDPA_I_HAS_POSITION, AFO_SDPA_NI };
enum { AFO_SDPA_F_SCALE = 0, AFO_SDPA_NF };

/* Kernels (afo_kernel_fn). */
afo_status afo_cpu_norm(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);
afo_status afo_cpu_rope(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);
afo_status afo_cpu_sdpa(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);

#endif
