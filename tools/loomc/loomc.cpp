//===- loomc.cpp - the Loom compiler driver ---------------------------------===//
//
//   loomc MODEL.bin --tokenizer TOK.bin -o MODEL.loom
//   loomc MODEL.bin --emit=mlir        (graph-level IR)
//   loomc MODEL.bin --emit=dispatch    (scheduled IR)
//   loomc MODEL.bin --emit=dot         (schedule graph)
//
// Frontend -> verify, fuse, plan memory, lower to dispatch -> artifact.
//
//===----------------------------------------------------------------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "frontends/llama2c/Llama2cImporter.h"
#include "passes/Passes.h"
#include "passes/Serialize/ArtifactWriter.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
namespace cl = llvm::cl;

namespace {
cl::OptionCategory loomcCategory("loomc options");
enum class Emit { Artifact, Mlir, Dispatch, Dot };

cl::opt<std::string> inputPath(cl::Positional, cl::desc("<checkpoint.bin>"), cl::cat(loomcCategory),
                               cl::Required);
cl::opt<std::string> tokenizerPath("tokenizer",
                                   cl::desc("llama2.c tokenizer.bin"), cl::cat(loomcCategory),
                                   cl::value_desc("path"));
cl::opt<std::string> outputPath("o", cl::desc("Output artifact"), cl::cat(loomcCategory),
                                cl::value_desc("path"));
cl::opt<Emit> emit(
    "emit", cl::desc("What to produce"), cl::cat(loomcCategory), cl::init(Emit::Artifact),
    cl::values(clEnumValN(Emit::Artifact, "artifact", "a .loom artifact"),
               clEnumValN(Emit::Mlir, "mlir", "graph-level loom IR"),
               clEnumValN(Emit::Dispatch, "dispatch",
                          "the scheduled dispatch form"),
               clEnumValN(Emit::Dot, "dot",
                          "the scheduled graph as Graphviz DOT")));
cl::opt<int64_t> maxTokens("max-tokens",
                           cl::desc("Rows per step the arena is planned for"), cl::cat(loomcCategory),
                           cl::init(64));
cl::opt<bool> quiet("quiet", cl::desc("No progress output"), cl::cat(loomcCategory), cl::init(false));

int fail(const std::string &msg) {
  llvm::errs() << "loomc: error: " << msg << "\n";
  return 1;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // libLLVM registers hundreds of backend options; show only loomc's.
  cl::HideUnrelatedOptions(loomcCategory);
  cl::ParseCommandLineOptions(argc, argv,
                              "loomc: compile a llama2.c checkpoint into a "
                              "Loom artifact\n");
  if (maxTokens <= 0)
    return fail("--max-tokens must be positive, got " +
                std::to_string(maxTokens));

  std::string error;
  auto ckpt = loom::llama2c::readCheckpoint(inputPath, error);
  if (!ckpt)
    return fail(error);
  if (maxTokens > ckpt->config.maxSeq)
    maxTokens = ckpt->config.maxSeq;

  MLIRContext ctx;
  // Diagnostics name the op and its location; dumping the whole function
  // after each one would bury the message.
  ctx.printOpOnDiagnostic(false);
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler diagHandler(sourceMgr, &ctx);
  OwningOpRef<ModuleOp> module =
      loom::llama2c::importCheckpoint(ctx, *ckpt, maxTokens);

  if (emit == Emit::Mlir) {
    if (failed(verify(*module)))
      return 1;
    module->print(llvm::outs());
    llvm::outs() << "\n";
    return 0;
  }

  // Everything past the graph needs the tokenizer (artifacts embed it).
  std::optional<loom::TokenizerData> tokenizer;
  if (emit == Emit::Artifact) {
    if (tokenizerPath.empty())
      return fail("--tokenizer is required to write an artifact");
    if (outputPath.empty())
      return fail("-o is required to write an artifact");
    tokenizer = loom::llama2c::readTokenizer(tokenizerPath,
                                             ckpt->config.vocabSize, error);
    if (!tokenizer)
      return fail(error);
  }

  auto pm = PassManager::on<ModuleOp>(&ctx);
  loom::buildCompilePipeline(pm, maxTokens);
  // The memory plan's remark is informational: --quiet hides it.
  ScopedDiagnosticHandler quietRemarks(&ctx, [&](Diagnostic &d) {
    return success(d.getSeverity() == DiagnosticSeverity::Remark && quiet);
  });
  if (failed(pm.run(*module)))
    return 1;

  if (emit == Emit::Dispatch) {
    module->print(llvm::outs());
    llvm::outs() << "\n";
    return 0;
  }
  if (emit == Emit::Dot)
    return failed(loom::printScheduleDot(
               module->lookupSymbol<loom::ProgramOp>("forward"), llvm::outs()))
               ? 1
               : 0;

  bool showProgress = !quiet;
  // Redraw a bar on a terminal; in a log, one line per quarter is enough.
  bool redraw = llvm::sys::Process::StandardErrIsDisplayed();
  int shown = -1;
  auto progress = [&](size_t done, size_t total, uint64_t bytes) {
    if (!showProgress)
      return;
    constexpr int width = 30;
    int filled = static_cast<int>(width * done / std::max<size_t>(total, 1));
    int step = redraw ? filled : filled * 4 / width;
    if (step == shown && done != total)
      return; // draw only when the bar moves
    shown = step;
    llvm::errs() << (redraw ? "\r" : "") << "loomc: packing weights ["
                 << std::string(filled, '#') << std::string(width - filled, '.')
                 << "] " << done << "/" << total << " tensors, "
                 << llvm::format("%.1f", bytes / 1048576.0) << " MiB";
    if (done == total || !redraw)
      llvm::errs() << "\n";
  };
  if (failed(loom::writeArtifact(*module, ckpt->weights, *tokenizer,
                                 outputPath, progress)))
    return 1;
  if (!quiet)
    llvm::errs() << "loomc: wrote " << outputPath << "\n";
  return 0;
}
