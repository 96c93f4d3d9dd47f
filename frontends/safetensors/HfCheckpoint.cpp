//===- HfCheckpoint.cpp - Hugging Face checkpoint folders -----------------===//
#include "frontends/safetensors/HfCheckpoint.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>

using namespace loom;
using namespace loom::hf;
using llvm::StringRef;
namespace st = loom::safetensors;

std::optional<llvm::json::Value>
hf::readJson(const std::string &path, StringRef what, std::string &error) {
  auto file = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!file) {
    error = ("cannot open " + what + " '" + path +
             "': " + file.getError().message())
                .str();
    return std::nullopt;
  }
  llvm::Expected<llvm::json::Value> json =
      llvm::json::parse((*file)->getBuffer());
  if (!json) {
    error = (what + " '" + path +
             "' is not valid JSON: " + llvm::toString(json.takeError()))
                .str();
    return std::nullopt;
  }
  return std::move(*json);
}

bool ConfigReader::fail(const std::string &what) {
  error_ = "config '" + path_ + "': " + what;
  return false;
}

bool ConfigReader::integer(StringRef key, int64_t &out,
                           std::optional<int64_t> dflt) {
  const llvm::json::Value *v = o_.get(key);
  if (!v) {
    if (!dflt)
      return fail("missing integer '" + key.str() + "'");
    out = *dflt;
    return true;
  }
  std::optional<int64_t> i = v->getAsInteger();
  if (!i || *i <= 0)
    return fail("'" + key.str() + "' must be a positive integer");
  out = *i;
  return true;
}

bool ConfigReader::number(StringRef key, float &out, float dflt) {
  const llvm::json::Value *v = o_.get(key);
  if (!v) {
    out = dflt;
    return true;
  }
  std::optional<double> x = v->getAsNumber();
  if (!x || !(*x > 0) || !std::isfinite(*x))
    return fail("'" + key.str() + "' must be a positive number");
  out = static_cast<float>(*x);
  return true;
}

bool ConfigReader::boolean(StringRef key, bool &out, bool dflt) {
  const llvm::json::Value *v = o_.get(key);
  if (!v) {
    out = dflt;
    return true;
  }
  std::optional<bool> b = v->getAsBoolean();
  if (!b)
    return fail("'" + key.str() + "' must be true or false");
  out = *b;
  return true;
}

bool ConfigReader::expectString(StringRef key, StringRef want) {
  const llvm::json::Value *v = o_.get(key);
  if (!v)
    return true;
  std::optional<StringRef> str = v->getAsString();
  if (!str || *str != want)
    return fail("'" + key.str() + "' is not \"" + want.str() +
                "\": only that variant is supported");
  return true;
}

bool CheckpointWeights::open(StringRef folder, std::string &error) {
  llvm::SmallString<256> single(folder), index(folder);
  llvm::sys::path::append(single, "model.safetensors");
  llvm::sys::path::append(index, "model.safetensors.index.json");
  if (llvm::sys::fs::exists(single) || !llvm::sys::fs::exists(index)) {
    path_ = std::string(single);
    return openFile(path_, error);
  }
  path_ = std::string(index);
  std::optional<llvm::json::Value> json = readJson(path_, "index", error);
  if (!json)
    return false;
  const llvm::json::Object *map =
      json->getAsObject() ? json->getAsObject()->getObject("weight_map")
                          : nullptr;
  if (!map || map->empty()) {
    error = path_ + ": no \"weight_map\" object, or an empty one";
    return false;
  }
  llvm::StringMap<size_t> shardIndex; // shard file name -> files_ index
  // The shards in a fixed order (the map's is unspecified).
  std::vector<std::string> names;
  for (const auto &entry : *map) {
    std::optional<StringRef> shard = entry.second.getAsString();
    if (!shard || shard->empty() || shard->contains('/') ||
        shard->contains('\\')) {
      error = path_ + ": tensor '" + st::printable(entry.first) +
              "' maps to something other than a shard file name";
      return false;
    }
    names.push_back(shard->str());
  }
  llvm::sort(names);
  names.erase(std::unique(names.begin(), names.end()), names.end());
  for (const std::string &name : names) {
    llvm::SmallString<256> p(folder);
    llvm::sys::path::append(p, name);
    if (!openFile(std::string(p), error))
      return false;
    shardIndex[name] = files_.size() - 1;
  }
  for (const auto &entry : *map) {
    const size_t f = shardIndex[*entry.second.getAsString()];
    if (!files_[f].find(entry.first)) {
      error = path_ + ": tensor '" + st::printable(entry.first) +
              "' is not in " + files_[f].path().str() +
              ", where the index maps it";
      return false;
    }
    fileOf_[entry.first] = f;
  }
  for (size_t f = 0; f < files_.size(); ++f)
    for (const st::SafetensorsTensor &t : files_[f].tensors()) {
      auto it = fileOf_.find(t.name);
      if (it == fileOf_.end() || it->second != f) {
        error = files_[f].path().str() + ": tensor '" + st::printable(t.name) +
                "' is not mapped to this shard by " + path_;
        return false;
      }
    }
  return true;
}

bool CheckpointWeights::openFile(const std::string &p, std::string &error) {
  llvm::Expected<st::SafetensorsFile> file = st::SafetensorsFile::open(p);
  if (!file) {
    error = llvm::toString(file.takeError());
    return false;
  }
  files_.push_back(std::move(*file));
  return true;
}

std::optional<Located> CheckpointWeights::find(StringRef name) const {
  if (fileOf_.empty()) {
    const st::SafetensorsTensor *t = files_[0].find(name);
    return t ? std::optional<Located>(Located{&files_[0], t}) : std::nullopt;
  }
  auto it = fileOf_.find(name);
  if (it == fileOf_.end())
    return std::nullopt;
  return Located{&files_[it->second], files_[it->second].find(name)};
}

std::string CheckpointWeights::unexpectedTensor(const llvm::StringSet<> &used,
                                                StringRef what) const {
  for (const st::SafetensorsFile &f : files_)
    for (const st::SafetensorsTensor &t : f.tensors())
      if (!used.contains(t.name))
        return f.path().str() + ": unexpected tensor '" +
               st::printable(t.name) + "' (not part of a " + what.str() +
               " checkpoint)";
  return "";
}
