// Writes a llama2.c-format checkpoint with seeded random weights of a given
// shape, for benchmarks (the real 15M/110M checkpoints are not bundled).
//
//   loom-make-checkpoint OUT.bin --dim 288 --hidden 768 --layers 6 --heads 6
//                        --kv-heads 6 --vocab 32000 --seq 1024 [--seed 1]
//                        [--unshared] [--tokenizer-out TOK.bin]
//
// --tokenizer-out also writes a llama2.c tokenizer.bin of the same vocabulary
// (the special and byte pieces of llama2.c, then "t<id>" pieces).
//
// Weights are uniform in [-0.5, 0.5] / sqrt(fan_in), norms are 1.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {
int usage() {
  std::fprintf(stderr,
               "usage: loom-make-checkpoint OUT.bin --dim N --hidden N "
               "--layers N --heads N --kv-heads N --vocab N --seq N "
               "[--seed N] [--unshared]\n");
  return 1;
}
} // namespace

int main(int argc, char **argv) {
  if (argc < 2)
    return usage();
  const char *out = argv[1];
  long dim = 0, hidden = 0, layers = 0, heads = 0, kvHeads = 0, vocab = 0,
       seq = 0, seed = 1;
  bool unshared = false;
  std::string tokenizerOut;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--unshared") {
      unshared = true;
      continue;
    }
    if (i + 1 >= argc)
      return usage();
    if (a == "--tokenizer-out") {
      tokenizerOut = argv[++i];
      continue;
    }
    char *end = nullptr;
    long v = std::strtol(argv[++i], &end, 10);
    if (*end != '\0' || v <= 0)
      return std::fprintf(stderr, "bad value for %s\n", a.c_str()), 1;
    if (a == "--dim") dim = v;
    else if (a == "--hidden") hidden = v;
    else if (a == "--layers") layers = v;
    else if (a == "--heads") heads = v;
    else if (a == "--kv-heads") kvHeads = v;
    else if (a == "--vocab") vocab = v;
    else if (a == "--seq") seq = v;
    else if (a == "--seed") seed = v;
    else return usage();
  }
  if (!dim || !hidden || !layers || !heads || !kvHeads || !vocab || !seq ||
      dim % heads || heads % kvHeads)
    return usage();
  FILE *f = std::fopen(out, "wb");
  if (!f)
    return std::perror(out), 1;
  int32_t header[7] = {int32_t(dim),     int32_t(hidden),
                       int32_t(layers),  int32_t(heads),
                       int32_t(kvHeads), int32_t(unshared ? -vocab : vocab),
                       int32_t(seq)};
  std::fwrite(header, sizeof(header), 1, f);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  std::vector<float> buf;
  auto emit = [&](size_t n, float scale, bool ones) {
    buf.resize(n);
    for (float &x : buf)
      x = ones ? 1.0f : u(rng) * scale;
    std::fwrite(buf.data(), sizeof(float), n, f);
  };
  long headDim = dim / heads, kv = kvHeads * headDim;
  float sD = 1.0f / std::sqrt(float(dim)), sH = 1.0f / std::sqrt(float(hidden));
  emit(size_t(vocab) * dim, 1.0f, false);
  emit(size_t(layers) * dim, 0, true);
  emit(size_t(layers) * dim * dim, sD, false);
  emit(size_t(layers) * kv * dim, sD, false);
  emit(size_t(layers) * kv * dim, sD, false);
  emit(size_t(layers) * dim * dim, sD, false);
  emit(size_t(layers) * dim, 0, true);
  emit(size_t(layers) * hidden * dim, sD, false);
  emit(size_t(layers) * dim * hidden, sH, false);
  emit(size_t(layers) * hidden * dim, sD, false);
  emit(size_t(dim), 0, true);
  emit(size_t(seq) * headDim, 0, true); // legacy RoPE tables, unused
  if (unshared)
    emit(size_t(vocab) * dim, sD, false);
  if (std::fclose(f) != 0)
    return std::perror(out), 1;
  if (!tokenizerOut.empty()) {
    FILE *t = std::fopen(tokenizerOut.c_str(), "wb");
    if (!t)
      return std::perror(tokenizerOut.c_str()), 1;
    int32_t maxLen = 16;
    std::fwrite(&maxLen, 4, 1, t);
    for (long id = 0; id < vocab; ++id) {
      char piece[32];
      if (id == 0) std::snprintf(piece, sizeof piece, "<unk>");
      else if (id == 1) std::snprintf(piece, sizeof piece, "\n<s>\n");
      else if (id == 2) std::snprintf(piece, sizeof piece, "\n</s>\n");
      else if (id < 259) std::snprintf(piece, sizeof piece, "<0x%02lX>", id - 3);
      else std::snprintf(piece, sizeof piece, "t%ld", id);
      float score = id < 259 ? 0.0f : -float(id);
      int32_t len = int32_t(std::strlen(piece));
      std::fwrite(&score, 4, 1, t);
      std::fwrite(&len, 4, 1, t);
      std::fwrite(piece, 1, len, t);
    }
    if (std::fclose(t) != 0)
      return std::perror(tokenizerOut.c_str()), 1;
  }
  return 0;
}
