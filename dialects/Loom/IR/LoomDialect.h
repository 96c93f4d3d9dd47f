//===- LoomDialect.h - the loom dialect -----------------------------------===//
#ifndef LOOM_DIALECTS_LOOM_IR_LOOMDIALECT_H
#define LOOM_DIALECTS_LOOM_IR_LOOMDIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"

#include "dialects/Loom/IR/LoomDialect.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/Loom/IR/LoomTypes.h.inc"

#endif // LOOM_DIALECTS_LOOM_IR_LOOMDIALECT_H
