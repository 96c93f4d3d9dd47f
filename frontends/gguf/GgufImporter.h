//===- GgufImporter.h - GGUF Llama models to loom IR ------------*- C++ -*-===//
//
// Reads a llama.cpp GGUF file of architecture "llama" with a SentencePiece
// ("llama") vocabulary: the hyperparameters and the tokenizer from its
// metadata, the tensors mapped onto the Llama graph of the llama2.c frontend
// (llama2c::importCheckpoint). F32, F16, BF16 tensors and ggml's quantized
// blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K to Q6_K) are decoded exactly,
// as ggml decodes them, when the artifact is written (SourceEncoding), or
// kept where the runtime reads the format (--weight-type=keep). GGUF rotates
// interleaved pairs as Loom does, so q and k are used as stored. See
// docs/frontends.md.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_GGUF_GGUFIMPORTER_H
#define LOOM_FRONTENDS_GGUF_GGUFIMPORTER_H

#include "frontends/llama2c/Llama2cImporter.h"

#include <optional>
#include <string>

namespace loom::gguf {

/// True when the file at `path` starts with the GGUF magic.
bool looksLikeGguf(const std::string &path);

struct Model {
  llama2c::Checkpoint checkpoint;
  TokenizerData tokenizer;
};

/// Reads and checks the whole file: metadata, tokenizer, every tensor's
/// name, type and shape, no tensor left over. Errors are one line.
std::optional<Model> readLlama(const std::string &path, std::string &error);

} // namespace loom::gguf

#endif // LOOM_FRONTENDS_GGUF_GGUFIMPORTER_H
