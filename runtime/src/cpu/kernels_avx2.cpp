// AVX2 leaf kernels (with FMA and F16C): for x86-64 CPUs without AVX-512
// (AMD Zen 1-3, Intel client cores before and after Ice Lake). kernels.cpp
// only calls into this table after detectIsa() has seen AVX2, FMA, F16C and
// the OS's ymm support.
//
// Unlike kernels_avx512.cpp this file is built without ISA flags: the
// headers below are compiled for baseline x86-64, and only the functions
// after `#pragma GCC target` use AVX2. So inline functions of the standard
// library or of ggml_blocks.h that the compiler emits out of line here are
// baseline code, and the linker may keep them for any caller (see
// kernels_impl.h). Every function of this file is in an anonymous namespace.
//
// The GEMM (6 tokens x 16 outputs per micro-tile), the matrix-vector
// products and the attention are written with intrinsics and fused
// multiply-adds; the rest is kernels_generic.inc compiled for AVX2 (the
// project builds with -ffp-contract=off, so the compiler fuses nothing
// there and ropeRow stays bit-identical across ISAs). GCC only: clang
// ignores #pragma GCC target.
#include "cpu/kernels_impl.h"
#include "loom/artifact_format.h"
#include "loom/ggml_blocks.h"

#include <algorithm>
#include <cmath>
#include <immintrin.h>

#if !defined(__GNUC__) || defined(__clang__)
#error "kernels_avx2.cpp selects AVX2 with #pragma GCC target: build with g++"
#endif
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace loom::rt::cpu::detail {
namespace {

// Micro-tile of the prefill GEMM: 6 tokens x 16 outputs is 12 ymm
// accumulators (enough FMA chains to cover two FMA ports' latency), two
// weight vectors and one broadcast token value: 15 of the 16 registers.
constexpr int64_t kMr = 6;
constexpr int64_t kNr = 16;

#include "cpu/kernels_generic.inc"

// One kMr x kNr tile over kc values of k into c. Rows past `rows` repeat the
// last valid row so the loop stays branch-free; their results are not
// stored.
void microTile(const float *x, int64_t ldx, int64_t rows, const float *panel,
               int64_t kc, __m256 c[kMr][2]) {
  const float *xr[kMr];
  for (int64_t i = 0; i < kMr; ++i)
    xr[i] = x + (i < rows ? i : rows - 1) * ldx;
  // Local accumulators (not c itself, which the compiler would store back
  // on every k).
  __m256 acc[kMr][2];
  for (int64_t i = 0; i < kMr; ++i)
    acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(panel + k * kNr);
    const __m256 b1 = _mm256_loadu_ps(panel + k * kNr + 8);
    for (int64_t i = 0; i < kMr; ++i) {
      const __m256 a = _mm256_broadcast_ss(xr[i] + k);
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
  }
  for (int64_t i = 0; i < kMr; ++i) {
    c[i][0] = acc[i][0];
    c[i][1] = acc[i][1];
  }
}

void gemmBlock(const float *x, int64_t ldx, const float *panels, float *y,
               int64_t ldy, int64_t m, int64_t n, int64_t kc, bool accumulate) {
  // Panel-outer, tokens-inner: one panel (kc x 16 floats) stays in L1 while
  // the token rows stream past it.
  for (int64_t j0 = 0; j0 < n; j0 += kNr, panels += kc * kNr) {
    const int64_t cols = std::min(kNr, n - j0);
    for (int64_t t0 = 0; t0 < m; t0 += kMr) {
      const int64_t rows = std::min(kMr, m - t0);
      __m256 c[kMr][2];
      microTile(x + t0 * ldx, ldx, rows, panels, kc, c);
      for (int64_t i = 0; i < rows; ++i) {
        float *yr = y + (t0 + i) * ldy + j0;
        if (cols == kNr) {
          if (accumulate) {
            c[i][0] = _mm256_add_ps(c[i][0], _mm256_loadu_ps(yr));
            c[i][1] = _mm256_add_ps(c[i][1], _mm256_loadu_ps(yr + 8));
          }
          _mm256_storeu_ps(yr, c[i][0]);
          _mm256_storeu_ps(yr + 8, c[i][1]);
        } else {
          alignas(32) float tmp[kNr];
          _mm256_store_ps(tmp, c[i][0]);
          _mm256_store_ps(tmp + 8, c[i][1]);
          for (int64_t j = 0; j < cols; ++j)
            yr[j] = accumulate ? yr[j] + tmp[j] : tmp[j];
        }
      }
    }
  }
}

// ---- Matrix-vector products ----------------------------------------------
//
// Every row is summed the same way, whatever its weights' encoding: over
// chunks of 32 values, lanes 0-7, 8-15, 16-23 and 24-31 into four
// accumulators (fused multiply-adds, k ascending), a last partial chunk
// zero-padded, then the four added as (a0 + a2) + (a1 + a3) and the 8
// lanes summed pairwise in a fixed order. Weights are widened or decoded to
// exact f32 values first, so a product over bf16, f16 or block-encoded
// weights is bit for bit matvec's over the decoded matrix. Four chains, not
// two: one fused multiply-add per accumulator per 32 values keeps a block
// format's decoding, not the adds' latency, the bound (110M Q8_0 decode on
// an AVX2 EPYC: 33 -> 48 tokens/s). One row at a time (interleaving rows
// measured slower here: the compiler kept their accumulators in memory).

float hsum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);                 // 4 pairs
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));        // (0+2), (1+3)
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55)); // (0+2) + (1+3)
  return _mm_cvtss_f32(s);
}

// The four accumulators of a row, summed in the fixed order above.
float sumAccumulators(const __m256 acc[4]) {
  return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[2]),
                            _mm256_add_ps(acc[1], acc[3])));
}

// 16 weights of a row as two f32 vectors.
struct F32Row {
  const float *w;
  void load(int64_t k, __m256 &a, __m256 &b) const {
    a = _mm256_loadu_ps(w + k);
    b = _mm256_loadu_ps(w + k + 8);
  }
  float at(int64_t k) const { return w[k]; }
};
struct Bf16Row {
  const uint16_t *w;
  static __m256 widen8(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  void load(int64_t k, __m256 &a, __m256 &b) const {
    a = widen8(_mm_loadu_si128(reinterpret_cast<const __m128i *>(w + k)));
    b = widen8(_mm_loadu_si128(reinterpret_cast<const __m128i *>(w + k + 8)));
  }
  float at(int64_t k) const { return widen(w[k]); }
};
struct F16Row {
  const uint16_t *w;
  void load(int64_t k, __m256 &a, __m256 &b) const {
    a = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(w + k)));
    b = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(w + k + 8)));
  }
  float at(int64_t k) const { return halfToFloat(w[k]); }
};

// One row of y = W x, Row::at widening one weight for the tail.
template <typename Row>
void matvecRow(const float *x, const Row &row, int64_t K, float *y,
               bool accumulate) {
  __m256 acc[4];
  for (__m256 &a : acc)
    a = _mm256_setzero_ps();
  const int64_t full = K - K % 32;
  for (int64_t k = 0; k < full; k += 32) {
    __m256 w[4];
    row.load(k, w[0], w[1]);
    row.load(k + 16, w[2], w[3]);
    for (int c = 0; c < 4; ++c)
      acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8 * c), w[c], acc[c]);
  }
  if (full < K) {
    alignas(32) float xt[32] = {}, wt[32];
    for (int64_t k = full; k < K; ++k)
      xt[k - full] = x[k];
    for (int64_t k = 0; k < 32; ++k)
      wt[k] = full + k < K ? row.at(full + k) : 0.0f;
    for (int c = 0; c < 4; ++c)
      acc[c] = _mm256_fmadd_ps(_mm256_load_ps(xt + 8 * c),
                               _mm256_load_ps(wt + 8 * c), acc[c]);
  }
  const float s = sumAccumulators(acc);
  *y = accumulate ? *y + s : s;
}

template <typename Row, typename Make>
void matvecOf(const float *x, float *y, int64_t n, int64_t K, bool accumulate,
              Make make) {
  for (int64_t r = 0; r < n; ++r)
    matvecRow(x, make(r), K, y + r, accumulate);
}

void matvec(const float *x, const float *W, float *y, int64_t K, int64_t n,
            bool accumulate) {
  matvecOf<F32Row>(x, y, n, K, accumulate,
                   [&](int64_t r) { return F32Row{W + r * K}; });
}
void matvecBf16(const float *x, const uint16_t *W, float *y, int64_t K,
                int64_t n, bool accumulate) {
  matvecOf<Bf16Row>(x, y, n, K, accumulate,
                    [&](int64_t r) { return Bf16Row{W + r * K}; });
}
void matvecF16(const float *x, const uint16_t *W, float *y, int64_t K,
               int64_t n, bool accumulate) {
  matvecOf<F16Row>(x, y, n, K, accumulate,
                   [&](int64_t r) { return F16Row{W + r * K}; });
}

// A block's scale d (an IEEE half, widened exactly by vcvtph2ps) in every
// lane.
__m256 blockScale(const uint8_t *b) {
  const int bits = b[0] | (b[1] << 8);
  return _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
}

// 32 int8 quants (16 in lo, 16 in hi) as four vectors of floats, the
// first two times d0, the others times d1 (one rounding each).
void scaleQuants(__m128i lo, __m128i hi, __m256 d0, __m256 d1, __m256 v[4]) {
  v[0] = _mm256_mul_ps(d0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)));
  v[1] = _mm256_mul_ps(
      d0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))));
  v[2] = _mm256_mul_ps(d1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)));
  v[3] = _mm256_mul_ps(
      d1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))));
}

// A Q8_0 block's 32 values, d * q (exact in f32), as four vectors: each
// 8 quants sign-extended straight from memory (no shuffles).
void decodeQ8(const uint8_t *b, __m256 v[4]) {
  const __m256 d = blockScale(b);
  for (int c = 0; c < 4; ++c)
    v[c] = _mm256_mul_ps(
        d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
               reinterpret_cast<const __m128i *>(b + 2 + 8 * c)))));
}

// A Q4_0 block's 32 values, d * (q - 8) (exact): values 0..15 are the low
// nibbles of its 16 bytes, 16..31 the high ones; each 8 bytes widened
// straight from memory, their nibbles split in 32-bit lanes.
void decodeQ4(const uint8_t *b, __m256 v[4]) {
  const __m256 d = blockScale(b);
  const __m256i mask = _mm256_set1_epi32(0x0f), eight = _mm256_set1_epi32(8);
  for (int h = 0; h < 2; ++h) {
    const __m256i q = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i *>(b + 2 + 8 * h)));
    v[h] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(
                                _mm256_and_si256(q, mask), eight)));
    v[h + 2] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(
                                    _mm256_srli_epi32(q, 4), eight)));
  }
}

// One Q2_K / Q3_K block decoded by ggml::decodeBlock inlined here (flatten),
// where the block type is a constant and the compiler vectorises the
// decoding for AVX2: the same values as the out-of-line call.
template <ggml::BlockType T>
[[gnu::flatten]] void decodeKBlock(const uint8_t *b, float *out) {
  ggml::decodeBlock(T, b, out);
}
// 32 int8 quants to 32 floats: d0 * q (- m0) for the first 16, d1 * q
// (- m1) for the others; one rounded product and, with mins, one rounded
// difference, as ggml_blocks.h's decoders.
template <bool kMin>
void affine32(__m256i q, float d0, float d1, float m0, float m1, float *out) {
  __m256 v[4];
  scaleQuants(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1),
              _mm256_set1_ps(d0), _mm256_set1_ps(d1), v);
  for (int i = 0; i < 4; ++i) {
    if (kMin)
      v[i] = _mm256_sub_ps(v[i], _mm256_set1_ps(i < 2 ? m0 : m1));
    _mm256_storeu_ps(out + 8 * i, v[i]);
  }
}

float halfScalar(const uint8_t *b) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(b[0] | (b[1] << 8))));
}

// Q4_K / Q5_K (layouts in ggml_blocks.h): 8 groups of 32 values, d1 * q -
// m1 per group; groups 2p and 2p + 1 are the low and high nibbles of qs
// bytes [32p, 32p + 32), Q5_K's fifth bit of value i of group g is bit g
// of qh[i].
template <bool kFive> void decodeQ45K(const uint8_t *b, float *out) {
  const float d = halfScalar(b), dmin = halfScalar(b + 2);
  const uint8_t *qs = b + (kFive ? 48 : 16);
  const __m256i nibble = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  const __m256i qh =
      _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 16));
  for (int p = 0; p < 4; ++p) {
    const __m256i bytes =
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + 32 * p));
    for (int g = 2 * p; g < 2 * p + 2; ++g) {
      uint8_t sc, mn;
      ggml::scaleMinK4(b + 4, g, sc, mn);
      const float d1 = d * float(sc), m1 = dmin * float(mn);
      __m256i q = g % 2 ? _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble)
                        : _mm256_and_si256(bytes, nibble);
      if (kFive)
        q = _mm256_or_si256(
            q, _mm256_slli_epi16(
                   _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(g)),
                                    one),
                   4));
      affine32<true>(q, d1, d1, m1, m1, out + 32 * g);
    }
  }
}

// Q6_K: two halves of 128 values; run k (0..3) of half h: low 4 bits from
// the low (k < 2) or high nibbles of ql[64h + 32 (k % 2) + i], top 2 bits
// from qh[32h + i] >> 2k, minus 32; one int8 scale per 16 values. Calls
// f(r, v) for the runs r = 4h + k in order, v their 32 values (the
// integer work on 32 quants at a time).
template <typename F> void forEachQ6KRun(const uint8_t *b, F &&f) {
  const uint8_t *ql = b, *qhp = b + 128;
  const auto *scales = reinterpret_cast<const int8_t *>(b + 192);
  const float d = halfScalar(b + 208);
  const __m256i nibble = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3);
  const __m256i bias = _mm256_set1_epi8(32);
  for (int h = 0; h < 2; ++h) {
    const __m256i qh =
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qhp + 32 * h));
    for (int k = 0; k < 4; ++k) {
      const __m256i l = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(ql + 64 * h + 32 * (k % 2)));
      const __m256i low =
          k < 2 ? _mm256_and_si256(l, nibble)
                : _mm256_and_si256(_mm256_srli_epi16(l, 4), nibble);
      const __m256i high = _mm256_and_si256(
          _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), three);
      const __m256i q = _mm256_sub_epi8(
          _mm256_or_si256(low, _mm256_slli_epi16(high, 4)), bias);
      const int s = 8 * h + 2 * k;
      __m256 v[4];
      scaleQuants(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1),
                  _mm256_set1_ps(d * float(scales[s])),
                  _mm256_set1_ps(d * float(scales[s + 1])), v);
      f(4 * h + k, v);
    }
  }
}

void decodeQ6K(const uint8_t *b, float *out) {
  forEachQ6KRun(b, [&](int r, const __m256 v[4]) {
    for (int c = 0; c < 4; ++c)
      _mm256_storeu_ps(out + 32 * r + 8 * c, v[c]);
  });
}

// Q8_0 / Q4_0 blocks decoded in registers, stored (the GEMM's packing and
// the embedding read them so).
template <bool kQ8> void decodeQ80Or40(const uint8_t *b, float *out) {
  __m256 v[4];
  if (kQ8)
    decodeQ8(b, v);
  else
    decodeQ4(b, v);
  for (int i = 0; i < 4; ++i)
    _mm256_storeu_ps(out + 8 * i, v[i]);
}

using BlockDecoder = void (*)(const uint8_t *, float *);
BlockDecoder kDecoder(BlockKind kind) {
  switch (kind) {
  case BlockKind::Q2_K:
    return &decodeKBlock<ggml::BlockType::Q2_K>;
  case BlockKind::Q3_K:
    return &decodeKBlock<ggml::BlockType::Q3_K>;
  case BlockKind::Q4_K:
    return &decodeQ45K<false>;
  case BlockKind::Q5_K:
    return &decodeQ45K<true>;
  case BlockKind::Q6_K:
    return &decodeQ6K;
  case BlockKind::Q8_0:
    return &decodeQ80Or40<true>;
  case BlockKind::Q4_0:
    break;
  }
  return &decodeQ80Or40<false>;
}

// kernels_generic.inc's decodeBlocks with the inlined decoders.
void decodeBlocksAvx2(BlockKind kind, const uint8_t *blocks, int64_t count,
                      float *dst) {
  const int k = static_cast<int>(kind);
  const BlockDecoder decode = kDecoder(kind);
  for (int64_t b = 0; b < count; ++b)
    decode(blocks + b * kBlockBytes[k], dst + b * kBlockValues[k]);
}

// One Q4_K / Q5_K block (decodeQ45K's values: d1 * q, then - m1, per
// group of 32) times x[0 .. 256) into matvecRow's four accumulators,
// decoded in registers: groups 2p and 2p + 1 are the low and high nibbles
// of qs bytes [32p, 32p + 32), each 8 of them widened straight from memory
// (Q5_K: the fifth bit of value i of group g is bit g of qh[i]); every
// accumulator takes group 2p before 2p + 1, so the sum is matvecRow's.
template <bool kFive>
void q45KBlock(const uint8_t *b, const float *x, __m256 acc[4]) {
  const float d = halfScalar(b), dmin = halfScalar(b + 2);
  const uint8_t *qs = b + (kFive ? 48 : 16), *qh = b + 16;
  const __m256i nibble = _mm256_set1_epi32(0x0f), one = _mm256_set1_epi32(1);
  for (int p = 0; p < 4; ++p) {
    uint8_t sc0, mn0, sc1, mn1;
    ggml::scaleMinK4(b + 4, 2 * p, sc0, mn0);
    ggml::scaleMinK4(b + 4, 2 * p + 1, sc1, mn1);
    const __m256 d0 = _mm256_set1_ps(d * float(sc0)),
                 m0 = _mm256_set1_ps(dmin * float(mn0)),
                 d1 = _mm256_set1_ps(d * float(sc1)),
                 m1 = _mm256_set1_ps(dmin * float(mn1));
    const float *x0 = x + 64 * p, *x1 = x0 + 32;
    for (int c = 0; c < 4; ++c) {
      const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
          reinterpret_cast<const __m128i *>(qs + 32 * p + 8 * c)));
      __m256i lo = _mm256_and_si256(q, nibble), hi = _mm256_srli_epi32(q, 4);
      if constexpr (kFive) {
        const __m256i h = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i *>(qh + 8 * c)));
        lo = _mm256_or_si256(
            lo, _mm256_slli_epi32(
                    _mm256_and_si256(_mm256_srli_epi32(h, 2 * p), one), 4));
        hi = _mm256_or_si256(
            hi, _mm256_slli_epi32(
                    _mm256_and_si256(_mm256_srli_epi32(h, 2 * p + 1), one), 4));
      }
      const __m256 v0 =
          _mm256_sub_ps(_mm256_mul_ps(d0, _mm256_cvtepi32_ps(lo)), m0);
      const __m256 v1 =
          _mm256_sub_ps(_mm256_mul_ps(d1, _mm256_cvtepi32_ps(hi)), m1);
      acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + 8 * c), v0, acc[c]);
      acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + 8 * c), v1, acc[c]);
    }
  }
}

// One Q6_K block (decodeQ6K's values) times x[0 .. 256) into matvecRow's
// four accumulators: each run of 32 values added as it is decoded, runs in
// order.
void q6KBlock(const uint8_t *b, const float *x, __m256 acc[4]) {
  forEachQ6KRun(b, [&](int r, const __m256 v[4]) {
    for (int c = 0; c < 4; ++c)
      acc[c] =
          _mm256_fmadd_ps(_mm256_loadu_ps(x + 32 * r + 8 * c), v[c], acc[c]);
  });
}

// Block-encoded row r (whole blocks; K is a multiple of the block's
// values, so of 32): each block decoded to exact f32 values, then summed as
// matvecRow sums f32 rows. Q8_0 and Q4_0 decode in registers (the format a
// template parameter: no test in the loop); the K formats through
// ggml::decodeBlock (inlined: decodeKBlock), a block at a time.
template <BlockKind kKind>
void blockRow(const float *x, const uint8_t *W, float *y, int64_t K, int64_t r,
              bool accumulate) {
  constexpr int kk = static_cast<int>(kKind);
  constexpr bool kInRegisters =
      kKind == BlockKind::Q8_0 || kKind == BlockKind::Q4_0;
  const int64_t values = kBlockValues[kk], bytes = kBlockBytes[kk];
  const int64_t blocks = K / values;
  const uint8_t *row = W + r * blocks * bytes;
  __m256 acc[4];
  for (__m256 &a : acc)
    a = _mm256_setzero_ps();
  alignas(32) float w[kInRegisters ? 32 : ggml::kSuperBlock];
  for (int64_t b = 0; b < blocks; ++b) {
    const float *xb = x + b * values;
    const uint8_t *blk = row + b * bytes;
    if constexpr (kInRegisters) {
      __m256 v[4];
      if constexpr (kKind == BlockKind::Q8_0)
        decodeQ8(blk, v);
      else
        decodeQ4(blk, v);
      for (int c = 0; c < 4; ++c)
        acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8 * c), v[c], acc[c]);
    } else if constexpr (kKind == BlockKind::Q4_K || kKind == BlockKind::Q5_K) {
      q45KBlock<kKind == BlockKind::Q5_K>(blk, xb, acc);
    } else if constexpr (kKind == BlockKind::Q6_K) {
      q6KBlock(blk, xb, acc);
    } else {
      kDecoder(kKind)(blk, w);
      for (int64_t e = 0; e < values; e += 32)
        for (int c = 0; c < 4; ++c)
          acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + e + 8 * c),
                                   _mm256_load_ps(w + e + 8 * c), acc[c]);
    }
  }
  const float s = sumAccumulators(acc);
  y[r] = accumulate ? y[r] + s : s;
}

template <BlockKind kKind>
void blockRowsOf(const float *x, const uint8_t *W, float *y, int64_t K,
                 int64_t n, bool accumulate) {
  for (int64_t r = 0; r < n; ++r)
    blockRow<kKind>(x, W, y, K, r, accumulate);
}

void matvecBlocks(BlockKind kind, const float *x, const uint8_t *W, float *y,
                  int64_t K, int64_t n, bool accumulate) {
  switch (kind) {
  case BlockKind::Q8_0:
    return blockRowsOf<BlockKind::Q8_0>(x, W, y, K, n, accumulate);
  case BlockKind::Q4_0:
    return blockRowsOf<BlockKind::Q4_0>(x, W, y, K, n, accumulate);
  case BlockKind::Q2_K:
    return blockRowsOf<BlockKind::Q2_K>(x, W, y, K, n, accumulate);
  case BlockKind::Q3_K:
    return blockRowsOf<BlockKind::Q3_K>(x, W, y, K, n, accumulate);
  case BlockKind::Q4_K:
    return blockRowsOf<BlockKind::Q4_K>(x, W, y, K, n, accumulate);
  case BlockKind::Q5_K:
    return blockRowsOf<BlockKind::Q5_K>(x, W, y, K, n, accumulate);
  case BlockKind::Q6_K:
    return blockRowsOf<BlockKind::Q6_K>(x, W, y, K, n, accumulate);
  }
}

// ---- Attention --------------------------------------------------------

// Lanes [0, n) of a maskload/maskstore mask, 0 <= n <= 8.
__m256i firstLanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// exp(x) for x <= 0 (softmax's shifted scores) to about 2 ulp: 2^n * p(r),
// n = round(x / ln 2), r = x - n ln 2, Cephes' expf polynomial for p;
// below -87 (where 2^n leaves the normal range) 0, as expf's result there
// is below 2^-125 and vanishes beside softmax's largest term, 1.
__m256 expNonPositive(__m256 x) {
  const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  // maxps returns its second operand where either is NaN: a NaN score
  // stays NaN (and makes the row NaN, as the portable kernels do).
  x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r),
                      _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

// The sums of eight vectors, in one vector, in a fixed order.
__m256 reduce8(const __m256 a[8]) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                       _mm256_permute2f128_ps(u0, u1, 0x31));
}

// K and V rows of a cache, ld floats apart, or addressed one by one (a
// recurrent-depth model's gathered rows), column col on.
struct StridedRows {
  const float *k, *v;
  int64_t ld;
  const float *key(int64_t p) const { return k + p * ld; }
  const float *value(int64_t p) const { return v + p * ld; }
};
struct GatheredRows {
  const float *const *k;
  const float *const *v;
  int64_t col;
  const float *key(int64_t p) const { return k[p] + col; }
  const float *value(int64_t p) const { return v[p] + col; }
};

// One query row over positions [0, n_pos): scores (eight positions at a
// time, then one by one) divided by sqrt(head_dim), softmax, then the
// weighted sum of the V rows, 32 columns at a time with two accumulators
// per 8 columns (even and odd positions). Both row layouts run this one
// template, so a full table of row pointers gives the strided result bit
// for bit, and a row's result never depends on the other rows of a step.
template <typename Rows>
void attendRow(const float *q, const Rows &kv, int64_t n_pos, int64_t head_dim,
               float *scores, float *out) {
  const float div =
      _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(static_cast<float>(head_dim))));
  const __m256 vdiv = _mm256_set1_ps(div);
  const int64_t eFull = head_dim & ~int64_t(7);
  const __m256i eTail = firstLanes(head_dim - eFull);
  const bool tail = eFull < head_dim;
  int64_t p = 0;
  for (; p + 8 <= n_pos; p += 8) {
    __m256 acc[8];
    const float *kp[8];
    for (int i = 0; i < 8; ++i) {
      acc[i] = _mm256_setzero_ps();
      kp[i] = kv.key(p + i);
    }
    for (int64_t e = 0; e < eFull; e += 8) {
      const __m256 qv = _mm256_loadu_ps(q + e);
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(kp[i] + e), qv, acc[i]);
    }
    if (tail) {
      const __m256 qv = _mm256_maskload_ps(q + eFull, eTail);
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_maskload_ps(kp[i] + eFull, eTail), qv,
                                 acc[i]);
    }
    _mm256_storeu_ps(scores + p, _mm256_div_ps(reduce8(acc), vdiv));
  }
  for (; p < n_pos; ++p) {
    const float *kp = kv.key(p);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t e = 0; e < eFull; e += 8)
      acc =
          _mm256_fmadd_ps(_mm256_loadu_ps(kp + e), _mm256_loadu_ps(q + e), acc);
    if (tail)
      acc = _mm256_fmadd_ps(_mm256_maskload_ps(kp + eFull, eTail),
                            _mm256_maskload_ps(q + eFull, eTail), acc);
    scores[p] = hsum(acc) / div;
  }

  // Softmax.
  const int64_t pFull = n_pos & ~int64_t(7);
  const __m256i pTail = firstLanes(n_pos - pFull);
  __m256 mx = _mm256_set1_ps(-__builtin_inff());
  for (p = 0; p < pFull; p += 8)
    mx = _mm256_max_ps(mx, _mm256_loadu_ps(scores + p));
  float top = -__builtin_inff();
  {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, mx);
    for (float l : lanes)
      top = l > top ? l : top;
    for (p = pFull; p < n_pos; ++p)
      top = scores[p] > top ? scores[p] : top;
  }
  const __m256 vtop = _mm256_set1_ps(top);
  __m256 sum = _mm256_setzero_ps();
  for (p = 0; p < pFull; p += 8) {
    const __m256 e =
        expNonPositive(_mm256_sub_ps(_mm256_loadu_ps(scores + p), vtop));
    _mm256_storeu_ps(scores + p, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (pFull < n_pos) {
    const __m256 e =
        _mm256_and_ps(_mm256_castsi256_ps(pTail),
                      expNonPositive(_mm256_sub_ps(
                          _mm256_maskload_ps(scores + pFull, pTail), vtop)));
    _mm256_maskstore_ps(scores + pFull, pTail, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 total = _mm256_set1_ps(hsum(sum));
  for (p = 0; p < pFull; p += 8)
    _mm256_storeu_ps(scores + p,
                     _mm256_div_ps(_mm256_loadu_ps(scores + p), total));
  if (pFull < n_pos)
    _mm256_maskstore_ps(
        scores + pFull, pTail,
        _mm256_div_ps(_mm256_maskload_ps(scores + pFull, pTail), total));

  // Weighted sum of the V rows.
  for (int64_t e0 = 0; e0 < head_dim; e0 += 32) {
    __m256i m[4];
    for (int g = 0; g < 4; ++g) {
      const int64_t left = head_dim - (e0 + 8 * g);
      m[g] = firstLanes(left < 0 ? 0 : left > 8 ? 8 : left);
    }
    __m256 acc[4][2];
    for (int g = 0; g < 4; ++g)
      acc[g][0] = acc[g][1] = _mm256_setzero_ps();
    for (p = 0; p + 2 <= n_pos; p += 2)
      for (int i = 0; i < 2; ++i) {
        // The V rows of a head sit a whole KV row apart, which the hardware
        // prefetchers follow poorly: fetch the row 8 positions ahead
        // (110M, positions 900-1000: decode 37.6 -> 44.3 tokens/s).
        if (p + i + 8 < n_pos) {
          const char *ahead =
              reinterpret_cast<const char *>(kv.value(p + i + 8) + e0);
          _mm_prefetch(ahead, _MM_HINT_T0);
          _mm_prefetch(ahead + 64, _MM_HINT_T0);
        }
        const __m256 sp = _mm256_set1_ps(scores[p + i]);
        const float *vp = kv.value(p + i) + e0;
        for (int g = 0; g < 4; ++g)
          acc[g][i] = _mm256_fmadd_ps(sp, _mm256_maskload_ps(vp + 8 * g, m[g]),
                                      acc[g][i]);
      }
    if (p < n_pos) {
      const __m256 sp = _mm256_set1_ps(scores[p]);
      const float *vp = kv.value(p) + e0;
      for (int g = 0; g < 4; ++g)
        acc[g][0] = _mm256_fmadd_ps(sp, _mm256_maskload_ps(vp + 8 * g, m[g]),
                                    acc[g][0]);
    }
    for (int g = 0; g < 4; ++g)
      _mm256_maskstore_ps(out + e0 + 8 * g, m[g],
                          _mm256_add_ps(acc[g][0], acc[g][1]));
  }
}

void attendHeadsAvx2(const float *q, int64_t ldq, int64_t rows, int64_t step,
                     const float *k, const float *v, int64_t ld, int64_t n_pos,
                     int64_t head_dim, float *scores, int64_t lds, float *out,
                     int64_t ldo) {
  const StridedRows kv{k, v, ld};
  for (int64_t r = 0; r < rows; ++r)
    attendRow(q + r * ldq, kv, n_pos + r * step, head_dim, scores + r * lds,
              out + r * ldo);
}

void attendHeadRowsAvx2(const float *q, const float *const *k,
                        const float *const *v, int64_t col, int64_t n_pos,
                        int64_t head_dim, float *scores, float *out) {
  attendRow(q, GatheredRows{k, v, col}, n_pos, head_dim, scores, out);
}

} // namespace

const IsaKernels kAvx2Kernels = {kMr,
                                 kNr,
                                 &packPanels,
                                 &packPanelsBf16,
                                 &packPanelsQ8,
                                 &packPanelsQ4,
                                 &packPanelsF16,
                                 &gemmBlock,
                                 &matvec,
                                 &matvecBf16,
                                 &matvecBlocks,
                                 &decodeBlocksAvx2,
                                 &matvecF16,
                                 &rmsNormRow,
                                 &ropeRow,
                                 &attendHeadsAvx2,
                                 &attendHeadRowsAvx2,
                                 &siluMul,
                                 &add,
                                 &layerNormRow,
                                 &geluTanh};

} // namespace loom::rt::cpu::detail

#pragma GCC pop_options
