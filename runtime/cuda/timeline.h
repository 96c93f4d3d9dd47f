// The GPU timeline of replayed CUDA graphs (LOOM_CUDA_TIMELINE, the
// libloomrt_cuda_timeline.so build of the plugin; docs/cuda.md, "The GPU
// timeline"): what each kernel block records on the device, and the host's
// attribution of those records to the graph's launches and its summary.
// Host-only C++ (no CUDA), so that CI tests the analysis without a GPU.
#ifndef LOOM_RUNTIME_CUDA_TIMELINE_H
#define LOOM_RUNTIME_CUDA_TIMELINE_H

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace loom::rt::cuda {

// One thread block of one launch, times in nanoseconds of the GPU's global
// timer (%globaltimer). Written by the block's last thread to finish at the
// index the block drew at its start (its start order in the replay).
struct TimelineRecord {
  uint64_t start;  // first thread's first instruction
  uint64_t wait;   // past the programmatic wait (0: the block never waited)
  uint64_t end;    // the block's last thread done
  uint32_t blocks; // the launch's grid size (checks the attribution)
  uint32_t sm;     // the multiprocessor that ran it
};

// A kernel launch of a captured graph, in launch order.
struct TimelineLaunch {
  std::string label;    // kernel class: "gemv:qkv", "attention", ...
  std::string dispatch; // the dispatch it serves ("" for the sampler)
  uint32_t blocks = 0;
};

// One launch in one replay: its blocks' extreme times.
struct KernelSpan {
  uint64_t first_start = 0, first_wait = 0, last_wait = 0, first_end = 0,
           last_end = 0;
  uint32_t blocks = 0;
};

// Attributes the records of one replay to its launches. Every block of a
// launch starts before any block of the next one (each kernel lets its
// successor launch only after its own start, kernels.cuh KernelScope), so
// the start order puts launch i's blocks at indices [sum of the blocks
// before i, + blocks of i). Returns one span per launch, or none with the
// reason in *why where the records do not fit the launches (a count or a
// grid size that differs, a block that never finished).
std::vector<KernelSpan>
attributeTimeline(const std::vector<TimelineLaunch> &launches,
                  const std::vector<TimelineRecord> &records, std::string *why);

// The time of each launch on the step's dependency chain, microseconds:
// chain = its last block's end - the previous launch's last block's end
// (the first launch: from its own first start), split into wait (until its
// first block passes the programmatic wait) and body (from there to its
// last block's end); lead = how long before the previous launch ended its
// first block was resident (negative: it started after); tail = its last
// block's end - its first block's end.
struct ChainTime {
  double chain = 0, wait = 0, body = 0, lead = 0, tail = 0;
};
std::vector<ChainTime> chainTimes(const std::vector<KernelSpan> &spans);

// Accumulates replays of graphs and sums them up per kernel class and, for
// the graph replayed most, per launch.
class TimelineSummary {
public:
  // `graph`: any key that tells the session's graphs apart.
  void add(const void *graph, const std::vector<TimelineLaunch> &launches,
           const std::vector<KernelSpan> &spans);
  void skip(const std::string &why) { ++skipped_, last_skip_ = why; }
  size_t replays() const { return replays_; }

  struct Row {
    std::string label;
    double per_step = 0; // launches a replay
    ChainTime us;        // per replay (sums over its launches)
  };
  // Classes by chain time, largest first; per replay of any graph.
  std::vector<Row> classes() const;
  // Every class together ("all"): how much of a replay is waiting on
  // predecessors and how much is kernels' bodies.
  Row total() const;
  // The most replayed graph's launches, each averaged over its replays.
  std::vector<Row> launches() const;
  double stepMicros() const { return replays_ ? span_us_ / replays_ : 0; }
  // The table printed at the end of a timeline session.
  std::string table() const;
  // {"replays":..., "step_us":..., "total":{...}, "classes":[...],
  //  "launches":[...]}
  std::string json() const;

private:
  struct Acc {
    size_t n = 0;
    ChainTime sum;
  };
  struct Graph {
    size_t replays = 0;
    std::vector<TimelineLaunch> launches;
    std::vector<ChainTime> sum; // per launch
  };
  std::map<std::string, Acc> by_label_;
  std::map<const void *, Graph> graphs_;
  size_t replays_ = 0, skipped_ = 0;
  double span_us_ = 0;
  std::string last_skip_;
};

// Chrome / Perfetto trace events ("X", microseconds from t0_ns) of one
// replay's launches, appended to `out` with a leading comma where it is not
// empty: one row per launch parity so that overlapping launches show.
void appendTimelineEvents(std::string &out,
                          const std::vector<TimelineLaunch> &launches,
                          const std::vector<KernelSpan> &spans, uint64_t t0_ns);

// The blocks of one replay's first launches, each as its own event (pid 3,
// one row per multiprocessor: waves, stragglers and idle SMs show), as
// many whole launches as hold at most max_blocks blocks (but at least the
// first), appended as above; records in start order, as attributeTimeline
// takes them.
void appendBlockEvents(std::string &out,
                       const std::vector<TimelineLaunch> &launches,
                       const std::vector<TimelineRecord> &records,
                       uint64_t t0_ns, size_t max_blocks);

} // namespace loom::rt::cuda

#endif // LOOM_RUNTIME_CUDA_TIMELINE_H
