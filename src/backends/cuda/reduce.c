/* CUDA reductions (sum, max, min, logsumexp, argmax) and softmax, with the
 * attrs of src/ops/reduce.c: i[0] = bitmask of reduced axes, i[1] =
 * keepdims (the shape rule has already applied it; the data are the same). */
#include "backends/cuda/core_kernels.h"
#include "backends/cuda/cuda.h"

static afo_status reduce_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *x = in[0];
    afo_cuda_reduce r = {.op = out->op, .x = afo_array_ptr(x), .x_dtype = x->dtype, .out = afo_array_ptr(out),
                         .out_dtype = out->dtype, .out_size = out->size, .red_size = 1};
    for (int d = 0; d < x->ndim; d++) {
        if (a->i[0] & (1 << d)) {
            r.red_shape[r.nred] = x->shape[d];
            r.red_strides[r.nred++] = x->strides[d];
            r.red_size *= x->shape[d];
        } else {
            r.keep_shape[r.nkeep] = x->shape[d];
            r.keep_strides[r.nkeep++] = x->strides[d];
        }
    }
    if (out->size == 0) return AFO_OK;
    if (r.red_size == 0 && out->op == AFO_OP_ARGMAX)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "argmax: reduction over an empty axis");
    afo_cuda_reduce_launch(&r, afo_cuda_stream());
    return afo_cuda_launched(afo_op_get(out->op)->name);
}

static afo_status softmax_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *x = in[0];
    if (out->size == 0) return AFO_OK;
    afo_cuda_rows r = {.nouter = x->ndim ? x->ndim - 1 : 0, .rows = 1, .n = x->ndim ? x->shape[x->ndim - 1] : 1,
                       .stride = x->ndim ? x->strides[x->ndim - 1] : 1, .x = afo_array_ptr(x), .x_dtype = x->dtype,
                       .out = afo_array_ptr(out), .out_dtype = out->dtype};
    for (int d = 0; d < r.nouter; d++) {
        r.outer_shape[d] = x->shape[d];
        r.outer_strides[d] = x->strides[d];
        r.rows *= x->shape[d];
    }
    afo_cuda_softmax(&r, afo_cuda_stream());
    return afo_cuda_launched("softmax");
}

void afo_cuda_register_reduce(void) {
    for (int op = AFO_OP_SUM; op <= AFO_OP_ARGMAX; op++) afo_op_set_kernel((afo_op)op, AFO_CUDA, reduce_kernel);
    afo_op_set_kernel(AFO_OP_SOFTMAX, AFO_CUDA, softmax_kernel);
}
