// AVX-512 leaf kernels. CMake compiles this file with -mavx512f -mavx512bw
// -mavx512vl -mavx512dq -mfma -mavx2; kernels.cpp only calls into it after
// detectIsa() has seen those features and the OS's zmm support. It includes no
// standard-library or TBB header and keeps every helper in an anonymous
// namespace (see kernels_impl.h for why; avx512_helpers.h holds the ones it
// shares with kernels_avx512bf16.cpp).
#include "cpu/avx512_helpers.h"
#include "cpu/kernels_impl.h"

namespace loom::rt::cpu::detail {
namespace {

// Micro-tile of the prefill GEMM: 8 tokens x 32 outputs is 16 zmm
// accumulators, enough independent FMA chains to hide FMA latency on two FMA
// ports, while each k step loads two weight vectors and eight token values.
constexpr int64_t kMr = 8;
constexpr int64_t kNr = 32;

// The horizontal sums of eight vectors, in order, as one ymm. Folding the
// vectors into each other costs 15 shuffles and 7 adds for all eight, where
// eight separate reductions would cost about four times as much.
__m256 reduce8(const __m512 a[8]) {
  // Halve each vector and pair them: b[i] holds vector 2i in its low two
  // 128-bit lanes and vector 2i+1 in its high two.
  __m512 b[4];
  for (int i = 0; i < 4; ++i)
    b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
  // Lane i of c0 now sums to vector i, lane i of c1 to vector 4 + i.
  const __m512 c0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x88),
                                  _mm512_shuffle_f32x4(b[0], b[1], 0xDD));
  const __m512 c1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x88),
                                  _mm512_shuffle_f32x4(b[2], b[3], 0xDD));
  // Within each lane: element 0 becomes the sum of vector i, element 1 that
  // of vector 4 + i.
  const __m512 e =
      _mm512_add_ps(_mm512_unpacklo_ps(c0, c1), _mm512_unpackhi_ps(c0, c1));
  const __m512 f = _mm512_add_ps(e, _mm512_shuffle_ps(e, e, 0x4E));
  const __m512i order =
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castps512_ps256(_mm512_permutexvar_ps(order, f));
}

// exp(x) to about 2 ulp: 2^n * p(r) with n = round(x / ln 2), r = x - n ln 2
// and Cephes' expf polynomial for p. scalef applies 2^n with correct overflow
// to +inf and underflow to 0; the clamp only keeps n*ln2 exact.
__m512 expPs(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-150.0f)),
                    _mm512_set1_ps(150.0f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r),
                      _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// 16 weights from w as f32, lanes outside m zero: loaded, or bf16 widened
// (a bf16 value is the upper half of an f32, so the shift is exact).
__m512 loadWeights(__mmask16 m, const float *w) {
  return _mm512_maskz_loadu_ps(m, w);
}
__m512 loadWeights(__mmask16 m, const uint16_t *w) {
  const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
}
__m512 loadWeights(const float *w) { return _mm512_loadu_ps(w); }
__m512 loadWeights(const uint16_t *w) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Q8_0 weights addressed like an array of their values (element `first` on
// of the blocks at `blocks`), decoded on load.
struct Q8Values {
  const uint8_t *blocks;
  int64_t first = 0;
};
Q8Values operator+(Q8Values p, int64_t i) { return {p.blocks, p.first + i}; }

// A block's scale d in every lane.
__m512 q8Scale(const uint8_t *block) {
  uint16_t h;
  __builtin_memcpy(&h, block, sizeof h);
  return _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<short>(h)));
}

// Values first .. first + 15 (lanes outside m zero) as d * q: exact f32s.
// The 16 values lie in one block, or straddle two (a K block of the GEMM
// may start mid-block); memory outside m is not read.
__m512 loadWeights(__mmask16 m, Q8Values p) {
  if (!m)
    return _mm512_setzero_ps();
  const uint8_t *b = p.blocks + (p.first / kQ8Values) * kQ8Bytes;
  const int64_t o = p.first % kQ8Values;
  __m512 d = q8Scale(b);
  __m128i q;
  if (o <= kQ8Values - 16) {
    q = _mm_maskz_loadu_epi8(m, b + 2 + o);
  } else {
    const int64_t n1 = kQ8Values - o; // lanes from this block
    const __mmask16 here = static_cast<__mmask16>((1u << n1) - 1);
    q = _mm_maskz_loadu_epi8(m & here, b + 2 + o);
    const __mmask16 next = m & static_cast<__mmask16>(~here);
    if (next) {
      // Lane L >= n1 reads value L - n1 of the next block.
      q = _mm_mask_loadu_epi8(q, next, b + kQ8Bytes + 2 - n1);
      d = _mm512_mask_blend_ps(next, d, q8Scale(b + kQ8Bytes));
    }
  }
  return _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
}

// Q4_0 weights addressed like an array of their values. Only the GEMM's
// panel packing loads them this way (matvecQ4 walks whole blocks), so the
// 16 values are decoded one by one into a small buffer.
struct Q4Values {
  const uint8_t *blocks;
  int64_t first = 0;
};
Q4Values operator+(Q4Values p, int64_t i) { return {p.blocks, p.first + i}; }

// IEEE halves, addressed like the pointer they wrap, widened on load
// (vcvtph2ps: exact).
struct F16Values {
  const uint16_t *halves;
};
F16Values operator+(F16Values p, int64_t i) { return {p.halves + i}; }
__m512 loadWeights(__mmask16 m, F16Values p) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.halves));
}
__m512 loadWeights(F16Values p) {
  return _mm512_cvtph_ps(
      _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p.halves)));
}

__m512 q4Half(const uint8_t *blk, bool high);
__m512 loadWeights(__mmask16 m, Q4Values p) {
  // A whole half of a block (the usual case): decoded as matvecQ4 does.
  const int64_t o = p.first % kQ8Values;
  if (m == 0xffff && (o == 0 || o == 16))
    return q4Half(p.blocks + (p.first / kQ8Values) * kQ4Bytes, o == 16);
  alignas(64) float v[16];
  for (int i = 0; i < 16; ++i) {
    v[i] = 0.0f;
    if (!(m >> i & 1))
      continue;
    const int64_t e = p.first + i;
    const uint8_t *b = p.blocks + (e / kQ8Values) * kQ4Bytes;
    const int64_t j = e % kQ8Values;
    const uint8_t byte = b[2 + (j & 15)];
    const int q = j < 16 ? (byte & 0xf) : (byte >> 4);
    v[i] = _mm512_cvtss_f32(q8Scale(b)) * float(q - 8);
  }
  return _mm512_load_ps(v);
}

// `w` is a pointer to f32 or bf16 weights, or Q8Values.
template <typename W>
void packPanelsOf(W w, int64_t ldw, int64_t n, int64_t kc, float *dst) {
  for (int64_t r0 = 0; r0 < n; r0 += kNr, dst += kc * kNr) {
    // Each panel is two 16-row halves; each is transposed 16 x 16 at a time
    // so that reads and writes both stay whole vectors.
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t rb = r0 + 16 * half;
      const int64_t rows = n - rb;
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        const int64_t kn = minI(16, kc - k0);
        const __mmask16 m = firstLanes(kn);
        __m512 v[16];
        for (int64_t i = 0; i < 16; ++i)
          v[i] = i < rows ? loadWeights(m, w + (rb + i) * ldw + k0)
                          : _mm512_setzero_ps();
        transpose16(v);
        for (int64_t j = 0; j < kn; ++j)
          _mm512_storeu_ps(dst + (k0 + j) * kNr + 16 * half, v[j]);
      }
    }
  }
}
void packPanels(const float *W, int64_t ldw, int64_t n, int64_t kc,
                float *dst) {
  packPanelsOf(W, ldw, n, kc, dst);
}
void packPanelsBf16(const uint16_t *W, int64_t ldw, int64_t n, int64_t kc,
                    float *dst) {
  packPanelsOf(W, ldw, n, kc, dst);
}
void packPanelsQ8(const uint8_t *W, int64_t K, int64_t k0, int64_t n,
                  int64_t kc, float *dst) {
  packPanelsOf(Q8Values{W, k0}, K, n, kc, dst);
}
void packPanelsQ4(const uint8_t *W, int64_t K, int64_t k0, int64_t n,
                  int64_t kc, float *dst) {
  packPanelsOf(Q4Values{W, k0}, K, n, kc, dst);
}
void packPanelsF16(const uint16_t *W, int64_t ldw, int64_t n, int64_t kc,
                   float *dst) {
  packPanelsOf(F16Values{W}, ldw, n, kc, dst);
}

// One kMr x kNr tile over kc values of k. Rows past `rows` repeat the last
// valid row so the loop stays branch-free; their results are not stored.
void microTile(const float *x, int64_t ldx, int64_t rows, const float *panel,
               int64_t kc, float *y, int64_t ldy, int64_t cols,
               bool accumulate) {
  const float *a[kMr];
  for (int64_t i = 0; i < kMr; ++i)
    a[i] = x + minI(i, rows - 1) * ldx;
  __m512 c[kMr][2];
  for (int64_t i = 0; i < kMr; ++i)
    c[i][0] = c[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(panel + k * kNr);
    const __m512 b1 = _mm512_loadu_ps(panel + k * kNr + 16);
    for (int64_t i = 0; i < kMr; ++i) {
      const __m512 av = _mm512_set1_ps(a[i][k]);
      c[i][0] = _mm512_fmadd_ps(av, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(av, b1, c[i][1]);
    }
  }
  storeTile(c, rows, y, ldy, cols, accumulate);
}

void gemmBlock(const float *x, int64_t ldx, const float *panels, float *y,
               int64_t ldy, int64_t m, int64_t n, int64_t kc, bool accumulate) {
  // Panel-outer, tokens-inner: one panel (kc x 32 floats) stays in L1 while
  // the token rows stream past it.
  for (int64_t j0 = 0; j0 < n; j0 += kNr, panels += kc * kNr)
    for (int64_t t0 = 0; t0 < m; t0 += kMr)
      microTile(x + t0 * ldx, ldx, minI(kMr, m - t0), panels, kc,
                y + t0 * ldy + j0, ldy, minI(kNr, n - j0), accumulate);
}

// `Wm` is a pointer to f32 or bf16 weights, or Q8Values.
template <typename W>
void matvecOf(const float *x, W Wm, float *y, int64_t K, int64_t n,
              bool accumulate) {
  const int64_t kFull = K & ~int64_t(15);
  const __mmask16 tail = firstLanes(K - kFull);
  int64_t r = 0;
  // Eight rows at a time: eight independent FMA chains, and each x vector is
  // loaded once for eight rows of W.
  for (; r + 8 <= n; r += 8) {
    const W w = Wm + r * K;
    __m512 acc[8];
    for (int i = 0; i < 8; ++i)
      acc[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kFull; k += 16) {
      const __m512 xv = _mm512_loadu_ps(x + k);
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm512_fmadd_ps(loadWeights(w + i * K + k), xv, acc[i]);
    }
    if (tail) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail, x + kFull);
      for (int i = 0; i < 8; ++i)
        acc[i] =
            _mm512_fmadd_ps(loadWeights(tail, w + i * K + kFull), xv, acc[i]);
    }
    __m256 s = reduce8(acc);
    if (accumulate)
      s = _mm256_add_ps(s, _mm256_loadu_ps(y + r));
    _mm256_storeu_ps(y + r, s);
  }
  for (; r < n; ++r) {
    const W w = Wm + r * K;
    __m512 acc0 = _mm512_setzero_ps();
    __m512 acc1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= kFull; k += 32) {
      acc0 = _mm512_fmadd_ps(loadWeights(w + k), _mm512_loadu_ps(x + k), acc0);
      acc1 = _mm512_fmadd_ps(loadWeights(w + k + 16),
                             _mm512_loadu_ps(x + k + 16), acc1);
    }
    if (k < kFull)
      acc0 = _mm512_fmadd_ps(loadWeights(w + k), _mm512_loadu_ps(x + k), acc0);
    acc1 = _mm512_fmadd_ps(loadWeights(tail, w + kFull),
                           _mm512_maskz_loadu_ps(tail, x + kFull), acc1);
    const float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    y[r] = accumulate ? y[r] + s : s;
  }
}
void matvec(const float *x, const float *W, float *y, int64_t K, int64_t n,
            bool accumulate) {
  matvecOf(x, W, y, K, n, accumulate);
}
void matvecBf16(const float *x, const uint16_t *W, float *y, int64_t K,
                int64_t n, bool accumulate) {
  matvecOf(x, W, y, K, n, accumulate);
}
// Q8_0 values 16 q at `q` times the scale d in every lane.
inline __m512 q8Half(__m512 d, const uint8_t *q) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(q));
  return _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)));
}

// A block's two 16-value halves as d * q (Q8_0) or d * (q - 8) (Q4_0: the
// low nibbles of its 16 bytes, then the high ones).
// each(b, f) calls f(c, values) for the block's 16-value chunks c in order
// (the interface matvecBlocks reads every block format through).
template <typename Halves> struct HalvesBlock {
  static constexpr int64_t kValues = kQ8Values;
  static constexpr bool kInterleave = false;
  template <typename F> static void each(const uint8_t *b, F &&f) {
    __m512 lo, hi;
    Halves::halves(b, lo, hi);
    f(0, lo);
    f(1, hi);
  }
};
struct Q8Block : HalvesBlock<Q8Block> {
  static constexpr int64_t kBytes = kQ8Bytes;
  static void halves(const uint8_t *blk, __m512 &lo, __m512 &hi) {
    const __m512 d = q8Scale(blk);
    lo = q8Half(d, blk + 2);
    hi = q8Half(d, blk + 18);
  }
};
struct Q4Block : HalvesBlock<Q4Block> {
  static constexpr int64_t kBytes = kQ4Bytes;
  static void halves(const uint8_t *blk, __m512 &lo, __m512 &hi) {
    const __m512 d = q8Scale(blk);
    const __m128i v =
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + 2));
    const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const __m128i l = _mm_sub_epi8(_mm_and_si128(v, mask), eight);
    const __m128i h =
        _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), mask), eight);
    lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(l)));
    hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(h)));
  }
};

// One half of a Q4_0 block: values 0..15 (low nibbles) or 16..31 (high).
__m512 q4Half(const uint8_t *blk, bool high) {
  __m512 lo, hi;
  Q4Block::halves(blk, lo, hi);
  return high ? hi : lo;
}

// Rows of block-format weights (Q8_0, Q4_0, the K formats: Block::each),
// decoded block by block and multiplied into each row's accumulator in
// matvecOf's order (k ascending in steps of 16, the one-row tail
// alternating two accumulators; rows are whole blocks, so no tail chunk),
// so the sums are bit for bit matvec's over the decoded matrix.
template <typename Block>
void matvecBlocks(const float *x, const uint8_t *W, float *y, int64_t K,
                  int64_t n, bool accumulate) {
  const int64_t blocks = K / Block::kValues, rowBytes = blocks * Block::kBytes;
  // A block holds many more values per cache line than f32 does, so the
  // decode work fills the out-of-order window before the hardware
  // prefetcher has the next lines in flight: each block's load also
  // prefetches the same block two groups of 8 rows ahead (measured on the
  // 110M shape, Q8_0, 1 thread: 70 -> about 210 tokens/s; distances under
  // 8 KB gained little). (A prefetch never faults, so running past the
  // matrix's end is harmless.)
  const int64_t ahead = 16 * rowBytes;
  int64_t r = 0;
  for (; r + 8 <= n; r += 8) {
    const uint8_t *w = W + r * rowBytes;
    __m512 acc[8];
    for (int i = 0; i < 8; ++i)
      acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const float *xb = x + b * Block::kValues;
      if constexpr (Block::kInterleave) {
        // The 8 rows' blocks chunk by chunk: eight independent FMA chains
        // in flight (each row's sum in the same order as above).
        using Base = typename Block::Base;
        alignas(64) float d[8][16], m[8][16];
        for (int i = 0; i < 8; ++i) {
          const uint8_t *blk = w + i * rowBytes + b * Block::kBytes;
          for (int64_t o = 0; o < Block::kBytes; o += 64)
            _mm_prefetch(reinterpret_cast<const char *>(blk) + ahead + o,
                         _MM_HINT_T0);
          Base::prepare(blk, d[i], m[i]);
        }
#pragma GCC unroll 2
        for (int c = 0; c < 16; ++c) {
          const __m512 xv = _mm512_loadu_ps(xb + 16 * c);
#pragma GCC unroll 8
          for (int i = 0; i < 8; ++i)
            acc[i] = _mm512_fmadd_ps(
                Block::chunk(w + i * rowBytes + b * Block::kBytes, c, d[i],
                             m[i]),
                xv, acc[i]);
        }
        continue;
      }
      for (int i = 0; i < 8; ++i) {
        const uint8_t *blk = w + i * rowBytes + b * Block::kBytes;
        for (int64_t o = 0; o < Block::kBytes; o += 64)
          _mm_prefetch(reinterpret_cast<const char *>(blk) + ahead + o,
                       _MM_HINT_T0);
        Block::each(blk, [&](int c, __m512 v) {
          acc[i] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xb + 16 * c), acc[i]);
        });
      }
    }
    __m256 s = reduce8(acc);
    if (accumulate)
      s = _mm256_add_ps(s, _mm256_loadu_ps(y + r));
    _mm256_storeu_ps(y + r, s);
  }
  for (; r < n; ++r) {
    const uint8_t *w = W + r * rowBytes;
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t b = 0; b < blocks; ++b) {
      const float *xb = x + b * Block::kValues;
      Block::each(w + b * Block::kBytes, [&](int c, __m512 v) {
        acc[c % 2] =
            _mm512_fmadd_ps(v, _mm512_loadu_ps(xb + 16 * c), acc[c % 2]);
      });
    }
    const float s = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
    y[r] = accumulate ? y[r] + s : s;
  }
}
void matvecF16(const float *x, const uint16_t *W, float *y, int64_t K,
               int64_t n, bool accumulate) {
  matvecOf(x, F16Values{W}, y, K, n, accumulate);
}

// ggml's K formats (loom/ggml_blocks.h, which this file may not include: the
// scale unpacking is spelled again here). A block is 16 chunks of 16
// values; prepare() writes each sub-block's scale d[i] (the product of the
// block's and the sub-block's scales, rounded once, as ggml computes it)
// and, for the formats with mins, its min m[i], where chunk c is in
// sub-block i = scaleOf(c); quants(b, c) gives chunk c's integer quants as
// 16 int8s. Value = d[i] * q, minus m[i]: one
// rounded product and one rounded difference (no fused multiply-add), as
// ggml's dequantize_row_*.
float halfValue(const uint8_t *b) { return _mm512_cvtss_f32(q8Scale(b)); }
__m128i load16(const uint8_t *p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
}
// Bits [shift, shift + width) of each of the 16 bytes (shift + width <= 8).
__m128i bitsOf(__m128i v, int shift, int mask) {
  return _mm_and_si128(_mm_srli_epi16(v, shift),
                       _mm_set1_epi8(static_cast<char>(mask)));
}

struct Q2KBlock {
  static constexpr int64_t kBytes = 84; // scales[16] qs[64] d dmin
  static constexpr bool kHasMin = true;
  static constexpr int scaleOf(int c) { return c; }
  static void prepare(const uint8_t *b, float *d, float *m) {
    const __m512i sc = _mm512_cvtepu8_epi32(load16(b));
    const __m512 lo =
        _mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(15)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4));
    _mm512_store_ps(d, _mm512_mul_ps(_mm512_set1_ps(halfValue(b + 80)), lo));
    _mm512_store_ps(m, _mm512_mul_ps(_mm512_set1_ps(halfValue(b + 82)), hi));
  }
  static __m128i quants(const uint8_t *b, int c) {
    const int half = c / 8, j = (c % 8) / 2, part = c % 2;
    return bitsOf(load16(b + 16 + 32 * half + 16 * part), 2 * j, 3);
  }
};
struct Q3KBlock {
  static constexpr int64_t kBytes = 110; // hmask[32] qs[64] scales[12] d
  static constexpr bool kHasMin = false;
  static constexpr int scaleOf(int c) { return c; }
  static void prepare(const uint8_t *b, float *d, float *) {
    // The 16 6-bit scales, unpacked four at a time as words: scale c's low
    // 4 bits are the low (c < 8) or high nibble of byte c % 8, its top 2
    // bits bits 2 * (c / 4) of byte 8 + c % 4; minus 32.
    uint32_t w[3];
    __builtin_memcpy(w, b + 96, sizeof w);
    const uint32_t nib = 0x0f0f0f0f, two = 0x03030303;
    const __m128i sc = _mm_set_epi32(
        static_cast<int>(((w[1] >> 4) & nib) | (((w[2] >> 6) & two) << 4)),
        static_cast<int>(((w[0] >> 4) & nib) | (((w[2] >> 4) & two) << 4)),
        static_cast<int>((w[1] & nib) | (((w[2] >> 2) & two) << 4)),
        static_cast<int>((w[0] & nib) | ((w[2] & two) << 4)));
    const __m512 scales = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_sub_epi8(sc, _mm_set1_epi8(32))));
    _mm512_store_ps(d,
                    _mm512_mul_ps(_mm512_set1_ps(halfValue(b + 108)), scales));
  }
  static __m128i quants(const uint8_t *b, int c) {
    const int half = c / 8, j = (c % 8) / 2, part = c % 2;
    const __m128i q = bitsOf(load16(b + 32 + 32 * half + 16 * part), 2 * j, 3);
    // A clear hmask bit subtracts 4: q + 4 * bit - 4.
    const __m128i h = bitsOf(load16(b + 16 * part), 4 * half + j, 1);
    return _mm_sub_epi8(_mm_add_epi8(q, _mm_slli_epi16(h, 2)),
                        _mm_set1_epi8(4));
  }
};
template <bool kFive> struct Q45KBlock {
  // d dmin scales[12] (qh[32]) qs[128]
  static constexpr int64_t kBytes = kFive ? 176 : 144;
  static constexpr bool kHasMin = true;
  static constexpr int scaleOf(int c) { return c / 2; } // one per group of 32
  static void prepare(const uint8_t *b, float *d, float *m) {
    // The eight 6-bit scales and mins, unpacked four at a time as words:
    // j < 4 in the low 6 bits of bytes j (scale) and j + 4 (min); j >= 4 in
    // the nibbles of byte j + 4 with the top 2 bits of bytes j - 4 and j.
    uint32_t w[3];
    __builtin_memcpy(w, b + 4, sizeof w);
    const uint32_t low6 = 0x3f3f3f3f, nib = 0x0f0f0f0f, top2 = 0x03030303;
    const uint32_t sc[2] = {w[0] & low6,
                            (w[2] & nib) | (((w[0] >> 6) & top2) << 4)};
    const uint32_t mn[2] = {w[1] & low6,
                            ((w[2] >> 4) & nib) | (((w[1] >> 6) & top2) << 4)};
    auto floats = [](const uint32_t v[2]) {
      return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
          _mm_set_epi32(0, 0, static_cast<int>(v[1]), static_cast<int>(v[0]))));
    };
    _mm256_store_ps(d, _mm256_mul_ps(_mm256_set1_ps(halfValue(b)), floats(sc)));
    _mm256_store_ps(m,
                    _mm256_mul_ps(_mm256_set1_ps(halfValue(b + 2)), floats(mn)));
  }
  static __m128i quants(const uint8_t *b, int c) {
    const int g = c / 2, h = c % 2;
    const __m128i q = bitsOf(
        load16(b + (kFive ? 48 : 16) + 32 * (g / 2) + 16 * h), 4 * (g % 2), 15);
    if (!kFive)
      return q;
    return _mm_or_si128(
        q, _mm_slli_epi16(bitsOf(load16(b + 16 + 16 * h), g, 1), 4));
  }
};
struct Q6KBlock {
  static constexpr int64_t kBytes = 210; // ql[128] qh[64] scales[16] d
  static constexpr bool kHasMin = false;
  static constexpr int scaleOf(int c) { return c; }
  static void prepare(const uint8_t *b, float *d, float *) {
    // Chunk c's scale is scales[c].
    const __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load16(b + 192)));
    _mm512_store_ps(d, _mm512_mul_ps(_mm512_set1_ps(halfValue(b + 208)), sc));
  }
  static __m128i quants(const uint8_t *b, int c) {
    const int h = c / 8, k = (c % 8) / 2, sub = c % 2;
    const __m128i low =
        bitsOf(load16(b + 64 * h + 32 * (k % 2) + 16 * sub), k < 2 ? 0 : 4, 15);
    const __m128i high = bitsOf(load16(b + 128 + 32 * h + 16 * sub), 2 * k, 3);
    return _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(high, 4)),
                        _mm_set1_epi8(32));
  }
};

// Chunk c of a prepared block: d[c] * q (- m[c]).
template <typename Block>
inline __m512 kChunk(const uint8_t *b, int c, const float *d, const float *m) {
  const int i = Block::scaleOf(c);
  const __m512 v = _mm512_mul_ps(
      _mm512_set1_ps(d[i]),
      _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(Block::quants(b, c))));
  return Block::kHasMin ? _mm512_sub_ps(v, _mm512_set1_ps(m[i])) : v;
}

// A K format's blocks through Block::each: the scales prepared once per
// block, then the 16 chunks.
template <typename B> struct KBlock : B {
  using Base = B;
  static constexpr int64_t kValues = kKValues;
  static constexpr bool kInterleave = true;
  static __m512 chunk(const uint8_t *b, int c, const float *d, const float *m) {
    return kChunk<B>(b, c, d, m);
  }
  template <typename F> static void each(const uint8_t *b, F &&f) {
    alignas(64) float d[16], m[16];
    B::prepare(b, d, m);
#pragma GCC unroll 16
    for (int c = 0; c < 16; ++c)
      f(c, kChunk<B>(b, c, d, m));
  }
};

template <typename Block>
void decodeBlocksOf(const uint8_t *blocks, int64_t count, float *dst) {
  for (int64_t b = 0; b < count; ++b)
    Block::each(blocks + b * Block::kBytes, [&](int c, __m512 v) {
      _mm512_storeu_ps(dst + b * Block::kValues + 16 * c, v);
    });
}

template <typename Block> struct Tag { using type = Block; };
// Calls f(Tag<Block>()) for the Block of `kind`.
template <typename F> void withBlock(BlockKind kind, F &&f) {
  switch (kind) {
  case BlockKind::Q8_0:
    return f(Tag<Q8Block>());
  case BlockKind::Q4_0:
    return f(Tag<Q4Block>());
  case BlockKind::Q2_K:
    return f(Tag<KBlock<Q2KBlock>>());
  case BlockKind::Q3_K:
    return f(Tag<KBlock<Q3KBlock>>());
  case BlockKind::Q4_K:
    return f(Tag<KBlock<Q45KBlock<false>>>());
  case BlockKind::Q5_K:
    return f(Tag<KBlock<Q45KBlock<true>>>());
  case BlockKind::Q6_K:
    return f(Tag<KBlock<Q6KBlock>>());
  }
}
void decodeBlocks(BlockKind kind, const uint8_t *blocks, int64_t count,
                  float *dst) {
  withBlock(kind, [&](auto tag) {
    decodeBlocksOf<typename decltype(tag)::type>(blocks, count, dst);
  });
}
void matvecBlocksOf(BlockKind kind, const float *x, const uint8_t *W, float *y,
                    int64_t K, int64_t n, bool accumulate) {
  withBlock(kind, [&](auto tag) {
    matvecBlocks<typename decltype(tag)::type>(x, W, y, K, n, accumulate);
  });
}

void rmsNormRow(const float *x, const float *w, float *y, int64_t D,
                float eps) {
  __m512 acc0 = _mm512_setzero_ps();
  __m512 acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= D; i += 32) {
    const __m512 v0 = _mm512_loadu_ps(x + i);
    const __m512 v1 = _mm512_loadu_ps(x + i + 16);
    acc0 = _mm512_fmadd_ps(v0, v0, acc0);
    acc1 = _mm512_fmadd_ps(v1, v1, acc1);
  }
  for (; i < D; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(firstLanes(minI(D - i, 16)), x + i);
    acc0 = _mm512_fmadd_ps(v, v, acc0);
  }
  const float ms =
      _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) / static_cast<float>(D);
  const float ss = 1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(ms + eps)));
  const __m512 scale = _mm512_set1_ps(ss);
  for (i = 0; i < D; i += 16) {
    const __mmask16 m = firstLanes(minI(D - i, 16));
    const __m512 v = _mm512_mul_ps(scale, _mm512_maskz_loadu_ps(m, x + i));
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), v));
  }
}

void ropeRow(float *x, int64_t cols, int64_t head_dim, const float *cosT,
             const float *sinT) {
  // The _round_ forms are opaque to the compiler, so it cannot contract the
  // products and the sum into an FMA (it may do that for plain _mm512_mul_ps
  // and _mm512_add_ps); a fused result would differ from the portable path.
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  for (int64_t h0 = 0; h0 < cols; h0 += head_dim) {
    float *xh = x + h0;
    const int64_t n = minI(head_dim, cols - h0);
    for (int64_t e = 0; e < n; e += 16) {
      const __mmask16 m = firstLanes(minI(n - e, 16));
      const __m512 v = _mm512_maskz_loadu_ps(m, xh + e);
      const __m512 swapped = _mm512_permute_ps(v, 0xB1);
      const __m512 a =
          _mm512_mul_round_ps(v, _mm512_maskz_loadu_ps(m, cosT + e), kNearest);
      const __m512 b = _mm512_mul_round_ps(
          swapped, _mm512_maskz_loadu_ps(m, sinT + e), kNearest);
      _mm512_mask_storeu_ps(xh + e, m, _mm512_add_round_ps(a, b, kNearest));
    }
  }
}

// The score of one query row against the eight K rows at kp, kp + ld, ...
// (scores[0..8)), and against one K row.
void scores8(const float *q, const float *kp, int64_t ld, int64_t eFull,
             __mmask16 eTail, float div, float *scores) {
  __m512 acc[8];
  for (int i = 0; i < 8; ++i)
    acc[i] = _mm512_setzero_ps();
  for (int64_t e = 0; e < eFull; e += 16) {
    const __m512 qv = _mm512_loadu_ps(q + e);
    for (int i = 0; i < 8; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(kp + i * ld + e), qv, acc[i]);
  }
  if (eTail) {
    const __m512 qv = _mm512_maskz_loadu_ps(eTail, q + eFull);
    for (int i = 0; i < 8; ++i)
      acc[i] = _mm512_fmadd_ps(
          _mm512_maskz_loadu_ps(eTail, kp + i * ld + eFull), qv, acc[i]);
  }
  _mm256_storeu_ps(scores, _mm256_div_ps(reduce8(acc), _mm256_set1_ps(div)));
}
float score1(const float *q, const float *kp, int64_t head_dim, float div) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t e = 0; e < head_dim; e += 16) {
    const __mmask16 m = firstLanes(minI(head_dim - e, 16));
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, kp + e),
                          _mm512_maskz_loadu_ps(m, q + e), acc);
  }
  return _mm512_reduce_add_ps(acc) / div;
}

// In place: scores[0..n) <- softmax(scores[0..n)).
void softmax(float *scores, int64_t n) {
  __m512 mx = _mm512_set1_ps(-__builtin_inff());
  for (int64_t p = 0; p < n; p += 16) {
    const __mmask16 m = firstLanes(minI(n - p, 16));
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, scores + p));
  }
  const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t p = 0; p < n; p += 16) {
    const __mmask16 m = firstLanes(minI(n - p, 16));
    const __m512 e =
        expPs(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + p), top));
    _mm512_mask_storeu_ps(scores + p, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  const __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
  for (int64_t p = 0; p < n; p += 16) {
    const __mmask16 m = firstLanes(minI(n - p, 16));
    _mm512_mask_storeu_ps(
        scores + p, m,
        _mm512_div_ps(_mm512_maskz_loadu_ps(m, scores + p), total));
  }
}

// One row's weighted sum of the V rows v, v + ld, ... (at most 64 columns):
// the PV loop of attendBlock with its loops interchanged, positions outside
// and the (at most four) groups of 16 columns inside, so that each score is
// broadcast once rather than once per group. Each accumulator sees the same
// products in the same order (accumulator i of column group e: positions
// p = i mod 4, then the positions past the last group of four into
// accumulator 0), so the result is attendBlock's bit for bit.
void weightedSum1(const float *scores, const float *v, int64_t ld,
                  int64_t n_pos, int64_t head_dim, float *out) {
  const int64_t groups = (head_dim + 15) / 16;
  __mmask16 m[4];
  for (int64_t g = 0; g < 4; ++g)
    m[g] = g < groups ? firstLanes(minI(head_dim - 16 * g, 16)) : 0;
  __m512 acc[4][4];
  for (int g = 0; g < 4; ++g)
    for (int i = 0; i < 4; ++i)
      acc[g][i] = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 4 <= n_pos; p += 4)
    for (int i = 0; i < 4; ++i) {
      const __m512 s = _mm512_set1_ps(scores[p + i]);
      const float *vp = v + (p + i) * ld;
      for (int g = 0; g < 4; ++g)
        if (g < groups)
          acc[g][i] = _mm512_fmadd_ps(
              s, _mm512_maskz_loadu_ps(m[g], vp + 16 * g), acc[g][i]);
    }
  for (; p < n_pos; ++p) {
    const __m512 s = _mm512_set1_ps(scores[p]);
    const float *vp = v + p * ld;
    for (int g = 0; g < 4; ++g)
      if (g < groups)
        acc[g][0] = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[g], vp + 16 * g),
                                    acc[g][0]);
  }
  for (int g = 0; g < 4; ++g)
    if (g < groups)
      _mm512_mask_storeu_ps(out + 16 * g, m[g],
                            _mm512_add_ps(_mm512_add_ps(acc[g][0], acc[g][1]),
                                          _mm512_add_ps(acc[g][2], acc[g][3])));
}

// R query rows of one head (see IsaKernels::attendHeads). Every row runs the
// one-row arithmetic in its order: scores in groups of eight positions then
// one by one, the softmax, then per 16 output columns four accumulators over
// positions p, p + 1, p + 2, p + 3 (+ 4 ...), the positions past the last
// group of four into the first, summed (0 + 1) + (2 + 3). The rows only
// share loads: the ranges every row covers run row by row inside each group
// of positions, so each K and V row comes from L1 for all but the first.
template <int R>
void attendBlock(const float *q, int64_t ldq, int64_t step, const float *k,
                 const float *v, int64_t ld, int64_t n_pos, int64_t head_dim,
                 float *scores, int64_t lds, float *out, int64_t ldo) {
  const float div =
      _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(static_cast<float>(head_dim))));
  const int64_t eFull = head_dim & ~int64_t(15);
  const __mmask16 eTail = firstLanes(head_dim - eFull);
  int64_t n[R];
  for (int r = 0; r < R; ++r)
    n[r] = n_pos + r * step; // row 0's is the fewest

  // Scores.
  const int64_t joint8 = n_pos & ~int64_t(7);
  for (int64_t p = 0; p < joint8; p += 8)
    for (int r = 0; r < R; ++r)
      scores8(q + r * ldq, k + p * ld, ld, eFull, eTail, div,
              scores + r * lds + p);
  for (int r = 0; r < R; ++r) {
    int64_t p = joint8;
    for (; p + 8 <= n[r]; p += 8)
      scores8(q + r * ldq, k + p * ld, ld, eFull, eTail, div,
              scores + r * lds + p);
    for (; p < n[r]; ++p)
      scores[r * lds + p] = score1(q + r * ldq, k + p * ld, head_dim, div);
    softmax(scores + r * lds, n[r]);
  }

  // Weighted sums of the V rows.
  if constexpr (R == 1) {
    if (head_dim <= 64) {
      weightedSum1(scores, v, ld, n_pos, head_dim, out);
      return;
    }
  }
  const int64_t joint4 = n_pos & ~int64_t(3);
  for (int64_t e = 0; e < head_dim; e += 16) {
    const __mmask16 m = firstLanes(minI(head_dim - e, 16));
    const float *ve = v + e;
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < 4; ++i)
        acc[r][i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < joint4; p += 4)
      for (int i = 0; i < 4; ++i) {
        const __m512 vv = _mm512_maskz_loadu_ps(m, ve + (p + i) * ld);
        for (int r = 0; r < R; ++r)
          acc[r][i] = _mm512_fmadd_ps(_mm512_set1_ps(scores[r * lds + p + i]),
                                      vv, acc[r][i]);
      }
    for (int r = 0; r < R; ++r) {
      const float *sr = scores + r * lds;
      int64_t p = joint4;
      for (; p + 4 <= n[r]; p += 4)
        for (int i = 0; i < 4; ++i)
          acc[r][i] = _mm512_fmadd_ps(
              _mm512_set1_ps(sr[p + i]),
              _mm512_maskz_loadu_ps(m, ve + (p + i) * ld), acc[r][i]);
      for (; p < n[r]; ++p)
        acc[r][0] =
            _mm512_fmadd_ps(_mm512_set1_ps(sr[p]),
                            _mm512_maskz_loadu_ps(m, ve + p * ld), acc[r][0]);
      _mm512_mask_storeu_ps(out + r * ldo + e, m,
                            _mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]),
                                          _mm512_add_ps(acc[r][2], acc[r][3])));
    }
  }
}

void attendHeads(const float *q, int64_t ldq, int64_t rows, int64_t step,
                 const float *k, const float *v, int64_t ld, int64_t n_pos,
                 int64_t head_dim, float *scores, int64_t lds, float *out,
                 int64_t ldo) {
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    const float *qr = q + r0 * ldq;
    float *sr = scores + r0 * lds, *orow = out + r0 * ldo;
    const int64_t n = n_pos + r0 * step;
    switch (minI(rows - r0, 4)) {
    case 1:
      attendBlock<1>(qr, ldq, step, k, v, ld, n, head_dim, sr, lds, orow, ldo);
      break;
    case 2:
      attendBlock<2>(qr, ldq, step, k, v, ld, n, head_dim, sr, lds, orow, ldo);
      break;
    case 3:
      attendBlock<3>(qr, ldq, step, k, v, ld, n, head_dim, sr, lds, orow, ldo);
      break;
    default:
      attendBlock<4>(qr, ldq, step, k, v, ld, n, head_dim, sr, lds, orow, ldo);
    }
  }
}

// attendHead over rows addressed one by one: the same arithmetic in the
// same order, so a full table gives bit-identical results. (A separate copy:
// sharing one template with attendHead measured a few percent slower on the
// strided path that llama decoding runs.)
void attendHeadRows(const float *q, const float *const *k,
                    const float *const *v, int64_t col, int64_t n_pos,
                    int64_t head_dim, float *scores, float *out) {
  const float div =
      _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(static_cast<float>(head_dim))));
  const int64_t eFull = head_dim & ~int64_t(15);
  const __mmask16 eTail = firstLanes(head_dim - eFull);

  // Scores, eight positions at a time so that one reduce8 finishes them.
  int64_t p = 0;
  for (; p + 8 <= n_pos; p += 8) {
    __m512 acc[8];
    for (int i = 0; i < 8; ++i)
      acc[i] = _mm512_setzero_ps();
    for (int64_t e = 0; e < eFull; e += 16) {
      const __m512 qv = _mm512_loadu_ps(q + e);
      for (int i = 0; i < 8; ++i)
        acc[i] =
            _mm512_fmadd_ps(_mm512_loadu_ps(k[p + i] + col + e), qv, acc[i]);
    }
    if (eTail) {
      const __m512 qv = _mm512_maskz_loadu_ps(eTail, q + eFull);
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm512_fmadd_ps(
            _mm512_maskz_loadu_ps(eTail, k[p + i] + col + eFull), qv, acc[i]);
    }
    _mm256_storeu_ps(scores + p,
                     _mm256_div_ps(reduce8(acc), _mm256_set1_ps(div)));
  }
  for (; p < n_pos; ++p) {
    const float *kp = k[p] + col;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t e = 0; e < head_dim; e += 16) {
      const __mmask16 m = firstLanes(minI(head_dim - e, 16));
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, kp + e),
                            _mm512_maskz_loadu_ps(m, q + e), acc);
    }
    scores[p] = _mm512_reduce_add_ps(acc) / div;
  }

  // Softmax over the scores.
  __m512 mx = _mm512_set1_ps(-__builtin_inff());
  for (p = 0; p < n_pos; p += 16) {
    const __mmask16 m = firstLanes(minI(n_pos - p, 16));
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, scores + p));
  }
  const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (p = 0; p < n_pos; p += 16) {
    const __mmask16 m = firstLanes(minI(n_pos - p, 16));
    const __m512 e =
        expPs(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + p), top));
    _mm512_mask_storeu_ps(scores + p, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  const __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
  for (p = 0; p < n_pos; p += 16) {
    const __mmask16 m = firstLanes(minI(n_pos - p, 16));
    _mm512_mask_storeu_ps(
        scores + p, m,
        _mm512_div_ps(_mm512_maskz_loadu_ps(m, scores + p), total));
  }

  // Weighted sum of the V rows, 16 columns at a time with four independent
  // accumulators over positions.
  for (int64_t e = 0; e < head_dim; e += 16) {
    const __mmask16 m = firstLanes(minI(head_dim - e, 16));
    __m512 acc[4];
    for (int i = 0; i < 4; ++i)
      acc[i] = _mm512_setzero_ps();
    for (p = 0; p + 4 <= n_pos; p += 4)
      for (int i = 0; i < 4; ++i)
        acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(scores[p + i]),
                                 _mm512_maskz_loadu_ps(m, v[p + i] + col + e),
                                 acc[i]);
    for (; p < n_pos; ++p)
      acc[0] =
          _mm512_fmadd_ps(_mm512_set1_ps(scores[p]),
                          _mm512_maskz_loadu_ps(m, v[p] + col + e), acc[0]);
    _mm512_mask_storeu_ps(out + e, m,
                          _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]),
                                        _mm512_add_ps(acc[2], acc[3])));
  }
}

void siluMul(const float *a, const float *b, float *y, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = firstLanes(minI(n - i, 16));
    const __m512 av = _mm512_maskz_loadu_ps(m, a + i);
    const __m512 e = expPs(_mm512_sub_ps(_mm512_setzero_ps(), av));
    const __m512 s = _mm512_div_ps(av, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, b + i)));
  }
}

void add(const float *a, const float *b, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(
        y + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  const __mmask16 m = firstLanes(n - i);
  _mm512_mask_storeu_ps(y + i, m,
                        _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i),
                                      _mm512_maskz_loadu_ps(m, b + i)));
}

void layerNormRow(const float *x, const float *w, const float *b, float *y,
                  int64_t D, float eps) {
  // Two passes over x, as in the portable path: the mean, then the sum of
  // squared deviations from it. Masked-off lanes load (and subtract to) zero.
  const float n = static_cast<float>(D);
  __m512 acc0 = _mm512_setzero_ps();
  __m512 acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= D; i += 32) {
    acc0 = _mm512_add_ps(acc0, _mm512_loadu_ps(x + i));
    acc1 = _mm512_add_ps(acc1, _mm512_loadu_ps(x + i + 16));
  }
  for (; i < D; i += 16)
    acc0 = _mm512_add_ps(
        acc0, _mm512_maskz_loadu_ps(firstLanes(minI(D - i, 16)), x + i));
  const float mean = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) / n;
  const __m512 mv = _mm512_set1_ps(mean);

  acc0 = _mm512_setzero_ps();
  acc1 = _mm512_setzero_ps();
  for (i = 0; i + 32 <= D; i += 32) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), mv);
    const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), mv);
    acc0 = _mm512_fmadd_ps(d0, d0, acc0);
    acc1 = _mm512_fmadd_ps(d1, d1, acc1);
  }
  for (; i < D; i += 16) {
    const __mmask16 m = firstLanes(minI(D - i, 16));
    const __m512 d =
        _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), mv);
    acc0 = _mm512_fmadd_ps(d, d, acc0);
  }
  const float var = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) / n;
  const float rstd = 1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(var + eps)));
  const __m512 scale = _mm512_set1_ps(rstd);
  for (i = 0; i < D; i += 16) {
    const __mmask16 m = firstLanes(minI(D - i, 16));
    const __m512 d = _mm512_mul_ps(
        _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv), scale);
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, w + i),
                                          _mm512_maskz_loadu_ps(m, b + i)));
  }
}

void geluTanh(const float *x, float *y, int64_t n) {
  // x / (1 + exp(-2u)) with -2u = x (c0 + c1 x^2), as in the portable path.
  // expPs saturates to +inf for very negative x, giving x / inf = -0.
  const __m512 c0 = _mm512_set1_ps(-2.0f * 0.7978845608028654f);
  const __m512 c1 = _mm512_set1_ps(-2.0f * 0.7978845608028654f * 0.044715f);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = firstLanes(minI(n - i, 16));
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 z =
        _mm512_mul_ps(v, _mm512_fmadd_ps(c1, _mm512_mul_ps(v, v), c0));
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_div_ps(v, _mm512_add_ps(one, expPs(z))));
  }
}

} // namespace

const IsaKernels kAvx512Kernels = {kMr,
                                   kNr,
                                   &packPanels,
                                   &packPanelsBf16,
                                   &packPanelsQ8,
                                   &packPanelsQ4,
                                   &packPanelsF16,
                                   &gemmBlock,
                                   &matvec,
                                   &matvecBf16,
                                   &matvecBlocksOf,
                                   &decodeBlocks,
                                   &matvecF16,
                                   &rmsNormRow,
                                   &ropeRow,
                                   &attendHeads,
                                   &attendHeadRows,
                                   &siluMul,
                                   &add,
                                   &layerNormRow,
                                   &geluTanh};

} // namespace loom::rt::cpu::detail
