//===- LowerToDispatch.cpp - graph to loom.program --------------------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"

namespace loom {
#define GEN_PASS_DEF_LOWERTODISPATCHPASS
#include "passes/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;

namespace {
/// A rope's float parameters: theta, then its freq_factors if any, then
/// its scale if any (after head_dim / 2 factors, ones where it has none).
SmallVector<float> ropeParams(APFloat theta,
                              std::optional<ArrayRef<float>> factors,
                              FloatAttr scale, int64_t headDim) {
  SmallVector<float> params = {theta.convertToFloat()};
  if (factors)
    params.append(factors->begin(), factors->end());
  if (scale) {
    if (!factors)
      params.append(size_t(headDim / 2), 1.0f);
    params.push_back(float(scale.getValueAsDouble()));
  }
  return params;
}

struct Lowering {
  OpBuilder &b;
  Block *programBody;
  DenseMap<std::pair<int64_t, int64_t>, int64_t> bufferIds{}; // (offset, row)
  DenseMap<Value, int64_t> slotIds{};
  int64_t dispatches = 0;
  int64_t kvCaches = 0;
  // While lowering a loop body: the KV caches met so far inside it.
  std::optional<int64_t> loopLayers;
  // Function arguments that are rows: their input buffer.
  DenseMap<Value, int64_t> args{};

  int64_t buffer(Location loc, int64_t offset, int64_t rowElems) {
    auto [it, inserted] =
        bufferIds.try_emplace({offset, rowElems}, bufferIds.size());
    if (inserted) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(programBody);
      BufferOp::create(b, loc, it->second, offset, rowElems);
    }
    return it->second;
  }

  FailureOr<int64_t> bufferOf(Value v) {
    if (auto it = args.find(v); it != args.end())
      return it->second;
    // A loop's state argument lives in its init's slice.
    if (auto arg = dyn_cast<BlockArgument>(v))
      if (auto loop = dyn_cast<LoopOp>(arg.getOwner()->getParentOp()))
        return bufferOf(loop.getInit());
    Operation *def = v.getDefiningOp();
    auto offset = def ? def->getAttrOfType<IntegerAttr>("loom.offset")
                      : IntegerAttr();
    if (!offset) {
      (def ? def->emitError() : emitError(v.getLoc()))
          << "value has no arena offset: run loom-plan-memory first";
      return failure();
    }
    return buffer(v.getLoc(), offset.getInt(),
                  cast<RankedTensorType>(v.getType()).getDimSize(1));
  }

  LogicalResult dispatch(Operation *op, StringRef kernel, ValueRange ins,
                         ArrayRef<FlatSymbolRefAttr> weights,
                         ArrayRef<int64_t> iparams = {},
                         ArrayRef<float> fparams = {},
                         ArrayRef<int64_t> scratch = {}) {
    SmallVector<int64_t> inIds, outIds;
    for (Value v : ins) {
      FailureOr<int64_t> id = bufferOf(v);
      if (failed(id))
        return failure();
      inIds.push_back(*id);
    }
    FailureOr<int64_t> out = bufferOf(op->getResult(0));
    if (failed(out))
      return failure();
    outIds.push_back(*out);
    SmallVector<Attribute> weightAttrs(weights.begin(), weights.end());
    DispatchOp::create(
        b, op->getLoc(), b.getStringAttr(kernel),
        b.getDenseI64ArrayAttr(inIds), b.getDenseI64ArrayAttr(outIds),
        scratch.empty() ? DenseI64ArrayAttr() : b.getDenseI64ArrayAttr(scratch),
        weights.empty() ? ArrayAttr() : b.getArrayAttr(weightAttrs),
        iparams.empty() ? DenseI64ArrayAttr() : b.getDenseI64ArrayAttr(iparams),
        fparams.empty() ? DenseF32ArrayAttr() : b.getDenseF32ArrayAttr(fparams));
    ++dispatches;
    return success();
  }

  /// What the program's loop descriptor needs, filled by lowerLoop.
  struct LoopInfo {
    LoopOp op;
    int64_t bodyBegin, bodyEnd, state, nextState, layersBefore, layers;
  };
  std::optional<LoopInfo> loop;

  LogicalResult lowerLoop(LoopOp op) {
    if (loop)
      return op.emitError("a program has at most one looped block");
    FailureOr<int64_t> state = bufferOf(op.getInit());
    if (failed(state))
      return failure();
    LoopInfo info{op, dispatches, 0, *state, 0, kvCaches, 0};
    loopLayers = 0;
    for (Operation &inner : op.getBody().front()) {
      if (auto yield = dyn_cast<YieldOp>(inner)) {
        FailureOr<int64_t> next = bufferOf(yield.getValue());
        if (failed(next))
          return failure();
        info.nextState = *next;
        continue;
      }
      if (failed(lower(&inner)))
        return failure();
    }
    info.layers = *loopLayers;
    loopLayers.reset();
    info.bodyEnd = dispatches;
    loop = info;
    return success();
  }

  LogicalResult lower(Operation *op) {
    return TypeSwitch<Operation *, LogicalResult>(op)
        .Case([&](KvCacheOp cache) {
          int64_t id = slotIds.size();
          slotIds[cache.getResult()] = id;
          KvCacheType t = cache.getType();
          int64_t loopLayer = loopLayers ? (*loopLayers)++ : -1;
          if (!loopLayers)
            ++kvCaches;
          KvSlotOp::create(b, cache.getLoc(), id, cache.getLayer(),
                           t.getMaxSeq(), t.getKvHeads(), t.getHeadDim(),
                           loopLayer);
          return success();
        })
        .Case([&](EmbedOp e) {
          float scale = e.getScale().convertToFloat();
          return dispatch(e, "embed", {}, {e.getTableAttr()}, {},
                          scale == 1.0f ? ArrayRef<float>() : ArrayRef<float>(scale));
        })
        .Case([&](InitStateOp init) -> LogicalResult {
          // Filled by the runtime before the loop: a buffer, no dispatch.
          return failure(failed(bufferOf(init.getResult())));
        })
        .Case([&](AddRowBiasOp a) {
          return dispatch(a, "add_row_bias", a.getInput(), {a.getBiasAttr()});
        })
        .Case([&](ConcatOp c) {
          return dispatch(c, "concat", {c.getLhs(), c.getRhs()}, {});
        })
        .Case([&](LoopOp loop) { return lowerLoop(loop); })
        .Case([&](LayerNormOp n) {
          return dispatch(n, "layer_norm", n.getInput(),
                          {n.getWeightAttr(), n.getBiasAttr()}, {},
                          {n.getEps().convertToFloat()});
        })
        .Case([&](GeluOp g) {
          return dispatch(g, "gelu_tanh", g.getInput(), {});
        })
        .Case([&](SelfAttentionOp a) {
          return dispatch(a, "self_attention", {a.getQ(), a.getK(), a.getV()},
                          {},
                          {a.getNHeadsAttr().getInt(),
                           a.getHeadDimAttr().getInt()});
        })
        .Case([&](AddPositionsOp a) {
          return dispatch(a, "add_positions", a.getInput(), {a.getTableAttr()});
        })
        .Case([&](TakeRowOp t) {
          return dispatch(t, "take_row", t.getInput(), {},
                          {t.getRowAttr().getInt()});
        })
        .Case([&](RmsNormOp n) {
          return dispatch(n, "rms_norm", n.getInput(), {n.getWeightAttr()}, {},
                          {n.getEps().convertToFloat()});
        })
        .Case([&](LinearOp l) {
          SmallVector<FlatSymbolRefAttr> weights = {l.getWeightAttr()};
          if (l.getBiasAttr())
            weights.push_back(l.getBiasAttr());
          return dispatch(l, "matmul", l.getInput(), weights, {0});
        })
        .Case([&](RopeOp r) {
          int64_t cols = cast<RankedTensorType>(r.getType()).getDimSize(1);
          return dispatch(r, "rope", r.getInput(), {},
                          {cols, int64_t(r.getHeadDim())},
                          ropeParams(r.getTheta(), r.getFreqFactors(),
                                     r.getScaleAttr(), r.getHeadDim()));
        })
        .Case([&](AttentionOp a) {
          SmallVector<int64_t> params = {
              slotIds.lookup(a.getCache()), int64_t(a.getNHeads()),
              int64_t(a.getNKvHeads()), int64_t(a.getHeadDim())};
          if (IntegerAttr window = a.getWindowAttr())
            params.push_back(window.getInt());
          return dispatch(a, "attention", {a.getQ(), a.getK(), a.getV()}, {},
                          params);
        })
        .Case([&](FusedQkvAttentionOp f) -> LogicalResult {
          auto offsets =
              f->getAttrOfType<DenseI64ArrayAttr>("loom.scratch_offsets");
          if (!offsets || offsets.size() != 2)
            return f.emitError(
                "fused attention has no scratch offsets: run loom-plan-memory "
                "first");
          int64_t hd = f.getHeadDim(), nh = f.getNHeads(),
                  nkv = f.getNKvHeads();
          SmallVector<int64_t> scratch = {
              buffer(f.getLoc(), offsets[0], (nh + 2 * nkv) * hd),
              buffer(f.getLoc(), offsets[1], nh * hd)};
          SmallVector<FlatSymbolRefAttr> weights = {f.getQkvWeightAttr(),
                                                    f.getOutWeightAttr()};
          if (f.getQkBiasAttr())
            weights.push_back(f.getQkBiasAttr());
          if (f.getVBiasAttr())
            weights.push_back(f.getVBiasAttr());
          // iparams: slot, heads, kv heads, head dim, accumulate (0), then
          // 1 when placeholder rows bring their q|k|v (placeholder_qkv),
          // then the sliding window (placeholder_qkv written as 0 before it).
          SmallVector<int64_t> params = {slotIds.lookup(f.getCache()), nh,
                                         nkv, hd, 0};
          IntegerAttr window = f.getWindowAttr();
          if (f.getPlaceholderQkv() || window)
            params.push_back(f.getPlaceholderQkv() ? 1 : 0);
          if (window)
            params.push_back(window.getInt());
          return dispatch(f, "fused_qkv_attention", f.getInput(), weights,
                          params,
                          ropeParams(f.getTheta(), f.getFreqFactors(),
                                     f.getRopeScaleAttr(), hd),
                          scratch);
        })
        .Case([&](SiluMulOp s) {
          return dispatch(s, "silu_mul", {s.getGate(), s.getUp()}, {});
        })
        .Case([&](AddOp a) {
          return dispatch(a, "add", {a.getLhs(), a.getRhs()}, {});
        })
        .Case([&](LogitsOp l) {
          return dispatch(l, "logits", l.getInput(), {l.getWeightAttr()});
        })
        .Default([&](Operation *other) -> LogicalResult {
          return other->emitError()
                 << "loom-lower-to-dispatch cannot lower '" << other->getName()
                 << "'";
        });
  }
};

struct LowerToDispatch
    : loom::impl::LowerToDispatchPassBase<LowerToDispatch> {
  using LowerToDispatchPassBase::LowerToDispatchPassBase;

  /// Appends the loom.loop_desc of the program's looped block. The latent
  /// buffer is what the tail's first dispatch (ln_f) writes from the state.
  LogicalResult emitLoopDesc(Lowering &lowering, ProgramOp program) {
    Lowering::LoopInfo &info = *lowering.loop;
    LoopOp op = info.op;
    SmallVector<DispatchOp> all(program.getBody().front().getOps<DispatchOp>());
    if (info.bodyEnd >= int64_t(all.size()) ||
        !llvm::is_contained(all[info.bodyEnd].getInputs(), info.state))
      return op.emitError("the op after a loom.loop must read its state "
                          "(the normalisation the tail starts with)");
    int64_t latent = all[info.bodyEnd].getOutputs()[0];
    float stateStd = 0.0f, stateScale = 1.0f;
    if (auto init = op.getInit().getDefiningOp<InitStateOp>()) {
      stateStd = init.getStd().convertToFloat();
      stateScale = init.getScale().convertToFloat();
    } else {
      return op.emitError("a loom.loop's init must be a loom.init_state");
    }
    OpBuilder b(program.getContext());
    b.setInsertionPointToEnd(&program.getBody().front());
    LoopDescOp::create(
        b, op.getLoc(), info.bodyBegin, info.bodyEnd, int64_t(all.size()),
        info.state, info.nextState, latent, info.layersBefore, info.layers,
        op.getDefaultIterationsAttr().getInt(),
        op.getMaxIterationsAttr().getInt(), op.getExit(),
        op.getThreshold(), llvm::APFloat(stateStd), llvm::APFloat(stateScale),
        bool(op.getCount()));
    return success();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward || forward.isExternal()) {
      module.emitError("loom-lower-to-dispatch needs a func.func @forward with a body");
      return signalPassFailure();
    }
    // Every function with a body becomes a program of the same name.
    for (auto fn : llvm::make_early_inc_range(module.getOps<func::FuncOp>()))
      if (!fn.isExternal() && failed(lowerFunction(fn)))
        return signalPassFailure();
  }

  LogicalResult lowerFunction(func::FuncOp fn) {
    auto arena = fn->getAttrOfType<IntegerAttr>("loom.arena_bytes");
    auto rows = fn->getAttrOfType<IntegerAttr>("loom.max_tokens");
    if (!arena || !rows)
      return fn.emitError() << "@" << fn.getSymName()
                            << " has no memory plan: run loom-plan-memory first";
    OpBuilder b(fn);
    auto program = ProgramOp::create(b, fn.getLoc(), fn.getSymNameAttr(),
                                     arena, rows, b.getI64IntegerAttr(0),
                                     IntegerAttr());
    Block *body = new Block();
    program.getBody().push_back(body);
    b.setInsertionPointToEnd(body);
    Lowering lowering{b, body};
    // A function taking rows (not token ids) reads them from an input buffer.
    auto argOffsets = fn->getAttrOfType<DenseI64ArrayAttr>("loom.arg_offsets");
    for (BlockArgument arg : fn.getArguments()) {
      if (!argOffsets || argOffsets[arg.getArgNumber()] < 0)
        continue;
      if (program.getInputBufferAttr())
        return fn.emitError("a program takes at most one row input");
      program.setInputBufferAttr(b.getI64IntegerAttr(lowering.buffer(
          arg.getLoc(), argOffsets[arg.getArgNumber()],
          cast<RankedTensorType>(arg.getType()).getDimSize(1))));
      lowering.args[arg] = program.getInputBufferAttr().getInt();
    }
    for (Operation &op : fn.getBody().front()) {
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        FailureOr<int64_t> out = lowering.bufferOf(ret.getOperand(0));
        if (failed(out))
          return failure();
        program.setLogitsBuffer(*out);
        continue;
      }
      if (failed(lowering.lower(&op)))
        return failure();
    }
    if (lowering.loop && failed(emitLoopDesc(lowering, program)))
      return failure();
    // Declarations first, in id order, so the program reads top-down.
    SmallVector<BufferOp> buffers(body->getOps<BufferOp>());
    llvm::sort(buffers, [](BufferOp a, BufferOp b) { return a.getId() > b.getId(); });
    for (BufferOp buffer : buffers)
      buffer->moveBefore(&body->front());
    fn.erase();
    return success();
  }
};
} // namespace
