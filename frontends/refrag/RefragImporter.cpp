//===- RefragImporter.cpp - REFRAG bundles to loom IR -----------------------===//
#include "frontends/refrag/RefragImporter.h"
#include "dialects/Loom/IR/LoomOps.h"
#include "frontends/safetensors/HfCheckpoint.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace loom;
using namespace loom::refrag;
namespace st = loom::safetensors;

std::optional<Bundle> refrag::readBundle(const std::string &decoderPath,
                                         const std::string &bundlePath,
                                         std::string &error) {
  std::optional<llama2c::Checkpoint> decoder =
      llama2c::readCheckpoint(decoderPath, error);
  if (!decoder)
    return std::nullopt;
  llvm::Expected<st::SafetensorsFile> file = st::SafetensorsFile::open(bundlePath);
  if (!file) {
    error = llvm::toString(file.takeError());
    return std::nullopt;
  }
  Bundle b{std::move(*decoder), {}, bundlePath};
  EncoderConfig &c = b.encoder;
  const llvm::StringMap<std::string> &meta = file->metadata();
  auto fail = [&](const std::string &what) {
    error = bundlePath + ": " + what;
    return std::nullopt;
  };
  auto format = meta.find("format");
  if (format == meta.end())
    return fail("not a REFRAG bundle: its __metadata__ has no \"format\"");
  if (!llvm::StringRef(format->second).starts_with("loom-refrag"))
    return fail("not a REFRAG bundle: __metadata__ \"format\" is \"" +
                format->second + "\", expected \"loom-refrag...\"");
  for (auto [key, out] :
       std::initializer_list<std::pair<const char *, int64_t *>>{
           {"encoder.vocab_size", &c.vocabSize},
           {"encoder.d_model", &c.dim},
           {"encoder.n_layers", &c.nLayers},
           {"encoder.n_heads", &c.nHeads},
           {"encoder.head_dim", &c.headDim},
           {"encoder.ffn_dim", &c.ffnDim},
           {"encoder.max_chunk_len", &c.maxChunkLen},
           {"encoder.pos_emb_rows", &c.posRows},
           {"encoder.cls_token_id", &c.clsId},
           {"projector.hidden", &c.projectorHidden},
           {"decoder.dim", &c.decoderDim}}) {
    auto it = meta.find(key);
    if (it == meta.end())
      return fail(std::string("__metadata__ lacks \"") + key + "\"");
    // Bounded so products of sizes cannot overflow.
    if (llvm::StringRef(it->second).getAsInteger(10, *out) || *out < 0 ||
        *out > (int64_t(1) << 24))
      return fail(std::string("__metadata__ \"") + key +
                  "\" is not an integer in 0..16777216: \"" + it->second +
                  "\"");
  }
  const llama2c::Config &d = b.decoder.config;
  if (c.decoderDim != d.dim)
    return fail("the projector maps to " + std::to_string(c.decoderDim) +
                " but the decoder's embedding width is " +
                std::to_string(d.dim));
  if (c.vocabSize != d.vocabSize)
    return fail("the encoder reads " + std::to_string(c.vocabSize) +
                " token ids but the decoder's vocabulary has " +
                std::to_string(d.vocabSize));
  if (c.nHeads * c.headDim != c.dim || c.dim == 0)
    return fail("encoder heads x head_dim (" + std::to_string(c.nHeads) + " x " +
                std::to_string(c.headDim) + ") is not d_model " +
                std::to_string(c.dim));
  if (c.maxChunkLen < 1)
    return fail("max_chunk_len must be at least 1");
  if (c.posRows < c.maxChunkLen + 1)
    return fail("pos_emb_rows " + std::to_string(c.posRows) +
                " cannot hold CLS + max_chunk_len " +
                std::to_string(c.maxChunkLen) + " positions");
  if (c.clsId >= c.vocabSize)
    return fail("cls_token_id " + std::to_string(c.clsId) +
                " is outside the vocabulary (0.." +
                std::to_string(c.vocabSize - 1) + ")");

  int64_t E = c.dim, F = c.ffnDim, H = c.projectorHidden, D = c.decoderDim;
  auto add = [&](const std::string &name,
                 llvm::ArrayRef<int64_t> shape) -> bool {
    const st::SafetensorsTensor *t = file->find(name);
    if (!t) {
      error = bundlePath + ": missing tensor '" + name + "'";
      return false;
    }
    if (llvm::Error e = st::expect(*t, st::kWeightDTypes, shape)) {
      error = bundlePath + ": " + llvm::toString(std::move(e));
      return false;
    }
    b.decoder.weights[name] = WeightSource{bundlePath, t->fileOffset, t->bytes,
                                           hf::weightEncoding(t->dtype)};
    return true;
  };
  if (!add("encoder.tok_emb", {c.vocabSize, E}) ||
      !add("encoder.pos_emb", {c.posRows, E}) ||
      !add("encoder.ln_f.weight", {E}) || !add("encoder.ln_f.bias", {E}) ||
      !add("projector.fc1.weight", {H, E}) || !add("projector.fc1.bias", {H}) ||
      !add("projector.fc2.weight", {D, H}) || !add("projector.fc2.bias", {D}) ||
      !add("policy.weight", {1, E}) || !add("policy.bias", {1}))
    return std::nullopt;
  for (int64_t l = 0; l < c.nLayers; ++l) {
    std::string p = "encoder.layers." + std::to_string(l) + ".";
    for (const char *ln : {"ln1", "ln2"})
      if (!add(p + ln + ".weight", {E}) || !add(p + ln + ".bias", {E}))
        return std::nullopt;
    for (const char *m : {"q", "k", "v", "o"})
      if (!add(p + "attn." + m + ".weight", {E, E}) ||
          !add(p + "attn." + m + ".bias", {E}))
        return std::nullopt;
    if (!add(p + "ffn.fc1.weight", {F, E}) || !add(p + "ffn.fc1.bias", {F}) ||
        !add(p + "ffn.fc2.weight", {E, F}) || !add(p + "ffn.fc2.bias", {E}))
      return std::nullopt;
  }
  for (const st::SafetensorsTensor &t : file->tensors())
    if (!b.decoder.weights.count(t.name))
      return fail("unexpected tensor '" + t.name + "' (a bundle of " +
                  std::to_string(c.nLayers) + " encoder layer" +
                  (c.nLayers == 1 ? "" : "s") + " has no such tensor)");
  return b;
}

OwningOpRef<ModuleOp> refrag::importBundle(MLIRContext &ctx, Bundle &bundle,
                                           int64_t maxTokens) {
  OwningOpRef<ModuleOp> module =
      llama2c::importCheckpoint(ctx, bundle.decoder, maxTokens);
  module->setName("refrag");
  const EncoderConfig &c = bundle.encoder;
  Location fileLoc = FileLineColLoc::get(&ctx, bundle.bundlePath, 0, 0);
  auto loc = [&](const std::string &name) {
    return NameLoc::get(StringAttr::get(&ctx, name), fileLoc);
  };
  OpBuilder b(&ctx);
  Type f32 = b.getF32Type();
  int64_t E = c.dim, F = c.ffnDim, H = c.projectorHidden, D = c.decoderDim;
  module->getOperation()->setAttr(
      "loom.refrag",
      b.getDictionaryAttr({
          b.getNamedAttr("cls_token_id", b.getI64IntegerAttr(c.clsId)),
          b.getNamedAttr("max_chunk_len", b.getI64IntegerAttr(c.maxChunkLen)),
          b.getNamedAttr("encoder_dim", b.getI64IntegerAttr(E)),
      }));

  // Weights go with the decoder's, before the functions.
  b.setInsertionPoint(&module->getBody()->front());
  auto weight = [&](const std::string &name, ArrayRef<int64_t> shape) {
    WeightOp::create(b, loc(name), b.getStringAttr(name),
                     TypeAttr::get(RankedTensorType::get(shape, f32)),
                     ArrayAttr(), StringAttr());
    return FlatSymbolRefAttr::get(&ctx, name);
  };
  auto tokEmb = weight("encoder.tok_emb", {c.vocabSize, E});
  auto posEmb = weight("encoder.pos_emb", {c.posRows, E});
  struct Layer {
    FlatSymbolRefAttr ln1w, ln1b, ln2w, ln2b, q, qb, k, kb, v, vb, o, ob, fc1,
        fc1b, fc2, fc2b;
  };
  std::vector<Layer> layers;
  for (int64_t l = 0; l < c.nLayers; ++l) {
    std::string p = "encoder.layers." + std::to_string(l) + ".";
    layers.push_back({weight(p + "ln1.weight", {E}), weight(p + "ln1.bias", {E}),
                      weight(p + "ln2.weight", {E}), weight(p + "ln2.bias", {E}),
                      weight(p + "attn.q.weight", {E, E}), weight(p + "attn.q.bias", {E}),
                      weight(p + "attn.k.weight", {E, E}), weight(p + "attn.k.bias", {E}),
                      weight(p + "attn.v.weight", {E, E}), weight(p + "attn.v.bias", {E}),
                      weight(p + "attn.o.weight", {E, E}), weight(p + "attn.o.bias", {E}),
                      weight(p + "ffn.fc1.weight", {F, E}), weight(p + "ffn.fc1.bias", {F}),
                      weight(p + "ffn.fc2.weight", {E, F}), weight(p + "ffn.fc2.bias", {E})});
  }
  auto lnFw = weight("encoder.ln_f.weight", {E});
  auto lnFb = weight("encoder.ln_f.bias", {E});
  auto pf1 = weight("projector.fc1.weight", {H, E});
  auto pf1b = weight("projector.fc1.bias", {H});
  auto pf2 = weight("projector.fc2.weight", {D, H});
  auto pf2b = weight("projector.fc2.bias", {D});
  auto pol = weight("policy.weight", {1, E});
  auto polb = weight("policy.bias", {1});

  int64_t dyn = ShapedType::kDynamic;
  auto ids = RankedTensorType::get({dyn}, b.getI32Type());
  auto rowsOf = [&](int64_t n, int64_t r = ShapedType::kDynamic) {
    return RankedTensorType::get({r, n}, f32);
  };
  auto eps = b.getF32FloatAttr(c.eps);
  b.setInsertionPointToEnd(module->getBody());
  // y = x W^T + b
  auto linear = [&](Location l, Value x, FlatSymbolRefAttr w,
                    FlatSymbolRefAttr bias, int64_t out) -> Value {
    Value y = LinearOp::create(b, l, rowsOf(out), x, w);
    return AddRowBiasOp::create(b, l, y, bias);
  };

  // @encode_chunk: [CLS] + chunk ids -> ln_f(x)[0].
  {
    auto fn = func::FuncOp::create(b, loc("encoder"), "encode_chunk",
                                   b.getFunctionType({ids}, {rowsOf(E, 1)}));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(fn.addEntryBlock());
    Location l = loc("encoder");
    Value x = EmbedOp::create(b, l, rowsOf(E), fn.getArgument(0), tokEmb,
                              b.getF32FloatAttr(1.0f));
    x = AddPositionsOp::create(b, l, x, posEmb);
    for (auto [i, w] : llvm::enumerate(layers)) {
      Location ll = loc("encoder.layers." + std::to_string(i));
      Value h = LayerNormOp::create(b, ll, x, w.ln1w, w.ln1b, eps);
      Value q = linear(ll, h, w.q, w.qb, E);
      Value k = linear(ll, h, w.k, w.kb, E);
      Value v = linear(ll, h, w.v, w.vb, E);
      Value a = SelfAttentionOp::create(b, ll, q, k, v,
                                        b.getI64IntegerAttr(c.nHeads),
                                        b.getI64IntegerAttr(c.headDim));
      x = AddOp::create(b, ll, x, linear(ll, a, w.o, w.ob, E));
      h = LayerNormOp::create(b, ll, x, w.ln2w, w.ln2b, eps);
      Value f = GeluOp::create(b, ll, linear(ll, h, w.fc1, w.fc1b, F));
      x = AddOp::create(b, ll, x, linear(ll, f, w.fc2, w.fc2b, E));
    }
    x = LayerNormOp::create(b, l, x, lnFw, lnFb, eps);
    Value cls = TakeRowOp::create(b, l, rowsOf(E, 1), x, b.getI64IntegerAttr(0));
    func::ReturnOp::create(b, l, cls);
  }
  // @project_chunk: fc2(gelu(fc1(e))) into the decoder's embedding width.
  {
    auto fn = func::FuncOp::create(b, loc("projector"), "project_chunk",
                                   b.getFunctionType({rowsOf(E)}, {rowsOf(D)}));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(fn.addEntryBlock());
    Location l = loc("projector");
    Value h = GeluOp::create(b, l, linear(l, fn.getArgument(0), pf1, pf1b, H));
    func::ReturnOp::create(b, l, linear(l, h, pf2, pf2b, D));
  }
  // @score_chunk: the expansion policy's score per chunk embedding.
  {
    auto fn = func::FuncOp::create(b, loc("policy"), "score_chunk",
                                   b.getFunctionType({rowsOf(E)}, {rowsOf(1)}));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(fn.addEntryBlock());
    Location l = loc("policy");
    func::ReturnOp::create(b, l, linear(l, fn.getArgument(0), pol, polb, 1));
  }
  return module;
}
