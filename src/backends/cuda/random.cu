// Threefry-2x32-20 as in src/ops/random.c, one thread per element. The
// arithmetic after the bits is spelled with _rn intrinsics because nvcc
// would otherwise fuse a + (b - a) * u into an FMA, which rounds once where
// the CPU rounds twice, and the values would differ in the last bit.
#include <stdint.h>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/core_kernels.h"

namespace {
using namespace afo_cuda;

__device__ uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

__device__ void threefry2x32(uint32_t k0, uint32_t k1, uint64_t ctr, uint32_t out[2]) {
    const int rot[8] = {13, 15, 26, 6, 17, 29, 16, 24};
    uint32_t ks[3] = {k0, k1, 0x1BD11BDAu ^ k0 ^ k1};
    uint32_t x0 = (uint32_t)ctr + ks[0], x1 = (uint32_t)(ctr >> 32) + ks[1];
#pragma unroll
    for (int r = 0; r < 20; r++) {
        x0 += x1;
        x1 = rotl32(x1, rot[r % 8]) ^ x0;
        if (r % 4 == 3) {
            uint32_t s = (uint32_t)(r + 1) / 4;
            x0 += ks[s % 3];
            x1 += ks[(s + 1) % 3] + s;
        }
    }
    out[0] = x0;
    out[1] = x1;
}

__global__ void random_kernel(afo_cuda_random r) {
    uint32_t k0 = r.key[0], k1 = r.key[r.key_stride];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < r.size; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t blk[2];
        threefry2x32(k0, k1, (uint64_t)(r.wide ? i : i >> 1) | r.domain, blk);
        uint64_t bits = r.wide ? (uint64_t)blk[0] << 32 | blk[1] : blk[i & 1];
        if (r.op == AFO_OP_RANDOM_BITS) {
            ((uint32_t *)r.out)[i] = (uint32_t)bits;
            continue;
        }
        double v;
        if (r.op == AFO_OP_RANDOM_UNIFORM) {
            double u = r.wide ? (double)(bits >> 12) * 0x1p-52 : (double)(bits >> 9) * 0x1p-23;
            v = __dadd_rn(r.a, __dmul_rn(__dsub_rn(r.b, r.a), u));
            v = v < r.lo ? r.lo : v > r.hi ? r.hi : v;
        } else {
            double u1 = __dmul_rn((double)(bits >> 32) + 1.0, 0x1p-32), u2 = (double)(uint32_t)bits * 0x1p-32;
            double radius = sqrt(__dmul_rn(-2.0, log(u1)));
            v = __dadd_rn(r.a, __dmul_rn(__dmul_rn(r.b, radius), cos(__dmul_rn(6.283185307179586, u2))));
        }
        store_from<double>(r.out, i, r.dtype, v);
    }
}

} // namespace

extern "C" void afo_cuda_random_launch(const afo_cuda_random *r, cudaStream_t stream) {
    int64_t blocks = (r->size + 255) / 256;
    random_kernel<<<(unsigned)(blocks < 65535 * 16 ? blocks : 65535 * 16), 256, 0, stream>>>(*r);
}
