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
  RopeOp qRope, kRope;
  AttentionOp attention;
};

/// Matches the block around `attention`; every intermediate must have a single
/// use so erasing it changes nothing else.
std::optional<AttentionBlock> matchBlock(AttentionOp attention) {
  AttentionBlock b;
  b.attention = attention;
  b.qRope = attention.getQ().getDefiningOp<RopeOp>();
  b.kRope = attention.getK().getDefiningOp<RopeOp>();
  b.v = attention.getV().getDefiningOp<LinearOp>();
  if (!b.qRope || !b.kRope || !b.v)
    return std::nullopt;
  b.q = b.qRope.getInput().getDefiningOp<LinearOp>();
  b.k = b.kRope.getInput().getDefiningOp<LinearOp>();
  if (!b.q || !b.k)
    return std::nullopt;
  Value x = b.q.getInput();
  if (b.k.getInput() != x || b.v.getInput() != x)
    return std::nullopt;
  Value pos = attention.getPositions();
  for (RopeOp rope : {b.qRope, b.kRope})
    if (rope.getPositions() != pos ||
        rope.getHeadDim() != attention.getHeadDim())
      return std::nullopt;
  if (b.qRope.getTheta() != b.kRope.getTheta())
    return std::nullopt;
  for (Operation *op : {b.q.getOperation(), b.k.getOperation(),
                        b.qRope.getOperation(), b.kRope.getOperation(),
                        b.v.getOperation(), attention.getOperation()})
    if (!op->getResult(0).hasOneUse())
      return std::nullopt;
  b.out = dyn_cast<LinearOp>(*attention->getUsers().begin());
  if (!b.out)
    return std::nullopt;
  return b;
}

/// "layers.0.wq", "layers.0.wk", "layers.0.wv" -> "layers.0.wqkv".
std::string packedName(StringRef q, StringRef k, StringRef v) {
  size_t n = 0;
  while (n < q.size() && n < k.size() && n < v.size() && q[n] == k[n] &&
         q[n] == v[n])
    ++n;
  StringRef prefix = q.take_front(n);
  size_t dot = prefix.rfind('.');
  prefix = dot == StringRef::npos ? StringRef() : prefix.take_front(dot + 1);
  return (prefix + "wqkv").str();
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
      if (!block)
        continue;
      fuse(*block, symbols, module);
    }
  }

  void fuse(AttentionBlock &b, SymbolTable &symbols, ModuleOp module) {
    auto wq = symbols.lookup<WeightOp>(b.q.getWeight());
    auto wk = symbols.lookup<WeightOp>(b.k.getWeight());
    auto wv = symbols.lookup<WeightOp>(b.v.getWeight());
    int64_t rows = wq.getTensorType().getDimSize(0) +
                   wk.getTensorType().getDimSize(0) +
                   wv.getTensorType().getDimSize(0);
    int64_t d = wq.getTensorType().getDimSize(1);

    OpBuilder builder(wq);
    MLIRContext *ctx = module.getContext();
    auto packedType = RankedTensorType::get({rows, d}, Float32Type::get(ctx));
    auto parts = builder.getArrayAttr({FlatSymbolRefAttr::get(wq.getSymNameAttr()),
                                       FlatSymbolRefAttr::get(wk.getSymNameAttr()),
                                       FlatSymbolRefAttr::get(wv.getSymNameAttr())});
    auto packed = WeightOp::create(
        builder, wq.getLoc(),
        builder.getStringAttr(
            packedName(wq.getSymName(), wk.getSymName(), wv.getSymName())),
        TypeAttr::get(packedType), parts);
    symbols.insert(packed); // renames on a clash

    builder.setInsertionPoint(b.out);
    auto fused = FusedQkvAttentionOp::create(
        builder, b.attention.getLoc(), b.out.getType(), b.q.getInput(),
        b.attention.getPositions(), b.attention.getCache(),
        FlatSymbolRefAttr::get(packed.getSymNameAttr()), b.out.getWeightAttr(),
        b.attention.getNHeadsAttr(), b.attention.getNKvHeadsAttr(),
        b.attention.getHeadDimAttr(), b.qRope.getThetaAttr());
    b.out.getResult().replaceAllUsesWith(fused.getResult());
    for (Operation *op :
         {b.out.getOperation(), b.attention.getOperation(),
          b.qRope.getOperation(), b.kRope.getOperation(), b.q.getOperation(),
          b.k.getOperation(), b.v.getOperation()})
      op->erase();
  }
};
} // namespace
