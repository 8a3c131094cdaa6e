/* CUDA op benchmark: bf16 GEMM 4096^3 against the GPU's dense bf16 peak,
 * causal attention prefill (4096 tokens, 32 query / 8 kv heads, d 128 as in
 * Llama 3 8B; 32 / 4, d 64 as in TinyLlama) and
 * one decode step's attention over 4096 and 32768 cached keys against the
 * memory bandwidth. Each run builds the op, evaluates it and waits for the
 * GPU (afo_synchronize); inputs are on the GPU beforehand; medians over
 * --reps runs (at least 5) after one warm-up. Prints a table and one JSON
 * line; exits 77 without a GPU.
 * Usage: bench_cuda_ops [--reps N] [--json] */
#include <math.h>

#include "bench_util.h"

#include "afo/afo.h"

static afo_array *on_gpu(afo_dtype t, int nd, const int64_t *shape) {
    afo_array *key = afo_random_key(7);
    afo_array *x = afo_random_normal(key, 0, 1, nd, shape, t);
    afo_release(key);
    if (x && afo_array_prefetch(x, AFO_CUDA) != AFO_OK) {
        afo_release(x);
        return NULL;
    }
    return x;
}

typedef afo_array *(*op_fn)(afo_array *const *in);

static afo_array *op_matmul(afo_array *const *in) { return afo_matmul(in[0], in[1]); }
static afo_array *op_attention(afo_array *const *in) {
    float scale = 1.0f / sqrtf((float)afo_array_dim(in[0], -1));
    return afo_scaled_dot_product_attention(in[0], in[1], in[2], scale, NULL, 1, 0);
}

/* Rates of `work` units per second (scaled by `unit`) over reps timed runs. */
static stats time_op(op_fn fn, afo_array *const *in, double work, double unit, int reps, int *ok) {
    double *rates = malloc(sizeof(double) * (size_t)reps);
    *ok = 1;
    for (int r = -1; r < reps && *ok; r++) {
        afo_synchronize(AFO_CUDA);
        afo_set_default_device(AFO_CUDA);
        double t0 = bench_now();
        afo_array *y = fn(in);
        afo_set_default_device(AFO_CPU);
        *ok = y && afo_eval1(y) == AFO_OK && afo_synchronize(AFO_CUDA) == AFO_OK;
        double dt = bench_now() - t0;
        afo_release(y);
        if (r >= 0) rates[r] = work / dt / unit;
    }
    stats s = *ok ? summarize(rates, reps) : (stats){0};
    free(rates);
    return s;
}

/* Causal bf16 prefill of 4096 tokens; its median time in *ms. */
static stats prefill(int64_t hq, int64_t hkv, int64_t d, int reps, double *ms, int *ok) {
    int64_t L = 4096, qs[4] = {1, hq, L, d}, kvs[4] = {1, hkv, L, d};
    afo_array *q = on_gpu(AFO_BFLOAT16, 4, qs), *k = on_gpu(AFO_BFLOAT16, 4, kvs), *v = on_gpu(AFO_BFLOAT16, 4, kvs);
    /* half of the L x L score matrix, 2 flops per multiply-add, QK and PV */
    double flops = 4.0 * (double)hq * (double)d * (double)L * (double)L / 2;
    stats s = time_op(op_attention, (afo_array *[]){q, k, v}, flops, 1e12, reps, ok);
    afo_release(q), afo_release(k), afo_release(v);
    *ms = *ok ? flops / (s.median * 1e12) * 1e3 : 0;
    return s;
}

int main(int argc, char **argv) {
    int reps, json_only;
    afo_device_info info;
    int start = bench_cuda_start(argc, argv, 5, &reps, &json_only, &info);
    if (start != 0) return start;
    bench_gpu_spec spec = bench_gpu_spec_of(info.name);
    int ok = 1, ok1;

    int64_t sq[2] = {4096, 4096};
    afo_array *a = on_gpu(AFO_BFLOAT16, 2, sq), *b = on_gpu(AFO_BFLOAT16, 2, sq);
    stats mm = time_op(op_matmul, (afo_array *[]){a, b}, 2.0 * 4096 * 4096 * 4096, 1e12, reps, &ok1);
    ok &= ok1;
    afo_release(a), afo_release(b);

    double pf_ms, pf64_ms;
    stats pf = prefill(32, 8, 128, reps, &pf_ms, &ok1);
    ok &= ok1;
    stats pf64 = prefill(32, 4, 64, reps, &pf64_ms, &ok1);
    ok &= ok1;

    /* decode reads every cached key and value once: bytes over time */
    stats dec[2];
    int64_t lens[2] = {4096, 32768};
    for (int i = 0; i < 2; i++) {
        int64_t q1[4] = {1, 32, 1, 128}, kv1[4] = {1, 8, lens[i], 128};
        afo_array *dq = on_gpu(AFO_BFLOAT16, 4, q1), *dk = on_gpu(AFO_BFLOAT16, 4, kv1),
                  *dv = on_gpu(AFO_BFLOAT16, 4, kv1);
        dec[i] = time_op(op_attention, (afo_array *[]){dq, dk, dv}, 2.0 * 8 * (double)lens[i] * 128 * 2, 1e9, reps,
                         &ok1);
        ok &= ok1;
        afo_release(dq), afo_release(dk), afo_release(dv);
    }
    if (!ok) {
        fprintf(stderr, "bench_cuda_ops: %s\n", afo_last_error());
        return 1;
    }
    double dec_us[2] = {2.0 * 8 * 4096 * 128 * 2 / (dec[0].median * 1e9) * 1e6,
                        2.0 * 8 * 32768 * 128 * 2 / (dec[1].median * 1e9) * 1e6};
    if (!json_only) {
        printf("gpu: %s (sm_%d%d) | reps: %d | peaks: bf16 %.0f TFLOP/s, HBM %.0f GB/s%s\n", info.name,
               info.compute_major, info.compute_minor, reps, spec.bf16_tflops, spec.hbm_gbs,
               spec.bf16_tflops ? "" : " (unknown GPU)");
        printf("%-34s %8s %8s  %-18s %s\n", "", "median", "best", "[p10 .. p90]", "unit");
        row("matmul bf16 4096^3", mm, "TFLOP/s", spec.bf16_tflops ? mm.median / spec.bf16_tflops : 0, "peak");
        row("attention prefill 4096 causal", pf, "TFLOP/s", spec.bf16_tflops ? pf.median / spec.bf16_tflops : 0,
            "peak");
        printf("%-34s %8.2f ms\n", "  prefill time (median)", pf_ms);
        row("attention prefill 4096 d64 32/4", pf64, "TFLOP/s",
            spec.bf16_tflops ? pf64.median / spec.bf16_tflops : 0, "peak");
        printf("%-34s %8.2f ms\n", "  prefill time (median)", pf64_ms);
        row("attention decode kv 4096", dec[0], "GB/s", spec.hbm_gbs ? dec[0].median / spec.hbm_gbs : 0, "HBM");
        printf("%-34s %8.1f us\n", "  decode time (median)", dec_us[0]);
        row("attention decode kv 32768", dec[1], "GB/s", spec.hbm_gbs ? dec[1].median / spec.hbm_gbs : 0, "HBM");
        printf("%-34s %8.1f us\n", "  decode time (median)", dec_us[1]);
    }
    printf("{\"gpu\":\"%s\",\"reps\":%d,\"matmul_bf16_4096_tflops\":{\"median\":%.2f,\"best\":%.2f,\"peak\":%.0f},"
           "\"attention_prefill_4096\":{\"tflops\":%.2f,\"ms\":%.3f},"
           "\"attention_prefill_4096_d64\":{\"tflops\":%.2f,\"ms\":%.3f},"
           "\"attention_decode\":{\"kv4096\":{\"gbs\":%.1f,\"us\":%.1f},\"kv32768\":{\"gbs\":%.1f,\"us\":%.1f},"
           "\"hbm_gbs\":%.0f}}\n",
           info.name, reps, mm.median, mm.best, spec.bf16_tflops, pf.median, pf_ms, pf64.median, pf64_ms,
           dec[0].median, dec_us[0], dec[1].median, dec_us[1], spec.hbm_gbs);
    return 0;
}
