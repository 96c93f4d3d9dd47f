// Read-only memory bandwidth of this machine, the roofline for decode: each
// decode step streams every weight once. Sums a buffer larger than the last
// level cache with 1..N threads, best of several passes.
//
//   loom-membw [MiB=1024] [max_threads=2]   ->  "threads N: X GB/s" lines
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {
// Several independent accumulators so the loop is limited by loads, not by
// the add latency; the compiler vectorises it at -O3 -march=native.
float sumRange(const float *p, size_t n) {
  float acc[16] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l)
      acc[l] += p[i + l];
  float s = 0;
  for (; i < n; ++i)
    s += p[i];
  for (float a : acc)
    s += a;
  return s;
}
} // namespace

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1024;
  int maxThreads = argc > 2 ? std::atoi(argv[2]) : 2;
  if (mib == 0 || maxThreads <= 0)
    return std::fprintf(stderr, "usage: loom-membw [MiB] [max_threads]\n"), 1;
  size_t n = mib * 1024 * 1024 / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  volatile float sink = 0;
  for (int threads = 1; threads <= maxThreads; ++threads) {
    double best = 0;
    for (int pass = 0; pass < 5; ++pass) {
      std::vector<float> partial(threads);
      auto t0 = std::chrono::steady_clock::now();
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          size_t lo = n * t / threads, hi = n * (t + 1) / threads;
          partial[t] = sumRange(buf.data() + lo, hi - lo);
        });
      for (auto &th : pool)
        th.join();
      double s = std::chrono::duration<double>(
                     std::chrono::steady_clock::now() - t0)
                     .count();
      for (float p : partial)
        sink = sink + p;
      best = std::max(best, n * sizeof(float) / s / 1e9);
    }
    std::printf("threads %d: %.1f GB/s\n", threads, best);
  }
  return 0;
}
