/* Random: Threefry known answers, determinism (per key, per element, across
 * thread counts), ranges and statistics of uniform/normal/categorical, keys
 * and splits, argument errors. Statistical bounds are 5 standard errors. */
#include <afo/afo.h>
#include <stdbool.h>
#include <string.h>

#include "core/internal.h"
#include "support/test.h"

static afo_array *key_of(uint32_t k0, uint32_t k1) {
    uint32_t k[2] = {k0, k1};
    int64_t two = 2;
    return afo_array_from_data(k, AFO_UINT32, 1, &two);
}

static double *read_f64(afo_array *a) {
    int64_t n = afo_array_size(a);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    afo_status st = afo_array_read(a, AFO_FLOAT64, v, sizeof(double) * (size_t)n);
    CHECK_MSG(st == AFO_OK, "read: %s", afo_last_error());
    return v;
}

/* Random123's kat_vectors for threefry2x32_20, through the op's kernel: the
 * counter is passed as the block offset of a two-word RANDOM_BITS node. */
static void test_threefry_known_answers(void) {
    static const struct { uint32_t ctr[2], key[2], out[2]; } kat[] = {
        {{0x00000000, 0x00000000}, {0x00000000, 0x00000000}, {0x6B200159, 0x99BA4EFE}},
        {{0xFFFFFFFF, 0xFFFFFFFF}, {0xFFFFFFFF, 0xFFFFFFFF}, {0x1CB996FC, 0xBB002BE7}},
        {{0x243F6A88, 0x85A308D3}, {0x13198A2E, 0x03707344}, {0xC4923A9C, 0x483DF7A0}},
    };
    for (int t = 0; t < 3; t++) {
        afo_array *key = key_of(kat[t].key[0], kat[t].key[1]);
        afo_attrs a = {.i = {1, 2}, .ni = 10};
        a.i[9] = (int64_t)((uint64_t)kat[t].ctr[1] << 32 | kat[t].ctr[0]);
        afo_array *bits = afo_node(AFO_OP_RANDOM_BITS, &key, 1, &a);
        uint32_t got[2] = {0, 0};
        CHECK(bits && afo_array_read(bits, AFO_UINT32, got, sizeof got) == AFO_OK);
        CHECK_MSG(got[0] == kat[t].out[0] && got[1] == kat[t].out[1], "vector %d: %08x %08x", t, got[0], got[1]);
        afo_release(bits), afo_release(key);
    }
}

/* ------------------------------------------------------------ determinism */

typedef afo_array *(*gen_fn)(afo_array *key, int64_t n, afo_dtype dt);
static afo_array *gen_uniform(afo_array *key, int64_t n, afo_dtype dt) {
    return afo_random_uniform(key, -1, 3, 1, &n, dt);
}
static afo_array *gen_normal(afo_array *key, int64_t n, afo_dtype dt) { return afo_random_normal(key, 0, 1, 1, &n, dt); }

static void test_determinism(void) {
    static const afo_dtype dts[] = {AFO_FLOAT32, AFO_FLOAT64, AFO_BFLOAT16, AFO_FLOAT16};
    gen_fn gens[2] = {gen_uniform, gen_normal};
    int64_t n = 300001; /* odd: a thread boundary can split a Threefry block */
    for (int g = 0; g < 2; g++)
        for (int k = 0; k < 4; k++) {
            afo_array *key = afo_random_key(42), *other = afo_random_key(43);
            double *r[4];
            afo_array *arrs[4];
            for (int t = 0; t < 2; t++) { /* threads 1, 2 */
                afo_set_threads(t + 1);
                arrs[t] = gens[g](key, n, dts[k]);
                r[t] = read_f64(arrs[t]);
            }
            afo_set_threads(0);
            arrs[2] = gens[g](other, n, dts[k]);
            arrs[3] = gens[g](key, 1001, dts[k]); /* element i does not depend on the size */
            r[2] = read_f64(arrs[2]);
            r[3] = read_f64(arrs[3]);
            CHECK_MSG(memcmp(r[0], r[1], sizeof(double) * (size_t)n) == 0, "threads 1 vs 2 differ (%s)",
                      afo_dtype_name(dts[k]));
            CHECK(memcmp(r[0], r[3], sizeof(double) * 1001) == 0);
            int64_t same = 0;
            for (int64_t i = 0; i < n; i++) same += r[0][i] == r[2][i];
            CHECK_MSG(same < n / 50, "keys 42 and 43 agree on %lld of %lld (%s)", (long long)same, (long long)n,
                      afo_dtype_name(dts[k]));
            for (int t = 0; t < 4; t++) free(r[t]), afo_release(arrs[t]);
            afo_release(key), afo_release(other);
        }
}

/* ------------------------------------------------------------ uniform */

static void test_uniform_stats(void) {
    static const afo_dtype dts[] = {AFO_FLOAT32, AFO_FLOAT64, AFO_BFLOAT16, AFO_FLOAT16};
    int64_t n = 1000000;
    afo_array *key = afo_random_key(7);
    for (int k = 0; k < 4; k++) {
        /* [0, 1): in bf16/f16 a draw near 1 would round to 1 without care */
        afo_array *u = afo_random_uniform(key, 0, 1, 1, &n, dts[k]);
        double *v = read_f64(u), lo = 1, hi = 0, sum = 0;
        int64_t bins[100] = {0};
        for (int64_t i = 0; i < n; i++) {
            lo = v[i] < lo ? v[i] : lo;
            hi = v[i] > hi ? v[i] : hi;
            sum += v[i];
            int b = (int)(v[i] * 100);
            bins[b < 0 ? 0 : b > 99 ? 99 : b]++;
        }
        CHECK_MSG(lo >= 0 && hi < 1, "%s: range [%g, %g]", afo_dtype_name(dts[k]), lo, hi);
        /* mean 1/2, sd of the mean 1/sqrt(12 n); rounding to 8 bits shifts bf16 a little */
        double tol = 5 / sqrt(12.0 * (double)n) + (dts[k] == AFO_BFLOAT16 ? 2e-3 : dts[k] == AFO_FLOAT16 ? 3e-4 : 0);
        CHECK_MSG(fabs(sum / (double)n - 0.5) < tol, "%s: mean %g", afo_dtype_name(dts[k]), sum / (double)n);
        if (dts[k] == AFO_FLOAT32 || dts[k] == AFO_FLOAT64) {
            /* chi-square with 99 degrees of freedom: mean 99, sd 14 */
            double chi2 = 0, e = (double)n / 100;
            for (int b = 0; b < 100; b++) chi2 += (bins[b] - e) * (bins[b] - e) / e;
            CHECK_MSG(chi2 < 99 + 5 * 14.07 && chi2 > 99 - 4 * 14.07, "%s: chi2 %g", afo_dtype_name(dts[k]), chi2);
        }
        free(v);
        afo_release(u);
    }
    /* a range whose top is not representable, and a shifted one */
    int64_t m = 100000;
    afo_array *u = afo_random_uniform(key, -2.5, 0.1, 1, &m, AFO_BFLOAT16);
    double *v = read_f64(u), lo = 1, hi = -3;
    for (int64_t i = 0; i < m; i++) lo = v[i] < lo ? v[i] : lo, hi = v[i] > hi ? v[i] : hi;
    CHECK_MSG(lo >= -2.5 && hi < 0.1 && lo < -2.4 && hi > 0.05, "bf16 [-2.5, 0.1): [%g, %g]", lo, hi);
    free(v), afo_release(u), afo_release(key);
}

/* ------------------------------------------------------------ normal */

static void test_normal_stats(void) {
    int64_t n = 1000000;
    afo_array *key = afo_random_key(99);
    struct { afo_dtype dt; double mean, std; } cases[] = {
        {AFO_FLOAT64, 0, 1}, {AFO_FLOAT32, 3, 2}, {AFO_BFLOAT16, -1, 0.5},
    };
    for (int c = 0; c < 3; c++) {
        afo_array *z = afo_random_normal(key, cases[c].mean, cases[c].std, 1, &n, cases[c].dt);
        double *v = read_f64(z), s = 0, s2 = 0, s4 = 0;
        bool finite = true;
        for (int64_t i = 0; i < n; i++) {
            double t = (v[i] - cases[c].mean) / cases[c].std;
            finite &= isfinite(t);
            s += t;
        }
        double mean = s / (double)n;
        for (int64_t i = 0; i < n; i++) {
            double d = (v[i] - cases[c].mean) / cases[c].std - mean;
            s2 += d * d;
            s4 += d * d * d * d;
        }
        double var = s2 / (double)(n - 1);
        /* standard errors: mean 1/sqrt(n); variance sqrt((m4 - var^2) / n), m4
         * estimated (3 for a normal); bf16 rounding adds ~2^-9 relative noise */
        double se_var = sqrt((s4 / (double)n - var * var) / (double)n);
        double extra = cases[c].dt == AFO_BFLOAT16 ? 1e-3 : 0;
        CHECK(finite);
        CHECK_MSG(fabs(mean) < 5 / sqrt((double)n) + extra, "%s: mean %g", afo_dtype_name(cases[c].dt), mean);
        CHECK_MSG(fabs(var - 1) < 5 * se_var + extra, "%s: variance %g (se %g)", afo_dtype_name(cases[c].dt), var,
                  se_var);
        free(v);
        afo_release(z);
    }
    afo_release(key);
}

/* ------------------------------------------------------------ keys */

static void test_keys_and_split(void) {
    afo_array *key = afo_random_key(0x123456789abcdefull);
    uint32_t k[2];
    CHECK(afo_array_read(key, AFO_UINT32, k, sizeof k) == AFO_OK && k[0] == 0x1234567 && k[1] == 0x89abcdef);
    afo_array *s = afo_random_split(key, 5);
    CHECK(s && afo_array_dtype(s) == AFO_UINT32 && afo_array_ndim(s) == 2 && afo_array_shape(s)[0] == 5 &&
          afo_array_shape(s)[1] == 2);
    uint32_t w[10], w2[10];
    CHECK(afo_array_read(s, AFO_UINT32, w, sizeof w) == AFO_OK);
    for (int i = 0; i < 5; i++) {
        CHECK(w[2 * i] != k[0] || w[2 * i + 1] != k[1]);
        for (int j = 0; j < i; j++) CHECK(w[2 * i] != w[2 * j] || w[2 * i + 1] != w[2 * j + 1]);
    }
    afo_array *s2 = afo_random_split(key, 5);
    CHECK(afo_array_read(s2, AFO_UINT32, w2, sizeof w2) == AFO_OK && memcmp(w, w2, sizeof w) == 0);
    /* a lazy child key (a strided row of the split) drives the generators */
    afo_array *lazy = afo_random_split(key, 3);
    afo_array *row = afo_slice_axis(lazy, 0, 2, 3);
    afo_array *child = afo_reshape(row, 1, (int64_t[]){2});
    int64_t n = 16;
    afo_array *a = afo_random_normal(child, 0, 1, 1, &n, AFO_FLOAT32);
    uint32_t k3[2] = {w[4], w[5]};
    afo_array *direct = afo_array_from_data(k3, AFO_UINT32, 1, (int64_t[]){2});
    afo_array *b = afo_random_normal(direct, 0, 1, 1, &n, AFO_FLOAT32);
    CHECK(a && b);
    if (a && b) {
        double *va = read_f64(a), *vb = read_f64(b);
        CHECK(memcmp(va, vb, sizeof(double) * 16) == 0);
        free(va), free(vb);
    }
    afo_array *empty = afo_random_split(key, 0);
    CHECK(empty && afo_array_size(empty) == 0 && afo_eval1(empty) == AFO_OK);
    afo_release(empty), afo_release(a), afo_release(b), afo_release(direct), afo_release(child), afo_release(row);
    afo_release(lazy), afo_release(s), afo_release(s2), afo_release(key);
}

/* ------------------------------------------------------------ categorical */

static void check_frequencies(const char *what, const int32_t *draws, int64_t n, int64_t stride, const double *logits,
                              int k) {
    double z = 0, p[8];
    for (int c = 0; c < k; c++) z += exp(logits[c]);
    for (int c = 0; c < k; c++) p[c] = exp(logits[c]) / z;
    int64_t count[8] = {0}, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t d = draws[i * stride];
        if (d < 0 || d >= k) bad++;
        else count[d]++;
    }
    CHECK(bad == 0);
    for (int c = 0; c < k; c++) {
        double f = (double)count[c] / (double)n, se = sqrt(p[c] * (1 - p[c]) / (double)n);
        CHECK_MSG(fabs(f - p[c]) < 5 * se, "%s: class %d frequency %g, softmax %g (5 se = %g)", what, c, f, p[c],
                  5 * se);
    }
}

static void test_categorical(void) {
    double lg[5] = {0.5, -1.0, 2.0, 0.0, 1.0};
    int64_t five = 5, n = 100000;
    afo_array *key = afo_random_key(2024);
    afo_array *l1 = afo_array_from_data(lg, AFO_FLOAT64, 1, &five);
    /* last axis: logits [n, 5] broadcast from one row */
    afo_array *rows = afo_broadcast_to(l1, 2, (int64_t[]){n, 5});
    afo_array *l32 = afo_astype(rows, AFO_FLOAT32);
    afo_array *c = afo_random_categorical(key, l32, -1);
    CHECK(c && afo_array_dtype(c) == AFO_INT32 && afo_array_ndim(c) == 1 && afo_array_shape(c)[0] == n);
    int32_t *d = malloc(sizeof(int32_t) * (size_t)n);
    CHECK(c && afo_array_read(c, AFO_INT32, d, sizeof(int32_t) * (size_t)n) == AFO_OK);
    check_frequencies("axis -1", d, n, 1, lg, 5);
    /* first axis: logits [5, n] (float64) */
    afo_array *l51 = afo_reshape(l1, 2, (int64_t[]){5, 1});
    afo_array *cols = afo_broadcast_to(l51, 2, (int64_t[]){5, n});
    afo_array *c0 = afo_random_categorical(key, cols, 0);
    CHECK(c0 && afo_array_ndim(c0) == 1 && afo_array_read(c0, AFO_INT32, d, sizeof(int32_t) * (size_t)n) == AFO_OK);
    check_frequencies("axis 0", d, n, 1, lg, 5);
    free(d);
    afo_release(c0), afo_release(cols), afo_release(l51), afo_release(c), afo_release(l32), afo_release(rows), afo_release(l1);
    afo_release(key);
}

/* ------------------------------------------------------------ errors */

static void test_errors(void) {
    int64_t shape[2] = {3, 4}, neg[1] = {-1};
    afo_array *key = afo_random_key(1);
    int32_t ik[2] = {1, 2};
    afo_array *bad_dtype = afo_array_from_data(ik, AFO_INT32, 1, (int64_t[]){2});
    afo_array *bad_shape = afo_zeros(AFO_UINT32, 1, (int64_t[]){3});
    CHECK(!afo_random_uniform(bad_dtype, 0, 1, 2, shape, AFO_FLOAT32) && strstr(afo_last_error(), "uint32 [2]"));
    CHECK(!afo_random_normal(bad_shape, 0, 1, 2, shape, AFO_FLOAT32) && strstr(afo_last_error(), "uint32 [3]"));
    CHECK(!afo_random_split(bad_shape, 2));
    CHECK(!afo_random_split(key, -1));
    CHECK(!afo_random_uniform(key, 0, 1, 2, shape, AFO_INT32) && strstr(afo_last_error(), "floating"));
    CHECK(!afo_random_uniform(key, 1, 1, 2, shape, AFO_FLOAT32) && strstr(afo_last_error(), "low < high"));
    CHECK(!afo_random_uniform(key, 0, INFINITY, 2, shape, AFO_FLOAT32));
    CHECK(!afo_random_uniform(key, 1.001, 1.002, 2, shape, AFO_BFLOAT16) && strstr(afo_last_error(), "no bfloat16"));
    CHECK(!afo_random_normal(key, 0, 1, 1, neg, AFO_FLOAT32) && strstr(afo_last_error(), "negative"));
    CHECK(!afo_random_normal(NULL, 0, 1, 2, shape, AFO_FLOAT32));
    afo_array *l = afo_zeros(AFO_FLOAT32, 2, shape);
    CHECK(!afo_random_categorical(key, l, 2) && strstr(afo_last_error(), "axis 2"));
    CHECK(!afo_random_categorical(bad_dtype, l, 1));
    afo_release(l), afo_release(bad_dtype), afo_release(bad_shape), afo_release(key);
}

int main(void) {
    RUN(test_threefry_known_answers);
    RUN(test_determinism);
    RUN(test_uniform_stats);
    RUN(test_normal_stats);
    RUN(test_keys_and_split);
    RUN(test_categorical);
    RUN(test_errors);
    return test_finish();
}
