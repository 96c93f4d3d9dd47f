//===- GgufFile.cpp - strict reader for GGUF files ------------------------===//
#include "frontends/gguf/GgufFile.h"
#include "frontends/safetensors/SafetensorsReader.h"
#include "loom/ggml_blocks.h"

#include "llvm/ADT/STLExtras.h"

#include <algorithm>
#include <cstring>
#include <limits>

using namespace loom;
using namespace loom::gguf;
using llvm::StringRef;

bool Value::isInteger() const {
  switch (type) {
  case Type::U8:
  case Type::I8:
  case Type::U16:
  case Type::I16:
  case Type::U32:
  case Type::I32:
  case Type::U64:
  case Type::I64:
  case Type::Bool:
    return true;
  default:
    return false;
  }
}

std::optional<int64_t> Value::asInteger() const {
  if (!isInteger() || type == Type::Bool)
    return std::nullopt;
  return integer;
}

std::optional<double> Value::asNumber() const {
  if (type == Type::F32 || type == Type::F64)
    return number;
  if (std::optional<int64_t> i = asInteger())
    return double(*i);
  return std::nullopt;
}

StringRef gguf::typeName(Value::Type type) {
  static const char *names[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                "i32", "f32", "bool", "string", "array",
                                "u64", "i64", "f64"};
  unsigned t = unsigned(type);
  return t < std::size(names) ? names[t] : "unknown";
}

namespace {
/// ggml's type names by id (the message that refuses a type names it).
StringRef ggmlTypeName(uint32_t t) {
  static const char *names[] = {
      "F32",   "F16",   "Q4_0",    "Q4_1",   "Q4_2",    "Q4_3",  "Q5_0",
      "Q5_1",  "Q8_0",  "Q8_1",    "Q2_K",   "Q3_K",    "Q4_K",  "Q5_K",
      "Q6_K",  "Q8_K",  "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
      "IQ3_S", "IQ2_S", "IQ4_XS",  "I8",     "I16",     "I32",   "I64",
      "F64",   "IQ1_M", "BF16"};
  return t < std::size(names) ? names[t] : "unknown";
}

} // namespace

StringRef gguf::tensorTypeName(TensorType type) {
  return ggmlTypeName(uint32_t(type));
}

std::optional<ggml::BlockType> gguf::blockTypeOf(TensorType type) {
  switch (type) {
  case TensorType::Q4_0:
    return ggml::BlockType::Q4_0;
  case TensorType::Q4_1:
    return ggml::BlockType::Q4_1;
  case TensorType::Q5_0:
    return ggml::BlockType::Q5_0;
  case TensorType::Q5_1:
    return ggml::BlockType::Q5_1;
  case TensorType::Q8_0:
    return ggml::BlockType::Q8_0;
  case TensorType::Q2_K:
    return ggml::BlockType::Q2_K;
  case TensorType::Q3_K:
    return ggml::BlockType::Q3_K;
  case TensorType::Q4_K:
    return ggml::BlockType::Q4_K;
  case TensorType::Q5_K:
    return ggml::BlockType::Q5_K;
  case TensorType::Q6_K:
    return ggml::BlockType::Q6_K;
  default:
    return std::nullopt;
  }
}

uint64_t Tensor::numElements() const {
  uint64_t n = 1;
  for (uint64_t d : ne)
    n *= d;
  return n;
}

std::vector<int64_t> Tensor::shape() const {
  return std::vector<int64_t>(ne.rbegin(), ne.rend());
}

namespace {
/// Bytes per block and values per block of the types Loom reads.
std::optional<std::pair<uint64_t, uint64_t>> blockOf(uint32_t type) {
  switch (TensorType(type)) {
  case TensorType::F32:
    return std::make_pair(uint64_t(4), uint64_t(1));
  case TensorType::F16:
  case TensorType::BF16:
    return std::make_pair(uint64_t(2), uint64_t(1));
  default:
    break;
  }
  if (std::optional<ggml::BlockType> block = blockTypeOf(TensorType(type))) {
    const ggml::BlockFormat f = ggml::blockFormat(*block);
    return std::make_pair(uint64_t(f.bytes), uint64_t(f.values));
  }
  return std::nullopt;
}

/// A bounds-checked little-endian cursor over the file.
class Cursor {
public:
  Cursor(StringRef data, std::string &error) : data_(data), error_(error) {}

  uint64_t at() const { return at_; }
  uint64_t left() const { return data_.size() - at_; }
  /// Array elements read so far, against a budget for the whole file.
  uint64_t elements = 0;
  bool failed() const { return failed_; }

  template <typename T> bool read(T &out, const char *what) {
    if (data_.size() - at_ < sizeof(T))
      return truncated(what);
    std::memcpy(&out, data_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }

  bool string(std::string &out, const char *what) {
    uint64_t n;
    if (!read(n, what))
      return false;
    if (n > data_.size() - at_)
      return fail(std::string(what) + " of " + std::to_string(n) +
                  " bytes runs past the end of the file");
    out.assign(data_.data() + at_, n);
    at_ += n;
    return true;
  }

  bool truncated(const char *what) {
    return fail(std::string("truncated: the file ends inside ") + what);
  }
  bool fail(const std::string &message) {
    if (!failed_)
      error_ = message;
    failed_ = true;
    return false;
  }

private:
  StringRef data_;
  uint64_t at_ = 0;
  bool failed_ = false;
  std::string &error_;
};

bool readValue(Cursor &c, Value::Type type, Value &v, int depth) {
  v.type = type;
  switch (type) {
  case Value::Type::U8: {
    uint8_t x;
    return c.read(x, "a u8 value") && (v.integer = x, true);
  }
  case Value::Type::I8: {
    int8_t x;
    return c.read(x, "an i8 value") && (v.integer = x, true);
  }
  case Value::Type::U16: {
    uint16_t x;
    return c.read(x, "a u16 value") && (v.integer = x, true);
  }
  case Value::Type::I16: {
    int16_t x;
    return c.read(x, "an i16 value") && (v.integer = x, true);
  }
  case Value::Type::U32: {
    uint32_t x;
    return c.read(x, "a u32 value") && (v.integer = x, true);
  }
  case Value::Type::I32: {
    int32_t x;
    return c.read(x, "an i32 value") && (v.integer = x, true);
  }
  case Value::Type::U64: {
    uint64_t x;
    if (!c.read(x, "a u64 value"))
      return false;
    if (x > uint64_t(std::numeric_limits<int64_t>::max()))
      return c.fail("a u64 value " + std::to_string(x) +
                    " is larger than Loom reads");
    v.integer = int64_t(x);
    return true;
  }
  case Value::Type::I64:
    return c.read(v.integer, "an i64 value");
  case Value::Type::Bool: {
    uint8_t x;
    if (!c.read(x, "a bool value"))
      return false;
    if (x > 1)
      return c.fail("a bool value is " + std::to_string(x) + ", not 0 or 1");
    v.integer = x;
    return true;
  }
  case Value::Type::F32: {
    float x;
    return c.read(x, "an f32 value") && (v.number = x, true);
  }
  case Value::Type::F64:
    return c.read(v.number, "an f64 value");
  case Value::Type::String:
    return c.string(v.string, "a string value");
  case Value::Type::Array: {
    uint32_t elem;
    uint64_t n;
    if (!c.read(elem, "an array's type") || !c.read(n, "an array's length"))
      return false;
    if (elem > uint32_t(Value::Type::F64))
      return c.fail("an array has the unknown element type " +
                    std::to_string(elem));
    if (Value::Type(elem) == Value::Type::Array && depth >= 1)
      return c.fail("arrays are nested more than 2 deep");
    // Each element takes at least a byte (a string 8, an array 12) of what
    // is left, and becomes a Value: both bound a forged count before any
    // allocation, and a budget bounds the file's elements together.
    constexpr uint64_t kMaxElements = uint64_t(1) << 23;
    const Value::Type et = Value::Type(elem);
    const uint64_t least = et == Value::Type::String  ? 8
                           : et == Value::Type::Array ? 12
                                                      : 1;
    if (n > c.left() / least)
      return c.fail("an array of " + std::to_string(n) +
                    " elements runs past the end of the file");
    if (n > kMaxElements - c.elements)
      return c.fail("the file's arrays hold more than the " +
                    std::to_string(kMaxElements) + " elements Loom reads");
    c.elements += n;
    v.elementType = Value::Type(elem);
    v.array.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
      v.array.emplace_back();
      if (!readValue(c, v.elementType, v.array.back(), depth + 1))
        return false;
    }
    return true;
  }
  }
  return c.fail("unknown value type " + std::to_string(uint32_t(type)));
}
} // namespace

const Value *GgufFile::find(StringRef key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const Tensor *GgufFile::tensor(StringRef name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

llvm::Expected<GgufFile> GgufFile::open(StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return llvm::createStringError(buffer.getError(), "cannot open '%s': %s",
                                   path.str().c_str(),
                                   buffer.getError().message().c_str());
  return fromBuffer(std::move(*buffer), path);
}

llvm::Expected<GgufFile>
GgufFile::fromBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer,
                     StringRef name) {
  GgufFile f;
  f.path_ = name.str();
  f.buffer_ = std::move(buffer);
  std::string error;
  auto fail = [&](const std::string &what) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "%s: %s",
                                   f.path_.c_str(), what.c_str());
  };
  StringRef data = f.buffer_->getBuffer();
  Cursor c(data, error);
  uint32_t magic;
  uint64_t nTensors, nKeys;
  if (!c.read(magic, "the magic number"))
    return fail(error);
  if (magic != 0x46554747) // "GGUF"
    return fail("not a GGUF file (no \"GGUF\" magic)");
  if (!c.read(f.version_, "the version") || !c.read(nTensors, "the header") ||
      !c.read(nKeys, "the header"))
    return fail(error);
  if (f.version_ != 2 && f.version_ != 3)
    return fail("GGUF version " + std::to_string(f.version_) +
                " is not supported (2 and 3 are)");
  // A key takes at least 12 bytes and a tensor info at least 28.
  if (nKeys > data.size() / 12 || nTensors > data.size() / 28)
    return fail("the header's counts (" + std::to_string(nTensors) +
                " tensors, " + std::to_string(nKeys) +
                " keys) do not fit the file");
  for (uint64_t k = 0; k < nKeys; ++k) {
    std::string key;
    uint32_t type;
    Value v;
    if (!c.string(key, "a metadata key") || !c.read(type, "a value type"))
      return fail(error);
    if (type > uint32_t(Value::Type::F64))
      return fail("key '" + safetensors::printable(key) +
                  "' has the unknown value type " + std::to_string(type));
    if (!readValue(c, Value::Type(type), v, 0))
      return fail("key '" + safetensors::printable(key) + "': " + error);
    if (!f.metadata_.try_emplace(key, std::move(v)).second)
      return fail("key '" + safetensors::printable(key) + "' appears twice");
  }
  uint64_t alignment = 32;
  if (const Value *a = f.find("general.alignment")) {
    std::optional<int64_t> n = a->asInteger();
    if (!n || *n <= 0 || (*n & (*n - 1)) || *n > (1 << 20))
      return fail("general.alignment must be a power of two up to 1 MiB");
    alignment = uint64_t(*n);
  }
  for (uint64_t t = 0; t < nTensors; ++t) {
    Tensor info;
    uint32_t dims, type;
    uint64_t offset;
    if (!c.string(info.name, "a tensor name") ||
        !c.read(dims, "a tensor's dimension count"))
      return fail(error);
    const std::string shown =
        "tensor '" + safetensors::printable(info.name) + "'";
    if (dims < 1 || dims > 4)
      return fail(shown + " has " + std::to_string(dims) +
                  " dimensions (1 to 4 are valid)");
    uint64_t elems = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      uint64_t ne;
      if (!c.read(ne, "a tensor's dimensions"))
        return fail(error);
      if (ne == 0 || ne > (uint64_t(1) << 40) / elems)
        return fail(shown + " has a dimension of " + std::to_string(ne));
      elems *= ne;
      info.ne.push_back(ne);
    }
    if (!c.read(type, "a tensor's type") ||
        !c.read(offset, "a tensor's offset"))
      return fail(error);
    std::optional<std::pair<uint64_t, uint64_t>> block = blockOf(type);
    if (!block)
      return fail(
          shown + " has type " + ggmlTypeName(type).str() +
          ", which Loom does not read (F32, F16, BF16, Q4_0, Q4_1, Q5_0, "
          "Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)");
    if (info.ne[0] % block->second)
      return fail(shown + " has rows of " + std::to_string(info.ne[0]) +
                  " values, not a whole number of " +
                  tensorTypeName(TensorType(type)).str() + " blocks of " +
                  std::to_string(block->second));
    if (offset % alignment)
      return fail(shown + " starts at offset " + std::to_string(offset) +
                  ", not a multiple of the alignment " +
                  std::to_string(alignment));
    info.type = TensorType(type);
    info.bytes = elems / block->second * block->first;
    info.fileOffset = offset; // relative until the data start is known
    if (!f.index_.try_emplace(info.name, f.tensors_.size()).second)
      return fail(shown + " appears twice");
    f.tensors_.push_back(std::move(info));
  }
  const uint64_t dataStart = (c.at() + alignment - 1) / alignment * alignment;
  if (dataStart > data.size() && nTensors)
    return fail("truncated: the file ends before the tensor data");
  std::vector<const Tensor *> byOffset;
  for (Tensor &t : f.tensors_) {
    if (t.fileOffset > data.size() - dataStart ||
        t.bytes > data.size() - dataStart - t.fileOffset)
      return fail("tensor '" + safetensors::printable(t.name) + "' (" +
                  std::to_string(t.bytes) + " bytes at data offset " +
                  std::to_string(t.fileOffset) +
                  ") runs past the end of the file");
    t.fileOffset += dataStart;
    byOffset.push_back(&t);
  }
  llvm::sort(byOffset, [](const Tensor *a, const Tensor *b) {
    return a->fileOffset < b->fileOffset;
  });
  for (size_t i = 1; i < byOffset.size(); ++i)
    if (byOffset[i - 1]->fileOffset + byOffset[i - 1]->bytes >
        byOffset[i]->fileOffset)
      return fail("tensors '" + safetensors::printable(byOffset[i - 1]->name) +
                  "' and '" + safetensors::printable(byOffset[i]->name) +
                  "' overlap");
  return std::move(f);
}
