/* CUDA take, take_along_axis and scatter_add, with the attrs and semantics
 * of src/ops/indexing.c (i[0] = axis). argsort and argtopk have no CUDA
 * kernel yet: they run on the CPU (eval_node's fallback).
 *
 * Index range: the CPU refuses an out-of-range index at evaluation. Here the
 * host checks the indices whenever their bytes are on the host too (data
 * made there, as token ids are, or already read back), which costs no
 * transfer and no wait; indices that exist only on the GPU cannot be checked
 * without stalling the stream, and the kernels clamp them into range so that
 * a bad one reads a wrong row rather than stray memory. */
#include <stdlib.h>

#include "backends/cpu/cpu.h"
#include "backends/cuda/core_kernels.h"
#include "backends/cuda/cuda.h"

#define AXIS(a) ((int)(a)->i[0])

/* The bytes of b readable on the host without a transfer, or NULL. */
static const afo_buffer *host_bytes(const afo_buffer *b) {
    if (b->device == AFO_CPU) return b;
    if (b->copy && b->copy->device == AFO_CPU) return b->copy;
    if (b->origin && b->origin->device == AFO_CPU) return b->origin;
    return NULL;
}

static afo_status check_indices(const char *name, const afo_array *idx, int axis, int64_t n) {
    const afo_buffer *host = host_bytes(idx->buf);
    if (!host || idx->size == 0) return AFO_OK;
    int64_t *v = malloc(sizeof(int64_t) * (size_t)idx->size);
    if (!v) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory for %lld indices", name, (long long)idx->size);
    afo_array view = *idx;
    view.buf = (afo_buffer *)host;
    afo_cpu_copy(&view, v, AFO_INT64);
    afo_status st = AFO_OK;
    for (int64_t i = 0; i < idx->size && st == AFO_OK; i++)
        if (v[i] < -n || v[i] >= n)
            st = afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: index %lld out of range for axis %d of size %lld", name,
                           (long long)v[i], axis, (long long)n);
    free(v);
    return st;
}

/* Merges neighbouring axes contiguous in x, idx and the (dense) output. */
static void gather_collapse(afo_cuda_gather *g) {
    int64_t *strides[2] = {g->xs, g->is};
    g->ndim = afo_merge_axes(g->ndim, g->shape, 2, strides);
}

static afo_status gather_run(afo_array *out, afo_cuda_gather *g, const afo_array *x, const afo_array *idx, int axis) {
    const char *name = afo_op_get(out->op)->name;
    AFO_TRY(check_indices(name, idx, axis, x->shape[axis]));
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    g->ndim = out->ndim;
    g->size = out->size;
    g->axis_stride = x->strides[axis];
    g->axis_size = x->shape[axis];
    g->x = afo_array_ptr(x);
    g->idx = afo_array_ptr(idx);
    g->idx_dtype = idx->dtype;
    g->out = afo_array_ptr(out);
    g->elem_size = (int)afo_dtype_size(out->dtype);
    for (int d = 0; d < out->ndim; d++) g->shape[d] = out->shape[d];
    gather_collapse(g);
    afo_cuda_gather_launch(g, afo_cuda_stream());
    return afo_cuda_launched(name);
}

static afo_status take_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx = in[1];
    int axis = AXIS(a), ni = idx->ndim;
    afo_cuda_gather g = {0};
    for (int d = 0; d < out->ndim; d++) {
        bool from_idx = d >= axis && d < axis + ni;
        g.xs[d] = from_idx ? 0 : x->strides[d < axis ? d : d - ni + 1];
        g.is[d] = from_idx ? idx->strides[d - axis] : 0;
    }
    return gather_run(out, &g, x, idx, axis);
}

static afo_status take_along_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx = in[1];
    int axis = AXIS(a);
    afo_cuda_gather g = {0};
    for (int d = 0; d < out->ndim; d++) {
        g.xs[d] = d == axis || x->shape[d] == 1 ? 0 : x->strides[d];
        g.is[d] = idx->shape[d] == 1 ? 0 : idx->strides[d];
    }
    return gather_run(out, &g, x, idx, axis);
}

/* A dense array header over buf (no reference taken). */
static afo_array dense_view(afo_buffer *buf, afo_dtype dt, const afo_array *like) {
    afo_array v = *like;
    v.buf = buf;
    v.dtype = dt;
    v.offset = 0;
    afo_contiguous_strides(v.ndim, v.shape, v.strides);
    v.contiguous = true;
    return v;
}

/* Accumulates in the CPU's compute type (float32 for the half types), in a
 * scratch buffer unless out already has that dtype. */
static afo_status scatter_add_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx = in[1], *u = in[2];
    int axis = AXIS(a), nd = x->ndim;
    AFO_TRY(check_indices("scatter_add", idx, axis, x->shape[axis]));
    AFO_TRY(afo_array_alloc(out));
    afo_dtype cdt = x->dtype == AFO_FLOAT64 ? AFO_FLOAT64 : afo_dtype_is_float(x->dtype) ? AFO_FLOAT32 : AFO_INT64;
    afo_buffer *scratch = NULL;
    if (cdt != x->dtype) {
        scratch = afo_buffer_alloc(AFO_CUDA, (size_t)x->size * afo_dtype_size(cdt));
        if (!scratch) return AFO_ERR_OUT_OF_MEMORY;
    }
    afo_array acc = scratch ? dense_view(scratch, cdt, out) : *out;
    afo_status st = afo_cuda_copy_into(&acc, x);
    afo_cuda_scatter s = {.acc = afo_array_ptr(&acc), .acc_dtype = cdt, .idx = afo_array_ptr(idx),
                          .idx_dtype = idx->dtype, .upd = afo_array_ptr(u), .upd_dtype = u->dtype,
                          .axis_size = x->shape[axis], .lines = 1};
    int64_t ushape[AFO_MAX_DIMS], istr[AFO_MAX_DIMS], ustr[AFO_MAX_DIMS];
    memcpy(ushape, x->shape, sizeof(int64_t) * (size_t)nd);
    ushape[axis] = idx->shape[axis] == 1 ? u->shape[axis] : idx->shape[axis];
    afo_broadcast_strides(idx, idx->ndim, ushape, istr);
    afo_broadcast_strides(u, u->ndim, ushape, ustr);
    s.k = ushape[axis];
    s.acc_axis = acc.strides[axis];
    s.idx_axis = istr[axis];
    s.upd_axis = ustr[axis];
    for (int d = 0; d < nd; d++) {
        if (d == axis) continue;
        s.shape[s.nd] = ushape[d];
        s.acc_strides[s.nd] = acc.strides[d];
        s.idx_strides[s.nd] = istr[d];
        s.upd_strides[s.nd++] = ustr[d];
        s.lines *= ushape[d];
    }
    if (st == AFO_OK && s.k > 0 && s.lines > 0) {
        afo_cuda_scatter_add(&s, afo_cuda_stream());
        st = afo_cuda_launched("scatter_add");
    }
    if (st == AFO_OK && scratch) st = afo_cuda_copy_into(out, &acc);
    afo_buffer_release(scratch); /* reuse is ordered after these kernels by the stream */
    return st;
}

void afo_cuda_register_indexing(void) {
    afo_op_set_kernel(AFO_OP_TAKE, AFO_CUDA, take_kernel);
    afo_op_set_kernel(AFO_OP_TAKE_ALONG_AXIS, AFO_CUDA, take_along_kernel);
    afo_op_set_kernel(AFO_OP_SCATTER_ADD, AFO_CUDA, scatter_add_kernel);
}
