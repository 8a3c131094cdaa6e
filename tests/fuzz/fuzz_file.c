/* libFuzzer target: the bytes as a file that afo opens, by FUZZ_KIND:
 * 0 a safetensors file (every tensor read), 1 a tokenizer.json (a sentence
 * encoded and decoded). */
#include <stdio.h>
#include <stdlib.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/afo-fuzz-%d.%s", (int)getpid(), FUZZ_KIND == 0 ? "safetensors" : "json");
    if (!fuzz_write(path, data, size)) return 0;
    if (FUZZ_KIND == 0) read_weights(path);
    else use_tokenizer(path);
    remove(path);
    return 0;
}
