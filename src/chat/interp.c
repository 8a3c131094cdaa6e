/* Chat-template engine: the interpreter. Walks the tree with Jinja's
 * scoping (a for-loop iteration, a macro call and block bodies get their
 * own scope; if does not), Jinja's lookup rules for attributes and items,
 * and Python's operator semantics. */
#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"

struct jframe {
    jframe *parent;
    const char **names;
    jv *vals;
    size_t n, cap;
    bool captured; /* a macro closes over it: it must outlive its loop iteration */
};

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static jframe *frame_new(jctx *c, jframe *parent) {
    jframe *f = jalloc(c, sizeof *f);
    f->parent = parent;
    return f;
}

static jv *frame_find(jframe *f, const char *name) {
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (strcmp(f->names[i], name) == 0) return &f->vals[i];
    return NULL;
}

static void frame_set(jctx *c, jframe *f, const char *name, jv v) {
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        const char **nn = jalloc(c, cap * sizeof *nn);
        jv *nv = jalloc(c, cap * sizeof *nv);
        if (f->n) {
            memcpy(nn, f->names, f->n * sizeof *nn);
            memcpy(nv, f->vals, f->n * sizeof *nv);
        }
        f->names = nn, f->vals = nv, f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

static jv eval(jctx *c, jframe *f, const jnode *n);
static int exec_body(jctx *c, jframe *f, const jnodes *body);

/* -------------------------------------------------------- argument helpers */
void jbind(jctx *c, const jnode *at, const char *fname, jargs *a, const char *const *params, jv *out) {
    size_t np = 0;
    while (params[np]) np++;
    for (size_t i = 0; i < np; i++) out[i] = (jv){.kind = JV_UNDEF};
    if (a->npos > np) jfail_at(c, at, "%s() takes at most %zu positional arguments", fname, np);
    for (size_t i = 0; i < a->npos; i++) out[i] = a->pos[i];
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i = 0;
        while (i < np && strcmp(params[i], a->kwn[k]) != 0) i++;
        if (i == np) jfail_at(c, at, "%s() got an unexpected keyword argument '%s'", fname, a->kwn[k]);
        if (i < a->npos) jfail_at(c, at, "%s() got multiple values for argument '%s'", fname, a->kwn[k]);
        out[i] = a->kwv[k];
    }
}

void jexpect(jctx *c, const jnode *at, jv v, jkind kind, const char *what) {
    if (v.kind == JV_UNDEF && v.u) jfail_undef(c, at, v);
    if (v.kind != kind && !(kind == JV_INT && v.kind == JV_BOOL)) jfail_at(c, at, "%s, not '%s'", what, jv_type(v));
}

int64_t jarg_int(jctx *c, const jnode *at, jv v, int64_t dflt) {
    if (!jgiven(v)) return dflt;
    jexpect(c, at, v, JV_INT, "expected an integer argument");
    return v.kind == JV_BOOL ? v.b : v.i;
}

const char *jarg_str(jctx *c, const jnode *at, jv v, const char *dflt, size_t *len) {
    if (!jgiven(v)) {
        if (len) *len = dflt ? strlen(dflt) : 0;
        return dflt;
    }
    jexpect(c, at, v, JV_STR, "expected a string argument");
    if (len) *len = v.s.n;
    return v.s.p;
}

bool jarg_bool(jv v, bool dflt) { return jgiven(v) ? jv_truthy(v) : dflt; }

/* ----------------------------------------------------------------- lookup */
static const char *const LOOP_FIELDS[] = {"index", "index0", "revindex", "revindex0", "first", "last",
                                          "length", "previtem", "nextitem", "depth", "depth0", NULL};

static jv loop_cycle(jctx *c, const jnode *at, jv self, jargs *a) {
    if (a->npos == 0) jfail_at(c, at, "no items for cycling given");
    return a->pos[self.loop->i % a->npos];
}

static jv loop_attr(jctx *c, jv obj, const char *name) {
    const jloop *L = obj.loop;
    int64_t i = (int64_t)L->i, n = (int64_t)L->items->n;
    int k = 0;
    while (LOOP_FIELDS[k] && strcmp(LOOP_FIELDS[k], name) != 0) k++;
    switch (k) {
    case 0: return jv_int(i + 1);
    case 1: return jv_int(i);
    case 2: return jv_int(n - i);
    case 3: return jv_int(n - i - 1);
    case 4: return jv_bool(i == 0);
    case 5: return jv_bool(i == n - 1);
    case 6: return jv_int(n);
    case 7: return i > 0 ? L->items->v[i - 1] : jv_undef(c, "there is no previous item", NULL, JU_HINT);
    case 8: return i + 1 < n ? L->items->v[i + 1] : jv_undef(c, "there is no next item", NULL, JU_HINT);
    case 9: return jv_int(1);
    case 10: return jv_int(0);
    default: break;
    }
    if (strcmp(name, "cycle") == 0) {
        jfunc *fn = jalloc(c, sizeof *fn);
        *fn = (jfunc){.type = JF_METHOD, .name = "cycle", .fn = loop_cycle, .self = obj};
        return (jv){.kind = JV_FUNC, .fn = fn};
    }
    return jv_undef(c, name, "LoopContext", JU_ATTR);
}

jv jgetattr(jctx *c, const jnode *at, jv obj, const char *name) {
    if (obj.kind == JV_UNDEF) jfail_undef(c, at, obj);
    if (obj.kind == JV_LOOP) return loop_attr(c, obj, name);
    if (obj.kind == JV_DICT && (obj.flags & JV_NAMESPACE)) {
        jv *v = jdict_gets(obj.d, name);
        return v ? *v : jv_undef(c, name, "Namespace", JU_ATTR);
    }
    bool found = false;
    jv m = jmethod_get(c, at, obj, name, &found);
    if (found) return m;
    if (obj.kind == JV_DICT) {
        jv *v = jdict_gets(obj.d, name);
        if (v) return *v;
    }
    return jv_undef(c, name, obj.kind == JV_NONE ? "None" : jv_type(obj), JU_ATTR);
}

/* Python's index into a sequence of n: negative counts from the end; -1
 * when out of range. */
static int64_t seq_index(jv key, size_t n) {
    int64_t i = key.kind == JV_BOOL ? key.b : key.i;
    if (i < 0) i += (int64_t)n;
    return i >= 0 && i < (int64_t)n ? i : -1;
}

jv jgetitem(jctx *c, const jnode *at, jv obj, jv key) {
    if (obj.kind == JV_UNDEF) jfail_undef(c, at, obj);
    bool int_key = key.kind == JV_INT || key.kind == JV_BOOL;
    if (obj.kind == JV_LIST && int_key) {
        int64_t i = seq_index(key, obj.l->n);
        if (i >= 0) return obj.l->v[i];
    } else if (obj.kind == JV_STR && int_key) {
        int64_t i = seq_index(key, utf8_len(obj.s.p, obj.s.n));
        if (i >= 0) {
            size_t off = utf8_offset(obj.s.p, obj.s.n, (size_t)i);
            return (jv){.kind = JV_STR, .s = {obj.s.p + off, utf8_offset(obj.s.p + off, obj.s.n - off, 1)}};
        }
    } else if (obj.kind == JV_DICT && !(obj.flags & JV_NAMESPACE)) {
        jv *v = jdict_get(obj.d, key);
        if (v) return *v;
    }
    /* then, as Jinja does, an attribute of that name */
    if (key.kind == JV_STR) {
        jv r = jgetattr(c, at, obj, jv_cstr_of(c, key));
        if (r.kind != JV_UNDEF) return r;
    }
    jbuf name = {0};
    jv_repr_to(c, &name, key);
    return key.kind == JV_STR ? jv_undef(c, jv_cstr_of(c, key), obj.kind == JV_NONE ? "None" : jv_type(obj), JU_ATTR)
                              : jv_undef(c, name.p, obj.kind == JV_NONE ? "None" : jv_type(obj), JU_ELEMENT);
}

/* Python's slice index rules (PySlice_AdjustIndices). */
static jv slice(jctx *c, const jnode *at, jv obj, jv lo, jv hi, jv st) {
    if (obj.kind == JV_UNDEF) jfail_undef(c, at, obj);
    int64_t b[3];
    jv parts[3] = {lo, hi, st};
    bool set[3];
    for (int k = 0; k < 3; k++) {
        set[k] = !(parts[k].kind == JV_UNDEF || parts[k].kind == JV_NONE);
        if (set[k] && parts[k].kind != JV_INT && parts[k].kind != JV_BOOL)
            jfail_at(c, at, "slice indices must be integers or None, not '%s'", jv_type(parts[k]));
        b[k] = set[k] ? (parts[k].kind == JV_BOOL ? parts[k].b : parts[k].i) : 0;
    }
    int64_t step = set[2] ? b[2] : 1;
    if (step == 0) jfail_at(c, at, "slice step cannot be zero");
    bool is_str = obj.kind == JV_STR;
    if (!is_str && obj.kind != JV_LIST) return jv_undef(c, "slice", jv_type(obj), JU_ELEMENT);
    size_t *offs = NULL; /* code point → byte offset, for non-ASCII strings */
    int64_t n;
    if (is_str) {
        n = (int64_t)utf8_len(obj.s.p, obj.s.n);
        if ((size_t)n != obj.s.n) {
            offs = jalloc(c, ((size_t)n + 1) * sizeof *offs);
            for (int64_t i = 0, off = 0; i <= n; i++) {
                offs[i] = (size_t)off;
                if (i < n) off += (int64_t)utf8_offset(obj.s.p + off, obj.s.n - (size_t)off, 1);
            }
        }
    } else {
        n = (int64_t)obj.l->n;
    }
    int64_t start, stop;
    for (int k = 0; k < 2; k++) {
        int64_t v = b[k], *dst = k ? &stop : &start;
        if (!set[k]) {
            *dst = step > 0 ? (k ? n : 0) : (k ? -1 : n - 1);
            continue;
        }
        if (v < 0) v += n;
        if (v < 0) v = step > 0 ? 0 : -1;
        if (v >= n) v = step > 0 ? n : n - 1;
        *dst = v;
    }
    jbuf sb = {0};
    jv out = is_str ? (jv){0} : jv_list(c, 0);
    out.flags = obj.flags & JV_TUPLE;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (!is_str) {
            jlist_push(c, out.l, obj.l->v[i]);
        } else if (offs) {
            jbuf_put(c, &sb, obj.s.p + offs[i], offs[i + 1] - offs[i]);
        } else {
            jbuf_put(c, &sb, obj.s.p + i, 1);
        }
    }
    return is_str ? jv_strbuf(&sb) : out;
}

/* ------------------------------------------------------------- operators */
bool jcontains(jctx *c, const jnode *at, jv needle, jv hay) {
    switch ((jkind)hay.kind) {
    case JV_UNDEF: return false;
    case JV_STR:
        if (needle.kind != JV_STR)
            jfail_at(c, at, "'in <string>' requires string as left operand, not %s", jv_type(needle));
        return needle.s.n == 0 || (hay.s.n >= needle.s.n && memmem(hay.s.p, hay.s.n, needle.s.p, needle.s.n));
    case JV_LIST:
        for (size_t i = 0; i < hay.l->n; i++)
            if (jv_eq(hay.l->v[i], needle)) return true;
        return false;
    case JV_DICT:
        if (!(hay.flags & JV_NAMESPACE)) return jdict_get(hay.d, needle) != NULL;
        break;
    default: break;
    }
    jfail_at(c, at, "argument of type '%s' is not iterable", jv_type(hay));
}

static _Noreturn void bad_operands(jctx *c, const jnode *at, const char *op, jv a, jv b) {
    char msg[200];
    if (a.kind == JV_STR && !strcmp(op, "+"))
        snprintf(msg, sizeof msg, "can only concatenate str (not \"%s\") to str", jv_type(b));
    else if (a.kind == JV_LIST && !strcmp(op, "+"))
        snprintf(msg, sizeof msg, "can only concatenate %s (not \"%s\") to %s", jv_type(a), jv_type(b), jv_type(a));
    else
        snprintf(msg, sizeof msg, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type(a), jv_type(b));
    jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "%s", msg);
}

static jv repeat(jctx *c, const jnode *at, jv seq, int64_t times) {
    if (times < 0) times = 0;
    size_t unit = seq.kind == JV_STR ? seq.s.n : seq.l->n;
    if (unit && (uint64_t)times > JINJA_MAX_OUTPUT / unit) jfail_at(c, at, "repetition result too large");
    if (seq.kind == JV_STR) {
        jbuf b = {0};
        for (int64_t i = 0; i < times; i++) jbuf_put(c, &b, seq.s.p, seq.s.n);
        return jv_strbuf(&b);
    }
    jv out = jv_list(c, unit * (size_t)times);
    out.flags = seq.flags & JV_TUPLE;
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < unit; k++) jlist_push(c, out.l, seq.l->v[k]);
    return out;
}

/* Sized up front: templates build long strings by repeated concatenation. */
static jv concat(jctx *c, jv a, jv b) {
    if (a.s.n + b.s.n > JINJA_MAX_OUTPUT)
        jfail(c, AFO_ERR_INVALID_ARGUMENT, 0, 0, "the text rendered or a string built exceeds %u MiB",
              JINJA_MAX_OUTPUT >> 20);
    char *p = jalloc(c, a.s.n + b.s.n + 1);
    memcpy(p, a.s.p, a.s.n);
    memcpy(p + a.s.n, b.s.p, b.s.n);
    return (jv){.kind = JV_STR, .s = {p, a.s.n + b.s.n}};
}

static int64_t as_int(jv v) { return v.kind == JV_BOOL ? v.b : v.i; }

jv jarith(jctx *c, const jnode *at, int op, jv a, jv b) {
    char opname[3] = {(char)(op > 0xFF ? op >> 8 : op), (char)(op > 0xFF ? op & 0xFF : 0), 0};
    if (op == '~') return concat(c, jv_to_str(c, a), jv_to_str(c, b));
    if (a.kind == JV_UNDEF) jfail_undef(c, at, a);
    if (b.kind == JV_UNDEF) jfail_undef(c, at, b);
    bool nums = jv_is_number(a) && jv_is_number(b), ints = nums && a.kind != JV_FLOAT && b.kind != JV_FLOAT;
    int64_t x = ints ? as_int(a) : 0, y = ints ? as_int(b) : 0, r;
    double fx = nums ? jv_num(a) : 0, fy = nums ? jv_num(b) : 0;
    switch (op) {
    case '+':
        if (ints) {
            if (__builtin_add_overflow(x, y, &r)) break;
            return jv_int(r);
        }
        if (nums) return jv_float(fx + fy);
        if (a.kind == JV_STR && b.kind == JV_STR) return concat(c, a, b);
        if (a.kind == JV_LIST && b.kind == JV_LIST && (a.flags & JV_TUPLE) == (b.flags & JV_TUPLE)) {
            jv out = jv_list(c, a.l->n + b.l->n);
            out.flags = a.flags & JV_TUPLE;
            for (size_t i = 0; i < a.l->n; i++) jlist_push(c, out.l, a.l->v[i]);
            for (size_t i = 0; i < b.l->n; i++) jlist_push(c, out.l, b.l->v[i]);
            return out;
        }
        bad_operands(c, at, opname, a, b);
    case '-':
        if (ints) {
            if (__builtin_sub_overflow(x, y, &r)) break;
            return jv_int(r);
        }
        if (nums) return jv_float(fx - fy);
        bad_operands(c, at, opname, a, b);
    case '*':
        if (ints) {
            if (__builtin_mul_overflow(x, y, &r)) break;
            return jv_int(r);
        }
        if (nums) return jv_float(fx * fy);
        if ((a.kind == JV_STR || a.kind == JV_LIST) && (b.kind == JV_INT || b.kind == JV_BOOL)) return repeat(c, at, a, as_int(b));
        if ((b.kind == JV_STR || b.kind == JV_LIST) && (a.kind == JV_INT || a.kind == JV_BOOL)) return repeat(c, at, b, as_int(a));
        bad_operands(c, at, opname, a, b);
    case '/':
        if (!nums) bad_operands(c, at, opname, a, b);
        if (fy == 0) jfail_at(c, at, "division by zero");
        return jv_float(fx / fy);
    case OP2('/', '/'):
    case '%':
        if (op == '%' && a.kind == JV_STR) jfail_at(c, at, "printf-style '%%' string formatting is not supported");
        if (!nums) bad_operands(c, at, opname, a, b);
        if (fy == 0) jfail_at(c, at, "%s", op == '%' ? "modulo by zero" : "integer division or modulo by zero");
        if (ints) {
            if (x == INT64_MIN && y == -1) break;
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) q--, m += y; /* Python floors */
            return jv_int(op == '%' ? m : q);
        }
        {
            /* Python's float divmod */
            double m = fmod(fx, fy), d = (fx - m) / fy;
            if (m != 0 && ((fy < 0) != (m < 0))) m += fy, d -= 1.0;
            double fd = floor(d);
            if (d - fd > 0.5) fd += 1.0;
            return jv_float(op == '%' ? m : fd);
        }
    case OP2('*', '*'):
        if (!nums) bad_operands(c, at, opname, a, b);
        if (ints && y >= 0) {
            int64_t p = 1, base = x;
            for (int64_t e = y; e > 0; e >>= 1) {
                if ((e & 1) && __builtin_mul_overflow(p, base, &p)) goto overflow;
                if (e > 1 && __builtin_mul_overflow(base, base, &base)) goto overflow;
            }
            return jv_int(p);
        }
        /* Python raises where C's pow gives inf or NaN */
        if (fx == 0 && fy < 0) jfail_at(c, at, "0.0 cannot be raised to a negative power");
        if (fx < 0 && isfinite(fy) && fy != floor(fy)) jfail_at(c, at, "'**' would give a complex number");
        {
            double r = pow(fx, fy);
            if (isinf(r) && isfinite(fx) && isfinite(fy)) jfail_at(c, at, "'**': numerical result out of range");
            return jv_float(r);
        }
    default: break;
    }
overflow:
    jfail_at(c, at, "integer overflow in '%s'", opname);
}

static bool compare(jctx *c, const jnode *at, int op, jv a, jv b) {
    switch (op) {
    case OP2('=', '='): return jv_eq(a, b);
    case OP2('!', '='): return !jv_eq(a, b);
    case 'i': return jcontains(c, at, a, b);
    case 'n': return !jcontains(c, at, a, b);
    case '<': return jv_cmp(c, at, a, b, "<") < 0;
    case '>': return jv_cmp(c, at, a, b, ">") > 0;
    case OP2('<', '='): return jv_cmp(c, at, a, b, "<=") <= 0;
    default: return jv_cmp(c, at, a, b, ">=") >= 0;
    }
}

/* ------------------------------------------------------------------ calls */
static void eval_args(jctx *c, jframe *f, const jnode *n, jargs *a, size_t extra_kw) {
    a->npos = n->items.n;
    a->pos = jalloc(c, (a->npos + 1) * sizeof *a->pos);
    for (size_t i = 0; i < a->npos; i++) a->pos[i] = eval(c, f, n->items.v[i]);
    a->nkw = n->kwv.n;
    a->kwn = jalloc(c, (a->nkw + extra_kw + 1) * sizeof *a->kwn);
    a->kwv = jalloc(c, (a->nkw + extra_kw + 1) * sizeof *a->kwv);
    for (size_t i = 0; i < a->nkw; i++) {
        a->kwn[i] = n->kwn[i];
        a->kwv[i] = eval(c, f, n->kwv.v[i]);
    }
}

static jv call_macro(jctx *c, const jnode *at, const jfunc *fn, jargs *a) {
    const jnode *m = fn->macro;
    if (++c->depth > JINJA_MAX_DEPTH) jfail_at(c, at, "macro calls nested deeper than %d", JINJA_MAX_DEPTH);
    jframe *f = frame_new(c, fn->closure);
    size_t np = m->kwv.n;
    jv varargs = jv_list(c, 0), kwargs = jv_dict(c, 0);
    varargs.flags = JV_TUPLE;
    bool *bound = jalloc(c, (np + 1) * sizeof *bound);
    for (size_t i = 0; i < a->npos; i++) {
        if (i < np) {
            frame_set(c, f, m->kwn[i], a->pos[i]);
            bound[i] = true;
        } else {
            jlist_push(c, varargs.l, a->pos[i]);
        }
    }
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i = 0;
        while (i < np && strcmp(m->kwn[i], a->kwn[k]) != 0) i++;
        if (i < np) {
            frame_set(c, f, m->kwn[i], a->kwv[k]);
            bound[i] = true;
        } else if (strcmp(a->kwn[k], "caller") == 0) {
            frame_set(c, f, "caller", a->kwv[k]);
        } else {
            jdict_set(c, kwargs.d, jv_cstr(a->kwn[k]), a->kwv[k]);
        }
    }
    /* defaults are evaluated at call time and may use earlier parameters */
    for (size_t i = 0; i < np; i++)
        if (!bound[i])
            frame_set(c, f, m->kwn[i], m->kwv.v[i] ? eval(c, f, m->kwv.v[i]) : jv_undef(c, m->kwn[i], NULL, JU_NAME));
    frame_set(c, f, "varargs", varargs);
    frame_set(c, f, "kwargs", kwargs);
    jbuf *saved = c->out, body = {0};
    c->out = &body;
    exec_body(c, f, &m->body);
    c->out = saved;
    c->depth--;
    return jv_strbuf(&body);
}

jv jcall(jctx *c, const jnode *at, jv fn, jargs *a) {
    if (fn.kind == JV_UNDEF) jfail_undef(c, at, fn);
    if (fn.kind != JV_FUNC) jfail_at(c, at, "'%s' object is not callable", jv_type(fn));
    if (fn.fn->type == JF_MACRO) return call_macro(c, at, fn.fn, a);
    return fn.fn->fn(c, at, fn.fn->self, a);
}

static jv apply_filter(jctx *c, jframe *f, const jnode *fnode, jv v) {
    jargs a;
    eval_args(c, f, fnode, &a, 0);
    return jfilter_find(fnode->name)(c, fnode, v, &a);
}

static jv apply_filters(jctx *c, jframe *f, const jnodes *filters, jv v) {
    for (size_t i = 0; i < filters->n; i++) v = apply_filter(c, f, filters->v[i], v);
    return v;
}

/* ------------------------------------------------------------- expressions */
static jv eval_node(jctx *c, jframe *f, const jnode *n);

static jv eval(jctx *c, jframe *f, const jnode *n) {
    jnest_enter(c, n);
    jv v = eval_node(c, f, n);
    jnest_leave(c);
    return v;
}

static jv eval_node(jctx *c, jframe *f, const jnode *n) {
    switch (n->type) {
    case N_LIT: return n->lit;
    case N_NAME: {
        jv *v = frame_find(f, n->name);
        if (v) return *v;
        jbuiltin g = jglobal_find(n->name);
        if (g) {
            jfunc *fn = jalloc(c, sizeof *fn);
            *fn = (jfunc){.type = JF_BUILTIN, .name = n->name, .fn = g};
            return (jv){.kind = JV_FUNC, .fn = fn};
        }
        return jv_undef(c, n->name, NULL, JU_NAME);
    }
    case N_LIST:
    case N_TUPLE: {
        jv l = jv_list(c, n->items.n);
        if (n->type == N_TUPLE) l.flags = JV_TUPLE;
        for (size_t i = 0; i < n->items.n; i++) jlist_push(c, l.l, eval(c, f, n->items.v[i]));
        return l;
    }
    case N_DICT: {
        jv d = jv_dict(c, n->items.n / 2);
        for (size_t i = 0; i + 1 < n->items.n; i += 2) {
            jv k = eval(c, f, n->items.v[i]);
            if (k.kind == JV_LIST && !(k.flags & JV_TUPLE)) jfail_at(c, n, "unhashable type: '%s'", "list");
            if (k.kind == JV_DICT) jfail_at(c, n, "unhashable type: '%s'", "dict");
            jdict_set(c, d.d, k, eval(c, f, n->items.v[i + 1]));
        }
        return d;
    }
    case N_ATTR: return jgetattr(c, n, eval(c, f, n->a), n->name);
    case N_ITEM: {
        jv obj = eval(c, f, n->a);
        const jnode *k = n->b;
        if (k->type == N_SLICE) {
            jv none = (jv){.kind = JV_NONE};
            return slice(c, n, obj, k->a ? eval(c, f, k->a) : none, k->b ? eval(c, f, k->b) : none,
                         k->c ? eval(c, f, k->c) : none);
        }
        return jgetitem(c, n, obj, eval(c, f, k));
    }
    case N_SLICE: jfail_at(c, n, "a slice is only allowed inside [ ]");
    case N_CALL: {
        jv fn = eval(c, f, n->a);
        jargs a;
        eval_args(c, f, n, &a, 0);
        return jcall(c, n, fn, &a);
    }
    case N_FILTER: return apply_filter(c, f, n, eval(c, f, n->a));
    case N_TEST: {
        jv v = eval(c, f, n->a);
        jargs a;
        eval_args(c, f, n, &a, 0);
        return jv_bool(jtest_find(n->name)(c, n, v, &a) != (n->op != 0));
    }
    case N_NEG:
    case N_POS: {
        jv v = eval(c, f, n->a);
        if (v.kind == JV_UNDEF) jfail_undef(c, n, v);
        if (!jv_is_number(v)) jfail_at(c, n, "bad operand type for unary %s: '%s'", n->type == N_NEG ? "-" : "+", jv_type(v));
        if (n->type == N_POS) return v.kind == JV_BOOL ? jv_int(v.b) : v;
        if (v.kind == JV_FLOAT) return jv_float(-v.f);
        if (as_int(v) == INT64_MIN) jfail_at(c, n, "integer overflow");
        return jv_int(-as_int(v));
    }
    case N_NOT: return jv_bool(!jv_truthy(eval(c, f, n->a)));
    case N_AND: {
        jv a = eval(c, f, n->a);
        return jv_truthy(a) ? eval(c, f, n->b) : a;
    }
    case N_OR: {
        jv a = eval(c, f, n->a);
        return jv_truthy(a) ? a : eval(c, f, n->b);
    }
    case N_BIN: return jarith(c, n, n->op, eval(c, f, n->a), eval(c, f, n->b));
    case N_CMP: {
        jv left = eval(c, f, n->items.v[0]);
        for (size_t i = 1; i < n->items.n; i++) {
            jv right = eval(c, f, n->items.v[i]);
            if (!compare(c, n, n->ops[i - 1], left, right)) return jv_bool(false);
            left = right;
        }
        return jv_bool(true);
    }
    case N_COND:
        if (jv_truthy(eval(c, f, n->b))) return eval(c, f, n->a);
        return n->c ? eval(c, f, n->c) : jv_undef(c, "the inline if-expression evaluated to false and no else section was defined.", NULL, JU_HINT);
    default: break;
    }
    jfail_at(c, n, "statement used as an expression");
}

/* -------------------------------------------------------------- statements */
static void assign(jctx *c, jframe *f, const jnode *target, jv v) {
    if (target->type == N_NAME) {
        frame_set(c, f, target->name, v);
        return;
    }
    if (target->type == N_ATTR) {
        jv *ns = frame_find(f, target->a->name);
        if (!ns || ns->kind != JV_DICT || !(ns->flags & JV_NAMESPACE))
            jfail_at(c, target, "cannot assign attribute on non-namespace object '%s'", target->a->name);
        jdict_set(c, ns->d, jv_cstr(target->name), v);
        return;
    }
    jlist *items = jv_iter(c, target, v);
    if (items->n != target->items.n)
        jfail_at(c, target, "%s values to unpack (expected %zu)", items->n > target->items.n ? "too many" : "not enough",
                 target->items.n);
    for (size_t i = 0; i < items->n; i++) assign(c, f, target->items.v[i], items->v[i]);
}

static jv render_to_string(jctx *c, jframe *f, const jnodes *body) {
    jbuf *saved = c->out, out = {0};
    c->out = &out;
    exec_body(c, frame_new(c, f), body);
    c->out = saved;
    return jv_strbuf(&out);
}

static int exec_for(jctx *c, jframe *f, const jnode *n) {
    jlist *items = jv_iter(c, n->b, eval(c, f, n->b));
    if (n->c) {
        /* `for x in xs if cond`: loop.length and friends count kept items only */
        jv kept = jv_list(c, 0);
        jframe *probe = frame_new(c, f);
        for (size_t i = 0; i < items->n; i++) {
            probe->n = 0;
            assign(c, probe, n->a, items->v[i]);
            if (jv_truthy(eval(c, probe, n->c))) jlist_push(c, kept.l, items->v[i]);
        }
        items = kept.l;
    }
    if (items->n == 0) return exec_body(c, f, &n->orelse);
    jloop *loop = jalloc(c, sizeof *loop);
    loop->items = items;
    jframe *it = NULL;
    for (size_t i = 0; i < items->n; i++) {
        if (++c->iterations > JINJA_MAX_ITERATIONS)
            jfail_at(c, n, "loops ran more than %d iterations", JINJA_MAX_ITERATIONS);
        loop->i = i;
        /* a fresh scope per iteration; the last one is recycled unless captured */
        if (!it || it->captured)
            it = frame_new(c, f);
        else
            it->n = 0;
        assign(c, it, n->a, items->v[i]);
        frame_set(c, it, "loop", (jv){.kind = JV_LOOP, .loop = loop});
        if (exec_body(c, it, &n->body) == FLOW_BREAK) break;
    }
    return FLOW_NEXT;
}

static jv make_macro(jctx *c, jframe *f, const jnode *n, const char *name) {
    jfunc *fn = jalloc(c, sizeof *fn);
    *fn = (jfunc){.type = JF_MACRO, .name = name, .macro = n, .closure = f};
    f->captured = true;
    return (jv){.kind = JV_FUNC, .fn = fn};
}

static int exec_stmt(jctx *c, jframe *f, const jnode *n) {
    switch (n->type) {
    case S_TEXT: jbuf_put(c, c->out, n->lit.s.p, n->lit.s.n); return FLOW_NEXT;
    case S_OUT: jv_str_to(c, c->out, eval(c, f, n->a)); return FLOW_NEXT;
    case S_IF: return exec_body(c, f, jv_truthy(eval(c, f, n->a)) ? &n->body : &n->orelse);
    case S_FOR: return exec_for(c, f, n);
    case S_SET: assign(c, f, n->a, eval(c, f, n->b)); return FLOW_NEXT;
    case S_SETBLOCK: assign(c, f, n->a, apply_filters(c, f, &n->items, render_to_string(c, f, &n->body))); return FLOW_NEXT;
    case S_FILTERBLOCK:
        jv_str_to(c, c->out, apply_filters(c, f, &n->items, render_to_string(c, f, &n->body)));
        return FLOW_NEXT;
    case S_MACRO: frame_set(c, f, n->name, make_macro(c, f, n, n->name)); return FLOW_NEXT;
    case S_CALLBLOCK: {
        const jnode *call = n->a;
        jv fn = eval(c, f, call->a);
        jargs a;
        eval_args(c, f, call, &a, 1);
        a.kwn[a.nkw] = "caller";
        a.kwv[a.nkw++] = make_macro(c, f, n, "caller");
        jv_str_to(c, c->out, jcall(c, call, fn, &a));
        return FLOW_NEXT;
    }
    case S_WITH: {
        jframe *w = frame_new(c, f);
        for (size_t i = 0; i < n->kwv.n; i++) frame_set(c, w, n->kwn[i], eval(c, f, n->kwv.v[i]));
        return exec_body(c, w, &n->body);
    }
    case S_BLOCK: return exec_body(c, f, &n->body);
    case S_BREAK: return FLOW_BREAK;
    case S_CONTINUE: return FLOW_CONTINUE;
    default: break;
    }
    jfail_at(c, n, "expression used as a statement");
}

static int exec_body(jctx *c, jframe *f, const jnodes *body) {
    for (size_t i = 0; i < body->n; i++) {
        int flow = exec_stmt(c, f, body->v[i]);
        if (flow != FLOW_NEXT) return flow;
    }
    return FLOW_NEXT;
}

void jrender(jctx *c, const jnodes *body, jv ctxv, jbuf *out) {
    jframe *root = frame_new(c, NULL);
    for (size_t i = 0; i < ctxv.d->n; i++)
        if (ctxv.d->k[i].kind == JV_STR) frame_set(c, root, jv_cstr_of(c, ctxv.d->k[i]), ctxv.d->v[i]);
    c->out = out;
    exec_body(c, root, body);
}
