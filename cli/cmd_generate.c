/* afo generate and afo chat. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *GEN_USAGE =
    "usage: afo generate [--model M] [--prompt TEXT|-] [--prompt-ids 1,2,3] [options]\n"
    "  --model M               model directory or hub id (default: the demo model)\n"
    "  --prompt TEXT|-         the user message (- reads stdin); with a chat template it is wrapped in it\n"
    "  --system TEXT           a system message (chat templates only)\n"
    "  --ignore-chat-template  feed the prompt as raw text\n"
    "  --prompt-ids LIST       comma-separated token ids instead of text\n"
    "  --print-ids             print the generated ids instead of text\n"
    "  --max-tokens N          (default 256)\n"
    "  --temp T --top-k K --top-p P --min-p P --repetition-penalty R --seed S\n"
    "  --stop S                stop before S (repeatable)\n"
    CLI_KV_USAGE
    "  --threads N --device cpu|cuda   (default: cuda when a GPU is present)\n"
    "Text goes to stdout as it is generated; statistics go to stderr.\n";

int cli_sampling_option(int argc, char **argv, int *i, afo_generate_options *o, const char **stops, int max_stops) {
    const char *opt = argv[*i], *v;
    long n;
    char *end;
    if (!strcmp(opt, "--max-tokens")) {
        if (!(v = cli_value(argc, argv, i)) || cli_int(opt, v, 0, 1 << 24, &n)) return -1;
        o->max_tokens = n;
    } else if (!strcmp(opt, "--top-k")) {
        if (!(v = cli_value(argc, argv, i)) || cli_int(opt, v, 0, 1 << 30, &n)) return -1;
        o->sampler.top_k = (int)n;
    } else if (!strcmp(opt, "--seed")) {
        if (!(v = cli_value(argc, argv, i)) || cli_int(opt, v, 0, 0x7fffffffL, &n)) return -1;
        o->sampler.seed = (uint64_t)n;
    } else if (!strcmp(opt, "--temp") || !strcmp(opt, "--top-p") || !strcmp(opt, "--min-p") ||
               !strcmp(opt, "--repetition-penalty")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        float f = strtof(v, &end);
        if (!*v || *end) {
            fprintf(stderr, "afo: %s needs a number, not '%s'\n", opt, v);
            return -1;
        }
        if (!strcmp(opt, "--temp")) o->sampler.temperature = f;
        else if (!strcmp(opt, "--top-p")) o->sampler.top_p = f;
        else if (!strcmp(opt, "--min-p")) o->sampler.min_p = f;
        else o->sampler.repetition_penalty = f;
    } else if (!strcmp(opt, "--stop")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        if (o->num_stop == max_stops) {
            fprintf(stderr, "afo: at most %d --stop strings\n", max_stops);
            return -1;
        }
        stops[o->num_stop++] = v;
        o->stop = stops;
    } else {
        return 0;
    }
    return 1;
}

typedef struct stream_ctx {
    int print_ids;
    size_t count;
} stream_ctx;

static int on_token(int32_t id, const char *text, void *ud) {
    stream_ctx *c = ud;
    if (c->print_ids) printf(c->count++ ? " %d" : "%d", (int)id);
    else if (text) fputs(text, stdout);
    fflush(stdout);
    return 0;
}

static void print_stats(const afo_generate_stats *st) {
    fprintf(stderr, "\n==========\n");
    fprintf(stderr, "Prompt: %lld tokens, %.3f tokens-per-sec\n", (long long)st->prompt_tokens,
            st->prompt_seconds > 0 ? (double)st->prompt_tokens / st->prompt_seconds : 0.0);
    fprintf(stderr, "Generation: %lld tokens, %.3f tokens-per-sec\n", (long long)st->generated_tokens,
            st->generate_seconds > 0 && st->generated_tokens > 1
                ? (double)(st->generated_tokens - 1) / st->generate_seconds : 0.0);
    fprintf(stderr, "Time to first token: %.3f s\n", st->time_to_first_token);
    char device[256];
    fprintf(stderr, "Device: %s\n", cli_device_description(device, sizeof device));
    fprintf(stderr, "Peak memory: %.3f GB on %s (+ %.3f GB of weights mapped from disk)\n",
            (double)st->peak_memory / 1e9, afo_device_name(afo_get_default_device()),
            (double)afo_get_mapped_memory() / 1e9);
    fprintf(stderr, "Stopped by: %s\n", afo_stop_reason_name(st->stop_reason));
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *system = NULL, *id_list = NULL, *stops[16];
    int raw = 0, print_ids = 0;
    afo_generate_options o = afo_generate_defaults();
    afo_kv_cache_options kvo = cli_kv_defaults();
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return printf("%s", GEN_USAGE), 0;
        if (!strcmp(argv[i], "--ignore-chat-template")) raw = 1;
        else if (!strcmp(argv[i], "--print-ids")) print_ids = 1;
        else if (!strcmp(argv[i], "--model")) { if (!(model = cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--prompt")) { if (!(prompt = cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--system")) { if (!(system = cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--prompt-ids")) { if (!(id_list = cli_value(argc, argv, &i))) return 2; }
        else if ((r = cli_sampling_option(argc, argv, &i, &o, stops, 16)) != 0) { if (r < 0) return 2; }
        else if ((r = cli_kv_option(argc, argv, &i, &kvo)) != 0) { if (r < 0) return 2; }
        else if (cli_common_option(argc, argv, &i) != 0) return fprintf(stderr, "%s", GEN_USAGE), 2;
    }
    if (prompt && id_list) return fprintf(stderr, "afo generate: give --prompt or --prompt-ids, not both\n"), 2;
    cli_session s;
    if (cli_open(model, &s) != 0) return 1;
    int rc = 1;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    afo_kv_cache *cache = NULL;
    if (id_list) {
        if (cli_ids("--prompt-ids", id_list, &ids, &n) != 0) goto done;
    } else {
        size_t len;
        if (prompt && !strcmp(prompt, "-")) {
            if (cli_read_file("-", &text, &len) != 0) goto done;
            prompt = text;
        }
        if (cli_prompt_ids(&s, system, prompt ? prompt : "", raw, &ids, &n) != 0) goto done;
    }
    if (afo_kv_cache_create_ex(s.model, 1, &kvo, &cache) != AFO_OK) { cli_fail("cache"); goto done; }
    stream_ctx ctx = {print_ids, 0};
    afo_generate_stats st;
    if (afo_generate(s.model, cache, s.tok, ids, n, &o, on_token, &ctx, &st) != AFO_OK) {
        cli_fail("generate");
        goto done;
    }
    printf("\n");
    print_stats(&st);
    rc = 0;
done:
    afo_kv_cache_free(cache);
    free(ids);
    free(text);
    cli_close(&s);
    return rc;
}
