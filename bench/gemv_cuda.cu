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
//   loom-bench-gemv [--shapes 1b|110m|all] [--reps N] [--bulk]
//
// Each configuration also runs with gemvColumn's A ("+ahead":
// LOOM_CUDA_GEMV_AHEAD=1, two groups of loads before the programmatic
// wait). --bulk runs gemvBulkKernel instead ("bulkN": LOOM_CUDA_GEMV_BULK=N,
// an experiment; the 1B's shapes: K 2048 or 8192, gate/up at K 2048),
// against the baseline and the default configuration; on its own, as a
// kernel that hangs or traps must not cost the other numbers.
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

__global__ void fillBf16(__nv_bfloat16 *w, int64_t n, uint32_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    w[i] = __float2bfloat16((h & 0xffff) / 32768.0f - 1.0f);
  }
}

struct Shape {
  const char *name;
  int64_t N, K;
  bool gate_up;
};

struct Launcher {
  cudaStream_t stream;
  unsigned threads = kGemvThreads;
  size_t smem = 0;
  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), unsigned blocks, A &&...args) const {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
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
  check(cudaMemset(bn.y, 0xff, size_t(T * N) * 4), "clear y");
  bn.launch(c, 0, T);
  check(cudaStreamSynchronize(bn.stream), "verify run");
  return relErr(bn.y, ref.data(), size_t(T * N));
}

} // namespace

int main(int argc, char **argv) {
  std::string which = "all";
  int reps = 5;
  bool bulk = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shapes" && i + 1 < argc)
      which = argv[++i];
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--bulk")
      bulk = true;
    else {
      std::fprintf(stderr, "usage: loom-bench-gemv [--shapes 1b|110m|all] "
                           "[--reps N] [--bulk]\n");
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
        fillBf16<<<1024, 256>>>(p, elems, 1234u + 7u * c + 1000u * m);
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
        check(cudaMemset(p, 0xff, size_t(s.N) * 4), "clear outputs");
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
