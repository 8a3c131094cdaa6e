/* Unigram model: Viterbi over every vocabulary piece that starts at each
 * character (SentencePiece's encode, as `tokenizers` runs it: unknown
 * characters score min_score - 10 and consecutive unknowns fuse). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

#define UNK_PENALTY 10.0
#define PREFIX_ONLY (-2)

/* The error for entry id of model.vocab. */
static afo_status bad_piece(const tk_loader *L, int id, const char *why) {
    char field[48];
    snprintf(field, sizeof field, "model.vocab[%d]", id);
    return tk_bad(L, field, "%s", why);
}

afo_status tk_unigram_load(const tk_loader *L, const cJSON *j, tk_model *m) {
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(j, "vocab");
    int n = cJSON_GetArraySize(vocab);
    if (!(m->scores = malloc(((size_t)n + 1) * sizeof *m->scores))) return tk_oom(L);
    m->min_score = INFINITY;
    int id = 0;
    /* The prefix map holds every prefix of every piece, so its bytes grow
     * with the square of a piece's length: one piece of 90 KB in a damaged
     * file had asked for 4 GB (found by the tokenizer.json fuzzer). Real
     * vocabularies' prefixes take a few times their pieces' bytes. */
    size_t piece_bytes = 0, prefix_bytes = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, id++) {
        const cJSON *tok = cJSON_GetArrayItem(e, 0), *score = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsArray(e) || !cJSON_IsString(tok) || !cJSON_IsNumber(score))
            return bad_piece(L, id, "expected [\"token\", score]");
        size_t len = strlen(tok->valuestring);
        piece_bytes += len;
        prefix_bytes += len * (len - (len > 0)) / 2;
        if (prefix_bytes > 64 * piece_bytes + ((size_t)64 << 20)) {
            char why[96];
            snprintf(why, sizeof why, "a piece of %zu bytes: the pieces' prefixes would take %zu MB", len,
                     prefix_bytes >> 20);
            return bad_piece(L, id, why);
        }
        m->scores[id] = score->valuedouble;
        if (score->valuedouble < m->min_score) m->min_score = score->valuedouble;
        if (tk_map_put(&m->vocab, tok->valuestring, len, id, true) < 0) return tk_oom(L);
        /* The prefix map stands in for SentencePiece's trie. */
        for (size_t l = 1; l < len; l++)
            if (tk_map_put(&m->prefixes, tok->valuestring, l, PREFIX_ONLY, false) < 0) return tk_oom(L);
        if (len && tk_map_put(&m->prefixes, tok->valuestring, len, id, true) < 0) return tk_oom(L);
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(j, "unk_id");
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsNumber(unk) || unk->valuedouble < 0 || unk->valuedouble >= n)
            return tk_bad(L, "model.unk_id", "not an index into model.vocab");
        m->unk_id = (int32_t)unk->valuedouble;
    }
    AFO_TRY(tk_json_bool(L, j, "model.byte_fallback", "byte_fallback", false, &m->byte_fallback));
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_ids[b] = tk_map_get(&m->vocab, name, 6);
    }
    return AFO_OK;
}

/* The best path ending at each byte offset. */
typedef struct node {
    double score;
    int32_t start; /* -1: unreached */
    int32_t id;
} node;

static afo_status emit(const tk_model *m, const char *s, size_t n, tk_ids *out) {
    int32_t id = tk_map_get(&m->vocab, s, n);
    bool bytes = id < 0 && m->byte_fallback;
    for (size_t k = 0; bytes && k < n; k++) bytes = m->byte_ids[(uint8_t)s[k]] >= 0;
    if (bytes) {
        for (size_t k = 0; k < n; k++)
            if (tk_ids_push(out, m->byte_ids[(uint8_t)s[k]])) goto oom;
        return AFO_OK;
    }
    if (id < 0 && (id = m->unk_id) < 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "tokenizer: \"%.*s\" is unknown and the Unigram model has no unk_id",
                         (int)(n > 40 ? 40 : n), s);
    if (tk_ids_push(out, id)) goto oom;
    return AFO_OK;
oom:
    return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory in Unigram");
}

afo_status tk_unigram_tokenize(const tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out) {
    if (n == 0) return AFO_OK;
    c->tmp2.n = 0;
    if (tk_buf_reserve(&c->tmp2, (n + 1) * sizeof(node))) goto oom;
    node *best = (node *)(void *)c->tmp2.p;
    for (size_t i = 0; i <= n; i++) best[i] = (node){0, -1, -1};
    best[0].start = 0;
    double unk_score = m->min_score - UNK_PENALTY;
    for (size_t at = 0; at < n;) {
        int cl;
        tk_utf8_decode(s + at, n - at, &cl);
        bool single = false;
        for (size_t end = at + 1; end <= n; end++) {
            int32_t id = tk_map_get(&m->prefixes, s + at, end - at);
            if (id == -1) break;
            if (id == PREFIX_ONLY) continue;
            double sc = best[at].score + m->scores[id];
            if (best[end].start < 0 || sc > best[end].score) best[end] = (node){sc, (int32_t)at, id};
            if (end - at == (size_t)cl) single = true;
        }
        if (!single) {
            double sc = best[at].score + unk_score;
            size_t end = at + (size_t)cl;
            if (best[end].start < 0 || sc > best[end].score) best[end] = (node){sc, (int32_t)at, m->unk_id};
        }
        at += (size_t)cl;
    }
    /* Back from the end; runs of unk nodes become one piece. */
    c->spans.n = 0;
    for (size_t end = n; end > 0;) {
        size_t start = (size_t)best[end].start;
        bool unk = m->unk_id >= 0 && best[end].id == m->unk_id;
        if (unk && c->spans.n && c->spans.v[c->spans.n - 1].match)
            c->spans.v[c->spans.n - 1].start = start;
        else if (tk_spans_push(&c->spans, start, end, unk))
            goto oom;
        end = start;
    }
    for (size_t i = c->spans.n; i-- > 0;) {
        const tk_span *p = &c->spans.v[i];
        AFO_TRY(emit(m, s + p->start, p->end - p->start, out));
    }
    return AFO_OK;
oom:
    return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory in Unigram");
}
