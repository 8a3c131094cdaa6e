#define _GNU_SOURCE /* sched_getaffinity, sched_getcpu, pthread_setaffinity_np */
#include "backends/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "afo/base.h"

/* A job is published by bumping `generation`; the caller takes part as
 * thread 0. Decoding runs hundreds of small parallel ops per token, a few
 * microseconds apart, so workers spin on the generation for a while before
 * sleeping on the condition variable, and the caller spins for the others
 * to finish: a futex round trip per op would cost more than the op. */
typedef struct pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t *threads;
    int nworkers;             /* excluding the caller; grows under lock */
    atomic_uint_fast64_t generation;
    atomic_int pending;       /* workers still running the current job */
    atomic_int sleepers;      /* workers blocked (or about to block) on `wake` */
    afo_thread_fn fn;
    void *ctx;
    int job_threads;
    int cpus;            /* CPUs the process may use, read when workers are made */
    atomic_bool crowded; /* the current jobs have more threads than cpus */
} pool;

static pool g_pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};
static int g_threads_wanted; /* 0: default */
static _Thread_local int t_in_parallel;
static pthread_mutex_t g_submit = PTHREAD_MUTEX_INITIALIZER;

/* About 50-200 us of polling on current CPUs before a worker sleeps. */
enum { SPIN_ROUNDS = 20000 };

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* With more threads than CPUs, a spinning waiter keeps the CPU from the
 * thread it waits for: on the 2-core VM an attention call took 0.6 ms at
 * 3 threads and 1.1 ms at 4 (25 us at 2), each wait lasting until a time
 * slice ran out. Crowded, the waits give the CPU away every few rounds
 * instead (not otherwise: yielding threads also keep the kernel from
 * spreading them over the CPUs). */
enum { YIELD_EVERY = 64 };

static inline void spin_once(int round) {
    if (atomic_load_explicit(&g_pool.crowded, memory_order_relaxed) && round % YIELD_EVERY == YIELD_EVERY - 1)
        sched_yield();
    else
        cpu_relax();
}

/* Waits until the generation differs from `seen`; returns the new one. */
static uint64_t wait_for_job(uint64_t seen) {
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        uint64_t g = atomic_load_explicit(&g_pool.generation, memory_order_acquire);
        if (g != seen) return g;
        spin_once(i);
    }
    pthread_mutex_lock(&g_pool.lock);
    atomic_fetch_add(&g_pool.sleepers, 1);
    uint64_t g;
    while ((g = atomic_load(&g_pool.generation)) == seen) pthread_cond_wait(&g_pool.wake, &g_pool.lock);
    atomic_fetch_sub(&g_pool.sleepers, 1);
    pthread_mutex_unlock(&g_pool.lock);
    return g;
}

typedef struct worker_start {
    int index;
    uint64_t generation; /* the last job published before this worker existed */
    int creator_cpu;     /* where the caller ran when it made this worker, or -1 */
} worker_start;

/* A new thread starts on its creator's CPU, and the caller and a worker
 * spinning for each other on one CPU hold each other up: on the 2-core
 * development VM a fresh process's first ~80 parallel calls took about 1.1
 * ms each (a decode step's attention, 17 us once apart) until the kernel
 * moved the worker, which made the first token late. So a worker leaves
 * its creator's CPU once, by excluding it from its affinity for a moment,
 * and then may run anywhere the process may, as before. */
static void leave_cpu(int cpu) {
#ifdef __linux__
    cpu_set_t allowed, elsewhere;
    if (cpu < 0 || sched_getaffinity(0, sizeof allowed, &allowed) != 0 || !CPU_ISSET(cpu, &allowed) ||
        CPU_COUNT(&allowed) < 2)
        return;
    elsewhere = allowed;
    CPU_CLR(cpu, &elsewhere);
    if (pthread_setaffinity_np(pthread_self(), sizeof elsewhere, &elsewhere) == 0)
        pthread_setaffinity_np(pthread_self(), sizeof allowed, &allowed);
#else
    (void)cpu;
#endif
}

static void *worker_main(void *arg) {
    worker_start start = *(worker_start *)arg;
    free(arg);
    leave_cpu(start.creator_cpu);
    int index = start.index;
    uint64_t seen = start.generation;
    t_in_parallel = 1;
    for (;;) {
        seen = wait_for_job(seen);
        /* the job fields were written before the generation (release) */
        afo_thread_fn fn = g_pool.fn;
        void *ctx = g_pool.ctx;
        int nt = g_pool.job_threads;
        if (index < nt) fn(ctx, index, nt);
        atomic_fetch_sub_explicit(&g_pool.pending, 1, memory_order_release);
    }
    return NULL;
}

static int current_cpu(void) {
#ifdef __linux__
    return sched_getcpu();
#else
    return -1;
#endif
}

/* The CPUs this process may run on (a container's cpuset, taskset), not
 * all the machine's: more threads than CPUs would spin against each other. */
static int default_threads(void) {
#ifdef __linux__
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 0) return CPU_COUNT(&allowed);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void afo_set_threads(int n) { g_threads_wanted = n > 0 ? n : 0; }

int afo_get_threads(void) { return g_threads_wanted > 0 ? g_threads_wanted : default_threads(); }

/* Grows the pool to n-1 workers (never shrinks: idle workers only sleep).
 * Called with g_submit held, between jobs. */
static void ensure_workers(int n) {
    int want = n - 1;
    if (want <= g_pool.nworkers) return;
    g_pool.cpus = default_threads();
    pthread_t *grown = realloc(g_pool.threads, sizeof(pthread_t) * (size_t)want);
    if (!grown) return;
    g_pool.threads = grown;
    while (g_pool.nworkers < want) {
        /* workers are numbered from 1 (the caller is thread 0) and wait for
         * the job after the current one, however late they start */
        worker_start *start = malloc(sizeof *start);
        if (!start) break;
        *start = (worker_start){g_pool.nworkers + 1, atomic_load(&g_pool.generation), current_cpu()};
        if (pthread_create(&g_pool.threads[g_pool.nworkers], NULL, worker_main, start) != 0) {
            free(start);
            break;
        }
        pthread_detach(g_pool.threads[g_pool.nworkers]);
        g_pool.nworkers++;
    }
}

/* afo_parallel_run with the thread count read by the caller (by default
 * a system call, which afo_parallel_for makes once for both). */
static void run_threads(afo_thread_fn fn, void *ctx, int nt) {
    if (nt <= 1 || t_in_parallel) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&g_submit);
    ensure_workers(nt);
    if (nt > g_pool.nworkers + 1) nt = g_pool.nworkers + 1;
    atomic_store_explicit(&g_pool.crowded, nt > g_pool.cpus, memory_order_relaxed);
    g_pool.fn = fn;
    g_pool.ctx = ctx;
    g_pool.job_threads = nt;
    atomic_store_explicit(&g_pool.pending, g_pool.nworkers, memory_order_relaxed);
    /* sequentially consistent with the workers' sleepers++ / generation
     * load, so either they see the new job or we see them asleep */
    atomic_fetch_add(&g_pool.generation, 1);
    if (atomic_load(&g_pool.sleepers) > 0) {
        pthread_mutex_lock(&g_pool.lock);
        pthread_cond_broadcast(&g_pool.wake);
        pthread_mutex_unlock(&g_pool.lock);
    }

    t_in_parallel = 1;
    fn(ctx, 0, nt);
    t_in_parallel = 0;

    for (int spins = 0; atomic_load_explicit(&g_pool.pending, memory_order_acquire) > 0; spins++) {
        if (spins < SPIN_ROUNDS) spin_once(spins);
        else sched_yield();
    }
    pthread_mutex_unlock(&g_submit);
}

void afo_parallel_run(afo_thread_fn fn, void *ctx) { run_threads(fn, ctx, afo_get_threads()); }

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
    const int threads = afo_get_threads(); /* by default a system call: once */
    if (n <= grain || threads <= 1 || t_in_parallel) {
        fn(ctx, 0, n);
        return;
    }
    int64_t pieces = (n + grain - 1) / grain;
    if (pieces > threads) pieces = threads;
    range_job j = {fn, ctx, n, pieces};
    run_threads(run_range, &j, threads);
}
