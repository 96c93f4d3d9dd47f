// Artifact loading and verification: a good artifact loads with the recorded
// metadata; every kind of damage (truncation, flipped bits, wrong
// identification, out-of-range offsets and indices, inconsistent shapes and
// parameters) is reported as one loom::Error line and never crashes.
#include "artifact.h"
#include "loom/error.h"
#include "loom/runtime.h"
#include "support/artifact_builder.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace {

using loom::test::ArtifactSpec;
using loom::test::TempFile;
namespace fbs = loom::artifact;

ArtifactSpec tinySpec(bool fused = false) {
  loom::test::LlamaArtifactOptions o;
  o.max_tokens = 4;
  o.fused = fused;
  return loom::test::llamaArtifact(loom::test::tinyLlamaWeights(),
                                   loom::test::syntheticTokenizer(272), o);
}

// The message of the loom::Error that loading `bytes` throws, or "<loaded>".
std::string loadError(const std::vector<uint8_t> &bytes) {
  TempFile file(bytes);
  try {
    loom::Model::load(file.path());
  } catch (const loom::Error &e) {
    return e.what();
  }
  return "<loaded>";
}

std::string loadError(const ArtifactSpec &spec) {
  return loadError(spec.serialize());
}

// Checks the one-line message contains `expected`.
void expectError(const std::string &message, const std::string &expected) {
  EXPECT_NE(message.find(expected), std::string::npos)
      << "message: " << message << "\nexpected to contain: " << expected;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(Artifact, LoadsTinyModel) {
  TempFile file(tinySpec().serialize());
  std::shared_ptr<loom::Model> m = loom::Model::load(file.path());
  const loom::ModelConfigInfo &c = m->config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.dim, 16);
  EXPECT_EQ(c.hidden_dim, 40);
  EXPECT_EQ(c.n_layers, 1);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.vocab_size, 272);
  EXPECT_EQ(c.max_seq, 32);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_EQ(m->tokenizer().vocabSize(), 272);
  EXPECT_EQ(m->tokenizer().piece(1), "\n<s>\n");
  EXPECT_EQ(m->contextLength(), 32);
  EXPECT_EQ(m->maxTokensPerStep(), 4);
  EXPECT_EQ(m->kvCacheBytes(), 2u * 32 * 2 * 4 * sizeof(float));
  EXPECT_GT(m->arenaBytes(), 0u);
  EXPECT_EQ(m->generator(), "artifact_builder.h");
  EXPECT_EQ(m->target(), "cpu");
  // 272x16 embedding, two norms + final norm, wq wk wv wo, w1 w2 w3, output.
  uint64_t floats =
      272 * 16 + 3 * 16 + 16 * 16 * 2 + 8 * 16 * 2 + 3 * 40 * 16 + 272 * 16;
  EXPECT_EQ(m->weightBytes(), floats * sizeof(float));
}

// A checkpoint that comes without a tokenizer (Huginn's) compiles to an
// artifact without one: it loads, and asking for the tokenizer says why not.
TEST(Artifact, StopIdsEndGeneration) {
  ArtifactSpec spec = tinySpec();
  spec.config.stop_ids = {7, 9};
  TempFile file(spec.serialize());
  std::shared_ptr<loom::Model> m = loom::Model::load(file.path());
  const loom::ModelConfigInfo &c = m->config();
  EXPECT_EQ(c.stop_ids, std::vector<int32_t>({7, 9}));
  for (int32_t id : {1, 2, 7, 9})
    EXPECT_TRUE(c.endsGeneration(id)) << id;
  for (int32_t id : {0, 3, 8, -1})
    EXPECT_FALSE(c.endsGeneration(id)) << id;
}

TEST(Artifact, LoadsWithoutTokenizer) {
  ArtifactSpec spec = tinySpec();
  spec.tokenizer.reset();
  TempFile file(spec.serialize());
  std::shared_ptr<loom::Model> m = loom::Model::load(file.path());
  EXPECT_FALSE(m->hasTokenizer());
  try {
    m->tokenizer();
    FAIL() << "tokenizer() should throw";
  } catch (const loom::Error &e) {
    expectError(e.what(), "this artifact has no tokenizer");
  }
  EXPECT_TRUE(loom::Model::load(TempFile(tinySpec().serialize()).path())
                  ->hasTokenizer());
}

TEST(Artifact, LoadsFusedModel) {
  EXPECT_EQ(loadError(tinySpec(true)), "<loaded>");
}

TEST(Artifact, MissingFile) {
  std::string path = "/nonexistent-dir/model.loom";
  try {
    loom::Model::load(path);
    FAIL() << "loaded a missing file";
  } catch (const loom::Error &e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot open artifact '/nonexistent-dir/model.loom': No such "
              "file or directory");
  }
}

TEST(Artifact, DirectoryIsNotAnArtifact) {
  try {
    loom::Model::load("/tmp");
    FAIL() << "loaded a directory";
  } catch (const loom::Error &e) {
    expectError(e.what(), "not a regular file");
  }
}

TEST(Artifact, TruncatedAtEveryKindOfCutPoint) {
  const std::vector<uint8_t> good = tinySpec().serialize();
  const loom::ArtifactFileHeader h = loom::test::readHeader(good);
  const std::vector<size_t> cuts = {0,
                                    10,
                                    63,
                                    64,
                                    h.fb_offset + h.fb_size / 2,
                                    h.fb_offset + h.fb_size,
                                    h.weights_offset,
                                    h.weights_offset + h.weights_size / 2,
                                    good.size() - 1};
  for (size_t cut : cuts) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    std::vector<uint8_t> bytes(good.begin(), good.begin() + cut);
    std::string message = loadError(bytes);
    expectError(message, "artifact is truncated");
    if (cut >= 64)
      expectError(message, "header says " + std::to_string(good.size()) +
                               " bytes, file has " + std::to_string(cut));
  }
}

TEST(Artifact, TrailingBytes) {
  std::vector<uint8_t> bytes = tinySpec().serialize();
  bytes.push_back(0);
  expectError(loadError(bytes), "size mismatch");
}

TEST(Artifact, WrongMagic) {
  std::vector<uint8_t> bytes = tinySpec().serialize();
  bytes[0] = 'X';
  EXPECT_EQ(loadError(bytes), "not a Loom artifact (bad magic)");
  // A short file that is not a Loom file is reported by its magic too.
  EXPECT_EQ(loadError(std::vector<uint8_t>{'G', 'G', 'U', 'F'}),
            "not a Loom artifact (bad magic)");
}

TEST(Artifact, WrongVersion) {
  ArtifactSpec spec = tinySpec();
  spec.header_version = 2;
  EXPECT_EQ(loadError(spec),
            "unsupported artifact format version 2 (this runtime reads 1)");
}

TEST(Artifact, ModelFormatVersionMustMatchHeader) {
  ArtifactSpec spec = tinySpec();
  spec.model_format_version = 0;
  expectError(loadError(spec), "format_version 0");
}

TEST(Artifact, WrongFileIdentifier) {
  ArtifactSpec spec = tinySpec();
  spec.file_identifier = "XXXX";
  EXPECT_EQ(loadError(spec),
            "flatbuffer file identifier is 'XXXX', expected 'LOOM'");
}

TEST(Artifact, EveryHeaderBitFlipIsRejected) {
  const std::vector<uint8_t> good = tinySpec().serialize();
  for (size_t byte = 0; byte < sizeof(loom::ArtifactFileHeader); ++byte)
    for (int bit : {0, 3, 7}) {
      SCOPED_TRACE("byte " + std::to_string(byte) + " bit " +
                   std::to_string(bit));
      std::vector<uint8_t> bytes = good;
      bytes[byte] ^= uint8_t(1u << bit);
      std::string message = loadError(bytes);
      EXPECT_NE(message, "<loaded>");
      EXPECT_EQ(message.find('\n'), std::string::npos);
    }
}

TEST(Artifact, FlippedFlatbufferByteFailsTheChecksum) {
  std::vector<uint8_t> bytes = tinySpec().serialize();
  const loom::ArtifactFileHeader h = loom::test::readHeader(bytes);
  bytes[h.fb_offset + h.fb_size / 2] ^= 0x10;
  EXPECT_EQ(loadError(bytes),
            "flatbuffer checksum mismatch (artifact is corrupt)");
}

TEST(Artifact, FlippedWeightByteFailsTheTensorChecksum) {
  std::vector<uint8_t> bytes = tinySpec().serialize();
  const loom::ArtifactFileHeader h = loom::test::readHeader(bytes);
  bytes[h.weights_offset + 5] ^= 0x01; // inside the first tensor
  EXPECT_EQ(loadError(bytes),
            "tensor 'tok_embeddings' checksum mismatch (artifact is corrupt)");
}

// ---- BF16 weights (loomc --weight-type=bf16) -----------------------------

// The tiny model with its matrices and tables (rank >= 2) stored as bf16,
// as loomc --weight-type=bf16 stores them; norm weights stay f32.
ArtifactSpec bf16Spec(bool fused = false) {
  ArtifactSpec spec = tinySpec(fused);
  for (loom::test::TensorSpec &t : spec.tensors)
    if (t.shape.size() >= 2)
      t.dtype = fbs::DType::BF16;
  return spec;
}

uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

TEST(Artifact, Bf16RoundsToNearestEven) {
  using loom::test::fromBf16;
  using loom::test::toBf16;
  EXPECT_EQ(fromBf16(toBf16(1.0f + 0x1p-8f)), 1.0f);           // tie, down
  EXPECT_EQ(fromBf16(toBf16(1.0f + 0x3p-8f)), 1.0f + 0x1p-6f); // tie, up
  EXPECT_EQ(fromBf16(toBf16(1.0f + 0x1p-8f + 0x1p-20f)), 1.0f + 0x1p-7f);
  EXPECT_EQ(fromBf16(toBf16(3.4e38f)), INFINITY); // past the largest bf16
  EXPECT_EQ(bitsOf(fromBf16(toBf16(-0.0f))), bitsOf(-0.0f));
  // A NaN whose payload lives in the low half stays a NaN.
  uint32_t nan_bits = 0x7f800001u;
  float nan;
  std::memcpy(&nan, &nan_bits, sizeof nan);
  EXPECT_TRUE(std::isnan(fromBf16(toBf16(nan))));
}

// BF16 tensors load: the stored bytes stay in the mapping (raw, bytes),
// 64-byte aligned, equal to the bf16 rounding of the values; the kernels
// read the matrices and tables as stored, so a session makes no f32 copy of
// them. F32 tensors are used in place.
TEST(Artifact, Bf16TensorsLoadAsStored) {
  ArtifactSpec spec = bf16Spec();
  // Special values in the <unk> row of the embedding.
  const float specials[] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -0.0f,
                            INFINITY,       -INFINITY,      NAN,
                            3.4e38f,        1e-40f};
  std::copy(std::begin(specials), std::end(specials),
            spec.tensors[0].data.begin());
  TempFile file(spec.serialize());
  std::shared_ptr<loom::Model> m = loom::Model::load(file.path());
  const loom::rt::ModelData &d = m->data();
  ASSERT_EQ(d.tensors.size(), spec.tensors.size());
  loom::Session cpu(m);
  uint64_t stored = 0, bf16_tensors = 0;
  for (size_t i = 0; i < d.tensors.size(); ++i) {
    SCOPED_TRACE(spec.tensors[i].name);
    const loom::rt::TensorDesc &t = d.tensors[i];
    const std::vector<float> &want = spec.tensors[i].data;
    const bool bf16 = spec.tensors[i].dtype == fbs::DType::BF16;
    EXPECT_EQ(t.dtype,
              bf16 ? loom::rt::WeightType::BF16 : loom::rt::WeightType::F32);
    EXPECT_EQ(t.bytes, want.size() * (bf16 ? 2 : 4));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw) % 64, 0u);
    if (bf16) {
      EXPECT_EQ(t.data, nullptr); // no widened copy
      ++bf16_tensors;
      const auto *h = static_cast<const uint16_t *>(t.raw);
      for (size_t e = 0; e < want.size(); ++e)
        ASSERT_EQ(h[e], loom::test::toBf16(want[e])) << "element " << e;
    } else {
      EXPECT_EQ(static_cast<const void *>(t.data), t.raw);
    }
    stored += t.bytes;
  }
  EXPECT_EQ(bf16_tensors, 9u); // embedding, wq wk wv wo, w1 w2 w3, output
  EXPECT_TRUE(d.widened.empty());
  EXPECT_EQ(m->weightBytes(), stored); // what the file stores
  const auto *row0 = static_cast<const uint16_t *>(d.tensors[0].raw);
  auto widened = [&](int e) { return loom::test::fromBf16(row0[e]); };
  EXPECT_EQ(widened(0), 1.0f);
  EXPECT_EQ(widened(1), 1.0f + 0x1p-6f);
  EXPECT_EQ(bitsOf(widened(2)), bitsOf(-0.0f));
  EXPECT_EQ(widened(3), INFINITY);
  EXPECT_EQ(widened(4), -INFINITY);
  EXPECT_TRUE(std::isnan(widened(5)));
  EXPECT_EQ(widened(6), INFINITY);
  EXPECT_EQ(widened(7), loom::test::fromBf16(loom::test::toBf16(1e-40f)));
}

// A BF16 model computes exactly what an F32 model with the bf16-rounded
// weights computes: the kernels see the same f32 values. Unfused and fused
// (packed Wqkv) dispatch forms.
TEST(Artifact, Bf16ModelRunsLikeItsRoundedF32Twin) {
  for (int variant = 0; variant < 3; ++variant) {
    const bool fused = variant == 1;
    // Variant 2: every tensor bf16, the norm weights too (loomc keeps them
    // f32; a kernel that reads only f32 gets a widened copy of them).
    SCOPED_TRACE(variant == 0 ? "unfused" : fused ? "fused" : "all bf16");
    ArtifactSpec bf16 = bf16Spec(fused), twin = tinySpec(fused);
    if (variant == 2)
      for (loom::test::TensorSpec &t : bf16.tensors)
        t.dtype = fbs::DType::BF16;
    for (size_t i = 0; i < twin.tensors.size(); ++i)
      if (bf16.tensors[i].dtype == fbs::DType::BF16)
        for (float &x : twin.tensors[i].data)
          x = loom::test::fromBf16(loom::test::toBf16(x));
    TempFile a(bf16.serialize()), b(twin.serialize());
    auto ma = loom::Model::load(a.path()), mb = loom::Model::load(b.path());
    EXPECT_LT(ma->weightBytes(), mb->weightBytes() * 52 / 100);
    loom::Session sa(ma), sb(mb);
    const int32_t ids[5] = {1, 260, 5, 270, 3};
    loom::Logits la = sa.forward(ids, 5, true), lb = sb.forward(ids, 5, true);
    ASSERT_EQ(la.rows, lb.rows);
    for (int64_t i = 0; i < la.rows * la.vocab; ++i)
      ASSERT_EQ(la.data[i], lb.data[i]) << "logit " << i;
    // One-row (matrix-vector) steps too.
    for (int32_t id : {7, 261}) {
      const loom::Logits oa = sa.forward(&id, 1), ob = sb.forward(&id, 1);
      for (int64_t i = 0; i < oa.vocab; ++i)
        ASSERT_EQ(oa.data[i], ob.data[i]) << "token " << id << " logit " << i;
    }
    // Copies only of the bf16 tensors read as f32: the norm weights.
    size_t norms = 0;
    for (const loom::rt::TensorDesc &t : ma->data().tensors)
      norms += t.shape.size() == 1;
    EXPECT_EQ(ma->data().widened.size(), variant == 2 ? norms : 0u);
  }
}

// Q8_0 and Q4_0 are for matrices whose rows are whole blocks of 32, the K
// formats of 256, and their size is the blocks': anything else is refused
// with the tensor named.
TEST(Artifact, QuantizedTensorsAreMatricesOfWholeBlocks) {
  struct Case {
    std::vector<int64_t> shape;
    size_t bytes;
    const char *message;
  } cases[] = {
      {{272, 16},
       272 * 16 / 32 * 34,
       "Q8_0 tensor 'tok_embeddings' has shape [272, 16]; Q8_0 needs a matrix "
       "whose rows are whole blocks of 32"},
      {{4352},
       4352 / 32 * 34,
       "Q8_0 tensor 'tok_embeddings' has shape [4352]; Q8_0 needs a matrix"},
      {{136, 32},
       136 * 34 - 1,
       "tensor 'tok_embeddings' has size 4623 bytes but shape [136, 32] of "
       "Q8_0 needs 136 x 34"},
      {{272, 16},
       272 * 16 / 32 * 18,
       "Q4_0 tensor 'tok_embeddings' has shape [272, 16]; Q4_0 needs a matrix "
       "whose rows are whole blocks of 32"},
      {{136, 32},
       136 * 34,
       "tensor 'tok_embeddings' has size 4624 bytes but shape [136, 32] of "
       "Q4_0 needs 136 x 18"},
      {{34, 128},
       34 * 128 / 256 * 144,
       "Q4_K tensor 'tok_embeddings' has shape [34, 128]; Q4_K needs a matrix "
       "whose rows are whole blocks of 256"},
      {{17, 256},
       17 * 144,
       "tensor 'tok_embeddings' has size 2448 bytes but shape [17, 256] of "
       "Q6_K needs 17 x 210"},
  };
  for (const Case &c : cases) {
    ArtifactSpec spec = tinySpec();
    loom::test::TensorSpec &t = spec.tensors[0];
    const std::string message = c.message;
    t.dtype = message.find("Q4_0") != std::string::npos   ? fbs::DType::Q4_0
              : message.find("Q4_K") != std::string::npos ? fbs::DType::Q4_K
              : message.find("Q6_K") != std::string::npos ? fbs::DType::Q6_K
                                                          : fbs::DType::Q8_0;
    t.shape = c.shape;
    t.blocks.assign(c.bytes, 0);
    TempFile file(spec.serialize());
    try {
      loom::Model::load(file.path());
      ADD_FAILURE() << "loaded " << c.message;
    } catch (const loom::Error &e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos)
          << e.what();
    }
  }
}

TEST(Artifact, FlippedBf16ByteFailsTheTensorChecksum) {
  const std::vector<uint8_t> good = bf16Spec().serialize();
  const loom::ArtifactFileHeader h = loom::test::readHeader(good);
  // The first and the last byte of the bf16 embedding (272 x 16 x 2 bytes).
  for (size_t at : {size_t(0), size_t(272 * 16 * 2 - 1)}) {
    std::vector<uint8_t> bytes = good;
    bytes[h.weights_offset + at] ^= 0x01;
    EXPECT_EQ(
        loadError(bytes),
        "tensor 'tok_embeddings' checksum mismatch (artifact is corrupt)");
  }
}

TEST(Artifact, LoadsCudaTarget) {
  // loomc --target=cuda: the same dispatch form, runs on the CPU too.
  ArtifactSpec spec = bf16Spec();
  spec.target = "cuda";
  TempFile file(spec.serialize());
  std::shared_ptr<loom::Model> m = loom::Model::load(file.path());
  EXPECT_EQ(m->target(), "cuda");
}

TEST(Artifact, StructurallyBrokenFlatbuffer) {
  std::vector<uint8_t> bytes = tinySpec().serialize();
  const loom::ArtifactFileHeader h = loom::test::readHeader(bytes);
  // The root offset pointing past the end (checksum made to match).
  uint32_t root = 0x7ffffff0u;
  std::memcpy(bytes.data() + h.fb_offset, &root, sizeof root);
  loom::test::refreshFbChecksum(bytes);
  expectError(loadError(bytes), "flatbuffer failed verification");
}

// Flip each flatbuffer byte with a matching checksum, so the damage reaches
// the verifier and the semantic checks. Whatever loads must also run.
// 0x01 moves indices and sizes by one (off-by-one checks); 0xA5 makes them
// wild.
class FlatbufferFlips : public ::testing::TestWithParam<uint8_t> {};

TEST_P(FlatbufferFlips, NeverCrash) {
  const std::vector<uint8_t> good = tinySpec(true).serialize();
  const loom::ArtifactFileHeader h = loom::test::readHeader(good);
  TempFile file;
  int loaded = 0, rejected = 0;
  for (size_t i = 0; i < h.fb_size; ++i) {
    std::vector<uint8_t> bytes = good;
    bytes[h.fb_offset + i] ^= GetParam();
    loom::test::refreshFbChecksum(bytes);
    file.write(bytes);
    try {
      auto model = loom::Model::load(file.path());
      loom::SessionOptions one_thread;
      one_thread.threads = 1;
      loom::Session session(model, one_thread);
      const int32_t ids[3] = {1, 260, 5};
      session.forward(ids, 3, true);
      ++loaded;
    } catch (const loom::Error &e) {
      ASSERT_EQ(std::string(e.what()).find('\n'), std::string::npos);
      ++rejected;
    }
  }
  // Flips in offsets, sizes and indices are caught; flips in names, scores
  // and similar fields load and run.
  EXPECT_GT(rejected, 0);
  EXPECT_GT(loaded, 0);
}

INSTANTIATE_TEST_SUITE_P(Artifact, FlatbufferFlips,
                         ::testing::Values(uint8_t(0x01), uint8_t(0xA5)));

// ---- Semantic checks on hand-made bad specs ----------------------------

struct BadCase {
  const char *name;
  std::function<void(ArtifactSpec &)> damage;
  const char *expected;
};

void PrintTo(const BadCase &c, std::ostream *os) { *os << c.name; }

class BadSpec : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadSpec, IsRejectedWithAClearMessage) {
  ArtifactSpec spec = tinySpec();
  GetParam().damage(spec);
  expectError(loadError(spec), GetParam().expected);
}

// Index of the first dispatch of `kernel`.
size_t find(const ArtifactSpec &s, fbs::Kernel kernel) {
  for (size_t i = 0; i < s.dispatches.size(); ++i)
    if (s.dispatches[i].kernel == kernel)
      return i;
  throw std::runtime_error("no such dispatch");
}

const BadCase kBadCases[] = {
    {"TensorOffsetPastSection",
     [](ArtifactSpec &s) { s.tensors[2].offset = 1ull << 40; },
     "lies outside the weights section"},
    {"TensorOffsetOverflows",
     [](ArtifactSpec &s) { s.tensors[0].offset = ~0ull - 63; },
     "lies outside the weights section"},
    {"TensorOffsetMisaligned", [](ArtifactSpec &s) { s.tensors[1].offset = 4; },
     "is not a multiple of 64"},
    {"TensorSizeDisagreesWithShape",
     [](ArtifactSpec &s) { s.tensors[1].size = 12; }, "needs"},
    {"TensorShapeOverflows",
     [](ArtifactSpec &s) {
       s.tensors[1].shape = {int64_t(1) << 40, int64_t(1) << 40};
     },
     "invalid shape"},
    {"TensorNegativeDimension",
     [](ArtifactSpec &s) { s.tensors[1].shape = {-16}; }, "invalid shape"},
    {"TensorBf16WithF32Size",
     [](ArtifactSpec &s) {
       s.tensors[2].dtype = fbs::DType::BF16;
       s.tensors[2].size = 16 * 16 * 4;
     },
     "tensor 'layers.0.wo' has size 1024 bytes but shape [16, 16] of BF16 "
     "needs 256 x 2"},
    {"TensorF32WithBf16Size",
     [](ArtifactSpec &s) { s.tensors[2].size = 16 * 16 * 2; },
     "tensor 'layers.0.wo' has size 512 bytes but shape [16, 16] of F32 "
     "needs 256 x 4"},
    {"TensorUnknownDtype",
     [](ArtifactSpec &s) { s.tensors[1].dtype = fbs::DType(10); },
     "tensor 'layers.0.attention_norm' has unknown dtype 10; this runtime "
     "supports F32, BF16, F16, Q8_0, Q4_0 and Q2_K to Q6_K"},
    {"TensorChecksum", [](ArtifactSpec &s) { s.tensors[3].checksum = 42; },
     "checksum mismatch"},
    {"DispatchBufferOutOfRange",
     [](ArtifactSpec &s) { s.dispatches[1].outputs = {999}; },
     "program 'forward' dispatch 1 (RmsNorm 'layers.0.rms_att' from builder): "
     "buffer index 999 out of range"},
    {"DispatchWeightOutOfRange",
     [](ArtifactSpec &s) { s.dispatches[0].weights = {1000}; },
     "weight index 1000 out of range"},
    {"UnknownKernel",
     [](ArtifactSpec &s) { s.dispatches[3].kernel = fbs::Kernel(42); },
     "dispatch 3: unknown kernel 42"},
    {"MatMulArity",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::MatMul)].inputs.push_back(0);
     },
     "has 2 inputs, expected 1"},
    {"MatMulShape",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::MatMul)].weights = {0};
     },
     "has shape [272, 16], expected [16, 16]"},
    {"MatMulAccumulateFlag",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::MatMul)].iparams = {7};
     },
     "accumulate must be 0 or 1"},
    {"MatMulInPlace",
     [](ArtifactSpec &s) {
       auto &d = s.dispatches[find(s, fbs::Kernel::MatMul)];
       s.buffers[d.outputs[0]].offset = s.buffers[d.inputs[0]].offset;
     },
     "overlap in the arena"},
    {"SiluMulPartialOverlap",
     [](ArtifactSpec &s) {
       auto &d = s.dispatches[find(s, fbs::Kernel::SiluMul)];
       s.buffers[d.inputs[1]].offset = s.buffers[d.outputs[0]].offset + 4;
     },
     "overlap in the arena"},
    {"EmbedTableShape",
     [](ArtifactSpec &s) {
       s.tensors[0].shape = {16, 272};
     },
     "expected [272, 16]"},
    {"RmsNormEps", [](ArtifactSpec &s) { s.dispatches[1].fparams = {-1.0f}; },
     "eps -1 must be >= 0"},
    {"RopeOddHeadDim",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Rope)].iparams = {15, 3};
     },
     "head_dim 3 must be even"},
    {"RopeColsPastRow",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Rope)].iparams = {32, 4};
     },
     "cols 32 must be a positive multiple"},
    {"RopeTheta",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Rope)].fparams = {0.0f};
     },
     "rope theta 0 must be positive"},
    {"RopeScaleNotPositive",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Rope)].fparams = {1e4f, 1.0f, 2.0f,
                                                           -1.0f};
     },
     "rope scale -1 must be positive"},
    {"ByteLevelScores",
     [](ArtifactSpec &s) {
       s.tokenizer = loom::test::byteLevelTokenizer(272);
       s.tokenizer->scores = {0.0f, 1.0f};
       s.config.bos_id = 259;
       s.config.eos_id = 260;
     },
     "tokenizer has 2 scores; a byte-level vocabulary has none"},
    {"ByteLevelMergeMakesNoPiece",
     [](ArtifactSpec &s) {
       s.tokenizer = loom::test::byteLevelTokenizer(272);
       s.tokenizer->byte_level->merges.push_back({'q', 'q'});
       s.config.bos_id = 259;
       s.config.eos_id = 260;
     },
     "merge 3 (113, 113) does not make a piece of the vocabulary"},
    {"ByteLevelPreTokenizer",
     [](ArtifactSpec &s) {
       s.tokenizer = loom::test::byteLevelTokenizer(272);
       s.tokenizer->byte_level->pre = static_cast<loom::PreTokenizer>(9);
       s.config.bos_id = 259;
       s.config.eos_id = 260;
     },
     "tokenizer has an unknown pre-tokenizer 9"},
    {"StopIdOutsideVocab",
     [](ArtifactSpec &s) {
       s.config.stop_ids = {5, 272};
     },
     "stop id 272 outside the vocabulary (0..271)"},
    {"RopeFreqFactorCount",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Rope)].fparams = {1e4f, 1, 2, 3, 4};
     },
     "4 rope freq_factors for head_dim 4 (expected 2, or 3 with a scale)"},
    {"RopeFreqFactorSign",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Rope)].fparams = {1e4f, 1, -1};
     },
     "rope freq_factors[1] -1 must be positive"},
    {"AttentionCacheIndex",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Attention)].iparams[0] = 5;
     },
     "kv cache index 5 out of range (1 caches)"},
    {"AttentionHeadsDisagreeWithCache",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Attention)].iparams = {0, 4, 4, 4};
     },
     "kv cache 0 holds 2 heads of 4, the dispatch uses 4 of 4"},
    {"AttentionGroupedHeads",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Attention)].iparams = {0, 3, 2, 4};
     },
     "invalid heads"},
    {"AttentionHugeHeads",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Attention)].iparams = {
           0, int64_t(1) << 40, 2, 4};
     },
     "invalid heads"},
    {"AttentionZeroWindow",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Attention)].iparams.push_back(0);
     },
     "sliding window 0 must be in 1..2147483647 positions"},
    {"AttentionHugeWindow",
     [](ArtifactSpec &s) {
       s.dispatches[find(s, fbs::Kernel::Attention)].iparams.push_back(
           int64_t(1) << 40);
     },
     "sliding window 1099511627776 must be in 1..2147483647 positions"},
    {"AttentionParamsAfterTheWindow",
     [](ArtifactSpec &s) {
       auto &ip = s.dispatches[find(s, fbs::Kernel::Attention)].iparams;
       ip.insert(ip.end(), {8, 1});
     },
     "has 6 integer parameters, expected 4..5"},
    {"BufferPastArena",
     [](ArtifactSpec &s) { s.buffers[1].offset = s.arena_bytes; },
     "buffer 1 (offset"},
    {"BufferHugeRows",
     [](ArtifactSpec &s) { s.buffers[1].row_elems = int64_t(1) << 62; },
     "does not fit the arena"},
    {"BufferEmptyRows", [](ArtifactSpec &s) { s.buffers[1].row_elems = 0; },
     "buffer 1 has row_elems 0"},
    {"KvCacheLongerThanModel",
     [](ArtifactSpec &s) { s.kv_caches[0].max_seq = 33; },
     "kv cache 0 has max_seq 33 (model max_seq is 32)"},
    {"KvCacheHuge",
     [](ArtifactSpec &s) { s.kv_caches[0].head_dim = int64_t(1) << 40; },
     "kv cache 0 has invalid dimensions"},
    {"TokenizerScores", [](ArtifactSpec &s) { s.tokenizer->scores.pop_back(); },
     "tokenizer has 271 scores for a vocabulary of 272"},
    {"TokenizerPieces", [](ArtifactSpec &s) { s.tokenizer->pieces.pop_back(); },
     "tokenizer has 272 piece offsets, expected 273"},
    {"NoForwardProgram", [](ArtifactSpec &s) { s.program_name = "prefill"; },
     "artifact has no program named 'forward'"},
    {"LogitsBufferOutOfRange", [](ArtifactSpec &s) { s.logits_buffer = 77; },
     "logits buffer 77 out of range"},
    {"LogitsBufferRows", [](ArtifactSpec &s) { s.logits_buffer = 0; },
     "expected the vocabulary size 272"},
    {"NothingWritesLogits", [](ArtifactSpec &s) { s.dispatches.pop_back(); },
     "no dispatch writes the logits buffer"},
    {"LogitsClassifierShape",
     [](ArtifactSpec &s) {
       s.dispatches.back().weights = {1}; // the attention norm
     },
     "expected [272, 16]"},
    {"VocabOutOfRange", [](ArtifactSpec &s) { s.config.vocab_size = 0; },
     "vocab_size 0 is out of range"},
    {"BosOutsideVocab", [](ArtifactSpec &s) { s.config.bos_id = 272; },
     "outside the vocabulary"},
    {"MaxTokensZero", [](ArtifactSpec &s) { s.max_tokens = 0; },
     "max_tokens 0 is out of range"},
    {"CudaTarget", [](ArtifactSpec &s) { s.target = "cuda-sm90"; },
     "compiled for target 'cuda-sm90'"},
};

INSTANTIATE_TEST_SUITE_P(Artifact, BadSpec, ::testing::ValuesIn(kBadCases),
                         [](const auto &info) { return info.param.name; });

TEST(Artifact, FusedAttentionChecks) {
  {
    ArtifactSpec spec = tinySpec(true);
    auto &d = spec.dispatches[find(spec, fbs::Kernel::FusedQkvAttention)];
    spec.buffers[d.scratch[1]].offset = spec.buffers[d.scratch[0]].offset;
    expectError(loadError(spec), "overlap in the arena");
  }
  {
    ArtifactSpec spec = tinySpec(true);
    auto &d = spec.dispatches[find(spec, fbs::Kernel::FusedQkvAttention)];
    std::swap(d.weights[0], d.weights[1]);
    expectError(loadError(spec), "weight Wqkv");
  }
  {
    ArtifactSpec spec = tinySpec(true);
    auto &d = spec.dispatches[find(spec, fbs::Kernel::FusedQkvAttention)];
    d.scratch.pop_back();
    expectError(loadError(spec), "has 1 scratch buffers, expected 2");
  }
}

} // namespace

// decodeToF32 (the CUDA backend's upload, and the f32 copies of tensors a
// kernel reads as f32) decodes every block type block by block, in
// parallel ranges: the same values as the format's decoder, in place.
TEST(Artifact, DecodeToF32DecodesEveryBlockType) {
  using loom::rt::WeightType;
  const std::pair<WeightType, loom::ggml::BlockType> types[] = {
      {WeightType::Q8_0, loom::ggml::BlockType::Q8_0},
      {WeightType::Q4_0, loom::ggml::BlockType::Q4_0},
      {WeightType::Q2_K, loom::ggml::BlockType::Q2_K},
      {WeightType::Q3_K, loom::ggml::BlockType::Q3_K},
      {WeightType::Q4_K, loom::ggml::BlockType::Q4_K},
      {WeightType::Q5_K, loom::ggml::BlockType::Q5_K},
      {WeightType::Q6_K, loom::ggml::BlockType::Q6_K}};
  uint32_t seed = 1;
  for (auto [dtype, block] : types) {
    SCOPED_TRACE(loom::rt::weightTypeName(dtype));
    const loom::ggml::BlockFormat f = loom::ggml::blockFormat(block);
    const int64_t rows = 300, cols = 512; // 600+ blocks: several ranges
    std::vector<uint8_t> raw(size_t(rows * cols / f.values * f.bytes));
    for (uint8_t &b : raw) {
      seed = seed * 1103515245u + 12345u;
      b = uint8_t(seed >> 16);
    }
    // Finite scales: every half field gets a small normal half.
    for (size_t at = 0; at < raw.size(); at += size_t(f.bytes))
      for (int64_t o = 0; o < f.bytes; o += 2)
        if ((raw[at + size_t(o) + 1] & 0x7c) == 0x7c)
          raw[at + size_t(o) + 1] &= 0x3f;
    loom::rt::TensorDesc t;
    t.name = "w";
    t.shape = {rows, cols};
    t.dtype = dtype;
    t.raw = raw.data();
    t.bytes = raw.size();
    std::vector<float> got(size_t(rows * cols)), want(got.size());
    loom::rt::decodeToF32(t, got.data());
    for (size_t b = 0; b < raw.size() / size_t(f.bytes); ++b)
      loom::ggml::decodeBlock(block, raw.data() + b * size_t(f.bytes),
                              want.data() + b * size_t(f.values));
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4));
  }
}
