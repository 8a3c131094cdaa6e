// Probe (s27, run on an H200 as is; not built by CMake): the stream around
// afo's decode step after the small transfers became kernels: a one-thread
// kernel for the position's upload ("put"), a graph of a small kernel (the
// embedding's gather) and the step kernel (here a 100 us wait on every SM,
// with a 15 KB parameter block as the fused step's descriptor, or a small
// one), a one-thread kernel copying the pick into mapped pinned memory
// ("read kernel"), an event. Prints the time an iteration takes beyond the
// 100 us; figures in docs/PERFORMANCE.md (CUDA, twenty-seventh session).
//   nvcc -arch=sm_90 -O2 -o /tmp/p bench/cuda_stream_probe_step.cu && /tmp/p
#include <cstdio>
#include <cstdint>
#include <vector>
#include <cuda_runtime.h>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)
struct Big { const void *p[1900]; int64_t ns; int *flag; };   // ~15 KB
struct Small { int64_t ns; int *flag; };
__device__ uint64_t gt() { uint64_t t; asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t)); return t; }
template <class P> __global__ void busy(const __grid_constant__ P a) { uint64_t t0 = gt(); while (gt() - t0 < (uint64_t)a.ns) {} if (threadIdx.x == 0 && blockIdx.x == 0) *a.flag += 1; }
__global__ void set1(int *p, int v) { *p = v; }
__global__ void small(const int *id, uint16_t *x) { x[threadIdx.x] = (uint16_t)(*id + threadIdx.x); }
__global__ void put_host(volatile int *h, const int *d) { *h = *d; __threadfence_system(); }
int main() {
    const int N = 300; const int64_t NS = 100000;
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    int *d, *hm, *hm_d; uint16_t *x; CK(cudaMalloc(&d, 64)); CK(cudaMalloc(&x, 8192));
    CK(cudaHostAlloc(&hm, 64, cudaHostAllocMapped)); CK(cudaHostGetDevicePointer(&hm_d, hm, 0));
    int sms; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    std::vector<cudaEvent_t> ev(N); for (auto &evn : ev) CK(cudaEventCreateWithFlags(&evn, cudaEventDisableTiming));
    cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    static Big big = {}; big.ns = NS; big.flag = d + 4; Small sm = {NS, d + 4};
    cudaGraphExec_t g[4]; // {small, big}, {big}, {small, small-param}, {small-param}
    for (int k = 0; k < 4; k++) {
        cudaGraph_t gr; CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
        if (k == 0 || k == 2) small<<<1, 256, 0, s>>>(d, x);
        if (k < 2) busy<Big><<<sms, 288, 0, s>>>(big); else busy<Small><<<sms, 288, 0, s>>>(sm);
        CK(cudaStreamEndCapture(s, &gr)); CK(cudaGraphInstantiate(&g[k], gr, 0));
    }
    const char *names[] = {"put + g{small, big-param} + read kernel + event", "put + g{big-param} + read kernel + event",
                           "g{big-param} + read kernel + event", "put + g{small, small-param} + read kernel + event",
                           "g{small-param} + read kernel + event", "g{small-param} + event", "g{small-param}"};
    for (int rep = 0; rep < 2; rep++)
    for (int m = 0; m < 7; m++) {
        CK(cudaStreamSynchronize(s));
        CK(cudaEventRecord(a, s));
        for (int i = 0; i < N; i++) {
            if (i >= 2) CK(cudaEventSynchronize(ev[i - 2]));
            if (m == 0 || m == 1 || m == 3) set1<<<1, 1, 0, s>>>(d, i);
            CK(cudaGraphLaunch(g[m == 0 ? 0 : m <= 2 ? 1 : m == 3 ? 2 : 3], s));
            if (m <= 4) put_host<<<1, 1, 0, s>>>(hm_d, d + 4);
            if (m <= 5) CK(cudaEventRecord(ev[i], s)); else CK(cudaEventRecord(ev[i], s));
        }
        CK(cudaEventRecord(b, s)); CK(cudaEventSynchronize(b));
        float ms; CK(cudaEventElapsedTime(&ms, a, b));
        printf("%-55s %8.2f us an iteration over the busy kernel's %.0f\n", names[m], ms * 1000 / N - NS / 1000.0, NS / 1000.0);
    }
    return 0;
}
