/* Random models: the architecture's full tensor list, drawn from N(0,
 * 1/fan_in) (norms 1, biases 0), written shard by shard so that memory
 * stays near one shard however large the model. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "models/models.h"

#define SHARD_BYTES ((size_t)2 << 30)

afo_status model_copy_file(const char *from, const char *to, bool required) {
    FILE *in = fopen(from, "rb");
    if (!in) return required ? afo_error(AFO_ERR_IO, "cannot open %s: %s", from, strerror(errno)) : AFO_OK;
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return afo_error(AFO_ERR_IO, "cannot create %s: %s", to, strerror(errno));
    }
    char buf[65536];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    fclose(in);
    if (fclose(out) != 0) ok = false;
    return ok ? AFO_OK : afo_error(AFO_ERR_IO, "cannot copy %s to %s", from, to);
}

static afo_array *random_tensor(const afo_model *m, const tensor_spec *s, afo_array *key, afo_dtype dtype) {
    if (s->kind == TENSOR_NORM) /* (1 + w) norms store w = 0 */
        return afo_full(m->arch->flags & ARCH_NORM_PLUS_ONE ? 0.0 : 1.0, dtype, s->ndim, s->shape);
    if (s->kind == TENSOR_BIAS) return afo_zeros(dtype, s->ndim, s->shape);
    /* embeddings of models that scale them up by sqrt(hidden) start at 1/hidden */
    double fan_in = (double)s->shape[1];
    if (s->kind == TENSOR_EMBED && (m->arch->flags & ARCH_EMBED_SCALE)) fan_in *= fan_in;
    return afo_random_normal(key, 0.0, 1.0 / sqrt(fan_in), s->ndim, s->shape, dtype);
}

/* Writes specs [begin, end) to `path`. */
static afo_status write_shard(const afo_model *m, const char *path, int begin, int end, afo_dtype dtype,
                              afo_array *keys) {
    int n = end - begin;
    const char **names = calloc((size_t)n, sizeof *names);
    afo_array **arrays = calloc((size_t)n, sizeof *arrays);
    afo_status st = names && arrays ? AFO_OK : afo_error(AFO_ERR_OUT_OF_MEMORY, "random model: out of memory");
    for (int i = 0; st == AFO_OK && i < n; i++) {
        const tensor_spec *s = &m->specs[begin + i];
        afo_array *at = afo_scalar(begin + i, AFO_INT32), *key = at ? afo_take(keys, at, 0) : NULL;
        afo_release(at);
        names[i] = s->name;
        arrays[i] = key ? random_tensor(m, s, key, dtype) : NULL;
        afo_release(key);
        if (!arrays[i]) st = afo_last_status();
    }
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    if (st == AFO_OK) st = afo_safetensors_save(path, n, names, arrays, 1, mk, mv);
    for (int i = 0; arrays && i < n; i++) afo_release(arrays[i]);
    free(names);
    free(arrays);
    return st;
}

afo_status model_write_index(const char *dir, int n, const char *const *names, const int *shard_of, int nshards,
                             size_t total) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    for (int i = 0; i < n; i++) {
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard_of[i] + 1, nshards);
        cJSON_AddStringToObject(map, names[i], file);
    }
    char *text = cJSON_Print(root), path[4200];
    cJSON_Delete(root);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = text ? fopen(path, "w") : NULL;
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0) ok = false;
    free(text);
    return ok ? AFO_OK : afo_error(AFO_ERR_IO, "cannot write %s", path);
}

/* A directory that already holds weights is refused: random ones would
 * replace a real model's (its config.json alone, as tests and scripts
 * write it first, is fine). */
static afo_status check_no_weights(const char *out_dir) {
    DIR *d = opendir(out_dir);
    if (!d) return AFO_OK;
    struct dirent *e;
    const char *found = NULL;
    while (!found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 12 && (strcmp(e->d_name + n - 12, ".safetensors") == 0 ||
                       strcmp(e->d_name, "model.safetensors.index.json") == 0))
            found = e->d_name;
    }
    afo_status st = found ? afo_error(AFO_ERR_IO,
                                      "random model: %s already holds weights (%s); give a new or empty directory",
                                      out_dir, found)
                          : AFO_OK;
    closedir(d);
    return st;
}

afo_status afo_model_write_random(const char *config_path, const char *out_dir, int dtype, uint64_t seed) {
    AFO_TRY(check_no_weights(out_dir));
    afo_model m = {0};
    AFO_TRY(config_load(config_path, NULL, &m.cfg, &m.arch));
    afo_dtype dt = dtype >= 0 ? (afo_dtype)dtype : m.cfg.dtype;
    afo_status st = afo_dtype_is_float(dt) ? AFO_OK
                                           : afo_error(AFO_ERR_INVALID_ARGUMENT, "random model: dtype %s is not a float",
                                                       afo_dtype_name(dt));
    if (st == AFO_OK && mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        st = afo_error(AFO_ERR_IO, "cannot create %s: %s", out_dir, strerror(errno));
    if (st == AFO_OK)
        st = model_tensor_specs(&m, m.cfg.multimodal ? "language_model.model." : "model.");
    int *shard_of = st == AFO_OK ? calloc((size_t)m.nspecs + 1, sizeof *shard_of) : NULL;
    if (st == AFO_OK && !shard_of) st = afo_error(AFO_ERR_OUT_OF_MEMORY, "random model: out of memory");
    /* plan shards: consecutive tensors up to SHARD_BYTES each (a bigger
     * tensor gets a shard of its own) */
    int nshards = 0;
    size_t total = 0, in_shard = 0;
    for (int i = 0; st == AFO_OK && i < m.nspecs; i++) {
        size_t bytes = (size_t)m.specs[i].shape[0] * (size_t)(m.specs[i].ndim == 2 ? m.specs[i].shape[1] : 1) *
                       afo_dtype_size(dt);
        if (i == 0 || in_shard + bytes > SHARD_BYTES) nshards++, in_shard = 0;
        shard_of[i] = nshards - 1;
        in_shard += bytes;
        total += bytes;
    }
    afo_array *root = st == AFO_OK ? afo_random_key(seed) : NULL;
    afo_array *keys = root ? afo_random_split(root, m.nspecs) : NULL;
    if (st == AFO_OK && !keys) st = afo_last_status();
    char path[4200];
    for (int s = 0, begin = 0; st == AFO_OK && s < nshards; s++) {
        int end = begin;
        while (end < m.nspecs && shard_of[end] == s) end++;
        if (nshards == 1) snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
        else snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", out_dir, s + 1, nshards);
        st = write_shard(&m, path, begin, end, dt, keys);
        begin = end;
    }
    if (st == AFO_OK && nshards > 1) {
        const char **names = malloc(sizeof *names * (size_t)m.nspecs);
        for (int i = 0; names && i < m.nspecs; i++) names[i] = m.specs[i].name;
        st = names ? model_write_index(out_dir, m.nspecs, names, shard_of, nshards, total)
                   : afo_error(AFO_ERR_OUT_OF_MEMORY, "random model: out of memory");
        free(names);
    }
    if (st == AFO_OK) {
        snprintf(path, sizeof path, "%s/config.json", out_dir);
        st = model_copy_file(config_path, path, true);
    }
    if (st == AFO_OK) {
        char from[4200];
        snprintf(from, sizeof from, "%s", config_path);
        char *slash = strrchr(from, '/');
        snprintf(slash ? slash + 1 : from, sizeof from - (size_t)(slash ? slash + 1 - from : 0), "%s",
                 "generation_config.json");
        snprintf(path, sizeof path, "%s/generation_config.json", out_dir);
        st = model_copy_file(from, path, false);
    }
    afo_release(root);
    afo_release(keys);
    free(shard_of);
    model_release_weights(&m);
    config_free(&m.cfg);
    return st;
}
