/* GEMM/matvec kernels against the double-accumulating reference at every
 * SIMD level the CPU has, and the row conversions against base.h's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "support/test.h"

static const afo_dtype k_dtypes[] = {AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16, AFO_FLOAT64};

static double getd(afo_dtype t, const void *p, int64_t i) {
    switch (t) {
    case AFO_FLOAT64: return ((const double *)p)[i];
    case AFO_FLOAT32: return ((const float *)p)[i];
    case AFO_FLOAT16: return afo_f16_to_f32(((const uint16_t *)p)[i]);
    default: return afo_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

static void setd(afo_dtype t, void *p, int64_t i, double v) {
    switch (t) {
    case AFO_FLOAT64: ((double *)p)[i] = v; break;
    case AFO_FLOAT32: ((float *)p)[i] = (float)v; break;
    case AFO_FLOAT16: ((uint16_t *)p)[i] = afo_f32_to_f16((float)v); break;
    default: ((uint16_t *)p)[i] = afo_f32_to_bf16((float)v); break;
    }
}

/* Operand layouts: 0 row-major, 1 column-major, 2 both strides > 1. For B
 * "row-major" means the weight layout W[N,K] (b_rs = 1, b_cs = K). */
static void strides(int layout, int64_t rows, int64_t cols, int64_t *rs, int64_t *cs) {
    switch (layout) {
    case 0: *rs = cols, *cs = 1; break;
    case 1: *rs = 1, *cs = rows; break;
    default: *rs = 2 * cols + 1, *cs = 2; break;
    }
}

/* Output error allowed on top of the accumulation bound: the rounding of
 * the result into c_dtype. */
static double out_rel(afo_dtype c) {
    switch (c) {
    case AFO_FLOAT16: return ldexp(1.0, -11);
    case AFO_BFLOAT16: return ldexp(1.0, -8);
    case AFO_FLOAT64: return 1e-15;
    default: return ldexp(1.0, -24);
    }
}

/* Runs one product and checks |c - ref| <= acc * sum_k |a||b| + out_rel * |ref|,
 * acc being 1e-5 for float32 accumulation and 1e-12 for float64; the ldc
 * padding of C must keep its NaN poison. */
static void check_gemm_mixed(afo_dtype at, afo_dtype dt, afo_dtype ct, int64_t M, int64_t N, int64_t K, int la,
                             int lb) {
    size_t as = afo_dtype_size(at), es = afo_dtype_size(dt), cs = afo_dtype_size(ct);
    afo_gemm_args g = {.dtype = dt, .a_dtype = at, .M = M, .N = N, .K = K, .c_dtype = ct, .ldc = N + 3};
    strides(la, M, K, &g.a_rs, &g.a_cs);
    int64_t brs, bcs; /* B^T (N x K) in the same layout family */
    strides(lb, N, K, &bcs, &brs);
    g.b_rs = brs, g.b_cs = bcs;
    int64_t na = (M - 1) * g.a_rs + (K - 1) * g.a_cs + 1, nb = (K - 1) * g.b_rs + (N - 1) * g.b_cs + 1;
    void *A = malloc((size_t)na * as), *B = malloc((size_t)nb * es);
    void *C = malloc((size_t)(M * g.ldc) * cs);
    double *ref = malloc(sizeof(double) * (size_t)(M * N)), *mag = malloc(sizeof(double) * (size_t)(M * N));
    double *ad = malloc(sizeof(double) * (size_t)na), *bd = malloc(sizeof(double) * (size_t)nb);
    for (int64_t i = 0; i < na; i++) setd(at, A, i, test_normal()), ad[i] = fabs(getd(at, A, i));
    for (int64_t i = 0; i < nb; i++) setd(dt, B, i, test_normal()), bd[i] = fabs(getd(dt, B, i));
    for (int64_t i = 0; i < M * g.ldc; i++) setd(ct, C, i, NAN);
    g.A = A, g.B = B, g.C = C;
    afo_gemm_args r = g;
    r.C = ref, r.c_dtype = AFO_FLOAT64, r.ldc = N;
    CHECK(afo_cpu_gemm_reference(&r) == AFO_OK);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += ad[m * g.a_rs + k * g.a_cs] * bd[k * g.b_rs + n * g.b_cs];
            mag[m * N + n] = s;
        }
    CHECK(afo_cpu_gemm(&g) == AFO_OK);
    double acc = dt == AFO_FLOAT64 ? 1e-12 : 1e-5;
    int bad = 0;
    for (int64_t m = 0; m < M && bad < 3; m++) {
        for (int64_t n = 0; n < g.ldc; n++) {
            double c = getd(ct, C, m * g.ldc + n);
            if (n >= N) {
                if (!isnan(c)) bad++;
                continue;
            }
            double want = ref[m * N + n], tol = acc * mag[m * N + n] + out_rel(ct) * fabs(want);
            if (!(fabs(c - want) <= tol)) {
                if (!bad)
                    fprintf(stderr, "  %s %s x %s->%s M=%lld N=%lld K=%lld la=%d lb=%d: C[%lld,%lld]=%g want %g\n",
                            afo_cpu_kernel_name(), afo_dtype_name(at), afo_dtype_name(dt), afo_dtype_name(ct), (long long)M,
                            (long long)N, (long long)K, la, lb, (long long)m, (long long)n, c, want);
                bad++;
            }
        }
    }
    CHECK(bad == 0);
    free(A), free(B), free(C), free(ref), free(mag), free(ad), free(bd);
}

static void check_gemm(afo_dtype dt, afo_dtype ct, int64_t M, int64_t N, int64_t K, int la, int lb) {
    check_gemm_mixed(dt, dt, ct, M, N, K, la, lb);
}

/* float32 activations times half-precision weights (and the reverse), on the
 * matvec and blocked paths, without converting the weights first. */
static void sweep_mixed(void) {
    static const afo_dtype pairs[][2] = {{AFO_FLOAT32, AFO_BFLOAT16}, {AFO_FLOAT32, AFO_FLOAT16},
                                         {AFO_BFLOAT16, AFO_FLOAT32}, {AFO_FLOAT16, AFO_BFLOAT16}};
    for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++) {
        afo_dtype at = pairs[p][0], dt = pairs[p][1];
        for (int64_t M = 1; M <= 9; M += 2) check_gemm_mixed(at, dt, AFO_FLOAT32, M, 33, 65, 0, (int)M % 3);
        check_gemm_mixed(at, dt, at, 40, 70, 300, 0, 1);
        check_gemm_mixed(at, dt, dt, 3, 100, 17, 1, 0);
    }
}

static const int64_t k_ks[] = {1, 3, 17, 63, 64, 65, 257, 1000};
static const int64_t k_ns[] = {1, 3, 17, 33, 65, 8, 16, 100, 7};

/* Every M in 1..9 against every K, cycling N, layouts and output dtypes,
 * for each dtype: covers the matvec (M <= 8) and blocked paths' edges. */
static void sweep_small(void) {
    int i = 0;
    for (int64_t M = 1; M <= 9; M++)
        for (size_t ki = 0; ki < sizeof k_ks / sizeof *k_ks; ki++, i++)
            for (size_t d = 0; d < 4; d++) {
                afo_dtype dt = k_dtypes[d];
                afo_dtype ct = (i + d) % 2 ? AFO_FLOAT32 : dt;
                check_gemm(dt, ct, M, k_ns[(size_t)i % (sizeof k_ns / sizeof *k_ns)], k_ks[ki], i % 3,
                           (i / 3 + (int)d) % 3);
            }
}

/* Shapes crossing the cache blocks (kc, mc, nc) and big enough to thread. */
static void sweep_blocks(void) {
    for (size_t d = 0; d < 4; d++) {
        afo_dtype dt = k_dtypes[d];
        check_gemm(dt, dt, 20, 40, 300, 0, 0);
        check_gemm(dt, AFO_FLOAT32, 150, 20, 20, 1, 1);
        check_gemm(dt, dt, 13, 2100, 5, 0, 1);
        check_gemm(dt, AFO_FLOAT32, 24, 90, 250, 0, 0);
        check_gemm(dt, dt, 67, 45, 130, 2, 2);
        for (int M = 1; M <= 8; M += 3) check_gemm(dt, M % 2 ? dt : AFO_FLOAT32, M, 203, 331, 0, 0);
    }
}

/* Runs fn at every level the CPU has, with 1 and up to max_threads threads
 * (at the amx level bf16 GEMMs go through the tiles). */
static void each_level(void (*fn)(void), int max_threads) {
    afo_cpu_level saved = afo_cpu_kernel_level();
    afo_cpu_gemm_set_blas(false);
    for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++) {
        if (afo_cpu_set_kernel_level((afo_cpu_level)l) != AFO_OK) continue;
        /* with AVX512_BF16, bf16 both through vdpbf16ps and widened to f32 */
        int pair_modes = l == AFO_CPU_AVX512 && afo_cpu_get_features()->avx512_bf16 ? 2 : 1;
        for (int pm = 0; pm < pair_modes; pm++) {
            afo_cpu_gemm_set_bf16_pairs(pm);
            for (int t = 1; t <= max_threads; t++) {
                afo_set_threads(t);
                test_seed(1234 + (uint64_t)l);
                fn();
            }
        }
    }
    afo_cpu_gemm_set_bf16_pairs(-1);
    afo_set_threads(0);
    afo_cpu_gemm_set_blas(true);
    CHECK(afo_cpu_set_kernel_level(saved) == AFO_OK);
}

/* the small shapes stay below the threading thresholds */
static void test_gemm_small(void) { each_level(sweep_small, 1); }
static void test_gemm_blocks(void) { each_level(sweep_blocks, 2); }
static void test_gemm_mixed(void) { each_level(sweep_mixed, 2); }

/* bf16 through the AMX tiles on shapes crossing their 32x32 C blocks, 32-k
 * blocks and cache blocks (kc 1024, mc 256, nc 1024), with every layout; B
 * in the weight layout with M <= 8 would take the matvec instead. */
static void test_gemm_tiles(void) {
    if (!afo_cpu_level_supported(AFO_CPU_AMX)) {
        fprintf(stderr, "SKIP: amx bf16 tiles: this CPU lacks AMX-BF16 or the OS did not grant it\n");
        return;
    }
    afo_cpu_level saved = afo_cpu_kernel_level();
    afo_cpu_gemm_set_blas(false);
    CHECK(afo_cpu_set_kernel_level(AFO_CPU_AMX) == AFO_OK);
    static const struct { int64_t M, N, K; } shapes[] = {
        {1, 1, 1}, {5, 7, 3}, {9, 33, 31}, {16, 16, 32}, {31, 17, 33}, {32, 32, 64}, {33, 47, 95},
        {47, 100, 1100}, {300, 70, 545}, {70, 1100, 97}, {257, 129, 1030},
    };
    for (int t = 1; t <= 3; t += 2) {
        afo_set_threads(t);
        test_seed(4321 + (uint64_t)t);
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            for (int l = 0; l < 3; l++)
                check_gemm(AFO_BFLOAT16, (i + (size_t)l) % 2 ? AFO_BFLOAT16 : AFO_FLOAT32, shapes[i].M,
                           shapes[i].N, shapes[i].K, l, (l + (int)i) % 3);
        for (int64_t M = 1; M <= 9; M++) check_gemm(AFO_BFLOAT16, AFO_FLOAT32, M, 35, 77, 0, 1 + (int)M % 2);
    }
    afo_set_threads(0);
    afo_cpu_gemm_set_blas(true);
    CHECK(afo_cpu_set_kernel_level(saved) == AFO_OK);
}

/* Default dispatch, OpenBLAS allowed (when linked) for float32. */
static void test_gemm_blas(void) {
    test_seed(77);
    check_gemm(AFO_FLOAT32, AFO_FLOAT32, 33, 70, 90, 0, 0);
    check_gemm(AFO_FLOAT32, AFO_FLOAT32, 33, 70, 90, 1, 1);
    check_gemm(AFO_FLOAT32, AFO_FLOAT32, 33, 70, 90, 2, 0);
}

static void test_gemm_edges(void) {
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 1, 1, 1}, c[4] = {NAN, NAN, NAN, NAN};
    afo_gemm_args g = {.dtype = AFO_FLOAT32, .a_dtype = AFO_FLOAT32, .M = 2, .N = 2, .K = 0, .A = a, .a_rs = 2, .a_cs = 1, .B = b,
                       .b_rs = 2, .b_cs = 1, .C = c, .c_dtype = AFO_FLOAT32, .ldc = 2};
    CHECK(afo_cpu_gemm(&g) == AFO_OK);
    CHECK(c[0] == 0 && c[3] == 0);
    g.K = 2;
    g.M = 0;
    CHECK(afo_cpu_gemm(&g) == AFO_OK);
    g.M = 2;
    g.dtype = AFO_INT32;
    CHECK(afo_cpu_gemm(&g) == AFO_ERR_UNSUPPORTED);
    g.dtype = AFO_FLOAT32;
    g.a_dtype = AFO_BOOL; /* left unset */
    CHECK(afo_cpu_gemm(&g) == AFO_ERR_UNSUPPORTED);
    g.a_dtype = AFO_FLOAT64; /* float64 only with float64 */
    CHECK(afo_cpu_gemm(&g) == AFO_ERR_UNSUPPORTED);
    g.a_dtype = AFO_FLOAT32;
    g.c_dtype = AFO_BFLOAT16;
    CHECK(afo_cpu_gemm(&g) == AFO_ERR_INVALID_ARGUMENT);
    g.c_dtype = AFO_FLOAT32;
    g.b_rs = -1;
    CHECK(afo_cpu_gemm(&g) == AFO_ERR_INVALID_ARGUMENT);
    g.b_rs = 2;
    g.ldc = 1;
    CHECK(afo_cpu_gemm(&g) == AFO_ERR_INVALID_ARGUMENT);
}

static void test_levels(void) {
    afo_cpu_level now = afo_cpu_kernel_level();
    CHECK(afo_cpu_level_supported(now));
    CHECK(strcmp(afo_cpu_kernel_name(), afo_cpu_level_name(now)) == 0);
    CHECK(afo_cpu_level_supported(AFO_CPU_SCALAR));
    CHECK(!(afo_cpu_level_supported(AFO_CPU_NEON) && afo_cpu_level_supported(AFO_CPU_AVX2)));
    for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++)
        if (!afo_cpu_level_supported((afo_cpu_level)l))
            CHECK(afo_cpu_set_kernel_level((afo_cpu_level)l) == AFO_ERR_UNSUPPORTED);
}

/* f32 bit patterns rich in specials: random, plus inf, NaNs, subnormals,
 * rounding ties and values overflowing f16. */
static uint32_t f32_pattern(int i) {
    static const uint32_t special[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u,
                                       0x7f800001u, 0xffa00001u, 0x00000001u, 0x807fffffu, 0x3f808000u,
                                       0x3f818000u, 0x477ff000u, 0x477fefffu, 0x33000000u, 0x33000001u,
                                       0x38800000u, 0x387fffffu, 0x7f7fffffu};
    int ns = (int)(sizeof special / sizeof *special);
    if (i < ns) return special[i];
    uint32_t u = (uint32_t)test_rand_u64();
    switch (i % 4) {
    case 0: return u & 0x807fffffu;                               /* f32 subnormal */
    case 1: return (u & 0x83ffffffu) | 0x30000000u;               /* near f16's range */
    default: return u;
    }
}

static bool same_half(uint16_t got, uint16_t want, bool nan_any) {
    bool wnan = (want & 0x7fffu) > 0x7c00u;
    if (nan_any && wnan) return (got & 0x7fffu) > 0x7c00u;
    return got == want;
}

static void convert_checks(void) {
    enum { N = 4099 };
    uint32_t *f = malloc(4 * N), *f2 = malloc(4 * N);
    uint16_t *h = malloc(2 * N), *h2 = malloc(2 * N);
    for (int i = 0; i < N; i++) f[i] = f32_pattern(i);
    for (int64_t off = 0; off < 3; off++) {
        int64_t n = N - off * 7;
        afo_cpu_convert_row(AFO_FLOAT32, f + off, AFO_BFLOAT16, h + off, n);
        int bad = 0;
        for (int64_t i = off; i < off + n; i++) {
            float x;
            memcpy(&x, &f[i], 4);
            bad += h[i] != afo_f32_to_bf16(x);
        }
        CHECK_MSG(bad == 0, "%s f32->bf16: %d mismatches", afo_cpu_kernel_name(), bad);
        afo_cpu_convert_row(AFO_FLOAT32, f + off, AFO_FLOAT16, h + off, n);
        bad = 0;
        for (int64_t i = off; i < off + n; i++) {
            float x;
            memcpy(&x, &f[i], 4);
            bad += !same_half(h[i], afo_f32_to_f16(x), false);
        }
        CHECK_MSG(bad == 0, "%s f32->f16: %d mismatches", afo_cpu_kernel_name(), bad);
    }
    /* every half value, both formats, and on to the other half format */
    for (int i = 0; i < 65536 && i < N; i++) h[i] = (uint16_t)(i * 16 + (i >> 12));
    for (int fmt = 0; fmt < 2; fmt++) {
        afo_dtype t = fmt ? AFO_BFLOAT16 : AFO_FLOAT16, o = fmt ? AFO_FLOAT16 : AFO_BFLOAT16;
        for (int base = 0; base < 65536; base += N - 3) {
            int n = 65536 - base < N - 3 ? 65536 - base : N - 3;
            for (int i = 0; i < n; i++) h[i + 3] = (uint16_t)(base + i);
            afo_cpu_convert_row(t, h + 3, AFO_FLOAT32, f2 + 1, n);
            afo_cpu_convert_row(t, h + 3, o, h2 + 1, n);
            int bad = 0;
            for (int i = 0; i < n; i++) {
                float want = fmt ? afo_bf16_to_f32(h[i + 3]) : afo_f16_to_f32(h[i + 3]), got;
                memcpy(&got, &f2[i + 1], 4);
                uint32_t wu;
                memcpy(&wu, &want, 4);
                bad += isnan(want) ? !isnan(got) || signbit(got) != signbit(want) : f2[i + 1] != wu;
                uint16_t w2 = fmt ? afo_f32_to_f16(want) : afo_f32_to_bf16(want);
                bad += !same_half(h2[i + 1], w2, true);
            }
            CHECK_MSG(bad == 0, "%s %s->f32/%s: %d mismatches", afo_cpu_kernel_name(), afo_dtype_name(t),
                      afo_dtype_name(o), bad);
        }
    }
    free(f), free(f2), free(h), free(h2);
}

static void test_convert(void) {
    afo_cpu_level saved = afo_cpu_kernel_level();
    for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++) {
        if (afo_cpu_set_kernel_level((afo_cpu_level)l) != AFO_OK) continue;
        test_seed(99);
        convert_checks();
    }
    CHECK(afo_cpu_set_kernel_level(saved) == AFO_OK);
}

int main(void) {
    RUN(test_levels);
    RUN(test_convert);
    RUN(test_gemm_edges);
    RUN(test_gemm_small);
    RUN(test_gemm_blocks);
    RUN(test_gemm_tiles);
    RUN(test_gemm_mixed);
    RUN(test_gemm_blas);
    return test_finish();
}
