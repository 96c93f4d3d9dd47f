//===- Pipelines.cpp - the pass pipeline loomc runs -------------------------===//
#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

using namespace mlir;

void loom::buildCompilePipeline(OpPassManager &pm, int64_t maxTokens) {
  pm.addPass(createVerifyGraphPass());
  pm.addPass(createFuseProjectionAttentionPass());
  pm.addPass(createFuseChunkProjectorPass());
  pm.addPass(createFuseLinearBiasPass());
  pm.addPass(createPlanKvReusePass());
  pm.addPass(createPlanMemoryPass(PlanMemoryPassOptions{maxTokens}));
  pm.addPass(createLowerToDispatchPass());
}

namespace {
struct CompilePipelineOptions
    : public PassPipelineOptions<CompilePipelineOptions> {
  Option<int64_t> maxTokens{*this, "max-tokens",
                            llvm::cl::desc("Rows per step (0: the model's)"),
                            llvm::cl::init(0)};
};
} // namespace

void loom::registerLoomPipelines() {
  PassPipelineRegistration<CompilePipelineOptions>(
      "loom-compile-pipeline",
      "Verify, fuse, plan memory and lower to dispatch form (what loomc runs)",
      [](OpPassManager &pm, const CompilePipelineOptions &opts) {
        buildCompilePipeline(pm, opts.maxTokens);
      });
}
