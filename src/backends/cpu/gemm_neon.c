/* aarch64 Advanced SIMD kernels: row conversions, weight-layout matvec and
 * the 8x12 f32 GEMM microkernel. f16 widens with fcvtl, bf16 with shifts. */
#include <arm_neon.h>
#include <string.h>

#include "backends/cpu/gemm.h"

#define AI static inline __attribute__((always_inline))

/* ---------------------------------------------------------------- conversion */

AI float32x4_t bf16x4_to_f32(uint16x4_t h) { return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); }

/* Bit-exact with afo_f32_to_bf16: round to nearest even, NaN quietened with
 * its payload kept. */
AI uint16x4_t f32x4_to_bf16(float32x4_t f) {
    uint32x4_t u = vreinterpretq_u32_f32(f);
    uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    uint32x4_t r = vshrq_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), lsb), 16);
    uint32x4_t nan = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
    uint32x4_t isnum = vceqq_f32(f, f);
    return vmovn_u32(vbslq_u32(isnum, r, nan));
}

/* fcvtn rounds to nearest even (the default FPCR mode) like
 * afo_f32_to_f16, but keeps NaN payloads where the scalar code returns the
 * canonical quiet NaN. */
AI uint16x4_t f32x4_to_f16(float32x4_t f) {
    uint16x4_t h = vreinterpret_u16_f16(vcvt_f16_f32(f));
    uint16x4_t isnum = vmovn_u32(vceqq_f32(f, f));
    uint16x4_t canon = vorr_u16(vand_u16(h, vdup_n_u16(0x8000)), vdup_n_u16(0x7e00));
    return vbsl_u16(isnum, h, canon);
}

AI float32x4_t load4(afo_dtype t, const void *p) {
    switch (t) {
    case AFO_FLOAT16: return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
    case AFO_BFLOAT16: return bf16x4_to_f32(vld1_u16(p));
    default: return vld1q_f32(p);
    }
}

AI void store4(afo_dtype t, void *p, float32x4_t v) {
    switch (t) {
    case AFO_FLOAT16: vst1_u16(p, f32x4_to_f16(v)); break;
    case AFO_BFLOAT16: vst1_u16(p, f32x4_to_bf16(v)); break;
    default: vst1q_f32(p, v); break;
    }
}

static void convert_neon(afo_dtype from, const void *src, afo_dtype to, void *dst, int64_t n) {
    bool ok = (from == AFO_FLOAT32 || from == AFO_FLOAT16 || from == AFO_BFLOAT16) &&
              (to == AFO_FLOAT32 || to == AFO_FLOAT16 || to == AFO_BFLOAT16);
    if (!ok || from == to) {
        afo_gemm_kernels_scalar.convert(from, src, to, dst, n);
        return;
    }
    size_t fs = from == AFO_FLOAT32 ? 4 : 2, ts = to == AFO_FLOAT32 ? 4 : 2;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) store4(to, (char *)dst + i * ts, load4(from, (const char *)src + i * fs));
    if (i < n) afo_gemm_kernels_scalar.convert(from, (const char *)src + i * fs, to, (char *)dst + i * ts, n - i);
}

/* ---------------------------------------------------------------- matvec */

AI float load1(afo_dtype t, const void *p, int64_t i) {
    switch (t) {
    case AFO_FLOAT16: return afo_f16_to_f32(((const uint16_t *)p)[i]);
    case AFO_BFLOAT16: return afo_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* MR rows of A against NR consecutive weight rows; each weight vector is
 * loaded (and widened) once and used for all MR rows. */
AI void mv_tile(afo_dtype t, const int MR, const int NR, int64_t K, const float *a, int64_t lda,
                const char *w, int64_t ldw_bytes, float *out, int64_t ldo, int64_t os, int64_t pf) {
    size_t es = t == AFO_FLOAT32 ? 4 : 2;
    float32x4_t acc[4][4];
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) acc[m][r] = vdupq_n_f32(0.0f);
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
        float32x4_t wv[4];
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            if ((k * (int64_t)es) % 64 == 0) __builtin_prefetch(w + r * ldw_bytes + k * es + pf);
            wv[r] = load4(t, w + r * ldw_bytes + k * es);
        }
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++) {
            float32x4_t av = vld1q_f32(a + m * lda + k);
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++) acc[m][r] = vfmaq_f32(acc[m][r], av, wv[r]);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            float s = vaddvq_f32(acc[m][r]);
            for (int64_t kk = k; kk < K; kk++) s += a[m * lda + kk] * load1(t, w + r * ldw_bytes, kk);
            out[m * ldo + r * os] = s;
        }
}

AI void mv_typed(afo_dtype t, int M, int64_t K, const float *a, int64_t lda, const void *w, int64_t ldw,
                 int64_t n0, int64_t n1, float *out, int64_t ldo) {
    AFO_MV_PASSES(4, t, M, K, a, lda, w, ldw, n0, n1, out, ldo);
}

static void matvec_neon(afo_dtype wdt, int M, int64_t K, const float *a, int64_t lda, const void *w,
                        int64_t ldw, int64_t n0, int64_t n1, float *out, int64_t ldo) {
    switch (wdt) {
    case AFO_FLOAT16: mv_typed(AFO_FLOAT16, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    case AFO_BFLOAT16: mv_typed(AFO_BFLOAT16, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    default: mv_typed(AFO_FLOAT32, M, K, a, lda, w, ldw, n0, n1, out, ldo); break;
    }
}

/* ---------------------------------------------------------------- GEMM microkernel */

enum { MR = 8, NR = 12 };

/* 24 accumulators + 2 A + 3 B of the 32 q registers; fmla by lane uses each
 * A element without a broadcast. */
static void ukr_neon(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, bool accumulate) {
    float32x4_t acc[MR][3];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = acc[i][2] = vdupq_n_f32(0.0f);
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; k++) {
        float32x4_t a0 = vld1q_f32(a + k * MR), a1 = vld1q_f32(a + k * MR + 4);
        float32x4_t b0 = vld1q_f32(b + k * NR), b1 = vld1q_f32(b + k * NR + 4), b2 = vld1q_f32(b + k * NR + 8);
#define ROW(I, AV, L)                                          \
    acc[I][0] = vfmaq_laneq_f32(acc[I][0], b0, AV, L);         \
    acc[I][1] = vfmaq_laneq_f32(acc[I][1], b1, AV, L);         \
    acc[I][2] = vfmaq_laneq_f32(acc[I][2], b2, AV, L);
        ROW(0, a0, 0) ROW(1, a0, 1) ROW(2, a0, 2) ROW(3, a0, 3)
        ROW(4, a1, 0) ROW(5, a1, 1) ROW(6, a1, 2) ROW(7, a1, 3)
#undef ROW
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
#pragma GCC unroll 3
        for (int j = 0; j < 3; j++) {
            float32x4_t v = acc[i][j];
            if (accumulate) v = vaddq_f32(v, vld1q_f32(ci + 4 * j));
            vst1q_f32(ci + 4 * j, v);
        }
    }
}

const afo_gemm_kernels afo_gemm_kernels_neon = {
    .mr = MR, .nr = NR, .ukr = ukr_neon,
    .kc = 256, .mc = 128, .nc = 2040,
    .matvec = matvec_neon, .convert = convert_neon,
};
