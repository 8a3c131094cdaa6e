// The decode matvec y = x · dequantize(W)ᵀ for one row of 16-bit x and
// 8-bit W, on integer dot products (dp4a): converting every level to a
// float held the float kernel (quant.cu) to half of HBM bandwidth. Each
// block first rounds x to int8 per block of 32 elements, sx = max|x| / 127,
// into shared memory (the CPU's matvec does the same against 4-bit levels),
// then y[n] = Σ_chunks s·sx·(q · xq) + b·Σx, with Σx the float sum of the
// chunk's x. A warp owns RPW rows and keeps kBatch 16-byte loads of W in
// flight per lane; the first batch is issued before x is quantized, so
// the quantization hides under the loads' latency. Against the float
// kernel, on an H200 (afo bench, prompt 512, same run): 8-bit decode 198.8
// -> 214.0 tok/s (Llama-3.1-8B), 498.9 -> 521.5 (TinyLlama); at 4 bits the
// same scheme lost (220.5 -> 212.9, 537.6 -> 458.5): the float kernel's
// level conversion is cheap there and the quantization of x is not.
#include "backends/cuda/quant_common.cuh"
#include "backends/cuda/warp.cuh"

using namespace afo_q;

namespace {

constexpr int kWarps = 8, kBatch = 8;

__device__ __forceinline__ int dot4_u8_s8(uint32_t levels, int x, int acc) {
    int r;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(levels), "r"(x), "r"(acc));
    return r;
}

__device__ __forceinline__ uint32_t pack4(int a, int b, int c, int d) {
    return (uint32_t)(a & 0xff) | (uint32_t)(b & 0xff) << 8 | (uint32_t)(c & 0xff) << 16 | (uint32_t)d << 24;
}

// Eight consecutive elements of x rounded with the shared scale of their
// chunk (four threads, adjacent lanes, hold a chunk), stored as two words.
template <typename XT>
__device__ __forceinline__ void quantize_octet(const XT *x, int octet, bool valid, int2 *xq, float2 *chunk) {
    float v[8];
    if (valid) {
        const uint4 raw = *(const uint4 *)(x + octet * 8);
        const XT *h = (const XT *)&raw;
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = to_f(h[e]);
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = 0.0f;
    }
    float amax = 0.0f, sum = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; e++) amax = fmaxf(amax, fabsf(v[e])), sum += v[e];
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    }
    if (!valid) return;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int q[8];
#pragma unroll
    for (int e = 0; e < 8; e++) q[e] = __float2int_rn(v[e] * inv);
    xq[octet] = make_int2((int)pack4(q[0], q[1], q[2], q[3]), (int)pack4(q[4], q[5], q[6], q[7]));
    if ((octet & 3) == 0) chunk[octet / 4] = make_float2(amax / 127.0f, sum);
}

// q · xq over one chunk of 32 levels (two loaded 16-byte pieces) against
// its 32 bytes of xq.
__device__ __forceinline__ int chunk_dot(const uint4 (&w)[2], const int4 *xq) {
    int d = 0;
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const int4 x = xq[p];
        d = dot4_u8_s8(w[p].x, x.x, d);
        d = dot4_u8_s8(w[p].y, x.y, d);
        d = dot4_u8_s8(w[p].z, x.z, d);
        d = dot4_u8_s8(w[p].w, x.w, d);
    }
    return d;
}

struct qmv8_args {
    const uint32_t *w;
    const void *s, *b, *x;
    void *y;
    afo_cuda_addend add;
    afo_dtype sdt;
    int gs;
    int64_t N, K, words;
};

// A batch holds, for each of the warp's RPW rows, the next B / RPW chunks
// of the lane (chunk c = lane + 32 j), so rows and steps are compile-time
// constants inside it: index arithmetic per chunk had cost as much as the
// dot products.
template <typename XT, int RPW> __global__ void __launch_bounds__(kWarps * 32, 4) qmv8_kernel(qmv8_args a) {
    extern __shared__ int4 smem[];
    constexpr int P = 2;          // 16-byte pieces per chunk
    constexpr int B = kBatch / P; // chunks per batch
    constexpr int S = B / RPW;    // steps per row per batch
    static_assert(B % RPW == 0, "a batch covers every row");
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int chunks = (int)(a.K / 32), per_lane = (chunks + 31) / 32, group_shift = __ffs(a.gs / 32) - 1;
    const int64_t n0 = ((int64_t)blockIdx.x * kWarps + warp) * RPW, G = a.K / a.gs;
    int2 *xq = (int2 *)smem;
    float2 *chunk = (float2 *)((char *)smem + a.K);

    uint4 w[RPW][S][P];
    auto load = [&](int j0) {
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int j = 0; j < S; j++) {
                const int c = lane + 32 * (j0 + j);
                if (n0 + r < a.N && c < chunks) {
                    const uint4 *p = (const uint4 *)(a.w + (n0 + r) * a.words) + (int64_t)c * P;
#pragma unroll
                    for (int k = 0; k < P; k++) w[r][j][k] = __ldg(p + k);
                }
            }
    };
    load(0);
    for (int base = 0; base < chunks * 4; base += blockDim.x) {
        const int o = base + threadIdx.x;
        quantize_octet((const XT *)a.x, o, o < chunks * 4, xq, chunk);
    }
    __syncthreads();

    float acc[RPW] = {};
    for (int j0 = 0; j0 < per_lane; j0 += S) {
        if (j0 > 0) load(j0);
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int j = 0; j < S; j++) {
                const int c = lane + 32 * (j0 + j);
                if (n0 + r >= a.N || c >= chunks) continue;
                const int d = chunk_dot(w[r][j], (const int4 *)(xq + 4 * c));
                const int64_t g = (n0 + r) * G + (c >> group_shift);
                const float2 cx = chunk[c];
                acc[r] += load_f(a.s, g, a.sdt) * (cx.x * (float)d) + load_f(a.b, g, a.sdt) * cx.y;
            }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const float v = afo_cuda::warp_sum(acc[r]);
        if (lane == 0 && n0 + r < a.N) ((XT *)a.y)[n0 + r] = from_f<XT>(afo_cuda::plus_addend(v, a.add, n0 + r));
    }
}

template <typename XT, int RPW> void launch(const qmv8_args &a, cudaStream_t stream) {
    const int64_t rows_per_block = (int64_t)kWarps * RPW;
    const unsigned blocks = (unsigned)((a.N + rows_per_block - 1) / rows_per_block);
    const size_t smem = (size_t)a.K + (size_t)(a.K / 32) * sizeof(float2);
    qmv8_kernel<XT, RPW><<<blocks, kWarps * 32, smem, stream>>>(a);
}

// Rows per warp: enough that a lane has a whole batch of loads to issue.
template <typename XT> void launch_rows(const qmv8_args &a, cudaStream_t stream) {
    const int64_t loads_per_row = (a.K / 32 + 31) / 32 * 2;
    if (loads_per_row * 2 > kBatch) launch<XT, 1>(a, stream);
    else if (loads_per_row * 4 > kBatch) launch<XT, 2>(a, stream);
    else launch<XT, 4>(a, stream);
}

} // namespace

extern "C" bool afo_cuda_qmv_int8_applies(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, int64_t M) {
    const int64_t K = m->cols;
    return M == 1 && m->bits == 8 && (xdt == AFO_BFLOAT16 || xdt == AFO_FLOAT16) &&
           K % 32 == 0 && K + K / 32 * (int64_t)sizeof(float2) <= 48 * 1024 && (uintptr_t)m->w % 16 == 0 &&
           (uintptr_t)x % 16 == 0;
}

extern "C" void afo_cuda_qmv_int8(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, void *y, afo_cuda_addend add,
                                  cudaStream_t stream) {
    const qmv8_args a = {m->w, m->s, m->b, x, y, add, m->sdt, m->gs, m->rows, m->cols, m->words};
    if (xdt == AFO_BFLOAT16) launch_rows<__nv_bfloat16>(a, stream);
    else launch_rows<__half>(a, stream);
}
