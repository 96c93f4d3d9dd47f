// Session execution: the dispatch-form tiny llama against a plain reference
// forward pass written here, prefill/chunking/decode equivalence, input
// validation, tracing, the C API, and end-to-end agreement with llama2.c's
// run.c on stories260K (bundled) and the ../shared golden logits.
#include "loom/error.h"
#include "loom/loom.h"
#include "loom/runtime.h"
#include "support/artifact_builder.h"
#include "support/json.h"
#include "support/shared.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using loom::test::ArtifactSpec;
using loom::test::LlamaArtifactOptions;
using loom::test::LlamaWeights;
using loom::test::TempFile;
namespace fbs = loom::artifact;

// llama2.c's forward pass, one position at a time, in double precision
// (RoPE angles in float32 exactly as run.c computes them); with a sliding
// window, each position attends to the last `window` positions only.
class Reference {
public:
  explicit Reference(const LlamaWeights &w, int64_t window = 0,
                     double rope_scale = 1.0)
      : w_(w), window_(window), rope_scale_(rope_scale),
        k_(w.n_layers, std::vector<double>(w.max_seq * w.kvDim())), v_(k_) {}

  std::vector<double> forward(int32_t token, int64_t pos) {
    const int64_t D = w_.dim, hd = w_.headDim(), kvd = w_.kvDim();
    const int64_t nh = w_.n_heads, group = w_.n_heads / w_.n_kv_heads;
    std::vector<double> x(w_.embed.begin() + token * D,
                          w_.embed.begin() + (token + 1) * D);
    for (int64_t l = 0; l < w_.n_layers; ++l) {
      const LlamaWeights::Layer &L = w_.layers[l];
      std::vector<double> xb = rmsNorm(x, L.att_norm);
      std::vector<double> q = matvec(L.wq, xb, D), k = matvec(L.wk, xb, kvd),
                          v = matvec(L.wv, xb, kvd);
      for (int64_t i = 0; i < D; i += 2) {
        int64_t j = i % hd;
        float freq = 1.0f / powf(w_.rope_theta, static_cast<float>(j) /
                                                    static_cast<float>(hd));
        float angle = static_cast<float>(pos) * freq;
        double c = cosf(angle) * rope_scale_, s = sinf(angle) * rope_scale_;
        rotate(q, i, c, s);
        if (i < kvd)
          rotate(k, i, c, s);
      }
      std::copy(k.begin(), k.end(), k_[l].begin() + pos * kvd);
      std::copy(v.begin(), v.end(), v_[l].begin() + pos * kvd);
      std::vector<double> out(D, 0.0);
      const int64_t first =
          window_ > 0 ? std::max<int64_t>(0, pos + 1 - window_) : 0;
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t g = h / group;
        std::vector<double> score(pos + 1, 0.0);
        double mx = -1e300;
        for (int64_t t = first; t <= pos; ++t) {
          double dot = 0;
          for (int64_t e = 0; e < hd; ++e)
            dot += q[h * hd + e] * k_[l][t * kvd + g * hd + e];
          score[t] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, score[t]);
        }
        double sum = 0;
        for (int64_t t = first; t <= pos; ++t)
          sum += (score[t] = std::exp(score[t] - mx));
        for (int64_t t = first; t <= pos; ++t)
          for (int64_t e = 0; e < hd; ++e)
            out[h * hd + e] += score[t] / sum * v_[l][t * kvd + g * hd + e];
      }
      add(x, matvec(L.wo, out, D));
      xb = rmsNorm(x, L.ffn_norm);
      std::vector<double> a = matvec(L.w1, xb, w_.hidden_dim),
                          b = matvec(L.w3, xb, w_.hidden_dim);
      for (size_t i = 0; i < a.size(); ++i)
        a[i] = a[i] / (1.0 + std::exp(-a[i])) * b[i];
      add(x, matvec(L.w2, a, D));
    }
    return matvec(w_.wcls, rmsNorm(x, w_.final_norm), w_.vocab_size);
  }

private:
  std::vector<double> rmsNorm(const std::vector<double> &x,
                              const std::vector<float> &w) const {
    double ss = 0;
    for (double v : x)
      ss += v * v;
    double scale = 1.0 / std::sqrt(ss / x.size() + w_.norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      y[i] = w[i] * x[i] * scale;
    return y;
  }
  static std::vector<double> matvec(const std::vector<float> &W,
                                    const std::vector<double> &x, int64_t n) {
    std::vector<double> y(n, 0.0);
    for (int64_t r = 0; r < n; ++r)
      for (size_t c = 0; c < x.size(); ++c)
        y[r] += W[r * x.size() + c] * x[c];
    return y;
  }
  static void rotate(std::vector<double> &v, int64_t i, double c, double s) {
    double a = v[i], b = v[i + 1];
    v[i] = a * c - b * s;
    v[i + 1] = a * s + b * c;
  }
  static void add(std::vector<double> &x, const std::vector<double> &y) {
    for (size_t i = 0; i < x.size(); ++i)
      x[i] += y[i];
  }

  const LlamaWeights &w_;
  int64_t window_;
  double rope_scale_;
  std::vector<std::vector<double>> k_, v_;
};

double maxDiff(const float *a, const std::vector<double> &b) {
  double d = 0;
  for (size_t i = 0; i < b.size(); ++i)
    d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

double maxDiff(const float *a, const float *b, int64_t n) {
  double d = 0;
  for (int64_t i = 0; i < n; ++i)
    d = std::max(d, static_cast<double>(std::abs(a[i] - b[i])));
  return d;
}

int32_t argmax(const float *x, int64_t n) {
  return static_cast<int32_t>(std::max_element(x, x + n) - x);
}

std::shared_ptr<loom::Model> loadSpec(const ArtifactSpec &spec) {
  TempFile file(spec.serialize());
  // The mapping stays valid after the file is removed.
  return loom::Model::load(file.path());
}

const std::vector<int32_t> kTokens = {1,   260, 45,  271, 3,  100, 7,
                                      200, 9,   259, 33,  12, 150};

struct Variant {
  const char *name;
  loom::test::TinyLlamaOptions model;
  LlamaArtifactOptions artifact;
};

// Test names and failure messages show the variant's name.
void PrintTo(const Variant &v, std::ostream *os) { *os << v.name; }

class TinyLlama : public ::testing::TestWithParam<Variant> {
protected:
  void SetUp() override {
    weights = loom::test::tinyLlamaWeights(GetParam().model);
    model = loadSpec(loom::test::llamaArtifact(
        weights, loom::test::syntheticTokenizer(weights.vocab_size),
        GetParam().artifact));
  }
  LlamaWeights weights;
  std::shared_ptr<loom::Model> model;
};

TEST_P(TinyLlama, TokenByTokenMatchesReference) {
  Reference ref(weights);
  loom::Session session(model);
  for (size_t p = 0; p < kTokens.size(); ++p) {
    loom::Logits l = session.forward(&kTokens[p], 1);
    ASSERT_EQ(l.rows, 1);
    ASSERT_EQ(l.vocab, weights.vocab_size);
    EXPECT_LT(maxDiff(l.last(), ref.forward(kTokens[p], p)), 1e-4)
        << "position " << p;
  }
  EXPECT_EQ(session.position(), static_cast<int64_t>(kTokens.size()));
}

TEST_P(TinyLlama, PrefillAllRowsMatchReference) {
  Reference ref(weights);
  loom::Session session(model);
  // 13 tokens: several chunks of max_tokens rows plus a partial one.
  loom::Logits l = session.forward(kTokens.data(), kTokens.size(), true);
  ASSERT_EQ(l.rows, static_cast<int64_t>(kTokens.size()));
  for (size_t p = 0; p < kTokens.size(); ++p)
    EXPECT_LT(maxDiff(l.row(p), ref.forward(kTokens[p], p)), 1e-4)
        << "position " << p;
}

TEST_P(TinyLlama, PrefillLastRowEqualsTokenByToken) {
  loom::Session one(model), all(model);
  const float *last = nullptr;
  for (int32_t t : kTokens)
    last = one.forward(&t, 1).last();
  std::vector<float> stepwise(last, last + weights.vocab_size);
  loom::Logits l = all.forward(kTokens.data(), kTokens.size());
  EXPECT_EQ(l.rows, 1);
  EXPECT_LT(maxDiff(l.last(), stepwise.data(), weights.vocab_size), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Session, TinyLlama,
    ::testing::Values(Variant{"Unfused", {}, {8, false, false, 0}},
                      Variant{"UnfusedChunk4", {}, {4, false, false, 0}},
                      Variant{"Fused", {}, {4, true, false, 0}},
                      Variant{"ResidualAdd", {}, {3, false, true, 0}},
                      Variant{"TwoLayersSharedClassifier",
                              {2, 16, 40, 4, 2, 272, 32, true, 7},
                              {5, false, false, 0}},
                      Variant{"TwoLayersFusedMha",
                              {2, 24, 64, 3, 3, 300, 32, false, 3},
                              {1, true, false, 0}}),
    [](const auto &info) { return std::string(info.param.name); });

// ---- Session behaviour on the default tiny model -------------------------

class SessionTest : public ::testing::Test {
protected:
  void SetUp() override {
    weights = loom::test::tinyLlamaWeights();
    LlamaArtifactOptions o;
    o.max_tokens = 4;
    spec = loom::test::llamaArtifact(weights,
                                     loom::test::syntheticTokenizer(272), o);
    model = loadSpec(spec);
  }
  std::string forwardError(loom::Session &s, const std::vector<int32_t> &ids) {
    try {
      s.forward(ids.data(), ids.size());
    } catch (const loom::Error &e) {
      return e.what();
    }
    return "<ok>";
  }
  LlamaWeights weights;
  ArtifactSpec spec;
  std::shared_ptr<loom::Model> model;
};

TEST_F(SessionTest, ContinuingAfterPrefillEqualsStepwise) {
  loom::Session a(model), b(model);
  a.forward(kTokens.data(), kTokens.size());
  for (int32_t t : kTokens)
    b.forward(&t, 1);
  const int32_t next[2] = {77, 5};
  loom::Logits la = a.forward(next, 2, true);
  std::vector<float> rows(la.data, la.data + 2 * 272);
  loom::Logits lb = b.forward(next, 2, true);
  EXPECT_LT(maxDiff(rows.data(), lb.data, 2 * 272), 1e-4);
}

TEST_F(SessionTest, UnknownTokenIdIsRejectedWithoutSideEffects) {
  loom::Session s(model);
  EXPECT_EQ(forwardError(s, {1, 99999}),
            "token id 99999 is outside the vocabulary (0..271)");
  EXPECT_EQ(forwardError(s, {-1}),
            "token id -1 is outside the vocabulary (0..271)");
  EXPECT_EQ(forwardError(s, {272}),
            "token id 272 is outside the vocabulary (0..271)");
  EXPECT_EQ(s.position(), 0);
}

TEST_F(SessionTest, ContextFull) {
  loom::Session s(model);
  std::vector<int32_t> ids(30, 5);
  s.forward(ids.data(), ids.size());
  EXPECT_EQ(forwardError(s, {5, 5, 5}),
            "context full: position 32 reaches max_seq 32");
  EXPECT_EQ(s.position(), 30);
  EXPECT_EQ(forwardError(s, {5, 5}), "<ok>");
  EXPECT_EQ(forwardError(s, {5}),
            "context full: position 32 reaches max_seq 32");
  s.reset();
  EXPECT_EQ(s.position(), 0);
  EXPECT_EQ(forwardError(s, std::vector<int32_t>(32, 5)), "<ok>");
}

TEST_F(SessionTest, ShortKvCacheLimitsTheContext) {
  LlamaArtifactOptions o;
  o.max_tokens = 4;
  o.kv_max_seq = 10;
  auto m = loadSpec(loom::test::llamaArtifact(
      weights, loom::test::syntheticTokenizer(272), o));
  EXPECT_EQ(m->contextLength(), 10);
  loom::Session s(m);
  EXPECT_EQ(forwardError(s, std::vector<int32_t>(11, 5)),
            "context full: position 10 reaches max_seq 10");
}

TEST_F(SessionTest, EmptyInputIsRejected) {
  loom::Session s(model);
  EXPECT_EQ(forwardError(s, {}), "forward needs at least one token");
}

TEST_F(SessionTest, ResetRepeatsTheSameLogits) {
  loom::Session s(model);
  loom::Logits l = s.forward(kTokens.data(), kTokens.size());
  std::vector<float> first(l.last(), l.last() + 272);
  s.forward(kTokens.data(), 3);
  s.reset();
  l = s.forward(kTokens.data(), kTokens.size());
  EXPECT_EQ(maxDiff(l.last(), first.data(), 272), 0.0);
}

// Rewinding to a position and feeding other tokens gives exactly what a
// session fed only the kept tokens, in the same calls, then those tokens
// gives: at a call's boundary, inside a call (max_tokens 4: inside a step
// too), after single-token decode steps, and back to 0.
TEST_F(SessionTest, RewindForgetsTheLaterPositions) {
  const std::vector<int32_t> tail = {77, 5, 131, 9, 200};
  for (int64_t keep : {0, 3, 5, 6, 7, 9}) {
    SCOPED_TRACE("keep " + std::to_string(keep));
    loom::Session a(model), b(model);
    a.forward(kTokens.data(), 6); // steps 0..3, 4..5
    for (int32_t t : {12, 34, 56})
      a.forward(&t, 1); // positions 6, 7, 8
    ASSERT_EQ(a.position(), 9);
    EXPECT_EQ(a.rewindPoint(keep), keep);
    a.rewind(keep);
    EXPECT_EQ(a.position(), keep);
    // b: the same first `keep` tokens, cut where a's calls were cut.
    const int32_t fed[9] = {kTokens[0], kTokens[1], kTokens[2],
                            kTokens[3], kTokens[4], kTokens[5],
                            12,         34,         56};
    if (keep > 0)
      b.forward(fed, static_cast<size_t>(std::min<int64_t>(keep, 6)));
    for (int64_t p = 6; p < keep; ++p)
      b.forward(&fed[p], 1);
    loom::Logits la = a.forward(tail.data(), tail.size(), true);
    std::vector<float> rows(la.data, la.data + tail.size() * 272);
    loom::Logits lb = b.forward(tail.data(), tail.size(), true);
    // Inside a 4-row step the kept rows were computed in a longer step
    // than b's; elsewhere the arithmetic is the same.
    const bool same_steps = keep != 3 && keep != 5;
    if (same_steps)
      EXPECT_EQ(maxDiff(rows.data(), lb.data, tail.size() * 272), 0.0);
    else
      EXPECT_LT(maxDiff(rows.data(), lb.data, tail.size() * 272), 1e-4);
  }
}

TEST_F(SessionTest, RewindOutsideTheHeldPositionsIsRefused) {
  loom::Session s(model);
  s.forward(kTokens.data(), 5);
  for (int64_t bad : {-1, 6, 100}) {
    try {
      s.rewind(bad);
      ADD_FAILURE() << "rewind(" << bad << ") was accepted";
    } catch (const loom::Error &e) {
      EXPECT_EQ(std::string(e.what()),
                "rewind: position " + std::to_string(bad) +
                    " is outside 0..5 (the positions this session holds)");
    }
  }
  EXPECT_EQ(s.position(), 5);
  EXPECT_EQ(s.rewindPoint(-4), 0);
  EXPECT_EQ(s.rewindPoint(99), 5);
  s.rewind(5); // nothing to forget
  EXPECT_EQ(s.position(), 5);
}

TEST_F(SessionTest, SessionsAreIndependentAndThreadCountsAgree) {
  loom::Session a(model, {1, false}), b(model, {2, false});
  EXPECT_EQ(a.threads(), 1);
  EXPECT_EQ(b.threads(), 2);
  EXPECT_GT(loom::Session(model).threads(), 0);
  Reference ref(weights);
  for (size_t p = 0; p < kTokens.size(); ++p) {
    std::vector<double> want = ref.forward(kTokens[p], p);
    // Interleaved: each session's KV cache is its own.
    EXPECT_LT(maxDiff(a.forward(&kTokens[p], 1).last(), want), 1e-4);
    EXPECT_LT(maxDiff(b.forward(&kTokens[p], 1).last(), want), 1e-4);
  }
}

TEST_F(SessionTest, SessionsOnSeveralThreadsShareTheModel) {
  Reference ref(weights);
  std::vector<std::vector<double>> want;
  for (size_t p = 0; p < kTokens.size(); ++p)
    want.push_back(ref.forward(kTokens[p], p));
  std::vector<double> worst(3, 0.0);
  std::vector<std::thread> workers;
  for (size_t w = 0; w < worst.size(); ++w)
    workers.emplace_back([&, w] {
      loom::Session s(model, {1, false});
      for (size_t p = 0; p < kTokens.size(); ++p)
        worst[w] = std::max(worst[w],
                            maxDiff(s.forward(&kTokens[p], 1).last(), want[p]));
    });
  for (std::thread &t : workers)
    t.join();
  for (double d : worst)
    EXPECT_LT(d, 1e-4);
}

TEST_F(SessionTest, InvalidThreadCount) {
  EXPECT_THROW(loom::Session(model, {-1, false}), loom::Error);
  EXPECT_THROW(loom::Session(model, {5000, false}), loom::Error);
}

TEST_F(SessionTest, SizesAreReported) {
  loom::Session s(model);
  EXPECT_EQ(s.arenaBytes(), model->arenaBytes());
  EXPECT_EQ(s.kvCacheBytes(), model->kvCacheBytes());
  EXPECT_EQ(&s.model(), model.get());
}

TEST_F(SessionTest, ArenaTooLargeIsOutOfMemory) {
  spec.arena_bytes = uint64_t(1) << 62;
  auto m = loadSpec(spec);
  try {
    loom::Session s(m);
    FAIL() << "allocated 2^62 bytes";
  } catch (const loom::OutOfMemoryError &e) {
    EXPECT_EQ(std::string(e.what()),
              "out of memory: need 4611686018427387904 bytes for the "
              "activation arena");
  }
}

TEST_F(SessionTest, TraceHasOneEventPerDispatch) {
  loom::Session s(model, {1, true});
  s.forward(kTokens.data(), 6); // two steps: 4 rows, then 2
  const int32_t t = 9;
  s.forward(&t, 1); // one step
  TempFile trace;
  s.writeTrace(trace.path());
  loom::test::Json j = loom::test::Json::parseFile(trace.path());
  const auto &events = j["traceEvents"].items();
  const size_t per_step = spec.dispatches.size();
  ASSERT_EQ(events.size(), 3 * per_step);
  const std::vector<int64_t> rows = {4, 2, 1};
  for (size_t i = 0; i < events.size(); ++i) {
    const loom::test::Json &e = events[i];
    const auto &d = spec.dispatches[i % per_step];
    EXPECT_EQ(e["ph"].asString(), "X");
    EXPECT_EQ(e["name"].asString(), d.name);
    EXPECT_EQ(e["args"]["kernel"].asString(),
              loom::artifact::EnumNameKernel(d.kernel));
    // The classifier runs on the last row only.
    int64_t want = d.kernel == loom::artifact::Kernel::Logits
                       ? (i / per_step == 0 ? 0 : 1)
                       : rows[i / per_step];
    EXPECT_EQ(e["args"]["rows"].asInt(), want) << i;
    EXPECT_GE(e["dur"].asDouble(), 0.0);
    EXPECT_GE(e["ts"].asDouble(), 0.0);
  }
}

TEST_F(SessionTest, TraceNeedsTracing) {
  loom::Session s(model);
  EXPECT_THROW(s.writeTrace("/tmp/unused.json"), loom::Error);
}

// ---- C API ----------------------------------------------------------------

TEST(CApi, ReportsErrorsThroughLastError) {
  loom_model *m = reinterpret_cast<loom_model *>(1);
  EXPECT_EQ(loom_model_load("/nonexistent/x.loom", &m), LOOM_ERROR);
  EXPECT_EQ(m, nullptr);
  EXPECT_STREQ(loom_last_error(),
               "cannot open artifact '/nonexistent/x.loom': No such file or "
               "directory");
  EXPECT_EQ(loom_model_load(nullptr, &m), LOOM_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(loom_last_error(), "loom_model_load: path is NULL");
  EXPECT_EQ(loom_session_create(nullptr, 0, nullptr),
            LOOM_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(loom_session_position(nullptr), -1);
  EXPECT_STREQ(loom_status_name(LOOM_ERROR_OUT_OF_MEMORY),
               "LOOM_ERROR_OUT_OF_MEMORY");
  loom_model_free(nullptr);
  loom_session_free(nullptr);
  loom_sampler_free(nullptr);
}

// The library reports the version its headers were generated with, in the
// MAJOR.MINOR.PATCH of the macros.
TEST(CApi, VersionMatchesTheHeaders) {
  EXPECT_STREQ(loom_version(), LOOM_VERSION_STRING);
  EXPECT_EQ(std::string(loom_version()),
            std::to_string(LOOM_VERSION_MAJOR) + "." +
                std::to_string(LOOM_VERSION_MINOR) + "." +
                std::to_string(LOOM_VERSION_PATCH));
}

TEST(CApi, RunsAModel) {
  LlamaWeights w = loom::test::tinyLlamaWeights();
  TempFile file(
      loom::test::llamaArtifact(w, loom::test::syntheticTokenizer(272))
          .serialize());
  loom_model *m = nullptr;
  ASSERT_EQ(loom_model_load(file.path().c_str(), &m), LOOM_OK)
      << loom_last_error();
  loom_model_info info;
  ASSERT_EQ(loom_model_get_info(m, &info), LOOM_OK);
  EXPECT_EQ(info.vocab_size, 272);
  EXPECT_EQ(info.context_length, 32);
  EXPECT_EQ(info.bos_id, 1);
  EXPECT_EQ(loom_token_ends_generation(m, 1), 1); // BOS
  EXPECT_EQ(loom_token_ends_generation(m, 2), 1); // EOS
  EXPECT_EQ(loom_token_ends_generation(m, 3), 0);
  EXPECT_EQ(loom_token_ends_generation(nullptr, 2), 0);

  size_t n = 0;
  EXPECT_EQ(loom_tokenize(m, "the cat", 1, nullptr, 0, &n),
            LOOM_ERROR_BUFFER_TOO_SMALL);
  ASSERT_GT(n, 1u);
  std::vector<int> ids(n);
  ASSERT_EQ(loom_tokenize(m, "the cat", 1, ids.data(), ids.size(), &n),
            LOOM_OK);
  EXPECT_EQ(ids[0], 1);
  std::string text;
  for (size_t i = 1; i < n; ++i) {
    char buf[32];
    size_t len = 0;
    ASSERT_EQ(loom_token_to_text(m, ids[i - 1], ids[i], buf, sizeof buf, &len),
              LOOM_OK);
    text.append(buf, len);
  }
  EXPECT_EQ(text, "the cat");
  char tiny[2];
  size_t len = 0;
  EXPECT_EQ(loom_token_to_text(m, 1, ids[1], tiny, sizeof tiny, &len),
            LOOM_ERROR_BUFFER_TOO_SMALL);
  EXPECT_EQ(loom_token_to_text(m, 1, 5000, tiny, sizeof tiny, &len),
            LOOM_ERROR_INVALID_ARGUMENT);

  loom_session *s = nullptr;
  ASSERT_EQ(loom_session_create(m, 1, &s), LOOM_OK);
  loom_model_free(m); // the session keeps the model alive
  const float *logits = nullptr;
  ASSERT_EQ(loom_session_forward(s, ids.data(), n, &logits), LOOM_OK);
  EXPECT_EQ(loom_session_position(s), static_cast<long>(n));

  Reference ref(w);
  std::vector<double> want;
  for (size_t i = 0; i < n; ++i)
    want = ref.forward(ids[i], i);
  EXPECT_LT(maxDiff(logits, want), 1e-4);

  const int bad = 99999;
  EXPECT_EQ(loom_session_forward(s, &bad, 1, &logits), LOOM_ERROR);
  EXPECT_STREQ(loom_last_error(),
               "token id 99999 is outside the vocabulary (0..271)");
  EXPECT_EQ(loom_session_forward(s, ids.data(), 0, &logits),
            LOOM_ERROR_INVALID_ARGUMENT);

  EXPECT_EQ(loom_session_rewind_point(s, 1), 1);
  EXPECT_EQ(loom_session_rewind_point(nullptr, 1), -1);
  ASSERT_EQ(loom_session_rewind(s, 1), LOOM_OK);
  EXPECT_EQ(loom_session_position(s), 1);
  ASSERT_EQ(loom_session_forward(s, ids.data() + 1, n - 1, &logits), LOOM_OK);
  EXPECT_LT(maxDiff(logits, want), 1e-4);
  EXPECT_EQ(loom_session_rewind(s, static_cast<long>(n) + 1), LOOM_ERROR);
  EXPECT_EQ(std::string(loom_last_error()),
            "rewind: position " + std::to_string(n + 1) + " is outside 0.." +
                std::to_string(n) + " (the positions this session holds)");
  EXPECT_EQ(loom_session_rewind(nullptr, 0), LOOM_ERROR_INVALID_ARGUMENT);

  const float *rows = nullptr;
  ASSERT_EQ(loom_session_reset(s), LOOM_OK);
  ASSERT_EQ(loom_session_forward_all(s, ids.data(), n, &rows), LOOM_OK);
  EXPECT_LT(maxDiff(rows + (n - 1) * 272, want), 1e-4);
  loom_session_free(s);
}

// Rope frequency factors (Llama 3.1's rope scaling) change the rotation:
// factors of 1 change nothing, others change the logits.
TEST(SessionRope, FreqFactorsDivideTheFrequencies) {
  LlamaWeights w = loom::test::tinyLlamaWeights();
  auto logitsWith = [&](float factor) {
    loom::test::ArtifactSpec a =
        loom::test::llamaArtifact(w, loom::test::syntheticTokenizer(272));
    for (auto &d : a.dispatches)
      if (d.kernel == fbs::Kernel::Rope ||
          d.kernel == fbs::Kernel::FusedQkvAttention) {
        int64_t hd =
            d.kernel == fbs::Kernel::Rope ? d.iparams[1] : d.iparams[3];
        if (factor > 0)
          d.fparams.resize(size_t(1 + hd / 2), factor);
      }
    TempFile file(a.serialize());
    loom::Session s(loom::Model::load(file.path()));
    const int32_t ids[] = {1, 5, 9, 14, 3, 7};
    loom::Logits l = s.forward(ids, 6, true);
    return std::vector<float>(l.data, l.data + l.rows * l.vocab);
  };
  const std::vector<float> plain = logitsWith(0), ones = logitsWith(1.0f),
                           eights = logitsWith(8.0f);
  EXPECT_EQ(ones, plain);
  double diff = 0;
  for (size_t i = 0; i < plain.size(); ++i)
    diff = std::max(diff, double(std::fabs(eights[i] - plain[i])));
  EXPECT_GT(diff, 1e-3);
}

// A rope's scale (YaRN's attention factor, after head_dim / 2 factors)
// multiplies its cos and sin: the reference's logits, fused or not; a
// scale of 1 changes nothing, bit for bit.
TEST(SessionRope, ScaleMultipliesTheRotation) {
  LlamaWeights w = loom::test::tinyLlamaWeights();
  auto logitsWith = [&](float scale, bool fused) {
    LlamaArtifactOptions o;
    o.fused = fused;
    loom::test::ArtifactSpec a =
        loom::test::llamaArtifact(w, loom::test::syntheticTokenizer(272), o);
    for (auto &d : a.dispatches)
      if (scale > 0 && (d.kernel == fbs::Kernel::Rope ||
                        d.kernel == fbs::Kernel::FusedQkvAttention)) {
        int64_t hd =
            d.kernel == fbs::Kernel::Rope ? d.iparams[1] : d.iparams[3];
        d.fparams.resize(size_t(1 + hd / 2), 1.0f);
        d.fparams.push_back(scale);
      }
    TempFile file(a.serialize());
    loom::Session s(loom::Model::load(file.path()));
    loom::Logits l = s.forward(kTokens.data(), kTokens.size(), true);
    return std::vector<float>(l.data, l.data + l.rows * l.vocab);
  };
  EXPECT_EQ(logitsWith(1.0f, false), logitsWith(0, false));
  for (bool fused : {false, true}) {
    Reference ref(w, 0, double(1.25f));
    const std::vector<float> got = logitsWith(1.25f, fused);
    for (size_t p = 0; p < kTokens.size(); ++p)
      EXPECT_LT(maxDiff(got.data() + p * w.vocab_size,
                        ref.forward(kTokens[p], int64_t(p))),
                1e-4)
          << (fused ? "fused" : "unfused") << " position " << p;
  }
  const std::vector<float> plain = logitsWith(0, true),
                           scaled = logitsWith(1.25f, true);
  EXPECT_GT(maxDiff(plain.data(), scaled.data(), int64_t(plain.size())), 1e-3);
}

// ---- Sliding-window attention (Mistral v0.1, Phi-3, Qwen 2) -------------

class SessionWindow : public ::testing::TestWithParam<bool> { // fused
protected:
  // Two layers, windows of 5 positions, prompts of up to 40 tokens fed in
  // steps of up to 8 rows.
  void SetUp() override {
    loom::test::TinyLlamaOptions o;
    o.n_layers = 2;
    o.max_seq = 64;
    o.seed = 11;
    weights = loom::test::tinyLlamaWeights(o);
  }
  std::shared_ptr<loom::Model> windowed(int64_t window) const {
    LlamaArtifactOptions a;
    a.fused = GetParam();
    ArtifactSpec spec = loom::test::llamaArtifact(
        weights, loom::test::syntheticTokenizer(weights.vocab_size), a);
    if (window > 0)
      loom::test::addSlidingWindow(spec, window);
    return loadSpec(spec);
  }
  static std::vector<int32_t> tokens(size_t n, uint32_t seed) {
    std::vector<int32_t> t(n);
    for (size_t i = 0; i < n; ++i)
      t[i] = int32_t((i * 97 + seed * 31 + 5) % 272);
    return t;
  }
  // Every row's logits of a prompt fed in steps of `step` tokens.
  std::vector<float> rows(const std::shared_ptr<loom::Model> &m,
                          const std::vector<int32_t> &ids, size_t step) const {
    loom::Session s(m);
    std::vector<float> out;
    for (size_t i = 0; i < ids.size(); i += step) {
      loom::Logits l =
          s.forward(ids.data() + i, std::min(step, ids.size() - i), true);
      out.insert(out.end(), l.data, l.data + l.rows * l.vocab);
    }
    return out;
  }
  LlamaWeights weights;
};

TEST_P(SessionWindow, MatchesTheReference) {
  const int64_t V = weights.vocab_size;
  const std::vector<int32_t> ids = tokens(40, 1);
  Reference ref(weights, 5);
  const std::vector<float> chunked = rows(windowed(5), ids, ids.size());
  for (size_t p = 0; p < ids.size(); ++p)
    EXPECT_LT(maxDiff(chunked.data() + p * V, ref.forward(ids[p], p)), 1e-4)
        << "position " << p;
  // Whichever steps the positions come in (the window cutting some rows of
  // a step, or none), the same logits (up to the GEMM's rounding).
  for (size_t step : {1, 3}) {
    const std::vector<float> other = rows(windowed(5), ids, step);
    EXPECT_LT(maxDiff(other.data(), chunked.data(), int64_t(other.size())),
              1e-4)
        << "steps of " << step;
  }
}

// The window takes effect: past it the logits are not the full attention's;
// within it they are, bit for bit (as is a window that holds every
// position).
TEST_P(SessionWindow, OnlyPositionsPastTheWindowChange) {
  const int64_t V = weights.vocab_size;
  const std::vector<int32_t> ids = tokens(24, 2);
  const std::vector<float> full = rows(windowed(0), ids, 8),
                           cut = rows(windowed(5), ids, 8);
  EXPECT_EQ(std::vector<float>(full.begin(), full.begin() + 5 * V),
            std::vector<float>(cut.begin(), cut.begin() + 5 * V));
  for (size_t p = 5; p < ids.size(); ++p)
    EXPECT_GT(maxDiff(full.data() + p * V, cut.data() + p * V, V), 1e-3)
        << "position " << p;
  EXPECT_EQ(rows(windowed(64), ids, 8), full);
}

// The last position of L layers with windows of W positions depends on
// exactly the last L (W - 1) + 1 tokens: fed alone (at positions from 0:
// RoPE sees the same offsets), those give its logits up to rounding; one
// token fewer does not.
TEST_P(SessionWindow, DependsOnTheLastLayersTimesWindowPositions) {
  const int64_t V = weights.vocab_size, W = 5, L = weights.n_layers;
  const std::vector<int32_t> ids = tokens(37, 3);
  const std::shared_ptr<loom::Model> m = windowed(W);
  const std::vector<float> all = rows(m, ids, 8);
  const float *last = all.data() + (ids.size() - 1) * V;
  const size_t reach = size_t(L * (W - 1) + 1);
  const std::vector<int32_t> tail(ids.end() - reach, ids.end()),
      shorter(ids.end() - reach + 1, ids.end());
  const std::vector<float> a = rows(m, tail, 8), b = rows(m, shorter, 8);
  EXPECT_LT(maxDiff(last, a.data() + (reach - 1) * V, V), 1e-4);
  EXPECT_GT(maxDiff(last, b.data() + (reach - 2) * V, V), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Session, SessionWindow, ::testing::Bool(),
                         [](const auto &info) {
                           return std::string(info.param ? "Fused" : "Unfused");
                         });

// Qwen 2's biases on the fused attention: q|k's and v's each change the
// logits (so the runtime adds both).
TEST(SessionBias, FusedQkAndVBiasesApply) {
  LlamaWeights w = loom::test::tinyLlamaWeights();
  LlamaArtifactOptions fused;
  fused.fused = true;
  auto logits = [&](int biases) {
    ArtifactSpec a = loom::test::llamaArtifact(
        w, loom::test::syntheticTokenizer(272), fused);
    if (biases > 0)
      loom::test::addQkvBiases(a);
    for (auto &d : a.dispatches)
      if (biases == 1 && d.kernel == fbs::Kernel::FusedQkvAttention)
        d.weights.pop_back(); // q|k's only
    TempFile file(a.serialize());
    loom::Session s(loom::Model::load(file.path()));
    const int32_t ids[] = {1, 5, 9, 14, 3, 7};
    loom::Logits l = s.forward(ids, 6, true);
    return std::vector<float>(l.data, l.data + l.rows * l.vocab);
  };
  const std::vector<float> none = logits(0), qk = logits(1), qkv = logits(2);
  auto maxDiff = [](const std::vector<float> &a, const std::vector<float> &b) {
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i)
      d = std::max(d, double(std::fabs(a[i] - b[i])));
    return d;
  };
  EXPECT_GT(maxDiff(none, qk), 1e-3);
  EXPECT_GT(maxDiff(qk, qkv), 1e-3);
}

TEST(CApi, SpecialTokensInText) {
  LlamaWeights w = loom::test::tinyLlamaWeights();
  loom::test::ArtifactSpec spec =
      loom::test::llamaArtifact(w, loom::test::byteLevelTokenizer(272));
  spec.config.bos_id = 259;
  spec.config.eos_id = 260;
  TempFile file(spec.serialize());
  loom_model *m = nullptr;
  ASSERT_EQ(loom_model_load(file.path().c_str(), &m), LOOM_OK)
      << loom_last_error();
  std::vector<int> ids(32);
  size_t n = 0;
  // Plain: "<|eot|>" is its 7 bytes; special: the token (261).
  ASSERT_EQ(loom_tokenize(m, " the<|eot|>", 1, ids.data(), ids.size(), &n),
            LOOM_OK);
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + n),
            std::vector<int>({259, 258, '<', '|', 'e', 'o', 't', '|', '>'}));
  ASSERT_EQ(
      loom_tokenize_special(m, " the<|eot|>", 1, ids.data(), ids.size(), &n),
      LOOM_OK)
      << loom_last_error();
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + n),
            std::vector<int>({259, 258, 261}));
  char text[16];
  size_t len = 0;
  ASSERT_EQ(loom_token_to_text(m, 259, 261, text, sizeof text, &len), LOOM_OK);
  EXPECT_EQ(len, 0u); // special tokens print nothing
  loom_model_free(m);

  // A vocabulary that names no special tokens (llama2.c's) has none to
  // pick out.
  TempFile sp(loom::test::llamaArtifact(w, loom::test::syntheticTokenizer(272))
                  .serialize());
  ASSERT_EQ(loom_model_load(sp.path().c_str(), &m), LOOM_OK);
  EXPECT_EQ(loom_tokenize_special(m, "the", 1, ids.data(), ids.size(), &n),
            LOOM_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(loom_last_error()).find("names no special tokens"),
            std::string::npos);
  loom_model_free(m);
}

TEST(CApi, ChatRender) {
  const auto w = loom::test::tinyLlamaWeights();
  loom::test::TokenizerSpec tok = loom::test::syntheticTokenizer(272);
  tok.chat_template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] "
                      "{{ m.content }}{% endfor %}{% if add_generation_prompt "
                      "%}[assistant]{% endif %}{{ nope.x if messages | length "
                      "> 2 }}";
  tok.chat_bos = "<s>";
  TempFile file(loom::test::llamaArtifact(w, tok).serialize());
  loom_model *m = nullptr;
  ASSERT_EQ(loom_model_load(file.path().c_str(), &m), LOOM_OK)
      << loom_last_error();
  char text[64];
  size_t n = 0;
  const char *conversation = R"([{"role": "user", "content": "hi"}])";
  ASSERT_EQ(loom_chat_render(m, conversation, 1, text, sizeof text, &n),
            LOOM_OK)
      << loom_last_error();
  EXPECT_EQ(std::string(text, n), "<s>[user] hi[assistant]");
  ASSERT_EQ(loom_chat_render(m, conversation, 0, text, sizeof text, &n),
            LOOM_OK);
  EXPECT_EQ(std::string(text), "<s>[user] hi");
  EXPECT_EQ(loom_chat_render(m, conversation, 1, text, 5, &n),
            LOOM_ERROR_BUFFER_TOO_SMALL);
  EXPECT_EQ(n, 23u);
  EXPECT_EQ(loom_chat_render(m, "[{\"role\": 1", 1, text, sizeof text, &n),
            LOOM_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(loom_last_error()).find("malformed JSON at offset"),
            std::string::npos);
  EXPECT_EQ(loom_chat_render(m,
                             R"([{"role": "a"}, {"role": "b"}, {"role": "c"}])",
                             1, text, sizeof text, &n),
            LOOM_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(loom_last_error()),
            "loom_chat_render: chat template line 1: 'nope' is undefined");
  EXPECT_EQ(loom_chat_render(m, nullptr, 1, text, sizeof text, &n),
            LOOM_ERROR_INVALID_ARGUMENT);
  loom_model_free(m);

  TempFile none(
      loom::test::llamaArtifact(w, loom::test::syntheticTokenizer(272))
          .serialize());
  ASSERT_EQ(loom_model_load(none.path().c_str(), &m), LOOM_OK);
  EXPECT_EQ(loom_chat_render(m, conversation, 1, text, sizeof text, &n),
            LOOM_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(loom_last_error()),
            "loom_chat_render: this model has no chat template");
  loom_model_free(m);
}

TEST(CApi, Sampler) {
  TempFile file(loom::test::llamaArtifact(loom::test::tinyLlamaWeights(),
                                          loom::test::syntheticTokenizer(272))
                    .serialize());
  loom_model *m = nullptr;
  ASSERT_EQ(loom_model_load(file.path().c_str(), &m), LOOM_OK);
  loom_sampler *sampler = nullptr;
  EXPECT_EQ(loom_sampler_create(m, -1.0f, 0.9f, 1, &sampler),
            LOOM_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(loom_sampler_create(m, 1.0f, 0.0f, 1, &sampler),
            LOOM_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(sampler, nullptr);
  ASSERT_EQ(loom_sampler_create(m, 0.0f, 1.0f, 1, &sampler), LOOM_OK);
  std::vector<float> logits(272, 0.0f);
  logits[123] = 5.0f;
  int token = -1;
  ASSERT_EQ(loom_sampler_sample(sampler, logits.data(), &token), LOOM_OK);
  EXPECT_EQ(token, 123);
  EXPECT_EQ(loom_sampler_sample(sampler, nullptr, &token),
            LOOM_ERROR_INVALID_ARGUMENT);
  loom_sampler_free(sampler);
  loom_model_free(m);
}

// Devices through the C API: where CUDA is unavailable (CI) the session
// fails naming why; the decode step with sampling equals forward + sample.
TEST(CApi, DevicesAndForwardSample) {
  TempFile f(loom::test::llamaArtifact(loom::test::tinyLlamaWeights(),
                                       loom::test::syntheticTokenizer(272))
                 .serialize());
  loom_model *m = nullptr;
  ASSERT_EQ(loom_model_load(f.path().c_str(), &m), LOOM_OK);
  loom_session *s = nullptr;
  const std::string why = loom_cuda_unavailable_reason();
  if (!why.empty()) {
    EXPECT_EQ(loom_session_create_on(m, LOOM_DEVICE_CUDA, 0, 1, &s), LOOM_ERROR);
    EXPECT_EQ(std::string(loom_last_error()), "no CUDA device (" + why + ")");
    EXPECT_EQ(s, nullptr);
  }
  EXPECT_EQ(loom_session_create_on(m, static_cast<loom_device>(7), 0, 1, &s),
            LOOM_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(loom_session_create_on(m, LOOM_DEVICE_CPU, 0, 1, &s), LOOM_OK);
  loom_session *t = nullptr;
  ASSERT_EQ(loom_session_create(m, 1, &t), LOOM_OK);
  loom_sampler *a = nullptr, *b = nullptr;
  ASSERT_EQ(loom_sampler_create(m, 0.9f, 1.0f, 7, &a), LOOM_OK);
  ASSERT_EQ(loom_sampler_create(m, 0.9f, 1.0f, 7, &b), LOOM_OK);
  int x = 5, y = 5;
  for (int step = 0; step < 12; ++step) {
    ASSERT_EQ(loom_session_forward_sample(s, x, a, &x), LOOM_OK);
    const float *logits = nullptr;
    ASSERT_EQ(loom_session_forward(t, &y, 1, &logits), LOOM_OK);
    ASSERT_EQ(loom_sampler_sample(b, logits, &y), LOOM_OK);
    EXPECT_EQ(x, y) << "step " << step;
  }
  EXPECT_EQ(loom_session_forward_sample(s, 9999, a, &x), LOOM_ERROR);
  EXPECT_EQ(loom_session_forward_sample(nullptr, 1, a, &x),
            LOOM_ERROR_INVALID_ARGUMENT);
  loom_sampler_free(a);
  loom_sampler_free(b);
  loom_session_free(s);
  loom_session_free(t);
  loom_model_free(m);
}

TEST(CApi, OutOfMemoryStatus) {
  ArtifactSpec spec = loom::test::llamaArtifact(
      loom::test::tinyLlamaWeights(), loom::test::syntheticTokenizer(272));
  spec.kv_caches[0].max_seq = 32; // unchanged; the arena is the huge part
  spec.arena_bytes = uint64_t(1) << 62;
  TempFile file(spec.serialize());
  loom_model *m = nullptr;
  ASSERT_EQ(loom_model_load(file.path().c_str(), &m), LOOM_OK);
  loom_session *s = nullptr;
  EXPECT_EQ(loom_session_create(m, 0, &s), LOOM_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(s, nullptr);
  EXPECT_NE(std::string(loom_last_error()).find("out of memory: need"),
            std::string::npos);
  loom_model_free(m);
}

// ---- llama2.c models, end to end -----------------------------------------

// run.c's generate() with greedy sampling: feeds the prompt, then up to
// `steps` positions in total; returns the generated ids (a final BOS
// included, as in the golden files), the printed text, and the logits rows
// of every fed position.
struct Generation {
  std::vector<int32_t> generated;
  std::string text;
  std::vector<float> logits;
};

Generation runLikeRunC(loom::Session &s, const std::vector<int32_t> &prompt,
                       int64_t steps) {
  const loom::Tokenizer &tok = s.model().tokenizer();
  const int64_t V = s.model().config().vocab_size;
  Generation r;
  for (size_t i = 1; i < prompt.size(); ++i)
    r.text += tok.decode(prompt[i - 1], prompt[i]);
  loom::Logits l = s.forward(prompt.data(), prompt.size(), true);
  r.logits.assign(l.data, l.data + l.rows * V);
  int32_t prev = prompt.back();
  while (true) {
    int32_t next = argmax(l.last(), V);
    r.generated.push_back(next);
    if (next == 1)
      break;
    r.text += tok.decode(prev, next);
    if (s.position() == steps)
      break;
    l = s.forward(&next, 1);
    r.logits.insert(r.logits.end(), l.data, l.data + V);
    prev = next;
  }
  r.text += "\n";
  return r;
}

std::shared_ptr<loom::Model> llama2cModel(const std::string &model_path,
                                          const std::string &tokenizer_path,
                                          const LlamaArtifactOptions &o) {
  loom::test::TokenizerSpec tok;
  LlamaWeights w = loom::test::readLlama2c(model_path, tokenizer_path, &tok);
  return loadSpec(loom::test::llamaArtifact(w, tok, o));
}

// stories260K and tok512.bin ship with the repository (models/), so this
// runs everywhere; the text is run.c's stdout for -n 64 "Once upon a time".
TEST(Llama2c, Stories260KTextMatchesRunC) {
  const std::string dir = loom::test::sourceDir() + "/models/";
  for (LlamaArtifactOptions o : {LlamaArtifactOptions{8, false, false, 0},
                                 LlamaArtifactOptions{3, true, false, 0}}) {
    SCOPED_TRACE(o.fused ? "fused, 3 rows" : "unfused, 8 rows");
    auto m = llama2cModel(dir + "stories260K.bin", dir + "tok512.bin", o);
    EXPECT_EQ(m->tokenizer().encode("Once upon a time", true, false),
              (std::vector<int32_t>{1, 403, 407, 261, 378}));
    loom::Session s(m);
    Generation r = runLikeRunC(s, {1, 403, 407, 261, 378}, 64);
    EXPECT_EQ(r.generated.size(), 60u);
    EXPECT_EQ(r.text,
              "Once upon a time, there was a little girl named Lily. She "
              "loved to play outside in the park. One day, she saw a big, "
              "red ball. She wanted to play with it, but it was too "
              "high.\nLily\n");
  }
}

// Every golden run: generated ids and text for each steps value, and the
// stored logits rows (atol 1e-4 + rtol 1e-4, the README's advice).
void checkGolden(const std::string &name, const std::string &model_rel,
                 const std::string &tokenizer_rel) {
  const std::string json_rel = "golden/" + name + ".json";
  const std::string bin_rel = "golden/" + name + "_logits.f32.bin";
  LOOM_REQUIRE_SHARED(json_rel);
  LOOM_REQUIRE_SHARED(model_rel);
  LOOM_REQUIRE_SHARED(tokenizer_rel);
  LOOM_REQUIRE_SHARED(bin_rel);
  loom::test::Json g =
      loom::test::Json::parseFile(loom::test::sharedPath(json_rel));
  std::vector<int32_t> prompt;
  for (int64_t id : g["prompt_ids"].asIntVector())
    prompt.push_back(static_cast<int32_t>(id));
  auto m =
      llama2cModel(loom::test::sharedPath(model_rel),
                   loom::test::sharedPath(tokenizer_rel), {4, false, false, 0});
  loom::Session s(m);
  const int64_t V = m->config().vocab_size;
  for (const std::string &steps : g["runs"].keys()) {
    SCOPED_TRACE(name + " steps " + steps);
    const loom::test::Json &run = g["runs"][steps];
    s.reset();
    Generation r = runLikeRunC(s, prompt, run["steps"].asInt());
    std::vector<int32_t> want;
    for (int64_t id : run["generated_ids"].asIntVector())
      want.push_back(static_cast<int32_t>(id));
    EXPECT_EQ(r.generated, want);
    EXPECT_EQ(r.text, run["text"].asString());
    std::vector<uint8_t> bin =
        loom::test::readFileBytes(loom::test::sharedPath(bin_rel));
    const int64_t rows = static_cast<int64_t>(bin.size() / (V * 4));
    ASSERT_GE(static_cast<int64_t>(r.logits.size()), rows * V);
    std::vector<float> golden(rows * V);
    std::memcpy(golden.data(), bin.data(), golden.size() * sizeof(float));
    for (int64_t p = 0; p < rows; ++p) {
      double worst = 0;
      for (int64_t i = 0; i < V; ++i) {
        double d = std::abs(r.logits[p * V + i] - golden[p * V + i]);
        worst = std::max(worst, d - 1e-4 * std::abs(golden[p * V + i]));
      }
      EXPECT_LE(worst, 1e-4) << "position " << p;
    }
  }
}

TEST(Llama2c, Stories260KGoldenOnceUponATime) {
  checkGolden("stories260K_once_upon_a_time", "models/stories260K.bin",
              "models/tok512.bin");
}
TEST(Llama2c, Stories260KGoldenTheLittleDog) {
  checkGolden("stories260K_the_little_dog", "models/stories260K.bin",
              "models/tok512.bin");
}
TEST(Llama2c, Stories260KGoldenEmpty) {
  checkGolden("stories260K_empty", "models/stories260K.bin",
              "models/tok512.bin");
}
TEST(Llama2c, SyntheticUntiedGoldenOnceUponATime) {
  checkGolden("synthetic_untied_once_upon_a_time",
              "models/synthetic_untied_v32000.bin", "models/tokenizer.bin");
}
TEST(Llama2c, SyntheticUntiedGoldenEmpty) {
  checkGolden("synthetic_untied_empty", "models/synthetic_untied_v32000.bin",
              "models/tokenizer.bin");
}

} // namespace
