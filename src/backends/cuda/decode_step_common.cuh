// The fused decode step's shared pieces (decode_step.cu and
// decode_step_attention.cuh, one translation unit): its sizes, its scratch
// in global memory, the PTX it uses (mbarriers, bulk copies, the pair's
// stores), the ring of weight tiles as the consumers see it, and the
// counters' waits and signals.
#ifndef AFO_CUDA_DECODE_STEP_COMMON_CUH
#define AFO_CUDA_DECODE_STEP_COMMON_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "backends/cuda/decode_step_kernels.h"

namespace {

typedef __nv_bfloat16 bf16;
constexpr int HD = 128, GS = 64, MAX_GQA = 4, MAX_KVH = 8, MAX_SPLITS = 16;
// NCW: consumer warps; 8 (9 with the producer's) leave 168 registers a
// thread where 12 left 128 and spilled (an SM partition holds 16K
// registers). NSLOT: ring slots. MAX_IN_FLIGHT: copies an SM has issued
// and not yet landed; 2 (36 KB an SM) keep HBM busy while the queues stay
// short enough for the chain's round trips.
constexpr int NCW = 8, NCT = NCW * 32, NT = NCT + 32;
constexpr int NSLOT = 11, MAX_IN_FLIGHT = 2, SLOT = 18432;
// a layer's counters: SMs (or items) done with a stage
enum { C_QKV, C_ATTN, C_O, C_GU, C_DOWN, C_SPLITS, CNT_PER_LAYER = C_SPLITS + MAX_KVH };
// The counters of the most layers, then the SMs done with the step; the
// argmax's candidates, one an SM.
constexpr int COUNTERS = AFO_CUDA_STEP_MAX_LAYERS * CNT_PER_LAYER + 1, C_END = COUNTERS - 1, MAX_SMS = 1024;
// A counter a 128-byte line, so that the polls of one do not share a line
// with the atomics of another (+0.2% on an H200, about the noise).
constexpr int CNT_STRIDE = 32;

// The scratch, one buffer for every launch (zeroed once, when made): the
// counters, which the last SM to finish a step zeroes for the next (so no
// launch clears them first), the argmax's candidates, then the vectors the
// stages hand on through global memory.
struct Bufs {
    unsigned *cnt; // counter k at cnt[k * CNT_STRIDE]: counter(k)
    int2 *cand; // (logit's bits, row) of the SM's best row
    bf16 *resid[2], *qkv, *attn, *h;
    float *part;
    __device__ unsigned *counter(int k) const { return cnt + k * CNT_STRIDE; }
    __device__ unsigned *counter(int l, int which) const { return counter(l * CNT_PER_LAYER + which); }
};
__host__ __device__ inline size_t round_up(size_t n) { return (n + 255) / 256 * 256; }
__host__ __device__ inline size_t layout(const afo_cuda_step_shape &s, uint8_t *base, Bufs *b) {
    const int gqa = s.heads / s.kv_heads;
    const size_t sizes[8] = {round_up((size_t)COUNTERS * CNT_STRIDE * 4), round_up((size_t)MAX_SMS * 8),
                             round_up((size_t)s.hidden * 2), round_up((size_t)s.hidden * 2),
                             round_up((size_t)(s.heads + 2 * s.kv_heads) * HD * 2), round_up((size_t)s.heads * HD * 2),
                             round_up((size_t)s.intermediate * 2),
                             round_up((size_t)s.kv_heads * MAX_SPLITS * gqa * (HD + 2) * 4)};
    size_t at = 0;
    uint8_t *p[8];
    for (int i = 0; i < 8; i++) p[i] = base + at, at += sizes[i];
    if (b)
        *b = Bufs{(unsigned *)p[0], (int2 *)p[1], {(bf16 *)p[2], (bf16 *)p[3]}, (bf16 *)p[4], (bf16 *)p[5],
                  (bf16 *)p[6], (float *)p[7]};
    return at;
}

// ---- PTX helpers
__device__ __forceinline__ uint32_t sa(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mb_init(uint64_t *m, int n) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(m)), "r"(n) : "memory"); }
__device__ __forceinline__ void mb_expect(uint64_t *m, uint32_t bytes) { asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(m)), "r"(bytes) : "memory"); }
// (release: a consumer's reads of the slot complete before the producer may
// refill it)
__device__ __forceinline__ void mb_arrive(uint64_t *m, uint32_t count) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0], %1;" ::"r"(sa(m)), "r"(count) : "memory"); }
// (CLUSTER: acquire at cluster scope, for the bytes the other SM of a pair
// stored and counted on the barrier)
template <bool CLUSTER = false> __device__ __forceinline__ void mb_wait(uint64_t *m, uint32_t parity) {
    uint32_t ok;
    do {
        if constexpr (CLUSTER)
            asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                         : "=r"(ok) : "r"(sa(m)), "r"(parity) : "memory");
        else
            asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                         : "=r"(ok) : "r"(sa(m)), "r"(parity) : "memory");
    } while (!ok);
}
__device__ __forceinline__ void bulk(void *dst, const void *src, uint32_t bytes, uint64_t *m, uint64_t pol) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;"
                 ::"r"(sa(dst)), "l"(src), "r"(bytes), "r"(sa(m)), "l"(pol) : "memory");
}
// 8 bytes into the other SM's shared memory, counted on its barrier
__device__ __forceinline__ void st_peer(uint32_t addr, int2 v, uint32_t bar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.s32 [%0], {%1, %2}, [%3];" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(bar) : "memory");
}
__device__ __forceinline__ uint32_t peer_address(const void *p, uint32_t rank) {
    uint32_t r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(sa(p)), "r"(rank));
    return r;
}
__device__ __forceinline__ void cbar() { asm volatile("bar.sync 1, %0;" ::"n"(NCT) : "memory"); }
__device__ __forceinline__ unsigned ld_acq(const unsigned *p) { unsigned v; asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory"); return v; }
__device__ __forceinline__ float rbf(float v) { return __bfloat162float(__float2bfloat16(v)); }
__device__ __forceinline__ float silu_mul(float g, float u) { return rbf(g / (1.0f + __expf(-g)) * u); }

// A counter's waits poll 100 ns apart: 132 SMs polling a line back to back
// seem to cost the copies time at the L2 (H200, 8B 4-bit, same call: 722.2
// / 723.8 / 721.8 tok/s against 719.8 / 720.4 / 719.7; 250 ns as fast as
// none, 500 ns 1% slower; four relaxed polls in flight 100 ns apart, then
// an acquire fence, 10% slower; docs/PERFORMANCE.md).
constexpr int POLL_NS = 100;
__device__ __forceinline__ void wait_count(const unsigned *c, unsigned target) {
    if (threadIdx.x == 0) while (ld_acq(c) < target) __nanosleep(POLL_NS);
    cbar();
}
__device__ __forceinline__ void signal(unsigned *c) {
    cbar();
    if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(c) : "memory"); // (the block's stores, ordered by the barrier, before it)
}

// The ring as the consumers see it: a slot's position check, then its
// parity wait.
struct Ring {
    uint8_t *slots;
    uint64_t *full, *empty;
    int *seq; // the ring position a slot was last taken for
    // slot of ring position `pos`, once landed: a warp waits for the slot to
    // be taken for its position before the parity wait, else the wait could
    // pass on the fill two back
    __device__ __forceinline__ const uint8_t *landed(int pos) const {
        const int sl = pos % NSLOT;
        while (((volatile int *)seq)[sl] != pos) __nanosleep(64);
        mb_wait(full + sl, (pos / NSLOT) & 1);
        return slots + sl * SLOT;
    }
};

} // namespace

#endif
