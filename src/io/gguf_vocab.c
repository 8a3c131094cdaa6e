/* tokenizer.ggml.* from a Hugging Face tokenizer.json, read directly: afo's
 * tokenizer API does not expose merges. Byte-level BPE becomes llama.cpp's
 * "gpt2" model (tokens, token types, merges, and a pre-tokenizer name that
 * selects llama.cpp's split regex); BPE with byte fallback (SentencePiece
 * converted) becomes "llama" (tokens, scores, token types). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "io/gguf.h"

/* llama_token_type */
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };

static const cJSON *get(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

static bool contains_type(const cJSON *node, const char *type) {
    if (!node) return false;
    const cJSON *t = get(node, "type");
    if (cJSON_IsString(t) && strcmp(t->valuestring, type) == 0) return true;
    const cJSON *child;
    cJSON_ArrayForEach(child, get(node, "pretokenizers")) if (contains_type(child, type)) return true;
    return false;
}

/* The first Split regex of the pre-tokenizer, or NULL. */
static const char *split_regex(const cJSON *node) {
    if (!node) return NULL;
    const cJSON *t = get(node, "type"), *re = get(get(node, "pattern"), "Regex");
    if (cJSON_IsString(t) && strcmp(t->valuestring, "Split") == 0 && cJSON_IsString(re)) return re->valuestring;
    const cJSON *child;
    cJSON_ArrayForEach(child, get(node, "pretokenizers")) {
        const char *r = split_regex(child);
        if (r) return r;
    }
    return NULL;
}

/* llama.cpp names its split regexes after the models that introduced them
 * (llama-vocab.cpp); a byte-level tokenizer with no Split uses GPT-2's. */
static const char *pre_name(const cJSON *pre) {
    const char *re = split_regex(pre);
    if (!re) return contains_type(pre, "ByteLevel") ? "gpt-2" : "default";
    if (strstr(re, "\\p{N}{1,3}")) return "llama-bpe";
    if (strstr(re, "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*")) return "qwen2";
    return "default";
}

static int32_t token_id(const cJSON *vocab, const cJSON *added, const char *text) {
    const cJSON *v = get(vocab, text), *a;
    if (cJSON_IsNumber(v)) return (int32_t)v->valueint;
    cJSON_ArrayForEach(a, added) {
        const cJSON *c = get(a, "content"), *id = get(a, "id");
        if (cJSON_IsString(c) && cJSON_IsNumber(id) && strcmp(c->valuestring, text) == 0) return (int32_t)id->valueint;
    }
    return -1;
}

/* Whether encoding starts with BOS: tokenizer_config.json says so, else the
 * post-processor's template begins with a special token. */
static bool adds_bos(const cJSON *tok, const cJSON *tcfg) {
    const cJSON *b = get(tcfg, "add_bos_token");
    if (cJSON_IsBool(b)) return cJSON_IsTrue(b);
    const cJSON *pp = get(tok, "post_processor"), *single = get(pp, "single");
    const cJSON *child;
    cJSON_ArrayForEach(child, get(pp, "processors")) if (!single) single = get(child, "single");
    return cJSON_IsArray(single) && get(cJSON_GetArrayItem(single, 0), "SpecialToken") != NULL;
}

static afo_status add_tokens(gguf_kv *kv, const cJSON *tok, int64_t vocab_size, bool spm) {
    const cJSON *model = get(tok, "model"), *vocab = get(model, "vocab"), *added = get(tok, "added_tokens");
    const char **text = calloc((size_t)vocab_size, sizeof *text);
    int32_t *type = calloc((size_t)vocab_size, sizeof *type);
    if (!text || !type) {
        free(text);
        free(type);
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "gguf: out of memory for the vocabulary");
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valueint < 0 || e->valueint >= vocab_size) continue;
        text[e->valueint] = e->string;
        bool byte = spm && strlen(e->string) == 6 && strncmp(e->string, "<0x", 3) == 0 && e->string[5] == '>';
        type[e->valueint] = byte ? TOK_BYTE : TOK_NORMAL;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = get(e, "id"), *c = get(e, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(c) || id->valueint < 0 || id->valueint >= vocab_size) continue;
        text[id->valueint] = c->valuestring;
        type[id->valueint] = cJSON_IsTrue(get(e, "special")) ? TOK_CONTROL : TOK_USER_DEFINED;
    }
    const cJSON *unk = get(model, "unk_token");
    int32_t unk_id = cJSON_IsString(unk) ? token_id(vocab, added, unk->valuestring) : -1;
    if (unk_id >= 0) type[unk_id] = TOK_UNKNOWN;

    /* config vocab_size may pad the embedding beyond the tokenizer: llama.cpp
     * needs one token per row, so rows past the tokenizer get [PADn] tokens
     * of type UNUSED */
    gguf_kv_array(kv, "tokenizer.ggml.tokens", GGUF_STRING, (uint64_t)vocab_size);
    for (int64_t i = 0; i < vocab_size; i++) {
        char pad[32];
        if (!text[i]) snprintf(pad, sizeof pad, "[PAD%lld]", (long long)i), type[i] = TOK_UNUSED;
        gguf_put_str(kv, text[i] ? text[i] : pad);
    }
    gguf_kv_array(kv, "tokenizer.ggml.token_type", GGUF_INT32, (uint64_t)vocab_size);
    gguf_put(kv, type, sizeof *type * (size_t)vocab_size);
    if (spm) {
        /* llama.cpp's SentencePiece tokenizer merges the best-scoring pair;
         * converted vocabularies list pieces by merge priority, so -id ranks them */
        gguf_kv_array(kv, "tokenizer.ggml.scores", GGUF_FLOAT32, (uint64_t)vocab_size);
        for (int64_t i = 0; i < vocab_size; i++) {
            float score = type[i] == TOK_NORMAL ? -(float)i : 0.0f;
            gguf_put(kv, &score, 4);
        }
    }
    if (unk_id >= 0) gguf_kv_u32(kv, "tokenizer.ggml.unknown_token_id", (uint32_t)unk_id);
    free(text);
    free(type);
    return AFO_OK;
}

/* Merges as "left right", whether tokenizer.json stores strings or pairs. */
static afo_status add_merges(gguf_kv *kv, const cJSON *merges) {
    int n = cJSON_GetArraySize(merges);
    gguf_kv_array(kv, "tokenizer.ggml.merges", GGUF_STRING, (uint64_t)n);
    const cJSON *e;
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsString(e)) {
            gguf_put_str(kv, e->valuestring);
            continue;
        }
        const cJSON *l = cJSON_GetArrayItem(e, 0), *r = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsString(l) || !cJSON_IsString(r))
            return afo_error(AFO_ERR_FORMAT, "gguf: tokenizer.json has a merge that is neither \"a b\" nor [a, b]");
        size_t nl = strlen(l->valuestring), nr = strlen(r->valuestring);
        gguf_put_u64(kv, nl + 1 + nr);
        gguf_put(kv, l->valuestring, nl);
        gguf_put(kv, " ", 1);
        gguf_put(kv, r->valuestring, nr);
    }
    return AFO_OK;
}

afo_status gguf_add_vocab(gguf_kv *kv, const char *dir, int64_t vocab_size, const afo_generation_config *gc) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    afo_clear_error();
    cJSON *tok = gguf_read_json(path, true);
    if (!tok) {
        if (afo_last_status() != AFO_OK) return afo_last_status();
        gguf_kv_string(kv, "tokenizer.ggml.model", "none");
        return AFO_OK;
    }
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    cJSON *tcfg = gguf_read_json(path, true);
    afo_status s = AFO_OK;
    const cJSON *model = get(tok, "model"), *mtype = get(model, "type");
    if (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE") != 0 || !cJSON_IsObject(get(model, "vocab")))
        s = afo_error(AFO_ERR_UNSUPPORTED, "gguf: only BPE tokenizers are exported, not '%s'",
                      cJSON_IsString(mtype) ? mtype->valuestring : "?");
    bool spm = cJSON_IsTrue(get(model, "byte_fallback"));
    if (s == AFO_OK) {
        gguf_kv_string(kv, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
        if (!spm) gguf_kv_string(kv, "tokenizer.ggml.pre", pre_name(get(tok, "pre_tokenizer")));
        s = add_tokens(kv, tok, vocab_size, spm);
    }
    if (s == AFO_OK && !spm) s = add_merges(kv, get(model, "merges"));
    if (s == AFO_OK) {
        if (gc->bos_token_id >= 0) gguf_kv_u32(kv, "tokenizer.ggml.bos_token_id", (uint32_t)gc->bos_token_id);
        if (gc->num_eos > 0) gguf_kv_u32(kv, "tokenizer.ggml.eos_token_id", (uint32_t)gc->eos_token_ids[0]);
        if (gc->pad_token_id >= 0) gguf_kv_u32(kv, "tokenizer.ggml.padding_token_id", (uint32_t)gc->pad_token_id);
        gguf_kv_bool(kv, "tokenizer.ggml.add_bos_token", adds_bos(tok, tcfg));
        gguf_kv_bool(kv, "tokenizer.ggml.add_eos_token", false);
        const cJSON *tmpl = get(tcfg, "chat_template");
        if (cJSON_IsString(tmpl)) gguf_kv_string(kv, "tokenizer.chat_template", tmpl->valuestring);
    }
    cJSON_Delete(tcfg);
    cJSON_Delete(tok);
    return s;
}
