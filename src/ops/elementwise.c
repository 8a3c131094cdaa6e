/* Elementwise ops: unary math, binary arithmetic and comparisons, where,
 * astype, stop_gradient. Kernels are per compute type (float32, float64,
 * int64) loops run by the strided engine; gradients are built from ops. */
#include <math.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/vmath.h"
#include "core/compose.h"

/* ------------------------------------------------------------ kernels */

/* On x86 the compiler builds each loop for AVX-512, AVX2 and baseline SSE2
 * and the loader picks one for the CPU (ifunc); tests/test_ops.c checks
 * whichever runs against float64 references. */
#if defined(__x86_64__) && !defined(AFO_NO_TARGET_CLONES)
#define EW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EW_CLONES
#endif

#define EW_LOOP(NAME, T, NIN, EXPR)                                          \
    EW_CLONES static void NAME(int64_t n, void *o, const void *const *in) {  \
        T *y = o;                                                            \
        const T *a = in[0];                                                  \
        const T *b = NIN > 1 ? (const T *)in[NIN > 1 ? 1 : 0] : a;           \
        (void)b;                                                             \
        for (int64_t i = 0; i < n; i++) {                                    \
            T x = a[i];                                                      \
            (void)x;                                                         \
            y[i] = (EXPR);                                                   \
        }                                                                    \
    }

/* float unary: float32 and float64 versions */
#define UNARY_F(NAME, EF, ED) EW_LOOP(NAME##_f32, float, 1, EF) EW_LOOP(NAME##_f64, double, 1, ED)
#define UNARY_FI(NAME, EF, ED, EI) UNARY_F(NAME, EF, ED) EW_LOOP(NAME##_i64, int64_t, 1, EI)

UNARY_FI(neg, -x, -x, -x)
UNARY_FI(abs, fabsf(x), fabs(x), x < 0 ? -x : x)
/* float32 versions of the hot activations use the vectorised math */
#define UNARY_VMATH(NAME, ED)                                              \
    static void NAME##_f32(int64_t n, void *o, const void *const *in) {    \
        afo_vmath_current()->NAME(n, o, in[0]);                            \
    }                                                                      \
    EW_LOOP(NAME##_f64, double, 1, ED)

UNARY_VMATH(exp, exp(x))
UNARY_F(log, logf(x), log(x))
UNARY_F(log1p, log1pf(x), log1p(x))
UNARY_F(sqrt, sqrtf(x), sqrt(x))
UNARY_F(rsqrt, 1.0f / sqrtf(x), 1.0 / sqrt(x))
UNARY_FI(square, x * x, x * x, x * x)
UNARY_F(tanh, tanhf(x), tanh(x))
UNARY_F(erf, erff(x), erf(x))
UNARY_VMATH(sigmoid, 1.0 / (1.0 + exp(-x)))
UNARY_VMATH(silu, x / (1.0 + exp(-x)))
/* erfc and the sigmoid form avoid the cancellation in 1 + erf(x) and
 * 1 + tanh(u) for negative x. */
UNARY_F(gelu, 0.5f * x * erfcf(-x * 0.70710678118654752f), 0.5 * x * erfc(-x * 0.70710678118654752))
UNARY_F(gelu_tanh, x / (1.0f + expf(-1.5957691216057308f * (x + 0.044715f * x * x * x))),
        x / (1.0 + exp(-1.5957691216057308 * (x + 0.044715 * x * x * x))))
UNARY_FI(relu, x > 0 ? x : 0, x > 0 ? x : 0, x > 0 ? x : 0)
UNARY_F(sin, sinf(x), sin(x))
UNARY_F(cos, cosf(x), cos(x))
UNARY_FI(logical_not, x == 0, x == 0, x == 0)

#define BIN_F(NAME, EF, ED) EW_LOOP(NAME##_f32, float, 2, EF) EW_LOOP(NAME##_f64, double, 2, ED)
#define BIN_FI(NAME, EF, ED, EI) BIN_F(NAME, EF, ED) EW_LOOP(NAME##_i64, int64_t, 2, EI)

static int64_t ipow(int64_t base, int64_t e) {
    if (e < 0) return base == 1 ? 1 : base == -1 ? (e % 2 ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)base; /* unsigned: overflow wraps instead of UB */
    while (e) {
        if (e & 1) r *= b;
        b *= b;
        e >>= 1;
    }
    return (int64_t)r;
}

/* Integer arithmetic wraps like the machine (through unsigned, avoiding UB). */
#define WRAP(op) (int64_t)((uint64_t)x op (uint64_t)b[i])
BIN_FI(add, x + b[i], x + b[i], WRAP(+))
BIN_FI(sub, x - b[i], x - b[i], WRAP(-))
BIN_FI(mul, x * b[i], x * b[i], WRAP(*))
BIN_F(div, x / b[i], x / b[i])
BIN_FI(maximum, (x > b[i] || isnan(x)) ? x : b[i], (x > b[i] || isnan(x)) ? x : b[i], x > b[i] ? x : b[i])
BIN_FI(minimum, (x < b[i] || isnan(x)) ? x : b[i], (x < b[i] || isnan(x)) ? x : b[i], x < b[i] ? x : b[i])
BIN_FI(pow, powf(x, b[i]), pow(x, b[i]), ipow(x, b[i]))
BIN_FI(equal, x == b[i], x == b[i], x == b[i])
BIN_FI(not_equal, x != b[i], x != b[i], x != b[i])
BIN_FI(less, x < b[i], x < b[i], x < b[i])
BIN_FI(less_equal, x <= b[i], x <= b[i], x <= b[i])
BIN_FI(greater, x > b[i], x > b[i], x > b[i])
BIN_FI(greater_equal, x >= b[i], x >= b[i], x >= b[i])
BIN_FI(logical_and, x != 0 && b[i] != 0, x != 0 && b[i] != 0, x != 0 && b[i] != 0)
BIN_FI(logical_or, x != 0 || b[i] != 0, x != 0 || b[i] != 0, x != 0 || b[i] != 0)

/* silu(gate) * up: the gated MLP's product in one pass over memory (a
 * launch and a round trip of the intermediate less per layer on a GPU). */
static void swiglu_f32(int64_t n, void *o, const void *const *in) {
    float *y = o;
    const float *up = in[1];
    afo_vmath_current()->silu(n, y, in[0]);
    for (int64_t i = 0; i < n; i++) y[i] *= up[i];
}
EW_LOOP(swiglu_f64, double, 2, x / (1.0 + exp(-x)) * b[i])

#define WHERE_FN(NAME, T)                                                   \
    static void NAME(int64_t n, void *o, const void *const *in) {           \
        T *y = o;                                                           \
        const T *c = in[0], *a = in[1], *b = in[2];                         \
        for (int64_t i = 0; i < n; i++) y[i] = c[i] != 0 ? a[i] : b[i];     \
    }
WHERE_FN(where_f32, float)
WHERE_FN(where_f64, double)
WHERE_FN(where_i64, int64_t)

#define FNS_F(NAME) {NAME##_f32, NAME##_f64, NULL}
#define FNS_FI(NAME) {NAME##_f32, NAME##_f64, NAME##_i64}
static const afo_ew_fn g_fns[AFO_OP_COUNT][3] = {
    [AFO_OP_NEG] = FNS_FI(neg), [AFO_OP_ABS] = FNS_FI(abs), [AFO_OP_EXP] = FNS_F(exp),
    [AFO_OP_LOG] = FNS_F(log), [AFO_OP_LOG1P] = FNS_F(log1p), [AFO_OP_SQRT] = FNS_F(sqrt),
    [AFO_OP_RSQRT] = FNS_F(rsqrt), [AFO_OP_SQUARE] = FNS_FI(square), [AFO_OP_TANH] = FNS_F(tanh),
    [AFO_OP_ERF] = FNS_F(erf), [AFO_OP_SIGMOID] = FNS_F(sigmoid), [AFO_OP_SILU] = FNS_F(silu),
    [AFO_OP_GELU] = FNS_F(gelu), [AFO_OP_GELU_TANH] = FNS_F(gelu_tanh), [AFO_OP_RELU] = FNS_FI(relu),
    [AFO_OP_SIN] = FNS_F(sin), [AFO_OP_COS] = FNS_F(cos), [AFO_OP_LOGICAL_NOT] = FNS_FI(logical_not),
    [AFO_OP_ADD] = FNS_FI(add), [AFO_OP_SUB] = FNS_FI(sub), [AFO_OP_MUL] = FNS_FI(mul),
    [AFO_OP_DIV] = FNS_F(div), [AFO_OP_MAXIMUM] = FNS_FI(maximum), [AFO_OP_MINIMUM] = FNS_FI(minimum),
    [AFO_OP_POW] = FNS_FI(pow), [AFO_OP_EQUAL] = FNS_FI(equal), [AFO_OP_NOT_EQUAL] = FNS_FI(not_equal),
    [AFO_OP_LESS] = FNS_FI(less), [AFO_OP_LESS_EQUAL] = FNS_FI(less_equal),
    [AFO_OP_GREATER] = FNS_FI(greater), [AFO_OP_GREATER_EQUAL] = FNS_FI(greater_equal),
    [AFO_OP_LOGICAL_AND] = FNS_FI(logical_and), [AFO_OP_LOGICAL_OR] = FNS_FI(logical_or),
    [AFO_OP_SWIGLU] = FNS_F(swiglu), [AFO_OP_WHERE] = FNS_FI(where),
};

/* Ops whose result is bool compute in their inputs' type. */
static afo_ctype compute_type(const afo_array *out, afo_array *const *in, int nin) {
    if (out->dtype != AFO_BOOL) return afo_cpu_ctype_of(out->dtype);
    afo_dtype t = in[0]->dtype;
    for (int i = 1; i < nin; i++) t = afo_promote_types(t, in[i]->dtype);
    return afo_cpu_ctype_of(t);
}

static afo_status ew_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    afo_ctype ct = compute_type(out, in, nin);
    afo_ew_fn fn = g_fns[out->op][ct];
    if (!fn) return afo_error(AFO_ERR_INTERNAL, "%s: no kernel for this dtype", afo_op_get(out->op)->name);
    return afo_cpu_elementwise(out, in, nin, ct, fn);
}

static afo_status astype_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    return afo_cpu_elementwise(out, in, 1, afo_cpu_ctype_between(in[0]->dtype, out->dtype), NULL);
}

static afo_status identity_view_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    afo_array_set_view(out, in[0], in[0]->strides, in[0]->offset);
    return AFO_OK;
}

/* ------------------------------------------------------------ shape rules */

static void copy_shape(afo_array *out, const afo_array *x, afo_dtype dtype) {
    out->dtype = dtype;
    out->ndim = x->ndim;
    for (int i = 0; i < x->ndim; i++) out->shape[i] = x->shape[i];
}

static const char *opname(const afo_array *out) { return afo_op_get(out->op)->name; }

static afo_status shape_unary_float(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    copy_shape(out, in[0], afo_dtype_is_float(in[0]->dtype) ? in[0]->dtype : AFO_FLOAT32);
    return AFO_OK;
}

static afo_status shape_unary_numeric(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    if (in[0]->dtype == AFO_BOOL)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: not defined for bool arrays", opname(out));
    copy_shape(out, in[0], in[0]->dtype);
    return AFO_OK;
}

static afo_status shape_unary_bool(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    copy_shape(out, in[0], AFO_BOOL);
    return AFO_OK;
}

static afo_status broadcast_out(afo_array *out, afo_array *const *in, int nin, afo_dtype dtype) {
    int nd = in[0]->ndim;
    int64_t shape[AFO_MAX_DIMS];
    memcpy(shape, in[0]->shape, sizeof(int64_t) * (size_t)nd);
    for (int i = 1; i < nin; i++)
        AFO_TRY(afo_broadcast_shapes(opname(out), nd, shape, in[i]->ndim, in[i]->shape, &nd, shape));
    out->dtype = dtype;
    out->ndim = nd;
    memcpy(out->shape, shape, sizeof(int64_t) * (size_t)nd);
    return AFO_OK;
}

static afo_status shape_arith(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    afo_dtype t = afo_promote_types(in[0]->dtype, in[1]->dtype);
    if (t == AFO_BOOL)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: not defined for two bool arrays", opname(out));
    return broadcast_out(out, in, 2, t);
}

static afo_status shape_div(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    afo_dtype t = afo_promote_types(in[0]->dtype, in[1]->dtype);
    return broadcast_out(out, in, 2, afo_dtype_is_float(t) ? t : AFO_FLOAT32);
}

static afo_status shape_compare(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    return broadcast_out(out, in, 2, AFO_BOOL);
}

static afo_status shape_where(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    return broadcast_out(out, in, 3, afo_promote_types(in[1]->dtype, in[2]->dtype));
}

static afo_status shape_astype(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    copy_shape(out, in[0], (afo_dtype)a->i[0]);
    return AFO_OK;
}

static afo_status shape_same(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    copy_shape(out, in[0], in[0]->dtype);
    return AFO_OK;
}

/* ------------------------------------------------------------ gradients */

#define VJP(NAME) static afo_status NAME(afo_array *out, afo_array *g, int arg, afo_array **grad)
#define X (out->in[0])
#define Y (out->in[1])

#define DONE return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT
VJP(vjp_neg) { *grad = afo_neg(g); DONE; }
VJP(vjp_abs) { *grad = ow_where(ow_less(R(X), ow_const(X, 0)), afo_neg(g), R(g)); DONE; }
VJP(vjp_exp) { *grad = afo_mul(g, out); DONE; }
VJP(vjp_log) { *grad = afo_div(g, X); DONE; }
VJP(vjp_log1p) { *grad = ow_div(R(g), ow_add(R(X), ow_const(X, 1))); DONE; }
VJP(vjp_sqrt) { *grad = ow_div(ow_mul(R(g), ow_const(X, 0.5)), R(out)); DONE; }
VJP(vjp_rsqrt) { *grad = ow_mul(ow_mul(R(g), ow_const(X, -0.5)), ow_div(R(out), R(X))); DONE; }
VJP(vjp_square) { *grad = ow_mul(R(g), ow_mul(R(X), ow_const(X, 2))); DONE; }
VJP(vjp_tanh) { *grad = ow_mul(R(g), ow_sub(ow_const(X, 1), ow_square(R(out)))); DONE; }
VJP(vjp_erf) { /* 2/sqrt(pi) exp(-x^2) */
    *grad = ow_mul(R(g), ow_mul(ow_const(X, 1.1283791670955126), ow_exp(ow_neg(ow_square(R(X))))));
    DONE;
}
VJP(vjp_sigmoid) { *grad = ow_mul(R(g), ow_mul(R(out), ow_sub(ow_const(X, 1), R(out)))); DONE; }
VJP(vjp_silu) { /* s (1 + x (1 - s)) */
    afo_array *s = afo_sigmoid(X);
    *grad = ow_mul(R(g), ow_mul(R(s), ow_add(ow_const(X, 1), ow_mul(R(X), ow_sub(ow_const(X, 1), R(s))))));
    afo_release(s);
    DONE;
}
VJP(vjp_gelu) { /* Phi(x) + x phi(x) */
    afo_array *cdf = ow_mul(ow_const(X, 0.5),
                            ow_add(ow_const(X, 1), ow_erf(ow_mul(R(X), ow_const(X, 0.70710678118654752)))));
    afo_array *pdf = ow_mul(ow_const(X, 0.3989422804014327),
                            ow_exp(ow_mul(ow_square(R(X)), ow_const(X, -0.5))));
    *grad = ow_mul(R(g), ow_add(cdf, ow_mul(R(X), pdf)));
    DONE;
}
VJP(vjp_gelu_tanh) { /* 0.5(1+t) + 0.5 x (1-t^2) c (1 + 3k x^2) */
    const double c = 0.7978845608028654, k = 0.044715;
    afo_array *x2 = afo_square(X);
    afo_array *t = ow_tanh(ow_mul(ow_mul(R(X), ow_const(X, c)), ow_add(ow_const(X, 1), ow_mul(R(x2), ow_const(X, k)))));
    afo_array *left = ow_mul(ow_const(X, 0.5), ow_add(ow_const(X, 1), R(t)));
    afo_array *right = ow_mul(ow_mul(ow_mul(R(X), ow_const(X, 0.5 * c)), ow_sub(ow_const(X, 1), ow_square(R(t)))),
                              ow_add(ow_const(X, 1), ow_mul(R(x2), ow_const(X, 3 * k))));
    *grad = ow_mul(R(g), ow_add(left, right));
    afo_release(x2);
    afo_release(t);
    DONE;
}
VJP(vjp_relu) { *grad = ow_mul(R(g), ow_astype(ow_greater(R(X), ow_const(X, 0)), g->dtype)); DONE; }
VJP(vjp_sin) { *grad = ow_mul(R(g), ow_cos(R(X))); DONE; }
VJP(vjp_cos) { *grad = ow_neg(ow_mul(R(g), ow_sin(R(X)))); DONE; }

/* Binary gradients are summed back over broadcast axes. */
VJP(vjp_add) { *grad = afo_unbroadcast(g, out->in[arg]->ndim, out->in[arg]->shape); DONE; }
VJP(vjp_sub) { *grad = ow_unbroadcast(arg == 0 ? R(g) : afo_neg(g), out->in[arg]); DONE; }
VJP(vjp_mul) { *grad = ow_unbroadcast(afo_mul(g, out->in[1 - arg]), out->in[arg]); DONE; }
VJP(vjp_div) {
    if (arg == 0) *grad = ow_unbroadcast(afo_div(g, Y), X);
    else *grad = ow_unbroadcast(ow_neg(ow_div(afo_mul(g, out), R(Y))), Y);
    DONE;
}
VJP(vjp_maximum) {
    afo_array *mask = arg == 0 ? afo_greater_equal(X, Y) : afo_less(X, Y);
    *grad = ow_unbroadcast(ow_mul(R(g), ow_astype(mask, g->dtype)), out->in[arg]);
    DONE;
}
VJP(vjp_minimum) {
    afo_array *mask = arg == 0 ? afo_less_equal(X, Y) : afo_greater(X, Y);
    *grad = ow_unbroadcast(ow_mul(R(g), ow_astype(mask, g->dtype)), out->in[arg]);
    DONE;
}
VJP(vjp_pow) {
    if (arg == 0) /* b a^(b-1) */
        *grad = ow_unbroadcast(ow_mul(R(g), ow_mul(R(Y), ow_binary(afo_pow, R(X), ow_sub(R(Y), ow_const(Y, 1))))), X);
    else /* a^b log a */
        *grad = ow_unbroadcast(ow_mul(afo_mul(g, out), ow_log(R(X))), Y);
    DONE;
}
VJP(vjp_swiglu) { /* up: silu(gate); gate: up s (1 + x (1 - s)), s = sigmoid(gate) */
    if (arg == 1) {
        *grad = ow_unbroadcast(ow_mul(R(g), afo_silu(X)), Y);
        DONE;
    }
    afo_array *s = afo_sigmoid(X);
    afo_array *d = ow_mul(R(s), ow_add(ow_const(X, 1), ow_mul(R(X), ow_sub(ow_const(X, 1), R(s)))));
    *grad = ow_unbroadcast(ow_mul(ow_mul(R(g), R(Y)), d), X);
    afo_release(s);
    DONE;
}
VJP(vjp_where) {
    if (arg == 0) { *grad = NULL; return AFO_OK; }
    afo_array *z = afo_scalar(0, g->dtype);
    *grad = arg == 1 ? ow_where(R(out->in[0]), R(g), z) : ow_where(R(out->in[0]), z, R(g));
    *grad = ow_unbroadcast(*grad, out->in[arg]);
    DONE;
}
VJP(vjp_astype) {
    if (!afo_dtype_is_float(X->dtype)) { *grad = NULL; return AFO_OK; }
    *grad = afo_astype(g, X->dtype);
    DONE;
}

/* ------------------------------------------------------------ table */

#define DEF(ID, NAME, SHAPE, KERNEL, VJPFN) \
    static const afo_op_def def_##NAME = {#NAME, SHAPE, {KERNEL}, VJPFN};
#define UNARY_OPS(X_)                                                   \
    X_(AFO_OP_NEG, neg, shape_unary_numeric, vjp_neg)                   \
    X_(AFO_OP_ABS, abs, shape_unary_numeric, vjp_abs)                   \
    X_(AFO_OP_EXP, exp, shape_unary_float, vjp_exp)                     \
    X_(AFO_OP_LOG, log, shape_unary_float, vjp_log)                     \
    X_(AFO_OP_LOG1P, log1p, shape_unary_float, vjp_log1p)               \
    X_(AFO_OP_SQRT, sqrt, shape_unary_float, vjp_sqrt)                  \
    X_(AFO_OP_RSQRT, rsqrt, shape_unary_float, vjp_rsqrt)               \
    X_(AFO_OP_SQUARE, square, shape_unary_numeric, vjp_square)          \
    X_(AFO_OP_TANH, tanh, shape_unary_float, vjp_tanh)                  \
    X_(AFO_OP_ERF, erf, shape_unary_float, vjp_erf)                     \
    X_(AFO_OP_SIGMOID, sigmoid, shape_unary_float, vjp_sigmoid)         \
    X_(AFO_OP_SILU, silu, shape_unary_float, vjp_silu)                  \
    X_(AFO_OP_GELU, gelu, shape_unary_float, vjp_gelu)                  \
    X_(AFO_OP_GELU_TANH, gelu_tanh, shape_unary_float, vjp_gelu_tanh)   \
    X_(AFO_OP_RELU, relu, shape_unary_numeric, vjp_relu)                \
    X_(AFO_OP_SIN, sin, shape_unary_float, vjp_sin)                     \
    X_(AFO_OP_COS, cos, shape_unary_float, vjp_cos)                     \
    X_(AFO_OP_LOGICAL_NOT, logical_not, shape_unary_bool, NULL)
#define BINARY_OPS(X_)                                                    \
    X_(AFO_OP_ADD, add, shape_arith, vjp_add)                             \
    X_(AFO_OP_SUB, sub, shape_arith, vjp_sub)                             \
    X_(AFO_OP_MUL, mul, shape_arith, vjp_mul)                             \
    X_(AFO_OP_DIV, div, shape_div, vjp_div)                               \
    X_(AFO_OP_MAXIMUM, maximum, shape_arith, vjp_maximum)                 \
    X_(AFO_OP_MINIMUM, minimum, shape_arith, vjp_minimum)                 \
    X_(AFO_OP_POW, pow, shape_arith, vjp_pow)                             \
    X_(AFO_OP_EQUAL, equal, shape_compare, NULL)                          \
    X_(AFO_OP_NOT_EQUAL, not_equal, shape_compare, NULL)                  \
    X_(AFO_OP_LESS, less, shape_compare, NULL)                            \
    X_(AFO_OP_LESS_EQUAL, less_equal, shape_compare, NULL)                \
    X_(AFO_OP_GREATER, greater, shape_compare, NULL)                      \
    X_(AFO_OP_GREATER_EQUAL, greater_equal, shape_compare, NULL)          \
    X_(AFO_OP_LOGICAL_AND, logical_and, shape_compare, NULL)              \
    X_(AFO_OP_LOGICAL_OR, logical_or, shape_compare, NULL)                \
    X_(AFO_OP_SWIGLU, swiglu, shape_div, vjp_swiglu)

#define DEF_EW(ID, NAME, SHAPE, VJPFN) DEF(ID, NAME, SHAPE, ew_kernel, VJPFN)
UNARY_OPS(DEF_EW)
BINARY_OPS(DEF_EW)
DEF(AFO_OP_WHERE, where, shape_where, ew_kernel, vjp_where)
DEF(AFO_OP_ASTYPE, astype, shape_astype, astype_kernel, vjp_astype)
DEF(AFO_OP_STOP_GRADIENT, stop_gradient, shape_same, identity_view_kernel, NULL)

/* Public constructors: one per op, all through afo_node. */
#define API_UNARY(ID, NAME, SHAPE, VJPFN) \
    afo_array *afo_##NAME(afo_array *x) { return afo_node(ID, &x, 1, NULL); }
#define API_BINARY(ID, NAME, SHAPE, VJPFN)              \
    afo_array *afo_##NAME(afo_array *a, afo_array *b) { \
        afo_array *in[2] = {a, b};                      \
        return afo_node(ID, in, 2, NULL);               \
    }
UNARY_OPS(API_UNARY)
BINARY_OPS(API_BINARY)

afo_array *afo_where(afo_array *cond, afo_array *a, afo_array *b) {
    afo_array *in[3] = {cond, a, b};
    return afo_node(AFO_OP_WHERE, in, 3, NULL);
}

afo_array *afo_astype(afo_array *x, afo_dtype dtype) {
    if ((unsigned)dtype >= AFO_DTYPE_COUNT)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "astype: invalid dtype %d", (int)dtype);
    if (x && x->dtype == dtype) return afo_retain(x);
    afo_attrs at = {.i = {dtype}, .ni = 1};
    return afo_node(AFO_OP_ASTYPE, &x, 1, &at);
}

afo_array *afo_stop_gradient(afo_array *x) { return afo_node(AFO_OP_STOP_GRADIENT, &x, 1, NULL); }

#define REGISTER(ID, NAME, SHAPE, VJPFN) afo_op_register(ID, &def_##NAME);
void afo_register_elementwise_ops(void) {
    UNARY_OPS(REGISTER)
    BINARY_OPS(REGISTER)
    afo_op_register(AFO_OP_WHERE, &def_where);
    afo_op_register(AFO_OP_ASTYPE, &def_astype);
    afo_op_register(AFO_OP_STOP_GRADIENT, &def_stop_gradient);
}
