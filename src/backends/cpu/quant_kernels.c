/* Affine quantization kernels: the scalar reference of every piece, the
 * drivers (threads, blocking) and the dispatch to SIMD unpackers. */
#include <math.h>
#include <stdlib.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/nn_kernels.h"
#include "backends/cpu/quant_gemm.h"
#include "backends/cpu/quant_kernels.h"
#include "backends/cpu/threadpool.h"

/* Elements may straddle two words (3, 5, 6 bits): the second word is read
 * only then, so a row's last word is never overrun. */
void afo_quant_unpack_scalar(int bits, const uint32_t *row, int64_t c0, int64_t n, float *q) {
    uint32_t mask = (1u << bits) - 1;
    for (int64_t i = 0; i < n; i++) {
        int64_t bit = (c0 + i) * bits;
        int off = (int)(bit & 31);
        uint32_t v = row[bit >> 5] >> off;
        if (off + bits > 32) v |= row[(bit >> 5) + 1] << (32 - off);
        q[i] = (float)(v & mask);
    }
}

afo_quant_unpack_fn afo_quant_unpack_best(void) {
    switch (afo_cpu_kernel_level()) {
#if defined(__x86_64__)
    /* AVX-512 CPUs run the AVX2 unpacker (no wider one yet). */
    case AFO_CPU_AVX2: case AFO_CPU_AVX512: case AFO_CPU_AMX: return afo_quant_unpack_avx2;
#elif defined(__aarch64__)
    case AFO_CPU_NEON: return afo_quant_unpack_neon;
#endif
    default: return afo_quant_unpack_scalar;
    }
}

/* The AVX-512 matvec, verified against the scalar reference on a Sapphire
 * Rapids host (tests/test_quant.c with AFO_QUANT_AVX512=1), beat the AVX2
 * one there for 4-bit weights (bench_quant, 4 threads: 28.0 against 22.7
 * GB/s on 2048x5632) but not for 8-bit (12.2 against 34.7 GB/s on the same
 * shape), so only 4-bit takes it unless AFO_QUANT_AVX512=1 asks for every
 * width (how the tests cover it). */
#if defined(__x86_64__)
static bool avx512_qmv_requested(void) {
    static int requested = -1; /* read once; a race only repeats the same read */
    if (requested < 0) {
        const char *env = getenv("AFO_QUANT_AVX512");
        requested = env && *env == '1';
    }
    return requested;
}
#endif

afo_qmv_fn afo_quant_qmv_best(int bits) {
    (void)bits;
    switch (afo_cpu_kernel_level()) {
#if defined(__x86_64__)
    case AFO_CPU_AVX2: return afo_quant_qmv_avx2;
    case AFO_CPU_AVX512: case AFO_CPU_AMX:
        return bits == 4 || avx512_qmv_requested() ? afo_quant_qmv_avx512 : afo_quant_qmv_avx2;
#elif defined(__aarch64__)
    case AFO_CPU_NEON: return afo_quant_qmv_neon;
#endif
    default: return NULL;
    }
}

afo_qx_prep_fn afo_qx_prep_best(void) {
    switch (afo_cpu_kernel_level()) {
#if defined(__x86_64__)
    case AFO_CPU_AVX2: case AFO_CPU_AVX512: case AFO_CPU_AMX: return afo_qx_prep_avx2;
#endif
    default: return afo_qx_prep_scalar;
    }
}

void afo_quant_levels_u8(int bits, const uint32_t *row, int64_t c0, int64_t n, uint8_t *q) {
    uint32_t mask = (1u << bits) - 1;
    for (int64_t c = c0; c < c0 + n; c += 32) {
        const uint32_t *w = row + c / 32 * bits;
        uint64_t win = 0;
        int have = 0;
        for (int i = 0; i < 32; i++) {
            if (have < bits) {
                win |= (uint64_t)*w++ << have;
                have += 32;
            }
            *q++ = (uint8_t)(win & mask);
            win >>= bits;
            have -= bits;
        }
    }
}

/* ------------------------------------------------------------ quantized activations */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t afo_qx_bytes(int M, int64_t K, int gs, int bits) {
    size_t ldx = (size_t)(K + 127) / 128 * 128, m = (size_t)M;
    return align64(m * ldx * (bits == 4 ? 1 : 2)) + align64(m * ldx / 32 * sizeof(float)) +
           (bits == 4 ? align64(m * ldx / 64 * 8 * sizeof(float)) : 0) + align64(m * (size_t)(K / gs) * sizeof(float));
}

void afo_qx_init(afo_qx *qx, void *buf, int M, int64_t K, int gs, int bits) {
    *qx = (afo_qx){.M = M, .x8 = bits == 4, .gs = gs, .K = K, .ldx = (K + 127) / 128 * 128, .G = K / gs};
    size_t m = (size_t)M, ldx = (size_t)qx->ldx;
    char *p = buf;
    qx->xq = p;
    p += align64(m * ldx * (qx->x8 ? 1 : 2));
    qx->sx = (float *)p;
    p += align64(m * ldx / 32 * sizeof(float));
    if (qx->x8) {
        qx->sx8 = (float *)p;
        p += align64(m * ldx / 64 * 8 * sizeof(float));
    }
    qx->xsum = (float *)p;
}

void afo_qx_prep_scalar(afo_qx *qx, const float *x) {
    int64_t nb = qx->ldx / 32, K = qx->K;
    float lim = qx->x8 ? 127.0f : 32767.0f;
    for (int m = 0; m < qx->M; m++) {
        const float *xr = x + m * K;
        int8_t *x8 = (int8_t *)qx->xq + m * qx->ldx;
        int16_t *x16 = (int16_t *)qx->xq + m * qx->ldx;
        for (int64_t blk = 0; blk < nb; blk++) {
            const float *v = xr + blk * 32;
            bool in = blk * 32 < K;
            float amax = 0.0f;
            for (int i = 0; in && i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
            float inv = amax > 0.0f ? lim / amax : 0.0f;
            for (int i = 0; i < 32; i++) {
                float q = in ? fmaxf(fminf(rintf(v[i] * inv), lim), -lim) : 0.0f;
                if (qx->x8) x8[afo_qx_x8_pos(blk, i)] = (int8_t)q;
                else x16[blk * 32 + i] = (int16_t)q;
            }
            qx->sx[m * nb + blk] = amax / lim;
            if (qx->x8)
                for (int j = 0; j < 4; j++) qx->sx8[m * nb * 4 + blk / 2 * 8 + blk % 2 * 4 + j] = amax / lim;
        }
        for (int64_t g = 0; g < qx->G; g++) {
            float sum = 0.0f;
            for (int j = 0; j < qx->gs; j++) sum += xr[g * qx->gs + j];
            qx->xsum[m * qx->G + g] = sum;
        }
    }
}

typedef struct qx_job {
    const afo_qx *qx;
    const float *x;
    afo_qx_prep_fn prep;
} qx_job;

static void qx_rows(void *p, int64_t m0, int64_t m1) {
    const qx_job *j = p;
    afo_qx v = *j->qx;
    size_t ldx = (size_t)v.ldx;
    v.M = (int)(m1 - m0);
    v.xq = (char *)v.xq + (size_t)m0 * ldx * (v.x8 ? 1 : 2);
    v.sx += m0 * (int64_t)(ldx / 32);
    if (v.x8) v.sx8 += m0 * (int64_t)(ldx / 64 * 8);
    v.xsum += m0 * v.G;
    j->prep(&v, j->x + m0 * v.K);
}

void afo_qx_prep_parallel(afo_qx *qx, const float *x) {
    qx_job j = {qx, x, afo_qx_prep_best()};
    afo_parallel_for(qx->M, 16, qx_rows, &j);
}

void afo_quant_group_params(const float *w, int gs, int bits, float *scale, float *bias) {
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < gs; j++) {
        lo = w[j] < lo ? w[j] : lo;
        hi = w[j] > hi ? w[j] : hi;
    }
    float n = (float)((1 << bits) - 1);
    float s = fmaxf((hi - lo) / n, 1e-7f);
    /* The edge of larger magnitude is represented exactly (q = 0 or n). */
    bool neg = fabsf(lo) > fabsf(hi);
    float edge = neg ? lo : hi;
    if (!neg) s = -s;
    float q0 = rintf(edge / s);
    float b = 0.0f;
    if (q0 != 0.0f) {
        s = edge / q0;
        b = edge;
    }
    *scale = s;
    *bias = b;
}

/* Data pointers of the inputs, dense copies made of strided ones (views
 * such as a transposed x) into owned[], which the caller frees. */
static afo_status dense_inputs(afo_array *const *in, int nin, const void **ptr, void **owned) {
    for (int i = 0; i < nin; i++) {
        owned[i] = NULL;
        if (in[i]->contiguous) {
            ptr[i] = afo_array_ptr(in[i]);
            continue;
        }
        owned[i] = malloc(afo_array_nbytes(in[i]) + 1);
        if (!owned[i]) {
            for (int j = 0; j < i; j++) free(owned[j]);
            return afo_error(AFO_ERR_OUT_OF_MEMORY, "quantization: out of memory for a dense copy of an input");
        }
        afo_cpu_copy(in[i], owned[i], in[i]->dtype);
        ptr[i] = owned[i];
    }
    return AFO_OK;
}

static void free_n(void **p, int n) {
    for (int i = 0; i < n; i++) free(p[i]);
}

/* ------------------------------------------------------------ quantize */

typedef struct quant_ctx {
    const afo_array *w;
    const void *wp;
    afo_array *out;
    int gs, bits, part;
    int64_t in;
    atomic_bool failed;
} quant_ctx;

static void quantize_rows(void *p, int64_t r0, int64_t r1) {
    quant_ctx *c = p;
    int64_t in = c->in, G = in / c->gs, words = in * c->bits / 32;
    size_t ws = afo_dtype_size(c->w->dtype), os = afo_dtype_size(c->out->dtype);
    float *row = malloc((size_t)(in + 2 * G) * sizeof(float));
    if (!row) {
        atomic_store(&c->failed, true);
        return;
    }
    float *sb = row + in;
    uint32_t n = (1u << c->bits) - 1;
    for (int64_t r = r0; r < r1; r++) {
        afo_cpu_convert_row(c->w->dtype, (const char *)c->wp + r * in * (int64_t)ws, AFO_FLOAT32, row, in);
        for (int64_t g = 0; g < G; g++) afo_quant_group_params(row + g * c->gs, c->gs, c->bits, &sb[g], &sb[G + g]);
        char *dst = (char *)afo_array_ptr(c->out);
        if (c->part != AFO_QPART_PACKED) {
            const float *v = c->part == AFO_QPART_SCALES ? sb : sb + G;
            afo_cpu_convert_row(AFO_FLOAT32, v, c->out->dtype, dst + r * G * (int64_t)os, G);
            continue;
        }
        uint32_t *wr = (uint32_t *)dst + r * words;
        memset(wr, 0, (size_t)words * sizeof(uint32_t));
        for (int64_t i = 0; i < in; i++) {
            float s = sb[i / c->gs], b = sb[G + i / c->gs];
            float q = fminf(fmaxf(rintf((row[i] - b) / s), 0.0f), (float)n);
            uint32_t v = (uint32_t)q;
            int64_t bit = i * c->bits;
            int off = (int)(bit & 31);
            wr[bit >> 5] |= v << off;
            if (off + c->bits > 32) wr[(bit >> 5) + 1] |= v >> (32 - off);
        }
    }
    free(row);
}

afo_status afo_cpu_quantize(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *w = in[0];
    quant_ctx c = {.w = w, .out = out, .gs = (int)attrs->i[AFO_QUANT_I_GS], .bits = (int)attrs->i[AFO_QUANT_I_BITS],
                   .part = (int)attrs->i[AFO_QUANT_I_EXTRA], .in = w->shape[w->ndim - 1]};
    atomic_init(&c.failed, false);
    if (w->size == 0) return AFO_OK;
    void *owned[1];
    AFO_TRY(dense_inputs(in, 1, &c.wp, owned));
    afo_parallel_for(w->size / c.in, 4, quantize_rows, &c);
    free(owned[0]);
    return atomic_load(&c.failed) ? afo_error(AFO_ERR_OUT_OF_MEMORY, "quantize: out of memory for scratch") : AFO_OK;
}

/* ------------------------------------------------------------ dequantization of rows */

/* Layout of one packed matrix [rows, cols] with its group parameters. */
typedef struct qmat {
    const uint32_t *w;
    const void *s, *b;
    afo_dtype sdt;
    int gs, bits;
    int64_t cols, words, G; /* per row */
} qmat;

/* in: wq, scales, biases with their dense data at ptr. */
static qmat qmat_of(afo_array *const *in, const void *const *ptr, const afo_attrs *attrs) {
    qmat m = {.w = ptr[0], .s = ptr[1], .b = ptr[2],
              .sdt = in[1]->dtype, .gs = (int)attrs->i[AFO_QUANT_I_GS], .bits = (int)attrs->i[AFO_QUANT_I_BITS]};
    m.words = in[0]->shape[in[0]->ndim - 1];
    m.cols = m.words * 32 / m.bits;
    m.G = m.cols / m.gs;
    return m;
}

/* dst[0..n) = row r's elements [c0, c0+n) dequantized (c0, n multiples of
 * gs); sb holds 2*G floats of scratch. */
static void dequant_span(const qmat *m, afo_quant_unpack_fn up, int64_t r, int64_t c0, int64_t n, float *sb, float *dst) {
    size_t ss = afo_dtype_size(m->sdt);
    int64_t g0 = c0 / m->gs, ng = n / m->gs;
    afo_cpu_convert_row(m->sdt, (const char *)m->s + (r * m->G + g0) * (int64_t)ss, AFO_FLOAT32, sb, ng);
    afo_cpu_convert_row(m->sdt, (const char *)m->b + (r * m->G + g0) * (int64_t)ss, AFO_FLOAT32, sb + ng, ng);
    up(m->bits, m->w + r * m->words, c0, n, dst);
    for (int64_t g = 0; g < ng; g++) {
        float s = sb[g], b = sb[ng + g];
        float *d = dst + g * m->gs;
        for (int j = 0; j < m->gs; j += 32)
            for (int t = 0; t < 32; t++) d[j + t] = s * d[j + t] + b; /* a fixed count the compiler vectorizes at -O2 */
    }
}

/* Whole rows, the i-th output row being packed row rows[i] (identity when
 * rows is NULL), converted to out's dtype. */
typedef struct rows_ctx {
    qmat m;
    afo_quant_unpack_fn up;
    const int64_t *rows;
    afo_array *out;
    atomic_bool failed;
} rows_ctx;

static void dequant_rows(void *p, int64_t i0, int64_t i1) {
    rows_ctx *c = p;
    float *buf = malloc((size_t)(c->m.cols + 2 * c->m.G) * sizeof(float));
    if (!buf) {
        atomic_store(&c->failed, true);
        return;
    }
    size_t os = afo_dtype_size(c->out->dtype);
    for (int64_t i = i0; i < i1; i++) {
        dequant_span(&c->m, c->up, c->rows ? c->rows[i] : i, 0, c->m.cols, buf + c->m.cols, buf);
        afo_cpu_convert_row(AFO_FLOAT32, buf, c->out->dtype, (char *)afo_array_ptr(c->out) + i * c->m.cols * (int64_t)os,
                            c->m.cols);
    }
    free(buf);
}

static afo_status run_rows(rows_ctx *c, int64_t n, const char *op) {
    atomic_init(&c->failed, false);
    afo_parallel_for(n, 4, dequant_rows, c);
    return atomic_load(&c->failed) ? afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory for scratch", op) : AFO_OK;
}

afo_status afo_cpu_dequantize(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    const void *ptr[3];
    void *owned[3];
    AFO_TRY(dense_inputs(in, 3, ptr, owned));
    rows_ctx c = {.m = qmat_of(in, ptr, attrs), .up = afo_quant_unpack_best(), .out = out};
    afo_status st = run_rows(&c, out->size / c.m.cols, "dequantize");
    free_n(owned, 3);
    return st;
}

afo_status afo_cpu_quantized_take(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *ix = in[3];
    int64_t n = ix->size, R = in[0]->shape[0];
    if (n == 0) return AFO_OK;
    const void *ptr[4];
    void *owned[4];
    AFO_TRY(dense_inputs(in, 4, ptr, owned));
    int64_t *rows = malloc((size_t)n * sizeof(int64_t));
    if (!rows) {
        free_n(owned, 4);
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "quantized_take: out of memory");
    }
    const void *p = ptr[3];
    for (int64_t i = 0; i < n; i++) {
        int64_t v;
        switch (ix->dtype) {
        case AFO_INT32: v = ((const int32_t *)p)[i]; break;
        case AFO_UINT32: v = ((const uint32_t *)p)[i]; break;
        default: v = ((const int64_t *)p)[i]; break;
        }
        if (v < 0) v += R; /* negative indices count from the end, as take */
        if (v < 0 || v >= R) {
            free(rows);
            free_n(owned, 4);
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "quantized_take: index %lld out of range for %lld rows",
                             (long long)(v < 0 ? v - R : v), (long long)R);
        }
        rows[i] = v;
    }
    rows_ctx c = {.m = qmat_of(in, ptr, attrs), .up = afo_quant_unpack_best(), .rows = rows, .out = out};
    afo_status st = run_rows(&c, n, "quantized_take");
    free(rows);
    free_n(owned, 4);
    return st;
}

/* ------------------------------------------------------------ quantized matmul */

typedef struct qmm_ctx {
    qmat m;                /* the part the prefill paths run */
    afo_quant_unpack_fn up;
    const afo_nn_prims *prims;
    const float *x, *xsum; /* x [M, K]; matvec: per-group sums of x [M, G] */
    float *y;              /* the part's first column of y [M, ldy] */
    int64_t M, N, K, ldy;  /* N: the part's outputs */
    int transpose;
    float *panel; /* prefill: the dequantized block */
    int64_t p0, pn; /* block start (rows of W for transpose, else columns) and width */
    afo_qmv_fn fused;
    const afo_qmm_level *gemm;
    /* matvec: every part's matrix, kernel arguments and end (its last
     * output column + 1, counted over the parts), the row kernel threads
     * share, and the first row (over the parts) not yet claimed */
    int parts;
    qmat pm[AFO_QMM_MAX_PARTS];
    afo_qmv_args pq[AFO_QMM_MAX_PARTS];
    int64_t end[AFO_QMM_MAX_PARTS];
    void (*rows)(struct qmm_ctx *c, int part, int64_t n0, int64_t n1);
    atomic_llong next_row;
    atomic_bool failed;
    /* AFO_PROFILE: when the first thread ran out of rows to claim */
    bool profile;
    atomic_bool one_done;
    double first_done;
} qmm_ctx;

static void qmv_fused_rows(qmm_ctx *c, int part, int64_t n0, int64_t n1) { c->fused(&c->pq[part], n0, n1); }

/* Threads claim blocks of rows until none are left: decode is short
 * (about a millisecond), so a thread the OS delays must not hold half the
 * matrix as a static split would make it. A claim takes the rows left over
 * the thread count (at 2 threads: a half, a quarter, an eighth, ...), down
 * to 128 KiB of weights (at least 32 rows): the kernels read a block as a
 * few sequential streams, which the hardware prefetchers need long, and
 * the short last blocks let the threads finish together. On a Zen 5 EPYC,
 * ab_decode (TinyLlama 4-bit, prompt 512): 0.969-0.976 of the time of a
 * quarter of the rows a claim, which had taken 0.979 of 256 KiB claims
 * (8-bit 0.893; profiled, 9% of the matvecs' time was then one thread
 * idle at the end). Shrinking from a quarter instead: 1.02-1.03. */
static void qmv_claim(void *p, int t, int nt) {
    qmm_ctx *c = p;
    int64_t total = c->end[c->parts - 1], least = ((int64_t)128 << 10) / (c->pm[0].words * 4) / 4 * 4;
    if (least < 32) least = 32;
    for (;;) {
        long long n0 = atomic_load(&c->next_row), n1; /* the atomic's type: int64_t may be long */
        int part;
        do {
            if (n0 >= total) {
                if (c->profile && !atomic_exchange(&c->one_done, true)) c->first_done = afo_profile_now();
                return;
            }
            for (part = 0; c->end[part] <= n0; part++) continue;
            int64_t block = (total - n0) / nt / 4 * 4;
            if (block < least) block = least;
            n1 = n0 + block < c->end[part] ? n0 + block : c->end[part];
        } while (!atomic_compare_exchange_weak(&c->next_row, &n0, n1));
        int64_t first = part ? c->end[part - 1] : 0;
        c->rows(c, part, n0 - first, n1 - first);
    }
}

static void qmv_run(qmm_ctx *c) {
    atomic_init(&c->next_row, 0);
    atomic_init(&c->one_done, false);
    c->profile = afo_profile_enabled();
    double t0 = c->profile ? afo_profile_now() : 0;
    afo_parallel_run(qmv_claim, c);
    if (!c->profile) return;
    double bytes = 0;
    for (int p = 0; p < c->parts; p++) {
        const qmat *m = &c->pm[p];
        size_t row = (size_t)m->words * 4 + 2 * (size_t)m->G * afo_dtype_size(m->sdt);
        bytes += (double)(c->end[p] - (p ? c->end[p - 1] : 0)) * (double)row;
    }
    afo_profile_matvec(bytes, afo_profile_now() - t0, c->first_done - t0);
}

/* Decode: each weight row is unpacked once into L1 and used by all M rows
 * of x; a group contributes s * (q . x) + b * sum(x), so the bias costs one
 * multiply per group. */
static void qmv_rows(qmm_ctx *c, int part, int64_t n0, int64_t n1) {
    const qmat *m = &c->pm[part];
    float *y = c->y + (part ? c->end[part - 1] : 0);
    float *q = malloc((size_t)(m->cols + 2 * m->G) * sizeof(float));
    if (!q) {
        atomic_store(&c->failed, true);
        return;
    }
    float *s = q + m->cols, *b = s + m->G;
    size_t ss = afo_dtype_size(m->sdt);
    void (*dots)(const float *, int64_t, int64_t, const void *, int64_t, int64_t, float *, int64_t) =
        c->prims->dots[AFO_NN_F32];
    for (int64_t n = n0; n < n1; n++) {
        afo_cpu_convert_row(m->sdt, (const char *)m->s + n * m->G * (int64_t)ss, AFO_FLOAT32, s, m->G);
        afo_cpu_convert_row(m->sdt, (const char *)m->b + n * m->G * (int64_t)ss, AFO_FLOAT32, b, m->G);
        c->up(m->bits, m->w + n * m->words, 0, m->cols, q);
        for (int64_t i = 0; i < c->M; i++) {
            const float *xi = c->x + i * c->K, *xs = c->xsum + i * m->G;
            float acc = 0.0f;
            for (int64_t g = 0; g < m->G; g++) {
                float d;
                dots(xi + g * m->gs, 1, m->gs, q + g * m->gs, 0, 1, &d, 1);
                acc += s[g] * d + b[g] * xs[g];
            }
            y[i * c->ldy + n] = acc;
        }
    }
    free(q);
}

static void panel_rows(void *p, int64_t i0, int64_t i1) {
    qmm_ctx *c = p;
    float *sb = malloc((size_t)(2 * c->m.G) * sizeof(float));
    if (!sb) {
        atomic_store(&c->failed, true);
        return;
    }
    for (int64_t i = i0; i < i1; i++) {
        if (c->transpose) dequant_span(&c->m, c->up, c->p0 + i, 0, c->K, sb, c->panel + i * c->K);
        else dequant_span(&c->m, c->up, i, c->p0, c->pn, sb, c->panel + i * c->pn);
    }
    free(sb);
}

/* 16 MiB: the GEMM packs all of x again for every panel, and at 4 MiB (186
 * rows of a K = 5632 matrix) that repacking cost a 512-token prefill about
 * a quarter of its time. */
int64_t afo_quant_panel_floats = (int64_t)1 << 22;

/* Prefill: dequantize a block of W into an f32 panel of bounded size and
 * multiply it with the GEMM kernels; the block is reused by all M rows. */
static afo_status qmm_blocked_part(qmm_ctx *c) {
    const int64_t budget = afo_quant_panel_floats;
    int64_t step = c->transpose ? budget / c->K : budget / c->K / c->m.gs * c->m.gs;
    int64_t unit = c->transpose ? 8 : c->m.gs;
    if (step < unit) step = unit;
    c->panel = malloc((size_t)(step * c->K) * sizeof(float));
    if (!c->panel) return afo_error(AFO_ERR_OUT_OF_MEMORY, "quantized_matmul: out of memory for a weight panel");
    afo_status st = AFO_OK;
    for (c->p0 = 0; c->p0 < c->N && st == AFO_OK; c->p0 += step) {
        c->pn = c->N - c->p0 < step ? c->N - c->p0 : step;
        afo_parallel_for(c->transpose ? c->pn : c->K, 4, panel_rows, c);
        if (atomic_load(&c->failed)) {
            st = afo_error(AFO_ERR_OUT_OF_MEMORY, "quantized_matmul: out of memory for scratch");
            break;
        }
        afo_gemm_args g = {
            .dtype = AFO_FLOAT32, .a_dtype = AFO_FLOAT32, .M = c->M, .N = c->pn, .K = c->K,
            .A = c->x, .a_rs = c->K, .a_cs = 1,
            .B = c->panel, .b_rs = c->transpose ? 1 : c->pn, .b_cs = c->transpose ? c->K : 1,
            .C = c->y + c->p0, .c_dtype = AFO_FLOAT32, .ldc = c->ldy,
        };
        st = afo_cpu_gemm(&g);
    }
    free(c->panel);
    return st;
}

/* The float prefill, part by part, each into its columns of y. */
static afo_status qmm_blocked(qmm_ctx *c) {
    float *y = c->y;
    afo_status st = AFO_OK;
    for (int p = 0; p < c->parts && st == AFO_OK; p++) {
        int64_t first = p ? c->end[p - 1] : 0;
        c->m = c->pm[p];
        c->N = c->end[p] - first;
        c->y = y + first;
        st = qmm_blocked_part(c);
    }
    c->y = y;
    return st;
}

/* Scratch of the calling thread for the matvec (x and y in float32, the
 * quantized activations), kept between calls: decode runs this once per
 * projection per token. */
static _Thread_local void *t_qmv_scratch;
static _Thread_local size_t t_qmv_scratch_size;

static void *qmv_scratch(size_t n) {
    if (n > t_qmv_scratch_size) {
        free(t_qmv_scratch);
        t_qmv_scratch = aligned_alloc(64, align64(n));
        t_qmv_scratch_size = t_qmv_scratch ? n : 0;
    }
    return t_qmv_scratch;
}

/* The float path of the scalar level: the reference the integer path is
 * tested against. The parts share the group size, hence x's group sums. */
static afo_status qmv_float(qmm_ctx *c) {
    int64_t G = c->m.G;
    float *xsum = malloc((size_t)(c->M * G) * sizeof(float));
    if (!xsum) return afo_error(AFO_ERR_OUT_OF_MEMORY, "quantized_matmul: out of memory");
    for (int64_t i = 0; i < c->M * G; i++) xsum[i] = c->prims->sum(c->x + i * c->m.gs, c->m.gs);
    c->xsum = xsum;
    c->rows = qmv_rows;
    qmv_run(c);
    free(xsum);
    return atomic_load(&c->failed) ? afo_error(AFO_ERR_OUT_OF_MEMORY, "quantized_matmul: out of memory for scratch")
                                   : AFO_OK;
}

/* The integer paths: x quantized once (afo_qx in qx_buf) for every part,
 * then the matvec over all parts' rows in one pass, or the prefill GEMM
 * part by part. */
static afo_status qmm_int(qmm_ctx *c, void *qx_buf) {
    afo_qx qx;
    afo_qx_init(&qx, qx_buf, (int)c->M, c->K, c->m.gs, c->m.bits);
    afo_qx_prep_parallel(&qx, c->x);
    for (int p = 0; p < c->parts; p++) {
        const qmat *m = &c->pm[p];
        c->pq[p] = (afo_qmv_args){.bits = m->bits, .gs = m->gs, .M = (int)c->M, .K = c->K, .G = m->G,
                                  .words = m->words, .qx = &qx, .w = m->w, .s = m->s, .b = m->b, .sdt = m->sdt,
                                  .y = c->y + (p ? c->end[p - 1] : 0), .ldy = c->ldy};
    }
    afo_status st = AFO_OK;
    for (int p = 0; c->gemm && p < c->parts && st == AFO_OK; p++)
        st = afo_quant_qmm(&c->pq[p], c->end[p] - (p ? c->end[p - 1] : 0), c->gemm);
    if (!c->gemm) {
        c->rows = qmv_fused_rows;
        qmv_run(c);
    }
    return st;
}

/* in: x [..., K], then w, scales, biases (2-D, contiguous) per part (one,
 * or up to AFO_QMM_MAX_PARTS transposed ones of one format and K); out
 * [..., N] of x's dtype, N the parts' outputs in turn. The matvec (decode)
 * takes its buffers from thread scratch, the prefill from the heap. The
 * scalar level keeps the float paths: they are the reference of the
 * integer ones. */
afo_status afo_cpu_quantized_matmul(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *x = in[0];
    if (out->size == 0) return AFO_OK;
    const void *ptr[1 + 3 * AFO_QMM_MAX_PARTS];
    void *owned[1 + 3 * AFO_QMM_MAX_PARTS];
    AFO_TRY(dense_inputs(in, nin, ptr, owned));
    qmm_ctx c = {.up = afo_quant_unpack_best(), .prims = afo_nn_prims_best(),
                 .transpose = (int)attrs->i[AFO_QUANT_I_EXTRA], .parts = (nin - 1) / 3};
    atomic_init(&c.failed, false);
    c.K = x->shape[x->ndim - 1];
    c.ldy = out->shape[out->ndim - 1];
    c.M = x->size / c.K;
    for (int p = 0; p < c.parts; p++) {
        c.pm[p] = qmat_of(in + 1 + 3 * p, ptr + 1 + 3 * p, attrs);
        c.end[p] = (p ? c.end[p - 1] : 0) + (c.transpose ? in[1 + 3 * p]->shape[0] : c.ldy);
    }
    c.m = c.pm[0];
    c.fused = c.transpose && c.M <= AFO_MATVEC_MAX_M ? afo_quant_qmv_best(c.m.bits) : NULL;
    c.gemm = c.transpose && c.M > AFO_MATVEC_MAX_M && c.M <= INT32_MAX ? afo_quant_qmm_best(c.m.bits) : NULL;
    size_t xb = x->dtype != AFO_FLOAT32 ? align64((size_t)x->size * sizeof(float)) : 0;
    size_t yb = out->dtype != AFO_FLOAT32 ? align64((size_t)out->size * sizeof(float)) : 0;
    size_t qb = c.fused || c.gemm ? afo_qx_bytes((int)c.M, c.K, c.m.gs, c.m.bits) : 0;
    char *buf = c.fused ? qmv_scratch(xb + yb + qb) : aligned_alloc(64, align64(xb + yb + qb + 1));
    afo_status st = AFO_OK;
    if (!buf) {
        st = afo_error(AFO_ERR_OUT_OF_MEMORY, "quantized_matmul: out of memory");
    } else {
        float *xf = xb ? (float *)buf : NULL, *yf = yb ? (float *)(buf + xb) : NULL;
        if (xf) afo_cpu_convert_row(x->dtype, ptr[0], AFO_FLOAT32, xf, x->size);
        c.x = xf ? xf : ptr[0];
        c.y = yf ? yf : afo_array_ptr(out);
        st = c.fused || c.gemm ? qmm_int(&c, buf + xb + yb)
             : c.transpose && c.M <= AFO_MATVEC_MAX_M ? qmv_float(&c)
                                                       : qmm_blocked(&c);
        if (st == AFO_OK && yf) afo_cpu_convert_row(AFO_FLOAT32, yf, out->dtype, afo_array_ptr(out), out->size);
    }
    if (!c.fused) free(buf);
    free_n(owned, nin);
    return st;
}
