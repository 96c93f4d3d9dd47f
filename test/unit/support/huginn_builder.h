// Test-only builder of a Huginn (recurrent-depth, "Raven") artifact from a
// checkpoint: read from a folder holding config.json and model.safetensors
// (F32), such as ../shared/golden/huginn-tiny, or made up with random
// weights. The dispatch form is the one the compiler emits for this
// architecture (see docs/artifact-format.md, "Looped blocks"), written out by
// hand so the runtime is tested without loomc:
//
//   embed(wte, scale sqrt(d)) -> e;  prelude blocks on e
//   body:  concat(state, e) -> matmul(adapter) -> core blocks -> next state
//   tail:  rms_norm(ln_f) -> latent;  coda blocks;  rms_norm(ln_f);  logits
//
// and every "sandwich" block is
//   rms(norm_1) -> fused qkv attention (Wqkv, proj, qk_bias) -> add
//   -> rms(norm_2) -> rms(norm_3) -> matmul(gate) -> matmul(up) -> silu_mul
//   -> matmul(mlp.proj) -> add -> rms(norm_4).
#ifndef LOOM_TEST_SUPPORT_HUGINN_BUILDER_H
#define LOOM_TEST_SUPPORT_HUGINN_BUILDER_H

#include "support/artifact_builder.h"
#include "support/json.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom::test {

struct SafetensorsTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// The F32 tensors of a .safetensors file: an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range,
// then the data. Other dtypes are an error; "__metadata__" is skipped.
inline std::map<std::string, SafetensorsTensor>
readSafetensors(const std::string &path) {
  const std::vector<uint8_t> bytes = readFileBytes(path);
  uint64_t header_size = 0;
  if (bytes.size() < 8)
    throw std::runtime_error(path + " is too short");
  std::memcpy(&header_size, bytes.data(), 8);
  if (header_size > bytes.size() - 8)
    throw std::runtime_error(path + ": header overruns the file");
  const Json header = Json::parse(std::string_view(
      reinterpret_cast<const char *>(bytes.data()) + 8, header_size));
  const size_t data_begin = 8 + header_size;
  std::map<std::string, SafetensorsTensor> out;
  for (size_t i = 0; i < header.keys().size(); ++i) {
    const std::string &name = header.keys()[i];
    if (name == "__metadata__")
      continue;
    const Json &info = header.items()[i];
    if (info["dtype"].asString() != "F32")
      throw std::runtime_error(path + ": tensor " + name + " is " +
                               info["dtype"].asString() + ", not F32");
    SafetensorsTensor t;
    t.shape = info["shape"].asIntVector();
    const std::vector<int64_t> range = info["data_offsets"].asIntVector();
    int64_t elems = 1;
    for (int64_t d : t.shape)
      elems *= d;
    if (range.size() != 2 || range[1] - range[0] != elems * 4 ||
        data_begin + range[1] > bytes.size())
      throw std::runtime_error(path + ": bad data_offsets for " + name);
    t.data.resize(size_t(elems));
    std::memcpy(t.data.data(), bytes.data() + data_begin + range[0],
                size_t(elems) * 4);
    out.emplace(name, std::move(t));
  }
  return out;
}

// A Huginn checkpoint: the config.json values the architecture uses and the
// tensors by their checkpoint names.
struct HuginnCheckpoint {
  int64_t dim = 0, n_heads = 0, n_kv_heads = 0, intermediate = 0, vocab = 0;
  int64_t prelude = 0, core = 0, coda = 0, block_size = 0;
  int64_t mean_recurrence = 0;
  float norm_eps = 1e-6f, rope_base = 50000.0f;
  std::map<std::string, SafetensorsTensor> tensors;

  const std::vector<float> &tensor(const std::string &name,
                                   std::vector<int64_t> shape) const {
    auto it = tensors.find(name);
    if (it == tensors.end())
      throw std::runtime_error("checkpoint lacks " + name);
    if (it->second.shape != shape)
      throw std::runtime_error(name + " has an unexpected shape");
    return it->second.data;
  }
  int64_t headDim() const { return dim / n_heads; }
};

inline HuginnCheckpoint readHuginnCheckpoint(const std::string &dir) {
  const Json cfg = Json::parseFile(dir + "/config.json");
  HuginnCheckpoint c;
  c.dim = cfg["n_embd"].asInt();
  c.n_heads = cfg["num_attention_heads"].asInt();
  c.n_kv_heads = cfg["num_key_value_heads"].asInt();
  c.intermediate = cfg["intermediate_size"].asInt();
  c.vocab = cfg["vocab_size"].asInt();
  c.prelude = cfg["n_layers_in_prelude"].asInt();
  c.core = cfg["n_layers_in_recurrent_block"].asInt();
  c.coda = cfg["n_layers_in_coda"].asInt();
  c.block_size = cfg["block_size"].asInt();
  c.mean_recurrence = cfg["mean_recurrence"].asInt();
  c.norm_eps = float(cfg["norm_eps"].asDouble());
  if (cfg.contains("rope_base"))
    c.rope_base = float(cfg["rope_base"].asDouble());
  c.tensors = readSafetensors(dir + "/model.safetensors");
  return c;
}

// A small Huginn with random weights (the layer counts of huginn-0125:
// prelude 2, core 4, coda 2), scaled like huginn-tiny so that the
// recurrence contracts.
inline HuginnCheckpoint randomHuginnCheckpoint(uint64_t seed = 1) {
  HuginnCheckpoint c;
  c.dim = 16;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.intermediate = 24;
  c.vocab = 272; // the smallest the synthetic llama2.c tokenizer allows
  c.prelude = 2;
  c.core = 4;
  c.coda = 2;
  c.block_size = 48;
  c.mean_recurrence = 8;
  std::mt19937_64 rng(seed);
  auto add = [&](const std::string &name, std::vector<int64_t> shape,
                 float mean, float sd) {
    std::normal_distribution<float> dist(mean, sd);
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    SafetensorsTensor t{shape, std::vector<float>(size_t(n))};
    for (float &x : t.data)
      x = dist(rng);
    c.tensors[name] = std::move(t);
  };
  const int64_t D = c.dim, I = c.intermediate, hd = c.headDim();
  const float sd = 1.0f / std::sqrt(float(D));
  add("transformer.wte.weight", {c.vocab, D}, 0.0f, 0.5f);
  add("transformer.adapter.weight", {D, 2 * D}, 0.0f, sd);
  add("transformer.ln_f.weight", {D}, 1.0f, 0.1f);
  auto block = [&](const std::string &p) {
    for (int n = 1; n <= 4; ++n)
      add(p + "norm_" + std::to_string(n) + ".weight", {D}, 1.0f, 0.1f);
    add(p + "attn.Wqkv.weight", {(c.n_heads + 2 * c.n_kv_heads) * hd, D}, 0.0f,
        sd);
    add(p + "attn.qk_bias", {2, 1, c.n_heads, hd}, 0.0f, 0.1f);
    add(p + "attn.proj.weight", {D, D}, 0.0f, 0.05f);
    add(p + "mlp.fc.weight", {2 * I, D}, 0.0f, sd);
    add(p + "mlp.proj.weight", {D, I}, 0.0f, 0.05f);
  };
  for (int64_t i = 0; i < c.prelude; ++i)
    block("transformer.prelude." + std::to_string(i) + ".");
  for (int64_t i = 0; i < c.core; ++i)
    block("transformer.core_block." + std::to_string(i) + ".");
  for (int64_t i = 0; i < c.coda; ++i)
    block("transformer.coda." + std::to_string(i) + ".");
  return c;
}

struct HuginnOptions {
  uint32_t max_tokens = 16;
  uint32_t default_iterations = 0; // 0: the checkpoint's mean_recurrence
  fbs::ExitCriterion criterion = fbs::ExitCriterion::None;
  float threshold = 0.0f;
  uint32_t max_iterations = 0;
  int32_t bos_id = -1, eos_id = -1;
};

// Buffer ids of the built artifact, for tests that corrupt it.
struct HuginnLayout {
  uint32_t e, state, next, cat, stream, latent, h, a, qkv, attn, gate, up;
};

inline ArtifactSpec huginnArtifact(const HuginnCheckpoint &ck,
                                   const HuginnOptions &o = {},
                                   HuginnLayout *layout = nullptr) {
  auto weight = [&](const std::string &name,
                    std::vector<int64_t> shape) -> const std::vector<float> & {
    return ck.tensor(name, shape);
  };
  const int64_t D = ck.dim, nh = ck.n_heads, nkv = ck.n_kv_heads;
  const int64_t hd = ck.headDim(), I = ck.intermediate, V = ck.vocab;
  const int64_t P = ck.prelude, C = ck.core, K = ck.coda, S = ck.block_size;
  const float eps = ck.norm_eps, theta = ck.rope_base;

  ArtifactSpec a;
  a.config.architecture = "huginn";
  a.config.dim = D;
  a.config.hidden_dim = I;
  a.config.n_layers = P + C + K;
  a.config.n_heads = nh;
  a.config.n_kv_heads = nkv;
  a.config.head_dim = hd;
  a.config.vocab_size = V;
  a.config.max_seq = S;
  a.config.rope_theta = theta;
  a.config.norm_eps = eps;
  a.config.bos_id = o.bos_id;
  a.config.eos_id = o.eos_id;
  a.tokenizer = syntheticTokenizer(V);
  a.max_tokens = o.max_tokens;

  HuginnLayout L;
  L.e = a.addBuffer(D);
  L.state = a.addBuffer(D);
  L.next = a.addBuffer(D);
  L.cat = a.addBuffer(2 * D);
  L.stream = a.addBuffer(D);
  L.latent = a.addBuffer(D);
  L.h = a.addBuffer(D);
  L.a = a.addBuffer(D);
  L.qkv = a.addBuffer((nh + 2 * nkv) * hd);
  L.attn = a.addBuffer(nh * hd);
  L.gate = a.addBuffer(I);
  L.up = a.addBuffer(I);
  a.logits_buffer = a.addBuffer(V);
  if (layout)
    *layout = L;

  const uint32_t wte = a.addTensor("transformer.wte.weight", {V, D},
                                   weight("transformer.wte.weight", {V, D}));
  auto vec = [&](const std::string &name, int64_t n) {
    return a.addTensor(name, {n}, weight(name, {n}));
  };

  // One sandwich block reading `in`, leaving its output in `out`.
  auto block = [&](const std::string &p, uint32_t in, uint32_t out,
                   int64_t cache) {
    const std::vector<float> &wqkv =
        weight(p + "attn.Wqkv.weight", {(nh + 2 * nkv) * hd, D});
    const std::vector<float> &bias = weight(p + "attn.qk_bias", {2, 1, nh, hd});
    const std::vector<float> &fc = weight(p + "mlp.fc.weight", {2 * I, D});
    const uint32_t n1 = vec(p + "norm_1.weight", D);
    const uint32_t n2 = vec(p + "norm_2.weight", D);
    const uint32_t n3 = vec(p + "norm_3.weight", D);
    const uint32_t n4 = vec(p + "norm_4.weight", D);
    const uint32_t tqkv =
        a.addTensor(p + "attn.Wqkv.weight", {(nh + 2 * nkv) * hd, D}, wqkv);
    const uint32_t tproj =
        a.addTensor(p + "attn.proj.weight", {D, nh * hd},
                    weight(p + "attn.proj.weight", {D, nh * hd}));
    // [2, 1, H, hd] is the q bias then the k bias: already the flat
    // layout the kernel takes (nkv == nh here).
    const uint32_t tbias =
        a.addTensor(p + "attn.qk_bias", {(nh + nkv) * hd}, bias);
    const uint32_t tgate =
        a.addTensor(p + "mlp.fc.gate", {I, D},
                    std::vector<float>(fc.begin(), fc.begin() + I * D));
    const uint32_t tup =
        a.addTensor(p + "mlp.fc.up", {I, D},
                    std::vector<float>(fc.begin() + I * D, fc.end()));
    const uint32_t tdown = a.addTensor(p + "mlp.proj.weight", {D, I},
                                       weight(p + "mlp.proj.weight", {D, I}));
    a.add(
        {fbs::Kernel::RmsNorm, {in}, {L.h}, {}, {n1}, {}, {eps}, p + "norm_1"});
    a.add({fbs::Kernel::FusedQkvAttention,
           {L.h},
           {L.a},
           {L.qkv, L.attn},
           {tqkv, tproj, tbias},
           {cache, nh, nkv, hd, 0},
           {theta},
           p + "attn"});
    a.add({fbs::Kernel::Add, {in, L.a}, {L.a}, {}, {}, {}, {}, p + "res_1"});
    a.add({fbs::Kernel::RmsNorm,
           {L.a},
           {out},
           {},
           {n2},
           {},
           {eps},
           p + "norm_2"});
    a.add({fbs::Kernel::RmsNorm,
           {out},
           {L.h},
           {},
           {n3},
           {},
           {eps},
           p + "norm_3"});
    a.add({fbs::Kernel::MatMul,
           {L.h},
           {L.gate},
           {},
           {tgate},
           {0},
           {},
           p + "gate"});
    a.add({fbs::Kernel::MatMul, {L.h}, {L.up}, {}, {tup}, {0}, {}, p + "up"});
    a.add({fbs::Kernel::SiluMul,
           {L.gate, L.up},
           {L.gate},
           {},
           {},
           {},
           {},
           p + "silu"});
    a.add({fbs::Kernel::MatMul,
           {L.gate},
           {L.a},
           {},
           {tdown},
           {0},
           {},
           p + "down"});
    a.add({fbs::Kernel::Add, {out, L.a}, {L.a}, {}, {}, {}, {}, p + "res_2"});
    a.add({fbs::Kernel::RmsNorm,
           {L.a},
           {out},
           {},
           {n4},
           {},
           {eps},
           p + "norm_4"});
  };
  auto cache = [&](int32_t loop_layer) {
    a.kv_caches.push_back(
        {uint32_t(a.kv_caches.size()), S, nkv, hd, loop_layer});
    return int64_t(a.kv_caches.size() - 1);
  };

  a.add({fbs::Kernel::Embed,
         {},
         {L.e},
         {},
         {wte},
         {},
         {std::sqrt(float(D))},
         "embed"});
  for (int64_t i = 0; i < P; ++i)
    block("transformer.prelude." + std::to_string(i) + ".", L.e, L.e,
          cache(-1));

  LoopSpec loop;
  loop.body_begin = uint32_t(a.dispatches.size());
  const uint32_t adapter =
      a.addTensor("transformer.adapter.weight", {D, 2 * D},
                  weight("transformer.adapter.weight", {D, 2 * D}));
  a.add(
      {fbs::Kernel::Concat, {L.state, L.e}, {L.cat}, {}, {}, {}, {}, "inject"});
  a.add({fbs::Kernel::MatMul,
         {L.cat},
         {L.next},
         {},
         {adapter},
         {0},
         {},
         "adapter"});
  for (int64_t j = 0; j < C; ++j)
    block("transformer.core_block." + std::to_string(j) + ".", L.next, L.next,
          cache(int32_t(j)));
  loop.body_end = uint32_t(a.dispatches.size());

  const uint32_t ln_f = vec("transformer.ln_f.weight", D);
  a.add({fbs::Kernel::RmsNorm,
         {L.state},
         {L.latent},
         {},
         {ln_f},
         {},
         {eps},
         "ln_f"});
  for (int64_t m = 0; m < K; ++m)
    block("transformer.coda." + std::to_string(m) + ".",
          m == 0 ? L.latent : L.stream, L.stream, cache(-1));
  a.add({fbs::Kernel::RmsNorm,
         {L.stream},
         {L.h},
         {},
         {ln_f},
         {},
         {eps},
         "ln_f_out"});
  a.add({fbs::Kernel::Logits,
         {L.h},
         {a.logits_buffer},
         {},
         {wte},
         {},
         {},
         "lm_head"});
  loop.tail_end = uint32_t(a.dispatches.size());

  loop.state_buffer = L.state;
  loop.next_state_buffer = L.next;
  loop.latent_buffer = L.latent;
  loop.layers_per_iteration = uint32_t(C);
  loop.layers_before = uint32_t(P);
  loop.default_iterations = o.default_iterations ? o.default_iterations
                                                 : uint32_t(ck.mean_recurrence);
  loop.criterion = o.criterion;
  loop.threshold = o.threshold;
  loop.max_iterations = o.max_iterations;
  loop.state_std = float(std::sqrt(2.0 / (5.0 * double(D))));
  loop.state_scale = float(std::sqrt(double(D)));
  a.loop = loop;
  return a;
}

} // namespace loom::test

#endif // LOOM_TEST_SUPPORT_HUGINN_BUILDER_H
