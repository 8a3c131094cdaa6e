// Gathers (take, take_along_axis) and scatter_add. Gathers move raw
// elements, so every dtype works unconverted.
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/core_kernels.h"
#include "backends/cuda/launch.cuh"

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
    afo_cuda::follow_prior_grid();
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
    afo_cuda::follow_prior_grid();
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
    afo_cuda::follow_prior_grid();
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

unsigned grid_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65535 * 16 ? (b ? b : 1) : 65535 * 16);
}

} // namespace

extern "C" void afo_cuda_gather_launch(const afo_cuda_gather *g, cudaStream_t stream) {
    int64_t n = g->shape[g->ndim - 1];
    if (g->is[g->ndim - 1] == 0 && n >= 32) {
        int64_t rows = g->size / n;
        afo_cuda::launch_early(gather_rows, dim3((unsigned)(rows < 65535 * 16 ? rows : 65535 * 16)),
                               dim3(n >= 1024 ? 256 : 128), 0, stream, *g);
    } else {
        afo_cuda::launch_early(gather_elems, dim3(grid_for(g->size, 256)), dim3(256), 0, stream, *g);
    }
}

extern "C" void afo_cuda_scatter_add(const afo_cuda_scatter *s, cudaStream_t stream) {
    auto kernel = s->acc_dtype == AFO_FLOAT32   ? scatter_lines<float>
                  : s->acc_dtype == AFO_FLOAT64 ? scatter_lines<double>
                                                : scatter_lines<int64_t>;
    afo_cuda::launch_early(kernel, dim3(grid_for(s->lines, 128)), dim3(128), 0, stream, *s);
}
