//===- LoomOps.cpp - verifiers of the loom ops ----------------------------===//
//
// Every verifier names the mismatch: which operand, which dimension, what was
// expected and what was found.
//
//===----------------------------------------------------------------------===//
#include "dialects/Loom/IR/LoomOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"

using namespace mlir;
using namespace loom;

ArrayRef<StringLiteral> loom::dispatchKernelNames() {
  static const StringLiteral names[] = {
      "embed",    "rms_norm", "matmul", "rope",  "attention",
      "silu_mul", "add",      "logits", "fused_qkv_attention"};
  return names;
}

namespace {
int64_t rows(Value v) { return cast<RankedTensorType>(v.getType()).getDimSize(0); }
int64_t cols(Value v) { return cast<RankedTensorType>(v.getType()).getDimSize(1); }

/// Row counts agree unless one of them is the symbolic `?`.
LogicalResult verifySameRows(Operation *op, Value a, StringRef aName, Value b,
                             StringRef bName) {
  int64_t ra = rows(a), rb = rows(b);
  if (!ShapedType::isDynamic(ra) && !ShapedType::isDynamic(rb) && ra != rb)
    return op->emitOpError() << aName << " has " << ra << " rows but " << bName
                             << " has " << rb;
  return success();
}

/// Resolves a weight name to its `loom.weight`, or reports that it is missing.
FailureOr<WeightOp> lookupWeight(Operation *op, SymbolTableCollection &tables,
                                 FlatSymbolRefAttr name, StringRef role) {
  auto weight = tables.lookupNearestSymbolFrom<WeightOp>(op, name);
  if (!weight) {
    op->emitOpError() << role << " " << name
                      << " does not name a loom.weight";
    return failure();
  }
  return weight;
}

/// Checks that a weight has exactly `expected` as its shape.
LogicalResult expectWeightShape(Operation *op, WeightOp weight, StringRef role,
                                ArrayRef<int64_t> expected) {
  ArrayRef<int64_t> shape = weight.getTensorType().getShape();
  if (shape == expected)
    return success();
  auto diag = op->emitOpError() << role << " @" << weight.getSymName()
                                << " has shape [";
  llvm::interleaveComma(shape, diag);
  diag << "] but the op needs [";
  llvm::interleaveComma(expected, diag);
  return diag << "]";
}

LogicalResult checkWeight(Operation *op, SymbolTableCollection &tables,
                          FlatSymbolRefAttr name, StringRef role,
                          ArrayRef<int64_t> expected) {
  FailureOr<WeightOp> w = lookupWeight(op, tables, name, role);
  if (failed(w))
    return failure();
  return expectWeightShape(op, *w, role, expected);
}
} // namespace

//===----------------------------------------------------------------------===//
// WeightOp / KvCacheOp
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verify() {
  RankedTensorType type = getTensorType();
  if (!type.getElementType().isF32())
    return emitOpError() << "weight element type must be f32, got "
                         << type.getElementType();
  if (type.getRank() < 1 || type.getRank() > 2)
    return emitOpError() << "weight must be rank 1 or 2, got rank "
                         << type.getRank();
  return success();
}

LogicalResult WeightOp::verifySymbolUses(SymbolTableCollection &tables) {
  if (!getPacked())
    return success();
  RankedTensorType type = getTensorType();
  if (type.getRank() != 2)
    return emitOpError() << "a packed weight must be rank 2";
  int64_t packedRows = 0;
  // Bind the attribute: ranging over *getPacked() would dangle.
  ArrayAttr parts = *getPacked();
  for (Attribute part : parts) {
    auto ref = cast<FlatSymbolRefAttr>(part);
    FailureOr<WeightOp> w = lookupWeight(*this, tables, ref, "packed part");
    if (failed(w))
      return failure();
    RankedTensorType partType = w->getTensorType();
    if (partType.getRank() != 2 || partType.getDimSize(1) != type.getDimSize(1))
      return emitOpError() << "packed part " << ref << " must be rank 2 with "
                           << type.getDimSize(1) << " columns, got "
                           << partType;
    if (w->getPacked())
      return emitOpError() << "packed part " << ref
                           << " is itself packed; pack only source weights";
    packedRows += partType.getDimSize(0);
  }
  if (packedRows != type.getDimSize(0))
    return emitOpError() << "packed parts have " << packedRows
                         << " rows in total but the weight has "
                         << type.getDimSize(0);
  return success();
}

LogicalResult KvCacheOp::verify() {
  // I64Attr getters return uint64_t: read the signed value.
  if (getLayerAttr().getInt() < 0)
    return emitOpError() << "layer must be non-negative, got "
                         << getLayerAttr().getInt();
  return success();
}

//===----------------------------------------------------------------------===//
// Graph-level ops
//===----------------------------------------------------------------------===//

LogicalResult EmbedOp::verify() {
  int64_t n = cast<RankedTensorType>(getTokens().getType()).getDimSize(0);
  int64_t r = rows(getResult());
  if (!ShapedType::isDynamic(n) && !ShapedType::isDynamic(r) && n != r)
    return emitOpError() << "has " << n << " tokens but " << r
                         << " result rows";
  return success();
}

LogicalResult EmbedOp::verifySymbolUses(SymbolTableCollection &tables) {
  FailureOr<WeightOp> w = lookupWeight(*this, tables, getTableAttr(), "table");
  if (failed(w))
    return failure();
  ArrayRef<int64_t> shape = w->getTensorType().getShape();
  if (shape.size() != 2 || shape[1] != cols(getResult()))
    return emitOpError() << "table @" << w->getSymName()
                         << " must be [vocab, " << cols(getResult())
                         << "], got " << w->getTensorType();
  return success();
}

LogicalResult RmsNormOp::verifySymbolUses(SymbolTableCollection &tables) {
  return checkWeight(*this, tables, getWeightAttr(), "weight",
                     {cols(getInput())});
}

LogicalResult LinearOp::verify() {
  return verifySameRows(*this, getInput(), "input", getResult(), "result");
}

LogicalResult LinearOp::verifySymbolUses(SymbolTableCollection &tables) {
  return checkWeight(*this, tables, getWeightAttr(), "weight",
                     {cols(getResult()), cols(getInput())});
}

LogicalResult LogitsOp::verify() {
  return verifySameRows(*this, getInput(), "input", getResult(), "result");
}

LogicalResult LogitsOp::verifySymbolUses(SymbolTableCollection &tables) {
  return checkWeight(*this, tables, getWeightAttr(), "weight",
                     {cols(getResult()), cols(getInput())});
}

/// Rope parameters, shared by rope and fused attention.
static LogicalResult verifyRopeParams(Operation *op, int64_t headDim,
                                      float theta) {
  if (headDim <= 0 || headDim % 2 != 0)
    return op->emitOpError() << "head_dim must be positive and even, got "
                             << headDim;
  if (!(theta > 0.0f))
    return op->emitOpError() << "theta must be positive, got " << theta;
  return success();
}

/// One position per row, unless either count is the symbolic `?`.
static LogicalResult verifyPositions(Operation *op, Value positions,
                                     Value rowsOf) {
  int64_t np = cast<RankedTensorType>(positions.getType()).getDimSize(0);
  int64_t r = rows(rowsOf);
  if (!ShapedType::isDynamic(np) && !ShapedType::isDynamic(r) && np != r)
    return op->emitOpError() << "has " << np << " positions but " << r
                             << " rows";
  return success();
}

LogicalResult RmsNormOp::verify() {
  float eps = getEps().convertToFloat();
  if (!(eps > 0.0f))
    return emitOpError() << "eps must be positive, got " << eps;
  return success();
}

LogicalResult RopeOp::verify() {
  int64_t hd = getHeadDimAttr().getInt();
  if (failed(verifyRopeParams(*this, hd, getTheta().convertToFloat())))
    return failure();
  if (cols(getInput()) % hd != 0)
    return emitOpError() << "input has " << cols(getInput())
                         << " columns, not a multiple of head_dim " << hd;
  return verifyPositions(*this, getPositions(), getInput());
}

/// Shared by attention and fused attention: head counts against a cache.
static LogicalResult verifyHeads(Operation *op, int64_t nHeads,
                                 int64_t nKvHeads, int64_t headDim,
                                 KvCacheType cache) {
  if (nHeads <= 0 || nKvHeads <= 0 || headDim <= 0)
    return op->emitOpError() << "heads, kv_heads and head_dim must be positive";
  if (nHeads % nKvHeads != 0)
    return op->emitOpError() << "heads (" << nHeads
                             << ") must be a multiple of kv_heads ("
                             << nKvHeads << ")";
  if (cache.getKvHeads() != nKvHeads || cache.getHeadDim() != headDim)
    return op->emitOpError()
           << "cache holds " << cache.getKvHeads() << " kv heads of head_dim "
           << cache.getHeadDim() << " but the op uses " << nKvHeads
           << " kv heads of head_dim " << headDim;
  return success();
}

LogicalResult AttentionOp::verify() {
  int64_t hd = getHeadDimAttr().getInt(), nh = getNHeadsAttr().getInt(),
          nkv = getNKvHeadsAttr().getInt();
  if (failed(verifyHeads(*this, nh, nkv, hd, getCache().getType())))
    return failure();
  if (cols(getQ()) != nh * hd)
    return emitOpError() << "q has " << cols(getQ()) << " columns but heads * "
                         << "head_dim = " << nh * hd;
  if (cols(getK()) != nkv * hd)
    return emitOpError() << "k has " << cols(getK())
                         << " columns but kv_heads * head_dim = " << nkv * hd;
  if (failed(verifySameRows(*this, getQ(), "q", getK(), "k")))
    return failure();
  return verifyPositions(*this, getPositions(), getQ());
}

LogicalResult FusedQkvAttentionOp::verify() {
  if (failed(verifyHeads(*this, getNHeadsAttr().getInt(),
                         getNKvHeadsAttr().getInt(), getHeadDimAttr().getInt(),
                         getCache().getType())) ||
      failed(verifyRopeParams(*this, getHeadDimAttr().getInt(),
                              getTheta().convertToFloat())))
    return failure();
  return verifyPositions(*this, getPositions(), getInput());
}

LogicalResult
FusedQkvAttentionOp::verifySymbolUses(SymbolTableCollection &tables) {
  int64_t hd = getHeadDim(), d = cols(getInput());
  int64_t qkvRows = (getNHeads() + 2 * getNKvHeads()) * hd;
  if (failed(checkWeight(*this, tables, getQkvWeightAttr(), "qkv_weight",
                         {qkvRows, d})))
    return failure();
  return checkWeight(*this, tables, getOutWeightAttr(), "out_weight",
                     {d, getNHeads() * hd});
}

//===----------------------------------------------------------------------===//
// Dispatch form
//===----------------------------------------------------------------------===//

LogicalResult ProgramOp::verifyRegions() {
  llvm::DenseMap<int64_t, BufferOp> buffers;
  llvm::DenseSet<int64_t> slots;
  int64_t maxTokens = getMaxTokensAttr().getInt();
  int64_t arenaBytes = getArenaBytesAttr().getInt();
  if (arenaBytes < 0)
    return emitOpError() << "arena must be non-negative, got " << arenaBytes;
  if (maxTokens <= 0)
    return emitOpError() << "max_tokens must be positive, got " << maxTokens;
  for (Operation &op : getBody().front()) {
    if (auto buffer = dyn_cast<BufferOp>(op)) {
      if (!buffers.try_emplace(buffer.getId(), buffer).second)
        return buffer.emitOpError() << "duplicate buffer id " << buffer.getId();
      int64_t offset = buffer.getOffsetAttr().getInt();
      int64_t rowElems = buffer.getRowElemsAttr().getInt();
      if (offset < 0 || rowElems <= 0)
        return buffer.emitOpError()
               << "needs offset >= 0 and row_elems > 0, got offset " << offset
               << " and row_elems " << rowElems;
      int64_t end = offset + maxTokens * rowElems * 4;
      if (end > arenaBytes)
        return buffer.emitOpError() << "ends at byte " << end
                                    << ", past the arena of " << arenaBytes
                                    << " bytes";
    } else if (auto slot = dyn_cast<KvSlotOp>(op)) {
      if (!slots.insert(slot.getId()).second)
        return slot.emitOpError() << "duplicate kv slot id " << slot.getId();
      for (auto [name, value] :
           {std::pair<StringRef, IntegerAttr>{"max_seq", slot.getMaxSeqAttr()},
            {"kv_heads", slot.getKvHeadsAttr()},
            {"head_dim", slot.getHeadDimAttr()}})
        if (value.getInt() <= 0)
          return slot.emitOpError() << name << " must be positive, got "
                                    << value.getInt();
      if (slot.getLayerAttr().getInt() < 0)
        return slot.emitOpError() << "layer must be non-negative, got "
                                  << slot.getLayerAttr().getInt();
    }
  }
  if (!buffers.count(getLogitsBuffer()))
    return emitOpError() << "logits buffer " << getLogitsBuffer()
                         << " is not declared";
  for (auto dispatch : getBody().front().getOps<DispatchOp>()) {
    auto checkIds = [&](ArrayRef<int64_t> ids, StringRef what) {
      for (int64_t id : ids)
        if (!buffers.count(id))
          return dispatch.emitOpError()
                 << what << " buffer " << id << " is not declared",
                 failure();
      return success();
    };
    if (failed(checkIds(dispatch.getInputs(), "input")) ||
        failed(checkIds(dispatch.getOutputs(), "output")))
      return failure();
    if (dispatch.getScratch() &&
        failed(checkIds(*dispatch.getScratch(), "scratch")))
      return failure();
    StringRef k = dispatch.getKernel();
    if ((k == "attention" || k == "fused_qkv_attention")) {
      auto ip = dispatch.getIparams();
      if (!ip || ip->empty() || !slots.count((*ip)[0]))
        return dispatch.emitOpError()
               << k << " needs iparams[0] to name a declared kv slot";
    }
  }
  return success();
}

namespace {
/// Operand counts each kernel takes (the table of docs/artifact-format.md).
struct KernelArity {
  StringLiteral name;
  int inputs, outputs, scratch, weights, iparams, fparams;
};
constexpr KernelArity kKernelArity[] = {
    {"embed", 0, 1, 0, 1, 0, 0},
    {"rms_norm", 1, 1, 0, 1, 0, 1},
    {"matmul", 1, 1, 0, 1, 1, 0},
    {"rope", 1, 1, 0, 0, 2, 1},
    {"attention", 3, 1, 0, 0, 4, 0},
    {"silu_mul", 2, 1, 0, 0, 0, 0},
    {"add", 2, 1, 0, 0, 0, 0},
    {"logits", 1, 1, 0, 1, 0, 0},
    {"fused_qkv_attention", 1, 1, 2, 2, 5, 1},
};
} // namespace

LogicalResult DispatchOp::verify() {
  const KernelArity *arity = llvm::find_if(
      kKernelArity, [&](const KernelArity &k) { return k.name == getKernel(); });
  if (arity == std::end(kKernelArity))
    return emitOpError() << "unknown kernel \"" << getKernel() << "\"";
  auto check = [&](StringRef what, size_t got, int want) -> LogicalResult {
    if (got == size_t(want))
      return success();
    return emitOpError() << "kernel \"" << getKernel() << "\" takes " << want
                         << " " << what << ", got " << got;
  };
  if (failed(check("inputs", getInputs().size(), arity->inputs)) ||
      failed(check("outputs", getOutputs().size(), arity->outputs)) ||
      failed(check("scratch buffers",
                   getScratch() ? getScratch()->size() : 0, arity->scratch)) ||
      failed(check("weights", getWeights() ? getWeights()->size() : 0,
                   arity->weights)) ||
      failed(check("iparams", getIparams() ? getIparams()->size() : 0,
                   arity->iparams)) ||
      failed(check("fparams", getFparams() ? getFparams()->size() : 0,
                   arity->fparams)))
    return failure();
  return success();
}

LogicalResult DispatchOp::verifySymbolUses(SymbolTableCollection &tables) {
  if (!getWeights())
    return success();
  ArrayAttr weights = *getWeights();
  for (Attribute w : weights)
    if (failed(lookupWeight(*this, tables, cast<FlatSymbolRefAttr>(w),
                            "weight")))
      return failure();
  return success();
}

#define GET_OP_CLASSES
#include "dialects/Loom/IR/LoomOps.cpp.inc"
