/* afo bench: prefill and decode speed of one or more models, as mlx-lm's
 * benchmark reports them (random prompt ids, EOS ignored, several runs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "usage: afo bench [--model M]... [--prompt-tokens N] [--gen-tokens N] [--repeat N] [--threads N] [--json]\n"
    "                 [--device cpu|cuda] [--no-graphs]\n"
    "                 [--kv-bits B --kv-group-size G --quantized-kv-start N] [--max-kv-size N] [--kv-dtype T]\n"
    "  Each model (default: the demo model) runs a prompt of N random ids and generates greedily,\n"
    "  ignoring EOS, --repeat times (default 5); reports median and range of prefill tok/s,\n"
    "  decode tok/s and time to first token, peak memory and model bytes (with --json also the\n"
    "  mean bytes a decode step reads, weights and KV cache: a bandwidth bound's numerator).\n"
    "  Several --model options give one table.\n";

enum { MAX_MODELS = 16 };

typedef struct result {
    const char *model;
    double prefill[3], decode[3], ttft[3]; /* median, min, max */
    size_t peak, weights;
    double step_bytes; /* mean over the decode steps, afo_model_decode_bytes */
    int64_t params;
    afo_dtype kv_dtype; /* what the cache stored (afo_kv_cache_dtype) */
} result;

/* The bytes each decode step reads: called with each sampled id before the
 * step that feeds it (the last id is not fed). */
typedef struct step_bytes {
    const afo_model *m;
    const afo_kv_cache *cache;
    double sum, last;
    long steps;
} step_bytes;

static int count_step_bytes(int32_t id, const char *text, void *userdata) {
    (void)id, (void)text;
    step_bytes *s = userdata;
    size_t b = 0;
    if (afo_model_decode_bytes(s->m, s->cache, &b) == AFO_OK) s->sum += (double)b, s->last = (double)b, s->steps++;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summarize(double *v, int n, double out[3]) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    out[0] = v[n / 2], out[1] = v[0], out[2] = v[n - 1];
}

static int bench_one(const char *model, long prompt, long gen, long repeat, const afo_kv_cache_options *kvo,
                     result *r, int graphs) {
    afo_model *m;
    if (cli_load_model(model, &m) != 0) return 1;
    afo_kv_cache *cache = NULL;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)prompt);
    double *pf = malloc(sizeof(double) * (size_t)repeat), *dc = malloc(sizeof(double) * (size_t)repeat),
           *tf = malloc(sizeof(double) * (size_t)repeat);
    int rc = 1;
    if (!ids || !pf || !dc || !tf || afo_kv_cache_create_ex(m, 1, kvo, &cache) != AFO_OK) {
        cli_fail("bench");
        goto done;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int64_t vocab = afo_model_vocab_size(m);
    for (long i = 0; i < prompt; i++) { /* xorshift: the same prompt for every model of a vocabulary */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)vocab);
    }
    afo_generate_options o = afo_generate_defaults();
    o.max_tokens = gen;
    o.ignore_eos = 1;
    o.graphs = graphs;
    size_t peak = 0;
    step_bytes sb = {.m = m, .cache = cache};
    for (long k = 0; k < repeat; k++) {
        afo_generate_stats st;
        afo_kv_cache_reset(cache);
        sb.sum = 0, sb.steps = 0;
        if (afo_generate(m, cache, NULL, ids, (size_t)prompt, &o, count_step_bytes, &sb, &st) != AFO_OK) {
            cli_fail("bench");
            goto done;
        }
        pf[k] = (double)prompt / st.prompt_seconds;
        dc[k] = st.generated_tokens > 1 ? (double)(st.generated_tokens - 1) / st.generate_seconds : 0;
        tf[k] = st.time_to_first_token;
        if (st.peak_memory > peak) peak = st.peak_memory;
        fprintf(stderr, "%s: run %ld/%ld: prefill %.1f tok/s, decode %.1f tok/s\n", model, k + 1, repeat, pf[k], dc[k]);
    }
    *r = (result){.model = model,
                  .peak = peak,
                  .weights = afo_model_weight_bytes(m),
                  .step_bytes = sb.steps > 1 ? (sb.sum - sb.last) / (double)(sb.steps - 1) : 0,
                  .params = afo_model_num_params(m),
                  .kv_dtype = afo_kv_cache_dtype(cache)};
    summarize(pf, (int)repeat, r->prefill);
    summarize(dc, (int)repeat, r->decode);
    summarize(tf, (int)repeat, r->ttft);
    rc = 0;
done:
    free(ids), free(pf), free(dc), free(tf);
    afo_kv_cache_free(cache);
    afo_model_free(m);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    const char *models[MAX_MODELS], *v;
    int nmodels = 0, json = 0, graphs = 1, r;
    long prompt = 512, gen = 128, repeat = 5;
    afo_kv_cache_options kvo = cli_kv_defaults();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return printf("%s", USAGE), 0;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--no-graphs")) graphs = 0;
        else if (!strcmp(argv[i], "--model")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            if (nmodels == MAX_MODELS) return fprintf(stderr, "afo bench: at most %d models\n", MAX_MODELS), 2;
            models[nmodels++] = v;
        } else if (!strcmp(argv[i], "--prompt-tokens")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(argv[i - 1], v, 1, 1 << 20, &prompt)) return 2;
        } else if (!strcmp(argv[i], "--gen-tokens")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(argv[i - 1], v, 2, 1 << 20, &gen)) return 2;
        } else if (!strcmp(argv[i], "--repeat")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(argv[i - 1], v, 1, 1000, &repeat)) return 2;
        } else if ((r = cli_kv_option(argc, argv, &i, &kvo)) != 0) {
            if (r < 0) return 2;
        } else if (cli_common_option(argc, argv, &i) != 0) return fprintf(stderr, "%s", USAGE), 2;
    }
    if (nmodels == 0) models[nmodels++] = cli_demo_model();
    result res[MAX_MODELS];
    for (int k = 0; k < nmodels; k++)
        if (bench_one(models[k], prompt, gen, repeat, &kvo, &res[k], graphs) != 0) return 1;
    char device[256];
    cli_device_description(device, sizeof device);
    if (json) {
        printf("[");
        for (int k = 0; k < nmodels; k++)
            printf("%s{\"model\":\"%s\",\"device\":\"%s\",\"graphs\":%d,\"threads\":%d,\"prompt_tokens\":%ld,\"gen_tokens\":%ld,\"repeat\":%ld,"
                   "\"kv_bits\":%d,\"kv_group_size\":%d,\"quantized_kv_start\":%lld,\"max_kv_size\":%lld,\"kv_dtype\":\"%s\","
                   "\"prefill_tok_s\":{\"median\":%.2f,\"min\":%.2f,\"max\":%.2f},"
                   "\"decode_tok_s\":{\"median\":%.2f,\"min\":%.2f,\"max\":%.2f},"
                   "\"ttft_s\":{\"median\":%.4f,\"min\":%.4f,\"max\":%.4f},\"peak_memory\":%zu,\"model_bytes\":%zu,"
                   "\"decode_step_bytes\":%.0f,\"params\":%lld}",
                   k ? "," : "", res[k].model, device, graphs, afo_get_threads(), prompt, gen, repeat, kvo.kv_bits, kvo.kv_group_size,
                   (long long)kvo.quantized_start, (long long)kvo.max_kv_size,
                   afo_dtype_name(res[k].kv_dtype), res[k].prefill[0],
                   res[k].prefill[1], res[k].prefill[2], res[k].decode[0], res[k].decode[1], res[k].decode[2],
                   res[k].ttft[0], res[k].ttft[1], res[k].ttft[2], res[k].peak, res[k].weights, res[k].step_bytes,
                   (long long)res[k].params);
        printf("]\n");
        return 0;
    }
    printf("%s, %d threads, prompt %ld tokens, %ld generated, %ld runs (median [min .. max])", device,
           afo_get_threads(), prompt, gen, repeat);
    if (kvo.kv_bits)
        printf(", KV cache %d-bit, groups of %d from position %lld", kvo.kv_bits, kvo.kv_group_size,
               (long long)kvo.quantized_start);
    if (kvo.max_kv_size) printf(", rotating KV cache of %lld", (long long)kvo.max_kv_size);
    if (kvo.kv_dtype) printf(", KV cache stored as %s", afo_dtype_name(kvo.kv_dtype));
    printf("\n");
    printf("%-32s %24s %24s %22s %10s %10s\n", "model", "prefill tok/s", "decode tok/s", "TTFT s", "peak MB",
           "model MB");
    for (int k = 0; k < nmodels; k++)
        printf("%-32s %8.1f [%6.1f .. %6.1f] %8.1f [%6.1f .. %6.1f] %6.3f [%.3f .. %.3f] %10.1f %10.1f\n",
               res[k].model, res[k].prefill[0], res[k].prefill[1], res[k].prefill[2], res[k].decode[0],
               res[k].decode[1], res[k].decode[2], res[k].ttft[0], res[k].ttft[1], res[k].ttft[2],
               (double)res[k].peak / 1e6, (double)res[k].weights / 1e6);
    return 0;
}
