/* CPU kernels of the fused nn ops, the scalar reference primitives and the
 * run-time choice of SIMD primitives. float16/bfloat16/float32 data computes
 * in float32 through the primitives; float64 data computes in double with
 * plain loops (it serves gradient checks, not speed). */
#include "backends/cpu/nn_kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/cpu_features.h"
#include "backends/cpu/threadpool.h"

int afo_nn_st_of(afo_dtype dt) {
    switch (dt) {
    case AFO_FLOAT32: return AFO_NN_F32;
    case AFO_BFLOAT16: return AFO_NN_BF16;
    case AFO_FLOAT16: return AFO_NN_F16;
    default: return -1;
    }
}

/* ------------------------------------------------------------ scalar primitives */

static inline float ld_f32(const void *p, int64_t i) { return ((const float *)p)[i]; }
static inline float ld_bf16(const void *p, int64_t i) { return afo_bf16_to_f32(((const uint16_t *)p)[i]); }
static inline float ld_f16(const void *p, int64_t i) { return afo_f16_to_f32(((const uint16_t *)p)[i]); }

#define SCALAR_DOT_AXPY(SUF)                                                         \
    static float dot_##SUF(const float *q, const void *k, int64_t n) {              \
        float s = 0;                                                                 \
        for (int64_t i = 0; i < n; i++) s += q[i] * ld_##SUF(k, i);                  \
        return s;                                                                    \
    }                                                                                \
    static void axpy_##SUF(float *acc, float a, const void *v, int64_t n) {         \
        for (int64_t i = 0; i < n; i++) acc[i] += a * ld_##SUF(v, i);                \
    }
SCALAR_DOT_AXPY(f32)
AFO_NN_ROWWISE_DOTS_AXPYS(f32)
SCALAR_DOT_AXPY(bf16)
AFO_NN_ROWWISE_DOTS_AXPYS(bf16)
SCALAR_DOT_AXPY(f16)
AFO_NN_ROWWISE_DOTS_AXPYS(f16)

static float max_scalar(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static float exp_sum_scalar(float *s, int64_t n, float max) {
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (s[i] = expf(s[i] - max));
    return sum;
}

static float sum_scalar(const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}

static float sq_dev_sum_scalar(const float *x, int64_t n, float c) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] - c) * (x[i] - c);
    return s;
}

static void norm_apply_scalar(float *x, int64_t n, float c, float inv, const float *w, const float *b) {
    for (int64_t i = 0; i < n; i++) x[i] = (x[i] - c) * inv * w[i] + b[i];
}

static void rotate_halves_scalar(float *x, int64_t half, const float *c, const float *s) {
    for (int64_t i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = a * s[i] + b * c[i];
    }
}

void afo_nn_scores_t_scalar(const float *q, int64_t nq, int64_t D, const float *kt, int64_t kts, int64_t nk, float *s,
                            int64_t ls) {
    for (int64_t t = 0; t < nq; t++)
        for (int64_t x = 0; x < nk; x++) {
            float d = 0;
            for (int64_t i = 0; i < D; i++) d += q[t * D + i] * kt[i * kts + x];
            s[t * ls + x] = d;
        }
}

const afo_nn_prims afo_nn_prims_scalar = {
    "scalar", {rowwise_dots_f32, rowwise_dots_bf16, rowwise_dots_f16},
    {rowwise_axpys_f32, rowwise_axpys_bf16, rowwise_axpys_f16}, NULL,
    max_scalar, exp_sum_scalar, sum_scalar, sq_dev_sum_scalar, norm_apply_scalar, rotate_halves_scalar,
};

/* Follows the CPU kernel level (AFO_CPU_KERNEL can force scalar). */
const afo_nn_prims *afo_nn_prims_best(void) {
    switch (afo_cpu_kernel_level()) {
#if defined(__x86_64__) || defined(__i386__)
    case AFO_CPU_AVX2: return &afo_nn_prims_avx2;
    case AFO_CPU_AMX: /* AMX adds only bf16 GEMM tiles */
    case AFO_CPU_AVX512: return &afo_nn_prims_avx512;
#endif
#if defined(__aarch64__)
    case AFO_CPU_NEON: return &afo_nn_prims_neon;
#endif
    default: return &afo_nn_prims_scalar;
    }
}

/* ------------------------------------------------------------ shared helpers */

/* Per-thread scratch, kept between calls and grown as needed: a decode
 * step calls these kernels about a hundred times a token, and the project
 * keeps allocation out of the per-token path. A range function uses it
 * until it returns and never calls another kernel meanwhile, so one
 * buffer a thread is enough. A failed allocation is reported by the
 * kernel after the parallel loop (workers cannot return errors). */
static _Thread_local void *t_scratch, *t_tables;
static _Thread_local size_t t_scratch_size, t_tables_size;

/* *buf of at least `bytes`, grown as needed; NULL when that fails. */
static void *grown(void **buf, size_t *size, size_t bytes) {
    if (bytes > *size || !*buf) {
        free(*buf);
        *buf = malloc(bytes ? bytes : 1);
        *size = *buf ? bytes : 0;
    }
    return *buf;
}

static void *scratch(atomic_bool *failed, size_t bytes) {
    void *p = grown(&t_scratch, &t_scratch_size, bytes);
    if (!p) atomic_store(failed, true);
    return p;
}

/* The tables one kernel call computes before its parallel loop (a norm's
 * weight and bias in the compute type, rope's frequencies and angles), per
 * thread and kept like the scratch: the calling thread runs ranges too, so
 * they need a buffer of their own. */
static void *call_tables(size_t bytes) { return grown(&t_tables, &t_tables_size, bytes); }

static const char *elem(const afo_array *a, int64_t off) {
    return (const char *)afo_array_ptr(a) + off * (int64_t)afo_dtype_size(a->dtype);
}

/* ------------------------------------------------------------ rms_norm, layer_norm */

typedef struct norm_job {
    const afo_array *x;
    afo_array *out;
    afo_row_iter rows;
    int64_t n;
    bool center;
    double eps;
    afo_ctype ct;
    const void *w, *b; /* n compute-type values each */
    const afo_nn_prims *p;
    atomic_bool failed;
} norm_job;

static void norm_row_f64(double *x, int64_t n, bool center, double eps, const double *w, const double *b) {
    double c = 0, ss = 0;
    for (int64_t i = 0; center && i < n; i++) c += x[i];
    c /= (double)n;
    for (int64_t i = 0; i < n; i++) ss += (x[i] - c) * (x[i] - c);
    double inv = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) x[i] = (x[i] - c) * inv * w[i] + b[i];
}

static void norm_row_f32(const afo_nn_prims *p, float *x, int64_t n, bool center, float eps, const float *w,
                         const float *b) {
    float c = center ? p->sum(x, n) / (float)n : 0.0f;
    float inv = 1.0f / sqrtf(p->sq_dev_sum(x, n, c) / (float)n + eps);
    p->norm_apply(x, n, c, inv, w, b);
}

static void norm_rows(void *ctx, int64_t begin, int64_t end) {
    norm_job *j = ctx;
    size_t cs = afo_cpu_ctype_size(j->ct), os = afo_dtype_size(j->out->dtype);
    int64_t stride = j->x->strides[j->x->ndim - 1];
    void *buf = scratch(&j->failed, (size_t)j->n * cs);
    if (!buf) return;
    for (int64_t r = begin; r < end; r++) {
        afo_cpu_load_row(j->x->dtype, elem(j->x, afo_row_iter_offset(&j->rows, r)), stride, j->n, j->ct, buf);
        if (j->ct == AFO_CT_F64) norm_row_f64(buf, j->n, j->center, j->eps, j->w, j->b);
        else norm_row_f32(j->p, buf, j->n, j->center, (float)j->eps, j->w, j->b);
        afo_cpu_store_row(j->ct, buf, j->n, j->out->dtype, (char *)afo_array_ptr(j->out) + r * j->n * (int64_t)os, 1);
    }
}

/* weight or bias (or ones/zeros when absent) as n compute-type values. */
static void load_affine(const afo_array *a, double fill, int64_t n, afo_ctype ct, void *buf) {
    if (a) {
        afo_cpu_load_row(a->dtype, afo_array_ptr(a), a->strides[0], n, ct, buf);
    } else {
        for (int64_t i = 0; i < n; i++) {
            if (ct == AFO_CT_F64) ((double *)buf)[i] = fill;
            else ((float *)buf)[i] = (float)fill;
        }
    }
}

afo_status afo_cpu_norm(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    const afo_array *x = in[0];
    int k = 1;
    const afo_array *w = a->i[AFO_NORM_I_HAS_WEIGHT] ? in[k++] : NULL;
    const afo_array *b = a->i[AFO_NORM_I_HAS_BIAS] ? in[k++] : NULL;
    norm_job j = {.x = x, .out = out, .n = x->shape[x->ndim - 1], .center = out->op == AFO_OP_LAYER_NORM,
                  .eps = a->f[AFO_NORM_F_EPS], .ct = afo_cpu_ctype_of(out->dtype) == AFO_CT_F64 ? AFO_CT_F64 : AFO_CT_F32,
                  .p = afo_nn_prims_best()};
    atomic_init(&j.failed, false);
    afo_row_iter_init(&j.rows, x);
    size_t bytes = (size_t)j.n * afo_cpu_ctype_size(j.ct);
    char *tables = call_tables(2 * bytes);
    if (tables) {
        load_affine(w, 1.0, j.n, j.ct, tables);
        load_affine(b, 0.0, j.n, j.ct, tables + bytes);
        j.w = tables;
        j.b = tables + bytes;
        afo_parallel_for(j.rows.rows, 16384 / j.n + 1, norm_rows, &j);
    }
    if (!tables || atomic_load(&j.failed))
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory for row buffers", afo_op_get(out->op)->name);
    return AFO_OK;
}

/* ------------------------------------------------------------ rope */

typedef struct rope_job {
    const afo_array *x;
    afo_array *out;
    afo_row_iter rows;
    int64_t L, D, half;
    bool traditional;
    afo_ctype ct;
    const void *cos, *sin; /* [L][half] compute-type tables */
    const afo_nn_prims *prims;
    atomic_bool failed;
} rope_job;

/* Pairs are (x[i*step], x[i*step + gap]): step 2, gap 1 for interleaved
 * pairs; step 1, gap half for rotated halves. */
#define ROTATE(T)                                                                                  \
    static void rotate_##T(T *x, int64_t half, bool traditional, const T *c, const T *s) {       \
        int64_t step = traditional ? 2 : 1, gap = traditional ? 1 : half;                          \
        for (int64_t i = 0; i < half; i++) {                                                       \
            T a = x[i * step], b = x[i * step + gap];                                              \
            x[i * step] = a * c[i] - b * s[i];                                                     \
            x[i * step + gap] = a * s[i] + b * c[i];                                               \
        }                                                                                          \
    }
ROTATE(float)
ROTATE(double)

/* float32 rows: the halves layout (transformers') through the SIMD prims */
static void rotate_f32(const afo_nn_prims *p, float *x, int64_t half, bool traditional, const float *c,
                       const float *s) {
    if (traditional) rotate_float(x, half, true, c, s);
    else p->rotate_halves(x, half, c, s);
}

static void rope_rows(void *ctx, int64_t begin, int64_t end) {
    rope_job *j = ctx;
    size_t cs = afo_cpu_ctype_size(j->ct), os = afo_dtype_size(j->out->dtype);
    int64_t stride = j->x->strides[j->x->ndim - 1];
    void *buf = scratch(&j->failed, (size_t)j->D * cs);
    if (!buf) return;
    for (int64_t r = begin; r < end; r++) {
        afo_cpu_load_row(j->x->dtype, elem(j->x, afo_row_iter_offset(&j->rows, r)), stride, j->D, j->ct, buf);
        int64_t t = (r % j->L) * j->half;
        if (j->ct == AFO_CT_F64)
            rotate_double(buf, j->half, j->traditional, (const double *)j->cos + t, (const double *)j->sin + t);
        else
            rotate_f32(j->prims, buf, j->half, j->traditional, (const float *)j->cos + t, (const float *)j->sin + t);
        afo_cpu_store_row(j->ct, buf, j->D, j->out->dtype, (char *)afo_array_ptr(j->out) + r * j->D * (int64_t)os, 1);
    }
}

afo_status afo_cpu_rope(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    const afo_array *x = in[0];
    int64_t dims = a->i[AFO_ROPE_I_DIMS];
    rope_job j = {.x = x, .out = out, .L = x->shape[x->ndim - 2], .D = x->shape[x->ndim - 1], .half = dims / 2,
                  .traditional = a->i[AFO_ROPE_I_TRADITIONAL] != 0,
                  .ct = afo_cpu_ctype_of(out->dtype) == AFO_CT_F64 ? AFO_CT_F64 : AFO_CT_F32,
                  .prims = afo_nn_prims_best()};
    atomic_init(&j.failed, false);
    size_t cs = afo_cpu_ctype_size(j.ct), entries = (size_t)(j.L * j.half);
    double *inv_freq = call_tables(sizeof(double) * (size_t)j.half + 2 * cs * entries);
    if (!inv_freq) return afo_error(AFO_ERR_OUT_OF_MEMORY, "rope: out of memory for the cos/sin tables");
    char *tables = (char *)(inv_freq + j.half); /* 8-byte aligned for either compute type */
    for (int64_t i = 0; i < j.half; i++)
        inv_freq[i] = a->i[AFO_ROPE_I_HAS_FREQS] ? 1.0 / afo_cpu_load_double(in[1]->dtype, elem(in[1], i * in[1]->strides[0]))
                                                 : pow(a->f[AFO_ROPE_F_BASE], -2.0 * (double)i / (double)dims);
    /* angles in double: positions reach 1e5+, where a float product loses
     * the low bits that decide the high-frequency rotations */
    double sign = a->i[AFO_ROPE_I_INVERSE] ? -1.0 : 1.0;
    int64_t offset = a->i[AFO_ROPE_I_OFFSET] + (a->i[AFO_ROPE_I_HAS_POSITION] ? afo_position_value(in[nin - 1]) : 0);
    for (int64_t l = 0; l < j.L; l++) {
        double pos = (double)(offset + l) * a->f[AFO_ROPE_F_SCALE];
        for (int64_t i = 0; i < j.half; i++) {
            double th = pos * inv_freq[i], c = cos(th), s = sign * sin(th);
            size_t e = (size_t)(l * j.half + i);
            if (j.ct == AFO_CT_F64) {
                ((double *)tables)[e] = c;
                ((double *)tables)[entries + e] = s;
            } else {
                ((float *)tables)[e] = (float)c;
                ((float *)tables)[entries + e] = (float)s;
            }
        }
    }
    j.cos = tables;
    j.sin = tables + entries * cs;
    afo_row_iter_init(&j.rows, x);
    afo_parallel_for(j.rows.rows, 16384 / j.D + 1, rope_rows, &j);
    if (atomic_load(&j.failed)) return afo_error(AFO_ERR_OUT_OF_MEMORY, "rope: out of memory for row buffers");
    return AFO_OK;
}

/* ------------------------------------------------------------ attention */

/* Work items are (batch, kv head, chunk of its query heads, query row). The
 * query heads of a chunk share one pass over the keys and values, so a GQA
 * decode step streams the KV cache once per kv head, not once per query
 * head. Scores live only in a per-thread [heads per item][Lk] buffer. */
typedef struct sdpa_job {
    const afo_array *q, *k, *v, *mask;
    afo_array *out;
    int64_t B, Hq, Hkv, Lq, Lk, D, Dv, G;
    int64_t first;        /* position of query 0: Lk - Lq (aligned to the end of the keys) unless given */
    int64_t hpi, chunks;  /* query heads per item, items per kv head */
    int64_t mstride[4];   /* mask strides over [B, Hq, Lq, Lk], 0 where broadcast */
    bool mask_bool, causal;
    int64_t window;
    double scale;
    afo_ctype ct;
    int kst, vst; /* primitives' storage type reading k/v rows in place, or -1 */
    const afo_nn_prims *p;
    float *kt;   /* prefill tiles: each (batch, kv head)'s keys transposed, [D][ktn] */
    float *vf;   /* and its values as float32 rows, [kth][Dv], unless they are float32 already */
    int64_t kth; /* the keys any query sees, [0, kth) (a cache's later slots are not read) */
    int64_t ktn; /* kth rounded up to 16, plus 16: a block from a window's first key reads 15 columns past */
    atomic_bool failed;
} sdpa_job;

/* s[t * Lk + x] = q_t . k_x for the item's heads t and the n rows from kbase
 * (element offset of row lo), read in place (rows a stride apart) or each
 * converted into tmp. */
static void scores_float(const sdpa_job *j, const float *qs, int64_t kbase, int64_t n, float *s, float *tmp) {
    const afo_array *k = j->k;
    if (j->kst >= 0) {
        j->p->dots[j->kst](qs, j->hpi, j->D, elem(k, kbase), k->strides[2], n, s, j->Lk);
        return;
    }
    for (int64_t x = 0; x < n; x++) {
        afo_cpu_load_row(k->dtype, elem(k, kbase + x * k->strides[2]), k->strides[3], j->D, AFO_CT_F32, tmp);
        j->p->dots[AFO_NN_F32](qs, j->hpi, j->D, tmp, 0, 1, s + x, j->Lk);
    }
}
/* acc[t] += sum_x s[t * Lk + x] v_x, v's rows as k's in scores_float. */
static void values_float(const sdpa_job *j, float *acc, const float *s, int64_t vbase, int64_t n, float *tmp) {
    const afo_array *v = j->v;
    if (j->vst >= 0) {
        j->p->axpys[j->vst](acc, j->hpi, j->Dv, s, j->Lk, elem(v, vbase), v->strides[2], n);
        return;
    }
    for (int64_t x = 0; x < n; x++) {
        afo_cpu_load_row(v->dtype, elem(v, vbase + x * v->strides[2]), v->strides[3], j->Dv, AFO_CT_F32, tmp);
        j->p->axpys[AFO_NN_F32](acc, j->hpi, j->Dv, s + x, j->Lk, tmp, 0, 1);
    }
}
/* A decode step's scores are a few thousand per kv head: the scalar loop
 * (one dependent maxss per score) took about a tenth of attention's time. */
static inline float max_float(const sdpa_job *j, const float *s, int64_t n) { return j->p->max(s, n); }
static inline float exp_sum_float(const sdpa_job *j, float *s, int64_t n, float max) {
    return j->p->exp_sum(s, n, max);
}
static void scores_double(const sdpa_job *j, const double *qs, int64_t kbase, int64_t n, double *s, double *tmp) {
    const afo_array *k = j->k;
    for (int64_t x = 0; x < n; x++) {
        afo_cpu_load_row(k->dtype, elem(k, kbase + x * k->strides[2]), k->strides[3], j->D, AFO_CT_F64, tmp);
        for (int64_t t = 0; t < j->hpi; t++) {
            double d = 0;
            for (int64_t i = 0; i < j->D; i++) d += qs[t * j->D + i] * tmp[i];
            s[t * j->Lk + x] = d;
        }
    }
}
static void values_double(const sdpa_job *j, double *acc, const double *s, int64_t vbase, int64_t n, double *tmp) {
    const afo_array *v = j->v;
    for (int64_t x = 0; x < n; x++) {
        afo_cpu_load_row(v->dtype, elem(v, vbase + x * v->strides[2]), v->strides[3], j->Dv, AFO_CT_F64, tmp);
        for (int64_t t = 0; t < j->hpi; t++)
            for (int64_t i = 0; i < j->Dv; i++) acc[t * j->Dv + i] += s[t * j->Lk + x] * tmp[i];
    }
}
static inline double max_double(const sdpa_job *j, const double *s, int64_t n) {
    (void)j;
    double m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = s[i] > m ? s[i] : m;
    return m;
}
static inline double exp_sum_double(const sdpa_job *j, double *s, int64_t n, double max) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (s[i] = exp(s[i] - max));
    return sum;
}

/* The keys query position pos sees: [*lo, *hi) (a window, causality). */
static void sdpa_visible(const sdpa_job *j, int64_t pos, int64_t *lo, int64_t *hi) {
    *lo = j->window > 0 && pos - j->window + 1 > 0 ? pos - j->window + 1 : 0;
    *hi = j->causal && pos + 1 < j->Lk ? pos + 1 : j->Lk;
}

/* Scratch per thread, in compute-type elements. */
static int64_t sdpa_scratch(const sdpa_job *j) {
    int64_t t = j->D > j->Dv ? j->D : j->Dv;
    t = t > j->Lk ? t : j->Lk;
    return j->hpi * (j->D + j->Lk + j->Dv + 1) + t;
}

#define SDPA_ITEMS(T)                                                                                   \
    static void sdpa_items_##T(sdpa_job *j, int64_t begin, int64_t end, T *ws) {                      \
        const int64_t D = j->D, Dv = j->Dv, Lk = j->Lk, hpi = j->hpi;                                  \
        const afo_array *q = j->q, *k = j->k, *v = j->v, *m = j->mask;                                 \
        T *qs = ws, *s = qs + hpi * D, *acc = s + hpi * Lk, *sum = acc + hpi * Dv, *tmp = sum + hpi;   \
        size_t os = afo_dtype_size(j->out->dtype);                                                     \
        for (int64_t it = begin; it < end; it++) {                                                     \
            int64_t i = it % j->Lq, r = it / j->Lq;                                                    \
            int64_t hq0 = (r / j->chunks % j->Hkv) * j->G + (r % j->chunks) * hpi;                     \
            int64_t hk = r / j->chunks % j->Hkv, b = r / j->chunks / j->Hkv;                           \
            int64_t lo, hi;                                                                            \
            sdpa_visible(j, j->first + i, &lo, &hi);                                                   \
            int64_t n = hi > lo ? hi - lo : 0;                                                         \
            for (int64_t t = 0; t < hpi; t++) {                                                        \
                int64_t off = b * q->strides[0] + (hq0 + t) * q->strides[1] + i * q->strides[2];       \
                afo_cpu_load_row(q->dtype, elem(q, off), q->strides[3], D, j->ct, qs + t * D);         \
                for (int64_t c = 0; c < D; c++) qs[t * D + c] *= (T)j->scale;                          \
            }                                                                                          \
            scores_##T(j, qs, b * k->strides[0] + hk * k->strides[1] + lo * k->strides[2], n, s, tmp);  \
            for (int64_t t = 0; m && t < hpi; t++) {                                                   \
                int64_t off = b * j->mstride[0] + (hq0 + t) * j->mstride[1] + i * j->mstride[2] +      \
                              lo * j->mstride[3];                                                      \
                afo_cpu_load_row(m->dtype, elem(m, off), j->mstride[3], n, j->ct, tmp);                \
                for (int64_t x = 0; x < n; x++)                                                        \
                    s[t * Lk + x] = j->mask_bool ? (tmp[x] != 0 ? s[t * Lk + x] : (T)-INFINITY)        \
                                                 : s[t * Lk + x] + tmp[x];                             \
            }                                                                                          \
            for (int64_t t = 0; t < hpi; t++) {                                                        \
                T *row = s + t * Lk, mx = max_##T(j, row, n);                                          \
                if (mx == (T)-INFINITY) { /* every key hidden: the row's output is zero */             \
                    for (int64_t x = 0; x < n; x++) row[x] = 0;                                        \
                    sum[t] = 0;                                                                        \
                } else {                                                                               \
                    sum[t] = exp_sum_##T(j, row, n, mx);                                               \
                }                                                                                      \
            }                                                                                          \
            memset(acc, 0, sizeof(T) * (size_t)(hpi * Dv));                                            \
            values_##T(j, acc, s, b * v->strides[0] + hk * v->strides[1] + lo * v->strides[2], n, tmp); \
            for (int64_t t = 0; t < hpi; t++) {                                                        \
                T inv = sum[t] > 0 ? (T)1 / sum[t] : 0;                                                \
                for (int64_t c = 0; c < Dv; c++) acc[t * Dv + c] *= inv;                               \
                char *dst = (char *)afo_array_ptr(j->out) +                                            \
                            (((b * j->Hq + hq0 + t) * j->Lq + i) * Dv) * (int64_t)os;                  \
                afo_cpu_store_row(j->ct, acc + t * Dv, Dv, j->out->dtype, dst, 1);                     \
            }                                                                                          \
        }                                                                                              \
    }
SDPA_ITEMS(float)
SDPA_ITEMS(double)

/* Prefill: a work item is (batch, kv head, tile of consecutive query
 * rows), all G heads of the group, so R = G * (64 / G) rows of q pass over
 * the keys together, a block of KB keys and values at a time in
 * flash-attention order (a running max and sum per row, the output
 * rescaled when the max moves). The keys are transposed first, once per
 * kv head, so that scores_t's tiles need no sums across lanes, and values
 * that are not float32 rows read in place are converted then, not once a
 * 4-row pass of axpys (a bfloat16 cache: 175 -> 191 GFLOP/s at 4096). */
enum { SDPA_TILE_ROWS = 64, SDPA_KEY_BLOCK = 128, SDPA_MIN_TILED_QUERIES = 16 };
#define SDPA_MAX_TRANSPOSED ((size_t)256 << 20) /* bytes of kt and vf; longer contexts go row by row */

static void sdpa_transpose_range(void *ctx, int64_t begin, int64_t end) {
    sdpa_job *j = ctx;
    const afo_array *k = j->k, *v = j->v;
    float *row = scratch(&j->failed, sizeof(float) * (size_t)j->D);
    if (!row) return;
    for (int64_t bh = begin; bh < end; bh++) {
        float *kt = j->kt + bh * j->D * j->ktn;
        const int64_t base = bh / j->Hkv * k->strides[0] + bh % j->Hkv * k->strides[1];
        for (int64_t x = 0; x < j->ktn; x++) {
            const bool key = x < j->kth;
            if (key)
                afo_cpu_load_row(k->dtype, elem(k, base + x * k->strides[2]), k->strides[3], j->D, AFO_CT_F32, row);
            for (int64_t c = 0; c < j->D; c++) kt[c * j->ktn + x] = key ? row[c] : 0.0f;
        }
        const int64_t vbase = bh / j->Hkv * v->strides[0] + bh % j->Hkv * v->strides[1];
        for (int64_t x = 0; j->vf && x < j->kth; x++)
            afo_cpu_load_row(v->dtype, elem(v, vbase + x * v->strides[2]), v->strides[3], j->Dv, AFO_CT_F32,
                             j->vf + (bh * j->kth + x) * j->Dv);
    }
}

static int64_t sdpa_tile_queries(const sdpa_job *j) {
    int64_t qt = SDPA_TILE_ROWS / j->G;
    return qt < 1 ? 1 : qt;
}

/* The tiles of a (batch, kv head) in an order whose halves (quarters...)
 * carry about equal work under a causal mask, 0, n-1, 1, n-2, ...:
 * afo_parallel_for hands each thread a contiguous range. */
static int64_t sdpa_tile_of(int64_t k, int64_t n) { return k % 2 == 0 ? k / 2 : n - 1 - k / 2; }

/* Keys [a, e) of a block's n visible to a row; the rest -inf. */
static void sdpa_hide(float *sr, int64_t n, int64_t a, int64_t e) {
    for (int64_t x = 0; x < a && x < n; x++) sr[x] = -INFINITY;
    for (int64_t x = e > 0 ? e : 0; x < n; x++) sr[x] = -INFINITY;
}

static void sdpa_tiles(sdpa_job *j, int64_t begin, int64_t end, void *ws) {
    const int64_t D = j->D, Dv = j->Dv, G = j->G, QT = sdpa_tile_queries(j), R = G * QT, KB = SDPA_KEY_BLOCK;
    const int64_t ntiles = (j->Lq + QT - 1) / QT;
    const afo_array *q = j->q, *v = j->v;
    int64_t *lo = ws, *hi = lo + R; /* each row's visible keys */
    float *qs = (float *)(hi + R), *s = qs + R * D, *acc = s + R * KB, *mx = acc + R * Dv, *sum = mx + R;
    const size_t os = afo_dtype_size(j->out->dtype);
    for (int64_t it = begin; it < end; it++) {
        const int64_t r = it / ntiles, hk = r % j->Hkv, b = r / j->Hkv;
        const int64_t i0 = sdpa_tile_of(it % ntiles, ntiles) * QT;
        const int64_t nq = j->Lq - i0 < QT ? j->Lq - i0 : QT, rows = nq * G;
        int64_t first_lo = j->Lk, last_hi = 0;
        for (int64_t qi = 0; qi < nq; qi++) {
            int64_t l, h;
            sdpa_visible(j, j->first + i0 + qi, &l, &h);
            for (int64_t t = 0; t < G; t++) {
                const int64_t row = qi * G + t;
                lo[row] = l, hi[row] = h, mx[row] = -INFINITY, sum[row] = 0;
                const int64_t off = b * q->strides[0] + (hk * G + t) * q->strides[1] + (i0 + qi) * q->strides[2];
                afo_cpu_load_row(q->dtype, elem(q, off), q->strides[3], D, AFO_CT_F32, qs + row * D);
                for (int64_t c = 0; c < D; c++) qs[row * D + c] *= (float)j->scale;
            }
            first_lo = l < first_lo ? l : first_lo;
            last_hi = h > last_hi ? h : last_hi;
        }
        memset(acc, 0, sizeof(float) * (size_t)(rows * Dv));
        const float *kt = j->kt + r * D * j->ktn;
        const int64_t vb = b * v->strides[0] + hk * v->strides[1];
        for (int64_t x0 = first_lo; x0 < last_hi; x0 += KB) {
            const int64_t n = last_hi - x0 < KB ? last_hi - x0 : KB, nk = (n + 15) / 16 * 16;
            j->p->scores_t(qs, rows, D, kt + x0, j->ktn, nk, s, KB);
            for (int64_t row = 0; row < rows; row++) {
                float *sr = s + row * KB;
                const int64_t a = lo[row] - x0, e = hi[row] - x0; /* the row's keys are [a, e) of the block */
                if (a >= n || e <= 0) { /* none: the row's weights are zero */
                    memset(sr, 0, sizeof(float) * (size_t)n);
                    continue;
                }
                if (a > 0 || e < n) sdpa_hide(sr, n, a, e);
                const float bm = j->p->max(sr, n), m = bm > mx[row] ? bm : mx[row];
                if (m == -INFINITY) { /* nothing visible yet: the row's weights are zero */
                    memset(sr, 0, sizeof(float) * (size_t)n);
                    continue;
                }
                const float rescale = expf(mx[row] - m);
                sum[row] = sum[row] * rescale + j->p->exp_sum(sr, n, m);
                mx[row] = m;
                if (rescale != 1.0f)
                    for (int64_t c = 0; c < Dv; c++) acc[row * Dv + c] *= rescale;
            }
            const void *vx = j->vf ? (const void *)(j->vf + (r * j->kth + x0) * Dv) : elem(v, vb + x0 * v->strides[2]);
            j->p->axpys[AFO_NN_F32](acc, rows, Dv, s, KB, vx, j->vf ? Dv : v->strides[2], n);
        }
        for (int64_t qi = 0; qi < nq; qi++)
            for (int64_t t = 0; t < G; t++) {
                const int64_t row = qi * G + t;
                const float inv = sum[row] > 0 ? 1.0f / sum[row] : 0.0f;
                for (int64_t c = 0; c < Dv; c++) acc[row * Dv + c] *= inv;
                const int64_t o = ((b * j->Hq + hk * G + t) * j->Lq + i0 + qi) * Dv;
                char *dst = (char *)afo_array_ptr(j->out) + o * (int64_t)os;
                afo_cpu_store_row(AFO_CT_F32, acc + row * Dv, Dv, j->out->dtype, dst, 1);
            }
    }
}

static void sdpa_tiles_range(void *ctx, int64_t begin, int64_t end) {
    sdpa_job *j = ctx;
    const int64_t R = j->G * sdpa_tile_queries(j);
    const size_t floats = (size_t)(R * (j->D + SDPA_KEY_BLOCK + j->Dv + 2));
    void *ws = scratch(&j->failed, 2 * sizeof(int64_t) * (size_t)R + sizeof(float) * floats);
    if (ws) sdpa_tiles(j, begin, end, ws);
}

static void sdpa_range(void *ctx, int64_t begin, int64_t end) {
    sdpa_job *j = ctx;
    void *ws = scratch(&j->failed, afo_cpu_ctype_size(j->ct) * (size_t)sdpa_scratch(j));
    if (!ws) return;
    if (j->ct == AFO_CT_F64) sdpa_items_double(j, begin, end, ws);
    else sdpa_items_float(j, begin, end, ws);
}

/* In-place reads need the storage type's primitives, float32 compute and
 * unit stride along the feature axis. */
static int in_place_st(const afo_array *a, afo_ctype ct) {
    return ct == AFO_CT_F32 && (a->strides[3] == 1 || a->shape[3] <= 1) ? afo_nn_st_of(a->dtype) : -1;
}

afo_status afo_cpu_sdpa(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    bool positioned = a->i[AFO_SDPA_I_HAS_POSITION];
    const afo_array *q = in[0], *k = in[1], *v = in[2], *m = nin > 3 + positioned ? in[3] : NULL;
    sdpa_job j = {.q = q, .k = k, .v = v, .mask = m, .out = out, .B = q->shape[0], .Hq = q->shape[1],
                  .Hkv = k->shape[1], .Lq = q->shape[2], .Lk = k->shape[2], .D = q->shape[3], .Dv = v->shape[3],
                  .mask_bool = m && m->dtype == AFO_BOOL, .causal = a->i[AFO_SDPA_I_CAUSAL] != 0,
                  .window = a->i[AFO_SDPA_I_WINDOW], .scale = a->f[AFO_SDPA_F_SCALE],
                  .ct = afo_cpu_ctype_of(out->dtype) == AFO_CT_F64 ? AFO_CT_F64 : AFO_CT_F32,
                  .p = afo_nn_prims_best()};
    atomic_init(&j.failed, false);
    j.G = j.Hq / j.Hkv;
    j.first = positioned ? afo_position_value(in[nin - 1]) : j.Lk - j.Lq;
    /* whole groups per item unless that leaves threads idle */
    j.hpi = j.B * j.Hkv * j.Lq >= 2 * (int64_t)afo_get_threads() ? j.G : 1;
    j.chunks = j.G / j.hpi;
    for (int d = 0; m && d < 4; d++) {
        int md = d - (4 - m->ndim);
        j.mstride[d] = md < 0 || m->shape[md] == 1 ? 0 : m->strides[md];
    }
    j.kst = in_place_st(k, j.ct);
    j.vst = in_place_st(v, j.ct);
    int64_t last_lo, last_hi; /* the keys the last query sees end where any query's do */
    sdpa_visible(&j, j.first + j.Lq - 1, &last_lo, &last_hi);
    j.kth = last_hi > 0 ? last_hi : 0;
    j.ktn = (j.kth + 15) / 16 * 16 + 16;
    const size_t kt_floats = (size_t)(j.B * j.Hkv * j.D * j.ktn),
                 vf_floats = j.vst == AFO_NN_F32 ? 0 : (size_t)(j.B * j.Hkv * j.kth * j.Dv),
                 bytes = sizeof(float) * (kt_floats + vf_floats);
    if (!m && j.p->scores_t && j.ct == AFO_CT_F32 && j.Lq >= SDPA_MIN_TILED_QUERIES && bytes <= SDPA_MAX_TRANSPOSED &&
        (j.kt = malloc(bytes ? bytes : 1))) {
        j.vf = vf_floats ? j.kt + kt_floats : NULL;
        const int64_t qt = sdpa_tile_queries(&j);
        afo_parallel_for(j.B * j.Hkv, 1, sdpa_transpose_range, &j);
        if (!atomic_load(&j.failed)) afo_parallel_for(j.B * j.Hkv * ((j.Lq + qt - 1) / qt), 1, sdpa_tiles_range, &j);
        free(j.kt);
    } else {
        int64_t items = j.B * j.Hkv * j.chunks * j.Lq, work = j.hpi * j.Lk * (j.D + j.Dv) + 1;
        afo_parallel_for(items, 32768 / work + 1, sdpa_range, &j);
    }
    if (atomic_load(&j.failed)) return afo_error(AFO_ERR_OUT_OF_MEMORY, "scaled_dot_product_attention: out of memory");
    return AFO_OK;
}
