/* Fused nn ops (rms_norm, layer_norm, rope, scaled_dot_product_attention)
 * against float64 references written here as plain loops: dtypes, odd and
 * size-1 shapes, strided inputs, the SIMD primitives against the scalar
 * ones, gradients, and argument errors. AFO_TEST_SCALE shrinks the big
 * cases (ASan, qemu). */
#include <afo/afo.h>
#include <string.h>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/nn_kernels.h"
#include "core/internal.h"
#include "ops/decode_step.h"
#include "support/gradcheck.h"
#include "support/test.h"

static double g_scale = 1;
static int64_t scaled(int64_t n) {
    int64_t s = (int64_t)((double)n * g_scale);
    return s < 1 ? 1 : s;
}

static const afo_dtype k_float_types[4] = {AFO_FLOAT32, AFO_BFLOAT16, AFO_FLOAT16, AFO_FLOAT64};

/* Output error bound relative to the output's largest magnitude: rounding of
 * the result to the dtype plus float32 arithmetic. */
static double tol_of(afo_dtype t) {
    switch (t) {
    case AFO_FLOAT64: return 1e-12;
    case AFO_FLOAT32: return 2e-5;
    case AFO_FLOAT16: return 2e-3;
    default: return 1e-2;
    }
}

/* ------------------------------------------------------------ inputs */

/* An input of dtype `dt` and shape `shape` with its exact values (C order)
 * as doubles. layout 0: contiguous; 1: a transposed view (the last two
 * axes swapped from a base array); 2: every other element of a base twice
 * as long along the last axis; 3: the leading rows of a base longer along
 * the second-to-last axis (a KV cache slice). */
typedef struct tin {
    afo_array *a;
    double *v;
    int64_t n;
} tin;

static tin make_input(afo_dtype dt, int ndim, const int64_t *shape, int layout, double mean) {
    int64_t base_shape[AFO_MAX_DIMS];
    memcpy(base_shape, shape, sizeof(int64_t) * (size_t)ndim);
    if (layout == 1 && ndim >= 2) {
        base_shape[ndim - 1] = shape[ndim - 2];
        base_shape[ndim - 2] = shape[ndim - 1];
    } else if (layout == 2) {
        base_shape[ndim - 1] *= 2;
    } else if (layout == 3 && ndim >= 2) {
        base_shape[ndim - 2] += 5;
    }
    afo_array *r = test_randn(ndim, base_shape), *shift = afo_scalar(mean, AFO_FLOAT64);
    afo_array *r2 = afo_add(r, shift), *base = afo_astype(r2, dt);
    afo_eval1(base);
    afo_array *view;
    if (layout == 1 && ndim >= 2) {
        view = afo_swapaxes(base, -1, -2);
    } else if (layout == 3 && ndim >= 2) {
        view = afo_slice_axis(base, ndim - 2, 0, shape[ndim - 2]);
    } else if (layout == 2) {
        int64_t step[AFO_MAX_DIMS];
        for (int d = 0; d < ndim; d++) step[d] = d == ndim - 1 ? 2 : 1;
        view = afo_slice(base, NULL, NULL, step);
    } else {
        view = afo_retain(base);
    }
    afo_release(r), afo_release(shift), afo_release(r2), afo_release(base);
    tin t = {view, NULL, afo_array_size(view)};
    t.v = malloc(sizeof(double) * (size_t)(t.n ? t.n : 1));
    CHECK(afo_array_read(view, AFO_FLOAT64, t.v, sizeof(double) * (size_t)t.n) == AFO_OK);
    bool strided = (layout == 1 && ndim >= 2 && shape[ndim - 2] > 1 && shape[ndim - 1] > 1) ||
                   (layout == 2 && shape[ndim - 1] > 1);
    if (strided) CHECK(!view->contiguous);
    return t;
}

static void tin_free(tin *t) {
    afo_release(t->a);
    free(t->v);
    t->a = NULL;
    t->v = NULL;
}

/* max |y - ref| / max |ref| (NaN-aware: any NaN makes it infinite). */
static double rel_error(afo_array *y, const double *ref, int64_t n) {
    double *got = malloc(sizeof(double) * (size_t)(n ? n : 1)), scale = 1e-30, err = 0;
    if (!y || afo_array_read(y, AFO_FLOAT64, got, sizeof(double) * (size_t)n) != AFO_OK) {
        free(got);
        return INFINITY;
    }
    for (int64_t i = 0; i < n; i++) scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(got[i] - ref[i]);
        if (!(e <= err)) err = isnan(e) ? INFINITY : e;
    }
    free(got);
    return err / scale;
}

/* Leaves a NaN-filled buffer of y's size in the allocator cache, so that
 * elements a kernel forgets to write show up as NaN. */
static void poison_like(afo_dtype dt, int ndim, const int64_t *shape) {
    afo_array *p = afo_full(NAN, dt, ndim, shape);
    afo_eval1(p);
    afo_release(p);
}

/* ------------------------------------------------------------ references */

static void norm_ref(const double *x, int64_t rows, int64_t d, const double *w, const double *b, int center,
                     double eps, double *y) {
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * d;
        double mean = 0, var = 0;
        if (center) {
            for (int64_t i = 0; i < d; i++) mean += xr[i];
            mean /= (double)d;
        }
        for (int64_t i = 0; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= (double)d;
        for (int64_t i = 0; i < d; i++)
            y[r * d + i] = (xr[i] - mean) / sqrt(var + eps) * (w ? w[i] : 1.0) + (b ? b[i] : 0.0);
    }
}

typedef struct rope_cfg {
    int dims, traditional;
    double base, scale;
    int64_t offset;
    const double *freqs; /* NULL: from base */
} rope_cfg;

static void rope_ref(const double *x, int64_t rows, int64_t L, int64_t D, const rope_cfg *c, double *y) {
    memcpy(y, x, sizeof(double) * (size_t)(rows * D));
    int half = c->dims / 2;
    for (int64_t r = 0; r < rows; r++) {
        double pos = (double)(c->offset + r % L);
        for (int i = 0; i < half; i++) {
            double freq = c->freqs ? 1.0 / c->freqs[i] : 1.0 / pow((float)c->base, 2.0 * i / c->dims);
            double th = pos * (float)c->scale * freq;
            int64_t i0 = c->traditional ? 2 * i : i, i1 = c->traditional ? 2 * i + 1 : i + half;
            double a = x[r * D + i0], b = x[r * D + i1];
            y[r * D + i0] = a * cos(th) - b * sin(th);
            y[r * D + i1] = b * cos(th) + a * sin(th);
        }
    }
}

typedef struct sdpa_cfg {
    int64_t B, Hq, Hkv, Lq, Lk, D, Dv;
    int causal, window;
    int mask_kind; /* 0 none, 1 additive [B,Hq,Lq,Lk], 2 additive [Lq,Lk], 3 bool [B,1,Lq,Lk], 4 bool [Lk] */
    double scale;
} sdpa_cfg;

static int mask_shape(const sdpa_cfg *c, int64_t *s) {
    switch (c->mask_kind) {
    case 1: s[0] = c->B, s[1] = c->Hq, s[2] = c->Lq, s[3] = c->Lk; return 4;
    case 2: s[0] = c->Lq, s[1] = c->Lk; return 2;
    case 3: s[0] = c->B, s[1] = 1, s[2] = c->Lq, s[3] = c->Lk; return 4;
    case 4: s[0] = c->Lk; return 1;
    default: return 0;
    }
}

/* Index of mask element (b, h, i, j) broadcast from the mask's shape. */
static int64_t mask_index(const sdpa_cfg *c, int64_t b, int64_t h, int64_t i, int64_t j) {
    int64_t s[4], full[4] = {b, h, i, j}, idx = 0;
    int nd = mask_shape(c, s);
    for (int d = 0; d < nd; d++) idx = idx * s[d] + (s[d] == 1 ? 0 : full[4 - nd + d]);
    return idx;
}

static void sdpa_ref(const sdpa_cfg *c, const double *q, const double *k, const double *v, const double *m,
                     double *out) {
    double *s = malloc(sizeof(double) * (size_t)c->Lk);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->Hq; h++)
            for (int64_t i = 0; i < c->Lq; i++) {
                int64_t hk = h / (c->Hq / c->Hkv), pos = c->Lk - c->Lq + i;
                const double *qr = q + ((b * c->Hq + h) * c->Lq + i) * c->D;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < c->Lk; j++) {
                    int visible = (!c->causal || j <= pos) && (c->window <= 0 || j > pos - c->window);
                    double add = 0;
                    if (c->mask_kind >= 3) visible = visible && m[mask_index(c, b, h, i, j)] != 0;
                    else if (c->mask_kind) add = m[mask_index(c, b, h, i, j)];
                    const double *kr = k + ((b * c->Hkv + hk) * c->Lk + j) * c->D;
                    double dot = 0;
                    for (int64_t d = 0; d < c->D; d++) dot += qr[d] * kr[d];
                    s[j] = visible ? dot * (float)c->scale + add : -INFINITY; /* the API takes a float */
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int64_t j = 0; j < c->Lk; j++) sum += (s[j] = mx == -INFINITY ? 0 : exp(s[j] - mx));
                double *o = out + ((b * c->Hq + h) * c->Lq + i) * c->Dv;
                for (int64_t e = 0; e < c->Dv; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < c->Lk; j++)
                        acc += s[j] * v[((b * c->Hkv + hk) * c->Lk + j) * c->Dv + e];
                    o[e] = sum > 0 ? acc / sum : 0;
                }
            }
    free(s);
}

/* ------------------------------------------------------------ running cases */

enum { OP_RMS, OP_LAYER, OP_ROPE, OP_SDPA };
typedef struct op_case {
    int op;
    afo_array *in[4]; /* x/q, weight/freqs/k, bias/v, mask; NULL where absent */
    float eps;
    rope_cfg rope;
    sdpa_cfg sdpa;
    int slots[4], nslots; /* for gradients: which of in[] the inputs replace */
} op_case;

static afo_array *build(const op_case *c, afo_array *const *in) {
    switch (c->op) {
    case OP_RMS: return afo_rms_norm(in[0], in[1], c->eps);
    case OP_LAYER: return afo_layer_norm(in[0], in[1], in[2], c->eps);
    case OP_ROPE:
        return afo_rope(in[0], c->rope.dims, c->rope.traditional, (float)c->rope.base, (float)c->rope.scale,
                        c->rope.offset, in[1]);
    default:
        return afo_scaled_dot_product_attention(in[0], in[1], in[2], (float)c->sdpa.scale, in[3], c->sdpa.causal,
                                                c->sdpa.window);
    }
}

static afo_array *build_with(afo_array *const *inputs, int n, void *ud) {
    const op_case *c = ud;
    afo_array *in[4];
    memcpy(in, c->in, sizeof in);
    for (int i = 0; i < n; i++) in[c->slots[i]] = inputs[i];
    return build(c, in);
}

/* Evaluates the case at the best kernel level and at the scalar level, each
 * into a NaN-poisoned buffer, against the float64 reference. */
static void check_case(const char *what, const op_case *c, const double *ref, double tol) {
    afo_cpu_level best = afo_cpu_kernel_level(), levels[2] = {best, AFO_CPU_SCALAR};
    for (int l = 0; l < (best == AFO_CPU_SCALAR ? 1 : 2); l++) {
        afo_cpu_set_kernel_level(levels[l]);
        afo_array *y = build(c, c->in);
        CHECK_MSG(y != NULL, "%s: %s", what, afo_last_error());
        if (!y) break;
        poison_like(y->dtype, y->ndim, y->shape);
        double err = rel_error(y, ref, y->size);
        CHECK_MSG(err <= tol, "%s [%s]: error %.3g > %.3g", what, afo_cpu_level_name(levels[l]), err, tol);
        afo_release(y);
    }
    afo_cpu_set_kernel_level(best);
}

/* ------------------------------------------------------------ tests */

static void test_norms(void) {
    const int64_t dims[] = {1, 3, 17, 64, 80, 128};
    const int64_t leads[4][2] = {{0, 0}, {2, 3}, {1, 1}, {5, 1}}; /* {0,0}: x is 1-D */
    int cases = 0;
    for (int op = OP_RMS; op <= OP_LAYER; op++)
        for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
            for (int li = 0; li < 4; li++)
                for (int ti = 0; ti < 4; ti++) {
                    afo_dtype dt = k_float_types[ti];
                    int variant = (int)(di + li + ti) % (op == OP_RMS ? 2 : 4); /* which of weight/bias */
                    int has_w = variant & 1, has_b = op == OP_LAYER && variant >= 2;
                    int64_t shape[3], d = dims[di];
                    int nd = leads[li][0] ? 3 : 1;
                    if (nd == 3) shape[0] = leads[li][0], shape[1] = leads[li][1];
                    shape[nd - 1] = d;
                    int layout = nd == 1 ? (ti == 1 ? 2 : 0) : (int)(li + ti) % 3;
                    tin x = make_input(dt, nd, shape, layout, op == OP_LAYER ? 3.0 : 0.0);
                    afo_dtype wdt = d % 2 ? AFO_FLOAT32 : dt;
                    tin w = {0}, b = {0};
                    if (has_w) w = make_input(wdt, 1, &d, ti == 2 ? 2 : 0, 1.0);
                    if (has_b) b = make_input(wdt, 1, &d, 0, 0.0);
                    double *ref = malloc(sizeof(double) * (size_t)x.n);
                    norm_ref(x.v, x.n / d, d, w.v, b.v, op == OP_LAYER, (double)1e-5f, ref);
                    op_case c = {.op = op, .in = {x.a, w.a, b.a}, .eps = 1e-5f};
                    char what[128];
                    snprintf(what, sizeof what, "%s D=%lld nd=%d %s layout %d w%d b%d",
                             op == OP_RMS ? "rms_norm" : "layer_norm", (long long)d, nd, afo_dtype_name(dt), layout,
                             has_w, has_b);
                    check_case(what, &c, ref, tol_of(dt));
                    free(ref);
                    tin_free(&x), tin_free(&w), tin_free(&b);
                    cases++;
                }
    fprintf(stderr, "  %d norm cases\n", cases);
}

static void test_rope(void) {
    struct {
        int nd;
        int64_t shape[4];
        rope_cfg cfg;
        int with_freqs;
    } cases[] = {
        {4, {1, 2, 5, 64}, {64, 0, 10000, 1, 0, NULL}, 0},
        {4, {1, 2, 5, 64}, {64, 1, 10000, 1, 7, NULL}, 0},
        {4, {2, 1, 3, 80}, {64, 0, 10000, 1, 3, NULL}, 0},
        {4, {2, 3, 4, 17}, {16, 1, 500, 0.5, 0, NULL}, 0},
        {4, {1, 1, 1, 2}, {2, 0, 10000, 1, 0, NULL}, 0},
        {2, {6, 128}, {128, 0, 1e6, 1, 100000, NULL}, 0}, /* large positions */
        {3, {2, 9, 32}, {32, 0, 0, 1, 5, NULL}, 1},
        {3, {2, 9, 32}, {24, 1, 0, 2.0, 5, NULL}, 1},
        {3, {3, 1, 8}, {8, 1, 10000, 1, -2, NULL}, 0},
    };
    int n = 0;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        for (int ti = 0; ti < 4; ti++) {
            rope_cfg cfg = cases[k].cfg;
            afo_dtype dt = k_float_types[ti];
            int layout = (int)(k + ti) % 3;
            tin x = make_input(dt, cases[k].nd, cases[k].shape, layout, 0.0);
            int64_t half = cfg.dims / 2;
            afo_array *freqs = NULL;
            double fv[64];
            if (cases[k].with_freqs) {
                float f[64];
                for (int64_t i = 0; i < half; i++) f[i] = (float)(pow(1000.0, 2.0 * (double)i / cfg.dims) * (1 + 0.1 * (double)i));
                for (int64_t i = 0; i < half; i++) fv[i] = f[i];
                freqs = afo_array_from_data(f, AFO_FLOAT32, 1, &half);
                cfg.freqs = fv;
            }
            int64_t L = cases[k].shape[cases[k].nd - 2], D = cases[k].shape[cases[k].nd - 1];
            double *ref = malloc(sizeof(double) * (size_t)x.n);
            rope_ref(x.v, x.n / D, L, D, &cfg, ref);
            op_case c = {.op = OP_ROPE, .in = {x.a, freqs}, .rope = cfg};
            char what[128];
            snprintf(what, sizeof what, "rope case %zu %s layout %d", k, afo_dtype_name(dt), layout);
            /* float64 angles near 1e5 rad carry ~1e-11 rounding */
            check_case(what, &c, ref, dt == AFO_FLOAT64 ? 1e-10 : tol_of(dt));
            free(ref);
            afo_release(freqs);
            tin_free(&x);
            n++;
        }
    fprintf(stderr, "  %d rope cases\n", n);
}

/* Mask values for a case: additive ones random (row i = 0 all -inf for
 * mask kind 1 with Lq > 2), bool ones 70% true with row i = 1 all false. */
static tin make_mask(const sdpa_cfg *c) {
    int64_t s[4];
    int nd = mask_shape(c, s);
    tin m = make_input(AFO_FLOAT32, nd, s, 0, 0.0);
    int64_t lq = nd >= 2 ? s[nd - 2] : 1, lk = s[nd - 1];
    for (int64_t e = 0; e < m.n; e++) {
        int64_t i = e / lk % lq;
        if (c->mask_kind >= 3) m.v[e] = nd >= 2 && i == 1 ? 0 : test_uniform(0, 1) < 0.7;
        else if (c->mask_kind == 1 && c->Lq > 2 && i == 0) m.v[e] = -INFINITY;
        else m.v[e] *= 2;
    }
    afo_release(m.a);
    afo_array *f = afo_array_from_data(m.v, AFO_FLOAT64, nd, s);
    m.a = afo_astype(f, c->mask_kind >= 3 ? AFO_BOOL : AFO_FLOAT32);
    afo_release(f);
    return m;
}

static void test_sdpa(void) {
    sdpa_cfg cases[] = {
        /* B Hq Hkv Lq Lk D Dv causal window mask scale */
        {1, 8, 2, 1, 300, 64, 64, 0, 0, 0, 0.125},      /* decode, GQA 4 */
        {1, 4, 4, 1, 1000, 128, 128, 0, 0, 0, 0.0884}, /* decode, MHA */
        {2, 4, 2, 33, 33, 17, 9, 1, 0, 0, 0.25},        /* causal prefill, GQA 2 */
        {1, 4, 1, 7, 40, 80, 80, 1, 10, 0, 0.11},       /* chunked prefill, sliding window */
        {1, 2, 2, 5, 12, 3, 5, 0, 4, 0, 0.5},           /* window without causal */
        {2, 2, 1, 4, 6, 1, 2, 0, 0, 1, 1.0},            /* D = 1, full additive mask */
        {1, 4, 2, 6, 9, 16, 16, 1, 0, 2, 0.3},          /* additive [Lq, Lk] + causal */
        {2, 2, 2, 5, 8, 8, 8, 0, 0, 3, 0.3},            /* bool [B, 1, Lq, Lk], a hidden row */
        {1, 2, 1, 3, 7, 4, 4, 0, 0, 4, 0.3},            /* bool [Lk] */
        {1, 2, 2, 6, 4, 8, 8, 1, 0, 0, 0.3},            /* Lq > Lk: leading rows see nothing */
        {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1.0},
        {1, 2, 1, 3, 5, 8, 8, 0, 0, 1, 0.3},            /* additive, a row all -inf */
        /* longer prefills: GQA 8; MHA after a cache; GQA 3 with a window and
         * D not a multiple of 16; more queries than keys; a window without
         * causal, Dv != D */
        {1, 8, 1, 100, 100, 64, 64, 1, 0, 0, 0.125},
        {1, 4, 4, 70, 200, 128, 128, 1, 0, 0, 0.088},
        {2, 6, 2, 40, 40, 80, 80, 1, 24, 0, 0.11},
        {1, 2, 2, 20, 9, 16, 16, 1, 0, 0, 0.3},
        {1, 4, 2, 33, 130, 32, 48, 0, 40, 0, 0.2},
    };
    int n = 0;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        sdpa_cfg c = cases[k];
        if (c.Lk > 100) c.Lk = scaled(c.Lk);
        for (int ti = 0; ti < 6; ti++) {
            /* four uniform dtypes, then float32 q over bfloat16 / float16 k, v */
            afo_dtype qt = ti < 4 ? k_float_types[ti] : AFO_FLOAT32;
            afo_dtype kvt = ti < 4 ? qt : ti == 4 ? AFO_BFLOAT16 : AFO_FLOAT16;
            if (ti >= 4 && k > 1) continue;
            int layout = (int)(k + ti) % 4;
            int64_t qs[4] = {c.B, c.Hq, c.Lq, c.D}, ks[4] = {c.B, c.Hkv, c.Lk, c.D}, vs[4] = {c.B, c.Hkv, c.Lk, c.Dv};
            tin q = make_input(qt, 4, qs, layout, 0.0);
            tin kk = make_input(kvt, 4, ks, layout, 0.0), v = make_input(kvt, 4, vs, layout, 0.0);
            tin m = c.mask_kind ? make_mask(&c) : (tin){0};
            double *ref = malloc(sizeof(double) * (size_t)(c.B * c.Hq * c.Lq * c.Dv));
            sdpa_ref(&c, q.v, kk.v, v.v, m.v, ref);
            op_case oc = {.op = OP_SDPA, .in = {q.a, kk.a, v.a, m.a}, .sdpa = c};
            char what[160];
            /* prefills (the tiled path) at every kernel level, the rest at the best */
            const afo_cpu_level best = afo_cpu_kernel_level();
            for (int l = c.Lq >= 16 ? 0 : (int)best; l <= (int)best; l++) {
                if (afo_cpu_set_kernel_level((afo_cpu_level)l) != AFO_OK) continue;
                snprintf(what, sizeof what, "sdpa case %zu q %s kv %s layout %d level %s", k, afo_dtype_name(qt),
                         afo_dtype_name(kvt), layout, afo_nn_prims_best()->name);
                check_case(what, &oc, ref, tol_of(afo_promote_types(qt, kvt)));
            }
            afo_cpu_set_kernel_level(best);
            free(ref);
            tin_free(&q), tin_free(&kk), tin_free(&v), tin_free(&m);
            n++;
        }
    }
    fprintf(stderr, "  %d sdpa cases\n", n);
}

/* max |a - b| / (|b| + floor), NaN counting as infinite (equal
 * infinities agree). */
static double max_rel_diff(const float *a, const float *b, int n, double floor) {
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double e = a[i] == b[i] ? 0 : fabs((double)a[i] - b[i]) / (fabs(b[i]) + floor);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

/* The SIMD primitive table against the scalar one, over lengths that
 * exercise every tail. */
static void test_prims(void) {
    const afo_nn_prims *simd = afo_nn_prims_best(), *ref = &afo_nn_prims_scalar;
    fprintf(stderr, "  primitives: %s\n", simd->name);
    enum { N = 300 };
    float kf[N], w[N], b[N], a1[N], a2[N], s1[N], s2[N];
    const int64_t lens[] = {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 64, 100, 128, 257};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        int64_t n = lens[li];
        for (int i = 0; i < N; i++) {
            kf[i] = (float)test_normal();
            w[i] = (float)test_normal(), b[i] = (float)test_normal();
        }
        /* max exactly, NaN and -inf entries skipped */
        for (int i = 0; i < N; i++) s1[i] = i % 7 == 2 ? NAN : i % 5 == 3 ? -INFINITY : kf[i];
        float x1 = simd->max(s1, n), x2 = ref->max(s1, n);
        CHECK_MSG(x1 == x2, "max n %lld: %g, reference %g", (long long)n, x1, x2);
        /* exp_sum over scores <= max, with hidden (-inf) entries */
        for (int i = 0; i < N; i++) s1[i] = s2[i] = i % 5 == 3 ? -INFINITY : (float)test_uniform(-95, 3);
        float e1 = simd->exp_sum(s1, n, 3.0f), e2 = ref->exp_sum(s2, n, 3.0f);
        double worst = fmax(max_rel_diff(&e1, &e2, 1, 1e-30), max_rel_diff(s1, s2, N, 1e-30));
        CHECK_MSG(worst <= 2e-6, "exp_sum n %lld: error %.3g", (long long)n, worst);
        if (n > 0) { /* NaN propagates */
            for (int i = 0; i < N; i++) s1[i] = 0;
            s1[n - 1] = NAN;
            CHECK(isnan(simd->exp_sum(s1, n, 0.0f)));
        }
        double m1 = simd->sum(kf, n), m2 = ref->sum(kf, n), mag = 1e-30;
        for (int64_t i = 0; i < n; i++) mag += fabs(kf[i]);
        CHECK_MSG(fabs(m1 - m2) <= 1e-5 * mag, "sum n %lld", (long long)n);
        m1 = simd->sq_dev_sum(kf, n, 0.3f), m2 = ref->sq_dev_sum(kf, n, 0.3f);
        CHECK_MSG(fabs(m1 - m2) <= 1e-5 * (fabs(m2) + 1e-30), "sq_dev_sum n %lld", (long long)n);
        memcpy(a1, kf, sizeof a1), memcpy(a2, kf, sizeof a2);
        simd->norm_apply(a1, n, 0.3f, 1.7f, w, b), ref->norm_apply(a2, n, 0.3f, 1.7f, w, b);
        worst = max_rel_diff(a1, a2, N, 1);
        CHECK_MSG(worst <= 1e-6, "norm_apply n %lld: error %.3g", (long long)n, worst);
        /* rotate_halves on 2n features; the tail beyond 2n stays untouched */
        if (2 * n <= N) {
            for (int i = 0; i < N; i++) a1[i] = a2[i] = kf[i];
            for (int64_t i = 0; i < n; i++) s1[i] = cosf((float)i), s2[i] = sinf((float)i);
            simd->rotate_halves(a1, n, s1, s2), ref->rotate_halves(a2, n, s1, s2);
            worst = max_rel_diff(a1, a2, N, 1);
            CHECK_MSG(worst <= 1e-6, "rotate_halves n %lld: error %.3g", (long long)n, worst);
        }
    }
}

/* Attention's products (dots, axpys) of the SIMD table against the scalar
 * one: head counts, row lengths and row counts that exercise every tile and
 * tail, rows a stride apart. Bounds: dots |got - ref| <= 1e-5 sum |q k|
 * (float sums in another order, about n 2^-24 of the magnitudes); axpys
 * |got - ref| <= 1e-5 (|acc| + sum |p v|) per element (the same order, fused
 * or separate multiply-adds). */
static void check_attention_prims(void) {
    const afo_nn_prims *simd = afo_nn_prims_best(), *ref = &afo_nn_prims_scalar;
    enum { MAXQ = 12, MAXD = 136, MAXN = 131, STRIDE = MAXD + 5, LS = MAXN + 3 };
    static float q[MAXQ * MAXD], kf[MAXN * STRIDE], p[MAXQ * LS], s1[MAXQ * LS], s2[MAXQ * LS];
    static float a0[MAXQ * MAXD], a1[MAXQ * MAXD], a2[MAXQ * MAXD];
    static uint16_t kb[MAXN * STRIDE], kh[MAXN * STRIDE];
    for (int i = 0; i < MAXQ * MAXD; i++) q[i] = (float)test_normal(), a0[i] = (float)test_normal();
    for (int i = 0; i < MAXQ * LS; i++) p[i] = (float)test_uniform(0, 1);
    for (int i = 0; i < MAXN * STRIDE; i++) {
        kf[i] = (float)test_normal();
        kb[i] = afo_f32_to_bf16(kf[i]), kh[i] = afo_f32_to_f16(kf[i]);
    }
    const void *ks[AFO_NN_ST_COUNT] = {kf, kb, kh};
    const int64_t nqs[] = {1, 2, 3, 5, 8, 12}, Ds[] = {1, 7, 8, 16, 24, 64, 72, 80, 128, 136},
                  ns[] = {0, 1, 3, 4, 5, 63, 64, 65, 131};
    int cases = 0;
    for (size_t a = 0; a < sizeof nqs / sizeof *nqs; a++)
        for (size_t b = 0; b < sizeof Ds / sizeof *Ds; b++)
            for (size_t c = 0; c < sizeof ns / sizeof *ns; c++)
                for (int st = 0; st < AFO_NN_ST_COUNT; st++, cases++) {
                    int64_t nq = nqs[a], D = Ds[b], n = ns[c];
                    for (int i = 0; i < MAXQ * LS; i++) s1[i] = s2[i] = -1.0f;
                    simd->dots[st](q, nq, D, ks[st], STRIDE, n, s1, LS);
                    ref->dots[st](q, nq, D, ks[st], STRIDE, n, s2, LS);
                    memcpy(a1, a0, sizeof a1), memcpy(a2, a0, sizeof a2);
                    simd->axpys[st](a1, nq, D, p, LS, ks[st], STRIDE, n);
                    ref->axpys[st](a2, nq, D, p, LS, ks[st], STRIDE, n);
                    double worst_s = 0, worst_a = 0;
                    for (int64_t t = 0; t < MAXQ; t++)
                        for (int64_t x = 0; x < LS; x++) {
                            bool out = t < nq && x < n;
                            double mag = 1e-30;
                            for (int64_t i = 0; out && i < D; i++) mag += fabs(q[t * D + i] * kf[x * STRIDE + i]);
                            double e = fabs((double)s1[t * LS + x] - s2[t * LS + x]) / (out ? 1e-5 * mag : 1e-30);
                            worst_s = e > worst_s || isnan(e) ? e : worst_s;
                        }
                    for (int64_t t = 0; t < MAXQ; t++)
                        for (int64_t i = 0; i < D; i++) {
                            double mag = fabs(a0[t * D + i]) + 1e-30;
                            for (int64_t x = 0; t < nq && x < n; x++) mag += fabs(p[t * LS + x] * kf[x * STRIDE + i]);
                            double e = fabs((double)a1[t * D + i] - a2[t * D + i]) / (1e-5 * mag);
                            worst_a = e > worst_a || isnan(e) ? e : worst_a;
                        }
                    CHECK_MSG(worst_s <= 1, "[%s] dots st %d nq %lld D %lld n %lld: %.3g of the bound", simd->name, st,
                              (long long)nq, (long long)D, (long long)n, worst_s);
                    CHECK_MSG(worst_a <= 1, "[%s] axpys st %d nq %lld D %lld n %lld: %.3g of the bound", simd->name,
                              st, (long long)nq, (long long)D, (long long)n, worst_a);
                }
    /* scores_t against its reference: keys transposed with a row stride
     * past their count (16-multiples), outputs poisoned, the rows past nq
     * and the columns past nk untouched; bound 1e-5 of sum |q_i k_i| */
    static float kt[MAXD * (MAXN + 21)];
    const int64_t kts = MAXN + 21;
    for (int i = 0; simd->scores_t && i < MAXD * kts; i++) kt[i] = (float)test_normal();
    const int64_t tqs[] = {1, 5, 6, 7, 8, 9, 12}, tks[] = {16, 32, 48, 128};
    for (size_t a = 0; simd->scores_t && a < sizeof tqs / sizeof *tqs; a++)
        for (size_t b = 0; b < sizeof Ds / sizeof *Ds; b++)
            for (size_t c = 0; c < sizeof tks / sizeof *tks; c++, cases++) {
                const int64_t nq = tqs[a], D = Ds[b], nk = tks[c];
                for (int i = 0; i < MAXQ * LS; i++) s1[i] = s2[i] = NAN;
                simd->scores_t(q, nq, D, kt, kts, nk, s1, LS);
                afo_nn_scores_t_scalar(q, nq, D, kt, kts, nk, s2, LS);
                double worst = 0;
                for (int64_t t = 0; t < MAXQ; t++)
                    for (int64_t x = 0; x < LS; x++) {
                        const bool out = t < nq && x < nk;
                        double mag = 1e-30, e;
                        for (int64_t i = 0; out && i < D; i++) mag += fabs(q[t * D + i] * kt[i * kts + x]);
                        if (out) e = fabs((double)s1[t * LS + x] - s2[t * LS + x]) / (1e-5 * mag);
                        else e = isnan(s1[t * LS + x]) ? 0 : INFINITY; /* written past the tile */
                        worst = e > worst || isnan(e) ? e : worst;
                    }
                CHECK_MSG(worst <= 1, "[%s] scores_t nq %lld D %lld nk %lld: %.3g of the bound", simd->name,
                          (long long)nq, (long long)D, (long long)nk, worst);
            }
    fprintf(stderr, "  %s: %d attention primitive cases\n", simd->name, cases);
}

/* At every SIMD level the CPU runs. */
static void test_attention_prims(void) {
    afo_cpu_level saved = afo_cpu_kernel_level();
    for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++)
        if (afo_cpu_set_kernel_level((afo_cpu_level)l) == AFO_OK) check_attention_prims();
    afo_cpu_set_kernel_level(saved);
}

/* ------------------------------------------------------------ gradients */

static void grad_case(const char *name, op_case *c, afo_array *const *inputs, int n) {
    c->nslots = n;
    gradcheck(name, build_with, c, inputs, n, 1e-6, 1e-6);
}

static void test_grads(void) {
    int64_t xs[3] = {2, 3, 5}, d = 5;
    afo_array *x = test_randn(3, xs), *w = test_randn(1, &d), *b = test_randn(1, &d);
    op_case c = {.op = OP_RMS, .eps = 1e-5f, .slots = {0, 1, 2}};
    grad_case("rms_norm x, w", &c, (afo_array *[]){x, w}, 2);
    grad_case("rms_norm x", &c, &x, 1);
    c.op = OP_LAYER;
    grad_case("layer_norm x, w, b", &c, (afo_array *[]){x, w, b}, 3);
    grad_case("layer_norm x", &c, &x, 1);
    c.slots[1] = 2; /* bias without weight */
    grad_case("layer_norm x, b", &c, (afo_array *[]){x, b}, 2);

    int64_t rs[3] = {2, 3, 6}, half = 2;
    afo_array *xr = test_randn(3, rs);
    float fv[2] = {1.5f, 7.0f};
    afo_array *freqs = afo_array_from_data(fv, AFO_FLOAT32, 1, &half);
    op_case r = {.op = OP_ROPE, .rope = {4, 0, 100, 0.7, 3, NULL}, .slots = {0}};
    grad_case("rope half-split", &r, &xr, 1);
    r.rope.traditional = 1;
    grad_case("rope traditional", &r, &xr, 1);
    r.in[1] = freqs;
    grad_case("rope freqs", &r, &xr, 1);

    int64_t qs[4] = {1, 4, 3, 5}, ks[4] = {1, 2, 6, 5}, vs[4] = {1, 2, 6, 4}, ms[2] = {3, 6};
    afo_array *q = test_randn(4, qs), *k = test_randn(4, ks), *v = test_randn(4, vs), *m = test_randn(2, ms);
    op_case s = {.op = OP_SDPA, .sdpa = {.scale = 0.4}, .slots = {0, 1, 2, 3}};
    grad_case("sdpa q, k, v", &s, (afo_array *[]){q, k, v}, 3);
    s.sdpa.causal = 1, s.sdpa.window = 3;
    grad_case("sdpa causal window mask", &s, (afo_array *[]){q, k, v, m}, 4);
    /* bool mask hiding all of row 1; causal with Lq > Lk hides row 0 */
    uint8_t mb[6] = {1, 1, 0, 0, 1, 1};
    int64_t ks2[4] = {1, 2, 2, 5}, vs2[4] = {1, 2, 2, 4}, mbs[2] = {3, 2};
    afo_array *k2 = test_randn(4, ks2), *v2 = test_randn(4, vs2);
    afo_array *bm = afo_array_from_data(mb, AFO_BOOL, 2, mbs);
    op_case sb = {.op = OP_SDPA, .in = {NULL, NULL, NULL, bm}, .sdpa = {.scale = 0.4, .causal = 1}, .slots = {0, 1, 2}};
    grad_case("sdpa bool mask, hidden rows", &sb, (afo_array *[]){q, k2, v2}, 3);
    afo_release_n((afo_array *[]){x, w, b, xr, freqs, q, k, v, m, k2, v2, bm}, 12);
}

/* ------------------------------------------------------------ errors */

static void expect_error(afo_array *r, const char *a, const char *b) {
    CHECK_MSG(r == NULL, "expected an error mentioning '%s'", a);
    const char *e = afo_last_error();
    CHECK_MSG(strstr(e, a) && (!b || strstr(e, b)), "error '%s' should mention '%s' and '%s'", e, a, b ? b : "");
    afo_release(r);
}

static void test_errors(void) {
    int64_t xs[2] = {2, 4}, d5 = 5, d4 = 4, w2[2] = {1, 4};
    afo_array *x = afo_zeros(AFO_FLOAT32, 2, xs), *w5 = afo_zeros(AFO_FLOAT32, 1, &d5);
    afo_array *w4 = afo_zeros(AFO_FLOAT32, 1, &d4), *wm = afo_zeros(AFO_FLOAT32, 2, w2);
    afo_array *xi = afo_zeros(AFO_INT32, 2, xs);
    expect_error(afo_rms_norm(x, w5, 1e-5f), "rms_norm", "weight");
    expect_error(afo_rms_norm(x, wm, 1e-5f), "rms_norm", "weight");
    expect_error(afo_rms_norm(xi, NULL, 1e-5f), "rms_norm", "floating");
    expect_error(afo_layer_norm(x, w4, w5, 1e-5f), "layer_norm", "bias");
    expect_error(afo_layer_norm(x, NULL, w5, 1e-5f), "layer_norm", "bias");
    expect_error(afo_layer_norm(NULL, NULL, NULL, 1e-5f), "layer_norm", NULL);
    expect_error(afo_rope(x, 3, 0, 10000, 1, 0, NULL), "rope", "even");
    expect_error(afo_rope(x, 6, 0, 10000, 1, 0, NULL), "rope", "dims");
    expect_error(afo_rope(x, 4, 0, 10000, 1, 0, w4), "rope", "freqs");
    expect_error(afo_rope(w4, 4, 0, 10000, 1, 0, NULL), "rope", NULL);

    int64_t qs[4] = {1, 3, 2, 4}, ks[4] = {1, 2, 2, 4}, k5[4] = {1, 1, 2, 5}, ms[2] = {3, 3};
    afo_array *q = afo_zeros(AFO_FLOAT32, 4, qs), *k = afo_zeros(AFO_FLOAT32, 4, ks);
    afo_array *kd = afo_zeros(AFO_FLOAT32, 4, k5), *m = afo_zeros(AFO_FLOAT32, 2, ms);
    afo_array *mi = afo_zeros(AFO_INT32, 2, ms);
    const char *sd = "scaled_dot_product_attention";
    expect_error(afo_scaled_dot_product_attention(q, k, k, 1, NULL, 0, 0), sd, "multiple");
    expect_error(afo_scaled_dot_product_attention(q, kd, kd, 1, NULL, 0, 0), sd, "D");
    expect_error(afo_scaled_dot_product_attention(q, q, q, 1, m, 0, 0), sd, "mask");
    expect_error(afo_scaled_dot_product_attention(q, q, q, 1, mi, 0, 0), sd, "mask");
    expect_error(afo_scaled_dot_product_attention(q, q, q, 1, NULL, 1, -1), sd, "window");
    expect_error(afo_scaled_dot_product_attention(x, x, x, 1, NULL, 0, 0), sd, "[B, H, L, D]");
    expect_error(afo_scaled_dot_product_attention(q, NULL, q, 1, NULL, 0, 0), sd, NULL);
    afo_release_n((afo_array *[]){x, w5, w4, wm, xi, q, k, kd, m, mi}, 10);
}

/* decode_step's shape rule names the input at fault, and no device without
 * its kernel claims to run it (the model then takes the layer graph). */
static void test_decode_step_errors(void) {
    enum { L = 1, D = 1024, F = 2048, H = 8, K = 2, V = 64 };
    afo_step_shape s = {L, D, F, H, K, V, 16};
    const char *why = NULL;
    CHECK(!afo_decode_step_fits(AFO_CPU, &s, &why) && why && strstr(why, "no decode_step kernel"));
    int64_t xs[3] = {1, 1, D}, one = 1, nd = D, hw[2] = {V, D / 8}, hs[2] = {V, D / 64}, nf = 64;
    afo_array *x = afo_zeros(AFO_BFLOAT16, 3, xs), *pos = afo_zeros(AFO_INT32, 1, &one),
              *norm = afo_zeros(AFO_BFLOAT16, 1, &nd), *hw_ = afo_zeros(AFO_UINT32, 2, hw),
              *hsb = afo_zeros(AFO_BFLOAT16, 2, hs), *freqs = afo_zeros(AFO_FLOAT32, 1, &nf);
    afo_array *fixed[AFO_STEP_IN_FIXED] = {x, pos, norm, hw_, hsb, hsb, freqs};
    afo_array *layer[AFO_STEP_L_COUNT];
    for (int i = 0; i < AFO_STEP_L_COUNT; i++) layer[i] = norm; /* wrong from the qkv words on */
    afo_array *y = afo_decode_step(&s, fixed, NULL, layer, 1e-5, 0.088);
    CHECK(!y && strstr(afo_last_error(), "decode_step: qkv of layer 0 is bfloat16"));
    y = afo_decode_step(&s, fixed, norm, layer, 1e-5, 0.088);
    CHECK(!y && strstr(afo_last_error(), "decode_step: the pick must be one int32"));
    fixed[AFO_STEP_IN_FREQS] = norm;
    y = afo_decode_step(&s, fixed, NULL, layer, 1e-5, 0.088);
    CHECK(!y && strstr(afo_last_error(), "decode_step: rope frequencies of layer 0 is bfloat16"));
    fixed[AFO_STEP_IN_X] = norm; /* 1-D, but of D elements: fine; position of two dtypes is not */
    fixed[AFO_STEP_IN_POSITION] = norm;
    y = afo_decode_step(&s, fixed, NULL, layer, 1e-5, 0.088);
    CHECK(!y && strstr(afo_last_error(), "decode_step: position must be one int32"));
    fixed[AFO_STEP_IN_POSITION] = NULL;
    y = afo_decode_step(&s, fixed, NULL, layer, 1e-5, 0.088);
    CHECK(!y && strstr(afo_last_error(), "decode_step: input 1 is NULL"));
    afo_release_n((afo_array *[]){x, pos, norm, hw_, hsb, freqs}, 6);
}

int main(void) {
    const char *s = getenv("AFO_TEST_SCALE");
    if (s && atof(s) > 0) g_scale = atof(s);
    test_seed(7);
    RUN(test_prims);
    RUN(test_attention_prims);
    RUN(test_norms);
    RUN(test_rope);
    RUN(test_sdpa);
    RUN(test_errors);
    RUN(test_decode_step_errors);
    RUN(test_grads);
    return test_finish();
}
