/* Decode benchmark: tokens/s of a model's KV-cached decode at batch 1 next
 * to the bandwidth bound (bytes read per token / the machine's
 * streaming-read bandwidth), prefill tokens/s, and load-to-first-token
 * time. Prints a table and one JSON line. The bytes read per token are
 * afo_model_decode_bytes's, averaged over the decode's steps: the weights
 * less the unread rows of an untied embedding table, plus the keys and
 * values attention reads at each step's context length (weight_bytes, all
 * the weights, was the measure before, and weight_ratio still gives it).
 * The bandwidth is read between every BW_EVERY decoded tokens (that time
 * left out of the decode's): the shared development host's moves by 20-30%
 * within a minute, and read after the decode alone (still given as
 * read_bw_after_gbs) it put one build's 4-bit decode at 0.75 and 0.93 of
 * the bound in two runs minutes apart. decode_ratio is the median over
 * repetitions of each one's tok/s over its own bound. One host put the
 * same model file's decode at 0.68-0.95 of that bound in runs half an hour
 * apart (docs/PERFORMANCE.md, twenty-second session); to tell the pages
 * from the buffer, the read bandwidth of the model's own safetensors pages
 * (the page cache the decode reads, mapped again) is given too, with the
 * decode's ratio to the bound it sets (weight_pages_*). With AFO_PROFILE
 * set, the per-op profile printed at exit covers the last repetition's
 * decode steps alone.
 * Usage: bench_decode --model DIR [--prompt N] [--tokens N] [--threads N] [--reps N]
 *        [--storage-dtype] [--kv-dtype float32|bfloat16|float16] */
#include "bench_util.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <afo/afo.h>

#include "backends/cpu/threadpool.h"
#include "core/internal.h"

/* Decoded tokens between two reads of the bandwidth (about half a second at
 * 4 bits here; one read takes about 40 ms). A read before and after every
 * token instead left the ratio's spread as it was: the decode does not
 * follow the read bandwidth one for one (docs/PERFORMANCE.md, ninth CPU
 * session). */
enum { BW_EVERY = 16 };

static int32_t argmax_row(const float *row, int64_t v) {
    int32_t best = 0;
    for (int64_t i = 1; i < v; i++)
        if (row[i] > row[best]) best = (int32_t)i;
    return best;
}

/* Read bandwidth (GB/s, median of reps passes) over the model directory's
 * *.safetensors files, each read by bw_once; 0 when none can be mapped. */
static double weight_pages_bandwidth(const char *dir, int reps) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    enum { MAX_FILES = 64 };
    afo_mapping *maps[MAX_FILES];
    bw_job jobs[MAX_FILES];
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) && files < MAX_FILES) {
        size_t nl = strlen(e->d_name);
        if (nl < 12 || strcmp(e->d_name + nl - 12, ".safetensors") != 0) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        afo_mapping *m = afo_mapping_open(path);
        if (!m) continue;
        if (m->length < 4096) { /* too short to time */
            afo_mapping_release(m);
            continue;
        }
        maps[files] = m;
        jobs[files++] = (bw_job){.buf = m->base, .n = m->length / 4};
    }
    closedir(d);
    double *rates = malloc(sizeof(double) * (size_t)reps), rate = 0;
    for (int r = 0; rates && files && r <= reps; r++) {
        double bytes = 0, seconds = 0;
        for (int f = 0; f < files; f++) {
            double b = (double)jobs[f].n * 4;
            bytes += b, seconds += b / (bw_once(&jobs[f]) * 1e9);
        }
        if (r > 0) rates[r - 1] = bytes / seconds * 1e-9; /* pass 0 maps the pages in */
    }
    if (rates && files) rate = summarize(rates, reps).median;
    free(rates);
    for (int f = 0; f < files; f++) afo_mapping_release(maps[f]);
    return rate;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int prompt = 128, tokens = 64, threads = 2, reps = 3, storage = 0, kv_dtype = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--storage-dtype")) storage = 1;
        else if (!strcmp(argv[i], "--kv-dtype") && i + 1 < argc) kv_dtype = bench_kv_dtype(argv[++i]);
        else {
            fprintf(stderr, "usage: %s --model DIR [--prompt N] [--tokens N] [--threads N] [--reps N] [--storage-dtype] [--kv-dtype T]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!model || prompt < 1 || tokens < 2 || threads < 1 || reps < 1 || kv_dtype < 0) {
        fprintf(stderr, "bench_decode: --model is required; sizes must be positive; --kv-dtype takes float32, bfloat16 or float16\n");
        return 2;
    }
    afo_set_threads(threads);
    double load = bench_check_load();

    double t0 = bench_now();
    afo_model *m;
    afo_model_options mo = {.compute_in_storage_dtype = storage};
    if (afo_model_load(model, &mo, &m) != AFO_OK) {
        fprintf(stderr, "bench_decode: %s\n", afo_last_error());
        return 1;
    }
    afo_kv_cache *cache;
    afo_kv_cache_options kvo = afo_kv_cache_defaults();
    kvo.kv_dtype = (afo_dtype)kv_dtype;
    if (afo_kv_cache_create_ex(m, 1, &kvo, &cache) != AFO_OK) {
        fprintf(stderr, "bench_decode: %s\n", afo_last_error());
        return 1;
    }
    int64_t vocab = afo_model_vocab_size(m);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)prompt);
    for (int i = 0; i < prompt; i++) ids[i] = (int32_t)((i * 7919 + 13) % vocab);
    afo_forward_options last = {.last_only = 1};
    afo_array *logits = NULL;
    /* load to first token: a one-token prompt right after loading */
    if (afo_model_forward_ex(m, cache, ids, 1, 1, &last, &logits) != AFO_OK) {
        fprintf(stderr, "bench_decode: %s\n", afo_last_error());
        return 1;
    }
    double first_token = bench_now() - t0;
    afo_release(logits);

    size_t weights = afo_model_weight_bytes(m);
    double bytes = 0; /* mean bytes read per decoded token (the same in every repetition) */
    int samples = (tokens + BW_EVERY - 1) / BW_EVERY;
    double *prefill = malloc(sizeof(double) * (size_t)reps), *decode = malloc(sizeof(double) * (size_t)reps);
    double *ratio = malloc(sizeof(double) * (size_t)reps), *weight_ratio = malloc(sizeof(double) * (size_t)reps);
    double *bws = malloc(sizeof(double) * (size_t)(reps * samples));
    bw_job bwj = bw_setup();
    if (!prefill || !decode || !ratio || !weight_ratio || !bws || !bwj.buf) {
        fprintf(stderr, "bench_decode: out of memory\n");
        return 1;
    }
    for (int r = 0; r < reps; r++) {
        afo_kv_cache_reset(cache);
        double p0 = bench_now();
        afo_model_forward_ex(m, cache, ids, 1, prompt, &last, &logits);
        prefill[r] = prompt / (bench_now() - p0);
        int32_t tok = argmax_row(afo_array_data(logits), vocab);
        afo_release(logits);
        double spent = 0, read = 0;
        if (r == reps - 1 && afo_profile_enabled()) {
            afo_profile_reset();
            fprintf(stderr, "AFO_PROFILE: the report at exit covers the last repetition's %d decoded tokens only\n",
                    tokens);
        }
        for (int t = 0; t < tokens;) {
            double d0 = bench_now();
            for (int end = t + BW_EVERY < tokens ? t + BW_EVERY : tokens; t < end; t++) {
                size_t step;
                if (afo_model_decode_bytes(m, cache, &step) != AFO_OK) {
                    fprintf(stderr, "bench_decode: %s\n", afo_last_error());
                    return 1;
                }
                read += (double)step;
                afo_model_forward_ex(m, cache, &tok, 1, 1, &last, &logits);
                tok = argmax_row(afo_array_data(logits), vocab);
                afo_release(logits);
            }
            spent += bench_now() - d0;
            bws[r * samples + (t - 1) / BW_EVERY] = bw_once(&bwj);
        }
        decode[r] = tokens / spent;
        double bw_r = summarize(bws + r * samples, samples).median;
        bytes = read / tokens;
        ratio[r] = decode[r] * bytes / (bw_r * 1e9);
        weight_ratio[r] = decode[r] * (double)weights / (bw_r * 1e9);
    }
    free((void *)bwj.buf);
    qsort(prefill, (size_t)reps, sizeof(double), bench_cmp_double);
    qsort(decode, (size_t)reps, sizeof(double), bench_cmp_double);
    double bw = summarize(bws, reps * samples).median, bw_after = read_bandwidth(5).median;
    double bound = bw * 1e9 / bytes, pages_bw = weight_pages_bandwidth(model, 3);
    /* summarize sorts: ratio[0] and ratio[reps - 1] are the extremes */
    double med_d = decode[reps / 2], med_p = prefill[reps / 2], med_ratio = summarize(ratio, reps).median;
    double med_weight_ratio = summarize(weight_ratio, reps).median;
    printf("model: %s (%s, %lld params, %.1f MB of weights, %.1f MB read a decoded token), %d threads, load %.2f\n",
           model, afo_model_type(m), (long long)afo_model_num_params(m), (double)weights / 1e6, bytes / 1e6, threads,
           load);
    printf("read bandwidth            %8.1f GB/s (during the decode; %.1f after it)\n", bw, bw_after);
    printf("bandwidth bound           %8.1f tok/s\n", bound);
    printf("the weights' own pages    %8.1f GB/s read: decode at %.0f%% of the bound they set\n", pages_bw,
           pages_bw > 0 ? 100 * med_d * bytes / (pages_bw * 1e9) : 0.0);
    printf("decode (median of %d)      %8.1f tok/s  [%.1f .. %.1f]  %.0f%% of bound [%.0f .. %.0f] (%.0f%% by weight "
           "bytes)\n",
           reps, med_d, decode[0], decode[reps - 1], 100 * med_ratio, 100 * ratio[0], 100 * ratio[reps - 1],
           100 * med_weight_ratio);
    printf("prefill %d tokens         %8.1f tok/s  [%.1f .. %.1f]\n", prompt, med_p, prefill[0], prefill[reps - 1]);
    printf("load to first token       %8.3f s\n", first_token);
    printf("{\"model\":\"%s\",\"type\":\"%s\",\"weight_bytes\":%zu,\"decode_bytes\":%.0f,\"threads\":%d,"
           "\"read_bw_gbs\":%.2f,\"read_bw_after_gbs\":%.2f,\"bound_tok_s\":%.2f,\"decode_tok_s\":%.2f,"
           "\"decode_tok_s_min\":%.2f,\"decode_tok_s_max\":%.2f,\"decode_ratio\":%.3f,\"decode_ratio_min\":%.3f,"
           "\"decode_ratio_max\":%.3f,\"weight_ratio\":%.3f,\"prefill_tok_s\":%.1f,\"load_to_first_token_s\":%.3f,"
           "\"weight_pages_bw_gbs\":%.2f,\"weight_pages_ratio\":%.3f,\"kv_dtype\":\"%s\"}\n",
           model, afo_model_type(m), weights, bytes, threads, bw, bw_after, bound, med_d, decode[0], decode[reps - 1],
           med_ratio, ratio[0], ratio[reps - 1], med_weight_ratio, med_p, first_token, pages_bw,
           pages_bw > 0 ? med_d * bytes / (pages_bw * 1e9) : 0.0,
           afo_dtype_name(afo_kv_cache_dtype(cache)));
    free(ids), free(prefill), free(decode), free(ratio), free(weight_ratio), free(bws);
    afo_kv_cache_free(cache);
    afo_model_free(m);
    return 0;
}
