// REFRAG (compressed chunk placeholders): the chunk encoder programs,
// placeholder rows in the decoder, sequence assembly and the expansion
// policy against ../shared/golden/refrag-tiny (stories260K decoder, bundled
// in models/, with the golden bundle's random encoder), plus artifact
// verification and bad input on a small random encoder (no ../shared).
#include "cpu/kernels.h"
#include "loom/error.h"
#include "loom/refrag.h"
#include "loom/runtime.h"
#include "support/artifact_builder.h"
#include "support/json.h"
#include "support/refrag_builder.h"
#include "support/shared.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

namespace {

using loom::test::ArtifactSpec;
using loom::test::Json;
using loom::test::TempFile;
namespace fbs = loom::artifact;

const char *kGolden = "golden/refrag-tiny";

std::string golden(const std::string &rel) {
  return loom::test::sharedPath(std::string(kGolden) + "/" + rel);
}

std::vector<float> readFloats(const std::string &path) {
  std::vector<uint8_t> bytes = loom::test::readFileBytes(path);
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

std::vector<int32_t> ids(const Json &j) {
  std::vector<int32_t> out;
  for (int64_t v : j.asIntVector())
    out.push_back(static_cast<int32_t>(v));
  return out;
}

std::vector<size_t> indices(const Json &j) {
  std::vector<size_t> out;
  for (int64_t v : j.asIntVector())
    out.push_back(static_cast<size_t>(v));
  return out;
}

// |a - b| <= atol + rtol |b| elementwise; returns the largest |a - b|.
double expectClose(const float *a, const float *b, size_t n, double atol,
                   double rtol, const std::string &what) {
  double worst = 0.0;
  size_t bad = 0, first_bad = n;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    worst = std::max(worst, d);
    if (!(d <= atol + rtol * std::fabs(double(b[i])))) {
      if (first_bad == n)
        first_bad = i;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << n
                     << " values differ, first at " << first_bad
                     << " (got " << (first_bad < n ? a[first_bad] : 0.0f)
                     << ", want " << (first_bad < n ? b[first_bad] : 0.0f)
                     << "), max |diff| " << worst;
  return worst;
}

double expectClose(const std::vector<float> &a, const std::vector<float> &b,
                   double atol, double rtol, const std::string &what) {
  EXPECT_EQ(a.size(), b.size()) << what;
  return expectClose(a.data(), b.data(), std::min(a.size(), b.size()), atol,
                     rtol, what);
}

// Encoder outputs, projections and scores (README: <= 1e-4).
constexpr double kAtol = 1e-4, kRtol = 1e-4;
// Logits (README: <= 1e-3 abs; they reach +-20).
constexpr double kLogitAtol = 1e-4, kLogitRtol = 1e-4;

int32_t argmax(const float *row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

void expectError(const std::function<void()> &f, const std::string &expected) {
  try {
    f();
  } catch (const loom::Error &e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(expected), std::string::npos)
        << "message: " << m << "\nexpected to contain: " << expected;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return;
  }
  ADD_FAILURE() << "no loom::Error; expected: " << expected;
}

std::string loadError(const ArtifactSpec &spec) {
  TempFile file(spec.serialize());
  try {
    loom::Model::load(file.path());
  } catch (const loom::Error &e) {
    return e.what();
  }
  return "<loaded>";
}

// ---- The golden refrag-tiny bundle -----------------------------------------

bool haveGolden() {
  return loom::test::sharedFileExists(std::string(kGolden) +
                                      "/refrag_tiny.safetensors");
}

#define REQUIRE_GOLDEN()                                                       \
  LOOM_REQUIRE_SHARED(std::string(kGolden) + "/refrag_tiny.safetensors")

std::string decoderPath() {
  return loom::test::sourceDir() + "/models/stories260K.bin";
}
std::string tokenizerPath() {
  return loom::test::sourceDir() + "/models/tok512.bin";
}

// One artifact per configuration, written once for the suite.
struct GoldenArtifact {
  std::unique_ptr<TempFile> file;
  std::shared_ptr<loom::Model> model;
};

const GoldenArtifact &goldenArtifact(bool take_row_first = false,
                                     uint32_t max_tokens = 24,
                                     bool fuse_projector = false) {
  static std::map<std::tuple<bool, uint32_t, bool>, GoldenArtifact> cache;
  GoldenArtifact &g = cache[{take_row_first, max_tokens, fuse_projector}];
  if (!g.model) {
    loom::test::RefragArtifactOptions o;
    o.take_row_first = take_row_first;
    o.fuse_projector = fuse_projector;
    g.file = std::make_unique<TempFile>(
        loom::test::refragTinyArtifact(decoderPath(), tokenizerPath(),
                                       golden("refrag_tiny.safetensors"),
                                       max_tokens, o)
            .serialize());
    g.model = loom::Model::load(g.file->path());
  }
  return g;
}

// The decoder's token embedding table, for input_embeds.bin's token rows.
const std::vector<float> &decoderEmbeddings() {
  static std::vector<float> table = [] {
    loom::test::TokenizerSpec tok;
    return loom::test::readLlama2c(decoderPath(), tokenizerPath(), &tok).embed;
  }();
  return table;
}

// The golden artifact with "forward" cut after the Embed (placeholders
// applied) and an identity classifier: logits[t, 0..dim) = the input row of
// position t, i.e. what the decoder's first layer reads.
std::shared_ptr<loom::Model> inputProbeModel(std::unique_ptr<TempFile> &file) {
  ArtifactSpec a = loom::test::refragTinyArtifact(
      decoderPath(), tokenizerPath(), golden("refrag_tiny.safetensors"));
  const int64_t D = a.config.dim, V = a.config.vocab_size;
  std::vector<float> identity(static_cast<size_t>(V * D), 0.0f);
  for (int64_t i = 0; i < D; ++i)
    identity[i * D + i] = 1.0f;
  const uint32_t eye = a.addTensor("identity", {V, D}, identity);
  const loom::test::DispatchSpec embed = a.dispatches.front();
  if (embed.kernel != fbs::Kernel::Embed)
    throw std::runtime_error("the decoder does not start with its Embed");
  a.dispatches = {embed,
                  {fbs::Kernel::Logits,
                   {embed.outputs[0]},
                   {a.logits_buffer},
                   {},
                   {eye},
                   {},
                   {},
                   "probe"}};
  file = std::make_unique<TempFile>(a.serialize());
  return loom::Model::load(file->path());
}

struct Inputs {
  std::vector<int32_t> context, question, full;
};

const Inputs &inputs() {
  static Inputs in = [] {
    Json j = Json::parseFile(golden("inputs.json"));
    return Inputs{ids(j["context_ids"]), ids(j["question_ids"]),
                  ids(j["full_ids"])};
  }();
  return in;
}

class RefragGolden : public ::testing::TestWithParam<int> {
protected:
  void SetUp() override {
    REQUIRE_GOLDEN();
    k_ = GetParam();
    dir_ = "k" + std::to_string(k_);
  }
  int k_ = 0;
  std::string dir_;
};

TEST_P(RefragGolden, ChunksAndEncoder) {
  const GoldenArtifact &g = goldenArtifact();
  const loom::RefragInfo *info = g.model->refrag();
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->cls_token_id, 1);
  EXPECT_EQ(info->max_chunk_len, 16);
  EXPECT_EQ(info->encoder_dim, 32);

  Json chunks = Json::parseFile(golden(dir_ + "/chunks.json"));
  std::vector<std::vector<int32_t>> split =
      loom::splitChunks(inputs().context, static_cast<size_t>(k_));
  ASSERT_EQ(split.size(), chunks["n_chunks"].asInt());
  for (size_t i = 0; i < split.size(); ++i)
    EXPECT_EQ(split[i], ids(chunks["chunk_ids"][i])) << "chunk " << i;

  loom::Session s(g.model, {});
  std::vector<float> emb;
  for (const auto &c : split) {
    std::vector<float> e = s.encodeChunk(c.data(), c.size());
    ASSERT_EQ(e.size(), 32u);
    emb.insert(emb.end(), e.begin(), e.end());
  }
  EXPECT_EQ(s.position(), 0);
  double d = expectClose(emb, readFloats(golden(dir_ + "/chunk_emb.bin")),
                         kAtol, kRtol, dir_ + "/chunk_emb.bin");
  std::printf("[ diff     ] %s chunk_emb max |diff| %.3g\n", dir_.c_str(), d);
  // The encoder traces' last layer, row 0, is the chunk embedding too.
  const std::string last = dir_ + (k_ == 4 ? "/encoder_trace_c15.bin"
                                           : "/encoder_trace_c7.bin");
  std::vector<float> trace = readFloats(golden(last));
  const size_t m = split.back().size() + 1;
  ASSERT_EQ(trace.size(), 4 * m * 32);
  expectClose(emb.data() + (split.size() - 1) * 32,
              trace.data() + 3 * m * 32, 32, kAtol, kRtol, last);
}

TEST_P(RefragGolden, ProjectorAndPolicy) {
  const GoldenArtifact &g = goldenArtifact();
  loom::Session s(g.model, {});
  const std::vector<float> emb = readFloats(golden(dir_ + "/chunk_emb.bin"));
  const size_t n = emb.size() / 32;
  // From the golden embeddings: the projector and the policy alone.
  std::vector<float> proj = s.projectChunks(emb.data(), n);
  double dp = expectClose(proj, readFloats(golden(dir_ + "/chunk_proj.bin")),
                          kAtol, kRtol, dir_ + "/chunk_proj.bin");
  Json policy = Json::parseFile(golden(dir_ + "/policy.json"));
  std::vector<double> want = policy["scores"].asDoubleVector();
  std::vector<float> want_f(want.begin(), want.end());
  std::vector<float> scores = s.scoreChunks(emb.data(), n);
  double ds = expectClose(scores, want_f, kAtol, kRtol, dir_ + " scores");
  std::printf("[ diff     ] %s chunk_proj max |diff| %.3g, scores %.3g\n",
              dir_.c_str(), dp, ds);
  EXPECT_EQ(loom::expandedByPolicy(scores, policy["p"].asDouble()),
            indices(policy["expanded"]));
  // The policy's whole ranking: expanding everything is every chunk; the
  // top 1 is the rank order's first.
  EXPECT_EQ(loom::expandedByPolicy(scores, 1.0).size(), n);
  EXPECT_EQ(loom::expandedByPolicy(scores, 1e-6),
            std::vector<size_t>{size_t(policy["rank_order"][0].asInt())});
  EXPECT_TRUE(loom::expandedByPolicy(scores, 0.0).empty());

  // End to end through prepareRefrag with the policy.
  loom::RefragRequest req;
  req.context = inputs().context;
  req.question = inputs().question;
  req.chunk_size = static_cast<size_t>(k_);
  req.expand_fraction = 0.25;
  loom::RefragPrompt p = loom::prepareRefrag(s, req);
  EXPECT_EQ(p.expanded, indices(policy["expanded"]));
  expectClose(p.scores, want_f, kAtol, kRtol, dir_ + " prepareRefrag scores");
  expectClose(p.projected, readFloats(golden(dir_ + "/chunk_proj.bin")), kAtol,
              kRtol, dir_ + " prepareRefrag projections");
  EXPECT_EQ(s.position(), 0);
}

// Rows beyond max_tokens run in blocks; each row as if alone (up to the
// matmul's rounding, which depends on how many rows it runs on).
TEST_P(RefragGolden, ProjectorBlocks) {
  const GoldenArtifact &g = goldenArtifact();
  loom::Session s(g.model, {});
  const std::vector<float> emb = readFloats(golden(dir_ + "/chunk_emb.bin"));
  const size_t n = emb.size() / 32;
  std::vector<float> many;
  for (int rep = 0; rep < 4; ++rep)
    many.insert(many.end(), emb.begin(), emb.end()); // 4n rows > 24
  std::vector<float> proj = s.projectChunks(many.data(), 4 * n);
  std::vector<float> scores = s.scoreChunks(many.data(), 4 * n);
  ASSERT_EQ(proj.size(), 4 * n * 64);
  for (size_t i = 0; i < 4 * n; ++i) {
    std::vector<float> one = s.projectChunks(many.data() + i * 32, 1);
    expectClose(one.data(), proj.data() + i * 64, 64, 1e-5, 1e-5,
                "projection row " + std::to_string(i));
    EXPECT_NEAR(s.scoreChunks(many.data() + i * 32, 1)[0], scores[i], 1e-5);
  }
  EXPECT_TRUE(s.projectChunks(many.data(), 0).empty());
}

// The three cases of each chunk size: assembled sequence, input rows,
// logits at every position, and 16 greedy tokens with their logits.
TEST_P(RefragGolden, Cases) {
  const GoldenArtifact &g = goldenArtifact();
  std::unique_ptr<TempFile> probe_file;
  std::shared_ptr<loom::Model> probe = inputProbeModel(probe_file);
  const std::vector<float> &table = decoderEmbeddings();
  for (const char *name : {"compressed", "policy_p0.25", "expanded"}) {
    SCOPED_TRACE(dir_ + "/" + name);
    const std::string cdir = dir_ + "/" + name;
    Json c = Json::parseFile(golden(cdir + "/case.json"));
    loom::Session s(g.model, {});
    loom::RefragRequest req;
    req.context = inputs().context;
    req.question = inputs().question;
    req.chunk_size = static_cast<size_t>(k_);
    req.expanded = indices(c["expanded_chunks"]);
    std::reverse(req.expanded.begin(), req.expanded.end()); // any order
    loom::RefragPrompt p = loom::prepareRefrag(s, req);
    const loom::AssembledSequence &seq = p.sequence;

    // The sequence, position by position.
    const Json &want_seq = c["sequence"];
    ASSERT_EQ(seq.tokens.size(), want_seq.size());
    ASSERT_EQ(int64_t(seq.tokens.size()), c["n_decoder_positions"].asInt());
    EXPECT_EQ(int64_t(seq.n_placeholders), c["n_placeholders"].asInt());
    for (size_t i = 0; i < want_seq.size(); ++i) {
      if (want_seq[i].contains("chunk")) {
        EXPECT_EQ(seq.chunk[i], want_seq[i]["chunk"].asInt()) << "pos " << i;
        EXPECT_EQ(seq.embeddings[i],
                  p.projected.data() + seq.chunk[i] * 64);
      } else {
        EXPECT_EQ(seq.chunk[i], -1) << "pos " << i;
        EXPECT_EQ(seq.embeddings[i], nullptr) << "pos " << i;
        EXPECT_EQ(seq.tokens[i], want_seq[i]["token"].asInt()) << "pos " << i;
      }
    }
    const size_t n = seq.tokens.size();

    // The decoder's input rows, read back through the probe artifact.
    {
      loom::Session ps(probe, {});
      loom::Logits rows =
          ps.forward(seq.tokens.data(), n, true, seq.embeddings.data());
      std::vector<float> want = readFloats(golden(cdir + "/input_embeds.bin"));
      ASSERT_EQ(want.size(), n * 64);
      double worst = 0.0;
      for (size_t i = 0; i < n; ++i) {
        if (seq.chunk[i] < 0) {
          // Token rows are exact copies of the embedding table.
          EXPECT_EQ(0, std::memcmp(rows.row(i), want.data() + i * 64,
                                   64 * sizeof(float)))
              << "token row " << i;
          EXPECT_EQ(0, std::memcmp(want.data() + i * 64,
                                   table.data() + seq.tokens[i] * 64,
                                   64 * sizeof(float)));
        } else {
          worst = std::max(
              worst, expectClose(rows.row(i), want.data() + i * 64, 64, kAtol,
                                 kRtol, "placeholder row " + std::to_string(i)));
        }
      }
      std::printf("[ diff     ] %s: input_embeds placeholder rows max |diff| "
                  "%.3g\n",
                  cdir.c_str(), worst);
    }

    // Logits at every position.
    loom::Logits all = s.forward(seq.tokens.data(), n, true,
                                 seq.embeddings.data());
    ASSERT_EQ(all.rows, int64_t(n));
    std::vector<float> got(all.data, all.data + n * 512);
    double dl = expectClose(got, readFloats(golden(cdir + "/logits_all.bin")),
                            kLogitAtol, kLogitRtol, cdir + "/logits_all.bin");
    expectClose(got.data() + (n - 1) * 512,
                readFloats(golden(cdir + "/logits_last.bin")).data(), 512,
                kLogitAtol, kLogitRtol, cdir + "/logits_last.bin");
    EXPECT_EQ(argmax(all.last(), 512), c["final_argmax"].asInt());

    // 16 greedy tokens, no stop.
    std::vector<float> want_gen = readFloats(golden(cdir + "/gen_logits.bin"));
    ASSERT_EQ(want_gen.size(), 16u * 512);
    std::vector<int32_t> generated;
    std::vector<float> gen(got.end() - 512, got.end());
    for (int j = 0; j < 16; ++j) {
      int32_t next = argmax(gen.data() + j * 512, 512);
      generated.push_back(next);
      if (j + 1 < 16) {
        loom::Logits l = s.forward(&next, 1);
        gen.insert(gen.end(), l.last(), l.last() + 512);
      }
    }
    EXPECT_EQ(generated, ids(c["generated_ids"]));
    double dg = expectClose(gen, want_gen, kLogitAtol, kLogitRtol,
                            cdir + "/gen_logits.bin");
    EXPECT_EQ(s.position(), int64_t(n + 15));
    std::printf("[ diff     ] %s: %zu positions, logits_all max |diff| %.3g, "
                "gen_logits %.3g\n",
                cdir.c_str(), n, dl, dg);

    // Only the last row's logits: the same values (up to the matmul's
    // rounding on fewer rows).
    loom::Session s2(g.model, {});
    loom::Logits last =
        s2.forward(seq.tokens.data(), n, false, seq.embeddings.data());
    ASSERT_EQ(last.rows, 1);
    expectClose(last.last(), got.data() + (n - 1) * 512, 512, 1e-5, 1e-5,
                cdir + " last row alone");
  }
}

// loom-fuse-chunk-projector's form (placeholder rows [x | q | k | v], layer
// 0 projecting only token rows) against the golden and the plain form.
TEST_P(RefragGolden, FusedProjector) {
  const GoldenArtifact &plain = goldenArtifact();
  const GoldenArtifact &fused = goldenArtifact(false, 24, true);
  constexpr int64_t D = 64, QKV = 64 + 2 * 32; // 8 heads, 4 kv heads of 8
  ASSERT_EQ(plain.model->refrag()->projected_dim, D);
  ASSERT_EQ(fused.model->refrag()->projected_dim, D + QKV);
  loom::test::TokenizerSpec tok;
  const loom::test::LlamaWeights w =
      loom::test::readLlama2c(decoderPath(), tokenizerPath(), &tok);
  const loom::test::LlamaWeights::Layer &L0 = w.layers[0];
  for (const char *name : {"compressed", "policy_p0.25", "expanded"}) {
    SCOPED_TRACE(dir_ + "/" + name);
    const std::string cdir = dir_ + "/" + name;
    Json c = Json::parseFile(golden(cdir + "/case.json"));
    loom::RefragRequest req;
    req.context = inputs().context;
    req.question = inputs().question;
    req.chunk_size = static_cast<size_t>(k_);
    req.expanded = indices(c["expanded_chunks"]);
    loom::Session sf(fused.model, {}), sp(plain.model, {});
    loom::RefragPrompt pf = loom::prepareRefrag(sf, req);
    loom::RefragPrompt pp = loom::prepareRefrag(sp, req);
    const loom::AssembledSequence &seq = pf.sequence;
    ASSERT_EQ(seq.row_elems, D + QKV);
    ASSERT_EQ(pf.projected.size(), pf.chunks.size() * (D + QKV));
    ASSERT_EQ(seq.tokens, pp.sequence.tokens);

    // Each row: the plain projector's row, bit for bit, then
    // rmsnorm(row) [Wq; Wk; Wv]^T (checked in double).
    double worst_qkv = 0.0;
    for (size_t i = 0; i < pf.chunks.size(); ++i) {
      const float *row = pf.projected.data() + i * (D + QKV);
      EXPECT_EQ(0, std::memcmp(row, pp.projected.data() + i * D,
                               D * sizeof(float)))
          << "chunk " << i;
      double ss = 0.0;
      for (int64_t j = 0; j < D; ++j)
        ss += double(row[j]) * row[j];
      const double inv = 1.0 / std::sqrt(ss / D + 1e-5);
      std::vector<float> want(QKV);
      for (int64_t n = 0; n < QKV; ++n) {
        const float *wrow = n < 64   ? L0.wq.data() + n * D
                            : n < 96 ? L0.wk.data() + (n - 64) * D
                                     : L0.wv.data() + (n - 96) * D;
        double acc = 0.0;
        for (int64_t j = 0; j < D; ++j)
          acc += double(row[j]) * inv * L0.att_norm[j] * wrow[j];
        want[n] = static_cast<float>(acc);
      }
      worst_qkv = std::max(worst_qkv,
                           expectClose(row + D, want.data(), QKV, 1e-5, 1e-5,
                                       "q|k|v of chunk " + std::to_string(i)));
    }

    // Logits at every position and 16 greedy ids against the golden.
    const size_t n = seq.tokens.size();
    loom::Logits all = sf.forward(seq.tokens.data(), n, true,
                                  seq.embeddings.data(), seq.row_elems);
    std::vector<float> got(all.data, all.data + n * 512);
    double dl = expectClose(got, readFloats(golden(cdir + "/logits_all.bin")),
                            kLogitAtol, kLogitRtol, cdir + "/logits_all.bin");
    std::vector<int32_t> generated;
    int32_t next = argmax(all.last(), 512);
    for (int j = 0; j < 16; ++j) {
      generated.push_back(next);
      if (j + 1 < 16)
        next = argmax(sf.forward(&next, 1).last(), 512);
    }
    EXPECT_EQ(generated, ids(c["generated_ids"]));

    // The fusion saves work, nothing else: the same rows handed over as
    // rows of the model dim (layer 0 projects them), and the plain form,
    // agree within the golden tolerance (q|k|v computed on a block of chunk
    // rows instead of in the decoder's block round differently, ~2e-5).
    loom::Session sd(fused.model, {});
    loom::Logits dim_rows =
        sd.forward(seq.tokens.data(), n, true, seq.embeddings.data(), D);
    double dd = expectClose(std::vector<float>(dim_rows.data,
                                               dim_rows.data + n * 512),
                            got, kLogitAtol, kLogitRtol,
                            "rows of the model dim");
    loom::Session sp2(plain.model, {});
    loom::Logits unfused = sp2.forward(seq.tokens.data(), n, true,
                                       pp.sequence.embeddings.data());
    double du = expectClose(std::vector<float>(unfused.data,
                                               unfused.data + n * 512),
                            got, kLogitAtol, kLogitRtol, "the plain form");
    std::printf("[ diff     ] %s fused: q|k|v %.3g, logits_all %.3g; vs rows "
                "of dim %.3g, vs plain %.3g\n",
                cdir.c_str(), worst_qkv, dl, dd, du);
  }
}

// All chunks expanded is the plain model on full_ids.
TEST_P(RefragGolden, ExpandedIsPlain) {
  const GoldenArtifact &g = goldenArtifact();
  loom::Session s(g.model, {});
  loom::RefragRequest req;
  req.context = inputs().context;
  req.question = inputs().question;
  req.chunk_size = static_cast<size_t>(k_);
  for (size_t i = 0; i < (inputs().context.size() + k_ - 1) / k_; ++i)
    req.expanded.push_back(i);
  loom::RefragPrompt p = loom::prepareRefrag(s, req);
  EXPECT_EQ(p.sequence.tokens, inputs().full);
  EXPECT_EQ(p.sequence.n_placeholders, 0u);
  loom::Logits a = s.forward(p.sequence.tokens.data(), p.sequence.tokens.size(),
                             true, p.sequence.embeddings.data());
  std::vector<float> refrag_logits(a.data, a.data + a.rows * a.vocab);
  loom::Session plain(g.model, {});
  loom::Logits b = plain.forward(inputs().full.data(), inputs().full.size(),
                                 true);
  EXPECT_TRUE(std::equal(refrag_logits.begin(), refrag_logits.end(), b.data));
  expectClose(refrag_logits, readFloats(golden("plain/logits_all.bin")),
              kLogitAtol, kLogitRtol, "plain/logits_all.bin");
  Json gen = Json::parseFile(golden("plain/generation.json"));
  std::vector<int32_t> out;
  int32_t next = argmax(b.last(), 512);
  for (int j = 0; j < 16; ++j) {
    out.push_back(next);
    next = argmax(plain.forward(&next, 1).last(), 512);
  }
  EXPECT_EQ(out, ids(gen["generated_ids"]));
}

// Encoding chunks between decoder steps leaves the KV caches and the
// position alone (the programs share the activation arena).
TEST_P(RefragGolden, EncoderBetweenDecoderSteps) {
  const GoldenArtifact &g = goldenArtifact();
  const std::vector<int32_t> &full = inputs().full;
  const size_t half = 30;
  // The same two forward() calls (so the same row blocks) without the
  // encoder in between.
  loom::Session plain(g.model, {});
  loom::Logits ref = plain.forward(full.data(), half, true);
  std::vector<float> want(ref.data, ref.data + half * 512);
  ref = plain.forward(full.data() + half, full.size() - half, true);
  want.insert(want.end(), ref.data, ref.data + ref.rows * 512);

  loom::Session s(g.model, {});
  loom::Logits first = s.forward(full.data(), half, true);
  std::vector<float> got(first.data, first.data + half * 512);
  const auto chunks = loom::splitChunks(inputs().context, k_);
  std::vector<float> e = s.encodeChunk(chunks[0].data(), chunks[0].size());
  s.projectChunks(e.data(), 1);
  s.scoreChunks(e.data(), 1);
  EXPECT_EQ(s.position(), int64_t(half));
  loom::Logits rest = s.forward(full.data() + half, full.size() - half, true);
  got.insert(got.end(), rest.data, rest.data + rest.rows * 512);
  EXPECT_EQ(got, want);
}

// The encoder with TakeRow before ln_f (later dispatches run on one row)
// computes the same chunk embeddings.
TEST_P(RefragGolden, TakeRowFirst) {
  const GoldenArtifact &g = goldenArtifact(true);
  loom::Session s(g.model, {});
  std::vector<float> emb;
  for (const auto &c : loom::splitChunks(inputs().context, k_)) {
    std::vector<float> e = s.encodeChunk(c.data(), c.size());
    emb.insert(emb.end(), e.begin(), e.end());
  }
  expectClose(emb, readFloats(golden(dir_ + "/chunk_emb.bin")), kAtol, kRtol,
              dir_ + "/chunk_emb.bin (TakeRow first)");
}

// Portable kernels agree with the golden data too (where AVX-512 is the
// default).
TEST_P(RefragGolden, PortableKernels) {
  namespace cpu = loom::rt::cpu;
  const cpu::Isa before = cpu::activeIsa();
  ASSERT_TRUE(cpu::setIsa(cpu::Isa::Portable));
  const GoldenArtifact &g = goldenArtifact();
  loom::Session s(g.model, {});
  loom::RefragRequest req;
  req.context = inputs().context;
  req.question = inputs().question;
  req.chunk_size = static_cast<size_t>(k_);
  req.expand_fraction = 0.25;
  loom::RefragPrompt p = loom::prepareRefrag(s, req);
  const std::string cdir = dir_ + "/policy_p0.25";
  loom::Logits all = s.forward(p.sequence.tokens.data(),
                               p.sequence.tokens.size(), true,
                               p.sequence.embeddings.data());
  std::vector<float> got(all.data, all.data + all.rows * 512);
  cpu::setIsa(before);
  expectClose(p.chunk_embeddings, readFloats(golden(dir_ + "/chunk_emb.bin")),
              kAtol, kRtol, "portable chunk_emb");
  expectClose(got, readFloats(golden(cdir + "/logits_all.bin")), kLogitAtol,
              kLogitRtol, "portable logits_all");
}

INSTANTIATE_TEST_SUITE_P(ChunkSizes, RefragGolden, ::testing::Values(4, 8),
                         [](const ::testing::TestParamInfo<int> &info) {
                           return "k" + std::to_string(info.param);
                         });

TEST(RefragGoldenInput, BadInput) {
  REQUIRE_GOLDEN();
  const GoldenArtifact &g = goldenArtifact();
  loom::Session s(g.model, {});
  std::vector<int32_t> chunk(17, 300);
  expectError([&] { s.encodeChunk(chunk.data(), 17); },
              "encodeChunk: a chunk of 17 tokens is longer than the encoder's "
              "max_chunk_len 16");
  expectError([&] { s.encodeChunk(chunk.data(), 0); },
              "encodeChunk: a chunk needs at least one token");
  chunk[3] = 512;
  expectError([&] { s.encodeChunk(chunk.data(), 4); },
              "token id 512 is outside the vocabulary (0..511)");
  chunk[3] = -1;
  expectError([&] { s.encodeChunk(chunk.data(), 4); },
              "token id -1 is outside the vocabulary");
  // 16 tokens is the longest chunk.
  chunk[3] = 5;
  EXPECT_EQ(s.encodeChunk(chunk.data(), 16).size(), 32u);

  loom::RefragRequest req;
  req.context = inputs().context;
  req.question = inputs().question;
  req.chunk_size = 17;
  expectError([&] { loom::prepareRefrag(s, req); },
              "chunk size 17 is out of range (1..16, the encoder's "
              "max_chunk_len)");
  req.chunk_size = 8;
  req.expanded = {8};
  expectError([&] { loom::prepareRefrag(s, req); },
              "expanded chunk 8 is out of range (the context has 8 chunks of "
              "8)");
  req.expanded = {2, 2};
  expectError([&] { loom::prepareRefrag(s, req); },
              "chunk 2 is expanded twice");
  req.expanded = {1};
  req.expand_fraction = 0.5;
  expectError([&] { loom::prepareRefrag(s, req); },
              "give either the expanded chunks or an expand fraction, not "
              "both");
  req.expanded.clear();
  req.expand_fraction = 1.5;
  expectError([&] { loom::prepareRefrag(s, req); },
              "expand fraction 1.5 is outside [0, 1]");
  req.expand_fraction.reset();
  req.context.clear();
  expectError([&] { loom::prepareRefrag(s, req); }, "the context is empty");
  // chunk_size 0: the encoder's max_chunk_len.
  req.context = inputs().context;
  req.chunk_size = 0;
  EXPECT_EQ(loom::prepareRefrag(s, req).chunks.size(), 4u);
  EXPECT_EQ(s.position(), 0);

  // A placeholder position's token id is ignored, even when out of range.
  loom::RefragPrompt p = loom::prepareRefrag(s, req);
  std::vector<int32_t> tokens = p.sequence.tokens;
  for (size_t i = 0; i < tokens.size(); ++i)
    if (p.sequence.embeddings[i])
      tokens[i] = 99999;
  loom::Logits a = s.forward(tokens.data(), tokens.size(), false,
                             p.sequence.embeddings.data());
  std::vector<float> first(a.last(), a.last() + 512);
  s.reset();
  loom::Logits b = s.forward(p.sequence.tokens.data(), tokens.size(), false,
                             p.sequence.embeddings.data());
  EXPECT_TRUE(std::equal(first.begin(), first.end(), b.last()));

  // Placeholder rows are the model dim or project_chunk's width.
  s.reset();
  expectError(
      [&] {
        s.forward(tokens.data(), tokens.size(), false,
                  p.sequence.embeddings.data(), 192);
      },
      "placeholder rows of 192 floats: this model takes rows of its dim 64");
  const GoldenArtifact &fused = goldenArtifact(false, 24, true);
  loom::Session sf(fused.model, {});
  expectError(
      [&] {
        sf.forward(tokens.data(), tokens.size(), false,
                   p.sequence.embeddings.data(), 65);
      },
      "placeholder rows of 65 floats: this model takes rows of its dim 64 or "
      "of project_chunk's 192");
  EXPECT_EQ(sf.position(), 0);
}

// ---- Helpers without a model -----------------------------------------------

TEST(RefragHelpers, SplitChunks) {
  std::vector<int32_t> c = {1, 2, 3, 4, 5, 6, 7};
  auto s = loom::splitChunks(c, 3);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[2], std::vector<int32_t>{7});
  EXPECT_EQ(loom::splitChunks(c, 7).size(), 1u);
  EXPECT_EQ(loom::splitChunks(c, 100).size(), 1u);
  EXPECT_TRUE(loom::splitChunks({}, 4).empty());
  expectError([&] { loom::splitChunks(c, 0); }, "chunk size must be >= 1");
}

TEST(RefragHelpers, PolicyTiesAndRounding) {
  // Ties go to the lower index; the result is in chunk order.
  EXPECT_EQ(loom::expandedByPolicy({1, 3, 3, 0, 3}, 0.4),
            (std::vector<size_t>{1, 2}));
  EXPECT_EQ(loom::expandedByPolicy({5, 1, 5}, 0.34),
            (std::vector<size_t>{0, 2}));
  // ceil(p n): 0.25 of 16 is 4, 0.26 of 16 is 5, 0.1 of 30 is 3 (not 4 by
  // rounding noise).
  std::vector<float> s16(16), s30(30);
  for (size_t i = 0; i < 16; ++i)
    s16[i] = float(i);
  EXPECT_EQ(loom::expandedByPolicy(s16, 0.25),
            (std::vector<size_t>{12, 13, 14, 15}));
  EXPECT_EQ(loom::expandedByPolicy(s16, 0.26).size(), 5u);
  EXPECT_EQ(loom::expandedByPolicy(s30, 0.1).size(), 3u);
  EXPECT_EQ(loom::expandedByPolicy({}, 0.5).size(), 0u);
  // NaN ranks last.
  EXPECT_EQ(loom::expandedByPolicy({NAN, -5, 2}, 0.5),
            (std::vector<size_t>{1, 2}));
  expectError([] { loom::expandedByPolicy({1}, -0.1); }, "is outside [0, 1]");
  expectError([] { loom::expandedByPolicy({1}, NAN); }, "is outside [0, 1]");
}

TEST(RefragHelpers, AssembleSequence) {
  const std::vector<int32_t> context = {10, 11, 12, 13, 14};
  const std::vector<int32_t> question = {20, 21};
  const std::vector<float> proj = {0, 0, 1, 1, 2, 2}; // 3 chunks of dim 2
  loom::AssembledSequence s =
      loom::assembleSequence(context, question, 2, {1}, proj.data(), 2, 1);
  EXPECT_EQ(s.tokens, (std::vector<int32_t>{1, 0, 12, 13, 0, 20, 21}));
  EXPECT_EQ(s.chunk, (std::vector<int64_t>{-1, 0, -1, -1, 2, -1, -1}));
  EXPECT_EQ(s.embeddings[1], proj.data());
  EXPECT_EQ(s.embeddings[4], proj.data() + 4);
  EXPECT_EQ(s.embeddings[2], nullptr);
  EXPECT_EQ(s.n_chunks, 3u);
  EXPECT_EQ(s.n_expanded, 1u);
  EXPECT_EQ(s.n_placeholders, 2u);
  // No BOS; everything expanded needs no projections.
  s = loom::assembleSequence(context, question, 2, {2, 0, 1}, nullptr, 2, -1);
  EXPECT_EQ(s.tokens, (std::vector<int32_t>{10, 11, 12, 13, 14, 20, 21}));
  expectError(
      [&] { loom::assembleSequence(context, question, 2, {}, nullptr, 2, 1); },
      "placeholders need the projected chunk rows");
  expectError(
      [&] {
        loom::assembleSequence(context, question, 2, {3}, proj.data(), 2, 1);
      },
      "expanded chunk 3 is out of range (the context has 3 chunks of 2)");
}

// ---- A small random encoder (no ../shared) ---------------------------------

using loom::test::randomRefragArtifact;

loom::test::ProgramSpec &program(ArtifactSpec &a, const std::string &name) {
  for (auto &p : a.extra_programs)
    if (p.name == name)
      return p;
  throw std::runtime_error("no program " + name);
}

TEST(RefragRandom, LoadsAndRuns) {
  TempFile file(randomRefragArtifact().serialize());
  auto model = loom::Model::load(file.path());
  ASSERT_NE(model->refrag(), nullptr);
  EXPECT_EQ(model->refrag()->max_chunk_len, 4);
  EXPECT_EQ(model->refrag()->encoder_dim, 8);
  loom::Session s(model, {});
  std::vector<int32_t> ctx = {270, 271, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  loom::RefragRequest req;
  req.context = ctx;
  req.question = {20, 21};
  req.chunk_size = 3; // 4 chunks, last of 2
  req.expand_fraction = 0.5;
  loom::RefragPrompt p = loom::prepareRefrag(s, req);
  EXPECT_EQ(p.expanded.size(), 2u);
  EXPECT_EQ(p.projected.size(), 4u * 16);
  for (float v : p.projected)
    EXPECT_TRUE(std::isfinite(v));
  // 1 + 2 placeholders + 2 expanded chunks + 2 question tokens; fed in
  // chunks of 6 rows, with placeholders across chunk boundaries.
  const size_t n = p.sequence.tokens.size();
  loom::Logits all = s.forward(p.sequence.tokens.data(), n, true,
                               p.sequence.embeddings.data());
  std::vector<float> chunked(all.data, all.data + all.rows * all.vocab);
  s.reset();
  std::vector<float> one_by_one;
  for (size_t i = 0; i < n; ++i) {
    loom::Logits l = s.forward(&p.sequence.tokens[i], 1, false,
                               &p.sequence.embeddings[i]);
    one_by_one.insert(one_by_one.end(), l.last(), l.last() + l.vocab);
  }
  expectClose(one_by_one, chunked, 1e-5, 1e-5, "one position at a time");
  // A placeholder differs from any token: compare with the chunk fed as
  // token 0.
  s.reset();
  loom::Logits plain = s.forward(p.sequence.tokens.data(), n, false);
  EXPECT_FALSE(std::equal(plain.last(), plain.last() + plain.vocab,
                          chunked.end() - plain.vocab));
}

// Placeholder rows with layer 0's q|k|v (loom-fuse-chunk-projector), fed in
// blocks of 6 rows, one position at a time, and as rows of the model dim:
// all the same logits, for layouts where blocks start and end with
// placeholders, token rows form one run not at a block's start, several
// runs, or none; and with a qk_bias on layer 0 (added after the copy).
TEST(RefragRandom, FusedProjector) {
  using K = fbs::Kernel;
  for (bool qk_bias : {false, true}) {
    ArtifactSpec spec = randomRefragArtifact(6, true);
    if (qk_bias)
      for (auto &d : spec.dispatches)
        if (d.kernel == K::FusedQkvAttention && d.iparams.size() > 5) {
          const int64_t n = (d.iparams[1] + d.iparams[2]) * d.iparams[3];
          std::vector<float> bias(static_cast<size_t>(n));
          for (int64_t c = 0; c < n; ++c)
            bias[c] = 0.05f * float((c * 7) % 11) - 0.25f;
          d.weights.push_back(spec.addTensor("layers.0.qk_bias", {n}, bias));
        }
    TempFile file(spec.serialize());
    auto model = loom::Model::load(file.path());
    const int64_t D = model->config().dim;
    const int64_t qkv =
        (model->config().n_heads + 2 * model->config().n_kv_heads) *
        model->config().head_dim;
    ASSERT_EQ(model->refrag()->projected_dim, D + qkv);
    loom::Session s(model, {});
    loom::RefragRequest req;
    req.context = {270, 271, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    req.question = {20, 21};
    req.chunk_size = 2; // 7 chunks, the last of one token
    // Rows (B = BOS, P = placeholder, t = token), in blocks of 6:
    //   {1, 4}: B P t t P P | t t P P q q
    //   {1, 2}: B P t t t t | P P P P q q   (a block of P first)
    //   {}:     B P P P P P | P P q q       (the second: one run at 2..3)
    //   all:    every row a token: the plain path in the marked dispatch
    const std::vector<std::vector<size_t>> layouts = {
        {1, 4}, {1, 2}, {}, {0, 1, 2, 3, 4, 5, 6}};
    for (const std::vector<size_t> &expanded : layouts) {
      SCOPED_TRACE(std::string(qk_bias ? "qk_bias, " : "") + "expanded " +
                   std::to_string(expanded.size()) + " chunks");
      req.expanded = expanded;
      loom::RefragPrompt p = loom::prepareRefrag(s, req);
      ASSERT_EQ(p.sequence.row_elems, D + qkv);
      const size_t n = p.sequence.tokens.size();
      const auto &emb = p.sequence.embeddings;
      loom::Logits all = s.forward(p.sequence.tokens.data(), n, true,
                                   emb.data(), p.sequence.row_elems);
      const std::vector<float> fused(all.data, all.data + all.rows * all.vocab);
      s.reset();
      loom::Logits dim_rows =
          s.forward(p.sequence.tokens.data(), n, true, emb.data(), D);
      expectClose(std::vector<float>(dim_rows.data,
                                     dim_rows.data +
                                         dim_rows.rows * dim_rows.vocab),
                  fused, 1e-5, 1e-5, "rows of the model dim");
      s.reset();
      std::vector<float> one_by_one;
      for (size_t i = 0; i < n; ++i) {
        loom::Logits l = s.forward(&p.sequence.tokens[i], 1, false, &emb[i],
                                   p.sequence.row_elems);
        one_by_one.insert(one_by_one.end(), l.last(), l.last() + l.vocab);
      }
      expectClose(one_by_one, fused, 1e-5, 1e-5, "one position at a time");
      s.reset();
      if (p.sequence.n_placeholders == 0)
        continue;
      // The q|k|v are used: spoiling them changes the logits.
      std::vector<float> spoiled = p.projected;
      for (size_t c = 0; c < p.chunks.size(); ++c)
        spoiled[c * (D + qkv) + D] += 1.0f;
      loom::AssembledSequence bad = loom::assembleSequence(
          req.context, req.question, 2, req.expanded, spoiled.data(), D + qkv,
          model->config().bos_id);
      loom::Logits l = s.forward(bad.tokens.data(), n, false,
                                 bad.embeddings.data(), bad.row_elems);
      EXPECT_FALSE(std::equal(l.last(), l.last() + l.vocab,
                              fused.end() - l.vocab));
      s.reset();
    }
  }
}

TEST(RefragRandom, NoChunkEncoder) {
  TempFile file(loom::test::llamaArtifact(loom::test::tinyLlamaWeights(),
                                          loom::test::syntheticTokenizer(272))
                    .serialize());
  auto model = loom::Model::load(file.path());
  EXPECT_EQ(model->refrag(), nullptr);
  loom::Session s(model, {});
  int32_t t = 5;
  float row[8] = {};
  const char *msg = "this artifact has no chunk encoder (compile with loomc "
                    "--format=refrag)";
  expectError([&] { s.encodeChunk(&t, 1); }, msg);
  expectError([&] { s.projectChunks(row, 1); }, msg);
  expectError([&] { s.scoreChunks(row, 1); }, msg);
  loom::RefragRequest req;
  req.context = {5, 6};
  expectError([&] { loom::prepareRefrag(s, req); }, msg);
  // Placeholders work on any llama: the Embed row is replaced.
  std::vector<float> e(16, 0.5f);
  const float *emb[2] = {nullptr, e.data()};
  int32_t toks[2] = {1, 0};
  EXPECT_EQ(s.forward(toks, 2, true, emb).rows, 2);
}

TEST(RefragRandom, Verification) {
  EXPECT_EQ(loadError(randomRefragArtifact()), "<loaded>");
  EXPECT_EQ(loadError(randomRefragArtifact(6, true)), "<loaded>");
  auto expect = [](ArtifactSpec a, const std::string &want) {
    const std::string m = loadError(a);
    EXPECT_NE(m.find(want), std::string::npos)
        << "message: " << m << "\nexpected to contain: " << want;
  };
  using K = fbs::Kernel;
  {
    ArtifactSpec a = randomRefragArtifact();
    a.refrag->encoder_dim = 9;
    expect(a, "program 'encode_chunk': output buffer");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    a.refrag->max_chunk_len = 6; // + 1 > max_tokens 6
    expect(a, "refrag config: max_chunk_len 6 must be >= 1 with "
              "max_chunk_len + 1 <= max_tokens (6)");
  }
  {
    ArtifactSpec a = randomRefragArtifact(8);
    a.refrag->max_chunk_len = 5; // the position table has 5 rows
    expect(a, "program 'encode_chunk': takes at most 5 rows (its position "
              "table), fewer than max_chunk_len + 1 = 6");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    a.refrag->cls_token_id = 272;
    expect(a, "refrag config: cls_token_id 272 is outside the vocabulary");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    a.extra_programs.pop_back();
    expect(a, "artifact has a refrag config but no program 'score_chunk'");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    a.refrag.reset();
    expect(a, "program 'encode_chunk' belongs to a chunk encoder, but the "
              "model has no refrag config");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    a.extra_programs[1].name = "encode_chunk";
    expect(a, "artifact has two programs named 'encode_chunk'");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    program(a, "project_chunk").input_buffer = 9999;
    expect(a, "program 'project_chunk': input buffer 9999 out of range");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    program(a, "score_chunk").input_buffer = -1;
    expect(a, "program 'score_chunk': needs an input buffer");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    program(a, "project_chunk").input_buffer =
        static_cast<int32_t>(program(a, "project_chunk").logits_buffer);
    expect(a, "program 'project_chunk': input buffer");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    a.input_buffer = 0;
    expect(a, "program 'forward': must read token ids (input_buffer -1)");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    auto &p = program(a, "project_chunk");
    p.dispatches.insert(p.dispatches.begin(),
                        program(a, "encode_chunk").dispatches.front());
    expect(a, "the program reads input rows");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    auto &p = program(a, "project_chunk");
    p.dispatches.push_back({K::TakeRow,
                            {p.logits_buffer},
                            {p.logits_buffer},
                            {},
                            {},
                            {0},
                            {},
                            "take"});
    expect(a, "mixes rows, but the rows of this program must be independent");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    auto &e = program(a, "encode_chunk");
    e.dispatches.push_back(a.dispatches[1]); // the decoder's first RmsNorm
    e.dispatches.push_back(a.dispatches[5]); // ... its first Rope
    expect(a, "uses the KV caches or token positions, which only program "
              "'forward' may");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    a.dispatches.push_back(program(a, "encode_chunk").dispatches.back());
    expect(a, "program 'forward' keeps one row per position");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    auto &e = program(a, "encode_chunk");
    e.dispatches.back().iparams = {6};
    expect(a, "row 6 is out of range (0..5)");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    auto &e = program(a, "encode_chunk");
    e.dispatches.back().iparams = {5}; // needs 6 rows, the table has 5
    expect(a, "a run needs at least 6 rows (TakeRow) but may have at most 5");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    auto &e = program(a, "encode_chunk");
    loom::test::DispatchSpec take = e.dispatches.back();
    take.iparams = {1};
    e.dispatches.push_back(take);
    expect(a, "row 1 after an earlier TakeRow, which leaves one row");
  }
  // Kernel contracts of the new kernels.
  auto find = [](loom::test::ProgramSpec &p, K k) -> loom::test::DispatchSpec & {
    for (auto &d : p.dispatches)
      if (d.kernel == k)
        return d;
    throw std::runtime_error("no such dispatch");
  };
  {
    ArtifactSpec a = randomRefragArtifact();
    find(program(a, "encode_chunk"), K::LayerNorm).weights[0] =
        find(program(a, "encode_chunk"), K::AddPositions).weights[0];
    expect(a, "weight weight 'encoder.pos_emb' has shape [5, 8], expected "
              "[8]");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    find(program(a, "encode_chunk"), K::LayerNorm).weights.pop_back();
    expect(a, "has 1 weights, expected 2");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    find(program(a, "encode_chunk"), K::LayerNorm).fparams = {-1.0f};
    expect(a, "eps -1 must be >= 0");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    find(program(a, "encode_chunk"), K::SelfAttention).iparams = {4, 4};
    expect(a, "q buffer");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    find(program(a, "encode_chunk"), K::SelfAttention).iparams = {0, 8};
    expect(a, "invalid heads: 0 heads of 8");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    auto &sa = find(program(a, "encode_chunk"), K::SelfAttention);
    sa.outputs = {sa.inputs[0]};
    expect(a, "overlap in the arena but are used together");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    // A 1-D position table.
    find(program(a, "encode_chunk"), K::AddPositions).weights[0] =
        find(program(a, "encode_chunk"), K::LayerNorm).weights[0];
    expect(a, "expected [positions, 8]");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    auto &g = find(program(a, "project_chunk"), K::GeluTanh);
    g.outputs = {program(a, "project_chunk").logits_buffer};
    expect(a, "GeluTanh");
  }
  {
    ArtifactSpec a = randomRefragArtifact();
    find(program(a, "encode_chunk"), K::TakeRow).iparams = {-1};
    expect(a, "row -1 is out of range");
  }

  // placeholder_qkv (loom-fuse-chunk-projector): the sixth iparam of the
  // decoder's first FusedQkvAttention, with project_chunk returning the
  // model dim + that dispatch's q|k|v.
  auto attentions = [](ArtifactSpec &a) {
    std::vector<loom::test::DispatchSpec *> out;
    for (auto &d : a.dispatches)
      if (d.kernel == K::FusedQkvAttention)
        out.push_back(&d);
    return out;
  };
  {
    ArtifactSpec a = randomRefragArtifact(6, true);
    attentions(a)[0]->iparams[5] = 2;
    expect(a, "placeholder_qkv must be 0 or 1, got 2");
  }
  {
    ArtifactSpec a = randomRefragArtifact(6, true);
    attentions(a)[1]->iparams = {1, 4, 2, 4, 1, 1};
    expect(a, "a second dispatch marked placeholder_qkv (dispatch 2 is)");
  }
  {
    ArtifactSpec a = randomRefragArtifact(6, true);
    attentions(a)[0]->iparams.pop_back();
    attentions(a)[1]->iparams.push_back(1);
    expect(a, "placeholder_qkv is only valid on the first attention");
  }
  {
    ArtifactSpec a = randomRefragArtifact(6, true);
    auto &proj = program(a, "project_chunk");
    proj.logits_buffer = find(proj, K::RmsNorm).inputs[0]; // the plain row
    expect(a, "program 'project_chunk': output buffer");
    expect(a, "has rows of 16 floats, expected 48 (the model dim + layer "
              "0's q|k|v (placeholder_qkv))");
  }
  // ... and project_chunk's q|k|v must be the forward's: the same Wqkv, the
  // same norm weight and eps.
  {
    ArtifactSpec a = randomRefragArtifact(6, true);
    auto &proj = program(a, "project_chunk");
    proj.dispatches[proj.dispatches.size() - 2].weights = {
        attentions(a)[1]->weights[0]}; // layer 1's Wqkv, the same shape
    expect(a, "program 'project_chunk': placeholder_qkv needs it to end with "
              "[row | RmsNorm(row) Wqkv], the forward dispatch's RmsNorm and "
              "Wqkv");
  }
  {
    ArtifactSpec a = randomRefragArtifact(6, true);
    find(program(a, "project_chunk"), K::RmsNorm).fparams = {1e-3f};
    expect(a, "placeholder_qkv needs it to end with [row | RmsNorm(row) Wqkv]");
  }
  {
    ArtifactSpec a = randomRefragArtifact(6, true);
    // The marked attention reads the embedding rows themselves.
    attentions(a)[0]->inputs = {a.dispatches[0].outputs[0]};
    expect(a, "placeholder_qkv needs its input to be the RmsNorm of the "
              "Embed rows");
  }
  {
    ArtifactSpec a = randomRefragArtifact(6, true);
    a.refrag.reset();
    a.extra_programs.clear();
    expect(a, "placeholder_qkv needs a chunk encoder, but the model has no "
              "refrag config");
  }
}

} // namespace
