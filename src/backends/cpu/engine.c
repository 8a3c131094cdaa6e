/* The strided elementwise engine: every elementwise, astype and copy kernel
 * runs through it. Dimensions that are contiguous for all operands are merged
 * first, so the common cases become one long row. */
#include "backends/cpu/cpu.h"
#include "backends/cpu/threadpool.h"

#define CHUNK 512

typedef struct ew_plan {
    int ndim;
    int64_t shape[AFO_MAX_DIMS];
    int nin;
    int64_t strides[AFO_EW_MAX_INPUTS + 1][AFO_MAX_DIMS]; /* [0] = output */
    char *base[AFO_EW_MAX_INPUTS + 1];
    afo_dtype dt[AFO_EW_MAX_INPUTS + 1];
    afo_ctype ct;
    afo_ew_fn fn; /* NULL: plain conversion of input 0 */
    int64_t chunks_per_row;
} ew_plan;

static bool native_dtype(afo_dtype dt, afo_ctype ct) {
    return (ct == AFO_CT_F32 && dt == AFO_FLOAT32) || (ct == AFO_CT_F64 && dt == AFO_FLOAT64) ||
           (ct == AFO_CT_I64 && dt == AFO_INT64);
}

static void collapse(ew_plan *p, int nops) {
    int64_t *strides[AFO_EW_MAX_INPUTS + 1];
    for (int k = 0; k < nops; k++) strides[k] = p->strides[k];
    p->ndim = afo_merge_axes(p->ndim, p->shape, nops, strides);
}

static void run_chunks(void *ctx, int64_t begin, int64_t end) {
    const ew_plan *p = ctx;
    int nops = p->nin + 1;
    _Alignas(64) unsigned char tmp[AFO_EW_MAX_INPUTS + 1][CHUNK * 8];
    int64_t inner = p->shape[p->ndim - 1];
    for (int64_t w = begin; w < end; w++) {
        int64_t row = w / p->chunks_per_row, start = (w % p->chunks_per_row) * CHUNK;
        int64_t n = inner - start < CHUNK ? inner - start : CHUNK;
        int64_t off[AFO_EW_MAX_INPUTS + 1] = {0};
        int64_t r = row;
        for (int d = p->ndim - 2; d >= 0; d--) {
            int64_t idx = r % p->shape[d];
            r /= p->shape[d];
            for (int k = 0; k < nops; k++) off[k] += idx * p->strides[k][d];
        }
        const void *ins[AFO_EW_MAX_INPUTS];
        for (int k = 1; k < nops; k++) {
            int64_t stride = p->strides[k][p->ndim - 1];
            const char *src = p->base[k] + (off[k] + start * stride) * (int64_t)afo_dtype_size(p->dt[k]);
            if (stride == 1 && native_dtype(p->dt[k], p->ct)) {
                ins[k - 1] = src;
            } else {
                afo_cpu_load_row(p->dt[k], src, stride, n, p->ct, tmp[k]);
                ins[k - 1] = tmp[k];
            }
        }
        int64_t ostride = p->strides[0][p->ndim - 1];
        char *dst = p->base[0] + (off[0] + start * ostride) * (int64_t)afo_dtype_size(p->dt[0]);
        if (!p->fn) {
            afo_cpu_store_row(p->ct, ins[0], n, p->dt[0], dst, ostride);
        } else if (ostride == 1 && native_dtype(p->dt[0], p->ct)) {
            p->fn(n, dst, ins);
        } else {
            p->fn(n, tmp[0], ins);
            afo_cpu_store_row(p->ct, tmp[0], n, p->dt[0], dst, ostride);
        }
    }
}

static void plan_run(ew_plan *p) {
    collapse(p, p->nin + 1);
    int64_t inner = p->shape[p->ndim - 1];
    int64_t rows = 1;
    for (int d = 0; d < p->ndim - 1; d++) rows *= p->shape[d];
    p->chunks_per_row = (inner + CHUNK - 1) / CHUNK;
    int64_t items = rows * p->chunks_per_row;
    /* about 16K elements per thread before threading pays off */
    int64_t grain = inner >= CHUNK ? 32 : (16384 / (inner > 0 ? inner : 1)) + 1;
    afo_parallel_for(items, grain, run_chunks, p);
}

afo_status afo_cpu_elementwise(afo_array *out, afo_array *const *in, int nin, afo_ctype ct, afo_ew_fn fn) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    ew_plan p = {.ndim = out->ndim, .nin = nin, .ct = ct, .fn = fn};
    for (int d = 0; d < out->ndim; d++) p.shape[d] = out->shape[d];
    for (int d = 0; d < out->ndim; d++) p.strides[0][d] = out->strides[d];
    p.base[0] = afo_array_ptr(out);
    p.dt[0] = out->dtype;
    for (int k = 0; k < nin; k++) {
        afo_broadcast_strides(in[k], out->ndim, out->shape, p.strides[k + 1]);
        p.base[k + 1] = afo_array_ptr(in[k]);
        p.dt[k + 1] = in[k]->dtype;
    }
    plan_run(&p);
    return AFO_OK;
}

void afo_cpu_copy(const afo_array *src, void *dst, afo_dtype dst_dtype) {
    if (src->size == 0) return;
    if (src->contiguous && src->dtype == dst_dtype) {
        memcpy(dst, afo_array_ptr(src), (size_t)src->size * afo_dtype_size(src->dtype));
        return;
    }
    ew_plan p = {.ndim = src->ndim, .nin = 1, .ct = afo_cpu_ctype_between(src->dtype, dst_dtype)};
    afo_contiguous_strides(src->ndim, src->shape, p.strides[0]);
    for (int d = 0; d < src->ndim; d++) {
        p.shape[d] = src->shape[d];
        p.strides[1][d] = src->strides[d];
    }
    p.base[0] = dst;
    p.dt[0] = dst_dtype;
    p.base[1] = afo_array_ptr(src);
    p.dt[1] = src->dtype;
    plan_run(&p);
}

void afo_cpu_assign(afo_array *dst, const afo_array *src) {
    if (dst->size == 0) return;
    ew_plan p = {.ndim = dst->ndim, .nin = 1, .ct = afo_cpu_ctype_between(src->dtype, dst->dtype)};
    for (int d = 0; d < dst->ndim; d++) {
        p.shape[d] = dst->shape[d];
        p.strides[0][d] = dst->strides[d];
    }
    afo_broadcast_strides(src, dst->ndim, dst->shape, p.strides[1]);
    p.base[0] = afo_array_ptr(dst);
    p.dt[0] = dst->dtype;
    p.base[1] = afo_array_ptr(src);
    p.dt[1] = src->dtype;
    plan_run(&p);
}

void afo_row_iter_init(afo_row_iter *it, const afo_array *a) {
    it->ndim = a->ndim > 0 ? a->ndim - 1 : 0;
    it->rows = 1;
    for (int d = 0; d < it->ndim; d++) {
        it->shape[d] = a->shape[d];
        it->strides[d] = a->strides[d];
        it->rows *= a->shape[d];
    }
}

int64_t afo_row_iter_offset(const afo_row_iter *it, int64_t r) {
    int64_t off = 0;
    for (int d = it->ndim - 1; d >= 0; d--) {
        off += (r % it->shape[d]) * it->strides[d];
        r /= it->shape[d];
    }
    return off;
}
