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

#include <cmath>

using namespace mlir;
using namespace loom;

ArrayRef<StringLiteral> loom::dispatchKernelNames() {
  static const StringLiteral names[] = {
      "embed",          "rms_norm",      "matmul",        "rope",
      "attention",      "silu_mul",      "add",           "logits",
      "fused_qkv_attention", "concat",   "copy",          "add_row_bias",
      "layer_norm",     "gelu_tanh",     "self_attention", "add_positions",
      "take_row"};
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
  int64_t packedRows = 0;
  // Bind the attribute: ranging over *getPacked() would dangle.
  ArrayAttr parts = *getPacked();
  for (Attribute part : parts) {
    auto ref = cast<FlatSymbolRefAttr>(part);
    FailureOr<WeightOp> w = lookupWeight(*this, tables, ref, "packed part");
    if (failed(w))
      return failure();
    RankedTensorType partType = w->getTensorType();
    if (partType.getRank() != type.getRank() ||
        (type.getRank() == 2 && partType.getDimSize(1) != type.getDimSize(1)))
      return emitOpError() << "packed part " << ref << " must be rank "
                           << type.getRank()
                           << (type.getRank() == 2
                                   ? " with " + std::to_string(type.getDimSize(1)) +
                                         " columns"
                                   : std::string())
                           << ", got " << partType;
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
  if (getBiasAttr() && failed(checkWeight(*this, tables, getBiasAttr(), "bias",
                                          {cols(getResult())})))
    return failure();
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
                                      float theta,
                                      std::optional<ArrayRef<float>> factors,
                                      FloatAttr scale) {
  if (scale && (!(scale.getValueAsDouble() > 0.0) ||
                !std::isfinite(scale.getValueAsDouble())))
    return op->emitOpError() << "rope scale must be a positive number, got "
                             << scale.getValueAsDouble();
  if (headDim <= 0 || headDim % 2 != 0)
    return op->emitOpError() << "head_dim must be positive and even, got "
                             << headDim;
  if (!(theta > 0.0f) || !std::isfinite(theta))
    return op->emitOpError() << "theta must be positive, got " << theta;
  if (factors) {
    if (int64_t(factors->size()) != headDim / 2)
      return op->emitOpError()
             << "has " << factors->size() << " freq_factors, expected "
             << headDim / 2 << " (head_dim / 2)";
    for (auto [i, f] : llvm::enumerate(*factors))
      if (!(f > 0.0f) || !std::isfinite(f))
        return op->emitOpError() << "freq_factors[" << i << "] is " << f
                                 << ", not a positive number";
  }
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
  if (failed(verifyRopeParams(*this, hd, getTheta().convertToFloat(),
                              getFreqFactors(), getScaleAttr())))
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

// A sliding window of W positions sees at least the row itself.
static LogicalResult verifyWindow(Operation *op, IntegerAttr window) {
  if (window && (window.getInt() < 1 || window.getInt() > INT32_MAX))
    return op->emitOpError()
           << "window must be in 1..2147483647 positions, got "
           << window.getInt();
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
  if (failed(verifySameRows(*this, getQ(), "q", getK(), "k")) ||
      failed(verifyWindow(*this, getWindowAttr())))
    return failure();
  return verifyPositions(*this, getPositions(), getQ());
}

LogicalResult FusedQkvAttentionOp::verify() {
  if (failed(verifyHeads(*this, getNHeadsAttr().getInt(),
                         getNKvHeadsAttr().getInt(), getHeadDimAttr().getInt(),
                         getCache().getType())) ||
      failed(verifyRopeParams(*this, getHeadDimAttr().getInt(),
                              getTheta().convertToFloat(), getFreqFactors(),
                              getRopeScaleAttr())) ||
      failed(verifyWindow(*this, getWindowAttr())))
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
  if (getVBiasAttr() &&
      (!getQkBiasAttr() ||
       failed(checkWeight(*this, tables, getVBiasAttr(), "v_bias",
                          {int64_t(getNKvHeads()) * hd}))))
    return getQkBiasAttr() ? failure()
                           : emitOpError() << "has a v_bias without a qk_bias";
  if (getQkBiasAttr() &&
      failed(checkWeight(*this, tables, getQkBiasAttr(), "qk_bias",
                         {(int64_t(getNHeads()) + int64_t(getNKvHeads())) * hd})))
    return failure();
  return checkWeight(*this, tables, getOutWeightAttr(), "out_weight",
                     {d, int64_t(getNHeads()) * hd});
}

LogicalResult AddRowBiasOp::verifySymbolUses(SymbolTableCollection &tables) {
  return checkWeight(*this, tables, getBiasAttr(), "bias", {cols(getInput())});
}

LogicalResult ConcatOp::verify() {
  if (cols(getResult()) != cols(getLhs()) + cols(getRhs()))
    return emitOpError() << "result has " << cols(getResult())
                         << " columns but the inputs have " << cols(getLhs())
                         << " + " << cols(getRhs());
  if (failed(verifySameRows(*this, getLhs(), "lhs", getRhs(), "rhs")))
    return failure();
  return verifySameRows(*this, getLhs(), "lhs", getResult(), "result");
}

ArrayRef<StringLiteral> LoopOp::exitCriteria() {
  static const StringLiteral names[] = {"none",        "kl",
                                        "minp-kl",     "entropy-diff",
                                        "latent-diff", "cosine",
                                        "argmax-stability"};
  return names;
}

/// Iteration counts and exit criterion, shared by loom.loop and loom.loop_desc
/// (the runtime's limits: at most kMaxIterations).
static LogicalResult verifyLoopControl(Operation *op, int64_t dflt,
                                       int64_t max, StringRef exit, float t) {
  constexpr int64_t kMaxIterations = 1024;
  if (dflt < 1 || dflt > kMaxIterations)
    return op->emitOpError() << "default iterations must be in 1.."
                             << kMaxIterations << ", got " << dflt;
  if (max < dflt || max > kMaxIterations)
    return op->emitOpError() << "max iterations (" << max
                             << ") must be at least the default (" << dflt
                             << ") and at most " << kMaxIterations;
  if (!llvm::is_contained(LoopOp::exitCriteria(), exit)) {
    auto diag = op->emitOpError() << "unknown exit criterion \"" << exit
                                  << "\" (expected one of ";
    llvm::interleaveComma(LoopOp::exitCriteria(), diag);
    return diag << ")";
  }
  if (!std::isfinite(t) || t < 0)
    return op->emitOpError()
           << "threshold must be finite and non-negative, got " << t;
  if (exit != "none" && !(t > 0))
    return op->emitOpError() << "exit \"" << exit
                             << "\" needs a positive threshold";
  if (exit == "argmax-stability" && t != std::floor(t))
    return op->emitOpError() << "argmax-stability counts checks: its "
                             << "threshold must be a whole number, got " << t;
  return success();
}

LogicalResult LoopOp::verify() {
  if (failed(verifyLoopControl(*this, getDefaultIterationsAttr().getInt(),
                               getMaxIterationsAttr().getInt(), getExit(),
                               getThreshold().convertToFloat())))
    return failure();
  if (getExit() != "none" && getCount())
    return emitOpError()
           << "an adaptive loop (exit \"" << getExit()
           << "\") decides its own count: drop count(...)";
  return success();
}

LogicalResult InitStateOp::verify() {
  float std = getStd().convertToFloat(), scale = getScale().convertToFloat();
  if (!std::isfinite(std) || std < 0 || !std::isfinite(scale) || scale < 0)
    return emitOpError() << "std and scale must be finite and non-negative, "
                         << "got std " << std << " and scale " << scale;
  return success();
}

LogicalResult LoopDescOp::verify() {
  int64_t b = getBodyBeginAttr().getInt(), e = getBodyEndAttr().getInt(),
          t = getTailEndAttr().getInt();
  if (!(0 <= b && b < e && e < t))
    return emitOpError() << "needs 0 <= body_begin < body_end < tail_end, got "
                         << b << ", " << e << ", " << t;
  if (getLayersBeforeAttr().getInt() < 0 ||
      getLayersPerIterationAttr().getInt() < 0)
    return emitOpError() << "layer counts must be non-negative";
  float std = getInitStd().convertToFloat(), sc = getInitScale().convertToFloat();
  if (!std::isfinite(std) || std < 0 || !std::isfinite(sc) || sc < 0)
    return emitOpError() << "init_std and init_scale must be finite and "
                         << "non-negative";
  return verifyLoopControl(*this, getDefaultIterationsAttr().getInt(),
                           getMaxIterationsAttr().getInt(), getExit(),
                           getThreshold().convertToFloat());
}

LogicalResult LoopOp::verifyRegions() {
  Block &body = getBody().front();
  if (body.getNumArguments() != 1 ||
      body.getArgument(0).getType() != getInit().getType())
    return emitOpError() << "body must take exactly one argument, the state of "
                         << "type " << getInit().getType();
  auto yield = body.empty() ? YieldOp() : dyn_cast<YieldOp>(body.back());
  if (!yield)
    return emitOpError("body must end with loom.yield");
  if (yield.getValue().getType() != getInit().getType())
    return yield.emitOpError() << "yields " << yield.getValue().getType()
                               << " but the loop state is "
                               << getInit().getType();
  WalkResult nested = getBody().walk([&](LoopOp inner) {
    inner.emitOpError("loops do not nest: one looped block per model");
    return WalkResult::interrupt();
  });
  return failure(nested.wasInterrupted());
}

//===----------------------------------------------------------------------===//
// Chunk encoder ops
//===----------------------------------------------------------------------===//

LogicalResult LayerNormOp::verify() {
  float eps = getEps().convertToFloat();
  if (!(eps > 0.0f))
    return emitOpError() << "eps must be positive, got " << eps;
  return success();
}

LogicalResult LayerNormOp::verifySymbolUses(SymbolTableCollection &tables) {
  int64_t d = cols(getInput());
  if (failed(checkWeight(*this, tables, getWeightAttr(), "weight", {d})))
    return failure();
  return checkWeight(*this, tables, getBiasAttr(), "bias", {d});
}

LogicalResult SelfAttentionOp::verify() {
  int64_t nh = getNHeadsAttr().getInt(), hd = getHeadDimAttr().getInt();
  if (nh <= 0 || hd <= 0 || nh > (1 << 20) || hd > (1 << 20))
    return emitOpError() << "heads and head_dim must be in 1..1048576";
  if (cols(getQ()) != nh * hd)
    return emitOpError() << "q has " << cols(getQ())
                         << " columns but heads * head_dim = " << nh * hd;
  return success();
}

LogicalResult AddPositionsOp::verifySymbolUses(SymbolTableCollection &tables) {
  FailureOr<WeightOp> w = lookupWeight(*this, tables, getTableAttr(), "table");
  if (failed(w))
    return failure();
  ArrayRef<int64_t> shape = w->getTensorType().getShape();
  if (shape.size() != 2 || shape[1] != cols(getInput()))
    return emitOpError() << "table @" << w->getSymName() << " must be [rows, "
                         << cols(getInput()) << "], got "
                         << w->getTensorType();
  int64_t r = rows(getInput());
  if (!ShapedType::isDynamic(r) && r > shape[0])
    return emitOpError() << "input has " << r << " rows but the table has only "
                         << shape[0] << " positions";
  return success();
}

LogicalResult TakeRowOp::verify() {
  int64_t row = getRowAttr().getInt(), r = rows(getInput());
  if (row < 0 || (!ShapedType::isDynamic(r) && row >= r))
    return emitOpError() << "row " << row << " is outside the input's rows";
  if (rows(getResult()) != 1 || cols(getResult()) != cols(getInput()))
    return emitOpError() << "result must be one row of " << cols(getInput())
                         << " columns, got " << getResult().getType();
  return success();
}

LogicalResult ChunkPlaceholderOp::verify() {
  if (getKAttr().getInt() < 1)
    return emitOpError() << "k must be at least 1, got " << getKAttr().getInt();
  if (rows(getResult()) != 1)
    return emitOpError() << "a placeholder is one position: the result must "
                         << "have one row, got " << getResult().getType();
  int64_t n = cast<RankedTensorType>(getTokens().getType()).getDimSize(0);
  if (!ShapedType::isDynamic(n) && (n < 1 || n > getKAttr().getInt()))
    return emitOpError() << "a chunk has 1.." << getKAttr().getInt()
                         << " tokens, got " << n;
  return success();
}

LogicalResult
ChunkPlaceholderOp::verifySymbolUses(SymbolTableCollection &tables) {
  auto lookup = [&](FlatSymbolRefAttr ref, StringRef role)
      -> FailureOr<FunctionType> {
    auto fn = tables.lookupNearestSymbolFrom<func::FuncOp>(*this, ref);
    if (!fn) {
      emitOpError() << role << " " << ref << " does not name a func.func";
      return failure();
    }
    return fn.getFunctionType();
  };
  FailureOr<FunctionType> enc = lookup(getEncoderAttr(), "encoder");
  FailureOr<FunctionType> proj = lookup(getProjectorAttr(), "projector");
  if (failed(enc) || failed(proj))
    return failure();
  auto rowType = [](Type t) { return dyn_cast<RankedTensorType>(t); };
  if (enc->getNumInputs() != 1 || enc->getNumResults() != 1 ||
      !rowType(enc->getResult(0)) ||
      rowType(enc->getResult(0)).getRank() != 2 ||
      rowType(enc->getResult(0)).getDimSize(0) != 1)
    return emitOpError() << "encoder " << getEncoderAttr()
                         << " must take token ids and return one embedding "
                         << "row (tensor<1xExf32>), got " << *enc;
  if (enc->getInput(0) != getTokens().getType())
    return emitOpError() << "chunk tokens " << getTokens().getType()
                         << " do not match the encoder's input "
                         << enc->getInput(0);
  int64_t e = rowType(enc->getResult(0)).getDimSize(1);
  if (proj->getNumInputs() != 1 || proj->getNumResults() != 1 ||
      !rowType(proj->getInput(0)) || rowType(proj->getInput(0)).getRank() != 2 ||
      rowType(proj->getInput(0)).getDimSize(1) != e ||
      !rowType(proj->getResult(0)) ||
      rowType(proj->getResult(0)).getRank() != 2 ||
      rowType(proj->getResult(0)).getDimSize(1) != cols(getResult()))
    return emitOpError() << "projector " << getProjectorAttr() << " must map "
                         << e << "-wide rows to " << cols(getResult())
                         << "-wide rows, got " << *proj;
  return success();
}

LogicalResult ExpansionPolicyOp::verify() {
  float p = getFraction().convertToFloat();
  if (!(p >= 0.0f && p <= 1.0f))
    return emitOpError() << "fraction must be in [0, 1], got " << p;
  if (cols(getScores()) != 1)
    return emitOpError() << "scores must have one column per chunk row, got "
                         << getScores().getType();
  int64_t n = rows(getScores());
  int64_t m = cast<RankedTensorType>(getExpand().getType()).getDimSize(0);
  if (!ShapedType::isDynamic(n) && !ShapedType::isDynamic(m) && n != m)
    return emitOpError() << "has " << n << " scores but " << m << " flags";
  return success();
}

LogicalResult AssembleSequenceOp::verify() {
  if (getPieces().empty())
    return emitOpError("needs at least one piece");
  int64_t d = cols(getResult()), total = 0;
  bool dynamic = false;
  for (Value piece : getPieces()) {
    if (cols(piece) != d)
      return emitOpError() << "piece " << piece.getType() << " has "
                           << cols(piece) << " columns but the sequence has "
                           << d;
    if (ShapedType::isDynamic(rows(piece)))
      dynamic = true;
    else
      total += rows(piece);
  }
  int64_t r = rows(getResult());
  if (!dynamic && !ShapedType::isDynamic(r) && r != total)
    return emitOpError() << "pieces have " << total << " rows but the result "
                         << r;
  return success();
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
      if (slot.getLoopLayerAttr().getInt() < -1)
        return slot.emitOpError() << "loop_layer must be -1 (not in the loop) "
                                  << "or a core layer index, got "
                                  << slot.getLoopLayerAttr().getInt();
    }
  }
  if (!buffers.count(getLogitsBuffer()))
    return emitOpError() << "logits buffer " << getLogitsBuffer()
                         << " is not declared";
  if (auto in = getInputBufferAttr(); in && !buffers.count(in.getInt()))
    return emitOpError() << "input buffer " << in.getInt()
                         << " is not declared";
  int64_t numDispatches =
      llvm::range_size(getBody().front().getOps<DispatchOp>());
  int64_t numLoops = 0;
  for (auto loop : getBody().front().getOps<LoopDescOp>()) {
    if (++numLoops > 1)
      return loop.emitOpError("a program has at most one looped block");
    for (auto [what, id] : {std::pair<StringRef, int64_t>{"state", loop.getStateAttr().getInt()},
                            {"next_state", loop.getNextStateAttr().getInt()},
                            {"latent", loop.getLatentAttr().getInt()}})
      if (!buffers.count(id))
        return loop.emitOpError() << what << " buffer " << id
                                  << " is not declared";
    if (loop.getTailEndAttr().getInt() != numDispatches)
      return loop.emitOpError() << "tail_end " << loop.getTailEndAttr().getInt()
                                << " must be the number of dispatches ("
                                << numDispatches << ")";
  }
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
/// An operand count: exactly `min`, or any count in [min, max].
struct Count {
  int min, max;
  constexpr Count(int n) : min(n), max(n) {}
  constexpr Count(int lo, int hi) : min(lo), max(hi) {}
};
struct KernelArity {
  StringLiteral name;
  Count inputs, outputs, scratch, weights, iparams, fparams;
};
constexpr KernelArity kKernelArity[] = {
    {"embed", 0, 1, 0, 1, 0, {0, 1}},
    {"rms_norm", 1, 1, 0, 1, 0, 1},
    {"matmul", 1, 1, 0, {1, 2}, 1, 0},
    // rope: theta, then freq_factors (head_dim / 2 of them) if any, then
    // (after the factors) the rotation's scale if any.
    {"rope", 1, 1, 0, 0, 2, {1, 2 + 2048}},
    // attention: slot, heads, kv heads, head_dim [, sliding window].
    {"attention", 3, 1, 0, 0, {4, 5}, 0},
    {"silu_mul", 2, 1, 0, 0, 0, 0},
    {"add", 2, 1, 0, 0, 0, 0},
    {"logits", 1, 1, 0, 1, 0, 0},
    // fused_qkv_attention weights: Wqkv, Wo [, qk_bias [, v_bias]];
    // iparams: slot, heads, kv heads, head_dim, accumulate
    // [, placeholder_qkv [, sliding window]].
    {"fused_qkv_attention", 1, 1, 2, {2, 4}, {5, 7}, {1, 2 + 2048}},
    {"concat", 2, 1, 0, 0, 0, 0},
    {"copy", 1, 1, 0, 0, 0, 0},
    {"add_row_bias", 1, 1, 0, 1, 0, 0},
    {"layer_norm", 1, 1, 0, 2, 0, 1},
    {"gelu_tanh", 1, 1, 0, 0, 0, 0},
    {"self_attention", 3, 1, 0, 0, 2, 0},
    {"add_positions", 1, 1, 0, 1, 0, 0},
    {"take_row", 1, 1, 0, 0, 1, 0},
};
} // namespace

LogicalResult DispatchOp::verify() {
  const KernelArity *arity = llvm::find_if(
      kKernelArity, [&](const KernelArity &k) { return k.name == getKernel(); });
  if (arity == std::end(kKernelArity))
    return emitOpError() << "unknown kernel \"" << getKernel() << "\"";
  auto check = [&](StringRef what, size_t got, Count want) -> LogicalResult {
    if (got >= size_t(want.min) && got <= size_t(want.max))
      return success();
    auto diag = emitOpError() << "kernel \"" << getKernel() << "\" takes "
                              << want.min;
    if (want.max != want.min)
      diag << " to " << want.max;
    return diag << " " << what << ", got " << got;
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
