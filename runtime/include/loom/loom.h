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
 *
 * REFRAG (an artifact from loomc --format=refrag): loom_rag_prefill feeds a
 * retrieved context, compressed into chunk placeholders, and a question;
 * loom_encode_corpus / loom_chunk_store_open / loom_rag_prefill_from_store
 * do the same from a corpus encoded once. Example: runtime/examples/rag.c.
 */
#ifndef LOOM_H
#define LOOM_H

#include "loom/version.h"

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

/* Version of the libloomrt the program runs with ("0.1.0"); the headers it
 * was compiled with are LOOM_VERSION_STRING (loom/version.h). */
const char *loom_version(void);

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
/* 1 when `token` ends a generation (BOS, EOS, or one of the model's other
 * stop ids, e.g. Llama 3 Instruct's <|eot_id|>), else 0 (also for NULL). */
int loom_token_ends_generation(const loom_model *model, int token);

/* ---- Tokenizer ------------------------------------------------------- */

/* Encodes UTF-8 `text` (llama2.c's rules, or a byte-level BPE's), with BOS
 * first when `bos` != 0 and the vocabulary has one (byte-level vocabularies
 * that do not put BOS first, GPT-2's, never do).
 * Writes at most `capacity` ids and the count to *out_n; when the ids do not
 * fit, *out_n is the count needed and LOOM_ERROR_BUFFER_TOO_SMALL is
 * returned (`ids` may be NULL when `capacity` is 0). */
loom_status loom_tokenize(const loom_model *model, const char *text, int bos,
                          int *ids, size_t capacity, size_t *out_n);

/* As loom_tokenize, with each special token's text in `text` (e.g. Llama 3's
 * "<|eot_id|>") encoded as that token, for writing chat turns
 * (LOOM_ERROR_INVALID_ARGUMENT for a vocabulary that names none, as
 * llama2.c's). loom_tokenize encodes such text as plain text, which is what
 * untrusted text needs. */
loom_status loom_tokenize_special(const loom_model *model, const char *text,
                                  int bos, int *ids, size_t capacity,
                                  size_t *out_n);

/* The prompt the model's chat template (docs/chat.md) makes of a
 * conversation: `messages_json` is a JSON array of {"role", "content", ...}
 * objects, or an object with a "messages" array and other template
 * variables ("tools", ...). Ends with the assistant's turn header where
 * `add_generation_prompt` is non-zero. The text goes to `text` with a NUL
 * (`*out_n` its length without the NUL; LOOM_ERROR_BUFFER_TOO_SMALL when it
 * does not fit `capacity`); feed it with loom_tokenize_special and bos 0 (the
 * template writes BOS where the model wants it). LOOM_ERROR_INVALID_ARGUMENT
 * for a model without a template, malformed JSON, or a conversation the
 * template refuses (the message names its line). */
loom_status loom_chat_render(const loom_model *model, const char *messages_json,
                             int add_generation_prompt, char *text,
                             size_t capacity, size_t *out_n);

/* The bytes to print for `token` following `prev` (llama2.c decode: the
 * leading space after BOS dropped, <0xHH> as the raw byte, unprintable
 * bytes as nothing; byte-level vocabularies: the token's bytes, nothing for
 * special tokens). Writes them NUL-terminated into `buf` and their length
 * (without the NUL) to *out_len; when `capacity` < length + 1, *out_len is
 * the length and LOOM_ERROR_BUFFER_TOO_SMALL is returned. */
loom_status loom_token_to_text(const loom_model *model, int prev, int token,
                               char *buf, size_t capacity, size_t *out_len);

/* ---- Sessions -------------------------------------------------------- */

/* A generation context (activation arena + KV caches) for `model`, running
 * its kernels on `threads` threads (0: all the machine has). */
loom_status loom_session_create(const loom_model *model, int threads,
                                loom_session **out_session);

/* Where a session runs (docs/cuda.md). */
typedef enum loom_device {
  LOOM_DEVICE_CPU = 0,
  LOOM_DEVICE_CUDA = 1
} loom_device;

/* "" when a CUDA session can be created here, otherwise why not ("this
 * build has no CUDA backend", the backend's load error, the driver's
 * answer). The string stays valid until the next call on this thread. */
const char *loom_cuda_unavailable_reason(void);

/* A session on `device`: for LOOM_DEVICE_CUDA, GPU number `device_index`
 * (weights uploaded once, activations and KV caches on the GPU; `threads`
 * is then unused). Fails with "no CUDA device (REASON)" where CUDA is
 * unavailable, LOOM_ERROR_OUT_OF_MEMORY when the GPU memory is short. */
loom_status loom_session_create_on(const loom_model *model, loom_device device,
                                   int device_index, int threads,
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

/* Forgets positions `position` and later, keeping the KV state of the
 * earlier ones: the next forward continues at `position` and computes what
 * a session fed only the first `position` ids would (bit for bit where
 * `position` starts a step: a forward chunk or a decode step, the earlier
 * ids fed in the same steps; inside a longer step up to rounding).
 * A looped model rewinds only to the first position of one of its steps
 * (a forward chunk or a decode step; loom_session_rewind_point). Fails,
 * changing nothing, for a position outside 0..loom_session_position() or
 * inside a looped model's step. */
loom_status loom_session_rewind(loom_session *session, long position);

/* The largest position <= `position` that loom_session_rewind accepts
 * (`position` itself, clamped to 0..loom_session_position(), for models
 * without a looped block; -1 for a NULL session). */
long loom_session_rewind_point(const loom_session *session, long position);

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

/* One decode step: feeds `token` and picks the next id with `sampler`, the
 * same choice as loom_session_forward + loom_sampler_sample. On CUDA the
 * step and the sampling (greedy, temperature, top_p) run on the GPU as one
 * captured graph; a nucleus of over 2048 ids is chosen on the host from
 * the step's logits, with the same draw. */
loom_status loom_session_forward_sample(loom_session *session, int token,
                                        loom_sampler *sampler, int *out_token);

/* ---- REFRAG: compressed chunk placeholders ---------------------------
 *
 * A retrieved context is cut into chunks of k tokens; the artifact's chunk
 * encoder (loomc --format=refrag) turns each chunk into one decoder
 * position, except the chunks that are "expanded" (fed as their tokens),
 * chosen by a fraction p (the policy expands the ceil(p * n) best-scored of
 * the n chunks) or listed by the caller. The decoder reads
 *   [BOS] + each chunk (its tokens, or one placeholder) + the question.
 * See docs/chunk-placeholders.md. A prefill replaces the prompt feed: after
 * it, generate with loom_sampler_sample + loom_session_forward as usual.
 *
 * Token ids here are decoder ids without BOS (loom_tokenize with bos = 0). */

typedef struct loom_chunk_store loom_chunk_store;

/* The artifact's chunk encoder. */
typedef struct loom_chunk_encoder_info {
  int cls_token_id;   /* prepended to every chunk by the encoder */
  long max_chunk_len; /* the largest chunk size k */
  long encoder_dim;   /* floats per chunk embedding */
} loom_chunk_encoder_info;

/* What a prefill fed (may be NULL where a function takes it). */
typedef struct loom_rag_stats {
  size_t n_chunks;       /* chunks of the context */
  size_t n_expanded;     /* of them, fed as their tokens */
  size_t n_positions;    /* decoder positions fed: BOS, chunks, question */
  size_t chunk_size;     /* k used */
} loom_rag_stats;

/* 1 when the artifact has a chunk encoder (compiled with loomc
 * --format=refrag), 0 otherwise or for NULL. */
int loom_model_has_chunk_encoder(const loom_model *model);

/* The chunk encoder's parameters; LOOM_ERROR for a model without one. */
loom_status loom_model_get_chunk_encoder_info(const loom_model *model,
                                              loom_chunk_encoder_info *out_info);

/* The whole REFRAG prefill in `session`: splits the n_context ids into
 * chunks of `chunk_size` (1..max_chunk_len; 0 = max_chunk_len), encodes and
 * projects every chunk, picks the expanded chunks, assembles the sequence,
 * resets the session and feeds the sequence from position 0.
 *
 * Expansion: expand_fraction in [0, 1] lets the policy pick ceil(p * n)
 * chunks (expand_chunks must then be NULL / n_expand 0); expand_fraction < 0
 * expands the n_expand chunk indices listed in expand_chunks (0-based, any
 * order, no repeats; n_expand 0 compresses every chunk).
 *
 * *out_logits receives vocab_size floats: the logits after the last
 * position (the last question id). They stay valid until the next forward,
 * prefill or reset of this session. *out_stats (when not NULL) says what
 * was fed. question_ids may be NULL when n_question is 0.
 *
 * Returns LOOM_ERROR_INVALID_ARGUMENT (nothing done) for NULL pointers, an
 * empty context, a chunk size above max_chunk_len, a NaN or > 1 fraction,
 * or a fraction together with a list; LOOM_ERROR for a model without a
 * chunk encoder, ids outside the vocabulary, a listed chunk out of range or
 * repeated, or a sequence longer than the context (then the session is left
 * as it was); LOOM_ERROR_OUT_OF_MEMORY. Runs on the session's threads; the
 * same one-thread-at-a-time rule as loom_session_forward. */
loom_status loom_rag_prefill(loom_session *session, const int *context_ids,
                             size_t n_context, const int *question_ids,
                             size_t n_question, size_t chunk_size,
                             float expand_fraction, const size_t *expand_chunks,
                             size_t n_expand, const float **out_logits,
                             loom_rag_stats *out_stats);

/* A chunk store: a corpus encoded once (loom_encode_corpus, or loom-run
 * --encode-chunks), mapped read-only. Queries read its stored chunk rows and
 * run no encoder. */
typedef struct loom_chunk_store_info {
  size_t chunk_size; /* k the corpus was chunked with */
  size_t n_passages;
  size_t n_chunks;   /* all passages' */
  size_t n_tokens;   /* all passages' */
} loom_chunk_store_info;

/* Encodes the corpus at `corpus_path` (UTF-8 text, one passage a line: a
 * final newline adds no passage, a CR before a newline is dropped, an empty
 * line is an empty passage) with the model's tokenizer (no BOS) and chunk
 * encoder, chunk size `chunk_size` (0 = max_chunk_len), on `threads`
 * threads (0: all), and writes the store to `out_path` atomically (through
 * out_path + ".tmp"; a failed write leaves no file). The file does not
 * depend on the thread count. May be called from any thread. */
loom_status loom_encode_corpus(const loom_model *model,
                               const char *corpus_path, const char *out_path,
                               size_t chunk_size, int threads);

/* Maps and verifies the store at `path` (header, passage table; a
 * passage's data is verified when a query reads it). A store is immutable:
 * it may be shared by sessions on any threads, and freed once no call
 * using it runs (a prefill does not keep it). */
loom_status loom_chunk_store_open(const char *path,
                                  loom_chunk_store **out_store);
void loom_chunk_store_free(loom_chunk_store *store);
loom_status loom_chunk_store_get_info(const loom_chunk_store *store,
                                      loom_chunk_store_info *out_info);
/* Passages in the store (0 for NULL). */
size_t loom_chunk_store_passages(const loom_chunk_store *store);

/* Passage `index`'s token ids (no BOS), pointing into the store's mapping:
 * valid while the store is. Verifies the passage's checksum. */
loom_status loom_chunk_store_passage_tokens(const loom_chunk_store *store,
                                            size_t index, const int **out_ids,
                                            size_t *out_n);

/* loom_rag_prefill over stored passages: the context is the n_passages
 * listed passages (0-based, no repeats) in that order, each chunked on its
 * own with the store's chunk size; chunk indices in expand_chunks count
 * across them in that order. The placeholder rows are the stored rows, so a
 * single passage gives the same logits, bit for bit, as loom_rag_prefill on
 * its ids. LOOM_ERROR also for a store made for another encoder, projector,
 * decoder or vocabulary, a corrupt passage, or selected passages without
 * tokens. Logits, stats and threading as loom_rag_prefill. */
loom_status loom_rag_prefill_from_store(
    loom_session *session, const loom_chunk_store *store,
    const size_t *passages, size_t n_passages, const int *question_ids,
    size_t n_question, float expand_fraction, const size_t *expand_chunks,
    size_t n_expand, const float **out_logits, loom_rag_stats *out_stats);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LOOM_H */
