/* The op table: one entry per op, filled by each op family at first use. */
#include <pthread.h>

#include "core/internal.h"

static const afo_op_def *g_table[AFO_OP_COUNT];
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
}

void afo_op_register(afo_op op, const afo_op_def *def) { g_table[op] = def; }

const afo_op_def *afo_op_get(afo_op op) {
    pthread_once(&g_once, register_all);
    return (unsigned)op < AFO_OP_COUNT ? g_table[op] : NULL;
}
