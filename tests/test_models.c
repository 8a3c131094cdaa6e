/* Models against transformers: logits and hidden states of the fixture
 * models (both config layouts), greedy decoding through the KV cache, the
 * cache against a full pass, real configs' parameter counts, random-model,
 * hub lookup, and malformed inputs. Fixtures: ../shared/fixtures (skipped
 * with a message when absent). AFO_TEST_SCALE < 1 shortens the heaviest
 * cases (qemu). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/models.h"
#include "support/test.h"

static double g_scale = 1.0;
static char g_tmp[256];

static const char *const MODELS[] = {"llama", "llama3-rope", "qwen2", "qwen3", "qwen3-moe",
                                     "mistral", "phi3", "gemma3"};
#define NMODELS (int)(sizeof MODELS / sizeof *MODELS)

static afo_model *load(const char *dir, const char *config_name) {
    char cfg[1024];
    afo_model_options o = {0};
    if (config_name) {
        snprintf(cfg, sizeof cfg, "%s/%s", dir, config_name);
        o.config_path = cfg;
    }
    afo_model *m = NULL;
    afo_status st = afo_model_load(dir, &o, &m);
    CHECK_MSG(st == AFO_OK, "%s (%s): %s", dir, config_name ? config_name : "config.json", afo_last_error());
    return m;
}

/* max over rows of ||a - b|| / ||b|| for [rows, d] float32 data */
static double row_rel_err(const float *a, const float *b, int64_t rows, int64_t d) {
    double worst = 0;
    for (int64_t r = 0; r < rows; r++) {
        double num = 0, den = 0;
        for (int64_t i = 0; i < d; i++) {
            double x = a[r * d + i], y = b[r * d + i];
            num += (x - y) * (x - y);
            den += y * y;
        }
        double e = den > 0 ? sqrt(num / den) : sqrt(num);
        if (!(e <= worst)) worst = e; /* NaN propagates */
    }
    return worst;
}

static const float *ref_f32(afo_weights *w, const char *name, afo_array **hold) {
    *hold = afo_weights_get(w, name);
    return *hold ? afo_array_data(*hold) : NULL;
}

/* Logits (and, on a mismatch, the hidden states layer by layer) against
 * reference.safetensors. Returns the max relative error. */
static double check_logits(afo_model *m, afo_weights *ref, const char *label) {
    afo_array *ids_a = afo_weights_get(ref, "input_ids"), *logits = NULL, *ref_l = NULL;
    int L = afo_model_num_layers(m);
    afo_array **hs = calloc((size_t)L + 1, sizeof *hs);
    const int32_t *ids = ids_a ? afo_array_data(ids_a) : NULL;
    int64_t B = ids_a ? afo_array_dim(ids_a, 0) : 0, n = ids_a ? afo_array_dim(ids_a, 1) : 0;
    afo_forward_options o = {.hidden_states = hs};
    double err = INFINITY;
    if (ids && afo_model_forward_ex(m, NULL, ids, B, n, &o, &logits) == AFO_OK) {
        const float *want = ref_f32(ref, "logits", &ref_l);
        err = want ? row_rel_err(afo_array_data(logits), want, B * n, afo_model_vocab_size(m)) : INFINITY;
        for (int l = 0; (err > 1e-3 || getenv("AFO_TEST_VERBOSE")) && l <= L; l++) {
            char name[64];
            afo_array *h;
            snprintf(name, sizeof name, "hidden_states.%d", l);
            const float *hw = ref_f32(ref, name, &h);
            if (hw)
                fprintf(stderr, "  %s %s: rel err %.3g\n", label, name,
                        row_rel_err(afo_array_data(hs[l]), hw, B * n, afo_model_hidden_size(m)));
            afo_release(h);
        }
    } else {
        fprintf(stderr, "%s: forward failed: %s\n", label, afo_last_error());
    }
    for (int l = 0; l <= L; l++) afo_release(hs[l]);
    free(hs);
    afo_release(logits), afo_release(ref_l), afo_release(ids_a);
    return err;
}

static int argmax_row(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int)best;
}

/* Greedy decoding with the cache: prefill the prompt, then one token at a
 * time. Returns how many of want[] it reproduced (stopping at the first
 * difference). */
static int greedy(afo_model *m, const int32_t *prompt, int np, const int32_t *want, int nwant) {
    afo_kv_cache *c;
    if (afo_kv_cache_create(m, 1, &c) != AFO_OK) return -1;
    afo_forward_options last = {.last_only = 1};
    afo_array *lg = NULL;
    int agree = 0;
    afo_status st = afo_model_forward_ex(m, c, prompt, 1, np, &last, &lg);
    while (st == AFO_OK && agree < nwant) {
        int32_t next = argmax_row(afo_array_data(lg), afo_model_vocab_size(m));
        afo_release(lg), lg = NULL;
        if (next != want[agree]) break;
        agree++;
        if (agree < nwant) st = afo_model_forward_ex(m, c, &next, 1, 1, &last, &lg);
    }
    CHECK_MSG(st == AFO_OK, "greedy: %s", afo_last_error());
    afo_release(lg);
    afo_kv_cache_free(c);
    return agree;
}

/* Prefill in two chunks, then decode one position at a time: the logits
 * must match one full pass. Returns the max relative error. */
static double cache_vs_full(afo_model *m, const int32_t *ids, int64_t B, int64_t n) {
    afo_array *full = NULL;
    if (afo_model_forward(m, NULL, ids, B, n, &full) != AFO_OK) return INFINITY;
    int64_t V = afo_model_vocab_size(m), cuts[3] = {n / 3, n / 3 + n / 4, n};
    float *got = malloc(sizeof(float) * (size_t)(B * n * V));
    int32_t *chunk = malloc(sizeof(int32_t) * (size_t)(B * n));
    afo_kv_cache *c = NULL;
    afo_status st = got && chunk ? afo_kv_cache_create(m, B, &c) : AFO_ERR_OUT_OF_MEMORY;
    for (int64_t pos = 0, k = 0; st == AFO_OK && pos < n; k++) {
        int64_t len = k < 2 ? cuts[k] - pos : 1;
        for (int64_t b = 0; b < B; b++) memcpy(chunk + b * len, ids + b * n + pos, sizeof(int32_t) * (size_t)len);
        afo_array *lg = NULL;
        st = afo_model_forward(m, c, chunk, B, len, &lg);
        const float *d = st == AFO_OK ? afo_array_data(lg) : NULL;
        for (int64_t b = 0; d && b < B; b++)
            memcpy(got + (b * n + pos) * V, d + b * len * V, sizeof(float) * (size_t)(len * V));
        afo_release(lg);
        pos += len;
    }
    CHECK_MSG(st == AFO_OK && afo_kv_cache_length(c) == n, "cache path: %s", afo_last_error());
    double err = st == AFO_OK ? row_rel_err(got, afo_array_data(full), B * n, V) : INFINITY;
    afo_kv_cache_free(c);
    free(got), free(chunk);
    afo_release(full);
    return err;
}

static void test_reference_models(void) {
    char dir[512], path[600], rel[128];
    for (int i = 0; i < NMODELS; i++) {
        snprintf(rel, sizeof rel, "fixtures/models/%s/reference.safetensors", MODELS[i]);
        if (!test_shared_path(rel, path, sizeof path)) return;
        snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(path, '/') - path), path);
        afo_weights *ref = afo_weights_open(path);
        CHECK_MSG(ref, "%s", afo_last_error());
        double err[2] = {INFINITY, INFINITY};
        afo_model *m = NULL;
        for (int v = 0; v < 2 && ref; v++) {
            afo_model *mv = load(dir, v ? "config.transformers-v4.json" : NULL);
            if (!mv) continue;
            err[v] = check_logits(mv, ref, MODELS[i]);
            CHECK_MSG(err[v] <= 1e-3, "%s (%s): logits rel err %.3g", MODELS[i], v ? "v4 config" : "v5 config",
                      err[v]);
            if (v) afo_model_free(mv);
            else m = mv;
        }
        /* greedy continuation up to the first near-tie */
        snprintf(path, sizeof path, "%s/reference.json", dir);
        cJSON *rj = json_read_file(path, true);
        const cJSON *toks = cJSON_GetObjectItem(rj, "greedy_new_tokens"), *margins = cJSON_GetObjectItem(rj, "greedy_margins");
        int nt = cJSON_GetArraySize(toks), comparable = 0, agree = -1;
        int32_t want[64];
        while (comparable < nt && comparable < 64 &&
               cJSON_GetArrayItem(margins, comparable)->valuedouble >= 1e-2) {
            want[comparable] = (int32_t)cJSON_GetArrayItem(toks, comparable)->valuedouble;
            comparable++;
        }
        afo_array *gt = ref ? afo_weights_get(ref, "greedy_tokens") : NULL;
        if (m && gt) {
            agree = greedy(m, afo_array_data(gt), 8, want, comparable);
            CHECK_MSG(agree == comparable, "%s: greedy agrees on %d of %d comparable steps", MODELS[i], agree,
                      comparable);
        }
        double kv = INFINITY;
        afo_array *ids = ref ? afo_weights_get(ref, "input_ids") : NULL;
        if (m && ids) {
            kv = cache_vs_full(m, afo_array_data(ids), 2, 32);
            CHECK_MSG(kv <= 1e-5, "%s: KV-cache path vs full pass rel err %.3g", MODELS[i], kv);
        }
        fprintf(stderr, "  %-12s logits rel err v5 %.2e v4 %.2e | greedy %d/%d (of %d) | cache vs full %.1e\n",
                MODELS[i], err[0], err[1], agree, comparable, nt, kv);
        afo_release(ids), afo_release(gt);
        cJSON_Delete(rj);
        afo_model_free(m);
        afo_weights_close(ref);
    }
}

int main(void) {
    const char *s = getenv("AFO_TEST_SCALE");
    if (s) g_scale = atof(s);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/afo_test_models_%d", (int)getpid());
    mkdir(g_tmp, 0700);
    RUN(test_reference_models);
    return test_finish();
}
