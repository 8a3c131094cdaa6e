/* The generic op test: every elementwise, reduction, shape and matmul op
 * over every dtype it accepts and several shapes (broadcasting, size-1 and
 * odd sizes, non-contiguous views), against float64 references computed
 * here from the rounded input values. */
#include <afo/afo.h>
#include <string.h>

#include "support/test.h"

static const afo_dtype FLOATS[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16, AFO_FLOAT64};
static const afo_dtype INTS[] = {AFO_INT32, AFO_INT64, AFO_INT8, AFO_UINT8, AFO_UINT32};

/* Allowed |got - ref| is atol + rtol |ref|, by output dtype: a float32
 * kernel result rounded once to the output type, plus the libm error. */
static double rtol_of(afo_dtype t) {
    switch (t) {
    case AFO_FLOAT64: return 1e-12;
    case AFO_FLOAT32: return 4e-6;
    case AFO_FLOAT16: return 1.5e-3;
    case AFO_BFLOAT16: return 1e-2;
    default: return 0;
    }
}

/* A random array of dtype t; `positive` keeps values in [0.1, 3]. Returned
 * non-contiguous when `strided` (a transposed view of a fresh array). */
static afo_array *random_array(afo_dtype t, int ndim, const int64_t *shape, int positive, int strided) {
    int64_t n = 1, tshape[AFO_MAX_DIMS];
    for (int i = 0; i < ndim; i++) n *= shape[i];
    for (int i = 0; i < ndim; i++) tshape[i] = shape[ndim - 1 - i];
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        double x = positive ? test_uniform(0.1, 3.0) : test_uniform(-3.0, 3.0);
        if (afo_dtype_is_integer(t)) x = t == AFO_UINT8 || t == AFO_UINT32 ? (double)(test_rand_u64() % 50)
                                                                            : (double)((int64_t)(test_rand_u64() % 41) - 20);
        v[i] = x;
    }
    afo_array *d = afo_array_from_data(v, AFO_FLOAT64, ndim, strided ? tshape : shape);
    free(v);
    afo_array *c = afo_astype(d, t);
    afo_release(d);
    if (!strided) return c;
    afo_array *tr = afo_transpose(c, NULL);
    afo_release(c);
    return tr;
}

static double *read_f64(afo_array *a) {
    int64_t n = afo_array_size(a);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (afo_array_read(a, AFO_FLOAT64, v, sizeof(double) * (size_t)n) != AFO_OK) {
        CHECK_MSG(0, "read failed: %s", afo_last_error());
        memset(v, 0, sizeof(double) * (size_t)n);
    }
    return v;
}

/* Flat index into a C-order array of shape (nd, shape) broadcast to the
 * output index `idx` of an output with `ond` dims. */
static int64_t bcast_index(const int64_t *idx, int ond, int nd, const int64_t *shape) {
    int64_t flat = 0;
    for (int d = 0; d < nd; d++) {
        int64_t i = shape[d] == 1 ? 0 : idx[ond - nd + d];
        flat = flat * shape[d] + i;
    }
    return flat;
}

static void unravel(int64_t flat, int nd, const int64_t *shape, int64_t *idx) {
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = shape[d] ? flat % shape[d] : 0;
        flat = shape[d] ? flat / shape[d] : 0;
    }
}

static int close_enough(double got, double ref, afo_dtype t, double atol) {
    if (t == AFO_FLOAT16) atol += 3e-8; /* half the float16 subnormal quantum */
    if (isnan(ref)) return isnan(got);
    if (isinf(ref)) return got == ref;
    return fabs(got - ref) <= atol + rtol_of(t) * fabs(ref);
}

/* ------------------------------------------------------------ elementwise */

typedef double (*ref1)(double);
typedef double (*ref2)(double, double);
static double r_neg(double x) { return -x; }
static double r_abs(double x) { return fabs(x); }
static double r_rsqrt(double x) { return 1 / sqrt(x); }
static double r_square(double x) { return x * x; }
static double r_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double r_silu(double x) { return x / (1 + exp(-x)); }
static double r_gelu(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double r_gelu_tanh(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
static double r_relu(double x) { return x > 0 ? x : 0; }
static double r_not(double x) { return x == 0; }

static const struct {
    const char *name;
    afo_array *(*op)(afo_array *);
    ref1 ref;
    int positive, ints, to_bool;
} UNARY[] = {
    {"neg", afo_neg, r_neg, 0, 1, 0}, {"abs", afo_abs, r_abs, 0, 1, 0}, {"exp", afo_exp, exp, 0, 0, 0},
    {"log", afo_log, log, 1, 0, 0}, {"log1p", afo_log1p, log1p, 1, 0, 0}, {"sqrt", afo_sqrt, sqrt, 1, 0, 0},
    {"rsqrt", afo_rsqrt, r_rsqrt, 1, 0, 0}, {"square", afo_square, r_square, 0, 1, 0},
    {"tanh", afo_tanh, tanh, 0, 0, 0}, {"erf", afo_erf, erf, 0, 0, 0}, {"sigmoid", afo_sigmoid, r_sigmoid, 0, 0, 0},
    {"silu", afo_silu, r_silu, 0, 0, 0}, {"gelu", afo_gelu, r_gelu, 0, 0, 0},
    {"gelu_tanh", afo_gelu_tanh, r_gelu_tanh, 0, 0, 0}, {"relu", afo_relu, r_relu, 0, 1, 0},
    {"sin", afo_sin, sin, 0, 0, 0}, {"cos", afo_cos, cos, 0, 0, 0},
    {"logical_not", afo_logical_not, r_not, 0, 1, 1},
};

static const int64_t SHAPES[][4] = {{1, 1}, {1, 7}, {2, 3, 5}, {3, 1, 4, 9}, {1, 1000}, {2, 2, 2, 2}};
static const int SHAPE_NDIM[] = {1, 1, 3, 4, 1, 4};
#define NSHAPES (int)(sizeof SHAPE_NDIM / sizeof *SHAPE_NDIM)

static void check_unary(int k, afo_dtype t, int s, int strided) {
    afo_array *x = random_array(t, SHAPE_NDIM[s], &SHAPES[s][0] + (SHAPE_NDIM[s] == 1), UNARY[k].positive, strided);
    afo_array *y = UNARY[k].op(x);
    CHECK_MSG(y != NULL, "%s(%s): %s", UNARY[k].name, afo_dtype_name(t), afo_last_error());
    if (y) {
        afo_dtype ot = afo_array_dtype(y);
        afo_dtype expect = UNARY[k].to_bool ? AFO_BOOL : (UNARY[k].ints ? t : (afo_dtype_is_float(t) ? t : AFO_FLOAT32));
        CHECK_MSG(ot == expect, "%s(%s) gives %s", UNARY[k].name, afo_dtype_name(t), afo_dtype_name(ot));
        double *xv = read_f64(x), *yv = read_f64(y);
        int bad = 0;
        for (int64_t i = 0; i < afo_array_size(x); i++) {
            double ref = UNARY[k].ref(xv[i]);
            if (afo_dtype_is_integer(ot)) ref = ot == AFO_UINT8 ? (double)(uint8_t)(int64_t)ref : ot == AFO_UINT32 ? (double)(uint32_t)(int64_t)ref : ot == AFO_INT8 ? (double)(int8_t)(int64_t)ref : ref;
            if (!close_enough(yv[i], ref, ot, 1e-30) && bad++ < 3)
                fprintf(stderr, "%s(%s)[%lld]: x=%.9g got %.9g ref %.9g\n", UNARY[k].name, afo_dtype_name(t),
                        (long long)i, xv[i], yv[i], ref);
        }
        CHECK_MSG(bad == 0, "%s(%s) shape %d strided %d: %d mismatches", UNARY[k].name, afo_dtype_name(t), s, strided, bad);
        free(xv);
        free(yv);
    }
    afo_release(x);
    afo_release(y);
}

static void test_unary(void) {
    for (size_t k = 0; k < sizeof UNARY / sizeof *UNARY; k++)
        for (int s = 0; s < NSHAPES; s++)
            for (int strided = 0; strided < 2; strided++) {
                for (int t = 0; t < 4; t++) check_unary((int)k, FLOATS[t], s, strided);
                if (UNARY[k].ints)
                    for (int t = 0; t < 5; t++) check_unary((int)k, INTS[t], s, strided);
            }
}

static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }
static double r_max(double a, double b) { return a > b ? a : b; }
static double r_min(double a, double b) { return a < b ? a : b; }
static double r_eq(double a, double b) { return a == b; }
static double r_ne(double a, double b) { return a != b; }
static double r_lt(double a, double b) { return a < b; }
static double r_le(double a, double b) { return a <= b; }
static double r_gt(double a, double b) { return a > b; }
static double r_ge(double a, double b) { return a >= b; }
static double r_and(double a, double b) { return a != 0 && b != 0; }
static double r_or(double a, double b) { return a != 0 || b != 0; }
static double r_swiglu(double a, double b) { return a / (1 + exp(-a)) * b; }

static const struct {
    const char *name;
    afo_array *(*op)(afo_array *, afo_array *);
    ref2 ref;
    int positive, ints, to_bool;
} BINARY[] = {
    {"add", afo_add, r_add, 0, 1, 0}, {"sub", afo_sub, r_sub, 0, 1, 0}, {"mul", afo_mul, r_mul, 0, 1, 0},
    {"div", afo_div, r_div, 1, 0, 0}, {"maximum", afo_maximum, r_max, 0, 1, 0},
    {"minimum", afo_minimum, r_min, 0, 1, 0}, {"pow", afo_pow, pow, 1, 0, 0},
    {"equal", afo_equal, r_eq, 0, 1, 1}, {"not_equal", afo_not_equal, r_ne, 0, 1, 1},
    {"less", afo_less, r_lt, 0, 1, 1}, {"less_equal", afo_less_equal, r_le, 0, 1, 1},
    {"greater", afo_greater, r_gt, 0, 1, 1}, {"greater_equal", afo_greater_equal, r_ge, 0, 1, 1},
    {"logical_and", afo_logical_and, r_and, 0, 1, 1}, {"logical_or", afo_logical_or, r_or, 0, 1, 1},
    {"swiglu", afo_swiglu, r_swiglu, 0, 0, 0},
};

/* Shape pairs exercising broadcasting (incl. 0-d and size-1 axes). */
static const struct { int na; int64_t a[4]; int nb; int64_t b[4]; } PAIRS[] = {
    {1, {7}, 1, {7}}, {3, {3, 1, 5}, 2, {4, 5}}, {1, {1}, 2, {2, 3}}, {0, {0}, 1, {3}},
    {2, {33, 17}, 2, {33, 17}}, {4, {2, 1, 3, 1}, 3, {4, 1, 1}}, {2, {1, 1030}, 2, {3, 1}},
};

static void check_binary(int k, afo_dtype t, int p, int strided) {
    int positive = BINARY[k].positive;
    afo_array *a = random_array(t, PAIRS[p].na, PAIRS[p].a, positive, strided);
    afo_array *b = random_array(t, PAIRS[p].nb, PAIRS[p].b, positive, 0);
    if (strided && (BINARY[k].ref == r_eq || BINARY[k].ref == r_le)) { /* make ties happen */
        afo_release(b);
        b = afo_contiguous(a);
    }
    afo_array *y = BINARY[k].op(a, b);
    CHECK_MSG(y != NULL, "%s(%s): %s", BINARY[k].name, afo_dtype_name(t), afo_last_error());
    if (!y) goto out;
    afo_dtype ot = afo_array_dtype(y);
    double *av = read_f64(a), *bv = read_f64(b), *yv = read_f64(y);
    int bad = 0;
    int64_t idx[AFO_MAX_DIMS];
    for (int64_t i = 0; i < afo_array_size(y); i++) {
        unravel(i, afo_array_ndim(y), afo_array_shape(y), idx);
        double x1 = av[bcast_index(idx, afo_array_ndim(y), afo_array_ndim(a), afo_array_shape(a))];
        double x2 = bv[bcast_index(idx, afo_array_ndim(y), afo_array_ndim(b), afo_array_shape(b))];
        double ref = BINARY[k].ref(x1, x2);
        if (ot == AFO_INT8) ref = (double)(int8_t)(int64_t)ref;
        if (ot == AFO_UINT8) ref = (double)(uint8_t)(int64_t)ref;
        if (ot == AFO_UINT32) ref = (double)(uint32_t)(int64_t)ref;
        if (!close_enough(yv[i], ref, ot, 1e-30) && bad++ < 3)
            fprintf(stderr, "%s(%s)[%lld]: %.9g, %.9g got %.9g ref %.9g\n", BINARY[k].name, afo_dtype_name(t),
                    (long long)i, x1, x2, yv[i], ref);
    }
    CHECK_MSG(bad == 0, "%s(%s) pair %d: %d mismatches", BINARY[k].name, afo_dtype_name(t), p, bad);
    free(av), free(bv), free(yv);
out:
    afo_release(a), afo_release(b), afo_release(y);
}

static void test_binary(void) {
    for (size_t k = 0; k < sizeof BINARY / sizeof *BINARY; k++)
        for (size_t p = 0; p < sizeof PAIRS / sizeof *PAIRS; p++)
            for (int strided = 0; strided < 2; strided++) {
                for (int t = 0; t < 4; t++) check_binary((int)k, FLOATS[t], (int)p, strided);
                if (BINARY[k].ints)
                    for (int t = 0; t < 5; t++) check_binary((int)k, INTS[t], (int)p, strided);
            }
}

static void test_where_and_promotion(void) {
    int64_t s[2] = {4, 6}, s1[1] = {6};
    afo_array *c = random_array(AFO_FLOAT32, 2, s, 0, 1);
    afo_array *zero = afo_scalar(0, AFO_FLOAT32);
    afo_array *cond = afo_greater(c, zero);
    afo_array *a = random_array(AFO_BFLOAT16, 2, s, 0, 0), *b = random_array(AFO_INT32, 1, s1, 0, 0);
    afo_array *y = afo_where(cond, a, b);
    CHECK(y && afo_array_dtype(y) == AFO_BFLOAT16);
    double *cv = read_f64(cond), *av = read_f64(a), *bv = read_f64(b), *yv = read_f64(y);
    int bad = 0;
    for (int i = 0; i < 24; i++) {
        double ref = cv[i] != 0 ? av[i] : bv[i % 6];
        if (!close_enough(yv[i], ref, AFO_BFLOAT16, 0)) bad++;
    }
    CHECK(bad == 0);
    CHECK(afo_promote_types(AFO_INT32, AFO_FLOAT16) == AFO_FLOAT16);
    CHECK(afo_promote_types(AFO_UINT32, AFO_INT32) == AFO_INT64);
    CHECK(afo_promote_types(AFO_UINT8, AFO_INT8) == AFO_INT32 || afo_promote_types(AFO_UINT8, AFO_INT8) == AFO_INT64 ||
          afo_promote_types(AFO_UINT8, AFO_INT8) == AFO_INT8);
    CHECK(afo_promote_types(AFO_BFLOAT16, AFO_FLOAT16) == AFO_FLOAT32);
    free(cv), free(av), free(bv), free(yv);
    afo_release(c), afo_release(zero), afo_release(cond), afo_release(a), afo_release(b), afo_release(y);
}

/* ------------------------------------------------------------ astype */

/* Round-to-nearest-even of a double to `mant` mantissa bits, computed from
 * the definition (independent of afo's bit tricks). */
static double round_to_bits(double x, int mant, int emin, double maxval) {
    if (x == 0 || isnan(x) || isinf(x)) return x;
    int e;
    frexp(x, &e);
    if (e - 1 < emin) e = emin + 1; /* subnormal range: fixed quantum */
    double q = ldexp(1.0, e - 1 - mant);
    double r = nearbyint(x / q) * q; /* default rounding mode: ties to even */
    return fabs(r) > maxval ? copysign(INFINITY, x) : r;
}

static void test_astype(void) {
    int64_t n = 4096;
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = test_normal() * pow(10.0, test_uniform(-8, 6));
    v[0] = 65519.0, v[1] = 65520.0, v[2] = -3.0e38, v[3] = 1e-8, v[4] = 5.96e-8, v[5] = 2.98e-8;
    afo_array *d = afo_array_from_data(v, AFO_FLOAT64, 1, &n);
    afo_array *f32 = afo_astype(d, AFO_FLOAT32);
    afo_array *h = afo_astype(f32, AFO_FLOAT16), *bf = afo_astype(f32, AFO_BFLOAT16);
    double *fv = read_f64(f32), *hv = read_f64(h), *bv = read_f64(bf);
    int bad_h = 0, bad_b = 0;
    for (int64_t i = 0; i < n; i++) {
        double rh = round_to_bits(fv[i], 10, -14, 65504.0 + 16.0 - 1e-9);
        if (fabs(rh) > 65504.0) rh = copysign(INFINITY, rh);
        double rb = round_to_bits(fv[i], 7, -126, 3.3895313892515355e38);
        if (hv[i] != rh && bad_h++ < 3) fprintf(stderr, "f16(%.9g) = %.9g, expected %.9g\n", fv[i], hv[i], rh);
        if (bv[i] != rb && bad_b++ < 3) fprintf(stderr, "bf16(%.9g) = %.9g, expected %.9g\n", fv[i], bv[i], rb);
    }
    CHECK(bad_h == 0);
    CHECK(bad_b == 0);
    /* every float16 bit pattern survives f16 -> f32 -> f16 */
    int bad_rt = 0;
    for (uint32_t u = 0; u < 65536; u++) {
        float f = afo_f16_to_f32((uint16_t)u);
        if (isnan(f)) continue;
        if (afo_f32_to_f16(f) != u) bad_rt++;
    }
    CHECK(bad_rt == 0);
    /* float -> int truncates toward zero and saturates; int -> bool tests != 0 */
    double src[6] = {-1.7, 2.9, 1e12, -1e12, 255.5, NAN};
    int64_t six = 6;
    afo_array *s = afo_array_from_data(src, AFO_FLOAT64, 1, &six);
    afo_array *i32 = afo_astype(s, AFO_INT32), *u8 = afo_astype(s, AFO_UINT8), *bl = afo_astype(s, AFO_BOOL);
    int32_t iv[6];
    uint8_t uv[6], blv[6];
    afo_array_read(i32, AFO_INT32, iv, sizeof iv);
    afo_array_read(u8, AFO_UINT8, uv, sizeof uv);
    afo_array_read(bl, AFO_BOOL, blv, sizeof blv);
    CHECK(iv[0] == -1 && iv[1] == 2 && iv[2] == INT32_MAX && iv[3] == INT32_MIN && iv[5] == 0);
    CHECK(uv[0] == 0 && uv[1] == 2 && uv[2] == 255 && uv[4] == 255);
    CHECK(blv[0] == 1 && blv[5] == 1);
    free(v), free(fv), free(hv), free(bv);
    afo_release(d), afo_release(f32), afo_release(h), afo_release(bf), afo_release(s), afo_release(i32),
        afo_release(u8), afo_release(bl);
}

/* ------------------------------------------------------------ reductions */

typedef afo_array *(*reduce_fn)(afo_array *, const int *, int, int);

static void check_reduce(const char *name, reduce_fn op, int kind, afo_dtype t, int nd, const int64_t *shape,
                         const int *axes, int naxes, int keep, int strided) {
    afo_array *x = random_array(t, nd, shape, 0, strided);
    afo_array *y = kind == 5 ? afo_argmax(x, axes[0], keep) : op(x, axes, naxes, keep);
    CHECK_MSG(y != NULL, "%s: %s", name, afo_last_error());
    if (!y) { afo_release(x); return; }
    double *xv = read_f64(x), *yv = read_f64(y);
    int reduced[AFO_MAX_DIMS] = {0};
    for (int k = 0; k < naxes; k++) reduced[(axes[k] + nd) % nd] = 1;
    if (naxes == 0) for (int d = 0; d < nd; d++) reduced[d] = 1;
    int64_t oshape[AFO_MAX_DIMS];
    int ond = 0;
    for (int d = 0; d < nd; d++) if (!reduced[d]) oshape[ond++] = shape[d];
    int64_t osize = 1, rsize = 1;
    for (int d = 0; d < ond; d++) osize *= oshape[d];
    for (int d = 0; d < nd; d++) if (reduced[d]) rsize *= shape[d];
    CHECK(afo_array_size(y) == osize);
    int bad = 0;
    afo_dtype ot = afo_array_dtype(y);
    for (int64_t o = 0; o < osize; o++) {
        int64_t oidx[AFO_MAX_DIMS], idx[AFO_MAX_DIMS];
        unravel(o, ond, oshape, oidx);
        double acc = kind == 2 ? -INFINITY : kind == 3 ? INFINITY : 0, best = -INFINITY, mag = 0;
        int64_t arg = 0;
        double m = -INFINITY;
        for (int64_t r = 0; r < rsize; r++) { /* max first, for logsumexp */
            int64_t rr = r;
            for (int d = nd - 1, j = ond - 1; d >= 0; d--) {
                if (reduced[d]) { idx[d] = rr % shape[d]; rr /= shape[d]; } else idx[d] = oidx[j--];
            }
            double xvv = xv[bcast_index(idx, nd, nd, shape)];
            m = xvv > m ? xvv : m;
        }
        for (int64_t r = 0; r < rsize; r++) {
            int64_t rr = r;
            for (int d = nd - 1, j = ond - 1; d >= 0; d--) {
                if (reduced[d]) { idx[d] = rr % shape[d]; rr /= shape[d]; } else idx[d] = oidx[j--];
            }
            double xvv = xv[bcast_index(idx, nd, nd, shape)];
            mag += fabs(xvv);
            if (kind <= 1) acc += xvv;
            else if (kind == 2) acc = xvv > acc ? xvv : acc;
            else if (kind == 3) acc = xvv < acc ? xvv : acc;
            else if (kind == 4) acc += exp(xvv - m);
            else if (xvv > best) { best = xvv; arg = idx[(axes[0] + nd) % nd]; }
        }
        double ref = kind == 1 ? acc / (double)rsize : kind == 4 ? m + log(acc) : kind == 5 ? (double)arg : acc;
        double atol = kind <= 1 ? rtol_of(ot) * mag / (kind == 1 ? (double)rsize : 1) : 0;
        if (!close_enough(yv[o], ref, ot, atol + 1e-12) && bad++ < 3)
            fprintf(stderr, "%s(%s)[%lld]: got %.9g ref %.9g\n", name, afo_dtype_name(t), (long long)o, yv[o], ref);
    }
    CHECK_MSG(bad == 0, "%s(%s) nd %d: %d mismatches", name, afo_dtype_name(t), nd, bad);
    free(xv), free(yv);
    afo_release(x), afo_release(y);
}

static void test_reductions(void) {
    static const struct { const char *name; reduce_fn op; int kind; } R[] = {
        {"sum", afo_sum, 0}, {"mean", afo_mean, 1}, {"max", afo_max, 2}, {"min", afo_min, 3},
        {"logsumexp", afo_logsumexp, 4}, {"argmax", NULL, 5},
    };
    int64_t s3[3] = {3, 5, 7}, s2[2] = {1, 2049}, s1[1] = {1};
    int ax0[1] = {0}, ax1[1] = {1}, axm1[1] = {-1}, ax02[2] = {0, 2};
    for (size_t k = 0; k < sizeof R / sizeof *R; k++)
        for (int t = 0; t < 4; t++)
            for (int strided = 0; strided < 2; strided++) {
                afo_dtype dt = FLOATS[t];
                check_reduce(R[k].name, R[k].op, R[k].kind, dt, 3, s3, ax1, 1, 0, strided);
                check_reduce(R[k].name, R[k].op, R[k].kind, dt, 3, s3, axm1, 1, 1, strided);
                check_reduce(R[k].name, R[k].op, R[k].kind, dt, 2, s2, axm1, 1, 0, strided);
                check_reduce(R[k].name, R[k].op, R[k].kind, dt, 1, s1, ax0, 1, 0, strided);
                if (R[k].kind != 5) {
                    check_reduce(R[k].name, R[k].op, R[k].kind, dt, 3, s3, ax02, 2, 1, strided);
                    check_reduce(R[k].name, R[k].op, R[k].kind, dt, 3, s3, NULL, 0, 0, strided);
                }
            }
    /* integer sums are exact */
    check_reduce("sum", afo_sum, 0, AFO_INT32, 3, s3, ax1, 1, 0, 1);
    check_reduce("max", afo_max, 2, AFO_INT64, 3, s3, ax02, 2, 0, 0);
}

static void test_softmax(void) {
    int64_t s[3] = {2, 5, 33};
    for (int t = 0; t < 4; t++)
        for (int axis = -3; axis < 3; axis++)
            for (int strided = 0; strided < 2; strided++) {
                afo_array *x = random_array(FLOATS[t], 3, s, 0, strided);
                afo_array *y = afo_softmax(x, axis);
                double *xv = read_f64(x), *yv = read_f64(y);
                int ax = (axis + 3) % 3, bad = 0;
                for (int64_t i = 0; i < 2 * 5 * 33; i++) {
                    int64_t idx[3];
                    unravel(i, 3, s, idx);
                    double m = -INFINITY, z = 0;
                    for (int64_t j = 0; j < s[ax]; j++) {
                        idx[ax] = j;
                        double v = xv[bcast_index(idx, 3, 3, s)];
                        m = v > m ? v : m;
                    }
                    for (int64_t j = 0; j < s[ax]; j++) {
                        idx[ax] = j;
                        z += exp(xv[bcast_index(idx, 3, 3, s)] - m);
                    }
                    unravel(i, 3, s, idx);
                    double ref = exp(xv[i] - m) / z;
                    if (!close_enough(yv[i], ref, FLOATS[t], 1e-7)) bad++;
                }
                CHECK_MSG(bad == 0, "softmax(%s) axis %d: %d mismatches", afo_dtype_name(FLOATS[t]), axis, bad);
                free(xv), free(yv);
                afo_release(x), afo_release(y);
            }
}

/* ------------------------------------------------------------ shape ops */

static void test_shape_ops(void) {
    int64_t s[3] = {4, 5, 6};
    for (int t = 0; t < 4; t++) {
        afo_array *x = random_array(FLOATS[t], 3, s, 0, 0);
        double *xv = read_f64(x);
        int perm[3] = {2, 0, 1};
        afo_array *tr = afo_transpose(x, perm);
        int64_t b[3] = {3, 0, -1}, e[3] = {-5, 5, -7}, st[3] = {-2, 2, -1};
        afo_array *sl = afo_slice(tr, b, e, st); /* [1, 2, 5] */
        double *sv = read_f64(sl);
        const int64_t *ss = afo_array_shape(sl);
        CHECK(ss[0] == 1 && ss[1] == 2 && ss[2] == 5);
        int bad = 0;
        for (int64_t i = 0; i < afo_array_size(sl); i++) {
            int64_t idx[3];
            unravel(i, 3, ss, idx);
            int64_t ti[3] = {3 - 2 * idx[0], 2 * idx[1], 4 - idx[2]}; /* index into tr [6,4,5] */
            double ref = xv[(ti[1] * 5 + ti[2]) * 6 + ti[0]];
            if (sv[i] != ref) bad++;
        }
        CHECK_MSG(bad == 0, "transpose+slice(%s): %d mismatches", afo_dtype_name(FLOATS[t]), bad);
        /* reshape of a non-contiguous view copies; of a contiguous one views */
        int64_t rs[2] = {-1, 5};
        afo_array *r = afo_reshape(sl, 2, rs);
        double *rv = read_f64(r);
        CHECK(afo_array_shape(r)[0] == 2 && memcmp(rv, sv, sizeof(double) * 10) == 0);
        /* concatenate along each axis, slice_update round trip */
        for (int axis = 0; axis < 3; axis++) {
            afo_array *parts[3] = {x, x, x};
            afo_array *c = afo_concatenate(parts, 3, axis);
            int64_t lo[3] = {0, 0, 0}, hi[3] = {4, 5, 6};
            lo[axis] = s[axis];
            hi[axis] = 2 * s[axis];
            afo_array *mid = afo_slice(c, lo, hi, NULL);
            double *mv = read_f64(mid);
            CHECK(memcmp(mv, xv, sizeof(double) * 120) == 0);
            afo_array *z = afo_zeros(FLOATS[t], 3, afo_array_shape(c));
            afo_array *u = afo_slice_update(z, x, lo, hi, NULL);
            afo_array *back = afo_slice(u, lo, hi, NULL);
            double *bv = read_f64(back), total = 0;
            CHECK(memcmp(bv, xv, sizeof(double) * 120) == 0);
            afo_array *abs_u = afo_abs(u), *abs_x = afo_abs(x);
            afo_array *all = afo_sum(abs_u, NULL, 0, 0);
            afo_array *part = afo_sum(abs_x, NULL, 0, 0);
            double pv = 0;
            afo_array_item(all, &total);
            afo_array_item(part, &pv);
            CHECK(fabs(total - pv) <= 1e-2 * pv); /* nothing written outside the slice */
            free(mv), free(bv);
            afo_release(c), afo_release(mid), afo_release(z), afo_release(u), afo_release(back), afo_release(all),
                afo_release(part), afo_release(abs_u), afo_release(abs_x);
        }
        free(xv), free(sv), free(rv);
        afo_release(x), afo_release(tr), afo_release(sl), afo_release(r);
    }
}

/* ------------------------------------------------------------ matmul */

static void check_matmul(afo_dtype t, int na, const int64_t *sa, int nb, const int64_t *sb, int trans_b) {
    afo_array *a = random_array(t, na, sa, 0, 0);
    afo_array *b = random_array(t, nb, sb, 0, trans_b);
    afo_array *y = afo_matmul(a, b);
    CHECK_MSG(y != NULL, "matmul: %s", afo_last_error());
    if (!y) { afo_release(a), afo_release(b); return; }
    double *av = read_f64(a), *bv = read_f64(b), *yv = read_f64(y);
    const int64_t *bs = afo_array_shape(b);
    int64_t K = sa[na - 1];
    int ynd = afo_array_ndim(y);
    const int64_t *ys = afo_array_shape(y);
    int bad = 0;
    int64_t sa2[AFO_MAX_DIMS], sb2[AFO_MAX_DIMS];
    int na2 = na, nb2 = nb;
    memcpy(sa2, sa, sizeof(int64_t) * (size_t)na);
    memcpy(sb2, bs, sizeof(int64_t) * (size_t)nb);
    if (na == 1) { sa2[0] = 1; sa2[1] = K; na2 = 2; }
    if (nb == 1) { sb2[0] = K; sb2[1] = 1; nb2 = 2; }
    for (int64_t i = 0; i < afo_array_size(y); i++) {
        int64_t idx[AFO_MAX_DIMS + 2] = {0}, full[AFO_MAX_DIMS + 2];
        unravel(i, ynd, ys, idx);
        /* the full [..., M, N] index of this output element */
        int fnd = (na2 > nb2 ? na2 : nb2);
        for (int d = 0; d < fnd; d++) full[d] = 0;
        int off = fnd - ynd - (na == 1) - (nb == 1);
        for (int d = 0; d < ynd; d++) full[off + d] = idx[d];
        if (nb == 1) { full[fnd - 1] = 0; if (na != 1) full[fnd - 2] = idx[ynd - 1]; }
        if (na == 1) { full[fnd - 2] = 0; if (nb != 1) full[fnd - 1] = idx[ynd - 1]; }
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < K; k++) {
            int64_t ia[AFO_MAX_DIMS + 2], ib[AFO_MAX_DIMS + 2];
            memcpy(ia, full, sizeof ia);
            memcpy(ib, full, sizeof ib);
            ia[fnd - 1] = k;
            ib[fnd - 2] = k;
            double x = av[bcast_index(ia, fnd, na2, sa2)], w = bv[bcast_index(ib, fnd, nb2, sb2)];
            ref += x * w;
            mag += fabs(x * w);
        }
        double tol = (t == AFO_FLOAT64 ? 1e-13 : 1e-5) * mag + rtol_of(afo_array_dtype(y)) * fabs(ref);
        if (!(fabs(yv[i] - ref) <= tol) && bad++ < 3)
            fprintf(stderr, "matmul(%s)[%lld]: got %.9g ref %.9g\n", afo_dtype_name(t), (long long)i, yv[i], ref);
    }
    CHECK_MSG(bad == 0, "matmul(%s) %dD@%dD: %d mismatches", afo_dtype_name(t), na, nb, bad);
    free(av), free(bv), free(yv);
    afo_release(a), afo_release(b), afo_release(y);
}

static void test_matmul(void) {
    static const struct { int na; int64_t a[4]; int nb; int64_t b[4]; } M[] = {
        {2, {1, 64}, 2, {64, 33}},   {2, {7, 13}, 2, {13, 5}},       {3, {2, 3, 17}, 2, {17, 9}},
        {3, {2, 1, 5}, 4, {3, 1, 5, 4}}, {1, {9}, 2, {9, 4}},       {2, {4, 9}, 1, {9}},
        {1, {9}, 1, {9}},            {2, {70, 129}, 2, {129, 65}},   {2, {1, 1}, 2, {1, 1}},
    };
    for (int t = 0; t < 4; t++)
        for (size_t k = 0; k < sizeof M / sizeof *M; k++)
            for (int trans = 0; trans < 2; trans++) check_matmul(FLOATS[t], M[k].na, M[k].a, M[k].nb, M[k].b, trans);
}

/* float32 activations times bf16 weights (seen transposed, as a Linear layer
 * does): computed without materialising a float32 copy of the weights. */
static void test_matmul_mixed(void) {
    int64_t xs[2] = {3, 300}, ws[2] = {2000, 300};
    afo_array *x = random_array(AFO_FLOAT32, 2, xs, 0, 0), *w = random_array(AFO_BFLOAT16, 2, ws, 0, 0);
    afo_array *wt = afo_transpose(w, NULL);
    afo_eval1(x), afo_eval1(w);
    double *xv = read_f64(x), *wv = read_f64(w);
    afo_clear_cache();
    size_t before = afo_get_active_memory();
    afo_reset_peak_memory();
    afo_array *y = afo_matmul(x, wt);
    CHECK(y && afo_array_dtype(y) == AFO_FLOAT32);
    CHECK(afo_eval1(y) == AFO_OK);
    size_t extra = afo_get_peak_memory() - before, out_bytes = 3 * 2000 * 4;
    CHECK_MSG(extra < out_bytes + 64 * 1024, "matmul used %zu bytes beyond the inputs", extra);
    double *yv = read_f64(y);
    int bad = 0;
    for (int m = 0; m < 3; m++)
        for (int n = 0; n < 2000; n++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < 300; k++) ref += xv[m * 300 + k] * wv[n * 300 + k], mag += fabs(xv[m * 300 + k] * wv[n * 300 + k]);
            bad += !(fabs(yv[m * 2000 + n] - ref) <= 1e-5 * mag);
        }
    CHECK(bad == 0);
    free(xv), free(wv), free(yv);
    afo_release(x), afo_release(w), afo_release(wt), afo_release(y);
}

static void test_errors(void) {
    int64_t s1[2] = {2, 3}, s2[2] = {4, 5};
    afo_array *a = afo_zeros(AFO_FLOAT32, 2, s1), *b = afo_zeros(AFO_FLOAT32, 2, s2);
    afo_array *y = afo_add(a, b);
    CHECK(y == NULL && strstr(afo_last_error(), "add: shapes [2, 3] and [4, 5] cannot be broadcast"));
    CHECK(afo_last_status() == AFO_ERR_INVALID_ARGUMENT);
    afo_clear_error();
    CHECK(afo_last_status() == AFO_OK && afo_last_error()[0] == '\0');
    y = afo_matmul(a, b);
    CHECK(y == NULL && strstr(afo_last_error(), "matmul: inner dimensions differ"));
    int64_t bad[2] = {7, -1};
    y = afo_reshape(a, 2, bad);
    CHECK(y == NULL && strstr(afo_last_error(), "reshape"));
    y = afo_sum(a, (int[]){2}, 1, 0);
    CHECK(y == NULL && strstr(afo_last_error(), "sum: axis 2 out of range"));
    afo_array *bl = afo_astype(a, AFO_BOOL);
    y = afo_neg(bl);
    CHECK(y == NULL && strstr(afo_last_error(), "neg: not defined for bool"));
    y = afo_add(NULL, a);
    CHECK(y == NULL && strstr(afo_last_error(), "input 0 is NULL"));
    afo_release(a), afo_release(b), afo_release(bl);
}

int main(void) {
    test_seed(7);
    RUN(test_unary);
    RUN(test_binary);
    RUN(test_where_and_promotion);
    RUN(test_astype);
    RUN(test_reductions);
    RUN(test_softmax);
    RUN(test_shape_ops);
    RUN(test_matmul);
    RUN(test_matmul_mixed);
    RUN(test_errors);
    return test_finish();
}
