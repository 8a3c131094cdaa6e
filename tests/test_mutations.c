/* Damaged inputs, at random: the demo model's config.json,
 * generation_config.json, tokenizer.json and safetensors header, a
 * quantized copy's config (its quantization section) and header, the
 * shared fixtures' models of other architectures (config and header) and
 * tokenizers of other kinds, the files GGUF export reads, the chat
 * templates of chat_template_cases.h and of the fixture models (and the
 * tokenizer_config.json they come in), and the chat context,
 * each changed a few bytes at a time (bytes overwritten, letters or digits
 * swapped, a span removed or repeated, the file cut short) from a fixed
 * seed. Every load and render must either succeed or return an error with
 * its text; none may crash, leak or read out of bounds (the suite also runs
 * under AddressSanitizer and UBSan). What loads is used: a model decodes a
 * few tokens, a tokenizer encodes and decodes a sentence, a template
 * renders. AFO_TEST_SCALE scales the number of mutations (CI: 0.25 under
 * the sanitizers, 0.1 under qemu); AFO_TEST_SEED picks other mutations than
 * the fixed seed's, to search. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afo/afo.h"
#include "chat_template_cases.h"
#include "core/internal.h"
#include "support/test.h"

static const char DEMO[] = "models/tiny-classics";
static char g_dir[256];
static double g_scale = 1;

typedef struct blob {
    unsigned char *data;
    size_t len;
} blob;

/* The file's bytes, NUL-terminated; empty when it cannot be read. */
static blob read_file(const char *path) {
    char *text = NULL;
    size_t len = 0;
    afo_read_file(path, 0, false, &text, &len);
    return (blob){(unsigned char *)text, text ? len : 0};
}

static void write_file(const char *path, const unsigned char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f && fwrite(data, 1, len, f) == len, "cannot write %s", path);
    if (f) fclose(f);
}

static size_t below(size_t n) { return n ? (size_t)(test_rand_u64() % n) : 0; }

/* A copy of `in` changed once, within `span` bytes from `from` (the part
 * worth damaging): 1-4 bytes overwritten, mostly with JSON's and Jinja's
 * punctuation, digits and quotes; letters and digits replaced by others of
 * their kind (the syntax kept, so that the values behind it get checked); a
 * span of up to 64 bytes removed or repeated; or everything from a random
 * point on cut off. out->data holds len + 65 bytes, NUL-terminated. */
static void mutate(const blob *in, size_t from, size_t span, blob *out) {
    static const char picks[] = "{}[]\":,\\0123456789-+.eE%#'()|~ \n\x01\x7f\xc3\xff";
    memcpy(out->data, in->data, in->len);
    out->len = in->len;
    if (from > in->len) from = in->len;
    if (span > in->len - from) span = in->len - from;
    size_t at = from + below(span), n = 1 + below(64);
    switch (test_rand_u64() % 5) {
    case 4:
        for (int k = 0, m = 1 + (int)below(3); k < m; k++) {
            unsigned char *c = out->data + from + below(span);
            if (*c >= '0' && *c <= '9') *c = (unsigned char)('0' + below(10));
            else if (*c >= 'a' && *c <= 'z') *c = (unsigned char)('a' + below(26));
            else if (*c >= 'A' && *c <= 'Z') *c = (unsigned char)('A' + below(26));
        }
        break;
    case 0:
        for (int k = 0, m = 1 + (int)below(4); k < m; k++)
            out->data[from + below(span)] = (unsigned char)picks[below(sizeof picks - 1)];
        break;
    case 1:
        if (at + n > in->len) n = in->len - at;
        memmove(out->data + at, in->data + at + n, in->len - at - n);
        out->len -= n;
        break;
    case 2:
        if (at + n > in->len) n = in->len - at;
        memmove(out->data + at + n, in->data + at, in->len - at);
        memcpy(out->data + at, in->data + at, n);
        out->len += n;
        break;
    default: out->len = at; break;
    }
    out->data[out->len] = 0;
}

/* A failure must say why. */
static void check_error_text(afo_status st, const char *what, int round) {
    const char *e = afo_last_error();
    CHECK_MSG(st == AFO_OK || (e && *e), "%s, mutation %d: status %s without an error text", what, round,
              afo_status_name(st));
}

/* One damaged file tried: whether it was used (a model loaded and run, a
 * tokenizer used, a file exported, a template rendered); a refusal must
 * have said why. */
typedef bool (*try_fn)(void *ctx, const char *label, int round);

/* `rounds` damaged copies of the file at src, each written to dst and
 * tried. The damage falls in [from, from + span); with `alternate`, only
 * in every other round, the others anywhere. Afterwards dst holds src's
 * bytes again, or is removed when it is another file. */
static void damage(const char *src, const char *dst, const char *label, size_t from, size_t span, bool alternate,
                   int rounds, try_fn try_one, void *ctx, const char *used) {
    blob good = read_file(src), bad = {malloc(good.len + 66), 0};
    CHECK_MSG(good.len > 0 && bad.data, "cannot read %s", src);
    int n = 0;
    for (int r = 0; r < rounds && good.len && bad.data; r++) {
        if (alternate && r % 2 == 0) mutate(&good, 0, SIZE_MAX, &bad);
        else mutate(&good, from, span, &bad);
        write_file(dst, bad.data, bad.len);
        n += try_one(ctx, label, r);
    }
    if (strcmp(src, dst) == 0) write_file(dst, good.data, good.len);
    else remove(dst);
    fprintf(stderr, "  %s: %d mutations, %d %s\n", label, rounds, n, used);
    free(good.data), free(bad.data);
}

/* The model directory ctx loaded, and when it loads, four tokens decoded. */
static bool try_model(void *ctx, const char *label, int r) {
    afo_model *m = NULL;
    afo_status st = afo_model_load(ctx, NULL, &m);
    check_error_text(st, label, r);
    CHECK_MSG((st == AFO_OK) == (m != NULL), "%s, mutation %d: status %s with model %p", label, r,
              afo_status_name(st), (void *)m);
    if (!m) return false;
    int64_t vocab = afo_model_vocab_size(m) > 0 ? afo_model_vocab_size(m) : 1;
    int32_t ids[4] = {1 % vocab, 7 % vocab, 99 % vocab, (int32_t)(4095 % vocab)};
    afo_array *logits = NULL;
    st = afo_model_forward(m, NULL, ids, 1, 4, &logits);
    check_error_text(st, label, r);
    afo_release(logits);
    afo_model_free(m);
    return true;
}

/* Each mutation of `name` in the model directory `dir` (from its bytes
 * [from, from + span)) is loaded as a model; the file is put back
 * afterwards. */
static void mutate_model_file(char *dir, const char *name, size_t from, size_t span, int rounds) {
    char path[512], label[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const char *base = strrchr(dir, '/');
    snprintf(label, sizeof label, "%s %s", base ? base + 1 : dir, name);
    damage(path, path, label, from, span, false, rounds, try_model, dir, "loaded");
}

/* `files` copied from `from` into `to` (made if missing); all must be
 * there but `optional`. */
static void copy_files(const char *from, const char *to, const char *const *files, size_t n, const char *optional) {
    mkdir(to, 0700);
    for (size_t i = 0; i < n; i++) {
        char src[512], dst[512];
        snprintf(src, sizeof src, "%s/%s", from, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, files[i]);
        if (strcmp(files[i], optional) == 0 && access(src, R_OK) != 0) continue;
        blob b = read_file(src);
        CHECK_MSG(b.len > 0, "cannot read %s", src);
        write_file(dst, b.data, b.len);
        free(b.data);
    }
}

/* The files of a model directory that loading reads (the fixtures' models
 * have no tokenizer). */
static void copy_model(const char *from, const char *to) {
    static const char *const files[] = {"config.json", "generation_config.json", "tokenizer.json",
                                        "model.safetensors"};
    copy_files(from, to, files, sizeof files / sizeof *files, "tokenizer.json");
}

/* The bytes of a safetensors file's length prefix and JSON header. */
static size_t header_span(const char *path) {
    blob b = read_file(path);
    uint64_t header = 0;
    for (int i = 7; i >= 0 && b.len >= 8; i--) header = header << 8 | b.data[i];
    free(b.data);
    CHECK_MSG(header > 0 && header < 1 << 20, "%s: header of %llu bytes", path, (unsigned long long)header);
    return 8 + (size_t)header;
}

static void test_config(void) { mutate_model_file(g_dir, "config.json", 0, SIZE_MAX, (int)(300 * g_scale)); }

static void test_generation_config(void) {
    mutate_model_file(g_dir, "generation_config.json", 0, SIZE_MAX, (int)(100 * g_scale));
}

/* The demo model quantized by mlx-lm's mixed_3_6 recipe (3 and 6 bits,
 * entries per path): its config's "quantization" section damaged, which
 * the packed weights' shapes must then contradict or agree with; then its
 * safetensors header. */
static void test_quantized_config(void) {
    char q[512], path[600];
    snprintf(q, sizeof q, "%s/q36", g_dir);
    afo_convert_options o = {.dtype = -1, .bits = 3, .group_size = 64, .predicate = "mixed_3_6"};
    CHECK_MSG(afo_model_convert(DEMO, q, &o, NULL) == AFO_OK, "%s", afo_last_error());
    snprintf(path, sizeof path, "%s/config.json", q);
    blob b = read_file(path);
    const char *at = b.data ? strstr((const char *)b.data, "\"quantization\"") : NULL;
    CHECK_MSG(at, "%s has no quantization section", path);
    if (at) mutate_model_file(q, "config.json", (size_t)(at - (const char *)b.data), SIZE_MAX, (int)(300 * g_scale));
    free(b.data);
    /* the packed weights', scales' and biases' shapes and dtypes */
    snprintf(path, sizeof path, "%s/model.safetensors", q);
    mutate_model_file(q, "model.safetensors", 0, header_span(path), (int)(100 * g_scale));
}

/* The safetensors file: its length prefix and JSON header (the tensors'
 * bytes after it are any values), or the whole file cut short. */
static void test_safetensors_header(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", DEMO);
    mutate_model_file(g_dir, "model.safetensors", 0, header_span(path), (int)(200 * g_scale));
}

/* The shared fixtures' models of the other architectures (skipped when
 * absent): rope scaling, sliding windows, per-layer attention types, QK
 * norms, fused projections, experts. Their config.json and safetensors
 * header damaged. */
static void test_fixture_models(void) {
    static const char *names[] = {"gemma3", "llama3-rope", "mistral", "phi3", "qwen2", "qwen3", "qwen3-moe"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char rel[128], src[512], dir[512], path[600];
        snprintf(rel, sizeof rel, "fixtures/models/%s", names[i]);
        if (!test_shared_path(rel, src, sizeof src)) return;
        snprintf(dir, sizeof dir, "%s/%s", g_dir, names[i]);
        copy_model(src, dir);
        mutate_model_file(dir, "config.json", 0, SIZE_MAX, (int)(40 * g_scale) + 1);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        mutate_model_file(dir, "model.safetensors", 0, header_span(path), (int)(20 * g_scale) + 1);
    }
}

/* The tokenizer.json at ctx loaded, and when it loads, a sentence encoded
 * and decoded. */
static bool try_tokenizer(void *ctx, const char *label, int r) {
    static const char text[] = "Once upon a time, a caf\xc3\xa9 sold 3 cakes. \xe2\x98\x83 \xe4\xbd\xa0\xe5\xa5\xbd";
    afo_tokenizer *t = afo_tokenizer_load(ctx);
    check_error_text(t ? AFO_OK : AFO_ERR_FORMAT, label, r);
    if (!t) return false;
    int32_t *ids = NULL;
    size_t n = 0;
    char *back = NULL;
    afo_status st = afo_tokenizer_encode(t, text, sizeof text - 1, 1, &ids, &n);
    check_error_text(st, label, r);
    if (st == AFO_OK) check_error_text(afo_tokenizer_decode(t, ids, n, 0, &back), label, r);
    free(ids), free(back);
    afo_tokenizer_free(t);
    return true;
}

/* `rounds` mutations of the tokenizer.json at src, each written to a file
 * of the test directory (removed afterwards) and tried. Every other
 * mutation lands in the file's first `head` bytes (its sections before the
 * vocabulary, which is most of the file). */
static void mutate_tokenizer(const char *src, const char *label, size_t head, int rounds) {
    char dst[512];
    snprintf(dst, sizeof dst, "%s/mutated-tokenizer.json", g_dir);
    damage(src, dst, label, 0, head, true, rounds, try_tokenizer, dst, "loaded");
}

static void test_tokenizer(void) {
    char src[512];
    snprintf(src, sizeof src, "%s/tokenizer.json", DEMO);
    mutate_tokenizer(src, "tokenizer.json", 4096, (int)(60 * g_scale));
}

/* The shared fixtures' tokenizers of other kinds (skipped when absent):
 * WordPiece with BERT's normalizer, Unigram with a precompiled character
 * map, byte-level BPE, SentencePiece-style BPE with byte fallback. Half of
 * the mutations land in the sections before the model's vocabulary. */
static void test_fixture_tokenizers(void) {
    static const char *names[] = {"bert-base-uncased", "t5-small", "gpt2", "llama2", "roberta-base"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char rel[128], path[512];
        snprintf(rel, sizeof rel, "fixtures/tokenizers/%s/tokenizer.json", names[i]);
        if (!test_shared_path(rel, path, sizeof path)) return;
        blob b = read_file(path);
        const char *model = b.data ? strstr((const char *)b.data, "\"model\"") : NULL;
        size_t head = model ? (size_t)(model - (const char *)b.data) + 4096 : 4096;
        free(b.data);
        char label[160];
        snprintf(label, sizeof label, "%s tokenizer.json", names[i]);
        mutate_tokenizer(path, label, head, (int)(20 * g_scale) + 1);
    }
}

/* GGUF export reads config.json and tokenizer.json itself (the vocabulary,
 * merges and special tokens for tokenizer.ggml.*): the demo model's copies
 * damaged, each exported as Q8_0. An export either writes its file or fails
 * with its text and leaves no file behind. */
static bool try_gguf(void *ctx, const char *label, int r) {
    (void)ctx;
    char out[512];
    snprintf(out, sizeof out, "%s/out.gguf", g_dir);
    afo_status st = afo_gguf_export(g_dir, out, AFO_GGUF_Q8_0);
    check_error_text(st, label, r);
    CHECK_MSG(st == AFO_OK || access(out, F_OK) != 0, "%s, mutation %d: a failed export left %s", label, r, out);
    remove(out);
    return st == AFO_OK;
}

static void mutate_for_gguf(const char *name, size_t head, int rounds) {
    char path[512], label[300];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    snprintf(label, sizeof label, "gguf from %s", name);
    damage(path, path, label, 0, head, true, rounds, try_gguf, NULL, "exported");
}

static void test_gguf_export(void) {
    mutate_for_gguf("tokenizer.json", 4096, (int)(40 * g_scale) + 1);
    mutate_for_gguf("config.json", SIZE_MAX, (int)(20 * g_scale) + 1);
}

/* `rounds` mutations of a template's source, each parsed and rendered in
 * the chat cases' context; returns how many parsed. */
static int mutate_template(const char *source, int rounds) {
    blob good = {(unsigned char *)(uintptr_t)source, strlen(source)}, bad = {malloc(good.len + 66), 0};
    int parsed = 0;
    for (int r = 0; r < rounds && bad.data; r++) {
        mutate(&good, 0, SIZE_MAX, &bad);
        afo_chat_template *t = afo_chat_template_parse((const char *)bad.data);
        check_error_text(t ? AFO_OK : AFO_ERR_FORMAT, "chat template", r);
        if (!t) continue;
        char *out = NULL;
        check_error_text(afo_chat_template_render(t, CHAT_CASES_CONTEXT, &out), "chat template render", r);
        free(out);
        afo_chat_template_free(t);
        parsed++;
    }
    free(bad.data);
    return parsed;
}

/* The context damaged instead (messages that are not a list, contents
 * that are numbers ...), rendered by every chat case's template. */
static void test_chat_context(void) {
    blob good = {(unsigned char *)(uintptr_t)CHAT_CASES_CONTEXT, strlen(CHAT_CASES_CONTEXT)},
         bad = {malloc(good.len + 66), 0};
    int rounds = (int)(60 * g_scale), rendered = 0, total = 0;
    for (int r = 0; r < rounds && bad.data; r++) {
        mutate(&good, 0, SIZE_MAX, &bad);
        for (size_t c = 0; c < sizeof CHAT_CASES / sizeof *CHAT_CASES; c++, total++) {
            afo_chat_template *t = afo_chat_template_parse(CHAT_CASES[c].template_);
            char *out = NULL;
            afo_status st = t ? afo_chat_template_render(t, (const char *)bad.data, &out) : AFO_ERR_FORMAT;
            check_error_text(st, "chat context", r);
            rendered += st == AFO_OK;
            free(out);
            afo_chat_template_free(t);
        }
    }
    free(bad.data);
    fprintf(stderr, "  chat context: %d renders of %d mutations, %d rendered\n", total, rounds, rendered);
}

/* Every template of the chat cases, damaged a few times each. */
static void test_chat_templates(void) {
    int parsed = 0, total = 0, per = g_scale < 1 ? 2 : 6;
    for (size_t c = 0; c < sizeof CHAT_CASES / sizeof *CHAT_CASES; c++, total += per)
        parsed += mutate_template(CHAT_CASES[c].template_, per);
    fprintf(stderr, "  chat templates: %d mutations, %d parsed\n", total, parsed);
}

/* The models' own templates from the shared fixtures (skipped when they
 * are absent), as afo_chat_template_from_model reads them. */
static void test_model_templates(void) {
    static const char *models[] = {"llama2-chat", "llama3", "mistral-7b-v0.1", "phi3-mini", "qwen2.5", "gemma"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        char rel[128], dir[512];
        snprintf(rel, sizeof rel, "fixtures/tokenizers/%s", models[i]);
        if (!test_shared_path(rel, dir, sizeof dir)) return;
        char *source = NULL;
        if (afo_chat_template_from_model(dir, &source, NULL, NULL) != AFO_OK) continue; /* no template */
        int rounds = (int)(40 * g_scale), parsed = mutate_template(source, rounds);
        fprintf(stderr, "  %s template: %d mutations, %d parsed\n", models[i], rounds, parsed);
        free(source);
    }
}

/* tokenizer_config.json itself damaged (the template as a string or a
 * list of named ones, bos_token and eos_token as strings or objects), and
 * gemma's special_tokens_map.json: read as afo_chat_template_from_model
 * reads a model directory, then parsed and rendered. */
static bool try_template_config(void *ctx, const char *label, int r) {
    /* alternating user and assistant turns: what every one of these templates accepts */
    static const char context[] = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                                  "{\"role\": \"assistant\", \"content\": \"Hello\"}, "
                                  "{\"role\": \"user\", \"content\": \"Bye\"}], "
                                  "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";
    char *source = NULL, *bos = NULL, *eos = NULL, *out = NULL;
    afo_status st = afo_chat_template_from_model(ctx, &source, &bos, &eos);
    check_error_text(st, label, r);
    afo_chat_template *t = st == AFO_OK ? afo_chat_template_parse(source) : NULL;
    bool rendered = false;
    if (t) {
        st = afo_chat_template_render(t, context, &out);
        check_error_text(st, label, r);
        rendered = st == AFO_OK;
    }
    afo_chat_template_free(t);
    free(source), free(bos), free(eos), free(out);
    return rendered;
}

static void mutate_template_config(const char *model, const char *name, int rounds) {
    static const char *const files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    char rel[160], src[512], dir[512], path[600], label[300];
    snprintf(rel, sizeof rel, "fixtures/tokenizers/%s", model);
    if (!test_shared_path(rel, src, sizeof src)) return;
    snprintf(dir, sizeof dir, "%s/%s-config", g_dir, model);
    copy_files(src, dir, files, sizeof files / sizeof *files, "special_tokens_map.json");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(label, sizeof label, "%s %s", model, name);
    damage(path, path, label, 0, SIZE_MAX, false, rounds, try_template_config, dir, "rendered");
}

static void test_template_configs(void) {
    static const char *models[] = {"llama2-chat", "llama3", "phi3-mini", "gemma"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++)
        mutate_template_config(models[i], "tokenizer_config.json", (int)(30 * g_scale) + 1);
    mutate_template_config("gemma", "special_tokens_map.json", (int)(20 * g_scale) + 1);
}

int main(void) {
    const char *s = getenv("AFO_TEST_SCALE");
    if (s) g_scale = atof(s);
    const char *seed = getenv("AFO_TEST_SEED");
    test_seed(seed ? strtoull(seed, NULL, 10) : 20261127);
    if (!test_temp_dir("mutations", g_dir, sizeof g_dir)) return 1;
    copy_model(DEMO, g_dir);
    RUN(test_config);
    RUN(test_generation_config);
    RUN(test_quantized_config);
    RUN(test_safetensors_header);
    RUN(test_fixture_models);
    RUN(test_tokenizer);
    RUN(test_fixture_tokenizers);
    RUN(test_gguf_export);
    RUN(test_chat_templates);
    RUN(test_chat_context);
    RUN(test_model_templates);
    RUN(test_template_configs);
    test_remove_tree(g_dir);
    return test_finish();
}
