/* Tokenizer tests: every expected.jsonl line of the shared fixtures (ids
 * with and without special tokens, decoded text) and llama.cpp's vectors,
 * round trips, the streaming detokenizer, and malformed tokenizer.json. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <afo/afo.h>

#include "core/internal.h"
#include "support/test.h"
#include "tokenizer/tokenizer.h"

static double g_scale = 1.0;

static char *slurp(const char *path, size_t *n) {
    char *text = NULL;
    afo_read_file(path, 0, false, &text, n);
    return text;
}

static afo_tokenizer *load_fixture(const char *name) {
    char rel[256], buf[1024];
    snprintf(rel, sizeof rel, "fixtures/tokenizers/%s", name);
    const char *dir = test_shared_path(rel, buf, sizeof buf);
    if (!dir) return NULL;
    afo_tokenizer *t = afo_tokenizer_load(dir);
    CHECK_MSG(t != NULL, "%s: %s", name, afo_last_error());
    return t;
}

static bool ids_equal(const int32_t *a, size_t na, const cJSON *arr) {
    if (!cJSON_IsArray(arr) || (size_t)cJSON_GetArraySize(arr) != na) return false;
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++)
        if (!cJSON_IsNumber(e) || (int32_t)e->valuedouble != a[i]) return false;
    return true;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s:", what);
    for (size_t i = 0; i < n && i < 64; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 64 ? " ..." : "");
}

/* The eleven tokenizers with expected.jsonl; the three largest files are
 * skipped under a reduced AFO_TEST_SCALE (emulators). */
static const struct {
    const char *name;
    bool big;
} TOKENIZERS[] = {
    {"gpt2", false}, {"llama2", false}, {"mistral-7b-v0.1", false}, {"phi2", false},
    {"phi3-mini", false}, {"roberta-base", false}, {"t5-small", false}, {"bert-base-uncased", false},
    {"qwen2.5", true}, {"qwen3", true}, {"llama3", true},
};
#define NTOK (int)(sizeof TOKENIZERS / sizeof *TOKENIZERS)

static bool skip_big(int k) {
    if (TOKENIZERS[k].big && g_scale < 1.0) {
        fprintf(stderr, "  %-18s skipped at AFO_TEST_SCALE < 1 (large file)\n", TOKENIZERS[k].name);
        return true;
    }
    return false;
}

static void check_expected(const char *name, afo_tokenizer *t) {
    char rel[256], buf[1024];
    snprintf(rel, sizeof rel, "fixtures/tokenizers/%s/expected.jsonl", name);
    if (!test_shared_path(rel, buf, sizeof buf)) return;
    char *text = slurp(buf, NULL);
    CHECK(text != NULL);
    if (!text) return;
    int lines = 0, ok_ids = 0, ok_special = 0, ok_decoded = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *tx = cJSON_GetObjectItem(j, "text");
        if (!cJSON_IsString(tx)) {
            CHECK_MSG(false, "%s: bad expected.jsonl line", name);
            cJSON_Delete(j);
            continue;
        }
        lines++;
        const char *s = tx->valuestring;
        int32_t *ids = NULL, *ids2 = NULL;
        size_t n = 0, n2 = 0;
        char *dec = NULL;
        afo_status st = afo_tokenizer_encode(t, s, strlen(s), 0, &ids, &n);
        CHECK_MSG(st == AFO_OK, "%s: %s", name, afo_last_error());
        if (st == AFO_OK && ids_equal(ids, n, cJSON_GetObjectItem(j, "ids"))) {
            ok_ids++;
        } else if (st == AFO_OK) {
            fprintf(stderr, "  %s: ids differ for \"%s\"\n", name, s);
            print_ids("got", ids, n);
        }
        st = afo_tokenizer_encode(t, s, strlen(s), 1, &ids2, &n2);
        if (st == AFO_OK && ids_equal(ids2, n2, cJSON_GetObjectItem(j, "ids_with_special"))) ok_special++;
        else if (st == AFO_OK) fprintf(stderr, "  %s: ids_with_special differ for \"%s\"\n", name, s);
        /* decoded is the reference decode of the reference ids */
        const cJSON *want = cJSON_GetObjectItem(j, "ids");
        size_t nw = (size_t)cJSON_GetArraySize(want), i = 0;
        int32_t *w = malloc((nw + 1) * sizeof *w);
        for (const cJSON *e = want->child; e; e = e->next) w[i++] = (int32_t)e->valuedouble;
        st = afo_tokenizer_decode(t, w, nw, 0, &dec);
        const char *wd = cJSON_GetObjectItem(j, "decoded")->valuestring;
        if (st == AFO_OK && strcmp(dec, wd) == 0) ok_decoded++;
        else fprintf(stderr, "  %s: decode of \"%s\" gave \"%s\", want \"%s\"\n", name, s, dec ? dec : afo_last_error(), wd);
        free(w);
        free(dec);
        free(ids);
        free(ids2);
        cJSON_Delete(j);
    }
    CHECK_MSG(lines > 0 && ok_ids == lines && ok_special == lines && ok_decoded == lines, "%s", name);
    fprintf(stderr, "  %-18s expected.jsonl: ids %d/%d, with special %d/%d, decoded %d/%d\n", name, ok_ids, lines,
            ok_special, lines, ok_decoded, lines);
    free(text);
}

static void test_expected(void) {
    for (int k = 0; k < NTOK; k++) {
        if (skip_big(k)) continue;
        afo_tokenizer *t = load_fixture(TOKENIZERS[k].name);
        if (!t) continue;
        check_expected(TOKENIZERS[k].name, t);
        afo_tokenizer_free(t);
    }
}

/* llama.cpp's vectors: strings split by \n__ggml_vocab_test__\n, one line of
 * ids per string in .out. */
static void check_vectors(const char *set, const char *name) {
    char rel[256], inp[1024], outp[1024];
    snprintf(rel, sizeof rel, "fixtures/tokenizer-vectors/llama.cpp/ggml-vocab-%s.gguf.inp", set);
    if (!test_shared_path(rel, inp, sizeof inp)) return;
    snprintf(rel, sizeof rel, "fixtures/tokenizer-vectors/llama.cpp/ggml-vocab-%s.gguf.out", set);
    if (!test_shared_path(rel, outp, sizeof outp)) return;
    afo_tokenizer *t = load_fixture(name);
    if (!t) return;
    char *in = slurp(inp, NULL), *out = slurp(outp, NULL);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *s = in, *o = out;
    int total = 0, ok = 0;
    while (s && o) {
        char *next = strstr(s, sep), *onext = strchr(o, '\n');
        if (next) *next = '\0';
        if (onext) *onext = '\0';
        int32_t want[512];
        size_t nw = 0;
        for (char *p = o, *end; nw < 512; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            want[nw++] = (int32_t)v;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        total++;
        if (afo_tokenizer_encode(t, s, strlen(s), 0, &ids, &n) == AFO_OK && n == nw &&
            (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0))
            ok++;
        else
            fprintf(stderr, "  %s/%s: differs for \"%s\"\n", set, name, s), print_ids("got", ids, n), print_ids("want", want, nw);
        free(ids);
        s = next ? next + strlen(sep) : NULL;
        o = onext ? onext + 1 : NULL;
    }
    CHECK_MSG(total > 0 && ok == total, "%s/%s", set, name);
    fprintf(stderr, "  %-18s llama.cpp %s: %d/%d\n", name, set, ok, total);
    free(in);
    free(out);
    afo_tokenizer_free(t);
}

static void test_llamacpp_vectors(void) {
    static const char *const MAP[][2] = {
        {"gpt-2", "gpt2"}, {"llama-spm", "llama2"}, {"phi-3", "phi3-mini"}, {"qwen2", "qwen2.5"},
        {"qwen2", "qwen3"}, {"llama-bpe", "llama3"}, {"bert-bge", "bert-base-uncased"},
    };
    for (size_t i = 0; i < sizeof MAP / sizeof *MAP; i++) {
        int k = 0;
        while (strcmp(TOKENIZERS[k].name, MAP[i][1]) != 0) k++;
        if (!skip_big(k)) check_vectors(MAP[i][0], MAP[i][1]);
    }
}

/* decode(encode(x)) == x where the pipeline is lossless: byte-level BPE,
 * and SentencePiece BPE with byte fallback on text not starting with a
 * space (its decoder strips the prepended one). */
static void test_round_trip(void) {
    static const char *const TEXTS[] = {
        "Hello world", "emoji \xF0\x9F\xAB\xA0 and \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 family",
        "tabs\tand\nnewlines\r\n  spaces", "\xED\x95\x98\xEB\x8A\x98 \xE6\x9C\xBA\xE5\x99\xA8 \xD0\x9F\xD1\x80\xD0\xB8",
        "the end <|endoftext|>", "a\xCC\x81 e\xCC\x81 combining", "\xE1\x9E\x80\xE1\x9E\xB6 khmer",
    };
    static const char *const NAMES[] = {"gpt2", "llama2", "phi3-mini", "mistral-7b-v0.1", "llama3"};
    char corpus_path[1024];
    size_t corpus_n = 0;
    char *corpus = test_shared_path("fixtures/corpus/war-and-peace.txt", corpus_path, sizeof corpus_path)
                       ? slurp(corpus_path, &corpus_n)
                       : NULL;
    size_t chunk = (size_t)(200000 * g_scale);
    if (corpus_n > chunk) corpus_n = chunk;
    for (size_t k = 0; k < sizeof NAMES / sizeof *NAMES; k++) {
        if (strcmp(NAMES[k], "llama3") == 0 && g_scale < 1.0) continue;
        afo_tokenizer *t = load_fixture(NAMES[k]);
        if (!t) continue;
        int ok = 0, total = 0;
        for (size_t i = 0; i <= sizeof TEXTS / sizeof *TEXTS; i++) {
            const char *s = i < sizeof TEXTS / sizeof *TEXTS ? TEXTS[i] : corpus;
            size_t n = i < sizeof TEXTS / sizeof *TEXTS ? strlen(s) : corpus_n;
            if (!s) continue;
            int32_t *ids = NULL;
            size_t nids = 0;
            char *back = NULL;
            total++;
            if (afo_tokenizer_encode(t, s, n, 0, &ids, &nids) == AFO_OK &&
                afo_tokenizer_decode(t, ids, nids, 0, &back) == AFO_OK && strlen(back) == n && memcmp(back, s, n) == 0)
                ok++;
            else
                fprintf(stderr, "  %s: round trip fails for \"%.60s\"\n", NAMES[k], s);
            free(ids);
            free(back);
        }
        CHECK_MSG(ok == total, "%s round trip %d/%d", NAMES[k], ok, total);
        afo_tokenizer_free(t);
    }
    free(corpus);
}

static bool valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 ? 4 : 0;
        if (!n) return false;
        for (int i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80) return false;
        p += n;
    }
    return true;
}

/* Streams ids through the detokenizer: every piece valid UTF-8, and the
 * pieces together equal the full decode. */
static void stream_check(afo_tokenizer *t, const char *name, const int32_t *ids, size_t n, int skip) {
    char *full = NULL;
    CHECK(afo_tokenizer_decode(t, ids, n, skip, &full) == AFO_OK);
    afo_detokenizer *d = afo_detokenizer_new(t, skip);
    CHECK(d != NULL);
    if (!full || !d) {
        free(full);
        afo_detokenizer_free(d);
        return;
    }
    size_t cap = strlen(full) + 64, len = 0;
    char *acc = calloc(1, cap);
    bool pieces_ok = true;
    for (size_t i = 0; i <= n; i++) {
        char *piece = NULL;
        afo_status st = i < n ? afo_detokenizer_push(d, ids[i], &piece) : afo_detokenizer_flush(d, &piece);
        CHECK_MSG(st == AFO_OK, "%s: %s", name, afo_last_error());
        if (!piece) continue;
        pieces_ok &= valid_utf8(piece);
        size_t pl = strlen(piece);
        if (len + pl < cap) memcpy(acc + len, piece, pl);
        len += pl;
        free(piece);
    }
    CHECK_MSG(pieces_ok, "%s: a streamed piece is not valid UTF-8", name);
    CHECK_MSG(len < cap && strcmp(acc, full) == 0, "%s: streamed \"%.80s\" != decoded \"%.80s\"", name, acc, full);
    free(acc);
    free(full);
    afo_detokenizer_free(d);
}

static void test_streaming(void) {
    /* Multi-byte text that byte-level BPE and byte fallback split inside
     * characters: emoji (4 bytes, ZWJ sequences), CJK, Hangul, Khmer. */
    static const char *const TEXT =
        "Caf\xC3\xA9 \xF0\x9F\xA6\x99 \xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F "
        "\xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8" "apple\xE5\xB7\xA5\xE4\xBD\x9C \xED\x95\x98\xEB\x8A\x98 "
        "\xE1\x9E\x80\xE1\x9E\xB6\xE1\x9E\x93\xE1\x9F\x8B  two  spaces\n\tend \xF0\x9F\xAB\xA0";
    static const char *const NAMES[] = {"llama2", "gpt2", "t5-small", "bert-base-uncased", "phi3-mini", "llama3"};
    for (size_t k = 0; k < sizeof NAMES / sizeof *NAMES; k++) {
        if (strcmp(NAMES[k], "llama3") == 0 && g_scale < 1.0) continue;
        afo_tokenizer *t = load_fixture(NAMES[k]);
        if (!t) continue;
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(afo_tokenizer_encode(t, TEXT, strlen(TEXT), 1, &ids, &n) == AFO_OK);
        stream_check(t, NAMES[k], ids, n, 0);
        stream_check(t, NAMES[k], ids, n, 1);
        free(ids);
        afo_tokenizer_free(t);
    }
    /* Byte tokens of an unfinished character, then the rest: the piece
     * waits for the character, and a flush in the middle gives U+FFFD. */
    afo_tokenizer *t = load_fixture("llama2");
    if (!t) return;
    int32_t euro[3] = {afo_tokenizer_token_to_id(t, "<0xE2>"), afo_tokenizer_token_to_id(t, "<0x82>"),
                       afo_tokenizer_token_to_id(t, "<0xAC>")};
    CHECK(euro[0] >= 0 && euro[1] >= 0 && euro[2] >= 0);
    /* bos/eos from tokenizer_config.json, unk from the model */
    CHECK(afo_tokenizer_special_id(t, AFO_TOKEN_BOS) == 1 && afo_tokenizer_special_id(t, AFO_TOKEN_EOS) == 2 &&
          afo_tokenizer_special_id(t, AFO_TOKEN_UNK) == 0);
    stream_check(t, "llama2 bytes", euro, 3, 0);
    afo_detokenizer *d = afo_detokenizer_new(t, 0);
    char *p1 = NULL, *p2 = NULL, *p3 = NULL;
    CHECK(afo_detokenizer_push(d, euro[0], &p1) == AFO_OK && p1 && strcmp(p1, "") == 0);
    CHECK(afo_detokenizer_flush(d, &p2) == AFO_OK && p2 && strcmp(p2, "\xEF\xBF\xBD") == 0);
    CHECK(afo_detokenizer_push(d, -5, &p3) != AFO_OK && p3 == NULL);
    free(p1), free(p2);
    afo_detokenizer_free(d);
    afo_tokenizer_free(t);
}

/* Nothing to decode: no ids at all, and a stream flushed before any push
 * (its id array not yet made: offsets into a NULL array had been taken,
 * undefined behaviour that clang's UBSan reports; found by fuzzing). */
static void empty_with(afo_tokenizer *t, const char *name) {
    char *text = NULL, *piece = NULL, *again = NULL;
    CHECK_MSG(afo_tokenizer_decode(t, NULL, 0, 0, &text) == AFO_OK && text && strcmp(text, "") == 0, "%s", name);
    afo_detokenizer *d = afo_detokenizer_new(t, 1);
    CHECK_MSG(d && afo_detokenizer_flush(d, &piece) == AFO_OK && piece && strcmp(piece, "") == 0, "%s", name);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_MSG(afo_tokenizer_encode(t, "", 0, 1, &ids, &n) == AFO_OK && afo_tokenizer_decode(t, ids, n, 1, &again) == AFO_OK &&
                  again && strcmp(again, "") == 0,
              "%s: '' encodes and decodes (skipping special tokens) to '%s'", name, again ? again : afo_last_error());
    free(text), free(piece), free(again), free(ids);
    afo_detokenizer_free(d);
}

static void test_empty(void) {
    afo_tokenizer *t = afo_tokenizer_load("models/tiny-classics");
    CHECK_MSG(t != NULL, "demo tokenizer: %s", afo_last_error());
    if (t) empty_with(t, "demo");
    afo_tokenizer_free(t);
    if ((t = load_fixture("llama2"))) empty_with(t, "llama2"); /* decoders: byte fallback, fuse, strip */
    afo_tokenizer_free(t);
}

/* ------------------------------------------------------------- malformed */
static char g_dir[64];

/* Writes `json` as tokenizer.json in the scratch directory (path: its
 * name) and loads it. */
static afo_tokenizer *load_json(const char *json, size_t len, char (*path)[128]) {
    snprintf(*path, sizeof *path, "%s/tokenizer.json", g_dir);
    FILE *f = fopen(*path, "wb");
    CHECK(f != NULL);
    if (!f) return NULL;
    fwrite(json, 1, len, f);
    fclose(f);
    return afo_tokenizer_load(g_dir);
}

/* The load of `json` must fail with `status` and an error naming `field`. */
static void bad_file(const char *json, size_t len, afo_status status, const char *field) {
    char path[128];
    afo_tokenizer *t = load_json(json, len, &path);
    CHECK_MSG(t == NULL, "loaded a bad file (%s)", field);
    afo_tokenizer_free(t);
    CHECK_MSG(afo_last_status() == status && strstr(afo_last_error(), path) && strstr(afo_last_error(), field),
              "want status %d naming %s, got %d: %s", status, field, afo_last_status(), afo_last_error());
}

#define BPE_OK "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}"

static void test_malformed(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/afo-tok-XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL);
    const char *cases[][2] = {
        {"{\"model\": {\"type\": \"BPE\",", "invalid JSON"},
        {"{\"model\": {\"type\": \"WordLevelX\", \"vocab\": {}}}", "model.type"},
        {"{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "model.vocab"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"ab\"]}}", "model.merges[0]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", 3]]}}", "model.merges[0]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a z\"]}}", "model.merges[0]"},
        {BPE_OK ", \"normalizer\": {\"type\": \"Frobnicate\"}}", "normalizer"},
        {BPE_OK ", \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"Nope\"}]}}",
         "normalizer.normalizers[1]"},
        {BPE_OK ", \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Shred\"}]}}",
         "pre_tokenizer.pretokenizers[0]"},
        {BPE_OK ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}",
         "pre_tokenizer"},
        {BPE_OK ", \"decoder\": {\"type\": \"CTC\"}}", "decoder"},
        {BPE_OK ", \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}, "
                "{\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {}}}", "post_processor"},
        {BPE_OK ", \"added_tokens\": [{\"content\": \"<s>\"}]}", "added_tokens[0]"},
        /* an id past int32's range (casting it would be undefined behaviour) */
        {BPE_OK ", \"post_processor\": {\"type\": \"BertProcessing\", \"cls\": [\"a\", 0], \"sep\": [\"a\", 1e10]}}",
         "post_processor"},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", \"x\"]]}}", "model.vocab[0]"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"continuing_subword_prefix\": \"##\"}}", "model.unk_token"},
        {"[1, 2, 3]", "top level"},
        /* one huge id: the id tables would take gigabytes (found by the
         * tokenizer.json fuzzer, an out-of-memory) */
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 522222222}, \"merges\": [\"a b\"]}}",
         "model.vocab"},
        {BPE_OK ", \"added_tokens\": [{\"id\": 2000000000, \"content\": \"<s>\", \"special\": true}]}", "added_tokens"},
        /* bytes that are not UTF-8 in a string (a normalizer's replacement
         * here): the regexes after it had read past the text (found by
         * the tokenizer.json fuzzer) */
        {BPE_OK ", \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xff\xfe\"}, "
                "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}", "not valid UTF-8 at byte"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        bad_file(cases[i][0], strlen(cases[i][0]), AFO_ERR_FORMAT, cases[i][1]);
    /* Words that tokenize to nothing (no unk_token: unknown characters go),
     * cached as such before any id was cached: the second encode reads the
     * cache (clang's UBSan had flagged an offset into its NULL id store;
     * found by the tokenizer.json fuzzer). */
    char path[128];
    afo_tokenizer *bpe = load_json(BPE_OK "}", strlen(BPE_OK "}"), &path);
    CHECK_MSG(bpe != NULL, "minimal BPE: %s", afo_last_error());
    for (int round = 0; round < 2 && bpe; round++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(afo_tokenizer_encode(bpe, "xyz", 3, 0, &ids, &n) == AFO_OK && n == 0);
        free(ids);
        CHECK(afo_tokenizer_encode(bpe, "ab", 2, 0, &ids, &n) == AFO_OK && n == 1 && ids[0] == 2);
        free(ids);
    }
    afo_tokenizer_free(bpe);
    /* Replacements in a row, each widening every space 33 times: a
     * sentence would become hundreds of megabytes; the sequence stops it
     * with an error (found by the tokenizer.json fuzzer as a hang). */
    const char *wide = "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": "
                       "\"                                 \"}";
    char widening[1024];
    int wlen = snprintf(widening, sizeof widening,
                        BPE_OK ", \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [%s, %s, %s, %s, %s]}}", wide,
                        wide, wide, wide, wide);
    CHECK(wlen > 0 && (size_t)wlen < sizeof widening);
    bpe = load_json(widening, (size_t)wlen, &path);
    CHECK_MSG(bpe != NULL, "widening sequence: %s", afo_last_error());
    if (bpe) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_MSG(afo_tokenizer_encode(bpe, "a b a b", 7, 0, &ids, &n) == AFO_ERR_INVALID_ARGUMENT && !ids &&
                      strstr(afo_last_error(), "grew"),
                  "a widening sequence: %s", afo_last_error());
    }
    afo_tokenizer_free(bpe);
    /* A Unigram piece of 20000 bytes: its prefixes alone would take 200 MB
     * (a 90 KB piece had asked for 4 GB; found by the tokenizer.json
     * fuzzer). */
    enum { LONG_PIECE = 20000 };
    char *unigram = malloc(LONG_PIECE + 128);
    CHECK(unigram != NULL);
    if (unigram) {
        int head = snprintf(unigram, 128, "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"");
        memset(unigram + head, 'a', LONG_PIECE);
        int tail = snprintf(unigram + head + LONG_PIECE, (size_t)(128 - head), "\", -1.0]]}}");
        bad_file(unigram, (size_t)(head + LONG_PIECE + tail), AFO_ERR_FORMAT, "model.vocab[0]");
        free(unigram);
    }
    /* A real file cut short. */
    char buf[1024];
    size_t n;
    const char *real = test_shared_path("fixtures/tokenizers/gpt2/tokenizer.json", buf, sizeof buf);
    char *text = real ? slurp(real, &n) : NULL;
    if (text) bad_file(text, n / 2, AFO_ERR_FORMAT, "truncated");
    free(text);
    /* Missing file, and a directory without tokenizer.json. */
    CHECK(afo_tokenizer_load("/nonexistent/tokenizer.json") == NULL && afo_last_status() == AFO_ERR_IO);
    remove(path); /* the scratch tokenizer.json load_json wrote */
    CHECK(afo_tokenizer_load(g_dir) == NULL && afo_last_status() == AFO_ERR_IO && strstr(afo_last_error(), "tokenizer.json"));
    rmdir(g_dir);

    /* Out-of-range ids and invalid UTF-8 are refused at the call. */
    afo_tokenizer *t = load_fixture("gpt2");
    if (!t) return;
    int32_t ids[3] = {15496, 50257 + 1000, 995};
    char *s = NULL;
    CHECK(afo_tokenizer_decode(t, ids, 3, 0, &s) == AFO_ERR_INVALID_ARGUMENT && s == NULL &&
          strstr(afo_last_error(), "position 1"));
    ids[1] = -1;
    CHECK(afo_tokenizer_decode(t, ids, 3, 0, &s) == AFO_ERR_INVALID_ARGUMENT && s == NULL);
    int32_t *out = NULL;
    size_t nout = 7;
    CHECK(afo_tokenizer_encode(t, "ab\xFF", 3, 0, &out, &nout) == AFO_ERR_INVALID_ARGUMENT && out == NULL && nout == 0);
    /* a bad byte at every offset of an ASCII run (the check reads ASCII
     * eight bytes at a time) is found; a good 2-byte character passes */
    char run[40];
    for (size_t at = 0; at + 1 < sizeof run; at++) {
        memset(run, 'x', sizeof run);
        run[at] = (char)0xC3, run[at + 1] = (char)0xA9; /* é */
        CHECK_MSG(afo_tokenizer_encode(t, run, sizeof run, 0, &out, &nout) == AFO_OK, "é at %zu", at);
        free(out), out = NULL;
        run[at + 1] = 'x'; /* a lead byte without its continuation */
        CHECK_MSG(afo_tokenizer_encode(t, run, sizeof run, 0, &out, &nout) == AFO_ERR_INVALID_ARGUMENT && !out,
                  "a bad byte at %zu", at);
    }
    CHECK(afo_tokenizer_token_to_id(t, "Hello") == 15496);
    CHECK(strcmp(afo_tokenizer_id_to_token(t, 15496), "Hello") == 0);
    CHECK(afo_tokenizer_id_to_token(t, 50257) == NULL && afo_tokenizer_id_to_token(t, -1) == NULL);
    CHECK(afo_tokenizer_vocab_size(t) == 50257);
    afo_tokenizer_free(t);
}

/* ------------------------------------------------ stages, in isolation */
/* The cases below are the behaviours `tokenizers` documents and tests for
 * each stage; pieces are joined with '|' for comparison. */
static const tk_loader STAGE = {"(inline)"};

static void pretok_case(const char *json, const char *text, const char *want) {
    cJSON *j = cJSON_Parse(json);
    tk_pretok *p = NULL;
    CHECK_MSG(j && tk_pretok_load(&STAGE, j, "pre_tokenizer", &p) == AFO_OK, "%s: %s", json, afo_last_error());
    cJSON_Delete(j);
    if (!p) return;
    tk_ctx c = {0};
    tk_pieces_add(&c.a, text, strlen(text), true);
    CHECK(tk_pretokenize(p, &c) == AFO_OK);
    tk_buf got = {0};
    for (size_t i = 0; i < c.a.n; i++) {
        if (i) tk_buf_add(&got, "|", 1);
        tk_buf_add(&got, c.a.text.p + c.a.v[i].off, c.a.v[i].len);
    }
    CHECK_MSG(got.p && strcmp(got.p, want) == 0, "%s on \"%s\": got \"%s\", want \"%s\"", json, text, got.p, want);
    tk_buf_free(&got);
    tk_ctx_free(&c);
    tk_pretok_free(p);
}

static void normalizer_case(const char *json, const char *text, const char *want) {
    cJSON *j = cJSON_Parse(json);
    tk_normalizer *nz = NULL;
    CHECK_MSG(j && tk_normalizer_load(&STAGE, j, "normalizer", &nz) == AFO_OK, "%s: %s", json, afo_last_error());
    cJSON_Delete(j);
    if (!nz) return;
    tk_ctx c = {0};
    tk_buf out = {0};
    CHECK(tk_normalize(nz, &c, text, strlen(text), &out) == AFO_OK && tk_buf_add(&out, "", 0) == 0);
    CHECK_MSG(strcmp(out.p, want) == 0, "%s on \"%s\": got \"%s\", want \"%s\"", json, text, out.p, want);
    tk_buf_free(&out);
    tk_ctx_free(&c);
    tk_normalizer_free(nz);
}

/* tokens separated by '|' through a decoder; the result joined as decode does */
static void decoder_case(const char *json, const char *tokens, const char *want) {
    cJSON *j = cJSON_Parse(json);
    tk_decoder *d = NULL;
    CHECK_MSG(j && tk_decoder_load(&STAGE, j, "decoder", &d) == AFO_OK, "%s: %s", json, afo_last_error());
    cJSON_Delete(j);
    if (!d) return;
    tk_ctx c = {0};
    for (const char *t = tokens, *bar;; t = bar + 1) {
        bar = strchr(t, '|');
        tk_pieces_add(&c.a, t, bar ? (size_t)(bar - t) : strlen(t), false);
        if (!bar) break;
    }
    CHECK(tk_decode_chain(d, &c) == AFO_OK);
    tk_buf out = {0};
    for (size_t i = 0; i < c.a.n; i++) tk_buf_add(&out, c.a.text.p + c.a.v[i].off, c.a.v[i].len);
    tk_buf_add(&out, "", 0);
    CHECK_MSG(strcmp(out.p, want) == 0, "%s on \"%s\": got \"%s\", want \"%s\"", json, tokens, out.p, want);
    tk_buf_free(&out);
    tk_ctx_free(&c);
    tk_decoder_free(d);
}

#define SPLIT(b) "{\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, \"behavior\": \"" b "\", \"invert\": false}"
#define META "\xE2\x96\x81"

static void test_stages(void) {
    pretok_case(SPLIT("Removed"), "How-are-you?", "How|are|you?");
    pretok_case(SPLIT("Isolated"), "How-are-you?", "How|-|are|-|you?");
    pretok_case(SPLIT("MergedWithPrevious"), "How-are-you?", "How-|are-|you?");
    pretok_case(SPLIT("MergedWithNext"), "How-are-you?", "How|-are|-you?");
    pretok_case(SPLIT("Contiguous"), "How--are-", "How|--|are|-");
    pretok_case("{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"}, \"behavior\": \"Removed\", \"invert\": true}",
                "a  b c", "  | ");
    pretok_case("{\"type\": \"Whitespace\"}", "How are you doing?", "How|are|you|doing|?");
    pretok_case("{\"type\": \"WhitespaceSplit\"}", "Hey man!\t x", "Hey|man!|x");
    pretok_case("{\"type\": \"Punctuation\"}", "Hey friend!     How are you?!?", "Hey friend|!|     How are you|?|!|?");
    pretok_case("{\"type\": \"Digits\", \"individual_digits\": true}", "Hey 123 friend!", "Hey |1|2|3| friend!");
    pretok_case("{\"type\": \"Digits\", \"individual_digits\": false}", "Hey 123 friend!", "Hey |123| friend!");
    pretok_case("{\"type\": \"BertPreTokenizer\"}", "Hey friend!     How are you?!?", "Hey|friend|!|How|are|you|?|!|?");
    pretok_case("{\"type\": \"Metaspace\", \"replacement\": \"" META "\", \"prepend_scheme\": \"always\", \"split\": true}",
                "Hey   friend!", META "Hey|" META "|" META "|" META "friend!");
    pretok_case("{\"type\": \"Metaspace\", \"replacement\": \"" META "\", \"prepend_scheme\": \"never\", \"split\": false}",
                "Hey friend!", "Hey" META "friend!");
    /* "first" means starting at offset 0 of the text: after WhitespaceSplit
     * drops a leading space, no piece does. */
    static const char FIRST[] = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"WhitespaceSplit\"}, "
                                "{\"type\": \"Metaspace\", \"replacement\": \"" META "\", \"prepend_scheme\": \"first\"}]}";
    pretok_case(FIRST, "Hallo Welt", META "Hallo|Welt");
    pretok_case(FIRST, " Hallo Welt", "Hallo|Welt");
    pretok_case("{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true}", "Hello my friend, how's\n",
                "\xC4\xA0Hello|\xC4\xA0my|\xC4\xA0" "friend|,|\xC4\xA0how|'s|\xC4\x8A");

    normalizer_case("{\"type\": \"Lowercase\"}", "H\xC3\x89LLO \xC4\xB0", "h\xC3\xA9llo i\xCC\x87");
    normalizer_case("{\"type\": \"Strip\", \"strip_left\": true, \"strip_right\": false}", " \t hi  ", "hi  ");
    normalizer_case("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFD\"}, {\"type\": \"StripAccents\"}]}",
                    "caf\xC3\xA9", "cafe");
    normalizer_case("{\"type\": \"NFKC\"}", "\xEF\xAC\x81", "fi");
    normalizer_case("{\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, \"content\": \"_\"}", "a   b c", "a_b_c");
    normalizer_case("{\"type\": \"BertNormalizer\", \"lowercase\": true}", "H\xC3\xA9llo\t\xE6\x9C\xBA\xE2\x80\x8B!",
                    "hello  \xE6\x9C\xBA !");
    normalizer_case("{\"type\": \"Prepend\", \"prepend\": \"" META "\"}", "", "");

    decoder_case("{\"type\": \"WordPiece\", \"prefix\": \"##\", \"cleanup\": true}", "un|##aff|##able|,|I|do|not",
                 "unaffable, I do not"); /* cleanup works per token */
    decoder_case("{\"type\": \"Strip\", \"content\": \"x\", \"start\": 2, \"stop\": 1}", "xxxaxx|x", "xax");
    decoder_case("{\"type\": \"Metaspace\", \"replacement\": \"" META "\", \"prepend_scheme\": \"always\"}",
                 META "Hey|" META "friend!", "Hey friend!");
    decoder_case("{\"type\": \"ByteFallback\"}", "a|<0xE2>|<0x82>|<0xAC>|b|<0xE2>", "a\xE2\x82\xAC" "b\xEF\xBF\xBD");
    /* a run of bytes that is not UTF-8 as a whole: one U+FFFD per byte */
    decoder_case("{\"type\": \"ByteFallback\"}", "<0xE2>|<0x82>|<0xAC>|<0xE2>", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

int main(void) {
    const char *sc = getenv("AFO_TEST_SCALE");
    if (sc && atof(sc) > 0) g_scale = atof(sc);
    RUN(test_stages);
    RUN(test_expected);
    RUN(test_llamacpp_vectors);
    RUN(test_round_trip);
    RUN(test_streaming);
    RUN(test_empty);
    RUN(test_malformed);
    return test_finish();
}
