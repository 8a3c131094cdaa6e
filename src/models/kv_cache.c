/* The KV cache and the attention that reads it. Three layouts:
 *  - plain: per layer [B, kv_heads, capacity, head_dim] in the cache's
 *    dtype (the compute dtype unless kv_dtype says otherwise; keys and
 *    values are converted before they are stored),
 *    written in place with slice_update (the update node replaces the slot,
 *    so the buffer is reused);
 *  - quantized (mlx-lm's QuantizedKVCache): the same positions as packed
 *    words, scales and biases along head_dim; new keys and values are
 *    quantized before they are stored and attention reads them through
 *    afo_quantized_matmul, one kv head at a time, as mlx-lm's
 *    quantized_scaled_dot_product_attention does;
 *  - rotating (mlx-lm's RotatingKVCache): the first `keep` positions, then a
 *    ring of W = max_kv_size - keep slots. Every query sees the keep
 *    positions and the W most recent ones (itself included), also within a
 *    prefill chunk: mlx-lm's chunked prefill instead slides a window over
 *    its trimmed buffer, which hides the keep positions from the later
 *    queries of a chunk; ours makes prefill agree with decoding token by
 *    token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "afo/quant.h"
#include "core/compose.h"
#include "models/models.h"

#define CACHE_STEP 256

/* Where the keys of one forward pass come from. */
typedef enum kv_layout {
    KEYS_PREFIX,     /* slots [0, total) in order: position = slot */
    KEYS_RING,       /* one new position written into a full ring; all slots */
    KEYS_RING_CHUNK, /* the slots as they were, then the chunk (not yet stored) */
} kv_layout;

struct afo_kv_cache {
    const afo_model *model;
    afo_kv_cache_options opt;
    int64_t batch, length, capacity;
    bool quantized;
    afo_array **buf;       /* [layer][k, v][part]: part 0 the values, or packed, scales, biases */
    afo_array **heads;     /* [batch * kv_heads] scratch of the quantized attention */
    /* this forward pass: */
    int64_t n;
    kv_layout layout;
    afo_array *position;   /* borrowed; set by kv_begin_at */
    afo_array *mask[2];    /* additive [n, keys] for full / sliding layers; NULL: none needed */
    float *scratch;
    size_t scratch_len;
};

static afo_array **slot(afo_kv_cache *c, int layer, int kv, int part) {
    return &c->buf[((size_t)layer * 2 + (size_t)kv) * 3 + (size_t)part];
}

/* Neither quantized (now or later) nor rotating. */
static bool plain(const afo_kv_cache *c) { return !c->quantized && !c->opt.kv_bits && !c->opt.max_kv_size; }

afo_array *kv_plain_buffer(afo_kv_cache *c, int layer, int kv) { return plain(c) ? *slot(c, layer, kv, 0) : NULL; }

static int num_parts(const afo_kv_cache *c) { return c->quantized ? 3 : 1; }

/* Last axis and dtype of a part of the buffers. */
static int64_t part_width(const afo_kv_cache *c, int part, afo_dtype *dt) {
    int64_t D = c->model->cfg.head_dim;
    *dt = part == 0 && c->quantized ? AFO_UINT32 : afo_kv_cache_dtype(c);
    if (!c->quantized) return D;
    return part == 0 ? D * c->opt.kv_bits / 32 : D / c->opt.kv_group_size;
}

afo_kv_cache_options afo_kv_cache_defaults(void) {
    return (afo_kv_cache_options){.kv_group_size = 64, .keep = 4};
}

static afo_status check_options(const afo_model *m, const afo_kv_cache_options *o) {
    int64_t D = m->cfg.head_dim;
    if (o->kv_bits) {
        int b = o->kv_bits;
        if (b < 2 || b > 8 || b == 7)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: kv_bits %d is not 2, 3, 4, 5, 6 or 8", b);
        int g = o->kv_group_size;
        if (g != 32 && g != 64 && g != 128)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: kv_group_size %d is not 32, 64 or 128", g);
        if (D % g)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: kv_group_size %d does not divide head_dim %lld", g,
                             (long long)D);
        if (o->quantized_start < 0)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: quantized_start %lld < 0",
                             (long long)o->quantized_start);
    }
    afo_dtype t = o->kv_dtype;
    if (t != AFO_BOOL && t != AFO_FLOAT32 && t != AFO_BFLOAT16 && t != AFO_FLOAT16)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: kv_dtype %s is not float32, bfloat16 or float16",
                         afo_dtype_name(t));
    if (o->max_kv_size < 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: max_kv_size %lld < 0", (long long)o->max_kv_size);
    if (o->max_kv_size) {
        if (o->keep < 0 || o->keep >= o->max_kv_size)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: max_kv_size %lld must exceed keep %d (keep >= 0)",
                             (long long)o->max_kv_size, o->keep);
        if (o->kv_bits)
            return afo_error(AFO_ERR_INVALID_ARGUMENT,
                             "kv cache: kv_bits and max_kv_size cannot be combined (as in mlx-lm)");
    }
    return AFO_OK;
}

afo_status afo_kv_cache_create_ex(const afo_model *m, int64_t batch, const afo_kv_cache_options *opts,
                                  afo_kv_cache **out) {
    if (!out) return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: NULL out");
    *out = NULL;
    if (!m || batch < 1) return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: needs a model and batch >= 1");
    afo_kv_cache_options o = opts ? *opts : afo_kv_cache_defaults();
    AFO_TRY(check_options(m, &o));
    afo_kv_cache *c = calloc(1, sizeof *c);
    if (c) {
        c->model = m;
        c->buf = calloc((size_t)m->cfg.layers * 6, sizeof *c->buf);
        c->heads = o.kv_bits ? calloc((size_t)(batch * m->cfg.kv_heads), sizeof *c->heads) : NULL;
    }
    if (!c || !c->buf || (o.kv_bits && !c->heads)) {
        afo_kv_cache_free(c);
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "kv cache: out of memory");
    }
    c->opt = o;
    c->batch = batch;
    *out = c;
    return AFO_OK;
}

afo_status afo_kv_cache_create(const afo_model *m, int64_t batch, afo_kv_cache **out) {
    return afo_kv_cache_create_ex(m, batch, NULL, out);
}

static void release_buffers(afo_kv_cache *c) {
    for (size_t i = 0; c->model && i < (size_t)c->model->cfg.layers * 6; i++) afo_release(c->buf[i]), c->buf[i] = NULL;
    c->capacity = 0;
}

void afo_kv_cache_free(afo_kv_cache *c) {
    if (!c) return;
    if (c->buf) release_buffers(c);
    afo_release(c->mask[0]);
    afo_release(c->mask[1]);
    free(c->buf);
    free(c->heads);
    free(c->scratch);
    free(c);
}

void afo_kv_cache_reset(afo_kv_cache *c) {
    if (!c) return;
    c->length = 0;
    if (c->quantized) { /* back to the unquantized start, as a fresh mlx-lm cache */
        release_buffers(c);
        c->quantized = false;
    }
}

int64_t afo_kv_cache_length(const afo_kv_cache *c) { return c ? c->length : 0; }
int64_t afo_kv_cache_batch(const afo_kv_cache *c) { return c ? c->batch : 0; }
int afo_kv_cache_is_quantized(const afo_kv_cache *c) { return c && c->quantized; }
afo_dtype afo_kv_cache_dtype(const afo_kv_cache *c) { return c->opt.kv_dtype ? c->opt.kv_dtype : c->model->compute; }
const afo_model *kv_cache_model(const afo_kv_cache *c) { return c->model; }

/* Each layer reads every position it attends to (the new one included):
 * all it keeps, at most max_kv_size for a rotating cache, at most the
 * window in a sliding layer (attention reads only the window's keys). */
size_t kv_step_bytes(const afo_kv_cache *c) {
    const model_config *cfg = &c->model->cfg;
    size_t position = 0; /* one position of one layer's keys (values alike), every head and sequence */
    for (int p = 0; p < num_parts(c); p++) {
        afo_dtype dt;
        position += (size_t)part_width(c, p, &dt) * afo_dtype_size(dt);
    }
    position *= (size_t)(c->batch * cfg->kv_heads);
    int64_t kept = c->opt.max_kv_size && c->length + 1 > c->opt.max_kv_size ? c->opt.max_kv_size : c->length + 1;
    size_t bytes = 0;
    for (int l = 0; l < cfg->layers; l++) {
        int64_t window = cfg->layer_sliding[l] ? cfg->sliding_window : 0;
        int64_t read = window && window < kept ? window : kept;
        bytes += 2 * position * (size_t)read;
    }
    return bytes;
}

size_t afo_kv_cache_nbytes(const afo_kv_cache *c) {
    size_t n = 0;
    for (size_t i = 0; c && i < (size_t)c->model->cfg.layers * 6; i++)
        if (c->buf[i]) n += afo_array_nbytes(c->buf[i]);
    return n;
}

afo_status afo_kv_cache_truncate(afo_kv_cache *c, int64_t length) {
    if (!c || length < 0 || length > c->length)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "kv cache: cannot truncate to %lld positions (holds %lld)",
                         (long long)length, (long long)(c ? c->length : 0));
    if (c->opt.max_kv_size && c->length > c->opt.max_kv_size && length < c->length)
        return afo_error(AFO_ERR_INVALID_ARGUMENT,
                         "kv cache: cannot truncate a rotating cache (max_kv_size %lld) that has dropped positions",
                         (long long)c->opt.max_kv_size);
    c->length = length;
    return AFO_OK;
}

/* ---------------------------------------------------------------- buffers */

/* Grows every buffer to hold `needed` slots (a multiple of CACHE_STEP, at
 * most max_kv_size), keeping the filled ones. */
static afo_status reserve(afo_kv_cache *c, int64_t needed) {
    int64_t N = c->opt.max_kv_size;
    if (N && needed > N) needed = N;
    if (needed <= c->capacity) return AFO_OK;
    const model_config *cfg = &c->model->cfg;
    int64_t cap = (needed + CACHE_STEP - 1) / CACHE_STEP * CACHE_STEP;
    if (N && cap > N) cap = N;
    int64_t filled = c->length < c->capacity ? c->length : c->capacity;
    for (int l = 0; l < cfg->layers; l++)
        for (int kv = 0; kv < 2; kv++)
            for (int p = 0; p < num_parts(c); p++) {
                afo_array **s = slot(c, l, kv, p);
                afo_dtype dt;
                int64_t shape[4] = {c->batch, cfg->kv_heads, cap, part_width(c, p, &dt)};
                afo_array *fresh = afo_zeros(dt, 4, shape);
                if (fresh && *s && filled > 0) {
                    int64_t start[4] = {0}, stop[4] = {shape[0], shape[1], filled, shape[3]};
                    afo_array *kept = afo_slice_axis(*s, 2, 0, filled);
                    afo_array *u = kept ? afo_slice_update(fresh, kept, start, stop, NULL) : NULL;
                    afo_release(kept);
                    afo_release(fresh);
                    fresh = u;
                } else { /* zeros of its own, not a broadcast scalar: decode_step writes in place */
                    fresh = ow_unary(afo_contiguous, fresh);
                }
                if (!fresh || afo_eval1(fresh) != AFO_OK) {
                    afo_release(fresh);
                    return afo_last_status();
                }
                afo_release(*s);
                *s = fresh;
            }
    c->capacity = cap;
    return AFO_OK;
}

afo_status kv_reserve(afo_kv_cache *c, int64_t capacity) { return reserve(c, capacity); }
int64_t kv_capacity(const afo_kv_cache *c) { return c->capacity; }
void kv_advance(afo_kv_cache *c, int64_t n) { c->length += n; }

/* Writes x [B, K, n, *] (taken) at slots start.. of *s (at the value of
 * c->position when set); the slot keeps the update node only, so
 * slice_update can reuse the buffer in place. */
static afo_status put_in(const afo_kv_cache *c, afo_array **s, afo_array *x, int64_t start) {
    if (!x) return afo_last_status();
    const int64_t *sh = afo_array_shape(*s);
    int64_t b[4] = {0, 0, start, 0}, e[4] = {sh[0], sh[1], start + afo_array_dim(x, 2), sh[3]};
    afo_array *u = c && c->position ? afo_slice_update_at(*s, x, 2, c->position) : afo_slice_update(*s, x, b, e, NULL);
    afo_release(x);
    if (!u) return afo_last_status();
    afo_release(*s);
    *s = u;
    return AFO_OK;
}

static afo_status put(afo_array **s, afo_array *x, int64_t start) { return put_in(NULL, s, x, start); }

/* The slot of position p in a rotating cache. */
static int64_t ring_slot(const afo_kv_cache *c, int64_t p) {
    int64_t keep = c->opt.keep, W = c->opt.max_kv_size - keep;
    return p < keep ? p : keep + (p - keep) % W;
}

/* The position slot s holds after `length` positions were fed: the last p
 * < length that maps to it. */
static int64_t slot_position(const afo_kv_cache *c, int64_t s, int64_t length) {
    int64_t keep = c->opt.keep, W = c->opt.max_kv_size - keep;
    if (s < keep) return s;
    int64_t r = s - keep;
    return keep + r + W * ((length - 1 - keep - r) / W);
}

/* ---------------------------------------------------------------- masks */

static int64_t key_count(const afo_kv_cache *c) {
    int64_t o = c->length, N = c->opt.max_kv_size;
    switch (c->layout) {
    case KEYS_PREFIX: return o + c->n;
    case KEYS_RING: return N;
    case KEYS_RING_CHUNK: return (o < N ? o : N) + c->n;
    }
    return 0;
}

static int64_t key_position(const afo_kv_cache *c, int64_t j) {
    int64_t o = c->length, N = c->opt.max_kv_size;
    switch (c->layout) {
    case KEYS_PREFIX: return j;
    case KEYS_RING: return slot_position(c, j, o + 1);
    case KEYS_RING_CHUNK: {
        int64_t old = o < N ? o : N;
        return j < old ? slot_position(c, j, o) : o + (j - old);
    }
    }
    return 0;
}

/* Whether the layers of one kind (window: their sliding window, 0 none)
 * need an explicit mask this pass; the plain prefix layout uses the
 * attention op's own causal and window rules. */
static bool needs_mask(const afo_kv_cache *c, int64_t window) {
    int64_t total = c->length + c->n;
    switch (c->layout) {
    case KEYS_PREFIX: return c->quantized && (c->n > 1 || (window > 0 && total > window));
    case KEYS_RING: return window > 0;
    case KEYS_RING_CHUNK: return true;
    }
    return true;
}

/* Additive mask [n, keys] in the compute dtype: query i (position o + i)
 * sees key position kp when kp <= qp, kp is kept (kp < keep or one of the
 * W most recent) and within the window. */
static afo_status build_mask(afo_kv_cache *c, int64_t window, afo_array **out) {
    *out = NULL;
    if (!needs_mask(c, window)) return AFO_OK;
    int64_t n = c->n, L = key_count(c), keep = c->opt.keep;
    int64_t W = c->opt.max_kv_size ? c->opt.max_kv_size - keep : INT64_MAX;
    size_t need = (size_t)(n * L);
    if (need > c->scratch_len) { /* grows to the largest chunk, then stays */
        float *grown = realloc(c->scratch, need * sizeof *grown);
        if (!grown) return afo_error(AFO_ERR_OUT_OF_MEMORY, "kv cache: out of memory for a %lld x %lld mask",
                                     (long long)n, (long long)L);
        c->scratch = grown;
        c->scratch_len = need;
    }
    for (int64_t j = 0; j < L; j++) {
        int64_t kp = key_position(c, j);
        for (int64_t i = 0; i < n; i++) {
            int64_t qp = c->length + i;
            bool seen = kp <= qp && (kp < keep || kp > qp - W) && (!window || kp > qp - window);
            c->scratch[i * L + j] = seen ? 0.0f : -INFINITY;
        }
    }
    int64_t shape[2] = {n, L};
    *out = ow_astype(afo_array_from_data(c->scratch, AFO_FLOAT32, 2, shape), c->model->compute);
    return *out ? AFO_OK : afo_last_status();
}

afo_status kv_begin(afo_kv_cache *c, int64_t n) {
    int64_t o = c->length, N = c->opt.max_kv_size;
    c->n = n;
    c->layout = !N || o + n <= N ? KEYS_PREFIX : n == 1 ? KEYS_RING : KEYS_RING_CHUNK;
    AFO_TRY(reserve(c, o + n));
    AFO_TRY(build_mask(c, 0, &c->mask[0]));
    return build_mask(c, c->model->cfg.sliding_window, &c->mask[1]);
}

/* ---------------------------------------------------------------- attention */

/* One kv head's part [L, width] of a 4-D buffer prefix [B, K, >= L, width]. */
static afo_array *head_rows(afo_array *x, int64_t b, int64_t h, int64_t L) {
    int64_t w = afo_array_dim(x, 3);
    int64_t start[4] = {b, h, 0, 0}, stop[4] = {b + 1, h + 1, L, w}, shape[2] = {L, w};
    return ow_reshape(afo_slice(x, start, stop, NULL), 2, shape);
}

afo_array *quantized_sdpa(afo_array *q, afo_array *const *k, afo_array *const *v, float scale, afo_array *mask,
                          int group_size, int bits, afo_array **scratch) {
    const int64_t *qs = afo_array_shape(q);
    int64_t B = qs[0], H = qs[1], n = qs[2], D = qs[3], K = afo_array_dim(k[0], 1), L = afo_array_dim(k[0], 2);
    int64_t rep = H / K;
    afo_array *qscaled = ow_mul(R(q), afo_scalar_like(q, scale)); /* scaled first, as mlx-lm */
    bool ok = qscaled != NULL;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < K; h++) {
            afo_array **out = &scratch[b * K + h];
            *out = NULL;
            if (!ok) continue;
            int64_t start[4] = {b, h * rep, 0, 0}, stop[4] = {b + 1, (h + 1) * rep, n, D};
            int64_t rows[2] = {rep * n, D}, grid[3] = {rep, n, L}, flat[2] = {rep * n, L};
            afo_array *x = ow_reshape(afo_slice(qscaled, start, stop, NULL), 2, rows);
            afo_array *kp[3], *vp[3];
            for (int p = 0; p < 3; p++) kp[p] = head_rows(k[p], b, h, L), vp[p] = head_rows(v[p], b, h, L);
            afo_array *s = x && kp[0] && kp[1] && kp[2]
                               ? afo_quantized_matmul(x, kp[0], kp[1], kp[2], 1, group_size, bits) : NULL;
            s = ow_reshape(s, 3, grid);
            if (mask) s = ow_add(s, R(mask));
            afo_array *pr = s ? afo_softmax(s, -1) : NULL;
            afo_release(s);
            pr = ow_reshape(pr, 2, flat);
            afo_array *o = pr && vp[0] && vp[1] && vp[2]
                               ? afo_quantized_matmul(pr, vp[0], vp[1], vp[2], 0, group_size, bits) : NULL;
            int64_t one[4] = {1, rep, n, D};
            *out = ow_reshape(o, 4, one);
            afo_release(x), afo_release(pr);
            afo_release_n(kp, 3), afo_release_n(vp, 3);
            ok = *out != NULL;
        }
    afo_array *all = ok ? afo_concatenate(scratch, (int)(B * K), 1) : NULL;
    afo_release_n(scratch, (int)(B * K));
    afo_release(qscaled);
    int64_t shape[4] = {B, H, n, D};
    return ow_reshape(all, 4, shape);
}

/* Stores the new positions of a chunk whose keys went to attention beside
 * the ring (KEYS_RING_CHUNK): only those still kept afterwards, wrapping
 * around the ring. x [B, K, n, D] is borrowed. */
static afo_status put_survivors(afo_kv_cache *c, afo_array **s, afo_array *x) {
    int64_t o = c->length, total = o + c->n, keep = c->opt.keep, W = c->opt.max_kv_size - keep;
    for (int64_t p = o; p < total && p < keep; p++) /* keep positions: slot = position */
        AFO_TRY(put(s, afo_slice_axis(x, 2, p - o, p - o + 1), p));
    int64_t p = total - W > o ? total - W : o;
    if (p < keep) p = keep;
    while (p < total) {
        int64_t at = ring_slot(c, p), run = total - p < keep + W - at ? total - p : keep + W - at;
        AFO_TRY(put(s, afo_slice_axis(x, 2, p - o, p - o + run), at));
        p += run;
    }
    return AFO_OK;
}

/* Plain (unquantized) buffers: stores k, v and attends. */
static afo_array *attend_plain(afo_kv_cache *c, int layer, afo_array *q, afo_array *k, afo_array *v, float scale,
                               int window, afo_array *mask) {
    afo_array **ks = slot(c, layer, 0, 0), **vs = slot(c, layer, 1, 0);
    int64_t o = c->length, total = o + c->n;
    afo_array *K = NULL, *V = NULL, *out = NULL;
    switch (c->layout) {
    case KEYS_PREFIX:
        if (put_in(c, ks, k, o) != AFO_OK) {
            afo_release(v);
        } else if (put_in(c, vs, v, o) == AFO_OK) {
            K = c->position ? afo_retain(*ks) : afo_slice_axis(*ks, 2, 0, total);
            V = c->position ? afo_retain(*vs) : afo_slice_axis(*vs, 2, 0, total);
        }
        if (K && V)
            out = c->position ? afo_scaled_dot_product_attention_at(q, K, V, scale, NULL, window, c->position)
                              : afo_scaled_dot_product_attention(q, K, V, scale, NULL, 1, window);
        break;
    case KEYS_RING:
        if (put(ks, k, ring_slot(c, o)) != AFO_OK) afo_release(v);
        else if (put(vs, v, ring_slot(c, o)) == AFO_OK) out = afo_scaled_dot_product_attention(q, *ks, *vs, scale, mask, 0, 0);
        break;
    case KEYS_RING_CHUNK: {
        int64_t old = o < c->opt.max_kv_size ? o : c->opt.max_kv_size;
        afo_array *kk[2] = {afo_slice_axis(*ks, 2, 0, old), k}, *vv[2] = {afo_slice_axis(*vs, 2, 0, old), v};
        K = kk[0] ? afo_concatenate(kk, 2, 2) : NULL;
        V = vv[0] ? afo_concatenate(vv, 2, 2) : NULL;
        afo_release(kk[0]), afo_release(vv[0]);
        out = K && V ? afo_scaled_dot_product_attention(q, K, V, scale, mask, 0, 0) : NULL;
        if (out && (put_survivors(c, ks, k) != AFO_OK || put_survivors(c, vs, v) != AFO_OK))
            afo_release(out), out = NULL;
        afo_release(k), afo_release(v);
        break;
    }
    }
    afo_release(K), afo_release(V);
    return out;
}

afo_array *kv_attend(afo_kv_cache *c, int layer, afo_array *q, afo_array *k, afo_array *v, float scale,
                     bool sliding) {
    afo_array *mask = c->mask[sliding];
    /* stored and attended to in the cache's dtype, the new positions too */
    afo_dtype stored = afo_kv_cache_dtype(c);
    if (k && afo_array_dtype(k) != stored) k = ow_astype(k, stored);
    if (v && afo_array_dtype(v) != stored) v = ow_astype(v, stored);
    int window = sliding ? (int)c->model->cfg.sliding_window : 0;
    if (!c->quantized) return attend_plain(c, layer, q, k, v, scale, window, mask);
    int gs = c->opt.kv_group_size, bits = c->opt.kv_bits;
    int64_t o = c->length, total = o + c->n;
    afo_array *kq[3] = {NULL}, *vq[3] = {NULL}, *kp[3] = {NULL}, *vp[3] = {NULL};
    bool ok = k && v && afo_quantize(k, gs, bits, &kq[0], &kq[1], &kq[2]) == AFO_OK &&
              afo_quantize(v, gs, bits, &vq[0], &vq[1], &vq[2]) == AFO_OK;
    afo_release(k), afo_release(v);
    for (int p = 0; ok && p < 3; p++) {
        ok = put(slot(c, layer, 0, p), kq[p], o) == AFO_OK && put(slot(c, layer, 1, p), vq[p], o) == AFO_OK;
        kq[p] = vq[p] = NULL;
        kp[p] = ok ? afo_slice_axis(*slot(c, layer, 0, p), 2, 0, total) : NULL;
        vp[p] = ok ? afo_slice_axis(*slot(c, layer, 1, p), 2, 0, total) : NULL;
        ok = kp[p] && vp[p];
    }
    afo_array *out = ok ? quantized_sdpa(q, kp, vp, scale, mask, gs, bits, c->heads) : NULL;
    afo_release_n(kq, 3), afo_release_n(vq, 3), afo_release_n(kp, 3), afo_release_n(vp, 3);
    return out;
}

/* mlx-lm's to_quantized: the whole buffer (zeros past the length included)
 * goes through quantize once. */
static afo_status quantize_buffers(afo_kv_cache *c) {
    int layers = (int)c->model->cfg.layers;
    for (int l = 0; l < layers; l++)
        for (int kv = 0; kv < 2; kv++) {
            afo_array **s = slot(c, l, kv, 0), *parts[3];
            AFO_TRY(afo_quantize(*s, c->opt.kv_group_size, c->opt.kv_bits, &parts[0], &parts[1], &parts[2]));
            afo_status st = afo_eval(parts, 3);
            if (st != AFO_OK) {
                afo_release_n(parts, 3);
                return st;
            }
            for (int p = 0; p < 3; p++) {
                afo_release(*slot(c, l, kv, p));
                *slot(c, l, kv, p) = parts[p];
            }
        }
    c->quantized = true;
    return AFO_OK;
}

afo_status kv_begin_at(afo_kv_cache *c, afo_array *position) {
    if (!plain(c))
        return afo_error(AFO_ERR_UNSUPPORTED, "kv cache: a step at a device position needs a plain cache "
                                              "(not quantized or rotating)");
    if (c->length + 1 > c->capacity)
        return afo_error(AFO_ERR_UNSUPPORTED, "kv cache: no room reserved for position %lld (capacity %lld)",
                         (long long)c->length, (long long)c->capacity);
    c->n = 1;
    c->layout = KEYS_PREFIX;
    c->position = position;
    return AFO_OK;
}

afo_status kv_end(afo_kv_cache *c, afo_status st) {
    c->position = NULL;
    for (size_t i = 0; st == AFO_OK && i < (size_t)c->model->cfg.layers * 6; i++)
        if (c->buf[i]) st = afo_eval1(c->buf[i]);
    afo_release(c->mask[0]), afo_release(c->mask[1]);
    c->mask[0] = c->mask[1] = NULL;
    if (st != AFO_OK) return st;
    c->length += c->n;
    if (c->opt.kv_bits && !c->quantized && c->length >= c->opt.quantized_start) return quantize_buffers(c);
    return AFO_OK;
}
