/* Models against transformers: logits and hidden states of the fixture
 * models (both config layouts), greedy decoding through the KV cache, the
 * cache against a full pass, real configs' parameter counts, random-model,
 * hub lookup, and malformed inputs. Fixtures: ../shared/fixtures (skipped
 * with a message when absent). AFO_TEST_SCALE < 1 shortens the heaviest
 * cases (qemu). */
#define _GNU_SOURCE
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
static double check_logits(afo_model *m, afo_weights *ref, const char *label, double tol) {
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
        for (int l = 0; (err > tol || getenv("AFO_TEST_VERBOSE")) && l <= L; l++) {
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

/* The fixtures' references ran RoPE with inverse frequencies rounded to the
 * storage dtype (make_reference_models.py moves the model to that dtype and
 * back, buffers included): emulate that to compare at float32 precision. */
static void emulate_reference_rope(afo_model *m) {
    afo_array **slots[2] = {&m->freqs_full, &m->freqs_sliding};
    for (int s = 0; s < 2; s++) {
        int64_t n = afo_array_size(*slots[s]);
        float f[512];
        afo_array_read(*slots[s], AFO_FLOAT32, f, sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            float inv = 1.0f / f[i];
            if (afo_model_dtype(m) == AFO_BFLOAT16) inv = afo_bf16_to_f32(afo_f32_to_bf16(inv));
            if (afo_model_dtype(m) == AFO_FLOAT16) inv = afo_f16_to_f32(afo_f32_to_f16(inv));
            f[i] = 1.0f / inv;
        }
        afo_release(*slots[s]);
        *slots[s] = afo_array_from_data(f, AFO_FLOAT32, 1, &n);
    }
}

/* Greedy ids of reference.json up to (not including) the first step whose
 * margin is below 1e-2: where float32 may legitimately pick another token. */
static int comparable_greedy(const char *dir, int32_t *want, int max, int *total) {
    char path[600];
    snprintf(path, sizeof path, "%s/reference.json", dir);
    cJSON *rj = json_read_file(path);
    const cJSON *toks = cJSON_GetObjectItem(rj, "greedy_new_tokens"), *margins = cJSON_GetObjectItem(rj, "greedy_margins");
    int n = 0;
    *total = cJSON_GetArraySize(toks);
    while (n < *total && n < max && cJSON_GetArrayItem(margins, n)->valuedouble >= 1e-2) {
        want[n] = (int32_t)cJSON_GetArrayItem(toks, n)->valuedouble;
        n++;
    }
    cJSON_Delete(rj);
    return n;
}

static void test_reference_models(void) {
    char dir[512], path[600], rel[128];
    for (int i = 0; i < NMODELS; i++) {
        snprintf(rel, sizeof rel, "fixtures/models/%s/reference.safetensors", MODELS[i]);
        if (!test_shared_path(rel, path, sizeof path)) return;
        snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(path, '/') - path), path);
        afo_weights *ref = afo_weights_open(path);
        CHECK_MSG(ref, "%s", afo_last_error());
        if (!ref) continue;
        double plain[2] = {INFINITY, INFINITY}, emul[2] = {INFINITY, INFINITY};
        for (int v = 0; v < 2; v++) {
            const char *layout = v ? "v4 config" : "v5 config";
            afo_model *m = load(dir, v ? "config.transformers-v4.json" : NULL);
            if (!m) continue;
            plain[v] = check_logits(m, ref, MODELS[i], 3e-3);
            emulate_reference_rope(m);
            emul[v] = check_logits(m, ref, MODELS[i], 1e-5);
            CHECK_MSG(emul[v] <= 1e-5, "%s (%s): logits rel err %.3g", MODELS[i], layout, emul[v]);
            CHECK_MSG(plain[v] <= 3e-3, "%s (%s): logits rel err %.3g with exact RoPE", MODELS[i], layout, plain[v]);
            afo_model_free(m);
        }
        afo_model *m = load(dir, NULL);
        int32_t want[64];
        int total, comparable = comparable_greedy(dir, want, 64, &total), agree = -1;
        afo_array *gt = afo_weights_get(ref, "greedy_tokens"), *ids = afo_weights_get(ref, "input_ids");
        double kv = INFINITY;
        if (m && gt && ids) {
            agree = greedy(m, afo_array_data(gt), 8, want, comparable);
            CHECK_MSG(agree == comparable, "%s: greedy agrees on %d of %d comparable steps", MODELS[i], agree,
                      comparable);
            kv = cache_vs_full(m, afo_array_data(ids), 2, 32);
            CHECK_MSG(kv <= 1e-5, "%s: KV-cache path vs full pass rel err %.3g", MODELS[i], kv);
        }
        fprintf(stderr,
                "  %-12s logits max rel err: %.1e (v5) %.1e (v4), exact RoPE %.1e | greedy %d/%d (%d steps) | "
                "cache vs full %.1e\n",
                MODELS[i], emul[0], emul[1], plain[0], agree, comparable, total, kv);
        afo_release(ids), afo_release(gt);
        afo_model_free(m);
        afo_weights_close(ref);
    }
}

/* llama2.c's own greedy decode of stories260K from BOS (a real model). */
static void test_stories260k(void) {
    char dir[512], path[600];
    if (!test_shared_path("fixtures/models/stories260K", dir, sizeof dir)) return;
    snprintf(path, sizeof path, "%s/reference.json", dir);
    cJSON *rj = json_read_file(path);
    const cJSON *ids = cJSON_GetObjectItem(rj, "llama2c_greedy_ids");
    int n = cJSON_GetArraySize(ids), steps = (int)((n - 1) * fmin(1.0, g_scale));
    int32_t *want = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) want[i] = (int32_t)cJSON_GetArrayItem(ids, i)->valuedouble;
    for (int v = 0; v < 2; v++) {
        afo_model *m = load(dir, v ? "config.transformers-v4.json" : NULL);
        int agree = m ? greedy(m, want, 1, want + 1, v ? 16 : steps) : -1;
        CHECK_MSG(agree == (v ? 16 : steps), "stories260K: greedy agrees on %d of %d", agree, v ? 16 : steps);
        if (!v) fprintf(stderr, "  stories260K  greedy from BOS: %d/%d ids as llama2.c\n", agree, steps);
        afo_model_free(m);
    }
    free(want);
    cJSON_Delete(rj);
}

/* The demo model: both config layouts agree, the cache matches a full
 * pass, and the logits are sane (no logit reference exists for it). */
static void test_tiny_classics(void) {
    char dir[512];
    if (!test_shared_path("fixtures/models/tiny-classics", dir, sizeof dir)) return;
    afo_model *m5 = load(dir, NULL), *m4 = load(dir, "config.transformers-v4.json");
    if (!m5 || !m4) goto done;
    CHECK(afo_model_num_params(m5) > 5000000 && afo_model_num_params(m5) < 7000000);
    CHECK(afo_model_vocab_size(m5) == 4096 && afo_model_dtype(m5) == AFO_BFLOAT16);
    int32_t ids[48];
    for (int i = 0; i < 48; i++) ids[i] = (int32_t)((i * 977 + 13) % 4096);
    int64_t n = g_scale < 1 ? 12 : 24;
    afo_array *a = NULL, *b = NULL;
    CHECK(afo_model_forward(m5, NULL, ids, 2, n, &a) == AFO_OK);
    CHECK(afo_model_forward(m4, NULL, ids, 2, n, &b) == AFO_OK);
    if (a && b) {
        double e = row_rel_err(afo_array_data(a), afo_array_data(b), 2 * n, 4096);
        CHECK_MSG(e == 0, "tiny-classics: v4 and v5 configs differ by %.3g", e);
    }
    double kv = cache_vs_full(m5, ids, 2, n);
    CHECK_MSG(kv <= 1e-5, "tiny-classics: cache vs full %.3g", kv);
    fprintf(stderr, "  tiny-classics %lld params, cache vs full %.1e\n", (long long)afo_model_num_params(m5), kv);
    afo_release(a), afo_release(b);
done:
    afo_model_free(m5);
    afo_model_free(m4);
}

/* Logits of the demo model, plain and quantized (4-bit g64), before and
 * after its projections are stacked as afo_model_to_device does on a GPU
 * (a decode step then uses the stacked products, a prompt the parts): each
 * row of a product is computed the same way, so they agree. */
static void test_stacked_projections(void) {
    char tmp[128], q4[160];
    if (!test_temp_dir("stacked", tmp, sizeof tmp)) return;
    snprintf(q4, sizeof q4, "%s/q4", tmp);
    afo_convert_options co = {.dtype = -1, .bits = 4, .group_size = 64};
    CHECK(afo_model_convert("models/tiny-classics", q4, &co, NULL) == AFO_OK);
    const char *dirs[2] = {"models/tiny-classics", q4};
    int32_t ids[5] = {1, 1785, 28, 300, 7};
    for (int k = 0; k < 2; k++) {
        afo_model *m = load(dirs[k], NULL);
        if (!m) continue;
        afo_array *before[2] = {NULL, NULL}, *after[2] = {NULL, NULL};
        for (int pass = 0; pass < 2; pass++) {
            afo_array **out = pass ? after : before;
            if (pass) CHECK(model_stack_projections(m) == AFO_OK && m->layers[0].stacked_qkv && m->layers[0].stacked_gate_up);
            afo_kv_cache *c = NULL;
            CHECK(afo_kv_cache_create(m, 1, &c) == AFO_OK);
            CHECK(afo_model_forward(m, c, ids, 1, 4, &out[0]) == AFO_OK); /* a prompt, then one step */
            CHECK(afo_model_forward(m, c, ids + 4, 1, 1, &out[1]) == AFO_OK);
            afo_kv_cache_free(c);
        }
        for (int i = 0; i < 2; i++) {
            int64_t rows = i ? 1 : 4;
            double e = before[i] && after[i]
                           ? row_rel_err(afo_array_data(after[i]), afo_array_data(before[i]), rows, 4096)
                           : INFINITY;
            CHECK_MSG(e <= 1e-5, "%s: stacked projections change the %s logits by %.3g", dirs[k], i ? "step" : "prompt", e);
            afo_release(before[i]), afo_release(after[i]);
        }
        afo_model_free(m);
    }
    test_remove_tree(tmp);
}

/* Every real config parses and lists tensors adding up to the published
 * parameter count (SOURCES.md; text model only for gemma-3-4b). */
static void test_real_configs(void) {
    static const struct { const char *name; double params; } want[] = {
        {"Llama-3.2-1B", 1.235814400e9}, {"Llama-3.2-1B-Instruct", 1.235814400e9}, {"Llama-3.2-3B", 3.213e9},
        {"Llama-3.2-3B-Instruct", 3.213e9}, {"Llama-3.1-8B", 8.030e9}, {"Llama-3.1-8B-Instruct", 8.030e9},
        {"Mistral-7B-Instruct-v0.3", 7.248e9}, {"Phi-3-mini-4k-instruct", 3.821079552e9},
        {"Qwen2.5-0.5B-Instruct", 0.494e9}, {"Qwen2.5-1.5B-Instruct", 1.544e9}, {"Qwen2.5-7B-Instruct", 7.616e9},
        {"Qwen3-0.6B", 0.596e9}, {"Qwen3-1.7B", 1.721e9}, {"Qwen3-4B", 4.022e9}, {"Qwen3-8B", 8.191e9},
        {"Qwen3-30B-A3B", 30.532e9}, {"SmolLM2-135M-Instruct", 134515008}, {"SmolLM2-360M-Instruct", 0.362e9},
        {"SmolLM2-1.7B-Instruct", 1.711e9}, {"TinyLlama-1.1B-Chat-v1.0", 1.100e9}, {"gemma-3-1b-it", 1.000e9},
        {"gemma-3-4b-it", 3.880e9},
    };
    char rel[128], path[600];
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        snprintf(rel, sizeof rel, "fixtures/configs/%s/config.json", want[i].name);
        if (!test_shared_path(rel, path, sizeof path)) return;
        afo_model m = {0};
        afo_status st = config_load(path, NULL, &m.cfg, &m.arch);
        if (st == AFO_OK) st = model_tensor_specs(&m, m.cfg.multimodal ? "language_model.model." : "model.");
        CHECK_MSG(st == AFO_OK, "%s: %s", want[i].name, afo_last_error());
        double rel_err = fabs((double)m.num_params - want[i].params) / want[i].params;
        CHECK_MSG(rel_err < 1e-3, "%s: %lld parameters, published %.4g", want[i].name, (long long)m.num_params,
                  want[i].params);
        model_release_weights(&m);
        config_free(&m.cfg);
    }
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

/* A random model of the llama fixture's config (the random-model path),
 * then variations of it that must fail with a clear error. */
/* src with its first `from` replaced by `to`, into out; false when src has
 * no `from`. */
static bool splice(const char *src, const char *from, const char *to, char *out, size_t n) {
    const char *at = strstr(src, from);
    if (at) snprintf(out, n, "%.*s%s%s", (int)(at - src), src, to, at + strlen(from));
    return at != NULL;
}

static void test_random_and_malformed(void) {
    char cfg[600], dir[512], path[600], good[8192];
    if (!test_shared_path("fixtures/models/llama/config.json", cfg, sizeof cfg)) return;
    snprintf(dir, sizeof dir, "%s/rand", g_tmp);
    CHECK_MSG(afo_model_write_random(cfg, dir, AFO_BFLOAT16, 7) == AFO_OK, "%s", afo_last_error());
    afo_model *m = load(dir, NULL);
    if (m) {
        int32_t ids[6] = {1, 5, 9, 200, 3, 511};
        afo_array *lg = NULL;
        CHECK(afo_model_forward(m, NULL, ids, 1, 6, &lg) == AFO_OK);
        const float *d = lg ? afo_array_data(lg) : NULL;
        double ss = 0;
        for (int i = 0; d && i < 6 * 512; i++) ss += (double)d[i] * d[i];
        CHECK_MSG(d && isfinite(ss) && ss > 0, "random model logits sum of squares %g", ss);
        CHECK(afo_model_dtype(m) == AFO_BFLOAT16 && afo_model_is_eos(m, 2) && !afo_model_is_eos(m, 3));
        CHECK(afo_model_generation_config(m)->bos_token_id == 1);
        /* bad ids and batch are refused */
        int32_t bad = 512;
        afo_array *x = NULL;
        CHECK(afo_model_forward(m, NULL, &bad, 1, 1, &x) == AFO_ERR_INVALID_ARGUMENT && !x);
        afo_release(lg);
        afo_model_free(m);
    }
    /* a directory that holds weights is refused, its model left as it was */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat before, after;
    CHECK(stat(path, &before) == 0);
    CHECK(afo_model_write_random(cfg, dir, AFO_FLOAT32, 8) == AFO_ERR_IO);
    CHECK_MSG(strstr(afo_last_error(), "already holds weights (model.safetensors)"), "%s", afo_last_error());
    CHECK(stat(path, &after) == 0 && after.st_size == before.st_size && after.st_mtime == before.st_mtime);
    FILE *f = fopen(cfg, "r");
    size_t len = f ? fread(good, 1, sizeof good - 1, f) : 0;
    if (f) fclose(f);
    good[len] = 0;
    static const struct { const char *from, *to, *expect; afo_status st; } cases[] = {
        {"{", "{,", "not valid JSON", AFO_ERR_FORMAT},
        {"\"hidden_size\": 64,", "", "\"hidden_size\" is missing", AFO_ERR_FORMAT},
        {"\"model_type\": \"llama\"", "\"model_type\": \"frobnicator\"", "supported: llama, mistral", AFO_ERR_UNSUPPORTED},
        {"\"intermediate_size\": 128", "\"intermediate_size\": 96",
         "tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64], expected [96, 64]", AFO_ERR_FORMAT},
        {"\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3", "missing tensor model.layers.2.", AFO_ERR_FORMAT},
        {"\"tie_word_embeddings\": false", "\"tie_word_embeddings\": false, \"attention_bias\": true",
         "missing tensor model.layers.0.self_attn.q_proj.bias", AFO_ERR_FORMAT},
        {"\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "inconsistent attention shape", AFO_ERR_FORMAT},
        {"\"rope_type\": \"default\"", "\"rope_type\": \"longrope\"", "rope type \"longrope\"", AFO_ERR_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[8192];
        bool found = splice(good, cases[i].from, cases[i].to, text, sizeof text);
        CHECK_MSG(found, "case %zu: '%s' not in the config", i, cases[i].from);
        if (!found) continue;
        snprintf(path, sizeof path, "%s/bad.json", g_tmp);
        write_text(path, text);
        afo_model *bad = NULL;
        afo_status st = afo_model_load(dir, &(afo_model_options){.config_path = path}, &bad);
        CHECK_MSG(st == cases[i].st && !bad && strstr(afo_last_error(), cases[i].expect),
                  "case %zu: status %s, error '%s', expected '%s'", i, afo_status_name(st), afo_last_error(),
                  cases[i].expect);
        afo_model_free(bad);
    }
    /* integers past int32's range saturate instead of an undefined cast (the
     * sanitized build checks float-to-int casts): this one still loads */
    char big[sizeof good + 64], bigger[sizeof big + 64];
    CHECK(splice(good, "\"max_position_embeddings\": 256", "\"max_position_embeddings\": 1e24", big, sizeof big) &&
          splice(big, "\"eos_token_id\": 2", "\"eos_token_id\": 1e30", bigger, sizeof bigger));
    write_text(path, bigger);
    afo_model *sat = NULL;
    CHECK_MSG(afo_model_load(dir, &(afo_model_options){.config_path = path}, &sat) == AFO_OK && sat, "%s",
              afo_last_error());
    afo_model_free(sat);
    afo_model *none = NULL;
    CHECK(afo_model_load("no-such-org/no-such-model", NULL, &none) == AFO_ERR_IO && !none &&
          strstr(afo_last_error(), "not found"));
}

/* A hub id resolves offline through HF_HUB_CACHE, honouring refs/main. */
static void test_hub_cache(void) {
    char p[600], snap[600];
    snprintf(p, sizeof p, "%s/hub", g_tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/hub/models--tiny--rand", g_tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/hub/models--tiny--rand/snapshots", g_tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/hub/models--tiny--rand/refs", g_tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/hub/models--tiny--rand/refs/main", g_tmp);
    write_text(p, "abc123\n");
    snprintf(snap, sizeof snap, "%s/hub/models--tiny--rand/snapshots/abc123", g_tmp);
    mkdir(snap, 0700);
    snprintf(p, sizeof p, "%s/hub/models--tiny--rand/snapshots/old456", g_tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/hub", g_tmp);
    setenv("HF_HUB_CACHE", p, 1);
    char got[600];
    CHECK_MSG(afo_model_resolve("tiny/rand", got, sizeof got) == AFO_OK && strcmp(got, snap) == 0, "%s",
              afo_last_error());
    CHECK(afo_model_resolve("tiny/other", got, sizeof got) == AFO_ERR_IO && strstr(afo_last_error(), p));
    unsetenv("HF_HUB_CACHE");
}

/* gemma3 (multimodal) configs: the text model under language_model. */
static void test_multimodal_gemma3(void) {
    char cfg[600], dir[600];
    snprintf(cfg, sizeof cfg, "%s/gemma3mm.json", g_tmp);
    write_text(cfg, "{\"model_type\": \"gemma3\", \"eos_token_id\": [1, 106], \"torch_dtype\": \"bfloat16\", "
                    "\"text_config\": {\"model_type\": \"gemma3_text\", \"hidden_size\": 32, \"intermediate_size\": 48, "
                    "\"num_hidden_layers\": 3, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
                    "\"head_dim\": 16, \"vocab_size\": 64, \"sliding_window\": 4, \"sliding_window_pattern\": 3, "
                    "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0}}}");
    snprintf(dir, sizeof dir, "%s/gemma3mm", g_tmp);
    CHECK_MSG(afo_model_write_random(cfg, dir, -1, 3) == AFO_OK, "%s", afo_last_error());
    afo_model *m = load(dir, NULL);
    if (!m) return;
    CHECK(afo_model_is_eos(m, 106) && afo_model_vocab_size(m) == 64 && m->cfg.layer_sliding[0] &&
          !m->cfg.layer_sliding[2] && m->cfg.rope_full.kind == ROPE_LINEAR && m->cfg.rope_sliding.kind == ROPE_DEFAULT);
    int32_t ids[10] = {2, 5, 7, 9, 11, 13, 15, 17, 19, 21};
    double kv = cache_vs_full(m, ids, 1, 10);
    CHECK_MSG(kv <= 1e-5, "gemma3 multimodal: cache vs full %.3g", kv);
    afo_model_free(m);
}

int main(void) {
    const char *s = getenv("AFO_TEST_SCALE");
    if (s) g_scale = atof(s);
    if (!test_temp_dir("models", g_tmp, sizeof g_tmp)) return 1;
    RUN(test_reference_models);
    RUN(test_stories260k);
    RUN(test_tiny_classics);
    RUN(test_stacked_projections);
    RUN(test_real_configs);
    RUN(test_random_and_malformed);
    RUN(test_hub_cache);
    RUN(test_multimodal_gemma3);
    test_remove_tree(g_tmp);
    return test_finish();
}
