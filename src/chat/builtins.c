/* Chat-template engine: Jinja's tests (`x is defined`, …) and the global
 * functions a chat template can call: Jinja's range, namespace and dict,
 * and transformers' raise_exception and strftime_now. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "chat/jinja.h"

static jv arg0(jctx *c, const jnode *at, jargs *a, const char *test) {
    if (a->npos + a->nkw != 1)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "test '%s' takes exactly one argument", test);
    return a->npos ? a->pos[0] : a->kwv[0];
}

static void noargs(jctx *c, const jnode *at, jargs *a, const char *test) {
    if (a->npos || a->nkw) jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "test '%s' takes no arguments", test);
}

#define KIND_TEST(name, cond)                                            \
    static bool t_##name(jctx *c, const jnode *at, jv v, jargs *a) {     \
        noargs(c, at, a, #name);                                         \
        return cond;                                                     \
    }
KIND_TEST(defined, v.kind != JV_UNDEF)
KIND_TEST(undefined, v.kind == JV_UNDEF)
KIND_TEST(none, v.kind == JV_NONE)
KIND_TEST(boolean, v.kind == JV_BOOL)
KIND_TEST(true, v.kind == JV_BOOL && v.b)
KIND_TEST(false, v.kind == JV_BOOL && !v.b)
KIND_TEST(integer, v.kind == JV_INT)
KIND_TEST(float, v.kind == JV_FLOAT)
KIND_TEST(number, jv_is_number(v))
KIND_TEST(string, v.kind == JV_STR)
KIND_TEST(mapping, v.kind == JV_DICT && !(v.flags & JV_NAMESPACE))
KIND_TEST(callable, v.kind == JV_FUNC)
/* Undefined iterates as empty and has a length: Jinja counts it in */
KIND_TEST(iterable, v.kind == JV_UNDEF || v.kind == JV_STR || v.kind == JV_LIST ||
                        (v.kind == JV_DICT && !(v.flags & JV_NAMESPACE)))
KIND_TEST(sequence, v.kind == JV_UNDEF || v.kind == JV_STR || v.kind == JV_LIST ||
                        (v.kind == JV_DICT && !(v.flags & JV_NAMESPACE)))
KIND_TEST(escaped, false)

static bool t_lower(jctx *c, const jnode *at, jv v, jargs *a) {
    noargs(c, at, a, "lower");
    return v.kind == JV_STR && jv_eq(jstr_case(c, v, 'l'), v) && !jv_eq(jstr_case(c, v, 'u'), v);
}

static bool t_upper(jctx *c, const jnode *at, jv v, jargs *a) {
    noargs(c, at, a, "upper");
    return v.kind == JV_STR && jv_eq(jstr_case(c, v, 'u'), v) && !jv_eq(jstr_case(c, v, 'l'), v);
}

static int64_t int_operand(jctx *c, const jnode *at, jv v, const char *test) {
    if (v.kind == JV_UNDEF) jfail_undef(c, at, v);
    if (v.kind != JV_INT && v.kind != JV_BOOL)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "test '%s' needs an integer, not '%s'", test, jv_type(v));
    return v.kind == JV_BOOL ? v.b : v.i;
}

static bool t_odd(jctx *c, const jnode *at, jv v, jargs *a) {
    noargs(c, at, a, "odd");
    return int_operand(c, at, v, "odd") % 2 != 0;
}

static bool t_even(jctx *c, const jnode *at, jv v, jargs *a) {
    noargs(c, at, a, "even");
    return int_operand(c, at, v, "even") % 2 == 0;
}

static bool t_divisibleby(jctx *c, const jnode *at, jv v, jargs *a) {
    int64_t d = int_operand(c, at, arg0(c, at, a, "divisibleby"), "divisibleby");
    if (d == 0) jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "divisibleby: division by zero");
    return d == -1 || int_operand(c, at, v, "divisibleby") % d == 0;
}

static bool t_eq(jctx *c, const jnode *at, jv v, jargs *a) { return jv_eq(v, arg0(c, at, a, "eq")); }
static bool t_ne(jctx *c, const jnode *at, jv v, jargs *a) { return !jv_eq(v, arg0(c, at, a, "ne")); }
static bool t_lt(jctx *c, const jnode *at, jv v, jargs *a) { return jv_cmp(c, at, v, arg0(c, at, a, "lt"), "<") < 0; }
static bool t_le(jctx *c, const jnode *at, jv v, jargs *a) { return jv_cmp(c, at, v, arg0(c, at, a, "le"), "<=") <= 0; }
static bool t_gt(jctx *c, const jnode *at, jv v, jargs *a) { return jv_cmp(c, at, v, arg0(c, at, a, "gt"), ">") > 0; }
static bool t_ge(jctx *c, const jnode *at, jv v, jargs *a) { return jv_cmp(c, at, v, arg0(c, at, a, "ge"), ">=") >= 0; }
static bool t_in(jctx *c, const jnode *at, jv v, jargs *a) { return jcontains(c, at, v, arg0(c, at, a, "in")); }

/* `is sameas`: Python identity. Scalars compare by value (None, True and
 * small ints are singletons there); containers by address. */
static bool t_sameas(jctx *c, const jnode *at, jv v, jargs *a) {
    jv w = arg0(c, at, a, "sameas");
    if (v.kind != w.kind) return false;
    switch ((jkind)v.kind) {
    case JV_LIST: return v.l == w.l;
    case JV_DICT: return v.d == w.d;
    case JV_STR: return v.s.p == w.s.p && v.s.n == w.s.n;
    default: return jv_eq(v, w);
    }
}

static bool t_filter(jctx *c, const jnode *at, jv v, jargs *a) {
    noargs(c, at, a, "filter");
    return v.kind == JV_STR && jfilter_find(jv_cstr_of(c, v));
}

static bool t_test(jctx *c, const jnode *at, jv v, jargs *a) {
    noargs(c, at, a, "test");
    return v.kind == JV_STR && jtest_find(jv_cstr_of(c, v));
}

typedef struct named_test { const char *name; jtest fn; } named_test;
static const named_test TESTS[] = {
    {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined}, {"divisibleby", t_divisibleby},
    {"eq", t_eq}, {"equalto", t_eq}, {"==", t_eq}, {"escaped", t_escaped}, {"even", t_even},
    {"false", t_false}, {"filter", t_filter}, {"float", t_float}, {"ge", t_ge}, {">=", t_ge},
    {"greaterthan", t_gt}, {"gt", t_gt}, {">", t_gt}, {"in", t_in}, {"integer", t_integer},
    {"iterable", t_iterable}, {"le", t_le}, {"<=", t_le}, {"lessthan", t_lt}, {"lower", t_lower},
    {"lt", t_lt}, {"<", t_lt}, {"mapping", t_mapping}, {"ne", t_ne}, {"!=", t_ne}, {"none", t_none},
    {"number", t_number}, {"odd", t_odd}, {"sameas", t_sameas}, {"sequence", t_sequence},
    {"string", t_string}, {"test", t_test}, {"true", t_true}, {"undefined", t_undefined}, {"upper", t_upper},
};

jtest jtest_find(const char *name) {
    for (size_t i = 0; i < sizeof TESTS / sizeof *TESTS; i++)
        if (!strcmp(TESTS[i].name, name)) return TESTS[i].fn;
    return NULL;
}

/* ---------------------------------------------------------------- globals */
#define SANDBOX_MAX_RANGE 100000 /* Jinja's sandbox refuses longer ranges */

static jv g_range(jctx *c, const jnode *at, jv self, jargs *a) {
    if (a->nkw || a->npos < 1 || a->npos > 3)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "range() expects 1 to 3 integer arguments");
    int64_t v[3];
    for (size_t i = 0; i < a->npos; i++) {
        jexpect(c, at, a->pos[i], JV_INT, "range() expects integers");
        v[i] = a->pos[i].kind == JV_BOOL ? a->pos[i].b : a->pos[i].i;
    }
    int64_t start = a->npos > 1 ? v[0] : 0, stop = a->npos > 1 ? v[1] : v[0], step = a->npos > 2 ? v[2] : 1;
    if (step == 0) jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "range() arg 3 must not be zero");
    /* length without overflow: ceil((stop - start) / step) in long double,
     * bounded before it is cast (range(-2**63, 2**63 - 1) is 2**64 long) */
    long double span = (long double)stop - (long double)start, len = span / (long double)step;
    if (len > SANDBOX_MAX_RANGE)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col,
              "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", SANDBOX_MAX_RANGE);
    int64_t n = len > 0 ? (int64_t)ceill(len) : 0;
    jv out = jv_list(c, (size_t)n);
    for (int64_t i = 0; i < n; i++) jlist_push(c, out.l, jv_int(start + i * step));
    return out;
}

/* dict(mapping?, **kw) and namespace(mapping?, **kw) */
static jv make_dict(jctx *c, const jnode *at, jargs *a, const char *what) {
    jv d = jv_dict(c, 0);
    if (a->npos > 1) jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "%s() takes at most one positional argument", what);
    if (a->npos) {
        jv m = a->pos[0];
        if (m.kind != JV_DICT) jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "%s() expects a mapping", what);
        for (size_t i = 0; i < m.d->n; i++) jdict_set(c, d.d, m.d->k[i], m.d->v[i]);
    }
    for (size_t k = 0; k < a->nkw; k++) jdict_set(c, d.d, jv_cstr(a->kwn[k]), a->kwv[k]);
    return d;
}

static jv g_dict(jctx *c, const jnode *at, jv self, jargs *a) { return make_dict(c, at, a, "dict"); }

static jv g_namespace(jctx *c, const jnode *at, jv self, jargs *a) {
    jv ns = make_dict(c, at, a, "namespace");
    ns.flags = JV_NAMESPACE;
    return ns;
}

static jv g_raise_exception(jctx *c, const jnode *at, jv self, jargs *a) {
    const char *msg = a->npos ? jv_cstr_of(c, a->pos[0]) : "";
    jfail(c, AFO_ERR_REJECTED, at->line, at->col, "%s", msg);
}

static jv g_strftime_now(jctx *c, const jnode *at, jv self, jargs *a) {
    if (a->npos != 1 || a->nkw || a->pos[0].kind != JV_STR)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "strftime_now() expects one format string");
    time_t t = c->now ? (time_t)c->now : time(NULL);
    struct tm tm;
    localtime_r(&t, &tm); /* datetime.now() is local time */
    const char *fmt = jv_cstr_of(c, a->pos[0]);
    if (!*fmt) return jv_cstr("");
    for (size_t cap = 256; cap <= 65536; cap *= 4) {
        char *buf = jalloc(c, cap);
        size_t n = strftime(buf, cap, fmt, &tm);
        if (n) return (jv){.kind = JV_STR, .s = {buf, n}};
    }
    return jv_cstr(""); /* only formats that expand to nothing get here */
}

typedef struct named_global { const char *name; jbuiltin fn; } named_global;
static const named_global GLOBALS[] = {
    {"range", g_range}, {"dict", g_dict}, {"namespace", g_namespace},
    {"raise_exception", g_raise_exception}, {"strftime_now", g_strftime_now},
};

jbuiltin jglobal_find(const char *name) {
    for (size_t i = 0; i < sizeof GLOBALS / sizeof *GLOBALS; i++)
        if (!strcmp(GLOBALS[i].name, name)) return GLOBALS[i].fn;
    return NULL;
}
