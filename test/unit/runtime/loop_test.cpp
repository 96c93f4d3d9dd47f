// Looped blocks (recurrent depth, Huginn): the hand-built huginn-tiny
// artifact against the ../shared goldens (fixed depths, KV policies, warm
// start, adaptive KL exit); a small random Huginn against a double-precision
// reference written here (every KV policy and exit criterion); KV memory,
// seeding, option validation and the loader's checks of the Loop table.
#include "loom/error.h"
#include "loom/runtime.h"
#include "support/artifact_builder.h"
#include "support/huginn_builder.h"
#include "support/json.h"
#include "support/shared.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

using loom::ExitCriterion;
using loom::LoopOptions;
using loom::SessionOptions;
using loom::test::ArtifactSpec;
using loom::test::HuginnCheckpoint;
using loom::test::HuginnLayout;
using loom::test::HuginnOptions;
using loom::test::TempFile;
namespace fbs = loom::artifact;

const std::string kGolden = "golden/huginn-tiny";

std::shared_ptr<loom::Model> load(const ArtifactSpec &spec) {
  TempFile file(spec.serialize());
  return loom::Model::load(file.path());
}

std::vector<float> readFloats(const std::string &path) {
  std::vector<uint8_t> bytes = loom::test::readFileBytes(path);
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

int32_t argmax(const float *x, int64_t n) {
  return static_cast<int32_t>(std::max_element(x, x + n) - x);
}

// |got - want| <= atol + rtol |want| everywhere; *max_diff receives the
// largest |got - want|.
template <typename A, typename B>
::testing::AssertionResult allClose(const A *got, const B *want, size_t n,
                                    double atol, double rtol,
                                    double *max_diff = nullptr) {
  double worst = 0.0;
  size_t bad = n;
  for (size_t i = 0; i < n; ++i) {
    const double g = double(got[i]), w = double(want[i]);
    if (std::isnan(g) && std::isnan(w))
      continue;
    const double d = std::fabs(g - w);
    if (!(d <= worst))
      worst = d;
    if (!(d <= atol + rtol * std::fabs(w)) && bad == n)
      bad = i;
  }
  if (max_diff)
    *max_diff = worst;
  if (bad == n)
    return ::testing::AssertionSuccess() << "max |diff| " << worst;
  return ::testing::AssertionFailure()
         << "element " << bad << ": got " << double(got[bad]) << ", want "
         << double(want[bad]) << " (max |diff| " << worst << ")";
}

SessionOptions loopOptions(LoopOptions loop) {
  SessionOptions o;
  o.threads = 2;
  o.loop = std::move(loop);
  return o;
}

LoopOptions fixed(int iterations, std::string policy = "full") {
  LoopOptions l;
  l.iterations = iterations;
  l.kv_policy = std::move(policy);
  l.init = LoopOptions::Init::Zero;
  return l;
}

LoopOptions adaptive(ExitCriterion c, double threshold, int max_iterations,
                     std::string policy = "full") {
  LoopOptions l;
  l.criterion = c;
  l.threshold = threshold;
  l.max_iterations = max_iterations;
  l.kv_policy = std::move(policy);
  l.init = LoopOptions::Init::Zero;
  return l;
}

// A greedy generation: the ids, the logits each was chosen from, and the
// session's per-step records.
struct Generation {
  std::vector<int32_t> ids;
  std::vector<std::vector<float>> logits;
  std::vector<int> steps;
  std::vector<std::vector<double>> values;
};

Generation generate(loom::Session &s, const std::vector<int32_t> &prompt,
                    int n) {
  Generation r;
  loom::Logits l = s.forward(prompt.data(), prompt.size());
  for (int i = 0; i < n; ++i) {
    r.logits.emplace_back(l.last(), l.last() + l.vocab);
    int32_t next = argmax(l.last(), l.vocab);
    r.ids.push_back(next);
    if (i + 1 < n)
      l = s.forward(&next, 1);
  }
  r.steps = s.iterationsPerStep();
  r.values = s.exitValues();
  return r;
}

//===----------------------------------------------------------------------===//
// huginn-tiny goldens
//===----------------------------------------------------------------------===//

class HuginnGolden : public ::testing::Test {
protected:
  void SetUp() override {
    LOOM_REQUIRE_SHARED(kGolden + "/model.safetensors");
    dir_ = loom::test::sharedPath(kGolden);
    model_ = load(
        loom::test::huginnArtifact(loom::test::readHuginnCheckpoint(dir_)));
    prompt_.clear();
    for (int64_t id :
         loom::test::Json::parseFile(dir_ + "/manifest.json")["prompt_ids"]
             .asIntVector())
      prompt_.push_back(static_cast<int32_t>(id));
  }

  // Compares a generation with gen_*.json / adaptive_*.json and their
  // *_logits.bin.
  void expectMatches(const Generation &run, const std::string &name,
                     bool adaptive_run) {
    const auto golden =
        loom::test::Json::parseFile(dir_ + "/" + name + ".json");
    const std::vector<float> logits =
        readFloats(dir_ + "/" + name + "_logits.bin");
    std::vector<int32_t> want;
    for (int64_t id : golden["generated_ids"].asIntVector())
      want.push_back(static_cast<int32_t>(id));
    EXPECT_EQ(run.ids, want);
    const int64_t V = model_->config().vocab_size;
    double worst = 0.0;
    for (size_t t = 0; t < run.logits.size() && t < want.size(); ++t) {
      double d;
      EXPECT_TRUE(allClose(run.logits[t].data(), logits.data() + t * V,
                           size_t(V), 1e-4, 1e-4, &d))
          << name << " token " << t;
      worst = std::max(worst, d);
    }
    std::printf("[ golden   ] %s: ids match %s, max |logit diff| %.3g\n",
                name.c_str(), run.ids == want ? "yes" : "NO", worst);
    if (!adaptive_run)
      return;
    std::vector<int> steps;
    for (int64_t s : golden["steps_per_token"].asIntVector())
      steps.push_back(static_cast<int>(s));
    EXPECT_EQ(run.steps, steps);
    const auto &values = golden["exit_values_per_token"].items();
    ASSERT_EQ(run.values.size(), values.size());
    double worst_value = 0.0;
    for (size_t t = 0; t < values.size(); ++t) {
      const std::vector<double> want_values = values[t].asDoubleVector();
      ASSERT_EQ(run.values[t].size(), want_values.size()) << "token " << t;
      double d;
      EXPECT_TRUE(allClose(run.values[t].data(), want_values.data(),
                           want_values.size(), 2e-6, 1e-3, &d))
          << name << " exit values of token " << t;
      worst_value = std::max(worst_value, d);
    }
    std::printf("[ golden   ] %s: steps match %s, max |exit value diff| "
                "%.3g\n",
                name.c_str(), run.steps == steps ? "yes" : "NO", worst_value);
  }

  std::string dir_;
  std::shared_ptr<loom::Model> model_;
  std::vector<int32_t> prompt_;
};

TEST_F(HuginnGolden, ModelDescribesItsLoop) {
  const loom::LoopInfo *loop = model_->loop();
  ASSERT_NE(loop, nullptr);
  EXPECT_EQ(loop->layers_per_iteration, 4);
  EXPECT_EQ(loop->layers_before, 2);
  EXPECT_EQ(loop->default_iterations, 32);
  EXPECT_EQ(loop->criterion, ExitCriterion::None);
}

TEST_F(HuginnGolden, LogitsOfEveryPromptRowAtEachDepth) {
  for (int r : {1, 4, 16, 32}) {
    SCOPED_TRACE(::testing::Message() << "r=" << r);
    loom::Session s(model_, loopOptions(fixed(r)));
    loom::Logits l = s.forward(prompt_.data(), prompt_.size(), true);
    const std::vector<float> want =
        readFloats(dir_ + "/logits_r" + std::to_string(r) + ".bin");
    ASSERT_EQ(want.size(), size_t(l.rows * l.vocab));
    double d;
    EXPECT_TRUE(allClose(l.data, want.data(), want.size(), 1e-4, 1e-4, &d));
    EXPECT_EQ(s.iterationsPerStep(), std::vector<int>{r});
    std::printf("[ golden   ] logits_r%d: max |diff| %.3g\n", r, d);
  }
}

TEST_F(HuginnGolden, ChunkedPromptMatchesOneStep) {
  // Fixed depth: feeding the prompt in chunks of 5 rows must give the same
  // logits, each chunk attending to the earlier chunks' per-iteration K/V.
  HuginnOptions o;
  o.max_tokens = 5;
  auto chunked = load(
      loom::test::huginnArtifact(loom::test::readHuginnCheckpoint(dir_), o));
  loom::Session s(chunked, loopOptions(fixed(4)));
  loom::Logits l = s.forward(prompt_.data(), prompt_.size(), true);
  const std::vector<float> want = readFloats(dir_ + "/logits_r4.bin");
  EXPECT_TRUE(allClose(l.data, want.data(), want.size(), 1e-4, 1e-4));
  EXPECT_EQ(s.iterationsPerStep(), (std::vector<int>{4, 4, 4}));
}

TEST_F(HuginnGolden, GreedyFullCache) {
  loom::Session s(model_, loopOptions(fixed(4, "full")));
  expectMatches(generate(s, prompt_, 16), "gen_r4_full", false);
}

TEST_F(HuginnGolden, GreedyCompressS4) {
  loom::Session s(model_, loopOptions(fixed(4, "compress-s4")));
  expectMatches(generate(s, prompt_, 16), "gen_r4_compress-s4", false);
}

TEST_F(HuginnGolden, GreedyCompressS8) {
  loom::Session s(model_, loopOptions(fixed(4, "compress-s8")));
  expectMatches(generate(s, prompt_, 16), "gen_r4_compress-s8", false);
}

TEST_F(HuginnGolden, GreedyWarmStart) {
  LoopOptions l = fixed(4);
  l.warm_start = true;
  loom::Session s(model_, loopOptions(l));
  expectMatches(generate(s, prompt_, 16), "gen_r4_full_warmstart", false);
}

TEST_F(HuginnGolden, AdaptiveKlFullCache) {
  loom::Session s(model_,
                  loopOptions(adaptive(ExitCriterion::Kl, 8e-4, 32, "full")));
  expectMatches(generate(s, prompt_, 16), "adaptive_kl_full", true);
}

TEST_F(HuginnGolden, AdaptiveKlLatestM4) {
  loom::Session s(
      model_, loopOptions(adaptive(ExitCriterion::Kl, 8e-4, 32, "latest-m4")));
  expectMatches(generate(s, prompt_, 16), "adaptive_kl_latest-m4", true);
}

TEST_F(HuginnGolden, ResetRepeatsTheGeneration) {
  loom::Session s(
      model_, loopOptions(adaptive(ExitCriterion::Kl, 8e-4, 32, "latest-m4")));
  const Generation first = generate(s, prompt_, 6);
  s.reset();
  EXPECT_TRUE(s.iterationsPerStep().empty());
  const Generation second = generate(s, prompt_, 6);
  EXPECT_EQ(first.ids, second.ids);
  EXPECT_EQ(first.steps, second.steps);
  EXPECT_EQ(first.logits, second.logits);
}

//===----------------------------------------------------------------------===//
// A double-precision reference
//===----------------------------------------------------------------------===//

// Huginn's forward pass and generation loops, one token step at a time, in
// double precision (RoPE angles in float32 as the reference code builds
// them), with the official dynamic cache's semantics: K/V stored per
// (step index, position); step index i for prelude layer i, P + C * it + j
// for core layer j at iteration it, -(m + 1) for coda layer m; the
// compress-* policies remap the core step indices; a slot that lacks some
// positions is read per policy.
class Reference {
public:
  struct Settings {
    std::string policy = "full";
    int iterations = 4;
    ExitCriterion criterion = ExitCriterion::None;
    double threshold = 0.0;
    int max_iterations = 32;
    bool warm_start = false;
  };

  Reference(const HuginnCheckpoint &ck, Settings s) : ck_(ck), s_(s) {}

  Generation generate(const std::vector<int32_t> &prompt, int n) {
    Generation run;
    std::vector<int32_t> input = prompt;
    for (int i = 0; i < n; ++i) {
      std::vector<double> logits = step(input, &run);
      run.logits.emplace_back(logits.begin(), logits.end());
      int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) -
                             logits.begin());
      run.ids.push_back(next);
      input = {next};
    }
    return run;
  }

private:
  using Vec = std::vector<double>;
  using Rows = std::vector<Vec>;
  struct Entry {
    int64_t pos;
    const Vec *k, *v;
  };

  const std::vector<float> &w(const std::string &name) const {
    return ck_.tensors.at(name).data;
  }

  Rows rms(const Rows &x, const std::string &name) const {
    const std::vector<float> &g = w(name);
    Rows y = x;
    for (Vec &r : y) {
      double ss = 0;
      for (double v : r)
        ss += v * v;
      const double scale =
          1.0 / std::sqrt(ss / double(r.size()) + ck_.norm_eps);
      for (size_t i = 0; i < r.size(); ++i)
        r[i] = r[i] * scale * g[i];
    }
    return y;
  }

  static Rows linear(const Rows &x, const std::vector<float> &W, int64_t n) {
    Rows y(x.size(), Vec(size_t(n), 0.0));
    const size_t K = x.empty() ? 0 : x[0].size();
    for (size_t t = 0; t < x.size(); ++t)
      for (int64_t o = 0; o < n; ++o) {
        double sum = 0;
        for (size_t k = 0; k < K; ++k)
          sum += x[t][k] * W[size_t(o) * K + k];
        y[t][o] = sum;
      }
    return y;
  }

  void rope(Vec &x, int64_t pos) const {
    const int64_t hd = ck_.headDim();
    for (size_t h0 = 0; h0 < x.size(); h0 += size_t(hd))
      for (int64_t j = 0; j < hd; j += 2) {
        const float freq = 1.0f / powf(ck_.rope_base, float(j) / float(hd));
        const float angle = float(pos) * freq;
        const double c = cosf(angle), s = sinf(angle);
        const double a = x[h0 + j], b = x[h0 + j + 1];
        x[h0 + j] = a * c - b * s;
        x[h0 + j + 1] = b * c + a * s;
      }
  }

  // The reference cache.
  int64_t slotOf(int64_t step) const {
    const int64_t P = ck_.prelude, C = ck_.core;
    const std::string &p = s_.policy;
    if (step < P || p.compare(0, 9, "compress-") != 0)
      return step;
    if (p == "compress-anchor")
      return step - P < 8 * C ? step : P + 8 * C + (step - P - 8 * C) % C;
    const int64_t n = std::stoll(p.substr(10));
    return p[9] == 's' ? (step - P) % n + P : (step - P) / n + P;
  }

  std::vector<Entry> update(int64_t step, const Rows &k, const Rows &v) {
    const int64_t slot = slotOf(step);
    auto &ks = k_[slot];
    auto &vs = v_[slot];
    if (step == 0)
      seen_ += int64_t(k.size());
    for (size_t i = 0; i < k.size(); ++i) {
      const int64_t pos = seen_ - int64_t(k.size()) + int64_t(i);
      ks[pos] = k[i];
      vs[pos] = v[i];
    }
    std::vector<Entry> out;
    const bool m4 = s_.policy == "latest-m4" || s_.policy == "available-m4" ||
                    s_.policy == "always-last-m4";
    if (int64_t(ks.size()) == seen_ || !m4) {
      for (auto &[pos, kv] : ks)
        out.push_back({pos, &kv, &vs.at(pos)});
      return out;
    }
    const int64_t P = ck_.prelude, C = ck_.core;
    for (int64_t p = 0; p < seen_; ++p) {
      int64_t src = INT64_MIN;
      if (s_.policy == "available-m4" && ks.count(p)) {
        src = slot;
      } else {
        for (auto &[s, entries] : k_)
          if (s >= P && (s - P) % C == (slot - P) % C && entries.count(p) &&
              (s_.policy == "always-last-m4" || s <= slot))
            src = std::max(src, s);
      }
      if (src != INT64_MIN)
        out.push_back({p, &k_[src].at(p), &v_[src].at(p)});
    }
    return out;
  }

  Rows attention(const std::string &pfx, const Rows &h, int64_t step) {
    const int64_t nh = ck_.n_heads, nkv = ck_.n_kv_heads, hd = ck_.headDim();
    const Rows qkv =
        linear(h, w(pfx + "attn.Wqkv.weight"), (nh + 2 * nkv) * hd);
    const std::vector<float> &bias = w(pfx + "attn.qk_bias");
    Rows q, k, v;
    for (size_t t = 0; t < h.size(); ++t) {
      Vec qt(qkv[t].begin(), qkv[t].begin() + nh * hd);
      Vec kt(qkv[t].begin() + nh * hd, qkv[t].begin() + (nh + nkv) * hd);
      Vec vt(qkv[t].begin() + (nh + nkv) * hd, qkv[t].end());
      for (int64_t i = 0; i < nh * hd; ++i)
        qt[i] += bias[i];
      for (int64_t i = 0; i < nkv * hd; ++i)
        kt[i] += bias[nh * hd + i];
      rope(qt, pos_ + int64_t(t));
      rope(kt, pos_ + int64_t(t));
      q.push_back(qt);
      k.push_back(kt);
      v.push_back(vt);
    }
    const std::vector<Entry> kv = update(step, k, v);
    Rows out(h.size(), Vec(size_t(nh * hd), 0.0));
    for (size_t t = 0; t < h.size(); ++t)
      for (int64_t hh = 0; hh < nh; ++hh) {
        const int64_t g = hh / (nh / nkv);
        std::vector<double> sc;
        std::vector<const Entry *> used;
        for (const Entry &e : kv)
          if (e.pos <= pos_ + int64_t(t)) {
            double dot = 0;
            for (int64_t i = 0; i < hd; ++i)
              dot += q[t][hh * hd + i] * (*e.k)[g * hd + i];
            sc.push_back(dot / std::sqrt(double(hd)));
            used.push_back(&e);
          }
        const double mx = *std::max_element(sc.begin(), sc.end());
        double sum = 0;
        for (double &x : sc)
          sum += (x = std::exp(x - mx));
        for (size_t j = 0; j < sc.size(); ++j)
          for (int64_t i = 0; i < hd; ++i)
            out[t][hh * hd + i] += sc[j] / sum * (*used[j]->v)[g * hd + i];
      }
    return linear(out, w(pfx + "attn.proj.weight"), ck_.dim);
  }

  static Rows add(Rows a, const Rows &b) {
    for (size_t t = 0; t < a.size(); ++t)
      for (size_t i = 0; i < a[t].size(); ++i)
        a[t][i] += b[t][i];
    return a;
  }

  Rows block(const std::string &pfx, const Rows &x0, int64_t step) {
    Rows x = rms(add(attention(pfx, rms(x0, pfx + "norm_1.weight"), step), x0),
                 pfx + "norm_2.weight");
    const int64_t I = ck_.intermediate;
    const Rows f =
        linear(rms(x, pfx + "norm_3.weight"), w(pfx + "mlp.fc.weight"), 2 * I);
    Rows m(x.size(), Vec(size_t(I)));
    for (size_t t = 0; t < x.size(); ++t)
      for (int64_t i = 0; i < I; ++i)
        m[t][i] = f[t][i] / (1.0 + std::exp(-f[t][i])) * f[t][I + i];
    return rms(add(linear(m, w(pfx + "mlp.proj.weight"), ck_.dim), x),
               pfx + "norm_4.weight");
  }

  // ln_f -> coda -> ln_f -> logits; *latent receives ln_f(x).
  Rows head(const Rows &x, Rows *latent) {
    *latent = rms(x, "transformer.ln_f.weight");
    Rows y = *latent;
    for (int64_t m = 0; m < ck_.coda; ++m)
      y = block("transformer.coda." + std::to_string(m) + ".", y, -(m + 1));
    return linear(rms(y, "transformer.ln_f.weight"),
                  w("transformer.wte.weight"), ck_.vocab);
  }

  static Vec logSoftmax(const Vec &l) {
    const double mx = *std::max_element(l.begin(), l.end());
    double sum = 0;
    for (double x : l)
      sum += std::exp(x - mx);
    Vec out(l.size());
    for (size_t i = 0; i < l.size(); ++i)
      out[i] = l[i] - mx - std::log(sum);
    return out;
  }

  // One token step over `ids`; returns the chosen (last-row) logits and
  // records steps and exit values in *run.
  Vec step(const std::vector<int32_t> &ids, Generation *run) {
    const int64_t D = ck_.dim, V = ck_.vocab, C = ck_.core;
    pos_ = seen_;
    Rows e;
    for (int32_t id : ids) {
      const auto &wte = w("transformer.wte.weight");
      Vec r(wte.begin() + id * D, wte.begin() + (id + 1) * D);
      for (double &x : r)
        x *= double(std::sqrt(float(D)));
      e.push_back(r);
    }
    for (int64_t i = 0; i < ck_.prelude; ++i)
      e = block("transformer.prelude." + std::to_string(i) + ".", e, i);
    Rows x(ids.size(), Vec(size_t(D), 0.0));
    if (s_.warm_start && !warm_.empty())
      x = Rows(ids.size(), warm_);

    const ExitCriterion c = s_.criterion;
    const bool adaptive = c != ExitCriterion::None;
    Vec prev_lp(size_t(V), std::log(1.0 / double(V)));
    double prev_h = 100.0;
    int64_t prev_arg = -1, stable = 0;
    Rows prev_x = x;
    std::vector<double> values;
    Rows logits, latent;
    bool have_logits = false;
    int used = 0;
    const int limit = adaptive ? s_.max_iterations : s_.iterations;
    for (int it = 0; it < limit; ++it) {
      Rows in(x.size());
      for (size_t t = 0; t < x.size(); ++t) {
        in[t] = x[t];
        in[t].insert(in[t].end(), e[t].begin(), e[t].end());
      }
      x = linear(in, w("transformer.adapter.weight"), D);
      for (int64_t j = 0; j < C; ++j)
        x = block("transformer.core_block." + std::to_string(j) + ".", x,
                  ck_.prelude + C * it + j);
      used = it + 1;
      have_logits = false;
      if (!adaptive)
        continue;
      double value = 0;
      bool stop = false;
      if (c == ExitCriterion::LatentDiff || c == ExitCriterion::Cosine) {
        double total = 0;
        for (size_t t = 0; t < x.size(); ++t) {
          double xx = 0, yy = 0, xy = 0, dd = 0;
          for (int64_t i = 0; i < D; ++i) {
            xx += x[t][i] * x[t][i];
            yy += prev_x[t][i] * prev_x[t][i];
            xy += x[t][i] * prev_x[t][i];
            dd += (x[t][i] - prev_x[t][i]) * (x[t][i] - prev_x[t][i]);
          }
          total += c == ExitCriterion::LatentDiff
                       ? std::sqrt(dd) / std::sqrt(xx)
                       : xy / std::sqrt(xx) / std::sqrt(yy);
        }
        const double mean = total / double(x.size());
        value = c == ExitCriterion::LatentDiff ? mean : 1.0 - mean;
        prev_x = x;
        stop = value < s_.threshold;
      } else {
        logits = head(x, &latent);
        have_logits = true;
        Vec lp = logSoftmax(logits.back());
        if (c == ExitCriterion::MinpKl) {
          double mx = 0, sum = 0;
          for (double l : lp)
            mx = std::max(mx, std::exp(l));
          for (double &l : lp)
            sum += (l = std::exp(l) < 0.1 * mx ? 1.0 / double(V) : std::exp(l));
          for (double &l : lp)
            l = std::log(l / sum);
        }
        if (c == ExitCriterion::Kl || c == ExitCriterion::MinpKl) {
          for (int64_t i = 0; i < V; ++i)
            value += std::exp(prev_lp[i]) * (prev_lp[i] - lp[i]);
          prev_lp = lp;
          stop = value < s_.threshold;
        } else if (c == ExitCriterion::EntropyDiff) {
          double h = 0;
          for (double l : lp)
            h -= std::exp(l) * std::log(std::exp(l) + 1e-10);
          value = std::fabs(h - prev_h);
          prev_h = h;
          stop = value < s_.threshold;
        } else {
          const Vec &row = logits.back();
          const int64_t a =
              std::max_element(row.begin(), row.end()) - row.begin();
          stable = a == prev_arg ? stable + 1 : 0;
          prev_arg = a;
          value = double(stable);
          stop = value >= s_.threshold;
        }
      }
      values.push_back(value);
      if (stop)
        break;
    }
    if (!have_logits)
      logits = head(x, &latent);
    warm_ = latent.back();
    run->steps.push_back(used);
    run->values.push_back(values);
    return logits.back();
  }

  const HuginnCheckpoint &ck_;
  Settings s_;
  std::map<int64_t, std::map<int64_t, Vec>> k_, v_;
  int64_t seen_ = 0;
  int64_t pos_ = 0;
  Vec warm_;
};

//===----------------------------------------------------------------------===//
// A random Huginn against the reference
//===----------------------------------------------------------------------===//

class RandomHuginn : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    checkpoint_ = std::make_unique<HuginnCheckpoint>(
        loom::test::randomHuginnCheckpoint(3));
    model_ = load(loom::test::huginnArtifact(*checkpoint_));
  }
  static void TearDownTestSuite() {
    model_.reset();
    checkpoint_.reset();
  }

  static std::shared_ptr<loom::Model> model() { return model_; }

  // Runs the session and the reference with the same settings and compares
  // tokens, steps, exit values and logits.
  Generation compare(const LoopOptions &options,
                     const Reference::Settings &settings, int tokens = 10) {
    loom::Session s(model(), loopOptions(options));
    const Generation got = generate(s, prompt_, tokens);
    Reference ref(*checkpoint_, settings);
    const Generation want = ref.generate(prompt_, tokens);
    EXPECT_EQ(got.ids, want.ids);
    EXPECT_EQ(got.steps, want.steps);
    EXPECT_EQ(got.values.size(), want.values.size());
    for (size_t t = 0; t < got.values.size() && t < want.values.size(); ++t) {
      EXPECT_EQ(got.values[t].size(), want.values[t].size()) << "step " << t;
      if (got.values[t].size() == want.values[t].size()) {
        EXPECT_TRUE(allClose(got.values[t].data(), want.values[t].data(),
                             got.values[t].size(), 2e-6, 1e-3))
            << "exit values of step " << t;
      }
    }
    for (size_t t = 0; t < got.logits.size() && t < want.logits.size(); ++t)
      EXPECT_TRUE(allClose(got.logits[t].data(), want.logits[t].data(),
                           got.logits[t].size(), 1e-4, 1e-4))
          << "logits of token " << t;
    return got;
  }

  static bool varied(const std::vector<int> &steps) {
    return std::adjacent_find(steps.begin(), steps.end(),
                              std::not_equal_to<int>()) != steps.end();
  }

  static std::unique_ptr<HuginnCheckpoint> checkpoint_;
  static std::shared_ptr<loom::Model> model_;
  const std::vector<int32_t> prompt_ = {1, 7, 30, 12, 4, 22, 39};
};

std::unique_ptr<HuginnCheckpoint> RandomHuginn::checkpoint_;
std::shared_ptr<loom::Model> RandomHuginn::model_;

TEST_F(RandomHuginn, FixedDepthPoliciesMatchReference) {
  // Depth 10 passes the 8 distinct iterations of compress-anchor; the
  // compress-r policies share one slot among several step indices.
  for (const char *policy :
       {"full", "skip", "compress-s4", "compress-s8", "compress-s3",
        "compress-r4", "compress-r3", "compress-anchor", "latest-m4",
        "available-m4", "always-last-m4"}) {
    SCOPED_TRACE(policy);
    Reference::Settings r;
    r.policy = policy;
    r.iterations = 10;
    compare(fixed(10, policy), r, 6);
  }
}

TEST_F(RandomHuginn, AdaptivePoliciesMatchReference) {
  // Steps that differ per token leave holes in the per-iteration caches,
  // which each policy fills (or skips) its own way.
  for (const char *policy :
       {"full", "compress-s4", "compress-s8", "compress-r4", "compress-anchor",
        "latest-m4", "available-m4", "always-last-m4"}) {
    SCOPED_TRACE(policy);
    Reference::Settings r;
    r.policy = policy;
    r.criterion = ExitCriterion::Kl;
    r.threshold = 2e-3;
    r.max_iterations = 12;
    const Generation got =
        compare(adaptive(ExitCriterion::Kl, 2e-3, 12, policy), r);
    EXPECT_TRUE(varied(got.steps)) << "the steps should differ per token";
  }
}

TEST_F(RandomHuginn, EveryCriterionMatchesReference) {
  const struct {
    ExitCriterion criterion;
    double threshold;
  } cases[] = {
      {ExitCriterion::Kl, 2e-3},          {ExitCriterion::MinpKl, 1e-3},
      {ExitCriterion::EntropyDiff, 1e-2}, {ExitCriterion::LatentDiff, 0.05},
      {ExitCriterion::Cosine, 1e-3},      {ExitCriterion::ArgmaxStability, 3},
  };
  for (const auto &c : cases) {
    SCOPED_TRACE(loom::exitCriterionName(c.criterion));
    Reference::Settings r;
    r.policy = "latest-m4";
    r.criterion = c.criterion;
    r.threshold = c.threshold;
    r.max_iterations = 12;
    const Generation got =
        compare(adaptive(c.criterion, c.threshold, 12, "latest-m4"), r);
    EXPECT_TRUE(varied(got.steps)) << "the steps should differ per token";
  }
}

TEST_F(RandomHuginn, AdaptiveWarmStartMatchesReference) {
  LoopOptions o = adaptive(ExitCriterion::Kl, 2e-3, 12, "latest-m4");
  o.warm_start = true;
  Reference::Settings r;
  r.policy = "latest-m4";
  r.criterion = ExitCriterion::Kl;
  r.threshold = 2e-3;
  r.max_iterations = 12;
  r.warm_start = true;
  compare(o, r);
}

TEST_F(RandomHuginn, ModelDefaultsApplyUnlessOverridden) {
  HuginnOptions h;
  h.default_iterations = 3;
  h.criterion = fbs::ExitCriterion::Kl;
  h.threshold = 2e-3f;
  h.max_iterations = 6;
  auto m = load(loom::test::huginnArtifact(*checkpoint_, h));
  ASSERT_NE(m->loop(), nullptr);
  EXPECT_EQ(m->loop()->criterion, ExitCriterion::Kl);
  EXPECT_EQ(m->loop()->max_iterations, 6);

  LoopOptions zero;
  zero.init = LoopOptions::Init::Zero;
  loom::Session adaptive_session(m, loopOptions(zero));
  const Generation a = generate(adaptive_session, prompt_, 5);
  for (size_t t = 0; t < a.steps.size(); ++t) {
    EXPECT_LE(a.steps[t], 6);
    EXPECT_EQ(a.values[t].size(), size_t(a.steps[t]));
  }

  LoopOptions three = zero;
  three.iterations = 3; // a fixed count overrides the model's adaptive exit
  loom::Session fixed_session(m, loopOptions(three));
  const Generation f = generate(fixed_session, prompt_, 5);
  EXPECT_EQ(f.steps, std::vector<int>(5, 3));
  for (const auto &v : f.values)
    EXPECT_TRUE(v.empty());

  LoopOptions none = zero;
  none.criterion = ExitCriterion::None; // the model's default depth
  loom::Session default_depth(m, loopOptions(none));
  EXPECT_EQ(generate(default_depth, prompt_, 2).steps,
            (std::vector<int>{3, 3}));
}

TEST_F(RandomHuginn, ChunkedPromptMatchesOneStep) {
  HuginnOptions h;
  h.max_tokens = 3;
  auto chunked = load(loom::test::huginnArtifact(*checkpoint_, h));
  // (Not under compress-sN: there a later chunk reads the earlier chunks'
  // last iteration, as a decode step does, by design.)
  for (const char *policy : {"full", "latest-m4", "always-last-m4"}) {
    SCOPED_TRACE(policy);
    loom::Session one(model(), loopOptions(fixed(5, policy)));
    loom::Session three(chunked, loopOptions(fixed(5, policy)));
    loom::Logits a = one.forward(prompt_.data(), prompt_.size(), true);
    std::vector<float> want(a.data, a.data + a.rows * a.vocab);
    loom::Logits b = three.forward(prompt_.data(), prompt_.size(), true);
    EXPECT_TRUE(allClose(b.data, want.data(), want.size(), 1e-5, 1e-5));
    EXPECT_EQ(three.iterationsPerStep(), (std::vector<int>{5, 5, 5}));
  }
}

TEST_F(RandomHuginn, CopyAndAddRowBiasRunInTheTail) {
  // Before the classifier: h += bias; a = h; logits from a. Then every
  // logit row moves by bias . wte^T.
  HuginnLayout L;
  ArtifactSpec spec = loom::test::huginnArtifact(*checkpoint_, {}, &L);
  const int64_t D = checkpoint_->dim, V = checkpoint_->vocab;
  std::vector<float> bias(static_cast<size_t>(D));
  for (int64_t i = 0; i < D; ++i)
    bias[i] = 0.05f * float(i % 7) - 0.1f;
  const uint32_t tb = spec.addTensor("bias", {D}, bias);
  ASSERT_EQ(spec.dispatches.back().kernel, fbs::Kernel::Logits);
  spec.dispatches.back().inputs = {L.a};
  spec.dispatches.insert(
      spec.dispatches.end() - 1,
      {{fbs::Kernel::AddRowBias, {L.h}, {L.h}, {}, {tb}, {}, {}, "bias"},
       {fbs::Kernel::Copy, {L.h}, {L.a}, {}, {}, {}, {}, "copy"}});
  spec.loop->tail_end += 2;
  auto biased = load(spec);

  loom::Session plain(model(), loopOptions(fixed(3)));
  loom::Session moved(biased, loopOptions(fixed(3)));
  loom::Logits a = plain.forward(prompt_.data(), prompt_.size(), true);
  std::vector<double> want(a.data, a.data + a.rows * a.vocab);
  const std::vector<float> &wte =
      checkpoint_->tensor("transformer.wte.weight", {V, D});
  for (int64_t t = 0; t < a.rows; ++t)
    for (int64_t v = 0; v < V; ++v)
      for (int64_t i = 0; i < D; ++i)
        want[t * V + v] += double(bias[i]) * wte[v * D + i];
  loom::Logits b = moved.forward(prompt_.data(), prompt_.size(), true);
  EXPECT_TRUE(allClose(b.data, want.data(), want.size(), 1e-5, 1e-5));
}

TEST_F(RandomHuginn, KvMemoryFollowsThePolicy) {
  const uint64_t kvd = 16; // 2 kv heads of 8
  const uint64_t row = 2 * sizeof(float) * kvd;
  const uint64_t slot_bytes = 48 * row;     // a cache of block_size positions
  const uint64_t ordinary = 4 * slot_bytes; // prelude 2 + coda 2
  EXPECT_EQ(model()->kvCacheBytes(), ordinary);
  auto after = [&](int r, const char *policy) {
    loom::Session s(model(), loopOptions(fixed(r, policy)));
    s.forward(prompt_.data(), prompt_.size());
    int32_t next = 5;
    s.forward(&next, 1);
    return std::make_pair(s.kvCacheBytes(), s.kvBytesPerToken());
  };
  // compress-s4: one iteration's core caches whatever the depth.
  EXPECT_EQ(after(4, "compress-s4"),
            std::make_pair(ordinary + 4 * slot_bytes, 4 * row + 4 * row));
  EXPECT_EQ(after(32, "compress-s4"),
            std::make_pair(ordinary + 4 * slot_bytes, 4 * row + 4 * row));
  // full: C caches per iteration.
  EXPECT_EQ(after(4, "full"),
            std::make_pair(ordinary + 16 * slot_bytes, 4 * row + 16 * row));
  EXPECT_EQ(after(32, "full"),
            std::make_pair(ordinary + 128 * slot_bytes, 4 * row + 128 * row));
  EXPECT_EQ(after(32, "compress-s8").first, ordinary + 8 * slot_bytes);
  EXPECT_EQ(after(32, "compress-r4").first, ordinary + 32 * slot_bytes);
  EXPECT_EQ(after(32, "compress-anchor").first, ordinary + 36 * slot_bytes);
  EXPECT_EQ(after(6, "compress-anchor").second, 4 * row + 24 * row);

  // Adaptive exit sizes the per-token figure by max_iterations.
  loom::Session s(model(),
                  loopOptions(adaptive(ExitCriterion::Kl, 1e-3, 10, "full")));
  EXPECT_EQ(s.kvBytesPerToken(), 4 * row + 40 * row);
  EXPECT_EQ(s.kvCacheBytes(), ordinary); // nothing written yet
}

TEST_F(RandomHuginn, RandomInitIsSeeded) {
  auto logits = [&](uint64_t seed, bool reset_first) {
    LoopOptions l;
    l.iterations = 2;
    l.seed = seed;
    loom::Session s(model(), loopOptions(l));
    if (reset_first) {
      s.forward(prompt_.data(), prompt_.size());
      s.reset();
    }
    loom::Logits out = s.forward(prompt_.data(), prompt_.size(), true);
    return std::vector<float>(out.data, out.data + out.rows * out.vocab);
  };
  const std::vector<float> a = logits(7, false);
  EXPECT_EQ(a, logits(7, false));
  EXPECT_EQ(a, logits(7, true)) << "reset() restarts the seeded draws";
  EXPECT_NE(a, logits(8, false));
  loom::Session zero(model(), loopOptions(fixed(2)));
  loom::Logits z = zero.forward(prompt_.data(), prompt_.size(), true);
  EXPECT_NE(a, std::vector<float>(z.data, z.data + z.rows * z.vocab));
}

// Rewinding to the start of a step restores everything a step starts from
// (the slots' positions, the iterations and exit values recorded, the
// warm-start latent, the initial-state draws), so the continuation is
// exactly what a session fed only the kept tokens computes.
TEST_F(RandomHuginn, RewindReturnsToTheStartOfAStep) {
  HuginnOptions h;
  h.max_tokens = 3;
  auto chunked = load(loom::test::huginnArtifact(*checkpoint_, h));
  LoopOptions warm = adaptive(ExitCriterion::Kl, 2e-3, 12, "latest-m4");
  warm.warm_start = true;
  LoopOptions random = fixed(3, "compress-s4");
  random.init = LoopOptions::Init::Random;
  random.seed = 5;
  LoopOptions random_warm = adaptive(ExitCriterion::Cosine, 1e-3, 8, "full");
  random_warm.init = LoopOptions::Init::Random;
  random_warm.warm_start = true;
  random_warm.seed = 9;
  const struct {
    const char *name;
    LoopOptions options;
  } cases[] = {
      {"fixed full", fixed(4)},
      {"fixed compress-s4", fixed(5, "compress-s4")},
      {"adaptive always-last-m4",
       adaptive(ExitCriterion::Kl, 2e-3, 12, "always-last-m4")},
      {"adaptive warm start", warm},
      {"random init", random},
      {"random init, warm start, adaptive", random_warm},
  };
  const std::vector<int32_t> decoded = {5, 31, 8, 12};
  const std::vector<int32_t> other = {20, 3, 17};
  auto logitsOf = [](const loom::Logits &l) {
    return std::vector<float>(l.data, l.data + l.rows * l.vocab);
  };
  for (const auto &c : cases) {
    SCOPED_TRACE(c.name);
    // The prompt is 3 steps of 3, 3 and 1 rows; then one step per token.
    // Rewind points: a decode step (8), a prompt chunk (3), the start (0).
    for (int64_t keep : {8, 3, 0}) {
      SCOPED_TRACE("rewind to " + std::to_string(keep));
      loom::Session a(chunked, loopOptions(c.options)),
          b(chunked, loopOptions(c.options));
      a.forward(prompt_.data(), prompt_.size());
      for (int32_t t : decoded)
        a.forward(&t, 1);
      ASSERT_EQ(a.iterationsPerStep().size(), 7u);
      EXPECT_EQ(a.rewindPoint(keep), keep);
      EXPECT_EQ(a.rewindPoint(keep + 1), keep < 7 ? keep : keep + 1);
      a.rewind(keep);
      EXPECT_EQ(a.position(), keep);
      // b: the kept tokens in the same steps (a 3-row chunk of the prompt
      // is a step of its own when fed alone).
      std::vector<int32_t> kept(prompt_.begin(), prompt_.end());
      kept.insert(kept.end(), decoded.begin(), decoded.end());
      if (keep >= 7) {
        b.forward(prompt_.data(), prompt_.size());
        for (int64_t p = 7; p < keep; ++p)
          b.forward(&kept[size_t(p)], 1);
      } else if (keep > 0) {
        b.forward(kept.data(), size_t(keep));
      }
      const std::vector<float> la =
          logitsOf(a.forward(other.data(), other.size(), true));
      const std::vector<float> lb =
          logitsOf(b.forward(other.data(), other.size(), true));
      EXPECT_EQ(la, lb);
      for (int32_t t : {4, 9}) {
        EXPECT_EQ(logitsOf(a.forward(&t, 1)), logitsOf(b.forward(&t, 1)));
      }
      EXPECT_EQ(a.iterationsPerStep(), b.iterationsPerStep());
      EXPECT_EQ(a.exitValues(), b.exitValues());
    }
  }
}

TEST_F(RandomHuginn, RewindInsideAStepIsRefused) {
  HuginnOptions h;
  h.max_tokens = 3;
  auto chunked = load(loom::test::huginnArtifact(*checkpoint_, h));
  loom::Session s(chunked, loopOptions(fixed(3)));
  s.forward(prompt_.data(), prompt_.size()); // steps 0..2, 3..5, 6
  const int32_t t = 5;
  s.forward(&t, 1); // step 7
  const loom::Logits l = s.forward(&t, 1);
  const std::vector<float> before(l.data, l.data + l.vocab);
  EXPECT_EQ(s.rewindPoint(4), 3);
  EXPECT_EQ(s.rewindPoint(6), 6);
  EXPECT_EQ(s.rewindPoint(100), 9);
  try {
    s.rewind(4);
    ADD_FAILURE() << "rewind(4) was accepted";
  } catch (const loom::Error &e) {
    EXPECT_EQ(std::string(e.what()),
              "rewind: position 4 is inside a step of this looped model "
              "(positions 3..5); it rewinds to the first position of a "
              "step, here 3 (Session::rewindPoint)");
  }
  EXPECT_EQ(s.position(), 9);
  EXPECT_EQ(s.iterationsPerStep().size(), 5u);
  // Nothing changed: rewinding one step and feeding the token again gives
  // the same logits.
  s.rewind(8);
  EXPECT_EQ(s.iterationsPerStep().size(), 4u);
  const loom::Logits again = s.forward(&t, 1);
  EXPECT_EQ(std::vector<float>(again.data, again.data + again.vocab), before);
}

TEST_F(RandomHuginn, RandomInitStartsAwayFromZero) {
  // latent-diff's first check compares x_1 with the initial state x_0: a
  // random start of per-element std ~0.63 is far from the state one
  // iteration makes of it.
  LoopOptions l;
  l.criterion = ExitCriterion::LatentDiff;
  l.threshold = 1e-9;
  l.max_iterations = 1;
  l.seed = 11;
  loom::Session s(model(), loopOptions(l));
  s.forward(prompt_.data(), prompt_.size());
  ASSERT_EQ(s.exitValues().size(), 1u);
  ASSERT_EQ(s.exitValues()[0].size(), 1u);
  EXPECT_GT(s.exitValues()[0][0], 0.1);
  EXPECT_TRUE(std::isfinite(s.exitValues()[0][0]));
}

TEST_F(RandomHuginn, OptionsAreValidated) {
  auto error = [&](const LoopOptions &l) -> std::string {
    try {
      loom::Session s(model(), loopOptions(l));
    } catch (const loom::Error &e) {
      return e.what();
    }
    return "(no error)";
  };
  LoopOptions l;
  l.kv_policy = "bogus";
  EXPECT_EQ(error(l), "unknown KV policy 'bogus' (expected one of full, skip, "
                      "latest-m4, available-m4, always-last-m4, compress-sN, "
                      "compress-rN, compress-anchor (N >= 1))");
  l.kv_policy = "latest-m8";
  EXPECT_NE(error(l).find("unknown KV policy 'latest-m8'"), std::string::npos);
  l.kv_policy = "compress-s";
  EXPECT_NE(error(l).find("unknown KV policy 'compress-s'"), std::string::npos);
  l.kv_policy = "compress-s-4";
  EXPECT_NE(error(l).find("unknown KV policy"), std::string::npos);
  l.kv_policy = "compress-s0";
  EXPECT_EQ(error(l), "KV policy 'compress-s0': N must be between 1 and 65536");
  l.kv_policy = "compress-r99999999999";
  EXPECT_NE(error(l).find("N must be between 1 and 65536"), std::string::npos);

  l = {};
  l.iterations = 1025;
  EXPECT_EQ(error(l), "loop iterations must be between 1 and 1024 (0 for the "
                      "model's default), got 1025");
  l.iterations = -1;
  EXPECT_NE(error(l).find("loop iterations must be between"),
            std::string::npos);
  l = {};
  l.max_iterations = 5000;
  EXPECT_NE(error(l).find("loop max_iterations must be between"),
            std::string::npos);
  l = {};
  l.iterations = 4;
  l.criterion = ExitCriterion::Kl;
  EXPECT_EQ(error(l), "a fixed iteration count (4) cannot be combined with "
                      "the exit criterion 'kl' (max_iterations bounds an "
                      "adaptive exit)");
  l = {};
  l.threshold = 1e-3; // the model's default criterion is None
  EXPECT_EQ(error(l),
            "an exit threshold needs an exit criterion (none is set)");
  l = {};
  l.max_iterations = 8;
  EXPECT_EQ(error(l),
            "an exit max_iterations needs an exit criterion (none is set)");
  l = {};
  l.criterion = ExitCriterion::Kl;
  l.threshold = NAN;
  EXPECT_NE(error(l).find("exit threshold must be a finite number > 0"),
            std::string::npos);
  l.threshold = 0.0;
  EXPECT_NE(error(l).find("exit threshold must be a finite number > 0"),
            std::string::npos);
  l.criterion = ExitCriterion::ArgmaxStability;
  l.threshold = 2.5;
  EXPECT_NE(error(l).find("must be a whole number"), std::string::npos);
  l.threshold = 3;
  EXPECT_EQ(error(l), "(no error)");
}

// The process's address space, in bytes (VmSize).
uint64_t addressSpaceBytes() {
  std::FILE *f = std::fopen("/proc/self/status", "r");
  char line[256];
  uint64_t kib = 0;
  while (f && std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmSize: %lu kB", &kib) == 1)
      break;
  if (f)
    std::fclose(f);
  return kib * 1024;
}

// A looped step that fails part way (here its address space runs out while
// it allocates the caches of its third iteration) leaves no trace: the
// session then continues, from the same position, exactly as one that never
// ran it. always-last-m4 reads each position from the newest iteration's
// cache that holds it, so a position the failed step had marked in its
// first iterations' caches would otherwise be read from there, with the
// failed step's K/V.
TEST(LoopFailure, AFailedStepLeavesNoTrace) {
  HuginnCheckpoint ck = loom::test::randomHuginnCheckpoint(5);
  // One loop cache: 16384 positions x 2 x 16 floats, 2 MiB, so the limit
  // below can leave the step's small allocations 1 MiB of room.
  ck.block_size = 16384;
  auto model = load(loom::test::huginnArtifact(ck));
  constexpr uint64_t kSlot = 2 << 20;
  for (bool random_init : {false, true}) {
    SCOPED_TRACE(random_init ? "random initial state" : "zero initial state");
    LoopOptions l = fixed(4, "always-last-m4");
    if (random_init)
      l.init = LoopOptions::Init::Random;
    SessionOptions o = loopOptions(l);
    o.threads = 1; // no worker threads (whose stacks would be mapped) start
    loom::Session failed(model, o), clean(model, o);
    const std::vector<int32_t> first = {1, 9, 40, 3, 17};
    {
      // Room for the first two iterations' 8 caches and some.
      rlimit old;
      ASSERT_EQ(::getrlimit(RLIMIT_AS, &old), 0);
      rlimit tight = old;
      tight.rlim_cur = addressSpaceBytes() + 8 * kSlot + kSlot / 2;
      ASSERT_EQ(::setrlimit(RLIMIT_AS, &tight), 0);
      std::string error = "(no error)";
      try {
        failed.forward(first.data(), first.size());
      } catch (const std::exception &e) {
        error = e.what();
      }
      ::setrlimit(RLIMIT_AS, &old);
      ASSERT_EQ(error, "out of memory: need 2097152 bytes for a loop KV cache");
    }
    EXPECT_EQ(failed.position(), 0);
    // Other tokens from the same position, then one at a time.
    const std::vector<int32_t> other = {1, 22};
    for (loom::Session *s : {&failed, &clean})
      s->forward(other.data(), other.size());
    for (int32_t id : {5, 31, 8, 12}) {
      const loom::Logits a = failed.forward(&id, 1), b = clean.forward(&id, 1);
      ASSERT_EQ(0, std::memcmp(a.data, b.data, sizeof(float) * a.vocab))
          << "logits after token " << id;
    }
  }
}

TEST(LoopOptions, ModelWithoutLoopRejectsThem) {
  auto llama = load(loom::test::llamaArtifact(
      loom::test::tinyLlamaWeights(), loom::test::syntheticTokenizer(272)));
  EXPECT_EQ(llama->loop(), nullptr);
  SessionOptions o;
  o.loop.iterations = 4;
  try {
    loom::Session s(llama, o);
    ADD_FAILURE() << "expected an error";
  } catch (const loom::Error &e) {
    EXPECT_NE(std::string(e.what()).find("this model has no looped block"),
              std::string::npos)
        << e.what();
  }
  SessionOptions seeded;
  seeded.loop.seed = 42; // only the random init uses it: harmless
  loom::Session s(llama, seeded);
  EXPECT_TRUE(s.iterationsPerStep().empty());
  EXPECT_EQ(s.kvCacheBytes(), llama->kvCacheBytes());
  // llama: K and V rows of every layer (1 layer, 2 kv heads of 4).
  EXPECT_EQ(s.kvBytesPerToken(), 2u * 4u * 8u);
}

TEST(LoopOptions, CriterionNamesRoundTrip) {
  for (ExitCriterion c :
       {ExitCriterion::None, ExitCriterion::Kl, ExitCriterion::MinpKl,
        ExitCriterion::EntropyDiff, ExitCriterion::LatentDiff,
        ExitCriterion::Cosine, ExitCriterion::ArgmaxStability})
    EXPECT_EQ(loom::parseExitCriterion(loom::exitCriterionName(c)), c);
  EXPECT_EQ(loom::parseExitCriterion("KL"), std::nullopt);
  EXPECT_EQ(loom::defaultExitThreshold(ExitCriterion::Kl), 1e-3);
  EXPECT_EQ(loom::defaultExitThreshold(ExitCriterion::MinpKl), 1e-5);
  EXPECT_EQ(loom::defaultExitThreshold(ExitCriterion::EntropyDiff), 1e-3);
  EXPECT_EQ(loom::defaultExitThreshold(ExitCriterion::LatentDiff), 0.03);
  EXPECT_EQ(loom::defaultExitThreshold(ExitCriterion::Cosine), 1e-3);
  EXPECT_EQ(loom::defaultExitThreshold(ExitCriterion::ArgmaxStability), 5.0);
}

//===----------------------------------------------------------------------===//
// The loader's checks of looped artifacts
//===----------------------------------------------------------------------===//

class LoopArtifact : public ::testing::Test {
protected:
  void SetUp() override {
    spec_ = loom::test::huginnArtifact(checkpoint_, {}, &layout_);
  }

  std::string loadError() {
    try {
      load(spec_);
    } catch (const loom::Error &e) {
      return e.what();
    }
    return "(loaded)";
  }

  ::testing::AssertionResult rejected(const std::string &part) {
    const std::string e = loadError();
    if (e.find(part) != std::string::npos)
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "error '" << e << "' lacks '" << part << "'";
  }

  HuginnCheckpoint checkpoint_ = loom::test::randomHuginnCheckpoint(5);
  ArtifactSpec spec_;
  HuginnLayout layout_;
};

TEST_F(LoopArtifact, TheBuiltArtifactLoads) {
  EXPECT_EQ(loadError(), "(loaded)");
}

TEST_F(LoopArtifact, RangesMustBeOrderedAndCoverTheProgram) {
  spec_.loop->body_end = spec_.loop->body_begin;
  EXPECT_TRUE(rejected("program 'forward' loop: dispatch ranges body"));
  SetUp();
  spec_.loop->tail_end -= 1;
  EXPECT_TRUE(rejected("must be non-empty, in order, and end at the"));
}

TEST_F(LoopArtifact, StateBuffersHaveTheModelDim) {
  spec_.loop->state_buffer = layout_.cat;
  EXPECT_TRUE(rejected("state buffer " + std::to_string(layout_.cat) +
                       " has rows of 32 floats, expected the model dim 16"));
  SetUp();
  spec_.loop->latent_buffer = 1000;
  EXPECT_TRUE(rejected("latent buffer 1000 out of range"));
  SetUp();
  spec_.loop->next_state_buffer = spec_.loop->state_buffer;
  EXPECT_TRUE(rejected("overlap in the arena"));
}

TEST_F(LoopArtifact, OneLoopCachePerCoreLayer) {
  spec_.kv_caches[3].loop_layer = 0; // core layer 1 now claims layer 0
  EXPECT_TRUE(rejected("core layer 0 has 2 loop kv caches, expected exactly "
                       "one"));
  SetUp();
  spec_.kv_caches[3].loop_layer = 7;
  EXPECT_TRUE(rejected("has loop_layer 7, beyond the 4 layers per iteration"));
  SetUp();
  spec_.loop->layers_per_iteration = 3;
  EXPECT_TRUE(rejected("beyond the 3 layers per iteration"));
  SetUp();
  spec_.kv_caches[3].loop_layer = -2;
  EXPECT_TRUE(rejected("kv cache 3 has loop_layer -2"));
  SetUp();
  spec_.kv_caches[3].head_dim = 4;
  spec_.kv_caches[3].kv_heads = 4;
  EXPECT_TRUE(rejected("every loop cache must have the shape of the first"));
}

TEST_F(LoopArtifact, LoopCachesOnlyInTheBody) {
  // Swap the roles of prelude cache 0 and core cache 2.
  spec_.kv_caches[0].loop_layer = 0;
  spec_.kv_caches[2].loop_layer = -1;
  EXPECT_TRUE(rejected("uses loop kv cache 0 outside the loop body"));
  SetUp();
  spec_.loop.reset();
  EXPECT_TRUE(rejected("kv cache 2 belongs to a loop (loop_layer 0) but "
                       "program 'forward' has no loop"));
  SetUp();
  spec_.loop->layers_before = 3;
  EXPECT_TRUE(rejected(
      "layers_before is 3 but 2 attention dispatches precede the body"));
}

TEST_F(LoopArtifact, DataflowTheSessionNeeds) {
  spec_.loop->latent_buffer = layout_.next;
  EXPECT_TRUE(rejected("the tail's first dispatch writes buffer"));
  SetUp();
  spec_.loop->next_state_buffer = layout_.latent;
  EXPECT_TRUE(rejected("no body dispatch writes the next state buffer"));
  SetUp();
  // The tail's stream shares arena space with the injection e, which every
  // iteration reads.
  spec_.buffers[layout_.stream].offset = spec_.buffers[layout_.e].offset;
  EXPECT_TRUE(rejected("overlaps buffer " + std::to_string(layout_.e) +
                       " that every iteration reads"));
}

TEST_F(LoopArtifact, DefaultsAreChecked) {
  spec_.loop->criterion = static_cast<fbs::ExitCriterion>(9);
  EXPECT_TRUE(rejected("unknown exit criterion 9"));
  SetUp();
  spec_.loop->criterion = fbs::ExitCriterion::Kl;
  spec_.loop->threshold = NAN;
  EXPECT_TRUE(rejected("exit threshold nan must be finite"));
  SetUp();
  spec_.loop->criterion = fbs::ExitCriterion::ArgmaxStability;
  spec_.loop->threshold = 1.5f;
  EXPECT_TRUE(rejected("must be a whole number of checks"));
  SetUp();
  spec_.loop->default_iterations = 0;
  EXPECT_TRUE(rejected("default_iterations 0 is out of range (1..1024)"));
  SetUp();
  spec_.loop->max_iterations = 4096;
  EXPECT_TRUE(rejected("max_iterations 4096 is out of range (0..1024)"));
  SetUp();
  spec_.loop->state_std = -1.0f;
  EXPECT_TRUE(rejected("must be finite and >= 0"));
}

TEST_F(LoopArtifact, NewKernelsAreChecked) {
  // qk_bias of the first prelude attention, one float short.
  for (auto &t : spec_.tensors)
    if (t.name == "transformer.prelude.0.attn.qk_bias") {
      t.shape = {31};
      t.data.resize(31);
    }
  EXPECT_TRUE(rejected("weight qk_bias 'transformer.prelude.0.attn.qk_bias' "
                       "has shape [31], expected [32]"));
  SetUp();
  spec_.dispatches[0].fparams = {1.0f, 2.0f};
  EXPECT_TRUE(rejected("has 2 float parameters, expected 0..1"));
  SetUp();
  spec_.dispatches[0].fparams = {INFINITY};
  EXPECT_TRUE(rejected("scale inf must be finite"));
  SetUp();
  for (auto &d : spec_.dispatches)
    if (d.kernel == fbs::Kernel::Concat)
      d.outputs = {layout_.next};
  EXPECT_TRUE(rejected("output buffer " + std::to_string(layout_.next) +
                       " has rows of 16 floats, expected 32"));
}

TEST_F(LoopArtifact, NegativeBosAndEosMeanNone) {
  spec_.config.bos_id = -1;
  spec_.config.eos_id = -1;
  EXPECT_EQ(loadError(), "(loaded)");
  spec_.config.eos_id = 272;
  EXPECT_TRUE(
      rejected("outside the vocabulary (0..271, or negative for none)"));
}

} // namespace
