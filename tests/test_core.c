/* Lazy evaluation semantics, graph inspection and memory accounting. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <afo/afo.h>
#include <sched.h>
#include <string.h>

#include "core/internal.h"
#include "support/test.h"

static void test_lazy_and_shared_subgraphs(void) {
    int64_t s[1] = {4};
    float v[4] = {1, 2, 3, 4};
    afo_array *x = afo_array_from_data(v, AFO_FLOAT32, 1, s);
    afo_array *e = afo_exp(x);               /* shared by both outputs */
    afo_array *a = afo_add(e, e), *b = afo_mul(e, x);
    CHECK(!afo_array_is_evaluated(a) && !afo_array_is_evaluated(e));
    CHECK(afo_array_op(a) != 0 && strcmp(afo_array_op_name(a), "add") == 0 && afo_array_num_inputs(a) == 2);
    CHECK(afo_array_input(a, 0) == e && afo_array_input(a, 1) == e);
    afo_array *outs[2] = {a, b};
    CHECK(afo_eval(outs, 2) == AFO_OK);
    CHECK(afo_array_is_evaluated(a) && afo_array_is_evaluated(b) && afo_array_is_evaluated(e));
    /* evaluated arrays drop their graph: a second eval has nothing to do */
    CHECK(afo_array_num_inputs(a) == 0 && afo_array_op(a) == 0);
    const float *ap = afo_array_data(a);
    CHECK(afo_eval(outs, 2) == AFO_OK && afo_array_data(a) == ap);
    CHECK(fabsf(ap[2] - 2 * expf(3)) < 1e-4f);
    afo_release(x), afo_release(e), afo_release(a), afo_release(b);
}

/* The memory checks read the pool of the device the ops run on (the host's
 * unless AFO_TEST_DEVICE says otherwise): afo_get_active_memory and its
 * siblings report the host pool only, by their contract in memory.h, and
 * with ops on a GPU the host pool would see none of the buffers tested. */
static afo_memory_stats pool(void) {
    afo_memory_stats st;
    afo_get_memory_stats(afo_get_default_device(), &st);
    return st;
}
static size_t active_memory(void) { return pool().active; }
static size_t cache_memory(void) { return pool().cache; }

static void test_intermediates_released(void) {
    afo_clear_cache();
    size_t base = active_memory();
    int64_t s[1] = {1 << 16};
    afo_array *x = afo_full(1.0, AFO_FLOAT32, 1, s);
    afo_array *y = afo_retain(x);
    for (int i = 0; i < 50; i++) {
        afo_array *next = afo_add(y, x);
        afo_release(y);
        y = next;
    }
    afo_reset_device_peak_memory(afo_get_default_device());
    CHECK(afo_eval1(y) == AFO_OK);
    /* a chain of 50 adds needs a few live buffers at a time, not 50 */
    size_t peak = pool().peak - base, one = (size_t)(1 << 16) * 4;
    CHECK_MSG(peak <= 4 * one, "peak %zu bytes for a chain of 256 KiB buffers", peak);
    double first;
    afo_array *f = afo_slice_axis(y, 0, 0, 1);
    CHECK(afo_array_item(f, &first) == AFO_OK && first == 51.0);
    afo_release(f), afo_release(x), afo_release(y);
    CHECK(active_memory() == base);
}

static void test_deep_graph(void) {
    /* 200k nodes: evaluation and release must not recurse on the C stack */
    afo_array *x = afo_scalar(0.0, AFO_FLOAT32), *one = afo_scalar(1.0, AFO_FLOAT32);
    for (int i = 0; i < 200000; i++) {
        afo_array *n = afo_add(x, one);
        afo_release(x);
        x = n;
    }
    double v;
    CHECK(afo_array_item(x, &v) == AFO_OK && v == 200000.0);
    afo_array *y = afo_retain(x);
    for (int i = 0; i < 200000; i++) {
        afo_array *n = afo_add(y, one);
        afo_release(y);
        y = n;
    }
    afo_release(y); /* released unevaluated */
    afo_release(x), afo_release(one);
}

static void test_memory_limit_and_cache(void) {
    afo_clear_cache();
    int64_t s[1] = {1 << 20}; /* 4 MiB of float32 */
    afo_array *a = afo_full(2.0, AFO_FLOAT32, 1, s); /* a broadcast scalar: 64 bytes */
    /* on a GPU the scalar's copy there lives as long as the scalar: make it
     * before measuring */
    CHECK(afo_array_prefetch(a, afo_get_default_device()) == AFO_OK);
    size_t base = active_memory();
    afo_array *b = afo_exp(a);
    CHECK(afo_eval1(b) == AFO_OK);
    CHECK(active_memory() - base >= (size_t)4 << 20);
    afo_release(b);
    CHECK(active_memory() == base);
    CHECK(cache_memory() >= (size_t)4 << 20); /* kept for reuse */
    afo_memory_stats st0, st1;
    afo_get_memory_stats(afo_get_default_device(), &st0);
    b = afo_exp(a);
    CHECK(afo_eval1(b) == AFO_OK);
    afo_get_memory_stats(afo_get_default_device(), &st1);
    CHECK(st1.cache_hits > st0.cache_hits);
    afo_release(b);
    afo_clear_cache();
    CHECK(cache_memory() == 0);

    afo_device dev = afo_get_default_device();
    size_t old = 0;
    afo_set_device_memory_limit(dev, base + ((size_t)6 << 20), &old);
    afo_array *c = afo_exp(a), *d = afo_sin(a);
    afo_array *cd[2] = {c, d};
    afo_status st = afo_eval(cd, 2); /* 8 MiB > 6 MiB limit */
    CHECK(st == AFO_ERR_OUT_OF_MEMORY);
    CHECK(strstr(afo_last_error(), "memory limit") != NULL);
    afo_release(c), afo_release(d);
    c = afo_exp(a);
    CHECK(afo_eval1(c) == AFO_OK); /* a single buffer fits */
    afo_release(c);
    afo_set_device_memory_limit(dev, old, NULL);
    if (dev != AFO_CPU) { /* the cache limit exists for the host pool only */
        afo_release(a);
        return;
    }
    afo_set_cache_limit(1 << 20);
    c = afo_exp(a);
    afo_eval1(c);
    afo_release(c);
    CHECK(cache_memory() <= (size_t)1 << 20);
    afo_set_cache_limit(0);
    afo_release(a);
}

static void test_views_share_buffers(void) {
    int64_t s[2] = {64, 64};
    afo_array *x = afo_full(3.0, AFO_FLOAT32, 2, s);
    afo_array *c = afo_contiguous(x);
    afo_eval1(c);
    size_t before = active_memory();
    afo_array *t = afo_transpose(c, NULL);
    int64_t b[2] = {1, 2}, e[2] = {60, 50}, st[2] = {3, 2};
    afo_array *v = afo_slice(t, b, e, st);
    int64_t r[1] = {-1};
    afo_array *f = afo_reshape(c, 1, r);
    afo_array *outs[3] = {t, v, f};
    CHECK(afo_eval(outs, 3) == AFO_OK);
    CHECK(active_memory() == before); /* no copies */
    CHECK(t->buf == c->buf && v->buf == c->buf && f->buf == c->buf);
    CHECK(!v->contiguous && f->contiguous);
    afo_release(x), afo_release(c), afo_release(t), afo_release(v), afo_release(f);
}

static void test_slice_update_donates(void) {
    int64_t s[2] = {8, 16}, us[2] = {1, 16};
    afo_array *zeros = afo_zeros(AFO_FLOAT32, 2, s);
    afo_array *cache = afo_contiguous(zeros);
    afo_release(zeros);
    afo_eval1(cache);
    void *storage = cache->buf->data;
    afo_array *u = afo_full(5.0, AFO_FLOAT32, 2, us);
    int64_t lo[2] = {3, 0}, hi[2] = {4, 16};
    afo_array *next = afo_slice_update(cache, u, lo, hi, NULL);
    afo_release(cache); /* only the update node holds the cache now */
    afo_eval1(next);
    CHECK(next->buf->data == storage);
    float row[16];
    afo_array *r = afo_slice(next, lo, hi, NULL);
    afo_array_read(r, AFO_FLOAT32, row, sizeof row);
    CHECK(row[0] == 5.0f && row[15] == 5.0f);
    afo_release(r), afo_release(u), afo_release(next);
}

static void test_graph_dump(void) {
    int64_t s[2] = {2, 3};
    afo_array *x = afo_zeros(AFO_FLOAT32, 2, s);
    afo_array *y = afo_exp(x);
    afo_array *z = afo_sum(y, (int[]){1}, 1, 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(afo_graph_dump(f, &z, 1, AFO_DUMP_TEXT) == AFO_OK);
    fclose(f);
    CHECK(strstr(buf, "exp float32[2, 3]") && strstr(buf, "sum(2,0) float32[2]"));
    free(buf);
    f = open_memstream(&buf, &len);
    CHECK(afo_graph_dump(f, &z, 1, AFO_DUMP_DOT) == AFO_OK);
    fclose(f);
    CHECK(strstr(buf, "digraph afo") && strstr(buf, "->"));
    free(buf);
    afo_release(x), afo_release(y), afo_release(z);
}

static void test_threads(void) {
    afo_set_threads(1);
    CHECK(afo_get_threads() == 1);
    afo_set_threads(0);
    CHECK(afo_get_threads() >= 1);
#ifdef __linux__
    /* the default is the CPUs the process may use, not the machine's */
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
        CHECK_MSG(afo_get_threads() == CPU_COUNT(&allowed), "%d threads for %d allowed CPUs", afo_get_threads(),
                  CPU_COUNT(&allowed));
        int first = 0;
        while (!CPU_ISSET(first, &allowed)) first++;
        CPU_ZERO(&one);
        CPU_SET(first, &one);
        if (sched_setaffinity(0, sizeof one, &one) == 0) {
            CHECK_MSG(afo_get_threads() == 1, "%d threads with one CPU allowed", afo_get_threads());
            sched_setaffinity(0, sizeof allowed, &allowed);
        }
    }
#endif
}

/* Fused pairs (afo_op_set_fused): a test pair on the CPU, sub(a, square(x))
 * computed in one pass, taken only where square's value has no other
 * reader, and run apart when the kernel declines. */
static int g_fused_calls, g_decline;

static afo_status sub_of_square(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin;
    g_fused_calls++;
    const afo_array *sq = in[producer], *a = in[1 - producer], *x = sq->in[0];
    if (g_decline || producer != 1 || out->dtype != AFO_FLOAT32 || !a->contiguous || !x->contiguous ||
        a->size != out->size || x->size != out->size)
        return AFO_OK;
    AFO_TRY(afo_array_alloc(out));
    const float *ap = afo_array_ptr(a), *xp = afo_array_ptr(x);
    float *o = afo_array_ptr(out);
    for (int64_t i = 0; i < out->size; i++) o[i] = ap[i] - xp[i] * xp[i];
    *done = true;
    return AFO_OK;
}

/* mul(sub(a, s), m) as one pass, s = square(x) computed along too when
 * the sub's own input is deferred (the chain); g_decline_chain 1 declines
 * the chain, 2 the pair too. */
static int g_chain_calls, g_decline_chain;

static afo_status mul_of_chain(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin;
    g_chain_calls++;
    const afo_array *d = in[producer], *m = in[1 - producer], *sq = d->in[1];
    bool chain = sq->deferred;
    if ((chain && (g_decline_chain || sq->op != AFO_OP_SQUARE)) || (!chain && g_decline_chain > 1) || producer != 0)
        return AFO_OK;
    const afo_array *a = d->in[0], *v = chain ? sq->in[0] : sq;
    if (out->dtype != AFO_FLOAT32 || !a->contiguous || !v->contiguous || !m->contiguous || a->size != out->size ||
        v->size != out->size || m->size != out->size)
        return AFO_OK;
    AFO_TRY(afo_array_alloc(out));
    const float *ap = afo_array_ptr(a), *vp = afo_array_ptr(v), *mp = afo_array_ptr(m);
    float *o = afo_array_ptr(out);
    for (int64_t i = 0; i < out->size; i++) o[i] = (ap[i] - (chain ? vp[i] * vp[i] : vp[i])) * mp[i];
    *done = true;
    return AFO_OK;
}

/* maximum(square(x), square(w)) with either square kept (its value held
 * elsewhere too): the kept ones given their data here, or all declined
 * (g_decline_kept). */
static int g_kept_calls, g_decline_kept, g_fail_kept;

static afo_status max_of_kept_squares(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin, (void)producer;
    g_kept_calls++;
    if (g_decline_kept || out->dtype != AFO_FLOAT32) return AFO_OK;
    for (int i = 0; i < 2; i++)
        if (in[i]->deferred && in[i]->deferred != AFO_DEFER_KEPT) return AFO_OK;
    const float *src[2];
    for (int i = 0; i < 2; i++) {
        afo_array *sq = in[i];
        if (!sq->deferred) {
            src[i] = afo_array_ptr(sq);
            continue;
        }
        AFO_TRY(afo_array_alloc(sq));
        const float *xp = afo_array_ptr(sq->in[0]);
        float *sp = afo_array_ptr(sq);
        for (int64_t j = 0; j < sq->size; j++) sp[j] = xp[j] * xp[j];
        src[i] = sp;
    }
    if (g_fail_kept) return afo_error(AFO_ERR_OUT_OF_MEMORY, "max_of_kept_squares: failing as asked");
    AFO_TRY(afo_array_alloc(out));
    float *o = afo_array_ptr(out);
    for (int64_t j = 0; j < out->size; j++) o[j] = src[0][j] > src[1][j] ? src[0][j] : src[1][j];
    *done = true;
    return AFO_OK;
}

static void check_values(afo_array *y, const float *want, int n, const char *what) {
    float got[8];
    CHECK_MSG(afo_array_read(y, AFO_FLOAT32, got, sizeof(float) * (size_t)n) == AFO_OK, "%s: %s", what,
              afo_last_error());
    for (int i = 0; i < n; i++) CHECK_MSG(got[i] == want[i], "%s: [%d] %g, want %g", what, i, got[i], want[i]);
}

static void test_fused_pairs(void) {
    afo_device before = afo_get_default_device();
    afo_set_default_device(AFO_CPU);
    CHECK(afo_op_get(AFO_OP_SUB) != NULL); /* the table is registered */
    afo_op_set_fused(AFO_CPU, AFO_OP_SUB, AFO_OP_SQUARE, sub_of_square);
    int64_t s[1] = {4};
    float av[4] = {10, 20, 30, 40}, xv[4] = {1, 2, 3, 4}, want[4] = {9, 16, 21, 24};
    afo_array *a = afo_array_from_data(av, AFO_FLOAT32, 1, s), *x = afo_array_from_data(xv, AFO_FLOAT32, 1, s);

    /* taken: square's only reader is the sub */
    int64_t count = afo_fused_count();
    g_fused_calls = 0;
    afo_array *sq = afo_square(x), *y = afo_sub(a, sq);
    afo_release(sq);
    CHECK(afo_eval1(y) == AFO_OK);
    CHECK(g_fused_calls == 1 && afo_fused_count() == count + 1);
    check_values(y, want, 4, "fused");
    afo_release(y);

    /* apart: square's value also feeds an add, or the caller holds it */
    g_fused_calls = 0;
    sq = afo_square(x);
    afo_array *y1 = afo_sub(a, sq), *y2 = afo_add(sq, a), *both[2] = {y1, y2};
    CHECK(afo_eval(both, 2) == AFO_OK && g_fused_calls == 0 && afo_fused_count() == count + 1);
    check_values(y1, want, 4, "shared");
    CHECK(afo_array_is_evaluated(sq));
    afo_release(y1), afo_release(y2);
    y = afo_sub(a, sq);
    CHECK(afo_eval1(y) == AFO_OK && g_fused_calls == 0);
    afo_release(y), afo_release(sq);

    /* declined: the pair runs as two ops, with the same values */
    g_decline = 1;
    sq = afo_square(x);
    y = afo_sub(a, sq);
    afo_release(sq);
    CHECK(afo_eval1(y) == AFO_OK && g_fused_calls == 1 && afo_fused_count() == count + 1);
    check_values(y, want, 4, "declined");
    g_decline = 0;
    afo_release(y);

    /* a chain, mul(sub(a, square(x)), a): one kernel for the three ops, two
     * of them computed along; the chain declined, the square runs first and
     * the mul's kernel takes the sub alone; that declined too, all apart */
    afo_op_set_fused(AFO_CPU, AFO_OP_MUL, AFO_OP_SUB, mul_of_chain);
    float chained[4];
    for (int i = 0; i < 4; i++) chained[i] = want[i] * av[i];
    for (g_decline_chain = 0; g_decline_chain < 3; g_decline_chain++) {
        count = afo_fused_count();
        g_fused_calls = g_chain_calls = 0;
        sq = afo_square(x);
        afo_array *d = afo_sub(a, sq);
        y = afo_mul(d, a);
        afo_release(sq), afo_release(d);
        static const char *const what[3] = {"chain", "chain declined", "chain and pair declined"};
        CHECK(afo_eval1(y) == AFO_OK && g_chain_calls == (g_decline_chain ? 2 : 1));
        CHECK_MSG(afo_fused_count() == count + 2 - g_decline_chain && g_fused_calls == 0,
                  "%s: %lld ops computed along, %d sub-square calls", what[g_decline_chain],
                  (long long)(afo_fused_count() - count), g_fused_calls);
        check_values(y, chained, 4, what[g_decline_chain]);
        afo_release(y);
    }
    afo_release(a), afo_release(x);
    afo_set_default_device(before);
}

static int g_outer_calls;

static afo_status count_and_decline(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)out, (void)in, (void)nin, (void)producer, (void)done;
    g_outer_calls++;
    return AFO_OK;
}

/* Producers that other references hold (a KV cache's update, kept by the
 * cache) computed by their consumer's kernel, which gives them their data;
 * not when the graph reads them elsewhere; declined, each apart. */
static void test_fused_kept(void) {
    afo_device before = afo_get_default_device();
    afo_set_default_device(AFO_CPU);
    CHECK(afo_op_get(AFO_OP_MAXIMUM) != NULL);
    afo_op_set_fused_kept(AFO_CPU, AFO_OP_MAXIMUM, AFO_OP_SQUARE, max_of_kept_squares);
    int64_t s[1] = {4};
    float xv[4] = {1, -5, 3, 0.5f}, wv[4] = {2, 1, -1, -4}, sx[4], sw[4], want[4], plus[4];
    for (int i = 0; i < 4; i++) {
        sx[i] = xv[i] * xv[i], sw[i] = wv[i] * wv[i];
        want[i] = sx[i] > sw[i] ? sx[i] : sw[i];
        plus[i] = sx[i] + want[i];
    }
    afo_array *x = afo_array_from_data(xv, AFO_FLOAT32, 1, s), *w = afo_array_from_data(wv, AFO_FLOAT32, 1, s);
    for (g_decline_kept = 0; g_decline_kept < 2; g_decline_kept++) {
        const char *what = g_decline_kept ? "kept, declined" : "kept";
        int64_t count = afo_fused_count();
        g_kept_calls = 0;
        afo_array *a = afo_square(x), *b = afo_square(w), *y = afo_maximum(a, b);
        CHECK_MSG(afo_eval1(y) == AFO_OK, "%s: %s", what, afo_last_error());
        CHECK_MSG(g_kept_calls == 1 && afo_fused_count() == count + (g_decline_kept ? 0 : 2),
                  "%s: %d calls, %lld ops computed along", what, g_kept_calls,
                  (long long)(afo_fused_count() - count));
        CHECK(afo_array_is_evaluated(a) && afo_array_is_evaluated(b));
        check_values(y, want, 4, what);
        check_values(a, sx, 4, what);
        check_values(b, sw, 4, what);
        /* evaluated, a kept producer is an input like any other */
        afo_array *again = afo_maximum(a, b);
        CHECK(afo_eval1(again) == AFO_OK && g_kept_calls == 1);
        check_values(again, want, 4, what);
        afo_release(a), afo_release(b), afo_release(y), afo_release(again);
    }
    g_decline_kept = 0;

    /* the kernel fails after giving the kept producers data: they are left
     * unevaluated, and a later evaluation computes them afresh */
    g_fail_kept = 1;
    afo_array *fa = afo_square(x), *fb = afo_square(w), *fy = afo_maximum(fa, fb);
    CHECK(afo_eval1(fy) == AFO_ERR_OUT_OF_MEMORY);
    CHECK(!afo_array_is_evaluated(fa) && !afo_array_is_evaluated(fb) && !afo_array_is_evaluated(fy));
    g_fail_kept = 0;
    CHECK(afo_eval1(fy) == AFO_OK);
    check_values(fy, want, 4, "kept, after a failure");
    check_values(fa, sx, 4, "kept, after a failure");
    afo_release(fa), afo_release(fb), afo_release(fy);

    /* the graph reads square(x) twice: only square(w) comes along */
    int64_t count = afo_fused_count();
    g_kept_calls = 0;
    afo_array *a = afo_square(x), *b = afo_square(w), *y = afo_maximum(a, b), *z = afo_add(a, y);
    afo_release(b);
    CHECK(afo_eval1(z) == AFO_OK && g_kept_calls == 1 && afo_fused_count() == count + 1);
    check_values(z, plus, 4, "kept beside another reader");
    afo_release(a), afo_release(y), afo_release(z);

    /* a producer with kept producers of its own is not taken along by its
     * consumer, whose kernel would not know to give them data */
    afo_op_set_fused_kept(AFO_CPU, AFO_OP_ADD, AFO_OP_MAXIMUM, count_and_decline);
    g_kept_calls = g_outer_calls = 0;
    a = afo_square(x), b = afo_square(w), y = afo_maximum(a, b), z = afo_add(y, a);
    afo_release(a), afo_release(b), afo_release(y);
    CHECK(afo_eval1(z) == AFO_OK && g_outer_calls == 0 && g_kept_calls == 1);
    check_values(z, plus, 4, "kept inside kept");
    afo_release(z), afo_release(x), afo_release(w);
    afo_set_default_device(before);
}

/* Device names, refusals, and that work recorded on the CPU just runs. */
static void test_devices(void) {
    afo_device before = afo_get_default_device();
    CHECK(afo_device_from_name("cpu") == AFO_CPU && afo_device_from_name("cuda") == AFO_CUDA);
    CHECK(afo_device_from_name("tpu") == -1 && afo_device_from_name(NULL) == -1);
    CHECK(afo_set_default_device((afo_device)7) == AFO_ERR_INVALID_ARGUMENT);
    if (!afo_device_available(AFO_CUDA)) {
        CHECK(afo_set_default_device(AFO_CUDA) == AFO_ERR_UNSUPPORTED);
        CHECK_MSG(strlen(afo_last_error()) > 10, "no reason given: '%s'", afo_last_error());
        CHECK(afo_recording_new(AFO_CUDA) == NULL);
    }
    CHECK(afo_get_default_device() == before);
    afo_device_info info;
    CHECK(afo_device_get_info(AFO_CPU, &info) == AFO_OK && info.total_memory > 0 && info.name[0]);
    CHECK(afo_device_get_info(AFO_CPU, NULL) == AFO_ERR_INVALID_ARGUMENT);
    afo_recording *r = afo_recording_new(AFO_CPU);
    afo_set_default_device(AFO_CPU);
    afo_array *x = afo_scalar(3, AFO_FLOAT32), *y = NULL;
    double v = 0;
    CHECK(r && afo_record_begin(r) == AFO_OK);
    y = afo_mul(x, x);
    CHECK(afo_eval1(y) == AFO_OK);
    CHECK(afo_record_end(r) == AFO_OK);
    CHECK(afo_array_item(y, &v) == AFO_OK && v == 9);
    CHECK(afo_record_end(NULL) == AFO_ERR_INVALID_ARGUMENT);
    afo_set_default_device(before);
    afo_release(x);
    afo_release(y);
    afo_recording_free(r);
}

int main(void) {
    RUN(test_devices);
    RUN(test_lazy_and_shared_subgraphs);
    RUN(test_intermediates_released);
    RUN(test_deep_graph);
    RUN(test_memory_limit_and_cache);
    RUN(test_views_share_buffers);
    RUN(test_slice_update_donates);
    RUN(test_graph_dump);
    RUN(test_fused_pairs);
    RUN(test_fused_kept);
    RUN(test_threads);
    return test_finish();
}
