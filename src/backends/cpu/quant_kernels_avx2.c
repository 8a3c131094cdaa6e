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
