//===- loomc.cpp - the Loom compiler driver -------------------------------===//
//
//   loomc MODEL.bin --tokenizer TOK.bin -o MODEL.loom      (llama2.c)
//   loomc HF_LLAMA_DIR -o MODEL.loom                       (config.json,
//                                   model.safetensors, tokenizer.json)
//   loomc MODEL.gguf -o MODEL.loom                         (llama.cpp GGUF;
//                                   F32/F16/BF16 and ggml's Q4_0..Q6_K)
//   loomc HUGINN_DIR --format=huginn -o MODEL.loom         (config.json +
//                                                          model.safetensors)
//   loomc MODEL --emit=mlir | dispatch | dot | report
//   loomc ... --weight-type=bf16 --target=cuda             (bf16 matrices;
//                                                          recorded target)
//   loomc huginn/config.json --shapes-only --emit=report   (plan, no weights)
//
// Frontend -> verify, fuse, plan KV reuse, plan memory, lower to dispatch ->
// artifact.
//
//===----------------------------------------------------------------------===//
#include "dialects/Loom/IR/LoomOps.h"
#include "frontends/gguf/GgufImporter.h"
#include "frontends/hf/HfLlamaImporter.h"
#include "frontends/huginn/HuginnImporter.h"
#include "frontends/llama2c/Llama2cImporter.h"
#include "frontends/refrag/RefragImporter.h"
#include "frontends/safetensors/SafetensorsReader.h"
#include "passes/Passes.h"
#include "passes/Serialize/ArtifactWriter.h"

#include "loom/artifact_format.h"
#include "loom/chat_template.h"
#include "loom/version.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"
#include <set>

using namespace mlir;
namespace cl = llvm::cl;

namespace {
cl::OptionCategory loomcCategory("loomc options");
enum class Emit { Artifact, Mlir, Dispatch, Dot, Report };
enum class Format { Auto, Llama2c, HfLlama, Gguf, Huginn, Refrag };

cl::opt<std::string> inputPath(
    cl::Positional,
    cl::desc("<checkpoint.bin | model.gguf | HF folder | config.json>"),
    cl::cat(loomcCategory));
cl::opt<std::string> decoderPath(
    "decoder", cl::desc("REFRAG: the llama2.c decoder checkpoint"),
    cl::value_desc("path"), cl::cat(loomcCategory));
cl::opt<std::string> bundlePath(
    "bundle",
    cl::desc("REFRAG: safetensors with the chunk encoder, projector, policy"),
    cl::value_desc("path"), cl::cat(loomcCategory));
cl::opt<Format> format(
    "format", cl::desc("Checkpoint format"), cl::cat(loomcCategory),
    cl::init(Format::Auto),
    cl::values(clEnumValN(Format::Auto, "auto",
                          "a folder or a .json: by config.json's model_type "
                          "(llama, mistral, qwen2, phi3, huginn_raven); a "
                          "GGUF file; else llama2c"),
               clEnumValN(Format::Llama2c, "llama2c", "llama2.c .bin"),
               clEnumValN(Format::HfLlama, "hf-llama",
                          "Hugging Face Llama: config.json, model.safetensors "
                          "(or shards), tokenizer.json"),
               clEnumValN(Format::Gguf, "gguf",
                          "llama.cpp GGUF (llama architecture, SentencePiece "
                          "vocabulary; F32/F16/BF16, Q4_0, Q4_1, Q5_0, Q5_1, "
                          "Q8_0, Q2_K..Q6_K)"),
               clEnumValN(Format::Huginn, "huginn",
                          "Huginn/raven config.json + model.safetensors"),
               clEnumValN(Format::Refrag, "refrag",
                          "REFRAG: --decoder + --tokenizer + --bundle")));
cl::opt<std::string> tokenizerPath("tokenizer",
                                   cl::desc("llama2.c tokenizer.bin (for "
                                            "hf-llama: instead of the "
                                            "folder's tokenizer.json)"),
                                   cl::value_desc("path"),
                                   cl::cat(loomcCategory));
cl::opt<std::string> chatTemplatePath(
    "chat-template",
    cl::desc("Jinja chat template to store in the artifact (instead of the "
             "model's: tokenizer_config.json, chat_template.jinja, GGUF "
             "tokenizer.chat_template)"),
    cl::value_desc("path"), cl::cat(loomcCategory));
cl::opt<std::string> outputPath("o", cl::desc("Output artifact"),
                                cl::value_desc("path"), cl::cat(loomcCategory));
cl::opt<Emit> emit(
    "emit", cl::desc("What to produce"), cl::cat(loomcCategory),
    cl::init(Emit::Artifact),
    cl::values(clEnumValN(Emit::Artifact, "artifact", "a .loom artifact"),
               clEnumValN(Emit::Mlir, "mlir", "graph-level loom IR"),
               clEnumValN(Emit::Dispatch, "dispatch",
                          "the scheduled dispatch form"),
               clEnumValN(Emit::Dot, "dot",
                          "the scheduled graph as Graphviz DOT"),
               clEnumValN(Emit::Report, "report",
                          "parameters, memory plan and KV bytes per policy")));
cl::opt<int64_t> maxTokens("max-tokens",
                           cl::desc("Rows per step the arena is planned for"),
                           cl::init(128), cl::cat(loomcCategory));
cl::opt<int64_t> contextLength(
    "context-length",
    cl::desc("Positions the KV caches hold (default: the checkpoint's, e.g. "
             "a GGUF's llama.context_length)"),
    cl::init(0), cl::cat(loomcCategory));
cl::opt<bool> shapesOnly(
    "shapes-only",
    cl::desc("Huginn: plan from config.json alone (no weights; --emit "
             "mlir/dispatch/dot/report only)"),
    cl::init(false), cl::cat(loomcCategory));
cl::opt<int64_t> reportIterations(
    "iterations", cl::desc("Looped models: iterations the report is for "
                           "(default: the model's mean recurrence)"),
    cl::init(0), cl::cat(loomcCategory));
cl::opt<bool> quiet("quiet", cl::desc("No progress output"), cl::init(false),
                    cl::cat(loomcCategory));
// Strings checked by hand (not cl::values) so a wrong value gets an error
// that lists the accepted ones.
cl::opt<std::string> weightTypeName(
    "weight-type",
    cl::desc("How the artifact stores weights: f32; bf16 or f16 (matrices "
             "and tables, rounded to nearest even: half the bytes); q8_0 or "
             "q4_0 "
             "(matrices whose rows are whole blocks of 32, in ggml's blocks: "
             "about a quarter / an eighth of the bytes); q2_k .. q6_k "
             "(ggml's K blocks of 256, as llama.cpp quantizes them: 2.6 to "
             "6.6 bits a value; other row lengths q8_0); q4_k_m or q5_k_m "
             "(llama.cpp's mixes: q6_k for the classifier and some layers' "
             "attn_v and ffn_down); keep (each tensor as "
             "the checkpoint stores it where the runtime reads that: bf16, "
             "f16, q8_0, q4_0, and a GGUF's Q2_K..Q6_K; else f32). Norm "
             "weights and biases stay f32. "
             "Default: keep"),
    cl::value_desc("f32|bf16|f16|q8_0|q4_0|q2_k..q6_k|q4_k_m|q5_k_m|keep"),
    cl::init(""), cl::cat(loomcCategory));
cl::opt<std::string> targetName(
    "target",
    cl::desc("Device recorded in the artifact: cpu (default) or cuda (the "
             "same dispatch form; the artifact runs on either)"),
    cl::value_desc("cpu|cuda"), cl::init("cpu"), cl::cat(loomcCategory));

int fail(const std::string &msg) {
  llvm::errs() << "loomc: error: " << msg << "\n";
  return 1;
}

std::string humanBytes(double bytes) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::format(u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
  return s;
}

/// --emit=report: parameters, weights, the memory plan and the KV plan per
/// policy, from a module in dispatch form.
int printReport(ModuleOp module, int64_t iterations,
                loom::WeightType weightType, const loom::WeightTable &sources) {
  auto model = module->getAttrOfType<DictionaryAttr>("loom.model");
  auto program = module.lookupSymbol<loom::ProgramOp>("forward");
  auto plans = module->getAttrOfType<ArrayAttr>("loom.kv_plans");
  if (!model || !program || !plans)
    return fail("internal: the module lacks its plan");
  auto get = [&](StringRef key) {
    auto a = model.getAs<IntegerAttr>(key);
    return a ? a.getInt() : 0;
  };
  // Weight bytes: the tensors the artifact stores (packed weights once, their
  // parts not again), as stored (what either runtime holds); parameters as
  // the frontend counted them, else the sources.
  int64_t storedBytes = 0, sourceParams = 0;
  llvm::StringSet<> stored;
  program.walk([&](loom::DispatchOp d) {
    if (auto ws = d.getWeights())
      for (Attribute w : *ws)
        stored.insert(cast<FlatSymbolRefAttr>(w).getValue());
  });
  // The stored types other than f32, and whether a matrix stays f32.
  std::set<loom::WeightType> quantized;
  bool f32Matrix = false;
  for (auto w : module.getOps<loom::WeightOp>()) {
    if (stored.contains(w.getSymName())) {
      SmallVector<const loom::WeightSource *> parts;
      SmallVector<StringRef> names;
      if (auto packed = w.getPacked())
        for (Attribute part : *packed)
          names.push_back(cast<FlatSymbolRefAttr>(part).getValue());
      else
        names.push_back(w.getSymName());
      for (StringRef name : names)
        if (auto it = sources.find(name); it != sources.end())
          parts.push_back(&it->second);
      const loom::WeightType t = loom::storedWeightType(
          w.getTensorType(),
          loom::requestedWeightType(module, w.getSymName(), weightType), parts);
      storedBytes += loom::storedWeightBytes(w.getTensorType(), t);
      if (t != loom::WeightType::F32)
        quantized.insert(t);
      else if (w.getTensorType().getRank() >= 2)
        f32Matrix = true;
    }
    if (!w.getPacked())
      sourceParams += w.getTensorType().getNumElements();
  }
  int64_t params = get("parameters") ? get("parameters") : sourceParams;
  int64_t kvRow = 0, maxSeq = get("max_seq");
  for (auto slot : program.getBody().front().getOps<loom::KvSlotOp>())
    kvRow = std::max<int64_t>(kvRow, 2 * slot.getKvHeadsAttr().getInt() *
                                         slot.getHeadDimAttr().getInt() * 4);
  loom::LoopDescOp loop;
  for (auto l : program.getBody().front().getOps<loom::LoopDescOp>())
    loop = l;
  int64_t r = iterations > 0 ? iterations
              : loop        ? loop.getDefaultIterationsAttr().getInt()
                            : 1;
  auto &os = llvm::outs();
  auto arch = model.getAs<StringAttr>("architecture");
  os << "model: " << (arch ? arch.getValue() : "llama") << ", dim "
     << get("dim") << ", " << get("n_layers") << " layers";
  if (loop)
    os << " (" << loop.getLayersBeforeAttr().getInt() << " before, "
       << loop.getLayersPerIterationAttr().getInt() << " looped x r, the rest after)";
  os << ", " << get("n_heads") << " heads, vocab " << get("vocab_size")
     << ", context " << maxSeq << "\n";
  os << "parameters: " << params << " ("
     << (params >= 1e9 ? llvm::format("%.3fB", params / 1e9)
                       : llvm::format("%.3fM", params / 1e6))
     << ")\n";
  if (quantized.empty()) {
    os << "weights: " << humanBytes(storedBytes) << " f32\n";
  } else {
    std::string types;
    for (loom::WeightType t : quantized)
      types +=
          (types.empty() ? "" : "+") + std::string(loom::weightTypeName(t));
    os << "weights: " << humanBytes(storedBytes) << " " << types << " ("
       << storedBytes << " bytes; "
       << (f32Matrix ? "the other tensors" : "1-D tensors")
       << " f32; the kernels read them as stored)\n";
  }
  os << "activations: " << humanBytes(program.getArenaBytesAttr().getInt())
     << " arena at " << program.getMaxTokensAttr().getInt() << " rows per step\n";
  os << "kv cache (f32, " << kvRow << " bytes per position per layer)";
  if (loop)
    os << ", r = " << r;
  os << ":\n";
  os << llvm::format("  %-16s %8s %14s %16s %16s\n", "policy", "caches",
                     "bytes/token", "kv at context", "peak memory");
  for (Attribute a : plans) {
    auto plan = cast<DictionaryAttr>(a);
    int64_t core = loop ? loop.getLayersPerIterationAttr().getInt() : 0;
    loom::KvPolicySlots slots{
        plan.getAs<IntegerAttr>("fixed_slots").getInt(), core,
        plan.getAs<IntegerAttr>("core_divisor").getInt(),
        plan.getAs<IntegerAttr>("core_slot_cap").getInt()};
    int64_t caches = slots.at(r);
    int64_t perToken = caches * kvRow;
    int64_t atContext = perToken * maxSeq;
    int64_t peak =
        storedBytes + program.getArenaBytesAttr().getInt() + atContext;
    os << llvm::format("  %-16s %8lld %14lld %16s %16s\n",
                       plan.getAs<StringAttr>("policy").getValue().str().c_str(),
                       (long long)caches, (long long)perToken,
                       humanBytes(atContext).c_str(), humanBytes(peak).c_str());
  }
  // REFRAG: a placeholder takes one KV slot for k context tokens.
  if (auto refrag = module->getAttrOfType<DictionaryAttr>("loom.refrag")) {
    int64_t perPosition = 0;
    for (auto slot : program.getBody().front().getOps<loom::KvSlotOp>())
      perPosition += 2 * slot.getKvHeadsAttr().getInt() *
                     slot.getHeadDimAttr().getInt() * 4;
    int64_t maxChunk = refrag.getAs<IntegerAttr>("max_chunk_len").getInt();
    int64_t context = maxSeq - 1; // all but BOS
    os << "chunk placeholders (REFRAG): " << perPosition
       << " KV bytes per decoder position; a context of " << context
       << " tokens (all compressed, p = 0):\n";
    os << llvm::format("  %-10s %10s %16s %10s\n", "chunk k", "positions",
                       "kv bytes", "vs full");
    os << llvm::format("  %-10s %10lld %16lld %10s\n", "full",
                       (long long)(1 + context),
                       (long long)((1 + context) * perPosition), "1.00x");
    for (int64_t k : {4, 8, 16, 32}) {
      if (k > maxChunk)
        break;
      int64_t positions = 1 + (context + k - 1) / k;
      os << llvm::format("  %-10lld %10lld %16lld %9.2fx\n", (long long)k,
                         (long long)positions,
                         (long long)(positions * perPosition),
                         double(1 + context) / positions);
    }
    // The placeholder row (project_chunk's output): what a chunk store
    // keeps per chunk beside the encoder_dim floats of its embedding.
    auto projector = module.lookupSymbol<loom::ProgramOp>("project_chunk");
    int64_t dim = 0, rowElems = 0;
    if (auto config = module->getAttrOfType<DictionaryAttr>("loom.model"))
      if (auto d = config.getAs<IntegerAttr>("dim"))
        dim = d.getInt();
    if (projector)
      for (auto b : projector.getBody().front().getOps<loom::BufferOp>())
        if (b.getIdAttr().getInt() == projector.getLogitsBufferAttr().getInt())
          rowElems = b.getRowElemsAttr().getInt();
    if (rowElems > 0) {
      int64_t encoderDim = refrag.getAs<IntegerAttr>("encoder_dim").getInt();
      os << "placeholder row: " << rowElems << " floats";
      if (rowElems > dim && dim > 0)
        os << " (the model dim " << dim << " + layer 0's q|k|v "
           << rowElems - dim << ", loom-fuse-chunk-projector)";
      os << "; a chunk store holds " << (encoderDim + rowElems) * 4
         << " bytes per chunk (embedding + row)\n";
    }
  }
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // libLLVM registers hundreds of backend options; show only loomc's.
  cl::HideUnrelatedOptions(loomcCategory);
  cl::SetVersionPrinter([](llvm::raw_ostream &os) {
    os << "loomc " LOOM_VERSION_STRING " (MLIR/LLVM " LLVM_VERSION_STRING
          "), writes artifact format "
       << loom::kArtifactFormatVersion << "\n";
  });
  cl::ParseCommandLineOptions(argc, argv,
                              "loomc: compile a model checkpoint into a Loom "
                              "artifact\n");
  if (maxTokens <= 0)
    return fail("--max-tokens must be positive, got " +
                std::to_string(maxTokens));
  if (reportIterations < 0)
    return fail("--iterations must be positive (0: the model's default), got " +
                std::to_string(reportIterations));
  loom::ArtifactOptions artifactOptions;
  // The types a user may ask for, by their --weight-type spelling.
  bool knownType = false;
  for (loom::WeightType t :
       {loom::WeightType::F32, loom::WeightType::BF16, loom::WeightType::F16,
        loom::WeightType::Q8_0, loom::WeightType::Q4_0, loom::WeightType::Q2_K,
        loom::WeightType::Q3_K, loom::WeightType::Q4_K, loom::WeightType::Q5_K,
        loom::WeightType::Q6_K, loom::WeightType::Q4_K_M,
        loom::WeightType::Q5_K_M, loom::WeightType::Keep})
    if (weightTypeName == loom::weightTypeName(t)) {
      artifactOptions.weightType = t;
      knownType = true;
    }
  if (weightTypeName.getNumOccurrences() && !knownType)
    return fail(
        "--weight-type must be f32, bf16, f16, q8_0, q4_0, q2_k, q3_k, q4_k, "
        "q5_k, q6_k, q4_k_m, q5_k_m or keep, got '" +
        weightTypeName + "'");
  if (targetName != "cpu" && targetName != "cuda")
    return fail("--target must be cpu or cuda, got '" + targetName + "'");
  artifactOptions.target = targetName;
  Format fmt = format;
  if (fmt == Format::Auto && (!bundlePath.empty() || !decoderPath.empty()))
    fmt = Format::Refrag;
  if (fmt != Format::Refrag && (!bundlePath.empty() || !decoderPath.empty()))
    return fail("--decoder and --bundle belong to --format=refrag");
  if (fmt == Format::Refrag) {
    if (decoderPath.empty() || bundlePath.empty())
      return fail("--format=refrag needs --decoder and --bundle (and "
                  "--tokenizer to write an artifact)");
    if (!inputPath.empty())
      return fail("--format=refrag takes --decoder and --bundle, not a "
                  "positional checkpoint");
  } else if (inputPath.empty()) {
    return fail("no checkpoint given (loomc --help shows the forms)");
  }
  if (fmt == Format::Auto) {
    if (loom::gguf::looksLikeGguf(inputPath) ||
        llvm::StringRef(inputPath).ends_with(".gguf")) {
      fmt = Format::Gguf;
    } else if (!llvm::sys::fs::is_directory(inputPath) &&
               !llvm::StringRef(inputPath).ends_with(".json")) {
      fmt = Format::Llama2c;
    } else {
      std::string error;
      std::optional<std::string> type =
          loom::hf::readModelType(inputPath, error);
      if (!type)
        return fail(error + " (--format names the checkpoint format)");
      if (*type == "llama" || *type == "mistral" || *type == "qwen2" ||
          *type == "phi3")
        fmt = Format::HfLlama;
      else if (*type == "huginn_raven")
        fmt = Format::Huginn;
      else
        return fail("'" + inputPath + "': config.json's model_type '" +
                    loom::safetensors::printable(*type) +
                    "' is not supported (Loom reads llama, mistral, qwen2, "
                    "phi3 and huginn_raven)");
    }
  }
  if (shapesOnly && fmt != Format::Huginn)
    return fail("--shapes-only needs a Huginn config.json (--format=huginn)");
  if (shapesOnly && emit == Emit::Artifact)
    return fail("--shapes-only has no weights to write: use --emit=report, "
                "mlir, dispatch or dot");

  MLIRContext ctx;
  // Diagnostics name the op and its location; dumping the whole function
  // after each one would bury the message.
  ctx.printOpOnDiagnostic(false);
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler diagHandler(sourceMgr, &ctx);

  constexpr int64_t kMaxContext = int64_t(1) << 24;
  if (contextLength.getNumOccurrences() &&
      (contextLength < 1 || contextLength > kMaxContext))
    return fail("--context-length must be between 1 and 16777216, got " +
                std::to_string(contextLength));
  // --context-length replaces the checkpoint's context; past it the model
  // meets positions it was not trained on, which Loom cannot judge. Either
  // way the context must stay within what the runtime and the KV plan take.
  auto setContext = [&](int64_t &maxSeq) {
    if (contextLength.getNumOccurrences()) {
      if (contextLength > maxSeq)
        llvm::errs() << "loomc: warning: --context-length " << contextLength
                     << " is longer than the checkpoint's " << maxSeq
                     << " positions\n";
      maxSeq = contextLength;
    }
    return maxSeq <= kMaxContext;
  };
  auto contextTooLong = [&](int64_t maxSeq) {
    return fail("the checkpoint's context of " + std::to_string(maxSeq) +
                " positions is more than Loom plans for (16777216): set "
                "--context-length");
  };
  std::string error;
  OwningOpRef<ModuleOp> module;
  loom::WeightTable weights;
  std::optional<loom::TokenizerData> tokenizer;
  int64_t vocab = 0;
  int64_t bosId = 1, eosId = 2; // the Llama graph's
  // The Llama graph, from any of its three checkpoint forms.
  auto useLlama = [&](loom::llama2c::Checkpoint &ckpt) {
    if (!setContext(ckpt.config.maxSeq))
      return false;
    maxTokens = std::min<int64_t>(maxTokens, ckpt.config.maxSeq);
    module = loom::llama2c::importCheckpoint(ctx, ckpt, maxTokens);
    weights = std::move(ckpt.weights);
    vocab = ckpt.config.vocabSize;
    bosId = ckpt.config.bosId;
    eosId = ckpt.config.eosId;
    return true;
  };
  if (fmt == Format::Llama2c) {
    auto ckpt = loom::llama2c::readCheckpoint(inputPath, error);
    if (!ckpt)
      return fail(error);
    if (!useLlama(*ckpt))
      return error.empty() ? contextTooLong(ckpt->config.maxSeq) : fail(error);
  } else if (fmt == Format::HfLlama) {
    auto ckpt = loom::hf::readLlamaCheckpoint(inputPath, error);
    if (!ckpt)
      return fail(error);
    if (!useLlama(*ckpt))
      return error.empty() ? contextTooLong(ckpt->config.maxSeq) : fail(error);
  } else if (fmt == Format::Gguf) {
    auto gguf = loom::gguf::readLlama(inputPath, error);
    if (!gguf)
      return fail(error);
    if (!useLlama(gguf->checkpoint))
      return error.empty() ? contextTooLong(gguf->checkpoint.config.maxSeq)
                           : fail(error);
    tokenizer = std::move(gguf->tokenizer); // --tokenizer replaces it
  } else if (fmt == Format::Refrag) {
    auto bundle = loom::refrag::readBundle(decoderPath, bundlePath, error);
    if (!bundle)
      return fail(error);
    if (!setContext(bundle->decoder.config.maxSeq))
      return contextTooLong(bundle->decoder.config.maxSeq);
    maxTokens = std::min<int64_t>(maxTokens, bundle->decoder.config.maxSeq);
    module = loom::refrag::importBundle(ctx, *bundle, maxTokens);
    weights = std::move(bundle->decoder.weights);
    vocab = bundle->decoder.config.vocabSize;
  } else {
    auto ckpt = loom::huginn::readCheckpoint(inputPath, shapesOnly, error);
    if (!ckpt)
      return fail(error);
    if (!setContext(ckpt->config.maxSeq))
      return contextTooLong(ckpt->config.maxSeq);
    maxTokens = std::min<int64_t>(maxTokens, ckpt->config.maxSeq);
    module = loom::huginn::importCheckpoint(ctx, *ckpt, maxTokens);
    weights = std::move(ckpt->weights);
    vocab = ckpt->config.vocabSize;
  }

  // Unless told, keep the checkpoint's encodings where the runtime reads
  // them (bf16, Q8_0, Q4_0 matrices): an f32 artifact of a bf16 or
  // quantized checkpoint would only multiply the bytes.
  if (!weightTypeName.getNumOccurrences())
    artifactOptions.weightType = loom::WeightType::Keep;

  // Each weight's storage other than f32, for the passes that pack weights
  // (loom.weight's `storage`: they pack only weights stored alike). Not for
  // --target=cuda: the CUDA backend decodes every block format to f32 at
  // upload, so splitting a layer's q/k/v would only cost it the fused QKV
  // GEMV; such a pack is stored f32 instead (docs/cuda.md).
  if (!weights.empty() && artifactOptions.target == "cpu")
    for (auto w : module->getOps<loom::WeightOp>()) {
      auto it = weights.find(w.getSymName());
      if (it == weights.end() || w.getPacked())
        continue;
      const loom::WeightSource *source = &it->second;
      const loom::WeightType t = loom::storedWeightType(
          w.getTensorType(),
          loom::requestedWeightType(*module, w.getSymName(),
                                    artifactOptions.weightType),
          source);
      if (t != loom::WeightType::F32)
        w.setStorage(loom::weightTypeName(t));
    }

  if (emit == Emit::Mlir) {
    if (failed(verify(*module)))
      return 1;
    module->print(llvm::outs());
    llvm::outs() << "\n";
    return 0;
  }

  if (emit == Emit::Artifact) {
    if (outputPath.empty())
      return fail("-o is required to write an artifact");
    if (fmt == Format::HfLlama && tokenizerPath.empty()) {
      // The folder's tokenizer.json.
      llvm::SmallString<256> json(inputPath);
      if (!llvm::sys::fs::is_directory(inputPath))
        json = llvm::sys::path::parent_path(inputPath);
      llvm::sys::path::append(json, "tokenizer.json");
      if (!llvm::sys::fs::exists(json))
        return fail("no tokenizer.json next to the checkpoint ('" +
                    std::string(json) +
                    "'): pass a llama2.c tokenizer with --tokenizer");
      std::vector<std::string> warnings;
      tokenizer = loom::hf::readTokenizerJson(std::string(json), vocab, bosId,
                                              eosId, warnings, error);
      if (!tokenizer)
        return fail(error);
      llvm::SmallString<256> folder(llvm::sys::path::parent_path(json));
      if (!loom::hf::readChatTemplate(std::string(folder), *tokenizer, warnings,
                                      error))
        return fail(error);
      // Chat models end their turns with a special token of their own, as
      // GGUF's rule says (llama.cpp's): it ends a generation too.
      loom::llama2c::addStopIds(*module,
                                loom::llama2c::endOfTurnIds(*tokenizer));
      for (const std::string &w : warnings)
        llvm::errs() << "loomc: warning: " << w << "\n";
    } else if (fmt != Format::Huginn && fmt != Format::Gguf &&
               tokenizerPath.empty()) {
      return fail("--tokenizer is required to write an artifact");
    }
    if (!tokenizerPath.empty()) {
      tokenizer = loom::llama2c::readTokenizer(tokenizerPath, vocab, error);
      if (!tokenizer)
        return fail(error);
      if ((fmt == Format::HfLlama || fmt == Format::Gguf) && bosId != 1)
        return fail("--tokenizer '" + tokenizerPath +
                    "' (llama2.c's) begins sequences with id 1, but the "
                    "checkpoint's config has bos_token_id " +
                    std::to_string(bosId));
    }
    if (!chatTemplatePath.empty()) {
      if (!tokenizer)
        return fail("--chat-template needs a tokenizer: this model has none");
      auto buffer = llvm::MemoryBuffer::getFile(chatTemplatePath);
      if (!buffer)
        return fail("--chat-template '" + chatTemplatePath +
                    "': " + buffer.getError().message());
      tokenizer->chatTemplate = (*buffer)->getBuffer().str();
      tokenizer->chatBosToken.reset();
      tokenizer->chatEosToken.reset();
      if (tokenizer->chatTemplate.empty())
        return fail("--chat-template '" + chatTemplatePath + "' is empty");
    }
    if (tokenizer && !tokenizer->chatTemplate.empty()) {
      // Parsed here too, so that a template Loom cannot render is reported
      // now rather than when someone chats.
      std::string problem =
          loom::ChatTemplate::parseError(tokenizer->chatTemplate);
      if (!problem.empty()) {
        if (!chatTemplatePath.empty())
          return fail("--chat-template '" + chatTemplatePath + "': " + problem);
        llvm::errs() << "loomc: warning: the model's chat template cannot be "
                        "used by Loom ("
                     << problem
                     << "); it is stored, but loom-run --chat will refuse it "
                        "(give another with loomc or loom-run "
                        "--chat-template)\n";
      }
    }
  }

  auto pm = PassManager::on<ModuleOp>(&ctx);
  loom::buildCompilePipeline(pm, maxTokens);
  // The plans' remarks are informational: --quiet and --emit=report hide
  // them (the report says the same in a table).
  ScopedDiagnosticHandler quietRemarks(&ctx, [&](Diagnostic &d) {
    return success(d.getSeverity() == DiagnosticSeverity::Remark &&
                   (quiet || emit == Emit::Report));
  });
  if (failed(pm.run(*module)))
    return 1;

  switch (emit) {
  case Emit::Dispatch:
    module->print(llvm::outs());
    llvm::outs() << "\n";
    return 0;
  case Emit::Dot:
    return failed(loom::printScheduleDot(
               module->lookupSymbol<loom::ProgramOp>("forward"), llvm::outs()))
               ? 1
               : 0;
  case Emit::Report:
    return printReport(*module, reportIterations, artifactOptions.weightType,
                       weights);
  default:
    break;
  }

  bool showProgress = !quiet;
  // Redraw a bar on a terminal; in a log, one line per quarter is enough.
  bool redraw = llvm::sys::Process::StandardErrIsDisplayed();
  int shown = -1;
  artifactOptions.progress = [&](size_t done, size_t total, uint64_t bytes) {
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
  if (failed(loom::writeArtifact(*module, weights,
                                 tokenizer ? &*tokenizer : nullptr, outputPath,
                                 artifactOptions)))
    return 1;
  if (!quiet)
    llvm::errs() << "loomc: wrote " << outputPath << "\n";
  return 0;
}
