//===- PlanKvReuse.cpp - KV cache placement per policy ----------------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringExtras.h"

namespace loom {
#define GEN_PASS_DEF_PLANKVREUSEPASS
#include "passes/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;

std::optional<KvPolicySlots> loom::kvPolicySlots(StringRef policy,
                                                 int64_t before, int64_t core,
                                                 int64_t after) {
  KvPolicySlots s;
  s.fixed = before + after;
  s.core = core;
  if (policy == "full" || policy == "skip" || policy == "latest-m4" ||
      policy == "available-m4" || policy == "always-last-m4")
    return s;
  if (policy == "compress-anchor") { // 8 iterations own theirs, one more reused
    s.cap = 9 * core;
    return s;
  }
  // compress-sN / compress-rN: N in 1..65536 written plainly (as the runtime
  // parses it: no sign, no leading zero).
  auto parseN = [](StringRef digits) -> std::optional<int64_t> {
    int64_t n = 0;
    if (digits.empty() || digits.size() > 5 || digits.front() == '0' ||
        !llvm::all_of(digits, llvm::isDigit) || digits.getAsInteger(10, n) ||
        n > 65536)
      return std::nullopt;
    return n;
  };
  if (policy.starts_with("compress-s"))
    if (std::optional<int64_t> n = parseN(policy.drop_front(10))) {
      s.cap = *n;
      return s;
    }
  if (policy.starts_with("compress-r"))
    if (std::optional<int64_t> n = parseN(policy.drop_front(10))) {
      s.divisor = *n;
      return s;
    }
  return std::nullopt;
}

int64_t KvPolicySlots::at(int64_t r) const {
  int64_t slots = (core * r + divisor - 1) / divisor;
  return fixed + (cap ? std::min(slots, cap) : slots);
}

ArrayRef<StringLiteral> loom::defaultKvPolicies() {
  static const StringLiteral names[] = {
      "full",        "latest-m4",   "always-last-m4", "compress-s4",
      "compress-s8", "compress-r4", "compress-anchor"};
  return names;
}

namespace {
struct PlanKvReuse : loom::impl::PlanKvReusePassBase<PlanKvReuse> {
  using PlanKvReusePassBase::PlanKvReusePassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fn = module.lookupSymbol<func::FuncOp>("forward");
    if (!fn || fn.isExternal()) {
      module.emitError("loom-plan-kv-reuse needs a func.func @forward with a body");
      return signalPassFailure();
    }
    // Count the attention layers before, inside and after the loop, and the
    // bytes one position takes in one cache (K and V, f32).
    int64_t before = 0, core = 0, after = 0, rowBytes = 0, maxSeq = 0;
    LoopOp loop;
    fn.walk<WalkOrder::PreOrder>([&](Operation *op) {
      if (auto l = dyn_cast<LoopOp>(op))
        loop = l;
      auto cache = dyn_cast<KvCacheOp>(op);
      if (!cache)
        return;
      KvCacheType t = cache.getType();
      rowBytes = std::max(rowBytes, 2 * t.getKvDim() * 4);
      maxSeq = std::max(maxSeq, t.getMaxSeq());
      if (!loop)
        ++before;
      else if (cache->getParentOfType<LoopOp>())
        ++core;
      else
        ++after;
    });

    Builder b(module.getContext());
    if (before + core + after == 0) { // nothing to place
      module->setAttr("loom.kv_plans", b.getArrayAttr({}));
      return;
    }
    SmallVector<std::string> names;
    if (!loop)
      names.push_back("full");
    else if (!policies.empty())
      names.assign(policies.begin(), policies.end());
    else
      for (StringRef p : defaultKvPolicies())
        names.push_back(p.str());
    int64_t r = iterations > 0 ? int64_t(iterations)
                : loop         ? loop.getDefaultIterationsAttr().getInt()
                               : 1;

    SmallVector<Attribute> plans;
    for (const std::string &name : names) {
      std::optional<KvPolicySlots> slots =
          loop ? kvPolicySlots(name, before, core, after)
               : KvPolicySlots{before, 0, 1, 0};
      if (!slots) {
        auto diag = module.emitError() << "unknown KV policy '" << name
                                       << "' (known: ";
        llvm::interleaveComma(defaultKvPolicies(), diag);
        diag << ", skip, available-m4; compress-sN and compress-rN take "
                "1 <= N <= 65536)";
        return signalPassFailure();
      }
      plans.push_back(b.getDictionaryAttr(
          {b.getNamedAttr("policy", b.getStringAttr(name)),
           b.getNamedAttr("fixed_slots", b.getI64IntegerAttr(slots->fixed)),
           b.getNamedAttr("core_divisor", b.getI64IntegerAttr(slots->divisor)),
           b.getNamedAttr("core_slot_cap", b.getI64IntegerAttr(slots->cap))}));
      int64_t caches = slots->at(r);
      (loop ? loop.getOperation() : fn.getOperation())->emitRemark()
          << "kv policy '" << name << "': " << caches << " caches at r = " << r
          << " (" << slots->fixed << " outside the loop + " << caches - slots->fixed
          << " core), " << caches * rowBytes << " bytes per token, "
          << caches * rowBytes * maxSeq << " bytes for " << maxSeq
          << " positions";
    }
    module->setAttr("loom.kv_plans", b.getArrayAttr(plans));
  }
};
} // namespace
