/* CPU matrix multiply: decode-time matvec and prefill GEMM, dispatched at
 * run time to the best SIMD level (see cpu_features.h). */
#ifndef AFO_GEMM_H
#define AFO_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#include "afo/base.h"

typedef struct afo_gemm_args {
    afo_dtype dtype;          /* of B (the weights): AFO_FLOAT32, AFO_FLOAT16, AFO_BFLOAT16 (AFO_FLOAT64: scalar path, double accumulation) */
    afo_dtype a_dtype;        /* of A: one of the same; may differ from dtype (float32 activations x bf16 weights), float64 only with float64 */
    int64_t M, N, K;
    const void *A; int64_t a_rs, a_cs;   /* element (m,k) at A[m*a_rs + k*a_cs] (element strides, any sign-free values) */
    const void *B; int64_t b_rs, b_cs;   /* element (k,n) at B[k*b_rs + n*b_cs] */
    void *C; afo_dtype c_dtype; int64_t ldc; /* C[m*ldc + n] written (not accumulated), converted to c_dtype (dtype, a_dtype or float32) */
} afo_gemm_args;

afo_status afo_cpu_gemm(const afo_gemm_args *g);           /* dispatched, threaded via afo_parallel_for/afo_parallel_run */
afo_status afo_cpu_gemm_reference(const afo_gemm_args *g); /* scalar, double accumulation, for tests */
void afo_cpu_convert_row(afo_dtype from, const void *src, afo_dtype to, void *dst, int64_t n); /* among f32, f16, bf16 */
const char *afo_cpu_kernel_name(void); /* "amx", "avx512", "avx2", "neon", "scalar" */

/* Whether float32 GEMMs may go to OpenBLAS when it is linked and the strides
 * suit it (default on). Benchmarks and tests turn it off to measure and
 * check afo's own kernels. */
void afo_cpu_gemm_set_blas(bool enable);

/* How bf16 GEMMs at the avx512 level use a bf16 dot-product microkernel
 * (AVX512_BF16) where the CPU has one (the amx level always uses tiles): -1 (default) when a one-time timing says it beats widening
 * to f32, 0 never, 1 always. For tests and benchmarks. */
void afo_cpu_gemm_set_bf16_pairs(int mode);

/* ------------------------------------------------------------------------
 * Per-SIMD-level kernels behind the dispatch (gemm.c drives them). */

/* Matvec handles up to this many rows of A per weight-row read. */
#define AFO_MATVEC_MAX_M 8

/* The weight-layout matvec's order, shared by the SIMD levels: rows n0 .. n1
 * in passes of NR rows a stride L = (n1 - n0) / NR apart, so that a thread
 * reads NR long sequential streams (pass j's rows n0 + j + r L), then the
 * rows left over one at a time; A's rows in groups of up to 4, a group after
 * the first re-reading the tile from cache. Each tile is the level's
 * mv_tile(t, MR, NR, K, a, lda, w, row_stride_bytes, out, ldo, out_stride,
 * prefetch_offset), which prefetches each line it reads in the stream's next
 * row, across the 4 KiB pages that hardware prefetchers stop at. Four
 * adjacent rows a pass without prefetches (one 4 KiB page a bf16 row at K =
 * 2048) had a Zen 5 EPYC's bf16 TinyLlama decode take 1.28x as long. */
#define AFO_MV_PASSES(NR, t, M, K, a, lda, w, ldw, n0, n1, out, ldo)                                           \
    do {                                                                                                       \
        const afo_dtype t_ = (t);                                                                              \
        const int64_t K_ = (K), lda_ = (lda), ldo_ = (ldo), ldwb_ = (ldw) * (int64_t)(t_ == AFO_FLOAT32 ? 4 : 2); \
        int64_t L_ = ((n1) - (n0)) / (NR), left_ = ((n1) - (n0)) % (NR);                                       \
        for (int64_t j_ = 0; j_ < L_ + left_; j_++) {                                                          \
            int full_ = j_ < L_;                                                                               \
            int64_t n_ = full_ ? (n0) + j_ : (n0) + ((NR) - 1) * L_ + j_;                                      \
            for (int m0_ = 0; m0_ < (M); m0_ += 4) {                                                           \
                const float *a_ = (a) + m0_ * lda_;                                                            \
                const char *w_ = (const char *)(w) + n_ * ldwb_;                                               \
                float *o_ = (out) + m0_ * ldo_ + n_ - (n0);                                                    \
                switch (2 * ((M) - m0_ < 4 ? (M) - m0_ : 4) + full_) {                                         \
                case 2: AFO_MV_TILE_(1, 1); break;                                                             \
                case 3: AFO_MV_TILE_(1, NR); break;                                                            \
                case 4: AFO_MV_TILE_(2, 1); break;                                                             \
                case 5: AFO_MV_TILE_(2, NR); break;                                                            \
                case 6: AFO_MV_TILE_(3, 1); break;                                                             \
                case 7: AFO_MV_TILE_(3, NR); break;                                                            \
                case 8: AFO_MV_TILE_(4, 1); break;                                                             \
                default: AFO_MV_TILE_(4, NR); break;                                                           \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)
#define AFO_MV_TILE_(MR, NR) mv_tile(t_, MR, NR, K_, a_, lda_, w_, L_ * ldwb_, o_, ldo_, L_, ldwb_)

typedef struct afo_gemm_kernels {
    /* f32 microkernel on packed panels: for i < mr, j < nr,
     * c[i*ldc + j] (+)= sum_{k<kc} a[k*mr + i] * b[k*nr + j]. */
    int mr, nr;
    void (*ukr)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, bool accumulate);
    /* Same on bf16 panels holding k-pairs, a[(k/2)*2*mr + 2*i + k%2], with
     * kc2 = ceil(kc/2) pairs; NULL where the ISA has no bf16 dot product
     * (bf16 is then widened to f32 while packing). */
    int mr_bf16, nr_bf16;
    void (*ukr_bf16)(int64_t kc2, const uint16_t *a, const uint16_t *b, float *c, int64_t ldc,
                     bool accumulate);
    /* Optional fast start of k-pair packing for rows with contiguous k:
     * writes pairs [0, q) of a P-row panel (layout above) from rows x[i*rs..]
     * of which the first pr exist (the others read as zero), for the largest
     * q that is a multiple of 16 with 2q <= cols, and returns q. */
    int64_t (*pack_pairs)(const uint16_t *x, int64_t rs, int pr, int64_t cols, int P, uint16_t *d);
    /* Cache blocking (elements): kc of K, mc rows of A, nc columns of B. */
    int64_t kc, mc, nc;
    /* Weight-layout matvec: for m < M (<= AFO_MATVEC_MAX_M), n0 <= n < n1,
     * out[m*ldo + n - n0] = sum_{k<K} a[m*lda + k] * w[n*ldw + k], where w
     * has dtype wdt (f32, f16 or bf16). */
    void (*matvec)(afo_dtype wdt, int M, int64_t K, const float *a, int64_t lda, const void *w,
                   int64_t ldw, int64_t n0, int64_t n1, float *out, int64_t ldo);
    /* afo_cpu_convert_row for this level. */
    void (*convert)(afo_dtype from, const void *src, afo_dtype to, void *dst, int64_t n);
} afo_gemm_kernels;

/* bf16 GEMM on matrix tiles (AFO_CPU_AMX), for an mr x nr block of C:
 * c[i*ldc + j] (+)= sum_k a(i,k) b(k,j) over kb blocks of 32 k. The A panel
 * holds per k block mr rows of 32 bf16, a[(kb*mr + i)*32 + k%32]; the B
 * panel is the k-pair panel above (nr columns) with k padded to 32. */
typedef struct afo_gemm_tiles {
    int mr, nr;
    int64_t kc, mc, nc; /* kc a multiple of 32 */
    /* Bracket a thread's ukr calls: tile configuration is per thread, and
     * released tiles spare the OS saving 8 KiB on every context switch. */
    void (*begin)(void);
    void (*end)(void);
    void (*ukr)(int64_t kb, const uint16_t *a, const uint16_t *b, float *c, int64_t ldc, bool accumulate);
} afo_gemm_tiles;

extern const afo_gemm_kernels afo_gemm_kernels_scalar;
#if defined(__x86_64__)
extern const afo_gemm_kernels afo_gemm_kernels_avx2;
extern const afo_gemm_kernels afo_gemm_kernels_avx512;
extern const afo_gemm_tiles afo_gemm_tiles_amx;
#elif defined(__aarch64__)
extern const afo_gemm_kernels afo_gemm_kernels_neon;
#endif

#endif
