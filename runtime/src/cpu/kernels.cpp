// Kernel entry points: ISA detection and selection, threading, blocking and
// scratch memory. The arithmetic is in the leaf kernels of
// kernels_portable.cpp, kernels_avx2.cpp and kernels_avx512.cpp (see
// kernels_impl.h).
#include "cpu/kernels.h"
#include "cpu/kernels_impl.h"
#include "loom/artifact_format.h"
#include "loom/ggml_blocks.h"

#include <tbb/blocked_range.h>
#include <tbb/cache_aligned_allocator.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace loom::rt::cpu {
namespace {

// Below about this many multiply-adds (or elements, for elementwise kernels)
// a kernel runs on the calling thread: handing work to TBB costs a few
// microseconds, more than the work itself.
constexpr int64_t kSerialWork = int64_t(1) << 15;

// Prefill GEMM blocking. A K block of 256 keeps one packed panel of 256 x 32
// floats (32 KiB) in L1 while the token rows stream past it; a task's packed
// weights (at most 256 outputs x 256 k, 256 KiB) and token rows (128 x 256,
// 128 KiB) stay in L2.
constexpr int64_t kKc = 256;
constexpr int64_t kMaxMc = 128;
constexpr int64_t kMinMc = 32;
constexpr int64_t kMaxNb = 256;

// Attention: query rows per task (IsaKernels::attendHeads).
constexpr int64_t kAttnRows = 4;

// Decode matvec: rows of W are handed out in groups of 16 so that every
// thread runs the 8-row kernel on full groups.
constexpr int64_t kRowGroup = 16;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t roundUp(int64_t a, int64_t b) { return ceilDiv(a, b) * b; }

// Items per chunk so that a chunk does at least kSerialWork, for items of
// `work` multiply-adds or elements each.
int64_t grainFor(int64_t work) {
  return std::max<int64_t>(1, kSerialWork / std::max<int64_t>(1, work));
}

// Runs f(begin, end) over [0, n): in one call on this thread when n <= grain,
// otherwise split by TBB into chunks of at least `grain`.
template <typename F> void forRange(int64_t n, int64_t grain, const F &f) {
  if (n <= 0)
    return;
  if (n <= grain) {
    f(int64_t(0), n);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, n, grain),
      [&](const tbb::blocked_range<int64_t> &r) { f(r.begin(), r.end()); });
}

// Per-thread scratch (packed weights, attention scores). Leaf kernels never
// call back into TBB, so a thread cannot start a second user of its buffer
// while the first still holds it.
float *threadScratch(int64_t n) {
  thread_local std::vector<float, tbb::cache_aligned_allocator<float>> buffer;
  if (static_cast<int64_t>(buffer.size()) < n)
    buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}

static_assert(detail::kQ8Values == kQ8Block &&
                  detail::kQ8Bytes == kQ8BlockBytes &&
                  detail::kQ4Bytes == kQ4BlockBytes,
              "the kernels' Q8_0 block is the format's");

// The block format of block-encoded weights (Weights::blockEncoded).
detail::BlockKind blockKindOf(Weights W) {
  switch (W.encoding) {
  case Weights::Encoding::Q8_0:
    return detail::BlockKind::Q8_0;
  case Weights::Encoding::Q4_0:
    return detail::BlockKind::Q4_0;
  case Weights::Encoding::Q2_K:
    return detail::BlockKind::Q2_K;
  case Weights::Encoding::Q3_K:
    return detail::BlockKind::Q3_K;
  case Weights::Encoding::Q4_K:
    return detail::BlockKind::Q4_K;
  case Weights::Encoding::Q5_K:
    return detail::BlockKind::Q5_K;
  default:
    return detail::BlockKind::Q6_K;
  }
}

constexpr bool sameBlock(detail::BlockKind kind, ggml::BlockType type) {
  return detail::kBlockValues[int(kind)] == ggml::blockFormat(type).values &&
         detail::kBlockBytes[int(kind)] == ggml::blockFormat(type).bytes;
}
static_assert(sameBlock(detail::BlockKind::Q8_0, ggml::BlockType::Q8_0) &&
                  sameBlock(detail::BlockKind::Q4_0, ggml::BlockType::Q4_0) &&
                  sameBlock(detail::BlockKind::Q2_K, ggml::BlockType::Q2_K) &&
                  sameBlock(detail::BlockKind::Q3_K, ggml::BlockType::Q3_K) &&
                  sameBlock(detail::BlockKind::Q4_K, ggml::BlockType::Q4_K) &&
                  sameBlock(detail::BlockKind::Q5_K, ggml::BlockType::Q5_K) &&
                  sameBlock(detail::BlockKind::Q6_K, ggml::BlockType::Q6_K) &&
                  detail::kKValues == ggml::kSuperBlock,
              "the kernels' blocks are the formats'");

int64_t blockValues(Weights W) {
  return detail::kBlockValues[static_cast<int>(blockKindOf(W))];
}
int64_t blockBytes(Weights W) {
  return detail::kBlockBytes[static_cast<int>(blockKindOf(W))];
}

// The blocks of row `row` of block-encoded weights with K columns.
const uint8_t *quantRows(Weights W, int64_t row, int64_t K) {
  return static_cast<const uint8_t *>(W.data) +
         row * (K / blockValues(W)) * blockBytes(W);
}

// dst[r * kc + k] = W[r, k0 + k] for r < n, k < kc: rows [0, n) of
// block-encoded weights with K columns (blocks from `rows`), decoded by the
// ISA's decodeBlocks for packPanels. k0 and kc are whole blocks.
void decodeRows(const detail::IsaKernels &ik, Weights W, const uint8_t *rows,
                int64_t K, int64_t k0, int64_t n, int64_t kc, float *dst) {
  const int64_t values = blockValues(W), bytes = blockBytes(W);
  const int64_t rowBytes = K / values * bytes;
  for (int64_t r = 0; r < n; ++r)
    ik.decodeBlocks(blockKindOf(W), rows + r * rowBytes + k0 / values * bytes,
                    kc / values, dst + r * kc);
}

const detail::IsaKernels &kernels();

// dst[0..n) = the f32 values of table's elements [first, first + n).
void widenRow(Weights table, int64_t first, int64_t n, float *dst) {
  if (table.f16()) {
    const auto *h = static_cast<const uint16_t *>(table.data) + first;
    for (int64_t i = 0; i < n; ++i)
      dst[i] = halfToFloat(h[i]);
    return;
  }
  if (table.blockEncoded()) {
    // Rows are whole blocks, so `first` and `n` are too.
    const int64_t values = blockValues(table);
    kernels().decodeBlocks(blockKindOf(table),
                           static_cast<const uint8_t *>(table.data) +
                               first / values * blockBytes(table),
                           n / values, dst);
    return;
  }
  if (!table.bf16()) {
    std::memcpy(dst, static_cast<const float *>(table.data) + first,
                sizeof(float) * size_t(n));
    return;
  }
  const uint16_t *src = static_cast<const uint16_t *>(table.data) + first;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = uint32_t(src[i]) << 16;
    std::memcpy(dst + i, &bits, sizeof bits);
  }
}

// v rounded to the nearest bf16 (ties to even), as an f32: what
// vcvtne2ps2bf16 makes of it (a NaN stays a NaN, a subnormal becomes a zero
// of its sign). (vdpbf16ps also reads subnormal bf16 weights as zero, which
// the f32 micro-kernel does not: the two paths can differ by such products.)
float roundToBf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  if ((bits & 0x7f800000u) == 0)
    bits &= 0x80000000u;
  else if ((bits & 0x7fffffffu) > 0x7f800000u)
    bits |= 0x00400000u; // quiet NaN: truncation cannot make it infinite
  else
    bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

bool cpuHasAvx512();
bool cpuHasAvx2();

// AVX512_BF16 (cpuid leaf 7, subleaf 1, EAX bit 5), on top of AVX-512.
bool cpuHasAvx512Bf16() {
  static const bool has = [] {
    unsigned eax, ebx, ecx, edx;
    return cpuHasAvx512() && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) &&
           (eax & (1u << 5)) != 0;
  }();
  return has;
}

bool cpuHasAvx512() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
    return false;
  // kernels_avx512.cpp is also compiled with -mfma and -mavx2, so the
  // compiler may use those instructions there too.
  if (!(ecx & bit_OSXSAVE) || !(ecx & bit_FMA))
    return false;
  // The OS must save SSE, AVX, opmask and both halves of the zmm state
  // (XCR0 bits 1, 2, 5, 6, 7) or zmm registers get lost on context switches.
  uint32_t xcr0, xcr0High;
  __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(xcr0High) : "c"(0));
  constexpr uint32_t kZmmState = 0xE6;
  if ((xcr0 & kZmmState) != kZmmState)
    return false;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
    return false;
  constexpr unsigned kNeeded =
      bit_AVX2 | bit_AVX512F | bit_AVX512DQ | bit_AVX512BW | bit_AVX512VL;
  return (ebx & kNeeded) == kNeeded;
}

// AVX2 with FMA and F16C (the AVX2 table uses all three), and the OS
// saving the ymm state (XCR0 bits 1 and 2).
bool cpuHasAvx2() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
    return false;
  if (!(ecx & bit_OSXSAVE) || !(ecx & bit_FMA) || !(ecx & bit_F16C) ||
      !(ecx & bit_AVX))
    return false;
  uint32_t xcr0, xcr0High;
  __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(xcr0High) : "c"(0));
  if ((xcr0 & 0x6u) != 0x6u)
    return false;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
    return false;
  return (ebx & bit_AVX2) != 0;
}

std::atomic<Isa> &activeSlot() {
  static std::atomic<Isa> isa{[] {
    Isa cap = Isa::Avx512;
    if (const char *env = std::getenv("LOOM_ISA")) {
      if (std::strcmp(env, "portable") == 0)
        cap = Isa::Portable;
      else if (std::strcmp(env, "avx2") == 0)
        cap = Isa::Avx2;
    }
    return std::min(cap, detectIsa());
  }()};
  return isa;
}

const detail::IsaKernels &kernels() {
  switch (activeIsa()) {
  case Isa::Avx512:
    return detail::kAvx512Kernels;
  case Isa::Avx2:
    return detail::kAvx2Kernels;
  case Isa::Portable:
    break;
  }
  return detail::kPortableKernels;
}

void gemm(const detail::IsaKernels &ik, const float *x, int64_t ldx, Weights W,
          float *y, int64_t ldy, int64_t T, int64_t K, int64_t N,
          bool accumulate) {
  // bf16 weights in a long step: bf16 activations too (kernels.h), through
  // vdpbf16ps where the CPU has it, else rounded and widened for the f32
  // micro-kernel (the same products, summed in another order).
  const bool round_x = W.bf16() && T > kBf16F32ActivationRows;
  const detail::Bf16DotKernels *dot =
      round_x && bf16DotProducts() ? &detail::kAvx512Bf16Kernels : nullptr;
  const int64_t mr = dot ? dot->mr : ik.mr;
  const int64_t nr = dot ? dot->nr : ik.nr;
  // Equal K blocks, so that K = 300 runs as 2 x 150 rather than 256 + 44.
  const int64_t kc = ceilDiv(K, ceilDiv(K, kKc));

  // Tasks are (token block, output block) pairs. Shrink the blocks until
  // there are a few tasks per thread, to balance load, but keep at least
  // kMinMc tokens and two panels per task so packing stays amortised.
  // (A multiple of mr: the AVX2 tile has 6 rows.)
  int64_t mc = std::min(roundUp(T, mr), kMaxMc - kMaxMc % mr);
  int64_t nb = std::min(roundUp(N, nr), kMaxNb);
  const bool serial = T * N * K < kSerialWork;
  const int64_t wanted =
      serial ? 1 : 4 * int64_t(tbb::this_task_arena::max_concurrency());
  auto tasks = [&] { return ceilDiv(T, mc) * ceilDiv(N, nb); };
  while (tasks() < wanted && nb > 2 * nr)
    nb = roundUp(nb / 2, nr);
  while (tasks() < wanted && mc >= 2 * kMinMc)
    mc = roundUp(mc / 2, mr);
  const int64_t nBlocks = ceilDiv(N, nb);
  const int64_t total = tasks();

  forRange(total, serial ? total : 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t0 = (i / nBlocks) * mc;
      const int64_t n0 = (i % nBlocks) * nb;
      const int64_t m = std::min(mc, T - t0);
      const int64_t n = std::min(nb, N - n0);
      // Packed weights, then (round_x) the task's rounded activations.
      // Block-encoded weights are decoded to f32 rows first (`rowsF32`),
      // then packed as f32.
      const int64_t decoded = W.blockEncoded() ? n * kc : 0;
      float *panels = threadScratch((roundUp(n, nr) + m) * kc + decoded);
      float *xr = panels + roundUp(n, nr) * kc;
      float *rowsF32 = xr + m * kc;
      const uint16_t *w16 =
          W.bf16() ? static_cast<const uint16_t *>(W.data) + n0 * K : nullptr;
      for (int64_t k0 = 0; k0 < K; k0 += kc) {
        const int64_t kcur = std::min(kc, K - k0);
        const bool acc = accumulate || k0 > 0;
        if (dot) {
          // Pairs: half a float each, so both fit the same scratch.
          auto *pairs = reinterpret_cast<uint32_t *>(panels);
          auto *xpairs = reinterpret_cast<uint32_t *>(xr);
          dot->packPairs(w16 + k0, K, n, kcur, pairs);
          dot->roundRows(x + t0 * ldx + k0, ldx, m, kcur, xpairs);
          dot->gemmBlock(xpairs, m, pairs, n, kcur, y + t0 * ldy + n0, ldy,
                         acc);
          continue;
        }
        if (W.bf16())
          ik.packPanelsBf16(w16 + k0, K, n, kcur, panels);
        else if (W.blockEncoded() && k0 % blockValues(W) == 0 &&
                 kcur % blockValues(W) == 0) {
          // Whole blocks (always, for the K formats: K is a multiple of 256
          // = kKc, so the K blocks are 256 wide): decoded a block at a
          // time, then packed as f32.
          decodeRows(ik, W, quantRows(W, n0, K), K, k0, n, kcur, rowsF32);
          ik.packPanels(rowsF32, kcur, n, kcur, panels);
        } else if (W.q8_0()) {
          // K blocks that start inside a block of 32: decoded value by
          // value while packing.
          ik.packPanelsQ8(quantRows(W, n0, K), K, k0, n, kcur, panels);
        } else if (W.q4_0()) {
          ik.packPanelsQ4(quantRows(W, n0, K), K, k0, n, kcur, panels);
        } else if (W.f16())
          ik.packPanelsF16(static_cast<const uint16_t *>(W.data) + n0 * K + k0,
                           K, n, kcur, panels);
        else
          ik.packPanels(static_cast<const float *>(W.data) + n0 * K + k0, K, n,
                        kcur, panels);
        const float *xs = x + t0 * ldx + k0;
        int64_t lds = ldx;
        if (round_x) {
          for (int64_t t = 0; t < m; ++t)
            for (int64_t k = 0; k < kcur; ++k)
              xr[t * kc + k] = roundToBf16(xs[t * ldx + k]);
          xs = xr;
          lds = kc;
        }
        ik.gemmBlock(xs, lds, panels, y + t0 * ldy + n0, ldy, m, n, kcur, acc);
      }
    }
  });
}

} // namespace

Isa detectIsa() {
  // AVX-512 also needs what the AVX2 table uses (F16C): each ISA's CPUs
  // run the tables below it (LOOM_ISA=avx2, setIsa).
  static const Isa isa = !cpuHasAvx2()    ? Isa::Portable
                         : cpuHasAvx512() ? Isa::Avx512
                                          : Isa::Avx2;
  return isa;
}

Isa activeIsa() { return activeSlot().load(std::memory_order_relaxed); }

bool setIsa(Isa isa) {
  if (isa > detectIsa())
    return false;
  activeSlot().store(isa, std::memory_order_relaxed);
  return true;
}

bool bf16DotProducts() {
  return activeIsa() == Isa::Avx512 && cpuHasAvx512Bf16();
}

const char *isaName(Isa isa) {
  switch (isa) {
  case Isa::Avx512:
    return "avx512";
  case Isa::Avx2:
    return "avx2";
  case Isa::Portable:
    break;
  }
  return "portable";
}

void embed(const int32_t *tokens, int64_t T, Weights table, int64_t D,
           float *out, float scale) {
  // A row copy, widening or block decoding (widenRow: memcpy and the
  // widening loops are vectorised by the library and the compiler; blocks
  // go through the ISA's decoder), then the scale.
  forRange(T, grainFor(D), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float *row = out + t * D;
      widenRow(table, int64_t(tokens[t]) * D, D, row);
      if (scale != 1.0f)
        for (int64_t i = 0; i < D; ++i)
          row[i] *= scale;
    }
  });
}

void concatRows(const float *a, int64_t na, const float *b, int64_t nb,
                float *y, int64_t T) {
  const int64_t ny = na + nb;
  forRange(T, grainFor(ny), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      std::memcpy(y + t * ny, a + t * na, sizeof(float) * size_t(na));
      std::memcpy(y + t * ny + na, b + t * nb, sizeof(float) * size_t(nb));
    }
  });
}

void addRowBias(const float *x, int64_t ldx, const float *bias, float *y,
                int64_t ldy, int64_t T, int64_t cols) {
  const detail::IsaKernels &ik = kernels();
  forRange(T, grainFor(cols), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      ik.add(x + t * ldx, bias, y + t * ldy, cols);
  });
}

void rmsNorm(const float *x, const float *w, float *y, int64_t T, int64_t D,
             float eps) {
  const detail::IsaKernels &ik = kernels();
  forRange(T, grainFor(D), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      ik.rmsNormRow(x + t * D, w, y + t * D, D, eps);
  });
}

void matmul(const float *x, int64_t ldx, Weights W, float *y, int64_t ldy,
            int64_t T, int64_t K, int64_t N, bool accumulate) {
  if (T <= 0 || N <= 0)
    return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t t = 0; t < T; ++t)
        std::fill(y + t * ldy, y + t * ldy + N, 0.0f);
    return;
  }
  const detail::IsaKernels &ik = kernels();
  if (T > 1) {
    gemm(ik, x, ldx, W, y, ldy, T, K, N, accumulate);
    return;
  }
  // Decode: W is read exactly once, split by rows across threads.
  forRange(ceilDiv(N, kRowGroup), grainFor(kRowGroup * K),
           [&](int64_t begin, int64_t end) {
             const int64_t n0 = begin * kRowGroup;
             const int64_t n1 = std::min(N, end * kRowGroup);
             if (W.bf16())
               ik.matvecBf16(x, static_cast<const uint16_t *>(W.data) + n0 * K,
                             y + n0, K, n1 - n0, accumulate);
             else if (W.blockEncoded())
               ik.matvecBlocks(blockKindOf(W), x, quantRows(W, n0, K), y + n0,
                               K, n1 - n0, accumulate);
             else if (W.f16())
               ik.matvecF16(x, static_cast<const uint16_t *>(W.data) + n0 * K,
                            y + n0, K, n1 - n0, accumulate);
             else
               ik.matvec(x, static_cast<const float *>(W.data) + n0 * K, y + n0,
                         K, n1 - n0, accumulate);
           });
}

void rope(float *x, int64_t ldx, int64_t T, int64_t cols, int64_t head_dim,
          int64_t start_pos, float theta, const float *freq_factors,
          float scale) {
  if (T <= 0 || cols <= 0)
    return;
  // The angle tables are computed here, once, in float32 exactly as llama2.c
  // does, so both ISAs rotate by bit-identical cos/sin values.
  std::vector<float> tables(size_t(2 * T * head_dim));
  float *cosT = tables.data();
  float *sinT = cosT + T * head_dim;
  for (int64_t j = 0; j < head_dim; j += 2) {
    float freq = 1.0f / powf(theta, static_cast<float>(j) /
                                        static_cast<float>(head_dim));
    if (freq_factors)
      freq /= freq_factors[j / 2];
    for (int64_t t = 0; t < T; ++t) {
      const float angle = static_cast<float>(start_pos + t) * freq;
      const float c = cosf(angle) * scale;
      const float s = sinf(angle) * scale;
      float *ct = cosT + t * head_dim;
      float *st = sinT + t * head_dim;
      ct[j] = c;
      ct[j + 1] = c;
      st[j] = -s;
      st[j + 1] = s;
    }
  }
  const detail::IsaKernels &ik = kernels();
  forRange(T, grainFor(cols), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      ik.ropeRow(x + t * ldx, cols, head_dim, cosT + t * head_dim,
                 sinT + t * head_dim);
  });
}

void attention(const float *q, int64_t ldq, const float *k, int64_t ldk,
               const float *v, int64_t ldv, float *out, int64_t ldo, int64_t T,
               int64_t start_pos, int64_t n_heads, int64_t n_kv_heads,
               int64_t head_dim, KvView cache, int64_t window) {
  const int64_t kvDim = cache.kv_dim;
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(cache.k + (start_pos + t) * kvDim, k + t * ldk,
                sizeof(float) * size_t(kvDim));
    std::memcpy(cache.v + (start_pos + t) * kvDim, v + t * ldv,
                sizeof(float) * size_t(kvDim));
  }
  const detail::IsaKernels &ik = kernels();
  const int64_t group = n_heads / n_kv_heads;
  const int64_t maxPos = start_pos + T;
  // Tasks are (head, block of kAttnRows rows), head-major: a thread walks
  // the rows of one head, whose K and V columns (a 1/n_kv_heads slice of the
  // cache) stay in its cache from block to block, and the rows of a block
  // share each K and V load. A block costs up to about
  // 2 * kAttnRows * maxPos * head_dim MACs.
  const int64_t blocks = ceilDiv(T, kAttnRows);
  // A sliding window that cuts some row of a block: its rows one by one,
  // each over its own window (an ISA kernel's row is the same whether it
  // runs alone or in a block, so that changes no result).
  const int64_t span = window > 0 ? std::min(window, maxPos) : maxPos;
  forRange(n_heads * blocks, grainFor(2 * kAttnRows * span * head_dim),
           [&](int64_t begin, int64_t end) {
             float *scores = threadScratch(kAttnRows * maxPos);
             for (int64_t i = begin; i < end; ++i) {
               const int64_t h = i / blocks;
               const int64_t t = (i % blocks) * kAttnRows;
               const int64_t rows = std::min(kAttnRows, T - t);
               const int64_t kvCol = (h / group) * head_dim;
               const float *qh = q + t * ldq + h * head_dim;
               float *oh = out + t * ldo + h * head_dim;
               if (window <= 0 || start_pos + t + rows <= window) {
                 ik.attendHeads(qh, ldq, rows, 1, cache.k + kvCol,
                                cache.v + kvCol, kvDim, start_pos + t + 1,
                                head_dim, scores, maxPos, oh, ldo);
                 continue;
               }
               for (int64_t r = 0; r < rows; ++r) {
                 const int64_t p = start_pos + t + r;
                 const int64_t first = std::max<int64_t>(0, p + 1 - window);
                 ik.attendHeads(
                     qh + r * ldq, ldq, 1, 1, cache.k + first * kvDim + kvCol,
                     cache.v + first * kvDim + kvCol, kvDim, p + 1 - first,
                     head_dim, scores, maxPos, oh + r * ldo, ldo);
               }
             }
           });
}

void attentionRows(const float *q, int64_t ldq, float *out, int64_t ldo,
                   int64_t T, int64_t start_pos, int64_t n_heads,
                   int64_t n_kv_heads, int64_t head_dim,
                   const float *const *k_rows, const float *const *v_rows,
                   int64_t window) {
  // Compact the present positions once: the leaf then walks dense pointer
  // lists, and row t sees entries first[t] .. count[t] - 1 of them
  // (positions increase; first[t] > 0 only under a sliding window).
  const int64_t maxPos = start_pos + T;
  std::vector<const float *> keys, values;
  keys.reserve(size_t(maxPos));
  values.reserve(size_t(maxPos));
  std::vector<int64_t> count(static_cast<size_t>(T)),
      first(static_cast<size_t>(T), 0);
  // before[p]: how many present positions precede p (the windows' starts).
  std::vector<int64_t> before(window > 0 ? size_t(maxPos) + 1 : 0);
  for (int64_t p = 0; p < maxPos; ++p) {
    if (window > 0)
      before[size_t(p)] = static_cast<int64_t>(keys.size());
    if (k_rows[p]) {
      keys.push_back(k_rows[p]);
      values.push_back(v_rows[p]);
    }
    if (p >= start_pos)
      count[p - start_pos] = static_cast<int64_t>(keys.size());
  }
  if (window > 0)
    for (int64_t t = 0; t < T; ++t)
      first[size_t(t)] =
          before[size_t(std::max<int64_t>(0, start_pos + t + 1 - window))];
  const detail::IsaKernels &ik = kernels();
  const int64_t group = n_heads / n_kv_heads;
  const int64_t n = static_cast<int64_t>(keys.size());
  // Head-major, as attention(): a thread walks the rows of one head.
  forRange(T * n_heads, grainFor(2 * n * head_dim),
           [&](int64_t begin, int64_t end) {
             float *scores = threadScratch(n);
             for (int64_t i = begin; i < end; ++i) {
               const int64_t h = i / T;
               const int64_t t = i % T;
               float *o = out + t * ldo + h * head_dim;
               const int64_t f = first[t];
               if (count[t] == f) {
                 std::fill(o, o + head_dim, 0.0f);
                 continue;
               }
               ik.attendHeadRows(q + t * ldq + h * head_dim, keys.data() + f,
                                 values.data() + f, (h / group) * head_dim,
                                 count[t] - f, head_dim, scores, o);
             }
           });
}

void siluMul(const float *a, const float *b, float *y, int64_t n) {
  const detail::IsaKernels &ik = kernels();
  forRange(n, kSerialWork, [&](int64_t begin, int64_t end) {
    ik.siluMul(a + begin, b + begin, y + begin, end - begin);
  });
}

void add(const float *a, const float *b, float *y, int64_t n) {
  const detail::IsaKernels &ik = kernels();
  forRange(n, kSerialWork, [&](int64_t begin, int64_t end) {
    ik.add(a + begin, b + begin, y + begin, end - begin);
  });
}

void layerNorm(const float *x, const float *w, const float *b, float *y,
               int64_t T, int64_t D, float eps) {
  const detail::IsaKernels &ik = kernels();
  forRange(T, grainFor(D), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      ik.layerNormRow(x + t * D, w, b, y + t * D, D, eps);
  });
}

void geluTanh(const float *x, float *y, int64_t n) {
  const detail::IsaKernels &ik = kernels();
  forRange(n, kSerialWork, [&](int64_t begin, int64_t end) {
    ik.geluTanh(x + begin, y + begin, end - begin);
  });
}

void selfAttention(const float *q, int64_t ldq, const float *k, int64_t ldk,
                   const float *v, int64_t ldv, float *out, int64_t ldo,
                   int64_t T, int64_t n_heads, int64_t head_dim) {
  if (T <= 0 || n_heads <= 0 || head_dim <= 0)
    return;
  // The causal kernels' leaves do the work: every row attends to all T rows.
  // attendHeads reads K and V rows one stride apart; when the strides
  // differ, attendHeadRows reads them through row pointers instead. Both run
  // the same arithmetic in the same order, so the results are bit-identical.
  const detail::IsaKernels &ik = kernels();
  std::vector<const float *> rows;
  if (ldk != ldv) {
    rows.resize(size_t(2 * T));
    for (int64_t s = 0; s < T; ++s) {
      rows[size_t(s)] = k + s * ldk;
      rows[size_t(T + s)] = v + s * ldv;
    }
  }
  const float *const *keys = rows.empty() ? nullptr : rows.data();
  const float *const *values = rows.empty() ? nullptr : rows.data() + T;
  // Tasks are (head, block of kAttnRows rows), as in attention(); a block
  // costs about 2 * kAttnRows * T * head_dim MACs.
  const int64_t blocks = ceilDiv(T, kAttnRows);
  forRange(n_heads * blocks, grainFor(2 * kAttnRows * T * head_dim),
           [&](int64_t begin, int64_t end) {
             float *scores = threadScratch(kAttnRows * T);
             for (int64_t i = begin; i < end; ++i) {
               const int64_t col = (i / blocks) * head_dim;
               const int64_t t = (i % blocks) * kAttnRows;
               const int64_t n = std::min(kAttnRows, T - t);
               if (!keys) {
                 ik.attendHeads(q + t * ldq + col, ldq, n, 0, k + col, v + col,
                                ldk, T, head_dim, scores, T,
                                out + t * ldo + col, ldo);
                 continue;
               }
               for (int64_t r = t; r < t + n; ++r)
                 ik.attendHeadRows(q + r * ldq + col, keys, values, col, T,
                                   head_dim, scores, out + r * ldo + col);
             }
           });
}

void addRows(Weights table, float *y, int64_t T, int64_t D) {
  // Both operands are dense [T, D], so this is one elementwise add (of the
  // widened rows, for a bf16 table).
  if (const float *f32 = table.f32()) {
    add(y, f32, y, T * D);
    return;
  }
  const detail::IsaKernels &ik = kernels();
  forRange(T, grainFor(D), [&](int64_t begin, int64_t end) {
    float *row = threadScratch(D);
    for (int64_t t = begin; t < end; ++t) {
      widenRow(table, t * D, D, row);
      ik.add(y + t * D, row, y + t * D, D);
    }
  });
}

} // namespace loom::rt::cpu
