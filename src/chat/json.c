/* Chat-template engine: JSON in and out with Python's json module's
 * semantics, because templates see what json.loads made of the request and
 * tojson must print exactly what transformers' json.dumps prints (ints stay
 * ints, floats keep their repr, key order is kept). cJSON cannot tell 1
 * from 1.0, so the context gets its own small parser. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"

#define JSON_MAX_DEPTH 512

typedef struct jp {
    jctx *c;
    const char *s, *start, *what;
    int depth;
} jp;

static _Noreturn void jp_fail(jp *p, const char *why) {
    jfail(p->c, AFO_ERR_INVALID_ARGUMENT, 0, 0, "%s is not valid JSON at byte %td: %s", p->what,
          p->s - p->start, why);
}

static void jp_ws(jp *p) {
    while (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r') p->s++;
}

static unsigned jp_hex4(jp *p) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char h = *p->s++;
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
        else jp_fail(p, "bad \\u escape");
    }
    return v;
}

static jv jp_string(jp *p) {
    jbuf b = {0};
    p->s++; /* opening quote */
    for (;;) {
        const char *run = p->s;
        while (*p->s && *p->s != '"' && *p->s != '\\' && (unsigned char)*p->s >= 0x20) p->s++;
        jbuf_put(p->c, &b, run, (size_t)(p->s - run));
        if (*p->s == '"') break;
        if (*p->s != '\\') jp_fail(p, *p->s ? "control character in string" : "unterminated string");
        p->s++;
        char e = *p->s++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char out[] = "\"\\/\b\f\n\r\t";
            jbuf_put(p->c, &b, &out[simple - "\"\\/bfnrt"], 1);
        } else if (e == 'u') {
            unsigned cp = jp_hex4(p);
            if (cp >= 0xD800 && cp < 0xDC00 && p->s[0] == '\\' && p->s[1] == 'u') {
                const char *save = p->s;
                p->s += 2;
                unsigned lo = jp_hex4(p);
                if (lo >= 0xDC00 && lo < 0xE000)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    p->s = save;
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD; /* a lone surrogate has no UTF-8 form */
            utf8_put(p->c, &b, cp);
        } else {
            jp_fail(p, "bad escape");
        }
    }
    p->s++;
    return (jv){.kind = JV_STR, .s = {b.p ? b.p : "", b.n}};
}

static jv jp_number(jp *p) {
    const char *t = p->s;
    bool is_float = false;
    if (*p->s == '-') p->s++;
    if (*p->s < '0' || *p->s > '9') jp_fail(p, "unexpected character");
    while (*p->s >= '0' && *p->s <= '9') p->s++;
    if (*p->s == '.') {
        is_float = true;
        p->s++;
        if (*p->s < '0' || *p->s > '9') jp_fail(p, "bad number");
        while (*p->s >= '0' && *p->s <= '9') p->s++;
    }
    if (*p->s == 'e' || *p->s == 'E') {
        is_float = true;
        p->s++;
        if (*p->s == '+' || *p->s == '-') p->s++;
        if (*p->s < '0' || *p->s > '9') jp_fail(p, "bad number");
        while (*p->s >= '0' && *p->s <= '9') p->s++;
    }
    if (!is_float) {
        char *end;
        errno = 0;
        long long v = strtoll(t, &end, 10);
        if (end == p->s && errno == 0) return jv_int(v);
        /* beyond int64: Python would keep every digit; a float is the nearest we hold */
    }
    return jv_float(strtod(t, NULL));
}

static bool jp_word(jp *p, const char *w) {
    size_t n = strlen(w);
    if (strncmp(p->s, w, n) != 0) return false;
    p->s += n;
    return true;
}

static jv jp_value(jp *p) {
    jp_ws(p);
    if (++p->depth > JSON_MAX_DEPTH) jp_fail(p, "nested too deeply");
    jv v;
    char ch = *p->s;
    if (ch == '{') {
        v = jv_dict(p->c, 0);
        p->s++;
        jp_ws(p);
        if (*p->s == '}') {
            p->s++;
        } else {
            for (;;) {
                jp_ws(p);
                if (*p->s != '"') jp_fail(p, "expected a string key");
                jv k = jp_string(p);
                jp_ws(p);
                if (*p->s++ != ':') jp_fail(p, "expected ':'");
                jdict_set(p->c, v.d, k, jp_value(p));
                jp_ws(p);
                if (*p->s == ',') {
                    p->s++;
                    continue;
                }
                if (*p->s++ != '}') jp_fail(p, "expected ',' or '}'");
                break;
            }
        }
    } else if (ch == '[') {
        v = jv_list(p->c, 0);
        p->s++;
        jp_ws(p);
        if (*p->s == ']') {
            p->s++;
        } else {
            for (;;) {
                jlist_push(p->c, v.l, jp_value(p));
                jp_ws(p);
                if (*p->s == ',') {
                    p->s++;
                    continue;
                }
                if (*p->s++ != ']') jp_fail(p, "expected ',' or ']'");
                break;
            }
        }
    } else if (ch == '"') {
        v = jp_string(p);
    } else if (jp_word(p, "true")) {
        v = jv_bool(true);
    } else if (jp_word(p, "false")) {
        v = jv_bool(false);
    } else if (jp_word(p, "null")) {
        v = jv_none();
    } else if (jp_word(p, "NaN")) {
        v = jv_float(NAN);
    } else if (jp_word(p, "Infinity")) {
        v = jv_float(INFINITY);
    } else if (jp_word(p, "-Infinity")) {
        v = jv_float(-INFINITY);
    } else {
        v = jp_number(p);
    }
    p->depth--;
    return v;
}

jv jjson_parse(jctx *c, const char *text, const char *what) {
    jp p = {c, text, text, what, 0};
    jv v = jp_value(&p);
    jp_ws(&p);
    if (*p.s) jp_fail(&p, "extra data after the value");
    return v;
}

/* ------------------------------------------------------------------ dump */
static void dump_str(jctx *c, jbuf *b, const char *s, size_t n, bool ascii) {
    jbuf_put(c, b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = ch == '"' ? "\\\"" : ch == '\\' ? "\\\\" : ch == '\n' ? "\\n" : ch == '\r' ? "\\r"
                        : ch == '\t' ? "\\t" : ch == '\b' ? "\\b" : ch == '\f' ? "\\f" : NULL;
        if (esc) {
            jbuf_puts(c, b, esc);
        } else if (ch < 0x20) {
            jbuf_printf(c, b, "\\u%04x", ch);
        } else if (ch >= 0x80 && ascii) {
            /* ensure_ascii writes UTF-16 escapes */
            size_t k;
            unsigned cp = utf8_decode(s + i, n - i, &k);
            if (cp >= 0x10000)
                jbuf_printf(c, b, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF));
            else
                jbuf_printf(c, b, "\\u%04x", cp);
            i += k - 1;
        } else {
            jbuf_put(c, b, s + i, 1);
        }
    }
    jbuf_put(c, b, "\"", 1);
}

static void dump_float(jctx *c, jbuf *b, double f) {
    char num[32];
    if (isnan(f)) strcpy(num, "NaN");
    else if (isinf(f)) strcpy(num, f < 0 ? "-Infinity" : "Infinity");
    else jfloat_repr(f, num);
    jbuf_puts(c, b, num);
}

static void newline_indent(jctx *c, jbuf *b, const jjson_opts *o, int level) {
    jbuf_put(c, b, "\n", 1);
    for (int i = 0; i < level; i++) jbuf_puts(c, b, o->indent);
}

/* A dict key as json.dumps turns it into a string. */
static void dump_key(jctx *c, const jnode *at, jbuf *b, jv k, const jjson_opts *o) {
    if (k.kind == JV_STR) {
        dump_str(c, b, k.s.p, k.s.n, o->ensure_ascii);
        return;
    }
    jbuf_put(c, b, "\"", 1);
    if (k.kind == JV_BOOL) jbuf_puts(c, b, k.b ? "true" : "false");
    else if (k.kind == JV_NONE) jbuf_puts(c, b, "null");
    else if (k.kind == JV_INT) jv_str_to(c, b, k);
    else if (k.kind == JV_FLOAT) dump_float(c, b, k.f);
    else
        jfail(c, AFO_ERR_INVALID_ARGUMENT, at ? at->line : 0, at ? at->col : 0,
              "keys must be str, int, float, bool or None, not %s", jv_type(k));
    jbuf_put(c, b, "\"", 1);
}

static int key_order(jctx *c, const void *x, const void *y, void *u) {
    return jv_cmp(c, u, **(jv *const *)x, **(jv *const *)y, "<");
}

void jjson_dump(jctx *c, const jnode *at, jbuf *b, jv v, const jjson_opts *o, int level) {
    const char *item_sep = o->item_sep ? o->item_sep : o->indent ? "," : ", ";
    const char *key_sep = o->key_sep ? o->key_sep : ": ";
    if (level > JSON_MAX_DEPTH)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, at ? at->line : 0, at ? at->col : 0, "tojson: nested too deeply");
    switch ((jkind)v.kind) {
    case JV_NONE: jbuf_puts(c, b, "null"); return;
    case JV_BOOL: jbuf_puts(c, b, v.b ? "true" : "false"); return;
    case JV_INT: jv_str_to(c, b, v); return;
    case JV_FLOAT: dump_float(c, b, v.f); return;
    case JV_STR: dump_str(c, b, v.s.p, v.s.n, o->ensure_ascii); return;
    case JV_LIST:
        if (v.l->n == 0) {
            jbuf_puts(c, b, "[]");
            return;
        }
        jbuf_put(c, b, "[", 1);
        for (size_t i = 0; i < v.l->n; i++) {
            if (i) jbuf_puts(c, b, item_sep);
            if (o->indent) newline_indent(c, b, o, level + 1);
            jjson_dump(c, at, b, v.l->v[i], o, level + 1);
        }
        if (o->indent) newline_indent(c, b, o, level);
        jbuf_put(c, b, "]", 1);
        return;
    case JV_DICT: {
        if (v.flags & JV_NAMESPACE) break;
        if (v.d->n == 0) {
            jbuf_puts(c, b, "{}");
            return;
        }
        /* the keys' order, as pointers to the key slots */
        jv **order = jalloc(c, v.d->n * sizeof *order);
        for (size_t i = 0; i < v.d->n; i++) order[i] = &v.d->k[i];
        if (o->sort_keys) jsort(c, order, v.d->n, sizeof *order, key_order, (void *)at);
        jbuf_put(c, b, "{", 1);
        for (size_t i = 0; i < v.d->n; i++) {
            if (i) jbuf_puts(c, b, item_sep);
            if (o->indent) newline_indent(c, b, o, level + 1);
            dump_key(c, at, b, *order[i], o);
            jbuf_puts(c, b, key_sep);
            jjson_dump(c, at, b, v.d->v[order[i] - v.d->k], o, level + 1);
        }
        if (o->indent) newline_indent(c, b, o, level);
        jbuf_put(c, b, "}", 1);
        return;
    }
    default: break;
    }
    jfail(c, AFO_ERR_INVALID_ARGUMENT, at ? at->line : 0, at ? at->col : 0,
          "Object of type %s is not JSON serializable", jv_type(v));
}
