/* Gemma 3 (text): RMSNorm scaling by (1 + w), embeddings times sqrt(hidden),
 * norms around both attention and MLP, q/k norms, softmax scale
 * query_pre_attn_scalar^-1/2, GELU-tanh, and a pattern of sliding-window
 * layers (local RoPE base) with every sliding_window_pattern-th layer global.
 * "gemma3" is the multimodal checkpoint: its text_config, weights under
 * language_model. */
#include <math.h>

#include "models/models.h"

/* Gemma3TextConfig's defaults: the multimodal configs leave most fields out. */
#define GEMMA3_DEFAULTS                                                                                         \
    "{\"vocab_size\": 262208, \"hidden_size\": 2304, \"intermediate_size\": 9216, \"num_hidden_layers\": 26, " \
    "\"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"head_dim\": 256, "                              \
    "\"hidden_activation\": \"gelu_pytorch_tanh\", \"max_position_embeddings\": 131072, "                      \
    "\"rms_norm_eps\": 1e-6, \"bos_token_id\": 2, \"eos_token_id\": 1, \"pad_token_id\": 0, "                  \
    "\"tie_word_embeddings\": true, \"rope_theta\": 1000000.0, \"rope_local_base_freq\": 10000.0, "             \
    "\"query_pre_attn_scalar\": 256, \"sliding_window\": 4096, \"sliding_window_pattern\": 6}"

static afo_status configure(model_config *c, const cJSON *j) {
    c->attn_scale = 1.0 / sqrt(json_num(j, "query_pre_attn_scalar", (double)c->head_dim));
    if (!cJSON_GetObjectItemCaseSensitive(j, "layer_types")) {
        int64_t pattern = json_int(j, "sliding_window_pattern", json_int(j, "_sliding_window_pattern", 6));
        if (pattern < 1) return afo_error(AFO_ERR_FORMAT, "config: sliding_window_pattern must be positive");
        for (int i = 0; i < c->layers; i++) c->layer_sliding[i] = c->sliding_window > 0 && (i + 1) % pattern != 0;
    }
    /* 4.x: the local layers use default RoPE with their own base */
    if (!cJSON_GetObjectItemCaseSensitive(j, "rope_parameters")) {
        AFO_TRY(rope_parse(NULL, j, &c->rope_sliding));
        c->rope_sliding.theta = json_num(j, "rope_local_base_freq", 10000.0);
    }
    return AFO_OK;
}

#define GEMMA3_FLAGS (ARCH_QK_NORM | ARCH_SANDWICH_NORM | ARCH_NORM_PLUS_ONE | ARCH_EMBED_SCALE)
const arch_desc arch_gemma3_text = {
    .model_type = "gemma3_text", .flags = GEMMA3_FLAGS, .defaults = GEMMA3_DEFAULTS, .configure = configure};
const arch_desc arch_gemma3 = {
    .model_type = "gemma3", .flags = GEMMA3_FLAGS, .defaults = GEMMA3_DEFAULTS, .configure = configure};
