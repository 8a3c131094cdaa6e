/* Chat templates: the public API over the Jinja engine, and reading a model
 * directory's template and special tokens. */
#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "afo/chat.h"
#include "chat/jinja.h"
#include "core/internal.h"

struct afo_chat_template {
    jctx arena; /* owns the tree */
    jnodes body;
};

static _Atomic int64_t g_pinned_time;

void afo_chat_set_time(int64_t unix_seconds) { atomic_store(&g_pinned_time, unix_seconds); }

afo_chat_template *afo_chat_template_parse(const char *source) {
    if (!source) return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_chat_template_parse: source is NULL");
    afo_chat_template *t = calloc(1, sizeof *t);
    if (!t) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "afo_chat_template_parse: out of memory");
    if (setjmp(t->arena.fail)) {
        jarena_free(&t->arena);
        free(t);
        return NULL;
    }
    jtokens tokens = {0};
    jlex(&t->arena, source, &tokens);
    t->body = jparse(&t->arena, &tokens);
    return t;
}

void afo_chat_template_free(afo_chat_template *t) {
    if (!t) return;
    jarena_free(&t->arena);
    free(t);
}

afo_status afo_chat_template_render(const afo_chat_template *t, const char *context_json, char **out) {
    if (!t || !context_json || !out)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_chat_template_render: template, context and out are required");
    *out = NULL;
    /* on the heap: locals changed after setjmp are indeterminate after longjmp */
    jctx *c = calloc(1, sizeof *c);
    if (!c) return afo_error(AFO_ERR_OUT_OF_MEMORY, "afo_chat_template_render: out of memory");
    c->now = atomic_load(&g_pinned_time);
    if (setjmp(c->fail)) {
        jarena_free(c);
        free(c);
        return afo_last_status();
    }
    jv ctxv = jjson_parse(c, context_json, "the chat template context");
    if (ctxv.kind != JV_DICT) jfail(c, AFO_ERR_INVALID_ARGUMENT, 0, 0, "the context must be a JSON object");
    static const char *const passed_as_none[] = {"tools", "documents"};
    for (size_t i = 0; i < 2; i++)
        if (!jdict_gets(ctxv.d, passed_as_none[i])) jdict_set(c, ctxv.d, jv_cstr(passed_as_none[i]), jv_none());
    jbuf text = {0};
    jrender(c, &t->body, ctxv, &text);
    char *s = malloc(text.n + 1);
    if (!s) jfail(c, AFO_ERR_OUT_OF_MEMORY, 0, 0, "out of memory");
    if (text.n) memcpy(s, text.p, text.n);
    s[text.n] = '\0';
    jarena_free(c);
    free(c);
    *out = s;
    return AFO_OK;
}

/* ------------------------------------------------------------ model files */
static char *read_file(const char *path, afo_status *st) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            char *p = realloc(buf, cap = cap * 2 + 65536);
            if (!p) {
                free(buf);
                fclose(f);
                *st = afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
                return NULL;
            }
            buf = p;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        *st = afo_error(AFO_ERR_IO, "%s: read error", path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static cJSON *read_json(const char *dir, const char *name, afo_status *st) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = read_file(path, st);
    if (!text) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) *st = afo_error(AFO_ERR_FORMAT, "%s: not valid JSON", path);
    return j;
}

static char *dup_or_oom(const char *s, afo_status *st) {
    char *d = strdup(s);
    if (!d) *st = afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory");
    return d;
}

/* A special token as tokenizer files write it: "text" or {"content": "text"}. */
static char *token_string(const cJSON *cfg, const char *key, afo_status *st) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? dup_or_oom(v->valuestring, st) : NULL;
}

static char *template_from_config(const cJSON *cfg, const char *dir, afo_status *st) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(t)) return dup_or_oom(t->valuestring, st);
    if (cJSON_IsArray(t)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, t) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *body = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(name) && !strcmp(name->valuestring, "default") && cJSON_IsString(body))
                return dup_or_oom(body->valuestring, st);
        }
        *st = afo_error(AFO_ERR_FORMAT, "%s/tokenizer_config.json: chat_template list has no \"default\" entry", dir);
        return NULL;
    }
    *st = afo_error(AFO_ERR_FORMAT, "%s: no chat template (neither chat_template.jinja nor a chat_template in "
                    "tokenizer_config.json)", dir);
    return NULL;
}

afo_status afo_chat_template_from_model(const char *dir, char **source, char **bos, char **eos) {
    if (!dir || !source) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_chat_template_from_model: dir and source are required");
    *source = NULL;
    if (bos) *bos = NULL;
    if (eos) *eos = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return afo_error(AFO_ERR_IO, "%s: not a model directory", dir);
    afo_status st = AFO_OK;
    cJSON *cfg = read_json(dir, "tokenizer_config.json", &st);
    cJSON *map = st == AFO_OK ? read_json(dir, "special_tokens_map.json", &st) : NULL;
    if (st != AFO_OK) goto done;
    /* a separate chat_template.jinja takes priority, as in transformers */
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    *source = read_file(path, &st);
    if (!*source && st == AFO_OK) *source = template_from_config(cfg, dir, &st);
    char **want[2] = {bos, eos};
    static const char *const keys[2] = {"bos_token", "eos_token"};
    for (int i = 0; i < 2 && st == AFO_OK; i++) {
        if (!want[i]) continue;
        *want[i] = token_string(cfg, keys[i], &st);
        if (!*want[i] && st == AFO_OK) *want[i] = token_string(map, keys[i], &st);
    }
done:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    if (st != AFO_OK) {
        free(*source), *source = NULL;
        if (bos) free(*bos), *bos = NULL;
        if (eos) free(*eos), *eos = NULL;
    }
    return st;
}
