/* Internals of the tokenizer: the pipeline stages and the containers they
 * share. The pipeline is the one of Hugging Face `tokenizers`:
 *
 *   added tokens (raw) -> normalizer -> added tokens (normalized)
 *     -> pre-tokenizer -> model -> post-processor        (encode)
 *   ids -> token strings -> decoder chain -> text        (decode)
 *
 * Text travels as "piece lists": one byte buffer plus (offset, length)
 * ranges, so a stage never allocates per piece. */
#ifndef AFO_TOKENIZER_INTERNAL_H
#define AFO_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "afo/tokenizer.h"
#include "core/internal.h"

/* ---------------------------------------------------------------- containers */

/* Growable byte buffer. Functions returning int give 0, or -1 when out of
 * memory (the caller turns that into an afo_status). */
typedef struct tk_buf {
    char *p;
    size_t n, cap;
} tk_buf;
int tk_buf_reserve(tk_buf *b, size_t extra);
int tk_buf_add(tk_buf *b, const void *data, size_t n);
void tk_buf_free(tk_buf *b);

/* Growable int32 array. */
typedef struct tk_ids {
    int32_t *p;
    size_t n, cap;
} tk_ids;
int tk_ids_push(tk_ids *v, int32_t x);
int tk_ids_add(tk_ids *v, const int32_t *x, size_t n);

/* String -> int32 hash map (open addressing); keys are copied into an arena. */
typedef struct tk_map {
    uint32_t *slots; /* entry index + 1; 0 = empty */
    size_t nslots;   /* power of two */
    struct tk_map_entry {
        uint32_t off, len, hash;
        int32_t value;
    } *e;
    size_t n, cap;
    tk_buf keys;
} tk_map;
uint32_t tk_hash(const char *s, size_t n);
/* Value for the key, or -1. */
int32_t tk_map_get(const tk_map *m, const char *key, size_t n);
/* Inserts or (overwrite) replaces; returns the entry index or -1 on OOM. */
long tk_map_put(tk_map *m, const char *key, size_t n, int32_t value, bool overwrite);
void tk_map_clear(tk_map *m);
void tk_map_free(tk_map *m);
static inline const char *tk_map_key(const tk_map *m, size_t i) { return m->keys.p + m->e[i].off; }

/* A piece list: ranges into one text buffer, each with whether it begins at
 * offset 0 of the original input (Metaspace's "first" scheme needs that). */
typedef struct tk_piece {
    size_t off, len;
    bool at_start;
} tk_piece;
typedef struct tk_pieces {
    tk_buf text;
    tk_piece *v;
    size_t n, cap;
} tk_pieces;
void tk_pieces_reset(tk_pieces *p);
void tk_pieces_free(tk_pieces *p);
/* Appends bytes as a new piece. */
int tk_pieces_add(tk_pieces *p, const char *s, size_t n, bool at_start);
/* Appends a piece over text already at [off, off+len) of p->text. */
int tk_pieces_range(tk_pieces *p, size_t off, size_t len, bool at_start);

/* Piece i's bytes; "" for empty pieces of a text never allocated. */
static inline const char *tk_piece_text(const tk_pieces *p, size_t i) {
    return p->text.p ? p->text.p + p->v[i].off : "";
}

/* ---------------------------------------------------------------- UTF-8 */
/* Decodes the character at s (n > 0 bytes, valid UTF-8); sets *len. */
int32_t tk_utf8_decode(const char *s, size_t n, int *len);
int tk_utf8_encode(int32_t cp, char out[4]);
/* Length of the longest valid UTF-8 prefix of s. */
size_t tk_utf8_valid_prefix(const char *s, size_t n);
/* Appends s with invalid sequences replaced by U+FFFD, as Rust's
 * String::from_utf8_lossy does (one per maximal invalid subpart). */
int tk_utf8_lossy(tk_buf *out, const char *s, size_t n);
/* Character classes with the meaning Rust gives them. */
bool tk_is_whitespace(int32_t cp);  /* char::is_whitespace (White_Space) */
bool tk_is_alnum_word(int32_t cp);  /* regex \w */
bool tk_is_punctuation(int32_t cp); /* is_ascii_punctuation || P* */
bool tk_is_numeric(int32_t cp);     /* char::is_numeric (N*) */

/* The 256 byte-level characters of GPT-2 (bytes_to_unicode), UTF-8 encoded. */
typedef struct tk_bytelevel {
    char utf8[256][3];
    uint8_t len[256];
} tk_bytelevel;
const tk_bytelevel *tk_bytelevel_table(void);
/* The byte a byte-level character stands for, or -1. */
int tk_bytelevel_byte(int32_t cp);

/* ---------------------------------------------------------------- patterns */
/* A literal string or a PCRE2 regex (UTF + UCP), the two forms of a
 * tokenizer.json "pattern". */
typedef struct tk_pattern {
    char *lit;
    size_t lit_len;
    pcre2_code *re;
} tk_pattern;
/* Per-call matching scratch. */
typedef struct tk_ctx tk_ctx;
/* Finds the first match at or after `from`: 1 and [*ms, *me), or 0. A
 * negative return is a regex engine failure (error set). */
int tk_pattern_find(const tk_pattern *p, tk_ctx *c, const char *s, size_t n, size_t from, size_t *ms,
                    size_t *me);
void tk_pattern_free(tk_pattern *p);

/* Spans covering a string, each a match or not (Pattern::find_matches). */
typedef struct tk_span {
    size_t start, end;
    bool match;
} tk_span;
typedef struct tk_spans {
    tk_span *v;
    size_t n, cap;
} tk_spans;
int tk_spans_push(tk_spans *s, size_t start, size_t end, bool match);

/* SplitDelimiterBehavior */
typedef enum tk_behavior {
    TK_REMOVED,
    TK_ISOLATED,
    TK_MERGED_WITH_PREVIOUS,
    TK_MERGED_WITH_NEXT,
    TK_CONTIGUOUS
} tk_behavior;

/* ---------------------------------------------------------------- stages */
typedef struct tk_precompiled tk_precompiled;

typedef enum tk_norm_kind {
    NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWERCASE, NORM_STRIP, NORM_STRIP_ACCENTS,
    NORM_PREPEND, NORM_REPLACE, NORM_BERT, NORM_PRECOMPILED, NORM_SEQUENCE
} tk_norm_kind;
typedef struct tk_normalizer {
    tk_norm_kind kind;
    bool left, right;                              /* Strip */
    bool clean_text, chinese, strip_accents, lower; /* BertNormalizer */
    char *content;                                 /* Prepend / Replace text */
    size_t content_len;
    tk_pattern pattern; /* Replace */
    tk_precompiled *pc;
    struct tk_normalizer **items; /* Sequence */
    int nitems;
} tk_normalizer;

typedef enum tk_pretok_kind {
    PT_BYTELEVEL, PT_SPLIT, PT_METASPACE, PT_WHITESPACE, PT_WHITESPACE_SPLIT, PT_PUNCTUATION, PT_DIGITS,
    PT_BERT, PT_SEQUENCE
} tk_pretok_kind;
typedef enum tk_prepend { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } tk_prepend;
typedef struct tk_pretok {
    tk_pretok_kind kind;
    bool add_prefix_space, use_regex; /* ByteLevel */
    tk_pattern pattern;               /* Split */
    tk_behavior behavior;             /* Split, Punctuation */
    bool invert;
    char rep[4]; /* Metaspace replacement, UTF-8 */
    int rep_len;
    tk_prepend prepend;
    bool split;
    bool individual_digits;
    struct tk_pretok **items;
    int nitems;
} tk_pretok;

typedef enum tk_dec_kind {
    DEC_BYTELEVEL, DEC_METASPACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_REPLACE, DEC_WORDPIECE,
    DEC_SEQUENCE
} tk_dec_kind;
typedef struct tk_decoder {
    tk_dec_kind kind;
    char rep[4]; /* Metaspace */
    int rep_len;
    tk_prepend prepend;
    int32_t strip_char; /* Strip */
    int start, stop;
    tk_pattern pattern; /* Replace */
    char *content;      /* Replace content / WordPiece prefix */
    size_t content_len;
    bool cleanup; /* WordPiece */
    struct tk_decoder **items;
    int nitems;
} tk_decoder;

/* ---------------------------------------------------------------- models */
typedef enum tk_model_kind { MODEL_BPE, MODEL_WORDPIECE, MODEL_UNIGRAM } tk_model_kind;

/* (left id, right id) -> (rank, merged id) */
typedef struct tk_merges {
    uint64_t *keys; /* UINT64_MAX = empty */
    uint32_t *rank;
    int32_t *merged;
    size_t nslots, n;
} tk_merges;

typedef struct tk_model {
    tk_model_kind kind;
    tk_map vocab;      /* token -> id */
    uint32_t *id_entry; /* id -> vocab entry index (UINT32_MAX: none) */
    int32_t nids;      /* one past the largest id */
    int32_t unk_id;    /* -1: none */
    /* BPE */
    tk_merges merges;
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix */
    size_t prefix_len, suffix_len;
    bool byte_fallback, fuse_unk, ignore_merges;
    bool meta_split; /* words may be cut before a run of U+2581 (see bpe.c) */
    int32_t byte_ids[256]; /* <0xXX> tokens, -1 when absent */
    /* WordPiece */
    int max_chars;
    /* Unigram */
    double *scores;
    double min_score;
    tk_map prefixes; /* every prefix of every piece -> id, or -2 for a proper prefix only */
    /* Word cache (BPE): word -> ids, guarded by cache_lock. */
    pthread_mutex_t cache_lock;
    tk_map cache;
    tk_ids cache_ids;
    struct tk_cache_entry {
        uint32_t off, n;
    } *cache_e;
    size_t cache_n, cache_cap;
} tk_model;

/* ---------------------------------------------------------------- added tokens */
typedef struct tk_added {
    char *content;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* Leftmost-longest matcher over a set of strings: a map of every prefix
 * (value: index into afo_tokenizer.added, or -2 for a proper prefix only). */
typedef struct tk_matcher {
    tk_map prefixes;
    uint8_t first[32]; /* bitmap of first bytes */
    size_t maxlen;
    int count;
} tk_matcher;

/* ---------------------------------------------------------------- tokenizer */
struct afo_tokenizer {
    tk_model model;
    tk_normalizer *normalizer;
    tk_pretok *pretok;
    tk_decoder *decoder;
    tk_ids post_pre, post_post; /* single-sequence special tokens around the ids */
    tk_added *added;
    int nadded;
    tk_map added_by_content; /* content -> index in added */
    int32_t *added_by_id;    /* id -> index in added, or -1 (nids entries) */
    tk_matcher raw_match, norm_match;
    int32_t nids;
    int32_t special[4]; /* afo_special_token -> id */
};

/* Scratch of one encode call. */
struct tk_ctx {
    pcre2_match_data *md;
    tk_spans spans;
    tk_pieces a, b;
    tk_buf tmp, tmp2;
    /* BPE merge scratch */
    struct tk_sym {
        int32_t id;
        int32_t prev, next;
        uint32_t len;
    } *sym;
    size_t sym_cap;
    struct tk_heap_item {
        uint32_t rank, pos;
        int32_t merged;
    } *heap;
    size_t heap_cap;
    bool use_cache;
};
void tk_ctx_free(tk_ctx *c);

/* Load helpers (load.c and the stage loaders). */
typedef struct cJSON cJSON;
typedef struct tk_loader {
    const char *path;
} tk_loader;
/* AFO_ERR_FORMAT "PATH: FIELD: message". */
afo_status tk_bad(const tk_loader *L, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ids index dense tables: an id space (the largest id + 1) at most twice
 * the token count plus 65536, or a file with one huge id would allocate
 * gigabytes (real vocabularies are dense, with a few gaps); else an error
 * naming the field. */
static inline afo_status tk_check_id_space(const tk_loader *L, const char *field, int32_t nids, size_t tokens) {
    if ((int64_t)nids <= 2 * (int64_t)tokens + 65536) return AFO_OK;
    return tk_bad(L, field, "ids reach %d for %zu tokens (too sparse: ids index tables)", nids - 1, tokens);
}
afo_status tk_oom(const tk_loader *L);
/* Typed field access; absent or JSON null gives the default. */
afo_status tk_json_bool(const tk_loader *L, const cJSON *obj, const char *field, const char *key, bool dflt,
                        bool *out);
afo_status tk_json_str(const tk_loader *L, const cJSON *obj, const char *field, const char *key, bool required,
                       const char **out);
/* Whether v is a token id, a number in [0, INT32_MAX) (truncated into *id):
 * casting a larger one would be undefined behaviour. */
bool tk_json_id(const cJSON *v, int32_t *id);
afo_status tk_pattern_load(const tk_loader *L, const cJSON *obj, const char *field, tk_pattern *out);
afo_status tk_pattern_compile_regex(const tk_loader *L, const char *field, const char *re, tk_pattern *out);

afo_status tk_normalizer_load(const tk_loader *L, const cJSON *j, const char *field, tk_normalizer **out);
void tk_normalizer_free(tk_normalizer *n);
/* Appends the normalized form of s to out. */
afo_status tk_normalize(const tk_normalizer *n, tk_ctx *c, const char *s, size_t len, tk_buf *out);

afo_status tk_precompiled_load(const tk_loader *L, const char *field, const char *b64, tk_precompiled **out);
void tk_precompiled_free(tk_precompiled *p);
afo_status tk_precompiled_apply(const tk_precompiled *p, const char *s, size_t len, tk_buf *out);

afo_status tk_pretok_load(const tk_loader *L, const cJSON *j, const char *field, tk_pretok **out);
void tk_pretok_free(tk_pretok *p);
/* Splits every piece of c->a in place (c->a holds the result). */
afo_status tk_pretokenize(const tk_pretok *p, tk_ctx *c);

afo_status tk_decoder_load(const tk_loader *L, const cJSON *j, const char *field, tk_decoder **out);
void tk_decoder_free(tk_decoder *d);
/* Runs the decoder chain over the token strings in c->a (replaced). */
afo_status tk_decode_chain(const tk_decoder *d, tk_ctx *c);

afo_status tk_model_load(const tk_loader *L, const cJSON *j, tk_model *m);
void tk_model_free(tk_model *m);
/* Appends the ids of one pre-token. */
afo_status tk_model_tokenize(tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out);
/* Token string of a model id (not NUL-terminated), or NULL. */
const char *tk_model_token(const tk_model *m, int32_t id, size_t *len);
afo_status tk_bpe_load(const tk_loader *L, const cJSON *j, tk_model *m);
afo_status tk_bpe_tokenize(tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out);
afo_status tk_wordpiece_tokenize(const tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out);
afo_status tk_unigram_load(const tk_loader *L, const cJSON *j, tk_model *m);
afo_status tk_unigram_tokenize(const tk_model *m, tk_ctx *c, const char *s, size_t n, tk_ids *out);

afo_status tk_added_load(const tk_loader *L, const cJSON *arr, afo_tokenizer *t);
void tk_added_free(afo_tokenizer *t);
/* Finds the added tokens of matcher m in s as `tokenizers` does (leftmost
 * longest, then single_word/lstrip/rstrip): spans covering s, and ids[i] the
 * token id of span i or -1 for text between tokens. */
afo_status tk_added_split(const afo_tokenizer *t, const tk_matcher *m, const char *s, size_t n, tk_spans *spans,
                          tk_ids *ids);

#endif
