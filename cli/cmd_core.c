/* afo selfcheck: the array library end to end. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}


/* --help, --threads N and --device cpu|cuda. Returns 0 to go on, 1 after
 * --help, -1 on bad input. */
static int parse_common(int argc, char **argv, const char *usage) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("%s", usage);
            return 1;
        }
        if (cli_common_option(argc, argv, &i) != 0) {
            fprintf(stderr, "%s", usage);
            return -1;
        }
    }
    return 0;
}

/* Builds a small MLP, differentiates it, and checks one gradient entry
 * against a central difference: the whole stack in one go. */
static afo_array *selfcheck_loss(afo_array *const *p, int n, void *ud) {
    afo_array *x = ud;
    afo_array *h = afo_matmul(x, p[0]);
    afo_array *a = afo_silu(h);
    afo_array *s = afo_softmax(a, -1);
    afo_array *l = afo_logsumexp(s, NULL, 0, 0);
    afo_release(h), afo_release(a), afo_release(s);
    return l;
}

int cmd_selfcheck(int argc, char **argv) {
    int p = parse_common(argc, argv, "usage: afo selfcheck [--threads N] [--device cpu|cuda]\n");
    if (p != 0) return p < 0 ? 2 : 0;
    int64_t xs[2] = {4, 8}, ws[2] = {8, 16};
    double xv[32], wv[128];
    for (int i = 0; i < 32; i++) xv[i] = sin(i * 0.7);
    for (int i = 0; i < 128; i++) wv[i] = cos(i * 0.3) * 0.5;
    afo_array *x = afo_array_from_data(xv, AFO_FLOAT64, 2, xs);
    afo_array *w = afo_array_from_data(wv, AFO_FLOAT64, 2, ws);
    afo_array *loss, *grad;
    if (!x || !w || afo_value_and_grad(selfcheck_loss, x, &w, 1, &loss, &grad) != AFO_OK) return cli_fail("selfcheck");
    afo_array *both[2] = {loss, grad};
    if (afo_eval(both, 2) != AFO_OK) return cli_fail("selfcheck");
    double value, g0, eps = 1e-6, f[2];
    afo_array_item(loss, &value);
    const double *gd = afo_array_data(grad);
    g0 = gd[5];
    for (int s = 0; s < 2; s++) {
        wv[5] += s ? -2 * eps : eps;
        afo_array *w2 = afo_array_from_data(wv, AFO_FLOAT64, 2, ws);
        afo_array *l2 = selfcheck_loss(&w2, 1, x);
        afo_array_item(l2, &f[s]);
        afo_release(w2), afo_release(l2);
    }
    double numeric = (f[0] - f[1]) / (2 * eps), err = fabs(numeric - g0) / fmax(1.0, fabs(numeric));
    char device[160];
    printf("selfcheck on %s\n", cli_device_description(device, sizeof device));
    printf("selfcheck: loss %.6f, dloss/dw[5] %.8f (finite difference %.8f, error %.1e)\n", value, g0, numeric, err);
    afo_memory_stats st;
    afo_get_memory_stats(afo_get_default_device(), &st);
    printf("memory: active %zu B, peak %zu B, cache %zu B\n", st.active, st.peak, st.cache);
    afo_release(x), afo_release(w), afo_release(loss), afo_release(grad);
    if (!(err < 1e-6)) {
        fprintf(stderr, "afo: selfcheck FAILED: gradient error %.2e\n", err);
        return 1;
    }
    printf("selfcheck: ok\n");
    return 0;
}


