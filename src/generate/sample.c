/* Token sampling on the host: one row of logits per step, buffers allocated
 * once per sampler so the per-token path does not allocate. */
#include <math.h>
#include <stdlib.h>

#include "core/internal.h"
#include "afo/sample.h"
#include "generate/pick.h"

struct afo_sampler {
    afo_sampler_options o;
    int32_t vocab;
    float *work;      /* adjusted logits */
    float *row;       /* logits read back from an array */
    afo_array *pick;   /* a pick made on a device (kept: a replayed step writes it again) */
    uint64_t pick_for; /* the id of the logits array it is for; 0: none */
    struct candidate { float logit; int32_t id; } *cand; /* sorted when filtering */
    int32_t *counts;  /* occurrences of each id in the penalty window */
    uint64_t state;   /* splitmix64: the draw sequence depends only on the seed */
};

afo_sampler_options afo_sampler_defaults(void) {
    return (afo_sampler_options){.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0, .repetition_penalty = 1};
}

afo_sampler *afo_sampler_new(const afo_sampler_options *o, int32_t vocab) {
    if (!o) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "sampler: options are NULL");
    if (vocab < 1) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "sampler: vocabulary size %d", (int)vocab);
    if (!(o->temperature >= 0) || !isfinite(o->temperature))
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "sampler: temperature %g must be >= 0", o->temperature);
    if (o->top_k < 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "sampler: top_k %d must be >= 0", o->top_k);
    if (!(o->top_p > 0 && o->top_p <= 1))
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "sampler: top_p %g must be in (0, 1]", o->top_p);
    if (!(o->min_p >= 0 && o->min_p <= 1))
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "sampler: min_p %g must be in [0, 1]", o->min_p);
    if (!(o->repetition_penalty > 0) || !isfinite(o->repetition_penalty))
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "sampler: repetition_penalty %g must be > 0",
                              o->repetition_penalty);
    if (!isfinite(o->presence_penalty) || !isfinite(o->frequency_penalty) || o->penalty_window < 0)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "sampler: penalties must be finite and the window >= 0");
    afo_sampler *s = calloc(1, sizeof *s);
    if (!s) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "sampler: out of memory");
    s->o = *o;
    s->vocab = vocab;
    s->state = o->seed;
    s->work = malloc(sizeof(float) * (size_t)vocab);
    s->row = malloc(sizeof(float) * (size_t)vocab);
    s->cand = malloc(sizeof *s->cand * (size_t)vocab);
    s->counts = calloc((size_t)vocab, sizeof(int32_t));
    if (!s->work || !s->row || !s->cand || !s->counts) {
        afo_sampler_free(s);
        return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "sampler: out of memory for %d ids", (int)vocab);
    }
    return s;
}

void afo_sampler_free(afo_sampler *s) {
    if (!s) return;
    afo_release(s->pick);
    free(s->work);
    free(s->row);
    free(s->cand);
    free(s->counts);
    free(s);
}

static double next_uniform(afo_sampler *s) {
    uint64_t z = (s->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static bool penalises(const afo_sampler_options *o) {
    return o->repetition_penalty != 1 || o->presence_penalty != 0 || o->frequency_penalty != 0;
}

static void apply_penalties(afo_sampler *s, const int32_t *hist, size_t n) {
    const afo_sampler_options *o = &s->o;
    if (!penalises(o)) return;
    bool rep = o->repetition_penalty != 1;
    size_t from = o->penalty_window && n > (size_t)o->penalty_window ? n - (size_t)o->penalty_window : 0;
    for (size_t i = from; i < n; i++) s->counts[hist[i]]++;
    for (size_t i = from; i < n; i++) {
        int32_t id = hist[i];
        if (s->counts[id] == 0) continue; /* already applied */
        float *l = &s->work[id];
        if (rep) *l = *l > 0 ? *l / o->repetition_penalty : *l * o->repetition_penalty;
        *l -= o->presence_penalty + o->frequency_penalty * (float)s->counts[id];
        s->counts[id] = 0;
    }
}

/* Descending by logit, ties by id: a total order, so results are stable. */
static int by_logit_desc(const void *a, const void *b) {
    const struct candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Candidates within a factor 1e-12 of the most likely id, sorted: the ids
 * left out carry under vocab * 1e-12 of the mass, below float precision,
 * and sorting only the rest keeps a 128k vocabulary cheap. */
static int32_t candidates(afo_sampler *s, float top) {
    float floor = top + s->o.temperature * logf(1e-12f);
    int32_t n = 0;
    for (int32_t i = 0; i < s->vocab; i++)
        if (s->work[i] >= floor) s->cand[n++] = (struct candidate){s->work[i], i};
    qsort(s->cand, (size_t)n, sizeof *s->cand, by_logit_desc);
    return n;
}

int32_t afo_sampler_sample(afo_sampler *s, const float *logits, const int32_t *history, size_t nhistory) {
    if (!s || !logits || (nhistory && !history)) {
        afo_error(AFO_ERR_INVALID_ARGUMENT, "sampler: NULL argument");
        return -1;
    }
    for (size_t i = 0; i < nhistory; i++)
        if (history[i] < 0 || history[i] >= s->vocab) {
            afo_error(AFO_ERR_INVALID_ARGUMENT, "sampler: history id %d outside the vocabulary of %d", (int)history[i],
                      (int)s->vocab);
            return -1;
        }
    for (int32_t i = 0; i < s->vocab; i++) s->work[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    apply_penalties(s, history, nhistory);
    int32_t best = 0;
    for (int32_t i = 1; i < s->vocab; i++)
        if (s->work[i] > s->work[best]) best = i;
    if (s->o.temperature == 0) return best;
    float top = s->work[best];
    if (!isfinite(top)) {
        afo_error(AFO_ERR_INVALID_ARGUMENT, "sampler: no finite logit to sample from");
        return -1;
    }
    const double inv_t = 1.0 / s->o.temperature;
    bool filtered = (s->o.top_k > 0 && s->o.top_k < s->vocab) || s->o.top_p < 1 || s->o.min_p > 0;
    if (!filtered) { /* plain categorical: one pass in id order, no sort */
        double total = 0;
        for (int32_t i = 0; i < s->vocab; i++) total += exp((s->work[i] - top) * inv_t);
        double u = next_uniform(s) * total, acc = 0;
        for (int32_t i = 0; i < s->vocab; i++) {
            acc += exp((s->work[i] - top) * inv_t);
            if (u < acc) return i;
        }
        return best;
    }
    int32_t n = candidates(s, top);
    if (s->o.top_k > 0 && s->o.top_k < n) n = s->o.top_k;
    double total = 0;
    for (int32_t i = 0; i < n; i++) total += exp((s->cand[i].logit - top) * inv_t);
    /* top-p: the shortest prefix whose mass reaches p; min-p: drop ids below
     * min_p times the most likely one (whose probability is 1/total) */
    double mass = 0;
    int32_t keep = 0;
    for (; keep < n; keep++) {
        double p = exp((s->cand[keep].logit - top) * inv_t) / total;
        if (keep > 0 && (mass >= s->o.top_p || p < s->o.min_p / total)) break;
        mass += p;
    }
    double u = next_uniform(s) * mass, acc = 0;
    for (int32_t i = 0; i < keep; i++) {
        acc += exp((s->cand[i].logit - top) * inv_t) / total;
        if (u < acc) return s->cand[i].id;
    }
    return s->cand[keep - 1].id;
}

bool sampler_greedy(const afo_sampler *s) { return s && s->o.temperature == 0 && !penalises(&s->o); }

static bool picks_on_device(const afo_sampler *s, const afo_array *logits) {
    return sampler_greedy(s) && afo_array_device(logits) != AFO_CPU;
}

/* Greedy picks on an accelerator take the argmax there, so one id crosses to
 * the host instead of the whole row. */
afo_status afo_sampler_prepare(afo_sampler *s, afo_array *logits) {
    if (!s || !logits) return afo_error(AFO_ERR_INVALID_ARGUMENT, "sampler: NULL argument");
    if (afo_array_size(logits) != s->vocab)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "sampler: %lld logits for a vocabulary of %d",
                         (long long)afo_array_size(logits), (int)s->vocab);
    AFO_TRY(afo_eval1(logits));
    afo_release(s->pick);
    s->pick = NULL;
    s->pick_for = 0;
    if (!picks_on_device(s, logits)) return AFO_OK;
    afo_device before = afo_get_default_device();
    afo_set_default_device(afo_array_device(logits));
    afo_array *flat = afo_reshape(logits, 1, (int64_t[]){s->vocab});
    s->pick = flat ? afo_argmax(flat, 0, 0) : NULL;
    afo_set_default_device(before);
    afo_release(flat);
    afo_status st = s->pick ? afo_eval1(s->pick) : afo_last_status();
    if (st == AFO_OK) s->pick_for = logits->id;
    return st;
}

afo_array *sampler_device_pick(const afo_sampler *s) { return s ? s->pick : NULL; }

int32_t afo_sampler_sample_array(afo_sampler *s, afo_array *logits, const int32_t *history, size_t nhistory) {
    if ((!s || !logits || s->pick_for != logits->id) && afo_sampler_prepare(s, logits) != AFO_OK) return -1;
    if (s->pick) {
        int32_t id = -1;
        return afo_array_read(s->pick, AFO_INT32, &id, sizeof id) == AFO_OK ? id : -1;
    }
    if (afo_array_read(logits, AFO_FLOAT32, s->row, sizeof(float) * (size_t)s->vocab) != AFO_OK) return -1;
    return afo_sampler_sample(s, s->row, history, nhistory);
}
