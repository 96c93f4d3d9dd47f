//===- LoomDialect.cpp - the loom dialect ---------------------------------===//
#include "dialects/Loom/IR/LoomDialect.h"
#include "dialects/Loom/IR/LoomOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace loom;

#include "dialects/Loom/IR/LoomDialect.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/Loom/IR/LoomTypes.cpp.inc"

void LoomDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/Loom/IR/LoomOps.cpp.inc"
      >();
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/Loom/IR/LoomTypes.cpp.inc"
      >();
}

LogicalResult KvCacheType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t maxSeq, int64_t kvHeads,
                                  int64_t headDim, Type elementType) {
  if (maxSeq <= 0)
    return emitError() << "kv_cache max_seq must be positive, got " << maxSeq;
  if (kvHeads <= 0)
    return emitError() << "kv_cache kv_heads must be positive, got "
                       << kvHeads;
  if (headDim <= 0)
    return emitError() << "kv_cache head_dim must be positive, got "
                       << headDim;
  if (!elementType.isF32())
    return emitError() << "kv_cache element_type must be f32, got "
                       << elementType;
  return success();
}
