/* Shared pieces of the afo command-line tool. Each subcommand is a function
 * cmd_NAME(argc, argv) (argv[0] is the subcommand) listed in afo.c. */
#ifndef AFO_CLI_H
#define AFO_CLI_H

#include <afo/afo.h>

/* Prints "afo: WHAT: <last error>" and returns 1. */
int cli_fail(const char *what);
double cli_now(void);

/* Option parsing shared by subcommands: returns the value after argv[*i]
 * (advancing *i) or NULL with a message when it is missing. */
const char *cli_value(int argc, char **argv, int *i);
/* Parses an integer option in [lo, hi]; prints the error and returns -1. */
int cli_int(const char *opt, const char *text, long lo, long hi, long *out);
/* Parses token ids "1,2,3" into a malloc'd array; prints the error and
 * returns -1 (*ids NULL) on a malformed list. */
int cli_ids(const char *opt, const char *text, int32_t **ids, size_t *n);
/* Options every model command takes (--threads N, --device cpu|cuda);
 * prints the error for an unknown option and returns -1. */
int cli_common_option(int argc, char **argv, int *i);
/* Sampling and stopping options (--max-tokens, --temp, --top-k, --top-p,
 * --min-p, --repetition-penalty, --seed, --stop) into o; returns 1 when
 * argv[*i] was one, -1 on a bad value, 0 when it was not one. */
int cli_sampling_option(int argc, char **argv, int *i, afo_generate_options *o, const char **stops, int max_stops);
/* KV cache options (--kv-bits, --kv-group-size, --quantized-kv-start,
 * --max-kv-size) into o, validated when the cache is made; returns like
 * cli_sampling_option. */
int cli_kv_option(int argc, char **argv, int *i, afo_kv_cache_options *o);
/* The library's defaults with mlx-lm's CLI default quantized_kv_start 5000. */
afo_kv_cache_options cli_kv_defaults(void);
#define CLI_KV_USAGE                                                                                   \
    "  --kv-bits B             store keys/values quantized to B bits (2-6, 8; default: not quantized)\n" \
    "  --kv-group-size G       quantization group size along head_dim: 32, 64 or 128 (default 64)\n"      \
    "  --quantized-kv-start N  quantize once the cache holds N positions (default 5000)\n"              \
    "  --max-kv-size N         rotating cache: keep the first 4 and the last N-4 positions\n"         \
    "  --kv-dtype T            keys/values stored as float32, bfloat16 or float16 (default: as computed)\n"

/* A loaded model and its tokenizer. model NULL: the demo model shipped in
 * the repo (AFO_DEMO_MODEL overrides its path). */
typedef struct cli_session {
    afo_model *model;
    afo_tokenizer *tok;
} cli_session;
const char *cli_demo_model(void);
/* The default device before options: $AFO_DEVICE, else the GPU when there
 * is one, else the CPU. -1 (message printed) on a bad $AFO_DEVICE. */
int cli_choose_device(void);
/* Loads a model for the default device (weights copied there, computing in
 * their dtype on a GPU). 1 with the error printed on failure. */
int cli_load_model(const char *model, afo_model **m);
/* "cuda (NVIDIA H100 80GB HBM3, 79.1 GiB)": the default device for stats. */
const char *cli_device_description(char *buf, size_t n);
int cli_open(const char *model, cli_session *s);
void cli_close(cli_session *s);
/* Whole file (or stdin for "-") into a malloc'd NUL-terminated buffer. */
int cli_read_file(const char *path, char **text, size_t *len);

/* Prompt ids for a user message (and optional system message): through the
 * model's chat template unless raw or the model has none. */
int cli_prompt_ids(const cli_session *s, const char *system, const char *user, int raw, int32_t **ids, size_t *n);
/* Prompt ids for a whole conversation (a cJSON array of {role, content});
 * *templated tells whether the chat template was used. */
struct cJSON;
int cli_messages_ids(const cli_session *s, const struct cJSON *messages, int32_t **ids, size_t *n, int *templated);

int cmd_selfcheck(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_random_model(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_convert(int argc, char **argv);

#endif
