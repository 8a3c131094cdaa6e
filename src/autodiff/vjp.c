/* Reverse-mode differentiation: walks the graph from the output in reverse
 * topological order, asking each op's vjp for its inputs' cotangents. Only
 * nodes on a path to a requested input are visited. */
#include <stdlib.h>

#include "core/compose.h"

/* Pointer -> position in the topological order (open addressing). */
typedef struct node_index {
    afo_array **keys;
    size_t *vals;
    size_t cap;
} node_index;

static size_t hash_ptr(const void *p, size_t cap) {
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static bool index_build(node_index *ix, afo_array **order, size_t count) {
    ix->cap = 16;
    while (ix->cap < count * 2) ix->cap *= 2;
    ix->keys = calloc(ix->cap, sizeof *ix->keys);
    ix->vals = malloc(ix->cap * sizeof *ix->vals);
    if (!ix->keys || !ix->vals) return false;
    for (size_t i = 0; i < count; i++) {
        size_t h = hash_ptr(order[i], ix->cap);
        while (ix->keys[h]) h = (h + 1) & (ix->cap - 1);
        ix->keys[h] = order[i];
        ix->vals[h] = i;
    }
    return true;
}

static ptrdiff_t index_find(const node_index *ix, const afo_array *a) {
    for (size_t h = hash_ptr(a, ix->cap); ix->keys[h]; h = (h + 1) & (ix->cap - 1))
        if (ix->keys[h] == a) return (ptrdiff_t)ix->vals[h];
    return -1;
}

static afo_status accumulate(afo_array **slot, afo_array *g) {
    if (!*slot) {
        *slot = g;
        return AFO_OK;
    }
    afo_array *sum = ow_add(*slot, g);
    *slot = sum;
    return sum ? AFO_OK : AFO_ERR_INVALID_ARGUMENT;
}

afo_status afo_vjp(afo_array *output, afo_array *cotangent, afo_array *const *wrt, int n, afo_array **grads) {
    if (!output || (n > 0 && (!wrt || !grads)))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_vjp: NULL argument");
    for (int i = 0; i < n; i++) grads[i] = NULL;
    afo_array **order = NULL;
    size_t count = 0;
    AFO_TRY(afo_graph_topo(&output, 1, true, &order, &count));
    node_index ix = {0};
    bool *needed = calloc(count ? count : 1, sizeof *needed);
    afo_array **cot = calloc(count ? count : 1, sizeof *cot);
    afo_status st = AFO_OK;
    if (!needed || !cot || !index_build(&ix, order, count)) {
        st = afo_error(AFO_ERR_OUT_OF_MEMORY, "afo_vjp: out of memory");
        goto done;
    }
    /* a node is needed when a requested input lies below it */
    for (int i = 0; i < n; i++) {
        ptrdiff_t k = wrt[i] ? index_find(&ix, wrt[i]) : -1;
        if (k >= 0) needed[k] = true;
    }
    for (size_t k = 0; k < count; k++)
        for (int i = 0; i < order[k]->nin && !needed[k]; i++)
            needed[k] = needed[index_find(&ix, order[k]->in[i])];

    cot[count - 1] = cotangent ? afo_retain(cotangent) : afo_full(1.0, output->dtype, output->ndim, output->shape);
    if (cotangent && (cotangent->ndim != output->ndim ||
                      memcmp(cotangent->shape, output->shape, sizeof(int64_t) * (size_t)output->ndim))) {
        st = afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_vjp: cotangent shape differs from the output's");
        goto done;
    }
    for (size_t k = count; k-- > 0 && st == AFO_OK;) {
        afo_array *a = order[k];
        if (!cot[k] || a->nin == 0) continue;
        const afo_op_def *def = afo_op_get(a->op);
        if (!def->vjp) continue; /* not differentiable: no gradient flows */
        for (int i = 0; i < a->nin && st == AFO_OK; i++) {
            ptrdiff_t j = index_find(&ix, a->in[i]);
            if (!needed[j]) continue;
            afo_array *g = NULL;
            st = def->vjp(a, cot[k], i, &g);
            if (st == AFO_OK && g) st = accumulate(&cot[j], g);
        }
        if (a != output) { /* free cotangents as soon as they were pulled back */
            bool requested = false;
            for (int i = 0; i < n; i++) requested |= wrt[i] == a;
            if (!requested) {
                afo_release(cot[k]);
                cot[k] = NULL;
            }
        }
    }
    for (int i = 0; i < n && st == AFO_OK; i++) {
        ptrdiff_t k = wrt[i] ? index_find(&ix, wrt[i]) : -1;
        grads[i] = k >= 0 && cot[k] ? afo_retain(cot[k]) : (wrt[i] ? ow_zeros_like(wrt[i]) : NULL);
        if (!grads[i]) st = afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_vjp: input %d is NULL", i);
    }
done:
    for (size_t k = 0; cot && k < count; k++) afo_release(cot[k]);
    if (st != AFO_OK)
        for (int i = 0; i < n; i++) {
            afo_release(grads[i]);
            grads[i] = NULL;
        }
    free(cot);
    free(needed);
    free(ix.keys);
    free(ix.vals);
    free(order);
    return st;
}

afo_status afo_value_and_grad(afo_fn fn, void *userdata, afo_array *const *inputs, int n, afo_array **value,
                              afo_array **grads) {
    if (!fn || !value || (n > 0 && (!inputs || !grads)))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_value_and_grad: NULL argument");
    *value = fn(inputs, n, userdata);
    if (!*value) return AFO_ERR_INVALID_ARGUMENT; /* fn set the error */
    if ((*value)->size != 1) {
        long long size = (long long)(*value)->size;
        afo_release(*value);
        *value = NULL;
        return afo_error(AFO_ERR_INVALID_ARGUMENT,
                         "afo_value_and_grad: the function returned %lld elements, not a scalar", size);
    }
    afo_status st = afo_vjp(*value, NULL, inputs, n, grads);
    if (st != AFO_OK) {
        afo_release(*value);
        *value = NULL;
    }
    return st;
}
