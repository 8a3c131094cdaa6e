#include "core/internal.h"

void afo_register_random_ops(void) {}
