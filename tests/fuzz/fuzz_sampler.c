/* libFuzzer target: sampler options, logits and history all from the
 * bytes (NaN, infinities, out-of-range ids and options among them): a
 * valid id or an error, never a crash. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <afo/afo.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    afo_sampler_options o;
    uint8_t vocab_byte, nhist_byte;
    fuzz_take(&data, &size, &o.temperature, sizeof o.temperature);
    fuzz_take(&data, &size, &o.top_k, sizeof o.top_k);
    fuzz_take(&data, &size, &o.top_p, sizeof o.top_p);
    fuzz_take(&data, &size, &o.min_p, sizeof o.min_p);
    fuzz_take(&data, &size, &o.repetition_penalty, sizeof o.repetition_penalty);
    fuzz_take(&data, &size, &o.presence_penalty, sizeof o.presence_penalty);
    fuzz_take(&data, &size, &o.frequency_penalty, sizeof o.frequency_penalty);
    fuzz_take(&data, &size, &o.penalty_window, sizeof o.penalty_window);
    fuzz_take(&data, &size, &o.seed, sizeof o.seed);
    fuzz_take(&data, &size, &vocab_byte, 1);
    fuzz_take(&data, &size, &nhist_byte, 1);
    const int32_t vocab = (int32_t)vocab_byte - 8; /* zero and negative vocabularies too */
    afo_sampler *s = afo_sampler_new(&o, vocab);
    if (!s) return 0;
    float *logits = malloc((size_t)(vocab > 0 ? vocab : 1) * sizeof *logits);
    int32_t *history = malloc((size_t)(nhist_byte + 1) * sizeof *history);
    if (!logits || !history) abort();
    for (int round = 0; round < 3; round++) {
        fuzz_take(&data, &size, logits, (size_t)vocab * sizeof *logits);
        fuzz_take(&data, &size, history, (size_t)nhist_byte * sizeof *history);
        const int32_t id = afo_sampler_sample(s, logits, history, nhist_byte);
        if (id >= vocab) abort(); /* an id outside the vocabulary is never a valid pick */
    }
    free(logits);
    free(history);
    afo_sampler_free(s);
    return 0;
}
