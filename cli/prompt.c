/* Turning user text into prompt ids: through the model's chat template when
 * it has one (as mlx-lm and transformers do), else as raw text with the
 * tokenizer's special tokens. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Renders `messages` (a cJSON array, borrowed) with the model's template;
 * *text NULL when the model has no template. */
static int render(const cli_session *s, const cJSON *messages, char **text) {
    char *source = NULL, *bos = NULL, *eos = NULL;
    *text = NULL;
    if (afo_chat_template_from_model(afo_model_dir(s->model), &source, &bos, &eos) != AFO_OK || !source) {
        free(bos), free(eos), free(source);
        return 0; /* no template: the caller falls back to raw text */
    }
    int rc = -1;
    afo_chat_template *t = afo_chat_template_parse(source);
    cJSON *ctx = cJSON_CreateObject();
    char *json = NULL;
    if (!t || !ctx) {
        cli_fail("chat template");
        goto done;
    }
    cJSON_AddItemToObject(ctx, "messages", cJSON_Duplicate(messages, 1));
    cJSON_AddBoolToObject(ctx, "add_generation_prompt", 1);
    if (bos) cJSON_AddStringToObject(ctx, "bos_token", bos);
    if (eos) cJSON_AddStringToObject(ctx, "eos_token", eos);
    json = cJSON_PrintUnformatted(ctx);
    if (!json || afo_chat_template_render(t, json, text) != AFO_OK) {
        cli_fail("chat template");
        goto done;
    }
    rc = 0;
done:
    free(json);
    cJSON_Delete(ctx);
    afo_chat_template_free(t);
    free(source), free(bos), free(eos);
    return rc;
}

int cli_messages_ids(const cli_session *s, const cJSON *messages, int32_t **ids, size_t *n, int *templated) {
    char *text = NULL;
    if (render(s, messages, &text) != 0) return -1;
    *templated = text != NULL;
    if (!text) { /* raw: the messages' contents, one after another */
        size_t len = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, messages) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
            if (cJSON_IsString(c)) len += strlen(c->valuestring);
        }
        text = calloc(1, len + 1);
        if (!text) return fprintf(stderr, "afo: out of memory\n"), -1;
        cJSON_ArrayForEach(m, messages) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
            if (cJSON_IsString(c)) strcat(text, c->valuestring);
        }
    }
    /* a rendered template already holds its special tokens */
    afo_status st = afo_tokenizer_encode(s->tok, text, strlen(text), !*templated, ids, n);
    free(text);
    return st == AFO_OK ? 0 : cli_fail("tokenize");
}

int cli_prompt_ids(const cli_session *s, const char *system, const char *user, int raw, int32_t **ids, size_t *n) {
    if (raw) return afo_tokenizer_encode(s->tok, user, strlen(user), 1, ids, n) == AFO_OK ? 0 : cli_fail("tokenize");
    cJSON *messages = cJSON_CreateArray();
    if (!messages) return fprintf(stderr, "afo: out of memory\n"), -1;
    if (system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_AddItemToArray(messages, m);
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", user);
    cJSON_AddItemToArray(messages, m);
    int templated, rc = cli_messages_ids(s, messages, ids, n, &templated);
    cJSON_Delete(messages);
    return rc;
}
