//===- VerifyGraph.cpp - the frontend contract ------------------------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringSet.h"

namespace loom {
#define GEN_PASS_DEF_VERIFYGRAPHPASS
#include "passes/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;

namespace {
struct VerifyGraph : loom::impl::VerifyGraphPassBase<VerifyGraph> {
  using VerifyGraphPassBase::VerifyGraphPassBase;
  void runOnOperation() override;
};
} // namespace

void VerifyGraph::runOnOperation() {
  ModuleOp module = getOperation();
  auto model = module->getAttrOfType<DictionaryAttr>("loom.model");
  if (!model) {
    module.emitError("module has no 'loom.model' config dictionary");
    return signalPassFailure();
  }
  llvm::StringMap<int64_t> config;
  for (StringRef key : {"dim", "n_layers", "n_heads", "n_kv_heads",
                        "vocab_size", "max_seq"}) {
    auto value = model.getAs<IntegerAttr>(key);
    if (!value || value.getInt() <= 0) {
      module.emitError() << "loom.model needs a positive integer '" << key
                         << "'";
      return signalPassFailure();
    }
    config[key] = value.getInt();
  }

  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward) {
    module.emitError("module has no func.func @forward");
    return signalPassFailure();
  }
  if (forward.isExternal()) {
    forward.emitError("@forward is only declared: it needs a body");
    return signalPassFailure();
  }
  FunctionType fnType = forward.getFunctionType();
  auto isIds = [](Type t) {
    auto tt = dyn_cast<RankedTensorType>(t);
    return tt && tt.getRank() == 1 && tt.getElementType().isInteger(32);
  };
  // A third argument, an i32, is the iteration count of a looped block.
  bool shape = (fnType.getNumInputs() == 2 || fnType.getNumInputs() == 3) &&
               isIds(fnType.getInput(0)) && isIds(fnType.getInput(1)) &&
               fnType.getNumResults() == 1;
  if (shape && fnType.getNumInputs() == 3)
    shape = fnType.getInput(2).isInteger(32);
  if (!shape) {
    forward.emitError("@forward must take (tokens: tensor<?xi32>, positions: "
                      "tensor<?xi32>[, iterations: i32]) and return the "
                      "logits");
    return signalPassFailure();
  }
  auto ret = cast<func::ReturnOp>(forward.getBody().front().getTerminator());
  auto logits = ret.getOperand(0).getDefiningOp<LogitsOp>();
  if (!logits) {
    ret.emitError("@forward must return the result of loom.logits");
    return signalPassFailure();
  }
  int64_t vocab = cast<RankedTensorType>(logits.getType()).getDimSize(1);
  if (vocab != config["vocab_size"]) {
    logits.emitError() << "logits have " << vocab
                       << " columns but loom.model vocab_size is "
                       << config["vocab_size"];
    return signalPassFailure();
  }

  int64_t loops = 0;
  forward.walk([&](LoopOp) { ++loops; });
  if (loops > 1) {
    forward.emitError("@forward has ") << loops
        << " loom.loop ops: a model has at most one looped block";
    return signalPassFailure();
  }

  // Each cache belongs to one attention op, and spans the model's context.
  llvm::DenseMap<int64_t, Operation *> layers;
  WalkResult walk = forward.walk([&](KvCacheOp cache) -> WalkResult {
    if (!layers.try_emplace(cache.getLayer(), cache).second) {
      cache.emitError() << "layer " << cache.getLayer()
                        << " has more than one kv_cache";
      return WalkResult::interrupt();
    }
    if (cache.getType().getMaxSeq() != config["max_seq"]) {
      cache.emitError() << "kv_cache max_seq " << cache.getType().getMaxSeq()
                        << " differs from loom.model max_seq "
                        << config["max_seq"];
      return WalkResult::interrupt();
    }
    if (!cache->hasOneUse()) {
      cache.emitError() << "kv_cache of layer " << cache.getLayer()
                        << " must have exactly one attention user";
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  if (walk.wasInterrupted())
    return signalPassFailure();

  // Unused weights would still be packed into the artifact.
  llvm::StringSet<> used;
  module.walk([&](Operation *op) {
    for (NamedAttribute attr : op->getAttrs()) {
      if (auto ref = dyn_cast<FlatSymbolRefAttr>(attr.getValue()))
        used.insert(ref.getValue());
      else if (auto arr = dyn_cast<ArrayAttr>(attr.getValue()))
        for (Attribute a : arr)
          if (auto r = dyn_cast<FlatSymbolRefAttr>(a))
            used.insert(r.getValue());
    }
  });
  for (auto weight : module.getOps<WeightOp>()) {
    if (!used.contains(weight.getSymName())) {
      weight.emitError() << "weight @" << weight.getSymName()
                         << " is declared but never used";
      return signalPassFailure();
    }
  }
}
