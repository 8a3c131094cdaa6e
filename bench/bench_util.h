/* Shared pieces of the benchmarks: timing, rate statistics, the machine's
 * streaming-read bandwidth, the bf16/f32 weight-layout matvec through
 * afo_cpu_gemm, and the table rows. Header-only: each benchmark is one
 * executable. */
#ifndef AFO_BENCH_UTIL_H
#define AFO_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "afo/base.h"
#include "afo/device.h"
#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/threadpool.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The 1-minute load average, with a warning when the cores are not idle. */
static inline double bench_check_load(void) {
    double load = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = 0;
        fclose(f);
    }
    if (load > 0.5) fprintf(stderr, "warning: load average %.2f > 0.5; the cores are not idle\n", load);
    return load;
}

/* --kv-dtype's value: float32, bfloat16 or float16's id, else -1 (bool,
 * id 0, would pass as afo_kv_cache_options' "the compute dtype"). */
static inline int bench_kv_dtype(const char *name) {
    const int t = afo_dtype_from_name(name);
    return t == AFO_FLOAT32 || t == AFO_BFLOAT16 || t == AFO_FLOAT16 ? t : -1;
}

/* The CUDA device's description, or false after printing why there is
 * none (a GPU benchmark then exits 77, "skipped"). */
static inline bool bench_cuda_device(afo_device_info *info) {
    if (!afo_device_available(AFO_CUDA) || afo_device_get_info(AFO_CUDA, info) != AFO_OK) {
        printf("SKIP: %s\n", afo_last_error());
        return false;
    }
    return true;
}

/* A GPU's dense bf16 and HBM peaks from the datasheets; 0 when unknown. */
typedef struct bench_gpu_spec {
    double bf16_tflops, hbm_gbs;
} bench_gpu_spec;

static inline bench_gpu_spec bench_gpu_spec_of(const char *name) {
    if (strstr(name, "H200")) return (bench_gpu_spec){989, 4800};
    if (strstr(name, "H100") && strstr(name, "PCIe")) return (bench_gpu_spec){756, 2000};
    if (strstr(name, "H100")) return (bench_gpu_spec){989, 3350};
    return (bench_gpu_spec){0, 0};
}

/* The options the kernel benchmarks share: --threads N (default 2), --reps
 * N (default 20, at least 3), --json. Returns 0, or 2 after the usage. */
static inline int bench_parse_args(int argc, char **argv, int *threads, int *reps, int *json_only) {
    *threads = 2, *reps = 20, *json_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) *threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) *reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json")) *json_only = 1;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (*threads < 1) *threads = 1;
    if (*reps < 3) *reps = 3;
    return 0;
}

/* A GPU benchmark's start: its options (--reps at least min_reps) and the
 * device. Returns 0, 2 after the usage, or 77 without a GPU. */
static inline int bench_cuda_start(int argc, char **argv, int min_reps, int *reps, int *json_only,
                                   afo_device_info *info) {
    int threads;
    if (bench_parse_args(argc, argv, &threads, reps, json_only) != 0) return 2;
    if (*reps < min_reps) *reps = min_reps;
    return bench_cuda_device(info) ? 0 : 77;
}

typedef struct stats {
    double best, median, p10, p90; /* of the rate (higher is better) */
} stats;

static inline stats summarize(double *rates, int n) {
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
__attribute__((target("avx2"))) static inline float sum_avx2(const float *p, size_t seg) {
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

static inline float sum_plain(const float *p, size_t seg) {
    float s[BW_STREAMS][8] = {{0}};
    for (size_t i = 0; i + 8 <= seg; i += 8)
        for (int j = 0; j < BW_STREAMS; j++)
            for (int l = 0; l < 8; l++) s[j][l] += p[j * seg + i + l];
    float t = 0;
    for (int j = 0; j < BW_STREAMS; j++)
        for (int l = 0; l < 8; l++) t += s[j][l];
    return t;
}

static inline void bw_thread(void *arg, int t, int nt) {
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

/* A 1 GiB buffer (far past any LLC) of non-zero data, so no layer can share
 * zero pages, read once to warm the page tables; buf NULL when out of
 * memory. */
static inline bw_job bw_setup(void) {
    size_t bytes = (size_t)1 << 30;
    float *buf = aligned_alloc(64, bytes);
    bw_job j = {.buf = buf, .n = buf ? bytes / 4 : 0};
    for (size_t i = 0; i < j.n; i++) buf[i] = (float)(i & 1023);
    if (buf) afo_parallel_run(bw_thread, &j);
    return j;
}

/* One timed pass: every thread sums its slice; GB/s. */
static inline double bw_once(bw_job *j) {
    double t0 = bench_now();
    afo_parallel_run(bw_thread, j);
    double rate = (double)j->n * 4 / (bench_now() - t0) * 1e-9;
    if (j->sums[0] == 0) fprintf(stderr, "bandwidth check sum is 0\n"); /* keeps the sums live */
    return rate;
}

static inline stats read_bandwidth(int reps) {
    bw_job j = bw_setup();
    if (!j.buf) return (stats){0};
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) rates[r] = bw_once(&j);
    stats s = summarize(rates, reps);
    free(rates);
    free((void *)j.buf);
    return s;
}

/* ---------------------------------------------------------------- matvec */

static inline void fill(afo_dtype t, void *p, int64_t n) {
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
static inline stats matvec_rate(afo_dtype t, int64_t N, int64_t K, int reps) {
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


static inline void cpu_model(char *out, size_t n) {
    afo_device_info info;
    snprintf(out, n, "%s", afo_device_get_info(AFO_CPU, &info) == AFO_OK ? info.name : "unknown");
}

static inline void row(const char *name, stats s, const char *unit, double ratio, const char *ratio_of) {
    printf("%-34s %8.1f %8.1f  [%6.1f .. %6.1f] %-7s", name, s.median, s.best, s.p10, s.p90, unit);
    if (ratio > 0) printf(" %5.1f%% of %s", 100 * ratio, ratio_of);
    printf("\n");
}

#endif
