// The C API (loom.h) over the C++ API: every entry point catches all
// exceptions and turns them into a status and a thread-local message.
#include "loom/loom.h"

#include "loom/chat_template.h"

#include "loom/chunk_store.h"
#include "loom/refrag.h"
#include "loom/runtime.h"
#include "loom/sampler.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>

struct loom_model {
  std::shared_ptr<loom::Model> model;
};

struct loom_session {
  std::unique_ptr<loom::Session> session;
};

struct loom_sampler {
  loom::Sampler sampler;
};

struct loom_chunk_store {
  loom::ChunkStore store;
};

static_assert(sizeof(int) == sizeof(int32_t),
              "the C API passes token ids as int");

namespace {

thread_local std::string last_error;

loom_status failWith(loom_status status, const std::string &message) {
  last_error = message;
  return status;
}

// Runs `body`, mapping any exception to a status and a message.
template <typename F> loom_status guarded(F &&body) {
  try {
    return body();
  } catch (const loom::OutOfMemoryError &e) {
    return failWith(LOOM_ERROR_OUT_OF_MEMORY, e.what());
  } catch (const loom::Error &e) {
    return failWith(LOOM_ERROR, e.what());
  } catch (const std::bad_alloc &) {
    return failWith(LOOM_ERROR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception &e) {
    return failWith(LOOM_ERROR, std::string("internal error: ") + e.what());
  } catch (...) {
    return failWith(LOOM_ERROR, "internal error: unknown exception");
  }
}

loom_status nullArgument(const char *function, const char *argument) {
  return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                  std::string(function) + ": " + argument + " is NULL");
}

// In an API function: returns "FUNCTION: ARG is NULL"
// (LOOM_ERROR_INVALID_ARGUMENT) when the argument ARG is null.
#define LOOM_REQUIRE_ARG(arg)                                                  \
  do {                                                                         \
    if (!(arg))                                                                \
      return nullArgument(__func__, #arg);                                     \
  } while (0)

loom_status forward(loom_session *session, const int *ids, size_t n,
                    const float **out_logits, bool all, const char *fn) {
  if (!session)
    return nullArgument(fn, "session");
  if (!ids)
    return nullArgument(fn, "ids");
  if (!out_logits)
    return nullArgument(fn, "out_logits");
  if (n == 0)
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": n must be at least 1");
  return guarded([&] {
    loom::Logits l = session->session->forward(
        reinterpret_cast<const int32_t *>(ids), n, all);
    *out_logits = l.data;
    return LOOM_OK;
  });
}

const char *const kNoChunkEncoder =
    "this artifact has no chunk encoder (compile with loomc --format=refrag)";

// The checks loom_rag_prefill and loom_rag_prefill_from_store share: the
// expansion arguments and the outputs. Fills `fraction` (unset: the list).
loom_status checkExpansion(const char *fn, float expand_fraction,
                           const size_t *expand_chunks, size_t n_expand,
                           const int *question_ids, size_t n_question,
                           const float **out_logits,
                           std::optional<double> &fraction,
                           std::vector<size_t> &expanded) {
  if (!out_logits)
    return nullArgument(fn, "out_logits");
  if (!question_ids && n_question > 0)
    return nullArgument(fn, "question_ids");
  if (!expand_chunks && n_expand > 0)
    return nullArgument(fn, "expand_chunks");
  if (std::isnan(expand_fraction) || expand_fraction > 1.0f)
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": expand fraction " +
                        std::to_string(expand_fraction) +
                        " is outside [0, 1] (< 0: use the expand_chunks list)");
  if (expand_fraction >= 0.0f && n_expand > 0)
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": give either the expanded chunks or "
                                      "an expand fraction, not both");
  if (expand_fraction >= 0.0f)
    fraction = static_cast<double>(expand_fraction);
  else
    expanded.assign(expand_chunks, expand_chunks + n_expand);
  return LOOM_OK;
}

// Resets the session and feeds the assembled sequence from position 0.
loom_status feedPrompt(const char *fn, loom::Session &session,
                       const loom::RefragPrompt &p, const float **out_logits,
                       loom_rag_stats *out_stats) {
  const std::vector<int32_t> &tokens = p.sequence.tokens;
  const int64_t context = session.model().contextLength();
  if (static_cast<int64_t>(tokens.size()) > context)
    return failWith(LOOM_ERROR, std::string(fn) + ": the context and question "
                                    "take " + std::to_string(tokens.size()) +
                                    " decoder positions but the model's "
                                    "context holds " +
                                    std::to_string(context));
  session.reset();
  loom::Logits l = session.forward(tokens.data(), tokens.size(), false,
                                   p.sequence.embeddings.data(),
                                   p.sequence.row_elems);
  *out_logits = l.last();
  if (out_stats) {
    out_stats->n_chunks = p.chunks.size();
    out_stats->n_expanded = p.expanded.size();
    out_stats->n_positions = tokens.size();
    out_stats->chunk_size = p.chunk_size;
  }
  return LOOM_OK;
}

} // namespace

extern "C" {

const char *loom_last_error(void) { return last_error.c_str(); }

const char *loom_status_name(loom_status status) {
  switch (status) {
  case LOOM_OK:
    return "LOOM_OK";
  case LOOM_ERROR:
    return "LOOM_ERROR";
  case LOOM_ERROR_INVALID_ARGUMENT:
    return "LOOM_ERROR_INVALID_ARGUMENT";
  case LOOM_ERROR_BUFFER_TOO_SMALL:
    return "LOOM_ERROR_BUFFER_TOO_SMALL";
  case LOOM_ERROR_OUT_OF_MEMORY:
    return "LOOM_ERROR_OUT_OF_MEMORY";
  }
  return "unknown loom_status";
}

const char *loom_version(void) { return LOOM_VERSION_STRING; }

const char *loom_cpu_isa(void) { return loom::activeIsaName(); }

loom_status loom_model_load(const char *path, loom_model **out_model) {
  LOOM_REQUIRE_ARG(path);
  LOOM_REQUIRE_ARG(out_model);
  *out_model = nullptr;
  return guarded([&] {
    auto handle = std::make_unique<loom_model>();
    handle->model = loom::Model::load(path);
    *out_model = handle.release();
    return LOOM_OK;
  });
}

void loom_model_free(loom_model *model) { delete model; }

loom_status loom_model_get_info(const loom_model *model,
                                loom_model_info *out_info) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(out_info);
  const loom::ModelConfigInfo &c = model->model->config();
  out_info->dim = static_cast<long>(c.dim);
  out_info->hidden_dim = static_cast<long>(c.hidden_dim);
  out_info->n_layers = static_cast<long>(c.n_layers);
  out_info->n_heads = static_cast<long>(c.n_heads);
  out_info->n_kv_heads = static_cast<long>(c.n_kv_heads);
  out_info->head_dim = static_cast<long>(c.head_dim);
  out_info->vocab_size = static_cast<long>(c.vocab_size);
  out_info->max_seq = static_cast<long>(c.max_seq);
  out_info->context_length = static_cast<long>(model->model->contextLength());
  out_info->max_tokens_per_step =
      static_cast<long>(model->model->maxTokensPerStep());
  out_info->bos_id = c.bos_id;
  out_info->eos_id = c.eos_id;
  return LOOM_OK;
}

int loom_token_ends_generation(const loom_model *model, int token) {
  return model && model->model->config().endsGeneration(token) ? 1 : 0;
}

namespace {
loom_status tokenize(const char *fn, const loom_model *model, const char *text,
                     int bos, bool special, int *ids, size_t capacity,
                     size_t *out_n) {
  if (!ids && capacity > 0)
    return nullArgument(fn, "ids");
  if (special && model->model->hasTokenizer() &&
      !model->model->tokenizer().hasSpecialTokens())
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) +
                        ": this model's vocabulary names no special tokens "
                        "(a llama2.c tokenizer's)");
  return guarded([&] {
    std::vector<int32_t> tokens = model->model->tokenizer().encode(
        text, bos != 0 && model->model->tokenizer().addsBos(), false, special);
    *out_n = tokens.size();
    if (tokens.size() > capacity)
      return failWith(LOOM_ERROR_BUFFER_TOO_SMALL,
                      std::string(fn) + ": " + std::to_string(tokens.size()) +
                          " ids do not fit a capacity of " +
                          std::to_string(capacity));
    if (!tokens.empty())
      std::memcpy(ids, tokens.data(), tokens.size() * sizeof(int));
    return LOOM_OK;
  });
}
} // namespace

loom_status loom_tokenize(const loom_model *model, const char *text, int bos,
                          int *ids, size_t capacity, size_t *out_n) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(text);
  LOOM_REQUIRE_ARG(out_n);
  return tokenize("loom_tokenize", model, text, bos, false, ids, capacity,
                  out_n);
}

loom_status loom_tokenize_special(const loom_model *model, const char *text,
                                  int bos, int *ids, size_t capacity,
                                  size_t *out_n) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(text);
  LOOM_REQUIRE_ARG(out_n);
  return tokenize("loom_tokenize_special", model, text, bos, true, ids,
                  capacity, out_n);
}

loom_status loom_chat_render(const loom_model *model, const char *messages_json,
                             int add_generation_prompt, char *text,
                             size_t capacity, size_t *out_n) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(messages_json);
  LOOM_REQUIRE_ARG(out_n);
  if (!text && capacity > 0)
    return nullArgument("loom_chat_render", "text");
  const loom::ChatTemplateInfo &info = model->model->chatTemplate();
  if (info.source.empty())
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    "loom_chat_render: this model has no chat template");
  return guarded([&] {
    std::string prompt;
    try {
      loom::ChatInputs inputs;
      inputs.bos_token = info.bos_token;
      inputs.eos_token = info.eos_token;
      inputs.add_generation_prompt = add_generation_prompt != 0;
      prompt =
          loom::ChatTemplate(info.source).renderJson(messages_json, inputs);
    } catch (const loom::Error &e) {
      return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                      std::string("loom_chat_render: ") + e.what());
    }
    *out_n = prompt.size();
    if (prompt.size() + 1 > capacity)
      return failWith(LOOM_ERROR_BUFFER_TOO_SMALL,
                      "loom_chat_render: " + std::to_string(prompt.size()) +
                          " bytes and a NUL do not fit a capacity of " +
                          std::to_string(capacity));
    std::memcpy(text, prompt.data(), prompt.size());
    text[prompt.size()] = '\0';
    return LOOM_OK;
  });
}

loom_status loom_token_to_text(const loom_model *model, int prev, int token,
                               char *buf, size_t capacity, size_t *out_len) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(out_len);
  if (!buf && capacity > 0)
    return nullArgument("loom_token_to_text", "buf");
  const int64_t vocab = model->model->config().vocab_size;
  if (token < 0 || token >= vocab || prev < 0 || prev >= vocab)
    return failWith(
        LOOM_ERROR_INVALID_ARGUMENT,
        "loom_token_to_text: token id " +
            std::to_string(token < 0 || token >= vocab ? token : prev) +
            " is outside the vocabulary (0.." + std::to_string(vocab - 1) +
            ")");
  return guarded([&] {
    std::string text = model->model->tokenizer().decode(prev, token);
    *out_len = text.size();
    if (text.size() + 1 > capacity)
      return failWith(LOOM_ERROR_BUFFER_TOO_SMALL,
                      "loom_token_to_text: " + std::to_string(text.size()) +
                          " bytes and a NUL do not fit a capacity of " +
                          std::to_string(capacity));
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    return LOOM_OK;
  });
}

loom_status loom_session_create(const loom_model *model, int threads,
                                loom_session **out_session) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(out_session);
  *out_session = nullptr;
  return guarded([&] {
    loom::SessionOptions options;
    options.threads = threads;
    auto handle = std::make_unique<loom_session>();
    handle->session = std::make_unique<loom::Session>(model->model, options);
    *out_session = handle.release();
    return LOOM_OK;
  });
}

const char *loom_cuda_unavailable_reason(void) {
  thread_local std::string reason;
  reason = loom::cudaUnavailableReason();
  return reason.c_str();
}

loom_status loom_session_create_on(const loom_model *model, loom_device device,
                                   int device_index, int threads,
                                   loom_session **out_session) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(out_session);
  *out_session = nullptr;
  // A C caller may pass any int; reading it as the enum would be undefined
  // in C++ when it is none of the enumerators' range, so read its bytes.
  int value;
  static_assert(sizeof value == sizeof device, "loom_device is an int");
  std::memcpy(&value, &device, sizeof value);
  if (value != LOOM_DEVICE_CPU && value != LOOM_DEVICE_CUDA)
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    "loom_session_create_on: unknown device " +
                        std::to_string(value) +
                        " (expected LOOM_DEVICE_CPU or LOOM_DEVICE_CUDA)");
  return guarded([&] {
    loom::SessionOptions options;
    options.threads = threads;
    options.device =
        device == LOOM_DEVICE_CUDA ? loom::Device::Cuda : loom::Device::Cpu;
    options.cuda_device = device_index;
    auto handle = std::make_unique<loom_session>();
    handle->session = std::make_unique<loom::Session>(model->model, options);
    *out_session = handle.release();
    return LOOM_OK;
  });
}

loom_status loom_session_forward_sample(loom_session *session, int token,
                                        loom_sampler *sampler, int *out_token) {
  LOOM_REQUIRE_ARG(session);
  LOOM_REQUIRE_ARG(sampler);
  LOOM_REQUIRE_ARG(out_token);
  return guarded([&] {
    *out_token = session->session->forwardSample(token, sampler->sampler);
    return LOOM_OK;
  });
}

void loom_session_free(loom_session *session) { delete session; }

loom_status loom_session_forward(loom_session *session, const int *ids,
                                 size_t n, const float **out_logits) {
  return forward(session, ids, n, out_logits, false, "loom_session_forward");
}

loom_status loom_session_forward_all(loom_session *session, const int *ids,
                                     size_t n, const float **out_logits) {
  return forward(session, ids, n, out_logits, true, "loom_session_forward_all");
}

loom_status loom_session_reset(loom_session *session) {
  LOOM_REQUIRE_ARG(session);
  session->session->reset();
  return LOOM_OK;
}

long loom_session_position(const loom_session *session) {
  return session ? static_cast<long>(session->session->position()) : -1;
}

loom_status loom_session_rewind(loom_session *session, long position) {
  LOOM_REQUIRE_ARG(session);
  return guarded([&] {
    session->session->rewind(static_cast<int64_t>(position));
    return LOOM_OK;
  });
}

long loom_session_rewind_point(const loom_session *session, long position) {
  return session ? static_cast<long>(session->session->rewindPoint(
                       static_cast<int64_t>(position)))
                 : -1;
}

loom_status loom_sampler_create(const loom_model *model, float temperature,
                                float top_p, unsigned long seed,
                                loom_sampler **out_sampler) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(out_sampler);
  *out_sampler = nullptr;
  if (!(std::isfinite(temperature) && temperature >= 0.0f))
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    "loom_sampler_create: temperature " +
                        std::to_string(temperature) + " must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f))
    return failWith(LOOM_ERROR_INVALID_ARGUMENT, "loom_sampler_create: top_p " +
                                                     std::to_string(top_p) +
                                                     " must be in (0, 1]");
  return guarded([&] {
    *out_sampler = new loom_sampler{
        loom::Sampler(model->model->config().vocab_size, temperature, top_p,
                      static_cast<uint64_t>(seed))};
    return LOOM_OK;
  });
}

void loom_sampler_free(loom_sampler *sampler) { delete sampler; }

loom_status loom_sampler_sample(loom_sampler *sampler, const float *logits,
                                int *out_token) {
  LOOM_REQUIRE_ARG(sampler);
  LOOM_REQUIRE_ARG(logits);
  LOOM_REQUIRE_ARG(out_token);
  return guarded([&] {
    *out_token = sampler->sampler.sample(logits);
    return LOOM_OK;
  });
}

int loom_model_has_chunk_encoder(const loom_model *model) {
  return model && model->model->refrag() ? 1 : 0;
}

loom_status loom_model_get_chunk_encoder_info(const loom_model *model,
                                              loom_chunk_encoder_info *out_info) {
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(out_info);
  const loom::RefragInfo *info = model->model->refrag();
  if (!info)
    return failWith(LOOM_ERROR, std::string("loom_model_get_chunk_encoder_info: ") +
                                    kNoChunkEncoder);
  out_info->cls_token_id = info->cls_token_id;
  out_info->max_chunk_len = static_cast<long>(info->max_chunk_len);
  out_info->encoder_dim = static_cast<long>(info->encoder_dim);
  return LOOM_OK;
}

loom_status loom_rag_prefill(loom_session *session, const int *context_ids,
                             size_t n_context, const int *question_ids,
                             size_t n_question, size_t chunk_size,
                             float expand_fraction, const size_t *expand_chunks,
                             size_t n_expand, const float **out_logits,
                             loom_rag_stats *out_stats) {
  const char *fn = "loom_rag_prefill";
  LOOM_REQUIRE_ARG(session);
  LOOM_REQUIRE_ARG(context_ids);
  if (n_context == 0)
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": the context is empty (REFRAG needs "
                                      "at least one context token)");
  loom::RefragRequest req;
  if (loom_status st =
          checkExpansion(fn, expand_fraction, expand_chunks, n_expand,
                         question_ids, n_question, out_logits,
                         req.expand_fraction, req.expanded))
    return st;
  const loom::RefragInfo *info = session->session->model().refrag();
  if (!info)
    return failWith(LOOM_ERROR, std::string(fn) + ": " + kNoChunkEncoder);
  if (chunk_size > static_cast<size_t>(info->max_chunk_len))
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": chunk size " +
                        std::to_string(chunk_size) + " is out of range (1.." +
                        std::to_string(info->max_chunk_len) +
                        ", the encoder's max_chunk_len)");
  return guarded([&] {
    req.context.assign(context_ids, context_ids + n_context);
    if (n_question)
      req.question.assign(question_ids, question_ids + n_question);
    req.chunk_size = chunk_size;
    loom::RefragPrompt p = loom::prepareRefrag(*session->session, req);
    return feedPrompt(fn, *session->session, p, out_logits, out_stats);
  });
}

loom_status loom_encode_corpus(const loom_model *model,
                               const char *corpus_path, const char *out_path,
                               size_t chunk_size, int threads) {
  const char *fn = "loom_encode_corpus";
  LOOM_REQUIRE_ARG(model);
  LOOM_REQUIRE_ARG(corpus_path);
  LOOM_REQUIRE_ARG(out_path);
  if (threads < 0)
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": threads must be >= 0");
  const loom::RefragInfo *info = model->model->refrag();
  if (!info)
    return failWith(LOOM_ERROR, std::string(fn) + ": " + kNoChunkEncoder);
  if (chunk_size > static_cast<size_t>(info->max_chunk_len))
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": chunk size " +
                        std::to_string(chunk_size) + " is out of range (1.." +
                        std::to_string(info->max_chunk_len) +
                        ", the encoder's max_chunk_len)");
  return guarded([&] {
    std::string text;
    FILE *f = std::fopen(corpus_path, "rb");
    if (!f)
      return failWith(LOOM_ERROR, std::string(fn) + ": cannot read corpus '" +
                                      corpus_path + "': " +
                                      std::strerror(errno));
    char buf[1 << 14];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
      text.append(buf, n);
    const bool bad = std::ferror(f);
    const int err = errno;
    std::fclose(f);
    if (bad)
      return failWith(LOOM_ERROR, std::string(fn) + ": cannot read corpus '" +
                                      corpus_path + "': " + std::strerror(err));
    const loom::Tokenizer &tok = model->model->tokenizer();
    std::vector<std::vector<int32_t>> passages;
    for (size_t begin = 0; begin < text.size();) {
      size_t end = text.find('\n', begin);
      if (end == std::string::npos)
        end = text.size();
      std::string_view line(text.data() + begin, end - begin);
      if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
      passages.push_back(tok.encode(line, false, false));
      begin = end + 1;
    }
    loom::ChunkStoreWriteOptions options;
    options.threads = threads;
    loom::ChunkStore::write(out_path, model->model, passages, chunk_size,
                            options);
    return LOOM_OK;
  });
}

loom_status loom_chunk_store_open(const char *path,
                                  loom_chunk_store **out_store) {
  LOOM_REQUIRE_ARG(path);
  LOOM_REQUIRE_ARG(out_store);
  *out_store = nullptr;
  return guarded([&] {
    *out_store = new loom_chunk_store{loom::ChunkStore::open(path)};
    return LOOM_OK;
  });
}

void loom_chunk_store_free(loom_chunk_store *store) { delete store; }

loom_status loom_chunk_store_get_info(const loom_chunk_store *store,
                                      loom_chunk_store_info *out_info) {
  LOOM_REQUIRE_ARG(store);
  LOOM_REQUIRE_ARG(out_info);
  out_info->chunk_size = store->store.chunkSize();
  out_info->n_passages = store->store.passageCount();
  out_info->n_chunks = store->store.chunkCount();
  out_info->n_tokens = store->store.tokenCount();
  return LOOM_OK;
}

size_t loom_chunk_store_passages(const loom_chunk_store *store) {
  return store ? store->store.passageCount() : 0;
}

loom_status loom_chunk_store_passage_tokens(const loom_chunk_store *store,
                                            size_t index, const int **out_ids,
                                            size_t *out_n) {
  const char *fn = "loom_chunk_store_passage_tokens";
  LOOM_REQUIRE_ARG(store);
  LOOM_REQUIRE_ARG(out_ids);
  LOOM_REQUIRE_ARG(out_n);
  if (index >= store->store.passageCount())
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": passage " + std::to_string(index) +
                        " is out of range (the store has " +
                        std::to_string(store->store.passageCount()) +
                        " passages)");
  return guarded([&] {
    const loom::ChunkStore::Passage p = store->store.passage(index);
    *out_ids = reinterpret_cast<const int *>(p.tokens);
    *out_n = p.n_tokens;
    return LOOM_OK;
  });
}

loom_status loom_rag_prefill_from_store(
    loom_session *session, const loom_chunk_store *store,
    const size_t *passages, size_t n_passages, const int *question_ids,
    size_t n_question, float expand_fraction, const size_t *expand_chunks,
    size_t n_expand, const float **out_logits, loom_rag_stats *out_stats) {
  const char *fn = "loom_rag_prefill_from_store";
  LOOM_REQUIRE_ARG(session);
  LOOM_REQUIRE_ARG(store);
  LOOM_REQUIRE_ARG(passages);
  if (n_passages == 0)
    return failWith(LOOM_ERROR_INVALID_ARGUMENT,
                    std::string(fn) + ": no passages selected");
  loom::ChunkStoreRequest req;
  if (loom_status st =
          checkExpansion(fn, expand_fraction, expand_chunks, n_expand,
                         question_ids, n_question, out_logits,
                         req.expand_fraction, req.expanded))
    return st;
  if (!session->session->model().refrag())
    return failWith(LOOM_ERROR, std::string(fn) + ": " + kNoChunkEncoder);
  return guarded([&] {
    req.passages.assign(passages, passages + n_passages);
    if (n_question)
      req.question.assign(question_ids, question_ids + n_question);
    loom::RefragPrompt p =
        loom::prepareRefrag(*session->session, store->store, req);
    return feedPrompt(fn, *session->session, p, out_logits, out_stats);
  });
}

} // extern "C"
