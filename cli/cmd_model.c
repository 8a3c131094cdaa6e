/* afo random-model / afo logits: model directories end to end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

int cmd_random_model(int argc, char **argv) {
    static const char usage[] =
        "usage: afo random-model --config CONFIG.json --out DIR [--dtype bfloat16] [--seed S]\n"
        "                        [--device cpu|cuda] [--threads N]\n"
        "writes a model directory with the config's architecture and random weights\n";
    const char *config = NULL, *out = NULL;
    int dtype = -1;
    long seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (is_help(argv[i])) {
            printf("%s", usage);
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--out") == 0 || strcmp(argv[i], "--dtype") == 0 ||
            strcmp(argv[i], "--seed") == 0) {
            if (!(v = cli_value(argc, argv, &i))) return 2;
        } else {
            if (cli_common_option(argc, argv, &i) != 0) return fprintf(stderr, "%s", usage), 2;
            continue;
        }
        const char *opt = argv[i - 1];
        if (strcmp(opt, "--config") == 0) config = v;
        else if (strcmp(opt, "--out") == 0) out = v;
        else if (strcmp(opt, "--seed") == 0 && cli_int("--seed", v, 0, 2147483647L, &seed) != 0) return 2;
        else if (strcmp(opt, "--dtype") == 0 && ((dtype = afo_dtype_from_name(v)) < 0 || !afo_dtype_is_float(dtype))) {
            fprintf(stderr, "afo random-model: --dtype needs float32, float16, bfloat16 or float64, not '%s'\n", v);
            return 2;
        }
    }
    if (!config || !out) {
        fprintf(stderr, "afo random-model: --config and --out are required\n%s", usage);
        return 2;
    }
    double t0 = cli_now();
    if (afo_model_write_random(config, out, dtype, (uint64_t)seed) != AFO_OK) return cli_fail("random-model");
    char device[160];
    fprintf(stderr, "afo random-model: wrote %s in %.1f s on %s\n", out, cli_now() - t0,
            cli_device_description(device, sizeof device));
    return 0;
}

int cmd_logits(int argc, char **argv) {
    static const char usage[] =
        "usage: afo logits --model DIR|ORG/NAME --ids 1,2,3 --out F.safetensors [--threads N]\n"
        "                  [--device cpu|cuda]\n"
        "writes the float32 tensor `logits` [1, n, vocab] of one forward pass\n";
    const char *model = NULL, *ids_text = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("%s", usage);
            return 0;
        }
        const char *opt = argv[i], *v;
        if (strcmp(opt, "--model") != 0 && strcmp(opt, "--ids") != 0 && strcmp(opt, "--out") != 0) {
            if (cli_common_option(argc, argv, &i) != 0) return fprintf(stderr, "%s", usage), 2;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (strcmp(opt, "--model") == 0) model = v;
        else if (strcmp(opt, "--ids") == 0) ids_text = v;
        else out = v;
    }
    if (!model || !ids_text || !out) {
        fprintf(stderr, "afo logits: --model, --ids and --out are required\n%s", usage);
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (cli_ids("--ids", ids_text, &ids, &n) != 0) return 2;
    afo_model *m = NULL;
    afo_array *logits = NULL;
    double t0 = cli_now();
    int rc = 0;
    char device[160];
    if (cli_load_model(model, &m) != 0) rc = 1;
    else if (afo_model_forward(m, NULL, ids, 1, (int64_t)n, &logits) != AFO_OK) rc = cli_fail("logits");
    else if (afo_safetensors_save(out, 1, (const char *[]){"logits"}, &logits, 0, NULL, NULL) != AFO_OK)
        rc = cli_fail("logits");
    else
        fprintf(stderr, "afo logits: %s (%s), %lld tokens in %.3f s on %s -> %s\n", afo_model_type(m), model,
                (long long)n, cli_now() - t0, cli_device_description(device, sizeof device), out);
    afo_release(logits);
    afo_model_free(m);
    free(ids);
    return rc;
}
