/* afo template: render a model's chat template for a conversation, as
 * transformers' apply_chat_template(tokenize=False) does. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char USAGE[] =
    "usage: afo template --model DIR --messages FILE.json [--generation-prompt] [--set KEY=JSON]...\n"
    "  --model DIR          model directory (chat_template.jinja or tokenizer_config.json)\n"
    "  --messages FILE      a JSON list of messages, or an object of template variables\n"
    "                       ({\"messages\": [...], \"tools\": [...], ...}); '-' reads stdin\n"
    "  --generation-prompt  end with the assistant's turn header (add_generation_prompt)\n"
    "  --set KEY=JSON       another template variable, e.g. --set enable_thinking=false\n"
    "                       or --set 'name=\"text\"' (strings need their JSON quotes)\n"
    "The text goes to stdout exactly, without a trailing newline.\n";

static char *read_all(const char *path) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            char *p = realloc(buf, cap = cap * 2 + 4096);
            if (!p) break;
            buf = p;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    if (f != stdin) fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

/* The context under construction: JSON text; on allocation failure it
 * stops growing and says so once at the end. */
typedef struct text {
    char *p;
    size_t n;
    int oom;
} text;

static void put(text *t, const char *s, size_t n) {
    char *q = t->oom ? NULL : realloc(t->p, t->n + n + 1);
    if (!q) {
        t->oom = 1;
        return;
    }
    memcpy(q + t->n, s, n);
    t->n += n;
    q[t->n] = '\0';
    t->p = q;
}

/* Adds `"key": json`; a later key overrides an earlier one when rendered. */
static void member(text *t, const char *key, size_t key_len, const char *json) {
    put(t, t->n > 1 ? ", \"" : "\"", t->n > 1 ? 3 : 1);
    put(t, key, key_len);
    put(t, "\": ", 3);
    put(t, json, strlen(json));
}

static void token_member(text *t, const char *key, const char *token) {
    if (!token) return;
    cJSON *s = cJSON_CreateString(token);
    char *json = s ? cJSON_PrintUnformatted(s) : NULL;
    if (json) member(t, key, strlen(key), json);
    else t->oom = 1;
    cJSON_free(json);
    cJSON_Delete(s);
}

int cmd_template(int argc, char **argv) {
    const char *model = NULL, *messages = NULL;
    const char *sets[64];
    int nsets = 0, generation_prompt = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s", USAGE);
            return 0;
        } else if (!strcmp(a, "--generation-prompt")) {
            generation_prompt = 1;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--messages")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            *(a[3] == 'o' ? &model : &messages) = v;
        } else if (!strcmp(a, "--set")) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
            const char *eq = strchr(v, '=');
            cJSON *value = eq ? cJSON_Parse(eq + 1) : NULL;
            cJSON_Delete(value);
            if (!value || eq == v || nsets == (int)(sizeof sets / sizeof *sets)) {
                fprintf(stderr, "afo template: --set needs KEY=JSON (strings in their quotes; at most 64), not '%s'\n", v);
                return 2;
            }
            sets[nsets++] = v;
        } else {
            fprintf(stderr, "afo template: unknown option '%s'\n%s", a, USAGE);
            return 2;
        }
    }
    if (!model || !messages) {
        fprintf(stderr, "afo template: --model and --messages are required\n%s", USAGE);
        return 2;
    }
    char *file = read_all(messages);
    cJSON *parsed = file ? cJSON_Parse(file) : NULL;
    int is_list = cJSON_IsArray(parsed), is_object = cJSON_IsObject(parsed);
    cJSON_Delete(parsed);
    if (!is_list && !is_object) {
        fprintf(stderr, "afo template: %s: %s\n", messages,
                file ? "not a JSON list of messages or a JSON object" : "cannot read it");
        free(file);
        return 1;
    }
    char *source = NULL, *bos = NULL, *eos = NULL, *out = NULL;
    if (afo_chat_template_from_model(model, &source, &bos, &eos) != AFO_OK) {
        free(file);
        return cli_fail("template");
    }
    /* The context is the pieces' own JSON text, not a re-serialisation, so
     * numbers keep their form (1.0 stays a float for the template's tojson). */
    text ctx = {0};
    put(&ctx, "{", 1);
    token_member(&ctx, "bos_token", bos);
    token_member(&ctx, "eos_token", eos);
    member(&ctx, "add_generation_prompt", 21, "false");
    if (is_list) {
        member(&ctx, "messages", 8, file);
    } else { /* the object's members join the context */
        char *open = strchr(file, '{') + 1, *close = strrchr(file, '}');
        if (strspn(open, " \t\r\n") < (size_t)(close - open)) {
            put(&ctx, ", ", 2);
            put(&ctx, open, (size_t)(close - open));
        }
    }
    if (generation_prompt) member(&ctx, "add_generation_prompt", 21, "true");
    for (int i = 0; i < nsets; i++) {
        const char *eq = strchr(sets[i], '=');
        member(&ctx, sets[i], (size_t)(eq - sets[i]), eq + 1);
    }
    put(&ctx, "}", 1);
    int rc = 0;
    afo_chat_template *t = ctx.oom ? NULL : afo_chat_template_parse(source);
    if (ctx.oom)
        rc = 1, fprintf(stderr, "afo template: out of memory\n");
    else if (!t || afo_chat_template_render(t, ctx.p, &out) != AFO_OK)
        rc = cli_fail("template");
    else
        fwrite(out, 1, strlen(out), stdout);
    afo_chat_template_free(t);
    free(out), free(ctx.p), free(source), free(bos), free(eos), free(file);
    return rc || fflush(stdout) != 0;
}
