//===- RefragImporter.h - REFRAG bundles to loom IR -------------------------===//
//
// A REFRAG bundle (REFRAG, arXiv 2509.01092) is a llama2.c decoder with its
// tokenizer, plus a safetensors file holding the chunk encoder (a small
// bidirectional pre-LN transformer read at its CLS position), the projector
// into the decoder's embedding width, and the expansion policy head, as
// F32, BF16 or F16 tensors (decoded exactly when the artifact is written);
// the file's __metadata__ states their configuration. The importer builds the
// decoder's @forward and three more functions: @encode_chunk (token ids of
// one chunk, with CLS prepended, to one embedding row), @project_chunk and
// @score_chunk (embedding rows to decoder rows / policy scores).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_REFRAG_REFRAGIMPORTER_H
#define LOOM_FRONTENDS_REFRAG_REFRAGIMPORTER_H

#include "frontends/llama2c/Llama2cImporter.h"

namespace loom::refrag {

struct EncoderConfig {
  int64_t vocabSize = 0, dim = 0, nLayers = 0, nHeads = 0, headDim = 0,
          ffnDim = 0, maxChunkLen = 0, posRows = 0, clsId = 0,
          projectorHidden = 0, decoderDim = 0;
  float eps = 1e-5f;
};

struct Bundle {
  llama2c::Checkpoint decoder;
  EncoderConfig encoder;
  std::string bundlePath;
};

/// Reads the decoder checkpoint and the bundle, checking the bundle's
/// metadata against its tensors and against the decoder (vocabulary and
/// embedding width). Errors are one line naming the file and the problem.
std::optional<Bundle> readBundle(const std::string &decoderPath,
                                 const std::string &bundlePath,
                                 std::string &error);

/// The decoder's graph (as llama2c::importCheckpoint) plus @encode_chunk,
/// @project_chunk and @score_chunk. The weights table gains the bundle's
/// tensors.
mlir::OwningOpRef<mlir::ModuleOp> importBundle(mlir::MLIRContext &ctx,
                                               Bundle &bundle,
                                               int64_t maxTokens);

} // namespace loom::refrag

#endif // LOOM_FRONTENDS_REFRAG_REFRAGIMPORTER_H
