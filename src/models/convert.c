/* afo_model_convert: a model directory rewritten in MLX's layout, matrices
 * quantized as quant_recipe.c decides (or quantized ones dequantized), the
 * rest cast. The architecture's tensor list decides what is a matrix, so
 * nothing here depends on tensor names beyond MLX's P.weight / P.scales /
 * P.biases and its stacked experts (mlp.switch_mlp.<proj>). */
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
    /* the matrices config "quantization" names one by one */
    char (*paths)[200];
    quant_choice *choices;
    int nq;
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

static afo_status remember(out_tensors *o, const char *path, quant_choice c) {
    if (o->nq % 64 == 0) {
        char(*paths)[200] = realloc(o->paths, sizeof *paths * (size_t)(o->nq + 64));
        if (paths) o->paths = paths;
        quant_choice *choices = paths ? realloc(o->choices, sizeof *choices * (size_t)(o->nq + 64)) : NULL;
        if (!choices) return afo_error(AFO_ERR_OUT_OF_MEMORY, "convert: out of memory");
        o->choices = choices;
    }
    snprintf(o->paths[o->nq], sizeof o->paths[o->nq], "%s", path);
    o->choices[o->nq++] = c;
    return AFO_OK;
}

/* A matrix in float: dequantized when the input is quantized; raw from the
 * file otherwise, as (1 + w) norms are rewritten on load. */
static afo_array *float_weight(afo_model *m, const tensor_spec *s) {
    const linear_weight *lw = s->linear;
    if (lw && lw->scales) return afo_dequantize(lw->w, lw->scales, lw->biases, lw->group_size, lw->bits);
    return s->expert >= 0 ? afo_retain(lw->w) : afo_weights_get(m->weights, s->name);
}

/* The experts of one projection (s: expert 0's spec) stacked [E, out, in]. */
static afo_array *stacked_experts(afo_model *m, const tensor_spec *s) {
    int64_t E = m->cfg.num_experts;
    afo_array **rows = calloc((size_t)E, sizeof *rows), *out = NULL;
    if (!rows) return afo_error(AFO_ERR_OUT_OF_MEMORY, "convert: out of memory"), NULL;
    int64_t x = 0;
    for (; x < E; x++) {
        afo_array *w = float_weight(m, &s[3 * x]);
        rows[x] = w ? afo_expand_dims(w, 0) : NULL;
        afo_release(w);
        if (!rows[x]) break;
    }
    if (x == E) out = afo_concatenate(rows, (int)E, 0);
    for (int64_t i = 0; i < x; i++) afo_release(rows[i]);
    free(rows);
    return out;
}

/* The output tensors of one spec (of a whole expert stack for expert 0, none
 * for the other experts): cast to dtype, then quantized as the plan says. */
static afo_status convert_tensor(afo_model *m, const tensor_spec *s, afo_dtype dtype, const quant_plan *plan,
                                 out_tensors *out) {
    if (s->expert > 0) return AFO_OK;
    char path[200], name[200];
    if (s->expert == 0) {
        model_switch_name(s, true, path, sizeof path);
        model_switch_name(s, false, name, sizeof name);
    } else {
        snprintf(name, sizeof name, "%s", s->name);
        snprintf(path, sizeof path, "%.*s", (int)(strlen(s->name) - strlen(".weight")), s->name);
    }
    afo_array *w = s->expert == 0 ? stacked_experts(m, s) : float_weight(m, s);
    afo_array *cast = w ? afo_astype(w, dtype) : NULL;
    afo_release(w);
    if (!cast) return afo_last_status();
    quant_choice c = s->linear ? quant_plan_choose(plan, path, s->shape[1]) : (quant_choice){0};
    if (!c.bits) return push(out, name, "", cast);
    afo_array *wq = NULL, *scales = NULL, *biases = NULL;
    afo_status st = afo_quantize(cast, c.group_size, c.bits, &wq, &scales, &biases);
    afo_release(cast);
    if (st == AFO_OK && c.entry) st = remember(out, path, c);
    if (st != AFO_OK) {
        afo_release(wq), afo_release(scales), afo_release(biases);
        return st;
    }
    st = push(out, path, ".weight", wq);
    if (st == AFO_OK) st = push(out, path, ".scales", scales);
    else afo_release(scales);
    if (st == AFO_OK) st = push(out, path, ".biases", biases);
    else afo_release(biases);
    return st;
}

/* Shards of consecutive tensors up to SHARD_BYTES (a bigger tensor gets its
 * own), written under dir, with an index when there are several. Each
 * tensor is computed before its shard is saved (saving would compute it
 * anyway), which is where progress can be told. */
static afo_status write_shards(const out_tensors *o, const char *dir, const afo_convert_options *opt) {
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
    size_t done_bytes = 0;
    for (int s = 0, begin = 0; st == AFO_OK && s < nshards; s++) {
        int end = begin;
        while (end < o->n && shard_of[end] == s) end++;
        for (int i = begin; st == AFO_OK && i < end; i++) {
            st = afo_eval1(o->arrays[i]);
            done_bytes += afo_array_nbytes(o->arrays[i]);
            if (st == AFO_OK && opt->progress) opt->progress(opt->progress_ctx, i + 1, o->n, done_bytes, total);
        }
        if (st != AFO_OK) break;
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
static afo_status write_config(const char *in_dir, const char *dir, afo_dtype dtype, const afo_convert_options *o,
                               const out_tensors *t) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", in_dir);
    cJSON *root = json_read_file(path);
    if (!root) return afo_last_status();
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    bool ok = true;
    if (o->bits) {
        cJSON *q = cJSON_CreateObject();
        ok = q && cJSON_AddNumberToObject(q, "group_size", o->group_size) && cJSON_AddNumberToObject(q, "bits", o->bits) &&
             cJSON_AddStringToObject(q, "mode", "affine");
        for (int i = 0; ok && i < t->nq; i++) {
            cJSON *e = cJSON_AddObjectToObject(q, t->paths[i]);
            ok = e && cJSON_AddNumberToObject(e, "group_size", t->choices[i].group_size) &&
                 cJSON_AddNumberToObject(e, "bits", t->choices[i].bits) &&
                 (t->choices[i].entry != QUANT_ENTRY_MODE || cJSON_AddStringToObject(e, "mode", "affine"));
        }
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

/* OUT must not exist or be an empty directory: checked before any work, so
 * that a long conversion does not fail only at its final rename (which
 * checks again). */
static afo_status check_destination(const char *out_dir) {
    struct stat sb;
    if (stat(out_dir, &sb) != 0) return AFO_OK;
    if (!S_ISDIR(sb.st_mode))
        return afo_error(AFO_ERR_IO, "convert: %s exists and is not a directory; choose another output", out_dir);
    DIR *d = opendir(out_dir);
    if (!d) return afo_error(AFO_ERR_IO, "convert: cannot read %s: %s", out_dir, strerror(errno));
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d))) empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty ? AFO_OK
                 : afo_error(AFO_ERR_IO, "convert: %s exists and is not empty; remove it or choose another output",
                             out_dir);
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
    AFO_TRY(check_destination(out_dir));
    afo_model *m = NULL;
    AFO_TRY(afo_model_load(in, NULL, &m));
    quant_plan plan;
    afo_status planned = quant_plan_init(m, o, &plan);
    if (planned != AFO_OK) {
        afo_model_free(m);
        return planned;
    }
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
    for (int i = 0; st == AFO_OK && i < m->nspecs; i++) st = convert_tensor(m, &m->specs[i], dtype, &plan, &t);
    size_t bytes = 0;
    for (int i = 0; i < t.n; i++) bytes += afo_array_nbytes(t.arrays[i]);
    if (st == AFO_OK) st = write_shards(&t, tmp, o);
    if (st == AFO_OK) st = write_config(m->dir, tmp, dtype, o, &t);
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
    free(t.paths);
    free(t.choices);
    afo_model_free(m);
    return st;
}
