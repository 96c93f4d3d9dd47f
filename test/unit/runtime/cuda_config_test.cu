// The CUDA backend's launch choices, on the host: which kernel
// instantiation a GEMV configuration reaches, grid sizes, head-dim
// instantiations, shared memory against the device limits. No GPU needed
// (no kernel runs), so CI checks them on every build.
#include "../../../runtime/cuda/kernels.cuh"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

using namespace loom::rt::cuda;

namespace {

struct Reached {
  int calls = 0, vec = 0, rows = 0, unroll = 0, split = 0;
  bool bf16 = false;
};

template <typename W, int VEC> Reached reach(const GemvConfig &c, int T) {
  Reached r;
  withGemvConfig<W, VEC>(c, T, [&](auto tag) {
    using G = decltype(tag);
    ++r.calls;
    r.vec = G::kVec;
    r.rows = G::kRows;
    r.unroll = G::kUnroll;
    r.split = G::kSplit;
    r.bf16 = sizeof(typename G::Weight) == 2;
  });
  return r;
}

TEST(GemvConfig, EveryConfigurationReachesItsInstantiation) {
  for (int T : {1, 2, 3, kGemvMaxRows})
    for (int u : {4, 8})
      for (int s : {1, 2, 4}) {
        const GemvConfig c{u, s};
        const Reached b = reach<__nv_bfloat16, 8>(c, T);
        EXPECT_EQ(b.calls, 1);
        EXPECT_TRUE(b.bf16);
        EXPECT_EQ(b.vec, 8);
        EXPECT_EQ(b.split, s) << "T " << T << " U " << u;
        EXPECT_EQ(b.rows, T == 1 ? 1 : kGemvMaxRows);
        // 8 loads in flight only for single-row bf16 GEMVs.
        EXPECT_EQ(b.unroll, T == 1 && u == 8 ? 8 : 4);
        const Reached f = reach<float, 4>(c, T);
        EXPECT_EQ(f.calls, 1);
        EXPECT_FALSE(f.bf16);
        EXPECT_EQ(f.vec, 4);
        EXPECT_EQ(f.split, s);
        EXPECT_EQ(f.rows, T == 1 ? 1 : kGemvMaxRows);
        EXPECT_EQ(f.unroll, 4);
      }
}

TEST(GemvConfig, DefaultsAreInstantiatedConfigurations) {
  for (int64_t N : {1, 8, 768, 1024, 1025, 2048, 3072, 8192, 16384, 32000})
    for (int64_t K : {8, 768, 1023, 1024, 2048, 8192}) {
      const GemvConfig c = gemvConfigFor(N, K);
      EXPECT_TRUE(c.unroll == 4 || c.unroll == 8);
      EXPECT_TRUE(c.split == 1 || c.split == 2 || c.split == 4);
      // Narrow matrices split the most; wide ones of short rows not at all.
      if (N <= 1024)
        EXPECT_EQ(c.split, 4) << N << " x " << K;
      if (N >= 16384 && K < 1024)
        EXPECT_EQ(c.split, 1) << N << " x " << K;
    }
}

TEST(GemvConfig, BlocksCoverEveryColumnOnce) {
  for (int s : {1, 2, 4})
    for (int64_t N : {1, 7, 8, 9, 768, 2047, 2048, 32000}) {
      const int64_t per_block = kGemvWarps / s;
      const int64_t blocks = gemvBlocks(N, s);
      EXPECT_GE(blocks * per_block, N);
      EXPECT_LT((blocks - 1) * per_block, N);
    }
}

TEST(Attention, DimsPerLaneCoverHeadDim) {
  for (int hd = 1; hd <= 32 * kAttnMaxDimsPerLane; ++hd) {
    int dpl = 0;
    withDimsPerLane(hd, [&](auto d) { dpl = decltype(d)::value; });
    EXPECT_GE(32 * dpl, hd);
    EXPECT_TRUE(dpl == 1 || 16 * dpl < hd) << "head_dim " << hd;
    EXPECT_LE(dpl, kAttnMaxDimsPerLane);
  }
}

TEST(Attention, SharedMemoryFitsTheDevice) {
  // The split decode kernel gets no opt-in: the 48 KiB default must hold.
  // The tiled prefill kernel opts in: Hopper's 227 KiB per block.
  for (int hd = 1; hd <= 32 * kAttnMaxDimsPerLane; ++hd) {
    EXPECT_LE(attentionSplitSmem(hd), size_t(48 * 1024)) << hd;
    EXPECT_LE(attentionTiledSmem(hd), size_t(227 * 1024)) << hd;
  }
}

} // namespace
