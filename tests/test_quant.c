/* Affine quantization (MLX's format): quantize/dequantize against a scalar
 * reference written here from the rules (bit for bit), pack/unpack round
 * trips, edge groups, hand-derived interop vectors, quantized matmul and
 * take at every kernel level and thread count against float64 references,
 * and argument errors. AFO_TEST_SCALE < 1 trims the matmul sweep. */
#include <string.h>

#include "afo/afo.h"
#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/quant_kernels.h"
#include "support/test.h"

static const int BITS[] = {2, 3, 4, 5, 6, 8};
static const int GROUPS[] = {32, 64, 128};
static const afo_dtype DTYPES[] = {AFO_FLOAT32, AFO_BFLOAT16, AFO_FLOAT16};
#define LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

static double g_scale = 1.0;

/* ------------------------------------------------------------ helpers */

static float round_to(afo_dtype dt, float v) {
    if (dt == AFO_BFLOAT16) return afo_bf16_to_f32(afo_f32_to_bf16(v));
    if (dt == AFO_FLOAT16) return afo_f16_to_f32(afo_f32_to_f16(v));
    return v;
}

/* An array of dtype dt holding v (values already representable in dt). */
static afo_array *make(afo_dtype dt, const float *v, int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    if (dt == AFO_FLOAT32) return afo_array_from_data(v, dt, ndim, shape);
    uint16_t *h = malloc((size_t)n * sizeof(uint16_t));
    for (int64_t i = 0; i < n; i++) h[i] = dt == AFO_BFLOAT16 ? afo_f32_to_bf16(v[i]) : afo_f32_to_f16(v[i]);
    afo_array *a = afo_array_from_data(h, dt, ndim, shape);
    free(h);
    return a;
}

static float *read_f32(afo_array *a) {
    float *v = malloc((size_t)afo_array_size(a) * sizeof(float) + 1);
    afo_status st = afo_array_read(a, AFO_FLOAT32, v, (size_t)afo_array_size(a) * sizeof(float));
    CHECK_MSG(st == AFO_OK, "read: %s", afo_last_error());
    return v;
}

/* Leaves a NaN-filled buffer of this size in the allocator cache, so that
 * elements a kernel forgets to write show up as NaN. */
static void poison(afo_dtype dt, int ndim, const int64_t *shape) {
    afo_array *p = afo_full(NAN, dt, ndim, shape);
    afo_eval1(p);
    afo_release(p);
}

/* ------------------------------------------------------------ reference */

/* One row, from the rules: per group in float32, n = 2^bits - 1,
 * scale = max((max - min)/n, 1e-7); the edge of larger magnitude (min when
 * |min| > |max|, else max with the scale negated) is hit exactly: q0 =
 * rint(edge/scale), and when q0 != 0 scale = edge/q0, bias = edge, else
 * bias = 0. Levels use the unrounded scale and bias; the stored ones are
 * rounded to dt. Bits are set one at a time, LSB first. */
static void ref_quantize_row(afo_dtype dt, const float *w, int64_t in, int gs, int bits, uint32_t *words, float *s,
                             float *b, uint32_t *q) {
    float n = (float)((1 << bits) - 1);
    memset(words, 0, (size_t)(in * bits / 32) * sizeof(uint32_t));
    for (int64_t g = 0; g < in / gs; g++) {
        const float *x = w + g * gs;
        float lo = x[0], hi = x[0];
        for (int j = 1; j < gs; j++) {
            if (x[j] < lo) lo = x[j];
            if (x[j] > hi) hi = x[j];
        }
        float scale = (hi - lo) / n;
        if (scale < 1e-7f) scale = 1e-7f;
        float edge = hi;
        if (fabsf(lo) > fabsf(hi)) edge = lo;
        else scale = -scale;
        float q0 = rintf(edge / scale), bias = 0;
        if (q0 != 0) {
            scale = edge / q0;
            bias = edge;
        }
        s[g] = round_to(dt, scale);
        b[g] = round_to(dt, bias);
        for (int j = 0; j < gs; j++) {
            float v = rintf((x[j] - bias) / scale);
            v = v < 0 ? 0 : v > n ? n : v;
            int64_t i = g * gs + j;
            q[i] = (uint32_t)v;
            for (int t = 0; t < bits; t++)
                if (q[i] >> t & 1) words[(i * bits + t) / 32] |= 1u << ((i * bits + t) % 32);
        }
    }
}

/* Quantizes w [rows, in] (values representable in dt) with afo and compares
 * words, scales, biases and the dequantized values bit for bit with the
 * reference. Returns the number of mismatching elements. */
static int check_quantize(afo_dtype dt, const float *w, int64_t rows, int64_t in, int gs, int bits) {
    int64_t shape[2] = {rows, in}, W = in * bits / 32, G = in / gs;
    afo_array *x = make(dt, w, 2, shape), *wq, *s, *b;
    CHECK_MSG(afo_quantize(x, gs, bits, &wq, &s, &b) == AFO_OK, "%s", afo_last_error());
    afo_array *dq = afo_dequantize(wq, s, b, gs, bits);
    afo_array *all[4] = {wq, s, b, dq};
    CHECK_MSG(afo_eval(all, 4) == AFO_OK, "%s", afo_last_error());
    uint32_t *words = malloc((size_t)(rows * W) * sizeof(uint32_t)), *ref_w = malloc((size_t)W * sizeof(uint32_t));
    uint32_t *q = malloc((size_t)in * sizeof(uint32_t));
    float *rs = malloc((size_t)G * sizeof(float)), *rb = malloc((size_t)G * sizeof(float));
    afo_array_read(wq, AFO_UINT32, words, (size_t)(rows * W) * sizeof(uint32_t));
    float *gs_ = read_f32(s), *gb = read_f32(b), *gd = read_f32(dq);
    int bad = 0;
    for (int64_t r = 0; r < rows; r++) {
        ref_quantize_row(dt, w + r * in, in, gs, bits, ref_w, rs, rb, q);
        for (int64_t k = 0; k < W; k++) bad += words[r * W + k] != ref_w[k];
        for (int64_t g = 0; g < G; g++) bad += memcmp(&gs_[r * G + g], &rs[g], 4) != 0 || memcmp(&gb[r * G + g], &rb[g], 4) != 0;
        for (int64_t i = 0; i < in; i++) {
            float e = round_to(dt, rs[i / gs] * (float)q[i] + rb[i / gs]);
            bad += memcmp(&gd[r * in + i], &e, 4) != 0;
        }
    }
    CHECK_MSG(bad == 0, "%s bits %d gs %d: %d mismatches", afo_dtype_name(dt), bits, gs, bad);
    void *bufs[] = {words, ref_w, q, rs, rb, gs_, gb, gd};
    for (int i = 0; i < LEN(bufs); i++) free(bufs[i]);
    afo_array *arrs[] = {x, wq, s, b, dq};
    for (int i = 0; i < LEN(arrs); i++) afo_release(arrs[i]);
    return bad;
}

/* Random groups of both signs of dominance, offset and spread drawn per
 * group, rounded to dt. */
static void random_weights(afo_dtype dt, float *w, int64_t n, int gs) {
    for (int64_t g = 0; g < n / gs; g++) {
        double c = test_uniform(-1, 1), sp = test_uniform(0.01, 2);
        for (int j = 0; j < gs; j++) w[g * gs + j] = round_to(dt, (float)(c + sp * test_normal()));
    }
}

/* ------------------------------------------------------------ tests */

static void test_quantize_matches_reference(void) {
    for (int d = 0; d < LEN(DTYPES); d++)
        for (int bi = 0; bi < LEN(BITS); bi++)
            for (int gi = 0; gi < LEN(GROUPS); gi++) {
                int gs = GROUPS[gi];
                int64_t rows = 5, in = 3 * gs;
                float *w = malloc((size_t)(rows * in) * sizeof(float));
                random_weights(DTYPES[d], w, rows * in, gs);
                check_quantize(DTYPES[d], w, rows, in, gs, BITS[bi]);
                free(w);
            }
}

/* Packed random levels (each group holding 0 and n) dequantize with
 * scale 1, bias 0 to the levels themselves; quantizing those values again
 * gives scale -1, bias n and the complemented levels n - q. */
static void test_pack_roundtrip(void) {
    for (int bi = 0; bi < LEN(BITS); bi++)
        for (int gi = 0; gi < LEN(GROUPS); gi++) {
            int bits = BITS[bi], gs = GROUPS[gi];
            uint32_t n = (1u << bits) - 1;
            int64_t rows = 3, in = 4 * gs, W = in * bits / 32, G = in / gs;
            uint32_t *q = malloc((size_t)(rows * in) * 4), *packed = calloc((size_t)(rows * W), 4),
                     *comp = calloc((size_t)(rows * W), 4), *got = malloc((size_t)(rows * W) * 4);
            float *ones = malloc((size_t)(rows * G) * 4), *zeros = calloc((size_t)(rows * G), 4);
            for (int64_t i = 0; i < rows * in; i++) {
                q[i] = i % gs == 0 ? 0 : i % gs == 1 ? n : (uint32_t)(test_rand_u64() % (n + 1));
                for (int t = 0; t < bits; t++) {
                    int64_t bit = (i % in) * bits + t, word = (i / in) * W + bit / 32;
                    if (q[i] >> t & 1) packed[word] |= 1u << (bit % 32);
                    if ((n - q[i]) >> t & 1) comp[word] |= 1u << (bit % 32);
                }
            }
            for (int64_t i = 0; i < rows * G; i++) ones[i] = 1;
            int64_t ws[2] = {rows, W}, ss[2] = {rows, G};
            afo_array *wq = afo_array_from_data(packed, AFO_UINT32, 2, ws);
            afo_array *s = make(AFO_FLOAT32, ones, 2, ss), *b = make(AFO_FLOAT32, zeros, 2, ss);
            afo_array *dq = afo_dequantize(wq, s, b, gs, bits), *wq2, *s2, *b2;
            CHECK(afo_quantize(dq, gs, bits, &wq2, &s2, &b2) == AFO_OK);
            float *v = read_f32(dq), *vs = read_f32(s2), *vb = read_f32(b2);
            afo_array_read(wq2, AFO_UINT32, got, (size_t)(rows * W) * 4);
            int bad = 0;
            for (int64_t i = 0; i < rows * in; i++) bad += v[i] != (float)q[i];
            for (int64_t i = 0; i < rows * W; i++) bad += got[i] != comp[i];
            for (int64_t i = 0; i < rows * G; i++) bad += vs[i] != -1.0f || vb[i] != (float)n;
            CHECK_MSG(bad == 0, "bits %d gs %d: %d mismatches", bits, gs, bad);
            void *bufs[] = {q, packed, comp, got, ones, zeros, v, vs, vb};
            for (int i = 0; i < LEN(bufs); i++) free(bufs[i]);
            afo_array *arrs[] = {wq, s, b, dq, wq2, s2, b2};
            for (int i = 0; i < LEN(arrs); i++) afo_release(arrs[i]);
        }
}

/* Rows whose elements straddle words (3, 5, 6 bits), groups that are all
 * equal, all zero, or dominated by their negative end. */
static void test_edge_groups(void) {
    const int bits_list[] = {3, 5, 6, 2, 8};
    for (int d = 0; d < LEN(DTYPES); d++)
        for (int bi = 0; bi < LEN(bits_list); bi++) {
            afo_dtype dt = DTYPES[d];
            int gs = 32, bits = bits_list[bi];
            float w[4 * 32];
            for (int j = 0; j < gs; j++) {
                w[j] = round_to(dt, 0.3f);                                      /* all equal */
                w[gs + j] = 0.0f;                                               /* all zero */
                w[2 * gs + j] = round_to(dt, (float)test_uniform(-5.0, 1.0));   /* negative-dominant */
                w[3 * gs + j] = round_to(dt, (float)test_uniform(-1.0, 5.0));   /* positive-dominant */
            }
            w[2 * gs + 7] = round_to(dt, -5.0f);
            CHECK(check_quantize(dt, w, 1, 4 * gs, gs, bits) == 0);
            /* the edge of larger magnitude reads back exactly (f32 weights) */
            if (dt != AFO_FLOAT32) continue;
            int64_t shape[2] = {1, 4 * gs};
            afo_array *x = afo_array_from_data(w, dt, 2, shape), *wq, *s, *b;
            CHECK(afo_quantize(x, gs, bits, &wq, &s, &b) == AFO_OK);
            afo_array *dq = afo_dequantize(wq, s, b, gs, bits);
            float *v = read_f32(dq);
            CHECK(v[0] == 0.3f && v[gs - 1] == 0.3f);
            CHECK(v[gs] == 0.0f && v[2 * gs - 1] == 0.0f);
            CHECK_MSG(v[2 * gs + 7] == -5.0f, "bits %d: min reads back as %.9g", bits, v[2 * gs + 7]);
            free(v);
            afo_array *arrs[] = {x, wq, s, b, dq};
            for (int i = 0; i < LEN(arrs); i++) afo_release(arrs[i]);
        }
}

static void check_vector(const float *w, int bits, const uint32_t *words, int nwords, float scale, float bias) {
    int64_t shape[2] = {1, 32};
    for (int d = 0; d < LEN(DTYPES); d++) {
        afo_array *x = make(DTYPES[d], w, 2, shape), *wq, *s, *b;
        CHECK(afo_quantize(x, 32, bits, &wq, &s, &b) == AFO_OK);
        uint32_t got[4] = {0};
        float gs_ = 0, gb = 0;
        CHECK(afo_array_read(wq, AFO_UINT32, got, (size_t)nwords * 4) == AFO_OK);
        CHECK(afo_array_read(s, AFO_FLOAT32, &gs_, 4) == AFO_OK && afo_array_read(b, AFO_FLOAT32, &gb, 4) == AFO_OK);
        for (int k = 0; k < nwords; k++)
            CHECK_MSG(got[k] == words[k], "%d-bit %s word %d: 0x%08x, expected 0x%08x", bits,
                      afo_dtype_name(DTYPES[d]), k, got[k], words[k]);
        CHECK_MSG(gs_ == scale && gb == bias, "%d-bit: scale %g bias %g", bits, gs_, gb);
        afo_array *arrs[] = {x, wq, s, b};
        for (int i = 0; i < LEN(arrs); i++) afo_release(arrs[i]);
    }
}

/* Interop vectors derived by hand from the format's rules (exact in every
 * dtype, so the same literals hold for float32, bfloat16 and float16).
 *
 * 4 bits (n = 15), w[i] = -1 + 0.25 j with j = i mod 16: min -1, max 2.75;
 * |min| <= |max| so scale = -(3.75 / 15) = -0.25 and edge = max = 2.75;
 * q0 = rint(2.75 / -0.25) = -11 != 0, so scale = 2.75 / -11 = -0.25,
 * bias = 2.75; q = rint((w - 2.75) / -0.25) = 15 - j. Element i sits at bit
 * 4i: word 0 holds q = 15, 14, ..., 8 from its low nibble up = 0x89ABCDEF,
 * word 1 holds 7, ..., 0 = 0x01234567; words 2 and 3 repeat them.
 *
 * 3 bits (n = 7), w[i] = -3.5 + 0.5 j with j = i mod 8: min -3.5, max 0;
 * |min| > |max| so scale = 3.5 / 7 = 0.5 and edge = min = -3.5; q0 =
 * rint(-3.5 / 0.5) = -7 != 0, so scale = -3.5 / -7 = 0.5, bias = -3.5;
 * q = rint((w + 3.5) / 0.5) = j. Eight elements fill 24 bits with
 * V = sum_j j << 3j = 0x8 + 0x80 + 0x600 + 0x4000 + 0x28000 + 0x180000 +
 * 0xE00000 = 0xFAC688, and the row is V repeated at bits 0, 24, 48, 72:
 * word 0 = V | (V << 24) mod 2^32 = 0x88FAC688; word 1 = (V >> 8) |
 * (V << 16) mod 2^32 = 0x0000FAC6 | 0xC6880000 = 0xC688FAC6; word 2 =
 * (V >> 16) | (V << 8) = 0xFA | 0xFAC68800 = 0xFAC688FA. */
static void test_interop_vectors(void) {
    float w4[32], w3[32];
    for (int i = 0; i < 32; i++) {
        w4[i] = -1.0f + 0.25f * (float)(i % 16);
        w3[i] = -3.5f + 0.5f * (float)(i % 8);
    }
    const uint32_t v4[4] = {0x89ABCDEF, 0x01234567, 0x89ABCDEF, 0x01234567};
    const uint32_t v3[3] = {0x88FAC688, 0xC688FAC6, 0xFAC688FA};
    check_vector(w4, 4, v4, 4, -0.25f, 2.75f);
    check_vector(w3, 3, v3, 3, 0.5f, -3.5f);
}

/* ------------------------------------------------------------ matmul and take */

/* A quantized matrix [R, C] with its dequantized values (read once). */
typedef struct qmat {
    afo_array *wq, *s, *b;
    float *deq;
    int64_t R, C;
    int gs, bits;
} qmat;

static qmat qmat_random(afo_dtype dt, int64_t R, int64_t C, int gs, int bits) {
    qmat m = {.R = R, .C = C, .gs = gs, .bits = bits};
    float *w = malloc((size_t)(R * C) * sizeof(float));
    random_weights(dt, w, R * C, gs);
    int64_t shape[2] = {R, C};
    afo_array *x = make(dt, w, 2, shape);
    CHECK(afo_quantize(x, gs, bits, &m.wq, &m.s, &m.b) == AFO_OK);
    /* float32 parameters: the kernels' s*q + b before any rounding to dt */
    afo_array *s32 = afo_astype(m.s, AFO_FLOAT32), *b32 = afo_astype(m.b, AFO_FLOAT32);
    afo_array *dq = afo_dequantize(m.wq, s32, b32, gs, bits);
    afo_release(s32);
    afo_release(b32);
    afo_array *all[3] = {m.wq, m.s, m.b};
    afo_eval(all, 3);
    m.deq = read_f32(dq);
    afo_release(dq);
    afo_release(x);
    free(w);
    return m;
}

static void qmat_free(qmat *m) {
    afo_release(m->wq), afo_release(m->s), afo_release(m->b);
    free(m->deq);
}

/* Half the rounding step of x's int8 (4-bit weights) or int16 (other
 * widths) block of 32 at element k: the integer matvec's quantized
 * activation differs from x[k] by at most this (quant_kernels.h). */
static double xq_half_step(const float *xrow, int64_t k, int bits) {
    double amax = 0;
    for (int64_t j = k / 32 * 32; j < k / 32 * 32 + 32; j++) amax = fmax(amax, fabs((double)xrow[j]));
    return amax / (bits == 4 ? 127.0 : 32767.0) / 2;
}

/* y = x @ deq^T (transpose) or x @ deq in a poisoned buffer, against
 * float64. Float paths: |err| <= tol * sum_k |x w|. The integer paths (a
 * SIMD level, transpose: the matvec for M <= AFO_MATVEC_MAX_M, the prefill
 * GEMM of 4 and 8 bits above) replace x[k] by its quantized value in the
 * s * q part of w = s * q + b only (the bias meets the exact sum of x), so
 * they add sum_k |s q_k| * half_step(k); s q = w - b. */
static void check_qmm(const qmat *m, int64_t M, int transpose, afo_dtype xdt) {
    int64_t K = transpose ? m->C : m->R, N = transpose ? m->R : m->C;
    bool intx = afo_cpu_kernel_level() != AFO_CPU_SCALAR && transpose &&
                (M <= AFO_MATVEC_MAX_M || m->bits == 4 || m->bits == 8);
    float *x = malloc((size_t)(M * K) * sizeof(float)), *bias = read_f32(m->b);
    for (int64_t i = 0; i < M * K; i++) x[i] = round_to(xdt, (float)test_normal());
    int64_t xs[2] = {M, K}, ys[2] = {M, N};
    afo_array *xa = make(xdt, x, 2, xs);
    afo_array *y = afo_quantized_matmul(xa, m->wq, m->s, m->b, transpose, m->gs, m->bits);
    CHECK_MSG(y != NULL, "%s", afo_last_error());
    poison(xdt, 2, ys);
    float *got = read_f32(y);
    double tol = xdt == AFO_FLOAT32 ? 2e-6 : xdt == AFO_FLOAT16 ? 1e-3 : 8e-3, worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0, mag = 0, xq_err = 0;
            for (int64_t k = 0; k < K; k++) {
                double wv = transpose ? m->deq[j * m->C + k] : m->deq[k * m->C + j];
                acc += (double)x[i * K + k] * wv;
                mag += fabs((double)x[i * K + k] * wv);
                if (intx) xq_err += fabs(wv - bias[j * (m->C / m->gs) + k / m->gs]) * xq_half_step(x + i * K, k, m->bits);
            }
            double e = fabs(got[i * N + j] - acc) / (tol * mag + xq_err + 1e-30);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    CHECK_MSG(worst <= 1.0, "[%s, %d threads] bits %d gs %d K %lld M %lld %s (%s x): error %.3g of the bound",
              afo_cpu_level_name(afo_cpu_kernel_level()), afo_get_threads(), m->bits, m->gs, (long long)K, (long long)M,
              transpose ? "x@w^T" : "x@w", afo_dtype_name(xdt), worst);
    free(x);
    free(got);
    free(bias);
    afo_release(xa);
    afo_release(y);
}

/* Rows at indices (negative ones count from the end) equal the
 * dequantized rows bit for bit. */
static void check_take(const qmat *m) {
    int32_t idx[6] = {0, (int32_t)m->R - 1, 3, -1, 5, 2};
    int64_t is[2] = {2, 3};
    afo_array *ia = afo_array_from_data(idx, AFO_INT32, 2, is);
    afo_array *t = afo_quantized_take(m->wq, m->s, m->b, ia, m->gs, m->bits);
    CHECK_MSG(t && afo_array_ndim(t) == 3 && afo_array_dim(t, 2) == m->C, "%s", afo_last_error());
    int64_t ts[3] = {2, 3, m->C};
    poison(afo_array_dtype(m->s), 3, ts);
    float *got = read_f32(t);
    int bad = 0;
    for (int r = 0; r < 6; r++) {
        int64_t row = idx[r] < 0 ? idx[r] + m->R : idx[r];
        for (int64_t c = 0; c < m->C; c++) {
            float e = round_to(afo_array_dtype(m->s), m->deq[row * m->C + c]);
            bad += memcmp(got + r * m->C + c, &e, sizeof e) != 0;
        }
    }
    CHECK_MSG(bad == 0, "[%s] take bits %d gs %d: %d rows differ", afo_cpu_level_name(afo_cpu_kernel_level()), m->bits,
              m->gs, bad);
    free(got);
    afo_release(ia);
    afo_release(t);
}

/* Every level the CPU has, 1 and 2 threads, and on the AVX-512 levels both
 * weight-stream counts of their decode matvec (afo_cpu_qmv_streams)
 * whatever this CPU's is. */
#define EACH_LEVEL_AND_THREADS(body)                                           \
    do {                                                                       \
        afo_cpu_level saved_ = afo_cpu_kernel_level();                         \
        for (int l_ = 0; l_ < AFO_CPU_LEVEL_COUNT; l_++) {                     \
            if (afo_cpu_set_kernel_level((afo_cpu_level)l_) != AFO_OK) continue; \
            for (int t_ = 1; t_ <= 2; t_++)                                    \
                for (int s_ = 2; s_ <= (l_ >= AFO_CPU_AVX512 ? 4 : 2); s_ += 2) { \
                    afo_set_threads(t_);                                       \
                    afo_cpu_set_qmv_streams(s_);                               \
                    body;                                                      \
                }                                                              \
        }                                                                      \
        afo_set_threads(0);                                                    \
        afo_cpu_set_qmv_streams(0);                                            \
        afo_cpu_set_kernel_level(saved_);                                      \
    } while (0)

static void test_quantized_matmul(void) {
    const int64_t all_m[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 40}, few_m[] = {1, 5, 9, 40};
    const int64_t *Ms = g_scale < 1 ? few_m : all_m;
    int nm = g_scale < 1 ? LEN(few_m) : LEN(all_m);
    CHECK(afo_cpu_set_qmv_streams(3) == AFO_ERR_INVALID_ARGUMENT && afo_cpu_qmv_streams() % 2 == 0);
    afo_cpu_gemm_set_blas(false);
    for (int bi = 0; bi < LEN(BITS); bi++)
        for (int gi = 0; gi < LEN(GROUPS); gi++)
            for (int tr = 0; tr <= 1; tr++) {
                int gs = GROUPS[gi];
                /* odd N and 3 groups (transpose: K % 64 = 32 at gs 32, K % 128 = 64 at gs 64), or odd K
                 * (x @ w); weights bf16 for x @ w */
                qmat m = tr ? qmat_random(AFO_FLOAT32, 37, 3 * gs, gs, BITS[bi])
                            : qmat_random(AFO_BFLOAT16, 37, 2 * gs, gs, BITS[bi]);
                EACH_LEVEL_AND_THREADS({
                    for (int mi = 0; mi < nm; mi++) {
                        int64_t M = Ms[mi];
                        afo_dtype xdt = M == 3 ? AFO_BFLOAT16 : M == 5 ? AFO_FLOAT16 : AFO_FLOAT32;
                        check_qmm(&m, M, tr, xdt);
                    }
                    if (tr) check_take(&m);
                });
                qmat_free(&m);
            }
    /* matvec rows longer than one piece of parameters (AFO_QMV_PIECE = 128 groups), scales and biases in
     * bfloat16 and float16 */
    const int piece_bits[] = {4, 8, 5};
    for (int d = 1; d < LEN(DTYPES); d++)
        for (int bi = 0; bi < LEN(piece_bits); bi++) {
            qmat m = qmat_random(DTYPES[d], 5, 130 * 32, 32, piece_bits[bi]);
            EACH_LEVEL_AND_THREADS({
                check_qmm(&m, 1, 1, AFO_FLOAT32);
                check_qmm(&m, 3, 1, AFO_BFLOAT16);
            });
            qmat_free(&m);
        }
    /* two weight panels (2^20 floats each) in the blocked path */
    int64_t panel = afo_quant_panel_floats;
    afo_quant_panel_floats = 1 << 20;
    for (int tr = 0; tr <= 1; tr++) {
        qmat m = tr ? qmat_random(AFO_FLOAT32, 1031, 1152, 64, 4) : qmat_random(AFO_FLOAT32, 1031, 1280, 64, 4);
        EACH_LEVEL_AND_THREADS({
            check_qmm(&m, 20, tr, AFO_FLOAT32);
            check_qmm(&m, 1, tr, AFO_FLOAT32);
        });
        qmat_free(&m);
    }
    afo_quant_panel_floats = panel;
    afo_cpu_gemm_set_blas(true);
}

/* The integer matvec's activations: at every level, each quantized value
 * is within half a step of x (xq * sx, the step sx = max|x| / 127 or
 * / 32767 over the block of 32; plus float rounding), read back through
 * the documented x8 layout; xq, sx, sx8 equal the scalar reference's bit for bit (padding
 * included), xsum within float rounding. */
static void test_activation_quantization(void) {
    const int64_t Ks[] = {96, 192, 2048 + 32};
    afo_cpu_level saved = afo_cpu_kernel_level();
    for (int ki = 0; ki < LEN(Ks); ki++)
        for (int bits = 4; bits <= 8; bits += 4) {
            int M = 3, gs = 32;
            int64_t K = Ks[ki];
            size_t bytes = afo_qx_bytes(M, K, gs, bits);
            char *ref_buf = aligned_alloc(64, bytes), *buf = aligned_alloc(64, bytes);
            float *x = malloc((size_t)(M * K) * sizeof(float));
            for (int64_t i = 0; i < M * K; i++) x[i] = (float)(test_normal() * (i % 97 == 0 ? 30 : 1));
            memset(ref_buf, 0x5a, bytes);
            afo_qx ref, q;
            afo_qx_init(&ref, ref_buf, M, K, gs, bits);
            afo_qx_prep_scalar(&ref, x);
            int far = 0;
            for (int m = 0; m < M; m++)
                for (int64_t k = 0; k < K; k++) {
                    int64_t blk = k / 32;
                    int i = (int)(k % 32);
                    double v = bits == 4 ? ((int8_t *)ref.xq)[m * ref.ldx + blk / 2 * 64 + (i & 1) * 32 + blk % 2 * 16 + i / 2]
                                         : ((int16_t *)ref.xq)[m * ref.ldx + k];
                    double sx = ref.sx[m * (ref.ldx / 32) + blk];
                    /* half a step, plus float rounding of x / sx and of sx: 3 roundings of 2^-24 of L steps */
                    double L = bits == 4 ? 127 : 32767;
                    far += !(fabs(v * sx - x[m * K + k]) <= sx * (0.5 + 3 * L * 0x1p-24));
                    if (bits == 4) far += ref.sx8[m * (ref.ldx / 64) * 8 + blk / 2 * 8 + blk % 2 * 4 + i % 4] != (float)sx;
                }
            CHECK_MSG(far == 0, "bits %d K %lld: %d quantized activations off by more than half a step", bits, (long long)K, far);
            for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++) {
                if (afo_cpu_set_kernel_level((afo_cpu_level)l) != AFO_OK) continue;
                memset(buf, 0x5a, bytes);
                afo_qx_init(&q, buf, M, K, gs, bits);
                afo_qx_prep_best()(&q, x);
                size_t ints = (size_t)((char *)q.xsum - buf); /* xq, sx, sx8 */
                CHECK_MSG(memcmp(buf, ref_buf, ints) == 0, "[%s] bits %d K %lld: xq/sx differ from the reference",
                          afo_cpu_level_name((afo_cpu_level)l), bits, (long long)K);
                int bad = 0;
                for (int64_t g = 0; g < M * (K / gs); g++) bad += !(fabsf(q.xsum[g] - ref.xsum[g]) <= 1e-5f * (1 + fabsf(ref.xsum[g])));
                CHECK_MSG(bad == 0, "[%s] bits %d K %lld: %d group sums differ", afo_cpu_level_name((afo_cpu_level)l), bits,
                          (long long)K, bad);
            }
            afo_cpu_set_kernel_level(saved);
            free(ref_buf), free(buf), free(x);
        }
}

/* The byte unpacker (one window of `bits` words per 32 levels) against the
 * bit-by-bit reference, for every width. */
static void test_levels_u8(void) {
    for (int bi = 0; bi < LEN(BITS); bi++) {
        int bits = BITS[bi];
        int64_t n = 256, words = n * bits / 32;
        uint32_t *row = malloc((size_t)words * sizeof(uint32_t));
        for (int64_t i = 0; i < words; i++) row[i] = (uint32_t)test_rand_u64();
        float ref[256];
        uint8_t got[256];
        afo_quant_unpack_scalar(bits, row, 0, n, ref);
        afo_quant_levels_u8(bits, row, 64, n - 64, got);
        int bad = 0;
        for (int64_t i = 64; i < n; i++) bad += got[i - 64] != (uint8_t)ref[i];
        CHECK_MSG(bad == 0, "bits %d: %d levels differ", bits, bad);
        free(row);
    }
}

/* d(sum(g * y))/dx = g @ deq for y = x @ deq^T; nothing flows to w. */
static void test_quantized_matmul_grad(void) {
    qmat m = qmat_random(AFO_FLOAT32, 45, 128, 64, 4);
    int64_t M = 3, xs[2] = {M, 128}, gsz[2] = {M, 45};
    float x[3 * 128], g[3 * 45];
    for (int i = 0; i < 3 * 128; i++) x[i] = (float)test_normal();
    for (int i = 0; i < 3 * 45; i++) g[i] = (float)test_normal();
    afo_array *xa = afo_array_from_data(x, AFO_FLOAT32, 2, xs), *ga = afo_array_from_data(g, AFO_FLOAT32, 2, gsz);
    afo_array *y = afo_quantized_matmul(xa, m.wq, m.s, m.b, 1, 64, 4), *grad[2] = {NULL, NULL};
    afo_array *wrt[2] = {xa, m.s};
    CHECK_MSG(afo_vjp(y, ga, wrt, 2, grad) == AFO_OK, "%s", afo_last_error());
    float *dx = read_f32(grad[0]), *ds = read_f32(grad[1]);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int k = 0; k < 128; k++) {
            double acc = 0, mag = 0;
            for (int n = 0; n < 45; n++) {
                acc += (double)g[i * 45 + n] * m.deq[n * 128 + k];
                mag += fabs((double)g[i * 45 + n] * m.deq[n * 128 + k]);
            }
            double e = fabs(dx[i * 128 + k] - acc) / (mag + 1e-30);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    CHECK_MSG(worst <= 2e-6, "grad error %.3g", worst);
    int nonzero = 0;
    for (int i = 0; i < afo_array_size(grad[1]); i++) nonzero += ds[i] != 0;
    CHECK(nonzero == 0);
    free(dx);
    free(ds);
    afo_array *arrs[] = {xa, ga, y, grad[0], grad[1]};
    for (int i = 0; i < LEN(arrs); i++) afo_release(arrs[i]);
    qmat_free(&m);
}

/* y of 2 and 3 parts against the parts' own products, bit for bit, on
 * the device y was computed on (the op has CPU kernels only: with a GPU as
 * the default device, as AFO_TEST_DEVICE=cuda runs this, it falls back to
 * the CPU while single products would run on the GPU). */
static void check_parts(afo_array *xa, int64_t M, afo_array **w, afo_array **sc, afo_array **bs, const int64_t *Ns,
                        int bits) {
    afo_device dflt = afo_get_default_device();
    for (int parts = 2; parts <= 3; parts++) {
        afo_array *y = afo_quantized_matmul_parts(xa, parts, w, sc, bs, 64, bits);
        CHECK_MSG(y && afo_eval1(y) == AFO_OK, "%s", afo_last_error());
        float *got = read_f32(y);
        int64_t col = 0, ld = afo_array_dim(y, 1), bad = 0;
        afo_set_default_device(afo_array_device(y));
        for (int p = 0; p < parts; p++) {
            afo_array *yp = afo_quantized_matmul(xa, w[p], sc[p], bs[p], 1, 64, bits);
            float *want = read_f32(yp);
            for (int64_t i = 0; i < M; i++)
                bad += memcmp(got + i * ld + col, want + i * Ns[p], (size_t)Ns[p] * sizeof(float)) != 0;
            col += Ns[p];
            free(want);
            afo_release(yp);
        }
        afo_set_default_device(dflt);
        CHECK_MSG(bad == 0 && col == ld, "bits %d M %lld parts %d: %lld rows differ", bits, (long long)M, parts,
                  (long long)bad);
        free(got);
        afo_release(y);
    }
}

/* afo_quantized_matmul_parts equals the concatenation of the parts'
 * afo_quantized_matmul bit for bit (every row's arithmetic is the same; the
 * matvec only claims rows across the parts), at every level and thread
 * count, for the matvec and the prefill; its gradient of x is the sum of
 * the parts' (within float rounding). */
static void test_quantized_matmul_parts(void) {
    const int bits[] = {4, 8, 5};
    const int64_t Ns[] = {37, 8, 70}, Ms[] = {1, 3, 20};
    for (int bi = 0; bi < LEN(bits); bi++) {
        qmat m[3];
        for (int p = 0; p < 3; p++) m[p] = qmat_random(AFO_BFLOAT16, Ns[p], 3 * 64, 64, bits[bi]);
        afo_array *w[3] = {m[0].wq, m[1].wq, m[2].wq}, *sc[3] = {m[0].s, m[1].s, m[2].s}, *bs[3] = {m[0].b, m[1].b, m[2].b};
        for (int mi = 0; mi < LEN(Ms); mi++) {
            int64_t M = Ms[mi], xs[2] = {M, 3 * 64};
            float *x = malloc((size_t)(M * 3 * 64) * sizeof(float));
            for (int64_t i = 0; i < M * 3 * 64; i++) x[i] = (float)test_normal();
            afo_array *xa = afo_array_from_data(x, AFO_FLOAT32, 2, xs);
            EACH_LEVEL_AND_THREADS(check_parts(xa, M, w, sc, bs, Ns, bits[bi]));
            /* d/dx of sum(g * y) */
            int64_t gs[2] = {M, Ns[0] + Ns[1] + Ns[2]};
            float *g = malloc((size_t)(gs[0] * gs[1]) * sizeof(float)), *want = malloc((size_t)(M * 3 * 64) * sizeof(float));
            for (int64_t i = 0; i < gs[0] * gs[1]; i++) g[i] = (float)test_normal();
            for (int64_t i = 0; i < M; i++)
                for (int64_t k = 0; k < 3 * 64; k++) {
                    double acc = 0;
                    int64_t col = 0;
                    for (int p = 0; p < 3; p++) {
                        for (int64_t n = 0; n < Ns[p]; n++) acc += (double)g[i * gs[1] + col + n] * m[p].deq[n * 3 * 64 + k];
                        col += Ns[p];
                    }
                    want[i * 3 * 64 + k] = (float)acc;
                }
            afo_array *ga = afo_array_from_data(g, AFO_FLOAT32, 2, gs), *grad = NULL;
            afo_array *y = afo_quantized_matmul_parts(xa, 3, w, sc, bs, 64, bits[bi]);
            CHECK_MSG(afo_vjp(y, ga, &xa, 1, &grad) == AFO_OK, "%s", afo_last_error());
            float *dx = read_f32(grad);
            double worst = 0;
            for (int64_t i = 0; i < M * 3 * 64; i++) {
                double e = fabs(dx[i] - want[i]) / (1 + fabs(want[i]));
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
            }
            CHECK_MSG(worst <= 1e-5, "parts grad error %.3g", worst);
            free(dx), free(g), free(want), free(x);
            afo_release(grad), afo_release(ga), afo_release(y), afo_release(xa);
        }
        for (int p = 0; p < 3; p++) qmat_free(&m[p]);
    }
}

/* Strided operands (transposed x and w, every other row of the packed
 * matrix) give the results of their dense copies: quantize bit for bit,
 * matmul within rounding. */
static void test_strided_inputs(void) {
    int64_t ws[2] = {128, 6}, xs[2] = {128, 3};
    float w[128 * 6], x[128 * 3];
    random_weights(AFO_FLOAT32, w, 128 * 6, 32);
    for (int i = 0; i < 128 * 3; i++) x[i] = (float)test_normal();
    afo_array *wbase = afo_array_from_data(w, AFO_FLOAT32, 2, ws), *xbase = afo_array_from_data(x, AFO_FLOAT32, 2, xs);
    afo_array *wt = afo_swapaxes(wbase, 0, 1), *xt = afo_swapaxes(xbase, 0, 1); /* [6, 128], [3, 128] views */
    afo_array *wd = afo_contiguous(wt), *xd = afo_contiguous(xt), *q[3], *qd[3], *qs[3], *qsd[3];
    CHECK(afo_quantize(wt, 32, 5, &q[0], &q[1], &q[2]) == AFO_OK);
    CHECK(afo_quantize(wd, 32, 5, &qd[0], &qd[1], &qd[2]) == AFO_OK);
    for (int i = 0; i < 3; i++) {
        float *a = read_f32(q[i]), *b = read_f32(qd[i]);
        CHECK(memcmp(a, b, (size_t)afo_array_size(q[i]) * sizeof(float)) == 0);
        free(a), free(b);
        int64_t start[2] = {0, 0}, stop[2] = {6, afo_array_dim(q[i], 1)}, step[2] = {2, 1};
        qs[i] = afo_slice(q[i], start, stop, step);
        qsd[i] = afo_contiguous(qs[i]);
    }
    afo_array *y = afo_quantized_matmul(xt, qs[0], qs[1], qs[2], 1, 32, 5);
    afo_array *yd = afo_quantized_matmul(xd, qsd[0], qsd[1], qsd[2], 1, 32, 5);
    float *a = read_f32(y), *b = read_f32(yd);
    int bad = 0;
    for (int i = 0; i < 3 * 3; i++) bad += !(fabsf(a[i] - b[i]) <= 1e-5f * (1 + fabsf(b[i])));
    CHECK(bad == 0);
    free(a), free(b);
    afo_array *arrs[] = {wbase, xbase, wt, xt, wd, xd, y, yd};
    for (int i = 0; i < LEN(arrs); i++) afo_release(arrs[i]);
    for (int i = 0; i < 3; i++) afo_release(q[i]), afo_release(qd[i]), afo_release(qs[i]), afo_release(qsd[i]);
}

/* ------------------------------------------------------------ errors */

static void expect_error(afo_array *a, const char *what) {
    CHECK_MSG(a == NULL && afo_last_status() == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), what),
              "expected an error naming '%s', got '%s'", what, afo_last_error());
    afo_release(a);
    afo_clear_error();
}

static void test_errors(void) {
    int64_t s2[2] = {2, 64}, s40[2] = {2, 40};
    afo_array *w = afo_zeros(AFO_FLOAT32, 2, s2), *w40 = afo_zeros(AFO_FLOAT32, 2, s40), *wi = afo_zeros(AFO_INT32, 2, s2);
    afo_array *wq, *s, *b;
    CHECK(afo_quantize(w, 32, 7, &wq, &s, &b) == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), "bits 7"));
    CHECK(wq == NULL && s == NULL && b == NULL);
    CHECK(afo_quantize(w, 16, 4, &wq, &s, &b) == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), "group size 16"));
    CHECK(afo_quantize(w40, 32, 4, &wq, &s, &b) == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), "multiple"));
    CHECK(afo_quantize(wi, 32, 4, &wq, &s, &b) == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), "int32"));
    CHECK(afo_quantize(w, 32, 4, &wq, &s, &b) == AFO_OK);
    afo_array *s16 = afo_astype(s, AFO_FLOAT16), *bad_s = afo_zeros(AFO_FLOAT32, 2, (int64_t[]){2, 3});
    expect_error(afo_dequantize(w, s, b, 32, 4), "uint32");
    expect_error(afo_dequantize(wq, s16, b, 32, 4), "share");
    expect_error(afo_dequantize(wq, bad_s, b, 32, 4), "do not match");
    expect_error(afo_dequantize(wq, s, b, 64, 3), "whole groups");
    afo_array *x = afo_zeros(AFO_FLOAT32, 2, (int64_t[]){1, 32}), *xi = afo_zeros(AFO_INT32, 2, (int64_t[]){1, 64});
    expect_error(afo_quantized_matmul(x, wq, s, b, 1, 32, 4), "last axis 32");
    expect_error(afo_quantized_matmul(xi, wq, s, b, 1, 32, 4), "float32");
    afo_array *w3 = afo_zeros(AFO_FLOAT32, 3, (int64_t[]){2, 2, 64}), *wq3, *s3, *b3;
    CHECK(afo_quantize(w3, 32, 4, &wq3, &s3, &b3) == AFO_OK);
    afo_array *x64 = afo_zeros(AFO_FLOAT32, 2, (int64_t[]){1, 64});
    expect_error(afo_quantized_matmul(x64, wq3, s3, b3, 1, 32, 4), "2-D");
    /* ids from the host, as token ids come: the GPU checks those too (not ids it computed itself) */
    const int32_t two = 2;
    afo_array *fi = afo_zeros(AFO_FLOAT32, 1, (int64_t[]){2}), *oob = afo_array_from_data(&two, AFO_INT32, 1, (int64_t[]){1});
    expect_error(afo_quantized_take(wq, s, b, fi, 32, 4), "indices");
    afo_array *t = afo_quantized_take(wq, s, b, oob, 32, 4);
    CHECK(t && afo_eval1(t) == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), "out of range"));
    afo_clear_error();
    afo_array *arrs[] = {w, w40, wi, wq, s, b, s16, bad_s, x, xi, w3, wq3, s3, b3, x64, fi, oob, t};
    for (int i = 0; i < LEN(arrs); i++) afo_release(arrs[i]);
}

int main(void) {
    const char *sc = getenv("AFO_TEST_SCALE");
    if (sc) g_scale = atof(sc);
    test_seed(42);
    RUN(test_quantize_matches_reference);
    RUN(test_pack_roundtrip);
    RUN(test_edge_groups);
    RUN(test_interop_vectors);
    RUN(test_activation_quantization);
    RUN(test_levels_u8);
    RUN(test_quantized_matmul);
    RUN(test_quantized_matmul_grad);
    RUN(test_quantized_matmul_parts);
    RUN(test_strided_inputs);
    RUN(test_errors);
    return test_finish();
}
