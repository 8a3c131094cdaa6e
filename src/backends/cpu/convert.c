/* Dtype conversion between storage types and compute types. */
#include <math.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/gemm.h"

afo_ctype afo_cpu_ctype_of(afo_dtype t) {
    if (t == AFO_FLOAT64) return AFO_CT_F64;
    if (afo_dtype_is_float(t)) return AFO_CT_F32;
    return AFO_CT_I64;
}

afo_ctype afo_cpu_ctype_between(afo_dtype from, afo_dtype to) {
    afo_ctype a = afo_cpu_ctype_of(from), b = afo_cpu_ctype_of(to);
    if (a == b) return a;
    if (a == AFO_CT_F32 && b == AFO_CT_I64) return AFO_CT_F32;
    return AFO_CT_F64; /* int64 <-> float goes through double */
}

size_t afo_cpu_ctype_size(afo_ctype ct) { return ct == AFO_CT_F32 ? 4 : 8; }

#define LOAD_LOOP(T, EXPR)                                    \
    do {                                                      \
        const T *s = src;                                     \
        for (int64_t i = 0; i < n; i++) {                     \
            T v = s[i * stride];                              \
            o[i] = (EXPR);                                    \
        }                                                     \
    } while (0)

#define LOAD_ALL(OT)                                                        \
    do {                                                                    \
        OT *o = dst;                                                        \
        switch (dt) {                                                       \
        case AFO_BOOL: LOAD_LOOP(uint8_t, (OT)(v != 0)); break;             \
        case AFO_INT8: LOAD_LOOP(int8_t, (OT)v); break;                     \
        case AFO_UINT8: LOAD_LOOP(uint8_t, (OT)v); break;                   \
        case AFO_INT32: LOAD_LOOP(int32_t, (OT)v); break;                   \
        case AFO_UINT32: LOAD_LOOP(uint32_t, (OT)v); break;                 \
        case AFO_INT64: LOAD_LOOP(int64_t, (OT)v); break;                   \
        case AFO_FLOAT16: LOAD_LOOP(uint16_t, (OT)afo_f16_to_f32(v)); break; \
        case AFO_BFLOAT16: LOAD_LOOP(uint16_t, (OT)afo_bf16_to_f32(v)); break; \
        case AFO_FLOAT32: LOAD_LOOP(float, (OT)v); break;                   \
        case AFO_FLOAT64: LOAD_LOOP(double, (OT)v); break;                  \
        default: break;                                                     \
        }                                                                   \
    } while (0)

void afo_cpu_load_row(afo_dtype dt, const void *src, int64_t stride, int64_t n, afo_ctype ct, void *dst) {
    if (ct == AFO_CT_F32) {
        if (stride == 1 && (dt == AFO_FLOAT32 || dt == AFO_FLOAT16 || dt == AFO_BFLOAT16)) {
            afo_cpu_convert_row(dt, src, AFO_FLOAT32, dst, n); /* SIMD */
            return;
        }
        LOAD_ALL(float);
    } else if (ct == AFO_CT_F64) {
        LOAD_ALL(double);
    } else {
        LOAD_ALL(int64_t);
    }
}

/* Saturating float -> integer conversion (C casts of out-of-range values are
 * undefined behaviour). NaN becomes 0. */
static inline int64_t sat_i64(double v, double lo, double hi) {
    if (!(v == v)) return 0;
    if (v <= lo) return (int64_t)lo;
    if (v >= hi) return (int64_t)hi;
    return (int64_t)v;
}

#define STORE_LOOP(T, EXPR)                                  \
    do {                                                     \
        T *d = dst;                                          \
        for (int64_t i = 0; i < n; i++) {                    \
            IT v = s[i];                                     \
            d[i * stride] = (EXPR);                          \
        }                                                    \
    } while (0)

#define STORE_FLOAT_SRC(IT)                                                                   \
    do {                                                                                      \
        const IT *s = src;                                                                    \
        switch (dt) {                                                                         \
        case AFO_BOOL: STORE_LOOP(uint8_t, v != 0); break;                                    \
        case AFO_INT8: STORE_LOOP(int8_t, (int8_t)sat_i64(v, -128.0, 127.0)); break;          \
        case AFO_UINT8: STORE_LOOP(uint8_t, (uint8_t)sat_i64(v, 0.0, 255.0)); break;          \
        case AFO_INT32: STORE_LOOP(int32_t, (int32_t)sat_i64(v, -2147483648.0, 2147483647.0)); break; \
        case AFO_UINT32: STORE_LOOP(uint32_t, (uint32_t)sat_i64(v, 0.0, 4294967295.0)); break; \
        case AFO_INT64: STORE_LOOP(int64_t, sat_i64(v, -9223372036854775808.0, 9223372036854774784.0)); break; \
        case AFO_FLOAT16: STORE_LOOP(uint16_t, afo_f32_to_f16((float)v)); break;              \
        case AFO_BFLOAT16: STORE_LOOP(uint16_t, afo_f32_to_bf16((float)v)); break;            \
        case AFO_FLOAT32: STORE_LOOP(float, (float)v); break;                                 \
        case AFO_FLOAT64: STORE_LOOP(double, (double)v); break;                               \
        default: break;                                                                       \
        }                                                                                     \
    } while (0)

void afo_cpu_store_row(afo_ctype ct, const void *src, int64_t n, afo_dtype dt, void *dst, int64_t stride) {
    if (ct == AFO_CT_F32) {
        if (stride == 1 && (dt == AFO_FLOAT32 || dt == AFO_FLOAT16 || dt == AFO_BFLOAT16)) {
            afo_cpu_convert_row(AFO_FLOAT32, src, dt, dst, n); /* SIMD */
            return;
        }
#define IT float
        STORE_FLOAT_SRC(float);
#undef IT
    } else if (ct == AFO_CT_F64) {
#define IT double
        STORE_FLOAT_SRC(double);
#undef IT
    } else {
#define IT int64_t
        const int64_t *s = src;
        switch (dt) {
        case AFO_BOOL: STORE_LOOP(uint8_t, v != 0); break;
        case AFO_INT8: STORE_LOOP(int8_t, (int8_t)v); break;
        case AFO_UINT8: STORE_LOOP(uint8_t, (uint8_t)v); break;
        case AFO_INT32: STORE_LOOP(int32_t, (int32_t)v); break;
        case AFO_UINT32: STORE_LOOP(uint32_t, (uint32_t)v); break;
        case AFO_INT64: STORE_LOOP(int64_t, v); break;
        case AFO_FLOAT16: STORE_LOOP(uint16_t, afo_f32_to_f16((float)v)); break;
        case AFO_BFLOAT16: STORE_LOOP(uint16_t, afo_f32_to_bf16((float)v)); break;
        case AFO_FLOAT32: STORE_LOOP(float, (float)v); break;
        case AFO_FLOAT64: STORE_LOOP(double, (double)v); break;
        default: break;
        }
#undef IT
    }
}

double afo_cpu_load_double(afo_dtype dt, const void *p) {
    double v;
    afo_cpu_load_row(dt, p, 1, 1, AFO_CT_F64, &v);
    return v;
}

void afo_cpu_store_double(afo_dtype dt, void *p, double v) {
    if (afo_cpu_ctype_of(dt) == AFO_CT_I64) {
        int64_t iv = sat_i64(v, -9223372036854775808.0, 9223372036854774784.0);
        afo_cpu_store_row(AFO_CT_I64, &iv, 1, dt, p, 1);
    } else {
        afo_cpu_store_row(AFO_CT_F64, &v, 1, dt, p, 1);
    }
}
