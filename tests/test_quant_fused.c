/* The CPU's fused pairs around a decode matvec (src/backends/cpu/
 * quant_fused.c): quantized_matmul(_parts) of rms_norm, quantized_matmul of
 * swiglu, add of quantized_matmul, each against the same graph run as two
 * ops (the producer's value held, so not fused), at every kernel level, in
 * float32, bfloat16 and float16, at 4 and 8 bits (int8 and int16
 * activations) and 3, for 1 and 3 rows of x (the matvec) and 9 (declined,
 * run apart). Outputs land in NaN-poisoned buffers.
 *
 * The bound: two paths may differ where x's integer code does (the float
 * x in front of the quantization moves by a rounding: a 16-bit producer's
 * output is rounded to its dtype apart, not fused), by one level of its
 * block, and where the output is rounded once instead of twice (the
 * product q = y - r rounded apart, then each sum rounded):
 *   |fused - apart| <= sum_k |w_nk| (sx(k) + u_in |x_k|) + u_out (3 |y_n| + |r_n|) + 1e-5 sum_k |x_k w_nk|
 * with sx(k) = max |x| over k's block of 32 / 127 (4-bit weights, int8 x)
 * or / 32767 (int16), u the unit roundoff of the dtype (2^-24 float32,
 * 2^-8 bfloat16, 2^-11 float16). */
#include <math.h>
#include <string.h>

#include "afo/afo.h"
#include "backends/cpu/cpu_features.h"
#include "core/internal.h"
#include "support/test.h"

enum { K = 256, N = 96, GS = 64 };
typedef enum pair { NORM, NORM_PARTS, SWIGLU, RESIDUAL, PAIRS } pair;
static const char *const PAIR_NAMES[PAIRS] = {"rms_norm + qmm", "rms_norm + qmm_parts", "swiglu + qmm", "qmm + add"};

static double unit_roundoff(afo_dtype dt) {
    return dt == AFO_BFLOAT16 ? ldexp(1, -8) : dt == AFO_FLOAT16 ? ldexp(1, -11) : ldexp(1, -24);
}

static afo_array *random_array(afo_dtype dt, int ndim, const int64_t *shape, double lo, double hi) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = (float)test_uniform(lo, hi);
    afo_array *f = afo_array_from_data(v, AFO_FLOAT32, ndim, shape), *a = afo_astype(f, dt);
    free(v);
    afo_release(f);
    CHECK(a && afo_eval1(a) == AFO_OK);
    return a;
}

static float *read_f32(afo_array *a) {
    size_t n = (size_t)afo_array_size(a);
    float *v = malloc(sizeof(float) * n);
    CHECK_MSG(afo_array_read(a, AFO_FLOAT32, v, sizeof(float) * n) == AFO_OK, "%s", afo_last_error());
    return v;
}

static void poison(afo_dtype dt, int64_t M) {
    int64_t shape[2] = {M, N};
    afo_array *p = afo_full(NAN, dt, 2, shape);
    afo_eval1(p);
    afo_release(p);
}

typedef struct operands {
    afo_array *x, *norm_w, *gate, *up, *r;
    afo_array *w[3], *s[3], *b[3]; /* the weights [N, K] quantized, and as three parts of 64, 16, 16 rows */
    afo_array *wq, *sq, *bq;
    int bits;
} operands;

/* The pair's producer (a new reference) and consumer. */
static afo_array *producer_of(pair p, const operands *o) {
    switch (p) {
    case NORM:
    case NORM_PARTS: return afo_rms_norm(o->x, o->norm_w, 1e-5f);
    case SWIGLU: return afo_swiglu(o->gate, o->up);
    default: return afo_quantized_matmul(o->x, o->wq, o->sq, o->bq, 1, GS, o->bits);
    }
}
static afo_array *consumer_of(pair p, const operands *o, afo_array *prod) {
    if (p == RESIDUAL) return afo_add(o->r, prod);
    if (p == NORM_PARTS) return afo_quantized_matmul_parts(prod, 3, (afo_array **)o->w, (afo_array **)o->s,
                                                           (afo_array **)o->b, GS, o->bits);
    return afo_quantized_matmul(prod, o->wq, o->sq, o->bq, 1, GS, o->bits);
}

/* The worst |fused - apart| over the bound. */
static double check_pair(pair p, const operands *o, afo_dtype dt, int64_t M) {
    afo_array *held = producer_of(p, o), *apart = consumer_of(p, o, held);
    poison(dt, M);
    CHECK_MSG(afo_eval1(held) == AFO_OK && afo_eval1(apart) == AFO_OK, "%s", afo_last_error());
    int64_t before = afo_fused_count();
    afo_array *prod = producer_of(p, o), *fused = consumer_of(p, o, prod);
    afo_release(prod);
    poison(dt, M);
    CHECK_MSG(afo_eval1(fused) == AFO_OK, "%s", afo_last_error());
    CHECK_MSG(afo_fused_count() - before == (M <= 8), "%s M %lld: fused %lld times", PAIR_NAMES[p], (long long)M,
              (long long)(afo_fused_count() - before));
    afo_array *deq = afo_dequantize(o->wq, o->sq, o->bq, GS, o->bits);
    afo_array *x_of = p == RESIDUAL ? afo_retain(o->x) : afo_retain(held);
    float *got = read_f32(fused), *want = read_f32(apart), *w = read_f32(deq), *x = read_f32(x_of);
    float *r = p == RESIDUAL ? read_f32(o->r) : NULL;
    double lim = o->bits == 4 ? 127 : 32767, u_in = p == RESIDUAL ? 0 : unit_roundoff(dt), worst = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double bound = 0, dots = 0;
            for (int64_t k = 0; k < K; k++) {
                double amax = 0;
                for (int64_t j = k / 32 * 32; j < k / 32 * 32 + 32; j++) amax = fmax(amax, fabs(x[m * K + j]));
                double wk = fabs(w[n * K + k]), xk = fabs(x[m * K + k]);
                bound += wk * (amax / lim + u_in * xk);
                dots += wk * xk;
            }
            double y = want[m * N + n], rn = r ? fabs(r[m * N + n]) : 0;
            bound += unit_roundoff(dt) * (3 * fabs(y) + rn) + 1e-5 * dots;
            double e = fabs(got[m * N + n] - y) / bound;
            worst = isnan(e) || e > worst ? (isnan(e) ? INFINITY : e) : worst;
        }
    free(got), free(want), free(w), free(x), free(r);
    afo_release(deq), afo_release(x_of), afo_release(held), afo_release(apart), afo_release(fused);
    return worst;
}

static void test_fused_pairs(void) {
    static const afo_dtype dtypes[] = {AFO_FLOAT32, AFO_BFLOAT16, AFO_FLOAT16};
    static const int bits[] = {4, 8, 3};
    static const int64_t rows[] = {1, 3, 9};
    afo_cpu_level saved = afo_cpu_kernel_level();
    double worst[PAIRS] = {0};
    test_seed(11);
    for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++) {
        if (afo_cpu_set_kernel_level((afo_cpu_level)l) != AFO_OK) continue;
        for (int d = 0; d < 3; d++)
            for (int bi = 0; bi < 3; bi++)
                for (int ri = 0; ri < 3; ri++) {
                    afo_dtype dt = dtypes[d];
                    int64_t M = rows[ri], xs[2] = {M, K}, ws[2] = {N, K}, ys[2] = {M, N}, nk = K;
                    operands o = {.bits = bits[bi]};
                    o.x = random_array(dt, 2, xs, -2, 2);
                    o.norm_w = random_array(dt, 1, &nk, 0.5, 1.5);
                    o.gate = random_array(dt, 2, xs, -4, 4);
                    o.up = random_array(dt, 2, xs, -2, 2);
                    o.r = random_array(dt, 2, ys, -3, 3);
                    afo_array *wf = random_array(dt, 2, ws, -1, 1);
                    CHECK(afo_quantize(wf, GS, o.bits, &o.wq, &o.sq, &o.bq) == AFO_OK);
                    static const int64_t cut[4] = {0, 64, 80, N};
                    for (int i = 0; i < 3; i++) {
                        o.w[i] = afo_slice_axis(o.wq, 0, cut[i], cut[i + 1]);
                        o.s[i] = afo_slice_axis(o.sq, 0, cut[i], cut[i + 1]);
                        o.b[i] = afo_slice_axis(o.bq, 0, cut[i], cut[i + 1]);
                    }
                    for (pair p = 0; p < PAIRS; p++) {
                        double e = check_pair(p, &o, dt, M);
                        worst[p] = e > worst[p] ? e : worst[p];
                        CHECK_MSG(e <= 1.0, "[%s] %s %s %d bits M %lld: %.3g of the bound",
                                  afo_cpu_level_name((afo_cpu_level)l), PAIR_NAMES[p], afo_dtype_name(dt), o.bits,
                                  (long long)M, e);
                    }
                    afo_array *all[] = {o.x, o.norm_w, o.gate, o.up, o.r, wf, o.wq, o.sq, o.bq,
                                        o.w[0], o.w[1], o.w[2], o.s[0], o.s[1], o.s[2], o.b[0], o.b[1], o.b[2]};
                    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) afo_release(all[i]);
                }
    }
    afo_cpu_set_kernel_level(saved);
    for (pair p = 0; p < PAIRS; p++) fprintf(stderr, "  %s: at most %.3f of the bound\n", PAIR_NAMES[p], worst[p]);
}

int main(void) {
    RUN(test_fused_pairs);
    return test_finish();
}
