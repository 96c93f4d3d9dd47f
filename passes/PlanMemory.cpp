//===- PlanMemory.cpp - liveness-based arena offsets ------------------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

#include <functional>
#include <map>

namespace loom {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "passes/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;

namespace {
constexpr int64_t kAlign = 64;

/// First-fit allocator over one address range; tracks the high-water mark.
class Arena {
public:
  int64_t allocate(int64_t size) {
    size = (size + kAlign - 1) / kAlign * kAlign;
    int64_t offset = 0;
    for (auto [start, len] : live_) { // ordered by start
      if (offset + size <= start)
        break;
      offset = std::max(offset, start + len);
    }
    live_[offset] = size;
    peak_ = std::max(peak_, offset + size);
    return offset;
  }
  void release(int64_t offset) { live_.erase(offset); }
  int64_t peak() const { return peak_; }

private:
  std::map<int64_t, int64_t> live_;
  int64_t peak_ = 0;
};

bool isRowTensor(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && t.getRank() == 2 && t.getElementType().isF32();
}

int64_t rowBytes(Value v) {
  return cast<RankedTensorType>(v.getType()).getDimSize(1) * 4;
}

struct PlanMemory : loom::impl::PlanMemoryPassBase<PlanMemory> {
  using PlanMemoryPassBase::PlanMemoryPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    int64_t rows = maxTokens;
    if (rows == 0) {
      rows = 64;
      if (auto model = module->getAttrOfType<DictionaryAttr>("loom.model"))
        if (auto mt = model.getAs<IntegerAttr>("max_tokens"))
          rows = mt.getInt();
    }
    if (rows <= 0) {
      module.emitError() << "max-tokens must be positive, got " << rows;
      return signalPassFailure();
    }
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward || forward.isExternal()) {
      module.emitError("loom-plan-memory needs a func.func @forward with a body");
      return signalPassFailure();
    }
    // Every function becomes a program (REFRAG's chunk encoder, projector and
    // policy beside the decoder); each is planned on its own.
    for (auto fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal())
        plan(fn, rows);
  }

  void plan(func::FuncOp fn, int64_t rows) {
    // Ops in execution order, a loop's body right after the loop op. Values
    // a loop body reads from outside, and the loop's state (init, block
    // argument and result: one slice), stay live to the function's end: the
    // ops after the loop may run between iterations (an adaptive exit
    // evaluates them after each one), so they must not reuse those slices.
    SmallVector<Operation *> order;
    llvm::DenseMap<Operation *, int64_t> index;
    std::function<void(Block &)> visit = [&](Block &block) {
      for (Operation &op : block) {
        index[&op] = order.size();
        order.push_back(&op);
        if (auto loop = dyn_cast<LoopOp>(op))
          visit(loop.getBody().front());
      }
    };
    visit(fn.getBody().front());

    auto root = [](Value v) -> Value {
      if (auto arg = dyn_cast<BlockArgument>(v))
        if (auto loop = dyn_cast<LoopOp>(arg.getOwner()->getParentOp()))
          return loop.getInit();
      if (auto loop = v.getDefiningOp<LoopOp>())
        return loop.getInit();
      return v;
    };
    const int64_t end = order.size() - 1;
    llvm::DenseMap<Value, int64_t> lastUse;
    for (Operation *op : order) {
      for (Value operand : op->getOperands()) {
        if (!isRowTensor(operand))
          continue;
        int64_t use = index[op];
        auto loop = op->getParentOfType<LoopOp>();
        if (isa<LoopOp>(op) ||
            (loop && !loop.getBody().isAncestor(operand.getParentRegion())))
          use = end;
        Value r = root(operand);
        lastUse[r] = std::max(lastUse.lookup(r), use);
      }
      // The normalised state after a loop (its first reader's result) is
      // read back by the runtime after the step, for warm starts.
      if (auto loop = dyn_cast<LoopOp>(op))
        for (Operation *user : loop->getUsers())
          if (user->getNumResults() == 1)
            lastUse[user->getResult(0)] = end;
    }

    Arena arena;
    llvm::DenseMap<Value, int64_t> offsetOf;
    int64_t naive = 0, values = 0;
    Builder b(fn.getContext());
    // Row arguments (a program's input rows) are there from the start.
    SmallVector<int64_t> argOffsets;
    for (BlockArgument arg : fn.getArguments()) {
      if (!isRowTensor(arg)) {
        argOffsets.push_back(-1);
        continue;
      }
      int64_t bytes = rows * rowBytes(arg);
      naive += (bytes + kAlign - 1) / kAlign * kAlign;
      ++values;
      offsetOf[arg] = arena.allocate(bytes);
      argOffsets.push_back(offsetOf[arg]);
      if (!lastUse.count(arg))
        arena.release(offsetOf[arg]);
    }
    if (llvm::any_of(argOffsets, [](int64_t o) { return o >= 0; }))
      fn->setAttr("loom.arg_offsets", b.getDenseI64ArrayAttr(argOffsets));
    for (Operation *opPtr : order) {
      Operation &op = *opPtr;
      int64_t i = index[&op];
      SmallVector<Value> dying;
      for (Value operand : op.getOperands()) {
        Value r = root(operand);
        if (offsetOf.count(r) && lastUse[r] == i && !llvm::is_contained(dying, r))
          dying.push_back(r);
      }
      // A loop's result is its state slice: nothing to allocate.
      if (auto loop = dyn_cast<LoopOp>(op)) {
        op.setAttr("loom.offset", b.getI64IntegerAttr(offsetOf[loop.getInit()]));
        llvm::erase(dying, Value(loop.getInit())); // lives on as the result
        continue;
      }
      if (op.getNumResults() == 1 && isRowTensor(op.getResult(0))) {
        Value result = op.getResult(0);
        int64_t bytes = rows * rowBytes(result);
        naive += (bytes + kAlign - 1) / kAlign * kAlign;
        ++values;
        auto rope = dyn_cast<RopeOp>(op);
        if (rope && llvm::is_contained(dying, rope.getInput())) {
          // The rope kernel rotates in place: hand the input's slice over.
          offsetOf[result] = offsetOf[rope.getInput()];
          llvm::erase(dying, Value(rope.getInput()));
        } else {
          offsetOf[result] = arena.allocate(bytes);
        }
        op.setAttr("loom.offset", b.getI64IntegerAttr(offsetOf[result]));
        if (!lastUse.count(result))
          dying.push_back(result);
      }
      if (auto fused = dyn_cast<FusedQkvAttentionOp>(op)) {
        int64_t hd = fused.getHeadDim();
        int64_t qkv = rows * (fused.getNHeads() + 2 * fused.getNKvHeads()) *
                      hd * 4;
        int64_t attn = rows * fused.getNHeads() * hd * 4;
        int64_t s0 = arena.allocate(qkv), s1 = arena.allocate(attn);
        naive += qkv + attn;
        op.setAttr("loom.scratch_offsets", b.getDenseI64ArrayAttr({s0, s1}));
        arena.release(s0);
        arena.release(s1);
      }
      for (Value v : dying)
        arena.release(offsetOf[v]);
    }
    fn->setAttr("loom.arena_bytes", b.getI64IntegerAttr(arena.peak()));
    fn->setAttr("loom.max_tokens", b.getI64IntegerAttr(rows));
    fn.emitRemark() << "arena peak " << arena.peak() << " bytes for "
                    << values << " values at " << rows
                    << " rows (without reuse: " << naive << " bytes)";
  }
};
} // namespace
