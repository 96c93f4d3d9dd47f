//===- FuseProjectionAttention.cpp - one op per attention block -------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"

namespace loom {
#define GEN_PASS_DEF_FUSEPROJECTIONATTENTIONPASS
#include "passes/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;

namespace {
/// The ops of one attention block, as the frontend writes it.
struct AttentionBlock {
  LinearOp q, k, v, out;
  AddRowBiasOp qBias, kBias; // both or neither (Huginn's qk_bias)
  AddRowBiasOp vBias;        // only with them (Qwen 2's)
  RopeOp qRope, kRope;
  AttentionOp attention;
};

/// The projection feeding a rope, through an optional bias.
LinearOp projectionOf(RopeOp rope, AddRowBiasOp &bias) {
  Value in = rope.getInput();
  if ((bias = in.getDefiningOp<AddRowBiasOp>()))
    in = bias.getInput();
  return in.getDefiningOp<LinearOp>();
}

/// Matches the block around `attention`; every intermediate must have a single
/// use so erasing it changes nothing else.
std::optional<AttentionBlock> matchBlock(AttentionOp attention) {
  AttentionBlock b;
  b.attention = attention;
  b.qRope = attention.getQ().getDefiningOp<RopeOp>();
  b.kRope = attention.getK().getDefiningOp<RopeOp>();
  Value v = attention.getV();
  if ((b.vBias = v.getDefiningOp<AddRowBiasOp>()))
    v = b.vBias.getInput();
  b.v = v.getDefiningOp<LinearOp>();
  if (!b.qRope || !b.kRope || !b.v)
    return std::nullopt;
  b.q = projectionOf(b.qRope, b.qBias);
  b.k = projectionOf(b.kRope, b.kBias);
  if (!b.q || !b.k || bool(b.qBias) != bool(b.kBias) || (b.vBias && !b.qBias))
    return std::nullopt;
  // A bias folded into a projection has no place in the fused op.
  for (LinearOp l : {b.q, b.k, b.v})
    if (l.getBias())
      return std::nullopt;
  Value x = b.q.getInput();
  if (b.k.getInput() != x || b.v.getInput() != x)
    return std::nullopt;
  Value pos = attention.getPositions();
  for (RopeOp rope : {b.qRope, b.kRope})
    if (rope.getPositions() != pos ||
        rope.getHeadDim() != attention.getHeadDim())
      return std::nullopt;
  if (b.qRope.getTheta() != b.kRope.getTheta() ||
      b.qRope.getFreqFactorsAttr() != b.kRope.getFreqFactorsAttr() ||
      b.qRope.getScaleAttr() != b.kRope.getScaleAttr())
    return std::nullopt;
  SmallVector<Operation *> chain = {b.q, b.k, b.qRope, b.kRope, b.v, attention};
  if (b.qBias)
    chain.append({b.qBias, b.kBias});
  if (b.vBias)
    chain.push_back(b.vBias);
  for (Operation *op : chain)
    if (!op->getResult(0).hasOneUse())
      return std::nullopt;
  b.out = dyn_cast<LinearOp>(*attention->getUsers().begin());
  if (!b.out || b.out.getBias())
    return std::nullopt;
  return b;
}

/// "layers.0.wq", "layers.0.wk", "layers.0.wv" + "wqkv" -> "layers.0.wqkv":
/// the names' common prefix up to its last dot, then `suffix`.
std::string packedName(ArrayRef<StringRef> names, StringRef suffix) {
  StringRef first = names.front();
  size_t n = first.size();
  for (StringRef other : names.drop_front()) {
    size_t i = 0;
    while (i < n && i < other.size() && first[i] == other[i])
      ++i;
    n = i;
  }
  StringRef prefix = first.take_front(n);
  size_t dot = prefix.rfind('.');
  prefix = dot == StringRef::npos ? StringRef() : prefix.take_front(dot + 1);
  return (prefix + suffix).str();
}

/// Declares `loom.weight @<name> packed [parts...]` before the first part,
/// stored as its parts are (storedAlike).
WeightOp declarePacked(SymbolTable &symbols, ArrayRef<WeightOp> parts,
                       StringRef suffix) {
  SmallVector<StringRef> names;
  SmallVector<Attribute> refs;
  int64_t rows = 0;
  for (WeightOp w : llvm::to_vector(parts)) {
    names.push_back(w.getSymName());
    refs.push_back(FlatSymbolRefAttr::get(w.getSymNameAttr()));
    rows += w.getTensorType().getDimSize(0);
  }
  RankedTensorType first = WeightOp(parts.front()).getTensorType();
  SmallVector<int64_t> shape(first.getShape());
  shape[0] = rows;
  OpBuilder builder(WeightOp(parts.front()).getOperation());
  auto packed = WeightOp::create(
      builder, WeightOp(parts.front()).getLoc(),
      builder.getStringAttr(packedName(names, suffix)),
      TypeAttr::get(RankedTensorType::get(shape, first.getElementType())),
      builder.getArrayAttr(refs), WeightOp(parts.front()).getStorageAttr());
  symbols.insert(packed); // renames on a clash
  return packed;
}

struct FuseProjectionAttention
    : loom::impl::FuseProjectionAttentionPassBase<FuseProjectionAttention> {
  using FuseProjectionAttentionPassBase::FuseProjectionAttentionPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    SmallVector<AttentionOp> attentions;
    module.walk([&](AttentionOp op) { attentions.push_back(op); });
    for (AttentionOp attention : attentions) {
      std::optional<AttentionBlock> block = matchBlock(attention);
      if (!block || !storedAlike(*block, symbols))
        continue;
      fuse(*block, symbols);
    }
  }

  /// Whether q, k and v (and the q/k biases) will be stored alike (the
  /// weights' `storage`): the packed tensor has one type.
  static bool storedAlike(AttentionBlock &b, SymbolTable &symbols) {
    auto storage = [&](FlatSymbolRefAttr ref) {
      WeightOp w = symbols.lookup<WeightOp>(ref.getValue());
      return w && w.getStorage() ? *w.getStorage() : StringRef("f32");
    };
    StringRef q = storage(b.q.getWeightAttr());
    if (storage(b.k.getWeightAttr()) != q || storage(b.v.getWeightAttr()) != q)
      return false;
    return !b.qBias ||
           storage(b.qBias.getBiasAttr()) == storage(b.kBias.getBiasAttr());
  }

  void fuse(AttentionBlock &b, SymbolTable &symbols) {
    auto weight = [&](FlatSymbolRefAttr ref) {
      return symbols.lookup<WeightOp>(ref.getValue());
    };
    WeightOp packed =
        declarePacked(symbols,
                      {weight(b.q.getWeightAttr()), weight(b.k.getWeightAttr()),
                       weight(b.v.getWeightAttr())},
                      "wqkv");
    FlatSymbolRefAttr packedBias;
    if (b.qBias)
      packedBias = FlatSymbolRefAttr::get(
          declarePacked(symbols,
                        {weight(b.qBias.getBiasAttr()),
                         weight(b.kBias.getBiasAttr())},
                        "qk_bias")
              .getSymNameAttr());

    // v's bias stays its own weight: its stored rows follow q|k's.
    FlatSymbolRefAttr vBias = b.vBias ? b.vBias.getBiasAttr() : nullptr;

    OpBuilder builder(b.out);
    auto fused = FusedQkvAttentionOp::create(
        builder, b.attention.getLoc(), b.out.getType(), b.q.getInput(),
        b.attention.getPositions(), b.attention.getCache(),
        FlatSymbolRefAttr::get(packed.getSymNameAttr()), b.out.getWeightAttr(),
        b.attention.getNHeadsAttr(), b.attention.getNKvHeadsAttr(),
        b.attention.getHeadDimAttr(), b.qRope.getThetaAttr(), packedBias,
        /*placeholder_qkv=*/nullptr, b.qRope.getFreqFactorsAttr(), vBias,
        b.attention.getWindowAttr(), b.qRope.getScaleAttr());
    b.out.getResult().replaceAllUsesWith(fused.getResult());
    SmallVector<Operation *> dead = {b.out, b.attention, b.qRope, b.kRope};
    if (b.qBias)
      dead.append({b.qBias, b.kBias});
    if (b.vBias)
      dead.push_back(b.vBias);
    dead.append({b.q, b.k, b.v});
    for (Operation *op : dead)
      op->erase();
  }
};
} // namespace
