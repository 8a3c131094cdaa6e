/* Shape ops: reshape, transpose, broadcast and slice are views when the
 * strides allow; contiguous, slice_update and concatenate copy. */
#include "backends/cpu/cpu.h"
#include "core/compose.h"

/* ---- attrs layouts ----
 * RESHAPE:   out->shape holds the target
 * TRANSPOSE: i[0..ndim) = perm
 * BROADCAST: out->shape holds the target
 * SLICE, SLICE_UPDATE: i[d] = start, i[8+d] = step, i[16+d] = length per axis
 * CONCATENATE: i[0] = axis */
#define SLICE_START(a, d) ((a)->i[(d)])
#define SLICE_STEP(a, d) ((a)->i[AFO_MAX_DIMS + (d)])
#define SLICE_LEN(a, d) ((a)->i[2 * AFO_MAX_DIMS + (d)])

static void set_out(afo_array *out, afo_dtype dt, int ndim, const int64_t *shape) {
    out->dtype = dt;
    out->ndim = ndim;
    memcpy(out->shape, shape, sizeof(int64_t) * (size_t)ndim);
}

static afo_status copy_kernel(afo_array *out, afo_array *x) {
    AFO_TRY(afo_array_alloc(out));
    afo_cpu_copy(x, afo_array_ptr(out), out->dtype);
    return AFO_OK;
}

/* ------------------------------------------------------------ reshape */

static afo_status reshape_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    if (!in[0]->contiguous) return copy_kernel(out, in[0]);
    int64_t strides[AFO_MAX_DIMS];
    afo_contiguous_strides(out->ndim, out->shape, strides);
    afo_array_set_view(out, in[0], strides, in[0]->offset);
    return AFO_OK;
}

static afo_status reshape_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = afo_reshape(g, out->in[0]->ndim, out->in[0]->shape);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static afo_status shape_given(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    return AFO_OK; /* set by the constructor */
}

static const afo_op_def def_reshape = {"reshape", shape_given, {reshape_kernel}, reshape_vjp};

afo_array *afo_reshape(afo_array *x, int ndim, const int64_t *shape) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "reshape: x is NULL");
    if (ndim < 0 || ndim > AFO_MAX_DIMS || (ndim && !shape))
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "reshape: invalid ndim %d", ndim);
    int64_t s[AFO_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) infer = i;
        else if (s[i] < 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "reshape: invalid dimension %lld", (long long)s[i]);
        else known *= s[i];
    }
    if (infer >= 0) {
        if (known == 0 || x->size % known)
            return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "reshape: cannot infer -1 for %lld elements",
                                  (long long)x->size);
        s[infer] = x->size / known;
        known *= s[infer];
    }
    if (known != x->size) {
        char a[128], b[128];
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "reshape: cannot reshape %s to %s",
                              afo_shape_str(x->ndim, x->shape, a, sizeof a), afo_shape_str(ndim, s, b, sizeof b));
    }
    return afo_node_shaped(AFO_OP_RESHAPE, &x, 1, NULL, x->dtype, ndim, s);
}

afo_array *afo_expand_dims(afo_array *x, int axis) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "expand_dims: x is NULL");
    int ax = afo_normalize_axis(axis, x->ndim + 1);
    if (ax < 0 || x->ndim >= AFO_MAX_DIMS)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "expand_dims: axis %d out of range for %d dims", axis, x->ndim);
    int64_t s[AFO_MAX_DIMS];
    for (int i = 0, j = 0; i <= x->ndim; i++) s[i] = i == ax ? 1 : x->shape[j++];
    return afo_reshape(x, x->ndim + 1, s);
}

afo_array *afo_squeeze(afo_array *x, int axis) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "squeeze: x is NULL");
    int ax = afo_normalize_axis(axis, x->ndim);
    if (ax < 0 || x->shape[ax] != 1)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "squeeze: axis %d is not a size-1 axis", axis);
    int64_t s[AFO_MAX_DIMS];
    for (int i = 0, j = 0; i < x->ndim; i++)
        if (i != ax) s[j++] = x->shape[i];
    return afo_reshape(x, x->ndim - 1, s);
}

/* ------------------------------------------------------------ transpose */

static afo_status transpose_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    int64_t strides[AFO_MAX_DIMS];
    for (int i = 0; i < out->ndim; i++) strides[i] = in[0]->strides[a->i[i]];
    afo_array_set_view(out, in[0], strides, in[0]->offset);
    return AFO_OK;
}

static afo_status transpose_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    int inv[AFO_MAX_DIMS];
    for (int i = 0; i < out->ndim; i++) inv[out->attrs.i[i]] = i;
    *grad = afo_transpose(g, inv);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static afo_status transpose_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0];
    bool seen[AFO_MAX_DIMS] = {0};
    for (int i = 0; i < x->ndim; i++) {
        int64_t p = a->i[i];
        if (p < 0 || p >= x->ndim || seen[p])
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "transpose: invalid permutation for %d dims", x->ndim);
        seen[p] = true;
        out->shape[i] = x->shape[p];
    }
    out->ndim = x->ndim;
    out->dtype = x->dtype;
    return AFO_OK;
}

static const afo_op_def def_transpose = {"transpose", transpose_shape, {transpose_kernel}, transpose_vjp};

afo_array *afo_transpose(afo_array *x, const int *perm) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "transpose: x is NULL");
    afo_attrs at = {.ni = x->ndim};
    for (int i = 0; i < x->ndim; i++) {
        int p = perm ? perm[i] : x->ndim - 1 - i;
        at.i[i] = p < 0 ? p + x->ndim : p;
    }
    return afo_node(AFO_OP_TRANSPOSE, &x, 1, &at);
}

afo_array *afo_swapaxes(afo_array *x, int axis1, int axis2) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "swapaxes: x is NULL");
    int a1 = afo_normalize_axis(axis1, x->ndim), a2 = afo_normalize_axis(axis2, x->ndim);
    if (a1 < 0 || a2 < 0)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "swapaxes: axes %d, %d out of range for %d dims", axis1, axis2, x->ndim);
    int perm[AFO_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[a1] = a2;
    perm[a2] = a1;
    return afo_transpose(x, perm);
}

/* ------------------------------------------------------------ broadcast */

static afo_status broadcast_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0];
    int64_t strides[AFO_MAX_DIMS];
    int lead = out->ndim - x->ndim;
    for (int i = 0; i < out->ndim; i++)
        strides[i] = i < lead || (x->shape[i - lead] == 1 && out->shape[i] != 1) ? 0 : x->strides[i - lead];
    afo_array_set_view(out, x, strides, x->offset);
    return AFO_OK;
}

static afo_status broadcast_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = afo_unbroadcast(g, out->in[0]->ndim, out->in[0]->shape);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static const afo_op_def def_broadcast = {"broadcast_to", shape_given, {broadcast_kernel}, broadcast_vjp};

afo_array *afo_broadcast_to(afo_array *x, int ndim, const int64_t *shape) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "broadcast_to: x is NULL");
    if (ndim < x->ndim || ndim > AFO_MAX_DIMS || (ndim && !shape))
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "broadcast_to: cannot broadcast %d dims to %d", x->ndim, ndim);
    int lead = ndim - x->ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "broadcast_to: negative dimension");
        if (i >= lead && x->shape[i - lead] != 1 && x->shape[i - lead] != shape[i]) {
            char a[128], b[128];
            return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "broadcast_to: cannot broadcast %s to %s",
                                  afo_shape_str(x->ndim, x->shape, a, sizeof a), afo_shape_str(ndim, shape, b, sizeof b));
        }
    }
    bool same = ndim == x->ndim;
    for (int i = 0; same && i < ndim; i++) same = shape[i] == x->shape[i];
    if (same) return afo_retain(x);
    return afo_node_shaped(AFO_OP_BROADCAST, &x, 1, NULL, x->dtype, ndim, shape);
}

/* ------------------------------------------------------------ slice */

static void slice_view_strides(const afo_array *x, const afo_attrs *a, int64_t *strides, int64_t *offset) {
    *offset = x->offset;
    for (int d = 0; d < x->ndim; d++) {
        *offset += SLICE_START(a, d) * x->strides[d];
        strides[d] = x->strides[d] * SLICE_STEP(a, d);
    }
}

static afo_status slice_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    int64_t strides[AFO_MAX_DIMS], offset;
    slice_view_strides(in[0], a, strides, &offset);
    afo_array_set_view(out, in[0], strides, offset);
    return AFO_OK;
}

static afo_array *slice_update_attrs(afo_array *x, afo_array *update, const afo_attrs *a);

static afo_status slice_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    afo_array *z = ow_zeros_like(out->in[0]);
    *grad = z ? slice_update_attrs(z, g, &out->attrs) : NULL;
    afo_release(z);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static afo_status slice_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    out->dtype = in[0]->dtype;
    out->ndim = in[0]->ndim;
    for (int d = 0; d < out->ndim; d++) out->shape[d] = SLICE_LEN(a, d);
    return AFO_OK;
}

static const afo_op_def def_slice = {"slice", slice_shape, {slice_kernel}, slice_vjp};

/* Python slice semantics -> (start, step, length) per axis. */
static afo_status normalize_slice(const char *fn, const afo_array *x, const int64_t *start, const int64_t *stop,
                                  const int64_t *step, afo_attrs *a) {
    *a = (afo_attrs){.ni = 3 * AFO_MAX_DIMS};
    for (int d = 0; d < x->ndim; d++) {
        int64_t n = x->shape[d], st = step ? step[d] : 1;
        if (st == 0) return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: step 0 on axis %d", fn, d);
        int64_t lo = st > 0 ? 0 : -1, hi = st > 0 ? n : n - 1;
        int64_t b = start ? start[d] : (st > 0 ? 0 : n - 1);
        int64_t e = stop ? stop[d] : (st > 0 ? n : -n - 1);
        if (b < 0) b += n;
        if (e < 0) e += n;
        b = b < lo ? lo : b > hi ? hi : b;
        e = e < lo ? lo : e > hi ? hi : e;
        int64_t len = st > 0 ? (e > b ? (e - b + st - 1) / st : 0) : (b > e ? (b - e - st - 1) / -st : 0);
        SLICE_START(a, d) = len ? b : 0;
        SLICE_STEP(a, d) = st;
        SLICE_LEN(a, d) = len;
    }
    return AFO_OK;
}

afo_array *afo_slice(afo_array *x, const int64_t *start, const int64_t *stop, const int64_t *step) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "slice: x is NULL");
    afo_attrs a;
    if (normalize_slice("slice", x, start, stop, step, &a) != AFO_OK) return NULL;
    return afo_node(AFO_OP_SLICE, &x, 1, &a);
}

afo_array *afo_slice_axis(afo_array *x, int axis, int64_t start, int64_t stop) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "slice: x is NULL");
    int ax = afo_normalize_axis(axis, x->ndim);
    if (ax < 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "slice: axis %d out of range for %d dims", axis, x->ndim);
    int64_t b[AFO_MAX_DIMS] = {0}, e[AFO_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) e[d] = x->shape[d];
    b[ax] = start;
    e[ax] = stop;
    return afo_slice(x, b, e, NULL);
}

/* ------------------------------------------------------------ slice_update */

bool afo_slice_update_can_donate(const afo_array *x) {
    return atomic_load(&x->refcount) == 1 && afo_buffer_writable(x->buf) &&
           x->contiguous && x->offset == 0;
}

static afo_status slice_update_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    afo_array *x = in[0];
    if (afo_slice_update_can_donate(x)) {
        afo_array_set_view(out, x, x->strides, 0);
    } else {
        AFO_TRY(copy_kernel(out, x));
    }
    afo_array region = *out; /* a stack view of out's sliced region */
    slice_view_strides(out, a, region.strides, &region.offset);
    if (nin > 2) {
        int axis = (int)a->i[AFO_SLICE_AT_AXIS];
        region.offset += afo_slice_at_start(out, a, afo_position_value(in[2])) * out->strides[axis];
    }
    for (int d = 0; d < out->ndim; d++) region.shape[d] = SLICE_LEN(a, d);
    region.size = afo_shape_size(region.ndim, region.shape);
    afo_cpu_assign(&region, in[1]);
    return AFO_OK;
}

static afo_status slice_update_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    if (out->nin > 2)
        return afo_error(AFO_ERR_UNSUPPORTED, "slice_update_at: no gradient (its slot is known only when it runs)");
    if (arg == 0) {
        afo_array *z = afo_scalar(0, g->dtype);
        *grad = z ? slice_update_attrs(g, z, &out->attrs) : NULL;
        afo_release(z);
    } else {
        afo_array *s = afo_node(AFO_OP_SLICE, &g, 1, &out->attrs);
        *grad = ow_unbroadcast(s, out->in[1]);
    }
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static afo_status slice_update_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *u = in[1];
    if (nin > 2) AFO_TRY(afo_check_position("slice_update_at", in[2]));
    int64_t region[AFO_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) region[d] = SLICE_LEN(a, d);
    if (u->ndim > x->ndim) goto bad;
    for (int d = 0; d < u->ndim; d++) {
        int64_t r = region[x->ndim - u->ndim + d];
        if (u->shape[d] != 1 && u->shape[d] != r) goto bad;
    }
    out->dtype = x->dtype;
    out->ndim = x->ndim;
    memcpy(out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    return AFO_OK;
bad:;
    char s1[128], s2[128];
    return afo_error(AFO_ERR_INVALID_ARGUMENT, "slice_update: update of shape %s does not fit the slice %s",
                     afo_shape_str(u->ndim, u->shape, s1, sizeof s1), afo_shape_str(x->ndim, region, s2, sizeof s2));
}

static const afo_op_def def_slice_update = {"slice_update", slice_update_shape, {slice_update_kernel}, slice_update_vjp};

static afo_array *slice_update_attrs(afo_array *x, afo_array *update, const afo_attrs *a) {
    afo_array *in[2] = {x, update};
    return afo_node(AFO_OP_SLICE_UPDATE, in, 2, a);
}

afo_array *afo_slice_update(afo_array *x, afo_array *update, const int64_t *start, const int64_t *stop,
                            const int64_t *step) {
    if (!x || !update) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "slice_update: NULL argument");
    afo_attrs a;
    if (normalize_slice("slice_update", x, start, stop, step, &a) != AFO_OK) return NULL;
    return slice_update_attrs(x, update, &a);
}

afo_array *afo_slice_update_at(afo_array *x, afo_array *update, int axis, afo_array *start) {
    if (!x || !update || !start) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "slice_update_at: NULL argument");
    int ax = afo_normalize_axis(axis, x->ndim), ux = ax - (x->ndim - update->ndim);
    if (ax < 0)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "slice_update_at: axis %d out of range for %d dims", axis,
                              x->ndim);
    int64_t n = ux >= 0 ? update->shape[ux] : 1, stop[AFO_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) stop[d] = d == ax ? n : x->shape[d];
    if (n > x->shape[ax])
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "slice_update_at: %lld positions do not fit axis %d of %lld",
                              (long long)n, axis, (long long)x->shape[ax]);
    afo_attrs a;
    if (normalize_slice("slice_update_at", x, NULL, stop, NULL, &a) != AFO_OK) return NULL;
    a.i[AFO_SLICE_AT_AXIS] = ax;
    a.ni = AFO_SLICE_AT_AXIS + 1;
    afo_array *in[3] = {x, update, start};
    return afo_node(AFO_OP_SLICE_UPDATE, in, 3, &a);
}

/* ------------------------------------------------------------ contiguous */

static afo_status contiguous_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    return copy_kernel(out, in[0]);
}

static afo_status identity_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = afo_retain(g);
    return AFO_OK;
}

static afo_status same_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    set_out(out, in[0]->dtype, in[0]->ndim, in[0]->shape);
    return AFO_OK;
}

static const afo_op_def def_contiguous = {"contiguous", same_shape, {contiguous_kernel}, identity_vjp};

afo_array *afo_contiguous(afo_array *x) { return afo_node(AFO_OP_CONTIGUOUS, &x, 1, NULL); }

/* ------------------------------------------------------------ concatenate */

afo_status afo_concat_into(afo_array *out, afo_array *const *in, int nin, int axis, afo_assign_fn assign) {
    AFO_TRY(afo_array_alloc(out));
    int64_t at = 0;
    for (int k = 0; k < nin; k++) {
        afo_array region = *out;
        region.offset = at * out->strides[axis];
        region.shape[axis] = in[k]->shape[axis];
        region.size = afo_shape_size(region.ndim, region.shape);
        AFO_TRY(assign(&region, in[k]));
        at += in[k]->shape[axis];
    }
    return AFO_OK;
}

static afo_status cpu_assign(const afo_array *dst, const afo_array *src) {
    afo_cpu_assign((afo_array *)dst, src);
    return AFO_OK;
}

static afo_status concat_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    return afo_concat_into(out, in, nin, (int)a->i[0], cpu_assign);
}

static afo_status concat_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    int axis = (int)out->attrs.i[0];
    int64_t at = 0;
    for (int k = 0; k < arg; k++) at += out->in[k]->shape[axis];
    *grad = afo_slice_axis(g, axis, at, at + out->in[arg]->shape[axis]);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static afo_status concat_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    int axis = (int)a->i[0];
    const afo_array *x = in[0];
    afo_dtype dt = x->dtype;
    int64_t total = 0;
    for (int k = 0; k < nin; k++) {
        if (in[k]->ndim != x->ndim) goto bad;
        for (int d = 0; d < x->ndim; d++)
            if (d != axis && in[k]->shape[d] != x->shape[d]) goto bad;
        total += in[k]->shape[axis];
        dt = afo_promote_types(dt, in[k]->dtype);
    }
    set_out(out, dt, x->ndim, x->shape);
    out->shape[axis] = total;
    return AFO_OK;
bad:
    return afo_error(AFO_ERR_INVALID_ARGUMENT, "concatenate: arrays differ in shape outside axis %d", axis);
}

static const afo_op_def def_concatenate = {"concatenate", concat_shape, {concat_kernel}, concat_vjp};

afo_array *afo_concatenate(afo_array *const *xs, int n, int axis) {
    if (n < 1 || !xs || !xs[0]) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "concatenate: no arrays");
    int ax = afo_normalize_axis(axis, xs[0]->ndim);
    if (ax < 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "concatenate: axis %d out of range", axis);
    afo_attrs a = {.i = {ax}, .ni = 1};
    return afo_node(AFO_OP_CONCATENATE, xs, n, &a);
}

void afo_register_shape_ops(void) {
    afo_op_register(AFO_OP_RESHAPE, &def_reshape);
    afo_op_register(AFO_OP_TRANSPOSE, &def_transpose);
    afo_op_register(AFO_OP_BROADCAST, &def_broadcast);
    afo_op_register(AFO_OP_SLICE, &def_slice);
    afo_op_register(AFO_OP_SLICE_UPDATE, &def_slice_update);
    afo_op_register(AFO_OP_CONTIGUOUS, &def_contiguous);
    afo_op_register(AFO_OP_CONCATENATE, &def_concatenate);
}
