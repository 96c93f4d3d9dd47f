// Sampler tests: greedy ties, the exact xorshift64* stream, reproducibility,
// empirical frequencies against softmax, temperature, nucleus cuts and
// argument validation. Every random test uses a fixed seed, so results are
// deterministic; tolerances are several standard deviations wide.
#include "loom/error.h"
#include "loom/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

namespace {

using loom::Sampler;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> logitsOf(const std::vector<double> &probs) {
  std::vector<float> logits;
  for (double p : probs)
    logits.push_back(static_cast<float>(std::log(p)) + 3.0f);
  return logits;
}

std::vector<double> frequencies(Sampler &sampler,
                                const std::vector<float> &logits, int draws) {
  std::vector<double> counts(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) {
    int32_t id = sampler.sample(logits.data());
    EXPECT_GE(id, 0);
    EXPECT_LT(id, static_cast<int32_t>(logits.size()));
    counts[id] += 1.0;
  }
  for (double &c : counts)
    c /= draws;
  return counts;
}

std::vector<int32_t> draw(Sampler &sampler, const std::vector<float> &logits,
                          int count) {
  std::vector<int32_t> ids;
  for (int i = 0; i < count; ++i)
    ids.push_back(sampler.sample(logits.data()));
  return ids;
}

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler greedy(5, 0.0f, 1.0f, 7);
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(greedy.sample(logits.data()), 1);
  logits = {-kInf, -5.0f, -kInf, -5.0f, -6.0f};
  EXPECT_EQ(greedy.sample(logits.data()), 1);
  logits = {2.0f, 2.0f, 2.0f, 2.0f, 2.0f};
  EXPECT_EQ(greedy.sample(logits.data()), 0);
  logits = {-1.0f, -2.0f, -3.0f, -4.0f, 0.5f};
  EXPECT_EQ(greedy.sample(logits.data()), 4);
  // Greedy ignores top_p and the seed.
  Sampler greedy_top_p(5, 0.0f, 0.1f, 99);
  EXPECT_EQ(greedy_top_p.sample(logits.data()), 4);
}

// Uniform logits over 256 ids make every cdf step an exact multiple of 1/256,
// so each draw is the top 8 bits of the xorshift64* output. The expected
// values come from an independent Python model of the generator.
TEST(Sampler, UsesXorshift64StarStream) {
  std::vector<float> uniform(256, 0.0f);
  Sampler seeded(256, 1.0f, 1.0f, 1);
  EXPECT_EQ(draw(seeded, uniform, 16),
            std::vector<int32_t>({71, 171, 185, 77, 14, 200, 208, 172, 86, 191,
                                  127, 45, 39, 188, 223, 161}));
  // Seed 0 is replaced by a fixed nonzero state (0x9E3779B97F4A7C15) rather
  // than sticking at zero forever.
  Sampler zero(256, 1.0f, 1.0f, 0);
  EXPECT_EQ(draw(zero, uniform, 16),
            std::vector<int32_t>({13, 84, 168, 125, 144, 157, 213, 103, 135,
                                  210, 0, 188, 38, 236, 19, 84}));
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedDiffers) {
  std::vector<float> logits(50);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float &l : logits)
    l = normal(rng);
  for (float top_p : {1.0f, 0.9f}) {
    SCOPED_TRACE(top_p);
    Sampler a(50, 0.8f, top_p, 42), b(50, 0.8f, top_p, 42),
        c(50, 0.8f, top_p, 43);
    std::vector<int32_t> seq_a = draw(a, logits, 200);
    EXPECT_EQ(seq_a, draw(b, logits, 200));
    std::vector<int32_t> seq_c = draw(c, logits, 200);
    EXPECT_NE(seq_a, seq_c);
    // Not a constant stream either.
    EXPECT_GT(std::set<int32_t>(seq_a.begin(), seq_a.end()).size(), 5u);
  }
}

TEST(Sampler, FrequenciesMatchSoftmax) {
  const std::vector<double> probs = {0.1, 0.2, 0.3, 0.4};
  Sampler sampler(4, 1.0f, 1.0f, 2024);
  std::vector<double> freq = frequencies(sampler, logitsOf(probs), 20000);
  for (size_t i = 0; i < probs.size(); ++i)
    EXPECT_NEAR(freq[i], probs[i], 0.015) << "id " << i;
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const std::vector<double> probs = {0.1, 0.2, 0.3, 0.4};
  std::vector<float> logits = logitsOf(probs);
  auto tempered = [&](double t) {
    std::vector<double> q;
    for (double p : probs)
      q.push_back(std::pow(p, 1.0 / t));
    double sum = std::accumulate(q.begin(), q.end(), 0.0);
    for (double &v : q)
      v /= sum;
    return q;
  };
  double previous_top = 1.0;
  for (float t : {0.25f, 0.5f, 1.0f, 2.0f, 10.0f}) {
    SCOPED_TRACE(t);
    Sampler sampler(4, t, 1.0f, 77);
    std::vector<double> freq = frequencies(sampler, logits, 20000);
    std::vector<double> expected = tempered(t);
    for (size_t i = 0; i < probs.size(); ++i)
      EXPECT_NEAR(freq[i], expected[i], 0.015) << "id " << i;
    // Lower temperature puts more mass on the most likely id.
    EXPECT_LT(freq[3], previous_top);
    previous_top = freq[3];
  }
  EXPECT_LT(previous_top, 0.3); // t = 10 is close to uniform
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  // 0.6 alone exceeds 0.5, so only the top id can ever come out; it is put
  // at id 2 so the result is not just "id 0".
  std::vector<float> logits = logitsOf({0.2, 0.1, 0.6, 0.1});
  Sampler half(4, 1.0f, 0.5f, 11);
  for (int i = 0; i < 5000; ++i)
    ASSERT_EQ(half.sample(logits.data()), 2) << "draw " << i;

  // With 0.7 the nucleus is {0.6, 0.2}, renormalised to 0.75 / 0.25.
  Sampler seventy(4, 1.0f, 0.7f, 12);
  std::vector<double> freq = frequencies(seventy, logits, 20000);
  EXPECT_EQ(freq[1], 0.0);
  EXPECT_EQ(freq[3], 0.0);
  EXPECT_NEAR(freq[2], 0.75, 0.015);
  EXPECT_NEAR(freq[0], 0.25, 0.015);
}

TEST(Sampler, TopPBreaksTiesByLowerId) {
  // Four equal candidates, top_p 0.3: the nucleus is the first two in id
  // order, not whichever two an unstable sort happens to leave in front.
  std::vector<float> logits(4, 1.0f);
  Sampler sampler(4, 1.0f, 0.3f, 5);
  std::vector<double> freq = frequencies(sampler, logits, 4000);
  EXPECT_EQ(freq[2], 0.0);
  EXPECT_EQ(freq[3], 0.0);
  EXPECT_NEAR(freq[0], 0.5, 0.04);
}

TEST(Sampler, TinyTopPOnFlatDistributionStillSamples) {
  // Every probability here (about 0.1) is below run.c's (1 - top_p) / (n - 1)
  // shortcut cutoff, which would leave no candidates; the nucleus must still
  // be the single most likely id: 7, or the lowest id among equals.
  std::vector<float> logits(10, 0.0f);
  logits[7] = 0.1f;
  Sampler sampler(10, 1.0f, 0.001f, 8);
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(sampler.sample(logits.data()), 7);
  std::vector<float> flat(10, 0.0f);
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(sampler.sample(flat.data()), 0);
}

TEST(Sampler, TopPOnLargeVocabularyStaysInNucleus) {
  const int n = 32000;
  const float top_p = 0.9f;
  std::vector<float> logits(n);
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float &l : logits)
    l = normal(rng);
  // Reference nucleus in double precision.
  double max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(n);
  double sum = 0.0;
  for (int i = 0; i < n; ++i)
    sum += p[i] = std::exp(logits[i] - max_logit);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return p[a] > p[b]; });
  std::set<int> nucleus;
  double mass = 0.0;
  for (int id : order) {
    nucleus.insert(id);
    mass += p[id] / sum;
    if (mass > top_p + 1e-4) // a little slack for float rounding
      break;
  }
  ASSERT_LT(nucleus.size(), static_cast<size_t>(n) / 2);
  Sampler sampler(n, 1.0f, top_p, 31);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) {
    int32_t id = sampler.sample(logits.data());
    ASSERT_TRUE(nucleus.count(id)) << "id " << id << " outside the nucleus";
    seen.insert(id);
  }
  EXPECT_GT(seen.size(), 10u);
}

TEST(Sampler, InfiniteLogitsTakeAllTheMass) {
  std::vector<float> logits = {0.0f, kInf, 5.0f, kInf};
  Sampler sampler(4, 1.0f, 1.0f, 3);
  std::vector<double> freq = frequencies(sampler, logits, 2000);
  EXPECT_EQ(freq[0] + freq[2], 0.0);
  EXPECT_NEAR(freq[1], 0.5, 0.05);
  // A row of -inf is degenerate but still yields a valid id.
  std::vector<float> dead(4, -kInf);
  int32_t id = sampler.sample(dead.data());
  EXPECT_GE(id, 0);
  EXPECT_LT(id, 4);
}

TEST(Sampler, RejectsInvalidArguments) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(Sampler(0, 1.0f, 1.0f, 1), loom::Error);
  EXPECT_THROW(Sampler(-3, 1.0f, 1.0f, 1), loom::Error);
  EXPECT_THROW(Sampler(4, -0.5f, 1.0f, 1), loom::Error);
  EXPECT_THROW(Sampler(4, nan, 1.0f, 1), loom::Error);
  EXPECT_THROW(Sampler(4, kInf, 1.0f, 1), loom::Error);
  EXPECT_THROW(Sampler(4, 1.0f, 0.0f, 1), loom::Error);
  EXPECT_THROW(Sampler(4, 1.0f, -0.1f, 1), loom::Error);
  EXPECT_THROW(Sampler(4, 1.0f, 1.01f, 1), loom::Error);
  EXPECT_THROW(Sampler(4, 1.0f, nan, 1), loom::Error);
  try {
    Sampler(4, 1.0f, 2.0f, 1);
    ADD_FAILURE() << "top_p 2 accepted";
  } catch (const loom::Error &e) {
    EXPECT_NE(std::string(e.what()).find("top_p"), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(Sampler(1, 0.0f, 1.0f, 0));
  EXPECT_NO_THROW(Sampler(4, 1.0f, 1e-6f, 1));

  Sampler sampler(3, 1.0f, 1.0f, 1);
  EXPECT_THROW(sampler.sample(nullptr), loom::Error);
  std::vector<float> bad = {0.0f, nan, 1.0f};
  EXPECT_THROW(sampler.sample(bad.data()), loom::Error);
  Sampler greedy(3, 0.0f, 1.0f, 1);
  EXPECT_THROW(greedy.sample(bad.data()), loom::Error);
}

// sampleWithCoin is sample() with the coin drawn beforehand (the CUDA
// backend draws it, then may hand the choice back): same ids, and the
// generator does not advance.
TEST(Sampler, SampleWithCoinIsSampleWithADrawnCoin) {
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> logits(300);
  for (float top_p : {1.0f, 0.9f, 0.3f, 0.01f}) {
    Sampler a(300, 0.8f, top_p, 77), b(300, 0.8f, top_p, 77);
    for (int i = 0; i < 200; ++i) {
      for (float &l : logits)
        l = nd(g);
      const int32_t want = a.sample(logits.data());
      const float coin = b.nextUniform();
      EXPECT_EQ(b.sampleWithCoin(logits.data(), coin), want)
          << "top_p " << top_p << " draw " << i;
      EXPECT_EQ(b.sampleWithCoin(logits.data(), coin), want)
          << "the second call drew a coin";
    }
  }
  // The coin decides: 0 takes the first id with mass, just under 1 the
  // last one.
  Sampler s(3, 1.0f, 1.0f, 1);
  const std::vector<float> l = {1.0f, 1.0f, 1.0f};
  EXPECT_EQ(s.sampleWithCoin(l.data(), 0.0f), 0);
  EXPECT_EQ(s.sampleWithCoin(l.data(), 0.999f), 2);
  for (float bad : {-0.1f, 1.0f, std::numeric_limits<float>::quiet_NaN()})
    EXPECT_THROW(s.sampleWithCoin(l.data(), bad), loom::Error) << bad;
  // Greedy ignores the coin; NaN logits are refused either way.
  Sampler greedy(3, 0.0f, 1.0f, 1);
  const std::vector<float> peak = {0.0f, 2.0f, 1.0f};
  EXPECT_EQ(greedy.sampleWithCoin(peak.data(), 0.9f), 1);
  const std::vector<float> nan_row = {0.0f, std::nanf(""), 1.0f};
  EXPECT_THROW(s.sampleWithCoin(nan_row.data(), 0.5f), loom::Error);
}

TEST(Sampler, SingleTokenVocabulary) {
  float logit = 0.3f;
  for (float top_p : {1.0f, 0.5f}) {
    Sampler sampler(1, 0.7f, top_p, 9);
    EXPECT_EQ(sampler.sample(&logit), 0);
  }
}

} // namespace
