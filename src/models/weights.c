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

static tensor_spec *vadd(spec_list *l, afo_array **slot, tensor_kind kind, int64_t d0, int64_t d1, const char *fmt,
                         va_list ap) {
    if (l->status != AFO_OK) return NULL;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        tensor_spec *v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) {
            l->status = afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory listing model tensors");
            return NULL;
        }
        l->v = v, l->cap = cap;
    }
    tensor_spec *s = &l->v[l->n++];
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    s->ndim = d1 ? 2 : 1;
    s->shape[0] = d0, s->shape[1] = d1;
    s->kind = kind;
    s->slot = slot;
    s->linear = NULL;
    s->expert = -1;
    return s;
}

/* A norm or bias. */
static void add(spec_list *l, afo_array **slot, tensor_kind kind, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(spec_list *l, afo_array **slot, tensor_kind kind, int64_t d0, int64_t d1, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vadd(l, slot, kind, d0, d1, fmt, ap);
    va_end(ap);
}

/* A matrix [out, in] (Linear or embedding), which may be stored quantized. */
static tensor_spec *add_linear(spec_list *l, linear_weight *lw, tensor_kind kind, int64_t out, int64_t in,
                               const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static tensor_spec *add_linear(spec_list *l, linear_weight *lw, tensor_kind kind, int64_t out, int64_t in,
                               const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tensor_spec *s = vadd(l, &lw->w, kind, out, in, fmt, ap);
    va_end(ap);
    if (s) s->linear = lw;
    return s;
}

static void add_attention(spec_list *l, const afo_model *m, layer_weights *w, const char *p) {
    const model_config *c = &m->cfg;
    unsigned f = m->arch->flags;
    int64_t q = c->heads * c->head_dim, kv = c->kv_heads * c->head_dim, h = c->hidden;
    if (f & ARCH_QKV_FUSED) {
        add_linear(l, &w->qkv, TENSOR_MATRIX, q + 2 * kv, h, "%sself_attn.qkv_proj.weight", p);
    } else {
        add_linear(l, &w->q, TENSOR_MATRIX, q, h, "%sself_attn.q_proj.weight", p);
        add_linear(l, &w->k, TENSOR_MATRIX, kv, h, "%sself_attn.k_proj.weight", p);
        add_linear(l, &w->v, TENSOR_MATRIX, kv, h, "%sself_attn.v_proj.weight", p);
        if ((f & ARCH_QKV_BIAS) || c->attention_bias) {
            add(l, &w->q_bias, TENSOR_BIAS, q, 0, "%sself_attn.q_proj.bias", p);
            add(l, &w->k_bias, TENSOR_BIAS, kv, 0, "%sself_attn.k_proj.bias", p);
            add(l, &w->v_bias, TENSOR_BIAS, kv, 0, "%sself_attn.v_proj.bias", p);
        }
    }
    add_linear(l, &w->o, TENSOR_MATRIX, h, q, "%sself_attn.o_proj.weight", p);
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
        add_linear(l, &w->router, TENSOR_MATRIX, e, h, "%smlp.gate.weight", p);
        if (l->status == AFO_OK && !(w->experts = calloc((size_t)(3 * e), sizeof *w->experts)))
            l->status = afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory listing model tensors");
        static const char *const proj[3] = {"gate", "up", "down"};
        for (int64_t x = 0; x < e && l->status == AFO_OK; x++)
            for (int j = 0; j < 3; j++) {
                tensor_spec *s = add_linear(l, &w->experts[3 * x + j], TENSOR_MATRIX, j == 2 ? h : mi, j == 2 ? mi : h,
                                            "%smlp.experts.%lld.%s_proj.weight", p, (long long)x, proj[j]);
                if (s) s->expert = (int)x;
            }
    } else if (m->arch->flags & ARCH_GATE_UP_FUSED) {
        add_linear(l, &w->gate_up, TENSOR_MATRIX, 2 * in, h, "%smlp.gate_up_proj.weight", p);
        add_linear(l, &w->down, TENSOR_MATRIX, h, in, "%smlp.down_proj.weight", p);
    } else {
        add_linear(l, &w->gate, TENSOR_MATRIX, in, h, "%smlp.gate_proj.weight", p);
        add_linear(l, &w->up, TENSOR_MATRIX, in, h, "%smlp.up_proj.weight", p);
        add_linear(l, &w->down, TENSOR_MATRIX, h, in, "%smlp.down_proj.weight", p);
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
    add_linear(&l, &m->embed, TENSOR_EMBED, c->vocab, c->hidden, "%sembed_tokens.weight", prefix);
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
        add_linear(&l, &m->lm_head, TENSOR_MATRIX, c->vocab, c->hidden, "%slm_head.weight",
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
        if (m->specs[i].linear) {
            afo_release(m->specs[i].linear->scales);
            afo_release(m->specs[i].linear->biases);
            m->specs[i].linear->scales = m->specs[i].linear->biases = NULL;
        }
    }
    for (int i = 0; m->layers && i < m->cfg.layers; i++) {
        layer_weights *w = &m->layers[i];
        linear_weight *stacked[2] = {w->stacked_qkv ? &w->qkv : NULL, w->stacked_gate_up ? &w->gate_up : NULL};
        for (int k = 0; k < 2; k++)
            if (stacked[k]) afo_release(stacked[k]->w), afo_release(stacked[k]->scales), afo_release(stacked[k]->biases);
        free(w->experts);
    }
    free(m->layers);
    free(m->specs);
    m->layers = NULL;
    m->specs = NULL;
    m->nspecs = 0;
}

void model_switch_name(const tensor_spec *s, bool path_only, char *out, size_t n) {
    const char *at = strstr(s->name, ".experts."), *proj = at ? strchr(at + strlen(".experts."), '.') : NULL;
    if (!proj) {
        snprintf(out, n, "%s", s->name);
        return;
    }
    int tail = (int)strlen(proj + 1) - (path_only ? (int)strlen(".weight") : 0);
    snprintf(out, n, "%.*s.switch_mlp.%.*s", (int)(at - s->name), s->name, tail, proj + 1);
}

static bool has_tensor(const afo_weights *w, const char *name) {
    for (int i = 0; i < afo_weights_count(w); i++)
        if (strcmp(afo_weights_name(w, i), name) == 0) return true;
    return false;
}

afo_dtype model_storage_dtype(const afo_model *m) {
    return afo_array_dtype(m->embed.scales ? m->embed.scales : m->embed.w);
}

/* The quantization of the matrix at `path` (its name less ".weight"):
 * config "quantization"'s per-path entry (an object, or false) over its
 * global bits and group size. *bits = 0: stored unquantized. */
static afo_status quant_params(const afo_model *m, const char *path, int *bits, int *group_size) {
    const cJSON *q = m->cfg.quantization;
    *bits = 0;
    if (!q) return afo_error(AFO_ERR_FORMAT, "model %s: %s.scales exists but config.json has no \"quantization\"",
                             m->dir, path);
    const cJSON *own = cJSON_GetObjectItemCaseSensitive(q, path);
    if (cJSON_IsFalse(own)) return AFO_OK;
    const cJSON *src = cJSON_IsObject(own) ? own : q;
    *bits = (int)json_int(src, "bits", json_int(q, "bits", 0));
    *group_size = (int)json_int(src, "group_size", json_int(q, "group_size", 64));
    /* mlx-lm's recipes write "mode" into every per-path entry too */
    for (const cJSON *o = src;; o = q) {
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(o, "mode");
        if (mode && !(cJSON_IsString(mode) && strcmp(mode->valuestring, "affine") == 0))
            return afo_error(AFO_ERR_UNSUPPORTED, "model %s: quantization mode of %s is not \"affine\"", m->dir, path);
        if (o == q) return AFO_OK;
    }
}

/* Checks a tensor's dtype class and shape; takes over a on failure. */
static afo_status check(const afo_model *m, afo_array *a, const char *name, bool quantized, int ndim,
                        const int64_t *shape) {
    char got[64], want[64];
    bool ok = afo_array_ndim(a) == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = afo_array_dim(a, d) == shape[d];
    afo_status st = AFO_OK;
    if (!ok)
        st = afo_error(AFO_ERR_FORMAT, "model %s: tensor %s has shape %s, expected %s", m->dir, name,
                       afo_shape_str(afo_array_ndim(a), afo_array_shape(a), got, sizeof got),
                       afo_shape_str(ndim, shape, want, sizeof want));
    else if (quantized ? afo_array_dtype(a) != AFO_UINT32 : !afo_dtype_is_float(afo_array_dtype(a)))
        st = afo_error(AFO_ERR_FORMAT, "model %s: tensor %s is %s, expected %s", m->dir, name,
                       afo_dtype_name(afo_array_dtype(a)), quantized ? "uint32" : "a floating-point dtype");
    if (st != AFO_OK) afo_release(a);
    return st;
}

/* A matrix stored quantized (P.weight, P.scales, P.biases): bits and group
 * size from the config, every shape checked against the original [out, in]. */
static afo_status check_fit(const afo_model *m, const char *path, int bits, int group_size, int64_t in) {
    if (bits < 2 || bits > 8 || bits == 7 || (group_size != 32 && group_size != 64 && group_size != 128) ||
        in % group_size != 0)
        return afo_error(AFO_ERR_FORMAT, "model %s: %s: %d bits with group size %d do not fit input size %lld", m->dir,
                         path, bits, group_size, (long long)in);
    return AFO_OK;
}

static afo_status bind_quantized(afo_model *m, const tensor_spec *s, int bits, int group_size) {
    char path[160], name[200];
    snprintf(path, sizeof path, "%.*s", (int)(strlen(s->name) - strlen(".weight")), s->name);
    AFO_TRY(check_fit(m, path, bits, group_size, s->shape[1]));
    linear_weight *lw = s->linear;
    int64_t packed[2] = {s->shape[0], s->shape[1] * bits / 32}, groups[2] = {s->shape[0], s->shape[1] / group_size};
    afo_array **dst[3] = {&lw->w, &lw->scales, &lw->biases};
    static const char *const suffix[3] = {"weight", "scales", "biases"};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s.%s", path, suffix[i]);
        afo_array *a = afo_weights_get(m->weights, name);
        if (!a) return afo_error(AFO_ERR_FORMAT, "model %s: missing tensor %s", m->dir, name);
        AFO_TRY(check(m, a, name, i == 0, 2, i == 0 ? packed : groups));
        m->weight_bytes += afo_array_nbytes(a);
        *dst[i] = a;
    }
    lw->bits = bits, lw->group_size = group_size;
    return AFO_OK;
}

/* Experts stored as MLX's stacked switch_mlp tensors (s: expert 0's spec of
 * one projection): each expert's matrix becomes an evaluated view of its
 * slice, so the mapped file is shared and nothing is copied. */
static afo_status bind_switch(afo_model *m, const tensor_spec *s) {
    char path[200], name[220];
    model_switch_name(s, true, path, sizeof path);
    int bits = 0, group_size = 64;
    snprintf(name, sizeof name, "%s.scales", path);
    if (has_tensor(m->weights, name)) {
        AFO_TRY(quant_params(m, path, &bits, &group_size));
        if (bits) AFO_TRY(check_fit(m, path, bits, group_size, s->shape[1]));
    }
    int64_t E = m->cfg.num_experts, out = s->shape[0];
    int64_t shapes[3][3] = {{E, out, bits ? s->shape[1] * bits / 32 : s->shape[1]},
                            {E, out, s->shape[1] / group_size},
                            {E, out, s->shape[1] / group_size}};
    static const char *const suffix[3] = {"weight", "scales", "biases"};
    for (int i = 0; i < (bits ? 3 : 1); i++) {
        snprintf(name, sizeof name, "%s.%s", path, suffix[i]);
        afo_array *a = afo_weights_get(m->weights, name);
        if (!a) return afo_error(AFO_ERR_FORMAT, "model %s: missing tensor %s", m->dir, name);
        AFO_TRY(check(m, a, name, bits && i == 0, 3, shapes[i]));
        m->weight_bytes += afo_array_nbytes(a);
        afo_status st = AFO_OK;
        for (int64_t x = 0; x < E && st == AFO_OK; x++) {
            linear_weight *lw = s[3 * x].linear;
            afo_array *row = afo_slice_axis(a, 0, x, x + 1), *v = row ? afo_reshape(row, 2, shapes[i] + 1) : NULL;
            afo_release(row);
            st = v ? afo_eval1(v) : afo_last_status();
            *(i == 0 ? &lw->w : i == 1 ? &lw->scales : &lw->biases) = v;
            lw->bits = bits, lw->group_size = group_size;
        }
        afo_release(a);
        AFO_TRY(st);
    }
    return AFO_OK;
}

/* Checks one tensor and puts it (or, for (1 + w) norms, 1 + w in float32)
 * into its slot; matrices with P.scales beside them are bound quantized. */
static afo_status bind(afo_model *m, const tensor_spec *s) {
    if (s->expert > 0 && s->linear->w) return AFO_OK; /* bound from the stack with expert 0 */
    if (s->expert == 0 && !has_tensor(m->weights, s->name)) {
        char stacked[200];
        model_switch_name(s, false, stacked, sizeof stacked);
        if (has_tensor(m->weights, stacked)) return bind_switch(m, s);
    }
    if (s->linear) {
        char path[160], scales[200];
        snprintf(path, sizeof path, "%.*s", (int)(strlen(s->name) - strlen(".weight")), s->name);
        snprintf(scales, sizeof scales, "%s.scales", path);
        if (has_tensor(m->weights, scales)) {
            int bits, group_size;
            AFO_TRY(quant_params(m, path, &bits, &group_size));
            if (bits) return bind_quantized(m, s, bits, group_size);
        }
    }
    afo_array *a = afo_weights_get(m->weights, s->name);
    if (!a) return afo_error(AFO_ERR_FORMAT, "model %s: missing tensor %s", m->dir, s->name);
    AFO_TRY(check(m, a, s->name, false, s->ndim, s->shape));
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
