/* libFuzzer target: the bytes as a file that afo opens, by FUZZ_KIND:
 * 0 a safetensors file (every tensor read), 1 a tokenizer.json (a sentence
 * encoded and decoded), 2 a config.json beside the demo model's weights
 * (loaded, and when it loads, three tokens run through it), 3 a config.json
 * and 4 a tokenizer.json beside the rest of the demo model, exported as a
 * Q4_0 GGUF file (afo convert --gguf). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <afo/afo.h>

#include "fuzz.h"

static void read_weights(const char *path) {
    afo_weights *w = afo_weights_open(path);
    if (!w) return;
    for (int i = 0; i < afo_weights_count(w); i++) {
        afo_array *a = afo_weights_get(w, afo_weights_name(w, i));
        if (a && afo_eval(&a, 1) == AFO_OK) (void)afo_array_data(a);
        afo_release(a);
    }
    (void)afo_weights_metadata(w, "format");
    afo_weights_close(w);
}

static void use_tokenizer(const char *path) {
    afo_tokenizer *tok = afo_tokenizer_load(path);
    if (!tok) return;
    static const char text[] = "Hello, world! It's 2026 \xe2\x98\x83 <s> don't";
    int32_t *ids = NULL;
    size_t n = 0;
    if (afo_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &n) == AFO_OK) {
        char *out = NULL;
        if (afo_tokenizer_decode(tok, ids, n, 0, &out) == AFO_OK) free(out);
        free(ids);
    }
    afo_tokenizer_free(tok);
}

static void use_config(const char *dir) {
    afo_model *m = NULL;
    if (afo_model_load(dir, NULL, &m) != AFO_OK) return;
    afo_kv_cache *cache = NULL;
    if (afo_kv_cache_create(m, 1, &cache) == AFO_OK) {
        const int32_t ids[3] = {1, 2, 3};
        afo_array *logits = NULL;
        if (afo_model_forward(m, cache, ids, 1, 3, &logits) == AFO_OK) afo_release(logits);
        afo_kv_cache_free(cache);
    }
    afo_model_free(m);
}

/* A directory per process holding links to the demo model's files but
 * `fuzzed` (written from the input, never through a link, which would
 * overwrite the repository's file) and, unless `weights_only`, beside
 * model.safetensors also its config and tokenizer files. */
static const char *demo_dir_with(const char *fuzzed, bool weights_only, const uint8_t *data, size_t size) {
    static const char *const files[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"};
    static char dir[64];
    char path[128], source[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/afo-fuzz-model-%d", (int)getpid());
        mkdir(dir, 0755);
        for (size_t i = 0; i < (weights_only ? 1 : sizeof files / sizeof *files); i++) {
            if (strcmp(files[i], fuzzed) == 0) continue;
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            snprintf(source, sizeof source, "%s/models/tiny-classics/%s", FUZZ_SOURCE_DIR, files[i]);
            if (symlink(source, path) != 0) abort();
        }
    }
    snprintf(path, sizeof path, "%s/%s", dir, fuzzed);
    return fuzz_write(path, data, size) ? dir : NULL;
}

static void export_gguf(const char *dir) {
    char out[64];
    snprintf(out, sizeof out, "/tmp/afo-fuzz-%d.gguf", (int)getpid());
    if (afo_gguf_export(dir, out, AFO_GGUF_Q4_0) == AFO_OK) remove(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (FUZZ_KIND >= 2) {
        const char *dir = demo_dir_with(FUZZ_KIND == 4 ? "tokenizer.json" : "config.json", FUZZ_KIND == 2, data, size);
        if (dir && FUZZ_KIND == 2) use_config(dir);
        else if (dir) export_gguf(dir);
        return 0;
    }
    char path[96];
    snprintf(path, sizeof path, "/tmp/afo-fuzz-%d.%s", (int)getpid(), FUZZ_KIND == 0 ? "safetensors" : "json");
    if (!fuzz_write(path, data, size)) return 0;
    if (FUZZ_KIND == 0) read_weights(path);
    else use_tokenizer(path);
    remove(path);
    return 0;
}
