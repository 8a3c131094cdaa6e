// Programmatic dependent launch (sm_90): a kernel launched with
// launch_early may start while the kernel before it in the stream still
// runs, once that one's blocks have all called let_next_start (or exited),
// so that its launch, and whatever work of it reads only constants (a
// product's weights), overlap the tail of the kernel before. It must call
// wait_prior_grid, in every thread, before it reads or writes any memory
// that kernels before it use: the wait returns once the kernel before has
// completed and its writes are visible, and that kernel, launched early or
// not, had waited for its own predecessor, so for all earlier ones too.
#ifndef AFO_CUDA_LAUNCH_CUH
#define AFO_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>

namespace afo_cuda {

__device__ __forceinline__ void let_next_start() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_prior_grid() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The first statement of a kernel that does nothing before the wait.
__device__ __forceinline__ void follow_prior_grid() {
    wait_prior_grid();
    let_next_start();
}

// cluster: blocks a thread-block cluster groups (their shared memory
// readable by one another); (1, 1, 1) for none.
template <typename... Params, typename... Args>
cudaError_t launch_early_in(dim3 cluster, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                            cudaStream_t stream, Args... args) {
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    attr[1].id = cudaLaunchAttributeClusterDimension;
    attr[1].val.clusterDim.x = cluster.x, attr[1].val.clusterDim.y = cluster.y, attr[1].val.clusterDim.z = cluster.z;
    const bool clustered = cluster.x * cluster.y * cluster.z > 1;
    cudaLaunchConfig_t cfg = {grid, block, smem, stream, attr, clustered ? 2u : 1u};
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

template <typename... Params, typename... Args>
cudaError_t launch_early(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                         Args... args) {
    return launch_early_in(dim3(1, 1, 1), kernel, grid, block, smem, stream, args...);
}

// launch_early when `early`, else a plain launch, which starts once the
// kernel before has completed (the kernel's wait then returns at once): for
// a kernel whose reads before the wait are, this time, of memory that the
// kernels still queued may write.
template <typename... Params, typename... Args>
cudaError_t launch_early_if(bool early, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                            cudaStream_t stream, Args... args) {
    if (early) return launch_early(kernel, grid, block, smem, stream, args...);
    kernel<<<grid, block, smem, stream>>>(args...);
    return cudaGetLastError();
}

} // namespace afo_cuda

#endif
