/* The public tokenizer API: encode, decode, vocabulary look-ups and the
 * streaming detokenizer. */
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

static afo_status oom(void) { return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); }

/* Scratch of an encode call beyond tk_ctx: the normalized text of a segment
 * and its split on normalized added tokens. */
typedef struct encoder {
    afo_tokenizer *t;
    tk_ctx c;
    tk_buf norm;
    tk_spans spans;
    tk_ids span_ids;
    tk_ids *out;
} encoder;

/* Pre-tokenizer and model over one stretch of normalized text. */
static afo_status words(encoder *e, const char *s, size_t n, bool at_start) {
    tk_pieces_reset(&e->c.a);
    if (tk_pieces_add(&e->c.a, s, n, at_start)) return oom();
    if (e->t->pretok) AFO_TRY(tk_pretokenize(e->t->pretok, &e->c));
    /* Models use the other scratch of the context (tmp, spans, sym), never c.a. */
    for (size_t i = 0; i < e->c.a.n; i++) {
        const tk_piece *p = &e->c.a.v[i];
        AFO_TRY(tk_model_tokenize(&e->t->model, &e->c, tk_piece_text(&e->c.a, i), p->len, e->out));
    }
    return AFO_OK;
}

/* A stretch of raw text between raw-matched added tokens. */
static afo_status segment(encoder *e, const char *s, size_t n, bool at_start) {
    afo_tokenizer *t = e->t;
    if (t->normalizer) {
        e->norm.n = 0;
        AFO_TRY(tk_normalize(t->normalizer, &e->c, s, n, &e->norm));
        s = e->norm.p ? e->norm.p : "", n = e->norm.n;
    }
    if (!t->norm_match.count) return n ? words(e, s, n, at_start) : AFO_OK;
    AFO_TRY(tk_added_split(t, &t->norm_match, s, n, &e->spans, &e->span_ids));
    for (size_t i = 0; i < e->spans.n; i++) {
        const tk_span *sp = &e->spans.v[i];
        if (e->span_ids.p[i] >= 0) {
            if (tk_ids_push(e->out, e->span_ids.p[i])) return oom();
        } else {
            AFO_TRY(words(e, s + sp->start, sp->end - sp->start, at_start && sp->start == 0));
        }
    }
    return AFO_OK;
}

afo_status afo_tokenizer_encode(afo_tokenizer *t, const char *text, size_t len, int add_special_tokens,
                                int32_t **ids, size_t *n) {
    if (!t || (!text && len) || !ids || !n) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n = 0;
    size_t valid = tk_utf8_valid_prefix(text, len);
    if (valid != len) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_tokenizer_encode: invalid UTF-8 at byte %zu", valid);
    tk_ids out = {0};
    encoder e = {.t = t, .out = &out};
    tk_spans raw = {0};
    tk_ids raw_ids = {0};
    /* The word cache is shared: whoever holds it uses it, and a concurrent
     * call goes without rather than wait. */
    e.c.use_cache = t->model.kind == MODEL_BPE && pthread_mutex_trylock(&t->model.cache_lock) == 0;
    afo_status st = AFO_OK;
    if (add_special_tokens && tk_ids_add(&out, t->post_pre.p, t->post_pre.n)) st = oom();
    if (st == AFO_OK) st = tk_added_split(t, &t->raw_match, text, len, &raw, &raw_ids);
    for (size_t i = 0; i < raw.n && st == AFO_OK; i++) {
        if (raw_ids.p[i] >= 0) st = tk_ids_push(&out, raw_ids.p[i]) ? oom() : AFO_OK;
        else st = segment(&e, text + raw.v[i].start, raw.v[i].end - raw.v[i].start, raw.v[i].start == 0);
    }
    if (st == AFO_OK && add_special_tokens && tk_ids_add(&out, t->post_post.p, t->post_post.n)) st = oom();
    if (e.c.use_cache) pthread_mutex_unlock(&t->model.cache_lock);
    tk_ctx_free(&e.c);
    tk_buf_free(&e.norm);
    free(e.spans.v);
    free(e.span_ids.p);
    free(raw.v);
    free(raw_ids.p);
    if (st != AFO_OK) {
        free(out.p);
        return st;
    }
    *ids = out.p;
    *n = out.n;
    return AFO_OK;
}

/* ---------------------------------------------------------------- look-ups */
static const char *token_of(const afo_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->nids) return NULL;
    int32_t a = t->added_by_id[id];
    if (a >= 0) {
        *len = t->added[a].len;
        return t->added[a].content;
    }
    return tk_model_token(&t->model, id, len);
}

int32_t afo_tokenizer_token_to_id(const afo_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    int32_t a = tk_map_get(&t->added_by_content, token, strlen(token));
    return a >= 0 ? t->added[a].id : tk_map_get(&t->model.vocab, token, strlen(token));
}

const char *afo_tokenizer_id_to_token(const afo_tokenizer *t, int32_t id) {
    size_t len;
    return t ? token_of(t, id, &len) : NULL; /* vocabulary keys and added contents are NUL-terminated */
}

size_t afo_tokenizer_vocab_size(const afo_tokenizer *t) { return t ? (size_t)t->nids : 0; }

int32_t afo_tokenizer_special_id(const afo_tokenizer *t, afo_special_token which) {
    return t && which >= AFO_TOKEN_BOS && which <= AFO_TOKEN_UNK ? t->special[which] : -1;
}

/* ---------------------------------------------------------------- decode */
static bool is_special(const afo_tokenizer *t, const char *s, size_t n) {
    int32_t a = tk_map_get(&t->added_by_content, s, n);
    return a >= 0 && t->added[a].special;
}

/* Appends the text of ids to out (no NUL accounting beyond tk_buf's). */
static afo_status decode_into(const afo_tokenizer *t, tk_ctx *c, const int32_t *ids, size_t n, bool skip,
                              tk_buf *out) {
    tk_pieces_reset(&c->a);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = token_of(t, ids[i], &len);
        if (!s)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_tokenizer_decode: id %d at position %zu is not in the vocabulary (size %d)",
                             ids[i], i, t->nids);
        if (skip && is_special(t, s, len)) continue;
        if (tk_pieces_add(&c->a, s, len, false)) return oom();
    }
    if (t->decoder) AFO_TRY(tk_decode_chain(t->decoder, c));
    for (size_t i = 0; i < c->a.n; i++) {
        if (!t->decoder && i > 0 && tk_buf_add(out, " ", 1)) return oom(); /* no decoder: tokens joined by spaces */
        if (tk_buf_add(out, tk_piece_text(&c->a, i), c->a.v[i].len)) return oom();
    }
    return AFO_OK;
}

afo_status afo_tokenizer_decode(afo_tokenizer *t, const int32_t *ids, size_t n, int skip_special_tokens, char **text) {
    if (!t || (!ids && n) || !text) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_tokenizer_decode: NULL argument");
    *text = NULL;
    tk_ctx c = {0};
    tk_buf out = {0};
    afo_status st = decode_into(t, &c, ids, n, skip_special_tokens, &out);
    if (st == AFO_OK && tk_buf_add(&out, "", 0)) st = oom();
    tk_ctx_free(&c);
    if (st != AFO_OK) {
        tk_buf_free(&out);
        return st;
    }
    *text = out.p;
    return AFO_OK;
}

/* ---------------------------------------------------------------- streaming */
/* The text of ids[prefix..read) was given out already; a push decodes
 * ids[prefix..] and gives out what goes beyond it, once it does not end in
 * U+FFFD (an unfinished byte sequence). Decoding from `prefix` rather than
 * from the last id keeps decoders that look at neighbours (Metaspace,
 * Strip, WordPiece) in context. */
struct afo_detokenizer {
    afo_tokenizer *t;
    bool skip;
    tk_ids ids;
    size_t prefix, read;
    tk_ctx c;
    tk_buf full, head;
};

afo_detokenizer *afo_detokenizer_new(afo_tokenizer *t, int skip_special_tokens) {
    if (!t) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_detokenizer_new: tokenizer is NULL");
    afo_detokenizer *d = calloc(1, sizeof *d);
    if (!d) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "afo_detokenizer_new: out of memory");
    d->t = t;
    d->skip = skip_special_tokens;
    return d;
}

void afo_detokenizer_free(afo_detokenizer *d) {
    if (!d) return;
    free(d->ids.p);
    tk_ctx_free(&d->c);
    tk_buf_free(&d->full);
    tk_buf_free(&d->head);
    free(d);
}

static bool ends_unfinished(const tk_buf *b) { return b->n >= 3 && memcmp(b->p + b->n - 3, "\xEF\xBF\xBD", 3) == 0; }

/* Gives out the new text (or "") and, when some was, moves the window. */
static afo_status step(afo_detokenizer *d, bool final, char **piece) {
    *piece = NULL;
    d->full.n = d->head.n = 0;
    const int32_t *window = d->ids.p ? d->ids.p + d->prefix : NULL; /* none pushed yet: no array */
    AFO_TRY(decode_into(d->t, &d->c, window, d->ids.n - d->prefix, d->skip, &d->full));
    AFO_TRY(decode_into(d->t, &d->c, window, d->read - d->prefix, d->skip, &d->head));
    size_t from = 0;
    bool grew = d->full.n > d->head.n && (final || !ends_unfinished(&d->full));
    if (grew) {
        /* Normally the head is a prefix of the whole; if a decoder rewrote
         * it, start after the common part, on a character boundary. */
        while (from < d->head.n && d->full.p[from] == d->head.p[from]) from++;
        while (from > 0 && ((uint8_t)d->full.p[from] & 0xC0) == 0x80) from--;
    }
    size_t len = grew ? d->full.n - from : 0;
    char *out = malloc(len + 1);
    if (!out) return oom();
    if (len) memcpy(out, d->full.p + from, len);
    out[len] = '\0';
    if (grew) {
        d->prefix = d->read;
        d->read = d->ids.n;
        /* ids before the window are never looked at again */
        memmove(d->ids.p, d->ids.p + d->prefix, (d->ids.n - d->prefix) * sizeof *d->ids.p);
        d->ids.n -= d->prefix;
        d->read -= d->prefix;
        d->prefix = 0;
    }
    *piece = out;
    return AFO_OK;
}

afo_status afo_detokenizer_push(afo_detokenizer *d, int32_t id, char **piece) {
    if (!d || !piece) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_detokenizer_push: NULL argument");
    *piece = NULL;
    size_t len;
    if (!token_of(d->t, id, &len))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_detokenizer_push: id %d is not in the vocabulary (size %d)", id,
                         d->t->nids);
    if (tk_ids_push(&d->ids, id)) return oom();
    return step(d, false, piece);
}

afo_status afo_detokenizer_flush(afo_detokenizer *d, char **piece) {
    if (!d || !piece) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_detokenizer_flush: NULL argument");
    AFO_TRY(step(d, true, piece));
    d->ids.n = d->prefix = d->read = 0;
    return AFO_OK;
}
