// Probe (s27, run on an H200 as is; not built by CMake): what 4-byte
// transfers cost among a stream's kernels. N iterations of a 100 us kernel
// on every SM, each with what a decode step adds around it, all queued at
// once (I: the host one iteration behind, as afo_generate). Prints the time
// an iteration takes beyond the kernel. Why the CUDA backend moves transfers of up to 64 bytes with
// one-thread kernels (core_kernels.h); figures in docs/PERFORMANCE.md
// (CUDA, twenty-seventh session). cuda_stream_probe_step.cu goes on with
// afo's step as it is now.
//   nvcc -arch=sm_90 -O2 -o /tmp/p bench/cuda_stream_probe.cu && /tmp/p
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)
__device__ uint64_t gt() { uint64_t t; asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t)); return t; }
__global__ void busy(int64_t ns, int *flag) { uint64_t t0 = gt(); while (gt() - t0 < (uint64_t)ns) {} if (threadIdx.x == 0 && blockIdx.x == 0) *flag += 1; }
__global__ void set1(int *p, int v) { *p = v; }
__global__ void small(const int *id, uint16_t *x) { x[threadIdx.x] = (uint16_t)(*id + threadIdx.x); }
__global__ void put_host(volatile int *h, const int *d) { *h = *d; }
int main() {
    const int N = 300; const int64_t NS = 100000;
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    int *d, *hp, *hm; uint16_t *x; CK(cudaMalloc(&d, 64)); CK(cudaMalloc(&x, 8192)); CK(cudaHostAlloc(&hp, 64, cudaHostAllocDefault));
    CK(cudaHostAlloc(&hm, 64, cudaHostAllocMapped)); int *hm_d; CK(cudaHostGetDevicePointer(&hm_d, hm, 0));
    int sms; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    std::vector<cudaEvent_t> ev(N); for (auto &evn : ev) CK(cudaEventCreateWithFlags(&evn, cudaEventDisableTiming));
    cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    // graphs: {busy}, {small, busy}
    cudaGraphExec_t g1, g2, g3;
    for (int k = 0; k < 3; k++) {
        cudaGraph_t g; CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
        if (k >= 1) small<<<1, 256, 0, s>>>(d, x);
        busy<<<sms, 288, 0, s>>>(NS, d + 4);
        if (k == 2) CK(cudaMemcpyAsync(d + 8, d + 4, 4, cudaMemcpyDeviceToDevice, s));
        CK(cudaStreamEndCapture(s, &g)); CK(cudaGraphInstantiate(k == 0 ? &g1 : k == 1 ? &g2 : &g3, g, 0));
    }
    const char *names[] = {"A busy kernel", "B H2D + busy + D2H + event", "C set kernel + busy + host-write kernel + event",
                           "D graph{busy}", "E H2D + graph{busy} + D2H + event", "F H2D + graph{small,busy} + D2H + event",
                           "G H2D + graph{small,busy,D2D} + D2H + event", "H set kernel + graph{small,busy} + host-write kernel + event",
                           "I B with the host one step behind (waits event i-1)"};
    for (int rep = 0; rep < 2; rep++)
    for (int m = 0; m < 9; m++) {
        CK(cudaStreamSynchronize(s));
        CK(cudaEventRecord(a, s));
        for (int i = 0; i < N; i++) {
            if (m == 8 && i >= 2) CK(cudaEventSynchronize(ev[i - 2]));
            if (m == 1 || m == 4 || m == 5 || m == 6 || m == 8) CK(cudaMemcpyAsync(d, hp, 4, cudaMemcpyHostToDevice, s));
            if (m == 2 || m == 7) set1<<<1, 1, 0, s>>>(d, i);
            if (m <= 2 || m == 8) busy<<<sms, 288, 0, s>>>(NS, d + 4);
            if (m == 3 || m == 4) CK(cudaGraphLaunch(g1, s));
            if (m == 5 || m == 7) CK(cudaGraphLaunch(g2, s));
            if (m == 6) CK(cudaGraphLaunch(g3, s));
            if (m == 1 || m == 4 || m == 5 || m == 6 || m == 8) CK(cudaMemcpyAsync(hp + 4, d + 4, 4, cudaMemcpyDeviceToHost, s));
            if (m == 2 || m == 7) put_host<<<1, 1, 0, s>>>(hm_d, d + 4);
            if (m != 0 && m != 3) CK(cudaEventRecord(ev[i], s));
        }
        CK(cudaEventRecord(b, s)); CK(cudaEventSynchronize(b));
        float ms; CK(cudaEventElapsedTime(&ms, a, b));
        printf("%-60s %8.2f us an iteration over the busy kernel's %.0f\n", names[m], ms * 1000 / N - NS / 1000.0, NS / 1000.0);
    }
    return 0;
}
