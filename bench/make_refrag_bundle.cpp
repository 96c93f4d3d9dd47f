// Writes a REFRAG bundle (chunk encoder, projector, policy; safetensors) with
// seeded random weights for a decoder of a given width and vocabulary, for
// benchmarks: the pair a real REFRAG model would have is not bundled. The
// layout and the __metadata__ are those frontends/refrag/RefragImporter.cpp
// reads (see ../shared/golden/refrag-tiny/README.md).
//
//   loom-make-refrag-bundle OUT.safetensors --decoder-dim 288 --vocab 32000
//       [--d-model 256] [--heads 4] [--layers 2] [--ffn 1024]
//       [--max-chunk-len 32] [--cls-id 1] [--projector-hidden N] [--seed 1]
//
// Encoder: d_model, heads of d_model / heads, pre-LN layers with an FFN of
// --ffn, positions for [CLS] + max_chunk_len tokens. Projector: d_model ->
// projector hidden (default: the decoder width) -> decoder width. Linear
// weights are uniform in [-0.5, 0.5] / sqrt(fan_in) (x 4 for the projector's
// last layer, so projected rows have a norm of a few units, like the
// decoder's token embeddings), biases uniform in [-0.05, 0.05], LayerNorm
// weights 1 + U(-0.1, 0.1), embeddings uniform in [-0.5, 0.5].
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {
int usage() {
  std::fprintf(stderr,
               "usage: loom-make-refrag-bundle OUT.safetensors --decoder-dim N "
               "--vocab N [--d-model 256] [--heads 4] [--layers 2] "
               "[--ffn 1024] [--max-chunk-len 32] [--cls-id 1] "
               "[--projector-hidden N] [--seed 1]\n");
  return 1;
}

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
} // namespace

int main(int argc, char **argv) {
  if (argc < 2)
    return usage();
  const char *out = argv[1];
  long decoderDim = 0, vocab = 0, dModel = 256, heads = 4, layers = 2,
       ffn = 1024, maxChunk = 32, clsId = 1, projHidden = 0, seed = 1;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc)
      return usage();
    char *end = nullptr;
    long v = std::strtol(argv[++i], &end, 10);
    if (*end != '\0' || v < 0 || (v == 0 && a != "--cls-id"))
      return std::fprintf(stderr, "bad value for %s\n", a.c_str()), 1;
    if (a == "--decoder-dim") decoderDim = v;
    else if (a == "--vocab") vocab = v;
    else if (a == "--d-model") dModel = v;
    else if (a == "--heads") heads = v;
    else if (a == "--layers") layers = v;
    else if (a == "--ffn") ffn = v;
    else if (a == "--max-chunk-len") maxChunk = v;
    else if (a == "--cls-id") clsId = v;
    else if (a == "--projector-hidden") projHidden = v;
    else if (a == "--seed") seed = v;
    else return usage();
  }
  if (!decoderDim || !vocab || dModel % heads || clsId >= vocab)
    return usage();
  if (!projHidden)
    projHidden = decoderDim;
  const long E = dModel, F = ffn, H = projHidden, D = decoderDim;

  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  // Sorted by name, the order the tensors are stored in.
  std::map<std::string, Tensor> tensors;
  auto fill = [&](const std::string &name, std::vector<int64_t> shape,
                  auto value) {
    Tensor &t = tensors[name];
    size_t n = 1;
    for (int64_t d : shape)
      n *= size_t(d);
    t.shape = std::move(shape);
    t.data.resize(n);
    for (float &x : t.data)
      x = value();
  };
  auto linear = [&](const std::string &prefix, long outDim, long inDim,
                    float gain = 1.0f) {
    float s = gain / std::sqrt(float(inDim));
    fill(prefix + ".weight", {outDim, inDim}, [&] { return u(rng) * s; });
    fill(prefix + ".bias", {outDim}, [&] { return u(rng) * 0.1f; });
  };
  auto layerNorm = [&](const std::string &prefix) {
    fill(prefix + ".weight", {E}, [&] { return 1.0f + u(rng) * 0.2f; });
    fill(prefix + ".bias", {E}, [&] { return u(rng) * 0.1f; });
  };
  fill("encoder.tok_emb", {vocab, E}, [&] { return u(rng); });
  fill("encoder.pos_emb", {maxChunk + 1, E}, [&] { return u(rng); });
  for (long l = 0; l < layers; ++l) {
    std::string p = "encoder.layers." + std::to_string(l) + ".";
    layerNorm(p + "ln1");
    for (const char *m : {"q", "k", "v", "o"})
      linear(p + "attn." + m, E, E);
    layerNorm(p + "ln2");
    linear(p + "ffn.fc1", F, E);
    linear(p + "ffn.fc2", E, F);
  }
  layerNorm("encoder.ln_f");
  linear("projector.fc1", H, E);
  linear("projector.fc2", D, H, 4.0f);
  linear("policy", 1, E);

  std::map<std::string, std::string> meta = {
      {"format", "loom-refrag-synthetic"},
      {"encoder.vocab_size", std::to_string(vocab)},
      {"encoder.d_model", std::to_string(E)},
      {"encoder.n_layers", std::to_string(layers)},
      {"encoder.n_heads", std::to_string(heads)},
      {"encoder.head_dim", std::to_string(E / heads)},
      {"encoder.ffn_dim", std::to_string(F)},
      {"encoder.max_chunk_len", std::to_string(maxChunk)},
      {"encoder.pos_emb_rows", std::to_string(maxChunk + 1)},
      {"encoder.cls_token_id", std::to_string(clsId)},
      {"projector.hidden", std::to_string(H)},
      {"decoder.dim", std::to_string(D)},
      {"seed", std::to_string(seed)}};

  std::string header = "{\"__metadata__\":{";
  bool first = true;
  for (const auto &[k, v] : meta) {
    header += std::string(first ? "" : ",") + "\"" + k + "\":\"" + v + "\"";
    first = false;
  }
  header += "}";
  uint64_t offset = 0;
  for (const auto &[name, t] : tensors) {
    header += ",\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i)
      header += (i ? "," : "") + std::to_string(t.shape[i]);
    uint64_t bytes = t.data.size() * sizeof(float);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  while (header.size() % 8)
    header += ' ';

  FILE *f = std::fopen(out, "wb");
  if (!f)
    return std::perror(out), 1;
  uint64_t len = header.size(); // little-endian host (x86-64, aarch64)
  std::fwrite(&len, sizeof len, 1, f);
  std::fwrite(header.data(), 1, header.size(), f);
  for (const auto &[name, t] : tensors)
    std::fwrite(t.data.data(), sizeof(float), t.data.size(), f);
  if (std::fclose(f) != 0)
    return std::perror(out), 1;
  return 0;
}
