#include "core/internal.h"

void afo_register_nn_ops(void) {}
