/* Added tokens: found in the text before the model runs, leftmost-longest
 * (aho-corasick's LeftmostLongest in `tokenizers`), then adjusted by their
 * single_word / lstrip / rstrip flags. Tokens with normalized=false are
 * matched on the raw text, the others on each normalized piece. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

#define PREFIX_ONLY (-2)

static afo_status matcher_add(const tk_loader *L, tk_matcher *m, const char *s, size_t n, int index) {
    if (n == 0) return AFO_OK;
    for (size_t l = 1; l < n; l++)
        if (tk_map_put(&m->prefixes, s, l, PREFIX_ONLY, false) < 0) return tk_oom(L);
    /* The first of two equal patterns wins, as in aho-corasick. */
    int32_t old = tk_map_get(&m->prefixes, s, n);
    if (old < 0 && tk_map_put(&m->prefixes, s, n, index, true) < 0) return tk_oom(L);
    m->first[(uint8_t)s[0] >> 3] |= (uint8_t)(1u << ((uint8_t)s[0] & 7));
    if (n > m->maxlen) m->maxlen = n;
    m->count++;
    return AFO_OK;
}

/* Longest token starting at i: its index and length, or -1. */
static int match_at(const tk_matcher *m, const char *s, size_t n, size_t i, size_t *len) {
    if (!(m->first[(uint8_t)s[i] >> 3] & (1u << ((uint8_t)s[i] & 7)))) return -1;
    int best = -1;
    for (size_t l = 1; l <= m->maxlen && i + l <= n; l++) {
        int32_t v = tk_map_get(&m->prefixes, s + i, l);
        if (v == -1) break;
        if (v >= 0) best = v, *len = l;
    }
    return best;
}

static bool is_word_at_end(const char *s, size_t n) {
    if (n == 0) return false;
    size_t k = n - 1;
    while (k > 0 && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
    int l;
    return tk_is_alnum_word(tk_utf8_decode(s + k, n - k, &l));
}

afo_status tk_added_split(const afo_tokenizer *t, const tk_matcher *m, const char *s, size_t n, tk_spans *spans,
                          tk_ids *ids) {
    spans->n = ids->n = 0;
    size_t from = 0, i = 0;
    while (m->count && i < n) {
        size_t len;
        int k = match_at(m, s, n, i, &len);
        if (k < 0) {
            i++;
            continue;
        }
        const tk_added *a = &t->added[k];
        size_t start = i, stop = i + len;
        i = stop;
        int l;
        if (a->single_word && ((start > 0 && is_word_at_end(s, start)) ||
                               (stop < n && tk_is_alnum_word(tk_utf8_decode(s + stop, n - stop, &l)))))
            continue;
        if (a->lstrip) {
            size_t b = start;
            while (b > 0) {
                size_t q = b - 1;
                while (q > 0 && ((uint8_t)s[q] & 0xC0) == 0x80) q--;
                if (!tk_is_whitespace(tk_utf8_decode(s + q, b - q, &l))) break;
                b = q;
            }
            start = b > from ? b : from; /* spaces an earlier match took stay there */
        }
        while (a->rstrip && stop < n && tk_is_whitespace(tk_utf8_decode(s + stop, n - stop, &l))) stop += (size_t)l;
        if ((from < start && (tk_spans_push(spans, from, start, false) || tk_ids_push(ids, -1))) ||
            tk_spans_push(spans, start, stop, true) || tk_ids_push(ids, a->id))
            return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
        from = stop;
    }
    if (from < n && (tk_spans_push(spans, from, n, false) || tk_ids_push(ids, -1)))
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    return AFO_OK;
}

/* ---------------------------------------------------------------- loading */
void tk_added_free(afo_tokenizer *t) {
    for (int i = 0; i < t->nadded; i++) free(t->added[i].content);
    free(t->added);
    tk_map_free(&t->added_by_content);
    tk_map_free(&t->raw_match.prefixes);
    tk_map_free(&t->norm_match.prefixes);
}

static afo_status load_one(const tk_loader *L, const cJSON *e, const char *field, tk_added *a) {
    const char *content;
    if (!cJSON_IsObject(e)) return tk_bad(L, field, "not an object");
    if (!tk_json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &a->id))
        return tk_bad(L, field, "\"id\" missing or not a valid id");
    AFO_TRY(tk_json_str(L, e, field, "content", true, &content));
    AFO_TRY(tk_json_bool(L, e, field, "special", false, &a->special));
    AFO_TRY(tk_json_bool(L, e, field, "lstrip", false, &a->lstrip));
    AFO_TRY(tk_json_bool(L, e, field, "rstrip", false, &a->rstrip));
    AFO_TRY(tk_json_bool(L, e, field, "single_word", false, &a->single_word));
    AFO_TRY(tk_json_bool(L, e, field, "normalized", !a->special, &a->normalized));
    if (!(a->content = strdup(content))) return tk_oom(L);
    a->len = strlen(content);
    return AFO_OK;
}

afo_status tk_added_load(const tk_loader *L, const cJSON *arr, afo_tokenizer *t) {
    if (!arr || cJSON_IsNull(arr)) return AFO_OK;
    if (!cJSON_IsArray(arr)) return tk_bad(L, "added_tokens", "not an array");
    int n = cJSON_GetArraySize(arr);
    if (n && !(t->added = calloc((size_t)n, sizeof *t->added))) return tk_oom(L);
    for (const cJSON *e = arr->child; e; e = e->next) {
        char field[48];
        snprintf(field, sizeof field, "added_tokens[%d]", t->nadded);
        tk_added *a = &t->added[t->nadded];
        AFO_TRY(load_one(L, e, field, a));
        t->nadded++;
        if (tk_map_put(&t->added_by_content, a->content, a->len, t->nadded - 1, true) < 0) return tk_oom(L);
    }
    /* Special tokens first, then the others, as tokenizers orders its tries. */
    tk_ctx c = {0};
    afo_status st = AFO_OK;
    for (int pass = 0; pass < 2 && st == AFO_OK; pass++)
        for (int i = 0; i < t->nadded && st == AFO_OK; i++) {
            tk_added *a = &t->added[i];
            if (a->special != (pass == 0)) continue;
            if (!a->normalized) {
                st = matcher_add(L, &t->raw_match, a->content, a->len, i);
                continue;
            }
            c.tmp.n = 0;
            if (t->normalizer) st = tk_normalize(t->normalizer, &c, a->content, a->len, &c.tmp);
            else if (tk_buf_add(&c.tmp, a->content, a->len)) st = tk_oom(L);
            if (st == AFO_OK) st = matcher_add(L, &t->norm_match, c.tmp.p, c.tmp.n, i);
        }
    tk_ctx_free(&c);
    return st;
}
