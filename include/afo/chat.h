/* afo — chat templates: render a Hugging Face model's Jinja chat template
 * exactly as transformers' apply_chat_template does. */
#ifndef AFO_CHAT_H
#define AFO_CHAT_H

#include "afo/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A parsed template; immutable, so one may be rendered from many threads. */
typedef struct afo_chat_template afo_chat_template;

/* Parses Jinja source (NUL-terminated UTF-8). NULL on failure, with
 * AFO_ERR_FORMAT and afo_last_error() naming the line and column. */
afo_chat_template *afo_chat_template_parse(const char *source);
void afo_chat_template_free(afo_chat_template *t);

/* Renders with the variables of context_json, a JSON object such as
 *   {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true,
 *    "bos_token": "<s>", "eos_token": "</s>", "tools": [...], "enable_thinking": false}
 * — what transformers passes: messages, add_generation_prompt, the special
 * tokens and any extra keyword arguments. "tools" and "documents" default to
 * null, as transformers passes them. On success *out is the text, to free().
 * Errors: AFO_ERR_REJECTED when the template calls raise_exception
 * (afo_last_error() holds its message), AFO_ERR_INVALID_ARGUMENT for a bad
 * context or a template that fails (type errors, undefined values, limits
 * on output size, loop iterations and recursion), each naming the template
 * line and column. */
afo_status afo_chat_template_render(const afo_chat_template *t, const char *context_json, char **out);

/* Pins the clock strftime_now() sees (seconds since the epoch, shown in
 * local time) for every render in the process; 0 restores the real clock. */
void afo_chat_set_time(int64_t unix_seconds);

/* Reads a model directory's chat template as transformers loads it:
 * chat_template.jinja if present, else tokenizer_config.json's
 * "chat_template" (a string, or a list of {name, template} from which
 * "default" is taken). *bos / *eos get the bos_token / eos_token strings of
 * tokenizer_config.json (or special_tokens_map.json), NULL when the model
 * has none. All three are to free(); bos and eos may be NULL pointers when
 * not wanted. Errors: AFO_ERR_IO (not a directory, unreadable file),
 * AFO_ERR_FORMAT (no template, malformed JSON). */
afo_status afo_chat_template_from_model(const char *dir, char **source, char **bos, char **eos);

#ifdef __cplusplus
}
#endif
#endif
