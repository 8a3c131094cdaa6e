/* Qwen2 / Qwen2.5: Llama with q/k/v biases (and no o_proj bias); the sliding
 * window only with use_sliding_window, from layer max_window_layers on. */
#include "models/models.h"

const arch_desc arch_qwen2 = {.model_type = "qwen2", .flags = ARCH_QKV_BIAS | ARCH_WINDOW_QWEN,
                              .defaults = "{\"rms_norm_eps\": 1e-6}"};
