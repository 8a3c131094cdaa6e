/* Sparse mixture of experts (Qwen3-MoE): a router picks the top-k experts of
 * each token by softmax probability (renormalised over the k when
 * norm_topk_prob), and each expert runs only on the tokens routed to it.
 * The routing is data-dependent, so it is evaluated here and the tokens are
 * grouped per expert on the host; the expert MLPs stay array ops. */
#include <stdlib.h>

#include "core/compose.h"
#include "models/models.h"

typedef struct routing {
    float *weight;  /* [T][k] */
    int32_t *index; /* [T][k] */
} routing;

static afo_status route(const afo_model *m, const layer_weights *w, afo_array *x, routing *r) {
    const model_config *c = &m->cfg;
    int k = (int)c->experts_per_tok, last = -1;
    afo_array *logits = ow_astype(linear(x, &w->router, NULL), AFO_FLOAT32);
    afo_array *probs = logits ? afo_softmax(logits, -1) : NULL;
    afo_release(logits);
    afo_array *top = probs ? afo_topk(probs, k, -1) : NULL, *idx = probs ? afo_argtopk(probs, k, -1) : NULL;
    afo_release(probs);
    if (c->norm_topk_prob && top) top = ow_div(top, ow_sum(R(top), &last, 1, 1));
    afo_array *both[2] = {top, idx};
    size_t n = top ? (size_t)afo_array_size(top) : 0;
    r->weight = malloc(sizeof(float) * (n ? n : 1));
    r->index = malloc(sizeof(int32_t) * (n ? n : 1));
    afo_status st = !top || !idx ? afo_last_status()
                    : !r->weight || !r->index ? afo_error(AFO_ERR_OUT_OF_MEMORY, "moe: out of memory routing")
                                              : afo_eval(both, 2);
    if (st == AFO_OK) st = afo_array_read(top, AFO_FLOAT32, r->weight, sizeof(float) * n);
    if (st == AFO_OK) st = afo_array_read(idx, AFO_INT32, r->index, sizeof(int32_t) * n);
    afo_release(top);
    afo_release(idx);
    return st;
}

/* One expert on its tokens: rows[] of x, scaled by their routing weights. */
static afo_array *run_expert(const afo_model *m, const linear_weight *ew, afo_array *x, const int32_t *rows,
                             const float *weights, int64_t count, afo_array **index) {
    int64_t col[2] = {count, 1};
    afo_array *wt = afo_array_from_data(weights, AFO_FLOAT32, 2, col);
    *index = afo_array_from_data(rows, AFO_INT32, 2, col);
    afo_array *flat = *index ? afo_reshape(*index, 1, &count) : NULL;
    afo_array *xe = flat ? afo_take(x, flat, 0) : NULL;
    afo_release(flat);
    afo_array *y = xe ? gated_mlp(&m->cfg, xe, &ew[0], &ew[1], &ew[2], NULL, NULL, NULL) : NULL;
    afo_release(xe);
    return ow_mul(y, ow_astype(wt, afo_array_dtype(x)));
}

afo_array *moe_forward(const afo_model *m, const layer_weights *w, afo_array *x) {
    const model_config *c = &m->cfg;
    int64_t T = afo_array_dim(x, 0), k = c->experts_per_tok, E = c->num_experts;
    routing r = {0};
    afo_array *out = NULL, **parts = calloc((size_t)(2 * E), sizeof *parts);
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)(T * k));
    float *weights = malloc(sizeof(float) * (size_t)(T * k));
    int np = 0;
    afo_array *y = NULL, *idx = NULL, *zeros = NULL;
    if (!parts || !rows || !weights) {
        afo_error(AFO_ERR_OUT_OF_MEMORY, "moe: out of memory");
        goto done;
    }
    if (route(m, w, x, &r) != AFO_OK) goto done;
    for (int64_t e = 0; e < E; e++) {
        int64_t count = 0;
        for (int64_t i = 0; i < T * k; i++)
            if (r.index[i] == e) rows[count] = (int32_t)(i / k), weights[count++] = r.weight[i];
        if (!count) continue;
        parts[np] = run_expert(m, &w->experts[3 * e], x, rows, weights, count, &parts[E + np]);
        if (!parts[np++] || !parts[E + np - 1]) goto done;
    }
    y = afo_concatenate(parts, np, 0);
    idx = afo_concatenate(parts + E, np, 0);
    zeros = afo_zeros(afo_array_dtype(x), 2, afo_array_shape(x));
    out = y && idx && zeros ? afo_scatter_add(zeros, idx, y, 0) : NULL;
done:
    afo_release(y);
    afo_release(idx);
    afo_release(zeros);
    for (int i = 0; parts && i < np; i++) afo_release(parts[i]), afo_release(parts[E + i]);
    free(parts);
    free(rows);
    free(weights);
    free(r.weight);
    free(r.index);
    return out;
}
