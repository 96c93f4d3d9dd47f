// The CUDA backend (libloomrt_cuda.so): runs a verified artifact's programs
// on one GPU. Weights are uploaded once (f32 or bf16 as stored), the
// activation arena and the KV caches live on the device, GEMMs go through
// cuBLAS (a warp-per-column GEMV for the few rows of a decode step), and a
// decode step (one token: forward, sampling, copy of the id) is captured
// once as a CUDA graph and replayed at every position. All work is ordered
// on one stream in the dispatch order of the schedule.
#include "../src/device.h"
#include "../src/trace.h"
#include "kernels.cuh"
#include "persistent.h"

#include "loom/error.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace loom::rt::cuda {
namespace {

[[noreturn]] void fail(const std::string &what, cudaError_t e) {
  throw Error("CUDA error in " + what + ": " + cudaGetErrorString(e));
}
void check(cudaError_t e, const char *what) {
  if (e != cudaSuccess)
    fail(what, e);
}
void checkBlas(cublasStatus_t s, const char *what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS error in ") + what + ": status " +
                std::to_string(static_cast<int>(s)));
}

std::string mib(uint64_t bytes) {
  char b[64];
  std::snprintf(b, sizeof b, "%.1f MiB", bytes / 1048576.0);
  return b;
}

// An on/off environment variable of the backend: "0" or "1", `dflt` when
// unset; any other value is an error naming it.
bool onOff(const char *var, bool dflt) {
  const char *e = std::getenv(var);
  if (!e)
    return dflt;
  const std::string v = e;
  if (v != "0" && v != "1")
    throw Error(std::string(var) + "=" + v + ": expected 0 or 1");
  return v == "1";
}

// Rows at or below this run the GEMV kernel (and the split attention);
// more go to cuBLAS.
constexpr int64_t kGemvRows = kGemvMaxRows;

class CudaExecutor final : public DeviceExecutor {
public:
  CudaExecutor(const ModelData &m, int device, TraceRecorder *trace,
               LoopKvSource *loop_kv);
  ~CudaExecutor() override;

  void forward(const int32_t *tokens, const float *const *embeddings, int64_t T,
               int64_t pos, int64_t logit_begin, int64_t logit_end,
               float *logits) override;
  int32_t forwardSample(int32_t token, int64_t pos, float temperature,
                        float top_p, float coin) override;
  int32_t sampleRow(int64_t row, float temperature, float top_p,
                    float coin) override;
  void runRows(const ProgramDesc &prog, const int32_t *tokens,
               const float *rows, int64_t T, float *out) override;
  void beginStep(const int32_t *tokens, int64_t T, int64_t pos) override {
    uploadStep(pos, T, tokens);
  }
  int64_t run(const ProgramDesc &prog, size_t begin, size_t end, int64_t T,
              int64_t logit_begin, int64_t logit_end,
              const float *const *embeddings) override;
  void upload(uint32_t b, const float *rows, int64_t n) override {
    check(cudaMemcpyAsync(buffer(b), rows, size_t(n * ld(b)) * sizeof(float),
                          cudaMemcpyHostToDevice, stream_),
          "row upload");
  }
  void download(uint32_t b, int64_t row, int64_t n, float *out) override {
    check(cudaMemcpyAsync(out, buffer(b) + row * ld(b),
                          size_t(n * ld(b)) * sizeof(float),
                          cudaMemcpyDeviceToHost, stream_),
          "row download");
    sync("row download");
  }
  void copyRows(uint32_t dst, uint32_t src, int64_t n) override {
    check(cudaMemcpyAsync(buffer(dst), buffer(src),
                          size_t(n * ld(dst)) * sizeof(float),
                          cudaMemcpyDeviceToDevice, stream_),
          "row copy");
  }
  bool capturesLoopSteps() const override { return loop_graph_ && !trace_; }
  void loopStepGraph(int32_t token, int64_t pos, const float *state,
                     const std::vector<int32_t> &slots) override;
  void loopIterationGraph(const std::vector<int32_t> &slots,
                          bool with_tail) override;
  int64_t graphLaunches() const override { return graph_launches_; }
  uint64_t deviceBytes() const override { return device_bytes_; }
  std::string deviceName() const override { return name_; }

private:
  void *alloc(uint64_t bytes, const std::string &what);
  float *buffer(uint32_t b) const {
    return reinterpret_cast<float *>(arena_ + m_.buffers[b].offset);
  }
  int64_t ld(uint32_t b) const { return m_.buffers[b].row_elems; }
  // A rope dispatch's frequency factors in device memory (its fparams after
  // theta; Llama 3.1's rope scaling), or null when it has none.
  const float *ropeFactors(const DispatchDesc &d) const {
    auto it = rope_factors_.find(&d);
    return it == rope_factors_.end() ? nullptr : it->second;
  }
  // Slot `slot` of a loop cache shaped like c (storage on first use).
  DeviceCache &loopSlot(int64_t slot, const KvCacheDesc &c);
  // While loopStepGraph enqueues its step: the slot loop cache `cache`
  // writes and reads whole at the running iteration; otherwise null.
  const DeviceCache *graphSlot(int64_t cache) const {
    if (!step_slots_ || m_.kv_caches[cache].loop_layer < 0)
      return nullptr;
    const int64_t layers = int64_t(loop_cache_of_layer_.size());
    return &loop_slots_[size_t(step_slots_[step_iteration_ * layers +
                                           m_.kv_caches[cache].loop_layer])];
  }
  // Attention of a looped block's core layer: the session's KV policy
  // picks the slots (LoopKvSource), their storage lives here.
  void loopAttend(uint32_t cache, const float *q, int64_t ldq, const float *k,
                  int64_t ldk, const float *v, int64_t ldv, float *out,
                  int64_t ldo, int64_t T, int64_t nh, int64_t nkv, int64_t hd,
                  int64_t window);
  void launch(const DispatchDesc &d, int64_t T, int64_t logit_begin,
              int64_t logit_end);
  // Launches one of our kernels on the stream, with programmatic dependent
  // launch (kernels.cuh, pdlWait) unless LOOM_CUDA_PDL=0.
  template <typename... Params, typename... Args>
  void launchKernel(void (*kernel)(Params...), dim3 grid, dim3 block,
                    size_t smem, Args &&...args) {
    launchClustered(kernel, grid, block, smem, 1, std::forward<Args>(args)...);
  }
  // launchKernel in thread block clusters of cluster_z blocks along z (1:
  // no clusters).
  template <typename... Params, typename... Args>
  void launchClustered(void (*kernel)(Params...), dim3 grid, dim3 block,
                       size_t smem, unsigned cluster_z, Args &&...args) {
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = pdl_ ? 1 : 0;
    attr[1].id = cudaLaunchAttributeClusterDimension;
    attr[1].val.clusterDim.x = 1;
    attr[1].val.clusterDim.y = 1;
    attr[1].val.clusterDim.z = cluster_z;
    launchWith(kernel, grid, block, smem, attr, cluster_z > 1 ? 2 : 1,
               std::forward<Args>(args)...);
  }
  // A cooperative launch (every block resident at once, or the launch
  // fails), without programmatic dependent launch: the persistent decode
  // kernel.
  template <typename... Params, typename... Args>
  void launchCooperative(void (*kernel)(Params...), dim3 grid, dim3 block,
                         size_t smem, Args &&...args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    launchWith(kernel, grid, block, smem, attr, 1, std::forward<Args>(args)...);
  }
  template <typename... Params, typename... Args>
  void launchWith(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                  cudaLaunchAttribute *attrs, unsigned n_attrs,
                  Args &&...args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream_;
    cfg.attrs = attrs;
    cfg.numAttrs = n_attrs;
    check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...),
          "kernel launch");
#ifdef LOOM_CUDA_TIMELINE
    if (tl_capture_)
      tl_capture_->push_back(
          {tl_label_, tl_dispatch_, grid.x * grid.y * grid.z});
#endif
  }
  // Launches dispatch i together with the next ones as one kernel where
  // the pattern allows (Add + RmsNorm of the sum; two GEMVs of the same
  // rows + SiluMul of their outputs) and returns how many it covered, or 0.
  size_t launchFused(const ProgramDesc &prog, size_t i, size_t end, int64_t T);
  bool overlap(uint32_t a, uint32_t b) const {
    return buffersOverlap(m_, a, b);
  }
  // cls: the GEMV's kernel class (kOmitQkv, kOmitOut, kOmitMatMul,
  // kOmitLogits), for LOOM_CUDA_GEMV's per-class form.
  void gemm(unsigned cls, const float *x, int64_t ldx, uint32_t weight,
            float *y, int64_t ldy, int64_t T, int64_t K, int64_t N,
            bool accumulate);
  void qkvAttention(const DispatchDesc &d, int64_t T);
  // LOOM_CUDA_PERSISTENT=B (an experiment until measured): the one-row
  // layers of the forward program as persistentDecodeKernel's stages
  // (kernels.cuh), planned at construction where every dispatch from the
  // first RmsNorm to the final norm takes a form the kernel runs (GEMVs
  // of one weight type, f32 or bf16, in whole 16-byte loads; the fused
  // q|k|v attention with its RoPE folded; no biases; no looped block);
  // run() launches it in their place for one-row steps.
  int persistent_blocks_ = 0; // B blocks a multiprocessor (0: off)
  struct PersistentRun {
    size_t begin = 0, end = 0;               // the dispatches it covers
    const PersistentStage *stages = nullptr; // device
    int count = 0;
    unsigned grid = 0;
    size_t smem = 0;
    void (*kernel)(const StepParams *, const PersistentStage *, int,
                   GridBarrier *, float *, int *) = nullptr;
  };
  std::optional<PersistentRun> persistent_;
  GridBarrier *persistent_barrier_ = nullptr; // device, zeroed once
  float *persistent_zero_ = nullptr; // a row of zeros: a plain norm's b
  // Plans persistent_; returns why not where it cannot.
  std::string planPersistent(const ProgramDesc &prog);
  void disablePersistent(const char *why) {
    std::fprintf(stderr,
                 "loom: LOOM_CUDA_PERSISTENT=%d: turned off (%s); the layers "
                 "run as launches\n",
                 persistent_blocks_, why);
    persistent_.reset();
    // A step graph captured with the kernel would still replay it.
    destroyStepGraphs();
  }
  void destroyStepGraphs() {
    for (cudaGraphExec_t *g : {&decode_graph_, &forward_graph_}) {
      if (*g)
        cudaGraphExecDestroy(*g); // one in flight is freed when it ends
      *g = nullptr;
    }
  }
  // Dispatches i .. i + 2 as one gate/up GEMV + SiLU (launchFused).
  size_t gateUp(const ProgramDesc &prog, size_t i, size_t end, int64_t T);
  void attention(int64_t cache, const float *q, int64_t ldq, const float *k,
                 int64_t ldk, const float *v, int64_t ldv, float *out,
                 int64_t ldo, int64_t T, int64_t nh, int64_t nkv, int64_t hd,
                 int64_t window);
  void uploadStep(int64_t pos, int64_t T, const int32_t *tokens);
  // window: the sliding window (0: none), as attentionWindow() reads it.
  void attendCache(const DeviceCache &c, const float *q, int64_t ldq,
                   float *out, int64_t ldo, int64_t T, int64_t nh, int64_t nkv,
                   int64_t hd, int64_t window,
                   const RopeFold &fold = RopeFold());
  // resident: blocks of the split kernel one multiprocessor holds at once.
  int splitsFor(int64_t nh, int64_t T, int resident) const;
  // attentionSplitKernel's resident blocks per multiprocessor by head_dim
  // (asked at construction for the model's head dims).
  std::array<int, 32 * kAttnMaxDimsPerLane + 1> attn_resident_{};
  // The decode GEMV's configuration for an N x K matrix of kernel class
  // cls (kernels.cuh): gemvConfigFor's choice, or LOOM_CUDA_GEMV's for
  // every matrix (U,S) or for the class (CLASS:U,S;...).
  GemvConfig gemvConfig(unsigned cls, int64_t N, int64_t K) const {
    GemvConfig c = gemv_forced_ ? gemv_override_ : gemvConfigFor(N, K);
    for (const auto &[k, config] : gemv_class_)
      if (k == cls)
        c = config;
    c.ahead = gemv_ahead_;
    return c;
  }
  void sync(const char *what) { check(cudaStreamSynchronize(stream_), what); }
  // Enqueues `work` on the stream: as a CUDA graph captured the first time
  // (into `graph`) and replayed afterwards, or directly in traced sessions
  // (one event per dispatch).
  template <typename F> void runCaptured(cudaGraphExec_t &graph, F &&work) {
    if (trace_) {
      work();
      return;
    }
    if (graph || !persistent_) {
      captureAndLaunch(graph, work);
      return;
    }
    // A new graph with the persistent kernel (an experiment): where its
    // capture, instantiation or first launch fails, the kernel is turned
    // off and the graph captured again without it.
    try {
      captureAndLaunch(graph, work);
    } catch (const Error &e) {
      if (graph)
        cudaGraphExecDestroy(graph);
      graph = nullptr;
      cudaGetLastError();
      if (persistent_)
        disablePersistent(e.what());
      captureAndLaunch(graph, work);
    }
  }
  template <typename F>
  void captureAndLaunch(cudaGraphExec_t &graph, F &&work) {
    if (!graph) {
      cudaGraph_t g = nullptr;
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
            "cudaStreamBeginCapture");
#ifdef LOOM_CUDA_TIMELINE
      std::vector<TimelineLaunch> launches;
      tl_capture_ = tl_path_.empty() ? nullptr : &launches;
#endif
      try {
        work();
      } catch (...) {
#ifdef LOOM_CUDA_TIMELINE
        tl_capture_ = nullptr;
#endif
        if (cudaStreamEndCapture(stream_, &g) == cudaSuccess && g)
          cudaGraphDestroy(g);
        throw;
      }
#ifdef LOOM_CUDA_TIMELINE
      tl_capture_ = nullptr;
#endif
      check(cudaStreamEndCapture(stream_, &g), "cudaStreamEndCapture");
      const cudaError_t e = cudaGraphInstantiate(&graph, g, 0);
      cudaGraphDestroy(g);
      check(e, "cudaGraphInstantiate");
#ifdef LOOM_CUDA_TIMELINE
      tl_launches_[graph] = std::move(launches);
#endif
    }
#ifdef LOOM_CUDA_TIMELINE
    if (!tl_path_.empty()) // armed for this replay: blocks record
      timelineSink(tl_armed_);
#endif
    check(cudaGraphLaunch(graph, stream_), "cudaGraphLaunch");
    ++graph_launches_;
#ifdef LOOM_CUDA_TIMELINE
    if (!tl_path_.empty())
      timelineCollect(graph);
#endif
  }
#ifdef LOOM_CUDA_TIMELINE
  // LOOM_CUDA_TIMELINE=FILE (this build, libloomrt_cuda_timeline.so, only):
  // every graph replay's kernel blocks record their times (kernels.cuh,
  // KernelScope); after each replay they are read back and attributed to
  // the launches recorded while the graph was captured (timeline.h). At
  // the end FILE gets a Chrome / Perfetto trace of the replays' launches
  // and their summary, and stderr the summary's table.
  static constexpr unsigned kTimelineCapacity = 1u << 18; // blocks a replay
  static constexpr size_t kTimelineMaxEvents = 40000;     // ~9 MB of JSON
  // The replay whose blocks the trace shows one by one (past the first
  // steps' warm-up).
  static constexpr size_t kTimelineBlockReplay = 16;
  // Of its launches, as many as hold this many blocks (the 1B's first five
  // layers of its 72,000 blocks; about 3 MB of JSON).
  static constexpr size_t kTimelineBlockEvents = 20000;
  std::string tl_path_;
  TimelineRecord *tl_records_ = nullptr;
  // g_timeline during a replay (count from 0) and between replays
  // (capacity 0: the launches outside graphs record nothing).
  TimelineSink tl_armed_{}, tl_disarmed_{};
  static constexpr TimelineSink kNoSink{nullptr, 0, 0};
  // Sets g_timeline in stream order; s must outlive the copy (a member).
  void timelineSink(const TimelineSink &s) {
    check(cudaMemcpyToSymbolAsync(g_timeline, &s, sizeof s, 0,
                                  cudaMemcpyHostToDevice, stream_),
          "LOOM_CUDA_TIMELINE");
  }
  std::vector<TimelineLaunch> *tl_capture_ = nullptr;
  std::map<cudaGraphExec_t, std::vector<TimelineLaunch>> tl_launches_;
  std::vector<TimelineRecord> tl_host_;
  TimelineSummary tl_summary_;
  std::string tl_events_;
  size_t tl_event_count_ = 0;
  uint64_t tl_t0_ = 0;
  std::string tl_label_, tl_dispatch_;
  void timelineLabel(const char *label) { tl_label_ = label; }
  void timelineDispatch(const std::string &name, const char *label) {
    tl_dispatch_ = name;
    tl_label_ = label;
  }
  void timelineStart();
  void timelineCollect(cudaGraphExec_t graph);
  void timelineWrite() noexcept;
#else
  // The labels of launches in the timeline build; nothing here.
  void timelineLabel(const char *) {}
  void timelineDispatch(const std::string &, const char *) {}
#endif
  void release(); // frees everything; safe on a half-built executor
  void traceMark(size_t dispatch);
  void traceFlush(const ProgramDesc &prog, int64_t pos);

  const ModelData &m_;
  TraceRecorder *trace_;
  LoopKvSource *loop_kv_;
  std::vector<DeviceCache> loop_slots_;       // by slot index, allocated on use
  std::vector<uint32_t> loop_cache_of_layer_; // core layer -> its KV cache
  // One-row looped steps with a fixed iteration count as one graph
  // (loopStepGraph); LOOM_CUDA_LOOP_GRAPH=0: piece by piece.
  bool loop_graph_ = true;
  // Captured looped steps and iterations by key: {0, slots...} a whole
  // step, {1 + tail, slots...} one iteration (runLoopGraph).
  std::map<std::vector<int32_t>, cudaGraphExec_t> loop_graphs_;
  const int32_t *step_slots_ = nullptr; // while enqueuing one of them
  int64_t step_iteration_ = 0;
  template <typename F> void runLoopGraph(std::vector<int32_t> key, F &&work);
  const float **d_rows_ = nullptr; // K then V row pointers per position
  std::vector<const float *> rows_host_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::vector<void *> allocations_;
  uint64_t device_bytes_ = 0;
  std::vector<DeviceTensor> tensors_;
  char *arena_ = nullptr;
  std::vector<DeviceCache> caches_;
  StepParams *d_step_ = nullptr; // device
  StepParams *h_step_ = nullptr; // pinned host mirror
  size_t step_bytes_ = 0;
  int32_t *d_next_ = nullptr;
  int32_t *h_next_ = nullptr; // pinned
  float *h_rows_ = nullptr;   // pinned staging for input rows
  size_t h_rows_floats_ = 0;
  __nv_bfloat16 *xb_ = nullptr; // bf16 activations for cuBLAS
  size_t xb_elems_ = 0;
  size_t attn_smem_ = 0;
  float *attn_ws_ = nullptr;     // decode attention's per-split partials
  int *attn_counters_ = nullptr; // splits done per (row, head); 0 between
  int sm_count_ = 1;
  bool pdl_ = true; // programmatic dependent launch (LOOM_CUDA_PDL=0: off)
  bool rope_fold_ = true;      // LOOM_CUDA_ROPE_FOLD=0: off
  int attn_blocks_per_sm_ = 1; // LOOM_CUDA_ATTN_BLOCKS=N
  int attn_splits_ = 0;        // LOOM_CUDA_ATTN_SPLITS=N (0: splitsFor's)
  // LOOM_CUDA_ATTN_MERGE=cluster: decode attention's splits merged inside a
  // thread block cluster (an experiment; default: global, the last split).
  bool attn_cluster_ = false;
  // LOOM_CUDA_ATTN_EARLY=1: decode attention's cached K and V rows loaded
  // before the programmatic wait, batches double-buffered (an experiment).
  bool attn_early_ = false;
  // LOOM_CUDA_ATTN_WARPS=16: the split decode attention's blocks of 16
  // warps instead of 8 (an experiment).
  bool attn_wide_ = false;
  // Calls f(std::bool_constant<EARLY>, std::integral_constant<int, NW>)
  // with the split kernel's instantiation these settings choose.
  template <typename F> void withSplitAttention(F &&f) const {
    using Yes = std::true_type;
    using No = std::false_type;
    using W16 = std::integral_constant<int, 16>;
    using W8 = std::integral_constant<int, kAttnSplitWarps>;
    if (attn_wide_)
      attn_early_ ? f(Yes(), W16()) : f(No(), W16());
    else
      attn_early_ ? f(Yes(), W8()) : f(No(), W8());
  }
  // Attention of steps over kGemvRows rows (LOOM_CUDA_PREFILL_ATTN=
  // auto|tiled|rows|tc; tc: the tensor-core kernel where the head_dim has
  // an instantiation, an experiment until measured).
  enum class PrefillAttention { Auto, Tiled, Rows, TensorCores };
  PrefillAttention prefill_attn_ = PrefillAttention::Auto;
  bool gemv_forced_ = false; // LOOM_CUDA_GEMV=U,S
  // LOOM_CUDA_GEMV_AHEAD=1: one-row GEMVs issue two groups of loads
  // before the programmatic wait (gemvColumn's A; an experiment).
  bool gemv_ahead_ = false;
  // LOOM_CUDA_GEMV_BULK=NS: one-row bf16 GEMVs (and gate/up pairs) of the
  // shapes gemvBulkKernel takes stream through NS stages of shared memory
  // (an experiment; 0: off).
  int gemv_bulk_ = 0;
  // gemvBulkKernel for a one-row bf16 GEMV (M = 1: y (+)= x W1^T; 2: gate
  // and up) where LOOM_CUDA_GEMV_BULK is on and it takes the shape; false
  // where it did not launch.
  bool gemvBulk(const float *x, const DeviceTensor &w1, const DeviceTensor *w3,
                float *a, float *b, float *y, int64_t T, int64_t K, int64_t N,
                bool accumulate) {
    if (gemv_bulk_ == 0 || T != 1 || w1.dtype != WeightType::BF16 ||
        (reinterpret_cast<uintptr_t>(x) |
         reinterpret_cast<uintptr_t>(w1.native) |
         reinterpret_cast<uintptr_t>(w3 ? w3->native : nullptr)) %
                16 !=
            0)
      return false;
    return withGemvBulk(gemv_bulk_, K, w3 ? 2 : 1, [&](auto kernel) {
      launchKernel(
          kernel, unsigned(sm_count_), kBulkThreads, gemvBulkSmem(gemv_bulk_),
          x, static_cast<const __nv_bfloat16 *>(w1.native),
          static_cast<const __nv_bfloat16 *>(w3 ? w3->native : nullptr), a, b,
          y, int(N), int(accumulate));
    });
  }
  GemvConfig gemv_override_;
  std::vector<std::pair<unsigned, GemvConfig>> gemv_class_; // CLASS:U,S;...
  // LOOM_CUDA_OMIT=CLASS,...: kernel classes left out, to measure what each
  // costs inside the graphs (bench_cuda.py --breakdown); outputs are wrong.
  enum Omit : unsigned {
    kOmitNorm = 1,      // norm: RmsNorm, LayerNorm, Add + RmsNorm
    kOmitQkv = 2,       // qkv: the packed q|k|v projection (and its bias)
    kOmitAttention = 4, // attention: RoPE, KV append and attention
    kOmitOut = 8,       // out: the attention's output projection
    kOmitGateUp = 16,   // gate_up: gate and up MatMuls + SiluMul, fused or not
    kOmitMatMul = 32,   // matmul: every other MatMul (the FFN's down)
    kOmitLogits = 64,   // logits: the classifier
  };
  unsigned omit_ = 0;
  bool omitted(unsigned c) const { return (omit_ & c) != 0; }
  // The classes' names (LOOM_CUDA_OMIT, LOOM_CUDA_GEMV, the timeline).
  static constexpr std::pair<const char *, unsigned> kClasses[] = {
      {"norm", kOmitNorm},           {"qkv", kOmitQkv},
      {"attention", kOmitAttention}, {"out", kOmitOut},
      {"gate_up", kOmitGateUp},      {"matmul", kOmitMatMul},
      {"logits", kOmitLogits}};
  static const char *className(unsigned c) {
    for (const auto &[name, bit] : kClasses)
      if (bit == c)
        return name;
    return "?";
  }
  int max_smem_ = 48 * 1024;
  std::vector<cudaEvent_t> trace_events_; // reused across steps
  std::vector<size_t> trace_marks_;       // dispatch of each event
  std::vector<int64_t> trace_rows_;
  TraceRecorder::Clock::time_point trace_host_start_;
  int64_t graph_launches_ = 0;
  std::map<const DispatchDesc *, const float *> rope_factors_;
  cudaGraphExec_t decode_graph_ = nullptr;  // forward + sample, one token
  cudaGraphExec_t forward_graph_ = nullptr; // forward, one token
};

void *CudaExecutor::alloc(uint64_t bytes, const std::string &what) {
  void *p = nullptr;
  cudaError_t e = cudaMalloc(&p, std::max<uint64_t>(bytes, 256));
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw OutOfMemoryError("out of CUDA memory: need " + mib(bytes) + " for " +
                           what + " (" + mib(free_b) + " free of " +
                           mib(total_b) + " on " + name_ + ")");
  }
  allocations_.push_back(p);
  device_bytes_ += bytes;
  return p;
}

CudaExecutor::CudaExecutor(const ModelData &m, int device, TraceRecorder *trace,
                           LoopKvSource *loop_kv)
    : m_(m), trace_(trace), loop_kv_(loop_kv) {
  int count = 0;
  check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (device < 0 || device >= count)
    throw Error("CUDA device " + std::to_string(device) + " does not exist (" +
                std::to_string(count) + " device(s))");
  check(cudaSetDevice(device), "cudaSetDevice");
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  name_ = std::string(prop.name) + " (device " + std::to_string(device) +
          ", sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
          ")";
  max_smem_ = static_cast<int>(prop.sharedMemPerBlockOptin);
  sm_count_ = prop.multiProcessorCount;
  if (const char *e = std::getenv("LOOM_CUDA_PDL"))
    pdl_ = std::string(e) != "0";
  if (const char *e = std::getenv("LOOM_CUDA_ATTN_BLOCKS")) {
    const int b = std::atoi(e);
    if (b < 1 || b > 16)
      throw Error(std::string("LOOM_CUDA_ATTN_BLOCKS=") + e +
                  ": expected 1 to 16 blocks per multiprocessor");
    attn_blocks_per_sm_ = b;
  }
  if (const char *e = std::getenv("LOOM_CUDA_ATTN_SPLITS")) {
    const int n = std::atoi(e);
    if (std::to_string(n) != e || n < 1 || n > kMaxAttnSplits)
      throw Error(std::string("LOOM_CUDA_ATTN_SPLITS=") + e +
                  ": expected 1 to " + std::to_string(kMaxAttnSplits) +
                  " splits");
    attn_splits_ = n;
  }
  if (const char *e = std::getenv("LOOM_CUDA_PREFILL_ATTN")) {
    const std::string v = e;
    if (v == "tiled")
      prefill_attn_ = PrefillAttention::Tiled;
    else if (v == "rows")
      prefill_attn_ = PrefillAttention::Rows;
    else if (v == "tc")
      prefill_attn_ = PrefillAttention::TensorCores;
    else if (v != "auto")
      throw Error("LOOM_CUDA_PREFILL_ATTN=" + v +
                  ": expected auto, tiled, rows or tc");
  }
  if (const char *e = std::getenv("LOOM_CUDA_ROPE_FOLD"))
    rope_fold_ = std::string(e) != "0";
  if (const char *e = std::getenv("LOOM_CUDA_ATTN_MERGE")) {
    const std::string v = e;
    if (v != "global" && v != "cluster")
      throw Error("LOOM_CUDA_ATTN_MERGE=" + v + ": expected global or cluster");
    attn_cluster_ = v == "cluster";
    if (attn_cluster_ && prop.major < 9)
      throw Error("LOOM_CUDA_ATTN_MERGE=cluster needs thread block clusters "
                  "(sm_90), this device is " +
                  name_);
  }
  attn_early_ = onOff("LOOM_CUDA_ATTN_EARLY", attn_early_);
  if (const char *e = std::getenv("LOOM_CUDA_ATTN_WARPS")) {
    const std::string v = e;
    if (v != "8" && v != "16")
      throw Error("LOOM_CUDA_ATTN_WARPS=" + v + ": expected 8 or 16");
    attn_wide_ = v == "16";
  }
  if (const char *e = std::getenv("LOOM_CUDA_OMIT"); e && *e) {
    std::string list = e;
    size_t at = 0;
    while (at <= list.size()) {
      const size_t comma = std::min(list.find(',', at), list.size());
      const std::string name = list.substr(at, comma - at);
      unsigned bit = 0;
      for (const auto &[n, b] : kClasses)
        if (name == n)
          bit = b;
      if (!bit)
        throw Error("LOOM_CUDA_OMIT=" + list + ": unknown kernel class '" +
                    name +
                    "' (expected norm, qkv, attention, out, gate_up, matmul "
                    "or logits, separated by commas)");
      omit_ |= bit;
      at = comma + 1;
    }
    std::fprintf(stderr,
                 "loom: LOOM_CUDA_OMIT=%s leaves kernels out (for timing): "
                 "the outputs are wrong\n",
                 e);
  }
  loop_graph_ = onOff("LOOM_CUDA_LOOP_GRAPH", loop_graph_);
  gemv_ahead_ = onOff("LOOM_CUDA_GEMV_AHEAD", gemv_ahead_);
  if (const char *e = std::getenv("LOOM_CUDA_GEMV_BULK")) {
    const std::string v = e;
    if (v != "0" && v != "4" && v != "6" && v != "8" && v != "12")
      throw Error("LOOM_CUDA_GEMV_BULK=" + v +
                  ": expected 0 (off) or the stages of the ring: 4, 6, 8 or "
                  "12");
    gemv_bulk_ = std::stoi(v);
    if (gemv_bulk_ > 0 && prop.major < 9)
      throw Error("LOOM_CUDA_GEMV_BULK=" + v +
                  " needs bulk asynchronous copies (sm_90), this device is " +
                  name_);
  }
  if (const char *e = std::getenv("LOOM_CUDA_GEMV")) {
    GemvOverrides o;
    if (const std::string why = parseGemvOverrides(e, o); !why.empty())
      throw Error(std::string("LOOM_CUDA_GEMV=") + e + ": " + why);
    gemv_forced_ = o.every;
    gemv_override_ = o.all;
    for (const auto &[name, config] : o.by_class)
      for (const auto &[n, bit] : kClasses)
        if (name == n)
          gemv_class_.emplace_back(bit, config);
  }
  if (const char *e = std::getenv("LOOM_CUDA_PERSISTENT")) {
    const std::string v = e;
    if (v != "0" && v != "1" && v != "2")
      throw Error("LOOM_CUDA_PERSISTENT=" + v +
                  ": expected 0 (off) or the persistent decode kernel's "
                  "blocks per multiprocessor, 1 or 2");
    persistent_blocks_ = std::stoi(v);
    if (persistent_blocks_ > 0 && omit_ != 0) {
      std::fprintf(stderr,
                   "loom: LOOM_CUDA_PERSISTENT=%s: not used with "
                   "LOOM_CUDA_OMIT (it runs every kernel class)\n",
                   e);
      persistent_blocks_ = 0;
    }
  }
  if (m.forward().loop && !loop_kv)
    throw Error("internal: a looped model needs the session's KV policy");
#ifdef LOOM_CUDA_TIMELINE
  if (const char *e = std::getenv("LOOM_CUDA_TIMELINE"); e && *e)
    tl_path_ = e;
#endif
  try {
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
          "cudaStreamCreate");
    checkBlas(cublasCreate(&blas_), "cublasCreate");
    checkBlas(cublasSetStream(blas_, stream_), "cublasSetStream");
#ifdef LOOM_CUDA_TIMELINE
    if (!tl_path_.empty())
      timelineStart();
#endif

    // Which tensors the programs use, and in which form: matrices and
    // tables as stored, everything else (norm weights, biases) as f32.
    std::vector<char> native(m.tensors.size(), 0), f32(m.tensors.size(), 0);
    int64_t max_k = 0;
    for (const ProgramDesc &p : m.programs)
      for (const DispatchDesc &d : p.dispatches)
        for (size_t i = 0; i < d.weight_ids.size(); ++i) {
          const uint32_t w = d.weight_ids[i];
          const bool as_stored = readsWeightAsStored(d.kernel, i);
          (as_stored ? native : f32)[w] = 1;
          if (as_stored && m.tensors[w].shape.size() == 2)
            max_k = std::max(max_k, m.tensors[w].shape[1]);
        }
    uint64_t total = 0;
    auto slot = [](uint64_t b) { return (b + 255) / 256 * 256; };
    // F16 and ggml's block types (Q8_0, Q4_0, Q2_K..Q6_K) have no CUDA
    // kernels yet: they are decoded on the host (exactly,
    // docs/artifact-format.md) and uploaded once as f32, which every role
    // reads.
    auto decodedOnHost = [](WeightType d) {
      return d != WeightType::F32 && d != WeightType::BF16;
    };
    auto elementsOf = [](const TensorDesc &t) {
      uint64_t n = 1;
      for (int64_t d : t.shape)
        n *= uint64_t(d);
      return n;
    };
    for (size_t i = 0; i < m.tensors.size(); ++i) {
      const TensorDesc &t = m.tensors[i];
      if (decodedOnHost(t.dtype)) {
        if (native[i] || f32[i])
          total += slot(elementsOf(t) * sizeof(float));
        continue;
      }
      if (native[i])
        total += slot(t.bytes);
      if (f32[i] && (t.dtype != WeightType::F32 || !native[i]))
        total += slot(t.dtype == WeightType::F32 ? t.bytes : t.bytes * 2);
    }
    char *w = static_cast<char *>(alloc(total, "the weights"));
    tensors_.resize(m.tensors.size());
    for (size_t i = 0; i < m.tensors.size(); ++i) {
      const TensorDesc &t = m.tensors[i];
      DeviceTensor &dt = tensors_[i];
      dt.dtype = t.dtype;
      if (decodedOnHost(t.dtype)) {
        if (!native[i] && !f32[i])
          continue;
        const uint64_t fb = elementsOf(t) * sizeof(float);
        std::vector<float> host;
        try {
          host.resize(fb / sizeof(float));
        } catch (const std::bad_alloc &) {
          throw OutOfMemoryError("out of memory: need " + std::to_string(fb) +
                                 " bytes to decode quantized tensor '" +
                                 t.name + "' for the upload");
        }
        decodeToF32(t, host.data());
        check(cudaMemcpy(w, host.data(), fb, cudaMemcpyHostToDevice),
              "uploading the weights");
        dt.dtype = WeightType::F32;
        dt.native = w;
        dt.f32 = reinterpret_cast<const float *>(w);
        w += slot(fb);
        continue;
      }
      if (native[i]) {
        check(cudaMemcpy(w, t.raw, t.bytes, cudaMemcpyHostToDevice),
              "uploading the weights");
        dt.native = w;
        if (t.dtype == WeightType::F32)
          dt.f32 = reinterpret_cast<const float *>(w);
        w += slot(t.bytes);
      }
      if (f32[i] && !dt.f32) {
        // A bf16 tensor in an f32-only role: its widened copy (made once,
        // thread-safe; t.data is only read after it).
        m.ensureF32();
        const uint64_t fb = t.dtype == WeightType::F32 ? t.bytes : t.bytes * 2;
        check(cudaMemcpy(w, t.data, fb, cudaMemcpyHostToDevice),
              "uploading the weights");
        dt.f32 = reinterpret_cast<const float *>(w);
        w += slot(fb);
      }
    }

    arena_ = static_cast<char *>(alloc(m.arena_bytes, "the activation arena"));
    check(cudaMemset(arena_, 0, m.arena_bytes), "cudaMemset");
    for (const ProgramDesc &pr : m.programs)
      for (const DispatchDesc &d : pr.dispatches)
        if ((d.kernel == Kernel::Rope ||
             d.kernel == Kernel::FusedQkvAttention) &&
            d.fparams.size() > 1) {
          const size_t bytes = sizeof(float) * (d.fparams.size() - 1);
          auto *f =
              static_cast<float *>(alloc(bytes, "rope frequency factors"));
          check(cudaMemcpy(f, d.fparams.data() + 1, bytes,
                           cudaMemcpyHostToDevice),
                "cudaMemcpy");
          rope_factors_[&d] = f;
        }
    char *kv = static_cast<char *>(alloc(m.kv_bytes, "the KV caches"));
    check(cudaMemset(kv, 0, m.kv_bytes), "cudaMemset");
    float *p = reinterpret_cast<float *>(kv);
    int64_t max_seq = 0;
    bool loop_caches = false;
    for (const KvCacheDesc &c : m.kv_caches) {
      const int64_t n = c.max_seq * c.kv_heads * c.head_dim;
      max_seq = std::max(max_seq, c.max_seq);
      if (c.loop_layer >= 0) { // storage per slot, on first use
        caches_.push_back({nullptr, nullptr, c.kv_heads * c.head_dim});
        loop_caches = true;
        if (size_t(c.loop_layer) >= loop_cache_of_layer_.size())
          loop_cache_of_layer_.resize(size_t(c.loop_layer) + 1);
        loop_cache_of_layer_[size_t(c.loop_layer)] =
            uint32_t(caches_.size() - 1);
        continue;
      }
      caches_.push_back({p, p + n, c.kv_heads * c.head_dim});
      p += 2 * n;
    }
    if (loop_caches)
      d_rows_ = static_cast<const float **>(
          alloc(2 * sizeof(float *) * size_t(max_seq), "loop KV row tables"));

    step_bytes_ = sizeof(StepParams) + sizeof(int32_t) * size_t(m.max_tokens);
    d_step_ = static_cast<StepParams *>(alloc(step_bytes_, "step parameters"));
    check(cudaMallocHost(&h_step_, step_bytes_), "cudaMallocHost");
    std::memset(h_step_, 0, step_bytes_);
    d_next_ = static_cast<int32_t *>(alloc(sizeof(int32_t), "the sampler"));
    check(cudaMallocHost(&h_next_, sizeof(int32_t)), "cudaMallocHost");
    int64_t widest = m.config.dim;
    for (const BufferDesc &b : m.buffers)
      widest = std::max(widest, b.row_elems);
    h_rows_floats_ = size_t(m.max_tokens * widest);
    check(cudaMallocHost(&h_rows_, h_rows_floats_ * sizeof(float)),
          "cudaMallocHost");
    xb_elems_ = size_t(m.max_tokens * std::max<int64_t>(max_k, 1));
    xb_ = static_cast<__nv_bfloat16 *>(
        alloc(xb_elems_ * sizeof(__nv_bfloat16), "bf16 GEMM inputs"));

    // Attention's shared memory: q, every position's score, partial sums.
    int64_t max_rows = std::max(max_seq, m.max_tokens);
    int64_t max_hd = 0;
    for (const ProgramDesc &pr : m.programs)
      for (const DispatchDesc &d : pr.dispatches) {
        if (d.kernel == Kernel::Attention ||
            d.kernel == Kernel::FusedQkvAttention)
          max_hd = std::max(max_hd, d.iparams[3]);
        if (d.kernel == Kernel::SelfAttention)
          max_hd = std::max(max_hd, d.iparams[1]);
      }
    // The split decode attention's resident blocks per SM at each head_dim
    // of the model, asked here rather than while a graph is captured.
    for (const ProgramDesc &pr : m.programs)
      for (const DispatchDesc &d : pr.dispatches)
        if ((d.kernel == Kernel::Attention ||
             d.kernel == Kernel::FusedQkvAttention) &&
            d.iparams[3] > 0 && d.iparams[3] <= 32 * kAttnMaxDimsPerLane &&
            attn_resident_[size_t(d.iparams[3])] == 0)
          withDimsPerLane(d.iparams[3], [&](auto dpl) {
            constexpr int DPL = decltype(dpl)::value;
            int &r = attn_resident_[size_t(d.iparams[3])];
            // Only a tuning input: where the query fails, 2 (the split
            // counts measured before the cap).
            withSplitAttention([&](auto early, auto warps) {
              constexpr int NW = decltype(warps)::value;
              if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                      &r,
                      attentionSplitKernel<DPL, false, decltype(early)::value,
                                           NW>,
                      32 * NW, attentionSplitSmem(int(d.iparams[3]), NW)) !=
                  cudaSuccess) {
                cudaGetLastError();
                r = 2;
              }
            });
          });
    if (max_hd > 32 * kAttnMaxDimsPerLane)
      throw Error("the CUDA attention kernel takes head_dim up to " +
                  std::to_string(32 * kAttnMaxDimsPerLane) +
                  ", this model has " + std::to_string(max_hd));
    attn_smem_ = attentionSmem(int(max_hd), int(max_rows));
    if (attn_smem_ > size_t(max_smem_))
      throw Error("the CUDA attention kernel keeps every position's score in "
                  "shared memory: " +
                  std::to_string(max_rows) + " positions need " +
                  std::to_string(attn_smem_) + " bytes, the device allows " +
                  std::to_string(max_smem_));
    check(cudaFuncSetAttribute(attentionKernel,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(attn_smem_)),
          "cudaFuncSetAttribute");
    check(cudaFuncSetAttribute(attentionRowsKernel,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(attn_smem_)),
          "cudaFuncSetAttribute");
    // The tiled prefill attention: fixed tiles, up to 197 KiB at head_dim
    // 256.
    const size_t tiled = attentionTiledSmem(int(max_hd));
    if (tiled > size_t(max_smem_))
      throw Error("the CUDA prefill attention needs " + std::to_string(tiled) +
                  " bytes of shared memory at head_dim " +
                  std::to_string(max_hd) + ", the device allows " +
                  std::to_string(max_smem_));
    for (const void *k :
         {reinterpret_cast<const void *>(attentionTiledKernel<1>),
          reinterpret_cast<const void *>(attentionTiledKernel<2>),
          reinterpret_cast<const void *>(attentionTiledKernel<4>),
          reinterpret_cast<const void *>(attentionTiledKernel<8>)})
      check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 int(tiled)),
            "cudaFuncSetAttribute");
    // The tensor-core prefill attention (LOOM_CUDA_PREFILL_ATTN=tc): up to
    // 144 KiB at head_dim 128, every instantiation (the programs' head dims
    // differ).
    if (prefill_attn_ == PrefillAttention::TensorCores)
      for (int64_t hd : {16, 32, 64, 128})
        withTcHeadDim(hd, [&](auto tag) {
          constexpr int HD = decltype(tag)::value;
          check(
              cudaFuncSetAttribute(attentionTcKernel<HD>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   int(attentionTcSmem(HD))),
              "cudaFuncSetAttribute");
        });
    // The bulk-copy GEMV (LOOM_CUDA_GEMV_BULK=NS): NS x 16 KiB.
    if (gemv_bulk_ > 0)
      for (int64_t K : {2048, 8192})
        for (int M : {1, 2})
          withGemvBulk(gemv_bulk_, K, M, [&](auto kernel) {
            cudaFuncAttributes fa;
            check(cudaFuncGetAttributes(&fa, kernel), "cudaFuncGetAttributes");
            const size_t need = gemvBulkSmem(gemv_bulk_) + fa.sharedSizeBytes;
            if (need > size_t(max_smem_))
              throw Error("LOOM_CUDA_GEMV_BULK=" + std::to_string(gemv_bulk_) +
                          ": " + std::to_string(need) +
                          " bytes of shared memory, the device allows " +
                          std::to_string(max_smem_));
            check(cudaFuncSetAttribute(
                      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                      int(gemvBulkSmem(gemv_bulk_))),
                  "cudaFuncSetAttribute");
          });
    // Decode attention: partials for kGemvRows rows of every head and
    // split.
    int64_t max_nh = 1;
    for (const ProgramDesc &pr : m.programs)
      for (const DispatchDesc &d : pr.dispatches)
        if (d.kernel == Kernel::Attention ||
            d.kernel == Kernel::FusedQkvAttention)
          max_nh = std::max(max_nh, d.iparams[1]);
    attn_ws_ = static_cast<float *>(
        alloc(sizeof(float) *
                  size_t(kGemvRows * max_nh * kMaxAttnSplits * (max_hd + 2)),
              "attention partials"));
    attn_counters_ = static_cast<int *>(
        alloc(sizeof(int) * size_t(kGemvRows * max_nh), "attention counters"));
    check(
        cudaMemset(attn_counters_, 0, sizeof(int) * size_t(kGemvRows * max_nh)),
        "cudaMemset");
    if (persistent_blocks_ > 0)
      if (const std::string why = planPersistent(m.forward()); !why.empty())
        std::fprintf(stderr, "loom: LOOM_CUDA_PERSISTENT=%d: not used: %s\n",
                     persistent_blocks_, why.c_str());
    // The memsets and the pageable copies above run on the legacy stream,
    // which the (non-blocking) stream does not wait for: all of it first.
    check(cudaDeviceSynchronize(), "the upload");
  } catch (...) {
    release();
    throw;
  }
}

CudaExecutor::~CudaExecutor() { release(); }

#ifdef LOOM_CUDA_TIMELINE
// The session whose buffer g_timeline points at: one a process, since the
// device's sink is one (the others' kernels still bump its counter, so
// sessions replaying graphs at the same time on other threads make its
// replays unattributable: they are counted as skipped).
std::atomic<const void *> g_timeline_owner{nullptr};

void CudaExecutor::timelineStart() {
  const void *none = nullptr;
  if (!g_timeline_owner.compare_exchange_strong(none, this)) {
    std::fprintf(stderr,
                 "loom: LOOM_CUDA_TIMELINE: another session of this process "
                 "records the timeline; this one does not\n");
    tl_path_.clear();
    return;
  }
  try {
    // A path that cannot be written fails now, not after the whole run.
    if (FILE *f = std::fopen(tl_path_.c_str(), "wb"))
      std::fclose(f);
    else
      throw Error("LOOM_CUDA_TIMELINE=" + tl_path_ +
                  ": cannot write: " + std::strerror(errno));
    tl_records_ = static_cast<TimelineRecord *>(
        alloc(sizeof(TimelineRecord) * kTimelineCapacity, "the GPU timeline"));
  } catch (...) {
    g_timeline_owner.store(nullptr);
    throw;
  }
  // From here on, release() (timelineWrite) gives the ownership back.
  tl_armed_ = {tl_records_, kTimelineCapacity, 0};
  tl_disarmed_ = {tl_records_, 0, 0};
  check(cudaMemsetAsync(tl_records_, 0,
                        sizeof(TimelineRecord) * kTimelineCapacity, stream_),
        "LOOM_CUDA_TIMELINE");
  timelineSink(tl_disarmed_);
  std::fprintf(stderr,
               "loom: LOOM_CUDA_TIMELINE=%s: the kernels of each graph replay "
               "record their blocks' times (the timeline build; a little "
               "slower than the plain one)\n",
               tl_path_.c_str());
}

void CudaExecutor::timelineCollect(cudaGraphExec_t graph) {
  TimelineSink sink{};
  check(cudaMemcpyFromSymbolAsync(&sink, g_timeline, sizeof sink, 0,
                                  cudaMemcpyDeviceToHost, stream_),
        "LOOM_CUDA_TIMELINE");
  timelineSink(tl_disarmed_);
  sync("LOOM_CUDA_TIMELINE");
  const unsigned count = sink.count;
  if (count > kTimelineCapacity) {
    check(cudaMemsetAsync(tl_records_, 0,
                          size_t(kTimelineCapacity) * sizeof(TimelineRecord),
                          stream_),
          "LOOM_CUDA_TIMELINE");
    tl_summary_.skip(std::to_string(count) +
                     " blocks in one replay, over the " +
                     std::to_string(kTimelineCapacity) + " recorded");
    return;
  }
  tl_host_.resize(count);
  check(cudaMemcpy(tl_host_.data(), tl_records_,
                   size_t(count) * sizeof(TimelineRecord),
                   cudaMemcpyDeviceToHost),
        "LOOM_CUDA_TIMELINE");
  // Zeros for the next replay: a block that does not write its record
  // then shows (start 0), rather than an old one passing for it.
  check(cudaMemsetAsync(tl_records_, 0, size_t(count) * sizeof(TimelineRecord),
                        stream_),
        "LOOM_CUDA_TIMELINE");
  const std::vector<TimelineLaunch> &launches = tl_launches_[graph];
  if (launches.empty()) // a graph of copies alone
    return;
  std::string why;
  const std::vector<KernelSpan> spans =
      attributeTimeline(launches, tl_host_, &why);
  if (spans.empty()) {
    tl_summary_.skip(why);
    return;
  }
  if (tl_t0_ == 0)
    tl_t0_ = spans[0].first_start;
  tl_summary_.add(graph, launches, spans);
  if (tl_event_count_ < kTimelineMaxEvents) {
    appendTimelineEvents(tl_events_, launches, spans, tl_t0_);
    tl_event_count_ += spans.size();
  }
  if (tl_summary_.replays() == kTimelineBlockReplay)
    appendBlockEvents(tl_events_, launches, tl_host_, tl_t0_,
                      kTimelineBlockEvents);
}

// At the end of the session (release; it must not throw): the trace file
// and the summary table on stderr, then the device's sink back to none, so
// that other sessions' kernels do not write into the freed buffer.
void CudaExecutor::timelineWrite() noexcept {
  if (tl_path_.empty() || !tl_records_)
    return;
  if (stream_) {
    cudaMemcpyToSymbolAsync(g_timeline, &kNoSink, sizeof kNoSink, 0,
                            cudaMemcpyHostToDevice, stream_);
    cudaStreamSynchronize(stream_);
  }
  cudaGetLastError();
  g_timeline_owner.store(nullptr);
  try {
    std::fprintf(stderr, "loom: %s", tl_summary_.table().c_str());
    // The processes' names, then the events.
    std::string json =
        "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n"
        "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":2,\"args\":"
        "{\"name\":\"GPU launches (graph replays)\"}},\n"
        "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":3,\"args\":"
        "{\"name\":\"GPU blocks of one replay, by multiprocessor\"}}";
    if (!tl_events_.empty())
      json += ",\n" + tl_events_;
    json += "\n],\n\"loomTimeline\":" + tl_summary_.json() + "}\n";
    FILE *f = std::fopen(tl_path_.c_str(), "wb");
    const bool ok =
        f && std::fwrite(json.data(), 1, json.size(), f) == json.size();
    if (f && std::fclose(f) != 0)
      f = nullptr;
    if (!ok || !f)
      std::fprintf(stderr, "loom: cannot write the GPU timeline '%s': %s\n",
                   tl_path_.c_str(), std::strerror(errno));
  } catch (const std::exception &e) {
    std::fprintf(stderr, "loom: the GPU timeline was not written: %s\n",
                 e.what());
  }
  tl_path_.clear();
}
#endif

void CudaExecutor::release() {
#ifdef LOOM_CUDA_TIMELINE
  timelineWrite();
#endif
  destroyStepGraphs();
  for (auto &kv : loop_graphs_)
    if (kv.second)
      cudaGraphExecDestroy(kv.second);
  loop_graphs_.clear();
  for (cudaEvent_t e : trace_events_)
    cudaEventDestroy(e);
  trace_events_.clear();
  for (void *p : allocations_)
    cudaFree(p);
  allocations_.clear();
  if (h_step_)
    cudaFreeHost(h_step_);
  if (h_next_)
    cudaFreeHost(h_next_);
  if (h_rows_)
    cudaFreeHost(h_rows_);
  h_step_ = nullptr;
  h_next_ = nullptr;
  h_rows_ = nullptr;
  if (blas_)
    cublasDestroy(blas_);
  blas_ = nullptr;
  if (stream_)
    cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

unsigned blocksFor(int64_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}
unsigned rowThreads(int64_t cols) {
  return cols >= 1024 ? 1024u : cols >= 256 ? 256u : cols >= 128 ? 128u : 64u;
}

void CudaExecutor::gemm(unsigned cls, const float *x, int64_t ldx,
                        uint32_t weight, float *y, int64_t ldy, int64_t T,
                        int64_t K, int64_t N, bool accumulate) {
  const DeviceTensor &w = tensors_[weight];
  const bool bf16 = w.dtype == WeightType::BF16;
  timelineLabel(className(cls));
  if (gemvBulk(x, w, nullptr, nullptr, nullptr, y, T, K, N, accumulate))
    return;
  if (T <= kGemvRows) {
    const int vec = bf16 ? 8 : 4;
    const bool aligned = K % vec == 0 && ldx % 4 == 0 &&
                         (reinterpret_cast<uintptr_t>(x) |
                          reinterpret_cast<uintptr_t>(w.native)) %
                                 16 ==
                             0;
    if (!aligned) {
      const unsigned threads = 256, blocks = blocksFor(N * 32, threads);
      if (bf16)
        launchKernel(gemvScalarKernel<__nv_bfloat16>, blocks, threads, 0, x,
                     ldx, static_cast<const __nv_bfloat16 *>(w.native), y, ldy,
                     int(T), int(K), int(N), accumulate);
      else
        launchKernel(gemvScalarKernel<float>, blocks, threads, 0, x, ldx,
                     static_cast<const float *>(w.native), y, ldy, int(T),
                     int(K), int(N), accumulate);
      return;
    }
    const GemvConfig c = gemvConfig(cls, N, K);
    const unsigned blocks = gemvBlocks(N, c.split);
    const auto go = [&](auto tag) {
      using G = decltype(tag);
      using Wt = typename G::Weight;
      launchKernel(
          gemvKernel<Wt, G::kVec, G::kRows, G::kUnroll, G::kSplit, G::kAhead>,
          blocks, kGemvThreads, 0, x, ldx, static_cast<const Wt *>(w.native), y,
          ldy, int(T), int(K), int(N), int(accumulate));
    };
    if (bf16)
      withGemvConfig<__nv_bfloat16, 8>(c, int(T), go);
    else
      withGemvConfig<float, 4>(c, int(T), go);
    return;
  }
  // Row-major y[T, N] = x[T, K] W[N, K]^T is column-major
  // y^T (N x T) = W^T' (N x K) x^T (K x T): op(A) = W read transposed.
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  if (!bf16) {
    checkBlas(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T),
                          int(K), &alpha, static_cast<const float *>(w.native),
                          int(K), x, int(ldx), &beta, y, int(ldy)),
              "cublasSgemm");
    return;
  }
  // bf16 weights: the activations are rounded to bf16 too (cuBLAS takes
  // one input type), products accumulate in f32.
  if (size_t(T * K) > xb_elems_)
    throw Error("internal: bf16 GEMM scratch too small");
  launchKernel(toBf16Kernel, blocksFor(T * K, 256), 256, 0, x, ldx, xb_, K, T);
  checkBlas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T),
                         int(K), &alpha, w.native, CUDA_R_16BF, int(K), xb_,
                         CUDA_R_16BF, int(K), &beta, y, CUDA_R_32F, int(ldy),
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx (bf16)");
}

void CudaExecutor::attention(int64_t cache, const float *q, int64_t ldq,
                             const float *k, int64_t ldk, const float *v,
                             int64_t ldv, float *out, int64_t ldo, int64_t T,
                             int64_t nh, int64_t nkv, int64_t hd,
                             int64_t window) {
  const DeviceCache *slot = graphSlot(cache);
  if (m_.kv_caches[cache].loop_layer >= 0 && !slot) {
    loopAttend(uint32_t(cache), q, ldq, k, ldk, v, ldv, out, ldo, T, nh, nkv,
               hd, window);
    return;
  }
  const DeviceCache &c = slot ? *slot : caches_[cache];
  launchKernel(kvAppendKernel, unsigned(T), rowThreads(c.kvd), 0, d_step_, k,
               ldk, v, ldv, c.k, c.v, c.kvd);
  attendCache(c, q, ldq, out, ldo, T, nh, nkv, hd, window);
}

DeviceCache &CudaExecutor::loopSlot(int64_t slot, const KvCacheDesc &c) {
  if (size_t(slot) >= loop_slots_.size())
    loop_slots_.resize(size_t(slot) + 1);
  DeviceCache &s = loop_slots_[size_t(slot)];
  if (!s.k) {
    const int64_t kvd = c.kv_heads * c.head_dim;
    float *mem = static_cast<float *>(alloc(
        2 * sizeof(float) * uint64_t(c.max_seq * kvd), "a loop KV cache"));
    s = {mem, mem + c.max_seq * kvd, kvd};
  }
  return s;
}

void CudaExecutor::loopAttend(uint32_t cache, const float *q, int64_t ldq,
                              const float *k, int64_t ldk, const float *v,
                              int64_t ldv, float *out, int64_t ldo, int64_t T,
                              int64_t nh, int64_t nkv, int64_t hd,
                              int64_t window) {
  const KvCacheDesc &c = m_.kv_caches[cache];
  const int64_t kvd = nkv * hd;
  const int32_t *src = nullptr;
  const int64_t slot = loop_kv_->planLoopKv(cache, T, &src);
  const DeviceCache &dst = loopSlot(slot, c);
  launchKernel(kvAppendKernel, unsigned(T), rowThreads(kvd), 0, d_step_, k, ldk,
               v, ldv, dst.k, dst.v, kvd);
  const int64_t end = h_step_->pos + T;
  // Unless LOOM_CUDA_LOOP_GRAPH=0, a slot that holds every position is read
  // as an ordinary cache (no table; the split or tiled kernels).
  if (loop_graph_ &&
      std::all_of(src, src + end, [&](int32_t s) { return s == slot; })) {
    attendCache(dst, q, ldq, out, ldo, T, nh, nkv, hd, window);
    return;
  }
  rows_host_.assign(size_t(2 * end), nullptr);
  for (int64_t p = 0; p < end; ++p)
    if (src[p] >= 0) {
      const DeviceCache &from = loop_slots_[size_t(src[p])];
      rows_host_[size_t(p)] = from.k + p * kvd;
      rows_host_[size_t(end + p)] = from.v + p * kvd;
    }
  // From pageable memory: the copy is staged before this returns, so the
  // table can be rebuilt for the next layer at once.
  check(cudaMemcpyAsync(d_rows_, rows_host_.data(),
                        rows_host_.size() * sizeof(float *),
                        cudaMemcpyHostToDevice, stream_),
        "loop KV rows");
  launchKernel(attentionRowsKernel, dim3(unsigned(nh), unsigned(T)),
               kAttnThreads, attn_smem_, d_step_, q, ldq, d_rows_,
               d_rows_ + end, out, ldo, int(nh / nkv), int(hd), int(window));
}

// Causal attention of T rows over a cache: split along the positions for
// decode steps (few rows, few blocks otherwise); longer steps tiled, or one
// block per (head, row) where tiles would leave the GPU half empty or the
// layer has a sliding window (which the tiled kernels do not take).
void CudaExecutor::attendCache(const DeviceCache &c, const float *q,
                               int64_t ldq, float *out, int64_t ldo, int64_t T,
                               int64_t nh, int64_t nkv, int64_t hd,
                               int64_t window, const RopeFold &fold) {
  if (T <= kGemvRows) {
    withDimsPerLane(hd, [&](auto dpl) {
      constexpr int DPL = decltype(dpl)::value;
      const int splits =
          splitsFor(nh, T, std::max(attn_resident_[size_t(hd)], 1));
      const int S =
          attn_cluster_ ? std::min(splits, kMaxClusterSplits) : splits;
      const dim3 grid{unsigned(nh), unsigned(T), unsigned(S)};
      const auto go = [&](auto cluster, auto early, auto warps) {
        constexpr bool kCluster = decltype(cluster)::value;
        constexpr bool kEarly = decltype(early)::value;
        constexpr int NW = decltype(warps)::value;
        const auto kernel = attentionSplitKernel<DPL, kCluster, kEarly, NW>;
        if constexpr (kCluster)
          launchClustered(kernel, grid, 32 * NW,
                          attentionSplitClusterSmem(int(hd), NW), unsigned(S),
                          d_step_, q, ldq, c.k, c.kvd, c.v, c.kvd,
                          int(nh / nkv), int(hd), attn_ws_, attn_counters_, out,
                          ldo, fold, int(window));
        else
          launchKernel(kernel, grid, 32 * NW, attentionSplitSmem(int(hd), NW),
                       d_step_, q, ldq, c.k, c.kvd, c.v, c.kvd, int(nh / nkv),
                       int(hd), attn_ws_, attn_counters_, out, ldo, fold,
                       int(window));
      };
      withSplitAttention([&](auto early, auto warps) {
        if (attn_cluster_)
          go(std::true_type(), early, warps);
        else
          go(std::false_type(), early, warps);
      });
    });
    return;
  }
  if (window <= 0 && prefill_attn_ == PrefillAttention::TensorCores &&
      withTcHeadDim(hd, [&](auto tag) {
        constexpr int HD = decltype(tag)::value;
        const dim3 grid{unsigned(nh), unsigned((T + kTcRows - 1) / kTcRows)};
        launchKernel(attentionTcKernel<HD>, grid, 32 * kTcWarps,
                     attentionTcSmem(HD), d_step_, q, ldq, c.k, c.kvd, c.v,
                     c.kvd, out, ldo, int(nh / nkv), int(T));
      }))
    return;
  // Tiled where it makes enough blocks to fill the GPU (H100, 512-row
  // steps: the 1B's 32 heads 1.47x faster than a block per (head, row), the
  // 110M's 12 heads 0.8x), else a block per (head, row).
  const int64_t tiles = (T + kTileRows - 1) / kTileRows;
  const bool tiled = window <= 0 && (prefill_attn_ == PrefillAttention::Tiled ||
                                     (prefill_attn_ == PrefillAttention::Auto &&
                                      nh * tiles >= 2 * int64_t(sm_count_)));
  if (!tiled) {
    launchKernel(attentionKernel, dim3(unsigned(nh), unsigned(T)), kAttnThreads,
                 attn_smem_, d_step_, q, ldq, c.k, c.kvd, c.v, c.kvd, out, ldo,
                 int(nh / nkv), int(hd), 1, 0, int(window));
    return;
  }
  const dim3 grid{unsigned(nh), unsigned(tiles)};
  const size_t smem = attentionTiledSmem(int(hd));
  withDimsPerLane(hd, [&](auto dpl) {
    launchKernel(attentionTiledKernel<decltype(dpl)::value>, grid, kAttnThreads,
                 smem, d_step_, q, ldq, c.k, c.kvd, c.v, c.kvd, out, ldo,
                 int(nh / nkv), int(hd), int(T));
  });
}

// Splits of a decode attention: about attn_blocks_per_sm_ (1;
// LOOM_CUDA_ATTN_BLOCKS=N) blocks per multiprocessor over the heads, at
// most kMaxAttnSplits, and never more blocks (heads x rows x splits) than
// the multiprocessors hold at once, so that no block waits for a second
// wave. Measured on an H100 (docs/cuda.md): the 1B shape's decode at 5
// splits (1 block per SM) 1.07x its speed at 9 (2 per SM), the 110M's at 11
// splits 1.07x its speed at 22.
int CudaExecutor::splitsFor(int64_t nh, int64_t T, int resident) const {
  if (attn_splits_ > 0) // forced (LOOM_CUDA_ATTN_SPLITS): tests and tuning
    return attn_splits_;
  const int64_t want = (attn_blocks_per_sm_ * int64_t(sm_count_) + nh - 1) / nh;
  const int64_t fit = int64_t(resident) * sm_count_ / (nh * T);
  return int(std::max<int64_t>(
      1, std::min<int64_t>(std::min(want, fit), kMaxAttnSplits)));
}

// FusedQkvAttention: the packed projection, bias, RoPE + KV append,
// attention, output projection.
void CudaExecutor::qkvAttention(const DispatchDesc &d, int64_t T) {
  const auto &in = d.inputs;
  const auto &out = d.outputs;
  const auto &w = d.weight_ids;
  const auto &ip = d.iparams;
  auto wf = [&](size_t i) { return tensors_[w[i]].f32; };
  const int64_t nh = ip[1], nkv = ip[2], hd = ip[3];
  const int64_t qd = nh * hd, kd = nkv * hd;
  float *qkv = buffer(d.scratch[0]), *attn = buffer(d.scratch[1]);
  const int64_t lq = ld(d.scratch[0]), la = ld(d.scratch[1]);
  if (!omitted(kOmitQkv))
    gemm(kOmitQkv, buffer(in[0]), ld(in[0]), w[0], qkv, lq, T, ld(in[0]),
         qd + 2 * kd, false);
  if (w.size() > 2 && !omitted(kOmitQkv))
    launchKernel(addRowBiasKernel, unsigned(T), rowThreads(qd + kd), 0, qkv, lq,
                 wf(2), qkv, lq, qd + kd);
  if (w.size() > 3 && !omitted(kOmitQkv)) // v's, after q|k
    launchKernel(addRowBiasKernel, unsigned(T), rowThreads(kd), 0,
                 qkv + qd + kd, lq, wf(3), qkv + qd + kd, lq, kd);
  // q and k are adjacent column ranges whose heads both start at
  // multiples of head_dim: one rotation covers both, and the same kernel
  // appends the rotated k and v to the cache.
  timelineLabel(className(kOmitAttention));
  if (!omitted(kOmitAttention)) {
    const DeviceCache *slot = graphSlot(ip[0]);
    if (m_.kv_caches[ip[0]].loop_layer >= 0 && !slot) {
      launchKernel(ropeKernel, unsigned(T), rowThreads((qd + kd) / 2), 0,
                   d_step_, qkv, lq, qd + kd, hd, d.fparams[0], ropeFactors(d),
                   ropeScale(d));
      loopAttend(uint32_t(ip[0]), qkv, lq, qkv + qd, lq, qkv + qd + kd, lq,
                 attn, la, T, nh, nkv, hd, attentionWindow(d));
    } else {
      // An ordinary cache, or the slot a captured looped step reads whole.
      const DeviceCache &c = slot ? *slot : caches_[ip[0]];
      // One row (decode): RoPE and the append happen inside the attention.
      RopeFold fold;
      if (T == 1 && rope_fold_ && hd % 2 == 0 &&
          hd <= 32 * kAttnMaxDimsPerLane) {
        fold.k = qkv + qd;
        fold.v = qkv + qd + kd;
        fold.theta = d.fparams[0];
        fold.factors = ropeFactors(d);
        fold.scale = ropeScale(d);
      } else {
        launchKernel(ropeAppendKernel, unsigned(T), rowThreads((qd + kd) / 2),
                     0, d_step_, qkv, lq, qd, kd, hd, d.fparams[0],
                     ropeFactors(d), ropeScale(d), c.k, c.v);
      }
      attendCache(c, qkv, lq, attn, la, T, nh, nkv, hd, attentionWindow(d),
                  fold);
    }
  }
  const bool accumulate = ip.size() > 4 && ip[4] != 0;
  if (!omitted(kOmitOut))
    gemm(kOmitOut, attn, la, w[1], buffer(out[0]), ld(out[0]), T, qd,
         ld(out[0]), accumulate);
  else if (!accumulate) // zeros, not a reused buffer's values (NaN later)
    check(cudaMemsetAsync(buffer(out[0]), 0,
                          size_t(T * ld(out[0])) * sizeof(float), stream_),
          "LOOM_CUDA_OMIT=out");
}

std::string CudaExecutor::planPersistent(const ProgramDesc &prog) {
  if (const int64_t zeros = persistentZeros(m_, prog); zeros > 0) {
    persistent_zero_ = static_cast<float *>(
        alloc(sizeof(float) * size_t(zeros), "the persistent kernel's zeros"));
    check(cudaMemset(persistent_zero_, 0, sizeof(float) * size_t(zeros)),
          "cudaMemset");
  }
  const PersistentInputs in{
      m_,
      arena_,
      tensors_,
      caches_,
      rope_factors_,
      persistent_zero_,
      rope_fold_,
      [&](int64_t nh) { return splitsFor(nh, 1, persistent_blocks_); }};
  PersistentPlan plan;
  if (std::string why = planPersistentStages(prog, in, plan); !why.empty())
    return why;
  PersistentRun r;
  r.begin = plan.begin;
  r.end = plan.end;
  r.count = int(plan.stages.size());
  r.smem = attentionSplitSmem(int(plan.head_dim));
  const auto take = [&](auto kernel) { r.kernel = kernel; };
  if (plan.dtype == WeightType::BF16)
    withPersistentKernel<__nv_bfloat16>(plan.head_dim, take);
  else
    withPersistentKernel<float>(plan.head_dim, take);
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, r.kernel,
                                                      kGemvThreads, r.smem),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  if (per_sm < persistent_blocks_)
    return "the kernel fits " + std::to_string(per_sm) +
           " block(s) a multiprocessor on " + name_;
  r.grid = unsigned(persistent_blocks_ * sm_count_);
  auto *d_stages = static_cast<PersistentStage *>(
      alloc(sizeof(PersistentStage) * plan.stages.size(),
            "the persistent kernel's stages"));
  check(cudaMemcpy(d_stages, plan.stages.data(),
                   sizeof(PersistentStage) * plan.stages.size(),
                   cudaMemcpyHostToDevice),
        "cudaMemcpy");
  r.stages = d_stages;
  persistent_barrier_ = static_cast<GridBarrier *>(
      alloc(sizeof(GridBarrier), "the persistent kernel's barrier"));
  check(cudaMemset(persistent_barrier_, 0, sizeof(GridBarrier)), "cudaMemset");
  persistent_ = r;
  std::fprintf(stderr,
               "loom: LOOM_CUDA_PERSISTENT=%d: one kernel of %u blocks runs "
               "dispatches %zu to %zu of one-row steps (%d stages)\n",
               persistent_blocks_, r.grid, r.begin, r.end - 1, r.count);
  return "";
}

void CudaExecutor::launch(const DispatchDesc &d, int64_t T, int64_t logit_begin,
                          int64_t logit_end) {
  const auto &in = d.inputs;
  const auto &out = d.outputs;
  const auto &w = d.weight_ids;
  const auto &ip = d.iparams;
  auto wf = [&](size_t i) { return tensors_[w[i]].f32; };
  switch (d.kernel) {
  case Kernel::Embed: {
    const DeviceTensor &t = tensors_[w[0]];
    const int64_t D = ld(out[0]);
    const float scale = d.fparams.empty() ? 1.0f : d.fparams[0];
    if (t.dtype == WeightType::BF16)
      launchKernel(embedKernel<__nv_bfloat16>, unsigned(T), rowThreads(D), 0,
                   d_step_, static_cast<const __nv_bfloat16 *>(t.native), D,
                   buffer(out[0]), D, scale);
    else
      launchKernel(embedKernel<float>, unsigned(T), rowThreads(D), 0, d_step_,
                   static_cast<const float *>(t.native), D, buffer(out[0]), D,
                   scale);
    break;
  }
  case Kernel::RmsNorm:
    if (omitted(kOmitNorm))
      break;
    launchKernel(rmsNormKernel, unsigned(T), rowThreads(ld(in[0])), 0,
                 buffer(in[0]), ld(in[0]), wf(0), buffer(out[0]), ld(out[0]),
                 ld(in[0]), d.fparams[0]);
    break;
  case Kernel::MatMul:
    if (omitted(kOmitMatMul))
      break;
    gemm(kOmitMatMul, buffer(in[0]), ld(in[0]), w[0], buffer(out[0]),
         ld(out[0]), T, ld(in[0]), ld(out[0]), !ip.empty() && ip[0] != 0);
    if (w.size() > 1)
      launchKernel(addRowBiasKernel, unsigned(T), rowThreads(ld(out[0])), 0,
                   buffer(out[0]), ld(out[0]), wf(1), buffer(out[0]),
                   ld(out[0]), ld(out[0]));
    break;
  case Kernel::Rope:
    if (!in.empty() && in[0] != out[0])
      check(cudaMemcpyAsync(buffer(out[0]), buffer(in[0]),
                            size_t(T * ld(out[0])) * sizeof(float),
                            cudaMemcpyDeviceToDevice, stream_),
            "rope copy");
    launchKernel(ropeKernel, unsigned(T), rowThreads(ip[0] / 2), 0, d_step_,
                 buffer(out[0]), ld(out[0]), ip[0], ip[1], d.fparams[0],
                 ropeFactors(d), ropeScale(d));
    break;
  case Kernel::Attention:
    if (omitted(kOmitAttention))
      break;
    attention(ip[0], buffer(in[0]), ld(in[0]), buffer(in[1]), ld(in[1]),
              buffer(in[2]), ld(in[2]), buffer(out[0]), ld(out[0]), T, ip[1],
              ip[2], ip[3], attentionWindow(d));
    break;
  case Kernel::SiluMul: {
    const int64_t n = T * ld(out[0]);
    launchKernel(siluMulKernel, blocksFor(n, 256), 256, 0, buffer(in[0]),
                 buffer(in[1]), buffer(out[0]), n);
    break;
  }
  case Kernel::Add: {
    const int64_t n = T * ld(out[0]);
    launchKernel(addKernel, blocksFor(n, 256), 256, 0, buffer(in[0]),
                 buffer(in[1]), buffer(out[0]), n);
    break;
  }
  case Kernel::Logits:
    if (logit_end > logit_begin && !omitted(kOmitLogits))
      gemm(kOmitLogits, buffer(in[0]) + logit_begin * ld(in[0]), ld(in[0]),
           w[0], buffer(out[0]) + logit_begin * ld(out[0]), ld(out[0]),
           logit_end - logit_begin, ld(in[0]), ld(out[0]), false);
    break;
  case Kernel::FusedQkvAttention:
    qkvAttention(d, T);
    break;
  case Kernel::Concat:
    launchKernel(concatKernel, unsigned(T), rowThreads(ld(out[0])), 0,
                 buffer(in[0]), ld(in[0]), buffer(in[1]), ld(in[1]),
                 buffer(out[0]));
    break;
  case Kernel::Copy:
    if (in[0] != out[0])
      check(cudaMemcpyAsync(buffer(out[0]), buffer(in[0]),
                            size_t(T * ld(out[0])) * sizeof(float),
                            cudaMemcpyDeviceToDevice, stream_),
            "copy");
    break;
  case Kernel::AddRowBias:
    launchKernel(addRowBiasKernel, unsigned(T), rowThreads(ld(out[0])), 0,
                 buffer(in[0]), ld(in[0]), wf(0), buffer(out[0]), ld(out[0]),
                 ld(out[0]));
    break;
  case Kernel::LayerNorm:
    if (omitted(kOmitNorm))
      break;
    launchKernel(layerNormKernel, unsigned(T), rowThreads(ld(in[0])), 0,
                 buffer(in[0]), ld(in[0]), wf(0), wf(1), buffer(out[0]),
                 ld(out[0]), ld(in[0]), d.fparams[0]);
    break;
  case Kernel::GeluTanh: {
    const int64_t n = T * ld(out[0]);
    launchKernel(geluTanhKernel, blocksFor(n, 256), 256, 0, buffer(in[0]),
                 buffer(out[0]), n);
    break;
  }
  case Kernel::SelfAttention: {
    const int64_t nh = ip[0], hd = ip[1];
    launchKernel(attentionKernel, dim3(unsigned(nh), unsigned(T)), kAttnThreads,
                 attn_smem_, d_step_, buffer(in[0]), ld(in[0]), buffer(in[1]),
                 ld(in[1]), buffer(in[2]), ld(in[2]), buffer(out[0]),
                 ld(out[0]), 1, int(hd), 0, int(T), 0);
    break;
  }
  case Kernel::AddPositions: {
    const DeviceTensor &t = tensors_[w[0]];
    const int64_t D = ld(out[0]);
    if (t.dtype == WeightType::BF16)
      launchKernel(addPositionsKernel<__nv_bfloat16>, unsigned(T),
                   rowThreads(D), 0, buffer(in[0]), ld(in[0]),
                   static_cast<const __nv_bfloat16 *>(t.native), buffer(out[0]),
                   D, D);
    else
      launchKernel(addPositionsKernel<float>, unsigned(T), rowThreads(D), 0,
                   buffer(in[0]), ld(in[0]),
                   static_cast<const float *>(t.native), buffer(out[0]), D, D);
    break;
  }
  case Kernel::TakeRow:
    if (ip[0] != 0 || in[0] != out[0])
      check(cudaMemcpyAsync(buffer(out[0]), buffer(in[0]) + ip[0] * ld(in[0]),
                            size_t(ld(out[0])) * sizeof(float),
                            cudaMemcpyDeviceToDevice, stream_),
            "take_row");
    break;
  }
  check(cudaGetLastError(), d.name.c_str());
}

size_t CudaExecutor::launchFused(const ProgramDesc &prog, size_t i, size_t end,
                                 int64_t T) {
  const auto &ds = prog.dispatches;
  // Fusions stay inside the range run (a looped block's parts).
  const size_t n = end;
  const DispatchDesc &d = ds[i];
  if (d.kernel == Kernel::Add && i + 1 < n &&
      ds[i + 1].kernel == Kernel::RmsNorm &&
      static_cast<int64_t>(i + 1) != prog.embed_dispatch) {
    const DispatchDesc &e = ds[i + 1];
    const int64_t D = ld(d.outputs[0]);
    if (e.inputs[0] != d.outputs[0] || ld(d.inputs[0]) != D ||
        ld(d.inputs[1]) != D || ld(e.outputs[0]) != D)
      return 0;
    timelineLabel("Add+RmsNorm");
    if (!omitted(kOmitNorm))
      launchKernel(addRmsNormKernel, unsigned(T), rowThreads(D), 0,
                   buffer(d.inputs[0]), buffer(d.inputs[1]),
                   buffer(d.outputs[0]), tensors_[e.weight_ids[0]].f32,
                   buffer(e.outputs[0]), D, e.fparams[0]);
    check(cudaGetLastError(), "add + rms_norm");
    return 2;
  }
  return gateUp(prog, i, end, T);
}

// Dispatches i, i + 1, i + 2 = MatMul, MatMul, SiluMul of a SwiGLU FFN as
// one gate/up GEMV; returns 3, or 0 where the pattern does not hold.
size_t CudaExecutor::gateUp(const ProgramDesc &prog, size_t i, size_t end,
                            int64_t T) {
  const auto &ds = prog.dispatches;
  const size_t n = end;
  const DispatchDesc &d = ds[i];
  if (d.kernel == Kernel::MatMul && T <= kGemvRows && i + 2 < n &&
      ds[i + 1].kernel == Kernel::MatMul &&
      ds[i + 2].kernel == Kernel::SiluMul) {
    const DispatchDesc &e = ds[i + 1], &f = ds[i + 2];
    const auto plain = [](const DispatchDesc &x) {
      return x.weight_ids.size() == 1 &&
             (x.iparams.empty() || x.iparams[0] == 0);
    };
    const uint32_t x = d.inputs[0], a = d.outputs[0], b = e.outputs[0],
                   y = f.outputs[0];
    const DeviceTensor &w1 = tensors_[d.weight_ids[0]],
                       &w3 = tensors_[e.weight_ids[0]];
    const int64_t K = ld(x), N = ld(a);
    const int vec = w1.dtype == WeightType::BF16 ? 8 : 4;
    const float *xp = buffer(x);
    if (!plain(d) || !plain(e) || e.inputs[0] != x || f.inputs[0] != a ||
        f.inputs[1] != b || ld(b) != N || ld(y) != N || w1.dtype != w3.dtype ||
        overlap(x, a) || overlap(x, b) || overlap(x, y) || overlap(a, b) ||
        K % vec != 0 || K % 4 != 0 ||
        (reinterpret_cast<uintptr_t>(xp) |
         reinterpret_cast<uintptr_t>(w1.native) |
         reinterpret_cast<uintptr_t>(w3.native)) %
                16 !=
            0)
      return 0;
    const GemvConfig c = gemvConfig(kOmitGateUp, N, K);
    const unsigned blocks = gemvBlocks(N, c.split);
    const auto go = [&](auto tag) {
      using G = decltype(tag);
      using Wt = typename G::Weight;
      launchKernel(
          gateUpKernel<Wt, G::kVec, G::kRows, G::kUnroll, G::kSplit, G::kAhead>,
          blocks, kGemvThreads, 0, xp, K, static_cast<const Wt *>(w1.native),
          static_cast<const Wt *>(w3.native), buffer(a), N, buffer(b), N,
          buffer(y), N, int(T), int(K), int(N));
    };
    if (omitted(kOmitGateUp))
      return 3;
    timelineLabel(className(kOmitGateUp));
    if (gemvBulk(xp, w1, &w3, buffer(a), buffer(b), buffer(y), T, K, N,
                 false)) {
      check(cudaGetLastError(), "gate/up GEMV + silu_mul (bulk)");
      return 3;
    }
    if (w1.dtype == WeightType::BF16)
      withGemvConfig<__nv_bfloat16, 8>(c, int(T), go);
    else
      withGemvConfig<float, 4>(c, int(T), go);
    check(cudaGetLastError(), "gate/up GEMV + silu_mul");
    return 3;
  }
  return 0;
}

// Enqueues dispatches [begin, end) of `prog` on T rows (one row after a
// TakeRow); placeholder rows replace the Embed output. Returns the rows
// left.
int64_t CudaExecutor::run(const ProgramDesc &prog, size_t begin, size_t end,
                          int64_t T, int64_t logit_begin, int64_t logit_end,
                          const float *const *embeddings) {
  const int64_t pos = h_step_->pos;
  for (size_t i = begin; i < end; ++i) {
    const DispatchDesc &d = prog.dispatches[i];
    // LOOM_CUDA_OMIT=gate_up: the FFN's gate and up projections and their
    // SiluMul, also where they are not fused (prefill).
    if (omitted(kOmitGateUp) && d.kernel == Kernel::MatMul && i + 2 < end &&
        prog.dispatches[i + 1].kernel == Kernel::MatMul &&
        prog.dispatches[i + 2].kernel == Kernel::SiluMul) {
      i += 2;
      continue;
    }
    if (persistent_ && T == 1 && !trace_ && &prog == &m_.forward() &&
        i == persistent_->begin && persistent_->end <= end) {
      const PersistentRun r = *persistent_;
      timelineDispatch(d.name, "persistent");
      try {
        launchCooperative(r.kernel, r.grid, kGemvThreads, r.smem, d_step_,
                          r.stages, r.count, persistent_barrier_, attn_ws_,
                          attn_counters_);
        i = r.end - 1;
        continue;
      } catch (const Error &e) {
        // A launch refused (e.g. too large a cooperative grid under MPS):
        // while capturing, runCaptured captures again without the kernel;
        // otherwise the layers run as launches from here.
        cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
        cudaStreamIsCapturing(stream_, &capturing);
        cudaGetLastError();
        if (capturing != cudaStreamCaptureStatusNone)
          throw;
        disablePersistent(e.what());
      }
    }
    timelineDispatch(d.name, kernelName(d.kernel));
    // Traced runs keep one event per dispatch, so they do not fuse.
    if (!trace_) {
      const size_t fused = launchFused(prog, i, end, T);
      if (fused > 0) {
        i += fused - 1;
        continue;
      }
    }
    if (trace_)
      traceMark(i);
    launch(d, T, logit_begin, logit_end);
    if (embeddings && static_cast<int64_t>(i) == prog.embed_dispatch) {
      const int64_t D = ld(d.outputs[0]);
      for (int64_t t = 0; t < T; ++t)
        if (embeddings[t]) {
          float *staged = h_rows_ + t * D;
          std::memcpy(staged, embeddings[t], size_t(D) * sizeof(float));
          check(cudaMemcpyAsync(buffer(d.outputs[0]) + t * D, staged,
                                size_t(D) * sizeof(float),
                                cudaMemcpyHostToDevice, stream_),
                "placeholder rows");
        }
    }
    if (trace_)
      trace_rows_.push_back(d.kernel == Kernel::Logits ? logit_end - logit_begin
                                                       : T);
    if (d.kernel == Kernel::TakeRow) {
      T = 1;
      logit_begin = std::min<int64_t>(logit_begin, 0);
      logit_end = std::min<int64_t>(logit_end, 1);
    }
  }
  if (trace_)
    traceFlush(prog, pos);
  return T;
}

// Traced runs launch dispatch by dispatch (no graphs, no fusion) with a
// CUDA event before each and one after the last; traceFlush waits for them
// and records each dispatch's GPU time, placed on the host clock from the
// first event.
void CudaExecutor::traceMark(size_t dispatch) {
  if (trace_marks_.empty())
    trace_host_start_ = TraceRecorder::Clock::now();
  const size_t k = trace_marks_.size();
  if (k >= trace_events_.size()) {
    cudaEvent_t e;
    check(cudaEventCreate(&e), "cudaEventCreate");
    trace_events_.push_back(e);
  }
  check(cudaEventRecord(trace_events_[k], stream_), "cudaEventRecord");
  trace_marks_.push_back(dispatch);
}

void CudaExecutor::traceFlush(const ProgramDesc &prog, int64_t pos) {
  const size_t n = trace_marks_.size();
  if (n == 0)
    return;
  if (n >= trace_events_.size()) {
    cudaEvent_t e;
    check(cudaEventCreate(&e), "cudaEventCreate");
    trace_events_.push_back(e);
  }
  check(cudaEventRecord(trace_events_[n], stream_), "cudaEventRecord");
  check(cudaEventSynchronize(trace_events_[n]), "cudaEventSynchronize");
  using us = std::chrono::duration<double, std::micro>;
  for (size_t k = 0; k < n; ++k) {
    float begin_ms = 0, end_ms = 0;
    check(cudaEventElapsedTime(&begin_ms, trace_events_[0], trace_events_[k]),
          "cudaEventElapsedTime");
    check(cudaEventElapsedTime(&end_ms, trace_events_[0], trace_events_[k + 1]),
          "cudaEventElapsedTime");
    const DispatchDesc &d = prog.dispatches[trace_marks_[k]];
    const auto at = [&](float ms) {
      return trace_host_start_ +
             std::chrono::duration_cast<TraceRecorder::Clock::duration>(
                 us(double(ms) * 1e3));
    };
    trace_->record(d.name, kernelName(d.kernel), trace_rows_[k], pos,
                   at(begin_ms), at(end_ms));
  }
  trace_marks_.clear();
  trace_rows_.clear();
}

void CudaExecutor::uploadStep(int64_t pos, int64_t T, const int32_t *tokens) {
  h_step_->pos = static_cast<int32_t>(pos);
  if (tokens)
    std::memcpy(h_step_->tokens, tokens, size_t(T) * sizeof(int32_t));
  check(cudaMemcpyAsync(d_step_, h_step_,
                        sizeof(StepParams) + size_t(T) * sizeof(int32_t),
                        cudaMemcpyHostToDevice, stream_),
        "step upload");
}

void CudaExecutor::forward(const int32_t *tokens,
                           const float *const *embeddings, int64_t T,
                           int64_t pos, int64_t logit_begin, int64_t logit_end,
                           float *logits) {
  const ProgramDesc &prog = m_.forward();
  const int64_t vocab = m_.config.vocab_size;
  const float *out = buffer(prog.logits_buffer);
  const bool one =
      T == 1 && !embeddings && !trace_ && logit_begin == 0 && logit_end == 1;
  h_step_->pos = static_cast<int32_t>(pos);
  h_step_->tokens[0] = tokens[0];
  if (one) {
    runCaptured(forward_graph_, [&] {
      uploadStep(pos, 1, nullptr);
      run(prog, 0, prog.dispatches.size(), 1, 0, 1, nullptr);
    });
  } else {
    uploadStep(pos, T, tokens);
    run(prog, 0, prog.dispatches.size(), T, logit_begin, logit_end, embeddings);
  }
  if (logit_end > logit_begin)
    check(cudaMemcpyAsync(logits, out + logit_begin * vocab,
                          size_t((logit_end - logit_begin) * vocab) *
                              sizeof(float),
                          cudaMemcpyDeviceToHost, stream_),
          "logits download");
  sync("forward");
}

int32_t CudaExecutor::forwardSample(int32_t token, int64_t pos,
                                    float temperature, float top_p,
                                    float coin) {
  const ProgramDesc &prog = m_.forward();
  const int vocab = static_cast<int>(m_.config.vocab_size);
  const float *logits = buffer(prog.logits_buffer);
  h_step_->pos = static_cast<int32_t>(pos);
  h_step_->tokens[0] = token;
  h_step_->temperature = temperature;
  h_step_->top_p = top_p;
  h_step_->coin = coin;
  runCaptured(decode_graph_, [&] {
    uploadStep(pos, 1, nullptr);
    run(prog, 0, prog.dispatches.size(), 1, 0, 1, nullptr);
    timelineDispatch("", "sample");
    launchKernel(sampleKernel, 1, 1024, 0, logits, vocab, d_step_, d_next_);
    check(cudaMemcpyAsync(h_next_, d_next_, sizeof(int32_t),
                          cudaMemcpyDeviceToHost, stream_),
          "token download");
  });
  sync("decode step");
  return *h_next_;
}

// Enqueues `work` (launches whose loop caches read the slots after the
// key's first element whole) as the graph kept for `key`, captured the
// first time. Where the capture fails, runs it directly and turns loop
// graphs off: an experiment must not make the model unusable.
template <typename F>
void CudaExecutor::runLoopGraph(std::vector<int32_t> key, F &&work) {
  const size_t layers = loop_cache_of_layer_.size();
  // Storage first: nothing is allocated while capturing.
  for (size_t i = 1; i < key.size(); ++i)
    loopSlot(key[i], m_.kv_caches[loop_cache_of_layer_[(i - 1) % layers]]);
  auto at = loop_graphs_.try_emplace(std::move(key), nullptr).first;
  step_slots_ = at->first.data() + 1; // map keys do not move
  try {
    try {
      runCaptured(at->second, work);
    } catch (const Error &e) {
      if (at->second) // captured: the launch itself failed
        throw;
      std::fprintf(stderr,
                   "loom: LOOM_CUDA_LOOP_GRAPH: a looped step could not be "
                   "captured (%s); looped steps run piece by piece\n",
                   e.what());
      loop_graph_ = false;
      work();
    }
  } catch (...) {
    step_slots_ = nullptr;
    throw;
  }
  step_slots_ = nullptr;
}

void CudaExecutor::loopStepGraph(int32_t token, int64_t pos, const float *state,
                                 const std::vector<int32_t> &slots) {
  const ProgramDesc &prog = m_.forward();
  const LoopDesc &L = *prog.loop;
  const size_t layers = loop_cache_of_layer_.size();
  const int64_t D = ld(L.state_buffer);
  if (!capturesLoopSteps() || layers == 0 || slots.empty() ||
      slots.size() % layers != 0 || size_t(D) > h_rows_floats_)
    throw Error("internal: loopStepGraph without a captured loop step");
  // The graph copies the step's parameters and the state from these pinned
  // rows when it runs; the previous step's graph has finished reading them
  // (the session downloads its latent, which waits).
  h_step_->pos = static_cast<int32_t>(pos);
  h_step_->tokens[0] = token;
  std::memcpy(h_rows_, state, size_t(D) * sizeof(float));
  const int64_t iterations = int64_t(slots.size() / layers);
  std::vector<int32_t> key{0};
  key.insert(key.end(), slots.begin(), slots.end());
  runLoopGraph(std::move(key), [&] {
    uploadStep(pos, 1, nullptr);
    run(prog, 0, L.body_begin, 1, 0, 1, nullptr);
    check(cudaMemcpyAsync(buffer(L.state_buffer), h_rows_,
                          size_t(D) * sizeof(float), cudaMemcpyHostToDevice,
                          stream_),
          "initial state");
    for (step_iteration_ = 0; step_iteration_ < iterations; ++step_iteration_) {
      run(prog, L.body_begin, L.body_end, 1, 0, 1, nullptr);
      copyRows(L.state_buffer, L.next_state_buffer, 1);
    }
    run(prog, L.body_end, L.tail_end, 1, 0, 1, nullptr);
  });
}

void CudaExecutor::loopIterationGraph(const std::vector<int32_t> &slots,
                                      bool with_tail) {
  const ProgramDesc &prog = m_.forward();
  const LoopDesc &L = *prog.loop;
  if (!capturesLoopSteps() || slots.empty() ||
      slots.size() != loop_cache_of_layer_.size())
    throw Error("internal: loopIterationGraph without a captured iteration");
  std::vector<int32_t> key{with_tail ? 2 : 1};
  key.insert(key.end(), slots.begin(), slots.end());
  step_iteration_ = 0;
  runLoopGraph(std::move(key), [&] {
    run(prog, L.body_begin, L.body_end, 1, 0, 1, nullptr);
    copyRows(L.state_buffer, L.next_state_buffer, 1);
    if (with_tail)
      run(prog, L.body_end, L.tail_end, 1, 0, 1, nullptr);
  });
}

int32_t CudaExecutor::sampleRow(int64_t row, float temperature, float top_p,
                                float coin) {
  const ProgramDesc &prog = m_.forward();
  h_step_->temperature = temperature;
  h_step_->top_p = top_p;
  h_step_->coin = coin;
  check(cudaMemcpyAsync(d_step_, h_step_, sizeof(StepParams),
                        cudaMemcpyHostToDevice, stream_),
        "sampler parameters");
  launchKernel(sampleKernel, 1, 1024, 0,
               buffer(prog.logits_buffer) + row * ld(prog.logits_buffer),
               int(m_.config.vocab_size), d_step_, d_next_);
  check(cudaMemcpyAsync(h_next_, d_next_, sizeof(int32_t),
                        cudaMemcpyDeviceToHost, stream_),
        "token download");
  sync("sampling");
  return *h_next_;
}

void CudaExecutor::runRows(const ProgramDesc &prog, const int32_t *tokens,
                           const float *rows, int64_t T, float *out) {
  if (prog.input_buffer >= 0) {
    const uint32_t b = static_cast<uint32_t>(prog.input_buffer);
    check(cudaMemcpyAsync(buffer(b), rows, size_t(T * ld(b)) * sizeof(float),
                          cudaMemcpyHostToDevice, stream_),
          "input rows");
    uploadStep(0, 0, nullptr);
  } else {
    uploadStep(0, T, tokens);
  }
  const int64_t left = run(prog, 0, prog.dispatches.size(), T, 0, T, nullptr);
  check(cudaMemcpyAsync(out, buffer(prog.logits_buffer),
                        size_t(left * ld(prog.logits_buffer)) * sizeof(float),
                        cudaMemcpyDeviceToHost, stream_),
        "output rows");
  sync(prog.name.c_str());
}

} // namespace
} // namespace loom::rt::cuda

extern "C" __attribute__((visibility("default"))) int
loom_cuda_probe(char *why, size_t why_size) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::snprintf(why, why_size, "%s",
                  e != cudaSuccess ? cudaGetErrorString(e)
                                   : "the driver reports no device");
    cudaGetLastError();
    return 0;
  }
  return 1;
}

extern "C" __attribute__((visibility("default"))) loom::rt::DeviceExecutor *
loom_cuda_create(const loom::rt::ModelData *model, int device,
                 loom::rt::TraceRecorder *trace,
                 loom::rt::LoopKvSource *loop_kv, char *err, size_t err_size) {
  try {
    return new loom::rt::cuda::CudaExecutor(*model, device, trace, loop_kv);
  } catch (const std::exception &e) {
    std::snprintf(err, err_size, "%s", e.what());
  } catch (...) {
    std::snprintf(err, err_size, "the CUDA backend failed to start");
  }
  return nullptr;
}
