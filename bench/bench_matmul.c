/* Matmul benchmark: streaming-read bandwidth of the machine, weight-layout
 * matvec bandwidth against it, afo's sgemm against OpenBLAS, and bf16 vs
 * f32 prefill GEMM, bf16 by every route the CPU has (AMX tiles, vdpbf16ps,
 * widening to f32). Prints a table and one JSON line.
 * Usage: bench_matmul [--threads N] [--reps N] [--json] */
#include "bench_util.h"

/* OpenBLAS, present when the library was linked with it. Weak, so the
 * benchmark needs neither cblas.h nor a build flag and runs without it. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
extern void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc) __attribute__((weak));
extern void openblas_set_num_threads(int n) __attribute__((weak));

/* ---------------------------------------------------------------- GEMM */

/* C[M,N] = A[M,K] B, B either row-major [K,N] or the weight layout [N,K]. */
static stats gemm_rate(afo_dtype t, int64_t M, int64_t N, int64_t K, int weight_layout, int use_blas,
                       int reps) {
    size_t es = afo_dtype_size(t);
    void *A = aligned_alloc(64, (size_t)(M * K) * es), *B = aligned_alloc(64, (size_t)(K * N) * es);
    float *C = aligned_alloc(64, sizeof(float) * (size_t)(M * N));
    fill(t, A, M * K);
    fill(t, B, K * N);
    afo_gemm_args g = {.dtype = t, .a_dtype = t, .M = M, .N = N, .K = K, .A = A, .a_rs = K, .a_cs = 1, .B = B,
                       .b_rs = weight_layout ? 1 : N, .b_cs = weight_layout ? K : 1, .C = C,
                       .c_dtype = AFO_FLOAT32, .ldc = N};
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        if (use_blas)
            cblas_sgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, weight_layout ? CBLAS_TRANS : CBLAS_NO_TRANS, (int)M,
                        (int)N, (int)K, 1.0f, A, (int)K, B, weight_layout ? (int)K : (int)N, 0.0f, C, (int)N);
        else
            afo_cpu_gemm(&g);
        if (r >= 0) rates[r] = 2.0 * (double)M * (double)N * (double)K / (bench_now() - t0) * 1e-9;
    }
    stats s = summarize(rates, reps);
    free(A), free(B), free(C), free(rates);
    return s;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
    int threads, reps, json_only;
    if (bench_parse_args(argc, argv, &threads, &reps, &json_only) != 0) return 2;
    afo_set_threads(threads);
    int blas = cblas_sgemm && openblas_set_num_threads;
    if (blas) openblas_set_num_threads(threads);
    double load = bench_check_load();
    char model[256];
    cpu_model(model, sizeof model);

    stats bw = read_bandwidth(reps);
    stats mv[4];
    static const struct { afo_dtype t; int64_t n, k; const char *name; } mvs[4] = {
        {AFO_BFLOAT16, 4096, 4096, "matvec bf16 4096x4096"},
        {AFO_BFLOAT16, 8192, 2048, "matvec bf16 8192x2048"},
        {AFO_FLOAT32, 4096, 4096, "matvec f32 4096x4096"},
        {AFO_FLOAT32, 8192, 2048, "matvec f32 8192x2048"},
    };
    for (int i = 0; i < 4; i++) mv[i] = matvec_rate(mvs[i].t, mvs[i].n, mvs[i].k, reps);

    int greps = reps < 10 ? reps : 10;
    afo_cpu_gemm_set_blas(false);
    stats sg = gemm_rate(AFO_FLOAT32, 1024, 1024, 1024, 0, 0, greps);
    stats sg_blas = {0};
    if (blas) sg_blas = gemm_rate(AFO_FLOAT32, 1024, 1024, 1024, 0, 1, greps);
    int preps = reps < 5 ? reps : 5;
    stats pf_bf16 = gemm_rate(AFO_BFLOAT16, 512, 4096, 4096, 1, 0, preps);
    stats pf_f32 = gemm_rate(AFO_FLOAT32, 512, 4096, 4096, 1, 0, preps);
    stats pf_blas = {0};
    if (blas) pf_blas = gemm_rate(AFO_FLOAT32, 512, 4096, 4096, 1, 1, preps);
    /* every bf16 route where there is a choice: tiles at the amx level, and
     * at the avx512 level vdpbf16ps and widening (the default times them) */
    afo_cpu_level level = afo_cpu_kernel_level();
    int amx = level == AFO_CPU_AMX;
    int dot = (amx || level == AFO_CPU_AVX512) && afo_cpu_get_features()->avx512_bf16;
    stats pf_dot = {0}, pf_wide = {0};
    if (dot) {
        afo_cpu_set_kernel_level(AFO_CPU_AVX512);
        afo_cpu_gemm_set_bf16_pairs(1);
        pf_dot = gemm_rate(AFO_BFLOAT16, 512, 4096, 4096, 1, 0, preps);
        afo_cpu_gemm_set_bf16_pairs(0);
        pf_wide = gemm_rate(AFO_BFLOAT16, 512, 4096, 4096, 1, 0, preps);
        afo_cpu_gemm_set_bf16_pairs(-1);
        afo_cpu_set_kernel_level(level);
    }
    afo_cpu_gemm_set_blas(true);

    if (!json_only) {
        printf("cpu: %s | kernel: %s | threads: %d | load: %.2f | reps: %d\n", model, afo_cpu_kernel_name(),
               threads, load, reps);
        printf("%-34s %8s %8s  %-18s %s\n", "", "median", "best", "[p10 .. p90]", "unit");
        row("read bandwidth (1 GiB)", bw, "GB/s", 0, NULL);
        for (int i = 0; i < 4; i++) row(mvs[i].name, mv[i], "GB/s", mv[i].median / bw.median, "read bw");
        row("sgemm 1024^3 afo", sg, "GFLOP/s", blas ? sg.median / sg_blas.median : 0, "OpenBLAS");
        if (blas) row("sgemm 1024^3 OpenBLAS", sg_blas, "GFLOP/s", 0, NULL);
        else printf("sgemm 1024^3 OpenBLAS              not linked\n");
        row("matmul bf16 512x4096x4096 afo", pf_bf16, "GFLOP/s", pf_bf16.median / pf_f32.median, "f32");
        row("matmul f32 512x4096x4096 afo", pf_f32, "GFLOP/s", blas ? pf_f32.median / pf_blas.median : 0,
            "OpenBLAS");
        if (blas) row("matmul f32 512x4096x4096 OpenBLAS", pf_blas, "GFLOP/s", 0, NULL);
        if (amx) row("  bf16 via AMX tiles", pf_bf16, "GFLOP/s", pf_bf16.median / pf_f32.median, "f32");
        if (dot) {
            row("  bf16 via vdpbf16ps", pf_dot, "GFLOP/s", pf_dot.median / pf_f32.median, "f32");
            row("  bf16 widened to f32", pf_wide, "GFLOP/s", pf_wide.median / pf_f32.median, "f32");
        }
    }
    printf("{\"cpu\":\"%s\",\"kernel\":\"%s\",\"threads\":%d,\"load\":%.2f,\"reps\":%d,"
           "\"read_bw_gbs\":{\"best\":%.2f,\"median\":%.2f}",
           model, afo_cpu_kernel_name(), threads, load, reps, bw.best, bw.median);
    static const char *keys[4] = {"bf16_4096x4096", "bf16_8192x2048", "f32_4096x4096", "f32_8192x2048"};
    printf(",\"matvec_gbs\":{");
    for (int i = 0; i < 4; i++)
        printf("%s\"%s\":{\"median\":%.2f,\"best\":%.2f,\"p10\":%.2f,\"p90\":%.2f,\"ratio_to_read_bw\":%.3f,"
               "\"best_ratio_to_best_read_bw\":%.3f}",
               i ? "," : "", keys[i], mv[i].median, mv[i].best, mv[i].p10, mv[i].p90, mv[i].median / bw.median,
               mv[i].best / bw.best);
    if (blas)
        printf("},\"sgemm_1024_gflops\":{\"afo\":%.2f,\"openblas\":%.2f,\"ratio\":%.3f}", sg.median,
               sg_blas.median, sg.median / sg_blas.median);
    else
        printf("},\"sgemm_1024_gflops\":{\"afo\":%.2f,\"openblas\":null,\"ratio\":null}", sg.median);
    printf(",\"matmul_512x4096x4096_gflops\":{\"bf16\":%.2f,\"f32\":%.2f,\"ratio\":%.3f", pf_bf16.median,
           pf_f32.median, pf_bf16.median / pf_f32.median);
    if (blas) printf(",\"f32_openblas\":%.2f", pf_blas.median);
    if (amx) printf(",\"bf16_amx\":%.2f", pf_bf16.median);
    if (dot) printf(",\"bf16_vdpbf16ps\":%.2f,\"bf16_widened\":%.2f", pf_dot.median, pf_wide.median);
    printf("}}\n");
    return 0;
}
