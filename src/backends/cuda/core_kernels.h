/* Launchers of the CUDA reductions, softmax, gathers, scatter_add and
 * random generators, callable from C (see kernels.h for the conventions:
 * plain descriptors only, strides in elements, data already offset). */
#ifndef AFO_CUDA_CORE_KERNELS_H
#define AFO_CUDA_CORE_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "afo/base.h"
#include "core/op_ids.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ reductions */

/* out[o] = op over the reduced elements of x for every kept position o (in
 * C order over the kept axes); reduced positions r run in C order over the
 * reduced axes (argmax's index counts them). */
typedef struct afo_cuda_reduce {
    afo_op op;
    int nkeep, nred;
    int64_t keep_shape[AFO_MAX_DIMS], keep_strides[AFO_MAX_DIMS];
    int64_t red_shape[AFO_MAX_DIMS], red_strides[AFO_MAX_DIMS];
    int64_t out_size, red_size;
    const void *x;
    afo_dtype x_dtype;
    void *out; /* contiguous */
    afo_dtype out_dtype;
} afo_cuda_reduce;
void afo_cuda_reduce_launch(const afo_cuda_reduce *r, cudaStream_t stream);

/* Softmax over rows of n elements (element stride `stride`); row r starts at
 * the offset given by the outer shape/strides; the output is contiguous. */
typedef struct afo_cuda_rows {
    int nouter;
    int64_t outer_shape[AFO_MAX_DIMS], outer_strides[AFO_MAX_DIMS];
    int64_t rows, n, stride;
    const void *x;
    afo_dtype x_dtype;
    void *out;
    afo_dtype out_dtype;
} afo_cuda_rows;
void afo_cuda_softmax(const afo_cuda_rows *r, cudaStream_t stream);

/* ------------------------------------------------------------ indexing */

/* out[o] (contiguous, C order over `shape`) = x at sum c_d xs_d + k *
 * axis_stride, where k = idx at sum c_d is_d, negative k counting from the
 * end of an axis of axis_size. Indices out of range read the nearest valid
 * row (the host checks them when it holds them; see indexing.c). */
typedef struct afo_cuda_gather {
    int ndim;
    int64_t shape[AFO_MAX_DIMS], xs[AFO_MAX_DIMS], is[AFO_MAX_DIMS];
    int64_t size, axis_stride, axis_size;
    const void *x;
    const void *idx;
    afo_dtype idx_dtype;
    void *out;
    int elem_size;
} afo_cuda_gather;
void afo_cuda_gather_launch(const afo_cuda_gather *g, cudaStream_t stream);

/* acc (contiguous, compute dtype acc_dtype) += updates along axis, one
 * thread per line (position on the other axes of the update shape), updates
 * applied in index order as on the CPU. Line c's offsets come from
 * shape/strides over the non-axis axes; along the axis the k-th update goes
 * to acc row idx[k]. */
typedef struct afo_cuda_scatter {
    int nd;
    int64_t shape[AFO_MAX_DIMS];
    int64_t acc_strides[AFO_MAX_DIMS], idx_strides[AFO_MAX_DIMS], upd_strides[AFO_MAX_DIMS];
    int64_t lines, k, acc_axis, idx_axis, upd_axis, axis_size;
    void *acc;
    afo_dtype acc_dtype;
    const void *idx;
    afo_dtype idx_dtype;
    const void *upd;
    afo_dtype upd_dtype;
} afo_cuda_scatter;
void afo_cuda_scatter_add(const afo_cuda_scatter *s, cudaStream_t stream);

/* ------------------------------------------------------------ random */

/* The CPU generator's values (src/ops/random.c): Threefry-2x32-20 of the
 * key read from device memory (uint32, element stride key_stride). */
typedef struct afo_cuda_random {
    afo_op op;
    const uint32_t *key;
    int64_t key_stride, size;
    uint64_t domain;
    int wide;
    double a, b, lo, hi;
    void *out;
    afo_dtype dtype;
} afo_cuda_random;
void afo_cuda_random_launch(const afo_cuda_random *r, cudaStream_t stream);

/* --------------------------------------------------------- small copies */

/* Copies of up to AFO_CUDA_SMALL_COPY bytes as a one-thread kernel: among
 * a stream's kernels a copy-engine copy costs several microseconds more
 * (a decode step's upload of its position and read of its pick;
 * docs/PERFORMANCE.md). put: the bytes travel in the kernel's parameters
 * (a recording keeps them as captured). copy: from device memory to device
 * memory or to mapped pinned host memory, visible to the host once the
 * kernel is done. */
#define AFO_CUDA_SMALL_COPY 64
cudaError_t afo_cuda_put_small(void *dst, const void *bytes, size_t n, cudaStream_t stream);
cudaError_t afo_cuda_copy_small(void *dst, const void *src, size_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
