/* Containers, UTF-8 and character classes shared by the tokenizer stages. */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"

/* ---------------------------------------------------------------- buffers */
static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int tk_buf_reserve(tk_buf *b, size_t extra) { return grow((void **)&b->p, &b->cap, b->n + extra + 1, 1); }

int tk_buf_add(tk_buf *b, const void *data, size_t n) {
    if (tk_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0'; /* keeps every buffer a C string for free */
    return 0;
}

void tk_buf_free(tk_buf *b) {
    free(b->p);
    *b = (tk_buf){0};
}

int tk_ids_push(tk_ids *v, int32_t x) {
    if (grow((void **)&v->p, &v->cap, v->n + 1, sizeof *v->p)) return -1;
    v->p[v->n++] = x;
    return 0;
}

int tk_ids_add(tk_ids *v, const int32_t *x, size_t n) {
    if (grow((void **)&v->p, &v->cap, v->n + n, sizeof *v->p)) return -1;
    if (n) memcpy(v->p + v->n, x, n * sizeof *x);
    v->n += n;
    return 0;
}

int tk_spans_push(tk_spans *s, size_t start, size_t end, bool match) {
    if (grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) return -1;
    s->v[s->n++] = (tk_span){start, end, match};
    return 0;
}

void tk_pieces_reset(tk_pieces *p) {
    p->text.n = 0;
    p->n = 0;
}

void tk_pieces_free(tk_pieces *p) {
    tk_buf_free(&p->text);
    free(p->v);
    *p = (tk_pieces){0};
}

int tk_pieces_range(tk_pieces *p, size_t off, size_t len, bool at_start) {
    if (grow((void **)&p->v, &p->cap, p->n + 1, sizeof *p->v)) return -1;
    p->v[p->n++] = (tk_piece){off, len, at_start};
    return 0;
}

int tk_pieces_add(tk_pieces *p, const char *s, size_t n, bool at_start) {
    size_t off = p->text.n;
    if (tk_buf_add(&p->text, s, n)) return -1;
    return tk_pieces_range(p, off, n, at_start);
}

/* ---------------------------------------------------------------- hash map */
uint32_t tk_hash(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    uint64_t w = 0;
    memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return (uint32_t)(h >> 32);
}

static long map_find(const tk_map *m, const char *key, size_t n, uint32_t h, size_t *slot) {
    if (!m->nslots) return -1;
    size_t mask = m->nslots - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t s = m->slots[i];
        if (!s) {
            *slot = i;
            return -1;
        }
        const struct tk_map_entry *e = &m->e[s - 1];
        if (e->hash == h && e->len == n && memcmp(m->keys.p + e->off, key, n) == 0) return (long)s - 1;
    }
}

int32_t tk_map_get(const tk_map *m, const char *key, size_t n) {
    size_t slot;
    long i = map_find(m, key, n, tk_hash(key, n), &slot);
    return i < 0 ? -1 : m->e[i].value;
}

static int map_rehash(tk_map *m, size_t nslots) {
    uint32_t *s = calloc(nslots, sizeof *s);
    if (!s) return -1;
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->e[i].hash & (nslots - 1);
        while (s[j]) j = (j + 1) & (nslots - 1);
        s[j] = (uint32_t)i + 1;
    }
    free(m->slots);
    m->slots = s;
    m->nslots = nslots;
    return 0;
}

long tk_map_put(tk_map *m, const char *key, size_t n, int32_t value, bool overwrite) {
    if ((m->n + 1) * 2 > m->nslots && map_rehash(m, m->nslots ? m->nslots * 2 : 64)) return -1;
    uint32_t h = tk_hash(key, n);
    size_t slot;
    long i = map_find(m, key, n, h, &slot);
    if (i >= 0) {
        if (overwrite) m->e[i].value = value;
        return i;
    }
    if (grow((void **)&m->e, &m->cap, m->n + 1, sizeof *m->e)) return -1;
    uint32_t off = (uint32_t)m->keys.n;
    if (tk_buf_add(&m->keys, key, n) || tk_buf_add(&m->keys, "", 1)) return -1; /* NUL-terminated keys */
    m->e[m->n] = (struct tk_map_entry){off, (uint32_t)n, h, value};
    m->slots[slot] = (uint32_t)++m->n;
    return (long)m->n - 1;
}

void tk_map_clear(tk_map *m) {
    if (m->slots) memset(m->slots, 0, m->nslots * sizeof *m->slots);
    m->n = 0;
    m->keys.n = 0;
}

void tk_map_free(tk_map *m) {
    free(m->slots);
    free(m->e);
    tk_buf_free(&m->keys);
    *m = (tk_map){0};
}

/* ---------------------------------------------------------------- UTF-8 */
int32_t tk_utf8_decode(const char *s, size_t n, int *len) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (l <= 0) {
        *len = 1;
        return 0xFFFD;
    }
    *len = (int)l;
    return cp;
}

int tk_utf8_encode(int32_t cp, char out[4]) { return (int)utf8proc_encode_char(cp, (utf8proc_uint8_t *)out); }

/* Length of the valid sequence at s, or 0 when it is invalid; *bad is then
 * the length of the maximal invalid subpart (what one U+FFFD replaces). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n || s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF)) {
            *bad = i;
            return 0;
        }
    }
    return need;
}

size_t tk_utf8_valid_prefix(const char *s, size_t n) {
    size_t i = 0, bad;
    while (i < n) {
        /* runs of ASCII (most of a tokenizer.json, most text) eight bytes at a time */
        uint64_t w;
        while (i + 8 <= n && (memcpy(&w, s + i, 8), !(w & 0x8080808080808080ull))) i += 8;
        if (i == n) break;
        size_t l = utf8_seq((const unsigned char *)s + i, n - i, &bad);
        if (!l) break;
        i += l;
    }
    return i;
}

int tk_utf8_lossy(tk_buf *out, const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t v = tk_utf8_valid_prefix(s + i, n - i);
        if (tk_buf_add(out, s + i, v)) return -1;
        i += v;
        if (i < n) {
            size_t bad;
            utf8_seq((const unsigned char *)s + i, n - i, &bad);
            if (tk_buf_add(out, "\xEF\xBF\xBD", 3)) return -1;
            i += bad;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- classes */
bool tk_is_whitespace(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

bool tk_is_alnum_word(int32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true; /* Join_Control */
    utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ND) || k == UTF8PROC_CATEGORY_NL ||
           k == UTF8PROC_CATEGORY_PC;
}

bool tk_is_punctuation(int32_t c) {
    if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

bool tk_is_numeric(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/* ---------------------------------------------------------------- byte level */
/* GPT-2 maps the printable bytes to themselves and the others, in order, to
 * U+0100 onwards, so that every byte is a visible character. */
static bool byte_is_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); }

static tk_bytelevel g_bytelevel;
static int16_t g_byte_of[324]; /* code point -> byte + 1 */
static pthread_once_t g_bytelevel_once = PTHREAD_ONCE_INIT;

static void bytelevel_init(void) {
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int32_t cp = byte_is_printable(b) ? b : 256 + extra++;
        g_bytelevel.len[b] = (uint8_t)tk_utf8_encode(cp, g_bytelevel.utf8[b]);
        g_byte_of[cp] = (int16_t)(b + 1);
    }
}

const tk_bytelevel *tk_bytelevel_table(void) {
    pthread_once(&g_bytelevel_once, bytelevel_init);
    return &g_bytelevel;
}

int tk_bytelevel_byte(int32_t cp) {
    pthread_once(&g_bytelevel_once, bytelevel_init);
    return cp >= 0 && cp < 324 ? g_byte_of[cp] - 1 : -1;
}

/* ---------------------------------------------------------------- patterns */
void tk_pattern_free(tk_pattern *p) {
    free(p->lit);
    pcre2_code_free(p->re);
    *p = (tk_pattern){0};
}

int tk_pattern_find(const tk_pattern *p, tk_ctx *c, const char *s, size_t n, size_t from, size_t *ms,
                    size_t *me) {
    if (!p->re) {
        if (!p->lit_len || from >= n) return 0;
        const char *hit = memmem(s + from, n - from, p->lit, p->lit_len);
        if (!hit) return 0;
        *ms = (size_t)(hit - s);
        *me = *ms + p->lit_len;
        return 1;
    }
    if (!c->md) {
        c->md = pcre2_match_data_create(16, NULL);
        if (!c->md) return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for regex match data"), -1;
    }
    /* Input was checked to be UTF-8 once at the entry; pieces stay valid. */
    int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, c->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(rc, msg, sizeof msg);
        afo_error(AFO_ERR_INTERNAL, "tokenizer: regex match failed: %s", (const char *)msg);
        return -1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

void tk_ctx_free(tk_ctx *c) {
    pcre2_match_data_free(c->md);
    free(c->spans.v);
    tk_pieces_free(&c->a);
    tk_pieces_free(&c->b);
    tk_buf_free(&c->tmp);
    tk_buf_free(&c->tmp2);
    free(c->sym);
    free(c->heap);
}
