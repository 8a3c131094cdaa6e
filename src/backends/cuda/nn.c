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

/* The launch parameters of the rope node `rope` (its inputs `in`). */
static void rope_params(const afo_array *rope, afo_array *const *in, afo_cuda_rope *p) {
    const afo_array *x = in[0];
    const afo_attrs *a = &rope->attrs;
    *p = (afo_cuda_rope){.L = x->shape[x->ndim - 2], .dims = a->i[AFO_ROPE_I_DIMS], .offset = a->i[AFO_ROPE_I_OFFSET],
                         .traditional = a->i[AFO_ROPE_I_TRADITIONAL] != 0, .inverse = a->i[AFO_ROPE_I_INVERSE] != 0,
                         .base = a->f[AFO_ROPE_F_BASE], .scale = a->f[AFO_ROPE_F_SCALE],
                         .freqs = vec_of(a->i[AFO_ROPE_I_HAS_FREQS] ? in[1] : NULL),
                         .position = a->i[AFO_ROPE_I_HAS_POSITION] ? afo_array_ptr(in[rope->nin - 1]) : NULL};
    for (int64_t i = 0; !p->freqs.data && i < p->dims / 2 && i < AFO_CUDA_ROPE_TABLE; i++)
        p->inv_freq[i] = pow(p->base, -2.0 * (double)i / (double)p->dims);
}

/* The rope node r (inputs rin) computed into dst. */
static void rope_into(const afo_array *r, afo_array *const *rin, afo_cuda_rope_dst *dst) {
    afo_cuda_rope p;
    rope_params(r, rin, &p);
    afo_cuda_rows x;
    rows_of(rin[0], &x);
    afo_cuda_rope_apply(&x, afo_array_ptr(rin[0]), r->dtype, dst, &p, afo_cuda_stream());
}

static afo_status rope_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    afo_cuda_rope_dst dst = {.data = afo_array_ptr(out)};
    rows_of(out, &dst.rows);
    rope_into(out, in, &dst);
    return afo_cuda_launched("rope");
}

/* slice_update <- rope: the rope's rows written straight into the updated
 * slots (a decode step's keys into their cache, one kernel fewer a layer). */
static afo_status roped_update(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    const afo_array *r = in[1];
    if (producer != 1 || r->dtype != out->dtype) return AFO_OK;
    for (int d = 0; d < out->ndim; d++)
        if (r->shape[d] != out->attrs.i[2 * AFO_MAX_DIMS + d]) return AFO_OK; /* a broadcast update */
    afo_array region;
    afo_cuda_shift shift;
    AFO_TRY(afo_cuda_slice_update_target(out, in, nin, &out->attrs, &region, &shift));
    *done = true;
    if (region.size == 0) return AFO_OK;
    afo_cuda_rope_dst dst = {afo_array_ptr(&region), .shift = shift};
    rows_of(&region, &dst.rows);
    rope_into(r, r->in, &dst);
    return afo_cuda_launched("slice_update with rope");
}

/* Strides over the first three axes, 0 along size-1 axes (so that they do
 * not spoil the alignment of vector loads). */
static void bhl_strides(const afo_array *x, int64_t s[3]) {
    for (int d = 0; d < 3; d++) s[d] = x->shape[d] == 1 ? 0 : x->strides[d];
}

/* Whether two ropes turn a position's pairs by the same angles. */
static bool same_angles(const afo_cuda_rope *a, const afo_cuda_rope *b) {
    return a->dims == b->dims && a->offset == b->offset && a->position == b->position &&
           a->traditional == b->traditional && a->inverse == b->inverse && a->base == b->base &&
           a->scale == b->scale && a->freqs.data == b->freqs.data && a->freqs.dtype == b->freqs.dtype &&
           a->freqs.stride == b->freqs.stride;
}

/* A decode step's cache writes as the decode kernel takes them: k =
 * in[1], slice_update_at(keys, rope(x) taken along) and v = in[2],
 * slice_update_at(values, x), both kept by the KV cache (folded_sdpa
 * checked), each a slot of the attention's position (p->position; none: a
 * rotating cache's step) in a cache it may update in place; the key's rope
 * is q's, which the decode kernel takes (attend checked). Fills the new
 * rows' fields of *p. */
static bool writes_of(afo_array *const *in, const afo_cuda_rope *q_rope, afo_cuda_sdpa *p) {
    if (!p->position) return false;
    const afo_array *kv[2] = {in[1], in[2]}, *rows[2];
    bool settled = true;
    for (int i = 0; i < 2; i++) {
        const afo_array *u = kv[i], *cache = u->in[0], *x = u->in[1];
        if (u->op != AFO_OP_SLICE_UPDATE || u->nin != 3 || u->attrs.i[AFO_SLICE_AT_AXIS] != 2 ||
            afo_array_ptr(u->in[2]) != p->position || !afo_slice_update_can_donate(cache) ||
            cache->dtype != p->dtype || u->ndim != 4)
            return false;
        /* the position, and the cache before this step's write marks it */
        settled = settled && afo_cuda_settled(u->in[2]->buf) && afo_cuda_settled(cache->buf);
        for (int d = 0; d < 4; d++)
            if (u->attrs.i[d] != 0 || u->attrs.i[AFO_MAX_DIMS + d] != 1 ||
                u->attrs.i[2 * AFO_MAX_DIMS + d] != (d == 2 ? 1 : u->shape[d]))
                return false;
        if (i == 0) { /* the key's rope, taken along: q's in all but its input */
            if (x->deferred != AFO_DEFER_ALONG || x->op != AFO_OP_ROPE || x->nin > 3) return false;
            for (int j = 0; j < x->nin; j++) {
                if (!x->in[j]->buf) return false;
                settled = settled && (j == 0 || afo_cuda_settled(x->in[j]->buf)); /* q's angles read them too */
            }
            afo_cuda_rope k_rope;
            rope_params(x, x->in, &k_rope);
            if (!same_angles(&k_rope, q_rope)) return false;
            x = x->in[0];
            if (x->buf->device != AFO_CUDA) return false; /* the kernel reads it */
        } else if (x->deferred) {
            return false;
        }
        if (x->dtype != p->dtype || x->ndim != 4 || x->shape[2] != 1 || x->strides[3] != 1) return false;
        for (int d = 0; d < 4; d++)
            if (x->shape[d] != (d == 2 ? 1 : u->shape[d])) return false;
        rows[i] = x;
    }
    p->k_new = afo_array_ptr(rows[0]), p->v_new = afo_array_ptr(rows[1]), p->settled = settled;
    for (int d = 0; d < 2; d++) p->kns[d] = rows[0]->strides[d], p->vns[d] = rows[1]->strides[d];
    return true;
}

/* Attention with q read from `q` (in[0], or the input of the rope in[0]
 * that the decode kernel applies as it loads it: q_rope). With q_rope,
 * declines (*done false, nothing done) unless the decode kernel takes it
 * as it is, without dense copies of k or v; with `writes` too (in[1] and
 * in[2] kept cache writes, writes_of), unless it takes those as well, and
 * then gives them their data: the caches, updated in place. */
static afo_status attend(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a, const afo_array *q,
                         const afo_cuda_rope *q_rope, bool writes, bool *done) {
    /* a kept write reads and updates its cache in place: the cache's view is the write's */
    const afo_array *src[3] = {q, writes ? in[1]->in[0] : in[1], writes ? in[2]->in[0] : in[2]};
    afo_array view[3];
    bool dense[3];
    for (int i = 0; i < 3; i++) {
        view[i] = *src[i];
        dense[i] = src[i]->dtype != out->dtype || (src[i]->strides[3] != 1 && src[i]->shape[3] > 1);
        if (dense[i] && q_rope) return AFO_OK;
    }
    afo_cuda_sdpa p = {.B = view[0].shape[0], .Hq = view[0].shape[1], .Hkv = view[1].shape[1],
                       .Lq = view[0].shape[2], .Lk = view[1].shape[2], .D = view[0].shape[3], .Dv = view[2].shape[3],
                       .dtype = out->dtype, .causal = a->i[AFO_SDPA_I_CAUSAL] != 0, .window = a->i[AFO_SDPA_I_WINDOW],
                       .scale = a->f[AFO_SDPA_F_SCALE], .q_rope = q_rope};
    bool positioned = a->i[AFO_SDPA_I_HAS_POSITION];
    if (positioned) p.position = afo_array_ptr(in[nin - 1]);
    if (nin > 3 + positioned) {
        const afo_array *m = in[3];
        p.mask = afo_array_ptr(m);
        p.mask_dtype = m->dtype;
        for (int d = 0; d < 4; d++) {
            int md = d - (4 - m->ndim);
            p.ms[d] = md < 0 || m->shape[md] == 1 ? 0 : m->strides[md];
        }
    }
    afo_buffer *scratch[4] = {NULL, NULL, NULL, NULL};
    afo_status st = AFO_OK;
    for (int i = 0; i < 3 && st == AFO_OK; i++)
        if (dense[i]) st = afo_cuda_dense(src[i], out->dtype, &view[i], &scratch[i]);
    if (st == AFO_OK) {
        p.q = afo_array_ptr(&view[0]), p.k = afo_array_ptr(&view[1]), p.v = afo_array_ptr(&view[2]);
        bhl_strides(&view[0], p.qs);
        bhl_strides(&view[1], p.ks);
        bhl_strides(&view[2], p.vs);
    }
    if (st == AFO_OK && q_rope && !afo_cuda_sdpa_ropes_q(&p)) return AFO_OK;
    if (st == AFO_OK && writes && !writes_of(in, q_rope, &p)) return AFO_OK;
    *done = true;
    for (int i = 1; i <= 2 && writes && st == AFO_OK; i++) { /* the kernel writes their slots */
        afo_array region;
        afo_cuda_shift shift;
        st = afo_cuda_slice_update_target(in[i], in[i]->in, in[i]->nin, &in[i]->attrs, &region, &shift);
    }
    if (st == AFO_OK) st = afo_array_alloc(out);
    if (st == AFO_OK && out->size > 0) {
        p.out = afo_array_ptr(out);
        int supported = 0;
        size_t bytes = afo_cuda_sdpa_plan(&p, &supported);
        if (!supported)
            st = afo_error(AFO_ERR_UNSUPPORTED,
                           "scaled_dot_product_attention: head size %lld/%lld on CUDA (at most 256, 128 for float64)",
                           (long long)p.D, (long long)p.Dv);
        if (st == AFO_OK && bytes) {
            scratch[3] = afo_buffer_alloc(AFO_CUDA, bytes);
            if (!scratch[3]) st = afo_last_status();
            else p.scratch = scratch[3]->data;
        }
        if (st == AFO_OK)
            st = afo_cuda_status(afo_cuda_sdpa_run(&p, afo_cuda_stream()), "scaled_dot_product_attention");
    }
    /* the stream orders the kernels before any reuse of the scratch */
    for (int i = 0; i < 4; i++)
        if (scratch[i]) afo_buffer_release(scratch[i]);
    return st;
}

static afo_status sdpa_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    bool done = false;
    return attend(out, in, nin, a, in[0], NULL, false, &done);
}

/* scaled_dot_product_attention <- rope of q: the decode kernel turns q as
 * it loads it (one kernel fewer a layer); with the step's key and value
 * writes into the KV cache (kept producers in[1] and in[2]), it writes
 * them too (two fewer). */
static afo_status folded_sdpa(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)producer;
    const afo_array *r = in[0];
    /* both writes or neither (the one the graph reads elsewhere runs apart, and then
     * the other too); their caches evaluated, as attend reads them */
    const bool writes = in[1]->deferred == AFO_DEFER_KEPT;
    if (writes != (in[2]->deferred == AFO_DEFER_KEPT) || (writes && (!in[1]->in[0]->buf || !in[2]->in[0]->buf)))
        return AFO_OK;
    if (r->deferred != AFO_DEFER_ALONG || r->op != AFO_OP_ROPE || r->in[0]->ndim != 4) return AFO_OK;
    afo_cuda_rope rope;
    rope_params(r, r->in, &rope);
    return attend(out, in, nin, &out->attrs, r->in[0], &rope, writes, done);
}

void afo_cuda_register_nn(void) {
    afo_op_set_kernel(AFO_OP_RMS_NORM, AFO_CUDA, norm_kernel);
    afo_op_set_kernel(AFO_OP_LAYER_NORM, AFO_CUDA, norm_kernel);
    afo_op_set_kernel(AFO_OP_ROPE, AFO_CUDA, rope_kernel);
    afo_op_set_kernel(AFO_OP_SDPA, AFO_CUDA, sdpa_kernel);
    afo_op_set_fused(AFO_CUDA, AFO_OP_SDPA, AFO_OP_ROPE, folded_sdpa);
    afo_op_set_fused_kept(AFO_CUDA, AFO_OP_SDPA, AFO_OP_SLICE_UPDATE, folded_sdpa);
    afo_op_set_fused(AFO_CUDA, AFO_OP_SLICE_UPDATE, AFO_OP_ROPE, roped_update);
}
