/* What most subcommands share: the model (by path, hub id, or the demo
 * model shipped in the repo), its tokenizer, and common options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifndef AFO_DEMO_MODEL_DIR
#define AFO_DEMO_MODEL_DIR "models/tiny-classics"
#endif

const char *cli_demo_model(void) {
    const char *env = getenv("AFO_DEMO_MODEL");
    return env && *env ? env : AFO_DEMO_MODEL_DIR;
}

int cli_common_option(int argc, char **argv, int *i) {
    if (!strcmp(argv[*i], "--threads")) {
        long n;
        const char *v = cli_value(argc, argv, i);
        if (!v || cli_int("--threads", v, 1, 1024, &n)) return -1;
        afo_set_threads((int)n);
        return 0;
    }
    fprintf(stderr, "afo %s: unknown option '%s'\n", argv[0], argv[*i]);
    return -1;
}

afo_kv_cache_options cli_kv_defaults(void) {
    afo_kv_cache_options o = afo_kv_cache_defaults();
    o.quantized_start = 5000;
    return o;
}

int cli_kv_option(int argc, char **argv, int *i, afo_kv_cache_options *o) {
    static const char *const names[] = {"--kv-bits", "--kv-group-size", "--quantized-kv-start", "--max-kv-size"};
    int which = -1;
    for (int k = 0; k < 4; k++)
        if (!strcmp(argv[*i], names[k])) which = k;
    if (which < 0) return 0;
    long n;
    const char *v = cli_value(argc, argv, i);
    if (!v || cli_int(names[which], v, 0, 0x7fffffffL, &n)) return -1;
    if (which == 0) o->kv_bits = (int)n;
    else if (which == 1) o->kv_group_size = (int)n;
    else if (which == 2) o->quantized_start = n;
    else o->max_kv_size = n;
    return 1;
}

int cli_open(const char *model, cli_session *s) {
    memset(s, 0, sizeof *s);
    if (!model) model = cli_demo_model();
    if (afo_model_load(model, NULL, &s->model) != AFO_OK) return cli_fail(model);
    s->tok = afo_tokenizer_load(afo_model_dir(s->model));
    if (!s->tok) {
        afo_model_free(s->model);
        s->model = NULL;
        return cli_fail("tokenizer");
    }
    return 0;
}

void cli_close(cli_session *s) {
    afo_tokenizer_free(s->tok);
    afo_model_free(s->model);
    memset(s, 0, sizeof *s);
}

int cli_read_file(const char *path, char **text, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "afo: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *grown = realloc(buf, (cap *= 2) + 1);
            if (!grown) free(buf);
            buf = grown;
        }
    }
    int failed = !buf || ferror(f);
    if (f != stdin) fclose(f);
    if (failed) {
        free(buf);
        fprintf(stderr, "afo: cannot read %s\n", path);
        return -1;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}
