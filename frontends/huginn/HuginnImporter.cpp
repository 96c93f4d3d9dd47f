//===- HuginnImporter.cpp - Huginn / raven checkpoints to loom IR -----------===//
#include "frontends/huginn/HuginnImporter.h"
#include "dialects/Loom/IR/LoomOps.h"
#include "frontends/safetensors/HfCheckpoint.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace loom;
using namespace loom::huginn;
namespace st = loom::safetensors;

int64_t Config::parameterCount() const {
  int64_t d = dim, kv = nKvHeads * headDim();
  int64_t block = 4 * d + d * (d + 2 * kv) + (qkBias ? d + kv : 0) + d * d +
                  2 * intermediate * d + d * intermediate;
  return (prelude + core + coda) * block + vocabSize * d + d * 2 * d + d +
         (tieEmbeddings ? 0 : vocabSize * d);
}

namespace {
/// Reads config.json into a Config; `error` names the file and the key.
bool parseConfig(const std::string &path, Config &c, std::string &error) {
  std::optional<llvm::json::Value> json = hf::readJson(path, "config", error);
  if (!json)
    return false;
  const llvm::json::Object *o = json->getAsObject();
  if (!o) {
    error = "config '" + path + "' is not a JSON object";
    return false;
  }
  hf::ConfigReader r(path, *o, error);
  if (!r.integer("n_embd", c.dim, std::nullopt) ||
      !r.integer("num_attention_heads", c.nHeads, std::nullopt) ||
      !r.integer("vocab_size", c.vocabSize, std::nullopt) ||
      !r.integer("block_size", c.maxSeq, std::nullopt) ||
      !r.integer("n_layers_in_prelude", c.prelude, std::nullopt) ||
      !r.integer("n_layers_in_recurrent_block", c.core, std::nullopt) ||
      !r.integer("n_layers_in_coda", c.coda, std::nullopt) ||
      !r.integer("intermediate_size", c.intermediate, std::nullopt) ||
      !r.integer("num_key_value_heads", c.nKvHeads, c.nHeads) ||
      !r.integer("mean_recurrence", c.meanRecurrence, 32) ||
      !r.number("rope_base", c.ropeBase, 50000.0f) ||
      !r.number("norm_eps", c.normEps, 1e-6f) ||
      !r.boolean("qk_bias", c.qkBias, true) ||
      !r.boolean("tie_embeddings", c.tieEmbeddings, true) ||
      !r.expectString("injection_type", "linear") ||
      !r.expectString("block_class_name", "SandwichBlock") ||
      !r.expectString("mlp_class_name", "GatedMLP") ||
      !r.expectString("nonlin_name", "SiLU") ||
      !r.expectString("norm_class_name", "RMSNorm_llama"))
    return false;
  bool bias = false;
  if (!r.boolean("bias", bias, false))
    return false;
  if (bias)
    return r.fail("'bias' is true: linear biases are not part of Huginn");
  if (c.dim % c.nHeads != 0)
    return r.fail("n_embd " + std::to_string(c.dim) +
                  " is not a multiple of num_attention_heads " +
                  std::to_string(c.nHeads));
  if (c.nKvHeads != c.nHeads)
    return r.fail("num_key_value_heads must equal num_attention_heads (Huginn "
                  "is multi-head; the qk_bias layout assumes it)");
  if (c.headDim() % 2 != 0)
    return r.fail("the head size " + std::to_string(c.headDim()) +
                  " is odd: rope needs pairs");
  if (const llvm::json::Value *n = o->get("n_layers")) {
    std::optional<int64_t> total = n->getAsInteger();
    if (!total || *total != c.prelude + c.core + c.coda)
      return r.fail("n_layers disagrees with prelude + recurrent block + coda");
  }
  return true;
}

using hf::Located;

std::string blockName(StringRef group, int64_t i) {
  return ("transformer." + group + "." + Twine(i) + ".").str();
}
} // namespace

std::optional<Checkpoint> huginn::readCheckpoint(const std::string &path,
                                                 bool shapesOnly,
                                                 std::string &error) {
  Checkpoint ckpt;
  if (llvm::sys::fs::is_directory(path)) {
    llvm::SmallString<256> p(path);
    llvm::sys::path::append(p, "config.json");
    ckpt.configPath = std::string(p);
  } else {
    ckpt.configPath = path;
  }
  if (!parseConfig(ckpt.configPath, ckpt.config, error))
    return std::nullopt;
  if (shapesOnly)
    return ckpt;

  hf::CheckpointWeights weights;
  if (!weights.open(llvm::sys::path::parent_path(ckpt.configPath), error))
    return std::nullopt;
  ckpt.weightsPath = weights.path();
  const Config &c = ckpt.config;
  int64_t d = c.dim, I = c.intermediate, kv = c.nKvHeads * c.headDim();
  llvm::StringSet<> used;
  // Looks a tensor up and checks its shape and dtype (F32, BF16 or F16).
  auto tensor = [&](const std::string &name,
                    ArrayRef<int64_t> shape) -> std::optional<Located> {
    std::optional<Located> t = weights.find(name);
    if (!t) {
      error = ckpt.weightsPath + ": missing tensor '" + name + "'";
      return std::nullopt;
    }
    if (llvm::Error e = st::expect(*t->tensor, st::kWeightDTypes, shape)) {
      error = t->file->path().str() + ": " + llvm::toString(std::move(e));
      return std::nullopt;
    }
    used.insert(name);
    return t;
  };
  // `elems` values of tensor t from element `first` on, as a graph weight.
  auto slice = [&](const std::string &name, const Located &t, uint64_t first,
                   uint64_t elems) {
    const uint64_t size = st::dtypeSize(t.tensor->dtype);
    ckpt.weights[name] =
        WeightSource{t.file->path().str(), t.tensor->fileOffset + first * size,
                     elems * size, hf::weightEncoding(t.tensor->dtype)};
  };
  auto whole = [&](const std::string &name, ArrayRef<int64_t> shape) {
    std::optional<Located> t = tensor(name, shape);
    if (!t)
      return false;
    slice(name, *t, 0, t->tensor->numElements());
    return true;
  };
  if (!whole("transformer.wte.weight", {c.vocabSize, d}) ||
      !whole("transformer.adapter.weight", {d, 2 * d}) ||
      !whole("transformer.ln_f.weight", {d}))
    return std::nullopt;
  auto block = [&](const std::string &p) {
    for (const char *norm : {"norm_1", "norm_2", "norm_3", "norm_4"})
      if (!whole(p + norm + ".weight", {d}))
        return false;
    if (!whole(p + "attn.proj.weight", {d, d}) ||
        !whole(p + "mlp.proj.weight", {d, I}))
      return false;
    // Split the packed tensors into the parts the graph names.
    std::optional<Located> qkv =
        tensor(p + "attn.Wqkv.weight", {d + 2 * kv, d});
    std::optional<Located> fc = tensor(p + "mlp.fc.weight", {2 * I, d});
    if (!qkv || !fc)
      return false;
    slice(p + "attn.wq", *qkv, 0, d * d);
    slice(p + "attn.wk", *qkv, d * d, kv * d);
    slice(p + "attn.wv", *qkv, (d + kv) * d, kv * d);
    slice(p + "mlp.gate", *fc, 0, I * d);
    slice(p + "mlp.up", *fc, I * d, I * d);
    if (c.qkBias) {
      std::optional<Located> bias =
          tensor(p + "attn.qk_bias", {2, 1, c.nHeads, c.headDim()});
      if (!bias)
        return false;
      slice(p + "attn.q_bias", *bias, 0, d);
      slice(p + "attn.k_bias", *bias, d, d);
    }
    return true;
  };
  for (auto [group, count] : {std::pair<StringRef, int64_t>{"prelude", c.prelude},
                              {"core_block", c.core},
                              {"coda", c.coda}})
    for (int64_t i = 0; i < count; ++i)
      if (!block(blockName(group, i)))
        return std::nullopt;
  // lm_head: tied to wte (absent, or an identical copy), or its own matrix.
  if (std::optional<Located> head = weights.find("lm_head.weight")) {
    if (!whole("lm_head.weight", {c.vocabSize, d}))
      return std::nullopt;
    std::optional<Located> wte = weights.find("transformer.wte.weight");
    if (c.tieEmbeddings &&
        (head->tensor->dtype != wte->tensor->dtype ||
         head->file->data(*head->tensor) != wte->file->data(*wte->tensor))) {
      error = ckpt.weightsPath + ": lm_head.weight differs from "
              "transformer.wte.weight but tie_embeddings is true";
      return std::nullopt;
    }
  } else if (!c.tieEmbeddings) {
    error = ckpt.weightsPath + ": missing tensor 'lm_head.weight' "
            "(tie_embeddings is false)";
    return std::nullopt;
  }
  // The RoPE table is recomputed from positions; anything else is unknown.
  used.insert("freqs_cis");
  error = weights.unexpectedTensor(used, "Huginn");
  if (!error.empty())
    return std::nullopt;
  return ckpt;
}

OwningOpRef<ModuleOp> huginn::importCheckpoint(MLIRContext &ctx,
                                               const Checkpoint &ckpt,
                                               int64_t maxTokens) {
  ctx.loadDialect<LoomDialect, func::FuncDialect>();
  const Config &c = ckpt.config;
  std::string source = ckpt.weightsPath.empty() ? ckpt.configPath
                                                : ckpt.weightsPath;
  Location fileLoc = FileLineColLoc::get(&ctx, source, 0, 0);
  auto loc = [&](const std::string &name) {
    return NameLoc::get(StringAttr::get(&ctx, name), fileLoc);
  };
  OpBuilder b(&ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  module->setName("huginn");
  b.setInsertionPointToEnd(module->getBody());
  Type f32 = b.getF32Type();
  int64_t d = c.dim, I = c.intermediate, hd = c.headDim(),
          kv = c.nKvHeads * hd, layers = c.prelude + c.core + c.coda;
  module->getOperation()->setAttr(
      "loom.model",
      b.getDictionaryAttr({
          b.getNamedAttr("architecture", b.getStringAttr("huginn")),
          b.getNamedAttr("dim", b.getI64IntegerAttr(d)),
          b.getNamedAttr("hidden_dim", b.getI64IntegerAttr(I)),
          b.getNamedAttr("n_layers", b.getI64IntegerAttr(layers)),
          b.getNamedAttr("n_heads", b.getI64IntegerAttr(c.nHeads)),
          b.getNamedAttr("n_kv_heads", b.getI64IntegerAttr(c.nKvHeads)),
          b.getNamedAttr("vocab_size", b.getI64IntegerAttr(c.vocabSize)),
          b.getNamedAttr("max_seq", b.getI64IntegerAttr(c.maxSeq)),
          b.getNamedAttr("max_tokens", b.getI64IntegerAttr(maxTokens)),
          b.getNamedAttr("rope_theta", b.getF32FloatAttr(c.ropeBase)),
          b.getNamedAttr("norm_eps", b.getF32FloatAttr(c.normEps)),
          b.getNamedAttr("bos_id", b.getI64IntegerAttr(-1)),
          b.getNamedAttr("eos_id", b.getI64IntegerAttr(-1)),
          b.getNamedAttr("parameters", b.getI64IntegerAttr(c.parameterCount())),
      }));

  auto weight = [&](const std::string &name, ArrayRef<int64_t> shape) {
    WeightOp::create(b, loc(name), b.getStringAttr(name),
                     TypeAttr::get(RankedTensorType::get(shape, f32)),
                     ArrayAttr(), StringAttr());
    return FlatSymbolRefAttr::get(&ctx, name);
  };
  auto wte = weight("transformer.wte.weight", {c.vocabSize, d});
  auto adapter = weight("transformer.adapter.weight", {d, 2 * d});
  auto lnF = weight("transformer.ln_f.weight", {d});
  auto head = c.tieEmbeddings ? wte : weight("lm_head.weight", {c.vocabSize, d});
  struct SandwichWeights {
    std::string prefix;
    FlatSymbolRefAttr norm[4], wq, wk, wv, qBias, kBias, proj, gate, up, down;
  };
  auto declareBlock = [&](const std::string &p) {
    SandwichWeights blk;
    blk.prefix = p;
    for (int i = 0; i < 4; ++i)
      blk.norm[i] = weight(p + "norm_" + std::to_string(i + 1) + ".weight", {d});
    blk.wq = weight(p + "attn.wq", {d, d});
    blk.wk = weight(p + "attn.wk", {kv, d});
    blk.wv = weight(p + "attn.wv", {kv, d});
    if (c.qkBias) {
      blk.qBias = weight(p + "attn.q_bias", {d});
      blk.kBias = weight(p + "attn.k_bias", {kv});
    }
    blk.proj = weight(p + "attn.proj.weight", {d, d});
    blk.gate = weight(p + "mlp.gate", {I, d});
    blk.up = weight(p + "mlp.up", {I, d});
    blk.down = weight(p + "mlp.proj.weight", {d, I});
    return blk;
  };
  std::vector<SandwichWeights> prelude, core, coda;
  for (int64_t i = 0; i < c.prelude; ++i)
    prelude.push_back(declareBlock(blockName("prelude", i)));
  for (int64_t i = 0; i < c.core; ++i)
    core.push_back(declareBlock(blockName("core_block", i)));
  for (int64_t i = 0; i < c.coda; ++i)
    coda.push_back(declareBlock(blockName("coda", i)));

  int64_t dyn = ShapedType::kDynamic;
  auto ids = RankedTensorType::get({dyn}, b.getI32Type());
  auto rowsOf = [&](int64_t n) { return RankedTensorType::get({dyn, n}, f32); };
  auto fn = func::FuncOp::create(
      b, loc("forward"), "forward",
      b.getFunctionType({ids, ids, b.getI32Type()}, {rowsOf(c.vocabSize)}));
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  Value tokens = entry->getArgument(0), pos = entry->getArgument(1),
        iterations = entry->getArgument(2);
  auto cacheType = KvCacheType::get(&ctx, c.maxSeq, c.nKvHeads, hd, f32);
  auto eps = b.getF32FloatAttr(c.normEps);
  int64_t layer = 0;

  // The sandwich block: the residual is added before the post-norm, whose
  // output is the new stream.
  auto sandwich = [&](const SandwichWeights &blk, Value x) {
    Location l = loc(blk.prefix.substr(0, blk.prefix.size() - 1));
    Value h = RmsNormOp::create(b, l, x, blk.norm[0], eps);
    Value q = LinearOp::create(b, l, rowsOf(d), h, blk.wq);
    Value k = LinearOp::create(b, l, rowsOf(kv), h, blk.wk);
    Value v = LinearOp::create(b, l, rowsOf(kv), h, blk.wv);
    if (c.qkBias) {
      q = AddRowBiasOp::create(b, l, q, blk.qBias);
      k = AddRowBiasOp::create(b, l, k, blk.kBias);
    }
    auto theta = b.getF32FloatAttr(c.ropeBase);
    q = RopeOp::create(b, l, rowsOf(d), q, pos, b.getI64IntegerAttr(hd), theta,
                       DenseF32ArrayAttr(), /*scale=*/FloatAttr());
    k = RopeOp::create(b, l, rowsOf(kv), k, pos, b.getI64IntegerAttr(hd), theta,
                       DenseF32ArrayAttr(), /*scale=*/FloatAttr());
    Value cache = KvCacheOp::create(b, l, cacheType, b.getI64IntegerAttr(layer++));
    Value a = AttentionOp::create(
        b, l, rowsOf(d), q, k, v, pos, cache, b.getI64IntegerAttr(c.nHeads),
        b.getI64IntegerAttr(c.nKvHeads), b.getI64IntegerAttr(hd),
        /*window=*/IntegerAttr());
    Value o = LinearOp::create(b, l, rowsOf(d), a, blk.proj);
    x = RmsNormOp::create(b, l, AddOp::create(b, l, x, o), blk.norm[1], eps);
    h = RmsNormOp::create(b, l, x, blk.norm[2], eps);
    Value gate = LinearOp::create(b, l, rowsOf(I), h, blk.gate);
    Value up = LinearOp::create(b, l, rowsOf(I), h, blk.up);
    Value down = LinearOp::create(b, l, rowsOf(d), SiluMulOp::create(b, l, gate, up),
                                  blk.down);
    return Value(RmsNormOp::create(b, l, AddOp::create(b, l, x, down),
                                   blk.norm[3], eps));
  };

  Value e = EmbedOp::create(b, loc("transformer.wte"), rowsOf(d), tokens, wte,
                            b.getF32FloatAttr(std::sqrt(float(d))));
  for (const SandwichWeights &blk : prelude)
    e = sandwich(blk, e);
  // like-init: trunc_normal(0, sqrt(2/(5d)), +-3 std) * sqrt(d).
  Value s0 = InitStateOp::create(
      b, loc("initial_state"), rowsOf(d), pos,
      b.getF32FloatAttr(std::sqrt(2.0f / (5.0f * d))),
      b.getF32FloatAttr(std::sqrt(float(d))));
  auto loop = LoopOp::create(
      b, loc("transformer.core_block"), rowsOf(d), s0, iterations,
      b.getI64IntegerAttr(c.meanRecurrence),
      b.getI64IntegerAttr(std::max<int64_t>(c.meanRecurrence, 32)),
      b.getStringAttr("none"), b.getF32FloatAttr(0.0f));
  {
    OpBuilder::InsertionGuard guard(b);
    Block *body = b.createBlock(&loop.getBody(), {}, {rowsOf(d)},
                                {loc("state")});
    Value state = body->getArgument(0);
    Value x = LinearOp::create(
        b, loc("transformer.adapter"), rowsOf(d),
        ConcatOp::create(b, loc("transformer.adapter"), rowsOf(2 * d), state, e),
        adapter);
    for (const SandwichWeights &blk : core)
      x = sandwich(blk, x);
    YieldOp::create(b, loc("transformer.core_block"), x);
  }
  Value x = RmsNormOp::create(b, loc("transformer.ln_f"), loop.getResult(), lnF, eps);
  for (const SandwichWeights &blk : coda)
    x = sandwich(blk, x);
  x = RmsNormOp::create(b, loc("transformer.ln_f"), x, lnF, eps);
  Value logits =
      LogitsOp::create(b, loc("lm_head"), rowsOf(c.vocabSize), x, head);
  func::ReturnOp::create(b, loc("forward"), logits);
  return module;
}
