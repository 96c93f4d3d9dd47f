// GEMM with bf16 operands and f32 accumulation on AVX512_BF16 (vdpbf16ps).
// CMake compiles this file with the AVX-512 flags plus -mavx512bf16;
// kernels.cpp only calls into it after cpuHasAvx512Bf16(). Like
// kernels_avx512.cpp it includes nothing but <immintrin.h> (through
// avx512_helpers.h) and kernels_impl.h and keeps its helpers in an anonymous
// namespace.
#include "cpu/avx512_helpers.h"
#include "cpu/kernels_impl.h"

namespace loom::rt::cpu::detail {
namespace {

// 8 tokens x 32 outputs, as the f32 micro-kernel: 16 zmm accumulators; each
// k pair loads two panel vectors and broadcasts eight token pairs.
constexpr int64_t kMr = 8;
constexpr int64_t kNr = 32;

// Lanes [0, n) for 0 <= n <= 32 (16-bit lanes).
__mmask32 firstLanes32(int64_t n) {
  return n >= 32
             ? ~__mmask32(0)
             : static_cast<__mmask32>((1u << static_cast<unsigned>(n)) - 1u);
}

void packPairs(const uint16_t *W, int64_t ldw, int64_t n, int64_t kc,
               uint32_t *dst) {
  const int64_t pairs = (kc + 1) / 2;
  for (int64_t r0 = 0; r0 < n; r0 += kNr, dst += pairs * kNr) {
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t rb = r0 + 16 * half;
      const int64_t rows = n - rb;
      // 16 rows x 16 k pairs (32 bf16 values, one zmm per row) at a time.
      for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
        const __mmask32 m = firstLanes32(minI(32, kc - 2 * p0));
        // The transpose moves 32-bit elements, here k pairs, whole.
        __m512 v[16];
        for (int64_t i = 0; i < 16; ++i)
          v[i] = i < rows ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(
                                m, W + (rb + i) * ldw + 2 * p0))
                          : _mm512_setzero_ps();
        transpose16(v);
        for (int64_t j = 0; j < minI(16, pairs - p0); ++j)
          _mm512_storeu_ps(dst + (p0 + j) * kNr + 16 * half, v[j]);
      }
    }
  }
}

void roundRows(const float *x, int64_t ldx, int64_t m, int64_t kc,
               uint32_t *dst) {
  const int64_t pairs = (kc + 1) / 2;
  for (int64_t t = 0; t < m; ++t) {
    const float *xt = x + t * ldx;
    uint32_t *dt = dst + t * pairs;
    for (int64_t k = 0; k < kc; k += 32) {
      const int64_t n = minI(32, kc - k);
      const __m512 lo = _mm512_maskz_loadu_ps(firstLanes(minI(n, 16)), xt + k);
      const __m512 hi =
          _mm512_maskz_loadu_ps(firstLanes(n > 16 ? n - 16 : 0), xt + k + 16);
      const __m512i b = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
      _mm512_mask_storeu_epi32(dt + k / 2, firstLanes((n + 1) / 2), b);
    }
  }
}

// One kMr x kNr tile over `pairs` k pairs. Rows past `rows` repeat the last
// valid row; their results are not stored.
void microTile(const uint32_t *x, int64_t rows, const uint32_t *panel,
               int64_t pairs, float *y, int64_t ldy, int64_t cols,
               bool accumulate) {
  const uint32_t *a[kMr];
  for (int64_t i = 0; i < kMr; ++i)
    a[i] = x + minI(i, rows - 1) * pairs;
  __m512 c[kMr][2];
  for (int64_t i = 0; i < kMr; ++i)
    c[i][0] = c[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 =
        reinterpret_cast<__m512bh>(_mm512_loadu_si512(panel + p * kNr));
    const __m512bh b1 =
        reinterpret_cast<__m512bh>(_mm512_loadu_si512(panel + p * kNr + 16));
    for (int64_t i = 0; i < kMr; ++i) {
      const __m512bh av = reinterpret_cast<__m512bh>(
          _mm512_set1_epi32(static_cast<int>(a[i][p])));
      c[i][0] = _mm512_dpbf16_ps(c[i][0], av, b0);
      c[i][1] = _mm512_dpbf16_ps(c[i][1], av, b1);
    }
  }
  storeTile(c, rows, y, ldy, cols, accumulate);
}

void gemmBlock(const uint32_t *x, int64_t m, const uint32_t *panels, int64_t n,
               int64_t kc, float *y, int64_t ldy, bool accumulate) {
  // Panel-outer, tokens-inner, as the f32 GEMM.
  const int64_t pairs = (kc + 1) / 2;
  for (int64_t j0 = 0; j0 < n; j0 += kNr, panels += pairs * kNr)
    for (int64_t t0 = 0; t0 < m; t0 += kMr)
      microTile(x + t0 * pairs, minI(kMr, m - t0), panels, pairs,
                y + t0 * ldy + j0, ldy, minI(kNr, n - j0), accumulate);
}

} // namespace

const Bf16DotKernels kAvx512Bf16Kernels = {kMr, kNr, &packPairs, &roundRows,
                                           &gemmBlock};

} // namespace loom::rt::cpu::detail
