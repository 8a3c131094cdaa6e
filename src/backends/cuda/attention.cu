// Scaled dot-product attention, flash style: a block takes BQ query rows
// of one kv head and streams that head's keys and values through shared
// memory BK at a time, keeping a running max and sum per row (online
// softmax), so scores never reach global memory. The rows of a block are
// (query position, query head of the group) pairs, position-major: the
// heads sharing a kv head read its tiles once, and a decode step (one
// position) puts the whole group in one block.
//
// Decode leaves few blocks per kv head, so the keys are then split over
// several blocks (split-K); each writes its unnormalised partial output
// with its max and sum, and a second kernel merges them (log-sum-exp).
//
// Scores and accumulators are float32 (float64 for float64 data), like the
// CPU kernel; q is scaled before the dot products as there. The
// tensor-core paths (16-bit data: the prefill's attention_mma.cu and the
// decode's decode_warp_mma) scale the scores after them instead and round
// the probabilities to the data's type for p·v.
//
// Prefill in float16/bfloat16 with head size 64 or 128 (MMA_MIN_LQ queries
// or more, an untuned bound) goes to the tensor-core kernel of
// attention_mma.cu instead, never split; decode steps and a few draft
// tokens stay here, split over the keys, as do positions read on the device
// (afo_scaled_dot_product_attention_at). A single query without a mask,
// with head size 64 or 128, takes the decode kernel instead
// (attention_decode.cu), which can also rope q as it loads it (nn.c's
// attention <- rope pair).
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

constexpr int BQ = 32;  // query rows per block
constexpr int BK = 32;  // keys per tile: one per lane
constexpr int NT = 128; // threads per block
constexpr int RW = BQ / (NT / 32); // rows per warp
constexpr int MAX_SPLIT = 256;
constexpr int64_t MMA_MIN_LQ = 16;

__device__ __forceinline__ float ex(float v) { return expf(v); }
__device__ __forceinline__ double ex(double v) { return exp(v); }

using afo_cuda::aligned16;
using afo_cuda::put;
using afo_cuda::to_c;
using afo_cuda::warp_max;
using afo_cuda::warp_sum;
using Args = afo_cuda::SdpaArgs;

// Keys [t0, t0 + BK) of one kv head into dst (row pitch ld); rows at or past
// khi become zeros so that their zero probabilities meet finite values.
template <typename T, typename C>
__device__ void load_tile(C *dst, int ld, const T *base, int64_t ls, int D, int64_t t0, int64_t khi, bool vec) {
    if (vec) {
        constexpr int V = 16 / sizeof(T);
        int nv = D / V;
        for (int idx = threadIdx.x; idx < BK * nv; idx += NT) {
            int j = idx / nv, d = idx % nv * V;
            int64_t key = t0 + j;
            C *o = dst + j * ld + d;
            if (key < khi) {
                uint4 raw = *(const uint4 *)(base + key * ls + d);
                const T *t = (const T *)&raw;
#pragma unroll
                for (int u = 0; u < V; u++) o[u] = to_c(t[u]);
            } else {
#pragma unroll
                for (int u = 0; u < V; u++) o[u] = 0;
            }
        }
    } else {
        for (int idx = threadIdx.x; idx < BK * D; idx += NT) {
            int j = idx / D, d = idx % D;
            int64_t key = t0 + j;
            dst[j * ld + d] = key < khi ? (C)to_c(base[key * ls + d]) : (C)0;
        }
    }
}

template <typename T, typename C, int DM> __global__ void __launch_bounds__(NT) flash_kernel(const Args a) {
    extern __shared__ __align__(16) unsigned char smem[];
    C *Qs = (C *)smem;          // [BQ][DM], scaled
    C *Ks = Qs + BQ * DM;       // [BK][DM + 1]: lanes read different rows
    C *Vs = Ks + BK * (DM + 1); // [BK][DM]
    C *Ps = Vs + BK * DM;       // [BQ][BK + 1] probabilities of the tile
    const afo_cuda_sdpa &p = a.p;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, D = (int)p.D, Dv = (int)p.Dv;
    const int64_t bh = blockIdx.x / a.nrb, b = bh / p.Hkv, hk = bh % p.Hkv, G = a.G, R = a.R;
    const int64_t row0 = blockIdx.x % a.nrb * BQ, split = blockIdx.z;
    const T *qb = (const T *)p.q + b * p.qs[0];
    const T *kb = (const T *)p.k + b * p.ks[0] + hk * p.ks[1];
    const T *vb = (const T *)p.v + b * p.vs[0] + hk * p.vs[1];
    const C scale = (C)p.scale;

    for (int idx = tid; idx < BQ * DM; idx += NT) {
        int r = idx / DM, d = idx % DM;
        int64_t row = row0 + r;
        C v = 0;
        if (row < R && d < D) v = (C)to_c(qb[(hk * G + row % G) * p.qs[1] + row / G * p.qs[2] + d]) * scale;
        Qs[idx] = v;
    }
    for (int idx = tid; idx < BK * (DM + 1) + BK * DM; idx += NT) Ks[idx] = 0; // Vs follows Ks

    // Query i sits at key position first + i (attention.cuh).
    const int64_t first = p.position ? (int64_t)*p.position : p.Lk - p.Lq;
    using afo_cuda::key_hi;
    using afo_cuda::key_lo;
    int64_t rlast = (row0 + BQ < R ? row0 + BQ : R) - 1;
    int64_t klo = key_lo(p, first + row0 / G), khi = key_hi(p, first + rlast / G);
    if (klo < split * p.chunk) klo = split * p.chunk;
    if (khi > (split + 1) * p.chunk) khi = (split + 1) * p.chunk;

    C m[RW], l[RW], acc[RW][DM / 32];
    int64_t lo[RW], hi[RW], moff[RW];
#pragma unroll
    for (int t = 0; t < RW; t++) {
        int64_t row = row0 + warp * RW + t, pos = first + row / G;
        m[t] = (C)-INFINITY, l[t] = 0;
#pragma unroll
        for (int c = 0; c < DM / 32; c++) acc[t][c] = 0;
        lo[t] = row < R ? key_lo(p, pos) : 0;
        hi[t] = row < R ? key_hi(p, pos) : 0;
        moff[t] = b * p.ms[0] + (hk * G + row % G) * p.ms[1] + row / G * p.ms[2];
    }
    const bool active = row0 + warp * RW < R;

    for (int64_t t0 = klo; t0 < khi; t0 += BK) {
        __syncthreads(); // the previous tile is consumed (and, first time, Qs and the zeros are written)
        load_tile<T, C>(Ks, DM + 1, kb, p.ks[2], D, t0, khi, a.vec);
        load_tile<T, C>(Vs, DM, vb, p.vs[2], Dv, t0, khi, a.vec);
        __syncthreads();
        if (!active) continue;
        C s[RW];
#pragma unroll
        for (int t = 0; t < RW; t++) s[t] = 0;
        const C *kr = Ks + lane * (DM + 1);
        const C *qr = Qs + warp * RW * DM;
#pragma unroll 4
        for (int d = 0; d < DM; d++) {
            C kv = kr[d];
#pragma unroll
            for (int t = 0; t < RW; t++) s[t] += qr[t * DM + d] * kv;
        }
        int64_t key = t0 + lane;
        C *pr = Ps + warp * RW * (BK + 1);
#pragma unroll
        for (int t = 0; t < RW; t++) {
            bool vis = key < khi && key >= lo[t] && key < hi[t];
            C sv = vis ? s[t] : (C)-INFINITY;
            if (vis && p.mask) sv += (C)afo_cuda::mask_at(p.mask, p.mask_dtype, moff[t] + key * p.ms[3]);
            C mnew = fmax(m[t], warp_max(sv));
            C pv = mnew == (C)-INFINITY ? (C)0 : ex(sv - mnew);
            C corr = mnew == (C)-INFINITY ? (C)1 : ex(m[t] - mnew);
            l[t] = l[t] * corr + warp_sum(pv);
            m[t] = mnew;
#pragma unroll
            for (int c = 0; c < DM / 32; c++) acc[t][c] *= corr;
            pr[t * (BK + 1) + lane] = pv;
        }
        __syncwarp();
#pragma unroll 4
        for (int j = 0; j < BK; j++) {
            C vv[DM / 32];
#pragma unroll
            for (int c = 0; c < DM / 32; c++) vv[c] = Vs[j * DM + lane + 32 * c];
#pragma unroll
            for (int t = 0; t < RW; t++) {
                C pj = pr[t * (BK + 1) + j];
#pragma unroll
                for (int c = 0; c < DM / 32; c++) acc[t][c] += pj * vv[c];
            }
        }
    }
    if (!active) return;
    const int64_t nrow = p.B * p.Hkv * R;
#pragma unroll
    for (int t = 0; t < RW; t++) {
        int64_t row = row0 + warp * RW + t;
        if (row >= R) break;
        int64_t hq = hk * G + row % G, i = row / G;
        if (p.nsplit == 1) {
            C inv = l[t] > 0 ? (C)1 / l[t] : (C)0; // a row that sees no key outputs zeros
            T *o = (T *)p.out + ((b * p.Hq + hq) * p.Lq + i) * Dv;
#pragma unroll
            for (int c = 0; c < DM / 32; c++)
                if (lane + 32 * c < Dv) put(o + lane + 32 * c, acc[t][c] * inv);
        } else {
            C *part_o = (C *)p.scratch, *part_ml = part_o + (int64_t)p.nsplit * nrow * Dv;
            int64_t pi = split * nrow + bh * R + row;
#pragma unroll
            for (int c = 0; c < DM / 32; c++)
                if (lane + 32 * c < Dv) part_o[pi * Dv + lane + 32 * c] = acc[t][c];
            if (lane == 0) part_ml[2 * pi] = m[t], part_ml[2 * pi + 1] = l[t];
        }
    }
}

// One block per (batch, kv head, row), one thread per output column.
template <typename T, typename C> __global__ void combine_kernel(const Args a) {
    const afo_cuda_sdpa &p = a.p;
    const int64_t nrow = p.B * p.Hkv * a.R, r = blockIdx.x, Dv = p.Dv;
    const C *part_o = (const C *)p.scratch, *part_ml = part_o + (int64_t)p.nsplit * nrow * Dv;
    C M = (C)-INFINITY;
    for (int s = 0; s < p.nsplit; s++) M = fmax(M, part_ml[2 * (s * nrow + r)]);
    int64_t bh = r / a.R, row = r % a.R, b = bh / p.Hkv, hq = bh % p.Hkv * a.G + row % a.G, i = row / a.G;
    T *o = (T *)p.out + ((b * p.Hq + hq) * p.Lq + i) * Dv;
    for (int64_t d = threadIdx.x; d < Dv; d += blockDim.x) {
        C L = 0, acc = 0;
        for (int s = 0; M != (C)-INFINITY && s < p.nsplit; s++) {
            int64_t pi = s * nrow + r;
            C w = ex(part_ml[2 * pi] - M);
            L += part_ml[2 * pi + 1] * w;
            acc += part_o[pi * Dv + d] * w;
        }
        put(o + d, acc * (L > 0 ? (C)1 / L : (C)0));
    }
}


template <typename T, typename C, int DM> cudaError_t launch_dm(const Args &a, cudaStream_t st) {
    size_t smem = sizeof(C) * (size_t)(BQ * DM + BK * (DM + 1) + BK * DM + BQ * (BK + 1));
    static bool raised; // the opt-in above 48 KiB is per kernel, once per process
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute(flash_kernel<T, C, DM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) return e;
        raised = true;
    }
    dim3 grid((unsigned)(a.nrb * a.p.B * a.p.Hkv), 1, (unsigned)a.p.nsplit);
    flash_kernel<T, C, DM><<<grid, NT, smem, st>>>(a);
    if (a.p.nsplit > 1) {
        int threads = a.p.Dv >= 128 ? 128 : 32;
        combine_kernel<T, C><<<(unsigned)(a.p.B * a.p.Hkv * a.R), threads, 0, st>>>(a);
    }
    return cudaGetLastError();
}

template <typename T, typename C> cudaError_t launch(const Args &a, cudaStream_t st) {
    int64_t dm = a.p.D > a.p.Dv ? a.p.D : a.p.Dv;
    if (dm <= 32) return launch_dm<T, C, 32>(a, st);
    if (dm <= 64) return launch_dm<T, C, 64>(a, st);
    if (dm <= 128) return launch_dm<T, C, 128>(a, st);
    // float64 stops at 128 (afo_cuda_sdpa_plan refuses more): its 256 would
    // not fit in registers
    return launch_dm<T, C, sizeof(C) == 8 ? 128 : 256>(a, st);
}

Args args_of(const afo_cuda_sdpa *p) {
    Args a = {*p, p->Hq / p->Hkv, 0, 0, 0, 0};
    a.R = a.G * p->Lq;
    a.nrb = (a.R + BQ - 1) / BQ;
    size_t es = p->dtype == AFO_FLOAT64 ? 8 : p->dtype == AFO_FLOAT32 ? 4 : 2;
    int64_t V = 16 / (int64_t)es;
    bool vec = p->D % V == 0 && p->Dv % V == 0;
    for (int i = 0; vec && i < 3; i++) vec = aligned16(p->k, p->ks[i], es) && aligned16(p->v, p->vs[i], es);
    a.vec = vec;
    bool mma = vec && (p->dtype == AFO_FLOAT16 || p->dtype == AFO_BFLOAT16) && p->D == p->Dv &&
               (p->D == 64 || p->D == 128) && p->Lq >= MMA_MIN_LQ && !p->position;
    for (int i = 0; mma && i < 3; i++) mma = aligned16(p->q, p->qs[i], es);
    a.mma = mma;
    return a;
}

// Each split's partial outputs and their max and sum, per row, in the
// compute type.
size_t split_scratch(const afo_cuda_sdpa *p, const Args &a) {
    const size_t cs = p->dtype == AFO_FLOAT64 ? 8 : 4;
    return (size_t)p->nsplit * (size_t)(p->B * p->Hkv * a.R) * (size_t)(p->Dv + 2) * cs;
}

} // namespace

extern "C" size_t afo_cuda_sdpa_plan(afo_cuda_sdpa *p, int *supported) {
    int64_t dm = p->D > p->Dv ? p->D : p->Dv;
    *supported = dm <= (p->dtype == AFO_FLOAT64 ? 128 : 256);
    p->nsplit = 1;
    p->chunk = p->Lk > 0 ? p->Lk : 1;
    if (!*supported) return 0;
    Args a = args_of(p);
    if (a.mma) return 0;
    if (afo_cuda::decode_applies(*p, a)) {
        p->nsplit = (int)afo_cuda::decode_splits(*p);
        return p->nsplit > afo_cuda::DEC_CLUSTER ? split_scratch(p, a) : 0; // a cluster merges in shared memory
    }
    // Two blocks per SM, with splits of at least 4 tiles: on an H200, 8 per
    // SM of 2 tiles or more measured 20% slower (more partials to merge).
    // A decode step's block holds one group's few rows, which one warp
    // serves tile after tile: there a split of one tile is worth its merge.
    int64_t blocks = a.nrb * p->B * p->Hkv, target = 2 * (int64_t)afo_cuda_multiprocessors();
    int64_t min_tiles = a.R <= RW ? 1 : 4;
    if (blocks >= target || p->Lk <= min_tiles * BK) return 0;
    int64_t n = (target + blocks - 1) / blocks, most = p->Lk / (min_tiles * BK);
    if (n > most) n = most;
    if (n > MAX_SPLIT) n = MAX_SPLIT;
    if (n < 2) return 0;
    int64_t chunk = (p->Lk + n - 1) / n;
    chunk = (chunk + BK - 1) / BK * BK;
    p->chunk = chunk;
    p->nsplit = (int)((p->Lk + chunk - 1) / chunk);
    return split_scratch(p, a);
}

extern "C" bool afo_cuda_sdpa_ropes_q(const afo_cuda_sdpa *p) {
    const Args a = args_of(p);
    return p->q_rope && !a.mma && afo_cuda::decode_applies(*p, a);
}

extern "C" cudaError_t afo_cuda_sdpa_run(const afo_cuda_sdpa *p, cudaStream_t st) {
    Args a = args_of(p);
    if (a.mma) return afo_cuda::sdpa_mma(*p, a.G, st);
    if (afo_cuda::decode_applies(*p, a)) return afo_cuda::sdpa_decode(a, st);
    switch (p->dtype) {
    case AFO_FLOAT16: return launch<__half, float>(a, st);
    case AFO_BFLOAT16: return launch<__nv_bfloat16, float>(a, st);
    case AFO_FLOAT32: return launch<float, float>(a, st);
    default: return launch<double, double>(a, st);
    }
}
