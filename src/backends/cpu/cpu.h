/* CPU backend: dtype conversion and the strided elementwise engine that
 * elementwise, copy and astype kernels share. */
#ifndef AFO_CPU_H
#define AFO_CPU_H

#include "core/internal.h"

/* Kernels compute in one of three types: float32 for float32/float16/
 * bfloat16, float64 for float64, int64 for integers and bool. */
typedef enum afo_ctype { AFO_CT_F32 = 0, AFO_CT_F64, AFO_CT_I64 } afo_ctype;
afo_ctype afo_cpu_ctype_of(afo_dtype t);
/* The type to convert through when copying `from` into `to` exactly. */
afo_ctype afo_cpu_ctype_between(afo_dtype from, afo_dtype to);
size_t afo_cpu_ctype_size(afo_ctype ct);

/* n elements at src (element stride `stride`, may be 0) -> contiguous dst. */
void afo_cpu_load_row(afo_dtype dt, const void *src, int64_t stride, int64_t n, afo_ctype ct, void *dst);
/* Contiguous compute values -> n elements at dst (element stride `stride`).
 * Float to integer truncates toward zero, saturating; to bool tests != 0. */
void afo_cpu_store_row(afo_ctype ct, const void *src, int64_t n, afo_dtype dt, void *dst, int64_t stride);

double afo_cpu_load_double(afo_dtype dt, const void *p);
void afo_cpu_store_double(afo_dtype dt, void *p, double v);

/* Evaluated (possibly strided) src -> dense C-order dst of dst_dtype. */
void afo_cpu_copy(const afo_array *src, void *dst, afo_dtype dst_dtype);

/* fn(n, out, in[]) on contiguous compute-type chunks. */
typedef void (*afo_ew_fn)(int64_t n, void *out, const void *const *in);
#define AFO_EW_MAX_INPUTS 4
/* Allocates out and computes it chunk by chunk from inputs broadcast to
 * out's shape, converting through `ct`, threaded over chunks. */
afo_status afo_cpu_elementwise(afo_array *out, afo_array *const *in, int nin, afo_ctype ct, afo_ew_fn fn);

/* Copies src, broadcast to dst's shape and converted, into the region dst
 * views (dst: an evaluated array, possibly a strided view). */
void afo_cpu_assign(afo_array *dst, const afo_array *src);

/* Calls row_fn for every row (all axes but the last) of `a`, giving the row
 * data pointer; helpers for kernels that work row by row. */
typedef struct afo_row_iter {
    int ndim; /* number of outer axes */
    int64_t shape[AFO_MAX_DIMS], strides[AFO_MAX_DIMS];
    int64_t rows;
} afo_row_iter;
void afo_row_iter_init(afo_row_iter *it, const afo_array *a);
/* Element offset (from the array's data pointer) of row r. */
int64_t afo_row_iter_offset(const afo_row_iter *it, int64_t r);

#endif
