/* afo — operations. Each builds a graph node (nothing is computed until
 * afo_eval) and returns a new reference, or NULL with afo_last_error() set
 * when the arguments are invalid (shapes, dtypes, axes). Inputs are borrowed.
 * Negative axes count from the end. Binary ops broadcast like NumPy. */
#ifndef AFO_OPS_H
#define AFO_OPS_H

#include "afo/array.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise, unary (integer inputs of float ops give float32) ---- */
afo_array *afo_neg(afo_array *x);
afo_array *afo_abs(afo_array *x);
afo_array *afo_exp(afo_array *x);
afo_array *afo_log(afo_array *x);
afo_array *afo_log1p(afo_array *x);
afo_array *afo_sqrt(afo_array *x);
afo_array *afo_rsqrt(afo_array *x);
afo_array *afo_square(afo_array *x);
afo_array *afo_tanh(afo_array *x);
afo_array *afo_sigmoid(afo_array *x);
afo_array *afo_silu(afo_array *x);
afo_array *afo_erf(afo_array *x);
afo_array *afo_gelu(afo_array *x);      /* exact: x/2 (1 + erf(x/sqrt 2)) */
afo_array *afo_gelu_tanh(afo_array *x); /* tanh approximation */
afo_array *afo_relu(afo_array *x);
afo_array *afo_sin(afo_array *x);
afo_array *afo_cos(afo_array *x);
afo_array *afo_logical_not(afo_array *x); /* -> bool */

/* ---- elementwise, binary ---- */
afo_array *afo_add(afo_array *a, afo_array *b);
afo_array *afo_sub(afo_array *a, afo_array *b);
afo_array *afo_mul(afo_array *a, afo_array *b);
afo_array *afo_div(afo_array *a, afo_array *b); /* integer inputs give float32 */
afo_array *afo_maximum(afo_array *a, afo_array *b);
afo_array *afo_minimum(afo_array *a, afo_array *b);
afo_array *afo_pow(afo_array *a, afo_array *b);
afo_array *afo_equal(afo_array *a, afo_array *b); /* comparisons -> bool */
afo_array *afo_not_equal(afo_array *a, afo_array *b);
afo_array *afo_less(afo_array *a, afo_array *b);
afo_array *afo_less_equal(afo_array *a, afo_array *b);
afo_array *afo_greater(afo_array *a, afo_array *b);
afo_array *afo_greater_equal(afo_array *a, afo_array *b);
afo_array *afo_logical_and(afo_array *a, afo_array *b);
afo_array *afo_logical_or(afo_array *a, afo_array *b);
/* silu(gate) * up in one op (the gated MLP's product; float result). */
afo_array *afo_swiglu(afo_array *gate, afo_array *up);
/* cond ? a : b, all three broadcast together; cond is converted to bool. */
afo_array *afo_where(afo_array *cond, afo_array *a, afo_array *b);

afo_array *afo_astype(afo_array *x, afo_dtype dtype);
/* Identity whose gradient is zero. */
afo_array *afo_stop_gradient(afo_array *x);

/* ---- shape and views (no copy where the strides allow) ---- */
afo_array *afo_reshape(afo_array *x, int ndim, const int64_t *shape); /* one -1 allowed */
afo_array *afo_transpose(afo_array *x, const int *perm);              /* NULL: reverse axes */
afo_array *afo_swapaxes(afo_array *x, int axis1, int axis2);
afo_array *afo_broadcast_to(afo_array *x, int ndim, const int64_t *shape);
afo_array *afo_expand_dims(afo_array *x, int axis);
afo_array *afo_squeeze(afo_array *x, int axis);
/* Per-axis start/stop/step (NULL: 0 / dim / 1). Negative start/stop count from
 * the end and are clamped as in Python; steps may be negative. */
afo_array *afo_slice(afo_array *x, const int64_t *start, const int64_t *stop, const int64_t *step);
/* One-axis convenience: x[..., start:stop, ...] along `axis`. */
afo_array *afo_slice_axis(afo_array *x, int axis, int64_t start, int64_t stop);
/* A copy of x with x[slice] replaced by `update` (broadcast to the slice).
 * When x is held only by this op its buffer is reused (KV caches). */
afo_array *afo_slice_update(afo_array *x, afo_array *update, const int64_t *start,
                            const int64_t *stop, const int64_t *step);
/* afo_slice_update of the whole of x except along `axis`, where the slice
 * starts at the value of `start` (int32, one element) when the graph runs,
 * clamped to [0, dim - n] (n: update's extent along axis). A recorded
 * decode step writes its cache slot this way at any position. */
afo_array *afo_slice_update_at(afo_array *x, afo_array *update, int axis, afo_array *start);
afo_array *afo_contiguous(afo_array *x);
afo_array *afo_concatenate(afo_array *const *xs, int n, int axis);

/* ---- reductions (axes NULL/naxes 0: all axes) ---- */
afo_array *afo_sum(afo_array *x, const int *axes, int naxes, int keepdims);
afo_array *afo_mean(afo_array *x, const int *axes, int naxes, int keepdims);
afo_array *afo_max(afo_array *x, const int *axes, int naxes, int keepdims);
afo_array *afo_min(afo_array *x, const int *axes, int naxes, int keepdims);
afo_array *afo_logsumexp(afo_array *x, const int *axes, int naxes, int keepdims);
afo_array *afo_argmax(afo_array *x, int axis, int keepdims); /* -> int32, first maximum */
afo_array *afo_softmax(afo_array *x, int axis);              /* computed in float32 or wider */

/* ---- linear algebra ---- */
/* a [..., M, K] @ b [..., K, N]; 1-D operands as NumPy; batch dims broadcast.
 * Floating point only; accumulates in float32 (float64 for float64). */
afo_array *afo_matmul(afo_array *a, afo_array *b);

/* ---- indexing ---- */
/* out = x.shape[:axis] + indices.shape + x.shape[axis+1:]. Out-of-range
 * indices are an error at evaluation (negative ones count from the end). */
afo_array *afo_take(afo_array *x, afo_array *indices, int axis);
/* indices has x's ndim; along `axis` picks x[..., indices[...], ...]. */
afo_array *afo_take_along_axis(afo_array *x, afo_array *indices, int axis);
/* A copy of x where x[..., indices[i], ...] += updates[i] along axis
 * (indices and updates broadcast together, as take_along_axis' output). */
afo_array *afo_scatter_add(afo_array *x, afo_array *indices, afo_array *updates, int axis);
afo_array *afo_sort(afo_array *x, int axis);    /* ascending */
afo_array *afo_argsort(afo_array *x, int axis); /* -> int32, stable */
/* The k largest along axis, in descending order; afo_argtopk gives their
 * int32 indices (ties: lower index first). NaN ranks above +inf (last in
 * afo_sort, first in afo_topk); -0.0 ties with +0.0. */
afo_array *afo_topk(afo_array *x, int k, int axis);
afo_array *afo_argtopk(afo_array *x, int k, int axis);

/* ---- fused neural-network ops ---- */
/* x / sqrt(mean(x^2) + eps) * weight over the last axis; weight may be NULL. */
afo_array *afo_rms_norm(afo_array *x, afo_array *weight, float eps);
/* (x - mean) / sqrt(var + eps) * weight + bias over the last axis. */
afo_array *afo_layer_norm(afo_array *x, afo_array *weight, afo_array *bias, float eps);
/* Rotary embedding over the first `dims` features of the last axis of x
 * [..., L, D], position of row l = offset + l. traditional=1 rotates
 * interleaved pairs (x0,x1),(x2,x3)…; 0 rotates halves (x_i, x_{i+dims/2})
 * as transformers/GPT-NeoX do. Inverse frequencies are base^(-2i/dims), or
 * 1/freqs[i] when `freqs` (float32 [dims/2]) is given; positions are
 * multiplied by `scale`. */
afo_array *afo_rope(afo_array *x, int dims, int traditional, float base, float scale,
                    int64_t offset, afo_array *freqs);
/* afo_rope with the offset read from `offset` (int32, one element) when the
 * graph runs. */
afo_array *afo_rope_at(afo_array *x, int dims, int traditional, float base, float scale,
                       afo_array *offset, afo_array *freqs);
/* softmax(q k^T * scale + mask) v with q [B, Hq, Lq, D], k [B, Hkv, Lk, D],
 * v [B, Hkv, Lk, Dv], Hq a multiple of Hkv (grouped-query attention).
 * causal: query i (at position Lk - Lq + i) sees keys j <= its position;
 * window > 0 additionally hides keys more than window-1 positions back;
 * mask (optional, broadcastable to [B, Hq, Lq, Lk]) is added, or for a bool
 * mask, false hides. Fully masked rows give zeros. */
afo_array *afo_scaled_dot_product_attention(afo_array *q, afo_array *k, afo_array *v, float scale,
                                            afo_array *mask, int causal, int window);
/* Causal attention with query i at position offset + i (offset int32, one
 * element, read when the graph runs) instead of Lk - Lq + i: k and v may be
 * a whole preallocated cache, whose slots past the last query's position
 * are never read. */
afo_array *afo_scaled_dot_product_attention_at(afo_array *q, afo_array *k, afo_array *v, float scale,
                                               afo_array *mask, int window, afo_array *offset);

/* ---- random (counter-based: results do not depend on thread count) ---- */
afo_array *afo_random_key(uint64_t seed);              /* uint32 [2] */
afo_array *afo_random_split(afo_array *key, int num);  /* one key [2] -> uint32 [num, 2] */
/* Uniform on [low, high). */
afo_array *afo_random_uniform(afo_array *key, double low, double high, int ndim,
                              const int64_t *shape, afo_dtype dtype);
/* Standard normal scaled by std, shifted by mean. */
afo_array *afo_random_normal(afo_array *key, double mean, double std, int ndim,
                             const int64_t *shape, afo_dtype dtype);
/* Samples indices (int32) from softmax(logits) along axis; axis removed. */
afo_array *afo_random_categorical(afo_array *key, afo_array *logits, int axis);

#ifdef __cplusplus
}
#endif
#endif
