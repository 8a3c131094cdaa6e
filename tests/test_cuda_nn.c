/* The CUDA matmul, rms_norm, layer_norm, rope and attention kernels against
 * the CPU backend's. Skips (exit 77) on machines without a GPU.
 *
 * matmul bounds are relative to sum_k |a||b| (what rounding errors scale
 * with; the result itself may cancel to near zero): two float32
 * accumulations differ far below 1e-5 of it (TF32 would be ~5e-4); half
 * results may round to neighbouring values, one ulp of their type. */
#include <stdbool.h>
#include <string.h>

#include "afo/afo.h"
#include "support/devcheck.h"
#include "support/test.h"

/* ------------------------------------------------------------ matmul */

typedef struct mm_case {
    int ta, tb;      /* inputs are stored transposed; multiply their swapaxes views */
    int step_a;      /* a is every other column of a wider array (no cuBLAS layout) */
    int absval;      /* build sum |a||b| in float64 instead */
} mm_case;

static afo_array *operand(afo_array *x, int transposed, int step, int absval) {
    afo_array *v = transposed ? afo_swapaxes(x, -1, -2) : afo_retain(x);
    if (step) {
        int nd = afo_array_ndim(v);
        int64_t start[AFO_MAX_DIMS] = {0}, stop[AFO_MAX_DIMS], st[AFO_MAX_DIMS];
        for (int d = 0; d < nd; d++) stop[d] = afo_array_shape(v)[d], st[d] = d == nd - 1 ? 2 : 1;
        afo_array *s = afo_slice(v, start, stop, st);
        afo_release(v);
        v = s;
    }
    if (absval) {
        afo_array *w = afo_astype(v, AFO_FLOAT64), *a = afo_abs(w);
        afo_release(v);
        afo_release(w);
        v = a;
    }
    return v;
}

static afo_array *build_mm(afo_array *const *in, void *ctx) {
    const mm_case *c = ctx;
    afo_array *a = operand(in[0], c->ta, c->step_a, c->absval), *b = operand(in[1], c->tb, 0, c->absval);
    afo_array *r = afo_matmul(a, b);
    afo_release(a);
    afo_release(b);
    return r;
}

static double *values_on(afo_device d, devcheck_fn fn, void *ctx, afo_array *const *in, int64_t *n,
                         afo_device *where) {
    afo_device before = afo_get_default_device();
    afo_set_default_device(d);
    afo_array *r = fn(in, ctx);
    afo_set_default_device(before);
    double *v = NULL;
    if (r && afo_eval1(r) == AFO_OK) {
        *n = afo_array_size(r);
        *where = afo_array_device(r);
        v = malloc(sizeof *v * (size_t)(*n ? *n : 1));
        if (afo_array_read(r, AFO_FLOAT64, v, sizeof *v * (size_t)*n) != AFO_OK) free(v), v = NULL;
    }
    afo_release(r);
    return v;
}

/* CUDA against CPU, |got - want| <= tol * sum|a||b| per element. */
static void check_mm(const char *what, mm_case c, afo_array *a, afo_array *b, double tol, int one_d) {
    afo_array *in[2] = {a, b};
    int64_t n = 0, n2 = 0, n3 = 0;
    afo_device dw, dg, ds;
    double *want = values_on(AFO_CPU, build_mm, &c, in, &n, &dw);
    double *got = values_on(AFO_CUDA, build_mm, &c, in, &n2, &dg);
    c.absval = 1;
    double *scale = values_on(AFO_CPU, build_mm, &c, in, &n3, &ds);
    CHECK_MSG(want && got && scale && n == n2 && n == n3, "%s: %s", what, afo_last_error());
    /* a 1-D operand's result is squeezed by a shape op, which may still run
     * on the CPU: then only the values are checked */
    CHECK_MSG(!got || dg == AFO_CUDA || one_d, "%s: ran on %s", what, afo_device_name(dg));
    double worst = 0;
    int64_t at = -1;
    for (int64_t i = 0; want && got && scale && i < n; i++) {
        double e = fabs(got[i] - want[i]) / (scale[i] > 0 ? scale[i] : 1);
        if (e > worst || isnan(e)) worst = e, at = i;
    }
    CHECK_MSG(!(worst > tol) && !isnan(worst), "%s: error %.3g of sum|a||b| at %lld (cuda %.9g, cpu %.9g), bound %.1g",
              what, worst, (long long)at, at >= 0 ? got[at] : 0.0, at >= 0 ? want[at] : 0.0, tol);
    free(want), free(got), free(scale);
}

static double mm_tol(afo_dtype t) {
    return t == AFO_FLOAT64 ? 1e-13 : t == AFO_FLOAT32 ? 1e-5 : t == AFO_FLOAT16 ? 1e-3 : 8e-3;
}

static const char *shape_str(int nd, const int64_t *s, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < nd && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)s[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* a [.., M, K] times b [.., K, N], each stored transposed when asked. */
static void mm(afo_dtype ta, afo_dtype tb, int na, const int64_t *sa, int nb, const int64_t *sb, mm_case c) {
    int64_t ea[AFO_MAX_DIMS], eb[AFO_MAX_DIMS];
    memcpy(ea, sa, sizeof(int64_t) * (size_t)na);
    memcpy(eb, sb, sizeof(int64_t) * (size_t)nb);
    if (c.step_a) ea[na - 1] *= 2;
    if (c.ta) ea[na - 1] = sa[na - 2], ea[na - 2] = sa[na - 1];
    if (c.tb) eb[nb - 1] = sb[nb - 2], eb[nb - 2] = sb[nb - 1];
    afo_array *a = devcheck_random(ta, na, ea, -1, 1), *b = devcheck_random(tb, nb, eb, -1, 1);
    char what[200], s1[64], s2[64];
    snprintf(what, sizeof what, "matmul %s%s x %s%s%s %s @ %s", afo_dtype_name(ta), c.ta ? "^T" : "",
             afo_dtype_name(tb), c.tb ? "^T" : "", c.step_a ? " (a strided)" : "", shape_str(na, sa, s1, sizeof s1),
             shape_str(nb, sb, s2, sizeof s2));
    check_mm(what, c, a, b, mm_tol(afo_promote_types(ta, tb)), na == 1 || nb == 1);
    afo_release(a);
    afo_release(b);
}

#define SH(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}

static void test_matmul(void) {
    afo_dtype dts[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16, AFO_FLOAT64};
    static const int64_t mkn[][3] = {{1, 1, 1}, {1, 64, 33}, {7, 13, 5}, {33, 65, 17}, {128, 256, 96},
                                     {1, 4096, 3}, {257, 129, 255}, {5, 1, 9},
                                     /* GEMV: K past one round of in-flight loads, not a multiple of it */
                                     {3, 1000, 37}, {1, 2056, 129}};
    for (int t = 0; t < 4; t++) {
        afo_dtype d = dts[t];
        for (size_t s = 0; s < sizeof mkn / sizeof mkn[0]; s++) {
            int64_t M = mkn[s][0], K = mkn[s][1], N = mkn[s][2];
            for (int tr = 0; tr < 4; tr++)
                mm(d, d, SH(M, K), SH(K, N), (mm_case){.ta = tr & 1, .tb = tr >> 1});
        }
        /* batched: a batch over a shared b (one folded GEMM), both batched,
         * broadcast on both sides (several strided-batched calls), transposed
         * weights as in x @ W^T, and an operand cuBLAS cannot read in place */
        mm(d, d, SH(3, 17, 9), SH(9, 11), (mm_case){0});
        mm(d, d, SH(2, 3, 1, 40), SH(40, 7), (mm_case){.tb = 1});
        mm(d, d, SH(4, 6, 8), SH(4, 8, 3), (mm_case){.ta = 1});
        mm(d, d, SH(2, 1, 5, 7), SH(1, 3, 7, 4), (mm_case){0});
        mm(d, d, SH(3, 1, 5, 7), SH(3, 2, 7, 4), (mm_case){.tb = 1});
        mm(d, d, SH(5, 7), SH(2, 3, 7, 6), (mm_case){.ta = 1});
        mm(d, d, SH(2, 9, 31), SH(31, 12), (mm_case){.step_a = 1});
    }
    /* operands of different float types, as the CPU op allows */
    mm(AFO_FLOAT32, AFO_BFLOAT16, SH(6, 48), SH(48, 10), (mm_case){.tb = 1});
    mm(AFO_BFLOAT16, AFO_FLOAT16, SH(2, 6, 48), SH(48, 10), (mm_case){0});
    mm(AFO_FLOAT16, AFO_FLOAT32, SH(9, 20), SH(20, 3), (mm_case){.ta = 1});
    /* K = 0 gives zeros; a 1-D operand a row or column */
    mm(AFO_FLOAT32, AFO_FLOAT32, SH(4, 0), SH(0, 3), (mm_case){0});
    mm(AFO_BFLOAT16, AFO_BFLOAT16, SH(64), SH(64, 19), (mm_case){0});
    mm(AFO_FLOAT32, AFO_FLOAT32, SH(3, 5, 64), SH(64), (mm_case){0});
}

/* ------------------------------------------------------------ norms */

typedef struct norm_case {
    int layer, has_w, has_b, transposed;
    float eps;
} norm_case;

static afo_array *build_norm(afo_array *const *in, void *ctx) {
    const norm_case *c = ctx;
    afo_array *x = c->transposed ? afo_swapaxes(in[0], 0, 1) : afo_retain(in[0]);
    afo_array *r = c->layer ? afo_layer_norm(x, c->has_w ? in[1] : NULL, c->has_b ? in[2] : NULL, c->eps)
                            : afo_rms_norm(x, c->has_w ? in[1] : NULL, c->eps);
    afo_release(x);
    return r;
}

/* Outputs are O(1): bounds are a few ulps of the output type. */
static double out_tol(afo_dtype t) {
    return t == AFO_FLOAT64 ? 1e-12 : t == AFO_FLOAT32 ? 2e-5 : t == AFO_FLOAT16 ? 2e-3 : 1.6e-2;
}

static void test_norms(void) {
    afo_dtype dts[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16, AFO_FLOAT64};
    static const int64_t shapes[][3] = {{3, 7, 64}, {2, 5, 4096}, {4, 1, 33}, {1, 3, 1}, {3, 2, 1024}, {2, 3, 8192}};
    char what[128];
    for (int t = 0; t < 4; t++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t D = shapes[s][2], wshape[1] = {D};
            for (int v = 0; v < 8; v++) {
                norm_case c = {.layer = v & 1, .has_w = (v >> 1) & 1, .has_b = (v & 1) && (v >> 2), .eps = 1e-5f,
                               .transposed = v == 6};
                if (!(v & 1) && v >> 2 && v != 6) continue;
                /* weights in another type than x, as models keep them */
                afo_array *in[3] = {devcheck_random(dts[t], 3, shapes[s], -3, 5),
                                    devcheck_random(t == 1 ? AFO_FLOAT32 : dts[t], 1, wshape, -2, 2),
                                    devcheck_random(dts[t], 1, wshape, -1, 1)};
                snprintf(what, sizeof what, "%s %s D=%lld%s%s%s", c.layer ? "layer_norm" : "rms_norm",
                         afo_dtype_name(dts[t]), (long long)D, c.has_w ? " weight" : "", c.has_b ? " bias" : "",
                         c.transposed ? " strided" : "");
                devcheck(what, AFO_CUDA, build_norm, &c, in, 3, out_tol(dts[t]), out_tol(dts[t]));
                devcheck_release(in, 3);
            }
        }
    }
}

/* ------------------------------------------------------------ fused pairs */

/* A decode step's pairs that the evaluator hands to one kernel: r + x W^T
 * (the residual) and rms_norm(x) W^T; `shared` makes the product's or the
 * norm's value needed elsewhere too, which must keep the pair apart. */
typedef struct fused_case {
    int norm, shared;
} fused_case;

static afo_array *build_fused(afo_array *const *in, void *ctx) {
    const fused_case *c = ctx;
    afo_array *wt = afo_transpose(in[1], NULL);
    afo_array *x = c->norm ? afo_rms_norm(in[0], in[2], 1e-5f) : afo_retain(in[0]);
    afo_array *y = afo_matmul(x, wt), *r;
    if (c->norm && c->shared) {
        afo_array *m = afo_mean(x, (int[]){-1}, 1, 1);
        r = afo_add(y, m);
        afo_release(m);
    } else if (c->norm) {
        r = afo_retain(y);
    } else {
        afo_array *sum = afo_add(in[2], y);
        r = c->shared ? afo_add(sum, y) : afo_retain(sum);
        afo_release(sum);
    }
    devcheck_release((afo_array *[]){wt, x, y}, 3);
    return r;
}

static void fused(afo_dtype t, int64_t rows, int64_t K, int64_t N, fused_case c, int64_t addend_size, bool expect) {
    int64_t xs[3] = {1, rows, K}, ws[2] = {N, K}, rs[3] = {1, rows, N};
    /* a residual away from 0, so that one left out or added twice shows
     * above the half types' rounding of sums of up to 64 terms of O(1) */
    afo_array *in[3] = {devcheck_random(t, 3, xs, -1, 1), devcheck_random(t, 2, ws, -1, 1),
                        c.norm ? devcheck_random(t, 1, &K, -2, 2)
                               : devcheck_random(t, addend_size == N ? 1 : 3, addend_size == N ? &N : rs, 2, 3)};
    char what[160];
    snprintf(what, sizeof what, "%s%s %s [%lld, %lld] x [%lld, %lld]^T%s", c.norm ? "rms_norm @ W^T" : "r + x @ W^T",
             c.shared ? " (value shared)" : "", afo_dtype_name(t), (long long)rows, (long long)K, (long long)N,
             (long long)K, addend_size == N ? " (r a vector)" : "");
    int64_t before = afo_fused_count();
    double tol = out_tol(t);
    devcheck(what, AFO_CUDA, build_fused, &c, in, 3, tol, tol * sqrt((double)K));
    CHECK_MSG((afo_fused_count() > before) == expect, "%s: %s as one kernel", what, expect ? "not" : "wrongly");
    devcheck_release(in, 3);
}

static void test_fused(void) {
    afo_dtype dts[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16};
    for (int t = 0; t < 3; t++) {
        afo_dtype d = dts[t];
        for (int norm = 0; norm < 2; norm++) {
            fused_case c = {.norm = norm};
            /* the streaming kernel of one row, 4096-wide as in 8B models */
            fused(d, 1, 4096, 4096, c, 0, true);
            fused(d, 1, 2048, 37, c, 0, true);
            /* rows the norm must not be folded into; K not a vector's multiple */
            fused(d, 3, 256, 40, c, 0, !norm);
            fused(d, 1, 1001, 19, c, 0, !norm);
            c.shared = 1;
            fused(d, 1, 512, 64, c, 0, false);
        }
        /* a residual laid out as the product, with fewer axes */
        fused(d, 1, 512, 64, (fused_case){0}, 64, true);
    }
}

/* ------------------------------------------------------------ rope */

typedef struct rope_case {
    int dims, traditional, with_freqs, strided, inverse;
    int64_t positions; /* 37 when 0; from 64 on, whole-row rotations take 16-byte vectors */
    float base, scale;
    int64_t offset;
} rope_case;

static afo_array *build_rope(afo_array *const *in, void *ctx) {
    const rope_case *c = ctx;
    /* strided: x is [B, L, H, D] viewed as [B, H, L, D], as split heads are */
    afo_array *x = c->strided ? afo_swapaxes(in[0], 1, 2) : afo_retain(in[0]);
    afo_array *r = afo_rope(x, c->dims, c->traditional, c->base, c->scale, c->offset, c->with_freqs ? in[1] : NULL);
    if (c->inverse && r) { /* the gradient rotates back: the inverse rope */
        afo_array *g = NULL;
        afo_status st = afo_vjp(r, in[2], &x, 1, &g);
        afo_release(r);
        r = st == AFO_OK ? g : NULL;
    }
    afo_release(x);
    return r;
}

static void test_rope(void) {
    afo_dtype dts[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16, AFO_FLOAT64};
    rope_case cases[] = {
        {.dims = 64, .base = 10000, .scale = 1},
        {.dims = 64, .traditional = 1, .base = 10000, .scale = 1, .offset = 7},
        {.dims = 32, .base = 500000, .scale = 1, .offset = 100000, .strided = 1},
        {.dims = 32, .traditional = 1, .base = 10000, .scale = 0.25f, .offset = 3},
        {.dims = 64, .with_freqs = 1, .scale = 1, .offset = 4095, .strided = 1},
        {.dims = 48, .with_freqs = 1, .traditional = 1, .scale = 1, .offset = 1},
        {.dims = 64, .base = 10000, .scale = 1, .offset = 12, .inverse = 1},
        {.dims = 16, .traditional = 1, .base = 10000, .scale = 1, .offset = 5, .inverse = 1, .strided = 1},
        {.dims = 64, .base = 10000, .scale = 1, .offset = 3, .positions = 70},
        {.dims = 64, .base = 500000, .scale = 1, .offset = 100000, .strided = 1, .positions = 70},
        {.dims = 64, .with_freqs = 1, .scale = 1, .offset = 4095, .inverse = 1, .positions = 70},
        {.dims = 32, .base = 10000, .scale = 1, .offset = 1, .positions = 70},
    };
    char what[160];
    for (int t = 0; t < 4; t++) {
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            rope_case *c = &cases[k];
            int64_t L = c->positions ? c->positions : 37;
            int64_t shape[4] = {2, c->strided ? L : 4, c->strided ? 4 : L, 64}, fs[1] = {c->dims / 2};
            int64_t gshape[4] = {2, 4, L, 64};
            /* frequencies as llama3-style scaled tables give them: positive, spread */
            afo_array *in[3] = {devcheck_random(dts[t], 4, shape, -2, 2), devcheck_random(AFO_FLOAT32, 1, fs, 1, 5000),
                                devcheck_random(dts[t], 4, gshape, -1, 1)};
            snprintf(what, sizeof what, "rope %s L=%lld dims=%d%s%s%s%s offset=%lld scale=%g", afo_dtype_name(dts[t]),
                     (long long)L, c->dims, c->traditional ? " traditional" : "", c->with_freqs ? " freqs" : "",
                     c->strided ? " strided" : "", c->inverse ? " inverse" : "", (long long)c->offset, c->scale);
            devcheck(what, AFO_CUDA, build_rope, c, in, 3, out_tol(dts[t]), out_tol(dts[t]));
            devcheck_release(in, 3);
        }
    }
}

/* ------------------------------------------------------------ attention */

typedef struct sdpa_case {
    int64_t B, Hq, Hkv, Lq, Lk, D;
    int causal, window, mask; /* mask: 0 none, 1 bool [Lq, Lk], 2 additive float [B, 1, Lq, Lk] */
    int cache;                /* k, v are a [B, Hkv, cap, D] cache sliced to Lk */
    int split_q;              /* q is [B, Lq, Hq, D] viewed as [B, Hq, Lq, D] */
} sdpa_case;

static afo_array *build_sdpa(afo_array *const *in, void *ctx) {
    const sdpa_case *c = ctx;
    afo_array *q = c->split_q ? afo_swapaxes(in[0], 1, 2) : afo_retain(in[0]);
    afo_array *k = c->cache ? afo_slice_axis(in[1], 2, 0, c->Lk) : afo_retain(in[1]);
    afo_array *v = c->cache ? afo_slice_axis(in[2], 2, 0, c->Lk) : afo_retain(in[2]);
    afo_array *r = afo_scaled_dot_product_attention(q, k, v, 1.0f / sqrtf((float)c->D), c->mask ? in[3] : NULL,
                                                    c->causal, c->window);
    devcheck_release((afo_array *[]){q, k, v}, 3);
    return r;
}

static void sdpa(afo_dtype t, sdpa_case c) {
    int64_t cap = c.cache ? c.Lk + 61 : c.Lk;
    int64_t qs[4] = {c.B, c.split_q ? c.Lq : c.Hq, c.split_q ? c.Hq : c.Lq, c.D}, ks[4] = {c.B, c.Hkv, cap, c.D};
    int64_t bm[2] = {c.Lq, c.Lk}, fm[4] = {c.B, 1, c.Lq, c.Lk};
    afo_array *in[4] = {devcheck_random(t, 4, qs, -2, 2), devcheck_random(t, 4, ks, -2, 2),
                        devcheck_random(t, 4, ks, -1, 1),
                        c.mask == 1 ? devcheck_random(AFO_BOOL, 2, bm, 0, 1.25)
                        : c.mask == 2 ? devcheck_random(AFO_FLOAT32, 4, fm, -4, 1)
                                      : NULL};
    char what[200];
    snprintf(what, sizeof what,
             "sdpa %s B=%lld Hq=%lld Hkv=%lld Lq=%lld Lk=%lld D=%lld%s window=%d%s%s%s", afo_dtype_name(t),
             (long long)c.B, (long long)c.Hq, (long long)c.Hkv, (long long)c.Lq, (long long)c.Lk, (long long)c.D,
             c.causal ? " causal" : "", c.window, c.mask == 1 ? " bool mask" : c.mask == 2 ? " float mask" : "",
             c.cache ? " cache view" : "", c.split_q ? " strided q" : "");
    /* outputs are averages of v in [-1, 1]: absolute bounds, plus one
     * rounding of a half type. The tensor-core kernel rounds the
     * probabilities to the half type (relative error u = 2^-8 for bfloat16,
     * 2^-11 for float16), which moves an average of v by at most u: the
     * absolute bound of a half type is 2u. */
    double rtol = t == AFO_FLOAT32 ? 1e-5 : t == AFO_FLOAT64 ? 1e-12 : t == AFO_FLOAT16 ? 1e-3 : 8e-3;
    double atol = t == AFO_FLOAT64 ? 1e-13 : t == AFO_FLOAT32 ? 2e-5 : t == AFO_FLOAT16 ? 1e-3 : 8e-3;
    devcheck(what, AFO_CUDA, build_sdpa, &c, in, c.mask ? 4 : 3, rtol, atol);
    devcheck_release(in, 4);
}

static void test_sdpa_prefill(void) {
    /* lengths around the 32-row / 32-key tiles, GQA ratios 1, 4 and 8 */
    static const int64_t lens[] = {1, 31, 33, 100, 1031};
    static const int64_t heads[][2] = {{4, 4}, {8, 2}, {8, 1}};
    for (int h = 0; h < 3; h++)
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
            for (int causal = 0; causal < 2; causal++)
                sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = heads[h][0], .Hkv = heads[h][1], .Lq = lens[l],
                                              .Lk = lens[l], .D = l % 2 ? 64 : 128, .causal = causal,
                                              .split_q = h == 1});
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 2, .Hq = 8, .Hkv = 2, .Lq = 257, .Lk = 257, .D = 128, .causal = 1});
    sdpa(AFO_FLOAT16, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 4, .Lq = 65, .Lk = 65, .D = 64, .causal = 1});
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 1, .Hq = 8, .Hkv = 4, .Lq = 300, .Lk = 300, .D = 256, .causal = 1});
    /* the head sizes of the fixtures and of phi-like models */
    static const int64_t dims[] = {8, 16, 32, 80, 96};
    for (int d = 0; d < 5; d++)
        sdpa(AFO_FLOAT32, (sdpa_case){.B = 2, .Hq = 4, .Hkv = 2, .Lq = 45, .Lk = 45, .D = dims[d], .causal = 1});
    /* sliding windows, masks (with causal, on their own), queries that
     * continue a cache (aligned to its end), a cache view */
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = 8, .Hkv = 2, .Lq = 200, .Lk = 200, .D = 64, .causal = 1, .window = 17});
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 2, .Lq = 90, .Lk = 90, .D = 128, .causal = 1, .window = 64});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 4, .Lq = 70, .Lk = 70, .D = 64, .window = 9});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 2, .Hq = 4, .Hkv = 2, .Lq = 50, .Lk = 77, .D = 64, .mask = 1});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 2, .Hq = 4, .Hkv = 2, .Lq = 50, .Lk = 50, .D = 64, .mask = 2, .causal = 1});
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 1, .Hq = 8, .Hkv = 1, .Lq = 40, .Lk = 40, .D = 128, .mask = 1, .causal = 1});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = 8, .Hkv = 2, .Lq = 7, .Lk = 300, .D = 128, .causal = 1, .cache = 1});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 2, .Lq = 40, .Lk = 20, .D = 32, .causal = 1});
    /* float64, as gradient checks run it */
    sdpa(AFO_FLOAT64, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 2, .Lq = 37, .Lk = 37, .D = 32, .causal = 1, .mask = 2});
    sdpa(AFO_FLOAT64, (sdpa_case){.B = 1, .Hq = 2, .Hkv = 2, .Lq = 1, .Lk = 500, .D = 128, .cache = 1});
}

/* float16/bfloat16 prefill with head size 64 or 128 (the tensor-core
 * kernel from 16 queries on): lengths around its 128-row / 32-key tiles, GQA
 * ratios 1 to 8, queries continuing a cache, windows, masks, batches,
 * strided q and cache views. */
static void test_sdpa_prefill_half(void) {
    static const int64_t lens[] = {1, 17, 63, 65, 257, 1000};
    static const int64_t heads[][2] = {{4, 4}, {8, 4}, {8, 2}, {8, 1}};
    for (int l = 0; l < 6; l++)
        for (int h = 0; h < 4; h++)
            for (int causal = 0; causal < 2; causal++)
                sdpa(l % 2 ? AFO_FLOAT16 : AFO_BFLOAT16,
                     (sdpa_case){.B = 1 + (h == 2), .Hq = heads[h][0], .Hkv = heads[h][1], .Lq = lens[l], .Lk = lens[l],
                                 .D = (l + h) % 2 ? 64 : 128, .causal = causal, .split_q = h == 1});
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 2, .Hq = 8, .Hkv = 2, .Lq = 100, .Lk = 300, .D = 128, .causal = 1, .cache = 1});
    sdpa(AFO_FLOAT16, (sdpa_case){.B = 1, .Hq = 32, .Hkv = 4, .Lq = 17, .Lk = 1000, .D = 64, .causal = 1, .cache = 1});
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 1, .Hq = 8, .Hkv = 8, .Lq = 200, .Lk = 200, .D = 64, .cache = 1});
    sdpa(AFO_BFLOAT16,
         (sdpa_case){.B = 1, .Hq = 8, .Hkv = 2, .Lq = 500, .Lk = 500, .D = 64, .causal = 1, .window = 100});
    sdpa(AFO_FLOAT16, (sdpa_case){.B = 2, .Hq = 4, .Hkv = 1, .Lq = 300, .Lk = 400, .D = 128, .causal = 1, .window = 70,
                                  .cache = 1});
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 4, .Lq = 130, .Lk = 130, .D = 128, .window = 9});
    sdpa(AFO_FLOAT16, (sdpa_case){.B = 2, .Hq = 4, .Hkv = 2, .Lq = 50, .Lk = 77, .D = 64, .mask = 1});
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 2, .Hq = 8, .Hkv = 2, .Lq = 70, .Lk = 70, .D = 128, .mask = 2, .causal = 1});
    /* more queries than keys: the first ones see none and output zeros */
    sdpa(AFO_FLOAT16, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 2, .Lq = 40, .Lk = 20, .D = 64, .causal = 1});
}

/* One query against a long cache: the keys are split over blocks
 * (chunks of whole 32-key tiles) and merged; lengths fall on and off the
 * chunk edges. */
static void test_sdpa_decode(void) {
    static const int64_t lens[] = {1, 100, 129, 1000, 4097, 8192};
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
        sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = 32, .Hkv = 8, .Lq = 1, .Lk = lens[l], .D = 128, .causal = 1,
                                      .cache = 1});
        sdpa(AFO_BFLOAT16, (sdpa_case){.B = 1, .Hq = 8, .Hkv = 8, .Lq = 1, .Lk = lens[l], .D = 64, .causal = 1,
                                       .cache = 1});
    }
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 2, .Hq = 16, .Hkv = 2, .Lq = 1, .Lk = 3000, .D = 128, .causal = 1, .cache = 1});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = 8, .Hkv = 2, .Lq = 1, .Lk = 4097, .D = 128, .causal = 1,
                                  .window = 1000, .cache = 1});
    sdpa(AFO_FLOAT16, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 1, .Lq = 1, .Lk = 2049, .D = 256, .causal = 1, .cache = 1});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 2, .Lq = 1, .Lk = 999, .D = 64, .mask = 2});
    /* the decode kernel's group sizes (7 rounds up to 8), batches, windows */
    sdpa(AFO_BFLOAT16, (sdpa_case){.B = 1, .Hq = 28, .Hkv = 4, .Lq = 1, .Lk = 700, .D = 128, .causal = 1, .cache = 1});
    sdpa(AFO_FLOAT16, (sdpa_case){.B = 2, .Hq = 4, .Hkv = 2, .Lq = 1, .Lk = 65, .D = 64, .causal = 1, .cache = 1});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 3, .Hq = 6, .Hkv = 2, .Lq = 1, .Lk = 300, .D = 64, .causal = 1, .cache = 1});
    sdpa(AFO_BFLOAT16,
         (sdpa_case){.B = 1, .Hq = 8, .Hkv = 8, .Lq = 1, .Lk = 333, .D = 128, .causal = 1, .window = 9, .cache = 1});
    sdpa(AFO_FLOAT32, (sdpa_case){.B = 1, .Hq = 4, .Hkv = 2, .Lq = 3, .Lk = 5000, .D = 64, .causal = 1, .cache = 1});
}

/* ------------------------------------------------------------ rope taken along */

/* A decode step's ropes taken along by their consumers: attention roping q
 * as it loads it, the key's cache write roping the key. q and k are heads
 * sliced out of a wider row, as a fused qkv product gives them; positions
 * are read on the device. `apart`: the rope evaluated first, on its own, the
 * result the fused kernel must give bit for bit. */
typedef struct roped_case {
    int64_t B, Hq, Hkv, Lk, D, L; /* L: positions a cache write takes */
    int dims, traditional, freqs, apart;
} roped_case;

/* heads [first, first + n) of row [B, L, H, D] as [B, n, L, D] */
static afo_array *heads_of(afo_array *row, int64_t first, int64_t n) {
    afo_array *sliced = afo_slice_axis(row, 2, first, first + n), *x = afo_swapaxes(sliced, 1, 2);
    afo_release(sliced);
    return x;
}

/* heads [0, n) of in [B, L, n + 2, D] as [B, n, L, D], roped at in[2]'s position */
static afo_array *roped_heads(afo_array *const *in, const roped_case *c, int64_t n) {
    afo_array *x = heads_of(in[0], 0, n);
    afo_array *r = afo_rope_at(x, c->dims, c->traditional, 10000.0f, 1.0f, in[2], c->freqs ? in[3] : NULL);
    afo_release(x);
    if (r && c->apart) CHECK_MSG(afo_eval1(r) == AFO_OK, "rope: %s", afo_last_error());
    return r;
}

/* in: q's row [B, 1, Hq + 2, D], keys, values [B, Hkv, cap, D], position, frequencies */
static afo_array *build_roped_sdpa(afo_array *const *in, void *ctx) {
    const roped_case *c = ctx;
    afo_array *q = roped_heads(in, c, c->Hq);
    afo_array *r = q ? afo_scaled_dot_product_attention_at(q, in[1], in[4], 1.0f / sqrtf((float)c->D), NULL, 0, in[2])
                     : NULL;
    afo_release(q);
    return r;
}

/* in: the keys' rows [B, L, Hkv + 2, D], the cache [B, Hkv, cap, D], position, frequencies */
static afo_array *build_roped_write(afo_array *const *in, void *ctx) {
    const roped_case *c = ctx;
    afo_array *k = roped_heads(in, c, c->Hkv);
    afo_array *r = k ? afo_slice_update_at(in[1], k, 2, in[2]) : NULL;
    afo_release(k);
    return r;
}

static void roped(const char *kind, devcheck_fn fn, afo_dtype t, roped_case c, afo_array *const *in, bool expect) {
    char what[200];
    snprintf(what, sizeof what, "%s %s B=%lld Hq=%lld Hkv=%lld Lk=%lld D=%lld L=%lld dims=%d%s%s", kind,
             afo_dtype_name(t), (long long)c.B, (long long)c.Hq, (long long)c.Hkv, (long long)c.Lk, (long long)c.D,
             (long long)c.L, c.dims, c.traditional ? " traditional" : "", c.freqs ? " freqs" : "");
    double rtol = t == AFO_FLOAT32 ? 1e-5 : t == AFO_FLOAT16 ? 1e-3 : 8e-3;
    int64_t before = afo_fused_count();
    devcheck(what, AFO_CUDA, fn, &c, in, 5, rtol, rtol + (t == AFO_FLOAT32 ? 1e-5 : 0));
    CHECK_MSG((afo_fused_count() > before) == expect, "%s: %s as one kernel", what, expect ? "not" : "wrongly");
    afo_device was = afo_get_default_device();
    afo_set_default_device(AFO_CUDA);
    roped_case apart = c;
    apart.apart = 1;
    afo_array *fused = fn(in, &c), *ref = fn(in, &apart);
    afo_set_default_device(was);
    devcheck_same(what, AFO_CUDA, ref, fused);
    devcheck_release((afo_array *[]){fused, ref}, 2);
}

static void roped_cases(afo_dtype t, roped_case c, int32_t pos, bool expect) {
    const bool write = c.L > 0;
    const int64_t cap = c.Lk + 70, rows = write ? c.Hkv : c.Hq, L = write ? c.L : 1;
    int64_t xs[4] = {c.B, L, rows + 2, c.D}, cs[4] = {c.B, c.Hkv, cap, c.D}, one = 1, fs = c.dims / 2;
    afo_array *in[5] = {devcheck_random(t, 4, xs, -2, 2), devcheck_random(t, 4, cs, -2, 2),
                        afo_array_from_data(&pos, AFO_INT32, 1, &one), devcheck_random(AFO_FLOAT32, 1, &fs, 1, 5000),
                        devcheck_random(t, 4, cs, -1, 1)};
    roped(write ? "cache write <- rope" : "attention <- rope of q", write ? build_roped_write : build_roped_sdpa, t, c,
          in, expect);
    devcheck_release(in, 5);
}

static void test_roped(void) {
    /* Llama-3.1-8B's heads with its scaled frequencies; TinyLlama-like
     * 64-wide heads; a long context (the splits' global merge); float32
     * (the SIMT kernel) */
    roped_cases(AFO_BFLOAT16, (roped_case){.B = 1, .Hq = 32, .Hkv = 8, .Lk = 577, .D = 128, .dims = 128, .freqs = 1},
                576, true);
    roped_cases(AFO_FLOAT16, (roped_case){.B = 1, .Hq = 32, .Hkv = 4, .Lk = 100, .D = 64, .dims = 64}, 99, true);
    roped_cases(AFO_BFLOAT16, (roped_case){.B = 2, .Hq = 28, .Hkv = 4, .Lk = 5000, .D = 128, .dims = 128}, 4999, true);
    roped_cases(AFO_FLOAT32, (roped_case){.B = 1, .Hq = 8, .Hkv = 2, .Lk = 300, .D = 128, .dims = 128, .freqs = 1},
                299, true);
    roped_cases(AFO_FLOAT32, (roped_case){.B = 1, .Hq = 4, .Hkv = 4, .Lk = 33, .D = 64, .dims = 64}, 32, true);
    /* ropes the decode kernel does not take: apart, as before */
    roped_cases(AFO_BFLOAT16, (roped_case){.B = 1, .Hq = 8, .Hkv = 2, .Lk = 200, .D = 128, .dims = 128, .traditional = 1},
                199, false);
    roped_cases(AFO_BFLOAT16, (roped_case){.B = 1, .Hq = 8, .Hkv = 2, .Lk = 200, .D = 128, .dims = 64}, 199, false);
    /* the key written at its position: one key, a prefill's 70 (the
     * vectorized rope), traditional and partial ropes, float32 */
    roped_cases(AFO_BFLOAT16, (roped_case){.B = 1, .Hkv = 8, .Lk = 577, .D = 128, .L = 1, .dims = 128, .freqs = 1}, 576,
                true);
    roped_cases(AFO_FLOAT16, (roped_case){.B = 2, .Hkv = 4, .Lk = 80, .D = 64, .L = 70, .dims = 64}, 5, true);
    roped_cases(AFO_BFLOAT16, (roped_case){.B = 1, .Hkv = 2, .Lk = 40, .D = 64, .L = 1, .dims = 32, .traditional = 1},
                39, true);
    roped_cases(AFO_FLOAT32, (roped_case){.B = 1, .Hkv = 2, .Lk = 40, .D = 128, .L = 3, .dims = 128, .freqs = 1}, 17,
                true);
    /* a position past the end: slice_update_at's clamp */
    roped_cases(AFO_BFLOAT16, (roped_case){.B = 1, .Hkv = 2, .Lk = 40, .D = 64, .L = 1, .dims = 64}, 5000, true);
}

/* ------------------------------------------- a decode step's cache writes taken along */

/* A decode step's attention as the KV cache builds it: q, k and v heads of
 * one row (a fused qkv product's), k roped and written into the key cache
 * at the position, v into the value cache (slice_update_at: results the
 * cache keeps), attention over both caches. On CUDA the decode kernel
 * writes the two slots itself; its output and the caches it leaves must
 * equal bit for bit those of the writes run first (`apart`), and the CPU's
 * within the attention tests' bounds. */
typedef struct step_case {
    int64_t B, Hq, Hkv, cap, D, window;
    int freqs, traditional;
    int shared_cache;  /* the caller holds the key cache too: no update in place */
    int host_position; /* the position and frequencies on the host (as the rope of k, a chain's tail, sees them) */
    int unsettled;     /* the caches' copies still queued when the step runs: keys read only after the wait */
    int ring;          /* a full rotating cache's step: ropes at a constant offset, the slot written with
                          slice_update, attention without a position or mask over every slot */
    int values_read;   /* the graph reads the value write elsewhere too: neither write comes along */
    int32_t pos;       /* set by step_cases */
} step_case;

typedef struct step_result {
    afo_array *out, *keys, *values;
    int64_t fused; /* ops computed along */
} step_result;

/* heads [first, first + n) of row [B, 1, H, D] as [B, n, 1, D], roped at *pos when asked */
static afo_array *step_heads(afo_array *const *in, const step_case *c, int64_t first, int64_t n, afo_array *pos,
                             afo_array *freqs) {
    afo_array *x = heads_of(in[0], first, n), *f = c->freqs ? freqs : NULL;
    if (!pos) return x;
    afo_array *r = c->ring ? afo_rope(x, (int)c->D, c->traditional, 10000.0f, 1.0f, c->pos, f)
                           : afo_rope_at(x, (int)c->D, c->traditional, 10000.0f, 1.0f, pos, f);
    afo_release(x);
    return r;
}

/* in: row, keys, values [B, Hkv, cap, D], position, frequencies */
static step_result decode_step(afo_device d, afo_array *const *in, const step_case *c, bool apart) {
    afo_device was = afo_get_default_device();
    afo_set_default_device(d);
    step_result s = {NULL, NULL, NULL, afo_fused_count()};
    /* the caches (and, as a decode step has them, position and frequencies) made on d */
    afo_array *kc = afo_contiguous(in[1]), *vc = afo_contiguous(in[2]),
              *pos = c->host_position ? afo_retain(in[3]) : afo_contiguous(in[3]),
              *freqs = c->host_position ? afo_retain(in[4]) : afo_contiguous(in[4]), *made[4] = {kc, vc, pos, freqs};
    CHECK(afo_eval(made, 4) == AFO_OK);
    if (!c->unsettled) CHECK(afo_synchronize(d) == AFO_OK); /* as a decode step finds its caches */
    afo_array *q = step_heads(in, c, 0, c->Hq, pos, freqs), *k = step_heads(in, c, c->Hq, c->Hkv, pos, freqs),
              *v = step_heads(in, c, c->Hq + c->Hkv, c->Hkv, NULL, NULL);
    int64_t slot = c->pos % c->cap, start[4] = {0, 0, slot, 0}, stop[4] = {c->B, c->Hkv, slot + 1, c->D};
    s.keys = c->ring ? afo_slice_update(kc, k, start, stop, NULL) : afo_slice_update_at(kc, k, 2, pos);
    s.values = c->ring ? afo_slice_update(vc, v, start, stop, NULL) : afo_slice_update_at(vc, v, 2, pos);
    /* as a KV cache leaves them: the updates hold the caches and the new rows alone */
    devcheck_release((afo_array *[]){k, v, vc}, 3);
    if (!c->shared_cache) afo_release(kc), kc = NULL;
    if (apart) CHECK(afo_eval((afo_array *[]){s.keys, s.values}, 2) == AFO_OK);
    const float scale = 1.0f / sqrtf((float)c->D);
    s.out = c->ring ? afo_scaled_dot_product_attention(q, s.keys, s.values, scale, NULL, 0, 0)
                    : afo_scaled_dot_product_attention_at(q, s.keys, s.values, scale, NULL, (int)c->window, pos);
    afo_release(q);
    afo_array *elsewhere = c->values_read ? afo_add(s.values, s.values) : NULL, *roots[2] = {s.out, elsewhere};
    CHECK_MSG(s.out && afo_eval(roots, elsewhere ? 2 : 1) == AFO_OK, "decode step on %s: %s", afo_device_name(d),
              afo_last_error());
    afo_release(elsewhere);
    CHECK(afo_array_is_evaluated(s.keys) && afo_array_is_evaluated(s.values));
    s.fused = afo_fused_count() - s.fused;
    devcheck_release((afo_array *[]){kc, pos, freqs}, 3);
    afo_set_default_device(was);
    return s;
}

static void step_cases(afo_dtype t, step_case c, int32_t pos, bool expect) {
    c.pos = pos;
    char what[200];
    snprintf(what, sizeof what, "decode step %s B=%lld Hq=%lld Hkv=%lld cap=%lld D=%lld pos=%d window=%lld%s%s%s%s",
             afo_dtype_name(t), (long long)c.B, (long long)c.Hq, (long long)c.Hkv, (long long)c.cap, (long long)c.D,
             pos, (long long)c.window, c.traditional ? " traditional" : "", c.shared_cache ? " shared cache" : "",
             c.host_position ? " host position" : "",
             c.unsettled ? " unsettled" : c.ring ? " ring" : c.values_read ? " values read" : "");
    int64_t rs[4] = {c.B, 1, c.Hq + 2 * c.Hkv, c.D}, cs[4] = {c.B, c.Hkv, c.cap, c.D}, one = 1, fs = c.D / 2;
    afo_array *in[5] = {devcheck_random(t, 4, rs, -2, 2), devcheck_random(t, 4, cs, -2, 2),
                        devcheck_random(t, 4, cs, -1, 1), afo_array_from_data(&pos, AFO_INT32, 1, &one),
                        devcheck_random(AFO_FLOAT32, 1, &fs, 1, 5000)};
    step_result cpu = decode_step(AFO_CPU, in, &c, false), ref = decode_step(AFO_CUDA, in, &c, true);
    devcheck_poison_bytes(AFO_CUDA, afo_array_nbytes(ref.keys));
    step_result got = decode_step(AFO_CUDA, in, &c, false);
    /* taken along: q's rope, the key's write and its rope, the value's write */
    CHECK_MSG(got.fused - ref.fused == (expect ? 2 : 0), "%s: %lld ops computed along, %lld apart", what,
              (long long)got.fused, (long long)ref.fused);
    double rtol = t == AFO_FLOAT32 ? 1e-5 : t == AFO_FLOAT16 ? 1e-3 : 8e-3;
    const char *parts[3] = {"output", "keys", "values"};
    afo_array *want[3] = {cpu.out, cpu.keys, cpu.values}, *same[3] = {ref.out, ref.keys, ref.values},
              *mine[3] = {got.out, got.keys, got.values};
    for (int i = 0; i < 3; i++) {
        char part[240];
        snprintf(part, sizeof part, "%s: %s", what, parts[i]);
        devcheck_compare(part, AFO_CUDA, want[i], mine[i], rtol, rtol);
        devcheck_same(part, AFO_CUDA, same[i], mine[i]);
    }
    devcheck_release(want, 3), devcheck_release(same, 3), devcheck_release(mine, 3), devcheck_release(in, 5);
}

static void test_decode_step(void) {
    /* Llama-3.1-8B's heads; TinyLlama-like 64-wide ones; a long context
     * (more splits than a cluster); float32 (the SIMT kernel); a window; the
     * first position; a position past the cache (the writes' clamp) */
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 32, .Hkv = 8, .cap = 640, .D = 128, .freqs = 1}, 576, true);
    step_cases(AFO_FLOAT16, (step_case){.B = 1, .Hq = 32, .Hkv = 4, .cap = 170, .D = 64}, 99, true);
    step_cases(AFO_BFLOAT16, (step_case){.B = 2, .Hq = 28, .Hkv = 4, .cap = 5070, .D = 128}, 4999, true);
    step_cases(AFO_FLOAT32, (step_case){.B = 1, .Hq = 8, .Hkv = 2, .cap = 300, .D = 128, .freqs = 1}, 299, true);
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 8, .Hkv = 8, .cap = 400, .D = 128, .window = 9}, 333, true);
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 16, .Hkv = 4, .cap = 64, .D = 64}, 0, true);
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 8, .Hkv = 2, .cap = 110, .D = 64}, 5000, true);
    /* caches still being written when the step is queued: the keys read after the wait */
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 32, .Hkv = 8, .cap = 640, .D = 128, .freqs = 1, .unsettled = 1},
               576, true);
    step_cases(AFO_FLOAT16, (step_case){.B = 1, .Hq = 16, .Hkv = 4, .cap = 64, .D = 64, .unsettled = 1}, 0, true);
    /* the position and frequencies made on the host: seen through their copies on the GPU */
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 8, .Hkv = 2, .cap = 200, .D = 128, .freqs = 1, .host_position = 1},
               150, true);
    /* not taken: a rope the decode kernel does not apply, a cache that
     * cannot be updated in place */
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 8, .Hkv = 2, .cap = 200, .D = 128, .traditional = 1}, 150,
               false);
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 8, .Hkv = 2, .cap = 200, .D = 128, .shared_cache = 1}, 150,
               false);
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 8, .Hkv = 2, .cap = 200, .D = 128, .values_read = 1}, 150,
               false);
    /* a rotating cache's step (no position: v is the attention's last input) */
    step_cases(AFO_BFLOAT16, (step_case){.B = 1, .Hq = 8, .Hkv = 2, .cap = 200, .D = 128, .ring = 1}, 700, false);
}

int main(void) {
    if (!devcheck_available(AFO_CUDA)) return 77;
    RUN(test_matmul);
    RUN(test_norms);
    RUN(test_fused);
    RUN(test_rope);
    RUN(test_sdpa_prefill);
    RUN(test_sdpa_prefill_half);
    RUN(test_sdpa_decode);
    RUN(test_roped);
    RUN(test_decode_step);
    return test_finish();
}
