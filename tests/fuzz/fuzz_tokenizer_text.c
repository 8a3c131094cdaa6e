/* libFuzzer target: any bytes (valid UTF-8 or not) encoded and decoded by
 * a tokenizer, whole and as a detokenizer's stream. AFO_FUZZ_TOKENIZER
 * names the tokenizer.json (default: the demo model's). */
#include <stdio.h>
#include <stdlib.h>

#include <afo/afo.h>

#include "fuzz.h"

static void decode_both(afo_tokenizer *tok, const int32_t *ids, size_t n) {
    char *text = NULL;
    if (afo_tokenizer_decode(tok, ids, n, 0, &text) == AFO_OK) free(text);
    afo_detokenizer *d = afo_detokenizer_new(tok, 1);
    if (!d) return;
    for (size_t i = 0; i < n; i++) {
        char *piece = NULL;
        if (afo_detokenizer_push(d, ids[i], &piece) == AFO_OK) free(piece);
    }
    char *rest = NULL;
    if (afo_detokenizer_flush(d, &rest) == AFO_OK) free(rest);
    afo_detokenizer_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static afo_tokenizer *tok;
    if (!tok) {
        const char *path = getenv("AFO_FUZZ_TOKENIZER");
        tok = afo_tokenizer_load(path ? path : FUZZ_SOURCE_DIR "/models/tiny-classics/tokenizer.json");
        if (!tok) {
            fprintf(stderr, "fuzz_tokenizer_text: %s\n", afo_last_error());
            abort();
        }
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (afo_tokenizer_encode(tok, (const char *)data, size, 1, &ids, &n) == AFO_OK) {
        decode_both(tok, ids, n);
        free(ids);
    }
    /* the bytes read as ids too: out-of-range and special ones among them */
    int32_t *raw = malloc(size / sizeof(int32_t) * sizeof(int32_t) + 1);
    if (!raw) abort();
    memcpy(raw, data, size / sizeof(int32_t) * sizeof(int32_t));
    decode_both(tok, raw, size / sizeof(int32_t));
    free(raw);
    return 0;
}
