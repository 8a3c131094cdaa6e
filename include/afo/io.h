/* afo — safetensors weights: zero-copy loading (mmap) and atomic saving. */
#ifndef AFO_IO_H
#define AFO_IO_H

#include "afo/array.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct afo_weights afo_weights;

/* Opens a .safetensors file, a model.safetensors.index.json, or a directory
 * holding either. Every header is validated completely before anything is
 * returned; no tensor data is read (arrays are views into the mapping). */
afo_weights *afo_weights_open(const char *path);
void afo_weights_close(afo_weights *w); /* arrays handed out stay valid */
int afo_weights_count(const afo_weights *w);
const char *afo_weights_name(const afo_weights *w, int i);
/* New reference to the named tensor, or NULL (error names the tensor). */
afo_array *afo_weights_get(afo_weights *w, const char *name);
/* The value of a `__metadata__` key of the (first) file, or NULL. */
const char *afo_weights_metadata(const afo_weights *w, const char *key);

/* Writes tensors (evaluating them) and optional string metadata to `path`
 * through a temporary file renamed into place. */
afo_status afo_safetensors_save(const char *path, int n, const char *const *names,
                                afo_array *const *arrays, int nmeta,
                                const char *const *meta_keys, const char *const *meta_values);

#ifdef __cplusplus
}
#endif
#endif
