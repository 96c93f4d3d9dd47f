// The session: activation arena, KV caches, and the executor that runs the
// verified dispatch list of the "forward" program one step at a time (and
// the REFRAG chunk encoder's programs, which share the arena).
#include "artifact.h"
#include "cpu/kernels.h"
#include "device.h"
#include "trace.h"

#include <tbb/info.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <sys/mman.h>

namespace loom {
namespace rt {

namespace {

// Threads a session may ask for; far above any machine this runs on, it
// only stops absurd values before they reach oneTBB.
constexpr int kMaxThreads = 1024;

// Anonymous private pages, zero-filled and backed lazily by the kernel: a KV
// cache planned for a long context costs memory only for the positions a
// session reaches.
class PageMemory {
public:
  PageMemory(uint64_t bytes, const char *what) : bytes_(bytes) {
    if (bytes == 0)
      return;
    void *p =
        ::mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      throw OutOfMemoryError("out of memory: need " + std::to_string(bytes) +
                             " bytes for " + what);
    data_ = static_cast<uint8_t *>(p);
  }
  ~PageMemory() {
    if (data_)
      ::munmap(data_, static_cast<size_t>(bytes_));
  }
  PageMemory(const PageMemory &) = delete;
  PageMemory &operator=(const PageMemory &) = delete;
  uint8_t *data() const { return data_; }

private:
  uint8_t *data_ = nullptr;
  uint64_t bytes_;
};

int resolveThreads(int requested) {
  if (requested < 0 || requested > kMaxThreads)
    throw Error("threads must be between 0 (all) and " +
                std::to_string(kMaxThreads) + ", got " +
                std::to_string(requested));
  // oneTBB never runs more workers than the machine's concurrency: cap the
  // request so threads() reports what really runs.
  int available = tbb::info::default_concurrency();
  return requested == 0 ? available : std::min(requested, available);
}

// Which cached K/V a core layer attends to in a looped block. Core layer j
// at iteration it has the relative step index x = C * it + j (the reference
// code's step index minus the attention layers before the loop); the policy
// maps x to a physical cache ("slot") for writing and reading, and decides
// what a read uses for past positions that slot lacks.
struct KvPolicy {
  enum class Kind {
    Full,          // "full", "skip": slot x; absent positions are skipped
    LatestM4,      // "latest-m4", "available-m4": slot x; an absent position
                   // uses the same layer's latest iteration <= it it has
    AlwaysLastM4,  // "always-last-m4": the same layer's latest iteration of
                   // any, unless slot x has every position
    CompressS,     // "compress-sN": slot x mod N
    CompressR,     // "compress-rN": slot x div N
    CompressAnchor // "compress-anchor": x below 8 iterations, then the 9th
                   // iteration's slots reused
  };
  Kind kind = Kind::Full;
  int64_t n = 0;      // N of compress-sN / compress-rN
  int64_t layers = 1; // C, layers per iteration

  int64_t slot(int64_t x) const {
    switch (kind) {
    case Kind::CompressS:
      return x % n;
    case Kind::CompressR:
      return x / n;
    case Kind::CompressAnchor:
      return x < 8 * layers ? x : 8 * layers + (x - 8 * layers) % layers;
    default:
      return x;
    }
  }

  // Slots a position fills when every token step runs r iterations.
  int64_t slotsPerToken(int64_t r) const {
    const int64_t steps = layers * r;
    switch (kind) {
    case Kind::CompressS:
      return std::min(n, steps);
    case Kind::CompressR:
      return (steps + n - 1) / n;
    case Kind::CompressAnchor:
      return std::min(steps, 9 * layers);
    default:
      return steps;
    }
  }
};

// The N of "compress-sN" / "compress-rN"; the largest N a policy may name.
constexpr int64_t kMaxCompressN = 65536;

KvPolicy parseKvPolicy(const std::string &name, int64_t layers) {
  KvPolicy p;
  p.layers = layers;
  if (name == "full" || name == "skip") {
    p.kind = KvPolicy::Kind::Full;
  } else if (name == "latest-m4" || name == "available-m4") {
    p.kind = KvPolicy::Kind::LatestM4;
  } else if (name == "always-last-m4") {
    p.kind = KvPolicy::Kind::AlwaysLastM4;
  } else if (name == "compress-anchor") {
    p.kind = KvPolicy::Kind::CompressAnchor;
  } else if (name.size() > 10 && name.compare(0, 9, "compress-") == 0 &&
             (name[9] == 's' || name[9] == 'r') &&
             std::all_of(name.begin() + 10, name.end(),
                         [](char c) { return c >= '0' && c <= '9'; })) {
    p.kind =
        name[9] == 's' ? KvPolicy::Kind::CompressS : KvPolicy::Kind::CompressR;
    const std::string digits = name.substr(10);
    p.n = digits.size() > 6 ? kMaxCompressN + 1 : std::stoll(digits);
    if (p.n < 1 || p.n > kMaxCompressN)
      throw Error("KV policy '" + name + "': N must be between 1 and " +
                  std::to_string(kMaxCompressN));
  } else {
    throw Error("unknown KV policy '" + name + "' (expected one of " +
                kvPolicyNames() + ")");
  }
  return p;
}

bool needsLogits(ExitCriterion c) {
  return c == ExitCriterion::Kl || c == ExitCriterion::MinpKl ||
         c == ExitCriterion::EntropyDiff || c == ExitCriterion::ArgmaxStability;
}

// out = log_softmax(logits), in double so that the KL of two nearly equal
// distributions keeps its digits.
void logSoftmax(const float *logits, int64_t n, double *out) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i)
    mx = std::max(mx, double(logits[i]));
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i)
    sum += std::exp(double(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i)
    out[i] = double(logits[i]) - lse;
}

// KL(p || q) = sum p (log p - log q) from log-probabilities; terms with
// p = 0 contribute nothing (0 * inf would be NaN).
double klDivergence(const std::vector<double> &lp,
                    const std::vector<double> &lq) {
  double kl = 0.0;
  for (size_t i = 0; i < lp.size(); ++i) {
    const double p = std::exp(lp[i]);
    if (p > 0.0)
      kl += p * (lp[i] - lq[i]);
  }
  return kl;
}

// The exit criterion's state over one token step (see ExitCriterion).
class ExitEvaluator {
public:
  ExitEvaluator(ExitCriterion criterion, double threshold, int64_t vocab)
      : criterion_(criterion), threshold_(threshold), vocab_(vocab) {}

  // Called with the step's initial state, before the first iteration.
  void begin(const float *state, int64_t rows, int64_t dim) {
    switch (criterion_) {
    case ExitCriterion::Kl:
    case ExitCriterion::MinpKl:
      prev_.assign(size_t(vocab_), std::log(1.0 / double(vocab_)));
      cur_.resize(size_t(vocab_));
      break;
    case ExitCriterion::EntropyDiff:
      prev_entropy_ = 100.0;
      break;
    case ExitCriterion::ArgmaxStability:
      prev_argmax_ = -1;
      stable_ = 0;
      break;
    case ExitCriterion::LatentDiff:
    case ExitCriterion::Cosine:
      prev_state_.assign(state, state + rows * dim);
      break;
    case ExitCriterion::None:
      break;
    }
  }

  // After an iteration: `logits` is the last row's (criteria that need
  // logits), `state` the new state. Stores the criterion's value and
  // returns whether to exit.
  bool check(const float *logits, const float *state, int64_t rows, int64_t dim,
             double *value) {
    switch (criterion_) {
    case ExitCriterion::Kl:
      logSoftmax(logits, vocab_, cur_.data());
      return advanceKl(value);
    case ExitCriterion::MinpKl:
      minpLogProbs(logits);
      return advanceKl(value);
    case ExitCriterion::EntropyDiff: {
      logSoftmax(logits, vocab_, scratch(vocab_));
      double h = 0.0;
      for (int64_t i = 0; i < vocab_; ++i) {
        const double p = std::exp(scratch_[i]);
        h -= p * std::log(p + 1e-10);
      }
      *value = std::fabs(h - prev_entropy_);
      prev_entropy_ = h;
      return *value < threshold_;
    }
    case ExitCriterion::ArgmaxStability: {
      // The lowest index wins a tie, as torch.argmax does.
      const int64_t a = std::max_element(logits, logits + vocab_) - logits;
      stable_ = a == prev_argmax_ ? stable_ + 1 : 0;
      prev_argmax_ = a;
      *value = double(stable_);
      return *value >= threshold_;
    }
    case ExitCriterion::LatentDiff:
    case ExitCriterion::Cosine: {
      double total = 0.0;
      for (int64_t t = 0; t < rows; ++t) {
        const float *x = state + t * dim;
        const float *y = prev_state_.data() + t * dim;
        double xx = 0.0, yy = 0.0, xy = 0.0, dd = 0.0;
        for (int64_t i = 0; i < dim; ++i) {
          xx += double(x[i]) * x[i];
          yy += double(y[i]) * y[i];
          xy += double(x[i]) * y[i];
          dd += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
        }
        total += criterion_ == ExitCriterion::LatentDiff
                     ? std::sqrt(dd) / std::sqrt(xx)
                     : xy / std::sqrt(xx) / std::sqrt(yy);
      }
      const double mean = total / double(rows);
      *value = criterion_ == ExitCriterion::LatentDiff ? mean : 1.0 - mean;
      std::copy(state, state + rows * dim, prev_state_.begin());
      return *value < threshold_;
    }
    case ExitCriterion::None:
      break;
    }
    *value = 0.0;
    return false;
  }

private:
  double *scratch(int64_t n) {
    scratch_.resize(size_t(n));
    return scratch_.data();
  }

  bool advanceKl(double *value) {
    *value = klDivergence(prev_, cur_);
    prev_.swap(cur_);
    return *value < threshold_;
  }

  // Min-p filtered log-probabilities into cur_: probabilities below 0.1 of
  // the largest become 1/V, then all are renormalised.
  void minpLogProbs(const float *logits) {
    logSoftmax(logits, vocab_, cur_.data());
    double mx = 0.0;
    for (double lp : cur_)
      mx = std::max(mx, std::exp(lp));
    double sum = 0.0;
    for (double &lp : cur_) {
      const double p = std::exp(lp);
      lp = p < 0.1 * mx ? 1.0 / double(vocab_) : p;
      sum += lp;
    }
    for (double &lp : cur_)
      lp = std::log(lp / sum);
  }

  ExitCriterion criterion_;
  double threshold_;
  int64_t vocab_;
  std::vector<double> prev_, cur_, scratch_;
  double prev_entropy_ = 100.0;
  int64_t prev_argmax_ = -1;
  int64_t stable_ = 0;
  std::vector<float> prev_state_;
};

// One physical cache of a looped block: K and V for every position (in
// host memory, or on the device of a device session: bytes == 0 here), and
// which positions hold values.
struct CoreCache {
  CoreCache(int64_t max_seq, int64_t kv_dim, uint64_t bytes)
      : memory(bytes, "a loop KV cache"),
        k(bytes ? reinterpret_cast<float *>(memory.data()) : nullptr),
        v(bytes ? k + max_seq * kv_dim : nullptr),
        present(size_t(max_seq), 0) {}
  PageMemory memory;
  float *k;
  float *v;
  std::vector<uint8_t> present;
  int64_t count = 0;  // positions present
  int64_t prefix = 0; // positions 0 .. prefix - 1 are all present

  // Marks positions [pos, pos + T) present.
  void mark(int64_t pos, int64_t T) {
    for (int64_t p = pos; p < pos + T; ++p)
      if (!present[size_t(p)]) {
        present[size_t(p)] = 1;
        ++count;
      }
    while (prefix < int64_t(present.size()) && present[size_t(prefix)])
      ++prefix;
  }
  // Forgets positions `from` and later: what a step that failed at `from`
  // marked (no earlier step reaches that far).
  void forget(int64_t from) {
    for (size_t p = size_t(from); p < present.size(); ++p)
      if (present[p]) {
        present[p] = 0;
        --count;
      }
    prefix = std::min(prefix, from);
  }
};

// A standard normal draw: Box-Muller over two 53-bit uniforms of the
// session's mt19937_64 (documented in docs/artifact-format.md, so a seed
// means the same state everywhere).
double standardNormal(std::mt19937_64 &rng) {
  const double u1 = double((rng() >> 11) + 1) * 0x1p-53; // (0, 1]
  const double u2 = double(rng() >> 11) * 0x1p-53;       // [0, 1)
  constexpr double kTwoPi = 6.283185307179586;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

// A number for messages ("0.001", "2.5", "nan").
std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

bool isDefault(const LoopOptions &o) {
  return o.iterations == 0 && !o.criterion && !o.threshold &&
         o.max_iterations == 0 && o.kv_policy == "full" &&
         o.init == LoopOptions::Init::Random && !o.warm_start;
}

// A looped block's session settings: the options resolved against the
// model's defaults, and the per-sequence state.
struct LoopState {
  LoopState(const ModelData &m, const LoopOptions &o)
      : desc(*m.forward().loop) {
    const LoopInfo &info = desc.info;
    auto checkCount = [](const char *what, int v) {
      if (v < 0 || v > kMaxLoopIterations)
        throw Error(std::string("loop ") + what + " must be between 1 and " +
                    std::to_string(kMaxLoopIterations) +
                    " (0 for the model's default), got " + std::to_string(v));
    };
    checkCount("iterations", o.iterations);
    checkCount("max_iterations", o.max_iterations);
    criterion = o.criterion    ? *o.criterion
                : o.iterations ? ExitCriterion::None
                               : info.criterion;
    if (o.iterations > 0 && criterion != ExitCriterion::None)
      throw Error("a fixed iteration count (" + std::to_string(o.iterations) +
                  ") cannot be combined with the exit criterion '" +
                  exitCriterionName(criterion) +
                  "' (max_iterations bounds an adaptive exit)");
    if (criterion == ExitCriterion::None && (o.threshold || o.max_iterations))
      throw Error(std::string("an exit ") +
                  (o.threshold ? "threshold" : "max_iterations") +
                  " needs an exit criterion (none is set)");
    threshold = o.threshold                   ? *o.threshold
                : criterion == info.criterion ? info.threshold
                                              : defaultExitThreshold(criterion);
    if (criterion != ExitCriterion::None &&
        !(std::isfinite(threshold) && threshold > 0.0))
      throw Error("exit threshold must be a finite number > 0, got " +
                  number(threshold));
    if (criterion == ExitCriterion::ArgmaxStability &&
        threshold != std::floor(threshold))
      throw Error("the argmax-stability threshold counts checks; it must be "
                  "a whole number, got " +
                  number(threshold));
    iterations = o.iterations ? o.iterations : info.default_iterations;
    max_iterations = o.max_iterations      ? o.max_iterations
                     : info.max_iterations ? info.max_iterations
                                           : 32;
    policy = parseKvPolicy(o.kv_policy, info.layers_per_iteration);
    random_init = o.init == LoopOptions::Init::Random;
    seed = o.seed;
    rng.seed(seed);
    warm_start = o.warm_start;
  }

  // Iterations one token step runs at most.
  int maxSteps() const {
    return criterion == ExitCriterion::None ? iterations : max_iterations;
  }

  const LoopDesc &desc;
  ExitCriterion criterion;
  double threshold;
  int iterations;
  int max_iterations;
  KvPolicy policy;
  bool random_init;
  uint64_t seed;
  std::mt19937_64 rng;
  bool warm_start;

  // What a step starts from, recorded for each step (parallel to
  // SessionState::steps) so that a failed step leaves no trace and
  // Session::rewind can return to the start of any step.
  struct StepStart {
    int64_t pos;
    uint64_t draws;
    std::vector<float> warm; // with warm start
  };

  // Per sequence.
  bool have_warm = false;  // a forward() call has completed
  std::vector<float> warm; // the last step's latent, last row
  uint64_t draws = 0;      // rng() calls since the seed
  std::vector<StepStart> starts;
  int64_t iteration = 0;   // the iteration running now
  std::vector<std::unique_ptr<CoreCache>> slots;
  size_t slots_allocated = 0;
  // The slot each position's K/V are read from (-1: absent), planLoopKv.
  std::vector<int32_t> src;
  // Per-position row tables handed to attentionRows.
  std::vector<const float *> k_rows, v_rows;
  // A captured step's or iteration's slots (SessionState::wholeSlots) and
  // a captured step's state row.
  std::vector<int32_t> step_slots;
  std::vector<float> step_state;
};

} // namespace

struct SessionState final : LoopKvSource {
  SessionState(std::shared_ptr<const Model> model_, SessionOptions options)
      : model(std::move(model_)), m(model->data()),
        threads(resolveThreads(options.threads)), arena(threads),
        activations(m.arena_bytes, "the activation arena"),
        kv(m.kv_bytes, "the KV caches") {
    // Ordinary caches share one mapping; a loop's caches are the session's
    // slots, allocated on first write.
    float *p = reinterpret_cast<float *>(kv.data());
    for (const KvCacheDesc &c : m.kv_caches) {
      int64_t n = c.max_seq * c.kv_heads * c.head_dim;
      if (c.loop_layer >= 0) {
        caches.push_back(
            {nullptr, nullptr, c.max_seq, c.kv_heads * c.head_dim});
        continue;
      }
      caches.push_back({p, p + n, c.max_seq, c.kv_heads * c.head_dim});
      p += 2 * n;
    }
    if (m.forward().loop)
      loop = std::make_unique<LoopState>(m, options.loop);
    else if (!isDefault(options.loop))
      throw Error("this model has no looped block: the loop options "
                  "(iterations, exit criterion, KV policy, initial state, "
                  "warm start) need a recurrent-depth model");
    if (options.trace)
      trace = std::make_unique<TraceRecorder>();
    if (options.device == Device::Cuda)
      device = createCudaExecutor(m, options.cuda_device, trace.get(),
                                  loop ? this : nullptr);
    else
      m.ensureF32();
  }

  float *buffer(uint32_t b) const {
    return reinterpret_cast<float *>(activations.data() + m.buffers[b].offset);
  }
  int64_t ld(uint32_t b) const { return m.buffers[b].row_elems; }

  void run(const DispatchDesc &d, const int32_t *tokens, int64_t T,
           int64_t logit_begin, int64_t logit_end);
  void runRange(size_t begin, size_t end, const int32_t *tokens, int64_t T,
                int64_t logit_begin, int64_t logit_end) {
    runRange(m.forward(), begin, end, tokens, T, logit_begin, logit_end);
  }
  void runRange(const ProgramDesc &prog, size_t begin, size_t end,
                const int32_t *tokens, int64_t T, int64_t logit_begin,
                int64_t logit_end);
  const float *runRows(const ProgramDesc &prog, const int32_t *tokens,
                       const float *rows, int64_t T);
  void step(const int32_t *tokens, int64_t T, int64_t logit_begin,
            int64_t logit_end);
  void loopStep(const int32_t *tokens, int64_t T, int64_t logit_begin,
                int64_t logit_end);
  bool wholeSlots(int64_t x0, int64_t x1);
  CoreCache *wholeSlot(int64_t x);
  bool loopStepGraph(int32_t token);
  void initState(float *state, int64_t T);
  void attend(int64_t cache, const float *q, int64_t ldq, const float *k,
              int64_t ldk, const float *v, int64_t ldv, float *out, int64_t ldo,
              int64_t T, int64_t nh, int64_t nkv, int64_t hd, int64_t window);
  void loopAttend(const KvCacheDesc &c, const float *q, int64_t ldq,
                  const float *k, int64_t ldk, const float *v, int64_t ldv,
                  float *out, int64_t ldo, int64_t T, int64_t nh, int64_t nkv,
                  int64_t hd, int64_t window);
  CoreCache &slot(int64_t index, const KvCacheDesc &c);
  int64_t planLoopKv(uint32_t cache, int64_t T, const int32_t **src) override;
  // Dispatches [begin, end) of the forward program on T rows, on the CPU
  // or the device.
  void range(size_t begin, size_t end, const int32_t *tokens, int64_t T,
             int64_t logit_begin, int64_t logit_end);
  uint64_t kvBytesPerToken() const;
  // The packed q|k|v projection (N columns) of the T rows of x where this
  // step has a placeholder row (step_embeddings, each of model dim + N
  // floats) copies that row's q|k|v; the token rows, gathered into one
  // block, are projected in one matmul (not one per run of token rows:
  // many short runs would each stream the whole weight).
  void projectTokenRows(const float *x, int64_t ldx, cpu::Weights W, float *y,
                        int64_t ldy, int64_t T, int64_t N);
  // Throws, before any state changes, for ids outside the vocabulary and
  // for n tokens that do not fit the context.
  void checkInput(const int32_t *tokens, size_t n) const;
  void reset();
  // Returns a looped model's state to the start of its step `i` and forgets
  // that step and the later ones (their positions, per-step records,
  // draws and warm-start latents). Leaves have_warm alone. The generator's
  // state is `rng` where given (a failed step's saved one), else replayed
  // from the seed.
  void rewindLoop(size_t i, const std::mt19937_64 *rng = nullptr);

  std::shared_ptr<const Model> model;
  const ModelData &m;
  int threads;
  tbb::task_arena arena;
  PageMemory activations;
  PageMemory kv;
  std::vector<cpu::KvView> caches;
  std::unique_ptr<LoopState> loop;
  int64_t pos = 0;
  std::vector<float> logits;
  // Placeholder rows of the running forward() chunk: one pointer per row,
  // null for token rows; null when the chunk has none. Each has
  // step_row_elems floats: the model dim, or RefragInfo::projected_dim
  // (then layer 0's q|k|v follow the embedding row).
  const float *const *step_embeddings = nullptr;
  int64_t step_row_elems = 0;
  // projectTokenRows' gathered token rows and their projections.
  std::vector<float> gathered_x, gathered_y;
  std::vector<int> steps;                  // iterations per token step
  std::vector<std::vector<double>> values; // exit values per token step
  std::unique_ptr<TraceRecorder> trace;
  // The device backend running this session's programs; null on the CPU.
  std::unique_ptr<DeviceExecutor> device;
  std::vector<float> device_rows; // runRows' output read back from it
};

static_assert(int(cpu::Weights::Encoding::Q8_0) == int(WeightType::Q8_0) &&
                  int(cpu::Weights::Encoding::Q4_0) == int(WeightType::Q4_0) &&
                  int(cpu::Weights::Encoding::F16) == int(WeightType::F16) &&
                  int(cpu::Weights::Encoding::Q2_K) == int(WeightType::Q2_K) &&
                  int(cpu::Weights::Encoding::Q6_K) == int(WeightType::Q6_K),
              "the CPU kernels' encodings list the WeightTypes in order");

// Runs one dispatch on T rows at positions pos .. pos + T - 1. The Logits
// kernel computes only rows [logit_begin, logit_end).
void SessionState::run(const DispatchDesc &d, const int32_t *tokens, int64_t T,
                       int64_t logit_begin, int64_t logit_end) {
  const auto &in = d.inputs;
  const auto &out = d.outputs;
  // The dispatch's weights (at most 4, the artifact checker's arity):
  // matrices and tables as stored (the kernels read every WeightType), the
  // rest f32 (ensureF32 decoded any other one).
  cpu::Weights w[4];
  for (size_t i = 0; i < d.weight_ids.size() && i < 4; ++i) {
    const TensorDesc &t = m.tensors[d.weight_ids[i]];
    if (t.dtype == WeightType::F32 || !readsWeightAsStored(d.kernel, i))
      w[i] = cpu::Weights(t.data);
    else if (t.dtype == WeightType::BF16)
      w[i] = cpu::Weights(static_cast<const uint16_t *>(t.raw));
    else if (t.dtype == WeightType::F16)
      w[i] = cpu::Weights::f16(static_cast<const uint16_t *>(t.raw));
    else // ggml's blocks: the encodings list them in WeightType's order
      w[i] = cpu::Weights::blocks(
          static_cast<cpu::Weights::Encoding>(static_cast<int>(t.dtype)),
          static_cast<const uint8_t *>(t.raw));
  }
  const auto &ip = d.iparams;
  switch (d.kernel) {
  case Kernel::Embed:
    cpu::embed(tokens, T, w[0], ld(out[0]), buffer(out[0]),
               d.fparams.empty() ? 1.0f : d.fparams[0]);
    break;
  case Kernel::RmsNorm:
    cpu::rmsNorm(buffer(in[0]), w[0].f32(), buffer(out[0]), T, ld(in[0]),
                 d.fparams[0]);
    break;
  case Kernel::MatMul:
    cpu::matmul(buffer(in[0]), ld(in[0]), w[0], buffer(out[0]), ld(out[0]), T,
                ld(in[0]), ld(out[0]), !ip.empty() && ip[0] != 0);
    if (d.weight_ids.size() > 1) // fused bias epilogue (loom-fuse-linear-bias)
      cpu::addRowBias(buffer(out[0]), ld(out[0]), w[1].f32(), buffer(out[0]),
                      ld(out[0]), T, ld(out[0]));
    break;
  case Kernel::Rope:
    if (!in.empty() && in[0] != out[0])
      std::memcpy(buffer(out[0]), buffer(in[0]),
                  static_cast<size_t>(T * ld(out[0])) * sizeof(float));
    cpu::rope(buffer(out[0]), ld(out[0]), T, ip[0], ip[1], pos, d.fparams[0],
              ropeFreqFactors(d), ropeScale(d));
    break;
  case Kernel::Attention:
    attend(ip[0], buffer(in[0]), ld(in[0]), buffer(in[1]), ld(in[1]),
           buffer(in[2]), ld(in[2]), buffer(out[0]), ld(out[0]), T, ip[1],
           ip[2], ip[3], attentionWindow(d));
    break;
  case Kernel::SiluMul:
    cpu::siluMul(buffer(in[0]), buffer(in[1]), buffer(out[0]), T * ld(out[0]));
    break;
  case Kernel::Add:
    cpu::add(buffer(in[0]), buffer(in[1]), buffer(out[0]), T * ld(out[0]));
    break;
  case Kernel::Logits:
    if (logit_end > logit_begin)
      cpu::matmul(buffer(in[0]) + logit_begin * ld(in[0]), ld(in[0]), w[0],
                  buffer(out[0]) + logit_begin * ld(out[0]), ld(out[0]),
                  logit_end - logit_begin, ld(in[0]), ld(out[0]), false);
    break;
  case Kernel::FusedQkvAttention: {
    const int64_t nh = ip[1], nkv = ip[2], hd = ip[3];
    const int64_t qd = nh * hd, kd = nkv * hd;
    const float theta = d.fparams[0];
    float *x = buffer(in[0]), *y = buffer(out[0]);
    float *qkv = buffer(d.scratch[0]), *attn = buffer(d.scratch[1]);
    const int64_t lq = ld(d.scratch[0]), la = ld(d.scratch[1]);
    const int64_t lx = ld(in[0]), nqkv = qd + 2 * kd;
    // loom-fuse-chunk-projector: placeholder rows bring their q|k|v after
    // the embedding row, and only the token rows are projected.
    const bool given_qkv = step_embeddings && ip.size() > 5 && ip[5] != 0 &&
                           step_row_elems == m.config.dim + nqkv;
    if (given_qkv)
      projectTokenRows(x, lx, w[0], qkv, lq, T, nqkv);
    else
      cpu::matmul(x, lx, w[0], qkv, lq, T, lx, nqkv, false);
    if (d.weight_ids.size() > 2)
      cpu::addRowBias(qkv, lq, w[2].f32(), qkv, lq, T, qd + kd);
    if (d.weight_ids.size() > 3) // v's, after q|k
      cpu::addRowBias(qkv + qd + kd, lq, w[3].f32(), qkv + qd + kd, lq, T, kd);
    cpu::rope(qkv, lq, T, qd, hd, pos, theta, ropeFreqFactors(d), ropeScale(d));
    cpu::rope(qkv + qd, lq, T, kd, hd, pos, theta, ropeFreqFactors(d),
              ropeScale(d));
    attend(ip[0], qkv, lq, qkv + qd, lq, qkv + qd + kd, lq, attn, la, T, nh,
           nkv, hd, attentionWindow(d));
    cpu::matmul(attn, la, w[1], y, ld(out[0]), T, qd, ld(out[0]),
                ip.size() > 4 && ip[4] != 0);
    break;
  }
  case Kernel::Concat:
    cpu::concatRows(buffer(in[0]), ld(in[0]), buffer(in[1]), ld(in[1]),
                    buffer(out[0]), T);
    break;
  case Kernel::Copy:
    if (buffer(in[0]) != buffer(out[0]))
      std::memcpy(buffer(out[0]), buffer(in[0]),
                  static_cast<size_t>(T * ld(out[0])) * sizeof(float));
    break;
  case Kernel::AddRowBias:
    cpu::addRowBias(buffer(in[0]), ld(in[0]), w[0].f32(), buffer(out[0]),
                    ld(out[0]), T, ld(out[0]));
    break;
  case Kernel::LayerNorm:
    cpu::layerNorm(buffer(in[0]), w[0].f32(), w[1].f32(), buffer(out[0]), T,
                   ld(in[0]), d.fparams[0]);
    break;
  case Kernel::GeluTanh:
    cpu::geluTanh(buffer(in[0]), buffer(out[0]), T * ld(out[0]));
    break;
  case Kernel::SelfAttention:
    cpu::selfAttention(buffer(in[0]), ld(in[0]), buffer(in[1]), ld(in[1]),
                       buffer(in[2]), ld(in[2]), buffer(out[0]), ld(out[0]), T,
                       ip[0], ip[1]);
    break;
  case Kernel::AddPositions:
    if (buffer(in[0]) != buffer(out[0]))
      std::memcpy(buffer(out[0]), buffer(in[0]),
                  static_cast<size_t>(T * ld(out[0])) * sizeof(float));
    cpu::addRows(w[0], buffer(out[0]), T, ld(out[0]));
    break;
  case Kernel::TakeRow:
    // The program verified row < T (ProgramDesc::min_rows); in place, the
    // rows may be the same.
    std::memmove(buffer(out[0]), buffer(in[0]) + ip[0] * ld(in[0]),
                 static_cast<size_t>(ld(out[0])) * sizeof(float));
    break;
  }
}

void SessionState::attend(int64_t cache, const float *q, int64_t ldq,
                          const float *k, int64_t ldk, const float *v,
                          int64_t ldv, float *out, int64_t ldo, int64_t T,
                          int64_t nh, int64_t nkv, int64_t hd, int64_t window) {
  const KvCacheDesc &c = m.kv_caches[cache];
  if (c.loop_layer >= 0)
    loopAttend(c, q, ldq, k, ldk, v, ldv, out, ldo, T, nh, nkv, hd, window);
  else
    cpu::attention(q, ldq, k, ldk, v, ldv, out, ldo, T, pos, nh, nkv, hd,
                   caches[cache], window);
}

CoreCache &SessionState::slot(int64_t index, const KvCacheDesc &c) {
  LoopState &ls = *loop;
  if (static_cast<size_t>(index) >= ls.slots.size())
    ls.slots.resize(static_cast<size_t>(index) + 1);
  auto &s = ls.slots[static_cast<size_t>(index)];
  if (!s) {
    s = std::make_unique<CoreCache>(c.max_seq, c.kv_heads * c.head_dim,
                                    device ? 0 : m.loop_kv_bytes);
    ++ls.slots_allocated;
  }
  return *s;
}

// Core layer `cache` (a loop cache) at the running iteration: marks the
// step's rows present in the slot the KV policy writes, and picks for
// every position up to the last row's the slot its K/V are read from
// (ls.src, -1 where none holds it). Returns the written slot.
int64_t SessionState::planLoopKv(uint32_t cache, int64_t T,
                                 const int32_t **src) {
  LoopState &ls = *loop;
  const KvCacheDesc &c = m.kv_caches[cache];
  const int64_t C = ls.policy.layers;
  const int64_t x = C * ls.iteration + c.loop_layer;
  const int64_t dst_index = ls.policy.slot(x);
  CoreCache &dst = slot(dst_index, c);
  dst.mark(pos, T);
  const int64_t end = pos + T;
  ls.src.assign(size_t(end), -1);
  using Kind = KvPolicy::Kind;
  const bool m4 =
      ls.policy.kind == Kind::LatestM4 || ls.policy.kind == Kind::AlwaysLastM4;
  // The reference cache reads a slot that holds every position as it is,
  // whatever the policy; only the m4 policies look elsewhere for the rest.
  if (!m4 || dst.count == end) {
    for (int64_t p = 0; p < end; ++p)
      if (dst.present[p])
        ls.src[p] = int32_t(dst_index);
  } else {
    // Slots of the same core layer, newest first: from this iteration
    // (latest-m4) or from the newest that exists (always-last-m4). The m4
    // policies do not compress: slot y holds relative step index y.
    const int64_t n_slots = static_cast<int64_t>(ls.slots.size());
    const int64_t top =
        ls.policy.kind == Kind::LatestM4
            ? x
            : c.loop_layer + (n_slots - 1 - c.loop_layer) / C * C;
    for (int64_t p = 0; p < end; ++p)
      for (int64_t y = top; y >= 0; y -= C) {
        const CoreCache *from = ls.slots[size_t(y)].get();
        if (from && from->present[p]) {
          ls.src[p] = int32_t(y);
          break;
        }
      }
  }
  *src = ls.src.data();
  return dst_index;
}

// A loop cache on the CPU: the step's K/V rows into the written slot, then
// attention over the rows planLoopKv picked.
void SessionState::loopAttend(const KvCacheDesc &c, const float *q, int64_t ldq,
                              const float *k, int64_t ldk, const float *v,
                              int64_t ldv, float *out, int64_t ldo, int64_t T,
                              int64_t nh, int64_t nkv, int64_t hd,
                              int64_t window) {
  LoopState &ls = *loop;
  const int64_t kvd = nkv * hd;
  // A slot that holds every earlier position: read whole, without a
  // per-position table (the same arithmetic, bit for bit; the decision a
  // captured CUDA step rests on, so every CPU run checks it).
  if (CoreCache *whole =
          wholeSlot(ls.policy.layers * ls.iteration + c.loop_layer)) {
    whole->mark(pos, T);
    cpu::attention(q, ldq, k, ldk, v, ldv, out, ldo, T, pos, nh, nkv, hd,
                   {whole->k, whole->v, c.max_seq, kvd}, window);
    return;
  }
  const int32_t *src = nullptr;
  const uint32_t cache = static_cast<uint32_t>(&c - m.kv_caches.data());
  CoreCache &dst = *ls.slots[size_t(planLoopKv(cache, T, &src))];
  for (int64_t t = 0; t < T; ++t) {
    const int64_t p = pos + t;
    std::memcpy(dst.k + p * kvd, k + t * ldk, sizeof(float) * size_t(kvd));
    std::memcpy(dst.v + p * kvd, v + t * ldv, sizeof(float) * size_t(kvd));
  }
  const int64_t end = pos + T;
  ls.k_rows.assign(size_t(end), nullptr);
  ls.v_rows.assign(size_t(end), nullptr);
  for (int64_t p = 0; p < end; ++p)
    if (src[p] >= 0) {
      const CoreCache &from = *ls.slots[size_t(src[p])];
      ls.k_rows[p] = from.k + p * kvd;
      ls.v_rows[p] = from.v + p * kvd;
    }
  cpu::attentionRows(q, ldq, out, ldo, T, pos, nh, nkv, hd, ls.k_rows.data(),
                     ls.v_rows.data(), window);
}

void SessionState::projectTokenRows(const float *x, int64_t ldx, cpu::Weights W,
                                    float *y, int64_t ldy, int64_t T,
                                    int64_t N) {
  const int64_t D = m.config.dim;
  int64_t n_tokens = 0, first = -1, last = -1;
  for (int64_t t = 0; t < T; ++t) {
    if (step_embeddings[t]) {
      std::memcpy(y + t * ldy, step_embeddings[t] + D,
                  static_cast<size_t>(N) * sizeof(float));
      continue;
    }
    if (first < 0)
      first = t;
    last = t;
    ++n_tokens;
  }
  if (n_tokens == 0)
    return;
  if (last - first + 1 == n_tokens) { // one run: no gather
    cpu::matmul(x + first * ldx, ldx, W, y + first * ldy, ldy, n_tokens, ldx,
                N, false);
    return;
  }
  gathered_x.resize(static_cast<size_t>(n_tokens * ldx));
  gathered_y.resize(static_cast<size_t>(n_tokens * N));
  for (int64_t t = 0, r = 0; t < T; ++t)
    if (!step_embeddings[t])
      std::memcpy(gathered_x.data() + (r++) * ldx, x + t * ldx,
                  static_cast<size_t>(ldx) * sizeof(float));
  cpu::matmul(gathered_x.data(), ldx, W, gathered_y.data(), N, n_tokens, ldx,
              N, false);
  for (int64_t t = 0, r = 0; t < T; ++t)
    if (!step_embeddings[t])
      std::memcpy(y + t * ldy, gathered_y.data() + (r++) * N,
                  static_cast<size_t>(N) * sizeof(float));
}

// Runs dispatches [begin, end) of `prog` on T rows. After a TakeRow the
// rest of the range runs on its one row. The forward program's Embed is
// followed by the placeholder rows of step_embeddings.
void SessionState::runRange(const ProgramDesc &prog, size_t begin, size_t end,
                            const int32_t *tokens, int64_t T,
                            int64_t logit_begin, int64_t logit_end) {
  for (size_t i = begin; i < end; ++i) {
    const DispatchDesc &d = prog.dispatches[i];
    const auto t0 = trace ? TraceRecorder::Clock::now()
                          : TraceRecorder::Clock::time_point();
    run(d, tokens, T, logit_begin, logit_end);
    if (step_embeddings && static_cast<int64_t>(i) == prog.embed_dispatch &&
        &prog == &m.forward()) {
      float *rows = buffer(d.outputs[0]);
      const int64_t D = ld(d.outputs[0]);
      for (int64_t t = 0; t < T; ++t)
        if (step_embeddings[t])
          std::memcpy(rows + t * D, step_embeddings[t],
                      static_cast<size_t>(D) * sizeof(float));
    }
    if (trace) {
      int64_t rows = d.kernel == Kernel::Logits ? logit_end - logit_begin : T;
      trace->record(d.name, kernelName(d.kernel), rows, pos, t0,
                    TraceRecorder::Clock::now());
    }
    if (d.kernel == Kernel::TakeRow) {
      T = 1;
      logit_begin = std::min<int64_t>(logit_begin, 0);
      logit_end = std::min<int64_t>(logit_end, 1);
    }
  }
}

// Runs a program other than "forward" once on T rows (the verified
// min_rows..max_rows): copies the caller's input rows into its input buffer
// (a program without one reads `tokens`), runs every dispatch, and returns
// its output buffer. Touches neither the KV caches nor the position.
const float *SessionState::runRows(const ProgramDesc &prog,
                                   const int32_t *tokens, const float *rows,
                                   int64_t T) {
  if (T < prog.min_rows || T > prog.max_rows)
    throw Error("program '" + prog.name + "' runs on " +
                std::to_string(prog.min_rows) + ".." +
                std::to_string(prog.max_rows) + " rows, not " +
                std::to_string(T));
  if (device) {
    device_rows.resize(static_cast<size_t>(T * ld(prog.logits_buffer)));
    device->runRows(prog, tokens, rows, T, device_rows.data());
    return device_rows.data();
  }
  if (prog.input_buffer >= 0)
    std::memcpy(buffer(static_cast<uint32_t>(prog.input_buffer)), rows,
                static_cast<size_t>(
                    T * ld(static_cast<uint32_t>(prog.input_buffer))) *
                    sizeof(float));
  arena.execute(
      [&] { runRange(prog, 0, prog.dispatches.size(), tokens, T, 0, T); });
  return buffer(prog.logits_buffer);
}

void SessionState::step(const int32_t *tokens, int64_t T, int64_t logit_begin,
                        int64_t logit_end) {
  arena.execute([&] {
    if (!loop) {
      runRange(0, m.forward().dispatches.size(), tokens, T, logit_begin,
               logit_end);
      return;
    }
    // A looped step that throws (out of memory for a new slot, a device
    // error) leaves no trace: it is rewound as Session::rewind would, so
    // that a retry, or another continuation from this position, computes
    // what it would have. (The slots it allocated stay allocated.)
    LoopState &ls = *loop;
    ls.starts.push_back(
        {pos, ls.draws, ls.warm_start ? ls.warm : std::vector<float>()});
    std::optional<std::mt19937_64> rng;
    if (ls.random_init)
      rng = ls.rng;
    try {
      loopStep(tokens, T, logit_begin, logit_end);
    } catch (...) {
      rewindLoop(ls.starts.size() - 1, rng ? &*rng : nullptr);
      throw;
    }
  });
}

// The state a token step starts from: the previous step's latent (warm
// start), or a fresh truncated-normal draw, or zeros.
void SessionState::initState(float *state, int64_t T) {
  LoopState &ls = *loop;
  const int64_t D = m.config.dim;
  if (ls.warm_start && ls.have_warm) {
    for (int64_t t = 0; t < T; ++t)
      std::copy(ls.warm.begin(), ls.warm.end(), state + t * D);
  } else if (ls.random_init) {
    const double sd = ls.desc.state_std, scale = ls.desc.state_scale;
    for (int64_t i = 0; i < T * D; ++i) {
      double z;
      do
        z = standardNormal(ls.rng), ls.draws += 2;
      while (std::fabs(z) > 3.0);
      state[i] = static_cast<float>(z * sd * scale);
    }
  } else {
    std::fill(state, state + T * D, 0.0f);
  }
}

void SessionState::range(size_t begin, size_t end, const int32_t *tokens,
                         int64_t T, int64_t logit_begin, int64_t logit_end) {
  if (device)
    device->run(m.forward(), begin, end, T, logit_begin, logit_end,
                step_embeddings);
  else
    runRange(begin, end, tokens, T, logit_begin, logit_end);
}

// One token step of a looped model: the prelude once, then iterations of
// the body until the iteration count or the exit criterion says stop, then
// the tail (already run when the criterion needed its logits). On a device
// the buffers stay there: the initial state is uploaded, and the exit
// criterion reads back the last row's logits and the state.
void SessionState::loopStep(const int32_t *tokens, int64_t T,
                            int64_t logit_begin, int64_t logit_end) {
  LoopState &ls = *loop;
  const LoopDesc &L = ls.desc;
  const int64_t D = m.config.dim, V = m.config.vocab_size;
  if (device && T == 1 && logit_begin == 0 && logit_end == 1 &&
      !step_embeddings && loopStepGraph(tokens[0]))
    return;
  range(0, L.body_begin, tokens, T, logit_begin, logit_end);
  std::vector<float> host_state, host_logits;
  float *state = device ? nullptr : buffer(L.state_buffer);
  if (device) {
    host_state.resize(size_t(T * D));
    host_logits.resize(size_t(V));
    state = host_state.data();
  }
  initState(state, T);
  if (device)
    device->upload(L.state_buffer, state, T);

  const bool adaptive = ls.criterion != ExitCriterion::None;
  const bool with_logits = needsLogits(ls.criterion);
  const bool with_state = adaptive && !with_logits;
  ExitEvaluator evaluator(ls.criterion, ls.threshold, V);
  if (adaptive)
    evaluator.begin(state, T, D);
  const uint32_t logits_buffer = m.forward().logits_buffer;
  const float *last_logits =
      device ? host_logits.data() : buffer(logits_buffer) + (T - 1) * V;
  std::vector<double> checked;
  bool tail_current = false;
  int used = 0;
  // One row on a device that captures looped steps: an iteration whose
  // slots are all whole runs as one graph (body, state copy, and the tail
  // when the exit criterion reads the logits).
  const bool graph_iterations = device && T == 1 && logit_begin == 0 &&
                                logit_end == 1 && !step_embeddings &&
                                device->capturesLoopSteps();
  for (int it = 0; it < ls.maxSteps(); ++it) {
    ls.iteration = it;
    // (Asked again each iteration: a failed capture turns graphs off.)
    const int64_t C = ls.policy.layers;
    const bool graphed = graph_iterations && device->capturesLoopSteps() &&
                         wholeSlots(C * it, C * (it + 1));
    if (graphed) {
      for (int32_t s : ls.step_slots)
        ls.slots[static_cast<size_t>(s)]->mark(pos, 1);
      device->loopIterationGraph(ls.step_slots, adaptive && with_logits);
    } else {
      range(L.body_begin, L.body_end, tokens, T, logit_begin, logit_end);
      if (device)
        device->copyRows(L.state_buffer, L.next_state_buffer, T);
      else
        std::memcpy(state, buffer(L.next_state_buffer),
                    sizeof(float) * size_t(T * D));
    }
    used = it + 1;
    if (!adaptive)
      continue;
    if (with_logits && !graphed)
      range(L.body_end, L.tail_end, tokens, T, logit_begin, logit_end);
    tail_current = with_logits;
    if (device && with_logits)
      device->download(logits_buffer, T - 1, 1, host_logits.data());
    if (device && with_state)
      device->download(L.state_buffer, 0, T, state);
    double value;
    const bool stop = evaluator.check(last_logits, state, T, D, &value);
    checked.push_back(value);
    if (stop)
      break;
  }
  if (!tail_current)
    range(L.body_end, L.tail_end, tokens, T, logit_begin, logit_end);
  ls.warm.resize(size_t(D));
  if (device)
    device->download(L.latent_buffer, T - 1, 1, ls.warm.data());
  else
    std::copy_n(buffer(L.latent_buffer) + (T - 1) * D, D, ls.warm.begin());
  steps.push_back(used);
  values.push_back(std::move(checked));
}

// Whether the slots step indices [x0, x1) write (x = C * iteration + core
// layer) are all whole (wholeSlot), so that they then hold every position
// up to the step's and are read whole: for a whole step, every step after
// a prefill with the same count, under every policy. Lists them in
// ls.step_slots (in x order); changes nothing else.
bool SessionState::wholeSlots(int64_t x0, int64_t x1) {
  LoopState &ls = *loop;
  ls.step_slots.clear();
  for (int64_t x = x0; x < x1; ++x) {
    if (!wholeSlot(x))
      return false;
    ls.step_slots.push_back(static_cast<int32_t>(ls.policy.slot(x)));
  }
  return true;
}

// The slot step index x (C * iteration + core layer) writes, when it
// exists and already holds every position before this step's; else null.
// planLoopKv then reads it alone, whatever the policy.
CoreCache *SessionState::wholeSlot(int64_t x) {
  LoopState &ls = *loop;
  const size_t s = static_cast<size_t>(ls.policy.slot(x));
  if (s >= ls.slots.size() || !ls.slots[s] || ls.slots[s]->prefix < pos)
    return nullptr;
  return ls.slots[s].get();
}

// A one-row step with a fixed iteration count as one CUDA graph, where the
// device captures such steps and every slot the KV policy writes in this
// step already holds every earlier position (its attention then reads it
// whole, like an ordinary cache): every decode step after a prefill with
// the same count. Returns false otherwise (having changed only the
// scratch ls.step_slots).
bool SessionState::loopStepGraph(int32_t token) {
  LoopState &ls = *loop;
  const int64_t C = ls.policy.layers;
  if (ls.criterion != ExitCriterion::None || !device->capturesLoopSteps() ||
      !wholeSlots(0, C * ls.iterations))
    return false;
  const LoopDesc &L = ls.desc;
  ls.step_state.resize(static_cast<size_t>(m.config.dim));
  initState(ls.step_state.data(), 1);
  device->loopStepGraph(token, pos, ls.step_state.data(), ls.step_slots);
  for (int32_t s : ls.step_slots)
    ls.slots[static_cast<size_t>(s)]->mark(pos, 1);
  ls.warm.resize(static_cast<size_t>(m.config.dim));
  device->download(L.latent_buffer, 0, 1, ls.warm.data());
  steps.push_back(ls.iterations);
  values.emplace_back();
  return true;
}

void SessionState::checkInput(const int32_t *tokens, size_t n) const {
  const int64_t vocab = m.config.vocab_size;
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      throw Error("token id " + std::to_string(tokens[i]) +
                  " is outside the vocabulary (0.." +
                  std::to_string(vocab - 1) + ")");
  if (n > static_cast<size_t>(m.context_length - pos))
    throw Error("context full: position " +
                std::to_string(pos + static_cast<int64_t>(n) - 1) +
                " reaches max_seq " + std::to_string(m.context_length));
}

uint64_t SessionState::kvBytesPerToken() const {
  uint64_t bytes = 0;
  int64_t loop_kvd = 0;
  for (const KvCacheDesc &c : m.kv_caches) {
    if (c.loop_layer < 0)
      bytes += 2 * sizeof(float) * uint64_t(c.kv_heads * c.head_dim);
    else
      loop_kvd = c.kv_heads * c.head_dim;
  }
  if (loop)
    bytes += 2 * sizeof(float) * uint64_t(loop_kvd) *
             uint64_t(loop->policy.slotsPerToken(loop->maxSteps()));
  return bytes;
}

void SessionState::reset() {
  pos = 0;
  steps.clear();
  values.clear();
  if (!loop)
    return;
  loop->have_warm = false;
  loop->rng.seed(loop->seed);
  loop->draws = 0;
  loop->starts.clear();
  for (auto &s : loop->slots)
    if (s) {
      std::fill(s->present.begin(), s->present.end(), 0);
      s->count = 0;
      s->prefix = 0;
    }
}

void SessionState::rewindLoop(size_t i, const std::mt19937_64 *rng) {
  LoopState &ls = *loop;
  LoopState::StepStart &start = ls.starts[i];
  for (auto &slot : ls.slots)
    if (slot)
      slot->forget(start.pos);
  if (rng) {
    ls.rng = *rng;
    ls.draws = start.draws;
  } else if (ls.draws != start.draws) {
    // mt19937_64::discard skips whole blocks of the state at a time.
    ls.rng.seed(ls.seed);
    ls.rng.discard(start.draws);
    ls.draws = start.draws;
  }
  if (ls.warm_start)
    ls.warm.swap(start.warm);
  steps.resize(i);
  values.resize(i);
  ls.starts.resize(i);
}

} // namespace rt

Session::Session(std::shared_ptr<const Model> model, SessionOptions options) {
  if (!model)
    throw Error("session needs a model");
  state_ = std::make_unique<rt::SessionState>(std::move(model), options);
}

Session::~Session() = default;

Logits Session::forward(const int32_t *tokens, size_t n, bool all_logits) {
  return forward(tokens, n, all_logits, nullptr);
}

Logits Session::forward(const int32_t *tokens, size_t n, bool all_logits,
                        const float *const *embeddings) {
  return forward(tokens, n, all_logits, embeddings, state_->m.config.dim);
}

Logits Session::forward(const int32_t *tokens, size_t n, bool all_logits,
                        const float *const *embeddings, int64_t row_elems) {
  rt::SessionState &s = *state_;
  const rt::ModelData &m = s.m;
  const int64_t vocab = m.config.vocab_size;
  if (n == 0)
    throw Error("forward needs at least one token");
  if (!tokens)
    throw Error("forward: tokens is null");
  // Placeholder positions read no token: their ids are replaced by 0 for
  // the Embed kernel, whose row is then overwritten.
  std::vector<int32_t> ids;
  if (embeddings) {
    const rt::ProgramDesc &fwd = m.forward();
    if (fwd.embed_dispatch < 0 ||
        s.ld(fwd.dispatches[fwd.embed_dispatch].outputs[0]) != m.config.dim)
      throw Error("this model's forward program has no Embed with rows of the "
                  "model dim to replace by placeholder embeddings");
    const int64_t projected = m.refrag ? m.refrag->info.projected_dim : 0;
    if (row_elems != m.config.dim && row_elems != projected)
      throw Error("placeholder rows of " + std::to_string(row_elems) +
                  " floats: this model takes rows of its dim " +
                  std::to_string(m.config.dim) +
                  (projected > m.config.dim
                       ? " or of project_chunk's " + std::to_string(projected)
                       : std::string()));
    ids.assign(tokens, tokens + n);
    for (size_t i = 0; i < n; ++i)
      if (embeddings[i])
        ids[i] = 0;
    tokens = ids.data();
  }
  s.checkInput(tokens, n);

  const int64_t total = static_cast<int64_t>(n);
  const int64_t rows = all_logits ? total : 1;
  s.logits.resize(static_cast<size_t>(rows * vocab));
  const float *logits_buf = s.buffer(m.forward().logits_buffer);
  // An exit criterion that reads logits needs the last row's in every step.
  const bool exit_logits = s.loop && rt::needsLogits(s.loop->criterion);
  for (int64_t c = 0; c < total; c += m.max_tokens) {
    const int64_t T = std::min<int64_t>(m.max_tokens, total - c);
    const bool last_chunk = c + T == total;
    // Rows of this chunk whose logits the caller gets back.
    const int64_t begin = all_logits ? 0 : last_chunk ? T - 1 : T;
    float *dst = s.logits.data() + (all_logits ? c : 0) * vocab;
    if (s.device && !s.loop) {
      s.device->forward(tokens + c, embeddings ? embeddings + c : nullptr, T,
                        s.pos, begin, T, begin < T ? dst : nullptr);
      s.pos += T;
      continue;
    }
    s.step_embeddings = embeddings ? embeddings + c : nullptr;
    s.step_row_elems = row_elems;
    try {
      if (s.device)
        s.device->beginStep(tokens + c, T, s.pos);
      s.step(tokens + c, T, exit_logits ? std::min(begin, T - 1) : begin, T);
    } catch (...) {
      s.step_embeddings = nullptr;
      // The chunks fed stay fed, as by a call that ended there.
      if (s.loop && c > 0)
        s.loop->have_warm = true;
      throw;
    }
    s.step_embeddings = nullptr;
    s.pos += T;
    if (begin < T && s.device)
      s.device->download(m.forward().logits_buffer, begin, T - begin, dst);
    else if (begin < T)
      std::memcpy(dst, logits_buf + begin * vocab,
                  static_cast<size_t>((T - begin) * vocab) * sizeof(float));
  }
  if (s.loop)
    s.loop->have_warm = true;
  return Logits{s.logits.data(), rows, vocab};
}

int32_t Session::forwardSample(int32_t token, Sampler &sampler) {
  rt::SessionState &s = *state_;
  if (!s.device)
    return sampler.sample(forward(&token, 1).last());
  s.checkInput(&token, 1);
  const float coin =
      sampler.temperature() > 0.0f ? sampler.nextUniform() : 0.0f;
  int32_t next;
  if (s.loop) {
    // The session drives a looped step's iterations (loopStep); its logits
    // stay on the device for the sampler.
    s.device->beginStep(&token, 1, s.pos);
    s.step(&token, 1, 0, 1);
    s.loop->have_warm = true;
    s.pos += 1;
    next = s.device->sampleRow(0, sampler.temperature(), sampler.topP(), coin);
  } else {
    next = s.device->forwardSample(token, s.pos, sampler.temperature(),
                                   sampler.topP(), coin);
    s.pos += 1;
  }
  if (next == rt::DeviceExecutor::kSampleOnHost) {
    // A nucleus wider than the device sampler holds: the same choice, with
    // the same coin, from the step's logits.
    const int64_t vocab = s.m.config.vocab_size;
    if (s.logits.size() < static_cast<size_t>(vocab))
      s.logits.resize(static_cast<size_t>(vocab));
    s.device->download(s.m.forward().logits_buffer, 0, 1, s.logits.data());
    return sampler.sampleWithCoin(s.logits.data(), coin);
  }
  if (next < 0)
    throw Error("sampler: a logit is NaN");
  if (next >= s.m.config.vocab_size)
    throw Error("internal: the device sampler returned id " +
                std::to_string(next));
  return next;
}

namespace {

const rt::RefragDesc &refragOf(const rt::ModelData &m) {
  if (!m.refrag)
    throw Error("this artifact has no chunk encoder (compile with loomc "
                "--format=refrag)");
  return *m.refrag;
}

} // namespace

std::vector<float> Session::encodeChunk(const int32_t *ids, size_t n) {
  rt::SessionState &s = *state_;
  const rt::ModelData &m = s.m;
  const rt::RefragDesc &r = refragOf(m);
  const int64_t vocab = m.config.vocab_size;
  if (n == 0)
    throw Error("encodeChunk: a chunk needs at least one token");
  if (!ids)
    throw Error("encodeChunk: ids is null");
  if (n > static_cast<size_t>(r.info.max_chunk_len))
    throw Error("encodeChunk: a chunk of " + std::to_string(n) +
                " tokens is longer than the encoder's max_chunk_len " +
                std::to_string(r.info.max_chunk_len));
  std::vector<int32_t> input;
  input.reserve(n + 1);
  input.push_back(r.info.cls_token_id);
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab)
      throw Error("token id " + std::to_string(ids[i]) +
                  " is outside the vocabulary (0.." +
                  std::to_string(vocab - 1) + ")");
    input.push_back(ids[i]);
  }
  const rt::ProgramDesc &prog = m.programs[r.encode_program];
  const float *out = s.runRows(prog, input.data(), nullptr,
                               static_cast<int64_t>(input.size()));
  // The output's first row: the CLS position's embedding.
  return std::vector<float>(out, out + r.info.encoder_dim);
}

namespace {

// Runs a row program (project_chunk, score_chunk) on n rows of in_cols
// floats in blocks of max_tokens rows; returns n rows of its output.
std::vector<float> runBlocks(rt::SessionState &s, const rt::ProgramDesc &prog,
                             const float *rows, size_t n, const char *what) {
  const rt::ModelData &m = s.m;
  if (n > 0 && !rows)
    throw Error(std::string(what) + ": rows is null");
  const int64_t in_cols = s.ld(static_cast<uint32_t>(prog.input_buffer));
  const int64_t out_cols = s.ld(prog.logits_buffer);
  std::vector<float> result(n * static_cast<size_t>(out_cols));
  const int64_t total = static_cast<int64_t>(n);
  for (int64_t c = 0; c < total; c += prog.max_rows) {
    const int64_t T = std::min<int64_t>(prog.max_rows, total - c);
    const float *out = s.runRows(prog, nullptr, rows + c * in_cols, T);
    std::memcpy(result.data() + c * out_cols, out,
                static_cast<size_t>(T * out_cols) * sizeof(float));
  }
  (void)m;
  return result;
}

} // namespace

std::vector<float> Session::projectChunks(const float *rows, size_t n) {
  const rt::RefragDesc &r = refragOf(state_->m);
  return runBlocks(*state_, state_->m.programs[r.project_program], rows, n,
                   "projectChunks");
}

std::vector<float> Session::scoreChunks(const float *rows, size_t n) {
  const rt::RefragDesc &r = refragOf(state_->m);
  return runBlocks(*state_, state_->m.programs[r.score_program], rows, n,
                   "scoreChunks");
}

int64_t Session::position() const { return state_->pos; }
void Session::reset() { state_->reset(); }

void Session::rewind(int64_t position) {
  rt::SessionState &s = *state_;
  if (position < 0 || position > s.pos)
    throw Error("rewind: position " + std::to_string(position) +
                " is outside 0.." + std::to_string(s.pos) +
                " (the positions this session holds)");
  if (position == s.pos)
    return;
  if (s.loop) {
    auto &starts = s.loop->starts;
    // The step holding `position`: the last one starting at or before it.
    auto after =
        std::upper_bound(starts.begin(), starts.end(), position,
                         [](int64_t p, const rt::LoopState::StepStart &st) {
                           return p < st.pos;
                         });
    if (after == starts.begin())
      throw Error("internal: no step holds position " +
                  std::to_string(position));
    const rt::LoopState::StepStart &step = *(after - 1);
    if (step.pos != position) {
      const int64_t end = after == starts.end() ? s.pos : after->pos;
      throw Error("rewind: position " + std::to_string(position) +
                  " is inside a step of this looped model (positions " +
                  std::to_string(step.pos) + ".." + std::to_string(end - 1) +
                  "); it rewinds to the first position of a step, here " +
                  std::to_string(step.pos) + " (Session::rewindPoint)");
    }
    s.rewindLoop(static_cast<size_t>(after - 1 - starts.begin()));
    // As after a call that fed the kept positions: the latent of the last
    // one (the warm latent at the step's start) starts the next step.
    s.loop->have_warm = position > 0;
  }
  s.pos = position;
}

int64_t Session::rewindPoint(int64_t position) const {
  const rt::SessionState &s = *state_;
  position = std::clamp<int64_t>(position, 0, s.pos);
  if (!s.loop || position == s.pos)
    return position;
  const auto &starts = s.loop->starts;
  auto after = std::upper_bound(
      starts.begin(), starts.end(), position,
      [](int64_t p, const rt::LoopState::StepStart &st) { return p < st.pos; });
  return after == starts.begin() ? 0 : (after - 1)->pos;
}

void Session::writeTrace(const std::string &path) const {
  if (!state_->trace)
    throw Error("this session does not record a trace "
                "(enable SessionOptions::trace)");
  state_->trace->write(path);
}

const Model &Session::model() const { return *state_->model; }
Device Session::device() const {
  return state_->device ? Device::Cuda : Device::Cpu;
}
std::string Session::deviceName() const {
  if (state_->device)
    return "cuda: " + state_->device->deviceName();
  return std::string("cpu (") + activeIsaName() +
         (rt::cpu::bf16DotProducts() ? " with bf16 dot products" : "") + ", " +
         std::to_string(state_->threads) + " threads)";
}
std::string cudaUnavailableReason() { return rt::cudaUnavailableReason(); }
int Session::threads() const { return state_->threads; }
uint64_t Session::arenaBytes() const { return state_->m.arena_bytes; }
uint64_t Session::kvCacheBytes() const {
  const rt::SessionState &s = *state_;
  return s.m.kv_bytes +
         (s.loop ? s.loop->slots_allocated * s.m.loop_kv_bytes : 0);
}
uint64_t Session::kvBytesPerToken() const { return state_->kvBytesPerToken(); }
const std::vector<int> &Session::iterationsPerStep() const {
  return state_->steps;
}
const std::vector<std::vector<double>> &Session::exitValues() const {
  return state_->values;
}
int64_t Session::graphLaunches() const {
  return state_->device ? state_->device->graphLaunches() : 0;
}

const char *exitCriterionName(ExitCriterion criterion) {
  switch (criterion) {
  case ExitCriterion::None:
    return "none";
  case ExitCriterion::Kl:
    return "kl";
  case ExitCriterion::MinpKl:
    return "minp-kl";
  case ExitCriterion::EntropyDiff:
    return "entropy-diff";
  case ExitCriterion::LatentDiff:
    return "latent-diff";
  case ExitCriterion::Cosine:
    return "cosine";
  case ExitCriterion::ArgmaxStability:
    return "argmax-stability";
  }
  return "?";
}

std::optional<ExitCriterion> parseExitCriterion(const std::string &name) {
  for (ExitCriterion c :
       {ExitCriterion::None, ExitCriterion::Kl, ExitCriterion::MinpKl,
        ExitCriterion::EntropyDiff, ExitCriterion::LatentDiff,
        ExitCriterion::Cosine, ExitCriterion::ArgmaxStability})
    if (name == exitCriterionName(c))
      return c;
  return std::nullopt;
}

double defaultExitThreshold(ExitCriterion criterion) {
  switch (criterion) {
  case ExitCriterion::Kl:
  case ExitCriterion::EntropyDiff:
  case ExitCriterion::Cosine:
    return 1e-3;
  case ExitCriterion::MinpKl:
    return 1e-5;
  case ExitCriterion::LatentDiff:
    return 0.03;
  case ExitCriterion::ArgmaxStability:
    return 5.0;
  case ExitCriterion::None:
    break;
  }
  return 0.0;
}

const char *kvPolicyNames() {
  return "full, skip, latest-m4, available-m4, always-last-m4, compress-sN, "
         "compress-rN, compress-anchor (N >= 1)";
}

const char *activeIsaName() { return rt::cpu::isaName(rt::cpu::activeIsa()); }

} // namespace loom
