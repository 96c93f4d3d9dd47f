// ggml's quantized block formats (llama.cpp's GGUF tensors): their sizes,
// and a decoder of one block to f32. Shared by the compiler, which decodes
// GGUF tensors when it writes an artifact, and the runtime, which decodes
// the block formats an artifact may store (Q8_0, Q4_0, Q2_K..Q6_K) where a
// kernel needs f32 values. It includes nothing but loom/artifact_format.h
// and the C++ standard library.
//
// A block holds kValues consecutive values of a row (rows are whole blocks)
// in kBytes bytes; its scales are IEEE halves. decodeBlock computes every
// value in f32 with ggml's order of operations (dequantize_row_*: one
// rounding per product and per sum, never a fused multiply-add), so it
// equals ggml's decoding bit for bit where ggml's own build does not fuse
// them (x86-64 builds without FMA, such as llama.cpp's portable CPU
// backend's reference functions; a build that lets the C compiler contract
// d * q - m into an FMA differs in the last bit); the kernels that decode
// in registers do the same. Layouts (offsets in bytes; "6-bit scales" are
// ggml's 12-byte packing of eight 6-bit scales and eight 6-bit mins):
//
//   Q4_0  32 values, 18 bytes: d, qs[16]              d * (q - 8)
//   Q4_1  32 values, 20 bytes: d, m, qs[16]           d * q + m
//   Q5_0  32 values, 22 bytes: d, qh[4], qs[16]       d * (q - 16)
//   Q5_1  32 values, 24 bytes: d, m, qh[4], qs[16]    d * q + m
//   Q8_0  32 values, 34 bytes: d, int8 q[32]          d * q
//   Q2_K 256 values, 84 bytes: scales[16] (4-bit scale | 4-bit min << 4),
//        qs[64] (2 bits), d, dmin                     (d*s) * q - (dmin*m)
//   Q3_K 256 values, 110 bytes: hmask[32], qs[64] (2 low bits), 6-bit
//        signed scales[12], d                          (d*(s-32)) * (q-4|q)
//   Q4_K 256 values, 144 bytes: d, dmin, 6-bit scales[12], qs[128]
//                                                      (d*s) * q - (dmin*m)
//   Q5_K 256 values, 176 bytes: d, dmin, 6-bit scales[12], qh[32], qs[128]
//   Q6_K 256 values, 210 bytes: ql[128], qh[64], int8 scales[16], d
//                                                      (d*s) * (q - 32)
//
// Values 0..15 of a 32-value group are the low nibbles of its 16 bytes,
// values 16..31 the high ones (Q4_0, Q4_1, Q5_*); the K formats interleave
// as their decoders below spell out.
#ifndef LOOM_GGML_BLOCKS_H
#define LOOM_GGML_BLOCKS_H

#include "loom/artifact_format.h"

#include <cstdint>
#include <cstring>

namespace loom::ggml {

enum class BlockType {
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K
};

struct BlockFormat {
  int64_t values; // per block
  int64_t bytes;  // per block
};

constexpr int64_t kSuperBlock = 256; // values per block of the K formats

constexpr BlockFormat blockFormat(BlockType t) {
  switch (t) {
  case BlockType::Q4_0:
    return {32, 18};
  case BlockType::Q4_1:
    return {32, 20};
  case BlockType::Q5_0:
    return {32, 22};
  case BlockType::Q5_1:
    return {32, 24};
  case BlockType::Q8_0:
    return {32, 34};
  case BlockType::Q2_K:
    return {kSuperBlock, 84};
  case BlockType::Q3_K:
    return {kSuperBlock, 110};
  case BlockType::Q4_K:
    return {kSuperBlock, 144};
  case BlockType::Q5_K:
    return {kSuperBlock, 176};
  case BlockType::Q6_K:
    return {kSuperBlock, 210};
  }
  return {1, 1};
}

// The IEEE half at b, widened.
inline float halfAt(const uint8_t *b) {
  uint16_t h;
  std::memcpy(&h, b, sizeof h);
  return halfToFloat(h);
}

// Q4_K / Q5_K: scale and min j (0..7) of the 12 packed bytes: j < 4 in the
// low 6 bits of bytes j and j + 4; else the nibbles of byte j + 4 with the
// top 2 bits of bytes j - 4 and j.
inline void scaleMinK4(const uint8_t *s, int j, uint8_t &scale, uint8_t &min) {
  if (j < 4) {
    scale = s[j] & 63;
    min = s[j + 4] & 63;
  } else {
    scale = uint8_t((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
    min = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// Q3_K: scale j (0..15) of the 12 packed bytes, minus 32: the low 4 bits
// are byte j's low (j < 8) or byte j - 8's high nibble, the top 2 bits come
// from byte 8 + j % 4, bits 2 * (j / 4).
inline int q3Scale(const uint8_t *s, int j) {
  const int low = j < 8 ? (s[j] & 0xf) : (s[j - 8] >> 4);
  const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// out[i] = d * q - m for 16 values (two separate roundings, as ggml).
inline void affine16(float d, float m, const int *q, float *out) {
  for (int i = 0; i < 16; ++i) {
    const float p = d * float(q[i]);
    out[i] = p - m;
  }
}

// Decodes one block of `t` at `b` into blockFormat(t).values floats.
inline void decodeBlock(BlockType t, const uint8_t *b, float *out) {
  int q[32];
  switch (t) {
  case BlockType::Q8_0: {
    const float d = halfAt(b);
    for (int i = 0; i < 32; ++i)
      out[i] = d * float(int8_t(b[2 + i]));
    return;
  }
  case BlockType::Q4_0:
  case BlockType::Q4_1:
  case BlockType::Q5_0:
  case BlockType::Q5_1: {
    const bool hasMin = t == BlockType::Q4_1 || t == BlockType::Q5_1;
    const bool five = t == BlockType::Q5_0 || t == BlockType::Q5_1;
    const float d = halfAt(b), m = hasMin ? halfAt(b + 2) : 0.0f;
    const uint8_t *qs = b + 2 + (hasMin ? 2 : 0) + (five ? 4 : 0);
    uint32_t qh = 0;
    if (five)
      std::memcpy(&qh, b + 2 + (hasMin ? 2 : 0), sizeof qh);
    for (int i = 0; i < 32; ++i) {
      q[i] = i < 16 ? (qs[i] & 0xf) : (qs[i - 16] >> 4);
      if (five)
        q[i] |= int((qh >> i) & 1) << 4;
    }
    const int offset = t == BlockType::Q4_0 ? 8 : t == BlockType::Q5_0 ? 16 : 0;
    for (int i = 0; i < 32; ++i) {
      const float p = d * float(q[i] - offset);
      out[i] = hasMin ? p + m : p;
    }
    return;
  }
  case BlockType::Q2_K:
  case BlockType::Q3_K: {
    // 16 groups of 16 values; group g = 8 * half + 2 * j + part takes bits
    // 2j of bytes [32 * half + 16 * part, +16) of qs.
    const bool two = t == BlockType::Q2_K;
    const uint8_t *qs = b + (two ? 16 : 32);
    const float d = halfAt(b + (two ? 80 : 108));
    const float dmin = two ? halfAt(b + 82) : 0.0f;
    for (int g = 0; g < 16; ++g) {
      const int half = g / 8, j = (g % 8) / 2, part = g % 2;
      const uint8_t *src = qs + 32 * half + 16 * part;
      for (int i = 0; i < 16; ++i) {
        q[i] = (src[i] >> (2 * j)) & 3;
        if (!two && !((b[16 * part + i] >> (4 * half + j)) & 1))
          q[i] -= 4; // Q3_K: a clear hmask bit subtracts 4
      }
      if (two) {
        affine16(d * float(b[g] & 0xf), dmin * float(b[g] >> 4), q,
                 out + 16 * g);
      } else {
        const float dl = d * float(q3Scale(b + 96, g));
        for (int i = 0; i < 16; ++i)
          out[16 * g + i] = dl * float(q[i]);
      }
    }
    return;
  }
  case BlockType::Q4_K:
  case BlockType::Q5_K: {
    // 8 groups of 32 values; groups 2p and 2p + 1 are the low and high
    // nibbles of bytes [32p, 32p + 32) of qs; Q5_K's fifth bit of value i
    // of group g is bit g of qh[i].
    const bool five = t == BlockType::Q5_K;
    const float d = halfAt(b), dmin = halfAt(b + 2);
    const uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
    for (int g = 0; g < 8; ++g) {
      uint8_t sc, mn;
      scaleMinK4(b + 4, g, sc, mn);
      const float d1 = d * float(sc), m1 = dmin * float(mn);
      const uint8_t *src = qs + 32 * (g / 2);
      for (int i = 0; i < 32; ++i) {
        q[i] = g % 2 ? src[i] >> 4 : src[i] & 0xf;
        if (five)
          q[i] |= ((qh[i] >> g) & 1) << 4;
      }
      affine16(d1, m1, q, out + 32 * g);
      affine16(d1, m1, q + 16, out + 32 * g + 16);
    }
    return;
  }
  case BlockType::Q6_K: {
    // Two halves of 128 values; run k (0..3) of half h is values
    // [128h + 32k, +32): low 4 bits from the low (k < 2) or high nibbles of
    // ql[64h + 32 * (k % 2) + i], top 2 bits from qh[32h + i] >> 2k; one
    // int8 scale per 16 values, scales[8h + 2k + i / 16].
    const uint8_t *ql = b, *qh = b + 128;
    const auto *scales = reinterpret_cast<const int8_t *>(b + 192);
    const float d = halfAt(b + 208);
    for (int h = 0; h < 2; ++h)
      for (int k = 0; k < 4; ++k)
        for (int i = 0; i < 32; ++i) {
          const uint8_t l = ql[64 * h + 32 * (k % 2) + i];
          const int low = k < 2 ? l & 0xf : l >> 4;
          const int high = (qh[32 * h + i] >> (2 * k)) & 3;
          const float dl = d * float(scales[8 * h + 2 * k + i / 16]);
          out[128 * h + 32 * k + i] = dl * float((low | (high << 4)) - 32);
        }
    return;
  }
  }
}

} // namespace loom::ggml

#endif // LOOM_GGML_BLOCKS_H
