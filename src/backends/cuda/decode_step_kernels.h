/* The launcher of the fused decode step (decode_step.cu), callable from C:
 * a whole batch-1 decode step of a llama-family model with 4-bit g64
 * weights as one persistent kernel (docs/PERFORMANCE.md, CUDA, twenty-fourth
 * to twenty-eighth sessions, for the design and its measurements). */
#ifndef AFO_CUDA_DECODE_STEP_KERNELS_H
#define AFO_CUDA_DECODE_STEP_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "backends/cuda/nn_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AFO_CUDA_STEP_MAX_LAYERS 64

/* A 4-bit g64 matrix [rows, cols] as MLX packs it: words [rows, cols/8],
 * bf16 scales and biases [rows, cols/64], all dense. */
typedef struct afo_cuda_q4 {
    const uint32_t *w;
    const void *s, *b;
} afo_cuda_q4;

typedef struct afo_cuda_step_layer {
    afo_cuda_q4 qkv;     /* q, k, v rows stacked */
    afo_cuda_q4 o;
    afo_cuda_q4 gate_up; /* gate rows, then up rows */
    afo_cuda_q4 down;
    const void *attn_norm, *mlp_norm; /* bf16 [hidden] */
    void *keys, *values;              /* bf16 [kv_heads, capacity, 128] */
} afo_cuda_step_layer;

typedef struct afo_cuda_step_shape {
    int layers, hidden, intermediate, heads, kv_heads, vocab;
    int64_t capacity; /* of the KV cache */
} afo_cuda_step_shape;

typedef struct afo_cuda_step {
    afo_cuda_step_shape shape;
    float eps, scale;         /* rms_norm's; attention's on q k^T */
    afo_cuda_rope rope;       /* its angles (dims = 128, not traditional) */
    const void *x;            /* bf16 [hidden]: the token's embedding */
    const int32_t *position;  /* of the token: keys [0, *position) are in the cache */
    afo_cuda_step_layer layer[AFO_CUDA_STEP_MAX_LAYERS];
    const void *final_norm;
    afo_cuda_q4 head;         /* [vocab, hidden] */
    float *logits;            /* [vocab], each rounded to bf16 as the layer graph's are */
    int32_t *pick;            /* where the logits' argmax goes, or NULL */
    void *scratch;            /* set by the launcher, as is: */
    int pair;                 /* the SMs run in clusters of two */
} afo_cuda_step;

/* Whether the kernel takes this shape; *why says what does not fit. */
bool afo_cuda_decode_step_fits(const afo_cuda_step_shape *s, const char **why);
/* Whether the last launch ran the SMs in pairs (clusters of two: every SM
 * pairs up when the GPU holds all the pairs at once, unless the environment
 * has AFO_STEP_PAIRS=0); -1 before any launch. */
int afo_cuda_decode_step_paired(void);
/* Launches the step on `stream` (s->scratch and s->pair set by the launcher). */
cudaError_t afo_cuda_decode_step_run(afo_cuda_step *s, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
