/* Chat-template engine: the lexer. Splits the source into text and tag
 * tokens, applying Jinja's whitespace control as transformers configures it:
 * trim_blocks (the newline after a block or comment tag goes), lstrip_blocks
 * (spaces before a block or comment tag alone on its line go),
 * keep_trailing_newline=False, and the explicit '-' / '+' markers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"

typedef struct lexer {
    jctx *c;
    const char *s;
    size_t n, pos;
    size_t line_pos; /* position, line and column of the last lookup */
    int line, col;
    jtokens *out;
} lexer;

/* Line and column (in code points) of pos; lookups mostly move forward, so
 * the scan resumes from the last one. */
static void where(lexer *L, size_t pos, int *line, int *col) {
    if (pos < L->line_pos) L->line_pos = 0, L->line = 1, L->col = 1;
    for (; L->line_pos < pos; L->line_pos++) {
        unsigned char ch = (unsigned char)L->s[L->line_pos];
        if (ch == '\n') L->line++, L->col = 1;
        else if ((ch & 0xC0) != 0x80) L->col++;
    }
    *line = L->line;
    *col = L->col;
}

static _Noreturn void lex_fail(lexer *L, size_t pos, const char *what) {
    int line, col;
    where(L, pos, &line, &col);
    jfail(L->c, AFO_ERR_FORMAT, line, col, "%s", what);
}

static jtoken *emit(lexer *L, jtok type, size_t pos) {
    jtokens *t = L->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        jtoken *v = jalloc(L->c, cap * sizeof *v);
        if (t->n) memcpy(v, t->v, t->n * sizeof *v);
        t->v = v, t->cap = cap;
    }
    jtoken *k = &t->v[t->n++];
    memset(k, 0, sizeof *k);
    k->type = type;
    where(L, pos, &k->line, &k->col);
    return k;
}

static bool is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }
static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_name_start(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static bool is_name_char(char ch) { return is_name_start(ch) || is_digit(ch); }

static size_t skip_space(lexer *L, size_t p) {
    while (p < L->n && is_space(L->s[p])) p++;
    return p;
}

/* Python string-literal escapes, as Jinja decodes them ("unicode-escape"). */
static size_t lex_string(lexer *L, size_t p, jtoken *k) {
    char q = L->s[p];
    size_t start = p++;
    jbuf b = {0};
    while (p < L->n && L->s[p] != q) {
        if (L->s[p] != '\\' || p + 1 >= L->n) {
            jbuf_put(L->c, &b, L->s + p++, 1);
            continue;
        }
        char e = L->s[++p];
        p++;
        const char *simple = strchr("\\'\"abfnrtv", e);
        if (simple) {
            static const char out[] = "\\'\"\a\b\f\n\r\t\v";
            jbuf_put(L->c, &b, &out[simple - "\\'\"abfnrtv"], 1);
        } else if (e == 'N') {
            lex_fail(L, p - 2, "\\N{...} escapes are not supported");
        } else if (e == '\n') {
            /* line continuation: nothing */
        } else if (e >= '0' && e <= '7') {
            unsigned v = (unsigned)(e - '0');
            for (int i = 0; i < 2 && p < L->n && L->s[p] >= '0' && L->s[p] <= '7'; i++) v = v * 8 + (unsigned)(L->s[p++] - '0');
            utf8_put(L->c, &b, v);
        } else if (e == 'x' || e == 'u' || e == 'U') {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            unsigned v = 0;
            for (int i = 0; i < digits; i++, p++) {
                char h = p < L->n ? L->s[p] : 0;
                int d = is_digit(h) ? h - '0' : (h | 32) >= 'a' && (h | 32) <= 'f' ? (h | 32) - 'a' + 10 : -1;
                if (d < 0) lex_fail(L, p, "truncated \\x, \\u or \\U escape in a string");
                v = v * 16 + (unsigned)d;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v < 0xE000)) lex_fail(L, p, "escape is not a valid code point");
            utf8_put(L->c, &b, v);
        } else {
            /* unknown escapes stay as written, as in Python */
            jbuf_put(L->c, &b, L->s + p - 2, 2);
        }
    }
    if (p >= L->n) lex_fail(L, start, "unterminated string literal");
    k->s = b.p ? b.p : "";
    k->n = b.n;
    return p + 1;
}

/* Digits (and '_' separators, dropped) from p on into b; returns the end. */
static size_t lex_digits(lexer *L, size_t p, jbuf *b) {
    for (; p < L->n && (is_digit(L->s[p]) || L->s[p] == '_'); p++)
        if (L->s[p] != '_') jbuf_put(L->c, b, L->s + p, 1);
    return p;
}

static size_t lex_number(lexer *L, size_t p, jtoken *k) {
    size_t start = p;
    jbuf buf = {0}; /* the literal without separators, of any length, as Python reads it */
    bool is_float = false;
    if (L->s[p] == '0' && p + 1 < L->n && strchr("xXoObB", L->s[p + 1]) && L->s[p + 1]) {
        int base = (L->s[p + 1] | 32) == 'x' ? 16 : (L->s[p + 1] | 32) == 'o' ? 8 : 2;
        p += 2;
        int64_t v = 0;
        bool any = false;
        for (; p < L->n; p++) {
            char h = L->s[p];
            if (h == '_') continue;
            int d = is_digit(h) ? h - '0' : (h | 32) >= 'a' && (h | 32) <= 'f' ? (h | 32) - 'a' + 10 : 99;
            if (d >= base) break;
            if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, d, &v))
                lex_fail(L, start, "integer literal too large");
            any = true;
        }
        if (!any) lex_fail(L, start, "invalid integer literal");
        k->type = T_INT, k->i = v;
        return p;
    }
    p = lex_digits(L, p, &buf);
    /* "x.1.2" is attribute access, not a float: a number right after a dot
     * stays an integer (Jinja's look-behind). */
    bool after_dot = start > 0 && L->s[start - 1] == '.';
    if (!after_dot && p + 1 < L->n && L->s[p] == '.' && is_digit(L->s[p + 1])) {
        is_float = true;
        jbuf_put(L->c, &buf, ".", 1);
        p = lex_digits(L, p + 1, &buf);
    }
    if (!after_dot && p < L->n && (L->s[p] | 32) == 'e') {
        size_t q = p + 1;
        if (q < L->n && (L->s[q] == '+' || L->s[q] == '-')) q++;
        if (q < L->n && is_digit(L->s[q])) {
            is_float = true;
            jbuf_put(L->c, &buf, L->s + p, q - p);
            p = lex_digits(L, q, &buf);
        }
    }
    if (is_float) {
        k->type = T_FLOAT;
        k->f = strtod(buf.p, NULL);
    } else {
        int64_t v = 0;
        for (size_t i = 0; i < buf.n; i++)
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, buf.p[i] - '0', &v))
                lex_fail(L, start, "integer literal too large");
        k->type = T_INT, k->i = v;
    }
    return p;
}

static const char *const OPS2[] = {"//", "**", "==", "!=", "<=", ">=", NULL};

/* Tokens of one {{ }} or {% %} (opened at `open`) up to its end; returns the position after
 * the end marker and sets *strip_after to its '-' / '+' sign (or 0). */
static size_t lex_tag(lexer *L, size_t open, size_t p, char close, char *strip_after) {
    char stack[JINJA_MAX_DEPTH];
    int depth = 0;
    for (;;) {
        p = skip_space(L, p);
        if (p >= L->n) lex_fail(L, open, close == '}' ? "unexpected end of template: '{{' is never closed"
                                                      : "unexpected end of template: '{%' is never closed");
        if (depth == 0) {
            char sign = (L->s[p] == '-' || (L->s[p] == '+' && close == '%')) ? L->s[p] : 0;
            size_t q = p + (sign != 0);
            if (q + 1 < L->n && L->s[q] == close && L->s[q + 1] == '}') {
                emit(L, close == '}' ? T_VAR_END : T_BLOCK_END, p);
                *strip_after = sign;
                return q + 2;
            }
        }
        char ch = L->s[p];
        jtoken *k;
        if (is_name_start(ch)) {
            size_t q = p;
            while (q < L->n && is_name_char(L->s[q])) q++;
            k = emit(L, T_NAME, p);
            k->s = jstrdup(L->c, L->s + p, q - p);
            k->n = q - p;
            p = q;
        } else if (is_digit(ch)) {
            k = emit(L, T_INT, p);
            p = lex_number(L, p, k);
        } else if (ch == '\'' || ch == '"') {
            k = emit(L, T_STRING, p);
            p = lex_string(L, p, k);
        } else {
            int op = 0;
            for (int i = 0; OPS2[i]; i++)
                if (p + 1 < L->n && L->s[p] == OPS2[i][0] && L->s[p + 1] == OPS2[i][1]) op = OP2(ch, L->s[p + 1]);
            if (!op && strchr("+-*/%~()[]{},.:|=<>;", ch)) op = ch;
            if (!op) {
                char msg[64];
                snprintf(msg, sizeof msg, "unexpected character '%c' in a tag", ch);
                lex_fail(L, p, msg);
            }
            if (ch == '(' || ch == '[' || ch == '{') {
                if (depth == JINJA_MAX_DEPTH) lex_fail(L, p, "brackets nested too deeply");
                stack[depth++] = ch == '(' ? ')' : ch == '[' ? ']' : '}';
            } else if (ch == ')' || ch == ']' || ch == '}') {
                if (depth == 0 || stack[depth - 1] != ch) {
                    char msg[64];
                    snprintf(msg, sizeof msg, "unexpected '%c'", ch);
                    lex_fail(L, p, msg);
                }
                depth--;
            }
            k = emit(L, T_OP, p);
            k->op = op;
            p += op > 0xFF ? 2 : 1;
        }
    }
}

/* Where the next "{{", "{%" or "{#" starts (n when none). */
static size_t next_tag(lexer *L, size_t p) {
    for (; p + 1 < L->n; p++)
        if (L->s[p] == '{' && (L->s[p + 1] == '{' || L->s[p + 1] == '%' || L->s[p + 1] == '#')) return p;
    return L->n;
}

/* Matches "{%[-+]? word [-+]?%}" at p; returns the end (0 if no match) and
 * the signs. */
static size_t match_word_tag(lexer *L, size_t p, const char *word, char *sign_in, char *sign_out) {
    if (p + 1 >= L->n || L->s[p] != '{' || L->s[p + 1] != '%') return 0;
    p += 2;
    *sign_in = (L->s[p] == '-' || L->s[p] == '+') ? L->s[p++] : 0;
    p = skip_space(L, p);
    size_t w = strlen(word);
    if (strncmp(L->s + p, word, w) != 0 || is_name_char(L->s[p + w])) return 0;
    p = skip_space(L, p + w);
    *sign_out = (L->s[p] == '-' || L->s[p] == '+') ? L->s[p++] : 0;
    return L->s[p] == '%' && L->s[p + 1] == '}' ? p + 2 : 0;
}

static size_t after_block_end(lexer *L, size_t p, char sign) {
    if (sign == '-') return skip_space(L, p);
    if (sign == 0 && p < L->n && L->s[p] == '\n') return p + 1; /* trim_blocks */
    return p;
}

static void emit_data(lexer *L, size_t from, size_t len) {
    if (!len) return;
    jtoken *k = emit(L, T_DATA, from);
    k->s = L->s + from;
    k->n = len;
}

void jlex(jctx *c, const char *src, jtokens *out) {
    /* Jinja's newline normalisation, then keep_trailing_newline=False. */
    size_t n0 = strlen(src);
    char *s = jalloc(c, n0 + 1);
    size_t n = 0;
    for (size_t i = 0; i < n0; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = '\0';
    lexer L = {.c = c, .s = s, .n = n, .line = 1, .col = 1, .out = out};
    bool line_starting = true;
    size_t p = 0;
    while (p < n) {
        size_t t = next_tag(&L, p);
        size_t len = t - p;
        if (t == n) {
            emit_data(&L, p, len);
            break;
        }
        char kind = s[t + 1], sign = (s[t + 2] == '-' || s[t + 2] == '+') ? s[t + 2] : 0;
        if (sign == '-') {
            while (len && is_space(s[p + len - 1])) len--;
        } else if (kind != '{' && sign != '+') {
            /* lstrip_blocks: drop the spaces that precede the tag on its line */
            size_t l = len;
            while (l && s[p + l - 1] != '\n') l--;
            if ((l > 0 || line_starting) && l < len) {
                size_t q = l;
                while (q < len && is_space(s[p + q])) q++;
                if (q == len) len = l;
            }
        }
        emit_data(&L, p, len);
        size_t q;
        char sin, sout;
        if (kind == '#') {
            size_t e = t + 2;
            while (e + 1 < n && !(s[e] == '#' && s[e + 1] == '}')) e++;
            if (e + 1 >= n) lex_fail(&L, t, "unexpected end of template: comment '{#' is never closed");
            char esign = (e > t + 2 && (s[e - 1] == '-' || s[e - 1] == '+')) ? s[e - 1] : 0;
            p = after_block_end(&L, e + 2, esign);
        } else if (kind == '%' && (q = match_word_tag(&L, t, "raw", &sin, &sout)) != 0) {
            /* {% raw %}: text up to {% endraw %}, untouched */
            size_t body = after_block_end(&L, q, sout), e = body;
            char ein, eout;
            size_t end = 0;
            for (; e < n; e++)
                if ((end = match_word_tag(&L, e, "endraw", &ein, &eout)) != 0) break;
            if (!end) lex_fail(&L, t, "unexpected end of template: '{% raw %}' is never closed");
            size_t blen = e - body;
            if (ein == '-')
                while (blen && is_space(s[body + blen - 1])) blen--;
            emit_data(&L, body, blen);
            p = after_block_end(&L, end, eout);
        } else {
            emit(&L, kind == '{' ? T_VAR_BEGIN : T_BLOCK_BEGIN, t);
            char esign;
            size_t e = lex_tag(&L, t, t + 2 + (sign != 0), kind == '{' ? '}' : '%', &esign);
            p = kind == '{' ? (esign == '-' ? skip_space(&L, e) : e) : after_block_end(&L, e, esign);
        }
        line_starting = p > 0 && s[p - 1] == '\n';
    }
    emit(&L, T_EOF, n);
}
