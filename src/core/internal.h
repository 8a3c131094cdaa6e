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
} afo_buffer;
afo_buffer *afo_buffer_alloc(afo_device device, size_t nbytes); /* NULL + error on OOM/limit */
afo_buffer *afo_buffer_from_mapping(afo_mapping *m, size_t offset, size_t nbytes);
void afo_buffer_retain(afo_buffer *b);
void afo_buffer_release(afo_buffer *b);

/* ---------------------------------------------------------------- ops */
typedef enum afo_op {
    AFO_OP_NONE = 0,
    /* unary elementwise */
    AFO_OP_NEG, AFO_OP_ABS, AFO_OP_EXP, AFO_OP_LOG, AFO_OP_LOG1P, AFO_OP_SQRT, AFO_OP_RSQRT,
    AFO_OP_SQUARE, AFO_OP_TANH, AFO_OP_ERF, AFO_OP_SIGMOID, AFO_OP_SILU, AFO_OP_GELU, AFO_OP_GELU_TANH,
    AFO_OP_RELU, AFO_OP_SIN, AFO_OP_COS, AFO_OP_LOGICAL_NOT,
    /* binary elementwise */
    AFO_OP_ADD, AFO_OP_SUB, AFO_OP_MUL, AFO_OP_DIV, AFO_OP_MAXIMUM, AFO_OP_MINIMUM, AFO_OP_POW,
    AFO_OP_EQUAL, AFO_OP_NOT_EQUAL, AFO_OP_LESS, AFO_OP_LESS_EQUAL, AFO_OP_GREATER,
    AFO_OP_GREATER_EQUAL, AFO_OP_LOGICAL_AND, AFO_OP_LOGICAL_OR,
    AFO_OP_WHERE, AFO_OP_ASTYPE, AFO_OP_STOP_GRADIENT,
    /* shape: views where strides allow, else copies */
    AFO_OP_RESHAPE, AFO_OP_TRANSPOSE, AFO_OP_BROADCAST, AFO_OP_SLICE, AFO_OP_CONTIGUOUS,
    AFO_OP_SLICE_UPDATE, AFO_OP_CONCATENATE,
    /* reductions */
    AFO_OP_SUM, AFO_OP_MAX, AFO_OP_MIN, AFO_OP_LOGSUMEXP, AFO_OP_ARGMAX, AFO_OP_SOFTMAX,
    /* linear algebra */
    AFO_OP_MATMUL,
    /* indexing */
    AFO_OP_TAKE, AFO_OP_TAKE_ALONG_AXIS, AFO_OP_SCATTER_ADD, AFO_OP_ARGSORT, AFO_OP_ARGTOPK,
    /* fused nn */
    AFO_OP_RMS_NORM, AFO_OP_LAYER_NORM, AFO_OP_ROPE, AFO_OP_SDPA,
    /* random */
    AFO_OP_RANDOM_BITS, AFO_OP_RANDOM_UNIFORM, AFO_OP_RANDOM_NORMAL,
    /* affine quantization */
    AFO_OP_QUANTIZE, AFO_OP_DEQUANTIZE, AFO_OP_QUANTIZED_MATMUL, AFO_OP_QUANTIZED_TAKE,
    AFO_OP_COUNT
} afo_op;

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
    /* graph node (inputs dropped after evaluation) */
    afo_op op;
    int nin;
    afo_array **in;
    afo_attrs attrs;
    uint32_t visit;        /* traversal epoch marks */
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

typedef struct afo_op_def {
    const char *name;
    afo_shape_fn shape;
    afo_kernel_fn kernel[AFO_DEVICE_COUNT];
    afo_vjp_fn vjp; /* NULL: not differentiable */
} afo_op_def;

/* Registration (src/ops/registry.c calls each family's register function). */
void afo_op_register(afo_op op, const afo_op_def *def);
const afo_op_def *afo_op_get(afo_op op); /* NULL if the op has no definition */
void afo_register_elementwise_ops(void);
void afo_register_shape_ops(void);
void afo_register_reduce_ops(void);
void afo_register_linalg_ops(void);
void afo_register_indexing_ops(void);
void afo_register_nn_ops(void);
void afo_register_random_ops(void);
void afo_register_quant_ops(void);

/* Creates a graph node: runs the op's shape rule, retains the inputs.
 * Returns NULL with the error set when the shape rule refuses. */
afo_array *afo_node(afo_op op, afo_array *const *in, int nin, const afo_attrs *attrs);
/* Same for ops whose output shape/dtype the caller already knows. */
afo_array *afo_node_shaped(afo_op op, afo_array *const *in, int nin, const afo_attrs *attrs,
                           afo_dtype dtype, int ndim, const int64_t *shape);
/* A leaf array that owns (a reference to) buf, viewed contiguously from
 * byte offset 0. */
afo_array *afo_array_from_buffer(afo_buffer *buf, afo_dtype dtype, int ndim, const int64_t *shape);

/* ---------------------------------------------------------------- helpers */
int afo_normalize_axis(int axis, int ndim); /* -1 when out of range */
int64_t afo_shape_size(int ndim, const int64_t *shape);
void afo_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* Broadcast shape of two shapes; error names `opname`. */
afo_status afo_broadcast_shapes(const char *opname, int na, const int64_t *a, int nb,
                                const int64_t *b, int *nout, int64_t *out);
/* Formats "[2, 3, 4]" into buf. */
const char *afo_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);
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
/* Post-order of the nodes reaching roots (inputs first); evaluated nodes
 * are included only when asked. *out is malloc'd. */
afo_status afo_graph_topo(afo_array *const *roots, int n, bool include_evaluated, afo_array ***out,
                          size_t *count);
/* Releases several handles (NULLs skipped). */
void afo_release_n(afo_array **a, int n);

#endif
