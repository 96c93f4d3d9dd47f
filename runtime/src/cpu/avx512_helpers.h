// Helpers shared by the AVX-512 kernel files (kernels_avx512.cpp,
// kernels_avx512bf16.cpp). Include only from files compiled with the
// AVX-512 flags; everything here is internal to each of them.
#ifndef LOOM_RUNTIME_CPU_AVX512_HELPERS_H
#define LOOM_RUNTIME_CPU_AVX512_HELPERS_H

#include <cstdint>

// GCC 12 reports its own _mm512_undefined_ps() (used inside many intrinsics)
// as uninitialised once inlined (GCC PR 105593); silence that for the header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace loom::rt::cpu::detail {
namespace {

int64_t minI(int64_t a, int64_t b) { return a < b ? a : b; }

// Lanes [0, n) for 0 <= n <= 16.
__mmask16 firstLanes(int64_t n) {
  return static_cast<__mmask16>((1u << static_cast<unsigned>(n)) - 1u);
}

// In-register transpose of a 16 x 16 block: afterwards r[j] holds what was
// column j.
void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // Lane L of s[4g + c] holds rows 4g..4g+3 of column 4L + c.
  __m512 s[16];
  for (int g = 0; g < 4; ++g) {
    s[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    s[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    s[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    s[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 u0 = _mm512_shuffle_f32x4(s[c], s[4 + c], 0x88);
    const __m512 u1 = _mm512_shuffle_f32x4(s[c], s[4 + c], 0xDD);
    const __m512 u2 = _mm512_shuffle_f32x4(s[8 + c], s[12 + c], 0x88);
    const __m512 u3 = _mm512_shuffle_f32x4(s[8 + c], s[12 + c], 0xDD);
    r[c] = _mm512_shuffle_f32x4(u0, u2, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(u1, u3, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
    r[12 + c] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
  }
}

// The GEMM micro-tiles' epilogue: rows [0, rows) of a tile of accumulators
// (two vectors, 32 outputs, per row) to y (row stride ldy), its first `cols`
// columns, adding what y holds when accumulate.
void storeTile(__m512 (*c)[2], int64_t rows, float *y, int64_t ldy,
               int64_t cols, bool accumulate) {
  const __mmask16 m0 = firstLanes(minI(cols, 16));
  const __mmask16 m1 = cols > 16 ? firstLanes(minI(cols - 16, 16)) : 0;
  for (int64_t i = 0; i < rows; ++i) {
    float *yr = y + i * ldy;
    if (accumulate) {
      c[i][0] = _mm512_add_ps(c[i][0], _mm512_maskz_loadu_ps(m0, yr));
      c[i][1] = _mm512_add_ps(c[i][1], _mm512_maskz_loadu_ps(m1, yr + 16));
    }
    _mm512_mask_storeu_ps(yr, m0, c[i][0]);
    _mm512_mask_storeu_ps(yr + 16, m1, c[i][1]);
  }
}

} // namespace
} // namespace loom::rt::cpu::detail

#endif // LOOM_RUNTIME_CPU_AVX512_HELPERS_H
