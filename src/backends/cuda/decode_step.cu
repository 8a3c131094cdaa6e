// The fused decode step: a whole batch-1 decode step of a llama-family
// model with 4-bit g64 weights as ONE persistent kernel, one block an SM.
// Each SM's producer warp streams its equal share of every product's
// weights, stage by stage, into an 11 x 18 KB shared-memory ring with bulk
// async copies, whatever the data dependencies, but with at most 2 copies
// not yet landed; its consumer warps take their own tasks' tiles once
// landed and the stage's input vector is complete (a global counter), and
// do the int8 dot products (a warp four rows, a gate and up pair, or one
// down row). Attention takes a (kv head, split) an SM, its keys and values
// streamed through the ring like weights, in chunks of 64 keys with an
// online softmax, on tensor cores. Kernel boundaries are gone and HBM
// streams through norms and attention. The SMs work in pairs (clusters of
// two) that split each stage's input preparation. The last SM to finish
// picks the greedy id. The design and what each choice gained:
// docs/PERFORMANCE.md (CUDA, twenty-fourth to twenty-ninth sessions); it
// was first a standalone probe of fixed shapes. Attention is in
// decode_step_attention.cuh, the pieces both use in decode_step_common.cuh.
//
// Activations are rounded to int8 per 32 (scale max|x| / 127) as the int8
// matvec of quant_mv.cu and the CPU's decode matvec do; every value the
// layer graph stores in bf16 (q, k, v, attention's output, the residual
// stream, swiglu's output, the logits) is rounded to bf16 here too.
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cuda/decode_step_attention.cuh"
#include "backends/cuda/decode_step_common.cuh"
#include "backends/cuda/decode_step_kernels.h"
#include "backends/cuda/quant_common.cuh"
#include "backends/cuda/rope.cuh"
#include "backends/cuda/stream_load.cuh"
#include "backends/cuda/warp.cuh"

namespace {

// ---- the tile schedule, shared by producer and consumers
enum { ST_QKV, ST_O, ST_GU, ST_DOWN, ST_HEAD };
// A stage's tiles are uniform: tile i's parts start i times their sizes
// past tile 0's.
struct Tile { const uint8_t *src[6]; uint32_t bytes[6]; int n; };
// Output rows a tile yields (a gate/up tile holds 4 rows of each).
__device__ __forceinline__ int rows_of(int st) { return st == ST_GU ? 4 : st == ST_DOWN ? 2 : 8; }
__device__ __forceinline__ void range_of(int n, int &t0, int &t1) { t0 = (int)((long long)n * blockIdx.x / gridDim.x); t1 = (int)((long long)n * (blockIdx.x + 1) / gridDim.x); }
__device__ __forceinline__ void add_part(Tile &t, const void *p, uint32_t bytes) { t.src[t.n] = (const uint8_t *)p; t.bytes[t.n++] = bytes; }
// the stage's matrix, its row count and input length
template <int D, int F>
__device__ __forceinline__ const afo_cuda_q4 &matrix_of(const afo_cuda_step &a, int st, int l, int &N, int &K) {
    const afo_cuda_step_shape &s = a.shape;
    const afo_cuda_step_layer &ly = a.layer[l];
    K = st == ST_DOWN ? F : D;
    N = st == ST_QKV ? (s.heads + 2 * s.kv_heads) * HD : st == ST_GU ? F : st == ST_HEAD ? s.vocab : D;
    return st == ST_QKV ? ly.qkv : st == ST_O ? ly.o : st == ST_GU ? ly.gate_up : st == ST_DOWN ? ly.down : a.head;
}
template <int D, int F> __device__ __forceinline__ int tiles_of(const afo_cuda_step &a, int st, int l) {
    int N, K;
    matrix_of<D, F>(a, st, l, N, K);
    return N / rows_of(st);
}
template <int D, int F> __device__ __forceinline__ Tile tile0_of(const afo_cuda_step &a, int st, int l) {
    int N, K;
    const afo_cuda_q4 &q = matrix_of<D, F>(a, st, l, N, K);
    const int r = rows_of(st);
    Tile t = {};
    const uint32_t wb = r * K / 2, sb = r * K / GS * 2;
    if (st == ST_GU) { // both weights, both scales, both biases: reads as 8 rows
        const size_t up_w = (size_t)F * K / 2, up_s = (size_t)F * K / GS * 2;
        add_part(t, q.w, wb), add_part(t, (const uint8_t *)q.w + up_w, wb);
        add_part(t, q.s, sb), add_part(t, (const uint8_t *)q.s + up_s, sb);
        add_part(t, q.b, sb), add_part(t, (const uint8_t *)q.b + up_s, sb);
    } else {
        add_part(t, q.w, wb), add_part(t, q.s, sb), add_part(t, q.b, sb);
    }
    return t;
}

// The SMs run in clusters of two when the GPU holds every pair at once (the
// launcher checks): each SM of a pair prepares half of a stage's input and
// stores it into both SMs' shared memory, so that the preparation, which
// every SM would repeat for the whole vector while HBM waits on it, takes
// about half as long. bar counts the other half's bytes; the grid-wide
// waits between stages keep an SM from writing into the other's xs before
// that one is done with it.
struct Pair {
    bool on;
    uint32_t rank;
    uint64_t *bar;
    uint32_t peer_xs, peer_bar; // the other SM's xs and bar (shared::cluster)
    uint32_t phase;             // bar's parity for the next preparation (the last one's: phase ^ 1)
    bool pending;               // the other half of the last preparation not yet seen landed
};
// The other SM's half of the last preparation, landed.
__device__ __forceinline__ void pair_ready(Pair &pair) {
    if (pair.pending) mb_wait<true>(pair.bar, pair.phase ^ 1), pair.pending = false;
}

// ---- x preparation (consumers): v = x (normalized), int8 per 32 with scale
// max|v|/127, rounded as quant_mv.cu's int8 matvec rounds it; layout for
// 4-bit words: chunk c's octet j as (even, odd) int8x4. res (o and down):
// the residual the stage adds to, copied to xres with the same round trip.
template <int K, int D>
__device__ void prep_x(const bf16 *x, const bf16 *nw, float eps, uint8_t *xs, Pair &pair, const bf16 *res = nullptr,
                       bf16 *xres = nullptr) {
    constexpr int C = K / 32, octets = K / 8, OPT = (octets + NCT - 1) / NCT, OPT_D = (D / 8 + NCT - 1) / NCT;
    constexpr int HALF = octets / 2; // a pair's SM's share: whole chunks (K is a multiple of 1024)
    int2 *xlo = (int2 *)xs, *xhi = xlo + 2 * C;
    float2 *chunk = (float2 *)(xs + K);
    float *red = (float *)(chunk + C);
    const int tid = threadIdx.x, lane = tid & 31;
    const int first = pair.on ? (int)pair.rank * HALF : 0, mine = pair.on ? HALF : octets; // octets quantized here
    if (pair.on && tid == 0) mb_expect(pair.bar, HALF * 10); // the other half: an int2 an octet, a float2 a chunk
    // the norm's weights load with x, not a round trip after it; the norm
    // sums the squares of every octet (a pair's SM loads the other half too)
    uint4 raw[OPT], wr[OPT], all[OPT];
#pragma unroll
    for (int i = 0; i < OPT; i++) {
        const bool in = tid + i * NCT < mine;
        raw[i] = in ? __ldcg((const uint4 *)x + first + tid + i * NCT) : uint4{};
        wr[i] = in && nw ? __ldg((const uint4 *)nw + first + tid + i * NCT) : uint4{};
        all[i] = nw && pair.on && tid + i * NCT < octets ? __ldcg((const uint4 *)x + tid + i * NCT) : raw[i];
    }
    uint4 rr[OPT_D];
#pragma unroll
    for (int i = 0; i < OPT_D; i++) rr[i] = res && tid + i * NCT < D / 8 ? __ldcg((const uint4 *)res + tid + i * NCT) : uint4{};
    if (res)
#pragma unroll
        for (int i = 0; i < OPT_D; i++) if (tid + i * NCT < D / 8) ((uint4 *)xres)[tid + i * NCT] = rr[i];
    float inv = 1.0f;
    if (nw) {
        float ss = 0;
#pragma unroll
        for (int i = 0; i < OPT; i++) { const bf16 *e = (const bf16 *)&all[i]; for (int k = 0; k < 8; k++) { float f = __bfloat162float(e[k]); ss += f * f; } }
        ss = afo_cuda::warp_sum(ss);
        if (lane == 0) red[tid / 32] = ss;
        cbar();
        float t = 0; for (int w = 0; w < NCW; w++) t += red[w];
        inv = rsqrtf(t / K + eps);
    }
    // (a thread's octets are independent chains the compiler interleaves; a
    // warp's lanes agree on which exist, the shares being multiples of 32)
#pragma unroll
    for (int i = 0; i < OPT; i++) {
        if (tid - lane + i * NCT >= mine) break;
        const int o = first + tid + i * NCT;
        float v[8];
        const bf16 *e = (const bf16 *)&raw[i];
        const bf16 *we = (const bf16 *)&wr[i];
        for (int k = 0; k < 8; k++) { v[k] = __bfloat162float(e[k]); if (nw) v[k] = rbf(v[k] * inv * __bfloat162float(we[k])); }
        float amax = 0, sum = 0;
        for (int k = 0; k < 8; k++) amax = fmaxf(amax, fabsf(v[k])), sum += v[k];
        for (int m = 1; m < 4; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(~0u, amax, m)), sum += __shfl_xor_sync(~0u, sum, m);
        const float qi = amax > 0 ? __fdividef(127.0f, amax) : 0.0f;
        // round to an integer by adding 1.5 x 2^23 (the low byte of the sum's
        // bits is the level, two's complement): as __float2int_rn of the
        // product, at the full rate of an add where F2I runs at a quarter
        uint32_t q[8];
        for (int k = 0; k < 8; k++) q[k] = __float_as_uint(__fadd_rn(__fmul_rn(v[k], qi), 12582912.0f));
        auto pk = [](uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return (int)__byte_perm(__byte_perm(a, b, 0x0040), __byte_perm(c, d, 0x0040), 0x5410); };
        const int c = o / 4, sub = o % 4;
        const int2 val = make_int2(pk(q[0], q[2], q[4], q[6]), pk(q[1], q[3], q[5], q[7]));
        int2 *at = sub < 2 ? xlo + c * 2 + sub : xhi + c * 2 + sub - 2;
        *at = val;
        if (pair.on) st_peer(pair.peer_xs + (uint32_t)((uint8_t *)at - xs), val, pair.peer_bar);
        if (sub == 0) {
            const float2 sc = make_float2(amax * (1.0f / 127.0f), sum);
            chunk[c] = sc;
            if (pair.on) st_peer(pair.peer_xs + (uint32_t)((uint8_t *)(chunk + c) - xs), make_int2(__float_as_int(sc.x), __float_as_int(sc.y)), pair.peer_bar);
        }
    }
    cbar();
    // (the other half is waited for where it is first read: rows_dot)
    if (pair.on) pair.pending = true, pair.phase ^= 1;
}

// ---- R rows of a tile against x (NP pieces of 32 levels a lane each),
// sharing x's loads; each summed over the warp. A word's low nibbles are
// bytes as they are, its high ones bytes of 16 x the level: no shifts, the
// second sum divided by 16 once (exact: a multiple of 16). A pair's SM
// takes the half of x it prepared first and waits for the other's half
// after it (with NP even, half h is pieces [h NP/2, (h + 1) NP/2)); the
// halves are summed apart and added, which gives the same bits in either
// order, so pairing does not change the result.
template <int NP, int R>
__device__ __forceinline__ void rows_dot(const uint8_t *slot, int rows, int r0, int rstep, const uint8_t *xs, Pair &pair,
                                         float (&out)[R]) {
    constexpr int K = NP * 1024, C = K / 32, G = K / GS;
    const int lane = threadIdx.x & 31;
    const int4 *xlo = (const int4 *)xs, *xhi = xlo + C;
    const float2 *chunk = (const float2 *)(xs + K);
    const uint4 *w = (const uint4 *)slot;
    const bf16 *s = (const bf16 *)(slot + rows * K / 2), *b = s + rows * G;
    constexpr uint32_t ml = 0x0f0f0f0fu, mh = 0xf0f0f0f0u;
    float acc[2][R];
#pragma unroll
    for (int k = 0; k < R; k++) acc[0][k] = acc[1][k] = 0;
    constexpr int HALF = NP % 2 ? NP : NP / 2; // (an odd NP: one half, after the wait)
    const int own = NP % 2 == 0 && pair.on ? (int)pair.rank : 0;
    if (NP % 2) pair_ready(pair);
#pragma unroll
    for (int i = 0; i < 2 * HALF; i++) {
        if (i == HALF) {
            if (NP % 2) break;
            pair_ready(pair);
        }
        const int h = i < HALF ? own : 1 - own, c = lane + 32 * (h * HALF + i % HALF);
        float (&sum)[R] = acc[i < HALF ? 0 : 1];
        const int4 xl = xlo[c], xh = xhi[c];
        const float2 cx = chunk[c];
#pragma unroll
        for (int k = 0; k < R; k++) {
            const int r = r0 + k * rstep;
            const uint4 q = w[r * C + c];
            using afo_q::dot4_u8_s8;
            int dl = dot4_u8_s8(q.x & ml, xl.x, 0), dh = dot4_u8_s8(q.x & mh, xl.y, 0);
            dl = dot4_u8_s8(q.y & ml, xl.z, dl), dh = dot4_u8_s8(q.y & mh, xl.w, dh);
            dl = dot4_u8_s8(q.z & ml, xh.x, dl), dh = dot4_u8_s8(q.z & mh, xh.y, dh);
            dl = dot4_u8_s8(q.w & ml, xh.z, dl), dh = dot4_u8_s8(q.w & mh, xh.w, dh);
            const int g = r * G + c / 2;
            sum[k] += __bfloat162float(s[g]) * (cx.x * (float)(dl + (dh >> 4))) + __bfloat162float(b[g]) * cx.y;
        }
    }
#pragma unroll
    for (int k = 0; k < R; k++) out[k] = afo_cuda::warp_sum(acc[0][k] + acc[1][k]);
}

// The better of (v, i) and (v2, i2) as the argmax op has it: NaNs skipped
// (the candidates' rows are never NaN), ties to the lower row; i < 0: none.
__device__ __forceinline__ void take_better(float &v, int &i, float v2, int i2) {
    if (i2 >= 0 && v2 == v2 && (i < 0 || v2 > v || (v2 == v && i2 < i))) v = v2, i = i2;
}

// The step's end: each SM leaves its best row among the candidates; the
// last SM to finish picks the argmax (a NaN first logit picks row 0, as the
// argmax op) and zeroes the counters for the next launch, which nothing
// reads any more.
__device__ void finish_step(const afo_cuda_step &a, const Bufs &bu, float best_v, int best_i) {
    __shared__ float wv[NCW];
    __shared__ int wi[NCW];
    __shared__ unsigned last;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid / 32;
    if (lane == 0) wv[warp] = best_v, wi[warp] = best_i;
    cbar();
    if (tid == 0) {
        float v = 0;
        int i = -1;
        for (int w = 0; w < NCW; w++) take_better(v, i, wv[w], wi[w]);
        __stcg(bu.cand + blockIdx.x, make_int2(__float_as_int(v), i));
        unsigned n;
        asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(n) : "l"(bu.counter(C_END)) : "memory");
        last = n == gridDim.x - 1;
    }
    cbar();
    if (!last) return;
    if (a.pick && warp == 0) {
        float v = 0;
        int i = -1;
        for (int b = lane; b < (int)gridDim.x; b += 32) {
            const int2 c = __ldcg(bu.cand + b);
            take_better(v, i, __int_as_float(c.x), c.y);
        }
        for (int o = 16; o; o >>= 1) take_better(v, i, __shfl_xor_sync(~0u, v, o), __shfl_xor_sync(~0u, i, o));
        const float first = __ldcg(a.logits);
        if (lane == 0) *a.pick = i < 0 || first != first ? 0 : i;
    }
    const int used = a.shape.layers * CNT_PER_LAYER;
    for (int k = tid; k <= used; k += NCT) *bu.counter(k < used ? k : C_END) = 0;
}

extern __shared__ __align__(128) uint8_t smem[];

template <int F> __host__ __device__ constexpr int xs_bytes() {
    return F + F / 32 * 8 + NCW * 4 > ATT_BYTES ? F + F / 32 * 8 + NCW * 4 : ATT_BYTES;
}
template <int D, int F> constexpr size_t smem_bytes() {
    return (size_t)NSLOT * SLOT + (xs_bytes<F>() + 15) / 16 * 16 + 2 * NSLOT * 8 + 64 + D * 2;
}
// Whether a shape's tiles fit a ring slot (8 rows of D, 2 rows of F, with
// their scales and biases) and the block's shared memory an SM's 227 KB.
template <int D, int F> constexpr bool fits_smem() {
    return 8 * (D / 2 + D / GS * 4) <= SLOT && 2 * (F / 2 + F / GS * 4) <= SLOT && smem_bytes<D, F>() + 1024 <= 232448;
}

template <int D, int F>
__global__ void __launch_bounds__(NT, 1) step_kernel(const __grid_constant__ afo_cuda_step a) {
    uint8_t *xs = smem + NSLOT * SLOT;
    Ring ring;
    ring.slots = smem;
    ring.full = (uint64_t *)(xs + (xs_bytes<F>() + 15) / 16 * 16);
    ring.empty = ring.full + NSLOT;
    ring.seq = (int *)(ring.empty + NSLOT);
    bf16 *xres = (bf16 *)((uint8_t *)ring.seq + 64); // the residual the o and down stages add to
    __shared__ float2 ang[HD / 2];                   // rope's cos and sin at the position
    const afo_cuda_step_shape &sh = a.shape;
    const int tid = threadIdx.x, G = gridDim.x, pos = *a.position, S = splits_of(a);
    const int items = sh.kv_heads * S;
    Bufs bu;
    layout(sh, (uint8_t *)a.scratch, &bu);
    __shared__ uint64_t pair_bar;
    Pair pair = {a.pair != 0, 0, &pair_bar, 0, 0, 0, false};
    if (pair.on) {
        asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(pair.rank));
        pair.peer_xs = peer_address(xs, pair.rank ^ 1), pair.peer_bar = peer_address(&pair_bar, pair.rank ^ 1);
    }
    if (tid == 0) {
        for (int i = 0; i < NSLOT; i++) mb_init(ring.full + i, 1), mb_init(ring.empty + i, 4);
        mb_init(&pair_bar, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    if (tid < NSLOT) ring.seq[tid] = -1;
    if (pair.on) // (the other SM's barrier initialized before anything is counted on it)
        asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
    else
        __syncthreads();
    if (tid >= NCT) { // the producer warp: one thread issues the copies
        if (tid == NCT) {
            const uint64_t pol = afo_cuda::evict_first_policy();
            int it = 0;
            auto take_slot = [&]() {
                const int sl = it % NSLOT;
                if (it >= NSLOT) mb_wait(ring.empty + sl, (it / NSLOT - 1) & 1);
                ((volatile int *)ring.seq)[sl] = it++;
                return sl;
            };
            auto emit = [&](const Tile &t, int i) { // tile i of the stage whose tile 0 is t
                if (it >= MAX_IN_FLIGHT) { // the copy MAX_IN_FLIGHT back has landed
                    const int q = it - MAX_IN_FLIGHT;
                    mb_wait(ring.full + q % NSLOT, (q / NSLOT) & 1);
                }
                const int sl = take_slot();
                uint32_t tot = 0;
#pragma unroll
                for (int k = 0; k < 6; k++) if (k < t.n) tot += t.bytes[k];
                mb_expect(ring.full + sl, tot);
                int off = 0;
#pragma unroll
                for (int k = 0; k < 6; k++) if (k < t.n) bulk(ring.slots + sl * SLOT + off, t.src[k] + (size_t)i * t.bytes[k], t.bytes[k], ring.full + sl, pol), off += t.bytes[k];
            };
            auto stage = [&](int st, int l) {
                const Tile t = tile0_of<D, F>(a, st, l);
                int t0, t1; range_of(tiles_of<D, F>(a, st, l), t0, t1);
                for (int i = t0; i < t1; i++) emit(t, i);
            };
            for (int l = 0; l < sh.layers; l++) {
                const afo_cuda_step_layer &ly = a.layer[l];
                stage(ST_QKV, l);
                if ((int)blockIdx.x < items) { // the item's keys and values, chunk by chunk
                    int k0, k1; item_keys(pos, S, blockIdx.x % S, k0, k1);
                    const size_t row0 = ((size_t)(blockIdx.x / S) * sh.capacity + k0) * HD;
                    for (int c = 0; c * CK < k1 - k0; c++) {
                        Tile kt = {}, vt = {};
                        const uint32_t bytes = (uint32_t)min(CK, k1 - k0 - c * CK) * HD * 2;
                        const bf16 *keys = (const bf16 *)ly.keys + row0 + (size_t)c * CK * HD;
                        const bf16 *values = (const bf16 *)ly.values + row0 + (size_t)c * CK * HD;
                        add_part(kt, keys, bytes);
                        if (packs(bytes / (HD * 2))) {
                            add_part(kt, values, bytes);
                            emit(kt, 0);
                        } else {
                            add_part(vt, values, bytes);
                            emit(kt, 0);
                            emit(vt, 0);
                        }
                    }
                }
                stage(ST_O, l);
                stage(ST_GU, l);
                stage(ST_DOWN, l);
            }
            stage(ST_HEAD, 0);
        }
        return;
    }
    // (rope's angles after the producer is off: the first use is attention's,
    // several barriers on)
    if (tid < HD / 2) {
        double c, s;
        afo_cuda::rope_angle(a.rope, pos, tid, &c, &s);
        ang[tid] = make_float2((float)c, (float)s);
    }
    int it = 0; // ring position
    const int warp = tid / 32, lane = tid & 31;
    float best_v = 0; // the warp's best logit and its row (lane 0's)
    int best_i = -1;
    // Consumers: a stage's tiles as row tasks, dealt round robin to the warps; a
    // warp waits only for its own tasks' tiles, and a slot is free once its
    // T tasks are done (an empty barrier counts 4 arrivals, a task 4 / T).
    auto tiles = [&](int st, int l, bf16 *out) {
        // tasks a tile: a gate and up row pair, or one long down row, or 4 rows
        const int T = st == ST_GU ? 4 : 2;
        int t0, t1; range_of(tiles_of<D, F>(a, st, l), t0, t1);
        const int count = t1 - t0;
        for (int u = warp; u / T < count; u += NCW) { // task u: tile k's task j
            const int k = u / T, j = u % T;
            const int sl = (it + k) % NSLOT;
            const uint8_t *slot = ring.landed(it + k);
            // the task's rows: gate and up row j, down row j, else rows 4j .. 4j + 3
            const bool one = st == ST_GU || st == ST_DOWN, resid = st == ST_O || st == ST_DOWN;
            const int nr = one ? 1 : 4;
            const int r = (t0 + k) * rows_of(st) + j * nr;
            float v[4] = {0, 0, 0, 0}, old[4] = {0, 0, 0, 0};
            if (resid && lane == 0)
                for (int m = 0; m < nr; m++) old[m] = __bfloat162float(xres[r + m]);
            if (st == ST_DOWN) { float o1[1]; rows_dot<F / 1024, 1>(slot, 2, j, 0, xs, pair, o1); v[0] = o1[0]; }
            else if (st == ST_GU) { float o2[2]; rows_dot<D / 1024, 2>(slot, 8, j, 4, xs, pair, o2); v[0] = o2[0], v[1] = o2[1]; }
            else rows_dot<D / 1024, 4>(slot, 8, 4 * j, 1, xs, pair, v);
            __syncwarp();
            if (lane == 0) {
                mb_arrive(ring.empty + sl, 4 / T); // before the stores: the release need not wait for them
                if (st == ST_GU) out[r] = __float2bfloat16(silu_mul(rbf(v[0]), rbf(v[1])));
                else if (st == ST_HEAD)
                    for (int m = 0; m < nr; m++) a.logits[r + m] = rbf(v[m]), take_better(best_v, best_i, rbf(v[m]), r + m);
                else for (int m = 0; m < nr; m++) out[r + m] = __float2bfloat16(resid ? old[m] + rbf(v[m]) : v[m]);
            }
        }
        pair_ready(pair); // (a warp without a task too, before xs is written again)
        it += count;
    };
    // a stage every SM's next one waits for: done here, then seen done everywhere
    auto all_done = [&](unsigned *c) {
        signal(c);
        wait_count(c, G);
    };
    // The residual stream alternates between two buffers so that no stage
    // writes what another SM may still be reading: the o stage reads x (the
    // embedding in layer 0) and writes resid[1]; down reads resid[1] and
    // writes resid[0], once every SM is past the o stage.
    for (int l = 0; l < sh.layers; l++) {
        const afo_cuda_step_layer &ly = a.layer[l];
        const bf16 *x = l == 0 ? (const bf16 *)a.x : bu.resid[0];
        if (l > 0) wait_count(bu.counter(l - 1, C_DOWN), G);
        prep_x<D, D>(x, (const bf16 *)ly.attn_norm, a.eps, xs, pair);
        tiles(ST_QKV, l, bu.qkv);
        signal(bu.counter(l, C_QKV));
        if ((int)blockIdx.x < items) {
            wait_count(bu.counter(l, C_QKV), G);
            attention_item(a, bu, ang, l, blockIdx.x / S, blockIdx.x % S, pos, xs, ring, it);
        }
        wait_count(bu.counter(l, C_ATTN), sh.kv_heads);
        prep_x<D, D>(bu.attn, nullptr, a.eps, xs, pair, x, xres);
        tiles(ST_O, l, bu.resid[1]);
        all_done(bu.counter(l, C_O));
        prep_x<D, D>(bu.resid[1], (const bf16 *)ly.mlp_norm, a.eps, xs, pair);
        tiles(ST_GU, l, bu.h);
        all_done(bu.counter(l, C_GU));
        prep_x<F, D>(bu.h, nullptr, a.eps, xs, pair, bu.resid[1], xres);
        tiles(ST_DOWN, l, bu.resid[0]);
        signal(bu.counter(l, C_DOWN));
    }
    wait_count(bu.counter(sh.layers - 1, C_DOWN), G);
    prep_x<D, D>(bu.resid[0], (const bf16 *)a.final_norm, a.eps, xs, pair);
    tiles(ST_HEAD, 0, nullptr);
    finish_step(a, bu, best_v, best_i);
}

// The shapes instantiated: (hidden, intermediate) of Llama-3.1-8B and
// Mistral-7B, Llama-3.2-3B, and the tests' small model (Llama-3.2-1B's
// heads are of 64).
struct Variant { int D, F; void (*kernel)(afo_cuda_step); size_t smem; };
#define VARIANT(d, f) {d, f, step_kernel<d, f>, smem_bytes<d, f>()}
static_assert(fits_smem<4096, 14336>() && fits_smem<3072, 8192>() && fits_smem<1024, 2048>(), "tiles and ring fit");
const Variant kVariants[] = {VARIANT(4096, 14336), VARIANT(3072, 8192), VARIANT(1024, 2048)};
#undef VARIANT

const Variant *variant_of(const afo_cuda_step_shape *s) {
    for (const Variant &v : kVariants)
        if (v.D == s->hidden && v.F == s->intermediate) return &v;
    return nullptr;
}

// The scratch of the largest shape each variant takes.
size_t scratch_bytes() {
    size_t most = 0;
    for (const Variant &v : kVariants) {
        const int heads = v.D / HD;
        const afo_cuda_step_shape s = {AFO_CUDA_STEP_MAX_LAYERS, v.D, v.F, heads, heads < MAX_KVH ? heads : MAX_KVH, 8, 1};
        const size_t n = layout(s, nullptr, nullptr);
        most = n > most ? n : most;
    }
    return most;
}

void *g_scratch;        // for every launch; freed at exit by the driver
int g_paired = -1;      // the last launch's pairing
bool g_scratch_zeroed;  // by a copy outside any recording

} // namespace

extern "C" int afo_cuda_decode_step_paired(void) { return g_paired; }

extern "C" bool afo_cuda_decode_step_fits(const afo_cuda_step_shape *s, const char **why) {
    const int sms = afo_cuda_multiprocessors();
    *why = !variant_of(s) ? "hidden and intermediate sizes not among the kernel's (4096/14336, 3072/8192, 1024/2048)"
           : s->layers < 1 || s->layers > AFO_CUDA_STEP_MAX_LAYERS ? "more layers than the kernel takes (64)"
           : s->kv_heads < 1 || s->kv_heads > MAX_KVH || s->heads % s->kv_heads || s->heads / s->kv_heads > MAX_GQA
               ? "kv heads (at most 8) or query heads a kv head (at most 4)"
           : s->heads * HD != s->hidden ? "heads x head dim is not the hidden size"
           : s->vocab < 8 || s->vocab % 8 ? "vocabulary not a multiple of 8"
           : sms < s->kv_heads * 2 || sms > MAX_SMS ? "too few multiprocessors, or too many"
           : s->capacity < 1 || s->capacity > INT32_MAX / HD ? "cache capacity"
                                                                : nullptr;
    return !*why;
}

extern "C" cudaError_t afo_cuda_decode_step_run(afo_cuda_step *s, cudaStream_t stream) {
    const Variant *v = variant_of(&s->shape);
    if (!v) return cudaErrorInvalidValue;
    static bool configured[sizeof kVariants / sizeof kVariants[0]];
    bool &done = configured[v - kVariants];
    if (!done) {
        cudaError_t e = cudaFuncSetAttribute(v->kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)v->smem);
        if (e != cudaSuccess) return e;
        done = true;
    }
    cudaError_t e = g_scratch ? cudaSuccess : cudaMalloc(&g_scratch, scratch_bytes());
    if (e != cudaSuccess) return e;
    // A recording made before any plain launch records the zeroing too (its
    // replays clear the counters first, as they were).
    if (!g_scratch_zeroed) {
        cudaStreamCaptureStatus capturing;
        if ((e = cudaStreamIsCapturing(stream, &capturing)) != cudaSuccess) return e;
        if ((e = cudaMemsetAsync(g_scratch, 0, scratch_bytes(), stream)) != cudaSuccess) return e;
        g_scratch_zeroed = capturing == cudaStreamCaptureStatusNone;
    }
    s->scratch = g_scratch;
    const int sms = afo_cuda_multiprocessors();
    cudaLaunchAttribute cluster = {};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = 2, cluster.val.clusterDim.y = 1, cluster.val.clusterDim.z = 1;
    cudaLaunchConfig_t launch = {};
    launch.gridDim = dim3(sms), launch.blockDim = dim3(NT), launch.dynamicSmemBytes = v->smem, launch.stream = stream;
    launch.attrs = &cluster, launch.numAttrs = 1;
    // Pairs only when every pair fits at once: a pair left waiting for SMs
    // would hold up the grid-wide waits for ever. AFO_STEP_PAIRS=0 turns
    // them off (a diagnosis switch, as AFO_FUSED_STEP=0 is for the step).
    static signed char pairs[sizeof kVariants / sizeof kVariants[0]]; // 0 not yet known, 1 paired, -1 not
    signed char &paired = pairs[v - kVariants];
    if (!paired) {
        const char *env = getenv("AFO_STEP_PAIRS");
        const bool wanted = sms % 2 == 0 && !(env && !strcmp(env, "0"));
        int clusters = 0;
        if (wanted && cudaOccupancyMaxActiveClusters(&clusters, v->kernel, &launch) != cudaSuccess)
            (void)cudaGetLastError(), clusters = 0;
        paired = wanted && clusters * 2 >= sms ? 1 : -1;
    }
    s->pair = g_paired = paired > 0;
    launch.numAttrs = s->pair ? 1 : 0;
    return cudaLaunchKernelEx(&launch, v->kernel, *s);
}
