/* Fused neural-network ops: rms_norm, layer_norm, rope and scaled dot-product
 * attention. Each is one graph node with a fused CPU kernel
 * (backends/cpu/nn_kernels.c; attribute layouts in nn_kernels.h); their
 * gradients are composed from primitive ops, recomputing what they need. */
#include <math.h>

#include "backends/cpu/nn_kernels.h"
#include "core/compose.h"

static const char *opname(const afo_array *out) { return afo_op_get(out->op)->name; }

static void copy_shape(afo_array *out, const afo_array *x, afo_dtype dtype) {
    out->dtype = dtype;
    out->ndim = x->ndim;
    memcpy(out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
}

/* Gradient formulas run in float32 (float64 when the op's output is
 * float64) so that half-precision inputs do not round every intermediate. */
static afo_array *widen(afo_array *a, const afo_array *out) {
    return ow_astype(a, out->dtype == AFO_FLOAT64 ? AFO_FLOAT64 : AFO_FLOAT32);
}

static afo_array *ow_softmax_last(afo_array *a) {
    afo_array *r = a ? afo_softmax(a, -1) : NULL;
    afo_release(a);
    return r;
}

static afo_array *ow_mean_last(afo_array *a) {
    int last = -1;
    afo_array *r = a ? afo_mean(a, &last, 1, 1) : NULL;
    afo_release(a);
    return r;
}

/* The gradient, cast to its input's dtype, as the vjp's status. */
static afo_status grad_as(afo_array **grad, afo_array *g, const afo_array *input) {
    *grad = ow_astype(g, input->dtype);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

/* ------------------------------------------------------------ rms_norm, layer_norm */

static afo_status norm_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0];
    if (x->ndim < 1) return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: x must have at least one axis", opname(out));
    if (!afo_dtype_is_float(x->dtype))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: x must be floating point, not %s", opname(out),
                         afo_dtype_name(x->dtype));
    int64_t d = x->shape[x->ndim - 1];
    for (int k = 1; k < nin; k++) {
        const char *what = k == 1 && a->i[AFO_NORM_I_HAS_WEIGHT] ? "weight" : "bias";
        char buf[64];
        if (!afo_dtype_is_float(in[k]->dtype))
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: %s must be floating point, not %s", opname(out), what,
                             afo_dtype_name(in[k]->dtype));
        if (in[k]->ndim != 1 || in[k]->shape[0] != d)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: %s has shape %s, expected [%lld] (the last axis of x)",
                             opname(out), what, afo_shape_str(in[k]->ndim, in[k]->shape, buf, sizeof buf),
                             (long long)d);
    }
    copy_shape(out, x, x->dtype);
    return AFO_OK;
}

/* With n = (x - c) r the normalized input (c = mean for layer_norm, 0 for
 * rms_norm; r = rsqrt(mean((x - c)^2) + eps)) and h = g * weight:
 *   dx = r (h - mean(h) - n mean(h n)),  the mean(h) term for layer_norm only
 *   dweight = sum of g n over the leading axes, dbias = sum of g. */
static afo_status norm_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    bool center = out->op == AFO_OP_LAYER_NORM, has_w = out->attrs.i[AFO_NORM_I_HAS_WEIGHT] != 0;
    afo_array *x = out->in[0], *w = has_w ? out->in[1] : NULL, *input = out->in[arg];
    if (arg > 0 && !(arg == 1 && has_w)) return grad_as(grad, afo_unbroadcast(g, 1, input->shape), input);
    afo_array *xw = widen(R(x), out), *gw = widen(R(g), out);
    afo_array *xc = center && xw ? ow_sub(R(xw), ow_mean_last(R(xw))) : R(xw);
    afo_array *r = xc ? ow_rsqrt(ow_add(ow_mean_last(ow_square(R(xc))), ow_const(xc, out->attrs.f[AFO_NORM_F_EPS])))
                      : NULL;
    afo_array *n = ow_mul(R(xc), R(r)), *res;
    if (arg > 0) {
        res = ow_unbroadcast(ow_mul(R(gw), R(n)), w);
    } else {
        afo_array *h = w ? ow_mul(R(gw), widen(R(w), out)) : R(gw);
        afo_array *inner = ow_sub(R(h), ow_mul(R(n), ow_mean_last(ow_mul(R(h), R(n)))));
        if (center) inner = ow_sub(inner, ow_mean_last(R(h)));
        res = ow_mul(R(r), inner);
        afo_release(h);
    }
    afo_release_n((afo_array *[]){xw, gw, xc, r, n}, 5);
    return grad_as(grad, res, input);
}

static const afo_op_def def_rms_norm = {"rms_norm", norm_shape, {afo_cpu_norm}, norm_vjp};
static const afo_op_def def_layer_norm = {"layer_norm", norm_shape, {afo_cpu_norm}, norm_vjp};

static afo_array *norm(afo_op op, afo_array *x, afo_array *weight, afo_array *bias, float eps) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "%s: x is NULL", afo_op_get(op)->name);
    afo_attrs at = {.ni = AFO_NORM_NI, .nf = AFO_NORM_NF};
    at.i[AFO_NORM_I_HAS_WEIGHT] = weight != NULL;
    at.i[AFO_NORM_I_HAS_BIAS] = bias != NULL;
    at.f[AFO_NORM_F_EPS] = eps;
    afo_array *in[3] = {x};
    int n = 1;
    if (weight) in[n++] = weight;
    if (bias) in[n++] = bias;
    return afo_node(op, in, n, &at);
}

afo_array *afo_rms_norm(afo_array *x, afo_array *weight, float eps) {
    return norm(AFO_OP_RMS_NORM, x, weight, NULL, eps);
}

afo_array *afo_layer_norm(afo_array *x, afo_array *weight, afo_array *bias, float eps) {
    return norm(AFO_OP_LAYER_NORM, x, weight, bias, eps);
}

/* ------------------------------------------------------------ rope */

static afo_status rope_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0];
    int64_t dims = a->i[AFO_ROPE_I_DIMS];
    if (x->ndim < 2) return afo_error(AFO_ERR_INVALID_ARGUMENT, "rope: x must be [..., L, D], got %d axes", x->ndim);
    if (!afo_dtype_is_float(x->dtype))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "rope: x must be floating point, not %s", afo_dtype_name(x->dtype));
    if (dims <= 0 || dims % 2 || dims > x->shape[x->ndim - 1])
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "rope: dims %lld must be even, positive and at most D = %lld",
                         (long long)dims, (long long)x->shape[x->ndim - 1]);
    bool positioned = a->i[AFO_ROPE_I_HAS_POSITION];
    if (positioned) AFO_TRY(afo_check_position("rope", in[nin - 1]));
    if (a->i[AFO_ROPE_I_HAS_FREQS]) {
        const afo_array *f = in[1];
        char buf[64];
        if (!afo_dtype_is_float(f->dtype) || f->ndim != 1 || f->shape[0] != dims / 2)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "rope: freqs must be float [%lld] (dims/2), got %s %s",
                             (long long)(dims / 2), afo_dtype_name(f->dtype),
                             afo_shape_str(f->ndim, f->shape, buf, sizeof buf));
    }
    copy_shape(out, x, x->dtype);
    return AFO_OK;
}

/* A rotation's transpose is the rotation by the negated angle. */
static afo_status rope_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    if (arg > 0) { /* freqs: not differentiated */
        *grad = NULL;
        return AFO_OK;
    }
    afo_attrs at = out->attrs;
    at.i[AFO_ROPE_I_INVERSE] = !at.i[AFO_ROPE_I_INVERSE];
    afo_array *in[3] = {g, out->nin > 1 ? out->in[1] : NULL, out->nin > 2 ? out->in[2] : NULL};
    return grad_as(grad, afo_node(AFO_OP_ROPE, in, out->nin, &at), out->in[0]);
}

static const afo_op_def def_rope = {"rope", rope_shape, {afo_cpu_rope}, rope_vjp};

static afo_array *rope(afo_array *x, int dims, int traditional, float base, float scale, int64_t offset,
                       afo_array *position, afo_array *freqs) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "rope: x is NULL");
    afo_attrs at = {.ni = AFO_ROPE_NI, .nf = AFO_ROPE_NF};
    at.i[AFO_ROPE_I_DIMS] = dims;
    at.i[AFO_ROPE_I_TRADITIONAL] = traditional != 0;
    at.i[AFO_ROPE_I_OFFSET] = offset;
    at.i[AFO_ROPE_I_HAS_FREQS] = freqs != NULL;
    at.i[AFO_ROPE_I_HAS_POSITION] = position != NULL;
    at.f[AFO_ROPE_F_BASE] = base;
    at.f[AFO_ROPE_F_SCALE] = scale;
    afo_array *in[3] = {x};
    int n = 1;
    if (freqs) in[n++] = freqs;
    if (position) in[n++] = position;
    return afo_node(AFO_OP_ROPE, in, n, &at);
}

afo_array *afo_rope(afo_array *x, int dims, int traditional, float base, float scale, int64_t offset,
                    afo_array *freqs) {
    return rope(x, dims, traditional, base, scale, offset, NULL, freqs);
}

afo_array *afo_rope_at(afo_array *x, int dims, int traditional, float base, float scale, afo_array *offset,
                       afo_array *freqs) {
    if (!offset) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "rope_at: offset is NULL");
    return rope(x, dims, traditional, base, scale, 0, offset, freqs);
}

/* ------------------------------------------------------------ attention */

static afo_status sdpa_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    static const char *const names[4] = {"q", "k", "v", "mask"};
    const char *op = "scaled_dot_product_attention";
    char b1[64], b2[64];
    for (int i = 0; i < 3; i++) {
        if (in[i]->ndim != 4)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: %s must be [B, H, L, D], got %s", op, names[i],
                             afo_shape_str(in[i]->ndim, in[i]->shape, b1, sizeof b1));
        if (!afo_dtype_is_float(in[i]->dtype))
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: %s must be floating point, not %s", op, names[i],
                             afo_dtype_name(in[i]->dtype));
    }
    const int64_t *q = in[0]->shape, *k = in[1]->shape, *v = in[2]->shape;
    if (k[0] != q[0] || v[0] != q[0] || v[1] != k[1] || v[2] != k[2] || k[3] != q[3])
        return afo_error(AFO_ERR_INVALID_ARGUMENT,
                         "%s: k %s and v %s do not fit q %s (same batch, k/v heads and lengths, k's D = q's D)", op,
                         afo_shape_str(4, k, b1, sizeof b1), afo_shape_str(4, v, b2, sizeof b2),
                         afo_shape_str(4, q, (char[64]){0}, 64));
    if (k[1] < 1 || q[1] % k[1])
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: %lld query heads are not a multiple of %lld kv heads", op,
                         (long long)q[1], (long long)k[1]);
    if (a->i[AFO_SDPA_I_WINDOW] < 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: window %lld is negative", op,
                         (long long)a->i[AFO_SDPA_I_WINDOW]);
    int64_t full[4] = {q[0], q[1], q[2], k[2]};
    bool positioned = a->i[AFO_SDPA_I_HAS_POSITION];
    if (positioned) {
        AFO_TRY(afo_check_position(op, in[nin - 1]));
        if (!a->i[AFO_SDPA_I_CAUSAL])
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: a query position needs causal attention", op);
    }
    if (nin > 3 + positioned) {
        const afo_array *m = in[3];
        if (m->dtype != AFO_BOOL && !afo_dtype_is_float(m->dtype))
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: mask must be bool or floating point, not %s", op,
                             afo_dtype_name(m->dtype));
        bool fits = m->ndim <= 4;
        for (int d = 0; fits && d < m->ndim; d++) {
            int64_t want = full[4 - m->ndim + d];
            fits = m->shape[d] == 1 || m->shape[d] == want;
        }
        if (!fits)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: mask %s does not broadcast to the scores %s", op,
                             afo_shape_str(m->ndim, m->shape, b1, sizeof b1), afo_shape_str(4, full, b2, sizeof b2));
    }
    out->dtype = afo_promote_types(in[0]->dtype, afo_promote_types(in[1]->dtype, in[2]->dtype));
    out->ndim = 4;
    int64_t shape[4] = {q[0], q[1], q[2], v[3]};
    memcpy(out->shape, shape, sizeof shape);
    return AFO_OK;
}

/* k or v [B, Hkv, L, X] repeated to [B, Hq, L, X]: kv head h serves query
 * heads h*G .. h*G+G-1. */
static afo_array *ow_repeat_heads(afo_array *a, int64_t G) {
    if (!a || G == 1) return a;
    const int64_t *s = a->shape;
    int64_t s5[5] = {s[0], s[1], 1, s[2], s[3]}, b5[5] = {s[0], s[1], G, s[2], s[3]};
    int64_t s4[4] = {s[0], s[1] * G, s[2], s[3]};
    return ow_reshape(ow_broadcast_to(ow_reshape(a, 5, s5), 5, b5), 4, s4);
}

/* The transpose of ow_repeat_heads: [B, Hq, L, X] summed per group. */
static afo_array *ow_sum_groups(afo_array *a, int64_t G) {
    if (!a || G == 1) return a;
    const int64_t *s = a->shape;
    int64_t s5[5] = {s[0], s[1] / G, G, s[2], s[3]};
    int axis = 2;
    return ow_sum(ow_reshape(a, 5, s5), &axis, 1, 0);
}

/* bool [Lq, Lk]: key j is within reach of query i (causal and window). */
static afo_array *positions_visible(const afo_attrs *a, int64_t lq, int64_t lk) {
    int64_t col[2] = {lq, 1};
    int64_t first = lk - lq, window = a->i[AFO_SDPA_I_WINDOW];
    afo_array *kpos = afo_arange(0, 1, lk, AFO_INT64), *vis = NULL;
    if (a->i[AFO_SDPA_I_CAUSAL])
        vis = ow_less_equal(R(kpos), ow_reshape(afo_arange((double)first, 1, lq, AFO_INT64), 2, col));
    if (window > 0) {
        afo_array *w = ow_greater(R(kpos), ow_reshape(afo_arange((double)(first - window), 1, lq, AFO_INT64), 2, col));
        vis = vis ? ow_binary(afo_logical_and, vis, w) : w;
    }
    afo_release(kpos);
    return vis;
}

/* Attention probabilities recomputed from q and the repeated k: hidden
 * entries are exactly 0, also in rows where nothing is visible (the
 * forward gives those rows zeros). */
static afo_array *sdpa_probs(const afo_array *out, afo_array *q, afo_array *ke) {
    const afo_attrs *a = &out->attrs;
    afo_array *m = out->nin > 3 ? out->in[3] : NULL, *vis = NULL;
    afo_array *s = ow_mul(ow_matmul(R(q), ow_swapaxes(R(ke), -1, -2)), ow_const(q, a->f[AFO_SDPA_F_SCALE]));
    if (m && m->dtype == AFO_BOOL) {
        vis = R(m);
    } else if (m) {
        s = ow_add(s, ow_astype(R(m), q->dtype));
        vis = ow_greater(R(m), afo_scalar(-INFINITY, m->dtype));
    }
    if (a->i[AFO_SDPA_I_CAUSAL] || a->i[AFO_SDPA_I_WINDOW] > 0) {
        afo_array *pv = positions_visible(a, q->shape[2], ke->shape[2]);
        vis = vis ? ow_binary(afo_logical_and, vis, pv) : pv;
    }
    if (!vis) return ow_softmax_last(s);
    /* a finite stand-in for -inf keeps fully hidden rows free of NaN */
    afo_array *p = ow_softmax_last(ow_where(R(vis), s, ow_const(q, -1e30)));
    return ow_where(vis, p, ow_const(q, 0));
}

/* With s the scores, p = softmax(s) and dp = g v^T:
 *   ds = p (dp - sum(dp p)),  dq = ds k scale,  dk = ds^T q scale,
 *   dv = p^T g,  dmask = ds (summed over broadcast axes);
 * k and v gradients are summed over the query heads sharing them. */
static afo_status sdpa_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    afo_array *input = out->in[arg];
    if (out->attrs.i[AFO_SDPA_I_HAS_POSITION])
        return afo_error(AFO_ERR_UNSUPPORTED,
                         "scaled_dot_product_attention_at: no gradient (its positions are known only when it runs)");
    if (arg == 3 && input->dtype == AFO_BOOL) {
        *grad = NULL;
        return AFO_OK;
    }
    int64_t G = out->in[0]->shape[1] / out->in[1]->shape[1];
    afo_array *q = widen(R(out->in[0]), out), *gw = widen(R(g), out);
    afo_array *ke = ow_repeat_heads(widen(R(out->in[1]), out), G);
    afo_array *p = q && ke ? sdpa_probs(out, q, ke) : NULL, *res;
    if (arg == 2) {
        res = ow_sum_groups(ow_matmul(ow_swapaxes(R(p), -1, -2), R(gw)), G);
    } else {
        int last = -1;
        afo_array *ve = ow_repeat_heads(widen(R(out->in[2]), out), G);
        afo_array *dp = ow_matmul(R(gw), ow_swapaxes(ve, -1, -2));
        afo_array *ds = ow_mul(R(p), ow_sub(R(dp), ow_sum(ow_mul(R(dp), R(p)), &last, 1, 1)));
        afo_array *sc = q ? ow_const(q, out->attrs.f[AFO_SDPA_F_SCALE]) : NULL;
        if (arg == 0) res = ow_mul(ow_matmul(R(ds), R(ke)), R(sc));
        else if (arg == 1) res = ow_sum_groups(ow_mul(ow_matmul(ow_swapaxes(R(ds), -1, -2), R(q)), R(sc)), G);
        else res = ow_unbroadcast(R(ds), input);
        afo_release_n((afo_array *[]){dp, ds, sc}, 3);
    }
    afo_release_n((afo_array *[]){q, gw, ke, p}, 4);
    return grad_as(grad, res, input);
}

static const afo_op_def def_sdpa = {"scaled_dot_product_attention", sdpa_shape, {afo_cpu_sdpa}, sdpa_vjp};

static afo_array *sdpa(afo_array *q, afo_array *k, afo_array *v, float scale, afo_array *mask, int causal,
                       int window, afo_array *position) {
    afo_attrs at = {.ni = AFO_SDPA_NI, .nf = AFO_SDPA_NF};
    at.i[AFO_SDPA_I_CAUSAL] = causal != 0;
    at.i[AFO_SDPA_I_WINDOW] = window;
    at.i[AFO_SDPA_I_HAS_POSITION] = position != NULL;
    at.f[AFO_SDPA_F_SCALE] = scale;
    afo_array *in[5] = {q, k, v};
    int n = 3;
    if (mask) in[n++] = mask;
    if (position) in[n++] = position;
    return afo_node(AFO_OP_SDPA, in, n, &at);
}

afo_array *afo_scaled_dot_product_attention(afo_array *q, afo_array *k, afo_array *v, float scale, afo_array *mask,
                                            int causal, int window) {
    return sdpa(q, k, v, scale, mask, causal, window, NULL);
}

afo_array *afo_scaled_dot_product_attention_at(afo_array *q, afo_array *k, afo_array *v, float scale,
                                               afo_array *mask, int window, afo_array *offset) {
    if (!offset) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "scaled_dot_product_attention_at: offset is NULL");
    return sdpa(q, k, v, scale, mask, 1, window, offset);
}

void afo_register_nn_ops(void) {
    afo_op_register(AFO_OP_RMS_NORM, &def_rms_norm);
    afo_op_register(AFO_OP_LAYER_NORM, &def_layer_norm);
    afo_op_register(AFO_OP_ROPE, &def_rope);
    afo_op_register(AFO_OP_SDPA, &def_sdpa);
}
