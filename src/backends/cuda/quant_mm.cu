// Quantized matmul for many rows of x (prefill), and for x @ w: a block
// computes a 128x128 tile of y; each step of 32 along K it dequantizes the
// W tile into shared memory (in x's type) beside the x tile and multiplies
// them, with bf16/f16 tensor cores (f32 accumulation) for 16-bit x and f32
// SIMT for f32 x, which keeps float32 results at float32 accuracy. The
// next step's tiles are fetched into registers while the current one is
// multiplied.
#include <mma.h>

#include "backends/cuda/quant_common.cuh"

using namespace afo_q;

namespace {

constexpr int BM = 128, BN = 128, BK = 32, THREADS = 256;
// Pieces of 8 elements: a tile row of 32 holds 4; 128 rows hold 512, two
// per thread, for the x tile and the W tile alike.
constexpr int PIECES = 2;

template <typename T> struct tile_pad {
    static constexpr int value = 8; // wmma wants ldm a multiple of 8 16-bit elements
};
template <> struct tile_pad<float> {
    static constexpr int value = 1; // row stride 33: the SIMT reads hit 32 banks
};

struct qmm_args {
    afo_cuda_qmat m;
    const void *x;
    void *y;
    int64_t M, N, K;
    int transpose;
};

template <typename T> struct staged {
    float x[PIECES][8];
    uint64_t w[PIECES]; // 8 levels, bits each, from bit 0
    float s[PIECES], b[PIECES];
    bool wok[PIECES];
};

// Piece p of this thread: x tile row = id / 4, k offset (id % 4) * 8.
template <typename T> __device__ __forceinline__ void fetch_x(const qmm_args &a, int64_t m0, int64_t k0, staged<T> &st) {
    const T *x = (const T *)a.x;
#pragma unroll
    for (int p = 0; p < PIECES; p++) {
        const int id = threadIdx.x + p * THREADS, row = id / 4, kk = (id % 4) * 8;
        const int64_t m = m0 + row, k = k0 + kk;
        if (m < a.M && k + 8 <= a.K && a.K % 8 == 0) {
            const T *src = x + m * a.K + k;
            if constexpr (sizeof(T) == 4) {
                const float4 u = __ldg((const float4 *)src), v = __ldg((const float4 *)src + 1);
                st.x[p][0] = u.x, st.x[p][1] = u.y, st.x[p][2] = u.z, st.x[p][3] = u.w;
                st.x[p][4] = v.x, st.x[p][5] = v.y, st.x[p][6] = v.z, st.x[p][7] = v.w;
            } else {
                const uint4 u = __ldg((const uint4 *)src);
                const T *h = (const T *)&u;
#pragma unroll
                for (int e = 0; e < 8; e++) st.x[p][e] = to_f(h[e]);
            }
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) st.x[p][e] = m < a.M && k + e < a.K ? to_f(x[m * a.K + k + e]) : 0.0f;
        }
    }
}

// 8 consecutive levels of one packed row starting at element c (c a
// multiple of 8): bits bytes from byte c*bits/8, within two words.
__device__ __forceinline__ uint64_t fetch_levels(const uint32_t *row, int64_t c, int bits) {
    const int64_t byte = c / 8 * bits;
    const int sh = (int)(byte % 4) * 8;
    const uint32_t *p = row + byte / 4;
    uint64_t v = __ldg(p);
    if (sh + 8 * bits > 32) v |= (uint64_t)__ldg(p + 1) << 32;
    return v >> sh;
}

// transpose: W [N, K]; piece id: tile row n = id / 4, k offset (id % 4) * 8.
// else: W [K, N]; piece id: k row id / 16, n offset (id % 16) * 8.
template <typename T> __device__ __forceinline__ void fetch_w(const qmm_args &a, int64_t n0, int64_t k0, staged<T> &st) {
    const afo_cuda_qmat &m = a.m;
    const int64_t G = m.cols / m.gs;
#pragma unroll
    for (int p = 0; p < PIECES; p++) {
        const int id = threadIdx.x + p * THREADS;
        int64_t row, col;
        if (a.transpose) row = n0 + id / 4, col = k0 + (id % 4) * 8;
        else row = k0 + id / 16, col = n0 + (id % 16) * 8;
        st.wok[p] = row < m.rows && col < m.cols;
        if (!st.wok[p]) continue;
        st.w[p] = fetch_levels(m.w + row * m.words, col, m.bits);
        st.s[p] = load_f(m.s, row * G + col / m.gs, m.sdt);
        st.b[p] = load_f(m.b, row * G + col / m.gs, m.sdt);
    }
}

template <typename T, int LD>
__device__ __forceinline__ void commit(const qmm_args &a, const staged<T> &st, T (*xs)[LD], T (*ws)[LD]) {
    const uint32_t mask = (1u << a.m.bits) - 1;
#pragma unroll
    for (int p = 0; p < PIECES; p++) {
        const int id = threadIdx.x + p * THREADS;
#pragma unroll
        for (int e = 0; e < 8; e++) xs[id / 4][(id % 4) * 8 + e] = from_f<T>(st.x[p][e]);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float v = 0.0f;
            if (st.wok[p]) v = fmaf(st.s[p], (float)((uint32_t)(st.w[p] >> (e * a.m.bits)) & mask), st.b[p]);
            // ws is n-major with k contiguous: the col-major B operand
            if (a.transpose) ws[id / 4][(id % 4) * 8 + e] = from_f<T>(v);
            else ws[(id % 16) * 8 + e][id / 16] = from_f<T>(v);
        }
    }
}

template <typename T, int LD> struct smem {
    T xs[BM][LD];
    T ws[BN][LD];
    float scratch[THREADS / 32][16 * 16]; // wmma epilogue: one fragment per warp
};

// Stores the staged step k0 in shared memory once every thread is done with
// the previous one, then starts fetching step k0 + BK.
template <typename T, int LD>
__device__ __forceinline__ void next_tile(const qmm_args &a, staged<T> &st, smem<T, LD> &sm, int64_t m0, int64_t n0,
                                          int64_t k0) {
    __syncthreads();
    commit<T, LD>(a, st, sm.xs, sm.ws);
    __syncthreads();
    if (k0 + BK < a.K) {
        fetch_x(a, m0, k0 + BK, st);
        fetch_w(a, n0, k0 + BK, st);
    }
}

template <typename T> __global__ void __launch_bounds__(THREADS, 2) qmm_tiled_kernel(qmm_args a) {
    constexpr int LD = BK + tile_pad<T>::value;
    __shared__ __align__(32) smem<T, LD> sm;
    const int64_t m0 = (int64_t)blockIdx.y * BM, n0 = (int64_t)blockIdx.x * BN;
    staged<T> st;
    fetch_x(a, m0, 0, st);
    fetch_w(a, n0, 0, st);
    T *y = (T *)a.y;
    if constexpr (sizeof(T) == 2) {
        using namespace nvcuda;
        // warps 2 (m) x 4 (n), each 64 x 32 of the tile: 4 x 2 fragments
        const int warp = threadIdx.x / 32, wm = warp / 4, wn = warp % 4;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);
        for (int64_t k0 = 0; k0 < a.K; k0 += BK) {
            next_tile<T, LD>(a, st, sm, m0, n0, k0);
#pragma unroll
            for (int kk = 0; kk < BK; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[4];
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
                for (int i = 0; i < 4; i++) wmma::load_matrix_sync(fa[i], &sm.xs[wm * 64 + i * 16][kk], LD);
#pragma unroll
                for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], &sm.ws[wn * 32 + j * 16][kk], LD);
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
            }
        }
        float *scr = sm.scratch[warp];
        const int lane = threadIdx.x & 31;
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                wmma::store_matrix_sync(scr, acc[i][j], 16, wmma::mem_row_major);
                __syncwarp();
                for (int e = lane; e < 256; e += 32) {
                    const int64_t m = m0 + wm * 64 + i * 16 + e / 16, n = n0 + wn * 32 + j * 16 + e % 16;
                    if (m < a.M && n < a.N) y[m * a.N + n] = from_f<T>(scr[e]);
                }
                __syncwarp();
            }
    } else {
        // thread (ty, tx) owns rows ty + 16i and columns tx + 16j
        const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
        float acc[8][8] = {};
        for (int64_t k0 = 0; k0 < a.K; k0 += BK) {
            next_tile<T, LD>(a, st, sm, m0, n0, k0);
#pragma unroll 4
            for (int k = 0; k < BK; k++) {
                float xa[8], wb[8];
#pragma unroll
                for (int i = 0; i < 8; i++) xa[i] = sm.xs[ty + 16 * i][k];
#pragma unroll
                for (int j = 0; j < 8; j++) wb[j] = sm.ws[tx + 16 * j][k];
#pragma unroll
                for (int i = 0; i < 8; i++)
#pragma unroll
                    for (int j = 0; j < 8; j++) acc[i][j] = fmaf(xa[i], wb[j], acc[i][j]);
            }
        }
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
                if (m < a.M && n < a.N) y[m * a.N + n] = acc[i][j];
            }
    }
}

} // namespace

extern "C" void afo_cuda_qmm_tiled(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, int64_t M, int64_t N, int64_t K,
                                   int transpose, void *y, cudaStream_t stream) {
    qmm_args a = {*m, x, y, M, N, K, transpose};
    const dim3 grid((unsigned)((N + BN - 1) / BN), (unsigned)((M + BM - 1) / BM));
    switch (xdt) {
    case AFO_BFLOAT16: qmm_tiled_kernel<__nv_bfloat16><<<grid, THREADS, 0, stream>>>(a); break;
    case AFO_FLOAT16: qmm_tiled_kernel<__half><<<grid, THREADS, 0, stream>>>(a); break;
    default: qmm_tiled_kernel<float><<<grid, THREADS, 0, stream>>>(a); break;
    }
}
