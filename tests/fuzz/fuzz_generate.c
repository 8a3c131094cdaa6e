/* libFuzzer target: generation on the demo model with the KV cache's
 * options (quantized, rotating), the sampler's, the token budget, stop
 * strings and the prompt's ids (out-of-vocabulary ones among them) all
 * from the bytes: text or an error, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <afo/afo.h>

#include "fuzz.h"

static int count_tokens(int32_t id, const char *text, void *userdata) {
    (void)id, (void)text;
    return ++*(int *)userdata > 64; /* stops a run the options let go on */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static afo_model *model;
    static afo_tokenizer *tok;
    if (!model) {
        afo_set_threads(1);
        if (afo_model_load(FUZZ_SOURCE_DIR "/models/tiny-classics", NULL, &model) != AFO_OK ||
            !(tok = afo_tokenizer_load(FUZZ_SOURCE_DIR "/models/tiny-classics"))) {
            fprintf(stderr, "fuzz_generate: %s\n", afo_last_error());
            abort();
        }
    }
    afo_kv_cache_options kv;
    afo_generate_options g = afo_generate_defaults();
    uint8_t budget, nprompt, stop_len;
    fuzz_take(&data, &size, &kv, sizeof kv);
    fuzz_take(&data, &size, &g.sampler, sizeof g.sampler);
    fuzz_take(&data, &size, &budget, 1);
    fuzz_take(&data, &size, &nprompt, 1);
    fuzz_take(&data, &size, &stop_len, 1);
    fuzz_take(&data, &size, &g.prefill_chunk, sizeof g.prefill_chunk);
    g.max_tokens = budget % 12;
    g.ignore_eos = budget >> 7;
    char stop[16];
    fuzz_take(&data, &size, stop, stop_len % sizeof stop);
    stop[stop_len % sizeof stop] = '\0';
    const char *stops[1] = {stop};
    g.stop = stops, g.num_stop = stop[0] ? 1 : 0;
    int32_t prompt[32];
    nprompt %= 32;
    fuzz_take(&data, &size, prompt, nprompt * sizeof *prompt);
    for (int i = 0; i < nprompt; i++)
        if (prompt[i] % 7) prompt[i] = abs(prompt[i] % 600); /* mostly in the vocabulary */
    afo_kv_cache *cache = NULL;
    if (afo_kv_cache_create_ex(model, 1, &kv, &cache) != AFO_OK) return 0;
    int seen = 0;
    afo_generate_stats stats;
    (void)afo_generate(model, cache, tok, prompt, nprompt, &g, count_tokens, &seen, &stats);
    afo_kv_cache_free(cache);
    return 0;
}
