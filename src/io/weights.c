/* The weights table: one or more validated safetensors files, their tensors
 * sorted by name for bsearch, and zero-copy arrays over the mappings.
 *
 * Sources: a .safetensors file, a model.safetensors.index.json (whose
 * weight_map assigns every tensor to a shard in the same directory), or a
 * directory holding the index, model.safetensors, or else *.safetensors. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "io/safetensors.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

struct afo_weights {
    st_file *files;
    int nfiles;
    st_list tensors; /* sorted by name once every file is in */
    char *source;    /* the path opened, for error messages */
};

static afo_weights *weights_new(void) {
    afo_weights *w = calloc(1, sizeof *w);
    if (!w) afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory opening weights");
    return w;
}

void afo_weights_close(afo_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->nfiles; i++) st_file_close(&w->files[i]);
    free(w->files);
    st_list_free(&w->tensors);
    free(w->source);
    free(w);
}

static afo_status add_file(afo_weights *w, const char *path) {
    st_file *grown = realloc(w->files, (size_t)(w->nfiles + 1) * sizeof *grown);
    if (!grown) return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    w->files = grown;
    AFO_TRY(st_file_open(path, w->nfiles, &w->files[w->nfiles], &w->tensors));
    w->nfiles++;
    return AFO_OK;
}

/* Sorts the merged table; a name in two files is ambiguous, so an error
 * (duplicates within one file were refused by the reader). */
static afo_status sort_tensors(afo_weights *w) {
    st_tensor *t = w->tensors.items;
    qsort(t, (size_t)w->tensors.n, sizeof *t, st_tensor_cmp_name);
    for (int i = 1; i < w->tensors.n; i++)
        if (strcmp(t[i - 1].name, t[i].name) == 0)
            return afo_error(AFO_ERR_FORMAT, "tensor \"%s\" appears in both %s and %s", t[i].name,
                             w->files[t[i - 1].file].path, w->files[t[i].file].path);
    return AFO_OK;
}

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "out of memory building a path");
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Directory part of `path` ("." when it has none). */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

/* ------------------------------------------------------------ the index */

typedef struct map_entry {
    const char *name, *shard; /* borrowed from the parsed index */
    int file;                 /* the shard's index in the weights' file table */
} map_entry;

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const map_entry *)a)->name, ((const map_entry *)b)->name);
}

static int cmp_entry_shard(const void *a, const void *b) {
    const map_entry *const *x = a, *const *y = b;
    return strcmp((*x)->shard, (*y)->shard);
}

static afo_status parse_index(const char *path, cJSON **root, cJSON **map) {
    char *text = NULL;
    AFO_TRY(afo_read_file(path, ST_MAX_HEADER_BYTES, false, &text, NULL));
    *root = cJSON_Parse(text);
    free(text);
    if (!*root) return afo_error(AFO_ERR_FORMAT, "%s: not valid JSON", path);
    if (!cJSON_IsObject(*root)) return afo_error(AFO_ERR_FORMAT, "%s: index is not a JSON object", path);
    *map = cJSON_GetObjectItemCaseSensitive(*root, "weight_map");
    if (!*map) return afo_error(AFO_ERR_FORMAT, "%s: missing \"weight_map\"", path);
    if (!cJSON_IsObject(*map)) return afo_error(AFO_ERR_FORMAT, "%s: \"weight_map\" is not an object", path);
    return AFO_OK;
}

/* Shards must sit next to the index: a path in the map could otherwise
 * point anywhere on the filesystem. */
static afo_status collect_entries(const char *path, const cJSON *map, map_entry *e, int n) {
    int i = 0;
    for (const cJSON *kv = map->child; kv; kv = kv->next, i++) {
        if (!cJSON_IsString(kv))
            return afo_error(AFO_ERR_FORMAT, "%s: weight_map value of \"%s\" is not a string", path, kv->string);
        if (!kv->valuestring[0] || strchr(kv->valuestring, '/'))
            return afo_error(AFO_ERR_FORMAT, "%s: weight_map assigns \"%s\" to \"%s\", not a file name in the same directory",
                             path, kv->string, kv->valuestring);
        e[i] = (map_entry){kv->string, kv->valuestring, -1};
    }
    qsort(e, (size_t)n, sizeof *e, cmp_entry_name);
    for (i = 1; i < n; i++)
        if (strcmp(e[i - 1].name, e[i].name) == 0)
            return afo_error(AFO_ERR_FORMAT, "%s: weight_map lists tensor \"%s\" twice", path, e[i].name);
    return AFO_OK;
}

/* Reopens an error raised inside a shard to say which index sent us there. */
static afo_status blame_index(afo_status st, const char *index) {
    char why[768];
    snprintf(why, sizeof why, "%s", afo_last_error());
    return afo_error(st, "%s (shard listed in %s)", why, index);
}

/* Opens every distinct shard once, in name order, and records each entry's
 * file index. */
static afo_status open_shards(afo_weights *w, const char *path, map_entry *e, int n) {
    map_entry **by_shard = malloc((size_t)(n ? n : 1) * sizeof *by_shard);
    char *dir = dir_of(path);
    afo_status st = by_shard && dir ? AFO_OK : afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    for (int i = 0; i < n && st == AFO_OK; i++) by_shard[i] = &e[i];
    if (st == AFO_OK) qsort(by_shard, (size_t)n, sizeof *by_shard, cmp_entry_shard);
    for (int i = 0; i < n && st == AFO_OK; i++) {
        if (i == 0 || strcmp(by_shard[i - 1]->shard, by_shard[i]->shard) != 0) {
            char *shard = join_path(dir, by_shard[i]->shard);
            st = shard ? add_file(w, shard) : AFO_ERR_OUT_OF_MEMORY;
            free(shard);
            if (st != AFO_OK && st != AFO_ERR_OUT_OF_MEMORY) st = blame_index(st, path);
        }
        by_shard[i]->file = w->nfiles - 1;
    }
    free(by_shard);
    free(dir);
    return st;
}

/* Walks the sorted map and the sorted table together: each shard must hold
 * exactly the tensors the map assigns to it. */
static afo_status match_map(const afo_weights *w, const char *path, const map_entry *e, int n) {
    const st_tensor *t = w->tensors.items;
    int i = 0, j = 0;
    while (i < w->tensors.n || j < n) {
        int c = i == w->tensors.n ? 1 : j == n ? -1 : strcmp(t[i].name, e[j].name);
        if (c < 0)
            return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\" in %s is not listed in weight_map", path,
                             t[i].name, w->files[t[i].file].path);
        if (c > 0)
            return afo_error(AFO_ERR_FORMAT, "%s: weight_map assigns tensor \"%s\" to %s, which does not contain it",
                             path, e[j].name, w->files[e[j].file].path);
        if (t[i].file != e[j].file)
            return afo_error(AFO_ERR_FORMAT, "%s: tensor \"%s\" is in %s but weight_map assigns it to %s", path,
                             t[i].name, w->files[t[i].file].path, w->files[e[j].file].path);
        i++;
        j++;
    }
    return AFO_OK;
}

static afo_status load_index(afo_weights *w, const char *path) {
    cJSON *root = NULL, *map = NULL;
    afo_status st = parse_index(path, &root, &map);
    int n = st == AFO_OK ? cJSON_GetArraySize(map) : 0;
    map_entry *e = st == AFO_OK ? malloc((size_t)(n ? n : 1) * sizeof *e) : NULL;
    if (st == AFO_OK && !e) st = afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    if (st == AFO_OK && n == 0) st = afo_error(AFO_ERR_FORMAT, "%s: weight_map is empty", path);
    if (st == AFO_OK) st = collect_entries(path, map, e, n);
    if (st == AFO_OK) st = open_shards(w, path, e, n);
    if (st == AFO_OK) st = sort_tensors(w);
    if (st == AFO_OK) st = match_map(w, path, e, n);
    free(e);
    cJSON_Delete(root);
    return st;
}

/* ------------------------------------------------------------ directories */

static bool is_safetensors_name(const char *name) {
    size_t n = strlen(name), k = strlen(".safetensors");
    return n > k && strcmp(name + n - k, ".safetensors") == 0;
}

static int filter_safetensors(const struct dirent *d) { return is_safetensors_name(d->d_name); }

static afo_status load_all_in_dir(afo_weights *w, const char *dir) {
    struct dirent **list;
    int n = scandir(dir, &list, filter_safetensors, alphasort);
    if (n < 0) return afo_error(AFO_ERR_IO, "%s: cannot list directory: %s", dir, strerror(errno));
    afo_status st = n ? AFO_OK
                      : afo_error(AFO_ERR_IO, "%s: no %s, %s or *.safetensors files in directory", dir, INDEX_NAME,
                                  SINGLE_NAME);
    for (int i = 0; i < n; i++) {
        if (st == AFO_OK) {
            char *p = join_path(dir, list[i]->d_name);
            st = p ? add_file(w, p) : AFO_ERR_OUT_OF_MEMORY;
            free(p);
        }
        free(list[i]);
    }
    free(list);
    return st == AFO_OK ? sort_tensors(w) : st;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static afo_status load_single(afo_weights *w, const char *path) {
    AFO_TRY(add_file(w, path));
    return sort_tensors(w);
}

static afo_status load_dir(afo_weights *w, const char *dir) {
    static const char *const preferred[] = {INDEX_NAME, SINGLE_NAME};
    for (int i = 0; i < 2; i++) {
        char *p = join_path(dir, preferred[i]);
        if (!p) return AFO_ERR_OUT_OF_MEMORY;
        bool found = file_exists(p);
        afo_status st = !found ? AFO_OK : i == 0 ? load_index(w, p) : load_single(w, p);
        free(p);
        if (found) return st;
    }
    return load_all_in_dir(w, dir);
}

static afo_status load_path(afo_weights *w, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return afo_error(AFO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return load_dir(w, path);
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0) return load_index(w, path);
    return load_single(w, path);
}

afo_weights *afo_weights_open(const char *path) {
    if (!path) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_weights_open: path is NULL");
    afo_weights *w = weights_new();
    if (!w) return NULL;
    w->source = strdup(path);
    if (!w->source || load_path(w, path) != AFO_OK) {
        if (!w->source) afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        afo_weights_close(w);
        return NULL;
    }
    return w;
}

/* ------------------------------------------------------------ lookups */

int afo_weights_count(const afo_weights *w) { return w ? w->tensors.n : 0; }

const char *afo_weights_name(const afo_weights *w, int i) {
    return w && i >= 0 && i < w->tensors.n ? w->tensors.items[i].name : NULL;
}

const char *afo_weights_metadata(const afo_weights *w, const char *key) {
    if (!w || !key || w->nfiles == 0) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(w->files[0].metadata, key);
    return v ? v->valuestring : NULL;
}

static afo_buffer *tensor_buffer(const afo_weights *w, const st_tensor *t) {
    const st_file *f = &w->files[t->file];
    size_t offset = f->data_start + t->begin, nbytes = t->end - t->begin;
    if (!t->misaligned) return afo_buffer_from_mapping(f->map, offset, nbytes);
    afo_buffer *b = afo_buffer_alloc(AFO_CPU, nbytes);
    if (b) memcpy(b->data, (const char *)f->map->base + offset, nbytes);
    return b;
}

afo_array *afo_weights_get(afo_weights *w, const char *name) {
    if (!w || !name) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_weights_get: NULL argument");
    st_tensor key = {.name = (char *)name};
    const st_tensor *t = bsearch(&key, w->tensors.items, (size_t)w->tensors.n, sizeof key, st_tensor_cmp_name);
    if (!t) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "tensor \"%s\" not found in %s", name, w->source);
    afo_buffer *b = tensor_buffer(w, t);
    if (!b) return NULL;
    afo_array *a = afo_array_from_buffer(b, t->dtype, t->ndim, t->shape);
    afo_buffer_release(b);
    return a;
}
