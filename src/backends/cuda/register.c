/* The CUDA kernels of every op family, added to the op table. */
#include "backends/cuda/cuda.h"

void afo_register_cuda_kernels(void) {
    afo_cuda_register_elementwise();
    afo_cuda_register_linalg();
    afo_cuda_register_nn();
    afo_cuda_register_quant();
    afo_cuda_register_shape();
    afo_cuda_register_reduce();
    afo_cuda_register_indexing();
    afo_cuda_register_random();
    afo_cuda_register_decode_step();
}
