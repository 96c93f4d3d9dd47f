//===- ArtifactWriter.h - loom.program to a .loom artifact ------------------===//
//
// Serialises a module in dispatch form (loom.weight symbols + one
// loom.program @forward) into the artifact format of
// runtime/schema/loom_artifact.fbs: file header, flatbuffer, and the weights
// section, packing each weight the program uses (packed weights are the
// concatenation of their parts) 64-byte aligned with a checksum.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_PASSES_SERIALIZE_ARTIFACTWRITER_H
#define LOOM_PASSES_SERIALIZE_ARTIFACTWRITER_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringMap.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace loom {

/// Where a source weight's bytes are: `bytes` bytes at `offset` of `file`.
struct WeightSource {
  std::string file;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};
using WeightTable = llvm::StringMap<WeightSource>;

/// The tokenizer's vocabulary, stored in the artifact.
struct TokenizerData {
  uint32_t maxTokenLength = 0;
  std::vector<std::string> pieces;
  std::vector<float> scores;
};

/// Called while packing: (tensors done, tensors total, bytes done).
using ProgressFn = std::function<void(size_t, size_t, uint64_t)>;

/// Writes the artifact to `outPath` atomically (a temporary file renamed at
/// the end, removed on failure). Reports errors as diagnostics on the module.
/// `tokenizer` may be null (a model used with token ids only).
mlir::LogicalResult writeArtifact(mlir::ModuleOp module,
                                  const WeightTable &weights,
                                  const TokenizerData *tokenizer,
                                  const std::string &outPath,
                                  const ProgressFn &progress);

} // namespace loom

#endif // LOOM_PASSES_SERIALIZE_ARTIFACTWRITER_H
