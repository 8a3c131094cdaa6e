/* Internals shared by the safetensors header reader, the weights table and
 * the writer. */
#ifndef AFO_IO_SAFETENSORS_H
#define AFO_IO_SAFETENSORS_H

#include <cjson/cJSON.h>

#include "afo/io.h"
#include "core/internal.h"

/* Tensors are mapped (read) and written in host byte order, which the format
 * defines as little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

/* The reference implementation's cap on the JSON header. */
#define ST_MAX_HEADER_BYTES 100000000u

typedef struct st_tensor {
    char *name; /* owned */
    afo_dtype dtype;
    int ndim;
    int64_t shape[AFO_MAX_DIMS];
    size_t begin, end; /* byte range within the file's data section */
    int file;          /* index into the weights' file table */
    bool misaligned;   /* data not aligned to its element size: copied on get */
} st_tensor;

typedef struct st_list {
    st_tensor *items;
    int n, cap;
} st_list;

typedef struct st_file {
    char *path; /* owned */
    afo_mapping *map;
    size_t data_start; /* 8 + header length: where data_offsets count from */
    cJSON *metadata;   /* the file's __metadata__ object, or NULL */
} st_file;

/* Maps `path`, validates its whole header and appends its tensors (tagged
 * with `file_index`) to `list`. On failure *file holds nothing to free and
 * `list` is as it was. */
afo_status st_file_open(const char *path, int file_index, st_file *file, st_list *list);
void st_file_close(st_file *file);
void st_list_free(st_list *list);

/* The format's name for an afo dtype ("F32", "BF16", ...). */
const char *st_dtype_name(afo_dtype dtype);
/* Orders tensors by name (qsort comparator). */
int st_tensor_cmp_name(const void *a, const void *b);

#endif
