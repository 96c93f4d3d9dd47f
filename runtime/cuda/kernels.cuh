// CUDA kernels of the dispatch form (one per schema Kernel, plus the
// decode-time GEMV and the on-device sampler). f32 activations throughout;
// weights f32 or bf16. Positions are read from the device-side StepParams,
// so a captured decode graph replays at every position.
#ifndef LOOM_RUNTIME_CUDA_KERNELS_CUH
#define LOOM_RUNTIME_CUDA_KERNELS_CUH

#include <cstdint>
#include <cuda_bf16.h>

namespace loom::rt::cuda {

// Per-step values the host writes (pinned) and copies in before the
// dispatches; a captured graph holds that copy as its first node.
struct StepParams {
  int32_t pos;       // position of the step's first row
  int32_t next;      // the sampler's output
  float temperature; // 0: argmax
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
__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
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
  pdlLaunchDependents();
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
  pdlLaunchDependents();
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
  pdlLaunchDependents();
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

// Interleaved-pair RoPE in place on the first `cols` columns, llama2.c's
// float32 angles: freq = 1 / powf(theta, j / head_dim), angle = pos * freq.
// grid T, one thread per pair.
__global__ void ropeKernel(const StepParams *s, float *x, int64_t ldx,
                           int64_t cols, int64_t head_dim, float theta) {
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  const float pos = float(s->pos + t);
  for (int64_t c = 2 * int64_t(threadIdx.x); c < cols; c += 2 * blockDim.x) {
    const int64_t j = c % head_dim;
    const float freq = 1.0f / powf(theta, float(j) / float(head_dim));
    const float angle = pos * freq;
    float sn, cs;
    sincosf(angle, &sn, &cs);
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
__global__ void addRmsNormKernel(const float *a, const float *b, float *z,
                                 const float *w, float *y, int64_t D,
                                 float eps) {
  pdlLaunchDependents();
  pdlWait();
  __shared__ float red[32];
  const int64_t off = int64_t(blockIdx.x) * D;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float v = a[off + i] + b[off + i];
    z[off + i] = v;
    ss += v * v;
  }
  ss = blockSum(ss, red);
  const float inv = 1.0f / sqrtf(ss / float(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    y[off + i] = w[i] * (inv * z[off + i]);
}

// RoPE on the q and k columns of a packed qkv row, then its k and v parts
// appended to the KV cache at pos + t.                grid T
__global__ void ropeAppendKernel(const StepParams *s, float *qkv, int64_t lq,
                                 int64_t qd, int64_t kd, int64_t head_dim,
                                 float theta, float *kc, float *vc) {
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  const int64_t p = s->pos + t;
  const float pos = float(p);
  float *row = qkv + t * lq;
  for (int64_t c = 2 * int64_t(threadIdx.x); c < qd + kd; c += 2 * blockDim.x) {
    const int64_t j = c % head_dim;
    const float freq = 1.0f / powf(theta, float(j) / float(head_dim));
    float sn, cs;
    sincosf(pos * freq, &sn, &cs);
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
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  const int64_t p = s->pos + t;
  for (int64_t i = threadIdx.x; i < kvd; i += blockDim.x) {
    kc[p * kvd + i] = k[t * ldk + i];
    vc[p * kvd + i] = v[t * ldv + i];
  }
}

// Attention of row t, head h (grid (n_heads, T), kAttnThreads threads):
// over positions 0 .. pos+t of K/V rows (causal, the KV cache) or over all
// n_rows rows (not causal, self-attention). K/V row j of head h starts at
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
                    int causal, int n_rows) {
  pdlLaunchDependents();
  pdlWait();
  extern __shared__ float smem[];
  __shared__ float red[32];
  const int h = blockIdx.x, t = blockIdx.y;
  const int n = causal ? s->pos + t + 1 : n_rows;
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
// of the softmax; a row with none outputs zeros, as the CPU kernel).
// grid (n_heads, T), kAttnThreads threads, attentionSmem() bytes.
__global__ void __launch_bounds__(kAttnThreads)
    attentionRowsKernel(const StepParams *s, const float *q, int64_t ldq,
                        const float *const *k_rows, const float *const *v_rows,
                        float *out, int64_t ldo, int group, int head_dim) {
  pdlLaunchDependents();
  pdlWait();
  extern __shared__ float smem[];
  __shared__ float red[32];
  const int h = blockIdx.x, t = blockIdx.y;
  const int n = s->pos + t + 1;
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

// Decode-time attention over the KV cache split along the positions, so
// that a step of few rows still spreads over the GPU (flash-decoding):
// grid (n_heads, T, splits), kAttnThreads threads. Split z of row t takes
// positions [z c, min(n, (z + 1) c)), c = ceil(n / splits), n = pos + t + 1
// (read on the device, so a captured graph serves every position), and
// writes its running max m, sum l and unnormalised output o (head_dim) to
// ws[((t n_heads + h) splits + z) (head_dim + 2) + ...] = [o..., m, l].
// The last split of (t, h) to finish (counters[t n_heads + h], zero
// between launches) merges them:
//   out[t, h] = sum_z e^(m_z - M) o_z / sum_z e^(m_z - M) l_z, M = max m_z.
// Dynamic shared memory: attentionSmem(head_dim, ceil(max positions /
// splits)).
__global__ void __launch_bounds__(kAttnThreads)
    attentionSplitKernel(const StepParams *s, const float *q, int64_t ldq,
                         const float *K, int64_t ldk, const float *V,
                         int64_t ldv, int group, int head_dim, float *ws,
                         int *counters, float *out, int64_t ldo) {
  pdlLaunchDependents();
  pdlWait();
  extern __shared__ float smem[];
  __shared__ float red[32];
  __shared__ bool last;
  const int h = blockIdx.x, t = blockIdx.y, z = blockIdx.z;
  const int splits = gridDim.z, n_heads = gridDim.x;
  const int n = s->pos + t + 1;
  const int chunk = (n + splits - 1) / splits;
  const int lo = min(n, z * chunk), hi = min(n, lo + chunk);
  const int stride = head_dim + 2;
  float *w = ws + ((int64_t(t) * n_heads + h) * splits + z) * stride;
  const int nw = kAttnThreads / 32;
  float *qs = smem;
  float *scores = smem + head_dim; // hi - lo
  float *part = scores + chunk;
  const int64_t koff = int64_t(h / group) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += kAttnThreads)
    qs[d] = q[t * ldq + int64_t(h) * head_dim + d];
  __syncthreads();
  const float div = sqrtf(float(head_dim));
  const bool vec = (head_dim % 4) == 0 && (ldk % 4) == 0 &&
                   (reinterpret_cast<uintptr_t>(K) % 16) == 0;
  // An empty range (more splits than positions) gives m = -inf, l = 0.
  float mx = -INFINITY;
  for (int j = lo + threadIdx.x; j < hi; j += kAttnThreads) {
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
    scores[j - lo] = sc;
    mx = fmaxf(mx, sc);
  }
  mx = blockMax(mx, red);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < hi - lo; j += kAttnThreads) {
    const float e = expf(scores[j] - mx);
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
#pragma unroll 4
  for (int j = lo + warp; j < hi; j += nw) {
    const float p = scores[j - lo];
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
    for (int v = 0; v < nw; ++v)
      o += part[v * head_dim + d];
    w[d] = o;
  }
  if (threadIdx.x == 0) {
    w[head_dim] = mx;
    w[head_dim + 1] = sum;
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
  float M = -INFINITY;
  for (int y = 0; y < splits; ++y)
    M = fmaxf(M, __ldcg(all + y * stride + head_dim));
  float L = 0.0f;
  for (int y = 0; y < splits; ++y) {
    const float m = __ldcg(all + y * stride + head_dim);
    if (m != -INFINITY)
      L += expf(m - M) * __ldcg(all + y * stride + head_dim + 1);
  }
  for (int d = threadIdx.x; d < head_dim; d += kAttnThreads) {
    float o = 0.0f;
    for (int y = 0; y < splits; ++y) {
      const float m = __ldcg(all + y * stride + head_dim);
      if (m != -INFINITY)
        o += expf(m - M) * __ldcg(all + y * stride + d);
    }
    out[t * ldo + int64_t(h) * head_dim + d] = o / L;
  }
  if (threadIdx.x == 0)
    counters[t * n_heads + h] = 0; // ready for the next launch
}

// y[t, n] (+)= sum_k x[t, k] W[n, k] for T <= kMaxRows rows: one warp per
// output column n, 16-byte loads of W, x read through the cache. VEC values
// per 16 bytes of W (8 bf16, 4 f32); K % VEC == 0 and 16-byte aligned rows.
constexpr int kGemvMaxRows = 8;
// 16-byte loads of W in flight per lane (GEMV; half per matrix in the
// gate/up GEMV). A compile-time choice: -DLOOM_GEMV_UNROLL=N.
#ifndef LOOM_GEMV_UNROLL
#define LOOM_GEMV_UNROLL 4
#endif

__device__ __forceinline__ void loadVec(const __nv_bfloat16 *p, float *f) {
  const uint4 u = *reinterpret_cast<const uint4 *>(p);
  const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}
__device__ __forceinline__ void loadVec(const float *p, float *f) {
  const float4 u = *reinterpret_cast<const float4 *>(p);
  f[0] = u.x;
  f[1] = u.y;
  f[2] = u.z;
  f[3] = u.w;
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

template <typename W, int VEC>
__global__ void gemvKernel(const float *__restrict__ x, int64_t ldx,
                           const W *__restrict__ Wm, float *__restrict__ y,
                           int64_t ldy, int T, int K, int N, int accumulate) {
  pdlLaunchDependents();
  const int n = int((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) {
    pdlWait();
    return;
  }
  const W *w = Wm + int64_t(n) * K;
  float acc[kGemvMaxRows];
#pragma unroll
  for (int t = 0; t < kGemvMaxRows; ++t)
    acc[t] = 0.0f;
  constexpr int kStep = 32 * VEC;
  int k = lane * VEC;
  // kUnroll independent 16-byte loads of W in flight per lane, kept raw
  // (4 registers each) until used; the first batch is issued before
  // waiting for the predecessor kernel (pdlWait).
  constexpr int kUnroll = LOOM_GEMV_UNROLL;
  uint4 raw[kUnroll];
  bool full = k + (kUnroll - 1) * kStep < K;
  if (full) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      raw[u] = __ldg(reinterpret_cast<const uint4 *>(w + k + u * kStep));
  }
  pdlWait();
  for (; full; k += kUnroll * kStep) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float wv[VEC];
      unpackVec(raw[u], wv, static_cast<const W *>(nullptr));
#pragma unroll
      for (int t = 0; t < kGemvMaxRows; ++t) {
        if (t < T) {
          const float *xr = x + t * ldx + k + u * kStep;
#pragma unroll
          for (int i = 0; i < VEC; i += 4) {
            const float4 f = __ldg(reinterpret_cast<const float4 *>(xr + i));
            acc[t] = fmaf(wv[i], f.x, acc[t]);
            acc[t] = fmaf(wv[i + 1], f.y, acc[t]);
            acc[t] = fmaf(wv[i + 2], f.z, acc[t]);
            acc[t] = fmaf(wv[i + 3], f.w, acc[t]);
          }
        }
      }
    }
    full = k + kUnroll * kStep + (kUnroll - 1) * kStep < K;
    if (full) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        raw[u] = __ldg(reinterpret_cast<const uint4 *>(w + k + kUnroll * kStep +
                                                       u * kStep));
    }
  }
  for (; k < K; k += kStep) {
    float wv[VEC];
    loadVec(w + k, wv);
#pragma unroll
    for (int t = 0; t < kGemvMaxRows; ++t) {
      if (t < T) {
        const float *xr = x + t * ldx + k;
#pragma unroll
        for (int i = 0; i < VEC; i += 4) {
          const float4 f = __ldg(reinterpret_cast<const float4 *>(xr + i));
          acc[t] = fmaf(wv[i], f.x, acc[t]);
          acc[t] = fmaf(wv[i + 1], f.y, acc[t]);
          acc[t] = fmaf(wv[i + 2], f.z, acc[t]);
          acc[t] = fmaf(wv[i + 3], f.w, acc[t]);
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kGemvMaxRows; ++t) {
    if (t < T) {
      const float v = warpSum(acc[t]);
      if (lane == 0) {
        float *o = y + t * ldy + n;
        *o = accumulate ? *o + v : v;
      }
    }
  }
}

// Two GEMVs over the same rows and the SiLU gate of a SwiGLU FFN in one
// pass: a = x W1^T, b = x W3^T, y = silu(a) * b (all three written, so the
// fused form has the three dispatches' effects). One warp per column.
template <typename W, int VEC>
__global__ void gateUpKernel(const float *__restrict__ x, int64_t ldx,
                             const W *__restrict__ W1, const W *__restrict__ W3,
                             float *a, int64_t lda, float *b, int64_t ldb,
                             float *y, int64_t ldy, int T, int K, int N) {
  pdlLaunchDependents();
  const int n = int((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) {
    pdlWait();
    return;
  }
  const W *w1 = W1 + int64_t(n) * K;
  const W *w3 = W3 + int64_t(n) * K;
  float acc1[kGemvMaxRows], acc3[kGemvMaxRows];
#pragma unroll
  for (int t = 0; t < kGemvMaxRows; ++t)
    acc1[t] = acc3[t] = 0.0f;
  constexpr int kStep = 32 * VEC;
  // Up to kUnroll 16-byte loads of each matrix in flight per lane.
  constexpr int kUnroll = LOOM_GEMV_UNROLL / 2;
  bool waited = false;
  for (int k0 = lane * VEC; k0 < K; k0 += kUnroll * kStep) {
    uint4 r1[kUnroll], r3[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = k0 + u * kStep;
      if (k < K) {
        r1[u] = __ldg(reinterpret_cast<const uint4 *>(w1 + k));
        r3[u] = __ldg(reinterpret_cast<const uint4 *>(w3 + k));
      }
    }
    if (!waited) { // the first weights are in flight: now the inputs
      pdlWait();
      waited = true;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = k0 + u * kStep;
      if (k >= K)
        break;
      float v1[VEC], v3[VEC];
      unpackVec(r1[u], v1, static_cast<const W *>(nullptr));
      unpackVec(r3[u], v3, static_cast<const W *>(nullptr));
#pragma unroll
      for (int t = 0; t < kGemvMaxRows; ++t) {
        if (t < T) {
          const float *xr = x + t * ldx + k;
#pragma unroll
          for (int i = 0; i < VEC; i += 4) {
            const float4 f = __ldg(reinterpret_cast<const float4 *>(xr + i));
            acc1[t] = fmaf(v1[i], f.x, acc1[t]);
            acc1[t] = fmaf(v1[i + 1], f.y, acc1[t]);
            acc1[t] = fmaf(v1[i + 2], f.z, acc1[t]);
            acc1[t] = fmaf(v1[i + 3], f.w, acc1[t]);
            acc3[t] = fmaf(v3[i], f.x, acc3[t]);
            acc3[t] = fmaf(v3[i + 1], f.y, acc3[t]);
            acc3[t] = fmaf(v3[i + 2], f.z, acc3[t]);
            acc3[t] = fmaf(v3[i + 3], f.w, acc3[t]);
          }
        }
      }
    }
  }
  if (!waited)
    pdlWait();
#pragma unroll
  for (int t = 0; t < kGemvMaxRows; ++t) {
    if (t < T) {
      const float g = warpSum(acc1[t]);
      const float u = warpSum(acc3[t]);
      if (lane == 0) {
        a[t * lda + n] = g;
        b[t * ldb + n] = u;
        y[t * ldy + n] = g / (1.0f + expf(-g)) * u;
      }
    }
  }
}

// The same for any K and alignment: scalar loads.
template <typename W>
__global__ void gemvScalarKernel(const float *__restrict__ x, int64_t ldx,
                                 const W *__restrict__ Wm,
                                 float *__restrict__ y, int64_t ldy, int T,
                                 int K, int N, int accumulate) {
  pdlLaunchDependents();
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
  pdlLaunchDependents();
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
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    y[t * ldy + c] = x[t * ldx + c] + bias[c];
}

// y[t, :] = x[t, :] + table[t, :]                  grid T
template <typename W>
__global__ void addPositionsKernel(const float *x, int64_t ldx, const W *table,
                                   float *y, int64_t ldy, int64_t D) {
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x)
    y[t * ldy + c] = x[t * ldx + c] + toFloat(table[t * D + c]);
}

__global__ void siluMulKernel(const float *a, const float *b, float *y,
                              int64_t n) {
  pdlLaunchDependents();
  pdlWait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float v = a[i];
    y[i] = v / (1.0f + expf(-v)) * b[i];
  }
}

__global__ void addKernel(const float *a, const float *b, float *y, int64_t n) {
  pdlLaunchDependents();
  pdlWait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = a[i] + b[i];
}

// 0.5 x (1 + tanh(u)) evaluated as x / (1 + exp(-2u)), as the CPU kernel.
__global__ void geluTanhKernel(const float *x, float *y, int64_t n) {
  pdlLaunchDependents();
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
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < na + nb; c += blockDim.x)
    y[t * (na + nb) + c] = c < na ? a[t * na + c] : b[t * nb + (c - na)];
}

// The next token from one row of V logits (one block of 1024 threads):
// argmax (lowest id on ties) at temperature 0, otherwise the first id whose
// cumulative softmax(logits / temperature) exceeds coin * total. Writes -1
// for a NaN logit. Result in s->next and *out.
__global__ void sampleKernel(const float *logits, int V, StepParams *s,
                             int32_t *out) {
  pdlLaunchDependents();
  pdlWait();
  __shared__ float red[32];
  __shared__ int redi[32];
  __shared__ float part[1024];
  __shared__ int result;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float temp = s->temperature;
  const float inv = temp > 0.0f ? 1.0f / temp : 1.0f;
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
    if (tid == 0) {
      s->next = -1;
      *out = -1;
    }
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
    if (tid == 0) {
      s->next = argmax;
      *out = argmax;
    }
    return;
  }
  // Each thread owns a contiguous range; range sums, a prefix over them,
  // then the owning thread scans its range.
  const int per = (V + blockDim.x - 1) / blockDim.x;
  const int lo = min(V, tid * per), hi = min(V, lo + per);
  auto weight = [&](int i) {
    const float v = logits[i] * inv;
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
  const float target = s->coin * red[1];
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
  if (tid == 0) {
    // Rounding can leave the target at or above the total: the argmax is
    // then as good a choice as the last positive id.
    const int r = result != 0x7fffffff ? result : argmax;
    s->next = r;
    *out = r;
  }
}

} // namespace loom::rt::cuda

#endif // LOOM_RUNTIME_CUDA_KERNELS_CUH
