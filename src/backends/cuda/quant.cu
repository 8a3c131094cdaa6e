// Quantize, dequantize (and row gather), and the decode matvec of quantized
// matmul. Quantize and dequantize follow the CPU reference operation by
// operation in float32 (IEEE division, rint = round-half-even, no fused
// multiply-add), so their results are bit-exact with it.
#include "backends/cuda/quant_common.cuh"
#include "backends/cuda/warp.cuh"

using namespace afo_q;

namespace {

constexpr unsigned FULL = 0xffffffffu;

// ---------------------------------------------------------------- quantize

// One warp per group: min and max by shuffles (order-free, so equal to the
// CPU's sequential scan; NaNs are skipped by both), the parameters by the
// CPU's formula, then each 32-element chunk packed into `bits` words, word l
// assembled by lane l from the levels of all lanes.
__global__ void quantize_kernel(const void *w, afo_dtype wdt, int64_t ngroups, int gs, int bits, int part, void *out,
                                afo_dtype odt) {
    const int lane = threadIdx.x & 31;
    const int64_t g = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (g >= ngroups) return;
    const int per = gs / 32;
    float v[4];
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < per; j++) {
        v[j] = load_f(w, g * gs + j * 32 + lane, wdt);
        lo = v[j] < lo ? v[j] : lo;
        hi = v[j] > hi ? v[j] : hi;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float a = __shfl_xor_sync(FULL, lo, o), b = __shfl_xor_sync(FULL, hi, o);
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
    }
    const float n = (float)((1 << bits) - 1);
    float s = fmaxf(__fdiv_rn(hi - lo, n), 1e-7f);
    const bool neg = fabsf(lo) > fabsf(hi);
    const float edge = neg ? lo : hi;
    if (!neg) s = -s;
    const float q0 = rintf(__fdiv_rn(edge, s));
    float b = 0.0f;
    if (q0 != 0.0f) {
        s = __fdiv_rn(edge, q0);
        b = edge;
    }
    if (part != 0) {
        if (lane == 0) store_f(out, g, odt, part == 1 ? s : b);
        return;
    }
    uint32_t *words = (uint32_t *)out;
    for (int j = 0; j < per; j++) {
        const uint32_t q = (uint32_t)fminf(fmaxf(rintf(__fdiv_rn(v[j] - b, s)), 0.0f), n);
        uint32_t word = 0;
        for (int e = 0; e < 32; e++) {
            const uint32_t qe = __shfl_sync(FULL, q, e);
            const int bit = e * bits - 32 * lane; // element e's first bit within word `lane`
            if (bit >= 0 && bit < 32) word |= qe << bit;
            else if (bit < 0 && bit + bits > 0) word |= qe >> -bit;
        }
        if (lane < bits) words[(g * per + j) * bits + lane] = word;
    }
}

// ---------------------------------------------------------------- dequantize

__device__ __forceinline__ uint32_t level_at(const uint32_t *row, int64_t c, int bits) {
    const int64_t bit = c * bits;
    const int off = (int)(bit & 31);
    uint32_t v = row[bit >> 5] >> off;
    if (off + bits > 32) v |= row[(bit >> 5) + 1] << (32 - off);
    return v & ((1u << bits) - 1);
}

__device__ __forceinline__ int64_t index_at(const void *idx, afo_dtype dt, int64_t i) {
    switch (dt) {
    case AFO_INT32: return ((const int32_t *)idx)[i];
    case AFO_UINT32: return ((const uint32_t *)idx)[i];
    default: return ((const int64_t *)idx)[i];
    }
}

// Eight consecutive outputs per thread (a row's length is a multiple of 32,
// so the eight share a row and a group), stored 16 bytes at a time when the
// output is 16-byte aligned: one thread per element with 2-byte stores made
// dequantizing most of the GPU's 4-bit prefill. s*q and + b are rounded
// separately, as the CPU (built without FMA contraction there) computes them.
__global__ void dequantize_kernel(afo_cuda_qmat m, const void *idx, afo_dtype idt, int64_t octets, void *out,
                                  afo_dtype odt, bool vector) {
    const int64_t G = m.cols / m.gs;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < octets; o += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = o * 8, r = i / m.cols, c = i % m.cols;
        int64_t row = r;
        bool valid = true;
        if (idx) {
            row = index_at(idx, idt, r);
            if (row < 0) row += m.rows;
            valid = row >= 0 && row < m.rows;
        }
        float v[8];
        if (valid) {
            const uint32_t *w = m.w + row * m.words;
            const float s = load_f(m.s, row * G + c / m.gs, m.sdt), b = load_f(m.b, row * G + c / m.gs, m.sdt);
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = __fadd_rn(__fmul_rn(s, (float)level_at(w, c + e, m.bits)), b);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = __int_as_float(0x7fc00000);
        }
        if (!vector) {
#pragma unroll
            for (int e = 0; e < 8; e++) store_f(out, i + e, odt, v[e]);
        } else if (odt == AFO_FLOAT32) {
            float4 *p = (float4 *)((float *)out + i);
            p[0] = make_float4(v[0], v[1], v[2], v[3]);
            p[1] = make_float4(v[4], v[5], v[6], v[7]);
        } else {
            uint32_t h[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                uint16_t lo = odt == AFO_BFLOAT16 ? bf16_bits(v[2 * e]) : f16_bits(v[2 * e]);
                uint16_t hi = odt == AFO_BFLOAT16 ? bf16_bits(v[2 * e + 1]) : f16_bits(v[2 * e + 1]);
                h[e] = (uint32_t)lo | (uint32_t)hi << 16;
            }
            *(uint4 *)((uint16_t *)out + i) = make_uint4(h[0], h[1], h[2], h[3]);
        }
    }
}

// ---------------------------------------------------------------- decode matvec

// A block of QMV_THREADS computes QMV_ROWS outputs per row group; the
// threads of a group split K: thread t takes the 32-element chunks t, t+tpr,
// ... of its rows (one chunk = BITS words, inside one group), so each load
// is a 16-byte piece and a group has QMV_ROWS * tpr of them in flight. Short
// rows (K < 4096 at 4 bits) get several row groups per block, so that no
// thread idles. Partial sums meet through shuffles and shared memory.
constexpr int QMV_ROWS = 4, QMV_THREADS = 128, QMV_MAX_M = 8;

struct qmv_args {
    const uint32_t *w;
    const void *s, *b, *x;
    void *y;
    afo_cuda_addend add;
    afo_dtype sdt;
    int gs, M, tpr; // tpr: threads per row group (32, 64 or 128)
    int64_t N, K, words;
};

template <int BITS> __device__ __forceinline__ void load_chunk(const uint32_t *p, uint32_t (&w)[BITS]) {
    if constexpr (BITS % 4 == 0) {
#pragma unroll
        for (int i = 0; i < BITS / 4; i++) {
            const uint4 v = __ldg((const uint4 *)p + i);
            w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
        }
    } else if constexpr (BITS % 2 == 0) {
#pragma unroll
        for (int i = 0; i < BITS / 2; i++) {
            const uint2 v = __ldg((const uint2 *)p + i);
            w[2 * i] = v.x, w[2 * i + 1] = v.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < BITS; i++) w[i] = __ldg(p + i);
    }
}

// Element e of a chunk as the float 1 + q/2^BITS: the level goes to the top
// of the mantissa of 1.0, which costs far less than an int-to-float
// conversion (the decode matvec is bound by instruction issue otherwise).
// q.x = 2^BITS * (f.x - x) summed over the chunk; the subtraction loses
// about 2 bits against converting q exactly. At 4 bits, two masks per word
// put every nibble, shifted and with the exponent's low bit, in a byte of
// its own, and one byte permute per element assembles the float.
template <int BITS> __device__ __forceinline__ float level1(const uint32_t (&w)[BITS], int e) {
    if constexpr (BITS == 4) {
        const uint32_t word = w[e / 8];
        const int j = e % 8;
        const uint32_t src = (j & 1 ? word >> 1 : word << 3) & 0x78787878u | 0x80808080u;
        return __uint_as_float(__byte_perm(src, 0x3f000000u, 0x7044u | (uint32_t)(j >> 1) << 8));
    } else {
        constexpr int target = 23 - BITS;
        const int bit = e * BITS, wi = bit / 32, off = bit % 32;
        uint32_t v;
        if (off + BITS <= 32) v = off >= target ? w[wi] >> (off - target) : w[wi] << (target - off);
        else v = ((w[wi] >> off) | (w[wi + 1] << (32 - off))) << target;
        return __uint_as_float((v & (((1u << BITS) - 1) << target)) | 0x3f800000u);
    }
}

template <typename XT> __device__ __forceinline__ void load8(const XT *p, float (&v)[8]) {
    if constexpr (sizeof(XT) == 4) {
        const float4 a = __ldg((const float4 *)p), b = __ldg((const float4 *)p + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
        const uint4 a = __ldg((const uint4 *)p);
        const XT *h = (const XT *)&a;
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = to_f(h[i]);
    }
}

template <int BITS, typename XT, int MM>
__global__ void __launch_bounds__(QMV_THREADS, MM == 1 ? 4 : 1) qmv_kernel(qmv_args a) {
    constexpr int R = QMV_ROWS;
    __shared__ float red[QMV_THREADS / 32][MM][R];
    const int tpr = a.tpr, grp = threadIdx.x / tpr, t = threadIdx.x % tpr, lane = threadIdx.x & 31;
    const int64_t n0 = ((int64_t)blockIdx.x * (QMV_THREADS / tpr) + grp) * R;
    const int64_t chunks = a.K / 32, G = a.K / a.gs;
    const int cpg = a.gs / 32;
    const XT *x = (const XT *)a.x;
    const uint32_t *wrow[R];
    int64_t srow[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int64_t n = n0 + r < a.N ? n0 + r : a.N - 1; // tail rows repeat the last; not stored
        if (n < 0) n = 0;
        wrow[r] = a.w + n * a.words;
        srow[r] = n * G;
    }
    float acc[MM][R] = {};
    for (int64_t c = t; n0 < a.N && c < chunks; c += tpr) {
        uint32_t w[R][BITS];
#pragma unroll
        for (int r = 0; r < R; r++) load_chunk<BITS>(wrow[r] + c * BITS, w[r]);
        float s[R], b[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            s[r] = load_f(a.s, srow[r] + c / cpg, a.sdt) * (float)(1 << BITS);
            b[r] = load_f(a.b, srow[r] + c / cpg, a.sdt);
        }
        float dot[MM][R] = {}, sx[MM] = {};
#pragma unroll
        for (int eb = 0; eb < 4; eb++) {
            float xv[MM][8];
#pragma unroll
            for (int m = 0; m < MM; m++) {
                if (m < a.M) load8<XT>(x + m * a.K + c * 32 + eb * 8, xv[m]);
                else
#pragma unroll
                    for (int e = 0; e < 8; e++) xv[m][e] = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; e++) sx[m] += xv[m][e];
            }
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    const float f = level1<BITS>(w[r], eb * 8 + e);
#pragma unroll
                    for (int m = 0; m < MM; m++) dot[m][r] = fmaf(f, xv[m][e], dot[m][r]);
                }
        }
#pragma unroll
        for (int m = 0; m < MM; m++)
#pragma unroll
            for (int r = 0; r < R; r++) acc[m][r] += s[r] * (dot[m][r] - sx[m]) + b[r] * sx[m];
    }
#pragma unroll
    for (int m = 0; m < MM; m++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            float v = afo_cuda::warp_sum(acc[m][r]);
            if (lane == 0) red[threadIdx.x / 32][m][r] = v;
        }
    __syncthreads();
    // thread t < MM*R of each group sums its group's warps for one output
    const int m = t / R, r = t % R, wpg = tpr / 32;
    if (t < MM * R && m < a.M && n0 + r < a.N) {
        float v = 0.0f;
        for (int i = 0; i < wpg; i++) v += red[grp * wpg + i][m][r];
        ((XT *)a.y)[m * a.N + n0 + r] = from_f<XT>(afo_cuda::plus_addend(v, a.add, m * a.N + n0 + r));
    }
}

template <int BITS, typename XT> void qmv_launch(qmv_args a, cudaStream_t stream) {
    const int64_t chunks = a.K / 32;
    a.tpr = chunks >= 128 ? 128 : chunks >= 64 ? 64 : 32;
    const int64_t rows_per_block = (int64_t)QMV_ROWS * (QMV_THREADS / a.tpr);
    const unsigned blocks = (unsigned)((a.N + rows_per_block - 1) / rows_per_block);
    if (a.M == 1) qmv_kernel<BITS, XT, 1><<<blocks, QMV_THREADS, 0, stream>>>(a);
    else qmv_kernel<BITS, XT, QMV_MAX_M><<<blocks, QMV_THREADS, 0, stream>>>(a);
}

template <typename XT> void qmv_bits(const qmv_args &a, int bits, cudaStream_t stream) {
    switch (bits) {
    case 2: qmv_launch<2, XT>(a, stream); break;
    case 3: qmv_launch<3, XT>(a, stream); break;
    case 4: qmv_launch<4, XT>(a, stream); break;
    case 5: qmv_launch<5, XT>(a, stream); break;
    case 6: qmv_launch<6, XT>(a, stream); break;
    default: qmv_launch<8, XT>(a, stream); break;
    }
}

} // namespace

extern "C" void afo_cuda_quantize(const void *w, afo_dtype wdt, int64_t rows, int64_t cols, int gs, int bits, int part,
                                  void *out, afo_dtype odt, cudaStream_t stream) {
    const int64_t ngroups = rows * (cols / gs);
    if (ngroups == 0) return;
    const int warps = 8;
    quantize_kernel<<<(unsigned)((ngroups + warps - 1) / warps), warps * 32, 0, stream>>>(w, wdt, ngroups, gs, bits, part,
                                                                                           out, odt);
}

extern "C" void afo_cuda_dequantize(const afo_cuda_qmat *m, const void *idx, afo_dtype idt, int64_t n, void *out,
                                    afo_dtype odt, cudaStream_t stream) {
    const int64_t octets = n * m->cols / 8;
    if (octets == 0) return;
    int64_t blocks = (octets + 255) / 256;
    if (blocks > 65535 * 8) blocks = 65535 * 8;
    dequantize_kernel<<<(unsigned)blocks, 256, 0, stream>>>(*m, idx, idt, octets, out, odt, (uintptr_t)out % 16 == 0);
}

extern "C" bool afo_cuda_quantized_matmul(const afo_cuda_qmat *m, const void *x, afo_dtype xdt, int64_t M, int transpose,
                                          void *y, afo_cuda_addend add, cudaStream_t stream) {
    const int64_t K = transpose ? m->cols : m->rows, N = transpose ? m->rows : m->cols;
    // decode reads the weights once for up to QMV_MAX_M rows of x; past
    // that, and for x @ w (groups along the output axis), tiles win
    const bool tiled = !transpose || M > QMV_MAX_M;
    if (tiled && add.data) return false;
    if (M == 0 || N == 0) return true;
    if (tiled) {
        afo_cuda_qmm_tiled(m, x, xdt, M, N, K, transpose, y, stream);
        return true;
    }
    if (transpose && afo_cuda_qmv_int_applies(m, x, xdt, M)) {
        const afo_cuda_qmv_input in = {x, NULL, NULL, 0.0f, false};
        afo_cuda_qmv_int(m, &in, xdt, y, add, stream);
        return true;
    }
    qmv_args a = {m->w, m->s, m->b, x, y, add, m->sdt, m->gs, (int)M, 0, N, K, m->words};
    switch (xdt) {
    case AFO_BFLOAT16: qmv_bits<__nv_bfloat16>(a, m->bits, stream); break;
    case AFO_FLOAT16: qmv_bits<__half>(a, m->bits, stream); break;
    default: qmv_bits<float>(a, m->bits, stream); break;
    }
    return true;
}
