/* config.json and generation_config.json in both layouts transformers has
 * written: 4.x (rope_theta + rope_scaling, torch_dtype) and 5.x
 * (rope_parameters, possibly one per layer type, and dtype). Defaults for
 * absent fields are those of transformers' config classes. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "models/models.h"

cJSON *json_read_file(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (afo_read_file(path, 0, false, &text, &len) != AFO_OK) return NULL;
    cJSON *j = cJSON_Parse(text);
    if (!j) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        afo_error(AFO_ERR_FORMAT, "%s is not valid JSON (near byte %ld)", path, off);
    } else if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        j = afo_error_null(AFO_ERR_FORMAT, "%s: expected a JSON object at the top level", path);
    }
    free(text);
    return j;
}

static const cJSON *field(const cJSON *o, const char *key) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* A JSON number as an integer: truncated, and saturated to int32's range.
 * Config integers are counts, sizes and ids: a larger double cast to an
 * integer is undefined behaviour, and one cast on to int wraps around to
 * what may pass for a valid value ("bits": 4294967300 as 4). */
static int64_t saturated_int(double d) {
    return d >= (double)INT32_MAX ? INT32_MAX : d <= (double)INT32_MIN ? INT32_MIN : (int64_t)d;
}

int64_t json_int(const cJSON *o, const char *key, int64_t dflt) {
    const cJSON *v = field(o, key);
    return v && cJSON_IsNumber(v) ? saturated_int(v->valuedouble) : dflt;
}

double json_num(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = field(o, key);
    return v && cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

bool json_bool(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = field(o, key);
    return v && cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

afo_status json_positive(const cJSON *o, const char *key, const char *file, int64_t *out) {
    const cJSON *v = field(o, key);
    if (!v) return afo_error(AFO_ERR_FORMAT, "%s: required field \"%s\" is missing", file, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble != floor(v->valuedouble) || v->valuedouble > 1e12)
        return afo_error(AFO_ERR_FORMAT, "%s: \"%s\" must be a positive integer", file, key);
    *out = (int64_t)v->valuedouble;
    return AFO_OK;
}

/* A RoPE variant from a rope_parameters / rope_scaling object (params, may be
 * NULL) over the config's top-level fields (4.x keeps rope_theta there). */
afo_status rope_parse(const cJSON *params, const cJSON *config, rope_params *out) {
    static const struct { const char *name; rope_kind kind; } kinds[] = {
        {"default", ROPE_DEFAULT}, {"linear", ROPE_LINEAR}, {"dynamic", ROPE_DYNAMIC},
        {"llama3", ROPE_LLAMA3},   {"yarn", ROPE_YARN},
    };
    const cJSON *t = field(params, "rope_type");
    if (!t) t = field(params, "type"); /* older 4.x spelling */
    const char *type = t && cJSON_IsString(t) ? t->valuestring : "default";
    out->kind = (rope_kind)-1;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (strcmp(type, kinds[i].name) == 0) out->kind = kinds[i].kind;
    if ((int)out->kind < 0)
        return afo_error(AFO_ERR_UNSUPPORTED,
                         "config: rope type \"%s\" is not supported (supported: default, linear, dynamic, llama3, yarn)",
                         type);
    int64_t max_pos = json_int(config, "max_position_embeddings", 2048);
    out->theta = json_num(params, "rope_theta", json_num(config, "rope_theta", 10000.0));
    out->factor = json_num(params, "factor", 1.0);
    out->low_freq_factor = json_num(params, "low_freq_factor", 1.0);
    out->high_freq_factor = json_num(params, "high_freq_factor", 4.0);
    out->beta_fast = json_num(params, "beta_fast", 32.0);
    out->beta_slow = json_num(params, "beta_slow", 1.0);
    out->attention_factor = json_num(params, "attention_factor", 0.0);
    out->mscale = json_num(params, "mscale", 0.0);
    out->mscale_all_dim = json_num(params, "mscale_all_dim", 0.0);
    out->truncate = json_bool(params, "truncate", true);
    out->original_max_positions =
        json_int(params, "original_max_position_embeddings", json_int(config, "original_max_position_embeddings", max_pos));
    if (!(out->theta > 0) || !(out->factor > 0))
        return afo_error(AFO_ERR_FORMAT, "config: rope_theta and the rope factor must be positive");
    if (out->kind == ROPE_LLAMA3 && !(out->high_freq_factor > out->low_freq_factor))
        return afo_error(AFO_ERR_FORMAT, "config: llama3 rope needs high_freq_factor > low_freq_factor");
    return AFO_OK;
}

static afo_status parse_activation(const cJSON *j, const char *file, activation *out) {
    const cJSON *a = field(j, "hidden_activation");
    if (!a) a = field(j, "hidden_act");
    const char *name = a && cJSON_IsString(a) ? a->valuestring : "silu";
    if (strcmp(name, "silu") == 0 || strcmp(name, "swish") == 0) *out = ACT_SILU;
    else if (strcmp(name, "gelu") == 0) *out = ACT_GELU;
    else if (strcmp(name, "gelu_pytorch_tanh") == 0 || strcmp(name, "gelu_new") == 0 ||
             strcmp(name, "gelu_fast") == 0)
        *out = ACT_GELU_TANH;
    else
        return afo_error(AFO_ERR_UNSUPPORTED, "%s: activation \"%s\" is not supported (silu, gelu, gelu_pytorch_tanh)",
                         file, name);
    return AFO_OK;
}

/* Token ids: an integer or a list of them (eos); absent or null keeps *ids. */
static void parse_token_ids(const cJSON *j, const char *key, int32_t *ids, int *n, int max) {
    const cJSON *v = field(j, key);
    if (v && cJSON_IsNumber(v)) {
        ids[0] = (int32_t)saturated_int(v->valuedouble);
        *n = 1;
    } else if (v && cJSON_IsArray(v)) {
        int k = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v) if (cJSON_IsNumber(e) && k < max) ids[k++] = (int32_t)saturated_int(e->valuedouble);
        *n = k;
    }
}

static void parse_generation(const cJSON *j, afo_generation_config *g) {
    int one;
    parse_token_ids(j, "bos_token_id", &g->bos_token_id, &one, 1);
    parse_token_ids(j, "pad_token_id", &g->pad_token_id, &one, 1);
    parse_token_ids(j, "eos_token_id", g->eos_token_ids, &g->num_eos, AFO_MAX_EOS);
    g->do_sample = json_bool(j, "do_sample", g->do_sample);
    g->temperature = json_num(j, "temperature", g->temperature);
    g->top_k = (int)json_int(j, "top_k", g->top_k);
    g->top_p = json_num(j, "top_p", g->top_p);
    g->min_p = json_num(j, "min_p", g->min_p);
    g->repetition_penalty = json_num(j, "repetition_penalty", g->repetition_penalty);
    g->max_new_tokens = json_int(j, "max_new_tokens", g->max_new_tokens);
}

/* Which layers use a sliding window: layer_types when given (5.x, and 4.x
 * gemma3 / qwen2 since 4.53), else the architecture's older rule. */
static afo_status parse_layer_types(model_config *c, const cJSON *j, const arch_desc *arch, const char *file) {
    const cJSON *types = field(j, "layer_types");
    c->layer_sliding = calloc((size_t)c->layers, sizeof(bool));
    if (!c->layer_sliding) return afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory reading %s", file);
    if (types) {
        if (!cJSON_IsArray(types) || cJSON_GetArraySize(types) != c->layers)
            return afo_error(AFO_ERR_FORMAT, "%s: layer_types must list %lld layer types", file, (long long)c->layers);
        for (int i = 0; i < c->layers; i++) {
            const cJSON *t = cJSON_GetArrayItem(types, i);
            const char *s = cJSON_IsString(t) ? t->valuestring : "";
            if (strcmp(s, "sliding_attention") != 0 && strcmp(s, "full_attention") != 0)
                return afo_error(AFO_ERR_UNSUPPORTED, "%s: layer_types[%d] \"%s\" is not supported", file, i, s);
            c->layer_sliding[i] = strcmp(s, "sliding_attention") == 0;
        }
    } else if (arch->flags & ARCH_WINDOW_ALL) {
        for (int i = 0; i < c->layers; i++) c->layer_sliding[i] = true;
    } else if (arch->flags & ARCH_WINDOW_QWEN) {
        int64_t from = json_int(j, "max_window_layers", c->layers);
        for (int i = 0; i < c->layers; i++) c->layer_sliding[i] = json_bool(j, "use_sliding_window", false) && i >= from;
    }
    if (!c->sliding_window)
        for (int i = 0; i < c->layers; i++) c->layer_sliding[i] = false;
    return AFO_OK;
}

/* rope_parameters (5.x; per layer type or one for all) or rope_scaling (4.x). */
static afo_status parse_rope(model_config *c, const cJSON *j) {
    const cJSON *rp = field(j, "rope_parameters");
    const cJSON *full = rp, *sliding = rp;
    if (rp && (field(rp, "full_attention") || field(rp, "sliding_attention"))) {
        full = field(rp, "full_attention");
        sliding = field(rp, "sliding_attention");
        if (!sliding) sliding = full;
    } else if (!rp) {
        full = sliding = field(j, "rope_scaling");
    }
    AFO_TRY(rope_parse(full, j, &c->rope_full));
    return rope_parse(sliding, j, &c->rope_sliding);
}

/* The object the fields are read from: config.json's text_config (for
 * multimodal checkpoints) over config.json over the architecture's class
 * defaults. */
static cJSON *effective_config(const cJSON *root, const arch_desc *arch) {
    cJSON *j = arch->defaults ? cJSON_Parse(arch->defaults) : cJSON_CreateObject();
    const cJSON *layers[2] = {root, field(root, "text_config")}, *e;
    for (int l = 0; j && l < 2; l++)
        cJSON_ArrayForEach(e, layers[l]) {
            cJSON_DeleteItemFromObjectCaseSensitive(j, e->string);
            cJSON_AddItemToObject(j, e->string, cJSON_Duplicate(e, 1));
        }
    if (!j) afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory reading a config");
    return j;
}

static afo_status parse_common(model_config *c, const cJSON *j, const arch_desc *arch, const char *file) {
    const char *keys[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"};
    int64_t *dst[] = {&c->vocab, &c->hidden, &c->intermediate, &c->layers, &c->heads};
    for (int i = 0; i < 5; i++) AFO_TRY(json_positive(j, keys[i], file, dst[i]));
    c->kv_heads = json_int(j, "num_key_value_heads", c->heads);
    c->head_dim = json_int(j, "head_dim", c->hidden / c->heads);
    if (c->kv_heads < 1 || c->heads % c->kv_heads || c->head_dim < 2 || c->head_dim % 2 ||
        (!field(j, "head_dim") && c->hidden % c->heads))
        return afo_error(AFO_ERR_FORMAT,
                         "%s: inconsistent attention shape (num_attention_heads %lld, num_key_value_heads %lld, "
                         "head_dim %lld)",
                         file, (long long)c->heads, (long long)c->kv_heads, (long long)c->head_dim);
    c->max_positions = json_int(j, "max_position_embeddings", 2048);
    c->eps = json_num(j, "rms_norm_eps", 1e-6);
    c->tie_embeddings = json_bool(j, "tie_word_embeddings", false);
    c->attention_bias = json_bool(j, "attention_bias", false);
    c->mlp_bias = json_bool(j, "mlp_bias", false);
    const cJSON *dt = field(j, "dtype");
    if (!dt) dt = field(j, "torch_dtype");
    int d = dt && cJSON_IsString(dt) ? afo_dtype_from_name(dt->valuestring) : AFO_FLOAT32;
    c->dtype = d >= 0 && afo_dtype_is_float((afo_dtype)d) ? (afo_dtype)d : AFO_FLOAT32;
    double partial =
        json_num(field(j, "rope_parameters"), "partial_rotary_factor", json_num(j, "partial_rotary_factor", 1.0));
    c->rotary_dims = (int64_t)((double)c->head_dim * partial) & ~(int64_t)1;
    if (c->rotary_dims < 2 || c->rotary_dims > c->head_dim)
        return afo_error(AFO_ERR_FORMAT, "%s: partial_rotary_factor %g gives no valid rotary dimensions", file,
                         partial);
    c->sliding_window = json_int(j, "sliding_window", 0);
    if (c->sliding_window < 0) c->sliding_window = 0;
    c->attn_scale = 1.0 / sqrt((double)c->head_dim);
    c->final_softcap = json_num(j, "final_logit_softcapping", 0.0);
    if (json_num(j, "attn_logit_softcapping", 0.0) != 0.0)
        return afo_error(AFO_ERR_UNSUPPORTED, "%s: attn_logit_softcapping is not supported", file);
    AFO_TRY(parse_activation(j, file, &c->act));
    AFO_TRY(parse_rope(c, j));
    AFO_TRY(parse_layer_types(c, j, arch, file));
    c->layer_moe = calloc((size_t)c->layers, sizeof(bool));
    if (!c->layer_moe) return afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory reading %s", file);
    c->gen = (afo_generation_config){.bos_token_id = -1, .pad_token_id = -1, .temperature = 1.0, .top_k = 50,
                                     .top_p = 1.0, .repetition_penalty = 1.0, .max_new_tokens = -1};
    parse_generation(j, &c->gen);
    return arch->configure ? arch->configure(c, j) : AFO_OK;
}

static afo_status parse_generation_file(model_config *c, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return AFO_OK; /* optional */
    fclose(f);
    cJSON *g = json_read_file(path);
    if (!g) return afo_last_status();
    parse_generation(g, &c->gen);
    cJSON_Delete(g);
    return AFO_OK;
}

afo_status config_load(const char *config_path, const char *gen_dir, model_config *c, const arch_desc **arch) {
    memset(c, 0, sizeof *c);
    cJSON *root = json_read_file(config_path), *j = NULL;
    if (!root) return afo_last_status();
    afo_status st;
    const cJSON *mt = field(root, "model_type");
    if (!mt || !cJSON_IsString(mt)) {
        st = afo_error(AFO_ERR_FORMAT, "%s: required field \"model_type\" is missing", config_path);
    } else if (!(*arch = arch_find(mt->valuestring))) {
        st = afo_last_status();
    } else if (!(j = effective_config(root, *arch))) {
        st = afo_last_status();
    } else {
        snprintf(c->model_type, sizeof c->model_type, "%s", mt->valuestring);
        c->multimodal = field(root, "text_config") != NULL;
        st = parse_common(c, j, *arch, config_path);
        if (st == AFO_OK && gen_dir) st = parse_generation_file(c, gen_dir);
        /* mlx-lm writes both keys with the same content; older files only
         * "quantization" */
        const cJSON *q = field(root, "quantization");
        if (!q) q = field(root, "quantization_config");
        if (st == AFO_OK && cJSON_IsObject(q) && !(c->quantization = cJSON_Duplicate(q, 1)))
            st = afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory reading %s", config_path);
    }
    cJSON_Delete(j);
    cJSON_Delete(root);
    if (st != AFO_OK) config_free(c);
    return st;
}

void config_free(model_config *c) {
    cJSON_Delete(c->quantization);
    c->quantization = NULL;
    free(c->layer_sliding);
    free(c->layer_moe);
    c->layer_sliding = c->layer_moe = NULL;
}
