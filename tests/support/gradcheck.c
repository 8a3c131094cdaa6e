#include "support/gradcheck.h"

#include <stdlib.h>
#include <string.h>

#include "support/test.h"

afo_array *test_randn(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = test_normal();
    afo_array *a = afo_array_from_data(v, AFO_FLOAT64, ndim, shape);
    free(v);
    return a;
}

typedef struct projected {
    afo_fn fn;
    void *userdata;
    afo_array *weights; /* created on the first call, shaped like fn's output */
} projected;

static afo_array *project(afo_array *const *inputs, int n, void *ud) {
    projected *p = ud;
    afo_array *y = p->fn(inputs, n, p->userdata);
    if (!y) return NULL;
    afo_array *y64 = afo_astype(y, AFO_FLOAT64);
    afo_release(y);
    if (!p->weights) p->weights = test_randn(afo_array_ndim(y64), afo_array_shape(y64));
    afo_array *prod = afo_mul(y64, p->weights);
    afo_array *s = afo_sum(prod, NULL, 0, 0);
    afo_release(y64);
    afo_release(prod);
    return s;
}

static double eval_scalar(projected *p, afo_array *const *inputs, int n) {
    afo_array *v = project(inputs, n, p);
    double out = NAN;
    if (!v || afo_array_item(v, &out) != AFO_OK) out = NAN;
    afo_release(v);
    return out;
}

double gradcheck(const char *name, afo_fn fn, void *userdata, afo_array *const *inputs, int n, double eps,
                 double tol) {
    projected p = {fn, userdata, NULL};
    afo_array *value = NULL, *grads[8] = {0};
    if (n > 8 || afo_value_and_grad(project, &p, inputs, n, &value, grads) != AFO_OK) {
        CHECK_MSG(0, "%s: value_and_grad failed: %s", name, afo_last_error());
        afo_release(p.weights);
        return INFINITY;
    }
    if (afo_eval(grads, n) != AFO_OK) CHECK_MSG(0, "%s: eval of gradients failed: %s", name, afo_last_error());
    double worst = 0;
    afo_array *work[8];
    for (int i = 0; i < n; i++) work[i] = afo_retain(inputs[i]);
    for (int i = 0; i < n; i++) {
        int64_t size = afo_array_size(inputs[i]);
        double *x = malloc(sizeof(double) * (size_t)(size ? size : 1));
        double *g = malloc(sizeof(double) * (size_t)(size ? size : 1));
        afo_array_read(inputs[i], AFO_FLOAT64, x, sizeof(double) * (size_t)size);
        afo_array_read(grads[i], AFO_FLOAT64, g, sizeof(double) * (size_t)size);
        for (int64_t j = 0; j < size; j++) {
            double f[2];
            for (int s = 0; s < 2; s++) {
                double orig = x[j];
                x[j] = orig + (s ? -eps : eps);
                afo_release(work[i]);
                work[i] = afo_array_from_data(x, AFO_FLOAT64, afo_array_ndim(inputs[i]), afo_array_shape(inputs[i]));
                f[s] = eval_scalar(&p, work, n);
                x[j] = orig;
            }
            double numeric = (f[0] - f[1]) / (2 * eps);
            double err = fabs(g[j] - numeric) / (fabs(numeric) > 1 ? fabs(numeric) : 1);
            if (!(err <= worst)) worst = err;
            if (!(err <= tol))
                fprintf(stderr, "%s: d/dinput%d[%lld]: analytic %.9g numeric %.9g\n", name, i, (long long)j, g[j],
                        numeric);
        }
        afo_release(work[i]);
        work[i] = afo_retain(inputs[i]);
        free(x);
        free(g);
    }
    CHECK_MSG(worst <= tol, "%s: gradient error %.3g > %.3g", name, worst, tol);
    for (int i = 0; i < n; i++) {
        afo_release(work[i]);
        afo_release(grads[i]);
    }
    afo_release(value);
    afo_release(p.weights);
    return worst;
}
