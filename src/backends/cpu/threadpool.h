/* A fixed pool of worker threads for the CPU backend's big loops. */
#ifndef AFO_THREADPOOL_H
#define AFO_THREADPOOL_H

#include <stdint.h>

/* fn(ctx, begin, end) is called on disjoint ranges covering [0, n). Ranges
 * are at least `grain` long, so small loops stay on the calling thread.
 * Returns when every range is done. Nested calls run serially. */
typedef void (*afo_range_fn)(void *ctx, int64_t begin, int64_t end);
void afo_parallel_for(int64_t n, int64_t grain, afo_range_fn fn, void *ctx);

/* Like afo_parallel_for with exactly one call per thread: fn(ctx, t, nt). */
typedef void (*afo_thread_fn)(void *ctx, int thread, int nthreads);
void afo_parallel_run(afo_thread_fn fn, void *ctx);

#endif
