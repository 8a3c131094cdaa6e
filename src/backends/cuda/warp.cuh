// Reductions across the 32 lanes of a warp (butterfly: every lane ends
// with the result) and across a block, and blocks that meet through a
// counter, shared by the .cu files.
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

// The sum of v over the block, in every thread; red: a float of shared
// memory per warp.
template <typename C> __device__ C block_sum(C v, C *red) {
    v = warp_sum(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads(); // red may still be read from the previous reduction
    if (lane == 0) red[warp] = v;
    __syncthreads();
    C s = 0;
    for (int w = 0; w < nw; w++) s += red[w];
    return s;
}

// Called by every thread of a block once the block's results are in global
// memory: whether it is the last of n blocks to arrive at *count. The last
// one sees the others' results (read them past L1: __ldcg) and finds
// *count back at zero, ready for the next launch, as every block has
// counted by then.
__device__ __forceinline__ bool last_to_arrive(unsigned int *count, unsigned int n) {
    __shared__ bool last;
    __threadfence(); // the results are visible before the count says so
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(count, 1u) == n - 1;
        if (last) *count = 0;
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

} // namespace afo_cuda

#endif
