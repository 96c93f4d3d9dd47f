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
