// The Loom runtime's C++ API: load a compiled artifact (loom::Model) and run
// it (loom::Session). The C API (loom.h) is a thin layer over this header.
//
// Every failure throws loom::Error (loom/error.h) with a one-line message.
// A Model is immutable after load and may be shared by any number of
// Sessions on any threads; one Session must be used by one thread at a time.
#ifndef LOOM_RUNTIME_H
#define LOOM_RUNTIME_H

#include "loom/error.h"
#include "loom/tokenizer.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace loom {

// Thrown when a session's activation arena or KV caches cannot be
// allocated; the message says how many bytes were needed for what.
class OutOfMemoryError : public Error {
public:
  using Error::Error;
};

namespace rt {
struct ModelData;
struct SessionState;
} // namespace rt

// The model hyper-parameters an artifact records (ModelConfig in the schema).
struct ModelConfigInfo {
  std::string architecture;
  int64_t dim = 0;
  int64_t hidden_dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_seq = 0;
  float rope_theta = 0.0f;
  float norm_eps = 0.0f;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
};

// A verified, memory-mapped artifact.
class Model {
public:
  // Maps the file and verifies all of it before returning: header, flatbuffer
  // (structure and checksum), every tensor's bounds and checksum, and every
  // dispatch's buffers, weights, shapes and parameters. The tensor checksums
  // read every weight byte once, so load time grows with the weight size
  // (a few GB/s; it also pages the weights in, which the first forward would
  // do anyway). Throws loom::Error naming the first problem found.
  static std::shared_ptr<Model> load(const std::string &path);

  ~Model();
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  const ModelConfigInfo &config() const;
  const Tokenizer &tokenizer() const;
  // Positions a session can hold: the config's max_seq, or less when a KV
  // cache is planned shorter.
  int64_t contextLength() const;
  // Rows one step of the "forward" program processes; longer inputs are fed
  // in chunks of this many tokens.
  int64_t maxTokensPerStep() const;
  // Bytes a session allocates: the activation arena and all KV caches.
  uint64_t arenaBytes() const;
  uint64_t kvCacheBytes() const;
  // Total bytes of the weight tensors (mapped from the file, not copied).
  uint64_t weightBytes() const;
  // Free-form strings the compiler recorded ("generator", "target").
  const std::string &generator() const;
  const std::string &target() const;

  // Internal representation, for the session (runtime/src only).
  const rt::ModelData &data() const { return *data_; }

private:
  explicit Model(std::unique_ptr<rt::ModelData> data);
  std::unique_ptr<rt::ModelData> data_;
};

struct SessionOptions {
  // Worker threads for the kernels; 0 means all the machine has.
  int threads = 0;
  // Record one Chrome-trace event per dispatch (see Session::writeTrace).
  bool trace = false;
};

// Logits returned by Session::forward: `rows` rows of `vocab` floats,
// row-major. Valid until the next forward() or reset() of the session.
struct Logits {
  const float *data = nullptr;
  int64_t rows = 0;
  int64_t vocab = 0;
  const float *row(int64_t i) const { return data + i * vocab; }
  // The logits after the last token fed.
  const float *last() const { return row(rows - 1); }
};

// One generation context: the activation arena, the KV caches and the
// position. Allocates arenaBytes() + kvCacheBytes() on construction (throws
// OutOfMemoryError "out of memory: need N bytes for ..." when that fails).
class Session {
public:
  explicit Session(std::shared_ptr<const Model> model,
                   SessionOptions options = {});
  ~Session();
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  // Feeds n >= 1 tokens at positions position() .. position() + n - 1, in
  // chunks of maxTokensPerStep() rows, and advances the position by n.
  // Returns the logits after the last token (rows == 1) or, with
  // all_logits, after every token fed (rows == n). Throws loom::Error, before
  // changing any state, for ids outside the vocabulary or when the tokens do
  // not fit the context.
  Logits forward(const int32_t *tokens, size_t n, bool all_logits = false);

  // Tokens fed since construction or the last reset().
  int64_t position() const;
  // Starts a new sequence (position 0); keeps the allocations.
  void reset();

  // Writes the recorded dispatches as Chrome trace JSON (chrome://tracing,
  // Perfetto). Requires SessionOptions::trace.
  void writeTrace(const std::string &path) const;

  const Model &model() const;
  int threads() const;
  uint64_t arenaBytes() const;
  uint64_t kvCacheBytes() const;

private:
  std::unique_ptr<rt::SessionState> state_;
};

// Name of the CPU instruction set the kernels use now (AVX-512 where the
// CPU has it, the portable kernels otherwise or when LOOM_ISA=portable).
const char *activeIsaName();

} // namespace loom

#endif // LOOM_RUNTIME_H
