// Tensor-core pieces the attention kernels share (attention_mma.cu's
// prefill, attention.cu's decode): the m16n8k16 product on 16-bit
// operands, packing floats into its operand registers, and the online
// softmax over accumulator fragments, in log2 units.
//
// Fragment layouts (PTX ISA, mma.m16n8k16): in an accumulator c[e] of a
// 16×8 tile, lane (quad, ql) holds row quad + 8 * (e / 2), column
// 2 * ql + e % 2; an A fragment a[i] holds row quad + 8 * (i % 2), columns
// 2 * ql + 8 * (i / 2) and the next; a B fragment b[i], rows 2 * ql + 8 * i
// and the next of column quad.
#ifndef AFO_CUDA_MMA_CUH
#define AFO_CUDA_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

namespace afo_mma {

// Scores in log2 units (times LOG2E), so that exp is one exp2; LN2 takes a
// max back to natural-log units.
constexpr double LOG2E = 1.4426950408889634, LN2 = 0.6931471805599453;

// c += a·b for one m16n8k16 tile: a 16×16 row-major, b 16×8 column-major.
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#define AFO_MMA(ty)                                                                                                  \
    asm("mma.sync.aligned.m16n8k16.row.col.f32." ty "." ty ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "          \
        "{%0,%1,%2,%3};"                                                                                             \
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                                             \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
    if constexpr (std::is_same<T, __half>::value) AFO_MMA("f16");
    else AFO_MMA("bf16");
#undef AFO_MMA
}

// N (2 or 4) 8×8 matrices of 16-bit values from shared memory: lane l gives
// the address of row l % 8 of matrix l / 8 and gets register i of matrix i,
// transposed with TRANS.
template <int N, bool TRANS = false> __device__ __forceinline__ void ldmatrix(uint32_t (&r)[N], const void *smem) {
    static_assert(N == 2 || N == 4, "ldmatrix loads 2 or 4 matrices here");
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    if constexpr (N == 4 && TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
    else if constexpr (N == 4)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
    else if constexpr (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
}

// Two floats as the pair of T an mma operand register holds, lo in the low half.
template <typename T> __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    uint32_t u;
    if constexpr (std::is_same<T, __half>::value) {
        __half2 v = __floats2half2_rn(lo, hi);
        memcpy(&u, &v, 4);
    } else {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        memcpy(&u, &v, 4);
    }
    return u;
}

// The transpose of an 8×8 matrix of 16-bit values held a register a lane
// (row lane / 4, columns 2 * (lane % 4) and the next), in the same layout.
__device__ __forceinline__ uint32_t transpose8x8(uint32_t v) {
    uint32_t r;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(v));
    return r;
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// exp2 without the scaling for subnormal results: probabilities below
// 2^-126 of the row's largest count as zeros.
__device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// s (scores of one m-tile, in log2 units) become probabilities; the running
// max m and sum l of its rows and their outputs o follow.
template <int NS, int ND>
__device__ __forceinline__ void online_softmax(float (&s)[NS][4], float (&m)[2], float (&l)[2], float (&o)[ND][4]) {
    float mx[2] = {m[0], m[1]}, base[2], corr[2], sum[2] = {0, 0};
#pragma unroll
    for (int n = 0; n < NS; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        mx[h] = quad_max(mx[h]);
        base[h] = mx[h] == -INFINITY ? 0.f : mx[h]; // a row that has seen no key yet stays at zero
        corr[h] = exp2_ftz(m[h] - base[h]);
        m[h] = mx[h];
    }
#pragma unroll
    for (int n = 0; n < NS; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) sum[e >> 1] += s[n][e] = exp2_ftz(s[n][e] - base[e >> 1]);
#pragma unroll
    for (int h = 0; h < 2; h++) l[h] = l[h] * corr[h] + sum[h];
#pragma unroll
    for (int d = 0; d < ND; d++) o[d][0] *= corr[0], o[d][1] *= corr[0], o[d][2] *= corr[1], o[d][3] *= corr[1];
}

} // namespace afo_mma

#endif
