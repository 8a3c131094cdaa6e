/* The op table: one entry per op, filled by each op family at first use and
 * then by the accelerator backends built in, which add their kernels. */
#include <assert.h>
#include <pthread.h>

#include "core/internal.h"
#include "ops/decode_step.h"

static afo_op_def g_defs[AFO_OP_COUNT];
static bool g_present[AFO_OP_COUNT];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void register_all(void) {
    afo_register_elementwise_ops();
    afo_register_shape_ops();
    afo_register_reduce_ops();
    afo_register_linalg_ops();
    afo_register_indexing_ops();
    afo_register_nn_ops();
    afo_register_random_ops();
    afo_register_quant_ops();
    afo_register_decode_step_op();
#ifdef AFO_HAVE_CUDA
    afo_register_cuda_kernels();
#endif
}

void afo_op_register(afo_op op, const afo_op_def *def) {
    g_defs[op] = *def;
    g_present[op] = true;
}

void afo_op_set_kernel(afo_op op, afo_device device, afo_kernel_fn kernel) {
    assert(g_present[op] && "a backend kernel for an op that has no definition");
    g_defs[op].kernel[device] = kernel;
}

/* A handful of pairs in all: a list, behind a per-consumer flag that spares
 * the search for every other node of a graph. */
#define MAX_FUSIONS 16
typedef struct fusion {
    afo_device device;
    afo_op consumer, producer;
    afo_fused_fn fn;
    bool kept;
} fusion;
static fusion g_fusions[MAX_FUSIONS];
static int g_nfusions;
static bool g_consumes[AFO_OP_COUNT];

static void add_fusion(afo_device device, afo_op consumer, afo_op producer, afo_fused_fn fn, bool kept) {
    assert(g_present[consumer] && g_present[producer] && g_nfusions < MAX_FUSIONS);
    g_fusions[g_nfusions++] = (fusion){device, consumer, producer, fn, kept};
    g_consumes[consumer] = true;
}

void afo_op_set_fused(afo_device device, afo_op consumer, afo_op producer, afo_fused_fn fn) {
    add_fusion(device, consumer, producer, fn, false);
}

void afo_op_set_fused_kept(afo_device device, afo_op consumer, afo_op producer, afo_fused_fn fn) {
    add_fusion(device, consumer, producer, fn, true);
}

afo_fused_fn afo_op_fused(afo_device device, afo_op consumer, afo_op producer, bool *kept) {
    pthread_once(&g_once, register_all);
    if ((unsigned)consumer >= AFO_OP_COUNT || !g_consumes[consumer]) return NULL;
    for (int i = 0; i < g_nfusions; i++) {
        const fusion *f = &g_fusions[i];
        if (f->device == device && f->consumer == consumer && f->producer == producer) {
            if (kept) *kept = f->kept;
            return f->fn;
        }
    }
    return NULL;
}

const afo_op_def *afo_op_get(afo_op op) {
    pthread_once(&g_once, register_all);
    return (unsigned)op < AFO_OP_COUNT && g_present[op] ? &g_defs[op] : NULL;
}
