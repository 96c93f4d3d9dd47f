// A device backend executes a verified artifact's programs somewhere other
// than the CPU kernels (today: CUDA, runtime/cuda). The session keeps all
// validation and bookkeeping (ids, context, positions) and hands the backend
// plain, checked work.
//
// The CUDA backend is a separate shared library, libloomrt_cuda.so, loaded
// with dlopen on the first CUDA session, so libloomrt itself links nothing of
// CUDA and runs on machines without the CUDA libraries.
#ifndef LOOM_RUNTIME_DEVICE_H
#define LOOM_RUNTIME_DEVICE_H

#include "artifact.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace loom::rt {

class TraceRecorder;

// The session's KV policy for the caches of a looped block (loop_layer >=
// 0): for the running iteration, marks positions pos .. pos + T - 1 present
// in the slot `cache` writes, points *src at one slot index per position
// up to pos + T - 1 (-1: absent) to read K/V from, and returns the written
// slot. Slots are numbered from 0; a backend keeps their storage.
class LoopKvSource {
public:
  virtual int64_t planLoopKv(uint32_t cache, int64_t T,
                             const int32_t **src) = 0;

protected:
  ~LoopKvSource() = default;
};

class DeviceExecutor {
public:
  virtual ~DeviceExecutor() = default;

  // Runs the forward program on T (<= max_tokens) rows at positions pos ..
  // pos + T - 1: tokens[t] (range-checked) or, where embeddings[t] is not
  // null (embeddings may be null), that host row of dim floats as the
  // Embed output. Copies the logits of rows [logit_begin, logit_end) to
  // `logits` (row-major, vocab floats per row).
  virtual void forward(const int32_t *tokens, const float *const *embeddings,
                       int64_t T, int64_t pos, int64_t logit_begin,
                       int64_t logit_end, float *logits) = 0;

  // The pieces a looped model's step is made of (the session drives the
  // iterations, see SessionState::loopStep): beginStep uploads the step's
  // ids and position; run enqueues dispatches [begin, end) of `prog` on T
  // rows (returns the rows left after a TakeRow); upload / download copy
  // rows [row, row + n) of a buffer (download waits for the work before
  // it); copyRows copies n rows between buffers on the device.
  virtual void beginStep(const int32_t *tokens, int64_t T, int64_t pos) = 0;
  virtual int64_t run(const ProgramDesc &prog, size_t begin, size_t end,
                      int64_t T, int64_t logit_begin, int64_t logit_end,
                      const float *const *embeddings) = 0;
  virtual void upload(uint32_t buffer, const float *rows, int64_t n) = 0;
  virtual void download(uint32_t buffer, int64_t row, int64_t n,
                        float *out) = 0;
  virtual void copyRows(uint32_t dst, uint32_t src, int64_t n) = 0;

  // Whether loopStepGraph and loopIterationGraph run looped steps
  // (CUDA unless LOOM_CUDA_LOOP_GRAPH=0, not in traced sessions); otherwise the
  // session drives them piece by piece.
  virtual bool capturesLoopSteps() const = 0;
  // A looped model's whole token step on one row with a fixed iteration
  // count, enqueued as one CUDA graph (captured for a slot list, replayed
  // while it stays the same): `token` at `pos`, the prelude, the initial
  // state `state` (one row of the state buffer), iterations of the body
  // whose core layer j of iteration i writes its K/V to slot
  // slots[i * core_layers + j] and reads that slot whole (the session has
  // checked it holds every earlier position), then the tail. The logits
  // (row 0) and the latent stay in their buffers for download / sampleRow.
  virtual void loopStepGraph(int32_t token, int64_t pos, const float *state,
                             const std::vector<int32_t> &slots) = 0;
  // One iteration of a one-row looped step (after beginStep, the prelude
  // and the state upload, see SessionState::loopStep) as one CUDA graph,
  // captured per slot list: the body, whose core layer j writes and reads
  // slot slots[j] whole, the state copy and, with `with_tail`, the tail
  // (an exit criterion that reads the logits).
  virtual void loopIterationGraph(const std::vector<int32_t> &slots,
                                  bool with_tail) = 0;

  // One decode step of one token at `pos` and the choice of the next token
  // on the device, as Sampler::sampleWithCoin(logits, coin) chooses it:
  // the argmax (lowest id on ties) when temperature == 0, otherwise the
  // first id whose cumulative softmax(logits / temperature) mass exceeds
  // coin (in [0, 1)), over the nucleus of mass top_p when top_p < 1.
  // Returns -1 when a logit is NaN, and kSampleOnHost when the nucleus is
  // too large for the device sampler (the step's logits are then in the
  // forward program's logits buffer, row 0, for the host to choose from).
  static constexpr int32_t kSampleOnHost = -2;
  virtual int32_t forwardSample(int32_t token, int64_t pos, float temperature,
                                float top_p, float coin) = 0;
  // The same choice from row `row` of the forward program's logits buffer
  // as the work enqueued so far leaves it (a looped model's step, which the
  // session drives with run()); waits for that work.
  virtual int32_t sampleRow(int64_t row, float temperature, float top_p,
                            float coin) = 0;

  // Runs a program other than "forward" on T rows (see
  // SessionState::runRows): `rows` (T rows of the input buffer) or
  // `tokens`; copies T rows of its output buffer (out_rows of them after a
  // TakeRow) to `out`.
  virtual void runRows(const ProgramDesc &prog, const int32_t *tokens,
                       const float *rows, int64_t T, float *out) = 0;

  // CUDA graphs launched since construction (Session::graphLaunches).
  virtual int64_t graphLaunches() const = 0;

  // Device memory the backend holds: weights, arena, KV caches, scratch.
  virtual uint64_t deviceBytes() const = 0;
  virtual std::string deviceName() const = 0;
};

// Why CUDA cannot be used here ("this build has no CUDA backend", the
// plugin's load error, or the driver's answer), or "" when it can.
std::string cudaUnavailableReason();

// Loads the backend and uploads the model to CUDA device `device`. Throws
// loom::Error "no CUDA device (REASON)" when CUDA is unavailable, or the
// backend's message (out of device memory, unsupported model). A looped
// model needs `loop_kv` (the session), which must outlive the executor.
std::unique_ptr<DeviceExecutor> createCudaExecutor(const ModelData &model,
                                                   int device,
                                                   TraceRecorder *trace,
                                                   LoopKvSource *loop_kv);

// The plugin's entry points (extern "C", resolved with dlsym).
// loom_cuda_probe: writes a reason and returns 0 when no device is usable.
// loom_cuda_create: returns a new executor, or null with a message in err.
using CudaProbeFn = int (*)(char *why, size_t why_size);
using CudaCreateFn = DeviceExecutor *(*)(const ModelData *model, int device,
                                         TraceRecorder *trace,
                                         LoopKvSource *loop_kv, char *err,
                                         size_t err_size);

} // namespace loom::rt

#endif // LOOM_RUNTIME_DEVICE_H
