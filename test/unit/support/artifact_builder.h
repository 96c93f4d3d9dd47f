// Test-only writer of Loom artifacts, so runtime tests need no compiler.
//
// ArtifactSpec holds everything an artifact contains in plain structs and
// serializes it (header, flatbuffer, 64-aligned weights, checksums) the way
// the compiler's serializer does. Every field can be set to a wrong value on
// purpose, for bad-artifact tests. On top of it:
//  - LlamaWeights + llamaArtifact(): a llama (llama2.c architecture) in the
//    runtime's dispatch form, unfused or with FusedQkvAttention;
//  - tinyLlama(): random weights and a small synthetic vocabulary;
//  - readLlama2c(): weights and tokenizer from llama2.c .bin files.
// Needs the flatbuffers headers (link the test to loom-schema-headers).
#ifndef LOOM_TEST_SUPPORT_ARTIFACT_BUILDER_H
#define LOOM_TEST_SUPPORT_ARTIFACT_BUILDER_H

#include "loom/artifact_format.h"
#include "loom/loom_artifact_generated.h"
#include "loom/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

namespace loom::test {

namespace fbs = loom::artifact;

// The bf16 nearest `value` (ties to even; a NaN stays a quiet NaN), as
// loomc --weight-type=bf16 rounds.
inline uint16_t toBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float fromBf16(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
  // BF16: `data` is stored rounded to bf16 (2 bytes a value). The block
  // types (Q8_0, Q4_0, Q2_K..Q6_K): the bytes of `blocks` are stored (`data`
  // is unused).
  fbs::DType dtype = fbs::DType::F32;
  std::vector<uint8_t> blocks;
  bool storesBlocks() const {
    return dtype == fbs::DType::Q8_0 || dtype == fbs::DType::Q4_0 ||
           dtype >= fbs::DType::Q2_K;
  }
  // Values recorded in the flatbuffer instead of the correct ones.
  std::optional<uint64_t> offset;
  std::optional<uint64_t> size;
  std::optional<uint64_t> checksum;
};

struct BufferSpec {
  uint64_t offset;
  int64_t row_elems;
};

struct KvCacheSpec {
  uint32_t layer;
  int64_t max_seq;
  int64_t kv_heads;
  int64_t head_dim;
  int32_t loop_layer = -1; // >= 0: core layer of the program's loop
};

// The schema's Loop table (a looped block of the "forward" program).
struct LoopSpec {
  uint32_t body_begin = 0, body_end = 0, tail_end = 0;
  uint32_t state_buffer = 0, next_state_buffer = 0, latent_buffer = 0;
  uint32_t layers_per_iteration = 0, layers_before = 0;
  uint32_t default_iterations = 0;
  fbs::ExitCriterion criterion = fbs::ExitCriterion::None;
  float threshold = 0.0f;
  uint32_t max_iterations = 0;
  float state_std = 0.0f, state_scale = 0.0f;
};

struct DispatchSpec {
  fbs::Kernel kernel;
  std::vector<uint32_t> inputs, outputs, scratch, weights;
  std::vector<int64_t> iparams;
  std::vector<float> fparams;
  std::string name;
};

// A program besides the main one (ArtifactSpec::extra_programs), e.g. the
// REFRAG chunk encoder's "encode_chunk", "project_chunk", "score_chunk".
struct ProgramSpec {
  std::string name;
  std::vector<DispatchSpec> dispatches;
  uint32_t logits_buffer = 0; // the program's output buffer
  int32_t input_buffer = -1;  // -1: reads token ids
};

// The schema's RefragConfig.
struct RefragSpec {
  int32_t cls_token_id = 1;
  uint32_t max_chunk_len = 0;
  uint32_t encoder_dim = 0;
  uint64_t encoder_checksum = 0;
};

struct ConfigSpec {
  std::string architecture = "llama";
  int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0,
          head_dim = 0, vocab_size = 0, max_seq = 0;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  int32_t bos_id = 1, eos_id = 2;
  std::vector<int32_t> stop_ids;
};

struct TokenizerSpec {
  std::vector<std::string> pieces;
  std::vector<float> scores; // SentencePiece-style
  uint32_t max_token_length = 0;
  std::optional<loom::ByteLevelBpe> byte_level; // its BOS/EOS: the config's
  loom::SpecialTokens special;
  std::string chat_template; // empty: none
  std::optional<std::string> chat_bos, chat_eos;
};

struct ArtifactSpec {
  ConfigSpec config;
  std::optional<TokenizerSpec> tokenizer;
  std::vector<TensorSpec> tensors;
  std::vector<BufferSpec> buffers;
  std::vector<KvCacheSpec> kv_caches;
  std::vector<DispatchSpec> dispatches;
  uint32_t logits_buffer = 0;
  std::optional<LoopSpec> loop;
  std::string program_name = "forward";
  int32_t input_buffer = -1; // of the main program
  // Programs after the main one, in order.
  std::vector<ProgramSpec> extra_programs;
  std::optional<RefragSpec> refrag;
  uint64_t arena_bytes = 0;
  uint32_t max_tokens = 1;
  // Header / identification fields, correct by default.
  uint32_t header_version = kArtifactFormatVersion;
  uint32_t model_format_version = kArtifactFormatVersion;
  std::string file_identifier = "LOOM";
  std::string target = "cpu";

  uint32_t addTensor(std::string name, std::vector<int64_t> shape,
                     std::vector<float> data) {
    TensorSpec t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.data = std::move(data);
    tensors.push_back(std::move(t));
    return static_cast<uint32_t>(tensors.size() - 1);
  }

  // A buffer of max_tokens rows at `offset`, growing the arena to hold it.
  uint32_t addBufferAt(uint64_t offset, int64_t row_elems) {
    buffers.push_back({offset, row_elems});
    uint64_t end = offset + uint64_t(max_tokens) * row_elems * sizeof(float);
    arena_bytes = std::max(arena_bytes, alignUp(end, 64));
    return static_cast<uint32_t>(buffers.size() - 1);
  }

  // A buffer after everything allocated so far.
  uint32_t addBuffer(int64_t row_elems) {
    return addBufferAt(arena_bytes, row_elems);
  }

  void add(DispatchSpec d) { dispatches.push_back(std::move(d)); }

  // The complete artifact file.
  std::vector<uint8_t> serialize() const;
};

inline std::vector<uint8_t> ArtifactSpec::serialize() const {
  // Weights section: each tensor's data at the next 64-byte boundary.
  std::vector<uint8_t> weights;
  std::vector<uint64_t> placed;
  std::vector<uint64_t> sums;
  for (const TensorSpec &t : tensors) {
    weights.resize(alignUp(weights.size(), kWeightAlignment));
    placed.push_back(weights.size());
    std::vector<uint8_t> stored;
    if (t.storesBlocks()) {
      stored = t.blocks;
    } else if (t.dtype == fbs::DType::BF16) {
      stored.resize(t.data.size() * sizeof(uint16_t));
      for (size_t e = 0; e < t.data.size(); ++e) {
        uint16_t h = toBf16(t.data[e]);
        std::memcpy(stored.data() + e * sizeof h, &h, sizeof h);
      }
    } else {
      const uint8_t *p = reinterpret_cast<const uint8_t *>(t.data.data());
      stored.assign(p, p + t.data.size() * sizeof(float));
    }
    sums.push_back(loomChecksum64(stored.data(), stored.size()));
    weights.insert(weights.end(), stored.begin(), stored.end());
  }

  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  std::vector<flatbuffers::Offset<fbs::Tensor>> tensor_offsets;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec &t = tensors[i];
    uint64_t bytes =
        t.storesBlocks()
            ? t.blocks.size()
            : t.data.size() * (t.dtype == fbs::DType::BF16 ? sizeof(uint16_t)
                                                           : sizeof(float));
    tensor_offsets.push_back(fbs::CreateTensorDirect(
        fbb, t.name.c_str(), t.dtype, &t.shape, t.offset.value_or(placed[i]),
        t.size.value_or(bytes), t.checksum.value_or(sums[i])));
  }
  std::vector<fbs::Buffer> buffer_structs;
  for (const BufferSpec &b : buffers)
    buffer_structs.emplace_back(b.offset, b.row_elems);
  std::vector<flatbuffers::Offset<fbs::KvCache>> cache_offsets;
  for (const KvCacheSpec &c : kv_caches)
    cache_offsets.push_back(fbs::CreateKvCache(
        fbb, c.layer, c.max_seq, c.kv_heads, c.head_dim, c.loop_layer));
  auto dispatchOffsets = [&](const std::vector<DispatchSpec> &list) {
    std::vector<flatbuffers::Offset<fbs::Dispatch>> offsets;
    for (const DispatchSpec &d : list)
      offsets.push_back(fbs::CreateDispatchDirect(
          fbb, d.kernel, &d.inputs, &d.outputs, &d.scratch, &d.weights,
          &d.iparams, &d.fparams, d.name.c_str(), "builder"));
    return offsets;
  };
  std::vector<flatbuffers::Offset<fbs::Dispatch>> dispatch_offsets =
      dispatchOffsets(dispatches);
  flatbuffers::Offset<fbs::Loop> loop_offset;
  if (loop) {
    const LoopSpec &l = *loop;
    loop_offset = fbs::CreateLoop(
        fbb, l.body_begin, l.body_end, l.tail_end, l.state_buffer,
        l.next_state_buffer, l.latent_buffer, l.layers_per_iteration,
        l.layers_before, l.default_iterations, l.criterion, l.threshold,
        l.max_iterations, l.state_std, l.state_scale);
  }
  std::vector<flatbuffers::Offset<fbs::Program>> programs = {
      fbs::CreateProgramDirect(fbb, program_name.c_str(), &dispatch_offsets,
                               logits_buffer, loop_offset, input_buffer)};
  for (const ProgramSpec &p : extra_programs) {
    std::vector<flatbuffers::Offset<fbs::Dispatch>> offsets =
        dispatchOffsets(p.dispatches);
    programs.push_back(fbs::CreateProgramDirect(
        fbb, p.name.c_str(), &offsets, p.logits_buffer, 0, p.input_buffer));
  }
  flatbuffers::Offset<fbs::RefragConfig> refrag_offset;
  if (refrag)
    refrag_offset = fbs::CreateRefragConfig(
        fbb, refrag->cls_token_id, refrag->max_chunk_len, refrag->encoder_dim,
        refrag->encoder_checksum);
  const ConfigSpec &c = config;
  auto config_offset = fbs::CreateModelConfigDirect(
      fbb, c.architecture.c_str(), c.dim, c.hidden_dim, c.n_layers, c.n_heads,
      c.n_kv_heads, c.head_dim, c.vocab_size, c.max_seq, c.rope_theta,
      c.norm_eps, c.bos_id, c.eos_id,
      c.stop_ids.empty() ? nullptr : &c.stop_ids);
  flatbuffers::Offset<fbs::TokenizerDef> tokenizer_offset;
  if (tokenizer) {
    std::vector<uint32_t> offsets = {0};
    std::vector<uint8_t> bytes;
    for (const std::string &p : tokenizer->pieces) {
      bytes.insert(bytes.end(), p.begin(), p.end());
      offsets.push_back(static_cast<uint32_t>(bytes.size()));
    }
    flatbuffers::Offset<fbs::ByteLevelBpeDef> byte_level;
    if (const auto &bl = tokenizer->byte_level) {
      std::vector<int32_t> merges;
      for (auto [left, right] : bl->merges) {
        merges.push_back(left);
        merges.push_back(right);
      }
      byte_level = fbs::CreateByteLevelBpeDefDirect(
          fbb, static_cast<fbs::PreTokenizer>(bl->pre), &merges, &bl->control,
          bl->ignore_merges, bl->add_bos, bl->nfc);
    }
    flatbuffers::Offset<fbs::ChatTemplateDef> chat;
    if (!tokenizer->chat_template.empty())
      chat = fbs::CreateChatTemplateDefDirect(
          fbb, tokenizer->chat_template.c_str(),
          tokenizer->chat_bos ? tokenizer->chat_bos->c_str() : nullptr,
          tokenizer->chat_eos ? tokenizer->chat_eos->c_str() : nullptr);
    auto ids = [](const std::vector<int32_t> &v) {
      return v.empty() ? nullptr : &v;
    };
    const loom::SpecialTokens &sp = tokenizer->special;
    tokenizer_offset = fbs::CreateTokenizerDefDirect(
        fbb, tokenizer->max_token_length, &tokenizer->scores, &offsets, &bytes,
        byte_level, chat, ids(sp.ids), ids(sp.lstrip), ids(sp.rstrip),
        sp.prefix_after_special);
  }
  auto model = fbs::CreateModelDirect(
      fbb, model_format_version, "artifact_builder.h", target.c_str(),
      config_offset, tokenizer_offset, &tensor_offsets, &buffer_structs,
      &cache_offsets, &programs, arena_bytes, max_tokens, nullptr,
      refrag_offset);
  fbb.Finish(model, file_identifier.c_str());

  ArtifactFileHeader h;
  std::memcpy(h.magic, kArtifactMagic, sizeof h.magic);
  h.format_version = header_version;
  h.header_size = sizeof(ArtifactFileHeader);
  h.fb_offset = sizeof(ArtifactFileHeader);
  h.fb_size = fbb.GetSize();
  h.fb_checksum = loomChecksum64(fbb.GetBufferPointer(), fbb.GetSize());
  h.weights_offset = alignUp(h.fb_offset + h.fb_size, kWeightAlignment);
  h.weights_size = weights.size();
  h.file_size = h.weights_offset + h.weights_size;

  std::vector<uint8_t> file(h.file_size, 0);
  std::memcpy(file.data(), &h, sizeof h);
  std::memcpy(file.data() + h.fb_offset, fbb.GetBufferPointer(), h.fb_size);
  if (!weights.empty())
    std::memcpy(file.data() + h.weights_offset, weights.data(), weights.size());
  return file;
}

inline ArtifactFileHeader readHeader(const std::vector<uint8_t> &file) {
  ArtifactFileHeader h;
  std::memcpy(&h, file.data(), sizeof h);
  return h;
}

inline void writeHeader(std::vector<uint8_t> &file,
                        const ArtifactFileHeader &h) {
  std::memcpy(file.data(), &h, sizeof h);
}

// Recomputes the header's flatbuffer checksum after the flatbuffer bytes
// were edited, so the edit reaches the structural checks.
inline void refreshFbChecksum(std::vector<uint8_t> &file) {
  ArtifactFileHeader h = readHeader(file);
  h.fb_checksum = loomChecksum64(file.data() + h.fb_offset, h.fb_size);
  writeHeader(file, h);
}

// A file in the temporary directory, removed when this goes out of scope.
class TempFile {
public:
  TempFile() {
    const char *dir = std::getenv("TMPDIR");
    std::string pattern =
        std::string(dir && *dir ? dir : "/tmp") + "/loom-test-XXXXXX.loom";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    int fd = ::mkstemps(name.data(), 5);
    if (fd < 0)
      throw std::runtime_error("mkstemps failed for " + pattern);
    ::close(fd);
    path_ = name.data();
  }
  explicit TempFile(const std::vector<uint8_t> &bytes) : TempFile() {
    write(bytes);
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile &) = delete;
  TempFile &operator=(const TempFile &) = delete;

  void write(const std::vector<uint8_t> &bytes) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char *>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out)
      throw std::runtime_error("cannot write " + path_);
  }
  const std::string &path() const { return path_; }

private:
  std::string path_;
};

// ---- Llama models in dispatch form ----------------------------------------

// Weights of a llama2.c-architecture model, row-major [out, in] matrices.
struct LlamaWeights {
  int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0,
          vocab_size = 0, max_seq = 0;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  std::vector<float> embed; // [V, D]
  struct Layer {
    std::vector<float> att_norm;       // [D]
    std::vector<float> wq, wk, wv, wo; // [D,D] [kvd,D] [kvd,D] [D,D]
    std::vector<float> ffn_norm;       // [D]
    std::vector<float> w1, w2, w3;     // [H,D] [D,H] [H,D]
  };
  std::vector<Layer> layers;
  std::vector<float> final_norm;  // [D]
  std::vector<float> wcls;        // [V, D]
  bool shared_classifier = false; // wcls == embed: one tensor in the artifact

  int64_t headDim() const { return dim / n_heads; }
  int64_t kvDim() const { return n_kv_heads * headDim(); }
};

struct LlamaArtifactOptions {
  uint32_t max_tokens = 8;   // rows per step
  bool fused = false;        // FusedQkvAttention instead of separate ops
  bool residual_add = false; // MatMul + Add instead of accumulating MatMul
  int64_t kv_max_seq = 0;    // KV cache length; 0 = the model's max_seq
};

// The model in the dispatch form the compiler emits (see the schema and the
// runtime conventions): one "forward" program over T rows. The logits buffer
// shares arena space with the FFN buffers, as a liveness-planned arena does.
inline ArtifactSpec llamaArtifact(const LlamaWeights &w,
                                  const TokenizerSpec &tok,
                                  const LlamaArtifactOptions &o = {}) {
  ArtifactSpec a;
  const int64_t D = w.dim, H = w.hidden_dim, V = w.vocab_size;
  const int64_t nh = w.n_heads, nkv = w.n_kv_heads, hd = w.headDim();
  const int64_t kvd = w.kvDim();
  a.config.dim = D;
  a.config.hidden_dim = H;
  a.config.n_layers = w.n_layers;
  a.config.n_heads = nh;
  a.config.n_kv_heads = nkv;
  a.config.head_dim = hd;
  a.config.vocab_size = V;
  a.config.max_seq = w.max_seq;
  a.config.rope_theta = w.rope_theta;
  a.config.norm_eps = w.norm_eps;
  a.tokenizer = tok;
  a.max_tokens = o.max_tokens;

  const uint32_t x = a.addBuffer(D), h = a.addBuffer(D);
  uint32_t q = 0, k = 0, v = 0, att = 0, qkv = 0, attn = 0;
  if (o.fused) {
    qkv = a.addBuffer((nh + 2 * nkv) * hd);
    attn = a.addBuffer(nh * hd);
  } else {
    q = a.addBuffer(D);
    k = a.addBuffer(kvd);
    v = a.addBuffer(kvd);
    att = a.addBuffer(D);
  }
  const uint64_t ffn_offset = a.arena_bytes;
  const uint32_t g = a.addBuffer(H), u = a.addBuffer(H);
  a.logits_buffer = a.addBufferAt(ffn_offset, V);

  const uint32_t embed = a.addTensor("tok_embeddings", {V, D}, w.embed);
  const float eps = w.norm_eps, theta = w.rope_theta;
  a.add({fbs::Kernel::Embed, {}, {x}, {}, {embed}, {}, {}, "embed"});
  for (int64_t l = 0; l < w.n_layers; ++l) {
    const LlamaWeights::Layer &L = w.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    a.kv_caches.push_back({static_cast<uint32_t>(l),
                           o.kv_max_seq ? o.kv_max_seq : w.max_seq, nkv, hd});
    const int64_t cache = l;
    uint32_t an = a.addTensor(p + "attention_norm", {D}, L.att_norm);
    a.add({fbs::Kernel::RmsNorm, {x}, {h}, {}, {an}, {}, {eps}, p + "rms_att"});
    uint32_t wo = a.addTensor(p + "wo", {D, D}, L.wo);
    if (o.fused) {
      std::vector<float> packed = L.wq;
      packed.insert(packed.end(), L.wk.begin(), L.wk.end());
      packed.insert(packed.end(), L.wv.begin(), L.wv.end());
      uint32_t wqkv = a.addTensor(p + "wqkv", {D + 2 * kvd, D}, packed);
      a.add({fbs::Kernel::FusedQkvAttention,
             {h},
             {x},
             {qkv, attn},
             {wqkv, wo},
             {cache, nh, nkv, hd, 1},
             {theta},
             p + "attention"});
    } else {
      uint32_t wq = a.addTensor(p + "wq", {D, D}, L.wq);
      uint32_t wk = a.addTensor(p + "wk", {kvd, D}, L.wk);
      uint32_t wv = a.addTensor(p + "wv", {kvd, D}, L.wv);
      a.add({fbs::Kernel::MatMul, {h}, {q}, {}, {wq}, {0}, {}, p + "wq"});
      a.add({fbs::Kernel::MatMul, {h}, {k}, {}, {wk}, {}, {}, p + "wk"});
      a.add({fbs::Kernel::MatMul, {h}, {v}, {}, {wv}, {0}, {}, p + "wv"});
      // Both Rope forms: input named explicitly, and output only.
      a.add({fbs::Kernel::Rope,
             {q},
             {q},
             {},
             {},
             {D, hd},
             {theta},
             p + "rope_q"});
      a.add({fbs::Kernel::Rope,
             {},
             {k},
             {},
             {},
             {kvd, hd},
             {theta},
             p + "rope_k"});
      a.add({fbs::Kernel::Attention,
             {q, k, v},
             {att},
             {},
             {},
             {cache, nh, nkv, hd},
             {},
             p + "attention"});
      if (o.residual_add) {
        a.add({fbs::Kernel::MatMul, {att}, {h}, {}, {wo}, {0}, {}, p + "wo"});
        a.add({fbs::Kernel::Add, {x, h}, {x}, {}, {}, {}, {}, p + "res1"});
      } else {
        a.add({fbs::Kernel::MatMul, {att}, {x}, {}, {wo}, {1}, {}, p + "wo"});
      }
    }
    uint32_t fn = a.addTensor(p + "ffn_norm", {D}, L.ffn_norm);
    uint32_t w1 = a.addTensor(p + "w1", {H, D}, L.w1);
    uint32_t w3 = a.addTensor(p + "w3", {H, D}, L.w3);
    uint32_t w2 = a.addTensor(p + "w2", {D, H}, L.w2);
    a.add({fbs::Kernel::RmsNorm, {x}, {h}, {}, {fn}, {}, {eps}, p + "rms_ffn"});
    a.add({fbs::Kernel::MatMul, {h}, {g}, {}, {w1}, {0}, {}, p + "w1"});
    a.add({fbs::Kernel::MatMul, {h}, {u}, {}, {w3}, {0}, {}, p + "w3"});
    a.add({fbs::Kernel::SiluMul, {g, u}, {g}, {}, {}, {}, {}, p + "silu"});
    if (o.residual_add) {
      a.add({fbs::Kernel::MatMul, {g}, {h}, {}, {w2}, {0}, {}, p + "w2"});
      a.add({fbs::Kernel::Add, {x, h}, {x}, {}, {}, {}, {}, p + "res2"});
    } else {
      a.add({fbs::Kernel::MatMul, {g}, {x}, {}, {w2}, {1}, {}, p + "w2"});
    }
  }
  uint32_t fin = a.addTensor("norm", {D}, w.final_norm);
  a.add({fbs::Kernel::RmsNorm, {x}, {h}, {}, {fin}, {}, {eps}, "rms_final"});
  uint32_t cls =
      w.shared_classifier ? embed : a.addTensor("output", {V, D}, w.wcls);
  a.add({fbs::Kernel::Logits,
         {h},
         {a.logits_buffer},
         {},
         {cls},
         {},
         {},
         "logits"});
  return a;
}

// A vocabulary that satisfies llama2.c's layout: <unk>, BOS, EOS, the 256
// byte-fallback pieces <0x00>..<0xFF>, then a few merges.
inline TokenizerSpec syntheticTokenizer(int64_t vocab_size) {
  TokenizerSpec t;
  t.pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int b = 0; b < 256; ++b) {
    char piece[8];
    std::snprintf(piece, sizeof piece, "<0x%02X>", b);
    t.pieces.push_back(piece);
  }
  // Characters first, then merges in score order: "the cat" encodes to
  // [BOS, " the", " cat"] with 13 pieces past the byte fallbacks.
  const char *words[] = {"t",  "h",   "e",    " ",  "c",  "a",   "th",
                         " t", " th", " the", "at", " c", " cat"};
  for (size_t i = 0; static_cast<int64_t>(t.pieces.size()) < vocab_size; ++i)
    t.pieces.push_back(i < std::size(words) ? std::string(words[i])
                                            : "w" + std::to_string(i));
  t.scores.resize(t.pieces.size(), 0.0f);
  for (size_t i = 259; i < t.pieces.size(); ++i)
    t.scores[i] = -static_cast<float>(i - 259);
  t.max_token_length = 8;
  return t;
}

// Appends head_dim / 2 frequency factors (1 to 8) to every rope's fparams,
// as loomc does for a model with Llama 3.1's rope scaling.
inline void addRopeFactors(ArtifactSpec &a, float scale = 0.0f) {
  for (auto &d : a.dispatches) {
    int64_t hd = 0;
    if (d.kernel == fbs::Kernel::Rope)
      hd = d.iparams[1];
    else if (d.kernel == fbs::Kernel::FusedQkvAttention)
      hd = d.iparams[3];
    for (int64_t i = 0; i < hd / 2; ++i)
      d.fparams.push_back(1.0f + float(i % 5) * 1.75f);
    if (hd > 0 && scale > 0) // YaRN's attention factor, after the factors
      d.fparams.push_back(scale);
  }
}

// Gives every attention (fused or not) a sliding window of `window`
// positions, as loomc does for Mistral v0.1 or Phi-3 (iparams: Attention's
// [4]; FusedQkvAttention's [6], after accumulate and placeholder_qkv).
inline void addSlidingWindow(ArtifactSpec &a, int64_t window) {
  for (auto &d : a.dispatches) {
    if (d.kernel == fbs::Kernel::Attention) {
      d.iparams.resize(4);
      d.iparams.push_back(window);
    } else if (d.kernel == fbs::Kernel::FusedQkvAttention) {
      d.iparams.resize(6, 0);
      d.iparams.push_back(window);
    }
  }
}

// Adds a qk_bias and a v_bias to every fused attention, as loomc does for
// Qwen 2's q/k/v biases.
inline void addQkvBiases(ArtifactSpec &a) {
  for (size_t i = 0; i < a.dispatches.size(); ++i) {
    if (a.dispatches[i].kernel != fbs::Kernel::FusedQkvAttention)
      continue;
    const int64_t nh = a.dispatches[i].iparams[1],
                  nkv = a.dispatches[i].iparams[2],
                  hd = a.dispatches[i].iparams[3];
    auto values = [&](int64_t n, float phase) {
      std::vector<float> v(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j)
        v[j] = 0.3f * std::sin(phase + 0.7f * float(j));
      return v;
    };
    const std::string p = "bias" + std::to_string(i) + ".";
    uint32_t qk = a.addTensor(p + "qk", {(nh + nkv) * hd},
                              values((nh + nkv) * hd, float(i)));
    uint32_t v = a.addTensor(p + "v", {nkv * hd}, values(nkv * hd, 2.0f + i));
    a.dispatches[i].weights.push_back(qk);
    a.dispatches[i].weights.push_back(v);
  }
}

// A byte-level BPE of `vocab_size` (>= 262) pieces: the 256 bytes, "th",
// "the", " the", then special tokens "<|bos|>" (256 + 3), "<|eos|>",
// "<|eot|>" and unnamed control ids up to the vocabulary's end; BOS first.
// The config's bos_id / eos_id must be 259 / 260 for it.
inline TokenizerSpec byteLevelTokenizer(int64_t vocab_size) {
  TokenizerSpec t;
  for (int b = 0; b < 256; ++b)
    t.pieces.push_back(std::string(1, static_cast<char>(b)));
  for (const char *p : {"th", "the", " the", "<|bos|>", "<|eos|>", "<|eot|>"})
    t.pieces.push_back(p);
  loom::ByteLevelBpe bpe;
  bpe.pre = loom::PreTokenizer::Llama3;
  bpe.merges = {{'t', 'h'}, {256, 'e'}, {' ', 257}};
  for (int32_t id = 259; id < vocab_size; ++id)
    bpe.control.push_back(id);
  t.pieces.resize(static_cast<size_t>(vocab_size));
  bpe.add_bos = true;
  t.byte_level = bpe;
  for (const std::string &p : t.pieces)
    t.max_token_length =
        std::max<uint32_t>(t.max_token_length, static_cast<uint32_t>(p.size()));
  return t;
}

struct TinyLlamaOptions {
  int64_t n_layers = 1;
  int64_t dim = 16, hidden_dim = 40, n_heads = 4, n_kv_heads = 2;
  int64_t vocab_size = 272, max_seq = 32;
  bool shared_classifier = false;
  uint64_t seed = 1;
};

// Random weights scaled so activations stay O(1) through the layers.
inline LlamaWeights tinyLlamaWeights(const TinyLlamaOptions &o = {}) {
  LlamaWeights w;
  w.dim = o.dim;
  w.hidden_dim = o.hidden_dim;
  w.n_layers = o.n_layers;
  w.n_heads = o.n_heads;
  w.n_kv_heads = o.n_kv_heads;
  w.vocab_size = o.vocab_size;
  w.max_seq = o.max_seq;
  w.shared_classifier = o.shared_classifier;
  std::mt19937_64 rng(o.seed);
  auto random = [&](int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (float &x : v)
      x = dist(rng);
    return v;
  };
  const int64_t D = o.dim, H = o.hidden_dim, kvd = w.kvDim();
  w.embed = random(o.vocab_size * D, -1.0f, 1.0f);
  for (int64_t l = 0; l < o.n_layers; ++l) {
    LlamaWeights::Layer L;
    L.att_norm = random(D, 0.5f, 1.5f);
    L.wq = random(D * D, -0.4f, 0.4f);
    L.wk = random(kvd * D, -0.4f, 0.4f);
    L.wv = random(kvd * D, -0.4f, 0.4f);
    L.wo = random(D * D, -0.2f, 0.2f);
    L.ffn_norm = random(D, 0.5f, 1.5f);
    L.w1 = random(H * D, -0.3f, 0.3f);
    L.w2 = random(D * H, -0.2f, 0.2f);
    L.w3 = random(H * D, -0.3f, 0.3f);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = random(D, 0.5f, 1.5f);
  w.wcls =
      o.shared_classifier ? w.embed : random(o.vocab_size * D, -0.5f, 0.5f);
  return w;
}

inline std::vector<uint8_t> readFileBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// A llama2.c checkpoint (run.c's format: 7 int32 header fields, then the
// weights in a fixed order; a negative vocab_size means an unshared
// classifier follows the unused RoPE tables) and its tokenizer.bin.
inline LlamaWeights readLlama2c(const std::string &model_path,
                                const std::string &tokenizer_path,
                                TokenizerSpec *tokenizer) {
  std::vector<uint8_t> bytes = readFileBytes(model_path);
  int32_t hdr[7];
  if (bytes.size() < sizeof hdr)
    throw std::runtime_error(model_path + " is too short");
  std::memcpy(hdr, bytes.data(), sizeof hdr);
  LlamaWeights w;
  w.dim = hdr[0];
  w.hidden_dim = hdr[1];
  w.n_layers = hdr[2];
  w.n_heads = hdr[3];
  w.n_kv_heads = hdr[4];
  w.shared_classifier = hdr[5] > 0;
  w.vocab_size = hdr[5] > 0 ? hdr[5] : -int64_t(hdr[5]);
  w.max_seq = hdr[6];
  size_t pos = sizeof hdr;
  auto take = [&](int64_t n) {
    if (pos + n * sizeof(float) > bytes.size())
      throw std::runtime_error(model_path + " is truncated");
    std::vector<float> v(static_cast<size_t>(n));
    std::memcpy(v.data(), bytes.data() + pos, n * sizeof(float));
    pos += n * sizeof(float);
    return v;
  };
  const int64_t D = w.dim, H = w.hidden_dim, L = w.n_layers;
  const int64_t kvd = w.kvDim();
  w.embed = take(w.vocab_size * D);
  w.layers.resize(static_cast<size_t>(L));
  for (auto &l : w.layers)
    l.att_norm = take(D);
  for (auto &l : w.layers)
    l.wq = take(D * D);
  for (auto &l : w.layers)
    l.wk = take(kvd * D);
  for (auto &l : w.layers)
    l.wv = take(kvd * D);
  for (auto &l : w.layers)
    l.wo = take(D * D);
  for (auto &l : w.layers)
    l.ffn_norm = take(D);
  for (auto &l : w.layers)
    l.w1 = take(H * D);
  for (auto &l : w.layers)
    l.w2 = take(D * H);
  for (auto &l : w.layers)
    l.w3 = take(H * D);
  w.final_norm = take(D);
  take(w.max_seq * w.headDim()); // freq_cis_real, unused
  w.wcls = w.shared_classifier ? w.embed : take(w.vocab_size * D);

  std::vector<uint8_t> tb = readFileBytes(tokenizer_path);
  Tokenizer t = Tokenizer::fromLlama2cBytes(tb.data(), tb.size(), w.vocab_size);
  tokenizer->pieces.clear();
  tokenizer->scores.clear();
  for (int32_t i = 0; i < t.vocabSize(); ++i) {
    tokenizer->pieces.push_back(t.piece(i));
    tokenizer->scores.push_back(t.score(i));
  }
  tokenizer->max_token_length = t.maxTokenLength();
  return w;
}

} // namespace loom::test

#endif // LOOM_TEST_SUPPORT_ARTIFACT_BUILDER_H
