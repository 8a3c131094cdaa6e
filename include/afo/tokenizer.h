/* afo — Hugging Face tokenizers: tokenizer.json loaded and run exactly as
 * the `tokenizers` library (0.23) does, for encoding and decoding text.
 *
 * Models: BPE (byte-level and SentencePiece-style with byte fallback),
 * WordPiece, Unigram; with the normalizers, pre-tokenizers, post-processors,
 * decoders and added tokens a tokenizer.json may name. */
#ifndef AFO_TOKENIZER_H
#define AFO_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "afo/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct afo_tokenizer afo_tokenizer;

/* Loads a tokenizer.json file, or a directory holding one (and, when
 * present, tokenizer_config.json for the bos/eos/pad/unk token strings).
 * NULL on failure; afo_last_error() names the file and the JSON field. */
afo_tokenizer *afo_tokenizer_load(const char *path);
void afo_tokenizer_free(afo_tokenizer *tok);

/* Encodes `len` bytes of UTF-8 `text` (invalid UTF-8 is refused). With
 * add_special_tokens the post-processor adds its tokens (BOS, [CLS] ...).
 * *ids is malloc'd (free it); *n may be 0. Calls on one tokenizer may run
 * from several threads at once. */
afo_status afo_tokenizer_encode(afo_tokenizer *tok, const char *text, size_t len, int add_special_tokens,
                                int32_t **ids, size_t *n);
/* Decodes ids to malloc'd, NUL-terminated UTF-8 *text. skip_special_tokens
 * drops added tokens marked special. An id outside the vocabulary is an
 * error (AFO_ERR_INVALID_ARGUMENT). */
afo_status afo_tokenizer_decode(afo_tokenizer *tok, const int32_t *ids, size_t n, int skip_special_tokens,
                                char **text);

/* -1 when the token is not in the vocabulary (added tokens included). */
int32_t afo_tokenizer_token_to_id(const afo_tokenizer *tok, const char *token);
/* NUL-terminated token string owned by the tokenizer; NULL when out of range. */
const char *afo_tokenizer_id_to_token(const afo_tokenizer *tok, int32_t id);
/* One past the largest id, added tokens included. */
size_t afo_tokenizer_vocab_size(const afo_tokenizer *tok);

/* Ids of the tokens tokenizer_config.json names as bos_token, eos_token,
 * pad_token and unk_token (the model's unk token when the config is
 * absent); -1 when there is none. */
typedef enum afo_special_token { AFO_TOKEN_BOS, AFO_TOKEN_EOS, AFO_TOKEN_PAD, AFO_TOKEN_UNK } afo_special_token;
int32_t afo_tokenizer_special_id(const afo_tokenizer *tok, afo_special_token which);

/* Streaming detokenizer: feed generated ids one at a time and get the text
 * they add. A piece is never a partial UTF-8 character (bytes of a character
 * split over several tokens are held back until it completes), and the
 * concatenated pieces, flush included, equal afo_tokenizer_decode of all the
 * ids with skip_special_tokens as given. The tokenizer must outlive it. */
typedef struct afo_detokenizer afo_detokenizer;
afo_detokenizer *afo_detokenizer_new(afo_tokenizer *tok, int skip_special_tokens);
/* *piece is malloc'd and NUL-terminated, possibly "". */
afo_status afo_detokenizer_push(afo_detokenizer *d, int32_t id, char **piece);
/* Returns whatever is held back (e.g. an unfinished byte sequence, decoded
 * as U+FFFD) and starts over. */
afo_status afo_detokenizer_flush(afo_detokenizer *d, char **piece);
void afo_detokenizer_free(afo_detokenizer *d);

#ifdef __cplusplus
}
#endif
#endif
