/* afo convert: write a model in another format: MLX's layout (quantized
 * with -q, dequantized with -d, else cast) or GGUF for llama.cpp. Options go
 * through one table so that further targets add rows, not parsing code. */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct convert_opts {
    const char *model, *gguf, *gguf_type, *out, *dtype, *bits, *group_size, *predicate;
    bool quantize, dequantize;
} convert_opts;

static const struct {
    const char *name, *alias;
    size_t field; /* offset of the const char * it sets, or of the bool a flag sets */
    bool flag;
} OPTIONS[] = {
    {"--model", NULL, offsetof(convert_opts, model), false},
    {"--gguf", NULL, offsetof(convert_opts, gguf), false},
    {"--gguf-type", NULL, offsetof(convert_opts, gguf_type), false},
    {"--out", "--mlx-path", offsetof(convert_opts, out), false},
    {"--dtype", NULL, offsetof(convert_opts, dtype), false},
    {"--q-bits", NULL, offsetof(convert_opts, bits), false},
    {"--q-group-size", NULL, offsetof(convert_opts, group_size), false},
    {"--quant-predicate", NULL, offsetof(convert_opts, predicate), false},
    {"-q", "--quantize", offsetof(convert_opts, quantize), true},
    {"-d", "--dequantize", offsetof(convert_opts, dequantize), true},
};

/* The first of `names` (OPTIONS' own) that the command line gave, or NULL;
 * with `value`, that option's text (NULL for a flag). */
static const char *first_given(const convert_opts *o, const char *const *names, const char **value) {
    for (; *names; names++)
        for (size_t k = 0; k < sizeof OPTIONS / sizeof *OPTIONS; k++) {
            if (strcmp(OPTIONS[k].name, *names) != 0) continue;
            const char *field = (const char *)o + OPTIONS[k].field;
            const char *text = OPTIONS[k].flag ? NULL : *(const char *const *)field;
            if (OPTIONS[k].flag ? !*(const bool *)field : !text) break;
            if (value) *value = text;
            return OPTIONS[k].name;
        }
    return NULL;
}

static int convert_gguf(const convert_opts *o) {
    const char *type_name = o->gguf_type ? o->gguf_type : "f16";
    int type = afo_gguf_type_from_name(type_name);
    if (type < 0) {
        fprintf(stderr, "afo convert: --gguf-type needs f16, bf16, q8_0 or q4_0, not '%s'\n", type_name);
        return 2;
    }
    double t0 = cli_now();
    if (afo_gguf_export(o->model, o->gguf, (afo_gguf_type)type) != AFO_OK) return cli_fail("convert");
    fprintf(stderr, "afo convert: wrote %s (%s) in %.1f s\n", o->gguf, type_name, cli_now() - t0);
    return 0;
}

typedef struct progress {
    int done, total;
    size_t bytes;
    bool tty;
} progress;

/* A bar only on a terminal, so logs and tests see the summary line alone. */
static void show_progress(void *ctx, int done, int total, size_t bytes, size_t all) {
    progress *p = ctx;
    p->done = done, p->total = total, p->bytes = bytes;
    if (!p->tty) return;
    int filled = total ? 30 * done / total : 30;
    fprintf(stderr, "\r[%.*s%*s] %d/%d tensors, %.1f/%.1f MB", filled, "##############################", 30 - filled,
            "", done, total, (double)bytes / 1e6, (double)all / 1e6);
    if (done == total) fputc('\n', stderr);
}

static int convert_mlx(const convert_opts *o) {
    progress p = {.tty = isatty(STDERR_FILENO)};
    long bits = 0, group_size = 64; /* the library names the values it does not take within these */
    if (o->quantize && (cli_int("--q-bits", o->bits ? o->bits : "4", 2, 8, &bits) ||
                        cli_int("--q-group-size", o->group_size ? o->group_size : "64", 32, 128, &group_size)))
        return 2;
    afo_convert_options c = {.dtype = -1,
                             .bits = (int)bits,
                             .group_size = (int)group_size,
                             .predicate = o->predicate,
                             .progress = show_progress,
                             .progress_ctx = &p};
    const char *value,
        *needs_q = first_given(o, (const char *const[]){"--quant-predicate", "--q-bits", "--q-group-size", NULL}, &value);
    if (needs_q && !o->quantize) {
        fprintf(stderr, "afo convert: %s %s needs -q\n", needs_q, value);
        return 2;
    }
    if (o->dtype) {
        static const char *const names[3] = {"bfloat16", "float16", "float32"};
        static const afo_dtype types[3] = {AFO_BFLOAT16, AFO_FLOAT16, AFO_FLOAT32};
        for (int i = 0; i < 3; i++)
            if (strcmp(o->dtype, names[i]) == 0) c.dtype = (int)types[i];
        if (c.dtype < 0) {
            fprintf(stderr, "afo convert: --dtype needs bfloat16, float16 or float32, not '%s'\n", o->dtype);
            return 2;
        }
    }
    double t0 = cli_now(), bpw = 0;
    if (afo_model_convert(o->model, o->out, &c, &bpw) != AFO_OK) return cli_fail("convert");
    char device[160];
    fprintf(stderr, "afo convert: wrote %s (%d tensors, %.1f MB) in %.1f s on %s\n", o->out, p.done,
            (double)p.bytes / 1e6, cli_now() - t0, cli_device_description(device, sizeof device));
    printf("bits per weight: %.3f\n", bpw);
    return 0;
}

int cmd_convert(int argc, char **argv) {
    static const char usage[] =
        "usage: afo convert --model IN --out OUT [--dtype bfloat16|float16|float32]\n"
        "                   [-q [--q-bits 4] [--q-group-size 64] [--quant-predicate RECIPE] | -d]\n"
        "       afo convert --model IN --gguf OUT.gguf [--gguf-type f16|bf16|q8_0|q4_0]\n"
        "either form: [--threads N] [--device cpu|cuda] (where --out's casts and quantization run)\n"
        "--out writes MLX's layout: -q quantizes every Linear and embedding matrix (bits 2, 3, 4, 5, 6, 8;\n"
        "group size 32, 64, 128; matrices whose input size is not a multiple stay as they are), -d\n"
        "dequantizes a quantized model; prints the bits per weight. MoE experts are stacked as MLX's\n"
        "switch_mlp. RECIPE is one of mlx-lm's mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6: low/high bits,\n"
        "high for v_proj and down_proj of the first and last eighth of layers and every third between,\n"
        "and for lm_head. A progress bar goes to stderr when it is a terminal.\n"
        "--gguf writes a llama, mistral, qwen2 or qwen3 model for llama.cpp (default type f16);\n"
        "norms and biases stay float32\n";
    convert_opts o = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("%s", usage);
            return 0;
        }
        size_t k = 0, n = sizeof OPTIONS / sizeof *OPTIONS;
        while (k < n && strcmp(argv[i], OPTIONS[k].name) != 0 &&
               !(OPTIONS[k].alias && strcmp(argv[i], OPTIONS[k].alias) == 0))
            k++;
        if (k == n) {
            if (cli_common_option(argc, argv, &i) != 0) {
                fprintf(stderr, "%s", usage);
                return 2;
            }
            continue;
        }
        if (OPTIONS[k].flag) {
            *(bool *)((char *)&o + OPTIONS[k].field) = true;
            continue;
        }
        const char *v = cli_value(argc, argv, &i);
        if (!v) return 2;
        *(const char **)((char *)&o + OPTIONS[k].field) = v;
    }
    if (!o.model || !o.gguf == !o.out) {
        fprintf(stderr, "afo convert: --model and one of --out or --gguf are required\n%s", usage);
        return 2;
    }
    if (o.quantize && o.dequantize) {
        fprintf(stderr, "afo convert: -q and -d exclude each other\n");
        return 2;
    }
    /* an option of the other form is refused, not ignored */
    const char *mlx_only = first_given(
        &o, (const char *const[]){"-q", "-d", "--dtype", "--q-bits", "--q-group-size", "--quant-predicate", NULL}, NULL);
    if (o.gguf && mlx_only) {
        fprintf(stderr, "afo convert: %s applies to --out (MLX's layout); --gguf takes --gguf-type f16|bf16|q8_0|q4_0\n",
                mlx_only);
        return 2;
    }
    if (o.out && o.gguf_type) {
        fprintf(stderr, "afo convert: --gguf-type applies to --gguf, not to --out\n");
        return 2;
    }
    return o.gguf ? convert_gguf(&o) : convert_mlx(&o);
}
