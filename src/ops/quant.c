/* Affine quantization ops (MLX's format; see include/afo/quant.h). Quantize
 * is one op whose attribute picks the output (packed words, scales or
 * biases), so the three results stay independent lazy nodes. Kernels and
 * the attribute layout: backends/cpu/quant_kernels.[ch]. */
#include "backends/cpu/quant_kernels.h"
#include "core/compose.h"

static afo_status check_format(const char *op, int64_t gs, int64_t bits) {
    if (gs != 32 && gs != 64 && gs != 128)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: group size %lld is not 32, 64 or 128", op, (long long)gs);
    if (bits < 2 || bits > 8 || bits == 7)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: bits %lld is not 2, 3, 4, 5, 6 or 8", op, (long long)bits);
    return AFO_OK;
}

static bool half_or_single(afo_dtype t) { return t == AFO_FLOAT32 || t == AFO_BFLOAT16 || t == AFO_FLOAT16; }

static afo_attrs qattrs(int gs, int bits, int extra) {
    afo_attrs a = {.ni = AFO_QUANT_NI};
    a.i[AFO_QUANT_I_GS] = gs;
    a.i[AFO_QUANT_I_BITS] = bits;
    a.i[AFO_QUANT_I_EXTRA] = extra;
    return a;
}

/* ------------------------------------------------------------ quantize */

static afo_status quantize_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *at) {
    const afo_array *w = in[0];
    int64_t gs = at->i[AFO_QUANT_I_GS], bits = at->i[AFO_QUANT_I_BITS];
    AFO_TRY(check_format("quantize", gs, bits));
    if (!half_or_single(w->dtype))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantize: %s weights are not supported (float32, bfloat16, float16)",
                         afo_dtype_name(w->dtype));
    int64_t n = w->ndim ? w->shape[w->ndim - 1] : 0;
    if (n <= 0 || n % gs)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantize: last axis %lld is not a positive multiple of the group size %lld",
                         (long long)n, (long long)gs);
    out->ndim = w->ndim;
    memcpy(out->shape, w->shape, sizeof(int64_t) * (size_t)w->ndim);
    bool packed = at->i[AFO_QUANT_I_EXTRA] == AFO_QPART_PACKED;
    out->shape[w->ndim - 1] = packed ? n * bits / 32 : n / gs;
    out->dtype = packed ? AFO_UINT32 : w->dtype;
    return AFO_OK;
}

afo_status afo_quantize(afo_array *w, int group_size, int bits, afo_array **wq, afo_array **scales,
                        afo_array **biases) {
    if (!w || !wq || !scales || !biases) return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantize: NULL argument");
    *wq = *scales = *biases = NULL;
    afo_array *outs[3];
    for (int p = 0; p < 3; p++) {
        afo_attrs at = qattrs(group_size, bits, p);
        outs[p] = afo_node(AFO_OP_QUANTIZE, &w, 1, &at);
        if (!outs[p]) {
            afo_release_n(outs, p);
            return afo_last_status();
        }
    }
    *wq = outs[0];
    *scales = outs[1];
    *biases = outs[2];
    return AFO_OK;
}

/* ------------------------------------------------------------ packed operands */

/* Validates wq, scales, biases (in[0..2]) and returns the unpacked last
 * axis in *cols. */
static afo_status check_packed(const char *op, afo_array *const *in, const afo_attrs *at, int64_t *cols) {
    const afo_array *w = in[0], *s = in[1], *b = in[2];
    int64_t gs = at->i[AFO_QUANT_I_GS], bits = at->i[AFO_QUANT_I_BITS];
    AFO_TRY(check_format(op, gs, bits));
    if (w->dtype != AFO_UINT32)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: packed weights must be uint32, not %s", op, afo_dtype_name(w->dtype));
    if (!half_or_single(s->dtype) || b->dtype != s->dtype)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: scales (%s) and biases (%s) must share one of float32, bfloat16, float16",
                         op, afo_dtype_name(s->dtype), afo_dtype_name(b->dtype));
    int64_t words = w->ndim ? w->shape[w->ndim - 1] : 0;
    if (words <= 0 || words * 32 % bits || words * 32 / bits % gs)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: %lld words per row do not hold whole groups of %lld %lld-bit elements",
                         op, (long long)words, (long long)gs, (long long)bits);
    *cols = words * 32 / bits;
    char s1[128], s2[128], s3[128];
    bool ok = s->ndim == w->ndim && b->ndim == w->ndim && s->shape[s->ndim - 1] == *cols / gs;
    for (int d = 0; ok && d < w->ndim; d++)
        ok = b->shape[d] == s->shape[d] && (d == w->ndim - 1 || s->shape[d] == w->shape[d]);
    if (!ok)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: scales %s and biases %s do not match packed weights %s (group size %lld)",
                         op, afo_shape_str(s->ndim, s->shape, s1, sizeof s1), afo_shape_str(b->ndim, b->shape, s2, sizeof s2),
                         afo_shape_str(w->ndim, w->shape, s3, sizeof s3), (long long)gs);
    return AFO_OK;
}

/* The node, or an error naming the op when an operand is NULL. Kernels
 * read strided operands through dense copies. */
static afo_array *node_checked(afo_op op, afo_array *const *args, int n, const afo_attrs *at) {
    for (int i = 0; i < n; i++)
        if (!args[i]) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "%s: NULL argument", afo_op_get(op)->name);
    return afo_node(op, args, n, at);
}

/* ------------------------------------------------------------ dequantize */

static afo_status dequantize_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *at) {
    int64_t cols;
    AFO_TRY(check_packed("dequantize", in, at, &cols));
    out->ndim = in[0]->ndim;
    memcpy(out->shape, in[0]->shape, sizeof(int64_t) * (size_t)out->ndim);
    out->shape[out->ndim - 1] = cols;
    out->dtype = in[1]->dtype;
    return AFO_OK;
}

afo_array *afo_dequantize(afo_array *wq, afo_array *scales, afo_array *biases, int group_size, int bits) {
    afo_array *args[3] = {wq, scales, biases};
    afo_attrs at = qattrs(group_size, bits, 0);
    return node_checked(AFO_OP_DEQUANTIZE, args, 3, &at);
}

/* ------------------------------------------------------------ quantized matmul */

static afo_status qmm_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *at) {
    const afo_array *x = in[0], *w = in[1];
    int64_t cols;
    AFO_TRY(check_packed("quantized_matmul", in + 1, at, &cols));
    if (w->ndim != 2)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_matmul: packed weights must be 2-D, not %d-D", w->ndim);
    if (!half_or_single(x->dtype) || x->ndim < 1)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_matmul: x must be float32, bfloat16 or float16 with at least one axis");
    bool tr = at->i[AFO_QUANT_I_EXTRA] != 0;
    int64_t K = tr ? cols : w->shape[0], N = tr ? w->shape[0] : cols;
    if (x->shape[x->ndim - 1] != K)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_matmul: x's last axis %lld does not match the weights' %s %lld",
                         (long long)x->shape[x->ndim - 1], tr ? "input size" : "rows", (long long)K);
    out->ndim = x->ndim;
    memcpy(out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    out->shape[x->ndim - 1] = N;
    out->dtype = x->dtype;
    return AFO_OK;
}

static afo_status qmm_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = NULL;
    if (arg != 0) return AFO_OK; /* quantized weights are constants */
    const afo_attrs *at = &out->attrs;
    *grad = afo_quantized_matmul(g, out->in[1], out->in[2], out->in[3], !at->i[AFO_QUANT_I_EXTRA],
                                 (int)at->i[AFO_QUANT_I_GS], (int)at->i[AFO_QUANT_I_BITS]);
    return *grad ? AFO_OK : afo_last_status();
}

afo_array *afo_quantized_matmul(afo_array *x, afo_array *wq, afo_array *scales, afo_array *biases, int transpose,
                                int group_size, int bits) {
    afo_array *args[4] = {x, wq, scales, biases};
    afo_attrs at = qattrs(group_size, bits, transpose != 0);
    return node_checked(AFO_OP_QUANTIZED_MATMUL, args, 4, &at);
}

/* ------------------------------------------------------------ quantized matmul of parts */

/* in: x, then wq, scales, biases per part. */
static afo_status qmm_parts_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *at) {
    int parts = (nin - 1) / 3;
    if (nin < 4 || (nin - 1) % 3 || parts > AFO_QMM_MAX_PARTS || !at->i[AFO_QUANT_I_EXTRA])
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_matmul_parts: 1 to %d transposed parts, not %d inputs",
                         AFO_QMM_MAX_PARTS, nin);
    int64_t n = 0;
    for (int p = 0; p < parts; p++) {
        afo_array *one[4] = {in[0], in[1 + 3 * p], in[2 + 3 * p], in[3 + 3 * p]};
        AFO_TRY(qmm_shape(out, one, 4, at));
        n += out->shape[out->ndim - 1];
    }
    out->shape[out->ndim - 1] = n;
    return AFO_OK;
}

/* The sum over parts of each part's gradient (its columns of g). */
static afo_status qmm_parts_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = NULL;
    if (arg != 0) return AFO_OK;
    const afo_attrs *at = &out->attrs;
    afo_array *sum = NULL;
    int64_t col = 0;
    for (int p = 0; p < (out->nin - 1) / 3; p++) {
        afo_array *const *t = out->in + 1 + 3 * p;
        int64_t n = afo_array_dim(t[0], 0);
        afo_array *gp = afo_slice_axis(g, -1, col, col + n);
        afo_array *d = gp ? afo_quantized_matmul(gp, t[0], t[1], t[2], 0, (int)at->i[AFO_QUANT_I_GS],
                                                 (int)at->i[AFO_QUANT_I_BITS]) : NULL;
        afo_release(gp);
        sum = sum ? ow_add(sum, d) : d;
        if (!sum) return afo_last_status();
        col += n;
    }
    *grad = sum;
    return AFO_OK;
}

afo_array *afo_quantized_matmul_parts(afo_array *x, int parts, afo_array *const *wq, afo_array *const *scales,
                                      afo_array *const *biases, int group_size, int bits) {
    if (parts < 1 || parts > AFO_QMM_MAX_PARTS)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "quantized_matmul_parts: %d parts", parts);
    afo_array *args[1 + 3 * AFO_QMM_MAX_PARTS] = {x};
    for (int p = 0; p < parts; p++) args[1 + 3 * p] = wq[p], args[2 + 3 * p] = scales[p], args[3 + 3 * p] = biases[p];
    afo_attrs at = qattrs(group_size, bits, 1);
    return node_checked(AFO_OP_QUANTIZED_MATMUL_PARTS, args, 1 + 3 * parts, &at);
}

/* ------------------------------------------------------------ quantized take */

static afo_status qtake_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *at) {
    int64_t cols;
    AFO_TRY(check_packed("quantized_take", in, at, &cols));
    const afo_array *ix = in[3];
    if (in[0]->ndim != 2)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_take: packed table must be 2-D, not %d-D", in[0]->ndim);
    if (ix->dtype != AFO_INT32 && ix->dtype != AFO_UINT32 && ix->dtype != AFO_INT64)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_take: indices must be int32, uint32 or int64, not %s",
                         afo_dtype_name(ix->dtype));
    if (ix->ndim + 1 > AFO_MAX_DIMS)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_take: indices have too many axes");
    out->ndim = ix->ndim + 1;
    memcpy(out->shape, ix->shape, sizeof(int64_t) * (size_t)ix->ndim);
    out->shape[ix->ndim] = cols;
    out->dtype = in[1]->dtype;
    return AFO_OK;
}

afo_array *afo_quantized_take(afo_array *wq, afo_array *scales, afo_array *biases, afo_array *indices,
                              int group_size, int bits) {
    afo_array *args[4] = {wq, scales, biases, indices};
    afo_attrs at = qattrs(group_size, bits, 0);
    return node_checked(AFO_OP_QUANTIZED_TAKE, args, 4, &at);
}

static const afo_op_def def_quantize = {"quantize", quantize_shape, {afo_cpu_quantize}, NULL};
static const afo_op_def def_dequantize = {"dequantize", dequantize_shape, {afo_cpu_dequantize}, NULL};
static const afo_op_def def_qmm = {"quantized_matmul", qmm_shape, {afo_cpu_quantized_matmul}, qmm_vjp};
static const afo_op_def def_qtake = {"quantized_take", qtake_shape, {afo_cpu_quantized_take}, NULL};
static const afo_op_def def_qmm_parts = {"quantized_matmul_parts", qmm_parts_shape, {afo_cpu_quantized_matmul},
                                         qmm_parts_vjp};

void afo_register_quant_ops(void) {
    afo_op_register(AFO_OP_QUANTIZE, &def_quantize);
    afo_op_register(AFO_OP_DEQUANTIZE, &def_dequantize);
    afo_op_register(AFO_OP_QUANTIZED_MATMUL, &def_qmm);
    afo_op_register(AFO_OP_QUANTIZED_TAKE, &def_qtake);
    afo_op_register(AFO_OP_QUANTIZED_MATMUL_PARTS, &def_qmm_parts);
}
