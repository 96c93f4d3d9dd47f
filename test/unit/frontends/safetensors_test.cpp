// Tests for frontends/safetensors: well-formed files read back exactly, the
// shared golden checkpoints parse, and every malformed file is refused with a
// one-line error naming the problem.

#include "frontends/safetensors/SafetensorsReader.h"

#include "llvm/Support/Error.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

using namespace loom::safetensors;
namespace fs = std::filesystem;

namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i)
    s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

/// u64 header length + header + data.
std::string makeFile(const std::string &header, const std::string &data) {
  return le64(header.size()) + header + data;
}

/// `n` bytes 0, 1, 2, ... (mod 256).
std::string ramp(size_t n, unsigned start = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>((start + i) & 0xff);
  return s;
}

/// Each test writes its files into its own temporary folder.
class SafetensorsTest : public ::testing::Test {
protected:
  void SetUp() override {
    const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string leaf = std::string("loom-safetensors-") +
                       std::to_string(::getpid()) + "-" +
                       info->test_suite_name() + "-" + info->name();
    for (char &c : leaf)
      if (c == '/')
        c = '_';
    dir = fs::temp_directory_path() / leaf;
    fs::create_directories(dir);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  std::string write(const std::string &bytes,
                    const std::string &name = "model.safetensors") {
    fs::path p = dir / name;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    EXPECT_TRUE(out.good()) << "cannot write " << p;
    return p.string();
  }

  /// Opens `bytes` written to a file; fails the test on error.
  SafetensorsFile openOk(const std::string &bytes) {
    std::string path = write(bytes);
    llvm::Expected<SafetensorsFile> f = SafetensorsFile::open(path);
    if (!f) {
      ADD_FAILURE() << llvm::toString(f.takeError());
      throw std::runtime_error("open failed");
    }
    return std::move(*f);
  }

  /// Opens `bytes` written to a file and returns the error message ("" when
  /// it opened). Checks the message is one line that starts with the path.
  std::string openError(const std::string &bytes) {
    std::string path = write(bytes);
    llvm::Expected<SafetensorsFile> f = SafetensorsFile::open(path);
    if (f)
      return "";
    std::string msg = llvm::toString(f.takeError());
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    return msg;
  }

  fs::path dir;
};

#define EXPECT_ERROR_CONTAINS(bytes, substr)                                   \
  do {                                                                         \
    std::string msg_ = openError(bytes);                                       \
    EXPECT_NE(msg_, "") << "expected an error containing: " << (substr);       \
    EXPECT_NE(msg_.find(substr), std::string::npos)                            \
        << "message: " << msg_ << "\nexpected to contain: " << (substr);       \
  } while (0)

// A valid file: three tensors, a scalar, an empty tensor, metadata. The
// header lists them out of data order.
const char *kValidHeader =
    R"({"__metadata__":{"format":"pt","note":"hi"},)"
    R"("b.bias":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},)"
    R"("a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
    R"("empty":{"dtype":"F16","shape":[0,5],"data_offsets":[32,32]},)"
    R"("step":{"dtype":"I64","shape":[],"data_offsets":[32,40]}})";

std::string validFile() { return makeFile(kValidHeader, ramp(40)); }

//===----------------------------------------------------------------------===//
// Well-formed files
//===----------------------------------------------------------------------===//

TEST_F(SafetensorsTest, ValidFileReadsBack) {
  std::string bytes = validFile();
  SafetensorsFile f = openOk(bytes);
  uint64_t base = 8 + std::strlen(kValidHeader);

  EXPECT_EQ(f.fileSize(), bytes.size());
  EXPECT_EQ(f.headerSize(), std::strlen(kValidHeader));
  EXPECT_EQ(f.dataOffset(), base);
  EXPECT_EQ(f.path().str(), (dir / "model.safetensors").string());

  // Data order: a.weight [0,24], b.bias [24,32], then the empty tensor and
  // the scalar, both at 32 (the empty one first).
  auto ts = f.tensors();
  ASSERT_EQ(ts.size(), 4u);
  EXPECT_EQ(ts[0].name, "a.weight");
  EXPECT_EQ(ts[1].name, "b.bias");
  EXPECT_EQ(ts[2].name, "empty");
  EXPECT_EQ(ts[3].name, "step");

  const SafetensorsTensor *a = f.find("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->fileOffset, base);
  EXPECT_EQ(a->bytes, 24u);
  EXPECT_EQ(a->numElements(), 6u);

  const SafetensorsTensor *b = f.find("b.bias");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::BF16);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(b->fileOffset, base + 24);
  EXPECT_EQ(b->bytes, 8u);

  const SafetensorsTensor *e = f.find("empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dtype, DType::F16);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(e->bytes, 0u);
  EXPECT_EQ(e->numElements(), 0u);
  EXPECT_TRUE(f.data(*e).empty());

  const SafetensorsTensor *s = f.find("step");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->dtype, DType::I64);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numElements(), 1u);
  EXPECT_EQ(s->fileOffset, base + 32);
  EXPECT_EQ(s->bytes, 8u);

  // The bytes are the file's bytes at those offsets.
  llvm::ArrayRef<uint8_t> ad = f.data(*a);
  ASSERT_EQ(ad.size(), 24u);
  for (size_t i = 0; i < ad.size(); ++i)
    EXPECT_EQ(ad[i], i) << i;
  llvm::ArrayRef<uint8_t> sd = f.data(*s);
  ASSERT_EQ(sd.size(), 8u);
  EXPECT_EQ(sd[0], 32);
  EXPECT_EQ(sd[7], 39);
  EXPECT_EQ(static_cast<const void *>(sd.data()),
            static_cast<const void *>(ad.data() + 32));

  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_EQ(f.find("__metadata__"), nullptr);

  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata().lookup("format"), "pt");
  EXPECT_EQ(f.metadata().lookup("note"), "hi");
}

TEST_F(SafetensorsTest, MovedFileKeepsItsData) {
  SafetensorsFile f = openOk(validFile());
  const uint8_t *p = f.data(*f.find("b.bias")).data();
  SafetensorsFile g = std::move(f);
  const SafetensorsTensor *b = g.find("b.bias");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(g.data(*b).data(), p);
  EXPECT_EQ(g.data(*b)[0], 24);
}

TEST_F(SafetensorsTest, EmptyHeaderAndNoMetadata) {
  SafetensorsFile f = openOk(makeFile("{}", ""));
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());

  SafetensorsFile g = openOk(makeFile(
      R"({"x":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})", "abc"));
  ASSERT_EQ(g.tensors().size(), 1u);
  EXPECT_TRUE(g.metadata().empty());
  EXPECT_EQ(g.data(g.tensors()[0])[2], 'c');
}

TEST_F(SafetensorsTest, HeaderPaddedWithSpaces) {
  // Writers pad the header with spaces to align the data buffer.
  std::string header =
      R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while ((8 + header.size()) % 64)
    header += ' ';
  SafetensorsFile f = openOk(makeFile(header, ramp(8)));
  EXPECT_EQ(f.dataOffset(), 64u);
  EXPECT_EQ(f.find("x")->fileOffset, 64u);
}

TEST_F(SafetensorsTest, GapsAndTrailingBytesAccepted) {
  SafetensorsFile f = openOk(
      makeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}})",
               ramp(32)));
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.data(*f.find("a"))[0], 4);
  EXPECT_EQ(f.data(*f.find("b"))[0], 16);
}

TEST_F(SafetensorsTest, ZeroSizedTensorsMayShareOffsets) {
  // A huge dim times 0 is 0 bytes, not an overflow; empty tensors anywhere
  // in (or at the end of) the buffer do not overlap anything.
  SafetensorsFile f = openOk(makeFile(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("z1":{"dtype":"F32","shape":[4611686018427387904,8,0],"data_offsets":[4,4]},)"
      R"("z2":{"dtype":"F64","shape":[0],"data_offsets":[8,8]},)"
      R"("z3":{"dtype":"I8","shape":[0],"data_offsets":[8,8]}})",
      ramp(8)));
  EXPECT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.find("z1")->bytes, 0u);
}

TEST_F(SafetensorsTest, LargeIntegersParse) {
  SafetensorsFile f = openOk(makeFile(
      R"({"x":{"dtype":"U64","shape":[1,1,1,1,1,1,1,2],"data_offsets":[0,16]}})",
      ramp(16)));
  EXPECT_EQ(f.find("x")->shape.size(), 8u);
  EXPECT_EQ(f.find("x")->bytes, 16u);
}

TEST_F(SafetensorsTest, FromBufferUsesTheGivenName) {
  auto ok = SafetensorsFile::fromBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(validFile()), "mem.safetensors");
  ASSERT_TRUE(static_cast<bool>(ok)) << llvm::toString(ok.takeError());
  EXPECT_EQ(ok->tensors().size(), 4u);
  EXPECT_EQ(ok->path(), "mem.safetensors");

  auto bad = SafetensorsFile::fromBuffer(
      llvm::MemoryBuffer::getMemBufferCopy("abc"), "mem.safetensors");
  ASSERT_FALSE(static_cast<bool>(bad));
  EXPECT_EQ(llvm::toString(bad.takeError()),
            "mem.safetensors: file is 3 bytes, shorter than the 8-byte "
            "header length");
}

TEST(SafetensorsDType, NamesAndSizes) {
  struct Case {
    const char *name;
    DType dtype;
    unsigned size;
  } cases[] = {
      {"BOOL", DType::BOOL, 1},       {"U8", DType::U8, 1},
      {"I8", DType::I8, 1},           {"F8_E5M2", DType::F8_E5M2, 1},
      {"F8_E4M3", DType::F8_E4M3, 1}, {"F8_E8M0", DType::F8_E8M0, 1},
      {"I16", DType::I16, 2},         {"U16", DType::U16, 2},
      {"F16", DType::F16, 2},         {"BF16", DType::BF16, 2},
      {"I32", DType::I32, 4},         {"U32", DType::U32, 4},
      {"F32", DType::F32, 4},         {"C64", DType::C64, 8},
      {"I64", DType::I64, 8},         {"U64", DType::U64, 8},
      {"F64", DType::F64, 8},
  };
  for (const Case &c : cases) {
    std::optional<DType> d = parseDType(c.name);
    ASSERT_TRUE(d.has_value()) << c.name;
    EXPECT_EQ(*d, c.dtype) << c.name;
    EXPECT_EQ(dtypeName(c.dtype), c.name);
    EXPECT_EQ(dtypeSize(c.dtype), c.size) << c.name;
  }
  EXPECT_FALSE(parseDType("f32").has_value());
  EXPECT_FALSE(parseDType("F4").has_value());
  EXPECT_FALSE(parseDType("").has_value());
}

TEST(SafetensorsExpect, MatchesAndMismatches) {
  SafetensorsTensor t{"x", DType::BF16, {4, 5}, 100, 40};
  EXPECT_FALSE(static_cast<bool>(expect(t, DType::BF16, {4, 5})));
  EXPECT_EQ(llvm::toString(expect(t, DType::F32, {4, 5})),
            "tensor 'x' has dtype BF16 and shape [4, 5]; expected F32 [4, 5]");
  EXPECT_EQ(llvm::toString(expect(t, DType::BF16, {5, 4})),
            "tensor 'x' has dtype BF16 and shape [4, 5]; expected BF16 [5, 4]");
  SafetensorsTensor s{"s", DType::F32, {}, 0, 4};
  EXPECT_FALSE(static_cast<bool>(expect(s, DType::F32, {})));
  EXPECT_EQ(llvm::toString(expect(s, DType::F32, {1})),
            "tensor 's' has dtype F32 and shape []; expected F32 [1]");
  EXPECT_EQ(formatShape({}), "[]");
  EXPECT_EQ(formatShape({7}), "[7]");
  // A choice of dtypes (the frontends' weights: F32, BF16 or F16).
  EXPECT_FALSE(static_cast<bool>(expect(t, kWeightDTypes, {4, 5})));
  EXPECT_FALSE(static_cast<bool>(expect(s, kWeightDTypes, {})));
  SafetensorsTensor h{"h", DType::F64, {2}, 0, 16};
  EXPECT_EQ(llvm::toString(expect(h, kWeightDTypes, {2})),
            "tensor 'h' has dtype F64 and shape [2]; expected F32, BF16 or F16 "
            "[2]");
  EXPECT_EQ(llvm::toString(expect(t, kWeightDTypes, {5, 4})),
            "tensor 'x' has dtype BF16 and shape [4, 5]; expected F32, BF16 or "
            "F16 [5, 4]");
  EXPECT_EQ(llvm::toString(expect(t, {DType::F32, DType::BF16}, {5, 4})),
            "tensor 'x' has dtype BF16 and shape [4, 5]; expected F32 or BF16 "
            "[5, 4]");
}

//===----------------------------------------------------------------------===//
// The shared golden checkpoints
//===----------------------------------------------------------------------===//

/// Every tensor inside the file, in order, not overlapping; returns the sum
/// of their sizes.
uint64_t checkLayout(const SafetensorsFile &f) {
  uint64_t total = 0, end = f.dataOffset();
  for (const SafetensorsTensor &t : f.tensors()) {
    EXPECT_GE(t.fileOffset, end) << t.name;
    EXPECT_LE(t.fileOffset + t.bytes, f.fileSize()) << t.name;
    EXPECT_EQ(t.bytes, t.numElements() * dtypeSize(t.dtype)) << t.name;
    EXPECT_EQ(f.data(t).size(), t.bytes) << t.name;
    EXPECT_EQ(f.find(t.name), &t) << t.name;
    end = t.fileOffset + t.bytes;
    total += t.bytes;
  }
  return total;
}

TEST(SafetensorsGolden, HuginnTiny) {
  std::string path =
      std::string(LOOM_SHARED_DIR) + "/golden/huginn-tiny/model.safetensors";
  if (!fs::exists(path))
    GTEST_SKIP() << "needs ../shared/golden/huginn-tiny/model.safetensors";
  llvm::Expected<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_TRUE(static_cast<bool>(f)) << llvm::toString(f.takeError());
  EXPECT_EQ(f->tensors().size(), 76u);
  EXPECT_EQ(f->metadata().lookup("format"), "pt");
  // Torch's writer indexes the whole buffer, with no gaps.
  EXPECT_EQ(checkLayout(*f), f->fileSize() - f->dataOffset());

  const SafetensorsTensor *freqs = f->find("freqs_cis");
  ASSERT_NE(freqs, nullptr);
  EXPECT_FALSE(
      static_cast<bool>(expect(*freqs, DType::F32, {1, 128, 1, 8, 2})));
  EXPECT_EQ(freqs->fileOffset, f->dataOffset());
  const SafetensorsTensor *adapter = f->find("transformer.adapter.weight");
  ASSERT_NE(adapter, nullptr);
  EXPECT_FALSE(static_cast<bool>(expect(*adapter, DType::F32, {64, 128})));
  EXPECT_EQ(adapter->fileOffset, f->dataOffset() + 8192);
  for (const SafetensorsTensor &t : f->tensors())
    EXPECT_EQ(t.dtype, DType::F32) << t.name;
}

TEST(SafetensorsGolden, RefragTiny) {
  std::string path = std::string(LOOM_SHARED_DIR) +
                     "/golden/refrag-tiny/refrag_tiny.safetensors";
  if (!fs::exists(path))
    GTEST_SKIP()
        << "needs ../shared/golden/refrag-tiny/refrag_tiny.safetensors";
  llvm::Expected<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_TRUE(static_cast<bool>(f)) << llvm::toString(f.takeError());
  EXPECT_EQ(f->tensors().size(), 42u);
  EXPECT_EQ(f->metadata().lookup("format"), "loom-refrag-tiny");
  EXPECT_EQ(f->metadata().lookup("version"), "1");
  EXPECT_EQ(f->metadata().lookup("encoder.d_model"), "32");
  EXPECT_EQ(checkLayout(*f), f->fileSize() - f->dataOffset());
  const SafetensorsTensor *kb = f->find("encoder.layers.0.attn.k.bias");
  ASSERT_NE(kb, nullptr);
  EXPECT_FALSE(static_cast<bool>(expect(*kb, DType::F32, {32})));
  const SafetensorsTensor *kw = f->find("encoder.layers.0.attn.k.weight");
  ASSERT_NE(kw, nullptr);
  EXPECT_FALSE(static_cast<bool>(expect(*kw, DType::F32, {32, 32})));
  EXPECT_EQ(kw->fileOffset, f->dataOffset() + 128);
}

//===----------------------------------------------------------------------===//
// Malformed files
//===----------------------------------------------------------------------===//

TEST_F(SafetensorsTest, MissingFile) {
  std::string path = (dir / "nope.safetensors").string();
  llvm::Expected<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_FALSE(static_cast<bool>(f));
  std::string msg = llvm::toString(f.takeError());
  EXPECT_EQ(msg.rfind(path + ": cannot open: ", 0), 0u) << msg;
}

TEST_F(SafetensorsTest, Truncated) {
  std::string bytes = validFile();
  size_t headerEnd = 8 + std::strlen(kValidHeader);
  struct Cut {
    size_t at;
    std::string want;
  } cuts[] = {
      {0, "file is 0 bytes, shorter than the 8-byte header length"},
      {4, "file is 4 bytes, shorter than the 8-byte header length"},
      {7, "file is 7 bytes, shorter than the 8-byte header length"},
      {8, "runs past the end of the file (8 bytes)"},
      {8 + 20, "runs past the end of the file (28 bytes)"},
      {headerEnd - 1, "runs past the end of the file"},
      // Header intact, data gone or cut inside a tensor.
      {headerEnd, "end past the 0 data bytes"},
      {headerEnd + 30, "end past the 30 data bytes"},
      {headerEnd + 39, "data_offsets [32, 40] end past the 39 data bytes"},
  };
  for (const Cut &c : cuts) {
    SCOPED_TRACE("cut at " + std::to_string(c.at));
    EXPECT_ERROR_CONTAINS(bytes.substr(0, c.at), c.want);
  }
  // Cut exactly after the last tensor: fine.
  EXPECT_EQ(openError(bytes.substr(0, headerEnd + 40)), "");
}

TEST_F(SafetensorsTest, HeaderLength) {
  EXPECT_ERROR_CONTAINS(le64(0) + "{}", "header length is 0");
  EXPECT_ERROR_CONTAINS(le64(100'000'001) + "{}",
                        "header length 100000001 exceeds the "
                        "100000000-byte limit");
  EXPECT_ERROR_CONTAINS(le64(~uint64_t(0)) + "{}",
                        "header length 18446744073709551615 exceeds");
  EXPECT_ERROR_CONTAINS(le64(3) + "{}",
                        "header length 3 runs past the end of the file "
                        "(10 bytes)");
  // At the limit but past the end: the end-of-file check.
  EXPECT_ERROR_CONTAINS(le64(100'000'000) + "{}",
                        "header length 100000000 runs past the end");
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  EXPECT_ERROR_CONTAINS(makeFile(R"({"a": )", ""),
                        "header is not valid JSON: [1:");
  EXPECT_ERROR_CONTAINS(makeFile("{} junk", ""), "header is not valid JSON");
  EXPECT_ERROR_CONTAINS(makeFile("{'a': 1}", ""), "header is not valid JSON");
  EXPECT_ERROR_CONTAINS(makeFile(std::string("{\"\xff\": 1}"), ""),
                        "header is not valid JSON");
  EXPECT_ERROR_CONTAINS(makeFile(std::string("{}\0\0", 4), ""),
                        "header is not valid JSON");
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  EXPECT_ERROR_CONTAINS(makeFile("[1, 2]", ""), "header is not a JSON object");
  EXPECT_ERROR_CONTAINS(makeFile("\"x\"", ""), "header is not a JSON object");
  EXPECT_ERROR_CONTAINS(makeFile("null", ""), "header is not a JSON object");
}

TEST_F(SafetensorsTest, DuplicateKeys) {
  // llvm::json would keep one of the two; the file is refused instead.
  const char *u8 = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  const char *u8b = R"({"dtype":"U8","shape":[1],"data_offsets":[1,2]})";
  EXPECT_ERROR_CONTAINS(
      makeFile(std::string(R"({"x":)") + u8 + R"(,"x":)" + u8b + "}", "ab"),
      "header has duplicate tensor 'x'");
  // The same name spelled with an escape.
  EXPECT_ERROR_CONTAINS(
      makeFile(std::string(R"({"x":)") + u8 + R"(,"x":)" + u8b + "}", "ab"),
      "header has duplicate tensor 'x'");
  EXPECT_ERROR_CONTAINS(
      makeFile(
          R"({"x":{"dtype":"U8","shape":[1],"dtype":"I8","data_offsets":[0,1]}})",
          "a"),
      "tensor 'x' has duplicate key 'dtype'");
  EXPECT_ERROR_CONTAINS(
      makeFile(std::string(R"({"__metadata__":{"k":"a","k":"b"},"x":)") + u8 +
                   "}",
               "a"),
      "__metadata__ has duplicate key 'k'");
  EXPECT_ERROR_CONTAINS(makeFile(std::string(R"({"__metadata__":{},"x":)") +
                                     u8 + R"(,"__metadata__":{}})",
                                 "a"),
                        "header has duplicate key '__metadata__'");
}

TEST_F(SafetensorsTest, NamesWithEscapesAndPunctuation) {
  // Quotes, commas, braces and escapes inside names and metadata do not
  // confuse the duplicate-key scan.
  SafetensorsFile f = openOk(makeFile(
      R"({"__metadata__":{"a,\"{[":"}],\"","b":"\\","w":"dtype"},)"
      R"("w,\"x\"{}[]":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
      R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
      R"("\u00e9":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
      "abc"));
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_NE(f.find("w,\"x\"{}[]"), nullptr);
  EXPECT_NE(f.find("w"), nullptr);
  EXPECT_NE(f.find("\xc3\xa9"), nullptr);
  EXPECT_EQ(f.metadata().lookup("a,\"{["), "}],\"");
  EXPECT_EQ(f.metadata().lookup("b"), "\\");
  EXPECT_EQ(f.metadata().lookup("w"), "dtype");
}

TEST_F(SafetensorsTest, ErrorsStayOnOneLine) {
  // Names and dtypes from the file are escaped in messages.
  EXPECT_ERROR_CONTAINS(
      makeFile(R"({"a\nb":{"dtype":"F\n32","shape":[1],"data_offsets":[0,4]}})",
               "abcd"),
      "tensor 'a\\nb' has unknown dtype \"F\\n32\"");
  EXPECT_ERROR_CONTAINS(makeFile(R"({"__metadata__":{"k\r":3}})", ""),
                        "__metadata__ value 'k\\015' is not a string");
}

struct BadEntry {
  const char *label;
  const char *entry; // the JSON value of tensor "x"
  const char *want;
};

// Names the case in ctest's test names instead of a byte dump.
void PrintTo(const BadEntry &c, std::ostream *os) { *os << c.label; }

class SafetensorsBadEntry : public SafetensorsTest,
                            public ::testing::WithParamInterface<BadEntry> {};

TEST_P(SafetensorsBadEntry, Refused) {
  const BadEntry &c = GetParam();
  std::string header = std::string(R"({"ok":{"dtype":"U8","shape":[4],)"
                                   R"("data_offsets":[64,68]},"x":)") +
                       c.entry + "}";
  EXPECT_ERROR_CONTAINS(makeFile(header, ramp(68)), c.want);
}

const BadEntry kBadEntries[] = {
    {"NotObject", "5", "tensor 'x' is not a JSON object"},
    {"ArrayEntry", "[]", "tensor 'x' is not a JSON object"},
    {"MissingDtype", R"({"shape":[1],"data_offsets":[0,4]})",
     "tensor 'x' has no \"dtype\""},
    {"MissingShape", R"({"dtype":"F32","data_offsets":[0,4]})",
     "tensor 'x' has no \"shape\""},
    {"MissingOffsets", R"({"dtype":"F32","shape":[1]})",
     "tensor 'x' has no \"data_offsets\""},
    {"DtypeNotString", R"({"dtype":4,"shape":[1],"data_offsets":[0,4]})",
     "tensor 'x' \"dtype\" is not a string"},
    {"ShapeNotArray", R"({"dtype":"F32","shape":4,"data_offsets":[0,4]})",
     "tensor 'x' \"shape\" is not an array"},
    {"ShapeIsObject", R"({"dtype":"F32","shape":{},"data_offsets":[0,4]})",
     "tensor 'x' \"shape\" is not an array"},
    {"UnknownDtype", R"({"dtype":"F31","shape":[1],"data_offsets":[0,4]})",
     "tensor 'x' has unknown dtype \"F31\""},
    {"LowercaseDtype", R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})",
     "tensor 'x' has unknown dtype \"f32\""},
    {"SubByteDtype", R"({"dtype":"F4","shape":[2],"data_offsets":[0,1]})",
     "tensor 'x' has unsupported sub-byte dtype \"F4\""},
    {"NegativeDim", R"({"dtype":"F32","shape":[2,-3],"data_offsets":[0,4]})",
     "tensor 'x' dim 1 is negative (-3)"},
    {"FractionalDim", R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,4]})",
     "tensor 'x' dim 0 is not a non-negative integer"},
    {"FloatDim", R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})",
     "tensor 'x' dim 0 is not a non-negative integer"},
    {"StringDim", R"({"dtype":"F32","shape":["1"],"data_offsets":[0,4]})",
     "tensor 'x' dim 0 is not a non-negative integer"},
    {"NullDim", R"({"dtype":"F32","shape":[null],"data_offsets":[0,4]})",
     "tensor 'x' dim 0 is not a non-negative integer"},
    {"HugeDim",
     R"({"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,4]})",
     "tensor 'x' dim 0 (9223372036854775808) does not fit in int64"},
    {"OffsetsNotArray", R"({"dtype":"F32","shape":[1],"data_offsets":4})",
     "tensor 'x' \"data_offsets\" is not an array of two non-negative "
     "integers"},
    {"OneOffset", R"({"dtype":"F32","shape":[1],"data_offsets":[0]})",
     "\"data_offsets\" is not an array of two"},
    {"ThreeOffsets", R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})",
     "\"data_offsets\" is not an array of two"},
    {"NegativeOffset", R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})",
     "\"data_offsets\" is not an array of two non-negative integers"},
    {"StringOffset", R"({"dtype":"F32","shape":[1],"data_offsets":[0,"4"]})",
     "\"data_offsets\" is not an array of two"},
    {"FloatOffset", R"({"dtype":"F32","shape":[1],"data_offsets":[0,4.0]})",
     "\"data_offsets\" is not an array of two"},
    {"OffsetsReversed", R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})",
     "tensor 'x' data_offsets [8, 4] has begin > end"},
    {"EndPastData", R"({"dtype":"F32","shape":[25],"data_offsets":[0,100]})",
     "tensor 'x' data_offsets [0, 100] end past the 68 data bytes"},
    {"BeginAndEndPastData",
     R"({"dtype":"F32","shape":[1],"data_offsets":[68,72]})",
     "tensor 'x' data_offsets [68, 72] end past the 68 data bytes"},
    {"HugeEnd",
     R"({"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]})",
     "end past the 68 data bytes"},
    {"SizeTooBig", R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,20]})",
     "tensor 'x' data_offsets [0, 20] spans 20 bytes; dtype F32 and shape "
     "[2, 2] need 16"},
    {"SizeTooSmall", R"({"dtype":"BF16","shape":[4,5],"data_offsets":[0,20]})",
     "spans 20 bytes; dtype BF16 and shape [4, 5] need 40"},
    {"ScalarSize", R"({"dtype":"F64","shape":[],"data_offsets":[0,4]})",
     "spans 4 bytes; dtype F64 and shape [] need 8"},
    {"EmptyWithBytes", R"({"dtype":"F32","shape":[0],"data_offsets":[0,4]})",
     "spans 4 bytes; dtype F32 and shape [0] need 0"},
    {"ElementsOverflow",
     R"({"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,4]})",
     "tensor 'x' shape [4294967296, 4294967296] of dtype U8 has a byte size "
     "that overflows 64 bits"},
    {"BytesOverflow",
     R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]})",
     "has a byte size that overflows 64 bits"},
    {"OverlapsNext", R"({"dtype":"F32","shape":[2],"data_offsets":[60,68]})",
     "tensors 'x' data_offsets [60, 68] and 'ok' data_offsets [64, 68] "
     "overlap"},
    {"OverlapsPrevious", R"({"dtype":"U8","shape":[2],"data_offsets":[66,68]})",
     "tensors 'ok' data_offsets [64, 68] and 'x' data_offsets [66, 68] "
     "overlap"},
    {"SameRange", R"({"dtype":"I32","shape":[1],"data_offsets":[64,68]})",
     "tensors 'ok' data_offsets [64, 68] and 'x' data_offsets [64, 68] "
     "overlap"},
    {"Contains", R"({"dtype":"U8","shape":[68],"data_offsets":[0,68]})",
     "tensors 'x' data_offsets [0, 68] and 'ok' data_offsets [64, 68] "
     "overlap"},
};

INSTANTIATE_TEST_SUITE_P(All, SafetensorsBadEntry,
                         ::testing::ValuesIn(kBadEntries),
                         [](const ::testing::TestParamInfo<BadEntry> &info) {
                           return std::string(info.param.label);
                         });

TEST_F(SafetensorsTest, OverlapAmongSeveral) {
  // Equal begins sort the shorter tensor first; the first overlapping pair in
  // data order is the one named.
  EXPECT_ERROR_CONTAINS(
      makeFile(R"({"a":{"dtype":"U8","shape":[32],"data_offsets":[0,32]},)"
               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("c":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
               ramp(32)),
      "tensors 'b' data_offsets [0, 4] and 'a' data_offsets [0, 32] overlap");
  EXPECT_ERROR_CONTAINS(
      makeFile(R"({"a":{"dtype":"U8","shape":[32],"data_offsets":[0,32]},)"
               R"("c":{"dtype":"U8","shape":[4],"data_offsets":[8,12]},)"
               R"("d":{"dtype":"U8","shape":[4],"data_offsets":[20,24]}})",
               ramp(32)),
      "tensors 'a' data_offsets [0, 32] and 'c' data_offsets [8, 12] overlap");
}

TEST_F(SafetensorsTest, BadMetadata) {
  const char *t = R"("x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  EXPECT_ERROR_CONTAINS(
      makeFile(std::string(R"({"__metadata__":{"format":"pt","n":1},)") + t +
                   "}",
               "a"),
      "__metadata__ value 'n' is not a string");
  EXPECT_ERROR_CONTAINS(
      makeFile(std::string(R"({"__metadata__":{"k":null},)") + t + "}", "a"),
      "__metadata__ value 'k' is not a string");
  EXPECT_ERROR_CONTAINS(
      makeFile(std::string(R"({"__metadata__":{"k":{"a":"b"}},)") + t + "}",
               "a"),
      "__metadata__ value 'k' is not a string");
  EXPECT_ERROR_CONTAINS(
      makeFile(std::string(R"({"__metadata__":"pt",)") + t + "}", "a"),
      "__metadata__ is not a JSON object");
  EXPECT_ERROR_CONTAINS(
      makeFile(std::string(R"({"__metadata__":["a"],)") + t + "}", "a"),
      "__metadata__ is not a JSON object");
}

TEST_F(SafetensorsTest, ErrorNamesThePathAsGiven) {
  std::string path = write(le64(0), "weights.safetensors");
  llvm::Expected<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_FALSE(static_cast<bool>(f));
  EXPECT_EQ(llvm::toString(f.takeError()), path + ": header length is 0");
}

} // namespace
