/* Sampling: greedy, temperature, top-k, top-p, min-p and penalties against
 * the distributions they define, determinism by seed, option validation. */
#include <afo/afo.h>
#include <string.h>

#include "support/test.h"

/* Draws n samples and checks each id's frequency against expected[] within
 * 5 standard errors (plus zero where expected is 0). */
static void check_frequencies(const char *name, afo_sampler_options o, const float *logits, int vocab,
                              const double *expected, int n) {
    afo_sampler *s = afo_sampler_new(&o, vocab);
    CHECK(s != NULL);
    if (!s) return;
    int counts[16] = {0}, invalid = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = afo_sampler_sample(s, logits, NULL, 0);
        if (id >= 0 && id < vocab) counts[id]++;
        else invalid++;
    }
    CHECK(invalid == 0);
    for (int v = 0; v < vocab; v++) {
        double f = (double)counts[v] / n, sd = sqrt(expected[v] * (1 - expected[v]) / n);
        CHECK_MSG(fabs(f - expected[v]) <= 5 * sd + (expected[v] == 0 ? 0 : 1e-9), "%s: id %d frequency %.4f, expected %.4f",
                  name, v, f, expected[v]);
    }
    afo_sampler_free(s);
}

static void test_greedy_and_ties(void) {
    afo_sampler_options o = afo_sampler_defaults();
    afo_sampler *s = afo_sampler_new(&o, 5);
    float l[5] = {0.1f, 3.0f, -2.0f, 3.0f, NAN};
    CHECK(afo_sampler_sample(s, l, NULL, 0) == 1);
    afo_sampler_free(s);
}

static void test_temperature_and_filters(void) {
    /* probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1 */
    float l[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    afo_sampler_options o = afo_sampler_defaults();
    o.temperature = 1;
    o.seed = 3;
    double full[4] = {0.5, 0.3, 0.15, 0.05};
    check_frequencies("temperature 1", o, l, 4, full, 40000);
    o.temperature = 2; /* p ~ sqrt(p) */
    double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.15) + sqrt(0.05);
    double hot[4] = {sqrt(0.5) / z, sqrt(0.3) / z, sqrt(0.15) / z, sqrt(0.05) / z};
    check_frequencies("temperature 2", o, l, 4, hot, 40000);
    o.temperature = 1;
    o.top_k = 2;
    double k2[4] = {0.5 / 0.8, 0.3 / 0.8, 0, 0};
    check_frequencies("top_k 2", o, l, 4, k2, 40000);
    o.top_k = 0;
    o.top_p = 0.7f; /* 0.5 < 0.7, 0.8 >= 0.7: keeps two */
    check_frequencies("top_p 0.7", o, l, 4, k2, 40000);
    o.top_p = 1;
    o.min_p = 0.35f; /* keeps p >= 0.175 */
    check_frequencies("min_p 0.35", o, l, 4, k2, 40000);
    o.min_p = 0.2f; /* keeps p >= 0.1: three */
    double m3[4] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0};
    check_frequencies("min_p 0.2", o, l, 4, m3, 40000);
}

static void test_penalties(void) {
    afo_sampler_options o = afo_sampler_defaults();
    o.repetition_penalty = 2;
    afo_sampler *s = afo_sampler_new(&o, 3);
    float l[3] = {2.0f, 1.9f, -1.0f};
    int32_t hist[2] = {0, 0};
    CHECK(afo_sampler_sample(s, l, hist, 2) == 1); /* 2/2 = 1 < 1.9 */
    float neg[3] = {-0.5f, -0.6f, -3.0f};
    CHECK(afo_sampler_sample(s, neg, hist, 1) == 1); /* -0.5*2 = -1 < -0.6 */
    afo_sampler_free(s);
    o = afo_sampler_defaults();
    o.frequency_penalty = 0.5f;
    o.presence_penalty = 0.1f;
    s = afo_sampler_new(&o, 3);
    float f[3] = {3.0f, 2.0f, 0.0f};
    int32_t h3[3] = {0, 0, 1}; /* id 0: 3 - 0.1 - 1.0 = 1.9; id 1: 2 - 0.1 - 0.5 = 1.4 */
    CHECK(afo_sampler_sample(s, f, h3, 3) == 0);
    int32_t h4[4] = {0, 0, 0, 1}; /* id 0: 3 - 0.1 - 1.5 = 1.4 ties id 1 -> lower id */
    CHECK(afo_sampler_sample(s, f, h4, 4) == 0);
    int32_t h5[5] = {0, 0, 0, 0, 1}; /* id 0: 0.9 < 1.4 */
    CHECK(afo_sampler_sample(s, f, h5, 5) == 1);
    afo_sampler_free(s);
    o.penalty_window = 1; /* only the last id (1) counts */
    s = afo_sampler_new(&o, 3);
    CHECK(afo_sampler_sample(s, f, h5, 5) == 0);
    int32_t bad = 7;
    CHECK(afo_sampler_sample(s, f, &bad, 1) == -1 && strstr(afo_last_error(), "outside the vocabulary"));
    afo_sampler_free(s);
}

static void test_seed_determinism(void) {
    float l[8] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
    afo_sampler_options o = afo_sampler_defaults();
    o.temperature = 1;
    o.seed = 42;
    afo_sampler *a = afo_sampler_new(&o, 8), *b = afo_sampler_new(&o, 8);
    o.seed = 43;
    afo_sampler *c = afo_sampler_new(&o, 8);
    int same = 1, differ = 0;
    for (int i = 0; i < 64; i++) {
        int32_t x = afo_sampler_sample(a, l, NULL, 0), y = afo_sampler_sample(b, l, NULL, 0), z = afo_sampler_sample(c, l, NULL, 0);
        same &= x == y;
        differ |= x != z;
    }
    CHECK(same && differ);
    afo_sampler_free(a), afo_sampler_free(b), afo_sampler_free(c);
}

static void test_invalid_options(void) {
    afo_sampler_options o = afo_sampler_defaults();
    o.temperature = -1;
    CHECK(!afo_sampler_new(&o, 4) && strstr(afo_last_error(), "temperature"));
    o = afo_sampler_defaults();
    o.top_p = 0;
    CHECK(!afo_sampler_new(&o, 4) && strstr(afo_last_error(), "top_p"));
    o = afo_sampler_defaults();
    o.min_p = 1.5f;
    CHECK(!afo_sampler_new(&o, 4) && strstr(afo_last_error(), "min_p"));
    o = afo_sampler_defaults();
    o.repetition_penalty = 0;
    CHECK(!afo_sampler_new(&o, 4) && strstr(afo_last_error(), "repetition_penalty"));
    o = afo_sampler_defaults();
    o.top_k = -2;
    CHECK(!afo_sampler_new(&o, 4) && strstr(afo_last_error(), "top_k"));
    CHECK(!afo_sampler_new(NULL, 4));
    o = afo_sampler_defaults();
    CHECK(!afo_sampler_new(&o, 0));
    o.temperature = 1;
    afo_sampler *s = afo_sampler_new(&o, 2);
    float l[2] = {-INFINITY, -INFINITY};
    CHECK(afo_sampler_sample(s, l, NULL, 0) == -1);
    afo_sampler_free(s);
}

int main(void) {
    RUN(test_greedy_and_ties);
    RUN(test_temperature_and_filters);
    RUN(test_penalties);
    RUN(test_seed_determinism);
    RUN(test_invalid_options);
    return test_finish();
}
