/* NEON kernels of packed quantized rows: the unpacker of 4 and 8 bits in
 * registers (other widths use the scalar reference) and the
 * integer-activation matvec of every width. */
#include <arm_neon.h>

#include "backends/cpu/quant_kernels.h"

/* The 32 levels at element c (a multiple of 32) of a 4- or 8-bit row, in
 * element order. 4 bits: byte j holds elements 2j (low nibble) and 2j+1. */
static inline __attribute__((always_inline)) void levels32(int bits, const uint32_t *row, int64_t c, float32x4_t q[8]) {
    uint8x16_t b[2];
    if (bits == 4) {
        uint8x16_t v = vld1q_u8((const uint8_t *)row + c / 2);
        uint8x16_t lo = vandq_u8(v, vdupq_n_u8(0x0f)), hi = vshrq_n_u8(v, 4);
        b[0] = vzip1q_u8(lo, hi);
        b[1] = vzip2q_u8(lo, hi);
    } else {
        b[0] = vld1q_u8((const uint8_t *)row + c);
        b[1] = vld1q_u8((const uint8_t *)row + c + 16);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        uint16x8_t l = vmovl_u8(vget_low_u8(b[h])), u = vmovl_u8(vget_high_u8(b[h]));
        q[4 * h + 0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(l)));
        q[4 * h + 1] = vcvtq_f32_u32(vmovl_u16(vget_high_u16(l)));
        q[4 * h + 2] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(u)));
        q[4 * h + 3] = vcvtq_f32_u32(vmovl_u16(vget_high_u16(u)));
    }
}

void afo_quant_unpack_neon(int bits, const uint32_t *row, int64_t c0, int64_t n, float *q) {
    if (bits != 4 && bits != 8) {
        afo_quant_unpack_scalar(bits, row, c0, n, q);
        return;
    }
    for (int64_t i = 0; i < n; i += 32) {
        float32x4_t v[8];
        levels32(bits, row, c0 + i, v);
        for (int j = 0; j < 8; j++) vst1q_f32(q + i + 4 * j, v[j]);
    }
}

static inline float param(afo_dtype dt, const void *p, int64_t i) {
    if (dt == AFO_BFLOAT16) {
        uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    if (dt == AFO_FLOAT16) return (float)((const __fp16 *)p)[i];
    return ((const float *)p)[i];
}

static inline float bias_dot(const afo_qmv_args *a, int64_t n, int m) {
    const float *xs = a->qx->xsum + m * a->G;
    float t = 0.0f;
    for (int64_t g = 0; g < a->G; g++) t += param(a->sdt, a->b, n * a->G + g) * xs[g];
    return t;
}

/* int32 lanes of sum q * x over 16 byte pairs (q < 16, |x| <= 127). */
static inline int32x4_t dot16(int32x4_t acc, int8x16_t q, int8x16_t x) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, q, x);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(q), vget_low_s8(x)));
    return vpadalq_s16(acc, vmull_s8(vget_high_s8(q), vget_high_s8(x)));
#endif
}

/* The integer-activation scheme of the AVX2 kernel (see there) a 32-block
 * at a time: 4 bits meet int8 xq (16 bytes: even elements in the low
 * nibbles, as the x8 layout has them), other widths int16 xq, their levels
 * widened from bytes (8 bits) or unpacked to bytes first. */
static inline __attribute__((always_inline)) void qmv_block(int bits, int mc, const afo_qmv_args *a, int m0, int64_t n0,
                                                             int64_t n1) {
    const afo_qx *qx = a->qx;
    bits = bits ? bits : a->bits; /* 0: the instance for the widths that straddle bytes */
    int64_t nb = qx->ldx / 32, kb = a->K / 32, per = a->gs / 32;
    for (int64_t n = n0; n < n1; n++) {
        const uint32_t *row = a->w + n * a->words;
        float32x4_t acc[4];
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) acc[i] = vdupq_n_f32(0);
        for (int64_t blk = 0; blk < kb; blk++) {
            float s = param(a->sdt, a->s, n * a->G + blk / per);
            __builtin_prefetch((const uint8_t *)row + blk * 4 * bits + a->words * 4); /* the next row, as on x86 */
            if (bits == 4) {
                uint8x16_t v = vld1q_u8((const uint8_t *)row + 16 * blk);
                int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f)));
                int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) {
                    const int8_t *xq = (const int8_t *)qx->xq + (m0 + i) * qx->ldx + blk / 2 * 64 + blk % 2 * 16;
                    int32x4_t d = dot16(dot16(vdupq_n_s32(0), lo, vld1q_s8(xq)), hi, vld1q_s8(xq + 32));
                    float32x4_t t = vmulq_n_f32(vcvtq_f32_s32(d), qx->sx[(m0 + i) * nb + blk]);
                    acc[i] = vfmaq_n_f32(acc[i], t, s);
                }
                continue;
            }
            uint8_t buf[32];
            const uint8_t *qb = (const uint8_t *)row + 32 * blk;
            if (bits != 8) {
                afo_quant_levels_u8(bits, row, 32 * blk, 32, buf);
                qb = buf;
            }
            int16x8_t q[4];
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                uint8x16_t b = vld1q_u8(qb + 16 * h);
                q[2 * h] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(b)));
                q[2 * h + 1] = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(b)));
            }
#pragma GCC unroll 4
            for (int i = 0; i < mc; i++) {
                const int16_t *xq = (const int16_t *)qx->xq + (m0 + i) * qx->ldx + 32 * blk;
                int32x4_t d = vdupq_n_s32(0);
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    int16x8_t x = vld1q_s16(xq + 8 * j);
                    d = vmlal_s16(d, vget_low_s16(q[j]), vget_low_s16(x));
                    d = vmlal_high_s16(d, q[j], x);
                }
                float32x4_t t = vmulq_n_f32(vcvtq_f32_s32(d), qx->sx[(m0 + i) * nb + blk]);
                acc[i] = vfmaq_n_f32(acc[i], t, s);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) a->y[(m0 + i) * a->ldy + n] = vaddvq_f32(acc[i]) + bias_dot(a, n, m0 + i);
    }
}

static inline __attribute__((always_inline)) void qmv_bits(int bits, const afo_qmv_args *a, int64_t n0, int64_t n1) {
    for (int m0 = 0; m0 < a->M; m0 += 4) {
        switch (a->M - m0) {
        case 1: qmv_block(bits, 1, a, m0, n0, n1); break;
        case 2: qmv_block(bits, 2, a, m0, n0, n1); break;
        case 3: qmv_block(bits, 3, a, m0, n0, n1); break;
        default: qmv_block(bits, 4, a, m0, n0, n1); break;
        }
    }
}

void afo_quant_qmv_neon(const afo_qmv_args *a, int64_t n0, int64_t n1) {
    switch (a->bits) {
    case 4: qmv_bits(4, a, n0, n1); break;
    case 8: qmv_bits(8, a, n0, n1); break;
    default: qmv_bits(0, a, n0, n1); break;
    }
}
