/* CUDA elementwise, where and astype kernels: the arrays become one strided
 * descriptor (broadcast axes get stride 0, mergeable axes are merged) and
 * one launch computes the output. */
#include "backends/cuda/cuda.h"
#include "backends/cuda/kernels.h"

static afo_cuda_ctype ctype_of(afo_dtype t) {
    if (t == AFO_FLOAT64) return AFO_CUDA_F64;
    return afo_dtype_is_float(t) ? AFO_CUDA_F32 : AFO_CUDA_I64;
}

void afo_cuda_describe(afo_cuda_strided *d, const afo_array *out, afo_array *const *in, int nin) {
    memset(d, 0, sizeof *d);
    d->ndim = out->ndim;
    d->nops = nin + 1;
    d->size = out->size;
    for (int ax = 0; ax < out->ndim; ax++) d->shape[ax] = out->shape[ax];
    const afo_array *ops[AFO_CUDA_MAX_OPERANDS] = {out};
    for (int k = 0; k < nin; k++) ops[k + 1] = in[k];
    int64_t *strides[AFO_CUDA_MAX_OPERANDS];
    for (int k = 0; k < d->nops; k++) {
        afo_broadcast_strides(ops[k], out->ndim, out->shape, d->strides[k]);
        d->data[k] = afo_array_ptr(ops[k]);
        d->dtype[k] = ops[k]->dtype;
        strides[k] = d->strides[k];
    }
    d->ndim = afo_merge_axes(d->ndim, d->shape, d->nops, strides);
}

static afo_status launch(afo_array *out, afo_array *const *in, int nin, afo_cuda_ctype ct) {
    AFO_TRY(afo_array_alloc(out));
    afo_cuda_strided d;
    afo_cuda_describe(&d, out, in, nin);
    afo_cuda_elementwise(&d, out->op, ct, afo_cuda_stream());
    return afo_cuda_launched(afo_op_get(out->op)->name);
}

/* Ops with a bool result compare in their inputs' promoted type. */
static afo_status ew_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    afo_dtype t = out->dtype;
    if (t == AFO_BOOL) {
        t = in[0]->dtype;
        for (int i = 1; i < nin; i++) t = afo_promote_types(t, in[i]->dtype);
    }
    return launch(out, in, nin, ctype_of(t));
}

static afo_status astype_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    afo_cuda_ctype from = ctype_of(in[0]->dtype), to = ctype_of(out->dtype);
    /* the widest of the two holds every value of both exactly enough */
    afo_cuda_ctype ct = from == to ? from : (from == AFO_CUDA_F32 && to == AFO_CUDA_I64) ? AFO_CUDA_F32 : AFO_CUDA_F64;
    return launch(out, in, 1, ct);
}

void afo_cuda_register_elementwise(void) {
    for (int op = AFO_OP_NEG; op <= AFO_OP_WHERE; op++) afo_op_set_kernel((afo_op)op, AFO_CUDA, ew_kernel);
    afo_op_set_kernel(AFO_OP_ASTYPE, AFO_CUDA, astype_kernel);
}
