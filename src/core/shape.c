/* Shape arithmetic shared by op definitions and kernels. */
#include <stdio.h>

#include "core/internal.h"

int afo_normalize_axis(int axis, int ndim) {
    if (axis < 0) axis += ndim;
    return axis >= 0 && axis < ndim ? axis : -1;
}

int64_t afo_shape_size(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

void afo_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

bool afo_strides_contiguous(int ndim, const int64_t *shape, const int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        if (shape[i] == 0) return true;
        if (shape[i] != 1 && strides[i] != s) return false;
        s *= shape[i];
    }
    return true;
}

const char *afo_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

afo_status afo_broadcast_shapes(const char *opname, int na, const int64_t *a, int nb, const int64_t *b,
                                int *nout, int64_t *out) {
    int n = na > nb ? na : nb;
    int64_t result[AFO_MAX_DIMS]; /* out may alias a or b */
    for (int i = 0; i < n; i++) {
        int64_t da = i < n - na ? 1 : a[i - (n - na)];
        int64_t db = i < n - nb ? 1 : b[i - (n - nb)];
        if (da != db && da != 1 && db != 1) {
            char sa[128], sb[128];
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: shapes %s and %s cannot be broadcast", opname,
                             afo_shape_str(na, a, sa, sizeof sa), afo_shape_str(nb, b, sb, sizeof sb));
        }
        result[i] = da == 1 ? db : da;
    }
    memcpy(out, result, sizeof(int64_t) * (size_t)n);
    *nout = n;
    return AFO_OK;
}

afo_status afo_array_alloc(afo_array *out) {
    out->buf = afo_buffer_alloc(out->device, afo_array_nbytes(out));
    if (!out->buf) return AFO_ERR_OUT_OF_MEMORY;
    out->offset = 0;
    afo_contiguous_strides(out->ndim, out->shape, out->strides);
    out->contiguous = true;
    return AFO_OK;
}

void afo_array_set_view(afo_array *out, const afo_array *src, const int64_t *strides, int64_t offset) {
    afo_buffer_retain(src->buf);
    out->buf = src->buf;
    for (int i = 0; i < out->ndim; i++) out->strides[i] = strides[i];
    out->offset = offset;
    out->contiguous = afo_strides_contiguous(out->ndim, out->shape, out->strides);
}

afo_array *afo_unbroadcast(afo_array *g, int ndim, const int64_t *shape) {
    int lead = g->ndim - ndim;
    int axes[AFO_MAX_DIMS], naxes = 0;
    for (int i = 0; i < g->ndim; i++) {
        if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) axes[naxes++] = i;
    }
    if (naxes == 0) return afo_retain(g);
    afo_array *s = afo_sum(g, axes, naxes, 1);
    if (!s) return NULL;
    afo_array *r = afo_reshape(s, ndim, shape);
    afo_release(s);
    return r;
}

void afo_broadcast_strides(const afo_array *a, int ndim, const int64_t *shape, int64_t *out) {
    int lead = ndim - a->ndim;
    for (int i = 0; i < ndim; i++) {
        if (i < lead) out[i] = 0;
        else out[i] = (a->shape[i - lead] == 1 && shape[i] != 1) ? 0 : a->strides[i - lead];
    }
}

int afo_merge_axes(int ndim, int64_t *shape, int nops, int64_t *const *strides) {
    int n = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        bool merge = n > 0;
        for (int k = 0; merge && k < nops; k++) merge = strides[k][n - 1] == strides[k][d] * shape[d];
        if (merge) {
            shape[n - 1] *= shape[d];
            for (int k = 0; k < nops; k++) strides[k][n - 1] = strides[k][d];
            continue;
        }
        shape[n] = shape[d];
        for (int k = 0; k < nops; k++) strides[k][n] = strides[k][d];
        n++;
    }
    if (n == 0) { /* a single element, described as one dense axis */
        shape[0] = 1;
        for (int k = 0; k < nops; k++) strides[k][0] = 1;
        n = 1;
    }
    return n;
}

afo_status afo_check_position(const char *op, const afo_array *position) {
    if (position->dtype != AFO_INT32 || position->size != 1)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: the position must be one int32 element, not %s of %lld", op,
                         afo_dtype_name(position->dtype), (long long)position->size);
    return AFO_OK;
}

int64_t afo_position_value(const afo_array *position) {
    return *(const int32_t *)afo_array_ptr(position);
}

int64_t afo_slice_at_start(const afo_array *out, const afo_attrs *a, int64_t position) {
    int axis = (int)a->i[AFO_SLICE_AT_AXIS];
    int64_t last = out->shape[axis] - a->i[2 * AFO_MAX_DIMS + axis];
    return position < 0 ? 0 : position > last ? last : position;
}
