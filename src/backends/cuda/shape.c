/* CUDA shape ops. Views (transpose, broadcast, slice, stop_gradient, a
 * reshape of contiguous data) only change strides, so the CPU kernels serve
 * device buffers as they are; every path that moves elements copies on the
 * GPU through the elementwise engine's astype, which converts nothing when
 * the dtypes agree. */
#include "backends/cuda/cuda.h"
#include "backends/cuda/kernels.h"

/* Compute type holding every value of both dtypes (elementwise.c's rule). */
static afo_cuda_ctype copy_ctype(afo_dtype from, afo_dtype to) {
    afo_cuda_ctype f = from == AFO_FLOAT64 ? AFO_CUDA_F64 : afo_dtype_is_float(from) ? AFO_CUDA_F32 : AFO_CUDA_I64;
    afo_cuda_ctype t = to == AFO_FLOAT64 ? AFO_CUDA_F64 : afo_dtype_is_float(to) ? AFO_CUDA_F32 : AFO_CUDA_I64;
    if (f == t) return f;
    return f == AFO_CUDA_F32 && t == AFO_CUDA_I64 ? AFO_CUDA_F32 : AFO_CUDA_F64;
}

afo_status afo_cuda_copy_into(const afo_array *dst, const afo_array *src) {
    if (dst->size == 0) return AFO_OK;
    afo_cuda_strided d;
    afo_array *in = (afo_array *)src; /* only read */
    afo_cuda_describe(&d, dst, &in, 1);
    afo_cuda_elementwise(&d, AFO_OP_ASTYPE, copy_ctype(src->dtype, dst->dtype), afo_cuda_stream());
    return afo_cuda_launched("copy");
}

/* out = x's elements in C order (out may be x reshaped). */
static afo_status copy_kernel(afo_array *out, const afo_array *x) {
    AFO_TRY(afo_array_alloc(out));
    afo_array dense = *x;
    dense.buf = out->buf;
    dense.offset = 0;
    afo_contiguous_strides(dense.ndim, dense.shape, dense.strides);
    return afo_cuda_copy_into(&dense, x);
}

/* The CPU kernel of a view op, looked up when it runs: the op table is still
 * being filled while the backends register. */
static afo_status view_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    return afo_op_get(out->op)->kernel[AFO_CPU](out, in, nin, a);
}

static afo_status reshape_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    if (!in[0]->contiguous) return copy_kernel(out, in[0]);
    return view_kernel(out, in, nin, a);
}

static afo_status contiguous_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    return copy_kernel(out, in[0]);
}

afo_status afo_cuda_slice_update_target(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a,
                                        afo_array *region, afo_cuda_shift *shift) {
    afo_array *x = in[0];
    if (afo_slice_update_can_donate(x)) {
        afo_array_set_view(out, x, x->strides, 0);
        afo_buffer_mark_written(x->buf);
    } else
        AFO_TRY(copy_kernel(out, x));
    *region = *out;
    for (int d = 0; d < out->ndim; d++) {
        region->offset += a->i[d] * out->strides[d];
        region->strides[d] = out->strides[d] * a->i[AFO_MAX_DIMS + d];
        region->shape[d] = a->i[2 * AFO_MAX_DIMS + d];
    }
    region->size = afo_shape_size(region->ndim, region->shape);
    *shift = (afo_cuda_shift){NULL, 0, 0};
    if (nin == 3) { /* afo_slice_update_at: the slot is read on the device when the copy runs */
        int axis = (int)a->i[AFO_SLICE_AT_AXIS];
        *shift = (afo_cuda_shift){afo_array_ptr(in[2]), out->strides[axis], out->shape[axis] - region->shape[axis]};
    }
    return AFO_OK;
}

static afo_status slice_update_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    afo_array region;
    afo_cuda_shift shift;
    AFO_TRY(afo_cuda_slice_update_target(out, in, nin, a, &region, &shift));
    if (!shift.at) return afo_cuda_copy_into(&region, in[1]);
    if (region.size == 0) return AFO_OK;
    afo_cuda_strided d;
    afo_cuda_describe(&d, &region, &in[1], 1);
    d.shift = shift;
    afo_cuda_elementwise(&d, AFO_OP_ASTYPE, copy_ctype(in[1]->dtype, out->dtype), afo_cuda_stream());
    return afo_cuda_launched("slice_update_at");
}

static afo_status concat_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    return afo_concat_into(out, in, nin, (int)a->i[0], afo_cuda_copy_into);
}

void afo_cuda_register_shape(void) {
    /* pure views: the CPU kernels never touch the data */
    static const afo_op views[] = {AFO_OP_TRANSPOSE, AFO_OP_BROADCAST, AFO_OP_SLICE, AFO_OP_STOP_GRADIENT};
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++)
        afo_op_set_kernel(views[i], AFO_CUDA, view_kernel);
    afo_op_set_kernel(AFO_OP_RESHAPE, AFO_CUDA, reshape_kernel);
    afo_op_set_kernel(AFO_OP_CONTIGUOUS, AFO_CUDA, contiguous_kernel);
    afo_op_set_kernel(AFO_OP_SLICE_UPDATE, AFO_CUDA, slice_update_kernel);
    afo_op_set_kernel(AFO_OP_CONCATENATE, AFO_CUDA, concat_kernel);
}
