/* Counter-based random numbers: Threefry-2x32 with 20 rounds (Salmon,
 * Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC
 * 2011), the generator JAX and MLX use. A key is uint32 [2]; block j of a
 * stream is threefry(key, counter j), and element i of a result depends only
 * on (key, i), so any division of the work over threads gives the same bits.
 *
 * Streams: bits and 32-bit-precision uniforms take word i%2 of block i/2;
 * float64 uniforms and normals take both words of block i. split uses its
 * own counters (bit 63 set) so children never equal the key's random bits.
 *
 * attrs (all ops): i[0] = ndim, i[1..ndim] = shape, i[9] = output dtype
 * (RANDOM_BITS: output uint32, and i[9] holds bits OR'ed into every block
 * number: split's domain bit, or any counter for known-answer tests);
 * f[0], f[1] = the affine map (uniform: low, high; normal: mean, std);
 * UNIFORM: f[2], f[3] = the smallest and largest values of the dtype in
 * [low, high). */
#include <float.h>
#include <math.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/threadpool.h"
#include "core/compose.h"

#define ATTR_SHAPE 1
#define ATTR_TYPE 9
#define SPLIT_DOMAIN (1ull << 63)
#define CHUNK 1024

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

/* Threefry-2x32-20 of the 64-bit counter under key (k0, k1). */
static void threefry2x32(uint32_t k0, uint32_t k1, uint64_t ctr, uint32_t out[2]) {
    static const int rot[8] = {13, 15, 26, 6, 17, 29, 16, 24};
    uint32_t ks[3] = {k0, k1, 0x1BD11BDAu ^ k0 ^ k1};
    uint32_t x0 = (uint32_t)ctr + ks[0], x1 = (uint32_t)(ctr >> 32) + ks[1];
    for (int r = 0; r < 20; r++) {
        x0 += x1;
        x1 = rotl32(x1, rot[r % 8]) ^ x0;
        if (r % 4 == 3) { /* key injection s after every fourth round */
            uint32_t s = (uint32_t)(r + 1) / 4;
            x0 += ks[s % 3];
            x1 += ks[(s + 1) % 3] + s;
        }
    }
    out[0] = x0;
    out[1] = x1;
}

/* ------------------------------------------------------------ kernel */

typedef struct rand_job {
    afo_op op;
    uint32_t k0, k1;
    uint64_t domain;
    afo_dtype dtype;
    bool wide; /* 64 random bits per element */
    double a, b, lo, hi;
    char *out;
} rand_job;

/* Element i's random bits (32 or 64 of them). */
static inline uint64_t element_bits(const rand_job *j, int64_t i, uint32_t blk[2], int64_t *have) {
    int64_t block = j->wide ? i : i >> 1;
    if (*have != block) {
        threefry2x32(j->k0, j->k1, (uint64_t)block | j->domain, blk);
        *have = block;
    }
    if (j->wide) return (uint64_t)blk[0] << 32 | blk[1];
    return blk[i & 1];
}

static void rand_range(void *ctx, int64_t begin, int64_t end) {
    const rand_job *j = ctx;
    double vals[CHUNK];
    uint32_t blk[2];
    int64_t have = -1;
    size_t es = afo_dtype_size(j->dtype);
    for (int64_t c = begin; c < end; c += CHUNK) {
        int64_t n = end - c < CHUNK ? end - c : CHUNK;
        if (j->op == AFO_OP_RANDOM_BITS) {
            uint32_t *o = (uint32_t *)j->out + c;
            for (int64_t i = 0; i < n; i++) o[i] = (uint32_t)element_bits(j, c + i, blk, &have);
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            uint64_t bits = element_bits(j, c + i, blk, &have);
            double v;
            if (j->op == AFO_OP_RANDOM_UNIFORM) {
                double u = j->wide ? (double)(bits >> 12) * 0x1p-52 : (double)(bits >> 9) * 0x1p-23;
                v = j->a + (j->b - j->a) * u;
                /* lo/hi are values of the dtype, so rounding cannot leave [lo, hi] */
                v = v < j->lo ? j->lo : v > j->hi ? j->hi : v;
            } else { /* Box-Muller, cosine half: u1 in (0, 1] keeps the log finite */
                double u1 = ((double)(bits >> 32) + 1.0) * 0x1p-32, u2 = (double)(uint32_t)bits * 0x1p-32;
                v = j->a + j->b * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
            }
            vals[i] = v;
        }
        afo_cpu_store_row(AFO_CT_F64, vals, n, j->dtype, j->out + c * (int64_t)es, 1);
    }
}

static afo_status rand_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    AFO_TRY(afo_array_alloc(out));
    const afo_array *key = in[0];
    int64_t k[2];
    afo_cpu_load_row(key->dtype, afo_array_ptr(key), key->strides[0], 2, AFO_CT_I64, k);
    rand_job j = {.op = out->op, .k0 = (uint32_t)k[0], .k1 = (uint32_t)k[1], .dtype = out->dtype,
                  .a = a->f[0], .b = a->f[1], .lo = a->f[2], .hi = a->f[3], .out = afo_array_ptr(out)};
    if (out->op == AFO_OP_RANDOM_BITS) j.domain = (uint64_t)a->i[ATTR_TYPE];
    j.wide = out->op == AFO_OP_RANDOM_NORMAL || (out->op == AFO_OP_RANDOM_UNIFORM && out->dtype == AFO_FLOAT64);
    afo_parallel_for(out->size, 8192, rand_range, &j);
    return AFO_OK;
}

/* ------------------------------------------------------------ shape rule */

static const char *op_name(afo_op op) {
    return op == AFO_OP_RANDOM_BITS ? "random_bits" : op == AFO_OP_RANDOM_UNIFORM ? "random_uniform" : "random_normal";
}

static afo_status check_key(const char *name, const afo_array *key) {
    if (key->dtype != AFO_UINT32 || key->ndim != 1 || key->shape[0] != 2) {
        char s[128];
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: key must be uint32 [2], not %s %s", name,
                         afo_dtype_name(key->dtype), afo_shape_str(key->ndim, key->shape, s, sizeof s));
    }
    return AFO_OK;
}

static afo_status rand_shape(afo_array *out, afo_array *const *in, int nin, const afo_attrs *a) {
    const char *name = op_name(out->op);
    AFO_TRY(check_key(name, in[0]));
    out->ndim = (int)a->i[0];
    for (int d = 0; d < out->ndim; d++) out->shape[d] = a->i[ATTR_SHAPE + d];
    out->dtype = out->op == AFO_OP_RANDOM_BITS ? AFO_UINT32 : (afo_dtype)a->i[ATTR_TYPE];
    return AFO_OK;
}

static const afo_op_def def_bits = {"random_bits", rand_shape, {rand_kernel}, NULL};
static const afo_op_def def_uniform = {"random_uniform", rand_shape, {rand_kernel}, NULL};
static const afo_op_def def_normal = {"random_normal", rand_shape, {rand_kernel}, NULL};

/* ------------------------------------------------------------ public */

/* Validates the requested shape and dtype into attrs. */
static afo_status shape_attrs(const char *name, int ndim, const int64_t *shape, afo_dtype dtype, afo_attrs *a) {
    if (ndim < 0 || ndim > AFO_MAX_DIMS || (ndim > 0 && !shape))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: invalid shape (ndim %d)", name, ndim);
    if (!afo_dtype_is_float(dtype))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: dtype must be floating point, not %s", name,
                         afo_dtype_name(dtype));
    *a = (afo_attrs){.ni = ATTR_TYPE + 1, .nf = 4};
    a->i[0] = ndim;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: negative dimension %lld", name, (long long)shape[d]);
        a->i[ATTR_SHAPE + d] = shape[d];
    }
    a->i[ATTR_TYPE] = dtype;
    return AFO_OK;
}

/* v rounded to dtype, as a double. */
static double round_to(afo_dtype dt, double v) {
    unsigned char b[8];
    afo_cpu_store_double(dt, b, v);
    return afo_cpu_load_double(dt, b);
}

/* The neighbour of dtype value v towards -inf (down) or +inf: IEEE formats
 * order their bit patterns like sign-magnitude integers. */
static double step(afo_dtype dt, double v, bool down) {
    unsigned char b[8];
    afo_cpu_store_double(dt, b, v);
    size_t es = afo_dtype_size(dt);
    uint64_t bits = 0, sign = 1ull << (8 * es - 1);
    if (es == 2) { uint16_t t; memcpy(&t, b, 2); bits = t; }
    else if (es == 4) { uint32_t t; memcpy(&t, b, 4); bits = t; }
    else memcpy(&bits, b, 8);
    if ((bits & ~sign) == 0) bits = down ? sign | 1 : 1; /* from either zero */
    else bits = (bits & sign) == (down ? 0 : sign) ? bits - 1 : bits + 1;
    if (es == 2) { uint16_t t = (uint16_t)bits; memcpy(b, &t, 2); }
    else if (es == 4) { uint32_t t = (uint32_t)bits; memcpy(b, &t, 4); }
    else memcpy(b, &bits, 8);
    return afo_cpu_load_double(dt, b);
}

static afo_array *rand_node(afo_op op, afo_array *key, afo_attrs *a) {
    if (!key) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "%s: key is NULL", op_name(op));
    return afo_node(op, &key, 1, a);
}

afo_array *afo_random_key(uint64_t seed) {
    uint32_t k[2] = {(uint32_t)(seed >> 32), (uint32_t)seed};
    int64_t two = 2;
    return afo_array_from_data(k, AFO_UINT32, 1, &two);
}

afo_array *afo_random_split(afo_array *key, int num) {
    if (num < 0) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "random_split: num %d is negative", num);
    afo_attrs a = {.i = {2, num, 2}, .ni = ATTR_TYPE + 1};
    a.i[ATTR_TYPE] = (int64_t)SPLIT_DOMAIN;
    return rand_node(AFO_OP_RANDOM_BITS, key, &a);
}

afo_array *afo_random_uniform(afo_array *key, double low, double high, int ndim, const int64_t *shape,
                              afo_dtype dtype) {
    afo_attrs a;
    if (shape_attrs("random_uniform", ndim, shape, dtype, &a) != AFO_OK) return NULL;
    if (!isfinite(low) || !isfinite(high) || !(low < high))
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "random_uniform: need finite low < high, got [%g, %g)", low,
                              high);
    double lo = round_to(dtype, low), hi = round_to(dtype, high);
    if (lo < low) lo = step(dtype, lo, false);
    if (hi >= high) hi = step(dtype, hi, true);
    if (lo > hi)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "random_uniform: no %s value lies in [%g, %g)",
                              afo_dtype_name(dtype), low, high);
    a.f[0] = low;
    a.f[1] = high;
    a.f[2] = lo;
    a.f[3] = hi;
    return rand_node(AFO_OP_RANDOM_UNIFORM, key, &a);
}

afo_array *afo_random_normal(afo_array *key, double mean, double std, int ndim, const int64_t *shape,
                             afo_dtype dtype) {
    afo_attrs a;
    if (shape_attrs("random_normal", ndim, shape, dtype, &a) != AFO_OK) return NULL;
    a.f[0] = mean;
    a.f[1] = std;
    return rand_node(AFO_OP_RANDOM_NORMAL, key, &a);
}

/* Gumbel-max: argmax(logits + g) with g = -log(-log(u)) samples
 * softmax(logits). u >= FLT_MIN keeps both logs finite. */
afo_array *afo_random_categorical(afo_array *key, afo_array *logits, int axis) {
    if (!logits) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "random_categorical: logits is NULL");
    if (afo_normalize_axis(axis, logits->ndim) < 0)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "random_categorical: axis %d out of range for %d dims", axis,
                              logits->ndim);
    afo_dtype ct = logits->dtype == AFO_FLOAT64 ? AFO_FLOAT64 : AFO_FLOAT32;
    afo_array *u = afo_random_uniform(key, FLT_MIN, 1.0, logits->ndim, logits->shape, ct);
    afo_array *g = ow_neg(ow_log(ow_neg(ow_log(u))));
    afo_array *z = ow_add(afo_astype(logits, ct), g);
    afo_array *r = z ? afo_argmax(z, axis, 0) : NULL;
    afo_release(z);
    return r;
}

void afo_register_random_ops(void) {
    afo_op_register(AFO_OP_RANDOM_BITS, &def_bits);
    afo_op_register(AFO_OP_RANDOM_UNIFORM, &def_uniform);
    afo_op_register(AFO_OP_RANDOM_NORMAL, &def_normal);
}
