/* GEMM driver: argument checks, level dispatch, the weight-layout matvec,
 * the packed and cache-blocked GEMM (BLIS loop order), the OpenBLAS path,
 * the float64 path and the scalar kernels and reference. */
#include "backends/cpu/gemm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/threadpool.h"
#include "core/internal.h"

#ifdef AFO_HAVE_OPENBLAS
#include <cblas.h>
#endif

/* ---------------------------------------------------------------- elements */

static inline float load_f(afo_dtype t, const void *p, int64_t i) {
    switch (t) {
    case AFO_FLOAT32: return ((const float *)p)[i];
    case AFO_FLOAT16: return afo_f16_to_f32(((const uint16_t *)p)[i]);
    case AFO_BFLOAT16: return afo_bf16_to_f32(((const uint16_t *)p)[i]);
    case AFO_FLOAT64: return (float)((const double *)p)[i];
    default: return 0.0f;
    }
}

static inline double load_d(afo_dtype t, const void *p, int64_t i) {
    return t == AFO_FLOAT64 ? ((const double *)p)[i] : (double)load_f(t, p, i);
}

static inline void store_d(afo_dtype t, void *p, int64_t i, double v) {
    switch (t) {
    case AFO_FLOAT64: ((double *)p)[i] = v; break;
    case AFO_FLOAT32: ((float *)p)[i] = (float)v; break;
    case AFO_FLOAT16: ((uint16_t *)p)[i] = afo_f32_to_f16((float)v); break;
    case AFO_BFLOAT16: ((uint16_t *)p)[i] = afo_f32_to_bf16((float)v); break;
    default: break;
    }
}

static inline const char *elem(const void *p, afo_dtype t, int64_t i) {
    return (const char *)p + i * (int64_t)afo_dtype_size(t);
}

/* ---------------------------------------------------------------- scalar level */

static void convert_scalar(afo_dtype from, const void *src, afo_dtype to, void *dst, int64_t n) {
    if (from == to) {
        memcpy(dst, src, (size_t)n * afo_dtype_size(from));
        return;
    }
    for (int64_t i = 0; i < n; i++) store_d(to, dst, i, load_f(from, src, i));
}

enum { SCALAR_MR = 4, SCALAR_NR = 8 };

static void ukr_scalar(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                       bool accumulate) {
    float t[SCALAR_MR][SCALAR_NR] = {{0}};
    for (int64_t k = 0; k < kc; k++)
        for (int i = 0; i < SCALAR_MR; i++)
            for (int j = 0; j < SCALAR_NR; j++) t[i][j] += a[k * SCALAR_MR + i] * b[k * SCALAR_NR + j];
    for (int i = 0; i < SCALAR_MR; i++)
        for (int j = 0; j < SCALAR_NR; j++) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + t[i][j];
}

enum { MV_CHUNK = 256 };

static void matvec_scalar(afo_dtype wdt, int M, int64_t K, const float *a, int64_t lda,
                          const void *w, int64_t ldw, int64_t n0, int64_t n1, float *out,
                          int64_t ldo) {
    float wrow[MV_CHUNK];
    for (int64_t n = n0; n < n1; n++) {
        float s[AFO_MATVEC_MAX_M] = {0};
        for (int64_t k0 = 0; k0 < K; k0 += MV_CHUNK) {
            int64_t kk = K - k0 < MV_CHUNK ? K - k0 : MV_CHUNK;
            convert_scalar(wdt, elem(w, wdt, n * ldw + k0), AFO_FLOAT32, wrow, kk);
            for (int m = 0; m < M; m++)
                for (int64_t k = 0; k < kk; k++) s[m] += a[m * lda + k0 + k] * wrow[k];
        }
        for (int m = 0; m < M; m++) out[m * ldo + n - n0] = s[m];
    }
}

const afo_gemm_kernels afo_gemm_kernels_scalar = {
    .mr = SCALAR_MR, .nr = SCALAR_NR, .ukr = ukr_scalar,
    .kc = 256, .mc = 64, .nc = 1024,
    .matvec = matvec_scalar, .convert = convert_scalar,
};

/* ---------------------------------------------------------------- dispatch */

static atomic_bool g_blas_enabled = true;

void afo_cpu_gemm_set_blas(bool enable) { atomic_store(&g_blas_enabled, enable); }

static atomic_int g_bf16_pairs = -1;

void afo_cpu_gemm_set_bf16_pairs(int mode) { atomic_store(&g_bf16_pairs, mode < 0 ? -1 : mode > 0); }

const char *afo_cpu_kernel_name(void) { return afo_cpu_level_name(afo_cpu_kernel_level()); }

static const afo_gemm_kernels *current_kernels(void) {
    switch (afo_cpu_kernel_level()) {
#if defined(__x86_64__)
    case AFO_CPU_AMX:
    case AFO_CPU_AVX512: return &afo_gemm_kernels_avx512;
    case AFO_CPU_AVX2: return &afo_gemm_kernels_avx2;
#elif defined(__aarch64__)
    case AFO_CPU_NEON: return &afo_gemm_kernels_neon;
#endif
    default: return &afo_gemm_kernels_scalar;
    }
}

/* The tile kernel bf16 GEMMs use at this level, if any. */
static const afo_gemm_tiles *current_tiles(void) {
#if defined(__x86_64__)
    if (afo_cpu_kernel_level() == AFO_CPU_AMX) return &afo_gemm_tiles_amx;
#endif
    return NULL;
}

void afo_cpu_convert_row(afo_dtype from, const void *src, afo_dtype to, void *dst, int64_t n) {
    if (n > 0) current_kernels()->convert(from, src, to, dst, n);
}

/* ---------------------------------------------------------------- reference / f64 */

typedef struct ref_job {
    const afo_gemm_args *g;
} ref_job;

/* Computes the flattened outputs [i0, i1) of C (i = m*N + n). */
static void ref_range(void *arg, int64_t i0, int64_t i1) {
    const afo_gemm_args *g = ((const ref_job *)arg)->g;
    for (int64_t i = i0; i < i1; i++) {
        int64_t m = i / g->N, n = i % g->N;
        double s = 0.0;
        for (int64_t k = 0; k < g->K; k++)
            s += load_d(g->a_dtype, g->A, m * g->a_rs + k * g->a_cs) *
                 load_d(g->dtype, g->B, k * g->b_rs + n * g->b_cs);
        store_d(g->c_dtype, g->C, m * g->ldc + n, s);
    }
}

/* The reference may also write float64 (tests compare against it). */
static afo_status check_args(const afo_gemm_args *g, bool any_float_out) {
    if (!g) return afo_error(AFO_ERR_INVALID_ARGUMENT, "gemm: NULL arguments");
    if (g->dtype != AFO_FLOAT32 && g->dtype != AFO_FLOAT16 && g->dtype != AFO_BFLOAT16 &&
        g->dtype != AFO_FLOAT64)
        return afo_error(AFO_ERR_UNSUPPORTED, "gemm: dtype %s is not a floating type",
                         afo_dtype_name(g->dtype));
    if (g->a_dtype != AFO_FLOAT32 && g->a_dtype != AFO_FLOAT16 && g->a_dtype != AFO_BFLOAT16 &&
        g->a_dtype != AFO_FLOAT64)
        return afo_error(AFO_ERR_UNSUPPORTED, "gemm: A dtype %s is not a floating type", afo_dtype_name(g->a_dtype));
    if ((g->a_dtype == AFO_FLOAT64) != (g->dtype == AFO_FLOAT64))
        return afo_error(AFO_ERR_UNSUPPORTED, "gemm: float64 multiplies only float64 (A %s, B %s)",
                         afo_dtype_name(g->a_dtype), afo_dtype_name(g->dtype));
    if (g->c_dtype != g->dtype && g->c_dtype != g->a_dtype && g->c_dtype != AFO_FLOAT32 &&
        !(any_float_out && g->c_dtype == AFO_FLOAT64))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "gemm: output dtype %s must be %s, %s or float32",
                         afo_dtype_name(g->c_dtype), afo_dtype_name(g->a_dtype), afo_dtype_name(g->dtype));
    if (g->M < 0 || g->N < 0 || g->K < 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "gemm: negative size M=%lld N=%lld K=%lld",
                         (long long)g->M, (long long)g->N, (long long)g->K);
    if (g->a_rs < 0 || g->a_cs < 0 || g->b_rs < 0 || g->b_cs < 0 || g->ldc < 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "gemm: negative stride");
    if (g->M > 0 && g->N > 0) {
        if (!g->C) return afo_error(AFO_ERR_INVALID_ARGUMENT, "gemm: NULL output");
        if (g->M > 1 && g->ldc < g->N)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "gemm: ldc %lld < N %lld", (long long)g->ldc,
                             (long long)g->N);
        if (g->K > 0 && (!g->A || !g->B))
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "gemm: NULL input");
    }
    return AFO_OK;
}

afo_status afo_cpu_gemm_reference(const afo_gemm_args *g) {
    AFO_TRY(check_args(g, true));
    ref_job j = {g};
    if (g->M > 0 && g->N > 0) ref_range(&j, 0, g->M * g->N);
    return AFO_OK;
}

/* ---------------------------------------------------------------- matvec */

typedef struct mv_job {
    const afo_gemm_args *g;
    const afo_gemm_kernels *kr;
    const float *a;
    int64_t lda;
} mv_job;

static void mv_range(void *arg, int64_t n0, int64_t n1) {
    const mv_job *j = arg;
    const afo_gemm_args *g = j->g;
    if (g->c_dtype == AFO_FLOAT32) {
        j->kr->matvec(g->dtype, (int)g->M, g->K, j->a, j->lda, g->B, g->b_cs, n0, n1,
                      (float *)g->C + n0, g->ldc);
        return;
    }
    float tmp[AFO_MATVEC_MAX_M * MV_CHUNK];
    size_t csz = afo_dtype_size(g->c_dtype);
    for (int64_t n = n0; n < n1; n += MV_CHUNK) {
        int64_t ne = n1 - n < MV_CHUNK ? n1 - n : MV_CHUNK;
        j->kr->matvec(g->dtype, (int)g->M, g->K, j->a, j->lda, g->B, g->b_cs, n, n + ne, tmp, MV_CHUNK);
        for (int64_t m = 0; m < g->M; m++)
            j->kr->convert(AFO_FLOAT32, tmp + m * MV_CHUNK, g->c_dtype,
                           (char *)g->C + (size_t)(m * g->ldc + n) * csz, ne);
    }
}

/* Rows of A as contiguous f32 (the matvec kernels read A many times). */
static afo_status matvec(const afo_gemm_args *g, const afo_gemm_kernels *kr) {
    mv_job j = {g, kr, g->A, g->a_rs};
    float *abuf = NULL;
    if (g->a_dtype != AFO_FLOAT32 || (g->a_cs != 1 && g->K > 1)) {
        abuf = malloc(sizeof(float) * (size_t)(g->M * g->K));
        if (!abuf) return afo_error(AFO_ERR_OUT_OF_MEMORY, "gemm: no memory for %lld x %lld A rows",
                                    (long long)g->M, (long long)g->K);
        for (int64_t m = 0; m < g->M; m++) {
            if (g->a_cs == 1)
                kr->convert(g->a_dtype, elem(g->A, g->a_dtype, m * g->a_rs), AFO_FLOAT32, abuf + m * g->K, g->K);
            else
                for (int64_t k = 0; k < g->K; k++) abuf[m * g->K + k] = load_f(g->a_dtype, g->A, m * g->a_rs + k * g->a_cs);
        }
        j.a = abuf;
        j.lda = g->K;
    }
    /* ~64K multiply-adds per piece keeps small products on one thread */
    int64_t grain = (int64_t)1 << 16;
    grain = grain / (g->K * g->M) + 1;
    afo_parallel_for(g->N, grain, mv_range, &j);
    free(abuf);
    return AFO_OK;
}

/* ---------------------------------------------------------------- packing */

/* PACK_CHUNK columns of up to MAX_PANEL rows are widened at a time. */
enum { PACK_CHUNK = 128, MAX_PANEL = 32, MAX_TILE = 1024 };

/* d[c*P + i] = src[i*rs + c] for i < pr, c < cols. Runs of 8 columns keep
 * each row's reads sequential and the writes within 8 lines (about twice
 * as fast as whole rows, which scatter over a line per column). */
static void transpose_into(const float *src, int64_t rs, int pr, int64_t cols, int P, float *d) {
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8)
        for (int i = 0; i < pr; i++) {
            const float *s = src + i * rs + c;
            float *o = d + c * P + i;
            o[0] = s[0], o[P] = s[1], o[2 * P] = s[2], o[3 * P] = s[3];
            o[4 * P] = s[4], o[5 * P] = s[5], o[6 * P] = s[6], o[7 * P] = s[7];
        }
    for (; c < cols; c++)
        for (int i = 0; i < pr; i++) d[c * P + i] = src[i * rs + c];
}

/* Packs rows [r0, r0+rows) x columns [c0, c0+cols) of X (element (r,c) at
 * X[r*rs + c*cs]) as f32 panels of P (<= MAX_PANEL) rows: panel p holds,
 * column after column, P values of rows p*P.., zero padded past `rows`.
 * The two layouts that matter (rows contiguous, or panel columns
 * contiguous) convert whole runs with the level's SIMD convert. */
static void pack_f32(const afo_gemm_kernels *kr, afo_dtype dt, const void *x, int64_t rs, int64_t cs,
                     int64_t r0, int64_t rows, int64_t c0, int64_t cols, int P, float *dst) {
    float tmp[MAX_PANEL * PACK_CHUNK];
    for (int64_t p0 = 0; p0 < rows; p0 += P) {
        int pr = rows - p0 < P ? (int)(rows - p0) : P;
        float *d = dst + p0 * cols;
        if (cs == 1 && dt == AFO_FLOAT32) {
            transpose_into((const float *)x + (r0 + p0) * rs + c0, rs, pr, cols, P, d);
        } else if (cs == 1) {
            for (int64_t cc = 0; cc < cols; cc += PACK_CHUNK) {
                int64_t n = cols - cc < PACK_CHUNK ? cols - cc : PACK_CHUNK;
                for (int i = 0; i < pr; i++)
                    kr->convert(dt, elem(x, dt, (r0 + p0 + i) * rs + c0 + cc), AFO_FLOAT32, tmp + i * PACK_CHUNK, n);
                transpose_into(tmp, PACK_CHUNK, pr, n, P, d + cc * P);
            }
        } else if (rs == 1) {
            for (int64_t c = 0; c < cols; c++)
                kr->convert(dt, elem(x, dt, r0 + p0 + (c0 + c) * cs), AFO_FLOAT32, d + c * P, pr);
        } else {
            for (int64_t c = 0; c < cols; c++)
                for (int i = 0; i < pr; i++) d[c * P + i] = load_f(dt, x, (r0 + p0 + i) * rs + (c0 + c) * cs);
        }
        if (pr < P)
            for (int64_t c = 0; c < cols; c++)
                for (int i = pr; i < P; i++) d[c * P + i] = 0.0f;
    }
}

/* Same for bf16 sources kept as bf16 k-pairs: panel p holds, per pair of
 * columns, P pairs (x[r][2q], x[r][2q+1]), zero padded to cp pairs. */
static void pack_pairs(const afo_gemm_kernels *kr, const uint16_t *x, int64_t rs, int64_t cs, int64_t r0,
                       int64_t rows, int64_t c0, int64_t cols, int64_t cp, int P, uint16_t *dst) {
    for (int64_t p0 = 0; p0 < rows; p0 += P) {
        int pr = rows - p0 < P ? (int)(rows - p0) : P;
        uint16_t *d = dst + p0 * cp * 2;
        int64_t q0 = cs == 1 && kr->pack_pairs ? kr->pack_pairs(x + (r0 + p0) * rs + c0, rs, pr, cols, P, d) : 0;
        for (int i = 0; i < P; i++) {
            uint16_t *o = d + 2 * i;
            int64_t q = q0;
            if (i < pr) {
                const uint16_t *row = x + (r0 + p0 + i) * rs + c0 * cs;
                if (cs == 1) /* the weight layout: a pair is one 4-byte move */
                    for (; 2 * q + 1 < cols; q++) memcpy(o + q * P * 2, row + 2 * q, 4);
                else
                    for (; 2 * q + 1 < cols; q++)
                        o[q * P * 2] = row[2 * q * cs], o[q * P * 2 + 1] = row[(2 * q + 1) * cs];
                if (2 * q < cols) o[q * P * 2] = row[2 * q * cs], o[q * P * 2 + 1] = 0, q++;
            }
            for (; q < cp; q++) o[q * P * 2] = o[q * P * 2 + 1] = 0;
        }
    }
}

/* bf16 rows for tile A operands: panel p holds, per block of 32 columns, P
 * rows of 32 values (one tile row each), zero padded to kb blocks. */
static void pack_rows(const uint16_t *x, int64_t rs, int64_t cs, int64_t r0, int64_t rows, int64_t c0,
                      int64_t cols, int64_t kb, int P, uint16_t *dst) {
    for (int64_t p0 = 0; p0 < rows; p0 += P) {
        int pr = rows - p0 < P ? (int)(rows - p0) : P;
        uint16_t *d = dst + p0 * kb * 32;
        for (int i = 0; i < P; i++)
            for (int64_t b = 0; b < kb; b++) {
                uint16_t *o = d + (b * P + i) * 32;
                int64_t n = i < pr && cols > b * 32 ? (cols - b * 32 < 32 ? cols - b * 32 : 32) : 0;
                if (n > 0) {
                    const uint16_t *src = x + (r0 + p0 + i) * rs + (c0 + b * 32) * cs;
                    if (cs == 1) memcpy(o, src, (size_t)n * 2);
                    else
                        for (int64_t c = 0; c < n; c++) o[c] = src[c * cs];
                }
                memset(o + n, 0, (size_t)(32 - n) * 2);
            }
    }
}

/* ---------------------------------------------------------------- blocked GEMM */

/* How the packed panels hold their values, and which microkernel reads them. */
typedef enum gemm_route {
    ROUTE_F32,   /* f32 panels, kr->ukr */
    ROUTE_PAIRS, /* bf16 k-pair panels, kr->ukr_bf16 */
    ROUTE_TILES, /* bf16 row panels (A) and k-pair panels (B), tiles->ukr */
} gemm_route;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

typedef struct gemm_job {
    const afo_gemm_args *g;
    const afo_gemm_kernels *kr;
    const afo_gemm_tiles *tiles;
    gemm_route route;
    int kgran; /* packed rows are padded to a multiple of this many k */
    int mr, nr;
    int64_t kc, mc, nc;
    float *cf; /* f32 result: C itself or a workspace */
    int64_t ldcf;
    size_t a_bytes, per_thread;
    bool split_n;
    atomic_bool out_of_memory;
} gemm_job;

/* Packing buffers, kept by each thread between calls: fresh multi-megabyte
 * blocks come from mmap and would page-fault all over again every call. */
static _Thread_local char *t_scratch;
static _Thread_local size_t t_scratch_size;

static char *thread_scratch(size_t n) {
    if (n > t_scratch_size) {
        free(t_scratch);
        t_scratch = aligned_alloc(64, n);
        t_scratch_size = t_scratch ? n : 0;
    }
    return t_scratch;
}

/* One mc x nc block of C against one kc slice of the packed panels. */
static void macro_kernel(const gemm_job *j, const void *ap, const void *bp, int64_t mcur, int64_t ncur,
                         int64_t kcur, float *c, bool accumulate) {
    _Alignas(64) float tmp[MAX_TILE];
    int mr = j->mr, nr = j->nr;
    int64_t kl = round_up(kcur, j->kgran); /* packed values per panel row */
    for (int64_t jr = 0; jr < ncur; jr += nr) {
        int nn = ncur - jr < nr ? (int)(ncur - jr) : nr;
        for (int64_t ir = 0; ir < mcur; ir += mr) {
            int mm = mcur - ir < mr ? (int)(mcur - ir) : mr;
            float *ct = c + ir * j->ldcf + jr;
            bool full = mm == mr && nn == nr;
            float *out = full ? ct : tmp;
            int64_t ldo = full ? j->ldcf : nr;
            bool acc = full && accumulate;
            const uint16_t *ah = (const uint16_t *)ap + ir * kl, *bh = (const uint16_t *)bp + jr * kl;
            switch (j->route) {
            case ROUTE_TILES: j->tiles->ukr(kl / 32, ah, bh, out, ldo, acc); break;
            case ROUTE_PAIRS: j->kr->ukr_bf16(kl / 2, ah, bh, out, ldo, acc); break;
            default: j->kr->ukr(kl, (const float *)ap + ir * kl, (const float *)bp + jr * kl, out, ldo, acc);
            }
            if (!full)
                for (int i = 0; i < mm; i++)
                    for (int jj = 0; jj < nn; jj++)
                        ct[i * j->ldcf + jj] = (accumulate ? ct[i * j->ldcf + jj] : 0.0f) + tmp[i * nr + jj];
        }
    }
}

/* Packs panels of A (P = mr) or of B^T (P = nr) for the job's route. */
static void pack(const gemm_job *j, bool a, const void *x, int64_t rs, int64_t cs, int64_t r0, int64_t rows,
                 int64_t c0, int64_t cols, void *dst) {
    int P = a ? j->mr : j->nr;
    int64_t kl = round_up(cols, j->kgran);
    if (j->route == ROUTE_TILES && a)
        pack_rows(x, rs, cs, r0, rows, c0, cols, kl / 32, P, dst);
    else if (j->route != ROUTE_F32)
        pack_pairs(j->kr, x, rs, cs, r0, rows, c0, cols, kl / 2, P, dst);
    else
        pack_f32(j->kr, a ? j->g->a_dtype : j->g->dtype, x, rs, cs, r0, rows, c0, cols, P, dst);
}

static void gemm_thread(void *arg, int t, int nt) {
    gemm_job *j = arg;
    const afo_gemm_args *g = j->g;
    int64_t m0 = 0, m1 = g->M, n0 = 0, n1 = g->N;
    if (j->split_n) {
        int64_t units = (g->N + j->nr - 1) / j->nr;
        n0 = units * t / nt * j->nr;
        n1 = units * (t + 1) / nt * j->nr;
        if (n1 > g->N) n1 = g->N;
    } else {
        int64_t units = (g->M + j->mr - 1) / j->mr;
        m0 = units * t / nt * j->mr;
        m1 = units * (t + 1) / nt * j->mr;
        if (m1 > g->M) m1 = g->M;
    }
    if (m0 >= m1 || n0 >= n1) return;
    char *ap = thread_scratch(j->per_thread);
    if (!ap) {
        atomic_store(&j->out_of_memory, true);
        return;
    }
    char *bp = ap + j->a_bytes;
    if (j->tiles) j->tiles->begin();
    for (int64_t jc = n0; jc < n1; jc += j->nc) {
        int64_t ncur = n1 - jc < j->nc ? n1 - jc : j->nc;
        for (int64_t pc = 0; pc < g->K; pc += j->kc) {
            int64_t kcur = g->K - pc < j->kc ? g->K - pc : j->kc;
            /* B^T: rows are n, columns are k */
            pack(j, false, g->B, g->b_cs, g->b_rs, jc, ncur, pc, kcur, bp);
            for (int64_t ic = m0; ic < m1; ic += j->mc) {
                int64_t mcur = m1 - ic < j->mc ? m1 - ic : j->mc;
                pack(j, true, g->A, g->a_rs, g->a_cs, ic, mcur, pc, kcur, ap);
                macro_kernel(j, ap, bp, mcur, ncur, kcur, j->cf + ic * j->ldcf + jc, pc > 0);
            }
        }
    }
    if (j->tiles) j->tiles->end();
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Whether kr's bf16 pair microkernel outruns its f32 one on cache-resident
 * panels. vdpbf16ps does twice the work of an FMA per instruction, but
 * some CPUs issue it at half the rate, and then widening bf16 to f32 while
 * packing is as fast and simpler on the caches. Timed once (~1 ms). */
static bool pairs_win(const afo_gemm_kernels *kr) {
    static atomic_int verdict; /* 0 not yet timed, 1 pairs win, 2 they don't */
    int v = atomic_load(&verdict);
    if (v) return v == 1;
    enum { KC = 128, ROUNDS = 3, CALLS = 64 };
    size_t fbytes = sizeof(float) * KC * (size_t)(kr->mr + kr->nr);
    size_t hbytes = sizeof(uint16_t) * KC * (size_t)(kr->mr_bf16 + kr->nr_bf16);
    size_t cbytes = sizeof(float) * (size_t)(kr->mr * kr->nr > kr->mr_bf16 * kr->nr_bf16 ? kr->mr * kr->nr
                                                                                       : kr->mr_bf16 * kr->nr_bf16);
    char *buf = aligned_alloc(64, (size_t)round_up((int64_t)(fbytes + hbytes + cbytes), 64));
    if (!buf) return false;
    memset(buf, 0, fbytes + hbytes + cbytes);
    float *af = (float *)buf, *bf = af + KC * kr->mr, *c = (float *)(buf + fbytes + hbytes);
    uint16_t *ah = (uint16_t *)(buf + fbytes), *bh = ah + KC * kr->mr_bf16;
    double best_f = 1e30, best_h = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = seconds();
        for (int i = 0; i < CALLS; i++) kr->ukr(KC, af, bf, c, kr->nr, false);
        double t1 = seconds();
        for (int i = 0; i < CALLS; i++) kr->ukr_bf16(KC / 2, ah, bh, c, kr->nr_bf16, false);
        double t2 = seconds();
        best_f = t1 - t0 < best_f ? t1 - t0 : best_f;
        best_h = t2 - t1 < best_h ? t2 - t1 : best_h;
    }
    free(buf);
    /* per multiply-add of the respective tiles */
    bool win = best_h / (kr->mr_bf16 * kr->nr_bf16) < best_f / (kr->mr * kr->nr);
    atomic_store(&verdict, win ? 1 : 2);
    return win;
}

static afo_status blocked(const afo_gemm_args *g, const afo_gemm_kernels *kr) {
    gemm_job j = {.g = g, .kr = kr, .route = ROUTE_F32, .kgran = 1, .mr = kr->mr, .nr = kr->nr};
    int64_t kc = kr->kc, mc = kr->mc, nc = kr->nc;
    /* ukr_bf16 exists only in the AVX-512 set, which also runs on CPUs
     * without AVX512_BF16 */
    int pairs_mode = atomic_load(&g_bf16_pairs);
    const afo_gemm_tiles *tiles = current_tiles();
    bool bf16 = g->dtype == AFO_BFLOAT16 && g->a_dtype == AFO_BFLOAT16;
    if (bf16 && tiles) {
        j.tiles = tiles;
        j.route = ROUTE_TILES;
        j.kgran = 32;
        j.mr = tiles->mr, j.nr = tiles->nr;
        kc = tiles->kc, mc = tiles->mc, nc = tiles->nc;
    } else if (bf16 && kr->ukr_bf16 && afo_cpu_get_features()->avx512_bf16 &&
               (pairs_mode < 0 ? pairs_win(kr) : pairs_mode > 0)) {
        j.route = ROUTE_PAIRS;
        j.kgran = 2;
        j.mr = kr->mr_bf16, j.nr = kr->nr_bf16;
    }
    j.kc = g->K < kc ? g->K : kc;
    j.mc = round_up(g->M < mc ? g->M : mc, j.mr);
    j.nc = round_up(g->N < nc ? g->N : nc, j.nr);
    if (j.mr > MAX_PANEL || j.nr > MAX_PANEL || j.mr * j.nr > MAX_TILE)
        return afo_error(AFO_ERR_INTERNAL, "gemm: %s microkernel tile %dx%d exceeds the driver's limits",
                         afo_cpu_kernel_name(), j.mr, j.nr);
    size_t esz = j.route == ROUTE_F32 ? 4 : 2;
    int64_t kpad = round_up(j.kc, j.kgran);
    j.a_bytes = (size_t)round_up((int64_t)((size_t)(j.mc * kpad) * esz), 64);
    j.per_thread = j.a_bytes + (size_t)round_up((int64_t)((size_t)(j.nc * kpad) * esz), 64);
    int nt = afo_get_threads();
    /* below ~1 MFLOP the thread hand-off costs more than it saves */
    if (g->M * g->N * g->K < ((int64_t)1 << 19)) nt = 1;
    j.split_n = round_up(g->N, j.nr) / j.nr >= round_up(g->M, j.mr) / j.mr;

    float *work = NULL;
    if (g->c_dtype == AFO_FLOAT32) {
        j.cf = g->C;
        j.ldcf = g->ldc;
    } else {
        work = malloc(sizeof(float) * (size_t)(g->M * g->N));
        if (!work)
            return afo_error(AFO_ERR_OUT_OF_MEMORY, "gemm: no memory for a %lld x %lld f32 result",
                             (long long)g->M, (long long)g->N);
        j.cf = work;
        j.ldcf = g->N;
    }
    if (nt == 1)
        gemm_thread(&j, 0, 1);
    else
        afo_parallel_run(gemm_thread, &j);
    if (atomic_load(&j.out_of_memory)) {
        free(work);
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "gemm: no memory for %zu bytes of packing buffers",
                         j.per_thread);
    }
    if (work)
        for (int64_t m = 0; m < g->M; m++)
            kr->convert(AFO_FLOAT32, work + m * g->N, g->c_dtype,
                        (char *)g->C + (size_t)(m * g->ldc) * afo_dtype_size(g->c_dtype), g->N);
    free(work);
    return AFO_OK;
}

/* ---------------------------------------------------------------- OpenBLAS */

#ifdef AFO_HAVE_OPENBLAS
/* Leading dimension BLAS needs for a rows x cols operand with the given
 * strides, or 0 when the layout is not one BLAS accepts. */
static int64_t blas_ld(int64_t rows, int64_t cols, int64_t rs, int64_t cs, bool *trans) {
    if (cs == 1 || cols == 1) {
        *trans = false;
        return rows == 1 ? cols : rs >= cols ? rs : 0;
    }
    if (rs == 1 || rows == 1) {
        *trans = true;
        return cols == 1 ? rows : cs >= rows ? cs : 0;
    }
    return 0;
}

static bool try_blas(const afo_gemm_args *g) {
    if (g->dtype != AFO_FLOAT32 || g->a_dtype != AFO_FLOAT32 || g->c_dtype != AFO_FLOAT32 ||
        !atomic_load(&g_blas_enabled))
        return false;
    /* afo's matvec streams the weights better; tiny products pay BLAS's setup */
    if (g->M <= AFO_MATVEC_MAX_M || g->N < 16 || g->K < 16) return false;
    bool ta, tb;
    int64_t lda = blas_ld(g->M, g->K, g->a_rs, g->a_cs, &ta), ldb = blas_ld(g->K, g->N, g->b_rs, g->b_cs, &tb);
    int64_t ldc = g->M == 1 ? g->N : g->ldc;
    if (!lda || !ldb || ldc < g->N || g->M > INT32_MAX || g->N > INT32_MAX || g->K > INT32_MAX ||
        lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX)
        return false;
    static atomic_int blas_threads;
    int nt = afo_get_threads();
    if (atomic_exchange(&blas_threads, nt) != nt) openblas_set_num_threads(nt);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)g->M,
                (int)g->N, (int)g->K, 1.0f, g->A, (int)lda, g->B, (int)ldb, 0.0f, g->C, (int)ldc);
    return true;
}
#endif

/* ---------------------------------------------------------------- entry */

afo_status afo_cpu_gemm(const afo_gemm_args *g) {
    AFO_TRY(check_args(g, false));
    if (g->M == 0 || g->N == 0) return AFO_OK;
    if (g->K == 0) {
        for (int64_t m = 0; m < g->M; m++)
            for (int64_t n = 0; n < g->N; n++) store_d(g->c_dtype, g->C, m * g->ldc + n, 0.0);
        return AFO_OK;
    }
    if (g->dtype == AFO_FLOAT64) {
        ref_job j = {g};
        afo_parallel_for(g->M * g->N, ((int64_t)1 << 15) / g->K + 1, ref_range, &j);
        return AFO_OK;
    }
    const afo_gemm_kernels *kr = current_kernels();
#ifdef AFO_HAVE_OPENBLAS
    if (try_blas(g)) return AFO_OK;
#endif
    if (g->M <= AFO_MATVEC_MAX_M && (g->b_rs == 1 || g->K == 1)) return matvec(g, kr);
    return blocked(g, kr);
}
