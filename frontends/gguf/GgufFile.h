//===- GgufFile.h - strict reader for GGUF files ----------------*- C++ -*-===//
//
// GGUF (llama.cpp's model file, versions 2 and 3; little-endian) is
//
//   "GGUF" | u32 version | u64 tensor count | u64 metadata count
//   metadata: { string key | u32 value type | value }*
//   tensor infos: { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type
//                   | u64 offset }*
//   padding to general.alignment (default 32) | tensor data
//
// with strings as u64 length + UTF-8 bytes and ne[0] the innermost (row)
// dimension. GgufFile::open maps the file and validates all of it before
// returning: every length and count against the bytes left, value types,
// no repeated key or tensor name, 1 to 4 dimensions of at least 1, each
// tensor's type one Loom reads (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K to Q6_K; rows a whole number of blocks), offsets aligned, data
// inside the file and no two tensors overlapping. Errors are one line, "<path>:
// <problem>".
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_GGUF_GGUFFILE_H
#define LOOM_FRONTENDS_GGUF_GGUFFILE_H

#include "loom/ggml_blocks.h"
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

namespace loom::gguf {

/// A metadata value.
struct Value {
  enum class Type : uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
  };
  Type type = Type::U8;
  int64_t integer = 0; // the integer and bool types (U64 above INT64_MAX
                       // is refused when read)
  double number = 0;   // F32, F64
  std::string string;
  Type elementType = Type::U8; // Array
  std::vector<Value> array;

  bool isInteger() const;
  /// The value as an integer (any integer type), else nullopt.
  std::optional<int64_t> asInteger() const;
  /// The value as a number (integer or float types), else nullopt.
  std::optional<double> asNumber() const;
};

/// "u32", "string", "array", ...
llvm::StringRef typeName(Value::Type type);

/// The ggml tensor types Loom reads (ggml's ids).
enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};
llvm::StringRef tensorTypeName(TensorType type);
/// The ggml block format of a quantized type; nullopt for F32, F16, BF16
/// (and ids Loom does not read).
std::optional<ggml::BlockType> blockTypeOf(TensorType type);

struct Tensor {
  std::string name;
  TensorType type;
  std::vector<uint64_t> ne; // ne[0] = row length
  uint64_t fileOffset;      // absolute
  uint64_t bytes;
  uint64_t numElements() const;
  /// The row-major shape Loom (and PyTorch) write: ne reversed.
  std::vector<int64_t> shape() const;
};

class GgufFile {
public:
  static llvm::Expected<GgufFile> open(llvm::StringRef path);
  static llvm::Expected<GgufFile>
  fromBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer, llvm::StringRef name);

  GgufFile(GgufFile &&) = default;
  GgufFile &operator=(GgufFile &&) = default;

  uint32_t version() const { return version_; }
  /// nullptr when absent.
  const Value *find(llvm::StringRef key) const;
  const Tensor *tensor(llvm::StringRef name) const;
  llvm::ArrayRef<Tensor> tensors() const { return tensors_; }
  llvm::StringRef path() const { return path_; }

private:
  GgufFile() = default;

  std::string path_;
  std::unique_ptr<llvm::MemoryBuffer> buffer_;
  uint32_t version_ = 0;
  llvm::StringMap<Value> metadata_;
  std::vector<Tensor> tensors_;
  llvm::StringMap<size_t> index_;
};

} // namespace loom::gguf

#endif // LOOM_FRONTENDS_GGUF_GGUFFILE_H
