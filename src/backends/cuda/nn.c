/* CUDA kernels of the fused nn ops: the glue from arrays and attributes to
 * the launchers of nn_kernels.h. Inputs are read through their strides;
 * only attention operands of mixed dtypes, or with a strided last axis, are
 * first copied densely. */
#include <math.h>

#include "backends/cpu/nn_kernels.h"
#include "backends/cuda/cuda.h"
#include "backends/cuda/nn_kernels.h"

/* x's axes before the last as rows (merged where strides allow); the last
 * axis holds each row's elements. */
static void rows_of(const afo_array *x, afo_cuda_rows *r) {
    memset(r, 0, sizeof *r);
    int nd = x->ndim;
    r->n = x->shape[nd - 1];
    r->step = x->strides[nd - 1];
    r->rows = afo_shape_size(nd - 1, x->shape);
    for (int ax = 0; ax < nd - 1; ax++) {
        if (x->shape[ax] == 1) continue;
        int k = r->ndim;
        if (k > 0 && r->strides[k - 1] == x->strides[ax] * x->shape[ax]) {
            r->shape[k - 1] *= x->shape[ax];
            r->strides[k - 1] = x->strides[ax];
            continue;
        }
        r->shape[k] = x->shape[ax];
        r->strides[k] = x->strides[ax];
        r->ndim++;
    }
}

static afo_cuda_vec vec_of(const afo_array *a) {
    afo_cuda_vec v = {NULL, AFO_FLOAT32, 0};
    if (a) v = (afo_cuda_vec){afo_array_ptr(a), a->dtype, a->strides[0]};
    return v;
}

static afo_status norm_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    int k = 1;
    const afo_array *w = a->i[AFO_NORM_I_HAS_WEIGHT] ? in[k++] : NULL;
    const afo_array *b = a->i[AFO_NORM_I_HAS_BIAS] ? in[k++] : NULL;
    afo_cuda_rows r;
    rows_of(in[0], &r);
    afo_cuda_norm(&r, afo_array_ptr(in[0]), out->dtype, afo_array_ptr(out), vec_of(w), vec_of(b),
                  out->op == AFO_OP_LAYER_NORM, a->f[AFO_NORM_F_EPS], afo_cuda_stream());
    return afo_cuda_launched(afo_op_get(out->op)->name);
}

static afo_status rope_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    const afo_array *x = in[0];
    afo_cuda_rope p = {.L = x->shape[x->ndim - 2], .dims = a->i[AFO_ROPE_I_DIMS], .offset = a->i[AFO_ROPE_I_OFFSET],
                       .traditional = a->i[AFO_ROPE_I_TRADITIONAL] != 0, .inverse = a->i[AFO_ROPE_I_INVERSE] != 0,
                       .base = a->f[AFO_ROPE_F_BASE], .scale = a->f[AFO_ROPE_F_SCALE],
                       .freqs = vec_of(a->i[AFO_ROPE_I_HAS_FREQS] ? in[1] : NULL),
                       .position = a->i[AFO_ROPE_I_HAS_POSITION] ? afo_array_ptr(in[nin - 1]) : NULL};
    for (int64_t i = 0; !p.freqs.data && i < p.dims / 2 && i < AFO_CUDA_ROPE_TABLE; i++)
        p.inv_freq[i] = pow(p.base, -2.0 * (double)i / (double)p.dims);
    afo_cuda_rows r;
    rows_of(x, &r);
    afo_cuda_rope_apply(&r, afo_array_ptr(x), out->dtype, afo_array_ptr(out), &p, afo_cuda_stream());
    return afo_cuda_launched("rope");
}

/* Strides over the first three axes, 0 along size-1 axes (so that they do
 * not spoil the alignment of vector loads). */
static void bhl_strides(const afo_array *x, int64_t s[3]) {
    for (int d = 0; d < 3; d++) s[d] = x->shape[d] == 1 ? 0 : x->strides[d];
}

static afo_status sdpa_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    afo_array view[3];
    afo_buffer *scratch[4] = {NULL, NULL, NULL, NULL};
    afo_status st = AFO_OK;
    for (int i = 0; i < 3 && st == AFO_OK; i++) {
        view[i] = *in[i];
        if (in[i]->dtype != out->dtype || (in[i]->strides[3] != 1 && in[i]->shape[3] > 1))
            st = afo_cuda_dense(in[i], out->dtype, &view[i], &scratch[i]);
    }
    afo_cuda_sdpa p = {.B = view[0].shape[0], .Hq = view[0].shape[1], .Hkv = view[1].shape[1],
                       .Lq = view[0].shape[2], .Lk = view[1].shape[2], .D = view[0].shape[3], .Dv = view[2].shape[3],
                       .dtype = out->dtype, .q = afo_array_ptr(&view[0]), .k = afo_array_ptr(&view[1]),
                       .v = afo_array_ptr(&view[2]), .causal = a->i[AFO_SDPA_I_CAUSAL] != 0,
                       .window = a->i[AFO_SDPA_I_WINDOW], .scale = a->f[AFO_SDPA_F_SCALE], .out = afo_array_ptr(out)};
    bool positioned = a->i[AFO_SDPA_I_HAS_POSITION];
    if (positioned) p.position = afo_array_ptr(in[nin - 1]);
    bhl_strides(&view[0], p.qs);
    bhl_strides(&view[1], p.ks);
    bhl_strides(&view[2], p.vs);
    if (nin > 3 + positioned) {
        const afo_array *m = in[3];
        p.mask = afo_array_ptr(m);
        p.mask_dtype = m->dtype;
        for (int d = 0; d < 4; d++) {
            int md = d - (4 - m->ndim);
            p.ms[d] = md < 0 || m->shape[md] == 1 ? 0 : m->strides[md];
        }
    }
    int supported = 0;
    size_t bytes = st == AFO_OK ? afo_cuda_sdpa_plan(&p, &supported) : 0;
    if (st == AFO_OK && !supported)
        st = afo_error(AFO_ERR_UNSUPPORTED,
                       "scaled_dot_product_attention: head size %lld/%lld on CUDA (at most 256, 128 for float64)",
                       (long long)p.D, (long long)p.Dv);
    if (st == AFO_OK && bytes) {
        scratch[3] = afo_buffer_alloc(AFO_CUDA, bytes);
        if (!scratch[3]) st = afo_last_status();
        else p.scratch = scratch[3]->data;
    }
    if (st == AFO_OK) st = afo_cuda_status(afo_cuda_sdpa_run(&p, afo_cuda_stream()), "scaled_dot_product_attention");
    /* the stream orders the kernels before any reuse of the scratch */
    for (int i = 0; i < 4; i++)
        if (scratch[i]) afo_buffer_release(scratch[i]);
    return st;
}

void afo_cuda_register_nn(void) {
    afo_op_set_kernel(AFO_OP_RMS_NORM, AFO_CUDA, norm_kernel);
    afo_op_set_kernel(AFO_OP_LAYER_NORM, AFO_CUDA, norm_kernel);
    afo_op_set_kernel(AFO_OP_ROPE, AFO_CUDA, rope_kernel);
    afo_op_set_kernel(AFO_OP_SDPA, AFO_CUDA, sdpa_kernel);
}
