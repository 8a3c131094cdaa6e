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

/* Makes `name` the default device; `source` (an option or variable) is
 * named in the message when it cannot be. */
static int use_device(const char *source, const char *name) {
    int d = afo_device_from_name(name);
    if (d < 0 || afo_set_default_device((afo_device)d) != AFO_OK) {
        fprintf(stderr, "afo: %s %s: %s\n", source, name, d < 0 ? "unknown device (cpu or cuda)" : afo_last_error());
        return -1;
    }
    return 0;
}

int cli_choose_device(void) {
    const char *env = getenv("AFO_DEVICE");
    if (env && *env) return use_device("AFO_DEVICE", env);
    if (afo_device_available(AFO_CUDA)) afo_set_default_device(AFO_CUDA);
    afo_clear_error(); /* no GPU is not an error */
    return 0;
}

int cli_common_option(int argc, char **argv, int *i) {
    if (!strcmp(argv[*i], "--device")) {
        const char *v = cli_value(argc, argv, i);
        return v ? use_device("--device", v) : -1;
    }
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

int cli_load_model(const char *model, afo_model **m) {
    afo_device d = afo_get_default_device();
    /* on a GPU the activations and the cache take the weights' dtype, as
     * transformers and mlx-lm do; the CPU keeps float32 for exactness */
    afo_model_options o = {.compute_in_storage_dtype = d != AFO_CPU};
    if (afo_model_load(model, &o, m) != AFO_OK) return cli_fail(model);
    if (d != AFO_CPU && afo_model_to_device(*m, d) != AFO_OK) {
        afo_model_free(*m);
        *m = NULL;
        return cli_fail("copying the weights to the GPU");
    }
    return 0;
}

afo_kv_cache_options cli_kv_defaults(void) {
    afo_kv_cache_options o = afo_kv_cache_defaults();
    o.quantized_start = 5000;
    return o;
}

int cli_kv_option(int argc, char **argv, int *i, afo_kv_cache_options *o) {
    if (!strcmp(argv[*i], "--kv-dtype")) {
        const char *v = cli_value(argc, argv, i);
        int t = v ? afo_dtype_from_name(v) : -1;
        if (t != AFO_FLOAT32 && t != AFO_BFLOAT16 && t != AFO_FLOAT16) {
            if (v) fprintf(stderr, "afo: --kv-dtype needs float32, bfloat16 or float16, not '%s'\n", v);
            return -1;
        }
        o->kv_dtype = (afo_dtype)t;
        return 1;
    }
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
    if (cli_load_model(model, &s->model) != 0) return 1;
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

const char *cli_device_description(char *buf, size_t n) {
    afo_device d = afo_get_default_device();
    afo_device_info info;
    if (afo_device_get_info(d, &info) != AFO_OK) snprintf(info.name, sizeof info.name, "unknown");
    snprintf(buf, n, "%s (%s, %.1f GiB)", afo_device_name(d), info.name, (double)info.total_memory / 1073741824.0);
    return buf;
}
