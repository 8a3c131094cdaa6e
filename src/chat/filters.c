/* Chat-template engine: Jinja's built-in filters and tests, the globals
 * transformers adds (raise_exception, strftime_now), and transformers'
 * tojson (json.dumps, no HTML escaping, ensure_ascii=False). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/jinja.h"

/* Jinja's attribute paths ("a.b", "items.0") as filters take them. */
static jv attr_path(jctx *c, const jnode *at, jv v, jv path) {
    if (path.kind == JV_INT) return jgetitem(c, at, v, path);
    size_t n;
    const char *s = jarg_str(c, at, path, "", &n);
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && s[j] != '.') j++;
        jv key = jv_str(c, s + i, j - i);
        bool digits = j > i;
        for (size_t k = i; k < j; k++) digits = digits && s[k] >= '0' && s[k] <= '9';
        if (digits) key = jv_int(strtoll(key.s.p, NULL, 10));
        v = jgetitem(c, at, v, key);
        i = j + 1;
    }
    return v;
}

/* A value as a sort/compare key: lower-cased when the filter ignores case. */
static jv sort_key(jctx *c, jv v, bool case_sensitive) {
    return v.kind == JV_STR && !case_sensitive ? jstr_case(c, v, 'l') : v;
}

/* ----------------------------------------------------------------- strings */
static jv f_trim(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("trim", "chars");
    return jstr_strip(c, at, jv_to_str(c, v), p[0], 3);
}
static jv f_upper(jctx *c, const jnode *at, jv v, jargs *a) { NOARGS("upper"); return jstr_case(c, jv_to_str(c, v), 'u'); }
static jv f_lower(jctx *c, const jnode *at, jv v, jargs *a) { NOARGS("lower"); return jstr_case(c, jv_to_str(c, v), 'l'); }
static jv f_capitalize(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("capitalize");
    return jstr_case(c, jv_to_str(c, v), 'c');
}

/* Jinja's title: words start after spaces, '-', and opening brackets. */
static jv f_title(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("title");
    jv s = jv_to_str(c, v);
    jbuf b = {0};
    bool start = true;
    for (size_t i = 0; i < s.s.n; i++) {
        char ch = s.s.p[i];
        bool sep = strchr(" \t\n\r\f\v-({[<", ch) != NULL;
        if (!sep && start && ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
        else if (!sep && !start && ch >= 'A' && ch <= 'Z') ch = (char)(ch + 32);
        start = sep;
        jbuf_put(c, &b, &ch, 1);
    }
    return jv_strbuf(&b);
}

static jv f_replace(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("replace", "old", "new", "count");
    jv args[3] = {p[0], p[1], p[2]};
    jargs ma = {args, jgiven(p[2]) ? 3 : 2, NULL, NULL, 0};
    bool found;
    jv m = jmethod_get(c, at, jv_to_str(c, v), "replace", &found);
    return jcall(c, at, m, &ma);
}

static jv f_string(jctx *c, const jnode *at, jv v, jargs *a) { NOARGS("string"); return jv_to_str(c, v); }
static jv f_safe(jctx *c, const jnode *at, jv v, jargs *a) { NOARGS("safe"); return v; }

static jv f_escape(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("escape");
    jv s = jv_to_str(c, v);
    jbuf b = {0};
    for (size_t i = 0; i < s.s.n; i++) {
        const char *e = s.s.p[i] == '&' ? "&amp;" : s.s.p[i] == '<' ? "&lt;" : s.s.p[i] == '>' ? "&gt;"
                      : s.s.p[i] == '"' ? "&#34;" : s.s.p[i] == '\'' ? "&#39;" : NULL;
        if (e) jbuf_puts(c, &b, e);
        else jbuf_put(c, &b, s.s.p + i, 1);
    }
    return jv_strbuf(&b);
}

static jv f_indent(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("indent", "width", "first", "blank");
    jbuf ind = {0};
    if (p[0].kind == JV_STR) jbuf_put(c, &ind, p[0].s.p, p[0].s.n);
    else for (int64_t i = jarg_int(c, at, p[0], 4); i > 0; i--) jbuf_put(c, &ind, " ", 1);
    bool first = jarg_bool(p[1], false), blank = jarg_bool(p[2], false);
    /* Jinja appends a newline before splitting, so a trailing one survives */
    jv s = jarith(c, at, '~', v, jv_cstr("\n"));
    jlist *lines = jstr_splitlines(c, s);
    jbuf b = {0};
    if (first) jbuf_put(c, &b, ind.p, ind.n);
    for (size_t i = 0; i < lines->n; i++) {
        jv line = lines->v[i];
        if (i) {
            jbuf_put(c, &b, "\n", 1);
            if (blank || line.s.n) jbuf_put(c, &b, ind.p, ind.n);
        }
        jbuf_put(c, &b, line.s.p, line.s.n);
    }
    return jv_strbuf(&b);
}

static jv f_center(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("center", "width");
    jv s = jv_to_str(c, v);
    int64_t width = jarg_int(c, at, p[0], 80), len = (int64_t)utf8_len(s.s.p, s.s.n);
    if (width <= len) return s;
    if (width > JINJA_MAX_OUTPUT) jfail_at(c, at, "center: width too large");
    int64_t pad = width - len, left = pad / 2 + (pad & width & 1); /* CPython's split */
    jbuf b = {0};
    for (int64_t i = 0; i < left; i++) jbuf_put(c, &b, " ", 1);
    jbuf_put(c, &b, s.s.p, s.s.n);
    for (int64_t i = left; i < pad; i++) jbuf_put(c, &b, " ", 1);
    return jv_strbuf(&b);
}

static jv f_truncate(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("truncate", "length", "killwords", "end", "leeway");
    jv s = jv_to_str(c, v);
    int64_t length = jarg_int(c, at, p[0], 255), leeway = jarg_int(c, at, p[3], 5);
    size_t end_n;
    const char *end = jarg_str(c, at, p[2], "...", &end_n);
    int64_t len = (int64_t)utf8_len(s.s.p, s.s.n), keep = length - (int64_t)utf8_len(end, end_n);
    if (length < (int64_t)utf8_len(end, end_n)) jfail_at(c, at, "expected length >= len(end)");
    if (leeway < 0) jfail_at(c, at, "expected leeway >= 0");
    if (len <= length + leeway) return s;
    size_t cut = utf8_offset(s.s.p, s.s.n, (size_t)keep);
    if (!jarg_bool(p[1], false)) {
        /* drop the last, partial word: rsplit(" ", 1)[0] */
        for (size_t i = cut; i-- > 0;)
            if (s.s.p[i] == ' ') {
                cut = i;
                break;
            }
    }
    jbuf b = {0};
    jbuf_put(c, &b, s.s.p, cut);
    jbuf_put(c, &b, end, end_n);
    return jv_strbuf(&b);
}

static jv f_wordcount(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("wordcount");
    jv s = jv_to_str(c, v);
    int64_t words = 0;
    bool in = false;
    for (size_t i = 0; i < s.s.n; i++) {
        unsigned char ch = (unsigned char)s.s.p[i];
        bool w = ch >= 0x80 || ch == '_' || (ch >= '0' && ch <= '9') || ((ch | 32) >= 'a' && (ch | 32) <= 'z');
        words += w && !in;
        in = w;
    }
    return jv_int(words);
}

static jv f_tojson(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
    jjson_opts o = {.ensure_ascii = jarg_bool(p[0], false), .sort_keys = jarg_bool(p[3], false)};
    if (p[1].kind == JV_STR) {
        o.indent = jv_cstr_of(c, p[1]);
    } else if (jgiven(p[1]) && p[1].kind != JV_NONE) {
        int64_t n = jarg_int(c, at, p[1], 0);
        char *ind = jalloc(c, (size_t)(n > 0 ? n : 0) + 1);
        for (int64_t i = 0; i < n && i < 256; i++) ind[i] = ' ';
        o.indent = ind;
    }
    if (jgiven(p[2]) && p[2].kind != JV_NONE) {
        jlist *sep = jv_iter(c, at, p[2]);
        if (sep->n != 2 || sep->v[0].kind != JV_STR || sep->v[1].kind != JV_STR)
            jfail_at(c, at, "tojson: separators must be a pair of strings");
        o.item_sep = jv_cstr_of(c, sep->v[0]);
        o.key_sep = jv_cstr_of(c, sep->v[1]);
    }
    jbuf b = {0};
    jjson_dump(c, at, &b, v, &o, 0);
    return jv_strbuf(&b);
}

/* ------------------------------------------------------------ collections */
static jv f_length(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("length");
    switch ((jkind)v.kind) {
    case JV_UNDEF: return jv_int(0);
    case JV_STR: return jv_int((int64_t)utf8_len(v.s.p, v.s.n));
    case JV_LIST: return jv_int((int64_t)v.l->n);
    case JV_DICT:
        if (!(v.flags & JV_NAMESPACE)) return jv_int((int64_t)v.d->n);
        break;
    default: break;
    }
    jfail_at(c, at, "object of type '%s' has no len()", jv_type(v));
}

static jv f_list(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("list");
    jlist *items = jv_iter(c, at, v);
    jv out = jv_list(c, items->n);
    for (size_t i = 0; i < items->n; i++) jlist_push(c, out.l, items->v[i]);
    return out;
}

static jv f_items(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("items");
    jv out = jv_list(c, 0);
    if (v.kind == JV_UNDEF) return out;
    if (v.kind != JV_DICT || (v.flags & JV_NAMESPACE)) jfail_at(c, at, "can only get item pairs from a mapping, not '%s'", jv_type(v));
    for (size_t i = 0; i < v.d->n; i++) {
        jv pair = jv_list(c, 2);
        pair.flags = JV_TUPLE;
        jlist_push(c, pair.l, v.d->k[i]);
        jlist_push(c, pair.l, v.d->v[i]);
        jlist_push(c, out.l, pair);
    }
    return out;
}

static jv f_first(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("first");
    jlist *items = jv_iter(c, at, v);
    return items->n ? items->v[0] : jv_undef(c, "No first item, sequence was empty.", NULL, JU_HINT);
}

static jv f_last(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("last");
    jlist *items = jv_iter(c, at, v);
    return items->n ? items->v[items->n - 1] : jv_undef(c, "No last item, sequence was empty.", NULL, JU_HINT);
}

static jv f_reverse(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("reverse");
    if (v.kind == JV_STR) {
        jv chars = f_list(c, at, v, a);
        jbuf b = {0};
        for (size_t i = chars.l->n; i-- > 0;) jbuf_put(c, &b, chars.l->v[i].s.p, chars.l->v[i].s.n);
        return jv_strbuf(&b);
    }
    jlist *items = jv_iter(c, at, v);
    jv out = jv_list(c, items->n);
    for (size_t i = items->n; i-- > 0;) jlist_push(c, out.l, items->v[i]);
    return out;
}

static jv f_join(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("join", "d", "attribute");
    size_t sn;
    const char *sep = jarg_str(c, at, p[0], "", &sn);
    jlist *items = jv_iter(c, at, v);
    jbuf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (i) jbuf_put(c, &b, sep, sn);
        jv_str_to(c, &b, jgiven(p[1]) ? attr_path(c, at, items->v[i], p[1]) : items->v[i]);
    }
    return jv_strbuf(&b);
}

static jv f_batch(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("batch", "linecount", "fill_with");
    int64_t k = jarg_int(c, at, p[0], 1);
    if (k <= 0) jfail_at(c, at, "batch: linecount must be positive");
    jlist *items = jv_iter(c, at, v);
    jv out = jv_list(c, 0), row = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (i % (size_t)k == 0) jlist_push(c, out.l, row = jv_list(c, (size_t)k));
        jlist_push(c, row.l, items->v[i]);
    }
    if (jgiven(p[1]) && row.kind == JV_LIST)
        while (row.l->n < (size_t)k) jlist_push(c, row.l, p[1]);
    return out;
}

static jv f_default(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("default", "default_value", "boolean");
    bool use = v.kind == JV_UNDEF || (jarg_bool(p[1], false) && !jv_truthy(v));
    return use ? (jgiven(p[0]) ? p[0] : jv_cstr("")) : v;
}

/* The items a filter keeps, ordered by key; `unique` drops repeats. */
typedef struct keyed { jv key, item; } keyed;
static int keyed_cmp(jctx *c, const void *x, const void *y, void *at) {
    return jv_cmp(c, at, ((const keyed *)x)->key, ((const keyed *)y)->key, "<");
}

static keyed *keyed_items(jctx *c, const jnode *at, jv v, jv attribute, bool case_sensitive, size_t *n) {
    jlist *items = jv_iter(c, at, v);
    keyed *k = jalloc(c, (items->n + 1) * sizeof *k);
    for (size_t i = 0; i < items->n; i++) {
        k[i].item = items->v[i];
        k[i].key = sort_key(c, jgiven(attribute) ? attr_path(c, at, items->v[i], attribute) : items->v[i], case_sensitive);
    }
    *n = items->n;
    return k;
}

static jv f_sort(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("sort", "reverse", "case_sensitive", "attribute");
    size_t n;
    keyed *k = keyed_items(c, at, v, p[2], jarg_bool(p[1], false), &n);
    bool rev = jarg_bool(p[0], false);
    if (rev) /* Python's reverse sort keeps equal items in order: sort the reversed list, then reverse */
        for (size_t i = 0; i < n / 2; i++) { keyed t = k[i]; k[i] = k[n - 1 - i]; k[n - 1 - i] = t; }
    jsort(c, k, n, sizeof *k, keyed_cmp, (void *)at);
    jv out = jv_list(c, n);
    for (size_t i = 0; i < n; i++) jlist_push(c, out.l, k[rev ? n - 1 - i : i].item);
    return out;
}

static jv f_dictsort(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("dictsort", "case_sensitive", "by", "reverse");
    bool by_value = jgiven(p[1]) && jv_eq(p[1], jv_cstr("value"));
    jv pairs = f_items(c, at, v, &(jargs){0});
    jargs sa = {.nkw = 3, .kwn = (const char *[]){"reverse", "case_sensitive", "attribute"},
                .kwv = (jv[]){jv_bool(jarg_bool(p[2], false)), jv_bool(jarg_bool(p[0], false)), jv_int(by_value)}};
    return f_sort(c, at, pairs, &sa);
}

static jv f_unique(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("unique", "case_sensitive", "attribute");
    size_t n;
    keyed *k = keyed_items(c, at, v, p[1], jarg_bool(p[0], false), &n);
    jv out = jv_list(c, 0), seen = jv_list(c, 0);
    for (size_t i = 0; i < n; i++) {
        if (jcontains(c, at, k[i].key, seen)) continue;
        jlist_push(c, seen.l, k[i].key);
        jlist_push(c, out.l, k[i].item);
    }
    return out;
}

static jv min_max(jctx *c, const jnode *at, jv v, jargs *a, int sign) {
    BIND(sign < 0 ? "min" : "max", "case_sensitive", "attribute");
    size_t n;
    keyed *k = keyed_items(c, at, v, p[1], jarg_bool(p[0], false), &n);
    if (!n) return jv_undef(c, "No aggregated item, sequence was empty.", NULL, JU_HINT);
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (jv_cmp(c, at, k[i].key, k[best].key, "<") * sign > 0) best = i;
    return k[best].item;
}
static jv f_min(jctx *c, const jnode *at, jv v, jargs *a) { return min_max(c, at, v, a, -1); }
static jv f_max(jctx *c, const jnode *at, jv v, jargs *a) { return min_max(c, at, v, a, 1); }

static jv f_sum(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("sum", "attribute", "start");
    jv total = jgiven(p[1]) ? p[1] : jv_int(0);
    jlist *items = jv_iter(c, at, v);
    for (size_t i = 0; i < items->n; i++)
        total = jarith(c, at, '+', total, jgiven(p[0]) ? attr_path(c, at, items->v[i], p[0]) : items->v[i]);
    return total;
}

/* map: a filter over every item, or one attribute of every item. */
static jv f_map(jctx *c, const jnode *at, jv v, jargs *a) {
    jlist *items = jv_iter(c, at, v);
    jv out = jv_list(c, items->n);
    jv *attribute = NULL, *dflt = NULL;
    for (size_t k = 0; k < a->nkw; k++) {
        if (!strcmp(a->kwn[k], "attribute")) attribute = &a->kwv[k];
        else if (!strcmp(a->kwn[k], "default")) dflt = &a->kwv[k];
    }
    if (attribute) {
        for (size_t i = 0; i < items->n; i++) {
            jv x = attr_path(c, at, items->v[i], *attribute);
            jlist_push(c, out.l, x.kind == JV_UNDEF && dflt ? *dflt : x);
        }
        return out;
    }
    if (a->npos == 0) jfail_at(c, at, "map: expected a filter name or attribute=");
    const char *name = jv_cstr_of(c, a->pos[0]);
    jbuiltin f = jfilter_find(name);
    if (!f) jfail_at(c, at, "map: no filter named '%s'", name);
    jargs rest = {a->pos + 1, a->npos - 1, a->kwn, a->kwv, a->nkw};
    for (size_t i = 0; i < items->n; i++) jlist_push(c, out.l, f(c, at, items->v[i], &rest));
    return out;
}

/* select / reject / selectattr / rejectattr */
static jv select_items(jctx *c, const jnode *at, jv v, jargs *a, bool keep, bool by_attr) {
    jlist *items = jv_iter(c, at, v);
    size_t first = by_attr ? 1 : 0;
    if (by_attr && a->npos == 0) jfail_at(c, at, "selectattr/rejectattr: missing attribute");
    jtest t = NULL;
    if (a->npos > first) {
        const char *name = jv_cstr_of(c, a->pos[first]);
        if (!(t = jtest_find(name))) jfail_at(c, at, "no test named '%s'", name);
    }
    jargs rest = {a->pos + first + 1, a->npos > first ? a->npos - first - 1 : 0, a->kwn, a->kwv, a->nkw};
    jv out = jv_list(c, 0);
    for (size_t i = 0; i < items->n; i++) {
        jv x = by_attr ? attr_path(c, at, items->v[i], a->pos[0]) : items->v[i];
        bool ok = t ? t(c, at, x, &rest) : jv_truthy(x);
        if (ok == keep) jlist_push(c, out.l, items->v[i]);
    }
    return out;
}
static jv f_select(jctx *c, const jnode *at, jv v, jargs *a) { return select_items(c, at, v, a, true, false); }
static jv f_reject(jctx *c, const jnode *at, jv v, jargs *a) { return select_items(c, at, v, a, false, false); }
static jv f_selectattr(jctx *c, const jnode *at, jv v, jargs *a) { return select_items(c, at, v, a, true, true); }
static jv f_rejectattr(jctx *c, const jnode *at, jv v, jargs *a) { return select_items(c, at, v, a, false, true); }

static jv f_attr(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("attr", "name");
    const char *name = jarg_str(c, at, p[0], "", NULL);
    if (v.kind == JV_DICT && !(v.flags & JV_NAMESPACE)) { /* getattr, not the item */
        bool found;
        jv m = jmethod_get(c, at, v, name, &found);
        return found ? m : jv_undef(c, name, "dict", JU_ATTR);
    }
    return jgetattr(c, at, v, name);
}

/* ---------------------------------------------------------------- numbers */
static jv f_int(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("int", "default", "base");
    int64_t base = jarg_int(c, at, p[1], 10);
    if (v.kind == JV_INT || v.kind == JV_BOOL) return jv_int(v.kind == JV_BOOL ? v.b : v.i);
    double f = NAN;
    if (v.kind == JV_FLOAT) f = v.f;
    if (v.kind == JV_STR) {
        const char *s = jv_cstr_of(c, jstr_strip(c, at, v, (jv){0}, 3));
        char *end;
        errno = 0;
        long long i = strtoll(s, &end, (int)base);
        if (*s && !*end) {
            if (errno == ERANGE) jfail_at(c, at, "int: '%s' does not fit in 64 bits", s); /* Python: a big int */
            return jv_int(i);
        }
        double d = strtod(s, &end);
        if (*s && !*end) f = d;
    }
    /* Python's int() of NaN is a ValueError, which Jinja answers with the
     * default; infinity is an OverflowError it lets through; past 64 bits
     * Python gives a big int, which afo has not */
    if (isnan(f)) return jgiven(p[0]) ? p[0] : jv_int(0);
    if (isinf(f)) jfail_at(c, at, "int: cannot convert float infinity to integer");
    if (!(fabs(f) < 0x1p63)) jfail_at(c, at, "int: %g does not fit in 64 bits", f);
    return jv_int((int64_t)f);
}

static jv f_float(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("float", "default");
    if (jv_is_number(v)) return jv_float(jv_num(v));
    if (v.kind == JV_STR) {
        const char *s = jv_cstr_of(c, jstr_strip(c, at, v, (jv){0}, 3));
        char *end;
        double f = strtod(s, &end);
        if (*s && !*end) return jv_float(f);
    }
    return jgiven(p[0]) ? p[0] : jv_float(0.0);
}

static jv f_abs(jctx *c, const jnode *at, jv v, jargs *a) {
    NOARGS("abs");
    if (v.kind == JV_FLOAT) return jv_float(fabs(v.f));
    if (v.kind == JV_INT || v.kind == JV_BOOL) {
        int64_t i = v.kind == JV_BOOL ? v.b : v.i;
        if (i == INT64_MIN) jfail_at(c, at, "integer overflow in abs");
        return jv_int(i < 0 ? -i : i);
    }
    jfail_at(c, at, "bad operand type for abs(): '%s'", jv_type(v));
}

static jv f_round(jctx *c, const jnode *at, jv v, jargs *a) {
    BIND("round", "precision", "method");
    if (!jv_is_number(v)) jfail_at(c, at, "round: expected a number, not '%s'", jv_type(v));
    int64_t prec = jarg_int(c, at, p[0], 0);
    const char *method = jarg_str(c, at, p[1], "common", NULL);
    double x = jv_num(v), scale = pow(10.0, (double)prec);
    if (!strcmp(method, "common")) { /* Python's round: halves to even, ints stay ints */
        if (v.kind != JV_FLOAT && prec >= 0) return jv_int(v.kind == JV_BOOL ? v.b : v.i);
        /* past a double's range of digits x stays; far left of them it is 0 */
        double y = x * scale, r = !isfinite(y) ? x : scale == 0 ? copysign(0.0, x) : rint(y) / scale;
        if (v.kind == JV_FLOAT) return jv_float(r);
        if (!(fabs(r) < 0x1p63)) jfail_at(c, at, "round: integer overflow");
        return jv_int((int64_t)r);
    }
    if (!strcmp(method, "ceil")) return jv_float(ceil(x * scale) / scale);
    if (!strcmp(method, "floor")) return jv_float(floor(x * scale) / scale);
    jfail_at(c, at, "round: method must be 'common', 'ceil' or 'floor'");
}

/* ------------------------------------------------------------------ table */
typedef struct named_filter { const char *name; jbuiltin fn; } named_filter;
static const named_filter FILTERS[] = {
    {"abs", f_abs}, {"attr", f_attr}, {"batch", f_batch}, {"capitalize", f_capitalize}, {"center", f_center},
    {"count", f_length}, {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape}, {"first", f_first}, {"float", f_float}, {"indent", f_indent}, {"int", f_int},
    {"items", f_items}, {"join", f_join}, {"last", f_last}, {"length", f_length}, {"list", f_list},
    {"lower", f_lower}, {"map", f_map}, {"max", f_max}, {"min", f_min}, {"reject", f_reject},
    {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse}, {"round", f_round},
    {"safe", f_safe}, {"select", f_select}, {"selectattr", f_selectattr}, {"sort", f_sort}, {"string", f_string},
    {"sum", f_sum}, {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim}, {"truncate", f_truncate},
    {"unique", f_unique}, {"upper", f_upper}, {"wordcount", f_wordcount},
};

jbuiltin jfilter_find(const char *name) {
    for (size_t i = 0; i < sizeof FILTERS / sizeof *FILTERS; i++)
        if (!strcmp(FILTERS[i].name, name)) return FILTERS[i].fn;
    return NULL;
}
