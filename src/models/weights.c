/* The tensors of a model, named and shaped as transformers saves them. One
 * list serves loading (every tensor checked before use) and random-model. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/compose.h"
#include "models/models.h"

typedef struct spec_list {
    tensor_spec *v;
    int n, cap;
    afo_status status;
} spec_list;

static void add(spec_list *l, afo_array **slot, tensor_kind kind, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void add(spec_list *l, afo_array **slot, tensor_kind kind, int64_t d0, int64_t d1, const char *fmt, ...) {
    if (l->status != AFO_OK) return;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        tensor_spec *v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) {
            l->status = afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory listing model tensors");
            return;
        }
        l->v = v, l->cap = cap;
    }
    tensor_spec *s = &l->v[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = d1 ? 2 : 1;
    s->shape[0] = d0, s->shape[1] = d1;
    s->kind = kind;
    s->slot = slot;
}

static void add_attention(spec_list *l, const afo_model *m, layer_weights *w, const char *p) {
    const model_config *c = &m->cfg;
    unsigned f = m->arch->flags;
    int64_t q = c->heads * c->head_dim, kv = c->kv_heads * c->head_dim, h = c->hidden;
    if (f & ARCH_QKV_FUSED) {
        add(l, &w->qkv, TENSOR_MATRIX, q + 2 * kv, h, "%sself_attn.qkv_proj.weight", p);
    } else {
        add(l, &w->q, TENSOR_MATRIX, q, h, "%sself_attn.q_proj.weight", p);
        add(l, &w->k, TENSOR_MATRIX, kv, h, "%sself_attn.k_proj.weight", p);
        add(l, &w->v, TENSOR_MATRIX, kv, h, "%sself_attn.v_proj.weight", p);
        if ((f & ARCH_QKV_BIAS) || c->attention_bias) {
            add(l, &w->q_bias, TENSOR_BIAS, q, 0, "%sself_attn.q_proj.bias", p);
            add(l, &w->k_bias, TENSOR_BIAS, kv, 0, "%sself_attn.k_proj.bias", p);
            add(l, &w->v_bias, TENSOR_BIAS, kv, 0, "%sself_attn.v_proj.bias", p);
        }
    }
    add(l, &w->o, TENSOR_MATRIX, h, q, "%sself_attn.o_proj.weight", p);
    if (c->attention_bias && !(f & ARCH_QKV_BIAS)) add(l, &w->o_bias, TENSOR_BIAS, h, 0, "%sself_attn.o_proj.bias", p);
    if (f & ARCH_QK_NORM) {
        add(l, &w->q_norm, TENSOR_NORM, c->head_dim, 0, "%sself_attn.q_norm.weight", p);
        add(l, &w->k_norm, TENSOR_NORM, c->head_dim, 0, "%sself_attn.k_norm.weight", p);
    }
}

static void add_mlp(spec_list *l, const afo_model *m, layer_weights *w, const char *p, int layer) {
    const model_config *c = &m->cfg;
    int64_t h = c->hidden, in = c->intermediate;
    if (c->layer_moe[layer]) {
        int64_t e = c->num_experts, mi = c->moe_intermediate;
        add(l, &w->router, TENSOR_MATRIX, e, h, "%smlp.gate.weight", p);
        if (l->status == AFO_OK && !(w->experts = calloc((size_t)(3 * e), sizeof *w->experts)))
            l->status = afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory listing model tensors");
        for (int64_t x = 0; x < e && l->status == AFO_OK; x++) {
            add(l, &w->experts[3 * x], TENSOR_MATRIX, mi, h, "%smlp.experts.%lld.gate_proj.weight", p, (long long)x);
            add(l, &w->experts[3 * x + 1], TENSOR_MATRIX, mi, h, "%smlp.experts.%lld.up_proj.weight", p, (long long)x);
            add(l, &w->experts[3 * x + 2], TENSOR_MATRIX, h, mi, "%smlp.experts.%lld.down_proj.weight", p,
                (long long)x);
        }
    } else if (m->arch->flags & ARCH_GATE_UP_FUSED) {
        add(l, &w->gate_up, TENSOR_MATRIX, 2 * in, h, "%smlp.gate_up_proj.weight", p);
        add(l, &w->down, TENSOR_MATRIX, h, in, "%smlp.down_proj.weight", p);
    } else {
        add(l, &w->gate, TENSOR_MATRIX, in, h, "%smlp.gate_proj.weight", p);
        add(l, &w->up, TENSOR_MATRIX, in, h, "%smlp.up_proj.weight", p);
        add(l, &w->down, TENSOR_MATRIX, h, in, "%smlp.down_proj.weight", p);
        if (c->mlp_bias) {
            add(l, &w->gate_bias, TENSOR_BIAS, in, 0, "%smlp.gate_proj.bias", p);
            add(l, &w->up_bias, TENSOR_BIAS, in, 0, "%smlp.up_proj.bias", p);
            add(l, &w->down_bias, TENSOR_BIAS, h, 0, "%smlp.down_proj.bias", p);
        }
    }
}

afo_status model_tensor_specs(afo_model *m, const char *prefix) {
    const model_config *c = &m->cfg;
    spec_list l = {0};
    m->layers = calloc((size_t)c->layers, sizeof *m->layers);
    if (!m->layers) return afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory listing model tensors");
    bool sandwich = m->arch->flags & ARCH_SANDWICH_NORM;
    add(&l, &m->embed, TENSOR_EMBED, c->vocab, c->hidden, "%sembed_tokens.weight", prefix);
    for (int i = 0; i < c->layers; i++) {
        layer_weights *w = &m->layers[i];
        char p[128];
        snprintf(p, sizeof p, "%slayers.%d.", prefix, i);
        add(&l, &w->attn_norm, TENSOR_NORM, c->hidden, 0, "%sinput_layernorm.weight", p);
        add(&l, sandwich ? &w->attn_out_norm : &w->mlp_norm, TENSOR_NORM, c->hidden, 0,
            "%spost_attention_layernorm.weight", p);
        if (sandwich) {
            add(&l, &w->mlp_norm, TENSOR_NORM, c->hidden, 0, "%spre_feedforward_layernorm.weight", p);
            add(&l, &w->mlp_out_norm, TENSOR_NORM, c->hidden, 0, "%spost_feedforward_layernorm.weight", p);
        }
        add_attention(&l, m, w, p);
        add_mlp(&l, m, w, p, i);
    }
    add(&l, &m->final_norm, TENSOR_NORM, c->hidden, 0, "%snorm.weight", prefix);
    if (!c->tie_embeddings)
        add(&l, &m->lm_head, TENSOR_MATRIX, c->vocab, c->hidden, "%slm_head.weight",
            strcmp(prefix, "language_model.model.") == 0 ? "language_model." : "");
    m->specs = l.v;
    m->nspecs = l.n;
    m->num_params = 0;
    for (int i = 0; i < l.n; i++) m->num_params += l.v[i].shape[0] * (l.v[i].ndim == 2 ? l.v[i].shape[1] : 1);
    return l.status;
}

void model_release_weights(afo_model *m) {
    for (int i = 0; i < m->nspecs; i++) {
        afo_release(*m->specs[i].slot);
        *m->specs[i].slot = NULL;
    }
    for (int i = 0; m->layers && i < m->cfg.layers; i++) free(m->layers[i].experts);
    free(m->layers);
    free(m->specs);
    m->layers = NULL;
    m->specs = NULL;
    m->nspecs = 0;
}

static bool has_tensor(const afo_weights *w, const char *name) {
    for (int i = 0; i < afo_weights_count(w); i++)
        if (strcmp(afo_weights_name(w, i), name) == 0) return true;
    return false;
}

/* Checks one tensor and puts it (or, for (1 + w) norms, 1 + w in float32)
 * into its slot. */
static afo_status bind(afo_model *m, const tensor_spec *s) {
    afo_array *a = afo_weights_get(m->weights, s->name);
    if (!a) return afo_error(AFO_ERR_FORMAT, "model %s: missing tensor %s", m->dir, s->name);
    char got[64], want[64];
    bool ok = afo_array_ndim(a) == s->ndim;
    for (int d = 0; ok && d < s->ndim; d++) ok = afo_array_dim(a, d) == s->shape[d];
    if (!ok) {
        afo_status st = afo_error(AFO_ERR_FORMAT, "model %s: tensor %s has shape %s, expected %s", m->dir, s->name,
                                  afo_shape_str(afo_array_ndim(a), afo_array_shape(a), got, sizeof got),
                                  afo_shape_str(s->ndim, s->shape, want, sizeof want));
        afo_release(a);
        return st;
    }
    if (!afo_dtype_is_float(afo_array_dtype(a))) {
        afo_release(a);
        return afo_error(AFO_ERR_FORMAT, "model %s: tensor %s is %s, expected a floating-point dtype", m->dir, s->name,
                         afo_dtype_name(afo_array_dtype(a)));
    }
    m->weight_bytes += afo_array_nbytes(a);
    if (s->kind == TENSOR_NORM && (m->arch->flags & ARCH_NORM_PLUS_ONE)) {
        afo_array *w = ow_add(ow_astype(a, AFO_FLOAT32), afo_scalar(1.0, AFO_FLOAT32));
        if (!w || afo_eval1(w) != AFO_OK) {
            afo_release(w);
            return afo_last_status();
        }
        a = w;
    }
    *s->slot = a;
    return AFO_OK;
}

afo_status model_bind_weights(afo_model *m) {
    if (!(m->weights = afo_weights_open(m->dir))) return afo_last_status();
    /* the text model of a multimodal checkpoint sits under another prefix,
     * which depends on the transformers version that saved it */
    static const char *const prefixes[] = {"model.", "language_model.model.", "model.language_model."};
    const char *prefix = prefixes[0];
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
        char name[160];
        snprintf(name, sizeof name, "%sembed_tokens.weight", prefixes[i]);
        if (has_tensor(m->weights, name)) {
            prefix = prefixes[i];
            break;
        }
    }
    AFO_TRY(model_tensor_specs(m, prefix));
    for (int i = 0; i < m->nspecs; i++) AFO_TRY(bind(m, &m->specs[i]));
    return AFO_OK;
}
