/* AFO_PROFILE=1: host time spent per op (input moves, kernel or launch) and
 * in whole evaluations, printed to stderr when the process exits. For
 * finding where a step's host time goes; on a GPU the kernels themselves
 * run asynchronously and are not in these figures. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"

static struct {
    bool on;
    pthread_mutex_t lock;
    double op_seconds[AFO_OP_COUNT][AFO_DEVICE_COUNT];
    int64_t op_calls[AFO_OP_COUNT][AFO_DEVICE_COUNT];
    double eval_seconds;
    int64_t evals, nodes;
    double mv_bytes, mv_seconds, mv_first;
    int64_t mv_jobs;
} g_prof = {.lock = PTHREAD_MUTEX_INITIALIZER};
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

double afo_profile_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void report(void) {
    fprintf(stderr, "afo profile: %lld evaluations, %lld nodes, %.3f s in evaluation\n", (long long)g_prof.evals,
            (long long)g_prof.nodes, g_prof.eval_seconds);
    fprintf(stderr, "%-22s %-6s %10s %12s %10s\n", "op", "device", "calls", "total ms", "us/call");
    for (int op = 0; op < AFO_OP_COUNT; op++)
        for (int d = 0; d < AFO_DEVICE_COUNT; d++)
            if (g_prof.op_calls[op][d])
                fprintf(stderr, "%-22s %-6s %10lld %12.2f %10.2f\n", afo_op_get((afo_op)op)->name,
                        afo_device_name((afo_device)d), (long long)g_prof.op_calls[op][d],
                        1e3 * g_prof.op_seconds[op][d], 1e6 * g_prof.op_seconds[op][d] / (double)g_prof.op_calls[op][d]);
    /* the rate to hold against the machine's read bandwidth: matvec jobs
     * took 85-95% of a CPU decode step of a 1B model (docs/PERFORMANCE.md),
     * so their rate, not the step's, says how near the kernels are to it */
    if (g_prof.mv_jobs)
        fprintf(stderr,
                "matvec jobs: %lld, %.1f MB, %.3f s: %.2f GB/s; %.2f GB/s until the first thread ran out of "
                "rows (the rest, %.1f%% of the jobs' time, the last blocks)\n",
                (long long)g_prof.mv_jobs, 1e-6 * g_prof.mv_bytes, g_prof.mv_seconds,
                1e-9 * g_prof.mv_bytes / g_prof.mv_seconds, 1e-9 * g_prof.mv_bytes / g_prof.mv_first,
                100 * (1 - g_prof.mv_first / g_prof.mv_seconds));
}

static void init(void) {
    const char *env = getenv("AFO_PROFILE");
    g_prof.on = env && *env && *env != '0';
    if (g_prof.on) atexit(report);
}

bool afo_profile_enabled(void) {
    pthread_once(&g_once, init);
    return g_prof.on;
}

void afo_profile_reset(void) {
    pthread_mutex_lock(&g_prof.lock);
    memset(g_prof.op_seconds, 0, sizeof g_prof.op_seconds);
    memset(g_prof.op_calls, 0, sizeof g_prof.op_calls);
    g_prof.eval_seconds = g_prof.mv_bytes = g_prof.mv_seconds = g_prof.mv_first = 0;
    g_prof.evals = g_prof.nodes = g_prof.mv_jobs = 0;
    pthread_mutex_unlock(&g_prof.lock);
}

void afo_profile_op(afo_op op, afo_device d, double seconds) {
    pthread_mutex_lock(&g_prof.lock);
    g_prof.op_seconds[op][d] += seconds;
    g_prof.op_calls[op][d]++;
    pthread_mutex_unlock(&g_prof.lock);
}

void afo_profile_matvec(double bytes, double seconds, double first_done) {
    pthread_mutex_lock(&g_prof.lock);
    g_prof.mv_jobs++;
    g_prof.mv_bytes += bytes;
    g_prof.mv_seconds += seconds;
    g_prof.mv_first += first_done;
    pthread_mutex_unlock(&g_prof.lock);
}

void afo_profile_eval(size_t nodes, double seconds) {
    pthread_mutex_lock(&g_prof.lock);
    g_prof.evals++;
    g_prof.nodes += (int64_t)nodes;
    g_prof.eval_seconds += seconds;
    pthread_mutex_unlock(&g_prof.lock);
}
