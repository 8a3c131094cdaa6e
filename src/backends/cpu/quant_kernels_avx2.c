/* AVX2 unpackers of packed quantized rows: 4 and 8 bits (the common model
 * formats) in registers; other widths go through the scalar reference. */
#include <immintrin.h>

#include "backends/cpu/quant_kernels.h"

/* 16 bytes hold 32 nibbles, element 2j in the low half of byte j. */
static void unpack4(const uint32_t *row, int64_t c0, int64_t n, float *q) {
    const uint8_t *p = (const uint8_t *)row + c0 / 2;
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n; i += 32, p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i lo = _mm_and_si128(v, lo4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
        __m128i a = _mm_unpacklo_epi8(lo, hi), b = _mm_unpackhi_epi8(lo, hi);
        _mm256_storeu_ps(q + i, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(a)));
        _mm256_storeu_ps(q + i + 8, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(a, 8))));
        _mm256_storeu_ps(q + i + 16, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)));
        _mm256_storeu_ps(q + i + 24, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8))));
    }
}

static void unpack8(const uint32_t *row, int64_t c0, int64_t n, float *q) {
    const uint8_t *p = (const uint8_t *)row + c0;
    for (int64_t i = 0; i < n; i += 8)
        _mm256_storeu_ps(q + i, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + i)))));
}

void afo_quant_unpack_avx2(int bits, const uint32_t *row, int64_t c0, int64_t n, float *q) {
    if (bits == 4) unpack4(row, c0, n, q);
    else if (bits == 8) unpack8(row, c0, n, q);
    else afo_quant_unpack_scalar(bits, row, c0, n, q);
}

static inline float param(afo_dtype dt, const void *p, int64_t i) {
    if (dt == AFO_BFLOAT16) {
        uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    if (dt == AFO_FLOAT16) return _cvtsh_ss(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* The 32 levels at element c (a multiple of 32) of a 4- or 8-bit row.
 * 4 bits: each word broadcast to 8 lanes and shifted per lane keeps the
 * work off the shuffle ports, which the widening of bytes would load. */
static inline __attribute__((always_inline)) void levels32(int bits, const uint32_t *row, int64_t c, __m256 q[4]) {
    if (bits == 4) {
        const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), mask = _mm256_set1_epi32(0xf);
        const uint32_t *w = row + c / 8;
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_set1_epi32((int)w[j]);
            q[j] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, shifts), mask));
        }
    } else {
        const uint8_t *p = (const uint8_t *)row + c;
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            q[j] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8 * j))));
    }
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* mc (1..4, a constant in each instance) rows of x per pass over weight
 * rows n0..n1 (registers: 4 levels, 4 group dots, 4 row accumulators). Each
 * group's dot is scaled once, s * (q . x); the bias adds b * sum(x). */
static inline __attribute__((always_inline)) void qmv_block(int bits, int mc, const afo_qmv_args *a, int m0, int64_t n0,
                                                             int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
        const uint32_t *row = a->w + n * a->words;
        __m256 acc[4];
        float bsum[4] = {0};
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) acc[i] = _mm256_setzero_ps();
        for (int64_t g = 0; g < a->G; g++) {
            __m256 d[4];
#pragma GCC unroll 4
            for (int i = 0; i < mc; i++) d[i] = _mm256_setzero_ps();
            for (int64_t c = g * a->gs; c < (g + 1) * a->gs; c += 32) {
                __m256 q[4];
                levels32(bits, row, c, q);
#pragma GCC unroll 4
                for (int i = 0; i < mc; i++) {
                    const float *x = a->x + (m0 + i) * a->K + c;
                    __m256 t = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(x + 8), _mm256_mul_ps(q[0], _mm256_loadu_ps(x)));
                    __m256 u = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(x + 24), _mm256_mul_ps(q[2], _mm256_loadu_ps(x + 16)));
                    d[i] = _mm256_add_ps(d[i], _mm256_add_ps(t, u));
                }
            }
            __m256 s = _mm256_set1_ps(param(a->sdt, a->s, n * a->G + g));
            float b = param(a->sdt, a->b, n * a->G + g);
#pragma GCC unroll 4
            for (int i = 0; i < mc; i++) {
                acc[i] = _mm256_fmadd_ps(d[i], s, acc[i]);
                bsum[i] += b * a->xsum[(m0 + i) * a->G + g];
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < mc; i++) a->y[(m0 + i) * a->ldy + n] = hsum(acc[i]) + bsum[i];
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

void afo_quant_qmv_avx2(const afo_qmv_args *a, int64_t n0, int64_t n1) {
    if (a->bits == 4) qmv_bits(4, a, n0, n1);
    else qmv_bits(8, a, n0, n1);
}
