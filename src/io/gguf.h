/* GGUF writer internals shared by the tensor exporter (gguf_write.c) and the
 * tokenizer metadata (gguf_vocab.c). */
#ifndef AFO_IO_GGUF_H
#define AFO_IO_GGUF_H

#include <stdbool.h>
#include <stdint.h>

#include "afo/afo.h"

/* GGUF metadata value types. */
enum {
    GGUF_UINT8 = 0, GGUF_INT8, GGUF_UINT16, GGUF_INT16, GGUF_UINT32, GGUF_INT32, GGUF_FLOAT32, GGUF_BOOL,
    GGUF_STRING, GGUF_ARRAY, GGUF_UINT64, GGUF_INT64, GGUF_FLOAT64
};

/* The serialized key-value section, built in memory: it precedes the tensor
 * infos, whose count must be known first. Appends after an allocation
 * failure are ignored and leave `failed` set. */
typedef struct gguf_kv {
    uint8_t *p;
    size_t len, cap;
    uint64_t count;
    bool failed;
} gguf_kv;

void gguf_put(gguf_kv *kv, const void *data, size_t n);
void gguf_put_u32(gguf_kv *kv, uint32_t v);
void gguf_put_u64(gguf_kv *kv, uint64_t v);
void gguf_put_str(gguf_kv *kv, const char *s); /* uint64 length + bytes */
void gguf_kv_string(gguf_kv *kv, const char *key, const char *v);
void gguf_kv_u32(gguf_kv *kv, const char *key, uint32_t v);
void gguf_kv_f32(gguf_kv *kv, const char *key, float v);
void gguf_kv_bool(gguf_kv *kv, const char *key, bool v);
/* Starts an array value; the caller appends `count` elements of `type`. */
void gguf_kv_array(gguf_kv *kv, const char *key, uint32_t type, uint64_t count);

/* The parsed JSON file, or NULL: with an error, unless the file is absent
 * and `optional`. */
struct cJSON;
struct cJSON *gguf_read_json(const char *path, bool optional);

/* tokenizer.ggml.* for the tokenizer.json / tokenizer_config.json in dir,
 * padded to vocab_size tokens. */
afo_status gguf_add_vocab(gguf_kv *kv, const char *dir, int64_t vocab_size, const afo_generation_config *gc);

#endif
