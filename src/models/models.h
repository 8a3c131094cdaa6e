/* Internal contract of the model layer: the parsed configuration, the
 * architecture descriptions (one file each), the weight table shared by the
 * loader and the random-model writer, and the forward pass. */
#ifndef AFO_MODELS_H
#define AFO_MODELS_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "afo/afo.h"
#include "afo/model.h"
#include "core/internal.h"

typedef enum rope_kind { ROPE_DEFAULT, ROPE_LINEAR, ROPE_DYNAMIC, ROPE_LLAMA3, ROPE_YARN } rope_kind;

/* One RoPE variant with every parameter transformers reads for it. */
typedef struct rope_params {
    rope_kind kind;
    double theta, factor;
    double low_freq_factor, high_freq_factor; /* llama3 */
    double beta_fast, beta_slow, attention_factor, mscale, mscale_all_dim; /* yarn */
    bool truncate;                                                          /* yarn */
    int64_t original_max_positions; /* llama3, yarn, dynamic */
} rope_params;

typedef enum activation { ACT_SILU, ACT_GELU, ACT_GELU_TANH } activation;

typedef struct model_config {
    char model_type[48];
    int64_t vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, max_positions;
    int64_t rotary_dims; /* head_dim * partial_rotary_factor */
    double eps;
    bool tie_embeddings, attention_bias, mlp_bias;
    afo_dtype dtype; /* torch_dtype / dtype; float32 when absent */
    activation act;
    rope_params rope_full, rope_sliding; /* sliding: the rope of sliding-window layers */
    int64_t sliding_window;              /* 0: none */
    bool *layer_sliding;                 /* [layers] */
    double attn_scale;                   /* softmax scale of q k^T */
    double final_softcap;                /* 0: none */
    /* mixture of experts */
    int64_t num_experts, experts_per_tok, moe_intermediate;
    bool norm_topk_prob;
    bool *layer_moe; /* [layers] */
    /* multimodal checkpoints keep the text model under another prefix */
    bool multimodal;
    /* config "quantization" (MLX): global bits and group size, and per-path
     * overrides; NULL for unquantized models */
    cJSON *quantization;
    afo_generation_config gen;
} model_config;

/* What distinguishes one architecture from another, over the shared
 * pre-norm transformer block. */
enum {
    ARCH_QKV_FUSED = 1 << 0,      /* self_attn.qkv_proj (phi3) */
    ARCH_GATE_UP_FUSED = 1 << 1,  /* mlp.gate_up_proj (phi3) */
    ARCH_QKV_BIAS = 1 << 2,       /* q/k/v biases regardless of attention_bias (qwen2) */
    ARCH_QK_NORM = 1 << 3,        /* per-head RMSNorm of q and k (qwen3, gemma3) */
    ARCH_SANDWICH_NORM = 1 << 4,  /* norms after attention and MLP too (gemma3) */
    ARCH_NORM_PLUS_ONE = 1 << 5,  /* RMSNorm scales by (1 + w) (gemma) */
    ARCH_EMBED_SCALE = 1 << 6,    /* embeddings times sqrt(hidden) (gemma) */
    ARCH_MOE = 1 << 7,            /* sparse experts (qwen3_moe) */
    ARCH_WINDOW_ALL = 1 << 8,     /* sliding_window, when set, applies to every layer */
    ARCH_WINDOW_QWEN = 1 << 9,    /* use_sliding_window / max_window_layers */
};

typedef struct arch_desc {
    const char *model_type;
    unsigned flags;
    /* JSON object of the config class's defaults for fields a config.json
     * may omit (may be NULL) */
    const char *defaults;
    /* Reads the architecture's own fields after the common ones (may be NULL). */
    afo_status (*configure)(model_config *c, const cJSON *json);
    /* mlx-lm's model quant_predicate (may be NULL: every matrix gets the
     * global bits): for the module at `path`, QUANT_OWN with *bits and
     * *group_size set, QUANT_GLOBAL, or QUANT_NONE (kept in float) */
    int (*quant_predicate)(const char *path, int *bits, int *group_size);
} arch_desc;

enum { QUANT_NONE, QUANT_GLOBAL, QUANT_OWN };

extern const arch_desc arch_llama, arch_mistral, arch_qwen2, arch_qwen3, arch_qwen3_moe, arch_gemma3_text,
    arch_gemma3, arch_phi3;

/* registry.c */
const arch_desc *arch_find(const char *model_type); /* NULL with the error naming the supported ones */

/* config.c: JSON helpers (absent or null keys give the default) and parsing. */
cJSON *json_read_file(const char *path);
int64_t json_int(const cJSON *o, const char *key, int64_t dflt);
double json_num(const cJSON *o, const char *key, double dflt);
bool json_bool(const cJSON *o, const char *key, bool dflt);
afo_status json_positive(const cJSON *o, const char *key, const char *file, int64_t *out);
afo_status rope_parse(const cJSON *params, const cJSON *config, rope_params *out);
/* Parses config.json (and generation_config.json in gen_dir when not NULL). */
afo_status config_load(const char *config_path, const char *gen_dir, model_config *c, const arch_desc **arch);
void config_free(model_config *c);

/* rope.c: inverse frequencies (as afo_rope's freqs: their reciprocals,
 * float32 [rotary_dims/2]) for sequences up to seq_len, and the factor the
 * attention scores get (yarn's attention_factor squared, else 1). */
afo_array *rope_freqs(const rope_params *p, int64_t rotary_dims, int64_t max_positions, int64_t seq_len,
                      double *score_factor);

/* A Linear or embedding matrix [out, in]: plain (w in a float dtype,
 * scales NULL) or MLX-quantized (w uint32 [out, in*bits/32], scales and
 * biases [out, in/group_size]). Every use goes through linear() or
 * embed_rows(), so architectures never see the difference. */
typedef struct linear_weight {
    afo_array *w, *scales, *biases;
    int bits, group_size;
} linear_weight;

/* The weights of one layer; which are set depends on the architecture. */
typedef struct layer_weights {
    afo_array *attn_norm, *attn_out_norm, *mlp_norm, *mlp_out_norm;
    linear_weight q, k, v, qkv, o;
    afo_array *q_bias, *k_bias, *v_bias, *o_bias, *q_norm, *k_norm;
    linear_weight gate, up, gate_up, down;
    afo_array *gate_bias, *up_bias, *down_bias;
    linear_weight router;
    linear_weight *experts; /* [num_experts][3]: gate, up, down */
    bool stacked_qkv, stacked_gate_up; /* qkv / gate_up made by afo_model_to_device, not from the file */
} layer_weights;

struct afo_model {
    char *dir;
    model_config cfg;
    const arch_desc *arch;
    afo_weights *weights;
    afo_dtype compute;
    linear_weight embed, lm_head; /* lm_head.w NULL when tied */
    afo_array *final_norm;
    layer_weights *layers;
    afo_array *freqs_full, *freqs_sliding; /* cached for seq_len <= max_positions */
    double score_full, score_sliding;
    struct tensor_spec *specs; /* every weight and the slot holding it */
    int nspecs;
    int64_t num_params;
    size_t weight_bytes;
};

/* weights.c: every tensor of a model with its expected shape and the slot
 * that receives it: the one list both loading and random-model use. */
typedef enum tensor_kind { TENSOR_EMBED, TENSOR_MATRIX, TENSOR_NORM, TENSOR_BIAS } tensor_kind;
typedef struct tensor_spec {
    char name[160];
    int ndim;
    int64_t shape[2];
    tensor_kind kind;
    afo_array **slot;
    linear_weight *linear; /* the matrix slot belongs to (&linear->w == slot); NULL for norms and biases */
    /* MoE experts: the expert's index, else -1. A layer's experts are listed
     * expert-major (gate, up, down each), so expert x's spec of a projection
     * is 3x after expert 0's; MLX stores each projection stacked, as
     * mlp.switch_mlp.<proj> [E, out, in] */
    int expert;
} tensor_spec;
/* The name of an expert spec's stacked MLX tensor (the path, without
 * ".weight", when path_only), e.g. model.layers.3.mlp.switch_mlp.up_proj. */
void model_switch_name(const tensor_spec *s, bool path_only, char *out, size_t n);
/* Allocates m->layers (and expert tables) and lists the tensors in
 * m->specs, named under `prefix` ("model." or a multimodal one). */
afo_status model_tensor_specs(afo_model *m, const char *prefix);
/* Opens m->dir's weights and fills every slot, checking names and shapes. */
afo_status model_bind_weights(afo_model *m);
/* Releases the slots, the layer tables and the spec list. */
void model_release_weights(afo_model *m);
/* The dtype the weights are stored in (a quantized matrix's: its scales'). */
afo_dtype model_storage_dtype(const afo_model *m);

/* random.c, shared with convert.c: copies a file (a missing optional one is
 * not an error), and writes model.safetensors.index.json mapping names[i]
 * to shard shard_of[i] of nshards. */
afo_status model_copy_file(const char *from, const char *to, bool required);
afo_status model_write_index(const char *dir, int n, const char *const *names, const int *shard_of, int nshards,
                             size_t total);

/* quant_recipe.c: the bits of each matrix when converting. */
typedef struct quant_plan {
    int bits, group_size; /* global; bits 0: no quantization */
    int low, high;        /* a mixed recipe's bits; low 0: none */
    int layer_location, num_layers;
    int (*arch)(const char *path, int *bits, int *group_size);
} quant_plan;
/* entry: what config "quantization" says of the path: nothing (the global
 * choice), {"group_size", "bits"}, or that and "mode" (mlx-lm's recipes) */
enum { QUANT_ENTRY_NONE, QUANT_ENTRY, QUANT_ENTRY_MODE };
typedef struct quant_choice {
    int bits, group_size; /* bits 0: kept in float */
    int entry;
} quant_choice;
afo_status quant_plan_init(const afo_model *m, const afo_convert_options *o, quant_plan *p);
/* For the module at path (its tensor name less ".weight") of input size in;
 * sizes that are not a multiple of the group size stay in float. */
quant_choice quant_plan_choose(const quant_plan *p, const char *path, int64_t in);

/* moe.c: the sparse MLP of one layer on x [T, hidden]. */
afo_array *moe_forward(const afo_model *m, const layer_weights *lw, afo_array *x);
/* transformer.c, shared with moe.c: act(x W_gate^T) * (x W_up^T) W_down^T. */
afo_array *gated_mlp(const model_config *c, afo_array *x, const linear_weight *gate, const linear_weight *up,
                     const linear_weight *down, afo_array *gate_bias, afo_array *up_bias, afo_array *down_bias);
/* x W^T (+ bias), W plain or quantized: the one place matrices are applied. */
afo_array *linear(afo_array *x, const linear_weight *w, afo_array *bias);

/* model.c: on a GPU a decode step is many small launches, and a
 * matrix-vector product streams its rows better the more there are: q, k, v
 * become one product and gate, up another (the fused forms phi3 stores),
 * where their formats agree and no bias is added; the parts become views of
 * the stacked rows, which prompts (more than a few rows) still use.
 * afo_model_to_device does it for devices other than the CPU, where it is
 * evaluated. */
afo_status model_stack_projections(afo_model *m);
/* Whether projections can be applied as one product: the same format
 * (plain dtype, or bits and group size), input size and no bias. */
bool linear_fusable(const linear_weight *p, int n);

/* fused_step.c: whether this step runs as one decode_step op, and the op
 * (x, the token's embedding, taken over; position NULL: the cache's length
 * as host data; pick NULL, or where the op writes the logits' argmax). */
bool fused_step_applies(const afo_model *m, afo_kv_cache *cache, int64_t batch, int64_t n,
                        const afo_forward_options *opts);
afo_array *fused_step(afo_model *m, afo_kv_cache *cache, afo_array *x, afo_array *position, afo_array *freqs,
                      double score, afo_array *pick);

/* transformer.c: the forward pass of one token whose id (int32 [1, 1]) and
 * position (int32 [1], at the cache's length when recorded) are device data
 * read when the step runs, so that a recording of it replays at any later
 * position within the cache's capacity (kv_begin_at's conditions; MoE
 * models, which route on the host, and dynamic RoPE past the trained
 * length are AFO_ERR_UNSUPPORTED). Given `pick` (int32, one element), a
 * fused step also writes the logits' argmax there, and *picked says
 * whether it did (the greedy pick without an argmax kernel). */
afo_status model_forward_at(afo_model *m, afo_kv_cache *cache, afo_array *id, afo_array *position,
                            afo_array *pick, bool *picked, afo_array **logits);

/* kv_cache.c: the forward pass's side of a KV cache. kv_begin prepares
 * room and masks for n new positions at the cache's length; kv_attend
 * stores a layer's k, v [B, kv_heads, n, head_dim] (taken over) and returns
 * the attention of q [B, heads, n, head_dim] (borrowed) over everything the
 * cache keeps; kv_end, given the status of the evaluation, evaluates the
 * buffers, advances the length and quantizes when due. */
afo_status kv_begin(afo_kv_cache *c, int64_t n);
afo_array *kv_attend(afo_kv_cache *c, int layer, afo_array *q, afo_array *k, afo_array *v, float scale,
                     bool sliding);
afo_status kv_end(afo_kv_cache *c, afo_status st);
/* A plain cache's keys (kv 0) or values (kv 1) of a layer, [B, kv_heads,
 * capacity, head_dim]; NULL for a quantized or rotating cache. */
afo_array *kv_plain_buffer(afo_kv_cache *c, int layer, int kv);
const afo_model *kv_cache_model(const afo_kv_cache *c);
/* Bytes of keys and values that attention reads in a decode step (one new
 * position) at the cache's length, in the buffers' current layout. */
size_t kv_step_bytes(const afo_kv_cache *c);
/* A decode step at a position known only when it runs (int32 [1], device
 * memory): kv_begin_at stands for kv_begin(c, 1) and kv_attend then writes
 * the slot and attends through the *_at ops over the whole buffers. Only
 * plain caches (not quantized, not rotating) with room for one more
 * position; AFO_ERR_UNSUPPORTED otherwise. kv_reserve makes room for
 * `capacity` positions up front; kv_advance counts n positions that
 * replayed steps stored. */
afo_status kv_begin_at(afo_kv_cache *c, afo_array *position);
afo_status kv_reserve(afo_kv_cache *c, int64_t capacity);
int64_t kv_capacity(const afo_kv_cache *c);
void kv_advance(afo_kv_cache *c, int64_t n);
/* mlx-lm's quantized_scaled_dot_product_attention: softmax(q K^T * scale +
 * mask) V for q [B, H, n, D], K and V as packed, scales, biases [B, K, L, *]
 * (H a multiple of K), mask additive [n, L] or NULL; one pair of quantized
 * matmuls per kv head. scratch holds B * K pointers. */
afo_array *quantized_sdpa(afo_array *q, afo_array *const *k, afo_array *const *v, float scale, afo_array *mask,
                          int group_size, int bits, afo_array **scratch);

#endif
