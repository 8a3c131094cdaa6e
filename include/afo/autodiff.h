/* afo — reverse-mode automatic differentiation over the lazy graph. */
#ifndef AFO_AUTODIFF_H
#define AFO_AUTODIFF_H

#include "afo/array.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A function of arrays returning a new reference to a (scalar) array, or NULL
 * on error. */
typedef afo_array *(*afo_fn)(afo_array *const *inputs, int n, void *userdata);

/* Calls fn(inputs) and builds the graph of d value / d inputs[i] for every i
 * (grads[i] shaped like inputs[i]). value must have one element. Nothing is
 * evaluated: pass the results to afo_eval together. */
afo_status afo_value_and_grad(afo_fn fn, void *userdata, afo_array *const *inputs, int n,
                              afo_array **value, afo_array **grads);

/* Vector-Jacobian product of an already built graph: grads[i] = cotangent ·
 * d output / d wrt[i]. cotangent NULL means ones. Arrays of wrt the output
 * does not depend on get zeros. */
afo_status afo_vjp(afo_array *output, afo_array *cotangent, afo_array *const *wrt, int n,
                   afo_array **grads);

#ifdef __cplusplus
}
#endif
#endif
