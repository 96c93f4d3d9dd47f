//===- ScheduleDot.cpp - the dispatch graph as Graphviz DOT -----------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Passes.h"

#include "llvm/ADT/DenseMap.h"

using namespace mlir;
using namespace loom;

LogicalResult loom::printScheduleDot(Operation *op, llvm::raw_ostream &os) {
  auto program = dyn_cast<ProgramOp>(op);
  if (!program)
    return op->emitError("expected a loom.program");
  os << "digraph \"" << program.getSymName() << "\" {\n"
     << "  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n";
  llvm::DenseMap<int64_t, int64_t> lastWriter; // buffer id -> dispatch index
  int64_t index = 0;
  for (auto dispatch : program.getBody().front().getOps<DispatchOp>()) {
    os << "  d" << index << " [label=\"" << index << ": "
       << dispatch.getKernel();
    if (auto weights = dispatch.getWeights())
      for (Attribute w : *weights)
        os << "\\n@" << cast<FlatSymbolRefAttr>(w).getValue();
    os << "\"];\n";
    for (int64_t in : dispatch.getInputs()) {
      auto it = lastWriter.find(in);
      if (it != lastWriter.end())
        os << "  d" << it->second << " -> d" << index << " [label=\"b" << in
           << "\"];\n";
    }
    for (int64_t out : dispatch.getOutputs())
      lastWriter[out] = index;
    ++index;
  }
  os << "}\n";
  return success();
}
