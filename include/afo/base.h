/* afo — base types: status codes, errors, dtypes, devices. */
#ifndef AFO_BASE_H
#define AFO_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AFO_MAX_DIMS 8

/* Every fallible call returns an afo_status (or NULL); afo_last_error() then
 * holds a sentence naming the file, tensor, op or argument at fault. */
typedef enum afo_status {
    AFO_OK = 0,
    AFO_ERR_INVALID_ARGUMENT, /* bad shape, dtype, axis, option value */
    AFO_ERR_OUT_OF_MEMORY,    /* allocation failed or memory limit reached */
    AFO_ERR_IO,               /* file could not be opened, read or written */
    AFO_ERR_FORMAT,           /* malformed file contents */
    AFO_ERR_UNSUPPORTED,      /* valid request this build cannot serve */
    AFO_ERR_INTERNAL,
    AFO_ERR_REJECTED          /* the input broke a rule it carries (a chat template's raise_exception) */
} afo_status;

/* Text of the last error on this thread ("" when none). */
const char *afo_last_error(void);
/* Status of the last error on this thread (AFO_OK when none): for functions
 * that return NULL on failure. */
afo_status afo_last_status(void);
void afo_clear_error(void);
const char *afo_status_name(afo_status s);

typedef enum afo_dtype {
    AFO_BOOL = 0,
    AFO_INT8,
    AFO_UINT8,
    AFO_INT32,
    AFO_UINT32,
    AFO_INT64,
    AFO_FLOAT16,
    AFO_BFLOAT16,
    AFO_FLOAT32,
    AFO_FLOAT64,
    AFO_DTYPE_COUNT
} afo_dtype;

size_t afo_dtype_size(afo_dtype t);
const char *afo_dtype_name(afo_dtype t);      /* "float32", "bfloat16", ... */
int afo_dtype_is_float(afo_dtype t);
int afo_dtype_is_integer(afo_dtype t);        /* bool excluded */
/* Parses names as afo_dtype_name prints them; returns -1 when unknown. */
int afo_dtype_from_name(const char *name);
/* Result dtype of a binary arithmetic op (NumPy/MLX style promotion). */
afo_dtype afo_promote_types(afo_dtype a, afo_dtype b);

typedef enum afo_device { AFO_CPU = 0, AFO_CUDA = 1, AFO_DEVICE_COUNT } afo_device;

/* Half-precision conversions (round to nearest even). */
float afo_f16_to_f32(uint16_t h);
uint16_t afo_f32_to_f16(float f);
float afo_bf16_to_f32(uint16_t h);
uint16_t afo_f32_to_bf16(float f);

/* Threads used by heavy CPU ops; n <= 0 restores the default (the CPUs the
 * process may run on). */
void afo_set_threads(int n);
int afo_get_threads(void);

const char *afo_version(void);

#ifdef __cplusplus
}
#endif
#endif
