/* The CPU's fused pairs around a decode step's quantized matvecs
 * (afo_fused_fn): the rms_norm before a product and the swiglu before the
 * MLP's down projection computed into the product's float32 x, and the
 * residual add after a product done by the threads on each block of rows
 * of y as they finish it. A decode step runs these small ops on the
 * calling thread alone, while the other threads and the memory wait; the
 * pairs spare each one's dispatch, output buffer and a pass over memory.
 * Each declines (the pair then runs as two ops) outside the matvec and for
 * layouts it does not handle: strided or broadcast operands, float64. */
#include <math.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/quant_kernels.h"
#include "backends/cpu/vmath.h"

/* Operands the fused kernels read in place: contiguous, float32 or a
 * 16-bit float (converted a chunk at a time). */
static bool plain_float(const afo_array *a) {
    return a->contiguous && (a->dtype == AFO_FLOAT32 || a->dtype == AFO_BFLOAT16 || a->dtype == AFO_FLOAT16);
}

/* Chunk of a 16-bit operand converted on the stack. */
enum { CHUNK = 256 };

/* x[i] *= scale * a[i] for a (of any plain_float dtype) read from element
 * `from`; float32 a is read in place. */
static void scale_by(float *x, int64_t n, float scale, const afo_array *a, int64_t from) {
    const char *src = (const char *)afo_array_ptr(a) + from * (int64_t)afo_dtype_size(a->dtype);
    float tmp[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t len = n - i0 < CHUNK ? n - i0 : CHUNK;
        const float *v = (const float *)src + i0;
        if (a->dtype != AFO_FLOAT32) {
            afo_cpu_load_row(a->dtype, src + i0 * (int64_t)afo_dtype_size(a->dtype), 1, len, AFO_CT_F32, tmp);
            v = tmp;
        }
        for (int64_t i = 0; i < len; i++) x[i0 + i] = x[i0 + i] * scale * v[i];
    }
}

/* x = rms_norm(norm's x, weight), row by row, as afo_cpu_norm computes it
 * in float32: sum of squares, then x * inv * w. */
static void make_normed(const afo_qmv_fusion *f, float *x, int64_t M, int64_t K) {
    const afo_array *norm = f->producer, *src = norm->in[0], *w = norm->in[1];
    const afo_nn_prims *p = afo_nn_prims_best();
    float eps = (float)norm->attrs.f[AFO_NORM_F_EPS];
    afo_cpu_load_row(src->dtype, afo_array_ptr(src), 1, M * K, AFO_CT_F32, x);
    for (int64_t m = 0; m < M; m++) {
        float *row = x + m * K;
        float inv = 1.0f / sqrtf(p->sq_dev_sum(row, K, 0.0f) / (float)K + eps);
        scale_by(row, K, inv, w, 0);
    }
}

/* x = silu(gate) * up, as the swiglu kernel computes it in float32. */
static void make_swiglu(const afo_qmv_fusion *f, float *x, int64_t M, int64_t K) {
    const afo_array *gate = f->producer->in[0], *up = f->producer->in[1];
    afo_cpu_load_row(gate->dtype, afo_array_ptr(gate), 1, M * K, AFO_CT_F32, x);
    afo_vmath_current()->silu(M * K, x, x);
    scale_by(x, M * K, 1.0f, up, 0);
}

/* out = qmm(rms_norm(x, w)): in[0] the norm. */
static afo_status normed_qmv(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    const afo_array *norm = in[0];
    if (producer != 0 || norm->nin != 2 || !norm->attrs.i[AFO_NORM_I_HAS_WEIGHT] || !plain_float(norm->in[0]) ||
        !plain_float(norm->in[1]) || norm->in[1]->size != norm->shape[norm->ndim - 1])
        return AFO_OK;
    afo_qmv_fusion f = {.make_x = make_normed, .producer = norm};
    return afo_cpu_qmv_fused(out, in, nin, &out->attrs, &f, done);
}

/* out = qmm(swiglu(gate, up)): in[0] the swiglu. */
static afo_status swiglu_qmv(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    const afo_array *sw = in[0];
    if (producer != 0 || !plain_float(sw->in[0]) || !plain_float(sw->in[1]) || sw->in[0]->size != sw->size ||
        sw->in[1]->size != sw->size)
        return AFO_OK;
    afo_qmv_fusion f = {.make_x = make_swiglu, .producer = sw};
    return afo_cpu_qmv_fused(out, in, nin, &out->attrs, &f, done);
}

/* out = r + qmm(x): the residual joins y in the threads' blocks. */
static afo_status residual_qmv(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin;
    const afo_array *q = in[producer], *r = in[1 - producer];
    if (out->dtype != q->dtype || r->size != out->size || q->size != out->size || !plain_float(r)) return AFO_OK;
    afo_qmv_fusion f = {.addend = r};
    return afo_cpu_qmv_fused(out, q->in, q->nin, &q->attrs, &f, done);
}

void afo_cpu_register_qmv_fusions(void) {
    afo_op_set_fused(AFO_CPU, AFO_OP_QUANTIZED_MATMUL, AFO_OP_RMS_NORM, normed_qmv);
    afo_op_set_fused(AFO_CPU, AFO_OP_QUANTIZED_MATMUL_PARTS, AFO_OP_RMS_NORM, normed_qmv);
    afo_op_set_fused(AFO_CPU, AFO_OP_QUANTIZED_MATMUL, AFO_OP_SWIGLU, swiglu_qmv);
    afo_op_set_fused(AFO_CPU, AFO_OP_ADD, AFO_OP_QUANTIZED_MATMUL, residual_qmv);
}
