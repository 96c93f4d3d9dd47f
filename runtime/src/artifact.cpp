// Artifact loading and verification. An artifact is untrusted input: every
// offset, size, index, shape and parameter the executor will use is checked
// here, so a corrupt or hostile file ends in a loom::Error, never in an
// out-of-bounds access. Arithmetic on file values is overflow-checked.
#include "artifact.h"

#include "loom/artifact_format.h"
#include "loom/loom_artifact_generated.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace loom {
namespace rt {

namespace fbs = loom::artifact;

const char *kernelName(Kernel kernel) { return fbs::EnumNameKernel(kernel); }

// The public ExitCriterion mirrors the schema's, value for value.
static_assert(
    int(ExitCriterion::None) == int(fbs::ExitCriterion::None) &&
        int(ExitCriterion::Kl) == int(fbs::ExitCriterion::Kl) &&
        int(ExitCriterion::MinpKl) == int(fbs::ExitCriterion::MinpKl) &&
        int(ExitCriterion::EntropyDiff) ==
            int(fbs::ExitCriterion::EntropyDiff) &&
        int(ExitCriterion::LatentDiff) == int(fbs::ExitCriterion::LatentDiff) &&
        int(ExitCriterion::Cosine) == int(fbs::ExitCriterion::Cosine) &&
        int(ExitCriterion::ArgmaxStability) ==
            int(fbs::ExitCriterion::ArgmaxStability) &&
        fbs::ExitCriterion::MAX == fbs::ExitCriterion::ArgmaxStability,
    "ExitCriterion (runtime.h) and the schema's differ");

MappedFile::MappedFile(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw Error("cannot open artifact '" + path + "': " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error("cannot open artifact '" + path + "': " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("cannot open artifact '" + path + "': not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  // mmap rejects empty mappings; an empty file is reported as truncated by
  // the header check.
  if (size_ > 0) {
    void *p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error("cannot map artifact '" + path + "': " + std::strerror(err));
    }
    data_ = static_cast<const uint8_t *>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_)
    ::munmap(const_cast<uint8_t *>(data_), size_);
}

namespace {

template <typename... Args> std::string cat(const Args &...args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename... Args> [[noreturn]] void fail(const Args &...args) {
  throw Error(cat(args...));
}

// Strings from the file end up in one-line error messages: keep them short
// and free of control characters.
std::string printable(const flatbuffers::String *s) {
  if (!s)
    return "";
  std::string out;
  size_t n = std::min<size_t>(s->size(), 64);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s->c_str()[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  if (s->size() > n)
    out += "...";
  return out;
}

std::string str(const flatbuffers::String *s) {
  return s ? std::string(s->c_str(), s->size()) : std::string();
}

std::string shapeStr(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// a + b <= limit without wrapping.
bool fitsWithin(uint64_t a, uint64_t b, uint64_t limit) {
  return a <= limit && b <= limit - a;
}

// Bound on head counts and head sizes; keeps every product of two or three
// of them far from int64 overflow.
constexpr int64_t kMaxHeadParam = int64_t(1) << 20;
// A rope's freq_factors: head_dim / 2 of them (head_dim up to 4096).
constexpr size_t kMaxFreqFactors = 2048;
// Rows per step the arena may be planned for.
constexpr int64_t kMaxTokensPerStep = int64_t(1) << 20;
// Chat templates are a few KB (the largest published ones ~100 KB).
constexpr size_t kMaxChatTemplateBytes = size_t(1) << 20;

// The flatbuffers verifier checks the alignment of a vector's length but
// not of its elements, so a corrupt file can misalign 8-byte elements;
// reading those would be undefined behaviour. (Empty vectors may sit
// anywhere: the builder does not align what it never reads.)
template <typename V> void checkAligned(const V *v, size_t align) {
  if (v && v->size() > 0 && reinterpret_cast<uintptr_t>(v->Data()) % align != 0)
    fail("flatbuffer has a misaligned vector (artifact is corrupt)");
}

template <typename T> std::vector<T> toVector(const flatbuffers::Vector<T> *v) {
  checkAligned(v, alignof(T));
  return v ? std::vector<T>(v->begin(), v->end()) : std::vector<T>();
}

struct SemanticChecker {
  const fbs::Model &m;
  ModelData &out;
  const uint8_t *weights; // start of the weights section
  uint64_t weights_size;

  void config();
  void tokenizer();
  void tensors();
  void buffers();
  void kvCaches();
  void programs();
  void refrag();
  void placeholderQkv(const RefragDesc &r);
  DispatchDesc dispatch(const fbs::Dispatch &d, const std::string &where);
  LoopDesc loop(const fbs::Loop &l, const ProgramDesc &p,
                const std::string &where);
  bool overlap(uint32_t x, uint32_t y) const;
};

// Whether two buffers' arena ranges (max_tokens rows each) intersect.
bool SemanticChecker::overlap(uint32_t x, uint32_t y) const {
  const uint64_t n = static_cast<uint64_t>(out.max_tokens) * sizeof(float);
  const BufferDesc &a = out.buffers[x], &b = out.buffers[y];
  return a.offset < b.offset + b.row_elems * n &&
         b.offset < a.offset + a.row_elems * n;
}

// The kv cache an attention dispatch uses, or -1 for other kernels.
int64_t attentionCache(const DispatchDesc &d) {
  return d.kernel == Kernel::Attention || d.kernel == Kernel::FusedQkvAttention
             ? d.iparams[0]
             : -1;
}

void SemanticChecker::config() {
  const fbs::ModelConfig &c = *m.config();
  ModelConfigInfo &info = out.config;
  info.architecture = str(c.architecture());
  info.dim = c.dim();
  info.hidden_dim = c.hidden_dim();
  info.n_layers = c.n_layers();
  info.n_heads = c.n_heads();
  info.n_kv_heads = c.n_kv_heads();
  info.head_dim = c.head_dim();
  info.vocab_size = c.vocab_size();
  info.max_seq = c.max_seq();
  info.rope_theta = c.rope_theta();
  info.norm_eps = c.norm_eps();
  info.bos_id = c.bos_id();
  info.eos_id = c.eos_id();
  if (c.stop_ids())
    info.stop_ids.assign(c.stop_ids()->begin(), c.stop_ids()->end());
  if (info.vocab_size < 1 ||
      info.vocab_size > std::numeric_limits<int32_t>::max())
    fail("model config: vocab_size ", info.vocab_size, " is out of range");
  if (info.max_seq < 1 || info.max_seq > std::numeric_limits<int32_t>::max())
    fail("model config: max_seq ", info.max_seq, " is out of range");
  for (int64_t v : {info.dim, info.hidden_dim, info.n_layers, info.n_heads,
                    info.n_kv_heads, info.head_dim})
    if (v < 0)
      fail("model config: negative dimension ", v);
  // A negative id means the model has no such token.
  if (info.bos_id >= info.vocab_size || info.eos_id >= info.vocab_size)
    fail("model config: bos_id ", info.bos_id, " / eos_id ", info.eos_id,
         " outside the vocabulary (0..", info.vocab_size - 1,
         ", or negative for none)");
  for (int32_t id : info.stop_ids)
    if (id < 0 || id >= info.vocab_size)
      fail("model config: stop id ", id, " outside the vocabulary (0..",
           info.vocab_size - 1, ")");
  if (m.max_tokens() < 1 || m.max_tokens() > kMaxTokensPerStep)
    fail("max_tokens ", m.max_tokens(), " is out of range (1..",
         kMaxTokensPerStep, ")");
  out.max_tokens = m.max_tokens();
  out.arena_bytes = m.arena_bytes();
}

void SemanticChecker::tokenizer() {
  const fbs::TokenizerDef *t = m.tokenizer();
  if (!t)
    return; // a model compiled without one: token ids only
  const int64_t vocab = out.config.vocab_size;
  const auto &offsets = *t->piece_offsets();
  const auto &bytes = *t->piece_bytes();
  const fbs::ByteLevelBpeDef *bl = t->byte_level();
  if (bl && t->scores()->size() != 0)
    fail("tokenizer has ", t->scores()->size(),
         " scores; a byte-level vocabulary has none");
  if (!bl && static_cast<int64_t>(t->scores()->size()) != vocab)
    fail("tokenizer has ", t->scores()->size(), " scores for a vocabulary of ",
         vocab);
  if (static_cast<int64_t>(offsets.size()) != vocab + 1)
    fail("tokenizer has ", offsets.size(), " piece offsets, expected ",
         vocab + 1, " (vocabulary ", vocab, " + 1)");
  std::vector<std::string> pieces(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) {
    uint32_t b = offsets[i], e = offsets[i + 1];
    if (b > e || e > bytes.size())
      fail("tokenizer piece ", i, " spans bytes [", b, ", ", e,
           ") outside the ", bytes.size(), " piece bytes");
    pieces[i].assign(reinterpret_cast<const char *>(bytes.data()) + b, e - b);
  }
  std::optional<ByteLevelBpe> bpe;
  if (bl) {
    bpe.emplace();
    // The schema's enum numbers the runtime's (ArtifactWriter asserts it).
    if (bl->pre_tokenizer() > fbs::PreTokenizer::MAX)
      fail("tokenizer has an unknown pre-tokenizer ",
           static_cast<int>(bl->pre_tokenizer()),
           " (written by a newer Loom?)");
    bpe->pre = static_cast<PreTokenizer>(bl->pre_tokenizer());
    const auto &merges = *bl->merges();
    if (merges.size() % 2 != 0)
      fail("tokenizer has ", merges.size(),
           " merge ids, not (left, right) pairs");
    bpe->merges.reserve(merges.size() / 2);
    for (size_t i = 0; i < merges.size(); i += 2)
      bpe->merges.emplace_back(merges[i], merges[i + 1]);
    bpe->control.assign(bl->control_ids()->begin(), bl->control_ids()->end());
    bpe->ignore_merges = bl->ignore_merges();
    bpe->add_bos = bl->add_bos();
    bpe->nfc = bl->nfc();
    bpe->bos_id = out.config.bos_id;
    bpe->eos_id = out.config.eos_id;
  }
  SpecialTokens special;
  for (auto [list, dst] : {std::pair{t->special_ids(), &special.ids},
                           std::pair{t->lstrip_ids(), &special.lstrip},
                           std::pair{t->rstrip_ids(), &special.rstrip}})
    if (list)
      dst->assign(list->begin(), list->end());
  special.prefix_after_special = t->prefix_after_special();
  try {
    if (bpe) {
      out.tokenizer = std::make_unique<Tokenizer>(
          std::move(pieces), std::move(*bpe), std::move(special));
    } else {
      std::vector<float> scores(t->scores()->begin(), t->scores()->end());
      out.tokenizer = std::make_unique<Tokenizer>(
          std::move(pieces), std::move(scores), t->max_token_length(),
          std::move(special));
    }
  } catch (const Error &e) {
    fail("artifact tokenizer: ", e.what());
  }
  if (const fbs::ChatTemplateDef *chat = t->chat_template()) {
    // Parsed when a conversation is rendered (loom-run --chat): a template
    // Loom cannot render leaves the rest of the model usable.
    const flatbuffers::String *source = chat->source();
    if (source->size() > kMaxChatTemplateBytes)
      fail("tokenizer's chat template has ", source->size(),
           " bytes, more than the ", kMaxChatTemplateBytes, " Loom reads");
    ChatTemplateInfo &info = out.chat_template;
    info.source.assign(source->data(), source->size());
    const Tokenizer &tok = *out.tokenizer;
    auto piece = [&](int64_t id) {
      return id >= 0 && id < tok.vocabSize() ? tok.piece(int32_t(id))
                                             : std::string();
    };
    info.bos_token =
        chat->bos_token() ? chat->bos_token()->str() : piece(out.config.bos_id);
    info.eos_token =
        chat->eos_token() ? chat->eos_token()->str() : piece(out.config.eos_id);
    for (const std::string *s : {&info.bos_token, &info.eos_token})
      if (s->size() > kMaxChatTemplateBytes)
        fail("tokenizer's chat template names a bos/eos token of ", s->size(),
             " bytes");
  }
}

void SemanticChecker::tensors() {
  const auto &ts = *m.tensors();
  out.tensors.resize(ts.size());
  for (uint32_t i = 0; i < ts.size(); ++i) {
    const fbs::Tensor &t = *ts.Get(i);
    TensorDesc &d = out.tensors[i];
    d.name = printable(t.name());
    const auto dt = static_cast<uint8_t>(t.dtype());
    if (dt > static_cast<uint8_t>(fbs::DType::MAX))
      fail("tensor '", d.name, "' has unknown dtype ", static_cast<int>(dt),
           "; this runtime supports F32, BF16, F16, Q8_0, Q4_0 and Q2_K to "
           "Q6_K");
    // The schema's DType and WeightType list the types in the same order.
    d.dtype = static_cast<WeightType>(dt);
    const char *dtype_name = weightTypeName(d.dtype);
    d.shape = toVector(t.shape());
    if (d.shape.empty())
      fail("tensor '", d.name, "' has no shape");
    uint64_t elems = 1;
    for (int64_t dim : d.shape)
      if (dim < 1 ||
          __builtin_mul_overflow(elems, static_cast<uint64_t>(dim), &elems))
        fail("tensor '", d.name, "' has an invalid shape ", shapeStr(d.shape));
    // Bytes per element, or for the block types per block.
    uint64_t unit_bytes =
                 d.dtype == WeightType::BF16 || d.dtype == WeightType::F16 ? 2
                                                                           : 4,
             units = elems;
    if (ggml::BlockType block; blockTypeOf(d.dtype, block)) {
      const ggml::BlockFormat f = ggml::blockFormat(block);
      if (d.shape.size() != 2 || d.shape[1] % f.values != 0)
        fail(dtype_name, " tensor '", d.name, "' has shape ", shapeStr(d.shape),
             "; ", dtype_name,
             " needs a matrix whose rows are whole blocks of ", f.values);
      unit_bytes = uint64_t(f.bytes);
      units = elems / uint64_t(f.values);
    }
    uint64_t expect;
    if (__builtin_mul_overflow(units, unit_bytes, &expect) ||
        t.size() != expect)
      fail("tensor '", d.name, "' has size ", t.size(), " bytes but shape ",
           shapeStr(d.shape), " of ", dtype_name, " needs ", units, " x ",
           unit_bytes);
    if (t.offset() % kWeightAlignment != 0)
      fail("tensor '", d.name, "' offset ", t.offset(),
           " is not a multiple of ", kWeightAlignment);
    if (!fitsWithin(t.offset(), t.size(), weights_size))
      fail("tensor '", d.name, "' [", t.offset(), ", +", t.size(),
           ") lies outside the weights section of ", weights_size, " bytes");
    d.raw = weights + t.offset();
    d.bytes = t.size();
    // A tensor stored other than as f32 and read as f32 gets its f32 view from
    // ModelData::ensureF32().
    d.data = d.dtype == WeightType::F32 ? static_cast<const float *>(d.raw)
                                        : nullptr;
    if (!fitsWithin(out.weight_bytes, d.bytes,
                    std::numeric_limits<uint64_t>::max()))
      fail("tensor sizes overflow");
    out.weight_bytes += d.bytes;
  }
  // One pass over every weight byte: checked in parallel, reported for the
  // lowest failing index so the message does not depend on scheduling.
  std::atomic<size_t> first_bad{ts.size()};
  tbb::parallel_for(size_t(0), size_t(ts.size()), [&](size_t i) {
    const fbs::Tensor &t = *ts.Get(static_cast<uint32_t>(i));
    if (loomChecksum64(out.tensors[i].raw, out.tensors[i].bytes) !=
        t.checksum()) {
      size_t cur = first_bad.load();
      while (i < cur && !first_bad.compare_exchange_weak(cur, i)) {
      }
    }
  });
  if (first_bad.load() < ts.size())
    fail("tensor '", out.tensors[first_bad.load()].name,
         "' checksum mismatch (artifact is corrupt)");
}

// bf16 is the top half of an f32: widening is exact.
inline float bf16ToFloat(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}


void SemanticChecker::buffers() {
  const auto &bs = *m.buffers();
  checkAligned(&bs, alignof(fbs::Buffer));
  out.buffers.resize(bs.size());
  for (uint32_t i = 0; i < bs.size(); ++i) {
    const fbs::Buffer &b = *bs.Get(i);
    if (b.row_elems() < 1)
      fail("buffer ", i, " has row_elems ", b.row_elems());
    if (b.offset() % sizeof(float) != 0)
      fail("buffer ", i, " offset ", b.offset(), " is not 4-byte aligned");
    uint64_t bytes;
    if (__builtin_mul_overflow(
            static_cast<uint64_t>(b.row_elems()),
            static_cast<uint64_t>(out.max_tokens) * sizeof(float), &bytes) ||
        !fitsWithin(b.offset(), bytes, out.arena_bytes))
      fail("buffer ", i, " (offset ", b.offset(), ", ", out.max_tokens,
           " rows of ", b.row_elems(), " floats) does not fit the arena of ",
           out.arena_bytes, " bytes");
    out.buffers[i] = {b.offset(), b.row_elems()};
  }
}

void SemanticChecker::kvCaches() {
  const auto &cs = *m.kv_caches();
  out.context_length = out.config.max_seq;
  int64_t first_loop = -1; // index of the first loop cache
  for (uint32_t i = 0; i < cs.size(); ++i) {
    const fbs::KvCache &c = *cs.Get(i);
    if (c.loop_layer() < -1)
      fail("kv cache ", i, " has loop_layer ", c.loop_layer(),
           " (-1 for an ordinary cache, or a core layer >= 0)");
    if (c.max_seq() < 1 || c.max_seq() > out.config.max_seq)
      fail("kv cache ", i, " has max_seq ", c.max_seq(), " (model max_seq is ",
           out.config.max_seq, ")");
    if (c.kv_heads() < 1 || c.kv_heads() > kMaxHeadParam || c.head_dim() < 1 ||
        c.head_dim() > kMaxHeadParam)
      fail("kv cache ", i, " has invalid dimensions: ", c.kv_heads(),
           " heads of ", c.head_dim());
    uint64_t bytes;
    if (__builtin_mul_overflow(
            static_cast<uint64_t>(c.max_seq()),
            static_cast<uint64_t>(c.kv_heads() * c.head_dim()) * 2 *
                sizeof(float),
            &bytes) ||
        !fitsWithin(out.kv_bytes, bytes, std::numeric_limits<uint64_t>::max()))
      fail("kv cache ", i, " size overflows");
    out.kv_caches.push_back(
        {c.layer(), c.max_seq(), c.kv_heads(), c.head_dim(), c.loop_layer()});
    out.context_length = std::min(out.context_length, c.max_seq());
    if (c.loop_layer() < 0) {
      out.kv_bytes += bytes;
      continue;
    }
    // A compressing KV policy stores several core layers in one cache, so
    // all of them must have one shape.
    const KvCacheDesc &d = out.kv_caches.back();
    if (first_loop < 0)
      first_loop = i;
    const KvCacheDesc &f = out.kv_caches[first_loop];
    if (d.max_seq != f.max_seq || d.kv_heads != f.kv_heads ||
        d.head_dim != f.head_dim)
      fail("kv cache ", i, " (loop layer ", d.loop_layer, ") has shape ",
           d.max_seq, " x ", d.kv_heads, " x ", d.head_dim,
           "; every loop cache must have the shape of the first, ", f.max_seq,
           " x ", f.kv_heads, " x ", f.head_dim);
    out.loop_kv_bytes = bytes;
  }
}

// Checks one dispatch against its kernel's contract (see the schema) and
// returns it with weights resolved. `where` prefixes every message.
DispatchDesc SemanticChecker::dispatch(const fbs::Dispatch &d,
                                       const std::string &where) {
  DispatchDesc r;
  uint16_t k = static_cast<uint16_t>(d.kernel());
  if (k > static_cast<uint16_t>(Kernel::MAX))
    fail(where, ": unknown kernel ", k);
  r.kernel = static_cast<Kernel>(k);
  r.name = d.name() && d.name()->size() ? str(d.name()) : kernelName(r.kernel);
  r.inputs = toVector(d.inputs());
  r.outputs = toVector(d.outputs());
  r.scratch = toVector(d.scratch());
  r.iparams = toVector(d.iparams());
  r.fparams = toVector(d.fparams());
  std::vector<uint32_t> weight_ids = toVector(d.weights());
  // Name the op the dispatch came from and its source location, so an
  // error points back at the model.
  const std::string at =
      cat(where, " (", kernelName(r.kernel), " '", printable(d.name()), "'",
          d.loc() && d.loc()->size() ? cat(" from ", printable(d.loc()))
                                     : std::string(),
          ")");

  for (const auto *list : {&r.inputs, &r.outputs, &r.scratch})
    for (uint32_t b : *list)
      if (b >= out.buffers.size())
        fail(at, ": buffer index ", b, " out of range (", out.buffers.size(),
             " buffers)");
  for (uint32_t w : weight_ids) {
    if (w >= out.tensors.size())
      fail(at, ": weight index ", w, " out of range (", out.tensors.size(),
           " tensors)");
  }
  r.weight_ids = weight_ids;

  // Arity: {inputs min, max}, outputs, scratch, {weights min, max},
  // {iparams min, max}, {fparams min, max}.
  struct Arity {
    size_t in_min, in_max, outs, scratch, w_min, w_max, ip_min, ip_max, fp_min,
        fp_max;
  };
  static constexpr Arity kArity[] = {
      /*Embed*/ {0, 0, 1, 0, 1, 1, 0, 0, 0, 1},
      /*RmsNorm*/ {1, 1, 1, 0, 1, 1, 0, 0, 1, 1},
      /*MatMul*/ {1, 1, 1, 0, 1, 2, 0, 1, 0, 0},
      /*Rope*/ {0, 1, 1, 0, 0, 0, 2, 2, 1, 2 + kMaxFreqFactors},
      /*Attention*/ {3, 3, 1, 0, 0, 0, 4, 5, 0, 0},
      /*SiluMul*/ {2, 2, 1, 0, 0, 0, 0, 0, 0, 0},
      /*Add*/ {2, 2, 1, 0, 0, 0, 0, 0, 0, 0},
      /*Logits*/ {1, 1, 1, 0, 1, 1, 0, 0, 0, 0},
      /*FusedQkvAttention*/ {1, 1, 1, 2, 2, 4, 4, 7, 1, 2 + kMaxFreqFactors},
      /*Concat*/ {2, 2, 1, 0, 0, 0, 0, 0, 0, 0},
      /*Copy*/ {1, 1, 1, 0, 0, 0, 0, 0, 0, 0},
      /*AddRowBias*/ {1, 1, 1, 0, 1, 1, 0, 0, 0, 0},
      /*LayerNorm*/ {1, 1, 1, 0, 2, 2, 0, 0, 1, 1},
      /*GeluTanh*/ {1, 1, 1, 0, 0, 0, 0, 0, 0, 0},
      /*SelfAttention*/ {3, 3, 1, 0, 0, 0, 2, 2, 0, 0},
      /*AddPositions*/ {1, 1, 1, 0, 1, 1, 0, 0, 0, 0},
      /*TakeRow*/ {1, 1, 1, 0, 0, 0, 1, 1, 0, 0},
  };
  static_assert(std::size(kArity) == size_t(Kernel::MAX) + 1,
                "one arity per kernel");
  const Arity &a = kArity[k];
  auto count = [&](const char *what, size_t have, size_t lo, size_t hi) {
    if (have < lo || have > hi)
      fail(at, ": has ", have, " ", what, ", expected ",
           lo == hi ? std::to_string(lo)
                    : std::to_string(lo) + ".." + std::to_string(hi));
  };
  count("inputs", r.inputs.size(), a.in_min, a.in_max);
  count("outputs", r.outputs.size(), a.outs, a.outs);
  count("scratch buffers", r.scratch.size(), a.scratch, a.scratch);
  count("weights", weight_ids.size(), a.w_min, a.w_max);
  count("integer parameters", r.iparams.size(), a.ip_min, a.ip_max);
  count("float parameters", r.fparams.size(), a.fp_min, a.fp_max);

  auto row = [&](uint32_t b) { return out.buffers[b].row_elems; };
  auto expectRow = [&](const char *what, uint32_t b, int64_t want) {
    if (row(b) != want)
      fail(at, ": ", what, " buffer ", b, " has rows of ", row(b),
           " floats, expected ", want);
  };
  auto expectShape = [&](const char *what, size_t wi,
                         std::vector<int64_t> want) {
    const TensorDesc &t = out.tensors[weight_ids[wi]];
    if (t.shape != want)
      fail(at, ": weight ", what, " '", t.name, "' has shape ",
           shapeStr(t.shape), ", expected ", shapeStr(want));
  };
  // Kernels that read one buffer while writing another must not see their
  // arena ranges overlap (the planner may overlap only dead buffers).
  auto disjoint = [&](uint32_t x, uint32_t y) {
    uint64_t n = static_cast<uint64_t>(out.max_tokens) * sizeof(float);
    uint64_t xb = out.buffers[x].offset, xe = xb + row(x) * n;
    uint64_t yb = out.buffers[y].offset, ye = yb + row(y) * n;
    if (xb < ye && yb < xe)
      fail(at, ": buffers ", x, " and ", y,
           " overlap in the arena but are used together");
  };
  // Elementwise kernels may also work in place, on exactly the same rows.
  auto inPlaceOrDisjoint = [&](uint32_t x, uint32_t y) {
    if (out.buffers[x].offset != out.buffers[y].offset)
      disjoint(x, y);
  };
  auto flag = [&](const char *what, int64_t v) {
    if (v != 0 && v != 1)
      fail(at, ": ", what, " must be 0 or 1, got ", v);
  };
  auto window = [&](size_t index) {
    if (r.iparams.size() > index &&
        (r.iparams[index] < 1 || r.iparams[index] > INT32_MAX))
      fail(at, ": sliding window ", r.iparams[index],
           " must be in 1..2147483647 positions");
  };
  auto headParams = [&](int64_t cache, int64_t nh, int64_t nkv, int64_t hd) {
    if (cache < 0 || cache >= static_cast<int64_t>(out.kv_caches.size()))
      fail(at, ": kv cache index ", cache, " out of range (",
           out.kv_caches.size(), " caches)");
    if (nh < 1 || nh > kMaxHeadParam || nkv < 1 || nkv > kMaxHeadParam ||
        hd < 1 || hd > kMaxHeadParam || nh % nkv != 0)
      fail(at, ": invalid heads: ", nh, " query heads, ", nkv,
           " kv heads, head_dim ", hd);
    const KvCacheDesc &c = out.kv_caches[cache];
    if (c.kv_heads != nkv || c.head_dim != hd)
      fail(at, ": kv cache ", cache, " holds ", c.kv_heads, " heads of ",
           c.head_dim, ", the dispatch uses ", nkv, " of ", hd);
  };
  // fparams: theta, then none or head_dim / 2 positive freq_factors, then
  // (after the factors) none or one positive scale.
  auto ropeParams = [&](int64_t hd) {
    const float t = r.fparams[0];
    if (!(std::isfinite(t) && t > 0.0f))
      fail(at, ": rope theta ", t, " must be positive");
    size_t factors = r.fparams.size() - 1;
    if (factors != 0 && static_cast<int64_t>(factors) != hd / 2 &&
        static_cast<int64_t>(factors) != hd / 2 + 1)
      fail(at, ": ", factors, " rope freq_factors for head_dim ", hd,
           " (expected ", hd / 2, ", or ", hd / 2 + 1, " with a scale)");
    if (static_cast<int64_t>(factors) == hd / 2 + 1) {
      const float s = r.fparams.back();
      if (!(std::isfinite(s) && s > 0.0f))
        fail(at, ": rope scale ", s, " must be positive");
      --factors;
    }
    for (size_t i = 1; i <= factors; ++i)
      if (!(std::isfinite(r.fparams[i]) && r.fparams[i] > 0.0f))
        fail(at, ": rope freq_factors[", i - 1, "] ", r.fparams[i],
             " must be positive");
  };

  switch (r.kernel) {
  case Kernel::Embed:
    expectShape("table", 0, {out.config.vocab_size, row(r.outputs[0])});
    if (!r.fparams.empty() && !std::isfinite(r.fparams[0]))
      fail(at, ": scale ", r.fparams[0], " must be finite");
    break;
  case Kernel::RmsNorm:
    expectRow("output", r.outputs[0], row(r.inputs[0]));
    expectShape("scale", 0, {row(r.inputs[0])});
    inPlaceOrDisjoint(r.inputs[0], r.outputs[0]);
    if (!(std::isfinite(r.fparams[0]) && r.fparams[0] >= 0.0f))
      fail(at, ": eps ", r.fparams[0], " must be >= 0");
    break;
  case Kernel::MatMul:
    expectShape("W", 0, {row(r.outputs[0]), row(r.inputs[0])});
    if (weight_ids.size() > 1)
      expectShape("bias", 1, {row(r.outputs[0])});
    if (!r.iparams.empty())
      flag("accumulate", r.iparams[0]);
    disjoint(r.inputs[0], r.outputs[0]);
    break;
  case Kernel::Rope: {
    int64_t cols = r.iparams[0], hd = r.iparams[1];
    if (hd < 2 || hd > kMaxHeadParam || hd % 2 != 0)
      fail(at, ": head_dim ", hd, " must be even and positive");
    if (cols < 1 || cols % hd != 0 || cols > row(r.outputs[0]))
      fail(at, ": cols ", cols, " must be a positive multiple of head_dim ", hd,
           " within the row of ", row(r.outputs[0]));
    if (!r.inputs.empty() && r.inputs[0] != r.outputs[0]) {
      expectRow("output", r.outputs[0], row(r.inputs[0]));
      disjoint(r.inputs[0], r.outputs[0]);
    }
    ropeParams(hd);
    break;
  }
  case Kernel::Attention: {
    int64_t nh = r.iparams[1], nkv = r.iparams[2], hd = r.iparams[3];
    headParams(r.iparams[0], nh, nkv, hd);
    expectRow("q", r.inputs[0], nh * hd);
    expectRow("k", r.inputs[1], nkv * hd);
    expectRow("v", r.inputs[2], nkv * hd);
    expectRow("output", r.outputs[0], nh * hd);
    window(4);
    for (uint32_t in : r.inputs)
      disjoint(in, r.outputs[0]);
    break;
  }
  case Kernel::SiluMul:
  case Kernel::Add:
    expectRow("b", r.inputs[1], row(r.inputs[0]));
    expectRow("output", r.outputs[0], row(r.inputs[0]));
    inPlaceOrDisjoint(r.inputs[0], r.outputs[0]);
    inPlaceOrDisjoint(r.inputs[1], r.outputs[0]);
    break;
  case Kernel::Logits:
    expectShape("W", 0, {out.config.vocab_size, row(r.inputs[0])});
    expectRow("logits", r.outputs[0], out.config.vocab_size);
    disjoint(r.inputs[0], r.outputs[0]);
    break;
  case Kernel::FusedQkvAttention: {
    int64_t nh = r.iparams[1], nkv = r.iparams[2], hd = r.iparams[3];
    headParams(r.iparams[0], nh, nkv, hd);
    if (hd % 2 != 0)
      fail(at, ": head_dim ", hd, " must be even for rope");
    if (r.iparams.size() > 4)
      flag("accumulate", r.iparams[4]);
    if (r.iparams.size() > 5)
      flag("placeholder_qkv", r.iparams[5]);
    window(6);
    uint32_t x = r.inputs[0], y = r.outputs[0];
    uint32_t qkv = r.scratch[0], attn = r.scratch[1];
    expectRow("qkv scratch", qkv, (nh + 2 * nkv) * hd);
    expectRow("attention scratch", attn, nh * hd);
    expectShape("Wqkv", 0, {(nh + 2 * nkv) * hd, row(x)});
    expectShape("Wo", 1, {row(y), nh * hd});
    if (weight_ids.size() > 2)
      expectShape("qk_bias", 2, {(nh + nkv) * hd});
    if (weight_ids.size() > 3)
      expectShape("v_bias", 3, {nkv * hd});
    ropeParams(hd);
    disjoint(qkv, attn);
    for (uint32_t s : {qkv, attn}) {
      disjoint(s, x);
      disjoint(s, y);
    }
    break;
  }
  case Kernel::Concat:
    expectRow("output", r.outputs[0], row(r.inputs[0]) + row(r.inputs[1]));
    disjoint(r.inputs[0], r.outputs[0]);
    disjoint(r.inputs[1], r.outputs[0]);
    break;
  case Kernel::Copy:
    expectRow("output", r.outputs[0], row(r.inputs[0]));
    inPlaceOrDisjoint(r.inputs[0], r.outputs[0]);
    break;
  case Kernel::AddRowBias:
    expectRow("output", r.outputs[0], row(r.inputs[0]));
    expectShape("bias", 0, {row(r.inputs[0])});
    inPlaceOrDisjoint(r.inputs[0], r.outputs[0]);
    break;
  case Kernel::LayerNorm:
    expectRow("output", r.outputs[0], row(r.inputs[0]));
    expectShape("weight", 0, {row(r.inputs[0])});
    expectShape("bias", 1, {row(r.inputs[0])});
    inPlaceOrDisjoint(r.inputs[0], r.outputs[0]);
    if (!(std::isfinite(r.fparams[0]) && r.fparams[0] >= 0.0f))
      fail(at, ": eps ", r.fparams[0], " must be >= 0");
    break;
  case Kernel::GeluTanh:
    expectRow("output", r.outputs[0], row(r.inputs[0]));
    inPlaceOrDisjoint(r.inputs[0], r.outputs[0]);
    break;
  case Kernel::SelfAttention: {
    const int64_t nh = r.iparams[0], hd = r.iparams[1];
    if (nh < 1 || nh > kMaxHeadParam || hd < 1 || hd > kMaxHeadParam)
      fail(at, ": invalid heads: ", nh, " heads of ", hd);
    expectRow("q", r.inputs[0], nh * hd);
    expectRow("k", r.inputs[1], nh * hd);
    expectRow("v", r.inputs[2], nh * hd);
    expectRow("output", r.outputs[0], nh * hd);
    for (uint32_t in : r.inputs)
      disjoint(in, r.outputs[0]);
    break;
  }
  case Kernel::AddPositions: {
    const TensorDesc &t = out.tensors[weight_ids[0]];
    if (t.shape.size() != 2 || t.shape[1] != row(r.inputs[0]))
      fail(at, ": weight table '", t.name, "' has shape ", shapeStr(t.shape),
           ", expected [positions, ", row(r.inputs[0]), "]");
    expectRow("output", r.outputs[0], row(r.inputs[0]));
    inPlaceOrDisjoint(r.inputs[0], r.outputs[0]);
    break;
  }
  case Kernel::TakeRow:
    if (r.iparams[0] < 0 || r.iparams[0] >= out.max_tokens)
      fail(at, ": row ", r.iparams[0], " is out of range (0..",
           out.max_tokens - 1, ")");
    expectRow("output", r.outputs[0], row(r.inputs[0]));
    inPlaceOrDisjoint(r.inputs[0], r.outputs[0]);
    break;
  }
  return r;
}

// Checks a program's looped block against its dispatches (already
// verified) and the kv caches. `where` prefixes every message.
LoopDesc SemanticChecker::loop(const fbs::Loop &l, const ProgramDesc &p,
                               const std::string &where) {
  LoopDesc r;
  r.body_begin = l.body_begin();
  r.body_end = l.body_end();
  r.tail_end = l.tail_end();
  const size_t n = p.dispatches.size();
  if (!(r.body_begin < r.body_end && r.body_end < r.tail_end &&
        r.tail_end == n))
    fail(where, ": dispatch ranges body [", r.body_begin, ", ", r.body_end,
         "), tail [", r.body_end, ", ", r.tail_end,
         ") must be non-empty, in order, and end at the ", n, " dispatches");

  r.state_buffer = l.state_buffer();
  r.next_state_buffer = l.next_state_buffer();
  r.latent_buffer = l.latent_buffer();
  const std::pair<const char *, uint32_t> named[] = {
      {"state", r.state_buffer},
      {"next state", r.next_state_buffer},
      {"latent", r.latent_buffer}};
  for (auto [what, b] : named) {
    if (b >= out.buffers.size())
      fail(where, ": ", what, " buffer ", b, " out of range (",
           out.buffers.size(), " buffers)");
    if (out.buffers[b].row_elems != out.config.dim)
      fail(where, ": ", what, " buffer ", b, " has rows of ",
           out.buffers[b].row_elems, " floats, expected the model dim ",
           out.config.dim);
  }
  if (overlap(r.state_buffer, r.next_state_buffer))
    fail(where, ": state buffer ", r.state_buffer, " and next state buffer ",
         r.next_state_buffer, " overlap in the arena");

  // Loop caches: one per core layer, used by the body and nowhere else.
  LoopInfo &info = r.info;
  info.layers_per_iteration = static_cast<int>(
      std::min<uint32_t>(l.layers_per_iteration(), kMaxHeadParam));
  const int64_t C = info.layers_per_iteration;
  if (C < 1)
    fail(where, ": layers_per_iteration must be >= 1");
  std::vector<int> per_layer(static_cast<size_t>(C), 0);
  for (const KvCacheDesc &c : out.kv_caches)
    if (c.loop_layer >= 0) {
      if (c.loop_layer >= C)
        fail(where, ": kv cache of layer ", c.layer, " has loop_layer ",
             c.loop_layer, ", beyond the ", C, " layers per iteration");
      ++per_layer[c.loop_layer];
    }
  for (int64_t j = 0; j < C; ++j)
    if (per_layer[j] != 1)
      fail(where, ": core layer ", j, " has ", per_layer[j],
           " loop kv caches, expected exactly one");
  std::vector<int> uses(out.kv_caches.size(), 0);
  int64_t before = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const int64_t cache = attentionCache(p.dispatches[i]);
    if (cache < 0)
      continue;
    const bool in_body = i >= r.body_begin && i < r.body_end;
    const bool is_loop = out.kv_caches[cache].loop_layer >= 0;
    if (in_body != is_loop)
      fail(where, ": dispatch ", i, " ('", p.dispatches[i].name, "') uses ",
           is_loop ? "loop" : "ordinary", " kv cache ", cache, " ",
           in_body ? "inside" : "outside",
           " the loop body (the body's attention uses loop caches, the rest "
           "ordinary ones)");
    if (is_loop && ++uses[cache] > 1)
      fail(where, ": loop kv cache ", cache, " is used by two dispatches");
    before += i < r.body_begin;
  }
  info.layers_before =
      static_cast<int>(std::min<uint32_t>(l.layers_before(), kMaxHeadParam));
  if (info.layers_before != before)
    fail(where, ": layers_before is ", l.layers_before(), " but ", before,
         " attention dispatches precede the body");

  // Dataflow the session relies on: the body produces the next state, the
  // tail starts with the latent and produces the logits.
  auto writes = [&](uint32_t begin, uint32_t end, uint32_t b) {
    for (uint32_t i = begin; i < end; ++i)
      if (p.dispatches[i].outputs[0] == b)
        return true;
    return false;
  };
  if (!writes(r.body_begin, r.body_end, r.next_state_buffer))
    fail(where, ": no body dispatch writes the next state buffer ",
         r.next_state_buffer);
  if (p.dispatches[r.body_end].outputs[0] != r.latent_buffer)
    fail(where, ": the tail's first dispatch writes buffer ",
         p.dispatches[r.body_end].outputs[0], ", not the latent buffer ",
         r.latent_buffer);
  if (!writes(r.body_end, r.tail_end, p.logits_buffer))
    fail(where, ": no tail dispatch writes the logits buffer ",
         p.logits_buffer);
  // The body and tail run many times over inputs computed once before the
  // loop (the injection) and the state: neither may overwrite them in the
  // arena.
  std::vector<uint32_t> kept = {r.state_buffer};
  std::vector<bool> written(out.buffers.size(), false);
  for (uint32_t i = r.body_begin; i < r.body_end; ++i) {
    const DispatchDesc &d = p.dispatches[i];
    for (uint32_t b : d.inputs)
      if (!written[b] && b != r.state_buffer)
        kept.push_back(b);
    for (const auto *list : {&d.outputs, &d.scratch})
      for (uint32_t b : *list)
        written[b] = true;
  }
  for (uint32_t i = r.body_begin; i < r.tail_end; ++i) {
    const DispatchDesc &d = p.dispatches[i];
    for (const auto *list : {&d.outputs, &d.scratch})
      for (uint32_t b : *list)
        for (uint32_t k : kept)
          if ((i >= r.body_end || k != r.state_buffer) && overlap(b, k))
            fail(where, ": dispatch ", i, " ('", d.name, "') writes buffer ", b,
                 ", which overlaps buffer ", k, " that every iteration reads");
  }

  // Defaults.
  const uint16_t crit = static_cast<uint16_t>(l.criterion());
  if (crit > static_cast<uint16_t>(fbs::ExitCriterion::MAX))
    fail(where, ": unknown exit criterion ", crit);
  info.criterion = static_cast<ExitCriterion>(crit);
  info.threshold = l.threshold();
  info.default_iterations = static_cast<int>(
      std::min<uint32_t>(l.default_iterations(), kMaxHeadParam));
  info.max_iterations =
      static_cast<int>(std::min<uint32_t>(l.max_iterations(), kMaxHeadParam));
  if (info.default_iterations < 1 ||
      info.default_iterations > kMaxLoopIterations)
    fail(where, ": default_iterations ", l.default_iterations(),
         " is out of range (1..", kMaxLoopIterations, ")");
  if (info.max_iterations > kMaxLoopIterations)
    fail(where, ": max_iterations ", l.max_iterations(),
         " is out of range (0..", kMaxLoopIterations, ")");
  if (!std::isfinite(info.threshold) ||
      (info.criterion != ExitCriterion::None && !(info.threshold > 0)))
    fail(where, ": exit threshold ", l.threshold(),
         " must be finite (and > 0 with a criterion)");
  if (info.criterion == ExitCriterion::ArgmaxStability &&
      info.threshold != std::floor(info.threshold))
    fail(where, ": the argmax-stability threshold ", l.threshold(),
         " must be a whole number of checks");
  r.state_std = l.state_std();
  r.state_scale = l.state_scale();
  if (!(std::isfinite(r.state_std) && r.state_std >= 0 &&
        std::isfinite(r.state_scale) && r.state_scale >= 0))
    fail(where, ": state_std ", r.state_std, " and state_scale ", r.state_scale,
         " must be finite and >= 0");
  return r;
}

// Names of the REFRAG programs (see the schema's RefragConfig).
constexpr const char *kEncodeChunk = "encode_chunk";
constexpr const char *kProjectChunk = "project_chunk";
constexpr const char *kScoreChunk = "score_chunk";

void SemanticChecker::programs() {
  const auto &ps = *m.programs();
  // Named first: without "forward" nothing else matters.
  bool found = false;
  for (uint32_t p = 0; p < ps.size() && !found; ++p)
    found = str(ps.Get(p)->name()) == "forward";
  if (!found)
    fail("artifact has no program named 'forward'");
  for (uint32_t p = 0; p < ps.size(); ++p) {
    const fbs::Program &prog = *ps.Get(p);
    ProgramDesc desc;
    desc.name = str(prog.name());
    const std::string pname = printable(prog.name());
    const std::string where = cat("program '", pname, "'");
    for (const ProgramDesc &other : out.programs)
      if (other.name == desc.name)
        fail("artifact has two programs named '", pname, "'");
    const bool is_forward = desc.name == "forward";
    const auto &ds = *prog.dispatches();
    for (uint32_t i = 0; i < ds.size(); ++i)
      desc.dispatches.push_back(
          dispatch(*ds.Get(i), cat(where, " dispatch ", i)));
    desc.logits_buffer = prog.logits_buffer();
    const char *output = is_forward ? "logits" : "output";
    if (desc.logits_buffer >= out.buffers.size())
      fail(where, ": ", output, " buffer ", desc.logits_buffer,
           " out of range (", out.buffers.size(), " buffers)");
    if (is_forward) {
      out.forward_program = out.programs.size();
      if (out.buffers[desc.logits_buffer].row_elems != out.config.vocab_size)
        fail(where, ": logits buffer ", desc.logits_buffer, " has rows of ",
             out.buffers[desc.logits_buffer].row_elems,
             " floats, expected the vocabulary size ", out.config.vocab_size);
    }
    bool written = false;
    for (const DispatchDesc &d : desc.dispatches)
      written = written || d.outputs[0] == desc.logits_buffer;
    if (!written)
      fail(where, ": no dispatch writes the ", output, " buffer ",
           desc.logits_buffer);

    desc.input_buffer = prog.input_buffer();
    if (desc.input_buffer < -1 ||
        (desc.input_buffer >= 0 &&
         static_cast<uint32_t>(desc.input_buffer) >= out.buffers.size()))
      fail(where, ": input buffer ", desc.input_buffer, " out of range (",
           out.buffers.size(), " buffers, or -1 for token ids)");
    if (is_forward && desc.input_buffer >= 0)
      fail(where, ": must read token ids (input_buffer -1), not buffer ",
           desc.input_buffer);

    // Per-dispatch rules that depend on the program: which kernels it may
    // use, how many rows a run may have.
    desc.max_rows = out.max_tokens;
    bool took_row = false;
    for (uint32_t i = 0; i < desc.dispatches.size(); ++i) {
      const DispatchDesc &d = desc.dispatches[i];
      const std::string at = cat(where, " dispatch ", i, " (",
                                 kernelName(d.kernel), " '", d.name, "')");
      switch (d.kernel) {
      case Kernel::Embed:
        if (desc.input_buffer >= 0)
          fail(at, ": the program reads input rows (buffer ",
               desc.input_buffer, "), not token ids");
        if (desc.embed_dispatch < 0)
          desc.embed_dispatch = i;
        break;
      case Kernel::Attention:
      case Kernel::FusedQkvAttention:
      case Kernel::Rope:
        if (!is_forward)
          fail(at, ": uses the KV caches or token positions, which only "
                   "program 'forward' may");
        break;
      case Kernel::AddPositions:
      case Kernel::TakeRow:
        if (is_forward)
          fail(at, ": program 'forward' keeps one row per position; ",
               kernelName(d.kernel), " belongs in a chunk encoder");
        if (d.kernel == Kernel::AddPositions) {
          // Rows must not outrun the table (verified [P, D]).
          desc.max_rows = std::min(
              desc.max_rows, out.tensors[d.weight_ids[0]].shape[0]);
        } else {
          // Later dispatches run on the one row a TakeRow leaves.
          if (took_row && d.iparams[0] != 0)
            fail(at, ": row ", d.iparams[0],
                 " after an earlier TakeRow, which leaves one row");
          if (!took_row)
            desc.min_rows = d.iparams[0] + 1;
          took_row = true;
        }
        break;
      default:
        break;
      }
    }
    if (desc.min_rows > desc.max_rows)
      fail(where, ": a run needs at least ", desc.min_rows,
           " rows (TakeRow) but may have at most ", desc.max_rows);
    if (prog.loop()) {
      if (!is_forward)
        fail(where, ": has a loop; only program 'forward' may");
      desc.loop = loop(*prog.loop(), desc, cat(where, " loop"));
    }
    out.programs.push_back(std::move(desc));
  }
  if (!out.forward().loop)
    for (size_t i = 0; i < out.kv_caches.size(); ++i)
      if (out.kv_caches[i].loop_layer >= 0)
        fail("kv cache ", i, " belongs to a loop (loop_layer ",
             out.kv_caches[i].loop_layer,
             ") but program 'forward' has no loop");
}

// The dispatch before `before` in `p` that last wrote buffer `b`, or -1.
int64_t lastWriter(const ProgramDesc &p, uint32_t b, size_t before) {
  for (size_t j = before; j-- > 0;)
    for (uint32_t o : p.dispatches[j].outputs)
      if (o == b)
        return static_cast<int64_t>(j);
  return -1;
}

// loom-fuse-chunk-projector's form, beyond the widths: the marked
// dispatch's q|k|v must be what project_chunk appends, i.e. forward's
// dispatch reads RmsNorm(Embed's rows) and project_chunk ends with the
// same RmsNorm (weight, eps) of its row, a MatMul by the same Wqkv and the
// Concat [row | q|k|v].
void SemanticChecker::placeholderQkv(const RefragDesc &r) {
  const ProgramDesc &fwd = out.forward();
  const size_t i = static_cast<size_t>(r.placeholder_qkv_dispatch);
  const DispatchDesc &d = fwd.dispatches[i];
  const int64_t n = lastWriter(fwd, d.inputs[0], i);
  const DispatchDesc *norm = n >= 0 ? &fwd.dispatches[n] : nullptr;
  if (!norm || norm->kernel != Kernel::RmsNorm ||
      lastWriter(fwd, norm->inputs[0], size_t(n)) != fwd.embed_dispatch)
    fail("program 'forward' dispatch ", i, " (", d.name,
         "): placeholder_qkv needs its input to be the RmsNorm of the Embed "
         "rows");
  const ProgramDesc &proj = out.programs[r.project_program];
  const size_t end = proj.dispatches.size();
  const int64_t c = lastWriter(proj, proj.logits_buffer, end);
  const DispatchDesc *cat = c >= 0 ? &proj.dispatches[c] : nullptr;
  const int64_t mm =
      cat && cat->kernel == Kernel::Concat
          ? lastWriter(proj, cat->inputs[1], size_t(c))
          : -1;
  const DispatchDesc *qkv = mm >= 0 ? &proj.dispatches[mm] : nullptr;
  const int64_t pn = qkv && qkv->kernel == Kernel::MatMul
                         ? lastWriter(proj, qkv->inputs[0], size_t(mm))
                         : -1;
  const DispatchDesc *pnorm = pn >= 0 ? &proj.dispatches[pn] : nullptr;
  if (!pnorm || qkv->weight_ids.size() != 1 ||
      qkv->weight_ids[0] != d.weight_ids[0] ||
      (!qkv->iparams.empty() && qkv->iparams[0] != 0) ||
      pnorm->kernel != Kernel::RmsNorm ||
      pnorm->weight_ids != norm->weight_ids ||
      pnorm->fparams != norm->fparams ||
      pnorm->inputs[0] != cat->inputs[0])
    fail("program 'project_chunk': placeholder_qkv needs it to end with "
         "[row | RmsNorm(row) Wqkv], the forward dispatch's RmsNorm and "
         "Wqkv");
}

// The REFRAG chunk encoder: the config and its three programs, with the
// shapes the session relies on.
void SemanticChecker::refrag() {
  auto find = [&](const char *name) -> int64_t {
    for (size_t i = 0; i < out.programs.size(); ++i)
      if (out.programs[i].name == name)
        return static_cast<int64_t>(i);
    return -1;
  };
  const char *names[] = {kEncodeChunk, kProjectChunk, kScoreChunk};
  const fbs::RefragConfig *c = m.refrag();
  if (!c) {
    for (const char *name : names)
      if (find(name) >= 0)
        fail("program '", name,
             "' belongs to a chunk encoder, but the model has no refrag "
             "config");
    for (const DispatchDesc &d : out.forward().dispatches)
      if (d.kernel == Kernel::FusedQkvAttention && d.iparams.size() > 5 &&
          d.iparams[5] != 0)
        fail("program 'forward' dispatch '", d.name,
             "': placeholder_qkv needs a chunk encoder, but the model has no "
             "refrag config");
    return;
  }
  RefragDesc r;
  RefragInfo &info = r.info;
  info.cls_token_id = c->cls_token_id();
  info.max_chunk_len = c->max_chunk_len();
  info.encoder_dim = c->encoder_dim();
  info.encoder_checksum = c->encoder_checksum();
  const int64_t vocab = out.config.vocab_size;
  if (info.cls_token_id < 0 || info.cls_token_id >= vocab)
    fail("refrag config: cls_token_id ", info.cls_token_id,
         " is outside the vocabulary (0..", vocab - 1, ")");
  if (info.max_chunk_len < 1 || info.max_chunk_len + 1 > out.max_tokens)
    fail("refrag config: max_chunk_len ", info.max_chunk_len,
         " must be >= 1 with max_chunk_len + 1 <= max_tokens (",
         out.max_tokens, ")");
  if (info.encoder_dim < 1)
    fail("refrag config: encoder_dim must be >= 1");
  for (const char *name : names)
    if (find(name) < 0)
      fail("artifact has a refrag config but no program '", name, "'");
  r.encode_program = static_cast<size_t>(find(kEncodeChunk));
  r.project_program = static_cast<size_t>(find(kProjectChunk));
  r.score_program = static_cast<size_t>(find(kScoreChunk));

  auto rows = [&](uint32_t b) { return out.buffers[b].row_elems; };
  auto expectOutput = [&](const ProgramDesc &p, int64_t want,
                          const char *what) {
    if (rows(p.logits_buffer) != want)
      fail("program '", p.name, "': output buffer ", p.logits_buffer,
           " has rows of ", rows(p.logits_buffer), " floats, expected ", want,
           " (", what, ")");
  };

  const ProgramDesc &enc = out.programs[r.encode_program];
  if (enc.input_buffer >= 0)
    fail("program '", kEncodeChunk, "': must read token ids (input_buffer -1), "
         "not buffer ", enc.input_buffer);
  if (enc.embed_dispatch < 0)
    fail("program '", kEncodeChunk,
         "': has no Embed dispatch to read the chunk's token ids");
  expectOutput(enc, info.encoder_dim, "encoder_dim");
  if (enc.max_rows < info.max_chunk_len + 1)
    fail("program '", kEncodeChunk, "': takes at most ", enc.max_rows,
         " rows (its position table), fewer than max_chunk_len + 1 = ",
         info.max_chunk_len + 1);

  // Placeholder rows are the model dim, or (loom-fuse-chunk-projector) the
  // model dim + the q|k|v of the one forward FusedQkvAttention marked
  // placeholder_qkv, the first one, reading the normalised embedding rows.
  const ProgramDesc &fwd = out.forward();
  for (size_t i = 0; i < fwd.dispatches.size(); ++i) {
    const DispatchDesc &d = fwd.dispatches[i];
    if (d.kernel != Kernel::FusedQkvAttention || d.iparams.size() < 6 ||
        d.iparams[5] == 0)
      continue;
    if (r.placeholder_qkv_dispatch >= 0)
      fail("program 'forward' dispatch ", i, " (", d.name,
           "): a second dispatch marked placeholder_qkv (dispatch ",
           r.placeholder_qkv_dispatch, " is)");
    for (size_t j = 0; j < i; ++j)
      if (fwd.dispatches[j].kernel == Kernel::FusedQkvAttention ||
          fwd.dispatches[j].kernel == Kernel::Attention)
        fail("program 'forward' dispatch ", i, " (", d.name,
             "): placeholder_qkv is only valid on the first attention");
    if (fwd.loop && i >= fwd.loop->body_begin)
      fail("program 'forward' dispatch ", i, " (", d.name,
           "): placeholder_qkv is only valid before the loop");
    r.placeholder_qkv_dispatch = static_cast<int64_t>(i);
    r.placeholder_qkv_elems = (d.iparams[1] + 2 * d.iparams[2]) * d.iparams[3];
  }
  info.projected_dim = out.config.dim + r.placeholder_qkv_elems;

  // The projector and the policy run on any number of rows in blocks, so
  // their rows must be independent.
  const std::pair<size_t, int64_t> row_programs[] = {
      {r.project_program, info.projected_dim}, {r.score_program, 1}};
  for (auto [index, width] : row_programs) {
    const ProgramDesc &p = out.programs[index];
    if (p.input_buffer < 0)
      fail("program '", p.name, "': needs an input buffer for the chunk "
           "embeddings (input_buffer is -1)");
    if (rows(p.input_buffer) != info.encoder_dim)
      fail("program '", p.name, "': input buffer ", p.input_buffer,
           " has rows of ", rows(p.input_buffer), " floats, expected ",
           info.encoder_dim, " (encoder_dim)");
    expectOutput(p, width,
                 index != r.project_program ? "one score"
                 : r.placeholder_qkv_dispatch < 0
                     ? "the model dim"
                     : "the model dim + layer 0's q|k|v (placeholder_qkv)");
    for (size_t i = 0; i < p.dispatches.size(); ++i) {
      const Kernel k = p.dispatches[i].kernel;
      if (k == Kernel::SelfAttention || k == Kernel::AddPositions ||
          k == Kernel::TakeRow)
        fail("program '", p.name, "' dispatch ", i, " (", kernelName(k), " '",
             p.dispatches[i].name,
             "'): mixes rows, but the rows of this program must be "
             "independent (they run in blocks)");
    }
  }

  // Placeholders replace the forward program's embedding rows.
  if (fwd.embed_dispatch < 0 ||
      rows(fwd.dispatches[fwd.embed_dispatch].outputs[0]) != out.config.dim)
    fail("program 'forward': needs an Embed dispatch with rows of the model "
         "dim ", out.config.dim, " for chunk placeholders");
  if (r.placeholder_qkv_dispatch >= 0)
    placeholderQkv(r);
  out.refrag = r;
}

void checkHeader(const uint8_t *data, size_t size, ArtifactFileHeader &h) {
  if (size > 0 &&
      std::memcmp(data, kArtifactMagic, std::min<size_t>(size, 8)) != 0)
    fail("not a Loom artifact (bad magic)");
  if (size < sizeof(ArtifactFileHeader))
    fail("artifact is truncated: file has ", size, " bytes, less than the ",
         sizeof(ArtifactFileHeader), "-byte header");
  std::memcpy(&h, data, sizeof h);
  if (h.format_version != kArtifactFormatVersion)
    fail("unsupported artifact format version ", h.format_version,
         " (this runtime reads ", kArtifactFormatVersion, ")");
  if (h.header_size != sizeof(ArtifactFileHeader))
    fail("bad artifact header size ", h.header_size, " (expected ",
         sizeof(ArtifactFileHeader), ")");
  if (h.file_size > size)
    fail("artifact is truncated: header says ", h.file_size,
         " bytes, file has ", size);
  if (h.file_size < size)
    fail("artifact size mismatch: header says ", h.file_size,
         " bytes, file has ", size);
  if (h.fb_offset < sizeof(ArtifactFileHeader) || h.fb_offset % 8 != 0 ||
      h.fb_size < 8 || !fitsWithin(h.fb_offset, h.fb_size, h.file_size))
    fail("artifact flatbuffer region [", h.fb_offset, ", +", h.fb_size,
         ") is invalid for a file of ", h.file_size, " bytes");
  if (h.fb_size >= FLATBUFFERS_MAX_BUFFER_SIZE)
    fail("artifact flatbuffer of ", h.fb_size, " bytes is too large");
  if (h.weights_offset % kWeightAlignment != 0)
    fail("artifact weights offset ", h.weights_offset, " is not a multiple of ",
         kWeightAlignment);
  // The two sections may come in either order, but must not overlap each
  // other or the header.
  if (!fitsWithin(h.weights_offset, h.weights_size, h.file_size) ||
      (h.weights_size > 0 &&
       (h.weights_offset < sizeof(ArtifactFileHeader) ||
        (h.weights_offset < h.fb_offset + h.fb_size &&
         h.fb_offset < h.weights_offset + h.weights_size))))
    fail("artifact weights section [", h.weights_offset, ", +", h.weights_size,
         ") is invalid for a file of ", h.file_size, " bytes");
}

} // namespace

// The head_dim of a (verified) Rope or FusedQkvAttention dispatch.
static int64_t ropeHeadDim(const DispatchDesc &d) {
  return d.kernel == Kernel::Rope ? d.iparams[1] : d.iparams[3];
}

const float *ropeFreqFactors(const DispatchDesc &d) {
  return d.fparams.size() > 1 ? d.fparams.data() + 1 : nullptr;
}

float ropeScale(const DispatchDesc &d) {
  return int64_t(d.fparams.size()) == 2 + ropeHeadDim(d) / 2 ? d.fparams.back()
                                                             : 1.0f;
}

int64_t attentionWindow(const DispatchDesc &d) {
  const size_t at = d.kernel == Kernel::Attention           ? 4
                    : d.kernel == Kernel::FusedQkvAttention ? 6
                                                            : SIZE_MAX;
  return at < d.iparams.size() ? d.iparams[at] : 0;
}

bool readsWeightAsStored(Kernel kernel, size_t index) {
  switch (kernel) {
  case Kernel::MatMul:
    return index == 0; // the matrix; a fused bias is f32
  case Kernel::FusedQkvAttention:
    return index < 2; // wqkv and wo; a q|k bias is f32
  case Kernel::Logits:
  case Kernel::Embed:
  case Kernel::AddPositions:
    return true;
  default:
    return false;
  }
}

static_assert(int(fbs::DType::Q6_K) == int(WeightType::Q6_K) &&
                  int(fbs::DType::F16) == int(WeightType::F16) &&
                  int(fbs::DType::Q2_K) == int(WeightType::Q2_K) &&
                  fbs::DType::MAX == fbs::DType::Q6_K,
              "WeightType lists the schema's DTypes in order");

bool blockTypeOf(WeightType type, ggml::BlockType &out) {
  switch (type) {
  case WeightType::F32:
  case WeightType::BF16:
  case WeightType::F16:
    return false;
  case WeightType::Q8_0:
    out = ggml::BlockType::Q8_0;
    return true;
  case WeightType::Q4_0:
    out = ggml::BlockType::Q4_0;
    return true;
  case WeightType::Q2_K:
    out = ggml::BlockType::Q2_K;
    return true;
  case WeightType::Q3_K:
    out = ggml::BlockType::Q3_K;
    return true;
  case WeightType::Q4_K:
    out = ggml::BlockType::Q4_K;
    return true;
  case WeightType::Q5_K:
    out = ggml::BlockType::Q5_K;
    return true;
  case WeightType::Q6_K:
    out = ggml::BlockType::Q6_K;
    return true;
  }
  return false;
}

const char *weightTypeName(WeightType type) {
  static const char *const names[] = {"F32",  "BF16", "Q8_0", "Q4_0", "F16",
                                      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
  return names[static_cast<int>(type)];
}

void decodeToF32(const TensorDesc &t, float *dst) {
  const auto *src = static_cast<const uint8_t *>(t.raw);
  uint64_t elems = 1;
  for (int64_t d : t.shape)
    elems *= static_cast<uint64_t>(d);
  if (t.dtype == WeightType::F32) {
    std::memcpy(dst, src, elems * sizeof(float));
    return;
  }
  if (ggml::BlockType block; blockTypeOf(t.dtype, block)) {
    const ggml::BlockFormat f = ggml::blockFormat(block);
    const uint64_t blocks = elems / uint64_t(f.values);
    tbb::parallel_for(tbb::blocked_range<uint64_t>(0, blocks, 256),
                      [&](const tbb::blocked_range<uint64_t> &r) {
                        for (uint64_t b = r.begin(); b < r.end(); ++b)
                          ggml::decodeBlock(block, src + b * f.bytes,
                                            dst + b * f.values);
                      });
    return;
  }
  tbb::parallel_for(tbb::blocked_range<uint64_t>(0, elems, uint64_t(1) << 16),
                    [&](const tbb::blocked_range<uint64_t> &r) {
                      for (uint64_t e = r.begin(); e < r.end(); ++e) {
                        uint16_t h;
                        std::memcpy(&h, src + 2 * e, sizeof h);
                        dst[e] = t.dtype == WeightType::F16 ? halfToFloat(h)
                                                            : bf16ToFloat(h);
                      }
                    });
}

// Every tensor stored other than as f32 (verified) that some dispatch reads as
// f32 gets a decoded copy, 64-byte aligned like the mapped tensors, owned
// by `widened`.
void ModelData::ensureF32() const {
  std::call_once(widen_once, [this] {
    constexpr size_t kAlignFloats = kWeightAlignment / sizeof(float);
    std::vector<char> as_f32(tensors.size(), 0);
    for (const ProgramDesc &p : programs)
      for (const DispatchDesc &d : p.dispatches)
        for (size_t i = 0; i < d.weight_ids.size(); ++i)
          if (!readsWeightAsStored(d.kernel, i))
            as_f32[d.weight_ids[i]] = 1;
    std::vector<std::unique_ptr<float[]>> copies;
    std::vector<const float *> views(tensors.size(), nullptr);
    std::vector<size_t> todo;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorDesc &d = tensors[i];
      if (d.dtype == WeightType::F32 || !as_f32[i])
        continue;
      size_t elems = 1;
      for (int64_t dim : d.shape)
        elems *= static_cast<size_t>(dim);
      std::unique_ptr<float[]> copy;
      try {
        copy.reset(new float[elems + kAlignFloats]);
      } catch (const std::bad_alloc &) {
        throw OutOfMemoryError(
            "out of memory: need " + std::to_string(elems * sizeof(float)) +
            " bytes to decode tensor '" + d.name + "' to f32");
      }
      void *p = copy.get();
      size_t space = (elems + kAlignFloats) * sizeof(float);
      views[i] = static_cast<const float *>(
          std::align(kWeightAlignment, elems * sizeof(float), p, space));
      copies.push_back(std::move(copy));
      todo.push_back(i);
    }
    for (size_t i : todo)
      decodeToF32(tensors[i], const_cast<float *>(views[i]));
    for (size_t i : todo)
      tensors[i].data = views[i];
    widened = std::move(copies);
  });
}

std::unique_ptr<ModelData> loadArtifact(const std::string &path) {
  auto out = std::make_unique<ModelData>();
  out->file = std::make_unique<MappedFile>(path);
  const uint8_t *data = out->file->data();
  const size_t size = out->file->size();

  ArtifactFileHeader h;
  checkHeader(data, size, h);

  const uint8_t *fb = data + h.fb_offset;
  if (loomChecksum64(fb, h.fb_size) != h.fb_checksum)
    fail("flatbuffer checksum mismatch (artifact is corrupt)");
  if (!fbs::ModelBufferHasIdentifier(fb)) {
    std::string id;
    for (int i = 0; i < 4; ++i) {
      unsigned char c = fb[4 + i];
      id += (c < 0x20 || c >= 0x7f) ? '?' : static_cast<char>(c);
    }
    fail("flatbuffer file identifier is '", id, "', expected '",
         fbs::ModelIdentifier(), "'");
  }
  flatbuffers::Verifier::Options opts;
  flatbuffers::Verifier verifier(fb, h.fb_size, opts);
  if (!fbs::VerifyModelBuffer(verifier))
    fail("flatbuffer failed verification (artifact is corrupt or was written "
         "for another schema)");
  const fbs::Model &m = *fbs::GetModel(fb);

  if (m.format_version() != kArtifactFormatVersion)
    fail("model format_version ", m.format_version(),
         " does not match the file header's ", kArtifactFormatVersion);
  out->generator = str(m.generator());
  out->target = str(m.target());
  // "cuda" artifacts have the same dispatch form (loomc --target only
  // records the device they were compiled for): they run here too.
  if (!out->target.empty() && out->target.compare(0, 3, "cpu") != 0 &&
      out->target != "cuda")
    fail("artifact is compiled for target '", printable(m.target()),
         "'; this runtime runs 'cpu' and 'cuda' artifacts");

  SemanticChecker v{m, *out, data + h.weights_offset, h.weights_size};
  v.config();
  v.tokenizer();
  v.tensors();
  v.buffers();
  v.kvCaches();
  v.programs();
  v.refrag();
  return out;
}

} // namespace rt

Model::Model(std::unique_ptr<rt::ModelData> data) : data_(std::move(data)) {}
Model::~Model() = default;

std::shared_ptr<Model> Model::load(const std::string &path) {
  return std::shared_ptr<Model>(new Model(rt::loadArtifact(path)));
}

const ModelConfigInfo &Model::config() const { return data_->config; }
bool ModelConfigInfo::endsGeneration(int32_t token) const {
  return (token >= 0 && (token == bos_id || token == eos_id)) ||
         std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end();
}

bool Model::hasTokenizer() const { return data_->tokenizer != nullptr; }
const ChatTemplateInfo &Model::chatTemplate() const {
  return data_->chat_template;
}

const Tokenizer &Model::tokenizer() const {
  if (!data_->tokenizer)
    throw Error("this artifact has no tokenizer (its model was compiled "
                "without one): feed token ids and print ids");
  return *data_->tokenizer;
}
int64_t Model::contextLength() const { return data_->context_length; }
int64_t Model::maxTokensPerStep() const { return data_->max_tokens; }
uint64_t Model::arenaBytes() const { return data_->arena_bytes; }
uint64_t Model::kvCacheBytes() const { return data_->kv_bytes; }
uint64_t Model::weightBytes() const { return data_->weight_bytes; }
std::vector<int64_t> Model::attentionWindows() const {
  std::vector<int64_t> windows;
  for (const rt::DispatchDesc &d : data_->forward().dispatches)
    if (d.kernel == rt::Kernel::Attention ||
        d.kernel == rt::Kernel::FusedQkvAttention)
      windows.push_back(rt::attentionWindow(d));
  return windows;
}

std::optional<Model::RopeInfo> Model::rope() const {
  for (const rt::DispatchDesc &d : data_->forward().dispatches)
    if (d.kernel == rt::Kernel::Rope ||
        d.kernel == rt::Kernel::FusedQkvAttention) {
      RopeInfo info;
      info.theta = d.fparams[0];
      if (const float *f = rt::ropeFreqFactors(d))
        info.freq_factors.assign(
            f,
            f + (d.kernel == rt::Kernel::Rope ? d.iparams[1] : d.iparams[3]) /
                    2);
      info.scale = rt::ropeScale(d);
      return info;
    }
  return std::nullopt;
}

std::vector<Model::WeightTypeInfo> Model::weightTypes() const {
  constexpr rt::WeightType order[] = {
      rt::WeightType::F32,  rt::WeightType::BF16, rt::WeightType::F16,
      rt::WeightType::Q8_0, rt::WeightType::Q4_0, rt::WeightType::Q2_K,
      rt::WeightType::Q3_K, rt::WeightType::Q4_K, rt::WeightType::Q5_K,
      rt::WeightType::Q6_K};
  std::vector<WeightTypeInfo> out;
  for (rt::WeightType type : order) {
    WeightTypeInfo info{rt::weightTypeName(type), 0, 0};
    for (const rt::TensorDesc &t : data_->tensors)
      if (t.dtype == type) {
        ++info.tensors;
        info.bytes += t.bytes;
      }
    if (info.tensors)
      out.push_back(std::move(info));
  }
  return out;
}
const LoopInfo *Model::loop() const {
  const auto &l = data_->forward().loop;
  return l ? &l->info : nullptr;
}
const RefragInfo *Model::refrag() const {
  return data_->refrag ? &data_->refrag->info : nullptr;
}
const std::string &Model::generator() const { return data_->generator; }
const std::string &Model::target() const { return data_->target; }

} // namespace loom
