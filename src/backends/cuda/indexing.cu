// Gathers (take, take_along_axis), scatter_add and the sorts behind argsort
// and argtopk. Gathers move raw elements, so every dtype works unconverted.
// Sorting maps values to unsigned keys whose order is the CPU's (NaN above
// +inf, -0 == +0; descending complements them) and runs CUB's radix sort,
// which is stable, over (key, position) pairs: ties keep the lower position
// first, as on the CPU.
#include <cub/cub.cuh>
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/core_kernels.h"

namespace {
using namespace afo_cuda;

__device__ int64_t load_index(const void *p, int64_t i, afo_dtype dt) {
    switch (dt) {
    case AFO_INT32: return ((const int32_t *)p)[i];
    case AFO_INT64: return ((const int64_t *)p)[i];
    default: return load_as<int64_t>(p, i, dt);
    }
}

__device__ int64_t wrap_clamp(int64_t k, int64_t n) {
    if (k < 0) k += n;
    return k < 0 ? 0 : k >= n ? n - 1 : k;
}

__device__ void copy_elem(char *dst, const char *src, int es) {
    switch (es) {
    case 1: *dst = *src; break;
    case 2: *(uint16_t *)dst = *(const uint16_t *)src; break;
    case 4: *(uint32_t *)dst = *(const uint32_t *)src; break;
    default: *(uint64_t *)dst = *(const uint64_t *)src; break;
    }
}

__global__ void gather_elems(afo_cuda_gather g) {
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < g.size; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t xo = 0, io = 0, r = o;
        for (int d = g.ndim - 1; d >= 0; d--) {
            int64_t c = r % g.shape[d];
            r /= g.shape[d];
            xo += c * g.xs[d];
            io += c * g.is[d];
        }
        int64_t k = wrap_clamp(load_index(g.idx, io, g.idx_dtype), g.axis_size);
        copy_elem((char *)g.out + o * g.elem_size, (const char *)g.x + (xo + k * g.axis_stride) * g.elem_size,
                  g.elem_size);
    }
}

// One index per row of the last axis (embedding lookups): a block per row,
// 16-byte moves when the row is dense and aligned.
__global__ void gather_rows(afo_cuda_gather g) {
    int last = g.ndim - 1;
    int64_t n = g.shape[last], rows = g.size / n, xs = g.xs[last];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        int64_t xo = 0, io = 0, r = row;
        for (int d = last - 1; d >= 0; d--) {
            int64_t c = r % g.shape[d];
            r /= g.shape[d];
            xo += c * g.xs[d];
            io += c * g.is[d];
        }
        int64_t k = wrap_clamp(load_index(g.idx, io, g.idx_dtype), g.axis_size);
        const char *src = (const char *)g.x + (xo + k * g.axis_stride) * g.elem_size;
        char *dst = (char *)g.out + row * n * g.elem_size;
        int64_t bytes = n * g.elem_size;
        if (xs == 1 && bytes % 16 == 0 && ((uintptr_t)src | (uintptr_t)dst) % 16 == 0) {
            for (int64_t i = threadIdx.x; i < bytes / 16; i += blockDim.x) ((uint4 *)dst)[i] = ((const uint4 *)src)[i];
        } else {
            for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
                copy_elem(dst + i * g.elem_size, src + i * xs * g.elem_size, g.elem_size);
        }
    }
}

template <typename T> __device__ T add(T a, T b) { return a + b; }
template <> __device__ int64_t add<int64_t>(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }

template <typename T> __global__ void scatter_lines(afo_cuda_scatter s) {
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < s.lines; c += (int64_t)gridDim.x * blockDim.x) {
        int64_t ao = 0, io = 0, uo = 0, r = c;
        for (int d = s.nd - 1; d >= 0; d--) {
            int64_t i = r % s.shape[d];
            r /= s.shape[d];
            ao += i * s.acc_strides[d];
            io += i * s.idx_strides[d];
            uo += i * s.upd_strides[d];
        }
        T *acc = (T *)s.acc + ao;
        for (int64_t k = 0; k < s.k; k++) {
            int64_t row = wrap_clamp(load_index(s.idx, io + k * s.idx_axis, s.idx_dtype), s.axis_size);
            T v = load_as<T>(s.upd, uo + k * s.upd_axis, s.upd_dtype);
            T *dst = acc + row * s.acc_axis;
            *dst = add(*dst, v);
        }
    }
}

// ---------------------------------------------------------------- sorting

__device__ uint32_t key32(const void *x, int64_t i, afo_dtype dt) {
    switch (dt) {
    case AFO_FLOAT16:
    case AFO_BFLOAT16:
    case AFO_FLOAT32: {
        float v = load_as<float>(x, i, dt);
        if (v != v) return UINT32_MAX;
        if (v == 0) v = 0.0f;
        uint32_t b = __float_as_uint(v);
        return b >> 31 ? ~b : b | 0x80000000u;
    }
    case AFO_UINT32: return ((const uint32_t *)x)[i];
    default: return (uint32_t)(int32_t)load_as<int64_t>(x, i, dt) ^ 0x80000000u;
    }
}

__device__ uint64_t key64(const void *x, int64_t i, afo_dtype dt) {
    if (dt == AFO_FLOAT64) {
        double v = ((const double *)x)[i];
        if (v != v) return UINT64_MAX;
        if (v == 0) v = 0.0;
        uint64_t b = (uint64_t)__double_as_longlong(v);
        return b >> 63 ? ~b : b | (1ull << 63);
    }
    return (uint64_t)((const int64_t *)x)[i] ^ (1ull << 63);
}

__device__ void line_offsets(const afo_cuda_sort &s, int64_t line, int64_t *xo, int64_t *oo) {
    *xo = *oo = 0;
    for (int d = s.nd - 1; d >= 0; d--) {
        int64_t c = line % s.shape[d];
        line /= s.shape[d];
        *xo += c * s.x_strides[d];
        *oo += c * s.out_strides[d];
    }
}

template <typename K> __global__ void make_keys(afo_cuda_sort s, K *keys, int32_t *pos, int32_t *seg) {
    int64_t total = s.lines * s.n;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t line = e / s.n, i = e % s.n, xo, oo;
        line_offsets(s, line, &xo, &oo);
        int64_t at = xo + i * s.x_axis;
        K key = sizeof(K) == 4 ? (K)key32(s.x, at, s.x_dtype) : (K)key64(s.x, at, s.x_dtype);
        keys[e] = s.descending ? (K)~key : key;
        pos[e] = (int32_t)i;
        if (i == 0) seg[line] = (int32_t)e;
        if (e == total - 1) seg[s.lines] = (int32_t)total;
    }
}

__global__ void write_first(afo_cuda_sort s, const int32_t *pos) {
    int64_t total = s.lines * s.k;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t line = e / s.k, i = e % s.k, xo, oo;
        line_offsets(s, line, &xo, &oo);
        s.out[oo + i * s.out_axis] = pos[line * s.n + i];
    }
}

size_t align_up(size_t n) { return (n + 255) / 256 * 256; }

// Scratch: keys in/out, positions in/out, segment offsets, then CUB's own.
struct Layout {
    size_t keys_out, pos, pos_out, seg, cub, cub_bytes;
};

template <typename K> cudaError_t cub_sort(const afo_cuda_sort *s, char *p, const Layout &l, size_t *cub_bytes,
                                           cudaStream_t stream) {
    int total = (int)(s->lines * s->n), segments = (int)s->lines;
    void *tmp = p ? p + l.cub : nullptr;
    K *keys = (K *)p, *keys_out = (K *)(p + l.keys_out);
    int32_t *pos = (int32_t *)(p + l.pos), *pos_out = (int32_t *)(p + l.pos_out), *seg = (int32_t *)(p + l.seg);
    if (segments == 1)
        return cub::DeviceRadixSort::SortPairs(tmp, *cub_bytes, keys, keys_out, pos, pos_out, total, 0,
                                               (int)sizeof(K) * 8, stream);
    return cub::DeviceSegmentedRadixSort::SortPairs(tmp, *cub_bytes, keys, keys_out, pos, pos_out, total, segments,
                                                    seg, seg + 1, 0, (int)sizeof(K) * 8, stream);
}

bool wide_keys(afo_dtype dt) { return dt == AFO_FLOAT64 || dt == AFO_INT64; }

// The layout, with CUB's scratch size asked of it (no device work).
cudaError_t layout_of(const afo_cuda_sort *s, Layout *l) {
    size_t total = (size_t)(s->lines * s->n), kb = align_up((wide_keys(s->x_dtype) ? 8 : 4) * total);
    l->keys_out = kb;
    l->pos = 2 * kb;
    l->pos_out = l->pos + align_up(4 * total);
    l->seg = l->pos_out + align_up(4 * total);
    l->cub = l->seg + align_up(4 * (size_t)(s->lines + 1));
    l->cub_bytes = 0;
    return wide_keys(s->x_dtype) ? cub_sort<uint64_t>(s, nullptr, *l, &l->cub_bytes, 0)
                                 : cub_sort<uint32_t>(s, nullptr, *l, &l->cub_bytes, 0);
}

unsigned grid_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65535 * 16 ? (b ? b : 1) : 65535 * 16);
}

} // namespace

extern "C" void afo_cuda_gather_launch(const afo_cuda_gather *g, cudaStream_t stream) {
    int64_t n = g->shape[g->ndim - 1];
    if (g->is[g->ndim - 1] == 0 && n >= 32) {
        int64_t rows = g->size / n;
        gather_rows<<<(unsigned)(rows < 65535 * 16 ? rows : 65535 * 16), n >= 1024 ? 256 : 128, 0, stream>>>(*g);
    } else {
        gather_elems<<<grid_for(g->size, 256), 256, 0, stream>>>(*g);
    }
}

extern "C" void afo_cuda_scatter_add(const afo_cuda_scatter *s, cudaStream_t stream) {
    unsigned blocks = grid_for(s->lines, 128);
    switch (s->acc_dtype) {
    case AFO_FLOAT32: scatter_lines<float><<<blocks, 128, 0, stream>>>(*s); break;
    case AFO_FLOAT64: scatter_lines<double><<<blocks, 128, 0, stream>>>(*s); break;
    default: scatter_lines<int64_t><<<blocks, 128, 0, stream>>>(*s); break;
    }
}

extern "C" size_t afo_cuda_sort_scratch(const afo_cuda_sort *s) {
    Layout l;
    return layout_of(s, &l) == cudaSuccess ? l.cub + l.cub_bytes : 0;
}

extern "C" cudaError_t afo_cuda_sort_launch(const afo_cuda_sort *s, void *scratch, size_t scratch_bytes,
                                            cudaStream_t stream) {
    Layout l;
    cudaError_t e = layout_of(s, &l);
    if (e != cudaSuccess) return e;
    if (scratch_bytes < l.cub + l.cub_bytes) return cudaErrorInvalidValue;
    char *p = (char *)scratch;
    int32_t *pos = (int32_t *)(p + l.pos), *seg = (int32_t *)(p + l.seg);
    unsigned blocks = grid_for(s->lines * s->n, 256);
    bool wide = wide_keys(s->x_dtype);
    if (wide) make_keys<uint64_t><<<blocks, 256, 0, stream>>>(*s, (uint64_t *)p, pos, seg);
    else make_keys<uint32_t><<<blocks, 256, 0, stream>>>(*s, (uint32_t *)p, pos, seg);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    e = wide ? cub_sort<uint64_t>(s, p, l, &l.cub_bytes, stream) : cub_sort<uint32_t>(s, p, l, &l.cub_bytes, stream);
    if (e != cudaSuccess) return e;
    write_first<<<grid_for(s->lines * s->k, 256), 256, 0, stream>>>(*s, (const int32_t *)(p + l.pos_out));
    return cudaSuccess;
}
