/* afo chat: an interactive conversation that keeps its history (and the KV
 * cache of everything already seen). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "usage: afo chat [--model M] [--system TEXT] [--max-tokens N] [--temp T --top-k K --top-p P --min-p P\n"
    "                --repetition-penalty R --seed S] [--kv-bits B --kv-group-size G --quantized-kv-start N]\n"
    "                [--max-kv-size N] [--kv-dtype T] [--threads N] [--device cpu|cuda]\n"
    "  Reads one user message per line from stdin; /reset forgets the conversation, /exit (or end of\n"
    "  input) quits. Replies stream to stdout.\n";

typedef struct reply {
    char *text;
    size_t len;
    int32_t *ids; /* generated */
    size_t nids, cap;
} reply;

static int collect(int32_t id, const char *text, void *ud) {
    reply *r = ud;
    if (r->nids == r->cap) {
        int32_t *grown = realloc(r->ids, sizeof(int32_t) * (r->cap = r->cap ? 2 * r->cap : 64));
        if (!grown) return 1;
        r->ids = grown;
    }
    r->ids[r->nids++] = id;
    if (!text || !*text) return 0;
    fputs(text, stdout);
    fflush(stdout);
    size_t n = strlen(text);
    char *grown = realloc(r->text, r->len + n + 1);
    if (!grown) return 1;
    memcpy(grown + r->len, text, n + 1);
    r->text = grown;
    r->len += n;
    return 0;
}

static void add_message(cJSON *messages, const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(messages, m);
}

/* Length of the common prefix of two id lists. */
static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

int cmd_chat(int argc, char **argv) {
    const char *model = NULL, *system = NULL, *stops[16];
    afo_generate_options o = afo_generate_defaults();
    afo_kv_cache_options kvo = cli_kv_defaults();
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return printf("%s", USAGE), 0;
        if (!strcmp(argv[i], "--model")) { if (!(model = cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--system")) { if (!(system = cli_value(argc, argv, &i))) return 2; }
        else if ((r = cli_sampling_option(argc, argv, &i, &o, stops, 16)) != 0) { if (r < 0) return 2; }
        else if ((r = cli_kv_option(argc, argv, &i, &kvo)) != 0) { if (r < 0) return 2; }
        else if (cli_common_option(argc, argv, &i) != 0) return fprintf(stderr, "%s", USAGE), 2;
    }
    cli_session s;
    if (cli_open(model, &s) != 0) return 1;
    char device[256];
    fprintf(stderr, "afo chat on %s\n", cli_device_description(device, sizeof device));
    afo_kv_cache *cache = NULL;
    cJSON *messages = cJSON_CreateArray();
    int32_t *seen = NULL; /* the ids the cache holds */
    size_t nseen = 0;
    char *line = NULL; /* a line of any length: one message however long the paste */
    size_t line_cap = 0;
    int rc = 1;
    if (!messages || afo_kv_cache_create_ex(s.model, 1, &kvo, &cache) != AFO_OK) { cli_fail("chat"); goto done; }
    if (system) add_message(messages, "system", system);
    for (;;) {
        fprintf(stderr, "> ");
        if (getline(&line, &line_cap, stdin) < 0) break;
        line[strcspn(line, "\r\n")] = '\0';
        if (!strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            cJSON_Delete(messages);
            messages = cJSON_CreateArray();
            if (system) add_message(messages, "system", system);
            afo_kv_cache_reset(cache);
            nseen = 0;
            fprintf(stderr, "(conversation reset)\n");
            continue;
        }
        if (!line[0]) continue;
        add_message(messages, "user", line);
        int32_t *ids = NULL;
        size_t n = 0;
        int templated;
        if (cli_messages_ids(&s, messages, &ids, &n, &templated) != 0) {
            /* a message the template or tokenizer refuses (invalid UTF-8, a
             * role the template rejects) is dropped, the error printed, and
             * the conversation goes on */
            cJSON_DeleteItemFromArray(messages, cJSON_GetArraySize(messages) - 1);
            free(ids);
            continue;
        }
        /* reuse the cached prefix; at least one id must be fed */
        size_t keep = common_prefix(seen, nseen, ids, n);
        if (keep == n) keep = n ? n - 1 : 0;
        if (afo_kv_cache_truncate(cache, (int64_t)keep) != AFO_OK) { /* a rotated cache: feed it all again */
            afo_kv_cache_reset(cache);
            keep = 0;
        }
        reply r = {0};
        afo_generate_stats st;
        afo_status gs = afo_generate(s.model, cache, s.tok, ids + keep, n - keep, &o, collect, &r, &st);
        printf("\n");
        if (gs != AFO_OK) { free(ids), free(r.text), free(r.ids); cli_fail("generate"); goto done; }
        /* the cache now holds the prompt and all generated ids but the last */
        int32_t *grown = realloc(ids, sizeof(int32_t) * (n + r.nids));
        if (!grown) { free(ids), free(r.text), free(r.ids); fprintf(stderr, "afo: out of memory\n"); goto done; }
        if (r.nids) memcpy(grown + n, r.ids, sizeof(int32_t) * (r.nids - 1));
        free(seen);
        seen = grown;
        nseen = n + (r.nids ? r.nids - 1 : 0);
        free(r.ids);
        add_message(messages, "assistant", r.text ? r.text : "");
        free(r.text);
        fprintf(stderr, "[%lld prompt tokens (%lld cached), %lld generated, %.1f tokens/s]\n", (long long)n,
                (long long)keep, (long long)st.generated_tokens,
                st.generate_seconds > 0 ? (double)(st.generated_tokens - 1) / st.generate_seconds : 0.0);
    }
    rc = 0;
done:
    free(line);
    free(seen);
    cJSON_Delete(messages);
    afo_kv_cache_free(cache);
    cli_close(&s);
    return rc;
}
