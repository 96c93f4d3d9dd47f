//===- SafetensorsReader.h - strict reader for .safetensors files
//----------===//
//
// A .safetensors file (https://github.com/huggingface/safetensors) is
//
//   u64 N (little-endian) | N bytes of UTF-8 JSON | data buffer
//
// The JSON header is an object mapping each tensor name to
// {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (offsets
// relative to the data buffer, which starts at byte 8 + N), plus an optional
// "__metadata__" object of string -> string.
//
// SafetensorsFile::open maps the file and validates the whole header before
// returning: every tensor's dtype, shape and offsets, that its byte size is
// product(shape) * sizeof(dtype), that it lies inside the data buffer and
// that no two tensors overlap, and that no JSON object repeats a key. Gaps
// between tensors and bytes after the last tensor are accepted (the format
// asks writers for neither; torch's writer leaves none). Every failure is
// one line, "<path>: <problem>", naming the tensor when there is one (names
// from the file are escaped, see printable()).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_SAFETENSORS_SAFETENSORSREADER_H
#define LOOM_FRONTENDS_SAFETENSORS_SAFETENSORSREADER_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace loom::safetensors {

/// The element types of the safetensors format that take whole bytes.
/// (The sub-byte F4 / F6_* types are rejected as unsupported.)
enum class DType : uint8_t {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64,
  I64,
  U64,
  F64,
};

/// The name the format uses ("F32", "BF16", ...).
llvm::StringRef dtypeName(DType dtype);
/// The inverse of dtypeName; std::nullopt for any other string.
std::optional<DType> parseDType(llvm::StringRef name);
/// Bytes per element.
unsigned dtypeSize(DType dtype);

struct SafetensorsTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape; // [] is a scalar (one element)
  uint64_t fileOffset;        // absolute offset of the first byte in the file
  uint64_t bytes;             // == product(shape) * dtypeSize(dtype)

  /// product(shape); cannot overflow for a tensor that passed open().
  uint64_t numElements() const;
};

/// "[4, 5]"
std::string formatShape(llvm::ArrayRef<int64_t> shape);

/// `text` with backslash escapes for quotes, backslashes and unprintable
/// bytes, so that names from a file keep error messages on one line.
std::string printable(llvm::StringRef text);

/// Checks a tensor's dtype and shape. On mismatch the error reads
/// "tensor 'x' has dtype BF16 and shape [4, 5]; expected F32 [4, 5]".
llvm::Error expect(const SafetensorsTensor &tensor, DType dtype,
                   llvm::ArrayRef<int64_t> shape);
/// The same with a choice of dtypes: "...; expected F32, BF16 or F16
/// [4, 5]".
llvm::Error expect(const SafetensorsTensor &tensor,
                   llvm::ArrayRef<DType> dtypes, llvm::ArrayRef<int64_t> shape);

/// The dtypes the frontends read as weights: F32, and BF16 and F16 (decoded
/// exactly when the artifact is written; WeightSource::encoding).
inline constexpr DType kWeightDTypes[] = {DType::F32, DType::BF16, DType::F16};

class SafetensorsFile {
public:
  /// The largest header accepted (the limit of the reference reader).
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  /// Maps `path` (read-only) and validates it. Errors read
  /// "<path>: <problem>".
  static llvm::Expected<SafetensorsFile> open(llvm::StringRef path);

  /// Validates an in-memory file; `name` stands for the path in errors.
  static llvm::Expected<SafetensorsFile>
  fromBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer, llvm::StringRef name);

  SafetensorsFile(SafetensorsFile &&) = default;
  SafetensorsFile &operator=(SafetensorsFile &&) = default;

  /// nullptr when there is no tensor of that name.
  const SafetensorsTensor *find(llvm::StringRef name) const;
  /// All tensors, in the order of their data (by fileOffset, then name).
  llvm::ArrayRef<SafetensorsTensor> tensors() const { return tensors_; }
  /// The "__metadata__" entries (empty when the header has none).
  const llvm::StringMap<std::string> &metadata() const { return metadata_; }

  llvm::StringRef path() const { return path_; }
  uint64_t fileSize() const { return buffer_->getBufferSize(); }
  /// Length of the JSON header (the u64 at the start of the file).
  uint64_t headerSize() const { return headerSize_; }
  /// Absolute offset of the data buffer (8 + headerSize()).
  uint64_t dataOffset() const { return 8 + headerSize_; }

  /// The tensor's bytes, inside the mapping this object keeps alive. The
  /// start is only as aligned as fileOffset (not necessarily to the dtype).
  llvm::ArrayRef<uint8_t> data(const SafetensorsTensor &tensor) const;

private:
  SafetensorsFile() = default;

  std::string path_;
  std::unique_ptr<llvm::MemoryBuffer> buffer_;
  uint64_t headerSize_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  llvm::StringMap<size_t> index_; // name -> position in tensors_
  llvm::StringMap<std::string> metadata_;
};

} // namespace loom::safetensors

#endif // LOOM_FRONTENDS_SAFETENSORS_SAFETENSORSREADER_H
