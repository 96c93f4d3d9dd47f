// CPU kernel tests: every kernel against a naive double-precision reference
// written here, under each ISA, on random inputs of awkward shapes; then the
// two ISAs against each other. AVX-512 cases skip, with the reason printed, on
// CPUs without AVX-512.
#include "cpu/kernels.h"
#include "loom/artifact_format.h"
#include "loom/ggml_blocks.h"

#include <gtest/gtest.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace loom::rt::cpu {
namespace {

constexpr float kSentinel = 1234.5f;
std::string cannotRun(Isa isa) {
  return isa == Isa::Avx512
             ? "this CPU (or its OS) lacks AVX-512F/BW/VL/DQ with zmm state "
               "enabled, so the AVX-512 kernels cannot run here"
             : "this CPU (or its OS) lacks AVX2/FMA/F16C with ymm state "
               "enabled, so the AVX2 kernels cannot run here";
}

std::vector<float> randomFloats(size_t n, std::mt19937 &rng, float lo = -1.0f,
                                float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float &f : v)
    f = dist(rng);
  return v;
}

// |got - want| <= absTol + relTol * |want| everywhere. On failure reports the
// count, the worst element and the first one rather than thousands of lines.
::testing::AssertionResult allNear(const std::vector<double> &want,
                                   const std::vector<float> &got, double absTol,
                                   double relTol) {
  if (want.size() != got.size())
    return ::testing::AssertionFailure()
           << "size " << got.size() << " != " << want.size();
  size_t bad = 0, first = 0, worst = 0;
  double worstErr = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double tol = absTol + relTol * std::fabs(want[i]);
    if (!(err <= tol)) {
      if (bad++ == 0)
        first = i;
      if (!(err <= worstErr)) {
        worstErr = err;
        worst = i;
      }
    }
  }
  if (bad == 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << want.size() << " values off; first [" << first
         << "] got " << got[first] << " want " << want[first] << "; worst ["
         << worst << "] got " << got[worst] << " want " << want[worst]
         << " (abs tol " << absTol << ", rel tol " << relTol << ")";
}

std::vector<double> toDouble(const std::vector<float> &v) {
  return std::vector<double>(v.begin(), v.end());
}

// Columns [width, ld) of each of `rows` rows still equal `before`.
::testing::AssertionResult paddingUntouched(const std::vector<float> &before,
                                            const std::vector<float> &after,
                                            int64_t rows, int64_t width,
                                            int64_t ld) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = width; c < ld; ++c)
      if (std::memcmp(&before[r * ld + c], &after[r * ld + c], sizeof(float)) !=
          0)
        return ::testing::AssertionFailure()
               << "padding [" << r << ", " << c << "] overwritten with "
               << after[r * ld + c];
  return ::testing::AssertionSuccess();
}

// Fixture parameterised over the ISA; restores the active ISA afterwards.
class KernelTest : public ::testing::TestWithParam<Isa> {
protected:
  void SetUp() override {
    saved_ = activeIsa();
    if (!setIsa(GetParam()))
      GTEST_SKIP() << cannotRun(GetParam());
  }
  void TearDown() override { setIsa(saved_); }

private:
  Isa saved_ = Isa::Portable;
};

// Runs the same computation under the portable kernels and under the ISA
// of the parameter (AVX2, AVX-512) for comparison.
class CrossIsaTest : public ::testing::TestWithParam<Isa> {
protected:
  void SetUp() override {
    saved_ = activeIsa();
    if (detectIsa() < GetParam())
      GTEST_SKIP() << cannotRun(GetParam());
  }
  void TearDown() override { setIsa(saved_); }

  template <typename F> auto onBoth(const F &f) {
    EXPECT_TRUE(setIsa(Isa::Portable));
    auto portable = f();
    EXPECT_TRUE(setIsa(GetParam()));
    auto other = f();
    return std::make_pair(std::move(portable), std::move(other));
  }

private:
  Isa saved_ = Isa::Portable;
};

//===----------------------------------------------------------------------===//
// ISA selection
//===----------------------------------------------------------------------===//

TEST(Isa, Names) {
  EXPECT_STREQ(isaName(Isa::Portable), "portable");
  EXPECT_STREQ(isaName(Isa::Avx2), "avx2");
  EXPECT_STREQ(isaName(Isa::Avx512), "avx512");
}

TEST(Isa, DetectionAgreesWithCompilerRuntime) {
  // libgcc's / compiler-rt's CPU model also checks XCR0 before reporting
  // AVX-512, so it is an independent check of cpuid + xgetbv.
  __builtin_cpu_init();
  const bool expected =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma");
  EXPECT_EQ(detectIsa() == Isa::Avx512, expected);
  const bool avx2 = __builtin_cpu_supports("avx2") &&
                    __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  EXPECT_EQ(detectIsa() >= Isa::Avx2, avx2);
}

TEST(Isa, SetIsaRefusesWhatTheCpuLacks) {
  const Isa saved = activeIsa();
  ASSERT_TRUE(setIsa(Isa::Portable));
  EXPECT_EQ(activeIsa(), Isa::Portable);
  for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
    ASSERT_TRUE(setIsa(Isa::Portable));
    const bool has = detectIsa() >= isa;
    EXPECT_EQ(setIsa(isa), has);
    EXPECT_EQ(activeIsa(), has ? isa : Isa::Portable);
  }
  setIsa(saved);
}

TEST(IsaDeathTest, EnvironmentForcesPortable) {
  // The choice is made on first use, so check it in a fresh process.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("LOOM_ISA", "portable", 1);
        std::exit(activeIsa() == Isa::Portable ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(IsaDeathTest, EnvironmentCapsTheIsa) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Isa want = std::min(Isa::Avx2, detectIsa());
  EXPECT_EXIT(
      {
        setenv("LOOM_ISA", "avx2", 1);
        std::exit(activeIsa() == want ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(
      {
        setenv("LOOM_ISA", "avx512", 1);
        std::exit(activeIsa() == detectIsa() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

//===----------------------------------------------------------------------===//
// matmul
//===----------------------------------------------------------------------===//

struct MatmulShape {
  int64_t T, K, N;
  int64_t padX, padY; // ldx = K + padX, ldy = N + padY
};

std::ostream &operator<<(std::ostream &os, const MatmulShape &s) {
  return os << "T=" << s.T << " K=" << s.K << " N=" << s.N << " ldx=K+"
            << s.padX << " ldy=N+" << s.padY;
}

// Decode (T=1), tiny, tails of every block size (K % 16, N % 8, N % 32,
// T % 8), several K blocks, several token and output blocks, strides.
const MatmulShape kMatmulShapes[] = {
    {1, 1, 1, 0, 0},
    {1, 15, 1, 0, 0},
    {1, 17, 33, 3, 5},
    {1, 768, 37, 0, 0},
    {1, 700, 259, 16, 1},
    {2, 16, 32, 0, 0},
    {5, 33, 70, 7, 2},
    {37, 100, 65, 0, 3},
    {8, 300, 31, 1, 0},
    {9, 600, 40, 0, 0},
    {130, 520, 100, 0, 0},
    {256, 300, 700, 20, 9},
    // More than 8 rows with odd K blocks (257 = 129 + 128) and K under 32
    // (the bf16 GEMM's k pairs and masks).
    {12, 257, 45, 1, 2},
    {10, 15, 33, 0, 0},
    {11, 33, 70, 3, 0},
};

struct MatmulData {
  MatmulShape s;
  int64_t ldx, ldy;
  std::vector<float> x, W, y0;

  MatmulData(const MatmulShape &shape, uint32_t seed)
      : s(shape), ldx(shape.K + shape.padX), ldy(shape.N + shape.padY) {
    std::mt19937 rng(seed);
    x = randomFloats(size_t(s.T * ldx), rng);
    W = randomFloats(size_t(s.N * s.K), rng);
    y0 = randomFloats(size_t(s.T * ldy), rng);
  }

  std::vector<float> run(bool accumulate) const {
    std::vector<float> y = y0;
    matmul(x.data(), ldx, W.data(), y.data(), ldy, s.T, s.K, s.N, accumulate);
    return y;
  }

  // Expected y over the whole [T, ldy] buffer; padding keeps y0.
  std::vector<double> reference(bool accumulate) const {
    std::vector<double> want = toDouble(y0);
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t n = 0; n < s.N; ++n) {
        double sum = accumulate ? double(y0[t * ldy + n]) : 0.0;
        for (int64_t k = 0; k < s.K; ++k)
          sum += double(x[t * ldx + k]) * double(W[n * s.K + k]);
        want[t * ldy + n] = sum;
      }
    return want;
  }

  // Inputs lie in [-1, 1], so |y| grows like sqrt(K) and so does the float
  // rounding error of any summation order.
  double tolerance() const { return 1e-5 * std::sqrt(double(s.K)); }
};

TEST_P(KernelTest, MatmulMatchesReference) {
  uint32_t seed = 1;
  for (const MatmulShape &shape : kMatmulShapes) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << shape << " accumulate=" << accumulate);
      const MatmulData d(shape, seed++);
      const std::vector<float> y = d.run(accumulate);
      EXPECT_TRUE(allNear(d.reference(accumulate), y, d.tolerance(), 0.0));
      EXPECT_TRUE(paddingUntouched(d.y0, y, shape.T, shape.N, d.ldy));
    }
  }
}

TEST_P(KernelTest, MatmulWithEmptyKIsZeroOrUnchanged) {
  std::vector<float> y(3 * 5, 7.0f);
  matmul(nullptr, 0, Weights(), y.data(), 5, 3, 0, 5, /*accumulate=*/true);
  EXPECT_EQ(y, std::vector<float>(15, 7.0f));
  matmul(nullptr, 0, Weights(), y.data(), 5, 3, 0, 5, /*accumulate=*/false);
  EXPECT_EQ(y, std::vector<float>(15, 0.0f));
}

TEST_P(KernelTest, MatmulDoesNotDependOnThreadCount) {
  // Each output's summation order is fixed by K alone, so a session gives the
  // same bits whatever its thread count.
  for (const MatmulShape &shape :
       {MatmulShape{1, 768, 768, 0, 0}, MatmulShape{37, 300, 700, 0, 0}}) {
    SCOPED_TRACE(::testing::Message() << shape);
    const MatmulData d(shape, 99);
    std::vector<float> one, two;
    tbb::task_arena(1).execute([&] { one = d.run(false); });
    tbb::task_arena(2).execute([&] { two = d.run(false); });
    EXPECT_EQ(0,
              std::memcmp(one.data(), two.data(), one.size() * sizeof(float)));
  }
}

TEST_P(CrossIsaTest, MatmulAgrees) {
  uint32_t seed = 500;
  for (const MatmulShape &shape : kMatmulShapes) {
    SCOPED_TRACE(::testing::Message() << shape);
    const MatmulData d(shape, seed++);
    auto [portable, other] = onBoth([&] { return d.run(true); });
    EXPECT_TRUE(allNear(toDouble(portable), other, d.tolerance(), 0.0));
  }
}

//===----------------------------------------------------------------------===//
// rmsNorm
//===----------------------------------------------------------------------===//

std::vector<double> rmsNormReference(const std::vector<float> &x,
                                     const std::vector<float> &w, int64_t T,
                                     int64_t D, float eps) {
  std::vector<double> y(size_t(T * D));
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0.0;
    for (int64_t i = 0; i < D; ++i)
      ss += double(x[t * D + i]) * double(x[t * D + i]);
    const double scale = 1.0 / std::sqrt(ss / double(D) + double(eps));
    for (int64_t i = 0; i < D; ++i)
      y[t * D + i] = double(w[i]) * double(x[t * D + i]) * scale;
  }
  return y;
}

const std::pair<int64_t, int64_t> kRmsShapes[] = {
    {1, 1}, {3, 17}, {5, 288}, {37, 1000}, {64, 4096}};

std::vector<float> runRmsNorm(int64_t T, int64_t D, uint32_t seed,
                              std::vector<double> *want) {
  std::mt19937 rng(seed);
  const std::vector<float> x = randomFloats(size_t(T * D), rng, -3.0f, 3.0f);
  const std::vector<float> w = randomFloats(size_t(D), rng, 0.5f, 1.5f);
  std::vector<float> y(size_t(T * D), kSentinel);
  rmsNorm(x.data(), w.data(), y.data(), T, D, 1e-5f);
  if (want)
    *want = rmsNormReference(x, w, T, D, 1e-5f);
  return y;
}

TEST_P(KernelTest, RmsNormMatchesReference) {
  for (auto [T, D] : kRmsShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << D);
    std::vector<double> want;
    const std::vector<float> y = runRmsNorm(T, D, uint32_t(T * 7 + D), &want);
    EXPECT_TRUE(allNear(want, y, 1e-7, 1e-5));
  }
}

TEST_P(KernelTest, RmsNormKnownValue) {
  // mean(9, 16) = 12.5; eps = 0 gives x / sqrt(12.5).
  const float x[2] = {3.0f, 4.0f};
  const float w[2] = {1.0f, 2.0f};
  float y[2];
  rmsNorm(x, w, y, 1, 2, 0.0f);
  EXPECT_NEAR(y[0], 3.0 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(y[1], 8.0 / std::sqrt(12.5), 1e-6);
  // eps is added to the mean square, not to its root.
  rmsNorm(x, w, y, 1, 2, 0.5f);
  EXPECT_NEAR(y[0], 3.0 / std::sqrt(13.0), 1e-6);
  EXPECT_NEAR(y[1], 8.0 / std::sqrt(13.0), 1e-6);
}

TEST_P(CrossIsaTest, RmsNormAgrees) {
  for (const auto &shape : kRmsShapes) {
    // Plain copies: lambdas cannot capture structured bindings before C++20.
    const int64_t T = shape.first, D = shape.second;
    SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << D);
    auto [portable, other] =
        onBoth([&] { return runRmsNorm(T, D, 77, nullptr); });
    EXPECT_TRUE(allNear(toDouble(portable), other, 1e-7, 1e-5));
  }
}

//===----------------------------------------------------------------------===//
// rope
//===----------------------------------------------------------------------===//

struct RopeShape {
  int64_t T, cols, headDim, startPos, pad;
};

std::ostream &operator<<(std::ostream &os, const RopeShape &s) {
  return os << "T=" << s.T << " cols=" << s.cols << " head_dim=" << s.headDim
            << " start_pos=" << s.startPos << " ldx=cols+" << s.pad;
}

// Includes a partial last head (cols 20, head_dim 8), head_dim not a multiple
// of 16, and a large position where float32 angles matter.
const RopeShape kRopeShapes[] = {
    {1, 8, 8, 0, 0},   {5, 288, 48, 3, 4}, {37, 96, 32, 1000, 0},
    {3, 64, 64, 7, 1}, {2, 20, 8, 11, 3},  {4, 36, 6, 2, 0},
};

struct RopeRun {
  std::vector<float> before, after;
};

RopeRun runRope(const RopeShape &s, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t ldx = s.cols + s.pad;
  RopeRun r;
  r.before = randomFloats(size_t(s.T * ldx), rng);
  r.after = r.before;
  rope(r.after.data(), ldx, s.T, s.cols, s.headDim, s.startPos, 10000.0f,
       nullptr, 1.0f);
  return r;
}

// The angle is formed in float32 as the kernel's contract says; everything
// after it in double.
std::vector<double> ropeReference(const RopeShape &s,
                                  const std::vector<float> &x, float theta) {
  const int64_t ldx = s.cols + s.pad;
  std::vector<double> want = toDouble(x);
  for (int64_t t = 0; t < s.T; ++t)
    for (int64_t c = 0; c < s.cols; c += 2) {
      const int64_t j = c % s.headDim;
      const float freq = 1.0f / powf(theta, float(j) / float(s.headDim));
      const float angle = float(s.startPos + t) * freq;
      const double cs = std::cos(double(angle)), sn = std::sin(double(angle));
      const double x0 = x[t * ldx + c], x1 = x[t * ldx + c + 1];
      want[t * ldx + c] = x0 * cs - x1 * sn;
      want[t * ldx + c + 1] = x0 * sn + x1 * cs;
    }
  return want;
}

TEST_P(KernelTest, RopeMatchesReference) {
  uint32_t seed = 10;
  for (const RopeShape &shape : kRopeShapes) {
    SCOPED_TRACE(::testing::Message() << shape);
    const RopeRun r = runRope(shape, seed++);
    EXPECT_TRUE(
        allNear(ropeReference(shape, r.before, 10000.0f), r.after, 1e-6, 0.0));
    EXPECT_TRUE(paddingUntouched(r.before, r.after, shape.T, shape.cols,
                                 shape.cols + shape.pad));
  }
}

TEST_P(KernelTest, RopeKnownValues) {
  // Position 0 is the identity, exactly.
  std::vector<float> x = {0.25f, -0.5f, 0.75f, 1.0f, -2.0f, 3.0f, 0.1f, 0.2f};
  const std::vector<float> x0 = x;
  rope(x.data(), 8, 1, 8, 4, 0, 10000.0f, nullptr, 1.0f);
  EXPECT_EQ(x, x0);

  // Position 1, head_dim 2: freq = 1, so a rotation by 1 radian.
  float v[4] = {1.0f, 0.0f, 0.0f, 1.0f}; // two rows: (1, 0) and (0, 1)
  rope(v, 2, 1, 2, 2, 1, 10000.0f, nullptr, 1.0f);
  rope(v + 2, 2, 1, 2, 2, 1, 10000.0f, nullptr, 1.0f);
  EXPECT_NEAR(v[0], 0.5403023058681398, 1e-7);  // cos 1
  EXPECT_NEAR(v[1], 0.8414709848078965, 1e-7);  // sin 1
  EXPECT_NEAR(v[2], -0.8414709848078965, 1e-7); // -sin 1
  EXPECT_NEAR(v[3], 0.5403023058681398, 1e-7);

  // head_dim 4, theta 10000, position 2: the second pair has freq
  // 10000^(-1/2) = 0.01, so it turns by 0.02 radians.
  float w[4] = {1.0f, 0.0f, 1.0f, 0.0f};
  rope(w, 4, 1, 4, 4, 2, 10000.0f, nullptr, 1.0f);
  EXPECT_NEAR(w[0], std::cos(2.0), 1e-7);
  EXPECT_NEAR(w[1], std::sin(2.0), 1e-7);
  EXPECT_NEAR(w[2], std::cos(0.02), 1e-7);
  EXPECT_NEAR(w[3], std::sin(0.02), 1e-7);
}

// A scale multiplies the rotated vector: by a power of two, exactly; by
// another factor, up to rounding; position 0 then scales without turning.
TEST_P(KernelTest, RopeScaleLengthensTheRotatedVector) {
  const RopeShape shape = kRopeShapes[std::size(kRopeShapes) - 1];
  const int64_t ldx = shape.cols + shape.pad;
  const RopeRun plain = runRope(shape, 7);
  std::vector<float> twice = plain.before, odd = plain.before;
  rope(twice.data(), ldx, shape.T, shape.cols, shape.headDim, shape.startPos,
       10000.0f, nullptr, 2.0f);
  rope(odd.data(), ldx, shape.T, shape.cols, shape.headDim, shape.startPos,
       10000.0f, nullptr, 1.1386f);
  for (int64_t t = 0; t < shape.T; ++t)
    for (int64_t c = 0; c < shape.cols; ++c) {
      const size_t i = size_t(t * ldx + c);
      ASSERT_EQ(twice[i], 2.0f * plain.after[i]) << t << " " << c;
      ASSERT_NEAR(odd[i], 1.1386 * plain.after[i], 1e-5) << t << " " << c;
    }
  float x[4] = {0.25f, -0.5f, 0.75f, 1.0f};
  rope(x, 4, 1, 4, 4, 0, 10000.0f, nullptr, 0.5f);
  EXPECT_EQ(x[0], 0.125f);
  EXPECT_EQ(x[3], 0.5f);
}

TEST_P(CrossIsaTest, RopeIsBitIdentical) {
  uint32_t seed = 40;
  for (const RopeShape &shape : kRopeShapes) {
    SCOPED_TRACE(::testing::Message() << shape);
    auto [portable, other] = onBoth([&] { return runRope(shape, seed); });
    ++seed;
    ASSERT_EQ(portable.after.size(), other.after.size());
    EXPECT_EQ(0, std::memcmp(portable.after.data(), other.after.data(),
                             portable.after.size() * sizeof(float)));
  }
}

//===----------------------------------------------------------------------===//
// attention
//===----------------------------------------------------------------------===//

struct AttnShape {
  int64_t nHeads, nKvHeads, headDim, maxSeq;
  int64_t window = 0; // sliding window (0: every position)
};

// The first position row p sees under the shape's sliding window.
int64_t firstSeen(const AttnShape &s, int64_t p) {
  return s.window > 0 ? std::max<int64_t>(0, p + 1 - s.window) : 0;
}

// Naive attention with its own double-precision KV cache.
class ReferenceAttention {
public:
  explicit ReferenceAttention(const AttnShape &s)
      : s_(s), kvDim_(s.nKvHeads * s.headDim), k_(size_t(s.maxSeq * kvDim_)),
        v_(size_t(s.maxSeq * kvDim_)) {}

  // Returns out as [T, nHeads * headDim].
  std::vector<double> step(const float *q, int64_t ldq, const float *k,
                           int64_t ldk, const float *v, int64_t ldv, int64_t T,
                           int64_t startPos) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < kvDim_; ++i) {
        k_[(startPos + t) * kvDim_ + i] = k[t * ldk + i];
        v_[(startPos + t) * kvDim_ + i] = v[t * ldv + i];
      }
    const int64_t hd = s_.headDim;
    const int64_t qDim = s_.nHeads * hd;
    std::vector<double> out(size_t(T * qDim), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < s_.nHeads; ++h) {
        const int64_t p = startPos + t;
        const int64_t g = h / (s_.nHeads / s_.nKvHeads);
        const int64_t lo = firstSeen(s_, p);
        std::vector<double> w(size_t(p + 1));
        double mx = -INFINITY;
        for (int64_t j = lo; j <= p; ++j) {
          double dot = 0.0;
          for (int64_t i = 0; i < hd; ++i)
            dot +=
                double(q[t * ldq + h * hd + i]) * k_[j * kvDim_ + g * hd + i];
          w[j] = dot / std::sqrt(double(hd));
          mx = std::max(mx, w[j]);
        }
        double sum = 0.0;
        for (int64_t j = lo; j <= p; ++j)
          sum += (w[j] = std::exp(w[j] - mx));
        for (int64_t j = lo; j <= p; ++j)
          for (int64_t i = 0; i < hd; ++i)
            out[t * qDim + h * hd + i] +=
                w[j] / sum * v_[j * kvDim_ + g * hd + i];
      }
    return out;
  }

private:
  AttnShape s_;
  int64_t kvDim_;
  std::vector<double> k_, v_;
};

// Rows [startPos, startPos + T) of the cache equal the step's input rows and
// the rows past them were never written.
::testing::AssertionResult cacheHolds(const std::vector<float> &cache,
                                      const std::vector<float> &rows,
                                      int64_t ld, int64_t T, int64_t startPos,
                                      int64_t kvDim) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < kvDim; ++i)
      if (cache[(startPos + t) * kvDim + i] != rows[t * ld + i])
        return ::testing::AssertionFailure()
               << "position " << startPos + t << " column " << i << " holds "
               << cache[(startPos + t) * kvDim + i] << ", want "
               << rows[t * ld + i];
  for (size_t i = size_t((startPos + T) * kvDim); i < cache.size(); ++i)
    if (cache[i] != kSentinel)
      return ::testing::AssertionFailure()
             << "position " << int64_t(i) / kvDim << " written ahead of time";
  return ::testing::AssertionSuccess();
}

// Runs attention over a sequence of (T, start_pos) steps with strided q, k,
// v, out; checks each step against the reference and the cache contents, and
// returns every step's output rows.
std::vector<float>
runAttention(const AttnShape &s,
             const std::vector<std::pair<int64_t, int64_t>> &steps,
             uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t kvDim = s.nKvHeads * s.headDim;
  const int64_t qDim = s.nHeads * s.headDim;
  const int64_t ldq = qDim + 3, ldk = kvDim + 1, ldv = kvDim + 2;
  const int64_t ldo = qDim + 5;
  std::vector<float> kc(size_t(s.maxSeq * kvDim), kSentinel);
  std::vector<float> vc(size_t(s.maxSeq * kvDim), kSentinel);
  const KvView cache{kc.data(), vc.data(), s.maxSeq, kvDim};
  ReferenceAttention ref(s);
  std::vector<float> allOut;
  for (auto [T, startPos] : steps) {
    SCOPED_TRACE(::testing::Message()
                 << "step T=" << T << " start_pos=" << startPos);
    // Larger queries make the softmax less uniform, so mixing up positions
    // or heads shows.
    const std::vector<float> q = randomFloats(size_t(T * ldq), rng, -2.f, 2.f);
    const std::vector<float> k = randomFloats(size_t(T * ldk), rng);
    const std::vector<float> v = randomFloats(size_t(T * ldv), rng);
    std::vector<float> out(size_t(T * ldo), kSentinel);
    const std::vector<float> outBefore = out;
    attention(q.data(), ldq, k.data(), ldk, v.data(), ldv, out.data(), ldo, T,
              startPos, s.nHeads, s.nKvHeads, s.headDim, cache, s.window);

    const std::vector<double> want =
        ref.step(q.data(), ldq, k.data(), ldk, v.data(), ldv, T, startPos);
    std::vector<float> got(size_t(T * qDim));
    for (int64_t t = 0; t < T; ++t)
      std::copy(out.begin() + t * ldo, out.begin() + t * ldo + qDim,
                got.begin() + t * qDim);
    EXPECT_TRUE(allNear(want, got, 1e-5, 0.0));
    EXPECT_TRUE(paddingUntouched(outBefore, out, T, qDim, ldo));
    allOut.insert(allOut.end(), got.begin(), got.end());

    EXPECT_TRUE(cacheHolds(kc, k, ldk, T, startPos, kvDim)) << "K cache";
    EXPECT_TRUE(cacheHolds(vc, v, ldv, T, startPos, kvDim)) << "V cache";
  }
  return allOut;
}

using Steps = std::vector<std::pair<int64_t, int64_t>>;

TEST_P(KernelTest, AttentionGqaPrefillThenDecode) {
  runAttention({8, 4, 8, 16}, Steps{{5, 0}, {1, 5}, {1, 6}, {3, 7}}, 1);
}

TEST_P(KernelTest, AttentionMhaLongContext) {
  // head_dim 48 (three vectors), more positions than the 8-wide score
  // blocks, and enough work per call to run in parallel.
  runAttention({6, 6, 48, 300},
               Steps{{37, 0}, {1, 37}, {1, 38}, {200, 39}, {1, 239}}, 2);
}

TEST_P(KernelTest, AttentionMqaOddHeadDim) {
  runAttention({4, 1, 20, 40}, Steps{{9, 0}, {1, 9}, {2, 10}}, 3);
}

// Sliding windows: steps inside the window, steps whose rows it cuts (some
// of a block's rows, or all), one-row steps past it; a window of 1 (each row
// sees itself) and windows longer than the blocks of rows.
TEST_P(KernelTest, AttentionSlidingWindow) {
  runAttention({8, 4, 8, 64, 5}, Steps{{3, 0}, {4, 3}, {1, 7}, {9, 8}}, 6);
  runAttention({6, 6, 48, 300, 50},
               Steps{{37, 0}, {1, 37}, {40, 38}, {150, 78}, {1, 228}}, 7);
  runAttention({4, 1, 20, 40, 1}, Steps{{9, 0}, {1, 9}, {2, 10}}, 8);
  runAttention({4, 2, 16, 64, 6}, Steps{{6, 0}, {1, 6}, {7, 7}}, 9);
}

// The rows of a step share K and V loads (blocks of rows per head), and
// each row's arithmetic stays that of a one-row step: a T-row step gives
// bit for bit what T one-row steps give.
TEST_P(KernelTest, AttentionRowsOfAStepAreBitIdenticalToOneRowSteps) {
  for (auto [s, T, start] :
       {std::tuple<AttnShape, int64_t, int64_t>{{8, 4, 8, 64}, 7, 0},
        {{6, 6, 48, 300}, 37, 0},
        {{6, 6, 48, 300}, 64, 201},
        {{4, 1, 20, 80}, 9, 13},
        {{2, 2, 72, 40}, 18, 3},
        {{4, 2, 64, 600}, 130, 390},
        {{8, 4, 8, 64, 5}, 7, 0},
        {{6, 6, 48, 300, 33}, 64, 201},
        {{4, 2, 64, 600, 100}, 130, 390}}) {
    SCOPED_TRACE(::testing::Message()
                 << "heads " << s.nHeads << "/" << s.nKvHeads << " head_dim "
                 << s.headDim << " window " << s.window << " T=" << T
                 << " start=" << start);
    std::mt19937 rng(uint32_t(T + start));
    const int64_t kvDim = s.nKvHeads * s.headDim, qDim = s.nHeads * s.headDim;
    const int64_t all = start + T;
    const std::vector<float> q = randomFloats(size_t(all * qDim), rng, -2, 2);
    const std::vector<float> k = randomFloats(size_t(all * kvDim), rng);
    const std::vector<float> v = randomFloats(size_t(all * kvDim), rng);
    auto run = [&](int64_t rows_per_step) {
      std::vector<float> kc(size_t(s.maxSeq * kvDim)), vc(kc.size());
      std::vector<float> out(size_t(all * qDim));
      const KvView cache{kc.data(), vc.data(), s.maxSeq, kvDim};
      // The first `start` positions in one step, then the rest.
      attention(q.data(), qDim, k.data(), kvDim, v.data(), kvDim, out.data(),
                qDim, start, 0, s.nHeads, s.nKvHeads, s.headDim, cache,
                s.window);
      for (int64_t p = start; p < all; p += rows_per_step) {
        const int64_t n = std::min(rows_per_step, all - p);
        attention(q.data() + p * qDim, qDim, k.data() + p * kvDim, kvDim,
                  v.data() + p * kvDim, kvDim, out.data() + p * qDim, qDim, n,
                  p, s.nHeads, s.nKvHeads, s.headDim, cache, s.window);
      }
      return out;
    };
    const std::vector<float> one = run(1), whole = run(T), fives = run(5);
    EXPECT_EQ(0, std::memcmp(one.data(), whole.data(), one.size() * 4));
    EXPECT_EQ(0, std::memcmp(one.data(), fives.data(), one.size() * 4));
  }
}

TEST_P(KernelTest, AttentionQueryHeadUsesKvHeadHOverGroup) {
  // Every V row of kv head g is g + 1, so whatever the softmax weights, head h
  // must output h / (n_heads / n_kv_heads) + 1 everywhere.
  const AttnShape s{8, 4, 8, 16};
  const int64_t kvDim = s.nKvHeads * s.headDim;
  const int64_t qDim = s.nHeads * s.headDim;
  const int64_t T = 3;
  std::mt19937 rng(4);
  const std::vector<float> q = randomFloats(size_t(T * qDim), rng);
  const std::vector<float> k = randomFloats(size_t(T * kvDim), rng);
  std::vector<float> v(size_t(T * kvDim));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < kvDim; ++i)
      v[t * kvDim + i] = float(i / s.headDim + 1);
  std::vector<float> kc(size_t(s.maxSeq * kvDim)), vc(kc.size());
  std::vector<float> out(size_t(T * qDim));
  attention(q.data(), qDim, k.data(), kvDim, v.data(), kvDim, out.data(), qDim,
            T, 0, s.nHeads, s.nKvHeads, s.headDim,
            KvView{kc.data(), vc.data(), s.maxSeq, kvDim}, 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < s.nHeads; ++h)
      for (int64_t i = 0; i < s.headDim; ++i)
        EXPECT_NEAR(out[t * qDim + h * s.headDim + i], double(h / 2 + 1), 1e-5)
            << "t=" << t << " h=" << h << " i=" << i;
}

TEST_P(CrossIsaTest, AttentionAgrees) {
  const Steps steps{{37, 0}, {1, 37}, {20, 38}};
  auto [portable, other] = onBoth([&] {
    return runAttention({6, 2, 48, 64}, steps, 5);
  });
  EXPECT_TRUE(allNear(toDouble(portable), other, 1e-5, 0.0));
  auto [pw, ow] = onBoth([&] {
    return runAttention({6, 2, 48, 64, 9}, steps, 5);
  });
  EXPECT_TRUE(allNear(toDouble(pw), ow, 1e-5, 0.0));
}

//===----------------------------------------------------------------------===//
// siluMul, add, embed
//===----------------------------------------------------------------------===//

const int64_t kElementwiseSizes[] = {1, 15, 16, 17, 1000, 100003};

std::vector<float> siluInputs(int64_t n, std::mt19937 &rng) {
  std::vector<float> a = randomFloats(size_t(n), rng, -20.0f, 20.0f);
  // Saturation on both sides, including exp(-a) overflowing float.
  const float special[] = {0.0f,   -0.0f,  1.0f,    -1.0f, 88.0f,
                           -88.0f, 100.0f, -100.0f, 1e-3f, -87.5f};
  for (size_t i = 0; i < std::size(special) && i < a.size(); ++i)
    a[(i * 7919) % a.size()] = special[i];
  return a;
}

std::vector<float> runSiluMul(int64_t n, uint32_t seed,
                              std::vector<double> *want) {
  std::mt19937 rng(seed);
  const std::vector<float> a = siluInputs(n, rng);
  const std::vector<float> b = randomFloats(size_t(n), rng, -2.0f, 2.0f);
  std::vector<float> y(size_t(n), kSentinel);
  siluMul(a.data(), b.data(), y.data(), n);
  if (want) {
    want->resize(size_t(n));
    for (int64_t i = 0; i < n; ++i)
      (*want)[i] = double(a[i]) / (1.0 + std::exp(-double(a[i]))) * b[i];
  }
  return y;
}

TEST_P(KernelTest, SiluMulMatchesReference) {
  for (int64_t n : kElementwiseSizes) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    std::vector<double> want;
    const std::vector<float> y = runSiluMul(n, uint32_t(n), &want);
    // Relative 1e-6 is about 8 ulp; the absolute part only admits results
    // that underflow float (silu(-100) ~ -4e-42).
    EXPECT_TRUE(allNear(want, y, 1e-30, 1e-6));
  }
}

TEST_P(CrossIsaTest, SiluMulAgrees) {
  for (int64_t n : kElementwiseSizes) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto [portable, other] = onBoth([&] { return runSiluMul(n, 3, nullptr); });
    EXPECT_TRUE(allNear(toDouble(portable), other, 1e-30, 1e-6));
  }
}

TEST_P(KernelTest, AddIsExactAndAllowsAliasing) {
  for (int64_t n : kElementwiseSizes) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    std::mt19937 rng(static_cast<uint32_t>(n));
    const std::vector<float> a = randomFloats(size_t(n), rng);
    const std::vector<float> b = randomFloats(size_t(n), rng);
    std::vector<float> want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      want[i] = a[i] + b[i];

    std::vector<float> y(size_t(n), kSentinel);
    add(a.data(), b.data(), y.data(), n);
    EXPECT_EQ(y, want);
    std::vector<float> ya = a; // y aliases a
    add(ya.data(), b.data(), ya.data(), n);
    EXPECT_EQ(ya, want);
    std::vector<float> yb = b; // y aliases b
    add(a.data(), yb.data(), yb.data(), n);
    EXPECT_EQ(yb, want);
  }
}

TEST_P(KernelTest, EmbedCopiesRows) {
  const int64_t vocab = 50, D = 288;
  std::mt19937 rng(8);
  const std::vector<float> table = randomFloats(size_t(vocab * D), rng);
  for (int64_t T : {1, 5, 300}) {
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    std::vector<int32_t> tokens(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t)
      tokens[t] = int32_t((t * 37 + 11) % vocab);
    tokens[0] = vocab - 1;
    std::vector<float> out(size_t(T * D), kSentinel);
    embed(tokens.data(), T, table.data(), D, out.data());
    for (int64_t t = 0; t < T; ++t)
      ASSERT_EQ(
          0, std::memcmp(&out[t * D], &table[tokens[t] * D], sizeof(float) * D))
          << "row " << t;
  }
}

//===----------------------------------------------------------------------===//
// attentionRows, concatRows, addRowBias, scaled embed (looped blocks)
//===----------------------------------------------------------------------===//

// Rows of a looped block's caches: every position's K and V in its own
// allocation (so a kernel that assumed one strided array would read
// garbage), some past positions absent.
struct RowTable {
  std::vector<std::vector<float>> k, v;
  std::vector<const float *> kp, vp; // null where absent
};

RowTable randomRowTable(int64_t positions, int64_t kvDim,
                        const std::vector<bool> &present, std::mt19937 &rng) {
  RowTable r;
  for (int64_t p = 0; p < positions; ++p) {
    r.k.push_back(randomFloats(size_t(kvDim), rng));
    r.v.push_back(randomFloats(size_t(kvDim), rng));
  }
  for (int64_t p = 0; p < positions; ++p) {
    r.kp.push_back(present[p] ? r.k[p].data() : nullptr);
    r.vp.push_back(present[p] ? r.v[p].data() : nullptr);
  }
  return r;
}

// Naive attention of row t over the present positions <= startPos + t.
std::vector<double> rowsReference(const std::vector<float> &q, int64_t ldq,
                                  const RowTable &r, int64_t T,
                                  int64_t startPos, const AttnShape &s) {
  const int64_t hd = s.headDim, qDim = s.nHeads * hd;
  std::vector<double> out(size_t(T * qDim), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < s.nHeads; ++h) {
      const int64_t g = h / (s.nHeads / s.nKvHeads);
      std::vector<double> w;
      std::vector<int64_t> at;
      for (int64_t p = firstSeen(s, startPos + t); p <= startPos + t; ++p) {
        if (!r.kp[p])
          continue;
        double dot = 0.0;
        for (int64_t i = 0; i < hd; ++i)
          dot += double(q[t * ldq + h * hd + i]) * r.kp[p][g * hd + i];
        w.push_back(dot / std::sqrt(double(hd)));
        at.push_back(p);
      }
      if (w.empty())
        continue;
      const double mx = *std::max_element(w.begin(), w.end());
      double sum = 0.0;
      for (double &x : w)
        sum += (x = std::exp(x - mx));
      for (size_t j = 0; j < w.size(); ++j)
        for (int64_t i = 0; i < hd; ++i)
          out[t * qDim + h * hd + i] += w[j] / sum * r.vp[at[j]][g * hd + i];
    }
  return out;
}

struct RowsCase {
  AttnShape s;
  int64_t T, startPos;
  int absentEvery; // position p is absent when p % absentEvery == 1
};

std::vector<float> runAttentionRows(const RowsCase &c, uint32_t seed,
                                    std::vector<double> *want) {
  std::mt19937 rng(seed);
  const AttnShape &s = c.s;
  const int64_t kvDim = s.nKvHeads * s.headDim, qDim = s.nHeads * s.headDim;
  const int64_t n = c.startPos + c.T, ldq = qDim + 3, ldo = qDim + 1;
  std::vector<bool> present(size_t(n), true);
  for (int64_t p = 0; p < c.startPos; ++p)
    present[p] = p % c.absentEvery != 1;
  const RowTable rows = randomRowTable(n, kvDim, present, rng);
  const std::vector<float> q = randomFloats(size_t(c.T * ldq), rng, -2.f, 2.f);
  std::vector<float> out(size_t(c.T * ldo), kSentinel);
  const std::vector<float> before = out;
  attentionRows(q.data(), ldq, out.data(), ldo, c.T, c.startPos, s.nHeads,
                s.nKvHeads, s.headDim, rows.kp.data(), rows.vp.data(),
                s.window);
  EXPECT_TRUE(paddingUntouched(before, out, c.T, qDim, ldo));
  if (want)
    *want = rowsReference(q, ldq, rows, c.T, c.startPos, s);
  std::vector<float> got(size_t(c.T * qDim));
  for (int64_t t = 0; t < c.T; ++t)
    std::copy(out.begin() + t * ldo, out.begin() + t * ldo + qDim,
              got.begin() + t * qDim);
  return got;
}

const RowsCase kRowsCases[] = {
    {{4, 4, 16, 0}, 1, 0, 2},   // a single row and position
    {{4, 4, 16, 0}, 1, 40, 3},  // decode over a gappy past
    {{8, 2, 24, 0}, 6, 21, 2},  // GQA prefill chunk, half the past gone
    {{6, 6, 48, 0}, 30, 70, 5}, // parallel, several 8-wide score blocks
    {{2, 1, 20, 0}, 3, 9, 4},   // MQA, head_dim not a multiple of 16
    // Sliding windows over a gappy past: some rows' windows start in it,
    // and in the last case a row's window holds no present position but
    // its own (window 2, positions 1 and 6 absent: row 7 sees 7 alone).
    {{8, 2, 24, 0, 4}, 6, 21, 2},
    {{6, 6, 48, 0, 25}, 30, 70, 5},
    {{2, 2, 8, 0, 2}, 3, 7, 5},
};

TEST_P(KernelTest, AttentionRowsMatchesReference) {
  uint32_t seed = 40;
  for (const RowsCase &c : kRowsCases) {
    SCOPED_TRACE(::testing::Message()
                 << "T=" << c.T << " start=" << c.startPos << " heads "
                 << c.s.nHeads << "/" << c.s.nKvHeads << " hd " << c.s.headDim);
    std::vector<double> want;
    const std::vector<float> got = runAttentionRows(c, seed++, &want);
    EXPECT_TRUE(allNear(want, got, 1e-5, 0.0));
  }
}

TEST_P(KernelTest, AttentionRowsWithoutPositionsOutputsZeros) {
  // Row 0 (position 3) has nothing present at or before it; row 1 sees
  // only position 4.
  const AttnShape s{2, 2, 8, 0};
  const int64_t kvDim = 16, qDim = 16, T = 2, start = 3;
  std::mt19937 rng(9);
  const RowTable rows =
      randomRowTable(start + T, kvDim, {false, false, false, false, true}, rng);
  const std::vector<float> q = randomFloats(size_t(T * qDim), rng);
  std::vector<float> out(size_t(T * qDim), kSentinel);
  attentionRows(q.data(), qDim, out.data(), qDim, T, start, s.nHeads,
                s.nKvHeads, s.headDim, rows.kp.data(), rows.vp.data(), 0);
  for (int64_t i = 0; i < qDim; ++i) {
    EXPECT_EQ(out[i], 0.0f) << i;
    EXPECT_NEAR(out[qDim + i], rows.v[4][i], 1e-6) << i;
  }
}

TEST_P(KernelTest, AttentionRowsOverAFullTableEqualsAttention) {
  // The same leaf arithmetic reads the cache through pointers: with every
  // position present the results are bit-identical to attention(), with a
  // sliding window too.
  for (int64_t window : {0, 7}) {
    SCOPED_TRACE(::testing::Message() << "window " << window);
    const AttnShape s{6, 3, 40, 64};
    const int64_t kvDim = s.nKvHeads * s.headDim, qDim = s.nHeads * s.headDim;
    const int64_t T = 9, start = 30;
    std::mt19937 rng(12);
    std::vector<float> kc = randomFloats(size_t(s.maxSeq * kvDim), rng);
    std::vector<float> vc = randomFloats(size_t(s.maxSeq * kvDim), rng);
    const std::vector<float> q = randomFloats(size_t(T * qDim), rng, -2.f, 2.f);
    // attention() first writes rows start..start+T-1: give it those rows.
    std::vector<float> k(kc.begin() + start * kvDim,
                         kc.begin() + (start + T) * kvDim);
    std::vector<float> v(vc.begin() + start * kvDim,
                         vc.begin() + (start + T) * kvDim);
    std::vector<float> want(size_t(T * qDim)), got(size_t(T * qDim));
    attention(q.data(), qDim, k.data(), kvDim, v.data(), kvDim, want.data(),
              qDim, T, start, s.nHeads, s.nKvHeads, s.headDim,
              KvView{kc.data(), vc.data(), s.maxSeq, kvDim}, window);
    std::vector<const float *> kp, vp;
    for (int64_t p = 0; p < start + T; ++p) {
      kp.push_back(kc.data() + p * kvDim);
      vp.push_back(vc.data() + p * kvDim);
    }
    attentionRows(q.data(), qDim, got.data(), qDim, T, start, s.nHeads,
                  s.nKvHeads, s.headDim, kp.data(), vp.data(), window);
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4));
  }
}

TEST_P(CrossIsaTest, AttentionRowsAgrees) {
  for (const RowsCase &c : kRowsCases) {
    auto [portable, other] =
        onBoth([&] { return runAttentionRows(c, 77, nullptr); });
    EXPECT_TRUE(allNear(toDouble(portable), other, 1e-5, 0.0));
  }
}

TEST_P(KernelTest, ConcatRowsJoinsColumns) {
  std::mt19937 rng(21);
  for (auto [T, na, nb] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                           {5, 64, 64},
                           {300, 17, 33}}) {
    const std::vector<float> a = randomFloats(size_t(T * na), rng);
    const std::vector<float> b = randomFloats(size_t(T * nb), rng);
    std::vector<float> y(size_t(T * (na + nb)), kSentinel);
    concatRows(a.data(), na, b.data(), nb, y.data(), T);
    for (int64_t t = 0; t < T; ++t) {
      ASSERT_EQ(0, std::memcmp(&y[t * (na + nb)], &a[t * na], na * 4)) << t;
      ASSERT_EQ(0, std::memcmp(&y[t * (na + nb) + na], &b[t * nb], nb * 4))
          << t;
    }
  }
}

TEST_P(KernelTest, AddRowBiasAddsToEveryRowAndAllowsAliasing) {
  std::mt19937 rng(22);
  for (auto [T, cols, ld] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                             {3, 17, 20},
                             {400, 128, 192}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << T << " cols=" << cols);
    const std::vector<float> x = randomFloats(size_t(T * ld), rng);
    const std::vector<float> bias = randomFloats(size_t(cols), rng);
    std::vector<float> want = x;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < cols; ++i)
        want[t * ld + i] = x[t * ld + i] + bias[i];
    std::vector<float> y(x.size(), kSentinel);
    addRowBias(x.data(), ld, bias.data(), y.data(), ld, T, cols);
    for (int64_t t = 0; t < T; ++t)
      ASSERT_EQ(0, std::memcmp(&y[t * ld], &want[t * ld], cols * 4)) << t;
    EXPECT_TRUE(paddingUntouched(std::vector<float>(x.size(), kSentinel), y, T,
                                 cols, ld));
    std::vector<float> inPlace = x;
    addRowBias(inPlace.data(), ld, bias.data(), inPlace.data(), ld, T, cols);
    EXPECT_EQ(inPlace, want);
  }
}

TEST_P(KernelTest, EmbedScalesRows) {
  const int64_t vocab = 20, D = 100;
  std::mt19937 rng(23);
  const std::vector<float> table = randomFloats(size_t(vocab * D), rng);
  const std::vector<int32_t> tokens = {3, 19, 0, 3};
  const int64_t T = int64_t(tokens.size());
  const float scale = std::sqrt(5280.0f);
  std::vector<float> out(size_t(T * D), kSentinel);
  embed(tokens.data(), T, table.data(), D, out.data(), scale);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i)
      ASSERT_EQ(out[t * D + i], table[tokens[t] * D + i] * scale)
          << t << ", " << i;
}

//===----------------------------------------------------------------------===//
// layerNorm, geluTanh, selfAttention, addRows (REFRAG chunk encoder)
//===----------------------------------------------------------------------===//

// The encoder's shapes (T up to 17 rows, D 32 and its projector's 64, an
// odd D for the vector tails), a single feature, and one large enough to run
// rows in parallel.
const std::pair<int64_t, int64_t> kLayerNormShapes[] = {
    {1, 32}, {2, 32},  {5, 32},   {17, 32},  {1, 33}, {2, 33},
    {5, 33}, {17, 33}, {1, 64},   {2, 64},   {5, 64}, {17, 64},
    {3, 1},  {4, 7},   {9, 1000}, {300, 256}};

std::vector<double> layerNormReference(const std::vector<float> &x,
                                       const std::vector<float> &w,
                                       const std::vector<float> &b, int64_t T,
                                       int64_t D, float eps) {
  std::vector<double> y(size_t(T * D));
  for (int64_t t = 0; t < T; ++t) {
    double mean = 0.0;
    for (int64_t i = 0; i < D; ++i)
      mean += x[t * D + i];
    mean /= double(D);
    double var = 0.0;
    for (int64_t i = 0; i < D; ++i)
      var += (x[t * D + i] - mean) * (x[t * D + i] - mean);
    var /= double(D); // population variance
    const double rstd = 1.0 / std::sqrt(var + double(eps));
    for (int64_t i = 0; i < D; ++i)
      y[t * D + i] = (x[t * D + i] - mean) * rstd * w[i] + b[i];
  }
  return y;
}

struct LayerNormRun {
  std::vector<float> x, w, b, y;
};

// Rows centred away from zero (offset in [-4, 4]) so that a one-pass
// E[x^2] - mean^2 variance would lose digits.
LayerNormRun runLayerNorm(int64_t T, int64_t D, uint32_t seed) {
  std::mt19937 rng(seed);
  LayerNormRun r;
  r.x = randomFloats(size_t(T * D), rng, -2.0f, 2.0f);
  const std::vector<float> offset = randomFloats(size_t(T), rng, -4.0f, 4.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i)
      r.x[t * D + i] += offset[t];
  r.w = randomFloats(size_t(D), rng, 0.5f, 1.5f);
  r.b = randomFloats(size_t(D), rng, -1.0f, 1.0f);
  r.y.assign(size_t(T * D), kSentinel);
  layerNorm(r.x.data(), r.w.data(), r.b.data(), r.y.data(), T, D, 1e-5f);
  return r;
}

TEST_P(KernelTest, LayerNormMatchesReference) {
  for (auto [T, D] : kLayerNormShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << D);
    const LayerNormRun r = runLayerNorm(T, D, uint32_t(T * 131 + D));
    // Outputs are O(1) to O(5); float32 rounding of the mean, the deviations
    // and the scale stays within a few ulp of that.
    EXPECT_TRUE(allNear(layerNormReference(r.x, r.w, r.b, T, D, 1e-5f), r.y,
                        1e-6, 1e-5));
  }
}

TEST_P(KernelTest, LayerNormInPlaceEqualsOutOfPlace) {
  for (auto [T, D] : kLayerNormShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << D);
    const LayerNormRun r = runLayerNorm(T, D, uint32_t(T + 7 * D));
    std::vector<float> inPlace = r.x;
    layerNorm(inPlace.data(), r.w.data(), r.b.data(), inPlace.data(), T, D,
              1e-5f);
    EXPECT_EQ(0, std::memcmp(inPlace.data(), r.y.data(), r.y.size() * 4));
  }
}

TEST_P(KernelTest, LayerNormKnownValues) {
  // mean 2.5, population variance 1.25 (the sample variance would be 5/3).
  const float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  const float w[4] = {1.0f, 2.0f, -1.0f, 0.5f};
  const float b[4] = {0.0f, 1.0f, 0.0f, -2.0f};
  float y[4];
  layerNorm(x, w, b, y, 1, 4, 0.0f);
  const double s = 1.0 / std::sqrt(1.25);
  EXPECT_NEAR(y[0], -1.5 * s, 1e-6);
  EXPECT_NEAR(y[1], -0.5 * s * 2.0 + 1.0, 1e-6);
  EXPECT_NEAR(y[2], -0.5 * s, 1e-6);
  EXPECT_NEAR(y[3], 1.5 * s * 0.5 - 2.0, 1e-6);
  // eps is added to the variance, not to its root.
  layerNorm(x, w, b, y, 1, 4, 0.75f);
  EXPECT_NEAR(y[0], -1.5 / std::sqrt(2.0), 1e-6);
  // A constant row has zero deviation: the output is exactly the bias.
  std::vector<float> c(33, 7.0f), cw(33, 3.0f), cb(33);
  for (size_t i = 0; i < cb.size(); ++i)
    cb[i] = float(i) * 0.25f - 1.0f;
  layerNorm(c.data(), cw.data(), cb.data(), c.data(), 1, 33, 1e-5f);
  EXPECT_EQ(c, cb);
}

TEST_P(CrossIsaTest, LayerNormAgrees) {
  for (const auto &shape : kLayerNormShapes) {
    const int64_t T = shape.first, D = shape.second;
    SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << D);
    auto [portable, other] = onBoth([&] { return runLayerNorm(T, D, 5).y; });
    EXPECT_TRUE(allNear(toDouble(portable), other, 1e-6, 1e-5));
  }
}

// 0.5 x (1 + tanh(u)) in double, written as x / (1 + exp(-2u)): the literal
// form cancels to nothing for x below about -6 even in double.
double geluReference(double x) {
  const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  return x / (1.0 + std::exp(-2.0 * u));
}

std::vector<float> geluInputs(int64_t n, std::mt19937 &rng) {
  std::vector<float> x = randomFloats(size_t(n), rng, -8.0f, 8.0f);
  // Zero, the hand values, the far tails (exp overflowing float on the
  // negative side), and tiny magnitudes.
  const float special[] = {0.0f,   -0.0f,   1.0f,   -1.0f,   3.0f,  -3.0f,
                           20.0f,  -20.0f,  100.0f, -100.0f, 1e-3f, -1e-3f,
                           1e-20f, -1e-20f, 1e10f,  -1e10f};
  for (size_t i = 0; i < std::size(special) && i < x.size(); ++i)
    x[(i * 7919) % x.size()] = special[i];
  return x;
}

std::vector<float> runGelu(int64_t n, uint32_t seed,
                           std::vector<double> *want) {
  std::mt19937 rng(seed);
  const std::vector<float> x = geluInputs(n, rng);
  std::vector<float> y(size_t(n), kSentinel);
  geluTanh(x.data(), y.data(), n);
  if (want) {
    want->resize(size_t(n));
    for (int64_t i = 0; i < n; ++i)
      (*want)[i] = geluReference(x[i]);
  }
  return y;
}

TEST(GeluReference, EqualsTheTanhFormula) {
  // Checks the test's own rewrite where the literal form is still accurate.
  for (double x = -5.0; x <= 5.0; x += 0.125) {
    const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
    EXPECT_NEAR(geluReference(x), 0.5 * x * (1.0 + std::tanh(u)), 1e-14) << x;
  }
}

TEST_P(KernelTest, GeluTanhMatchesReference) {
  for (int64_t n : kElementwiseSizes) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    std::vector<double> want;
    const std::vector<float> y = runGelu(n, uint32_t(n + 3), &want);
    // Relative 2e-6 is a few ulp where the output is not tiny. For x < -3
    // the output is exp(-z)-small with z = O(|x|^3) and inherits z's float
    // rounding (relative ~ z * 1e-7); the absolute 1e-7 admits that.
    EXPECT_TRUE(allNear(want, y, 1e-7, 2e-6));
  }
}

TEST_P(KernelTest, GeluTanhKnownValues) {
  const float x[] = {0.0f, 1.0f, -1.0f, 2.0f, -0.5f, 20.0f, -20.0f};
  float y[std::size(x)];
  geluTanh(x, y, int64_t(std::size(x)));
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_NEAR(y[1], 0.841192, 1e-6);
  EXPECT_NEAR(y[2], -0.158808, 1e-6);
  EXPECT_NEAR(y[3], 1.954598, 1e-6);  // 0.5*2*(1+tanh(1.7236...))
  EXPECT_NEAR(y[4], -0.154286, 1e-6); // 0.5*-0.5*(1+tanh(-0.4034...))
  EXPECT_EQ(y[5], 20.0f);             // saturated: exactly x
  EXPECT_NEAR(y[6], 0.0, 1e-30);      // underflows to (-)0
  // Not the erf GELU: that gives 0.841345 at 1, 1.6e-4 away.
  EXPECT_GT(std::fabs(y[1] - 0.8413447460685429), 1e-4);
}

TEST_P(KernelTest, GeluTanhInPlaceEqualsOutOfPlace) {
  for (int64_t n : kElementwiseSizes) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    std::mt19937 rng(static_cast<uint32_t>(n));
    const std::vector<float> x = geluInputs(n, rng);
    std::vector<float> y(size_t(n), kSentinel);
    geluTanh(x.data(), y.data(), n);
    std::vector<float> inPlace = x;
    geluTanh(inPlace.data(), inPlace.data(), n);
    EXPECT_EQ(0, std::memcmp(inPlace.data(), y.data(), y.size() * 4));
  }
}

TEST_P(CrossIsaTest, GeluTanhAgrees) {
  for (int64_t n : kElementwiseSizes) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto [portable, other] = onBoth([&] { return runGelu(n, 9, nullptr); });
    EXPECT_TRUE(allNear(toDouble(portable), other, 1e-7, 2e-6));
  }
}

struct SelfAttnCase {
  int64_t T, nHeads, headDim;
  int64_t padQ, padK, padV, padO; // ld = n_heads * head_dim + pad
};

std::ostream &operator<<(std::ostream &os, const SelfAttnCase &c) {
  return os << "T=" << c.T << " heads=" << c.nHeads << "x" << c.headDim
            << " pads q" << c.padQ << " k" << c.padK << " v" << c.padV << " o"
            << c.padO;
}

// The encoder's 4 heads x 8 at T = 1, 2, 5, 17, with K and V strides equal
// (the strided leaf) and different (the row-pointer leaf); head sizes that
// are not a multiple of 16 or need three vectors; enough rows to fill the
// 8-wide score blocks and to run in parallel.
const SelfAttnCase kSelfAttnCases[] = {
    {1, 4, 8, 0, 0, 0, 0},   {2, 4, 8, 3, 1, 2, 5},    {5, 4, 8, 3, 1, 2, 5},
    {17, 4, 8, 3, 1, 2, 5},  {1, 4, 8, 2, 4, 4, 1},    {2, 4, 8, 0, 6, 6, 3},
    {5, 4, 8, 1, 7, 7, 0},   {17, 4, 8, 5, 9, 9, 2},   {9, 2, 20, 1, 3, 0, 4},
    {33, 6, 48, 0, 2, 2, 7}, {130, 8, 64, 4, 0, 8, 0},
};

double selfAttnTolerance() { return 1e-5; }

// q, k and v drawn for the case; out[t, :] of width n_heads * head_dim.
struct SelfAttnData {
  SelfAttnCase c;
  int64_t width, ldq, ldk, ldv, ldo;
  std::vector<float> q, k, v;

  SelfAttnData(const SelfAttnCase &sc, uint32_t seed)
      : c(sc), width(sc.nHeads * sc.headDim), ldq(width + sc.padQ),
        ldk(width + sc.padK), ldv(width + sc.padV), ldo(width + sc.padO) {
    std::mt19937 rng(seed);
    // Larger queries make the softmax less uniform, so mixing up rows or
    // heads shows.
    q = randomFloats(size_t(c.T * ldq), rng, -2.0f, 2.0f);
    k = randomFloats(size_t(c.T * ldk), rng);
    v = randomFloats(size_t(c.T * ldv), rng);
  }

  // The whole [T, ldo] output buffer, padding included.
  std::vector<float> run(const float *kp, int64_t ldkUsed, const float *vp,
                         int64_t ldvUsed) const {
    std::vector<float> out(size_t(c.T * ldo), kSentinel);
    selfAttention(q.data(), ldq, kp, ldkUsed, vp, ldvUsed, out.data(), ldo, c.T,
                  c.nHeads, c.headDim);
    return out;
  }
  std::vector<float> run() const { return run(k.data(), ldk, v.data(), ldv); }

  std::vector<double> reference() const {
    std::vector<double> want(size_t(c.T * ldo), kSentinel);
    const int64_t hd = c.headDim;
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t a = 0; a < c.nHeads; ++a) {
        std::vector<double> w(size_t(c.T));
        double mx = -INFINITY;
        for (int64_t s = 0; s < c.T; ++s) { // every row: no causal mask
          double dot = 0.0;
          for (int64_t i = 0; i < hd; ++i)
            dot += double(q[t * ldq + a * hd + i]) * k[s * ldk + a * hd + i];
          w[s] = dot / std::sqrt(double(hd));
          mx = std::max(mx, w[s]);
        }
        double sum = 0.0;
        for (double &x : w)
          sum += (x = std::exp(x - mx));
        for (int64_t i = 0; i < hd; ++i) {
          double o = 0.0;
          for (int64_t s = 0; s < c.T; ++s)
            o += w[s] / sum * v[s * ldv + a * hd + i];
          want[t * ldo + a * hd + i] = o;
        }
      }
    return want;
  }
};

TEST_P(KernelTest, SelfAttentionMatchesReference) {
  uint32_t seed = 60;
  for (const SelfAttnCase &c : kSelfAttnCases) {
    SCOPED_TRACE(::testing::Message() << c);
    const SelfAttnData d(c, seed++);
    const std::vector<float> out = d.run();
    // Padding columns keep the sentinel in both.
    EXPECT_TRUE(allNear(d.reference(), out, selfAttnTolerance(), 0.0));
    EXPECT_TRUE(paddingUntouched(std::vector<float>(out.size(), kSentinel), out,
                                 c.T, d.width, d.ldo));
  }
}

TEST_P(KernelTest, SelfAttentionOverOneRowCopiesV) {
  // softmax over a single position is 1: out = v.
  const SelfAttnData d({1, 4, 8, 0, 0, 0, 0}, 3);
  const std::vector<float> out = d.run();
  for (int64_t i = 0; i < d.width; ++i)
    EXPECT_NEAR(out[i], d.v[i], 1e-6) << i;
}

TEST_P(KernelTest, SelfAttentionEarlyRowsSeeLaterRows) {
  // Row 0's keys all score 0 except row T-1's, which is huge: bidirectional
  // attention makes row 0 output row T-1's values (a causal one, its own).
  const int64_t T = 5, H = 4, hd = 8, width = H * hd;
  std::vector<float> q(size_t(T * width), 1.0f), k(size_t(T * width), 0.0f);
  std::vector<float> v(size_t(T * width));
  for (int64_t i = 0; i < hd * H; ++i)
    k[(T - 1) * width + i] = 10.0f;
  for (int64_t s = 0; s < T; ++s)
    for (int64_t i = 0; i < width; ++i)
      v[s * width + i] = float(s * 100 + i);
  std::vector<float> out(size_t(T * width), kSentinel);
  selfAttention(q.data(), width, k.data(), width, v.data(), width, out.data(),
                width, T, H, hd);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < width; ++i)
      EXPECT_NEAR(out[t * width + i], v[(T - 1) * width + i], 1e-3)
          << "t=" << t << " i=" << i;
}

TEST_P(KernelTest, SelfAttentionFromAFusedQkvBuffer) {
  // q, k, v as column ranges of one [T, 3 * width] buffer (one strided leaf
  // for K and V), against the same values in three dense buffers.
  const int64_t T = 17, H = 4, hd = 8, width = H * hd, ld = 3 * width;
  std::mt19937 rng(31);
  const std::vector<float> qkv = randomFloats(size_t(T * ld), rng, -2.f, 2.f);
  std::vector<float> q(size_t(T * width)), k(q.size()), v(q.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < width; ++i) {
      q[t * width + i] = qkv[t * ld + i];
      k[t * width + i] = qkv[t * ld + width + i];
      v[t * width + i] = qkv[t * ld + 2 * width + i];
    }
  std::vector<float> fused(size_t(T * width)), dense(size_t(T * width));
  selfAttention(qkv.data(), ld, qkv.data() + width, ld, qkv.data() + 2 * width,
                ld, fused.data(), width, T, H, hd);
  selfAttention(q.data(), width, k.data(), width, v.data(), width, dense.data(),
                width, T, H, hd);
  EXPECT_EQ(0, std::memcmp(fused.data(), dense.data(), fused.size() * 4));
}

TEST_P(KernelTest, SelfAttentionStridedAndRowPointerPathsAreBitIdentical) {
  // Equal K and V strides take attendHead, unequal ones attendHeadRows; the
  // same values must give the same bits either way.
  for (const SelfAttnCase &c : kSelfAttnCases) {
    SCOPED_TRACE(::testing::Message() << c);
    const SelfAttnData d(c, 90);
    // V re-laid with K's stride (equal strides), and with K's stride + 1.
    for (int64_t extra : {int64_t(0), int64_t(1)}) {
      const int64_t ld = d.ldk + extra;
      std::vector<float> v2(size_t(c.T * ld), kSentinel);
      for (int64_t t = 0; t < c.T; ++t)
        std::copy(d.v.begin() + t * d.ldv, d.v.begin() + t * d.ldv + d.width,
                  v2.begin() + t * ld);
      const std::vector<float> a = d.run();
      const std::vector<float> b = d.run(d.k.data(), d.ldk, v2.data(), ld);
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4))
          << "extra=" << extra;
    }
  }
}

TEST_P(KernelTest, SelfAttentionDoesNotDependOnThreadCount) {
  const SelfAttnData d({130, 8, 64, 4, 0, 8, 0}, 17);
  std::vector<float> one, two;
  tbb::task_arena(1).execute([&] { one = d.run(); });
  tbb::task_arena(2).execute([&] { two = d.run(); });
  EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * 4));
}

TEST_P(CrossIsaTest, SelfAttentionAgrees) {
  for (const SelfAttnCase &c : kSelfAttnCases) {
    SCOPED_TRACE(::testing::Message() << c);
    const SelfAttnData d(c, 123);
    auto [portable, other] = onBoth([&] { return d.run(); });
    EXPECT_TRUE(allNear(toDouble(portable), other, selfAttnTolerance(), 0.0));
  }
}

TEST_P(KernelTest, AddRowsAddsLeadingTableRowsExactly) {
  std::mt19937 rng(24);
  for (auto [T, D, tableRows] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 32, 17},
        {2, 32, 17},
        {5, 33, 17},
        {17, 32, 17},
        {17, 64, 20},
        {300, 256, 512}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << D);
    const std::vector<float> table = randomFloats(size_t(tableRows * D), rng);
    // One row of sentinels past y's T rows: must stay as they are.
    std::vector<float> y = randomFloats(size_t((T + 1) * D), rng);
    std::fill(y.begin() + T * D, y.end(), kSentinel);
    std::vector<float> want = y;
    for (int64_t i = 0; i < T * D; ++i)
      want[i] = y[i] + table[i];
    addRows(table.data(), y.data(), T, D);
    EXPECT_EQ(y, want);
  }
}

//===----------------------------------------------------------------------===//
// bf16 weights: read as stored and widened in registers, so every result is
// bit for bit the one of the widened f32 weights.

// Random bf16 values (every bit pattern of a finite number in [-2, 2],
// including subnormals and signed zeros), and their exact f32 widening.
struct Bf16Values {
  std::vector<uint16_t> bits;
  std::vector<float> widened;
  Bf16Values(size_t n, std::mt19937 &rng) : bits(n), widened(n) {
    std::uniform_int_distribution<uint32_t> dist(0, 0xffff);
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      do
        h = static_cast<uint16_t>(dist(rng));
      while ((h & 0x7f80) > 0x3f80 + 0x80); // |v| < 4: no inf, no NaN
      bits[i] = h;
      const uint32_t f = uint32_t(h) << 16;
      std::memcpy(&widened[i], &f, sizeof f);
    }
  }
};

// Steps of up to kBf16F32ActivationRows rows: bit for bit the widened
// matrix's product. Longer steps round the activations to bf16 too: on the
// f32 micro-kernel (portable, or AVX-512 without AVX512_BF16) bit for bit
// the widened product of the rounded activations; with vdpbf16ps the same
// products summed in pairs, so near it.
// v rounded to the nearest bf16, ties to even (finite v), as an f32.
float roundedToBf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

TEST_P(KernelTest, MatmulOfBf16Weights) {
  uint32_t seed = 100;
  const bool dot = GetParam() == Isa::Avx512 && bf16DotProducts();
  for (const MatmulShape &shape : kMatmulShapes) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << shape << " accumulate=" << accumulate);
      MatmulData d(shape, seed++);
      std::mt19937 rng(seed);
      const Bf16Values w(d.W.size(), rng);
      d.W = w.widened;
      const bool rounds = shape.T > kBf16F32ActivationRows;
      if (rounds)
        for (float &v : d.x)
          v = roundedToBf16(v);
      const std::vector<float> want = d.run(accumulate);
      std::vector<float> y = d.y0;
      matmul(d.x.data(), d.ldx, w.bits.data(), y.data(), d.ldy, shape.T,
             shape.K, shape.N, accumulate);
      if (rounds && dot)
        EXPECT_TRUE(allNear(toDouble(want), y, 4 * d.tolerance(), 1e-6));
      else
        ASSERT_EQ(0,
                  std::memcmp(y.data(), want.data(), y.size() * sizeof(float)));
      EXPECT_TRUE(paddingUntouched(d.y0, y, shape.T, shape.N, d.ldy));
      // And it is a product: near the exact one of what it multiplies.
      EXPECT_TRUE(allNear(d.reference(accumulate), y, 4 * d.tolerance(), 0.0));
    }
  }
}

// The rounding of a long step's activations is to nearest, ties to even,
// whichever kernel multiplies: rows of x whose values sit exactly between
// two bf16 values, times an identity-like W, come out rounded to even.
TEST_P(KernelTest, Bf16ActivationsRoundToNearestEven) {
  const int64_t T = 9, K = 4, N = 4;
  // 1 + 2^-8 (tie: down to 1), 1 + 3 * 2^-8 (tie: up to 1 + 2^-6),
  // 1 + 2^-8 + 2^-20 (above the tie: up), -0.0.
  const float row[4] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f,
                        1.0f + 0x1p-8f + 0x1p-20f, -0.0f};
  const float want[4] = {1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f, 0.0f};
  std::vector<float> x(size_t(T * K));
  for (int64_t t = 0; t < T; ++t)
    std::copy(row, row + 4, x.begin() + t * K);
  std::vector<uint16_t> eye(size_t(N * K), 0);
  for (int64_t i = 0; i < 4; ++i)
    eye[size_t(i * K + i)] = 0x3f80; // 1.0
  std::vector<float> y(size_t(T * N), kSentinel);
  matmul(x.data(), K, eye.data(), y.data(), N, T, K, N, false);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < 4; ++i)
      EXPECT_EQ(y[size_t(t * N + i)], want[i]) << "row " << t << " col " << i;
}

TEST_P(KernelTest, EmbedAndAddRowsWidenBf16Tables) {
  const int64_t vocab = 40, D = 72;
  std::mt19937 rng(9);
  const Bf16Values table(size_t(vocab * D), rng);
  for (int64_t T : {1, 7, 40}) {
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    std::vector<int32_t> tokens(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t)
      tokens[t] = int32_t((t * 13 + 5) % vocab);
    for (float scale : {1.0f, 0.37f}) {
      std::vector<float> got(size_t(T * D), kSentinel), want = got;
      embed(tokens.data(), T, table.bits.data(), D, got.data(), scale);
      embed(tokens.data(), T, table.widened.data(), D, want.data(), scale);
      ASSERT_EQ(
          0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)));
    }
    std::vector<float> y = randomFloats(size_t(T * D), rng), want = y;
    addRows(table.bits.data(), y.data(), T, D);
    addRows(table.widened.data(), want.data(), T, D);
    ASSERT_EQ(0, std::memcmp(y.data(), want.data(), y.size() * sizeof(float)));
  }
}

//===----------------------------------------------------------------------===//
// Q8_0 and Q4_0 weights: blocks of 32 (an f16 scale d, then 32 int8 q or
// 32 4-bit q), decoded in registers to d * q or d * (q - 8), exactly f32s:
// every result is bit for bit the one of the decoded f32 weights, in every
// step length.

// Random Q8_0 or Q4_0 blocks for a [rows, K] matrix: scales of every kind
// (normal, subnormal, zero, negative), q over its whole range; and the
// decoded matrix.
struct QuantMatrix {
  std::vector<uint8_t> blocks;
  std::vector<float> decoded;
  QuantMatrix(int64_t rows, int64_t K, std::mt19937 &rng, bool q4 = false) {
    std::uniform_int_distribution<int> q(-128, 127), pick(0, 9);
    std::uniform_int_distribution<uint32_t> half(0, 0x7bff);
    for (int64_t b = 0; b < rows * K / 32; ++b) {
      uint16_t d;
      switch (pick(rng)) {
      case 0:
        d = 0; // a zero block
        break;
      case 1:
        d = static_cast<uint16_t>(half(rng) & 0x3ff); // subnormal
        break;
      default: // normal, |d| in [2^-14, 2^-2]
        d = static_cast<uint16_t>(0x0400 + half(rng) % (0x3400 - 0x0400));
      }
      if (pick(rng) < 5)
        d |= 0x8000;
      const float scale = loom::halfToFloat(d);
      uint8_t block[34];
      std::memcpy(block, &d, 2);
      if (q4) {
        int v[32];
        for (int j = 0; j < 32; ++j)
          v[j] = q(rng) & 15;
        for (int j = 0; j < 16; ++j)
          block[2 + j] = static_cast<uint8_t>(v[j] | (v[j + 16] << 4));
        blocks.insert(blocks.end(), block, block + 18);
        for (int j = 0; j < 32; ++j)
          decoded.push_back(scale * float(v[j] - 8));
        continue;
      }
      for (int j = 0; j < 32; ++j)
        block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q(rng)));
      blocks.insert(blocks.end(), block, block + 34);
      for (int j = 0; j < 32; ++j)
        decoded.push_back(scale * float(static_cast<int8_t>(block[2 + j])));
    }
  }
  Weights weights(bool q4) const {
    return q4 ? Weights::q4_0(blocks.data()) : Weights(blocks.data());
  }
};

// Rows of whole blocks; K blocks of the GEMM that start mid-block (K = 800:
// 4 x 200; K = 1600: 7 x ~229), one-row and multi-row steps, padded rows.
const MatmulShape kQ8MatmulShapes[] = {
    {1, 32, 1, 0, 0},     {1, 64, 37, 3, 0},     {1, 768, 33, 0, 0},
    {1, 800, 259, 16, 1}, {2, 32, 32, 0, 0},     {5, 96, 70, 7, 2},
    {9, 608, 40, 0, 0},   {12, 288, 45, 1, 2},   {37, 800, 65, 0, 3},
    {40, 1600, 33, 0, 0}, {130, 544, 100, 0, 0}, {256, 320, 200, 20, 9},
};

TEST_P(KernelTest, MatmulOfQuantizedWeights) {
  uint32_t seed = 300;
  for (bool q4 : {false, true}) {
    for (const MatmulShape &shape : kQ8MatmulShapes) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(::testing::Message() << (q4 ? "Q4_0 " : "Q8_0 ") << shape
                                          << " accumulate=" << accumulate);
        MatmulData d(shape, seed++);
        std::mt19937 rng(seed);
        const QuantMatrix w(shape.N, shape.K, rng, q4);
        d.W = w.decoded;
        const std::vector<float> want = d.run(accumulate);
        std::vector<float> y = d.y0;
        matmul(d.x.data(), d.ldx, w.weights(q4), y.data(), d.ldy, shape.T,
               shape.K, shape.N, accumulate);
        ASSERT_EQ(0,
                  std::memcmp(y.data(), want.data(), y.size() * sizeof(float)));
        EXPECT_TRUE(paddingUntouched(d.y0, y, shape.T, shape.N, d.ldy));
      }
    }
  }
}

TEST_P(KernelTest, EmbedAndAddRowsDecodeQuantizedTables) {
  const int64_t vocab = 40, D = 96;
  for (bool q4 : {false, true}) {
    std::mt19937 rng(11);
    const QuantMatrix table(vocab, D, rng, q4);
    for (int64_t T : {1, 7, 40}) {
      SCOPED_TRACE(::testing::Message()
                   << (q4 ? "Q4_0" : "Q8_0") << " T=" << T);
      std::vector<int32_t> tokens(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t)
        tokens[t] = int32_t((t * 13 + 5) % vocab);
      std::vector<float> got(size_t(T * D), kSentinel), want = got;
      embed(tokens.data(), T, table.weights(q4), D, got.data(), 0.37f);
      embed(tokens.data(), T, table.decoded.data(), D, want.data(), 0.37f);
      ASSERT_EQ(
          0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)));
      std::vector<float> y = randomFloats(size_t(T * D), rng), sum = y;
      addRows(table.weights(q4), y.data(), T, D);
      addRows(table.decoded.data(), sum.data(), T, D);
      ASSERT_EQ(0, std::memcmp(y.data(), sum.data(), y.size() * sizeof(float)));
    }
  }
}

// ggml's K formats (Q2_K..Q6_K, blocks of 256): decoded in registers (the
// matrix-vector kernels) or to f32 rows before packing (the GEMM), as
// loom/ggml_blocks.h decodes them, so every result is bit for bit the one
// of the decoded f32 weights, in every step length.

// Random K-format blocks for a [rows, K] matrix: random bytes, with the
// half scales (d, dmin) of every kind (normal, subnormal, zero, negative);
// and the decoded matrix.
struct KFormatMatrix {
  std::vector<uint8_t> blocks;
  std::vector<float> decoded;
  KFormatMatrix(loom::ggml::BlockType type, int64_t rows, int64_t K,
                std::mt19937 &rng) {
    const loom::ggml::BlockFormat f = loom::ggml::blockFormat(type);
    std::uniform_int_distribution<int> byte(0, 255), pick(0, 9);
    std::uniform_int_distribution<uint32_t> half(0, 0x7bff);
    // Byte offsets of each format's half fields.
    std::vector<int> halves;
    switch (type) {
    case loom::ggml::BlockType::Q2_K:
      halves = {80, 82};
      break;
    case loom::ggml::BlockType::Q3_K:
      halves = {108};
      break;
    case loom::ggml::BlockType::Q6_K:
      halves = {208};
      break;
    default: // Q4_K, Q5_K
      halves = {0, 2};
    }
    blocks.resize(size_t(rows * K / f.values * f.bytes));
    for (uint8_t &b : blocks)
      b = static_cast<uint8_t>(byte(rng));
    for (size_t at = 0; at < blocks.size(); at += size_t(f.bytes))
      for (int o : halves) {
        uint16_t d;
        switch (pick(rng)) {
        case 0:
          d = 0;
          break;
        case 1:
          d = static_cast<uint16_t>(half(rng) & 0x3ff); // subnormal
          break;
        default: // |d| in [2^-14, 2^-6]: values stay far from overflow
          d = static_cast<uint16_t>(0x0400 + half(rng) % (0x1400 - 0x0400));
        }
        if (pick(rng) < 5)
          d |= 0x8000;
        std::memcpy(&blocks[at + size_t(o)], &d, 2);
      }
    decoded.resize(size_t(rows * K));
    for (size_t b = 0; b < blocks.size() / size_t(f.bytes); ++b)
      loom::ggml::decodeBlock(type, &blocks[b * size_t(f.bytes)],
                              &decoded[b * size_t(f.values)]);
  }
};

const std::pair<loom::ggml::BlockType, Weights::Encoding> kKFormats[] = {
    {loom::ggml::BlockType::Q2_K, Weights::Encoding::Q2_K},
    {loom::ggml::BlockType::Q3_K, Weights::Encoding::Q3_K},
    {loom::ggml::BlockType::Q4_K, Weights::Encoding::Q4_K},
    {loom::ggml::BlockType::Q5_K, Weights::Encoding::Q5_K},
    {loom::ggml::BlockType::Q6_K, Weights::Encoding::Q6_K},
};

// Rows of whole blocks of 256; one-row steps with 8-row groups and tails,
// multi-row steps over one and several K blocks, padded rows.
const MatmulShape kKFormatShapes[] = {
    {1, 256, 1, 0, 0},    {1, 512, 37, 3, 0},  {1, 768, 16, 0, 1},
    {2, 256, 33, 0, 0},   {9, 1024, 40, 5, 2}, {37, 512, 65, 0, 3},
    {70, 768, 100, 0, 0},
};

TEST_P(KernelTest, MatmulOfKFormatWeights) {
  uint32_t seed = 700;
  for (auto [type, encoding] : kKFormats) {
    for (const MatmulShape &shape : kKFormatShapes) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << "format " << static_cast<int>(encoding) << " " << shape
                     << " accumulate=" << accumulate);
        MatmulData d(shape, seed++);
        std::mt19937 rng(seed);
        const KFormatMatrix w(type, shape.N, shape.K, rng);
        d.W = w.decoded;
        const std::vector<float> want = d.run(accumulate);
        std::vector<float> y = d.y0;
        matmul(d.x.data(), d.ldx, Weights::blocks(encoding, w.blocks.data()),
               y.data(), d.ldy, shape.T, shape.K, shape.N, accumulate);
        ASSERT_EQ(0,
                  std::memcmp(y.data(), want.data(), y.size() * sizeof(float)));
        EXPECT_TRUE(paddingUntouched(d.y0, y, shape.T, shape.N, d.ldy));
      }
    }
  }
}

TEST_P(KernelTest, EmbedAndAddRowsDecodeKFormatTables) {
  const int64_t vocab = 32, D = 512;
  for (auto [type, encoding] : kKFormats) {
    std::mt19937 rng(13);
    const KFormatMatrix table(type, vocab, D, rng);
    const Weights w = Weights::blocks(encoding, table.blocks.data());
    for (int64_t T : {1, 7, 30}) {
      SCOPED_TRACE(::testing::Message()
                   << "format " << static_cast<int>(encoding) << " T=" << T);
      std::vector<int32_t> tokens(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t)
        tokens[t] = int32_t((t * 7 + 3) % vocab);
      std::vector<float> got(size_t(T * D), kSentinel), want = got;
      embed(tokens.data(), T, w, D, got.data(), 0.37f);
      embed(tokens.data(), T, table.decoded.data(), D, want.data(), 0.37f);
      ASSERT_EQ(
          0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)));
      std::vector<float> y = randomFloats(size_t(T * D), rng), sum = y;
      addRows(w, y.data(), T, D);
      addRows(table.decoded.data(), sum.data(), T, D);
      ASSERT_EQ(0, std::memcmp(y.data(), sum.data(), y.size() * sizeof(float)));
    }
  }
}

// IEEE half weights: widened in registers (exact), so every result is bit
// for bit the widened matrix's, in every step length.
TEST_P(KernelTest, MatmulOfF16Weights) {
  uint32_t seed = 500;
  for (const MatmulShape &shape : kMatmulShapes) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << shape << " accumulate=" << accumulate);
      MatmulData d(shape, seed++);
      std::mt19937 rng(seed);
      // Every finite half of magnitude below 4: normals, subnormals, zeros.
      std::uniform_int_distribution<uint32_t> bits(0, 0xffff);
      std::vector<uint16_t> halves(d.W.size());
      for (size_t i = 0; i < halves.size(); ++i) {
        uint16_t h;
        do
          h = static_cast<uint16_t>(bits(rng));
        while ((h & 0x7fff) >= 0x4400);
        halves[i] = h;
        d.W[i] = loom::halfToFloat(h);
      }
      const std::vector<float> want = d.run(accumulate);
      std::vector<float> y = d.y0;
      matmul(d.x.data(), d.ldx, Weights::f16(halves.data()), y.data(), d.ldy,
             shape.T, shape.K, shape.N, accumulate);
      ASSERT_EQ(0,
                std::memcmp(y.data(), want.data(), y.size() * sizeof(float)));
      EXPECT_TRUE(paddingUntouched(d.y0, y, shape.T, shape.N, d.ldy));
    }
  }
}

// The shared decoder widens every half exactly.
TEST(Q8, HalfToFloatIsExact) {
  EXPECT_EQ(loom::halfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(loom::halfToFloat(0xc000), -2.0f);
  EXPECT_EQ(loom::halfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(loom::halfToFloat(0x0001), 0x1p-24f); // smallest subnormal
  EXPECT_EQ(loom::halfToFloat(0x03ff), 0x3ffp-24f);
  EXPECT_EQ(loom::halfToFloat(0x0400), 0x1p-14f);
  EXPECT_EQ(loom::halfToFloat(0x7c00), INFINITY);
  EXPECT_TRUE(std::isnan(loom::halfToFloat(0x7e00)));
  EXPECT_EQ(std::signbit(loom::halfToFloat(0x8000)), true);
}

INSTANTIATE_TEST_SUITE_P(Isas, KernelTest,
                         ::testing::Values(Isa::Portable, Isa::Avx2,
                                           Isa::Avx512),
                         [](const ::testing::TestParamInfo<Isa> &info) {
                           return std::string(isaName(info.param));
                         });
INSTANTIATE_TEST_SUITE_P(Isas, CrossIsaTest,
                         ::testing::Values(Isa::Avx2, Isa::Avx512),
                         [](const ::testing::TestParamInfo<Isa> &info) {
                           return std::string(isaName(info.param));
                         });

} // namespace
} // namespace loom::rt::cpu
