/* Loom runtime C API: load a compiled artifact, tokenize, run, sample.
 *
 * C89-compatible. Every function that can fail returns a loom_status; on
 * failure loom_last_error() holds a one-line message. No call aborts or
 * lets a C++ exception escape. Objects are opaque and freed with their
 * *_free function (which accepts NULL).
 *
 * Threading: a loom_model is immutable and may be shared by sessions on any
 * threads; a loom_session or loom_sampler must be used by one thread at a
 * time. A session keeps its model alive: loom_model_free may be called
 * while sessions made from it still exist.
 *
 * Minimal use (error checks omitted):
 *   loom_model *m; loom_session *s; int ids[64]; size_t n; const float *lg;
 *   loom_model_load("model.loom", &m);
 *   loom_tokenize(m, "Once upon a time", 1, ids, 64, &n);
 *   loom_session_create(m, 0, &s);
 *   loom_session_forward(s, ids, n, &lg);   (lg: logits of the last token)
 */
#ifndef LOOM_H
#define LOOM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_model loom_model;
typedef struct loom_session loom_session;
typedef struct loom_sampler loom_sampler;

typedef enum loom_status {
  LOOM_OK = 0,
  /* The operation failed (bad artifact, token outside the vocabulary,
   * context full, I/O error, ...). */
  LOOM_ERROR = 1,
  /* A NULL pointer or an out-of-range argument; nothing was done. */
  LOOM_ERROR_INVALID_ARGUMENT = 2,
  /* The output did not fit the caller's buffer; the size needed was
   * stored in the call's size output. */
  LOOM_ERROR_BUFFER_TOO_SMALL = 3,
  /* An allocation failed (the message says how much, for what). */
  LOOM_ERROR_OUT_OF_MEMORY = 4
} loom_status;

/* Message of the most recent failed call on this thread ("" if none).
 * Valid until the next failing call on the same thread. */
const char *loom_last_error(void);

/* Name of a status ("LOOM_OK", ...). */
const char *loom_status_name(loom_status status);

/* Name of the CPU instruction set the kernels use. */
const char *loom_cpu_isa(void);

/* ---- Models ---------------------------------------------------------- */

typedef struct loom_model_info {
  long dim;
  long hidden_dim;
  long n_layers;
  long n_heads;
  long n_kv_heads;
  long head_dim;
  long vocab_size;
  long max_seq;
  long context_length;      /* positions a session can hold */
  long max_tokens_per_step; /* rows one forward step processes */
  int bos_id;
  int eos_id;
} loom_model_info;

/* Maps and verifies the artifact at `path` (header, flatbuffer, every
 * tensor checksum, every dispatch). */
loom_status loom_model_load(const char *path, loom_model **out_model);
void loom_model_free(loom_model *model);
loom_status loom_model_get_info(const loom_model *model,
                                loom_model_info *out_info);

/* ---- Tokenizer ------------------------------------------------------- */

/* Encodes UTF-8 `text` (llama2.c rules), with BOS first when `bos` != 0.
 * Writes at most `capacity` ids and the count to *out_n; when the ids do not
 * fit, *out_n is the count needed and LOOM_ERROR_BUFFER_TOO_SMALL is
 * returned (`ids` may be NULL when `capacity` is 0). */
loom_status loom_tokenize(const loom_model *model, const char *text, int bos,
                          int *ids, size_t capacity, size_t *out_n);

/* The bytes to print for `token` following `prev` (llama2.c decode: the
 * leading space after BOS dropped, <0xHH> as the raw byte, unprintable
 * bytes as nothing). Writes them NUL-terminated into `buf` and their length
 * (without the NUL) to *out_len; when `capacity` < length + 1, *out_len is
 * the length and LOOM_ERROR_BUFFER_TOO_SMALL is returned. */
loom_status loom_token_to_text(const loom_model *model, int prev, int token,
                               char *buf, size_t capacity, size_t *out_len);

/* ---- Sessions -------------------------------------------------------- */

/* A generation context (activation arena + KV caches) for `model`, running
 * its kernels on `threads` threads (0: all the machine has). */
loom_status loom_session_create(const loom_model *model, int threads,
                                loom_session **out_session);
void loom_session_free(loom_session *session);

/* Feeds n >= 1 token ids at the session's next positions. *out_logits
 * receives vocab_size floats: the logits after the last id. They stay valid
 * until the next forward or reset of this session. Fails, changing nothing,
 * on an id outside the vocabulary or when the ids do not fit the context. */
loom_status loom_session_forward(loom_session *session, const int *ids,
                                 size_t n, const float **out_logits);

/* Like loom_session_forward, but *out_logits receives n rows of vocab_size
 * floats: the logits after every id fed. */
loom_status loom_session_forward_all(loom_session *session, const int *ids,
                                     size_t n, const float **out_logits);

/* Starts a new sequence at position 0. */
loom_status loom_session_reset(loom_session *session);

/* Ids fed since creation or the last reset (-1 for a NULL session). */
long loom_session_position(const loom_session *session);

/* ---- Sampling -------------------------------------------------------- */

/* A sampler over the model's vocabulary: greedy when temperature is 0,
 * otherwise temperature + nucleus (top_p in (0, 1]) sampling with a seeded
 * generator, so equal seeds give equal choices. */
loom_status loom_sampler_create(const loom_model *model, float temperature,
                                float top_p, unsigned long seed,
                                loom_sampler **out_sampler);
void loom_sampler_free(loom_sampler *sampler);

/* Picks the next id from vocab_size logits. */
loom_status loom_sampler_sample(loom_sampler *sampler, const float *logits,
                                int *out_token);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LOOM_H */
