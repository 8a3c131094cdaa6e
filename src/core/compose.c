#include "core/compose.h"

afo_array *ow_unary(afo_array *(*op)(afo_array *), afo_array *a) {
    afo_array *r = a ? op(a) : NULL;
    afo_release(a);
    return r;
}

afo_array *ow_binary(afo_array *(*op)(afo_array *, afo_array *), afo_array *a, afo_array *b) {
    afo_array *r = a && b ? op(a, b) : NULL;
    afo_release(a);
    afo_release(b);
    return r;
}

afo_array *ow_where(afo_array *c, afo_array *a, afo_array *b) {
    afo_array *r = c && a && b ? afo_where(c, a, b) : NULL;
    afo_release(c);
    afo_release(a);
    afo_release(b);
    return r;
}

afo_array *ow_astype(afo_array *a, afo_dtype t) {
    afo_array *r = a ? afo_astype(a, t) : NULL;
    afo_release(a);
    return r;
}

afo_array *ow_sum(afo_array *a, const int *axes, int naxes, int keepdims) {
    afo_array *r = a ? afo_sum(a, axes, naxes, keepdims) : NULL;
    afo_release(a);
    return r;
}

afo_array *ow_reshape(afo_array *a, int ndim, const int64_t *shape) {
    afo_array *r = a ? afo_reshape(a, ndim, shape) : NULL;
    afo_release(a);
    return r;
}

afo_array *ow_swapaxes(afo_array *a, int ax1, int ax2) {
    afo_array *r = a ? afo_swapaxes(a, ax1, ax2) : NULL;
    afo_release(a);
    return r;
}

afo_array *ow_broadcast_to(afo_array *a, int ndim, const int64_t *shape) {
    afo_array *r = a ? afo_broadcast_to(a, ndim, shape) : NULL;
    afo_release(a);
    return r;
}

afo_array *ow_const(const afo_array *x, double v) { return afo_scalar(v, x->dtype); }

afo_array *ow_zeros_like(const afo_array *x) { return afo_zeros(x->dtype, x->ndim, x->shape); }

afo_array *ow_unbroadcast(afo_array *g, const afo_array *x) {
    afo_array *r = g ? afo_unbroadcast(g, x->ndim, x->shape) : NULL;
    afo_release(g);
    return r;
}

afo_array *ow_squeeze(afo_array *a, int axis) {
    afo_array *r = a ? afo_squeeze(a, axis) : NULL;
    afo_release(a);
    return r;
}
