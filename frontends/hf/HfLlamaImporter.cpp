//===- HfLlamaImporter.cpp - Hugging Face Llama checkpoints ---------------===//
#include "frontends/hf/HfLlamaImporter.h"
#include "frontends/llama2c/RopeScaling.h"
#include "frontends/safetensors/HfCheckpoint.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include "loom/error.h"
#include "loom/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace loom;
using namespace loom::hf;
using llvm::StringRef;
namespace st = loom::safetensors;

namespace {
/// PATH/config.json for a folder, else PATH.
std::string configPathOf(const std::string &path) {
  if (!llvm::sys::fs::is_directory(path))
    return path;
  llvm::SmallString<256> p(path);
  llvm::sys::path::append(p, "config.json");
  return std::string(p);
}

/// A token id key: absent -> `dflt`; otherwise a non-negative integer.
bool tokenId(ConfigReader &r, StringRef key, int64_t &out, int64_t dflt) {
  const llvm::json::Value *v = r.object().get(key);
  if (!v || v->kind() == llvm::json::Value::Null) {
    out = dflt;
    return true;
  }
  if (v->getAsArray())
    return r.fail("'" + key.str() + "' is a list: a model has one such token");
  std::optional<int64_t> i = v->getAsInteger();
  if (!i || *i < 0)
    return r.fail("'" + key.str() + "' must be a token id (an integer >= 0)");
  out = *i;
  return true;
}

/// eos_token_id: an id, or a list of them (Llama 3.1 Instruct: the first is
/// EOS, the others end a generation too).
bool eosIds(ConfigReader &r, llama2c::Config &c) {
  const llvm::json::Array *list = r.object().getArray("eos_token_id");
  if (!list)
    return tokenId(r, "eos_token_id", c.eosId, 2);
  if (list->empty())
    return r.fail("'eos_token_id' is an empty list");
  for (const llvm::json::Value &v : *list) {
    std::optional<int64_t> id = v.getAsInteger();
    if (!id || *id < 0)
      return r.fail("'eos_token_id' lists something other than a token id");
    if (&v == &list->front())
      c.eosId = *id;
    else if (*id != c.eosId && llvm::find(c.stopIds, *id) == c.stopIds.end())
      c.stopIds.push_back(*id);
  }
  return true;
}

/// Absent, null or false (the Llama features Loom's graph does not have).
bool absentOrFalse(ConfigReader &r, StringRef key, StringRef why) {
  const llvm::json::Value *v = r.object().get(key);
  if (!v || v->kind() == llvm::json::Value::Null)
    return true;
  if (std::optional<bool> b = v->getAsBoolean(); b && !*b)
    return true;
  return r.fail("'" + key.str() + "' is set: " + why.str() +
                " is not supported");
}

/// rope_scaling: absent; Llama 3.1's ("rope_type": "llama3"), which
/// divides each pair's frequency by a factor between 1 (short wavelengths)
/// and `factor` (long ones), as transformers' _compute_llama3_parameters and
/// llama.cpp's converter (its rope_freqs tensor) do; "linear"; "yarn"
/// (Qwen 2.5's long contexts; RopeScaling.h); or "longrope" / "su" (Phi-3
/// 128k, Phi-3.5).
bool ropeScaling(ConfigReader &r, llama2c::Config &c) {
  const llvm::json::Value *v = r.object().get("rope_scaling");
  if (!v || v->kind() == llvm::json::Value::Null)
    return true;
  const llvm::json::Object *o = v->getAsObject();
  if (!o)
    return r.fail("'rope_scaling' is not an object");
  std::optional<StringRef> type = o->getString("rope_type");
  if (!type)
    type = o->getString("type");
  auto number = [&](StringRef key, double &out) {
    std::optional<double> x = o->getNumber(key);
    if (!x || !(*x > 0) || !std::isfinite(*x))
      return r.fail("'rope_scaling' needs a positive \"" + key.str() + "\"");
    out = *x;
    return true;
  };
  // An optional positive number: `out` keeps its default when absent or
  // null.
  auto optionalNumber = [&](StringRef key, double &out) {
    const llvm::json::Value *x = o->get(key);
    return !x || x->kind() == llvm::json::Value::Null || number(key, out);
  };
  if (type == std::optional<StringRef>("linear")) {
    double factor;
    if (!number("factor", factor))
      return false;
    llama2c::linearRopeScaling(c, factor);
    return true;
  }
  if (type == std::optional<StringRef>("yarn")) {
    // transformers' defaults: the config's context as the original one,
    // beta_fast 32, beta_slow 1, the attention factor from the factor.
    double factor, original = double(c.maxSeq), betaFast = 32, betaSlow = 1;
    double mscale = 0, mscaleAllDim = 0, attention = 0;
    if (!number("factor", factor) ||
        !optionalNumber("original_max_position_embeddings", original) ||
        !optionalNumber("beta_fast", betaFast) ||
        !optionalNumber("beta_slow", betaSlow) ||
        !optionalNumber("mscale", mscale) ||
        !optionalNumber("mscale_all_dim", mscaleAllDim) ||
        !optionalNumber("attention_factor", attention))
      return false;
    if (o->getBoolean("truncate") == std::optional<bool>(false))
      return r.fail("'rope_scaling': YaRN with \"truncate\": false is not "
                    "supported");
    if (attention == 0)
      attention = mscale > 0 && mscaleAllDim > 0
                      ? llama2c::yarnMscale(factor, mscale) /
                            llama2c::yarnMscale(factor, mscaleAllDim)
                      : llama2c::yarnMscale(factor);
    llama2c::yarnRopeScaling(c, factor, original, betaFast, betaSlow,
                             attention);
    return true;
  }
  if (type == std::optional<StringRef>("longrope") ||
      type == std::optional<StringRef>("su")) {
    // Per-pair divisors for contexts up to the original one and past it;
    // the original context is the config's original_max_position_embeddings
    // (Phi-3's), else the rope_scaling's, else max_position_embeddings (the
    // long factors then only for a longer --context-length).
    auto factors = [&](StringRef key, std::vector<float> &out) {
      const llvm::json::Array *a = o->getArray(key);
      if (!a || int64_t(a->size()) != c.headDim() / 2)
        return r.fail("'rope_scaling' needs \"" + key.str() +
                      "\": " + std::to_string(c.headDim() / 2) +
                      " positive numbers (head_dim / 2)");
      out.clear();
      for (const llvm::json::Value &v : *a) {
        std::optional<double> x = v.getAsNumber();
        if (!x || !(*x > 0) || !std::isfinite(*x))
          return r.fail("'rope_scaling' \"" + key.str() +
                        "\" holds something other than a positive number");
        out.push_back(float(*x));
      }
      return true;
    };
    // The stretch the attention factor is for: max_position_embeddings
    // over the original context, or (without one) rope_scaling's factor,
    // as transformers' _compute_longrope_parameters takes them.
    double original = 0, stretch = 0, attention = 0;
    if (std::optional<int64_t> top =
            r.object().getInteger("original_max_position_embeddings"))
      original = double(*top);
    else if (!optionalNumber("original_max_position_embeddings", original))
      return false;
    if (original > 0) {
      stretch = double(c.maxSeq) / original;
    } else {
      original = double(c.maxSeq);
      if (!optionalNumber("factor", stretch))
        return false;
    }
    if (!(original > 1))
      return r.fail("'original_max_position_embeddings' must be an integer "
                    "> 1");
    if (!factors("short_factor", c.ropeFreqFactors) ||
        !factors("long_factor", c.ropeFreqFactorsLong) ||
        !optionalNumber("attention_factor", attention))
      return false;
    c.ropeOriginalContext = int64_t(original);
    c.ropeScale = float(
        attention > 0 ? attention
                      : llama2c::longRopeAttentionFactor(stretch, original));
    return true;
  }
  if (type != std::optional<StringRef>("llama3"))
    return r.fail("'rope_scaling' of type '" +
                  st::printable(type.value_or("?")) +
                  "' is not supported (Loom implements \"llama3\", "
                  "\"linear\", \"yarn\" and \"longrope\")");
  double factor, low, high, context;
  if (!number("factor", factor) || !number("low_freq_factor", low) ||
      !number("high_freq_factor", high) ||
      !number("original_max_position_embeddings", context))
    return false;
  if (!(high > low))
    return r.fail("'rope_scaling': high_freq_factor must exceed "
                  "low_freq_factor");
  // In float32 throughout, as the references' torch code computes it (the
  // Python scalars rounded to float32 where they meet a tensor).
  const float lowWavelen = float(context / low),
              highWavelen = float(context / high);
  const int64_t hd = c.headDim();
  c.ropeFreqFactors.clear();
  for (int64_t j = 0; j < hd; j += 2) {
    const float freq = 1.0f / std::pow(c.ropeTheta, float(j) / float(hd));
    const float wavelen = float(2 * M_PI) / freq;
    float f = float(factor);
    if (wavelen < highWavelen) {
      f = 1.0f;
    } else if (!(wavelen > lowWavelen)) {
      const float smooth =
          (float(context) / wavelen - float(low)) / float(high - low);
      f = 1.0f / ((1.0f - smooth) / float(factor) + smooth);
    }
    c.ropeFreqFactors.push_back(f);
  }
  return true;
}

/// The largest chat template read (published ones are at most ~100 KB; the
/// runtime reads up to 1 MiB).
constexpr uint64_t kMaxChatTemplateBytes = uint64_t(1) << 20;

/// generation_config.json beside config.json, where present: its
/// eos_token_id (an id or a list; Llama 3 Instruct's lists <|eot_id|>)
/// adds stop ids.
bool readGenerationConfig(const std::string &configPath, llama2c::Config &c,
                          std::string &error) {
  llvm::SmallString<256> path(llvm::sys::path::parent_path(configPath));
  llvm::sys::path::append(path, "generation_config.json");
  if (!llvm::sys::fs::exists(path))
    return true;
  std::optional<llvm::json::Value> json =
      readJson(std::string(path), "generation config", error);
  if (!json)
    return false;
  const llvm::json::Object *o = json->getAsObject();
  const llvm::json::Value *eos = o ? o->get("eos_token_id") : nullptr;
  if (!eos || eos->kind() == llvm::json::Value::Null)
    return true;
  std::vector<llvm::json::Value> ids;
  if (const llvm::json::Array *list = eos->getAsArray())
    ids.assign(list->begin(), list->end());
  else
    ids.push_back(*eos);
  for (const llvm::json::Value &v : ids) {
    std::optional<int64_t> id = v.getAsInteger();
    if (!id || *id < 0 || *id >= c.vocabSize) {
      error = "generation config '" + std::string(path) +
              "': eos_token_id must be token ids inside the vocabulary of " +
              std::to_string(c.vocabSize);
      return false;
    }
    if (*id != c.eosId && llvm::find(c.stopIds, *id) == c.stopIds.end())
      c.stopIds.push_back(*id);
  }
  return true;
}

bool parseConfig(const std::string &path, llama2c::Config &c,
                 std::string &error) {
  std::optional<llvm::json::Value> json = readJson(path, "config", error);
  if (!json)
    return false;
  const llvm::json::Object *o = json->getAsObject();
  if (!o) {
    error = "config '" + path + "' is not a JSON object";
    return false;
  }
  ConfigReader r(path, *o, error);
  bool tied = false;
  // Mistral is Llama's graph with sliding-window attention (v0.1's 4096;
  // null from v0.2 on).
  const std::optional<StringRef> type = o->getString("model_type");
  // Phi-3 is Llama's graph with packed projections and a sliding window.
  const bool phi3 = type == std::optional<StringRef>("phi3");
  c.packedProjections = phi3;
  const bool mistral = type == std::optional<StringRef>("mistral") || phi3;
  // Qwen 2 (and 2.5) is Llama's graph with biases on q, k and v.
  const bool qwen2 = type == std::optional<StringRef>("qwen2");
  c.qkvBias = qwen2;
  // The window, where the model has one: Mistral's and Phi-3's
  // sliding_window (null: none) in every layer; Qwen 2's only under
  // use_sliding_window, in the layers from max_window_layers on
  // (transformers' Qwen2Config: layer_types). Absent keys take the
  // transformers config classes' defaults: a window of 4096 for Mistral and
  // Qwen 2, none for Phi-3; max_window_layers 28.
  bool window = mistral;
  if (qwen2 && !r.boolean("use_sliding_window", window, false))
    return false;
  if (window) {
    const llvm::json::Value *w = o->get("sliding_window");
    if (!w)
      c.slidingWindow = phi3 ? 0 : 4096;
    else if (w->kind() != llvm::json::Value::Null &&
             !r.integer("sliding_window", c.slidingWindow, std::nullopt))
      return false;
    if (qwen2) {
      const llvm::json::Value *m = o->get("max_window_layers");
      std::optional<int64_t> from = m ? m->getAsInteger() : 28;
      if (!from || *from < 0)
        return r.fail("'max_window_layers' must be an integer >= 0");
      c.slidingWindowFrom = *from;
    }
  }
  if (const llvm::json::Value *f = o->get("partial_rotary_factor");
      f && f->getAsNumber() != std::optional<double>(1.0))
    return r.fail("'partial_rotary_factor' is set: partial rotary embeddings "
                  "are not supported");
  if ((!mistral && !qwen2 && !r.expectString("model_type", "llama")) ||
      !r.integer("hidden_size", c.dim, std::nullopt) ||
      !r.integer("intermediate_size", c.hiddenDim, std::nullopt) ||
      !r.integer("num_hidden_layers", c.nLayers, std::nullopt) ||
      !r.integer("num_attention_heads", c.nHeads, std::nullopt) ||
      !r.integer("vocab_size", c.vocabSize, std::nullopt) ||
      !r.integer("max_position_embeddings", c.maxSeq, std::nullopt) ||
      !r.integer("num_key_value_heads", c.nKvHeads, c.nHeads) ||
      // LlamaConfig's defaults.
      !r.number("rms_norm_eps", c.normEps, 1e-6f) ||
      !r.number("rope_theta", c.ropeTheta, 10000.0f) ||
      !r.boolean("tie_word_embeddings", tied, false) ||
      !tokenId(r, "bos_token_id", c.bosId, 1) || !eosIds(r, c) ||
      !r.expectString("hidden_act", "silu") ||
      !absentOrFalse(r, "attention_bias",
                     "a bias on the q/k/v/o projections") ||
      !absentOrFalse(r, "mlp_bias", "a bias on the MLP projections"))
    return false;
  if (!o->get("model_type"))
    return r.fail("missing \"model_type\" (expected \"llama\", \"mistral\", "
                  "\"qwen2\" or \"phi3\")");
  // (A SentencePiece-style vocabulary needs them to be 1 and 2:
  // readTokenizerJson and loomc check that.)
  std::vector<std::pair<const char *, int64_t>> ids = {
      {"bos_token_id", c.bosId}, {"eos_token_id", c.eosId}};
  for (int64_t id : c.stopIds)
    ids.push_back({"eos_token_id", id});
  for (auto [key, id] : ids)
    if (id >= c.vocabSize)
      return r.fail(std::string(key) + " " + std::to_string(id) +
                    " is outside the vocabulary of " +
                    std::to_string(c.vocabSize));
  c.sharedClassifier = tied;
  if (c.dim % c.nHeads != 0)
    return r.fail("hidden_size " + std::to_string(c.dim) +
                  " is not a multiple of num_attention_heads " +
                  std::to_string(c.nHeads));
  if (c.nHeads % c.nKvHeads != 0)
    return r.fail("num_attention_heads " + std::to_string(c.nHeads) +
                  " is not a multiple of num_key_value_heads " +
                  std::to_string(c.nKvHeads));
  int64_t headDim = c.headDim();
  if (!r.integer("head_dim", headDim, c.headDim()))
    return false;
  if (headDim != c.headDim())
    return r.fail("head_dim " + std::to_string(headDim) +
                  " differs from hidden_size / num_attention_heads = " +
                  std::to_string(c.headDim()) + ": not supported");
  if (c.headDim() % 2 != 0)
    return r.fail("the head size " + std::to_string(c.headDim()) +
                  " is odd: rope needs pairs");
  // transformers' layer_types (its newer versions write it; Qwen 2's default
  // comes from use_sliding_window and max_window_layers): the layers that
  // use the window, where the config has one. Loom's graph windows the
  // layers from one on.
  if (const llvm::json::Array *types = o->getArray("layer_types")) {
    if (int64_t(types->size()) != c.nLayers)
      return r.fail("'layer_types' has " + std::to_string(types->size()) +
                    " entries for " + std::to_string(c.nLayers) + " layers");
    int64_t from = c.nLayers;
    for (int64_t i = 0; i < c.nLayers; ++i) {
      std::optional<StringRef> t = (*types)[size_t(i)].getAsString();
      if (t != std::optional<StringRef>("full_attention") &&
          t != std::optional<StringRef>("sliding_attention"))
        return r.fail("'layer_types' holds something other than "
                      "\"full_attention\" and \"sliding_attention\"");
      if (*t == "sliding_attention" && from == c.nLayers)
        from = i;
      else if (*t == "full_attention" && from < c.nLayers && c.slidingWindow)
        return r.fail("'layer_types': a full-attention layer after a "
                      "sliding-window one is not supported (Loom windows "
                      "the layers from one on)");
    }
    c.slidingWindowFrom = from;
  }
  return ropeScaling(r, c);
}
} // namespace

std::optional<std::string> hf::readModelType(const std::string &path,
                                             std::string &error) {
  std::string config = configPathOf(path);
  std::optional<llvm::json::Value> json = readJson(config, "config", error);
  if (!json)
    return std::nullopt;
  const llvm::json::Object *o = json->getAsObject();
  std::optional<StringRef> type = o ? o->getString("model_type") : std::nullopt;
  if (!type) {
    error = "config '" + config + "' has no \"model_type\" string";
    return std::nullopt;
  }
  return type->str();
}

std::optional<llama2c::Checkpoint>
hf::readLlamaCheckpoint(const std::string &path, std::string &error) {
  llama2c::Checkpoint ckpt;
  ckpt.format = "hf-llama";
  const std::string configPath = configPathOf(path);
  llama2c::Config &c = ckpt.config;
  if (!parseConfig(configPath, c, error))
    return std::nullopt;
  if (!readGenerationConfig(configPath, c, error))
    return std::nullopt;

  CheckpointWeights weights;
  if (!weights.open(llvm::sys::path::parent_path(configPath), error))
    return std::nullopt;
  ckpt.path = weights.path();
  const int64_t D = c.dim, I = c.hiddenDim, hd = c.headDim(), kv = c.kvDim();
  llvm::StringSet<> used;
  // Maps HF tensor `name` of `shape` to the graph weight `as`: all of it,
  // or (Phi-3's packed qkv_proj and gate_up_proj) `rows` of its rows from
  // `firstRow`.
  auto takeRows = [&](const std::string &name, llvm::ArrayRef<int64_t> shape,
                      int64_t firstRow, int64_t rows, const std::string &as,
                      bool rotateHalf = false) {
    std::optional<Located> t = weights.find(name);
    if (!t) {
      error = ckpt.path + ": missing tensor '" + name + "'";
      return false;
    }
    if (llvm::Error e = st::expect(*t->tensor, st::kWeightDTypes, shape)) {
      error = t->file->path().str() + ": " + llvm::toString(std::move(e));
      return false;
    }
    used.insert(name);
    const uint64_t rowBytes = t->tensor->bytes / uint64_t(shape[0]);
    WeightSource src{t->file->path().str(),
                     t->tensor->fileOffset + uint64_t(firstRow) * rowBytes,
                     uint64_t(rows) * rowBytes,
                     weightEncoding(t->tensor->dtype)};
    src.rotateHalfHeadDim = rotateHalf ? hd : 0;
    ckpt.weights[as] = src;
    return true;
  };
  auto take = [&](const std::string &name, llvm::ArrayRef<int64_t> shape,
                  const std::string &as, bool rotateHalf = false) {
    return takeRows(name, shape, 0, shape[0], as, rotateHalf);
  };
  if (!take("model.embed_tokens.weight", {c.vocabSize, D}, "tok_embeddings") ||
      !take("model.norm.weight", {D}, "norm"))
    return std::nullopt;
  for (int64_t l = 0; l < c.nLayers; ++l) {
    const std::string hf = "model.layers." + std::to_string(l) + ".";
    const std::string to = "layers." + std::to_string(l) + ".";
    bool projections;
    if (c.packedProjections) {
      // Phi-3: q|k|v rows in one matrix, gate|up rows in another.
      const std::string qkv = hf + "self_attn.qkv_proj.weight",
                        gateUp = hf + "mlp.gate_up_proj.weight";
      projections = takeRows(qkv, {D + 2 * kv, D}, 0, D, to + "wq", true) &&
                    takeRows(qkv, {D + 2 * kv, D}, D, kv, to + "wk", true) &&
                    takeRows(qkv, {D + 2 * kv, D}, D + kv, kv, to + "wv") &&
                    takeRows(gateUp, {2 * I, D}, 0, I, to + "w1") &&
                    takeRows(gateUp, {2 * I, D}, I, I, to + "w3");
    } else {
      projections =
          take(hf + "self_attn.q_proj.weight", {D, D}, to + "wq", true) &&
          take(hf + "self_attn.k_proj.weight", {kv, D}, to + "wk", true) &&
          take(hf + "self_attn.v_proj.weight", {kv, D}, to + "wv") &&
          take(hf + "mlp.gate_proj.weight", {I, D}, to + "w1") &&
          take(hf + "mlp.up_proj.weight", {I, D}, to + "w3");
    }
    if (!projections ||
        !take(hf + "input_layernorm.weight", {D}, to + "attention_norm") ||
        !take(hf + "self_attn.o_proj.weight", {D, D}, to + "wo") ||
        !take(hf + "post_attention_layernorm.weight", {D}, to + "ffn_norm") ||
        !take(hf + "mlp.down_proj.weight", {D, I}, to + "w2"))
      return std::nullopt;
    // Qwen 2's biases; q's and k's in the rotate-half order of their rows.
    if (c.qkvBias &&
        (!take(hf + "self_attn.q_proj.bias", {D}, to + "bq", true) ||
         !take(hf + "self_attn.k_proj.bias", {kv}, to + "bk", true) ||
         !take(hf + "self_attn.v_proj.bias", {kv}, to + "bv")))
      return std::nullopt;
    // Older exports store rope's inverse frequencies; rope is computed from
    // positions and rope_theta.
    used.insert(hf + "self_attn.rotary_emb.inv_freq");
  }
  // lm_head: tied to the embedding (absent, or an identical copy), or its own.
  if (std::optional<Located> head = weights.find("lm_head.weight")) {
    if (!c.sharedClassifier) {
      if (!take("lm_head.weight", {c.vocabSize, D}, "output"))
        return std::nullopt;
    } else {
      std::optional<Located> embed = weights.find("model.embed_tokens.weight");
      if (head->tensor->dtype != embed->tensor->dtype ||
          head->file->data(*head->tensor) !=
              embed->file->data(*embed->tensor)) {
        error = ckpt.path +
                ": lm_head.weight differs from "
                "model.embed_tokens.weight but tie_word_embeddings is true";
        return std::nullopt;
      }
      used.insert("lm_head.weight");
    }
  } else if (!c.sharedClassifier) {
    error = ckpt.path + ": missing tensor 'lm_head.weight' "
                        "(tie_word_embeddings is false)";
    return std::nullopt;
  }
  error = weights.unexpectedTensor(used, "Llama");
  if (!error.empty())
    return std::nullopt;
  return ckpt;
}

namespace {
StringRef typeOf(const llvm::json::Object *x) {
  std::optional<StringRef> t = x ? x->getString("type") : std::nullopt;
  return t ? *t : "";
}

bool isNull(const llvm::json::Value *v) {
  return !v || v->kind() == llvm::json::Value::Null;
}

constexpr StringRef kSpaceMark = "\xE2\x96\x81"; // U+2581, SentencePiece's ▁

/// The pre-tokenization must be SentencePiece's: "▁" prepended once and
/// every space replaced by "▁", with no splitting into words (merges may
/// cross spaces, as in run.c and SentencePiece).
/// Whether tokenizer.json is SentencePiece's form; *prefixAfterSpecial
/// says whether text after a special token gets the "▁" prefix (the
/// normalizer, applied to each text between added tokens, and Metaspace
/// "always" prepend it; Metaspace "first" only at the start of the input).
bool sentencePieceForm(const llvm::json::Object &o, bool *prefixAfterSpecial,
                       std::string &why) {
  *prefixAfterSpecial = true;
  const llvm::json::Value *norm = o.get("normalizer");
  const llvm::json::Value *pre = o.get("pre_tokenizer");
  // Form 1 (Llama 1/2's tokenizer.json): normalizer Sequence[Prepend "▁",
  // Replace " " -> "▁"], no pre-tokenizer.
  if (!isNull(norm)) {
    const llvm::json::Object *n = norm->getAsObject();
    const llvm::json::Array *seq = n ? n->getArray("normalizers") : nullptr;
    if (typeOf(n) != "Sequence" || !seq || seq->size() != 2) {
      why = "its normalizer is not SentencePiece's (Prepend \"▁\", Replace "
            "\" \" by \"▁\")";
      return false;
    }
    const llvm::json::Object *prepend = (*seq)[0].getAsObject();
    const llvm::json::Object *replace = (*seq)[1].getAsObject();
    const llvm::json::Object *pattern =
        replace ? replace->getObject("pattern") : nullptr;
    if (typeOf(prepend) != "Prepend" ||
        prepend->getString("prepend") != std::optional<StringRef>(kSpaceMark) ||
        typeOf(replace) != "Replace" || !pattern ||
        pattern->getString("String") != std::optional<StringRef>(" ") ||
        replace->getString("content") != std::optional<StringRef>(kSpaceMark)) {
      why = "its normalizer is not SentencePiece's (Prepend \"▁\", Replace "
            "\" \" by \"▁\")";
      return false;
    }
    if (!isNull(pre)) {
      why = "it has both a normalizer and a pre-tokenizer";
      return false;
    }
    return true;
  }
  // Form 2: Metaspace("▁", prepend first/always) without splitting.
  const llvm::json::Object *p = pre ? pre->getAsObject() : nullptr;
  if (typeOf(p) == "Metaspace" &&
      p->getString("replacement") == std::optional<StringRef>(kSpaceMark) &&
      p->getBoolean("split") == std::optional<bool>(false)) {
    std::optional<StringRef> scheme = p->getString("prepend_scheme");
    if ((scheme && (*scheme == "first" || *scheme == "always")) ||
        (!scheme &&
         p->getBoolean("add_prefix_space") == std::optional<bool>(true))) {
      *prefixAfterSpecial = !(scheme && *scheme == "first");
      return true;
    }
  }
  why = "its pre-tokenizer is not SentencePiece's (Metaspace \"▁\" without "
        "split, or the Prepend/Replace normalizer)";
  return false;
}

} // namespace

namespace {
constexpr StringRef kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
// Qwen 2's: Llama 3's with numbers one by one.
constexpr StringRef kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

/// Whether tokenizer.json's pre-tokenizer is a byte-level one (alone or the
/// last of a sequence).
bool byteLevelForm(const llvm::json::Object &o) {
  const llvm::json::Object *p = o.getObject("pre_tokenizer");
  if (typeOf(p) == "ByteLevel")
    return true;
  const llvm::json::Array *seq =
      typeOf(p) == "Sequence" ? p->getArray("pretokenizers") : nullptr;
  return seq && !seq->empty() &&
         typeOf(seq->back().getAsObject()) == "ByteLevel";
}

/// GPT-2's (ByteLevel with its own regex) or Llama 3's (Split by Llama 3's
/// pattern, isolated, then ByteLevel without a regex); nullopt otherwise.
std::optional<PreTokenizer> byteLevelPreTokenizer(const llvm::json::Object &o,
                                                  std::string &why) {
  const llvm::json::Object *p = o.getObject("pre_tokenizer");
  auto plainByteLevel = [](const llvm::json::Object *b, bool regex) {
    return typeOf(b) == "ByteLevel" &&
           b->getBoolean("add_prefix_space").value_or(false) == false &&
           b->getBoolean("use_regex").value_or(true) == regex;
  };
  if (typeOf(p) == "ByteLevel") {
    if (plainByteLevel(p, true))
      return PreTokenizer::Gpt2;
    why = "its ByteLevel pre-tokenizer adds a prefix space or has no regex";
    return std::nullopt;
  }
  const llvm::json::Array *seq = p->getArray("pretokenizers");
  if (seq->size() == 2) {
    const llvm::json::Object *digits = (*seq)[0].getAsObject();
    if (typeOf(digits) == "Digits" &&
        digits->getBoolean("individual_digits") == std::optional<bool>(true) &&
        plainByteLevel((*seq)[1].getAsObject(), true))
      return PreTokenizer::SmolLm;
    const llvm::json::Object *split = (*seq)[0].getAsObject();
    const llvm::json::Object *pattern =
        split ? split->getObject("pattern") : nullptr;
    std::optional<StringRef> regex =
        pattern ? pattern->getString("Regex") : std::nullopt;
    if (typeOf(split) == "Split" && regex &&
        (*regex == kLlama3Pattern || *regex == kQwen2Pattern) &&
        split->getString("behavior") == std::optional<StringRef>("Isolated") &&
        split->getBoolean("invert").value_or(false) == false &&
        plainByteLevel((*seq)[1].getAsObject(), false))
      return *regex == kLlama3Pattern ? PreTokenizer::Llama3
                                      : PreTokenizer::Qwen2;
  }
  why = "its pre-tokenizer is not GPT-2's (ByteLevel with its regex), Llama "
        "3's or Qwen 2's (Split by its pattern, then ByteLevel) or SmolLM's "
        "(individual Digits, then GPT-2's), the ones Loom implements";
  return std::nullopt;
}

/// Whether the post-processor puts a token first (Llama 3's BOS): its id,
/// -1 for none, nullopt (with `why`) for a form Loom does not follow.
std::optional<int64_t> leadingSpecialToken(const llvm::json::Object &o,
                                           std::string &why) {
  const llvm::json::Value *post = o.get("post_processor");
  if (isNull(post))
    return -1;
  std::vector<const llvm::json::Object *> steps;
  const llvm::json::Object *p = post->getAsObject();
  if (typeOf(p) == "Sequence" && p->getArray("processors")) {
    for (const llvm::json::Value &v : *p->getArray("processors"))
      steps.push_back(v.getAsObject());
  } else {
    steps.push_back(p);
  }
  int64_t lead = -1;
  for (const llvm::json::Object *step : steps) {
    if (typeOf(step) == "ByteLevel")
      continue; // offsets only
    const llvm::json::Array *single = typeOf(step) == "TemplateProcessing"
                                          ? step->getArray("single")
                                          : nullptr;
    const llvm::json::Object *specials =
        single ? step->getObject("special_tokens") : nullptr;
    auto isSequence = [](const llvm::json::Value &v) {
      const llvm::json::Object *x = v.getAsObject();
      return x && x->getObject("Sequence");
    };
    if (single && single->size() == 1 && isSequence((*single)[0]))
      continue;
    if (single && specials && single->size() == 2 && isSequence((*single)[1])) {
      const llvm::json::Object *first = (*single)[0].getAsObject();
      const llvm::json::Object *special =
          first ? first->getObject("SpecialToken") : nullptr;
      std::optional<StringRef> name =
          special ? special->getString("id") : std::nullopt;
      const llvm::json::Object *entry =
          name ? specials->getObject(*name) : nullptr;
      const llvm::json::Array *ids = entry ? entry->getArray("ids") : nullptr;
      if (ids && ids->size() == 1 && (*ids)[0].getAsInteger()) {
        lead = *(*ids)[0].getAsInteger();
        continue;
      }
    }
    why = "its post-processor is not one Loom follows (nothing, ByteLevel, "
          "or a TemplateProcessing that puts one special token before the "
          "text)";
    return std::nullopt;
  }
  return lead;
}

/// tokenizer.json's tokens by id: the vocabulary's (each entry's text made
/// a piece by `spell`, nullopt when it cannot be) and the added tokens'
/// (their content as written).
struct JsonTokens {
  std::vector<std::optional<std::string>> byId; // up to the highest id
  std::vector<bool> special;                    // added with special: true
  std::vector<uint8_t> strip; // added tokens' lstrip (1) and rstrip (2)
  int64_t plainAdded = 0;                       // added, not special
  llvm::StringMap<int32_t> idOf; // spelling -> id (the lowest of several)
};

std::optional<JsonTokens>
readJsonTokens(const llvm::json::Object &o, const llvm::json::Object &vocab,
               int64_t vocabSize,
               llvm::function_ref<std::optional<std::string>(StringRef)> spell,
               StringRef spellProblem, std::string &why) {
  JsonTokens t;
  auto place = [&](StringRef shown, int64_t id, std::string piece,
                   bool isSpecial) {
    if (id < 0 || id >= vocabSize) {
      why = "token '" + st::printable(shown) + "' has id " +
            std::to_string(id) + ", outside the model's vocabulary of " +
            std::to_string(vocabSize);
      return false;
    }
    if (size_t(id) >= t.byId.size()) {
      t.byId.resize(id + 1);
      t.special.resize(id + 1, false);
      t.strip.resize(id + 1, 0);
    }
    if (t.byId[id] && *t.byId[id] != piece) {
      why = "id " + std::to_string(id) + " is both '" +
            st::printable(*t.byId[id]) + "' and '" + st::printable(piece) + "'";
      return false;
    }
    t.byId[id] = std::move(piece);
    t.special[id] = t.special[id] || isSpecial;
    auto [at, inserted] = t.idOf.try_emplace(shown, int32_t(id));
    if (!inserted && id < at->second)
      at->second = int32_t(id);
    return true;
  };
  for (const auto &entry : vocab) {
    std::optional<int64_t> id = entry.second.getAsInteger();
    if (!id) {
      why =
          "vocab entry '" + st::printable(entry.first) + "' has no integer id";
      return std::nullopt;
    }
    std::optional<std::string> piece = spell(entry.first);
    if (!piece) {
      why = "vocab entry '" + st::printable(entry.first) + "' " +
            spellProblem.str();
      return std::nullopt;
    }
    if (!place(entry.first, *id, *piece, false))
      return std::nullopt;
  }
  if (const llvm::json::Array *added = o.getArray("added_tokens"))
    for (const llvm::json::Value &v : *added) {
      const llvm::json::Object *a = v.getAsObject();
      std::optional<StringRef> content =
          a ? a->getString("content") : std::nullopt;
      std::optional<int64_t> id = a ? a->getInteger("id") : std::nullopt;
      if (!content || !id) {
        why = "an added token lacks \"content\" or \"id\"";
        return std::nullopt;
      }
      const bool isSpecial = a->getBoolean("special").value_or(false);
      if (!place(*content, *id, content->str(), isSpecial))
        return std::nullopt;
      t.strip[*id] |= (a->getBoolean("lstrip").value_or(false) ? 1 : 0) |
                      (a->getBoolean("rstrip").value_or(false) ? 2 : 0);
      t.plainAdded += !isSpecial;
    }
  return t;
}

/// The special tokens of `t` (its added tokens marked special) as the
/// runtime's tokenizer picks them out of chat prompts: their ids where
/// `listIds` (SentencePiece-style vocabularies; byte-level ones make them
/// control ids), and their lstrip / rstrip flags.
SpecialTokens specialTokens(const JsonTokens &t, bool listIds) {
  SpecialTokens s;
  for (size_t id = 0; id < t.special.size(); ++id) {
    if (!t.special[id])
      continue;
    if (listIds)
      s.ids.push_back(int32_t(id));
    if (id < t.strip.size() && (t.strip[id] & 1))
      s.lstrip.push_back(int32_t(id));
    if (id < t.strip.size() && (t.strip[id] & 2))
      s.rstrip.push_back(int32_t(id));
  }
  return s;
}

/// A merge rule: "left right" or [left, right] (two non-empty pieces).
std::optional<std::pair<StringRef, StringRef>>
mergeRule(const llvm::json::Value &m) {
  StringRef left, right;
  if (std::optional<StringRef> s = m.getAsString()) {
    std::tie(left, right) = s->split(' ');
    if (right.contains(' '))
      return std::nullopt;
  } else if (const llvm::json::Array *a = m.getAsArray();
             a && a->size() == 2 && (*a)[0].getAsString() &&
             (*a)[1].getAsString()) {
    left = *(*a)[0].getAsString();
    right = *(*a)[1].getAsString();
  }
  if (left.empty() || right.empty())
    return std::nullopt;
  return std::make_pair(left, right);
}

/// A byte-level BPE tokenizer.json (GPT-2, Llama 3).
std::optional<TokenizerData>
readByteLevelJson(const llvm::json::Object &o, const llvm::json::Object &model,
                  const std::string &path, int64_t vocabSize, int64_t bosId,
                  int64_t eosId, std::vector<std::string> &warnings,
                  std::string &error) {
  auto fail = [&](const std::string &what) {
    error = "tokenizer '" + path + "': " + what;
    return std::nullopt;
  };
  if (model.getBoolean("byte_fallback").value_or(false))
    return fail("\"byte_fallback\" is true in a byte-level BPE");
  for (StringRef key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (std::optional<StringRef> v = model.getString(key); v && !v->empty())
      return fail("\"" + key.str() +
                  "\" is set: Loom's byte-level BPE has "
                  "no subword affixes");
  // Qwen 2's NFC normalizer is applied as tokenizers applies it (llama.cpp,
  // and so Loom for a GGUF, does not).
  const llvm::json::Value *normalizer = o.get("normalizer");
  const bool nfc = !isNull(normalizer) &&
                   typeOf(normalizer->getAsObject()) == "NFC";
  if (!isNull(normalizer) && !nfc)
    return fail("a byte-level BPE with a normalizer other than NFC (Loom "
                "implements none for byte-level vocabularies)");
  std::string why;
  std::optional<PreTokenizer> pre = byteLevelPreTokenizer(o, why);
  if (!pre)
    return fail(why);
  std::optional<int64_t> lead = leadingSpecialToken(o, why);
  if (!lead)
    return fail(why);
  const llvm::json::Object *vocab = model.getObject("vocab");
  const llvm::json::Array *merges = model.getArray("merges");
  if (!vocab || !merges)
    return fail("the BPE model lacks \"vocab\" or \"merges\"");

  std::optional<JsonTokens> tokens =
      readJsonTokens(o, *vocab, vocabSize, llama2c::bytesOfByteLevelPiece,
                     "is not spelled in GPT-2's byte alphabet", why);
  if (!tokens)
    return fail(why);
  if (tokens->plainAdded)
    warnings.push_back("tokenizer '" + path + "' has " +
                       std::to_string(tokens->plainAdded) +
                       " added tokens that are not special: Loom decodes "
                       "them but does not pick them out of a text");

  ByteLevelBpe bpe;
  bpe.pre = *pre;
  bpe.nfc = nfc;
  bpe.ignore_merges = model.getBoolean("ignore_merges").value_or(false);
  bpe.add_bos = *lead >= 0;
  if (bpe.add_bos && *lead != bosId)
    return fail("the post-processor puts id " + std::to_string(*lead) +
                " first, but config.json's bos_token_id is " +
                std::to_string(bosId));
  bpe.bos_id = int32_t(bosId);
  bpe.eos_id = int32_t(eosId);
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    auto rule = mergeRule((*merges)[rank]);
    if (!rule)
      return fail("merge " + std::to_string(rank) +
                  " is neither \"left right\" nor [left, right]");
    auto l = tokens->idOf.find(rule->first);
    auto r = tokens->idOf.find(rule->second);
    if (l == tokens->idOf.end() || r == tokens->idOf.end())
      return fail("merge " + std::to_string(rank) + " ('" +
                  st::printable(rule->first) + "', '" +
                  st::printable(rule->second) +
                  "') is not two pieces of the vocabulary");
    bpe.merges.emplace_back(l->second, r->second);
  }

  TokenizerData data;
  int64_t unnamed = 0;
  tokens->byId.resize(vocabSize);
  tokens->special.resize(vocabSize, false);
  tokens->strip.resize(vocabSize, 0);
  data.special = specialTokens(*tokens, /*listIds=*/false);
  for (int64_t id = 0; id < vocabSize; ++id) {
    const std::optional<std::string> &piece = tokens->byId[id];
    unnamed += !piece;
    if (!piece || tokens->special[id])
      bpe.control.push_back(int32_t(id));
    data.pieces.push_back(piece.value_or(""));
    data.maxTokenLength =
        std::max<uint32_t>(data.maxTokenLength, data.pieces.back().size());
  }
  if (unnamed)
    warnings.push_back("tokenizer '" + path + "' names no token for " +
                       std::to_string(unnamed) + " of the model's " +
                       std::to_string(vocabSize) +
                       " ids: they decode to nothing and are never produced "
                       "by encoding");
  // The runtime's constructor is the one definition of a valid vocabulary.
  try {
    Tokenizer check(data.pieces, bpe, data.special);
    (void)check;
  } catch (const loom::Error &e) {
    StringRef what = e.what();
    what.consume_front("tokenizer: ");
    return fail(what.str());
  }
  data.byteLevel = std::move(bpe);
  return data;
}
} // namespace

bool hf::readChatTemplate(const std::string &folder, TokenizerData &data,
                          std::vector<std::string> &warnings,
                          std::string &error) {
  llvm::SmallString<256> jinja(folder), config(folder);
  llvm::sys::path::append(jinja, "chat_template.jinja");
  llvm::sys::path::append(config, "tokenizer_config.json");
  std::optional<llvm::json::Value> json;
  if (llvm::sys::fs::exists(config)) {
    json = readJson(std::string(config), "tokenizer config", error);
    if (!json)
      return false;
  }
  const llvm::json::Object *o = json ? json->getAsObject() : nullptr;
  if (json && !o) {
    error = "tokenizer config '" + std::string(config) + "': not an object";
    return false;
  }
  auto fail = [&](const std::string &file, const std::string &what) {
    error = file + ": " + what;
    return false;
  };
  std::string source;
  if (llvm::sys::fs::exists(jinja)) {
    uint64_t size = 0;
    if (!llvm::sys::fs::file_size(jinja, size) && size > kMaxChatTemplateBytes)
      return fail(std::string(jinja), "over 1 MiB; not a chat template");
    auto buffer = llvm::MemoryBuffer::getFile(jinja);
    if (!buffer)
      return fail(std::string(jinja), buffer.getError().message());
    source = (*buffer)->getBuffer().str();
  } else if (const llvm::json::Value *t =
                 o ? o->get("chat_template") : nullptr) {
    if (std::optional<StringRef> s = t->getAsString()) {
      source = s->str();
    } else if (const llvm::json::Array *named = t->getAsArray()) {
      // [{"name": ..., "template": ...}]: transformers uses "default".
      for (const llvm::json::Value &entry : *named) {
        const llvm::json::Object *e = entry.getAsObject();
        std::optional<StringRef> name = e ? e->getString("name") : std::nullopt;
        std::optional<StringRef> text =
            e ? e->getString("template") : std::nullopt;
        if (!name || !text)
          return fail(std::string(config),
                      "\"chat_template\" list entries must be {\"name\", "
                      "\"template\"} strings");
        if (*name == "default")
          source = text->str();
      }
      if (source.empty())
        warnings.push_back("tokenizer config '" + std::string(config) +
                           "' has named chat templates but none called "
                           "\"default\": the artifact gets none");
    } else if (t->kind() != llvm::json::Value::Null) {
      return fail(std::string(config),
                  "\"chat_template\" is neither a string nor a list");
    }
    if (source.size() > kMaxChatTemplateBytes)
      return fail(std::string(config), "\"chat_template\" is over 1 MiB");
  }
  if (source.empty())
    return true;
  data.chatTemplate = std::move(source);
  // "bos_token": "<s>" or {"content": "<s>", ...} (an AddedToken).
  for (auto [key, out] : {std::pair{"bos_token", &data.chatBosToken},
                          std::pair{"eos_token", &data.chatEosToken}}) {
    const llvm::json::Value *v = o ? o->get(key) : nullptr;
    if (!v || v->kind() == llvm::json::Value::Null)
      continue;
    std::optional<StringRef> text = v->getAsString();
    if (!text)
      if (const llvm::json::Object *added = v->getAsObject())
        text = added->getString("content");
    if (!text)
      return fail(std::string(config), "\"" + std::string(key) +
                                           "\" is neither a string nor "
                                           "{\"content\": ...}");
    *out = text->str();
  }
  return true;
}

std::optional<TokenizerData>
hf::readTokenizerJson(const std::string &path, int64_t vocabSize, int64_t bosId,
                      int64_t eosId, std::vector<std::string> &warnings,
                      std::string &error) {
  std::optional<llvm::json::Value> json = readJson(path, "tokenizer", error);
  if (!json)
    return std::nullopt;
  auto fail = [&](const std::string &what) {
    error = "tokenizer '" + path + "': " + what;
    return std::nullopt;
  };
  const llvm::json::Object *o = json->getAsObject();
  const llvm::json::Object *model = o ? o->getObject("model") : nullptr;
  if (!model)
    return fail("no \"model\" object");
  std::optional<StringRef> type = model->getString("type");
  if (type != std::optional<StringRef>("BPE"))
    return fail("model type '" +
                (type ? st::printable(*type) : std::string("?")) +
                "' is not supported (Loom reads BPE tokenizers)");
  if (byteLevelForm(*o))
    return readByteLevelJson(*o, *model, path, vocabSize, bosId, eosId,
                             warnings, error);
  // (EOS only ends a generation: any id will do, as Phi-3's 32000.)
  if (bosId != 1)
    return fail("a SentencePiece-style vocabulary begins sequences with id 1, "
                "but config.json has bos_token_id " +
                std::to_string(bosId));
  if (model->getBoolean("byte_fallback") != std::optional<bool>(true))
    return fail("\"byte_fallback\" is not true: Loom's tokenizer falls back "
                "to <0xHH> byte pieces");
  std::string why;
  bool prefixAfterSpecial = true;
  if (!sentencePieceForm(*o, &prefixAfterSpecial, why))
    return fail(why);
  const llvm::json::Object *vocab = model->getObject("vocab");
  const llvm::json::Array *merges = model->getArray("merges");
  if (!vocab || !merges)
    return fail("the BPE model lacks \"vocab\" or \"merges\"");

  // Pieces by id: the vocabulary, then added tokens past it.
  std::optional<JsonTokens> tokens = readJsonTokens(
      *o, *vocab, vocabSize,
      [](StringRef text) { return std::optional<std::string>(text.str()); }, "",
      why);
  if (!tokens)
    return fail(why);
  const std::vector<std::optional<std::string>> &byId = tokens->byId;
  const std::vector<bool> &special = tokens->special;
  const llvm::StringMap<int32_t> &idOf = tokens->idOf;
  for (size_t id = 0; id < byId.size(); ++id)
    if (!byId[id])
      return fail("no token has id " + std::to_string(id) +
                  " (ids must be 0.." + std::to_string(byId.size() - 1) + ")");
  const int64_t n = int64_t(byId.size()); // <= vocabSize (place)
  // Loom's tokenizer (run.c's) fixes these ids.
  static const char *kFixed[] = {"<unk>", "<s>", "</s>"};
  for (int id = 0; id < 3; ++id)
    if (id >= n || *byId[id] != kFixed[id])
      return fail("id " + std::to_string(id) + " must be '" + kFixed[id] +
                  "' (Loom's tokenizer has the Llama id layout: <unk> 0, <s> "
                  "1, </s> 2, <0x00>..<0xFF> at 3..258)");
  std::vector<std::string> spelled;
  for (const std::optional<std::string> &p : byId)
    spelled.push_back(*p);
  if (std::string problem = llama2c::byteFallbackProblem(spelled);
      !problem.empty())
    return fail(problem);

  // Merge ranks: a piece's score is minus the rank of its first rule, so
  // that Loom's "highest score, leftmost" merge follows the ranks.
  constexpr float kNeverMerges = -1e10f; // Tokenizer's merge floor
  std::vector<float> scores(n, kNeverMerges);
  std::vector<bool> hasRule(n, false);
  llvm::StringSet<> rules; // "left\0right"
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    auto rule = mergeRule((*merges)[rank]);
    if (!rule)
      return fail("merge " + std::to_string(rank) +
                  " is neither \"left right\" nor [left, right]");
    const std::string left = rule->first.str(), right = rule->second.str();
    auto merged = idOf.find(left + right);
    if (!idOf.count(left) || !idOf.count(right) || merged == idOf.end())
      return fail("merge " + std::to_string(rank) + " ('" +
                  st::printable(left) + "', '" + st::printable(right) +
                  "') names a piece that is not in the vocabulary");
    if (!hasRule[merged->second]) {
      hasRule[merged->second] = true;
      scores[merged->second] = -float(rank);
    }
    rules.insert(left + '\0' + right);
  }
  // Loom merges any adjacent pair whose concatenation is a piece with a
  // rule; tokenizers only the pairs of a rule. They agree when every split
  // of such a piece into two pieces is a rule (true of SentencePiece-derived
  // merges, which list them all).
  int64_t missing = 0;
  for (int64_t id = 0; id < n; ++id) {
    if (!hasRule[id])
      continue;
    StringRef piece = *byId[id];
    for (size_t cut = 1; cut < piece.size(); ++cut)
      if (idOf.count(piece.take_front(cut)) &&
          idOf.count(piece.drop_front(cut)) &&
          !rules.contains((piece.take_front(cut) + StringRef("\0", 1) +
                           piece.drop_front(cut))
                              .str()))
        ++missing;
  }
  if (missing)
    warnings.push_back(
        "tokenizer '" + path + "': " + std::to_string(missing) +
        (missing == 1 ? " split of a merged piece into two pieces has"
                      : " splits of merged pieces into two pieces have") +
        " no merge rule; Loom merges such pairs anyway (SentencePiece's "
        "rule), so some texts can get other ids than tokenizers gives");

  TokenizerData data;
  for (int64_t id = 0; id < n; ++id) {
    data.pieces.push_back(
        special[id] ? *byId[id]
                    : llama2c::spacesForSentencePieceMarks(*byId[id]));
    data.scores.push_back(scores[id]);
  }
  if (n < vocabSize) {
    warnings.push_back("tokenizer '" + path + "' has " + std::to_string(n) +
                       " tokens and the model " + std::to_string(vocabSize) +
                       ": ids " + std::to_string(n) + ".." +
                       std::to_string(vocabSize - 1) +
                       " decode to nothing and are never produced by encoding");
    data.pieces.resize(vocabSize);
    data.scores.resize(vocabSize, kNeverMerges);
  }
  for (const std::string &p : data.pieces)
    data.maxTokenLength = std::max<uint32_t>(data.maxTokenLength, p.size());
  data.special = specialTokens(*tokens, /*listIds=*/true);
  data.special.prefix_after_special = prefixAfterSpecial;
  // The runtime's constructor is the one definition of a valid vocabulary.
  try {
    Tokenizer check(data.pieces, data.scores, data.maxTokenLength,
                    data.special);
    (void)check;
  } catch (const loom::Error &e) {
    StringRef what = e.what();
    what.consume_front("tokenizer: ");
    return fail(what.str());
  }
  return data;
}
