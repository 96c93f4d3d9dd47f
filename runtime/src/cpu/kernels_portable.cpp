// Portable leaf kernels: plain C++ for any x86-64, compiled with -O3 and no
// -march flags. Reductions are written with independent partial sums per
// lane: the compiler may not reassociate one float sum by itself, but it does
// vectorise loops over such lanes (SSE2 here). Most of them are in
// kernels_generic.inc, which the AVX2 table compiles again.
#include "cpu/kernels_impl.h"
#include "loom/artifact_format.h"
#include "loom/ggml_blocks.h"

#include <algorithm>
#include <cmath>

namespace loom::rt::cpu::detail {
namespace {

// One token x 32 outputs: the 32 accumulators fill eight SSE registers and
// the compiler vectorises the loop over outputs. (GCC turns a multi-token tile
// with a short output loop into a slow k-vectorised loop instead.)
constexpr int64_t kMr = 1;
constexpr int64_t kNr = 32;

#include "cpu/kernels_generic.inc"

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
