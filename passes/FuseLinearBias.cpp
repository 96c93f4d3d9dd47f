//===- FuseLinearBias.cpp - bias adds into the projection -------------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"

namespace loom {
#define GEN_PASS_DEF_FUSELINEARBIASPASS
#include "passes/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;

namespace {
struct FuseLinearBias : loom::impl::FuseLinearBiasPassBase<FuseLinearBias> {
  using FuseLinearBiasPassBase::FuseLinearBiasPassBase;

  void runOnOperation() override {
    SmallVector<AddRowBiasOp> adds;
    getOperation().walk([&](AddRowBiasOp add) { adds.push_back(add); });
    for (AddRowBiasOp add : adds) {
      auto linear = add.getInput().getDefiningOp<LinearOp>();
      if (!linear || linear.getBias() || !linear->hasOneUse())
        continue;
      linear.setBiasAttr(add.getBiasAttr());
      add.getResult().replaceAllUsesWith(linear.getResult());
      add->erase();
    }
  }
};
} // namespace
