//===- ArtifactWriter.cpp - loom.program to a .loom artifact ----------------===//
//
// File layout written here (see docs/artifact-format.md):
//   [ArtifactFileHeader, 64 B][weights section, 64-aligned tensors][flatbuffer]
// Weights come first so they stream to disk once, checksummed on the way;
// the flatbuffer, which records the checksums, follows; the header is
// rewritten last. The whole file is written under a temporary name and
// renamed into place, so an interrupted compile leaves no half artifact.
// With --weight-type=bf16 the matrices and tables are rounded to bf16 on
// the way; their checksums and sizes are those of the stored bf16 bytes.
//
//===----------------------------------------------------------------------===//
#include "passes/Serialize/ArtifactWriter.h"
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Serialize/GgmlQuantize.h"

#include "loom/artifact_format.h"
#include "loom/ggml_blocks.h"
#include "loom/loom_artifact_generated.h"
#include "loom/version.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

using namespace mlir;
using namespace loom;
namespace fb = loom::artifact;

namespace {
std::string locationString(Location loc) {
  if (auto name = dyn_cast<NameLoc>(loc)) {
    std::string inner = locationString(name.getChildLoc());
    return name.getName().str() + (inner.empty() ? "" : " (" + inner + ")");
  }
  if (auto file = dyn_cast<FileLineColLoc>(loc))
    return (file.getFilename().str() + ":" + std::to_string(file.getLine()) +
            ":" + std::to_string(file.getColumn()));
  return "";
}

int64_t configInt(DictionaryAttr model, StringRef key, int64_t dflt = 0) {
  auto a = model ? model.getAs<IntegerAttr>(key) : IntegerAttr();
  return a ? a.getInt() : dflt;
}

float configFloat(DictionaryAttr model, StringRef key, float dflt) {
  auto a = model ? model.getAs<FloatAttr>(key) : FloatAttr();
  return a ? a.getValue().convertToFloat() : dflt;
}

/// A tensor of the artifact: a weight symbol and the source slices whose
/// concatenation forms its bytes.
struct PackedTensor {
  WeightOp weight;
  SmallVector<const WeightSource *> parts;
  SmallVector<uint64_t> partRows;    // rows of each part (its dimension 0)
  WeightType type = WeightType::F32; // how it is stored
  uint64_t bytes = 0;                // stored bytes
  uint64_t offset = 0, checksum = 0;
};

/// The block encoding an artifact of `type` stores (Q8_0, Q4_0, the K
/// formats); nullopt for F32, BF16, F16.
std::optional<SourceEncoding> keptEncoding(WeightType type) {
  switch (type) {
  case WeightType::Q8_0:
    return SourceEncoding::Q8_0;
  case WeightType::Q4_0:
    return SourceEncoding::Q4_0;
  case WeightType::Q2_K:
    return SourceEncoding::Q2_K;
  case WeightType::Q3_K:
    return SourceEncoding::Q3_K;
  case WeightType::Q4_K:
    return SourceEncoding::Q4_K;
  case WeightType::Q5_K:
    return SourceEncoding::Q5_K;
  case WeightType::Q6_K:
    return SourceEncoding::Q6_K;
  default:
    return std::nullopt;
  }
}

/// The K-format WeightType of a K-format source encoding.
std::optional<WeightType> kFormatOf(SourceEncoding e) {
  for (WeightType t : {WeightType::Q2_K, WeightType::Q3_K, WeightType::Q4_K,
                       WeightType::Q5_K, WeightType::Q6_K})
    if (keptEncoding(t) == e)
      return t;
  return std::nullopt;
}

fb::DType schemaDType(WeightType type) {
  switch (type) {
  case WeightType::BF16:
    return fb::DType::BF16;
  case WeightType::F16:
    return fb::DType::F16;
  case WeightType::Q8_0:
    return fb::DType::Q8_0;
  case WeightType::Q4_0:
    return fb::DType::Q4_0;
  case WeightType::Q2_K:
    return fb::DType::Q2_K;
  case WeightType::Q3_K:
    return fb::DType::Q3_K;
  case WeightType::Q4_K:
    return fb::DType::Q4_K;
  case WeightType::Q5_K:
    return fb::DType::Q5_K;
  case WeightType::Q6_K:
    return fb::DType::Q6_K;
  default:
    return fb::DType::F32;
  }
}

/// Decodes `source`'s bytes at `from` into decodedBytes(source) f32 bytes.
void decode(const WeightSource &source, const char *from, char *to) {
  if (auto block = blockTypeOf(source.encoding)) {
    const ggml::BlockFormat f = ggml::blockFormat(*block);
    float values[ggml::kSuperBlock];
    for (uint64_t b = 0; b < source.bytes / f.bytes; ++b) {
      ggml::decodeBlock(*block,
                        reinterpret_cast<const uint8_t *>(from) + b * f.bytes,
                        values);
      std::memcpy(to + 4 * b * f.values, values, 4 * f.values);
    }
    return;
  }
  auto half = [&](const char *at) {
    uint16_t h;
    std::memcpy(&h, at, sizeof h);
    return h;
  };
  switch (source.encoding) {
  case SourceEncoding::BF16:
    for (uint64_t e = 0; e < source.bytes / 2; ++e) {
      const uint32_t widened = uint32_t(half(from + 2 * e)) << 16;
      std::memcpy(to + 4 * e, &widened, sizeof widened);
    }
    return;
  case SourceEncoding::F16:
    for (uint64_t e = 0; e < source.bytes / 2; ++e) {
      const float v = halfToFloat(half(from + 2 * e));
      std::memcpy(to + 4 * e, &v, sizeof v);
    }
    return;
  default:
    std::memcpy(to, from, source.bytes);
    return;
  }
}

/// Reorders `rows` f32 rows at `data` (`size` bytes) from the rotate-half
/// order of heads of `hd` rows to the interleaved one: destination row
/// 2i + j of a head is source row j*hd/2 + i (WeightSource).
void restoreInterleavedRows(char *data, size_t size, int64_t hd,
                            uint64_t rows) {
  const size_t rowBytes = size / rows;
  std::vector<char> head(rowBytes * hd);
  for (uint64_t h0 = 0; h0 < rows; h0 += hd) {
    char *at = data + h0 * rowBytes;
    std::memcpy(head.data(), at, head.size());
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t j = 0; j < 2; ++j)
        std::memcpy(at + (2 * i + j) * rowBytes,
                    head.data() + (j * hd / 2 + i) * rowBytes, rowBytes);
  }
}
} // namespace

uint64_t loom::decodedBytes(const WeightSource &source) {
  if (auto block = blockTypeOf(source.encoding)) {
    const ggml::BlockFormat f = ggml::blockFormat(*block);
    return source.bytes % f.bytes ? 0 : source.bytes / f.bytes * f.values * 4;
  }
  if (source.encoding == SourceEncoding::F32)
    return source.bytes % 4 ? 0 : source.bytes;
  return source.bytes % 2 ? 0 : source.bytes * 2; // BF16, F16
}

WeightType loom::requestedWeightType(ModuleOp module, StringRef name,
                                     WeightType requested) {
  if (requested != WeightType::Q4_K_M && requested != WeightType::Q5_K_M)
    return requested;
  const WeightType base =
      requested == WeightType::Q4_K_M ? WeightType::Q4_K : WeightType::Q5_K;
  auto op =
      dyn_cast_or_null<WeightOp>(SymbolTable::lookupSymbolIn(module, name));
  if (op && op.getPacked()) {
    // The parts' stored types (a part's request may fall back, e.g. to
    // Q8_0 for rows that are not whole blocks of 256): one type asks it.
    std::optional<WeightType> common;
    const ArrayAttr parts = *op.getPacked(); // (not a temporary's element)
    for (Attribute ref : parts) {
      StringRef part = cast<FlatSymbolRefAttr>(ref).getValue();
      auto partOp =
          dyn_cast_or_null<WeightOp>(SymbolTable::lookupSymbolIn(module, part));
      if (!partOp)
        return WeightType::F32;
      const WeightType t =
          storedWeightType(partOp.getTensorType(),
                           requestedWeightType(module, part, requested), {});
      if (common && *common != t)
        return WeightType::F32;
      common = t;
    }
    return common.value_or(base);
  }
  const bool hasOutput = SymbolTable::lookupSymbolIn(module, "output");
  if (name == "output" || (name == "tok_embeddings" && !hasOutput))
    return WeightType::Q6_K;
  // layers.I.wv / layers.I.w2 in the layers llama.cpp's use_more_bits picks.
  int64_t layer;
  StringRef rest = name;
  if (!rest.consume_front("layers.") || rest.consumeInteger(10, layer) ||
      (rest != ".wv" && rest != ".w2"))
    return base;
  auto config = module->getAttrOfType<DictionaryAttr>("loom.model");
  const int64_t n = configInt(config, "n_layers", 0);
  const bool moreBits =
      layer < n / 8 || layer >= 7 * n / 8 || (layer - n / 8) % 3 == 2;
  if (moreBits)
    return WeightType::Q6_K;
  // llama.cpp's 70B rule: a Llama of 80 layers with grouped KV heads (its
  // "70B" type) gets Q5_K rather than Q4_K for attn_v.
  if (rest == ".wv" && base == WeightType::Q4_K && n == 80 &&
      configInt(config, "n_heads", 0) != configInt(config, "n_kv_heads", 0))
    return WeightType::Q5_K;
  return base;
}

WeightType loom::storedWeightType(ShapedType type, WeightType requested,
                                  ArrayRef<const WeightSource *> parts) {
  const bool blocks = type.getRank() == 2 && type.getDimSize(1) % kQ8Block == 0;
  const bool superBlocks =
      type.getRank() == 2 && type.getDimSize(1) % ggml::kSuperBlock == 0;
  if (requested == WeightType::Q4_K_M) // a mix asked directly: its base
    requested = WeightType::Q4_K;
  if (requested == WeightType::Q5_K_M)
    requested = WeightType::Q5_K;
  if (requested == WeightType::Keep) {
    if (parts.empty())
      return WeightType::F32;
    // Rows reordered from the rotate-half order (WeightSource) move whole:
    // their values, or their blocks (which lie along the rows), stay as
    // they are.
    const SourceEncoding e = parts.front()->encoding;
    for (const WeightSource *p : parts)
      if (p->encoding != e)
        return WeightType::F32;
    if (e == SourceEncoding::BF16 && type.getRank() >= 2)
      return WeightType::BF16;
    if (e == SourceEncoding::F16 && type.getRank() >= 2)
      return WeightType::F16;
    if (e == SourceEncoding::Q8_0 && blocks)
      return WeightType::Q8_0;
    if (e == SourceEncoding::Q4_0 && blocks)
      return WeightType::Q4_0;
    if (std::optional<WeightType> k = kFormatOf(e); k && superBlocks)
      return *k;
    return WeightType::F32;
  }
  if (requested == WeightType::Q8_0 || requested == WeightType::Q4_0)
    return blocks ? requested : WeightType::F32;
  if (keptEncoding(requested)) // a K format: rows of 256, else Q8_0, else f32
    return superBlocks ? requested
           : blocks    ? WeightType::Q8_0
                       : WeightType::F32;
  return type.getRank() >= 2 ? requested : WeightType::F32;
}

uint64_t loom::storedWeightBytes(ShapedType type, WeightType stored) {
  const uint64_t elems = type.getNumElements();
  switch (stored) {
  case WeightType::F32:
    return elems * 4;
  case WeightType::BF16:
  case WeightType::F16:
    return elems * 2;
  case WeightType::Q8_0:
    return elems / kQ8Block * kQ8BlockBytes;
  case WeightType::Q4_0:
    return elems / kQ8Block * kQ4BlockBytes;
  case WeightType::Keep:
  case WeightType::Q4_K_M:
  case WeightType::Q5_K_M:
    break;
  default: // the K formats
    return elems / ggml::kSuperBlock *
           ggml::blockFormat(*blockTypeOf(*keptEncoding(stored))).bytes;
  }
  return 0;
}

const char *loom::weightTypeName(WeightType type) {
  switch (type) {
  case WeightType::BF16:
    return "bf16";
  case WeightType::F16:
    return "f16";
  case WeightType::Q8_0:
    return "q8_0";
  case WeightType::Q4_0:
    return "q4_0";
  case WeightType::Q2_K:
    return "q2_k";
  case WeightType::Q3_K:
    return "q3_k";
  case WeightType::Q4_K:
    return "q4_k";
  case WeightType::Q5_K:
    return "q5_k";
  case WeightType::Q6_K:
    return "q6_k";
  case WeightType::Keep:
    return "keep";
  case WeightType::Q4_K_M:
    return "q4_k_m";
  case WeightType::Q5_K_M:
    return "q5_k_m";
  case WeightType::F32:
    break;
  }
  return "f32";
}

uint16_t loom::floatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  // NaN: keep sign and top payload bits, force the quiet bit so truncation
  // cannot turn it into an infinity.
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((bits >> 16) | 0x0040u);
  // Round to nearest, ties to even (an overflow rounds to infinity).
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

LogicalResult loom::writeArtifact(ModuleOp module, const WeightTable &weights,
                                  const TokenizerData *tokenizer,
                                  const std::string &outPath,
                                  const ArtifactOptions &options) {
  auto program = module.lookupSymbol<ProgramOp>("forward");
  if (!program)
    return module.emitError("module has no loom.program @forward: run "
                            "loom-lower-to-dispatch before serialising");
  auto model = module->getAttrOfType<DictionaryAttr>("loom.model");
  if (!model)
    return module.emitError("module has no 'loom.model' config dictionary");
  SymbolTable symbols(module);

  // Tensors in order of first use; a weight used twice (shared classifier)
  // is stored once.
  std::vector<PackedTensor> tensors;
  llvm::StringMap<uint32_t> tensorIndex;
  auto addTensor = [&](DispatchOp d, StringRef name) -> FailureOr<uint32_t> {
    auto it = tensorIndex.find(name);
    if (it != tensorIndex.end())
      return it->second;
    auto weight = symbols.lookup<WeightOp>(name);
    if (!weight)
      return d.emitError() << "weight @" << name << " is not declared";
    PackedTensor t;
    t.weight = weight;
    SmallVector<StringRef> sources;
    if (auto packed = weight.getPacked())
      for (Attribute part : *packed)
        sources.push_back(cast<FlatSymbolRefAttr>(part).getValue());
    else
      sources.push_back(name);
    for (StringRef source : sources) {
      auto found = weights.find(source);
      if (found == weights.end())
        return d.emitError() << "no bytes for weight @" << source
                             << " (the frontend's weight table lacks it)";
      // f32 bytes of the part (a bf16 source is widened when written).
      const WeightSource &src = found->second;
      const uint64_t f32Bytes = decodedBytes(src);
      auto sourceOp = symbols.lookup<WeightOp>(source);
      uint64_t expect =
          sourceOp ? sourceOp.getTensorType().getNumElements() * 4 : f32Bytes;
      if (f32Bytes != expect)
        return d.emitError() << "weight @" << source << " has " << f32Bytes
                             << " bytes as f32, its type needs " << expect;
      if (int64_t hd = src.rotateHalfHeadDim) {
        const uint64_t rows =
            sourceOp ? sourceOp.getTensorType().getDimSize(0) : 0;
        // Rows of a matrix, or the values of a vector (q/k biases).
        if (!sourceOp || sourceOp.getTensorType().getRank() < 1 ||
            sourceOp.getTensorType().getRank() > 2 || hd % 2 || rows % hd)
          return d.emitError() << "weight @" << source
                               << " cannot be reordered from rotate-half "
                                  "heads of "
                               << hd << " rows";
      }
      t.parts.push_back(&src);
      t.partRows.push_back(
          sourceOp && sourceOp.getTensorType().getRank() >= 1
              ? uint64_t(sourceOp.getTensorType().getDimSize(0))
              : 1);
      t.bytes += f32Bytes;
    }
    const uint64_t elems = weight.getTensorType().getNumElements();
    if (t.bytes != elems * 4)
      return d.emitError() << "packed weight @" << name
                           << " does not add up to its type";
    t.type = storedWeightType(
        weight.getTensorType(),
        requestedWeightType(module, name, options.weightType), t.parts);
    t.bytes = storedWeightBytes(weight.getTensorType(), t.type);
    tensorIndex[name] = tensors.size();
    tensors.push_back(std::move(t));
    return tensors.size() - 1;
  };

  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  std::vector<fb::Buffer> bufferList;
  std::vector<flatbuffers::Offset<fb::KvCache>> kvList;
  // Programs: forward first, then the others (REFRAG's chunk programs) in
  // module order. Buffer and KV slot ids are per program in the IR and
  // global in the artifact: each program's are shifted past the previous.
  struct ProgramData {
    ProgramOp op;
    std::vector<flatbuffers::Offset<fb::Dispatch>> dispatches;
    LoopDescOp loop;
    int64_t bufferBase = 0;
  };
  std::vector<ProgramData> programs;
  SmallVector<ProgramOp> programOps = {program};
  for (auto p : module.getOps<ProgramOp>())
    if (p != program)
      programOps.push_back(p);
  int64_t arenaBytes = 0;
  for (ProgramOp prog : programOps) {
    ProgramData data{prog, {}, {}, int64_t(bufferList.size())};
    const int64_t kvBase = kvList.size();
    arenaBytes = std::max(arenaBytes, prog.getArenaBytesAttr().getInt());
    if (prog.getMaxTokensAttr().getInt() != program.getMaxTokensAttr().getInt())
      return prog.emitError("every program must plan the same max_tokens");
    llvm::DenseMap<int64_t, std::pair<int64_t, int64_t>> bufferById;
    llvm::DenseMap<int64_t, flatbuffers::Offset<fb::KvCache>> kvById;
    for (Operation &op : prog.getBody().front()) {
      if (auto buffer = dyn_cast<BufferOp>(op)) {
        bufferById[buffer.getId()] = {buffer.getOffset(), buffer.getRowElems()};
      } else if (auto slot = dyn_cast<KvSlotOp>(op)) {
        kvById[slot.getId()] = fb::CreateKvCache(
            fbb, slot.getLayer(), slot.getMaxSeq(), slot.getKvHeads(),
            slot.getHeadDim(), int32_t(slot.getLoopLayerAttr().getInt()));
      } else if (auto loop = dyn_cast<LoopDescOp>(op)) {
        data.loop = loop;
      } else if (auto d = dyn_cast<DispatchOp>(op)) {
        auto names = dispatchKernelNames();
        auto kernel = static_cast<fb::Kernel>(
            llvm::find(names, d.getKernel()) - names.begin());
        std::vector<uint32_t> weightIds;
        std::string name = d.getKernel().str();
        if (auto ws = d.getWeights()) {
          for (Attribute w : *ws) {
            StringRef wname = cast<FlatSymbolRefAttr>(w).getValue();
            FailureOr<uint32_t> id = addTensor(d, wname);
            if (failed(id))
              return failure();
            weightIds.push_back(*id);
            name += " @" + wname.str();
          }
        }
        auto ids = [&](ArrayRef<int64_t> v) {
          std::vector<uint32_t> out;
          for (int64_t id : v)
            out.push_back(uint32_t(id + data.bufferBase));
          return fbb.CreateVector(out);
        };
        auto in = ids(d.getInputs()), out = ids(d.getOutputs());
        auto scratch =
            ids(d.getScratch() ? *d.getScratch() : ArrayRef<int64_t>());
        auto wv = fbb.CreateVector(weightIds);
        ArrayRef<int64_t> ip =
            d.getIparams() ? *d.getIparams() : ArrayRef<int64_t>();
        std::vector<int64_t> iparams(ip.begin(), ip.end());
        if ((d.getKernel() == "attention" ||
             d.getKernel() == "fused_qkv_attention") &&
            !iparams.empty())
          iparams[0] += kvBase; // the KV cache index
        ArrayRef<float> fp = d.getFparams() ? *d.getFparams() : ArrayRef<float>();
        auto ipv = fbb.CreateVector(iparams);
        auto fpv = fbb.CreateVector(std::vector<float>(fp.begin(), fp.end()));
        auto nameStr = fbb.CreateString(name);
        auto locStr = fbb.CreateString(locationString(d.getLoc()));
        data.dispatches.push_back(fb::CreateDispatch(
            fbb, kernel, in, out, scratch, wv, ipv, fpv, nameStr, locStr));
      }
    }
    for (size_t i = 0; i < bufferById.size(); ++i) {
      auto it = bufferById.find(i);
      if (it == bufferById.end())
        return prog.emitError() << "buffer ids are not dense: " << i
                                << " is missing";
      bufferList.emplace_back(it->second.first, it->second.second);
    }
    for (size_t i = 0; i < kvById.size(); ++i) {
      auto it = kvById.find(i);
      if (it == kvById.end())
        return prog.emitError() << "kv slot ids are not dense: " << i
                                << " is missing";
      kvList.push_back(it->second);
    }
    programs.push_back(std::move(data));
  }

  // Stream the weights into a temporary file, checksumming on the way.
  std::string tmpPath = outPath + ".tmp";
  std::error_code ec;
  llvm::raw_fd_ostream os(tmpPath, ec, llvm::sys::fs::OF_None);
  if (ec)
    return module.emitError() << "cannot write '" << tmpPath
                              << "': " << ec.message();
  auto abandon = [&](const Twine &msg) {
    os.close();
    llvm::sys::fs::remove(tmpPath);
    return module.emitError(msg);
  };
  ArtifactFileHeader header{};
  std::memcpy(header.magic, kArtifactMagic, sizeof(header.magic));
  header.format_version = kArtifactFormatVersion;
  header.header_size = sizeof(ArtifactFileHeader);
  header.weights_offset = sizeof(ArtifactFileHeader);
  os.write(reinterpret_cast<const char *>(&header), sizeof(header));

  llvm::StringMap<std::unique_ptr<llvm::MemoryBuffer>> files;
  uint64_t at = 0;
  static const char zeros[kWeightAlignment] = {};
  for (size_t i = 0; i < tensors.size(); ++i) {
    PackedTensor &t = tensors[i];
    t.offset = at;
    // The stored blocks' encoding (Q8_0, Q4_0, the K types); none for f32,
    // bf16 and f16, which are made from the parts' f32 values in `bytes`.
    const std::optional<SourceEncoding> same = keptEncoding(t.type);
    std::vector<char> bytes;  // the f32 values (of one part, for blocks)
    std::vector<char> blocks; // the stored blocks
    if (!same)
      bytes.reserve(t.weight.getTensorType().getNumElements() * 4);
    for (size_t p = 0; p < t.parts.size(); ++p) {
      const WeightSource *src = t.parts[p];
      auto &file = files[src->file];
      if (!file) {
        auto opened = llvm::MemoryBuffer::getFile(src->file, false, false);
        if (!opened)
          return abandon("cannot read weights from '" + src->file +
                         "': " + opened.getError().message());
        file = std::move(*opened);
      }
      if (src->offset + src->bytes > file->getBufferSize())
        return abandon("weights file '" + src->file + "' is shorter than "
                       "the frontend recorded: did it change while compiling?");
      const char *from = file->getBufferStart() + src->offset;
      // A source in the stored encoding keeps its blocks: nothing to decode
      // (rows in rotate-half order are moved whole, blocks and all).
      if (same && src->encoding == *same) {
        const size_t base = blocks.size();
        blocks.insert(blocks.end(), from, from + src->bytes);
        if (src->rotateHalfHeadDim)
          restoreInterleavedRows(blocks.data() + base, src->bytes,
                                 src->rotateHalfHeadDim, t.partRows[p]);
        continue;
      }
      if (same)
        bytes.clear();
      const size_t base = bytes.size();
      bytes.resize(base + decodedBytes(*src));
      decode(*src, from, bytes.data() + base);
      if (src->rotateHalfHeadDim)
        restoreInterleavedRows(bytes.data() + base, bytes.size() - base,
                               src->rotateHalfHeadDim, t.partRows[p]);
      // Other parts are quantized from their f32 values as ggml's reference
      // quantizer does.
      if (same)
        quantizeBlocks(*blockTypeOf(*same), bytes.data(), bytes.size() / 4,
                       blocks);
    }
    if (same)
      bytes = std::move(blocks);
    if (t.type == WeightType::BF16 || t.type == WeightType::F16) {
      std::vector<char> narrow(bytes.size() / 2);
      for (size_t e = 0; e < bytes.size() / 4; ++e) {
        float f;
        std::memcpy(&f, bytes.data() + 4 * e, sizeof f);
        // An f16 source round-trips exactly.
        uint16_t h =
            t.type == WeightType::BF16 ? floatToBf16(f) : floatToHalf(f);
        std::memcpy(narrow.data() + 2 * e, &h, sizeof h);
      }
      bytes = std::move(narrow);
    }
    assert(bytes.size() == t.bytes && "stored bytes disagree with the type");
    t.checksum = loomChecksum64(bytes.data(), bytes.size());
    os.write(bytes.data(), bytes.size());
    at += t.bytes;
    uint64_t pad = alignUp(at, kWeightAlignment) - at;
    os.write(zeros, pad);
    at += pad;
    if (options.progress)
      options.progress(i + 1, tensors.size(), at);
  }
  header.weights_size = at;

  std::vector<flatbuffers::Offset<fb::Tensor>> tensorList;
  for (PackedTensor &t : tensors) {
    auto shape = t.weight.getTensorType().getShape();
    tensorList.push_back(fb::CreateTensor(
        fbb, fbb.CreateString(t.weight.getSymName().str()), schemaDType(t.type),
        fbb.CreateVector(std::vector<int64_t>(shape.begin(), shape.end())),
        t.offset, t.bytes, t.checksum));
  }
  flatbuffers::Offset<fb::TokenizerDef> tok;
  if (tokenizer) {
    std::vector<uint32_t> pieceOffsets{0};
    std::vector<uint8_t> pieceBytes;
    for (const std::string &piece : tokenizer->pieces) {
      pieceBytes.insert(pieceBytes.end(), piece.begin(), piece.end());
      pieceOffsets.push_back(pieceBytes.size());
    }
    flatbuffers::Offset<fb::ByteLevelBpeDef> byteLevel;
    if (const std::optional<loom::ByteLevelBpe> &bpe = tokenizer->byteLevel) {
      std::vector<int32_t> merges;
      merges.reserve(2 * bpe->merges.size());
      for (auto [left, right] : bpe->merges) {
        merges.push_back(left);
        merges.push_back(right);
      }
      static_assert(
          int(loom::PreTokenizer::Gpt2) == int(fb::PreTokenizer::Gpt2) &&
          int(loom::PreTokenizer::Llama3) == int(fb::PreTokenizer::Llama3) &&
          int(loom::PreTokenizer::SmolLm) == int(fb::PreTokenizer::SmolLm) &&
          int(loom::PreTokenizer::Qwen2) == int(fb::PreTokenizer::Qwen2));
      byteLevel = fb::CreateByteLevelBpeDef(
          fbb, static_cast<fb::PreTokenizer>(bpe->pre),
          fbb.CreateVector(merges), fbb.CreateVector(bpe->control),
          bpe->ignore_merges, bpe->add_bos, bpe->nfc);
    }
    flatbuffers::Offset<fb::ChatTemplateDef> chatTemplate;
    if (!tokenizer->chatTemplate.empty()) {
      auto text = [&](const std::optional<std::string> &s) {
        return s ? fbb.CreateString(*s)
                 : flatbuffers::Offset<flatbuffers::String>();
      };
      auto source = fbb.CreateString(tokenizer->chatTemplate);
      auto bos = text(tokenizer->chatBosToken);
      auto eos = text(tokenizer->chatEosToken);
      chatTemplate = fb::CreateChatTemplateDef(fbb, source, bos, eos);
    }
    auto ids = [&](const std::vector<int32_t> &v) {
      return v.empty() ? flatbuffers::Offset<flatbuffers::Vector<int32_t>>()
                       : fbb.CreateVector(v);
    };
    const loom::SpecialTokens &special = tokenizer->special;
    tok = fb::CreateTokenizerDef(
        fbb, tokenizer->maxTokenLength, fbb.CreateVector(tokenizer->scores),
        fbb.CreateVector(pieceOffsets), fbb.CreateVector(pieceBytes), byteLevel,
        chatTemplate, ids(special.ids), ids(special.lstrip),
        ids(special.rstrip), special.prefix_after_special);
  }
  std::vector<flatbuffers::Offset<fb::Program>> programList;
  for (ProgramData &data : programs) {
    flatbuffers::Offset<fb::Loop> loopOffset;
    int64_t base = data.bufferBase;
    if (LoopDescOp loopDesc = data.loop) {
      auto criteria = LoopOp::exitCriteria();
      auto criterion = static_cast<fb::ExitCriterion>(
          llvm::find(criteria, loopDesc.getExit()) - criteria.begin());
      loopOffset = fb::CreateLoop(
          fbb, loopDesc.getBodyBeginAttr().getInt(),
          loopDesc.getBodyEndAttr().getInt(),
          loopDesc.getTailEndAttr().getInt(),
          loopDesc.getStateAttr().getInt() + base,
          loopDesc.getNextStateAttr().getInt() + base,
          loopDesc.getLatentAttr().getInt() + base,
          loopDesc.getLayersPerIterationAttr().getInt(),
          loopDesc.getLayersBeforeAttr().getInt(),
          loopDesc.getDefaultIterationsAttr().getInt(), criterion,
          loopDesc.getThreshold().convertToFloat(),
          loopDesc.getMaxIterationsAttr().getInt(),
          loopDesc.getInitStd().convertToFloat(),
          loopDesc.getInitScale().convertToFloat());
    }
    auto input = data.op.getInputBufferAttr();
    programList.push_back(fb::CreateProgram(
        fbb, fbb.CreateString(data.op.getSymName().str()),
        fbb.CreateVector(data.dispatches), data.op.getLogitsBuffer() + base,
        loopOffset, input ? int32_t(input.getInt() + base) : -1));
  }
  // REFRAG: the chunk encoder's identity is the checksum of its tensors'
  // checksums, so a chunk store made with another encoder is refused.
  flatbuffers::Offset<fb::RefragConfig> refrag;
  if (auto cfg = module->getAttrOfType<DictionaryAttr>("loom.refrag")) {
    std::vector<uint64_t> sums;
    for (PackedTensor &t : tensors)
      if (t.weight.getSymName().starts_with("encoder."))
        sums.push_back(t.checksum);
    refrag = fb::CreateRefragConfig(
        fbb, configInt(cfg, "cls_token_id"), configInt(cfg, "max_chunk_len"),
        configInt(cfg, "encoder_dim"),
        loomChecksum64(sums.data(), sums.size() * sizeof(uint64_t)));
  }
  std::vector<flatbuffers::Offset<fb::KvPolicyPlan>> policies;
  if (auto plans = module->getAttrOfType<ArrayAttr>("loom.kv_plans"))
    for (Attribute a : plans) {
      auto plan = cast<DictionaryAttr>(a);
      auto num = [&](StringRef k) {
        auto v = plan.getAs<IntegerAttr>(k);
        return v ? uint32_t(v.getInt()) : 0u;
      };
      auto name = plan.getAs<StringAttr>("policy");
      policies.push_back(fb::CreateKvPolicyPlan(
          fbb, fbb.CreateString(name ? name.str() : ""), num("fixed_slots"),
          num("core_divisor"), num("core_slot_cap")));
    }
  auto arch = model.getAs<StringAttr>("architecture");
  std::vector<int32_t> stopIds;
  if (auto ids = model ? model.getAs<DenseI64ArrayAttr>("stop_ids")
                       : DenseI64ArrayAttr())
    for (int64_t id : ids.asArrayRef())
      stopIds.push_back(int32_t(id));
  auto config = fb::CreateModelConfig(
      fbb, fbb.CreateString(arch ? arch.str() : "llama"),
      configInt(model, "dim"), configInt(model, "hidden_dim"),
      configInt(model, "n_layers"), configInt(model, "n_heads"),
      configInt(model, "n_kv_heads"),
      configInt(model, "dim") /
          std::max<int64_t>(1, configInt(model, "n_heads")),
      configInt(model, "vocab_size"), configInt(model, "max_seq"),
      configFloat(model, "rope_theta", 10000.0f),
      configFloat(model, "norm_eps", 1e-5f), configInt(model, "bos_id", 1),
      configInt(model, "eos_id", 2), fbb.CreateVector(stopIds));
  auto root = fb::CreateModel(
      fbb, kArtifactFormatVersion,
      fbb.CreateString("loomc " LOOM_VERSION_STRING),
      fbb.CreateString(options.target), config, tok,
      fbb.CreateVector(tensorList), fbb.CreateVectorOfStructs(bufferList),
      fbb.CreateVector(kvList), fbb.CreateVector(programList), arenaBytes,
      program.getMaxTokens(), fbb.CreateVector(policies), refrag);
  fb::FinishModelBuffer(fbb, root);

  header.fb_offset = header.weights_offset + header.weights_size;
  header.fb_size = fbb.GetSize();
  header.fb_checksum = loomChecksum64(fbb.GetBufferPointer(), fbb.GetSize());
  header.file_size = header.fb_offset + header.fb_size;
  os.write(reinterpret_cast<const char *>(fbb.GetBufferPointer()),
           fbb.GetSize());
  os.seek(0);
  os.write(reinterpret_cast<const char *>(&header), sizeof(header));
  os.close();
  if (os.has_error())
    return abandon("writing '" + tmpPath + "' failed: " + os.error().message());
  if (std::error_code rc = llvm::sys::fs::rename(tmpPath, outPath)) {
    llvm::sys::fs::remove(tmpPath);
    return module.emitError() << "cannot rename '" << tmpPath << "' to '"
                              << outPath << "': " << rc.message();
  }
  return success();
}
