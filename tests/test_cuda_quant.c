/* The CUDA quantization kernels against the CPU backend: quantize,
 * dequantize and quantized_take bit for bit, quantized_matmul within a
 * bound relative to sum |x||w| (both paths: the decode matvec and the
 * tiled kernel), for every width, group size and float dtype. GPU outputs
 * are poisoned with NaN first, so an element a kernel leaves unwritten
 * fails the comparison. Skips (exit 77) on machines without a GPU. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "afo/afo.h"
#include "support/devcheck.h"
#include "support/test.h"

static const int BITS[] = {2, 3, 4, 5, 6, 8};
static const int GROUPS[] = {32, 64, 128};
static const afo_dtype DTYPES[] = {AFO_FLOAT32, AFO_BFLOAT16, AFO_FLOAT16};
#define LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void release_n(afo_array **a, int n) {
    for (int i = 0; i < n; i++) afo_release(a[i]);
}

/* A graph built with `d` as the default device; for the GPU its inputs are
 * uploaded first, so that their buffers are not the poisoned one. */
static afo_array *on(afo_device d, afo_array *(*build)(afo_array *const *, const int *), afo_array *const *in, int nin,
                     const int *p) {
    for (int i = 0; d == AFO_CUDA && i < nin; i++) CHECK(afo_array_prefetch(in[i], AFO_CUDA) == AFO_OK);
    afo_set_default_device(d);
    afo_array *out = build(in, p);
    afo_set_default_device(AFO_CPU);
    return out;
}

/* Weights whose groups cover the cases the rules treat apart: ordinary
 * spreads, constant groups, zero groups, negative-edge and positive-edge
 * groups, a spread below the 1e-7 scale floor and, with `kinds` 7, large
 * magnitudes (left out of matmuls, whose float16 sums they would overflow). */
static afo_array *weights(afo_dtype dt, int64_t rows, int64_t cols, int gs, int kinds) {
    int64_t n = rows * cols, shape[2] = {rows, cols};
    double *v = malloc(sizeof *v * (size_t)n);
    for (int64_t g = 0; g < n / gs; g++) {
        int kind = (int)(g % kinds);
        double base = test_normal(), spread = kind == 5 ? 3e-8 : kind == 6 ? 300 : 1;
        for (int j = 0; j < gs; j++) {
            double x = kind == 1 ? base : kind == 2 ? 0 : base + spread * test_normal();
            if (kind == 3) x = -fabs(x) * 2;
            if (kind == 4) x = fabs(x) * 2;
            v[g * gs + j] = x;
        }
    }
    afo_array *f = afo_array_from_data(v, AFO_FLOAT64, 2, shape), *w = afo_astype(f, dt);
    CHECK(afo_eval1(w) == AFO_OK);
    afo_release(f);
    free(v);
    return w;
}

/* p: group size, bits, part (0 packed, 1 scales, 2 biases) */
static afo_array *build_quantize(afo_array *const *in, const int *p) {
    afo_array *q[3];
    if (afo_quantize(in[0], p[0], p[1], &q[0], &q[1], &q[2]) != AFO_OK) return NULL;
    for (int i = 0; i < 3; i++)
        if (i != p[2]) afo_release(q[i]);
    return q[p[2]];
}

/* the weights transposed, quantized along the other axis: a strided input */
static afo_array *build_quantize_t(afo_array *const *in, const int *p) {
    afo_array *t = afo_transpose(in[0], NULL), *tin[1] = {t};
    afo_array *out = build_quantize(tin, p);
    afo_release(t);
    return out;
}

static afo_array *build_dequantize(afo_array *const *in, const int *p) {
    return afo_dequantize(in[0], in[1], in[2], p[0], p[1]);
}

static afo_array *build_take(afo_array *const *in, const int *p) {
    return afo_quantized_take(in[0], in[1], in[2], in[3], p[0], p[1]);
}

static void test_quantize_dequantize_exact(void) {
    char what[128];
    for (int d = 0; d < LEN(DTYPES); d++)
        for (int gi = 0; gi < LEN(GROUPS); gi++)
            for (int bi = 0; bi < LEN(BITS); bi++) {
                int gs = GROUPS[gi], bits = BITS[bi];
                afo_array *w = weights(DTYPES[d], 13, 3 * gs, gs, 7);
                afo_array *q[3];
                for (int part = 0; part < 3; part++) {
                    int p[3] = {gs, bits, part};
                    q[part] = on(AFO_CPU, build_quantize, &w, 1, p);
                    snprintf(what, sizeof what, "quantize %s g%d %d-bit part %d", afo_dtype_name(DTYPES[d]), gs, bits,
                             part);
                    afo_array *g = on(AFO_CUDA, build_quantize, &w, 1, p);
                    devcheck_same(what, AFO_CUDA, q[part], g);
                    afo_release(g);
                }
                /* strided input: the CPU packs a transposed copy of the same values */
                if (gs == 32) {
                    afo_array *wt = weights(DTYPES[d], 3 * gs, 32, gs, 7);
                    int p[3] = {gs, bits, 0};
                    afo_array *c = on(AFO_CPU, build_quantize_t, &wt, 1, p), *g = on(AFO_CUDA, build_quantize_t, &wt, 1, p);
                    snprintf(what, sizeof what, "quantize strided %s %d-bit", afo_dtype_name(DTYPES[d]), bits);
                    devcheck_same(what, AFO_CUDA, c, g);
                    afo_release(c), afo_release(g), afo_release(wt);
                }
                int p[2] = {gs, bits};
                afo_array *c = on(AFO_CPU, build_dequantize, q, 3, p), *g = on(AFO_CUDA, build_dequantize, q, 3, p);
                snprintf(what, sizeof what, "dequantize %s g%d %d-bit", afo_dtype_name(DTYPES[d]), gs, bits);
                devcheck_same(what, AFO_CUDA, c, g);
                afo_release(c), afo_release(g);
                /* every index dtype; negative indices count from the end */
                static const afo_dtype idts[3] = {AFO_INT32, AFO_UINT32, AFO_INT64};
                double iv[7] = {0, 12, 3, -1, 5, -13, 7};
                int64_t is[2] = {7, 1};
                for (int t = 0; t < 3; t++) {
                    if (idts[t] == AFO_UINT32) iv[3] = 11, iv[5] = 0;
                    afo_array *f = afo_array_from_data(iv, AFO_FLOAT64, 2, is), *ix = afo_astype(f, idts[t]);
                    afo_array *in[4] = {q[0], q[1], q[2], ix};
                    c = on(AFO_CPU, build_take, in, 4, p), g = on(AFO_CUDA, build_take, in, 4, p);
                    snprintf(what, sizeof what, "quantized_take %s g%d %d-bit %s", afo_dtype_name(DTYPES[d]), gs,
                             bits, afo_dtype_name(idts[t]));
                    devcheck_same(what, AFO_CUDA, c, g);
                    afo_release(c), afo_release(g), afo_release(ix), afo_release(f);
                }
                release_n(q, 3);
                afo_release(w);
            }
}

static void test_take_out_of_range(void) {
    afo_array *w = weights(AFO_FLOAT32, 5, 64, 64, 7), *q[3];
    CHECK(afo_quantize(w, 64, 4, &q[0], &q[1], &q[2]) == AFO_OK);
    int32_t bad[2] = {1, 5};
    int64_t n = 2;
    afo_array *ix = afo_array_from_data(bad, AFO_INT32, 1, &n), *in[4] = {q[0], q[1], q[2], ix};
    int p[2] = {64, 4};
    afo_array *g = on(AFO_CUDA, build_take, in, 3, p); /* the indices stay on the host */
    CHECK(g && afo_eval1(g) == AFO_ERR_INVALID_ARGUMENT);
    CHECK_MSG(strstr(afo_last_error(), "out of range") != NULL, "error: %s", afo_last_error());
    /* indices made on the GPU are not checked (that would wait for it): the
     * row of the bad one is NaN, the good one is exact */
    afo_set_default_device(AFO_CUDA);
    afo_array *neg = afo_neg(ix), *ixg = afo_neg(neg);
    afo_set_default_device(AFO_CPU);
    in[3] = ixg;
    afo_array *t = on(AFO_CUDA, build_take, in, 3, p);
    const float *tv = t ? afo_array_data(t) : NULL;
    CHECK_MSG(tv != NULL, "%s", afo_last_error());
    int32_t one = 1;
    afo_array *ix1 = afo_array_from_data(&one, AFO_INT32, 1, (int64_t[]){1});
    in[3] = ix1;
    afo_array *ref = on(AFO_CPU, build_take, in, 4, p);
    const float *rv = afo_array_data(ref);
    int good = 0, nan = 0;
    for (int i = 0; tv && rv && i < 64; i++) good += tv[i] == rv[i], nan += isnan(tv[64 + i]);
    CHECK_MSG(good == 64 && nan == 64, "device indices: %d of 64 exact, %d of 64 NaN", good, nan);
    afo_release(t), afo_release(ref), afo_release(ix1), afo_release(neg), afo_release(ixg);
    afo_release(g), afo_release(ix), afo_release(w);
    release_n(q, 3);
}

/* ------------------------------------------------------------ quantized matmul */

/* p: group size, bits, transpose */
static afo_array *build_qmm(afo_array *const *in, const int *p) {
    return afo_quantized_matmul(in[0], in[1], in[2], in[3], p[2], p[0], p[1]);
}

/* A product's operands and result as float32 on the host: x, y, and the
 * CPU's dequantized weights with float32 scales and biases (the kernels'
 * s*q + b before rounding). Free the three. */
typedef struct qmm_host {
    float *w, *x, *got;
} qmm_host;

static qmm_host qmm_read(afo_array *const *in, afo_array *y, int64_t M, int64_t K, int64_t N, int gs, int bits) {
    afo_array *s32 = afo_astype(in[2], AFO_FLOAT32), *b32 = afo_astype(in[3], AFO_FLOAT32);
    afo_array *dq = afo_dequantize(in[1], s32, b32, gs, bits);
    qmm_host h = {malloc(sizeof(float) * (size_t)(K * N)), malloc(sizeof(float) * (size_t)(M * K)),
                  malloc(sizeof(float) * (size_t)(M * N))};
    CHECK(afo_array_read(dq, AFO_FLOAT32, h.w, sizeof(float) * (size_t)(K * N)) == AFO_OK);
    CHECK(afo_array_read(in[0], AFO_FLOAT32, h.x, sizeof(float) * (size_t)(M * K)) == AFO_OK);
    CHECK(afo_array_read(y, AFO_FLOAT32, h.got, sizeof(float) * (size_t)(M * N)) == AFO_OK);
    afo_release(s32), afo_release(b32), afo_release(dq);
    return h;
}

static void qmm_host_free(qmm_host *h) { free(h->w), free(h->x), free(h->got); }

/* Largest |y - ref| / sum_k |x||w| over y, with ref in float64 from the
 * CPU's dequantized weights. */
static double qmm_error(afo_array *const *in, afo_array *y, int64_t M, int64_t K, int64_t N, int gs, int bits, int tr) {
    qmm_host h = qmm_read(in, y, M, K, N, gs, bits);
    const float *w = h.w, *x = h.x, *got = h.got;
    double worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)x[i * K + k] * (tr ? w[j * K + k] : w[k * N + j]);
                acc += p;
                mag += fabs(p);
            }
            double e = fabs(got[i * N + j] - acc) / (mag + 1e-30);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    qmm_host_free(&h);
    return worst;
}

/* The bound: float32 x keeps float32 accuracy (a few ulps of the terms'
 * magnitude); 16-bit x rounds the result once to its type (2^-11 or 2^-8
 * relative), and the tensor core path rounds the dequantized weights to it
 * too: twice that, with a margin. */
static double qmm_bound(afo_dtype xdt) { return xdt == AFO_FLOAT32 ? 1e-5 : xdt == AFO_FLOAT16 ? 2e-3 : 1e-2; }

/* One row of 16-bit x against 4- or 8-bit levels goes through the int8 matvec
 * (test_int8_matvec holds it to its own bound): rounding x to 1/254 of its
 * chunk's largest |x| is up to 2/254 of sum |x||w| for x uniform in
 * [-2, 2]; 1e-2 covers it and the result's rounding. */
static double path_bound(afo_dtype xdt, int64_t M, int bits, int tr) {
    bool int8_x = xdt != AFO_FLOAT32 && M == 1 && tr && (bits == 8 || bits == 4);
    return int8_x ? 1e-2 : qmm_bound(xdt);
}

static double g_worst[3];

static void check_qmm(afo_dtype dt, int64_t M, int64_t K, int64_t N, int gs, int bits, int tr) {
    /* transpose: w [N, K] (N odd); else w [K, N] (K odd) */
    afo_array *w = tr ? weights(dt, N, K, gs, 6) : weights(dt, K, N, gs, 6), *in[4];
    CHECK(afo_quantize(w, gs, bits, &in[1], &in[2], &in[3]) == AFO_OK);
    int64_t xs[2] = {M, K};
    afo_array *f = devcheck_random(AFO_FLOAT32, 2, xs, -2, 2);
    in[0] = afo_astype(f, dt);
    CHECK(afo_eval(in, 4) == AFO_OK);
    int p[3] = {gs, bits, tr};
    afo_array *y = on(AFO_CUDA, build_qmm, in, 4, p);
    devcheck_poison_bytes(AFO_CUDA, (size_t)(M * N) * afo_dtype_size(dt));
    CHECK_MSG(y && afo_eval1(y) == AFO_OK, "%s", afo_last_error());
    if (y) {
        CHECK(afo_array_device(y) == AFO_CUDA && afo_array_dtype(y) == dt);
        double e = qmm_error(in, y, M, K, N, gs, bits, tr);
        int d = dt == AFO_FLOAT32 ? 0 : dt == AFO_BFLOAT16 ? 1 : 2;
        if (e > g_worst[d]) g_worst[d] = e;
        double bound = path_bound(dt, M, bits, tr);
        CHECK_MSG(e <= bound, "quantized_matmul %s M %lld K %lld N %lld g%d %d-bit %s: error %.3g > %.3g",
                  afo_dtype_name(dt), (long long)M, (long long)K, (long long)N, gs, bits, tr ? "x@w^T" : "x@w", e,
                  bound);
    }
    afo_release(y), afo_release(f), afo_release(w);
    release_n(in, 4);
}

static void test_quantized_matmul(void) {
    static const int64_t Ms[] = {1, 3, 8, 33, 512};
    for (int d = 0; d < LEN(DTYPES); d++)
        for (int gi = 0; gi < LEN(GROUPS); gi++)
            for (int bi = 0; bi < LEN(BITS); bi++)
                for (int mi = 0; mi < LEN(Ms); mi++)
                    for (int tr = 0; tr <= 1; tr++)
                        check_qmm(DTYPES[d], Ms[mi], tr ? 2 * GROUPS[gi] : 37, tr ? 37 : 2 * GROUPS[gi], GROUPS[gi],
                                  BITS[bi], tr);
    /* several chunks per lane in the matvec (K > 1024), several tiles
     * each way, and K tails in x @ w */
    for (int bi = 0; bi < LEN(BITS); bi++)
        for (int tr = 0; tr <= 1; tr++) {
            check_qmm(AFO_BFLOAT16, 1, 2560, tr ? 131 : 192, 64, BITS[bi], tr);
            check_qmm(AFO_FLOAT32, 5, 2560, tr ? 131 : 192, 64, BITS[bi], tr);
            check_qmm(AFO_BFLOAT16, 1, 64, 133, 32, BITS[bi], 1); /* 2 chunks a row: 4 row groups a block */
            /* thousands of row groups, as a decode step's products have */
            if (tr) check_qmm(BITS[bi] == 8 ? AFO_FLOAT32 : AFO_BFLOAT16, 1, 2048, 6001, 64, BITS[bi], 1);
            check_qmm(AFO_FLOAT16, 200, tr ? 2560 : 301, tr ? 259 : 384, 128, BITS[bi], tr);
        }
    printf("quantized_matmul worst error / sum|x||w|: float32 %.3g, bfloat16 %.3g, float16 %.3g\n", g_worst[0],
           g_worst[1], g_worst[2]);
}

/* One row of 16-bit x against 4- or 8-bit W goes through the int8 matvec
 * (quant_mv.cu): x rounded per chunk of 32 to sx * xq, sx = max|x| / 127.
 * Each output within sum_k |w_k| sx(k) / 2 (the rounding of x) + its own
 * rounding to x's type (|y| 2^-8 or 2^-11) + 1e-5 sum |x||w| (float sums),
 * against a float64 reference on the dequantized weights. With `norm` the
 * product takes rms_norm(x, nw) and normalizes x itself (one fused kernel;
 * its sum of squares goes in another order than the norm kernel's, so x's
 * elements may round one step of x's type apart: + 2^-8 or 2^-11 sum |x||w|),
 * and the reference takes the CPU's rms_norm(x, nw). */
static afo_array *build_normed_qmm(afo_array *const *in, const int *p) {
    afo_array *xn = afo_rms_norm(in[0], in[4], 1e-5f), *y = build_qmm((afo_array *const[]){xn, in[1], in[2], in[3]}, p);
    afo_release(xn);
    return y;
}

static void check_int8_matvec(afo_dtype dt, int64_t K, int64_t N, int gs, int bits, bool norm) {
    afo_array *wsrc = weights(dt, N, K, gs, 6), *in[5];
    CHECK(afo_quantize(wsrc, gs, bits, &in[1], &in[2], &in[3]) == AFO_OK);
    int64_t xs[2] = {1, K}, ws[1] = {K};
    afo_array *f = devcheck_random(AFO_FLOAT32, 2, xs, -3, 3), *fw = devcheck_random(AFO_FLOAT32, 1, ws, 0.5, 1.5);
    in[0] = afo_astype(f, dt);
    in[4] = afo_astype(fw, dt);
    CHECK(afo_eval(in, 5) == AFO_OK);
    int p[3] = {gs, bits, 1};
    int64_t before = afo_fused_count();
    afo_array *y = on(AFO_CUDA, norm ? build_normed_qmm : build_qmm, in, norm ? 5 : 4, p);
    devcheck_poison_bytes(AFO_CUDA, (size_t)N * afo_dtype_size(dt));
    CHECK_MSG(y && afo_eval1(y) == AFO_OK, "%s", afo_last_error());
    CHECK_MSG(!norm || afo_fused_count() > before, "rms_norm + quantized_matmul K %lld: not one kernel", (long long)K);
    afo_array *xref = norm ? afo_rms_norm(in[0], in[4], 1e-5f) : afo_retain(in[0]);
    CHECK(afo_eval1(xref) == AFO_OK);
    qmm_host h = qmm_read((afo_array *const[]){xref, in[1], in[2], in[3]}, y, 1, K, N, gs, bits);
    const float *w = h.w, *x = h.x, *got = h.got;
    float *sx = malloc(sizeof(float) * (size_t)(K / 32));
    for (int64_t c = 0; c < K / 32; c++) {
        float m = 0;
        for (int e = 0; e < 32; e++) m = fmaxf(m, fabsf(x[32 * c + e]));
        sx[c] = m / 127;
    }
    double own = dt == AFO_BFLOAT16 ? 0x1p-8 : 0x1p-11, worst = 0;
    int64_t bad = 0;
    for (int64_t n = 0; n < N; n++) {
        double ref = 0, mag = 0, xround = 0;
        for (int64_t k = 0; k < K; k++) {
            ref += (double)x[k] * w[n * K + k];
            mag += fabs((double)x[k] * w[n * K + k]);
            xround += fabs((double)w[n * K + k]) * sx[k / 32] / 2;
        }
        double bound = xround + own * fabs(ref) + (norm ? own : 0) * mag + 1e-5 * mag, e = fabs(got[n] - ref);
        if (!(e <= bound)) bad++;
        if (e / bound > worst) worst = e / bound;
    }
    CHECK_MSG(bad == 0, "int8 matvec %s%s K %lld N %lld g%d %d-bit: %lld outputs outside the bound (worst %.3g of it)",
              norm ? "rms_norm + " : "", afo_dtype_name(dt), (long long)K, (long long)N, gs, bits, (long long)bad,
              worst);
    qmm_host_free(&h);
    free(sx);
    afo_release(y), afo_release(xref), afo_release(f), afo_release(fw), afo_release(wsrc);
    release_n(in, 5);
}

static void test_int8_matvec(void) {
    /* x's preparation loads a thread's 1, 2, 3 or 4 octets at once (K up
     * to 20480 at 640 threads), past that round by round (24576) */
    static const int64_t Ks[] = {128, 2560, 4096, 5632, 14336, 18944, 24576};
    static const int64_t Ns[] = {1, 37, 259};
    for (int bits = 4; bits <= 8; bits += 4)
        for (int gi = 0; gi < LEN(GROUPS); gi++)
            for (int ki = 0; ki < LEN(Ks); ki++)
                for (int ni = 0; ni < LEN(Ns); ni++)
                    check_int8_matvec(ki % 2 ? AFO_FLOAT16 : AFO_BFLOAT16, Ks[ki], Ns[ni], GROUPS[gi], bits, ni == 1);
    /* a decode step's down product: 30 rows of 14 steps a block, shared by
     * 20 warps, so most rows are summed in two parts */
    for (int bits = 4; bits <= 8; bits += 4) check_int8_matvec(AFO_BFLOAT16, 14336, 4001, 64, bits, bits == 8);
}

/* Rows split between warps meet in a sum in shared memory, two parts at
 * most a row: the same product gives the same bits every time. */
static void test_int8_matvec_repeatable(void) {
    enum { K = 14336, N = 4001 };
    afo_array *wsrc = weights(AFO_BFLOAT16, N, K, 64, 6), *in[4];
    CHECK(afo_quantize(wsrc, 64, 4, &in[1], &in[2], &in[3]) == AFO_OK);
    int64_t xs[2] = {1, K};
    afo_array *f = devcheck_random(AFO_FLOAT32, 2, xs, -3, 3);
    in[0] = afo_astype(f, AFO_BFLOAT16);
    CHECK(afo_eval(in, 4) == AFO_OK);
    int p[3] = {64, 4, 1};
    uint16_t *got[2] = {malloc(sizeof(uint16_t) * N), malloc(sizeof(uint16_t) * N)};
    for (int r = 0; r < 2; r++) {
        afo_array *y = on(AFO_CUDA, build_qmm, in, 4, p);
        CHECK_MSG(y && afo_eval1(y) == AFO_OK, "%s", afo_last_error());
        CHECK(afo_array_read(y, AFO_BFLOAT16, got[r], sizeof(uint16_t) * N) == AFO_OK);
        afo_release(y);
    }
    CHECK_MSG(memcmp(got[0], got[1], sizeof(uint16_t) * N) == 0, "int8 matvec K %d N %d: two runs differ", K, N);
    free(got[0]), free(got[1]);
    afo_release(f), afo_release(wsrc);
    release_n(in, 4);
}

/* r + x @ dequantize(W)^T: the residual add joins the decode matvec's sums
 * (afo_fused_fn) for up to 8 rows of x, and stays apart past them (the
 * tiled kernel). Checked against r + x w in float64, within the product's
 * bound of sum |x||w| plus one rounding of |r + x w| to x's type. */
static afo_array *build_residual_qmm(afo_array *const *in, const int *p) {
    afo_array *y = build_qmm(in, p), *r = afo_add(in[4], y);
    afo_release(y);
    return r;
}

static void check_residual_qmm(afo_dtype dt, int64_t M, int64_t K, int64_t N, int bits, bool expect_fused) {
    afo_array *w = weights(dt, N, K, 64, 6), *in[5];
    CHECK(afo_quantize(w, 64, bits, &in[1], &in[2], &in[3]) == AFO_OK);
    int64_t xs[2] = {M, K}, ys[2] = {M, N};
    afo_array *f = devcheck_random(AFO_FLOAT32, 2, xs, -2, 2), *fr = devcheck_random(AFO_FLOAT32, 2, ys, 2, 3);
    in[0] = afo_astype(f, dt);
    in[4] = afo_astype(fr, dt);
    CHECK(afo_eval(in, 5) == AFO_OK);
    int p[3] = {64, bits, 1};
    int64_t before = afo_fused_count();
    afo_array *y = on(AFO_CUDA, build_residual_qmm, in, 5, p);
    devcheck_poison_bytes(AFO_CUDA, (size_t)(M * N) * afo_dtype_size(dt));
    CHECK_MSG(y && afo_eval1(y) == AFO_OK, "%s", afo_last_error());
    CHECK_MSG((afo_fused_count() > before) == expect_fused, "residual quantized_matmul M %lld: %s as one kernel",
              (long long)M, expect_fused ? "not" : "wrongly");
    float *r = malloc(sizeof(float) * (size_t)(M * N));
    CHECK(afo_array_read(in[4], AFO_FLOAT32, r, sizeof(float) * (size_t)(M * N)) == AFO_OK);
    qmm_host h = qmm_read(in, y, M, K, N, 64, bits);
    double own = dt == AFO_FLOAT32 ? 0 : dt == AFO_BFLOAT16 ? 0x1p-8 : 0x1p-11, worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double ref = r[i * N + j], mag = 0;
            for (int64_t k = 0; k < K; k++) {
                double t = (double)h.x[i * K + k] * h.w[j * K + k];
                ref += t, mag += fabs(t);
            }
            double e = fabs(h.got[i * N + j] - ref) / (path_bound(dt, M, bits, 1) * mag + own * fabs(ref) + 1e-30);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    CHECK_MSG(worst <= 1, "residual quantized_matmul %s M %lld K %lld N %lld %d-bit: error %.3g of the bound",
              afo_dtype_name(dt), (long long)M, (long long)K, (long long)N, bits, worst);
    qmm_host_free(&h);
    free(r);
    afo_release(y), afo_release(f), afo_release(fr), afo_release(w);
    release_n(in, 5);
}

static void test_residual_matmul(void) {
    for (int d = 0; d < LEN(DTYPES); d++)
        for (int bits = 4; bits <= 8; bits += 4) {
            check_residual_qmm(DTYPES[d], 1, 4096, 259, bits, true);
            check_residual_qmm(DTYPES[d], 3, 256, 37, bits, true);
            check_residual_qmm(DTYPES[d], 33, 256, 37, bits, false);
        }
}

/* [r +] swiglu(gate, up) @ dequantize(W)^T for one row: the int8 matvec
 * computes swiglu as it quantizes its input (a chain of three ops in one
 * kernel with the residual, a pair without), and must give the very bits
 * of swiglu's own kernel followed by the product (itself checked above
 * against float64). K 14336 fills whole steps of the matvec, K 2112 not. */
static afo_array *build_swiglu_qmm(afo_array *const *in, const int *p) {
    afo_array *sw = afo_swiglu(in[4], in[5]);
    afo_array *qin[4] = {sw, in[1], in[2], in[3]}, *y = build_qmm(qin, p);
    afo_release(sw);
    if (!p[3]) return y;
    afo_array *r = afo_add(in[0], y);
    afo_release(y);
    return r;
}

static void check_swiglu_qmm(afo_dtype dt, int64_t K, int64_t N, int bits, bool residual) {
    afo_array *w = weights(dt, N, K, 64, 6), *in[6];
    CHECK(afo_quantize(w, 64, bits, &in[1], &in[2], &in[3]) == AFO_OK);
    int64_t xs[2] = {1, K}, ys[2] = {1, N};
    afo_array *fr = devcheck_random(AFO_FLOAT32, 2, ys, -2, 2), *fg = devcheck_random(AFO_FLOAT32, 2, xs, -6, 6),
              *fu = devcheck_random(AFO_FLOAT32, 2, xs, -2, 2);
    in[0] = afo_astype(fr, dt);
    afo_set_default_device(AFO_CUDA); /* gate and up made on the GPU, as a model's product makes them */
    in[4] = afo_astype(fg, dt), in[5] = afo_astype(fu, dt);
    afo_set_default_device(AFO_CPU);
    CHECK(afo_eval(in, 6) == AFO_OK);
    int p[4] = {64, bits, 1, residual};
    /* apart: swiglu evaluated first, so the product reads its output */
    afo_set_default_device(AFO_CUDA);
    afo_array *sw = afo_swiglu(in[4], in[5]);
    afo_set_default_device(AFO_CPU);
    CHECK(sw && afo_eval1(sw) == AFO_OK);
    afo_array *apart[5] = {sw, in[1], in[2], in[3], in[0]}; /* the residual last, as build_residual_qmm takes it */
    afo_array *z = on(AFO_CUDA, residual ? build_residual_qmm : build_qmm, apart, residual ? 5 : 4, p);
    CHECK_MSG(z && afo_eval1(z) == AFO_OK, "%s", afo_last_error());
    char what[96];
    snprintf(what, sizeof what, "swiglu + quantized_matmul%s %s K %lld N %lld %d-bit", residual ? " + add" : "",
             afo_dtype_name(dt), (long long)K, (long long)N, bits);
    int64_t before = afo_fused_count();
    afo_array *y = on(AFO_CUDA, build_swiglu_qmm, in, 6, p);
    devcheck_same(what, AFO_CUDA, z, y);
    int64_t along = afo_fused_count() - before;
    CHECK_MSG(along == (residual ? 2 : 1), "%s: %lld ops computed along", what, (long long)along);
    afo_release(y), afo_release(z), afo_release(sw), afo_release(fr), afo_release(fg), afo_release(fu),
        afo_release(w);
    release_n(in, 6);
}

static void test_swiglu_matmul(void) {
    const afo_dtype halves[2] = {AFO_BFLOAT16, AFO_FLOAT16};
    for (int d = 0; d < 2; d++)
        for (int bits = 4; bits <= 8; bits += 4)
            for (int residual = 0; residual < 2; residual++) {
                check_swiglu_qmm(halves[d], 14336, 259, bits, residual);
                check_swiglu_qmm(halves[d], 2112, 37, bits, residual);
                check_swiglu_qmm(halves[d], 5632, 37, bits, residual);
                check_swiglu_qmm(halves[d], 24576, 37, bits, residual);
            }
}

/* The int8 matvec reads its weights and its norm's weight before it waits
 * for the kernel before it, so when kernels still queued make them it must
 * start after that kernel instead (afo_cuda_settled). A norm weight that a
 * long reduction makes in the same evaluation, just before (its 16 blocks
 * let the next kernel start as they begin, and the product's blocks fit
 * beside them), into a poisoned buffer: the normed product must equal, bit
 * for bit, the same product run again once the stream has drained. */
static void test_norm_weight_made_just_before(void) {
    enum { K = 4096, N = 1024, ROUNDS = 8 };
    afo_array *wsrc = weights(AFO_BFLOAT16, N, K, 64, 6), *q[3];
    CHECK(afo_quantize(wsrc, 64, 4, &q[0], &q[1], &q[2]) == AFO_OK);
    int64_t xs[2] = {1, K}, wide[2] = {1 << 14, K};
    afo_array *fx = devcheck_random(AFO_FLOAT32, 2, xs, -3, 3), *x = afo_astype(fx, AFO_BFLOAT16);
    afo_array *fw = devcheck_random(AFO_FLOAT32, 2, xs, 0.5 / wide[0], 1.5 / wide[0]), *w0 = afo_astype(fw, AFO_BFLOAT16);
    afo_array *all[] = {x, w0, q[0], q[1], q[2]};
    CHECK(afo_eval(all, 5) == AFO_OK);
    for (int i = 0; i < 5; i++) CHECK(afo_array_prefetch(all[i], AFO_CUDA) == AFO_OK);
    for (int r = 0; r < ROUNDS; r++) {
        afo_array *y[2], *nw = NULL;
        for (int run = 0; run < 2; run++) {
            CHECK(afo_synchronize(AFO_CUDA) == AFO_OK); /* everything but what this run makes settled */
            afo_set_default_device(AFO_CUDA);
            if (!nw) {
                afo_array *rows = afo_broadcast_to(w0, 2, wide);
                nw = afo_sum(rows, (const int[]){0}, 1, 0);
                afo_release(rows);
            }
            afo_array *xn = afo_rms_norm(x, nw, 1e-5f);
            y[run] = afo_quantized_matmul(xn, q[0], q[1], q[2], 1, 64, 4);
            afo_set_default_device(AFO_CPU);
            afo_release(xn);
            int64_t before = afo_fused_count();
            if (run == 0) { /* the norm weight and the product in one evaluation */
                devcheck_poison_bytes(AFO_CUDA, K * sizeof(uint16_t));
                afo_array *roots[] = {nw, y[0]};
                CHECK_MSG(afo_eval(roots, 2) == AFO_OK, "%s", afo_last_error());
            } else {
                char what[96];
                snprintf(what, sizeof what, "round %d: the product against its rerun on a settled norm weight", r);
                devcheck_same(what, AFO_CUDA, y[0], y[1]);
            }
            CHECK_MSG(afo_fused_count() > before, "rms_norm + quantized_matmul: not one kernel");
        }
        afo_release(y[0]), afo_release(y[1]), afo_release(nw);
    }
    afo_release(wsrc), afo_release(fx), afo_release(x), afo_release(fw), afo_release(w0);
    release_n(q, 3);
}

/* A strided x (a transposed view) reaches the kernels through a copy. */
static void test_strided_x(void) {
    afo_array *w = weights(AFO_FLOAT32, 40, 128, 64, 6), *in[4];
    CHECK(afo_quantize(w, 64, 4, &in[1], &in[2], &in[3]) == AFO_OK);
    int64_t xs[2] = {128, 3};
    afo_array *xt = devcheck_random(AFO_FLOAT32, 2, xs, -1, 1);
    in[0] = afo_transpose(xt, NULL);
    int p[3] = {64, 4, 1};
    afo_array *c = on(AFO_CPU, build_qmm, in, 4, p), *g = on(AFO_CUDA, build_qmm, in, 4, p);
    CHECK(afo_eval1(c) == AFO_OK && afo_eval1(g) == AFO_OK);
    double e = qmm_error(in, g, 3, 128, 40, 64, 4, 1), ec = qmm_error(in, c, 3, 128, 40, 64, 4, 1);
    /* the CPU's matvec rounds x to int8 against 4-bit weights: up to 1/254
     * of a chunk's largest |x| (<= 1) per element, against sum |x||w| with
     * E|x| = 1/2: at most 2/254 (the AVX-512 kernel reached 6.0e-3 here) */
    CHECK_MSG(e <= qmm_bound(AFO_FLOAT32) && ec <= 8e-3, "strided x: error %.3g (cpu %.3g)", e, ec);
    afo_release(c), afo_release(g), afo_release(xt), afo_release(w);
    release_n(in, 4);
}

int main(void) {
    if (!devcheck_available(AFO_CUDA)) return 77;
    RUN(test_quantize_dequantize_exact);
    RUN(test_take_out_of_range);
    RUN(test_quantized_matmul);
    RUN(test_int8_matvec);
    RUN(test_int8_matvec_repeatable);
    RUN(test_residual_matmul);
    RUN(test_swiglu_matmul);
    RUN(test_strided_x);
    RUN(test_norm_weight_made_just_before);
    return test_finish();
}
