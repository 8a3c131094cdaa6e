/* Each SIMD level's vectorised math against the scalar reference (libm), on
 * random inputs, special values and every tail length, outputs poisoned. */
#include <math.h>
#include <string.h>

#include "backends/cpu/vmath.h"
#include "support/test.h"

/* |got - ref| <= 4 ulp of ref (float32, 2^-21 relative), or two subnormal
 * quanta in the subnormal range. */
static int agrees(float got, float ref) {
    if (isnan(ref)) return isnan(got);
    if (isinf(ref)) return got == ref;
    return fabsf(got - ref) <= 4.8e-7f * fabsf(ref) + 3e-45f;
}

static void check_level(afo_cpu_level level, const afo_vmath *v) {
    enum { N = 1037 };
    static float x[N], y[N], ref[N];
    for (int i = 0; i < N; i++) x[i] = (float)test_uniform(-30, 30);
    const float special[] = {0.0f, -0.0f, 88.0f, 88.5f, 88.72f, 88.73f, -87.0f, -87.5f, -100.0f, -103.9f, -104.0f, 1e-30f, INFINITY, -INFINITY, NAN, 0.5f};
    memcpy(x, special, sizeof special);
    struct { const char *name; void (*fn)(int64_t, float *, const float *); void (*rf)(int64_t, float *, const float *); } fns[] = {
        {"exp", v->exp, afo_vmath_scalar.exp}, {"sigmoid", v->sigmoid, afo_vmath_scalar.sigmoid},
        {"silu", v->silu, afo_vmath_scalar.silu},
    };
    for (size_t k = 0; k < 3; k++) {
        for (int n = 0; n <= 40; n++) { /* every tail length, from a shifted start */
            for (int i = 0; i < N; i++) y[i] = NAN;
            fns[k].fn(n, y, x + 1);
            fns[k].rf(n, ref, x + 1);
            int bad = 0;
            for (int i = 0; i < n; i++) bad += !agrees(y[i], ref[i]);
            CHECK_MSG(bad == 0 && (n == N || isnan(y[n])), "%s %s n=%d: %d mismatches", afo_cpu_level_name(level), fns[k].name, n, bad);
        }
        for (int i = 0; i < N; i++) y[i] = NAN;
        fns[k].fn(N, y, x);
        fns[k].rf(N, ref, x);
        int bad = 0;
        for (int i = 0; i < N; i++)
            if (!agrees(y[i], ref[i]) && bad++ < 3)
                fprintf(stderr, "%s %s(%g): %.9g vs %.9g\n", afo_cpu_level_name(level), fns[k].name, x[i], y[i], ref[i]);
        CHECK_MSG(bad == 0, "%s %s: %d mismatches", afo_cpu_level_name(level), fns[k].name, bad);
    }
    /* softmax over rows of many lengths; sums to 1 */
    for (int n = 1; n <= 300; n += 23) {
        for (int i = 0; i < n; i++) x[i] = (float)test_uniform(-20, 20);
        for (int i = 0; i < N; i++) y[i] = NAN;
        v->softmax(n, y, x);
        afo_vmath_scalar.softmax(n, ref, x);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += !(fabsf(y[i] - ref[i]) <= 1e-6f * fabsf(ref[i]) + 1e-12f);
        CHECK_MSG(bad == 0 && isnan(y[n]), "%s softmax n=%d: %d mismatches", afo_cpu_level_name(level), n, bad);
    }
}

static void test_levels(void) {
    int tested = 0;
    for (int level = 0; level < AFO_CPU_LEVEL_COUNT; level++) {
        const afo_vmath *v = afo_vmath_for_level((afo_cpu_level)level);
        if (!v) {
            fprintf(stderr, "SKIP: vmath level %s not supported here\n", afo_cpu_level_name((afo_cpu_level)level));
            continue;
        }
        check_level((afo_cpu_level)level, v);
        tested++;
    }
    CHECK(tested >= 1);
}

int main(void) {
    test_seed(11);
    RUN(test_levels);
    return test_finish();
}
