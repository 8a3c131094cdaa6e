/* Chat-template engine: the Python methods templates call on values
 * (str.strip, str.split, dict.get, …). Jinja hands templates real Python
 * objects, so these follow CPython's behaviour, including the sandbox rule
 * of transformers' ImmutableSandboxedEnvironment: methods that modify a list
 * or dict are refused. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"

static jv substr(const char *p, size_t n) { return (jv){.kind = JV_STR, .s = {p, n}}; }

/* --------------------------------------------------------- code points */
/* Python's str.isspace() */
static bool py_space(unsigned cp) {
    return (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* Byte length of the code point that ends at s[end), not reaching back
 * past s[lo] (continuation bytes without their lead, in malformed UTF-8,
 * would otherwise join the code point before lo). lo < end. */
static size_t last_len(const char *s, size_t lo, size_t end) {
    size_t k = 1;
    while (k < end - lo && ((unsigned char)s[end - k] & 0xC0) == 0x80) k++;
    return k;
}

static bool in_set(unsigned cp, jv chars) {
    if (chars.kind != JV_STR) return py_space(cp);
    for (size_t i = 0, k; i < chars.s.n; i += k)
        if (utf8_decode(chars.s.p + i, chars.s.n - i, &k) == cp) return true;
    return false;
}

jv jstr_strip(jctx *c, const jnode *at, jv s, jv chars, int mode) {
    if (chars.kind != JV_STR && chars.kind != JV_NONE && jgiven(chars))
        jfail_at(c, at, "strip arg must be None or str, not %s", jv_type(chars));
    size_t lo = 0, hi = s.s.n, k;
    if (mode & 1)
        while (lo < hi && in_set(utf8_decode(s.s.p + lo, hi - lo, &k), chars)) lo += k;
    if (mode & 2)
        while (hi > lo) {
            size_t back = last_len(s.s.p, lo, hi);
            if (!in_set(utf8_decode(s.s.p + hi - back, back, &k), chars)) break;
            hi -= back;
        }
    return substr(s.s.p + lo, hi - lo);
}

/* Simple case mapping for the scripts chat text mostly uses: ASCII,
 * Latin-1, Latin Extended-A, Greek and Cyrillic. Others are left as they
 * are (Python maps all of Unicode). */
static unsigned to_upper(unsigned cp) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 0xE0 && cp <= 0xFE && cp != 0xF7) || (cp >= 0x3B1 && cp <= 0x3C9 && cp != 0x3C2) ||
        (cp >= 0x430 && cp <= 0x44F))
        return cp - 32;
    if (cp == 0x3C2) return 0x3A3; /* final sigma */
    if (cp == 0xFF) return 0x178;
    if (cp >= 0x450 && cp <= 0x45F) return cp - 80;
    if (cp >= 0x100 && cp <= 0x17F && cp != 0x131 && cp != 0x138 && cp != 0x149 && cp != 0x17F) {
        bool odd_lower = (cp < 0x139) || (cp > 0x148 && cp < 0x179);
        if (odd_lower ? (cp & 1) : !(cp & 1)) return cp - 1;
    }
    return cp;
}

static unsigned to_lower(unsigned cp) {
    if ((cp >= 'A' && cp <= 'Z') || (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) || (cp >= 0x391 && cp <= 0x3A9 && cp != 0x3A2) ||
        (cp >= 0x410 && cp <= 0x42F))
        return cp + 32;
    if (cp == 0x178) return 0xFF;
    if (cp >= 0x400 && cp <= 0x40F) return cp + 80;
    if (cp >= 0x100 && cp <= 0x17F && cp != 0x130 && cp != 0x138 && cp != 0x149 && cp != 0x178) {
        bool odd_lower = (cp < 0x139) || (cp > 0x148 && cp < 0x179);
        if (odd_lower ? !(cp & 1) : (cp & 1)) return cp + 1;
    }
    return cp;
}

jv jstr_case(jctx *c, jv s, int mode) {
    jbuf b = {0};
    bool word_start = true;
    for (size_t i = 0, k; i < s.s.n; i += k) {
        unsigned cp = utf8_decode(s.s.p + i, s.s.n - i, &k);
        bool up = mode == 'u' || (mode == 'c' && i == 0) || (mode == 't' && word_start);
        unsigned m = up ? to_upper(cp) : to_lower(cp);
        if (k > 1 && m == cp) jbuf_put(c, &b, s.s.p + i, k); /* keep the bytes as they are */
        else utf8_put(c, &b, m);
        word_start = to_upper(cp) == cp && to_lower(cp) == cp; /* str.title: words start after uncased characters */
    }
    return jv_strbuf(&b);
}

/* str.splitlines(): \n, \r, \r\n, \v, \f, \x1c-\x1e, U+0085, U+2028, U+2029 */
jlist *jstr_splitlines(jctx *c, jv s) {
    jv out = jv_list(c, 0);
    size_t start = 0, i = 0, k;
    while (i < s.s.n) {
        unsigned cp = utf8_decode(s.s.p + i, s.s.n - i, &k);
        if (cp == '\n' || cp == '\r' || cp == 11 || cp == 12 || (cp >= 0x1C && cp <= 0x1E) || cp == 0x85 ||
            cp == 0x2028 || cp == 0x2029) {
            jlist_push(c, out.l, substr(s.s.p + start, i - start));
            i += k;
            if (cp == '\r' && i < s.s.n && s.s.p[i] == '\n') i++;
            start = i;
        } else {
            i += k;
        }
    }
    if (start < s.s.n) jlist_push(c, out.l, substr(s.s.p + start, s.s.n - start));
    return out.l;
}

/* ----------------------------------------------------------- str methods */
static jv m_strip(jctx *c, const jnode *at, jv self, jargs *a) { BIND("strip", "chars"); return jstr_strip(c, at, self, p[0], 3); }
static jv m_lstrip(jctx *c, const jnode *at, jv self, jargs *a) { BIND("lstrip", "chars"); return jstr_strip(c, at, self, p[0], 1); }
static jv m_rstrip(jctx *c, const jnode *at, jv self, jargs *a) { BIND("rstrip", "chars"); return jstr_strip(c, at, self, p[0], 2); }
static jv m_upper(jctx *c, const jnode *at, jv self, jargs *a) { NOARGS("upper"); return jstr_case(c, self, 'u'); }
static jv m_lower(jctx *c, const jnode *at, jv self, jargs *a) { NOARGS("lower"); return jstr_case(c, self, 'l'); }
static jv m_title(jctx *c, const jnode *at, jv self, jargs *a) { NOARGS("title"); return jstr_case(c, self, 't'); }
static jv m_capitalize(jctx *c, const jnode *at, jv self, jargs *a) { NOARGS("capitalize"); return jstr_case(c, self, 'c'); }

static jv m_splitlines(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("splitlines", "keepends");
    if (jarg_bool(p[0], false)) jfail_at(c, at, "splitlines(keepends=True) is not supported");
    return (jv){.kind = JV_LIST, .l = jstr_splitlines(c, self)};
}

/* The first (or last) nd in h; an empty nd is at h's start (end), and may
 * be NULL, as may an empty h. */
static const char *find_sub(const char *h, size_t hn, const char *nd, size_t nn, bool last) {
    if (nn > hn) return NULL;
    if (nn == 0) return last && hn ? h + hn : h;
    if (!last) return memmem(h, hn, nd, nn);
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (memcmp(h + i, nd, nn) == 0) return h + i;
    return NULL;
}

/* split and rsplit, with Python's rules for sep=None (runs of whitespace,
 * no empty parts) and maxsplit. */
static jv split(jctx *c, const jnode *at, jv self, jargs *a, bool from_right) {
    BIND(from_right ? "rsplit" : "split", "sep", "maxsplit");
    int64_t maxsplit = jarg_int(c, at, p[1], -1);
    bool ws = !jgiven(p[0]) || p[0].kind == JV_NONE;
    size_t sn = 0;
    const char *sep = ws ? NULL : jarg_str(c, at, p[0], NULL, &sn);
    if (!ws && sn == 0) jfail_at(c, at, "empty separator");
    jv parts = jv_list(c, 0);
    const char *s = self.s.p;
    size_t lo = 0, hi = self.s.n, k;
    for (int64_t done = 0;; done++) {
        if (ws) {
            /* skip whitespace at the working end */
            if (!from_right)
                while (lo < hi && py_space(utf8_decode(s + lo, hi - lo, &k))) lo += k;
            else
                while (hi > lo && py_space(utf8_decode(s + hi - last_len(s, lo, hi), last_len(s, lo, hi), &k))) hi -= last_len(s, lo, hi);
            if (lo == hi) break;
        }
        if (maxsplit >= 0 && done >= maxsplit) {
            jlist_push(c, parts.l, substr(s + lo, hi - lo));
            break;
        }
        size_t cut_lo, cut_hi; /* the separator found: [cut_lo, cut_hi) */
        if (ws) {
            size_t i = from_right ? hi : lo;
            bool found = false;
            if (!from_right) {
                while (i < hi && !py_space(utf8_decode(s + i, hi - i, &k))) i += k;
                found = i < hi;
                cut_lo = i, cut_hi = found ? i + k : i;
            } else {
                while (i > lo && !py_space(utf8_decode(s + i - last_len(s, lo, i), last_len(s, lo, i), &k))) i -= last_len(s, lo, i);
                found = i > lo;
                cut_hi = i, cut_lo = found ? i - last_len(s, lo, i) : i;
            }
            if (!found) {
                jlist_push(c, parts.l, substr(s + lo, hi - lo));
                break;
            }
        } else {
            const char *f = find_sub(s + lo, hi - lo, sep, sn, from_right);
            if (!f) {
                jlist_push(c, parts.l, substr(s + lo, hi - lo));
                break;
            }
            cut_lo = (size_t)(f - s), cut_hi = cut_lo + sn;
        }
        if (!from_right) {
            jlist_push(c, parts.l, substr(s + lo, cut_lo - lo));
            lo = cut_hi;
        } else {
            jlist_push(c, parts.l, substr(s + cut_hi, hi - cut_hi));
            hi = cut_lo;
        }
    }
    if (from_right) /* collected right to left */
        for (size_t i = 0; i < parts.l->n / 2; i++) {
            jv t = parts.l->v[i];
            parts.l->v[i] = parts.l->v[parts.l->n - 1 - i];
            parts.l->v[parts.l->n - 1 - i] = t;
        }
    return parts;
}
static jv m_split(jctx *c, const jnode *at, jv self, jargs *a) { return split(c, at, self, a, false); }
static jv m_rsplit(jctx *c, const jnode *at, jv self, jargs *a) { return split(c, at, self, a, true); }

static bool affix(jctx *c, const jnode *at, jv self, jv what, bool end) {
    if (what.kind == JV_LIST && (what.flags & JV_TUPLE)) {
        for (size_t i = 0; i < what.l->n; i++)
            if (affix(c, at, self, what.l->v[i], end)) return true;
        return false;
    }
    if (what.kind != JV_STR) jfail_at(c, at, "%s arg must be str or a tuple of str", end ? "endswith" : "startswith");
    if (what.s.n > self.s.n) return false;
    return memcmp(self.s.p + (end ? self.s.n - what.s.n : 0), what.s.p, what.s.n) == 0;
}
static jv m_startswith(jctx *c, const jnode *at, jv self, jargs *a) { BIND("startswith", "prefix"); return jv_bool(affix(c, at, self, p[0], false)); }
static jv m_endswith(jctx *c, const jnode *at, jv self, jargs *a) { BIND("endswith", "suffix"); return jv_bool(affix(c, at, self, p[0], true)); }

static jv m_removeprefix(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("removeprefix", "prefix");
    return affix(c, at, self, p[0], false) ? substr(self.s.p + p[0].s.n, self.s.n - p[0].s.n) : self;
}
static jv m_removesuffix(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("removesuffix", "suffix");
    return affix(c, at, self, p[0], true) ? substr(self.s.p, self.s.n - p[0].s.n) : self;
}

/* A string argument the method cannot do without (Python: TypeError). */
static const char *required_str(jctx *c, const jnode *at, jv v, const char *method, size_t *len) {
    if (!jgiven(v)) jfail_at(c, at, "%s() is missing a required argument", method);
    return jarg_str(c, at, v, NULL, len);
}

static jv m_replace(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("replace", "old", "new", "count");
    size_t on, nn;
    const char *old = required_str(c, at, p[0], "replace", &on), *nw = required_str(c, at, p[1], "replace", &nn);
    int64_t count = jarg_int(c, at, p[2], -1);
    jbuf b = {0};
    size_t i = 0;
    for (int64_t done = 0; count < 0 || done < count; done++) {
        if (on == 0) { /* "" matches between every character */
            jbuf_put(c, &b, nw, nn);
            if (i >= self.s.n) { i = self.s.n + 1; break; }
            size_t k = utf8_offset(self.s.p + i, self.s.n - i, 1);
            jbuf_put(c, &b, self.s.p + i, k);
            i += k;
            continue;
        }
        const char *f = find_sub(self.s.p + i, self.s.n - i, old, on, false);
        if (!f) break;
        jbuf_put(c, &b, self.s.p + i, (size_t)(f - self.s.p) - i);
        jbuf_put(c, &b, nw, nn);
        i = (size_t)(f - self.s.p) + on;
    }
    if (i <= self.s.n) jbuf_put(c, &b, self.s.p + i, self.s.n - i);
    return jv_strbuf(&b);
}

static jv find_impl(jctx *c, const jnode *at, jv self, jargs *a, const char *name, bool last, bool must) {
    BIND(name, "sub");
    size_t n;
    const char *sub = required_str(c, at, p[0], name, &n);
    const char *f = find_sub(self.s.p, self.s.n, sub, n, last);
    if (!f && must) jfail_at(c, at, "substring not found");
    return jv_int(f ? (int64_t)utf8_len(self.s.p, (size_t)(f - self.s.p)) : -1);
}
static jv m_find(jctx *c, const jnode *at, jv self, jargs *a) { return find_impl(c, at, self, a, "find", false, false); }
static jv m_rfind(jctx *c, const jnode *at, jv self, jargs *a) { return find_impl(c, at, self, a, "rfind", true, false); }
static jv m_sindex(jctx *c, const jnode *at, jv self, jargs *a) { return find_impl(c, at, self, a, "index", false, true); }

static jv m_scount(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("count", "sub");
    size_t n;
    const char *sub = required_str(c, at, p[0], "count", &n);
    if (n == 0) return jv_int((int64_t)utf8_len(self.s.p, self.s.n) + 1);
    int64_t k = 0;
    for (const char *f = self.s.p; (f = find_sub(f, self.s.n - (size_t)(f - self.s.p), sub, n, false)); f += n) k++;
    return jv_int(k);
}

static jv m_join(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("join", "iterable");
    jlist *items = jv_iter(c, at, p[0]);
    jbuf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (items->v[i].kind != JV_STR)
            jfail_at(c, at, "sequence item: expected str instance, %s found", jv_type(items->v[i]));
        if (i) jbuf_put(c, &b, self.s.p, self.s.n);
        jbuf_put(c, &b, items->v[i].s.p, items->v[i].s.n);
    }
    return jv_strbuf(&b);
}

/* isdigit / isalpha / …: every character in the class, and at least one. */
static jv char_class(jctx *c, const jnode *at, jv self, jargs *a, const char *name, int cls) {
    if (a->npos || a->nkw) jfail_at(c, at, "%s() takes no arguments", name);
    bool any_cased = false;
    for (size_t i = 0, k; i < self.s.n; i += k) {
        unsigned cp = utf8_decode(self.s.p + i, self.s.n - i, &k);
        bool digit = cp >= '0' && cp <= '9', lower = cp >= 'a' && cp <= 'z', upper = cp >= 'A' && cp <= 'Z';
        bool ok = cls == 'd' ? digit : cls == 'a' ? lower || upper : cls == 'n' ? digit || lower || upper
                : cls == 's' ? py_space(cp) : cls == 'l' ? !upper : !lower;
        if (!ok) return jv_bool(false);
        any_cased |= lower || upper;
    }
    return jv_bool(self.s.n > 0 && (cls == 'l' || cls == 'u' ? any_cased : true));
}
static jv m_isdigit(jctx *c, const jnode *at, jv s, jargs *a) { return char_class(c, at, s, a, "isdigit", 'd'); }
static jv m_isalpha(jctx *c, const jnode *at, jv s, jargs *a) { return char_class(c, at, s, a, "isalpha", 'a'); }
static jv m_isalnum(jctx *c, const jnode *at, jv s, jargs *a) { return char_class(c, at, s, a, "isalnum", 'n'); }
static jv m_isspace(jctx *c, const jnode *at, jv s, jargs *a) { return char_class(c, at, s, a, "isspace", 's'); }
static jv m_islower(jctx *c, const jnode *at, jv s, jargs *a) { return char_class(c, at, s, a, "islower", 'l'); }
static jv m_isupper(jctx *c, const jnode *at, jv s, jargs *a) { return char_class(c, at, s, a, "isupper", 'u'); }

/* str.format: {} {0} {name} with .attr / [key], !r / !s, and a format
 * spec of [[fill]align][sign][0][width][.precision][type]. */
static void format_spec(jctx *c, const jnode *at, jbuf *out, jv v, const char *spec, size_t sn) {
    size_t i = 0;
    char fill = ' ', align = 0, sign = '-', type = 0;
    if (sn >= 2 && strchr("<>^=", spec[1])) fill = spec[0], align = spec[1], i = 2;
    else if (sn >= 1 && strchr("<>^=", spec[0])) align = spec[0], i = 1;
    if (i < sn && strchr("+- ", spec[i])) sign = spec[i++];
    if (i < sn && spec[i] == '0') {
        if (!align) fill = '0', align = '=';
        i++;
    }
    int width = 0, prec = -1;
    while (i < sn && spec[i] >= '0' && spec[i] <= '9' && width < 100000) width = width * 10 + spec[i++] - '0';
    if (i < sn && spec[i] == '.')
        for (prec = 0, i++; i < sn && spec[i] >= '0' && spec[i] <= '9' && prec < 1000;) prec = prec * 10 + spec[i++] - '0';
    if (i < sn) type = spec[i++];
    if (i != sn || (type && !strchr("sdfFeE%", type))) jfail_at(c, at, "format: unsupported format spec");
    char num[400];
    jv text;
    if (type == 's' || (!type && v.kind == JV_STR)) {
        jv s = jv_to_str(c, v);
        text = prec >= 0 ? substr(s.s.p, utf8_offset(s.s.p, s.s.n, (size_t)prec)) : s;
    } else if (!jv_is_number(v)) {
        jfail_at(c, at, "format: a number is needed for this spec, not '%s'", jv_type(v));
    } else if (type == 'd' || (!type && v.kind != JV_FLOAT && prec < 0)) {
        if (v.kind == JV_FLOAT) jfail_at(c, at, "format: 'd' needs an integer");
        snprintf(num, sizeof num, "%lld", (long long)(v.kind == JV_BOOL ? v.b : v.i));
        text = jv_cstr(num);
    } else if (!type && prec < 0) {
        text = jv_to_str(c, v);
    } else {
        double x = jv_num(v) * (type == '%' ? 100 : 1);
        snprintf(num, sizeof num, type == 'e' || type == 'E' ? "%.*e" : "%.*f", prec < 0 ? 6 : prec, x);
        if (type == '%') strcat(num, "%");
        text = jv_str(c, num, strlen(num));
    }
    bool neg = text.s.n && text.s.p[0] == '-' && jv_is_number(v);
    jbuf body = {0};
    if (jv_is_number(v) && !neg && sign != '-') jbuf_put(c, &body, &sign, 1);
    jbuf_put(c, &body, text.s.p, text.s.n);
    int len = (int)utf8_len(body.p, body.n), pad = width > len ? width - len : 0;
    if (!align) align = jv_is_number(v) ? '>' : '<';
    int left = align == '>' || align == '=' ? pad : align == '^' ? pad / 2 : 0;
    if (align == '=' && (neg || (jv_is_number(v) && sign != '-'))) jbuf_put(c, out, body.p, 1);
    for (int k = 0; k < left; k++) jbuf_put(c, out, &fill, 1);
    size_t skip = align == '=' && (neg || (jv_is_number(v) && sign != '-'));
    jbuf_put(c, out, body.p + skip, body.n - skip);
    for (int k = left; k < pad; k++) jbuf_put(c, out, &fill, 1);
}

static jv m_format(jctx *c, const jnode *at, jv self, jargs *a) {
    const char *s = self.s.p;
    size_t n = self.s.n, auto_index = 0;
    jbuf out = {0};
    for (size_t i = 0; i < n; i++) {
        if ((s[i] == '{' || s[i] == '}') && i + 1 < n && s[i + 1] == s[i]) {
            jbuf_put(c, &out, s + i++, 1);
            continue;
        }
        if (s[i] == '}') jfail_at(c, at, "Single '}' encountered in format string");
        if (s[i] != '{') {
            jbuf_put(c, &out, s + i, 1);
            continue;
        }
        size_t end = i + 1;
        while (end < n && s[end] != '}') end++;
        if (end >= n) jfail_at(c, at, "Single '{' encountered in format string");
        const char *f = s + i + 1;
        size_t fn = end - i - 1, name_n = 0;
        while (name_n < fn && !strchr(".[!:", f[name_n])) name_n++;
        jv v;
        if (name_n == 0 || (f[0] >= '0' && f[0] <= '9')) {
            size_t idx = name_n ? (size_t)strtoul(jstrdup(c, f, name_n), NULL, 10) : auto_index++;
            if (idx >= a->npos) jfail_at(c, at, "Replacement index out of range for positional args tuple");
            v = a->pos[idx];
        } else {
            const char *key = jstrdup(c, f, name_n);
            size_t k = 0;
            while (k < a->nkw && strcmp(a->kwn[k], key) != 0) k++;
            if (k == a->nkw) jfail_at(c, at, "format: no argument named '%s'", key);
            v = a->kwv[k];
        }
        size_t j = name_n;
        while (j < fn && (f[j] == '.' || f[j] == '[')) {
            size_t e = j + 1;
            while (e < fn && !strchr(f[j] == '.' ? ".[!:" : "]", f[e])) e++;
            jv key = jv_str(c, f + j + 1, e - j - 1);
            if (f[j] == '[' && e - j - 1 > 0 && key.s.p[0] >= '0' && key.s.p[0] <= '9') key = jv_int(strtoll(key.s.p, NULL, 10));
            v = f[j] == '.' ? jgetattr(c, at, v, key.s.p) : jgetitem(c, at, v, key);
            j = f[j] == '[' ? e + 1 : e;
        }
        if (j + 1 < fn && f[j] == '!') {
            jbuf r = {0};
            if (f[j + 1] == 'r') jv_repr_to(c, &r, v);
            else jv_str_to(c, &r, v);
            v = jv_strbuf(&r);
            j += 2;
        }
        if (j < fn && f[j] == ':') format_spec(c, at, &out, v, f + j + 1, fn - j - 1);
        else jv_str_to(c, &out, v);
        i = end;
    }
    return jv_strbuf(&out);
}

/* ---------------------------------------------------- list and dict methods */
static jv m_lindex(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("index", "value");
    for (size_t i = 0; i < self.l->n; i++)
        if (jv_eq(self.l->v[i], p[0])) return jv_int((int64_t)i);
    jfail_at(c, at, "%s is not in list", jv_cstr_of(c, p[0]));
}

static jv m_lcount(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("count", "value");
    int64_t k = 0;
    for (size_t i = 0; i < self.l->n; i++) k += jv_eq(self.l->v[i], p[0]);
    return jv_int(k);
}

static jv m_copy(jctx *c, const jnode *at, jv self, jargs *a) {
    NOARGS("copy");
    if (self.kind == JV_LIST) {
        jv out = jv_list(c, self.l->n);
        out.flags = self.flags;
        for (size_t i = 0; i < self.l->n; i++) jlist_push(c, out.l, self.l->v[i]);
        return out;
    }
    jv out = jv_dict(c, self.d->n);
    for (size_t i = 0; i < self.d->n; i++) jdict_set(c, out.d, self.d->k[i], self.d->v[i]);
    return out;
}

static jv m_get(jctx *c, const jnode *at, jv self, jargs *a) {
    BIND("get", "key", "default");
    jv *v = jdict_get(self.d, p[0]);
    return v ? *v : jgiven(p[1]) ? p[1] : jv_none();
}

/* keys(), values(), items(): which = 'k', 'v', 'i' */
static jv dict_view(jctx *c, jv self, int which) {
    jv out = jv_list(c, self.d->n);
    for (size_t i = 0; i < self.d->n; i++) {
        if (which != 'i') {
            jlist_push(c, out.l, which == 'k' ? self.d->k[i] : self.d->v[i]);
            continue;
        }
        jv pair = jv_list(c, 2);
        pair.flags = JV_TUPLE;
        jlist_push(c, pair.l, self.d->k[i]);
        jlist_push(c, pair.l, self.d->v[i]);
        jlist_push(c, out.l, pair);
    }
    return out;
}
static jv m_keys(jctx *c, const jnode *at, jv self, jargs *a) { NOARGS("keys"); return dict_view(c, self, 'k'); }
static jv m_values(jctx *c, const jnode *at, jv self, jargs *a) { NOARGS("values"); return dict_view(c, self, 'v'); }
static jv m_items(jctx *c, const jnode *at, jv self, jargs *a) { NOARGS("items"); return dict_view(c, self, 'i'); }

typedef struct named_method { const char *name; jbuiltin fn; } named_method;
static const named_method STR_METHODS[] = {
    {"strip", m_strip}, {"lstrip", m_lstrip}, {"rstrip", m_rstrip}, {"split", m_split}, {"rsplit", m_rsplit},
    {"splitlines", m_splitlines}, {"startswith", m_startswith}, {"endswith", m_endswith}, {"upper", m_upper},
    {"lower", m_lower}, {"title", m_title}, {"capitalize", m_capitalize}, {"replace", m_replace},
    {"format", m_format}, {"find", m_find}, {"rfind", m_rfind}, {"index", m_sindex}, {"count", m_scount},
    {"join", m_join}, {"isdigit", m_isdigit}, {"isalpha", m_isalpha}, {"isalnum", m_isalnum},
    {"isspace", m_isspace}, {"islower", m_islower}, {"isupper", m_isupper}, {"removeprefix", m_removeprefix},
    {"removesuffix", m_removesuffix}, {NULL, NULL}};
static const named_method LIST_METHODS[] = {{"index", m_lindex}, {"count", m_lcount}, {"copy", m_copy}, {NULL, NULL}};
static const named_method DICT_METHODS[] = {
    {"get", m_get}, {"keys", m_keys}, {"values", m_values}, {"items", m_items}, {"copy", m_copy}, {NULL, NULL}};
/* what ImmutableSandboxedEnvironment refuses (modifies_known_mutable) */
static const char *const LIST_MUTATORS[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear", "__setitem__", NULL};
static const char *const DICT_MUTATORS[] = {"update", "pop", "popitem", "setdefault", "clear", "__setitem__", NULL};

jv jmethod_get(jctx *c, const jnode *at, jv self, const char *name, bool *found) {
    const named_method *table = self.kind == JV_STR ? STR_METHODS : self.kind == JV_LIST ? LIST_METHODS
                              : self.kind == JV_DICT && !(self.flags & JV_NAMESPACE) ? DICT_METHODS : NULL;
    const char *const *mutators = self.kind == JV_LIST ? LIST_MUTATORS : self.kind == JV_DICT ? DICT_MUTATORS : NULL;
    *found = false;
    if (!table) return (jv){0};
    /* As Jinja's sandbox: an undefined that fails only when used (called) */
    for (int i = 0; mutators && mutators[i]; i++)
        if (!strcmp(mutators[i], name)) {
            jbuf msg = {0};
            jbuf_printf(c, &msg, "access to attribute '%s' of '%s' object is unsafe.", name, jv_type(self));
            *found = true;
            return jv_undef(c, msg.p, NULL, JU_HINT);
        }
    for (int i = 0; table[i].name; i++)
        if (!strcmp(table[i].name, name)) {
            jfunc *fn = jalloc(c, sizeof *fn);
            *fn = (jfunc){.type = JF_METHOD, .name = table[i].name, .fn = table[i].fn, .self = self};
            *found = true;
            return (jv){.kind = JV_FUNC, .fn = fn};
        }
    return (jv){0};
}
