// Attention prefill on tensor cores, FlashAttention-2 style, for float16 and
// bfloat16 with head size 64 or 128.
//
// A block takes BQ rows of one kv head, (query position, query head of the
// group) pairs position-major as in attention.cu, and streams that head's
// keys and values through shared memory BK at a time, STAGES - 1 tiles of
// cp.async copies in flight while one is used. Each warp owns MT 16-row
// m-tiles (which share every k and v fragment it loads): their q waits in
// shared memory, S = q·kᵀ lands in mma accumulators, the online softmax
// runs on those (a row's values sit in the 4 lanes of a quad), and the
// probabilities, rounded to the input type, are the A fragments of P·V
// straight from the same registers. Scores, row sums and outputs
// accumulate in float32.
//
// Scores are scaled after the dot products, in float32 (q itself is not
// rounded again), and kept in log2 units so that exp is one exp2.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <type_traits>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/mma.cuh"

namespace {

using namespace afo_mma;

// The kernel waits on latencies (mma, shared memory, the softmax's
// shuffles and exp2) more than on any unit's throughput, so it is tuned for
// warps per SM: 2 blocks of 8 warps of one m-tile each, 128 registers a
// thread. On an H200 that measured 1.4 times as fast at head size 128 and
// 1.7 at 64 as 2 blocks of 4 warps of two m-tiles (255 registers); 1 block
// of 16 warps, 4 blocks of 4 warps and, at head size 64, 64-key tiles were
// all slower. So were (4096 tokens, 32 query and 8 kv heads, bench_cuda_ops,
// an H200, session 5) 64-key tiles at head size 128 (116 against 184
// TFLOP/s) and q's fragments held in registers from the first tile on
// (114): at 128 registers both spill.
constexpr int WARPS = 8;
constexpr int MIN_BLOCKS = 2;  // per SM
constexpr int NT = 32 * WARPS;
constexpr int MT = 1;          // 16-row m-tiles per warp (more would share each k and v fragment)
constexpr int WR = 16 * MT;    // query rows per warp
constexpr int BQ = WR * WARPS; // query rows per block
constexpr int BK = 32;         // keys per tile
constexpr int STAGES = 3;      // k/v tiles in shared memory: the one in use and those in flight

struct Args {
    afo_cuda_sdpa p;
    int64_t G, R, nrb; // query heads per kv head, rows per kv head, row blocks per kv head
    float scale2;      // the scale times log2(e)
};

// 16 bytes from global to shared memory, zeros instead when !full.
__device__ __forceinline__ void cp_async16(void *smem, const void *src, bool full) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(src), "r"(full ? 16 : 0) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int n> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(n) : "memory");
}

// (Fragment layouts: mma.cuh.)
template <typename T, int D> __global__ void __launch_bounds__(NT, MIN_BLOCKS) mma_kernel(const Args a) {
    // Rows of D + 8 elements: the 8 rows one ldmatrix reads then start 16
    // bytes apart modulo 128 and hit all 32 banks once.
    constexpr int LD = D + 8, TILE = BK * LD, KD = D / 16, NS = BK / 8, ND = D / 8, CH = D / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    T *qs = (T *)smem, *ks = qs + BQ * LD, *vs = ks + STAGES * TILE; // q [BQ][LD]; k, v [STAGES][BK][LD]
    const afo_cuda_sdpa &p = a.p;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, quad = lane >> 2, ql = lane & 3;
    const int64_t nbh = p.B * p.Hkv, bh = blockIdx.x % nbh, b = bh / p.Hkv, hk = bh % p.Hkv, G = a.G, R = a.R;
    // the last row blocks, the longest under a causal mask, start first
    const int64_t row0 = (a.nrb - 1 - blockIdx.x / nbh) * BQ, first = p.Lk - p.Lq;
    const T *qb = (const T *)p.q + b * p.qs[0];
    const T *kb = (const T *)p.k + b * p.ks[0] + hk * p.ks[1];
    const T *vb = (const T *)p.v + b * p.vs[0] + hk * p.vs[1];
    const int64_t rlast = (row0 + BQ < R ? row0 + BQ : R) - 1;
    const int64_t klo = afo_cuda::key_lo(p, first + row0 / G), khi = afo_cuda::key_hi(p, first + rlast / G);

    // This lane's rows are lrow + 16 * m-tile + 8 * half (recomputed where
    // needed rather than held in registers).
    const int64_t lrow = row0 + warp * WR + quad;
    // The warp's valid rows see keys within [w_lo, w_hi), all of them
    // within [full_lo, full_hi): tiles inside that need no mask.
    const int64_t wr0 = row0 + warp * WR, wr1 = (wr0 + WR < R ? wr0 + WR : R) - 1;
    const bool active = wr0 < R;
    const int64_t w_lo = afo_cuda::key_lo(p, first + wr0 / G), w_hi = afo_cuda::key_hi(p, first + wr1 / G);
    const int64_t full_lo = afo_cuda::key_lo(p, first + wr1 / G), full_hi = afo_cuda::key_hi(p, first + wr0 / G);

    // Tile it goes to buffer it % STAGES, one cp.async group per tile
    // (empty past the last) so that waits count tiles. Keys at or past khi,
    // and rows of q at or past R, are zeros, so that zero probabilities
    // meet finite values.
    const int64_t ntiles = khi > klo ? (khi - klo + BK - 1) / BK : 0;
    auto load = [&](int64_t it) {
        T *dk = ks + it % STAGES * TILE, *dv = vs + it % STAGES * TILE;
        const int64_t t0 = klo + it * BK;
        if (it < ntiles)
#pragma unroll
            for (int idx = tid; idx < BK * CH; idx += NT) {
                int j = idx / CH, c = idx % CH * 8;
                int64_t key = t0 + j;
                bool in = key < khi;
                cp_async16(dk + j * LD + c, in ? kb + key * p.ks[2] + c : kb, in);
                cp_async16(dv + j * LD + c, in ? vb + key * p.vs[2] + c : vb, in);
            }
        cp_async_commit();
    };
    if (ntiles) {
        for (int idx = tid; idx < BQ * CH; idx += NT) {
            int r = idx / CH, c = idx % CH * 8;
            int64_t row = row0 + r;
            bool in = row < R;
            cp_async16(qs + r * LD + c, in ? qb + (hk * G + row % G) * p.qs[1] + row / G * p.qs[2] + c : qb, in);
        }
        for (int it = 0; it < STAGES - 1; it++) load(it); // q in the first group
    }

    float o[MT][ND][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0;
#pragma unroll
        for (int d = 0; d < ND; d++) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0;
    }

    for (int64_t it = 0; it < ntiles; it++) {
        const int64_t t0 = klo + it * BK;
        cp_async_wait<STAGES - 2>();
        __syncthreads(); // tile it is in, and every warp is done with tile it - 1, whose buffer the next load takes
        load(it + STAGES - 1);
        if (!active || t0 >= w_hi || t0 + BK <= w_lo) continue;
        const T *kt = ks + it % STAGES * TILE, *vt = vs + it % STAGES * TILE;
        float s[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int n = 0; n < NS; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0;
        // A fragments of q: matrices (rows +0, d +0), (+8, +0), (+0, +8),
        // (+8, +8). B fragments of kᵀ are k's rows: matrices (keys +0,
        // d +0), (+0, +8), (+8, +0), (+8, +8) give two 8-key n-tiles.
#pragma unroll
        for (int kd = 0; kd < KD; kd++) {
            uint32_t qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                ldmatrix<4>(qa[mt], qs + (warp * WR + 16 * mt + (lane & 15)) * LD + kd * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int n = 0; n < NS; n += 2) {
                uint32_t f[4];
                ldmatrix<4>(f, kt + (n * 8 + (lane & 7) + (lane >> 4) * 8) * LD + kd * 16 + (lane >> 3 & 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma<T>(s[mt][n], qa[mt], f[0], f[1]);
                    mma<T>(s[mt][n + 1], qa[mt], f[2], f[3]);
                }
            }
        }
        const bool masked = p.mask || t0 < full_lo || t0 + BK > full_hi;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int64_t lo = 0, hi = 0, moff = 0, row = lrow + 16 * mt + 8 * h;
                if (masked && row < R) {
                    lo = afo_cuda::key_lo(p, first + row / G), hi = afo_cuda::key_hi(p, first + row / G);
                    if (p.mask) moff = b * p.ms[0] + (hk * G + row % G) * p.ms[1] + row / G * p.ms[2];
                }
#pragma unroll
                for (int n = 0; n < NS; n++)
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        float &x = s[mt][n][2 * h + c];
                        x *= a.scale2;
                        if (!masked) continue;
                        int64_t key = t0 + 8 * n + 2 * ql + c;
                        if (key < lo || key >= hi) x = -INFINITY;
                        else if (p.mask)
                            x += (float)(LOG2E * afo_cuda::mask_at(p.mask, p.mask_dtype, moff + key * p.ms[3]));
                    }
            }
            online_softmax(s[mt], m[mt], l[mt], o[mt]);
        }
        // The accumulators of n-tiles 2k and 2k + 1 are the A fragment
        // of keys 16k..16k+15; v's rows, transposed, are its B
        // fragments: matrices (keys +0, d +0), (+8, +0), (+0, +8), (+8, +8).
#pragma unroll
        for (int k = 0; k < BK / 16; k++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float *c = s[mt][2 * k + i / 2] + i % 2 * 2;
                    pa[mt][i] = pack<T>(c[0], c[1]);
                }
#pragma unroll
            for (int d = 0; d < ND; d += 2) {
                uint32_t f[4];
                ldmatrix<4, true>(f, vt + (k * 16 + (lane & 7) + (lane >> 3 & 1) * 8) * LD + d * 8 + (lane >> 4) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma<T>(o[mt][d], pa[mt], f[0], f[1]);
                    mma<T>(o[mt][d + 1], pa[mt], f[2], f[3]);
                }
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float sum = quad_sum(l[mt][h]);
            int64_t row = lrow + 16 * mt + 8 * h;
            if (row >= R) continue;
            float inv = sum > 0 ? 1.f / sum : 0.f; // a row that sees no key outputs zeros
            T *out = (T *)p.out + ((b * p.Hq + hk * G + row % G) * p.Lq + row / G) * D + 2 * ql;
#pragma unroll
            for (int d = 0; d < ND; d++)
                *(uint32_t *)(out + 8 * d) = pack<T>(o[mt][d][2 * h] * inv, o[mt][d][2 * h + 1] * inv);
        }
}

template <typename T, int D> cudaError_t launch(const Args &a, cudaStream_t st) {
    const size_t smem = (BQ + 2 * STAGES * (size_t)BK) * (D + 8) * sizeof(T);
    static bool raised; // the opt-in above 48 KiB is per kernel, once per process
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute(mma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
        raised = true;
    }
    mma_kernel<T, D><<<(unsigned)(a.nrb * a.p.B * a.p.Hkv), NT, smem, st>>>(a);
    return cudaGetLastError();
}

template <typename T> cudaError_t launch_t(const Args &a, cudaStream_t st) {
    return a.p.D == 64 ? launch<T, 64>(a, st) : launch<T, 128>(a, st);
}

} // namespace

cudaError_t afo_cuda::sdpa_mma(const afo_cuda_sdpa &p, int64_t G, cudaStream_t st) {
    Args a = {p, G, G * p.Lq, 0, (float)(p.scale * LOG2E)};
    a.nrb = (a.R + BQ - 1) / BQ;
    return p.dtype == AFO_FLOAT16 ? launch_t<__half>(a, st) : launch_t<__nv_bfloat16>(a, st);
}
