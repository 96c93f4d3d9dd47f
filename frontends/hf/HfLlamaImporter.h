//===- HfLlamaImporter.h - Hugging Face Llama checkpoints -------*- C++ -*-===//
//
// Reads a Hugging Face LlamaForCausalLM checkpoint folder: config.json
// (model_type "llama"), model.safetensors or its shards (F32, BF16 or F16),
// and tokenizer.json (a SentencePiece-style BPE, as Llama 1/2, TinyLlama
// and llama2.c's exports have). The tensors are mapped onto the Llama graph of
// the llama2.c frontend (llama2c::importCheckpoint); q_proj and k_proj are
// stored in rotate-half order and are put back into the interleaved order
// Loom's rope pairs when the artifact is written (WeightSource). See
// docs/frontends.md.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_HF_HFLLAMAIMPORTER_H
#define LOOM_FRONTENDS_HF_HFLLAMAIMPORTER_H

#include "frontends/llama2c/Llama2cImporter.h"

#include <optional>
#include <string>
#include <vector>

namespace loom::hf {

/// The "model_type" of PATH/config.json (PATH a folder) or of PATH (a
/// .json), for loomc's choice of frontend. Errors are one line.
std::optional<std::string> readModelType(const std::string &path,
                                         std::string &error);

/// Reads and checks the config and every tensor (name, dtype, shape; no
/// tensor left over). `path` is the folder or its config.json.
std::optional<llama2c::Checkpoint> readLlamaCheckpoint(const std::string &path,
                                                       std::string &error);

/// Converts tokenizer.json into Loom's tokenizer. Two forms:
///  - BPE with byte fallback and the SentencePiece "▁" normalizer or
///    Metaspace pre-tokenizer (Llama 1/2): pieces with "▁" as spaces, and
///    scores that make Loom's highest-score merge pick what the merge ranks
///    pick (minus the rank of a piece's first rule; pieces no rule makes
///    never merge); config.json's BOS and EOS must be 1 and 2;
///  - byte-level BPE with GPT-2's or Llama 3's pre-tokenizer: pieces as
///    bytes, the merge rules by rank, special tokens as control ids, BOS
///    first where the post-processor puts it (config.json's `bosId`).
/// `warnings` receives lines about rules the conversion cannot express.
/// Checks the vocabulary against `vocabSize`.
std::optional<TokenizerData>
readTokenizerJson(const std::string &path, int64_t vocabSize, int64_t bosId,
                  int64_t eosId, std::vector<std::string> &warnings,
                  std::string &error);

/// The chat template of the folder `folder`, into `data`: its
/// chat_template.jinja, or else tokenizer_config.json's "chat_template" (a
/// string, or a list of named templates of which "default" is taken), with
/// tokenizer_config.json's "bos_token" and "eos_token" texts. No template:
/// nothing changes. Malformed files are errors; a template list without
/// "default" a warning.
bool readChatTemplate(const std::string &folder, TokenizerData &data,
                      std::vector<std::string> &warnings, std::string &error);

} // namespace loom::hf

#endif // LOOM_FRONTENDS_HF_HFLLAMAIMPORTER_H
