/* Helpers every benchmark program shares (header-only: each bench is one
 * executable). */
#ifndef AFO_BENCH_UTIL_H
#define AFO_BENCH_UTIL_H

#include <stdio.h>
#include <time.h>

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* qsort comparator for doubles, ascending. */
static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The 1-minute load average, with a warning when the cores are not idle. */
static inline double bench_check_load(void) {
    double load = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = 0;
        fclose(f);
    }
    if (load > 0.5) fprintf(stderr, "warning: load average %.2f > 0.5; the cores are not idle\n", load);
    return load;
}

#endif
