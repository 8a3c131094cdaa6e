/* Composing ops inside the library (gradients, composite ops) without a
 * release after every step: the ow_* ("owning") variants take over the
 * references passed to them and propagate NULL, so a formula reads as one
 * expression. Pass R(x) for an argument that must stay alive. */
#ifndef AFO_COMPOSE_H
#define AFO_COMPOSE_H

#include "core/internal.h"

static inline afo_array *R(afo_array *a) { return afo_retain(a); }

afo_array *ow_unary(afo_array *(*op)(afo_array *), afo_array *a);
afo_array *ow_binary(afo_array *(*op)(afo_array *, afo_array *), afo_array *a, afo_array *b);

#define ow_neg(a) ow_unary(afo_neg, (a))
#define ow_exp(a) ow_unary(afo_exp, (a))
#define ow_log(a) ow_unary(afo_log, (a))
#define ow_sqrt(a) ow_unary(afo_sqrt, (a))
#define ow_rsqrt(a) ow_unary(afo_rsqrt, (a))
#define ow_square(a) ow_unary(afo_square, (a))
#define ow_sigmoid(a) ow_unary(afo_sigmoid, (a))
#define ow_tanh(a) ow_unary(afo_tanh, (a))
#define ow_sin(a) ow_unary(afo_sin, (a))
#define ow_cos(a) ow_unary(afo_cos, (a))
#define ow_erf(a) ow_unary(afo_erf, (a))
#define ow_add(a, b) ow_binary(afo_add, (a), (b))
#define ow_sub(a, b) ow_binary(afo_sub, (a), (b))
#define ow_mul(a, b) ow_binary(afo_mul, (a), (b))
#define ow_div(a, b) ow_binary(afo_div, (a), (b))
#define ow_matmul(a, b) ow_binary(afo_matmul, (a), (b))
#define ow_greater(a, b) ow_binary(afo_greater, (a), (b))
#define ow_less(a, b) ow_binary(afo_less, (a), (b))
#define ow_greater_equal(a, b) ow_binary(afo_greater_equal, (a), (b))
#define ow_less_equal(a, b) ow_binary(afo_less_equal, (a), (b))
afo_array *ow_where(afo_array *c, afo_array *a, afo_array *b);
afo_array *ow_astype(afo_array *a, afo_dtype t);
afo_array *ow_sum(afo_array *a, const int *axes, int naxes, int keepdims);
afo_array *ow_reshape(afo_array *a, int ndim, const int64_t *shape);
afo_array *ow_squeeze(afo_array *a, int axis);
afo_array *ow_swapaxes(afo_array *a, int ax1, int ax2);
afo_array *ow_broadcast_to(afo_array *a, int ndim, const int64_t *shape);
/* Scalar of x's dtype (x borrowed). */
afo_array *ow_const(const afo_array *x, double v);
/* zeros shaped and typed like x (x borrowed). */
afo_array *ow_zeros_like(const afo_array *x);
/* Sums g back to x's shape (g taken, x borrowed). */
afo_array *ow_unbroadcast(afo_array *g, const afo_array *x);

#endif
