/* CUDA kernels of the quantization ops (quantize, dequantize,
 * quantized_matmul, quantized_take): the operands become plain descriptors
 * for the launchers in quant.cu and quant_mm.cu. The shape rules in
 * src/ops/quant.c have already validated them. */
#include <stdint.h>

#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/quant_kernels.h"
#include "backends/cuda/cuda.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/quant_kernels.h"

/* The kernels read their operands as dense arrays with 16-byte vector
 * loads; an operand that is a strided view, or starts off that alignment,
 * is copied into a scratch buffer first (on the stream, so the copy is
 * ordered before the kernel; the buffer goes back to the pool once the
 * launches are queued, and the pool hands it out only to later work on the
 * same stream). */
#define MAX_IN 4
typedef struct dense_set {
    const void *ptr[MAX_IN];
    afo_buffer *scratch[MAX_IN];
} dense_set;

static void dense_release(dense_set *d) {
    for (int i = 0; i < MAX_IN; i++)
        if (d->scratch[i]) afo_buffer_release(d->scratch[i]);
}

static afo_status dense_inputs(afo_array *const *in, int nin, dense_set *d) {
    memset(d, 0, sizeof *d);
    for (int i = 0; i < nin; i++) {
        const afo_array *a = in[i];
        d->ptr[i] = afo_array_ptr(a);
        if (a->contiguous && (uintptr_t)d->ptr[i] % 16 == 0) continue;
        d->scratch[i] = afo_buffer_alloc(AFO_CUDA, afo_array_nbytes(a) + 16);
        if (!d->scratch[i]) {
            dense_release(d);
            return afo_last_status();
        }
        afo_array dense = *a;
        dense.buf = d->scratch[i];
        dense.offset = 0;
        afo_contiguous_strides(a->ndim, a->shape, dense.strides);
        dense.contiguous = true;
        afo_cuda_strided desc;
        afo_cuda_describe(&desc, &dense, (afo_array *const[]){(afo_array *)a}, 1);
        /* float32 holds every float16/bfloat16/float32 value, int64 every index and word */
        afo_cuda_elementwise(&desc, AFO_OP_ASTYPE, afo_dtype_is_float(a->dtype) ? AFO_CUDA_F32 : AFO_CUDA_I64,
                             afo_cuda_stream());
        d->ptr[i] = d->scratch[i]->data;
    }
    return AFO_OK;
}

/* Whether a's bytes on the GPU are no queued kernel's output. */
static bool settled(const afo_array *a) { return a->buf->device == AFO_CUDA && afo_cuda_settled(a->buf); }

static afo_cuda_qmat qmat_of(afo_array *const *in, const dense_set *d, int first, const afo_attrs *attrs) {
    const afo_array *w = in[first];
    afo_cuda_qmat m = {.w = d->ptr[first], .s = d->ptr[first + 1], .b = d->ptr[first + 2], .sdt = in[first + 1]->dtype,
                       .gs = (int)attrs->i[AFO_QUANT_I_GS], .bits = (int)attrs->i[AFO_QUANT_I_BITS], .settled = true};
    m.words = w->shape[w->ndim - 1];
    m.cols = m.words * 32 / m.bits;
    m.rows = w->size / m.words;
    for (int i = first; i < first + 3; i++) m.settled = m.settled && !d->scratch[i] && settled(in[i]);
    return m;
}

/* Launches, releases the scratch copies, and reports the launch status. */
#define FINISH(d, opname)                       \
    do {                                        \
        dense_release(d);                       \
        return afo_cuda_launched(opname);       \
    } while (0)

static afo_status quantize_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *w = in[0];
    if (w->size == 0) return AFO_OK;
    dense_set d;
    AFO_TRY(dense_inputs(in, 1, &d));
    int64_t cols = w->shape[w->ndim - 1];
    afo_cuda_quantize(d.ptr[0], w->dtype, w->size / cols, cols, (int)attrs->i[AFO_QUANT_I_GS],
                      (int)attrs->i[AFO_QUANT_I_BITS], (int)attrs->i[AFO_QUANT_I_EXTRA], afo_array_ptr(out), out->dtype,
                      afo_cuda_stream());
    FINISH(&d, "quantize");
}

static afo_status dequantize_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    dense_set d;
    AFO_TRY(dense_inputs(in, 3, &d));
    afo_cuda_qmat m = qmat_of(in, &d, 0, attrs);
    afo_cuda_dequantize(&m, NULL, AFO_INT64, m.rows, afo_array_ptr(out), out->dtype, afo_cuda_stream());
    FINISH(&d, "dequantize");
}

/* Indices still on the host (token ids, typically) are checked there, so an
 * out-of-range one fails the op as on the CPU. Indices computed on the GPU
 * cannot be checked without waiting for it; the kernel writes NaN rows for
 * those. */
static afo_status check_host_indices(const afo_array *ix, int64_t rows) {
    if (ix->buf->device != AFO_CPU || !ix->contiguous) return AFO_OK;
    const void *p = afo_array_ptr(ix);
    for (int64_t i = 0; i < ix->size; i++) {
        int64_t v = ix->dtype == AFO_INT32 ? ((const int32_t *)p)[i]
                    : ix->dtype == AFO_UINT32 ? (int64_t)((const uint32_t *)p)[i]
                                              : ((const int64_t *)p)[i];
        if (v < -rows || v >= rows)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_take: index %lld out of range for %lld rows",
                             (long long)v, (long long)rows);
    }
    return AFO_OK;
}

static afo_status qtake_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    /* out->in holds the inputs where they were made (in[] are their GPU copies) */
    AFO_TRY(check_host_indices(out->in[3], in[0]->shape[0]));
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    dense_set d;
    AFO_TRY(dense_inputs(in, 4, &d));
    afo_cuda_qmat m = qmat_of(in, &d, 0, attrs);
    afo_cuda_dequantize(&m, d.ptr[3], in[3]->dtype, in[3]->size, afo_array_ptr(out), out->dtype, afo_cuda_stream());
    FINISH(&d, "quantized_take");
}

/* From this many rows of x on, W dequantized once into a pool buffer and
 * multiplied by cuBLAS beats the tiled kernel, whose tensor-core tiles
 * reach a tenth of cuBLAS's rate (bench_cuda_quant). */
#define DEQUANT_GEMM_ROWS 32

/* y = x @ dequantize(W)^T (or x @ dequantize(W)) through a dequantized copy
 * of W in x's dtype. */
static afo_status qmm_dequantized(afo_array *out, const afo_array *x, const afo_cuda_qmat *m, int transpose) {
    afo_buffer *wd = afo_buffer_alloc(AFO_CUDA, (size_t)(m->rows * m->cols) * afo_dtype_size(x->dtype));
    if (!wd) return afo_last_status();
    afo_cuda_dequantize(m, NULL, AFO_INT64, m->rows, wd->data, x->dtype, afo_cuda_stream());
    afo_array w = {.dtype = x->dtype, .ndim = 2, .size = m->rows * m->cols, .buf = wd, .device = AFO_CUDA};
    /* as the right operand: [K, N], a transposed view of the [N, K] rows */
    w.shape[0] = transpose ? m->cols : m->rows;
    w.shape[1] = transpose ? m->rows : m->cols;
    w.strides[0] = transpose ? 1 : m->cols;
    w.strides[1] = transpose ? m->cols : 1;
    w.contiguous = !transpose;
    afo_status st = afo_cuda_launched("dequantize");
    if (st == AFO_OK) st = afo_cuda_matmul(out, x, &w);
    afo_buffer_release(wd); /* the stream orders the GEMM before any reuse */
    return st;
}

static afo_status qmm_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    dense_set d;
    AFO_TRY(dense_inputs(in, 4, &d));
    const afo_array *x = in[0];
    afo_cuda_qmat m = qmat_of(in, &d, 1, attrs);
    int64_t rows = x->size / x->shape[x->ndim - 1];
    if (rows >= DEQUANT_GEMM_ROWS && (x->dtype == AFO_BFLOAT16 || x->dtype == AFO_FLOAT16) && in[1]->ndim == 2) {
        afo_status st = qmm_dequantized(out, x, &m, (int)attrs->i[AFO_QUANT_I_EXTRA]);
        dense_release(&d);
        return st;
    }
    afo_cuda_quantized_matmul(&m, d.ptr[0], x->dtype, rows, (int)attrs->i[AFO_QUANT_I_EXTRA], afo_array_ptr(out),
                              (afo_cuda_addend){NULL, AFO_FLOAT32}, afo_cuda_stream());
    FINISH(&d, "quantized_matmul");
}

/* out = [r +] x' @ dequantize(W)^T for one row x' of x_size elements,
 * what the int8 matvec computes from its input x as it quantizes it (a
 * norm's or swiglu's output, see afo_cuda_qmv_input); qin: the product's
 * packed weights, scales and biases; `what` names the fused ops in an
 * error. *done left false where the matvec does not take the product. */
static afo_status int8_product(afo_array *out, afo_array *const *qin, const afo_attrs *attrs,
                               const afo_cuda_qmv_input *x, afo_dtype xdt, int64_t x_size, afo_cuda_addend add,
                               const char *what, bool *done) {
    if (!attrs->i[AFO_QUANT_I_EXTRA]) return AFO_OK; /* x @ W^T only */
    dense_set d;
    AFO_TRY(dense_inputs(qin, 3, &d));
    afo_cuda_qmat m = qmat_of(qin, &d, 0, attrs);
    if (x_size != m.cols || !afo_cuda_qmv_int_applies(&m, x->x, xdt, 1)) {
        dense_release(&d);
        return AFO_OK;
    }
    afo_status st = afo_array_alloc(out);
    if (st != AFO_OK) {
        dense_release(&d);
        return st;
    }
    afo_cuda_qmv_int(&m, x, xdt, afo_array_ptr(out), add, afo_cuda_stream());
    *done = true;
    FINISH(&d, what);
}

/* The halves of sw, a deferred swiglu (gate, up) that a product computes
 * along, as the int8 matvec reads them: evaluated on the GPU, contiguous,
 * of sw's dtype and size; false otherwise. */
static bool swiglu_halves(const afo_array *sw, afo_cuda_qmv_input *x) {
    if (sw->op != AFO_OP_SWIGLU || sw->nin != 2) return false;
    const afo_array *g = sw->in[0], *u = sw->in[1];
    for (int i = 0; i < 2; i++) {
        const afo_array *h = sw->in[i];
        if (!h->buf || h->buf->device != AFO_CUDA || !h->contiguous || h->dtype != sw->dtype || h->size != sw->size)
            return false;
    }
    *x = (afo_cuda_qmv_input){.x = afo_array_ptr(g), .up = afo_array_ptr(u)};
    return (uintptr_t)x->up % 16 == 0; /* x's alignment the matvec checks */
}

/* out = [r +] swiglu(gate, up) @ dequantize(W)^T: qin the product's
 * inputs, its x the deferred swiglu (a decode step's down product). */
static afo_status swiglu_product(afo_array *out, afo_array *const *qin, const afo_attrs *attrs, afo_cuda_addend add,
                                 bool *done) {
    const afo_array *sw = qin[0];
    afo_cuda_qmv_input x;
    if (!swiglu_halves(sw, &x)) return AFO_OK;
    return int8_product(out, qin + 1, attrs, &x, sw->dtype, sw->size, add,
                        add.data ? "swiglu + quantized_matmul + add" : "swiglu + quantized_matmul", done);
}

/* out = r + x @ dequantize(W)^T, a decode step's residual add joining the
 * matvec's sums (afo_fused_fn; see residual_product in matmul.c); x may be
 * a swiglu the product takes along (the chain add <- product <- swiglu). */
static afo_status residual_qmm(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin;
    const afo_array *q = in[producer], *r = afo_cuda_residual(out, in, producer);
    if (!r || q->in[1]->deferred || q->in[2]->deferred || q->in[3]->deferred) return AFO_OK; /* x alone comes along */
    const afo_cuda_addend add = {afo_array_ptr(r), r->dtype};
    const afo_array *x = q->in[0];
    if (x->deferred) return swiglu_product(out, q->in, &q->attrs, add, done);
    AFO_TRY(afo_array_alloc(out));
    dense_set d;
    afo_status st = dense_inputs(q->in, 4, &d);
    if (st != AFO_OK) return st;
    afo_cuda_qmat m = qmat_of(q->in, &d, 1, &q->attrs);
    *done = afo_cuda_quantized_matmul(&m, d.ptr[0], x->dtype, x->size / x->shape[x->ndim - 1],
                                      (int)q->attrs.i[AFO_QUANT_I_EXTRA], afo_array_ptr(out), add,
                                      afo_cuda_stream());
    if (!*done) {
        dense_release(&d);
        afo_cuda_declined(out);
        return AFO_OK;
    }
    FINISH(&d, "quantized_matmul + add");
}

/* out = rms_norm(x, weight) @ dequantize(W)^T for one row x, normalized as
 * the int8 matvec quantizes x (afo_fused_fn; see normed_product in
 * matmul.c): the quantized qkv and gate/up products of a decode step. */
static afo_status normed_qmm(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin;
    const afo_array *norm = in[0], *weight, *x = afo_cuda_norm_input(in, producer, &weight);
    if (!x || norm->dtype != x->dtype) return AFO_OK;
    const afo_cuda_qmv_input xn = {.x = afo_array_ptr(x), .norm_weight = afo_array_ptr(weight),
                                   .eps = norm->attrs.f[AFO_NORM_F_EPS], .norm_weight_settled = settled(weight)};
    if ((uintptr_t)xn.norm_weight % 16 != 0) return AFO_OK;
    return int8_product(out, in + 1, &out->attrs, &xn, x->dtype, x->size, (afo_cuda_addend){NULL, AFO_FLOAT32},
                        "rms_norm + quantized_matmul", done);
}

/* out = swiglu(gate, up) @ dequantize(W)^T for one row (afo_fused_fn): a
 * decode step's down product where no residual add takes it along. */
static afo_status swiglu_qmm(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin;
    if (producer != 0) return AFO_OK;
    return swiglu_product(out, in, &out->attrs, (afo_cuda_addend){NULL, AFO_FLOAT32}, done);
}

void afo_cuda_register_quant(void) {
    afo_op_set_kernel(AFO_OP_QUANTIZE, AFO_CUDA, quantize_kernel);
    afo_op_set_kernel(AFO_OP_DEQUANTIZE, AFO_CUDA, dequantize_kernel);
    afo_op_set_kernel(AFO_OP_QUANTIZED_MATMUL, AFO_CUDA, qmm_kernel);
    afo_op_set_kernel(AFO_OP_QUANTIZED_TAKE, AFO_CUDA, qtake_kernel);
    afo_op_set_fused(AFO_CUDA, AFO_OP_ADD, AFO_OP_QUANTIZED_MATMUL, residual_qmm);
    afo_op_set_fused(AFO_CUDA, AFO_OP_QUANTIZED_MATMUL, AFO_OP_RMS_NORM, normed_qmm);
    afo_op_set_fused(AFO_CUDA, AFO_OP_QUANTIZED_MATMUL, AFO_OP_SWIGLU, swiglu_qmm);
}
