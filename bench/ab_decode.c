/* Paired A/B of two afo builds' decode speed in one process. The shared
 * host this project is measured on changes its memory bandwidth by ±20%
 * within seconds, more than most changes move a decode step; comparing
 * builds run one after the other mostly measures the host. Here both
 * builds' libafo.so are loaded (dlopen, each with its own symbols, thread
 * pool and model), each prefills the same prompt, then they take turns
 * decoding `tokens` tokens, which one goes first alternating, for `pairs`
 * pairs: drift slower than a pair cancels in the pair's time ratio.
 * Prints the median B/A time ratio with p10 and p90, and each build's
 * tok/s over all its turns. On the 2-core development machine a library
 * against a copy of itself read 1.015 and 0.999 (4-bit TinyLlama, 40 and
 * 50 pairs of 8 tokens), where whole runs one after the other differ by
 * 10-20%.
 * Usage: ab_decode LIB_A.so LIB_B.so MODEL [--prompt 512] [--tokens 8] [--pairs 50] [--threads 2]
 *        [--kv-dtype T]
 * (copy the libraries first: dlopen of one path twice gives one library;
 * --kv-dtype needs libraries with afo_kv_cache_options.kv_dtype, a14c306
 * and later) */
#include "bench_util.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <afo/afo.h>

/* The entry points used, from one library. */
typedef struct build {
    void (*set_threads)(int);
    afo_status (*load)(const char *, const afo_model_options *, afo_model **);
    afo_status (*cache_create)(const afo_model *, int64_t, const afo_kv_cache_options *, afo_kv_cache **);
    afo_kv_cache_options (*cache_defaults)(void);
    afo_status (*cache_truncate)(afo_kv_cache *, int64_t);
    int64_t (*cache_length)(const afo_kv_cache *);
    int64_t (*vocab)(const afo_model *);
    afo_status (*forward)(afo_model *, afo_kv_cache *, const int32_t *, int64_t, int64_t,
                          const afo_forward_options *, afo_array **);
    const void *(*data)(afo_array *);
    void (*release)(afo_array *);
    const char *(*last_error)(void);
    afo_model *model;
    afo_kv_cache *cache;
    int32_t token;
} build;

static bool bind(void *lib, const char *name, void *fn_ptr) {
    void *f = dlsym(lib, name);
    if (!f) fprintf(stderr, "ab_decode: %s\n", dlerror());
    memcpy(fn_ptr, &f, sizeof f); /* object to function pointer, as POSIX allows */
    return f != NULL;
}

static bool open_build(build *b, const char *path, const char *model, int threads, int kv_dtype) {
    /* RTLD_DEEPBIND: each library's calls stay within itself */
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!lib) {
        fprintf(stderr, "ab_decode: %s\n", dlerror());
        return false;
    }
    if (!bind(lib, "afo_set_threads", &b->set_threads) || !bind(lib, "afo_model_load", &b->load) ||
        !bind(lib, "afo_kv_cache_create_ex", &b->cache_create) || !bind(lib, "afo_kv_cache_defaults", &b->cache_defaults) ||
        !bind(lib, "afo_kv_cache_truncate", &b->cache_truncate) ||
        !bind(lib, "afo_kv_cache_length", &b->cache_length) || !bind(lib, "afo_model_vocab_size", &b->vocab) ||
        !bind(lib, "afo_model_forward_ex", &b->forward) || !bind(lib, "afo_array_data", &b->data) ||
        !bind(lib, "afo_release", &b->release) || !bind(lib, "afo_last_error", &b->last_error))
        return false;
    b->set_threads(threads);
    afo_model_options mo = {0};
    afo_kv_cache_options ko = b->cache_defaults();
    ko.kv_dtype = (afo_dtype)kv_dtype;
    if (b->load(model, &mo, &b->model) != AFO_OK || b->cache_create(b->model, 1, &ko, &b->cache) != AFO_OK) {
        fprintf(stderr, "ab_decode: %s: %s\n", path, b->last_error());
        return false;
    }
    return true;
}

/* Feeds n ids (or the last sampled token when ids is NULL) and keeps the
 * greedy next token, as bench_decode does. */
static bool feed(build *b, const int32_t *ids, int64_t n) {
    afo_forward_options last = {.last_only = 1};
    afo_array *logits = NULL;
    if (b->forward(b->model, b->cache, ids ? ids : &b->token, 1, n, &last, &logits) != AFO_OK) {
        fprintf(stderr, "ab_decode: %s\n", b->last_error());
        return false;
    }
    const float *row = b->data(logits);
    int64_t v = b->vocab(b->model);
    int32_t best = 0;
    for (int64_t i = 1; row && i < v; i++)
        if (row[i] > row[best]) best = (int32_t)i;
    b->token = best;
    b->release(logits);
    return row != NULL;
}

static double percentile(const double *sorted, int n, double p) { return sorted[(int)(p * (n - 1) + 0.5)]; }

int main(int argc, char **argv) {
    int prompt = 512, tokens = 8, pairs = 50, threads = 2, kv_dtype = 0;
    bool bad = argc < 4;
    for (int i = 4; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--prompt") && i + 1 < argc) prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pairs") && i + 1 < argc) pairs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv-dtype") && i + 1 < argc) bad = (kv_dtype = bench_kv_dtype(argv[++i])) < 0;
        else bad = true;
    }
    if (bad || prompt < 1 || tokens < 1 || pairs < 1 || threads < 1) {
        fprintf(stderr, "usage: ab_decode LIB_A.so LIB_B.so MODEL [--prompt N] [--tokens N] [--pairs N] [--threads N] "
                        "[--kv-dtype T]\n");
        return 2;
    }
    double load = bench_check_load();
    build b[2] = {{0}};
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)prompt);
    double *ratio = malloc(sizeof(double) * (size_t)pairs), total[2] = {0, 0};
    if (!ids || !ratio) return 1;
    for (int k = 0; k < 2; k++) {
        if (!open_build(&b[k], argv[1 + k], argv[3], threads, kv_dtype)) return 1;
        for (int i = 0; i < prompt; i++) ids[i] = (int32_t)((i * 7919 + 13) % b[k].vocab(b[k].model));
        if (!feed(&b[k], ids, prompt)) return 1;
    }
    for (int p = 0; p < pairs; p++) {
        double t[2];
        for (int h = 0; h < 2; h++) {
            build *x = &b[(p + h) % 2];
            /* the positions stay within prompt .. prompt + 384, so later
             * pairs do not attend over ever longer caches */
            if (x->cache_length(x->cache) + tokens + 1 > prompt + 384 && x->cache_truncate(x->cache, prompt) != AFO_OK)
                return 1;
            if (!feed(x, NULL, 1)) return 1; /* wakes this library's thread pool */
            double t0 = bench_now();
            for (int i = 0; i < tokens; i++)
                if (!feed(x, NULL, 1)) return 1;
            t[(p + h) % 2] = bench_now() - t0;
        }
        ratio[p] = t[1] / t[0];
        total[0] += t[0], total[1] += t[1];
    }
    qsort(ratio, (size_t)pairs, sizeof(double), bench_cmp_double);
    printf("B/A decode time: median %.4f [p10 %.4f .. p90 %.4f] over %d pairs of %d tokens; A %.2f tok/s, B %.2f tok/s; "
           "load %.2f\n",
           percentile(ratio, pairs, 0.5), percentile(ratio, pairs, 0.1), percentile(ratio, pairs, 0.9), pairs, tokens,
           tokens * pairs / total[0], tokens * pairs / total[1], load);
    free(ids), free(ratio);
    return 0;
}
