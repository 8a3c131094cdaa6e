/* Llama (and SmolLM2, TinyLlama, Llama 3.x): the plain pre-norm block.
 * RoPE scaling (linear, dynamic, llama3, yarn) is shared with every
 * architecture in rope.c; attention_bias and mlp_bias are common fields. */
#include "models/models.h"

const arch_desc arch_llama = {.model_type = "llama", .defaults = "{\"rms_norm_eps\": 1e-6}"};
