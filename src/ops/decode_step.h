/* decode_step: a whole batch-1 decode step of a llama-family model with
 * 4-bit g64 weights as one op, for a backend that runs it as one kernel
 * (the CUDA backend's persistent kernel, decode_step.cu). The layer graph
 * (models/transformer.c) computes the same step; this op exists because a
 * GPU spends more of a step between the graph's kernels than in them.
 *
 * Inputs, in order: x (bf16 [1, 1, hidden], the token's embedding),
 * position (int32 [1], the token's position = the cache's length), the
 * final norm's weight, the head's packed words, scales and biases, rope's
 * frequencies (float32 [64]), where the greedy pick goes when attrs say so
 * (int32, one element), then per layer: the attention norm's weight, q/k/v
 * stacked (words, scales, biases), o (three), the MLP norm's weight,
 * gate/up stacked (three), down (three), and the layer's key and value
 * caches (bf16 [1, kv_heads, capacity, 128]). The output is the logits,
 * float32 [1, 1, vocab], each rounded to bf16 first as the layer graph's
 * are. The op also writes, in place, the token's key and value into the
 * caches at `position` (the KV cache's buffers, which nothing else reads in
 * the step: models/kv_cache.c) and the logits' argmax into the pick's
 * element (the argmax op's: NaNs skipped, ties to the lower index), so that
 * a recorded greedy step feeds the next one the id it picked without a
 * kernel of its own. */
#ifndef AFO_OPS_DECODE_STEP_H
#define AFO_OPS_DECODE_STEP_H

#include "core/internal.h"

enum {
    AFO_STEP_I_LAYERS, AFO_STEP_I_HIDDEN, AFO_STEP_I_INTERMEDIATE, AFO_STEP_I_HEADS, AFO_STEP_I_KV_HEADS,
    AFO_STEP_I_VOCAB, AFO_STEP_I_HAS_PICK, AFO_STEP_I_COUNT
};
enum { AFO_STEP_F_EPS, AFO_STEP_F_SCALE, AFO_STEP_F_COUNT };
enum {
    AFO_STEP_IN_X, AFO_STEP_IN_POSITION, AFO_STEP_IN_FINAL_NORM, AFO_STEP_IN_HEAD, AFO_STEP_IN_FREQS = 6,
    AFO_STEP_IN_FIXED, AFO_STEP_IN_PICK = AFO_STEP_IN_FIXED
};
enum {
    AFO_STEP_L_ATTN_NORM, AFO_STEP_L_QKV, AFO_STEP_L_O = 4, AFO_STEP_L_MLP_NORM = 7, AFO_STEP_L_GATE_UP,
    AFO_STEP_L_DOWN = 11, AFO_STEP_L_KEYS = 14, AFO_STEP_L_VALUES, AFO_STEP_L_COUNT
};
#define AFO_STEP_HEAD_DIM 128

typedef struct afo_step_shape {
    int64_t layers, hidden, intermediate, heads, kv_heads, vocab, capacity;
} afo_step_shape;

/* The node; `fixed` the inputs before the pick, `pick` NULL for none. */
afo_array *afo_decode_step(const afo_step_shape *s, afo_array *const *fixed, afo_array *pick,
                           afo_array *const *layer_inputs, double eps, double scale);

/* Whether `device` runs decode_step for this shape (*why: what does not
 * fit, or that the device has no kernel for it). */
typedef bool (*afo_step_fits_fn)(const afo_step_shape *s, const char **why);
bool afo_decode_step_fits(afo_device device, const afo_step_shape *s, const char **why);
/* A backend's rule, set with its kernel. */
void afo_decode_step_set_fits(afo_device device, afo_step_fits_fn fits);
void afo_register_decode_step_op(void);

#endif
