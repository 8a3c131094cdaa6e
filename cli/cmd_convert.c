/* afo convert: write a model in another format. For now GGUF for llama.cpp;
 * options go through one table so that further targets (MLX quantization)
 * add rows, not parsing code. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct convert_opts {
    const char *model, *gguf, *gguf_type;
} convert_opts;

static const struct {
    const char *name;
    size_t field; /* offset of the const char * it sets in convert_opts */
} OPTIONS[] = {
    {"--model", offsetof(convert_opts, model)},
    {"--gguf", offsetof(convert_opts, gguf)},
    {"--gguf-type", offsetof(convert_opts, gguf_type)},
};

int cmd_convert(int argc, char **argv) {
    static const char usage[] =
        "usage: afo convert --model IN --gguf OUT.gguf [--gguf-type f16|bf16|q8_0|q4_0] [--threads N]\n"
        "writes a llama, mistral, qwen2 or qwen3 model as a GGUF file for llama.cpp (default type f16);\n"
        "norms and biases stay float32\n";
    convert_opts o = {.gguf_type = "f16"};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("%s", usage);
            return 0;
        }
        size_t k = 0, n = sizeof OPTIONS / sizeof *OPTIONS;
        while (k < n && strcmp(argv[i], OPTIONS[k].name) != 0) k++;
        if (k == n) {
            if (cli_common_option(argc, argv, &i) != 0) {
                fprintf(stderr, "%s", usage);
                return 2;
            }
            continue;
        }
        const char *v = cli_value(argc, argv, &i);
        if (!v) return 2;
        *(const char **)((char *)&o + OPTIONS[k].field) = v;
    }
    if (!o.model || !o.gguf) {
        fprintf(stderr, "afo convert: --model and --gguf are required\n%s", usage);
        return 2;
    }
    int type = afo_gguf_type_from_name(o.gguf_type);
    if (type < 0) {
        fprintf(stderr, "afo convert: --gguf-type needs f16, bf16, q8_0 or q4_0, not '%s'\n", o.gguf_type);
        return 2;
    }
    double t0 = cli_now();
    if (afo_gguf_export(o.model, o.gguf, (afo_gguf_type)type) != AFO_OK) return cli_fail("convert");
    fprintf(stderr, "afo convert: wrote %s (%s) in %.1f s\n", o.gguf, o.gguf_type, cli_now() - t0);
    return 0;
}
