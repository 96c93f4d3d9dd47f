// The Loom runtime's C++ API: load a compiled artifact (loom::Model) and run
// it (loom::Session). The C API (loom.h) is a thin layer over this header.
//
// Every failure throws loom::Error (loom/error.h) with a one-line message.
// A Model is immutable after load and may be shared by any number of
// Sessions on any threads; one Session must be used by one thread at a time.
#ifndef LOOM_RUNTIME_H
#define LOOM_RUNTIME_H

#include "loom/error.h"
#include "loom/sampler.h"
#include "loom/tokenizer.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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
  // Token ids that end a generation; negative means the model has none.
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  // Other ids that end a generation as EOS does (Llama 3 Instruct's
  // <|eot_id|>).
  std::vector<int32_t> stop_ids;
  // Whether `token` ends a generation: BOS, EOS or a stop id.
  bool endsGeneration(int32_t token) const;
};

// How a looped block (recurrent depth, e.g. Huginn) decides after each
// iteration whether a token step has iterated enough. Values are computed
// after iteration k on the last row of the step:
//   Kl               KL(p_(k-1) || p_k) of the next-token distribution, p_0
//                    uniform; exits when < threshold
//   MinpKl           the same on min-p filtered distributions (probabilities
//                    below 0.1 * max become 1/V, renormalised)
//   EntropyDiff      |H_k - H_(k-1)| with H_0 = 100, H = -sum p log(p + 1e-10)
//   LatentDiff       mean over rows of |x_k - x_(k-1)| / |x_k| (x_0 = the
//                    initial state; needs no logits)
//   Cosine           1 - mean over rows of cos(x_k, x_(k-1))
//   ArgmaxStability  the number of consecutive checks the argmax stayed the
//                    same; exits when >= threshold
enum class ExitCriterion {
  None,
  Kl,
  MinpKl,
  EntropyDiff,
  LatentDiff,
  Cosine,
  ArgmaxStability
};

// "none", "kl", "minp-kl", "entropy-diff", "latent-diff", "cosine",
// "argmax-stability".
const char *exitCriterionName(ExitCriterion criterion);
// The inverse of exitCriterionName; nullopt for any other name.
std::optional<ExitCriterion> parseExitCriterion(const std::string &name);
// The reference implementation's "auto" thresholds: kl 1e-3, minp-kl 1e-5,
// entropy-diff 1e-3, latent-diff 0.03, cosine 1e-3, argmax-stability 5
// (0 for None).
double defaultExitThreshold(ExitCriterion criterion);

// The looped block of a recurrent-depth model and its defaults (the Loop
// table of the artifact).
struct LoopInfo {
  int layers_per_iteration = 0; // attention layers in one iteration
  int layers_before = 0;        // attention layers before the loop
  int default_iterations = 0;   // iterations per token step by default
  ExitCriterion criterion = ExitCriterion::None; // default adaptive exit
  double threshold = 0.0;
  int max_iterations = 0; // cap for adaptive exit
};

// Session options of a looped model; a field left at its default takes the
// model's default where the model has one (Model::loop()). See
// docs/artifact-format.md, "Looped blocks", for the semantics.
struct LoopOptions {
  // Iterations per token step (1..1024); 0 = the model's default, or its
  // adaptive exit when it has one. A count > 0 runs exactly that many and
  // cannot be combined with a criterion other than None.
  int iterations = 0;
  // Adaptive exit; unset = the model's criterion, None = fixed iterations.
  std::optional<ExitCriterion> criterion;
  // Exit threshold; unset = the model's when the criterion is the model's,
  // otherwise defaultExitThreshold(criterion). Must be finite and > 0 (an
  // integer for ArgmaxStability).
  std::optional<double> threshold;
  // Most iterations an adaptive step runs (1..1024); 0 = the model's
  // max_iterations, or 32 when it records none.
  int max_iterations = 0;
  // Which cached K/V a core layer attends to (a name from kvPolicyNames()).
  std::string kv_policy = "full";
  // The state a token step starts from: truncated normal (see
  // docs/artifact-format.md; drawn from `seed`) or zeros.
  enum class Init { Random, Zero } init = Init::Random;
  uint64_t seed = 0;
  // Start each token step after the first forward() of a sequence from the
  // previous step's normalised latent (last row) instead of the init state.
  bool warm_start = false;
};

// A REFRAG chunk encoder (compressed chunk placeholders, arXiv 2509.01092;
// docs/chunk-placeholders.md): the artifact's RefragConfig.
struct RefragInfo {
  int32_t cls_token_id = 0;  // prepended to every chunk by encodeChunk()
  int64_t max_chunk_len = 0; // longest chunk the encoder takes
  int64_t encoder_dim = 0;   // width of a chunk embedding
  // Width of a placeholder row (Session::projectChunks): the model dim, or,
  // compiled with loom-fuse-chunk-projector, the model dim followed by
  // layer 0's pre-RoPE q|k|v of the row (docs/chunk-placeholders.md).
  int64_t projected_dim = 0;
  uint64_t encoder_checksum = 0; // identifies the encoder weights
};

// "full, skip, latest-m4, available-m4, always-last-m4, compress-sN,
// compress-rN, compress-anchor": the KV policies LoopOptions::kv_policy
// accepts, for messages.
const char *kvPolicyNames();

// A model's chat template: the Jinja source and the texts it gets as
// bos_token and eos_token (the model's tokenizer_config.json's, or the
// vocabulary's BOS and EOS pieces).
struct ChatTemplateInfo {
  std::string source;
  std::string bos_token;
  std::string eos_token;
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
  // Artifacts may have no tokenizer (a checkpoint that came without one):
  // tokenizer() then throws loom::Error.
  bool hasTokenizer() const;
  const Tokenizer &tokenizer() const;
  // The model's chat template (loom/chat_template.h renders it); its source
  // is empty where the artifact has none.
  const ChatTemplateInfo &chatTemplate() const;
  // Positions a session can hold: the config's max_seq, or less when a KV
  // cache is planned shorter.
  int64_t contextLength() const;
  // Rows one step of the "forward" program processes; longer inputs are fed
  // in chunks of this many tokens.
  int64_t maxTokensPerStep() const;
  // Bytes of a session's activation arena (its KV caches, kvCacheBytes(),
  // come on top).
  uint64_t arenaBytes() const;
  // Bytes of the ordinary KV caches; the per-iteration caches of a looped
  // block come on top, allocated by each session as it needs them.
  uint64_t kvCacheBytes() const;
  // Total bytes of the weight tensors as stored (mapped from the file; the
  // CPU kernels read bf16 matrices there, widening them as they go).
  uint64_t weightBytes() const;
  // The weight tensors by stored type: "F32", "BF16", "F16", "Q8_0", "Q4_0",
  // "Q2_K" .. "Q6_K" (the artifact's dtypes, docs/artifact-format.md), each
  // with its tensor count and bytes; the types present only, in that order.
  struct WeightTypeInfo {
    std::string type;
    int64_t tensors = 0;
    uint64_t bytes = 0;
  };
  std::vector<WeightTypeInfo> weightTypes() const;
  // The sliding window of each attention of the forward program, in order:
  // the positions each row attends to, its own included (0: every earlier
  // position). Mistral v0.1, Phi-3, Qwen 2 under use_sliding_window.
  std::vector<int64_t> attentionWindows() const;
  // The rotary embedding of the forward program's first rope: theta, its
  // per-pair frequency divisors (empty: none; Llama 3.1's, linear, YaRN or
  // LongRoPE scaling) and the scale of its rotation (1: none). nullopt for a
  // model without one.
  struct RopeInfo {
    float theta = 0.0f;
    std::vector<float> freq_factors;
    float scale = 1.0f;
  };
  std::optional<RopeInfo> rope() const;
  // The looped block, or nullptr when the model has none.
  const LoopInfo *loop() const;
  // The chunk encoder, or nullptr when the artifact has none (compiled
  // without loomc --format=refrag).
  const RefragInfo *refrag() const;
  // Free-form strings the compiler recorded ("generator", "target").
  const std::string &generator() const;
  const std::string &target() const;

  // Internal representation, for the session (runtime/src only).
  const rt::ModelData &data() const { return *data_; }

private:
  explicit Model(std::unique_ptr<rt::ModelData> data);
  std::unique_ptr<rt::ModelData> data_;
};

// Where a session runs the model's programs.
enum class Device {
  Cpu,  // the oneTBB CPU kernels
  Cuda  // the CUDA backend (libloomrt_cuda.so, loaded on first use)
};

// "" when a CUDA session can be created here; otherwise why not ("this build
// has no CUDA backend", the plugin's load error, or the driver's answer).
std::string cudaUnavailableReason();

struct SessionOptions {
  // Worker threads for the CPU kernels; 0 means all the machine has.
  int threads = 0;
  // Record one Chrome-trace event per dispatch (see Session::writeTrace).
  bool trace = false;
  // Looped models only: a model without a looped block rejects anything but
  // the defaults here (the seed aside).
  LoopOptions loop;
  // Where to run. A CUDA session uploads the weights once (as stored: f32
  // or bf16) and keeps the activations and KV caches on the device; looped
  // models run on the CPU only for now (see docs/cuda.md).
  Device device = Device::Cpu;
  int cuda_device = 0; // which GPU, for Device::Cuda
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
// position. Allocates the model's arenaBytes() + kvCacheBytes() on
// construction (throws OutOfMemoryError "out of memory: need N bytes for
// ..." when that fails), and a looped model's per-iteration caches when
// first written.
//
// A looped model runs each forward() chunk (at most maxTokensPerStep()
// rows) as one token step: all its rows iterate together, and an adaptive
// exit is decided on its last row.
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
  // not fit the context. A chunk that fails part way (OutOfMemoryError for a
  // looped block's new cache) leaves no trace: the earlier chunks stay fed,
  // position() is the failed chunk's first position, and a later forward()
  // from there computes what it would have without the failed chunk.
  Logits forward(const int32_t *tokens, size_t n, bool all_logits = false);
  // The same, with placeholders: where embeddings[i] is not null, position
  // i's input row (the Embed dispatch's output row) is those dim() floats
  // instead of the token's embedding, and tokens[i] is ignored (pass 0).
  // Everything after the embedding (RoPE position, KV slot, attention)
  // treats it as a token position. embeddings may be null (no placeholders).
  Logits forward(const int32_t *tokens, size_t n, bool all_logits,
                 const float *const *embeddings);
  // The same with placeholder rows of row_elems floats: dim(), or
  // refrag()->projected_dim for rows from projectChunks() (or a chunk
  // store), whose floats after the first dim() are layer 0's q|k|v, used
  // in place of projecting the row (on the CPU; the CUDA backend reads the
  // first dim() floats and projects). Throws loom::Error for other widths.
  Logits forward(const int32_t *tokens, size_t n, bool all_logits,
                 const float *const *embeddings, int64_t row_elems);

  // Feeds one token (as forward(&token, 1)) and returns the next token
  // `sampler` picks from its logits: the same as
  // sampler.sample(forward(&token, 1).last()) on the CPU. On CUDA the
  // sampler runs on the device inside one captured graph per step, drawing
  // the same coin from the sampler's generator and making the same choice;
  // a nucleus (top_p < 1) of over 2048 ids is chosen on the host from the
  // step's logits with that coin. A looped model's step is not captured
  // (its iterations are driven from the host), but its logits stay on the
  // GPU for the same sampler.
  int32_t forwardSample(int32_t token, Sampler &sampler);

  // REFRAG programs (models with refrag() only; they run without touching
  // the KV caches or the position, but reuse the activation arena, so a
  // Logits from forward() stays valid while the arena does not matter).
  //
  // The chunk embedding (encoder_dim floats) of the n token ids of one
  // chunk: runs "encode_chunk" on [cls_token_id] + ids. Throws loom::Error
  // for n == 0, n > max_chunk_len or ids outside the vocabulary.
  std::vector<float> encodeChunk(const int32_t *ids, size_t n);
  // Placeholder rows (n x refrag()->projected_dim floats: the decoder input
  // row, then, compiled with loom-fuse-chunk-projector, its layer-0 q|k|v)
  // of n chunk embeddings (n x encoder_dim floats): runs "project_chunk" in
  // blocks of maxTokensPerStep() rows. Pass projected_dim as the stride to
  // assembleSequence and as forward()'s row_elems.
  std::vector<float> projectChunks(const float *rows, size_t n);
  // The expansion policy's score of each of n chunk embeddings: runs
  // "score_chunk" in blocks of maxTokensPerStep() rows.
  std::vector<float> scoreChunks(const float *rows, size_t n);

  // Tokens fed since construction or the last reset().
  int64_t position() const;
  // Starts a new sequence (position 0); keeps the allocations.
  void reset();
  // Forgets the positions `position` and later, keeping the KV state of the
  // earlier ones, so that the next forward() continues at `position`: what
  // it then computes is what a session fed only the first `position` tokens
  // would compute: bit for bit where `position` starts a step (a forward()
  // chunk, a decode step) and the earlier tokens were fed in the same
  // steps; inside a longer step up to rounding (the kept rows came from a
  // step of more rows). For chat turns that rewrite the end of a
  // conversation, beam or speculative decoding, a shared prompt.
  // A looped model's steps keep per-step state (the iterations run, the
  // warm-start latent, the initial-state draws), so it rewinds only to the
  // first position of one of its steps (each forward() chunk, each decode
  // step): rewindPoint() gives the nearest one at or before a position.
  // Throws loom::Error, changing nothing, for a position outside
  // [0, position()] or, in a looped model, inside a step.
  void rewind(int64_t position);
  // The largest position <= `position` that rewind() accepts: `position`
  // itself for models without a looped block; clamped to [0, position()].
  int64_t rewindPoint(int64_t position) const;

  // Writes the recorded dispatches as Chrome trace JSON (chrome://tracing,
  // Perfetto). Requires SessionOptions::trace.
  void writeTrace(const std::string &path) const;

  const Model &model() const;
  Device device() const;
  // "cpu (ISA[ with bf16 dot products], N threads)", ISA "avx512", "avx2"
  // or "portable" (the bf16 GEMM of long steps uses vdpbf16ps), or
  // "cuda: " and the GPU's name.
  std::string deviceName() const;
  int threads() const;
  uint64_t arenaBytes() const;
  // KV cache bytes allocated now (a looped model's grow as iterations reach
  // new per-iteration caches; address space, backed as positions are
  // written).
  uint64_t kvCacheBytes() const;
  // KV cache bytes one more position needs: every ordinary cache, plus the
  // per-iteration caches the KV policy stores at the configured (or, with
  // adaptive exit, the maximum) iteration count.
  uint64_t kvBytesPerToken() const;

  // Looped models: the iterations each token step ran, and the exit
  // criterion's value at each of its checks (empty without adaptive exit),
  // one entry per step since construction or reset() (rewind() drops the
  // entries of the steps it forgets). Empty for other
  // models.
  const std::vector<int> &iterationsPerStep() const;
  const std::vector<std::vector<double>> &exitValues() const;

  // CUDA graphs launched since construction (the capturing launches
  // included; reset() keeps the count): one per one-token decode step, and
  // (unless LOOM_CUDA_LOOP_GRAPH=0, docs/cuda.md) one per captured looped
  // step or, where a step is not captured whole, per captured iteration;
  // 0 on the CPU and in traced sessions.
  int64_t graphLaunches() const;

private:
  std::unique_ptr<rt::SessionState> state_;
};

// Name of the CPU instruction set the kernels use now: "avx512" where the
// CPU has it, else "avx2" (with FMA and F16C), else "portable"; the
// environment variable LOOM_ISA (portable, avx2, avx512) caps the choice.
const char *activeIsaName();

} // namespace loom

#endif // LOOM_RUNTIME_H
