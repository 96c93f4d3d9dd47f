//===- HfCheckpoint.h - Hugging Face checkpoint folders ---------*- C++ -*-===//
//
// What the Hugging Face frontends (Huginn, Llama) share: reading a JSON file
// (config.json, tokenizer.json, the shard index) with one-line errors,
// typed config keys with defaults, and the weights of a checkpoint folder:
// model.safetensors, or the shards that model.safetensors.index.json maps
// each tensor name to (checked both ways).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_SAFETENSORS_HFCHECKPOINT_H
#define LOOM_FRONTENDS_SAFETENSORS_HFCHECKPOINT_H

#include "frontends/safetensors/SafetensorsReader.h"
#include "passes/Serialize/ArtifactWriter.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/JSON.h"

#include <optional>
#include <string>
#include <vector>

namespace loom::hf {

/// Reads and parses the JSON file `path`; `what` names it in errors:
/// "cannot open config '<path>': ...", "config '<path>' is not valid
/// JSON: ...".
std::optional<llvm::json::Value>
readJson(const std::string &path, llvm::StringRef what, std::string &error);

/// Typed reads of a config.json object. Each returns false after setting
/// the error "config '<path>': <what is wrong with the key>".
class ConfigReader {
public:
  ConfigReader(std::string path, const llvm::json::Object &object,
               std::string &error)
      : path_(std::move(path)), o_(object), error_(error) {}

  /// A positive integer; `dflt` when the key is absent (nullopt: required).
  bool integer(llvm::StringRef key, int64_t &out, std::optional<int64_t> dflt);
  /// A positive finite number; `dflt` when absent.
  bool number(llvm::StringRef key, float &out, float dflt);
  bool boolean(llvm::StringRef key, bool &out, bool dflt);
  /// Absent, or the string `want` ("only that variant is supported").
  bool expectString(llvm::StringRef key, llvm::StringRef want);
  /// Sets the error "config '<path>': <what>"; returns false.
  bool fail(const std::string &what);

  const llvm::json::Object &object() const { return o_; }
  const std::string &path() const { return path_; }

private:
  std::string path_;
  const llvm::json::Object &o_;
  std::string &error_;
};

/// How a tensor of one of safetensors::kWeightDTypes encodes its values.
inline SourceEncoding weightEncoding(safetensors::DType dtype) {
  return dtype == safetensors::DType::BF16  ? SourceEncoding::BF16
         : dtype == safetensors::DType::F16 ? SourceEncoding::F16
                                            : SourceEncoding::F32;
}

/// A tensor and the file that holds it.
struct Located {
  const safetensors::SafetensorsFile *file;
  const safetensors::SafetensorsTensor *tensor;
};

/// The tensors of a checkpoint folder.
class CheckpointWeights {
public:
  /// Opens FOLDER/model.safetensors, or, when only the index is there, every
  /// shard FOLDER/model.safetensors.index.json names: each mapped tensor
  /// must be in its shard and each shard tensor mapped to that shard.
  bool open(llvm::StringRef folder, std::string &error);

  std::optional<Located> find(llvm::StringRef name) const;
  /// "" when every tensor of the files is in `used`; else the error
  /// "<file>: unexpected tensor '<name>' (not part of a <what> checkpoint)"
  /// for the first one that is not.
  std::string unexpectedTensor(const llvm::StringSet<> &used,
                               llvm::StringRef what) const;
  /// model.safetensors, or the index (for messages).
  const std::string &path() const { return path_; }
  const std::vector<safetensors::SafetensorsFile> &files() const {
    return files_;
  }

private:
  bool openFile(const std::string &path, std::string &error);

  std::string path_;
  std::vector<safetensors::SafetensorsFile> files_;
  llvm::StringMap<size_t> fileOf_; // sharded: tensor name -> files_ index
};

} // namespace loom::hf

#endif // LOOM_FRONTENDS_SAFETENSORS_HFCHECKPOINT_H
