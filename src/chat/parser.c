/* Chat-template engine: the parser, tokens → tree. It follows Jinja's own
 * recursive descent (jinja2/parser.py) so that precedence matches exactly:
 * filters and tests bind tighter than arithmetic ('a' + b | trim is
 * 'a' + (b | trim)), ** is left-associative, and `not` sits above the
 * comparisons. */
#include <stdio.h>
#include <string.h>

#include "chat/jinja.h"

typedef struct parser {
    jctx *c;
    const jtoken *t;
    size_t i, n;
    int depth, loops;
} parser;

static const jtoken *cur(parser *P) { return &P->t[P->i]; }
static const jtoken *peek(parser *P) { return &P->t[P->i + 1 < P->n ? P->i + 1 : P->i]; }
static const jtoken *next(parser *P) {
    const jtoken *k = &P->t[P->i];
    if (P->i + 1 < P->n) P->i++;
    return k;
}

static const char *describe(const jtoken *k) {
    static _Thread_local char buf[80];
    switch (k->type) {
    case T_EOF: return "end of template";
    case T_DATA: return "template data";
    case T_VAR_BEGIN: return "'{{'";
    case T_VAR_END: return "end of print statement";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_BLOCK_END: return "end of statement block";
    case T_NAME: snprintf(buf, sizeof buf, "'%.60s'", k->s); return buf;
    case T_STRING: return "string";
    case T_INT: return "integer";
    case T_FLOAT: return "float";
    case T_OP:
        if (k->op > 0xFF) snprintf(buf, sizeof buf, "'%c%c'", k->op >> 8, k->op & 0xFF);
        else snprintf(buf, sizeof buf, "'%c'", k->op);
        return buf;
    }
    return "token";
}

static _Noreturn void pfail(parser *P, const jtoken *k, const char *fmt, const char *arg) {
    char msg[300];
    snprintf(msg, sizeof msg, fmt, arg);
    jfail(P->c, AFO_ERR_FORMAT, k->line, k->col, "%s", msg);
}

static bool is_op(parser *P, int op) { return cur(P)->type == T_OP && cur(P)->op == op; }
static bool is_name(parser *P, const char *name) { return cur(P)->type == T_NAME && strcmp(cur(P)->s, name) == 0; }
static bool skip_op(parser *P, int op) { return is_op(P, op) ? (next(P), true) : false; }
static bool skip_name(parser *P, const char *name) { return is_name(P, name) ? (next(P), true) : false; }

static void expect_op(parser *P, int op) {
    if (!skip_op(P, op)) {
        char want[8];
        snprintf(want, sizeof want, "'%c'", op);
        char msg[120];
        snprintf(msg, sizeof msg, "expected %s, got %s", want, describe(cur(P)));
        jfail(P->c, AFO_ERR_FORMAT, cur(P)->line, cur(P)->col, "%s", msg);
    }
}

static const char *expect_name(parser *P) {
    if (cur(P)->type != T_NAME) pfail(P, cur(P), "expected a name, got %s", describe(cur(P)));
    return next(P)->s;
}

static void expect_type(parser *P, jtok type, const char *what) {
    if (cur(P)->type != type) {
        char msg[200];
        snprintf(msg, sizeof msg, "expected %s, got %s", what, describe(cur(P)));
        jfail(P->c, AFO_ERR_FORMAT, cur(P)->line, cur(P)->col, "%s", msg);
    }
    next(P);
}

static jnode *node(parser *P, jntype type, const jtoken *at) {
    jnode *n = jalloc(P->c, sizeof *n);
    n->type = type;
    n->line = at->line;
    n->col = at->col;
    return n;
}

static void push(parser *P, jnodes *l, jnode *n) {
    /* arrays grow by doubling in the arena; capacity is the next power of two */
    if ((l->n & (l->n - 1)) == 0) {
        jnode **v = jalloc(P->c, (l->n ? l->n * 2 : 1) * sizeof *v);
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
    }
    l->v[l->n++] = n;
}

static void push_kw(parser *P, jnode *n, const char *name, jnode *value) {
    size_t k = n->kwv.n;
    if ((k & (k - 1)) == 0) {
        const char **v = jalloc(P->c, (k ? k * 2 : 1) * sizeof *v);
        if (k) memcpy(v, n->kwn, k * sizeof *v);
        n->kwn = v;
    }
    n->kwn[k] = name;
    push(P, &n->kwv, value);
}

static void enter(parser *P) {
    if (++P->depth > JINJA_MAX_DEPTH) pfail(P, cur(P), "%s", "expression or blocks nested too deeply");
}

/* ------------------------------------------------------------ expressions */
static jnode *parse_expression(parser *P, bool with_condexpr);
static jnode *parse_unary(parser *P, bool with_filter);
static jnode *parse_or(parser *P);

static bool tuple_end(parser *P, const char *extra_end) {
    jtok t = cur(P)->type;
    return t == T_VAR_END || t == T_BLOCK_END || is_op(P, ')') || (extra_end && is_name(P, extra_end));
}

/* Comma-separated expressions: a tuple if there is a comma. */
static jnode *parse_tuple(parser *P, bool with_condexpr, bool explicit_parens, const char *extra_end) {
    const jtoken *at = cur(P);
    jnode *tuple = node(P, N_TUPLE, at);
    bool is_tuple = false;
    for (;;) {
        if (tuple->items.n) expect_op(P, ',');
        if (tuple_end(P, extra_end)) break;
        push(P, &tuple->items, with_condexpr ? parse_expression(P, true) : parse_or(P));
        if (is_op(P, ','))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (tuple->items.n) return tuple->items.v[0];
        if (!explicit_parens) pfail(P, cur(P), "expected an expression, got %s", describe(cur(P)));
    }
    return tuple;
}

static void parse_call_args(parser *P, jnode *call) {
    expect_op(P, '(');
    while (!is_op(P, ')')) {
        if (call->items.n || call->kwv.n) {
            expect_op(P, ',');
            if (is_op(P, ')')) break;
        }
        if (is_op(P, '*') || is_op(P, OP2('*', '*')))
            pfail(P, cur(P), "%s", "*args and **kwargs in calls are not supported");
        if (cur(P)->type == T_NAME && peek(P)->type == T_OP && peek(P)->op == '=') {
            const char *key = next(P)->s;
            next(P);
            push_kw(P, call, key, parse_expression(P, true));
        } else {
            if (call->kwv.n) pfail(P, cur(P), "%s", "positional argument follows keyword argument");
            push(P, &call->items, parse_expression(P, true));
        }
    }
    next(P);
}

static jnode *parse_filter(parser *P, jnode *operand) {
    const jtoken *at = next(P); /* '|' */
    jnode *f = node(P, N_FILTER, at);
    f->a = operand;
    f->name = expect_name(P);
    if (!jfilter_find(f->name)) pfail(P, at, "no filter named '%s'", f->name);
    if (is_op(P, '(')) parse_call_args(P, f);
    return f;
}

static jnode *parse_primary(parser *P);
static jnode *parse_postfix(parser *P, jnode *n);

static jnode *parse_test(parser *P, jnode *operand) {
    const jtoken *at = next(P); /* 'is' */
    jnode *t = node(P, N_TEST, at);
    t->a = operand;
    t->op = skip_name(P, "not");
    t->name = expect_name(P);
    if (!jtest_find(t->name)) pfail(P, at, "no test named '%s'", t->name);
    jtok ty = cur(P)->type;
    if (is_op(P, '(')) {
        parse_call_args(P, t);
    } else if ((ty == T_NAME || ty == T_STRING || ty == T_INT || ty == T_FLOAT || is_op(P, '[') || is_op(P, '{')) &&
               !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
        if (is_name(P, "is")) pfail(P, cur(P), "%s", "you cannot chain multiple tests with is");
        push(P, &t->items, parse_postfix(P, parse_primary(P)));
    }
    return t;
}

static jnode *parse_filter_expr(parser *P, jnode *n) {
    for (;;) {
        if (is_op(P, '|')) {
            n = parse_filter(P, n);
        } else if (is_name(P, "is")) {
            n = parse_test(P, n);
        } else if (is_op(P, '(')) {
            jnode *call = node(P, N_CALL, cur(P));
            call->a = n;
            parse_call_args(P, call);
            n = call;
        } else {
            return n;
        }
    }
}

static jnode *parse_subscribed(parser *P) {
    const jtoken *at = cur(P);
    jnode *start = NULL;
    if (!is_op(P, ':')) {
        start = parse_expression(P, true);
        if (!is_op(P, ':')) return start;
    }
    next(P); /* ':' */
    jnode *s = node(P, N_SLICE, at);
    s->a = start;
    if (!is_op(P, ']') && !is_op(P, ',') && !is_op(P, ':')) s->b = parse_expression(P, true);
    if (skip_op(P, ':') && !is_op(P, ']') && !is_op(P, ',')) s->c = parse_expression(P, true);
    return s;
}

static jnode *parse_postfix(parser *P, jnode *n) {
    for (;;) {
        const jtoken *at = cur(P);
        if (skip_op(P, '.')) {
            if (cur(P)->type == T_NAME) {
                jnode *a = node(P, N_ATTR, at);
                a->a = n;
                a->name = next(P)->s;
                n = a;
            } else if (cur(P)->type == T_INT) {
                jnode *a = node(P, N_ITEM, at), *k = node(P, N_LIT, cur(P));
                k->lit = jv_int(next(P)->i);
                a->a = n, a->b = k;
                n = a;
            } else {
                pfail(P, cur(P), "expected a name or number after '.', got %s", describe(cur(P)));
            }
        } else if (skip_op(P, '[')) {
            jnode *a = node(P, N_ITEM, at);
            a->a = n;
            jnode *key = parse_subscribed(P);
            if (is_op(P, ',')) {
                jnode *t = node(P, N_TUPLE, at);
                push(P, &t->items, key);
                while (skip_op(P, ',') && !is_op(P, ']')) push(P, &t->items, parse_subscribed(P));
                key = t;
            }
            expect_op(P, ']');
            a->b = key;
            n = a;
        } else if (is_op(P, '(')) {
            jnode *call = node(P, N_CALL, at);
            call->a = n;
            parse_call_args(P, call);
            n = call;
        } else {
            return n;
        }
    }
}

static jnode *parse_primary(parser *P) {
    const jtoken *k = cur(P);
    jnode *n;
    switch (k->type) {
    case T_NAME:
        next(P);
        n = node(P, N_LIT, k);
        if (!strcmp(k->s, "true") || !strcmp(k->s, "True")) n->lit = jv_bool(true);
        else if (!strcmp(k->s, "false") || !strcmp(k->s, "False")) n->lit = jv_bool(false);
        else if (!strcmp(k->s, "none") || !strcmp(k->s, "None")) n->lit = jv_none();
        else n->type = N_NAME, n->name = k->s;
        return n;
    case T_STRING: {
        /* adjacent literals concatenate, as in Python */
        jbuf b = {0};
        while (cur(P)->type == T_STRING) {
            const jtoken *s = next(P);
            jbuf_put(P->c, &b, s->s, s->n);
        }
        n = node(P, N_LIT, k);
        n->lit = jv_strbuf(&b);
        return n;
    }
    case T_INT:
    case T_FLOAT:
        next(P);
        n = node(P, N_LIT, k);
        n->lit = k->type == T_INT ? jv_int(k->i) : jv_float(k->f);
        return n;
    default: break;
    }
    if (skip_op(P, '(')) {
        n = parse_tuple(P, true, true, NULL);
        expect_op(P, ')');
        return n;
    }
    if (skip_op(P, '[')) {
        n = node(P, N_LIST, k);
        while (!is_op(P, ']')) {
            if (n->items.n) {
                expect_op(P, ',');
                if (is_op(P, ']')) break;
            }
            push(P, &n->items, parse_expression(P, true));
        }
        next(P);
        return n;
    }
    if (skip_op(P, '{')) {
        n = node(P, N_DICT, k);
        while (!is_op(P, '}')) {
            if (n->items.n) {
                expect_op(P, ',');
                if (is_op(P, '}')) break;
            }
            push(P, &n->items, parse_expression(P, true));
            expect_op(P, ':');
            push(P, &n->items, parse_expression(P, true));
        }
        next(P);
        return n;
    }
    pfail(P, k, "unexpected %s", describe(k));
}

static jnode *parse_unary(parser *P, bool with_filter) {
    enter(P);
    const jtoken *at = cur(P);
    jnode *n;
    if (is_op(P, '-') || is_op(P, '+')) {
        n = node(P, is_op(P, '-') ? N_NEG : N_POS, at);
        next(P);
        n->a = parse_unary(P, false);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static jnode *binary(parser *P, const jtoken *at, int op, jnode *a, jnode *b) {
    jnode *n = node(P, N_BIN, at);
    n->op = op, n->a = a, n->b = b;
    return n;
}

static jnode *parse_pow(parser *P) {
    jnode *n = parse_unary(P, true);
    while (is_op(P, OP2('*', '*'))) {
        const jtoken *at = next(P);
        n = binary(P, at, at->op, n, parse_unary(P, true));
    }
    return n;
}

static jnode *parse_math2(parser *P) {
    jnode *n = parse_pow(P);
    while (is_op(P, '*') || is_op(P, '/') || is_op(P, OP2('/', '/')) || is_op(P, '%')) {
        const jtoken *at = next(P);
        n = binary(P, at, at->op, n, parse_pow(P));
    }
    return n;
}

static jnode *parse_concat(parser *P) {
    jnode *n = parse_math2(P);
    while (is_op(P, '~')) {
        const jtoken *at = next(P);
        n = binary(P, at, '~', n, parse_math2(P));
    }
    return n;
}

static jnode *parse_math1(parser *P) {
    jnode *n = parse_concat(P);
    while (is_op(P, '+') || is_op(P, '-')) {
        const jtoken *at = next(P);
        n = binary(P, at, at->op, n, parse_concat(P));
    }
    return n;
}

/* Comparison operators; 'in' and 'not in' are coded as 'i' and 'n'. */
static int compare_op(parser *P) {
    static const int ops[] = {OP2('=', '='), OP2('!', '='), '<', '>', OP2('<', '='), OP2('>', '=')};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (is_op(P, ops[i])) return next(P), ops[i];
    if (skip_name(P, "in")) return 'i';
    if (is_name(P, "not") && peek(P)->type == T_NAME && !strcmp(peek(P)->s, "in")) {
        next(P), next(P);
        return 'n';
    }
    return 0;
}

static jnode *parse_compare(parser *P) {
    const jtoken *at = cur(P);
    jnode *first = parse_math1(P), *cmp = NULL;
    size_t cap = 0;
    for (int op; (op = compare_op(P)) != 0;) {
        if (!cmp) {
            cmp = node(P, N_CMP, at);
            push(P, &cmp->items, first);
        }
        if (cmp->items.n > cap) {
            cap = cap ? cap * 2 : 4;
            int *ops = jalloc(P->c, cap * sizeof *ops);
            if (cmp->items.n > 1) memcpy(ops, cmp->ops, (cmp->items.n - 1) * sizeof *ops);
            cmp->ops = ops;
        }
        cmp->ops[cmp->items.n - 1] = op;
        push(P, &cmp->items, parse_math1(P));
    }
    return cmp ? cmp : first;
}

static jnode *parse_not(parser *P) {
    if (is_name(P, "not")) {
        jnode *n = node(P, N_NOT, next(P));
        enter(P);
        n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}

static jnode *parse_and(parser *P) {
    jnode *n = parse_not(P);
    while (is_name(P, "and")) {
        jnode *a = node(P, N_AND, next(P));
        a->a = n, a->b = parse_not(P);
        n = a;
    }
    return n;
}

static jnode *parse_or(parser *P) {
    jnode *n = parse_and(P);
    while (is_name(P, "or")) {
        jnode *o = node(P, N_OR, next(P));
        o->a = n, o->b = parse_and(P);
        n = o;
    }
    return n;
}

static jnode *parse_expression(parser *P, bool with_condexpr) {
    jnode *n = parse_or(P);
    if (!with_condexpr) return n;
    while (is_name(P, "if")) {
        jnode *cond = node(P, N_COND, next(P));
        cond->a = n;
        cond->b = parse_or(P);
        if (skip_name(P, "else")) {
            enter(P);
            cond->c = parse_expression(P, true);
            P->depth--;
        }
        n = cond;
    }
    return n;
}

/* ------------------------------------------------------------- statements */
static jnodes subparse(parser *P, const char *const *ends);

/* Targets of for and set: a name, names with commas, or (set only) ns.attr. */
static jnode *parse_target(parser *P, bool allow_attr, const char *extra_end) {
    const jtoken *at = cur(P);
    if (allow_attr && cur(P)->type == T_NAME && peek(P)->type == T_OP && peek(P)->op == '.') {
        jnode *a = node(P, N_ATTR, at), *obj = node(P, N_NAME, at);
        obj->name = next(P)->s;
        next(P);
        a->a = obj;
        a->name = expect_name(P);
        return a;
    }
    bool parens = skip_op(P, '(');
    jnode *t = node(P, N_TUPLE, at);
    do {
        if (tuple_end(P, extra_end) || is_op(P, '=')) break;
        jnode *n = node(P, N_NAME, cur(P));
        n->name = expect_name(P);
        push(P, &t->items, n);
    } while (skip_op(P, ','));
    if (parens) expect_op(P, ')');
    if (t->items.n == 0) pfail(P, cur(P), "expected a name to assign to, got %s", describe(cur(P)));
    return t->items.n == 1 && !parens ? t->items.v[0] : t;
}

static void end_tag(parser *P) { expect_type(P, T_BLOCK_END, "end of statement block"); }

/* Consumes "{% endNAME %}" after a body subparse stopped at it. */
static void expect_end(parser *P, const char *name) {
    if (!skip_name(P, name)) pfail(P, cur(P), "expected 'end...' tag, got %s", describe(cur(P)));
    end_tag(P);
}

static void parse_params(parser *P, jnode *n) {
    expect_op(P, '(');
    while (!is_op(P, ')')) {
        if (n->kwv.n) expect_op(P, ',');
        const char *name = expect_name(P);
        push_kw(P, n, name, skip_op(P, '=') ? parse_expression(P, true) : NULL);
    }
    next(P);
}

static jnode *parse_filter_chain(parser *P, jnode *n) {
    while (is_op(P, '|')) push(P, &n->items, parse_filter(P, NULL));
    return n;
}

static jnode *parse_statement(parser *P) {
    const jtoken *at = cur(P);
    if (at->type != T_NAME) pfail(P, at, "expected a tag name, got %s", describe(at));
    const char *tag = at->s;
    jnode *n;
    enter(P);
    next(P);
    if (!strcmp(tag, "for")) {
        n = node(P, S_FOR, at);
        n->a = parse_target(P, false, "in");
        if (!skip_name(P, "in")) pfail(P, cur(P), "expected 'in', got %s", describe(cur(P)));
        n->b = parse_tuple(P, false, false, "recursive");
        if (skip_name(P, "if")) n->c = parse_expression(P, true);
        if (is_name(P, "recursive")) pfail(P, cur(P), "%s", "recursive loops are not supported");
        end_tag(P);
        P->loops++;
        n->body = subparse(P, (const char *const[]){"endfor", "else", NULL});
        P->loops--;
        if (skip_name(P, "else")) {
            end_tag(P);
            n->orelse = subparse(P, (const char *const[]){"endfor", NULL});
        }
        expect_end(P, "endfor");
    } else if (!strcmp(tag, "if")) {
        n = node(P, S_IF, at);
        jnode *branch = n;
        for (;;) {
            branch->a = parse_tuple(P, false, false, NULL);
            end_tag(P);
            branch->body = subparse(P, (const char *const[]){"elif", "else", "endif", NULL});
            const jtoken *k = cur(P);
            if (skip_name(P, "elif")) {
                jnode *elif = node(P, S_IF, k);
                push(P, &branch->orelse, elif);
                branch = elif;
                continue;
            }
            if (skip_name(P, "else")) {
                end_tag(P);
                branch->orelse = subparse(P, (const char *const[]){"endif", NULL});
            }
            break;
        }
        expect_end(P, "endif");
    } else if (!strcmp(tag, "set")) {
        n = node(P, S_SET, at);
        n->a = parse_target(P, true, NULL);
        if (skip_op(P, '=')) {
            n->b = parse_tuple(P, true, false, NULL);
            end_tag(P);
        } else {
            n->type = S_SETBLOCK;
            parse_filter_chain(P, n);
            end_tag(P);
            n->body = subparse(P, (const char *const[]){"endset", NULL});
            expect_end(P, "endset");
        }
    } else if (!strcmp(tag, "macro")) {
        n = node(P, S_MACRO, at);
        n->name = expect_name(P);
        parse_params(P, n);
        end_tag(P);
        int loops = P->loops;
        P->loops = 0; /* break/continue do not cross a macro */
        n->body = subparse(P, (const char *const[]){"endmacro", NULL});
        P->loops = loops;
        expect_end(P, "endmacro");
    } else if (!strcmp(tag, "call")) {
        n = node(P, S_CALLBLOCK, at);
        if (is_op(P, '(')) parse_params(P, n);
        n->a = parse_expression(P, true);
        if (n->a->type != N_CALL) pfail(P, at, "%s", "expected a call after 'call'");
        end_tag(P);
        n->body = subparse(P, (const char *const[]){"endcall", NULL});
        expect_end(P, "endcall");
    } else if (!strcmp(tag, "filter")) {
        n = node(P, S_FILTERBLOCK, at);
        P->i--; /* parse_filter stands on a '|': here the tag name plays its part */
        push(P, &n->items, parse_filter(P, NULL));
        parse_filter_chain(P, n);
        end_tag(P);
        n->body = subparse(P, (const char *const[]){"endfilter", NULL});
        expect_end(P, "endfilter");
    } else if (!strcmp(tag, "with")) {
        n = node(P, S_WITH, at);
        while (!(cur(P)->type == T_BLOCK_END)) {
            if (n->kwv.n) expect_op(P, ',');
            const char *name = expect_name(P);
            expect_op(P, '=');
            push_kw(P, n, name, parse_expression(P, true));
        }
        end_tag(P);
        n->body = subparse(P, (const char *const[]){"endwith", NULL});
        expect_end(P, "endwith");
    } else if (!strcmp(tag, "generation")) {
        /* transformers' AssistantTracker marks assistant spans; the text is unchanged */
        n = node(P, S_BLOCK, at);
        end_tag(P);
        n->body = subparse(P, (const char *const[]){"endgeneration", NULL});
        expect_end(P, "endgeneration");
    } else if ((!strcmp(tag, "break") || !strcmp(tag, "continue")) && P->loops > 0) {
        n = node(P, tag[0] == 'b' ? S_BREAK : S_CONTINUE, at);
        end_tag(P);
    } else {
        pfail(P, at, "unknown tag '%s' (or one not allowed here)", tag);
    }
    P->depth--;
    return n;
}

static jnodes subparse(parser *P, const char *const *ends) {
    jnodes body = {0};
    for (;;) {
        const jtoken *k = cur(P);
        if (k->type == T_DATA) {
            jnode *t = node(P, S_TEXT, k);
            t->lit = (jv){.kind = JV_STR, .s = {k->s, k->n}};
            push(P, &body, t);
            next(P);
        } else if (k->type == T_VAR_BEGIN) {
            next(P);
            jnode *o = node(P, S_OUT, k);
            o->a = parse_tuple(P, true, false, NULL);
            expect_type(P, T_VAR_END, "end of print statement");
            push(P, &body, o);
        } else if (k->type == T_BLOCK_BEGIN) {
            next(P);
            for (int i = 0; ends && ends[i]; i++)
                if (is_name(P, ends[i])) return body;
            push(P, &body, parse_statement(P));
        } else if (k->type == T_EOF) {
            if (ends) {
                char want[120] = "";
                for (int i = 0; ends[i]; i++)
                    snprintf(want + strlen(want), sizeof want - strlen(want), "%s'%s'", i ? " or " : "", ends[i]);
                pfail(P, k, "unexpected end of template: a block is not closed, expected %s", want);
            }
            return body;
        } else {
            pfail(P, k, "unexpected %s", describe(k));
        }
    }
}

jnodes jparse(jctx *c, const jtokens *t) {
    parser P = {c, t->v, 0, t->n, 0, 0};
    return subparse(&P, NULL);
}
