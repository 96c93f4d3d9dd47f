// The loaded form of an artifact: the file mapped read-only, and the
// flatbuffer's content copied into plain structs after verification, so the
// executor never reads the (untrusted) flatbuffer itself.
#ifndef LOOM_RUNTIME_ARTIFACT_H
#define LOOM_RUNTIME_ARTIFACT_H

#include "loom/ggml_blocks.h"
#include "loom/loom_artifact_generated.h"
#include "loom/runtime.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace loom::rt {

using Kernel = loom::artifact::Kernel;
const char *kernelName(Kernel kernel);

// A read-only private mapping of a whole file, unmapped on destruction.
class MappedFile {
public:
  // Throws loom::Error "cannot open artifact 'PATH': REASON".
  explicit MappedFile(const std::string &path);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;
  const uint8_t *data() const { return data_; }
  size_t size() const { return size_; }

private:
  const uint8_t *data_ = nullptr;
  size_t size_ = 0;
};

struct BufferDesc {
  uint64_t offset;   // bytes into the arena
  int64_t row_elems; // floats per row, also the row stride
};

// How a tensor is stored in the file (the schema's DType). The block types
// (Q8_0, Q4_0 and the K types Q2_K..Q6_K, loom/ggml_blocks.h): rank 2, rows
// of whole blocks.
enum class WeightType {
  F32,
  BF16,
  Q8_0,
  Q4_0,
  F16,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K
};

// The ggml block format of a block type; false for F32, BF16, F16.
bool blockTypeOf(WeightType type, ggml::BlockType &out);

// "F32", "BF16", "Q8_0", ...
const char *weightTypeName(WeightType type);

struct TensorDesc {
  std::string name;
  std::vector<int64_t> shape;
  WeightType dtype = WeightType::F32;
  // The stored bytes inside the mapped file (64-byte aligned): `bytes` of
  // f32 or bf16 values or Q8_0 blocks, what a device backend uploads.
  const void *raw = nullptr;
  uint64_t bytes = 0;
  // The values as f32, for the kernels that read only f32: `raw` itself for
  // F32 tensors; for a BF16 or Q8_0 one that some dispatch reads as f32
  // (!readsWeightAsStored) a decoded copy made by ModelData::ensureF32()
  // (null before, and for every other such tensor).
  mutable const float *data = nullptr;
};

struct KvCacheDesc {
  uint32_t layer;
  int64_t max_seq;
  int64_t kv_heads;
  int64_t head_dim;
  int32_t loop_layer; // -1: an ordinary cache; j >= 0: core layer j of the loop
};

// One verified dispatch. Buffer and KV-cache indices are in range and the
// shapes agree with the kernel's contract; weights are resolved to pointers.
struct DispatchDesc {
  Kernel kernel;
  std::vector<uint32_t> inputs;
  std::vector<uint32_t> outputs;
  std::vector<uint32_t> scratch;
  std::vector<uint32_t> weight_ids; // indices into ModelData::tensors
  std::vector<int64_t> iparams;
  std::vector<float> fparams;
  std::string name; // the op it came from; the kernel name when absent
};

// The sliding window of an Attention or FusedQkvAttention dispatch: each row
// attends to the last this many positions, its own included; 0: every
// position (no window).
int64_t attentionWindow(const DispatchDesc &d);

// The RoPE of a Rope or FusedQkvAttention dispatch (fparams: theta, then
// none or head_dim / 2 freq_factors, then, after the factors, the scale of
// the rotation if any): its freq_factors (null when none) and its scale (1
// when none).
const float *ropeFreqFactors(const DispatchDesc &d);
float ropeScale(const DispatchDesc &d);

// Whether a kernel reads its weight `index` (into DispatchDesc::weight_ids)
// as the artifact stores it, f32 or bf16: the matrices and tables (MatMul's
// and Logits' matrices, FusedQkvAttention's wqkv and wo, Embed's and
// AddPositions' tables). The others (norm weights, biases) are read as f32.
// Both devices follow it.
bool readsWeightAsStored(Kernel kernel, size_t index);

// Writes the tensor's values as f32 (widened bf16, decoded Q8_0 or Q4_0:
// exact) to
// dst[0 .. elements), in parallel.
void decodeToF32(const TensorDesc &t, float *dst);

// Iterations a looped block may run per token step. The "full" KV policy
// keeps one cache per (iteration, core layer), so this bounds the caches a
// session can map.
constexpr int kMaxLoopIterations = 1024;

// A verified looped block: dispatch ranges in order and inside the program,
// buffers of the model's dim, one loop cache per core layer.
struct LoopDesc {
  uint32_t body_begin, body_end, tail_end;
  uint32_t state_buffer, next_state_buffer, latent_buffer;
  LoopInfo info;
  float state_std, state_scale;
};

struct ProgramDesc {
  std::string name;
  std::vector<DispatchDesc> dispatches;
  uint32_t logits_buffer; // the program's output buffer
  std::optional<LoopDesc> loop;
  // -1: the program reads token ids (Embed); otherwise the buffer the
  // caller's input rows are copied into before the first dispatch.
  int32_t input_buffer = -1;
  // Rows one run may have: max_tokens, or fewer when an AddPositions table
  // has fewer rows.
  int64_t max_rows = 0;
  // Rows one run needs at least: 1, or more when a TakeRow reads a later
  // row.
  int64_t min_rows = 1;
  // The first Embed dispatch (where placeholder rows replace token rows),
  // or -1 when the program has none.
  int64_t embed_dispatch = -1;
};

// The REFRAG chunk encoder: the RefragConfig table and the programs
// "encode_chunk", "project_chunk" and "score_chunk" (verified).
struct RefragDesc {
  RefragInfo info;
  size_t encode_program = 0;
  size_t project_program = 0;
  size_t score_program = 0;
  // The forward dispatch whose packed q|k|v placeholder rows bring along
  // (loom-fuse-chunk-projector), or -1; its q|k|v floats.
  int64_t placeholder_qkv_dispatch = -1;
  int64_t placeholder_qkv_elems = 0;
};

struct ModelData {
  std::unique_ptr<MappedFile> file;
  ModelConfigInfo config;
  std::unique_ptr<Tokenizer> tokenizer;
  ChatTemplateInfo chat_template; // source empty: none
  std::string generator;
  std::string target;
  std::vector<TensorDesc> tensors;
  // Gives every BF16 tensor that a dispatch reads as f32
  // (!readsWeightAsStored) its f32 copy (TensorDesc::data), once per model,
  // when a session first needs it. loomc stores only matrices and tables as
  // bf16, so for its artifacts there is nothing to copy. Thread-safe.
  // Throws OutOfMemoryError when the copies cannot be allocated.
  void ensureF32() const;
  mutable std::once_flag widen_once;
  mutable std::vector<std::unique_ptr<float[]>> widened; // owns the copies
  std::vector<BufferDesc> buffers;
  std::vector<KvCacheDesc> kv_caches;
  std::vector<ProgramDesc> programs;
  size_t forward_program = 0; // index of "forward" in programs
  std::optional<RefragDesc> refrag;
  uint64_t arena_bytes = 0;
  int64_t max_tokens = 0;
  int64_t context_length = 0;
  uint64_t kv_bytes = 0;      // the ordinary caches (loop_layer < 0)
  uint64_t loop_kv_bytes = 0; // one loop cache (all have the same shape)
  uint64_t weight_bytes = 0;

  const ProgramDesc &forward() const { return programs[forward_program]; }
};

// Maps `path` and verifies everything the executor relies on. Throws
// loom::Error with a one-line message naming the first problem.
std::unique_ptr<ModelData> loadArtifact(const std::string &path);

} // namespace loom::rt

#endif // LOOM_RUNTIME_ARTIFACT_H
