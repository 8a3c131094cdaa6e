/* Positions read when the graph runs: afo_rope_at, afo_slice_update_at and
 * afo_scaled_dot_product_attention_at against the ops with the same
 * position fixed when the graph is built, the decode step built on them
 * (model_forward_at) against afo_model_forward token by token, and
 * afo_array_write, which moves the positions between replays. Runs on the
 * default device (AFO_TEST_DEVICE=cuda for the GPU's kernels). */
#include <afo/afo.h>
#include <string.h>

#include "core/internal.h"
#include "models/models.h"
#include "support/test.h"

static afo_array *random_array(afo_dtype dt, int nd, const int64_t *shape) {
    int64_t n = afo_shape_size(nd, shape);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = (float)test_uniform(-1, 1);
    afo_array *f = afo_array_from_data(v, AFO_FLOAT32, nd, shape), *a = afo_astype(f, dt);
    afo_release(f);
    free(v);
    return a;
}

static afo_array *position_of(int32_t p) { return afo_array_from_data(&p, AFO_INT32, 1, (int64_t[]){1}); }

/* max |a - b| over max |b|, both read as float32 */
static double rel_diff(afo_array *a, afo_array *b) {
    int64_t n = afo_array_size(b);
    if (afo_array_size(a) != n) return INFINITY;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    double worst = 0, top = 0;
    if (afo_array_read(a, AFO_FLOAT32, x, sizeof(float) * (size_t)n) != AFO_OK ||
        afo_array_read(b, AFO_FLOAT32, y, sizeof(float) * (size_t)n) != AFO_OK)
        worst = INFINITY;
    for (int64_t i = 0; worst < INFINITY && i < n; i++) {
        double e = fabs((double)x[i] - y[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        if (fabs(y[i]) > top) top = fabs(y[i]);
    }
    free(x), free(y);
    return worst / (top > 0 ? top : 1);
}

static void test_rope_at(void) {
    int64_t shape[4] = {1, 3, 4, 64}, half = 24;
    float f[24];
    for (int i = 0; i < 24; i++) f[i] = (float)(1.0 + 0.5 * i);
    afo_array *freqs = afo_array_from_data(f, AFO_FLOAT32, 1, &half);
    const int32_t positions[3] = {0, 7, 100000};
    for (int dt = 0; dt < 2; dt++)
        for (int k = 0; k < 3; k++)
            for (int trad = 0; trad < 2; trad++) {
                afo_array *x = random_array(dt ? AFO_BFLOAT16 : AFO_FLOAT32, 4, shape), *p = position_of(positions[k]);
                afo_array *fq = trad ? freqs : NULL;
                int dims = trad ? 48 : 64;
                afo_array *want = afo_rope(x, dims, trad, 10000, 0.5f, positions[k], fq);
                afo_array *got = afo_rope_at(x, dims, trad, 10000, 0.5f, p, fq);
                double e = rel_diff(got, want);
                CHECK_MSG(e == 0, "rope_at %s position %d traditional %d: %g", dt ? "bf16" : "f32", positions[k],
                          trad, e);
                afo_release_n((afo_array *[]){x, p, want, got}, 4);
            }
    afo_release(freqs);
}

static void test_slice_update_at(void) {
    int64_t shape[4] = {2, 3, 10, 8}, ushape[4] = {2, 3, 2, 8};
    /* position -> where the slot lands: clamped into [0, 10 - 2] */
    const int32_t asked[4] = {0, 5, -3, 9}, lands[4] = {0, 5, 0, 8};
    for (int k = 0; k < 4; k++) {
        afo_array *x = random_array(AFO_FLOAT32, 4, shape), *u = random_array(AFO_FLOAT32, 4, ushape);
        afo_array *p = position_of(asked[k]);
        int64_t b[4] = {0, 0, lands[k], 0}, e[4] = {2, 3, lands[k] + 2, 8};
        afo_array *want = afo_slice_update(x, u, b, e, NULL), *got = afo_slice_update_at(x, u, 2, p);
        double err = rel_diff(got, want);
        CHECK_MSG(err == 0, "slice_update_at position %d: %g", asked[k], err);
        afo_release_n((afo_array *[]){x, u, p, want, got}, 5);
    }
    /* a cache slot written in place, converting the update's dtype */
    afo_array *cache = afo_zeros(AFO_BFLOAT16, 4, shape), *u = random_array(AFO_FLOAT32, 3, (int64_t[]){3, 1, 8});
    afo_array *p = position_of(4);
    afo_array *w = afo_slice_update_at(cache, u, -2, p);
    afo_array *slot = afo_slice_axis(w, 2, 4, 5), *rest = afo_slice_axis(w, 2, 5, 10);
    afo_array *uw = afo_broadcast_to(u, 4, (int64_t[]){2, 3, 1, 8});
    CHECK_MSG(rel_diff(slot, uw) < 4e-3, "slice_update_at into bfloat16: %g", rel_diff(slot, uw));
    double zeros = 0;
    afo_array *sum = afo_sum(rest, NULL, 0, 0);
    CHECK(afo_array_item(sum, &zeros) == AFO_OK && zeros == 0);
    afo_release_n((afo_array *[]){cache, u, p, w, slot, rest, uw, sum}, 8);
}

/* Attention at a position over a whole buffer equals attention over the
 * buffer cut to the last query's position, whatever the slots past it hold
 * (here NaN: a kernel reading them would spread it). */
static void test_sdpa_at(void) {
    struct {
        int64_t B, Hq, Hkv, Lq, cap, D;
        int32_t position;
        int window;
        afo_dtype dt;
    } cases[] = {
        {1, 8, 2, 1, 300, 64, 0, 0, AFO_FLOAT32},    {1, 8, 2, 1, 300, 64, 130, 0, AFO_FLOAT32},
        {2, 4, 4, 1, 1024, 128, 1000, 0, AFO_BFLOAT16}, {1, 4, 2, 5, 64, 32, 20, 0, AFO_FLOAT32},
        {1, 4, 1, 1, 256, 64, 200, 16, AFO_FLOAT32},   {1, 2, 2, 3, 40, 16, 37, 0, AFO_FLOAT16},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int64_t qs[4] = {cases[c].B, cases[c].Hq, cases[c].Lq, cases[c].D};
        int64_t ks[4] = {cases[c].B, cases[c].Hkv, cases[c].cap, cases[c].D};
        int64_t live = cases[c].position + cases[c].Lq;
        afo_array *q = random_array(cases[c].dt, 4, qs), *k = random_array(cases[c].dt, 4, ks);
        afo_array *v = random_array(cases[c].dt, 4, ks);
        afo_array *nan = afo_full(NAN, cases[c].dt, 4, (int64_t[]){ks[0], ks[1], ks[2] - live, ks[3]});
        afo_array *p = position_of(cases[c].position);
        int64_t b[4] = {0, 0, live, 0};
        afo_array *kp = afo_slice_update(k, nan, b, ks, NULL), *vp = afo_slice_update(v, nan, b, ks, NULL);
        afo_array *kc = afo_slice_axis(k, 2, 0, live), *vc = afo_slice_axis(v, 2, 0, live);
        float scale = 1.0f / sqrtf((float)cases[c].D);
        afo_array *want = afo_scaled_dot_product_attention(q, kc, vc, scale, NULL, 1, cases[c].window);
        afo_array *got = afo_scaled_dot_product_attention_at(q, kp, vp, scale, NULL, cases[c].window, p);
        double e = rel_diff(got, want), bound = cases[c].dt == AFO_FLOAT32 ? 1e-5 : 1e-2;
        CHECK_MSG(e <= bound, "sdpa_at case %zu: %g > %g", c, e, bound);
        afo_release_n((afo_array *[]){q, k, v, nan, p, kp, vp, kc, vc, want, got}, 11);
    }
}

/* Greedy decoding of the demo model, each step once through
 * afo_model_forward and once through model_forward_at on a second cache
 * whose id and position arrays are rewritten in place every step. */
static void test_forward_at(void) {
    afo_model *m = NULL;
    if (afo_model_load("models/tiny-classics", NULL, &m) != AFO_OK) {
        CHECK_MSG(0, "demo model: %s", afo_last_error());
        return;
    }
    afo_kv_cache *plain = NULL, *at = NULL;
    CHECK(afo_kv_cache_create(m, 1, &plain) == AFO_OK && afo_kv_cache_create(m, 1, &at) == AFO_OK);
    int32_t prompt[4] = {1, 1785, 28, 300};
    afo_array *lp = NULL, *la = NULL;
    bool picked = false;
    CHECK(afo_model_forward(m, plain, prompt, 1, 4, &lp) == AFO_OK);
    CHECK(afo_model_forward(m, at, prompt, 1, 4, &la) == AFO_OK);
    afo_release(la);
    /* buffers of their own (afo_zeros alone is a view of a shared scalar) */
    afo_array *z = afo_zeros(AFO_INT32, 2, (int64_t[]){1, 1}), *id = afo_contiguous(z), *pos = afo_contiguous(z);
    afo_release(z);
    CHECK(kv_reserve(at, 12) == AFO_OK);
    int32_t next = 0;
    double worst = 0;
    for (int step = 0; step < 8 && lp; step++) {
        afo_array *last = afo_slice_axis(lp, 1, afo_array_dim(lp, 1) - 1, afo_array_dim(lp, 1));
        afo_array *flat = afo_reshape(last, 1, (int64_t[]){-1}), *best = afo_argmax(flat, 0, 0);
        double v = 0;
        CHECK(afo_array_item(best, &v) == AFO_OK);
        next = (int32_t)v;
        afo_release_n((afo_array *[]){last, flat, best}, 3);
        int32_t p = (int32_t)afo_kv_cache_length(at);
        CHECK(afo_array_write(id, &next, sizeof next) == AFO_OK && afo_array_write(pos, &p, sizeof p) == AFO_OK);
        afo_release(lp);
        lp = NULL;
        CHECK(afo_model_forward(m, plain, &next, 1, 1, &lp) == AFO_OK);
        CHECK(model_forward_at(m, at, id, pos, NULL, &picked, &la) == AFO_OK && !picked);
        double e = lp && la ? rel_diff(la, lp) : INFINITY;
        if (!(e <= worst)) worst = e;
        afo_release(la);
        la = NULL;
    }
    CHECK_MSG(worst <= 1e-5, "logits at a device position differ by %g", worst);
    CHECK(afo_kv_cache_length(at) == afo_kv_cache_length(plain));
    /* no room left: the step refuses instead of writing past the buffers */
    kv_advance(at, kv_capacity(at) - afo_kv_cache_length(at));
    CHECK(model_forward_at(m, at, id, pos, NULL, &picked, &la) == AFO_ERR_UNSUPPORTED && !la);
    afo_release_n((afo_array *[]){lp, id, pos}, 3);
    afo_kv_cache_free(plain);
    afo_kv_cache_free(at);
    afo_model_free(m);
}

static void test_errors(void) {
    afo_array *x = afo_zeros(AFO_FLOAT32, 4, (int64_t[]){1, 2, 4, 8});
    int32_t two[2] = {1, 2};
    afo_array *pf = afo_zeros(AFO_FLOAT32, 1, (int64_t[]){1}), *p2 = afo_array_from_data(two, AFO_INT32, 1, (int64_t[]){2});
    afo_array *bad[2] = {pf, p2};
    for (int i = 0; i < 2; i++) {
        afo_array *r = afo_rope_at(x, 8, 0, 10000, 1, bad[i], NULL);
        CHECK(!r && strstr(afo_last_error(), "rope") && strstr(afo_last_error(), "int32"));
        r = afo_scaled_dot_product_attention_at(x, x, x, 1, NULL, 0, bad[i]);
        CHECK(!r && strstr(afo_last_error(), "scaled_dot_product_attention"));
        r = afo_slice_update_at(x, x, 2, bad[i]);
        CHECK(!r && strstr(afo_last_error(), "slice_update_at"));
    }
    afo_array *p = position_of(0), *big = afo_zeros(AFO_FLOAT32, 4, (int64_t[]){1, 2, 5, 8});
    CHECK(!afo_slice_update_at(x, x, 4, p) && strstr(afo_last_error(), "axis"));
    CHECK(!afo_slice_update_at(x, big, 2, p) && strstr(afo_last_error(), "fit"));
    CHECK(!afo_rope_at(x, 8, 0, 10000, 1, NULL, NULL));
    /* afo_array_write: the size must match; views are refused */
    int32_t v = 3;
    CHECK(afo_array_write(p, &v, 2) != AFO_OK && strstr(afo_last_error(), "bytes"));
    afo_array *t = afo_transpose(x, NULL);
    float buf[64] = {0};
    CHECK(afo_array_write(t, buf, sizeof buf) != AFO_OK && strstr(afo_last_error(), "strided"));
    CHECK(afo_array_write(p, &v, sizeof v) == AFO_OK);
    double got = 0;
    CHECK(afo_array_item(p, &got) == AFO_OK && got == 3);
    /* no gradient through a position known only at run time */
    afo_array *g = NULL, *u = afo_full(1, AFO_FLOAT32, 1, (int64_t[]){8});
    afo_array *s = afo_slice_update_at(x, u, 2, p), *ct = afo_full(1, AFO_FLOAT32, 4, (int64_t[]){1, 2, 4, 8});
    CHECK(s && afo_vjp(s, ct, &u, 1, &g) != AFO_OK && strstr(afo_last_error(), "gradient"));
    afo_release_n((afo_array *[]){x, pf, p2, p, big, t, s, g, u, ct}, 10);
}

int main(void) {
    test_seed(11);
    RUN(test_rope_at);
    RUN(test_slice_update_at);
    RUN(test_sdpa_at);
    RUN(test_forward_at);
    RUN(test_errors);
    return test_finish();
}
