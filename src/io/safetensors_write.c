/* Safetensors writer. The header lists tensors sorted by name, padded with
 * spaces to a multiple of 8 bytes as the reference writer does; the data
 * section holds them back to back, widest dtypes first, so that every tensor
 * is aligned. The file is written
 * under a temporary name in the target directory, synced and renamed over
 * `path`, so readers see either the old file or the complete new one. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"

typedef struct strbuf {
    char *data;
    size_t len, cap;
    bool failed; /* out of memory: later appends are ignored */
} strbuf;

/* Makes room for n more bytes plus a terminator. */
static bool sb_reserve(strbuf *s, size_t n) {
    if (s->failed) return false;
    if (s->len + n + 1 <= s->cap) return true;
    size_t cap = s->cap ? s->cap : 256;
    while (s->len + n + 1 > cap) cap *= 2;
    char *grown = realloc(s->data, cap);
    if (!grown) {
        s->failed = true;
        return false;
    }
    s->data = grown;
    s->cap = cap;
    return true;
}

static void sb_append(strbuf *s, const char *p, size_t n) {
    if (!sb_reserve(s, n)) return;
    memcpy(s->data + s->len, p, n);
    s->len += n;
    s->data[s->len] = '\0';
}

static void sb_printf(strbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) s->failed = true;
    if (n < 0 || !sb_reserve(s, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(s->data + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

static void sb_json_string(strbuf *s, const char *str) {
    sb_append(s, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            sb_append(s, esc, 2);
        } else if (*p < 0x20) {
            sb_printf(s, "\\u%04x", *p);
        } else {
            sb_append(s, (const char *)p, 1);
        }
    }
    sb_append(s, "\"", 1);
}

/* ------------------------------------------------------------ arguments */

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

/* Sorts pointers to the n metadata keys; reports the first repeat, or NULL. */
static const char *sort_find_repeat(const char *const *strs, int n, const char *const **order) {
    for (int i = 0; i < n; i++) order[i] = &strs[i];
    qsort(order, (size_t)n, sizeof *order, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        if (strcmp(*order[i - 1], *order[i]) == 0) return *order[i];
    return NULL;
}

static afo_status check_names(const char *path, int n, const char *const *names, afo_array *const *arrays) {
    if (n < 0) return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: negative tensor count %d", path, n);
    if (n > 0 && (!names || !arrays))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: names or arrays is NULL", path);
    for (int i = 0; i < n; i++) {
        if (!names[i] || !names[i][0])
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: tensor %d has an empty name", path, i);
        if (strcmp(names[i], "__metadata__") == 0)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: \"__metadata__\" is reserved, not a tensor name", path);
        if (!arrays[i]) return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: tensor \"%s\" is NULL", path, names[i]);
    }
    return AFO_OK;
}

static afo_status check_meta(const char *path, int nmeta, const char *const *keys, const char *const *values) {
    if (nmeta < 0) return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: negative metadata count %d", path, nmeta);
    if (nmeta > 0 && (!keys || !values))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: metadata keys or values is NULL", path);
    for (int i = 0; i < nmeta; i++)
        if (!keys[i] || !values[i])
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: metadata entry %d is NULL", path, i);
    return AFO_OK;
}

/* ------------------------------------------------------------ layout */

/* One tensor to write: its place among the caller's arrays and in the file. */
typedef struct slot {
    const char *name;
    int index;      /* into names/arrays */
    size_t esize;   /* element size */
    uint64_t begin; /* offset in the data section */
} slot;

typedef struct save_args {
    const char *path;
    int n, nmeta;
    const char *const *names, *const *keys, *const *values;
    afo_array *const *arrays;
    slot *slots;                    /* sorted by name: the header order */
    slot **layout;                  /* the data order */
    const char *const **key_order; /* sorted pointers into keys */
} save_args;

static int cmp_slot_name(const void *a, const void *b) {
    return strcmp(((const slot *)a)->name, ((const slot *)b)->name);
}

/* Wider elements first, as the reference writer does: the data section
 * starts 8-aligned, so every tensor then lands aligned to its element size
 * and loads zero-copy. */
static int cmp_slot_layout(const void *a, const void *b) {
    const slot *x = *(const slot *const *)a, *y = *(const slot *const *)b;
    if (x->esize != y->esize) return x->esize > y->esize ? -1 : 1;
    return strcmp(x->name, y->name);
}

static afo_status plan(save_args *a) {
    size_t n = (size_t)(a->n ? a->n : 1);
    a->slots = malloc(n * sizeof *a->slots);
    a->layout = malloc(n * sizeof *a->layout);
    a->key_order = malloc((size_t)(a->nmeta ? a->nmeta : 1) * sizeof *a->key_order);
    if (!a->slots || !a->layout || !a->key_order)
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory sorting tensor names", a->path);
    for (int i = 0; i < a->n; i++)
        a->slots[i] = (slot){a->names[i], i, afo_dtype_size(afo_array_dtype(a->arrays[i])), 0};
    qsort(a->slots, (size_t)a->n, sizeof *a->slots, cmp_slot_name);
    for (int i = 1; i < a->n; i++)
        if (strcmp(a->slots[i - 1].name, a->slots[i].name) == 0)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: tensor name \"%s\" given twice", a->path, a->slots[i].name);
    const char *dup = sort_find_repeat(a->keys, a->nmeta, a->key_order);
    if (dup) return afo_error(AFO_ERR_INVALID_ARGUMENT, "%s: metadata key \"%s\" given twice", a->path, dup);
    for (int i = 0; i < a->n; i++) a->layout[i] = &a->slots[i];
    qsort(a->layout, (size_t)a->n, sizeof *a->layout, cmp_slot_layout);
    uint64_t offset = 0;
    for (int i = 0; i < a->n; i++) {
        a->layout[i]->begin = offset;
        offset += afo_array_nbytes(a->arrays[a->layout[i]->index]);
    }
    return AFO_OK;
}

/* ------------------------------------------------------------ header */

static void header_metadata(strbuf *s, const save_args *a) {
    sb_append(s, "\"__metadata__\":{", 16);
    for (int i = 0; i < a->nmeta; i++) {
        size_t k = (size_t)(a->key_order[i] - a->keys);
        if (i) sb_append(s, ",", 1);
        sb_json_string(s, a->keys[k]);
        sb_append(s, ":", 1);
        sb_json_string(s, a->values[k]);
    }
    sb_append(s, "}", 1);
}

static void header_tensor(strbuf *s, const slot *t, const afo_array *x) {
    sb_json_string(s, t->name);
    sb_printf(s, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(afo_array_dtype(x)));
    for (int d = 0; d < afo_array_ndim(x); d++)
        sb_printf(s, d ? ",%lld" : "%lld", (long long)afo_array_shape(x)[d]);
    sb_printf(s, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->begin,
              (unsigned long long)(t->begin + afo_array_nbytes(x)));
}

/* The 8-byte length, then the JSON padded with spaces to a multiple of 8. */
static afo_status build_header(const save_args *a, strbuf *s) {
    sb_append(s, "\0\0\0\0\0\0\0\0{", 9);
    if (a->nmeta) header_metadata(s, a);
    for (int i = 0; i < a->n; i++) {
        if (i || a->nmeta) sb_append(s, ",", 1);
        header_tensor(s, &a->slots[i], a->arrays[a->slots[i].index]);
    }
    sb_append(s, "}", 1);
    while ((s->len - 8) % 8) sb_append(s, " ", 1);
    if (s->failed) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory building the header", a->path);
    uint64_t len = s->len - 8;
    for (int i = 0; i < 8; i++) s->data[i] = (char)(len >> (8 * i));
    return AFO_OK;
}

/* ------------------------------------------------------------ file */

static afo_status write_all(int fd, const char *tmp, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return afo_error(AFO_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return AFO_OK;
}

/* Strided views and device data are gathered into a host copy; dense host
 * arrays are written straight from their buffer. */
static afo_status write_array(int fd, const char *tmp, afo_array *x) {
    size_t nbytes = afo_array_nbytes(x);
    if (nbytes == 0) return AFO_OK;
    if (x->contiguous && x->buf->device == AFO_CPU) return write_all(fd, tmp, afo_array_ptr(x), nbytes);
    void *copy = malloc(nbytes);
    if (!copy) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory gathering a %zu-byte tensor", tmp, nbytes);
    afo_status st = afo_array_read(x, afo_array_dtype(x), copy, nbytes);
    if (st == AFO_OK) st = write_all(fd, tmp, copy, nbytes);
    free(copy);
    return st;
}

static afo_status write_contents(int fd, const char *tmp, const save_args *a, const strbuf *header) {
    AFO_TRY(write_all(fd, tmp, header->data, header->len));
    for (int i = 0; i < a->n; i++) AFO_TRY(write_array(fd, tmp, a->arrays[a->layout[i]->index]));
    if (fsync(fd) != 0) return afo_error(AFO_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    return AFO_OK;
}

/* mkstemp creates files 0600; give the result the mode of the file it
 * replaces, or the usual 0644 for a new one. */
static void set_mode(int fd, const char *path) {
    struct stat st;
    mode_t mode = stat(path, &st) == 0 ? st.st_mode & 07777 : 0644;
    (void)fchmod(fd, mode);
}

/* Makes the rename itself durable. Best effort: the data is already synced
 * and in place, so a failure here is not worth reporting as a failed save. */
static void sync_parent_dir(const char *path) {
    char *dir = strdup(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

static afo_status write_file(const save_args *a, const strbuf *header) {
    size_t n = strlen(a->path) + sizeof ".tmp.XXXXXX";
    char *tmp = malloc(n);
    if (!tmp) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", a->path);
    snprintf(tmp, n, "%s.tmp.XXXXXX", a->path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        afo_status st = afo_error(AFO_ERR_IO, "%s: cannot create a temporary file: %s", a->path, strerror(errno));
        free(tmp);
        return st;
    }
    set_mode(fd, a->path);
    afo_status st = write_contents(fd, tmp, a, header);
    if (close(fd) != 0 && st == AFO_OK) st = afo_error(AFO_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == AFO_OK && rename(tmp, a->path) != 0)
        st = afo_error(AFO_ERR_IO, "%s: cannot rename %s into place: %s", a->path, tmp, strerror(errno));
    if (st != AFO_OK) unlink(tmp);
    else sync_parent_dir(a->path);
    free(tmp);
    return st;
}

/* ------------------------------------------------------------ entry */

afo_status afo_safetensors_save(const char *path, int n, const char *const *names, afo_array *const *arrays,
                                int nmeta, const char *const *meta_keys, const char *const *meta_values) {
    if (!path) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_safetensors_save: path is NULL");
    AFO_TRY(check_names(path, n, names, arrays));
    AFO_TRY(check_meta(path, nmeta, meta_keys, meta_values));
    save_args a = {.path = path, .n = n, .nmeta = nmeta, .names = names, .keys = meta_keys,
                   .values = meta_values, .arrays = arrays};
    strbuf header = {0};
    afo_status st = plan(&a);
    if (st == AFO_OK) st = afo_eval(arrays, n);
    if (st == AFO_OK) st = build_header(&a, &header);
    if (st == AFO_OK) st = write_file(&a, &header);
    free(header.data);
    free(a.slots);
    free(a.layout);
    free(a.key_order);
    return st;
}
