// The CUDA backend's launch choices, on the host: which kernel
// instantiation a GEMV configuration reaches, grid sizes, head-dim
// instantiations, shared memory against the device limits; and the device
// sampler's nucleus logic run sequentially against the CPU sampler. No GPU
// needed (no kernel runs), so CI checks them on every build.
#include "../../../runtime/cuda/persistent.h"
#include "loom/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace loom::rt::cuda;

namespace {

struct Reached {
  int calls = 0, vec = 0, rows = 0, unroll = 0, split = 0;
  bool bf16 = false, ahead = false;
};

template <typename W, int VEC> Reached reach(const GemvConfig &c, int T) {
  Reached r;
  withGemvConfig<W, VEC>(c, T, [&](auto tag) {
    using G = decltype(tag);
    ++r.calls;
    r.vec = G::kVec;
    r.rows = G::kRows;
    r.unroll = G::kUnroll;
    r.split = G::kSplit;
    r.ahead = G::kAhead;
    r.bf16 = sizeof(typename G::Weight) == 2;
  });
  return r;
}

TEST(GemvConfig, EveryConfigurationReachesItsInstantiation) {
  for (int T : {1, 2, 3, kGemvMaxRows})
    for (int u : {4, 8})
      for (int s : {1, 2, 4})
        for (bool ahead : {false, true}) {
          const GemvConfig c{u, s, ahead};
          const Reached b = reach<__nv_bfloat16, 8>(c, T);
          EXPECT_EQ(b.calls, 1);
          EXPECT_TRUE(b.bf16);
          EXPECT_EQ(b.vec, 8);
          EXPECT_EQ(b.split, s) << "T " << T << " U " << u;
          EXPECT_EQ(b.rows, T == 1 ? 1 : kGemvMaxRows);
          // 8 loads in flight only for single-row bf16 GEMVs.
          EXPECT_EQ(b.unroll, T == 1 && u == 8 ? 8 : 4);
          // The early second group only for single-row GEMVs.
          EXPECT_EQ(b.ahead, T == 1 && ahead);
          const Reached f = reach<float, 4>(c, T);
          EXPECT_EQ(f.calls, 1);
          EXPECT_FALSE(f.bf16);
          EXPECT_EQ(f.vec, 4);
          EXPECT_EQ(f.split, s);
          EXPECT_EQ(f.rows, T == 1 ? 1 : kGemvMaxRows);
          EXPECT_EQ(f.unroll, 4);
          EXPECT_EQ(f.ahead, T == 1 && ahead);
        }
}

TEST(GemvConfig, DefaultsAreInstantiatedConfigurations) {
  for (int64_t N : {1, 8, 768, 1024, 1025, 2048, 3072, 8192, 16384, 32000})
    for (int64_t K : {8, 768, 1023, 1024, 2048, 8192}) {
      const GemvConfig c = gemvConfigFor(N, K);
      EXPECT_TRUE(c.unroll == 4 || c.unroll == 8);
      EXPECT_TRUE(c.split == 1 || c.split == 2 || c.split == 4);
      // Narrow matrices split the most; wide ones of short rows not at all.
      if (N <= 1024)
        EXPECT_EQ(c.split, 4) << N << " x " << K;
      if (N >= 16384 && K < 1024)
        EXPECT_EQ(c.split, 1) << N << " x " << K;
    }
}

// LOOM_CUDA_GEMV's two forms: one configuration for every GEMV, or one
// per named kernel class; anything else is refused with the reason.
TEST(GemvConfig, OverridesParse) {
  GemvOverrides o;
  EXPECT_EQ(parseGemvOverrides("8,4", o), "");
  EXPECT_TRUE(o.every);
  EXPECT_EQ(o.all.unroll, 8);
  EXPECT_EQ(o.all.split, 4);
  EXPECT_TRUE(o.by_class.empty());
  EXPECT_EQ(parseGemvOverrides("qkv:4,4;gate_up:8,1;logits:4,2", o), "");
  EXPECT_FALSE(o.every);
  ASSERT_EQ(o.by_class.size(), 3u);
  EXPECT_EQ(o.by_class[0].first, "qkv");
  EXPECT_EQ(o.by_class[0].second.split, 4);
  EXPECT_EQ(o.by_class[1].first, "gate_up");
  EXPECT_EQ(o.by_class[1].second.unroll, 8);
  EXPECT_EQ(o.by_class[1].second.split, 1);
  EXPECT_EQ(o.by_class[2].first, "logits");
  EXPECT_EQ(o.by_class[2].second.split, 2);
  for (const char *bad :
       {"", "4", "4,3", "2,2", "4,2,1", "4,2x", "qkv=4,4", "qkv:4", "norm:4,2",
        "attention:4,2", "qkv:4,2;", "qkv:4,2;qkv:4,4", ":4,2", "qkv:4,2;out",
        "gate_up:16,2"}) {
    const std::string why = parseGemvOverrides(bad, o);
    EXPECT_FALSE(why.empty()) << "'" << bad << "' accepted";
  }
  EXPECT_NE(parseGemvOverrides("norm:4,2", o).find("names no GEMV class"),
            std::string::npos);
  EXPECT_NE(parseGemvOverrides("out:4,2;out:8,2", o).find("given twice"),
            std::string::npos);
}

// gemvBulkKernel (LOOM_CUDA_GEMV_BULK): the shapes it takes, its ring in
// Hopper's shared memory, and a pass of 2048 weights being 8 a thread.
TEST(GemvBulk, TakesTheLlamaShapes) {
  EXPECT_EQ(kBulkThreads * 8, 2048);
  EXPECT_EQ(gemvBulkSmem(4), size_t(64 * 1024));
  for (int ns : {4, 6, 8, 12}) {
    EXPECT_LE(gemvBulkSmem(ns) + 1024, size_t(227 * 1024)) << ns;
    for (int64_t K : {768, 1024, 2048, 2816, 4096, 8192, 16384})
      for (int M : {1, 2}) {
        const bool want = K == 2048 || (M == 1 && K == 8192);
        int calls = 0;
        EXPECT_EQ(withGemvBulk(ns, K, M, [&](auto) { ++calls; }), want)
            << ns << " " << K << " " << M;
        EXPECT_EQ(calls, want ? 1 : 0);
      }
  }
  for (int ns : {0, 5, 16})
    EXPECT_FALSE(withGemvBulk(ns, 2048, 1, [](auto) {})) << ns;
  // Two 6-stage blocks fit a multiprocessor (228 KiB, 1 KiB a block kept).
  EXPECT_LE(2 * (gemvBulkSmem(6) + 1024), size_t(228 * 1024));
}

TEST(GemvConfig, BlocksCoverEveryColumnOnce) {
  for (int s : {1, 2, 4})
    for (int64_t N : {1, 7, 8, 9, 768, 2047, 2048, 32000}) {
      const int64_t per_block = kGemvWarps / s;
      const int64_t blocks = gemvBlocks(N, s);
      EXPECT_GE(blocks * per_block, N);
      EXPECT_LT((blocks - 1) * per_block, N);
    }
}

TEST(Attention, DimsPerLaneCoverHeadDim) {
  for (int hd = 1; hd <= 32 * kAttnMaxDimsPerLane; ++hd) {
    int dpl = 0;
    withDimsPerLane(hd, [&](auto d) { dpl = decltype(d)::value; });
    EXPECT_GE(32 * dpl, hd);
    EXPECT_TRUE(dpl == 1 || 16 * dpl < hd) << "head_dim " << hd;
    EXPECT_LE(dpl, kAttnMaxDimsPerLane);
  }
}

TEST(Attention, SharedMemoryFitsTheDevice) {
  // The split decode kernel gets no opt-in: the 48 KiB default must hold.
  // The tiled prefill kernel opts in: Hopper's 227 KiB per block.
  for (int hd = 1; hd <= 32 * kAttnMaxDimsPerLane; ++hd) {
    for (int nw : {kAttnSplitWarps, 16}) { // LOOM_CUDA_ATTN_WARPS
      EXPECT_LE(attentionSplitSmem(hd, nw), size_t(48 * 1024)) << hd;
      EXPECT_LE(attentionSplitClusterSmem(hd, nw), size_t(48 * 1024)) << hd;
    }
    EXPECT_LE(attentionTiledSmem(hd), size_t(227 * 1024)) << hd;
  }
  // The tensor-core prefill kernel: its four head dims only.
  for (int hd : {16, 32, 64, 128}) {
    EXPECT_TRUE(withTcHeadDim(hd, [](auto) {})) << hd;
    EXPECT_LE(attentionTcSmem(hd), size_t(227 * 1024)) << hd;
  }
  for (int hd : {8, 48, 96, 256})
    EXPECT_FALSE(withTcHeadDim(hd, [](auto) {})) << hd;
}

// sampleKernel's top-p path with its threads run one after another: the
// weights, the exponent histogram, the threshold, the gather (in an order
// unlike the ids'), the bitonic network and the walk. Returns
// kSampleOnHostId where the kernel hands the choice to the host.
int deviceNucleusChoice(const std::vector<float> &logits, float temp,
                        float top_p, float coin) {
  const int V = int(logits.size());
  float mx = -INFINITY;
  for (float l : logits)
    mx = std::max(mx, l / temp);
  std::vector<float> w(logits.size());
  float total = 0.0f;
  for (int i = 0; i < V; ++i) {
    const float v = logits[i] / temp;
    total += w[i] = v == mx ? 1.0f : std::exp(v - mx);
  }
  int bin_count[128] = {};
  float bin_mass[128] = {};
  const float cutoff = nucleusCutoff(top_p, V);
  for (int i = 0; i < V; ++i) {
    const float p = w[i] / total;
    if (p >= cutoff) {
      ++bin_count[nucleusBin(p)];
      bin_mass[nucleusBin(p)] += p;
    }
  }
  int n = 0;
  const float t = nucleusThreshold(bin_count, bin_mass, V, top_p, &n);
  if (n > kTopPCandidates)
    return kSampleOnHostId;
  std::vector<float> p(kTopPCandidates);
  std::vector<int> id(kTopPCandidates);
  int gathered = 0;
  for (int k = 0; k < V; ++k) {
    const int i = int((int64_t(k) * 7919 + 13) % V); // V < 7919: a permutation
    const float q = w[i] / total;
    if (nucleusKeeps(q, t, cutoff)) {
      EXPECT_LT(gathered, n);
      p[gathered] = q;
      id[gathered++] = i;
    }
  }
  EXPECT_EQ(gathered, n) << "the histogram's count and the gather differ";
  int width = 1;
  while (width < n)
    width <<= 1;
  for (int k = n; k < width; ++k) {
    p[k] = -1.0f;
    id[k] = 0x7fffffff;
  }
  for (int size = 2; size <= width; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1)
      for (int i = 0; i < width; ++i)
        nucleusCompareSwap(p.data(), id.data(), i, size, stride);
  for (int k = 1; k < n; ++k)
    EXPECT_TRUE(p[k - 1] > p[k] || (p[k - 1] == p[k] && id[k - 1] < id[k]))
        << "the network left " << k - 1 << " and " << k << " out of order";
  return nucleusChoose(p.data(), id.data(), n, V, top_p, coin);
}

// The device's nucleus choice equals Sampler::sampleWithCoin on random rows:
// vocabularies up to 5000, temperatures 0.1-3, top-p 0.01-0.999, logit
// scales from flat to underflowing weights, rows full of ties, and rows
// where no id reaches run.c's cutoff. Some rows must go to the host (a
// nucleus over kTopPCandidates ids).
TEST(DeviceSampler, NucleusChoiceEqualsTheCpuSampler) {
  std::mt19937 g(1);
  int host = 0, device = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int V = 2 + int(g() % 5000);
    const float temp = 0.1f + float(g() % 300) / 100.0f;
    float top_p = std::min(0.999f, 0.01f + float(g() % 1000) / 1000.0f);
    float scale = 0.01f + 4.0f * float(g() % 6);
    if (trial % 13 == 0) {
      // Nearly flat, top_p under 1 / V: no id reaches run.c's cutoff, so
      // the nucleus comes from every id (the CPU sampler's second pass).
      scale = 1e-4f;
      top_p = 0.4f / float(V);
    }
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> logits(static_cast<size_t>(V));
    for (float &l : logits)
      l = nd(g);
    if (trial % 7 == 0)
      for (int i = 0; i < V; i += 3)
        logits[i] = logits[0];
    if (trial % 11 == 0)
      for (float &l : logits)
        l = std::round(l);
    const float coin = float(g() >> 8) * (1.0f / 16777216.0f);
    loom::Sampler cpu(V, temp, top_p, 1);
    const int want = cpu.sampleWithCoin(logits.data(), coin);
    const int got = deviceNucleusChoice(logits, temp, top_p, coin);
    if (got == kSampleOnHostId) {
      ++host;
      continue;
    }
    ++device;
    ASSERT_EQ(got, want) << "V " << V << " temperature " << temp << " top_p "
                         << top_p << " coin " << coin << " trial " << trial;
  }
  EXPECT_GT(host, 0);
  EXPECT_GT(device, 2000);
}

TEST(DeviceSampler, ThresholdHoldsTheNucleus) {
  // Masses 0.5, 0.25, 0.125, ... in bins 126, 125, 124: top_p 0.6 needs
  // the first two, so t = 0.25 and two candidates.
  int count[128] = {};
  float mass[128] = {};
  count[126] = 1, mass[126] = 0.5f;
  count[125] = 1, mass[125] = 0.25f;
  count[124] = 4, mass[124] = 0.25f;
  int n = 0;
  EXPECT_EQ(nucleusThreshold(count, mass, 6, 0.6f, &n), 0.25f);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(nucleusThreshold(count, mass, 6, 0.4f, &n), 0.5f);
  EXPECT_EQ(n, 1);
  // The bins' sum under top_p (rounding): every id.
  mass[124] = 0.2499f;
  EXPECT_EQ(nucleusThreshold(count, mass, 6, 0.99995f, &n), 0.0f);
  EXPECT_EQ(n, 6);
  EXPECT_EQ(nucleusBin(1.0f), 127);
  EXPECT_EQ(nucleusBin(0.5f), 126);
  EXPECT_EQ(nucleusBin(0.0f), 0);
  EXPECT_EQ(nucleusBin(1e-45f), 0);
}

// The GPU timeline's analysis (timeline.h) on records made up here: three
// launches of 2, 1 and 3 blocks, times in ns.
std::vector<TimelineLaunch> threeLaunches() {
  return {{"norm", "l0.norm", 2},
          {"qkv", "l0.attn", 1},
          {"attention", "l0.attn", 3}};
}
std::vector<TimelineRecord> threeLaunchRecords() {
  return {
      // norm: starts 1000, waits 1100, ends 2000 / 2500
      {1000, 1100, 2000, 2, 0},
      {1050, 1200, 2500, 2, 1},
      // qkv: resident at 1500 (1000 ns before norm ends), released 3000
      {1500, 3000, 6000, 1, 2},
      // attention: starts 5000, released 6500, ends 7000 / 9000 / 8000
      {5000, 6500, 7000, 3, 3},
      {5100, 6600, 9000, 3, 4},
      {5200, 0, 8000, 3, 5}, // a block that never waited
  };
}

TEST(Timeline, AttributesRecordsInStartOrder) {
  std::string why;
  const auto spans =
      attributeTimeline(threeLaunches(), threeLaunchRecords(), &why);
  ASSERT_EQ(spans.size(), 3u) << why;
  EXPECT_EQ(spans[0].first_start, 1000u);
  EXPECT_EQ(spans[0].first_wait, 1100u);
  EXPECT_EQ(spans[0].last_wait, 1200u);
  EXPECT_EQ(spans[0].first_end, 2000u);
  EXPECT_EQ(spans[0].last_end, 2500u);
  EXPECT_EQ(spans[2].first_wait, 6500u);
  EXPECT_EQ(spans[2].last_end, 9000u);
  EXPECT_EQ(spans[2].first_end, 7000u);
}

TEST(Timeline, ChainTimesAddUpToTheSpan) {
  std::string why;
  const auto spans =
      attributeTimeline(threeLaunches(), threeLaunchRecords(), &why);
  const auto c = chainTimes(spans);
  ASSERT_EQ(c.size(), 3u);
  // norm: from its own start; released 0.1 us in.
  EXPECT_DOUBLE_EQ(c[0].chain, 1.5);
  EXPECT_DOUBLE_EQ(c[0].wait, 0.1);
  EXPECT_DOUBLE_EQ(c[0].body, 1.4);
  EXPECT_DOUBLE_EQ(c[0].tail, 0.5);
  // qkv: norm's last block ends at 2500, qkv passes its wait at 3000.
  EXPECT_DOUBLE_EQ(c[1].chain, 3.5);
  EXPECT_DOUBLE_EQ(c[1].wait, 0.5);
  EXPECT_DOUBLE_EQ(c[1].body, 3.0);
  EXPECT_DOUBLE_EQ(c[1].lead, 1.0);
  // attention: resident 1 us before qkv ended.
  EXPECT_DOUBLE_EQ(c[2].chain, 3.0);
  EXPECT_DOUBLE_EQ(c[2].wait, 0.5);
  EXPECT_DOUBLE_EQ(c[2].lead, 1.0);
  EXPECT_DOUBLE_EQ(c[2].tail, 2.0);
  double sum = 0;
  for (const ChainTime &t : c)
    sum += t.chain;
  EXPECT_DOUBLE_EQ(sum, (9000.0 - 1000.0) / 1000.0);
}

// The GPU's timer counts nanoseconds from the epoch: the same records
// there give the same times to the nanosecond (a double holds such a
// time only to 256 ns).
TEST(Timeline, TimesFromTheEpochKeepTheirNanoseconds) {
  constexpr uint64_t kNow = 1'800'000'000'000'000'123ull;
  std::vector<TimelineRecord> records = threeLaunchRecords();
  for (TimelineRecord &r : records) {
    r.start += kNow;
    r.end += kNow;
    if (r.wait != 0)
      r.wait += kNow;
  }
  std::string why;
  const auto c = chainTimes(attributeTimeline(threeLaunches(), records, &why));
  ASSERT_EQ(c.size(), 3u) << why;
  EXPECT_DOUBLE_EQ(c[0].chain, 1.5);
  EXPECT_DOUBLE_EQ(c[0].wait, 0.1);
  EXPECT_DOUBLE_EQ(c[1].chain, 3.5);
  EXPECT_DOUBLE_EQ(c[1].lead, 1.0);
  EXPECT_DOUBLE_EQ(c[2].tail, 2.0);
}

TEST(Timeline, RefusesRecordsThatDoNotFit) {
  std::string why;
  auto records = threeLaunchRecords();
  records.pop_back(); // a block never finished
  EXPECT_TRUE(attributeTimeline(threeLaunches(), records, &why).empty());
  EXPECT_NE(why.find("5 blocks recorded where 3 launches have 6"),
            std::string::npos)
      << why;
  records = threeLaunchRecords();
  records[2].blocks = 3; // a block of another grid where qkv's should be
  EXPECT_TRUE(attributeTimeline(threeLaunches(), records, &why).empty());
  EXPECT_NE(why.find("launch 1 (qkv) has 1"), std::string::npos) << why;
  records = threeLaunchRecords();
  records[4].end = 10; // ends before it starts
  EXPECT_TRUE(attributeTimeline(threeLaunches(), records, &why).empty());
  EXPECT_NE(why.find("no consistent times"), std::string::npos) << why;
}

TEST(Timeline, SummaryAveragesReplaysByClassAndLaunch) {
  TimelineSummary sum;
  std::string why;
  const auto launches = threeLaunches();
  auto records = threeLaunchRecords();
  int graph = 0;
  sum.add(&graph, launches, attributeTimeline(launches, records, &why));
  for (TimelineRecord &r : records) { // a second replay, everything 2x as long
    r.start = 100000 + 2 * r.start;
    r.wait = r.wait ? 100000 + 2 * r.wait : 0;
    r.end = 100000 + 2 * r.end;
  }
  sum.add(&graph, launches, attributeTimeline(launches, records, &why));
  sum.skip("made up");
  EXPECT_EQ(sum.replays(), 2u);
  EXPECT_DOUBLE_EQ(sum.stepMicros(), 1.5 * 8.0);
  const auto classes = sum.classes();
  ASSERT_EQ(classes.size(), 3u);
  EXPECT_EQ(classes[0].label, "qkv"); // 3.5 and 7 us: the longest chain
  EXPECT_DOUBLE_EQ(classes[0].us.chain, 5.25);
  EXPECT_DOUBLE_EQ(classes[0].per_step, 1.0);
  const auto all = sum.total();
  EXPECT_EQ(all.label, "all");
  EXPECT_DOUBLE_EQ(all.per_step, 3.0);
  EXPECT_DOUBLE_EQ(all.us.chain, sum.stepMicros()); // the chains add up
  EXPECT_DOUBLE_EQ(all.us.wait + all.us.body, all.us.chain);
  const auto per_launch = sum.launches();
  ASSERT_EQ(per_launch.size(), 3u);
  EXPECT_EQ(per_launch[2].label, "attention l0.attn");
  EXPECT_DOUBLE_EQ(per_launch[2].us.chain, 4.5);
  const std::string table = sum.table();
  EXPECT_NE(table.find("2 graph replays"), std::string::npos) << table;
  EXPECT_NE(table.find("1 replays not attributed: made up"), std::string::npos)
      << table;
  const std::string json = sum.json();
  EXPECT_NE(json.find("\"replays\":2,\"skipped\":1,\"step_us\":12.000,"
                      "\"total\":{\"label\":\"all\",\"per_step\":3.000,"
                      "\"chain_us\":12.000"),
            std::string::npos)
      << json;
  EXPECT_NE(table.find("  all "), std::string::npos) << table;
}

TEST(Timeline, TraceEventsAreEscapedJson) {
  std::string why, out;
  auto launches = threeLaunches();
  launches[0].dispatch = "a \"quoted\"\nname";
  const auto spans = attributeTimeline(launches, threeLaunchRecords(), &why);
  appendTimelineEvents(out, launches, spans, 1000);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2); // 3 events
  EXPECT_NE(out.find("\"dispatch\":\"a \\\"quoted\\\"\\u000aname\""),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\"ts\":0.000,\"dur\":1.500"), std::string::npos) << out;
  EXPECT_NE(out.find("\"tid\":2"), std::string::npos) << out;
}

TEST(Timeline, BlockEventsGoOnTheirMultiprocessorsRows) {
  std::string out;
  appendBlockEvents(out, threeLaunches(), threeLaunchRecords(), 1000, 6);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 5); // 6 blocks
  // The qkv block: SM 2, launch 1, 1.5 us after its start past the wait.
  EXPECT_NE(out.find("\"tid\":2,\"ts\":0.500,\"dur\":4.500,\"args\":{"
                     "\"launch\":1,\"block\":0,\"wait_us\":1.500}"),
            std::string::npos)
      << out;
  // The attention block that never waited.
  EXPECT_NE(out.find("\"launch\":2,\"block\":2,\"wait_us\":0.000"),
            std::string::npos)
      << out;
  // Whole launches up to 5 blocks: norm and qkv; the first launch even
  // where it alone is over.
  std::string few, first;
  appendBlockEvents(few, threeLaunches(), threeLaunchRecords(), 1000, 5);
  EXPECT_EQ(std::count(few.begin(), few.end(), '\n'), 2) << few;
  appendBlockEvents(first, threeLaunches(), threeLaunchRecords(), 1000, 1);
  EXPECT_EQ(std::count(first.begin(), first.end(), '\n'), 1) << first;
}

} // namespace

// The persistent decode kernel's plan (persistent.h) over programs built
// here: fake device addresses (nothing is dereferenced), the arena's
// buffers laid out one after another.
namespace persistent {

using loom::rt::BufferDesc;
using loom::rt::DispatchDesc;
using loom::rt::Kernel;
using loom::rt::KvCacheDesc;
using loom::rt::ModelData;
using loom::rt::ProgramDesc;
using loom::rt::WeightType;

struct Program {
  ModelData m;
  ProgramDesc p;
  std::vector<DeviceTensor> tensors;
  std::vector<DeviceCache> caches;
  std::map<const DispatchDesc *, const float *> rope;
  uint64_t arena = 0;
  char *const base = reinterpret_cast<char *>(uintptr_t(1) << 32);
  const float *const zeros =
      reinterpret_cast<const float *>(uintptr_t(3) << 32);

  Program() { m.max_tokens = 4; }
  uint32_t buffer(int64_t row) {
    m.buffers.push_back({arena, row});
    arena += uint64_t(m.max_tokens * row) * sizeof(float) + 256;
    return uint32_t(m.buffers.size() - 1);
  }
  uint32_t weight(WeightType t) {
    DeviceTensor d;
    d.native = reinterpret_cast<const void *>((uintptr_t(2) << 32) +
                                              4096 * tensors.size());
    d.f32 = static_cast<const float *>(d.native);
    d.dtype = t;
    tensors.push_back(d);
    return uint32_t(tensors.size() - 1);
  }
  uint32_t cache(int64_t nkv, int64_t hd, int32_t loop_layer = -1) {
    m.kv_caches.push_back(
        KvCacheDesc{uint32_t(m.kv_caches.size()), 64, nkv, hd, loop_layer});
    caches.push_back(
        {reinterpret_cast<float *>((uintptr_t(4) << 32) +
                                   (uintptr_t(caches.size()) << 24)),
         nullptr, nkv * hd});
    caches.back().v = caches.back().k + (1 << 20);
    return uint32_t(m.kv_caches.size() - 1);
  }
  void add(Kernel k, std::vector<uint32_t> in, std::vector<uint32_t> out,
           std::vector<uint32_t> scratch = {}, std::vector<uint32_t> w = {},
           std::vector<int64_t> ip = {}, std::vector<float> fp = {}) {
    p.dispatches.push_back({k, std::move(in), std::move(out),
                            std::move(scratch), std::move(w), std::move(ip),
                            std::move(fp), ""});
  }
  float *at(uint32_t b) const {
    return reinterpret_cast<float *>(base + m.buffers[b].offset);
  }
  std::string plan(PersistentPlan &out, int splits = 3) const {
    const PersistentInputs in{
        m,    base,  tensors, caches,
        rope, zeros, true,    [=](int64_t) { return splits; }};
    return planPersistentStages(p, in, out);
  }
};

struct Shape {
  int layers = 2;
  int64_t dim = 64, hidden = 176, heads = 8, kv_heads = 4;
  WeightType dtype = WeightType::BF16;
  bool accumulate = false; // the residual added by the projections
  int64_t qkv_weights = 2; // 3: a bias
  int32_t loop_layer = -1;
};

// A Llama in loomc's dispatch form (accumulate: the unit tests' builder's
// form, the residual added by the out and down projections), ending with
// the final norm and the classifier.
std::unique_ptr<Program> llama(const Shape &s) {
  auto owner = std::make_unique<Program>();
  Program &g = *owner;
  const int64_t D = s.dim, hd = D / s.heads, qd = D, kd = s.kv_heads * hd;
  const uint32_t x = g.buffer(D), r = g.buffer(D), h = g.buffer(D),
                 o = g.buffer(D), qkv = g.buffer(qd + 2 * kd),
                 attn = g.buffer(qd), a = g.buffer(s.hidden),
                 b = g.buffer(s.hidden), y = g.buffer(s.hidden),
                 dn = g.buffer(D), logits = g.buffer(100);
  const auto f32 = WeightType::F32;
  g.add(Kernel::Embed, {}, {x}, {}, {g.weight(f32)});
  g.p.embed_dispatch = 0;
  for (int l = 0; l < s.layers; ++l) {
    const uint32_t c = g.cache(s.kv_heads, hd, s.loop_layer);
    if (l == 0 || s.accumulate) {
      g.add(Kernel::RmsNorm, {x}, {h}, {}, {g.weight(f32)}, {}, {1e-5f});
    } else {
      g.add(Kernel::Add, {r, dn}, {x});
      g.add(Kernel::RmsNorm, {x}, {h}, {}, {g.weight(f32)}, {}, {1e-5f});
    }
    std::vector<uint32_t> w = {g.weight(s.dtype), g.weight(s.dtype)};
    if (s.qkv_weights > 2)
      w.push_back(g.weight(f32));
    g.add(Kernel::FusedQkvAttention, {h}, {s.accumulate ? x : o}, {qkv, attn},
          w, {c, s.heads, s.kv_heads, hd, s.accumulate ? 1 : 0}, {1e4f});
    if (s.accumulate) {
      g.add(Kernel::RmsNorm, {x}, {h}, {}, {g.weight(f32)}, {}, {1e-5f});
    } else {
      g.add(Kernel::Add, {x, o}, {r});
      g.add(Kernel::RmsNorm, {r}, {h}, {}, {g.weight(f32)}, {}, {1e-5f});
    }
    g.add(Kernel::MatMul, {h}, {a}, {}, {g.weight(s.dtype)}, {0});
    g.add(Kernel::MatMul, {h}, {b}, {}, {g.weight(s.dtype)}, {0});
    g.add(Kernel::SiluMul, {a, b}, {y});
    g.add(Kernel::MatMul, {y}, {s.accumulate ? x : dn}, {}, {g.weight(s.dtype)},
          {s.accumulate ? 1 : 0});
  }
  if (!s.accumulate)
    g.add(Kernel::Add, {r, dn}, {x});
  g.add(Kernel::RmsNorm, {x}, {h}, {}, {g.weight(f32)}, {}, {1e-5f});
  g.add(Kernel::Logits, {h}, {logits}, {}, {g.weight(s.dtype)});
  return owner;
}

std::string ops(const PersistentPlan &plan) {
  std::string s;
  for (const PersistentStage &st : plan.stages)
    s += st.op == PersistentOp::Norm     ? "N"
         : st.op == PersistentOp::Gemv   ? "G"
         : st.op == PersistentOp::GateUp ? "U"
                                         : "A";
  return s;
}

// loomc's form: every dispatch from the first norm to the final one, in
// order (norm, q|k|v, attention, out, norm, gate/up, down a layer), each
// stage reading and writing the dispatches' buffers.
TEST(PersistentPlan, RunsLoomcsLayersAndTheFinalNorm) {
  const auto owner = llama({});
  const Program &g = *owner;
  PersistentPlan plan;
  ASSERT_EQ(g.plan(plan), "");
  EXPECT_EQ(plan.begin, 1u);
  EXPECT_EQ(plan.end, g.p.dispatches.size() - 1); // all but the classifier
  EXPECT_EQ(ops(plan), "NGAGNUGNGAGNUGN");
  EXPECT_EQ(plan.head_dim, 8);
  EXPECT_EQ(plan.dtype, WeightType::BF16);
  const auto &st = plan.stages;
  const auto &ds = g.p.dispatches;
  // The first norm alone: a + 0, no sum kept.
  EXPECT_EQ(st[0].x, g.at(ds[1].inputs[0]));
  EXPECT_EQ(st[0].b, g.zeros);
  EXPECT_EQ(st[0].z, nullptr);
  EXPECT_EQ(st[0].y, g.at(ds[1].outputs[0]));
  EXPECT_EQ(st[0].N, 64);
  EXPECT_FLOAT_EQ(st[0].eps, 1e-5f);
  // q|k|v, attention, out.
  const DispatchDesc &f = ds[2];
  EXPECT_EQ(st[1].x, g.at(f.inputs[0]));
  EXPECT_EQ(st[1].y, g.at(f.scratch[0]));
  EXPECT_EQ(st[1].K, 64);
  EXPECT_EQ(st[1].N, 64 + 2 * 32);
  EXPECT_EQ(st[1].w1, g.tensors[f.weight_ids[0]].native);
  EXPECT_EQ(st[2].x, g.at(f.scratch[0]));
  EXPECT_EQ(st[2].y, g.at(f.scratch[1]));
  EXPECT_EQ(st[2].fold.k, g.at(f.scratch[0]) + 64);
  EXPECT_EQ(st[2].fold.v, g.at(f.scratch[0]) + 64 + 32);
  EXPECT_FLOAT_EQ(st[2].fold.theta, 1e4f);
  EXPECT_EQ(st[2].kc, g.caches[0].k);
  EXPECT_EQ(st[2].vc, g.caches[0].v);
  EXPECT_EQ(st[2].ldk, 32);
  EXPECT_EQ(st[2].group, 2);
  EXPECT_EQ(st[2].heads, 8);
  EXPECT_EQ(st[2].splits, 3);
  EXPECT_EQ(st[3].x, g.at(f.scratch[1]));
  EXPECT_EQ(st[3].y, g.at(f.outputs[0]));
  EXPECT_FALSE(st[3].accumulate);
  // Add + RmsNorm: the sum kept.
  EXPECT_EQ(st[4].x, g.at(ds[3].inputs[0]));
  EXPECT_EQ(st[4].b, g.at(ds[3].inputs[1]));
  EXPECT_EQ(st[4].z, g.at(ds[3].outputs[0]));
  EXPECT_EQ(st[4].y, g.at(ds[4].outputs[0]));
  // gate/up + SiluMul, down.
  EXPECT_EQ(st[5].ya, g.at(ds[5].outputs[0]));
  EXPECT_EQ(st[5].yb, g.at(ds[6].outputs[0]));
  EXPECT_EQ(st[5].y, g.at(ds[7].outputs[0]));
  EXPECT_EQ(st[5].N, 176);
  EXPECT_EQ(st[6].K, 176);
  EXPECT_EQ(st[6].N, 64);
  EXPECT_FALSE(st[6].accumulate);
  // The second layer's cache.
  EXPECT_EQ(st[9].kc, g.caches[1].k);
}

// The unit tests' builder's form: plain norms, the residual added by the
// out and down projections.
TEST(PersistentPlan, AccumulatingProjectionsAdd) {
  Shape s;
  s.accumulate = true;
  s.dtype = WeightType::F32;
  s.hidden = 172; // f32 rows of whole 16-byte loads
  const auto owner = llama(s);
  const Program &g = *owner;
  PersistentPlan plan;
  ASSERT_EQ(g.plan(plan), "");
  EXPECT_EQ(plan.end, g.p.dispatches.size() - 1);
  EXPECT_EQ(ops(plan), "NGAGNUGNGAGNUGN");
  EXPECT_EQ(plan.dtype, WeightType::F32);
  EXPECT_TRUE(plan.stages[3].accumulate);
  EXPECT_TRUE(plan.stages[6].accumulate);
  EXPECT_EQ(plan.stages[4].b, g.zeros);
}

// The plan stops before the first dispatch it cannot run (its rest runs as
// launches), and is refused where no attention is left in it.
TEST(PersistentPlan, StopsWhereTheFormEnds) {
  Shape s;
  s.hidden = 172; // bf16 rows of 172: not whole 16-byte loads
  const auto owner = llama(s);
  const Program &g = *owner;
  PersistentPlan plan;
  ASSERT_EQ(g.plan(plan), "");
  EXPECT_EQ(ops(plan), "NGAGNU"); // up to the first down projection
  EXPECT_EQ(plan.end, 8u);
  EXPECT_EQ(g.p.dispatches[plan.end].kernel, Kernel::MatMul);

  Shape biased;
  biased.qkv_weights = 3;
  EXPECT_NE(llama(biased)->plan(plan).find("do not take the kernel's form"),
            std::string::npos);
  Shape wide_heads;
  wide_heads.dim = 2048;
  wide_heads.heads = 8; // head_dim 256
  wide_heads.kv_heads = 8;
  EXPECT_EQ(llama(wide_heads)->plan(plan), "head_dim 256 (at most 128)");
  const auto looped = llama({});
  looped->p.loop = loom::rt::LoopDesc{};
  EXPECT_EQ(looped->plan(plan), "a looped model");
  Shape core;
  core.loop_layer = 0; // a looped block's cache
  EXPECT_NE(llama(core)->plan(plan).find("do not take"), std::string::npos);
}

// Where an Add feeds the first norm (the launches fuse the two), the plan
// starts at the Add; a plain RmsNorm in place is a stage too.
TEST(PersistentPlan, StartsWhereTheLaunchesWould) {
  const auto owner = llama({});
  Program &g = *owner;
  auto &ds = g.p.dispatches;
  const uint32_t x = ds[1].inputs[0], pos = g.buffer(64);
  ds.insert(ds.begin() + 1,
            DispatchDesc{Kernel::Add, {x, pos}, {x}, {}, {}, {}, {}, ""});
  PersistentPlan plan;
  ASSERT_EQ(g.plan(plan), "");
  EXPECT_EQ(plan.begin, 1u);
  EXPECT_EQ(ops(plan), "NGAGNUGNGAGNUGN");
  EXPECT_EQ(plan.stages[0].b, g.at(pos));
  EXPECT_EQ(plan.stages[0].z, g.at(x));

  const auto in_place = llama({});
  in_place->p.dispatches[1].outputs = in_place->p.dispatches[1].inputs;
  ASSERT_EQ(in_place->plan(plan), "");
  EXPECT_EQ(plan.stages[0].y, plan.stages[0].x);
}

// Buffers that overlap partly, and weights without a device copy, end the
// plan where they are: the stages assume each buffer is one another or
// apart.
TEST(PersistentPlan, PartialOverlapsAndMissingWeightsEndIt) {
  PersistentPlan plan;
  // The second layer's Add (r + dn -> x) with dn starting inside x.
  const auto owner = llama({});
  Program &g = *owner;
  const auto &ds = g.p.dispatches;
  const size_t second_add = 9;
  ASSERT_EQ(ds[second_add].kernel, Kernel::Add);
  const uint32_t x = ds[second_add].outputs[0], dn = ds[second_add].inputs[1];
  g.m.buffers[dn].offset = g.m.buffers[x].offset + 16;
  ASSERT_EQ(g.plan(plan), "");
  EXPECT_EQ(ops(plan), "NGAGNUG");
  EXPECT_EQ(plan.end, second_add);

  // q|k|v over the attention's input: no attention left, refused.
  const auto qkv_over_input = llama({});
  {
    Program &h = *qkv_over_input;
    const DispatchDesc &f = h.p.dispatches[2];
    ASSERT_EQ(f.kernel, Kernel::FusedQkvAttention);
    h.m.buffers[f.scratch[0]].offset = h.m.buffers[f.inputs[0]].offset + 32;
  }
  EXPECT_NE(qkv_over_input->plan(plan).find("do not take"), std::string::npos);

  // The attention's output inside q|k|v.
  const auto attn_over_qkv = llama({});
  {
    Program &h = *attn_over_qkv;
    const DispatchDesc &f = h.p.dispatches[2];
    h.m.buffers[f.scratch[1]].offset = h.m.buffers[f.scratch[0]].offset + 64;
  }
  EXPECT_NE(attn_over_qkv->plan(plan).find("do not take"), std::string::npos);

  // A GEMV's weights not uploaded in their own type.
  const auto no_weights = llama({});
  no_weights->tensors[no_weights->p.dispatches[5].weight_ids[0]].native =
      nullptr;
  ASSERT_EQ(no_weights->plan(plan), "");
  EXPECT_EQ(ops(plan), "NGAGN"); // up to the first gate/up
}

} // namespace persistent
