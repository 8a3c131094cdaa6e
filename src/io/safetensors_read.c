/* Safetensors header parsing and validation for one file.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON mapping
 * tensor names to {dtype, shape, data_offsets} (plus an optional
 * __metadata__ object of strings), then the data section that data_offsets
 * index. Every rule is checked before a tensor is handed out, because the
 * arrays built on top point straight into the mapping: a bad offset would
 * become an out-of-bounds read in some kernel much later. */
#include <math.h>
#include <stdlib.h>

#include "io/safetensors.h"

/* JSON numbers arrive as doubles; above 2^53 they are no longer exact
 * integers, and no real file has dimensions or offsets that large. */
#define ST_MAX_EXACT_INT 9007199254740992.0

static const struct {
    const char *name;
    afo_dtype dtype;
} g_dtypes[] = {
    {"BOOL", AFO_BOOL}, {"I8", AFO_INT8},     {"U8", AFO_UINT8},    {"I32", AFO_INT32},
    {"U32", AFO_UINT32}, {"I64", AFO_INT64},  {"F16", AFO_FLOAT16}, {"BF16", AFO_BFLOAT16},
    {"F32", AFO_FLOAT32}, {"F64", AFO_FLOAT64},
};

/* Valid in the format, but afo has no matching dtype. */
static const char *const g_unsupported_dtypes[] = {
    "I16", "U16", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64",
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

const char *st_dtype_name(afo_dtype dtype) {
    for (size_t i = 0; i < COUNT_OF(g_dtypes); i++)
        if (g_dtypes[i].dtype == dtype) return g_dtypes[i].name;
    return NULL;
}

int st_tensor_cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

void st_list_free(st_list *list) {
    for (int i = 0; i < list->n; i++) free(list->items[i].name);
    free(list->items);
    *list = (st_list){0};
}

static afo_status list_push(st_list *list, const st_tensor *t) {
    if (list->n == list->cap) {
        int cap = list->cap ? list->cap * 2 : 64;
        st_tensor *grown = realloc(list->items, (size_t)cap * sizeof *grown);
        if (!grown) return afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory listing tensors");
        list->items = grown;
        list->cap = cap;
    }
    list->items[list->n++] = *t;
    return AFO_OK;
}

/* ------------------------------------------------------------ the prefix */

static afo_status read_header_length(const char *path, const afo_mapping *m, size_t *len) {
    if (m->length < 8)
        return afo_error(AFO_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
                         path, m->length);
    const unsigned char *p = m->base;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > ST_MAX_HEADER_BYTES)
        return afo_error(AFO_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", path,
                         (unsigned long long)n, ST_MAX_HEADER_BYTES);
    if (n > m->length - 8)
        return afo_error(AFO_ERR_FORMAT, "%s: header length %llu exceeds the %zu bytes that follow it", path,
                         (unsigned long long)n, m->length - 8);
    *len = (size_t)n;
    return AFO_OK;
}

/* cJSON wants a terminated string; the mapping has none, so parse a copy. */
static afo_status parse_header_json(const char *path, const afo_mapping *m, size_t len, cJSON **root) {
    char *text = malloc(len + 1);
    if (!text) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory reading the header", path);
    memcpy(text, (const char *)m->base + 8, len);
    text[len] = '\0';
    const char *end = NULL;
    *root = cJSON_ParseWithOpts(text, &end, false);
    afo_status st = AFO_OK;
    if (!*root) {
        st = afo_error(AFO_ERR_FORMAT, "%s: header is not valid JSON (error at byte %td)", path,
                       end ? end - text : (ptrdiff_t)0);
    } else {
        /* Writers pad the header with spaces; anything else (an embedded
         * NUL, a second value) means the length or the JSON is wrong. */
        size_t at = (size_t)(end - text);
        while (at < len && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) at++;
        if (at < len) st = afo_error(AFO_ERR_FORMAT, "%s: unexpected bytes after the header JSON at byte %zu", path, at);
        else if (!cJSON_IsObject(*root)) st = afo_error(AFO_ERR_FORMAT, "%s: header JSON is not an object", path);
        if (st != AFO_OK) {
            cJSON_Delete(*root);
            *root = NULL;
        }
    }
    free(text);
    return st;
}

/* ------------------------------------------------------------ one entry */

/* A JSON number that is a non-negative integer representable exactly. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_EXACT_INT) || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

static afo_status parse_dtype(const char *path, const char *name, const cJSON *v, afo_dtype *dtype) {
    if (!v) return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": missing \"dtype\"", path, name);
    if (!cJSON_IsString(v))
        return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": \"dtype\" is not a string", path, name);
    for (size_t i = 0; i < COUNT_OF(g_dtypes); i++)
        if (strcmp(v->valuestring, g_dtypes[i].name) == 0) {
            *dtype = g_dtypes[i].dtype;
            return AFO_OK;
        }
    for (size_t i = 0; i < COUNT_OF(g_unsupported_dtypes); i++)
        if (strcmp(v->valuestring, g_unsupported_dtypes[i]) == 0)
            return afo_error(AFO_ERR_UNSUPPORTED, "%s: tensor \"%s\": unsupported dtype %s", path, name,
                             v->valuestring);
    return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%s\"", path, name, v->valuestring);
}

static afo_status parse_shape(const char *path, const char *name, const cJSON *v, st_tensor *t) {
    if (!v) return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": missing \"shape\"", path, name);
    if (!cJSON_IsArray(v))
        return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": \"shape\" is not an array", path, name);
    int ndim = cJSON_GetArraySize(v);
    if (ndim > AFO_MAX_DIMS)
        return afo_error(AFO_ERR_UNSUPPORTED, "%s: tensor \"%s\": %d dimensions, afo supports at most %d", path,
                         name, ndim, AFO_MAX_DIMS);
    int axis = 0;
    for (const cJSON *d = v->child; d; d = d->next, axis++) {
        uint64_t dim;
        if (cJSON_IsNumber(d) && d->valuedouble < 0)
            return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": negative dimension %g at axis %d", path, name,
                             d->valuedouble, axis);
        if (!json_uint(d, &dim))
            return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": dimension %d is not a non-negative integer",
                             path, name, axis);
        t->shape[axis] = (int64_t)dim;
    }
    t->ndim = ndim;
    return AFO_OK;
}

static afo_status parse_offsets(const char *path, const char *name, const cJSON *v, st_tensor *t) {
    if (!v) return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": missing \"data_offsets\"", path, name);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": \"data_offsets\" is not an array [begin, end]",
                         path, name);
    uint64_t begin, end;
    if (!json_uint(v->child, &begin) || !json_uint(v->child->next, &end))
        return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": \"data_offsets\" are not non-negative integers",
                         path, name);
    if (begin > end)
        return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": data_offsets begin %llu > end %llu", path, name,
                         (unsigned long long)begin, (unsigned long long)end);
    t->begin = (size_t)begin;
    t->end = (size_t)end;
    return AFO_OK;
}

/* Shape x element size must be exactly the byte range, computed without
 * overflow (a crafted shape could otherwise wrap around to match). */
static afo_status check_size(const char *path, const char *name, const st_tensor *t) {
    uint64_t nbytes = afo_dtype_size(t->dtype);
    char shape[160];
    for (int i = 0; i < t->ndim; i++) {
        uint64_t dim = (uint64_t)t->shape[i];
        if (dim && nbytes > (uint64_t)INT64_MAX / dim)
            return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": shape %s overflows the size computation", path,
                             name, afo_shape_str(t->ndim, t->shape, shape, sizeof shape));
        nbytes *= dim;
    }
    if (nbytes != t->end - t->begin)
        return afo_error(AFO_ERR_FORMAT,
                         "%s: tensor \"%s\": shape %s of %s needs %llu bytes but data_offsets span %zu", path,
                         name, afo_shape_str(t->ndim, t->shape, shape, sizeof shape), st_dtype_name(t->dtype),
                         (unsigned long long)nbytes, t->end - t->begin);
    return AFO_OK;
}

/* Rejects keys the format does not define, and repeats of defined ones
 * (cJSON keeps duplicates and would silently use the first). */
static afo_status check_entry_keys(const char *path, const char *name, const cJSON *entry) {
    static const char *const known[] = {"dtype", "shape", "data_offsets"};
    bool seen[COUNT_OF(known)] = {false};
    for (const cJSON *f = entry->child; f; f = f->next) {
        size_t k = 0;
        while (k < COUNT_OF(known) && strcmp(f->string, known[k]) != 0) k++;
        if (k == COUNT_OF(known))
            return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": unknown key \"%s\"", path, name, f->string);
        if (seen[k])
            return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": key \"%s\" appears twice", path, name, f->string);
        seen[k] = true;
    }
    return AFO_OK;
}

static afo_status parse_entry(const char *path, const cJSON *entry, size_t data_start, size_t data_len,
                              st_tensor *t) {
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": entry is not an object", path, name);
    AFO_TRY(check_entry_keys(path, name, entry));
    AFO_TRY(parse_dtype(path, name, cJSON_GetObjectItemCaseSensitive(entry, "dtype"), &t->dtype));
    AFO_TRY(parse_shape(path, name, cJSON_GetObjectItemCaseSensitive(entry, "shape"), t));
    AFO_TRY(parse_offsets(path, name, cJSON_GetObjectItemCaseSensitive(entry, "data_offsets"), t));
    AFO_TRY(check_size(path, name, t));
    if (t->end > data_len)
        return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%zu, %zu] run past the %zu-byte data section",
                         path, name, t->begin, t->end, data_len);
    /* The mapping is page-aligned, so the file offset decides alignment. A
     * misaligned tensor is still valid safetensors; it gets copied into an
     * aligned buffer on get so no kernel ever reads misaligned elements. */
    t->misaligned = (data_start + t->begin) % afo_dtype_size(t->dtype) != 0;
    return AFO_OK;
}

static afo_status check_metadata(const char *path, const cJSON *meta) {
    if (!cJSON_IsObject(meta)) return afo_error(AFO_ERR_FORMAT, "%s: __metadata__ is not an object", path);
    for (const cJSON *kv = meta->child; kv; kv = kv->next)
        if (!cJSON_IsString(kv))
            return afo_error(AFO_ERR_FORMAT, "%s: __metadata__ value of \"%s\" is not a string", path, kv->string);
    return AFO_OK;
}

/* ------------------------------------------------------------ whole file */

static afo_status check_duplicates(const char *path, st_tensor *t, int n) {
    qsort(t, (size_t)n, sizeof *t, st_tensor_cmp_name);
    for (int i = 1; i < n; i++)
        if (strcmp(t[i - 1].name, t[i].name) == 0)
            return afo_error(AFO_ERR_FORMAT, "%s: duplicate tensor name \"%s\"", path, t[i].name);
    return AFO_OK;
}

static int cmp_by_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Gaps are tolerated; shared bytes are not (writing one tensor in place
 * would corrupt another). Empty tensors occupy nothing. */
static afo_status check_overlaps(const char *path, st_tensor *t, int n) {
    const st_tensor **order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory checking offsets", path);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (t[i].end > t[i].begin) order[m++] = &t[i];
    qsort(order, (size_t)m, sizeof *order, cmp_by_begin);
    afo_status st = AFO_OK;
    for (int i = 1; i < m && st == AFO_OK; i++)
        if (order[i]->begin < order[i - 1]->end)
            st = afo_error(AFO_ERR_FORMAT, "%s: tensors \"%s\" [%zu, %zu] and \"%s\" [%zu, %zu] overlap", path,
                           order[i - 1]->name, order[i - 1]->begin, order[i - 1]->end, order[i]->name,
                           order[i]->begin, order[i]->end);
    free(order);
    return st;
}

static afo_status take_metadata(const char *path, cJSON *root, cJSON *item, st_file *file) {
    if (file->metadata) return afo_error(AFO_ERR_FORMAT, "%s: __metadata__ appears twice", path);
    AFO_TRY(check_metadata(path, item));
    file->metadata = cJSON_DetachItemViaPointer(root, item);
    return AFO_OK;
}

static afo_status parse_entries(const char *path, cJSON *root, int file_index, st_file *file, st_list *list) {
    size_t data_len = file->map->length - file->data_start;
    cJSON *next;
    for (cJSON *e = root->child; e; e = next) {
        next = e->next; /* taking __metadata__ unlinks it */
        if (strcmp(e->string, "__metadata__") == 0) {
            AFO_TRY(take_metadata(path, root, e, file));
            continue;
        }
        st_tensor t = {.file = file_index};
        AFO_TRY(parse_entry(path, e, file->data_start, data_len, &t));
        t.name = strdup(e->string);
        if (!t.name) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory copying tensor names", path);
        if (list_push(list, &t) != AFO_OK) {
            free(t.name);
            return AFO_ERR_OUT_OF_MEMORY;
        }
    }
    return AFO_OK;
}

static afo_status validate_header(const char *path, int file_index, st_file *file, st_list *list) {
    size_t len = 0;
    AFO_TRY(read_header_length(path, file->map, &len));
    file->data_start = 8 + len;
    cJSON *root;
    AFO_TRY(parse_header_json(path, file->map, len, &root));
    int first = list->n;
    afo_status st = parse_entries(path, root, file_index, file, list);
    cJSON_Delete(root);
    if (st == AFO_OK) st = check_duplicates(path, list->items + first, list->n - first);
    if (st == AFO_OK) st = check_overlaps(path, list->items + first, list->n - first);
    return st;
}

afo_status st_file_open(const char *path, int file_index, st_file *file, st_list *list) {
    *file = (st_file){0};
    file->map = afo_mapping_open(path);
    if (!file->map) return AFO_ERR_IO;
    file->path = strdup(path);
    if (!file->path) {
        st_file_close(file);
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    int before = list->n;
    afo_status st = validate_header(path, file_index, file, list);
    if (st != AFO_OK) {
        for (int i = before; i < list->n; i++) free(list->items[i].name);
        list->n = before;
        st_file_close(file);
    }
    return st;
}

void st_file_close(st_file *file) {
    afo_mapping_release(file->map);
    cJSON_Delete(file->metadata);
    free(file->path);
    *file = (st_file){0};
}
