/* Perplexity over fixed windows: logits from the model, NLL in double on the
 * host (the log-sum-exp of each row is summed in double so long files do not
 * drift). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "afo/generate.h"
#include "core/internal.h"

static double row_nll(const float *row, int64_t vocab, int32_t target) {
    double m = -INFINITY, s = 0;
    for (int64_t v = 0; v < vocab; v++) m = row[v] > m ? row[v] : m;
    for (int64_t v = 0; v < vocab; v++) s += exp((double)row[v] - m);
    return m + log(s) - (double)row[target];
}

static afo_status check_args(afo_model *m, const int32_t *ids, size_t n, int64_t ctx, int64_t batch,
                             double *mean_nll, int64_t *windows) {
    if (!m || (n && !ids) || !mean_nll) return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: NULL argument");
    if (ctx < 2) return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: ctx %lld < 2", (long long)ctx);
    if (batch < 1) return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: batch %lld < 1", (long long)batch);
    *windows = (int64_t)n / ctx;
    if (*windows == 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: %zu tokens are fewer than one window of %lld", n,
                         (long long)ctx);
    return AFO_OK;
}

static void finish(double total, int64_t windows, int64_t ctx, double *mean_nll, int64_t *predictions) {
    int64_t preds = windows * (ctx - 1);
    *mean_nll = total / (double)preds;
    if (predictions) *predictions = preds;
}

afo_status afo_perplexity(afo_model *m, const int32_t *ids, size_t n, int64_t ctx, int64_t batch, double *mean_nll,
                          int64_t *predictions) {
    int64_t windows, vocab = m ? afo_model_vocab_size(m) : 0;
    AFO_TRY(check_args(m, ids, n, ctx, batch, mean_nll, &windows));
    double total = 0;
    for (int64_t w = 0; w < windows; w += batch) {
        int64_t b = windows - w < batch ? windows - w : batch;
        const int32_t *win = ids + w * ctx;
        afo_array *logits = NULL;
        AFO_TRY(afo_model_forward(m, NULL, win, b, ctx, &logits));
        const float *l = afo_array_data(logits);
        for (int64_t r = 0; r < b; r++)
            for (int64_t t = 0; t + 1 < ctx; t++)
                total += row_nll(l + (r * ctx + t) * vocab, vocab, win[r * ctx + t + 1]);
        afo_release(logits);
    }
    finish(total, windows, ctx, mean_nll, predictions);
    return AFO_OK;
}

/* Feeds positions 0..ctx-2 of b windows through the cache in chunks and
 * adds the NLL of each next token to *total. rows: b * chunk scratch ids. */
static afo_status cached_windows(afo_model *m, afo_kv_cache *cache, const int32_t *win, int64_t b, int64_t ctx,
                                 int64_t chunk, int32_t *rows, double *total) {
    int64_t vocab = afo_model_vocab_size(m);
    afo_kv_cache_reset(cache);
    for (int64_t t = 0; t + 1 < ctx; t += chunk) {
        int64_t len = ctx - 1 - t < chunk ? ctx - 1 - t : chunk;
        for (int64_t r = 0; r < b; r++) memcpy(rows + r * len, win + r * ctx + t, sizeof(int32_t) * (size_t)len);
        afo_array *logits = NULL;
        AFO_TRY(afo_model_forward(m, cache, rows, b, len, &logits));
        const float *l = afo_array_data(logits);
        for (int64_t r = 0; r < b; r++)
            for (int64_t i = 0; i < len; i++)
                *total += row_nll(l + (r * len + i) * vocab, vocab, win[r * ctx + t + i + 1]);
        afo_release(logits);
    }
    return AFO_OK;
}

afo_status afo_perplexity_cached(afo_model *m, const int32_t *ids, size_t n, int64_t ctx, int64_t batch, int64_t chunk,
                                 const afo_kv_cache_options *kv, double *mean_nll, int64_t *predictions) {
    int64_t windows;
    AFO_TRY(check_args(m, ids, n, ctx, batch, mean_nll, &windows));
    if (chunk < 1) return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: chunk %lld < 1", (long long)chunk);
    if (batch > windows) batch = windows;
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)(batch * chunk));
    if (!rows) return afo_error(AFO_ERR_OUT_OF_MEMORY, "perplexity: out of memory");
    afo_kv_cache *cache = NULL;
    afo_status st = afo_kv_cache_create_ex(m, batch, kv, &cache);
    double total = 0;
    for (int64_t w = 0; st == AFO_OK && w < windows; w += batch) {
        int64_t b = windows - w < batch ? windows - w : batch;
        if (b != afo_kv_cache_batch(cache)) { /* the last, smaller group */
            afo_kv_cache_free(cache);
            cache = NULL;
            st = afo_kv_cache_create_ex(m, b, kv, &cache);
        }
        if (st == AFO_OK) st = cached_windows(m, cache, ids + w * ctx, b, ctx, chunk, rows, &total);
    }
    afo_kv_cache_free(cache);
    free(rows);
    if (st == AFO_OK) finish(total, windows, ctx, mean_nll, predictions);
    return st;
}
