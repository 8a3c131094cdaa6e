/* matmul: batched, broadcast over leading axes, float dtypes, accumulating
 * in float32 (float64 for float64) through the CPU GEMM kernels. */
#include "backends/cpu/cpu.h"
#include "backends/cpu/gemm.h"
#include "core/compose.h"

static afo_status matmul_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *a = in[0], *b = in[1];
    int nd = out->ndim;
    int64_t M = out->shape[nd - 2], N = out->shape[nd - 1], K = a->shape[a->ndim - 1];
    if (out->size == 0) return AFO_OK;
    if (K == 0) {
        memset(afo_array_ptr(out), 0, afo_array_nbytes(out));
        return AFO_OK;
    }
    /* batch strides of a and b as seen from out's batch axes (0 = broadcast) */
    int nb = nd - 2;
    int64_t sa[AFO_MAX_DIMS] = {0}, sb[AFO_MAX_DIMS] = {0};
    for (int d = 0; d < nb; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        sa[d] = da >= 0 && a->shape[da] != 1 ? a->strides[da] : 0;
        sb[d] = db >= 0 && b->shape[db] != 1 ? b->strides[db] : 0;
    }
    size_t as = afo_dtype_size(a->dtype), bs = afo_dtype_size(b->dtype), os = afo_dtype_size(out->dtype);
    int64_t batches = afo_shape_size(nb, out->shape);
    for (int64_t bi = 0; bi < batches; bi++) {
        int64_t oa = a->offset, ob = b->offset, r = bi;
        for (int d = nb - 1; d >= 0; d--) {
            int64_t idx = r % out->shape[d];
            r /= out->shape[d];
            oa += idx * sa[d];
            ob += idx * sb[d];
        }
        afo_gemm_args g = {
            .dtype = b->dtype, .a_dtype = a->dtype, .M = M, .N = N, .K = K,
            .A = (const char *)a->buf->data + oa * (int64_t)as, .a_rs = a->strides[a->ndim - 2], .a_cs = a->strides[a->ndim - 1],
            .B = (const char *)b->buf->data + ob * (int64_t)bs, .b_rs = b->strides[b->ndim - 2], .b_cs = b->strides[b->ndim - 1],
            .C = (char *)afo_array_ptr(out) + bi * M * N * (int64_t)os, .c_dtype = out->dtype, .ldc = N,
        };
        AFO_TRY(afo_cpu_gemm(&g));
    }
    return AFO_OK;
}

static afo_status matmul_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    const afo_array *a = in[0], *b = in[1];
    char s1[128], s2[128];
    if (a->shape[a->ndim - 1] != b->shape[b->ndim - 2])
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "matmul: inner dimensions differ: %s @ %s",
                         afo_shape_str(a->ndim, a->shape, s1, sizeof s1), afo_shape_str(b->ndim, b->shape, s2, sizeof s2));
    int nd;
    AFO_TRY(afo_broadcast_shapes("matmul", a->ndim - 2, a->shape, b->ndim - 2, b->shape, &nd, out->shape));
    out->shape[nd] = a->shape[a->ndim - 2];
    out->shape[nd + 1] = b->shape[b->ndim - 1];
    out->ndim = nd + 2;
    out->dtype = afo_promote_types(a->dtype, b->dtype);
    return AFO_OK;
}

static afo_status matmul_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    afo_array *a = out->in[0], *b = out->in[1];
    /* operands may differ in type: each gradient takes its input's */
    if (arg == 0) *grad = ow_astype(ow_unbroadcast(ow_matmul(R(g), ow_swapaxes(R(b), -1, -2)), a), a->dtype);
    else *grad = ow_astype(ow_unbroadcast(ow_matmul(ow_swapaxes(R(a), -1, -2), R(g)), b), b->dtype);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static const afo_op_def def_matmul = {"matmul", matmul_shape, {matmul_kernel}, matmul_vjp};

afo_array *afo_matmul(afo_array *a, afo_array *b) {
    if (!a || !b) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "matmul: NULL operand");
    if (a->ndim == 0 || b->ndim == 0)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "matmul: operands must have at least one dimension");
    afo_dtype t = afo_promote_types(a->dtype, b->dtype);
    if (!afo_dtype_is_float(t))
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "matmul: %s operands are not supported (float only)",
                              afo_dtype_name(t));
    /* 1-D operands as NumPy: a vector becomes a row (a) or column (b) and the
     * added axis is removed from the result */
    afo_array *a2 = a->ndim == 1 ? afo_expand_dims(a, 0) : afo_retain(a);
    afo_array *b2 = b->ndim == 1 ? afo_expand_dims(b, 1) : afo_retain(b);
    /* The kernels multiply float32/float16/bfloat16 operands of different
     * types directly (weights stay in their storage type); only float64
     * and integers are converted. */
    bool mixed_ok = t != AFO_FLOAT64 && afo_dtype_is_float(a->dtype) && afo_dtype_is_float(b->dtype);
    if (!mixed_ok) {
        a2 = ow_astype(a2, t);
        b2 = ow_astype(b2, t);
    }
    if (!a2 || !b2) {
        afo_release(a2);
        afo_release(b2);
        return NULL;
    }
    afo_array *in[2] = {a2, b2};
    afo_array *out = afo_node(AFO_OP_MATMUL, in, 2, NULL);
    afo_release(a2);
    afo_release(b2);
    if (out && b->ndim == 1) out = ow_squeeze(out, -1);
    if (out && a->ndim == 1) out = ow_squeeze(out, b->ndim == 1 ? -1 : -2);
    return out;
}

void afo_register_linalg_ops(void) { afo_op_register(AFO_OP_MATMUL, &def_matmul); }
