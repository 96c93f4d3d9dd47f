//===- HuginnImporter.cpp - Huginn / raven checkpoints to loom IR -----------===//
#include "frontends/huginn/HuginnImporter.h"
#include "dialects/Loom/IR/LoomOps.h"
#include "frontends/safetensors/SafetensorsReader.h"

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
/// Reads and parses the JSON file `path` (`what` names it in errors:
/// "cannot open config '<path>': ...", "config '<path>' is not valid
/// JSON: ...").
std::optional<llvm::json::Value> readJson(const std::string &path,
                                          StringRef what, std::string &error) {
  auto file = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!file) {
    error = ("cannot open " + what + " '" + path +
             "': " + file.getError().message())
                .str();
    return std::nullopt;
  }
  llvm::Expected<llvm::json::Value> json =
      llvm::json::parse((*file)->getBuffer());
  if (!json) {
    error = (what + " '" + path +
             "' is not valid JSON: " + llvm::toString(json.takeError()))
                .str();
    return std::nullopt;
  }
  return std::move(*json);
}

/// Reads config.json into a Config; `error` names the file and the key.
bool parseConfig(const std::string &path, Config &c, std::string &error) {
  std::optional<llvm::json::Value> json = readJson(path, "config", error);
  if (!json)
    return false;
  const llvm::json::Object *o = json->getAsObject();
  if (!o) {
    error = "config '" + path + "' is not a JSON object";
    return false;
  }
  auto fail = [&](const std::string &what) {
    error = "config '" + path + "': " + what;
    return false;
  };
  auto integer = [&](StringRef key, int64_t &out, std::optional<int64_t> dflt) {
    const llvm::json::Value *v = o->get(key);
    if (!v) {
      if (!dflt)
        return fail("missing integer '" + key.str() + "'");
      out = *dflt;
      return true;
    }
    std::optional<int64_t> i = v->getAsInteger();
    if (!i || *i <= 0)
      return fail("'" + key.str() + "' must be a positive integer");
    out = *i;
    return true;
  };
  auto number = [&](StringRef key, float &out, float dflt) {
    const llvm::json::Value *v = o->get(key);
    if (!v) {
      out = dflt;
      return true;
    }
    std::optional<double> x = v->getAsNumber();
    if (!x || !(*x > 0) || !std::isfinite(*x))
      return fail("'" + key.str() + "' must be a positive number");
    out = static_cast<float>(*x);
    return true;
  };
  auto boolean = [&](StringRef key, bool &out, bool dflt) {
    const llvm::json::Value *v = o->get(key);
    if (!v) {
      out = dflt;
      return true;
    }
    std::optional<bool> b = v->getAsBoolean();
    if (!b)
      return fail("'" + key.str() + "' must be true or false");
    out = *b;
    return true;
  };
  auto expectString = [&](StringRef key, StringRef want) {
    const llvm::json::Value *v = o->get(key);
    if (!v)
      return true;
    std::optional<StringRef> str = v->getAsString();
    if (!str || *str != want)
      return fail("'" + key.str() + "' is not \"" + want.str() +
                  "\": only that variant is supported");
    return true;
  };
  if (!integer("n_embd", c.dim, std::nullopt) ||
      !integer("num_attention_heads", c.nHeads, std::nullopt) ||
      !integer("vocab_size", c.vocabSize, std::nullopt) ||
      !integer("block_size", c.maxSeq, std::nullopt) ||
      !integer("n_layers_in_prelude", c.prelude, std::nullopt) ||
      !integer("n_layers_in_recurrent_block", c.core, std::nullopt) ||
      !integer("n_layers_in_coda", c.coda, std::nullopt) ||
      !integer("intermediate_size", c.intermediate, std::nullopt) ||
      !integer("num_key_value_heads", c.nKvHeads, c.nHeads) ||
      !integer("mean_recurrence", c.meanRecurrence, 32) ||
      !number("rope_base", c.ropeBase, 50000.0f) ||
      !number("norm_eps", c.normEps, 1e-6f) ||
      !boolean("qk_bias", c.qkBias, true) ||
      !boolean("tie_embeddings", c.tieEmbeddings, true) ||
      !expectString("injection_type", "linear") ||
      !expectString("block_class_name", "SandwichBlock") ||
      !expectString("mlp_class_name", "GatedMLP") ||
      !expectString("nonlin_name", "SiLU") ||
      !expectString("norm_class_name", "RMSNorm_llama"))
    return false;
  bool bias = false;
  if (!boolean("bias", bias, false))
    return false;
  if (bias)
    return fail("'bias' is true: linear biases are not part of Huginn");
  if (c.dim % c.nHeads != 0)
    return fail("n_embd " + std::to_string(c.dim) +
                " is not a multiple of num_attention_heads " +
                std::to_string(c.nHeads));
  if (c.nKvHeads != c.nHeads)
    return fail("num_key_value_heads must equal num_attention_heads (Huginn "
                "is multi-head; the qk_bias layout assumes it)");
  if (c.headDim() % 2 != 0)
    return fail("the head size " + std::to_string(c.headDim()) +
                " is odd: rope needs pairs");
  if (const llvm::json::Value *n = o->get("n_layers")) {
    std::optional<int64_t> total = n->getAsInteger();
    if (!total || *total != c.prelude + c.core + c.coda)
      return fail("n_layers disagrees with prelude + recurrent block + coda");
  }
  return true;
}

// A tensor and the file that holds it.
struct Located {
  const st::SafetensorsFile *file;
  const st::SafetensorsTensor *tensor;
};

// The checkpoint's tensors: model.safetensors, or the shards that
// model.safetensors.index.json maps each tensor name to (HF's layout for
// checkpoints too large for one file, as the published huginn-0125's).
struct Weights {
  std::string path; // model.safetensors, or the index, for messages
  std::vector<st::SafetensorsFile> files;
  llvm::StringMap<size_t> fileOf; // sharded: tensor name -> files index

  bool open(StringRef folder, std::string &error) {
    llvm::SmallString<256> single(folder), index(folder);
    llvm::sys::path::append(single, "model.safetensors");
    llvm::sys::path::append(index, "model.safetensors.index.json");
    if (llvm::sys::fs::exists(single) || !llvm::sys::fs::exists(index)) {
      path = std::string(single);
      return openFile(path, error);
    }
    path = std::string(index);
    std::optional<llvm::json::Value> json = readJson(path, "index", error);
    if (!json)
      return false;
    const llvm::json::Object *map =
        json->getAsObject() ? json->getAsObject()->getObject("weight_map")
                            : nullptr;
    if (!map) {
      error = path + ": no \"weight_map\" object";
      return false;
    }
    llvm::StringMap<size_t> shardIndex; // shard file name -> files index
    // The shards in a fixed order (the map's is unspecified).
    std::vector<std::string> names;
    for (const auto &entry : *map) {
      std::optional<StringRef> shard = entry.second.getAsString();
      if (!shard || shard->empty() || shard->contains('/') ||
          shard->contains('\\')) {
        error = path + ": tensor '" + st::printable(entry.first) +
                "' maps to something other than a shard file name";
        return false;
      }
      names.push_back(shard->str());
    }
    llvm::sort(names);
    names.erase(std::unique(names.begin(), names.end()), names.end());
    for (const std::string &name : names) {
      llvm::SmallString<256> p(folder);
      llvm::sys::path::append(p, name);
      if (!openFile(std::string(p), error))
        return false;
      shardIndex[name] = files.size() - 1;
    }
    for (const auto &entry : *map) {
      const size_t f = shardIndex[*entry.second.getAsString()];
      if (!files[f].find(entry.first)) {
        error = path + ": tensor '" + st::printable(entry.first) +
                "' is not in " + files[f].path().str() +
                ", where the index maps it";
        return false;
      }
      fileOf[entry.first] = f;
    }
    for (size_t f = 0; f < files.size(); ++f)
      for (const st::SafetensorsTensor &t : files[f].tensors()) {
        auto it = fileOf.find(t.name);
        if (it == fileOf.end() || it->second != f) {
          error = files[f].path().str() + ": tensor '" + st::printable(t.name) +
                  "' is not mapped to this shard by " + path;
          return false;
        }
      }
    return true;
  }

  bool openFile(const std::string &p, std::string &error) {
    llvm::Expected<st::SafetensorsFile> file = st::SafetensorsFile::open(p);
    if (!file) {
      error = llvm::toString(file.takeError());
      return false;
    }
    files.push_back(std::move(*file));
    return true;
  }

  std::optional<Located> find(StringRef name) const {
    if (fileOf.empty()) {
      const st::SafetensorsTensor *t = files[0].find(name);
      return t ? std::optional<Located>(Located{&files[0], t}) : std::nullopt;
    }
    auto it = fileOf.find(name);
    if (it == fileOf.end())
      return std::nullopt;
    return Located{&files[it->second], files[it->second].find(name)};
  }
};

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

  Weights weights;
  if (!weights.open(llvm::sys::path::parent_path(ckpt.configPath), error))
    return std::nullopt;
  ckpt.weightsPath = weights.path;
  const Config &c = ckpt.config;
  int64_t d = c.dim, I = c.intermediate, kv = c.nKvHeads * c.headDim();
  llvm::StringSet<> used;
  // Looks a tensor up and checks its shape and dtype (F32 or BF16).
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
    const bool bf16 = t.tensor->dtype == st::DType::BF16;
    const uint64_t size = bf16 ? 2 : 4;
    ckpt.weights[name] =
        WeightSource{t.file->path().str(), t.tensor->fileOffset + first * size,
                     elems * size, bf16};
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
  for (const st::SafetensorsFile &f : weights.files)
    for (const st::SafetensorsTensor &t : f.tensors())
      if (!used.contains(t.name)) {
        error = f.path().str() + ": unexpected tensor '" +
                st::printable(t.name) + "' (not part of a Huginn checkpoint)";
        return std::nullopt;
      }
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
                     ArrayAttr());
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
    q = RopeOp::create(b, l, rowsOf(d), q, pos, b.getI64IntegerAttr(hd), theta);
    k = RopeOp::create(b, l, rowsOf(kv), k, pos, b.getI64IntegerAttr(hd), theta);
    Value cache = KvCacheOp::create(b, l, cacheType, b.getI64IntegerAttr(layer++));
    Value a = AttentionOp::create(b, l, rowsOf(d), q, k, v, pos, cache,
                                  b.getI64IntegerAttr(c.nHeads),
                                  b.getI64IntegerAttr(c.nKvHeads),
                                  b.getI64IntegerAttr(hd));
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
