// The fixed file header of a Loom artifact and the checksum used for its
// sections. Shared by the compiler's serializer and the runtime's loader; it
// includes nothing but the C++ standard library.
#ifndef LOOM_ARTIFACT_FORMAT_H
#define LOOM_ARTIFACT_FORMAT_H

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace loom {

// Bumped on every incompatible change of the file header or the schema.
constexpr uint32_t kArtifactFormatVersion = 1;
// First 8 bytes of every artifact.
constexpr char kArtifactMagic[8] = {'L', 'O', 'O', 'M', 'A', 'R', 'T', '\0'};
// Weights section and every tensor inside it start on this boundary.
constexpr uint64_t kWeightAlignment = 64;

// Little-endian, 64 bytes, at offset 0.
struct ArtifactFileHeader {
  char magic[8];            // kArtifactMagic
  uint32_t format_version;  // kArtifactFormatVersion
  uint32_t header_size;     // sizeof(ArtifactFileHeader)
  uint64_t file_size;       // total bytes of the file
  uint64_t fb_offset;       // flatbuffer (identifier "LOOM") position
  uint64_t fb_size;
  uint64_t fb_checksum;     // loomChecksum64 of the flatbuffer bytes
  uint64_t weights_offset;  // multiple of kWeightAlignment
  uint64_t weights_size;
};
static_assert(sizeof(ArtifactFileHeader) == 64, "header must be 64 bytes");

// A fast 64-bit checksum (not cryptographic): 8-byte words folded with a
// multiply-rotate mix, tail bytes folded one by one, length mixed in last.
// It detects flipped bits and truncation; it does not defend against forgery.
inline uint64_t loomChecksum64(const void *data, size_t size) {
  const unsigned char *p = static_cast<const unsigned char *>(data);
  const uint64_t k1 = 0x9E3779B185EBCA87ull, k2 = 0xC2B2AE3D27D4EB4Full;
  uint64_t h[4] = {k1, k2, k1 ^ k2, k2 - k1};
  size_t i = 0;
  for (; i + 32 <= size; i += 32) {
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      h[l] ^= w * k2;
      h[l] = ((h[l] << 31) | (h[l] >> 33)) * k1;
    }
  }
  uint64_t r = h[0] ^ (h[1] * 7) ^ (h[2] * 13) ^ (h[3] * 31);
  for (; i < size; ++i) {
    r ^= p[i];
    r *= 0x100000001B3ull;
  }
  r ^= static_cast<uint64_t>(size) * k1;
  r ^= r >> 29;
  r *= k2;
  r ^= r >> 32;
  return r;
}

inline uint64_t alignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Q8_0 weights (the schema's DType.Q8_0, ggml's block format): each row of
// a [N, K] matrix, K a multiple of kQ8Block, is K / kQ8Block blocks of
// kQ8BlockBytes bytes: an IEEE half scale d, then kQ8Block int8 values q.
// Element value d * q, which is exactly an f32 (11 + 8 significant bits).
constexpr int64_t kQ8Block = 32;
constexpr int64_t kQ8BlockBytes = 2 + kQ8Block;

// Q4_0 weights (DType.Q4_0, ggml's): blocks of kQ8Block values along a
// row, kQ4BlockBytes each: an IEEE half scale d, then 16 bytes whose low
// nibbles are values 0..15 and high nibbles values 16..31, each q in 0..15.
// Element value d * (q - 8), exactly an f32 (11 + 4 significant bits).
constexpr int64_t kQ4BlockBytes = 2 + kQ8Block / 2;

// An IEEE half's value, widened exactly (subnormals, infinities and NaNs
// included).
inline float halfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else { // subnormal: normalise
    exp = 113;
    while (!(man & 0x400u)) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Element e of Q8_0 blocks at `blocks` (rows are whole blocks, so a
// matrix's element r * K + k is element r * K + k of its blocks).
inline float q8Value(const uint8_t *blocks, int64_t e) {
  const uint8_t *b = blocks + (e / kQ8Block) * kQ8BlockBytes;
  uint16_t d;
  std::memcpy(&d, b, sizeof d);
  return halfToFloat(d) * float(int8_t(b[2 + e % kQ8Block]));
}

// Element e of Q4_0 blocks at `blocks`, as q8Value.
inline float q4Value(const uint8_t *blocks, int64_t e) {
  const uint8_t *b = blocks + (e / kQ8Block) * kQ4BlockBytes;
  const int64_t j = e % kQ8Block;
  uint16_t d;
  std::memcpy(&d, b, sizeof d);
  const uint8_t byte = b[2 + (j & 15)];
  const int q = j < 16 ? (byte & 0xf) : (byte >> 4);
  return halfToFloat(d) * float(q - 8);
}

} // namespace loom

#endif // LOOM_ARTIFACT_FORMAT_H
