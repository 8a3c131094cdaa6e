/* libFuzzer target: sampler options, logits and history all from the
 * bytes (NaN, infinities, out-of-range ids and options among them): a
 * valid id or an error, never a crash. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <afo/afo.h>

#include "fuzz.h"

/* The next n bytes of the input (zeros past its end). */
static void take(const uint8_t **data, size_t *size, void *out, size_t n) {
    size_t k = n < *size ? n : *size;
    memset(out, 0, n);
    memcpy(out, *data, k);
    *data += k, *size -= k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    afo_sampler_options o;
    uint8_t vocab_byte, nhist_byte;
    take(&data, &size, &o.temperature, sizeof o.temperature);
    take(&data, &size, &o.top_k, sizeof o.top_k);
    take(&data, &size, &o.top_p, sizeof o.top_p);
    take(&data, &size, &o.min_p, sizeof o.min_p);
    take(&data, &size, &o.repetition_penalty, sizeof o.repetition_penalty);
    take(&data, &size, &o.presence_penalty, sizeof o.presence_penalty);
    take(&data, &size, &o.frequency_penalty, sizeof o.frequency_penalty);
    take(&data, &size, &o.penalty_window, sizeof o.penalty_window);
    take(&data, &size, &o.seed, sizeof o.seed);
    take(&data, &size, &vocab_byte, 1);
    take(&data, &size, &nhist_byte, 1);
    const int32_t vocab = (int32_t)vocab_byte - 8; /* zero and negative vocabularies too */
    afo_sampler *s = afo_sampler_new(&o, vocab);
    if (!s) return 0;
    float *logits = malloc((size_t)(vocab > 0 ? vocab : 1) * sizeof *logits);
    int32_t *history = malloc((size_t)(nhist_byte + 1) * sizeof *history);
    if (!logits || !history) abort();
    for (int round = 0; round < 3; round++) {
        take(&data, &size, logits, (size_t)vocab * sizeof *logits);
        take(&data, &size, history, (size_t)nhist_byte * sizeof *history);
        const int32_t id = afo_sampler_sample(s, logits, history, nhist_byte);
        if (id >= vocab) abort(); /* an id outside the vocabulary is never a valid pick */
    }
    free(logits);
    free(history);
    afo_sampler_free(s);
    return 0;
}
