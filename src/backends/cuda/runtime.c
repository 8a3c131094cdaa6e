/* The CUDA device behind the backend interface: one GPU (device 0, or
 * $AFO_CUDA_DEVICE), one stream, cudaMalloc'd memory (never managed memory:
 * data moves when afo moves it, and every move is counted). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "backends/cuda/core_kernels.h"
#include "backends/cuda/cuda.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_device = -1;
static char g_why[256];
static cudaStream_t g_stream;

/* Host→device copies larger than this go through pinned staging buffers,
 * two of them so filling one overlaps the DMA of the other. */
#define STAGE_BYTES ((size_t)8 << 20)
static void *g_stage[2];
static cudaEvent_t g_stage_done[2];
static pthread_mutex_t g_stage_lock = PTHREAD_MUTEX_INITIALIZER;

afo_status afo_cuda_status(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return AFO_OK;
    /* the runtime also keeps the error as its "last error", which the next
     * launch check would report again: it is handled here */
    cudaGetLastError();
    return afo_error(e == cudaErrorMemoryAllocation ? AFO_ERR_OUT_OF_MEMORY : AFO_ERR_INTERNAL, "CUDA %s: %s", what,
                     cudaGetErrorString(e));
}

afo_status afo_cuda_launched(const char *op) { return afo_cuda_status(cudaGetLastError(), op); }

cudaStream_t afo_cuda_stream(void) { return g_stream; }

/* Completed waits for the whole stream (afo_buffer.queued_at), and whether
 * a recording was launched since the last: its kernels write buffers
 * stamped when it was captured, so until the wait none counts as settled. */
static _Atomic uint64_t g_synchronizations;
static _Atomic bool g_replayed;

static afo_status drain(const char *what) {
    AFO_TRY(afo_cuda_status(cudaStreamSynchronize(g_stream), what));
    g_replayed = false;
    g_synchronizations++;
    return AFO_OK;
}

int afo_cuda_multiprocessors(void) {
    static int count;
    if (!count) {
        int dev = 0, n = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
            cudaGetLastError();
            n = 1;
        }
        count = n;
    }
    return count;
}

static void *cuda_alloc(size_t nbytes) {
    void *p = NULL;
    if (cudaMalloc(&p, nbytes) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free error so later calls see their own */
        return NULL;
    }
    return p;
}

static void cuda_free(void *p) { cudaFree(p); }

static afo_status upload_staged(char *dst, const char *src, size_t nbytes) {
    afo_status st = AFO_OK;
    pthread_mutex_lock(&g_stage_lock);
    for (size_t done = 0, i = 0; done < nbytes && st == AFO_OK; done += STAGE_BYTES, i ^= 1) {
        size_t n = nbytes - done < STAGE_BYTES ? nbytes - done : STAGE_BYTES;
        st = afo_cuda_status(cudaEventSynchronize(g_stage_done[i]), "waiting for a staging buffer");
        if (st != AFO_OK) break;
        memcpy(g_stage[i], src + done, n);
        st = afo_cuda_status(cudaMemcpyAsync(dst + done, g_stage[i], n, cudaMemcpyHostToDevice, g_stream), "upload");
        if (st == AFO_OK) st = afo_cuda_status(cudaEventRecord(g_stage_done[i], g_stream), "upload event");
    }
    pthread_mutex_unlock(&g_stage_lock);
    return st;
}

/* Small uploads (token ids, scalars) go through a pinned ring: a copy from
 * pageable memory costs the host a synchronous staging step, and one being
 * recorded into a CUDA graph must read memory that is still there when the
 * graph runs. A slot is reused only after the work queued before its
 * previous round has finished (one event per round). */
#define RING_BYTES ((size_t)4 << 20)
#define RING_MAX_COPY ((size_t)64 << 10)
static char *g_ring;
static size_t g_ring_used;
static cudaEvent_t g_ring_round;
static bool g_ring_round_pending;
static pthread_mutex_t g_ring_lock = PTHREAD_MUTEX_INITIALIZER;

static afo_status upload_ring(void *dst, const void *src, size_t nbytes) {
    pthread_mutex_lock(&g_ring_lock);
    size_t at = (g_ring_used + 255) & ~(size_t)255;
    afo_status st = AFO_OK;
    if (at + nbytes > RING_BYTES) {
        if (g_ring_round_pending) st = afo_cuda_status(cudaEventSynchronize(g_ring_round), "upload ring");
        if (st == AFO_OK) st = afo_cuda_status(cudaEventRecord(g_ring_round, g_stream), "upload ring");
        g_ring_round_pending = true;
        at = 0;
    }
    if (st == AFO_OK) {
        memcpy(g_ring + at, src, nbytes);
        g_ring_used = at + nbytes;
        st = afo_cuda_status(cudaMemcpyAsync(dst, g_ring + at, nbytes, cudaMemcpyHostToDevice, g_stream), "upload");
    }
    pthread_mutex_unlock(&g_ring_lock);
    return st;
}

/* A recording: its graph, and the pinned bytes that the uploads recorded
 * into it copy from. A replayed graph copies them again, so they stay as
 * they were captured, apart from the ring, until the recording goes. */
#define RECORDED_UPLOAD_BYTES ((size_t)1 << 20)
typedef struct cuda_recording {
    cudaGraphExec_t exec;
    char *pinned;
    size_t used;
} cuda_recording;
static cuda_recording *g_capturing; /* the recording open on the stream, if any */

static afo_status upload_recorded(void *dst, const void *src, size_t nbytes) {
    cuda_recording *r = g_capturing;
    size_t at = (r->used + 255) & ~(size_t)255;
    if (at + nbytes > RECORDED_UPLOAD_BYTES)
        return afo_error(AFO_ERR_UNSUPPORTED, "CUDA recording: a recorded step uploads more than %zu bytes",
                         RECORDED_UPLOAD_BYTES);
    memcpy(r->pinned + at, src, nbytes);
    r->used = at + nbytes;
    return afo_cuda_status(cudaMemcpyAsync(dst, r->pinned + at, nbytes, cudaMemcpyHostToDevice, g_stream), "upload");
}

static afo_status cuda_upload(void *dst, const void *src, size_t nbytes) {
    if (nbytes <= AFO_CUDA_SMALL_COPY) return afo_cuda_status(afo_cuda_put_small(dst, src, nbytes, g_stream), "upload");
    if (g_capturing) return upload_recorded(dst, src, nbytes);
    if (nbytes <= RING_MAX_COPY && g_ring) return upload_ring(dst, src, nbytes);
    if (nbytes > STAGE_BYTES && g_stage[1]) return upload_staged(dst, src, nbytes);
    /* from pageable memory the driver stages the bytes before returning, so
     * the source may be freed right after */
    return afo_cuda_status(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, g_stream), "upload");
}

/* Recording: the stream's work between begin and end becomes a CUDA graph.
 * Relaxed mode lets the pool cudaMalloc a buffer it has not cached yet. The
 * stream is drained first: the last launch may still read the pinned
 * uploads that this capture overwrites. */
static afo_status cuda_record_begin(void **rec) {
    cuda_recording *r = *rec;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return afo_error(AFO_ERR_OUT_OF_MEMORY, "CUDA recording: out of memory");
        if (cudaMallocHost((void **)&r->pinned, RECORDED_UPLOAD_BYTES) != cudaSuccess) {
            free(r);
            return afo_cuda_status(cudaGetLastError(), "pinned memory for a recording");
        }
        *rec = r;
    }
    AFO_TRY(drain("begin recording"));
    r->used = 0;
    AFO_TRY(afo_cuda_status(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeRelaxed), "begin recording"));
    g_capturing = r;
    return AFO_OK;
}

/* Queues the recording's graph; until the next wait nothing is settled. */
static afo_status launch_graph(cuda_recording *r, const char *what) {
    g_replayed = true;
    return afo_cuda_status(cudaGraphLaunch(r->exec, g_stream), what);
}

/* Ends the capture and launches it: through the graph made last time,
 * updated in place when the kernels and their order are unchanged (only
 * arguments and grid sizes differ), else through a new instantiation. */
static afo_status cuda_record_end(void **rec, int *instantiated, bool discard) {
    cuda_recording *r = *rec;
    g_capturing = NULL;
    cudaGraph_t graph = NULL;
    afo_status st = afo_cuda_status(cudaStreamEndCapture(g_stream, &graph), "end recording");
    if (st != AFO_OK || discard) {
        if (graph) cudaGraphDestroy(graph);
        return st;
    }
    *instantiated = 0;
    if (r->exec) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(r->exec, graph, &info) != cudaSuccess) {
            cudaGetLastError();
            cudaGraphExecDestroy(r->exec);
            r->exec = NULL;
        }
    }
    if (!r->exec) {
        st = afo_cuda_status(cudaGraphInstantiate(&r->exec, graph, 0), "instantiate recording");
        *instantiated = st == AFO_OK;
    }
    cudaGraphDestroy(graph);
    if (st != AFO_OK) {
        r->exec = NULL;
        return st;
    }
    return launch_graph(r, "launch recording");
}

static afo_status cuda_replay(void *rec) { return launch_graph(rec, "replay recording"); }

static void cuda_record_free(void *rec) {
    cuda_recording *r = rec;
    if (!r) return;
    drain("end of a recording"); /* a launch may still read the pinned bytes */
    if (r->exec) cudaGraphExecDestroy(r->exec);
    cudaFreeHost(r->pinned);
    free(r);
}

static afo_status cuda_download(void *dst, const void *src, size_t nbytes) {
    AFO_TRY(afo_cuda_status(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, g_stream), "download"));
    return drain("download");
}

/* Small reads that wait for their own copy only: mapped pinned slots that
 * a kernel writes, an event each, used in turn. */
_Static_assert(AFO_READ_BYTES <= AFO_CUDA_SMALL_COPY, "a small read is a small copy");
static char *g_read_slots, *g_read_slots_device;
static cudaEvent_t g_read_done[AFO_READS_PENDING];
static _Atomic unsigned g_read_next;

static afo_status cuda_read_start(const void *src, size_t nbytes, int *ticket) {
    int i = (int)(atomic_fetch_add(&g_read_next, 1) % AFO_READS_PENDING);
    AFO_TRY(afo_cuda_status(afo_cuda_copy_small(g_read_slots_device + i * AFO_READ_BYTES, src, nbytes, g_stream),
                            "read"));
    *ticket = i;
    return afo_cuda_status(cudaEventRecord(g_read_done[i], g_stream), "read event");
}

static afo_status cuda_read_finish(int ticket, void *dst, size_t nbytes) {
    AFO_TRY(afo_cuda_status(cudaEventSynchronize(g_read_done[ticket]), "read"));
    memcpy(dst, g_read_slots + ticket * AFO_READ_BYTES, nbytes);
    return AFO_OK;
}

static afo_status cuda_copy(void *dst, const void *src, size_t nbytes) {
    if (nbytes <= AFO_CUDA_SMALL_COPY) return afo_cuda_status(afo_cuda_copy_small(dst, src, nbytes, g_stream), "copy");
    return afo_cuda_status(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, g_stream), "copy");
}

static afo_status cuda_synchronize(void) { return drain("synchronize"); }

static uint64_t cuda_synchronizations(void) { return g_synchronizations; }

bool afo_cuda_settled(const afo_buffer *b) { return !g_replayed && b->queued_at < g_synchronizations; }

static afo_status cuda_info(afo_device_info *out) {
    struct cudaDeviceProp prop;
    AFO_TRY(afo_cuda_status(cudaGetDeviceProperties(&prop, g_device), "device properties"));
    snprintf(out->name, sizeof out->name, "%.127s", prop.name);
    size_t free_bytes = 0, total = 0;
    AFO_TRY(afo_cuda_status(cudaMemGetInfo(&free_bytes, &total), "memory info"));
    out->total_memory = total;
    out->free_memory = free_bytes;
    out->compute_major = prop.major;
    out->compute_minor = prop.minor;
    return AFO_OK;
}

static afo_backend g_backend = {"cuda",           cuda_alloc,       cuda_free,          cuda_upload,
                                cuda_download,    cuda_read_start,  cuda_read_finish,   cuda_copy,
                                cuda_synchronize,
                                cuda_synchronizations, cuda_info, cuda_record_begin, cuda_record_end,
                                cuda_replay,      cuda_record_free};

static void init(void) {
    const char *env = getenv("AFO_CUDA_DEVICE");
    char *end = NULL;
    long dev = env ? strtol(env, &end, 10) : 0;
    if (env && (end == env || *end || dev < 0)) {
        snprintf(g_why, sizeof g_why, "AFO_CUDA_DEVICE=%s: not a GPU index (0, 1, ...)", env);
        return;
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(g_why, sizeof g_why, "no CUDA GPU is available (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "the driver sees no device");
        cudaGetLastError();
        return;
    }
    if (dev >= count) {
        snprintf(g_why, sizeof g_why, "AFO_CUDA_DEVICE=%s: the machine has %d GPU(s)", env, count);
        return;
    }
    if ((e = cudaSetDevice((int)dev)) != cudaSuccess || (e = cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking))) {
        snprintf(g_why, sizeof g_why, "CUDA device %ld: %s", dev, cudaGetErrorString(e));
        return;
    }
    /* staging is an optimisation: without pinned memory uploads still work */
    for (int i = 0; i < 2; i++) {
        if (cudaMallocHost(&g_stage[i], STAGE_BYTES) != cudaSuccess ||
            cudaEventCreateWithFlags(&g_stage_done[i], cudaEventDisableTiming) != cudaSuccess) {
            cudaGetLastError();
            g_stage[1] = NULL;
            break;
        }
    }
    bool read_slots =
        cudaHostAlloc((void **)&g_read_slots, AFO_READS_PENDING * AFO_READ_BYTES, cudaHostAllocMapped) == cudaSuccess &&
        cudaHostGetDevicePointer((void **)&g_read_slots_device, g_read_slots, 0) == cudaSuccess;
    for (int i = 0; read_slots && i < AFO_READS_PENDING; i++)
        read_slots = cudaEventCreateWithFlags(&g_read_done[i], cudaEventDisableTiming) == cudaSuccess;
    if (!read_slots) { /* reads go through download then */
        cudaGetLastError();
        g_backend.read_start = NULL, g_backend.read_finish = NULL;
    }
    if (cudaMallocHost((void **)&g_ring, RING_BYTES) != cudaSuccess ||
        cudaEventCreateWithFlags(&g_ring_round, cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        g_ring = NULL;
    }
    g_device = (int)dev;
}

const afo_backend *afo_cuda_backend(void) {
    pthread_once(&g_once, init);
    if (g_device < 0) return afo_error_null(AFO_ERR_UNSUPPORTED, "%s", g_why);
    /* the CUDA runtime's current device is per host thread */
    static _Thread_local bool bound;
    if (!bound) bound = cudaSetDevice(g_device) == cudaSuccess;
    return &g_backend;
}
