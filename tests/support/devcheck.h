/* Differential checks of an accelerator backend against the CPU backend:
 * the same graph, built from the same inputs, evaluated once with each
 * default device, compared element by element. */
#ifndef AFO_DEVCHECK_H
#define AFO_DEVCHECK_H

#include "afo/afo.h"

/* Builds the graph under test from `in` (a new reference). */
typedef afo_array *(*devcheck_fn)(afo_array *const *in, void *ctx);

/* 1 when `d` is usable; otherwise prints "SKIP: ..." with the reason. */
int devcheck_available(afo_device d);
/* Evaluates fn on the CPU and on `d` and CHECKs |got - want| <= atol +
 * rtol*|want| for every element (NaNs must match), that shapes and dtypes
 * agree, and that the result lives on `d`. Float results on `d` go to
 * buffers filled with NaN, so that unwritten elements fail. Returns the largest relative
 * error seen (for reports). */
double devcheck(const char *what, afo_device d, devcheck_fn fn, void *ctx, afo_array *const *in, int nin,
                double rtol, double atol);
/* devcheck's comparison of two arrays made apart: want (the CPU's) and got
 * (d's), evaluated as needed and read as float64. */
double devcheck_compare(const char *what, afo_device d, afo_array *want, afo_array *got, double rtol, double atol);
/* Leaves a buffer of nbytes bytes of float16 NaNs in d's buffer cache,
 * which the next allocation of that size on d receives, whatever its
 * dtype: an element a kernel leaves unwritten then shows in a bitwise
 * comparison. */
void devcheck_poison_bytes(afo_device d, size_t nbytes);
/* Evaluates `got` on d into a poisoned buffer and CHECKs that it lives on
 * d and equals `want` bit for bit: dtype, size and every element's bytes
 * (`want` is evaluated wherever it was made). */
void devcheck_same(const char *what, afo_device d, afo_array *want, afo_array *got);
/* Releases a[0 .. n). */
void devcheck_release(afo_array **a, int n);
/* A random array of the dtype, values uniform in [lo, hi) (integers
 * rounded, bools 0/1), made on the host. */
afo_array *devcheck_random(afo_dtype dt, int ndim, const int64_t *shape, double lo, double hi);

#endif
