/* GGUF export of llama-family models. The layout (GGUF v3): header, the
 * key-value metadata, tensor infos (name, dims innermost first, ggml type,
 * offset), padding to the alignment, then each tensor's data at its aligned
 * offset. Weights are read as float32 one tensor at a time, so the memory
 * needed is that of the largest tensor, not of the model. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "io/gguf.h"

#define GGUF_ALIGN 32
#define QK 32 /* elements per Q8_0 / Q4_0 block */

/* ---------------------------------------------------------------- key-value section */

void gguf_put(gguf_kv *kv, const void *data, size_t n) {
    if (kv->failed) return;
    if (kv->len + n > kv->cap) {
        size_t cap = kv->cap ? kv->cap : 4096;
        while (kv->len + n > cap) cap *= 2;
        uint8_t *grown = realloc(kv->p, cap);
        if (!grown) {
            kv->failed = true;
            return;
        }
        kv->p = grown;
        kv->cap = cap;
    }
    memcpy(kv->p + kv->len, data, n);
    kv->len += n;
}

/* GGUF is little-endian, as are the machines afo targets. */
void gguf_put_u32(gguf_kv *kv, uint32_t v) { gguf_put(kv, &v, 4); }
void gguf_put_u64(gguf_kv *kv, uint64_t v) { gguf_put(kv, &v, 8); }

void gguf_put_str(gguf_kv *kv, const char *s) {
    size_t n = strlen(s);
    gguf_put_u64(kv, n);
    gguf_put(kv, s, n);
}

static void kv_key(gguf_kv *kv, const char *key, uint32_t type) {
    gguf_put_str(kv, key);
    gguf_put_u32(kv, type);
    kv->count++;
}

void gguf_kv_string(gguf_kv *kv, const char *key, const char *v) {
    kv_key(kv, key, GGUF_STRING);
    gguf_put_str(kv, v);
}

void gguf_kv_u32(gguf_kv *kv, const char *key, uint32_t v) {
    kv_key(kv, key, GGUF_UINT32);
    gguf_put_u32(kv, v);
}

void gguf_kv_f32(gguf_kv *kv, const char *key, float v) {
    kv_key(kv, key, GGUF_FLOAT32);
    gguf_put(kv, &v, 4);
}

void gguf_kv_bool(gguf_kv *kv, const char *key, bool v) {
    uint8_t b = v;
    kv_key(kv, key, GGUF_BOOL);
    gguf_put(kv, &b, 1);
}

void gguf_kv_array(gguf_kv *kv, const char *key, uint32_t type, uint64_t count) {
    kv_key(kv, key, GGUF_ARRAY);
    gguf_put_u32(kv, type);
    gguf_put_u64(kv, count);
}

cJSON *gguf_read_json(const char *path, bool optional) {
    char *text = NULL;
    if (afo_read_file(path, 0, optional, &text, NULL) != AFO_OK || !text) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) return afo_error_null(AFO_ERR_FORMAT, "gguf: cannot parse '%s'", path);
    return j;
}

/* ---------------------------------------------------------------- block quantizers */

/* v converted to int8_t as a C cast truncates, defined for every float:
 * ggml's reference code casts directly, which for a NaN weight (or an
 * infinite one, whose block's 1/d is 0) is undefined behaviour. Those
 * levels become 0; finite weights keep llama.cpp's bytes. */
static int8_t to_int8(float v) {
    if (!(v == v)) return 0;
    return (int8_t)(v < -128.0f ? -128.0f : v > 127.0f ? 127.0f : v);
}

/* ggml's quantize_row_q8_0_ref: d = max|x| / 127, q = round(x / d) computed
 * as x * (1/d) so that the bytes match llama.cpp's own conversion. */
void afo_gguf_quantize_q8_0(const float *x, uint8_t *dst, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK, dst += 2 + QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = afo_f32_to_f16(d);
        memcpy(dst, &h, 2);
        for (int j = 0; j < QK; j++) dst[2 + j] = (uint8_t)to_int8(roundf(x[j] * id));
    }
}

/* ggml's quantize_row_q4_0_ref: d = (the value of largest magnitude) / -8, so
 * that value maps to level 0 exactly; levels are truncations of x/d + 8.5
 * capped at 15. Byte j holds element j (low nibble) and j + 16 (high). */
void afo_gguf_quantize_q4_0(const float *x, uint8_t *dst, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK, dst += 2 + QK / 2) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = afo_f32_to_f16(d);
        memcpy(dst, &h, 2);
        for (int j = 0; j < QK / 2; j++) {
            int lo = to_int8(x[j] * id + 8.5f), hi = to_int8(x[j + QK / 2] * id + 8.5f);
            dst[2 + j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
        }
    }
}

int afo_gguf_type_from_name(const char *name) {
    static const struct { const char *name; afo_gguf_type t; } names[] = {
        {"f32", AFO_GGUF_F32}, {"f16", AFO_GGUF_F16}, {"bf16", AFO_GGUF_BF16},
        {"q8_0", AFO_GGUF_Q8_0}, {"q4_0", AFO_GGUF_Q4_0}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(name, names[i].name) == 0) return (int)names[i].t;
    return -1;
}

const char *afo_gguf_type_name(afo_gguf_type t) {
    switch (t) {
    case AFO_GGUF_F32: return "f32";
    case AFO_GGUF_F16: return "f16";
    case AFO_GGUF_BF16: return "bf16";
    case AFO_GGUF_Q8_0: return "q8_0";
    case AFO_GGUF_Q4_0: return "q4_0";
    }
    return "?";
}

/* llama_ftype: what general.file_type says the file mostly holds. */
static uint32_t file_type(afo_gguf_type t) {
    switch (t) {
    case AFO_GGUF_F32: return 0;
    case AFO_GGUF_F16: return 1;
    case AFO_GGUF_Q4_0: return 2;
    case AFO_GGUF_Q8_0: return 7;
    case AFO_GGUF_BF16: return 32;
    }
    return 0;
}

static size_t type_bytes(afo_gguf_type t, int64_t n) {
    switch (t) {
    case AFO_GGUF_F32: return (size_t)n * 4;
    case AFO_GGUF_F16:
    case AFO_GGUF_BF16: return (size_t)n * 2;
    case AFO_GGUF_Q8_0: return (size_t)(n / QK) * (2 + QK);
    case AFO_GGUF_Q4_0: return (size_t)(n / QK) * (2 + QK / 2);
    }
    return 0;
}

/* ---------------------------------------------------------------- tensors */

typedef struct gguf_tensor {
    char name[64], src[128]; /* GGUF and Hugging Face names */
    int ndim;
    int64_t ne[2];           /* innermost first: [in, out] for a [out, in] matrix */
    afo_gguf_type type;
    int permute_heads;       /* > 0: rows regrouped from halves to pairs per head */
    uint64_t offset;
} gguf_tensor;

typedef struct export_ctx {
    afo_weights *w;
    gguf_tensor *t;
    int n, cap;
    afo_gguf_type type;
} export_ctx;

static bool has_weight(const afo_weights *w, const char *name) {
    for (int i = 0; i < afo_weights_count(w); i++)
        if (strcmp(afo_weights_name(w, i), name) == 0) return true;
    return false;
}

/* Queues HF tensor `src` as `name`; absent optional tensors are skipped. */
static afo_status add_tensor(export_ctx *c, const char *src, const char *name, bool optional, int permute_heads) {
    if (!has_weight(c->w, src)) {
        if (optional) return AFO_OK;
        return afo_error(AFO_ERR_FORMAT, "gguf: the model has no tensor '%s'", src);
    }
    afo_array *a = afo_weights_get(c->w, src);
    if (!a) return afo_last_status();
    int ndim = afo_array_ndim(a);
    const int64_t *shape = afo_array_shape(a);
    gguf_tensor t = {.ndim = ndim, .permute_heads = permute_heads};
    if (ndim == 1) t.ne[0] = shape[0], t.ne[1] = 1;
    else if (ndim == 2) t.ne[0] = shape[1], t.ne[1] = shape[0];
    afo_release(a);
    if (ndim < 1 || ndim > 2) return afo_error(AFO_ERR_UNSUPPORTED, "gguf: tensor '%s' has %d dimensions", src, ndim);
    if (permute_heads > 0 && t.ne[1] % (2 * permute_heads) != 0)
        return afo_error(AFO_ERR_FORMAT, "gguf: '%s' has %lld rows, not a multiple of 2 x %d heads", src,
                         (long long)t.ne[1], permute_heads);
    /* llama.cpp keeps vectors in float32; block types need whole blocks per row */
    t.type = ndim == 1 ? AFO_GGUF_F32 : c->type;
    if ((t.type == AFO_GGUF_Q8_0 || t.type == AFO_GGUF_Q4_0) && t.ne[0] % QK != 0) t.type = AFO_GGUF_F16;
    snprintf(t.name, sizeof t.name, "%s", name);
    snprintf(t.src, sizeof t.src, "%s", src);
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        gguf_tensor *grown = realloc(c->t, sizeof *grown * (size_t)cap);
        if (!grown) return afo_error(AFO_ERR_OUT_OF_MEMORY, "gguf: out of memory");
        c->t = grown;
        c->cap = cap;
    }
    c->t[c->n++] = t;
    return AFO_OK;
}

typedef struct arch_info {
    const char *arch; /* llama.cpp's architecture name */
    bool permute_qk;  /* llama.cpp's llama arch applies RoPE to interleaved pairs */
    int64_t heads, kv_heads, head_dim, ffn;
} arch_info;

static afo_status add_layer_tensors(export_ctx *c, const arch_info *ai, int layers) {
    static const struct { const char *src, *dst; bool optional; char permute; } map[] = {
        {"input_layernorm.weight", "attn_norm.weight", false, 0},
        {"self_attn.q_proj.weight", "attn_q.weight", false, 'q'},
        {"self_attn.q_proj.bias", "attn_q.bias", true, 'q'},
        {"self_attn.k_proj.weight", "attn_k.weight", false, 'k'},
        {"self_attn.k_proj.bias", "attn_k.bias", true, 'k'},
        {"self_attn.v_proj.weight", "attn_v.weight", false, 0},
        {"self_attn.v_proj.bias", "attn_v.bias", true, 0},
        {"self_attn.o_proj.weight", "attn_output.weight", false, 0},
        {"self_attn.o_proj.bias", "attn_output.bias", true, 0},
        {"self_attn.q_norm.weight", "attn_q_norm.weight", true, 0},
        {"self_attn.k_norm.weight", "attn_k_norm.weight", true, 0},
        {"post_attention_layernorm.weight", "ffn_norm.weight", false, 0},
        {"mlp.gate_proj.weight", "ffn_gate.weight", false, 0},
        {"mlp.up_proj.weight", "ffn_up.weight", false, 0},
        {"mlp.down_proj.weight", "ffn_down.weight", false, 0},
    };
    for (int l = 0; l < layers; l++)
        for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
            char src[128], dst[64];
            snprintf(src, sizeof src, "model.layers.%d.%s", l, map[i].src);
            snprintf(dst, sizeof dst, "blk.%d.%s", l, map[i].dst);
            int heads = !ai->permute_qk ? 0 : map[i].permute == 'q' ? (int)ai->heads
                                          : map[i].permute == 'k' ? (int)ai->kv_heads : 0;
            AFO_TRY(add_tensor(c, src, dst, map[i].optional, heads));
        }
    return AFO_OK;
}

/* Rows h*hd + s*hd/2 + i (RoPE pairing halves, as Hugging Face stores Q and K)
 * move to h*hd + 2i + s (pairing neighbours): convert_hf_to_gguf's permute. */
static void permute_rows(const float *src, float *dst, int64_t rows, int64_t cols, int heads) {
    int64_t hd = rows / heads, half = hd / 2;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t s = 0; s < 2; s++)
            for (int64_t i = 0; i < half; i++)
                memcpy(dst + (h * hd + 2 * i + s) * cols, src + (h * hd + s * half + i) * cols,
                       sizeof(float) * (size_t)cols);
}

/* Reads, permutes and encodes one tensor into out (type_bytes of it). */
static afo_status encode_tensor(afo_weights *w, const gguf_tensor *t, uint8_t *out) {
    int64_t n = t->ne[0] * t->ne[1];
    float *x = malloc(sizeof(float) * (size_t)n * (t->permute_heads ? 2 : 1));
    afo_array *a = afo_weights_get(w, t->src);
    afo_status s = !x ? afo_error(AFO_ERR_OUT_OF_MEMORY, "gguf: out of memory for '%s'", t->src)
                   : !a ? afo_last_status()
                        : afo_array_read(a, AFO_FLOAT32, x, sizeof(float) * (size_t)n);
    afo_release(a);
    if (s != AFO_OK) {
        free(x);
        return s;
    }
    const float *v = x;
    if (t->permute_heads) {
        permute_rows(x, x + n, t->ne[1], t->ne[0], t->permute_heads);
        v = x + n;
    }
    switch (t->type) {
    case AFO_GGUF_F32: memcpy(out, v, sizeof(float) * (size_t)n); break;
    case AFO_GGUF_F16:
    case AFO_GGUF_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = t->type == AFO_GGUF_F16 ? afo_f32_to_f16(v[i]) : afo_f32_to_bf16(v[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case AFO_GGUF_Q8_0: afo_gguf_quantize_q8_0(v, out, n); break;
    case AFO_GGUF_Q4_0: afo_gguf_quantize_q4_0(v, out, n); break;
    }
    free(x);
    return AFO_OK;
}

/* ---------------------------------------------------------------- metadata */

static double num(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* Architecture, head geometry and hyperparameters from config.json. */
static afo_status model_metadata(const afo_model *m, const cJSON *cfg, const char *name, afo_gguf_type type,
                                 gguf_kv *kv, arch_info *ai) {
    const char *mt = afo_model_type(m);
    if (strcmp(mt, "llama") == 0 || strcmp(mt, "mistral") == 0) *ai = (arch_info){.arch = "llama", .permute_qk = true};
    else if (strcmp(mt, "qwen2") == 0 || strcmp(mt, "qwen3") == 0) *ai = (arch_info){.arch = mt};
    else
        return afo_error(AFO_ERR_UNSUPPORTED, "gguf: export supports model types llama, mistral, qwen2 and qwen3, not '%s'",
                         mt);
    /* transformers 5.x nests RoPE in rope_parameters, 4.x has rope_theta and rope_scaling at the top */
    const cJSON *rope = cJSON_GetObjectItemCaseSensitive(cfg, "rope_parameters");
    if (!cJSON_IsObject(rope)) rope = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(rope, "rope_type");
    if (!rt) rt = cJSON_GetObjectItemCaseSensitive(rope, "type");
    if (cJSON_IsString(rt) && strcmp(rt->valuestring, "default") != 0)
        return afo_error(AFO_ERR_UNSUPPORTED, "gguf: RoPE scaling '%s' is not exported yet", rt->valuestring);
    double theta = num(rope, "rope_theta", num(cfg, "rope_theta", 10000.0));
    int64_t hidden = afo_model_hidden_size(m);
    ai->heads = (int64_t)num(cfg, "num_attention_heads", 0);
    ai->kv_heads = (int64_t)num(cfg, "num_key_value_heads", (double)ai->heads);
    ai->ffn = (int64_t)num(cfg, "intermediate_size", 0);
    if (ai->heads <= 0 || ai->kv_heads <= 0 || ai->ffn <= 0)
        return afo_error(AFO_ERR_FORMAT, "gguf: config.json lacks num_attention_heads or intermediate_size");
    ai->head_dim = (int64_t)num(cfg, "head_dim", (double)(hidden / ai->heads));

    char key[96];
    const char *a = ai->arch;
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
    gguf_kv_string(kv, "general.architecture", a);
    gguf_kv_string(kv, "general.name", name);
    gguf_kv_u32(kv, "general.file_type", file_type(type));
    gguf_kv_u32(kv, "general.quantization_version", 2);
    gguf_kv_u32(kv, "general.alignment", GGUF_ALIGN);
    gguf_kv_u32(kv, KEY("vocab_size"), (uint32_t)afo_model_vocab_size(m));
    gguf_kv_u32(kv, KEY("context_length"), (uint32_t)afo_model_max_positions(m));
    gguf_kv_u32(kv, KEY("embedding_length"), (uint32_t)hidden);
    gguf_kv_u32(kv, KEY("block_count"), (uint32_t)afo_model_num_layers(m));
    gguf_kv_u32(kv, KEY("feed_forward_length"), (uint32_t)ai->ffn);
    gguf_kv_u32(kv, KEY("attention.head_count"), (uint32_t)ai->heads);
    gguf_kv_u32(kv, KEY("attention.head_count_kv"), (uint32_t)ai->kv_heads);
    if (ai->head_dim * ai->heads != hidden) {
        gguf_kv_u32(kv, KEY("attention.key_length"), (uint32_t)ai->head_dim);
        gguf_kv_u32(kv, KEY("attention.value_length"), (uint32_t)ai->head_dim);
    }
    gguf_kv_u32(kv, KEY("rope.dimension_count"), (uint32_t)ai->head_dim);
    gguf_kv_f32(kv, KEY("rope.freq_base"), (float)theta);
    gguf_kv_f32(kv, KEY("attention.layer_norm_rms_epsilon"), (float)num(cfg, "rms_norm_eps", 1e-6));
#undef KEY
    return AFO_OK;
}

/* ---------------------------------------------------------------- the file */

static afo_status write_all(FILE *f, const void *p, size_t n, const char *path) {
    if (n && fwrite(p, 1, n, f) != n) return afo_error(AFO_ERR_IO, "gguf: cannot write '%s': %s", path, strerror(errno));
    return AFO_OK;
}

static afo_status write_padding(FILE *f, uint64_t pos, const char *path) {
    static const uint8_t zeros[GGUF_ALIGN];
    return write_all(f, zeros, (size_t)((GGUF_ALIGN - pos % GGUF_ALIGN) % GGUF_ALIGN), path);
}

static afo_status write_file(FILE *f, const char *path, export_ctx *c, const gguf_kv *kv) {
    gguf_kv head = {0};
    gguf_put(&head, "GGUF", 4);
    gguf_put_u32(&head, 3);
    gguf_put_u64(&head, (uint64_t)c->n);
    gguf_put_u64(&head, kv->count);
    gguf_put(&head, kv->p, kv->len);
    uint64_t offset = 0;
    size_t largest = 0;
    for (int i = 0; i < c->n; i++) {
        gguf_tensor *t = &c->t[i];
        size_t bytes = type_bytes(t->type, t->ne[0] * t->ne[1]);
        t->offset = offset;
        offset += (bytes + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
        if (bytes > largest) largest = bytes;
        gguf_put_str(&head, t->name);
        gguf_put_u32(&head, (uint32_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) gguf_put_u64(&head, (uint64_t)t->ne[d]);
        gguf_put_u32(&head, (uint32_t)t->type);
        gguf_put_u64(&head, t->offset);
    }
    uint8_t *buf = head.failed ? NULL : malloc(largest ? largest : 1);
    afo_status s = !buf ? afo_error(AFO_ERR_OUT_OF_MEMORY, "gguf: out of memory")
                        : write_all(f, head.p, head.len, path);
    if (s == AFO_OK) s = write_padding(f, head.len, path);
    for (int i = 0; s == AFO_OK && i < c->n; i++) {
        size_t bytes = type_bytes(c->t[i].type, c->t[i].ne[0] * c->t[i].ne[1]);
        s = encode_tensor(c->w, &c->t[i], buf);
        if (s == AFO_OK) s = write_all(f, buf, bytes, path);
        if (s == AFO_OK) s = write_padding(f, bytes, path);
    }
    free(buf);
    free(head.p);
    return s;
}

/* The file goes under a temporary name beside out_path and is renamed into
 * place once complete, so a reader never sees a partial model. */
static afo_status write_atomically(const char *out_path, export_ctx *c, const gguf_kv *kv) {
    size_t n = strlen(out_path) + 8;
    char *tmp = malloc(n);
    if (!tmp) return afo_error(AFO_ERR_OUT_OF_MEMORY, "gguf: out of memory");
    snprintf(tmp, n, "%s.tmp", out_path);
    FILE *f = fopen(tmp, "wb");
    afo_status s = f ? write_file(f, tmp, c, kv)
                     : afo_error(AFO_ERR_IO, "gguf: cannot create '%s': %s", tmp, strerror(errno));
    if (f) {
        if (s == AFO_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
            s = afo_error(AFO_ERR_IO, "gguf: cannot write '%s': %s", tmp, strerror(errno));
        if (fclose(f) != 0 && s == AFO_OK) s = afo_error(AFO_ERR_IO, "gguf: cannot close '%s'", tmp);
        if (s == AFO_OK && rename(tmp, out_path) != 0)
            s = afo_error(AFO_ERR_IO, "gguf: cannot rename '%s' to '%s': %s", tmp, out_path, strerror(errno));
        if (s != AFO_OK) remove(tmp);
    }
    free(tmp);
    return s;
}

afo_status afo_gguf_export(const char *model_dir, const char *out_path, afo_gguf_type type) {
    if (!model_dir || !out_path || afo_gguf_type_name(type)[0] == '?')
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "gguf: export needs a model, an output path and a known type");
    /* refused before the export's work, not by its final rename */
    struct stat sb;
    if (stat(out_path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return afo_error(AFO_ERR_IO, "gguf: %s is a directory; give the file to write, such as %s/model.gguf",
                         out_path, out_path);
    afo_model *m = NULL;
    AFO_TRY(afo_model_load(model_dir, NULL, &m));
    const char *dir = afo_model_dir(m);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *cfg = gguf_read_json(path, false);
    export_ctx c = {.type = type};
    gguf_kv kv = {0};
    arch_info ai = {0};
    const char *slash = strrchr(dir, '/');
    const char *name = slash && slash[1] ? slash + 1 : dir;
    afo_status s = cfg ? model_metadata(m, cfg, name, type, &kv, &ai) : afo_last_status();
    if (s == AFO_OK) s = gguf_add_vocab(&kv, dir, afo_model_vocab_size(m), afo_model_generation_config(m));
    if (s == AFO_OK && kv.failed) s = afo_error(AFO_ERR_OUT_OF_MEMORY, "gguf: out of memory for the metadata");
    if (s == AFO_OK && !(c.w = afo_weights_open(dir))) s = afo_last_status();
    if (s == AFO_OK) s = add_tensor(&c, "model.embed_tokens.weight", "token_embd.weight", false, 0);
    if (s == AFO_OK) s = add_layer_tensors(&c, &ai, afo_model_num_layers(m));
    if (s == AFO_OK) s = add_tensor(&c, "model.norm.weight", "output_norm.weight", false, 0);
    /* a tied head is token_embd itself: llama.cpp falls back to it when output.weight is absent */
    if (s == AFO_OK && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings")))
        s = add_tensor(&c, "lm_head.weight", "output.weight", true, 0);
    if (s == AFO_OK) s = write_atomically(out_path, &c, &kv);
    if (c.w) afo_weights_close(c.w);
    free(c.t);
    free(kv.p);
    cJSON_Delete(cfg);
    afo_model_free(m);
    return s;
}
