/* afo — GGUF export: a llama-family Hugging Face model as one GGUF v3 file
 * that llama.cpp (and tools built on it) load, with llama.cpp's tensor
 * names, metadata and tokenizer (tokenizer.ggml.*). */
#ifndef AFO_GGUF_H
#define AFO_GGUF_H

#include "afo/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tensor types as ggml numbers them (they are stored in the file). */
typedef enum afo_gguf_type {
    AFO_GGUF_F32 = 0,
    AFO_GGUF_F16 = 1,
    AFO_GGUF_Q4_0 = 2, /* blocks of 32: fp16 scale + 16 bytes of nibbles, 4.5 bits per weight */
    AFO_GGUF_Q8_0 = 8, /* blocks of 32: fp16 scale + 32 int8, 8.5 bits per weight */
    AFO_GGUF_BF16 = 30
} afo_gguf_type;

/* "f16", "bf16", "q8_0", "q4_0" (and "f32") -> the type, or -1. */
int afo_gguf_type_from_name(const char *name);
const char *afo_gguf_type_name(afo_gguf_type t);

/* Writes the model at `model_dir` (a directory or a cached hub id; model
 * types llama, mistral, qwen2, qwen3) to `out_path` through a temporary file
 * renamed into place. Matrices get `type`; norms and biases stay float32, as
 * llama.cpp keeps them; a matrix whose rows are not a multiple of 32 falls
 * back to F16 for the block types. token_embd and output are written in
 * `type` too (llama-quantize would pick q6_K for a q4_0 output: we keep one
 * type so that the file is a plain Q4_0/Q8_0 model). llama and mistral Q/K
 * rows are permuted to the interleaved RoPE layout llama.cpp's "llama"
 * architecture expects. Without tokenizer.json the vocabulary is written as
 * tokenizer.ggml.model = "none". */
afo_status afo_gguf_export(const char *model_dir, const char *out_path, afo_gguf_type type);

/* The ggml reference block quantizers (ggml-quants.c semantics), exposed for
 * tests: n a multiple of 32; dst holds n/32 blocks of 34 (Q8_0) or 18 (Q4_0)
 * bytes. */
void afo_gguf_quantize_q8_0(const float *x, uint8_t *dst, int64_t n);
void afo_gguf_quantize_q4_0(const float *x, uint8_t *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
