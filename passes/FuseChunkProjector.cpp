//===- FuseChunkProjector.cpp - placeholder rows carry layer 0's q|k|v ------===//
//
// See FuseChunkProjectorPass in Passes.td and docs/chunk-placeholders.md.
//
//===----------------------------------------------------------------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

namespace loom {
#define GEN_PASS_DEF_FUSECHUNKPROJECTORPASS
#include "passes/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;

namespace {
/// Names the runtime looks the programs up by (docs/chunk-placeholders.md).
constexpr StringLiteral kForward = "forward";
constexpr StringLiteral kProjector = "project_chunk";

/// The decoder's first use of its embedding rows: norm -> packed attention.
struct FirstUse {
  EmbedOp embed;
  RmsNormOp norm;
  FusedQkvAttentionOp attention;
};

/// Finds @forward's single embedding and the attention its norm feeds, or
/// says why not. That attention must be @forward's first, outside any
/// loop (the runtime checks the same of the dispatch).
FailureOr<FirstUse> matchFirstUse(func::FuncOp forward, std::string &why) {
  SmallVector<EmbedOp> embeds;
  forward.walk([&](EmbedOp op) { embeds.push_back(op); });
  if (embeds.size() != 1) {
    why = "@forward has " + std::to_string(embeds.size()) +
          " loom.embed ops, not one";
    return failure();
  }
  FirstUse use{embeds.front(), {}, {}};
  for (Operation *user : use.embed->getUsers()) {
    auto norm = dyn_cast<RmsNormOp>(user);
    if (!norm || !norm->hasOneUse())
      continue;
    auto attention = dyn_cast<FusedQkvAttentionOp>(*norm->getUsers().begin());
    if (!attention || attention.getInput() != norm.getResult())
      continue;
    use.norm = norm;
    use.attention = attention;
    break;
  }
  if (!use.attention) {
    why = "the embedding does not feed a loom.rms_norm whose only use is a "
          "loom.fused_qkv_attention (run loom-fuse-projection-attention "
          "first)";
    return failure();
  }
  Operation *first = nullptr;
  forward.walk([&](Operation *op) {
    if (!first && isa<FusedQkvAttentionOp, AttentionOp>(op))
      first = op;
  });
  if (first != use.attention.getOperation()) {
    why = "the attention the embedding's norm feeds is not @forward's first";
    return failure();
  }
  if (use.attention->getParentOfType<LoopOp>()) {
    why = "the attention the embedding's norm feeds is inside a loom.loop";
    return failure();
  }
  return use;
}

/// Columns of a row tensor (rank 2), or -1 for any other type.
int64_t columns(Value v) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  return type && type.getRank() == 2 ? type.getDimSize(1) : -1;
}

struct FuseChunkProjector
    : loom::impl::FuseChunkProjectorPassBase<FuseChunkProjector> {
  using FuseChunkProjectorPassBase::FuseChunkProjectorPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (!module->hasAttr("loom.refrag"))
      return; // not a REFRAG module: nothing to fuse, nothing to say
    auto forward = module.lookupSymbol<func::FuncOp>(kForward);
    auto projector = module.lookupSymbol<func::FuncOp>(kProjector);
    auto skip = [&](Location loc, const Twine &why) {
      emitRemark(loc) << "projector not fused into the decoder: " << why;
    };
    if (!forward || !projector || projector.getBody().empty())
      return skip(module.getLoc(), "the module lacks @forward or @" +
                                       kProjector.str());
    // Its result type changes: nothing in the module may refer to it (a
    // loom.chunk_placeholder or a call expects the projected row).
    if (!SymbolTable::symbolKnownUseEmpty(projector, module))
      return skip(projector.getLoc(),
                  "@" + kProjector.str() + " is referred to in the module");
    std::string why;
    FailureOr<FirstUse> use = matchFirstUse(forward, why);
    if (failed(use))
      return skip(forward.getLoc(), why);
    if (use->attention.getPlaceholderQkv())
      return; // already fused

    auto ret = cast<func::ReturnOp>(projector.getBody().front().getTerminator());
    const int64_t dim = columns(use->embed.getResult());
    if (ret.getNumOperands() != 1 || columns(ret.getOperand(0)) != dim)
      return skip(projector.getLoc(),
                  "@" + kProjector.str() + " does not return one row of the " +
                      "decoder's " + std::to_string(dim) + " columns");

    Value row = ret.getOperand(0);
    auto rowType = cast<RankedTensorType>(row.getType());
    FusedQkvAttentionOp attention = use->attention;
    const int64_t qkvCols =
        (attention.getNHeads() + 2 * attention.getNKvHeads()) *
        attention.getHeadDim();
    auto withCols = [&](int64_t cols) {
      return RankedTensorType::get({rowType.getDimSize(0), cols},
                                   rowType.getElementType());
    };

    OpBuilder builder(ret);
    Location loc = use->norm.getLoc();
    Value normed = RmsNormOp::create(builder, loc, rowType, row,
                                     use->norm.getWeightAttr(),
                                     use->norm.getEpsAttr());
    Value qkv = LinearOp::create(builder, attention.getLoc(), withCols(qkvCols),
                                 normed, attention.getQkvWeightAttr());
    Value fused = ConcatOp::create(builder, projector.getLoc(),
                                   withCols(dim + qkvCols), row, qkv);
    ret->setOperand(0, fused);
    projector.setType(FunctionType::get(&getContext(),
                                        projector.getArgumentTypes(),
                                        {fused.getType()}));
    attention.setPlaceholderQkv(true);
    emitRemark(projector.getLoc())
        << "projector fused with layer 0's " << use->norm.getWeight()
        << " and " << attention.getQkvWeight() << ": a placeholder row is "
        << dim << " + " << qkvCols << " floats";
  }
};
} // namespace
