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
