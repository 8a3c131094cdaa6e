/* Finite-difference gradient checks for ops' vjps. */
#ifndef AFO_GRADCHECK_H
#define AFO_GRADCHECK_H

#include <afo/afo.h>

/* fn maps float64 inputs to any array; the check differentiates
 * L = sum(fn(inputs) * W) with fixed random weights W, comparing
 * afo_value_and_grad with central differences (step eps) element by
 * element. A CHECK fails when max |analytic - numeric| / max(1, |numeric|)
 * exceeds tol. Returns that maximum error (or INFINITY on error). Keep
 * inputs small: each element costs two evaluations of fn. */
double gradcheck(const char *name, afo_fn fn, void *userdata, afo_array *const *inputs, int n, double eps,
                 double tol);

/* A float64 array of the given shape with normal(0, 1) entries from the test RNG. */
afo_array *test_randn(int ndim, const int64_t *shape);

#endif
