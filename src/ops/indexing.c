/* Indexing: take, take_along_axis, scatter_add, argsort, argtopk. sort and
 * topk are argsort/argtopk followed by take_along_axis, so they get their
 * gradients from it.
 *
 * attrs: i[0] = axis (normalized by the public functions; an out-of-range
 * value is kept as given so the shape rule can name it); ARGTOPK: i[1] = k.
 *
 * Indices may have any integer dtype; negative ones count from the end.
 * Gathers copy raw elements, so every dtype works without conversion.
 * Ordering (argsort, argtopk): NaN ranks above +inf (sorted last ascending,
 * first in topk), -0.0 ties with +0.0, ties keep the lower index first. */
#include <math.h>
#include <stdlib.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/threadpool.h"
#include "core/compose.h"

#define AXIS(a) ((int)(a)->i[0])
#define TOPK_K(a) ((a)->i[1])

/* ------------------------------------------------------------ helpers */

static afo_status check_axis(const char *name, const afo_array *x, int64_t axis) {
    if (axis < 0 || axis >= x->ndim)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: axis %lld out of range for %d dims", name, (long long)axis,
                         x->ndim);
    return AFO_OK;
}

static afo_status check_index_dtype(const char *name, const afo_array *idx) {
    if (!afo_dtype_is_integer(idx->dtype))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: indices must have an integer dtype, not %s", name,
                         afo_dtype_name(idx->dtype));
    return AFO_OK;
}

/* Dense int64 copy of idx (C order, idx's own shape) with negative indices
 * wrapped. Validation happens here, on the calling thread, so the error text
 * lands in the thread-local slot afo_eval's caller reads. */
static afo_status load_indices(const char *name, const afo_array *idx, int axis, int64_t n, int64_t **out) {
    int64_t *v = malloc(sizeof(int64_t) * (size_t)(idx->size ? idx->size : 1));
    if (!v) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory for %lld indices", name, (long long)idx->size);
    afo_cpu_copy(idx, v, AFO_INT64);
    for (int64_t i = 0; i < idx->size; i++) {
        int64_t k = v[i] < 0 ? v[i] + n : v[i];
        if (k < 0 || k >= n) {
            afo_status st = afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: index %lld out of range for axis %d of size %lld",
                                      name, (long long)v[i], axis, (long long)n);
            free(v);
            return st;
        }
        v[i] = k;
    }
    *out = v;
    return AFO_OK;
}

/* Element strides of a dense array of idx's shape, 0 along axes that
 * broadcast (size 1 where `target` is larger). */
static void dense_broadcast_strides(const afo_array *a, const int64_t *target, int64_t *strides) {
    afo_contiguous_strides(a->ndim, a->shape, strides);
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] == 1 && target[d] != 1) strides[d] = 0;
}

/* The 1-d lines of a shape along `axis`: line c's offset in each of up to
 * three arrays, from per-axis strides over the other axes. */
typedef struct lines {
    int nd, narr;
    int64_t shape[AFO_MAX_DIMS];
    int64_t strides[3][AFO_MAX_DIMS];
    int64_t count;
} lines;

static void lines_init(lines *l, int ndim, const int64_t *shape, int axis, int narr,
                       const int64_t *const *strides) {
    l->nd = 0;
    l->narr = narr;
    l->count = 1;
    for (int d = 0; d < ndim; d++) {
        if (d == axis) continue;
        l->shape[l->nd] = shape[d];
        for (int k = 0; k < narr; k++) l->strides[k][l->nd] = strides[k][d];
        l->nd++;
        l->count *= shape[d];
    }
}

static void lines_offsets(const lines *l, int64_t c, int64_t *off) {
    for (int k = 0; k < l->narr; k++) off[k] = 0;
    for (int d = l->nd - 1; d >= 0; d--) {
        int64_t i = c % l->shape[d];
        c /= l->shape[d];
        for (int k = 0; k < l->narr; k++) off[k] += i * l->strides[k][d];
    }
}

/* ------------------------------------------------------------ gather kernel */

/* take and take_along_axis both read, for output element (c_0..c_n), x at
 * sum c_d xs_d + idx[sum c_d is_d] * axis_stride: one kernel serves both. */
typedef struct gather_job {
    int ndim;
    int64_t shape[AFO_MAX_DIMS], xs[AFO_MAX_DIMS], is[AFO_MAX_DIMS];
    int64_t axis_stride;
    const char *x;
    const int64_t *idx;
    char *out;
    size_t es;
} gather_job;

static inline void copy_elem(char *dst, const char *src, size_t es) {
    switch (es) { /* constant sizes let memcpy become a single move */
    case 1: *dst = *src; break;
    case 2: memcpy(dst, src, 2); break;
    case 4: memcpy(dst, src, 4); break;
    default: memcpy(dst, src, 8); break;
    }
}

static void gather_rows(void *ctx, int64_t begin, int64_t end) {
    const gather_job *j = ctx;
    int last = j->ndim - 1;
    int64_t n = j->shape[last], xs = j->xs[last], is = j->is[last];
    size_t es = j->es;
    for (int64_t r = begin; r < end; r++) {
        int64_t xo = 0, io = 0, rr = r;
        for (int d = last - 1; d >= 0; d--) {
            int64_t c = rr % j->shape[d];
            rr /= j->shape[d];
            xo += c * j->xs[d];
            io += c * j->is[d];
        }
        char *dst = j->out + r * n * (int64_t)es;
        if (is == 0) { /* one index for the whole row: a block copy (embedding rows) */
            const char *src = j->x + (xo + j->idx[io] * j->axis_stride) * (int64_t)es;
            if (xs == 1) memcpy(dst, src, (size_t)n * es);
            else
                for (int64_t i = 0; i < n; i++) copy_elem(dst + i * (int64_t)es, src + i * xs * (int64_t)es, es);
        } else {
            for (int64_t i = 0; i < n; i++)
                copy_elem(dst + i * (int64_t)es, j->x + (xo + i * xs + j->idx[io + i * is] * j->axis_stride) * (int64_t)es,
                          es);
        }
    }
}

/* Drops size-1 axes and merges neighbours contiguous in both x and idx, so
 * an embedding lookup becomes rows of one memcpy each. */
static void gather_collapse(gather_job *j) {
    int64_t *strides[2] = {j->xs, j->is};
    j->ndim = afo_merge_axes(j->ndim, j->shape, 2, strides);
}

static afo_status gather_run(afo_array *out, gather_job *j, afo_array *idx_arr, int axis, int64_t axis_size) {
    const char *name = afo_op_get(out->op)->name;
    int64_t *idx;
    AFO_TRY(load_indices(name, idx_arr, axis, axis_size, &idx));
    afo_status st = afo_array_alloc(out);
    if (st == AFO_OK && out->size > 0) {
        j->idx = idx;
        j->out = afo_array_ptr(out);
        j->es = afo_dtype_size(out->dtype);
        gather_collapse(j);
        int64_t row_bytes = j->shape[j->ndim - 1] * (int64_t)j->es;
        afo_parallel_for(out->size / j->shape[j->ndim - 1], 32768 / row_bytes + 1, gather_rows, j);
    }
    free(idx);
    return st;
}

static afo_status take_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx = in[1];
    int axis = AXIS(a), ni = idx->ndim;
    gather_job j = {.ndim = out->ndim, .axis_stride = x->strides[axis], .x = afo_array_ptr(x)};
    int64_t istr[AFO_MAX_DIMS];
    afo_contiguous_strides(ni, idx->shape, istr);
    for (int d = 0; d < out->ndim; d++) {
        j.shape[d] = out->shape[d];
        bool from_idx = d >= axis && d < axis + ni;
        j.xs[d] = from_idx ? 0 : x->strides[d < axis ? d : d - ni + 1];
        j.is[d] = from_idx ? istr[d - axis] : 0;
    }
    return gather_run(out, &j, in[1], axis, x->shape[axis]);
}

static afo_status take_along_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx = in[1];
    int axis = AXIS(a);
    gather_job j = {.ndim = out->ndim, .axis_stride = x->strides[axis], .x = afo_array_ptr(x)};
    dense_broadcast_strides(idx, out->shape, j.is);
    for (int d = 0; d < out->ndim; d++) {
        j.shape[d] = out->shape[d];
        j.xs[d] = d == axis || x->shape[d] == 1 ? 0 : x->strides[d];
    }
    return gather_run(out, &j, in[1], axis, x->shape[axis]);
}

/* ------------------------------------------------------------ scatter_add kernel */

/* Each line along the axis (a fixed position on the other axes) is owned by
 * one thread and its updates are applied in index order, so the sums are
 * the same for any thread count. Lines go in blocks so that, for each update
 * row, a block's accumulators are touched contiguously. */
#define SCATTER_BLOCK 256

typedef struct scatter_job {
    lines l; /* arrays: 0 accumulator, 1 indices, 2 updates */
    int64_t k, acc_axis, idx_axis, upd_axis;
    void *acc;
    const void *upd;
    const int64_t *idx;
    afo_ctype ct;
} scatter_job;

#define SCATTER_LOOP(T, ADD)                                                       \
    do {                                                                           \
        T *acc = j->acc;                                                           \
        const T *upd = j->upd;                                                     \
        for (int64_t k = 0; k < j->k; k++)                                         \
            for (int64_t c = 0; c < n; c++) {                                      \
                T *dst = acc + base[c][0] + j->idx[base[c][1] + k * j->idx_axis] * j->acc_axis; \
                T v = upd[base[c][2] + k * j->upd_axis];                           \
                *dst = ADD;                                                        \
            }                                                                      \
    } while (0)

static void scatter_blocks(void *ctx, int64_t begin, int64_t end) {
    const scatter_job *j = ctx;
    int64_t base[SCATTER_BLOCK][3];
    for (int64_t b = begin; b < end; b++) {
        int64_t c0 = b * SCATTER_BLOCK, n = j->l.count - c0 < SCATTER_BLOCK ? j->l.count - c0 : SCATTER_BLOCK;
        for (int64_t c = 0; c < n; c++) lines_offsets(&j->l, c0 + c, base[c]);
        switch (j->ct) {
        case AFO_CT_F32: SCATTER_LOOP(float, *dst + v); break;
        case AFO_CT_F64: SCATTER_LOOP(double, *dst + v); break;
        case AFO_CT_I64: SCATTER_LOOP(int64_t, (int64_t)((uint64_t)*dst + (uint64_t)v)); break; /* wraps, no UB */
        }
    }
}

static afo_dtype ctype_dtype(afo_ctype ct) {
    return ct == AFO_CT_F32 ? AFO_FLOAT32 : ct == AFO_CT_F64 ? AFO_FLOAT64 : AFO_INT64;
}

static afo_status scatter_add_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx_arr = in[1], *u = in[2];
    int axis = AXIS(a), nd = x->ndim;
    int64_t *idx = NULL;
    AFO_TRY(load_indices("scatter_add", idx_arr, axis, x->shape[axis], &idx));
    afo_status st = afo_array_alloc(out);
    scatter_job j = {.ct = afo_cpu_ctype_of(x->dtype), .idx = idx};
    afo_dtype cdt = ctype_dtype(j.ct);
    size_t csize = afo_cpu_ctype_size(j.ct);
    /* accumulate in the compute type: in out itself when that is its dtype */
    void *acc = st == AFO_OK && x->dtype != cdt ? malloc(csize * (size_t)(x->size ? x->size : 1)) : NULL;
    void *upd = st == AFO_OK ? malloc(csize * (size_t)(u->size ? u->size : 1)) : NULL;
    if (st == AFO_OK && (!upd || (x->dtype != cdt && !acc)))
        st = afo_error(AFO_ERR_OUT_OF_MEMORY, "scatter_add: out of memory for the accumulator");
    if (st == AFO_OK) {
        j.acc = acc ? acc : afo_array_ptr(out);
        j.upd = upd;
        afo_cpu_copy(x, j.acc, cdt);
        afo_cpu_copy(u, upd, cdt);
        int64_t ushape[AFO_MAX_DIMS], xstr[AFO_MAX_DIMS], istr[AFO_MAX_DIMS], ustr[AFO_MAX_DIMS];
        memcpy(ushape, x->shape, sizeof(int64_t) * (size_t)nd);
        ushape[axis] = idx_arr->shape[axis] == 1 ? u->shape[axis] : idx_arr->shape[axis];
        afo_contiguous_strides(nd, x->shape, xstr);
        dense_broadcast_strides(idx_arr, ushape, istr);
        dense_broadcast_strides(u, ushape, ustr);
        const int64_t *strides[3] = {xstr, istr, ustr};
        lines_init(&j.l, nd, ushape, axis, 3, strides);
        j.k = ushape[axis];
        j.acc_axis = xstr[axis];
        j.idx_axis = istr[axis];
        j.upd_axis = ustr[axis];
        int64_t blocks = (j.l.count + SCATTER_BLOCK - 1) / SCATTER_BLOCK;
        if (j.k > 0) afo_parallel_for(blocks, 65536 / (SCATTER_BLOCK * j.k) + 1, scatter_blocks, &j);
        if (acc) afo_cpu_store_row(j.ct, acc, x->size, out->dtype, afo_array_ptr(out), 1);
    }
    free(acc);
    free(upd);
    free(idx);
    return st;
}

/* ------------------------------------------------------------ argsort / argtopk kernel */

typedef struct sort_item {
    uint64_t key;
    int64_t index;
} sort_item;

/* Keys whose unsigned order is the value order (NaN above +inf, -0 == +0);
 * ties fall to the index, so qsort's instability cannot show. */
static int item_cmp(const void *pa, const void *pb) {
    const sort_item *a = pa, *b = pb;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Moves the k first items (in item_cmp order) to the front, unordered, so
 * topk sorts only those: quickselect, expected linear time. */
static void select_first(sort_item *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        sort_item pivot = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (item_cmp(&a[i], &pivot) < 0) i++;
            while (item_cmp(&a[j], &pivot) > 0) j--;
            if (i <= j) {
                sort_item t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

static uint64_t float_key(double v) {
    if (isnan(v)) return UINT64_MAX;
    if (v == 0) v = 0.0;
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b >> 63 ? ~b : b | (1ull << 63);
}

typedef struct sort_job {
    lines l; /* arrays: 0 x, 1 out */
    const afo_array *x;
    int32_t *out;
    int64_t n, k, x_axis, out_axis;
    bool descending;
    atomic_bool oom;
} sort_job;

static void sort_lines(void *ctx, int64_t begin, int64_t end) {
    sort_job *j = ctx;
    const afo_array *x = j->x;
    bool is_float = afo_dtype_is_float(x->dtype);
    sort_item *items = malloc(sizeof(sort_item) * (size_t)j->n);
    void *vals = malloc(8 * (size_t)j->n);
    if (!items || !vals) {
        atomic_store(&j->oom, true);
        end = begin;
    }
    for (int64_t c = begin; c < end; c++) {
        int64_t off[2];
        lines_offsets(&j->l, c, off);
        const char *src = (const char *)afo_array_ptr(x) + off[0] * (int64_t)afo_dtype_size(x->dtype);
        afo_cpu_load_row(x->dtype, src, j->x_axis, j->n, is_float ? AFO_CT_F64 : AFO_CT_I64, vals);
        for (int64_t i = 0; i < j->n; i++) {
            uint64_t key = is_float ? float_key(((const double *)vals)[i])
                                    : (uint64_t)((const int64_t *)vals)[i] ^ (1ull << 63);
            items[i] = (sort_item){j->descending ? ~key : key, i};
        }
        if (j->k < j->n) select_first(items, j->n, j->k);
        qsort(items, (size_t)j->k, sizeof *items, item_cmp);
        for (int64_t i = 0; i < j->k; i++) j->out[off[1] + i * j->out_axis] = (int32_t)items[i].index;
    }
    free(items);
    free(vals);
}

static afo_status sort_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    const afo_array *x = in[0];
    int axis = AXIS(a);
    sort_job j = {.x = x, .out = afo_array_ptr(out), .n = x->shape[axis], .k = out->shape[axis],
                  .x_axis = x->strides[axis], .out_axis = out->strides[axis],
                  .descending = out->op == AFO_OP_ARGTOPK};
    atomic_init(&j.oom, false);
    const int64_t *strides[2] = {x->strides, out->strides};
    lines_init(&j.l, x->ndim, x->shape, axis, 2, strides);
    afo_parallel_for(j.l.count, 4096 / j.n + 1, sort_lines, &j);
    if (atomic_load(&j.oom)) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", afo_op_get(out->op)->name);
    return AFO_OK;
}

/* ------------------------------------------------------------ shape rules */

static void copy_shape(afo_array *out, afo_dtype dt, const afo_array *like) {
    out->dtype = dt;
    out->ndim = like->ndim;
    memcpy(out->shape, like->shape, sizeof(int64_t) * (size_t)like->ndim);
}

static afo_status bad_shapes(const char *name, const char *what, const afo_array *x, const afo_array *y) {
    char sx[128], sy[128];
    return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: %s %s does not fit x %s at axis", name, what,
                     afo_shape_str(y->ndim, y->shape, sy, sizeof sy), afo_shape_str(x->ndim, x->shape, sx, sizeof sx));
}

static afo_status take_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx = in[1];
    int axis = AXIS(a);
    AFO_TRY(check_axis("take", x, a->i[0]));
    AFO_TRY(check_index_dtype("take", idx));
    if (x->ndim - 1 + idx->ndim > AFO_MAX_DIMS)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "take: result would have %d dims (at most %d)",
                         x->ndim - 1 + idx->ndim, AFO_MAX_DIMS);
    out->dtype = x->dtype;
    out->ndim = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (d != axis) out->shape[out->ndim++] = x->shape[d];
        else
            for (int k = 0; k < idx->ndim; k++) out->shape[out->ndim++] = idx->shape[k];
    }
    return AFO_OK;
}

/* take_along_axis: the axes other than `axis` broadcast (as in NumPy). */
static afo_status take_along_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx = in[1];
    int axis = AXIS(a);
    AFO_TRY(check_axis("take_along_axis", x, a->i[0]));
    AFO_TRY(check_index_dtype("take_along_axis", idx));
    if (idx->ndim != x->ndim) return bad_shapes("take_along_axis", "indices", x, idx);
    copy_shape(out, x->dtype, x);
    for (int d = 0; d < x->ndim; d++) {
        int64_t xd = x->shape[d], id = idx->shape[d];
        if (d == axis) out->shape[d] = id;
        else if (xd == id || xd == 1 || id == 1) out->shape[d] = xd == 1 ? id : xd;
        else return bad_shapes("take_along_axis", "indices", x, idx);
    }
    return AFO_OK;
}

/* scatter_add: indices and updates broadcast together to the update shape,
 * which matches x except along `axis`. */
static afo_status scatter_add_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0], *idx = in[1], *u = in[2];
    int axis = AXIS(a);
    AFO_TRY(check_axis("scatter_add", x, a->i[0]));
    AFO_TRY(check_index_dtype("scatter_add", idx));
    if (idx->ndim != x->ndim) return bad_shapes("scatter_add", "indices", x, idx);
    if (u->ndim != x->ndim) return bad_shapes("scatter_add", "updates", x, u);
    for (int d = 0; d < x->ndim; d++) {
        int64_t id = idx->shape[d], ud = u->shape[d];
        if (d == axis ? (id != ud && id != 1 && ud != 1) : (id != 1 && id != x->shape[d]))
            return bad_shapes("scatter_add", "indices", x, idx);
        if (d != axis && ud != 1 && ud != x->shape[d]) return bad_shapes("scatter_add", "updates", x, u);
    }
    copy_shape(out, x->dtype, x);
    return AFO_OK;
}

static afo_status sort_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const afo_array *x = in[0];
    const char *name = out->op == AFO_OP_ARGTOPK ? "argtopk" : "argsort";
    AFO_TRY(check_axis(name, x, a->i[0]));
    int64_t n = x->shape[AXIS(a)];
    if (n > INT32_MAX)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: axis of size %lld exceeds int32 indices", name, (long long)n);
    copy_shape(out, AFO_INT32, x);
    if (out->op == AFO_OP_ARGTOPK) {
        if (TOPK_K(a) < 1 || TOPK_K(a) > n)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "argtopk: k = %lld outside 1..%lld (axis %d)",
                             (long long)TOPK_K(a), (long long)n, AXIS(a));
        out->shape[AXIS(a)] = TOPK_K(a);
    }
    return AFO_OK;
}

/* ------------------------------------------------------------ gradients */

static afo_array *node_axis(afo_op op, afo_array *const *in, int nin, int axis, int64_t extra) {
    int ax = in[0] ? afo_normalize_axis(axis, in[0]->ndim) : 0;
    afo_attrs a = {.i = {ax >= 0 ? ax : axis, extra}, .ni = 2};
    return afo_node(op, in, nin, &a);
}

/* Takes over z, idx and upd. */
static afo_array *ow_scatter_add(afo_array *z, afo_array *idx, afo_array *upd, int axis) {
    afo_array *in[3] = {z, idx, upd};
    afo_array *r = z && idx && upd ? node_axis(AFO_OP_SCATTER_ADD, in, 3, axis, 0) : NULL;
    afo_release_n(in, 3);
    return r;
}

/* Gradient of take: the cotangent rows scatter-added back, with the index
 * axes flattened into one. */
static afo_status take_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = NULL;
    if (arg != 0) return AFO_OK;
    afo_array *x = out->in[0], *idx = out->in[1];
    int axis = AXIS(&out->attrs);
    int64_t ishape[AFO_MAX_DIMS], gshape[AFO_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        ishape[d] = d == axis ? idx->size : 1;
        gshape[d] = d == axis ? idx->size : x->shape[d];
    }
    *grad = ow_scatter_add(afo_zeros(g->dtype, x->ndim, x->shape), afo_reshape(idx, x->ndim, ishape),
                           afo_reshape(g, x->ndim, gshape), axis);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static afo_status take_along_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = NULL;
    if (arg != 0) return AFO_OK;
    afo_array *x = out->in[0];
    int axis = AXIS(&out->attrs);
    int64_t zshape[AFO_MAX_DIMS];
    memcpy(zshape, out->shape, sizeof(int64_t) * (size_t)out->ndim);
    zshape[axis] = x->shape[axis]; /* x's broadcast axes are summed back below */
    afo_array *s = ow_scatter_add(afo_zeros(g->dtype, out->ndim, zshape), R(out->in[1]), R(g), axis);
    *grad = ow_unbroadcast(s, x);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static afo_status scatter_add_vjp(afo_array *out, afo_array *g, int arg, afo_array **grad) {
    *grad = NULL;
    if (arg == 1) return AFO_OK;
    if (arg == 0) {
        *grad = afo_retain(g);
        return AFO_OK;
    }
    afo_array *idx = out->in[1], *u = out->in[2];
    int axis = AXIS(&out->attrs);
    int64_t ushape[AFO_MAX_DIMS];
    memcpy(ushape, out->shape, sizeof(int64_t) * (size_t)out->ndim);
    ushape[axis] = idx->shape[axis] == 1 ? u->shape[axis] : idx->shape[axis];
    afo_array *ib = afo_broadcast_to(idx, out->ndim, ushape);
    afo_array *in[2] = {g, ib};
    afo_array *t = ib ? node_axis(AFO_OP_TAKE_ALONG_AXIS, in, 2, axis, 0) : NULL;
    afo_release(ib);
    *grad = ow_unbroadcast(t, u);
    return *grad ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

static const afo_op_def def_take = {"take", take_shape, {take_kernel}, take_vjp};
static const afo_op_def def_take_along = {"take_along_axis", take_along_shape, {take_along_kernel}, take_along_vjp};
static const afo_op_def def_scatter_add = {"scatter_add", scatter_add_shape, {scatter_add_kernel}, scatter_add_vjp};
static const afo_op_def def_argsort = {"argsort", sort_shape, {sort_kernel}, NULL};
static const afo_op_def def_argtopk = {"argtopk", sort_shape, {sort_kernel}, NULL};

/* ------------------------------------------------------------ public */

afo_array *afo_take(afo_array *x, afo_array *indices, int axis) {
    afo_array *in[2] = {x, indices};
    return node_axis(AFO_OP_TAKE, in, 2, axis, 0);
}

afo_array *afo_take_along_axis(afo_array *x, afo_array *indices, int axis) {
    afo_array *in[2] = {x, indices};
    return node_axis(AFO_OP_TAKE_ALONG_AXIS, in, 2, axis, 0);
}

afo_array *afo_scatter_add(afo_array *x, afo_array *indices, afo_array *updates, int axis) {
    afo_array *in[3] = {x, indices, updates};
    return node_axis(AFO_OP_SCATTER_ADD, in, 3, axis, 0);
}

afo_array *afo_argsort(afo_array *x, int axis) { return node_axis(AFO_OP_ARGSORT, &x, 1, axis, 0); }

afo_array *afo_argtopk(afo_array *x, int k, int axis) { return node_axis(AFO_OP_ARGTOPK, &x, 1, axis, k); }

static afo_array *gather_sorted(afo_array *x, afo_array *order, int axis) {
    afo_array *r = order ? afo_take_along_axis(x, order, axis) : NULL;
    afo_release(order);
    return r;
}

afo_array *afo_sort(afo_array *x, int axis) { return gather_sorted(x, afo_argsort(x, axis), axis); }

afo_array *afo_topk(afo_array *x, int k, int axis) { return gather_sorted(x, afo_argtopk(x, k, axis), axis); }

void afo_register_indexing_ops(void) {
    afo_op_register(AFO_OP_TAKE, &def_take);
    afo_op_register(AFO_OP_TAKE_ALONG_AXIS, &def_take_along);
    afo_op_register(AFO_OP_SCATTER_ADD, &def_scatter_add);
    afo_op_register(AFO_OP_ARGSORT, &def_argsort);
    afo_op_register(AFO_OP_ARGTOPK, &def_argtopk);
}
