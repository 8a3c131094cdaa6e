/* GGUF export: files written for the demo model and the llama-family
 * fixtures are read back with a small independent GGUF reader (header,
 * metadata, tensor infos, alignment, data) and checked against the source
 * weights; the block quantizers against hand-worked blocks; and the errors. */
#define _GNU_SOURCE
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "afo/afo.h"
#include "core/internal.h"
#include "support/test.h"

#define DEMO "models/tiny-classics"

static char g_dir[64];

/* ---------------------------------------------------------------- reader */

typedef struct rd_kv {
    char key[96];
    uint32_t type, elem_type; /* elem_type: for arrays */
    uint64_t count;           /* array length */
    const uint8_t *value;     /* scalar value, string (u64 length first) or first array element */
} rd_kv;

typedef struct rd_tensor {
    char name[64];
    uint32_t ndim, type;
    uint64_t ne[4], offset;
} rd_tensor;

typedef struct gguf_file {
    uint8_t *data;
    size_t size, pos;
    bool bad;
    uint32_t version;
    int nkv, nt;
    rd_kv kv[64];
    rd_tensor t[128];
    size_t data_start;
} gguf_file;

static const uint8_t *take(gguf_file *g, size_t n) {
    if (g->bad || g->pos + n > g->size) {
        g->bad = true;
        return NULL;
    }
    g->pos += n;
    return g->data + g->pos - n;
}

static uint64_t take_u(gguf_file *g, size_t n) {
    uint64_t v = 0;
    const uint8_t *p = take(g, n);
    if (p) memcpy(&v, p, n);
    return v;
}

static void take_str(gguf_file *g, char *dst, size_t cap) {
    uint64_t n = take_u(g, 8);
    const uint8_t *p = take(g, n);
    if (!p || n >= cap) {
        g->bad = true;
        return;
    }
    memcpy(dst, p, n);
    dst[n] = '\0';
}

static size_t scalar_size(uint32_t type) {
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < 13 ? sizes[type] : 0;
}

static void skip_value(gguf_file *g, uint32_t type) {
    if (type == 8) take(g, take_u(g, 8));
    else if (scalar_size(type)) take(g, scalar_size(type));
    else g->bad = true;
}

static bool gguf_parse(const char *path, gguf_file *g) {
    memset(g, 0, sizeof *g);
    if (afo_read_file(path, 0, false, (char **)&g->data, &g->size) != AFO_OK) return false;
    const uint8_t *magic = take(g, 4);
    if (!magic || memcmp(magic, "GGUF", 4) != 0) return false;
    g->version = (uint32_t)take_u(g, 4);
    uint64_t nt = take_u(g, 8), nkv = take_u(g, 8);
    if (nt > 128 || nkv > 64) return false;
    g->nt = (int)nt, g->nkv = (int)nkv;
    for (int i = 0; i < g->nkv && !g->bad; i++) {
        rd_kv *kv = &g->kv[i];
        take_str(g, kv->key, sizeof kv->key);
        kv->type = (uint32_t)take_u(g, 4);
        if (kv->type == 9) {
            kv->elem_type = (uint32_t)take_u(g, 4);
            kv->count = take_u(g, 8);
            kv->value = g->data + g->pos;
            for (uint64_t k = 0; k < kv->count && !g->bad; k++) skip_value(g, kv->elem_type);
        } else {
            kv->value = g->data + g->pos;
            skip_value(g, kv->type);
        }
    }
    for (int i = 0; i < g->nt && !g->bad; i++) {
        rd_tensor *t = &g->t[i];
        take_str(g, t->name, sizeof t->name);
        t->ndim = (uint32_t)take_u(g, 4);
        if (t->ndim > 4) return false;
        for (uint32_t d = 0; d < t->ndim; d++) t->ne[d] = take_u(g, 8);
        t->type = (uint32_t)take_u(g, 4);
        t->offset = take_u(g, 8);
    }
    g->data_start = (g->pos + 31) / 32 * 32;
    return !g->bad;
}

static const rd_kv *kv_find(const gguf_file *g, const char *key) {
    for (int i = 0; i < g->nkv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

static uint32_t kv_u32(const gguf_file *g, const char *key) {
    const rd_kv *kv = kv_find(g, key);
    uint32_t v = 0xffffffffu;
    if (kv && (kv->type == 4 || kv->type == 5)) memcpy(&v, kv->value, 4);
    return v;
}

static float kv_f32(const gguf_file *g, const char *key) {
    const rd_kv *kv = kv_find(g, key);
    float v = NAN;
    if (kv && kv->type == 6) memcpy(&v, kv->value, 4);
    return v;
}

static bool kv_str_is(const gguf_file *g, const char *key, const char *want) {
    const rd_kv *kv = kv_find(g, key);
    if (!kv || kv->type != 8) return false;
    uint64_t n;
    memcpy(&n, kv->value, 8);
    return n == strlen(want) && memcmp(kv->value + 8, want, n) == 0;
}

static const rd_tensor *tensor(const gguf_file *g, const char *name) {
    for (int i = 0; i < g->nt; i++)
        if (strcmp(g->t[i].name, name) == 0) return &g->t[i];
    return NULL;
}

static size_t type_size(uint32_t type, uint64_t n) {
    switch (type) {
    case 0: return n * 4;
    case 1:
    case 30: return n * 2;
    case 8: return n / 32 * 34;
    case 2: return n / 32 * 18;
    }
    return 0;
}

/* Tensor t dequantized into float32 (rows of ne[0]). */
static float *dequant(const gguf_file *g, const rd_tensor *t) {
    uint64_t n = t->ne[0] * (t->ndim > 1 ? t->ne[1] : 1);
    const uint8_t *p = g->data + g->data_start + t->offset;
    float *x = malloc(sizeof(float) * n);
    for (uint64_t i = 0; i < n; i++) {
        uint16_t h;
        switch (t->type) {
        case 0: memcpy(&x[i], p + 4 * i, 4); break;
        case 1: memcpy(&h, p + 2 * i, 2), x[i] = afo_f16_to_f32(h); break;
        case 30: memcpy(&h, p + 2 * i, 2), x[i] = afo_bf16_to_f32(h); break;
        case 8: {
            const uint8_t *b = p + i / 32 * 34;
            memcpy(&h, b, 2);
            x[i] = afo_f16_to_f32(h) * (int8_t)b[2 + i % 32];
            break;
        }
        case 2: {
            const uint8_t *b = p + i / 32 * 18;
            int j = (int)(i % 32);
            memcpy(&h, b, 2);
            int q = j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4;
            x[i] = afo_f16_to_f32(h) * (float)(q - 8);
            break;
        }
        }
    }
    return x;
}

/* The original weight, float32, rows permuted back from llama.cpp's
 * interleaved layout when heads > 0. */
static float *original(const char *dir, const char *name, int heads, int64_t *n) {
    afo_weights *w = afo_weights_open(dir);
    afo_array *a = afo_weights_get(w, name);
    *n = afo_array_size(a);
    float *x = malloc(sizeof(float) * (size_t)*n);
    afo_array_read(a, AFO_FLOAT32, x, sizeof(float) * (size_t)*n);
    if (heads > 0) {
        int64_t rows = afo_array_dim(a, 0), cols = *n / rows, hd = rows / heads;
        float *y = malloc(sizeof(float) * (size_t)*n);
        for (int64_t h = 0; h < heads; h++)
            for (int64_t s = 0; s < 2; s++)
                for (int64_t i = 0; i < hd / 2; i++)
                    memcpy(y + (h * hd + 2 * i + s) * cols, x + (h * hd + s * hd / 2 + i) * cols, sizeof(float) * cols);
        free(x);
        x = y;
    }
    afo_release(a);
    afo_weights_close(w);
    return x;
}

/* Largest error over blocks of 32, relative to each block's scale bound:
 * Q8_0 rounds to within d/2, Q4_0 within d (the top level is clipped),
 * plus the fp16 rounding of d; f16/bf16 must round exactly. */
static double worst_error(const float *orig, const float *got, int64_t n, uint32_t type) {
    double worst = 0;
    for (int64_t b = 0; b < n; b += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(orig[b + j]));
        for (int j = 0; j < 32; j++) {
            double want = orig[b + j], e;
            if (type == 1) e = fabs(got[b + j] - afo_f16_to_f32(afo_f32_to_f16(orig[b + j]))) * 1e9;
            else if (type == 30) e = fabs(got[b + j] - afo_bf16_to_f32(afo_f32_to_bf16(orig[b + j]))) * 1e9;
            else if (type == 0) e = fabs(got[b + j] - want) * 1e9;
            else {
                double d = type == 8 ? amax / 127.0 : amax / 8.0, bound = (type == 8 ? 0.5 : 1.0) * d + 128 * d / 2048;
                e = bound > 0 ? fabs(got[b + j] - want) / bound : fabs(got[b + j] - want) * 1e9;
            }
            if (e > worst) worst = e;
        }
    }
    return worst;
}

/* ---------------------------------------------------------------- tests */

static void check_layout(const gguf_file *g) {
    CHECK(g->version == 3);
    CHECK(g->data_start % 32 == 0);
    for (int i = 0; i < g->nt; i++) {
        const rd_tensor *t = &g->t[i];
        size_t bytes = type_size(t->type, t->ne[0] * (t->ndim > 1 ? t->ne[1] : 1));
        CHECK_MSG(t->offset % 32 == 0 && g->data_start + t->offset + bytes <= g->size, "%s", t->name);
        CHECK_MSG(bytes > 0, "%s has type %u", t->name, t->type);
    }
}

static void test_demo_model(void) {
    static const struct { const char *name; afo_gguf_type type; uint32_t ftype; } types[] = {
        {"f16", AFO_GGUF_F16, 1}, {"bf16", AFO_GGUF_BF16, 32}, {"q8_0", AFO_GGUF_Q8_0, 7}, {"q4_0", AFO_GGUF_Q4_0, 2}};
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        char path[128];
        snprintf(path, sizeof path, "%s/demo-%s.gguf", g_dir, types[k].name);
        CHECK_MSG(afo_gguf_export(DEMO, path, types[k].type) == AFO_OK, "%s", afo_last_error());
        gguf_file g;
        CHECK(gguf_parse(path, &g));
        check_layout(&g);
        CHECK(kv_str_is(&g, "general.architecture", "llama"));
        CHECK(kv_str_is(&g, "general.name", "tiny-classics"));
        CHECK(kv_u32(&g, "general.file_type") == types[k].ftype);
        CHECK(kv_u32(&g, "llama.block_count") == 6 && kv_u32(&g, "llama.embedding_length") == 256);
        CHECK(kv_u32(&g, "llama.feed_forward_length") == 768 && kv_u32(&g, "llama.context_length") == 1024);
        CHECK(kv_u32(&g, "llama.attention.head_count") == 8 && kv_u32(&g, "llama.attention.head_count_kv") == 4);
        CHECK(!kv_find(&g, "llama.attention.key_length")); /* head_dim = hidden / heads */
        CHECK(kv_f32(&g, "llama.rope.freq_base") == 10000.0f);
        CHECK(kv_f32(&g, "llama.attention.layer_norm_rms_epsilon") == 1e-5f);
        CHECK(kv_str_is(&g, "tokenizer.ggml.model", "gpt2") && kv_str_is(&g, "tokenizer.ggml.pre", "gpt-2"));
        const rd_kv *tokens = kv_find(&g, "tokenizer.ggml.tokens"), *merges = kv_find(&g, "tokenizer.ggml.merges");
        CHECK(tokens && tokens->count == 4096 && merges && merges->count > 1000);
        CHECK(tokens && memcmp(tokens->value, "\5\0\0\0\0\0\0\0<pad>", 13) == 0);
        CHECK(merges && memcmp(merges->value + 8, "\xc4\xa0 t", 4) == 0); /* "Ġ t" */
        CHECK(kv_u32(&g, "tokenizer.ggml.bos_token_id") == 1 && kv_u32(&g, "tokenizer.ggml.eos_token_id") == 2);
        const rd_kv *bos = kv_find(&g, "tokenizer.ggml.add_bos_token");
        CHECK(bos && bos->type == 7 && bos->value[0] == 1);
        /* tied head: no output.weight; 9 tensors per layer */
        CHECK(g.nt == 1 + 6 * 9 + 1 && !tensor(&g, "output.weight"));
        const rd_tensor *emb = tensor(&g, "token_embd.weight"), *k0 = tensor(&g, "blk.0.attn_k.weight");
        const rd_tensor *norm = tensor(&g, "blk.5.ffn_norm.weight");
        CHECK(emb && emb->ndim == 2 && emb->ne[0] == 256 && emb->ne[1] == 4096 && emb->type == (uint32_t)types[k].type);
        CHECK(k0 && k0->ne[0] == 256 && k0->ne[1] == 128 && norm && norm->ndim == 1 && norm->type == 0);
        static const struct { const char *gguf, *hf; int heads; } cmp[] = {
            {"blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", 0},
            {"blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj.weight", 8},
            {"blk.2.attn_k.weight", "model.layers.2.self_attn.k_proj.weight", 4},
            {"blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight", 0},
            {"token_embd.weight", "model.embed_tokens.weight", 0},
            {"output_norm.weight", "model.norm.weight", 0},
        };
        for (size_t c = 0; c < sizeof cmp / sizeof *cmp; c++) {
            const rd_tensor *t = tensor(&g, cmp[c].gguf);
            if (!t) {
                CHECK_MSG(0, "no %s", cmp[c].gguf);
                continue;
            }
            int64_t n;
            float *want = original(DEMO, cmp[c].hf, cmp[c].heads, &n), *got = dequant(&g, t);
            double e = worst_error(want, got, n, t->type);
            CHECK_MSG(e <= 1.0, "%s (%s): error %.3g of the bound", cmp[c].gguf, types[k].name, e);
            free(want);
            free(got);
        }
        free(g.data);
    }
}

/* qwen2 biases, qwen3 q/k norms and head_dim != hidden/heads, an untied
 * head, no permutation for NEOX-RoPE architectures, no tokenizer. */
static void test_fixtures(void) {
    char dir[512], path[128];
    if (!test_shared_path("fixtures/models/qwen3", dir, sizeof dir)) return;
    snprintf(path, sizeof path, "%s/qwen3.gguf", g_dir);
    CHECK_MSG(afo_gguf_export(dir, path, AFO_GGUF_F16) == AFO_OK, "%s", afo_last_error());
    gguf_file g;
    CHECK(gguf_parse(path, &g));
    check_layout(&g);
    CHECK(kv_str_is(&g, "general.architecture", "qwen3") && kv_str_is(&g, "tokenizer.ggml.model", "none"));
    CHECK(kv_u32(&g, "qwen3.attention.key_length") == 32 && kv_u32(&g, "qwen3.attention.value_length") == 32);
    CHECK(kv_f32(&g, "qwen3.rope.freq_base") == 1e6f);
    const rd_tensor *qn = tensor(&g, "blk.1.attn_q_norm.weight"), *q = tensor(&g, "blk.0.attn_q.weight");
    CHECK(qn && qn->ne[0] == 32 && qn->type == 0 && tensor(&g, "blk.1.attn_k_norm.weight"));
    if (q) {
        int64_t n;
        float *want = original(dir, "model.layers.0.self_attn.q_proj.weight", 0, &n), *got = dequant(&g, q);
        CHECK(q->ne[0] == 64 && q->ne[1] == 128 && worst_error(want, got, n, q->type) == 0);
        free(want);
        free(got);
    }
    free(g.data);

    if (!test_shared_path("fixtures/models/qwen2", dir, sizeof dir)) return;
    snprintf(path, sizeof path, "%s/qwen2.gguf", g_dir);
    CHECK_MSG(afo_gguf_export(dir, path, AFO_GGUF_Q4_0) == AFO_OK, "%s", afo_last_error());
    CHECK(gguf_parse(path, &g));
    const rd_tensor *qb = tensor(&g, "blk.0.attn_q.bias"), *vb = tensor(&g, "blk.1.attn_v.bias");
    CHECK(kv_str_is(&g, "general.architecture", "qwen2") && qb && qb->type == 0 && qb->ndim == 1 && vb);
    CHECK(!kv_find(&g, "qwen2.attention.key_length") && !tensor(&g, "output.weight"));
    free(g.data);

    if (!test_shared_path("fixtures/models/mistral", dir, sizeof dir)) return;
    snprintf(path, sizeof path, "%s/mistral.gguf", g_dir);
    CHECK_MSG(afo_gguf_export(dir, path, AFO_GGUF_Q8_0) == AFO_OK, "%s", afo_last_error());
    CHECK(gguf_parse(path, &g));
    const rd_tensor *out = tensor(&g, "output.weight");
    CHECK(kv_str_is(&g, "general.architecture", "llama") && out && out->type == 8 && out->ne[1] == 512);
    free(g.data);
}

/* Hand-worked blocks: Q8_0 d = 127/127, roundf rounds halves away from 0;
 * Q4_0 d = -4/-8 = 0.5, levels trunc(x/d + 8.5) capped at 15. */
static void test_block_quantizers(void) {
    float x[32] = {0};
    x[0] = 127.0f, x[1] = -0.5f, x[2] = 2.5f, x[3] = -127.0f;
    uint8_t q8[34];
    afo_gguf_quantize_q8_0(x, q8, 32);
    CHECK(q8[0] == 0x00 && q8[1] == 0x3c); /* fp16 1.0 */
    CHECK((int8_t)q8[2] == 127 && (int8_t)q8[3] == -1 && (int8_t)q8[4] == 3 && (int8_t)q8[5] == -127 && q8[6] == 0);
    float y[32] = {0};
    y[0] = -4.0f, y[1] = 3.5f, y[2] = 1.2f, y[16] = 4.0f, y[17] = -0.3f;
    uint8_t q4[18];
    afo_gguf_quantize_q4_0(y, q4, 32);
    CHECK(q4[0] == 0x00 && q4[1] == 0x38); /* fp16 0.5 */
    /* byte 0: -4 -> 0 low, 4 -> 16 clipped to 15 high; byte 1: 3.5 -> 15, -0.3 -> 7.9 -> 7 */
    CHECK(q4[2] == 0xf0 && q4[3] == 0x7f && q4[4] == 0x8a && q4[5] == 0x88);
    memset(y, 0, sizeof y);
    afo_gguf_quantize_q4_0(y, q4, 32);
    /* all-zero block: d = 0 / -8 = -0 (as ggml writes it), every level 8 */
    CHECK(q4[0] == 0x00 && q4[1] == 0x80 && q4[2] == 0x88 && q4[17] == 0x88);
    /* non-finite weights (the sanitized build checks float-to-int casts):
     * a NaN's level is 0; an infinite weight makes 1/d 0, every finite
     * level 0 (q8_0) or 8 (q4_0) */
    x[5] = NAN;
    afo_gguf_quantize_q8_0(x, q8, 32);
    CHECK(q8[0] == 0x00 && q8[1] == 0x3c && (int8_t)q8[2] == 127 && q8[7] == 0);
    x[6] = INFINITY;
    afo_gguf_quantize_q8_0(x, q8, 32);
    CHECK(q8[0] == 0x00 && q8[1] == 0x7c && q8[2] == 0 && q8[7] == 0 && q8[8] == 0); /* fp16 inf */
    y[0] = -INFINITY, y[1] = 1.0f, y[2] = NAN;
    afo_gguf_quantize_q4_0(y, q4, 32);
    CHECK(q4[0] == 0x00 && q4[1] == 0x7c && q4[2] == 0x80 && q4[3] == 0x88 && q4[4] == 0x80);
}

static void test_errors(void) {
    char dir[512], path[128];
    snprintf(path, sizeof path, "%s/x.gguf", g_dir);
    if (test_shared_path("fixtures/models/gemma3", dir, sizeof dir)) {
        CHECK(afo_gguf_export(dir, path, AFO_GGUF_F16) == AFO_ERR_UNSUPPORTED);
        CHECK(strstr(afo_last_error(), "gemma3_text") != NULL);
    }
    CHECK(afo_gguf_export(DEMO, "/nonexistent-dir/x.gguf", AFO_GGUF_Q8_0) == AFO_ERR_IO);
    CHECK(strstr(afo_last_error(), "/nonexistent-dir/x.gguf") != NULL);
    /* a directory as the output is refused before the export's work, and
     * no temporary file is left beside it */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", g_dir);
    CHECK(afo_gguf_export(DEMO, g_dir, AFO_GGUF_Q8_0) == AFO_ERR_IO);
    CHECK_MSG(strstr(afo_last_error(), "is a directory") != NULL, "%s", afo_last_error());
    CHECK(access(tmp, F_OK) != 0);
    CHECK(afo_gguf_export(DEMO, path, (afo_gguf_type)5) == AFO_ERR_INVALID_ARGUMENT);
    CHECK(afo_gguf_export("no/such-model", path, AFO_GGUF_F16) != AFO_OK);
    CHECK(access(path, F_OK) != 0);
    CHECK(afo_gguf_type_from_name("q4_0") == AFO_GGUF_Q4_0 && afo_gguf_type_from_name("q4_k") == -1);
}

int main(void) {
    if (!test_temp_dir("gguf", g_dir, sizeof g_dir)) return 1;
    RUN(test_block_quantizers);
    RUN(test_demo_model);
    RUN(test_fixtures);
    RUN(test_errors);
    test_remove_tree(g_dir);
    return test_finish();
}
