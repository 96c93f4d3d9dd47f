// REFRAG chunk store (loom/chunk_store.h): round trip, bit-equality with
// the encoder programs, queries against --context-style prompts and the
// refrag-tiny golden, verification of damaged files (truncation, every
// flipped byte, crafted headers), refusal of stores made for another
// encoder, projector, decoder or chunk size, and atomic writes. Small random
// encoders need no ../shared; the golden tests skip with the reason printed
// without it.
#include "loom/artifact_format.h"
#include "loom/chunk_store.h"
#include "loom/error.h"
#include "loom/refrag.h"
#include "loom/runtime.h"
#include "support/artifact_builder.h"
#include "support/json.h"
#include "support/refrag_builder.h"
#include "support/shared.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <signal.h>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using loom::ChunkStore;
using loom::ChunkStoreHeader;
using loom::ChunkStorePassageEntry;
using loom::test::Json;
using loom::test::TempFile;

// ---- Helpers ---------------------------------------------------------------

// A fresh directory, removed with its contents.
class TempDir {
public:
  TempDir() {
    const char *dir = std::getenv("TMPDIR");
    std::string pattern =
        std::string(dir && *dir ? dir : "/tmp") + "/loom-chunks-XXXXXX";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    if (!::mkdtemp(name.data()))
      throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = name.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string &name) const {
    return path_ + "/" + name;
  }
  const std::string &path() const { return path_; }
  // The names in the directory, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto &e : fs::directory_iterator(path_))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

private:
  std::string path_;
};

std::vector<uint8_t> readBytes(const std::string &path) {
  return loom::test::readFileBytes(path);
}

void writeBytes(const std::string &path, const std::vector<uint8_t> &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out.flush())
    throw std::runtime_error("cannot write " + path);
}

// The message of the loom::Error f throws ("<none>" when it throws none).
std::string errorOf(const std::function<void()> &f) {
  try {
    f();
  } catch (const loom::Error &e) {
    return e.what();
  }
  return "<none>";
}

#define EXPECT_ERROR(stmt, expected)                                           \
  do {                                                                         \
    const std::string m_ = errorOf([&] { stmt; });                             \
    EXPECT_NE(m_.find(expected), std::string::npos)                            \
        << "message: " << m_ << "\nexpected to contain: " << (expected);       \
    EXPECT_EQ(m_.find('\n'), std::string::npos) << m_;                         \
  } while (0)

bool bitEqual(const float *a, const float *b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

// Opens, checks against the model and reads every passage: what a query
// relies on. Throws loom::Error on the first problem.
void openAndVerify(const std::string &path, const loom::Model &model) {
  ChunkStore s = ChunkStore::open(path);
  s.checkCompatible(model);
  s.verifyData();
}

// A REFRAG artifact on a random one-layer llama (vocab 272, 6 rows per
// step) and a random encoder with max_chunk_len 4 and encoder_dim 8.
struct RandomArtifact {
  std::unique_ptr<TempFile> file;
  std::shared_ptr<loom::Model> model;
};

struct RandomOptions {
  uint64_t encoder_seed = 7;
  bool perturb_projector = false;
  int64_t decoder_dim = 16;
  bool refrag = true;
  // loom-fuse-chunk-projector's form: rows of 16 + layer 0's q|k|v (32).
  bool fuse_projector = false;
  float norm_eps = 0.0f; // the decoder's RMSNorm eps; 0: the builder's
};

RandomArtifact randomArtifact(const RandomOptions &ro = {}) {
  loom::test::TinyLlamaOptions to;
  to.dim = ro.decoder_dim;
  loom::test::LlamaArtifactOptions lo;
  lo.max_tokens = 6;
  lo.fused = ro.fuse_projector;
  loom::test::LlamaWeights weights = loom::test::tinyLlamaWeights(to);
  if (ro.norm_eps > 0.0f)
    weights.norm_eps = ro.norm_eps;
  loom::test::ArtifactSpec spec = loom::test::llamaArtifact(
      weights, loom::test::syntheticTokenizer(272), lo);
  if (ro.refrag) {
    loom::test::RefragBundle b =
        loom::test::randomRefragBundle(272, ro.decoder_dim, ro.encoder_seed);
    if (ro.perturb_projector)
      for (float &w : b.tensors["projector.fc1.weight"].data)
        w *= 1.25f;
    loom::test::RefragArtifactOptions o;
    o.fuse_projector = ro.fuse_projector;
    loom::test::addRefragPrograms(spec, b, o);
  }
  RandomArtifact a;
  a.file = std::make_unique<TempFile>(spec.serialize());
  a.model = loom::Model::load(a.file->path());
  return a;
}

const RandomArtifact &defaultArtifact() {
  static RandomArtifact a = randomArtifact();
  return a;
}

const RandomArtifact &fusedArtifact() {
  static RandomArtifact a = [] {
    RandomOptions o;
    o.fuse_projector = true;
    return randomArtifact(o);
  }();
  return a;
}

// Passages of every shape: a few fixed ones (an empty one, one shorter than
// a chunk, exact multiples of k = 3) and random ones.
std::vector<std::vector<int32_t>> testPassages(size_t extra = 40) {
  std::vector<std::vector<int32_t>> p = {
      {5, 6, 7, 8, 9}, {}, {10}, {11, 12, 13, 14, 15, 16}, {20, 21, 22}};
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> len(0, 20), id(3, 271);
  for (size_t i = 0; i < extra; ++i) {
    std::vector<int32_t> q(static_cast<size_t>(len(rng)));
    for (int32_t &t : q)
      t = id(rng);
    p.push_back(std::move(q));
  }
  return p;
}

loom::ChunkStoreWriteOptions threadsOpt(int threads) {
  loom::ChunkStoreWriteOptions o;
  o.threads = threads;
  return o;
}

// ---- Round trip ------------------------------------------------------------

TEST(ChunkStore, RoundTripIsBitEqualToTheEncoderPrograms) {
  const RandomArtifact &a = defaultArtifact();
  const auto passages = testPassages();
  TempDir dir;
  const std::string path = dir / "corpus.chunks";
  ChunkStore::write(path, a.model, passages, 3, threadsOpt(2));
  EXPECT_EQ(dir.names(), std::vector<std::string>{"corpus.chunks"});

  ChunkStore store = ChunkStore::open(path);
  store.checkCompatible(*a.model);
  store.checkCompatible(*a.model, 3);
  const ChunkStoreHeader &h = store.header();
  EXPECT_EQ(std::memcmp(h.magic, "LOOMCHNK", 8), 0);
  EXPECT_EQ(h.format_version, loom::kChunkStoreVersion);
  EXPECT_EQ(h.header_size, 192u);
  EXPECT_EQ(store.fileSize(), fs::file_size(path));
  EXPECT_EQ(store.chunkSize(), 3u);
  EXPECT_EQ(store.encoderDim(), 8);
  EXPECT_EQ(store.projectedDim(), 16);
  EXPECT_EQ(store.encoderChecksum(), a.model->refrag()->encoder_checksum);
  EXPECT_EQ(store.projectorChecksum(), loom::chunkProjectorChecksum(*a.model));
  EXPECT_EQ(h.vocab_size, 272u);
  EXPECT_EQ(h.cls_token_id, a.model->refrag()->cls_token_id);
  EXPECT_EQ(h.table_offset % 64, 0u);
  EXPECT_EQ(h.tokens_offset % 64, 0u);
  EXPECT_EQ(h.embeddings_offset % 64, 0u);
  EXPECT_EQ(h.projected_offset % 64, 0u);
  ASSERT_EQ(store.passageCount(), passages.size());

  loom::Session session(a.model, {});
  size_t tokens = 0, chunks = 0;
  for (size_t i = 0; i < passages.size(); ++i) {
    SCOPED_TRACE("passage " + std::to_string(i));
    ChunkStore::Passage p = store.passage(i);
    ASSERT_EQ(p.n_tokens, passages[i].size());
    EXPECT_TRUE(std::equal(p.tokens, p.tokens + p.n_tokens,
                           passages[i].begin()));
    const auto split = passages[i].empty()
                           ? std::vector<std::vector<int32_t>>{}
                           : loom::splitChunks(passages[i], 3);
    ASSERT_EQ(p.n_chunks, split.size());
    std::vector<float> emb;
    for (const auto &c : split) {
      std::vector<float> e = session.encodeChunk(c.data(), c.size());
      emb.insert(emb.end(), e.begin(), e.end());
    }
    EXPECT_TRUE(bitEqual(p.embeddings, emb.data(), emb.size()));
    std::vector<float> proj = session.projectChunks(emb.data(), split.size());
    EXPECT_TRUE(bitEqual(p.projected, proj.data(), proj.size()));
    tokens += p.n_tokens;
    chunks += p.n_chunks;
  }
  EXPECT_EQ(store.tokenCount(), tokens);
  EXPECT_EQ(store.chunkCount(), chunks);
  store.verifyData();
  EXPECT_EQ(session.position(), 0);

  // The default chunk size is max_chunk_len.
  ChunkStore::write(path, a.model, passages, 0);
  EXPECT_EQ(ChunkStore::open(path).chunkSize(), 4u);
}

TEST(ChunkStore, ThreadCountDoesNotChangeTheBytes) {
  const RandomArtifact &a = defaultArtifact();
  const auto passages = testPassages(300);
  TempDir dir;
  ChunkStore::write(dir / "t1", a.model, passages, 3, threadsOpt(1));
  ChunkStore::write(dir / "t2", a.model, passages, 3, threadsOpt(2));
  ChunkStore::write(dir / "t0", a.model, passages, 3, threadsOpt(0));
  const auto t1 = readBytes(dir / "t1");
  EXPECT_EQ(t1, readBytes(dir / "t2"));
  EXPECT_EQ(t1, readBytes(dir / "t0"));
}

TEST(ChunkStore, ProgressIsMonotoneAndEnds) {
  const RandomArtifact &a = defaultArtifact();
  const auto passages = testPassages(300);
  TempDir dir;
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  loom::ChunkStoreWriteOptions o;
  o.threads = 2;
  o.progress = [&](uint64_t done, uint64_t total) {
    calls.push_back({done, total});
  };
  ChunkStore::write(dir / "c", a.model, passages, 3, o);
  const uint64_t total = ChunkStore::open(dir / "c").chunkCount();
  ASSERT_GE(calls.size(), 3u);
  EXPECT_EQ(calls.front(), std::make_pair(uint64_t(0), total));
  EXPECT_EQ(calls.back(), std::make_pair(total, total));
  for (size_t i = 1; i < calls.size(); ++i)
    EXPECT_GT(calls[i].first, calls[i - 1].first);
}

TEST(ChunkStore, EmptyCorpusAndEmptyPassages) {
  const RandomArtifact &a = defaultArtifact();
  TempDir dir;
  ChunkStore::write(dir / "none", a.model, {}, 2);
  ChunkStore none = ChunkStore::open(dir / "none");
  EXPECT_EQ(none.passageCount(), 0u);
  EXPECT_EQ(none.chunkCount(), 0u);
  EXPECT_ERROR(none.passage(0),
               "passage 0 is out of range (the chunk store has 0 passages)");

  ChunkStore::write(dir / "blank", a.model, {{}, {}, {}}, 2);
  ChunkStore blank = ChunkStore::open(dir / "blank");
  EXPECT_EQ(blank.passageCount(), 3u);
  EXPECT_EQ(blank.passage(1).n_chunks, 0u);
  loom::Session session(a.model, {});
  loom::ChunkStoreRequest req;
  req.passages = {0, 2};
  EXPECT_ERROR(loom::prepareRefrag(session, blank, req),
               "the selected passages are empty");
}

// ---- Queries ---------------------------------------------------------------

// The same context through --context (prepareRefrag on ids) and through the
// store (one passage) gives the same sequence, rows, scores and logits, with
// plain placeholder rows and with loom-fuse-chunk-projector's.
class ChunkStoreQuery : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Projector, ChunkStoreQuery, ::testing::Bool(),
                         [](const auto &info) {
                           return info.param ? "Fused" : "Plain";
                         });

TEST_P(ChunkStoreQuery, EqualsTheContextPath) {
  const RandomArtifact &a = GetParam() ? fusedArtifact() : defaultArtifact();
  const int64_t row_elems = GetParam() ? 16 + 32 : 16;
  ASSERT_EQ(a.model->refrag()->projected_dim, row_elems);
  const auto passages = testPassages();
  TempDir dir;
  ChunkStore::write(dir / "c", a.model, passages, 3, threadsOpt(2));
  ChunkStore store = ChunkStore::open(dir / "c");
  const std::vector<int32_t> question = {30, 31};
  for (size_t index : {size_t(0), size_t(3), size_t(7)}) {
    for (int mode = 0; mode < 3; ++mode) {
      SCOPED_TRACE("passage " + std::to_string(index) + " mode " +
                   std::to_string(mode));
      loom::Session s1(a.model, {}), s2(a.model, {});
      loom::RefragRequest r1;
      r1.context = passages[index];
      r1.question = question;
      r1.chunk_size = 3;
      loom::ChunkStoreRequest r2;
      r2.passages = {index};
      r2.question = question;
      if (mode == 1)
        r1.expand_fraction = r2.expand_fraction = 0.5;
      if (mode == 2)
        r1.expanded = r2.expanded = {1};
      loom::RefragPrompt p1 = loom::prepareRefrag(s1, r1);
      loom::RefragPrompt p2 = loom::prepareRefrag(s2, store, r2);
      EXPECT_EQ(p2.chunk_size, 3u);
      EXPECT_EQ(p1.chunks, p2.chunks);
      EXPECT_EQ(p1.expanded, p2.expanded);
      EXPECT_EQ(p1.sequence.tokens, p2.sequence.tokens);
      EXPECT_EQ(p1.sequence.chunk, p2.sequence.chunk);
      EXPECT_EQ(p1.chunk_embeddings, p2.chunk_embeddings);
      EXPECT_EQ(p1.projected, p2.projected);
      EXPECT_EQ(p1.scores, p2.scores);
      ASSERT_LE(p1.sequence.tokens.size(), 32u);
      EXPECT_EQ(p1.sequence.row_elems, row_elems);
      EXPECT_EQ(p2.sequence.row_elems, row_elems);
      EXPECT_EQ(p2.projected.size(), p2.chunks.size() * row_elems);
      loom::Logits l1 = s1.forward(
          p1.sequence.tokens.data(), p1.sequence.tokens.size(), true,
          p1.sequence.embeddings.data(), p1.sequence.row_elems);
      std::vector<float> v1(l1.data, l1.data + l1.rows * l1.vocab);
      loom::Logits l2 = s2.forward(
          p2.sequence.tokens.data(), p2.sequence.tokens.size(), true,
          p2.sequence.embeddings.data(), p2.sequence.row_elems);
      ASSERT_EQ(size_t(l2.rows * l2.vocab), v1.size());
      EXPECT_TRUE(bitEqual(l2.data, v1.data(), v1.size()));
    }
  }
}

// Several passages: concatenated in the given order, each chunked on its
// own (5 + 5 tokens with k = 3 are chunks of 3, 2, 3, 2, not 3, 3, 3, 1).
TEST(ChunkStore, PassagesAreChunkedSeparately) {
  const RandomArtifact &a = defaultArtifact();
  TempDir dir;
  const std::vector<std::vector<int32_t>> passages = {
      {5, 6, 7, 8, 9}, {40, 41, 42, 43, 44}, {}, {50, 51, 52}};
  ChunkStore::write(dir / "c", a.model, passages, 3);
  ChunkStore store = ChunkStore::open(dir / "c");
  loom::Session s(a.model, {});
  loom::ChunkStoreRequest req;
  req.passages = {1, 2, 0};
  req.question = {60};
  req.expanded = {1, 3};
  loom::RefragPrompt p = loom::prepareRefrag(s, store, req);
  const std::vector<std::vector<int32_t>> want_chunks = {
      {40, 41, 42}, {43, 44}, {5, 6, 7}, {8, 9}};
  EXPECT_EQ(p.chunks, want_chunks);
  const int32_t bos = a.model->config().bos_id;
  const std::vector<int32_t> want = {bos, 0, 43, 44, 0, 8, 9, 60};
  EXPECT_EQ(p.sequence.tokens, want);
  EXPECT_EQ(p.sequence.n_placeholders, 2u);
  // The placeholder rows are the stored rows of passage 1 chunk 0 and
  // passage 0 chunk 0.
  EXPECT_TRUE(bitEqual(p.sequence.embeddings[1], store.passage(1).projected,
                       16));
  EXPECT_TRUE(bitEqual(p.sequence.embeddings[4], store.passage(0).projected,
                       16));
}

TEST(ChunkStore, QueryErrors) {
  const RandomArtifact &a = defaultArtifact();
  TempDir dir;
  ChunkStore::write(dir / "c", a.model, testPassages(3), 3);
  ChunkStore store = ChunkStore::open(dir / "c");
  loom::Session s(a.model, {});
  loom::ChunkStoreRequest req;
  EXPECT_ERROR(loom::prepareRefrag(s, store, req), "no passages selected");
  req.passages = {8};
  EXPECT_ERROR(loom::prepareRefrag(s, store, req),
               "passage 8 is out of range (the chunk store has 8 passages, "
               "0..7)");
  req.passages = {0, 3, 0};
  EXPECT_ERROR(loom::prepareRefrag(s, store, req),
               "passage 0 is selected twice");
  req.passages = {0};
  req.expanded = {2};
  EXPECT_ERROR(loom::prepareRefrag(s, store, req),
               "expanded chunk 2 is out of range (the context has 2 chunks)");
  req.expand_fraction = 0.5;
  EXPECT_ERROR(loom::prepareRefrag(s, store, req),
               "give either the expanded chunks or an expand fraction");
  req.expanded.clear();
  req.expand_fraction = 1.5;
  EXPECT_ERROR(loom::prepareRefrag(s, store, req),
               "expand fraction 1.5 is outside [0, 1]");
}

TEST(ChunkStore, WriteErrors) {
  const RandomArtifact &a = defaultArtifact();
  TempDir dir;
  const std::string path = dir / "c";
  EXPECT_ERROR(ChunkStore::write(path, a.model, {{5}}, 5),
               "chunk size 5 is out of range (1..4, the encoder's "
               "max_chunk_len)");
  EXPECT_ERROR(ChunkStore::write(path, a.model, {{5}, {6, 272}}, 2),
               "passage 1: token id 272 is outside the vocabulary (0..271)");
  EXPECT_ERROR(ChunkStore::write(path, a.model, {{5}, {-1}}, 2),
               "passage 1: token id -1 is outside the vocabulary");
  EXPECT_ERROR(ChunkStore::write(path, a.model, {{5}}, 2, threadsOpt(-1)),
               "threads must be between 0 (all) and 1024, got -1");
  RandomOptions plain;
  plain.refrag = false;
  RandomArtifact llama = randomArtifact(plain);
  EXPECT_ERROR(ChunkStore::write(path, llama.model, {{5}}, 2),
               "this artifact has no chunk encoder (compile with loomc "
               "--format=refrag)");
  EXPECT_TRUE(dir.names().empty());
}

// ---- Compatibility ---------------------------------------------------------

TEST(ChunkStore, RefusesAnotherEncoderProjectorDecoderOrChunkSize) {
  const RandomArtifact &a = defaultArtifact();
  TempDir dir;
  const std::string path = dir / "c";
  ChunkStore::write(path, a.model, testPassages(3), 3);
  ChunkStore store = ChunkStore::open(path);

  RandomOptions other_encoder;
  other_encoder.encoder_seed = 8;
  RandomArtifact b = randomArtifact(other_encoder);
  char want[1024];
  std::snprintf(want, sizeof want,
                "chunk store '%s' was made for another encoder (checksum "
                "0x%016llx, this artifact's is 0x%016llx)",
                path.c_str(),
                (unsigned long long)a.model->refrag()->encoder_checksum,
                (unsigned long long)b.model->refrag()->encoder_checksum);
  EXPECT_ERROR(store.checkCompatible(*b.model), std::string(want));
  loom::Session sb(b.model, {});
  loom::ChunkStoreRequest req;
  req.passages = {0};
  EXPECT_ERROR(loom::prepareRefrag(sb, store, req),
               "was made for another encoder");

  // The same encoder (the builder's checksum is its token embedding's) with
  // another projector: the stored rows are stale.
  RandomOptions other_projector;
  other_projector.perturb_projector = true;
  RandomArtifact c = randomArtifact(other_projector);
  ASSERT_EQ(c.model->refrag()->encoder_checksum,
            a.model->refrag()->encoder_checksum);
  EXPECT_ERROR(store.checkCompatible(*c.model),
               "was made for another projector (checksum 0x");

  RandomOptions wide;
  wide.decoder_dim = 32;
  RandomArtifact d = randomArtifact(wide);
  ASSERT_EQ(d.model->refrag()->encoder_checksum,
            a.model->refrag()->encoder_checksum);
  EXPECT_ERROR(store.checkCompatible(*d.model),
               "chunk store '" + path +
                   "' holds placeholder rows of 16 floats, this artifact's "
                   "are 32 (model dim 32); encode the corpus again");

  // The same decoder and encoder compiled with loom-fuse-chunk-projector:
  // its rows carry layer 0's q|k|v, so this store's are too narrow.
  const RandomArtifact &f = fusedArtifact();
  EXPECT_ERROR(store.checkCompatible(*f.model),
               "chunk store '" + path +
                   "' holds placeholder rows of 16 floats, this artifact's "
                   "are 48 (model dim 16 + layer 0's q|k|v: "
                   "loom-fuse-chunk-projector); encode the corpus again "
                   "with this artifact");

  // Fused projectors that differ only in the RMSNorm's eps (its weights are
  // the same) make different rows: a store of one is refused by the other.
  {
    ChunkStore::write(dir / "fused", f.model, testPassages(3), 3);
    ChunkStore fused = ChunkStore::open(dir / "fused");
    fused.checkCompatible(*f.model, 3);
    RandomOptions eps;
    eps.fuse_projector = true;
    eps.norm_eps = 1e-3f;
    RandomArtifact e = randomArtifact(eps);
    EXPECT_ERROR(fused.checkCompatible(*e.model),
                 "was made for another projector (checksum 0x");
  }

  EXPECT_ERROR(store.checkCompatible(*a.model, 2),
               "chunk store '" + path + "' was made with chunk size 3, not 2");
  store.checkCompatible(*a.model, 3);
  store.checkCompatible(*a.model, 0);

  RandomOptions plain;
  plain.refrag = false;
  RandomArtifact llama = randomArtifact(plain);
  EXPECT_ERROR(store.checkCompatible(*llama.model),
               "this artifact has no chunk encoder");
}

// ---- Damaged files ---------------------------------------------------------

class ChunkStoreDamage : public ::testing::Test {
protected:
  void SetUp() override {
    ChunkStore::write(dir_ / "good", defaultArtifact().model, testPassages(3),
                      3);
    good_ = readBytes(dir_ / "good");
    h_ = ChunkStore::open(dir_ / "good").header();
  }
  // The message of opening + verifying `bytes` as a store.
  std::string errorFor(const std::vector<uint8_t> &bytes) {
    writeBytes(dir_ / "bad", bytes);
    return errorOf([&] {
      openAndVerify(dir_ / "bad", *defaultArtifact().model);
    });
  }
  // `bytes` with the header checksum recomputed (a consistent header).
  static void reseal(std::vector<uint8_t> &bytes) {
    ChunkStoreHeader h;
    std::memcpy(&h, bytes.data(), sizeof h);
    h.header_checksum =
        loom::loomChecksum64(&h, offsetof(ChunkStoreHeader, header_checksum));
    std::memcpy(bytes.data(), &h, sizeof h);
  }
  static void resealTable(std::vector<uint8_t> &bytes) {
    ChunkStoreHeader h;
    std::memcpy(&h, bytes.data(), sizeof h);
    h.table_checksum = loom::loomChecksum64(
        bytes.data() + h.table_offset,
        h.n_passages * sizeof(ChunkStorePassageEntry));
    std::memcpy(bytes.data(), &h, sizeof h);
    reseal(bytes);
  }
  TempDir dir_;
  std::vector<uint8_t> good_;
  ChunkStoreHeader h_;
};

TEST_F(ChunkStoreDamage, Truncated) {
  ASSERT_EQ(errorFor(good_), "<none>");
  EXPECT_NE(errorFor({}).find("is not a Loom chunk store (the file is empty)"),
            std::string::npos);
  const size_t size = good_.size();
  const size_t cuts[] = {1,
                         7,
                         8,
                         11,
                         12,
                         100,
                         191,
                         192,
                         h_.table_offset + 16,
                         h_.tokens_offset,
                         h_.tokens_offset + 5,
                         h_.embeddings_offset + 4,
                         h_.projected_offset,
                         h_.projected_offset + 64,
                         size - 4,
                         size - 1};
  for (size_t cut : cuts) {
    ASSERT_LT(cut, size);
    std::vector<uint8_t> bytes(good_.begin(), good_.begin() + cut);
    const std::string m = errorFor(bytes);
    SCOPED_TRACE("cut at " + std::to_string(cut) + ": " + m);
    EXPECT_NE(m.find("chunk store '" + (dir_ / "bad") + "' is truncated ("),
              std::string::npos);
    if (cut >= 192) {
      EXPECT_NE(m.find("(" + std::to_string(cut) + " of " +
                       std::to_string(size) + " bytes)"),
                std::string::npos);
    }
  }
  std::vector<uint8_t> longer = good_;
  longer.push_back(0);
  EXPECT_NE(errorFor(longer).find("is corrupt: " + std::to_string(size + 1) +
                                  " bytes, but the header says " +
                                  std::to_string(size)),
            std::string::npos);
}

// Every single flipped byte is caught: by the magic, the version, the
// header, table or passage checksums, or the zero padding.
TEST_F(ChunkStoreDamage, EveryFlippedByteIsCaught) {
  size_t caught = 0;
  for (size_t i = 0; i < good_.size(); ++i) {
    std::vector<uint8_t> bytes = good_;
    bytes[i] ^= 0x5A;
    const std::string m = errorFor(bytes);
    EXPECT_NE(m, "<none>") << "byte " << i << " flipped went unnoticed";
    const bool known = m.find("is corrupt: ") != std::string::npos ||
                       m.find("is not a Loom chunk store") != std::string::npos ||
                       m.find("has format version") != std::string::npos ||
                       m.find("is truncated") != std::string::npos;
    EXPECT_TRUE(known) << "byte " << i << ": " << m;
    caught += m != "<none>";
  }
  EXPECT_EQ(caught, good_.size());
  std::printf("[ flips    ] %zu of %zu flipped bytes caught\n", caught,
              good_.size());
}

TEST_F(ChunkStoreDamage, MessagesNameTheProblem) {
  const std::string bad = "chunk store '" + (dir_ / "bad") + "' ";
  std::vector<uint8_t> b = good_;
  std::memcpy(b.data(), "LOOMART\0", 8);
  EXPECT_NE(errorFor(b).find("'" + (dir_ / "bad") +
                             "' is not a Loom chunk store (no LOOMCHNK magic"),
            std::string::npos);

  b = good_;
  uint32_t version = 2;
  std::memcpy(b.data() + 8, &version, 4);
  reseal(b);
  EXPECT_NE(errorFor(b).find(bad + "has format version 2; this runtime reads "
                                   "version 1"),
            std::string::npos);

  b = good_;
  b[40] ^= 1; // chunk_size
  EXPECT_NE(errorFor(b).find(bad + "is corrupt: header checksum mismatch"),
            std::string::npos);

  // Consistent headers that lie.
  ChunkStoreHeader h = h_;
  auto with = [&](const std::function<void(ChunkStoreHeader &)> &edit) {
    std::vector<uint8_t> bytes = good_;
    ChunkStoreHeader x = h;
    edit(x);
    std::memcpy(bytes.data(), &x, sizeof x);
    reseal(bytes);
    return errorFor(bytes);
  };
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.n_chunks = uint64_t(1) << 62; })
                .find(bad + "is corrupt: the section offsets do not match"),
            std::string::npos);
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.projected_offset += 64; })
                .find("the section offsets do not match"),
            std::string::npos);
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.encoder_dim = 0; })
                .find("zero chunk size, width or vocabulary"),
            std::string::npos);
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.header_size = 256; })
                .find("header size 256, expected 192"),
            std::string::npos);
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.reserved[3] = 1; })
                .find("reserved header fields are not zero"),
            std::string::npos);
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.cls_token_id = 9999; })
                .find("CLS id 9999 is outside the vocabulary"),
            std::string::npos);
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.table_checksum ^= 1; })
                .find(bad + "is corrupt: passage table checksum mismatch"),
            std::string::npos);
  // Another encoder's checksum in an intact store: refused as such.
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.encoder_checksum ^= 1; })
                .find(bad + "was made for another encoder (checksum 0x"),
            std::string::npos);
  EXPECT_NE(with([](ChunkStoreHeader &x) { x.chunk_size = 2; })
                .find("table entry is inconsistent"),
            std::string::npos);

  // A table entry that does not follow its predecessors, table resealed.
  b = good_;
  ChunkStorePassageEntry e;
  std::memcpy(&e, b.data() + h.table_offset + 32, sizeof e);
  e.token_begin += 1;
  std::memcpy(b.data() + h.table_offset + 32, &e, sizeof e);
  resealTable(b);
  EXPECT_NE(errorFor(b).find(bad + "is corrupt: passage 1's table entry is "
                                   "inconsistent"),
            std::string::npos);

  // Data: a flipped float in passage 3's projections.
  b = good_;
  std::memcpy(&e, b.data() + h.table_offset + 3 * 32, sizeof e);
  b[h.projected_offset + e.chunk_begin * h.projected_dim * 4 + 5] ^= 0x10;
  EXPECT_NE(errorFor(b).find(bad + "is corrupt: passage 3's data does not "
                                   "match its checksum"),
            std::string::npos);
  // open() alone reads no passage data; the query does.
  writeBytes(dir_ / "bad", b);
  ChunkStore s = ChunkStore::open(dir_ / "bad");
  s.passage(0);
  EXPECT_ERROR(s.passage(3), "passage 3's data does not match its checksum");
  loom::Session session(defaultArtifact().model, {});
  loom::ChunkStoreRequest req;
  req.passages = {0, 3};
  EXPECT_ERROR(loom::prepareRefrag(session, s, req),
               "passage 3's data does not match its checksum");

  // A token id outside the vocabulary with a matching checksum.
  b = good_;
  std::memcpy(&e, b.data() + h.table_offset, sizeof e);
  int32_t id = 400;
  std::memcpy(b.data() + h.tokens_offset + 4, &id, 4);
  {
    ChunkStore ok = ChunkStore::open(dir_ / "good");
    ChunkStore::Passage p = ok.passage(0);
    std::vector<int32_t> ids(p.tokens, p.tokens + p.n_tokens);
    ids[1] = id;
    const uint64_t sums[3] = {
        loom::loomChecksum64(ids.data(), ids.size() * 4),
        loom::loomChecksum64(p.embeddings, p.n_chunks * 8 * 4),
        loom::loomChecksum64(p.projected, p.n_chunks * 16 * 4)};
    e.checksum = loom::loomChecksum64(sums, sizeof sums);
  }
  std::memcpy(b.data() + h.table_offset, &e, sizeof e);
  resealTable(b);
  EXPECT_NE(errorFor(b).find(bad + "is corrupt: passage 0 has token id 400, "
                                   "outside the vocabulary"),
            std::string::npos);
}

TEST(ChunkStore, OpenErrors) {
  TempDir dir;
  EXPECT_ERROR(ChunkStore::open(dir / "missing"),
               "cannot open chunk store '" + (dir / "missing") +
                   "': No such file or directory");
  EXPECT_ERROR(ChunkStore::open(dir.path()),
               "cannot open chunk store '" + dir.path() +
                   "': not a regular file");
  writeBytes(dir / "text", std::vector<uint8_t>(300, 'x'));
  EXPECT_ERROR(ChunkStore::open(dir / "text"),
               "is not a Loom chunk store (no LOOMCHNK magic");
  // An artifact is not a store.
  EXPECT_ERROR(ChunkStore::open(defaultArtifact().file->path()),
               "is not a Loom chunk store");
}

// ---- Atomic writes ---------------------------------------------------------

TEST(ChunkStore, AFailedWriteLeavesNothing) {
  const RandomArtifact &a = defaultArtifact();
  const auto passages = testPassages(300);
  TempDir dir;
  const std::string path = dir / "c.chunks";

  // Interrupted midway (the progress callback throws after a few batches):
  // no store, no temporary file.
  int calls = 0;
  loom::ChunkStoreWriteOptions o;
  o.threads = 2;
  o.progress = [&](uint64_t, uint64_t) {
    if (++calls == 3)
      throw std::runtime_error("stop");
  };
  EXPECT_THROW(ChunkStore::write(path, a.model, passages, 3, o),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_TRUE(dir.names().empty());

  // An existing store is left as it was.
  ChunkStore::write(path, a.model, {{5, 6}}, 2);
  const auto before = readBytes(path);
  calls = 0;
  EXPECT_THROW(ChunkStore::write(path, a.model, passages, 3, o),
               std::runtime_error);
  EXPECT_EQ(readBytes(path), before);
  EXPECT_EQ(dir.names(), std::vector<std::string>{"c.chunks"});

  // No such directory.
  EXPECT_ERROR(ChunkStore::write(dir / "no/such/dir.chunks", a.model,
                                 passages, 3),
               "cannot write chunk store '" + (dir / "no/such/dir.chunks") +
                   ".tmp': No such file or directory");

  // The destination is a directory: the rename fails at the very end.
  fs::create_directory(dir / "taken");
  EXPECT_ERROR(ChunkStore::write(dir / "taken", a.model, passages, 3),
               "cannot write chunk store '" + (dir / "taken") +
                   "': rename from '" + (dir / "taken") + ".tmp'");
  EXPECT_TRUE(fs::is_directory(dir / "taken"));
  EXPECT_EQ(dir.names(), (std::vector<std::string>{"c.chunks", "taken"}));

  // The file system refuses the size (RLIMIT_FSIZE; SIGXFSZ ignored).
  struct rlimit old;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  struct rlimit small = old;
  small.rlim_cur = 1000;
  void (*old_handler)(int) = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string m =
      errorOf([&] { ChunkStore::write(dir / "big", a.model, passages, 3); });
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_NE(m.find("cannot write chunk store '" + (dir / "big") + ".tmp': "),
            std::string::npos)
      << m;
  EXPECT_EQ(dir.names(), (std::vector<std::string>{"c.chunks", "taken"}));
}

// ---- The refrag-tiny golden ------------------------------------------------

const char *kGolden = "golden/refrag-tiny";

std::string golden(const std::string &rel) {
  return loom::test::sharedPath(std::string(kGolden) + "/" + rel);
}

std::vector<float> readFloats(const std::string &path) {
  std::vector<uint8_t> bytes = readBytes(path);
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

#define REQUIRE_GOLDEN()                                                       \
  LOOM_REQUIRE_SHARED(std::string(kGolden) + "/refrag_tiny.safetensors")

struct GoldenModel {
  std::unique_ptr<TempFile> file;
  std::shared_ptr<loom::Model> model;
};

const GoldenModel &goldenModel() {
  static GoldenModel g = [] {
    GoldenModel m;
    m.file = std::make_unique<TempFile>(
        loom::test::refragTinyArtifact(
            loom::test::sourceDir() + "/models/stories260K.bin",
            loom::test::sourceDir() + "/models/tok512.bin",
            golden("refrag_tiny.safetensors"))
            .serialize());
    m.model = loom::Model::load(m.file->path());
    return m;
  }();
  return g;
}

void expectClose(const float *a, const std::vector<float> &b,
                 const std::string &what) {
  double worst = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    worst = std::max(worst, d);
    EXPECT_LE(d, 1e-4 + 1e-4 * std::fabs(double(b[i]))) << what << " [" << i
                                                        << "]";
  }
  std::printf("[ diff     ] %s max |diff| %.3g\n", what.c_str(), worst);
}

// The golden context as passage 0 (tokenized like --context) with k = 8
// and the policy at p = 0.25: the golden rows, expanded chunks and greedy
// ids; then the same context split into two passages on a chunk boundary.
TEST(ChunkStoreGolden, PolicyCaseThroughTheStore) {
  REQUIRE_GOLDEN();
  const GoldenModel &g = goldenModel();
  const Json in = Json::parseFile(golden("inputs.json"));
  const std::vector<int32_t> context = g.model->tokenizer().encode(
      in["context_text"].asString(), false, false);
  ASSERT_EQ(context, ids(in["context_ids"]));
  const std::vector<int32_t> question = ids(in["question_ids"]);
  const Json c = Json::parseFile(golden("k8/policy_p0.25/case.json"));

  TempDir dir;
  const std::vector<int32_t> first(context.begin(), context.begin() + 32),
      rest(context.begin() + 32, context.end());
  ChunkStore::write(dir / "g", g.model, {context, first, rest}, 8,
                    threadsOpt(2));
  ChunkStore store = ChunkStore::open(dir / "g");
  store.checkCompatible(*g.model, 8);
  ChunkStore::Passage p = store.passage(0);
  ASSERT_EQ(p.n_chunks, 8u);
  expectClose(p.embeddings, readFloats(golden("k8/chunk_emb.bin")),
              "k8 stored chunk_emb");
  expectClose(p.projected, readFloats(golden("k8/chunk_proj.bin")),
              "k8 stored chunk_proj");

  for (const std::vector<size_t> &sel :
       {std::vector<size_t>{0}, std::vector<size_t>{1, 2}}) {
    SCOPED_TRACE(sel.size() == 1 ? "one passage" : "two passages");
    loom::Session s(g.model, {});
    loom::ChunkStoreRequest req;
    req.passages = sel;
    req.question = question;
    req.expand_fraction = 0.25;
    loom::RefragPrompt rp = loom::prepareRefrag(s, store, req);
    std::vector<size_t> want_expanded;
    for (int64_t v : c["expanded_chunks"].asIntVector())
      want_expanded.push_back(static_cast<size_t>(v));
    EXPECT_EQ(rp.expanded, want_expanded);
    ASSERT_EQ(int64_t(rp.sequence.tokens.size()),
              c["n_decoder_positions"].asInt());

    // The --context path, for bit-equal logits.
    loom::Session s2(g.model, {});
    loom::RefragRequest r2;
    r2.context = context;
    r2.question = question;
    r2.chunk_size = 8;
    r2.expand_fraction = 0.25;
    loom::RefragPrompt cp = loom::prepareRefrag(s2, r2);
    EXPECT_EQ(cp.sequence.tokens, rp.sequence.tokens);
    EXPECT_EQ(cp.projected, rp.projected);

    loom::Logits l = s.forward(rp.sequence.tokens.data(),
                               rp.sequence.tokens.size(), false,
                               rp.sequence.embeddings.data());
    loom::Logits l2 = s2.forward(cp.sequence.tokens.data(),
                                 cp.sequence.tokens.size(), false,
                                 cp.sequence.embeddings.data());
    EXPECT_TRUE(bitEqual(l.last(), l2.last(), size_t(l.vocab)));
    std::vector<int32_t> generated;
    for (int i = 0; i < 16; ++i) {
      const float *row = l.last();
      int32_t next =
          static_cast<int32_t>(std::max_element(row, row + l.vocab) - row);
      generated.push_back(next);
      l = s.forward(&next, 1);
    }
    EXPECT_EQ(generated, ids(c["generated_ids"]));
  }
}

// Encoding speed (informational): the golden context as 2000 passages.
TEST(ChunkStoreGolden, EncodingTime) {
  REQUIRE_GOLDEN();
  const GoldenModel &g = goldenModel();
  const Json in = Json::parseFile(golden("inputs.json"));
  const std::vector<std::vector<int32_t>> passages(2000, ids(in["context_ids"]));
  TempDir dir;
  std::vector<uint8_t> first;
  for (int threads : {1, 2}) {
    double best = 1e300;
    for (int r = 0; r < 3; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      ChunkStore::write(dir / "c", g.model, passages, 8, threadsOpt(threads));
      best = std::min(best, std::chrono::duration<double>(
                                std::chrono::steady_clock::now() - t0)
                                .count());
    }
    std::printf("[ timing   ] 2000 passages, 16000 chunks of 8: %.3f s at %d "
                "thread(s) (%.0f chunks/s)\n",
                best, threads, 16000 / best);
    if (first.empty())
      first = readBytes(dir / "c");
    else
      EXPECT_EQ(readBytes(dir / "c"), first);
  }
}

} // namespace
