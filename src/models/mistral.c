/* Mistral: Llama with an optional sliding window over every layer. */
#include "models/models.h"

const arch_desc arch_mistral = {.model_type = "mistral", .flags = ARCH_WINDOW_ALL,
                                .defaults = "{\"rms_norm_eps\": 1e-6, \"sliding_window\": 4096}"};
