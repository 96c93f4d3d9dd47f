//===- Passes.h - loom passes -----------------------------------------------===//
#ifndef LOOM_PASSES_PASSES_H
#define LOOM_PASSES_PASSES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "llvm/Support/raw_ostream.h"

namespace loom {

#define GEN_PASS_DECL
#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Physical KV caches a policy needs at r iterations of `core` layers:
/// fixed + min(ceil(core * r / divisor), cap or no cap).
struct KvPolicySlots {
  int64_t fixed = 0, core = 0, divisor = 1, cap = 0;
  int64_t at(int64_t r) const;
};

/// The slots of `policy` for a model with `before` attention layers before
/// its loop, `core` inside and `after` after; nullopt for an unknown name.
std::optional<KvPolicySlots> kvPolicySlots(llvm::StringRef policy,
                                           int64_t before, int64_t core,
                                           int64_t after);

/// The policies loom-plan-kv-reuse plans when none are named.
llvm::ArrayRef<llvm::StringLiteral> defaultKvPolicies();

/// Registers `loom-compile-pipeline` for loom-opt.
void registerLoomPipelines();

/// Builds the whole pipeline loomc runs: verify, fuse, plan, lower.
void buildCompilePipeline(mlir::OpPassManager &pm, int64_t maxTokens);

/// Writes the dispatch graph of `program` (a loom.program) as Graphviz DOT:
/// one node per dispatch, an edge per buffer a dispatch reads from the last
/// dispatch that wrote it.
mlir::LogicalResult printScheduleDot(mlir::Operation *program,
                                     llvm::raw_ostream &os);

} // namespace loom

#endif // LOOM_PASSES_PASSES_H
