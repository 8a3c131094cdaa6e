/* afo — text generation: chunked prefill, KV-cached decoding, sampling,
 * stop conditions and streaming text. */
#ifndef AFO_GENERATE_H
#define AFO_GENERATE_H

#include "afo/model.h"
#include "afo/sample.h"
#include "afo/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct afo_generate_options {
    int64_t max_tokens;            /* new tokens at most (default 256) */
    afo_sampler_options sampler;   /* default greedy */
    const char *const *stop;       /* stop strings: generation ends before the first one */
    int num_stop;
    int ignore_eos;                /* keep going past the model's eos ids */
    int64_t prefill_chunk;         /* prompt tokens per forward pass (default 2048, as mlx-lm) */
    int graphs;                    /* 1 (default): on a GPU, decode steps replay one recorded CUDA graph
                                      (afo_recording); 0: each step is built and launched op by op */
} afo_generate_options;
afo_generate_options afo_generate_defaults(void);

typedef enum afo_stop_reason { AFO_STOP_LENGTH = 0, AFO_STOP_EOS, AFO_STOP_STRING, AFO_STOP_CALLER } afo_stop_reason;
const char *afo_stop_reason_name(afo_stop_reason r);

typedef struct afo_generate_stats {
    int64_t prompt_tokens, generated_tokens;
    double prompt_seconds;      /* the prefill */
    double generate_seconds;    /* from the first sampled token to the last */
    double time_to_first_token; /* from the call to the first sampled token */
    size_t peak_memory;         /* peak active memory of the default device during the call */
    afo_stop_reason stop_reason;
} afo_generate_stats;

/* Called once per generated token with the text it completes (possibly "",
 * held back while it might begin a stop string or split a UTF-8 character;
 * NULL when no tokenizer was given). A non-zero return stops generation. */
typedef int (*afo_generate_callback)(int32_t id, const char *text, void *userdata);

/* Feeds `prompt` (n ids) to the model after what `cache` already holds,
 * then samples up to max_tokens ids, each fed back through the cache. The
 * cache ends holding everything fed (the last sampled id is not fed). tok
 * may be NULL (ids only; stop strings then need a tokenizer and are an
 * error). stats may be NULL. */
afo_status afo_generate(afo_model *m, afo_kv_cache *cache, afo_tokenizer *tok, const int32_t *prompt, size_t n,
                        const afo_generate_options *opts, afo_generate_callback cb, void *userdata,
                        afo_generate_stats *stats);

/* Mean next-token negative log-likelihood of ids over non-overlapping
 * windows of `ctx` tokens from the start (the remainder is dropped): each
 * window predicts its tokens 1..ctx-1 from the ones before, independently
 * of the other windows. `batch` windows go through one forward pass.
 * Perplexity is exp(*mean_nll). */
afo_status afo_perplexity(afo_model *m, const int32_t *ids, size_t n, int64_t ctx, int64_t batch, double *mean_nll,
                          int64_t *predictions);

/* The same predictions, each window fed through a KV cache made with kv
 * (NULL: the defaults), `chunk` tokens per forward pass (1: every
 * prediction is a decoding step), `batch` windows at once: what a
 * quantized or rotating cache does to the model's predictions. */
afo_status afo_perplexity_cached(afo_model *m, const int32_t *ids, size_t n, int64_t ctx, int64_t batch, int64_t chunk,
                                 const afo_kv_cache_options *kv, double *mean_nll, int64_t *predictions);

#ifdef __cplusplus
}
#endif
#endif
