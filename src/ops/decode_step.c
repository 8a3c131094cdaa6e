/* decode_step (ops/decode_step.h): the shape rule, which checks every input
 * against the shape in the attributes, and the node's builder. No CPU
 * kernel: the CPU runs the layer graph, whose products it already fuses. */
#include "ops/decode_step.h"

#include <stdlib.h>
#include <string.h>

static afo_step_fits_fn g_fits[AFO_DEVICE_COUNT];

void afo_decode_step_set_fits(afo_device device, afo_step_fits_fn fits) { g_fits[device] = fits; }

bool afo_decode_step_fits(afo_device device, const afo_step_shape *s, const char **why) {
    const afo_op_def *def = afo_op_get(AFO_OP_DECODE_STEP);
    if (!def || !def->kernel[device] || !g_fits[device]) {
        *why = "no decode_step kernel on this device";
        return false;
    }
    return g_fits[device](s, why);
}

/* a: dtype dt and shape [d0, d1] (d1 < 0: any 1-D [d0]) */
static afo_status expect(const afo_array *a, const char *what, int64_t layer, afo_dtype dt, int64_t d0, int64_t d1) {
    bool ok = a->dtype == dt && (d1 < 0 ? a->ndim == 1 && a->shape[0] == d0
                                        : a->ndim == 2 && a->shape[0] == d0 && a->shape[1] == d1);
    if (ok) return AFO_OK;
    char got[64];
    afo_shape_str(a->ndim, a->shape, got, sizeof got);
    if (d1 < 0)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "decode_step: %s of layer %lld is %s %s, expected %s [%lld]", what,
                         (long long)layer, afo_dtype_name(a->dtype), got, afo_dtype_name(dt), (long long)d0);
    return afo_error(AFO_ERR_INVALID_ARGUMENT, "decode_step: %s of layer %lld is %s %s, expected %s [%lld, %lld]", what,
                     (long long)layer, afo_dtype_name(a->dtype), got, afo_dtype_name(dt), (long long)d0,
                     (long long)d1);
}

/* A 4-bit g64 matrix [rows, cols] as three inputs. */
static afo_status expect_q4(afo_array *const *q, const char *what, int64_t layer, int64_t rows, int64_t cols) {
    AFO_TRY(expect(q[0], what, layer, AFO_UINT32, rows, cols / 8));
    AFO_TRY(expect(q[1], what, layer, AFO_BFLOAT16, rows, cols / 64));
    return expect(q[2], what, layer, AFO_BFLOAT16, rows, cols / 64);
}

static afo_status step_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const int64_t *i = a->i;
    int64_t L = i[AFO_STEP_I_LAYERS], D = i[AFO_STEP_I_HIDDEN], F = i[AFO_STEP_I_INTERMEDIATE],
            H = i[AFO_STEP_I_HEADS], K = i[AFO_STEP_I_KV_HEADS], V = i[AFO_STEP_I_VOCAB];
    int fixed = AFO_STEP_IN_FIXED + (i[AFO_STEP_I_HAS_PICK] != 0);
    if (L < 1 || D < 64 || D % 64 || F < 64 || F % 64 || H < 1 || K < 1 || H % K || V < 1 ||
        nin != fixed + L * AFO_STEP_L_COUNT)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "decode_step: %d inputs for %lld layers, or a bad shape", nin,
                         (long long)L);
    const afo_array *x = in[AFO_STEP_IN_X], *pos = in[AFO_STEP_IN_POSITION];
    if (x->dtype != AFO_BFLOAT16 || x->size != D)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "decode_step: x must be bf16 of %lld elements", (long long)D);
    if (pos->dtype != AFO_INT32 || pos->size != 1)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "decode_step: position must be one int32");
    AFO_TRY(expect(in[AFO_STEP_IN_FINAL_NORM], "final norm", L, AFO_BFLOAT16, D, -1));
    AFO_TRY(expect_q4(in + AFO_STEP_IN_HEAD, "head", L, V, D));
    AFO_TRY(expect(in[AFO_STEP_IN_FREQS], "rope frequencies", 0, AFO_FLOAT32, AFO_STEP_HEAD_DIM / 2, -1));
    if (fixed > AFO_STEP_IN_FIXED && (in[AFO_STEP_IN_PICK]->dtype != AFO_INT32 || in[AFO_STEP_IN_PICK]->size != 1))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "decode_step: the pick must be one int32");
    int64_t qkv = (H + 2 * K) * AFO_STEP_HEAD_DIM;
    for (int64_t l = 0; l < L; l++) {
        afo_array *const *y = in + fixed + l * AFO_STEP_L_COUNT;
        AFO_TRY(expect(y[AFO_STEP_L_ATTN_NORM], "attention norm", l, AFO_BFLOAT16, D, -1));
        AFO_TRY(expect(y[AFO_STEP_L_MLP_NORM], "MLP norm", l, AFO_BFLOAT16, D, -1));
        AFO_TRY(expect_q4(y + AFO_STEP_L_QKV, "qkv", l, qkv, D));
        AFO_TRY(expect_q4(y + AFO_STEP_L_O, "o", l, D, H * AFO_STEP_HEAD_DIM));
        AFO_TRY(expect_q4(y + AFO_STEP_L_GATE_UP, "gate_up", l, 2 * F, D));
        AFO_TRY(expect_q4(y + AFO_STEP_L_DOWN, "down", l, D, F));
        for (int kv = 0; kv < 2; kv++) {
            const afo_array *c = y[AFO_STEP_L_KEYS + kv];
            if (c->dtype != AFO_BFLOAT16 || c->ndim != 4 || c->shape[0] != 1 || c->shape[1] != K ||
                c->shape[3] != AFO_STEP_HEAD_DIM || c->shape[2] != y[AFO_STEP_L_KEYS]->shape[2])
                return afo_error(AFO_ERR_INVALID_ARGUMENT,
                                 "decode_step: the %s cache of layer %lld must be bf16 [1, %lld, capacity, %d]",
                                 kv ? "value" : "key", (long long)l, (long long)K, AFO_STEP_HEAD_DIM);
        }
    }
    out->dtype = AFO_FLOAT32;
    out->ndim = 3;
    out->shape[0] = out->shape[1] = 1;
    out->shape[2] = V;
    return AFO_OK;
}

afo_array *afo_decode_step(const afo_step_shape *s, afo_array *const *fixed, afo_array *pick,
                           afo_array *const *layer_inputs, double eps, double scale) {
    int nfixed = AFO_STEP_IN_FIXED + (pick != NULL);
    size_t n = (size_t)nfixed + (size_t)s->layers * AFO_STEP_L_COUNT;
    afo_array **in = malloc(sizeof *in * n);
    if (!in) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "decode_step: out of memory");
    memcpy(in, fixed, sizeof *in * AFO_STEP_IN_FIXED);
    if (pick) in[AFO_STEP_IN_PICK] = pick;
    memcpy(in + nfixed, layer_inputs, sizeof *in * (size_t)s->layers * AFO_STEP_L_COUNT);
    for (size_t k = 0; k < n; k++)
        if (!in[k]) {
            free(in);
            return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "decode_step: input %zu is NULL", k);
        }
    afo_attrs at = {.ni = AFO_STEP_I_COUNT, .nf = AFO_STEP_F_COUNT};
    int64_t v[AFO_STEP_I_COUNT] = {s->layers, s->hidden, s->intermediate, s->heads, s->kv_heads, s->vocab,
                                   pick != NULL};
    memcpy(at.i, v, sizeof v);
    at.f[AFO_STEP_F_EPS] = eps, at.f[AFO_STEP_F_SCALE] = scale;
    afo_array *r = afo_node(AFO_OP_DECODE_STEP, in, (int)n, &at);
    free(in);
    return r;
}

static const afo_op_def def_decode_step = {"decode_step", step_shape, {NULL}, NULL};

void afo_register_decode_step_op(void) { afo_op_register(AFO_OP_DECODE_STEP, &def_decode_step); }
