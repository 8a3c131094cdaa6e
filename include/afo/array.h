/* afo — arrays: refcounted handles to lazily computed, possibly strided data. */
#ifndef AFO_ARRAY_H
#define AFO_ARRAY_H

#include <stdio.h>
#include "afo/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An array is a node of the computation graph: either data (a leaf, or a node
 * already evaluated) or an op applied to input arrays. Ops never compute;
 * afo_eval does. Handles are refcounted: every function returning an
 * afo_array* returns a new reference the caller must afo_release. */
typedef struct afo_array afo_array;

afo_array *afo_retain(afo_array *a);
void afo_release(afo_array *a); /* NULL is fine */

/* Copies `data` (C order, dtype-sized elements). */
afo_array *afo_array_from_data(const void *data, afo_dtype dtype, int ndim, const int64_t *shape);
afo_array *afo_zeros(afo_dtype dtype, int ndim, const int64_t *shape);
afo_array *afo_full(double value, afo_dtype dtype, int ndim, const int64_t *shape);
afo_array *afo_scalar(double value, afo_dtype dtype);
/* A 0-d array of x's dtype: the common "x op constant" case. */
afo_array *afo_scalar_like(const afo_array *x, double value);
/* 0, 1, ..., n-1 times step plus start. */
afo_array *afo_arange(double start, double step, int64_t n, afo_dtype dtype);

afo_dtype afo_array_dtype(const afo_array *a);
int afo_array_ndim(const afo_array *a);
const int64_t *afo_array_shape(const afo_array *a);
int64_t afo_array_dim(const afo_array *a, int axis); /* negative axes count from the end */
int64_t afo_array_size(const afo_array *a);          /* number of elements */
size_t afo_array_nbytes(const afo_array *a);
int afo_array_is_evaluated(const afo_array *a);

/* Computes the given arrays and everything they depend on, each node once.
 * Evaluated arrays keep their data and drop their graph inputs, so
 * intermediates nobody holds are freed as soon as their last consumer ran. */
afo_status afo_eval(afo_array *const *arrays, int n);
afo_status afo_eval1(afo_array *a);

/* Evaluates, then returns a pointer to contiguous C-order data valid while
 * `a` lives (a strided view is made contiguous in place first). */
const void *afo_array_data(afo_array *a);
/* Evaluates and copies the elements, converted to `dtype`, into dst. */
afo_status afo_array_read(afo_array *a, afo_dtype dtype, void *dst, size_t dst_bytes);
/* Evaluates, then overwrites the elements of a contiguous array in place,
 * where its data lives (on a GPU: queued there, in order with its work):
 * the inputs of a recording between replays (afo/device.h). nbytes must be
 * the array's size in bytes, in its dtype. Every view of the same data sees
 * the change; an array whose bytes are a file's or also held on another
 * device is refused. */
afo_status afo_array_write(afo_array *a, const void *src, size_t nbytes);
/* Evaluates a one-element array and returns its value as a double. */
afo_status afo_array_item(afo_array *a, double *value);

/* Graph inspection (for compile, autodiff and debugging). */
int afo_array_op(const afo_array *a);      /* afo_op id; AFO_OP_NONE for data */
const char *afo_array_op_name(const afo_array *a);
int afo_array_num_inputs(const afo_array *a);
afo_array *afo_array_input(const afo_array *a, int i); /* borrowed */

typedef enum afo_dump_format { AFO_DUMP_TEXT = 0, AFO_DUMP_DOT = 1 } afo_dump_format;
/* Writes the graph reaching `outputs`: one line (or dot node) per array with
 * its id, op, attributes, dtype, shape and inputs. */
afo_status afo_graph_dump(FILE *f, afo_array *const *outputs, int n, afo_dump_format format);

#ifdef __cplusplus
}
#endif
#endif
