/* Decode-step matrix products on the GPU: x [1, K] @ W^T for bf16 W at the
 * shapes of TinyLlama-1.1B and Llama-3.1-8B, and the same W quantized to 4
 * and 8 bits (group 64), in GB/s of weight bytes read, against the GPU's
 * HBM bandwidth. One timed run evaluates COPIES products over distinct
 * copies of W (more bytes than the L2 cache holds), recorded once and
 * replayed as one CUDA graph (see time_products). Medians over --reps runs
 * after a warm-up. Exits 77 without a GPU.
 * Usage: bench_cuda_gemv [--reps N] [--json] */
#include "bench_util.h"

#include "afo/afo.h"

enum { COPIES = 8 };

typedef struct shape {
    const char *name;
    int64_t N, K;
} shape;

static const shape SHAPES[] = {
    {"4096x4096 (8B q/o)", 4096, 4096},       {"14336x4096 (8B gate/up)", 14336, 4096},
    {"4096x14336 (8B down)", 4096, 14336},    {"2048x2048 (1.1B q/o)", 2048, 2048},
    {"5632x2048 (1.1B gate/up)", 5632, 2048},
};

typedef struct weights {
    afo_array *w[COPIES][3]; /* plain: [0] only */
    double bytes;            /* all copies */
} weights;

static afo_array *random_on_gpu(uint64_t seed, int nd, const int64_t *shape) {
    afo_array *key = afo_random_key(seed), *x = afo_random_normal(key, 0, 0.02, nd, shape, AFO_BFLOAT16);
    afo_release(key);
    return x;
}

static int make_weights(const shape *s, int bits, weights *out) {
    memset(out, 0, sizeof *out);
    afo_set_default_device(AFO_CUDA);
    for (int c = 0; c < COPIES; c++) {
        afo_array *w = random_on_gpu(100 + (uint64_t)c, 2, (int64_t[]){s->N, s->K});
        if (!w) return -1;
        if (bits) {
            if (afo_quantize(w, 64, bits, &out->w[c][0], &out->w[c][1], &out->w[c][2]) != AFO_OK) return -1;
            afo_release(w);
        } else {
            out->w[c][0] = w;
        }
        int parts = bits ? 3 : 1;
        if (afo_eval(out->w[c], parts) != AFO_OK) return -1;
        for (int p = 0; p < parts; p++) out->bytes += (double)afo_array_nbytes(out->w[c][p]);
    }
    afo_set_default_device(AFO_CPU);
    return 0;
}

static void free_weights(weights *w) {
    for (int c = 0; c < COPIES; c++)
        for (int p = 0; p < 3; p++) afo_release(w->w[c][p]);
}

/* The COPIES products are recorded once and the recording replayed
 * REPLAYS times per timed run, as a decode step is: timing the ops as
 * built measured the host's time to build and launch them for the smaller
 * shapes, not the kernels. */
enum { REPLAYS = 20 };

static stats time_products(const weights *w, afo_array *x, int bits, int reps, int *ok) {
    double *rates = malloc(sizeof(double) * (size_t)reps);
    afo_recording *rec = afo_recording_new(AFO_CUDA);
    afo_set_default_device(AFO_CUDA);
    *ok = rec && afo_record_begin(rec) == AFO_OK;
    for (int c = 0; c < COPIES && *ok; c++) {
        afo_array *y = bits ? afo_quantized_matmul(x, w->w[c][0], w->w[c][1], w->w[c][2], 1, 64, bits)
                            : afo_matmul(x, afo_transpose(w->w[c][0], NULL));
        *ok = y && afo_eval1(y) == AFO_OK;
        afo_release(y);
    }
    *ok = *ok && afo_record_end(rec) == AFO_OK;
    afo_set_default_device(AFO_CPU);
    for (int r = -1; r < reps && *ok; r++) {
        *ok = afo_synchronize(AFO_CUDA) == AFO_OK;
        double t0 = bench_now();
        for (int i = 0; i < REPLAYS && *ok; i++) *ok = afo_record_replay(rec) == AFO_OK;
        *ok = *ok && afo_synchronize(AFO_CUDA) == AFO_OK;
        if (r >= 0) rates[r] = REPLAYS * w->bytes / (bench_now() - t0) / 1e9;
    }
    stats s = *ok ? summarize(rates, reps) : (stats){0};
    afo_recording_free(rec);
    free(rates);
    return s;
}

int main(int argc, char **argv) {
    int reps, json_only;
    afo_device_info info;
    int start = bench_cuda_start(argc, argv, 5, &reps, &json_only, &info);
    if (start != 0) return start;
    double hbm = bench_gpu_spec_of(info.name).hbm_gbs;
    if (!json_only) printf("gpu: %s | HBM %.0f GB/s | %d products a run, medians of %d runs\n", info.name, hbm, COPIES, reps);
    printf("%s", json_only ? "{\"gemv_gbs\":{" : "");
    static const int BITS[3] = {0, 8, 4};
    for (size_t i = 0; i < sizeof SHAPES / sizeof *SHAPES; i++)
        for (int b = 0; b < 3; b++) {
            weights w;
            int ok = make_weights(&SHAPES[i], BITS[b], &w) == 0;
            afo_array *x = ok ? random_on_gpu(1, 2, (int64_t[]){1, SHAPES[i].K}) : NULL;
            stats s = ok && x ? time_products(&w, x, BITS[b], reps, &ok) : (stats){0};
            if (!ok || !x) {
                fprintf(stderr, "bench_cuda_gemv: %s\n", afo_last_error());
                return 1;
            }
            const char *fmt = BITS[b] == 0 ? "bf16" : BITS[b] == 8 ? "q8g64" : "q4g64";
            if (json_only)
                printf("%s\"%s %s\":%.1f", i || b ? "," : "", fmt, SHAPES[i].name, s.median);
            else
                printf("%-6s %-26s %8.1f GB/s [%7.1f .. %7.1f]  %5.1f%% of HBM\n", fmt, SHAPES[i].name, s.median, s.p10,
                       s.p90, hbm ? 100 * s.median / hbm : 0);
            afo_release(x);
            free_weights(&w);
        }
    printf("%s", json_only ? "}}\n" : "");
    return 0;
}
