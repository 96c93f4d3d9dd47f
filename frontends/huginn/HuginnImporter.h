//===- HuginnImporter.h - Huginn / raven checkpoints to loom IR -------------===//
//
// Reads a recurrent-depth "Huginn" (RavenForCausalLM) checkpoint: the HF
// `config.json` and `model.safetensors` (or its shards and
// `model.safetensors.index.json`) with the reference tensor names, F32 or
// BF16 (../shared/notes/huginn.md). Builds a graph with a prelude, one
// loom.loop over the core block, and a coda; the weights stay in the
// safetensors file and are referenced by name (Wqkv, qk_bias and mlp.fc are
// split into their q/k/v, bias and gate/up parts as byte ranges of the same
// tensors).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_HUGINN_HUGINNIMPORTER_H
#define LOOM_FRONTENDS_HUGINN_HUGINNIMPORTER_H

#include "passes/Serialize/ArtifactWriter.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <optional>
#include <string>

namespace loom::huginn {

struct Config {
  int64_t dim = 0, nHeads = 0, nKvHeads = 0, vocabSize = 0, maxSeq = 0;
  int64_t prelude = 0, core = 0, coda = 0, intermediate = 0;
  int64_t meanRecurrence = 32;
  float ropeBase = 50000.0f, normEps = 1e-6f;
  bool qkBias = true, tieEmbeddings = true;
  int64_t headDim() const { return dim / nHeads; }
  /// Parameters as the reference counts them (lm_head tied: not counted).
  int64_t parameterCount() const;
};

struct Checkpoint {
  // weightsPath: model.safetensors, or the index of the shards; empty:
  // shapes only.
  std::string configPath, weightsPath;
  Config config;
  WeightTable weights;
};

/// Reads `path`: a folder with config.json and model.safetensors (or the
/// shards of model.safetensors.index.json), or a config.json (then the
/// weights are its siblings unless `shapesOnly`, which needs no weights at
/// all). Validates the config and every tensor's name, dtype (F32, BF16 or
/// F16) and shape, and a sharded checkpoint's index; errors are one line.
std::optional<Checkpoint> readCheckpoint(const std::string &path,
                                         bool shapesOnly, std::string &error);

/// Builds the graph: loom.weight symbols, a loom.model config, and
/// func.func @forward(tokens, positions, iterations: i32) -> logits.
mlir::OwningOpRef<mlir::ModuleOp> importCheckpoint(mlir::MLIRContext &ctx,
                                                   const Checkpoint &ckpt,
                                                   int64_t maxTokens);

} // namespace loom::huginn

#endif // LOOM_FRONTENDS_HUGINN_HUGINNIMPORTER_H
