#include "core/internal.h"

void afo_register_indexing_ops(void) {}
