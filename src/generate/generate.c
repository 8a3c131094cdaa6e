/* The generation loop: the model and the tokenizer do the work; this file
 * sequences prefill and decode, applies the stop conditions, and keeps the
 * text stream free of partial stop strings. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "afo/generate.h"
#include "core/internal.h"
#include "generate/pick.h"
#include "models/models.h"

afo_generate_options afo_generate_defaults(void) {
    return (afo_generate_options){
        .max_tokens = 256, .sampler = afo_sampler_defaults(), .prefill_chunk = 2048, .graphs = 1};
}

const char *afo_stop_reason_name(afo_stop_reason r) {
    switch (r) {
    case AFO_STOP_LENGTH: return "length";
    case AFO_STOP_EOS: return "eos";
    case AFO_STOP_STRING: return "stop string";
    case AFO_STOP_CALLER: return "caller";
    }
    return "unknown";
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Text produced but not yet handed out: it may be the start of a stop
 * string. */
typedef struct text_gate {
    const char *const *stop;
    int num_stop;
    char *held;
    size_t len, cap;
} text_gate;

static afo_status gate_append(text_gate *g, const char *s) {
    size_t n = strlen(s);
    if (g->len + n + 1 > g->cap) {
        size_t cap = (g->len + n + 1) * 2;
        char *grown = realloc(g->held, cap);
        if (!grown) return afo_error(AFO_ERR_OUT_OF_MEMORY, "generate: out of memory for text");
        g->held = grown;
        g->cap = cap;
    }
    memcpy(g->held + g->len, s, n + 1);
    g->len += n;
    return AFO_OK;
}

/* How many held bytes can be released: all of them unless a suffix could
 * still grow into a stop string. Sets *hit when a stop string is complete
 * (then the release ends where it starts). */
static size_t gate_releasable(const text_gate *g, bool *hit) {
    *hit = false;
    size_t keep_from = g->len;
    for (int i = 0; i < g->num_stop; i++) {
        const char *found = strstr(g->held, g->stop[i]);
        if (found && (size_t)(found - g->held) <= keep_from) {
            keep_from = (size_t)(found - g->held);
            *hit = true;
        }
    }
    if (*hit) return keep_from;
    for (int i = 0; i < g->num_stop; i++) {
        size_t sl = strlen(g->stop[i]);
        for (size_t k = sl - 1; k > 0; k--) /* longest held suffix that prefixes the stop string */
            if (k <= g->len && memcmp(g->held + g->len - k, g->stop[i], k) == 0) {
                if (g->len - k < keep_from) keep_from = g->len - k;
                break;
            }
    }
    return keep_from;
}

/* Hands out the releasable prefix; leaves the rest held. */
static void gate_take(text_gate *g, size_t n, char *out) {
    memcpy(out, g->held, n);
    out[n] = '\0';
    memmove(g->held, g->held + n, g->len - n + 1);
    g->len -= n;
}

static afo_status check_options(const afo_generate_options *o, const afo_tokenizer *tok) {
    if (o->max_tokens < 0) return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: max_tokens %lld < 0", (long long)o->max_tokens);
    if (o->prefill_chunk < 1)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: prefill_chunk %lld < 1", (long long)o->prefill_chunk);
    if (o->num_stop < 0 || (o->num_stop > 0 && !o->stop))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: invalid stop strings");
    for (int i = 0; i < o->num_stop; i++)
        if (!o->stop[i] || !o->stop[i][0]) return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: stop string %d is empty", i);
    if (o->num_stop > 0 && !tok) return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: stop strings need a tokenizer");
    return AFO_OK;
}

/* Runs ids through the model in chunks, keeping the last position's logits. */
static afo_status prefill(afo_model *m, afo_kv_cache *cache, const int32_t *ids, size_t n, int64_t chunk,
                          afo_array **logits) {
    afo_forward_options fo = {.last_only = 1};
    for (size_t at = 0; at < n; at += (size_t)chunk) {
        int64_t len = (int64_t)(n - at) < chunk ? (int64_t)(n - at) : chunk;
        afo_release(*logits);
        *logits = NULL;
        AFO_TRY(afo_model_forward_ex(m, cache, ids + at, 1, len, &fo, logits));
    }
    return AFO_OK;
}

/* One decode step: the forward pass for `id` and the device side of the
 * next pick. */
static afo_status decode_step(afo_model *m, afo_kv_cache *cache, int32_t id, afo_sampler *sampler,
                              afo_array **logits) {
    afo_forward_options fo = {.last_only = 1};
    AFO_TRY(afo_model_forward_ex(m, cache, &id, 1, 1, &fo, logits));
    return afo_sampler_prepare(sampler, *logits);
}

/* Decode steps on a GPU as one recorded graph, replayed for every token:
 * the step reads its token id and position from device arrays, so nothing
 * is built on the host per token; the cache has room reserved for the run
 * (recorded again when it has to grow), and each replay rewrites the
 * logits and the sampler's pick in place. When the pick is made on the
 * device (greedy), the recording also copies it into the id the next step
 * reads (a fused step writes it there itself), so that step is queued
 * before the host has read this one's pick (as mlx-lm's generate evaluates
 * the next step asynchronously): the GPU does not wait for the host
 * between tokens. */
typedef struct replay {
    afo_recording *rec;
    afo_array *id, *position; /* int32 [1, 1] and [1], on the device */
    afo_array *logits;        /* what the recorded step computes */
    bool feeds;               /* the recorded step writes its pick into id */
    afo_pending_read picks[2]; /* of the steps queued and not yet read, oldest first */
    int queued;
} replay;

static void replay_clear(replay *r) {
    afo_release(r->id), afo_release(r->position), afo_release(r->logits);
    r->id = r->position = r->logits = NULL;
    r->feeds = false;
}

/* Positions reserved ahead when recording: a run's remaining tokens, up to
 * this many (a longer run records again when it gets there; a longer
 * reserve makes every step's attention plan for more keys). */
#define REPLAY_RESERVE 512

/* Zeros in a buffer of their own on the default device (afo_zeros alone
 * is a broadcast view of a shared scalar): what afo_array_write may fill. */
static afo_array *owned_int32(int ndim, const int64_t *shape) {
    afo_array *z = afo_zeros(AFO_INT32, ndim, shape), *a = z ? afo_contiguous(z) : NULL;
    afo_release(z);
    return a;
}

/* The next step's position, and its id unless the device feeds it (id < 0). */
static afo_status replay_inputs(replay *r, afo_kv_cache *cache, int32_t id) {
    int32_t pos = (int32_t)afo_kv_cache_length(cache);
    if (id >= 0) AFO_TRY(afo_array_write(r->id, &id, sizeof id));
    return afo_array_write(r->position, &pos, sizeof pos);
}

static afo_status replay_record(replay *r, afo_model *m, afo_kv_cache *cache, int32_t id, int64_t remaining,
                                afo_sampler *sampler) {
    replay_clear(r);
    int64_t ahead = remaining < REPLAY_RESERVE ? remaining : REPLAY_RESERVE;
    AFO_TRY(kv_reserve(cache, afo_kv_cache_length(cache) + (ahead > 1 ? ahead : 1)));
    r->id = owned_int32(2, (int64_t[]){1, 1});
    r->position = owned_int32(1, (int64_t[]){1});
    if (!r->id || !r->position) return afo_last_status();
    AFO_TRY(replay_inputs(r, cache, id));
    AFO_TRY(afo_record_begin(r->rec));
    /* a fused step writes a greedy pick into the id itself */
    afo_status st = model_forward_at(m, cache, r->id, r->position, sampler_greedy(sampler) ? r->id : NULL, &r->feeds,
                                     &r->logits);
    if (st == AFO_OK && !r->feeds) { /* the recording copies the sampler's device pick into the id */
        st = afo_sampler_prepare(sampler, r->logits);
        afo_array *pick = st == AFO_OK ? sampler_device_pick(sampler) : NULL;
        if (pick) {
            st = afo_array_assign(r->id, pick);
            r->feeds = true; /* (cleared below if the copy failed) */
        }
    }
    if (st != AFO_OK) {
        r->feeds = false;
        afo_record_cancel(r->rec);
        return st;
    }
    return afo_record_end(r->rec);
}

/* The step for `id`: replayed when the recording has room for it, recorded
 * when not; *logits gets a reference to the recorded step's logits. With a
 * feeding recording the read of its pick is started. */
static afo_status replay_step(replay *r, afo_model *m, afo_kv_cache *cache, int32_t id, int64_t remaining,
                              afo_sampler *sampler, afo_array **logits) {
    if (r->logits && afo_kv_cache_length(cache) < kv_capacity(cache)) {
        AFO_TRY(replay_inputs(r, cache, id));
        AFO_TRY(afo_record_replay(r->rec));
        kv_advance(cache, 1);
    } else { /* (the recorded forward pass advances the cache) */
        AFO_TRY(replay_record(r, m, cache, id, remaining, sampler));
    }
    *logits = afo_retain(r->logits);
    return r->feeds ? afo_array_read_start(r->id, &r->picks[r->queued++]) : AFO_OK;
}

/* With a feeding recording, queues the step after the queued one (its id
 * the queued step's pick, on the device) when the cache has room for it. */
static afo_status replay_ahead(replay *r, afo_kv_cache *cache) {
    if (!r->feeds || r->queued != 1 || afo_kv_cache_length(cache) >= kv_capacity(cache)) return AFO_OK;
    AFO_TRY(replay_inputs(r, cache, -1));
    AFO_TRY(afo_record_replay(r->rec));
    kv_advance(cache, 1);
    return afo_array_read_start(r->id, &r->picks[r->queued++]);
}

/* The oldest queued step's pick (waiting for that step only). */
static afo_status replay_take(replay *r, int32_t *id) {
    afo_status st = afo_array_read_finish(&r->picks[0], id);
    r->picks[0] = r->picks[1];
    r->queued--;
    return st;
}

/* Steps queued past the last token taken wrote positions the run does not
 * keep: their picks are waited for and the cache forgets them. */
static afo_status replay_drop_queued(replay *r, afo_kv_cache *cache) {
    afo_status st = AFO_OK;
    int dropped = r->queued;
    for (int32_t unused; r->queued > 0;) {
        afo_status s = replay_take(r, &unused);
        if (st == AFO_OK) st = s;
    }
    if (dropped > 0 && st == AFO_OK) st = afo_kv_cache_truncate(cache, afo_kv_cache_length(cache) - dropped);
    return st;
}

typedef struct loop_state {
    afo_sampler *sampler;
    replay replay;          /* with a recording when GPU decode steps replay one graph */
    int64_t step_fallbacks; /* ops of the first decode step that ran on the CPU instead */
    afo_detokenizer *detok;
    text_gate gate;
    int32_t *history;
    size_t nhistory, cap;
    char *piece_out;
} loop_state;

static void loop_free(loop_state *s) {
    afo_sampler_free(s->sampler);
    replay_clear(&s->replay);
    afo_recording_free(s->replay.rec);
    afo_detokenizer_free(s->detok);
    free(s->gate.held);
    free(s->history);
    free(s->piece_out);
}

/* The text a new id adds, after the stop-string gate; *stop when a stop
 * string completed. */
static afo_status next_text(loop_state *s, int32_t id, bool last, bool *stop, const char **text) {
    char *piece = NULL;
    AFO_TRY(afo_detokenizer_push(s->detok, id, &piece));
    afo_status st = gate_append(&s->gate, piece);
    free(piece);
    if (st == AFO_OK && last) { /* nothing more will come: release what is held */
        char *rest = NULL;
        st = afo_detokenizer_flush(s->detok, &rest);
        if (st == AFO_OK) st = gate_append(&s->gate, rest);
        free(rest);
    }
    AFO_TRY(st);
    size_t n = gate_releasable(&s->gate, stop);
    if (last && !*stop) n = s->gate.len; /* nothing follows: a partial stop string is plain text */
    char *grown = realloc(s->piece_out, n + 1);
    if (!grown) return afo_error(AFO_ERR_OUT_OF_MEMORY, "generate: out of memory for text");
    s->piece_out = grown;
    gate_take(&s->gate, n, s->piece_out);
    *text = s->piece_out;
    return AFO_OK;
}

afo_status afo_generate(afo_model *m, afo_kv_cache *cache, afo_tokenizer *tok, const int32_t *prompt, size_t n,
                        const afo_generate_options *opts, afo_generate_callback cb, void *userdata,
                        afo_generate_stats *stats) {
    afo_generate_options o = opts ? *opts : afo_generate_defaults();
    if (!m || !cache || (n > 0 && !prompt)) return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: NULL argument");
    if (n == 0 && afo_kv_cache_length(cache) == 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: empty prompt and empty cache: nothing to continue");
    if (n == 0) return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: the prompt needs at least one id");
    AFO_TRY(check_options(&o, tok));
    int64_t vocab = afo_model_vocab_size(m);
    for (size_t i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= vocab)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "generate: prompt id %d at %zu outside the vocabulary of %lld",
                             (int)prompt[i], i, (long long)vocab);
    afo_generate_stats local = {0};
    afo_generate_stats *st = stats ? stats : &local;
    *st = (afo_generate_stats){.prompt_tokens = (int64_t)n};
    loop_state s = {.gate = {.stop = o.stop, .num_stop = o.num_stop}};
    afo_status rc = AFO_OK;
    s.sampler = afo_sampler_new(&o.sampler, (int32_t)vocab);
    if (o.graphs && afo_get_default_device() != AFO_CPU)
        s.replay.rec = afo_recording_new(afo_get_default_device());
    s.cap = n + (size_t)o.max_tokens + 1;
    s.history = malloc(sizeof(int32_t) * s.cap);
    if (!s.sampler || !s.history || (tok && !(s.detok = afo_detokenizer_new(tok, 1)))) {
        loop_free(&s);
        return s.sampler ? afo_error(AFO_ERR_OUT_OF_MEMORY, "generate: out of memory") : AFO_ERR_INVALID_ARGUMENT;
    }
    memcpy(s.history, prompt, sizeof(int32_t) * n);
    s.nhistory = n;

    afo_device device = afo_get_default_device();
    afo_reset_device_peak_memory(device);
    double t0 = now();
    afo_array *logits = NULL;
    /* room for the prompt and the first tokens at once: a cache grown chunk
     * by chunk copies itself each time */
    int64_t ahead = o.max_tokens < REPLAY_RESERVE ? o.max_tokens : REPLAY_RESERVE;
    rc = kv_reserve(cache, afo_kv_cache_length(cache) + (int64_t)n + ahead);
    if (rc == AFO_OK) rc = prefill(m, cache, prompt, n, o.prefill_chunk, &logits);
    /* the forward pass evaluated the logits, but a GPU runs that work
     * asynchronously: wait for it to count its time */
    if (rc == AFO_OK) rc = afo_synchronize(afo_array_device(logits));
    st->prompt_seconds = now() - t0;
    double t_first = 0;
    for (int64_t step = 0; rc == AFO_OK && step < o.max_tokens; step++) {
        int32_t id = -1;
        if (s.replay.queued > 0) rc = replay_take(&s.replay, &id);
        else id = afo_sampler_sample_array(s.sampler, logits, s.history, s.nhistory);
        if (rc != AFO_OK) break;
        if (id < 0) {
            rc = afo_last_status() != AFO_OK ? afo_last_status() : AFO_ERR_INTERNAL;
            break;
        }
        if (step == 0) {
            t_first = now();
            st->time_to_first_token = t_first - t0;
        }
        st->generated_tokens++;
        s.history[s.nhistory++] = id;
        bool eos = !o.ignore_eos && afo_model_is_eos(m, id);
        bool last = eos || step + 1 == o.max_tokens, stop = false;
        const char *text = NULL;
        if (s.detok && (rc = next_text(&s, id, last, &stop, &text)) != AFO_OK) break;
        if (stop) st->stop_reason = AFO_STOP_STRING;
        else if (eos) st->stop_reason = AFO_STOP_EOS;
        if (cb && cb(id, text, userdata) && !stop && !eos) {
            st->stop_reason = AFO_STOP_CALLER;
            break;
        }
        if (stop || eos || last) break;
        afo_release(logits);
        logits = NULL;
        /* The first step runs plainly: it makes what is created lazily (GEMM
         * workspaces, weights' device copies) and shows whether every op of
         * a step has a kernel on the device; one falling back to the CPU
         * would read device data, which a recording cannot. A step that
         * cannot be recorded (MoE routing, a quantized or rotating cache)
         * runs plainly from then on. */
        int64_t fallbacks = afo_cpu_fallback_count();
        if (s.replay.rec && step > 0 && s.step_fallbacks == 0) {
            /* (a step for this id is already queued when the device fed it) */
            rc = s.replay.queued > 0 ? AFO_OK
                                     : replay_step(&s.replay, m, cache, id, o.max_tokens - step, s.sampler, &logits);
            if (rc == AFO_ERR_UNSUPPORTED) {
                replay_clear(&s.replay);
                afo_recording_free(s.replay.rec);
                s.replay.rec = NULL;
                rc = decode_step(m, cache, id, s.sampler, &logits);
            } else if (rc == AFO_OK && step + 2 < o.max_tokens) { /* the run takes a token after the next */
                rc = replay_ahead(&s.replay, cache);
            }
        } else {
            rc = decode_step(m, cache, id, s.sampler, &logits);
        }
        if (step == 0) s.step_fallbacks = afo_cpu_fallback_count() - fallbacks;
    }
    if (st->generated_tokens > 0) st->generate_seconds = now() - t_first;
    afo_status dropped = replay_drop_queued(&s.replay, cache);
    if (rc == AFO_OK) rc = dropped;
    afo_memory_stats mem;
    afo_get_memory_stats(device, &mem);
    st->peak_memory = mem.peak;
    afo_release(logits);
    loop_free(&s);
    return rc;
}
