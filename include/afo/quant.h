/* afo — MLX-compatible affine quantization (the on-disk format of mlx-lm's
 * "-4bit" models). Groups of group_size (32, 64, 128) consecutive elements
 * along the last axis share a scale and a bias; each element becomes a
 * bits-wide level q (bits 2, 3, 4, 5, 6, 8) and reads back as scale*q + bias.
 * Each row of the packed array is one little-endian LSB-first bitstream in
 * uint32 words, shape [..., in*bits/32]; scales and biases [..., in/group_size]
 * have the weight's dtype. Like every op, these are lazy. */
#ifndef AFO_QUANT_H
#define AFO_QUANT_H

#include "afo/array.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Quantizes w (float32, bfloat16 or float16; last axis a positive multiple
 * of group_size) into three new arrays. */
afo_status afo_quantize(afo_array *w, int group_size, int bits, afo_array **wq, afo_array **scales,
                        afo_array **biases);
/* The dequantized weights [..., in], of scales' dtype. */
afo_array *afo_dequantize(afo_array *wq, afo_array *scales, afo_array *biases, int group_size, int bits);
/* x @ dequantize(w)^T when transpose (w [out, in]: the Linear case), else
 * x @ dequantize(w) (w [in, out]); w 2-D; the result has x's dtype.
 * Differentiable with respect to x only. */
afo_array *afo_quantized_matmul(afo_array *x, afo_array *wq, afo_array *scales, afo_array *biases, int transpose,
                                int group_size, int bits);
/* Rows of a quantized 2-D matrix (an embedding table) at integer indices,
 * dequantized: shape indices.shape + [in], of scales' dtype. */
afo_array *afo_quantized_take(afo_array *wq, afo_array *scales, afo_array *biases, afo_array *indices,
                              int group_size, int bits);

#ifdef __cplusplus
}
#endif
#endif
