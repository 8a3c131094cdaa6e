/* Internals of the chat-template engine: a Jinja2 subset that renders Hugging
 * Face chat templates as transformers does (ImmutableSandboxedEnvironment,
 * trim_blocks, lstrip_blocks, loopcontrols, its own tojson, raise_exception
 * and strftime_now).
 *
 * Memory: everything a parse or a render allocates lives in one arena that
 * is freed as a whole, so values are plain structs shared by pointer the way
 * Python shares objects, and a failure anywhere can unwind with longjmp to
 * the public entry point without leaking: templates are user input, so every
 * error (syntax, type, limit, raise_exception) comes back as a status. */
#ifndef AFO_CHAT_JINJA_H
#define AFO_CHAT_JINJA_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "afo/base.h"

/* Limits that keep hostile templates from hanging or exhausting memory. */
#define JINJA_MAX_OUTPUT (64u << 20)      /* bytes of rendered text */
#define JINJA_MAX_MEMORY (1024u << 20)    /* arena bytes per parse or render */
#define JINJA_MAX_ITERATIONS 10000000     /* loop iterations per render */
#define JINJA_MAX_DEPTH 200               /* nested macro calls / parser nesting */
#define JINJA_MAX_NESTING 1000            /* expression evaluation and value nesting (C stack) */

struct jnode;

/* ------------------------------------------------------------ arena, failure */
typedef struct jchunk jchunk;
typedef struct jctx {
    jchunk *chunks;
    size_t used;
    jmp_buf fail;          /* where jfail() unwinds to */
    /* render state */
    struct jbuf *out;      /* where text goes now */
    long iterations;
    int depth;             /* macro calls */
    int nesting;           /* recursion of eval, str, compare */
    int64_t now;           /* strftime_now's clock; 0 = the real one */
} jctx;

void *jalloc(jctx *c, size_t n);   /* zeroed; unwinds on exhaustion */
char *jstrdup(jctx *c, const char *s, size_t n); /* NUL-terminated copy */
void jarena_free(jctx *c);
/* Sets afo_last_error to "chat template line L, column C: ..." (line 0: no
 * position) and unwinds to c->fail. */
_Noreturn void jfail(jctx *c, afo_status st, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* jfail for a template error at a node (NULL: no position). */
#define jfail_at(c, at, ...) \
    jfail((c), AFO_ERR_INVALID_ARGUMENT, (at) ? (at)->line : 0, (at) ? (at)->col : 0, __VA_ARGS__)

/* Growable byte string in the arena, at most JINJA_MAX_OUTPUT bytes (the
 * rendered text, and every string a template builds). */
typedef struct jbuf {
    char *p;
    size_t n, cap;
} jbuf;
void jbuf_put(jctx *c, jbuf *b, const char *s, size_t n);
void jbuf_puts(jctx *c, jbuf *b, const char *s);
void jbuf_printf(jctx *c, jbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Guards recursion that follows user data (the C stack is finite). */
void jnest_enter(jctx *c, const struct jnode *at);
static inline void jnest_leave(jctx *c) { c->nesting--; }

/* ------------------------------------------------------------------ values */
typedef enum jkind { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_FUNC, JV_LOOP } jkind;
enum { JV_TUPLE = 1, JV_NAMESPACE = 2 }; /* flags: list shown as tuple; dict with settable attributes */

typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jfunc jfunc;
typedef struct jloop jloop;
/* Why a value is undefined, for Jinja's message: a missing name, a missing
 * attribute (or str key) or element (other key) of an owner, or a hint. */
typedef enum { JU_NAME, JU_ATTR, JU_ELEMENT, JU_HINT } jundef_how;
typedef struct jundef { const char *name, *owner; jundef_how how; } jundef;

typedef struct jv {
    uint8_t kind, flags;
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s;
        jlist *l;
        jdict *d;
        jfunc *fn;
        jloop *loop;
        const jundef *u;
    };
} jv;

struct jlist { jv *v; size_t n, cap; };
struct jdict { jv *k, *v; size_t n, cap; };

typedef struct jargs {  /* a call's arguments, evaluated */
    jv *pos;
    size_t npos;
    const char **kwn;
    jv *kwv;
    size_t nkw;
} jargs;

struct jnode;
typedef struct jframe jframe;
typedef jv (*jbuiltin)(jctx *c, const struct jnode *at, jv self, jargs *a);
struct jfunc {
    enum { JF_BUILTIN, JF_METHOD, JF_MACRO } type;
    const char *name;
    jbuiltin fn;
    jv self;                 /* JF_METHOD: the bound object */
    const struct jnode *macro;
    jframe *closure;         /* JF_MACRO: the scope it was defined in */
};

struct jloop { jlist *items; size_t i; };

jv jv_undef(jctx *c, const char *name, const char *owner, jundef_how how);
static inline jv jv_none(void) { return (jv){.kind = JV_NONE}; }
static inline jv jv_bool(bool b) { return (jv){.kind = JV_BOOL, .b = b}; }
static inline jv jv_int(int64_t i) { return (jv){.kind = JV_INT, .i = i}; }
static inline jv jv_float(double f) { return (jv){.kind = JV_FLOAT, .f = f}; }
jv jv_str(jctx *c, const char *s, size_t n);        /* copies */
jv jv_cstr(const char *s);                          /* borrows a static string */
static inline jv jv_strbuf(jbuf *b) { return (jv){.kind = JV_STR, .s = {b->p ? b->p : "", b->n}}; }
jv jv_list(jctx *c, size_t cap);
jv jv_dict(jctx *c, size_t cap);
void jlist_push(jctx *c, jlist *l, jv v);
void jdict_set(jctx *c, jdict *d, jv k, jv v);
jv *jdict_get(const jdict *d, jv k);                /* NULL when absent */
jv *jdict_gets(const jdict *d, const char *key);

const char *jv_type(jv v);                  /* Python's type name: 'str', 'list', 'NoneType' */
bool jv_truthy(jv v);
bool jv_eq(jv a, jv b);
bool jv_is_number(jv v);                    /* int, float or bool */
double jv_num(jv v);
/* Python's <, ==, > for numbers, strings and sequences; unwinds otherwise. */
int jv_cmp(jctx *c, const struct jnode *at, jv a, jv b, const char *op);
/* str(v) as Python writes it (undefined: "") appended to b; repr(v) likewise. */
void jv_str_to(jctx *c, jbuf *b, jv v);
void jv_repr_to(jctx *c, jbuf *b, jv v);
jv jv_to_str(jctx *c, jv v);
const char *jv_cstr_of(jctx *c, jv v);      /* str(v) NUL-terminated */
void jfloat_repr(double f, char out[32]);   /* Python's repr(float) */
/* The undefined value's message, as Jinja words it: "'x' is undefined". */
const char *jv_undef_msg(jctx *c, jv v);
_Noreturn void jfail_undef(jctx *c, const struct jnode *at, jv v);
/* The list an iteration goes over (dict: keys, str: characters); unwinds
 * when v is not iterable. */
jlist *jv_iter(jctx *c, const struct jnode *at, jv v);

/* Stable merge sort; cmp may unwind (the scratch space is arena memory). */
void jsort(jctx *c, void *base, size_t n, size_t size, int (*cmp)(jctx *, const void *, const void *, void *),
           void *u);

/* UTF-8 helpers: code point count, byte offset of code point i, the code
 * point at s (and its byte length), appending a code point. */
size_t utf8_len(const char *s, size_t n);
size_t utf8_offset(const char *s, size_t n, size_t i);
unsigned utf8_decode(const char *s, size_t n, size_t *len);
void utf8_put(jctx *c, jbuf *b, unsigned cp);

/* JSON: parse into values (Python json.loads: ints stay ints), and
 * json.dumps with transformers' tojson options. */
jv jjson_parse(jctx *c, const char *text, const char *what);
typedef struct jjson_opts {
    bool ensure_ascii, sort_keys;
    const char *indent;             /* NULL: all on one line */
    const char *item_sep, *key_sep; /* NULL: json.dumps' defaults */
} jjson_opts;
void jjson_dump(jctx *c, const struct jnode *at, jbuf *b, jv v, const jjson_opts *o, int level);

/* -------------------------------------------------------------- the tree */
typedef enum jntype {
    /* expressions */
    N_LIT, N_NAME, N_LIST, N_TUPLE, N_DICT, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST,
    N_NEG, N_POS, N_NOT, N_BIN, N_AND, N_OR, N_CMP, N_COND,
    /* statements */
    S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_CALLBLOCK, S_FILTERBLOCK, S_WITH,
    S_BREAK, S_CONTINUE, S_BLOCK
} jntype;

typedef struct jnodes { struct jnode **v; size_t n; } jnodes;

typedef struct jnode {
    jntype type;
    int op;                 /* N_BIN/N_CMP operator token; N_TEST: negated */
    int line, col;
    const char *name;       /* N_NAME, N_ATTR, N_FILTER, N_TEST, S_MACRO */
    jv lit;                 /* N_LIT, S_TEXT */
    struct jnode *a, *b, *c;/* operands; S_FOR: a=target b=iter c=condition */
    jnodes items;           /* elements, positional arguments, N_CMP operands, S_*BLOCK filters */
    const char **kwn;       /* keyword names; S_MACRO/S_CALLBLOCK/S_WITH: parameter names */
    jnodes kwv;             /* their values / defaults (NULL: none) */
    int *ops;               /* N_CMP operators */
    jnodes body, orelse;
} jnode;

/* Lexer tokens. */
typedef enum jtok {
    T_EOF, T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END,
    T_NAME, T_STRING, T_INT, T_FLOAT, T_OP
} jtok;
/* Operators are their characters packed into an int: '+', ('/' << 8) | '/' … */
#define OP2(a, b) (((a) << 8) | (b))

typedef struct jtoken {
    jtok type;
    int op;
    int line, col;
    const char *s; /* T_NAME, T_STRING (decoded), T_DATA */
    size_t n;
    int64_t i;
    double f;
} jtoken;

typedef struct jtokens { jtoken *v; size_t n, cap; } jtokens;

/* source (NUL-terminated) → tokens, whitespace control applied. */
void jlex(jctx *c, const char *src, jtokens *out);
/* tokens → the template body. */
jnodes jparse(jctx *c, const jtokens *t);

/* ------------------------------------------------------------ evaluation */
/* Renders body with root variables ctxv (a dict) into out. */
void jrender(jctx *c, const jnodes *body, jv ctxv, jbuf *out);
jv jcall(jctx *c, const jnode *at, jv fn, jargs *a);
/* getattr / getitem with Jinja's sandboxed lookup rules. */
jv jgetattr(jctx *c, const jnode *at, jv obj, const char *name);
jv jgetitem(jctx *c, const jnode *at, jv obj, jv key);

/* Python's `needle in hay` and binary operators (op: a token's op code). */
bool jcontains(jctx *c, const jnode *at, jv needle, jv hay);
jv jarith(jctx *c, const jnode *at, int op, jv a, jv b);

/* String helpers shared by filters and methods. mode: 1 strip the left, 2
 * the right, 3 both; chars: JV_UNDEF/None for Python's whitespace. */
jv jstr_strip(jctx *c, const struct jnode *at, jv s, jv chars, int mode);
/* mode 'u' upper, 'l' lower, 'c' capitalize, 't' Python's str.title */
jv jstr_case(jctx *c, jv s, int mode);
jlist *jstr_splitlines(jctx *c, jv s);

/* Filters, tests, methods: NULL when there is no such name. */
jbuiltin jfilter_find(const char *name);
typedef bool (*jtest)(jctx *c, const jnode *at, jv v, jargs *a);
jtest jtest_find(const char *name);
jv jmethod_get(jctx *c, const jnode *at, jv self, const char *name, bool *found);
jbuiltin jglobal_find(const char *name);

/* Binds a call's arguments to a Python-style parameter list (NULL-ended);
 * parameters not given are JV_UNDEF with a NULL reason. Unwinds on unknown
 * keywords or too many arguments. */
void jbind(jctx *c, const jnode *at, const char *fname, jargs *a, const char *const *params, jv *out);
/* Declares `jv p[]` holding the named parameters of a builtin (name: for
 * messages) bound from its jargs `a`; needs `c` and `at` in scope. */
#define BIND(name, ...)                                                  \
    static const char *const params_[] = {__VA_ARGS__, NULL};            \
    jv p[sizeof params_ / sizeof *params_];                              \
    jbind(c, at, name, a, params_, p)
#define NOARGS(name)                                                     \
    if (a->npos || a->nkw) jfail(c, AFO_ERR_INVALID_ARGUMENT, at->line, at->col, "%s() takes no arguments", name)
static inline bool jgiven(jv v) { return !(v.kind == JV_UNDEF && v.u == NULL); }
int64_t jarg_int(jctx *c, const jnode *at, jv v, int64_t dflt);
const char *jarg_str(jctx *c, const jnode *at, jv v, const char *dflt, size_t *len);
bool jarg_bool(jv v, bool dflt);
/* Unwinds with "function() expects a string" style errors. */
void jexpect(jctx *c, const jnode *at, jv v, jkind kind, const char *what);

#endif
