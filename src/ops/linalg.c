#include "core/internal.h"

void afo_register_linalg_ops(void) {}
