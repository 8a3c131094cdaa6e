/* Reductions over axes (sum, max, min, logsumexp, argmax) and softmax.
 * attrs: i[0] = bitmask of reduced axes, i[1] = keepdims. */
#include <math.h>
#include <stdlib.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/threadpool.h"
#include "backends/cpu/vmath.h"
#include "core/compose.h"

#define CHUNK 512

typedef struct reduce_state {
    double acc, m; /* sum / extreme; running max for logsumexp */
    int64_t iacc, idx;
    bool seen;
} reduce_state;

typedef struct reduce_job {
    afo_op op;
    const afo_array *x;
    afo_array *out;
    afo_ctype ct;
    int nkeep, nred;
    int64_t keep_shape[AFO_MAX_DIMS], keep_strides[AFO_MAX_DIMS];
    int64_t red_shape[AFO_MAX_DIMS], red_strides[AFO_MAX_DIMS];
    int64_t red_size;
} reduce_job;

static void update_f(afo_op op, reduce_state *s, const double *v, int64_t n, int64_t base) {
    for (int64_t i = 0; i < n; i++) {
        double x = v[i];
        switch (op) {
        case AFO_OP_SUM: s->acc += x; break;
        case AFO_OP_MAX: if (!s->seen || x > s->acc || isnan(x)) s->acc = isnan(s->acc) && s->seen ? s->acc : x; break;
        case AFO_OP_MIN: if (!s->seen || x < s->acc || isnan(x)) s->acc = isnan(s->acc) && s->seen ? s->acc : x; break;
        case AFO_OP_ARGMAX: if (!s->seen || x > s->acc) { s->acc = x; s->idx = base + i; } break;
        case AFO_OP_LOGSUMEXP: /* online: rescale the running sum when the max grows */
            if (!s->seen || x > s->m) {
                if (s->seen && isfinite(s->m)) s->acc *= exp(s->m - x);
                else s->acc = 0;
                s->m = x;
            }
            if (isfinite(s->m)) s->acc += exp(x - s->m);
            break;
        default: break;
        }
        s->seen = true;
    }
}

static void update_i(afo_op op, reduce_state *s, const int64_t *v, int64_t n, int64_t base) {
    for (int64_t i = 0; i < n; i++) {
        int64_t x = v[i];
        switch (op) {
        case AFO_OP_SUM: s->iacc = (int64_t)((uint64_t)s->iacc + (uint64_t)x); break;
        case AFO_OP_MAX: if (!s->seen || x > s->iacc) s->iacc = x; break;
        case AFO_OP_MIN: if (!s->seen || x < s->iacc) s->iacc = x; break;
        case AFO_OP_ARGMAX: if (!s->seen || x > s->iacc) { s->iacc = x; s->idx = base + i; } break;
        default: break;
        }
        s->seen = true;
    }
}

static void reduce_range(void *ctx, int64_t begin, int64_t end) {
    const reduce_job *j = ctx;
    const afo_array *x = j->x;
    size_t es = afo_dtype_size(x->dtype);
    const char *xbase = afo_array_ptr(x);
    int64_t inner = j->nred ? j->red_shape[j->nred - 1] : 1;
    int64_t inner_stride = j->nred ? j->red_strides[j->nred - 1] : 0;
    int64_t outer = inner ? j->red_size / inner : 0;
    _Alignas(64) unsigned char tmp[CHUNK * 8];
    for (int64_t o = begin; o < end; o++) {
        int64_t off = 0, r = o;
        for (int d = j->nkeep - 1; d >= 0; d--) {
            off += (r % j->keep_shape[d]) * j->keep_strides[d];
            r /= j->keep_shape[d];
        }
        reduce_state s = {0};
        for (int64_t row = 0; row < outer; row++) {
            int64_t roff = off, rr = row;
            for (int d = j->nred - 2; d >= 0; d--) {
                roff += (rr % j->red_shape[d]) * j->red_strides[d];
                rr /= j->red_shape[d];
            }
            for (int64_t c = 0; c < inner; c += CHUNK) {
                int64_t n = inner - c < CHUNK ? inner - c : CHUNK;
                const char *src = xbase + (roff + c * inner_stride) * (int64_t)es;
                afo_cpu_load_row(x->dtype, src, inner_stride, n, j->ct, tmp);
                if (j->ct == AFO_CT_I64) update_i(j->op, &s, (const int64_t *)tmp, n, row * inner + c);
                else update_f(j->op, &s, (const double *)tmp, n, row * inner + c);
            }
        }
        double v;
        if (j->op == AFO_OP_ARGMAX) v = (double)s.idx;
        else if (j->ct == AFO_CT_I64) v = (double)s.iacc;
        else if (j->op == AFO_OP_LOGSUMEXP) v = s.seen ? (isfinite(s.m) ? s.m + log(s.acc) : s.m) : -INFINITY;
        else if (!s.seen && j->op == AFO_OP_MAX) v = -INFINITY;
        else if (!s.seen && j->op == AFO_OP_MIN) v = INFINITY;
        else v = s.acc;
        char *dst = (char *)afo_array_ptr(j->out) + o * (int64_t)afo_dtype_size(j->out->dtype);
        if (j->ct == AFO_CT_I64 && j->op != AFO_OP_ARGMAX) afo_cpu_store_row(AFO_CT_I64, &s.iacc, 1, j->out->dtype, dst, 1);
        else afo_cpu_store_double(j->out->dtype, dst, v);
    }
}

static afo_status reduce_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *x = in[0];
    reduce_job j = {.op = out->op, .x = x, .out = out, .red_size = 1};
    /* int64 accumulation for integer inputs, double otherwise (logsumexp
     * is float math whatever its input) */
    j.ct = afo_dtype_is_float(x->dtype) || out->op == AFO_OP_LOGSUMEXP ? AFO_CT_F64 : AFO_CT_I64;
    for (int d = 0; d < x->ndim; d++) {
        if (a->i[0] & (1 << d)) {
            j.red_shape[j.nred] = x->shape[d];
            j.red_strides[j.nred++] = x->strides[d];
            j.red_size *= x->shape[d];
        } else {
            j.keep_shape[j.nkeep] = x->shape[d];
            j.keep_strides[j.nkeep++] = x->strides[d];
        }
    }
    if (out->size == 0) return AFO_OK;
    if (j.red_size == 0 && out->op == AFO_OP_ARGMAX)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "argmax: reduction over an empty axis");
    int64_t grain = j.red_size >= 16384 ? 1 : 16384 / (j.red_size ? j.red_size : 1) + 1;
    afo_parallel_for(out->size, grain, reduce_range, &j);
    return AFO_OK;
}

static afo_status reduce_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0];
    int n = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (!(a->i[0] & (1 << d))) out->shape[n++] = x->shape[d];
        else if (a->i[1]) out->shape[n++] = 1;
    }
    out->ndim = n;
    switch (out->op) {
    case AFO_OP_SUM: out->dtype = x->dtype == AFO_BOOL ? AFO_INT32 : x->dtype; break;
    case AFO_OP_ARGMAX: out->dtype = AFO_INT32; break;
    case AFO_OP_LOGSUMEXP: out->dtype = afo_dtype_is_float(x->dtype) ? x->dtype : AFO_FLOAT32; break;
    default: out->dtype = x->dtype;
    }
    return AFO_OK;
}

/* The cotangent reshaped with kept (size-1) axes, broadcast to x's shape. */
static afo_array *expand_to_input(const afo_array *out, afo_array *g) {
    const afo_array *x = out->in[0];
    int64_t kshape[AFO_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) kshape[d] = (out->attrs.i[0] & (1 << d)) ? 1 : x->shape[d];
    return ow_broadcast_to(afo_reshape(g, x->ndim, kshape), x->ndim, x->shape);
}

static afo_status sum_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = expand_to_input(out, g);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

/* Ties share the gradient equally. */
static afo_status extreme_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    afo_array *x = out->in[0];
    afo_array *mask = ow_astype(ow_binary(afo_equal, R(x), expand_to_input(out, out)), g->dtype);
    afo_array *count = mask ? afo_sum(mask, NULL, 0, 0) : NULL;
    if (count) { /* per reduced group */
        afo_release(count);
        int axes[AFO_MAX_DIMS], n = 0;
        for (int d = 0; d < x->ndim; d++)
            if (out->attrs.i[0] & (1 << d)) axes[n++] = d;
        count = afo_sum(mask, axes, n, 1);
    }
    *grad = ow_div(ow_mul(mask, expand_to_input(out, g)), count);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static afo_status logsumexp_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    afo_array *x = out->in[0];
    *grad = ow_mul(expand_to_input(out, g), ow_exp(ow_sub(R(x), expand_to_input(out, out))));
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static const afo_op_def def_sum = {"sum", reduce_shape, {reduce_kernel}, sum_vjp};
static const afo_op_def def_max = {"max", reduce_shape, {reduce_kernel}, extreme_vjp};
static const afo_op_def def_min = {"min", reduce_shape, {reduce_kernel}, extreme_vjp};
static const afo_op_def def_logsumexp = {"logsumexp", reduce_shape, {reduce_kernel}, logsumexp_vjp};
static const afo_op_def def_argmax = {"argmax", reduce_shape, {reduce_kernel}, NULL};

static afo_array *reduce(afo_op op, const char *name, afo_array *x, const int *axes, int naxes, int keepdims) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "%s: x is NULL", name);
    afo_attrs a = {.ni = 2};
    if (!axes || naxes == 0) a.i[0] = (1 << x->ndim) - 1;
    for (int k = 0; axes && k < naxes; k++) {
        int ax = afo_normalize_axis(axes[k], x->ndim);
        if (ax < 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "%s: axis %d out of range for %d dims", name, axes[k], x->ndim);
        if (a.i[0] & (1 << ax)) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "%s: axis %d repeated", name, axes[k]);
        a.i[0] |= 1 << ax;
    }
    a.i[1] = keepdims != 0;
    return afo_node(op, &x, 1, &a);
}

afo_array *afo_sum(afo_array *x, const int *axes, int naxes, int keepdims) {
    return reduce(AFO_OP_SUM, "sum", x, axes, naxes, keepdims);
}
afo_array *afo_max(afo_array *x, const int *axes, int naxes, int keepdims) {
    return reduce(AFO_OP_MAX, "max", x, axes, naxes, keepdims);
}
afo_array *afo_min(afo_array *x, const int *axes, int naxes, int keepdims) {
    return reduce(AFO_OP_MIN, "min", x, axes, naxes, keepdims);
}
afo_array *afo_logsumexp(afo_array *x, const int *axes, int naxes, int keepdims) {
    return reduce(AFO_OP_LOGSUMEXP, "logsumexp", x, axes, naxes, keepdims);
}
afo_array *afo_argmax(afo_array *x, int axis, int keepdims) {
    return reduce(AFO_OP_ARGMAX, "argmax", x, &axis, 1, keepdims);
}

afo_array *afo_mean(afo_array *x, const int *axes, int naxes, int keepdims) {
    afo_array *s = reduce(AFO_OP_SUM, "mean", x, axes, naxes, keepdims);
    if (!s) return NULL;
    if (!afo_dtype_is_float(s->dtype)) s = ow_astype(s, AFO_FLOAT32);
    int64_t count = s ? x->size / (s->size ? s->size : 1) : 1;
    return ow_mul(s, s ? afo_scalar(1.0 / (double)(count ? count : 1), s->dtype) : NULL);
}

/* ------------------------------------------------------------ softmax */

typedef struct softmax_job {
    const afo_array *x;
    afo_array *out;
    afo_row_iter rows;
    int64_t n;
    afo_ctype ct;
} softmax_job;

static void softmax_rows(void *ctx, int64_t begin, int64_t end) {
    const softmax_job *j = ctx;
    const afo_array *x = j->x;
    int64_t stride = x->ndim ? x->strides[x->ndim - 1] : 1, n = j->n;
    size_t es = afo_dtype_size(x->dtype), os = afo_dtype_size(j->out->dtype);
    bool f64 = j->ct == AFO_CT_F64;
    void *buf = malloc((size_t)n * (f64 ? 8 : 4));
    if (!buf) return; /* leaves the rows unwritten; only on host OOM */
    for (int64_t r = begin; r < end; r++) {
        const char *src = (const char *)afo_array_ptr(x) + afo_row_iter_offset(&j->rows, r) * (int64_t)es;
        afo_cpu_load_row(x->dtype, src, stride, n, j->ct, buf);
        if (f64) {
            double *v = buf, m = -INFINITY, s = 0;
            for (int64_t i = 0; i < n; i++) m = v[i] > m ? v[i] : m;
            for (int64_t i = 0; i < n; i++) s += (v[i] = exp(v[i] - m));
            for (int64_t i = 0; i < n; i++) v[i] /= s;
        } else {
            afo_vmath_current()->softmax(n, buf, buf);
        }
        afo_cpu_store_row(j->ct, buf, n, j->out->dtype, (char *)afo_array_ptr(j->out) + r * n * (int64_t)os, 1);
    }
    free(buf);
}

static afo_status softmax_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    softmax_job j = {.x = in[0], .out = out, .n = in[0]->ndim ? in[0]->shape[in[0]->ndim - 1] : 1};
    j.ct = afo_cpu_ctype_of(out->dtype) == AFO_CT_F64 ? AFO_CT_F64 : AFO_CT_F32;
    afo_row_iter_init(&j.rows, in[0]);
    afo_parallel_for(j.rows.rows, 16384 / (j.n ? j.n : 1) + 1, softmax_rows, &j);
    return AFO_OK;
}

static afo_status softmax_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0];
    out->dtype = afo_dtype_is_float(x->dtype) ? x->dtype : AFO_FLOAT32;
    out->ndim = x->ndim;
    memcpy(out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    return AFO_OK;
}

static afo_status softmax_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    int last = -1;
    afo_array *gy = afo_mul(g, out);
    *grad = ow_mul(R(out), ow_sub(R(g), ow_sum(gy, &last, 1, 1)));
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static const afo_op_def def_softmax = {"softmax", softmax_shape, {softmax_kernel}, softmax_vjp};

afo_array *afo_softmax(afo_array *x, int axis) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "softmax: x is NULL");
    int ax = afo_normalize_axis(axis, x->ndim);
    if (ax < 0 && x->ndim > 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "softmax: axis %d out of range", axis);
    if (ax == x->ndim - 1 || x->ndim == 0) return afo_node(AFO_OP_SOFTMAX, &x, 1, NULL);
    afo_array *t = afo_swapaxes(x, ax, -1);
    afo_array *s = t ? afo_node(AFO_OP_SOFTMAX, &t, 1, NULL) : NULL;
    afo_release(t);
    return ow_swapaxes(s, ax, -1);
}

void afo_register_reduce_ops(void) {
    afo_op_register(AFO_OP_SUM, &def_sum);
    afo_op_register(AFO_OP_MAX, &def_max);
    afo_op_register(AFO_OP_MIN, &def_min);
    afo_op_register(AFO_OP_LOGSUMEXP, &def_logsumexp);
    afo_op_register(AFO_OP_ARGMAX, &def_argmax);
    afo_op_register(AFO_OP_SOFTMAX, &def_softmax);
}
