//===- SafetensorsReader.cpp - strict reader for .safetensors files
//--------===//

#include "frontends/safetensors/SafetensorsReader.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <limits>

using namespace llvm;

namespace loom::safetensors {

StringRef dtypeName(DType dtype) {
  switch (dtype) {
  case DType::BOOL:
    return "BOOL";
  case DType::U8:
    return "U8";
  case DType::I8:
    return "I8";
  case DType::F8_E5M2:
    return "F8_E5M2";
  case DType::F8_E4M3:
    return "F8_E4M3";
  case DType::F8_E8M0:
    return "F8_E8M0";
  case DType::I16:
    return "I16";
  case DType::U16:
    return "U16";
  case DType::F16:
    return "F16";
  case DType::BF16:
    return "BF16";
  case DType::I32:
    return "I32";
  case DType::U32:
    return "U32";
  case DType::F32:
    return "F32";
  case DType::C64:
    return "C64";
  case DType::I64:
    return "I64";
  case DType::U64:
    return "U64";
  case DType::F64:
    return "F64";
  }
  return "?";
}

std::optional<DType> parseDType(StringRef name) {
  return StringSwitch<std::optional<DType>>(name)
      .Case("BOOL", DType::BOOL)
      .Case("U8", DType::U8)
      .Case("I8", DType::I8)
      .Case("F8_E5M2", DType::F8_E5M2)
      .Case("F8_E4M3", DType::F8_E4M3)
      .Case("F8_E8M0", DType::F8_E8M0)
      .Case("I16", DType::I16)
      .Case("U16", DType::U16)
      .Case("F16", DType::F16)
      .Case("BF16", DType::BF16)
      .Case("I32", DType::I32)
      .Case("U32", DType::U32)
      .Case("F32", DType::F32)
      .Case("C64", DType::C64)
      .Case("I64", DType::I64)
      .Case("U64", DType::U64)
      .Case("F64", DType::F64)
      .Default(std::nullopt);
}

unsigned dtypeSize(DType dtype) {
  switch (dtype) {
  case DType::BOOL:
  case DType::U8:
  case DType::I8:
  case DType::F8_E5M2:
  case DType::F8_E4M3:
  case DType::F8_E8M0:
    return 1;
  case DType::I16:
  case DType::U16:
  case DType::F16:
  case DType::BF16:
    return 2;
  case DType::I32:
  case DType::U32:
  case DType::F32:
    return 4;
  case DType::C64:
  case DType::I64:
  case DType::U64:
  case DType::F64:
    return 8;
  }
  return 0;
}

uint64_t SafetensorsTensor::numElements() const {
  uint64_t n = 1;
  for (int64_t d : shape)
    n *= static_cast<uint64_t>(d);
  return n;
}

std::string formatShape(ArrayRef<int64_t> shape) {
  std::string s;
  raw_string_ostream os(s);
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i)
    os << (i ? ", " : "") << shape[i];
  os << ']';
  return s;
}

std::string printable(StringRef text) {
  std::string s;
  raw_string_ostream os(s);
  os.write_escaped(text);
  return s;
}

Error expect(const SafetensorsTensor &tensor, DType dtype,
             ArrayRef<int64_t> shape) {
  return expect(tensor, ArrayRef<DType>(dtype), shape);
}

Error expect(const SafetensorsTensor &tensor, ArrayRef<DType> dtypes,
             ArrayRef<int64_t> shape) {
  if (llvm::is_contained(dtypes, tensor.dtype) &&
      ArrayRef<int64_t>(tensor.shape) == shape)
    return Error::success();
  std::string allowed;
  for (size_t i = 0; i < dtypes.size(); ++i)
    allowed += (i == 0                   ? ""
                : i + 1 == dtypes.size() ? " or "
                                         : ", ") +
               dtypeName(dtypes[i]).str();
  return createStringError(Twine("tensor '") + printable(tensor.name) +
                           "' has dtype " + dtypeName(tensor.dtype) +
                           " and shape " + formatShape(tensor.shape) +
                           "; expected " + allowed + " " + formatShape(shape));
}

namespace {

/// a * b, or std::nullopt when it does not fit in 64 bits.
std::optional<uint64_t> mulChecked(uint64_t a, uint64_t b) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a)
    return std::nullopt;
  return a * b;
}

/// llvm::json keeps one value when an object repeats a key; the format
/// gives such a header no meaning, so scan the (already valid) JSON text for
/// repeats. Returns the problem, e.g. "header has duplicate tensor 'x'".
std::optional<std::string> findDuplicateKey(StringRef text) {
  struct Frame {
    bool isObject;
    bool expectKey;
    std::string key; // the key this value sits under ("" for the root)
    unsigned depth;
    StringSet<> keys;
  };
  std::vector<Frame> stack;
  std::string lastKey;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '"') {
      size_t j = i + 1;
      bool escaped = false;
      for (; j < text.size() && text[j] != '"'; ++j)
        if (text[j] == '\\') {
          escaped = true;
          ++j;
        }
      StringRef token = text.slice(i, j + 1);
      i = j;
      if (stack.empty() || !stack.back().isObject || !stack.back().expectKey)
        continue;
      Frame &f = stack.back();
      f.expectKey = false;
      std::string key = token.drop_front().drop_back().str();
      if (escaped) { // decode \u0061 and friends before comparing
        if (Expected<json::Value> v = json::parse(token)) {
          if (std::optional<StringRef> str = v->getAsString())
            key = str->str();
        } else {
          consumeError(v.takeError());
        }
      }
      if (!f.keys.insert(key).second) {
        if (f.depth == 1)
          return (key == "__metadata__" ? "header has duplicate key '"
                                        : "header has duplicate tensor '") +
                 printable(key) + "'";
        if (f.depth == 2 && f.key == "__metadata__")
          return "__metadata__ has duplicate key '" + printable(key) + "'";
        if (f.depth == 2)
          return "tensor '" + printable(f.key) + "' has duplicate key '" +
                 printable(key) + "'";
        return "header has duplicate key '" + printable(key) + "'";
      }
      lastKey = key;
      continue;
    }
    switch (c) {
    case '{':
    case '[': {
      std::string under;
      if (!stack.empty())
        under = stack.back().isObject ? lastKey : stack.back().key;
      stack.push_back({c == '{',
                       c == '{',
                       under,
                       static_cast<unsigned>(stack.size() + 1),
                       {}});
      break;
    }
    case '}':
    case ']':
      if (!stack.empty())
        stack.pop_back();
      break;
    case ',':
      if (!stack.empty() && stack.back().isObject)
        stack.back().expectKey = true;
      break;
    default:
      break;
    }
  }
  return std::nullopt;
}

/// Makes "<path>: <problem>" errors.
struct Reader {
  StringRef path;

  Error fail(const Twine &problem) const {
    return createStringError(Twine(path) + ": " + problem);
  }
  Error failTensor(StringRef name, const Twine &problem) const {
    return fail(Twine("tensor '") + printable(name) + "' " + problem);
  }

  Expected<SafetensorsTensor> parseTensor(StringRef name,
                                          const json::Value &value,
                                          uint64_t dataBase,
                                          uint64_t dataBytes) const;
};

Expected<SafetensorsTensor> Reader::parseTensor(StringRef name,
                                                const json::Value &value,
                                                uint64_t dataBase,
                                                uint64_t dataBytes) const {
  const json::Object *entry = value.getAsObject();
  if (!entry)
    return failTensor(name, "is not a JSON object");

  SafetensorsTensor t;
  t.name = name.str();

  // dtype
  const json::Value *dtypeV = entry->get("dtype");
  if (!dtypeV)
    return failTensor(name, "has no \"dtype\"");
  std::optional<StringRef> dtypeS = dtypeV->getAsString();
  if (!dtypeS)
    return failTensor(name, "\"dtype\" is not a string");
  std::optional<DType> dtype = parseDType(*dtypeS);
  if (!dtype) {
    if (*dtypeS == "F4" || dtypeS->starts_with("F6_"))
      return failTensor(name, "has unsupported sub-byte dtype \"" +
                                  printable(*dtypeS) + "\"");
    return failTensor(name, "has unknown dtype \"" + printable(*dtypeS) + "\"");
  }
  t.dtype = *dtype;

  // shape
  const json::Value *shapeV = entry->get("shape");
  if (!shapeV)
    return failTensor(name, "has no \"shape\"");
  const json::Array *shapeA = shapeV->getAsArray();
  if (!shapeA)
    return failTensor(name, "\"shape\" is not an array");
  uint64_t elements = 1;
  bool elementsOverflow = false;
  for (size_t i = 0; i < shapeA->size(); ++i) {
    const json::Value &d = (*shapeA)[i];
    // getAsUINT64 only accepts integer literals (not 4.0 or 1e3).
    std::optional<uint64_t> dim = d.getAsUINT64();
    if (!dim) {
      std::optional<int64_t> asInt = d.getAsInteger();
      if (asInt && *asInt < 0)
        return failTensor(name, "dim " + Twine(i) + " is negative (" +
                                    Twine(*asInt) + ")");
      return failTensor(name,
                        "dim " + Twine(i) + " is not a non-negative integer");
    }
    if (*dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return failTensor(name, "dim " + Twine(i) + " (" + Twine(*dim) +
                                  ") does not fit in int64");
    t.shape.push_back(static_cast<int64_t>(*dim));
    if (std::optional<uint64_t> n = mulChecked(elements, *dim))
      elements = *n;
    else
      elementsOverflow = true;
  }
  if (elements == 0) // a 0 dim, before or after an overflow
    elementsOverflow = false;

  // data_offsets
  const json::Value *offV = entry->get("data_offsets");
  if (!offV)
    return failTensor(name, "has no \"data_offsets\"");
  const json::Array *offA = offV->getAsArray();
  std::optional<uint64_t> begin, end;
  if (offA && offA->size() == 2) {
    begin = (*offA)[0].getAsUINT64();
    end = (*offA)[1].getAsUINT64();
  }
  if (!begin || !end)
    return failTensor(name, "\"data_offsets\" is not an array of two "
                            "non-negative integers");
  std::string offs =
      ("data_offsets [" + Twine(*begin) + ", " + Twine(*end) + "]").str();
  if (*begin > *end)
    return failTensor(name, offs + " has begin > end");
  if (*end > dataBytes)
    return failTensor(name, offs + " end past the " + Twine(dataBytes) +
                                " data bytes");
  t.fileOffset = dataBase + *begin;
  t.bytes = *end - *begin;

  // size == product(shape) * sizeof(dtype)
  std::optional<uint64_t> want = elementsOverflow
                                     ? std::nullopt
                                     : mulChecked(elements, dtypeSize(t.dtype));
  if (!want)
    return failTensor(name, "shape " + formatShape(t.shape) + " of dtype " +
                                dtypeName(t.dtype) +
                                " has a byte size that overflows 64 bits");
  if (*want != t.bytes)
    return failTensor(name, offs + " spans " + Twine(t.bytes) +
                                " bytes; dtype " + dtypeName(t.dtype) +
                                " and shape " + formatShape(t.shape) +
                                " need " + Twine(*want));
  return t;
}

} // namespace

Expected<SafetensorsFile> SafetensorsFile::open(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buf =
      MemoryBuffer::getFile(path, /*IsText=*/false,
                            /*RequiresNullTerminator=*/false);
  if (!buf)
    return createStringError(buf.getError(), Twine(path) + ": cannot open: " +
                                                 buf.getError().message());
  return fromBuffer(std::move(*buf), path);
}

Expected<SafetensorsFile>
SafetensorsFile::fromBuffer(std::unique_ptr<MemoryBuffer> buffer,
                            StringRef name) {
  Reader r{name};
  if (!buffer)
    return r.fail("no buffer");
  StringRef bytes = buffer->getBuffer();
  uint64_t size = bytes.size();
  if (size < 8)
    return r.fail("file is " + Twine(size) +
                  " bytes, shorter than the 8-byte header length");
  uint64_t headerLen = support::endian::read64le(
      reinterpret_cast<const uint8_t *>(bytes.data()));
  if (headerLen == 0)
    return r.fail("header length is 0");
  if (headerLen > kMaxHeaderBytes)
    return r.fail("header length " + Twine(headerLen) + " exceeds the " +
                  Twine(kMaxHeaderBytes) + "-byte limit");
  if (headerLen > size - 8)
    return r.fail("header length " + Twine(headerLen) +
                  " runs past the end of the file (" + Twine(size) + " bytes)");
  uint64_t dataBase = 8 + headerLen;
  uint64_t dataBytes = size - dataBase;

  Expected<json::Value> root = json::parse(bytes.substr(8, headerLen));
  if (!root)
    return r.fail("header is not valid JSON: " + toString(root.takeError()));
  const json::Object *top = root->getAsObject();
  if (!top)
    return r.fail("header is not a JSON object");
  if (std::optional<std::string> dup =
          findDuplicateKey(bytes.substr(8, headerLen)))
    return r.fail(*dup);

  SafetensorsFile file;
  file.path_ = name.str();
  file.headerSize_ = headerLen;

  // json::Object iterates in hash order; visit names sorted so that the
  // first problem reported does not depend on it.
  std::vector<const json::Object::value_type *> entries;
  for (const auto &kv : *top)
    entries.push_back(&kv);
  std::sort(entries.begin(), entries.end(), [](const auto *a, const auto *b) {
    return StringRef(a->first) < StringRef(b->first);
  });

  for (const json::Object::value_type *entry : entries) {
    const auto &kv = *entry;
    StringRef key = kv.first;
    if (key == "__metadata__") {
      const json::Object *meta = kv.second.getAsObject();
      if (!meta)
        return r.fail("__metadata__ is not a JSON object");
      for (const auto &m : *meta) {
        std::optional<StringRef> v = m.second.getAsString();
        if (!v)
          return r.fail("__metadata__ value '" + printable(m.first) +
                        "' is not a string");
        file.metadata_[StringRef(m.first)] = v->str();
      }
      continue;
    }
    Expected<SafetensorsTensor> t =
        r.parseTensor(key, kv.second, dataBase, dataBytes);
    if (!t)
      return t.takeError();
    file.tensors_.push_back(std::move(*t));
  }

  // Data order.
  std::sort(file.tensors_.begin(), file.tensors_.end(),
            [](const SafetensorsTensor &a, const SafetensorsTensor &b) {
              if (a.fileOffset != b.fileOffset)
                return a.fileOffset < b.fileOffset;
              if (a.bytes != b.bytes)
                return a.bytes < b.bytes;
              return a.name < b.name;
            });

  // Overlaps: sorted by begin, a tensor overlaps an earlier one iff it
  // starts before the furthest end so far. Empty tensors hold no bytes.
  const SafetensorsTensor *furthest = nullptr;
  for (const SafetensorsTensor &t : file.tensors_) {
    if (t.bytes == 0)
      continue;
    if (furthest && t.fileOffset < furthest->fileOffset + furthest->bytes) {
      auto range = [&](const SafetensorsTensor &x) {
        return ("[" + Twine(x.fileOffset - dataBase) + ", " +
                Twine(x.fileOffset - dataBase + x.bytes) + "]")
            .str();
      };
      return r.fail("tensors '" + printable(furthest->name) +
                    "' data_offsets " + range(*furthest) + " and '" +
                    printable(t.name) + "' data_offsets " + range(t) +
                    " overlap");
    }
    if (!furthest ||
        t.fileOffset + t.bytes > furthest->fileOffset + furthest->bytes)
      furthest = &t;
  }

  for (size_t i = 0; i < file.tensors_.size(); ++i)
    file.index_[file.tensors_[i].name] = i;
  file.buffer_ = std::move(buffer);
  return file;
}

const SafetensorsTensor *SafetensorsFile::find(StringRef name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

ArrayRef<uint8_t> SafetensorsFile::data(const SafetensorsTensor &tensor) const {
  assert(tensor.fileOffset + tensor.bytes <= fileSize() &&
         "tensor from another file?");
  return ArrayRef<uint8_t>(
      reinterpret_cast<const uint8_t *>(buffer_->getBufferStart()) +
          tensor.fileOffset,
      tensor.bytes);
}

} // namespace loom::safetensors
