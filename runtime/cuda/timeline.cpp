// The host side of the GPU timeline (timeline.h): attribution of block
// records to launches, the chain decomposition and the summaries.
#include "timeline.h"

#include "../src/trace.h"

#include <algorithm>
#include <cstdio>

namespace loom::rt::cuda {
namespace {

// later - earlier, from ns to microseconds (negative where later is
// earlier). The difference is taken in integers: %globaltimer counts from
// the epoch (~1.8e18 ns), where a double is exact only to 256 ns.
double micros(uint64_t later, uint64_t earlier) {
  return double(int64_t(later - earlier)) * 1e-3;
}

// The separator where out holds events already, then {"name":NAME.
void beginEvent(std::string &out, const std::string &name) {
  if (!out.empty())
    out += ",\n";
  out += "{\"name\":";
  appendJsonString(out, name);
}

} // namespace

std::vector<KernelSpan>
attributeTimeline(const std::vector<TimelineLaunch> &launches,
                  const std::vector<TimelineRecord> &records,
                  std::string *why) {
  const auto fail = [&](std::string reason) {
    *why = std::move(reason);
    return std::vector<KernelSpan>();
  };
  size_t total = 0;
  for (const TimelineLaunch &l : launches)
    total += l.blocks;
  if (records.size() != total)
    return fail(std::to_string(records.size()) + " blocks recorded where " +
                std::to_string(launches.size()) + " launches have " +
                std::to_string(total));
  std::vector<KernelSpan> spans(launches.size());
  size_t r = 0;
  for (size_t i = 0; i < launches.size(); ++i) {
    KernelSpan &s = spans[i];
    s.blocks = launches[i].blocks;
    for (uint32_t b = 0; b < launches[i].blocks; ++b, ++r) {
      const TimelineRecord &x = records[r];
      if (x.blocks != launches[i].blocks)
        return fail("block " + std::to_string(r) + " belongs to a grid of " +
                    std::to_string(x.blocks) + " blocks, launch " +
                    std::to_string(i) + " (" + launches[i].label + ") has " +
                    std::to_string(launches[i].blocks));
      if (x.start == 0 || x.end < x.start || (x.wait && x.wait < x.start) ||
          (x.wait && x.end < x.wait))
        return fail("block " + std::to_string(r) + " of launch " +
                    std::to_string(i) + " (" + launches[i].label +
                    ") has no consistent times");
      if (b == 0) {
        s.first_start = x.start;
        s.first_end = s.last_end = x.end;
      }
      s.first_start = std::min(s.first_start, x.start);
      s.first_end = std::min(s.first_end, x.end);
      s.last_end = std::max(s.last_end, x.end);
      if (x.wait) {
        s.first_wait = s.first_wait ? std::min(s.first_wait, x.wait) : x.wait;
        s.last_wait = std::max(s.last_wait, x.wait);
      }
    }
  }
  return spans;
}

std::vector<ChainTime> chainTimes(const std::vector<KernelSpan> &spans) {
  std::vector<ChainTime> out(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    const KernelSpan &s = spans[i];
    const uint64_t prev = i ? spans[i - 1].last_end : s.first_start;
    // A launch that never waited (none of ours) is released at its start.
    const uint64_t released = s.first_wait ? s.first_wait : s.first_start;
    ChainTime &c = out[i];
    c.chain = micros(s.last_end, prev);
    c.wait = micros(std::max(released, prev), prev);
    c.body = c.chain - c.wait;
    c.lead = micros(prev, s.first_start);
    c.tail = micros(s.last_end, s.first_end);
  }
  return out;
}

namespace {

void accumulate(ChainTime &sum, const ChainTime &c) {
  sum.chain += c.chain;
  sum.wait += c.wait;
  sum.body += c.body;
  sum.lead += c.lead;
  sum.tail += c.tail;
}

ChainTime scaled(const ChainTime &c, double f) {
  return {c.chain * f, c.wait * f, c.body * f, c.lead * f, c.tail * f};
}

} // namespace

void TimelineSummary::add(const void *graph,
                          const std::vector<TimelineLaunch> &launches,
                          const std::vector<KernelSpan> &spans) {
  if (spans.empty() || spans.size() != launches.size())
    return;
  const std::vector<ChainTime> c = chainTimes(spans);
  Graph &g = graphs_[graph];
  // A new graph, or a key reused by another graph: start over.
  if (g.replays == 0 || g.launches.size() != launches.size()) {
    g.replays = 0;
    g.launches = launches;
    g.sum.assign(launches.size(), ChainTime());
  }
  ++g.replays;
  for (size_t i = 0; i < c.size(); ++i) {
    accumulate(g.sum[i], c[i]);
    Acc &a = by_label_[launches[i].label];
    ++a.n;
    accumulate(a.sum, c[i]);
  }
  ++replays_;
  span_us_ += micros(spans.back().last_end, spans[0].first_start);
}

std::vector<TimelineSummary::Row> TimelineSummary::classes() const {
  std::vector<Row> rows;
  if (replays_ == 0)
    return rows;
  const double f = 1.0 / double(replays_);
  for (const auto &[label, a] : by_label_)
    rows.push_back({label, double(a.n) * f, scaled(a.sum, f)});
  std::stable_sort(rows.begin(), rows.end(), [](const Row &a, const Row &b) {
    return a.us.chain > b.us.chain;
  });
  return rows;
}

std::vector<TimelineSummary::Row> TimelineSummary::launches() const {
  const Graph *most = nullptr;
  for (const auto &[key, g] : graphs_)
    if (!most || g.replays > most->replays)
      most = &g;
  std::vector<Row> rows;
  if (!most)
    return rows;
  const double f = 1.0 / double(most->replays);
  for (size_t i = 0; i < most->launches.size(); ++i)
    rows.push_back({most->launches[i].label + " " + most->launches[i].dispatch,
                    1.0, scaled(most->sum[i], f)});
  return rows;
}

TimelineSummary::Row TimelineSummary::total() const {
  Row all{"all", 0, ChainTime()};
  for (const Row &r : classes()) {
    all.per_step += r.per_step;
    accumulate(all.us, r.us);
  }
  return all;
}

std::string TimelineSummary::table() const {
  std::string out;
  char line[256];
  const Row all = total();
  std::snprintf(line, sizeof line,
                "GPU timeline: %zu graph replays (%zu graphs), %.1f kernels "
                "and %.1f us a replay (first block start to last block end)\n",
                replays_, graphs_.size(), all.per_step, stepMicros());
  out += line;
  if (skipped_) {
    std::snprintf(line, sizeof line,
                  "  %zu replays not attributed: ", skipped_);
    out += line + last_skip_ + "\n";
  }
  if (replays_ == 0)
    return out;
  out += "  us a replay        kernels    chain     wait     body     lead  "
         "   tail\n";
  std::vector<Row> rows = classes();
  rows.push_back(all);
  for (const Row &r : rows) {
    std::snprintf(line, sizeof line,
                  "  %-20s %7.1f %8.1f %8.1f %8.1f %8.1f %8.1f\n",
                  r.label.c_str(), r.per_step, r.us.chain, r.us.wait, r.us.body,
                  r.us.lead, r.us.tail);
    out += line;
  }
  return out;
}

namespace {

void appendRow(std::string &out, const TimelineSummary::Row &r) {
  char num[256];
  out += "{\"label\":";
  appendJsonString(out, r.label);
  std::snprintf(num, sizeof num,
                ",\"per_step\":%.3f,\"chain_us\":%.3f,\"wait_us\":%.3f,"
                "\"body_us\":%.3f,\"lead_us\":%.3f,\"tail_us\":%.3f}",
                r.per_step, r.us.chain, r.us.wait, r.us.body, r.us.lead,
                r.us.tail);
  out += num;
}

} // namespace

std::string TimelineSummary::json() const {
  char num[128];
  std::snprintf(num, sizeof num,
                "{\"replays\":%zu,\"skipped\":%zu,\"step_us\":%.3f,", replays_,
                skipped_, stepMicros());
  std::string out = num;
  out += "\"total\":";
  appendRow(out, total());
  out += ",\"classes\":[";
  const std::vector<Row> c = classes(), l = launches();
  for (size_t i = 0; i < c.size(); ++i) {
    out += i ? ",\n" : "\n";
    appendRow(out, c[i]);
  }
  out += "],\"launches\":[";
  for (size_t i = 0; i < l.size(); ++i) {
    out += i ? ",\n" : "\n";
    appendRow(out, l[i]);
  }
  out += "]}";
  return out;
}

void appendTimelineEvents(std::string &out,
                          const std::vector<TimelineLaunch> &launches,
                          const std::vector<KernelSpan> &spans,
                          uint64_t t0_ns) {
  const std::vector<ChainTime> c = chainTimes(spans);
  char num[256];
  for (size_t i = 0; i < spans.size() && i < launches.size(); ++i) {
    const KernelSpan &s = spans[i];
    beginEvent(out, launches[i].label);
    std::snprintf(num, sizeof num,
                  ",\"cat\":\"gpu\",\"ph\":\"X\",\"pid\":2,\"tid\":%zu,"
                  "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"dispatch\":",
                  i % 2 + 1, micros(s.first_start, t0_ns),
                  micros(s.last_end, s.first_start));
    out += num;
    appendJsonString(out, launches[i].dispatch);
    std::snprintf(num, sizeof num,
                  ",\"blocks\":%u,\"chain_us\":%.3f,\"wait_us\":%.3f,"
                  "\"body_us\":%.3f,\"lead_us\":%.3f,\"tail_us\":%.3f}}",
                  s.blocks, c[i].chain, c[i].wait, c[i].body, c[i].lead,
                  c[i].tail);
    out += num;
  }
}

void appendBlockEvents(std::string &out,
                       const std::vector<TimelineLaunch> &launches,
                       const std::vector<TimelineRecord> &records,
                       uint64_t t0_ns, size_t max_blocks) {
  char num[256];
  size_t r = 0;
  for (size_t i = 0; i < launches.size(); ++i) {
    if (i > 0 && r + launches[i].blocks > max_blocks)
      break;
    for (uint32_t b = 0; b < launches[i].blocks && r < records.size();
         ++b, ++r) {
      const TimelineRecord &x = records[r];
      beginEvent(out, launches[i].label);
      std::snprintf(num, sizeof num,
                    ",\"cat\":\"block\",\"ph\":\"X\",\"pid\":3,\"tid\":%u,"
                    "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"launch\":%zu,"
                    "\"block\":%u,\"wait_us\":%.3f}}",
                    x.sm, micros(x.start, t0_ns), micros(x.end, x.start), i, b,
                    x.wait ? micros(x.wait, x.start) : 0.0);
      out += num;
    }
  }
}

} // namespace loom::rt::cuda
