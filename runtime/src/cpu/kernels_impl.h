// Internal interface between the kernel dispatcher (kernels.cpp) and the
// ISA implementations (kernels_portable.cpp, kernels_avx2.cpp,
// kernels_avx512.cpp).
//
// Each ISA provides only leaf routines over raw pointers. Threading, blocking
// and scratch memory live in kernels.cpp, which is compiled without ISA flags.
// This split is what keeps the AVX-512 file safe on older CPUs: if it used TBB
// or standard-library templates, it would emit out-of-line copies of inline
// functions (compiled with AVX-512) that the linker may pick for every caller,
// including the portable path. kernels_avx512.cpp therefore includes nothing
// but <immintrin.h> and this header, and keeps its helpers in an anonymous
// namespace.
#ifndef LOOM_RUNTIME_CPU_KERNELS_IMPL_H
#define LOOM_RUNTIME_CPU_KERNELS_IMPL_H

#include <cstdint>

namespace loom::rt::cpu::detail {

// Q8_0's block (kQ8Block, kQ8BlockBytes of loom/artifact_format.h, which
// the AVX-512 file may not include; kernels.cpp checks they agree).
constexpr int64_t kQ8Values = 32;
constexpr int64_t kQ8Bytes = 34;
constexpr int64_t kQ4Bytes = 18;

// ggml's block formats the kernels read (loom/ggml_blocks.h, which
// kernels.cpp checks these against): blocks of kBlockValues[kind] values in
// kBlockBytes[kind] bytes.
enum class BlockKind { Q8_0, Q4_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K };
constexpr int64_t kBlockValues[] = {32, 32, 256, 256, 256, 256, 256};
constexpr int64_t kBlockBytes[] = {34, 18, 84, 110, 144, 176, 210};
constexpr int64_t kKValues = 256; // the K formats' block

struct IsaKernels {
  // GEMM micro-tile: the leaf computes `mr` tokens x `nr` outputs at a time.
  int64_t mr;
  int64_t nr;

  // Packs rows [0, n) of W (row stride ldw), columns [0, kc), into
  // ceil(n / nr) panels laid out [kc][nr] one after the other, so that the
  // micro-kernel reads nr consecutive outputs' weights for one k as one
  // contiguous vector. Rows n.. of the last panel are zero.
  void (*packPanels)(const float *W, int64_t ldw, int64_t n, int64_t kc,
                     float *dst);
  // The same from bf16 weights, widened (the same panels as packPanels of
  // the widened matrix).
  void (*packPanelsBf16)(const uint16_t *W, int64_t ldw, int64_t n, int64_t kc,
                         float *dst);
  // The same from Q8_0 blocks, decoded: rows [0, n) of a matrix of K
  // columns whose blocks start at W, columns [k0, k0 + kc).
  void (*packPanelsQ8)(const uint8_t *W, int64_t K, int64_t k0, int64_t n,
                       int64_t kc, float *dst);
  // The same from Q4_0 blocks.
  void (*packPanelsQ4)(const uint8_t *W, int64_t K, int64_t k0, int64_t n,
                       int64_t kc, float *dst);
  // The same from IEEE halves (row stride ldw), widened exactly.
  void (*packPanelsF16)(const uint16_t *W, int64_t ldw, int64_t n, int64_t kc,
                        float *dst);

  // y[t, j] (+)= sum_{k < kc} x[t, k] * Wpanel[k][j] for t < m, j < n, with
  // the panels produced by packPanels(.., n, kc, panels).
  void (*gemmBlock)(const float *x, int64_t ldx, const float *panels, float *y,
                    int64_t ldy, int64_t m, int64_t n, int64_t kc,
                    bool accumulate);

  // Matrix-vector product streaming W once: y[r] (+)= W[r, :] . x, r < n.
  void (*matvec)(const float *x, const float *W, float *y, int64_t K, int64_t n,
                 bool accumulate);
  // The same over bf16 weights, widened in registers: bit for bit matvec's
  // result on the widened matrix, reading half the bytes.
  void (*matvecBf16)(const float *x, const uint16_t *W, float *y, int64_t K,
                     int64_t n, bool accumulate);
  // The same over blocks of `kind` (rows [0, n) of a matrix of K columns,
  // rows whole blocks), decoded in registers as ggml_blocks.h decodes
  // them: bit for bit matvec's result on the decoded matrix.
  void (*matvecBlocks)(BlockKind kind, const float *x, const uint8_t *W,
                       float *y, int64_t K, int64_t n, bool accumulate);
  // Decodes `count` consecutive blocks of `kind` into count *
  // kBlockValues[kind] floats, the same values (the GEMM packs decoded rows,
  // the embedding copies them).
  void (*decodeBlocks)(BlockKind kind, const uint8_t *blocks, int64_t count,
                       float *dst);
  // The same over IEEE halves, widened in registers.
  void (*matvecF16)(const float *x, const uint16_t *W, float *y, int64_t K,
                    int64_t n, bool accumulate);

  // One row of RMSNorm.
  void (*rmsNormRow)(const float *x, const float *w, float *y, int64_t D,
                     float eps);

  // Rotates the first `cols` values of one row, head by head. cosT and sinT
  // hold head_dim values each, expanded per element: cosT[2i] = cosT[2i+1] =
  // cos(angle_i), sinT[2i] = -sin(angle_i), sinT[2i+1] = sin(angle_i), so that
  // x'[e] = x[e] * cosT[e] + x[e ^ 1] * sinT[e] for every element e. Every ISA
  // evaluate exactly that (two rounded products, one rounded sum, never a
  // fused multiply-add), which makes their results bit-identical.
  void (*ropeRow)(float *x, int64_t cols, int64_t head_dim, const float *cosT,
                  const float *sinT);

  // Query rows r < rows of one head (row r at q + r * ldq) over cache
  // positions [0, n_pos + r * step) (step 1: consecutive causal rows; 0:
  // every row sees the same positions): k and v point at the head's first
  // column in the cache, rows ld apart. scores is scratch of `rows` rows of
  // lds >= n_pos + (rows - 1) * step floats; row r's head_dim outputs go to
  // out + r * ldo. Each row's result is bit for bit the one of a call with
  // rows = 1: rows only share the loads of K and V.
  void (*attendHeads)(const float *q, int64_t ldq, int64_t rows, int64_t step,
                      const float *k, const float *v, int64_t ld, int64_t n_pos,
                      int64_t head_dim, float *scores, int64_t lds, float *out,
                      int64_t ldo);

  // One row of attendHeads over rows addressed one by one: position p's key is
  // k[p] + col and its value v[p] + col (a recurrent-depth model's cache
  // gathers rows from several per-iteration caches).
  void (*attendHeadRows)(const float *q, const float *const *k,
                         const float *const *v, int64_t col, int64_t n_pos,
                         int64_t head_dim, float *scores, float *out);

  // Elementwise over n values; y may alias a or b.
  void (*siluMul)(const float *a, const float *b, float *y, int64_t n);
  void (*add)(const float *a, const float *b, float *y, int64_t n);

  // One row of LayerNorm: y = (x - mean) / sqrt(var + eps) * w + b with the
  // population variance, computed in two passes over x (mean, then the sum
  // of squared deviations); y may alias x.
  void (*layerNormRow)(const float *x, const float *w, const float *b, float *y,
                       int64_t D, float eps);

  // Elementwise tanh-approximated GELU over n values; y may alias x. Every
  // ISA evaluates it as x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3),
  // which equals 0.5 x (1 + tanh(u)) but does not cancel for negative x.
  void (*geluTanh)(const float *x, float *y, int64_t n);
};

// GEMM with bf16 operands and f32 accumulation (AVX512_BF16's vdpbf16ps,
// which adds two bf16 products per f32 lane), for matrices of bf16 weights
// in steps of more than kBf16F32ActivationRows rows.
struct Bf16DotKernels {
  int64_t mr;
  int64_t nr;
  // Packs rows [0, n) of bf16 W (row stride ldw), columns [0, kc), into
  // ceil(n / nr) panels of ceil(kc / 2) k pairs: pair p of a panel holds its
  // nr outputs' weights (k, k + 1) = (2p, 2p + 1), one 32-bit element each
  // (k in the low half); zeros past n and past kc.
  void (*packPairs)(const uint16_t *W, int64_t ldw, int64_t n, int64_t kc,
                    uint32_t *dst);
  // x rows [0, m), columns [0, kc), rounded to bf16 (nearest even) as
  // ceil(kc / 2) k pairs per row (rows ceil(kc / 2) apart; zero past kc).
  void (*roundRows)(const float *x, int64_t ldx, int64_t m, int64_t kc,
                    uint32_t *dst);
  // y[t, j] (+)= sum_k x[t, k] * W[j, k] for t < m, j < n over kc values of
  // k, from roundRows' x and packPairs' panels.
  void (*gemmBlock)(const uint32_t *x, int64_t m, const uint32_t *panels,
                    int64_t n, int64_t kc, float *y, int64_t ldy,
                    bool accumulate);
};

extern const IsaKernels kPortableKernels;
// Must only be called after detectIsa() returned Isa::Avx2 or Isa::Avx512.
extern const IsaKernels kAvx2Kernels;
// Must only be called after detectIsa() returned Isa::Avx512.
extern const IsaKernels kAvx512Kernels;
// Must only be called after cpuHasAvx512Bf16() returned true.
extern const Bf16DotKernels kAvx512Bf16Kernels;

} // namespace loom::rt::cpu::detail

#endif // LOOM_RUNTIME_CPU_KERNELS_IMPL_H
