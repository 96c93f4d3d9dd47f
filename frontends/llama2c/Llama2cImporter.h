//===- Llama2cImporter.h - llama2.c checkpoints to loom IR
//------------------===//
//
// Reads a llama2.c ("version 0") checkpoint: a 7 x int32 header (dim,
// hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
// vocab_size means an unshared classifier at the end of the file) and
// layer-major f32 tensors. The file's size must equal what the header
// implies. Builds the loom graph module and the table that tells the
// serializer where each named weight's bytes are.
//
// Config, Checkpoint and importCheckpoint are the Llama graph itself: the
// Hugging Face Llama frontend (frontends/hf) fills the same Checkpoint from
// a config.json and safetensors and builds its graph here.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_LLAMA2C_LLAMA2CIMPORTER_H
#define LOOM_FRONTENDS_LLAMA2C_LLAMA2CIMPORTER_H

#include "passes/Serialize/ArtifactWriter.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>

namespace loom::llama2c {

struct Config {
  int64_t dim = 0, hiddenDim = 0, nLayers = 0, nHeads = 0, nKvHeads = 0,
          vocabSize = 0, maxSeq = 0;
  bool sharedClassifier = true;
  // llama2.c's fixed values; a Hugging Face config.json sets its own.
  float ropeTheta = 10000.0f, normEps = 1e-5f;
  int64_t bosId = 1, eosId = 2;
  // Other ids that end a generation (Llama 3 Instruct's <|eot_id|>).
  std::vector<int64_t> stopIds;
  // RoPE's per-pair divisors of the frequency (head_dim / 2 of them; empty:
  // none): Llama 3.1's rope scaling, GGUF's rope_freqs tensor.
  std::vector<float> ropeFreqFactors;
  // LongRoPE (Phi-3 128k, Phi-3.5): ropeFreqFactors are its short factors,
  // these its long ones, used where the context is longer than
  // ropeOriginalContext (empty: none).
  std::vector<float> ropeFreqFactorsLong;
  int64_t ropeOriginalContext = 0;
  // What RoPE multiplies its cos and sin by (YaRN's and LongRoPE's attention
  // factor; 1: none).
  float ropeScale = 1.0f;
  // Sliding-window attention (Mistral v0.1, Phi-3, Qwen 2's
  // use_sliding_window): the layers from slidingWindowFrom on attend to the
  // last slidingWindow positions, their own included (0: every position).
  int64_t slidingWindow = 0;
  int64_t slidingWindowFrom = 0;
  // Qwen 2: biases on the q, k and v projections (layers.N.bq, bk, bv).
  bool qkvBias = false;
  // Phi-3: q|k|v and gate|up stored as one matrix each (HF frontend only).
  bool packedProjections = false;
  int64_t headDim() const { return dim / nHeads; }
  int64_t kvDim() const { return nKvHeads * headDim(); }
};

struct Checkpoint {
  std::string path;               // the weights file, for locations
  std::string format = "llama2c"; // the module's name
  Config config;
  WeightTable weights; // name -> bytes in `path`
};

/// Reads and validates the header against the file size. On failure returns
/// a one-line message naming the problem in `error`.
std::optional<Checkpoint> readCheckpoint(const std::string &path,
                                         std::string &error);

/// Builds the graph module: loom.weight symbols, a loom.model config
/// dictionary, and func.func @forward(tokens, positions) -> logits.
mlir::OwningOpRef<mlir::ModuleOp> importCheckpoint(mlir::MLIRContext &ctx,
                                                   const Checkpoint &ckpt,
                                                   int64_t maxTokens);

/// What is wrong with `pieces` for the runtime's tokenizer, which falls back
/// to id 3 + byte: "" when ids 3..258 are the pieces <0x00>..<0xFF>.
std::string byteFallbackProblem(const std::vector<std::string> &pieces);

/// A SentencePiece piece with its word-boundary mark U+2581 ("▁") turned
/// into a space, as llama2.c's exporter writes pieces (Hugging Face and GGUF
/// vocabularies keep the mark).
std::string spacesForSentencePieceMarks(llvm::StringRef piece);

/// The bytes a byte-level BPE piece spells in GPT-2's printable alphabet
/// (each byte one character: "Ġ" a space, "Ċ" a newline, ...); nullopt when
/// the piece has a character outside that alphabet.
std::optional<std::string> bytesOfByteLevelPiece(llvm::StringRef spelled);

/// Whether a special token's text is a chat format's end of turn, which ends
/// a generation as EOS does (llama.cpp's list: Llama 3's <|eot_id|> and
/// <|eom_id|>, ChatML's <|im_end|>, Phi-3's <|end|>, Gemma's <end_of_turn>,
/// <|endoftext|>).
bool isEndOfTurnText(llvm::StringRef text);

/// The special tokens of `tokenizer` that end a turn: those spelled as
/// isEndOfTurnText says, and the chat template's eos_token (tokenizer_config
/// .json's, e.g. Llama 3 Instruct's <|eot_id|>).
std::vector<int64_t> endOfTurnIds(const TokenizerData &tokenizer);

/// Adds `ids` to the stop ids of `module`'s loom.model (those not already
/// BOS, EOS or stop ids).
void addStopIds(mlir::ModuleOp module, llvm::ArrayRef<int64_t> ids);

/// Parses a llama2.c tokenizer.bin for `vocabSize` tokens.
std::optional<TokenizerData> readTokenizer(const std::string &path,
                                           int64_t vocabSize,
                                           std::string &error);

} // namespace loom::llama2c

#endif // LOOM_FRONTENDS_LLAMA2C_LLAMA2CIMPORTER_H
