/* CUDA backend, C side: the device, its stream and libraries, and the
 * glue between op-table kernels and the launchers in the .cu files. Every
 * kernel runs on one stream, so work is ordered without host waits; the
 * host waits only when it reads data back. */
#ifndef AFO_CUDA_H
#define AFO_CUDA_H

#include <cuda_runtime_api.h>

#include "backends/cuda/kernels.h"
#include "core/internal.h"

/* NULL (error text says why) when there is no usable GPU. */
const afo_backend *afo_cuda_backend(void);
cudaStream_t afo_cuda_stream(void);
/* Turns a CUDA error into an afo error naming `what`. */
afo_status afo_cuda_status(cudaError_t e, const char *what);
/* The launch error of the last kernel, as an afo status naming `op`. */
afo_status afo_cuda_launched(const char *op);

/* Whether no kernel still queued may write b (b->queued_at is older than
 * the last wait for the stream): what a kernel may read before it waits for
 * the kernel before it (launch.cuh) must be. */
bool afo_cuda_settled(const afo_buffer *b);

/* Describes out and its inputs (broadcast to out's shape) for the strided
 * kernels. */
void afo_cuda_describe(afo_cuda_strided *d, const afo_array *out, afo_array *const *in, int nin);

/* Copies src (broadcast to dst's shape, converted to dst's dtype) into the
 * strided device view dst, on the stream (shape.c). */
afo_status afo_cuda_copy_into(const afo_array *dst, const afo_array *src);

/* slice_update (attrs: internal.h's AFO_SLICE_AT_AXIS note): out takes
 * over x's (in[0]'s) buffer where afo_slice_update_can_donate, else a copy
 * of x; *region is the view of out that the update goes to, moved along the
 * axis by *shift for slice_update_at (shift->at NULL otherwise). For its
 * kernel and for a kernel that computes the update in place. */
afo_status afo_cuda_slice_update_target(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a,
                                        afo_array *region, afo_cuda_shift *shift);

/* out (allocated, contiguous) = a @ b with matmul's rules: cuBLAS, or the
 * GEMV kernel for decode-sized products. */
afo_status afo_cuda_matmul(afo_array *out, const afo_array *a, const afo_array *b);
/* The residual of a fused `add` (afo_fused_fn) whose input in[producer] is
 * a product, when the product's epilogue can add it: laid out as out
 * (contiguous, as many elements), of a 16- or 32-bit float type, and out of
 * the product's dtype (so the one rounding saved is the product's own).
 * NULL otherwise. */
const afo_array *afo_cuda_residual(const afo_array *out, afo_array *const *in, int producer);
/* The input x of the rms_norm in[0] that a product computes along
 * (afo_fused_fn, producer 0), when its kernel can: a norm with a weight, x
 * and *weight contiguous, of one dtype and as many elements (one row).
 * NULL otherwise. */
const afo_array *afo_cuda_norm_input(afo_array *const *in, int producer, const afo_array **weight);
/* A fused kernel declining after it allocated out: the buffer goes back to
 * the pool, and the plain kernels allocate out again. */
void afo_cuda_declined(afo_array *out);

/* Each family sets its ops' CUDA kernels (afo_op_set_kernel). */
void afo_cuda_register_elementwise(void);
void afo_cuda_register_linalg(void);
void afo_cuda_register_nn(void);

/* A dense copy of a (on the GPU) in dtype dt: *view is a's shape over the
 * new *scratch, which the caller releases once its launches are queued. */
afo_status afo_cuda_dense(const afo_array *a, afo_dtype dt, afo_array *view, afo_buffer **scratch);
void afo_cuda_register_quant(void);
void afo_cuda_register_shape(void);
void afo_cuda_register_reduce(void);
void afo_cuda_register_indexing(void);
void afo_cuda_register_random(void);
void afo_cuda_register_decode_step(void);

#endif
