/* The Precompiled normalizer: SentencePiece's precompiled_charsmap.
 *
 * The base64 blob is [u32 LE: trie size in bytes][trie: u32 LE units of a
 * darts-clone double array][replacement strings, each NUL-terminated]. A
 * trie key is a UTF-8 sequence; its value is the offset of its replacement.
 * As `tokenizers` applies it: for each extended grapheme cluster shorter
 * than 6 bytes, the shortest trie prefix of the cluster (if any) replaces
 * the whole cluster; otherwise each character is looked up on its own. */
#include <stdlib.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"

struct tk_precompiled {
    uint32_t *units;
    size_t nunits;
    char *strings;
    size_t nstrings;
};

void tk_precompiled_free(tk_precompiled *p) {
    if (!p) return;
    free(p->units);
    free(p->strings);
    free(p);
}

static int b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with padding; -1 when malformed. */
static long b64_decode(const char *s, uint8_t *out) {
    size_t n = strlen(s), o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            while (i < n && s[i] == '=') i++;
            if (i != n) return -1;
            break;
        }
        int v = b64_value(s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}

afo_status tk_precompiled_load(const tk_loader *L, const char *field, const char *b64, tk_precompiled **out) {
    uint8_t *raw = malloc(strlen(b64) / 4 * 3 + 4);
    tk_precompiled *p = calloc(1, sizeof *p);
    if (!raw || !p) {
        free(raw);
        free(p);
        return tk_oom(L);
    }
    long n = b64_decode(b64, raw);
    afo_status st = AFO_OK;
    uint32_t trie_bytes = 0;
    if (n >= 4) trie_bytes = (uint32_t)raw[0] | (uint32_t)raw[1] << 8 | (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 24;
    if (n < 4) st = tk_bad(L, field, "not base64 of a charsmap");
    else if (trie_bytes / 4 == 0 || (size_t)trie_bytes > (size_t)n - 4)
        st = tk_bad(L, field, "trie size %u does not fit the %ld-byte charsmap", trie_bytes, n);
    if (st == AFO_OK) {
        p->nunits = trie_bytes / 4;
        p->nstrings = (size_t)n - 4 - p->nunits * 4;
        p->units = malloc(p->nunits * sizeof *p->units);
        p->strings = malloc(p->nstrings + 1);
        if (!p->units || !p->strings) st = tk_oom(L);
    }
    if (st == AFO_OK) {
        const uint8_t *u = raw + 4;
        for (size_t i = 0; i < p->nunits; i++, u += 4)
            p->units[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
        memcpy(p->strings, u, p->nstrings);
        p->strings[p->nstrings] = '\0';
    }
    free(raw);
    if (st != AFO_OK) {
        tk_precompiled_free(p);
        return st;
    }
    *out = p;
    return AFO_OK;
}

/* darts-clone unit fields */
static bool unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t unit_value(uint32_t u) { return u & 0x7FFFFFFFu; }
static uint32_t unit_label(uint32_t u) { return u & 0x800000FFu; }
static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

/* Replacement of the shortest key that prefixes s, or NULL. */
static const char *shortest_match(const tk_precompiled *p, const char *s, size_t n) {
    size_t pos = unit_offset(p->units[0]);
    for (size_t i = 0; i < n && s[i]; i++) {
        uint8_t c = (uint8_t)s[i];
        pos ^= c;
        if (pos >= p->nunits || unit_label(p->units[pos]) != c) return NULL;
        uint32_t u = p->units[pos];
        pos ^= unit_offset(u);
        if (unit_has_leaf(u)) {
            if (pos >= p->nunits) return NULL;
            uint32_t v = unit_value(p->units[pos]);
            return v < p->nstrings ? p->strings + v : NULL;
        }
    }
    return NULL;
}

static afo_status add(tk_buf *out, const char *s, size_t n) {
    return tk_buf_add(out, s, n) ? afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory normalizing") : AFO_OK;
}

static afo_status grapheme(const tk_precompiled *p, const char *g, size_t n, tk_buf *out) {
    const char *r;
    if (n < 6 && (r = shortest_match(p, g, n))) return add(out, r, strlen(r));
    for (size_t i = 0; i < n;) {
        int l;
        tk_utf8_decode(g + i, n - i, &l);
        r = shortest_match(p, g + i, (size_t)l);
        AFO_TRY(r ? add(out, r, strlen(r)) : add(out, g + i, (size_t)l));
        i += (size_t)l;
    }
    return AFO_OK;
}

/* The replacements are the charsmap's bytes, which a damaged file may make
 * invalid UTF-8 (or point into the middle of a character): the output is
 * checked, as the stages after it (the pre-tokenizer's regexes) take it
 * for valid. */
afo_status tk_precompiled_apply(const tk_precompiled *p, const char *s, size_t n, tk_buf *out) {
    const size_t from = out->n;
    size_t start = 0;
    utf8proc_int32_t state = 0, prev = -1;
    for (size_t i = 0; i < n;) {
        int l;
        int32_t cp = tk_utf8_decode(s + i, n - i, &l);
        if (prev >= 0 && utf8proc_grapheme_break_stateful(prev, cp, &state)) {
            AFO_TRY(grapheme(p, s + start, i - start, out));
            start = i;
        }
        prev = cp;
        i += (size_t)l;
    }
    if (n > start) AFO_TRY(grapheme(p, s + start, n - start, out));
    if (out->n > from && tk_utf8_valid_prefix(out->p + from, out->n - from) != out->n - from)
        return afo_error(AFO_ERR_FORMAT, "tokenizer: the normalizer's precompiled_charsmap gives invalid UTF-8");
    return AFO_OK;
}
