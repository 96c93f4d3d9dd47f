// The persistent decode kernel's plan (LOOM_CUDA_PERSISTENT, an
// experiment until measured; kernels.cuh, persistentDecodeKernel): which
// dispatches of a program one kernel runs, as which stages. Host code
// only, apart from the stage type, so that CI checks the plans of the
// dispatch forms without a GPU (cuda_config_test).
#ifndef LOOM_RUNTIME_CUDA_PERSISTENT_H
#define LOOM_RUNTIME_CUDA_PERSISTENT_H

#include "../src/artifact.h"
#include "kernels.cuh"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace loom::rt::cuda {

// A weight on the device.
struct DeviceTensor {
  const void *native = nullptr; // as stored (f32 or bf16)
  const float *f32 = nullptr;   // f32 values (for kernels that need them)
  WeightType dtype = WeightType::F32;
};

// An ordinary KV cache on the device: rows of kvd floats a position.
struct DeviceCache {
  float *k = nullptr;
  float *v = nullptr;
  int64_t kvd = 0;
};

// Whether buffers a and b of the arena share bytes over max_tokens rows.
inline bool buffersOverlap(const ModelData &m, uint32_t a, uint32_t b) {
  const uint64_t n = uint64_t(m.max_tokens) * sizeof(float);
  const BufferDesc &x = m.buffers[a], &y = m.buffers[b];
  return x.offset < y.offset + n * uint64_t(y.row_elems) &&
         y.offset < x.offset + n * uint64_t(x.row_elems);
}

// What the plan reads of an executor.
struct PersistentInputs {
  const ModelData &model;
  char *arena; // the activation buffers' base
  const std::vector<DeviceTensor> &tensors;
  const std::vector<DeviceCache> &caches;
  const std::map<const DispatchDesc *, const float *> &rope_factors;
  const float *zeros; // persistentZeros(prog) zeros (null: none needed)
  bool rope_fold;     // LOOM_CUDA_ROPE_FOLD
  std::function<int(int64_t)> splits; // the attention's, for a head count
  float *buffer(uint32_t b) const {
    return reinterpret_cast<float *>(arena + model.buffers[b].offset);
  }
  int64_t ld(uint32_t b) const { return model.buffers[b].row_elems; }
  bool overlap(uint32_t a, uint32_t b) const {
    return buffersOverlap(model, a, b);
  }
  const float *ropeFactors(const DispatchDesc &d) const {
    auto it = rope_factors.find(&d);
    return it == rope_factors.end() ? nullptr : it->second;
  }
};

struct PersistentPlan {
  size_t begin = 0, end = 0; // the dispatches [begin, end) it runs
  std::vector<PersistentStage> stages;
  int64_t head_dim = 0;               // every attention's
  WeightType dtype = WeightType::F32; // every GEMV's (F32 or BF16)
};

// The zeros a plan's plain RmsNorms add (their widest row), 0 where the
// program has none.
inline int64_t persistentZeros(const ModelData &m, const ProgramDesc &prog) {
  int64_t d = 0;
  for (const DispatchDesc &x : prog.dispatches)
    if (x.kernel == Kernel::RmsNorm)
      d = std::max(d, m.buffers[x.inputs[0]].row_elems);
  return d;
}

// The one-row layers of `prog` as stages: from its first RmsNorm after the
// embedding, every dispatch in a form the kernel runs (GEMVs of one weight
// type, f32 or bf16, in whole 16-byte loads; the fused q|k|v attention
// with its RoPE folded, no biases; RmsNorm, Add + RmsNorm; gate/up +
// SiluMul), with at least one attention. Returns why not, or "" with
// `plan` filled.
inline std::string planPersistentStages(const ProgramDesc &prog,
                                        const PersistentInputs &in,
                                        PersistentPlan &plan) {
  const auto &ds = prog.dispatches;
  const size_t n = ds.size();
  if (prog.loop)
    return "a looped model"; // its blocks run as they do without it
  if (!in.zeros)
    return "no RmsNorm";
  std::vector<PersistentStage> stages;
  int64_t head_dim = 0;
  // Every GEMV's weights of the first one's type (f32 or bf16), rows of
  // whole 16-byte loads.
  std::optional<WeightType> dtype;
  const auto weights = [&](uint32_t w, int64_t K) {
    const DeviceTensor &t = in.tensors[w];
    if (t.dtype != WeightType::F32 && t.dtype != WeightType::BF16)
      return false;
    if (!dtype)
      dtype = t.dtype;
    return t.native && t.dtype == *dtype &&
           K % (t.dtype == WeightType::BF16 ? 8 : 4) == 0 &&
           reinterpret_cast<uintptr_t>(t.native) % 16 == 0;
  };
  const auto aligned = [&](uint32_t b) {
    return reinterpret_cast<uintptr_t>(in.buffer(b)) % 16 == 0;
  };
  // Element-wise stages: each thread reads and writes only its own
  // elements, so two buffers may be one, but not overlap partly.
  const auto sameOrApart = [&](uint32_t a, uint32_t b) {
    return a == b || !in.overlap(a, b);
  };
  const auto matmul = [](const DispatchDesc &x) {
    return x.kernel == Kernel::MatMul && x.weight_ids.size() == 1;
  };
  const auto accumulates = [](const DispatchDesc &x) {
    return !x.iparams.empty() && x.iparams[0] != 0;
  };
  // Each matcher appends the stages of the dispatches from j and returns
  // how many it covered, or 0 (nothing appended).
  const auto norm = [&](size_t j) -> size_t {
    PersistentStage st{};
    st.op = PersistentOp::Norm;
    size_t used = 0;
    if (j + 1 < n && ds[j].kernel == Kernel::Add &&
        ds[j + 1].kernel == Kernel::RmsNorm) {
      const DispatchDesc &d = ds[j], &e = ds[j + 1];
      const int64_t D = in.ld(d.outputs[0]);
      if (e.inputs[0] != d.outputs[0] || in.ld(d.inputs[0]) != D ||
          in.ld(d.inputs[1]) != D || in.ld(e.outputs[0]) != D ||
          e.weight_ids.size() != 1 || e.fparams.empty())
        return 0;
      const uint32_t io[4] = {d.inputs[0], d.inputs[1], d.outputs[0],
                              e.outputs[0]};
      for (int p = 0; p < 4; ++p)
        for (int q = p + 1; q < 4; ++q)
          if (!sameOrApart(io[p], io[q]))
            return 0;
      st.N = int(D);
      st.eps = e.fparams[0];
      st.x = in.buffer(d.inputs[0]);
      st.b = in.buffer(d.inputs[1]);
      st.z = in.buffer(d.outputs[0]);
      st.w1 = in.tensors[e.weight_ids[0]].f32;
      st.y = in.buffer(e.outputs[0]);
      used = 2;
    } else if (j < n && ds[j].kernel == Kernel::RmsNorm) {
      const DispatchDesc &d = ds[j];
      const int64_t D = in.ld(d.inputs[0]);
      if (in.ld(d.outputs[0]) != D || d.weight_ids.size() != 1 ||
          d.fparams.empty() || !sameOrApart(d.inputs[0], d.outputs[0]))
        return 0;
      st.N = int(D);
      st.eps = d.fparams[0];
      st.x = in.buffer(d.inputs[0]);
      st.b = in.zeros; // y = norm(a + 0): no sum kept
      st.w1 = in.tensors[d.weight_ids[0]].f32;
      st.y = in.buffer(d.outputs[0]);
      used = 1;
    } else {
      return 0;
    }
    if (!st.w1)
      return 0;
    stages.push_back(st);
    return used;
  };
  const auto attention = [&](size_t j) -> size_t {
    if (j >= n || ds[j].kernel != Kernel::FusedQkvAttention)
      return 0;
    const DispatchDesc &d = ds[j];
    const auto &ip = d.iparams;
    const auto &w = d.weight_ids;
    if (w.size() != 2 || ip.size() < 4 || d.fparams.empty() ||
        d.scratch.size() < 2 || !in.rope_fold)
      return 0;
    const int64_t nh = ip[1], nkv = ip[2], hd = ip[3];
    if (in.model.kv_caches[size_t(ip[0])].loop_layer >= 0 || hd % 2 != 0 ||
        nkv < 1 || nh % nkv != 0 || (head_dim != 0 && hd != head_dim))
      return 0;
    const int64_t qd = nh * hd, kd = nkv * hd, K = in.ld(d.inputs[0]);
    const uint32_t qkv = d.scratch[0], attn = d.scratch[1];
    if (!weights(w[0], K) || !weights(w[1], qd) || !aligned(d.inputs[0]) ||
        !aligned(attn) || in.ld(qkv) < qd + 2 * kd ||
        in.overlap(d.inputs[0], qkv) || in.overlap(qkv, attn) ||
        in.overlap(attn, d.outputs[0]))
      return 0;
    head_dim = hd;
    const DeviceCache &c = in.caches[size_t(ip[0])];
    PersistentStage g{};
    g.op = PersistentOp::Gemv;
    g.K = int(K);
    g.N = int(qd + 2 * kd);
    g.x = in.buffer(d.inputs[0]);
    g.w1 = in.tensors[w[0]].native;
    g.y = in.buffer(qkv);
    stages.push_back(g);
    PersistentStage a{};
    a.op = PersistentOp::Attention;
    a.x = in.buffer(qkv);
    a.y = in.buffer(attn);
    a.kc = c.k;
    a.vc = c.v;
    a.ldk = c.kvd;
    a.group = int(nh / nkv);
    a.head_dim = int(hd);
    a.heads = int(nh);
    a.splits = in.splits(nh);
    a.window = int(attentionWindow(d));
    a.fold.k = in.buffer(qkv) + qd;
    a.fold.v = in.buffer(qkv) + qd + kd;
    a.fold.theta = d.fparams[0];
    a.fold.factors = in.ropeFactors(d);
    a.fold.scale = ropeScale(d);
    stages.push_back(a);
    PersistentStage o{};
    o.op = PersistentOp::Gemv;
    o.K = int(qd);
    o.N = int(in.ld(d.outputs[0]));
    o.x = in.buffer(attn);
    o.w1 = in.tensors[w[1]].native;
    o.y = in.buffer(d.outputs[0]);
    o.accumulate = ip.size() > 4 && ip[4] != 0;
    stages.push_back(o);
    return 1;
  };
  const auto gate_up = [&](size_t j) -> size_t {
    if (j + 2 >= n || !matmul(ds[j]) || accumulates(ds[j]) ||
        !matmul(ds[j + 1]) || accumulates(ds[j + 1]) ||
        ds[j + 2].kernel != Kernel::SiluMul)
      return 0;
    const DispatchDesc &d = ds[j], &e = ds[j + 1], &f = ds[j + 2];
    const uint32_t x = d.inputs[0], a = d.outputs[0], b = e.outputs[0],
                   y = f.outputs[0];
    const int64_t K = in.ld(x), N = in.ld(a);
    if (e.inputs[0] != x || f.inputs[0] != a || f.inputs[1] != b ||
        in.ld(b) != N || in.ld(y) != N || !weights(d.weight_ids[0], K) ||
        !weights(e.weight_ids[0], K) || !aligned(x) || in.overlap(x, a) ||
        in.overlap(x, b) || in.overlap(x, y) || in.overlap(a, b))
      return 0;
    PersistentStage st{};
    st.op = PersistentOp::GateUp;
    st.K = int(K);
    st.N = int(N);
    st.x = in.buffer(x);
    st.w1 = in.tensors[d.weight_ids[0]].native;
    st.w3 = in.tensors[e.weight_ids[0]].native;
    st.ya = in.buffer(a);
    st.yb = in.buffer(b);
    st.y = in.buffer(y);
    stages.push_back(st);
    return 3;
  };
  const auto down = [&](size_t j) -> size_t {
    if (j >= n || !matmul(ds[j]))
      return 0;
    const DispatchDesc &d = ds[j];
    const int64_t K = in.ld(d.inputs[0]);
    if (!weights(d.weight_ids[0], K) || !aligned(d.inputs[0]) ||
        in.overlap(d.inputs[0], d.outputs[0]))
      return 0;
    PersistentStage st{};
    st.op = PersistentOp::Gemv;
    st.K = int(K);
    st.N = int(in.ld(d.outputs[0]));
    st.x = in.buffer(d.inputs[0]);
    st.w1 = in.tensors[d.weight_ids[0]].native;
    st.y = in.buffer(d.outputs[0]);
    st.accumulate = accumulates(d);
    stages.push_back(st);
    return 1;
  };
  // From the first RmsNorm after the embedding, every dispatch a matcher
  // takes (each stage does what its dispatches do, so any order of them
  // is the program's): a model's layers and its final norm, up to the
  // classifier.
  // (An Add feeding that RmsNorm starts it: the launches would fuse the
  // two, and the kernel must start where a launch would.)
  size_t begin = size_t(std::max<int64_t>(prog.embed_dispatch + 1, 0));
  while (begin < n && ds[begin].kernel != Kernel::RmsNorm &&
         !(ds[begin].kernel == Kernel::Add && begin + 1 < n &&
           ds[begin + 1].kernel == Kernel::RmsNorm))
    ++begin;
  size_t end = begin;
  bool attends = false;
  for (;;) {
    size_t k = norm(end);
    if (!k && (k = attention(end)) != 0)
      attends = true;
    if (!k)
      k = gate_up(end);
    if (!k)
      k = down(end);
    if (!k)
      break;
    end += k;
  }
  if (!attends)
    return "its layers do not take the kernel's form (docs/cuda.md)";
  if (head_dim > 128)
    return "head_dim " + std::to_string(head_dim) + " (at most 128)";
  plan.begin = begin;
  plan.end = end;
  plan.stages = std::move(stages);
  plan.head_dim = head_dim;
  plan.dtype = *dtype;
  return "";
}

} // namespace loom::rt::cuda

#endif // LOOM_RUNTIME_CUDA_PERSISTENT_H
