// The C API (loom.h) over the C++ API: every entry point catches all
// exceptions and turns them into a status and a thread-local message.
#include "loom/loom.h"

#include "loom/runtime.h"
#include "loom/sampler.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <string>

struct loom_model {
  std::shared_ptr<loom::Model> model;
};

struct loom_session {
  std::unique_ptr<loom::Session> session;
};

struct loom_sampler {
  loom::Sampler sampler;
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

const char *loom_cpu_isa(void) { return loom::activeIsaName(); }

loom_status loom_model_load(const char *path, loom_model **out_model) {
  if (!path)
    return nullArgument("loom_model_load", "path");
  if (!out_model)
    return nullArgument("loom_model_load", "out_model");
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
  if (!model)
    return nullArgument("loom_model_get_info", "model");
  if (!out_info)
    return nullArgument("loom_model_get_info", "out_info");
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

loom_status loom_tokenize(const loom_model *model, const char *text, int bos,
                          int *ids, size_t capacity, size_t *out_n) {
  if (!model)
    return nullArgument("loom_tokenize", "model");
  if (!text)
    return nullArgument("loom_tokenize", "text");
  if (!out_n)
    return nullArgument("loom_tokenize", "out_n");
  if (!ids && capacity > 0)
    return nullArgument("loom_tokenize", "ids");
  return guarded([&] {
    std::vector<int32_t> tokens =
        model->model->tokenizer().encode(text, bos != 0, false);
    *out_n = tokens.size();
    if (tokens.size() > capacity)
      return failWith(LOOM_ERROR_BUFFER_TOO_SMALL,
                      "loom_tokenize: " + std::to_string(tokens.size()) +
                          " ids do not fit a capacity of " +
                          std::to_string(capacity));
    if (!tokens.empty())
      std::memcpy(ids, tokens.data(), tokens.size() * sizeof(int));
    return LOOM_OK;
  });
}

loom_status loom_token_to_text(const loom_model *model, int prev, int token,
                               char *buf, size_t capacity, size_t *out_len) {
  if (!model)
    return nullArgument("loom_token_to_text", "model");
  if (!out_len)
    return nullArgument("loom_token_to_text", "out_len");
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
  if (!model)
    return nullArgument("loom_session_create", "model");
  if (!out_session)
    return nullArgument("loom_session_create", "out_session");
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
  if (!session)
    return nullArgument("loom_session_reset", "session");
  session->session->reset();
  return LOOM_OK;
}

long loom_session_position(const loom_session *session) {
  return session ? static_cast<long>(session->session->position()) : -1;
}

loom_status loom_sampler_create(const loom_model *model, float temperature,
                                float top_p, unsigned long seed,
                                loom_sampler **out_sampler) {
  if (!model)
    return nullArgument("loom_sampler_create", "model");
  if (!out_sampler)
    return nullArgument("loom_sampler_create", "out_sampler");
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
  if (!sampler)
    return nullArgument("loom_sampler_sample", "sampler");
  if (!logits)
    return nullArgument("loom_sampler_sample", "logits");
  if (!out_token)
    return nullArgument("loom_sampler_sample", "out_token");
  return guarded([&] {
    *out_token = sampler->sampler.sample(logits);
    return LOOM_OK;
  });
}

} // extern "C"
