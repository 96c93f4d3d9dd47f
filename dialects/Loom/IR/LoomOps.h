//===- LoomOps.h - ops of the loom dialect --------------------------------===//
#ifndef LOOM_DIALECTS_LOOM_IR_LOOMOPS_H
#define LOOM_DIALECTS_LOOM_IR_LOOMOPS_H

#include "dialects/Loom/IR/LoomDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialects/Loom/IR/LoomOps.h.inc"

namespace loom {
/// Kernel names `loom.dispatch` accepts, in the order of the artifact's
/// Kernel enum (runtime/schema/loom_artifact.fbs).
llvm::ArrayRef<llvm::StringLiteral> dispatchKernelNames();
} // namespace loom

#endif // LOOM_DIALECTS_LOOM_IR_LOOMOPS_H
