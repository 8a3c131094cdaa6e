/* Matmul benchmark: streaming-read bandwidth of the machine, weight-layout
 * matvec bandwidth against it, afo's sgemm against OpenBLAS, and bf16 vs
 * f32 prefill GEMM, bf16 by every route the CPU has (AMX tiles, vdpbf16ps,
 * widening to f32). Prints a table and one JSON line.
 * Usage: bench_matmul [--threads N] [--reps N] [--json] */
#include "bench_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/threadpool.h"

/* OpenBLAS, present when the library was linked with it. Weak, so the
 * benchmark needs neither cblas.h nor a build flag and runs without it. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
extern void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc) __attribute__((weak));
extern void openblas_set_num_threads(int n) __attribute__((weak));
#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct stats {
    double best, median, p10, p90; /* of the rate (higher is better) */
} stats;

static stats summarize(double *rates, int n) {
    qsort(rates, (size_t)n, sizeof *rates, bench_cmp_double);
    return (stats){rates[n - 1], rates[n / 2], rates[n / 10], rates[n - 1 - n / 10]};
}

/* ---------------------------------------------------------------- read bandwidth */

typedef struct bw_job {
    const float *buf;
    size_t n; /* floats */
    float sums[64];
} bw_job;

/* Each thread reads its slice as BW_STREAMS interleaved sequential streams:
 * one stream per core leaves bandwidth unused on cores (like Zen's) whose
 * prefetchers keep few misses in flight per stream, and the matvec reads
 * several weight rows at once too. */
enum { BW_STREAMS = 4 };

#if defined(__x86_64__)
__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t seg) {
    __m256 s[BW_STREAMS];
    for (int j = 0; j < BW_STREAMS; j++) s[j] = _mm256_setzero_ps();
    for (size_t i = 0; i + 16 <= seg; i += 16)
        for (int j = 0; j < BW_STREAMS; j++) {
            s[j] = _mm256_add_ps(s[j], _mm256_load_ps(p + j * seg + i));
            s[j] = _mm256_add_ps(s[j], _mm256_load_ps(p + j * seg + i + 8));
        }
    float out[8], t = 0;
    for (int j = 0; j < BW_STREAMS; j++) {
        _mm256_storeu_ps(out, s[j]);
        for (int l = 0; l < 8; l++) t += out[l];
    }
    return t;
}
#endif

static float sum_plain(const float *p, size_t seg) {
    float s[BW_STREAMS][8] = {{0}};
    for (size_t i = 0; i + 8 <= seg; i += 8)
        for (int j = 0; j < BW_STREAMS; j++)
            for (int l = 0; l < 8; l++) s[j][l] += p[j * seg + i + l];
    float t = 0;
    for (int j = 0; j < BW_STREAMS; j++)
        for (int l = 0; l < 8; l++) t += s[j][l];
    return t;
}

static void bw_thread(void *arg, int t, int nt) {
    bw_job *j = arg;
    size_t seg = j->n / (size_t)nt / BW_STREAMS / 64 * 64;
    const float *p = j->buf + seg * BW_STREAMS * (size_t)t;
#if defined(__x86_64__)
    if (afo_cpu_level_supported(AFO_CPU_AVX2)) {
        j->sums[t] = sum_avx2(p, seg);
        return;
    }
#endif
    j->sums[t] = sum_plain(p, seg);
}

/* Every thread sums its slice of a 1 GiB buffer (far past any LLC). The
 * buffer holds non-zero data so no layer can share zero pages. */
static stats read_bandwidth(int reps) {
    size_t bytes = (size_t)1 << 30;
    float *buf = aligned_alloc(64, bytes);
    if (!buf) return (stats){0};
    for (size_t i = 0; i < bytes / 4; i++) buf[i] = (float)(i & 1023);
    bw_job j = {.buf = buf, .n = bytes / 4};
    double *rates = malloc(sizeof(double) * (size_t)reps), check = 0;
    afo_parallel_run(bw_thread, &j); /* warm the page tables */
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        afo_parallel_run(bw_thread, &j);
        rates[r] = (double)bytes / (bench_now() - t0) * 1e-9;
        check += j.sums[0];
    }
    if (check == 0) fprintf(stderr, "bandwidth check sum is 0\n"); /* keeps the sums live */
    stats s = summarize(rates, reps);
    free(rates);
    free(buf);
    return s;
}

/* ---------------------------------------------------------------- matvec */

static void fill(afo_dtype t, void *p, int64_t n) {
    uint64_t x = 88172645463325252ull;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        float v = (float)((double)(x >> 40) / (double)(1ull << 24) - 0.5);
        if (t == AFO_FLOAT32) ((float *)p)[i] = v;
        else ((uint16_t *)p)[i] = t == AFO_BFLOAT16 ? afo_f32_to_bf16(v) : afo_f32_to_f16(v);
    }
}

/* W[N,K] . x for M = 1, cycling through enough copies of W (>= 256 MiB in
 * all) that every call streams W from memory, not from the LLC. */
static stats matvec_rate(afo_dtype t, int64_t N, int64_t K, int reps) {
    size_t wbytes = (size_t)(N * K) * afo_dtype_size(t);
    int copies = (int)(((size_t)256 << 20) / wbytes) + 1;
    void **w = malloc(sizeof(void *) * (size_t)copies);
    for (int c = 0; c < copies; c++) {
        w[c] = aligned_alloc(64, wbytes);
        fill(t, w[c], N * K);
    }
    float *y = malloc(sizeof(float) * (size_t)N);
    void *xa = malloc(afo_dtype_size(t) * (size_t)K);
    fill(t, xa, K);
    afo_gemm_args g = {.dtype = t, .a_dtype = t, .M = 1, .N = N, .K = K, .A = xa, .a_rs = K, .a_cs = 1, .b_rs = 1, .b_cs = K,
                       .C = y, .c_dtype = AFO_FLOAT32, .ldc = N};
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -copies; r < reps; r++) {
        g.B = w[(r + copies) % copies];
        double t0 = bench_now();
        afo_cpu_gemm(&g);
        if (r >= 0) rates[r] = (double)wbytes / (bench_now() - t0) * 1e-9;
    }
    stats s = summarize(rates, reps);
    for (int c = 0; c < copies; c++) free(w[c]);
    free(w), free(y), free(xa), free(rates);
    return s;
}

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

static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (colon && strncmp(line, "model name", 10) == 0) {
            colon += 2;
            colon[strcspn(colon, "\n")] = '\0';
            snprintf(out, n, "%s", colon);
            break;
        }
    }
    fclose(f);
}

static void row(const char *name, stats s, const char *unit, double ratio, const char *ratio_of) {
    printf("%-34s %8.1f %8.1f  [%6.1f .. %6.1f] %-7s", name, s.median, s.best, s.p10, s.p90, unit);
    if (ratio > 0) printf(" %5.1f%% of %s", 100 * ratio, ratio_of);
    printf("\n");
}

int main(int argc, char **argv) {
    int threads = 2, reps = 20, json_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json_only = 1;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1) threads = 1;
    if (reps < 3) reps = 3;
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
