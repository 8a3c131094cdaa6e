/* Tokenizer benchmark: MB/s encoding War and Peace with the llama3
 * (byte-level BPE, 128k) and llama2 (SentencePiece BPE, byte fallback)
 * tokenizers, one thread, median of the runs. Prints a table and one JSON
 * line. Usage: bench_tokenizer [--reps N] [--shared DIR] */
#include "bench_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <afo/afo.h>

#include "core/internal.h"

static char *slurp(const char *path, size_t *n) {
    char *text = NULL;
    afo_read_file(path, 0, false, &text, n);
    return text;
}

typedef struct result {
    const char *name;
    double load_s, median_mbs, best_mbs;
    size_t tokens;
} result;

static int run(const char *shared, const char *name, const char *text, size_t n, int reps, result *r) {
    char path[1024];
    snprintf(path, sizeof path, "%s/fixtures/tokenizers/%s", shared, name);
    double t0 = bench_now();
    afo_tokenizer *t = afo_tokenizer_load(path);
    r->load_s = bench_now() - t0;
    if (!t) {
        fprintf(stderr, "bench_tokenizer: %s\n", afo_last_error());
        return -1;
    }
    r->name = name;
    double *mbs = malloc((size_t)reps * sizeof *mbs);
    for (int i = 0; i < reps; i++) {
        int32_t *ids;
        size_t nids;
        t0 = bench_now();
        if (afo_tokenizer_encode(t, text, n, 0, &ids, &nids) != AFO_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", afo_last_error());
            free(mbs);
            afo_tokenizer_free(t);
            return -1;
        }
        mbs[i] = (double)n / 1e6 / (bench_now() - t0);
        r->tokens = nids;
        free(ids);
    }
    qsort(mbs, (size_t)reps, sizeof *mbs, bench_cmp_double);
    r->median_mbs = mbs[reps / 2];
    r->best_mbs = mbs[reps - 1];
    free(mbs);
    afo_tokenizer_free(t);
    return 0;
}

int main(int argc, char **argv) {
    int reps = 5;
    const char *shared = getenv("AFO_SHARED_DIR") ? getenv("AFO_SHARED_DIR") : "../shared";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--shared") == 0 && i + 1 < argc) shared = argv[++i];
        else {
            fprintf(stderr, "usage: bench_tokenizer [--reps N] [--shared DIR]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    char path[1024];
    snprintf(path, sizeof path, "%s/fixtures/corpus/war-and-peace.txt", shared);
    size_t n;
    char *text = slurp(path, &n);
    if (!text) {
        fprintf(stderr, "bench_tokenizer: cannot read %s (set AFO_SHARED_DIR or --shared)\n", path);
        return 1;
    }
    double load = bench_check_load();
    printf("encoding %s (%.2f MB), 1 thread, median of %d runs, load average %.2f%s\n", path, (double)n / 1e6, reps,
           load, load > 0.5 ? " (busy machine: numbers may be low)" : "");
    const char *names[2] = {"llama3", "llama2"};
    result r[2];
    printf("%-10s %10s %12s %10s %10s\n", "tokenizer", "load s", "tokens", "MB/s", "best MB/s");
    for (int k = 0; k < 2; k++) {
        if (run(shared, names[k], text, n, reps, &r[k])) return 1;
        printf("%-10s %10.3f %12zu %10.2f %10.2f\n", r[k].name, r[k].load_s, r[k].tokens, r[k].median_mbs, r[k].best_mbs);
    }
    printf("{\"bench\":\"tokenizer\",\"bytes\":%zu,\"reps\":%d,\"loadavg\":%.2f", n, reps, load);
    for (int k = 0; k < 2; k++)
        printf(",\"%s\":{\"load_s\":%.3f,\"tokens\":%zu,\"mb_s\":%.3f,\"best_mb_s\":%.3f}", r[k].name, r[k].load_s,
               r[k].tokens, r[k].median_mbs, r[k].best_mbs);
    printf("}\n");
    free(text);
    return 0;
}
