/* Qwen3-MoE: Qwen3 attention; the MLP of most layers is a router (softmax,
 * top-k, optionally renormalised) over num_experts small gated MLPs. */
#include <string.h>

#include "models/models.h"

static afo_status configure(model_config *c, const cJSON *j) {
    c->num_experts = json_int(j, "num_experts", json_int(j, "num_local_experts", 0));
    c->experts_per_tok = json_int(j, "num_experts_per_tok", 8);
    c->moe_intermediate = json_int(j, "moe_intermediate_size", 768);
    c->norm_topk_prob = json_bool(j, "norm_topk_prob", false);
    int64_t step = json_int(j, "decoder_sparse_step", 1);
    if (c->num_experts < 0 || c->experts_per_tok < 1 || c->experts_per_tok > c->num_experts ||
        c->moe_intermediate < 1 || step < 1)
        return afo_error(AFO_ERR_FORMAT,
                         "config: qwen3_moe needs 1 <= num_experts_per_tok (%lld) <= num_experts (%lld), a positive "
                         "moe_intermediate_size and decoder_sparse_step",
                         (long long)c->experts_per_tok, (long long)c->num_experts);
    for (int i = 0; i < c->layers; i++) c->layer_moe[i] = (i + 1) % step == 0;
    const cJSON *only = cJSON_GetObjectItemCaseSensitive(j, "mlp_only_layers"), *e;
    cJSON_ArrayForEach(e, only) {
        if (cJSON_IsNumber(e) && e->valuedouble >= 0 && e->valuedouble < (double)c->layers)
            c->layer_moe[(int)e->valuedouble] = false;
    }
    return AFO_OK;
}

/* mlx-lm's Qwen3-MoE quant_predicate: the router decides which experts run,
 * so it keeps 8 bits whatever the rest gets. */
static int quant_predicate(const char *path, int *bits, int *group_size) {
    size_t n = strlen(path), k = strlen("mlp.gate");
    if (n < k || strcmp(path + n - k, "mlp.gate") != 0) return QUANT_GLOBAL;
    *bits = 8, *group_size = 64;
    return QUANT_OWN;
}

const arch_desc arch_qwen3_moe = {.model_type = "qwen3_moe", .flags = ARCH_QK_NORM | ARCH_MOE | ARCH_WINDOW_QWEN,
                                  .defaults = "{\"rms_norm_eps\": 1e-6}", .configure = configure,
                                  .quant_predicate = quant_predicate};
