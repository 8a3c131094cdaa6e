/* Quantized matvec benchmark (decode): afo_quantized_matmul with M = 1 on
 * 4096x4096 weights, 4-bit and 8-bit, group size 64, bf16 scales/biases,
 * in GB/s of packed weights + scales + biases read per call, next to the
 * bf16 matvec through afo_cpu_gemm and the streaming-read bandwidth, and the
 * 4-bit prefill matmul (M = 512) in GFLOP/s. Every
 * call reads a different copy (>= 256 MiB in all), so data comes from DRAM.
 * Prints a table and one JSON line.
 * Usage: bench_quant [--threads N] [--reps N] [--json] */
#include "afo/afo.h"
#include "bench_util.h"

static stats qmv_rate(int bits, int gs, int64_t N, int64_t K, int reps, double *bytes_per_call) {
    int64_t shape[2] = {N, K}, xs[2] = {1, K};
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *x = malloc(sizeof(float) * (size_t)K);
    fill(AFO_FLOAT32, w, N * K);
    fill(AFO_FLOAT32, x, K);
    afo_array *wf = afo_array_from_data(w, AFO_FLOAT32, 2, shape), *wb = afo_astype(wf, AFO_BFLOAT16), *q[3];
    afo_quantize(wb, gs, bits, &q[0], &q[1], &q[2]);
    afo_eval(q, 3);
    double bytes = 0;
    for (int i = 0; i < 3; i++) bytes += (double)afo_array_nbytes(q[i]);
    int copies = (int)(((size_t)256 << 20) / (size_t)bytes) + 1;
    afo_array **c = malloc(sizeof(afo_array *) * (size_t)(3 * copies));
    for (int k = 0; k < copies; k++)
        for (int i = 0; i < 3; i++)
            c[3 * k + i] = afo_array_from_data(afo_array_data(q[i]), afo_array_dtype(q[i]), 2, afo_array_shape(q[i]));
    afo_array *xa = afo_array_from_data(x, AFO_FLOAT32, 2, xs);
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -copies; r < reps; r++) {
        afo_array **m = c + 3 * ((r + copies) % copies);
        double t0 = bench_now();
        afo_array *y = afo_quantized_matmul(xa, m[0], m[1], m[2], 1, gs, bits);
        if (!y || afo_eval1(y) != AFO_OK) {
            fprintf(stderr, "quantized_matmul: %s\n", afo_last_error());
            exit(1);
        }
        afo_release(y);
        if (r >= 0) rates[r] = bytes / (bench_now() - t0) * 1e-9;
    }
    stats s = summarize(rates, reps);
    for (int k = 0; k < 3 * copies; k++) afo_release(c[k]);
    for (int i = 0; i < 3; i++) afo_release(q[i]);
    afo_release(wf), afo_release(wb), afo_release(xa);
    free(c), free(w), free(x), free(rates);
    *bytes_per_call = bytes;
    return s;
}

/* Prefill: x [M, K] @ w^T in GFLOP/s through the dequantized-panel GEMM. */
static stats qmm_rate(int bits, int gs, int64_t M, int64_t N, int64_t K, int reps) {
    int64_t shape[2] = {N, K}, xs[2] = {M, K};
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *x = malloc(sizeof(float) * (size_t)(M * K));
    fill(AFO_FLOAT32, w, N * K);
    fill(AFO_FLOAT32, x, M * K);
    afo_array *wf = afo_array_from_data(w, AFO_FLOAT32, 2, shape), *wb = afo_astype(wf, AFO_BFLOAT16), *q[3];
    afo_quantize(wb, gs, bits, &q[0], &q[1], &q[2]);
    afo_eval(q, 3);
    afo_array *xa = afo_array_from_data(x, AFO_FLOAT32, 2, xs);
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        afo_array *y = afo_quantized_matmul(xa, q[0], q[1], q[2], 1, gs, bits);
        afo_eval1(y);
        afo_release(y);
        if (r >= 0) rates[r] = 2.0 * (double)(M * N * K) / (bench_now() - t0) * 1e-9;
    }
    stats s = summarize(rates, reps);
    for (int i = 0; i < 3; i++) afo_release(q[i]);
    afo_release(wf), afo_release(wb), afo_release(xa);
    free(w), free(x), free(rates);
    return s;
}

int main(int argc, char **argv) {
    int threads, reps, json_only;
    if (bench_parse_args(argc, argv, &threads, &reps, &json_only) != 0) return 2;
    afo_set_threads(threads);
    double load = bench_check_load();
    char model[256];
    cpu_model(model, sizeof model);

    stats bw = read_bandwidth(reps);
    stats bf16 = matvec_rate(AFO_BFLOAT16, 4096, 4096, reps);
    double b4, b8;
    stats q4 = qmv_rate(4, 64, 4096, 4096, reps, &b4), q8 = qmv_rate(8, 64, 4096, 4096, reps, &b8);
    int preps = reps < 5 ? reps : 5;
    stats p4 = qmm_rate(4, 64, 512, 4096, 4096, preps);
    /* weights per second: a 4-bit matvec at r GB/s streams r / (b4 / 16M) weights/s */
    double wts = 4096.0 * 4096.0;
    if (!json_only) {
        printf("cpu: %s | kernel: %s | threads: %d | load: %.2f | reps: %d\n", model,
               afo_cpu_level_name(afo_cpu_kernel_level()), threads, load, reps);
        printf("%-34s %8s %8s  %-18s %s\n", "", "median", "best", "[p10 .. p90]", "unit");
        row("read bandwidth (1 GiB)", bw, "GB/s", 0, NULL);
        row("matvec bf16 4096x4096", bf16, "GB/s", bf16.median / bw.median, "read bw");
        row("qmatvec 4-bit g64 4096x4096", q4, "GB/s", q4.median / bw.median, "read bw");
        row("qmatvec 8-bit g64 4096x4096", q8, "GB/s", q8.median / bw.median, "read bw");
        row("qmatmul 4-bit g64 512x4096x4096", p4, "GFLOP/s", 0, NULL);
        printf("weights/s (median): bf16 %.2f G, 4-bit %.2f G (%.2fx), 8-bit %.2f G (%.2fx)\n",
               bf16.median / 2, q4.median * wts / b4, q4.median * wts / b4 / (bf16.median / 2),
               q8.median * wts / b8, q8.median * wts / b8 / (bf16.median / 2));
    }
    printf("{\"cpu\":\"%s\",\"kernel\":\"%s\",\"threads\":%d,\"load\":%.2f,\"reps\":%d,"
           "\"read_bw_gbs\":{\"median\":%.2f,\"best\":%.2f}",
           model, afo_cpu_level_name(afo_cpu_kernel_level()), threads, load, reps, bw.median, bw.best);
    const char *names[3] = {"bf16_4096x4096", "q4_g64_4096x4096", "q8_g64_4096x4096"};
    stats all[3] = {bf16, q4, q8};
    double bytes[3] = {4096.0 * 4096 * 2, b4, b8};
    printf(",\"matvec_gbs\":{");
    for (int i = 0; i < 3; i++)
        printf("%s\"%s\":{\"median\":%.2f,\"best\":%.2f,\"p10\":%.2f,\"p90\":%.2f,\"bytes\":%.0f,"
               "\"ratio_to_read_bw\":%.3f}",
               i ? "," : "", names[i], all[i].median, all[i].best, all[i].p10, all[i].p90, bytes[i],
               all[i].median / bw.median);
    printf("},\"qmatmul_q4_g64_512x4096x4096_gflops\":{\"median\":%.2f,\"best\":%.2f}}\n", p4.median, p4.best);
    return 0;
}
