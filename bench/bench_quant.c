/* Quantized matmul benchmark: decode matvec (afo_quantized_matmul, M = 1)
 * at TinyLlama-1.1B's shapes (W [N, K]: 2048x5632 down, 5632x2048 gate/up,
 * 32000x2048 lm_head), 4-bit and 8-bit, group size 64, bf16 scales/biases,
 * in GB/s of packed weights + scales + biases read per call, against the
 * streaming-read bandwidth measured in the same run; and the prefill matmul
 * (M = 512) in GFLOP/s. Every matvec call reads a different copy (>= 256 MiB
 * in all), so data comes from DRAM. Prints a table and one JSON line.
 * Usage: bench_quant [--threads N] [--reps N] [--json] */
#include "afo/afo.h"
#include "bench_util.h"

typedef struct qweights {
    afo_array *q[3];
    double bytes; /* packed words + scales + biases */
} qweights;

static qweights qweights_make(int bits, int gs, int64_t N, int64_t K) {
    int64_t shape[2] = {N, K};
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    fill(AFO_FLOAT32, w, N * K);
    afo_array *wf = afo_array_from_data(w, AFO_FLOAT32, 2, shape), *wb = afo_astype(wf, AFO_BFLOAT16);
    qweights r = {.bytes = 0};
    afo_quantize(wb, gs, bits, &r.q[0], &r.q[1], &r.q[2]);
    afo_eval(r.q, 3);
    for (int i = 0; i < 3; i++) r.bytes += (double)afo_array_nbytes(r.q[i]);
    afo_release(wf), afo_release(wb);
    free(w);
    return r;
}

static void qweights_free(qweights *w) {
    for (int i = 0; i < 3; i++) afo_release(w->q[i]);
}

/* One call of x @ W^T, evaluated; exits on failure. */
static void qmm_once(afo_array *x, afo_array *const *q, int gs, int bits) {
    afo_array *y = afo_quantized_matmul(x, q[0], q[1], q[2], 1, gs, bits);
    if (!y || afo_eval1(y) != AFO_OK) {
        fprintf(stderr, "quantized_matmul: %s\n", afo_last_error());
        exit(1);
    }
    afo_release(y);
}

static stats qmv_rate(int bits, int gs, int64_t N, int64_t K, int reps, double *bytes_per_call) {
    qweights base = qweights_make(bits, gs, N, K);
    int copies = (int)(((size_t)256 << 20) / (size_t)base.bytes) + 1;
    afo_array **c = malloc(sizeof(afo_array *) * (size_t)(3 * copies));
    for (int k = 0; k < copies; k++)
        for (int i = 0; i < 3; i++)
            c[3 * k + i] = afo_array_from_data(afo_array_data(base.q[i]), afo_array_dtype(base.q[i]), 2,
                                               afo_array_shape(base.q[i]));
    int64_t xs[2] = {1, K};
    float *x = malloc(sizeof(float) * (size_t)K);
    fill(AFO_FLOAT32, x, K);
    afo_array *xa = afo_array_from_data(x, AFO_FLOAT32, 2, xs);
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -copies; r < reps; r++) {
        double t0 = bench_now();
        qmm_once(xa, c + 3 * ((r + copies) % copies), gs, bits);
        if (r >= 0) rates[r] = base.bytes / (bench_now() - t0) * 1e-9;
    }
    stats s = summarize(rates, reps);
    for (int k = 0; k < 3 * copies; k++) afo_release(c[k]);
    *bytes_per_call = base.bytes;
    qweights_free(&base);
    afo_release(xa);
    free(c), free(x), free(rates);
    return s;
}

/* Prefill: x [M, K] @ W^T in GFLOP/s. */
static stats qmm_rate(int bits, int gs, int64_t M, int64_t N, int64_t K, int reps) {
    qweights w = qweights_make(bits, gs, N, K);
    int64_t xs[2] = {M, K};
    float *x = malloc(sizeof(float) * (size_t)(M * K));
    fill(AFO_FLOAT32, x, M * K);
    afo_array *xa = afo_array_from_data(x, AFO_FLOAT32, 2, xs);
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        qmm_once(xa, w.q, gs, bits);
        if (r >= 0) rates[r] = 2.0 * (double)(M * N * K) / (bench_now() - t0) * 1e-9;
    }
    stats s = summarize(rates, reps);
    qweights_free(&w);
    afo_release(xa);
    free(x), free(rates);
    return s;
}

enum { NSHAPES = 3, NBITS = 2 };
static const int64_t SHAPES[NSHAPES][2] = {{2048, 5632}, {5632, 2048}, {32000, 2048}}; /* N, K */
static const int BITS[NBITS] = {4, 8};

int main(int argc, char **argv) {
    int threads, reps, json_only;
    if (bench_parse_args(argc, argv, &threads, &reps, &json_only) != 0) return 2;
    afo_set_threads(threads);
    double load = bench_check_load();
    char model[256];
    cpu_model(model, sizeof model);

    stats bw = read_bandwidth(reps);
    stats mv[NBITS][NSHAPES], pf[NBITS];
    double bytes[NBITS][NSHAPES];
    int preps = reps < 5 ? reps : 5;
    for (int b = 0; b < NBITS; b++) {
        for (int s = 0; s < NSHAPES; s++)
            mv[b][s] = qmv_rate(BITS[b], 64, SHAPES[s][0], SHAPES[s][1], reps, &bytes[b][s]);
        pf[b] = qmm_rate(BITS[b], 64, 512, 2048, 5632, preps);
    }
    if (!json_only) {
        printf("cpu: %s | kernel: %s | threads: %d | load: %.2f | reps: %d\n", model,
               afo_cpu_level_name(afo_cpu_kernel_level()), threads, load, reps);
        printf("%-34s %8s %8s  %-18s %s\n", "", "median", "best", "[p10 .. p90]", "unit");
        row("read bandwidth (1 GiB)", bw, "GB/s", 0, NULL);
        char name[64];
        for (int b = 0; b < NBITS; b++) {
            for (int s = 0; s < NSHAPES; s++) {
                snprintf(name, sizeof name, "qmatvec %d-bit g64 %lldx%lld", BITS[b], (long long)SHAPES[s][0],
                         (long long)SHAPES[s][1]);
                row(name, mv[b][s], "GB/s", mv[b][s].median / bw.median, "read bw");
            }
            snprintf(name, sizeof name, "qmatmul %d-bit g64 512x2048x5632", BITS[b]);
            row(name, pf[b], "GFLOP/s", 0, NULL);
        }
    }
    printf("{\"cpu\":\"%s\",\"kernel\":\"%s\",\"threads\":%d,\"load\":%.2f,\"reps\":%d,"
           "\"read_bw_gbs\":{\"median\":%.2f,\"best\":%.2f,\"p10\":%.2f,\"p90\":%.2f},\"qmatvec_gbs\":{",
           model, afo_cpu_level_name(afo_cpu_kernel_level()), threads, load, reps, bw.median, bw.best, bw.p10, bw.p90);
    for (int b = 0; b < NBITS; b++)
        for (int s = 0; s < NSHAPES; s++)
            printf("%s\"q%d_g64_%lldx%lld\":{\"median\":%.2f,\"best\":%.2f,\"p10\":%.2f,\"p90\":%.2f,\"bytes\":%.0f,"
                   "\"ms\":%.3f,\"ratio_to_read_bw\":%.3f}",
                   b || s ? "," : "", BITS[b], (long long)SHAPES[s][0], (long long)SHAPES[s][1], mv[b][s].median,
                   mv[b][s].best, mv[b][s].p10, mv[b][s].p90, bytes[b][s], bytes[b][s] / mv[b][s].median * 1e-6,
                   mv[b][s].median / bw.median);
    printf("},\"qmatmul_512x2048x5632_gflops\":{");
    for (int b = 0; b < NBITS; b++)
        printf("%s\"q%d_g64\":{\"median\":%.2f,\"best\":%.2f,\"p10\":%.2f,\"p90\":%.2f}", b ? "," : "", BITS[b],
               pf[b].median, pf[b].best, pf[b].p10, pf[b].p90);
    printf("}}\n");
    return 0;
}
