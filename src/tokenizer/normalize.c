/* Normalizers: string -> string rewrites before pre-tokenization. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"

static afo_status oom(void) { return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory normalizing"); }

static afo_status unicode_form(const char *s, size_t n, int options, tk_buf *out) {
    if (n == 0) return AFO_OK;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      (utf8proc_option_t)(UTF8PROC_STABLE | options));
    if (r < 0) return afo_error(AFO_ERR_INVALID_ARGUMENT, "tokenizer: normalization failed: %s", utf8proc_errmsg(r));
    int bad = tk_buf_add(out, dst, (size_t)r);
    free(dst);
    return bad ? oom() : AFO_OK;
}

/* char::to_lowercase: the simple mapping, except U+0130 whose lowercase is
 * two characters. */
static afo_status lowercase(const char *s, size_t n, tk_buf *out) {
    if (tk_buf_reserve(out, n)) return oom();
    for (size_t i = 0; i < n;) {
        int l;
        int32_t cp = tk_utf8_decode(s + i, n - i, &l);
        char u[4];
        if (cp < 0x80) {
            char ch = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
            if (tk_buf_add(out, &ch, 1)) return oom();
        } else if (cp == 0x130) {
            if (tk_buf_add(out, "i\xCC\x87", 3)) return oom();
        } else if (tk_buf_add(out, u, (size_t)tk_utf8_encode(utf8proc_tolower(cp), u))) {
            return oom();
        }
        i += (size_t)l;
    }
    return AFO_OK;
}

/* Keeps the characters for which keep() is true. */
static afo_status filter(const char *s, size_t n, bool (*keep)(int32_t), tk_buf *out) {
    for (size_t i = 0; i < n;) {
        int l;
        int32_t cp = tk_utf8_decode(s + i, n - i, &l);
        if (keep(cp) && tk_buf_add(out, s + i, (size_t)l)) return oom();
        i += (size_t)l;
    }
    return AFO_OK;
}

static bool not_nonspacing_mark(int32_t cp) { return utf8proc_category(cp) != UTF8PROC_CATEGORY_MN; }

static afo_status strip(const char *s, size_t n, bool left, bool right, tk_buf *out) {
    size_t a = 0, b = n;
    int l;
    while (left && a < b && tk_is_whitespace(tk_utf8_decode(s + a, b - a, &l))) a += (size_t)l;
    while (right && b > a) {
        size_t k = b - 1;
        while (k > a && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
        if (!tk_is_whitespace(tk_utf8_decode(s + k, b - k, &l))) break;
        b = k;
    }
    return tk_buf_add(out, s + a, b - a) ? oom() : AFO_OK;
}

static afo_status replace(const tk_normalizer *nz, tk_ctx *c, const char *s, size_t n, tk_buf *out) {
    size_t at = 0, ms, me;
    int r;
    while ((r = tk_pattern_find(&nz->pattern, c, s, n, at, &ms, &me)) > 0) {
        if (tk_buf_add(out, s + at, ms - at) || tk_buf_add(out, nz->content, nz->content_len)) return oom();
        if (me == ms) { /* an empty match: keep the next character and move on */
            int l = 1;
            if (ms < n) tk_utf8_decode(s + ms, n - ms, &l);
            if (ms < n && tk_buf_add(out, s + ms, (size_t)l)) return oom();
            me = ms + (size_t)(ms < n ? l : 1);
        }
        at = me;
        if (at > n) return AFO_OK;
    }
    if (r < 0) return afo_last_status();
    return tk_buf_add(out, s + at, n - at) ? oom() : AFO_OK;
}

/* BertNormalizer's character classes (tokenizers' bert.rs). */
static bool bert_is_control(int32_t cp) {
    if (cp == '\t' || cp == '\n' || cp == '\r') return false;
    utf8proc_category_t k = utf8proc_category(cp);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CN ||
           k == UTF8PROC_CATEGORY_CO || k == UTF8PROC_CATEGORY_CS;
}

static bool is_chinese(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* clean_text (drop NUL, U+FFFD and controls; whitespace -> ' ') and
 * handle_chinese_chars (space around CJK ideographs) in one pass. */
static afo_status bert_clean(const tk_normalizer *nz, const char *s, size_t n, tk_buf *out) {
    for (size_t i = 0; i < n;) {
        int l;
        int32_t cp = tk_utf8_decode(s + i, n - i, &l);
        const char *p = s + i;
        size_t pl = (size_t)l;
        i += (size_t)l;
        if (nz->clean_text) {
            if (cp == 0 || cp == 0xFFFD || bert_is_control(cp)) continue;
            if (tk_is_whitespace(cp)) p = " ", pl = 1;
        }
        bool cjk = nz->chinese && is_chinese(cp);
        if ((cjk && tk_buf_add(out, " ", 1)) || tk_buf_add(out, p, pl) || (cjk && tk_buf_add(out, " ", 1)))
            return oom();
    }
    return AFO_OK;
}

static afo_status bert(const tk_normalizer *nz, const char *s, size_t n, tk_buf *out) {
    tk_buf a = {0}, b = {0};
    afo_status st = bert_clean(nz, s, n, &a);
    if (st == AFO_OK && nz->strip_accents) {
        if ((st = unicode_form(a.p, a.n, UTF8PROC_DECOMPOSE, &b)) == AFO_OK) {
            a.n = 0;
            st = filter(b.p, b.n, not_nonspacing_mark, &a);
        }
    }
    if (st == AFO_OK) st = nz->lower ? lowercase(a.p, a.n, out) : (tk_buf_add(out, a.p, a.n) ? oom() : AFO_OK);
    tk_buf_free(&a);
    tk_buf_free(&b);
    return st;
}

/* Replacements in a row multiply the text's length: a damaged file whose
 * stages each widen every space had normalized 40 bytes into hundreds of
 * megabytes. A text may grow this much (and by 64 KB) over a sequence. */
#define SEQUENCE_MAX_GROWTH 64
#define SEQUENCE_MAX_SLACK (64u << 10)

static afo_status sequence(const tk_normalizer *nz, tk_ctx *c, const char *s, size_t n, tk_buf *out) {
    tk_buf bufs[2] = {{0}, {0}};
    const char *src = s;
    size_t len = n;
    afo_status st = AFO_OK;
    for (int i = 0; i < nz->nitems && st == AFO_OK; i++) {
        tk_buf *dst = &bufs[i & 1];
        dst->n = 0;
        if ((st = tk_normalize(nz->items[i], c, src, len, dst)) == AFO_OK) src = dst->p ? dst->p : "", len = dst->n;
        if (st == AFO_OK && len > SEQUENCE_MAX_SLACK && (len - SEQUENCE_MAX_SLACK) / SEQUENCE_MAX_GROWTH > n)
            st = afo_error(AFO_ERR_INVALID_ARGUMENT,
                           "tokenizer: normalizers[%d] grew a %zu-byte text to %zu bytes (at most %dx)", i, n, len,
                           SEQUENCE_MAX_GROWTH);
    }
    if (st == AFO_OK && tk_buf_add(out, src, len)) st = oom();
    tk_buf_free(&bufs[0]);
    tk_buf_free(&bufs[1]);
    return st;
}

afo_status tk_normalize(const tk_normalizer *nz, tk_ctx *c, const char *s, size_t n, tk_buf *out) {
    switch (nz->kind) {
    case NORM_NFC: return unicode_form(s, n, UTF8PROC_COMPOSE, out);
    case NORM_NFD: return unicode_form(s, n, UTF8PROC_DECOMPOSE, out);
    case NORM_NFKC: return unicode_form(s, n, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out);
    case NORM_NFKD: return unicode_form(s, n, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out);
    case NORM_LOWERCASE: return lowercase(s, n, out);
    case NORM_STRIP: return strip(s, n, nz->left, nz->right, out);
    case NORM_STRIP_ACCENTS: return filter(s, n, not_nonspacing_mark, out);
    case NORM_PREPEND:
        if (n && tk_buf_add(out, nz->content, nz->content_len)) return oom();
        return tk_buf_add(out, s, n) ? oom() : AFO_OK;
    case NORM_REPLACE: return replace(nz, c, s, n, out);
    case NORM_BERT: return bert(nz, s, n, out);
    case NORM_PRECOMPILED: return tk_precompiled_apply(nz->pc, s, n, out);
    case NORM_SEQUENCE: return sequence(nz, c, s, n, out);
    }
    return afo_error(AFO_ERR_INTERNAL, "tokenizer: bad normalizer kind");
}

/* ---------------------------------------------------------------- loading */
void tk_normalizer_free(tk_normalizer *nz) {
    if (!nz) return;
    for (int i = 0; i < nz->nitems; i++) tk_normalizer_free(nz->items[i]);
    free(nz->items);
    free(nz->content);
    tk_pattern_free(&nz->pattern);
    tk_precompiled_free(nz->pc);
    free(nz);
}

static const struct {
    const char *name;
    tk_norm_kind kind;
} NORMALIZERS[] = {
    {"NFC", NORM_NFC}, {"NFD", NORM_NFD}, {"NFKC", NORM_NFKC}, {"NFKD", NORM_NFKD},
    {"Lowercase", NORM_LOWERCASE}, {"Strip", NORM_STRIP}, {"StripAccents", NORM_STRIP_ACCENTS},
    {"Prepend", NORM_PREPEND}, {"Replace", NORM_REPLACE}, {"BertNormalizer", NORM_BERT},
    {"Precompiled", NORM_PRECOMPILED}, {"Sequence", NORM_SEQUENCE},
};

static afo_status load_fields(const tk_loader *L, const cJSON *j, const char *field, tk_normalizer *nz) {
    char sub[160];
    const char *s;
    switch (nz->kind) {
    case NORM_STRIP:
        AFO_TRY(tk_json_bool(L, j, field, "strip_left", true, &nz->left));
        return tk_json_bool(L, j, field, "strip_right", true, &nz->right);
    case NORM_PREPEND:
    case NORM_REPLACE:
        AFO_TRY(tk_json_str(L, j, field, nz->kind == NORM_PREPEND ? "prepend" : "content", true, &s));
        if (!(nz->content = strdup(s))) return tk_oom(L);
        nz->content_len = strlen(s);
        return nz->kind == NORM_REPLACE ? tk_pattern_load(L, j, field, &nz->pattern) : AFO_OK;
    case NORM_BERT: {
        AFO_TRY(tk_json_bool(L, j, field, "clean_text", true, &nz->clean_text));
        AFO_TRY(tk_json_bool(L, j, field, "handle_chinese_chars", true, &nz->chinese));
        AFO_TRY(tk_json_bool(L, j, field, "lowercase", true, &nz->lower));
        /* strip_accents null follows lowercase */
        return tk_json_bool(L, j, field, "strip_accents", nz->lower, &nz->strip_accents);
    }
    case NORM_PRECOMPILED:
        snprintf(sub, sizeof sub, "%s.precompiled_charsmap", field);
        AFO_TRY(tk_json_str(L, j, sub, "precompiled_charsmap", true, &s));
        return tk_precompiled_load(L, sub, s, &nz->pc);
    case NORM_SEQUENCE: {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
        if (!cJSON_IsArray(arr)) return tk_bad(L, field, "\"normalizers\" missing or not an array");
        int n = cJSON_GetArraySize(arr);
        if (n && !(nz->items = calloc((size_t)n, sizeof *nz->items))) return tk_oom(L);
        for (const cJSON *e = arr->child; e; e = e->next) {
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", field, nz->nitems);
            AFO_TRY(tk_normalizer_load(L, e, sub, &nz->items[nz->nitems]));
            nz->nitems++;
        }
        return AFO_OK;
    }
    default: return AFO_OK;
    }
}

afo_status tk_normalizer_load(const tk_loader *L, const cJSON *j, const char *field, tk_normalizer **out) {
    *out = NULL;
    const char *type;
    if (!cJSON_IsObject(j)) return tk_bad(L, field, "not an object");
    AFO_TRY(tk_json_str(L, j, field, "type", true, &type));
    size_t k = 0;
    while (k < sizeof NORMALIZERS / sizeof *NORMALIZERS && strcmp(NORMALIZERS[k].name, type) != 0) k++;
    if (k == sizeof NORMALIZERS / sizeof *NORMALIZERS)
        return tk_bad(L, field, "unknown normalizer type \"%.40s\"", type);
    tk_normalizer *nz = calloc(1, sizeof *nz);
    if (!nz) return tk_oom(L);
    nz->kind = NORMALIZERS[k].kind;
    afo_status st = load_fields(L, j, field, nz);
    if (st != AFO_OK) {
        tk_normalizer_free(nz);
        return st;
    }
    *out = nz;
    return AFO_OK;
}
