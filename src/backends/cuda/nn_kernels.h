/* Launchers of the CUDA nn kernels (rms_norm, layer_norm, rope, attention),
 * callable from C. As in kernels.h only plain descriptors cross this line:
 * the glue (nn.c) reads the arrays and attributes, the .cu files compute. */
#ifndef AFO_CUDA_NN_KERNELS_H
#define AFO_CUDA_NN_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "afo/base.h"
#include "backends/cuda/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows of an array viewed as [rows, n]: the offset (elements) of logical
 * row r comes from r's digits over `shape` (innermost last) times
 * `strides`; elements within a row are `step` apart. */
typedef struct afo_cuda_rows {
    int ndim;
    int64_t shape[AFO_MAX_DIMS], strides[AFO_MAX_DIMS];
    int64_t rows, n, step;
} afo_cuda_rows;

/* A float vector of any float dtype (weight, bias, rope frequencies), or
 * absent (data NULL). */
typedef struct afo_cuda_vec {
    const void *data;
    afo_dtype dtype;
    int64_t stride;
} afo_cuda_vec;

/* rms_norm (center 0) / layer_norm (center 1): out (contiguous, x's dtype)
 * = (x - c) / sqrt(mean((x - c)^2) + eps) * w + b, per row. */
void afo_cuda_norm(const afo_cuda_rows *x, const void *xdata, afo_dtype dtype, void *out, afo_cuda_vec w,
                   afo_cuda_vec b, int center, double eps, cudaStream_t stream);

/* rope over rows of x [..., L, D]; the row's position is offset + r % L,
 * plus *position (device memory, read when the kernel runs) when given.
 * The inverse frequencies are 1/freqs[i] when freqs is given, else
 * inv_freq[i] (the host's base^(-2i/dims), bit for bit the CPU's: at
 * positions near 1e5 one ulp of a frequency shows in float64 results), or
 * the device's pow past the table. */
#define AFO_CUDA_ROPE_TABLE 256
typedef struct afo_cuda_rope {
    int64_t L, dims, offset;
    const int32_t *position;
    int traditional, inverse;
    double base, scale;
    afo_cuda_vec freqs;
    double inv_freq[AFO_CUDA_ROPE_TABLE];
} afo_cuda_rope;
/* Where rope writes: row r (C order over the axes before the last) at
 * data + rows' offset of r, moved by shift: the dense output, or a KV
 * cache's slot. */
typedef struct afo_cuda_rope_dst {
    void *data;
    afo_cuda_rows rows;
    afo_cuda_shift shift;
} afo_cuda_rope_dst;
void afo_cuda_rope_apply(const afo_cuda_rows *x, const void *xdata, afo_dtype dtype, const afo_cuda_rope_dst *out,
                         const afo_cuda_rope *r, cudaStream_t stream);

/* Scaled dot-product attention over q [B, Hq, Lq, D], k [B, Hkv, Lk, D],
 * v [B, Hkv, Lk, Dv] of one dtype, each with unit stride along its last
 * axis and any strides over the others (a KV cache sliced to its length).
 * out is [B, Hq, Lq, Dv] contiguous in the same dtype. */
typedef struct afo_cuda_sdpa {
    int64_t B, Hq, Hkv, Lq, Lk, D, Dv;
    afo_dtype dtype;
    const void *q, *k, *v;
    int64_t qs[3], ks[3], vs[3]; /* strides over B, H, L */
    const void *mask;            /* NULL, or bool/float broadcast over [B, Hq, Lq, Lk] */
    afo_dtype mask_dtype;
    int64_t ms[4];               /* 0 along broadcast axes */
    int causal;
    int64_t window;
    const int32_t *position; /* NULL: query i at Lk - Lq + i; else at *position + i (device memory) */
    double scale;
    /* rope turning q as the kernel loads it (the decode kernel's only:
     * afo_cuda_sdpa_ropes_q), or NULL */
    const afo_cuda_rope *q_rope;
    /* the step's key (before its rope, which is q_rope's: same position)
     * and value, [B, Hkv, 1, D] rows at these batch and head strides, that
     * the decode kernel writes into k's and v's slot at *position (clamped
     * to the cache) before it reads them, or NULL; set only with a position
     * and where afo_cuda_sdpa_ropes_q holds */
    const void *k_new, *v_new;
    int64_t kns[2], vns[2];
    /* with k_new: the caches, the position and the rope's frequencies were
     * written before the last wait for the stream (afo_cuda_settled), so
     * the kernel reads the older keys and takes the angles before it waits
     * for the kernel before it */
    int settled;
    void *out;
    /* set by afo_cuda_sdpa_plan: how the keys are split over blocks, and the
     * scratch the partial results need (the caller provides it) */
    int nsplit;
    int64_t chunk;
    void *scratch;
} afo_cuda_sdpa;

/* 0 when the shape is unsupported (head size above 256, or above 128 for
 * float64); otherwise fills the split fields and returns the scratch bytes
 * needed (possibly 0; at least 1 means scratch must be set). */
size_t afo_cuda_sdpa_plan(afo_cuda_sdpa *p, int *supported);
cudaError_t afo_cuda_sdpa_run(const afo_cuda_sdpa *p, cudaStream_t stream);
/* Whether the decode kernel takes this attention with q_rope applied to q
 * (one query, rotate-half pairs over the whole head). */
bool afo_cuda_sdpa_ropes_q(const afo_cuda_sdpa *p);

/* What a product computes along (see afo_fused_fn), each where not NULL:
 * an addend (a residual); x's rms norm times norm_weight (of x's dtype),
 * rounded to x's dtype as the norm kernel stores it, for one row of x. */
typedef struct afo_cuda_gemv_fusion {
    afo_cuda_addend addend;
    const void *norm_weight;
    float eps;
} afo_cuda_gemv_fusion;

/* out [R, N] = x [R, K] (rows x_row elements apart) · Wᵀ, W row-major
 * [N, K]; float16/bfloat16/float32 operands in any mix, float32 sums.
 * For R up to afo_cuda_gemv_max_rows(). fuse may be NULL. Returns false,
 * launching nothing, for a norm outside the one-row 16-byte case. */
int afo_cuda_gemv_max_rows(void);
bool afo_cuda_gemv(const void *w, afo_dtype w_dtype, const void *x, afo_dtype x_dtype, int64_t x_row, void *out,
                   afo_dtype out_dtype, int64_t R, int64_t N, int64_t K, const afo_cuda_gemv_fusion *fuse,
                   cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
