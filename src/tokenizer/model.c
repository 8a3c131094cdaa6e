/* The model of a tokenizer.json: its vocabulary, the type dispatch, and
 * WordPiece (greedy longest-match-first). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

/* A vocabulary object {"token": id, ...}. */
static afo_status load_vocab_object(const tk_loader *L, const cJSON *vocab, tk_model *m) {
    for (const cJSON *e = vocab->child; e; e = e->next) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (v < 0 || v > INT32_MAX - 1 || v != floor(v))
            return tk_bad(L, "model.vocab", "\"%.60s\" has no valid id", e->string);
        if (tk_map_put(&m->vocab, e->string, strlen(e->string), (int32_t)v, true) < 0) return tk_oom(L);
    }
    return AFO_OK;
}

/* id -> token from the map; the largest id sets nids. */
static afo_status index_ids(const tk_loader *L, tk_model *m) {
    m->nids = 0;
    for (size_t i = 0; i < m->vocab.n; i++)
        if (m->vocab.e[i].value >= m->nids) m->nids = m->vocab.e[i].value + 1;
    AFO_TRY(tk_check_id_space(L, "model.vocab", m->nids, m->vocab.n));
    m->id_entry = malloc(((size_t)m->nids + 1) * sizeof *m->id_entry);
    if (!m->id_entry) return tk_oom(L);
    memset(m->id_entry, 0xFF, ((size_t)m->nids + 1) * sizeof *m->id_entry);
    for (size_t i = 0; i < m->vocab.n; i++) m->id_entry[m->vocab.e[i].value] = (uint32_t)i;
    return AFO_OK;
}

/* Files written by older `tokenizers` omit "type"; it is then told by the
 * fields present, as serde's untagged fallback does. */
static afo_status model_kind(const tk_loader *L, const cJSON *j, tk_model_kind *kind) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(j, "vocab");
    if (type && !cJSON_IsString(type)) return tk_bad(L, "model.type", "not a string");
    const char *t = type ? type->valuestring
                    : cJSON_GetObjectItemCaseSensitive(j, "merges") ? "BPE"
                    : cJSON_IsArray(vocab) ? "Unigram"
                    : (cJSON_GetObjectItemCaseSensitive(j, "continuing_subword_prefix") ||
                       cJSON_GetObjectItemCaseSensitive(j, "max_input_chars_per_word")) ? "WordPiece"
                    : NULL;
    if (!t) return tk_bad(L, "model", "no \"type\" and its fields fit no known model");
    if (strcmp(t, "BPE") == 0) *kind = MODEL_BPE;
    else if (strcmp(t, "WordPiece") == 0) *kind = MODEL_WORDPIECE;
    else if (strcmp(t, "Unigram") == 0) *kind = MODEL_UNIGRAM;
    else return tk_bad(L, "model.type", "unknown model type \"%.40s\" (BPE, WordPiece and Unigram are supported)", t);
    return AFO_OK;
}

static afo_status wordpiece_load(const tk_loader *L, const cJSON *j, tk_model *m) {
    const char *unk, *prefix;
    AFO_TRY(tk_json_str(L, j, "model.unk_token", "unk_token", false, &unk));
    AFO_TRY(tk_json_str(L, j, "model.continuing_subword_prefix", "continuing_subword_prefix", false, &prefix));
    m->unk_id = tk_map_get(&m->vocab, unk ? unk : "[UNK]", strlen(unk ? unk : "[UNK]"));
    if (m->unk_id < 0) return tk_bad(L, "model.unk_token", "\"%.60s\" is not in the vocabulary", unk ? unk : "[UNK]");
    if (!(m->prefix = strdup(prefix ? prefix : "##"))) return tk_oom(L);
    m->prefix_len = strlen(m->prefix);
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(j, "max_input_chars_per_word");
    m->max_chars = 100;
    if (mx && !cJSON_IsNull(mx)) {
        if (!cJSON_IsNumber(mx) || mx->valuedouble < 0) return tk_bad(L, "model.max_input_chars_per_word", "not a count");
        m->max_chars = mx->valuedouble > INT32_MAX ? INT32_MAX : (int)mx->valuedouble;
    }
    return AFO_OK;
}

afo_status tk_model_load(const tk_loader *L, const cJSON *j, tk_model *m) {
    if (!cJSON_IsObject(j)) return tk_bad(L, "model", "missing or not an object");
    AFO_TRY(model_kind(L, j, &m->kind));
    m->unk_id = -1;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(j, "vocab");
    if (m->kind == MODEL_UNIGRAM) {
        if (!cJSON_IsArray(vocab)) return tk_bad(L, "model.vocab", "missing or not an array of [token, score]");
        AFO_TRY(tk_unigram_load(L, j, m));
        return index_ids(L, m);
    }
    if (!cJSON_IsObject(vocab)) return tk_bad(L, "model.vocab", "missing or not an object of token: id");
    AFO_TRY(load_vocab_object(L, vocab, m));
    AFO_TRY(index_ids(L, m));
    return m->kind == MODEL_BPE ? tk_bpe_load(L, j, m) : wordpiece_load(L, j, m);
}

void tk_model_free(tk_model *m) {
    tk_map_free(&m->vocab);
    free(m->id_entry);
    free(m->merges.keys);
    free(m->merges.rank);
    free(m->merges.merged);
    free(m->prefix);
    free(m->suffix);
    free(m->scores);
    tk_map_free(&m->prefixes);
    if (m->kind == MODEL_BPE && m->merges.keys) pthread_mutex_destroy(&m->cache_lock);
    tk_map_free(&m->cache);
    free(m->cache_ids.p);
    free(m->cache_e);
}

const char *tk_model_token(const tk_model *m, int32_t id, size_t *len) {
    if (id < 0 || id >= m->nids || m->id_entry[id] == UINT32_MAX) return NULL;
    const struct tk_map_entry *e = &m->vocab.e[m->id_entry[id]];
    *len = e->len;
    return m->vocab.keys.p + e->off;
}

afo_status tk_wordpiece_tokenize(const tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out) {
    size_t first = out->n, nchars = 0;
    for (size_t i = 0; i < n; i++) nchars += ((uint8_t)s[i] & 0xC0) != 0x80;
    bool unk = nchars > (size_t)m->max_chars;
    for (size_t start = 0; start < n && !unk;) {
        int32_t id = -1;
        size_t end = n;
        while (end > start) {
            c->tmp.n = 0;
            if ((start > 0 && tk_buf_add(&c->tmp, m->prefix, m->prefix_len)) ||
                tk_buf_add(&c->tmp, s + start, end - start))
                return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory in WordPiece");
            if ((id = tk_map_get(&m->vocab, c->tmp.p, c->tmp.n)) >= 0) break;
            do end--; while (end > start && ((uint8_t)s[end] & 0xC0) == 0x80); /* back one character */
        }
        if (id < 0 || tk_ids_push(out, id)) {
            if (id >= 0) return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
            out->n = first;
            unk = true; /* one piece fails: the whole word is unk */
        }
        start = end;
    }
    if (unk && tk_ids_push(out, m->unk_id)) return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    return AFO_OK;
}

afo_status tk_model_tokenize(tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out) {
    switch (m->kind) {
    case MODEL_BPE: return tk_bpe_tokenize(m, c, s, n, out);
    case MODEL_WORDPIECE: return tk_wordpiece_tokenize(m, c, s, n, out);
    case MODEL_UNIGRAM: return tk_unigram_tokenize(m, c, s, n, out);
    }
    return afo_error(AFO_ERR_INTERNAL, "tokenizer: bad model kind");
}
