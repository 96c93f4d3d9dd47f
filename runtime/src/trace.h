// Chrome trace (Trace Event Format) recording: one complete ("X") event per
// dispatch, written as JSON that chrome://tracing and Perfetto open.
#ifndef LOOM_RUNTIME_TRACE_H
#define LOOM_RUNTIME_TRACE_H

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loom::rt {

// Appends s to out as a JSON string: quoted, escaped, and with bytes that
// are not UTF-8 replaced (names come from artifacts, which are untrusted).
void appendJsonString(std::string &out, std::string_view s);

class TraceRecorder {
public:
  using Clock = std::chrono::steady_clock;

  TraceRecorder() : epoch_(Clock::now()) {}

  // `name` and `kernel` must outlive the recorder (they point into the
  // model, which the session keeps alive).
  void record(std::string_view name, std::string_view kernel, int64_t rows,
              int64_t start_pos, Clock::time_point begin,
              Clock::time_point end);

  size_t size() const { return events_.size(); }

  // Throws loom::Error "cannot write trace 'PATH': REASON".
  void write(const std::string &path) const;

private:
  struct Event {
    std::string_view name;
    std::string_view kernel;
    int64_t rows;
    int64_t start_pos;
    double ts_us;
    double dur_us;
  };
  Clock::time_point epoch_;
  std::vector<Event> events_;
};

} // namespace loom::rt

#endif // LOOM_RUNTIME_TRACE_H
