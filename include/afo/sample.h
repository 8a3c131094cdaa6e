/* afo — token sampling from a row of logits. */
#ifndef AFO_SAMPLE_H
#define AFO_SAMPLE_H

#include "afo/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Applied in transformers' order: repetition penalty, presence/frequency
 * penalties, temperature, top-k, top-p, min-p, then a draw. temperature 0
 * means greedy (argmax; ties to the lowest id). Zero/neutral values disable
 * a stage: top_k 0, top_p 1, min_p 0, penalties 1 / 0. */
typedef struct afo_sampler_options {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    float repetition_penalty; /* logit/p if > 0 else logit*p, for ids seen */
    float presence_penalty;   /* minus this once for every id seen */
    float frequency_penalty;  /* minus this times the id's count */
    int penalty_window;       /* how many recent ids the penalties see; 0 = all */
    uint64_t seed;
} afo_sampler_options;

/* Defaults: greedy, no filters, no penalties, seed 0. */
afo_sampler_options afo_sampler_defaults(void);

typedef struct afo_sampler afo_sampler;
/* Validates the options (error names the option) and allocates the work
 * buffers for a vocabulary of `vocab` ids once. */
afo_sampler *afo_sampler_new(const afo_sampler_options *opts, int32_t vocab);
void afo_sampler_free(afo_sampler *s);
/* Picks the next id from logits[vocab] given the ids so far (history). The
 * logits are not modified. Returns -1 with an error on invalid input. */
int32_t afo_sampler_sample(afo_sampler *s, const float *logits, const int32_t *history, size_t nhistory);
/* Same from an array of `vocab` logits of any float dtype, on any device:
 * greedy picks on a GPU run there and read back only the id. */
typedef struct afo_array afo_array;
int32_t afo_sampler_sample_array(afo_sampler *s, afo_array *logits, const int32_t *history, size_t nhistory);
/* Evaluates the logits and starts the device-side part of the next pick
 * without reading anything back (so it can sit inside a recording, see
 * afo/device.h); afo_sampler_sample_array on the same logits finishes it. */
afo_status afo_sampler_prepare(afo_sampler *s, afo_array *logits);

#ifdef __cplusplus
}
#endif
#endif
