/* Indexing ops against straightforward float64 references on random shapes,
 * axes, dtypes, index dtypes and strided inputs; error cases; thread-count
 * determinism of scatter_add; finite-difference gradient checks. */
#include <afo/afo.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "support/gradcheck.h"
#include "support/test.h"

static const afo_dtype k_dtypes[] = {AFO_FLOAT32, AFO_BFLOAT16, AFO_FLOAT16, AFO_INT32, AFO_FLOAT64, AFO_BOOL, AFO_INT8};
static const afo_dtype k_index_dtypes[] = {AFO_INT32, AFO_INT64, AFO_UINT32, AFO_INT8, AFO_UINT8};
#define COUNT(a) ((int)(sizeof(a) / sizeof *(a)))

static int64_t rand_int(int64_t n) { return (int64_t)(test_rand_u64() % (uint64_t)n); }

static int64_t size_of(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

static void unravel(int64_t flat, int ndim, const int64_t *shape, int64_t *c) {
    for (int d = ndim - 1; d >= 0; d--) {
        c[d] = flat % shape[d];
        flat /= shape[d];
    }
}

/* Flat index of coordinates c in shape, broadcasting size-1 axes. */
static int64_t ravel_bcast(const int64_t *c, int ndim, const int64_t *shape) {
    int64_t f = 0;
    for (int d = 0; d < ndim; d++) f = f * shape[d] + (shape[d] == 1 ? 0 : c[d]);
    return f;
}

static double *read_all(afo_array *a) {
    int64_t n = afo_array_size(a);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    afo_status st = afo_array_read(a, AFO_FLOAT64, v, sizeof(double) * (size_t)n);
    CHECK_MSG(st == AFO_OK, "read: %s", afo_last_error());
    return v;
}

static double random_value(afo_dtype dt) {
    if (dt == AFO_BOOL) return (double)rand_int(2);
    if (!afo_dtype_is_float(dt)) return (double)(rand_int(200) - 100);
    return test_normal() * 4;
}

/* An evaluated array of `shape` and dtype dt, laid out per `view`: 0 dense,
 * 1 transposed, 2 sliced with steps (-2 on axis 0, 2 elsewhere), 3
 * broadcast along axis 0. *vals receives its values in C order. */
static afo_array *make_input(afo_dtype dt, int ndim, const int64_t *shape, int view, double **vals) {
    int64_t bshape[AFO_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        bshape[d] = view == 1 ? shape[ndim - 1 - d] : view == 2 ? 2 * shape[d] : shape[d];
        if (view == 3 && d == 0) bshape[d] = 1;
    }
    int64_t n = size_of(ndim, bshape);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = random_value(dt);
    afo_array *b64 = afo_array_from_data(v, AFO_FLOAT64, ndim, bshape);
    afo_array *base = afo_astype(b64, dt);
    afo_eval1(base);
    free(v);
    afo_array *x;
    if (view == 1) {
        x = afo_transpose(base, NULL);
    } else if (view == 2) {
        int64_t step[AFO_MAX_DIMS];
        for (int d = 0; d < ndim; d++) step[d] = d == 0 ? -2 : 2;
        x = afo_slice(base, NULL, NULL, step);
    } else if (view == 3) {
        x = afo_broadcast_to(base, ndim, shape);
    } else {
        x = afo_retain(base);
    }
    afo_release(b64);
    afo_release(base);
    afo_eval1(x);
    *vals = read_all(x);
    return x;
}

/* Random indices in [-n, n) (non-negative for unsigned dtypes), or, when
 * n == 0, zeros (which are then out of range). */
static afo_array *make_indices(afo_dtype dt, int ndim, const int64_t *shape, int64_t n, int64_t **vals) {
    int64_t size = size_of(ndim, shape);
    int64_t *v = malloc(sizeof(int64_t) * (size_t)(size ? size : 1));
    bool is_signed = dt != AFO_UINT32 && dt != AFO_UINT8;
    for (int64_t i = 0; i < size; i++) v[i] = n == 0 ? 0 : is_signed ? rand_int(2 * n) - n : rand_int(n);
    afo_array *a64 = afo_array_from_data(v, AFO_INT64, ndim, shape);
    afo_array *a = afo_astype(a64, dt);
    afo_release(a64);
    for (int64_t i = 0; i < size; i++) v[i] = v[i] < 0 ? v[i] + n : v[i];
    *vals = v;
    return a;
}

static void random_shape(int *ndim, int64_t *shape, int min_ndim) {
    static const int64_t dims[] = {1, 2, 3, 5, 7};
    *ndim = min_ndim + (int)rand_int(4 - min_ndim + 1);
    for (int d = 0; d < *ndim; d++) shape[d] = dims[rand_int(COUNT(dims))];
}

/* ------------------------------------------------------------ take */

static void test_take_random(void) {
    test_seed(11);
    for (int trial = 0; trial < 300; trial++) {
        int ndim, indim;
        int64_t shape[AFO_MAX_DIMS], ishape[AFO_MAX_DIMS];
        random_shape(&ndim, shape, 1);
        random_shape(&indim, ishape, 0);
        if (indim > 3) indim = 3;
        afo_dtype dt = k_dtypes[rand_int(COUNT(k_dtypes))], it = k_index_dtypes[rand_int(COUNT(k_index_dtypes))];
        int view = (int)rand_int(4), axis = (int)rand_int(ndim), uaxis = rand_int(2) ? axis : axis - ndim;
        if (it == AFO_INT8 || it == AFO_UINT8) shape[axis] = shape[axis] > 7 ? 7 : shape[axis];
        double *xv;
        int64_t *iv;
        afo_array *x = make_input(dt, ndim, shape, view, &xv);
        afo_array *idx = make_indices(it, indim, ishape, shape[axis], &iv);
        afo_array *y = afo_take(x, idx, uaxis);
        CHECK_MSG(y != NULL, "take build: %s", afo_last_error());
        if (!y) goto next;
        CHECK(afo_array_ndim(y) == ndim - 1 + indim && afo_array_dtype(y) == dt);
        double *yv = read_all(y);
        int64_t outer = size_of(axis, shape), inner = size_of(ndim - axis - 1, shape + axis + 1);
        int64_t ni = size_of(indim, ishape), bad = 0;
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < ni; j++)
                for (int64_t i = 0; i < inner; i++) {
                    double want = xv[(o * shape[axis] + iv[j]) * inner + i];
                    bad += yv[(o * ni + j) * inner + i] != want;
                }
        CHECK_MSG(bad == 0, "take trial %d: %lld mismatches (dtype %s, view %d, axis %d)", trial, (long long)bad,
                  afo_dtype_name(dt), view, axis);
        free(yv);
    next:
        afo_release(x), afo_release(idx), afo_release(y);
        free(xv), free(iv);
    }
}

/* Embedding lookup [V, D] x [B, L]: exact, and fast enough to be rows of
 * memcpy (prints the time; the check bound is generous). */
static void test_take_embedding(void) {
    test_seed(5);
    int64_t V = 4096, D = 512, B = 16, L = 128, xs[2] = {V, D}, is[2] = {B, L};
    double *xv;
    int64_t *iv;
    afo_array *x = make_input(AFO_BFLOAT16, 2, xs, 0, &xv);
    afo_array *idx = make_indices(AFO_INT32, 2, is, V, &iv);
    afo_eval1(idx);
    clock_t t0 = clock();
    afo_array *y = afo_take(x, idx, 0);
    CHECK(afo_eval1(y) == AFO_OK);
    double ms = 1000.0 * (double)(clock() - t0) / CLOCKS_PER_SEC;
    fprintf(stderr, "  embedding take [%lld,%lld] x [%lld,%lld] bf16: %.2f ms cpu\n", (long long)V, (long long)D,
            (long long)B, (long long)L, ms);
    CHECK(ms < 500);
    double *yv = read_all(y);
    int64_t bad = 0;
    for (int64_t r = 0; r < B * L; r++)
        for (int64_t d = 0; d < D; d++) bad += yv[r * D + d] != xv[iv[r] * D + d];
    CHECK(bad == 0);
    free(yv), free(xv), free(iv);
    afo_release(x), afo_release(idx), afo_release(y);
}

/* ------------------------------------------------------------ take_along_axis */

static void test_take_along_random(void) {
    test_seed(12);
    for (int trial = 0; trial < 300; trial++) {
        int ndim;
        int64_t shape[AFO_MAX_DIMS], ishape[AFO_MAX_DIMS], oshape[AFO_MAX_DIMS];
        random_shape(&ndim, shape, 1);
        int axis = (int)rand_int(ndim), view = (int)rand_int(4);
        afo_dtype dt = k_dtypes[rand_int(COUNT(k_dtypes))], it = k_index_dtypes[rand_int(3)];
        for (int d = 0; d < ndim; d++) { /* other axes: equal, or one side broadcasts */
            int r = (int)rand_int(4);
            ishape[d] = d == axis ? 1 + rand_int(6) : r == 0 ? 1 : shape[d];
            if (d != axis && r == 1 && shape[d] == 1) ishape[d] = 3;
            oshape[d] = d == axis ? ishape[d] : shape[d] == 1 ? ishape[d] : shape[d];
        }
        double *xv;
        int64_t *iv;
        afo_array *x = make_input(dt, ndim, shape, view, &xv);
        afo_array *idx = make_indices(it, ndim, ishape, shape[axis], &iv);
        afo_array *y = afo_take_along_axis(x, idx, axis - (rand_int(2) ? ndim : 0));
        CHECK_MSG(y != NULL, "take_along_axis build: %s", afo_last_error());
        if (y) {
            CHECK(memcmp(afo_array_shape(y), oshape, sizeof(int64_t) * (size_t)ndim) == 0);
            double *yv = read_all(y);
            int64_t bad = 0, n = size_of(ndim, oshape), c[AFO_MAX_DIMS];
            for (int64_t f = 0; f < n; f++) {
                unravel(f, ndim, oshape, c);
                c[axis] = iv[ravel_bcast(c, ndim, ishape)];
                bad += yv[f] != xv[ravel_bcast(c, ndim, shape)];
            }
            CHECK_MSG(bad == 0, "take_along_axis trial %d: %lld mismatches", trial, (long long)bad);
            free(yv);
        }
        afo_release(x), afo_release(idx), afo_release(y);
        free(xv), free(iv);
    }
}

/* ------------------------------------------------------------ scatter_add */

static double dtype_eps(afo_dtype dt) {
    switch (dt) {
    case AFO_BFLOAT16: return 0x1p-8;
    case AFO_FLOAT16: return 0x1p-11;
    case AFO_FLOAT32: return 0x1p-22;
    case AFO_FLOAT64: return 1e-14;
    default: return 0;
    }
}

static void test_scatter_add_random(void) {
    static const afo_dtype dts[] = {AFO_FLOAT32, AFO_BFLOAT16, AFO_FLOAT16, AFO_INT32, AFO_FLOAT64};
    test_seed(13);
    for (int trial = 0; trial < 300; trial++) {
        int ndim;
        int64_t shape[AFO_MAX_DIMS], ishape[AFO_MAX_DIMS], ushape[AFO_MAX_DIMS], U[AFO_MAX_DIMS];
        random_shape(&ndim, shape, 1);
        int axis = (int)rand_int(ndim), view = (int)rand_int(4);
        afo_dtype dt = dts[rand_int(COUNT(dts))], it = k_index_dtypes[rand_int(3)];
        int64_t k = 1 + rand_int(9); /* often more updates than slots: duplicates */
        for (int d = 0; d < ndim; d++) {
            U[d] = d == axis ? k : shape[d];
            ishape[d] = rand_int(4) == 0 ? 1 : U[d];
            ushape[d] = rand_int(4) == 0 ? 1 : U[d];
        }
        if (ishape[axis] == 1 && ushape[axis] == 1) U[axis] = 1; /* nothing to broadcast to k */
        double *xv, *uv;
        int64_t *iv;
        afo_array *x = make_input(dt, ndim, shape, view, &xv);
        afo_array *idx = make_indices(it, ndim, ishape, shape[axis], &iv);
        afo_array *u = make_input(rand_int(2) ? dt : AFO_FLOAT64, ndim, ushape, (int)rand_int(3), &uv);
        afo_array *y = afo_scatter_add(x, idx, u, axis);
        CHECK_MSG(y != NULL, "scatter_add build: %s", afo_last_error());
        if (y) {
            int64_t n = size_of(ndim, shape), nu = size_of(ndim, U), c[AFO_MAX_DIMS];
            double *want = malloc(sizeof(double) * (size_t)n), *mag = malloc(sizeof(double) * (size_t)n);
            for (int64_t f = 0; f < n; f++) want[f] = xv[f], mag[f] = fabs(xv[f]);
            for (int64_t f = 0; f < nu; f++) {
                unravel(f, ndim, U, c);
                double v = uv[ravel_bcast(c, ndim, ushape)];
                if (!afo_dtype_is_float(dt)) v = trunc(v); /* updates convert to x's type first */
                c[axis] = iv[ravel_bcast(c, ndim, ishape)];
                int64_t t = ravel_bcast(c, ndim, shape);
                want[t] += v;
                mag[t] += fabs(v);
            }
            double *yv = read_all(y);
            int64_t bad = 0;
            for (int64_t f = 0; f < n; f++) bad += !(fabs(yv[f] - want[f]) <= dtype_eps(dt) * mag[f] * 4);
            CHECK_MSG(bad == 0, "scatter_add trial %d: %lld mismatches (dtype %s)", trial, (long long)bad,
                      afo_dtype_name(dt));
            free(yv), free(want), free(mag);
        }
        afo_release(x), afo_release(idx), afo_release(u), afo_release(y);
        free(xv), free(uv), free(iv);
    }
}

/* Same bits with one thread and with two, duplicates included. */
static void test_scatter_add_deterministic(void) {
    test_seed(14);
    int64_t xs[2] = {50, 300}, is[2] = {20000, 1}, us[2] = {20000, 300};
    double *xv, *uv;
    int64_t *iv;
    afo_array *x = make_input(AFO_FLOAT32, 2, xs, 0, &xv);
    afo_array *idx = make_indices(AFO_INT64, 2, is, 50, &iv);
    afo_array *u = make_input(AFO_FLOAT32, 2, us, 0, &uv);
    float *r[2];
    for (int t = 0; t < 2; t++) {
        afo_set_threads(t + 1);
        afo_array *y = afo_scatter_add(x, idx, u, 0);
        r[t] = malloc(sizeof(float) * 50 * 300);
        CHECK(afo_array_read(y, AFO_FLOAT32, r[t], sizeof(float) * 50 * 300) == AFO_OK);
        afo_release(y);
    }
    afo_set_threads(0);
    CHECK(memcmp(r[0], r[1], sizeof(float) * 50 * 300) == 0);
    free(r[0]), free(r[1]), free(xv), free(uv), free(iv);
    afo_release(x), afo_release(idx), afo_release(u);
}

/* ------------------------------------------------------------ sort / topk */

/* Reference order: NaN largest, ties by index. */
static bool ranks_before(double a, int64_t ia, double b, int64_t ib, bool desc) {
    bool an = isnan(a), bn = isnan(b);
    if (an != bn) return desc ? an : bn;
    if (!an && a != b) return desc ? a > b : a < b;
    return ia < ib;
}

static void test_sort_random(void) {
    static const afo_dtype dts[] = {AFO_FLOAT32, AFO_BFLOAT16, AFO_FLOAT16, AFO_INT32, AFO_FLOAT64, AFO_UINT8};
    test_seed(15);
    for (int trial = 0; trial < 200; trial++) {
        int ndim;
        int64_t shape[AFO_MAX_DIMS];
        random_shape(&ndim, shape, 1);
        int axis = (int)rand_int(ndim), view = (int)rand_int(2);
        afo_dtype dt = dts[rand_int(COUNT(dts))];
        int64_t n = shape[axis], k = 1 + rand_int(n);
        /* few distinct values (ties), some NaN and signed zeros for floats */
        int64_t size = size_of(ndim, shape);
        double *v = malloc(sizeof(double) * (size_t)size);
        for (int64_t i = 0; i < size; i++) {
            int r = (int)rand_int(8);
            v[i] = (double)(rand_int(5) - (dt == AFO_UINT8 ? 0 : 2));
            if (afo_dtype_is_float(dt) && r == 0) v[i] = NAN;
            if (afo_dtype_is_float(dt) && r == 1) v[i] = rand_int(2) ? -0.0 : INFINITY;
        }
        afo_array *x64 = afo_array_from_data(v, AFO_FLOAT64, ndim, shape);
        afo_array *xd = afo_astype(x64, dt);
        afo_array *x = view == 1 ? afo_slice(xd, NULL, NULL, (int64_t[]){-1, -1, -1, -1}) : afo_retain(xd);
        double *xv = read_all(x);
        afo_array *outs[4] = {afo_argsort(x, axis), afo_sort(x, axis - ndim), afo_argtopk(x, (int)k, axis),
                              afo_topk(x, (int)k, axis)};
        CHECK_MSG(outs[0] && outs[1] && outs[2] && outs[3], "sort build: %s", afo_last_error());
        if (outs[0] && outs[1] && outs[2] && outs[3]) {
            CHECK(afo_array_dtype(outs[0]) == AFO_INT32 && afo_array_dtype(outs[2]) == AFO_INT32);
            CHECK(afo_array_dtype(outs[1]) == dt && afo_array_shape(outs[3])[axis] == k);
            double *r[4];
            for (int q = 0; q < 4; q++) r[q] = read_all(outs[q]);
            int64_t inner = size_of(ndim - axis - 1, shape + axis + 1), outer = size_of(axis, shape), bad = 0;
            int64_t *order = malloc(sizeof(int64_t) * (size_t)n);
            for (int desc = 0; desc < 2; desc++) {
                int64_t m = desc ? k : n;
                for (int64_t o = 0; o < outer; o++)
                    for (int64_t i = 0; i < inner; i++) {
                        const double *line = xv + o * n * inner + i;
                        for (int64_t a = 0; a < n; a++) { /* insertion sort: stable by construction */
                            int64_t b = a;
                            while (b > 0 && ranks_before(line[a * inner], a, line[order[b - 1] * inner], order[b - 1], desc))
                                order[b] = order[b - 1], b--;
                            order[b] = a;
                        }
                        for (int64_t j = 0; j < m; j++) {
                            int64_t at = (o * m + j) * inner + i;
                            double want = line[order[j] * inner], got = r[2 * desc + 1][at];
                            bad += r[2 * desc][at] != (double)order[j];
                            bad += !(got == want || (isnan(got) && isnan(want)));
                        }
                    }
            }
            CHECK_MSG(bad == 0, "sort trial %d: %lld mismatches (dtype %s, axis %d)", trial, (long long)bad,
                      afo_dtype_name(dt), axis);
            free(order);
            for (int q = 0; q < 4; q++) free(r[q]);
        }
        for (int q = 0; q < 4; q++) afo_release(outs[q]);
        afo_release(x64), afo_release(xd), afo_release(x);
        free(v), free(xv);
    }
}

/* Long rows, where argtopk selects before sorting: many ties and NaNs. */
static void test_topk_long(void) {
    test_seed(16);
    int64_t shape[2] = {3, 1000}, n = 1000;
    double *v = malloc(sizeof(double) * 3000);
    for (int64_t i = 0; i < 3000; i++) v[i] = rand_int(50) == 0 ? NAN : (double)rand_int(40);
    afo_array *x = afo_array_from_data(v, AFO_FLOAT64, 2, shape);
    int64_t *order = malloc(sizeof(int64_t) * (size_t)n);
    int ks[4] = {1, 10, 999, 1000};
    for (int q = 0; q < 4; q++) {
        afo_array *t = afo_argtopk(x, ks[q], 1);
        int32_t *got = malloc(sizeof(int32_t) * 3 * (size_t)ks[q]);
        CHECK(afo_array_read(t, AFO_INT32, got, sizeof(int32_t) * 3 * (size_t)ks[q]) == AFO_OK);
        int64_t bad = 0;
        for (int r = 0; r < 3; r++) {
            const double *line = v + r * n;
            for (int64_t a = 0; a < n; a++) {
                int64_t b = a;
                while (b > 0 && ranks_before(line[a], a, line[order[b - 1]], order[b - 1], true)) order[b] = order[b - 1], b--;
                order[b] = a;
            }
            for (int j = 0; j < ks[q]; j++) bad += got[r * ks[q] + j] != order[j];
        }
        CHECK_MSG(bad == 0, "argtopk k=%d: %lld mismatches", ks[q], (long long)bad);
        free(got);
        afo_release(t);
    }
    free(order), free(v);
    afo_release(x);
}

/* ------------------------------------------------------------ errors */

static bool error_mentions(const char *a, const char *b, const char *c) {
    const char *e = afo_last_error();
    bool ok = strstr(e, a) && strstr(e, b) && strstr(e, c);
    if (!ok) fprintf(stderr, "  unexpected error text: %s\n", e);
    return ok;
}

static void test_errors(void) {
    int64_t xs[2] = {4, 5}, is1[1] = {3}, is2[2] = {4, 2};
    afo_array *x = afo_zeros(AFO_FLOAT32, 2, xs);
    int32_t bad_hi[3] = {0, 5, 1}, bad_lo[3] = {0, -6, 1};
    afo_array *hi = afo_array_from_data(bad_hi, AFO_INT32, 1, is1), *lo = afo_array_from_data(bad_lo, AFO_INT32, 1, is1);
    /* out of range: found at evaluation, named with op, index and axis size */
    afo_array *y = afo_take(x, hi, 1);
    CHECK(y && afo_eval1(y) == AFO_ERR_INVALID_ARGUMENT && error_mentions("take", "index 5", "size 5"));
    afo_release(y);
    y = afo_take(x, lo, -1);
    CHECK(y && afo_eval1(y) == AFO_ERR_INVALID_ARGUMENT && error_mentions("take", "index -6", "size 5"));
    afo_release(y);
    int32_t tv[8] = {0, 1, 2, 3, 4, 0, 1, 7};
    afo_array *t = afo_array_from_data(tv, AFO_INT32, 2, is2);
    y = afo_take_along_axis(x, t, 1);
    CHECK(y && afo_eval1(y) == AFO_ERR_INVALID_ARGUMENT && error_mentions("take_along_axis", "index 7", "size 5"));
    afo_release(y);
    afo_array *u = afo_zeros(AFO_FLOAT32, 2, is2);
    y = afo_scatter_add(x, t, u, 1);
    CHECK(y && afo_eval1(y) == AFO_ERR_INVALID_ARGUMENT && error_mentions("scatter_add", "index 7", "size 5"));
    afo_release(y);
    /* refused at graph build */
    afo_array *f = afo_zeros(AFO_FLOAT32, 1, is1), *b = afo_zeros(AFO_BOOL, 1, is1);
    CHECK(!afo_take(x, f, 0) && error_mentions("take", "integer", "float32"));
    CHECK(!afo_take(x, b, 0) && error_mentions("take", "integer", "bool"));
    CHECK(!afo_take(x, hi, 2) && error_mentions("take", "axis 2", "2 dims"));
    CHECK(!afo_take(x, hi, -3) && error_mentions("take", "axis -3", "2 dims"));
    CHECK(!afo_take_along_axis(x, hi, 0) && error_mentions("take_along_axis", "indices", "[3]"));
    int64_t s3[2] = {3, 2};
    afo_array *t3 = afo_zeros(AFO_INT32, 2, s3);
    CHECK(!afo_take_along_axis(x, t3, 1) && error_mentions("take_along_axis", "[3, 2]", "[4, 5]"));
    CHECK(!afo_scatter_add(x, t, f, 1) && error_mentions("scatter_add", "updates", "[3]"));
    CHECK(!afo_scatter_add(x, t3, u, 1) && error_mentions("scatter_add", "indices", "[3, 2]"));
    CHECK(!afo_argsort(x, 5) && error_mentions("argsort", "axis 5", "2 dims"));
    CHECK(!afo_argtopk(x, 0, 1) && error_mentions("argtopk", "k = 0", "1..5"));
    CHECK(!afo_topk(x, 6, 1) && error_mentions("argtopk", "k = 6", "1..5"));
    CHECK(!afo_sort(NULL, 0));
    afo_array *s0 = afo_scalar(1, AFO_FLOAT32);
    CHECK(!afo_take(s0, hi, 0) && error_mentions("take", "axis 0", "0 dims"));
    afo_release(s0), afo_release(t3), afo_release(f), afo_release(b), afo_release(u), afo_release(t);
    afo_release(hi), afo_release(lo), afo_release(x);
}

/* ------------------------------------------------------------ gradients */

typedef struct idx_case {
    afo_array *idx;
    int axis, k;
} idx_case;

static afo_array *take_fn(afo_array *const *in, int n, void *ud) {
    idx_case *c = ud;
    return afo_take(in[0], c->idx, c->axis);
}
static afo_array *take_along_fn(afo_array *const *in, int n, void *ud) {
    idx_case *c = ud;
    return afo_take_along_axis(in[0], c->idx, c->axis);
}
static afo_array *scatter_fn(afo_array *const *in, int n, void *ud) {
    idx_case *c = ud;
    return afo_scatter_add(in[0], c->idx, in[1], c->axis);
}
static afo_array *sort_fn(afo_array *const *in, int n, void *ud) {
    idx_case *c = ud;
    return afo_sort(in[0], c->axis);
}
static afo_array *topk_fn(afo_array *const *in, int n, void *ud) {
    idx_case *c = ud;
    return afo_topk(in[0], c->k, c->axis);
}

static void test_grads(void) {
    test_seed(21);
    int64_t xs[3] = {3, 4, 5}, *iv;
    afo_array *x = test_randn(3, xs);
    /* take: 2-d indices with duplicates and negatives, each axis */
    for (int axis = 0; axis < 3; axis++) {
        int64_t is[2] = {2, 3};
        idx_case c = {make_indices(AFO_INT32, 2, is, xs[axis], &iv), axis, 0};
        free(iv);
        gradcheck("take", take_fn, &c, &x, 1, 1e-6, 1e-6);
        afo_release(c.idx);
    }
    /* take_along_axis with indices broadcasting on axis 0 and x on axis 2 */
    int64_t xs2[3] = {3, 4, 1}, is3[3] = {1, 6, 2};
    afo_array *x2 = test_randn(3, xs2);
    idx_case ca = {make_indices(AFO_INT64, 3, is3, 4, &iv), 1, 0};
    free(iv);
    gradcheck("take_along_axis", take_along_fn, &ca, &x2, 1, 1e-6, 1e-6);
    afo_release(ca.idx), afo_release(x2);
    /* scatter_add: both x and updates; updates broadcast on axis 2 */
    int64_t is4[3] = {3, 6, 5}, us[3] = {3, 6, 1};
    idx_case cs = {make_indices(AFO_INT32, 3, is4, 4, &iv), 1, 0};
    free(iv);
    afo_array *xu[2] = {afo_retain(x), test_randn(3, us)};
    gradcheck("scatter_add", scatter_fn, &cs, xu, 2, 1e-6, 1e-6);
    afo_release(cs.idx), afo_release(xu[0]), afo_release(xu[1]);
    /* sort and topk (distinct values almost surely: no ties to perturb) */
    for (int axis = 0; axis < 3; axis++) {
        idx_case c = {NULL, axis, 2};
        gradcheck("sort", sort_fn, &c, &x, 1, 1e-6, 1e-6);
        gradcheck("topk", topk_fn, &c, &x, 1, 1e-6, 1e-6);
    }
    afo_release(x);
}

int main(void) {
    RUN(test_take_random);
    RUN(test_take_embedding);
    RUN(test_take_along_random);
    RUN(test_scatter_add_random);
    RUN(test_scatter_add_deterministic);
    RUN(test_sort_random);
    RUN(test_topk_long);
    RUN(test_errors);
    RUN(test_grads);
    return test_finish();
}
