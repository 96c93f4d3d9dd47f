//===- Llama2cImporter.cpp - llama2.c checkpoints to loom IR ----------------===//
#include "frontends/llama2c/Llama2cImporter.h"
#include "dialects/Loom/IR/LoomOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"

#include "loom/error.h"
#include "loom/tokenizer.h"

#include <array>
#include <cstdio>
#include <cstring>

using namespace mlir;
using namespace loom;
using namespace loom::llama2c;

std::optional<Checkpoint> llama2c::readCheckpoint(const std::string &path,
                                                  std::string &error) {
  auto file = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                          /*RequiresNullTerminator=*/false);
  if (!file) {
    error = "cannot open checkpoint '" + path + "': " + file.getError().message();
    return std::nullopt;
  }
  uint64_t size = (*file)->getBufferSize();
  if (size < 28) {
    error = "checkpoint '" + path + "' is " + std::to_string(size) +
            " bytes, shorter than the 28-byte llama2.c header";
    return std::nullopt;
  }
  int32_t h[7];
  std::memcpy(h, (*file)->getBufferStart(), sizeof(h));
  Checkpoint ckpt;
  ckpt.path = path;
  Config &c = ckpt.config;
  c.dim = h[0];
  c.hiddenDim = h[1];
  c.nLayers = h[2];
  c.nHeads = h[3];
  c.nKvHeads = h[4];
  c.sharedClassifier = h[5] > 0;
  c.vocabSize = h[5] < 0 ? -static_cast<int64_t>(h[5]) : h[5];
  c.maxSeq = h[6];
  auto bad = [&](const std::string &what) {
    error = "checkpoint '" + path + "' has a bad header: " + what +
            " (dim " + std::to_string(h[0]) + ", hidden_dim " +
            std::to_string(h[1]) + ", n_layers " + std::to_string(h[2]) +
            ", n_heads " + std::to_string(h[3]) + ", n_kv_heads " +
            std::to_string(h[4]) + ", vocab_size " + std::to_string(h[5]) +
            ", seq_len " + std::to_string(h[6]) + ")";
    return std::nullopt;
  };
  if (c.dim <= 0 || c.hiddenDim <= 0 || c.nLayers <= 0 || c.nHeads <= 0 ||
      c.nKvHeads <= 0 || c.vocabSize <= 0 || c.maxSeq <= 0)
    return bad("every field must be non-zero and positive");
  if (c.dim % c.nHeads != 0)
    return bad("dim is not a multiple of n_heads");
  if (c.nHeads % c.nKvHeads != 0)
    return bad("n_heads is not a multiple of n_kv_heads");
  if (c.headDim() % 2 != 0)
    return bad("head size is odd, rope needs pairs");

  // Layer-major tensors in the order of llama2.c's legacy export.
  int64_t L = c.nLayers, D = c.dim, H = c.hiddenDim, kv = c.kvDim();
  uint64_t offset = 28;
  auto add = [&](const std::string &name, uint64_t elems) {
    ckpt.weights[name] = WeightSource{path, offset, elems * 4};
    offset += elems * 4;
  };
  auto addLayers = [&](const std::string &suffix, uint64_t elems) {
    for (int64_t l = 0; l < L; ++l)
      add("layers." + std::to_string(l) + "." + suffix, elems);
  };
  add("tok_embeddings", uint64_t(c.vocabSize) * D);
  addLayers("attention_norm", D);
  addLayers("wq", uint64_t(D) * D);
  addLayers("wk", uint64_t(kv) * D);
  addLayers("wv", uint64_t(kv) * D);
  addLayers("wo", uint64_t(D) * D);
  addLayers("ffn_norm", D);
  addLayers("w1", uint64_t(H) * D);
  addLayers("w2", uint64_t(D) * H);
  addLayers("w3", uint64_t(H) * D);
  add("norm", D);
  // Legacy freq_cis_real / freq_cis_imag tables: stepped over, never used
  // (rope is computed from positions).
  offset += 2 * uint64_t(c.maxSeq) * (c.headDim() / 2) * 4;
  if (!c.sharedClassifier)
    add("output", uint64_t(c.vocabSize) * D);
  if (offset != size) {
    error = "checkpoint '" + path + "' is " + std::to_string(size) +
            " bytes but its header (dim " + std::to_string(D) + ", " +
            std::to_string(L) + " layers, vocab " +
            std::to_string(c.vocabSize) +
            (c.sharedClassifier ? ", shared" : ", unshared") +
            " classifier) implies " + std::to_string(offset) + " bytes";
    return std::nullopt;
  }
  return ckpt;
}

OwningOpRef<ModuleOp> llama2c::importCheckpoint(MLIRContext &ctx,
                                                const Checkpoint &ckpt,
                                                int64_t maxTokens) {
  ctx.loadDialect<LoomDialect, func::FuncDialect>();
  const Config &c = ckpt.config;
  Location fileLoc = FileLineColLoc::get(&ctx, ckpt.path, 0, 0);
  auto loc = [&](const std::string &name) {
    return NameLoc::get(StringAttr::get(&ctx, name), fileLoc);
  };
  OpBuilder b(&ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  module->setName(ckpt.format);
  b.setInsertionPointToEnd(module->getBody());

  Type f32 = b.getF32Type();
  const float eps = c.normEps, theta = c.ropeTheta;
  int64_t D = c.dim, H = c.hiddenDim, hd = c.headDim(), kv = c.kvDim();
  SmallVector<NamedAttribute> config = {
      b.getNamedAttr("architecture", b.getStringAttr("llama")),
      b.getNamedAttr("dim", b.getI64IntegerAttr(D)),
      b.getNamedAttr("hidden_dim", b.getI64IntegerAttr(H)),
      b.getNamedAttr("n_layers", b.getI64IntegerAttr(c.nLayers)),
      b.getNamedAttr("n_heads", b.getI64IntegerAttr(c.nHeads)),
      b.getNamedAttr("n_kv_heads", b.getI64IntegerAttr(c.nKvHeads)),
      b.getNamedAttr("vocab_size", b.getI64IntegerAttr(c.vocabSize)),
      b.getNamedAttr("max_seq", b.getI64IntegerAttr(c.maxSeq)),
      b.getNamedAttr("max_tokens", b.getI64IntegerAttr(maxTokens)),
      b.getNamedAttr("rope_theta", b.getF32FloatAttr(theta)),
      b.getNamedAttr("norm_eps", b.getF32FloatAttr(eps)),
      b.getNamedAttr("bos_id", b.getI64IntegerAttr(c.bosId)),
      b.getNamedAttr("eos_id", b.getI64IntegerAttr(c.eosId)),
  };
  if (!c.stopIds.empty())
    config.push_back(
        b.getNamedAttr("stop_ids", b.getDenseI64ArrayAttr(c.stopIds)));
  module->getOperation()->setAttr("loom.model", b.getDictionaryAttr(config));

  auto weight = [&](const std::string &name, ArrayRef<int64_t> shape) {
    WeightOp::create(b, loc(name), b.getStringAttr(name),
                     TypeAttr::get(RankedTensorType::get(shape, f32)),
                     ArrayAttr(), StringAttr());
    return FlatSymbolRefAttr::get(&ctx, name);
  };
  auto tok = weight("tok_embeddings", {c.vocabSize, D});
  struct LayerWeights {
    FlatSymbolRefAttr attnNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3;
    FlatSymbolRefAttr bq, bk, bv; // Qwen 2's
  };
  std::vector<LayerWeights> layers;
  for (int64_t l = 0; l < c.nLayers; ++l) {
    std::string p = "layers." + std::to_string(l) + ".";
    layers.push_back({weight(p + "attention_norm", {D}),
                      weight(p + "wq", {D, D}), weight(p + "wk", {kv, D}),
                      weight(p + "wv", {kv, D}), weight(p + "wo", {D, D}),
                      weight(p + "ffn_norm", {D}), weight(p + "w1", {H, D}),
                      weight(p + "w2", {D, H}), weight(p + "w3", {H, D})});
    if (c.qkvBias) {
      layers.back().bq = weight(p + "bq", {D});
      layers.back().bk = weight(p + "bk", {kv});
      layers.back().bv = weight(p + "bv", {kv});
    }
  }
  auto finalNorm = weight("norm", {D});
  auto classifier =
      c.sharedClassifier ? tok : weight("output", {c.vocabSize, D});

  int64_t dyn = ShapedType::kDynamic;
  auto ids = RankedTensorType::get({dyn}, b.getI32Type());
  auto rowsOf = [&](int64_t n) { return RankedTensorType::get({dyn, n}, f32); };
  auto fn = func::FuncOp::create(
      b, loc("forward"), "forward",
      b.getFunctionType({ids, ids}, {rowsOf(c.vocabSize)}));
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  Value tokens = entry->getArgument(0), pos = entry->getArgument(1);
  auto cacheType =
      KvCacheType::get(&ctx, c.maxSeq, c.nKvHeads, hd, f32);

  // LongRoPE: the long factors for a context past the original one (as
  // llama.cpp chooses them by its context size).
  const std::vector<float> &factors =
      !c.ropeFreqFactorsLong.empty() && c.maxSeq > c.ropeOriginalContext
          ? c.ropeFreqFactorsLong
          : c.ropeFreqFactors;
  DenseF32ArrayAttr freqFactors =
      factors.empty() ? DenseF32ArrayAttr() : b.getDenseF32ArrayAttr(factors);
  FloatAttr ropeScale =
      c.ropeScale != 1.0f ? b.getF32FloatAttr(c.ropeScale) : FloatAttr();

  // A window that holds the whole context is no window.
  auto window = [&](int64_t layer) {
    return c.slidingWindow > 0 && c.slidingWindow < c.maxSeq &&
                   layer >= c.slidingWindowFrom
               ? b.getI64IntegerAttr(c.slidingWindow)
               : IntegerAttr();
  };

  Value x = EmbedOp::create(b, loc("tok_embeddings"), rowsOf(D), tokens, tok,
                            b.getF32FloatAttr(1.0f));
  for (int64_t l = 0; l < c.nLayers; ++l) {
    const LayerWeights &w = layers[l];
    std::string p = "layers." + std::to_string(l) + ".";
    Location attnLoc = loc(p + "attention"), ffnLoc = loc(p + "feed_forward");
    Value h =
        RmsNormOp::create(b, attnLoc, x, w.attnNorm, b.getF32FloatAttr(eps));
    Value q = LinearOp::create(b, attnLoc, rowsOf(D), h, w.wq);
    Value k = LinearOp::create(b, attnLoc, rowsOf(kv), h, w.wk);
    Value v = LinearOp::create(b, attnLoc, rowsOf(kv), h, w.wv);
    if (c.qkvBias) {
      q = AddRowBiasOp::create(b, attnLoc, q, w.bq);
      k = AddRowBiasOp::create(b, attnLoc, k, w.bk);
      v = AddRowBiasOp::create(b, attnLoc, v, w.bv);
    }
    q = RopeOp::create(b, attnLoc, rowsOf(D), q, pos, b.getI64IntegerAttr(hd),
                       b.getF32FloatAttr(theta), freqFactors, ropeScale);
    k = RopeOp::create(b, attnLoc, rowsOf(kv), k, pos, b.getI64IntegerAttr(hd),
                       b.getF32FloatAttr(theta), freqFactors, ropeScale);
    Value cache = KvCacheOp::create(b, attnLoc, cacheType, b.getI64IntegerAttr(l));
    Value a = AttentionOp::create(b, attnLoc, rowsOf(D), q, k, v, pos, cache,
                                  b.getI64IntegerAttr(c.nHeads),
                                  b.getI64IntegerAttr(c.nKvHeads),
                                  b.getI64IntegerAttr(hd), window(l));
    Value o = LinearOp::create(b, attnLoc, rowsOf(D), a, w.wo);
    x = AddOp::create(b, attnLoc, x, o);
    h = RmsNormOp::create(b, ffnLoc, x, w.ffnNorm, b.getF32FloatAttr(eps));
    Value gate = LinearOp::create(b, ffnLoc, rowsOf(H), h, w.w1);
    Value up = LinearOp::create(b, ffnLoc, rowsOf(H), h, w.w3);
    Value act = SiluMulOp::create(b, ffnLoc, gate, up);
    Value down = LinearOp::create(b, ffnLoc, rowsOf(D), act, w.w2);
    x = AddOp::create(b, ffnLoc, x, down);
  }
  x = RmsNormOp::create(b, loc("norm"), x, finalNorm, b.getF32FloatAttr(eps));
  Value logits =
      LogitsOp::create(b, loc("output"), rowsOf(c.vocabSize), x, classifier);
  func::ReturnOp::create(b, loc("forward"), logits);
  return module;
}

std::string
llama2c::byteFallbackProblem(const std::vector<std::string> &pieces) {
  for (int b = 0; b < 256; ++b) {
    char want[8];
    std::snprintf(want, sizeof want, "<0x%02X>", b);
    if (3 + b >= int64_t(pieces.size()) || pieces[3 + b] != want)
      return "id " + std::to_string(3 + b) + " must be the byte piece '" +
             want + "' (Loom's byte fallback is id 3 + byte)";
  }
  return "";
}

std::optional<std::string>
llama2c::bytesOfByteLevelPiece(llvm::StringRef spelled) {
  // GPT-2's alphabet: the printable Latin-1 bytes stand for themselves, the
  // other 68 (controls, space, DEL, 0x80-0xA0, soft hyphen) are U+0100.. in
  // byte order.
  auto printable = [](uint32_t b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
           (b >= 0xAE && b <= 0xFF);
  };
  // Built once: a vocabulary has ~10^5 pieces.
  static const std::array<uint8_t, 324> byteOf = [&] {
    std::array<uint8_t, 324> table{};
    for (uint32_t b = 0, extra = 0; b < 256; ++b)
      table[printable(b) ? b : 256 + extra++] = uint8_t(b);
    return table;
  }();
  std::string out;
  for (size_t at = 0; at < spelled.size();) {
    // Decode one UTF-8 code point of at most 2 bytes (U+0000..U+07FF).
    auto c = static_cast<unsigned char>(spelled[at]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      at += 1;
    } else if ((c & 0xE0) == 0xC0 && at + 1 < spelled.size() &&
               (static_cast<unsigned char>(spelled[at + 1]) & 0xC0) == 0x80) {
      cp = (c & 0x1Fu) << 6 |
           (static_cast<unsigned char>(spelled[at + 1]) & 0x3F);
      at += 2;
      if (cp < 0x80)
        return std::nullopt; // overlong

    } else {
      return std::nullopt;
    }
    if (cp >= 324 || (cp < 256 && !printable(cp)))
      return std::nullopt;
    out += static_cast<char>(byteOf[cp]);
  }
  return out;
}

bool llama2c::isEndOfTurnText(llvm::StringRef text) {
  return text == "<|eot_id|>" || text == "<|eom_id|>" || text == "<|im_end|>" ||
         text == "<|end|>" || text == "<end_of_turn>" ||
         text == "<|endoftext|>";
}

std::vector<int64_t> llama2c::endOfTurnIds(const TokenizerData &tokenizer) {
  const std::vector<int32_t> &special = tokenizer.byteLevel
                                            ? tokenizer.byteLevel->control
                                            : tokenizer.special.ids;
  std::vector<int64_t> ids;
  for (int32_t id : special) {
    const std::string &text = tokenizer.pieces[id];
    if (isEndOfTurnText(text) ||
        (tokenizer.chatEosToken && text == *tokenizer.chatEosToken))
      ids.push_back(id);
  }
  return ids;
}

void llama2c::addStopIds(mlir::ModuleOp module, llvm::ArrayRef<int64_t> ids) {
  auto config = module->getAttrOfType<mlir::DictionaryAttr>("loom.model");
  if (!config)
    return;
  auto integer = [&](llvm::StringRef name) {
    auto v = config.getAs<mlir::IntegerAttr>(name);
    return v ? v.getInt() : int64_t(-1);
  };
  std::vector<int64_t> stops;
  if (auto old = config.getAs<mlir::DenseI64ArrayAttr>("stop_ids"))
    stops.assign(old.asArrayRef().begin(), old.asArrayRef().end());
  const size_t before = stops.size();
  for (int64_t id : ids)
    if (id != integer("bos_id") && id != integer("eos_id") &&
        llvm::find(stops, id) == stops.end())
      stops.push_back(id);
  if (stops.size() == before)
    return;
  mlir::Builder b(module.getContext());
  mlir::NamedAttrList attrs(config);
  attrs.set("stop_ids", b.getDenseI64ArrayAttr(stops));
  module->setAttr("loom.model", attrs.getDictionary(module.getContext()));
}

std::string llama2c::spacesForSentencePieceMarks(llvm::StringRef piece) {
  constexpr llvm::StringRef kMark = "\xE2\x96\x81"; // U+2581
  std::string out;
  for (size_t at = 0; at < piece.size();) {
    if (piece.substr(at).starts_with(kMark)) {
      out += ' ';
      at += kMark.size();
    } else {
      out += piece[at++];
    }
  }
  return out;
}

std::optional<TokenizerData> llama2c::readTokenizer(const std::string &path,
                                                    int64_t vocabSize,
                                                    std::string &error) {
  auto file = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                          /*RequiresNullTerminator=*/false);
  if (!file) {
    error = "cannot open tokenizer '" + path + "': " + file.getError().message();
    return std::nullopt;
  }
  // The runtime's parser is the one definition of the format; the artifact
  // stores what it accepted.
  try {
    Tokenizer t = Tokenizer::fromLlama2cBytes((*file)->getBufferStart(),
                                              (*file)->getBufferSize(),
                                              vocabSize);
    TokenizerData data;
    data.maxTokenLength = t.maxTokenLength();
    for (int32_t id = 0; id < t.vocabSize(); ++id) {
      data.pieces.push_back(t.piece(id));
      data.scores.push_back(t.score(id));
    }
    return data;
  } catch (const loom::Error &e) {
    llvm::StringRef what = e.what();
    what.consume_front("tokenizer: ");
    error = "tokenizer '" + path + "' is corrupt: " + what.str();
    return std::nullopt;
  }
}
