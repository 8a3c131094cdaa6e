// The decode matvec y = x · dequantize(W)ᵀ for one row of 16-bit x and
// 4- or 8-bit W with 16-bit scales, on integer dot products (dp4a):
// converting every level to a float held the float kernel (quant.cu) to
// under half of HBM bandwidth, bound by instruction issue. Each block first
// rounds x to int8 per block of 32 elements, sx = max|x| / 127, into shared
// memory (the CPU's matvec does the same), then y[n] = Σ_chunks
// s·sx·(q · xq) + b·Σx, with Σx the float sum of the chunk's x. At 4 bits
// one mask takes a word's even nibbles and a shift and mask its odd ones,
// four levels a byte apart each, so x is stored in that order: each octet
// of x as its even elements, then its odd ones. With a norm weight, x is
// the input of an rms norm whose output the product takes, and every block
// normalizes x (a few KB, from L2) as it quantizes it. On an H200 (afo
// bench, prompt 512, same run) Llama-3.1-8B decode went 286.9 -> 345.5
// tok/s at 4 bits against the float kernel, and 8 bits 260 -> 298.5 against
// this kernel's earlier form (a block per few rows, which quantized x per
// block and loaded scales only when it used them).
#include "backends/cuda/quant_common.cuh"
#include "backends/cuda/warp.cuh"

using namespace afo_q;

namespace {


constexpr int kMaxWarps = 16, kStages = 4, kMaxTileRows = 16;

__device__ __forceinline__ int dot4_u8_s8(uint32_t levels, int x, int acc) {
    int r;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(levels), "r"(x), "r"(acc));
    return r;
}

__device__ __forceinline__ uint32_t pack4(int a, int b, int c, int d) {
    return (uint32_t)(a & 0xff) | (uint32_t)(b & 0xff) << 8 | (uint32_t)(c & 0xff) << 16 | (uint32_t)d << 24;
}

struct qmv_int_args {
    const uint32_t *w;
    const void *s, *b, *x;
    void *y;
    afo_cuda_addend add;
    const void *norm_weight; // NORM: the rms norm's weight, of x's dtype
    float eps;
    afo_dtype sdt;
    int gs;
    int64_t N, K, words;
};

template <typename XT> __device__ __forceinline__ void load_octet(const XT *p, float (&v)[8]) {
    afo_cuda::unpack<XT>(__ldg((const uint4 *)p), v);
}

// A 16-bit scale or bias from its bits.
__device__ __forceinline__ float half_to_f(uint32_t bits, afo_dtype dt) {
    return dt == AFO_BFLOAT16 ? __uint_as_float(bits << 16) : __half2float(__ushort_as_half((unsigned short)bits));
}

// The block's sum of squares of x, for the rms norm.
template <typename XT> __device__ float block_sum_squares(const XT *x, int octets) {
    __shared__ float red[kMaxWarps];
    float ss = 0.0f, v[8];
    for (int o = threadIdx.x; o < octets; o += blockDim.x) {
        load_octet(x + o * 8, v);
#pragma unroll
        for (int e = 0; e < 8; e++) ss += v[e] * v[e];
    }
    return afo_cuda::block_sum(ss, red);
}

// Eight consecutive elements of x rounded with the shared scale of their
// chunk (four threads, adjacent lanes, hold a chunk), stored as two words;
// with inv_rms, the rms norm's output as the norm kernel stores it instead.
// The first 16 bytes of every chunk come first, then the second ones, so
// that a warp reading a 16-byte half for 32 consecutive chunks reads 512
// consecutive bytes (whole chunks side by side: a 2-way bank conflict).
template <int BITS, typename XT>
__device__ __forceinline__ void quantize_octet(const qmv_int_args &a, int octet, bool valid, float inv_rms, int2 *xq,
                                               float2 *chunk, int chunks) {
    float v[8];
    if (valid) {
        load_octet((const XT *)a.x + octet * 8, v);
        if (a.norm_weight) {
            float nw[8];
            load_octet((const XT *)a.norm_weight + octet * 8, nw);
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = to_f(from_f<XT>(v[e] * inv_rms * nw[e]));
        }
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
    const float inv = amax > 0.0f ? __fdividef(127.0f, amax) : 0.0f; // sx below is what the sums use
    int q[8];
#pragma unroll
    for (int e = 0; e < 8; e++) q[e] = __float2int_rn(v[e] * inv);
    xq[(octet >> 1 & 1) * 2 * chunks + (octet >> 2) * 2 + (octet & 1)] = BITS == 4 ? make_int2((int)pack4(q[0], q[2], q[4], q[6]), (int)pack4(q[1], q[3], q[5], q[7]))
                          : make_int2((int)pack4(q[0], q[1], q[2], q[3]), (int)pack4(q[4], q[5], q[6], q[7]));
    if ((octet & 3) == 0) chunk[octet / 4] = make_float2(amax * (1.0f / 127.0f), sum);
}

// q · xq over chunk c of 32 levels (BITS / 4 loaded 16-byte pieces)
// against its 32 bytes of xq.
template <int BITS> __device__ __forceinline__ int chunk_dot(const uint4 (&w)[BITS / 4], const int4 *xq, int c, int chunks) {
    int d = 0;
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const int4 x = xq[c + p * chunks];
        if constexpr (BITS == 8) {
            d = dot4_u8_s8(w[p].x, x.x, d);
            d = dot4_u8_s8(w[p].y, x.y, d);
            d = dot4_u8_s8(w[p].z, x.z, d);
            d = dot4_u8_s8(w[p].w, x.w, d);
        } else {
            constexpr uint32_t low = 0x0f0f0f0fu;
            const uint32_t u = p ? w[0].z : w[0].x, v = p ? w[0].w : w[0].y;
            d = dot4_u8_s8(u & low, x.x, d);
            d = dot4_u8_s8(u >> 4 & low, x.y, d);
            d = dot4_u8_s8(v & low, x.z, d);
            d = dot4_u8_s8(v >> 4 & low, x.w, d);
        }
    }
    return d;
}

// Weights stream through shared memory: each block (one an SM) takes an
// even, contiguous share of the rows, in tiles of whole rows with their
// scales and biases, kStages tiles in flight as asynchronous copies
// (cp.async), which need no registers while in flight. Holding the next
// batch of levels in registers had capped what a warp kept in flight at one
// batch: a product streamed at about 3.2 TB/s once running, but took ~6 us
// more than that at any size (ramp, tail, round trips with nothing in
// flight), a fifth of an 8B step at 4 bits (bench_cuda_quant, H200).
// The copies of the first tiles go out before x is quantized, so that the
// quantization hides under their latency.
__device__ __forceinline__ void copy_async(void *dst, const void *src, int bytes16) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    if (bytes16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
    else asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void copies_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void copies_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// A tile: `rows` whole rows of packed words, then their scales, then their
// biases, each part 16-byte aligned. A row is split between warps / rows
// warps when the tile has fewer rows than the block has warps.
struct tile_plan {
    int rows, warps_per_row;
    size_t w_bytes, sb_bytes, bytes, smem;
};

__host__ __device__ inline size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

// Tiles of about target bytes: a multiple of `warps` rows where rows are
// small, else a power of two rows dividing `warps`.
inline tile_plan plan_tiles(int64_t K, int64_t words, int gs, size_t target, int warps) {
    const size_t row = (size_t)words * 4, sb_row = (size_t)(K / gs) * 2, per_row = row + 2 * sb_row;
    int rows = 1;
    if (per_row * warps <= target) rows = (int)(target / per_row / warps * warps);
    else
        while (rows < warps && per_row * rows * 2 <= target) rows *= 2;
    rows = rows < kMaxTileRows ? rows : kMaxTileRows;
    tile_plan p = {rows, rows >= warps ? 1 : warps / rows, row * rows, align16(sb_row * rows), 0, 0};
    p.bytes = p.w_bytes + 2 * p.sb_bytes;
    p.smem = align16((size_t)K + (size_t)(K / 32) * sizeof(float2)) + kStages * p.bytes;
    return p;
}

template <int BITS, typename XT, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, 1) qmv_int_kernel(qmv_int_args a, tile_plan tp) {
    extern __shared__ int4 smem[];
    // a tile's per-warp sums: row r's part p at r * warps_per_row + p
    __shared__ float partials[kStages][WARPS > kMaxTileRows ? WARPS : kMaxTileRows];
    constexpr int P = BITS / 4; // 16-byte pieces per chunk of 32 levels
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int chunks = (int)(a.K / 32), G = (int)(a.K / a.gs), group_shift = __ffs(a.gs / 32) - 1;
    const int64_t first = a.N * blockIdx.x / gridDim.x, end = a.N * (blockIdx.x + 1) / gridDim.x;
    const int block_rows = (int)(end - first), tiles = (block_rows + tp.rows - 1) / tp.rows;
    const int wpr = tp.warps_per_row, part = warp % wpr, first_row = warp / wpr, row_step = WARPS / wpr;
    int2 *xq = (int2 *)smem;
    float2 *chunk = (float2 *)((char *)smem + a.K);
    char *slots = (char *)smem + align16((size_t)a.K + (size_t)chunks * sizeof(float2));
    const char *w_src = (const char *)(a.w + first * a.words);
    const char *s_src = (const char *)a.s + first * G * 2, *b_src = (const char *)a.b + first * G * 2;
    const int row_bytes = (int)(a.words * 4), sb_row = G * 2;

    // Every group of copies is committed, empty past the last tile, so that
    // waiting for all but the kStages - 2 latest groups means tile t landed.
    auto fetch = [&](int t) {
        if (t < tiles) {
            const int r0 = t * tp.rows, rows = min(tp.rows, block_rows - r0);
            char *dst = slots + (size_t)(t % kStages) * tp.bytes;
            const char *w = w_src + (size_t)r0 * row_bytes, *sc = s_src + (size_t)r0 * sb_row,
                       *bi = b_src + (size_t)r0 * sb_row;
            for (int i = threadIdx.x; i < rows * row_bytes / 16; i += blockDim.x) copy_async(dst + 16 * i, w + 16 * i, 1);
            for (int i = threadIdx.x; i < rows * sb_row / 4; i += blockDim.x) {
                copy_async(dst + tp.w_bytes + 4 * i, sc + 4 * i, 0);
                copy_async(dst + tp.w_bytes + tp.sb_bytes + 4 * i, bi + 4 * i, 0);
            }
        }
        copies_commit();
    };
    // Tile t's results, once every warp is past the barrier that follows
    // their sums.
    auto store = [&](int t) {
        const int r = threadIdx.x, r0 = t * tp.rows;
        if (r < min(tp.rows, block_rows - r0)) {
            float v = 0.0f;
            for (int p = 0; p < wpr; p++) v += partials[t % kStages][r * wpr + p];
            const int64_t n = first + r0 + r;
            ((XT *)a.y)[n] = from_f<XT>(afo_cuda::plus_addend(v, a.add, n));
        }
    };

    for (int t = 0; t < kStages - 1; t++) fetch(t);
    // as the norm kernel computes it
    const float inv_rms = a.norm_weight ? 1.f / sqrtf(block_sum_squares((const XT *)a.x, chunks * 4) / (float)a.K + a.eps)
                                        : 1.0f;
    for (int base = 0; base < chunks * 4; base += blockDim.x) {
        const int o = base + threadIdx.x;
        quantize_octet<BITS, XT>(a, o, o < chunks * 4, inv_rms, xq, chunk, chunks);
    }

    for (int t = 0; t < tiles; t++) {
        copies_wait<kStages - 2>();
        __syncthreads(); // tile t is in, every warp is done with tile t - 1 (its slot is refilled next)
        if (t > 0) store(t - 1);
        fetch(t + kStages - 1);
        const char *slot = slots + (size_t)(t % kStages) * tp.bytes;
        const int rows = min(tp.rows, block_rows - t * tp.rows);
        for (int r = first_row; r < rows; r += row_step) {
            const uint4 *w = (const uint4 *)(slot + r * row_bytes);
            const uint16_t *sc = (const uint16_t *)(slot + tp.w_bytes) + r * G;
            const uint16_t *bi = (const uint16_t *)(slot + tp.w_bytes + tp.sb_bytes) + r * G;
            float acc = 0.0f;
#pragma unroll 4
            for (int c = part * 32 + lane; c < chunks; c += 32 * wpr) {
                uint4 levels[P];
#pragma unroll
                for (int k = 0; k < P; k++) levels[k] = w[c * P + k];
                const int d = chunk_dot<BITS>(levels, (const int4 *)xq, c, chunks);
                const float2 cx = chunk[c];
                const int g = c >> group_shift;
                acc += half_to_f(sc[g], a.sdt) * (cx.x * (float)d) + half_to_f(bi[g], a.sdt) * cx.y;
            }
            acc = afo_cuda::warp_sum(acc);
            if (lane == 0) partials[t % kStages][r * wpr + part] = acc;
        }
    }
    copies_wait<0>();
    __syncthreads();
    if (tiles > 0) store(tiles - 1);
}

int env_int(const char *name, int fallback) {
    const char *e = getenv(name);
    return e ? atoi(e) : fallback;
}

// Bytes a tile aims at: enough that kStages - 1 tiles in flight cover the
// memory's latency at full rate on one SM.
size_t tile_target() {
    static size_t target = 0;
    if (!target) target = (size_t)env_int("AFO_QMV_TILE_KB", 32) * 1024;
    return target;
}
int block_warps() {
    static int w = 0;
    if (!w) w = env_int("AFO_QMV_WARPS", 8);
    return w;
}

template <int BITS, typename XT, int WARPS> void launch(const qmv_int_args &a, cudaStream_t stream) {
    const tile_plan tp = plan_tiles(a.K, a.words, a.gs, tile_target(), WARPS);
    static size_t opted = 0; // shared memory past 48 KB is opted into per kernel
    if (tp.smem > opted) {
        cudaFuncSetAttribute(qmv_int_kernel<BITS, XT, WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)tp.smem);
        opted = tp.smem;
    }
    const int64_t most = afo_cuda_multiprocessors() * (int64_t)env_int("AFO_QMV_BPS", 1);
    qmv_int_kernel<BITS, XT, WARPS><<<(unsigned)(a.N < most ? a.N : most), WARPS * 32, tp.smem, stream>>>(a, tp);
}

template <int BITS, typename XT> void launch_warps(const qmv_int_args &a, cudaStream_t stream) {
    if (block_warps() == 16) launch<BITS, XT, 16>(a, stream);
    else launch<BITS, XT, 8>(a, stream);
}

template <typename XT> void launch_bits(const qmv_int_args &a, int bits, cudaStream_t stream) {
    if (bits == 4) launch_warps<4, XT>(a, stream);
    else launch_warps<8, XT>(a, stream);
}

} // namespace

extern "C" bool afo_cuda_qmv_int_applies(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, int64_t M) {
    const int64_t K = m->cols;
    // scales and biases are copied 4 bytes at a time: whole words per row
    return M == 1 && (m->bits == 8 || m->bits == 4) && (xdt == AFO_BFLOAT16 || xdt == AFO_FLOAT16) &&
           (m->sdt == AFO_BFLOAT16 || m->sdt == AFO_FLOAT16) && K % 32 == 0 && (K / m->gs) % 2 == 0 &&
           plan_tiles(K, m->words, m->gs, tile_target(), block_warps()).smem <= afo_cuda_shared_memory_optin() &&
           (uintptr_t)m->w % 16 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)m->s % 4 == 0 && (uintptr_t)m->b % 4 == 0;
}

extern "C" void afo_cuda_qmv_int(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, void *y, afo_cuda_addend add,
                                 const void *norm_weight, float eps, cudaStream_t stream) {
    const qmv_int_args a = {m->w, m->s, m->b, x, y, add, norm_weight, eps, m->sdt, m->gs, m->rows, m->cols, m->words};
    if (xdt == AFO_BFLOAT16) launch_bits<__nv_bfloat16>(a, m->bits, stream);
    else launch_bits<__half>(a, m->bits, stream);
}
