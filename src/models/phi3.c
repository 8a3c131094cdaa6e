/* Phi-3: fused qkv_proj ([q; k; v] rows) and gate_up_proj ([gate; up] rows),
 * partial_rotary_factor, and sliding_window (when set) on every layer. */
#include "models/models.h"

const arch_desc arch_phi3 = {.model_type = "phi3", .flags = ARCH_QKV_FUSED | ARCH_GATE_UP_FUSED | ARCH_WINDOW_ALL,
                             .defaults = "{\"rms_norm_eps\": 1e-5}"};
