/* KV cache options: quantized keys/values (mlx-lm's QuantizedKVCache) and
 * the rotating cache (RotatingKVCache with keep), each against a reference
 * computed another way: float attention over dequantize(quantize(K, V)),
 * the unquantized cache, and a full forward pass with an explicit mask. */
#include <afo/afo.h>
#include <string.h>

#include "backends/cpu/cpu_features.h"
#include "models/models.h"
#include "support/test.h"

static double test_scale(void) {
    const char *s = getenv("AFO_TEST_SCALE");
    return s ? atof(s) : 1.0;
}

static afo_model *load(const char *dir, int storage_dtype) {
    afo_model_options mo = {.compute_in_storage_dtype = storage_dtype};
    afo_model *m = NULL;
    afo_status st = afo_model_load(dir, &mo, &m);
    CHECK_MSG(st == AFO_OK, "cannot load %s: %s", dir, afo_last_error());
    return m;
}

/* Seeded random ids: every test and run sees the same sequence. */
static void some_ids(const afo_model *m, int32_t *ids, int n) {
    test_seed(42);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(1 + test_rand_u64() % (uint64_t)(afo_model_vocab_size(m) - 1));
}

static bool error_names(afo_status st, const char *field) {
    return st == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), field) != NULL;
}

static void test_invalid_options(void) {
    afo_model *m = load("models/tiny-classics", 0);
    if (!m) return;
    afo_kv_cache *c = (afo_kv_cache *)&c;
    struct {
        int bits, gs;
        int64_t start, max;
        int keep;
        const char *field;
    } bad[] = {
        {1, 32, 0, 0, 4, "kv_bits"},          {7, 32, 0, 0, 4, "kv_bits"},
        {9, 32, 0, 0, 4, "kv_bits"},          {4, 16, 0, 0, 4, "kv_group_size"},
        {4, 48, 0, 0, 4, "kv_group_size"},    {4, 64, 0, 0, 4, "head_dim 32"}, /* demo: head_dim 32 */
        {8, 32, -1, 0, 4, "quantized_start"}, {0, 64, 0, 4, 4, "max_kv_size"},
        {0, 64, 0, 3, 4, "max_kv_size"},      {0, 64, 0, 8, -1, "keep"},
        {0, 64, 0, -5, 4, "max_kv_size"},     {4, 32, 0, 64, 4, "cannot be combined"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        afo_kv_cache_options o = {
            .kv_bits = bad[i].bits, .kv_group_size = bad[i].gs, .quantized_start = bad[i].start,
            .max_kv_size = bad[i].max, .keep = bad[i].keep};
        afo_status st = afo_kv_cache_create_ex(m, 1, &o, &c);
        CHECK_MSG(error_names(st, bad[i].field) && c == NULL, "case %zu: '%s'", i, afo_last_error());
    }
    afo_dtype bad_types[] = {AFO_INT32, AFO_FLOAT64, AFO_DTYPE_COUNT, (afo_dtype)-1};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        afo_kv_cache_options o = afo_kv_cache_defaults();
        o.kv_dtype = bad_types[i];
        afo_status st = afo_kv_cache_create_ex(m, 1, &o, &c);
        CHECK_MSG(error_names(st, "kv_dtype") && c == NULL, "kv_dtype %d: '%s'", (int)bad_types[i], afo_last_error());
    }
    afo_kv_cache_options ok = afo_kv_cache_defaults();
    ok.kv_bits = 4;
    ok.kv_group_size = 32;
    CHECK(afo_kv_cache_create_ex(m, 1, &ok, &c) == AFO_OK && !afo_kv_cache_is_quantized(c));
    CHECK(afo_kv_cache_dtype(c) == AFO_FLOAT32); /* float32 compute, kv_dtype 0 */
    afo_kv_cache_free(c);
    ok.kv_dtype = AFO_BFLOAT16;
    CHECK(afo_kv_cache_create_ex(m, 1, &ok, &c) == AFO_OK && afo_kv_cache_dtype(c) == AFO_BFLOAT16);
    afo_kv_cache_free(c);
    afo_model_free(m);
}

/* softmax(q k^T * scale + mask) v in double for q [B,H,n,D], k, v
 * [B,K,L,D] float32 data, additive mask [n, L]. */
static void naive_attention(const float *q, const float *k, const float *v, const float *mask, int B, int H, int K,
                            int n, int L, int D, double scale, double *out) {
    double *s = malloc(sizeof(double) * (size_t)L);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < n; i++) {
                const float *qi = q + (((size_t)b * H + h) * n + i) * D;
                const float *kb = k + ((size_t)b * K + h / (H / K)) * L * D, *vb = v + ((size_t)b * K + h / (H / K)) * L * D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < L; j++) {
                    double d = 0;
                    for (int e = 0; e < D; e++) d += (double)qi[e] * kb[(size_t)j * D + e];
                    s[j] = d * scale + mask[i * L + j];
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < L; j++) sum += s[j] = exp(s[j] - mx);
                double *o = out + (((size_t)b * H + h) * n + i) * D;
                for (int e = 0; e < D; e++) {
                    double a = 0;
                    for (int j = 0; j < L; j++) a += s[j] * vb[(size_t)j * D + e];
                    o[e] = a / sum;
                }
            }
    free(s);
}

static afo_array *random_array(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)test_normal();
    afo_array *a = afo_array_from_data(x, AFO_FLOAT32, ndim, shape);
    free(x);
    return a;
}

/* max |a - b| over n elements (0 when a is NULL). Not vectorised: GCC 12's
 * aarch64 vectoriser crashes (internal compiler error in
 * vect_transform_reduction) on this float/double fmax reduction. */
__attribute__((optimize("no-tree-vectorize"))) static double max_diff(const float *a, const double *b, int n) {
    double m = 0;
    for (int i = 0; a && i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

__attribute__((optimize("no-tree-vectorize"))) static double max_diff_f(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

/* The quantized attention against float attention over the dequantized
 * keys and values: only rounding separates them. */
static void test_quantized_attention_reference(void) {
    enum { B = 2, H = 4, K = 2, n = 3, L = 37, D = 64 };
    int configs[3][2] = {{4, 32}, {8, 64}, {4, 64}};
    test_seed(7);
    int64_t qs[4] = {B, H, n, D}, ks[4] = {B, K, L, D};
    afo_array *q = random_array(4, qs), *k = random_array(4, ks), *v = random_array(4, ks);
    float mask[n * L];
    for (int i = 0; i < n; i++) /* causal for queries at L-n.., plus a hole */
        for (int j = 0; j < L; j++) mask[i * L + j] = j <= L - n + i && j != 5 ? 0.0f : -INFINITY;
    int64_t ms[2] = {n, L};
    afo_array *m = afo_array_from_data(mask, AFO_FLOAT32, 2, ms);
    for (int c = 0; c < 3; c++) {
        int bits = configs[c][0], gs = configs[c][1];
        afo_array *kq[3], *vq[3], *scratch[B * K], *scratch_fast[B * K];
        CHECK(afo_quantize(k, gs, bits, &kq[0], &kq[1], &kq[2]) == AFO_OK);
        CHECK(afo_quantize(v, gs, bits, &vq[0], &vq[1], &vq[2]) == AFO_OK);
        afo_array *kd = afo_dequantize(kq[0], kq[1], kq[2], gs, bits), *vd = afo_dequantize(vq[0], vq[1], vq[2], gs, bits);
        /* The scalar level computes the quantized matmuls in float: exactly
         * attention over the dequantized cache. SIMD levels quantize the
         * activations (int8 against 4-bit weights, int16 otherwise; see
         * quant_kernels.c), checked after this with their own bound. */
        afo_cpu_level level = afo_cpu_kernel_level();
        afo_cpu_set_kernel_level(AFO_CPU_SCALAR);
        afo_array *got = quantized_sdpa(q, kq, vq, 0.125f, m, gs, bits, scratch);
        CHECK(got && afo_eval1(got) == AFO_OK && afo_array_dim(got, 1) == H && afo_array_dim(got, 2) == n);
        afo_cpu_set_kernel_level(level);
        afo_array *fast = quantized_sdpa(q, kq, vq, 0.125f, m, gs, bits, scratch_fast);
        double *want = malloc(sizeof(double) * B * H * n * D);
        naive_attention(afo_array_data(q), afo_array_data(kd), afo_array_data(vd), mask, B, H, K, n, L, D, 0.125, want);
        const float *g = got ? afo_array_data(got) : NULL;
        const float *kf = afo_array_data(k), *kdd = afo_array_data(kd);
        double err = max_diff(g, want, B * H * n * D), err_float = max_diff_f(kf, kdd, B * K * L * D);
        CHECK_MSG(g && err < 1e-5, "%d-bit, groups of %d: max error %.2e vs float over dequantized K, V", bits, gs, err);
        /* int8 rounding of q and p (steps of max/127 per 32) against 4-bit
         * levels moves outputs by a few 1e-2 at most here; int16 by 1e-4 */
        const float *f = fast && afo_eval1(fast) == AFO_OK ? afo_array_data(fast) : NULL;
        double err_fast = max_diff(f, want, B * H * n * D);
        CHECK_MSG(f && err_fast < (bits == 4 ? 6e-2 : 1e-3), "%d-bit, groups of %d, %s level: max error %.2e", bits, gs,
                  afo_cpu_level_name(level), err_fast);
        afo_release(fast);
        /* the keys really were quantized (else the check above proves little) */
        CHECK_MSG(err_float > (bits == 4 ? 1e-2 : 1e-4), "quantization error of K only %.2e", err_float);
        free(want);
        afo_release(got), afo_release(kd), afo_release(vd);
        for (int p = 0; p < 3; p++) afo_release(kq[p]), afo_release(vq[p]);
    }
    afo_release(q), afo_release(k), afo_release(v), afo_release(m);
}

/* Feeds a prompt, then `steps` ids one at a time; stores every step's
 * last-position logits in out [steps + 1][vocab]. */
static afo_status run_cache(afo_model *m, const afo_kv_cache_options *o, const int32_t *ids, int prompt, int steps,
                            float *out, size_t *nbytes, int *quantized) {
    afo_kv_cache *c = NULL;
    AFO_TRY(afo_kv_cache_create_ex(m, 1, o, &c));
    int64_t vocab = afo_model_vocab_size(m);
    afo_forward_options fo = {.last_only = 1};
    afo_status st = AFO_OK;
    for (int s = 0; st == AFO_OK && s <= steps; s++) {
        afo_array *logits = NULL;
        st = s == 0 ? afo_model_forward_ex(m, c, ids, 1, prompt, &fo, &logits)
                    : afo_model_forward_ex(m, c, ids + prompt + s - 1, 1, 1, &fo, &logits);
        if (st == AFO_OK) st = afo_array_read(logits, AFO_FLOAT32, out + s * vocab, sizeof(float) * (size_t)vocab);
        afo_release(logits);
    }
    if (nbytes) *nbytes = afo_kv_cache_nbytes(c);
    if (quantized) *quantized = afo_kv_cache_is_quantized(c);
    afo_kv_cache_free(c);
    return st;
}

/* A model (float32 compute) and seeded ids for a teacher-forced run of
 * caches against each other: a 12-token prompt, then *steps decoding steps
 * (6 under AFO_TEST_SCALE < 1, else 24). */
enum { FORCED_PROMPT = 12, FORCED_MAX_STEPS = 24 };
static afo_model *forced_setup(const char *dir, int32_t *ids, int *steps) {
    afo_model *m = load(dir, 0);
    if (!m) return NULL;
    *steps = test_scale() < 1 ? 6 : FORCED_MAX_STEPS;
    some_ids(m, ids, FORCED_PROMPT + *steps);
    return m;
}

/* Largest |a - b| over the decoding steps, relative to the spread (max -
 * min) of the reference logits of the step. */
static double max_rel_diff(const float *a, const float *b, int steps, int64_t vocab, int from) {
    double worst = 0;
    for (int s = from; s <= steps; s++) {
        const float *x = a + s * vocab, *y = b + s * vocab;
        double lo = INFINITY, hi = -INFINITY, d = 0;
        for (int64_t i = 0; i < vocab; i++) lo = fmin(lo, y[i]), hi = fmax(hi, y[i]), d = fmax(d, fabs(x[i] - y[i]));
        worst = fmax(worst, d / (hi - lo));
    }
    return worst;
}

/* Quantized cache vs the unquantized cache, teacher-forced. Quantizing K
 * and V to b bits moves each element by at most half a level, range/(2^b
 * - 1)/2 of its group's range: 1/510 of it at 8 bits, 1/30 at 4 bits. After
 * the softmax and the rest of the network that comes out, on these models,
 * as logits within ~0.5% (8-bit) and ~5% (4-bit) of their spread; the
 * bounds below leave 4x room, and the 4-bit error must be several times the
 * 8-bit one, as the 17x finer levels predict. */
static void check_quantized_logits(const char *dir, int group_size) {
    int32_t ids[FORCED_PROMPT + FORCED_MAX_STEPS];
    int steps, prompt = FORCED_PROMPT;
    afo_model *m = forced_setup(dir, ids, &steps);
    if (!m) return;
    int64_t vocab = afo_model_vocab_size(m);
    float *ref = malloc(sizeof(float) * (size_t)(vocab * (steps + 1))), *q8 = malloc(sizeof(float) * (size_t)(vocab * (steps + 1))),
          *q4 = malloc(sizeof(float) * (size_t)(vocab * (steps + 1)));
    afo_kv_cache_options o = afo_kv_cache_defaults();
    size_t bytes_ref, bytes8, bytes4;
    int quantized8 = 0, quantized4 = 0;
    CHECK(run_cache(m, &o, ids, prompt, steps, ref, &bytes_ref, NULL) == AFO_OK);
    o.kv_group_size = group_size;
    o.kv_bits = 8;
    CHECK(run_cache(m, &o, ids, prompt, steps, q8, &bytes8, &quantized8) == AFO_OK);
    o.kv_bits = 4;
    CHECK(run_cache(m, &o, ids, prompt, steps, q4, &bytes4, &quantized4) == AFO_OK);
    CHECK(quantized8 && quantized4);
    /* as mlx-lm, the first forward runs unquantized and the cache converts after it */
    CHECK(memcmp(ref, q8, sizeof(float) * (size_t)vocab) == 0 && memcmp(ref, q4, sizeof(float) * (size_t)vocab) == 0);
    double e8 = max_rel_diff(q8, ref, steps, vocab, 1), e4 = max_rel_diff(q4, ref, steps, vocab, 1);
    fprintf(stderr, "  %s: logits vs unquantized cache, max |diff| / spread: 8-bit %.2e, 4-bit %.2e\n", dir, e8, e4);
    CHECK_MSG(e8 > 0 && e8 < 0.02, "8-bit %.3e", e8);
    CHECK_MSG(e4 < 0.2 && e4 > 3 * e8, "4-bit %.3e (8-bit %.3e)", e4, e8);
    /* float32 compute: a 4-bit element costs 4 bits + 2 float32 per group */
    double want4 = (4.0 + 64.0 / group_size) / 32, want8 = (8.0 + 64.0 / group_size) / 32;
    CHECK_MSG(fabs((double)bytes4 / (double)bytes_ref - want4) < 1e-9 && fabs((double)bytes8 / (double)bytes_ref - want8) < 1e-9,
              "bytes %zu, %zu vs %zu", bytes4, bytes8, bytes_ref);
    free(ref), free(q8), free(q4);
    afo_model_free(m);
}

static void test_quantized_logits(void) {
    check_quantized_logits("models/tiny-classics", 32);
    char dir[512];
    if (test_shared_path("fixtures/models/qwen3", dir, sizeof dir)) check_quantized_logits(dir, 32);
}

/* In bfloat16 compute a 4-bit cache takes (4 + 32/G)/16 of the bytes. */
static void test_quantized_memory_bf16(void) {
    afo_model *m = load("models/tiny-classics", 1);
    if (!m) return;
    CHECK(afo_model_compute_dtype(m) == AFO_BFLOAT16);
    int32_t ids[20];
    some_ids(m, ids, 20);
    int64_t vocab = afo_model_vocab_size(m);
    float *logits = malloc(sizeof(float) * (size_t)vocab * 9);
    size_t plain, quant;
    afo_kv_cache_options o = afo_kv_cache_defaults();
    CHECK(run_cache(m, &o, ids, 12, 8, logits, &plain, NULL) == AFO_OK);
    o.kv_bits = 4;
    o.kv_group_size = 32;
    CHECK(run_cache(m, &o, ids, 12, 8, logits, &quant, NULL) == AFO_OK);
    double ratio = (double)quant / (double)plain;
    CHECK_MSG(plain > 0 && fabs(ratio - (4.0 + 32.0 / 32) / 16) < 1e-9, "ratio %.6f (%zu / %zu bytes)", ratio, quant, plain);
    free(logits);
    afo_model_free(m);
}

/* A 16-bit cache under float32 compute against the float32 cache,
 * teacher-forced: half the bytes, and logits that move only by the keys'
 * and values' rounding (relative 2^-9 for bfloat16, 2^-11 for float16:
 * on this model ~1e-3 and a few 1e-4 of the logits' spread; the bound
 * leaves 10x room), float16's finer rounding moving them less. bfloat16
 * with 8-bit keys and values stores its scales and biases in bfloat16. */
static void test_16bit_cache(void) {
    int32_t ids[FORCED_PROMPT + FORCED_MAX_STEPS];
    int steps, prompt = FORCED_PROMPT;
    afo_model *m = forced_setup("models/tiny-classics", ids, &steps);
    if (!m) return;
    int64_t vocab = afo_model_vocab_size(m);
    size_t n = (size_t)(vocab * (steps + 1));
    float *ref = malloc(sizeof(float) * n), *bf = malloc(sizeof(float) * n), *fh = malloc(sizeof(float) * n),
          *q8 = malloc(sizeof(float) * n);
    afo_kv_cache_options o = afo_kv_cache_defaults();
    size_t bytes_ref = 0, bytes_bf = 0, bytes_fh = 0, bytes_q8 = 0;
    CHECK(run_cache(m, &o, ids, prompt, steps, ref, &bytes_ref, NULL) == AFO_OK);
    o.kv_dtype = AFO_BFLOAT16;
    CHECK(run_cache(m, &o, ids, prompt, steps, bf, &bytes_bf, NULL) == AFO_OK);
    o.kv_dtype = AFO_FLOAT16;
    CHECK(run_cache(m, &o, ids, prompt, steps, fh, &bytes_fh, NULL) == AFO_OK);
    o.kv_dtype = AFO_BFLOAT16, o.kv_bits = 8, o.kv_group_size = 32, o.quantized_start = 0;
    int quantized = 0;
    CHECK(run_cache(m, &o, ids, prompt, steps, q8, &bytes_q8, &quantized) == AFO_OK);
    CHECK_MSG(bytes_ref > 0 && 2 * bytes_bf == bytes_ref && 2 * bytes_fh == bytes_ref, "bytes %zu, %zu vs %zu",
              bytes_bf, bytes_fh, bytes_ref);
    /* 8 bits a value, one bfloat16 scale and bias per 32 */
    CHECK_MSG(quantized && 32 * bytes_q8 == (size_t)(8 + 32 / 32) * bytes_ref, "8-bit: %zu of %zu bytes", bytes_q8,
              bytes_ref);
    double e_bf = max_rel_diff(bf, ref, steps, vocab, 0), e_fh = max_rel_diff(fh, ref, steps, vocab, 0);
    fprintf(stderr, "  logits vs the float32 cache, max |diff| / spread: bfloat16 %.2e, float16 %.2e\n", e_bf, e_fh);
    CHECK_MSG(e_bf > 0 && e_bf < 0.01, "bfloat16 %.3e", e_bf);
    CHECK_MSG(e_fh > 0 && e_fh < e_bf, "float16 %.3e (bfloat16 %.3e)", e_fh, e_bf);
    free(ref), free(bf), free(fh), free(q8);
    afo_model_free(m);
}

/* Logits of every position of ids fed through a rotating cache in the
 * given chunks. */
static afo_status run_chunks(afo_model *m, const afo_kv_cache_options *o, const int32_t *ids, const int *chunks,
                             int nchunks, float *out) {
    afo_kv_cache *c = NULL;
    AFO_TRY(afo_kv_cache_create_ex(m, 1, o, &c));
    int64_t vocab = afo_model_vocab_size(m), at = 0;
    afo_status st = AFO_OK;
    for (int k = 0; st == AFO_OK && k < nchunks; k++) {
        afo_array *logits = NULL;
        st = afo_model_forward(m, c, ids + at, 1, chunks[k], &logits);
        if (st == AFO_OK) st = afo_array_read(logits, AFO_FLOAT32, out + at * vocab, sizeof(float) * (size_t)(vocab * chunks[k]));
        afo_release(logits);
        at += chunks[k];
    }
    if (st == AFO_OK) CHECK(afo_kv_cache_length(c) == at);
    afo_kv_cache_free(c);
    return st;
}

/* The rotating cache against one forward pass of all ids whose mask keeps,
 * for position p, positions < keep and > p - (max - keep). */
static void check_rotating(const char *dir, int64_t max_kv, int keep) {
    afo_model *m = load(dir, 0);
    if (!m) return;
    /* chunks shorter and longer than the ring, then decoding past it */
    int chunks[32] = {5, 9, 2 * (int)max_kv + 3, 1, 7}, nchunks = 5, total = 0;
    int decode = test_scale() < 1 ? 6 : 20;
    for (int k = 0; k < decode; k++) chunks[nchunks++] = 1;
    for (int k = 0; k < nchunks; k++) total += chunks[k];
    int64_t vocab = afo_model_vocab_size(m), W = max_kv - keep;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)total);
    some_ids(m, ids, total);
    float *got = malloc(sizeof(float) * (size_t)(vocab * total)), *mask = malloc(sizeof(float) * (size_t)(total * total));
    afo_kv_cache_options o = afo_kv_cache_defaults();
    o.max_kv_size = max_kv;
    o.keep = keep;
    CHECK(run_chunks(m, &o, ids, chunks, nchunks, got) == AFO_OK);
    for (int p = 0; p < total; p++)
        for (int j = 0; j < total; j++) mask[p * total + j] = j < keep || j > p - W ? 0.0f : -INFINITY;
    int64_t ms[2] = {total, total};
    afo_array *am = afo_array_from_data(mask, AFO_FLOAT32, 2, ms), *ref = NULL;
    afo_forward_options fo = {.attention_mask = am};
    CHECK(afo_model_forward_ex(m, NULL, ids, 1, total, &fo, &ref) == AFO_OK);
    const float *r = ref ? afo_array_data(ref) : NULL;
    double worst = 0;
    for (int p = 0; r && p < total; p++) {
        double scale = 0, d = 0;
        for (int64_t i = 0; i < vocab; i++)
            scale = fmax(scale, fabs(r[p * vocab + i])), d = fmax(d, fabs(got[p * vocab + i] - r[p * vocab + i]));
        worst = fmax(worst, d / scale);
    }
    fprintf(stderr, "  %s, max_kv_size %lld, keep %d: %d positions, max relative difference %.2e\n", dir,
            (long long)max_kv, keep, total, worst);
    CHECK_MSG(r && worst < 1e-5, "relative difference %.3e", worst);
    /* the masked reference differs from plain causal attention (else the test proves little) */
    afo_array *causal = NULL;
    CHECK(afo_model_forward(m, NULL, ids, 1, total, &causal) == AFO_OK);
    const float *cz = causal ? afo_array_data(causal) : NULL;
    CHECK(cz && r && fabs(cz[(total - 1) * vocab] - r[(total - 1) * vocab]) > 1e-4);
    afo_release(causal), afo_release(ref), afo_release(am);
    free(ids), free(got), free(mask);
    afo_model_free(m);
}

static void test_rotating_vs_masked_forward(void) {
    check_rotating("models/tiny-classics", 16, 4);
    check_rotating("models/tiny-classics", 11, 0);
    char dir[512];
    if (test_shared_path("fixtures/models/gemma3", dir, sizeof dir)) check_rotating(dir, 13, 4); /* window 8 < 13 */
}

/* A rotating cache larger than everything fed is the plain cache, bit for
 * bit. */
static void test_rotating_large_is_plain(void) {
    afo_model *m = load("models/tiny-classics", 0);
    if (!m) return;
    int chunks[] = {7, 20, 1, 1, 1, 5, 1}, total = 36;
    int64_t vocab = afo_model_vocab_size(m);
    int32_t ids[36];
    some_ids(m, ids, total);
    float *a = malloc(sizeof(float) * (size_t)(vocab * total)), *b = malloc(sizeof(float) * (size_t)(vocab * total));
    afo_kv_cache_options o = afo_kv_cache_defaults();
    CHECK(run_chunks(m, &o, ids, chunks, 7, a) == AFO_OK);
    o.max_kv_size = total;
    CHECK(run_chunks(m, &o, ids, chunks, 7, b) == AFO_OK);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)(vocab * total)) == 0);
    free(a), free(b);
    afo_model_free(m);
}

/* Generation far past max_kv_size; truncation once positions were dropped
 * is refused, reset starts over. */
static void test_rotating_generation(void) {
    afo_model *m = load("models/tiny-classics", 0);
    if (!m) return;
    afo_kv_cache_options o = afo_kv_cache_defaults();
    o.max_kv_size = 24;
    afo_kv_cache *c = NULL;
    CHECK(afo_kv_cache_create_ex(m, 1, &o, &c) == AFO_OK);
    int32_t prompt[40];
    some_ids(m, prompt, 40);
    afo_generate_options g = afo_generate_defaults();
    g.max_tokens = test_scale() < 1 ? 30 : 80;
    g.ignore_eos = 1;
    g.prefill_chunk = 16;
    afo_generate_stats st;
    CHECK(afo_generate(m, c, NULL, prompt, 40, &g, NULL, NULL, &st) == AFO_OK);
    CHECK(st.generated_tokens == g.max_tokens && afo_kv_cache_length(c) == 40 + g.max_tokens - 1);
    CHECK(afo_kv_cache_nbytes(c) == (size_t)(2 * afo_model_num_layers(m)) * 24 * 4 * 32 * sizeof(float));
    CHECK(error_names(afo_kv_cache_truncate(c, 10), "rotating"));
    afo_kv_cache_reset(c);
    CHECK(afo_generate(m, c, NULL, prompt, 10, &g, NULL, NULL, &st) == AFO_OK);
    CHECK(afo_kv_cache_truncate(c, 5) == AFO_ERR_INVALID_ARGUMENT); /* 10 + 79 > 24 */
    afo_kv_cache_free(c);
    afo_model_free(m);
}

/* Perplexity through an unquantized cache one token at a time equals the
 * whole-window perplexity; through an 8-bit cache it moves only a little. */
static void test_perplexity_cached(void) {
    afo_model *m = load("models/tiny-classics", 0);
    if (!m) return;
    enum { ctx = 48, windows = 3 };
    int32_t ids[ctx * windows];
    some_ids(m, ids, ctx * windows);
    double whole, cached, q8;
    int64_t preds;
    afo_kv_cache_options o = afo_kv_cache_defaults();
    CHECK(afo_perplexity(m, ids, ctx * windows, ctx, 2, &whole, &preds) == AFO_OK);
    CHECK(afo_perplexity_cached(m, ids, ctx * windows, ctx, 2, 1, &o, &cached, &preds) == AFO_OK &&
          preds == windows * (ctx - 1));
    CHECK_MSG(fabs(cached - whole) < 1e-5 * whole, "nll %.8f vs %.8f", cached, whole);
    o.kv_bits = 8;
    o.kv_group_size = 32;
    CHECK(afo_perplexity_cached(m, ids, ctx * windows, ctx, 2, 5, &o, &q8, &preds) == AFO_OK);
    CHECK_MSG(q8 != whole && fabs(q8 - whole) < 1e-2 * whole, "8-bit nll %.6f vs %.6f", q8, whole);
    CHECK(error_names(afo_perplexity_cached(m, ids, ctx * windows, ctx, 2, 0, &o, &q8, &preds), "chunk"));
    afo_model_free(m);
}

/* Bytes a decode step reads, against a count from the configs: a tied
 * model (tiny-classics: bf16, computing in f32) reads every weight and its
 * cache's f32 keys and values; an untied one reads one embedding row per
 * sequence; a quantized cache reads packed words, scales and biases; a
 * rotating one at most max_kv_size positions. */
static size_t decode_bytes(const afo_model *m, const afo_kv_cache *c) {
    size_t bytes = 0;
    CHECK_MSG(afo_model_decode_bytes(m, c, &bytes) == AFO_OK, "%s", afo_last_error());
    return bytes;
}

static void fill(afo_model *m, afo_kv_cache *c, int64_t batch, int n) {
    int32_t ids[2 * 12];
    some_ids(m, ids, (int)batch * n);
    afo_array *lg = NULL;
    CHECK(afo_model_forward(m, c, ids, batch, n, &lg) == AFO_OK);
    afo_release(lg);
}

static void test_decode_bytes(void) {
    afo_model *m = load("models/tiny-classics", 0);
    if (!m) return;
    /* 6 layers, k and v, 4 kv heads of 32 */
    const size_t params = (size_t)afo_model_num_params(m), f32_position = 6 * 2 * 4 * 32 * 4;
    afo_kv_cache *c = NULL, *q8 = NULL, *ring = NULL;
    afo_kv_cache_options oq = afo_kv_cache_defaults(), orot = afo_kv_cache_defaults();
    oq.kv_bits = 8, oq.kv_group_size = 32;
    orot.max_kv_size = 8, orot.keep = 2;
    CHECK(afo_kv_cache_create(m, 1, &c) == AFO_OK && afo_kv_cache_create_ex(m, 1, &oq, &q8) == AFO_OK &&
          afo_kv_cache_create_ex(m, 1, &orot, &ring) == AFO_OK);
    CHECK(afo_model_weight_bytes(m) == 2 * params);
    CHECK(decode_bytes(m, c) == 2 * params + f32_position);
    fill(m, c, 1, 12);
    CHECK(decode_bytes(m, c) == 2 * params + 13 * f32_position);
    fill(m, q8, 1, 12); /* quantized after this forward: 8 words, one f32 scale and bias a head */
    CHECK(afo_kv_cache_is_quantized(q8) && decode_bytes(m, q8) == 2 * params + 13 * (6 * 2 * 4 * (32 + 4 + 4)));
    fill(m, ring, 1, 12);
    CHECK(decode_bytes(m, ring) == 2 * params + 8 * f32_position);
    size_t unused;
    CHECK(afo_model_decode_bytes(m, NULL, &unused) == AFO_ERR_INVALID_ARGUMENT);
    afo_kv_cache_free(c), afo_kv_cache_free(q8), afo_kv_cache_free(ring);

    char tmp[128], cfg[200], dir[200];
    if (!test_temp_dir("decode-bytes", tmp, sizeof tmp)) goto done;
    snprintf(cfg, sizeof cfg, "%s/config.json", tmp);
    snprintf(dir, sizeof dir, "%s/untied", tmp);
    FILE *f = fopen(cfg, "w");
    if (f) {
        fputs("{\"model_type\": \"llama\", \"vocab_size\": 96, \"hidden_size\": 64, \"intermediate_size\": 96, "
              "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
              "\"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": false, "
              "\"dtype\": \"float32\"}",
              f);
        fclose(f);
    }
    afo_model *u = NULL;
    CHECK_MSG(afo_model_write_random(cfg, dir, -1, 5) == AFO_OK, "%s", afo_last_error());
    u = load(dir, 0);
    if (u) {
        /* per layer q, o 64x64, k, v 32x64, gate, up, down 96x64, two norms; the final norm; the head */
        const size_t layer = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 96 * 64 + 2 * 64, head = 96 * 64;
        const size_t rest = 2 * layer + 64 + head, position = 2 * 2 * 2 * 16 * 4; /* layers, k and v, heads, f32 */
        CHECK(afo_model_weight_bytes(u) == 4 * (rest + 96 * 64));
        afo_kv_cache *c1 = NULL, *c2 = NULL;
        CHECK(afo_kv_cache_create(u, 1, &c1) == AFO_OK && afo_kv_cache_create(u, 2, &c2) == AFO_OK);
        fill(u, c1, 1, 5);
        fill(u, c2, 2, 5);
        CHECK(decode_bytes(u, c1) == 4 * (rest + 64) + 6 * position);
        CHECK(decode_bytes(u, c2) == 4 * (rest + 2 * 64) + 2 * 6 * position);
        CHECK(afo_model_decode_bytes(m, c1, &unused) == AFO_ERR_INVALID_ARGUMENT);
        afo_kv_cache_free(c1), afo_kv_cache_free(c2);
        afo_model_free(u);
    }
    test_remove_tree(tmp);
done:
    afo_model_free(m);
}

int main(void) {
    RUN(test_invalid_options);
    RUN(test_quantized_attention_reference);
    RUN(test_quantized_logits);
    RUN(test_quantized_memory_bf16);
    RUN(test_16bit_cache);
    RUN(test_rotating_large_is_plain);
    RUN(test_rotating_vs_masked_forward);
    RUN(test_rotating_generation);
    RUN(test_perplexity_cached);
    RUN(test_decode_bytes);
    return test_finish();
}
