// Reductions across the 32 lanes of a warp (butterfly: every lane ends
// with the result), shared by the .cu files.
#ifndef AFO_CUDA_WARP_CUH
#define AFO_CUDA_WARP_CUH

namespace afo_cuda {

template <typename C> __device__ __forceinline__ C warp_sum(C v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename C> __device__ __forceinline__ C warp_max(C v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

} // namespace afo_cuda

#endif
