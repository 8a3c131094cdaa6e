/* A decode step as one op (ops/decode_step.h) where the device runs it:
 * batch 1, one token, a plain bf16 cache, and a llama-family model whose
 * products are all 4-bit g64 (MLX's format) with q/k/v and gate/up stacked,
 * as afo_model_to_device leaves them on a GPU. Anything else, or
 * AFO_FUSED_STEP=0, takes the layer graph, which computes the same step. */
#include <stdlib.h>
#include <string.h>

#include "models/models.h"
#include "ops/decode_step.h"

static bool is_q4(const linear_weight *w) {
    return w->w && w->scales && w->bits == 4 && w->group_size == 64 && afo_array_dtype(w->scales) == AFO_BFLOAT16;
}

static bool is_bf16(const afo_array *a) { return a && afo_array_dtype(a) == AFO_BFLOAT16; }

/* What the model's own structure allows (the shape the device decides). */
static bool model_qualifies(const afo_model *m) {
    const model_config *c = &m->cfg;
    const unsigned differs = ARCH_QKV_BIAS | ARCH_QK_NORM | ARCH_SANDWICH_NORM | ARCH_NORM_PLUS_ONE | ARCH_MOE;
    if ((m->arch->flags & differs) || c->attention_bias || c->mlp_bias || c->act != ACT_SILU || c->final_softcap > 0 ||
        c->head_dim != AFO_STEP_HEAD_DIM || c->rotary_dims != AFO_STEP_HEAD_DIM || m->compute != AFO_BFLOAT16 ||
        !is_bf16(m->final_norm) || !is_q4(m->lm_head.w ? &m->lm_head : &m->embed))
        return false;
    for (int64_t l = 0; l < c->layers; l++) {
        const layer_weights *w = &m->layers[l];
        if (c->layer_sliding[l] || w->router.w || w->attn_out_norm || w->mlp_out_norm || !is_bf16(w->attn_norm) ||
            !is_bf16(w->mlp_norm) || !is_q4(&w->qkv) || !is_q4(&w->o) || !is_q4(&w->gate_up) || !is_q4(&w->down) ||
            w->o_bias || w->down_bias)
            return false;
    }
    return true;
}

static afo_step_shape step_shape(const afo_model *m, const afo_kv_cache *cache) {
    const model_config *c = &m->cfg;
    return (afo_step_shape){c->layers, c->hidden, c->intermediate, c->heads, c->kv_heads, c->vocab, kv_capacity(cache)};
}

/* The op writes the new key and value into the cache's buffers in place:
 * one with a copy on the host (read there) takes the layer graph, which
 * writes a fresh buffer. */
static bool cache_writable(afo_kv_cache *cache, int64_t layers) {
    for (int l = 0; l < layers; l++)
        for (int kv = 0; kv < 2; kv++) {
            const afo_array *b = kv_plain_buffer(cache, l, kv);
            if (!b || !b->buf || !afo_buffer_own_bytes(b->buf)) return false;
        }
    return true;
}

bool fused_step_applies(const afo_model *m, afo_kv_cache *cache, int64_t batch, int64_t n,
                        const afo_forward_options *opts) {
    const char *env = getenv("AFO_FUSED_STEP");
    afo_device d = afo_get_default_device();
    if ((env && strcmp(env, "0") == 0) || d == AFO_CPU || batch != 1 || n != 1 || !cache ||
        (opts && (opts->hidden_states || opts->attention_mask)) || afo_kv_cache_dtype(cache) != AFO_BFLOAT16 ||
        !model_qualifies(m) || !cache_writable(cache, m->cfg.layers))
        return false;
    afo_step_shape s = step_shape(m, cache);
    const char *why = NULL;
    return afo_decode_step_fits(d, &s, &why);
}

afo_array *fused_step(afo_model *m, afo_kv_cache *cache, afo_array *x, afo_array *position, afo_array *freqs,
                      double score, afo_array *pick) {
    const model_config *c = &m->cfg;
    int64_t L = c->layers;
    const linear_weight *head = m->lm_head.w ? &m->lm_head : &m->embed;
    int32_t at = (int32_t)afo_kv_cache_length(cache);
    afo_array *pos = position ? afo_retain(position) : afo_array_from_data(&at, AFO_INT32, 1, (int64_t[]){1});
    afo_array **layer_in = malloc(sizeof *layer_in * (size_t)L * AFO_STEP_L_COUNT);
    afo_array *y = NULL;
    if (pos && layer_in) {
        for (int64_t l = 0; l < L; l++) {
            const layer_weights *w = &m->layers[l];
            afo_array **y_in = layer_in + l * AFO_STEP_L_COUNT;
            const linear_weight *mats[4] = {&w->qkv, &w->o, &w->gate_up, &w->down};
            const int slots[4] = {AFO_STEP_L_QKV, AFO_STEP_L_O, AFO_STEP_L_GATE_UP, AFO_STEP_L_DOWN};
            for (int k = 0; k < 4; k++)
                y_in[slots[k]] = mats[k]->w, y_in[slots[k] + 1] = mats[k]->scales, y_in[slots[k] + 2] = mats[k]->biases;
            y_in[AFO_STEP_L_ATTN_NORM] = w->attn_norm;
            y_in[AFO_STEP_L_MLP_NORM] = w->mlp_norm;
            y_in[AFO_STEP_L_KEYS] = kv_plain_buffer(cache, (int)l, 0);
            y_in[AFO_STEP_L_VALUES] = kv_plain_buffer(cache, (int)l, 1);
        }
        afo_step_shape s = step_shape(m, cache);
        afo_array *fixed[AFO_STEP_IN_FIXED] = {x, pos, m->final_norm, head->w, head->scales, head->biases, freqs};
        y = afo_decode_step(&s, fixed, pick, layer_in, c->eps, c->attn_scale * score);
    } else if (pos) {
        afo_error(AFO_ERR_OUT_OF_MEMORY, "model forward: out of memory");
    }
    free(layer_in);
    afo_release(pos);
    afo_release(x);
    return y;
}
