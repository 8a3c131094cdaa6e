/* The integer prefill GEMM (quant_gemm.h): every SIMD level's panel kernel,
 * through the threaded driver, against the scalar reference on random
 * weights and activations: 4 and 8 bits, group sizes 32/64/128, scales in
 * float32/bfloat16/float16, row counts off the 4-row tile, column counts
 * off the 16-column tile, several panels along K, and thread counts that
 * split N, then M. Outputs start as NaN. Panel packing against the scalar
 * packing, byte for byte. (The end-to-end error against
 * float64, activation rounding included, is test_quant's.) */
#include <string.h>

#include "afo/afo.h"
#include "backends/cpu/cpu_features.h"
#include "backends/cpu/quant_gemm.h"
#include "support/test.h"

#define LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

static double g_scale = 1.0;

/* Packed weights [N, K] with their parameters (afo_quantize of random
 * values) and quantized activations [M, K] (the scalar preparation). */
typedef struct problem {
    int bits, gs, M;
    int64_t N, K;
    afo_array *q[3];
    afo_qx qx;
    void *qx_buf;
    float *y, *ref;
} problem;

static problem problem_make(int bits, int gs, afo_dtype sdt, int M, int64_t N, int64_t K) {
    problem p = {.bits = bits, .gs = gs, .M = M, .N = N, .K = K};
    int64_t ws[2] = {N, K};
    float *w = malloc((size_t)(N * K) * sizeof(float)), *x = malloc((size_t)(M * K) * sizeof(float));
    for (int64_t i = 0; i < N * K; i++) w[i] = (float)(test_normal() * (i % 61 == 0 ? 4 : 1));
    /* x with outliers, so that blocks' scales differ */
    for (int64_t i = 0; i < M * K; i++) x[i] = (float)(test_normal() * (i % 97 == 0 ? 30 : 1));
    afo_array *wa = afo_array_from_data(w, AFO_FLOAT32, 2, ws), *wd = afo_astype(wa, sdt);
    CHECK(afo_quantize(wd, gs, bits, &p.q[0], &p.q[1], &p.q[2]) == AFO_OK);
    CHECK(afo_eval(p.q, 3) == AFO_OK);
    size_t bytes = afo_qx_bytes(M, K, gs, bits);
    p.qx_buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    afo_qx_init(&p.qx, p.qx_buf, M, K, gs, bits);
    afo_qx_prep_scalar(&p.qx, x);
    p.y = malloc((size_t)(M * N) * sizeof(float));
    p.ref = malloc((size_t)(M * N) * sizeof(float));
    afo_release(wa), afo_release(wd);
    free(w), free(x);
    return p;
}

static void problem_free(problem *p) {
    for (int i = 0; i < 3; i++) afo_release(p->q[i]);
    free(p->qx_buf), free(p->y), free(p->ref);
}

static afo_qmv_args args_of(const problem *p, float *y) {
    return (afo_qmv_args){.bits = p->bits, .gs = p->gs, .M = p->M, .K = p->K, .G = p->K / p->gs,
                          .words = p->K * p->bits / 32, .qx = &p->qx, .w = afo_array_data(p->q[0]),
                          .s = afo_array_data(p->q[1]), .b = afo_array_data(p->q[2]),
                          .sdt = afo_array_dtype(p->q[1]), .y = y, .ldy = p->N};
}

/* sum over the terms both sides add, |b xsum| per group and
 * |s sx (levels . xq)| per block, in double */
static double terms_abs(const afo_qmv_args *a, int m, int64_t n, const float *s, const float *b, const float *lv) {
    const afo_qx *qx = a->qx;
    double t = 0;
    for (int64_t g = 0; g < a->G; g++) t += fabs((double)b[n * a->G + g] * qx->xsum[m * a->G + g]);
    for (int64_t blk = 0; blk < a->K / 32; blk++) {
        double dot = 0;
        for (int i = 0; i < 32; i++) {
            double xv = qx->x8 ? ((const int8_t *)qx->xq)[m * qx->ldx + afo_qx_x8_pos(blk, i)]
                               : ((const int16_t *)qx->xq)[m * qx->ldx + blk * 32 + i];
            dot += lv[blk * 32 + i] * xv;
        }
        t += fabs(dot * s[n * a->G + blk * 32 / a->gs] * qx->sx[m * (qx->ldx / 32) + blk]);
    }
    return t;
}

/* Both sides sum n = K/32 + K/gs float terms (the kernel adds its panels'
 * partial sums, one rounding more each), every term rounded at most 3 times
 * on the way (the int32 dot to float, s * sx, the fma): each is within
 * (n + 3 + panels) u sum |terms| of the exact sum, u = 2^-24, and their
 * difference within twice that. Returns the worst |got - ref| / bound. */
static double compare(const problem *p) {
    afo_qmv_args a = args_of(p, p->ref);
    float *s = malloc((size_t)(p->N * a.G) * sizeof(float)), *b = malloc((size_t)(p->N * a.G) * sizeof(float));
    float *lv = malloc((size_t)(p->N * p->K) * sizeof(float));
    afo_array_read(p->q[1], AFO_FLOAT32, s, (size_t)(p->N * a.G) * sizeof(float));
    afo_array_read(p->q[2], AFO_FLOAT32, b, (size_t)(p->N * a.G) * sizeof(float));
    for (int64_t n = 0; n < p->N; n++) afo_quant_unpack_scalar(p->bits, a.w + n * a.words, 0, p->K, lv + n * p->K);
    double panels = (double)(p->K / 32) / 4, nterms = (double)(p->K / 32 + a.G) + 3 + panels, worst = 0;
    for (int m = 0; m < p->M; m++)
        for (int64_t n = 0; n < p->N; n++) {
            double bound = 2 * nterms * 0x1p-24 * terms_abs(&a, m, n, s, b, lv + n * p->K) + 1e-30;
            double e = fabs((double)p->y[m * p->N + n] - p->ref[m * p->N + n]) / bound;
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    free(s), free(b), free(lv);
    return worst;
}

static void check(problem *p, const afo_qmm_level *lv, const char *what) {
    for (int64_t i = 0; i < p->M * p->N; i++) p->y[i] = p->ref[i] = NAN;
    afo_qmv_args a = args_of(p, p->ref);
    afo_quant_qmm_ref(&a, 0, p->N);
    a.y = p->y;
    CHECK_MSG(afo_quant_qmm(&a, p->N, lv) == AFO_OK, "%s", afo_last_error());
    double worst = compare(p);
    CHECK_MSG(worst <= 1.0, "[%s, %d threads, %s] bits %d gs %d %s M %d N %lld K %lld: error %.3g of the bound",
              afo_cpu_level_name(afo_cpu_kernel_level()), afo_get_threads(), what, p->bits, p->gs,
              afo_dtype_name(afo_array_dtype(p->q[1])), p->M, (long long)p->N, (long long)p->K, worst);
}

/* Each level with a panel kernel for these bits, at 1, 2 and 3 threads. */
static void each_level(problem *p, const char *what) {
    afo_cpu_level saved = afo_cpu_kernel_level();
    for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++) {
        if (afo_cpu_set_kernel_level((afo_cpu_level)l) != AFO_OK) continue;
        const afo_qmm_level *lv = afo_quant_qmm_best(p->bits);
        for (int t = 1; lv && t <= 3; t++) {
            afo_set_threads(t);
            check(p, lv, what);
        }
    }
    afo_set_threads(0);
    afo_cpu_set_kernel_level(saved);
}

static void test_shapes(void) {
    static const afo_dtype sdts[] = {AFO_BFLOAT16, AFO_FLOAT32, AFO_FLOAT16};
    static const int gss[] = {64, 32, 128};
    /* rows past the kernels' passes of 4 (AVX2, NEON) or 8 (AVX-512) rows: 1, 2, 5, 7, and their splits over threads */
    static const int Ms[] = {9, 13, 6, 15};
    for (int bits = 4; bits <= 8; bits += 4)
        for (int gi = 0; gi < LEN(gss); gi++)
            for (int mi = 0; mi < LEN(Ms); mi++) {
                /* 3 groups: at gs 32 a row ends in half an x8 chunk */
                problem p = problem_make(bits, gss[gi], sdts[gi], Ms[mi], 37, 3 * gss[gi]);
                each_level(&p, "one panel");
                problem_free(&p);
            }
}

/* Panels of 16 KiB of levels: several along K (K = 4224 is 33 panels of 4
 * blocks at 4 bits with 8 tiles a task), tasks of fewer tiles than 8, and
 * N = 20 (2 tiles), which 3 threads split along M too. */
static void test_panels_and_threads(void) {
    int64_t saved = afo_qmm_panel_bytes;
    afo_qmm_panel_bytes = 16 << 10;
    const int Ms[] = {40, 21};
    const int64_t Ns[] = {300, 20}, Ks[] = {4224, 1152};
    int cases = g_scale < 1 ? 1 : LEN(Ms);
    for (int bits = 4; bits <= 8; bits += 4)
        for (int c = 0; c < cases; c++) {
            problem p = problem_make(bits, 64, AFO_BFLOAT16, Ms[c], Ns[c], Ks[c]);
            each_level(&p, "16 KiB panels");
            problem_free(&p);
        }
    afo_qmm_panel_bytes = saved;
}

/* Every level's panel packing equals the scalar one byte for byte: random
 * packed bytes, 3 blocks, the last columns repeating one (past N). */
static void test_pack(void) {
    afo_cpu_level saved = afo_cpu_kernel_level();
    for (int bits = 4; bits <= 8; bits += 4) {
        int64_t nblk = 3, srcb = 4 * bits, out = nblk * afo_qmm_steps(bits) * AFO_QMM_NR * 4;
        uint8_t *src = malloc((size_t)(AFO_QMM_NR * nblk * srcb)), *ref = malloc((size_t)out), *got = malloc((size_t)out);
        for (int64_t i = 0; i < AFO_QMM_NR * nblk * srcb; i++) src[i] = (uint8_t)test_rand_u64();
        const uint8_t *col[AFO_QMM_NR];
        for (int r = 0; r < AFO_QMM_NR; r++) col[r] = src + (r < 13 ? r : 12) * nblk * srcb;
        afo_qmm_pack_scalar(bits, col, nblk, ref);
        for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++) {
            const afo_qmm_level *lv;
            if (afo_cpu_set_kernel_level((afo_cpu_level)l) != AFO_OK || !(lv = afo_quant_qmm_best(bits))) continue;
            memset(got, 0x5a, (size_t)out);
            lv->pack(bits, col, nblk, got);
            CHECK_MSG(memcmp(got, ref, (size_t)out) == 0, "[%s] bits %d: packed levels differ from the scalar packing",
                      afo_cpu_level_name((afo_cpu_level)l), bits);
        }
        free(src), free(ref), free(got);
    }
    afo_cpu_set_kernel_level(saved);
}

int main(void) {
    const char *sc = getenv("AFO_TEST_SCALE");
    if (sc) g_scale = atof(sc);
    test_seed(7);
    RUN(test_pack);
    RUN(test_shapes);
    RUN(test_panels_and_threads);
    return test_finish();
}
