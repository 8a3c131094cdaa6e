/* AVX-512 register transposes shared by the CPU kernels. */
#ifndef AFO_SIMD_TRANSPOSE_AVX512_H
#define AFO_SIMD_TRANSPOSE_AVX512_H

#include <immintrin.h>

/* Transposes a 16x16 matrix of 32-bit elements held one row per register
 * (64 shuffles): the bf16 GEMM packs k-pairs with it, attention its key
 * blocks. */
static inline __attribute__((always_inline)) void afo_transpose16x16_epi32(__m512i r[16]) {
    __m512i t[16], u[16];
#pragma GCC unroll 8
    for (int m = 0; m < 8; m++) {
        t[2 * m] = _mm512_unpacklo_epi32(r[2 * m], r[2 * m + 1]);
        t[2 * m + 1] = _mm512_unpackhi_epi32(r[2 * m], r[2 * m + 1]);
    }
    /* u[4g + j], 128-bit lane l: column 4l + j of rows 4g..4g+3 */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44), v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xee);
        __m512i w0 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44), w1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xee);
        r[j] = _mm512_shuffle_i32x4(v0, w0, 0x88), r[4 + j] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
        r[8 + j] = _mm512_shuffle_i32x4(v1, w1, 0x88), r[12 + j] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
    }
}

#endif
