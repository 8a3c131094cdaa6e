/* Gradient checks (float64 central differences) for the elementwise, shape
 * and reduction ops, and an MLP + softmax cross-entropy trained end to end. */
#include <afo/afo.h>
#include <string.h>

#include "support/gradcheck.h"
#include "support/test.h"

typedef afo_array *(*unary_op)(afo_array *);
typedef afo_array *(*binary_op)(afo_array *, afo_array *);

static afo_array *apply_unary(afo_array *const *in, int n, void *ud) { return ((unary_op)ud)(in[0]); }
static afo_array *apply_binary(afo_array *const *in, int n, void *ud) { return ((binary_op)ud)(in[0], in[1]); }

/* Inputs shifted away from kinks and domain edges (|x| in [0.2, 2]). */
static afo_array *safe_input(int ndim, const int64_t *shape, int positive) {
    afo_array *r = test_randn(ndim, shape);
    int64_t n = afo_array_size(r);
    double *v = malloc(sizeof(double) * (size_t)n);
    afo_array_read(r, AFO_FLOAT64, v, sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        double m = 0.2 + fmod(fabs(v[i]), 1.8);
        v[i] = positive || v[i] >= 0 ? m : -m;
    }
    afo_release(r);
    r = afo_array_from_data(v, AFO_FLOAT64, ndim, shape);
    free(v);
    return r;
}

static void test_unary_grads(void) {
    struct { const char *name; unary_op op; int positive; } ops[] = {
        {"neg", afo_neg, 0}, {"abs", afo_abs, 0}, {"exp", afo_exp, 0}, {"log", afo_log, 1},
        {"log1p", afo_log1p, 1}, {"sqrt", afo_sqrt, 1}, {"rsqrt", afo_rsqrt, 1}, {"square", afo_square, 0},
        {"tanh", afo_tanh, 0}, {"erf", afo_erf, 0}, {"sigmoid", afo_sigmoid, 0}, {"silu", afo_silu, 0},
        {"gelu", afo_gelu, 0}, {"gelu_tanh", afo_gelu_tanh, 0}, {"relu", afo_relu, 0}, {"sin", afo_sin, 0},
        {"cos", afo_cos, 0}, {"stop_gradient", afo_stop_gradient, 0},
    };
    int64_t shape[2] = {3, 5};
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        afo_array *x = safe_input(2, shape, ops[k].positive);
        if (ops[k].op == afo_stop_gradient) {
            afo_array *v = NULL, *g = NULL;
            afo_vjp((v = afo_stop_gradient(x)), NULL, &x, 1, &g);
            double s = 1;
            afo_array *gs = afo_sum(g, NULL, 0, 0);
            afo_array_item(gs, &s);
            CHECK_MSG(s == 0, "stop_gradient passes gradient %g", s);
            afo_release(v), afo_release(g), afo_release(gs);
        } else {
            gradcheck(ops[k].name, apply_unary, (void *)ops[k].op, &x, 1, 1e-6, 1e-6);
        }
        afo_release(x);
    }
}

static void test_binary_grads(void) {
    struct { const char *name; binary_op op; int positive; } ops[] = {
        {"add", afo_add, 0}, {"sub", afo_sub, 0}, {"mul", afo_mul, 0}, {"div", afo_div, 1}, {"swiglu", afo_swiglu, 0},
        {"maximum", afo_maximum, 0}, {"minimum", afo_minimum, 0}, {"pow", afo_pow, 1},
    };
    int64_t sa[3] = {2, 3, 4}, sb[2] = {1, 4}; /* b broadcasts */
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        afo_array *in[2] = {safe_input(3, sa, ops[k].positive), safe_input(2, sb, ops[k].positive)};
        gradcheck(ops[k].name, apply_binary, (void *)ops[k].op, in, 2, 1e-6, 1e-6);
        afo_release(in[0]);
        afo_release(in[1]);
    }
}

static afo_array *where_fn(afo_array *const *in, int n, void *ud) {
    afo_array *zero = afo_scalar(0, AFO_FLOAT64);
    afo_array *c = afo_greater(in[0], zero);
    afo_array *r = afo_where(c, in[0], in[1]);
    afo_release(zero), afo_release(c);
    return r;
}

typedef struct reduce_case { afo_array *(*op)(afo_array *, const int *, int, int); int axes[2]; int naxes; int keep; } reduce_case;
static afo_array *reduce_fn(afo_array *const *in, int n, void *ud) {
    reduce_case *c = ud;
    return c->op(in[0], c->axes, c->naxes, c->keep);
}
static afo_array *softmax_fn(afo_array *const *in, int n, void *ud) { return afo_softmax(in[0], *(int *)ud); }

static afo_array *shape_chain(afo_array *const *in, int n, void *ud) {
    /* transpose -> slice with step -> reshape -> broadcast -> concatenate -> slice_update */
    afo_array *t = afo_transpose(in[0], NULL);                         /* [4,3,2] */
    int64_t st[3] = {3, 0, 0}, sp[3] = {-5, 3, 2}, stp[3] = {-2, 1, 1};
    afo_array *s = afo_slice(t, st, sp, stp);                          /* [2,3,2] */
    int64_t rs[2] = {6, 2};
    afo_array *r = afo_reshape(s, 2, rs);
    int64_t bs[3] = {2, 6, 2};
    afo_array *b = afo_broadcast_to(r, 3, bs);
    afo_array *parts[2] = {b, b};
    afo_array *c = afo_concatenate(parts, 2, 1);                       /* [2,12,2] */
    int64_t u0[3] = {0, 2, 0}, u1[3] = {2, 4, 2};
    int64_t us[3] = {2, 2, 2};
    afo_array *u = afo_reshape(in[1], 3, us);
    afo_array *out = afo_slice_update(c, u, u0, u1, NULL);
    afo_release(t), afo_release(s), afo_release(r), afo_release(b), afo_release(c), afo_release(u);
    return out;
}

static afo_array *astype_roundtrip(afo_array *const *in, int n, void *ud) {
    /* float64 -> float32 -> float64: the cast's gradient converts back */
    afo_array *f = afo_astype(in[0], AFO_FLOAT32), *c = afo_contiguous(f);
    afo_array *e = afo_expand_dims(c, 1), *s = afo_squeeze(e, 1), *d = afo_astype(s, AFO_FLOAT64);
    afo_release(f), afo_release(c), afo_release(e), afo_release(s);
    return d;
}

static void test_structural_grads(void) {
    int64_t s[3] = {2, 3, 4};
    afo_array *x = safe_input(3, s, 0), *y = safe_input(3, s, 0);
    afo_array *xy[2] = {x, y};
    gradcheck("where", where_fn, NULL, xy, 2, 1e-6, 1e-6);
    reduce_case cases[] = {
        {afo_sum, {1}, 1, 0}, {afo_sum, {0, 2}, 2, 1}, {afo_mean, {-1}, 1, 0}, {afo_max, {1}, 1, 1},
        {afo_min, {0, 1}, 2, 0}, {afo_logsumexp, {2}, 1, 0}, {afo_sum, {0}, 0, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) gradcheck("reduce", reduce_fn, &cases[k], &x, 1, 1e-6, 1e-6);
    for (int axis = 0; axis < 3; axis++) gradcheck("softmax", softmax_fn, &axis, &x, 1, 1e-6, 1e-6);
    int64_t s8[1] = {8};
    afo_array *u = safe_input(1, s8, 0);
    afo_array *xu[2] = {x, u};
    gradcheck("shape chain", shape_chain, NULL, xu, 2, 1e-6, 1e-6);
    /* float32 rounding of the perturbed inputs limits the finite difference */
    gradcheck("astype/contiguous/expand/squeeze", astype_roundtrip, NULL, &x, 1, 1e-2, 1e-4);
    afo_release(x), afo_release(y), afo_release(u);
}

static afo_array *matmul_fn(afo_array *const *in, int n, void *ud) { return afo_matmul(in[0], in[1]); }

static void test_matmul_grads(void) {
    int64_t a[3] = {2, 3, 4}, b[2] = {4, 5}, v[1] = {4};
    afo_array *x = test_randn(3, a), *w = test_randn(2, b), *vec = test_randn(1, v);
    afo_array *xw[2] = {x, w}, *xv[2] = {x, vec}, *vw[2] = {vec, w};
    gradcheck("matmul batched/broadcast", matmul_fn, NULL, xw, 2, 1e-6, 1e-6);
    gradcheck("matmul @ vector", matmul_fn, NULL, xv, 2, 1e-6, 1e-6);
    gradcheck("vector @ matmul", matmul_fn, NULL, vw, 2, 1e-6, 1e-6);
    afo_release(x), afo_release(w), afo_release(vec);
}

/* A 2-layer MLP with softmax cross-entropy; labels one-hot as float64. */
static afo_array *mlp_loss(afo_array *const *p, int n, void *ud) {
    afo_array *const *data = ud; /* x, onehot */
    afo_array *h = afo_matmul(data[0], p[0]);
    afo_array *hb = afo_add(h, p[1]);
    afo_array *act = afo_gelu(hb);
    afo_array *o = afo_matmul(act, p[2]);
    afo_array *logits = afo_add(o, p[3]);
    int last = -1;
    afo_array *lse = afo_logsumexp(logits, &last, 1, 1);
    afo_array *logp = afo_sub(logits, lse);
    afo_array *picked = afo_mul(logp, data[1]);
    afo_array *total = afo_sum(picked, NULL, 0, 0);
    afo_array *scale = afo_scalar(-1.0 / (double)afo_array_dim(data[0], 0), AFO_FLOAT64);
    afo_array *loss = afo_mul(total, scale);
    afo_release(h), afo_release(hb), afo_release(act), afo_release(o), afo_release(logits), afo_release(lse),
        afo_release(logp), afo_release(picked), afo_release(total), afo_release(scale);
    return loss;
}

static void test_mlp_end_to_end(void) {
    int64_t xs[2] = {16, 5}, w1[2] = {5, 8}, b1[1] = {8}, w2[2] = {8, 3}, b2[1] = {3};
    afo_array *x = test_randn(2, xs);
    double onehot[16 * 3] = {0};
    for (int i = 0; i < 16; i++) onehot[i * 3 + (int)(test_rand_u64() % 3)] = 1;
    int64_t os[2] = {16, 3};
    afo_array *labels = afo_array_from_data(onehot, AFO_FLOAT64, 2, os);
    afo_array *data[2] = {x, labels};
    afo_array *p[4] = {test_randn(2, w1), test_randn(1, b1), test_randn(2, w2), test_randn(1, b2)};
    /* the scalar loss itself (gradcheck projects with a weight; n=1 here) */
    gradcheck("mlp cross-entropy", mlp_loss, data, p, 4, 1e-6, 1e-6);
    /* gradient descent lowers the loss */
    double first = 0, last = 0;
    for (int step = 0; step < 60; step++) {
        afo_array *loss, *g[4];
        CHECK(afo_value_and_grad(mlp_loss, data, p, 4, &loss, g) == AFO_OK);
        afo_array *all[5] = {loss, g[0], g[1], g[2], g[3]};
        CHECK(afo_eval(all, 5) == AFO_OK);
        afo_array_item(loss, step == 0 ? &first : &last);
        afo_array *lr = afo_scalar(0.3, AFO_FLOAT64);
        for (int i = 0; i < 4; i++) {
            afo_array *d = afo_mul(g[i], lr), *np = afo_sub(p[i], d);
            afo_eval1(np);
            afo_release(p[i]), afo_release(d), afo_release(g[i]);
            p[i] = np;
        }
        afo_release(lr), afo_release(loss);
    }
    CHECK_MSG(last < 0.5 * first, "loss %g -> %g", first, last);
    for (int i = 0; i < 4; i++) afo_release(p[i]);
    afo_release(x), afo_release(labels);
}

int main(void) {
    test_seed(42);
    RUN(test_unary_grads);
    RUN(test_binary_grads);
    RUN(test_structural_grads);
    RUN(test_matmul_grads);
    RUN(test_mlp_end_to_end);
    return test_finish();
}
