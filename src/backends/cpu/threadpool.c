#include "backends/cpu/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "afo/base.h"

/* Workers sleep on a condition variable between jobs; a job is published by
 * bumping `generation`. The caller takes part as thread 0. */
typedef struct pool {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    pthread_t *threads;
    int nworkers; /* excluding the caller */
    uint64_t generation;
    int pending;
    afo_thread_fn fn;
    void *ctx;
    int job_threads;
} pool;

static pool g_pool = {.lock = PTHREAD_MUTEX_INITIALIZER,
                      .wake = PTHREAD_COND_INITIALIZER,
                      .done = PTHREAD_COND_INITIALIZER};
static int g_threads_wanted; /* 0: default */
static _Thread_local int t_in_parallel;
static pthread_mutex_t g_submit = PTHREAD_MUTEX_INITIALIZER;

static void *worker_main(void *arg) {
    int index = (int)(intptr_t)arg;
    uint64_t seen = 0;
    t_in_parallel = 1;
    for (;;) {
        pthread_mutex_lock(&g_pool.lock);
        while (g_pool.generation == seen) pthread_cond_wait(&g_pool.wake, &g_pool.lock);
        seen = g_pool.generation;
        afo_thread_fn fn = g_pool.fn;
        void *ctx = g_pool.ctx;
        int nt = g_pool.job_threads;
        pthread_mutex_unlock(&g_pool.lock);
        if (index < nt) fn(ctx, index, nt);
        pthread_mutex_lock(&g_pool.lock);
        if (--g_pool.pending == 0) pthread_cond_signal(&g_pool.done);
        pthread_mutex_unlock(&g_pool.lock);
    }
    return NULL;
}

static int default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void afo_set_threads(int n) { g_threads_wanted = n > 0 ? n : 0; }

int afo_get_threads(void) { return g_threads_wanted > 0 ? g_threads_wanted : default_threads(); }

/* Grows the pool to n-1 workers (never shrinks: idle workers only sleep). */
static void ensure_workers(int n) {
    int want = n - 1;
    if (want <= g_pool.nworkers) return;
    pthread_t *grown = realloc(g_pool.threads, sizeof(pthread_t) * (size_t)want);
    if (!grown) return;
    g_pool.threads = grown;
    while (g_pool.nworkers < want) {
        /* workers are numbered from 1; the caller is thread 0 */
        if (pthread_create(&g_pool.threads[g_pool.nworkers], NULL, worker_main,
                           (void *)(intptr_t)(g_pool.nworkers + 1)) != 0)
            break;
        pthread_detach(g_pool.threads[g_pool.nworkers]);
        g_pool.nworkers++;
    }
}

void afo_parallel_run(afo_thread_fn fn, void *ctx) {
    int nt = afo_get_threads();
    if (nt <= 1 || t_in_parallel) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&g_submit);
    pthread_mutex_lock(&g_pool.lock);
    ensure_workers(nt);
    if (nt > g_pool.nworkers + 1) nt = g_pool.nworkers + 1;
    g_pool.fn = fn;
    g_pool.ctx = ctx;
    g_pool.job_threads = nt;
    g_pool.pending = g_pool.nworkers;
    g_pool.generation++;
    pthread_cond_broadcast(&g_pool.wake);
    pthread_mutex_unlock(&g_pool.lock);

    t_in_parallel = 1;
    fn(ctx, 0, nt);
    t_in_parallel = 0;

    pthread_mutex_lock(&g_pool.lock);
    while (g_pool.pending > 0) pthread_cond_wait(&g_pool.done, &g_pool.lock);
    pthread_mutex_unlock(&g_pool.lock);
    pthread_mutex_unlock(&g_submit);
}

typedef struct range_job {
    afo_range_fn fn;
    void *ctx;
    int64_t n;
    int64_t pieces;
} range_job;

static void run_range(void *arg, int t, int nt) {
    range_job *j = arg;
    for (int64_t p = t; p < j->pieces; p += nt) {
        int64_t begin = j->n * p / j->pieces, end = j->n * (p + 1) / j->pieces;
        if (begin < end) j->fn(j->ctx, begin, end);
    }
}

void afo_parallel_for(int64_t n, int64_t grain, afo_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (n <= grain || afo_get_threads() <= 1 || t_in_parallel) {
        fn(ctx, 0, n);
        return;
    }
    int64_t pieces = (n + grain - 1) / grain;
    if (pieces > afo_get_threads()) pieces = afo_get_threads();
    range_job j = {fn, ctx, n, pieces};
    afo_parallel_run(run_range, &j);
}
