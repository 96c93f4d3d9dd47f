//===- GgufImporter.cpp - GGUF Llama models to loom IR --------------------===//
#include "frontends/gguf/GgufImporter.h"
#include "frontends/gguf/GgufFile.h"
#include "frontends/llama2c/RopeScaling.h"
#include "frontends/safetensors/SafetensorsReader.h"

#include "llvm/ADT/StringSet.h"

#include "loom/error.h"
#include "loom/tokenizer.h"

#include <cmath>
#include <cstring>
#include <fstream>

using namespace loom;
using namespace loom::gguf;
using llvm::StringRef;

bool gguf::looksLikeGguf(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

namespace {
/// Typed metadata reads; each sets the error "<path>: key '<key>' ..." and
/// returns false.
struct Metadata {
  const GgufFile &file;
  std::string &error;

  bool fail(StringRef key, const std::string &what) {
    error = file.path().str() + ": key '" + key.str() + "'" +
            (what.substr(0, 1) == ":" ? "" : " ") + what;
    return false;
  }
  /// A positive integer; `dflt` when absent (nullopt: required).
  bool integer(StringRef key, int64_t &out, std::optional<int64_t> dflt,
               int64_t min = 1) {
    const Value *v = file.find(key);
    if (!v) {
      if (!dflt) {
        error = file.path().str() + ": missing key '" + key.str() + "'";
        return false;
      }
      out = *dflt;
      return true;
    }
    std::optional<int64_t> i = v->asInteger();
    if (!i || *i < min)
      return fail(key, "must be an integer >= " + std::to_string(min) +
                           " (it is a " + typeName(v->type).str() + ")");
    out = *i;
    return true;
  }
  bool number(StringRef key, float &out, float dflt) {
    const Value *v = file.find(key);
    if (!v) {
      out = dflt;
      return true;
    }
    std::optional<double> x = v->asNumber();
    if (!x || !(*x > 0) || !std::isfinite(*x))
      return fail(key, "must be a positive number");
    out = float(*x);
    return true;
  }
  bool string(StringRef key, std::string &out) {
    const Value *v = file.find(key);
    if (!v) {
      error = file.path().str() + ": missing key '" + key.str() + "'";
      return false;
    }
    if (v->type != Value::Type::String)
      return fail(key, "must be a string");
    out = v->string;
    return true;
  }
  /// An array whose elements are of `type`.
  const Value *array(StringRef key, Value::Type type) {
    const Value *v = file.find(key);
    if (!v) {
      error = file.path().str() + ": missing key '" + key.str() + "'";
      return nullptr;
    }
    if (v->type != Value::Type::Array || v->elementType != type) {
      fail(key, "must be an array of " + typeName(type).str());
      return nullptr;
    }
    return v;
  }
};

/// The runtime's constructor is the one definition of a valid vocabulary.
template <typename... Args>
bool runtimeAccepts(Metadata &m, StringRef key, Args &&...args) {
  try {
    Tokenizer check(std::forward<Args>(args)...);
    (void)check;
  } catch (const loom::Error &e) {
    StringRef what = e.what();
    what.consume_front("tokenizer: ");
    return m.fail(key, ": " + what.str());
  }
  return true;
}

/// tokenizer.ggml.tokens and the array `key` of one `type` element per
/// token beside it, as many as the embedding's rows; {nullptr, nullptr} (and
/// the error) otherwise.
std::pair<const Value *, const Value *>
tokensWith(Metadata &m, int64_t vocabSize, StringRef key, Value::Type type,
           StringRef what) {
  const Value *tokens = m.array("tokenizer.ggml.tokens", Value::Type::String);
  const Value *other = tokens ? m.array(key, type) : nullptr;
  if (!other)
    return {nullptr, nullptr};
  if (int64_t(tokens->array.size()) != vocabSize ||
      other->array.size() != tokens->array.size()) {
    m.fail("tokenizer.ggml.tokens",
           "has " + std::to_string(tokens->array.size()) + " tokens and " +
               key.str() + " " + std::to_string(other->array.size()) + " " +
               what.str() + "; the embedding has " + std::to_string(vocabSize) +
               " rows");
    return {nullptr, nullptr};
  }
  return {tokens, other};
}

/// A byte-level BPE vocabulary ("gpt2"), as convert_hf_to_gguf.py writes
/// Llama 3's: tokens in GPT-2's byte alphabet, token types, merges, the
/// pre-tokenizer's name.
bool readByteLevelTokenizer(Metadata &m, int64_t vocabSize, llama2c::Config &c,
                            TokenizerData &out) {
  std::string pre;
  if (!m.file.find("tokenizer.ggml.pre")) {
    m.error = m.file.path().str() +
              ": missing key 'tokenizer.ggml.pre' (a byte-level vocabulary "
              "needs its pre-tokenizer's name: Loom implements \"llama-bpe\", "
              "\"qwen2\", \"gpt-2\" and \"smollm\")";
    return false;
  }
  if (!m.string("tokenizer.ggml.pre", pre))
    return false;
  loom::ByteLevelBpe bpe;
  // llama.cpp's names for the two pre-tokenizers Loom implements.
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    bpe.pre = PreTokenizer::Llama3;
    bpe.ignore_merges = true; // as llama.cpp does for Llama 3
    bpe.add_bos = true;
  } else if (pre == "gpt-2") {
    bpe.pre = PreTokenizer::Gpt2;
  } else if (pre == "smollm") {
    bpe.pre = PreTokenizer::SmolLm;
  } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
    // llama.cpp's name for DeepSeek-R1's Qwen distills too: Qwen 2's regex.
    bpe.pre = PreTokenizer::Qwen2;
  } else {
    return m.fail("tokenizer.ggml.pre",
                  "is '" + safetensors::printable(pre) +
                      "': Loom implements the \"llama-bpe\" (Llama 3), "
                      "\"qwen2\", \"gpt-2\" and \"smollm\" pre-tokenizers");
  }
  auto [tokens, types] = tokensWith(m, vocabSize, "tokenizer.ggml.token_type",
                                    Value::Type::I32, "types");
  const Value *merges =
      types ? m.array("tokenizer.ggml.merges", Value::Type::String) : nullptr;
  if (!merges)
    return false;
  llvm::StringMap<int32_t> idOf; // spelled text -> id, normal tokens
  for (size_t i = 0; i < tokens->array.size(); ++i) {
    const std::string &text = tokens->array[i].string;
    const int64_t type = types->array[i].integer;
    // llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user
    // defined, 5 unused, 6 byte.
    if (type == 1 || type == 6) {
      std::optional<std::string> bytes = llama2c::bytesOfByteLevelPiece(text);
      if (!bytes)
        return m.fail("tokenizer.ggml.tokens",
                      ": token " + std::to_string(i) + " '" +
                          safetensors::printable(text) +
                          "' is not spelled in GPT-2's byte alphabet");
      out.pieces.push_back(*bytes);
      idOf.try_emplace(text, int32_t(i));
    } else if (type >= 2 && type <= 5) {
      out.pieces.push_back(text);
      if (type != 4)
        bpe.control.push_back(int32_t(i));
    } else {
      return m.fail("tokenizer.ggml.token_type",
                    ": token " + std::to_string(i) + " has type " +
                        std::to_string(type) + " (not 1..6)");
    }
    out.maxTokenLength =
        std::max<uint32_t>(out.maxTokenLength, out.pieces.back().size());
  }
  for (size_t rank = 0; rank < merges->array.size(); ++rank) {
    StringRef rule = merges->array[rank].string;
    // The pieces hold no spaces (GPT-2's alphabet spells it "Ġ").
    size_t cut = rule.find(' ', 1);
    auto left = idOf.find(rule.substr(0, cut));
    auto right =
        cut == StringRef::npos ? idOf.end() : idOf.find(rule.substr(cut + 1));
    if (left == idOf.end() || right == idOf.end())
      return m.fail("tokenizer.ggml.merges",
                    ": merge " + std::to_string(rank) + " '" +
                        safetensors::printable(rule) +
                        "' is not two tokens of the vocabulary");
    bpe.merges.emplace_back(left->second, right->second);
  }
  int64_t bos, eos;
  if (!m.integer("tokenizer.ggml.bos_token_id", bos, std::nullopt, 0) ||
      !m.integer("tokenizer.ggml.eos_token_id", eos, std::nullopt, 0))
    return false;
  if (bos >= vocabSize || eos >= vocabSize)
    return m.fail(bos >= vocabSize ? "tokenizer.ggml.bos_token_id"
                                   : "tokenizer.ggml.eos_token_id",
                  "is outside the vocabulary of " + std::to_string(vocabSize));
  c.bosId = bos;
  c.eosId = eos;
  bpe.bos_id = int32_t(bos);
  bpe.eos_id = int32_t(eos);
  if (const Value *v = m.file.find("tokenizer.ggml.add_bos_token")) {
    if (v->type != Value::Type::Bool)
      return m.fail("tokenizer.ggml.add_bos_token", "must be a bool");
    bpe.add_bos = v->integer != 0;
  }
  if (!runtimeAccepts(m, "tokenizer.ggml.tokens", out.pieces, bpe))
    return false;
  out.byteLevel = std::move(bpe);
  return true;
}

/// The ids besides EOS that end a generation, as llama.cpp finds them: the
/// eot and eom keys (Llama 3 Instruct's <|eot_id|>, <|eom_id|>), and the
/// tokens spelled as the chat formats' ends of turn (Phi-3's <|end|>,
/// ChatML's <|im_end|>, ...).
bool readStopIds(Metadata &m, int64_t vocabSize, llama2c::Config &c) {
  auto add = [&](int64_t id) {
    if (id != c.eosId && llvm::find(c.stopIds, id) == c.stopIds.end())
      c.stopIds.push_back(id);
  };
  for (StringRef key :
       {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!m.file.find(key))
      continue;
    int64_t id;
    if (!m.integer(key, id, std::nullopt, 0))
      return false;
    if (id >= vocabSize)
      return m.fail(key, "is outside the vocabulary of " +
                             std::to_string(vocabSize));
    add(id);
  }
  const Value *tokens = m.file.find("tokenizer.ggml.tokens");
  for (size_t i = 0; tokens && i < tokens->array.size(); ++i)
    if (llama2c::isEndOfTurnText(tokens->array[i].string))
      add(int64_t(i));
  return true;
}

bool readVocabulary(Metadata &m, int64_t vocabSize, llama2c::Config &c,
                    TokenizerData &out) {
  std::string model;
  if (!m.string("tokenizer.ggml.model", model))
    return false;
  if (model == "gpt2")
    return readByteLevelTokenizer(m, vocabSize, c, out);
  if (model != "llama")
    return m.fail("tokenizer.ggml.model",
                  "is '" + safetensors::printable(model) +
                      "': Loom reads SentencePiece (\"llama\") and byte-level "
                      "BPE (\"gpt2\") vocabularies");
  auto [tokens, scores] = tokensWith(m, vocabSize, "tokenizer.ggml.scores",
                                     Value::Type::F32, "scores");
  if (!scores)
    return false;
  // The runtime's tokenizer fixes <unk> 0 and BOS 1; EOS only ends a
  // generation, so any id in the vocabulary will do.
  int64_t eos;
  if (!m.integer("tokenizer.ggml.eos_token_id", eos, 2, 0))
    return false;
  if (eos >= vocabSize)
    return m.fail("tokenizer.ggml.eos_token_id",
                  "is outside the vocabulary of " + std::to_string(vocabSize));
  c.eosId = eos;
  for (auto [key, want] :
       {std::pair<StringRef, int64_t>{"tokenizer.ggml.unknown_token_id", 0},
        {"tokenizer.ggml.bos_token_id", 1}}) {
    int64_t id;
    if (!m.integer(key, id, want, 0))
      return false;
    if (id != want)
      return m.fail(key, "is " + std::to_string(id) +
                             "; Loom's tokenizer "
                             "needs " +
                             std::to_string(want) + " (the Llama id layout)");
  }
  // Token types, where given: unknown (2), control (3) and user-defined (4)
  // tokens are special, picked out of chat prompts by their text (as
  // llama.cpp's parse_special does) and spelled as they are.
  const Value *types = nullptr;
  if (m.file.find("tokenizer.ggml.token_type")) {
    types = tokensWith(m, vocabSize, "tokenizer.ggml.token_type",
                       Value::Type::I32, "token types")
                .second;
    if (!types)
      return false;
  }
  std::string arch;
  if (const Value *a = m.file.find("general.architecture");
      a && a->type == Value::Type::String)
    arch = a->string;
  for (size_t i = 0; i < tokens->array.size(); ++i) {
    const std::string &text = tokens->array[i].string;
    const int64_t type = types ? types->array[i].integer : 1;
    const bool special = type == 2 || type == 3 || type == 4;
    out.pieces.push_back(special ? text
                                 : llama2c::spacesForSentencePieceMarks(text));
    out.scores.push_back(float(scores->array[i].number));
    out.maxTokenLength =
        std::max<uint32_t>(out.maxTokenLength, out.pieces.back().size());
    if (!special)
      continue;
    out.special.ids.push_back(int32_t(i));
    // Phi-3's special tokens swallow the whitespace after them, but for
    // <unk>, <s> and <|endoftext|> (llama.cpp's rule for Phi-3; Hugging
    // Face's tokenizer.json says so per token).
    if (arch == "phi3" && text != "<unk>" && text != "<s>" &&
        text != "<|endoftext|>")
      out.special.rstrip.push_back(int32_t(i));
  }
  if (std::string problem = llama2c::byteFallbackProblem(out.pieces);
      !problem.empty())
    return m.fail("tokenizer.ggml.tokens", ": " + problem);
  return runtimeAccepts(m, "tokenizer.ggml.tokens", out.pieces, out.scores,
                        out.maxTokenLength, out.special);
}

/// tokenizer.chat_template, where present (the template gets the
/// vocabulary's BOS and EOS pieces, as in llama.cpp).
bool readChatTemplate(Metadata &m, TokenizerData &out) {
  if (!m.file.find("tokenizer.chat_template"))
    return true;
  return m.string("tokenizer.chat_template", out.chatTemplate);
}

bool readTokenizer(Metadata &m, int64_t vocabSize, llama2c::Config &c,
                   TokenizerData &out) {
  return readVocabulary(m, vocabSize, c, out) && readStopIds(m, vocabSize, c) &&
         readChatTemplate(m, out);
}

SourceEncoding encodingOf(TensorType type) {
  if (std::optional<ggml::BlockType> block = blockTypeOf(type))
    return sourceEncodingOf(*block);
  return type == TensorType::F16    ? SourceEncoding::F16
         : type == TensorType::BF16 ? SourceEncoding::BF16
                                    : SourceEncoding::F32;
}
} // namespace

std::optional<gguf::Model> gguf::readLlama(const std::string &path,
                                           std::string &error) {
  llvm::Expected<GgufFile> opened = GgufFile::open(path);
  if (!opened) {
    error = llvm::toString(opened.takeError());
    return std::nullopt;
  }
  const GgufFile &file = *opened;
  Metadata m{file, error};
  std::string arch;
  if (!m.string("general.architecture", arch))
    return std::nullopt;
  // Qwen 2 is Llama's graph with q/k/v biases, its q and k rows in the
  // rotate-half order of llama.cpp's NEOX rope (not permuted by the
  // converter, as Llama's are).
  // Phi-3 is Llama's graph with q|k|v in one matrix (attn_qkv) and gate|up
  // in another (ffn_up), q and k in NEOX order too.
  if (arch != "llama" && arch != "qwen2" && arch != "phi3") {
    m.fail("general.architecture", "is '" + safetensors::printable(arch) +
                                       "': Loom reads \"llama\", \"qwen2\" "
                                       "and \"phi3\" GGUF models");
    return std::nullopt;
  }
  const bool qwen2 = arch == "qwen2", phi3 = arch == "phi3";
  const bool neox = qwen2 || phi3; // q/k rows in rotate-half order
  auto key = [&](const char *name) { return arch + "." + name; };
  gguf::Model model;
  llama2c::Checkpoint &ckpt = model.checkpoint;
  ckpt.path = path;
  ckpt.format = "gguf";
  llama2c::Config &c = ckpt.config;
  int64_t ropeDims = 0;
  if (!m.integer(key("embedding_length"), c.dim, std::nullopt) ||
      !m.integer(key("feed_forward_length"), c.hiddenDim, std::nullopt) ||
      !m.integer(key("block_count"), c.nLayers, std::nullopt) ||
      !m.integer(key("attention.head_count"), c.nHeads, std::nullopt) ||
      !m.integer(key("attention.head_count_kv"), c.nKvHeads, c.nHeads) ||
      !m.integer(key("context_length"), c.maxSeq, std::nullopt) ||
      !m.number(key("attention.layer_norm_rms_epsilon"), c.normEps, 1e-5f) ||
      !m.number(key("rope.freq_base"), c.ropeTheta, 10000.0f))
    return std::nullopt;
  if (c.dim % c.nHeads || c.nHeads % c.nKvHeads || c.headDim() % 2) {
    error = path + ": the head layout (embedding " + std::to_string(c.dim) +
            ", " + std::to_string(c.nHeads) + " heads, " +
            std::to_string(c.nKvHeads) +
            " kv heads) needs whole heads, whole groups and an even head size";
    return std::nullopt;
  }
  // A sliding window (Phi-3 mini's 2047) in every layer; 0: none.
  if (!m.integer(key("attention.sliding_window"), c.slidingWindow, 0, 0))
    return std::nullopt;
  if (!m.integer(key("rope.dimension_count"), ropeDims, c.headDim()))
    return std::nullopt;
  if (ropeDims != c.headDim()) {
    m.fail(key("rope.dimension_count"),
           "is " + std::to_string(ropeDims) + ", not the head size " +
               std::to_string(c.headDim()) +
               ": partial rotary embeddings are not supported");
    return std::nullopt;
  }
  // RoPE scaling as llama.cpp reads it: rope.scaling.type (absent:
  // "linear"; "none" never scales), its factor from rope.scaling.factor or
  // else the older rope.scale_linear (absent: 1, no scaling), YaRN's
  // .original_context_length and .yarn_beta_fast / .yarn_beta_slow (32 and
  // 1 when absent).
  std::string scaling = "linear";
  if (file.find(key("rope.scaling.type")) &&
      !m.string(key("rope.scaling.type"), scaling))
    return std::nullopt;
  float factor = 0;
  if (!m.number(key(file.find(key("rope.scaling.factor"))
                        ? "rope.scaling.factor"
                        : "rope.scale_linear"),
                factor, 0.0f))
    return std::nullopt;
  for (const char *k :
       {"rope.scaling.yarn_attn_factor", "rope.scaling.yarn_ext_factor",
        "rope.scaling.yarn_log_multiplier"})
    if (file.find(key(k))) {
      m.fail(key(k), "is set: Loom implements YaRN with its default "
                     "attention and extrapolation factors only");
      return std::nullopt;
    }
  if (scaling == "linear") {
    if (factor > 0 && factor != 1.0f)
      llama2c::linearRopeScaling(c, factor);
  } else if (scaling == "yarn") {
    float betaFast, betaSlow, attnFactor;
    int64_t original = 0;
    if (!m.integer(key("rope.scaling.original_context_length"), original,
                   c.maxSeq) ||
        !m.number(key("rope.scaling.yarn_beta_fast"), betaFast, 32.0f) ||
        !m.number(key("rope.scaling.yarn_beta_slow"), betaSlow, 1.0f) ||
        !m.number(key("rope.scaling.attn_factor"), attnFactor, 1.0f))
      return std::nullopt;
    if (factor == 0) {
      m.fail(key("rope.scaling.factor"),
             "is missing: yarn rope scaling needs it");
      return std::nullopt;
    }
    llama2c::yarnRopeScaling(c, factor, double(original), betaFast, betaSlow,
                             attnFactor * llama2c::yarnMscale(factor));
  } else if (scaling != "none") {
    m.fail(key("rope.scaling.type"),
           "is '" + safetensors::printable(scaling) +
               "': Loom implements rope scaling \"none\", \"linear\" and "
               "\"yarn\"");
    return std::nullopt;
  }

  const Tensor *embed = file.tensor("token_embd.weight");
  if (!embed || embed->ne.size() != 2) {
    error = path + ": missing tensor 'token_embd.weight' (or it is not a "
                   "matrix)";
    return std::nullopt;
  }
  c.vocabSize = int64_t(embed->ne[1]);
  int64_t declared;
  if (!m.integer(key("vocab_size"), declared, c.vocabSize))
    return std::nullopt;
  if (declared != c.vocabSize) {
    m.fail(key("vocab_size"), "is " + std::to_string(declared) +
                                  " but token_embd.weight has " +
                                  std::to_string(c.vocabSize) + " rows");
    return std::nullopt;
  }
  c.sharedClassifier = !file.tensor("output.weight");
  c.qkvBias = qwen2;

  const int64_t D = c.dim, I = c.hiddenDim, kv = c.kvDim();
  llvm::StringSet<> used;
  // `rows` rows of tensor `name` from `firstRow` (all: -1) as the graph
  // weight `as`; rows are whole blocks, so a slice is a byte range.
  auto takeRows = [&](const std::string &name, std::vector<int64_t> shape,
                      int64_t firstRow, int64_t rows, const std::string &as,
                      bool rotateHalf = false) {
    const Tensor *t = file.tensor(name);
    if (!t) {
      error = path + ": missing tensor '" + name + "'";
      return false;
    }
    if (t->shape() != shape) {
      error = path + ": tensor '" + name + "' has shape " +
              safetensors::formatShape(t->shape()) + "; expected " +
              safetensors::formatShape(shape) + " (row-major: ne reversed)";
      return false;
    }
    used.insert(name);
    const uint64_t rowBytes = t->bytes / uint64_t(shape[0]);
    if (rows < 0)
      rows = shape[0];
    WeightSource src{path, t->fileOffset + uint64_t(firstRow) * rowBytes,
                     uint64_t(rows) * rowBytes, encodingOf(t->type)};
    src.rotateHalfHeadDim = rotateHalf ? c.headDim() : 0;
    ckpt.weights[as] = src;
    return true;
  };
  auto take = [&](const std::string &name, std::vector<int64_t> shape,
                  const std::string &as, bool rotateHalf = false) {
    return takeRows(name, std::move(shape), 0, -1, as, rotateHalf);
  };
  if (!take("token_embd.weight", {c.vocabSize, D}, "tok_embeddings") ||
      !take("output_norm.weight", {D}, "norm") ||
      (!c.sharedClassifier &&
       !take("output.weight", {c.vocabSize, D}, "output")))
    return std::nullopt;
  for (int64_t l = 0; l < c.nLayers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const std::string to = "layers." + std::to_string(l) + ".";
    bool projections;
    if (phi3) {
      const std::string qkv = b + "attn_qkv.weight", up = b + "ffn_up.weight";
      projections = takeRows(qkv, {D + 2 * kv, D}, 0, D, to + "wq", true) &&
                    takeRows(qkv, {D + 2 * kv, D}, D, kv, to + "wk", true) &&
                    takeRows(qkv, {D + 2 * kv, D}, D + kv, kv, to + "wv") &&
                    takeRows(up, {2 * I, D}, 0, I, to + "w1") &&
                    takeRows(up, {2 * I, D}, I, I, to + "w3");
    } else {
      projections = take(b + "attn_q.weight", {D, D}, to + "wq", neox) &&
                    take(b + "attn_k.weight", {kv, D}, to + "wk", neox) &&
                    take(b + "attn_v.weight", {kv, D}, to + "wv") &&
                    take(b + "ffn_gate.weight", {I, D}, to + "w1") &&
                    take(b + "ffn_up.weight", {I, D}, to + "w3");
    }
    if (!projections ||
        !take(b + "attn_norm.weight", {D}, to + "attention_norm") ||
        !take(b + "attn_output.weight", {D, D}, to + "wo") ||
        !take(b + "ffn_norm.weight", {D}, to + "ffn_norm") ||
        !take(b + "ffn_down.weight", {D, I}, to + "w2"))
      return std::nullopt;
    if (qwen2 && (!take(b + "attn_q.bias", {D}, to + "bq", true) ||
                  !take(b + "attn_k.bias", {kv}, to + "bk", true) ||
                  !take(b + "attn_v.bias", {kv}, to + "bv")))
      return std::nullopt;
  }
  // A tensor of head_dim / 2 positive f32 frequency divisors, into `out`:
  // Llama 3.1's rope_freqs, LongRoPE's rope_factors_short / _long (as
  // llama.cpp's converter writes them). Absent: true, `out` untouched.
  auto ropeFactors = [&](const std::string &name, std::vector<float> &out) {
    const Tensor *t = file.tensor(name);
    if (!t)
      return true;
    const int64_t pairs = c.headDim() / 2;
    if (!out.empty()) {
      error = path + ": tensor '" + name + "' and " +
              (used.contains("rope_freqs.weight")
                   ? std::string("tensor 'rope_freqs.weight'")
                   : "rope scaling '" + scaling + "'") +
              " both set the rope's frequencies";
      return false;
    }
    if (t->type != TensorType::F32 ||
        t->shape() != std::vector<int64_t>{pairs}) {
      error = path + ": tensor '" + name + "' must be f32 of shape [" +
              std::to_string(pairs) + "] (head_dim / 2)";
      return false;
    }
    out.resize(pairs);
    std::ifstream in(path, std::ios::binary);
    in.seekg(std::streamoff(t->fileOffset));
    if (!in.read(reinterpret_cast<char *>(out.data()),
                 std::streamsize(4 * pairs))) {
      error = path + ": cannot read tensor '" + name + "'";
      return false;
    }
    for (int64_t i = 0; i < pairs; ++i)
      if (!(out[i] > 0) || !std::isfinite(out[i])) {
        error = path + ": " + name + "[" + std::to_string(i) + "] is " +
                std::to_string(out[i]) + ", not a positive number";
        return false;
      }
    used.insert(t->name);
    return true;
  };
  if (!ropeFactors("rope_freqs.weight", c.ropeFreqFactors) ||
      !ropeFactors("rope_factors_short.weight", c.ropeFreqFactors) ||
      !ropeFactors("rope_factors_long.weight", c.ropeFreqFactorsLong))
    return std::nullopt;
  // LongRoPE (Phi-3 128k, Phi-3.5): both factor sets, the original
  // context that chooses between them, the attention factor.
  if (!c.ropeFreqFactorsLong.empty()) {
    float attnFactor;
    if (used.contains("rope_freqs.weight") ||
        !used.contains("rope_factors_short.weight")) {
      error = path + ": tensor 'rope_factors_long.weight' needs "
                     "'rope_factors_short.weight' (and no 'rope_freqs.weight')";
      return std::nullopt;
    }
    if (!m.integer(key("rope.scaling.original_context_length"),
                   c.ropeOriginalContext, std::nullopt, 2) ||
        !m.number(key("rope.scaling.attn_factor"), attnFactor, 1.0f))
      return std::nullopt;
    c.ropeScale = attnFactor;
  }
  for (const Tensor &t : file.tensors())
    if (!used.contains(t.name)) {
      error = path + ": unexpected tensor '" + safetensors::printable(t.name) +
              "' (not part of a Llama model Loom reads)";
      return std::nullopt;
    }
  if (!readTokenizer(m, c.vocabSize, c, model.tokenizer))
    return std::nullopt;
  return model;
}
