// Test-only REFRAG artifacts (compressed chunk placeholders): a llama
// decoder from artifact_builder.h plus the chunk encoder's programs
// "encode_chunk", "project_chunk" and "score_chunk" in the runtime's
// dispatch form, from a bundle such as
// ../shared/golden/refrag-tiny/refrag_tiny.safetensors or from random
// weights. The programs follow the conventions docs/chunk-placeholders.md
// states for loomc --format=refrag.
#ifndef LOOM_TEST_SUPPORT_REFRAG_BUILDER_H
#define LOOM_TEST_SUPPORT_REFRAG_BUILDER_H

#include "support/artifact_builder.h"
#include "support/huginn_builder.h" // readSafetensors
#include "support/json.h"

#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom::test {

// The encoder / projector / policy of a REFRAG bundle (tensor names as in
// refrag_tiny.safetensors).
struct RefragBundle {
  int64_t vocab = 0, dim = 0, n_layers = 0, n_heads = 0, head_dim = 0,
          ffn_dim = 0, max_chunk_len = 0, pos_rows = 0, proj_hidden = 0,
          decoder_dim = 0;
  int32_t cls_token_id = 1;
  float eps = 1e-5f;
  std::map<std::string, SafetensorsTensor> tensors;

  const std::vector<float> &tensor(const std::string &name,
                                   std::vector<int64_t> shape) const {
    auto it = tensors.find(name);
    if (it == tensors.end())
      throw std::runtime_error("refrag bundle lacks " + name);
    if (it->second.shape != shape)
      throw std::runtime_error("refrag bundle tensor " + name +
                               " has an unexpected shape");
    return it->second.data;
  }
};

// Reads the bundle's tensors and the configuration in its __metadata__.
inline RefragBundle readRefragBundle(const std::string &path) {
  RefragBundle b;
  b.tensors = readSafetensors(path);
  const std::vector<uint8_t> bytes = readFileBytes(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  const Json header = Json::parse(std::string_view(
      reinterpret_cast<const char *>(bytes.data()) + 8, header_size));
  const Json &meta = header["__metadata__"];
  auto num = [&](const char *key) { return std::stoll(meta[key].asString()); };
  b.vocab = num("encoder.vocab_size");
  b.dim = num("encoder.d_model");
  b.n_layers = num("encoder.n_layers");
  b.n_heads = num("encoder.n_heads");
  b.head_dim = num("encoder.head_dim");
  b.ffn_dim = num("encoder.ffn_dim");
  b.max_chunk_len = num("encoder.max_chunk_len");
  b.pos_rows = num("encoder.pos_emb_rows");
  b.cls_token_id = static_cast<int32_t>(num("encoder.cls_token_id"));
  b.proj_hidden = num("projector.hidden");
  b.decoder_dim = num("decoder.dim");
  return b;
}

// Random weights of the bundle's shapes (O(1) activations).
inline RefragBundle randomRefragBundle(int64_t vocab, int64_t decoder_dim,
                                       uint64_t seed = 7) {
  RefragBundle b;
  b.vocab = vocab;
  b.dim = 8;
  b.n_layers = 1;
  b.n_heads = 2;
  b.head_dim = 4;
  b.ffn_dim = 12;
  b.max_chunk_len = 4;
  b.pos_rows = 5;
  b.proj_hidden = 10;
  b.decoder_dim = decoder_dim;
  std::mt19937_64 rng(seed);
  auto put = [&](const std::string &name, std::vector<int64_t> shape,
                 float lo, float hi) {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    std::uniform_real_distribution<float> dist(lo, hi);
    SafetensorsTensor t;
    t.shape = shape;
    for (int64_t i = 0; i < n; ++i)
      t.data.push_back(dist(rng));
    b.tensors[name] = std::move(t);
  };
  const int64_t E = b.dim, F = b.ffn_dim, H = b.proj_hidden;
  put("encoder.tok_emb", {vocab, E}, -1, 1);
  put("encoder.pos_emb", {b.pos_rows, E}, -0.5, 0.5);
  for (int64_t l = 0; l < b.n_layers; ++l) {
    const std::string p = "encoder.layers." + std::to_string(l) + ".";
    for (const char *ln : {"ln1", "ln2"}) {
      put(p + ln + ".weight", {E}, 0.5, 1.5);
      put(p + ln + ".bias", {E}, -0.2, 0.2);
    }
    for (const char *w : {"q", "k", "v", "o"}) {
      put(p + "attn." + w + ".weight", {E, E}, -0.4, 0.4);
      put(p + "attn." + w + ".bias", {E}, -0.2, 0.2);
    }
    put(p + "ffn.fc1.weight", {F, E}, -0.4, 0.4);
    put(p + "ffn.fc1.bias", {F}, -0.2, 0.2);
    put(p + "ffn.fc2.weight", {E, F}, -0.3, 0.3);
    put(p + "ffn.fc2.bias", {E}, -0.2, 0.2);
  }
  put("encoder.ln_f.weight", {E}, 0.5, 1.5);
  put("encoder.ln_f.bias", {E}, -0.2, 0.2);
  put("projector.fc1.weight", {H, E}, -0.4, 0.4);
  put("projector.fc1.bias", {H}, -0.2, 0.2);
  put("projector.fc2.weight", {decoder_dim, H}, -0.4, 0.4);
  put("projector.fc2.bias", {decoder_dim}, -0.2, 0.2);
  put("policy.weight", {1, E}, -1, 1);
  put("policy.bias", {1}, -0.5, 0.5);
  return b;
}

struct RefragArtifactOptions {
  // TakeRow before ln_f (the rest of the program then runs on one row)
  // instead of after it, as loomc emits it.
  bool take_row_first = false;
  // loom-fuse-chunk-projector's form: project_chunk appends the decoder's
  // layer-0 RmsNorm and packed q|k|v projection of its row and returns
  // [row | q | k | v]; the decoder's first FusedQkvAttention is marked
  // placeholder_qkv. Needs a decoder built with LlamaArtifactOptions::fused.
  bool fuse_projector = false;
};

// Adds the chunk encoder to `a` (a decoder with a.max_tokens >=
// max_chunk_len + 1): the bundle's tensors, the three programs and the
// RefragConfig. The programs' buffers start at arena offset 0, sharing the
// arena with the decoder's buffers, as one arena plan for all programs
// does (only one program runs at a time).
inline void addRefragPrograms(ArtifactSpec &a, const RefragBundle &b,
                              const RefragArtifactOptions &o = {}) {
  const int64_t E = b.dim, F = b.ffn_dim, H = b.proj_hidden,
                Dd = b.decoder_dim, nh = b.n_heads, hd = b.head_dim;
  const float eps = b.eps;
  uint64_t offset = 0;
  auto buffer = [&](int64_t row_elems) {
    uint32_t id = a.addBufferAt(offset, row_elems);
    offset = alignUp(offset + uint64_t(a.max_tokens) * row_elems * 4, 64);
    return id;
  };
  auto weight = [&](const std::string &name, std::vector<int64_t> shape) {
    return a.addTensor(name, shape, b.tensor(name, shape));
  };
  using K = fbs::Kernel;
  // y = x W^T + bias, in place on y.
  auto linear = [&](std::vector<DispatchSpec> &ds, uint32_t x, uint32_t y,
                    const std::string &name, int64_t out, int64_t in) {
    uint32_t w = weight(name + ".weight", {out, in});
    uint32_t bias = weight(name + ".bias", {out});
    ds.push_back({K::MatMul, {x}, {y}, {}, {w}, {0}, {}, name});
    ds.push_back({K::AddRowBias, {y}, {y}, {}, {bias}, {}, {}, name + ".bias"});
  };

  // encode_chunk.
  ProgramSpec enc;
  enc.name = "encode_chunk";
  const uint32_t x = buffer(E), h = buffer(E), q = buffer(E), k = buffer(E),
                 v = buffer(E), att = buffer(E), o_ = buffer(E),
                 f = buffer(F), cls = buffer(E);
  auto &ds = enc.dispatches;
  ds.push_back({K::Embed, {}, {x}, {}, {weight("encoder.tok_emb", {b.vocab, E})},
                {}, {}, "encoder.tok_emb"});
  ds.push_back({K::AddPositions, {x}, {x}, {},
                {weight("encoder.pos_emb", {b.pos_rows, E})}, {}, {},
                "encoder.pos_emb"});
  for (int64_t l = 0; l < b.n_layers; ++l) {
    const std::string p = "encoder.layers." + std::to_string(l) + ".";
    ds.push_back({K::LayerNorm, {x}, {h}, {},
                  {weight(p + "ln1.weight", {E}), weight(p + "ln1.bias", {E})},
                  {}, {eps}, p + "ln1"});
    linear(ds, h, q, p + "attn.q", E, E);
    linear(ds, h, k, p + "attn.k", E, E);
    linear(ds, h, v, p + "attn.v", E, E);
    ds.push_back({K::SelfAttention, {q, k, v}, {att}, {}, {}, {nh, hd}, {},
                  p + "attn"});
    linear(ds, att, o_, p + "attn.o", E, E);
    ds.push_back({K::Add, {x, o_}, {x}, {}, {}, {}, {}, p + "res1"});
    ds.push_back({K::LayerNorm, {x}, {h}, {},
                  {weight(p + "ln2.weight", {E}), weight(p + "ln2.bias", {E})},
                  {}, {eps}, p + "ln2"});
    linear(ds, h, f, p + "ffn.fc1", F, E);
    ds.push_back({K::GeluTanh, {f}, {f}, {}, {}, {}, {}, p + "gelu"});
    linear(ds, f, o_, p + "ffn.fc2", E, F);
    ds.push_back({K::Add, {x, o_}, {x}, {}, {}, {}, {}, p + "res2"});
  }
  const uint32_t lnw = weight("encoder.ln_f.weight", {E}),
                 lnb = weight("encoder.ln_f.bias", {E});
  if (o.take_row_first) {
    ds.push_back({K::TakeRow, {x}, {h}, {}, {}, {0}, {}, "cls"});
    ds.push_back({K::LayerNorm, {h}, {cls}, {}, {lnw, lnb}, {}, {eps}, "ln_f"});
  } else {
    ds.push_back({K::LayerNorm, {x}, {h}, {}, {lnw, lnb}, {}, {eps}, "ln_f"});
    ds.push_back({K::TakeRow, {h}, {cls}, {}, {}, {0}, {}, "cls"});
  }
  enc.logits_buffer = cls;

  // project_chunk and score_chunk read rows of E from their input buffer.
  ProgramSpec proj;
  proj.name = "project_chunk";
  offset = 0;
  const uint32_t pin = buffer(E), ph = buffer(H), pout = buffer(Dd);
  proj.input_buffer = static_cast<int32_t>(pin);
  linear(proj.dispatches, pin, ph, "projector.fc1", H, E);
  proj.dispatches.push_back(
      {K::GeluTanh, {ph}, {ph}, {}, {}, {}, {}, "projector.gelu"});
  linear(proj.dispatches, ph, pout, "projector.fc2", Dd, H);
  proj.logits_buffer = pout;
  if (o.fuse_projector) {
    if (a.dispatches.size() < 3 || a.dispatches[1].kernel != K::RmsNorm ||
        a.dispatches[2].kernel != K::FusedQkvAttention)
      throw std::runtime_error("fuse_projector needs a fused llama decoder");
    const DispatchSpec &norm = a.dispatches[1];
    DispatchSpec &attention = a.dispatches[2];
    const int64_t nqkv = (attention.iparams[1] + 2 * attention.iparams[2]) *
                         attention.iparams[3];
    const uint32_t pn = buffer(Dd), pq = buffer(nqkv), row = buffer(Dd + nqkv);
    proj.dispatches.push_back({K::RmsNorm, {pout}, {pn}, {}, norm.weights, {},
                               norm.fparams, "placeholder.rms_att"});
    proj.dispatches.push_back({K::MatMul, {pn}, {pq}, {},
                               {attention.weights[0]}, {0}, {},
                               "placeholder.wqkv"});
    proj.dispatches.push_back(
        {K::Concat, {pout, pq}, {row}, {}, {}, {}, {}, "placeholder.row"});
    proj.logits_buffer = row;
    attention.iparams.resize(5, 0);
    attention.iparams.push_back(1);
  }

  ProgramSpec score;
  score.name = "score_chunk";
  offset = 0;
  const uint32_t sin = buffer(E), sout = buffer(1);
  score.input_buffer = static_cast<int32_t>(sin);
  linear(score.dispatches, sin, sout, "policy", 1, E);
  score.logits_buffer = sout;

  a.extra_programs.push_back(std::move(enc));
  a.extra_programs.push_back(std::move(proj));
  a.extra_programs.push_back(std::move(score));
  RefragSpec r;
  r.cls_token_id = b.cls_token_id;
  r.max_chunk_len = static_cast<uint32_t>(b.max_chunk_len);
  r.encoder_dim = static_cast<uint32_t>(E);
  const std::vector<float> &tok = b.tensor("encoder.tok_emb", {b.vocab, E});
  r.encoder_checksum = loomChecksum64(tok.data(), tok.size() * sizeof(float));
  a.refrag = r;
}

// The golden REFRAG artifact: stories260K (bundled in models/) with the
// bundle's encoder, max_tokens rows per step.
inline ArtifactSpec refragTinyArtifact(const std::string &decoder,
                                       const std::string &tokenizer,
                                       const std::string &bundle,
                                       uint32_t max_tokens = 24,
                                       const RefragArtifactOptions &o = {}) {
  TokenizerSpec tok;
  LlamaWeights w = readLlama2c(decoder, tokenizer, &tok);
  LlamaArtifactOptions lo;
  lo.max_tokens = max_tokens;
  lo.fused = o.fuse_projector;
  ArtifactSpec a = llamaArtifact(w, tok, lo);
  addRefragPrograms(a, readRefragBundle(bundle), o);
  return a;
}

// A tiny llama (artifact_builder.h's tinyLlamaWeights, vocab 272, dim 16)
// with a random chunk encoder (max_chunk_len 4, encoder_dim 8), max_tokens
// rows per step. With fuse_projector, loom-fuse-chunk-projector's form over a
// fused decoder of two layers (so a layer after the first reads placeholder
// rows); otherwise one layer, unfused.
inline ArtifactSpec randomRefragArtifact(uint32_t max_tokens = 6,
                                         bool fuse_projector = false) {
  LlamaArtifactOptions o;
  o.max_tokens = max_tokens;
  o.fused = fuse_projector;
  TinyLlamaOptions t;
  t.n_layers = fuse_projector ? 2 : 1;
  ArtifactSpec a =
      llamaArtifact(tinyLlamaWeights(t), syntheticTokenizer(272), o);
  RefragArtifactOptions ro;
  ro.fuse_projector = fuse_projector;
  addRefragPrograms(a, randomRefragBundle(272, 16), ro);
  return a;
}

} // namespace loom::test

#endif // LOOM_TEST_SUPPORT_REFRAG_BUILDER_H
