/* CUDA kernel of decode_step (ops/decode_step.h): the op's inputs, which its
 * shape rule has checked, become the launcher's descriptor
 * (decode_step_kernels.h). */
#include <stdint.h>
#include <stdlib.h>

#include "backends/cuda/cuda.h"
#include "backends/cuda/decode_step_kernels.h"
#include "ops/decode_step.h"

static afo_cuda_step_shape cuda_shape(const afo_step_shape *s) {
    return (afo_cuda_step_shape){(int)s->layers, (int)s->hidden,   (int)s->intermediate, (int)s->heads,
                                 (int)s->kv_heads, (int)s->vocab, s->capacity};
}

static bool fits(const afo_step_shape *s, const char **why) {
    if (s->layers > AFO_CUDA_STEP_MAX_LAYERS) { /* (before the sizes narrow to int) */
        *why = "more layers than the kernel takes (64)";
        return false;
    }
    afo_cuda_step_shape c = cuda_shape(s);
    return afo_cuda_decode_step_fits(&c, why);
}

/* The kernel's bulk copies and vector loads need every operand dense and
 * 16-byte aligned on the GPU; one that is not declines the step. */
static const void *dense_ptr(const afo_array *a, const char *what, int64_t layer, afo_status *st) {
    const void *p = afo_array_ptr(a);
    if (*st == AFO_OK && (!a->contiguous || a->buf->device != AFO_CUDA || (uintptr_t)p % 16))
        *st = afo_error(AFO_ERR_UNSUPPORTED, "decode_step: %s (layer %lld) is not dense and 16-byte aligned on the GPU",
                        what, (long long)layer);
    return p;
}

/* An operand the kernel writes in place (a cache, the pick): dense, and its
 * bytes its own (no copy on the host that would go stale), stamped as being
 * written. */
static void *written_ptr(const afo_array *a, const char *what, int64_t layer, afo_status *st) {
    void *p = (void *)dense_ptr(a, what, layer, st);
    if (*st == AFO_OK && !afo_buffer_own_bytes(a->buf))
        *st = afo_error(AFO_ERR_UNSUPPORTED, "decode_step: %s (layer %lld) shares its bytes with a file or a copy", what,
                        (long long)layer);
    if (*st == AFO_OK) afo_buffer_mark_written(a->buf);
    return p;
}

static afo_cuda_q4 q4_of(afo_array *const *q, const char *what, int64_t layer, afo_status *st) {
    return (afo_cuda_q4){dense_ptr(q[0], what, layer, st), dense_ptr(q[1], what, layer, st),
                         dense_ptr(q[2], what, layer, st)};
}

static afo_status step_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    (void)nin;
    const int64_t *i = a->i;
    int64_t L = i[AFO_STEP_I_LAYERS];
    int fixed = AFO_STEP_IN_FIXED + (i[AFO_STEP_I_HAS_PICK] != 0);
    afo_step_shape shape = {L, i[AFO_STEP_I_HIDDEN], i[AFO_STEP_I_INTERMEDIATE], i[AFO_STEP_I_HEADS],
                            i[AFO_STEP_I_KV_HEADS], i[AFO_STEP_I_VOCAB], in[fixed + AFO_STEP_L_KEYS]->shape[2]};
    const char *why = NULL;
    if (!fits(&shape, &why)) return afo_error(AFO_ERR_UNSUPPORTED, "decode_step on CUDA: %s", why);
    afo_cuda_step *s = calloc(1, sizeof *s); /* (15 KB: the kernel's parameters) */
    if (!s) return afo_error(AFO_ERR_OUT_OF_MEMORY, "decode_step: out of memory");
    afo_status st = AFO_OK;
    s->shape = cuda_shape(&shape);
    s->eps = (float)a->f[AFO_STEP_F_EPS];
    s->scale = (float)a->f[AFO_STEP_F_SCALE];
    const afo_array *f = in[AFO_STEP_IN_FREQS];
    s->rope = (afo_cuda_rope){.L = 1, .dims = AFO_STEP_HEAD_DIM, .scale = 1,
                              .freqs = {dense_ptr(f, "rope's frequencies", 0, &st), f->dtype, 1}};
    if (fixed > AFO_STEP_IN_FIXED) s->pick = written_ptr(in[AFO_STEP_IN_PICK], "the pick", 0, &st);
    s->x = dense_ptr(in[AFO_STEP_IN_X], "x", 0, &st);
    s->position = dense_ptr(in[AFO_STEP_IN_POSITION], "the position", 0, &st);
    s->final_norm = dense_ptr(in[AFO_STEP_IN_FINAL_NORM], "the final norm", L, &st);
    s->head = q4_of(in + AFO_STEP_IN_HEAD, "the head", L, &st);
    for (int64_t l = 0; l < L; l++) {
        afo_array *const *y = in + fixed + l * AFO_STEP_L_COUNT;
        afo_cuda_step_layer *c = &s->layer[l];
        c->attn_norm = dense_ptr(y[AFO_STEP_L_ATTN_NORM], "the attention norm", l, &st);
        c->mlp_norm = dense_ptr(y[AFO_STEP_L_MLP_NORM], "the MLP norm", l, &st);
        c->qkv = q4_of(y + AFO_STEP_L_QKV, "qkv", l, &st);
        c->o = q4_of(y + AFO_STEP_L_O, "o", l, &st);
        c->gate_up = q4_of(y + AFO_STEP_L_GATE_UP, "gate_up", l, &st);
        c->down = q4_of(y + AFO_STEP_L_DOWN, "down", l, &st);
        c->keys = written_ptr(y[AFO_STEP_L_KEYS], "the key cache", l, &st);
        c->values = written_ptr(y[AFO_STEP_L_VALUES], "the value cache", l, &st);
    }
    if (st == AFO_OK) st = afo_array_alloc(out);
    if (st == AFO_OK) {
        s->logits = afo_array_ptr(out);
        st = afo_cuda_status(afo_cuda_decode_step_run(s, afo_cuda_stream()), "decode_step");
    }
    free(s);
    return st;
}

void afo_cuda_register_decode_step(void) {
    afo_op_set_kernel(AFO_OP_DECODE_STEP, AFO_CUDA, step_kernel);
    afo_decode_step_set_fits(AFO_CUDA, fits);
}
