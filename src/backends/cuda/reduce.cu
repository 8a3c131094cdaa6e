// Reductions and softmax. Floats accumulate in double and integers in int64
// (wrapping), as on the CPU, so sums differ from it only by order. A large
// reduction gets a block per output (threads stride over it, then warp
// shuffles and shared memory combine), or several when there are few
// outputs; many small ones get a thread each.
#include <math.h>
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/core_kernels.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/warp.cuh"

namespace {
using namespace afo_cuda;

// v: sum / extreme / running max; s: logsumexp's scaled sum; i: argmax's
// index (-1: none yet) or the integer accumulator; nan/inf: seen flags.
struct State {
    double v, s;
    int64_t i, iv;
    int nan, inf;
};

template <bool INT> __device__ State init(afo_op op) {
    State st = {0.0, 0.0, -1, 0, 0, 0};
    if (op == AFO_OP_MAX || op == AFO_OP_LOGSUMEXP) st.v = -INFINITY;
    if (op == AFO_OP_MIN) st.v = INFINITY;
    if (INT && op == AFO_OP_MAX) st.iv = INT64_MIN;
    if (INT && op == AFO_OP_MIN) st.iv = INT64_MAX;
    return st;
}

__device__ void push_f(afo_op op, State &st, double x, int64_t r) {
    if (x != x) {
        st.nan = 1;
        return;
    }
    switch (op) {
    case AFO_OP_SUM: st.v += x; break;
    case AFO_OP_MAX: st.v = x > st.v ? x : st.v; break;
    case AFO_OP_MIN: st.v = x < st.v ? x : st.v; break;
    case AFO_OP_ARGMAX:
        if (st.i < 0 || x > st.v) st.v = x, st.i = r;
        break;
    default: // logsumexp, online
        if (x == INFINITY) st.inf = 1;
        if (x > st.v) {
            st.s = isfinite(st.v) ? st.s * exp(st.v - x) : 0.0;
            st.v = x;
        }
        if (isfinite(st.v)) st.s += exp(x - st.v);
        break;
    }
}

__device__ void push_i(afo_op op, State &st, int64_t x, int64_t r) {
    switch (op) {
    case AFO_OP_SUM: st.iv = (int64_t)((uint64_t)st.iv + (uint64_t)x); break;
    case AFO_OP_MAX: st.iv = x > st.iv ? x : st.iv; break;
    case AFO_OP_MIN: st.iv = x < st.iv ? x : st.iv; break;
    default:
        if (st.i < 0 || x > st.iv) st.iv = x, st.i = r;
        break;
    }
}

// b's elements all follow or all precede a's; ties resolve by index, so the
// order of merging does not matter.
template <bool INT> __device__ State merge(afo_op op, State a, const State &b) {
    a.nan |= b.nan;
    a.inf |= b.inf;
    if (op == AFO_OP_ARGMAX) {
        if (b.i < 0) return a;
        bool take = a.i < 0;
        if (!take && INT) take = b.iv > a.iv || (b.iv == a.iv && b.i < a.i);
        if (!take && !INT) take = b.v > a.v || (b.v == a.v && b.i < a.i);
        if (take) a.v = b.v, a.iv = b.iv, a.i = b.i;
        return a;
    }
    if (INT) {
        if (op == AFO_OP_SUM) a.iv = (int64_t)((uint64_t)a.iv + (uint64_t)b.iv);
        else if (op == AFO_OP_MAX) a.iv = b.iv > a.iv ? b.iv : a.iv;
        else a.iv = b.iv < a.iv ? b.iv : a.iv;
        return a;
    }
    switch (op) {
    case AFO_OP_SUM: a.v += b.v; break;
    case AFO_OP_MAX: a.v = b.v > a.v ? b.v : a.v; break;
    case AFO_OP_MIN: a.v = b.v < a.v ? b.v : a.v; break;
    default: {
        double m = a.v > b.v ? a.v : b.v;
        if (isfinite(m)) a.s = (isfinite(a.v) ? a.s * exp(a.v - m) : 0.0) + (isfinite(b.v) ? b.s * exp(b.v - m) : 0.0);
        a.v = m;
    }
    }
    return a;
}

__device__ State shfl(State st, int lane) {
    State o;
    o.v = __shfl_xor_sync(0xffffffffu, st.v, lane);
    o.s = __shfl_xor_sync(0xffffffffu, st.s, lane);
    o.i = __shfl_xor_sync(0xffffffffu, st.i, lane);
    o.iv = __shfl_xor_sync(0xffffffffu, st.iv, lane);
    o.nan = __shfl_xor_sync(0xffffffffu, st.nan, lane);
    o.inf = __shfl_xor_sync(0xffffffffu, st.inf, lane);
    return o;
}

// st merged over the warp's 32 lanes (butterfly: every lane ends with it).
template <bool INT> __device__ State warp_merge(afo_op op, State st) {
    for (int k = 16; k > 0; k >>= 1) st = merge<INT>(op, st, shfl(st, k));
    return st;
}

__device__ int64_t keep_offset(const afo_cuda_reduce &r, int64_t o) {
    int64_t off = 0;
    for (int d = r.nkeep - 1; d >= 0; d--) {
        off += (o % r.keep_shape[d]) * r.keep_strides[d];
        o /= r.keep_shape[d];
    }
    return off;
}

__device__ int64_t red_offset(const afo_cuda_reduce &r, int64_t i) {
    if (r.nred == 1) return i * r.red_strides[0];
    int64_t off = 0;
    for (int d = r.nred - 1; d >= 0; d--) {
        off += (i % r.red_shape[d]) * r.red_strides[d];
        i /= r.red_shape[d];
    }
    return off;
}

template <bool INT> __device__ void push(const afo_cuda_reduce &r, State &st, int64_t base, int64_t i) {
    int64_t off = base + red_offset(r, i);
    if (INT) push_i(r.op, st, load_as<int64_t>(r.x, off, r.x_dtype), i);
    else push_f(r.op, st, load_as<double>(r.x, off, r.x_dtype), i);
}

template <bool INT> __device__ void finish(const afo_cuda_reduce &r, const State &st, int64_t base, int64_t o) {
    if (r.op == AFO_OP_ARGMAX) {
        // the CPU keeps a leading NaN (nothing compares above it) and skips
        // later ones
        int64_t idx = st.i < 0 ? 0 : st.i;
        if (!INT && load_as<double>(r.x, base, r.x_dtype) != load_as<double>(r.x, base, r.x_dtype)) idx = 0;
        store_from<int64_t>(r.out, o, r.out_dtype, idx);
    } else if (INT) {
        store_from<int64_t>(r.out, o, r.out_dtype, r.red_size ? st.iv : 0);
    } else if (r.op == AFO_OP_LOGSUMEXP) {
        double v = st.inf ? INFINITY : st.nan ? NAN : isfinite(st.v) ? st.v + log(st.s) : st.v;
        store_from<double>(r.out, o, r.out_dtype, v);
    } else {
        store_from<double>(r.out, o, r.out_dtype, st.nan ? NAN : st.v);
    }
}

template <bool INT> __global__ void reduce_per_thread(afo_cuda_reduce r) {
    afo_cuda::follow_prior_grid();
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < r.out_size;
         o += (int64_t)gridDim.x * blockDim.x) {
        int64_t base = keep_offset(r, o);
        State st = init<INT>(r.op);
        for (int64_t i = 0; i < r.red_size; i++) push<INT>(r, st, base, i);
        finish<INT>(r, st, base, o);
    }
}

// The state of elements [i0, i1) of one output, combined over the block;
// valid in thread 0. part: the block's shared scratch.
template <bool INT>
__device__ State block_reduce(const afo_cuda_reduce &r, int64_t base, int64_t i0, int64_t i1, State *part) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    State st = init<INT>(r.op);
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) push<INT>(r, st, base, i);
    st = warp_merge<INT>(r.op, st);
    if (lane == 0) part[warp] = st;
    __syncthreads();
    if (warp == 0) {
        st = lane < nwarps ? part[lane] : init<INT>(r.op);
        st = warp_merge<INT>(r.op, st);
    }
    __syncthreads(); // part is free for the next call
    return st;
}

template <bool INT> __global__ void reduce_per_block(afo_cuda_reduce r) {
    afo_cuda::follow_prior_grid();
    __shared__ State part[32];
    for (int64_t o = blockIdx.x; o < r.out_size; o += gridDim.x) {
        int64_t base = keep_offset(r, o);
        State st = block_reduce<INT>(r, base, 0, r.red_size, part);
        if (threadIdx.x == 0) finish<INT>(r, st, base, o);
    }
}

// A few long reductions (a decode step's argmax over the vocabulary): one
// block per output left all but one SM idle (64 us for 128256 logits on an
// H200, ncu). Here gridDim.x blocks share an output; each leaves its state
// in g_parts, and the last to finish (last_to_arrive, a counter per
// output) merges them. Chunks of 4096 elements took 20 us, of 1024
// 11 (125 blocks): a thread's loads wait for each other through push.
constexpr int SPLIT_PARTS = 4096, SPLIT_MIN_CHUNK = 1024, SPLIT_THREADS = 256;
__device__ State g_parts[SPLIT_PARTS];
__device__ unsigned int g_parts_done[SPLIT_PARTS]; // zero at load

__device__ State load_cg(const State *p) {
    State s;
    s.v = __ldcg(&p->v), s.s = __ldcg(&p->s), s.i = __ldcg((const long long *)&p->i);
    s.iv = __ldcg((const long long *)&p->iv), s.nan = __ldcg(&p->nan), s.inf = __ldcg(&p->inf);
    return s;
}

template <bool INT> __global__ void reduce_split(afo_cuda_reduce r) {
    afo_cuda::follow_prior_grid();
    __shared__ State part[32];
    const int64_t o = blockIdx.y, nsplit = gridDim.x, chunk = (r.red_size + nsplit - 1) / nsplit;
    const int64_t i0 = blockIdx.x * chunk, i1 = i0 + chunk < r.red_size ? i0 + chunk : r.red_size;
    const int64_t base = keep_offset(r, o);
    State st = block_reduce<INT>(r, base, i0, i1, part);
    if (threadIdx.x == 0) g_parts[o * nsplit + blockIdx.x] = st;
    if (!afo_cuda::last_to_arrive(&g_parts_done[o], (unsigned)nsplit) || threadIdx.x >= 32) return;
    st = init<INT>(r.op);
    for (int64_t s = threadIdx.x; s < nsplit; s += 32) st = merge<INT>(r.op, st, load_cg(&g_parts[o * nsplit + s]));
    st = warp_merge<INT>(r.op, st);
    if (threadIdx.x == 0) finish<INT>(r, st, base, o);
}

// Blocks per output for reduce_split: about two per SM in all, each with
// SPLIT_MIN_CHUNK elements or more; 1 where a block per output is better.
int64_t split_of(const afo_cuda_reduce *r) {
    if (r->out_size > 65535 || r->out_size * 2 > SPLIT_PARTS) return 1;
    int64_t n = 2 * (int64_t)afo_cuda_multiprocessors() / r->out_size, most = r->red_size / SPLIT_MIN_CHUNK;
    if (n > most) n = most;
    if (n * r->out_size > SPLIT_PARTS) n = SPLIT_PARTS / r->out_size;
    return n < 2 ? 1 : n;
}

// ---------------------------------------------------------------- softmax

template <typename T> __device__ T t_exp(T x);
template <> __device__ float t_exp<float>(float x) { return expf(x); }
template <> __device__ double t_exp<double>(double x) { return exp(x); }

template <typename T> __device__ void merge_ms(T &m, T &s, T m2, T s2) {
    T nm = m > m2 ? m : m2;
    if (nm == -INFINITY) return;
    s = (m == -INFINITY ? (T)0 : s * t_exp<T>(m - nm)) + (m2 == -INFINITY ? (T)0 : s2 * t_exp<T>(m2 - nm));
    m = nm;
}

template <typename T> __global__ void softmax_rows(afo_cuda_rows r) {
    afo_cuda::follow_prior_grid();
    __shared__ T pm[32], ps[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int64_t row = blockIdx.x; row < r.rows; row += gridDim.x) {
        int64_t base = 0, q = row;
        for (int d = r.nouter - 1; d >= 0; d--) {
            base += (q % r.outer_shape[d]) * r.outer_strides[d];
            q /= r.outer_shape[d];
        }
        T m = -INFINITY, s = 0;
        for (int64_t i = threadIdx.x; i < r.n; i += blockDim.x) merge_ms<T>(m, s, load_as<T>(r.x, base + i * r.stride, r.x_dtype), (T)1);
        for (int k = 16; k > 0; k >>= 1) merge_ms<T>(m, s, __shfl_xor_sync(0xffffffffu, m, k), __shfl_xor_sync(0xffffffffu, s, k));
        if (lane == 0) pm[warp] = m, ps[warp] = s;
        __syncthreads();
        m = lane < nwarps ? pm[lane] : -INFINITY;
        s = lane < nwarps ? ps[lane] : 0;
        for (int k = 16; k > 0; k >>= 1) merge_ms<T>(m, s, __shfl_xor_sync(0xffffffffu, m, k), __shfl_xor_sync(0xffffffffu, s, k));
        for (int64_t i = threadIdx.x; i < r.n; i += blockDim.x) {
            T v = t_exp<T>(load_as<T>(r.x, base + i * r.stride, r.x_dtype) - m) / s;
            store_from<T>(r.out, row * r.n + i, r.out_dtype, v);
        }
        __syncthreads();
    }
}

unsigned grid_of(int64_t n) { return (unsigned)(n < 65535 * 16 ? n : 65535 * 16); }

int block_for(int64_t n) { return n >= 65536 ? 1024 : n >= 4096 ? 512 : n >= 512 ? 256 : n >= 128 ? 128 : 32; }

} // namespace

extern "C" void afo_cuda_reduce_launch(const afo_cuda_reduce *r, cudaStream_t stream) {
    bool is_int = !(r->x_dtype == AFO_FLOAT16 || r->x_dtype == AFO_BFLOAT16 || r->x_dtype == AFO_FLOAT32 ||
                    r->x_dtype == AFO_FLOAT64 || r->op == AFO_OP_LOGSUMEXP);
    bool inner_contig = r->nred > 0 && r->red_strides[r->nred - 1] == 1;
    // a thread per output when reductions are short, or when neighbouring
    // outputs are neighbours in memory and the reduced axis is not
    bool per_thread = r->red_size <= 16 || (!inner_contig && r->out_size >= 1024);
    if (per_thread) {
        unsigned blocks = grid_of((r->out_size + 255) / 256);
        afo_cuda::launch_early(is_int ? reduce_per_thread<true> : reduce_per_thread<false>, dim3(blocks), dim3(256), 0,
                               stream, *r);
        return;
    }
    const int64_t nsplit = split_of(r);
    if (nsplit > 1) {
        const dim3 grid((unsigned)nsplit, (unsigned)r->out_size);
        afo_cuda::launch_early(is_int ? reduce_split<true> : reduce_split<false>, grid, dim3(SPLIT_THREADS), 0, stream,
                               *r);
        return;
    }
    int threads = block_for(r->red_size);
    afo_cuda::launch_early(is_int ? reduce_per_block<true> : reduce_per_block<false>, dim3(grid_of(r->out_size)),
                           dim3(threads), 0, stream, *r);
}

extern "C" void afo_cuda_softmax(const afo_cuda_rows *r, cudaStream_t stream) {
    int threads = block_for(r->n);
    afo_cuda::launch_early(r->out_dtype == AFO_FLOAT64 ? softmax_rows<double> : softmax_rows<float>,
                           dim3(grid_of(r->rows)), dim3(threads), 0, stream, *r);
}
