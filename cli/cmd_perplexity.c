/* afo perplexity: the protocol of the fixtures' reference.json. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "usage: afo perplexity [--model M] --file F [--ctx N] [--batch B] [--json] [--threads N] [--device cpu|cuda]\n"
    "  Encodes F without special tokens, splits it into windows of N tokens\n"
    "  (default 256; the remainder is dropped) and reports exp(mean NLL) of the\n"
    "  N-1 next-token predictions of each window; B windows per forward pass (default 4).\n"
    "  With --chunk C or a KV cache option, each window goes through a KV cache C tokens per\n"
    "  forward pass (default 1: every prediction decoded), so the cache's storage shows:\n"
    "  [--kv-bits B --kv-group-size G --quantized-kv-start N (default 0 here)] [--max-kv-size N]\n"
    "  [--kv-dtype float32|bfloat16|float16]\n";

int cmd_perplexity(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *v;
    long ctx = 256, batch = 4, chunk = 0;
    int json = 0, r;
    afo_kv_cache_options kvo = afo_kv_cache_defaults();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return printf("%s", USAGE), 0;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--model")) { if (!(model = cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--file")) { if (!(file = cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--ctx")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int("--ctx", v, 2, 1 << 20, &ctx)) return 2;
        } else if (!strcmp(argv[i], "--batch")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int("--batch", v, 1, 4096, &batch)) return 2;
        } else if (!strcmp(argv[i], "--chunk")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int("--chunk", v, 1, 1 << 20, &chunk)) return 2;
        } else if ((r = cli_kv_option(argc, argv, &i, &kvo)) != 0) {
            if (r < 0) return 2;
        } else if (cli_common_option(argc, argv, &i) != 0) return fprintf(stderr, "%s", USAGE), 2;
    }
    if (!file) return fprintf(stderr, "afo perplexity: --file is required\n%s", USAGE), 2;
    cli_session s;
    if (cli_open(model, &s) != 0) return 1;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t len = 0, n = 0;
    int rc = 1;
    double mean, t0 = cli_now();
    int64_t preds;
    if (cli_read_file(file, &text, &len) != 0) goto done;
    if (afo_tokenizer_encode(s.tok, text, len, 0, &ids, &n) != AFO_OK) { cli_fail(file); goto done; }
    if (!chunk && (kvo.kv_bits || kvo.max_kv_size || kvo.kv_dtype)) chunk = 1;
    afo_status st = chunk ? afo_perplexity_cached(s.model, ids, n, ctx, batch, chunk, &kvo, &mean, &preds)
                          : afo_perplexity(s.model, ids, n, ctx, batch, &mean, &preds);
    if (st != AFO_OK) { cli_fail("perplexity"); goto done; }
    double secs = cli_now() - t0, tps = (double)(preds / (ctx - 1) * ctx) / secs;
    char device[256];
    cli_device_description(device, sizeof device);
    if (json)
        printf("{\"perplexity\": %.6f, \"mean_nll\": %.8f, \"predictions\": %lld, \"ctx\": %ld, \"tokens\": %zu, "
               "\"tokens_per_second\": %.1f, \"device\": \"%s\"}\n",
               exp(mean), mean, (long long)preds, ctx, n, tps, device);
    else
        printf("perplexity %.4f (mean NLL %.6f over %lld predictions, windows of %ld; %.1f tokens/s on %s)\n",
               exp(mean), mean, (long long)preds, ctx, tps, device);
    rc = 0;
done:
    free(text);
    free(ids);
    cli_close(&s);
    return rc;
}
