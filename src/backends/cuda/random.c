/* CUDA random_bits, random_uniform and random_normal: the CPU generator's
 * values (same attrs as src/ops/random.c: i[9] = output dtype, or for bits
 * the block-number domain; f[0..3] = affine map and clamp bounds), read from
 * a key that stays on the device. */
#include "backends/cuda/core_kernels.h"
#include "backends/cuda/cuda.h"

#define ATTR_TYPE 9

static afo_status rand_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    if (out->size == 0) return AFO_OK;
    const afo_array *key = in[0];
    afo_cuda_random r = {.op = out->op, .key = afo_array_ptr(key), .key_stride = key->strides[0], .size = out->size,
                         .a = a->f[0], .b = a->f[1], .lo = a->f[2], .hi = a->f[3], .out = afo_array_ptr(out),
                         .dtype = out->dtype};
    if (out->op == AFO_OP_RANDOM_BITS) r.domain = (uint64_t)a->i[ATTR_TYPE];
    r.wide = out->op == AFO_OP_RANDOM_NORMAL || (out->op == AFO_OP_RANDOM_UNIFORM && out->dtype == AFO_FLOAT64);
    afo_cuda_random_launch(&r, afo_cuda_stream());
    return afo_cuda_launched(afo_op_get(out->op)->name);
}

void afo_cuda_register_random(void) {
    for (int op = AFO_OP_RANDOM_BITS; op <= AFO_OP_RANDOM_NORMAL; op++)
        afo_op_set_kernel((afo_op)op, AFO_CUDA, rand_kernel);
}
