#include "support/devcheck.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "support/test.h"

int devcheck_available(afo_device d) {
    if (afo_device_available(d)) return 1;
    printf("SKIP: %s backend not available: %s\n", afo_device_name(d), afo_last_error());
    return 0;
}

static afo_array *run_on(afo_device d, devcheck_fn fn, void *ctx, afo_array *const *in, double **values) {
    afo_device before = afo_get_default_device();
    afo_set_default_device(d);
    afo_array *out = fn(in, ctx);
    afo_set_default_device(before);
    if (!out || afo_eval1(out) != AFO_OK) {
        afo_release(out);
        return NULL;
    }
    int64_t n = afo_array_size(out);
    *values = malloc(sizeof **values * (size_t)(n ? n : 1));
    if (!*values || afo_array_read(out, AFO_FLOAT64, *values, sizeof **values * (size_t)n) != AFO_OK) {
        free(*values);
        *values = NULL;
        afo_release(out);
        return NULL;
    }
    return out;
}

/* Leaves `count` buffers of n NaNs of a float dtype in d's buffer cache,
 * where the evaluation on d finds them for its results of that size: an
 * element a kernel fails to write then reads NaN rather than an earlier
 * result's value. */
static void poison(afo_device d, afo_dtype dt, int64_t n, int count) {
    if (!afo_dtype_is_float(dt) || n == 0) return;
    afo_array *held[8] = {NULL}, *nan = afo_full(NAN, dt, 1, &n);
    afo_device before = afo_get_default_device();
    afo_set_default_device(d);
    for (int i = 0; i < count && i < 8; i++) {
        held[i] = afo_neg(nan);
        afo_eval1(held[i]);
    }
    afo_set_default_device(before);
    for (int i = 0; i < 8; i++) afo_release(held[i]);
    afo_release(nan);
}

/* want (the CPU's) against got (d's), element by element, by devcheck's
 * rule; the largest relative error seen. */
static double compare(const char *what, afo_device d, const double *want, const double *got, int64_t n, double rtol,
                      double atol) {
    double worst = 0;
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        double w = want[i], g = got[i], err = fabs(g - w);
        bool ok = (isnan(w) && isnan(g)) || (isinf(w) && g == w) || err <= atol + rtol * fabs(w);
        if (!isnan(w) && !isinf(w) && fabs(w) > 0 && err / fabs(w) > worst) worst = err / fabs(w);
        if (!ok && bad++ == 0) first = i;
    }
    CHECK_MSG(bad == 0, "%s: %lld of %lld elements differ; first at %lld: %s %.9g, cpu %.9g", what, (long long)bad,
              (long long)n, (long long)first, afo_device_name(d), first >= 0 ? got[first] : 0.0,
              first >= 0 ? want[first] : 0.0);
    return worst;
}

double devcheck(const char *what, afo_device d, devcheck_fn fn, void *ctx, afo_array *const *in, int nin,
                double rtol, double atol) {
    double *want = NULL, *got = NULL, worst = 0;
    afo_array *ref = run_on(AFO_CPU, fn, ctx, in, &want);
    /* the inputs' copies to d may take some of the poisoned buffers */
    if (ref) poison(d, afo_array_dtype(ref), afo_array_size(ref), nin + 2);
    afo_array *out = ref ? run_on(d, fn, ctx, in, &got) : NULL;
    CHECK_MSG(ref != NULL, "%s: CPU: %s", what, afo_last_error());
    CHECK_MSG(!ref || out != NULL, "%s: %s: %s", what, afo_device_name(d), afo_last_error());
    if (ref && out) {
        CHECK_MSG(afo_array_dtype(out) == afo_array_dtype(ref) && afo_array_ndim(out) == afo_array_ndim(ref),
                  "%s: dtype/ndim differ", what);
        CHECK_MSG(afo_array_device(out) == d, "%s: result lives on %s", what, afo_device_name(afo_array_device(out)));
        worst = compare(what, d, want, got, afo_array_size(ref), rtol, atol);
    }
    free(want);
    free(got);
    afo_release(ref);
    afo_release(out);
    afo_clear_cache(); /* poisoned buffers left over must not reach later, unchecked work */
    return worst;
}

double devcheck_compare(const char *what, afo_device d, afo_array *want, afo_array *got, double rtol, double atol) {
    CHECK_MSG(want && got, "%s: %s", what, afo_last_error());
    if (!want || !got) return INFINITY;
    int64_t n = afo_array_size(want);
    double *w = malloc(sizeof *w * (size_t)(n ? n : 1)), *g = malloc(sizeof *g * (size_t)(n ? n : 1)), worst = INFINITY;
    bool read = w && g && afo_array_size(got) == n &&
                afo_array_read(want, AFO_FLOAT64, w, sizeof *w * (size_t)n) == AFO_OK &&
                afo_array_read(got, AFO_FLOAT64, g, sizeof *g * (size_t)n) == AFO_OK;
    CHECK_MSG(read, "%s: sizes %lld and %lld, or a read failed: %s", what, (long long)n,
              (long long)afo_array_size(got), afo_last_error());
    if (read) worst = compare(what, d, w, g, n, rtol, atol);
    free(w), free(g);
    return worst;
}

void devcheck_poison_bytes(afo_device d, size_t nbytes) {
    int64_t n = (int64_t)(nbytes / 2); /* the outputs checked so have an even size */
    afo_array *h = afo_full(NAN, AFO_FLOAT16, 1, &n);
    afo_device before = afo_get_default_device();
    afo_set_default_device(d);
    afo_array *g = afo_neg(h);
    afo_set_default_device(before);
    CHECK(afo_eval1(g) == AFO_OK);
    afo_release(g);
    afo_release(h);
}

void devcheck_same(const char *what, afo_device d, afo_array *want, afo_array *got) {
    CHECK_MSG(want && got, "%s: %s", what, afo_last_error());
    if (!want || !got) return;
    devcheck_poison_bytes(d, afo_array_nbytes(got));
    CHECK_MSG(afo_eval1(got) == AFO_OK, "%s: %s", what, afo_last_error());
    CHECK_MSG(afo_array_device(got) == d, "%s: ran on %s", what, afo_device_name(afo_array_device(got)));
    CHECK(afo_array_dtype(want) == afo_array_dtype(got) && afo_array_size(want) == afo_array_size(got));
    const unsigned char *a = afo_array_data(want), *b = afo_array_data(got);
    CHECK_MSG(a && b, "%s: %s", what, afo_last_error());
    if (!a || !b) return;
    size_t es = afo_dtype_size(afo_array_dtype(want));
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < afo_array_size(want); i++)
        if (memcmp(a + i * es, b + i * es, es) && bad++ == 0) first = i;
    CHECK_MSG(bad == 0, "%s: %lld of %lld elements differ, first at %lld", what, (long long)bad,
              (long long)afo_array_size(want), (long long)first);
}

void devcheck_release(afo_array **a, int n) {
    for (int i = 0; i < n; i++) afo_release(a[i]);
}

afo_array *devcheck_random(afo_dtype dt, int ndim, const int64_t *shape, double lo, double hi) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    double *v = malloc(sizeof *v * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        double x = test_uniform(lo, hi);
        v[i] = dt == AFO_BOOL ? (x > (lo + hi) / 2) : afo_dtype_is_float(dt) ? x : floor(x);
    }
    afo_array *f = afo_array_from_data(v, AFO_FLOAT64, ndim, shape);
    afo_array *a = afo_astype(f, dt);
    afo_eval1(a);
    afo_release(f);
    free(v);
    return a;
}
