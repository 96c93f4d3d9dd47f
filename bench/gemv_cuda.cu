// loom-bench-gemv: the decode GEMV kernels of the CUDA backend
// (runtime/cuda/kernels.cuh) on the matrix shapes of the benchmark models,
// for every configuration (U loads in flight, S warps per column), against
// the baseline configuration 4,1 (one warp per column) in the same
// process. Each shape gets enough copies of its matrix (random bf16) that
// a timed sequence never finds the weights in L2; each launch reads one
// copy, as a decode step reads each matrix once. Launches are captured as a
// CUDA graph with programmatic dependent launch, as the executor's decode
// graphs are. Every configuration's output is checked against a double
// precision host product first (1 row and 3 rows).
//
//   loom-bench-gemv [--shapes 1b|110m|all] [--reps N] [--bulk | --chain]
//
// Each configuration also runs with gemvColumn's A ("+ahead":
// LOOM_CUDA_GEMV_AHEAD=1, two groups of loads before the programmatic
// wait). --bulk runs gemvBulkKernel instead ("bulkN": LOOM_CUDA_GEMV_BULK=N,
// an experiment; the 1B's shapes: K 2048 or 8192, gate/up at K 2048),
// against the baseline and the default configuration; on its own, as a
// kernel that hangs or traps must not cost the other numbers. --chain
// times a persistent kernel against the chain of launches (below, at
// runChain's kernels).
//
// Prints, per shape and configuration, microseconds a launch, the read
// bandwidth in GB/s and the ratio to the baseline; "auto" marks the
// executor's default choice (gemvConfigFor).
#include "../runtime/cuda/kernels.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

using namespace loom::rt::cuda;

namespace {

void check(cudaError_t e, const char *what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "loom-bench-gemv: %s: %s\n", what,
                 cudaGetErrorString(e));
    std::exit(1);
  }
}

__global__ void fillBf16(__nv_bfloat16 *w, int64_t n, uint32_t seed,
                         float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    w[i] = __float2bfloat16(scale * ((h & 0xffff) / 32768.0f - 1.0f));
  }
}

struct Shape {
  const char *name;
  int64_t N, K;
  bool gate_up;
};

// Launches with programmatic dependent launch, as the executor does, or
// (cooperative) as a persistent kernel whose blocks must all be resident.
struct Launcher {
  cudaStream_t stream;
  unsigned threads = kGemvThreads;
  size_t smem = 0;
  bool cooperative = false;
  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), unsigned blocks, A &&...args) const {
    cudaLaunchAttribute attr[1];
    if (cooperative) {
      attr[0].id = cudaLaunchAttributeCooperative;
      attr[0].val.cooperative = 1;
    } else {
      attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr[0].val.programmaticStreamSerializationAllowed = 1;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = blocks;
    cfg.blockDim = threads;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    check(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...), "launch");
  }
};

struct Bench {
  Shape s;
  int copies = 1;
  std::vector<__nv_bfloat16 *> w1, w3; // w3: gate/up only
  float *x = nullptr, *a = nullptr, *b = nullptr, *y = nullptr;
  cudaStream_t stream = nullptr;

  // One launch on copy c, T rows of x.
  void launch(const GemvConfig &c, int c_i, int T) {
    const int K = int(s.K), N = int(s.N);
    const unsigned blocks = gemvBlocks(N, c.split);
    Launcher L{stream};
    withGemvConfig<__nv_bfloat16, 8>(c, T, [&](auto tag) {
      using G = decltype(tag);
      if (s.gate_up)
        L(gateUpKernel<__nv_bfloat16, 8, G::kRows, G::kUnroll, G::kSplit,
                       G::kAhead>,
          blocks, (const float *)x, int64_t(K), (const __nv_bfloat16 *)w1[c_i],
          (const __nv_bfloat16 *)w3[c_i], a, int64_t(N), b, int64_t(N), y,
          int64_t(N), T, K, N);
      else
        L(gemvKernel<__nv_bfloat16, 8, G::kRows, G::kUnroll, G::kSplit,
                     G::kAhead>,
          blocks, (const float *)x, int64_t(K), (const __nv_bfloat16 *)w1[c_i],
          y, int64_t(N), T, K, N, 0);
    });
  }

  // gemvBulkKernel with ns stages on copy c (one row); `prepare` raises
  // its shared-memory limit instead (before any capture).
  int sms = 0;
  void launchBulk(int ns, int c_i, bool prepare = false) {
    withGemvBulk(ns, s.K, s.gate_up ? 2 : 1, [&](auto kernel) {
      if (prepare) {
        check(cudaFuncSetAttribute(kernel,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   int(gemvBulkSmem(ns))),
              "bulk smem");
        return;
      }
      Launcher L{stream, kBulkThreads, gemvBulkSmem(ns)};
      L(kernel, unsigned(sms), (const float *)x, (const __nv_bfloat16 *)w1[c_i],
        (const __nv_bfloat16 *)(s.gate_up ? w3[c_i] : nullptr), a, b, y,
        int(s.N), 0);
    });
  }
  static bool bulkTakes(const Shape &s) {
    return withGemvBulk(4, s.K, s.gate_up ? 2 : 1, [](auto) {});
  }
};

// Microseconds a launch of `launchCopy(copy)`: one graph of every copy
// once, reps times over.
template <typename F> double timeLaunches(Bench &bn, int reps, F &&launchCopy) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  check(cudaStreamBeginCapture(bn.stream, cudaStreamCaptureModeThreadLocal),
        "capture");
  for (int r = 0; r < reps; ++r)
    for (int ci = 0; ci < bn.copies; ++ci)
      launchCopy(ci);
  check(cudaStreamEndCapture(bn.stream, &g), "end capture");
  check(cudaGraphInstantiate(&ge, g, 0), "instantiate");
  check(cudaGraphLaunch(ge, bn.stream), "warm-up");
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event");
  check(cudaEventCreate(&e1), "event");
  check(cudaEventRecord(e0, bn.stream), "record");
  check(cudaGraphLaunch(ge, bn.stream), "graph");
  check(cudaEventRecord(e1, bn.stream), "record");
  check(cudaEventSynchronize(e1), "sync");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  return ms * 1e3 / (reps * bn.copies);
}

std::string name(const GemvConfig &c) {
  return std::to_string(c.unroll) + "," + std::to_string(c.split) +
         (c.ahead ? "+ahead" : "");
}

// The T rows' products in double precision (gate/up: the silu product).
std::vector<double> reference(const Shape &s, int T,
                              const std::vector<float> &w1,
                              const std::vector<float> &w3,
                              const std::vector<float> &x) {
  const int64_t N = s.N, K = s.K;
  std::vector<double> ref(size_t(T * N));
  for (int t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double g = 0, u = 0;
      for (int64_t k = 0; k < K; ++k) {
        g += double(w1[size_t(n * K + k)]) * x[size_t(t * K + k)];
        if (s.gate_up)
          u += double(w3[size_t(n * K + k)]) * x[size_t(t * K + k)];
      }
      ref[size_t(t * N + n)] = s.gate_up ? g / (1 + std::exp(-g)) * u : g;
    }
  return ref;
}

// max |got - want| / max |want| over n values of device memory; a NaN (a
// row the kernel left out) makes it infinite.
double relErr(const float *dev, const double *want, size_t n) {
  std::vector<float> got(n);
  check(cudaMemcpy(got.data(), dev, n * 4, cudaMemcpyDeviceToHost), "copy out");
  double err = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    err = std::isfinite(got[i]) ? std::max(err, std::fabs(want[i] - got[i]))
                                : HUGE_VAL;
    scale = std::max(scale, std::fabs(want[i]));
  }
  return err / std::max(scale, 1e-30);
}

// max |y - ref| / max |ref| over the first T rows.
double verify(Bench &bn, const GemvConfig &c, int T,
              const std::vector<double> &ref) {
  const int64_t N = bn.s.N;
  // NaN first: a row the kernel leaves out cannot pass on an earlier value.
  // On the bench's stream: a legacy-stream memset would race with the
  // launch on a non-blocking stream.
  check(cudaMemsetAsync(bn.y, 0xff, size_t(T * N) * 4, bn.stream), "clear y");
  bn.launch(c, 0, T);
  check(cudaStreamSynchronize(bn.stream), "verify run");
  return relErr(bn.y, ref.data(), size_t(T * N));
}

// --chain: the 1B's decode step without its attention, chained over 16
// layers of their own weights (1.95 GB: nothing stays in L2), each kernel's
// input the previous one's output, two ways: a CUDA graph of one
// programmatic launch per kernel, as the executor's decode graph runs
// them, and one persistent cooperative kernel that runs the same device
// code over virtual blocks with a grid barrier where a launch waits for
// its predecessor, each block's first weight loads of a GEMV issued before
// that barrier as they are before the programmatic wait. The question
// (docs/cuda.md, Performance): does a decode step's chain of kernels cost
// more at its boundaries than a persistent kernel's barriers would? Same
// configuration both ways (4 loads, 2 warps a column, the 1B's default;
// norms in blocks of 256 threads), so their outputs must be equal. A layer:
//
//   plain   the four GEMVs: q|k|v 3072 x 2048, the output projection
//           2048 x 2048 (its input the first 2048 q|k|v values, standing
//           in for the attention), gate/up 2 x 8192 x 2048 with the SiLU
//           product, the FFN's down 2048 x 8192;
//   norms   with the residual adds and RmsNorms before q|k|v and gate/up
//           (addRmsNormKernel, one block), 6 kernels a layer; persistent:
//           either as stages of their own (block 0 normalises, the others
//           pass to the next barrier) or folded into the GEMV after them
//           (every block normalises the row into its shared memory after
//           the barrier, block 0 also writing it out), 4 barriers a layer.
//
// Also the two floors: a chain of empty programmatic launches over the
// plain chain's grids, and a persistent kernel doing nothing but barriers.
struct ChainLayer {
  const __nv_bfloat16 *wqkv, *wo, *w1, *w3, *w2;
  const float *g1, *g2;            // the norms' weights
  float *r1, *xn1, *qkv, *o;       // r1 = r0 + d', xn1 = norm(r1) g1
  float *r2, *xn2, *a, *b, *y, *d; // r2 = r1 + o, xn2 = norm(r2) g2
};
constexpr int kChainLayers = 16;
constexpr int kChainD = 2048, kChainQkv = 3072, kChainHidden = 8192;
constexpr int kChainSplit = 2, kChainUnroll = 4;
constexpr float kChainEps = 1e-5f;
struct ChainPlan { // a kernel parameter: 2.2 KB of the 4 KB
  ChainLayer layer[kChainLayers];
  const float *x0;   // layer 0's input (plain) or residual (norms)
  const float *zero; // kChainD zeros: layer 0's "previous down"
  GridBarrier *barrier; // the runtime's (kernels.cuh), zeroed once
  // kChainD, kChainQkv, kChainHidden as values the compiler cannot fold:
  // the kernels it is compared with take their shapes as arguments.
  int D, Qkv, Hidden;
};
enum class ChainForm { Plain, NormStages, NormFolded };

// What a persistent stage's blocks do at its start: the grid barrier
// (gridBarrier, the runtime's persistent decode kernel's; none for stage
// 0), then, for a folded norm, r = a + b normalised
// by the whole block into xs (its shared memory), block 0 also writing r
// and the normalised row out (for the comparison with the launches).
struct ChainStart {
  GridBarrier *grid_barrier;
  unsigned barrier;
  const float *na = nullptr, *nb = nullptr, *nw = nullptr; // folded norm
  float *xs = nullptr, *nr = nullptr, *ny = nullptr;
  __device__ __forceinline__ void run() const {
    if (barrier != 0)
      gridBarrier(grid_barrier);
    if (na == nullptr)
      return;
    __shared__ float red[32];
    addRmsNormRow<false>(na, nb, nullptr, nw, xs, kChainD, kChainEps, red);
    __syncthreads();
    if (blockIdx.x == 0)
      for (int i = threadIdx.x; i < kChainD; i += blockDim.x) {
        nr[i] = na[i] + nb[i];
        ny[i] = xs[i];
      }
  }
};

// One GEMV stage of the persistent kernel (M = 1 a GEMV, M = 2 gate/up into
// a, b and y): every block passes the stage's start once.
template <int M, bool A>
__device__ __forceinline__ void
chainGemv(const ChainStart &start, const float *x, const __nv_bfloat16 *w1,
          const __nv_bfloat16 *w3, float *a, float *b, float *y, int K, int N) {
  constexpr int S = kChainSplit, U = kChainUnroll;
  constexpr unsigned per_block = kGemvWarps / S;
  const unsigned blocks = (unsigned(N) + per_block - 1) / per_block;
#pragma unroll 1
  for (unsigned vb = blockIdx.x; vb < blocks; vb += gridDim.x) {
    const VirtualGemvGrid<ChainStart> g{vb, &start};
    const __nv_bfloat16 *ws[2] = {w1, w3};
    float out[M][1];
    int n;
    if (gemvColumn<__nv_bfloat16, 8, 1, U, S, M, A>(x, K, ws, 1, K, N, n, out,
                                                    g)) {
      if constexpr (M == 2) {
        const float gv = out[0][0], u = out[1][0];
        a[n] = gv;
        b[n] = u;
        y[n] = gv / (1.0f + expf(-gv)) * u;
      } else {
        y[n] = out[0][0];
      }
    }
    __syncthreads(); // gemvColumn's shared partial sums, reused next
  }
  if (blockIdx.x >= blocks) // a block without columns here
    start.run();
}

// A norm stage of its own: block 0 writes r = a + b and its norm.
__device__ __forceinline__ void chainNorm(const ChainStart &start,
                                          const float *a, const float *b,
                                          float *r, const float *w, float *y) {
  start.run();
  __shared__ float red[32];
  if (blockIdx.x == 0)
    addRmsNormRow<true>(a, b, r, w, y, kChainD, kChainEps, red);
}

// B blocks a multiprocessor: the GEMV kernels it stands in for take at
// most 64 registers, 4 blocks; this one takes 118-121 unbounded (a virtual
// block's loop, the stage's pointers and shapes stay live beside the loads
// in flight) and spills at 4 and 3 (ptxas -v: 100-650 bytes a thread; the
// bench prints each one's local memory), so every form is timed at 4 and 2
// blocks, the plain one also at 3. (The norms' row length is a constant
// here, a value in addRmsNormKernel.)
template <ChainForm F, bool A, int B>
__global__ void __launch_bounds__(kGemvThreads, B)
    chainKernel(const __grid_constant__ ChainPlan plan) {
  constexpr bool norms = F != ChainForm::Plain;
  constexpr bool fold = F == ChainForm::NormFolded;
  __shared__ __align__(16) float xs[fold ? kChainD : 4]; // read as float4
  unsigned barrier = 0;
  const float *r0 = plan.x0, *dprev = plan.zero;
#pragma unroll 1
  for (int l = 0; l < kChainLayers; ++l) {
    const ChainLayer &L = plan.layer[l];
    const float *x1 = norms ? L.xn1 : (l == 0 ? plan.x0 : dprev);
    if constexpr (F == ChainForm::NormStages)
      chainNorm({plan.barrier, barrier++}, r0, dprev, L.r1, L.g1, L.xn1);
    if constexpr (fold)
      chainGemv<1, A>(
          {plan.barrier, barrier++, r0, dprev, L.g1, xs, L.r1, L.xn1}, xs,
          L.wqkv, nullptr, nullptr, nullptr, L.qkv, plan.D, plan.Qkv);
    else
      chainGemv<1, A>({plan.barrier, barrier++}, x1, L.wqkv, nullptr, nullptr,
                      nullptr, L.qkv, plan.D, plan.Qkv);
    chainGemv<1, A>({plan.barrier, barrier++}, L.qkv, L.wo, nullptr, nullptr,
                    nullptr, L.o, plan.D, plan.D);
    if constexpr (F == ChainForm::NormStages)
      chainNorm({plan.barrier, barrier++}, L.r1, L.o, L.r2, L.g2, L.xn2);
    if constexpr (fold)
      chainGemv<2, A>(
          {plan.barrier, barrier++, L.r1, L.o, L.g2, xs, L.r2, L.xn2}, xs, L.w1,
          L.w3, L.a, L.b, L.y, plan.D, plan.Hidden);
    else
      chainGemv<2, A>({plan.barrier, barrier++}, norms ? L.xn2 : L.o, L.w1,
                      L.w3, L.a, L.b, L.y, plan.D, plan.Hidden);
    chainGemv<1, A>({plan.barrier, barrier++}, L.y, L.w2, nullptr, nullptr,
                    nullptr, L.d, plan.Hidden, plan.D);
    r0 = L.r2;
    dprev = L.d;
  }
}

__global__ void __launch_bounds__(kGemvThreads) emptyChainKernel(int) {
  KernelScope scope;
  pdlWait();
}

__global__ void __launch_bounds__(kGemvThreads)
    barrierChainKernel(GridBarrier *barrier, unsigned count) {
  for (unsigned i = 0; i < count; ++i)
    gridBarrier(barrier);
}

struct Chain {
  cudaStream_t stream = nullptr;
  ChainPlan plan = {};
  std::vector<void *> owned;

  template <typename T> T *alloc(size_t n) {
    void *p = nullptr;
    check(cudaMalloc(&p, n * sizeof(T)), "chain memory");
    owned.push_back(p);
    return static_cast<T *>(p);
  }
  // Weights of N x K, uniform with variance 1 / K: the plain chain's values
  // stay of order 1 over its 64 products.
  const __nv_bfloat16 *weights(int64_t N, int64_t K, uint32_t seed) {
    __nv_bfloat16 *w = alloc<__nv_bfloat16>(size_t(N * K));
    fillBf16<<<1024, 256>>>(w, N * K, seed, float(std::sqrt(3.0 / double(K))));
    return w;
  }
  const float *upload(const std::vector<float> &v) {
    float *p = alloc<float>(v.size());
    check(cudaMemcpy(p, v.data(), v.size() * 4, cudaMemcpyHostToDevice), "up");
    return p;
  }
  void build() {
    const int D = kChainD;
    std::vector<float> hx(D), hg(D);
    for (int i = 0; i < D; ++i)
      hx[size_t(i)] = float(std::sin(0.37 * i + 0.1));
    plan.x0 = upload(hx);
    plan.zero = upload(std::vector<float>(D, 0.0f));
    plan.barrier = alloc<GridBarrier>(1);
    check(cudaMemset(plan.barrier, 0, sizeof(GridBarrier)), "barrier");
    plan.D = kChainD;
    plan.Qkv = kChainQkv;
    plan.Hidden = kChainHidden;
    for (int l = 0; l < kChainLayers; ++l) {
      ChainLayer &L = plan.layer[l];
      const uint32_t seed = 77u + 16u * uint32_t(l);
      L.wqkv = weights(kChainQkv, D, seed);
      L.wo = weights(D, D, seed + 1);
      L.w1 = weights(kChainHidden, D, seed + 2);
      L.w3 = weights(kChainHidden, D, seed + 3);
      L.w2 = weights(D, kChainHidden, seed + 4);
      for (int i = 0; i < D; ++i)
        hg[size_t(i)] = float(1.0 + 0.25 * std::sin(0.11 * i + l));
      L.g1 = upload(hg);
      for (int i = 0; i < D; ++i)
        hg[size_t(i)] = float(1.0 + 0.25 * std::cos(0.13 * i + l));
      L.g2 = upload(hg);
      for (float **p : {&L.r1, &L.xn1, &L.o, &L.r2, &L.xn2, &L.d})
        *p = alloc<float>(D);
      L.qkv = alloc<float>(kChainQkv);
      for (float **p : {&L.a, &L.b, &L.y})
        *p = alloc<float>(kChainHidden);
    }
    check(cudaDeviceSynchronize(), "chain fill");
  }
  // The buffers a form writes, layer by layer.
  static std::vector<std::pair<float *, size_t>> outputs(const ChainLayer &L,
                                                         bool norms) {
    std::vector<std::pair<float *, size_t>> v = {
        {L.qkv, kChainQkv},  {L.o, kChainD},      {L.a, kChainHidden},
        {L.b, kChainHidden}, {L.y, kChainHidden}, {L.d, kChainD}};
    if (norms)
      for (float *p : {L.r1, L.xn1, L.r2, L.xn2})
        v.push_back({p, kChainD});
    return v;
  }
  void clearOutputs() {
    for (const ChainLayer &L : plan.layer)
      for (auto &[p, n] : outputs(L, true))
        check(cudaMemsetAsync(p, 0xff, n * 4, stream), "clear outputs");
  }
  // Every written buffer's values, and where each buffer starts.
  std::vector<float> readOutputs(bool norms, std::vector<size_t> &starts) {
    check(cudaStreamSynchronize(stream), "chain run");
    std::vector<float> all;
    starts.clear();
    for (const ChainLayer &L : plan.layer)
      for (auto &[p, n] : outputs(L, norms)) {
        starts.push_back(all.size());
        all.resize(all.size() + n);
        check(cudaMemcpy(all.data() + starts.back(), p, n * 4,
                         cudaMemcpyDeviceToHost),
              "copy out");
      }
    starts.push_back(all.size());
    return all;
  }
  // The executor's way: one programmatic launch per kernel.
  template <bool A> void launchGraphChain(bool norms) {
    Launcher L{stream};
    using G = GemvTag<__nv_bfloat16, 8, 1, kChainUnroll, kChainSplit, A>;
    const auto gemv = [&](const float *x, const __nv_bfloat16 *w, float *y,
                          int K, int N) {
      L(gemvKernel<__nv_bfloat16, 8, 1, G::kUnroll, G::kSplit, A>,
        gemvBlocks(N, kChainSplit), x, int64_t(K), w, y, int64_t(N), 1, K, N,
        0);
    };
    const auto norm = [&](const float *a, const float *b, float *r,
                          const float *g, float *y) {
      L(addRmsNormKernel, 1u, a, b, r, g, y, int64_t(kChainD), kChainEps);
    };
    const float *r0 = plan.x0, *dprev = plan.zero;
    for (int l = 0; l < kChainLayers; ++l) {
      const ChainLayer &c = plan.layer[l];
      if (norms)
        norm(r0, dprev, c.r1, c.g1, c.xn1);
      gemv(norms ? c.xn1 : (l == 0 ? plan.x0 : dprev), c.wqkv, c.qkv, kChainD,
           kChainQkv);
      gemv(c.qkv, c.wo, c.o, kChainD, kChainD);
      if (norms)
        norm(c.r1, c.o, c.r2, c.g2, c.xn2);
      L(gateUpKernel<__nv_bfloat16, 8, 1, G::kUnroll, G::kSplit, A>,
        gemvBlocks(kChainHidden, kChainSplit), norms ? c.xn2 : c.o,
        int64_t(kChainD), c.w1, c.w3, c.a, int64_t(kChainHidden), c.b,
        int64_t(kChainHidden), c.y, int64_t(kChainHidden), 1, kChainD,
        kChainHidden);
      gemv(c.y, c.w2, c.d, kChainHidden, kChainD);
      r0 = c.r2;
      dprev = c.d;
    }
  }
  void launchEmptyChain() {
    Launcher L{stream};
    for (int l = 0; l < kChainLayers; ++l)
      for (int n : {kChainQkv, kChainD, kChainHidden, kChainD})
        L(emptyChainKernel, gemvBlocks(n, kChainSplit), 0);
  }
  template <typename... P, typename... Args>
  void launchCooperative(void (*kernel)(P...), unsigned blocks, Args... args) {
    Launcher{stream, kGemvThreads, 0, true}(kernel, blocks, args...);
  }
  // Microseconds a chain: `once()` reps times (graph: captured, replayed
  // once after a warm-up replay; otherwise launched on the stream).
  template <typename F> double time(int reps, bool graph, F &&once) {
    cudaGraph_t g = nullptr;
    cudaGraphExec_t ge = nullptr;
    if (graph) {
      check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
            "capture");
      for (int r = 0; r < reps; ++r)
        once();
      check(cudaStreamEndCapture(stream, &g), "end capture");
      check(cudaGraphInstantiate(&ge, g, 0), "instantiate");
      check(cudaGraphLaunch(ge, stream), "warm-up");
    } else {
      once();
    }
    cudaEvent_t e0, e1;
    check(cudaEventCreate(&e0), "event");
    check(cudaEventCreate(&e1), "event");
    check(cudaEventRecord(e0, stream), "record");
    if (graph)
      check(cudaGraphLaunch(ge, stream), "graph");
    else
      for (int r = 0; r < reps; ++r)
        once();
    check(cudaEventRecord(e1, stream), "record");
    check(cudaEventSynchronize(e1), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    if (graph) {
      cudaGraphExecDestroy(ge);
      cudaGraphDestroy(g);
    }
    return ms * 1e3 / reps;
  }
  ~Chain() {
    for (void *p : owned)
      cudaFree(p);
    if (stream)
      cudaStreamDestroy(stream);
  }
};

// Whether b equals a (the launches' outputs) to 1e-6 of each buffer's
// largest value, every value finite; prints the largest difference.
bool sameOutputs(const std::vector<size_t> &starts, const std::vector<float> &a,
                 const std::vector<float> &b, const std::string &what) {
  double worst = 0;
  bool finite = a.size() == b.size();
  for (size_t s = 0; finite && s + 1 < starts.size(); ++s) {
    double scale = 0, diff = 0;
    for (size_t i = starts[s]; i < starts[s + 1]; ++i) {
      finite = finite && std::isfinite(a[i]) && std::isfinite(b[i]);
      scale = std::max(scale, std::fabs(double(a[i])));
      diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    }
    worst = std::max(worst, diff / std::max(scale, 1e-30));
  }
  const bool ok = finite && worst <= 1e-6;
  std::printf("  check %-40s %s (largest difference %.1e of the buffer's "
              "largest value%s)\n",
              what.c_str(), ok ? "ok" : "FAIL", worst,
              finite ? "" : "; not finite");
  return ok;
}

// A persistent kernel and the grid it runs on: as many blocks as its
// occupancy lets every multiprocessor hold (a cooperative launch refuses
// more).
struct Persistent {
  const char *name;
  bool norms;
  void (*kernel)(ChainPlan);
  unsigned blocks = 0;
  int per_sm = 0;
  size_t local = 0; // bytes of local memory a thread: spills
};

int runChain(const cudaDeviceProp &prop, int reps) {
  Chain c;
  check(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking), "stream");
  c.build();
  using F = ChainForm;
  Persistent ps[] = {
      {"persistent, 4 blocks/SM", false, chainKernel<F::Plain, false, 4>},
      {"persistent, 3 blocks/SM", false, chainKernel<F::Plain, false, 3>},
      {"persistent, 2 blocks/SM", false, chainKernel<F::Plain, false, 2>},
      {"persistent, loads ahead, 4/SM", false, chainKernel<F::Plain, true, 4>},
      {"persistent, loads ahead, 2/SM", false, chainKernel<F::Plain, true, 2>},
      {"persistent, norm stages, 4/SM", true,
       chainKernel<F::NormStages, false, 4>},
      {"persistent, norm stages, 2/SM", true,
       chainKernel<F::NormStages, false, 2>},
      {"persistent, norms folded, 4/SM", true,
       chainKernel<F::NormFolded, false, 4>},
      {"persistent, norms folded, 2/SM", true,
       chainKernel<F::NormFolded, false, 2>}};
  for (Persistent &p : ps) {
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&p.per_sm, p.kernel,
                                                        kGemvThreads, 0),
          "occupancy");
    cudaFuncAttributes fa;
    check(cudaFuncGetAttributes(&fa, p.kernel), "attributes");
    p.local = fa.localSizeBytes;
    p.blocks = unsigned(p.per_sm * prop.multiProcessorCount);
    if (p.per_sm < 1) {
      std::printf("loom-bench-gemv --chain: %s does not fit on a "
                  "multiprocessor\n",
                  p.name);
      return 1;
    }
  }
  const double bytes =
      2.0 * kChainLayers * kChainD *
      (kChainQkv + kChainD + 2.0 * kChainHidden + kChainHidden);
  std::printf("\nchain: %d layers of the 1B's one-row GEMVs (%.1f MB a "
              "layer), %d loads, %d warps a column\n",
              kChainLayers, bytes / kChainLayers / 1e6, kChainUnroll,
              kChainSplit);

  int failures = 0;
  double base[2] = {0, 0}; // the launches, without and with the norms
  for (bool norms : {false, true}) {
    const char *form = norms ? "with norms" : "plain";
    std::vector<size_t> starts;
    c.clearOutputs();
    c.launchGraphChain<false>(norms);
    const std::vector<float> want = c.readOutputs(norms, starts);
    const auto verify = [&](const std::string &what, auto &&run) {
      c.clearOutputs();
      run();
      std::vector<size_t> s2;
      failures += !sameOutputs(starts, want, c.readOutputs(norms, s2), what);
    };
    if (!norms)
      verify("launches, loads ahead", [&] { c.launchGraphChain<true>(false); });
    for (const Persistent &p : ps)
      if (p.norms == norms)
        verify(std::string(p.name) + (norms ? "" : ", plain"),
               [&] { c.launchCooperative(p.kernel, p.blocks, c.plan); });
    base[norms] = c.time(reps, true, [&] { c.launchGraphChain<false>(norms); });
    std::printf("  %s: launches %.1f us a chain, %.2f us a layer\n", form,
                base[norms], base[norms] / kChainLayers);
  }
  const auto row = [&](const char *what, bool norms, double us,
                       const char *note) {
    std::printf("  %-31s %8.1f us a chain %6.2f us a layer %6.0f GB/s  "
                "%5.2fx launches%s\n",
                what, us, us / kChainLayers, bytes / (us * 1e3),
                base[norms] / us, note);
  };
  row("launches (graph, PDL)", false, base[0], "");
  row("launches, loads ahead", false,
      c.time(reps, true, [&] { c.launchGraphChain<true>(false); }), "");
  row("launches with norms", true, base[1], "");
  for (const Persistent &p : ps) {
    char note[96];
    std::snprintf(note, sizeof note, "  (%u blocks, %zu bytes of local memory)",
                  p.blocks, p.local);
    row(p.name, p.norms,
        c.time(reps, false,
               [&] { c.launchCooperative(p.kernel, p.blocks, c.plan); }),
        note);
  }
  const double empty =
      c.time(reps, true, [&] { c.launchEmptyChain(); }) / (4 * kChainLayers);
  const unsigned bb = ps[0].blocks;
  const unsigned count = 4 * kChainLayers - 1;
  const double barrier = c.time(reps, false, [&] {
    c.launchCooperative(barrierChainKernel, bb, c.plan.barrier, count);
  }) / count;
  std::printf("  floors: an empty programmatic launch (the plain chain's "
              "grids) %.2f us, a grid barrier of %u blocks %.2f us\n",
              empty, bb, barrier);
  std::printf("\nloom-bench-gemv --chain: %d failures\n", failures);
  return failures ? 1 : 0;
}

} // namespace

int main(int argc, char **argv) {
  std::string which = "all";
  int reps = 5;
  bool bulk = false, chain = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shapes" && i + 1 < argc)
      which = argv[++i];
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--bulk")
      bulk = true;
    else if (a == "--chain")
      chain = true;
    else {
      std::fprintf(stderr, "usage: loom-bench-gemv [--shapes 1b|110m|all] "
                           "[--reps N] [--bulk | --chain]\n");
      return 2;
    }
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("loom-bench-gemv: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "properties");
  std::printf("gpu: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  if (chain)
    return runChain(prop, reps);

  std::vector<Shape> shapes;
  if (which == "all" || which == "1b")
    for (Shape s :
         {Shape{"1b.wqkv", 3072, 2048, false},
          Shape{"1b.wo", 2048, 2048, false}, Shape{"1b.w1w3", 8192, 2048, true},
          Shape{"1b.w2", 2048, 8192, false},
          Shape{"1b.cls", 32000, 2048, false}})
      shapes.push_back(s);
  if (which == "all" || which == "110m")
    for (Shape s : {Shape{"110m.wqkv", 2304, 768, false},
                    Shape{"110m.wo", 768, 768, false},
                    Shape{"110m.w1w3", 2048, 768, true},
                    Shape{"110m.w2", 768, 2048, false},
                    Shape{"110m.cls", 32000, 768, false}})
      shapes.push_back(s);

  std::vector<GemvConfig> configs;
  for (bool ahead : {false, true})
    for (int u : {4, 8})
      for (int sp : {1, 2, 4})
        configs.push_back({u, sp, ahead});

  int failures = 0;
  for (const Shape &s : shapes) {
    if (bulk && !Bench::bulkTakes(s))
      continue;
    Bench bn;
    bn.s = s;
    bn.sms = prop.multiProcessorCount;
    check(cudaStreamCreateWithFlags(&bn.stream, cudaStreamNonBlocking),
          "stream");
    const int64_t elems = s.N * s.K;
    const double bytes = double(elems) * 2 * (s.gate_up ? 2 : 1);
    bn.copies =
        int(std::min<double>(64, std::max(2.0, std::ceil(512e6 / bytes))));
    for (int c = 0; c < bn.copies; ++c) {
      for (int m = 0; m < (s.gate_up ? 2 : 1); ++m) {
        __nv_bfloat16 *p = nullptr;
        check(cudaMalloc(&p, size_t(elems) * 2), "weights");
        fillBf16<<<1024, 256>>>(p, elems, 1234u + 7u * c + 1000u * m, 1.0f);
        (m ? bn.w3 : bn.w1).push_back(p);
      }
    }
    const int T3 = 3;
    check(cudaMalloc(&bn.x, size_t(T3 * s.K) * 4), "x");
    for (float **p : {&bn.a, &bn.b, &bn.y})
      check(cudaMalloc(p, size_t(T3 * s.N) * 4), "y");
    std::vector<float> hx(size_t(T3 * s.K));
    for (size_t i = 0; i < hx.size(); ++i)
      hx[i] = float(std::sin(0.37 * double(i) + 0.1));
    check(cudaMemcpy(bn.x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice),
          "x up");
    auto host = [&](__nv_bfloat16 *p) {
      std::vector<uint16_t> raw(static_cast<size_t>(elems));
      check(cudaMemcpy(raw.data(), p, raw.size() * 2, cudaMemcpyDeviceToHost),
            "w down");
      std::vector<float> f(raw.size());
      for (size_t i = 0; i < raw.size(); ++i) {
        const uint32_t u = uint32_t(raw[i]) << 16;
        std::memcpy(&f[i], &u, 4);
      }
      return f;
    };
    const std::vector<float> hw1 = host(bn.w1[0]);
    const std::vector<float> hw3 =
        s.gate_up ? host(bn.w3[0]) : std::vector<float>();

    const std::vector<double> ref = reference(s, T3, hw1, hw3, hx);
    const GemvConfig autoc = gemvConfigFor(s.N, s.K);
    std::printf(
        "\n%s: N %lld, K %lld, %.1f MB a launch, %d copies; auto = %s\n",
        s.name, (long long)s.N, (long long)s.K, bytes / 1e6, bn.copies,
        name(autoc).c_str());
    double base_us = 0;
    for (const GemvConfig &c : configs) {
      // --bulk: the baseline and the default configuration only.
      if (bulk && !(c.unroll == 4 && c.split == 1 && !c.ahead) &&
          !(c.unroll == autoc.unroll && c.split == autoc.split && !c.ahead))
        continue;
      const double e1 = verify(bn, c, 1, ref);
      const double e3 = verify(bn, c, T3, ref);
      const bool ok = e1 <= 1e-5 && e3 <= 1e-5;
      failures += !ok;
      const double us =
          timeLaunches(bn, reps, [&](int ci) { bn.launch(c, ci, 1); });
      if (c.unroll == 4 && c.split == 1 && !c.ahead)
        base_us = us;
      const bool is_auto = c.unroll == autoc.unroll && c.split == autoc.split &&
                           c.ahead == autoc.ahead;
      std::printf(
          "  %-12s %8.2f us %7.0f GB/s  %5.2fx base  err %.1e/%.1e%s%s\n",
          name(c).c_str(), us, bytes / (us * 1e3),
          base_us > 0 ? base_us / us : 1.0, e1, e3, ok ? "" : "  FAIL",
          is_auto ? "  <- auto" : "");
    }
    // --bulk: y (gate/up: also a and b, the gate's and the up's products)
    // against row 0 of the double-precision products.
    std::vector<double> ref_a, ref_b;
    if (bulk && s.gate_up)
      for (int64_t n = 0; n < s.N; ++n) {
        double g = 0, u = 0;
        for (int64_t k = 0; k < s.K; ++k) {
          g += double(hw1[size_t(n * s.K + k)]) * hx[size_t(k)];
          u += double(hw3[size_t(n * s.K + k)]) * hx[size_t(k)];
        }
        ref_a.push_back(g);
        ref_b.push_back(u);
      }
    for (int ns : {4, 6, 8, 12}) {
      if (!bulk)
        break;
      bn.launchBulk(ns, 0, true);
      for (float *p : {bn.a, bn.b, bn.y})
        check(cudaMemsetAsync(p, 0xff, size_t(s.N) * 4, bn.stream),
              "clear outputs");
      bn.launchBulk(ns, 0);
      check(cudaStreamSynchronize(bn.stream), "bulk verify run");
      const size_t n = size_t(s.N);
      double e1 = relErr(bn.y, ref.data(), n);
      if (s.gate_up)
        e1 = std::max(
            {e1, relErr(bn.a, ref_a.data(), n), relErr(bn.b, ref_b.data(), n)});
      const bool ok = e1 <= 1e-5;
      failures += !ok;
      const double us =
          timeLaunches(bn, reps, [&](int ci) { bn.launchBulk(ns, ci); });
      std::printf("  bulk%-8d %8.2f us %7.0f GB/s  %5.2fx base  err %.1e%s\n",
                  ns, us, bytes / (us * 1e3), base_us > 0 ? base_us / us : 1.0,
                  e1, ok ? "" : "  FAIL");
    }
    for (auto *p : bn.w1)
      cudaFree(p);
    for (auto *p : bn.w3)
      cudaFree(p);
    for (float *p : {bn.x, bn.a, bn.b, bn.y})
      cudaFree(p);
    cudaStreamDestroy(bn.stream);
  }
  std::printf("\nloom-bench-gemv: %d failures\n", failures);
  return failures ? 1 : 0;
}
