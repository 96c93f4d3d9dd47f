// CUDA kernels of the dispatch form (one per schema Kernel, plus the
// decode-time GEMV and the on-device sampler). f32 activations throughout;
// weights f32 or bf16. Positions are read from the device-side StepParams,
// so a captured decode graph replays at every position.
#ifndef LOOM_RUNTIME_CUDA_KERNELS_CUH
#define LOOM_RUNTIME_CUDA_KERNELS_CUH

#include <algorithm>
#include <cooperative_groups.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cuda/ptx>
#include <cuda_bf16.h>
#include <mma.h>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "timeline.h"

namespace loom::rt::cuda {

// Per-step values the host writes (pinned) and copies in before the
// dispatches; a captured graph holds that copy as its first node.
struct StepParams {
  int32_t pos;       // position of the step's first row
  int32_t next;      // the sampler's output
  float temperature; // 0: argmax
  float top_p;       // (0, 1]: nucleus mass (1: the whole vocabulary)
  float coin;        // [0, 1)
  int32_t tokens[1]; // max_tokens ids follow (over-allocated)
};

// Programmatic dependent launch (Hopper): a kernel launched with it
// (CudaExecutor::launch) may start while its predecessor in the stream is
// still running. Every kernel here first lets its own successor launch,
// then waits for its predecessor's results before reading or writing
// anything the predecessor touches; a GEMV issues its first weight loads
// (constant data) before waiting. For an ordinary launch both are no-ops.
__device__ __forceinline__ void pdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

#ifdef LOOM_CUDA_TIMELINE
// The timeline build (libloomrt_cuda_timeline.so, timeline.h): where the
// blocks' records go. The host arms it before each graph replay (its
// buffer, capacity, count 0) and disarms it after (capacity 0: kernels
// outside graphs record nothing).
struct TimelineSink {
  TimelineRecord *records;
  unsigned capacity;
  unsigned count;
};
__device__ TimelineSink g_timeline;

__device__ __forceinline__ uint64_t globalTimer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ unsigned blockThread() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
// The block's times so far, in shared memory (one per kernel).
struct TimelineBlock {
  uint64_t start, wait;
  unsigned index;  // the block's start order in the replay
  unsigned exited; // threads done
};
__device__ __forceinline__ TimelineBlock &timelineBlock() {
  __shared__ TimelineBlock b;
  return b;
}
#endif

__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
#ifdef LOOM_CUDA_TIMELINE
  if (blockThread() == 0 && timelineBlock().wait == 0) // the first wait
    timelineBlock().wait = globalTimer();
#endif
}

// The first statement of every kernel: `KernelScope scope;`. It lets the
// kernel's successor launch (pdlLaunchDependents). In the timeline build it
// also draws the block's start order, before that launch, so that every
// block of a launch starts before any of the next (timeline.h,
// attributeTimeline), and when the block's last thread returns it writes
// the block's record; that costs each block an atomic round trip and a
// barrier before its successor may launch, and a few shared-memory atomics
// at its end.
struct KernelScope {
#ifdef LOOM_CUDA_TIMELINE
  __device__ KernelScope() {
    TimelineBlock &b = timelineBlock();
    if (blockThread() == 0) {
      b.start = globalTimer();
      b.wait = 0;
      b.exited = 0;
      b.index = atomicAdd(&g_timeline.count, 1u);
    }
    __syncthreads();
    pdlLaunchDependents();
  }
  __device__ ~KernelScope() {
    namespace cg = cooperative_groups;
    TimelineBlock &b = timelineBlock();
    const cg::coalesced_group g = cg::coalesced_threads();
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    __threadfence_block(); // thread 0's wait time before its count
    unsigned before = 0;
    if (g.thread_rank() == 0)
      before = atomicAdd(&b.exited, g.size());
    if (g.thread_rank() != 0 || before + g.size() != threads)
      return;
    __threadfence_block();
    const unsigned i = b.index;
    if (i >= g_timeline.capacity)
      return;
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    g_timeline.records[i] = {b.start, b.wait, globalTimer(),
                             gridDim.x * gridDim.y * gridDim.z, sm};
  }
#else
  __device__ __forceinline__ KernelScope() { pdlLaunchDependents(); }
#endif
};

// The lines of w[0, D) into this SM's L1, before pdlWait (weights are
// never written by a step): a norm's weights then arrive while its
// predecessor still runs, not after its reduction.
__device__ __forceinline__ void prefetchL1(const float *w, int64_t D) {
#if defined(__CUDA_ARCH__)
  for (int64_t i = 32 * int64_t(threadIdx.x); i < D; i += 32 * blockDim.x)
    asm volatile("prefetch.global.L1 [%0];" ::"l"(w + i));
#endif
}

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread
// gets the result. `red` is 32 floats of shared memory.
__device__ __forceinline__ float blockSum(float v, float *red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0)
    red[warp] = v;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  v = lane < nw ? red[lane] : 0.0f;
  return warpSum(v);
}
__device__ __forceinline__ float blockMax(float v, float *red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warpMax(v);
  __syncthreads();
  if (lane == 0)
    red[warp] = v;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  v = lane < nw ? red[lane] : -INFINITY;
  return warpMax(v);
}

// out[t, :] = table[tokens[t], :] * scale          grid T
template <typename W>
__global__ void embedKernel(const StepParams *s, const W *table, int64_t D,
                            float *out, int64_t ldo, float scale) {
  KernelScope scope;
  pdlWait();
  const int t = blockIdx.x;
  const W *row = table + int64_t(s->tokens[t]) * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    out[t * ldo + i] =
        scale == 1.0f ? toFloat(row[i]) : toFloat(row[i]) * scale;
}

// y = w * x / sqrt(mean(x^2) + eps)                grid T
__global__ void rmsNormKernel(const float *x, int64_t ldx, const float *w,
                              float *y, int64_t ldy, int64_t D, float eps) {
  KernelScope scope;
  prefetchL1(w, D);
  pdlWait();
  __shared__ float red[32];
  const int t = blockIdx.x;
  const float *xr = x + t * ldx;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    ss += xr[i] * xr[i];
  ss = blockSum(ss, red);
  const float inv = 1.0f / sqrtf(ss / float(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    y[t * ldy + i] = w[i] * (inv * xr[i]);
}

// y = (x - mean) / sqrt(var + eps) * w + b (population variance)  grid T
__global__ void layerNormKernel(const float *x, int64_t ldx, const float *w,
                                const float *b, float *y, int64_t ldy,
                                int64_t D, float eps) {
  KernelScope scope;
  pdlWait();
  __shared__ float red[32];
  const int t = blockIdx.x;
  const float *xr = x + t * ldx;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    s += xr[i];
  const float mean = blockSum(s, red) / float(D);
  float v = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float d = xr[i] - mean;
    v += d * d;
  }
  const float var = blockSum(v, red) / float(D);
  const float rstd = 1.0f / sqrtf(var + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    y[t * ldy + i] = (xr[i] - mean) * rstd * w[i] + b[i];
}

// The frequency of the pair starting at head-local column j (even):
// llama2.c's float32 1 / powf(theta, j / head_dim), divided by the pair's
// factor where the model has them (Llama 3.1's rope scaling), as the CPU.
__device__ __forceinline__ float ropeFreq(int64_t j, int64_t head_dim,
                                          float theta, const float *factors) {
  float freq = 1.0f / powf(theta, float(j) / float(head_dim));
  if (factors)
    freq /= factors[j / 2];
  return freq;
}

// Interleaved-pair RoPE in place on the first `cols` columns, angle =
// pos * ropeFreq(j), cos and sin times `scale` (1: none). grid T, one
// thread per pair.
__global__ void ropeKernel(const StepParams *s, float *x, int64_t ldx,
                           int64_t cols, int64_t head_dim, float theta,
                           const float *factors, float scale) {
  KernelScope scope;
  pdlWait();
  const int t = blockIdx.x;
  const float pos = float(s->pos + t);
  for (int64_t c = 2 * int64_t(threadIdx.x); c < cols; c += 2 * blockDim.x) {
    const float freq = ropeFreq(c % head_dim, head_dim, theta, factors);
    const float angle = pos * freq;
    float sn, cs;
    sincosf(angle, &sn, &cs);
    sn *= scale;
    cs *= scale;
    float *p = x + t * ldx + c;
    const float x0 = p[0], x1 = p[1];
    p[0] = x0 * cs - x1 * sn;
    p[1] = x0 * sn + x1 * cs;
  }
}

// The decode-time fusions of the executor (runtime/cuda/executor.cu):

// Add followed by RmsNorm of its sum: z = a + b, y = rmsnorm(z) * w, one
// block per row of D (dense rows). y may alias a or b: a thread reads its
// own z values after the block's reduction.
// One row of it, by the whole block (`red`: 32 floats of shared memory).
// Z: z is written, and read back for y; otherwise z is not used, and y may
// be a itself (each thread reads its own values before writing them) but
// must not partly overlap a or b (the persistent kernels' plain norms).
template <bool Z>
__device__ __forceinline__ void
addRmsNormRow(const float *a, const float *b, float *z, const float *w,
              float *y, int64_t D, float eps, float *red) {
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float v = a[i] + b[i];
    if constexpr (Z)
      z[i] = v;
    ss += v * v;
  }
  ss = blockSum(ss, red);
  const float inv = 1.0f / sqrtf(ss / float(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    y[i] = w[i] * (inv * (Z ? z[i] : a[i] + b[i]));
}
__global__ void addRmsNormKernel(const float *a, const float *b, float *z,
                                 const float *w, float *y, int64_t D,
                                 float eps) {
  KernelScope scope;
  prefetchL1(w, D);
  pdlWait();
  __shared__ float red[32];
  const int64_t off = int64_t(blockIdx.x) * D;
  addRmsNormRow<true>(a + off, b + off, z + off, w, y + off, D, eps, red);
}

// RoPE on the q and k columns of a packed qkv row, then its k and v parts
// appended to the KV cache at pos + t.                grid T
__global__ void ropeAppendKernel(const StepParams *s, float *qkv, int64_t lq,
                                 int64_t qd, int64_t kd, int64_t head_dim,
                                 float theta, const float *factors, float scale,
                                 float *kc, float *vc) {
  KernelScope scope;
  pdlWait();
  const int t = blockIdx.x;
  const int64_t p = s->pos + t;
  const float pos = float(p);
  float *row = qkv + t * lq;
  for (int64_t c = 2 * int64_t(threadIdx.x); c < qd + kd; c += 2 * blockDim.x) {
    const float freq = ropeFreq(c % head_dim, head_dim, theta, factors);
    float sn, cs;
    sincosf(pos * freq, &sn, &cs);
    sn *= scale;
    cs *= scale;
    const float x0 = row[c], x1 = row[c + 1];
    row[c] = x0 * cs - x1 * sn;
    row[c + 1] = x0 * sn + x1 * cs;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < kd; i += blockDim.x) {
    kc[p * kd + i] = row[qd + i];
    vc[p * kd + i] = row[qd + kd + i];
  }
}

// Cache rows pos + t <- k[t], v[t]                 grid T
__global__ void kvAppendKernel(const StepParams *s, const float *k, int64_t ldk,
                               const float *v, int64_t ldv, float *kc,
                               float *vc, int64_t kvd) {
  KernelScope scope;
  pdlWait();
  const int t = blockIdx.x;
  const int64_t p = s->pos + t;
  for (int64_t i = threadIdx.x; i < kvd; i += blockDim.x) {
    kc[p * kvd + i] = k[t * ldk + i];
    vc[p * kvd + i] = v[t * ldv + i];
  }
}

// Attention of row t, head h (grid (n_heads, T), kAttnThreads threads):
// over positions 0 .. pos+t of K/V rows (causal, the KV cache; with a
// sliding window > 0 only the last `window` of them) or over all n_rows rows
// (not causal, self-attention). K/V row j of head h starts at
// K + j * ldk + (h / group) * head_dim. Scores: one thread per position
// (16-byte loads of K when head_dim and the strides allow); output: each
// warp sums its share of the positions with the lanes across head_dim,
// then the warps' partial rows are added. Dynamic shared memory: q
// (head_dim), the scores (every position), the partial rows (warps x
// head_dim): attentionSmem().
constexpr int kAttnThreads = 256;
constexpr int kAttnMaxDimsPerLane = 8; // head_dim <= 256

__host__ __device__ constexpr size_t attentionSmem(int head_dim,
                                                   int positions) {
  return sizeof(float) * (size_t(head_dim) + size_t(positions) +
                          size_t(kAttnThreads / 32) * head_dim);
}

__global__ void __launch_bounds__(kAttnThreads)
    attentionKernel(const StepParams *s, const float *q, int64_t ldq,
                    const float *K, int64_t ldk, const float *V, int64_t ldv,
                    float *out, int64_t ldo, int group, int head_dim,
                    int causal, int n_rows, int window) {
  KernelScope scope;
  pdlWait();
  extern __shared__ float smem[];
  __shared__ float red[32];
  const int h = blockIdx.x, t = blockIdx.y;
  int n = causal ? s->pos + t + 1 : n_rows;
  if (causal && window > 0 && n > window) { // the window's first position
    K += int64_t(n - window) * ldk;
    V += int64_t(n - window) * ldv;
    n = window;
  }
  const int nw = kAttnThreads / 32;
  float *qs = smem;                // head_dim
  float *scores = smem + head_dim; // n
  float *part = scores + n;        // nw * head_dim
  const int64_t koff = int64_t(h / group) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += kAttnThreads)
    qs[d] = q[t * ldq + int64_t(h) * head_dim + d];
  __syncthreads();
  const float div = sqrtf(float(head_dim));
  const bool vec = (head_dim % 4) == 0 && (ldk % 4) == 0 &&
                   (reinterpret_cast<uintptr_t>(K) % 16) == 0;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n; j += kAttnThreads) {
    const float *kr = K + int64_t(j) * ldk + koff;
    float dot = 0.0f;
    if (vec) {
#pragma unroll 8
      for (int d = 0; d < head_dim; d += 4) {
        const float4 k4 = __ldg(reinterpret_cast<const float4 *>(kr + d));
        dot = fmaf(qs[d], k4.x, dot);
        dot = fmaf(qs[d + 1], k4.y, dot);
        dot = fmaf(qs[d + 2], k4.z, dot);
        dot = fmaf(qs[d + 3], k4.w, dot);
      }
    } else {
      for (int d = 0; d < head_dim; ++d)
        dot = fmaf(qs[d], kr[d], dot);
    }
    const float sc = dot / div;
    scores[j] = sc;
    mx = fmaxf(mx, sc);
  }
  mx = blockMax(mx, red);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n; j += kAttnThreads) {
    const float e = expf(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  sum = blockSum(sum, red); // its barriers order the scores' writes
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per_lane = (head_dim + 31) / 32;
  float acc[kAttnMaxDimsPerLane];
#pragma unroll
  for (int i = 0; i < kAttnMaxDimsPerLane; ++i)
    acc[i] = 0.0f;
#pragma unroll 4
  for (int j = warp; j < n; j += nw) {
    const float p = scores[j];
    const float *vr = V + int64_t(j) * ldv + koff;
#pragma unroll
    for (int i = 0; i < kAttnMaxDimsPerLane; ++i) {
      const int d = lane + 32 * i;
      if (i < per_lane && d < head_dim)
        acc[i] = fmaf(p, __ldg(vr + d), acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kAttnMaxDimsPerLane; ++i) {
    const int d = lane + 32 * i;
    if (i < per_lane && d < head_dim)
      part[warp * head_dim + d] = acc[i];
  }
  __syncthreads();
  for (int d = threadIdx.x; d < head_dim; d += kAttnThreads) {
    float o = 0.0f;
    for (int w = 0; w < nw; ++w)
      o += part[w * head_dim + d];
    out[t * ldo + int64_t(h) * head_dim + d] = o / sum;
  }
}

// Causal attention over K/V rows that do not sit in one array (a looped
// block's slots): k_rows[j] / v_rows[j] point at position j's n_kv_heads *
// head_dim values, or are null where no slot holds the position (left out
// of the softmax; a row with none outputs zeros, as the CPU kernel); a
// sliding window > 0 leaves out the positions before its first.
// grid (n_heads, T), kAttnThreads threads, attentionSmem() bytes.
__global__ void __launch_bounds__(kAttnThreads)
    attentionRowsKernel(const StepParams *s, const float *q, int64_t ldq,
                        const float *const *k_rows, const float *const *v_rows,
                        float *out, int64_t ldo, int group, int head_dim,
                        int window) {
  KernelScope scope;
  pdlWait();
  extern __shared__ float smem[];
  __shared__ float red[32];
  const int h = blockIdx.x, t = blockIdx.y;
  int n = s->pos + t + 1;
  if (window > 0 && n > window) {
    k_rows += n - window;
    v_rows += n - window;
    n = window;
  }
  const int nw = kAttnThreads / 32;
  float *qs = smem;
  float *scores = smem + head_dim;
  float *part = scores + n;
  const int64_t koff = int64_t(h / group) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += kAttnThreads)
    qs[d] = q[t * ldq + int64_t(h) * head_dim + d];
  __syncthreads();
  const float div = sqrtf(float(head_dim));
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n; j += kAttnThreads) {
    const float *kr = k_rows[j];
    float sc = -INFINITY;
    if (kr) {
      kr += koff;
      float dot = 0.0f;
      for (int d = 0; d < head_dim; ++d)
        dot = fmaf(qs[d], kr[d], dot);
      sc = dot / div;
    }
    scores[j] = sc;
    mx = fmaxf(mx, sc);
  }
  mx = blockMax(mx, red);
  if (mx == -INFINITY) { // uniform: no present position
    for (int d = threadIdx.x; d < head_dim; d += kAttnThreads)
      out[t * ldo + int64_t(h) * head_dim + d] = 0.0f;
    return;
  }
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n; j += kAttnThreads) {
    const float e = scores[j] == -INFINITY ? 0.0f : expf(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  sum = blockSum(sum, red);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per_lane = (head_dim + 31) / 32;
  float acc[kAttnMaxDimsPerLane];
#pragma unroll
  for (int i = 0; i < kAttnMaxDimsPerLane; ++i)
    acc[i] = 0.0f;
  for (int j = warp; j < n; j += nw) {
    const float *vr = v_rows[j];
    if (!vr)
      continue;
    const float p = scores[j];
    vr += koff;
#pragma unroll
    for (int i = 0; i < kAttnMaxDimsPerLane; ++i) {
      const int d = lane + 32 * i;
      if (i < per_lane && d < head_dim)
        acc[i] = fmaf(p, vr[d], acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kAttnMaxDimsPerLane; ++i) {
    const int d = lane + 32 * i;
    if (i < per_lane && d < head_dim)
      part[warp * head_dim + d] = acc[i];
  }
  __syncthreads();
  for (int d = threadIdx.x; d < head_dim; d += kAttnThreads) {
    float o = 0.0f;
    for (int w = 0; w < nw; ++w)
      o += part[w * head_dim + d];
    out[t * ldo + int64_t(h) * head_dim + d] = o / sum;
  }
}

// Host side: calls f(std::integral_constant<int, DPL>()) with the head
// dims per lane of the attention kernels' instantiation for head_dim
// (<= 32 DPL; head_dim <= 256).
template <typename F> void withDimsPerLane(int64_t head_dim, F &&f) {
  if (head_dim <= 32)
    f(std::integral_constant<int, 1>());
  else if (head_dim <= 64)
    f(std::integral_constant<int, 2>());
  else if (head_dim <= 128)
    f(std::integral_constant<int, 4>());
  else
    f(std::integral_constant<int, 8>());
}

// Causal attention of a long step over the KV cache, tiled (flash
// attention on the SIMT cores, f32): one block per (head, kTileRows rows);
// the block walks the key positions in tiles of kTileKeys, staging each
// K and V tile in shared memory once for all its rows, and keeps a running
// max, sum and output per row (online softmax). Row t (position pos + t)
// sees keys 0 .. pos + t. Each warp owns kTileRows / 8 rows; for the scores
// the lanes run across the tile's keys, for the output across head_dim.
// grid (n_heads, ceil(T / kTileRows)), kAttnThreads threads, dynamic shared
// memory attentionTiledSmem(head_dim).
constexpr int kTileRows = 32;
constexpr int kTileKeys = 64;
__host__ __device__ constexpr size_t attentionTiledSmem(int head_dim) {
  // q rows, K tile (rows padded by one float: no bank conflicts), V tile.
  return sizeof(float) *
         (size_t(kTileRows) * head_dim + size_t(kTileKeys) * (head_dim + 1) +
          size_t(kTileKeys) * head_dim);
}
template <int DPL> // head_dim <= 32 DPL
__global__ void __launch_bounds__(kAttnThreads)
    attentionTiledKernel(const StepParams *s, const float *q, int64_t ldq,
                         const float *K, int64_t ldk, const float *V,
                         int64_t ldv, float *out, int64_t ldo, int group,
                         int head_dim, int T) {
  KernelScope scope;
  pdlWait();
  extern __shared__ float smem[];
  constexpr int nw = kAttnThreads / 32;
  constexpr int R = kTileRows / nw; // rows per warp
  const int h = blockIdx.x, t0 = blockIdx.y * kTileRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int pos = s->pos;
  const int kstride = head_dim + 1;
  float *qs = smem;                      // [kTileRows][head_dim]
  float *ks = qs + kTileRows * head_dim; // [kTileKeys][head_dim + 1]
  float *vs = ks + kTileKeys * kstride;  // [kTileKeys][head_dim]
  const int64_t koff = int64_t(h / group) * head_dim;
  const int rows = min(kTileRows, T - t0);
  for (int i = threadIdx.x; i < kTileRows * head_dim; i += kAttnThreads) {
    const int r = i / head_dim, d = i - r * head_dim;
    qs[i] =
        r < rows ? q[int64_t(t0 + r) * ldq + int64_t(h) * head_dim + d] : 0.0f;
  }
  const float div = sqrtf(float(head_dim));
  float m[R], l[R], o[R][DPL];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i)
      o[r][i] = 0.0f;
  }
  // Keys 0 .. pos + t0 + rows - 1 (the block's last row).
  const int n_keys = pos + t0 + rows;
  for (int k0 = 0; k0 < n_keys; k0 += kTileKeys) {
    __syncthreads(); // the previous tile is no longer read (and q is staged)
    for (int i = threadIdx.x; i < kTileKeys * head_dim; i += kAttnThreads) {
      const int j = i / head_dim, d = i - j * head_dim;
      const bool ok = k0 + j < n_keys;
      ks[j * kstride + d] = ok ? K[int64_t(k0 + j) * ldk + koff + d] : 0.0f;
      vs[j * head_dim + d] = ok ? V[int64_t(k0 + j) * ldv + koff + d] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = warp * R + r; // within the tile
      if (row >= rows)
        continue;                      // warp-uniform
      const int last = pos + t0 + row; // the row's newest visible key
      if (k0 > last)
        continue;
      // Scores of keys k0 + lane and k0 + lane + 32.
      float sc[2];
#pragma unroll
      for (int hk = 0; hk < 2; ++hk) {
        const int j = lane + 32 * hk;
        float dot = 0.0f;
        for (int d = 0; d < head_dim; ++d)
          dot = fmaf(qs[row * head_dim + d], ks[j * kstride + d], dot);
        sc[hk] = k0 + j <= last ? dot / div : -INFINITY;
      }
      const float mt = warpMax(fmaxf(sc[0], sc[1]));
      const float mn = fmaxf(m[r], mt); // finite: key k0 <= last is visible
      const float corr = expf(m[r] - mn);
      const float p0 = expf(sc[0] - mn), p1 = expf(sc[1] - mn);
      l[r] = l[r] * corr + warpSum(p0 + p1);
      m[r] = mn;
#pragma unroll
      for (int i = 0; i < DPL; ++i)
        o[r][i] *= corr;
      for (int j = 0; j < kTileKeys; ++j) {
        const float pj = __shfl_sync(0xffffffffu, j < 32 ? p0 : p1, j & 31);
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
          const int d = lane + 32 * i;
          if (d < head_dim)
            o[r][i] = fmaf(pj, vs[j * head_dim + d], o[r][i]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int row = warp * R + r;
    if (row >= rows)
      continue;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane + 32 * i;
      if (d < head_dim)
        out[int64_t(t0 + row) * ldo + int64_t(h) * head_dim + d] =
            o[r][i] / l[r];
    }
  }
}

// Causal attention of a long step on the tensor cores
// (LOOM_CUDA_PREFILL_ATTN=tc, an experiment until measured on a GPU): the
// tiled kernel's walk (one block per (head, kTcRows rows), key tiles of
// kTcKeys staged in shared memory, online softmax per row) with S = Q K^T
// and O += P V as WMMA m16n16k8 TF32 products in the 3xTF32 form: every
// f32 operand x is split into hi = tf32(x) and lo = tf32(x - hi), and
// a b ~ a_lo b_hi + a_hi b_lo + a_hi b_hi accumulated in f32 (the dropped
// a_lo b_lo is ~2^-22 relative), so the result stays within the f32
// kernels' tolerance. Each of kTcWarps warps owns 16 query rows; its lanes
// keep the running output in registers, two lanes per row (HD / 2 dims
// each). The per-warp S/P and P V tiles have rows padded by kTcPad floats,
// and each lane walks its columns from a rotation of its own (tcRotation):
// the 32 lanes of a warp (16 rows x 2 halves) then hit 32 different
// shared-memory banks at every step, where unpadded rows of 64 floats put
// them all in one. HD = head_dim: 16, 32, 64 or 128 (withTcHeadDim). grid
// (n_heads, ceil(T / kTcRows)), 32 kTcWarps threads, dynamic shared memory
// attentionTcSmem(HD).
constexpr int kTcWarps = 4;
constexpr int kTcRows = 16 * kTcWarps;
constexpr int kTcKeys = 64;
constexpr int kTcPad = 4; // keeps WMMA's leading dimension a multiple of 4
__host__ __device__ constexpr size_t attentionTcSmem(int head_dim) {
  // Q rows, K tile, V tile, and per warp: S then P (16 x kTcKeys) and P V
  // (16 x head_dim), rows padded.
  return sizeof(float) *
         (size_t(kTcRows) * head_dim + 2 * size_t(kTcKeys) * head_dim +
          size_t(kTcWarps) * 16 * (kTcKeys + kTcPad + head_dim + kTcPad));
}
// The column rotation of the lane that owns row r of a warp's 16 and half
// `half` of its columns: with rows kTcPad (4 banks) apart, rows r and r + 8
// and the two halves would share banks; rotations 0..3 separate them.
__host__ __device__ constexpr int tcRotation(int r, int half) {
  return 2 * half + (r >> 3);
}

// acc += a b in 3xTF32 (a: 16 x 8 at pa, b: 8 x 16 at pb, as the layouts
// say; lda / ldb in floats).
template <typename LayoutB>
__device__ __forceinline__ void mma3xTf32(
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> &acc,
    const float *pa, unsigned lda, const float *pb, unsigned ldb) {
  namespace w = nvcuda::wmma;
  w::fragment<w::matrix_a, 16, 16, 8, w::precision::tf32, w::row_major> ah, al;
  w::fragment<w::matrix_b, 16, 16, 8, w::precision::tf32, LayoutB> bh, bl;
  w::load_matrix_sync(ah, pa, lda);
  w::load_matrix_sync(bh, pb, ldb);
#pragma unroll
  for (int i = 0; i < ah.num_elements; ++i) {
    const float x = ah.x[i];
    ah.x[i] = w::__float_to_tf32(x);
    al.x[i] = w::__float_to_tf32(x - ah.x[i]);
  }
#pragma unroll
  for (int i = 0; i < bh.num_elements; ++i) {
    const float x = bh.x[i];
    bh.x[i] = w::__float_to_tf32(x);
    bl.x[i] = w::__float_to_tf32(x - bh.x[i]);
  }
  w::mma_sync(acc, al, bh, acc);
  w::mma_sync(acc, ah, bl, acc);
  w::mma_sync(acc, ah, bh, acc);
}

template <int HD>
__global__ void __launch_bounds__(32 * kTcWarps)
    attentionTcKernel(const StepParams *s, const float *q, int64_t ldq,
                      const float *K, int64_t ldk, const float *V, int64_t ldv,
                      float *out, int64_t ldo, int group, int T) {
  static_assert(HD % 16 == 0 && HD <= 128, "head_dim: 16, 32, 64 or 128");
  namespace w = nvcuda::wmma;
  KernelScope scope;
  pdlWait();
  extern __shared__ __align__(128) float tc_smem[];
  constexpr int kHalf = HD / 2;
  const int h = blockIdx.x, t0 = blockIdx.y * kTcRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int pos = s->pos;
  float *qs = tc_smem;           // [kTcRows][HD]
  float *ks = qs + kTcRows * HD; // [kTcKeys][HD]
  float *vs = ks + kTcKeys * HD; // [kTcKeys][HD]
  constexpr int kLdp = kTcKeys + kTcPad, kLdo = HD + kTcPad;
  float *ps = vs + kTcKeys * HD + warp * 16 * (kLdp + kLdo); // [16][kLdp]
  float *os = ps + 16 * kLdp;                                // [16][kLdo]
  const int64_t koff = int64_t(h / group) * HD;
  const int rows = min(kTcRows, T - t0);
  for (int i = threadIdx.x; i < kTcRows * HD; i += blockDim.x) {
    const int r = i / HD, d = i - r * HD;
    qs[i] = r < rows ? q[int64_t(t0 + r) * ldq + int64_t(h) * HD + d] : 0.0f;
  }
  // Lane: row r of the warp's 16, dims [d0, d0 + kHalf).
  const int r = lane >> 1, d0 = (lane & 1) * kHalf;
  const int rot = tcRotation(r, lane & 1);
  const int row_pos = pos + t0 + warp * 16 + r; // its newest visible key
  const float div = sqrtf(float(HD));
  float m = -INFINITY, l = 0.0f, o[kHalf];
#pragma unroll
  for (int i = 0; i < kHalf; ++i)
    o[i] = 0.0f;
  const int n_keys = pos + t0 + rows; // the block's last row sees them all
  for (int k0 = 0; k0 < n_keys; k0 += kTcKeys) {
    __syncthreads(); // the previous tile is no longer read (q is staged)
    for (int i = threadIdx.x; i < kTcKeys * HD / 4; i += blockDim.x) {
      const int j = (4 * i) / HD, d = 4 * i - j * HD;
      float4 kv = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vv = kv;
      if (k0 + j < n_keys) {
        kv = *reinterpret_cast<const float4 *>(K + int64_t(k0 + j) * ldk +
                                               koff + d);
        vv = *reinterpret_cast<const float4 *>(V + int64_t(k0 + j) * ldv +
                                               koff + d);
      }
      *reinterpret_cast<float4 *>(ks + j * HD + d) = kv;
      *reinterpret_cast<float4 *>(vs + j * HD + d) = vv;
    }
    __syncthreads();
    // S = Q_warp K_tile^T: 16 x kTcKeys, in kTcKeys / 16 column blocks.
#pragma unroll
    for (int j = 0; j < kTcKeys / 16; ++j) {
      w::fragment<w::accumulator, 16, 16, 8, float> acc;
      w::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < HD / 8; ++kk)
        mma3xTf32<w::col_major>(acc, qs + warp * 16 * HD + 8 * kk, HD,
                                ks + 16 * j * HD + 8 * kk, HD);
      w::store_matrix_sync(ps + 16 * j, acc, kLdp, w::mem_row_major);
    }
    __syncwarp();
    // Online softmax of row r over this tile's keys, half per lane; sc[c]
    // is column (c + rot) mod kTcKeys / 2 of the half.
    constexpr int kCols = kTcKeys / 2;
    float *pr = ps + r * kLdp + (lane & 1) * kCols;
    const int c0 = k0 + (lane & 1) * kCols;
    float sc[kCols];
    float mt = -INFINITY;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int col = (c + rot) & (kCols - 1), key = c0 + col;
      sc[c] = key <= row_pos && key < n_keys ? pr[col] / div : -INFINITY;
      mt = fmaxf(mt, sc[c]);
    }
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
    const float mn = fmaxf(m, mt); // finite: key 0 is in every row's view
    const float corr = expf(m - mn);
    float sum = 0.0f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const float p = expf(sc[c] - mn);
      pr[(c + rot) & (kCols - 1)] = p;
      sum += p;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * corr + sum;
    m = mn;
#pragma unroll
    for (int i = 0; i < kHalf; ++i)
      o[i] *= corr;
    __syncwarp();
    // O += P V_tile: 16 x HD, in HD / 16 column blocks.
#pragma unroll
    for (int jd = 0; jd < HD / 16; ++jd) {
      w::fragment<w::accumulator, 16, 16, 8, float> acc;
      w::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < kTcKeys / 8; ++kk)
        mma3xTf32<w::row_major>(acc, ps + 8 * kk, kLdp,
                                vs + 8 * kk * HD + 16 * jd, HD);
      w::store_matrix_sync(os + 16 * jd, acc, kLdo, w::mem_row_major);
    }
    __syncwarp();
    // o[i] is dim d0 + (i + rot) mod kHalf of the row (rotated like sc).
#pragma unroll
    for (int i = 0; i < kHalf; ++i)
      o[i] += os[r * kLdo + d0 + ((i + rot) & (kHalf - 1))];
    __syncwarp(); // os and ps are rewritten by the next tile
  }
  const int t = t0 + warp * 16 + r;
  if (t < T) {
#pragma unroll
    for (int i = 0; i < kHalf; ++i)
      out[int64_t(t) * ldo + int64_t(h) * HD + d0 + ((i + rot) & (kHalf - 1))] =
          o[i] / l;
  }
}

// Host side: calls f(std::integral_constant<int, HD>()) for the tensor-core
// attention's instantiation of head_dim, or returns false where it has
// none (head_dim not a multiple of 16, or over 128).
template <typename F> bool withTcHeadDim(int64_t head_dim, F &&f) {
  switch (head_dim) {
  case 16:
    f(std::integral_constant<int, 16>());
    return true;
  case 32:
    f(std::integral_constant<int, 32>());
    return true;
  case 64:
    f(std::integral_constant<int, 64>());
    return true;
  case 128:
    f(std::integral_constant<int, 128>());
    return true;
  default:
    return false;
  }
}

// RoPE and the KV append folded into a single-row decode attention
// (attentionSplitKernel with T = 1): q and the new position's k and v are
// read from the packed qkv row as projected, rotated in registers (the
// pairs sit in adjacent lanes), and the new k and v rows are written to the
// cache by the first query head of each KV group. k == nullptr: the rows
// are in the cache already (ropeAppendKernel ran).
struct RopeFold {
  const float *k = nullptr; // unrotated k of the new position (n_kv heads)
  const float *v = nullptr;
  float theta = 0.0f;
  const float *factors = nullptr; // ropeFreq's, device memory
  float scale = 1.0f;             // of cos and sin (ropeKernel's)
};

// RoPE of the dims lane + 32 i of one head at position pos, in two halves
// so that the angles (constant data and the step's position) are taken
// before the programmatic wait: ropeAngles gives each lane its cos and sin
// (llama2.c's float32 angles, as ropeKernel), ropeRotate turns x by them
// (the rotation pairs sit in adjacent lanes). Every lane of the warp calls
// both.
template <int DPL>
__device__ __forceinline__ void ropeAngles(float *cs, float *sn, int head_dim,
                                           float pos, float theta,
                                           const float *factors, float scale) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    const int d = lane + 32 * i;
    cs[i] = 1.0f;
    sn[i] = 0.0f;
    if (d < head_dim) {
      sincosf(pos * ropeFreq(d & ~1, head_dim, theta, factors), &sn[i], &cs[i]);
      sn[i] *= scale;
      cs[i] *= scale;
    }
  }
}
template <int DPL>
__device__ __forceinline__ void ropeRotate(float *x, const float *cs,
                                           const float *sn, int head_dim) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    const float other = __shfl_xor_sync(0xffffffffu, x[i], 1);
    const int d = lane + 32 * i;
    if (d < head_dim)
      x[i] =
          (d & 1) ? other * sn[i] + x[i] * cs[i] : x[i] * cs[i] - other * sn[i];
  }
}

// Sums B values over the warp at once (B a power of two, at most 32): on
// return lane l holds the total of v[l / (32 / B)] over the 32 lanes. Each
// round halves the values a lane keeps, exchanging the other half with the
// lane `mask` away (B - 1 shuffles in all), then the 32 / B lanes of each
// value are summed as warpSum does (log2(32 / B) shuffles): 9 shuffles for
// B = 8, where B warpSums take 40. Fixed order: no dependence on timing.
template <int B> __device__ __forceinline__ float warpSumEach(float *v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int h = B / 2, mask = 16; h >= 1; h /= 2, mask /= 2) {
    const bool upper = (lane & mask) != 0;
#pragma unroll
    for (int k = 0; k < h; ++k) {
      const float send = upper ? v[k] : v[k + h];
      const float keep = upper ? v[k + h] : v[k];
      v[k] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
    }
  }
  float r = v[0];
#pragma unroll
  for (int mask = 16 / B; mask >= 1; mask /= 2)
    r += __shfl_xor_sync(0xffffffffu, r, mask);
  return r;
}

// Decode-time attention over the KV cache split along the positions, so
// that a step of few rows still spreads over the GPU (flash-decoding):
// grid (n_heads, T, splits), kAttnThreads threads. Split z of row t takes
// positions b + [z c, min(n, (z + 1) c)), c = ceil(n / splits), of the n
// positions from b: b = 0 and n = pos + t + 1 (read on the device, so a
// captured graph serves every position), or, under a sliding window
// shorter than that, the window's (b = pos + t + 1 - window, n = window); and
// writes its running max m, sum l and unnormalised output o (head_dim) to
// ws[((t n_heads + h) splits + z) (head_dim + 2) + ...] = [o..., m, l].
// The last split of (t, h) to finish (counters[t n_heads + h], zero
// between launches) merges them:
//   out[t, h] = sum_z e^(m_z - M) o_z / sum_z e^(m_z - M) l_z, M = max m_z.
// Within a split each warp keeps its own m, l and o over every nw-th
// position (lanes across head_dim, K and V rows of kB positions loaded
// together), and the warps are merged the same way.
// Dynamic shared memory: attentionSplitSmem(head_dim).
//
// CLUSTER (LOOM_CUDA_ATTN_MERGE=cluster, an experiment until measured):
// the splits of (t, h) are one thread block cluster (at most
// kMaxClusterSplits, Hopper); each keeps its [o, m, l] in its own shared
// memory and the cluster's first block merges them through distributed
// shared memory, without the global partials, the fence, the counter and
// the L2 round trips. Dynamic shared memory: attentionSplitClusterSmem.
//
// EARLY (LOOM_CUDA_ATTN_EARLY=1, an experiment until measured): each warp's
// first batch of K and V rows is loaded before the programmatic wait where
// its positions precede the step's (s->pos: written by earlier steps, which
// finished before this step's parameters were copied in), and every next
// batch is loaded before the current one is used (two batches in
// registers, at most 128 of them), so that the walk waits for one round
// trip to memory, not one a batch.
constexpr int kMaxClusterSplits = 8; // the portable cluster size
constexpr int kMaxAttnSplits = 32;   // a warp's lanes (mergeSplits)
// NW: warps a block (kAttnThreads / 32, or 16: LOOM_CUDA_ATTN_WARPS=16, an
// experiment until measured: half the positions a warp at the same
// splits, one block per multiprocessor).
constexpr int kAttnSplitWarps = kAttnThreads / 32;
__host__ __device__ constexpr size_t
attentionSplitSmem(int head_dim, int nw = kAttnSplitWarps) {
  return sizeof(float) * size_t(nw) * size_t(head_dim + 2);
}
__host__ __device__ constexpr size_t
attentionSplitClusterSmem(int head_dim, int nw = kAttnSplitWarps) {
  return attentionSplitSmem(head_dim, nw) +
         sizeof(float) * size_t(head_dim + 2);
}
// out[d] = sum_y e^(m_y - M) o_y[d] / sum_y e^(m_y - M) l_y, M = max m_y,
// over the splits' partials [o (head_dim), m, l]; load(y, i) reads value i
// of split y's (global memory, or a cluster peer's shared memory). Every
// split's m and l are loaded at once (lane y of the first warp), and each
// output dim's o_y too, so the merge waits for two round trips to L2 (or
// to the peers), not for one per split and value in turn. The whole block
// calls it; e: kMaxAttnSplits + 1 floats of shared memory.
template <typename Load>
__device__ __forceinline__ void
mergeSplits(const Load &load, int splits, int head_dim, float *out, float *e) {
  if (threadIdx.x < 32) {
    const int y = threadIdx.x;
    const float m = y < splits ? load(y, head_dim) : -INFINITY;
    const float l = y < splits ? load(y, head_dim + 1) : 0.0f;
    const float M = warpMax(m);
    const float ey = m == -INFINITY ? 0.0f : expf(m - M);
    const float L = warpSum(ey * l);
    e[y] = ey;
    if (y == 0)
      e[kMaxAttnSplits] = L;
  }
  __syncthreads();
  const float L = e[kMaxAttnSplits];
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v[kMaxAttnSplits];
#pragma unroll
    for (int y = 0; y < kMaxAttnSplits; ++y)
      v[y] = y < splits ? load(y, d) : 0.0f;
    float o = 0.0f;
#pragma unroll
    for (int y = 0; y < kMaxAttnSplits; ++y)
      if (y < splits)
        o = fmaf(e[y], v[y], o);
    out[d] = o / L;
  }
}

// (EARLY asks for at most 128 registers: 16 warps a multiprocessor;
// otherwise ptxas's own choice, 80 at head_dim 64: a minimum of 1 block of
// 8 warps would let it take 149.)
//
// The body is attentionSplit, a device function. Where a split block's head,
// row and split come from and how it waits: AttnKernelGrid, a kernel of its own
// (its block index, the programmatic wait, the newest k and v read through the
// non-coherent cache since an earlier kernel wrote them); the persistent decode
// kernel passes its own (PersistentAttnGrid).
struct AttnKernelGrid {
  static constexpr bool kInputFromEarlierKernel = true;
  __device__ __forceinline__ int head() const { return blockIdx.x; }
  __device__ __forceinline__ int row() const { return blockIdx.y; }
  __device__ __forceinline__ int split() const { return blockIdx.z; }
  __device__ __forceinline__ int heads() const { return gridDim.x; }
  __device__ __forceinline__ int splits() const { return gridDim.z; }
  __device__ __forceinline__ void wait() const { pdlWait(); }
};
template <int DPL, bool CLUSTER, bool EARLY, int NW, typename G>
__device__ __forceinline__ void
attentionSplit(const G &grid, const StepParams *s, const float *q, int64_t ldq,
               float *K, int64_t ldk, float *V, int64_t ldv, int group,
               int head_dim, float *ws, int *counters, float *out, int64_t ldo,
               const RopeFold &fold, int window, float *smem) {
  // Before the wait: what depends only on the step's position (copied in
  // before any kernel of the step) and on constant data, the RoPE angles
  // of the newest position among them.
  __shared__ bool last;
  __shared__ float merge_e[kMaxAttnSplits + 1];
  const int h = grid.head(), t = grid.row(), z = grid.split();
  const int splits = grid.splits(), n_heads = grid.heads();
  const int end = s->pos + t + 1;
  const int base = window > 0 && end > window ? end - window : 0;
  const int n = end - base;
  const int chunk = (n + splits - 1) / splits;
  const int lo = base + min(n, z * chunk);
  const int hi = base + min(n, z * chunk + chunk);
  const int stride = head_dim + 2;
  constexpr int nw = NW;
  // This split's [o, m, l]: in global memory, or (CLUSTER) after the warps'
  // partials in shared memory.
  float *w = CLUSTER ? smem + nw * stride
                     : ws + ((int64_t(t) * n_heads + h) * splits + z) * stride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per_lane = (head_dim + 31) / 32;
  const int64_t koff = int64_t(h / group) * head_dim;
  const float div = sqrtf(float(head_dim));
  const int newest = end - 1; // T = 1 with a fold: the row being appended
  // Lane l holds dims l, l + 32, ... of q, of its running output, of each
  // K and V row.
  bool dim_ok[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i)
    dim_ok[i] = i < per_lane && lane + 32 * i < head_dim;
  float cs[DPL], sn[DPL];
  if (fold.k)
    ropeAngles<DPL>(cs, sn, head_dim, float(newest), fold.theta, fold.factors,
                    fold.scale);
  // Warp `warp` takes positions lo + warp, lo + warp + nw, ..., kB at a
  // time (their K and V rows loaded together, row pointers advanced, not
  // recomputed), with a running max m and sum l (online softmax). An empty
  // range leaves m = -inf, l = 0.
  constexpr int kB = DPL <= 2 ? 8 : 4;
  const int64_t kstep = int64_t(nw) * ldk, vstep = int64_t(nw) * ldv;
  const float *kp = K + int64_t(lo + warp) * ldk + koff + lane;
  const float *vp = V + int64_t(lo + warp) * ldv + koff + lane;
  // Loads the rows of the batch from j0 (rows kr, vr) whose positions j lie
  // in [from, to) into kv and vv (the fold's newest row from its own
  // buffers); the other entries stay as they are.
  const auto loadBatch = [&](float(&kv)[kB][DPL], float(&vv)[kB][DPL], int j0,
                             const float *kr, const float *vr, int from,
                             int to) {
#pragma unroll
    for (int b = 0; b < kB; ++b) {
      const int j = j0 + b * nw;
      const bool fresh = fold.k && j == newest;
      const float *kb = fresh ? fold.k + koff + lane : kr + b * kstep;
      const float *vb = fresh ? fold.v + koff + lane : vr + b * vstep;
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const bool ok = j >= from && j < to && dim_ok[i];
        // The newest row is this step's: written in the same kernel when
        // the grid is persistent, so read coherently there.
        const bool nc = G::kInputFromEarlierKernel || !fresh;
        kv[b][i] = ok ? (nc ? __ldg(kb + 32 * i) : kb[32 * i]) : kv[b][i];
        vv[b][i] = ok ? (nc ? __ldg(vb + 32 * i) : vb[32 * i]) : vv[b][i];
      }
    }
  };
  const auto clear = [](float(&kv)[kB][DPL], float(&vv)[kB][DPL]) {
#pragma unroll
    for (int b = 0; b < kB; ++b)
#pragma unroll
      for (int i = 0; i < DPL; ++i)
        kv[b][i] = vv[b][i] = 0.0f;
  };
  float m = -INFINITY, l = 0.0f;
  float kv[kB][DPL], vv[kB][DPL];
  int j0 = lo + warp;
  // EARLY: the first batch's positions before the step's own, before the
  // wait (s->pos bounds the rows this step has not written).
  const int early = max(lo, min(hi, s->pos));
  if constexpr (EARLY) {
    clear(kv, vv);
    loadBatch(kv, vv, j0, kp, vp, lo, early);
  }
  grid.wait();
  float qv[DPL], acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    qv[i] =
        dim_ok[i] ? q[t * ldq + int64_t(h) * head_dim + lane + 32 * i] : 0.0f;
    acc[i] = 0.0f;
  }
  if (fold.k)
    ropeRotate<DPL>(qv, cs, sn, head_dim);
  if constexpr (EARLY)
    loadBatch(kv, vv, j0, kp, vp, early, hi);
  for (; j0 < hi; j0 += kB * nw, kp += kB * kstep, vp += kB * vstep) {
    // The batch's rows: EARLY, loaded already, and the next batch's are
    // requested now; otherwise loaded now.
    [[maybe_unused]] float nk[kB][DPL], nv[kB][DPL];
    if constexpr (EARLY) {
      clear(nk, nv);
      if (j0 + kB * nw < hi)
        loadBatch(nk, nv, j0 + kB * nw, kp + kB * kstep, vp + kB * vstep, lo,
                  hi);
    } else {
      clear(kv, vv);
      loadBatch(kv, vv, j0, kp, vp, lo, hi);
    }
    // The newest position (fold): rotate its k; the group's first head
    // appends k and v to the cache (nothing in this launch reads that row).
    if (fold.k && newest >= j0 && newest < j0 + kB * nw &&
        (newest - j0) % nw == 0 && newest < hi) {
      const int b = (newest - j0) / nw;
#pragma unroll
      for (int bb = 0; bb < kB; ++bb)
        if (bb == b) {
          ropeRotate<DPL>(kv[bb], cs, sn, head_dim);
          if (h % group == 0) {
#pragma unroll
            for (int i = 0; i < DPL; ++i) {
              if (dim_ok[i]) {
                const int d = lane + 32 * i;
                K[int64_t(newest) * ldk + koff + d] = kv[bb][i];
                V[int64_t(newest) * ldv + koff + d] = vv[bb][i];
              }
            }
          }
        }
    }
    // The kB dot products summed over the warp at once: lane l gets that
    // of position b = l / (32 / kB). One max over the warp, one exponential
    // a lane, then each p_b fetched from a lane that holds it for the
    // rescaled running sums.
    float dots[kB];
#pragma unroll
    for (int b = 0; b < kB; ++b) {
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < DPL; ++i)
        dot = fmaf(qv[i], kv[b][i], dot);
      dots[b] = dot;
    }
    const float mine = warpSumEach<kB>(dots);
    const int bm = lane / (32 / kB);
    const float sc = j0 + bm * nw < hi ? mine / div : -INFINITY;
    // j0 < hi: position j0's score is finite, and so is mn; m = -inf
    // gives corr = 0.
    const float mn = fmaxf(m, warpMax(sc));
    const float corr = expf(m - mn);
    const float p_mine = expf(sc - mn); // 0 past hi
    l *= corr;
#pragma unroll
    for (int i = 0; i < DPL; ++i)
      acc[i] *= corr;
#pragma unroll
    for (int b = 0; b < kB; ++b) {
      const float p = __shfl_sync(0xffffffffu, p_mine, b * (32 / kB));
      l += p;
#pragma unroll
      for (int i = 0; i < DPL; ++i)
        acc[i] = fmaf(p, vv[b][i], acc[i]);
    }
    m = mn;
    if constexpr (EARLY) {
#pragma unroll
      for (int b = 0; b < kB; ++b)
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
          kv[b][i] = nk[b][i];
          vv[b][i] = nv[b][i];
        }
    }
  }
  // The block's warps merged: part[warp] = [o (head_dim), m, l].
  float *part = smem;
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    const int d = lane + 32 * i;
    if (i < per_lane && d < head_dim)
      part[warp * stride + d] = acc[i];
  }
  if (lane == 0) {
    part[warp * stride + head_dim] = m;
    part[warp * stride + head_dim + 1] = l;
  }
  __syncthreads();
  float bm = -INFINITY;
#pragma unroll
  for (int v = 0; v < nw; ++v)
    bm = fmaxf(bm, part[v * stride + head_dim]);
  for (int d = threadIdx.x; d < head_dim + 1; d += 32 * NW) {
    // d == head_dim: the sum l.
    const int src = d < head_dim ? d : head_dim + 1;
    float o = 0.0f;
    if (bm != -INFINITY) {
#pragma unroll
      for (int v = 0; v < nw; ++v) {
        const float mv = part[v * stride + head_dim];
        if (mv != -INFINITY)
          o += expf(mv - bm) * part[v * stride + src];
      }
    }
    w[src] = o;
  }
  if (threadIdx.x == 0)
    w[head_dim] = bm;
  if constexpr (CLUSTER) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    __trap(); // thread block clusters need sm_90; never launched below it
#else
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync(); // every split's [o, m, l] is in its shared memory
    if (cluster.block_rank() == 0)
      mergeSplits(
          [&](int y, int i) { return cluster.map_shared_rank(w, y)[i]; },
          splits, head_dim, out + t * ldo + int64_t(h) * head_dim, merge_e);
    cluster.sync(); // the peers' shared memory outlives the first's reads
    return;
#endif
  }
  // Publish the partials, then count this split in; the last one merges.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0)
    last = atomicAdd(&counters[t * n_heads + h], 1) == splits - 1;
  __syncthreads();
  if (!last)
    return;
  __threadfence();
  const float *all = ws + (int64_t(t) * n_heads + h) * splits * stride;
  mergeSplits([&](int y, int i) { return __ldcg(all + y * stride + i); },
              splits, head_dim, out + t * ldo + int64_t(h) * head_dim, merge_e);
  if (threadIdx.x == 0)
    counters[t * n_heads + h] = 0; // ready for the next launch
}
template <int DPL, bool CLUSTER, bool EARLY,
          int NW = kAttnSplitWarps> // head_dim <= 32 DPL
__global__ void __launch_bounds__(32 * NW, EARLY ? 16 / NW : 0)
    attentionSplitKernel(const StepParams *s, const float *q, int64_t ldq,
                         float *K, int64_t ldk, float *V, int64_t ldv,
                         int group, int head_dim, float *ws, int *counters,
                         float *out, int64_t ldo, RopeFold fold, int window) {
  KernelScope scope;
  extern __shared__ float smem[];
  attentionSplit<DPL, CLUSTER, EARLY, NW>(AttnKernelGrid{}, s, q, ldq, K, ldk,
                                          V, ldv, group, head_dim, ws, counters,
                                          out, ldo, fold, window, smem);
}

// Decode GEMVs: y[t, n] (+)= sum_k x[t, k] W[n, k] for T <= kGemvMaxRows
// rows, W stored [N, K] (f32 or bf16), 16-byte aligned rows, K % VEC == 0
// (VEC values per 16 bytes: 8 bf16, 4 f32). Blocks of kGemvThreads threads;
// each output column is summed by S warps (split K: warp s of a column reads
// the 512-byte segments s, s + S, s + 2S, ... of its row, so the S warps
// stream adjacent memory). Every lane keeps U 16-byte loads of W in flight
// and issues the next U before using the current ones (double buffering);
// W bypasses L1 (ld.global.nc.L1::no_allocate) so that x, read through
// L1, stays there. The first weight loads are issued before waiting for the
// predecessor kernel. ROWS = 1 is the single-token case (no row
// predicates). The partial sums of a column are added in a fixed order:
// results do not depend on scheduling. (Measured and dropped, docs/cuda.md:
// x staged in shared memory, and an RmsNorm folded into the GEMV.)
constexpr int kGemvMaxRows = 8;
constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;

struct GemvConfig {
  int unroll = 4; // U: 16-byte loads in flight per lane (per matrix: U / 2
                  // in the gate/up GEMV)
  int split = 1;  // S: warps per column (1, 2 or 4)
  bool ahead = false; // A: gemvColumn's second group before the wait
};

__device__ __forceinline__ uint4 loadStreaming(const void *p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// 16 raw bytes of W as floats: 8 bf16 or 4 f32.
__device__ __forceinline__ void unpackVec(const uint4 &u, float *f,
                                          const __nv_bfloat16 *) {
  const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}
__device__ __forceinline__ void unpackVec(const uint4 &u, float *f,
                                          const float *) {
  f[0] = __uint_as_float(u.x);
  f[1] = __uint_as_float(u.y);
  f[2] = __uint_as_float(u.z);
  f[3] = __uint_as_float(u.w);
}

// Where a GEMV block's columns come from and how it waits for its input
// x. GemvKernelGrid, a kernel of its own (every kernel here): its block
// index, the programmatic wait, and x read through the non-coherent cache,
// since an earlier kernel wrote it. A persistent kernel (the experiment of
// `loom-bench-gemv --chain`) passes its own: a virtual block index, a grid
// barrier, and x read coherently (written earlier in the same kernel).
struct GemvKernelGrid {
  static constexpr bool kInputFromEarlierKernel = true;
  __device__ __forceinline__ unsigned block() const { return blockIdx.x; }
  __device__ __forceinline__ void wait() const { pdlWait(); }
};

// acc[m][t] += W_m[16 bytes at k] . x[t, k .. k + VEC) for M matrices
// sharing x (M = 1: a GEMV, 2: gate and up). NC: x through the
// non-coherent cache (__ldg).
template <typename W, int VEC, int ROWS, int M, bool NC = true>
__device__ __forceinline__ void gemvFma(const uint4 *raw, const float *x,
                                        int64_t ldx, int T, int k,
                                        float (*acc)[ROWS]) {
  float wv[M][VEC];
#pragma unroll
  for (int m = 0; m < M; ++m)
    unpackVec(raw[m], wv[m], static_cast<const W *>(nullptr));
#pragma unroll
  for (int t = 0; t < ROWS; ++t) {
    if (ROWS == 1 || t < T) {
#pragma unroll
      for (int i = 0; i < VEC; i += 4) {
        const float4 *xp =
            reinterpret_cast<const float4 *>(x + t * ldx + k + i);
        const float4 f = NC ? __ldg(xp) : *xp;
#pragma unroll
        for (int m = 0; m < M; ++m) {
          acc[m][t] = fmaf(wv[m][i], f.x, acc[m][t]);
          acc[m][t] = fmaf(wv[m][i + 1], f.y, acc[m][t]);
          acc[m][t] = fmaf(wv[m][i + 2], f.z, acc[m][t]);
          acc[m][t] = fmaf(wv[m][i + 3], f.w, acc[m][t]);
        }
      }
    }
  }
}

// Sums the R values v over the warp and over the S warps of the column
// (fixed order, through shared memory). Returns true on the thread that
// holds the totals (lane 0 of the column's first warp), in v.
template <int R, int S>
__device__ __forceinline__ bool gemvReduce(float *v, float *red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < R; ++r)
    v[r] = warpSum(v[r]);
  if constexpr (S == 1) {
    return lane == 0;
  } else {
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r)
        red[warp * R + r] = v[r];
    }
    __syncthreads();
    if (lane != 0 || warp % S != 0)
      return false;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float x = 0.0f;
#pragma unroll
      for (int s = 0; s < S; ++s)
        x += red[(warp + s) * R + r];
      v[r] = x;
    }
    return true;
  }
}

// The body of gemvKernel (M = 1) and gateUpKernel (M = 2): streams the M
// matrices' rows of column n and returns, on the thread gemvReduce picks,
// out[m][t]. False elsewhere. A (LOOM_CUDA_GEMV_AHEAD=1, an experiment
// until measured): the second group of loads is issued before the wait
// too, and each next group right after the current one is used rather than
// before (still one group ahead), so twice the bytes are requested while the
// predecessor kernel finishes. G: the block's columns and its wait
// (GemvKernelGrid).
template <typename W, int VEC, int ROWS, int U, int S, int M, bool A,
          typename G = GemvKernelGrid>
__device__ __forceinline__ bool
gemvColumn(const float *x, int64_t ldx, const W *const *Wm, int T, int K, int N,
           int &n, float (*out)[ROWS], const G &grid = G{}) {
  static_assert(kGemvWarps % S == 0, "split must divide the block's warps");
  constexpr int H = U / M > 0 ? U / M : 1; // loads in flight per matrix
  constexpr int R = M * ROWS;
  __shared__ float red[S == 1 ? 1 : kGemvWarps * R];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  n = int(grid.block()) * (kGemvWarps / S) + warp / S;
  const int part = warp % S;
  const bool active = n < N;
  const W *w[M];
#pragma unroll
  for (int m = 0; m < M; ++m)
    w[m] = Wm[m] + int64_t(active ? n : 0) * K;
  constexpr int kSeg = 32 * VEC;
  float acc[M][ROWS];
#pragma unroll
  for (int t = 0; t < ROWS; ++t)
#pragma unroll
    for (int m = 0; m < M; ++m)
      acc[m][t] = 0.0f;
  // Load u of the group starting at k0: k0 + u S kSeg.
  int k0 = part * kSeg + lane * VEC;
  const auto loadGroup = [&](uint4(&g)[H][M], int kg) {
#pragma unroll
    for (int u = 0; u < H; ++u) {
      const int k = kg + u * S * kSeg;
#pragma unroll
      for (int m = 0; m < M; ++m)
        g[u][m] =
            active && k < K ? loadStreaming(w[m] + k) : make_uint4(0, 0, 0, 0);
    }
  };
  // More groups after the one from kg (some lane still has k < K).
  const auto moreAfter = [&](int kg) {
    return kg + H * S * kSeg - lane * VEC < K;
  };
  uint4 cur[H][M], nxt[H][M];
  loadGroup(cur, k0);
  if (A && moreAfter(k0))
    loadGroup(nxt, k0 + H * S * kSeg);
  grid.wait();
  if (active) {
    for (;;) {
      const bool more = moreAfter(k0);
      if (!A && more)
        loadGroup(nxt, k0 + H * S * kSeg);
#pragma unroll
      for (int u = 0; u < H; ++u) {
        const int k = k0 + u * S * kSeg;
        if (k < K)
          gemvFma<W, VEC, ROWS, M, G::kInputFromEarlierKernel>(cur[u], x, ldx,
                                                               T, k, acc);
      }
      if (!more)
        break;
      k0 += H * S * kSeg;
#pragma unroll
      for (int u = 0; u < H; ++u)
#pragma unroll
        for (int m = 0; m < M; ++m)
          cur[u][m] = nxt[u][m];
      if (A && moreAfter(k0))
        loadGroup(nxt, k0 + H * S * kSeg);
    }
  }
  float v[R];
#pragma unroll
  for (int t = 0; t < ROWS; ++t)
#pragma unroll
    for (int m = 0; m < M; ++m)
      v[m * ROWS + t] = acc[m][t];
  if (!gemvReduce<R, S>(v, red) || !active)
    return false;
#pragma unroll
  for (int t = 0; t < ROWS; ++t)
#pragma unroll
    for (int m = 0; m < M; ++m)
      out[m][t] = v[m * ROWS + t];
  return true;
}

template <typename W, int VEC, int ROWS, int U, int S, bool A>
__global__ void __launch_bounds__(kGemvThreads)
    gemvKernel(const float *__restrict__ x, int64_t ldx,
               const W *__restrict__ Wm, float *__restrict__ y, int64_t ldy,
               int T, int K, int N, int accumulate) {
  KernelScope scope;
  const W *ws[1] = {Wm};
  float out[1][ROWS];
  int n;
  if (!gemvColumn<W, VEC, ROWS, U, S, 1, A>(x, ldx, ws, T, K, N, n, out))
    return;
#pragma unroll
  for (int t = 0; t < ROWS; ++t) {
    if (ROWS == 1 || t < T) {
      float *o = y + t * ldy + n;
      *o = accumulate ? *o + out[0][t] : out[0][t];
    }
  }
}

// Two GEMVs over the same rows and the SiLU gate of a SwiGLU FFN in one
// pass: a = x W1^T, b = x W3^T, y = silu(a) * b (all three written, so the
// fused form has the three dispatches' effects). As gemvKernel, with U / 2
// loads of each matrix in flight and x read once for both.
template <typename W, int VEC, int ROWS, int U, int S, bool A>
__global__ void __launch_bounds__(kGemvThreads)
    gateUpKernel(const float *__restrict__ x, int64_t ldx,
                 const W *__restrict__ W1, const W *__restrict__ W3, float *a,
                 int64_t lda, float *b, int64_t ldb, float *y, int64_t ldy,
                 int T, int K, int N) {
  KernelScope scope;
  const W *ws[2] = {W1, W3};
  float out[2][ROWS];
  int n;
  if (!gemvColumn<W, VEC, ROWS, U, S, 2, A>(x, ldx, ws, T, K, N, n, out))
    return;
#pragma unroll
  for (int t = 0; t < ROWS; ++t) {
    if (ROWS == 1 || t < T) {
      const float g = out[0][t], u = out[1][t];
      a[t * lda + n] = g;
      b[t * ldb + n] = u;
      y[t * ldy + n] = g / (1.0f + expf(-g)) * u;
    }
  }
}

// Host side: calls f(GemvTag<...>{}) with the instantiation for T rows and
// the configuration (U = 8 only for bf16 single-row GEMVs; multi-row and
// f32 GEMVs use U = 4; `ahead` only for single-row GEMVs). The caller
// launches gemvKernel / gateUpKernel of the tag's parameters.
template <typename W, int VEC, int ROWS, int U, int S, bool A> struct GemvTag {
  using Weight = W;
  static constexpr int kVec = VEC, kRows = ROWS, kUnroll = U, kSplit = S;
  static constexpr bool kAhead = A;
};
template <typename W, int VEC, int ROWS, int U, bool A, typename F>
void withGemvSplit(int split, F &&f) {
  switch (split) {
  case 2:
    return f(GemvTag<W, VEC, ROWS, U, 2, A>{});
  case 4:
    return f(GemvTag<W, VEC, ROWS, U, 4, A>{});
  default:
    return f(GemvTag<W, VEC, ROWS, U, 1, A>{});
  }
}
template <typename W, int VEC, int U, typename F>
void withGemvAhead(const GemvConfig &c, F &&f) {
  if (c.ahead)
    return withGemvSplit<W, VEC, 1, U, true>(c.split, f);
  withGemvSplit<W, VEC, 1, U, false>(c.split, f);
}
template <typename W, int VEC, typename F>
void withGemvConfig(const GemvConfig &c, int T, F &&f) {
  if (T > 1)
    return withGemvSplit<W, VEC, kGemvMaxRows, 4, false>(c.split, f);
  if constexpr (sizeof(W) == 2) {
    if (c.unroll >= 8)
      return withGemvAhead<W, VEC, 8>(c, f);
  }
  withGemvAhead<W, VEC, 4>(c, f);
}
// The default configuration for an N x K matrix (bf16 or f32 weights),
// from loom-bench-gemv on an H100 (docs/cuda.md): 4 loads in flight, and
// two warps per column, four for narrow matrices, one for wide matrices of
// short rows (the 110M classifier).
inline GemvConfig gemvConfigFor(int64_t N, int64_t K) {
  GemvConfig c;
  c.unroll = 4;
  c.split = N <= 1024 ? 4 : (N >= 16384 && K < 1024) ? 1 : 2;
  return c;
}
// LOOM_CUDA_GEMV: "U,S" for every decode GEMV, or "CLASS:U,S;CLASS:U,S..."
// for those of some kernel classes (qkv, out, gate_up, matmul, logits: the
// executor's), the others keeping gemvConfigFor's; U in {4, 8}, S in {1,
// 2, 4}. parseGemvOverrides fills `out` and returns "", or says what is
// malformed.
struct GemvOverrides {
  bool every = false; // "U,S": `all` for every GEMV
  GemvConfig all;
  std::vector<std::pair<std::string, GemvConfig>> by_class;
};
inline std::string parseGemvOverrides(const std::string &spec,
                                      GemvOverrides &out) {
  out = GemvOverrides();
  const auto config = [](const std::string &v, GemvConfig &c) {
    int u = 0, sp = 0, used = 0;
    if (std::sscanf(v.c_str(), "%d,%d%n", &u, &sp, &used) != 2 ||
        size_t(used) != v.size() || (u != 4 && u != 8) ||
        (sp != 1 && sp != 2 && sp != 4))
      return false;
    c = GemvConfig{u, sp};
    return true;
  };
  const char *expected = " (expected U,S with U in {4, 8} and S in {1, 2, "
                         "4}, or CLASS:U,S;... with CLASS qkv, out, gate_up, "
                         "matmul or logits)";
  if (spec.find(':') == std::string::npos) {
    out.every = true;
    return config(spec, out.all) ? "" : "'" + spec + "' is not U,S" + expected;
  }
  size_t at = 0;
  while (at <= spec.size()) {
    const size_t semi = std::min(spec.find(';', at), spec.size());
    const std::string item = spec.substr(at, semi - at);
    const size_t colon = item.find(':');
    const std::string name = item.substr(0, colon);
    if (colon == std::string::npos ||
        (name != "qkv" && name != "out" && name != "gate_up" &&
         name != "matmul" && name != "logits"))
      return "'" + item + "' names no GEMV class" + expected;
    for (const auto &[n, unused] : out.by_class)
      if (n == name)
        return "'" + name + "' given twice";
    GemvConfig c;
    if (!config(item.substr(colon + 1), c))
      return "'" + item.substr(colon + 1) + "' is not U,S" + expected;
    out.by_class.emplace_back(name, c);
    at = semi + 1;
  }
  return "";
}

// Blocks of a GEMV launch over N columns with S warps per column.
inline unsigned gemvBlocks(int64_t N, int split) {
  const int64_t per_block = kGemvWarps / split;
  return static_cast<unsigned>((N + per_block - 1) / per_block);
}

// A one-row bf16 GEMV streamed through shared memory by the copy engine
// (LOOM_CUDA_GEMV_BULK=NS, an experiment until measured; the first piece
// of a persistent decode kernel, docs/cuda.md, Performance): one block per
// multiprocessor owns a contiguous range of rows of W, one contiguous range
// of memory per matrix, and streams it in 16 KiB stages through a ring of
// NS stages with bulk asynchronous copies (cp.async.bulk: one thread
// issues a stage, an mbarrier counts its bytes). The first NS stages are
// requested before the programmatic wait, so up to NS x 16 KiB per
// multiprocessor stream while the kernel before finishes, without holding
// registers. A stage is 4 passes of 2048 weights: M matrices (1, or 2 for
// gate/up) x RS rows x KC chunks of 2048 (K = 2048 KC, RS = 4 / (M KC)).
// Thread i multiplies weights [8 i, 8 i + 8) of each pass with the x
// values it holds in registers; a stage's rows are summed over the warp,
// then over the 8 warps after the barrier that also frees the stage's slot
// for its next copy (a fixed order: deterministic). Outputs as gemvKernel
// (M = 1: y (+)= x W^T) and gateUpKernel (M = 2: a, b and y = silu(a) b).
constexpr int kBulkThreads = 256;
__device__ __forceinline__ uint64_t globalTimerNs() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
constexpr int kBulkStage = 4 * 2048; // weights a stage (16 KiB of bf16)
constexpr size_t gemvBulkSmem(int ns) {
  return size_t(ns) * kBulkStage * sizeof(__nv_bfloat16);
}
template <int NS, int KC, int M>
__global__ void __launch_bounds__(kBulkThreads, 1)
    gemvBulkKernel(const float *__restrict__ x,
                   const __nv_bfloat16 *__restrict__ W1,
                   const __nv_bfloat16 *__restrict__ W3, float *a, float *b,
                   float *y, int N, int accumulate) {
  static_assert(KC * M <= 4 && 4 % (KC * M) == 0, "4 passes a stage");
  constexpr int K = 2048 * KC, RS = 4 / (KC * M), PM = RS * KC;
  constexpr int nw = kBulkThreads / 32;
  extern __shared__ __align__(128) unsigned char bulk_smem[];
  __nv_bfloat16 *ring = reinterpret_cast<__nv_bfloat16 *>(bulk_smem);
  __shared__ uint64_t full[NS];
  __shared__ float red[2][nw][M * RS];
  KernelScope scope;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap(); // bulk copies need sm_90; never launched below it
#else
  namespace ptx = ::cuda::ptx;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // This block's stages: units of RS rows, split evenly over the grid.
  const int units = (N + RS - 1) / RS;
  const int u0 = int(int64_t(blockIdx.x) * units / gridDim.x);
  const int u1 = int(int64_t(blockIdx.x + 1) * units / gridDim.x);
  const int r0 = u0 * RS, stages = u1 - u0;
  if (tid == 0) {
    for (int r = 0; r < NS; ++r)
      ptx::mbarrier_init(&full[r], 1);
    ptx::fence_mbarrier_init(ptx::sem_release, ptx::scope_cluster);
  }
  __syncthreads();
  // Thread 0: stage st's rows of each matrix into its slot.
  const auto issue = [&](int st) {
    const int slot = st % NS;
    const int rows = min(RS, N - (r0 + st * RS));
    const uint32_t bytes = uint32_t(rows) * K * sizeof(__nv_bfloat16);
    ptx::mbarrier_arrive_expect_tx(ptx::sem_release, ptx::scope_cta,
                                   ptx::space_shared, &full[slot], M * bytes);
#pragma unroll
    for (int m = 0; m < M; ++m)
      ptx::cp_async_bulk(ptx::space_cluster, ptx::space_global,
                         ring + slot * kBulkStage + m * PM * 2048,
                         (m ? W3 : W1) + int64_t(r0 + st * RS) * K, bytes,
                         &full[slot]);
  };
  if (tid == 0)
    for (int st = 0; st < min(NS, stages); ++st)
      issue(st);
  pdlWait();
  float xr[KC][8];
#pragma unroll
  for (int c = 0; c < KC; ++c) {
    const float4 lo4 =
        __ldg(reinterpret_cast<const float4 *>(x + c * 2048 + tid * 8));
    const float4 hi4 =
        __ldg(reinterpret_cast<const float4 *>(x + c * 2048 + tid * 8 + 4));
    xr[c][0] = lo4.x, xr[c][1] = lo4.y, xr[c][2] = lo4.z, xr[c][3] = lo4.w;
    xr[c][4] = hi4.x, xr[c][5] = hi4.y, xr[c][6] = hi4.z, xr[c][7] = hi4.w;
  }
  for (int st = 0; st < stages; ++st) {
    const int slot = st % NS;
    // Bounded: a stage that has not landed after 2 s (by the global timer,
    // whatever try_wait's suspension) traps instead of hanging the step.
    if (!ptx::mbarrier_try_wait_parity(&full[slot], uint32_t((st / NS) & 1))) {
      const uint64_t t0 = globalTimerNs();
      while (
          !ptx::mbarrier_try_wait_parity(&full[slot], uint32_t((st / NS) & 1)))
        if (globalTimerNs() - t0 > 2000000000ull)
          __trap();
    }
    const int row0 = r0 + st * RS;
    float acc[M * RS];
#pragma unroll
    for (int i = 0; i < M * RS; ++i)
      acc[i] = 0.0f;
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const int m = p / PM, r = (p % PM) / KC, c = p % KC;
      if (row0 + r < N) { // past N: the slot's stale bytes
        const uint4 u = *reinterpret_cast<const uint4 *>(
            ring + slot * kBulkStage + p * 2048 + tid * 8);
        float w[8];
        unpackVec(u, w, static_cast<const __nv_bfloat16 *>(nullptr));
#pragma unroll
        for (int i = 0; i < 8; ++i)
          acc[m * RS + r] = fmaf(w[i], xr[c][i], acc[m * RS + r]);
      }
    }
#pragma unroll
    for (int i = 0; i < M * RS; ++i) {
      const float v = warpSum(acc[i]);
      if (lane == 0)
        red[st & 1][warp][i] = v;
    }
    __syncthreads(); // the slot is read and red[st & 1] written
    if (tid == 0 && st + NS < stages)
      issue(st + NS);
    if (tid < RS && row0 + tid < N) {
      float v[M];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        v[m] = 0.0f;
#pragma unroll
        for (int w = 0; w < nw; ++w)
          v[m] += red[st & 1][w][m * RS + tid];
      }
      const int n = row0 + tid;
      if constexpr (M == 1) {
        y[n] = accumulate ? y[n] + v[0] : v[0];
      } else {
        a[n] = v[0];
        b[n] = v[1];
        y[n] = v[0] / (1.0f + expf(-v[0])) * v[1];
      }
    }
  }
#endif
}
// Host side: calls f(kernel) with gemvBulkKernel's instantiation for ns
// stages (4, 6, 8 or 12), K and M and returns true, or false where it has
// none. Only the shapes the unit tests check on a GPU (the 1B's: GEMVs at
// K 2048 and 8192, gate/up at K 2048); the kernel takes K 4096 too.
template <typename F> bool withGemvBulk(int ns, int64_t K, int M, F &&f) {
  const auto chunks = [&](auto stages) {
    constexpr int NS = decltype(stages)::value;
    if (M == 1 && K == 2048)
      return f(gemvBulkKernel<NS, 1, 1>), true;
    if (M == 1 && K == 8192)
      return f(gemvBulkKernel<NS, 4, 1>), true;
    if (M == 2 && K == 2048)
      return f(gemvBulkKernel<NS, 1, 2>), true;
    return false;
  };
  switch (ns) {
  case 4:
    return chunks(std::integral_constant<int, 4>());
  case 6:
    return chunks(std::integral_constant<int, 6>());
  case 8:
    return chunks(std::integral_constant<int, 8>());
  case 12:
    return chunks(std::integral_constant<int, 12>());
  default:
    return false;
  }
}

// The same for any K and alignment: scalar loads.
// The persistent decode kernel (LOOM_CUDA_PERSISTENT=B, an experiment until
// measured; docs/cuda.md, Performance): the layers of a one-row step, from
// the first layer's RmsNorm to the final norm, as one cooperative launch
// of B blocks per multiprocessor that runs the same device code as the
// kernels it replaces (addRmsNormRow, gemvColumn, attentionSplit) stage
// after stage over virtual blocks, with a grid barrier where a launch
// boundary was. Each block's first weight loads of a GEMV stage are issued
// before that barrier, as they are before the programmatic wait. What a
// stage's blocks write, later stages read with coherent loads (after the
// barrier's fences); only the weights and the cached K and V rows of
// earlier steps go through the non-coherent cache.

// The grid barrier: a count of arrivals and a generation the last arrival
// advances (it resets the count first), so it needs no reset between
// launches. A block spinning for more than kBarrierTimeoutNs traps (a grid
// that is not co-resident would otherwise hang the GPU): that ends the
// CUDA context, so the session fails with a launch error instead of
// hanging, and cannot run again.
// The two words sit on different 128-byte lines: the spinning blocks'
// reads of the generation do not queue behind the arrivals' atomics.
struct GridBarrier {
  unsigned count;
  unsigned pad[31];
  unsigned generation;
};
constexpr uint64_t kBarrierTimeoutNs = 2000000000ull;
__device__ __forceinline__ void gridBarrier(GridBarrier *b) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned *gen = &b->generation;
    const unsigned g = *gen; // read before arriving: it cannot move yet
    __threadfence();         // the block's writes before its arrival
    if (atomicAdd(&b->count, 1u) == gridDim.x - 1) {
      atomicExch(&b->count, 0u);
      __threadfence();
      atomicAdd(&b->generation, 1u);
    } else {
      const uint64_t since = globalTimerNs();
      while (*gen == g)
        if (globalTimerNs() - since > kBarrierTimeoutNs)
          __trap();
    }
    __threadfence(); // the other blocks' writes after it
  }
  __syncthreads();
}

enum class PersistentOp : int { Norm, Gemv, GateUp, Attention };
// One stage, in device memory (built once per program by the executor).
struct PersistentStage {
  PersistentOp op;
  int K, N;        // GEMVs: x[K] -> y[N] (W [N, K]); Norm: N = D
  bool accumulate; // Gemv: y += x W^T
  float eps;       // Norm
  const float *x;  // GEMV input; Norm: a; Attention: q
  const float *b;  // Norm: added to a
  float *z;        // Norm: a + b (null: not kept; y then must not alias)
  const void *w1;  // GEMV, gate (the kernel's W); Norm: its gain (f32)
  const void *w3;  // GateUp: up
  float *y;        // the output (GateUp: silu(a) * b)
  float *ya, *yb;  // GateUp: a and b
  float *kc, *vc;  // Attention: the layer's cache
  int64_t ldk;     //   its row length (kv_heads x head_dim)
  int group, head_dim, heads, splits, window;
  RopeFold fold;
};

// How a stage's blocks start: the first stage waits for the kernel before
// (programmatic wait), every later one at the grid barrier.
struct PersistentStart {
  GridBarrier *barrier;
  bool first;
  __device__ __forceinline__ void run() const {
    if (first)
      pdlWait();
    else
      gridBarrier(barrier);
  }
};

// gemvColumn's grid in a persistent kernel: virtual block vb, the stage's
// start (Start::run(): PersistentStart, or the chain bench's) as the wait
// of the block's first virtual block (vb = blockIdx.x).
template <typename Start> struct VirtualGemvGrid {
  static constexpr bool kInputFromEarlierKernel = false;
  unsigned vb;
  const Start *start;
  __device__ __forceinline__ unsigned block() const { return vb; }
  __device__ __forceinline__ void wait() const {
    if (vb == blockIdx.x)
      start->run();
  }
};

// attentionSplit's grid in the persistent kernel (one row).
struct PersistentAttnGrid {
  static constexpr bool kInputFromEarlierKernel = false;
  int h, z, nh, ns;
  bool first_vb;
  const PersistentStart *start;
  __device__ __forceinline__ int head() const { return h; }
  __device__ __forceinline__ int row() const { return 0; }
  __device__ __forceinline__ int split() const { return z; }
  __device__ __forceinline__ int heads() const { return nh; }
  __device__ __forceinline__ int splits() const { return ns; }
  __device__ __forceinline__ void wait() const {
    if (first_vb)
      start->run();
  }
};

// The GEMVs at the 1B's launched default: 4 loads in flight, 2 warps a
// column.
constexpr int kPersistentUnroll = 4, kPersistentSplit = 2;

template <typename W, int M>
__device__ __forceinline__ void persistentGemv(const PersistentStart &start,
                                               const PersistentStage &st) {
  constexpr unsigned per_block = kGemvWarps / kPersistentSplit;
  constexpr int kVec = 16 / sizeof(W);
  const int K = st.K, N = st.N;
  const unsigned blocks = (unsigned(N) + per_block - 1) / per_block;
  const W *ws[2] = {static_cast<const W *>(st.w1),
                    static_cast<const W *>(st.w3)};
#pragma unroll 1
  for (unsigned vb = blockIdx.x; vb < blocks; vb += gridDim.x) {
    const VirtualGemvGrid<PersistentStart> g{vb, &start};
    float out[M][1];
    int n;
    if (gemvColumn<W, kVec, 1, kPersistentUnroll, kPersistentSplit, M, false>(
            st.x, K, ws, 1, K, N, n, out, g)) {
      if constexpr (M == 2) {
        const float gv = out[0][0], u = out[1][0];
        st.ya[n] = gv;
        st.yb[n] = u;
        st.y[n] = gv / (1.0f + expf(-gv)) * u;
      } else {
        st.y[n] = st.accumulate ? st.y[n] + out[0][0] : out[0][0];
      }
    }
    __syncthreads(); // gemvColumn's shared partial sums, reused next
  }
  if (blockIdx.x >= blocks) // a block without columns here
    start.run();
}

template <int DPL>
__device__ __forceinline__ void
persistentAttention(const PersistentStart &start, const PersistentStage &st,
                    const StepParams *s, float *ws, int *counters,
                    float *smem) {
  const int nh = st.heads, blocks = nh * st.splits;
  // In registers: the walk reads its pointers often, and a reference into
  // the stages would reload them after every store.
  const RopeFold fold = st.fold;
#pragma unroll 1
  for (int vb = int(blockIdx.x); vb < blocks; vb += int(gridDim.x)) {
    const PersistentAttnGrid g{
        vb % nh, vb / nh, nh, st.splits, vb == int(blockIdx.x), &start};
    attentionSplit<DPL, false, false, kAttnSplitWarps>(
        g, s, st.x, 0, st.kc, st.ldk, st.vc, st.ldk, st.group, st.head_dim, ws,
        counters, st.y, 0, fold, st.window, smem);
    __syncthreads(); // the split's shared memory, reused next
  }
  if (int(blockIdx.x) >= blocks)
    start.run();
}

// kGemvThreads threads (the attention's kAttnThreads too), at most
// kPersistentBlocks blocks a multiprocessor (128 registers), dynamic shared
// memory attentionSplitSmem(head_dim); W: every GEMV's weights (f32 or
// bf16), head_dim <= 32 DPL.
constexpr int kPersistentBlocks = 2;
static_assert(kAttnThreads == kGemvThreads, "one block size for all stages");
template <typename W, int DPL>
__global__ void __launch_bounds__(kGemvThreads, kPersistentBlocks)
    persistentDecodeKernel(const StepParams *s, const PersistentStage *stages,
                           int count, GridBarrier *barrier, float *attn_ws,
                           int *attn_counters) {
  KernelScope scope;
  extern __shared__ float smem[];
  __shared__ float red[32];
#pragma unroll 1
  for (int i = 0; i < count; ++i) {
    const PersistentStage &st = stages[i];
    const PersistentStart start{barrier, i == 0};
    switch (st.op) {
    case PersistentOp::Norm:
      start.run();
      if (blockIdx.x == 0) {
        const float *w = static_cast<const float *>(st.w1);
        if (st.z)
          addRmsNormRow<true>(st.x, st.b, st.z, w, st.y, st.N, st.eps, red);
        else
          addRmsNormRow<false>(st.x, st.b, nullptr, w, st.y, st.N, st.eps, red);
      }
      break;
    case PersistentOp::Gemv:
      persistentGemv<W, 1>(start, st);
      break;
    case PersistentOp::GateUp:
      persistentGemv<W, 2>(start, st);
      break;
    case PersistentOp::Attention:
      persistentAttention<DPL>(start, st, s, attn_ws, attn_counters, smem);
      break;
    }
  }
}

// Host side: calls f(persistentDecodeKernel<W, DPL>) for head_dim (<= 128),
// or returns false.
template <typename W, typename F>
bool withPersistentKernel(int64_t head_dim, F &&f) {
  if (head_dim <= 32)
    f(persistentDecodeKernel<W, 1>);
  else if (head_dim <= 64)
    f(persistentDecodeKernel<W, 2>);
  else if (head_dim <= 128)
    f(persistentDecodeKernel<W, 4>);
  else
    return false;
  return true;
}

template <typename W>
__global__ void gemvScalarKernel(const float *__restrict__ x, int64_t ldx,
                                 const W *__restrict__ Wm,
                                 float *__restrict__ y, int64_t ldy, int T,
                                 int K, int N, int accumulate) {
  KernelScope scope;
  pdlWait();
  const int n = int((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N)
    return;
  const W *w = Wm + int64_t(n) * K;
  for (int t = 0; t < T; ++t) {
    float acc = 0.0f;
    for (int k = lane; k < K; k += 32)
      acc = fmaf(toFloat(w[k]), x[t * ldx + k], acc);
    acc = warpSum(acc);
    if (lane == 0) {
      float *o = y + t * ldy + n;
      *o = accumulate ? *o + acc : acc;
    }
  }
}

// xb[t, k] = bf16(x[t, k]) (dense rows of K), for cuBLAS bf16 GEMMs.
__global__ void toBf16Kernel(const float *x, int64_t ldx, __nv_bfloat16 *xb,
                             int64_t K, int64_t T) {
  KernelScope scope;
  pdlWait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * K)
    return;
  const int64_t t = i / K, k = i % K;
  xb[i] = __float2bfloat16_rn(x[t * ldx + k]);
}

// y[t, c] = x[t, c] + bias[c], c < cols            grid T
__global__ void addRowBiasKernel(const float *x, int64_t ldx, const float *bias,
                                 float *y, int64_t ldy, int64_t cols) {
  KernelScope scope;
  pdlWait();
  const int t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    y[t * ldy + c] = x[t * ldx + c] + bias[c];
}

// y[t, :] = x[t, :] + table[t, :]                  grid T
template <typename W>
__global__ void addPositionsKernel(const float *x, int64_t ldx, const W *table,
                                   float *y, int64_t ldy, int64_t D) {
  KernelScope scope;
  pdlWait();
  const int t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x)
    y[t * ldy + c] = x[t * ldx + c] + toFloat(table[t * D + c]);
}

__global__ void siluMulKernel(const float *a, const float *b, float *y,
                              int64_t n) {
  KernelScope scope;
  pdlWait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float v = a[i];
    y[i] = v / (1.0f + expf(-v)) * b[i];
  }
}

__global__ void addKernel(const float *a, const float *b, float *y, int64_t n) {
  KernelScope scope;
  pdlWait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = a[i] + b[i];
}

// 0.5 x (1 + tanh(u)) evaluated as x / (1 + exp(-2u)), as the CPU kernel.
__global__ void geluTanhKernel(const float *x, float *y, int64_t n) {
  KernelScope scope;
  pdlWait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    constexpr float k0 = -2.0f * 0.7978845608028654f;
    constexpr float k1 = k0 * 0.044715f;
    const float v = x[i];
    y[i] = v / (1.0f + expf(v * (k0 + k1 * (v * v))));
  }
}

// y[t] = [a[t], b[t]]                              grid T
__global__ void concatKernel(const float *a, int64_t na, const float *b,
                             int64_t nb, float *y) {
  KernelScope scope;
  pdlWait();
  const int t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < na + nb; c += blockDim.x)
    y[t * (na + nb) + c] = c < na ? a[t * na + c] : b[t * nb + (c - na)];
}

// The most candidates the nucleus sampler sorts on the device (see
// sampleKernel). More (a flat distribution over a large vocabulary) go back
// to the host.
constexpr int kTopPCandidates = 2048;
// sampleKernel's answer when the host must choose (DeviceExecutor's
// kSampleOnHost).
constexpr int32_t kSampleOnHostId = -2;

// The pieces of nucleus sampling that do not depend on the block's threads,
// shared by sampleKernel and the host test that runs them sequentially
// against the CPU sampler (test/unit/runtime/cuda_config_test.cu).

// A probability's histogram bin: its biased binary exponent (0 for zero
// and subnormals; p <= 1, so at most 127).
__host__ __device__ inline int nucleusBin(float p) {
  uint32_t u;
  memcpy(&u, &p, sizeof u);
  return u >> 23 < 127u ? int(u >> 23) : 127;
}

// From the bins' counts and masses (of the ids with p >= run.c's cutoff
// (1 - top_p) / (V - 1): the others together weigh under 1 - top_p, so the
// nucleus never needs them unless rounding says otherwise): the largest
// power of two t whose bins have mass over top_p, and in *n how many ids
// nucleusKeeps keeps with it; 0 and V when no bin reaches top_p (then every
// id is a candidate, as in the CPU sampler's second pass).
__host__ __device__ inline float nucleusThreshold(const int *bin_count,
                                                  const float *bin_mass, int V,
                                                  float top_p, int *n) {
  int count = 0, b = 127;
  float mass = 0.0f;
  for (; b > 0; --b) {
    count += bin_count[b];
    mass += bin_mass[b];
    if (mass > top_p)
      break;
  }
  *n = b == 0 ? V : count;
  const uint32_t bits = uint32_t(b) << 23;
  float t;
  memcpy(&t, &bits, sizeof t);
  return t; // b == 0: 0.0f
}

// run.c's cutoff: the ids below it weigh under 1 - top_p together.
__host__ __device__ inline float nucleusCutoff(float top_p, int V) {
  return (1.0f - top_p) / float(V - 1);
}

// Whether an id of probability p is a candidate for threshold t: the ids
// the histogram counted from bin t up, or every id when t == 0.
__host__ __device__ inline bool nucleusKeeps(float p, float t, float cutoff) {
  return t == 0.0f || (p >= t && p >= cutoff);
}

// One compare-exchange of a bitonic sorting network over (p, id) pairs:
// element i against i ^ stride in the merge of runs of `size`. Runs with
// (i & size) == 0 are put in order, the others in reverse; the last merge
// (size == the padded width) puts all in order: more likely first, lower id
// first among equals.
__host__ __device__ inline void nucleusCompareSwap(float *p, int *id, int i,
                                                   int size, int stride) {
  const int j = i ^ stride;
  if (j <= i)
    return;
  auto before = [&](int a, int b) {
    return p[a] > p[b] || (p[a] == p[b] && id[a] < id[b]);
  };
  const bool forward = (i & size) == 0;
  if (forward ? before(j, i) : before(i, j)) {
    const float tp = p[i];
    p[i] = p[j];
    p[j] = tp;
    const int ti = id[i];
    id[i] = id[j];
    id[j] = ti;
  }
}

// The choice from n candidates sorted by nucleusCompareSwap, which hold
// every id with p >= the threshold: the nucleus is their first m, whose
// mass exceeds top_p, and the coin walks it as the CPU sampler does (its
// order, its sums). kSampleOnHostId when the nucleus does not end inside
// the candidates and they are not every id.
__host__ __device__ inline int nucleusChoose(const float *p, const int *id,
                                             int n, int V, float top_p,
                                             float coin) {
  float mass = 0.0f;
  int m = 0;
  while (m < n) {
    mass += p[m++];
    if (mass > top_p)
      break;
  }
  if (!(mass > top_p) && n != V)
    return kSampleOnHostId;
  const float target = coin * mass;
  float cdf = 0.0f;
  int r = id[0];
  for (int k = 0; k < m && p[k] > 0.0f; ++k) {
    cdf += p[k];
    r = id[k];
    if (target < cdf)
      break;
  }
  return r;
}

// The next token from one row of V logits (one block of 1024 threads), as
// Sampler::sampleWithCoin chooses it: argmax (lowest id on ties) at
// temperature 0; otherwise, over p = softmax(logits / temperature), the
// first id whose cumulative p exceeds coin * total, in id order when
// top_p == 1, and in the nucleus when top_p < 1: the ids sorted most likely
// first, lower id first among equals, cut after the mass exceeds top_p;
// the coin then walks the nucleus (coin * its mass). Writes -1 for a NaN
// logit, kSampleOnHostId when the ids that may be in the nucleus are more
// than kTopPCandidates (the host then chooses). Result in s->next and *out.
__global__ void sampleKernel(const float *logits, int V, StepParams *s,
                             int32_t *out) {
  KernelScope scope;
  pdlWait();
  __shared__ float red[32];
  __shared__ int redi[32];
  __shared__ float part[1024];
  __shared__ int result;
  __shared__ float cand_p[kTopPCandidates];
  __shared__ int cand_id[kTopPCandidates];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float temp = s->temperature;
  auto finish = [&](int r) {
    if (tid == 0) {
      s->next = r;
      *out = r;
    }
  };
  // Max (lowest index among equals) and NaN.
  float best = -INFINITY;
  int bi = 0x7fffffff;
  int nan = 0;
  // Unrolled so that several loads are in flight per thread.
#pragma unroll 8
  for (int i = tid; i < V; i += blockDim.x) {
    float v = logits[i];
    if (isnan(v))
      nan = 1;
    v = temp > 0.0f ? v / temp : v;
    if (v > best || (v == best && i < bi)) {
      best = v;
      bi = i;
    }
  }
  nan = __syncthreads_or(nan);
  if (nan) {
    finish(-1);
    return;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) {
      best = ov;
      bi = oi;
    }
  }
  if (lane == 0) {
    red[warp] = best;
    redi[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    best = lane < nw ? red[lane] : -INFINITY;
    bi = lane < nw ? redi[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > best || (ov == best && oi < bi)) {
        best = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      red[0] = best;
      redi[0] = bi;
    }
  }
  __syncthreads();
  const float mx = red[0];
  const int argmax = redi[0];
  if (temp <= 0.0f) {
    finish(argmax);
    return;
  }
  // Each thread owns a contiguous range; range sums, a prefix over them,
  // then the owning thread scans its range. The weights are the CPU
  // sampler's: exp(logit / temperature - max), exactly 1 at the maximum.
  const int per = (V + blockDim.x - 1) / blockDim.x;
  const int lo = min(V, tid * per), hi = min(V, lo + per);
  auto weight = [&](int i) {
    const float v = logits[i] / temp;
    return v == mx ? 1.0f : expf(v - mx);
  };
  float mine = 0.0f;
#pragma unroll 8
  for (int i = lo; i < hi; ++i)
    mine += weight(i);
  part[tid] = mine;
  if (tid == 0)
    result = 0x7fffffff;
  __syncthreads();
  if (tid == 0) {
    float acc = 0.0f;
    for (int i = 0; i < int(blockDim.x); ++i) {
      const float p = part[i];
      part[i] = acc; // exclusive prefix
      acc += p;
    }
    red[1] = acc; // total
  }
  __syncthreads();
  const float total = red[1];
  const float top_p = s->top_p;
  if (top_p < 1.0f && V > 1) {
    // The nucleus is a prefix of all ids sorted most likely first, so any
    // set {p >= t} that holds it serves as the candidates. t is found with
    // a histogram of the probabilities' binary exponents: the largest power
    // of two whose set's mass exceeds top_p (the walk below checks that the
    // prefix really ends inside it, whatever the order of the float sums).
    // See nucleusThreshold and nucleusKeeps.
    __shared__ int bin_count[128];
    __shared__ float bin_mass[128];
    __shared__ int n_cand;
    __shared__ float threshold;
    for (int b = tid; b < 128; b += blockDim.x) {
      bin_count[b] = 0;
      bin_mass[b] = 0.0f;
    }
    __syncthreads();
    // Only ids over the cutoff: few in a peaked distribution, which keeps
    // the shared-memory atomics from queueing on a handful of bins.
    const float cutoff = nucleusCutoff(top_p, V);
    for (int i = lo; i < hi; ++i) {
      const float p = weight(i) / total;
      if (p >= cutoff) {
        atomicAdd(&bin_count[nucleusBin(p)], 1);
        atomicAdd(&bin_mass[nucleusBin(p)], p);
      }
    }
    __syncthreads();
    if (tid == 0) {
      int n = 0;
      threshold = nucleusThreshold(bin_count, bin_mass, V, top_p, &n);
      n_cand = n;
    }
    __syncthreads();
    if (n_cand > kTopPCandidates) {
      finish(kSampleOnHostId);
      return;
    }
    // The candidates, gathered in any order (the sort makes the order
    // total), then sorted with a bitonic network padded to a power of two.
    const float t = threshold;
    __syncthreads();
    if (tid == 0)
      n_cand = 0;
    __syncthreads();
    for (int i = lo; i < hi; ++i) {
      const float p = weight(i) / total;
      if (nucleusKeeps(p, t, cutoff)) {
        const int k = atomicAdd(&n_cand, 1);
        if (k < kTopPCandidates) {
          cand_p[k] = p;
          cand_id[k] = i;
        }
      }
    }
    __syncthreads();
    const int n = min(n_cand, kTopPCandidates); // the same in every thread
    int width = 1;
    while (width < n)
      width <<= 1;
    for (int k = n + tid; k < width; k += blockDim.x) {
      cand_p[k] = -1.0f; // after every candidate
      cand_id[k] = 0x7fffffff;
    }
    __syncthreads();
    for (int size = 2; size <= width; size <<= 1)
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        for (int i = tid; i < width; i += blockDim.x)
          nucleusCompareSwap(cand_p, cand_id, i, size, stride);
        __syncthreads();
      }
    finish(tid == 0 ? nucleusChoose(cand_p, cand_id, n, V, top_p, s->coin) : 0);
    return;
  }
  const float target = s->coin * total;
  float cdf = part[tid];
  if (cdf <= target && cdf + mine > target) {
    for (int i = lo; i < hi; ++i) {
      cdf += weight(i);
      if (cdf > target) {
        atomicMin(&result, i);
        break;
      }
    }
  }
  __syncthreads();
  // Rounding can leave the target at or above the total: the argmax is
  // then as good a choice as the last positive id.
  finish(result != 0x7fffffff ? result : argmax);
}

} // namespace loom::rt::cuda

#endif // LOOM_RUNTIME_CUDA_KERNELS_CUH
