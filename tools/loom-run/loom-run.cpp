// loom-run: runs a compiled Loom artifact with the runtime alone (no MLIR or
// LLVM): text generation, ids in/out, logits dumps, benchmarks and traces.
//
// stdout carries only the result (the text exactly as llama2.c's run.c
// prints it, the ids, or the benchmark lines); diagnostics go to stderr.
// Every error prints "loom-run: <message>" and exits 1.
#include "loom/artifact_format.h"
#include "loom/chat_template.h"
#include "loom/chunk_store.h"
#include "loom/loom.h"
#include "loom/refrag.h"
#include "loom/runtime.h"
#include "loom/sampler.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "--dump-logits writes the host's floats as little-endian");

constexpr const char *kUsage =
    "usage: loom-run ARTIFACT [options]\n"
    "\n"
    "Generates text with a compiled Loom artifact (.loom).\n"
    "\n"
    "options:\n"
    "  --prompt TEXT         prompt text, encoded with BOS where the\n"
    "                        vocabulary adds one (default: empty)\n"
    "  --special             special tokens' text in --prompt (and with\n"
    "                        --tokenize) is those tokens, e.g. Llama 3's\n"
    "                        <|eot_id|>; without it, plain text\n"
    "  --prompt-ids LIST     comma-separated token ids to feed instead, "
    "e.g. 1,403,407\n"
    "  --chat                --prompt is a user's message: the model's chat\n"
    "                        template makes the prompt (special tokens and\n"
    "                        all), and only the reply is printed\n"
    "  --system TEXT         with --chat: a system message before it\n"
    "  --messages FILE       with --chat: the conversation as JSON (- for\n"
    "                        stdin): [{\"role\": ..., \"content\": ...}, ...], "
    "or\n"
    "                        {\"messages\": [...], other template variables\n"
    "                        such as \"tools\"}\n"
    "  --chat-template FILE  with --chat: this Jinja template instead of the\n"
    "                        artifact's\n"
    "  --render-chat         with --chat: print the rendered prompt (and with\n"
    "                        --print-ids its token ids) and exit\n"
    "  --interactive         with --chat: after the reply to --prompt (if\n"
    "                        any), each line of stdin is the user's next\n"
    "                        message and gets a reply; the KV cache is kept\n"
    "                        across turns\n"
    "  --save-messages FILE  with --chat: write the conversation, replies\n"
    "                        included, as JSON for --messages\n"
    "  --steps N             generate at most N new tokens (default 256)\n"
    "  --temperature T       0 = greedy (default 1.0)\n"
    "  --top-p P             nucleus sampling cut, in (0, 1] (default 0.9)\n"
    "  --seed S              sampler seed, also of a looped model's initial\n"
    "                        states (default: the current time)\n"
    "  --threads N           worker threads, 1..1024 (default: all)\n"
    "  --print-ids           print the generated ids instead of text\n"
    "  --bench               measure prefill and decode speed instead\n"
    "  --trace FILE          write a Chrome trace of every dispatch\n"
    "  --dump-logits FILE    write float32 logits [positions, vocab] of every\n"
    "                        fed position\n"
    "  --device cpu|cuda     where to run (default: the artifact's target,\n"
    "                        loomc --target; cpu for older artifacts)\n"
    "  --cuda-device N       which GPU with --device cuda (default 0)\n"
    "  --help                show this help\n"
    "  --version             show the versions of loom-run and libloomrt\n"
    "  --info                print what the artifact holds (model, sizes,\n"
    "                        programs) and exit; nothing runs\n"
    "  --tokenize            read texts from stdin, one a line, and print\n"
    "                        each one's token ids (BOS first where the\n"
    "                        vocabulary adds one) on a line; with --prompt,\n"
    "                        that text's ids (newlines and all); nothing runs\n"
    "\n"
    "REFRAG artifacts (loomc --format=refrag) only:\n"
    "  --context TEXT        retrieved passage, fed as compressed chunk\n"
    "                        placeholders before the prompt; the context and\n"
    "                        the prompt are then encoded without BOS (the\n"
    "                        sequence starts with one BOS)\n"
    "  --context-ids LIST    the passage as comma-separated token ids\n"
    "  --chunk-size K        tokens per chunk, 1..the encoder's max chunk\n"
    "                        length (default: that length)\n"
    "  --expand-policy P     feed the ceil(P x chunks) best-scored chunks as\n"
    "                        their tokens, P in [0, 1] (default: none)\n"
    "  --expand-chunks LIST  feed these chunks (0-based, e.g. 0,2) as their\n"
    "                        tokens instead\n"
    "  --encode-chunks FILE  encode a corpus (one passage a line) into a "
    "chunk\n"
    "                        store: with -o OUT and --chunk-size K\n"
    "  -o, --output FILE     the chunk store --encode-chunks writes\n"
    "  --chunks FILE         take the context from this chunk store ...\n"
    "  --passages LIST       ... its passages in this order (0-based, e.g.\n"
    "                        0,3,7), instead of --context\n"
    "  --bench-ttft          measure time to first token of a synthetic\n"
    "                        context, plain against compressed, per chunk\n"
    "                        size (--chunk-size 8,16,32) and expand fraction\n"
    "  --context-tokens N    its context length (default 2048)\n"
    "  --question-tokens N   its question length (default 16)\n"
    "  --expand-fractions LIST\n"
    "                        its policy fractions (default 0,0.25)\n"
    "\n"
    "looped (recurrent-depth) models only:\n"
    "  --iterations N|adaptive\n"
    "                        iterations per token step, 1..1024 (default: "
    "the\n"
    "                        model's), or an adaptive exit\n"
    "  --exit-criterion NAME adaptive exit by kl, minp-kl, entropy-diff,\n"
    "                        latent-diff, cosine or argmax-stability\n"
    "  --exit-threshold T    its threshold (defaults: kl 1e-3, minp-kl 1e-5,\n"
    "                        entropy-diff 1e-3, latent-diff 0.03, cosine "
    "1e-3,\n"
    "                        argmax-stability 5)\n"
    "  --exit-kl T           same as --exit-criterion kl --exit-threshold T\n"
    "  --max-iterations N    cap of an adaptive exit, 1..1024 (default: the\n"
    "                        model's, or 32)\n"
    "  --kv-policy NAME      full (default), skip, latest-m4, available-m4,\n"
    "                        always-last-m4, compress-sN, compress-rN,\n"
    "                        compress-anchor\n"
    "  --init-state random|zero\n"
    "                        initial latent state (default random, drawn "
    "from\n"
    "                        --seed)\n"
    "  --warm-start          start each token step from the previous one's\n"
    "                        latent state\n"
    "  --print-steps         print the iterations of each token step on a\n"
    "                        last stdout line\n"
    "\n"
    "Generation stops at BOS or EOS (not printed), after N tokens, or when "
    "the\n"
    "context is full.\n";

// A command-line or run-time failure; main prints it and exits 1.
struct Failure {
  std::string message;
};

[[noreturn]] void fail(const std::string &message) { throw Failure{message}; }

struct Options {
  std::string artifact;
  std::optional<std::string> prompt;
  std::optional<std::string> prompt_ids;
  int64_t steps = 256;
  float temperature = 1.0f;
  float top_p = 0.9f;
  std::optional<uint64_t> seed;
  int threads = 0;
  bool print_ids = false;
  bool bench = false;
  bool tokenize = false;
  bool special = false; // --special
  // Chat: --chat with --prompt (and --system), or --messages.
  bool chat = false;
  std::optional<std::string> system;
  std::optional<std::string> messages;
  std::optional<std::string> chat_template;
  bool render_chat = false;
  bool interactive = false;                 // --interactive
  std::optional<std::string> save_messages; // --save-messages FILE
  bool info = false;
  std::string trace;
  std::string dump_logits;
  std::string device; // "" = the artifact's target
  int cuda_device = 0;
  // Looped models.
  int iterations = 0;    // --iterations N
  bool adaptive = false; // --iterations adaptive
  std::optional<loom::ExitCriterion> criterion;
  std::optional<double> threshold;
  int max_iterations = 0;
  std::optional<std::string> kv_policy;
  std::optional<loom::LoopOptions::Init> init;
  bool warm_start = false;
  bool print_steps = false;
  std::string loop_flag;      // the first loop flag given, for messages
  std::string criterion_flag; // --exit-criterion or --exit-kl
  // REFRAG.
  std::optional<std::string> context;
  std::optional<std::string> context_ids;
  int64_t chunk_size = 0; // 0: the encoder's max_chunk_len
  std::optional<double> expand_policy;
  std::optional<std::string> expand_chunks;
  std::string refrag_flag; // the first chunk flag given, for messages
  // Chunk stores: --encode-chunks CORPUS -o OUT, or --chunks STORE
  // --passages LIST as the context.
  std::optional<std::string> encode_chunks;
  std::optional<std::string> output;
  std::optional<std::string> chunks;
  std::optional<std::string> passages;
  // --bench-ttft (REFRAG time to first token).
  bool bench_ttft = false;
  std::string chunk_sizes;     // --chunk-size as given (a list here)
  int64_t context_tokens = 2048;
  std::string expand_fractions = "0,0.25";
  int64_t question_tokens = 16;
  std::string ttft_flag; // the first --bench-ttft-only flag, for messages

  bool refrag() const { return context || context_ids || chunks; }
};

long long parseInteger(const std::string &flag, const std::string &text) {
  errno = 0;
  char *end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) ||
      *end != '\0' || errno == ERANGE)
    fail("invalid value '" + text + "' for " + flag + " (expected an integer)");
  return v;
}

float parseFloat(const std::string &flag, const std::string &text) {
  errno = 0;
  char *end = nullptr;
  float v = std::strtof(text.c_str(), &end);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) ||
      *end != '\0' || errno == ERANGE)
    fail("invalid value '" + text + "' for " + flag + " (expected a number)");
  return v;
}

uint64_t parseSeed(const std::string &text) {
  errno = 0;
  char *end = nullptr;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0])) ||
      *end != '\0' || errno == ERANGE)
    fail("invalid value '" + text +
         "' for --seed (expected a non-negative integer)");
  return v;
}

// Looped-model flags: --iterations, --exit-*, --max-iterations,
// --kv-policy, --init-state, --warm-start, --print-steps.
template <typename TakeValue>
void parseLoopFlag(Options &o, const std::string &flag, bool inline_value,
                   const TakeValue &takeValue) {
  if (o.loop_flag.empty())
    o.loop_flag = flag;
  auto count = [&](const std::string &text) {
    long long v = parseInteger(flag, text);
    if (v < 1 || v > 1024)
      fail(flag + " must be between 1 and 1024, got " + text);
    return static_cast<int>(v);
  };
  auto threshold = [&](const std::string &text) {
    float v = parseFloat(flag, text);
    if (!(std::isfinite(v) && v > 0.0f))
      fail(flag + " must be a number > 0, got " + text);
    return static_cast<double>(v);
  };
  auto setCriterion = [&](loom::ExitCriterion c) {
    if (o.criterion_flag == flag)
      fail(flag + " given twice");
    if (!o.criterion_flag.empty())
      fail(flag + " cannot be combined with " + o.criterion_flag);
    o.criterion_flag = flag;
    o.criterion = c;
  };
  if (flag == "--iterations") {
    std::string text = takeValue();
    // The last --iterations wins.
    o.adaptive = text == "adaptive";
    o.iterations = o.adaptive ? 0 : count(text);
  } else if (flag == "--exit-criterion") {
    std::string name = takeValue();
    std::optional<loom::ExitCriterion> c = loom::parseExitCriterion(name);
    if (!c || *c == loom::ExitCriterion::None)
      fail("unknown exit criterion '" + name +
           "' (expected kl, minp-kl, entropy-diff, latent-diff, cosine or "
           "argmax-stability)");
    setCriterion(*c);
  } else if (flag == "--exit-kl") {
    double t = threshold(takeValue());
    if (o.threshold)
      fail("--exit-kl sets the threshold; it cannot be combined with "
           "--exit-threshold");
    setCriterion(loom::ExitCriterion::Kl);
    o.threshold = t;
  } else if (flag == "--exit-threshold") {
    if (o.threshold)
      fail(o.criterion_flag == "--exit-kl"
               ? "--exit-kl sets the threshold; it cannot be combined with "
                 "--exit-threshold"
               : "--exit-threshold given twice");
    o.threshold = threshold(takeValue());
  } else if (flag == "--max-iterations") {
    o.max_iterations = count(takeValue());
  } else if (flag == "--kv-policy") {
    o.kv_policy = takeValue();
  } else if (flag == "--init-state") {
    std::string v = takeValue();
    if (v == "random")
      o.init = loom::LoopOptions::Init::Random;
    else if (v == "zero")
      o.init = loom::LoopOptions::Init::Zero;
    else
      fail("unknown --init-state '" + v + "' (expected random or zero)");
  } else {
    if (inline_value)
      fail("option " + flag + " takes no value");
    (flag == "--warm-start" ? o.warm_start : o.print_steps) = true;
  }
}

// The session's loop options from the flags, once the model is known.
loom::LoopOptions loopOptions(const Options &o, const loom::Model &model,
                              uint64_t seed) {
  loom::LoopOptions l;
  if (o.loop_flag.empty())
    return l;
  const loom::LoopInfo *info = model.loop();
  if (!info)
    fail("this model has no looped block (" + o.loop_flag +
         " needs a recurrent-depth model)");
  l.iterations = o.iterations;
  if (o.criterion)
    l.criterion = o.criterion;
  else if (o.adaptive)
    l.criterion = info->criterion != loom::ExitCriterion::None
                      ? info->criterion
                      : loom::ExitCriterion::Kl;
  const bool adaptive_exit =
      l.criterion ||
      (o.iterations == 0 && info->criterion != loom::ExitCriterion::None);
  if (o.threshold && !adaptive_exit)
    fail("--exit-threshold needs an adaptive exit (--iterations adaptive or "
         "--exit-criterion)");
  if (o.max_iterations && !adaptive_exit)
    fail("--max-iterations needs an adaptive exit (--iterations adaptive, "
         "--exit-criterion or --exit-kl)");
  l.threshold = o.threshold;
  l.max_iterations = o.max_iterations;
  if (o.kv_policy)
    l.kv_policy = *o.kv_policy;
  if (o.init)
    l.init = *o.init;
  l.seed = seed;
  l.warm_start = o.warm_start;
  return l;
}

// Returns nullopt after printing the usage for --help or the versions for
// --version.
std::optional<Options> parseArgs(int argc, char **argv) {
  Options o;
  bool have_artifact = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return std::nullopt;
    }
    if (arg == "--version") {
      // The tool's version is the headers'; the library's is the one
      // loaded, which a deployment may have replaced.
      std::printf("loom-run %s\nlibloomrt %s, artifact format %u\n",
                  LOOM_VERSION_STRING, loom_version(),
                  unsigned(loom::kArtifactFormatVersion));
      return std::nullopt;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (have_artifact)
        fail("unexpected argument '" + arg + "' (only one artifact is run)");
      o.artifact = arg;
      have_artifact = true;
      continue;
    }
    if (arg == "-o")
      arg = "--output";
    if (arg[1] != '-')
      fail("unknown option '" + arg + "' (see --help)");
    // --flag=value or --flag value.
    std::string flag = arg, value;
    bool inline_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    auto takeValue = [&]() -> std::string {
      if (inline_value)
        return value;
      if (i + 1 >= argc)
        fail("option " + flag + " needs a value");
      return argv[++i];
    };
    auto noValue = [&] {
      if (inline_value)
        fail("option " + flag + " takes no value");
    };
    if (flag == "--prompt") {
      o.prompt = takeValue();
    } else if (flag == "--prompt-ids") {
      o.prompt_ids = takeValue();
    } else if (flag == "--steps") {
      long long v = parseInteger(flag, takeValue());
      if (v < 0)
        fail("--steps must be >= 0, got " + std::to_string(v));
      o.steps = v;
    } else if (flag == "--temperature") {
      std::string text = takeValue();
      o.temperature = parseFloat(flag, text);
      if (!(std::isfinite(o.temperature) && o.temperature >= 0.0f))
        fail("--temperature must be a number >= 0, got " + text);
    } else if (flag == "--top-p") {
      std::string text = takeValue();
      o.top_p = parseFloat(flag, text);
      if (!(o.top_p > 0.0f && o.top_p <= 1.0f))
        fail("--top-p must be in (0, 1], got " + text);
    } else if (flag == "--seed") {
      o.seed = parseSeed(takeValue());
    } else if (flag == "--threads") {
      long long v = parseInteger(flag, takeValue());
      if (v < 1 || v > 1024)
        fail("--threads must be between 1 and 1024, got " + std::to_string(v));
      o.threads = static_cast<int>(v);
    } else if (flag == "--print-ids") {
      noValue();
      o.print_ids = true;
    } else if (flag == "--bench") {
      noValue();
      o.bench = true;
    } else if (flag == "--tokenize") {
      noValue();
      o.tokenize = true;
    } else if (flag == "--special") {
      noValue();
      o.special = true;
    } else if (flag == "--chat" || flag == "--render-chat" ||
               flag == "--interactive") {
      noValue();
      (flag == "--chat"          ? o.chat
       : flag == "--render-chat" ? o.render_chat
                                 : o.interactive) = true;
    } else if (flag == "--system") {
      o.system = takeValue();
    } else if (flag == "--messages" || flag == "--chat-template" ||
               flag == "--save-messages") {
      std::string path = takeValue();
      if (path.empty())
        fail(flag + " needs a file name");
      (flag == "--messages"        ? o.messages
       : flag == "--chat-template" ? o.chat_template
                                   : o.save_messages) = path;
    } else if (flag == "--info") {
      noValue();
      o.info = true;
    } else if (flag == "--trace") {
      o.trace = takeValue();
      if (o.trace.empty())
        fail("--trace needs a file name");
    } else if (flag == "--dump-logits") {
      o.dump_logits = takeValue();
      if (o.dump_logits.empty())
        fail("--dump-logits needs a file name");
    } else if (flag == "--device") {
      o.device = takeValue();
    } else if (flag == "--cuda-device") {
      long long v = parseInteger(flag, takeValue());
      if (v < 0 || v > 255)
        fail("--cuda-device must be between 0 and 255, got " + std::to_string(v));
      o.cuda_device = static_cast<int>(v);
    } else if (flag == "--context") {
      o.context = takeValue();
    } else if (flag == "--context-ids") {
      o.context_ids = takeValue();
    } else if (flag == "--chunk-size" || flag == "--expand-policy" ||
               flag == "--expand-chunks") {
      if (o.refrag_flag.empty())
        o.refrag_flag = flag;
      const std::string text = takeValue();
      if (flag == "--chunk-size") {
        o.chunk_sizes = text; // --bench-ttft takes a list, checked later
        if (text.find(',') != std::string::npos)
          continue;
        long long v = parseInteger(flag, text);
        if (v < 1 || v > (1 << 20))
          fail("--chunk-size must be >= 1, got " + text);
        o.chunk_size = v;
      } else if (flag == "--expand-policy") {
        float v = parseFloat(flag, text);
        if (!(v >= 0.0f && v <= 1.0f))
          fail("--expand-policy must be between 0 and 1, got " + text);
        o.expand_policy = v;
      } else {
        o.expand_chunks = text;
      }
    } else if (flag == "--bench-ttft") {
      noValue();
      o.bench_ttft = true;
    } else if (flag == "--context-tokens" || flag == "--question-tokens" ||
               flag == "--expand-fractions") {
      if (o.ttft_flag.empty())
        o.ttft_flag = flag;
      const std::string text = takeValue();
      if (flag == "--expand-fractions") {
        o.expand_fractions = text; // checked by benchTtft
      } else {
        long long v = parseInteger(flag, text);
        const long long lo = flag == "--context-tokens" ? 1 : 0;
        if (v < lo || v > (1 << 24))
          fail(flag + " must be between " + std::to_string(lo) +
               " and 16777216, got " + text);
        (flag == "--context-tokens" ? o.context_tokens : o.question_tokens) = v;
      }
    } else if (flag == "--encode-chunks" || flag == "--output" ||
               flag == "--chunks" || flag == "--passages") {
      const std::string text = takeValue();
      if (text.empty() && flag != "--passages")
        fail(flag + " needs a file name");
      (flag == "--encode-chunks" ? o.encode_chunks
       : flag == "--output"      ? o.output
       : flag == "--chunks"      ? o.chunks
                                 : o.passages) = text;
    } else if (flag == "--iterations" || flag == "--exit-criterion" ||
               flag == "--exit-threshold" || flag == "--exit-kl" ||
               flag == "--max-iterations" || flag == "--kv-policy" ||
               flag == "--init-state" || flag == "--warm-start" ||
               flag == "--print-steps") {
      parseLoopFlag(o, flag, inline_value, takeValue);
    } else {
      fail("unknown option '" + flag + "' (see --help)");
    }
  }
  if (!have_artifact)
    fail("missing artifact path (see --help)");
  if (o.prompt && o.prompt_ids)
    fail("--prompt and --prompt-ids cannot be used together");
  if (o.context && o.context_ids)
    fail("--context and --context-ids cannot be used together");
  if (o.info && o.tokenize)
    fail("--info cannot be combined with --tokenize");
  if (!o.chat) {
    for (auto [given, flag] :
         {std::pair{bool(o.system), "--system"},
          std::pair{bool(o.messages), "--messages"},
          std::pair{bool(o.chat_template), "--chat-template"},
          std::pair{o.render_chat, "--render-chat"},
          std::pair{o.interactive, "--interactive"},
          std::pair{bool(o.save_messages), "--save-messages"}})
      if (given)
        fail(std::string(flag) + " needs --chat");
  } else {
    if (!o.prompt && !o.messages && !o.interactive)
      fail("--chat needs the user's message (--prompt TEXT), a "
           "conversation (--messages FILE) or --interactive");
    if (o.render_chat && (o.interactive || o.save_messages))
      fail(std::string("--render-chat cannot be combined with ") +
           (o.interactive ? "--interactive" : "--save-messages"));
    if (o.interactive && !o.dump_logits.empty())
      fail("--interactive cannot be combined with --dump-logits");
    if (o.messages && (o.prompt || o.system))
      fail(std::string("--messages holds the whole conversation: it cannot "
                       "be combined with ") +
           (o.prompt ? "--prompt" : "--system"));
    const std::pair<bool, const char *> other[] = {
        {bool(o.prompt_ids), "--prompt-ids"},
        {o.special, "--special (the template's special tokens are always "
                    "picked out)"},
        {o.refrag(), "--context, --context-ids or --chunks"},
        {o.tokenize, "--tokenize"},
        {o.info, "--info"},
        {bool(o.encode_chunks), "--encode-chunks"},
        {o.bench, "--bench"},
        {o.bench_ttft, "--bench-ttft"}};
    for (const auto &[given, flag] : other)
      if (given)
        fail(std::string("--chat cannot be combined with ") + flag);
  }
  if (o.special && (o.prompt_ids || o.refrag() || o.info || o.encode_chunks))
    fail("--special applies to --prompt text (and --tokenize) only");
  if (o.tokenize || o.info) {
    const char *mode = o.tokenize ? "--tokenize" : "--info";
    const std::pair<bool, const char *> other[] = {
        {bool(o.prompt) && o.info, "--prompt"},
        {bool(o.prompt_ids), "--prompt-ids"},
        {bool(o.context), "--context"},
        {bool(o.context_ids), "--context-ids"},
        {bool(o.encode_chunks), "--encode-chunks"},
        {bool(o.chunks), "--chunks"},
        {o.bench, "--bench"},
        {o.bench_ttft, "--bench-ttft"},
        {!o.dump_logits.empty(), "--dump-logits"},
        {!o.trace.empty(), "--trace"}};
    for (const auto &[given, flag] : other)
      if (given)
        fail(
            std::string(mode) + " cannot be combined with " + flag +
            (o.tokenize ? " (it encodes --prompt or the lines of stdin)" : ""));
  }
  // Chunk stores.
  if (o.encode_chunks) {
    if (!o.output)
      fail("--encode-chunks needs -o FILE (the chunk store to write)");
    const std::pair<bool, const char *> other[] = {
        {bool(o.prompt), "--prompt"},
        {bool(o.prompt_ids), "--prompt-ids"},
        {bool(o.context), "--context"},
        {bool(o.context_ids), "--context-ids"},
        {bool(o.chunks), "--chunks"},
        {bool(o.passages), "--passages"},
        {bool(o.expand_policy), "--expand-policy"},
        {bool(o.expand_chunks), "--expand-chunks"},
        {o.bench, "--bench"},
        {o.bench_ttft, "--bench-ttft"},
        {!o.dump_logits.empty(), "--dump-logits"},
        {!o.trace.empty(), "--trace"},
        {o.print_ids, "--print-ids"},
        {!o.loop_flag.empty(), o.loop_flag.c_str()}};
    for (const auto &[given, flag] : other)
      if (given)
        fail(std::string("--encode-chunks cannot be combined with ") + flag);
  } else if (o.output) {
    fail("-o needs --encode-chunks (it names the chunk store to write)");
  }
  if (o.chunks) {
    if (!o.passages)
      fail("--chunks needs --passages (the passages to use, e.g. 0,3,7)");
    if (o.context || o.context_ids)
      fail(std::string("--chunks cannot be combined with ") +
           (o.context ? "--context" : "--context-ids"));
    if (o.bench || o.bench_ttft)
      fail(std::string("--chunks cannot be combined with ") +
           (o.bench ? "--bench" : "--bench-ttft"));
  } else if (o.passages) {
    fail("--passages needs --chunks (the chunk store to read)");
  }
  if (o.bench_ttft) {
    // It builds its own context and question.
    if (o.bench)
      fail("--bench-ttft cannot be combined with --bench");
    if (o.refrag())
      fail(std::string(o.context ? "--context" : "--context-ids") +
           " cannot be combined with --bench-ttft (use --context-tokens)");
    if (o.expand_policy || o.expand_chunks)
      fail(std::string(o.expand_policy ? "--expand-policy" : "--expand-chunks") +
           " cannot be combined with --bench-ttft (use --expand-fractions)");
    if (o.prompt || o.prompt_ids)
      fail(std::string(o.prompt ? "--prompt" : "--prompt-ids") +
           " cannot be combined with --bench-ttft (use --question-tokens)");
    if (!o.dump_logits.empty())
      fail("--dump-logits cannot be combined with --bench-ttft");
  } else {
    if (!o.ttft_flag.empty())
      fail(o.ttft_flag + " needs --bench-ttft");
    if (o.chunk_sizes.find(',') != std::string::npos)
      fail("--chunk-size takes one value (a list such as 8,16,32 needs "
           "--bench-ttft)");
  }
  if (!o.refrag_flag.empty() && !o.refrag() && !o.bench_ttft &&
      !(o.encode_chunks && o.refrag_flag == "--chunk-size"))
    fail(o.refrag_flag + " needs --context or --context-ids (or --chunks)");
  if (o.expand_policy && o.expand_chunks)
    fail("--expand-policy and --expand-chunks cannot be used together");
  if (o.refrag() && o.bench)
    fail(std::string(o.context ? "--context" : "--context-ids") +
         " cannot be combined with --bench");
  if (!o.device.empty() && o.device != "cpu" && o.device != "cuda")
    fail("unknown device '" + o.device + "' (expected cpu or cuda)");
  if (o.iterations > 0 && !o.criterion_flag.empty())
    fail("--iterations " + std::to_string(o.iterations) +
         " fixes the iteration count; it cannot be combined with " +
         o.criterion_flag + " (use --iterations adaptive)");
  if (o.iterations > 0 && o.max_iterations > 0)
    fail("--max-iterations bounds an adaptive exit; it cannot be combined "
         "with --iterations " +
         std::to_string(o.iterations));
  return o;
}

// "1,45,23" -> the integers, or fail(malformed). A sign is allowed only
// when `signed_ok` (token ids may be given negative, to be reported as
// unknown; indices may not).
std::vector<long long> parseIntegerList(const std::string &text,
                                        const std::string &malformed,
                                        bool signed_ok) {
  std::vector<long long> values;
  size_t begin = 0;
  while (true) {
    size_t end = text.find(',', begin);
    std::string item = text.substr(
        begin, end == std::string::npos ? std::string::npos : end - begin);
    errno = 0;
    char *stop = nullptr;
    long long v = std::strtoll(item.c_str(), &stop, 10);
    const unsigned char first = item.empty() ? 0 : item[0];
    if (item.empty() || *stop != '\0' || errno == ERANGE ||
        (signed_ok ? std::isspace(first) != 0 : std::isdigit(first) == 0))
      fail(malformed);
    values.push_back(v);
    if (end == std::string::npos)
      break;
    begin = end + 1;
  }
  return values;
}

// "1,45,23" -> ids; range-checked against the vocabulary.
std::vector<int32_t> parsePromptIds(const std::string &text, int64_t vocab,
                                    const std::string &flag = "--prompt-ids") {
  std::vector<int32_t> ids;
  for (long long v : parseIntegerList(
           text,
           "malformed " + flag + " '" + text +
               "' (expected comma-separated token ids, e.g. 1,403,407)",
           /*signed_ok=*/true)) {
    if (v < 0 || v >= vocab)
      fail("unknown token id " + std::to_string(v) + " in " + flag +
           " (vocabulary has " + std::to_string(vocab) + ")");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

class LogitsFile {
public:
  explicit LogitsFile(const std::string &path) : path_(path) {
    if (path.empty())
      return;
    file_ = std::fopen(path.c_str(), "wb");
    if (!file_)
      fail("cannot write '" + path + "': " + std::strerror(errno));
  }
  ~LogitsFile() {
    if (file_)
      std::fclose(file_);
  }
  bool enabled() const { return file_ != nullptr; }
  void write(const loom::Logits &l) {
    if (!file_)
      return;
    size_t n = static_cast<size_t>(l.rows * l.vocab);
    if (std::fwrite(l.data, sizeof(float), n, file_) != n)
      fail("cannot write '" + path_ + "': " + std::strerror(errno));
  }
  void close() {
    if (file_ && std::fclose(file_) != 0) {
      file_ = nullptr;
      fail("cannot write '" + path_ + "': " + std::strerror(errno));
    }
    file_ = nullptr;
  }

private:
  std::string path_;
  FILE *file_ = nullptr;
};

void writeOut(const std::string &bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size() ||
      std::fflush(stdout) != 0)
    fail(std::string("cannot write to stdout: ") + std::strerror(errno));
}

// "0,2,7" -> indices, each below `limit`, none repeated. `malformed`,
// `outOfRange(v)` and `twice(v)` give the messages (the flag and its unit).
template <typename OutOfRange, typename Twice>
std::vector<size_t> parseIndexList(const std::string &text, size_t limit,
                                   const std::string &malformed,
                                   OutOfRange outOfRange, Twice twice) {
  std::vector<size_t> indices;
  std::vector<bool> seen(limit, false);
  for (long long v : parseIntegerList(text, malformed, /*signed_ok=*/false)) {
    if (static_cast<unsigned long long>(v) >= limit)
      fail(outOfRange(v));
    if (seen[v])
      fail(twice(v));
    seen[v] = true;
    indices.push_back(static_cast<size_t>(v));
  }
  return indices;
}

// --expand-chunks "0,2" -> chunk indices, each < n_chunks, no repeats.
std::vector<size_t> parseExpandChunks(const std::string &text, size_t n_chunks,
                                      int64_t k) {
  return parseIndexList(
      text, n_chunks,
      "malformed --expand-chunks '" + text +
          "' (expected comma-separated chunk indices, e.g. 0,2)",
      [&](long long v) {
        return "--expand-chunks: chunk " + std::to_string(v) +
               " is out of range (the context has " +
               std::to_string(n_chunks) + " chunks of " + std::to_string(k) +
               ", 0.." + std::to_string(n_chunks - 1) + ")";
      },
      [](long long v) {
        return "--expand-chunks: chunk " + std::to_string(v) +
               " is given twice";
      });
}

// --passages "0,3,7" -> passage indices, each < n_passages, no repeats.
std::vector<size_t> parsePassages(const std::string &text, size_t n_passages) {
  return parseIndexList(
      text, n_passages,
      "malformed --passages '" + text +
          "' (expected comma-separated passage indices, e.g. 0,3,7)",
      [&](long long v) {
        return "--passages: passage " + std::to_string(v) +
               " is out of range (the chunk store has " +
               std::to_string(n_passages) + " passages" +
               (n_passages ? ", 0.." + std::to_string(n_passages - 1) : "") +
               ")";
      },
      [](long long v) {
        return "--passages: passage " + std::to_string(v) + " is given twice";
      });
}

// The decoder input of a --chunks run: the listed passages' stored chunks
// (no encoder runs), then the prompt, as refragPrompt.
loom::RefragPrompt storePrompt(const Options &o, const loom::Model &model,
                               loom::Session &session, size_t *n_question,
                               std::string &notes) {
  const loom::ModelConfigInfo &cfg = model.config();
  loom::ChunkStore store = loom::ChunkStore::open(*o.chunks);
  store.checkCompatible(model, static_cast<size_t>(o.chunk_size));
  loom::ChunkStoreRequest req;
  req.passages = parsePassages(*o.passages, store.passageCount());
  if (o.prompt_ids)
    req.question = parsePromptIds(*o.prompt_ids, cfg.vocab_size);
  else if (o.prompt)
    req.question = model.tokenizer().encode(*o.prompt, false, false);
  *n_question = req.question.size();
  size_t n_tokens = 0, n_chunks = 0;
  for (size_t i : req.passages) {
    const loom::ChunkStore::Passage p = store.passage(i);
    n_tokens += p.n_tokens;
    n_chunks += p.n_chunks;
  }
  if (n_tokens == 0)
    fail("the selected passages are empty (the context needs at least one "
         "token)");
  const int64_t k = static_cast<int64_t>(store.chunkSize());
  if (o.expand_chunks)
    req.expanded = parseExpandChunks(*o.expand_chunks, n_chunks, k);
  req.expand_fraction = o.expand_policy;
  loom::RefragPrompt p = loom::prepareRefrag(session, store, req);
  char line[256];
  std::snprintf(line, sizeof line,
                ": %zu tokens in %zu chunks of %lld, %zu expanded -> %zu "
                "decoder positions\n",
                n_tokens, p.chunks.size(), static_cast<long long>(k),
                p.expanded.size(), p.sequence.tokens.size());
  notes += "loom-run: context: " + std::to_string(req.passages.size()) +
           (req.passages.size() == 1 ? " passage" : " passages") + " of '" +
           *o.chunks + "'" + line;
  return p;
}

// The decoder input of a REFRAG run: the context's chunks (placeholders or
// expanded tokens) after BOS, then the prompt (the question).
// Sets *n_question to the prompt's token count (the sequence's last ones).
loom::RefragPrompt refragPrompt(const Options &o, const loom::Model &model,
                                loom::Session &session, size_t *n_question,
                                std::string &notes) {
  const loom::ModelConfigInfo &cfg = model.config();
  const loom::RefragInfo *info = model.refrag();
  if (!info)
    fail("this artifact has no chunk encoder (compile with loomc "
         "--format=refrag)");
  if (o.chunks)
    return storePrompt(o, model, session, n_question, notes);
  loom::RefragRequest req;
  req.context = o.context_ids
                    ? parsePromptIds(*o.context_ids, cfg.vocab_size,
                                     "--context-ids")
                    : model.tokenizer().encode(*o.context, false, false);
  if (req.context.empty())
    fail("the context is empty (--context needs at least one token)");
  if (o.prompt_ids)
    req.question = parsePromptIds(*o.prompt_ids, cfg.vocab_size);
  else if (o.prompt)
    req.question = model.tokenizer().encode(*o.prompt, false, false);
  const int64_t k = o.chunk_size ? o.chunk_size : info->max_chunk_len;
  if (k > info->max_chunk_len)
    fail("--chunk-size must be between 1 and " +
         std::to_string(info->max_chunk_len) +
         " (the encoder's max chunk length), got " + std::to_string(k));
  req.chunk_size = static_cast<size_t>(k);
  *n_question = req.question.size();
  const size_t n_chunks =
      (req.context.size() + req.chunk_size - 1) / req.chunk_size;
  if (o.expand_chunks)
    req.expanded = parseExpandChunks(*o.expand_chunks, n_chunks, k);
  req.expand_fraction = o.expand_policy;
  loom::RefragPrompt p = loom::prepareRefrag(session, req);
  char line[256];
  std::snprintf(line, sizeof line,
                "loom-run: context: %zu tokens in %zu chunks of %lld, %zu "
                "expanded -> %zu decoder positions\n",
                req.context.size(), p.chunks.size(),
                static_cast<long long>(k), p.expanded.size(),
                p.sequence.tokens.size());
  notes += line;
  return p;
}

// Whether a prompt's ids start with BOS: where the model has one and its
// vocabulary puts it first (run.c's always do; byte-level ones say).
bool promptsStartWithBos(const loom::Model &model) {
  return model.config().bos_id >= 0 && model.tokenizer().addsBos();
}

// `s` for a one-line message: control bytes escaped, at most 64 bytes.
std::string printable(const std::string &s) {
  std::string out;
  for (unsigned char c : s.substr(0, 64)) {
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return s.size() > 64 ? out + "..." : out;
}

// --info: what the artifact holds, one "key: value" a line.
int printInfo(const std::string &path, const loom::Model &model) {
  const loom::ModelConfigInfo &c = model.config();
  auto mib = [](uint64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f MiB", bytes / 1048576.0);
    return std::string(text);
  };
  std::printf("artifact: %s\n", path.c_str());
  std::printf("generator: %s\n", model.generator().c_str());
  std::printf("target: %s\n", model.target().c_str());
  std::printf("architecture: %s\n", c.architecture.c_str());
  std::printf("dim: %lld, hidden_dim: %lld, layers: %lld, heads: %lld, "
              "kv_heads: %lld, head_dim: %lld\n",
              (long long)c.dim, (long long)c.hidden_dim, (long long)c.n_layers,
              (long long)c.n_heads, (long long)c.n_kv_heads,
              (long long)c.head_dim);
  std::printf("vocab: %lld, context: %lld, rows per step: %lld\n",
              (long long)c.vocab_size, (long long)model.contextLength(),
              (long long)model.maxTokensPerStep());
  std::string stops;
  for (int32_t id : c.stop_ids)
    stops += (stops.empty() ? ", stop: " : " ") + std::to_string(id);
  std::printf("rope_theta: %g, norm_eps: %g, bos: %d, eos: %d%s\n",
              c.rope_theta, c.norm_eps, c.bos_id, c.eos_id, stops.c_str());
  // RoPE scaling (a context extension): its divisors and scale, if any.
  if (std::optional<loom::Model::RopeInfo> rope = model.rope();
      rope && (!rope->freq_factors.empty() || rope->scale != 1.0f)) {
    auto g = [](float v) {
      char text[32];
      std::snprintf(text, sizeof text, "%g", v);
      return std::string(text);
    };
    std::string text;
    if (!rope->freq_factors.empty()) {
      auto [lo, hi] = std::minmax_element(rope->freq_factors.begin(),
                                          rope->freq_factors.end());
      text = "frequency divisors " + g(*lo) + " .. " + g(*hi) + " (" +
             std::to_string(rope->freq_factors.size()) + " pairs)";
    }
    if (rope->scale != 1.0f)
      text +=
          (text.empty() ? "" : ", ") + std::string("scale ") + g(rope->scale);
    std::printf("rope scaling: %s\n", text.c_str());
  }
  // Sliding-window attention: one line, for the layers that have a window.
  const std::vector<int64_t> windows = model.attentionWindows();
  std::vector<int64_t> sizes;
  for (int64_t w : windows)
    if (w > 0 && std::find(sizes.begin(), sizes.end(), w) == sizes.end())
      sizes.push_back(w);
  if (!sizes.empty()) {
    std::string text;
    for (int64_t w : sizes)
      text += (text.empty() ? "" : ", ") + std::to_string(w) +
              " positions in " +
              std::to_string(std::count(windows.begin(), windows.end(), w));
    std::printf("sliding window: %s of %zu attention layers\n", text.c_str(),
                windows.size());
  }
  std::string tokenizer = "none (token ids only)";
  if (model.hasTokenizer()) {
    const loom::Tokenizer &t = model.tokenizer();
    tokenizer = std::to_string(t.vocabSize()) + " pieces, ";
    if (const loom::ByteLevelBpe *bpe = t.byteLevelBpe())
      tokenizer +=
          "byte-level BPE (" +
          std::string(bpe->pre == loom::PreTokenizer::Llama3   ? "Llama 3"
                      : bpe->pre == loom::PreTokenizer::SmolLm ? "SmolLM"
                      : bpe->pre == loom::PreTokenizer::Qwen2  ? "Qwen 2"
                                                               : "GPT-2") +
          " pre-tokenizer, " + std::to_string(bpe->merges.size()) +
          " merges), " + (promptsStartWithBos(model) ? "BOS first" : "no BOS");
    else
      tokenizer += "SentencePiece-style (llama2.c's rules)";
  }
  std::printf("tokenizer: %s\n", tokenizer.c_str());
  const loom::ChatTemplateInfo &chat = model.chatTemplate();
  if (chat.source.empty()) {
    std::printf("chat template: none\n");
  } else {
    std::string problem = loom::ChatTemplate::parseError(chat.source);
    std::printf("chat template: %zu bytes, bos_token '%s', eos_token '%s'%s\n",
                chat.source.size(), printable(chat.bos_token).c_str(),
                printable(chat.eos_token).c_str(),
                problem.empty() ? ""
                                : (" (not usable: " + problem + ")").c_str());
  }
  std::string types;
  for (const loom::Model::WeightTypeInfo &t : model.weightTypes())
    types += (types.empty() ? "" : ", ") + t.type + " " + mib(t.bytes) +
             " in " + std::to_string(t.tensors) +
             (t.tensors == 1 ? " tensor" : " tensors");
  std::printf("weights: %s (mapped): %s\n", mib(model.weightBytes()).c_str(),
              types.c_str());
  std::printf("session memory: %s (activations %s, KV caches %s)\n",
              mib(model.arenaBytes() + model.kvCacheBytes()).c_str(),
              mib(model.arenaBytes()).c_str(),
              mib(model.kvCacheBytes()).c_str());
  if (const loom::LoopInfo *loop = model.loop())
    std::printf("looped block: %d attention layers before, %d per "
                "iteration, %d iterations by default\n",
                loop->layers_before, loop->layers_per_iteration,
                loop->default_iterations);
  if (const loom::RefragInfo *r = model.refrag())
    std::printf("chunk encoder: chunks of up to %lld tokens, embedding "
                "width %lld, placeholder rows of %lld\n",
                (long long)r->max_chunk_len, (long long)r->encoder_dim,
                (long long)r->projected_dim);
  return 0;
}

// --tokenize: `prompt`, or each line of stdin (without its newline), encoded
// as a prompt is.
int tokenizeTexts(const loom::Model &model,
                  const std::optional<std::string> &prompt, bool special) {
  if (!model.hasTokenizer())
    fail("this artifact has no tokenizer (--tokenize needs one)");
  const bool bos = promptsStartWithBos(model);
  auto print = [](const std::vector<int32_t> &tokens) {
    std::string ids;
    for (int32_t id : tokens)
      ids += (ids.empty() ? "" : " ") + std::to_string(id);
    std::puts(ids.c_str());
  };
  if (prompt) {
    print(model.tokenizer().encode(*prompt, bos, false, special));
    return 0;
  }
  std::string line;
  for (int c; (c = std::getchar()) != EOF || !line.empty();) {
    if (c != '\n' && c != EOF) {
      line += static_cast<char>(c);
      continue;
    }
    if (!line.empty() && line.back() == '\r')
      line.pop_back(); // CRLF input
    print(model.tokenizer().encode(line, bos, false, special));
    line.clear();
    if (c == EOF)
      break;
  }
  return 0;
}

// A whole file (or stdin for "-"), for --messages and --chat-template.
std::string readTextFile(const std::string &path, const std::string &what) {
  constexpr size_t kMaxBytes = size_t(64) << 20;
  FILE *f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (!f)
    fail("cannot read " + what + " '" + path + "': " + std::strerror(errno));
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    text.append(buf, n);
    if (text.size() > kMaxBytes)
      fail(what + " '" + path + "' is over 64 MiB");
  }
  const bool error = std::ferror(f);
  if (f != stdin)
    std::fclose(f);
  if (error)
    fail("cannot read " + what + " '" + path + "': read error");
  return text;
}

// A --chat conversation: the chat template and what it gets, the
// --messages JSON (if any) and the turns after it (--system, --prompt, the
// replies and the lines read in --interactive).
class Conversation {
public:
  Conversation(const Options &o, const loom::Model &model) : o_(o) {
    const loom::Tokenizer &tok = model.tokenizer();
    loom::ChatTemplateInfo info = model.chatTemplate();
    if (o.chat_template) {
      if (info.source.empty()) {
        // No template in the artifact: the vocabulary's BOS and EOS texts.
        const loom::ModelConfigInfo &cfg = model.config();
        auto piece = [&](int64_t id) {
          return id >= 0 && id < tok.vocabSize() ? tok.piece(int32_t(id))
                                                 : std::string();
        };
        info.bos_token = piece(cfg.bos_id);
        info.eos_token = piece(cfg.eos_id);
      }
      info.source = readTextFile(*o.chat_template, "chat template");
    }
    if (info.source.empty())
      fail("this artifact has no chat template (its model came without "
           "one): give a Jinja template with --chat-template FILE");
    inputs_.bos_token = info.bos_token;
    inputs_.eos_token = info.eos_token;
    if (o.messages)
      json_ = readTextFile(*o.messages, "messages");
    guard([&] {
      template_.emplace(info.source);
      if (o.messages)
        last_role_ = loom::ChatTemplate::lastRole(json_);
    });
    if (o.system)
      add("system", *o.system);
    if (o.prompt)
      add("user", *o.prompt);
  }

  void add(const std::string &role, const std::string &content) {
    turns_.push_back({role, content});
    last_role_ = role;
  }
  // Whether the conversation waits for the assistant's reply.
  bool awaitsReply() const { return last_role_ == "user"; }

  // The prompt text the template makes of the conversation.
  std::string render() const {
    std::string text;
    guard([&] {
      text = o_.messages ? template_->renderJson(json_, inputs_, turns_)
                         : template_->render(turns_, inputs_);
    });
    return text;
  }
  // The conversation as JSON (--save-messages).
  std::string json() const {
    std::string text;
    guard([&] { text = loom::ChatTemplate::appendToJson(json_, turns_); });
    return text;
  }

private:
  // Runs `f`, naming the file a template or JSON error comes from.
  template <typename F> void guard(F &&f) const {
    try {
      f();
    } catch (const loom::Error &e) {
      std::string what = e.what();
      if (o_.chat_template && what.rfind("chat template", 0) == 0)
        fail("--chat-template '" + *o_.chat_template + "': " + what);
      if (o_.messages && what.rfind("chat messages", 0) == 0)
        fail("--messages '" + *o_.messages + "': " + what);
      fail(what);
    }
  }

  const Options &o_;
  std::optional<loom::ChatTemplate> template_;
  loom::ChatInputs inputs_;
  std::string json_; // --messages, "" if none
  std::vector<loom::ChatMessage> turns_;
  std::string last_role_;
};

// Writes the conversation to --save-messages' file, where given.
void saveMessages(const Options &o, const Conversation &conversation) {
  if (!o.save_messages)
    return;
  const std::string json = conversation.json();
  FILE *f = std::fopen(o.save_messages->c_str(), "wb");
  bool ok = f && std::fwrite(json.data(), 1, json.size(), f) == json.size();
  ok = f && std::fclose(f) == 0 && ok;
  if (!ok)
    fail("cannot write --save-messages '" + *o.save_messages +
         "': " + std::strerror(errno));
}

int generate(const Options &o, const loom::Model &model, loom::Session &session,
             uint64_t seed, Conversation *chat, std::string &notes) {
  const loom::ModelConfigInfo &cfg = model.config();
  const int64_t context = model.contextLength();
  // Text in or out needs the tokenizer (an empty question does not).
  if (!model.hasTokenizer() && (!o.print_ids || o.context || o.prompt ||
                                (!o.prompt_ids && !o.refrag())))
    fail("this artifact has no tokenizer: give the prompt with --prompt-ids "
         "(and the context with --context-ids) and print the result with "
         "--print-ids");
  // With a context, the prompt is the question after it: prompt holds the
  // whole assembled sequence and `embeddings` its placeholder rows.
  loom::RefragPrompt refrag;
  std::vector<int32_t> prompt;
  const float *const *embeddings = nullptr;
  int64_t row_elems = cfg.dim; // floats per placeholder row
  size_t echo_from = 0; // the first position the echo prints
  if (o.refrag()) {
    size_t n_question = 0;
    refrag = refragPrompt(o, model, session, &n_question, notes);
    prompt = refrag.sequence.tokens;
    embeddings = refrag.sequence.embeddings.data();
    row_elems = refrag.sequence.row_elems;
    echo_from = prompt.size() - n_question;
    if (static_cast<int64_t>(prompt.size()) > context)
      fail("the context and prompt take " + std::to_string(prompt.size()) +
           " decoder positions but the model's context holds " +
           std::to_string(context));
  } else if (chat) {
    // The template writes BOS where the model wants it (as transformers'
    // apply_chat_template, which adds no special tokens of its own).
    prompt = model.tokenizer().encode(chat->render(), false, false, true);
    if (prompt.empty())
      fail("the chat template rendered an empty prompt");
    echo_from = prompt.size(); // the reply alone is printed
  } else {
    prompt = o.prompt_ids ? parsePromptIds(*o.prompt_ids, cfg.vocab_size)
                          : model.tokenizer().encode(o.prompt.value_or(""),
                                                     promptsStartWithBos(model),
                                                     false, o.special);
    if (prompt.empty())
      fail("the prompt is empty and this model's vocabulary puts no BOS "
           "first: there is no token to start from (give --prompt TEXT)");
    if (static_cast<int64_t>(prompt.size()) > context)
      fail("prompt has " + std::to_string(prompt.size()) +
           " tokens but the context holds " + std::to_string(context));
  }

  LogitsFile dump(o.dump_logits);
  loom::Sampler sampler(cfg.vocab_size, o.temperature, o.top_p, seed);

  // The prompt is echoed as run.c does while feeding it: each token decoded
  // after its predecessor, the leading BOS itself not printed. A first token
  // other than BOS is shown as at the start of a text. With a context only
  // the prompt after it is echoed, as a text of its own.
  if (!o.print_ids) {
    std::string text;
    for (size_t i = echo_from; i < prompt.size(); ++i)
      if (i > echo_from || prompt[i] != cfg.bos_id)
        text += model.tokenizer().decode(
            i > echo_from ? prompt[i - 1] : cfg.bos_id, prompt[i]);
    writeOut(text);
  }

  auto start = Clock::now();
  loom::Logits logits = session.forward(prompt.data(), prompt.size(),
                                        dump.enabled(), embeddings, row_elems);
  dump.write(logits);
  auto prefilled = Clock::now();

  std::vector<int32_t> generated;
  std::string reply; // the generated text, for a conversation
  int32_t prev = prompt.back();
  enum class Stop { Steps, EndOfSequence, ContextFull } stop = Stop::Steps;
  int32_t next = o.steps > 0 ? sampler.sample(logits.last()) : 0;
  for (int64_t n = 0; n < o.steps; ++n) {
    generated.push_back(next);
    if (cfg.endsGeneration(next)) {
      stop = Stop::EndOfSequence;
      break;
    }
    if (!o.print_ids || chat) {
      const std::string piece = model.tokenizer().decode(prev, next);
      if (chat)
        reply += piece;
      if (!o.print_ids)
        writeOut(piece);
    }
    if (n + 1 == o.steps)
      break;
    if (session.position() >= context) {
      stop = Stop::ContextFull;
      break;
    }
    prev = next;
    // Without a logits dump the step and the sampling stay on the device
    // (one CUDA graph per token); the draws are the same either way.
    if (dump.enabled()) {
      logits = session.forward(&prev, 1);
      dump.write(logits);
      next = sampler.sample(logits.last());
    } else {
      next = session.forwardSample(prev, sampler);
    }
  }
  auto done = Clock::now();
  dump.close();

  if (o.print_ids) {
    std::string line;
    for (size_t i = 0; i < generated.size(); ++i)
      line += (i ? " " : "") + std::to_string(generated[i]);
    writeOut(line);
  }
  writeOut("\n");
  if (chat) {
    chat->add("assistant", reply);
    saveMessages(o, *chat);
  }
  if (o.print_steps) {
    std::string line;
    const std::vector<int> &steps = session.iterationsPerStep();
    for (size_t i = 0; i < steps.size(); ++i)
      line += (i ? " " : "") + std::to_string(steps[i]);
    writeOut(line + "\n");
  }

  char line[256];
  if (stop == Stop::EndOfSequence) {
    std::snprintf(line, sizeof line,
                  "loom-run: stopped: end of sequence after %zu tokens\n",
                  generated.size() - 1);
    notes += line;
  } else if (stop == Stop::ContextFull) {
    std::snprintf(line, sizeof line,
                  "loom-run: stopped: context full (%lld positions) after %zu "
                  "tokens\n",
                  static_cast<long long>(context), generated.size());
    notes += line;
  }
  double decode_s = seconds(prefilled, done);
  std::snprintf(line, sizeof line,
                "loom-run: prompt %zu tokens in %.3f s, generated %zu tokens "
                "in %.3f s (%.1f tokens/s), %d threads\n",
                prompt.size(), seconds(start, prefilled), generated.size(),
                decode_s, decode_s > 0 ? generated.size() / decode_s : 0.0,
                session.threads());
  notes += line;
  return 0;
}

// --chat --interactive: a reply to each user message, the first to --prompt
// (or to --messages ending with the user's turn), the others to the lines of
// stdin. Each turn renders the whole conversation and feeds only the tokens
// after those the session holds (the KV cache is kept); where the rendering
// departs from them (a template that rewrites earlier turns, a reply that
// tokenizes otherwise), the session is rewound to the common prefix (for a
// looped model, to the start of the step holding its end).
int chatLoop(const Options &o, const loom::Model &model, loom::Session &session,
             uint64_t seed, Conversation &chat, std::string &notes) {
  const loom::ModelConfigInfo &cfg = model.config();
  const loom::Tokenizer &tok = model.tokenizer();
  const int64_t context = model.contextLength();
  loom::Sampler sampler(cfg.vocab_size, o.temperature, o.top_p, seed);
  std::vector<int32_t> fed; // the tokens the session holds
  int64_t replies = 0, prompted = 0, reused = 0, generated = 0, rewinds = 0;
  double seconds_spent = 0;
  bool full = false;
  auto reply = [&] {
    auto start = Clock::now();
    const std::vector<int32_t> ids =
        tok.encode(chat.render(), false, false, true);
    if (static_cast<int64_t>(ids.size()) >= context) {
      notes += "loom-run: stopped: the conversation takes " +
               std::to_string(ids.size()) + " tokens and the context holds " +
               std::to_string(context) + "\n";
      full = true;
      return;
    }
    // Keep the longest common prefix, less at least one token to feed.
    const size_t common = static_cast<size_t>(
        std::mismatch(fed.begin(), fed.end(), ids.begin(), ids.end()).first -
        fed.begin());
    const size_t keep = static_cast<size_t>(session.rewindPoint(
        static_cast<int64_t>(std::min(common, ids.size() - 1))));
    if (keep < fed.size()) {
      session.rewind(static_cast<int64_t>(keep));
      fed.resize(keep);
      ++rewinds;
    }
    reused += static_cast<int64_t>(fed.size());
    prompted += static_cast<int64_t>(ids.size());
    loom::Logits logits =
        session.forward(ids.data() + fed.size(), ids.size() - fed.size());
    fed = ids;
    std::string text, id_line;
    int32_t prev = ids.back();
    int32_t next = o.steps > 0 ? sampler.sample(logits.last()) : 0;
    for (int64_t n = 0; n < o.steps && !cfg.endsGeneration(next); ++n) {
      const std::string piece = tok.decode(prev, next);
      text += piece;
      id_line += (n ? " " : "") + std::to_string(next);
      ++generated;
      if (!o.print_ids)
        writeOut(piece);
      if (n + 1 == o.steps || session.position() >= context)
        break;
      prev = next;
      next = session.forwardSample(prev, sampler);
      fed.push_back(prev);
    }
    writeOut((o.print_ids ? id_line : "") + "\n");
    chat.add("assistant", text);
    ++replies;
    seconds_spent += seconds(start, Clock::now());
  };
  if (chat.awaitsReply())
    reply();
  const bool terminal = isatty(STDIN_FILENO);
  char *line = nullptr;
  size_t capacity = 0;
  while (!full) {
    if (terminal)
      std::fputs("> ", stderr);
    ssize_t n = getline(&line, &capacity, stdin);
    if (n < 0)
      break;
    std::string message(line, static_cast<size_t>(n));
    while (!message.empty() &&
           (message.back() == '\n' || message.back() == '\r'))
      message.pop_back();
    if (message.empty())
      continue;
    chat.add("user", message);
    reply();
  }
  std::free(line);
  saveMessages(o, chat);
  char summary[320];
  std::snprintf(summary, sizeof summary,
                "loom-run: %lld replies: prompts of %lld tokens, %lld of them "
                "already in the KV cache (%lld rewinds); %lld tokens "
                "generated; %.3f s\n",
                static_cast<long long>(replies),
                static_cast<long long>(prompted),
                static_cast<long long>(reused), static_cast<long long>(rewinds),
                static_cast<long long>(generated), seconds_spent);
  notes += summary;
  return full ? 1 : 0;
}

int bench(const loom::Model &model, loom::Session &session) {
  const int64_t vocab = model.config().vocab_size;
  const int64_t context = model.contextLength();
  const int64_t prefill =
      std::max<int64_t>(1, std::min<int64_t>(512, context / 2));
  // Ids cycle through the vocabulary past the three special ids, so every
  // position embeds an ordinary token.
  std::vector<int32_t> ids(static_cast<size_t>(prefill));
  for (int64_t i = 0; i < prefill; ++i)
    ids[i] = static_cast<int32_t>(vocab > 3 ? 3 + i % (vocab - 3) : i % vocab);

  // Warm-up: touches the weights, the arena and the kernels' scratch, and
  // captures a CUDA session's decode graph.
  loom::Sampler greedy(vocab, 0.0f, 1.0f, 1);
  session.forward(ids.data(), static_cast<size_t>(std::min<int64_t>(
                                  prefill, model.maxTokensPerStep())));
  if (session.position() < context)
    session.forwardSample(ids[0], greedy);
  session.reset();

  auto t0 = Clock::now();
  loom::Logits logits = session.forward(ids.data(), ids.size());
  auto t1 = Clock::now();
  const int64_t decode = std::min<int64_t>(128, context - prefill);
  int32_t next = greedy.sample(logits.last());
  for (int64_t i = 0; i < decode; ++i)
    next = session.forwardSample(next, greedy);
  auto t2 = Clock::now();

  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  double prefill_s = seconds(t0, t1), decode_s = seconds(t1, t2);
  std::printf("prefill_tokens: %lld\n", static_cast<long long>(prefill));
  std::printf("prefill_tokens_per_s: %.1f\n", prefill / prefill_s);
  std::printf("decode_tokens: %lld\n", static_cast<long long>(decode));
  std::printf("decode_tokens_per_s: %.1f\n",
              decode > 0 ? decode / decode_s : 0.0);
  std::printf("weight_bytes: %llu\n",
              static_cast<unsigned long long>(model.weightBytes()));
  std::printf("kv_bytes_per_token: %llu\n",
              static_cast<unsigned long long>(session.kvBytesPerToken()));
  std::printf("kv_bytes_allocated: %llu\n",
              static_cast<unsigned long long>(session.kvCacheBytes()));
  std::printf("peak_rss_mib: %.1f\n", usage.ru_maxrss / 1024.0);
  std::printf("threads: %d\n", session.threads());
  std::printf("isa: %s\n", loom::activeIsaName());
  std::printf("device: %s\n", session.deviceName().c_str());
  std::printf("graph_launches: %lld\n",
              static_cast<long long>(session.graphLaunches()));
  if (std::fflush(stdout) != 0 || std::ferror(stdout))
    fail(std::string("cannot write to stdout: ") + std::strerror(errno));
  return 0;
}

// Comma-separated items of a list flag ("8,16,32"); empty items are errors.
std::vector<std::string> splitList(const std::string &flag,
                                   const std::string &text,
                                   const char *example) {
  std::vector<std::string> items;
  size_t begin = 0;
  while (true) {
    size_t end = text.find(',', begin);
    items.push_back(text.substr(
        begin, end == std::string::npos ? std::string::npos : end - begin));
    if (items.back().empty())
      fail("malformed " + flag + " '" + text + "' (expected a comma-separated "
           "list, e.g. " + example + ")");
    if (end == std::string::npos)
      return items;
    begin = end + 1;
  }
}

// --bench-ttft: time to first token of a synthetic retrieved context fed as
// plain tokens against compressed chunk placeholders
// (docs/chunk-placeholders.md). The context is `context_tokens` ids cycling
// through the vocabulary past the three special ids, the question the next
// `question_tokens` of the cycle. For each chunk size k the chunk embeddings,
// projections and policy scores are computed once ("encode", a per-corpus
// cost, timed on its own); time to first token is then, from those, the
// policy's choice, the sequence assembly, the prefill and the first greedy
// token. Best of 3 runs each, the session reset before every run.
int benchTtft(const Options &o, const loom::Model &model,
              loom::Session &session) {
  const loom::RefragInfo *info = model.refrag();
  if (!info)
    fail("this artifact has no chunk encoder (compile with loomc "
         "--format=refrag)");
  const loom::ModelConfigInfo &cfg = model.config();
  std::vector<size_t> ks;
  if (o.chunk_sizes.empty())
    ks.push_back(static_cast<size_t>(info->max_chunk_len));
  for (const std::string &item :
       o.chunk_sizes.empty() ? std::vector<std::string>{}
                             : splitList("--chunk-size", o.chunk_sizes,
                                         "8,16,32")) {
    long long k = parseInteger("--chunk-size", item);
    if (k < 1 || k > info->max_chunk_len)
      fail("--chunk-size must be between 1 and " +
           std::to_string(info->max_chunk_len) +
           " (the encoder's max chunk length), got " + item);
    ks.push_back(static_cast<size_t>(k));
  }
  std::vector<double> ps;
  for (const std::string &item :
       splitList("--expand-fractions", o.expand_fractions, "0,0.25")) {
    float p = parseFloat("--expand-fractions", item);
    if (!(p >= 0.0f && p <= 1.0f))
      fail("--expand-fractions must be between 0 and 1, got " + item);
    ps.push_back(p);
  }

  const int64_t vocab = cfg.vocab_size;
  auto synthetic = [&](int64_t i) {
    return static_cast<int32_t>(vocab > 3 ? 3 + i % (vocab - 3) : i % vocab);
  };
  std::vector<int32_t> context, question, full;
  for (int64_t i = 0; i < o.context_tokens; ++i)
    context.push_back(synthetic(i));
  for (int64_t i = 0; i < o.question_tokens; ++i)
    question.push_back(synthetic(o.context_tokens + i));
  if (cfg.bos_id >= 0)
    full.push_back(cfg.bos_id);
  full.insert(full.end(), context.begin(), context.end());
  full.insert(full.end(), question.begin(), question.end());
  if (static_cast<int64_t>(full.size()) > model.contextLength())
    fail("--bench-ttft: the uncompressed sequence takes " +
         std::to_string(full.size()) + " positions but the model's context "
         "holds " + std::to_string(model.contextLength()) +
         " (lower --context-tokens)");

  constexpr int kRepeat = 3;
  loom::Sampler greedy(vocab, 0.0f, 1.0f, 1);
  int64_t sink = 0; // the sampled tokens, so no run is optimised away
  // Best wall time of kRepeat runs of `once`, in ms, each from position 0.
  auto bestOf = [&](const auto &once, int repeat) {
    double b = 1e300;
    for (int r = 0; r < repeat; ++r) {
      session.reset();
      auto t0 = Clock::now();
      sink += once();
      b = std::min(b, seconds(t0, Clock::now()));
    }
    session.reset();
    return b * 1e3;
  };
  auto best = [&](const auto &once) { return bestOf(once, kRepeat); };

  // Warm-up: touches the weights, the arena and the kernels' scratch.
  session.forward(full.data(), static_cast<size_t>(std::min<int64_t>(
                                   full.size(), model.maxTokensPerStep())));
  session.reset();

  const uint64_t kv_per_pos = session.kvBytesPerToken();
  const double full_ms = best([&] {
    loom::Logits l = session.forward(full.data(), full.size());
    return greedy.sample(l.last());
  });
  const unsigned long long full_kv = full.size() * kv_per_pos;

  std::printf("context_tokens: %lld\n",
              static_cast<long long>(o.context_tokens));
  std::printf("question_tokens: %lld\n",
              static_cast<long long>(o.question_tokens));
  std::printf("kv_bytes_per_position: %llu\n",
              static_cast<unsigned long long>(kv_per_pos));
  std::printf("repeat: %d\n", kRepeat);
  std::printf("threads: %d\n", session.threads());
  std::printf("isa: %s\n", loom::activeIsaName());
  std::printf("device: %s\n", session.deviceName().c_str());
  // With loom-fuse-chunk-projector's rows, also the same sequence with the
  // rows cut to the model dim (layer 0 projects the placeholders, as
  // without the pass): "unfused_ms", and "fusion" = its ratio to the fused
  // rows' time. The gain is a few per cent, so these two come from
  // kFusionPairs runs of each, alternating (best of each), not from ttft_ms.
  constexpr int kFusionPairs = 7;
  const int64_t projected_dim = info->projected_dim;
  const bool fused = projected_dim > cfg.dim;
  std::printf("%-6s %4s %5s %9s %10s %8s %7s %12s %12s %10s %11s %7s\n",
              "mode", "k", "p", "positions", "ttft_ms", "speedup", "ratio",
              "kv_bytes", "full_kv", "encode_ms", "unfused_ms", "fusion");
  std::printf("%-6s %4s %5s %9zu %10.3f %8.2f %7.2f %12llu %12llu %10s %11s "
              "%7s\n",
              "full", "-", "-", full.size(), full_ms, 1.0, 1.0, full_kv,
              full_kv, "-", "-", "-");
  std::fflush(stdout);

  for (size_t k : ks) {
    // Per corpus: the chunk embeddings, their projections and scores.
    auto t0 = Clock::now();
    std::vector<std::vector<int32_t>> chunks = loom::splitChunks(context, k);
    std::vector<float> embedded;
    embedded.reserve(chunks.size() * static_cast<size_t>(info->encoder_dim));
    for (const std::vector<int32_t> &c : chunks) {
      std::vector<float> e = session.encodeChunk(c.data(), c.size());
      embedded.insert(embedded.end(), e.begin(), e.end());
    }
    const std::vector<float> projected =
        session.projectChunks(embedded.data(), chunks.size());
    const std::vector<float> scores =
        session.scoreChunks(embedded.data(), chunks.size());
    const double encode_ms = seconds(t0, Clock::now()) * 1e3;

    for (double p : ps) {
      size_t positions = 0;
      auto ttft = [&](int64_t row_elems, int repeat) {
        return bestOf(
            [&] {
              loom::AssembledSequence s = loom::assembleSequence(
                  context, question, k, loom::expandedByPolicy(scores, p),
                  projected.data(), projected_dim, cfg.bos_id);
              positions = s.tokens.size();
              loom::Logits l = session.forward(s.tokens.data(),
                                               s.tokens.size(), false,
                                               s.embeddings.data(), row_elems);
              return greedy.sample(l.last());
            },
            repeat);
      };
      const double ms = ttft(projected_dim, kRepeat);
      char unfused[2][16] = {"-", "-"};
      if (fused) {
        double with = 1e300, without = 1e300;
        for (int r = 0; r < kFusionPairs; ++r) {
          with = std::min(with, ttft(projected_dim, 1));
          without = std::min(without, ttft(cfg.dim, 1));
        }
        std::snprintf(unfused[0], sizeof unfused[0], "%.3f", without);
        std::snprintf(unfused[1], sizeof unfused[1], "%.3f", without / with);
      }
      std::printf("%-6s %4zu %5.2f %9zu %10.3f %8.2f %7.2f %12llu %12llu "
                  "%10.3f %11s %7s\n",
                  "refrag", k, p, positions, ms, full_ms / ms,
                  static_cast<double>(full.size()) / positions,
                  static_cast<unsigned long long>(positions * kv_per_pos),
                  full_kv, encode_ms, unfused[0], unfused[1]);
      std::fflush(stdout);
    }
  }
  if (sink < 0 || std::fflush(stdout) != 0 || std::ferror(stdout))
    fail(std::string("cannot write to stdout: ") + std::strerror(errno));
  return 0;
}

// The signal that interrupted --encode-chunks (0: none). The write checks it
// between batches, removes its temporary file and stops.
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void onInterrupt(int sig) { g_interrupted = sig; }

// --encode-chunks CORPUS -o OUT: one passage a line (a trailing newline ends
// the last line; a CR before the newline is dropped; an empty line is an
// empty passage), each encoded like --context (no BOS), into a chunk store
// written atomically (docs/chunk-placeholders.md, "Chunk store").
int encodeChunks(const Options &o, const std::shared_ptr<loom::Model> &model) {
  const loom::RefragInfo *info = model->refrag();
  if (!info)
    fail("this artifact has no chunk encoder (compile with loomc "
         "--format=refrag)");
  if (!model->hasTokenizer())
    fail("this artifact has no tokenizer: --encode-chunks needs one to read "
         "the corpus text");
  const int64_t k = o.chunk_size ? o.chunk_size : info->max_chunk_len;
  if (k > info->max_chunk_len)
    fail("--chunk-size must be between 1 and " +
         std::to_string(info->max_chunk_len) +
         " (the encoder's max chunk length), got " + std::to_string(k));
  const std::string &corpus = *o.encode_chunks, &out = *o.output;
  std::string text;
  {
    FILE *f = std::fopen(corpus.c_str(), "rb");
    if (!f)
      fail("cannot read corpus '" + corpus + "': " + std::strerror(errno));
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
      text.append(buf, n);
    const bool bad = std::ferror(f);
    std::fclose(f);
    if (bad)
      fail("cannot read corpus '" + corpus + "': " + std::strerror(errno));
  }
  auto start = Clock::now();
  std::vector<std::vector<int32_t>> passages;
  uint64_t n_tokens = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos)
      end = text.size();
    std::string_view line(text.data() + begin, end - begin);
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    passages.push_back(model->tokenizer().encode(line, false, false));
    n_tokens += passages.back().size();
    begin = end + 1;
  }

  // A bar redrawn on a terminal; in a log, one line per quarter.
  const bool redraw = ::isatty(STDERR_FILENO);
  int shown = -1;
  loom::ChunkStoreWriteOptions wo;
  wo.threads = o.threads;
  wo.progress = [&](uint64_t done, uint64_t total) {
    if (g_interrupted)
      fail("interrupted: '" + out + "' not written");
    constexpr int width = 30;
    const int filled = total ? static_cast<int>(width * done / total) : width;
    const int step = redraw ? filled : filled * 4 / width;
    if (step == shown && done != total)
      return;
    shown = step;
    std::fprintf(stderr, "%sloom-run: encoding chunks [%s%s] %llu/%llu chunks%s",
                 redraw ? "\r" : "", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(),
                 static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total),
                 done == total || !redraw ? "\n" : "");
    std::fflush(stderr);
  };
  struct sigaction action = {}, old_int = {}, old_term = {}, old_hup = {};
  action.sa_handler = onInterrupt;
  action.sa_flags = SA_RESETHAND; // a second signal kills at once
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &old_int);
  sigaction(SIGTERM, &action, &old_term);
  sigaction(SIGHUP, &action, &old_hup);
  auto restore = [&] {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGHUP, &old_hup, nullptr);
  };
  try {
    loom::ChunkStore::write(out, model, passages, static_cast<size_t>(k), wo);
  } catch (...) {
    restore();
    if (g_interrupted) {
      // The temporary file is gone; die of the signal as the caller expects.
      std::fprintf(stderr, "\nloom-run: interrupted: '%s' not written\n",
                   out.c_str());
      std::signal(g_interrupted, SIG_DFL);
      std::raise(g_interrupted);
    }
    throw;
  }
  restore();
  const double s = seconds(start, Clock::now());
  const loom::ChunkStore store = loom::ChunkStore::open(out);
  std::fprintf(stderr,
               "loom-run: wrote '%s': %zu passages, %llu tokens in %zu chunks "
               "of %lld, %.1f MiB in %.2f s (%.0f chunks/s)\n",
               out.c_str(), passages.size(),
               static_cast<unsigned long long>(n_tokens), store.chunkCount(),
               static_cast<long long>(k), store.fileSize() / 1048576.0, s,
               s > 0 ? store.chunkCount() / s : 0.0);
  return 0;
}

int run(int argc, char **argv) {
  std::optional<Options> parsed = parseArgs(argc, argv);
  if (!parsed)
    return 0;
  const Options &o = *parsed;
  // Asked for explicitly, CUDA is checked before any work.
  if (o.device == "cuda") {
    const std::string why = loom::cudaUnavailableReason();
    if (!why.empty())
      fail("no CUDA device (" + why + ")");
  }
  // Fail before any work when the trace cannot be written at the end.
  if (!o.trace.empty()) {
    FILE *f = std::fopen(o.trace.c_str(), "wb");
    if (!f)
      fail("cannot write trace '" + o.trace + "': " + std::strerror(errno));
    std::fclose(f);
  }

  std::shared_ptr<loom::Model> model = loom::Model::load(o.artifact);
  if (o.special && model->hasTokenizer() &&
      !model->tokenizer().hasSpecialTokens())
    fail("--special: this artifact's vocabulary names no special tokens (a "
         "llama2.c tokenizer's); its prompts are plain text");
  std::optional<Conversation> chat;
  if (o.chat) {
    chat.emplace(o, *model);
    if (o.render_chat) {
      const std::string text = chat->render();
      writeOut(text);
      if (o.print_ids) {
        std::string line = "\n";
        std::vector<int32_t> ids =
            model->tokenizer().encode(text, false, false, true);
        for (size_t i = 0; i < ids.size(); ++i)
          line += (i ? " " : "") + std::to_string(ids[i]);
        writeOut(line + "\n");
      }
      return 0;
    }
  }
  if (o.encode_chunks)
    return encodeChunks(o, model);
  if (o.tokenize)
    return tokenizeTexts(*model, o.prompt, o.special);
  if (o.info)
    return printInfo(o.artifact, *model);
  // One seed for the sampler and a looped model's random initial states.
  const uint64_t seed =
      o.seed ? *o.seed : static_cast<uint64_t>(std::time(nullptr));
  loom::SessionOptions options;
  std::string device = o.device;
  if (device.empty()) {
    device = model->target() == "cuda" ? "cuda" : "cpu";
    const std::string why =
        device == "cuda" ? loom::cudaUnavailableReason() : std::string();
    if (!why.empty())
      fail("no CUDA device (" + why + "); this artifact was compiled with "
           "--target cuda: run it on the CPU with --device cpu");
  }
  options.device =
      device == "cuda" ? loom::Device::Cuda : loom::Device::Cpu;
  options.cuda_device = o.cuda_device;
  options.threads = o.threads;
  options.trace = !o.trace.empty();
  options.loop = loopOptions(o, *model, seed);
  loom::Session session(model, options);

  // Notes go to stderr after the trace is written, so a failed write is the
  // only line when it fails.
  std::string notes;
  int rc = o.bench_ttft    ? benchTtft(o, *model, session)
           : o.bench       ? bench(*model, session)
           : o.interactive ? chatLoop(o, *model, session, seed, *chat, notes)
                           : generate(o, *model, session, seed,
                                      chat ? &*chat : nullptr, notes);
  if (!o.trace.empty())
    session.writeTrace(o.trace);
  std::fputs(notes.c_str(), stderr);
  return rc;
}

} // namespace

int main(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const Failure &f) {
    std::fprintf(stderr, "loom-run: %s\n", f.message.c_str());
  } catch (const loom::Error &e) {
    std::fprintf(stderr, "loom-run: %s\n", e.what());
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "loom-run: out of memory\n");
  } catch (const std::exception &e) {
    std::fprintf(stderr, "loom-run: internal error: %s\n", e.what());
  }
  return 1;
}
