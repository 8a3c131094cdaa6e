/* Launchers of the CUDA quantization kernels (MLX's affine format, see
 * include/afo/quant.h), callable from C. Every 32 consecutive elements of a
 * packed row fill exactly `bits` words and a group (32, 64 or 128 elements)
 * is a whole number of such chunks, so no word is shared by two groups: the
 * kernels work chunk by chunk. Operands are dense and 16-byte aligned (the
 * glue in quant.c makes copies of those that are not). */
#ifndef AFO_CUDA_QUANT_KERNELS_H
#define AFO_CUDA_QUANT_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "afo/base.h"
#include "backends/cuda/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A packed matrix [rows, cols] with its scales and biases [rows, cols/gs]. */
typedef struct afo_cuda_qmat {
    const uint32_t *w;
    const void *s, *b;
    afo_dtype sdt; /* of scales and biases */
    int bits, gs;
    int64_t rows, cols, words; /* words per row = cols * bits / 32 */
    bool settled;              /* w, s and b are no queued kernel's output (afo_cuda_settled) */
} afo_cuda_qmat;

/* Quantizes w [rows, cols] (float32, bfloat16 or float16) with the CPU's
 * rules, bit for bit, and writes one of the three results: part 0 the packed
 * words (uint32), 1 the scales, 2 the biases (dtype odt). */
void afo_cuda_quantize(const void *w, afo_dtype wdt, int64_t rows, int64_t cols, int gs, int bits, int part, void *out,
                       afo_dtype odt, cudaStream_t stream);

/* out[i, :] = dequantized row idx[i] of m (row i when idx is NULL), rounded
 * to odt, for i < n. Negative indices count from the end; a row whose index
 * is out of range is written as NaN. */
void afo_cuda_dequantize(const afo_cuda_qmat *m, const void *idx, afo_dtype idt, int64_t n, void *out, afo_dtype odt,
                         cudaStream_t stream);

/* y [M, N] = x [M, K] @ dequantize(m)^T (transpose; m is [N, K]) or
 * x @ dequantize(m) (m is [K, N]); x and y of dtype xdt. Returns false,
 * launching nothing, for an addend outside the decode matvec (x @ m^T,
 * M up to 8). */
bool afo_cuda_quantized_matmul(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, int64_t M, int transpose, void *y,
                               afo_cuda_addend add, cudaStream_t stream);

/* What the int8 matvec takes as its row x: x itself; with norm_weight (of
 * x's dtype, 16-byte aligned), rms_norm(x, norm_weight, eps); with up (of
 * x's dtype, 16-byte aligned), swiglu(x, up), x the gate. The norm's or
 * swiglu's output is rounded to x's dtype as their own kernels store it. */
typedef struct afo_cuda_qmv_input {
    const void *x, *norm_weight, *up;
    float eps;
    bool norm_weight_settled; /* afo_cuda_settled */
} afo_cuda_qmv_input;
/* The decode matvec on int8 activations (quant_mv.cu): whether it takes
 * this product (one row of 16-bit x, x @ m^T, 4 or 8 bits, 16-bit scales),
 * and the product. It starts before the kernel before it completes, reading
 * m's arrays and the norm weight first, when they are settled; otherwise
 * after (a plain launch). */
bool afo_cuda_qmv_int_applies(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, int64_t M);
void afo_cuda_qmv_int(const afo_cuda_qmat *m, const afo_cuda_qmv_input *x, afo_dtype xdt, void *y,
                      afo_cuda_addend add, cudaStream_t stream);

/* The prefill path on its own (quant_mm.cu): tiles of W dequantized into
 * shared memory, bf16/f16 tensor cores for 16-bit x, f32 SIMT for f32 x. */
void afo_cuda_qmm_tiled(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, int64_t M, int64_t N, int64_t K,
                        int transpose, void *y, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
