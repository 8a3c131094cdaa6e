/* Perplexity over fixed windows: logits from the model, NLL in double on the
 * host (the log-sum-exp of each row is summed in double so long files do not
 * drift). */
#include <math.h>

#include "afo/generate.h"
#include "core/internal.h"

static double row_nll(const float *row, int64_t vocab, int32_t target) {
    double m = -INFINITY, s = 0;
    for (int64_t v = 0; v < vocab; v++) m = row[v] > m ? row[v] : m;
    for (int64_t v = 0; v < vocab; v++) s += exp((double)row[v] - m);
    return m + log(s) - (double)row[target];
}

afo_status afo_perplexity(afo_model *m, const int32_t *ids, size_t n, int64_t ctx, int64_t batch, double *mean_nll,
                          int64_t *predictions) {
    if (!m || (n && !ids) || !mean_nll) return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: NULL argument");
    if (ctx < 2) return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: ctx %lld < 2", (long long)ctx);
    if (batch < 1) return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: batch %lld < 1", (long long)batch);
    int64_t windows = (int64_t)n / ctx, vocab = afo_model_vocab_size(m);
    if (windows == 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "perplexity: %zu tokens are fewer than one window of %lld", n,
                         (long long)ctx);
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
    int64_t preds = windows * (ctx - 1);
    *mean_nll = total / (double)preds;
    if (predictions) *predictions = preds;
    return AFO_OK;
}
