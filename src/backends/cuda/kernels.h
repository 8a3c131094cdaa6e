/* Launchers of the CUDA kernels, callable from C. Only plain types cross
 * this line: the C glue (the .c files of this folder) turns arrays into these
 * descriptors, the .cu files never see afo's internal structs. */
#ifndef AFO_CUDA_KERNELS_H
#define AFO_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "afo/base.h"
#include "core/op_ids.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A decode product's addend (a residual, see afo_fused_fn), laid out as
 * its output and added to the float sums before their one rounding; data
 * NULL for none. */
typedef struct afo_cuda_addend {
    const void *data;
    afo_dtype dtype;
} afo_cuda_addend;

/* Compute types, as on the CPU: float32 for float32/float16/bfloat16,
 * float64 for float64, int64 for integers and bool. */
typedef enum afo_cuda_ctype { AFO_CUDA_F32 = 0, AFO_CUDA_F64, AFO_CUDA_I64 } afo_cuda_ctype;

/* Where a write lands further along by slice_update_at's rule (a KV cache's
 * slot): *at (device memory, read when the kernel runs; NULL: nowhere
 * further) clamped to [0, max], times stride elements. */
typedef struct afo_cuda_shift {
    const int32_t *at;
    int64_t stride, max;
} afo_cuda_shift;

/* Up to three inputs and one output viewed over one shape; strides in
 * elements (0 along broadcast axes), axes merged where all operands allow. */
#define AFO_CUDA_MAX_OPERANDS 4
typedef struct afo_cuda_strided {
    int ndim, nops; /* nops = inputs + 1; operand 0 is the output */
    int64_t size;
    int64_t shape[AFO_MAX_DIMS];
    int64_t strides[AFO_CUDA_MAX_OPERANDS][AFO_MAX_DIMS];
    void *data[AFO_CUDA_MAX_OPERANDS]; /* already offset to the first element */
    afo_dtype dtype[AFO_CUDA_MAX_OPERANDS];
    afo_cuda_shift shift; /* of the output */
} afo_cuda_strided;

/* out = op(in...) computed in `ct`; op AFO_OP_ASTYPE (or any copy) converts
 * input 0. */
void afo_cuda_elementwise(const afo_cuda_strided *d, afo_op op, afo_cuda_ctype ct, cudaStream_t stream);

/* The GPU's multiprocessor count (1 when it cannot be read), read once:
 * kernels whose blocks loop over the work size their grids by it. */
int afo_cuda_multiprocessors(void);

#ifdef __cplusplus
}
#endif
#endif
