/* afo_model_convert: a model directory rewritten in MLX's layout, every
 * matrix quantized (or a quantized one dequantized), the rest cast. The
 * architecture's tensor list decides what is a matrix, so nothing here
 * depends on tensor names beyond MLX's P.weight / P.scales / P.biases. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afo/quant.h"
#include "models/models.h"

/* what mlx-lm uses (MAX_FILE_SIZE_GB) */
#define SHARD_BYTES ((size_t)5 << 30)

typedef struct out_tensors {
    char (*names)[200];
    afo_array **arrays;
    int n, cap;
} out_tensors;

static afo_status push(out_tensors *o, const char *name, const char *suffix, afo_array *a) {
    if (!a) return afo_last_status();
    if (o->n == o->cap) {
        int cap = o->cap ? 2 * o->cap : 64;
        char(*names)[200] = realloc(o->names, sizeof *names * (size_t)cap);
        if (names) o->names = names;
        afo_array **arrays = names ? realloc(o->arrays, sizeof *arrays * (size_t)cap) : NULL;
        if (!arrays) {
            afo_release(a);
            return afo_error(AFO_ERR_OUT_OF_MEMORY, "convert: out of memory");
        }
        o->arrays = arrays, o->cap = cap;
    }
    snprintf(o->names[o->n], sizeof o->names[o->n], "%s%s", name, suffix);
    o->arrays[o->n++] = a;
    return AFO_OK;
}

/* Only experts stay unquantized among matrices: the MoE path runs them
 * through the same linear(), but their per-expert [out, in] tensors are not
 * MLX's stacked switch_mlp layout, which a quantized checkpoint would need
 * to interoperate. */
static bool quantizable(const tensor_spec *s, int group_size) {
    return s->linear && !strstr(s->name, ".experts.") && s->shape[1] % group_size == 0;
}

/* The output tensors of one spec: the weight in float (dequantized when the
 * input is quantized; raw from the file otherwise, as (1 + w) norms are
 * rewritten on load), cast to dtype, then quantized if asked. */
static afo_status convert_tensor(afo_model *m, const tensor_spec *s, afo_dtype dtype, const afo_convert_options *o,
                                 out_tensors *out) {
    const linear_weight *lw = s->linear;
    afo_array *w = lw && lw->scales ? afo_dequantize(lw->w, lw->scales, lw->biases, lw->group_size, lw->bits)
                                    : afo_weights_get(m->weights, s->name);
    afo_array *cast = w ? afo_astype(w, dtype) : NULL;
    afo_release(w);
    if (!cast) return afo_last_status();
    if (!o->bits || !quantizable(s, o->group_size)) return push(out, s->name, "", cast);
    char path[160];
    snprintf(path, sizeof path, "%.*s", (int)(strlen(s->name) - strlen(".weight")), s->name);
    afo_array *wq = NULL, *scales = NULL, *biases = NULL;
    afo_status st = afo_quantize(cast, o->group_size, o->bits, &wq, &scales, &biases);
    afo_release(cast);
    if (st != AFO_OK) return st;
    st = push(out, path, ".weight", wq);
    if (st == AFO_OK) st = push(out, path, ".scales", scales);
    else afo_release(scales);
    if (st == AFO_OK) st = push(out, path, ".biases", biases);
    else afo_release(biases);
    return st;
}

/* Shards of consecutive tensors up to SHARD_BYTES (a bigger tensor gets its
 * own), written under dir, with an index when there are several. */
static afo_status write_shards(const out_tensors *o, const char *dir) {
    int *shard_of = calloc((size_t)o->n + 1, sizeof *shard_of);
    const char **names = calloc((size_t)o->n + 1, sizeof *names);
    afo_status st = shard_of && names ? AFO_OK : afo_error(AFO_ERR_OUT_OF_MEMORY, "convert: out of memory");
    int nshards = 0;
    size_t total = 0, in_shard = 0;
    for (int i = 0; st == AFO_OK && i < o->n; i++) {
        size_t bytes = afo_array_nbytes(o->arrays[i]);
        if (i == 0 || in_shard + bytes > SHARD_BYTES) nshards++, in_shard = 0;
        shard_of[i] = nshards - 1;
        in_shard += bytes;
        total += bytes;
        names[i] = o->names[i];
    }
    const char *mk[1] = {"format"}, *mv[1] = {"mlx"};
    char path[4200];
    for (int s = 0, begin = 0; st == AFO_OK && s < nshards; s++) {
        int end = begin;
        while (end < o->n && shard_of[end] == s) end++;
        if (nshards == 1) snprintf(path, sizeof path, "%s/model.safetensors", dir);
        else snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, nshards);
        st = afo_safetensors_save(path, end - begin, names + begin, o->arrays + begin, 1, mk, mv);
        /* drop what is written so memory stays near one shard */
        for (int i = begin; i < end; i++) afo_release(o->arrays[i]), o->arrays[i] = NULL;
        begin = end;
    }
    if (st == AFO_OK && nshards > 1) st = model_write_index(dir, o->n, names, shard_of, nshards, total);
    free(shard_of);
    free(names);
    return st;
}

/* IN's config.json with the quantization keys replaced (or removed). */
static afo_status write_config(const char *in_dir, const char *dir, afo_dtype dtype, const afo_convert_options *o) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", in_dir);
    cJSON *root = json_read_file(path, true);
    if (!root) return afo_last_status();
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    bool ok = true;
    if (o->bits) {
        cJSON *q = cJSON_CreateObject();
        ok = q && cJSON_AddNumberToObject(q, "group_size", o->group_size) && cJSON_AddNumberToObject(q, "bits", o->bits) &&
             cJSON_AddStringToObject(q, "mode", "affine");
        cJSON *copy = ok ? cJSON_Duplicate(q, 1) : NULL;
        ok = ok && copy && cJSON_AddItemToObject(root, "quantization", q);
        if (!ok) cJSON_Delete(q);
        ok = ok && cJSON_AddItemToObject(root, "quantization_config", copy);
        if (!ok) cJSON_Delete(copy);
    }
    /* transformers 4.x says torch_dtype, 5.x dtype: update whichever is there */
    static const char *const keys[2] = {"torch_dtype", "dtype"};
    for (int i = 0; ok && i < 2; i++)
        if (cJSON_GetObjectItemCaseSensitive(root, keys[i]))
            ok = cJSON_ReplaceItemInObjectCaseSensitive(root, keys[i], cJSON_CreateString(afo_dtype_name(dtype)));
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = text ? fopen(path, "w") : NULL;
    ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0) ok = false;
    free(text);
    return ok ? AFO_OK : afo_error(AFO_ERR_IO, "convert: cannot write %s", path);
}

/* Empties and removes the temporary directory (flat: only files in it). */
static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096 + 260];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    if (d) closedir(d);
    rmdir(dir);
}

static afo_status check_options(const afo_convert_options *o) {
    if (o->dtype >= 0 && !afo_dtype_is_float((afo_dtype)o->dtype))
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "convert: dtype %s is not a float",
                         afo_dtype_name((afo_dtype)o->dtype));
    if (!o->bits) return AFO_OK;
    if (o->bits < 2 || o->bits > 8 || o->bits == 7)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "convert: %d bits: supported are 2, 3, 4, 5, 6 and 8", o->bits);
    if (o->group_size != 32 && o->group_size != 64 && o->group_size != 128)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "convert: group size %d: supported are 32, 64 and 128",
                         o->group_size);
    return AFO_OK;
}

afo_status afo_model_convert(const char *in, const char *out_dir, const afo_convert_options *o,
                             double *bits_per_weight) {
    if (!in || !out_dir || !o) return afo_error(AFO_ERR_INVALID_ARGUMENT, "convert: needs in, out and options");
    AFO_TRY(check_options(o));
    afo_model *m = NULL;
    AFO_TRY(afo_model_load(in, NULL, &m));
    afo_dtype dtype = o->dtype >= 0 ? (afo_dtype)o->dtype : afo_model_dtype(m);
    /* everything goes to a sibling directory renamed into place at the end,
     * so OUT is either complete or untouched */
    char tmp[4096];
    afo_status st = (size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out_dir, (long)getpid()) >= sizeof tmp - 64
                        ? afo_error(AFO_ERR_INVALID_ARGUMENT, "convert: output path too long")
                    : mkdir(tmp, 0777) == 0 ? AFO_OK
                                           : afo_error(AFO_ERR_IO, "convert: cannot create %s: %s", tmp, strerror(errno));
    bool made = st == AFO_OK;
    out_tensors t = {0};
    for (int i = 0; st == AFO_OK && i < m->nspecs; i++) st = convert_tensor(m, &m->specs[i], dtype, o, &t);
    size_t bytes = 0;
    for (int i = 0; i < t.n; i++) bytes += afo_array_nbytes(t.arrays[i]);
    if (st == AFO_OK) st = write_shards(&t, tmp);
    if (st == AFO_OK) st = write_config(m->dir, tmp, dtype, o);
    static const char *const copied[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                         "chat_template.jinja", "generation_config.json"};
    for (size_t i = 0; st == AFO_OK && i < sizeof copied / sizeof *copied; i++) {
        char from[4400], to[4200];
        snprintf(from, sizeof from, "%s/%s", m->dir, copied[i]);
        snprintf(to, sizeof to, "%s/%s", tmp, copied[i]);
        st = model_copy_file(from, to, false);
    }
    /* rename() replaces an empty directory; a non-empty one is refused */
    if (st == AFO_OK && rename(tmp, out_dir) != 0)
        st = afo_error(AFO_ERR_IO, "convert: cannot move %s to %s: %s", tmp, out_dir, strerror(errno));
    if (st != AFO_OK && made) remove_dir(tmp);
    if (st == AFO_OK && bits_per_weight) *bits_per_weight = 8.0 * (double)bytes / (double)m->num_params;
    for (int i = 0; i < t.n; i++) afo_release(t.arrays[i]);
    free(t.names);
    free(t.arrays);
    afo_model_free(m);
    return st;
}
