//===- ArtifactWriter.h - loom.program to a .loom artifact ------------------===//
//
// Serialises a module in dispatch form (loom.weight symbols + one
// loom.program @forward) into the artifact format of
// runtime/schema/loom_artifact.fbs: file header, flatbuffer, and the weights
// section, packing each weight the program uses (packed weights are the
// concatenation of their parts) 64-byte aligned with a checksum, as f32 or,
// for matrices and tables, bf16 (ArtifactOptions).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_PASSES_SERIALIZE_ARTIFACTWRITER_H
#define LOOM_PASSES_SERIALIZE_ARTIFACTWRITER_H

#include "loom/ggml_blocks.h"
#include "loom/tokenizer.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypeInterfaces.h"
#include "llvm/ADT/StringMap.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace loom {

/// How a source weight's bytes encode its values. Every value of these
/// encodings is exactly an f32, and the writer decodes them so (then rounds
/// to bf16 where the artifact stores bf16). The block encodings are GGUF's
/// (ggml's) quantized blocks along a row, decoded as ggml decodes them
/// (loom/ggml_blocks.h): Q8_0 and Q4_0 through Q5_1 blocks of 32 values, the
/// K formats blocks of 256.
enum class SourceEncoding {
  F32,
  BF16,
  F16,
  // The block encodings, in ggml::BlockType's order (blockTypeOf).
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
};

/// The ggml block format of a block encoding; nullopt for F32, BF16, F16.
inline std::optional<ggml::BlockType> blockTypeOf(SourceEncoding e) {
  constexpr auto at = [](SourceEncoding s, ggml::BlockType t) {
    return int(s) - int(SourceEncoding::Q4_0) == int(t);
  };
  static_assert(at(SourceEncoding::Q4_0, ggml::BlockType::Q4_0) &&
                    at(SourceEncoding::Q4_1, ggml::BlockType::Q4_1) &&
                    at(SourceEncoding::Q5_0, ggml::BlockType::Q5_0) &&
                    at(SourceEncoding::Q5_1, ggml::BlockType::Q5_1) &&
                    at(SourceEncoding::Q8_0, ggml::BlockType::Q8_0) &&
                    at(SourceEncoding::Q2_K, ggml::BlockType::Q2_K) &&
                    at(SourceEncoding::Q3_K, ggml::BlockType::Q3_K) &&
                    at(SourceEncoding::Q4_K, ggml::BlockType::Q4_K) &&
                    at(SourceEncoding::Q5_K, ggml::BlockType::Q5_K) &&
                    at(SourceEncoding::Q6_K, ggml::BlockType::Q6_K),
                "the block encodings list ggml::BlockType in order");
  if (e < SourceEncoding::Q4_0)
    return std::nullopt;
  return ggml::BlockType(int(e) - int(SourceEncoding::Q4_0));
}

/// The source encoding of ggml blocks of `type`.
inline SourceEncoding sourceEncodingOf(ggml::BlockType type) {
  return SourceEncoding(int(type) + int(SourceEncoding::Q4_0));
}

/// Where a source weight's bytes are: `bytes` bytes at `offset` of `file`,
/// encoded as `encoding` says.
struct WeightSource {
  std::string file;
  uint64_t offset = 0;
  uint64_t bytes = 0;
  SourceEncoding encoding = SourceEncoding::F32;
  /// Non-zero: a q or k projection whose rows are in the rotate-half order
  /// of Hugging Face Llama checkpoints, in heads of this many rows: row
  /// j*hd/2 + i of a head is row 2i + j of the interleaved order Loom's rope
  /// pairs (llama2.c's, Meta's). The writer restores the interleaved order.
  int64_t rotateHalfHeadDim = 0;
};

/// The f32 bytes `source` decodes to; 0 when its bytes are not a whole
/// number of values (or blocks).
uint64_t decodedBytes(const WeightSource &source);

using WeightTable = llvm::StringMap<WeightSource>;

/// The tokenizer's vocabulary, stored in the artifact: SentencePiece-style
/// (a score per piece) or, where byteLevel is set, a byte-level BPE (no
/// scores; its BOS and EOS ids are the model's).
struct TokenizerData {
  uint32_t maxTokenLength = 0;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::optional<loom::ByteLevelBpe> byteLevel;
  /// Special tokens picked out of chat prompts, and their whitespace rules.
  loom::SpecialTokens special;
  /// The chat template (Jinja source); empty where the model has none.
  std::string chatTemplate;
  /// The texts the template gets as bos_token and eos_token, where the
  /// model's tokenizer_config.json names them (else the BOS and EOS pieces).
  std::optional<std::string> chatBosToken, chatEosToken;
};

/// Called while packing: (tensors done, tensors total, bytes done).
using ProgressFn = std::function<void(size_t, size_t, uint64_t)>;

/// How the artifact stores weights (the schema's DType). Keep, Q4_K_M and
/// Q5_K_M are requests only: Keep, each tensor as its source is encoded,
/// where the runtime reads that encoding (storedWeightType); the mixes,
/// llama.cpp's recipes (requestedWeightType).
enum class WeightType {
  F32,
  BF16,
  F16,
  Q8_0,
  Q4_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  Keep,
  Q4_K_M,
  Q5_K_M,
};

/// The options of the serialisation step (loomc --weight-type, --target).
struct ArtifactOptions {
  /// BF16 (F16): every tensor of rank >= 2 (matrices and tables) is stored
  /// as bf16 (IEEE halves), rounded to nearest even from f32. Q8_0 / Q4_0:
  /// every matrix whose rows are whole blocks of 32 is stored in those blocks
  /// (a source in the same encoding keeps its blocks; others are quantized as
  /// ggml does). Other tensors (norm weights, biases; for Q8_0 / Q4_0 also
  /// matrices with other row lengths) stay f32. Keep: each tensor keeps its
  /// source's encoding where the runtime reads it (bf16 and f16 for rank
  /// >= 2; Q8_0, Q4_0 and Q2_K..Q6_K for matrices of whole blocks), else
  /// f32.
  WeightType weightType = WeightType::F32;
  /// Recorded in Model.target: "cpu" or "cuda". The dispatch form is the
  /// same for both; the artifact runs on either device.
  std::string target = "cpu";
  /// Called while packing; may be empty.
  ProgressFn progress;
};

/// What `requested` asks of the weight @name of `module` (packed or not):
/// `requested` itself, except for the mixes. Q4_K_M (Q5_K_M) is llama.cpp's
/// recipe of that name without an importance matrix: Q6_K for the
/// classifier (`output`, or `tok_embeddings` where the model has no
/// `output`) and for attn_v and ffn_down (`layers.I.wv`, `layers.I.w2`) in
/// the layers llama.cpp gives more bits (I < L/8, I >= 7L/8, and every third
/// from L/8 + 2, for L = the model's n_layers), Q4_K (Q5_K) for the rest. A
/// packed weight whose parts ask different types asks f32.
WeightType requestedWeightType(mlir::ModuleOp module, llvm::StringRef name,
                               WeightType requested);

/// The type a weight of `type` whose sources (its parts, in order) are
/// `parts` is stored as when `requested` is asked for (see ArtifactOptions;
/// a mix is asked through requestedWeightType first).
WeightType storedWeightType(mlir::ShapedType type, WeightType requested,
                            llvm::ArrayRef<const WeightSource *> parts);

/// Bytes a weight of `type` takes stored as `stored`.
uint64_t storedWeightBytes(mlir::ShapedType type, WeightType stored);

/// The "f32" / "bf16" / "f16" / "q8_0" / "q4_0" / "keep" spelling of loomc
/// --weight-type ("q4_k" and the like for the K formats, which keep alone
/// stores).
const char *weightTypeName(WeightType type);

/// `value` rounded to bf16, to nearest even; a NaN stays a (quiet) NaN.
uint16_t floatToBf16(float value);

/// Writes the artifact to `outPath` atomically (a temporary file renamed at
/// the end, removed on failure). Reports errors as diagnostics on the module.
/// `tokenizer` may be null (a model used with token ids only).
mlir::LogicalResult writeArtifact(mlir::ModuleOp module,
                                  const WeightTable &weights,
                                  const TokenizerData *tokenizer,
                                  const std::string &outPath,
                                  const ArtifactOptions &options = {});

} // namespace loom

#endif // LOOM_PASSES_SERIALIZE_ARTIFACTWRITER_H
