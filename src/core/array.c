/* Array handles, graph nodes and evaluation. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/cpu.h"
#include "core/internal.h"

static atomic_uint_fast64_t g_next_id = 1;

static afo_array *array_new(void) {
    afo_array *a = calloc(1, sizeof *a);
    if (!a) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "out of memory allocating an array");
    atomic_init(&a->refcount, 1);
    a->id = atomic_fetch_add(&g_next_id, 1);
    return a;
}

afo_array *afo_retain(afo_array *a) {
    if (a) atomic_fetch_add(&a->refcount, 1);
    return a;
}

/* Iterative so that releasing a long chain (a decode loop's graph) cannot
 * overflow the stack. */
void afo_release(afo_array *a) {
    if (!a || atomic_fetch_sub(&a->refcount, 1) != 1) return;
    a->free_next = NULL;
    afo_array *work = a;
    while (work) {
        afo_array *x = work;
        work = x->free_next;
        for (int i = 0; i < x->nin; i++) {
            afo_array *in = x->in[i];
            if (atomic_fetch_sub(&in->refcount, 1) == 1) {
                in->free_next = work;
                work = in;
            }
        }
        free(x->in);
        afo_buffer_release(x->buf);
        free(x);
    }
}

void afo_release_n(afo_array **a, int n) {
    for (int i = 0; i < n; i++) afo_release(a[i]);
}

static void set_shape(afo_array *a, afo_dtype dtype, int ndim, const int64_t *shape) {
    a->dtype = dtype;
    a->ndim = ndim;
    for (int i = 0; i < ndim; i++) a->shape[i] = shape[i];
    a->size = afo_shape_size(ndim, shape);
}

static afo_array *node_alloc(afo_op op, afo_array *const *in, int nin, const afo_attrs *attrs) {
    afo_array *a = array_new();
    if (!a) return NULL;
    a->op = op;
    a->device = afo_get_default_device();
    if (attrs) a->attrs = *attrs;
    if (nin > 0) {
        a->in = malloc(sizeof(afo_array *) * (size_t)nin);
        if (!a->in) {
            free(a);
            return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "out of memory creating a graph node");
        }
        for (int i = 0; i < nin; i++) a->in[i] = afo_retain(in[i]);
        a->nin = nin;
    }
    return a;
}

static bool inputs_valid(afo_op op, afo_array *const *in, int nin) {
    const afo_op_def *def = afo_op_get(op);
    for (int i = 0; i < nin; i++)
        if (!in[i]) {
            afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: input %d is NULL", def ? def->name : "op", i);
            return false;
        }
    return true;
}

afo_array *afo_node(afo_op op, afo_array *const *in, int nin, const afo_attrs *attrs) {
    const afo_op_def *def = afo_op_get(op);
    if (!def) return afo_error_null(AFO_ERR_UNSUPPORTED, "op %d has no definition in this build", (int)op);
    if (!inputs_valid(op, in, nin)) return NULL;
    afo_array *a = node_alloc(op, in, nin, attrs);
    if (!a) return NULL;
    if (def->shape(a, a->in, nin, &a->attrs) != AFO_OK) {
        afo_release(a);
        return NULL;
    }
    a->size = afo_shape_size(a->ndim, a->shape);
    return a;
}

afo_array *afo_node_shaped(afo_op op, afo_array *const *in, int nin, const afo_attrs *attrs,
                           afo_dtype dtype, int ndim, const int64_t *shape) {
    if (!afo_op_get(op)) return afo_error_null(AFO_ERR_UNSUPPORTED, "op %d has no definition in this build", (int)op);
    if (!inputs_valid(op, in, nin)) return NULL;
    afo_array *a = node_alloc(op, in, nin, attrs);
    if (a) set_shape(a, dtype, ndim, shape);
    return a;
}

afo_array *afo_array_from_buffer(afo_buffer *buf, afo_dtype dtype, int ndim, const int64_t *shape) {
    afo_array *a = array_new();
    if (!a) return NULL;
    set_shape(a, dtype, ndim, shape);
    afo_buffer_retain(buf);
    a->buf = buf;
    afo_contiguous_strides(ndim, shape, a->strides);
    a->contiguous = true;
    return a;
}

static afo_status check_shape_arg(const char *fn, afo_dtype dtype, int ndim, const int64_t *shape) {
    if ((unsigned)dtype >= AFO_DTYPE_COUNT)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: invalid dtype %d", fn, (int)dtype);
    if (ndim < 0 || ndim > AFO_MAX_DIMS)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: ndim %d outside 0..%d", fn, ndim, AFO_MAX_DIMS);
    if (ndim > 0 && !shape) return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: shape is NULL", fn);
    int64_t size = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: negative dimension %lld at axis %d", fn,
                             (long long)shape[i], i);
        if (shape[i] && size > INT64_MAX / 16 / shape[i])
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: shape too large", fn);
        size *= shape[i];
    }
    return AFO_OK;
}

afo_array *afo_array_from_data(const void *data, afo_dtype dtype, int ndim, const int64_t *shape) {
    if (check_shape_arg("afo_array_from_data", dtype, ndim, shape) != AFO_OK) return NULL;
    int64_t size = afo_shape_size(ndim, shape);
    size_t nbytes = (size_t)size * afo_dtype_size(dtype);
    if (size > 0 && !data) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_array_from_data: data is NULL");
    afo_buffer *buf = afo_buffer_alloc(AFO_CPU, nbytes);
    if (!buf) return NULL;
    if (nbytes) memcpy(buf->data, data, nbytes);
    afo_array *a = afo_array_from_buffer(buf, dtype, ndim, shape);
    afo_buffer_release(buf);
    return a;
}

afo_array *afo_scalar(double value, afo_dtype dtype) {
    if ((unsigned)dtype >= AFO_DTYPE_COUNT)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_scalar: invalid dtype %d", (int)dtype);
    unsigned char bytes[8];
    afo_cpu_store_double(dtype, bytes, value);
    return afo_array_from_data(bytes, dtype, 0, NULL);
}

afo_array *afo_scalar_like(const afo_array *x, double value) {
    if (!x) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_scalar_like: x is NULL");
    return afo_scalar(value, x->dtype);
}

/* A broadcast scalar: no memory until a consumer materialises it. */
afo_array *afo_full(double value, afo_dtype dtype, int ndim, const int64_t *shape) {
    if (check_shape_arg("afo_full", dtype, ndim, shape) != AFO_OK) return NULL;
    afo_array *s = afo_scalar(value, dtype);
    if (!s) return NULL;
    afo_array *out = afo_broadcast_to(s, ndim, shape);
    afo_release(s);
    return out;
}

afo_array *afo_zeros(afo_dtype dtype, int ndim, const int64_t *shape) {
    return afo_full(0.0, dtype, ndim, shape);
}

afo_array *afo_arange(double start, double step, int64_t n, afo_dtype dtype) {
    if (n < 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_arange: negative length %lld", (long long)n);
    if (check_shape_arg("afo_arange", dtype, 1, &n) != AFO_OK) return NULL;
    afo_buffer *buf = afo_buffer_alloc(AFO_CPU, (size_t)n * afo_dtype_size(dtype));
    if (!buf) return NULL;
    size_t es = afo_dtype_size(dtype);
    for (int64_t i = 0; i < n; i++) afo_cpu_store_double(dtype, (char *)buf->data + i * es, start + step * (double)i);
    afo_array *a = afo_array_from_buffer(buf, dtype, 1, &n);
    afo_buffer_release(buf);
    return a;
}

afo_dtype afo_array_dtype(const afo_array *a) { return a->dtype; }
int afo_array_ndim(const afo_array *a) { return a->ndim; }
const int64_t *afo_array_shape(const afo_array *a) { return a->shape; }
int64_t afo_array_size(const afo_array *a) { return a->size; }
size_t afo_array_nbytes(const afo_array *a) { return (size_t)a->size * afo_dtype_size(a->dtype); }
int afo_array_is_evaluated(const afo_array *a) { return a->buf != NULL; }
int afo_array_op(const afo_array *a) { return a->buf && a->nin == 0 ? AFO_OP_NONE : (int)a->op; }
int afo_array_num_inputs(const afo_array *a) { return a->nin; }
afo_array *afo_array_input(const afo_array *a, int i) { return i >= 0 && i < a->nin ? a->in[i] : NULL; }

const char *afo_array_op_name(const afo_array *a) {
    const afo_op_def *def = afo_op_get((afo_op)afo_array_op(a));
    return def ? def->name : "data";
}

int64_t afo_array_dim(const afo_array *a, int axis) {
    int ax = afo_normalize_axis(axis, a->ndim);
    return ax < 0 ? -1 : a->shape[ax];
}

/* ------------------------------------------------------------ evaluation */

static atomic_uint g_epoch;

typedef struct node_list {
    afo_array **items;
    size_t n, cap;
} node_list;

static bool list_push(node_list *l, afo_array *a) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        afo_array **grown = realloc(l->items, cap * sizeof *grown);
        if (!grown) return false;
        l->items = grown;
        l->cap = cap;
    }
    l->items[l->n++] = a;
    return true;
}

typedef struct frame {
    afo_array *a;
    int next_input;
} frame;

/* Post-order of the unevaluated nodes reaching `roots`: inputs first. An
 * explicit stack of frames keeps deep graphs off the C stack. */
afo_status afo_graph_topo(afo_array *const *roots, int n, bool include_evaluated, afo_array ***out,
                          size_t *count) {
    unsigned epoch = atomic_fetch_add(&g_epoch, 1) + 1;
    node_list order = {0};
    frame *stack = NULL;
    size_t depth = 0, cap = 0;
    afo_status st = AFO_OK;
    for (int r = 0; r < n && st == AFO_OK; r++) {
        afo_array *root = roots[r];
        if (!root) {
            st = afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_eval: array %d is NULL", r);
            break;
        }
        if (root->visit == epoch || (root->buf && !include_evaluated)) continue;
        root->visit = epoch;
        afo_array *push = root;
        while (push || depth > 0) {
            if (push) {
                if (depth == cap) {
                    cap = cap ? cap * 2 : 64;
                    frame *grown = realloc(stack, cap * sizeof *grown);
                    if (!grown) { st = AFO_ERR_OUT_OF_MEMORY; break; }
                    stack = grown;
                }
                stack[depth++] = (frame){push, 0};
                push = NULL;
            }
            frame *top = &stack[depth - 1];
            if (top->next_input < top->a->nin) {
                afo_array *child = top->a->in[top->next_input++];
                if (child->visit != epoch && (!child->buf || include_evaluated)) {
                    child->visit = epoch;
                    push = child;
                }
            } else {
                depth--;
                if (!list_push(&order, top->a)) { st = AFO_ERR_OUT_OF_MEMORY; break; }
            }
        }
    }
    free(stack);
    if (st != AFO_OK) {
        free(order.items);
        if (st == AFO_ERR_OUT_OF_MEMORY) afo_error(st, "out of memory sorting the graph");
        return st;
    }
    *out = order.items;
    *count = order.n;
    return AFO_OK;
}

/* Drops the graph behind an evaluated node so intermediates can be freed. */
static void detach(afo_array *a) {
    int nin = a->nin;
    afo_array **in = a->in;
    a->nin = 0;
    a->in = NULL;
    for (int i = 0; i < nin; i++) afo_release(in[i]);
    free(in);
}

/* Stand-ins for inputs whose data lives on another device: the same array
 * seen through the buffer's copy on `device`. Kernels only read inputs, so
 * shallow copies serve. */
#define MOVED_ON_STACK 8
typedef struct moved_inputs {
    afo_array stack[MOVED_ON_STACK];
    afo_array *ptrs_stack[MOVED_ON_STACK];
    afo_array *heap;
    afo_array **ptrs;
} moved_inputs;

/* With `own`, *in is m's array even when nothing moved, for the caller to
 * change. */
static afo_status inputs_on(afo_array *a, afo_device device, bool own, moved_inputs *m, afo_array *const **in) {
    *in = a->in;
    bool any = own;
    for (int i = 0; i < a->nin; i++) any |= a->in[i]->buf && a->in[i]->buf->device != device;
    if (!any) return AFO_OK;
    afo_array *copies = m->stack;
    m->ptrs = m->ptrs_stack;
    if (a->nin > MOVED_ON_STACK) {
        m->heap = malloc(sizeof *m->heap * (size_t)a->nin);
        m->ptrs = malloc(sizeof *m->ptrs * (size_t)a->nin);
        if (!m->heap || !m->ptrs) return afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory moving inputs");
        copies = m->heap;
    }
    for (int i = 0; i < a->nin; i++) {
        afo_array *x = a->in[i];
        m->ptrs[i] = x;
        if (!x->buf || x->buf->device == device) continue; /* a deferred producer stays as it is */
        afo_buffer *there = afo_buffer_on(x->buf, device);
        if (!there) return afo_last_status();
        copies[i] = *x;
        copies[i].buf = there;
        m->ptrs[i] = &copies[i];
    }
    *in = m->ptrs;
    return AFO_OK;
}

static void moved_free(moved_inputs *m) {
    free(m->heap);
    if (m->ptrs != m->ptrs_stack) free(m->ptrs);
}

static atomic_llong g_fallbacks;

int64_t afo_cpu_fallback_count(void) { return (int64_t)atomic_load(&g_fallbacks); }

static atomic_llong g_fused;

int64_t afo_fused_count(void) { return (int64_t)atomic_load(&g_fused); }

static void evaluated(afo_array *a) {
    a->contiguous = afo_strides_contiguous(a->ndim, a->shape, a->strides);
    a->device = a->buf->device;
    detach(a);
}

/* The most inputs of a consumer whose kernel takes a producer along, and
 * the most kept producers (AFO_DEFER_KEPT) it takes besides. */
#define FUSED_MAX_INPUTS 8
#define FUSED_MAX_KEPT 2

static bool has_kept_input(const afo_array *p) {
    for (int j = 0; j < p->nin; j++)
        if (p->in[j]->deferred == AFO_DEFER_KEPT) return true;
    return false;
}

/* Marks the nodes of `order` that their consumer's kernel computes along
 * (afo_fused_fn). A producer may take one of its own inputs along in turn
 * (a chain: a residual add, its product, the product's swiglu); the
 * consumer's kernel computes the whole chain or declines, and then the
 * chain's tail runs first and the consumer's kernel is offered the pair
 * (eval_node). A root has a reference of the caller's, so a producer whose
 * only reference is its consumer's is no root. A kept producer (a pair
 * registered with afo_op_set_fused_kept) may have other references, but
 * no other reader in the graph: the consumer's kernel gives it its data. */
static void mark_fusions(afo_array *const *order, size_t count) {
    for (size_t i = 0; i < count; i++) order[i]->deferred = AFO_DEFER_NONE, order[i]->uses = 0;
    static int enabled = -1; /* AFO_FUSE=0 turns fusion off, to tell its rounding from a bug's */
    if (enabled < 0) {
        const char *e = getenv("AFO_FUSE");
        enabled = !(e && strcmp(e, "0") == 0);
    }
    if (!enabled) return;
    for (size_t i = 0; i < count; i++)
        for (int k = 0; k < order[i]->nin; k++)
            if (!order[i]->in[k]->buf) order[i]->in[k]->uses++; /* an unevaluated input is a node of the graph */
    for (size_t i = 0; i < count; i++) {
        afo_array *a = order[i];
        if (a->nin > FUSED_MAX_INPUTS) continue;
        afo_fused_fn chosen = NULL;
        bool along = false;
        int kept = 0;
        for (int k = 0; k < a->nin; k++) {
            afo_array *p = a->in[k];
            bool keeps = false;
            afo_fused_fn fn = p->buf || p->device != a->device ? NULL : afo_op_fused(a->device, a->op, p->op, &keeps);
            if (!fn || (chosen && fn != chosen)) continue;
            /* neither kind with kept producers of its own: a's kernel would not know to give them data */
            if (has_kept_input(p)) continue;
            if (keeps && p->uses == 1 && kept < FUSED_MAX_KEPT)
                p->deferred = AFO_DEFER_KEPT, kept++;
            else if (!keeps && !along && atomic_load(&p->refcount) == 1)
                p->deferred = AFO_DEFER_ALONG, along = true;
            else
                continue;
            chosen = fn;
        }
    }
}

static int first_deferred(const afo_array *a) {
    int k = 0;
    while (k < a->nin && !a->in[k]->deferred) k++;
    return k;
}

/* One deferred input of a consumer, as its fused kernel sees it: a copy of
 * a producer taken along, or a kept producer itself, its inputs on the
 * consumer's device either way, and so on down a chain, whose every input
 * the kernel reads (restored by taken_done). */
typedef struct taken_input {
    afo_array *node, copy, **own_in;
    moved_inputs moved;
    struct taken_input *along; /* the node's own deferred input, taken in turn, or NULL */
} taken_input;

static afo_status take_input(afo_array *p, afo_device device, taken_input *t, afo_array **arg) {
    t->moved = (moved_inputs){.ptrs = t->moved.ptrs_stack};
    t->node = p;
    t->own_in = p->in;
    t->along = NULL;
    const int j = first_deferred(p);
    afo_array *const *p_in;
    AFO_TRY(inputs_on(p, device, j < p->nin, &t->moved, &p_in));
    if (j < p->nin) {
        t->along = malloc(sizeof *t->along);
        if (!t->along) return afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory taking a fused chain");
        AFO_TRY(take_input(p->in[j], device, t->along, &t->moved.ptrs[j]));
    }
    if (p->deferred == AFO_DEFER_KEPT) {
        p->in = (afo_array **)p_in;
        *arg = p;
    } else {
        t->copy = *p;
        t->copy.in = (afo_array **)p_in;
        *arg = &t->copy;
    }
    return AFO_OK;
}

static void taken_done(taken_input *t) {
    if (t->along) {
        taken_done(t->along);
        free(t->along);
    }
    t->node->in = t->own_in;
    moved_free(&t->moved);
}

/* The input of p that p's kernel takes along (deferred), or NULL. */
static afo_array *deferred_input(const afo_array *p) {
    const int k = first_deferred(p);
    return k < p->nin ? p->in[k] : NULL;
}

/* The nodes a fused kernel computed along: its producer p, and p's own
 * deferred input, and so on down the chain. */
static int64_t chain_length(const afo_array *p) {
    int64_t n = 0;
    for (; p; p = deferred_input(p)) n++;
    return n;
}

/* a's kernel with its deferred inputs (in[k] the first) folded in; *done
 * false when the kernel declined. Kept producers it computed are evaluated
 * nodes afterwards. */
static afo_status eval_fused(afo_array *a, int k, bool *done) {
    afo_fused_fn fn = afo_op_fused(a->device, a->op, a->in[k]->op, NULL);
    moved_inputs moved = {.ptrs = moved.ptrs_stack};
    taken_input taken[1 + FUSED_MAX_KEPT];
    int ntaken = 0;
    afo_array *const *in;
    afo_status st = inputs_on(a, a->device, false, &moved, &in);
    afo_array *args[FUSED_MAX_INPUTS];
    for (int i = 0; i < a->nin; i++) args[i] = in[i];
    for (int i = 0; i < a->nin && st == AFO_OK; i++)
        if (a->in[i]->deferred) {
            assert(ntaken < 1 + FUSED_MAX_KEPT);
            st = take_input(a->in[i], a->device, &taken[ntaken++], &args[i]);
        }
    if (st == AFO_OK) st = fn(a, args, a->nin, k, done);
    int64_t computed = 0;
    for (int t = 0; t < ntaken; t++) {
        afo_array *p = taken[t].node;
        taken_done(&taken[t]);
        computed += chain_length(p);
        if (p->deferred != AFO_DEFER_KEPT) continue;
        if (st == AFO_OK && *done) {
            assert(p->buf && "a fused kernel left a kept producer without data");
            p->deferred = AFO_DEFER_NONE; /* an evaluated node now, read as any other */
            evaluated(p);
        } else if (p->buf) {
            /* failed after giving it data it may not have finished: unevaluated
             * again, to be computed afresh by a later evaluation */
            assert(st != AFO_OK && "a declining kernel gave a kept producer data");
            afo_buffer_release(p->buf);
            p->buf = NULL;
        }
    }
    moved_free(&moved);
    if (st == AFO_OK && *done) atomic_fetch_add(&g_fused, computed);
    return st;
}

static afo_status eval_node(afo_array *a);

/* A declined consumer's kept producers, each evaluated apart; whether
 * there were any. */
static afo_status eval_kept_apart(afo_array *a, bool *any) {
    *any = false;
    for (int i = 0; i < a->nin; i++)
        if (a->in[i]->deferred == AFO_DEFER_KEPT) {
            a->in[i]->deferred = AFO_DEFER_NONE;
            *any = true;
            AFO_TRY(eval_node(a->in[i]));
        }
    return AFO_OK;
}

static afo_status eval_node(afo_array *a) {
    int k = first_deferred(a);
    if (k < a->nin) {
        bool done = false, kept = false, profile = afo_profile_enabled();
        double t0 = profile ? afo_profile_now() : 0;
        AFO_TRY(eval_fused(a, k, &done));
        if (!done) AFO_TRY(eval_kept_apart(a, &kept));
        if (kept && (k = first_deferred(a)) < a->nin) AFO_TRY(eval_fused(a, k, &done));
        /* a chain declined: the pair alone, the producer's own input first */
        afo_array *tail = done || k == a->nin ? NULL : deferred_input(a->in[k]);
        if (tail) {
            tail->deferred = AFO_DEFER_NONE;
            AFO_TRY(eval_node(tail));
            AFO_TRY(eval_fused(a, k, &done));
        }
        if (profile && done) afo_profile_op(a->op, a->device, afo_profile_now() - t0);
        if (done) {
            evaluated(a);
            return AFO_OK;
        }
        if (k < a->nin) {
            a->in[k]->deferred = AFO_DEFER_NONE;
            AFO_TRY(eval_node(a->in[k]));
        }
    }
    const afo_op_def *def = afo_op_get(a->op);
    if (!def) return afo_error(AFO_ERR_UNSUPPORTED, "op %d has no definition", (int)a->op);
    /* an op the device has no kernel for runs on the CPU */
    if (!def->kernel[a->device]) {
        if (a->device != AFO_CPU) atomic_fetch_add(&g_fallbacks, 1);
        a->device = AFO_CPU;
    }
    if (!def->kernel[a->device]) return afo_error(AFO_ERR_UNSUPPORTED, "%s: no CPU kernel", def->name);
    moved_inputs moved = {.ptrs = moved.ptrs_stack};
    afo_array *const *in;
    bool profile = afo_profile_enabled();
    double t0 = profile ? afo_profile_now() : 0;
    afo_status st = inputs_on(a, a->device, false, &moved, &in);
    if (st == AFO_OK) st = def->kernel[a->device](a, in, a->nin, &a->attrs);
    moved_free(&moved);
    if (profile) afo_profile_op(a->op, a->device, afo_profile_now() - t0);
    if (st != AFO_OK) return st;
    evaluated(a);
    return AFO_OK;
}

afo_status afo_eval(afo_array *const *arrays, int n) {
    afo_array **order = NULL;
    size_t count = 0;
    double t0 = afo_profile_enabled() ? afo_profile_now() : 0;
    AFO_TRY(afo_graph_topo(arrays, n, false, &order, &count));
    mark_fusions(order, count);
    afo_status st = AFO_OK;
    for (size_t i = 0; i < count && st == AFO_OK; i++)
        if (!order[i]->deferred) st = eval_node(order[i]);
    free(order);
    if (t0 > 0) afo_profile_eval(count, afo_profile_now() - t0);
    return st;
}

afo_status afo_eval1(afo_array *a) { return afo_eval(&a, 1); }

/* Brings an evaluated array's data to the host as a dense buffer (same
 * identity): strided views are compacted, device data is copied down once. */
static afo_status to_host_dense(afo_array *a) {
    afo_buffer *host = afo_buffer_on(a->buf, AFO_CPU);
    if (!host) return afo_last_status();
    if (a->contiguous) return AFO_OK;
    afo_buffer *buf = afo_buffer_alloc(AFO_CPU, afo_array_nbytes(a));
    if (!buf) return AFO_ERR_OUT_OF_MEMORY;
    afo_array view = *a;
    view.buf = host;
    afo_cpu_copy(&view, buf->data, a->dtype);
    afo_buffer_release(a->buf);
    a->buf = buf;
    a->device = AFO_CPU;
    a->offset = 0;
    afo_contiguous_strides(a->ndim, a->shape, a->strides);
    a->contiguous = true;
    return AFO_OK;
}

const void *afo_array_data(afo_array *a) {
    if (!a) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_array_data: array is NULL");
    if (afo_eval1(a) != AFO_OK || to_host_dense(a) != AFO_OK) return NULL;
    return (const char *)afo_buffer_on(a->buf, AFO_CPU)->data + a->offset * (int64_t)afo_dtype_size(a->dtype);
}

afo_status afo_array_read(afo_array *a, afo_dtype dtype, void *dst, size_t dst_bytes) {
    if (!a || !dst) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_read: NULL argument");
    if ((unsigned)dtype >= AFO_DTYPE_COUNT)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_read: invalid dtype %d", (int)dtype);
    size_t need = (size_t)a->size * afo_dtype_size(dtype);
    if (dst_bytes < need)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_read: destination holds %zu bytes, %zu needed",
                         dst_bytes, need);
    AFO_TRY(afo_eval1(a));
    afo_array view = *a;
    afo_buffer *fetched = NULL;
    if (a->buf->device == AFO_CPU) view.buf = a->buf;
    else if (a->buf->copy) view.buf = a->buf->copy;
    else view.buf = fetched = afo_buffer_fetch(a->buf);
    if (!view.buf) return afo_last_status();
    afo_cpu_copy(&view, dst, dtype);
    afo_buffer_release(fetched);
    return AFO_OK;
}

afo_status afo_array_read_start(afo_array *a, afo_pending_read *r) {
    if (!a || !r) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_read_start: NULL argument");
    AFO_TRY(afo_eval1(a));
    size_t n = afo_array_nbytes(a);
    if (n > AFO_READ_BYTES || !a->contiguous)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_read_start: %zu bytes (at most %d, contiguous)", n,
                         AFO_READ_BYTES);
    const afo_backend *be = a->buf->device == AFO_CPU ? NULL : afo_backend_of(a->buf->device);
    *r = (afo_pending_read){.be = be && be->read_start ? be : NULL, .nbytes = n};
    if (r->be) return r->be->read_start(afo_array_ptr(a), n, &r->ticket);
    return afo_array_read(a, a->dtype, r->bytes, n);
}

afo_status afo_array_read_finish(afo_pending_read *r, void *dst) {
    if (!r || !dst) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_read_finish: NULL argument");
    if (r->be) return r->be->read_finish(r->ticket, dst, r->nbytes);
    memcpy(dst, r->bytes, r->nbytes);
    return AFO_OK;
}

afo_status afo_array_assign(afo_array *dst, afo_array *src) {
    if (!dst || !src) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_assign: NULL argument");
    AFO_TRY(afo_eval1(dst));
    AFO_TRY(afo_eval1(src));
    const afo_buffer *b = dst->buf;
    if (dst->dtype != src->dtype || dst->size != src->size || !dst->contiguous || !src->contiguous ||
        b->device != src->buf->device || !afo_buffer_own_bytes(b))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_assign: needs two contiguous arrays of one dtype, size and "
                                                   "device, the destination's bytes its own");
    size_t n = afo_array_nbytes(dst);
    if (b->device == AFO_CPU) {
        memmove(afo_array_ptr(dst), afo_array_ptr(src), n);
        return AFO_OK;
    }
    return afo_backend_of(b->device)->copy(afo_array_ptr(dst), afo_array_ptr(src), n);
}

afo_status afo_array_write(afo_array *a, const void *src, size_t nbytes) {
    if (!a || !src) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_write: NULL argument");
    AFO_TRY(afo_eval1(a));
    size_t need = afo_array_nbytes(a);
    if (nbytes != need)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_write: %zu bytes given for an array of %zu", nbytes, need);
    const afo_buffer *b = a->buf;
    if (!a->contiguous || !afo_buffer_own_bytes(b))
        return afo_error(AFO_ERR_INVALID_ARGUMENT,
                         "afo_array_write: the array is a strided view or shares its bytes with a file or a copy");
    char *dst = (char *)afo_array_ptr(a);
    if (b->device == AFO_CPU) {
        memcpy(dst, src, nbytes);
        return AFO_OK;
    }
    return afo_backend_of(b->device)->upload(dst, src, nbytes);
}

afo_status afo_array_item(afo_array *a, double *value) {
    if (!a || !value) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_item: NULL argument");
    if (a->size != 1)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_item: array has %lld elements, not 1",
                         (long long)a->size);
    return afo_array_read(a, AFO_FLOAT64, value, sizeof *value);
}
