// The session: activation arena, KV caches, and the executor that runs the
// verified dispatch list of the "forward" program one step at a time.
#include "artifact.h"
#include "cpu/kernels.h"
#include "trace.h"

#include <tbb/info.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cstring>
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

} // namespace

struct SessionState {
  SessionState(std::shared_ptr<const Model> model_, SessionOptions options)
      : model(std::move(model_)), m(model->data()),
        threads(resolveThreads(options.threads)), arena(threads),
        activations(m.arena_bytes, "the activation arena"),
        kv(m.kv_bytes, "the KV caches") {
    float *p = reinterpret_cast<float *>(kv.data());
    for (const KvCacheDesc &c : m.kv_caches) {
      int64_t n = c.max_seq * c.kv_heads * c.head_dim;
      caches.push_back({p, p + n, c.max_seq, c.kv_heads * c.head_dim});
      p += 2 * n;
    }
    if (options.trace)
      trace = std::make_unique<TraceRecorder>();
  }

  float *buffer(uint32_t b) const {
    return reinterpret_cast<float *>(activations.data() + m.buffers[b].offset);
  }
  int64_t ld(uint32_t b) const { return m.buffers[b].row_elems; }

  void run(const DispatchDesc &d, const int32_t *tokens, int64_t T,
           int64_t logit_begin, int64_t logit_end);
  void step(const int32_t *tokens, int64_t T, int64_t logit_begin,
            int64_t logit_end);

  std::shared_ptr<const Model> model;
  const ModelData &m;
  int threads;
  tbb::task_arena arena;
  PageMemory activations;
  PageMemory kv;
  std::vector<cpu::KvView> caches;
  int64_t pos = 0;
  std::vector<float> logits;
  std::unique_ptr<TraceRecorder> trace;
};

// Runs one dispatch on T rows at positions pos .. pos + T - 1. The Logits
// kernel computes only rows [logit_begin, logit_end).
void SessionState::run(const DispatchDesc &d, const int32_t *tokens, int64_t T,
                       int64_t logit_begin, int64_t logit_end) {
  const auto &in = d.inputs;
  const auto &out = d.outputs;
  const auto &w = d.weights;
  const auto &ip = d.iparams;
  switch (d.kernel) {
  case Kernel::Embed:
    cpu::embed(tokens, T, w[0], ld(out[0]), buffer(out[0]));
    break;
  case Kernel::RmsNorm:
    cpu::rmsNorm(buffer(in[0]), w[0], buffer(out[0]), T, ld(in[0]),
                 d.fparams[0]);
    break;
  case Kernel::MatMul:
    cpu::matmul(buffer(in[0]), ld(in[0]), w[0], buffer(out[0]), ld(out[0]), T,
                ld(in[0]), ld(out[0]), !ip.empty() && ip[0] != 0);
    break;
  case Kernel::Rope:
    if (!in.empty() && in[0] != out[0])
      std::memcpy(buffer(out[0]), buffer(in[0]),
                  static_cast<size_t>(T * ld(out[0])) * sizeof(float));
    cpu::rope(buffer(out[0]), ld(out[0]), T, ip[0], ip[1], pos, d.fparams[0]);
    break;
  case Kernel::Attention:
    cpu::attention(buffer(in[0]), ld(in[0]), buffer(in[1]), ld(in[1]),
                   buffer(in[2]), ld(in[2]), buffer(out[0]), ld(out[0]), T, pos,
                   ip[1], ip[2], ip[3], caches[ip[0]]);
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
    cpu::matmul(x, ld(in[0]), w[0], qkv, lq, T, ld(in[0]), qd + 2 * kd, false);
    cpu::rope(qkv, lq, T, qd, hd, pos, theta);
    cpu::rope(qkv + qd, lq, T, kd, hd, pos, theta);
    cpu::attention(qkv, lq, qkv + qd, lq, qkv + qd + kd, lq, attn, la, T, pos,
                   nh, nkv, hd, caches[ip[0]]);
    cpu::matmul(attn, la, w[1], y, ld(out[0]), T, qd, ld(out[0]),
                ip.size() > 4 && ip[4] != 0);
    break;
  }
  }
}

void SessionState::step(const int32_t *tokens, int64_t T, int64_t logit_begin,
                        int64_t logit_end) {
  const ProgramDesc &prog = m.forward();
  arena.execute([&] {
    for (const DispatchDesc &d : prog.dispatches) {
      if (!trace) {
        run(d, tokens, T, logit_begin, logit_end);
        continue;
      }
      auto begin = TraceRecorder::Clock::now();
      run(d, tokens, T, logit_begin, logit_end);
      int64_t rows = d.kernel == Kernel::Logits ? logit_end - logit_begin : T;
      trace->record(d.name, kernelName(d.kernel), rows, pos, begin,
                    TraceRecorder::Clock::now());
    }
  });
}

} // namespace rt

Session::Session(std::shared_ptr<const Model> model, SessionOptions options) {
  if (!model)
    throw Error("session needs a model");
  state_ = std::make_unique<rt::SessionState>(std::move(model), options);
}

Session::~Session() = default;

Logits Session::forward(const int32_t *tokens, size_t n, bool all_logits) {
  rt::SessionState &s = *state_;
  const rt::ModelData &m = s.m;
  const int64_t vocab = m.config.vocab_size;
  if (n == 0)
    throw Error("forward needs at least one token");
  if (!tokens)
    throw Error("forward: tokens is null");
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      throw Error("token id " + std::to_string(tokens[i]) +
                  " is outside the vocabulary (0.." +
                  std::to_string(vocab - 1) + ")");
  if (n > static_cast<size_t>(m.context_length - s.pos))
    throw Error("context full: position " +
                std::to_string(s.pos + static_cast<int64_t>(n) - 1) +
                " reaches max_seq " + std::to_string(m.context_length));

  const int64_t total = static_cast<int64_t>(n);
  const int64_t rows = all_logits ? total : 1;
  s.logits.resize(static_cast<size_t>(rows * vocab));
  const float *logits_buf = s.buffer(m.forward().logits_buffer);
  for (int64_t c = 0; c < total; c += m.max_tokens) {
    const int64_t T = std::min<int64_t>(m.max_tokens, total - c);
    const bool last_chunk = c + T == total;
    // Rows of this chunk whose logits the caller gets back.
    const int64_t begin = all_logits ? 0 : last_chunk ? T - 1 : T;
    s.step(tokens + c, T, begin, T);
    s.pos += T;
    if (begin < T)
      std::memcpy(s.logits.data() + (all_logits ? c : 0) * vocab,
                  logits_buf + begin * vocab,
                  static_cast<size_t>((T - begin) * vocab) * sizeof(float));
  }
  return Logits{s.logits.data(), rows, vocab};
}

int64_t Session::position() const { return state_->pos; }
void Session::reset() { state_->pos = 0; }

void Session::writeTrace(const std::string &path) const {
  if (!state_->trace)
    throw Error("this session does not record a trace "
                "(enable SessionOptions::trace)");
  state_->trace->write(path);
}

const Model &Session::model() const { return *state_->model; }
int Session::threads() const { return state_->threads; }
uint64_t Session::arenaBytes() const { return state_->m.arena_bytes; }
uint64_t Session::kvCacheBytes() const { return state_->m.kv_bytes; }

const char *activeIsaName() { return rt::cpu::isaName(rt::cpu::activeIsa()); }

} // namespace loom
