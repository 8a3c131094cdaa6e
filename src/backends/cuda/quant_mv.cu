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
// normalizes x (a few KB, from L2) as it quantizes it; with an up half, x
// is the gate of a swiglu, applied likewise (a decode step's down product,
// one kernel fewer a layer). On an H200 (afo
// bench, prompt 512, same run) Llama-3.1-8B decode went 286.9 -> 345.5
// tok/s at 4 bits against the float kernel, and 8 bits 260 -> 298.5 against
// this kernel's earlier form (a block per few rows, which quantized x per
// block and loaded scales only when it used them); storing x's chunks in
// halves that the lanes read without bank conflicts (chunk_dot) then took
// 4-bit from 340 to 359 tok/s.
#include "backends/cuda/quant_common.cuh"
#include "backends/cuda/warp.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/stream_load.cuh"

using namespace afo_q;

namespace {

// One block an SM: x is quantized once per SM. Each warp is a chain of
// dependent loads, dot products and sums (ncu on an 8B 4-bit step: issue
// slots 33-52% busy, DRAM 17-45%, most stalls waiting on fixed-latency
// results and shared memory), so more warps with smaller batches hide more
// of it: 20 warps of batches of 4 16-byte loads a lane (then at most 80
// registers; the even split below takes up to 96, which 640 threads still
// fit) against 12 of 8 read 8B 4-bit decode at 414.2, 407.1, 416.2 tok/s
// against 378.0, 379.5 (H200; 24 of 4: 392-401; 16 of 6: 400-403; 32 of 4
// spill), 8-bit 316.6 against 310.1, TinyLlama 4-bit 979 against 910.
constexpr int kWarps = 20, kBatch = 4, kBlocksPerSM = 1;

__device__ __forceinline__ uint32_t pack4(int a, int b, int c, int d) {
    return (uint32_t)(a & 0xff) | (uint32_t)(b & 0xff) << 8 | (uint32_t)(c & 0xff) << 16 | (uint32_t)d << 24;
}

// A weight load: streamed at 4 bits (stream_load.cuh), through the
// read-only cache at 8.
template <int BITS, typename T> __device__ __forceinline__ T ld_weights(const T *p, uint64_t policy) {
    if constexpr (BITS == 4) return afo_cuda::load_streamed(p, policy);
    else return __ldg(p);
}

struct qmv_int_args {
    const uint32_t *w;
    const void *s, *b, *x;
    void *y;
    afo_cuda_addend add;
    const void *norm_weight, *up; // see afo_cuda_qmv_input
    float eps;
    afo_dtype sdt;
    int gs;
    int64_t N, K, words;
};

// A 16-bit scale or bias from its bits.
__device__ __forceinline__ float half_to_f(uint32_t bits, afo_dtype dt) {
    return dt == AFO_BFLOAT16 ? __uint_as_float(bits << 16) : __half2float(__ushort_as_half((unsigned short)bits));
}

// x's octets a thread loads at once in quantize_x (XO): all of K up to 4 a
// thread; 0 past that (loaded round by round).
int x_octets_per_thread(int64_t K, int threads) {
    const int64_t per = (K / 8 + threads - 1) / threads;
    return per <= 4 ? (int)per : 0;
}

// Whether a thread loads its octets of the norm weight before the wait
// (see quantize_x), and the size of the array that holds them (one at
// least, for the others).
template <int XO> constexpr bool kNormEarly = XO >= 1 && XO <= 2;
template <int XO> constexpr int kNormEarlySize = kNormEarly<XO> ? XO : 1;

// Eight consecutive elements of x (v: already normalized or through swiglu)
// rounded with the shared scale of their chunk (four threads, adjacent
// lanes, hold a chunk), stored as two words. Every lane of the warp calls
// it (shuffles), `valid` false for those past the end.
template <int BITS>
__device__ __forceinline__ void quantize_octet(float (&v)[8], int octet, bool valid, int2 *xq, float2 *chunk,
                                               int chunks) {
    if (!valid) {
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
    const int slot = ((octet >> 1 & 1) * chunks + octet / 4) * 2 + (octet & 1); // see chunk_dot
    xq[slot] = BITS == 4 ? make_int2((int)pack4(q[0], q[2], q[4], q[6]), (int)pack4(q[1], q[3], q[5], q[7]))
                         : make_int2((int)pack4(q[0], q[1], q[2], q[3]), (int)pack4(q[4], q[5], q[6], q[7]));
    if ((octet & 3) == 0) chunk[octet / 4] = make_float2(amax * (1.0f / 127.0f), sum);
}

// An octet of x as the product takes it: with a norm weight (its octet in
// side) the rms norm's output, with an up half swiglu's, as their kernels
// store them (swiglu_of, the elementwise kernel's formula), so the bits
// match.
template <typename XT>
__device__ __forceinline__ void input_octet(const qmv_int_args &a, uint4 raw, uint4 side, float inv_rms, float (&v)[8]) {
    afo_cuda::unpack<XT>(raw, v);
    float s[8];
    if (a.norm_weight) {
        afo_cuda::unpack<XT>(side, s);
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = to_f(from_f<XT>(v[e] * inv_rms * s[e]));
    } else if (a.up) {
        afo_cuda::unpack<XT>(side, s);
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = to_f(from_f<XT>(afo_cuda::swiglu_of(v[e], s[e])));
    }
}

// One octet of x's squares added to ss, in the order the norm sums them
// (v: the caller's scratch for the unpacked octet).
template <typename XT> __device__ __forceinline__ void add_squares(uint4 raw, float (&v)[8], float &ss) {
    afo_cuda::unpack<XT>(raw, v);
#pragma unroll
    for (int e = 0; e < 8; e++) ss += v[e] * v[e];
}

// The rms norm's 1 / rms from each thread's sum of squares of x.
__device__ __forceinline__ float inv_rms_of(const qmv_int_args &a, float ss, float *red) {
    return 1.f / sqrtf(afo_cuda::block_sum(ss, red) / (float)a.K + a.eps);
}

// Every thread of the block: x quantized into shared memory, ready to read.
// With XO > 0 a thread's octets (o = thread + i * blockDim.x) and their
// norm weights or up halves are all requested at once, one round trip
// instead of one per step (up to 2 octets a thread, the norm's weights,
// settled, came before the wait for the kernel before, in nw: more held
// across the wait spilled); the norm's sum of squares is then
// taken from registers. XO 0: longer rows, an octet a thread a round, x
// read twice with a norm. Either way each thread sums its squares in the
// same order, so the norm is the same float.
template <int BITS, typename XT, int XO>
__device__ __forceinline__ void quantize_x(const qmv_int_args &a, const uint4 (&nw)[kNormEarlySize<XO>], int2 *xq,
                                           float2 *chunk, int chunks) {
    __shared__ float red[kWarps];
    constexpr bool kHeld = XO > 0;
    constexpr int R = kHeld ? XO : 1; // octets a thread holds at once
    const int octets = chunks * 4, step = blockDim.x;
    const uint4 *x = (const uint4 *)a.x, *up = (const uint4 *)a.up, *w = (const uint4 *)a.norm_weight;
    float v[8];
    uint4 raw[R], side[R];
    auto load = [&](int base) { // the thread's octets of the round from octet `base`
#pragma unroll
        for (int i = 0; i < R; i++) {
            const int o = base + threadIdx.x + i * step;
            if (o < octets) {
                raw[i] = __ldg(x + o);
                side[i] = uint4{};
                if (a.up) side[i] = __ldg(up + o);
                else if (a.norm_weight) {
                    if constexpr (kNormEarly<XO>) side[i] = nw[i];
                    else side[i] = __ldg(w + o);
                }
            }
        }
    };
    if constexpr (kHeld) load(0);
    float inv_rms = 1.0f;
    if (a.norm_weight) {
        float ss = 0.0f;
        if constexpr (kHeld) {
#pragma unroll
            for (int i = 0; i < R; i++) {
                if (threadIdx.x + i * step >= octets) break;
                add_squares<XT>(raw[i], v, ss);
            }
        } else {
            for (int o = threadIdx.x; o < octets; o += step) add_squares<XT>(__ldg(x + o), v, ss);
        }
        inv_rms = inv_rms_of(a, ss, red);
    }
    auto quantize_round = [&](int base) {
#pragma unroll
        for (int i = 0; i < R; i++) {
            const int o = base + threadIdx.x + i * step;
            if (base + i * step >= octets) break; // the whole block leaves together (shuffles)
            if (o < octets) input_octet<XT>(a, raw[i], side[i], inv_rms, v);
            quantize_octet<BITS>(v, o, o < octets, xq, chunk, chunks);
        }
    };
    if constexpr (kHeld) quantize_round(0);
    else
        for (int base = 0; base < octets; base += step) load(base), quantize_round(base);
    __syncthreads();
}

// q · xq over one chunk of 32 levels (BITS / 4 loaded 16-byte pieces)
// against its 32 bytes of xq: xq holds every chunk's first 16 bytes, then
// every chunk's last 16 (`chunks` further), so that the lanes of a warp,
// a chunk each, read consecutive words of shared memory (32 bytes a lane
// had cost a second wavefront per load: ncu counted 459k bank conflicts in
// a 14336x4096 product).
template <int BITS> __device__ __forceinline__ int chunk_dot(const uint4 (&w)[BITS / 4], const int4 *xq, int chunks) {
    int d[2] = {0, 0}; // the halves' chains apart: half the dependent steps
    const int4 xs[2] = {xq[0], xq[chunks]};
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const int4 x = xs[p];
        if constexpr (BITS == 8) {
            d[p] = dot4_u8_s8(w[p].x, x.x, d[p]);
            d[p] = dot4_u8_s8(w[p].y, x.y, d[p]);
            d[p] = dot4_u8_s8(w[p].z, x.z, d[p]);
            d[p] = dot4_u8_s8(w[p].w, x.w, d[p]);
        } else {
            constexpr uint32_t low = 0x0f0f0f0fu;
            const uint32_t u = p ? w[0].z : w[0].x, v = p ? w[0].w : w[0].y;
            d[p] = dot4_u8_s8(u & low, x.x, d[p]);
            d[p] = dot4_u8_s8(u >> 4 & low, x.y, d[p]);
            d[p] = dot4_u8_s8(v & low, x.z, d[p]);
            d[p] = dot4_u8_s8(v >> 4 & low, x.w, d[p]);
        }
    }
    return d[0] + d[1];
}

// Where a warp's fetches are: the first chunk of the step's 32 (each lane
// adds its own offset) in the levels, scales and biases, and with rows of
// a partial last step, the step j within the row.
struct cursor {
    const uint4 *w;
    const uint16_t *s, *b;
    int j;
};

// Each block takes a contiguous run of rows, and its warps split the run's
// steps (rows x steps a row) evenly, a warp's share crossing rows where it
// falls so; a warp sums each row's part it holds into the block's row sums
// in shared memory. Rows whole to a warp, dealt round by round, had left up
// to half of the warps idle in the last round at N = 4096 (1.55 rows a
// warp). With at least kWarps rows a block every share spans a row's steps,
// so at most two parts meet in a row's sum, in either order the same float
// (0 + a + b): results do not vary between runs. A batch is the next kBatch
// 16-byte loads of the warp's steps, in flight while it works on the one
// before, across rows too; the first batch goes out before the wait for
// the kernel before (weights are settled: launch) and before x is quantized, so
// that both hide under its latency. With the early launch, against whole
// rows and none (H200, bench_cuda_quant, same run): 4-bit 4096x4096
// 1253 -> 1588 GB/s, 14336x4096 2384 -> 2705, 4096x14336 2164 -> 2526;
// 8-bit 1970 -> 2451, 3008 -> 3201, 2753 -> 3086 (the split alone, without
// the early launch, was 5-10% slower than whole rows: the early launch is
// what pays). Llama-3.1-8B decode: 4-bit 403.3, 409.8 -> 412.9, 417.4
// tok/s, 8-bit 311.9 -> 319.9.
template <int BITS, typename XT, bool FULL, int XO>
__global__ void __launch_bounds__(kWarps * 32, kBlocksPerSM) qmv_int_kernel(qmv_int_args a) {
    extern __shared__ int4 smem[];
    constexpr int P = BITS / 4;   // 16-byte pieces per chunk
    constexpr int B = kBatch / P; // steps per batch
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int chunks = (int)(a.K / 32), spr = (chunks + 31) / 32, group_shift = __ffs(a.gs / 32) - 1;
    const int64_t G = a.K / a.gs, r0 = a.N * blockIdx.x / gridDim.x, rows = a.N * (blockIdx.x + 1) / gridDim.x - r0;
    int64_t t0 = 0, t1 = 0; // the warp's steps
    if (rows >= kWarps) t0 = rows * spr * warp / kWarps, t1 = rows * spr * (warp + 1) / kWarps;
    else if (warp < rows) t0 = (int64_t)warp * spr, t1 = t0 + spr;
    int2 *xq = (int2 *)smem;
    float2 *chunk = (float2 *)((char *)smem + a.K);
    float *row_sum = (float *)(chunk + chunks);

    // A chunk's scale and bias travel with its levels: loaded when the
    // batch was used, they cost a round trip to memory per batch, most of
    // the warps' waiting (ncu). Joined into one word as they arrived, they
    // were waited for right away. A step moves the cursor by 32 chunks;
    // when the rows' chunks fill whole steps (FULL) the run's steps lie
    // back to back, so that is all a step costs, otherwise the end of a
    // row takes the cursor back over the last step's missing chunks.
    const int64_t first = r0 + t0 / spr;
    const int j0 = (int)(t0 % spr), short_by = spr * 32 - chunks; // chunks the last step of a row lacks
    const int lane_w = lane * P, lane_s = lane >> group_shift;
    cursor in = {(const uint4 *)(a.w + first * a.words) + j0 * 32 * P,
                 (const uint16_t *)a.s + first * G + ((j0 * 32) >> group_shift),
                 (const uint16_t *)a.b + first * G + ((j0 * 32) >> group_shift), j0};
    uint4 next[B][P];
    uint32_t next_s[B], next_b[B];
    const uint64_t policy = BITS == 4 ? afo_cuda::evict_first_policy() : 0;
    auto fetch = [&](int64_t left) { // the next B steps, of `left` left
#pragma unroll
        for (int b = 0; b < B; b++) {
            if (b < left && (FULL || in.j * 32 + lane < chunks)) {
#pragma unroll
                for (int k = 0; k < P; k++) next[b][k] = ld_weights<BITS>(in.w + lane_w + k, policy);
                next_s[b] = ld_weights<BITS>(in.s + lane_s, policy);
                next_b[b] = ld_weights<BITS>(in.b + lane_s, policy);
            }
            in.w += 32 * P, in.s += 32 >> group_shift, in.b += 32 >> group_shift;
            if (!FULL && ++in.j == spr)
                in.j = 0, in.w -= short_by * P, in.s -= short_by >> group_shift, in.b -= short_by >> group_shift;
        }
    };
    afo_cuda::let_next_start();
    fetch(t1 - t0);
    uint4 nw[kNormEarlySize<XO>];
#pragma unroll
    for (int i = 0; i < (kNormEarly<XO> ? XO : 0); i++) {
        const int o = threadIdx.x + i * blockDim.x;
        if (a.norm_weight && o < chunks * 4) nw[i] = __ldg((const uint4 *)a.norm_weight + o);
    }
    for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) row_sum[i] = 0.0f;
    afo_cuda::wait_prior_grid(); // x, y and the addend are the kernels before's
    quantize_x<BITS, XT, XO>(a, nw, xq, chunk, chunks);

    int64_t row = t0 / spr, acc_row = row;
    int c = j0 * 32 + lane; // the lane's chunk in the row
    float acc = 0.0f;
    auto flush = [&]() {
        const float v = afo_cuda::warp_sum(acc);
        if (lane == 0) atomicAdd(row_sum + acc_row, v);
    };
    for (int64_t t = t0; t < t1; t += B) {
        uint4 cur[B][P];
        uint32_t cur_s[B], cur_b[B];
#pragma unroll
        for (int b = 0; b < B; b++) {
#pragma unroll
            for (int k = 0; k < P; k++) cur[b][k] = next[b][k];
            cur_s[b] = next_s[b], cur_b[b] = next_b[b];
        }
        fetch(t1 - t - B);
#pragma unroll
        for (int b = 0; b < B; b++) {
            if (t + b >= t1) break;
            if (row != acc_row) flush(), acc = 0.0f, acc_row = row;
            if (FULL || c < chunks) {
                const int d = chunk_dot<BITS>(cur[b], (const int4 *)xq + c, chunks);
                const float2 cx = chunk[c];
                acc += half_to_f(cur_s[b], a.sdt) * (cx.x * (float)d) + half_to_f(cur_b[b], a.sdt) * cx.y;
            }
            c += 32;
            if (c >= spr * 32) c = lane, row++;
        }
    }
    if (t1 > t0) flush();
    __syncthreads();
    for (int64_t i = threadIdx.x; i < rows; i += blockDim.x)
        ((XT *)a.y)[r0 + i] = from_f<XT>(afo_cuda::plus_addend(row_sum[i], a.add, r0 + i));
}

// Blocks: one an SM, each with at least kWarps rows where there are as many.
int64_t grid_of(int64_t N) {
    const int64_t most = (int64_t)afo_cuda_multiprocessors() * kBlocksPerSM, even = N / kWarps;
    return even < 1 ? 1 : even < most ? even : most;
}

// x's levels and chunk scales and sums, then the block's row sums.
size_t smem_of(int64_t N, int64_t K) {
    const int64_t grid = grid_of(N), rows = (N + grid - 1) / grid;
    return (size_t)K + (size_t)(K / 32) * sizeof(float2) + (size_t)rows * sizeof(float);
}

template <int BITS, typename XT, bool FULL> auto kernel_of(int xo) {
    return xo == 1   ? qmv_int_kernel<BITS, XT, FULL, 1>
           : xo == 2 ? qmv_int_kernel<BITS, XT, FULL, 2>
           : xo == 3 ? qmv_int_kernel<BITS, XT, FULL, 3>
           : xo == 4 ? qmv_int_kernel<BITS, XT, FULL, 4>
                     : qmv_int_kernel<BITS, XT, FULL, 0>;
}

// early: the weights and the norm weight, read before the wait, are
// settled (otherwise the kernel before may still be writing them).
template <int BITS, typename XT> void launch(const qmv_int_args &a, bool early, cudaStream_t stream) {
    const int xo = x_octets_per_thread(a.K, kWarps * 32);
    auto kernel = a.K % 1024 == 0 ? kernel_of<BITS, XT, true>(xo) : kernel_of<BITS, XT, false>(xo);
    afo_cuda::launch_early_if(early, kernel, dim3((unsigned)grid_of(a.N)), dim3(kWarps * 32), smem_of(a.N, a.K),
                              stream, a);
}

template <typename XT> void launch_bits(const qmv_int_args &a, int bits, bool early, cudaStream_t stream) {
    if (bits == 4) launch<4, XT>(a, early, stream);
    else launch<8, XT>(a, early, stream);
}

} // namespace

extern "C" bool afo_cuda_qmv_int_applies(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, int64_t M) {
    const int64_t K = m->cols;
    return M == 1 && (m->bits == 8 || m->bits == 4) && (xdt == AFO_BFLOAT16 || xdt == AFO_FLOAT16) &&
           (m->sdt == AFO_BFLOAT16 || m->sdt == AFO_FLOAT16) && K % 32 == 0 &&
           smem_of(m->rows, K) <= 48 * 1024 && (uintptr_t)m->w % 16 == 0 && (uintptr_t)x % 16 == 0;
}

extern "C" void afo_cuda_qmv_int(const afo_cuda_qmat *m, const afo_cuda_qmv_input *x, afo_dtype xdt, void *y,
                                 afo_cuda_addend add, cudaStream_t stream) {
    const qmv_int_args a = {m->w,   m->s,   m->b,  x->x,    y,       add,     x->norm_weight, x->up,
                            x->eps, m->sdt, m->gs, m->rows, m->cols, m->words};
    const bool early = m->settled && (!x->norm_weight || x->norm_weight_settled);
    if (xdt == AFO_BFLOAT16) launch_bits<__nv_bfloat16>(a, m->bits, early, stream);
    else launch_bits<__half>(a, m->bits, early, stream);
}
