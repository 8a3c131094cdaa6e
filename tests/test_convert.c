/* afo_model_convert to MLX's quantized layout: the written tensors equal
 * afo_quantize of the originals, config.json carries the quantization, the
 * result loads and its logits stay near the original's (bounds below), -d
 * round-trips, and bad options or destinations are errors. */
#define _GNU_SOURCE
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "afo/afo.h"
#include "support/test.h"

#define DEMO "models/tiny-classics"

static char g_dir[64];

static float *read_f32(afo_array *a) {
    size_t n = (size_t)afo_array_size(a);
    float *v = malloc(sizeof *v * n);
    if (v && afo_array_read(a, AFO_FLOAT32, v, sizeof *v * n) != AFO_OK) free(v), v = NULL;
    return v;
}

/* a and b hold the same values (compared as `as`, exact for their dtypes). */
static bool same(afo_array *a, afo_array *b, afo_dtype as) {
    if (!a || !b || afo_array_size(a) != afo_array_size(b)) return false;
    size_t n = (size_t)afo_array_size(a) * 4;
    void *x = malloc(n), *y = malloc(n);
    bool ok = x && y && afo_array_read(a, as, x, n) == AFO_OK && afo_array_read(b, as, y, n) == AFO_OK &&
              memcmp(x, y, n) == 0;
    free(x);
    free(y);
    return ok;
}

/* Last-position-free logits of a fixed 24-token prompt. */
static float *logits_of(const char *dir, size_t *n) {
    afo_model *m = NULL;
    if (afo_model_load(dir, NULL, &m) != AFO_OK) return NULL;
    int32_t ids[24];
    for (int i = 0; i < 24; i++) ids[i] = (int32_t)((i * 37 + 5) % afo_model_vocab_size(m));
    afo_array *y = NULL;
    float *v = afo_model_forward(m, NULL, ids, 1, 24, &y) == AFO_OK ? read_f32(y) : NULL;
    if (y) *n = (size_t)afo_array_size(y);
    afo_release(y);
    afo_model_free(m);
    return v;
}

/* ||a - b|| / ||a|| over the logits of two model directories. */
static double logits_error(const char *ref, const char *dir) {
    size_t n = 0, k = 0;
    float *a = logits_of(ref, &n), *b = logits_of(dir, &k);
    double num = 0, den = 0;
    for (size_t i = 0; a && b && n == k && i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += a[i] * a[i];
    bool ok = a && b && n == k;
    free(a);
    free(b);
    return ok ? sqrt(num / den) : INFINITY;
}

static bool file_has(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    char buf[8192] = {0};
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    return n && strstr(buf, needle);
}

/* Every quantized layer of the demo model equals afo_quantize of its
 * original; norms stay as they were. */
static void check_tensors(const char *dir, int bits, int gs) {
    afo_weights *src = afo_weights_open(DEMO), *dst = afo_weights_open(dir);
    CHECK(src && dst);
    if (!src || !dst) return;
    static const char *const paths[] = {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj",
                                        "model.embed_tokens"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        char name[200];
        snprintf(name, sizeof name, "%s.weight", paths[i]);
        afo_array *w = afo_weights_get(src, name), *wq = NULL, *s = NULL, *b = NULL;
        CHECK(w && afo_quantize(w, gs, bits, &wq, &s, &b) == AFO_OK);
        afo_array *got[3] = {afo_weights_get(dst, name), NULL, NULL};
        snprintf(name, sizeof name, "%s.scales", paths[i]);
        got[1] = afo_weights_get(dst, name);
        snprintf(name, sizeof name, "%s.biases", paths[i]);
        got[2] = afo_weights_get(dst, name);
        CHECK_MSG(same(wq, got[0], AFO_UINT32), "%s weight", paths[i]);
        CHECK_MSG(same(s, got[1], AFO_FLOAT32), "%s scales", paths[i]);
        CHECK_MSG(same(b, got[2], AFO_FLOAT32), "%s biases", paths[i]);
        afo_release(w), afo_release(wq), afo_release(s), afo_release(b);
        for (int k = 0; k < 3; k++) afo_release(got[k]);
    }
    afo_array *n0 = afo_weights_get(src, "model.norm.weight"), *n1 = afo_weights_get(dst, "model.norm.weight");
    CHECK(same(n0, n1, AFO_FLOAT32));
    afo_release(n0), afo_release(n1);
    afo_weights_close(src);
    afo_weights_close(dst);
}

static void test_demo(void) {
    static const struct {
        int bits;
        double bound, bpw_lo, bpw_hi;
    } cases[] = {{8, 1e-2, 8.4, 8.6}, {4, 0.2, 4.4, 4.6}};
    for (size_t c = 0; c < 2; c++) {
        char out[128], cfg[160], back[128];
        snprintf(out, sizeof out, "%s/q%d", g_dir, cases[c].bits);
        afo_convert_options o = {.dtype = -1, .bits = cases[c].bits, .group_size = 64};
        double bpw = 0;
        CHECK(afo_model_convert(DEMO, out, &o, &bpw) == AFO_OK);
        /* every matrix of the demo model is quantized: bits + 2*16/64 */
        CHECK_MSG(bpw > cases[c].bpw_lo && bpw < cases[c].bpw_hi, "%d bits: %.3f bits per weight", cases[c].bits, bpw);
        check_tensors(out, cases[c].bits, 64);
        snprintf(cfg, sizeof cfg, "%s/config.json", out);
        CHECK(file_has(cfg, "\"quantization_config\""));
        CHECK(file_has(cfg, "\"affine\""));
        CHECK(file_has(cfg, cases[c].bits == 8 ? "\"bits\":\t8" : "\"bits\":\t4"));
        snprintf(cfg, sizeof cfg, "%s/tokenizer.json", out);
        CHECK(access(cfg, R_OK) == 0);
        double err = logits_error(DEMO, out);
        CHECK_MSG(err <= cases[c].bound, "%d bits: relative logit error %g > %g", cases[c].bits, err,
                  cases[c].bound);
        /* -d: the dequantized model computes what the quantized one did, up
         * to the bf16 rounding of scale*q + bias (the quantized kernels keep
         * it in float32): measured ~1.3e-3 */
        snprintf(back, sizeof back, "%s/d%d", g_dir, cases[c].bits);
        afo_convert_options d = {.dtype = -1};
        CHECK(afo_model_convert(out, back, &d, &bpw) == AFO_OK);
        CHECK(bpw == 16.0);
        snprintf(cfg, sizeof cfg, "%s/config.json", back);
        CHECK(!file_has(cfg, "quantization"));
        double rt = logits_error(out, back);
        CHECK_MSG(rt <= 5e-3, "%d bits: dequantized model differs by %g", cases[c].bits, rt);
    }
}

/* The architectures of the HF fixtures, 8-bit. */
static void test_fixtures(void) {
    static const char *const names[] = {"llama", "qwen3", "gemma3", "phi3"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char rel[64], src[4096], out[128];
        snprintf(rel, sizeof rel, "fixtures/models/%s", names[i]);
        if (!test_shared_path(rel, src, sizeof src)) continue;
        snprintf(out, sizeof out, "%s/%s8", g_dir, names[i]);
        afo_convert_options o = {.dtype = -1, .bits = 8, .group_size = 64};
        afo_status st = afo_model_convert(src, out, &o, NULL);
        CHECK_MSG(st == AFO_OK, "%s: %s", names[i], afo_last_error());
        double err = logits_error(src, out);
        CHECK_MSG(err <= 2e-2, "%s: relative logit error %g", names[i], err);
    }
}

static void test_errors(void) {
    char out[160], file[128];
    snprintf(out, sizeof out, "%s/bad", g_dir);
    afo_convert_options o = {.dtype = -1, .bits = 7, .group_size = 64};
    CHECK(afo_model_convert(DEMO, out, &o, NULL) == AFO_ERR_INVALID_ARGUMENT);
    o.bits = 4, o.group_size = 48;
    CHECK(afo_model_convert(DEMO, out, &o, NULL) == AFO_ERR_INVALID_ARGUMENT);
    o.dtype = AFO_INT32, o.group_size = 64;
    CHECK(afo_model_convert(DEMO, out, &o, NULL) == AFO_ERR_INVALID_ARGUMENT);
    CHECK(access(out, F_OK) != 0);
    /* a destination under a regular file cannot be created (running as
     * root, permissions would not stop it) */
    snprintf(file, sizeof file, "%s/plain", g_dir);
    FILE *f = fopen(file, "w");
    CHECK(f);
    if (f) fclose(f);
    snprintf(out, sizeof out, "%s/sub", file);
    o.dtype = -1;
    CHECK(afo_model_convert(DEMO, out, &o, NULL) == AFO_ERR_IO);
    /* an existing non-empty destination is refused and left alone */
    CHECK(afo_model_convert(DEMO, g_dir, &o, NULL) == AFO_ERR_IO);
    CHECK(access(file, F_OK) == 0);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/afo_test_convert_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    RUN(test_errors);
    RUN(test_demo);
    RUN(test_fixtures);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return test_finish();
}
