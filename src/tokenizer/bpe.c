/* BPE model: merges table, per-word cache and the merge loop of
 * `tokenizers` (a priority queue of candidate pairs, lowest rank then
 * leftmost first, over a linked list of symbols: O(n log n) per word). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

/* Words longer than this are not cached (as `tokenizers`); the cache is
 * emptied when it holds this many words or ids. */
#define CACHE_MAX_WORD 256
#define CACHE_MAX_WORDS 65536
#define CACHE_MAX_IDS (1u << 20)

/* SentencePiece's meta space U+2581 */
#define META "\xE2\x96\x81"

/* ---------------------------------------------------------------- merges */
static size_t merge_slot(const tk_merges *t, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (t->nslots - 1);
}

static bool merges_get(const tk_merges *t, int32_t a, int32_t b, uint32_t *rank, int32_t *merged) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = merge_slot(t, key);; i = (i + 1) & (t->nslots - 1)) {
        if (t->keys[i] == key) {
            *rank = t->rank[i];
            *merged = t->merged[i];
            return true;
        }
        if (t->keys[i] == UINT64_MAX) return false;
    }
}

/* A later duplicate of a pair replaces the earlier one, as collecting the
 * merges into a HashMap does in `tokenizers`. */
static void merges_put(tk_merges *t, int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = merge_slot(t, key);
    while (t->keys[i] != UINT64_MAX && t->keys[i] != key) i = (i + 1) & (t->nslots - 1);
    if (t->keys[i] == UINT64_MAX) t->n++;
    t->keys[i] = key;
    t->rank[i] = rank;
    t->merged[i] = merged;
}

static afo_status merges_alloc(const tk_loader *L, tk_merges *t, size_t n) {
    t->nslots = 64;
    while (t->nslots < 2 * n) t->nslots *= 2;
    t->keys = malloc(t->nslots * sizeof *t->keys);
    t->rank = malloc(t->nslots * sizeof *t->rank);
    t->merged = malloc(t->nslots * sizeof *t->merged);
    if (!t->keys || !t->rank || !t->merged) return tk_oom(L);
    memset(t->keys, 0xFF, t->nslots * sizeof *t->keys);
    return AFO_OK;
}

/* One merges entry: "a b" (split at the first space) or ["a", "b"]. */
static afo_status merge_parts(const tk_loader *L, const cJSON *e, int i, const char **a, size_t *alen,
                              const char **b, size_t *blen) {
    char field[48];
    snprintf(field, sizeof field, "model.merges[%d]", i);
    if (cJSON_IsString(e)) {
        const char *s = e->valuestring, *sp = strchr(s, ' ');
        if (!sp) return tk_bad(L, field, "\"%.60s\" is not two tokens separated by a space", s);
        *a = s, *alen = (size_t)(sp - s), *b = sp + 1, *blen = strlen(sp + 1);
        return AFO_OK;
    }
    if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
        cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
        *a = cJSON_GetArrayItem(e, 0)->valuestring, *alen = strlen(*a);
        *b = cJSON_GetArrayItem(e, 1)->valuestring, *blen = strlen(*b);
        return AFO_OK;
    }
    return tk_bad(L, field, "expected \"a b\" or [\"a\", \"b\"]");
}

static afo_status load_merges(const tk_loader *L, const cJSON *arr, tk_model *m) {
    int n = cJSON_GetArraySize(arr);
    m->meta_split = !m->ignore_merges && !m->prefix && !m->suffix && tk_map_get(&m->vocab, META, 3) >= 0;
    AFO_TRY(merges_alloc(L, &m->merges, (size_t)n));
    tk_buf joined = {0};
    int i = 0;
    afo_status st = AFO_OK;
    for (const cJSON *e = arr->child; e && st == AFO_OK; e = e->next, i++) {
        const char *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0;
        if ((st = merge_parts(L, e, i, &a, &alen, &b, &blen)) != AFO_OK) break;
        /* The merged token drops b's continuing_subword_prefix bytes. */
        size_t cut = m->prefix_len < blen ? m->prefix_len : blen;
        joined.n = 0;
        if (tk_buf_add(&joined, a, alen) || tk_buf_add(&joined, b + cut, blen - cut)) {
            st = tk_oom(L);
            break;
        }
        int32_t ia = tk_map_get(&m->vocab, a, alen), ib = tk_map_get(&m->vocab, b, blen);
        int32_t im = tk_map_get(&m->vocab, joined.p, joined.n);
        char field[48];
        snprintf(field, sizeof field, "model.merges[%d]", i);
        if (ia < 0 || ib < 0 || im < 0)
            st = tk_bad(L, field, "token \"%.60s\" is not in the vocabulary",
                        ia < 0 ? a : ib < 0 ? b : joined.p);
        else
            merges_put(&m->merges, ia, ib, (uint32_t)i, im);
        if (blen >= 3 && memcmp(b, META, 3) == 0 && !(alen >= 3 && memcmp(a + alen - 3, META, 3) == 0))
            m->meta_split = false;
    }
    tk_buf_free(&joined);
    return st;
}

static afo_status opt_string(const tk_loader *L, const cJSON *j, const char *key, char **out, size_t *len) {
    const char *s;
    char field[64];
    snprintf(field, sizeof field, "model.%s", key);
    AFO_TRY(tk_json_str(L, j, field, key, false, &s));
    if (!s || !*s) return AFO_OK;
    if (!(*out = strdup(s))) return tk_oom(L);
    *len = strlen(s);
    return AFO_OK;
}

afo_status tk_bpe_load(const tk_loader *L, const cJSON *j, tk_model *m) {
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(j, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return afo_error(AFO_ERR_UNSUPPORTED, "%s: model.dropout: BPE dropout is not supported", L->path);
    AFO_TRY(opt_string(L, j, "continuing_subword_prefix", &m->prefix, &m->prefix_len));
    AFO_TRY(opt_string(L, j, "end_of_word_suffix", &m->suffix, &m->suffix_len));
    AFO_TRY(tk_json_bool(L, j, "model.fuse_unk", "fuse_unk", false, &m->fuse_unk));
    AFO_TRY(tk_json_bool(L, j, "model.byte_fallback", "byte_fallback", false, &m->byte_fallback));
    AFO_TRY(tk_json_bool(L, j, "model.ignore_merges", "ignore_merges", false, &m->ignore_merges));
    const char *unk;
    AFO_TRY(tk_json_str(L, j, "model.unk_token", "unk_token", false, &unk));
    if (unk && (m->unk_id = tk_map_get(&m->vocab, unk, strlen(unk))) < 0)
        return tk_bad(L, "model.unk_token", "\"%.60s\" is not in the vocabulary", unk);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_ids[b] = tk_map_get(&m->vocab, name, 6);
    }
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(j, "merges");
    if (!cJSON_IsArray(merges)) return tk_bad(L, "model.merges", "missing or not an array");
    if (pthread_mutex_init(&m->cache_lock, NULL)) return afo_error(AFO_ERR_INTERNAL, "%s: mutex init failed", L->path);
    return load_merges(L, merges, m);
}

/* ---------------------------------------------------------------- cache */
static const int32_t *cache_get(const tk_model *m, const char *s, size_t n, size_t *count) {
    int32_t i = tk_map_get(&m->cache, s, n);
    if (i < 0) return NULL;
    *count = m->cache_e[i].n;
    static const int32_t none[1];
    return m->cache_ids.p ? m->cache_ids.p + m->cache_e[i].off : none; /* only empty words cached so far */
}

/* Best effort: a full cache starts over, and an allocation failure only
 * loses the entry. */
static void cache_put(tk_model *m, const char *s, size_t n, const int32_t *ids, size_t count) {
    if (m->cache.n >= CACHE_MAX_WORDS || m->cache_ids.n + count > CACHE_MAX_IDS) {
        tk_map_clear(&m->cache);
        m->cache_ids.n = 0;
        m->cache_n = 0;
    }
    if (m->cache_n == m->cache_cap) {
        size_t cap = m->cache_cap ? 2 * m->cache_cap : 1024;
        void *p = realloc(m->cache_e, cap * sizeof *m->cache_e);
        if (!p) return;
        m->cache_e = p;
        m->cache_cap = cap;
    }
    uint32_t off = (uint32_t)m->cache_ids.n;
    if (tk_ids_add(&m->cache_ids, ids, count)) return;
    if (tk_map_put(&m->cache, s, n, (int32_t)m->cache_n, false) < 0) {
        m->cache_ids.n = off;
        return;
    }
    m->cache_e[m->cache_n++] = (struct tk_cache_entry){off, (uint32_t)count};
}

/* ---------------------------------------------------------------- merge loop */
static bool heap_less(const struct tk_heap_item *a, const struct tk_heap_item *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(tk_ctx *c, size_t *n, struct tk_heap_item it) {
    if (*n == c->heap_cap) {
        size_t cap = c->heap_cap ? 2 * c->heap_cap : 256;
        void *p = realloc(c->heap, cap * sizeof *c->heap);
        if (!p) return -1;
        c->heap = p;
        c->heap_cap = cap;
    }
    size_t i = (*n)++;
    while (i > 0 && heap_less(&it, &c->heap[(i - 1) / 2])) {
        c->heap[i] = c->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    c->heap[i] = it;
    return 0;
}

static struct tk_heap_item heap_pop(tk_ctx *c, size_t *n) {
    struct tk_heap_item top = c->heap[0], last = c->heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n) break;
        if (l + 1 < *n && heap_less(&c->heap[l + 1], &c->heap[l])) l++;
        if (!heap_less(&c->heap[l], &last)) break;
        c->heap[i] = c->heap[l];
        i = l;
    }
    if (*n) c->heap[i] = last;
    return top;
}

/* Queues the pair starting at symbol `pos` if it has a merge. */
static int queue_pair(const tk_model *m, tk_ctx *c, size_t *nheap, int32_t pos) {
    struct tk_sym *s = c->sym;
    if (pos < 0 || s[pos].next < 0) return 0;
    uint32_t rank;
    int32_t merged;
    if (!merges_get(&m->merges, s[pos].id, s[s[pos].next].id, &rank, &merged)) return 0;
    return heap_push(c, nheap, (struct tk_heap_item){rank, (uint32_t)pos, merged});
}

static int merge_all(const tk_model *m, tk_ctx *c, size_t nsym) {
    struct tk_sym *s = c->sym;
    size_t nheap = 0;
    for (size_t i = 0; i + 1 < nsym; i++)
        if (queue_pair(m, c, &nheap, (int32_t)i)) return -1;
    while (nheap) {
        struct tk_heap_item top = heap_pop(c, &nheap);
        struct tk_sym *a = &s[top.pos];
        if (a->len == 0 || a->next < 0) continue;
        struct tk_sym *b = &s[a->next];
        /* A stale entry: one of the two symbols has changed since it was queued. */
        uint32_t rank;
        int32_t merged;
        if (!merges_get(&m->merges, a->id, b->id, &rank, &merged) || merged != top.merged) continue;
        a->id = merged;
        a->len += b->len;
        a->next = b->next;
        b->len = 0;
        if (a->next >= 0) s[a->next].prev = (int32_t)top.pos;
        if (queue_pair(m, c, &nheap, a->prev) || queue_pair(m, c, &nheap, (int32_t)top.pos)) return -1;
    }
    return 0;
}

static int sym_add(tk_ctx *c, size_t *n, int32_t id, uint32_t len) {
    if (*n == c->sym_cap) {
        size_t cap = c->sym_cap ? 2 * c->sym_cap : 256;
        void *p = realloc(c->sym, cap * sizeof *c->sym);
        if (!p) return -1;
        c->sym = p;
        c->sym_cap = cap;
    }
    c->sym[*n] = (struct tk_sym){id, (int32_t)*n - 1, (int32_t)*n + 1, len};
    ++*n;
    return 0;
}

/* The initial symbols: one per character (with the subword prefix/suffix
 * where configured), else its <0xXX> byte tokens, else unk (fused runs). */
static afo_status initial_symbols(const tk_model *m, tk_ctx *c, const char *s, size_t n, size_t *nsym) {
    int32_t unk_len = 0; /* pending unk symbol's byte length, 0: none */
    *nsym = 0;
    for (size_t i = 0; i < n;) {
        int cl;
        tk_utf8_decode(s + i, n - i, &cl);
        const char *key = s + i;
        size_t klen = (size_t)cl;
        if ((i > 0 && m->prefix_len) || (i + (size_t)cl == n && m->suffix_len)) {
            c->tmp.n = 0;
            if ((i > 0 && tk_buf_add(&c->tmp, m->prefix, m->prefix_len)) || tk_buf_add(&c->tmp, key, klen) ||
                (i + (size_t)cl == n && tk_buf_add(&c->tmp, m->suffix, m->suffix_len)))
                goto oom;
            key = c->tmp.p, klen = c->tmp.n;
        }
        int32_t id = tk_map_get(&m->vocab, key, klen);
        bool bytes_ok = m->byte_fallback;
        for (size_t k = 0; id < 0 && bytes_ok && k < klen; k++) bytes_ok = m->byte_ids[(uint8_t)key[k]] >= 0;
        /* As `tokenizers`: byte tokens do not flush a pending unk. */
        if (id >= 0 || (!bytes_ok && !m->fuse_unk)) {
            if (unk_len && sym_add(c, nsym, m->unk_id, (uint32_t)unk_len)) goto oom;
            unk_len = 0;
        }
        if (id >= 0) {
            if (sym_add(c, nsym, id, (uint32_t)cl)) goto oom;
        } else if (bytes_ok) {
            for (size_t k = 0; k < klen; k++)
                if (sym_add(c, nsym, m->byte_ids[(uint8_t)key[k]], 1)) goto oom;
        } else if (m->unk_id >= 0) {
            unk_len += cl;
        }
        i += (size_t)cl;
    }
    if (unk_len && sym_add(c, nsym, m->unk_id, (uint32_t)unk_len)) goto oom;
    if (*nsym) c->sym[*nsym - 1].next = -1;
    return AFO_OK;
oom:
    return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory in BPE");
}

static afo_status bpe_word(tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out) {
    bool cacheable = c->use_cache && n <= CACHE_MAX_WORD;
    if (cacheable) {
        size_t count;
        const int32_t *hit = cache_get(m, s, n, &count);
        if (hit) return tk_ids_add(out, hit, count) ? afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory") : AFO_OK;
    }
    size_t nsym, first = out->n;
    AFO_TRY(initial_symbols(m, c, s, n, &nsym));
    if (merge_all(m, c, nsym)) return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory in BPE");
    for (int32_t i = nsym ? 0 : -1; i >= 0; i = c->sym[i].next)
        if (tk_ids_push(out, c->sym[i].id)) return afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    if (cacheable) cache_put(m, s, n, out->p ? out->p + first : NULL, out->n - first); /* NULL: nothing yet */
    return AFO_OK;
}

/* Without a pre-tokenizer (Llama-2 style) the whole text is one word. When
 * no merge joins a token ending in another character to one starting with
 * the meta space (checked at load), no merge crosses the start of a run of
 * meta spaces, so the word splits there into independent, cacheable words
 * with the same result. */
afo_status tk_bpe_tokenize(tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out) {
    if (n == 0) return AFO_OK;
    if (m->ignore_merges) {
        int32_t id = tk_map_get(&m->vocab, s, n);
        if (id >= 0) return tk_ids_push(out, id) ? afo_error(AFO_ERR_OUT_OF_MEMORY, "tokenizer: out of memory") : AFO_OK;
    }
    if (!m->meta_split) return bpe_word(m, c, s, n, out);
    size_t start = 0;
    for (size_t i = 3; i + 3 <= n; i++)
        if (memcmp(s + i, META, 3) == 0 && memcmp(s + i - 3, META, 3) != 0) {
            AFO_TRY(bpe_word(m, c, s + start, i - start, out));
            start = i;
        }
    return bpe_word(m, c, s + start, n - start, out);
}
