/* afo tokenize / afo detokenize: a model directory's tokenizer.json on the
 * command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char TOKENIZE_USAGE[] =
    "usage: afo tokenize --model DIR [--add-special] (--text T | --file F)\n"
    "  prints the token ids of the text, space-separated, on one line\n"
    "  --model DIR     a directory with tokenizer.json, or the file itself\n"
    "  --add-special   add the post-processor's special tokens (BOS, [CLS] ...)\n"
    "  --text T        the text to encode\n"
    "  --file F        encode the contents of file F ('-' for stdin)\n";

static const char DETOKENIZE_USAGE[] =
    "usage: afo detokenize --model DIR [--skip-special] IDS...\n"
    "  prints the text of the token ids\n"
    "  --model DIR      a directory with tokenizer.json, or the file itself\n"
    "  --skip-special   leave out special tokens\n";

static char *read_all(const char *path, size_t *n) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "afo tokenize: cannot open %s\n", path);
        return NULL;
    }
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    *n = 0;
    for (size_t r; buf && (r = fread(buf + *n, 1, cap - *n, f)) > 0;) {
        *n += r;
        if (*n == cap) {
            char *g = realloc(buf, cap *= 2);
            if (!g) free(buf);
            buf = g;
        }
    }
    if (f != stdin) fclose(f);
    if (!buf) fprintf(stderr, "afo tokenize: out of memory reading %s\n", path);
    return buf;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    int special = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("%s", TOKENIZE_USAGE);
            return 0;
        } else if (strcmp(argv[i], "--add-special") == 0) {
            special = 1;
        } else if (strcmp(argv[i], "--model") == 0 || strcmp(argv[i], "--text") == 0 || strcmp(argv[i], "--file") == 0) {
            const char **dst = argv[i][2] == 'm' ? &model : argv[i][2] == 't' ? &text : &file;
            if (!(*dst = cli_value(argc, argv, &i))) return 2;
        } else {
            fprintf(stderr, "afo tokenize: unknown option '%s'\n%s", argv[i], TOKENIZE_USAGE);
            return 2;
        }
    }
    if (!model || !text == !file) {
        fprintf(stderr, "afo tokenize: needs --model and one of --text or --file\n%s", TOKENIZE_USAGE);
        return 2;
    }
    size_t len = text ? strlen(text) : 0;
    char *buf = file ? read_all(file, &len) : NULL;
    if (file && !buf) return 1;
    afo_tokenizer *tok = afo_tokenizer_load(model);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    if (!tok || afo_tokenizer_encode(tok, buf ? buf : text, len, special, &ids, &n) != AFO_OK) {
        rc = cli_fail("tokenize");
    } else {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    free(ids);
    free(buf);
    afo_tokenizer_free(tok);
    return rc;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL;
    int skip = 0, nids = 0;
    int32_t *ids = calloc((size_t)argc, sizeof *ids);
    if (!ids) return cli_fail("detokenize");
    for (int i = 1; i < argc; i++) {
        long v;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("%s", DETOKENIZE_USAGE);
            free(ids);
            return 0;
        } else if (strcmp(argv[i], "--skip-special") == 0) {
            skip = 1;
        } else if (strcmp(argv[i], "--model") == 0) {
            if (!(model = cli_value(argc, argv, &i))) goto usage;
        } else if (cli_int("token id", argv[i], 0, INT32_MAX, &v) == 0) {
            ids[nids++] = (int32_t)v;
        } else {
            goto usage;
        }
    }
    if (!model) {
        fprintf(stderr, "afo detokenize: needs --model\n");
        goto usage;
    }
    afo_tokenizer *tok = afo_tokenizer_load(model);
    char *text = NULL;
    int rc = 0;
    if (!tok || afo_tokenizer_decode(tok, ids, (size_t)nids, skip, &text) != AFO_OK) rc = cli_fail("detokenize");
    else printf("%s\n", text);
    free(text);
    free(ids);
    afo_tokenizer_free(tok);
    return rc;
usage:
    fprintf(stderr, "%s", DETOKENIZE_USAGE);
    free(ids);
    return 2;
}
