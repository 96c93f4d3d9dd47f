// Portable leaf kernels: plain C++ for any x86-64, compiled with -O3 and no
// -march flags. Reductions are written with independent partial sums per
// lane: the compiler may not reassociate one float sum by itself, but it does
// vectorise loops over such lanes (SSE2 here).
#include "cpu/kernels_impl.h"
#include "loom/artifact_format.h"
#include "loom/ggml_blocks.h"

#include <algorithm>
#include <cmath>

namespace loom::rt::cpu::detail {
namespace {

constexpr int64_t kLanes = 16;

// A weight as f32: itself, or a bf16 value widened (it is the upper half of
// an f32, so widening is exact).
float widen(float w) { return w; }
float widen(uint16_t w) {
  const uint32_t bits = uint32_t(w) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

// Q8_0 weights addressed like an array of their values: element e of the
// blocks (loom/artifact_format.h), decoded on read.
struct Q8Values {
  const uint8_t *blocks;
  int64_t first = 0;
  float operator[](int64_t i) const { return q8Value(blocks, first + i); }
  Q8Values operator+(int64_t i) const { return {blocks, first + i}; }
};

// The same for Q4_0 weights.
struct Q4Values {
  const uint8_t *blocks;
  int64_t first = 0;
  float operator[](int64_t i) const { return q4Value(blocks, first + i); }
  Q4Values operator+(int64_t i) const { return {blocks, first + i}; }
};

// The same for IEEE halves.
struct F16Values {
  const uint16_t *halves;
  float operator[](int64_t i) const { return halfToFloat(halves[i]); }
  F16Values operator+(int64_t i) const { return {halves + i}; }
};

// `b` is a pointer to f32 or bf16 weights, or Q8Values / Q4Values /
// F16Values.
template <typename B> float dot(const float *a, B b, int64_t n) {
  float acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int64_t j = 0; j < kLanes; ++j)
      acc[j] += a[k + j] * widen(b[k + j]);
  for (int64_t j = 0; k + j < n; ++j)
    acc[j] += a[k + j] * widen(b[k + j]);
  for (int64_t w = kLanes / 2; w > 0; w /= 2)
    for (int64_t j = 0; j < w; ++j)
      acc[j] += acc[j + w];
  return acc[0];
}

// Sum of n values, with the same lane structure as dot().
float sum(const float *a, int64_t n) {
  float acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int64_t j = 0; j < kLanes; ++j)
      acc[j] += a[k + j];
  for (int64_t j = 0; k + j < n; ++j)
    acc[j] += a[k + j];
  for (int64_t w = kLanes / 2; w > 0; w /= 2)
    for (int64_t j = 0; j < w; ++j)
      acc[j] += acc[j + w];
  return acc[0];
}

// Sum of (a[i] - c)^2 over n values, lanes as in dot().
float sumSquaredDeviations(const float *a, float c, int64_t n) {
  float acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      const float d = a[k + j] - c;
      acc[j] += d * d;
    }
  for (int64_t j = 0; k + j < n; ++j) {
    const float d = a[k + j] - c;
    acc[j] += d * d;
  }
  for (int64_t w = kLanes / 2; w > 0; w /= 2)
    for (int64_t j = 0; j < w; ++j)
      acc[j] += acc[j + w];
  return acc[0];
}

// One token x 32 outputs: the 32 accumulators fill eight SSE registers and
// the compiler vectorises the loop over outputs. (GCC turns a multi-token tile
// with a short output loop into a slow k-vectorised loop instead.)
constexpr int64_t kMr = 1;
constexpr int64_t kNr = 32;

template <typename W>
void packPanelsOf(W w, int64_t ldw, int64_t n, int64_t kc, float *dst) {
  for (int64_t r0 = 0; r0 < n; r0 += kNr, dst += kc * kNr) {
    for (int64_t j = 0; j < kNr; ++j) {
      if (r0 + j < n) {
        const W src = w + (r0 + j) * ldw;
        for (int64_t k = 0; k < kc; ++k)
          dst[k * kNr + j] = widen(src[k]);
      } else {
        for (int64_t k = 0; k < kc; ++k)
          dst[k * kNr + j] = 0.0f;
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

void gemmBlock(const float *x, int64_t ldx, const float *panels, float *y,
               int64_t ldy, int64_t m, int64_t n, int64_t kc, bool accumulate) {
  // Panel-outer, tokens-inner: one panel (kc x 32 floats) stays in L1 while
  // the token rows stream past it.
  for (int64_t j0 = 0; j0 < n; j0 += kNr, panels += kc * kNr) {
    const int64_t nc = std::min(kNr, n - j0);
    for (int64_t t = 0; t < m; ++t) {
      const float *xt = x + t * ldx;
      float acc[kNr] = {};
      for (int64_t k = 0; k < kc; ++k) {
        const float *b = panels + k * kNr;
        const float a = xt[k];
        for (int64_t j = 0; j < kNr; ++j)
          acc[j] += a * b[j];
      }
      float *yt = y + t * ldy + j0;
      for (int64_t j = 0; j < nc; ++j)
        yt[j] = accumulate ? yt[j] + acc[j] : acc[j];
    }
  }
}

template <typename W>
void matvecOf(const float *x, W Wm, float *y, int64_t K, int64_t n,
              bool accumulate) {
  for (int64_t r = 0; r < n; ++r) {
    const float s = dot(x, Wm + r * K, K);
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
void matvecF16(const float *x, const uint16_t *W, float *y, int64_t K,
               int64_t n, bool accumulate) {
  matvecOf(x, F16Values{W}, y, K, n, accumulate);
}
// Block formats: each block decoded (ggml_blocks.h) and summed into dot()'s
// lanes in dot()'s order (blocks are whole multiples of the 16 lanes): bit
// for bit dot() over the decoded row.
constexpr ggml::BlockType kBlockTypes[] = {
    ggml::BlockType::Q8_0, ggml::BlockType::Q4_0, ggml::BlockType::Q2_K,
    ggml::BlockType::Q3_K, ggml::BlockType::Q4_K, ggml::BlockType::Q5_K,
    ggml::BlockType::Q6_K};
void decodeBlocks(BlockKind kind, const uint8_t *blocks, int64_t count,
                  float *dst) {
  const int k = static_cast<int>(kind);
  for (int64_t b = 0; b < count; ++b)
    ggml::decodeBlock(kBlockTypes[k], blocks + b * kBlockBytes[k],
                      dst + b * kBlockValues[k]);
}
void matvecBlocks(BlockKind kind, const float *x, const uint8_t *W, float *y,
                  int64_t K, int64_t n, bool accumulate) {
  const int k = static_cast<int>(kind);
  const int64_t values = kBlockValues[k], blocks = K / values;
  float w[ggml::kSuperBlock];
  for (int64_t r = 0; r < n; ++r) {
    float acc[kLanes] = {};
    for (int64_t b = 0; b < blocks; ++b) {
      ggml::decodeBlock(kBlockTypes[k], W + (r * blocks + b) * kBlockBytes[k],
                        w);
      const float *xb = x + b * values;
      for (int64_t e = 0; e < values; e += kLanes)
        for (int64_t j = 0; j < kLanes; ++j)
          acc[j] += xb[e + j] * w[e + j];
    }
    for (int64_t h = kLanes / 2; h > 0; h /= 2)
      for (int64_t j = 0; j < h; ++j)
        acc[j] += acc[j + h];
    y[r] = accumulate ? y[r] + acc[0] : acc[0];
  }
}

void rmsNormRow(const float *x, const float *w, float *y, int64_t D,
                float eps) {
  const float ss = 1.0f / std::sqrt(dot(x, x, D) / static_cast<float>(D) + eps);
  for (int64_t i = 0; i < D; ++i)
    y[i] = w[i] * (ss * x[i]);
}

void ropeRow(float *x, int64_t cols, int64_t head_dim, const float *cosT,
             const float *sinT) {
  // Bit-identical to the AVX-512 path only while the compiler cannot fuse
  // these products and sums into FMAs, which holds because this file is built
  // for baseline x86-64 (no -mfma, no -march).
  for (int64_t h0 = 0; h0 < cols; h0 += head_dim) {
    float *xh = x + h0;
    const int64_t n = std::min(head_dim, cols - h0);
    for (int64_t e = 0; e < n; e += 2) {
      const float x0 = xh[e];
      const float x1 = xh[e + 1];
      xh[e] = x0 * cosT[e] + x1 * sinT[e];
      xh[e + 1] = x1 * cosT[e + 1] + x0 * sinT[e + 1];
    }
  }
}

void attendHead(const float *q, const float *k, const float *v, int64_t ld,
                int64_t n_pos, int64_t head_dim, float *scores, float *out);

// Row by row: the portable kernels share no loads.
void attendHeads(const float *q, int64_t ldq, int64_t rows, int64_t step,
                 const float *k, const float *v, int64_t ld, int64_t n_pos,
                 int64_t head_dim, float *scores, int64_t lds, float *out,
                 int64_t ldo) {
  for (int64_t r = 0; r < rows; ++r)
    attendHead(q + r * ldq, k, v, ld, n_pos + r * step, head_dim,
               scores + r * lds, out + r * ldo);
}

void attendHead(const float *q, const float *k, const float *v, int64_t ld,
                int64_t n_pos, int64_t head_dim, float *scores, float *out) {
  const float div = std::sqrt(static_cast<float>(head_dim));
  float mx = -INFINITY;
  for (int64_t p = 0; p < n_pos; ++p) {
    scores[p] = dot(q, k + p * ld, head_dim) / div;
    mx = std::max(mx, scores[p]);
  }
  float sum = 0.0f;
  for (int64_t p = 0; p < n_pos; ++p) {
    scores[p] = std::exp(scores[p] - mx);
    sum += scores[p];
  }
  for (int64_t p = 0; p < n_pos; ++p)
    scores[p] /= sum;
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t p = 0; p < n_pos; ++p) {
    const float *vr = v + p * ld;
    const float s = scores[p];
    for (int64_t i = 0; i < head_dim; ++i)
      out[i] += s * vr[i];
  }
}

// attendHead over rows addressed one by one: the same arithmetic in the
// same order, so a full table gives bit-identical results.
void attendHeadRows(const float *q, const float *const *k,
                    const float *const *v, int64_t col, int64_t n_pos,
                    int64_t head_dim, float *scores, float *out) {
  const float div = std::sqrt(static_cast<float>(head_dim));
  float mx = -INFINITY;
  for (int64_t p = 0; p < n_pos; ++p) {
    scores[p] = dot(q, k[p] + col, head_dim) / div;
    mx = std::max(mx, scores[p]);
  }
  float sum = 0.0f;
  for (int64_t p = 0; p < n_pos; ++p) {
    scores[p] = std::exp(scores[p] - mx);
    sum += scores[p];
  }
  for (int64_t p = 0; p < n_pos; ++p)
    scores[p] /= sum;
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t p = 0; p < n_pos; ++p) {
    const float *vr = v[p] + col;
    const float s = scores[p];
    for (int64_t i = 0; i < head_dim; ++i)
      out[i] += s * vr[i];
  }
}

void siluMul(const float *a, const float *b, float *y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float av = a[i];
    y[i] = av / (1.0f + std::exp(-av)) * b[i];
  }
}

void add(const float *a, const float *b, float *y, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    y[i] = a[i] + b[i];
}

void layerNormRow(const float *x, const float *w, const float *b, float *y,
                  int64_t D, float eps) {
  // Two passes (mean, then squared deviations) rather than E[x^2] - mean^2,
  // which cancels badly when |mean| is large against the spread.
  const float n = static_cast<float>(D);
  const float mean = sum(x, D) / n;
  const float var = sumSquaredDeviations(x, mean, D) / n;
  const float rstd = 1.0f / std::sqrt(var + eps);
  for (int64_t i = 0; i < D; ++i)
    y[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

// 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)); -2u = x (kGelu0 + kGelu1 x^2).
constexpr float kGelu0 = -2.0f * 0.7978845608028654f; // -2 sqrt(2/pi)
constexpr float kGelu1 = kGelu0 * 0.044715f;

void geluTanh(const float *x, float *y, int64_t n) {
  // exp(+large) = inf gives x / inf = -0 for very negative x, the limit.
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = v / (1.0f + std::exp(v * (kGelu0 + kGelu1 * (v * v))));
  }
}

} // namespace

const IsaKernels kPortableKernels = {kMr,
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
