/* afo internals shared by the core, the op families and the backends. */
#ifndef AFO_INTERNAL_H
#define AFO_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include "afo/afo.h"

/* ---------------------------------------------------------------- errors */
/* Sets the thread's error text (printf-style) and returns `status`. */
afo_status afo_error(afo_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, returning NULL: for functions that return pointers. */
void *afo_error_null(afo_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define AFO_TRY(expr)                        \
    do {                                     \
        afo_status afo_try_s_ = (expr);      \
        if (afo_try_s_ != AFO_OK) return afo_try_s_; \
    } while (0)

/* ---------------------------------------------------------------- memory */
/* A region of a mapped file shared by the arrays viewing it. */
typedef struct afo_mapping {
    atomic_int refcount;
    void *base;
    size_t length;
} afo_mapping;
afo_mapping *afo_mapping_open(const char *path); /* read-only, whole file */
void afo_mapping_retain(afo_mapping *m);
void afo_mapping_release(afo_mapping *m);

/* Storage of evaluated arrays. Owned either by the allocator (returned to
 * its cache when the last array lets go) or by a mapping. */
typedef struct afo_buffer {
    atomic_int refcount;
    void *data;
    size_t nbytes;     /* usable bytes */
    size_t capacity;   /* allocator bucket size */
    afo_device device;
    afo_mapping *mapping; /* non-NULL: data points into this file mapping */
    /* The same bytes on the other device, made on first use there and kept
     * while this buffer lives. A buffer with a copy (or that is one) is never
     * written in place, so the two cannot drift apart. */
    struct afo_buffer *copy;
    bool is_copy;
    /* A copy's source, while it lives (not a reference: the source owns the
     * copy and clears this when it goes). Lets a GPU kernel check indices
     * that came from the host without reading device memory back. */
    struct afo_buffer *origin;
    /* A device buffer: its backend's synchronization count (see
     * afo_backend.synchronizations) when it was handed out or last given
     * to a kernel to write in place. While the count has not moved on,
     * kernels queued since may still be writing it. */
    uint64_t queued_at;
} afo_buffer;
afo_buffer *afo_buffer_alloc(afo_device device, size_t nbytes); /* NULL + error on OOM/limit */
afo_buffer *afo_buffer_from_mapping(afo_mapping *m, size_t offset, size_t nbytes);
void afo_buffer_retain(afo_buffer *b);
/* Stamps b's queued_at: a kernel queued now writes it (allocation does). */
void afo_buffer_mark_written(afo_buffer *b);
void afo_buffer_release(afo_buffer *b);
/* b's bytes on `device`: b itself, or its copy there (made and counted on
 * first request). Borrowed: valid while b lives. NULL + error on failure. */
afo_buffer *afo_buffer_on(afo_buffer *b, afo_device device);
/* A new host buffer with the device buffer b's bytes as they are now
 * (counted, not kept as b's copy: b may be written again, by a replayed
 * recording). */
afo_buffer *afo_buffer_fetch(const afo_buffer *b);
/* True when b's bytes are its own: no file mapping, no copy on another
 * device that writing them in place would leave stale. */
bool afo_buffer_own_bytes(const afo_buffer *b);
/* True when b may be overwritten by the op consuming its only reference. */
bool afo_buffer_writable(const afo_buffer *b);
/* Device buffers freed while a recording captures go to it instead of the
 * pool: its graph names them and writes them again at every replay, so they
 * return to the pool only with the recording. They count as active. */
typedef struct afo_held_buffers {
    struct afo_held_entry *list;
} afo_held_buffers;
void afo_pool_hold(afo_device device, afo_held_buffers *into); /* NULL: free to the pool again */
void afo_held_release(afo_device device, afo_held_buffers *held);

/* ---------------------------------------------------------------- backends */
/* What the core needs from an accelerator: memory, copies, a barrier. Its
 * kernels register themselves in the op table (afo_op_set_kernel). */
typedef struct afo_backend {
    const char *name;
    void *(*alloc)(size_t nbytes); /* NULL when the device is out of memory */
    void (*free)(void *p);
    afo_status (*upload)(void *dst, const void *src, size_t nbytes);   /* host → device */
    afo_status (*download)(void *dst, const void *src, size_t nbytes); /* device → host, complete on return */
    /* A small read (at most AFO_READ_BYTES) queued after the work queued so
     * far, and the wait for it alone, not for work queued later (a decode
     * step's pick while the next step runs); at most AFO_READS_PENDING at
     * once. NULL: reads go through download. */
    afo_status (*read_start)(const void *src, size_t nbytes, int *ticket);
    afo_status (*read_finish)(int ticket, void *dst, size_t nbytes);
    afo_status (*copy)(void *dst, const void *src, size_t nbytes); /* device → device, queued like a kernel */
    afo_status (*synchronize)(void);
    /* How many times the host has waited for all queued work (synchronize,
     * a download, ...): work queued before the count last moved is done. */
    uint64_t (*synchronizations)(void);
    afo_status (*info)(afo_device_info *out);
    /* Graph recording (afo_recording_*): NULL when the device has none.
     * *rec is the backend's state of one recording, made by the first
     * record_begin; record_end launches what was recorded. */
    afo_status (*record_begin)(void **rec);
    afo_status (*record_end)(void **rec, int *instantiated, bool discard);
    afo_status (*replay)(void *rec);
    void (*record_free)(void *rec);
} afo_backend;
/* NULL for the CPU and for a device this build or machine lacks (the error
 * text then says why). */
const afo_backend *afo_backend_of(afo_device device);

/* Reading a small evaluated array (at most AFO_READ_BYTES, contiguous)
 * without waiting for work queued after the read: start, queue more work,
 * finish. */
#define AFO_READ_BYTES 64
#define AFO_READS_PENDING 4
typedef struct afo_pending_read {
    const afo_backend *be; /* NULL: the bytes were read at the start */
    int ticket;
    size_t nbytes;
    unsigned char bytes[AFO_READ_BYTES];
} afo_pending_read;
afo_status afo_array_read_start(afo_array *a, afo_pending_read *r);
afo_status afo_array_read_finish(afo_pending_read *r, void *dst);
/* Copies src's bytes into dst's buffer in place (both evaluated on one
 * device, of one dtype and size, contiguous; dst not a file's or a copy's
 * bytes), queued like a kernel: a recording captures it. */
afo_status afo_array_assign(afo_array *dst, afo_array *src);

/* ---------------------------------------------------------------- ops */
#include "core/op_ids.h"

#define AFO_MAX_ATTR_INTS 32
/* Op parameters stored in the node: integers (axes, slices, flags) and
 * floats (eps, scale, base). Each op documents its layout next to its def. */
typedef struct afo_attrs {
    int64_t i[AFO_MAX_ATTR_INTS];
    double f[4];
    int ni, nf; /* how many of i/f are meaningful (for dumps and CSE) */
} afo_attrs;

struct afo_array {
    atomic_int refcount;
    uint64_t id;
    afo_dtype dtype;
    int ndim;
    int64_t shape[AFO_MAX_DIMS];
    int64_t size;
    /* data (set once evaluated); strides and offset in elements */
    afo_buffer *buf;
    int64_t strides[AFO_MAX_DIMS];
    int64_t offset;
    bool contiguous; /* row-major dense from data pointer */
    afo_device device; /* where the op runs; after evaluation, buf->device */
    /* graph node (inputs dropped after evaluation) */
    afo_op op;
    int nin;
    afo_array **in;
    afo_attrs attrs;
    uint32_t visit;        /* traversal epoch marks */
    uint8_t deferred;      /* this evaluation: computed inside its one consumer's kernel (afo_deferral) */
    int32_t uses;          /* this evaluation: how many nodes of the graph read it */
    afo_array *free_next;  /* release worklist link (no allocation while freeing) */
};

/* Kernel: computes `out` (shape/dtype set, no buffer yet) from evaluated
 * inputs, either allocating out's buffer or making out a view of an input. */
typedef afo_status (*afo_kernel_fn)(afo_array *out, afo_array *const *in, int nin,
                                    const afo_attrs *attrs);
/* Shape rule: validates inputs/attrs and sets out->dtype, ndim, shape. The
 * error text names the op and the offending argument. */
typedef afo_status (*afo_shape_fn)(afo_array *out, afo_array *const *in, int nin,
                                   const afo_attrs *attrs);
/* Gradient: *grad = cotangent pulled back to input `argnum` (a new lazy
 * array shaped like that input), or NULL when no gradient flows there. */
typedef afo_status (*afo_vjp_fn)(afo_array *out, afo_array *cotangent, int argnum,
                                 afo_array **grad);

/* A kernel computing `out` together with its input in[producer], an
 * unevaluated node that only `out` consumes (a decode step's residual add
 * with the product before it, a product with the norm before it): the
 * producer's own inputs are evaluated and on out's device, except one the
 * producer takes along in turn (deferred: a chain, see mark_fusions),
 * which the kernel computes too or declines for (its inputs are evaluated,
 * on whichever device they were made; declined, the kernel is called
 * again with that input evaluated). Sets *done when
 * it computed `out`; when the layouts at hand do not suit, leaves *done
 * false and the evaluator runs the producer, then out's plain kernel. On a
 * GPU a decode step's small kernels cost more in launches and round trips
 * through memory than in work, and these pairs are most of them.
 *
 * Inputs with `deferred` AFO_DEFER_KEPT besides in[producer] (which may be
 * one itself) are producers that other references hold (a KV cache's
 * update, which the cache keeps): the kernel computes them too, giving
 * each its data (afo_array_alloc, or a view) before it sets *done, or
 * declines without touching any; declined, they are evaluated apart
 * first and the kernel is offered the rest again. A kernel that fails
 * after giving them data leaves them unevaluated (the evaluator drops
 * it). */
typedef enum afo_deferral {
    AFO_DEFER_NONE,
    AFO_DEFER_ALONG, /* the consumer's reference is its only one: no data of its own */
    AFO_DEFER_KEPT   /* referenced elsewhere too: the consumer's kernel gives it its data */
} afo_deferral;
typedef afo_status (*afo_fused_fn)(afo_array *out, afo_array *const *in, int nin, int producer, bool *done);

typedef struct afo_op_def {
    const char *name;
    afo_shape_fn shape;
    afo_kernel_fn kernel[AFO_DEVICE_COUNT];
    afo_vjp_fn vjp; /* NULL: not differentiable */
} afo_op_def;

/* Registration (src/ops/registry.c calls each family's register function). */
void afo_op_register(afo_op op, const afo_op_def *def);
/* Adds a backend's kernel to an op that is already registered. */
void afo_op_set_kernel(afo_op op, afo_device device, afo_kernel_fn kernel);
const afo_op_def *afo_op_get(afo_op op); /* NULL if the op has no definition */
/* A backend's kernel for `consumer` with a `producer` input folded in;
 * `kept`: producers that other references hold come along too (as
 * AFO_DEFER_KEPT). A consumer's pairs that may apply at once (one input
 * taken along, others kept) share their fn. */
void afo_op_set_fused(afo_device device, afo_op consumer, afo_op producer, afo_fused_fn fn);
void afo_op_set_fused_kept(afo_device device, afo_op consumer, afo_op producer, afo_fused_fn fn);
/* NULL if none is registered; *kept (if given) says which registration. */
afo_fused_fn afo_op_fused(afo_device device, afo_op consumer, afo_op producer, bool *kept);
void afo_register_elementwise_ops(void);
void afo_register_shape_ops(void);
void afo_register_reduce_ops(void);
void afo_register_linalg_ops(void);
void afo_register_indexing_ops(void);
void afo_register_nn_ops(void);
void afo_register_random_ops(void);
void afo_register_quant_ops(void);
void afo_register_cuda_kernels(void); /* only in builds with AFO_HAVE_CUDA */

/* Creates a graph node: runs the op's shape rule, retains the inputs.
 * Returns NULL with the error set when the shape rule refuses. */
afo_array *afo_node(afo_op op, afo_array *const *in, int nin, const afo_attrs *attrs);
/* Same for ops whose output shape/dtype the caller already knows. */
afo_array *afo_node_shaped(afo_op op, afo_array *const *in, int nin, const afo_attrs *attrs,
                           afo_dtype dtype, int ndim, const int64_t *shape);
/* A leaf array that owns (a reference to) buf, viewed contiguously from
 * byte offset 0. */
afo_array *afo_array_from_buffer(afo_buffer *buf, afo_dtype dtype, int ndim, const int64_t *shape);

/* ---------------------------------------------------------------- profile */
/* AFO_PROFILE=1 (core/profile.c): host time per op and per evaluation. */
bool afo_profile_enabled(void);
/* Forgets what was gathered so far (a benchmark's warm-up, say). */
void afo_profile_reset(void);
double afo_profile_now(void);
void afo_profile_op(afo_op op, afo_device d, double seconds);
void afo_profile_eval(size_t nodes, double seconds);
/* One CPU decode matvec job (every part of one quantized product): bytes of
 * packed weights, scales and biases, its wall time, and the time until the
 * first thread found no rows left to claim. */
void afo_profile_matvec(double bytes, double seconds, double first_done);

/* ---------------------------------------------------------------- files */
/* The whole of `path` in a malloc'd buffer with a NUL after its *len bytes
 * (len may be NULL). max_bytes 0: no limit, else longer files are refused
 * (AFO_ERR_FORMAT). A file that cannot be opened is AFO_ERR_IO naming it;
 * with missing_ok, one that does not exist is AFO_OK with *text NULL. */
afo_status afo_read_file(const char *path, size_t max_bytes, bool missing_ok, char **text, size_t *len);

/* ---------------------------------------------------------------- helpers */
int afo_normalize_axis(int axis, int ndim); /* -1 when out of range */
int64_t afo_shape_size(int ndim, const int64_t *shape);
void afo_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* Broadcast shape of two shapes; error names `opname`. */
afo_status afo_broadcast_shapes(const char *opname, int na, const int64_t *a, int nb,
                                const int64_t *b, int *nout, int64_t *out);
/* Strides of `a` as seen from an output of shape (ndim, shape): aligned
 * right, zero along broadcast axes. */
void afo_broadcast_strides(const afo_array *a, int ndim, const int64_t *shape, int64_t *out);
/* Drops size-1 axes of (ndim, shape) and merges neighbours contiguous for
 * every operand (strides[k]: operand k's strides, rewritten alongside), so
 * strided loops run over as few, as long axes as possible. Returns the new
 * ndim, at least 1. */
int afo_merge_axes(int ndim, int64_t *shape, int nops, int64_t *const *strides);
/* Formats "[2, 3, 4]" into buf. */
const char *afo_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);
/* Positions read when a graph runs (afo_rope_at, afo_slice_update_at,
 * afo_scaled_dot_product_attention_at): one int32 element. The check names
 * the op; the value is read from an evaluated array on the host. */
afo_status afo_check_position(const char *op, const afo_array *position);
int64_t afo_position_value(const afo_array *position);
/* slice_update's attrs: per axis start, step and length (i[d], i[8 + d],
 * i[16 + d]); with a third input (afo_slice_update_at) the slice along the
 * axis i[AFO_SLICE_AT_AXIS] moves by that input's value, clamped so that it
 * stays inside. */
#define AFO_SLICE_AT_AXIS (3 * AFO_MAX_DIMS)
int64_t afo_slice_at_start(const afo_array *out, const afo_attrs *a, int64_t position);
/* Whether slice_update's kernels may reuse x's (the target's) buffer for
 * their output: nothing else can observe it (x referenced only by this
 * node, owning its whole buffer, not a file mapping); the KV cache relies
 * on it to append without copying the whole cache. */
bool afo_slice_update_can_donate(const afo_array *x);
/* Gives out a fresh contiguous buffer on out's device (or an error). */
afo_status afo_array_alloc(afo_array *out);
/* Makes out a view of src's buffer with the given strides/offset. */
void afo_array_set_view(afo_array *out, const afo_array *src, const int64_t *strides, int64_t offset);
static inline void *afo_array_ptr(const afo_array *a) {
    return (char *)a->buf->data + a->offset * (int64_t)afo_dtype_size(a->dtype);
}
bool afo_strides_contiguous(int ndim, const int64_t *shape, const int64_t *strides);
/* Sum-reduces g (a broadcast result) back to `shape` (for gradients). */
afo_array *afo_unbroadcast(afo_array *g, int ndim, const int64_t *shape);
/* x [..., K] times the transposes of `parts` (<= AFO_QMM_MAX_PARTS) packed
 * weights of one format and input size K: [..., N_0 + N_1 + ...], each
 * part's outputs in turn, as afo_quantized_matmul of the stacked weights
 * would give them but without stacking (copying) them. A decode step's q, k
 * and v (gate and up) projections run as one: the CPU kernel quantizes x
 * once and threads share one pass over all the rows. CPU only. */
enum { AFO_QMM_MAX_PARTS = 3 };
afo_array *afo_quantized_matmul_parts(afo_array *x, int parts, afo_array *const *wq, afo_array *const *scales,
                                      afo_array *const *biases, int group_size, int bits);
/* Post-order of the nodes reaching roots (inputs first); evaluated nodes
 * are included only when asked. *out is malloc'd. */
afo_status afo_graph_topo(afo_array *const *roots, int n, bool include_evaluated, afo_array ***out,
                          size_t *count);
/* Allocates out and copies the inputs one after another along `axis` with
 * `assign` (the backend's copy into a strided region): concatenate's kernel
 * on every device. */
typedef afo_status (*afo_assign_fn)(const afo_array *dst, const afo_array *src);
afo_status afo_concat_into(afo_array *out, afo_array *const *in, int nin, int axis, afo_assign_fn assign);
/* Releases several handles (NULLs skipped). */
void afo_release_n(afo_array **a, int n);

#endif
