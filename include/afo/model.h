/* afo — Hugging Face causal language models: load a model directory (or a
 * hub id from the local Hugging Face cache), run its forward pass with a KV
 * cache, and write randomly initialised models for tests and benchmarks.
 *
 * Supported model_types: llama, mistral, qwen2, qwen3, qwen3_moe,
 * gemma3_text (and gemma3's text part), phi3. Weights stay in their storage
 * dtype, memory-mapped; the forward pass computes in float32 unless asked to
 * compute in the storage dtype. */
#ifndef AFO_MODEL_H
#define AFO_MODEL_H

#include "afo/array.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct afo_model afo_model;
typedef struct afo_kv_cache afo_kv_cache;

/* ---- finding a model ---- */

/* Resolves `name_or_path` to a model directory: an existing directory is
 * used as is; otherwise a hub id "ORG/NAME" is looked up, offline, in the
 * Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub) as models--ORG--NAME/snapshots/REV, REV being
 * refs/main when present. A miss is AFO_ERR_IO naming every place tried. */
afo_status afo_model_resolve(const char *name_or_path, char *dir, size_t dir_size);

/* ---- loading ---- */

typedef struct afo_model_options {
    const char *config_path; /* NULL: DIR/config.json */
    int compute_in_storage_dtype; /* 0: compute in float32; 1: in the weights' dtype */
} afo_model_options;

/* Loads config.json (transformers 4.x or 5.x layout), generation_config.json
 * when present, and the weights (every tensor the architecture needs is
 * checked for presence and shape before this returns). opts may be NULL. */
afo_status afo_model_load(const char *name_or_path, const afo_model_options *opts, afo_model **out);
void afo_model_free(afo_model *m);

/* ---- what was loaded ---- */

const char *afo_model_type(const afo_model *m);   /* config's model_type, e.g. "qwen3" */
const char *afo_model_dir(const afo_model *m);
int64_t afo_model_vocab_size(const afo_model *m);
int afo_model_num_layers(const afo_model *m);
int64_t afo_model_hidden_size(const afo_model *m);
int64_t afo_model_max_positions(const afo_model *m); /* max_position_embeddings */
afo_dtype afo_model_dtype(const afo_model *m);        /* storage dtype of the weights */
afo_dtype afo_model_compute_dtype(const afo_model *m);
int64_t afo_model_num_params(const afo_model *m);     /* tied embeddings counted once */
size_t afo_model_weight_bytes(const afo_model *m);

/* Sampling defaults and special tokens, from generation_config.json over
 * config.json; absent fields keep transformers' GenerationConfig defaults
 * and absent token ids are -1. */
#define AFO_MAX_EOS 8
typedef struct afo_generation_config {
    int32_t bos_token_id, pad_token_id;
    int32_t eos_token_ids[AFO_MAX_EOS];
    int num_eos;
    int do_sample;             /* default 0 */
    double temperature;        /* default 1.0 */
    int top_k;                 /* default 50 */
    double top_p;              /* default 1.0 */
    double min_p;              /* default 0 (off) */
    double repetition_penalty; /* default 1.0 */
    int64_t max_new_tokens;    /* default -1 (unset) */
} afo_generation_config;
const afo_generation_config *afo_model_generation_config(const afo_model *m);
int afo_model_is_eos(const afo_model *m, int32_t id);

/* Copies the weights to device `d` now rather than on first use (the
 * forward pass runs where the default device says; see afo/device.h). */
afo_status afo_model_to_device(afo_model *m, afo_device d);

/* ---- KV cache ---- */

/* How a cache stores keys and values. The two features are mlx-lm's
 * QuantizedKVCache (--kv-bits) and RotatingKVCache (--max-kv-size); like
 * mlx-lm, they cannot be combined. */
typedef struct afo_kv_cache_options {
    /* 0: keys and values in the compute dtype. 2, 3, 4, 5, 6 or 8: in MLX's
     * affine format (afo_quantize along head_dim), attended to through
     * afo_quantized_matmul. */
    int kv_bits;
    int kv_group_size;       /* 32, 64 or 128, dividing head_dim (with kv_bits) */
    /* Quantization starts after the first forward that leaves the cache
     * holding at least this many positions (mlx-lm's quantized_kv_start);
     * until then the cache is unquantized. */
    int64_t quantized_start;
    /* 0: unbounded. Else at most max_kv_size positions are kept: the first
     * `keep`, then a ring of the most recent max_kv_size - keep. RoPE
     * positions keep counting, so generation goes on past max_kv_size. */
    int64_t max_kv_size;
    int keep; /* 0 <= keep < max_kv_size */
    /* The dtype the keys and values are stored in (a quantized cache's
     * scales and biases too): AFO_FLOAT32, AFO_BFLOAT16 or AFO_FLOAT16, or
     * 0 (AFO_BOOL) for the model's compute dtype. A 16-bit cache under
     * float32 compute (llama.cpp's f16 cache, mlx-lm's bfloat16 one) halves
     * the cache and what attention reads from it a step; the keys and
     * values are rounded once, as they are stored. */
    afo_dtype kv_dtype;
} afo_kv_cache_options;
/* kv_bits 0, kv_group_size 64, quantized_start 0, max_kv_size 0, keep 4,
 * kv_dtype 0 (the compute dtype). */
afo_kv_cache_options afo_kv_cache_defaults(void);

/* Per-layer key/value buffers for `batch` sequences, preallocated in steps
 * of 256 positions and grown as needed (up to max_position_embeddings is not
 * enforced: RoPE extrapolates as transformers does). */
afo_status afo_kv_cache_create(const afo_model *m, int64_t batch, afo_kv_cache **out);
/* The same with options (NULL: the defaults); invalid options are
 * AFO_ERR_INVALID_ARGUMENT naming the field. */
afo_status afo_kv_cache_create_ex(const afo_model *m, int64_t batch, const afo_kv_cache_options *opts,
                                  afo_kv_cache **out);
void afo_kv_cache_free(afo_kv_cache *c);
/* Length 0 and, for a quantized cache, unquantized again. */
void afo_kv_cache_reset(afo_kv_cache *c);
/* Positions fed so far (a rotating cache holds at most max_kv_size of them). */
int64_t afo_kv_cache_length(const afo_kv_cache *c);
/* Forgets positions >= length (e.g. to reuse a shared prompt prefix); a
 * rotating cache that has dropped positions cannot be truncated. */
afo_status afo_kv_cache_truncate(afo_kv_cache *c, int64_t length);
int64_t afo_kv_cache_batch(const afo_kv_cache *c);
/* Bytes of the key/value buffers allocated now (packed words, scales and
 * biases for a quantized cache). */
size_t afo_kv_cache_nbytes(const afo_kv_cache *c);
/* Whether the buffers are quantized now (kv_bits set and quantized_start
 * reached). */
int afo_kv_cache_is_quantized(const afo_kv_cache *c);
/* The dtype keys and values are stored in (a quantized cache's scales and
 * biases too): kv_dtype, or the model's compute dtype when that is 0. */
afo_dtype afo_kv_cache_dtype(const afo_kv_cache *c);

/* Bytes one decode step (one new position per sequence) reads at the
 * cache's current length, the numerator of a bandwidth bound: every weight
 * once, except that of an untied embedding table only the batch's rows
 * (a tied one is read whole as the output head), plus the keys and values
 * attention reads in the cache's current storage (compute dtype, or packed
 * words, scales and biases once quantized): length + 1 positions per
 * layer, at most max_kv_size in a rotating cache or the window in a
 * sliding-window layer. MoE experts all count, an upper bound. A NULL
 * argument or a cache of another model is AFO_ERR_INVALID_ARGUMENT. */
afo_status afo_model_decode_bytes(const afo_model *m, const afo_kv_cache *c, size_t *bytes);

/* ---- the forward pass ---- */

typedef struct afo_forward_options {
    /* logits only for the last position ([batch, 1, vocab]): what decoding
     * needs, and it skips the vocabulary projection of the other rows */
    int last_only;
    /* when set: receives num_layers + 1 new arrays [batch, n, hidden], as
     * transformers' output_hidden_states (0: embeddings, L: after the
     * final norm) */
    afo_array **hidden_states;
    /* without a cache only: added to every layer's attention scores on top
     * of the causal (and sliding-window) rule; additive float or bool (false
     * hides), broadcastable to [batch, heads, n, n] */
    afo_array *attention_mask;
} afo_forward_options;

/* Runs ids [batch, n] (row-major) at positions cache length .. +n-1 and
 * appends their keys and values to the cache (NULL cache: positions 0..n-1,
 * nothing kept). *logits receives evaluated float32 [batch, n, vocab]. On
 * error the cache holds its previous length. */
afo_status afo_model_forward(afo_model *m, afo_kv_cache *cache, const int32_t *ids, int64_t batch, int64_t n,
                             afo_array **logits);
afo_status afo_model_forward_ex(afo_model *m, afo_kv_cache *cache, const int32_t *ids, int64_t batch, int64_t n,
                                const afo_forward_options *opts, afo_array **logits);

/* ---- random models ---- */

/* Writes a complete model directory for `config_path` (any supported
 * architecture): config.json (and generation_config.json beside it) copied,
 * and every weight under its real name and shape, drawn from N(0, 1/fan_in)
 * (norm weights ~1) in `dtype` (-1: the config's dtype), sharded with a
 * model.safetensors.index.json when over 2 GB. A directory that already
 * holds weights (*.safetensors) is refused (AFO_ERR_IO), left as it was. */
afo_status afo_model_write_random(const char *config_path, const char *out_dir, int dtype, uint64_t seed);

/* ---- converting ---- */

typedef struct afo_convert_options {
    int dtype;      /* afo_dtype of the output's float tensors; -1: the model's */
    int bits;       /* 2, 3, 4, 5, 6 or 8: quantize; 0: write unquantized (dequantizing a quantized model) */
    int group_size; /* 32, 64 or 128 when bits */
    /* NULL: every matrix gets bits (but for the architecture's own rule, as
     * mlx-lm's model quant_predicate: Qwen3-MoE routers 8 bits, group 64);
     * or one of mlx-lm's recipes "mixed_2_6", "mixed_3_4", "mixed_3_6",
     * "mixed_4_6" (low_high bits, group_size per matrix; needs bits) */
    const char *predicate;
    /* called (may be NULL) after each output tensor is computed, with the
     * tensors and bytes done so far and in all */
    void (*progress)(void *ctx, int done, int total, size_t bytes_done, size_t bytes_total);
    void *progress_ctx;
} afo_convert_options;

/* Writes the model at `in` to the directory `out` in MLX's layout: MoE
 * experts stacked as mlp.switch_mlp.{gate,up,down}_proj [E, out, in]; with
 * bits, every Linear, expert stack and embedding matrix whose input size is
 * a multiple of group_size becomes P.weight (uint32), P.scales, P.biases,
 * and config.json gets "quantization" (with a {"group_size", "bits"} entry
 * per path that departs from the global choice) and an identical
 * "quantization_config"; other tensors are cast to dtype. Tokenizer files
 * and generation_config.json are copied. Shards of at most 5 GB (with an
 * index when several), written in a temporary sibling renamed to `out`
 * (which must not exist, or be empty). *bits_per_weight (may be NULL)
 * receives the bits of all tensor data written per original parameter. */
afo_status afo_model_convert(const char *in, const char *out, const afo_convert_options *opts,
                             double *bits_per_weight);

#ifdef __cplusplus
}
#endif
#endif
