// Decode attention: one query position of each head against a long KV
// cache, its keys split over the blocks of a thread-block cluster (or, past
// a cluster's size, over blocks merging through global memory). The
// dispatch is attention.cu's (afo_cuda_sdpa_run).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include <type_traits>

#include <cooperative_groups.h>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"
#include "backends/cuda/rope.cuh"
#include "backends/cuda/warp.cuh"

namespace {

using afo_cuda::DEC_CLUSTER;
using afo_cuda::put;
using afo_cuda::to_c;
using afo_cuda::warp_sum;
using Args = afo_cuda::SdpaArgs;

// One query position (a decode step) without a mask, head size 64 or 128,
// 16-bit or float32 data: the flash kernel's 32-row tiles would hold a
// group's 1-8 rows with one warp busy, and a step's attention took 15 us
// plus 4 for the merge at any length. Here lane l holds elements
// [l E, l E + E) of every row, a warp takes 8 keys at a time (their loads
// in flight together) and sums the batch's dot products over its lanes
// all at once (warp_sum_many), the warps of a block merge in shared memory, and
// the splits of a head, a thread-block cluster, merge through one another's
// shared memory: no second kernel. Eight warps a block
// against four (splits of 64 keys instead of 32, half the partials to
// merge): 8B bf16 decode 206.0 -> 209.0 tok/s on an H200; sixteen gained
// nothing more. That is the float32 path (decode_warp_simt); 16-bit data
// takes the same blocks and merge with tensor cores for a warp's keys
// (decode_warp_mma), whose per-warp chain of instructions is several
// times shorter: on an H200, decode tok/s, two alternating runs each, 8B
// 4-bit 363.2, 362.7 -> 377.7, 375.3, TinyLlama 4-bit 855.0, 826.8 ->
// 919.2, 924.7, 8B bf16 210.0 -> 211.3; 5 or 18 splits instead of the
// default 9 at a ~550-token context: 373.2 and 359.0 (8B 4-bit). The
// splits had merged through global memory (partial sums, a fence, a
// counter per head, the last block reading them back); a cluster's
// blocks read one another's shared memory instead, up to the portable
// cluster size of 8 splits, and the 9 to 16 splits of a context up to
// 1K keys become 8: on an H200, builds run in turn (a b b a a b), 8B
// 4-bit at a 512-token prompt 461.3, 461.5, 461.3 -> 477.7, 481.5, 481.7
// tok/s. Longer contexts take more splits than a cluster holds and merge
// through global memory as before (4096: 386.8, 386.4 against 389.2,
// 385.8).
constexpr int DEC_WARPS = 8, DEC_KB = 8, DEC_MAX_HEADS = 4096;
constexpr int MAX_SPLIT = 256; // splits of a head's keys at most (merged through global memory)
__device__ unsigned int g_split_done[DEC_MAX_HEADS]; // zero at load

// E consecutive elements (2 or 4 of 16 bits, or 4 of float32) in one load.
template <typename T, int E> __device__ __forceinline__ void load_e(const T *p, float (&o)[E]) {
    constexpr int bytes = E * (int)sizeof(T);
    static_assert(bytes == 4 || bytes == 8 || bytes == 16, "one 4-, 8- or 16-byte load");
    using Raw = std::conditional_t<bytes == 16, uint4, std::conditional_t<bytes == 8, uint2, uint32_t>>;
    const Raw r = *(const Raw *)p;
    const T *t = (const T *)&r;
#pragma unroll
    for (int e = 0; e < E; e++) o[e] = to_c(t[e]);
}

// Sums each of a lane's N values over the warp in N - 1 shuffles (N <= 32)
// instead of 5 N: each step keeps half of the values, adding the partner
// lane's copies of them, and sends it the other half. Afterwards value i
// sits in lanes i << (5 - log2 N) on (N <= 32), or in slot i % 2 of lane
// i / 2 (N = 64).
template <int C, int O, int N> __device__ __forceinline__ void sum_step(float (&v)[N], int lane) {
    if constexpr (O > 0 && C > 1) {
        const bool upper = lane & O;
#pragma unroll
        for (int i = 0; i < C / 2; i++) {
            const float send = upper ? v[i] : v[i + C / 2], keep = upper ? v[i + C / 2] : v[i];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
        }
        sum_step<C / 2, O / 2>(v, lane);
    } else if constexpr (O > 0) {
        v[0] += __shfl_xor_sync(0xffffffffu, v[0], O);
        sum_step<1, O / 2>(v, lane);
    }
}

template <int N> __device__ __forceinline__ void warp_sum_many(float (&v)[N], int lane) {
    static_assert(N >= 1 && N <= 64 && (N & (N - 1)) == 0, "a power of two up to 64");
    sum_step<N, 16>(v, lane);
}

// The float32 path of decode_kernel: a warp's keys, its rows' max, sum and
// unnormalised outputs into the block's shared arrays.
template <int E, int GM>
__device__ __forceinline__ void decode_warp_simt(const Args &a, int64_t b, int64_t hk, int64_t k0, int64_t k1, int warp,
                                                 int lane, const float (&rope)[2][16 * E], float (&sm_m)[DEC_WARPS][GM],
                                                 float (&sm_l)[DEC_WARPS][GM], float (&sm_acc)[DEC_WARPS][GM][32 * E]) {
    constexpr int W = DEC_WARPS;
    const afo_cuda_sdpa &p = a.p;
    const int G = (int)a.G;
    const float *kb = (const float *)p.k + b * p.ks[0] + hk * p.ks[1] + lane * E;
    const float *vb = (const float *)p.v + b * p.vs[0] + hk * p.vs[1] + lane * E;
    // After warp_sum_many, lane l holds V of the batch's N values, from value
    // (l >> SHIFT) * V on (copies in 2^SHIFT lanes when N < 32); row g's KB
    // values sit in the LG lanes from g * LG. Each lane keeps its row's max
    // and sum, takes the exponentials of its own values only, and the
    // lanes share them by shuffles: every lane had taken all GM * KB of
    // them and their maxima (ncu: ~1460 instructions a warp for one batch,
    // at 11 cycles each). On an H200, when 16-bit data still came here,
    // decode tok/s before -> after, two alternating runs: 8B 4-bit 366.7,
    // 362.0 -> 367.1, 368.4; TinyLlama 4-bit 836.1, 816.8 -> 850.9, 840.4.
    constexpr int N = GM * DEC_KB, V = N > 32 ? N / 32 : 1, LG = 32 / GM;
    constexpr int SHIFT = N >= 32 ? 0 : N == 16 ? 1 : N == 8 ? 2 : N == 4 ? 3 : N == 2 ? 4 : 5;
    const int v0 = (lane >> SHIFT) * V;
    float q[GM][E], acc[GM][E], m_row = -INFINITY, l_row = 0.0f;
#pragma unroll
    for (int g = 0; g < GM; g++) {
#pragma unroll
        for (int e = 0; e < E; e++) q[g][e] = 0.0f, acc[g][e] = 0.0f;
        if (g >= G) continue;
        load_e<float, E>((const float *)p.q + b * p.qs[0] + (hk * G + g) * p.qs[1] + lane * E, q[g]);
        if (a.p.q_rope) { // lane l's elements pair with lane l ^ 16's
#pragma unroll
            for (int e = 0; e < E; e++) {
                const float o = __shfl_xor_sync(0xffffffffu, q[g][e], 16), cs = rope[0][(lane & 15) * E + e],
                            sn = rope[1][(lane & 15) * E + e];
                float first, second;
                if (lane < 16) afo_cuda::rope_rotate(q[g][e], o, cs, sn, &first, &second), q[g][e] = first;
                else afo_cuda::rope_rotate(o, q[g][e], cs, sn, &first, &second), q[g][e] = second;
            }
        }
#pragma unroll
        for (int e = 0; e < E; e++) q[g][e] *= (float)p.scale;
    }
    for (int64_t t0 = k0 + warp * DEC_KB; t0 < k1; t0 += DEC_KB * W) {
        float kk[DEC_KB][E], vv[DEC_KB][E];
#pragma unroll
        for (int j = 0; j < DEC_KB; j++) {
            if (t0 + j < k1) {
                load_e<float, E>(kb + (t0 + j) * p.ks[2], kk[j]);
                load_e<float, E>(vb + (t0 + j) * p.vs[2], vv[j]);
            } else {
#pragma unroll
                for (int e = 0; e < E; e++) kk[j][e] = 0.0f, vv[j][e] = 0.0f;
            }
        }
        // the batch's GM x KB dot products, summed over the lanes at once
        float part[N];
#pragma unroll
        for (int g = 0; g < GM; g++)
#pragma unroll
            for (int j = 0; j < DEC_KB; j++) {
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) d += q[g][e] * kk[j][e];
                part[g * DEC_KB + j] = d;
            }
        warp_sum_many<N>(part, lane);
        float s[V], mb = -INFINITY;
#pragma unroll
        for (int i = 0; i < V; i++) {
            s[i] = t0 + (v0 + i) % DEC_KB < k1 ? part[i] : -INFINITY;
            mb = fmaxf(mb, s[i]);
        }
#pragma unroll
        for (int o = 1 << SHIFT; o < LG; o <<= 1) mb = fmaxf(mb, __shfl_xor_sync(0xffffffffu, mb, o));
        const float mnew = fmaxf(m_row, mb), corr = expf(m_row - mnew); // m_row = -inf: 0
        float pv[V], ps = 0.0f;
#pragma unroll
        for (int i = 0; i < V; i++) pv[i] = expf(s[i] - mnew), ps += pv[i];
#pragma unroll
        for (int o = 1 << SHIFT; o < LG; o <<= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
        l_row = l_row * corr + ps, m_row = mnew;
#pragma unroll
        for (int g = 0; g < GM; g++) {
            if (g >= G) break;
            const float c = __shfl_sync(0xffffffffu, corr, g * LG);
#pragma unroll
            for (int e = 0; e < E; e++) acc[g][e] *= c;
#pragma unroll
            for (int j = 0; j < DEC_KB; j++) {
                const int i = g * DEC_KB + j;
                const float pj = __shfl_sync(0xffffffffu, pv[i % V], (i / V) << SHIFT);
#pragma unroll
                for (int e = 0; e < E; e++) acc[g][e] += pj * vv[j][e];
            }
        }
    }
    if (lane % LG == 0) sm_m[warp][lane / LG] = m_row, sm_l[warp][lane / LG] = l_row;
#pragma unroll
    for (int g = 0; g < GM; g++)
#pragma unroll
        for (int e = 0; e < E; e++) sm_acc[warp][g][lane * E + e] = acc[g][e];
}

// The 16-bit path: tensor cores. The group's rows (at most 8) are the
// first rows of an m16 tile; a warp takes 16 keys at a time: s = q·kᵀ in
// two 16×8 tiles over the head's 16-element slices, k's B fragments read
// straight from memory (4 bytes a lane: two elements of one key's row);
// the online softmax on the accumulators (mma.cuh, log2 units); p·v with
// p's accumulators as the A fragment and v's B fragments its rows read as
// 8×8 tiles and transposed in registers (movmatrix), so no shared memory.
// The row max goes to the block's merge in natural-log units.
// A warp's batch of DEC_MMA_KEYS keys for decode_warp_mma: k's B fragments
// (two elements of one key's row a lane) and v's rows as 8x8 tiles.
constexpr int DEC_MMA_KEYS = 16;
template <int D> struct KeyBatch {
    uint32_t k[2][D / 16][2], v[2][D / 8];
};

__device__ __forceinline__ uint32_t word_at(const void *e) { return *(const uint32_t *)e; }

// Keys [t0, t0 + DEC_MMA_KEYS) of the warp's batch, those at or past k1 zeros.
template <typename T, int D>
__device__ __forceinline__ void load_key_batch(const Args &a, int64_t b, int64_t hk, int64_t t0, int64_t k1, int lane,
                                               KeyBatch<D> &kv) {
    const afo_cuda_sdpa &p = a.p;
    const int quad = lane >> 2, ql = lane & 3;
    const T *kb = (const T *)p.k + b * p.ks[0] + hk * p.ks[1] + 2 * ql;
    const T *vb = (const T *)p.v + b * p.vs[0] + hk * p.vs[1] + 2 * ql;
#pragma unroll
    for (int n = 0; n < 2; n++) {
        const int64_t key = t0 + 8 * n + quad;
        const bool in = key < k1;
        const T *kr = kb + (in ? key : t0) * p.ks[2], *vr = vb + (in ? key : t0) * p.vs[2];
#pragma unroll
        for (int kd = 0; kd < D / 16; kd++) {
            kv.k[n][kd][0] = in ? word_at(kr + kd * 16) : 0u;
            kv.k[n][kd][1] = in ? word_at(kr + kd * 16 + 8) : 0u;
        }
#pragma unroll
        for (int d = 0; d < D / 8; d++) kv.v[n][d] = in ? word_at(vr + d * 8) : 0u;
    }
}

// The group's query rows as the A fragments of decode_warp_mma (not yet
// roped).
template <typename T, int D>
__device__ __forceinline__ void load_query(const Args &a, int64_t b, int64_t hk, int lane, uint32_t (&qa)[D / 16][4]) {
    const afo_cuda_sdpa &p = a.p;
    const int quad = lane >> 2, ql = lane & 3, G = (int)a.G;
    const T *qr = (const T *)p.q + b * p.qs[0] + (hk * G + (quad < G ? quad : 0)) * p.qs[1] + 2 * ql;
#pragma unroll
    for (int kd = 0; kd < D / 16; kd++) {
        qa[kd][0] = quad < G ? word_at(qr + kd * 16) : 0u;
        qa[kd][2] = quad < G ? word_at(qr + kd * 16 + 8) : 0u;
        qa[kd][1] = qa[kd][3] = 0u;
    }
}

// The warp's first batch of keys (kv, from k0 + warp * DEC_MMA_KEYS) and q come
// loaded: decode_kernel issues those loads before it computes the rope's
// angles, so that the round trips overlap.
template <typename T, int D, int GM>
__device__ __forceinline__ void decode_warp_mma(const Args &a, int64_t b, int64_t hk, int64_t k0, int64_t k1, int warp,
                                                int lane, uint32_t (&qa)[D / 16][4], KeyBatch<D> &kv,
                                                const float (&rope)[2][D / 2], float (&sm_m)[DEC_WARPS][GM],
                                                float (&sm_l)[DEC_WARPS][GM], float (&sm_acc)[DEC_WARPS][GM][D]) {
    using namespace afo_mma;
    constexpr int KD = D / 16, ND = D / 8, KT = DEC_MMA_KEYS;
    const afo_cuda_sdpa &p = a.p;
    const int quad = lane >> 2, ql = lane & 3;
    if (a.p.q_rope) { // element e of a word of kd pairs with element e of the same word of kd + KD / 2
        auto lo = [](uint32_t w) { return to_c(((const T *)&w)[0]); };
        auto hi = [](uint32_t w) { return to_c(((const T *)&w)[1]); };
#pragma unroll
        for (int kd = 0; kd < KD / 2; kd++)
#pragma unroll
            for (int h = 0; h < 4; h += 2) {
                const int j = kd * 16 + 4 * h + 2 * ql; // h 2: the word 8 elements on
                const uint32_t x = qa[kd][h], y = qa[kd + KD / 2][h];
                float f0, s0, f1, s1;
                afo_cuda::rope_rotate(lo(x), lo(y), rope[0][j], rope[1][j], &f0, &s0);
                afo_cuda::rope_rotate(hi(x), hi(y), rope[0][j + 1], rope[1][j + 1], &f1, &s1);
                qa[kd][h] = pack<T>(f0, f1), qa[kd + KD / 2][h] = pack<T>(s0, s1);
            }
    }
    float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int d = 0; d < ND; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    const float scale2 = (float)(p.scale * LOG2E);
    for (int64_t t0 = k0 + warp * KT; t0 < k1; t0 += KT * DEC_WARPS) {
        if (t0 != k0 + warp * KT) load_key_batch<T, D>(a, b, hk, t0, k1, lane, kv);
        float s[2][4] = {};
#pragma unroll
        for (int kd = 0; kd < KD; kd++)
#pragma unroll
            for (int n = 0; n < 2; n++) mma<T>(s[n], qa[kd], kv.k[n][kd][0], kv.k[n][kd][1]);
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] = t0 + 8 * n + 2 * ql + (e & 1) < k1 ? s[n][e] * scale2 : -INFINITY;
        online_softmax(s, m, l, o);
        const uint32_t pa[4] = {pack<T>(s[0][0], s[0][1]), pack<T>(s[0][2], s[0][3]), pack<T>(s[1][0], s[1][1]),
                                pack<T>(s[1][2], s[1][3])};
#pragma unroll
        for (int d = 0; d < ND; d++) mma<T>(o[d], pa, transpose8x8(kv.v[0][d]), transpose8x8(kv.v[1][d]));
    }
    const float sum = quad_sum(l[0]);
    if (quad < GM) {
        if (ql == 0) sm_m[warp][quad] = m[0] * (float)LN2, sm_l[warp][quad] = sum;
#pragma unroll
        for (int d = 0; d < ND; d++)
            sm_acc[warp][quad][d * 8 + 2 * ql] = o[d][0], sm_acc[warp][quad][d * 8 + 2 * ql + 1] = o[d][1];
    }
}

// The step's key, roped with q's angles, and value into their slot of the
// cache (p.k_new, p.v_new), the rope kernel's values bit for bit.
template <typename T, int D>
__device__ __forceinline__ void write_new_kv(const afo_cuda_sdpa &p, int64_t b, int64_t hk, int64_t slot,
                                             const float (&rope)[2][D / 2]) {
    const T *kn = (const T *)p.k_new + b * p.kns[0] + hk * p.kns[1];
    const T *vn = (const T *)p.v_new + b * p.vns[0] + hk * p.vns[1];
    T *kc = (T *)p.k + b * p.ks[0] + hk * p.ks[1] + slot * p.ks[2];
    T *vc = (T *)p.v + b * p.vs[0] + hk * p.vs[1] + slot * p.vs[2];
    for (int j = threadIdx.x; j < D / 2; j += blockDim.x) {
        float first, second;
        afo_cuda::rope_rotate(to_c(kn[j]), to_c(kn[j + D / 2]), rope[0][j], rope[1][j], &first, &second);
        put(kc + j, first), put(kc + j + D / 2, second);
    }
    for (int j = threadIdx.x; j < D; j += blockDim.x) vc[j] = vn[j];
}

// GM: the group's rows (query heads per kv head) rounded up to 1, 2, 4 or 8.
template <typename T, int E, int GM>
__global__ void __launch_bounds__(DEC_WARPS * 32) decode_kernel(const Args a, const afo_cuda_rope q_rope) {
    // The kernel after (the o product) may start as soon as all of this
    // kernel's blocks run, loading its first weights through the attention
    // (it waits for the output itself): on an H200 8B 4-bit decode 547.6,
    // 547.9, 547.9 -> 550.0, 549.8, 549.8 tok/s against starting it after
    // the wait below.
    afo_cuda::let_next_start();
    // Settled caches: the older keys and the angles overlap the tail of the
    // kernel before (the qkv product), and only q, the new key and value
    // wait for it.
    const bool early = a.p.settled;
    if (!early) afo_cuda::wait_prior_grid();
    constexpr int W = DEC_WARPS;
    constexpr int D = 32 * E;
    __shared__ float sm_m[W][GM], sm_l[W][GM], sm_w[W][GM], sm_acc[W][GM][D], sm_M[GM], sm_L[GM], sm_A[GM][D];
    __shared__ float sm_rope[2][D / 2]; // cos, sin of q's pairs
    const afo_cuda_sdpa &p = a.p;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, G = (int)a.G;
    const int64_t bh = blockIdx.x, b = bh / p.Hkv, hk = bh % p.Hkv, split = blockIdx.y, nsplit = gridDim.y;
    const int64_t pos = p.position ? (int64_t)*p.position : p.Lk - 1;
    const int64_t lo = afo_cuda::key_lo(p, pos), hi = afo_cuda::key_hi(p, pos);
    const int64_t chunk = hi > lo ? (hi - lo + nsplit - 1) / nsplit : 0;
    const int64_t k0 = lo + split * chunk, k1 = k0 + chunk < hi ? k0 + chunk : hi;
    // 16-bit data: the first keys, and q unless early, requested before the angles
    constexpr bool kMma = !std::is_same<T, float>::value;
    KeyBatch<kMma ? D : 16> first;
    uint32_t qa[kMma ? D / 16 : 1][4];
    if constexpr (kMma) {
        if (k0 + warp * DEC_MMA_KEYS < k1) load_key_batch<T, D>(a, b, hk, k0 + warp * DEC_MMA_KEYS, k1, lane, first);
        if (!early) load_query<T, D>(a, b, hk, lane, qa);
    }
    if (p.q_rope) {
        const int64_t at = q_rope.offset + (q_rope.position ? *q_rope.position : 0);
        for (int j = threadIdx.x; j < D / 2; j += W * 32) {
            double cs, sn;
            afo_cuda::rope_angle(q_rope, at, j, &cs, &sn);
            sm_rope[0][j] = (float)cs, sm_rope[1][j] = (float)sn;
        }
    }
    if (early) {
        afo_cuda::wait_prior_grid();
        if constexpr (kMma) load_query<T, D>(a, b, hk, lane, qa);
    }
    if (p.q_rope) __syncthreads();
    // The step's key and value (a decode step's cache writes, one kernel
    // fewer each): the block whose keys hold their slot writes them before
    // its warps read them, and the warp whose first batch holds it loads
    // that batch again (a slot out of the keys read: the first split).
    if (p.k_new) {
        const int64_t slot = pos < 0 ? 0 : pos > p.Lk - 1 ? p.Lk - 1 : pos;
        if (lo <= slot && slot < hi ? k0 <= slot && slot < k1 : split == 0) {
            write_new_kv<T, D>(p, b, hk, slot, sm_rope);
            __syncthreads();
            if constexpr (kMma) {
                const int64_t t0 = k0 + warp * DEC_MMA_KEYS;
                if (t0 <= slot && slot < t0 + DEC_MMA_KEYS) load_key_batch<T, D>(a, b, hk, t0, k1, lane, first);
            }
        }
    }
    // output element d of the group's row g, from its unnormalised sum
    auto emit = [&](int g, int d, float A, float L) {
        put((T *)p.out + (b * p.Hq + hk * G + g) * D + d, L > 0.0f ? A / L : 0.0f);
    };

    if constexpr (std::is_same<T, float>::value)
        decode_warp_simt<E, GM>(a, b, hk, k0, k1, warp, lane, sm_rope, sm_m, sm_l, sm_acc);
    else
        decode_warp_mma<T, D, GM>(a, b, hk, k0, k1, warp, lane, qa, first, sm_rope, sm_m, sm_l, sm_acc);
    __syncthreads();
    // each warp's weight in the block's sums, once per row
    if (threadIdx.x < G) {
        const int g = threadIdx.x;
        float M = -INFINITY, L = 0.0f;
        for (int w = 0; w < W; w++) M = fmaxf(M, sm_m[w][g]);
        for (int w = 0; w < W; w++) {
            const float c = M == -INFINITY ? 0.0f : expf(sm_m[w][g] - M);
            sm_w[w][g] = c, L += sm_l[w][g] * c;
        }
        sm_M[g] = M, sm_L[g] = L;
    }
    __syncthreads();
    // the block's sums over its warps: the output, or the split's share,
    // kept in shared memory for the cluster's merge, or with more splits
    // than a cluster holds written out for the head's last block to merge
    const int64_t nrow = p.B * p.Hkv * G;
    float *part_o = (float *)p.scratch, *part_ml = part_o + (nsplit > DEC_CLUSTER ? nsplit * nrow * D : 0);
    for (int idx = threadIdx.x; idx < G * D; idx += W * 32) {
        const int g = idx / D, d = idx % D;
        float A = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) A += sm_w[w][g] * sm_acc[w][g][d];
        if (nsplit == 1) {
            emit(g, d, A, sm_L[g]);
        } else if (nsplit <= DEC_CLUSTER) {
            sm_A[g][d] = A;
        } else {
            const int64_t pi = split * nrow + bh * G + g;
            part_o[pi * D + d] = A;
            if (d == 0) part_ml[2 * pi] = sm_M[g], part_ml[2 * pi + 1] = sm_L[g];
        }
    }
    if (nsplit == 1) return;
    if (nsplit <= DEC_CLUSTER) {
        // The head's splits are one cluster: each block merges its share
        // of the outputs from every block's shared memory, and no block
        // leaves before all have read its own.
        cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
        cluster.sync();
        const int n = (int)nsplit, per = (G * D + n - 1) / n, first = (int)cluster.block_rank() * per;
        // Every block's values requested at once: a loop of dependent reads
        // of the other blocks' shared memory had been two round trips a split.
        for (int idx = first + threadIdx.x; idx < first + per && idx < G * D; idx += W * 32) {
            const int g = idx / D, d = idx % D;
            float Mr[DEC_CLUSTER], Ar[DEC_CLUSTER], Lr[DEC_CLUSTER];
#pragma unroll
            for (int r = 0; r < DEC_CLUSTER; r++)
                if (r < n) {
                    Mr[r] = *cluster.map_shared_rank(&sm_M[g], r);
                    Ar[r] = *cluster.map_shared_rank(&sm_A[g][d], r);
                    Lr[r] = *cluster.map_shared_rank(&sm_L[g], r);
                }
            float M = -INFINITY;
#pragma unroll
            for (int r = 0; r < DEC_CLUSTER; r++)
                if (r < n) M = fmaxf(M, Mr[r]);
            float A = 0.0f, L = 0.0f;
#pragma unroll
            for (int r = 0; r < DEC_CLUSTER; r++)
                if (r < n && M != -INFINITY) {
                    const float c = expf(Mr[r] - M);
                    A += c * Ar[r], L += c * Lr[r];
                }
            emit(g, d, A, L);
        }
        cluster.sync();
        return;
    }
    // more splits than a cluster holds: the head's last block merges
    if (!afo_cuda::last_to_arrive(&g_split_done[bh], (unsigned)nsplit)) return;
    // The splits' weights first, a warp per row, then every output's sum
    // with its loads in flight together: a loop of dependent L2 reads per
    // output had made the merge most of the kernel's time.
    float *weight = &sm_acc[0][0][0]; // [GM][MAX_SPLIT], no longer needed
    static_assert(W * D >= MAX_SPLIT, "the weights fit in the accumulators' place");
    for (int g = warp; g < G; g += W) {
        const int64_t base = bh * G + g;
        float M = -INFINITY;
        for (int64_t sp = lane; sp < nsplit; sp += 32) M = fmaxf(M, __ldcg(part_ml + 2 * (sp * nrow + base)));
        M = afo_cuda::warp_max(M);
        float L = 0.0f;
        for (int64_t sp = lane; sp < nsplit; sp += 32) {
            const float *ml = part_ml + 2 * (sp * nrow + base);
            const float c = M == -INFINITY ? 0.0f : expf(__ldcg(ml) - M);
            weight[g * MAX_SPLIT + sp] = c;
            L += __ldcg(ml + 1) * c;
        }
        L = warp_sum(L);
        if (lane == 0) sm_L[g] = L;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * D; idx += W * 32) {
        const int g = idx / D, d = idx % D;
        float A = 0.0f;
#pragma unroll 8
        for (int64_t sp = 0; sp < nsplit; sp++)
            A += weight[g * MAX_SPLIT + sp] * __ldcg(part_o + (sp * nrow + bh * G + g) * D + d);
        emit(g, d, A, sm_L[g]);
    }
}

template <typename T, int E> cudaError_t launch_decode_e(const Args &a, cudaStream_t st) {
    const dim3 grid((unsigned)(a.p.B * a.p.Hkv), (unsigned)a.p.nsplit);
    auto kernel = a.G <= 1   ? decode_kernel<T, E, 1>
                  : a.G <= 2 ? decode_kernel<T, E, 2>
                  : a.G <= 4 ? decode_kernel<T, E, 4>
                             : decode_kernel<T, E, 8>;
    const unsigned cluster = a.p.nsplit <= DEC_CLUSTER ? (unsigned)a.p.nsplit : 1u;
    afo_cuda::launch_early_in(dim3(1, cluster, 1), kernel, grid, dim3(DEC_WARPS * 32), 0, st, a,
                              a.p.q_rope ? *a.p.q_rope : afo_cuda_rope{});
    return cudaGetLastError();
}

template <typename T> cudaError_t launch_decode(const Args &a, cudaStream_t st) {
    return a.p.D == 64 ? launch_decode_e<T, 2>(a, st) : launch_decode_e<T, 4>(a, st);
}

} // namespace

namespace afo_cuda {

// q's rows are read in vector loads too (up to 16 bytes): its start and its
// batch and head strides 16-byte aligned, as k's and v's (a.vec).
bool decode_applies(const afo_cuda_sdpa &p, const SdpaArgs &a) {
    const size_t es = p.dtype == AFO_FLOAT32 ? 4 : 2;
    const bool q_aligned = aligned16(p.q, p.qs[0], es) && aligned16(p.q, p.qs[1], es);
    const bool ropes = !p.q_rope || (!p.q_rope->traditional && p.q_rope->dims == p.D && p.q_rope->L == 1);
    return p.Lq == 1 && !p.mask && a.vec && q_aligned && p.D == p.Dv && (p.D == 64 || p.D == 128) && a.G <= 8 &&
           p.dtype != AFO_FLOAT64 && ropes;
}

// Splits: about two blocks per SM in all, each of a block's DEC_WARPS
// batches of keys or more (a batch's loads are in flight together; a
// second batch costs another round trip to memory).
int64_t decode_splits(const afo_cuda_sdpa &p) {
    const int64_t heads = p.B * p.Hkv, want = (2 * (int64_t)afo_cuda_multiprocessors() + heads - 1) / heads;
    int64_t n = (p.Lk + DEC_WARPS * DEC_KB - 1) / (DEC_WARPS * DEC_KB);
    if (n > want) n = want;
    if (n > MAX_SPLIT) n = MAX_SPLIT;
    // Up to two batches a warp, a cluster's merge in shared memory beats
    // more splits merging through global memory; past that, more blocks
    // take the keys (and the global merge counts per head).
    if (n > DEC_CLUSTER && (n <= 2 * DEC_CLUSTER || heads > DEC_MAX_HEADS)) n = DEC_CLUSTER;
    return n < 1 ? 1 : n;
}

cudaError_t sdpa_decode(const SdpaArgs &a, cudaStream_t st) {
    switch (a.p.dtype) {
    case AFO_FLOAT16: return launch_decode<__half>(a, st);
    case AFO_BFLOAT16: return launch_decode<__nv_bfloat16>(a, st);
    default: return launch_decode<float>(a, st);
    }
}

} // namespace afo_cuda
