/* Decoders: the chain that turns token strings back into text, each step
 * mapping a list of strings to a list of strings (decode_chain). */
#define _GNU_SOURCE /* memmem */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

static afo_status oom(void) { return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory decoding"); }

/* Appends s with every `from` replaced by `to`. */
static int replace_all(tk_buf *out, const char *s, size_t n, const char *from, size_t fl, const char *to, size_t tl) {
    const char *end = s + n, *hit;
    while (fl && (hit = memmem(s, (size_t)(end - s), from, fl))) {
        if (tk_buf_add(out, s, (size_t)(hit - s)) || tk_buf_add(out, to, tl)) return -1;
        s = hit + fl;
    }
    return tk_buf_add(out, s, (size_t)(end - s));
}

static afo_status bytelevel(const tk_pieces *in, tk_pieces *out) {
    tk_buf raw = {0};
    afo_status st = AFO_OK;
    for (size_t i = 0; i < in->n && st == AFO_OK; i++) {
        const char *t = tk_piece_text(in, i);
        size_t n = in->v[i].len, mark = raw.n;
        for (size_t k = 0; k < n;) {
            int l, b = tk_bytelevel_byte(tk_utf8_decode(t + k, n - k, &l));
            if (b < 0) { /* not byte-level text (an added token): its bytes as they are */
                raw.n = mark;
                if (tk_buf_add(&raw, t, n)) st = oom();
                break;
            }
            char ch = (char)b;
            if (tk_buf_add(&raw, &ch, 1)) {
                st = oom();
                break;
            }
            k += (size_t)l;
        }
    }
    size_t off = out->text.n;
    if (st == AFO_OK && (tk_utf8_lossy(&out->text, raw.p ? raw.p : "", raw.n) ||
                         tk_pieces_range(out, off, out->text.n - off, false)))
        st = oom();
    tk_buf_free(&raw);
    return st;
}

static afo_status metaspace(const tk_decoder *d, const tk_pieces *in, tk_pieces *out) {
    for (size_t i = 0; i < in->n; i++) {
        size_t off = out->text.n;
        const char *to = i == 0 && d->prepend != PREPEND_NEVER ? "" : " ";
        if (replace_all(&out->text, tk_piece_text(in, i), in->v[i].len, d->rep, (size_t)d->rep_len, to, *to ? 1 : 0) ||
            tk_pieces_range(out, off, out->text.n - off, false))
            return oom();
    }
    return AFO_OK;
}

static int hex(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Runs of <0xXX> tokens become their bytes when those are valid UTF-8, else
 * one U+FFFD per byte. */
static afo_status byte_fallback(const tk_pieces *in, tk_pieces *out) {
    tk_buf bytes = {0};
    afo_status st = AFO_OK;
    for (size_t i = 0; i <= in->n && st == AFO_OK; i++) {
        const char *t = i < in->n ? tk_piece_text(in, i) : NULL;
        if (t && in->v[i].len == 6 && memcmp(t, "<0x", 3) == 0 && t[5] == '>' && hex(t[3]) >= 0 && hex(t[4]) >= 0) {
            char b = (char)(hex(t[3]) * 16 + hex(t[4]));
            if (tk_buf_add(&bytes, &b, 1)) st = oom();
            continue;
        }
        if (bytes.n) {
            if (tk_utf8_valid_prefix(bytes.p, bytes.n) == bytes.n) {
                if (tk_pieces_add(out, bytes.p, bytes.n, false)) st = oom();
            } else {
                for (size_t k = 0; k < bytes.n && st == AFO_OK; k++)
                    if (tk_pieces_add(out, "\xEF\xBF\xBD", 3, false)) st = oom();
            }
            bytes.n = 0;
        }
        if (t && st == AFO_OK && tk_pieces_add(out, t, in->v[i].len, false)) st = oom();
    }
    tk_buf_free(&bytes);
    return st;
}

static afo_status fuse(const tk_pieces *in, tk_pieces *out) {
    size_t off = out->text.n;
    for (size_t i = 0; i < in->n; i++)
        if (tk_buf_add(&out->text, tk_piece_text(in, i), in->v[i].len)) return oom();
    return tk_pieces_range(out, off, out->text.n - off, false) ? oom() : AFO_OK;
}

/* Up to `start` leading and `stop` trailing copies of the character. */
static afo_status strip(const tk_decoder *d, const tk_pieces *in, tk_pieces *out) {
    char ch[4];
    size_t cl = (size_t)tk_utf8_encode(d->strip_char, ch);
    for (size_t i = 0; i < in->n; i++) {
        const char *t = tk_piece_text(in, i);
        size_t a = 0, b = in->v[i].len;
        for (int k = 0; k < d->start && b - a >= cl && memcmp(t + a, ch, cl) == 0; k++) a += cl;
        for (int k = 0; k < d->stop && b - a >= cl && memcmp(t + b - cl, ch, cl) == 0; k++) b -= cl;
        if (tk_pieces_add(out, t + a, b - a, false)) return oom();
    }
    return AFO_OK;
}

static afo_status replace(const tk_decoder *d, tk_ctx *c, const tk_pieces *in, tk_pieces *out) {
    for (size_t i = 0; i < in->n; i++) {
        const char *t = tk_piece_text(in, i);
        size_t n = in->v[i].len, at = 0, ms, me, off = out->text.n;
        int r;
        while (at < n && (r = tk_pattern_find(&d->pattern, c, t, n, at, &ms, &me)) != 0) {
            if (r < 0) return afo_last_status();
            if (tk_buf_add(&out->text, t + at, ms - at) || tk_buf_add(&out->text, d->content, d->content_len)) return oom();
            at = me;
            if (me == ms) { /* an empty match: keep the next character and move on */
                if (ms >= n) break;
                int l;
                tk_utf8_decode(t + ms, n - ms, &l);
                if (tk_buf_add(&out->text, t + ms, (size_t)l)) return oom();
                at += (size_t)l;
            }
        }
        if ((at < n && tk_buf_add(&out->text, t + at, n - at)) || tk_pieces_range(out, off, out->text.n - off, false))
            return oom();
    }
    return AFO_OK;
}

/* WordPiece's cleanup of tokenization spaces, in its order. */
static const char *const CLEANUP[][2] = {
    {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
    {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
};

static afo_status wordpiece(const tk_decoder *d, tk_ctx *c, const tk_pieces *in, tk_pieces *out) {
    for (size_t i = 0; i < in->n; i++) {
        const char *t = tk_piece_text(in, i);
        size_t n = in->v[i].len;
        tk_buf *a = &c->tmp, *b = &c->tmp2;
        a->n = 0;
        if (i > 0 && n >= d->content_len && memcmp(t, d->content, d->content_len) == 0) {
            if (tk_buf_add(a, t + d->content_len, n - d->content_len)) return oom();
        } else if ((i > 0 && tk_buf_add(a, " ", 1)) || tk_buf_add(a, t, n)) {
            return oom();
        }
        for (size_t k = 0; d->cleanup && k < sizeof CLEANUP / sizeof *CLEANUP; k++) {
            b->n = 0;
            if (replace_all(b, a->p, a->n, CLEANUP[k][0], strlen(CLEANUP[k][0]), CLEANUP[k][1], strlen(CLEANUP[k][1])))
                return oom();
            tk_buf s = *a;
            *a = *b;
            *b = s;
        }
        if (tk_pieces_add(out, a->p, a->n, false)) return oom();
    }
    return AFO_OK;
}

static afo_status step(const tk_decoder *d, tk_ctx *c, const tk_pieces *in, tk_pieces *out) {
    switch (d->kind) {
    case DEC_BYTELEVEL: return bytelevel(in, out);
    case DEC_METASPACE: return metaspace(d, in, out);
    case DEC_BYTEFALLBACK: return byte_fallback(in, out);
    case DEC_FUSE: return fuse(in, out);
    case DEC_STRIP: return strip(d, in, out);
    case DEC_REPLACE: return replace(d, c, in, out);
    case DEC_WORDPIECE: return wordpiece(d, c, in, out);
    case DEC_SEQUENCE: break;
    }
    return afo_error(AFO_ERR_INTERNAL, "tokenizer: bad decoder kind");
}

afo_status tk_decode_chain(const tk_decoder *d, tk_ctx *c) {
    if (d->kind == DEC_SEQUENCE) {
        for (int i = 0; i < d->nitems; i++) AFO_TRY(tk_decode_chain(d->items[i], c));
        return AFO_OK;
    }
    tk_pieces_reset(&c->b);
    AFO_TRY(step(d, c, &c->a, &c->b));
    tk_pieces t = c->a;
    c->a = c->b;
    c->b = t;
    return AFO_OK;
}

/* ---------------------------------------------------------------- loading */
void tk_decoder_free(tk_decoder *d) {
    if (!d) return;
    for (int i = 0; i < d->nitems; i++) tk_decoder_free(d->items[i]);
    free(d->items);
    free(d->content);
    tk_pattern_free(&d->pattern);
    free(d);
}

static const struct {
    const char *name;
    tk_dec_kind kind;
} DECODERS[] = {
    {"ByteLevel", DEC_BYTELEVEL}, {"Metaspace", DEC_METASPACE}, {"ByteFallback", DEC_BYTEFALLBACK},
    {"Fuse", DEC_FUSE}, {"Strip", DEC_STRIP}, {"Replace", DEC_REPLACE}, {"WordPiece", DEC_WORDPIECE},
    {"Sequence", DEC_SEQUENCE},
};

static afo_status one_char(const tk_loader *L, const cJSON *j, const char *field, const char *key, char *out,
                           int *len, int32_t *cp) {
    const char *s;
    AFO_TRY(tk_json_str(L, j, field, key, true, &s));
    int l;
    int32_t c = *s ? tk_utf8_decode(s, strlen(s), &l) : -1;
    if (c < 0 || (size_t)l != strlen(s)) return tk_bad(L, field, "\"%s\" must be one character", key);
    if (out) memcpy(out, s, (size_t)l);
    if (len) *len = l;
    if (cp) *cp = c;
    return AFO_OK;
}

static afo_status count(const tk_loader *L, const cJSON *j, const char *field, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6)
        return tk_bad(L, field, "\"%s\" missing or not a count", key);
    *out = (int)v->valuedouble;
    return AFO_OK;
}

static afo_status load_fields(const tk_loader *L, const cJSON *j, const char *field, tk_decoder *d) {
    char sub[160];
    const char *s;
    switch (d->kind) {
    case DEC_METASPACE: {
        AFO_TRY(one_char(L, j, field, "replacement", d->rep, &d->rep_len, NULL));
        const char *scheme;
        bool add_prefix;
        AFO_TRY(tk_json_bool(L, j, field, "add_prefix_space", true, &add_prefix));
        AFO_TRY(tk_json_str(L, j, field, "prepend_scheme", false, &scheme));
        d->prepend = add_prefix ? PREPEND_ALWAYS : PREPEND_NEVER;
        if (scheme) d->prepend = strcmp(scheme, "never") == 0 ? PREPEND_NEVER : strcmp(scheme, "first") == 0 ? PREPEND_FIRST : PREPEND_ALWAYS;
        return AFO_OK;
    }
    case DEC_STRIP:
        AFO_TRY(one_char(L, j, field, "content", NULL, NULL, &d->strip_char));
        AFO_TRY(count(L, j, field, "start", &d->start));
        return count(L, j, field, "stop", &d->stop);
    case DEC_REPLACE:
    case DEC_WORDPIECE:
        AFO_TRY(tk_json_str(L, j, field, d->kind == DEC_REPLACE ? "content" : "prefix", d->kind == DEC_REPLACE, &s));
        if (!(d->content = strdup(s ? s : "##"))) return tk_oom(L);
        d->content_len = strlen(d->content);
        if (d->kind == DEC_WORDPIECE) return tk_json_bool(L, j, field, "cleanup", true, &d->cleanup);
        return tk_pattern_load(L, j, field, &d->pattern);
    case DEC_SEQUENCE: {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "decoders");
        if (!cJSON_IsArray(arr)) return tk_bad(L, field, "\"decoders\" missing or not an array");
        int n = cJSON_GetArraySize(arr);
        if (n && !(d->items = calloc((size_t)n, sizeof *d->items))) return tk_oom(L);
        for (const cJSON *e = arr->child; e; e = e->next) {
            snprintf(sub, sizeof sub, "%s.decoders[%d]", field, d->nitems);
            AFO_TRY(tk_decoder_load(L, e, sub, &d->items[d->nitems]));
            d->nitems++;
        }
        return AFO_OK;
    }
    default: return AFO_OK;
    }
}

afo_status tk_decoder_load(const tk_loader *L, const cJSON *j, const char *field, tk_decoder **out) {
    *out = NULL;
    const char *type;
    if (!cJSON_IsObject(j)) return tk_bad(L, field, "not an object");
    AFO_TRY(tk_json_str(L, j, field, "type", true, &type));
    size_t k = 0;
    while (k < sizeof DECODERS / sizeof *DECODERS && strcmp(DECODERS[k].name, type) != 0) k++;
    if (k == sizeof DECODERS / sizeof *DECODERS) return tk_bad(L, field, "unknown decoder type \"%.40s\"", type);
    tk_decoder *d = calloc(1, sizeof *d);
    if (!d) return tk_oom(L);
    d->kind = DECODERS[k].kind;
    afo_status st = load_fields(L, j, field, d);
    if (st != AFO_OK) {
        tk_decoder_free(d);
        return st;
    }
    *out = d;
    return AFO_OK;
}
