/* The forward pass every supported architecture shares: embeddings, N
 * pre-norm decoder blocks (attention with RoPE and a KV cache, then a gated
 * MLP or experts), final norm, vocabulary projection. The architecture
 * flags and the weights present select the variations. Everything is built
 * with array ops and evaluated once at the end (MoE layers evaluate their
 * routing on the way). Helpers named ow_* take over their array arguments. */
#include <math.h>
#include <stdlib.h>

#include "afo/quant.h"
#include "core/compose.h"
#include "models/models.h"

static afo_array *ow_slice_axis(afo_array *a, int axis, int64_t start, int64_t stop) {
    afo_array *r = a ? afo_slice_axis(a, axis, start, stop) : NULL;
    afo_release(a);
    return r;
}

static afo_array *ow_rms_norm(afo_array *x, afo_array *w, double eps) {
    afo_array *r = x ? afo_rms_norm(x, w, (float)eps) : NULL;
    afo_release(x);
    return r;
}

afo_array *linear(afo_array *x, const linear_weight *w, afo_array *bias) {
    afo_array *y = w->scales ? afo_quantized_matmul(x, w->w, w->scales, w->biases, 1, w->group_size, w->bits)
                             : ow_matmul(R(x), afo_transpose(w->w, NULL));
    return bias ? ow_add(y, R(bias)) : y;
}

static afo_array *ow_activation(activation act, afo_array *x) {
    return ow_unary(act == ACT_SILU ? afo_silu : act == ACT_GELU ? afo_gelu : afo_gelu_tanh, x);
}

/* act(gate) * up, projected down. */
static afo_array *ow_mlp_tail(const model_config *c, afo_array *gate, afo_array *up, const linear_weight *down,
                              afo_array *down_bias) {
    afo_array *a = c->act == ACT_SILU ? ow_binary(afo_swiglu, gate, up) : ow_mul(ow_activation(c->act, gate), up);
    afo_array *y = a ? linear(a, down, down_bias) : NULL;
    afo_release(a);
    return y;
}

afo_array *gated_mlp(const model_config *c, afo_array *x, const linear_weight *gate, const linear_weight *up,
                     const linear_weight *down, afo_array *gate_bias, afo_array *up_bias, afo_array *down_bias) {
    return ow_mlp_tail(c, linear(x, gate, gate_bias), linear(x, up, up_bias), down, down_bias);
}

/* Whether to apply stacked projections (model_stack_projections) to x: at
 * decode sizes, where one product beats three launches; a prompt's
 * products are compute-bound, and slicing their stacked outputs costs
 * copies. Projections stored fused (phi3) have no parts to fall back on. */
#define STACKED_MAX_ROWS 8
static bool use_stacked(const linear_weight *fused, bool stacked, afo_array *x) {
    int64_t rows = afo_array_size(x) / afo_array_dim(x, -1);
    return fused->w && (!stacked || rows <= STACKED_MAX_ROWS);
}

/* The parts' products at once, as their stacked form would give them
 * (afo_quantized_matmul_parts): on the CPU, at decode sizes, for quantized
 * parts of one format without biases, whose activations the kernel then
 * quantizes once for all (NULL where that does not apply). A GPU stacks
 * the parts instead (model_stack_projections). */
static afo_array *quantized_parts(afo_array *x, const linear_weight *p, int n, bool biased) {
    int64_t rows = afo_array_size(x) / afo_array_dim(x, -1);
    if (biased || !p[0].scales || rows > STACKED_MAX_ROWS || afo_get_default_device() != AFO_CPU ||
        !linear_fusable(p, n))
        return NULL;
    afo_array *w[AFO_QMM_MAX_PARTS], *s[AFO_QMM_MAX_PARTS], *b[AFO_QMM_MAX_PARTS];
    for (int i = 0; i < n; i++) w[i] = p[i].w, s[i] = p[i].scales, b[i] = p[i].biases;
    return afo_quantized_matmul_parts(x, n, w, s, b, p[0].group_size, p[0].bits);
}

static afo_array *mlp(const afo_model *m, const layer_weights *w, afo_array *x) {
    const model_config *c = &m->cfg;
    if (w->router.w) {
        int64_t flat[2] = {-1, c->hidden};
        afo_array *x2 = afo_reshape(x, 2, flat), *y = x2 ? moe_forward(m, w, x2) : NULL;
        afo_release(x2);
        return y ? ow_reshape(y, afo_array_ndim(x), afo_array_shape(x)) : NULL;
    }
    afo_array *gu = use_stacked(&w->gate_up, w->stacked_gate_up, x) ? linear(x, &w->gate_up, NULL)
                    : quantized_parts(x, (linear_weight[]){w->gate, w->up}, 2, w->gate_bias || w->up_bias);
    if (gu) {
        afo_array *g = afo_slice_axis(gu, -1, 0, c->intermediate);
        afo_array *u = afo_slice_axis(gu, -1, c->intermediate, 2 * c->intermediate);
        afo_release(gu);
        return ow_mlp_tail(c, g, u, &w->down, NULL);
    }
    return gated_mlp(c, x, &w->gate, &w->up, &w->down, w->gate_bias, w->up_bias, w->down_bias);
}

/* [B, n, heads * D] -> [B, heads, n, D], with the per-head norm if any. */
static afo_array *ow_split_heads(afo_array *x, int64_t B, int64_t n, int64_t heads, int64_t D, afo_array *norm,
                                 double eps) {
    int64_t shape[4] = {B, n, heads, D};
    x = ow_reshape(x, 4, shape);
    if (norm) x = ow_rms_norm(x, norm, eps);
    return ow_swapaxes(x, 1, 2);
}

typedef struct step {
    int64_t B, n, offset;
    afo_array *position; /* the offset as device data (model_forward_at), or NULL */
    afo_kv_cache *cache;
    afo_array *mask;     /* the caller's, without a cache */
    afo_array *freqs[2]; /* full, sliding */
    double score[2];
} step;

static afo_array *rotate(afo_array *x, const model_config *c, const rope_params *rp, afo_array *freqs, const step *s) {
    int dims = (int)c->rotary_dims;
    float theta = (float)rp->theta;
    afo_array *r = !x           ? NULL
                   : s->position ? afo_rope_at(x, dims, 0, theta, 1.0f, s->position, freqs)
                                 : afo_rope(x, dims, 0, theta, 1.0f, s->offset, freqs);
    afo_release(x);
    return r;
}

static afo_array *attention(const afo_model *m, const layer_weights *w, int layer, afo_array *h, const step *s) {
    const model_config *c = &m->cfg;
    int64_t D = c->head_dim, H = c->heads, K = c->kv_heads;
    bool sliding = c->layer_sliding[layer];
    const rope_params *rp = sliding ? &c->rope_sliding : &c->rope_full;
    afo_array *freqs = s->freqs[sliding];
    afo_array *qkv = use_stacked(&w->qkv, w->stacked_qkv, h) ? linear(h, &w->qkv, NULL)
                     : quantized_parts(h, (linear_weight[]){w->q, w->k, w->v}, 3, w->q_bias || w->k_bias || w->v_bias);
    afo_array *q = qkv ? afo_slice_axis(qkv, -1, 0, H * D) : linear(h, &w->q, w->q_bias);
    afo_array *k = qkv ? afo_slice_axis(qkv, -1, H * D, (H + K) * D) : linear(h, &w->k, w->k_bias);
    afo_array *v = qkv ? afo_slice_axis(qkv, -1, (H + K) * D, (H + 2 * K) * D) : linear(h, &w->v, w->v_bias);
    afo_release(qkv);
    v = ow_split_heads(v, s->B, s->n, K, D, NULL, 0);
    /* q and k roped apart: on a GPU a decode step's attention ropes q as it
     * loads it, and the cache write ropes k (no rope kernel of its own) */
    afo_array *qr = rotate(ow_split_heads(q, s->B, s->n, H, D, w->q_norm, c->eps), c, rp, freqs, s);
    afo_array *kr = rotate(ow_split_heads(k, s->B, s->n, K, D, w->k_norm, c->eps), c, rp, freqs, s);
    float scale = (float)(c->attn_scale * s->score[sliding]);
    afo_array *o = NULL;
    if (s->cache) {
        o = qr ? kv_attend(s->cache, layer, qr, kr, v, scale, sliding) : NULL;
        if (!qr) afo_release(kr), afo_release(v);
    } else {
        o = qr && kr && v ? afo_scaled_dot_product_attention(qr, kr, v, scale, s->mask, 1,
                                                             sliding ? (int)c->sliding_window : 0)
                          : NULL;
        afo_release(kr), afo_release(v);
    }
    afo_release(qr);
    int64_t flat[3] = {s->B, s->n, H * D};
    o = ow_reshape(ow_swapaxes(o, 1, 2), 3, flat);
    afo_array *y = o ? linear(o, &w->o, w->o_bias) : NULL;
    afo_release(o);
    return y;
}

/* x + f(norm(x)), with the sandwich norm of f's output where present. */
static afo_array *ow_block(const afo_model *m, int layer, afo_array *x, const step *s) {
    const layer_weights *w = &m->layers[layer];
    double eps = m->cfg.eps;
    afo_array *h = ow_rms_norm(R(x), w->attn_norm, eps);
    afo_array *a = h ? attention(m, w, layer, h, s) : NULL;
    afo_release(h);
    if (w->attn_out_norm) a = ow_rms_norm(a, w->attn_out_norm, eps);
    x = ow_add(x, a);
    h = ow_rms_norm(R(x), w->mlp_norm, eps);
    afo_array *f = h ? mlp(m, w, h) : NULL;
    afo_release(h);
    if (w->mlp_out_norm) f = ow_rms_norm(f, w->mlp_out_norm, eps);
    return ow_add(x, f);
}

/* The embeddings of idx [B, n] (int32, taken over). */
static afo_array *embed(const afo_model *m, afo_array *idx) {
    const linear_weight *e = &m->embed;
    afo_array *rows = !idx        ? NULL
                      : e->scales ? afo_quantized_take(e->w, e->scales, e->biases, idx, e->group_size, e->bits)
                                  : afo_take(e->w, idx, 0);
    afo_array *x = ow_astype(rows, m->compute);
    afo_release(idx);
    if (m->arch->flags & ARCH_EMBED_SCALE) x = ow_mul(x, afo_scalar(sqrt((double)m->cfg.hidden), m->compute));
    return x;
}

static afo_array *ow_logits(const afo_model *m, afo_array *h) {
    afo_array *y = h ? linear(h, m->lm_head.w ? &m->lm_head : &m->embed, NULL) : NULL;
    afo_release(h);
    y = ow_astype(y, AFO_FLOAT32);
    if (m->cfg.final_softcap > 0) {
        double cap = m->cfg.final_softcap;
        y = ow_mul(ow_tanh(ow_mul(y, afo_scalar(1.0 / cap, AFO_FLOAT32))), afo_scalar(cap, AFO_FLOAT32));
    }
    return y;
}

static afo_status check_ids(const afo_model *m, const int32_t *ids, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "model forward: token id %d at index %lld is outside [0, %lld)",
                             ids[i], (long long)i, (long long)m->cfg.vocab);
    return AFO_OK;
}

/* The forward pass of ids [batch, n] (int32, taken over) from the cache's
 * length on, or, with a position (n = 1), at the position's value. */
static afo_status forward(afo_model *m, afo_kv_cache *cache, afo_array *ids, afo_array *position, afo_array *pick,
                          bool *picked, const afo_forward_options *opts, afo_array **logits) {
    const model_config *c = &m->cfg;
    int64_t batch = afo_array_dim(ids, 0), n = afo_array_dim(ids, 1);
    step s = {.B = batch, .n = n, .offset = afo_kv_cache_length(cache), .position = position, .cache = cache,
              .mask = opts ? opts->attention_mask : NULL};
    int64_t total = s.offset + n;
    if (cache) {
        afo_status st = position ? kv_begin_at(cache, position) : kv_begin(cache, n);
        if (st != AFO_OK) {
            afo_release(ids);
            return kv_end(cache, st);
        }
    }
    const rope_params *rp[2] = {&c->rope_full, &c->rope_sliding};
    afo_array *cached[2] = {m->freqs_full, m->freqs_sliding};
    double cached_score[2] = {m->score_full, m->score_sliding};
    for (int i = 0; i < 2; i++) {
        if (rp[i]->kind == ROPE_DYNAMIC && total > c->max_positions) {
            s.freqs[i] = rope_freqs(rp[i], c->rotary_dims, c->max_positions, total, &s.score[i]);
        } else {
            s.freqs[i] = afo_retain(cached[i]);
            s.score[i] = cached_score[i];
        }
    }
    afo_array **hs = opts ? opts->hidden_states : NULL;
    afo_array *x = s.freqs[0] && s.freqs[1] ? embed(m, ids) : (afo_release(ids), NULL), *y = NULL;
    if (x && fused_step_applies(m, cache, batch, n, opts)) {
        y = fused_step(m, cache, x, position, s.freqs[0], s.score[0], pick);
        if (picked) *picked = pick != NULL;
    } else {
        if (hs) hs[0] = afo_retain(x);
        for (int l = 0; l < c->layers && x; l++) {
            x = ow_block(m, l, x, &s);
            if (hs && l + 1 < c->layers) hs[l + 1] = afo_retain(x);
        }
        x = ow_rms_norm(x, m->final_norm, c->eps);
        if (hs) hs[c->layers] = afo_retain(x);
        if (opts && opts->last_only) x = ow_slice_axis(x, 1, n - 1, n);
        y = ow_logits(m, x);
    }
    afo_release(s.freqs[0]);
    afo_release(s.freqs[1]);
    afo_status st = y ? afo_eval1(y) : afo_last_status();
    if (st == AFO_OK && hs) st = afo_eval(hs, c->layers + 1);
    if (cache) st = kv_end(cache, st);
    if (st != AFO_OK) {
        afo_release(y);
        for (int l = 0; hs && l <= c->layers; l++) afo_release(hs[l]), hs[l] = NULL;
        return st;
    }
    *logits = y;
    return AFO_OK;
}

afo_status afo_model_forward_ex(afo_model *m, afo_kv_cache *cache, const int32_t *ids, int64_t batch, int64_t n,
                                const afo_forward_options *opts, afo_array **logits) {
    if (!m || !ids || !logits || batch < 1 || n < 1)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "model forward: needs a model, ids, batch >= 1 and n >= 1");
    *logits = NULL;
    if (cache && (kv_cache_model(cache) != m || afo_kv_cache_batch(cache) != batch))
        return afo_error(AFO_ERR_INVALID_ARGUMENT,
                         "model forward: the cache was made for another model or batch size (%lld, not %lld)",
                         (long long)afo_kv_cache_batch(cache), (long long)batch);
    AFO_TRY(check_ids(m, ids, batch * n));
    if (opts && opts->attention_mask && cache)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "model forward: attention_mask is only supported without a cache");
    int64_t shape[2] = {batch, n};
    afo_array *idx = afo_array_from_data(ids, AFO_INT32, 2, shape);
    return idx ? forward(m, cache, idx, NULL, NULL, NULL, opts, logits) : afo_last_status();
}

afo_status model_forward_at(afo_model *m, afo_kv_cache *cache, afo_array *id, afo_array *position,
                            afo_array *pick, bool *picked, afo_array **logits) {
    *logits = NULL;
    *picked = false;
    const model_config *c = &m->cfg;
    for (int l = 0; l < c->layers; l++)
        if (m->layers[l].router.w)
            return afo_error(AFO_ERR_UNSUPPORTED, "model forward at a device position: MoE layers route on the host");
    const rope_params *rp[2] = {&c->rope_full, &c->rope_sliding};
    for (int i = 0; i < 2; i++)
        if (rp[i]->kind == ROPE_DYNAMIC && kv_capacity(cache) > c->max_positions)
            return afo_error(AFO_ERR_UNSUPPORTED,
                             "model forward at a device position: dynamic RoPE past %lld positions changes with the "
                             "length", (long long)c->max_positions);
    afo_forward_options fo = {.last_only = 1};
    return forward(m, cache, afo_retain(id), position, pick, picked, &fo, logits);
}

afo_status afo_model_forward(afo_model *m, afo_kv_cache *cache, const int32_t *ids, int64_t batch, int64_t n,
                             afo_array **logits) {
    return afo_model_forward_ex(m, cache, ids, batch, n, NULL, logits);
}
