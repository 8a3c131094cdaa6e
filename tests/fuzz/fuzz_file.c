/* libFuzzer target: the bytes as a file that afo opens, by FUZZ_KIND:
 * 0 a safetensors file (every tensor read), 1 a tokenizer.json (a sentence
 * encoded and decoded), 2 a config.json beside the demo model's weights
 * (loaded, and when it loads, three tokens run through it). */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[96];
    if (FUZZ_KIND == 2) {
        /* a directory of the demo model's weights (a link) and this config */
        static char dir[64];
        if (!dir[0]) {
            snprintf(dir, sizeof dir, "/tmp/afo-fuzz-model-%d", (int)getpid());
            mkdir(dir, 0755);
            snprintf(path, sizeof path, "%s/model.safetensors", dir);
            if (symlink(FUZZ_SOURCE_DIR "/models/tiny-classics/model.safetensors", path) != 0) abort();
        }
        snprintf(path, sizeof path, "%s/config.json", dir);
        if (fuzz_write(path, data, size)) use_config(dir);
        return 0;
    }
    snprintf(path, sizeof path, "/tmp/afo-fuzz-%d.%s", (int)getpid(), FUZZ_KIND == 0 ? "safetensors" : "json");
    if (!fuzz_write(path, data, size)) return 0;
    if (FUZZ_KIND == 0) read_weights(path);
    else use_tokenizer(path);
    remove(path);
    return 0;
}
