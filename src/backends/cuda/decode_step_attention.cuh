// The fused decode step's attention (decode_step.cu's translation unit): a
// (kv head, split) an SM, keys and values streamed through the ring, an
// online softmax on tensor cores, the splits merged by the last to finish.
#ifndef AFO_CUDA_DECODE_STEP_ATTENTION_CUH
#define AFO_CUDA_DECODE_STEP_ATTENTION_CUH

#include <math.h>

#include "backends/cuda/decode_step_common.cuh"
#include "backends/cuda/mma.cuh"
#include "backends/cuda/rope.cuh"

namespace {

// ---- attention items: (kv head, split) an SM; split s of S takes the
// cache's keys [k0, k1) of the `pos` before the new one, in chunks of CK
// keys (a context of 16 x 64 = 1024 keys in one chunk an item); the last
// split takes the new key too.
constexpr int CK = 64, QROW = HD + 8, PROW = CK + 8; // rows padded off bank conflicts
static_assert(CK * HD * 2 <= SLOT && CK == 8 * NCW, "a chunk's keys fit a slot, a warp 8 of them");
// While attention holds every other stage up, the ring's slots are all
// the copies HBM can get ahead with, so attention takes as few as it can:
// a chunk's keys and values share one slot when they fit (up to 36 keys: a
// context of up to 576 in 16 splits), and when they do not, the keys' slot
// goes back once the scores are made (8B 4-bit, H200: 705 tok/s against
// 697 with two slots held to the end; docs/PERFORMANCE.md).
__device__ __forceinline__ bool packs(int keys) { return keys * HD * 2 * 2 <= SLOT; }
__device__ __forceinline__ int splits_of(const afo_cuda_step &a) { return min(MAX_SPLITS, (int)gridDim.x / a.shape.kv_heads); }
__device__ __forceinline__ void item_keys(int pos, int S, int split, int &k0, int &k1) {
    k0 = (int)((long long)pos * split / S), k1 = (int)((long long)pos * (split + 1) / S);
}

// Attention scratch, in x's place (attention ends before the o stage
// prepares x): q [16][QROW] and weights [16][PROW] in bf16 (rows past the
// group's heads zero), scores [MAX_GQA][CK], the new key's scores, its key
// and value, each head's running (max, sum, rescale), a zero row.
constexpr int ATT_BYTES = (16 * QROW + 16 * PROW) * 2 + (MAX_GQA * CK + MAX_GQA + 2 * HD + 3 * MAX_GQA) * 4 + 16;

// The item's partial: chunk by chunk, scores = q (the group's heads, rows of
// a 16-row tile) x K^T a warp an 8-key tile; softmax a warp a head, the
// running max and sum rescaled (online softmax), weights rounded to bf16
// (their sum is of the rounded ones); out += P x V, a warp two 8-dim
// tiles. The new position's key is written to the cache and scored once,
// its weight joining the last chunk's and its value added after the product.
__device__ void attention_part(const afo_cuda_step &a, const Bufs &bu, const float2 *ang, int l, int kvh, int split,
                               int pos, uint8_t *xs, const Ring &ring, int &it) {
    const afo_cuda_step_shape &sh = a.shape;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid / 32, gqa = sh.heads / sh.kv_heads, S = splits_of(a);
    const afo_cuda_step_layer &ly = a.layer[l];
    int k0, k1; item_keys(pos, S, split, k0, k1);
    const int nk = k1 - k0, nch = (nk + CK - 1) / CK;
    const bool fresh = split == S - 1;
    const int iters = nch + (fresh && nch == 0);
    bf16 *qs = (bf16 *)xs, *ps = qs + 16 * QROW;
    float *sc = (float *)(ps + 16 * PROW), *snew = sc + MAX_GQA * CK;
    float *kn = snew + MAX_GQA, *vn = kn + HD;
    float *ml = vn + HD; // [MAX_GQA][3]: max, sum, the last chunk's rescale
    const uint4 *zero = (const uint4 *)(ml + 3 * MAX_GQA);
    const bf16 *qkv = bu.qkv;
    const int q_rows = sh.heads * HD, kv_rows = sh.kv_heads * HD;
    auto rope4 = [&](float (&v)[4]) { // pairs (d, d + 64): lanes l and l ^ 16
        for (int e = 0; e < 4; e++) {
            const float o = __shfl_xor_sync(~0u, v[e], 16);
            const float2 cs = ang[(lane & 15) * 4 + e];
            float ra, ro;
            if (lane < 16) afo_cuda::rope_rotate(v[e], o, cs.x, cs.y, &ra, &ro), v[e] = ra;
            else afo_cuda::rope_rotate(o, v[e], cs.x, cs.y, &ra, &ro), v[e] = ro;
        }
    };
    auto ld4 = [&](const bf16 *p, float (&v)[4]) {
        const uint2 r = __ldcg((const uint2 *)p);
        const bf16 *e = (const bf16 *)&r;
        for (int k = 0; k < 4; k++) v[k] = __bfloat162float(e[k]);
    };
    // zeros: q's rows past the group's heads, every weight, a row for tiles
    // past the keys (q's own rows are written in the same phase)
    for (int i = tid; i < ((16 - gqa) * QROW * 2 + 16 * PROW * 2 + 16) / 16; i += NCT) {
        const int qz = (16 - gqa) * QROW * 2 / 16;
        if (i < qz) ((uint4 *)(qs + gqa * QROW))[i] = uint4{};
        else if (i < qz + 16 * PROW * 2 / 16) ((uint4 *)ps)[i - qz] = uint4{};
        else *(uint4 *)zero = uint4{};
    }
    if (tid < MAX_GQA) ml[tid * 3] = -INFINITY, ml[tid * 3 + 1] = 0, ml[tid * 3 + 2] = 0;
    if (warp < gqa) { // q of head warp, roped, bf16 (the scale goes on the scores)
        float q[4];
        ld4(qkv + (kvh * gqa + warp) * HD + lane * 4, q);
        rope4(q);
        for (int e = 0; e < 4; e++) qs[warp * QROW + lane * 4 + e] = __float2bfloat16(q[e]);
    } else if (warp == NCW - 1 && fresh) { // the new key and value, into the cache
        float k[4], v[4];
        ld4(qkv + q_rows + kvh * HD + lane * 4, k);
        rope4(k);
        ld4(qkv + q_rows + kv_rows + kvh * HD + lane * 4, v);
        bf16 kb[4], vb[4];
        for (int e = 0; e < 4; e++) kb[e] = __float2bfloat16(k[e]), vb[e] = __float2bfloat16(v[e]), kn[lane * 4 + e] = __bfloat162float(kb[e]), vn[lane * 4 + e] = __bfloat162float(vb[e]);
        const size_t row = ((size_t)kvh * sh.capacity + pos) * HD + lane * 4;
        *(uint2 *)((bf16 *)ly.keys + row) = *(uint2 *)kb;
        *(uint2 *)((bf16 *)ly.values + row) = *(uint2 *)vb;
    }
    cbar();
    // the new key's scores: on the last warp, whose 8 keys of a chunk exist
    // only past 56 keys a split (a context of 896)
    if (fresh && warp == NCW - 1) {
        float d[MAX_GQA];
        for (int h = 0; h < MAX_GQA; h++) {
            d[h] = 0;
            if (h < gqa)
                for (int e = 0; e < 4; e++) d[h] += __bfloat162float(qs[h * QROW + lane * 4 + e]) * kn[lane * 4 + e];
        }
        for (int o = 16; o; o >>= 1)
            for (int h = 0; h < MAX_GQA; h++) d[h] += __shfl_xor_sync(~0u, d[h], o);
        if (lane < MAX_GQA) snew[lane] = d[lane] * a.scale;
    }
    const int g = lane / 4, t = lane % 4;
    float acc[2][4] = {};
    for (int c = 0; c < iters; c++) {
        const bool has_slot = c < nch, here = fresh && c == iters - 1;
        const int nkc = has_slot ? min(CK, nk - c * CK) : 0;
        const bool packed = packs(nkc);
        const bf16 *ks = has_slot ? (const bf16 *)ring.landed(it) : nullptr;
        const bf16 *vs = !has_slot ? nullptr : packed ? ks + nkc * HD : (const bf16 *)ring.landed(it + 1);
        if (warp * 8 < nkc) { // scores of keys warp * 8 + 0..7
            float cc[4] = {0, 0, 0, 0};
            const int kr = warp * 8 + (lane & 7);
            const bf16 *kb = kr < nkc ? ks + kr * HD + (lane >> 3 & 1) * 8 : nullptr;
#pragma unroll
            for (int s = 0; s < HD / 16; s++) {
                uint32_t af[4], bfr[2];
                afo_mma::ldmatrix<4>(af, qs + (lane & 15) * QROW + s * 16 + (lane >> 4) * 8);
                afo_mma::ldmatrix<2>(bfr, kb ? (const void *)(kb + s * 16) : (const void *)zero);
                afo_mma::mma<bf16>(cc, af, bfr[0], bfr[1]);
            }
            if (g < gqa)
                for (int e = 0; e < 2; e++) {
                    const int key = warp * 8 + 2 * t + e;
                    sc[g * CK + key] = key < nkc ? cc[e] * a.scale : -INFINITY;
                }
        } else if (g < gqa) {
            for (int e = 0; e < 2; e++) sc[g * CK + warp * 8 + 2 * t + e] = -INFINITY;
        }
        cbar();
        // the keys are read: their slot goes back to the producer while the
        // rest of attention holds the other stages up
        if (has_slot && !packed && tid == 0) mb_arrive(ring.empty + it % NSLOT, 4);
        if (warp < gqa) { // softmax of head warp, continued from the chunks before
            const float s0 = sc[warp * CK + lane], s1 = sc[warp * CK + 32 + lane];
            const float sn = here && lane == 0 ? snew[warp] : -INFINITY;
            float m = fmaxf(fmaxf(s0, s1), sn);
            for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(~0u, m, o));
            const float m_old = ml[warp * 3], m_new = fmaxf(m_old, m); // (a chunk has a key: finite)
            const float alpha = m_old == -INFINITY ? 0.0f : __expf(m_old - m_new);
            const bf16 p0 = __float2bfloat16(__expf(s0 - m_new)), p1 = __float2bfloat16(__expf(s1 - m_new)),
                       pn = __float2bfloat16(__expf(sn - m_new));
            ps[warp * PROW + lane] = p0;
            ps[warp * PROW + 32 + lane] = p1;
            if (lane == 0) ps[warp * PROW + CK] = pn;
            float L = __bfloat162float(p0) + __bfloat162float(p1) + __bfloat162float(pn);
            for (int o = 16; o; o >>= 1) L += __shfl_xor_sync(~0u, L, o);
            __syncwarp();
            if (lane == 0) ml[warp * 3] = m_new, ml[warp * 3 + 1] = ml[warp * 3 + 1] * alpha + L, ml[warp * 3 + 2] = alpha;
        }
        cbar();
        const float alpha = g < gqa ? ml[g * 3 + 2] : 0.0f;
#pragma unroll
        for (int j = 0; j < 2; j++) { // out dims nt * 8 + 0..7
            const int nt = warp + NCW * j;
            acc[j][0] *= alpha, acc[j][1] *= alpha;
#pragma unroll
            for (int s = 0; s < CK / 16; s++) { // keys s * 16 + 0..15 (their weights are zero past the chunk's)
                if (s * 16 >= nkc) break;
                uint32_t af[4], bfr[2];
                afo_mma::ldmatrix<4>(af, ps + (lane & 15) * PROW + s * 16 + (lane >> 4) * 8);
                const int kr = s * 16 + (lane & 15);
                afo_mma::ldmatrix<2, true>(bfr, kr < nkc ? (const void *)(vs + kr * HD + nt * 8) : (const void *)zero);
                afo_mma::mma<bf16>(acc[j], af, bfr[0], bfr[1]);
            }
            if (here && g < gqa)
                for (int e = 0; e < 2; e++) acc[j][e] += __bfloat162float(ps[g * PROW + CK]) * vn[nt * 8 + 2 * t + e];
        }
        cbar(); // the values, scores and weights read: the next chunk may overwrite them
        if (has_slot) {
            if (tid == 0) mb_arrive(ring.empty + (it + !packed) % NSLOT, 4); // the values' slot
            it += packed ? 1 : 2;
        }
    }
    float *part = bu.part + (size_t)(kvh * MAX_SPLITS + split) * gqa * (HD + 2);
    if (g < gqa)
        for (int j = 0; j < 2; j++)
            for (int e = 0; e < 2; e++) __stcg(part + g * (HD + 2) + (warp + NCW * j) * 8 + 2 * t + e, acc[j][e]);
    if (tid < gqa) __stcg(part + tid * (HD + 2) + HD, ml[tid * 3]), __stcg(part + tid * (HD + 2) + HD + 1, ml[tid * 3 + 1]);
}

// The item's partial, then, by the item of its kv head that finishes last,
// every split's partials merged into the heads' output.
__device__ void attention_item(const afo_cuda_step &a, const Bufs &bu, const float2 *ang, int l, int kvh, int split,
                               int pos, uint8_t *xs, const Ring &ring, int &it) {
    const int tid = threadIdx.x, gqa = a.shape.heads / a.shape.kv_heads, S = splits_of(a);
    attention_part(a, bu, ang, l, kvh, split, pos, xs, ring, it);
    cbar();
    __shared__ unsigned last;
    // (one acq_rel atomic, not a fence, an atomic and a fence: the partials
    // stored before it are visible with it, the others' after it)
    if (tid == 0) { unsigned v; asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(v) : "l"(bu.counter(l, C_SPLITS + kvh)) : "memory"); last = v == (unsigned)S - 1; }
    cbar();
    if (!last) return;
    // two dims of a head a thread, every split's numbers in one round trip
    for (int i = tid; i < gqa * HD / 2; i += NCT) {
        const int g = i / (HD / 2), d = i % (HD / 2) * 2;
        const float *pb = bu.part + (size_t)kvh * MAX_SPLITS * gqa * (HD + 2) + g * (HD + 2);
        float ms[MAX_SPLITS], lsp[MAX_SPLITS];
        float2 as[MAX_SPLITS];
#pragma unroll
        for (int s = 0; s < MAX_SPLITS; s++) {
            const float *p = pb + s * gqa * (HD + 2);
            ms[s] = s < S ? __ldcg(p + HD) : -INFINITY;
            lsp[s] = s < S ? __ldcg(p + HD + 1) : 0.0f;
            as[s] = s < S ? __ldcg((const float2 *)(p + d)) : float2{0, 0};
        }
        float M = -INFINITY;
#pragma unroll
        for (int s = 0; s < MAX_SPLITS; s++) M = fmaxf(M, ms[s]);
        float L = 0, A0 = 0, A1 = 0;
#pragma unroll
        for (int s = 0; s < MAX_SPLITS; s++) { const float f = __expf(ms[s] - M); L += lsp[s] * f; A0 += as[s].x * f; A1 += as[s].y * f; }
        *(__nv_bfloat162 *)(bu.attn + (kvh * gqa + g) * HD + d) = __floats2bfloat162_rn(A0 / L, A1 / L);
    }
    signal(bu.counter(l, C_ATTN));
}

} // namespace

#endif
