/* Qwen3: per-head RMSNorm of q and k before RoPE, head_dim given explicitly
 * (it need not be hidden / heads). */
#include "models/models.h"

const arch_desc arch_qwen3 = {.model_type = "qwen3", .flags = ARCH_QK_NORM | ARCH_WINDOW_QWEN,
                              .defaults = "{\"rms_norm_eps\": 1e-6}"};
