/* The CUDA shape, reduction, indexing and random kernels against the CPU
 * backend, over dtypes, odd and empty shapes, strided inputs (transposed,
 * reversed and stepped, broadcast views), negative axes and keepdims; that
 * slice_update reuses its input's GPU buffer when it may; and that a chain
 * of GPU ops brings nothing to the host until the result is read. Skips
 * (exit 77) on machines without a GPU. */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "afo/afo.h"
#include "core/internal.h"
#include "support/devcheck.h"
#include "support/test.h"

static const afo_dtype k_dtypes[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16, AFO_FLOAT64, AFO_INT32, AFO_INT64};
#define NDT ((int)(sizeof k_dtypes / sizeof k_dtypes[0]))

/* ---- inputs seen through views: the view ops run on the device too ---- */
enum { PLAIN, TRANSPOSED, STEPPED, BROADCAST, NMODES };
static const char *k_modes[] = {"", " transposed", " stepped", " broadcast"};

/* A host array that prep(.., mode) turns into an array of `shape`. */
static afo_array *make_input(afo_dtype dt, int ndim, const int64_t *shape, int mode, double lo, double hi) {
    int64_t s[AFO_MAX_DIMS];
    for (int d = 0; d < ndim; d++) s[d] = shape[d];
    if (mode == TRANSPOSED)
        for (int d = 0; d < ndim; d++) s[d] = shape[ndim - 1 - d];
    if (mode == STEPPED && ndim) s[ndim - 1] = 2 * shape[ndim - 1];
    if (mode == BROADCAST && ndim) s[0] = 1;
    return devcheck_random(dt, ndim, s, lo, hi);
}

/* Reverses axis 0 and takes every other element of the last axis. */
static afo_array *stepped(afo_array *x) {
    int nd = afo_array_ndim(x);
    int64_t start[AFO_MAX_DIMS] = {0}, stop[AFO_MAX_DIMS], step[AFO_MAX_DIMS];
    for (int d = 0; d < nd; d++) stop[d] = afo_array_shape(x)[d], step[d] = 1;
    start[0] = -1, stop[0] = -afo_array_shape(x)[0] - 1, step[0] = -1;
    step[nd - 1] = 2;
    return afo_slice(x, start, stop, step);
}

static afo_array *prep(afo_array *x, int mode, int ndim, const int64_t *shape) {
    switch (mode) {
    case TRANSPOSED: return afo_transpose(x, NULL);
    case STEPPED: return stepped(x);
    case BROADCAST: return afo_broadcast_to(x, ndim, shape);
    default: return afo_retain(x);
    }
}

/* ---------------------------------------------------------------- shape */

typedef struct shape_case {
    int kind, mode, ndim;
    int64_t shape[4];
} shape_case;
enum { RESHAPE, TRANSPOSE, CONTIG, SLICE_NEG, BCAST, STOPGRAD, SQUEEZE, CONCAT, SLICE_UPDATE, NSHAPE };
static const char *k_shape_names[] = {"reshape", "transpose", "contiguous", "slice", "broadcast_to",
                                      "stop_gradient", "expand+squeeze", "concatenate", "slice_update"};

static afo_array *build_shape(afo_array *const *in, void *ctx) {
    const shape_case *c = ctx;
    afo_array *x = prep(in[0], c->mode, c->ndim, c->shape), *r = NULL;
    int nd = c->ndim;
    switch (c->kind) {
    case RESHAPE: {
        int64_t flat[2] = {-1, 1};
        r = afo_reshape(x, 2, flat);
        break;
    }
    case TRANSPOSE: {
        int perm[4] = {1, 0, 2, 3};
        r = nd >= 2 ? afo_transpose(x, perm) : afo_retain(x);
        break;
    }
    case CONTIG: r = afo_contiguous(x); break;
    case SLICE_NEG: {
        int64_t start[4] = {0}, stop[4], step[4];
        for (int d = 0; d < nd; d++) stop[d] = c->shape[d], step[d] = 1;
        start[nd - 1] = -2, stop[nd - 1] = -c->shape[nd - 1] - 1, step[nd - 1] = -3;
        afo_array *s = afo_slice(x, start, stop, step);
        r = afo_contiguous(s);
        afo_release(s);
        break;
    }
    case BCAST: {
        int64_t s[5] = {2};
        for (int d = 0; d < nd; d++) s[d + 1] = c->shape[d];
        r = afo_broadcast_to(x, nd + 1, s);
        break;
    }
    case STOPGRAD: r = afo_stop_gradient(x); break;
    case SQUEEZE: {
        afo_array *e = afo_expand_dims(x, -1);
        r = afo_squeeze(e, nd);
        afo_release(e);
        break;
    }
    case CONCAT: {
        afo_array *xs[3] = {x, in[1], x};
        r = afo_concatenate(xs, 3, -1);
        break;
    }
    default: { /* strided region of a copy of x, update broadcast along axis 0 */
        int64_t start[4] = {0}, stop[4], step[4];
        for (int d = 0; d < nd; d++) stop[d] = c->shape[d], step[d] = 1;
        start[nd - 1] = 1, step[nd - 1] = 2;
        r = afo_slice_update(x, in[2], start, stop, step);
    }
    }
    afo_release(x);
    return r;
}

static void test_shape_ops(void) {
    int64_t shapes[][4] = {{3, 5, 7}, {1, 4, 9}, {2, 1, 1}, {6, 2, 0}};
    char what[128];
    for (int t = 0; t < NDT; t++)
        for (int s = 0; s < 4; s++)
            for (int mode = 0; mode < NMODES; mode++)
                for (int kind = 0; kind < NSHAPE; kind++) {
                    shape_case c = {kind, mode, 3, {shapes[s][0], shapes[s][1], shapes[s][2]}};
                    int64_t other[3] = {c.shape[0], c.shape[1], 3};
                    int64_t region[3] = {c.shape[1], (c.shape[2] + 0) / 2};
                    afo_array *in[3] = {make_input(k_dtypes[t], 3, c.shape, mode, -50, 50),
                                        devcheck_random(AFO_INT32, 3, other, -50, 50),
                                        devcheck_random(AFO_FLOAT32, 2, region, -50, 50)};
                    snprintf(what, sizeof what, "%s %s [%lld,%lld,%lld]%s", k_shape_names[kind],
                             afo_dtype_name(k_dtypes[t]), (long long)c.shape[0], (long long)c.shape[1],
                             (long long)c.shape[2], k_modes[mode]);
                    devcheck(what, AFO_CUDA, build_shape, &c, in, 3, 0, 0);
                    devcheck_release(in, 3);
                }
}

/* ---------------------------------------------------------------- reductions */

typedef struct red_case {
    afo_array *(*fn)(afo_array *, const int *, int, int);
    int mode, ndim, naxes, keepdims;
    int axes[3];
    int64_t shape[4];
} red_case;

static afo_array *build_reduce(afo_array *const *in, void *ctx) {
    const red_case *c = ctx;
    afo_array *x = prep(in[0], c->mode, c->ndim, c->shape);
    afo_array *r = c->fn ? c->fn(x, c->naxes ? c->axes : NULL, c->naxes, c->keepdims)
                         : afo_argmax(x, c->axes[0], c->keepdims);
    afo_release(x);
    return r;
}

static void test_reductions(void) {
    struct { const char *name; afo_array *(*fn)(afo_array *, const int *, int, int); bool exact, floats; } ops[] = {
        {"sum", afo_sum, false, false}, {"max", afo_max, true, false}, {"min", afo_min, true, false},
        {"logsumexp", afo_logsumexp, false, true}, {"argmax", NULL, true, false}};
    /* reductions accumulate in double as on the CPU: only the order of
     * the additions differs, then one rounding to the output dtype */
    double rtol[] = {1e-6, 1e-3, 8e-3, 1e-12, 0, 0}, atol[] = {1e-5, 2e-3, 3e-2, 1e-12, 0, 0};
    struct { int naxes, axes[3]; } sets[] = {{1, {-1}}, {1, {0}}, {2, {0, 2}}, {2, {-1, 1}}, {0, {0}}};
    int64_t shapes[][3] = {{3, 17, 41}, {1, 5, 1}, {4, 1, 3000}, {2, 3, 0}};
    char what[160];
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
        for (int t = 0; t < NDT; t++)
            for (int s = 0; s < 4; s++)
                for (size_t a = 0; a < sizeof sets / sizeof sets[0]; a++)
                    for (int mode = 0; mode < NMODES; mode++)
                        for (int keep = 0; keep < 2; keep++) {
                            if (!ops[o].fn && sets[a].naxes != 1) continue;
                            red_case c = {ops[o].fn, mode, 3, sets[a].naxes, keep,
                                          {sets[a].axes[0], sets[a].axes[1]}, {shapes[s][0], shapes[s][1], shapes[s][2]}};
                            /* argmax refuses an empty axis on both devices */
                            if (!ops[o].fn && shapes[s][2] == 0 && (c.axes[0] == -1 || c.axes[0] == 2)) continue;
                            afo_array *x = make_input(k_dtypes[t], 3, c.shape, mode, -20, 20);
                            snprintf(what, sizeof what, "%s %s [%lld,%lld,%lld] axes %d(%d)%s%s", ops[o].name,
                                     afo_dtype_name(k_dtypes[t]), (long long)c.shape[0], (long long)c.shape[1],
                                     (long long)c.shape[2], c.axes[0], c.naxes, keep ? " keepdims" : "", k_modes[mode]);
                            /* integer inputs: exact, but logsumexp's float32 result
                             * is rounded like a float32 sum */
                            bool ex = ops[o].exact || (t >= 4 && !ops[o].floats);
                            int tt = t >= 4 ? 0 : t;
                            devcheck(what, AFO_CUDA, build_reduce, &c, &x, 1, ex ? 0 : rtol[tt], ex ? 0 : atol[tt]);
                            afo_release(x);
                        }
}

/* Vocabulary-sized rows with ties (first index wins) and NaN rules. */
static void test_argmax_rows(void) {
    int64_t shape[2] = {3, 151936};
    afo_dtype dts[] = {AFO_FLOAT32, AFO_BFLOAT16, AFO_FLOAT16, AFO_INT32};
    for (int t = 0; t < 4; t++) {
        afo_array *ints = devcheck_random(AFO_INT32, 2, shape, 0, 300), *x = afo_astype(ints, dts[t]); /* many ties */
        afo_release(ints);
        red_case c = {NULL, PLAIN, 2, 1, 0, {-1}, {3, 151936}};
        char what[64];
        snprintf(what, sizeof what, "argmax vocab rows %s", afo_dtype_name(dts[t]));
        devcheck(what, AFO_CUDA, build_reduce, &c, &x, 1, 0, 0);
        afo_release(x);
    }
    /* the other reductions over long rows, which several blocks share (the
     * last one merges their states), with a NaN in a late block of row 1 */
    float *v_long = malloc(sizeof(float) * 3 * 151936);
    for (int64_t i = 0; i < 3 * 151936; i++) v_long[i] = (float)((i * 7919) % 4001) / 200.0f - 10.0f;
    v_long[151936 + 140000] = NAN;
    afo_array *xl = afo_array_from_data(v_long, AFO_FLOAT32, 2, shape);
    free(v_long);
    struct { const char *name; afo_array *(*fn)(afo_array *, const int *, int, int); } long_ops[] = {
        {"sum", afo_sum}, {"max", afo_max}, {"min", afo_min}, {"logsumexp", afo_logsumexp}, {"argmax", NULL}};
    for (size_t o = 0; o < sizeof long_ops / sizeof long_ops[0]; o++) {
        red_case c = {long_ops[o].fn, PLAIN, 2, 1, 0, {-1}, {3, 151936}};
        char what[64];
        snprintf(what, sizeof what, "%s of long rows, a NaN in one", long_ops[o].name);
        devcheck(what, AFO_CUDA, build_reduce, &c, &xl, 1, 1e-6, 1e-5);
    }
    afo_release(xl);
    /* NaN: leading NaN wins argmax; later ones are skipped; max/min/sum propagate */
    double v[2][5] = {{NAN, 1, 5, 2, 5}, {1, 5, NAN, 5, 2}};
    int64_t s[2] = {2, 5};
    afo_array *x = afo_array_from_data(v, AFO_FLOAT64, 2, s);
    afo_array *xf = afo_astype(x, AFO_FLOAT32);
    afo_array *ins[2] = {x, xf};
    for (int i = 0; i < 2; i++) {
        red_case am = {NULL, PLAIN, 2, 1, 0, {1}, {2, 5}}, mx = {afo_max, PLAIN, 2, 1, 0, {1}, {2, 5}};
        red_case sm = {afo_sum, PLAIN, 2, 1, 1, {1}, {2, 5}}, ls = {afo_logsumexp, PLAIN, 2, 1, 0, {1}, {2, 5}};
        devcheck("argmax with NaN", AFO_CUDA, build_reduce, &am, &ins[i], 1, 0, 0);
        devcheck("max with NaN", AFO_CUDA, build_reduce, &mx, &ins[i], 1, 0, 0);
        devcheck("sum with NaN", AFO_CUDA, build_reduce, &sm, &ins[i], 1, 0, 0);
        devcheck("logsumexp with NaN", AFO_CUDA, build_reduce, &ls, &ins[i], 1, 0, 0);
    }
    devcheck_release(ins, 2);
}

typedef struct softmax_case {
    int axis, mode, ndim;
    int64_t shape[3];
} softmax_case;

static afo_array *build_softmax(afo_array *const *in, void *ctx) {
    const softmax_case *c = ctx;
    afo_array *x = prep(in[0], c->mode, c->ndim, c->shape);
    afo_array *r = afo_softmax(x, c->axis);
    afo_release(x);
    return r;
}

static void test_softmax(void) {
    /* float32 math for the half types on both sides; the CPU's vectorised
     * exp differs from CUDA's expf by a few ulps */
    double rtol[] = {2e-6, 1e-3, 8e-3, 1e-13, 2e-6, 2e-6}, atol[] = {1e-9, 1e-6, 1e-5, 1e-16, 1e-9, 1e-9};
    int64_t shapes[][3] = {{7, 3, 33}, {2, 1, 1000}, {1, 1, 151936}, {3, 5, 1}};
    int axes[] = {-1, 0, 1};
    char what[128];
    for (int t = 0; t < NDT; t++)
        for (int s = 0; s < 4; s++)
            for (int a = 0; a < 3; a++)
                for (int mode = 0; mode < NMODES; mode++) {
                    if (s == 2 && (a > 0 || mode == TRANSPOSED)) continue;
                    softmax_case c = {axes[a], mode, 3, {shapes[s][0], shapes[s][1], shapes[s][2]}};
                    afo_array *x = make_input(k_dtypes[t], 3, c.shape, mode, -12, 12);
                    snprintf(what, sizeof what, "softmax %s [%lld,%lld,%lld] axis %d%s", afo_dtype_name(k_dtypes[t]),
                             (long long)c.shape[0], (long long)c.shape[1], (long long)c.shape[2], axes[a], k_modes[mode]);
                    /* the CPU sums a row in float32 lanes: over 151936 terms
                     * its sum is off by ~1e-5 relative, the GPU's tree less */
                    double rt = s == 2 && t != 3 ? fmax(rtol[t], 5e-5) : rtol[t];
                    devcheck(what, AFO_CUDA, build_softmax, &c, &x, 1, rt, atol[t]);
                    afo_release(x);
                }
}

/* ---------------------------------------------------------------- indexing */

typedef struct index_case {
    int kind, axis, transpose_idx;
} index_case;
enum { TAKE, TAKE_ALONG, SCATTER_ADD };

static afo_array *build_index(afo_array *const *in, void *ctx) {
    const index_case *c = ctx;
    afo_array *idx = c->transpose_idx ? afo_transpose(in[1], NULL) : afo_retain(in[1]), *r = NULL;
    switch (c->kind) {
    case TAKE: r = afo_take(in[0], idx, c->axis); break;
    case TAKE_ALONG: r = afo_take_along_axis(in[0], idx, c->axis); break;
    default: r = afo_scatter_add(in[0], idx, in[2], c->axis); break;
    }
    afo_release(idx);
    return r;
}

static void test_take(void) {
    afo_dtype tables[] = {AFO_BFLOAT16, AFO_FLOAT16, AFO_FLOAT32, AFO_FLOAT64, AFO_INT32, AFO_INT64, AFO_UINT8};
    afo_dtype idts[] = {AFO_INT32, AFO_INT64};
    char what[128];
    for (int t = 0; t < 7; t++)
        for (int i = 0; i < 2; i++) {
            /* embedding: [vocab, hidden] rows by token ids [batch, seq], negatives from the end */
            int64_t emb[2] = {1000, 96}, ids[2] = {2, 7}, odd[2] = {13, 5};
            afo_array *in[2] = {devcheck_random(tables[t], 2, emb, -9, 9), devcheck_random(idts[i], 2, ids, -1000, 1000)};
            for (int tr = 0; tr < 2; tr++) {
                index_case c = {TAKE, 0, tr};
                snprintf(what, sizeof what, "take rows %s by %s%s", afo_dtype_name(tables[t]), afo_dtype_name(idts[i]),
                         tr ? " (transposed ids)" : "");
                devcheck(what, AFO_CUDA, build_index, &c, in, 2, 0, 0);
                c.axis = -1;
                snprintf(what, sizeof what, "take columns %s by %s%s", afo_dtype_name(tables[t]),
                         afo_dtype_name(idts[i]), tr ? " (transposed ids)" : "");
                afo_array *in2[2] = {in[0], devcheck_random(idts[i], 2, ids, -96, 96)};
                devcheck(what, AFO_CUDA, build_index, &c, in2, 2, 0, 0);
                afo_release(in2[1]);
            }
            devcheck_release(in, 2);
            /* take_along_axis: indices broadcast over a size-1 axis */
            afo_array *a = devcheck_random(tables[t], 2, odd, -9, 9);
            afo_array *x3 = afo_reshape(a, 3, (int64_t[]){13, 1, 5});
            int64_t ishape[3] = {13, 4, 5};
            afo_array *ib = devcheck_random(idts[i], 3, ishape, -5, 5);
            afo_array *along[2] = {x3, ib};
            index_case c = {TAKE_ALONG, 2, 0};
            snprintf(what, sizeof what, "take_along_axis %s by %s", afo_dtype_name(tables[t]), afo_dtype_name(idts[i]));
            devcheck(what, AFO_CUDA, build_index, &c, along, 2, 0, 0);
            afo_release(a);
            devcheck_release(along, 2);
        }
    /* an out-of-range index made on the host is refused as on the CPU */
    int64_t xs[2] = {4, 5}, is1[1] = {3};
    int32_t bad[3] = {0, 5, 1};
    afo_array *x = afo_zeros(AFO_FLOAT32, 2, xs), *hi = afo_array_from_data(bad, AFO_INT32, 1, is1);
    afo_set_default_device(AFO_CUDA);
    afo_array *y = afo_take(x, hi, 1);
    afo_set_default_device(AFO_CPU);
    CHECK(y && afo_eval1(y) == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), "index 5"));
    devcheck_release((afo_array *[]){x, hi, y}, 3);
}

static void test_scatter_add(void) {
    afo_dtype dts[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16, AFO_FLOAT64, AFO_INT32, AFO_INT64};
    int64_t xs[3] = {6, 9, 4}, is[3] = {6, 13, 1}, us[3] = {6, 13, 4};
    for (int t = 0; t < 6; t++) {
        /* repeated indices: the sums depend on the order of the additions,
         * which is the CPU's (index order, one line per thread) */
        afo_array *in[3] = {devcheck_random(dts[t], 3, xs, -5, 5), devcheck_random(AFO_INT64, 3, is, -9, 9),
                            devcheck_random(dts[t], 3, us, -5, 5)};
        index_case c = {SCATTER_ADD, 1, 0};
        char what[64];
        snprintf(what, sizeof what, "scatter_add %s", afo_dtype_name(dts[t]));
        devcheck(what, AFO_CUDA, build_index, &c, in, 3, 0, 0);
        devcheck_release(in, 3);
    }
}

/* ---------------------------------------------------------------- random */

typedef struct rand_case {
    int kind; /* 0 split, 1 uniform, 2 normal, 3 categorical */
    afo_dtype dtype;
    int ndim;
    int64_t shape[3];
} rand_case;

static afo_array *build_random(afo_array *const *in, void *ctx) {
    const rand_case *c = ctx;
    afo_array *key = afo_random_key(0x5eed1234abcdull);
    afo_array *r = c->kind == 0   ? afo_random_split(key, (int)c->shape[0])
                   : c->kind == 1 ? afo_random_uniform(key, -1.5, 2.5, c->ndim, c->shape, c->dtype)
                   : c->kind == 2 ? afo_random_normal(key, 0.5, 2.0, c->ndim, c->shape, c->dtype)
                                  : afo_random_categorical(key, in[0], -1);
    afo_release(key);
    return r;
}

static void test_random(void) {
    afo_dtype dts[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16, AFO_FLOAT64};
    int64_t shapes[][3] = {{3, 5, 7}, {1, 1, 1}, {2, 0, 3}, {1, 1, 100001}};
    char what[96];
    for (int s = 0; s < 4; s++) {
        rand_case c = {0, AFO_UINT32, 1, {shapes[s][2]}};
        snprintf(what, sizeof what, "random split %lld", (long long)shapes[s][2]);
        devcheck(what, AFO_CUDA, build_random, &c, NULL, 0, 0, 0);
        for (int t = 0; t < 4; t++)
            for (int kind = 1; kind <= 2; kind++) {
                rand_case r = {kind, dts[t], 3, {shapes[s][0], shapes[s][1], shapes[s][2]}};
                snprintf(what, sizeof what, "random %s %s [%lld,%lld,%lld]", kind == 1 ? "uniform" : "normal",
                         afo_dtype_name(dts[t]), (long long)r.shape[0], (long long)r.shape[1], (long long)r.shape[2]);
                /* normal's log and cos: CUDA's double versions and libm's
                 * may differ in the last place, visible only in float64;
                 * mean + std·z near 0 cancels, hence an absolute part (a few
                 * ulps of std·z's size) */
                bool f64_normal = kind == 2 && dts[t] == AFO_FLOAT64;
                devcheck(what, AFO_CUDA, build_random, &r, NULL, 0, f64_normal ? 1e-14 : 0, f64_normal ? 1e-13 : 0);
            }
    }
    /* sampling with a seed draws the same tokens on both devices */
    int64_t ls[2] = {4, 32000};
    afo_array *logits = devcheck_random(AFO_BFLOAT16, 2, ls, -4, 4);
    rand_case c = {3, AFO_FLOAT32, 2, {4, 32000}};
    devcheck("random_categorical tokens", AFO_CUDA, build_random, &c, &logits, 1, 0, 0);
    afo_release(logits);
}

/* ---------------------------------------------------------------- buffers */

static uint64_t copied_out(void) {
    afo_memory_stats s;
    afo_get_memory_stats(AFO_CUDA, &s);
    return s.copied_out;
}

/* The KV cache's pattern: the cache slot holds the only reference, so the
 * update writes into the cache's own GPU buffer. */
static void test_slice_update_donation(void) {
    int64_t shape[4] = {1, 2, 64, 8}, ushape[4] = {1, 2, 1, 8};
    afo_set_default_device(AFO_CUDA);
    afo_array *zeros = afo_zeros(AFO_BFLOAT16, 4, shape), *cache = afo_contiguous(zeros);
    afo_release(zeros);
    CHECK(afo_eval1(cache) == AFO_OK && cache->buf->device == AFO_CUDA);
    for (int64_t pos = 0; pos < 3 && cache->buf; pos++) {
        void *before = cache->buf->data;
        afo_array *x = devcheck_random(AFO_BFLOAT16, 4, ushape, -1, 1);
        int64_t start[4] = {0, 0, pos, 0}, stop[4] = {1, 2, pos + 1, 8};
        afo_array *u = afo_slice_update(cache, x, start, stop, NULL);
        afo_release(cache);
        cache = u;
        CHECK(afo_eval1(cache) == AFO_OK);
        CHECK_MSG(cache->buf && cache->buf->data == before, "position %lld: slice_update copied the cache", (long long)pos);
        afo_release(x);
    }
    /* a cache still referenced elsewhere is copied, and keeps its values */
    afo_array *keep = afo_retain(cache);
    void *before = cache->buf ? cache->buf->data : NULL;
    afo_array *x = devcheck_random(AFO_BFLOAT16, 4, ushape, 5, 6);
    int64_t start[4] = {0, 0, 10, 0}, stop[4] = {1, 2, 11, 8};
    afo_array *u = afo_slice_update(cache, x, start, stop, NULL);
    CHECK(afo_eval1(u) == AFO_OK && u->buf->data != before && u->buf->device == AFO_CUDA);
    afo_set_default_device(AFO_CPU);
    afo_array *m = afo_max(keep, NULL, 0, 0), *mu = afo_max(u, NULL, 0, 0);
    double vm = 0, vu = 0;
    CHECK(afo_array_item(m, &vm) == AFO_OK && afo_array_item(mu, &vu) == AFO_OK && vm < 2 && vu >= 5);
    devcheck_release((afo_array *[]){keep, cache, x, u, m, mu}, 6);
}

/* A decode step's ops in a chain: nothing comes back to the host until the
 * final read, which brings exactly the result. */
static void test_no_host_copies(void) {
    int64_t emb[2] = {512, 64}, ids[2] = {1, 6};
    afo_array *table = devcheck_random(AFO_BFLOAT16, 2, emb, -1, 1);
    int32_t tok[6] = {1, 7, 300, -2, 9, 511};
    afo_array *t = afo_array_from_data(tok, AFO_INT32, 2, ids);
    uint64_t before = copied_out();
    afo_set_default_device(AFO_CUDA);
    afo_array *h = afo_take(table, t, 0);                          /* [1, 6, 64] */
    afo_array *ht = afo_swapaxes(h, 1, 2);                          /* strided view */
    afo_array *flat = afo_reshape(ht, 2, (int64_t[]){64, 6});       /* copy on the GPU */
    afo_array *p = afo_softmax(flat, 0);
    afo_array *sum = afo_logsumexp(p, (int[]){1}, 1, 1);
    afo_array *cat = afo_concatenate((afo_array *[]){p, sum}, 2, 1);
    afo_array *key = afo_random_key(7);
    afo_array *noise = afo_random_uniform(key, 0, 1, 2, (int64_t[]){64, 7}, AFO_FLOAT32);
    afo_array *z = afo_add(cat, noise);
    afo_array *top = afo_argmax(z, -1, 1);
    afo_array *best = afo_take_along_axis(z, top, -1);
    afo_array *am = afo_argmax(best, -1, 0);
    afo_set_default_device(AFO_CPU);
    CHECK(afo_eval1(am) == AFO_OK && afo_array_device(am) == AFO_CUDA);
    CHECK_MSG(copied_out() == before, "%llu bytes came to the host during the chain",
              (unsigned long long)(copied_out() - before));
    const int32_t *v = afo_array_data(am);
    CHECK(v && v[0] == 0 && copied_out() - before == 64 * sizeof(int32_t));
    devcheck_release((afo_array *[]){table, t, h, ht, flat, p, sum, cat, key, noise, z, top, best, am}, 14);
}

int main(void) {
    if (!devcheck_available(AFO_CUDA)) return 77;
    /* every check here names its devices: AFO_TEST_DEVICE does not apply */
    afo_set_default_device(AFO_CPU);
    RUN(test_shape_ops);
    RUN(test_reductions);
    RUN(test_argmax_rows);
    RUN(test_softmax);
    RUN(test_take);
    RUN(test_scatter_add);
    RUN(test_random);
    RUN(test_slice_update_donation);
    RUN(test_no_host_copies);
    return test_finish();
}
