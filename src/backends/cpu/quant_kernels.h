/* CPU kernels of MLX-compatible affine quantization (src/ops/quant.c):
 * quantize, dequantize, quantized matmul and quantized row gather, reading
 * the packed weights directly. Each row of a packed matrix is one
 * little-endian LSB-first bitstream (element i at bit i*bits) in uint32
 * words; every group of `gs` elements has a scale and a bias. */
#ifndef AFO_QUANT_KERNELS_H
#define AFO_QUANT_KERNELS_H

#include "core/internal.h"

/* Attribute layout of the quantization ops: i[0] group size, i[1] bits,
 * i[2] quantize: which output (AFO_QPART_*); quantized_matmul: transpose. */
enum { AFO_QUANT_I_GS = 0, AFO_QUANT_I_BITS, AFO_QUANT_I_EXTRA, AFO_QUANT_NI };
enum { AFO_QPART_PACKED = 0, AFO_QPART_SCALES, AFO_QPART_BIASES };

/* Per-SIMD-level piece: the integer levels q of the n elements of a packed
 * row starting at element c0 (c0 and n multiples of 32), as floats. */
typedef void (*afo_quant_unpack_fn)(int bits, const uint32_t *row, int64_t c0, int64_t n, float *q);
void afo_quant_unpack_scalar(int bits, const uint32_t *row, int64_t c0, int64_t n, float *q);
#if defined(__x86_64__)
void afo_quant_unpack_avx2(int bits, const uint32_t *row, int64_t c0, int64_t n, float *q);
#elif defined(__aarch64__)
void afo_quant_unpack_neon(int bits, const uint32_t *row, int64_t c0, int64_t n, float *q);
#endif
/* The unpacker of the current kernel level. */
afo_quant_unpack_fn afo_quant_unpack_best(void);

/* Decode matvec: y[m*ldy + n] = sum_k x[m*K + k] * deq(w row n)[k] for
 * m < M (<= AFO_MATVEC_MAX_M) and rows n0 <= n < n1 of the packed matrix;
 * xsum[m*G + g] is the sum of x row m over group g (a group adds
 * s * (q . x) + b * xsum). Scales and biases [N, G] have dtype sdt. */
typedef struct afo_qmv_args {
    int bits, gs, M;
    int64_t K, G, words;
    const float *x, *xsum;
    const uint32_t *w;
    const void *s, *b;
    afo_dtype sdt;
    float *y;
    int64_t ldy;
} afo_qmv_args;
typedef void (*afo_qmv_fn)(const afo_qmv_args *a, int64_t n0, int64_t n1);
#if defined(__x86_64__)
void afo_quant_qmv_avx2(const afo_qmv_args *a, int64_t n0, int64_t n1); /* 4 and 8 bits */
#elif defined(__aarch64__)
void afo_quant_qmv_neon(const afo_qmv_args *a, int64_t n0, int64_t n1); /* 4 and 8 bits */
#endif
/* The fused matvec of the current level for this width, or NULL where the
 * generic path (unpack a row, then dot products) serves. */
afo_qmv_fn afo_quant_qmv_best(int bits);

/* The group's parameters by MLX's rules, in float32 (before rounding to
 * the weight dtype; packing uses these unrounded values, as MLX does). */
void afo_quant_group_params(const float *w, int gs, int bits, float *scale, float *bias);

/* Kernels (afo_kernel_fn). */
afo_status afo_cpu_quantize(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);
afo_status afo_cpu_dequantize(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);
afo_status afo_cpu_quantized_matmul(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);
afo_status afo_cpu_quantized_take(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);

#endif
