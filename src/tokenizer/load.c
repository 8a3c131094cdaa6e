/* Loading tokenizer.json (and tokenizer_config.json beside it): the JSON
 * helpers, the post-processor, and the tokenizer as a whole. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "tokenizer/tokenizer.h"

afo_status tk_bad(const tk_loader *L, const char *field, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return afo_error(AFO_ERR_FORMAT, "%s: %s: %s", L->path, field, msg);
}

afo_status tk_oom(const tk_loader *L) { return afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory loading", L->path); }

afo_status tk_json_bool(const tk_loader *L, const cJSON *obj, const char *field, const char *key, bool dflt,
                        bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return AFO_OK;
    }
    if (!cJSON_IsBool(v)) return tk_bad(L, field, "\"%s\" is not true or false", key);
    *out = cJSON_IsTrue(v);
    return AFO_OK;
}

afo_status tk_json_str(const tk_loader *L, const cJSON *obj, const char *field, const char *key, bool required,
                       const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return required ? tk_bad(L, field, "\"%s\" missing", key) : AFO_OK;
    if (!cJSON_IsString(v)) return tk_bad(L, field, "\"%s\" is not a string", key);
    *out = v->valuestring;
    return AFO_OK;
}

bool tk_json_id(const cJSON *v, int32_t *id) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= INT32_MAX) return false;
    *id = (int32_t)v->valuedouble;
    return true;
}

static cJSON *parse_file(const char *path) {
    size_t n = 0;
    char *text = NULL;
    if (afo_read_file(path, 0, false, &text, &n) != AFO_OK) return NULL;
    /* JSON is UTF-8 (the tokenizers library refuses anything else), and the
     * normalizers, regexes and vocabulary take its strings for valid */
    const size_t valid = tk_utf8_valid_prefix(text, n);
    if (valid < n) {
        afo_error(AFO_ERR_FORMAT, "%s: not valid UTF-8 at byte %zu", path, valid);
        free(text);
        return NULL;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!j) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        afo_error(AFO_ERR_FORMAT, "%s: invalid JSON near byte %zu of %zu%s", path, at, n,
                  at + 1 >= n ? " (truncated file?)" : "");
    }
    free(text);
    return j;
}

/* ---------------------------------------------------------------- post-processor */
/* A special token of TemplateProcessing: its ids from "special_tokens". */
static afo_status template_ids(const tk_loader *L, const cJSON *specials, const char *name, const char *field,
                               tk_ids *out) {
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, name), "ids");
    if (!cJSON_IsArray(ids)) return tk_bad(L, field, "special token \"%.40s\" has no ids in special_tokens", name);
    for (const cJSON *e = ids->child; e; e = e->next) {
        int32_t id;
        if (!tk_json_id(e, &id)) return tk_bad(L, field, "special token \"%.40s\" has a bad id", name);
        if (tk_ids_push(out, id)) return tk_oom(L);
    }
    return AFO_OK;
}

static afo_status template_load(const tk_loader *L, const cJSON *j, const char *field, tk_ids *pre, tk_ids *post) {
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    if (!cJSON_IsArray(single)) return tk_bad(L, field, "\"single\" missing or not an array");
    bool seen_a = false;
    for (const cJSON *e = single->child; e; e = e->next) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(sp, "id");
        if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) {
            if (seen_a) return tk_bad(L, field, "\"single\" names a sequence twice");
            seen_a = true;
        } else if (cJSON_IsString(id)) {
            AFO_TRY(template_ids(L, specials, id->valuestring, field, seen_a ? post : pre));
        } else {
            return tk_bad(L, field, "\"single\" entries must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
        }
    }
    if (!seen_a) return tk_bad(L, field, "\"single\" has no sequence");
    return AFO_OK;
}

/* ["token", id] of BertProcessing / RobertaProcessing */
static afo_status pair_id(const tk_loader *L, const cJSON *j, const char *field, const char *key, tk_ids *out) {
    int32_t id;
    if (!tk_json_id(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, key), 1), &id))
        return tk_bad(L, field, "\"%s\" must be [\"token\", id]", key);
    return tk_ids_push(out, id) ? tk_oom(L) : AFO_OK;
}

/* Only the single-sequence form matters to encode: every processor wraps
 * the ids in tokens before and after, so a Sequence composes by wrapping
 * again (ByteLevel only trims offsets and adds nothing). */
static afo_status post_load(const tk_loader *L, const cJSON *j, const char *field, afo_tokenizer *t) {
    const char *type;
    if (!cJSON_IsObject(j)) return tk_bad(L, field, "not an object");
    AFO_TRY(tk_json_str(L, j, field, "type", true, &type));
    tk_ids pre = {0}, post = {0};
    afo_status st = AFO_OK;
    if (strcmp(type, "TemplateProcessing") == 0) {
        st = template_load(L, j, field, &pre, &post);
    } else if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0) {
        st = pair_id(L, j, field, "cls", &pre);
        if (st == AFO_OK) st = pair_id(L, j, field, "sep", &post);
    } else if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "processors");
        if (!cJSON_IsArray(arr)) return tk_bad(L, field, "\"processors\" missing or not an array");
        int i = 0;
        for (const cJSON *e = arr->child; e && st == AFO_OK; e = e->next, i++) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.processors[%d]", field, i);
            st = post_load(L, e, sub, t);
        }
        return st;
    } else if (strcmp(type, "ByteLevel") != 0) {
        return tk_bad(L, field, "unknown post-processor type \"%.40s\"", type);
    }
    if (st == AFO_OK && (tk_ids_add(&pre, t->post_pre.p, t->post_pre.n) || tk_ids_add(&t->post_post, post.p, post.n)))
        st = tk_oom(L);
    if (st == AFO_OK) {
        free(t->post_pre.p);
        t->post_pre = pre;
        pre = (tk_ids){0};
    }
    free(pre.p);
    free(post.p);
    return st;
}

/* ---------------------------------------------------------------- tokenizer */
static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* bos_token etc. of tokenizer_config.json: a string or {"content": ...}. */
static void config_specials(afo_tokenizer *t, const cJSON *cfg) {
    static const char *const KEYS[4] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    for (int k = 0; k < 4; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, KEYS[k]);
        if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(v)) t->special[k] = afo_tokenizer_token_to_id(t, v->valuestring);
    }
}

static afo_status load_parts(const tk_loader *L, const cJSON *j, afo_tokenizer *t) {
    if (!cJSON_IsObject(j)) return tk_bad(L, "(top level)", "not a JSON object");
    AFO_TRY(tk_model_load(L, cJSON_GetObjectItemCaseSensitive(j, "model"), &t->model));
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "normalizer")) && !cJSON_IsNull(v))
        AFO_TRY(tk_normalizer_load(L, v, "normalizer", &t->normalizer));
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer")) && !cJSON_IsNull(v))
        AFO_TRY(tk_pretok_load(L, v, "pre_tokenizer", &t->pretok));
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "post_processor")) && !cJSON_IsNull(v))
        AFO_TRY(post_load(L, v, "post_processor", t));
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "decoder")) && !cJSON_IsNull(v))
        AFO_TRY(tk_decoder_load(L, v, "decoder", &t->decoder));
    AFO_TRY(tk_added_load(L, cJSON_GetObjectItemCaseSensitive(j, "added_tokens"), t));
    /* Ids: the model's, then the added tokens' (which may go beyond). */
    t->nids = t->model.nids;
    for (int i = 0; i < t->nadded; i++)
        if (t->added[i].id >= t->nids) t->nids = t->added[i].id + 1;
    AFO_TRY(tk_check_id_space(L, "added_tokens", t->nids, t->model.vocab.n + (size_t)t->nadded));
    if (!(t->added_by_id = malloc((size_t)t->nids * sizeof *t->added_by_id + 1))) return tk_oom(L);
    memset(t->added_by_id, 0xFF, (size_t)t->nids * sizeof *t->added_by_id);
    for (int i = 0; i < t->nadded; i++) t->added_by_id[t->added[i].id] = i;
    for (size_t i = 0; i < t->post_pre.n + t->post_post.n; i++) {
        int32_t id = i < t->post_pre.n ? t->post_pre.p[i] : t->post_post.p[i - t->post_pre.n];
        if (id >= t->nids) return tk_bad(L, "post_processor", "special token id %d is outside the vocabulary", id);
    }
    for (int k = 0; k < 4; k++) t->special[k] = -1;
    t->special[AFO_TOKEN_UNK] = t->model.unk_id;
    return AFO_OK;
}

afo_tokenizer *afo_tokenizer_load(const char *path) {
    if (!path) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_tokenizer_load: path is NULL");
    char file[4096], cfg_path[4096];
    bool dir = is_dir(path);
    snprintf(file, sizeof file, dir ? "%s/tokenizer.json" : "%s", path);
    tk_loader L = {file};
    cJSON *j = parse_file(file);
    if (!j) return NULL;
    afo_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(j);
        return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", file);
    }
    afo_status st = load_parts(&L, j, t);
    cJSON_Delete(j);
    if (st != AFO_OK) {
        afo_tokenizer_free(t);
        return NULL;
    }
    /* tokenizer_config.json is optional; a broken one is an error. */
    const char *slash = strrchr(file, '/');
    snprintf(cfg_path, sizeof cfg_path, "%.*stokenizer_config.json", slash ? (int)(slash - file + 1) : 0, file);
    FILE *f = fopen(cfg_path, "rb");
    if (f) {
        fclose(f);
        cJSON *cfg = parse_file(cfg_path);
        if (!cfg) {
            afo_tokenizer_free(t);
            return NULL;
        }
        config_specials(t, cfg);
        cJSON_Delete(cfg);
    }
    return t;
}

void afo_tokenizer_free(afo_tokenizer *t) {
    if (!t) return;
    tk_model_free(&t->model);
    tk_normalizer_free(t->normalizer);
    tk_pretok_free(t->pretok);
    tk_decoder_free(t->decoder);
    free(t->post_pre.p);
    free(t->post_post.p);
    tk_added_free(t);
    free(t->added_by_id);
    free(t);
}
