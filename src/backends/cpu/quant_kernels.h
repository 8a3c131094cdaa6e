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

/* Activations of a decode matvec quantized to integers once per call, so
 * that weight levels meet them in integer dot products (the float path
 * costs a conversion and a multiply per weight, and is compute-bound). x is
 * cut into blocks of 32 along K, each with sx = max|x| / L and
 * xq = rint(x / sx) (L = 127 for 4-bit weights, int8; L = 32767 for other
 * widths, int16, where 8-bit levels would saturate vpmaddubsw and int8
 * would cost 8-bit models accuracy). The dot of a group is then
 * s * sum_blocks sx * (q . xq) + b * xsum, xsum being the float sum of x. */
typedef struct afo_qx {
    int M, x8;           /* x8: int8 (4-bit weights), else int16 */
    int gs;
    int64_t K, ldx, G;   /* ldx: K rounded up to 128 (a 64-byte load of x8); blocks past K hold zeros, sx = 0 */
    void *xq;            /* [M, ldx]: x16 in element order; x8 per chunk of 64 as vpmaddubsw meets nibbles:
                          * the even elements of block 0, of block 1, then the odd elements of block 0, of block 1 */
    float *sx;           /* [M, ldx / 32] */
    float *sx8;          /* x8: [M, ldx / 64 * 8], per chunk sx of block 0 four times, then of block 1 */
    float *xsum;         /* [M, G] */
} afo_qx;
/* Index in an x8 row of element i (< 32) of block blk. */
static inline int64_t afo_qx_x8_pos(int64_t blk, int i) { return blk / 2 * 64 + (i & 1) * 32 + blk % 2 * 16 + i / 2; }
/* Bytes of scratch an afo_qx of M rows needs (64-aligned pieces). */
size_t afo_qx_bytes(int M, int64_t K, int gs, int bits);
/* Lays out qx in buf (afo_qx_bytes long, 64-aligned). */
void afo_qx_init(afo_qx *qx, void *buf, int M, int64_t K, int gs, int bits);
/* Fills qx from x [M, K]; every level's version gives the same xq and sx
 * bit for bit (xsum within float rounding). */
typedef void (*afo_qx_prep_fn)(afo_qx *qx, const float *x);
void afo_qx_prep_scalar(afo_qx *qx, const float *x);
#if defined(__x86_64__)
void afo_qx_prep_avx2(afo_qx *qx, const float *x);
#endif
afo_qx_prep_fn afo_qx_prep_best(void);
/* afo_qx_prep_best over ranges of rows on the thread pool (a prefill's x). */
void afo_qx_prep_parallel(afo_qx *qx, const float *x);

/* Decode matvec: y[m*ldy + n] = sum_k x[m*K + k] * deq(w row n)[k] for
 * m < M (<= AFO_MATVEC_MAX_M) and rows n0 <= n < n1 of the packed matrix,
 * x given as qx. Scales and biases [N, G] have dtype sdt. */
typedef struct afo_qmv_args {
    int bits, gs, M;
    int64_t K, G, words;
    const afo_qx *qx;
    const uint32_t *w;
    const void *s, *b;
    afo_dtype sdt;
    float *y;
    int64_t ldy;
} afo_qmv_args;
typedef void (*afo_qmv_fn)(const afo_qmv_args *a, int64_t n0, int64_t n1);
#if defined(__x86_64__)
void afo_quant_qmv_avx2(const afo_qmv_args *a, int64_t n0, int64_t n1);
void afo_quant_qmv_avx512(const afo_qmv_args *a, int64_t n0, int64_t n1);
#elif defined(__aarch64__)
void afo_quant_qmv_neon(const afo_qmv_args *a, int64_t n0, int64_t n1);
#endif
/* The integer-activation matvec of the current level (every width), or
 * NULL at the scalar level, whose float path (unpack a row, then dot
 * products with x) is the reference. */
afo_qmv_fn afo_quant_qmv_best(int bits);

/* Levels of n elements from element c0 (multiples of 32) as bytes; 32
 * elements of any width fill exactly `bits` words, read as one window. */
void afo_quant_levels_u8(int bits, const uint32_t *row, int64_t c0, int64_t n, uint8_t *q);

/* Floats of the dequantized weight panel a prefill (M > AFO_MATVEC_MAX_M)
 * multiplies at a time; tests lower it to cover several panels. */
extern int64_t afo_quant_panel_floats;

/* The group's parameters by MLX's rules, in float32 (before rounding to
 * the weight dtype; packing uses these unrounded values, as MLX does). */
void afo_quant_group_params(const float *w, int gs, int bits, float *scale, float *bias);

/* Kernels (afo_kernel_fn). */
afo_status afo_cpu_quantize(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);
afo_status afo_cpu_dequantize(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);
afo_status afo_cpu_quantized_matmul(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);
afo_status afo_cpu_quantized_take(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs);

#endif
