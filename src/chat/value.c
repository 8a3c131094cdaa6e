/* Chat-template engine: the arena, strings, and values with Python's
 * semantics for truth, equality, ordering, str() and repr(). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "core/internal.h"

/* ------------------------------------------------------------------ arena */
struct jchunk {
    jchunk *next;
    size_t size, used;
    max_align_t data[];
};

void *jalloc(jctx *c, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    jchunk *k = c->chunks;
    if (!k || k->size - k->used < n) {
        size_t size = n > (64u << 10) ? n : (64u << 10);
        if (c->used + size > JINJA_MAX_MEMORY)
            jfail(c, AFO_ERR_OUT_OF_MEMORY, 0, 0, "the template needs more than %u MiB of memory",
                  JINJA_MAX_MEMORY >> 20);
        k = malloc(sizeof *k + size);
        if (!k) jfail(c, AFO_ERR_OUT_OF_MEMORY, 0, 0, "out of memory");
        k->size = size;
        k->used = 0;
        c->used += size;
        /* A big one-off block goes behind the current chunk so the
         * current chunk's free space stays in use. */
        if (c->chunks && size == n) {
            k->next = c->chunks->next;
            c->chunks->next = k;
        } else {
            k->next = c->chunks;
            c->chunks = k;
        }
    }
    void *p = (char *)k->data + k->used;
    k->used += n;
    memset(p, 0, n);
    return p;
}

char *jstrdup(jctx *c, const char *s, size_t n) {
    char *p = jalloc(c, n + 1);
    if (n) memcpy(p, s, n);
    return p;
}

void jarena_free(jctx *c) {
    for (jchunk *k = c->chunks, *next; k; k = next) {
        next = k->next;
        free(k);
    }
    c->chunks = NULL;
    c->used = 0;
}

void jfail(jctx *c, afo_status st, int line, int col, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        afo_error(st, "chat template line %d, column %d: %s", line, col, msg);
    else
        afo_error(st, "chat template: %s", msg);
    longjmp(c->fail, 1);
}

void jnest_enter(jctx *c, const jnode *at) {
    if (++c->nesting > JINJA_MAX_NESTING)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, at ? at->line : 0, at ? at->col : 0,
              "expressions or values nested deeper than %d levels", JINJA_MAX_NESTING);
}

/* ---------------------------------------------------------------- buffers */
void jbuf_put(jctx *c, jbuf *b, const char *s, size_t n) {
    if (b->n + n > JINJA_MAX_OUTPUT)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, 0, 0, "the text rendered or a string built exceeds %u MiB",
              JINJA_MAX_OUTPUT >> 20);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = jalloc(c, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void jbuf_puts(jctx *c, jbuf *b, const char *s) { jbuf_put(c, b, s, strlen(s)); }

void jbuf_printf(jctx *c, jbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    jbuf_put(c, b, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ------------------------------------------------------------------ UTF-8 */
size_t utf8_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

size_t utf8_offset(const char *s, size_t n, size_t i) {
    size_t off = 0;
    while (off < n && i > 0) {
        off++;
        while (off < n && ((unsigned char)s[off] & 0xC0) == 0x80) off++;
        i--;
    }
    return off;
}

unsigned utf8_decode(const char *s, size_t n, size_t *len) {
    unsigned char b = (unsigned char)s[0];
    size_t k = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    if (k > n) k = n;
    unsigned cp = k == 1 ? b : b & (k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
    for (size_t i = 1; i < k; i++) cp = cp << 6 | ((unsigned char)s[i] & 63);
    *len = k;
    return cp;
}

void utf8_put(jctx *c, jbuf *b, unsigned cp) {
    char u[4];
    size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const unsigned char lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (size_t i = n; i-- > 1; cp >>= 6) u[i] = (char)(0x80 | (cp & 63));
    u[0] = (char)(lead[n] | cp);
    jbuf_put(c, b, u, n);
}

/* ------------------------------------------------------------ constructors */
jv jv_undef(jctx *c, const char *name, const char *owner, jundef_how how) {
    jundef *u = jalloc(c, sizeof *u);
    u->name = name;
    u->owner = owner;
    u->how = how;
    return (jv){.kind = JV_UNDEF, .u = u};
}

jv jv_str(jctx *c, const char *s, size_t n) { return (jv){.kind = JV_STR, .s = {jstrdup(c, s, n), n}}; }
jv jv_cstr(const char *s) { return (jv){.kind = JV_STR, .s = {s, strlen(s)}}; }

jv jv_list(jctx *c, size_t cap) {
    jlist *l = jalloc(c, sizeof *l);
    if (cap) l->v = jalloc(c, cap * sizeof *l->v);
    l->cap = cap;
    return (jv){.kind = JV_LIST, .l = l};
}

jv jv_dict(jctx *c, size_t cap) {
    jdict *d = jalloc(c, sizeof *d);
    if (cap) {
        d->k = jalloc(c, cap * sizeof *d->k);
        d->v = jalloc(c, cap * sizeof *d->v);
    }
    d->cap = cap;
    return (jv){.kind = JV_DICT, .d = d};
}

void jlist_push(jctx *c, jlist *l, jv v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jv *p = jalloc(c, cap * sizeof *p);
        if (l->n) memcpy(p, l->v, l->n * sizeof *p);
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

jv *jdict_get(const jdict *d, jv k) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_eq(d->k[i], k)) return &d->v[i];
    return NULL;
}

jv *jdict_gets(const jdict *d, const char *key) { return jdict_get(d, jv_cstr(key)); }

void jdict_set(jctx *c, jdict *d, jv k, jv v) {
    jv *slot = jdict_get(d, k);
    if (slot) {
        *slot = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jv *nk = jalloc(c, cap * sizeof *nk), *nv = jalloc(c, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk, d->v = nv, d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

/* ---------------------------------------------------------------- queries */
const char *jv_type(jv v) {
    switch ((jkind)v.kind) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.flags & JV_TUPLE ? "tuple" : "list";
    case JV_DICT: return v.flags & JV_NAMESPACE ? "Namespace" : "dict";
    case JV_FUNC: return v.fn->type == JF_MACRO ? "Macro" : "builtin_function_or_method";
    case JV_LOOP: return "LoopContext";
    }
    return "object";
}

bool jv_truthy(jv v) {
    switch ((jkind)v.kind) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v.b;
    case JV_INT: return v.i != 0;
    case JV_FLOAT: return v.f != 0;
    case JV_STR: return v.s.n != 0;
    case JV_LIST: return v.l->n != 0;
    case JV_DICT: return (v.flags & JV_NAMESPACE) || v.d->n != 0;
    default: return true;
    }
}

bool jv_is_number(jv v) { return v.kind == JV_INT || v.kind == JV_FLOAT || v.kind == JV_BOOL; }

double jv_num(jv v) { return v.kind == JV_FLOAT ? v.f : v.kind == JV_INT ? (double)v.i : v.b; }

static int64_t jv_intval(jv v) { return v.kind == JV_BOOL ? v.b : v.i; }

static bool eq_at(jv a, jv b, int depth);
bool jv_eq(jv a, jv b) { return eq_at(a, b, 0); }

/* Beyond JINJA_MAX_NESTING levels structures compare unequal rather than
 * overflow the stack; only the template itself can build such values. */
static bool eq_at(jv a, jv b, int depth) {
    if (depth > JINJA_MAX_NESTING) return false;
    if (jv_is_number(a) && jv_is_number(b)) {
        if (a.kind != JV_FLOAT && b.kind != JV_FLOAT) return jv_intval(a) == jv_intval(b);
        return jv_num(a) == jv_num(b);
    }
    if (a.kind != b.kind) return false;
    switch ((jkind)a.kind) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a.s.n == b.s.n && memcmp(a.s.p, b.s.p, a.s.n) == 0;
    case JV_LIST:
        if ((a.flags & JV_TUPLE) != (b.flags & JV_TUPLE) || a.l->n != b.l->n) return false;
        for (size_t i = 0; i < a.l->n; i++)
            if (!eq_at(a.l->v[i], b.l->v[i], depth + 1)) return false;
        return true;
    case JV_DICT:
        if (a.flags & JV_NAMESPACE) return a.d == b.d;
        if (a.d->n != b.d->n) return false;
        for (size_t i = 0; i < a.d->n; i++) {
            jv *w = jdict_get(b.d, a.d->k[i]);
            if (!w || !eq_at(a.d->v[i], *w, depth + 1)) return false;
        }
        return true;
    case JV_FUNC: return a.fn == b.fn;
    case JV_LOOP: return a.loop == b.loop;
    default: return false;
    }
}

int jv_cmp(jctx *c, const jnode *at, jv a, jv b, const char *op) {
    if (a.kind == JV_UNDEF) jfail_undef(c, at, a);
    if (b.kind == JV_UNDEF) jfail_undef(c, at, b);
    if (jv_is_number(a) && jv_is_number(b)) {
        if (a.kind != JV_FLOAT && b.kind != JV_FLOAT) {
            int64_t x = jv_intval(a), y = jv_intval(b);
            return (x > y) - (x < y);
        }
        double x = jv_num(a), y = jv_num(b);
        return (x > y) - (x < y);
    }
    if (a.kind == JV_STR && b.kind == JV_STR) {
        /* UTF-8 byte order is code point order, as Python compares. */
        size_t n = a.s.n < b.s.n ? a.s.n : b.s.n;
        int r = n ? memcmp(a.s.p, b.s.p, n) : 0;
        if (r) return r < 0 ? -1 : 1;
        return (a.s.n > b.s.n) - (a.s.n < b.s.n);
    }
    if (a.kind == JV_LIST && b.kind == JV_LIST && (a.flags & JV_TUPLE) == (b.flags & JV_TUPLE)) {
        for (size_t i = 0; i < a.l->n && i < b.l->n; i++)
            if (!jv_eq(a.l->v[i], b.l->v[i])) {
                jnest_enter(c, at);
                int r = jv_cmp(c, at, a.l->v[i], b.l->v[i], op);
                jnest_leave(c);
                return r;
            }
        return (a.l->n > b.l->n) - (a.l->n < b.l->n);
    }
    jfail(c, AFO_ERR_INVALID_ARGUMENT, at ? at->line : 0, at ? at->col : 0,
          "'%s' not supported between instances of '%s' and '%s'", op, jv_type(a), jv_type(b));
}

/* ------------------------------------------------------------- str / repr */
void jfloat_repr(double f, char out[32]) {
    if (isnan(f)) {
        strcpy(out, "nan");
        return;
    }
    if (isinf(f)) {
        strcpy(out, f < 0 ? "-inf" : "inf");
        return;
    }
    /* Shortest digits that read back as f, laid out as Python's repr does:
     * positional for exponents -4 ≤ e < 16, otherwise scientific. */
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    char digits[20];
    int nd = 0, neg = tmp[0] == '-';
    const char *p = tmp + neg;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    char *o = out;
    if (neg) *o++ = '-';
    if (exp10 < -4 || exp10 >= 16) {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        sprintf(o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
        return;
    }
    if (exp10 < 0) {
        *o++ = '0', *o++ = '.';
        for (int i = -1; i > exp10; i--) *o++ = '0';
        memcpy(o, digits, (size_t)nd);
        o += nd;
    } else {
        for (int i = 0; i <= exp10; i++) *o++ = i < nd ? digits[i] : '0';
        *o++ = '.';
        if (nd > exp10 + 1) {
            memcpy(o, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
            o += nd - exp10 - 1;
        } else {
            *o++ = '0';
        }
    }
    *o = '\0';
}

/* Python's repr of a str: single quotes unless the text has ' and no ". */
static void repr_str(jctx *c, jbuf *b, const char *s, size_t n) {
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    jbuf_put(c, b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == (unsigned char)q || ch == '\\') {
            jbuf_put(c, b, "\\", 1);
            jbuf_put(c, b, s + i, 1);
        } else if (ch == '\n') {
            jbuf_puts(c, b, "\\n");
        } else if (ch == '\r') {
            jbuf_puts(c, b, "\\r");
        } else if (ch == '\t') {
            jbuf_puts(c, b, "\\t");
        } else if (ch < 0x20 || ch == 0x7f) {
            jbuf_printf(c, b, "\\x%02x", ch);
        } else if (ch == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] <= 0xA0) {
            /* U+0080..U+00A0 are not printable for Python */
            jbuf_printf(c, b, "\\x%02x", (unsigned char)s[i + 1]);
            i++;
        } else {
            jbuf_put(c, b, s + i, 1);
        }
    }
    jbuf_put(c, b, &q, 1);
}

static void container_to(jctx *c, jbuf *b, jv v) {
    jnest_enter(c, NULL);
    if (v.kind == JV_LIST) {
        bool tuple = v.flags & JV_TUPLE;
        jbuf_puts(c, b, tuple ? "(" : "[");
        for (size_t i = 0; i < v.l->n; i++) {
            if (i) jbuf_puts(c, b, ", ");
            jv_repr_to(c, b, v.l->v[i]);
        }
        jbuf_puts(c, b, tuple ? (v.l->n == 1 ? ",)" : ")") : "]");
        jnest_leave(c);
        return;
    }
    if (v.flags & JV_NAMESPACE) jbuf_puts(c, b, "<Namespace ");
    jbuf_puts(c, b, "{");
    for (size_t i = 0; i < v.d->n; i++) {
        if (i) jbuf_puts(c, b, ", ");
        jv_repr_to(c, b, v.d->k[i]);
        jbuf_puts(c, b, ": ");
        jv_repr_to(c, b, v.d->v[i]);
    }
    jbuf_puts(c, b, v.flags & JV_NAMESPACE ? "}>" : "}");
    jnest_leave(c);
}

void jv_str_to(jctx *c, jbuf *b, jv v) {
    char num[32];
    switch ((jkind)v.kind) {
    case JV_UNDEF: return;
    case JV_NONE: jbuf_puts(c, b, "None"); return;
    case JV_BOOL: jbuf_puts(c, b, v.b ? "True" : "False"); return;
    case JV_INT: jbuf_printf(c, b, "%lld", (long long)v.i); return;
    case JV_FLOAT: jfloat_repr(v.f, num); jbuf_puts(c, b, num); return;
    case JV_STR: jbuf_put(c, b, v.s.p, v.s.n); return;
    case JV_LIST:
    case JV_DICT: container_to(c, b, v); return;
    case JV_FUNC: jbuf_printf(c, b, "<function %s>", v.fn->name); return;
    case JV_LOOP: jbuf_puts(c, b, "<LoopContext>"); return;
    }
}

void jv_repr_to(jctx *c, jbuf *b, jv v) {
    if (v.kind == JV_STR)
        repr_str(c, b, v.s.p, v.s.n);
    else if (v.kind == JV_UNDEF)
        jbuf_puts(c, b, "Undefined");
    else
        jv_str_to(c, b, v);
}

jv jv_to_str(jctx *c, jv v) {
    if (v.kind == JV_STR) return v;
    jbuf b = {0};
    jv_str_to(c, &b, v);
    return jv_strbuf(&b);
}

const char *jv_cstr_of(jctx *c, jv v) {
    jv s = jv_to_str(c, v);
    return s.s.p[s.s.n] == '\0' ? s.s.p : jstrdup(c, s.s.p, s.s.n);
}

const char *jv_undef_msg(jctx *c, jv v) {
    const jundef *u = v.u;
    jbuf b = {0};
    const char *owner = u && u->owner ? u->owner : "";
    const char *suffix = strcmp(owner, "None") ? " object" : ""; /* Jinja's object_type_repr */
    if (!u || !u->name)
        jbuf_puts(c, &b, "value is undefined");
    else if (u->how == JU_HINT)
        jbuf_puts(c, &b, u->name);
    else if (u->how == JU_NAME)
        jbuf_printf(c, &b, "'%s' is undefined", u->name);
    else if (u->how == JU_ATTR)
        jbuf_printf(c, &b, "'%s%s' has no attribute '%s'", owner, suffix, u->name);
    else
        jbuf_printf(c, &b, "%s%s has no element %s", owner, suffix, u->name);
    return b.p;
}

void jfail_undef(jctx *c, const jnode *at, jv v) {
    jfail(c, AFO_ERR_INVALID_ARGUMENT, at ? at->line : 0, at ? at->col : 0, "%s", jv_undef_msg(c, v));
}

jlist *jv_iter(jctx *c, const jnode *at, jv v) {
    switch ((jkind)v.kind) {
    case JV_UNDEF: return jv_list(c, 0).l;
    case JV_LIST: return v.l;
    case JV_DICT: {
        if (v.flags & JV_NAMESPACE) break;
        jv keys = jv_list(c, v.d->n);
        for (size_t i = 0; i < v.d->n; i++) jlist_push(c, keys.l, v.d->k[i]);
        return keys.l;
    }
    case JV_STR: {
        jv chars = jv_list(c, v.s.n);
        for (size_t i = 0; i < v.s.n;) {
            size_t k = utf8_offset(v.s.p + i, v.s.n - i, 1);
            jlist_push(c, chars.l, (jv){.kind = JV_STR, .s = {v.s.p + i, k}});
            i += k;
        }
        return chars.l;
    }
    default: break;
    }
    jfail(c, AFO_ERR_INVALID_ARGUMENT, at ? at->line : 0, at ? at->col : 0, "'%s' object is not iterable",
          jv_type(v));
}

void jsort(jctx *c, void *base, size_t n, size_t size, int (*cmp)(jctx *, const void *, const void *, void *),
           void *u) {
    if (n < 2) return;
    char *a = base, *tmp = jalloc(c, n * size);
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                /* take from the right only when strictly smaller: stable */
                if (cmp(c, a + j * size, a + i * size, u) < 0)
                    memcpy(tmp + k++ * size, a + j++ * size, size);
                else
                    memcpy(tmp + k++ * size, a + i++ * size, size);
            }
            memcpy(tmp + k * size, a + i * size, (mid - i) * size), k += mid - i;
            memcpy(tmp + k * size, a + j * size, (hi - j) * size);
        }
        memcpy(a, tmp, n * size);
    }
}
