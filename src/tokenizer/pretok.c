/* Pre-tokenizers: split each piece into words (and rewrite them, for
 * ByteLevel and Metaspace). Splitting follows NormalizedString::split: a
 * pattern marks spans of the piece as matches or not, and the delimiter
 * behaviour decides which spans become pieces and which merge. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

/* GPT-2's pre-tokenization regex, which ByteLevel applies when use_regex. */
#define GPT2_REGEX "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static afo_status oom(void) { return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory pre-tokenizing"); }

/* ---------------------------------------------------------------- spans */
static afo_status pattern_spans(const tk_pattern *p, tk_ctx *c, const char *s, size_t n, bool invert) {
    c->spans.n = 0;
    size_t prev = 0, at = 0, ms, me;
    int r;
    while (at <= n && (r = tk_pattern_find(p, c, s, n, at, &ms, &me)) > 0) {
        if ((prev != ms && tk_spans_push(&c->spans, prev, ms, invert)) || tk_spans_push(&c->spans, ms, me, !invert))
            return oom();
        prev = me;
        if (me == ms) { /* empty match: search again one character on */
            int l = 1;
            if (me < n) tk_utf8_decode(s + me, n - me, &l);
            at = me + (size_t)l;
        } else {
            at = me;
        }
    }
    if (at <= n && r < 0) return afo_last_status();
    if (prev < n && tk_spans_push(&c->spans, prev, n, invert)) return oom();
    return AFO_OK;
}

/* Each character for which pred holds is a match of its own. */
static afo_status char_spans(bool (*pred)(int32_t), tk_ctx *c, const char *s, size_t n) {
    c->spans.n = 0;
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        int l;
        int32_t cp = tk_utf8_decode(s + i, n - i, &l);
        if (pred(cp)) {
            if ((last < i && tk_spans_push(&c->spans, last, i, false)) ||
                tk_spans_push(&c->spans, i, i + (size_t)l, true))
                return oom();
            last = i + (size_t)l;
        }
        i += (size_t)l;
    }
    if (last < n && tk_spans_push(&c->spans, last, n, false)) return oom();
    return AFO_OK;
}

/* Rewrites c->spans per the behaviour: kept spans get match = false,
 * dropped ones match = true. */
static void apply_behavior(tk_ctx *c, tk_behavior b) {
    tk_span *v = c->spans.v;
    size_t n = c->spans.n, k = 0;
    bool prev = false;
    switch (b) {
    case TK_REMOVED: return;
    case TK_ISOLATED:
        for (size_t i = 0; i < n; i++) v[i].match = false;
        return;
    case TK_CONTIGUOUS:
    case TK_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < n; i++) {
            bool m = v[i].match;
            bool join = b == TK_CONTIGUOUS ? m == prev : m && !prev;
            if (join && k)
                v[k - 1].end = v[i].end;
            else
                v[k++] = (tk_span){v[i].start, v[i].end, false};
            prev = m;
        }
        break;
    case TK_MERGED_WITH_NEXT: /* the same walk from the right, packed at the end */
        k = n;
        for (size_t i = n; i-- > 0;) {
            bool m = v[i].match;
            if (m && !prev && k < n)
                v[k].start = v[i].start;
            else
                v[--k] = (tk_span){v[i].start, v[i].end, false};
            prev = m;
        }
        memmove(v, v + k, (n - k) * sizeof *v);
        k = n - k;
        break;
    }
    c->spans.n = k;
}

/* Appends the kept, non-empty spans of s as pieces of out. */
static afo_status emit_spans(tk_ctx *c, tk_pieces *out, const char *s, bool at_start) {
    for (size_t i = 0; i < c->spans.n; i++) {
        const tk_span *p = &c->spans.v[i];
        if (!p->match && p->end > p->start &&
            tk_pieces_add(out, s + p->start, p->end - p->start, at_start && p->start == 0))
            return oom();
    }
    return AFO_OK;
}

/* ---------------------------------------------------------------- rewrites */
static afo_status bytelevel_map(tk_pieces *out, const char *s, size_t n, bool at_start) {
    const tk_bytelevel *t = tk_bytelevel_table();
    size_t off = out->text.n;
    if (tk_buf_reserve(&out->text, 2 * n)) return oom();
    char *d = out->text.p + off;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        memcpy(d, t->utf8[b], 2);
        d += t->len[b];
    }
    out->text.n = (size_t)(d - out->text.p);
    out->text.p[out->text.n] = '\0';
    return tk_pieces_range(out, off, out->text.n - off, at_start) ? oom() : AFO_OK;
}

static afo_status bytelevel(const tk_pretok *p, tk_ctx *c, tk_pieces *out, const char *s, size_t n, bool at_start) {
    if (p->add_prefix_space && (n == 0 || s[0] != ' ')) {
        c->tmp.n = 0;
        if (tk_buf_add(&c->tmp, " ", 1) || tk_buf_add(&c->tmp, s, n)) return oom();
        s = c->tmp.p, n = c->tmp.n;
    }
    if (!p->use_regex) return bytelevel_map(out, s, n, at_start);
    AFO_TRY(pattern_spans(&p->pattern, c, s, n, false));
    for (size_t i = 0; i < c->spans.n; i++) {
        const tk_span *sp = &c->spans.v[i];
        if (sp->end > sp->start) AFO_TRY(bytelevel_map(out, s + sp->start, sp->end - sp->start, at_start && sp->start == 0));
    }
    return AFO_OK;
}

static afo_status metaspace(const tk_pretok *p, tk_ctx *c, tk_pieces *out, const char *s, size_t n, bool at_start) {
    tk_buf *t = &c->tmp;
    t->n = 0;
    bool starts = n >= (size_t)p->rep_len && memcmp(s, p->rep, (size_t)p->rep_len) == 0;
    /* A leading space is about to become the replacement: no prefix then. */
    bool prepend = !starts && n > 0 && s[0] != ' ' &&
                   (p->prepend == PREPEND_ALWAYS || (p->prepend == PREPEND_FIRST && at_start));
    if (prepend && tk_buf_add(t, p->rep, (size_t)p->rep_len)) return oom();
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ' ? tk_buf_add(t, p->rep, (size_t)p->rep_len) : tk_buf_add(t, s + i, 1)) return oom();
    if (!p->split) return tk_pieces_add(out, t->p, t->n, at_start) ? oom() : AFO_OK;
    /* split on the replacement character, MergedWithNext */
    c->spans.n = 0;
    size_t last = 0;
    for (size_t i = 0; i + (size_t)p->rep_len <= t->n;) {
        if (memcmp(t->p + i, p->rep, (size_t)p->rep_len) == 0) {
            if ((last < i && tk_spans_push(&c->spans, last, i, false)) ||
                tk_spans_push(&c->spans, i, i + (size_t)p->rep_len, true))
                return oom();
            i += (size_t)p->rep_len;
            last = i;
        } else {
            i++;
        }
    }
    if (last < t->n && tk_spans_push(&c->spans, last, t->n, false)) return oom();
    apply_behavior(c, TK_MERGED_WITH_NEXT);
    return emit_spans(c, out, t->p, at_start);
}

/* Whitespace: runs of \w and runs of [^\w\s]; the rest is dropped. */
static afo_status whitespace(tk_pieces *out, const char *s, size_t n, bool at_start) {
    size_t i = 0;
    while (i < n) {
        int l;
        int32_t cp = tk_utf8_decode(s + i, n - i, &l);
        int cls = tk_is_alnum_word(cp) ? 1 : tk_is_whitespace(cp) ? 0 : 2;
        size_t j = i + (size_t)l;
        while (cls && j < n) {
            int32_t q = tk_utf8_decode(s + j, n - j, &l);
            if ((tk_is_alnum_word(q) ? 1 : tk_is_whitespace(q) ? 0 : 2) != cls) break;
            j += (size_t)l;
        }
        if (cls && tk_pieces_add(out, s + i, j - i, at_start && i == 0)) return oom();
        i = j;
    }
    return AFO_OK;
}

static afo_status split_chars(tk_ctx *c, tk_pieces *out, bool (*pred)(int32_t), tk_behavior b, const char *s,
                              size_t n, bool at_start) {
    AFO_TRY(char_spans(pred, c, s, n));
    apply_behavior(c, b);
    return emit_spans(c, out, s, at_start);
}

/* BertPreTokenizer: whitespace runs removed, then punctuation isolated. */
static afo_status bert(tk_ctx *c, tk_pieces *out, const char *s, size_t n, bool at_start) {
    for (size_t i = 0; i < n;) {
        int l;
        size_t j = i;
        while (j < n && !tk_is_whitespace(tk_utf8_decode(s + j, n - j, &l))) j += (size_t)l;
        if (j > i) AFO_TRY(split_chars(c, out, tk_is_punctuation, TK_ISOLATED, s + i, j - i, at_start && i == 0));
        i = j;
        while (i < n && tk_is_whitespace(tk_utf8_decode(s + i, n - i, &l))) i += (size_t)l;
    }
    return AFO_OK;
}

static afo_status one_piece(const tk_pretok *p, tk_ctx *c, tk_pieces *out, const char *s, size_t n, bool at_start) {
    switch (p->kind) {
    case PT_BYTELEVEL: return bytelevel(p, c, out, s, n, at_start);
    case PT_SPLIT:
        AFO_TRY(pattern_spans(&p->pattern, c, s, n, p->invert));
        apply_behavior(c, p->behavior);
        return emit_spans(c, out, s, at_start);
    case PT_METASPACE: return metaspace(p, c, out, s, n, at_start);
    case PT_WHITESPACE: return whitespace(out, s, n, at_start);
    case PT_WHITESPACE_SPLIT: return split_chars(c, out, tk_is_whitespace, TK_REMOVED, s, n, at_start);
    case PT_PUNCTUATION: return split_chars(c, out, tk_is_punctuation, p->behavior, s, n, at_start);
    case PT_DIGITS:
        return split_chars(c, out, tk_is_numeric, p->individual_digits ? TK_ISOLATED : TK_CONTIGUOUS, s, n, at_start);
    case PT_BERT: return bert(c, out, s, n, at_start);
    case PT_SEQUENCE: break;
    }
    return afo_error(AFO_ERR_INTERNAL, "tokenizer: bad pre-tokenizer kind");
}

afo_status tk_pretokenize(const tk_pretok *p, tk_ctx *c) {
    if (p->kind == PT_SEQUENCE) {
        for (int i = 0; i < p->nitems; i++) AFO_TRY(tk_pretokenize(p->items[i], c));
        return AFO_OK;
    }
    tk_pieces_reset(&c->b);
    for (size_t i = 0; i < c->a.n; i++) {
        const tk_piece *pc = &c->a.v[i];
        AFO_TRY(one_piece(p, c, &c->b, tk_piece_text(&c->a, i), pc->len, pc->at_start));
    }
    tk_pieces t = c->a;
    c->a = c->b;
    c->b = t;
    return AFO_OK;
}

/* ---------------------------------------------------------------- loading */
void tk_pretok_free(tk_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->nitems; i++) tk_pretok_free(p->items[i]);
    free(p->items);
    tk_pattern_free(&p->pattern);
    free(p);
}

static const struct {
    const char *name;
    tk_pretok_kind kind;
} PRETOKS[] = {
    {"ByteLevel", PT_BYTELEVEL}, {"Split", PT_SPLIT}, {"Metaspace", PT_METASPACE},
    {"Whitespace", PT_WHITESPACE}, {"WhitespaceSplit", PT_WHITESPACE_SPLIT},
    {"Punctuation", PT_PUNCTUATION}, {"Digits", PT_DIGITS}, {"BertPreTokenizer", PT_BERT},
    {"Sequence", PT_SEQUENCE},
};

static const char *const BEHAVIORS[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};

static afo_status load_behavior(const tk_loader *L, const cJSON *j, const char *field, tk_behavior dflt,
                                tk_behavior *out) {
    const char *b;
    AFO_TRY(tk_json_str(L, j, field, "behavior", false, &b));
    *out = dflt;
    if (!b) return AFO_OK;
    for (int i = 0; i < 5; i++)
        if (strcmp(b, BEHAVIORS[i]) == 0) {
            *out = (tk_behavior)i;
            return AFO_OK;
        }
    return tk_bad(L, field, "unknown split behavior \"%.40s\"", b);
}

afo_status tk_pattern_compile_regex(const tk_loader *L, const char *field, const char *re, tk_pattern *out) {
    int err;
    PCRE2_SIZE at;
    out->re = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &at, NULL);
    if (!out->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return tk_bad(L, field, "regex does not compile at offset %zu: %s", (size_t)at, (const char *)msg);
    }
    pcre2_jit_compile(out->re, PCRE2_JIT_COMPLETE); /* optional: the interpreter gives the same matches */
    return AFO_OK;
}

afo_status tk_pattern_load(const tk_loader *L, const cJSON *j, const char *field, tk_pattern *out) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
    const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    if (cJSON_IsString(str)) {
        if (!(out->lit = strdup(str->valuestring))) return tk_oom(L);
        out->lit_len = strlen(out->lit);
        return AFO_OK;
    }
    if (cJSON_IsString(re)) return tk_pattern_compile_regex(L, field, re->valuestring, out);
    return tk_bad(L, field, "\"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
}

static afo_status load_metaspace(const tk_loader *L, const cJSON *j, const char *field, tk_pretok *p) {
    const char *rep, *scheme;
    AFO_TRY(tk_json_str(L, j, field, "replacement", true, &rep));
    int l;
    if (!*rep || tk_utf8_decode(rep, strlen(rep), &l) < 0 || (size_t)l != strlen(rep))
        return tk_bad(L, field, "\"replacement\" must be one character");
    memcpy(p->rep, rep, (size_t)l);
    p->rep_len = l;
    AFO_TRY(tk_json_bool(L, j, field, "split", true, &p->split));
    AFO_TRY(tk_json_str(L, j, field, "prepend_scheme", false, &scheme));
    /* Files before tokenizers 0.19 say add_prefix_space instead. */
    bool add_prefix;
    AFO_TRY(tk_json_bool(L, j, field, "add_prefix_space", true, &add_prefix));
    p->prepend = add_prefix ? PREPEND_ALWAYS : PREPEND_NEVER;
    if (scheme) {
        if (strcmp(scheme, "always") == 0) p->prepend = PREPEND_ALWAYS;
        else if (strcmp(scheme, "first") == 0) p->prepend = PREPEND_FIRST;
        else if (strcmp(scheme, "never") == 0) p->prepend = PREPEND_NEVER;
        else return tk_bad(L, field, "unknown prepend_scheme \"%.40s\"", scheme);
    }
    return AFO_OK;
}

static afo_status load_fields(const tk_loader *L, const cJSON *j, const char *field, tk_pretok *p) {
    char sub[160];
    switch (p->kind) {
    case PT_BYTELEVEL:
        AFO_TRY(tk_json_bool(L, j, field, "add_prefix_space", true, &p->add_prefix_space));
        AFO_TRY(tk_json_bool(L, j, field, "use_regex", true, &p->use_regex));
        return p->use_regex ? tk_pattern_compile_regex(L, field, GPT2_REGEX, &p->pattern) : AFO_OK;
    case PT_SPLIT:
        AFO_TRY(tk_json_bool(L, j, field, "invert", false, &p->invert));
        AFO_TRY(load_behavior(L, j, field, TK_REMOVED, &p->behavior));
        if (!cJSON_GetObjectItemCaseSensitive(j, "behavior")) return tk_bad(L, field, "\"behavior\" missing");
        return tk_pattern_load(L, j, field, &p->pattern);
    case PT_METASPACE: return load_metaspace(L, j, field, p);
    case PT_PUNCTUATION: return load_behavior(L, j, field, TK_ISOLATED, &p->behavior);
    case PT_DIGITS: return tk_json_bool(L, j, field, "individual_digits", false, &p->individual_digits);
    case PT_SEQUENCE: {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        if (!cJSON_IsArray(arr)) return tk_bad(L, field, "\"pretokenizers\" missing or not an array");
        int n = cJSON_GetArraySize(arr);
        if (n && !(p->items = calloc((size_t)n, sizeof *p->items))) return tk_oom(L);
        for (const cJSON *e = arr->child; e; e = e->next) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", field, p->nitems);
            AFO_TRY(tk_pretok_load(L, e, sub, &p->items[p->nitems]));
            p->nitems++;
        }
        return AFO_OK;
    }
    default: return AFO_OK;
    }
}

afo_status tk_pretok_load(const tk_loader *L, const cJSON *j, const char *field, tk_pretok **out) {
    *out = NULL;
    const char *type;
    if (!cJSON_IsObject(j)) return tk_bad(L, field, "not an object");
    AFO_TRY(tk_json_str(L, j, field, "type", true, &type));
    size_t k = 0;
    while (k < sizeof PRETOKS / sizeof *PRETOKS && strcmp(PRETOKS[k].name, type) != 0) k++;
    if (k == sizeof PRETOKS / sizeof *PRETOKS) return tk_bad(L, field, "unknown pre-tokenizer type \"%.40s\"", type);
    tk_pretok *p = calloc(1, sizeof *p);
    if (!p) return tk_oom(L);
    p->kind = PRETOKS[k].kind;
    afo_status st = load_fields(L, j, field, p);
    if (st != AFO_OK) {
        tk_pretok_free(p);
        return st;
    }
    *out = p;
    return AFO_OK;
}
