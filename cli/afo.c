/* afo command-line tool: a thin layer over the library's public API. Results
 * go to stdout, progress and statistics to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command COMMANDS[] = {
    {"generate", cmd_generate, "generate text from a prompt (default: the demo model)"},
    {"chat", cmd_chat, "chat interactively, keeping the conversation"},
    {"perplexity", cmd_perplexity, "perplexity of a text file over fixed windows"},
    {"selfcheck", cmd_selfcheck, "build, differentiate and evaluate a small network; check the gradient"},
    {"bench", cmd_bench, "prefill and decode speed of one or more models"},
    {"tokenize", cmd_tokenize, "print the token ids of a text (a model's tokenizer.json)"},
    {"detokenize", cmd_detokenize, "print the text of token ids"},
    {"random-model", cmd_random_model, "write a model directory with random weights for a config.json"},
    {"logits", cmd_logits, "compute a model's logits for token ids into a safetensors file"},
    {"template", cmd_template, "render a model's chat template for a conversation"},
    {"convert", cmd_convert, "cast, quantize (MLX affine, 2-8 bits) or dequantize a model; or write it as GGUF"},
};
#define NCOMMANDS (int)(sizeof COMMANDS / sizeof *COMMANDS)

int cli_fail(const char *what) {
    const char *e = afo_last_error();
    size_t n = strlen(what);
    if (strncmp(e, what, n) == 0 && e[n] == ':') fprintf(stderr, "afo: %s\n", e); /* the library named it already */
    else fprintf(stderr, "afo: %s: %s\n", what, e);
    return 1;
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "afo: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cli_int(const char *opt, const char *text, long lo, long hi, long *out) {
    char *end;
    long v = strtol(text, &end, 10);
    if (!*text || *end || v < lo || v > hi) {
        fprintf(stderr, "afo: %s needs an integer between %ld and %ld, not '%s'\n", opt, lo, hi, text);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_ids(const char *opt, const char *text, int32_t **ids, size_t *n) {
    size_t cap = 1;
    for (const char *p = text; *p; p++) cap += *p == ',';
    *n = 0;
    *ids = malloc(sizeof(int32_t) * cap);
    if (!*ids) return fprintf(stderr, "afo: %s: out of memory\n", opt), -1;
    for (const char *p = text;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 2147483647L || (*end && *end != ',')) {
            fprintf(stderr, "afo: %s needs comma-separated token ids (0 to 2147483647), not '%s'\n", opt, text);
            free(*ids);
            *ids = NULL, *n = 0;
            return -1;
        }
        (*ids)[(*n)++] = (int32_t)v;
        if (!*end) return 0;
        p = end + 1;
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: afo <command> [options]   (afo <command> --help for its options)\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].help);
    fprintf(f, "  %-12s %s\n", "version", "print the version");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("afo %s\n", afo_version());
        return 0;
    }
    if (cli_choose_device() != 0) return 2;
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "afo: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
