/* NEON kernels of packed quantized rows: 4 and 8 bits (the common model
 * formats) unpacked in registers; other widths use the scalar reference. */
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

/* mc (1..4, a constant in each instance) rows of x per pass over weight
 * rows n0..n1. Each group's dot is scaled once, s * (q . x); the bias adds
 * b * sum(x). */
static inline __attribute__((always_inline)) void qmv_block(int bits, int mc, const afo_qmv_args *a, int m0, int64_t n0,
                                                             int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
        const uint32_t *row = a->w + n * a->words;
        float32x4_t acc[4];
        float bsum[4] = {0};
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) acc[i] = vdupq_n_f32(0);
        for (int64_t g = 0; g < a->G; g++) {
            float32x4_t d[4];
#pragma GCC unroll 4
            for (int i = 0; i < mc; i++) d[i] = vdupq_n_f32(0);
            for (int64_t c = g * a->gs; c < (g + 1) * a->gs; c += 32) {
                float32x4_t q[8];
                levels32(bits, row, c, q);
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) {
                    const float *x = a->x + (m0 + i) * a->K + c;
                    float32x4_t t = vmulq_f32(q[0], vld1q_f32(x)), u = vmulq_f32(q[1], vld1q_f32(x + 4));
#pragma GCC unroll 3
                    for (int j = 1; j < 4; j++) {
                        t = vfmaq_f32(t, q[2 * j], vld1q_f32(x + 8 * j));
                        u = vfmaq_f32(u, q[2 * j + 1], vld1q_f32(x + 8 * j + 4));
                    }
                    d[i] = vaddq_f32(d[i], vaddq_f32(t, u));
                }
            }
            float s = param(a->sdt, a->s, n * a->G + g), b = param(a->sdt, a->b, n * a->G + g);
#pragma GCC unroll 4
            for (int i = 0; i < mc; i++) {
                acc[i] = vfmaq_n_f32(acc[i], d[i], s);
                bsum[i] += b * a->xsum[(m0 + i) * a->G + g];
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) a->y[(m0 + i) * a->ldy + n] = vaddvq_f32(acc[i]) + bsum[i];
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
    if (a->bits == 4) qmv_bits(4, a, n0, n1);
    else qmv_bits(8, a, n0, n1);
}
