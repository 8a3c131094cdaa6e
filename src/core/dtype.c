#include <math.h>

#include "core/internal.h"

static const struct {
    const char *name;
    size_t size;
} g_dtypes[AFO_DTYPE_COUNT] = {
    [AFO_BOOL] = {"bool", 1},       [AFO_INT8] = {"int8", 1},       [AFO_UINT8] = {"uint8", 1},
    [AFO_INT32] = {"int32", 4},     [AFO_UINT32] = {"uint32", 4},   [AFO_INT64] = {"int64", 8},
    [AFO_FLOAT16] = {"float16", 2}, [AFO_BFLOAT16] = {"bfloat16", 2},
    [AFO_FLOAT32] = {"float32", 4}, [AFO_FLOAT64] = {"float64", 8},
};

size_t afo_dtype_size(afo_dtype t) { return (unsigned)t < AFO_DTYPE_COUNT ? g_dtypes[t].size : 0; }

const char *afo_dtype_name(afo_dtype t) {
    return (unsigned)t < AFO_DTYPE_COUNT ? g_dtypes[t].name : "invalid-dtype";
}

int afo_dtype_from_name(const char *name) {
    for (int t = 0; t < AFO_DTYPE_COUNT; t++)
        if (strcmp(name, g_dtypes[t].name) == 0) return t;
    return -1;
}

int afo_dtype_is_float(afo_dtype t) {
    return t == AFO_FLOAT16 || t == AFO_BFLOAT16 || t == AFO_FLOAT32 || t == AFO_FLOAT64;
}

int afo_dtype_is_integer(afo_dtype t) {
    return t == AFO_INT8 || t == AFO_UINT8 || t == AFO_INT32 || t == AFO_UINT32 || t == AFO_INT64;
}

/* Bits of range an integer dtype needs, with signedness, to pick the
 * smallest integer type holding both operands (as NumPy does). */
static afo_dtype promote_ints(afo_dtype a, afo_dtype b) {
    bool sa = a == AFO_INT8 || a == AFO_INT32 || a == AFO_INT64;
    bool sb = b == AFO_INT8 || b == AFO_INT32 || b == AFO_INT64;
    size_t za = afo_dtype_size(a), zb = afo_dtype_size(b);
    if (sa == sb) return za >= zb ? a : b;
    /* mixed signedness: a signed type wider than the unsigned one */
    size_t zu = sa ? zb : za, zs = sa ? za : zb;
    size_t need = zu * 2 > zs ? zu * 2 : zs;
    if (need <= 1) return AFO_INT8;
    if (need <= 4) return AFO_INT32;
    return AFO_INT64;
}

afo_dtype afo_promote_types(afo_dtype a, afo_dtype b) {
    if (a == b) return a;
    if (a == AFO_BOOL) return b;
    if (b == AFO_BOOL) return a;
    bool fa = afo_dtype_is_float(a), fb = afo_dtype_is_float(b);
    if (fa && !fb) return a;
    if (fb && !fa) return b;
    if (!fa) return promote_ints(a, b);
    if (a == AFO_FLOAT64 || b == AFO_FLOAT64) return AFO_FLOAT64;
    if (a == AFO_FLOAT32 || b == AFO_FLOAT32) return AFO_FLOAT32;
    return AFO_FLOAT32; /* float16 with bfloat16 */
}

float afo_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t afo_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float afo_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t afo_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return sign | 0x7e00u;          /* NaN */
    if (au >= 0x477ff000u) return sign | 0x7c00u;         /* overflow (>= 65520) -> inf */
    if (au < 0x38800000u) {                               /* subnormal or zero in f16 */
        if (au < 0x33000000u) return sign;                /* < 2^-25 rounds to 0 */
        uint32_t e = au >> 23, m = (au & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150) = r * 2^-24 */
        uint32_t half = 1u << (shift - 1), rest = m & ((1u << shift) - 1);
        uint32_t r = m >> shift;
        if (rest > half || (rest == half && (r & 1u))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = au - 0x38000000u; /* rebias 127 -> 15 */
    uint32_t rest = r & 0x1fffu, out = r >> 13;
    if (rest > 0x1000u || (rest == 0x1000u && (out & 1u))) out++;
    return sign | (uint16_t)out;
}
