// Writes a Huginn/raven checkpoint (config.json + model.safetensors, the
// reference tensor names, f32) with seeded random weights, for benchmarks.
//
//   loom-make-huginn OUT_DIR --dim 288 --heads 6 --intermediate 768
//                    --vocab 32000 --context 1024 [--prelude 2 --core 4
//                    --coda 2 --recurrence 32 --seed 1]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace {
struct Tensor {
  std::string name;
  std::vector<long> shape;
  float scale; // uniform in [-scale, scale]; 0: ones
  float base;  // added (norm weights are 1 + noise)
};

int usage() {
  std::fprintf(stderr, "usage: loom-make-huginn OUT_DIR --dim N --heads N "
                       "--intermediate N --vocab N --context N [--prelude N "
                       "--core N --coda N --recurrence N --seed N]\n");
  return 1;
}
} // namespace

int main(int argc, char **argv) {
  if (argc < 2)
    return usage();
  std::string out = argv[1];
  long dim = 0, heads = 0, inter = 0, vocab = 0, context = 0, prelude = 2,
       core = 4, coda = 2, recurrence = 32, seed = 1;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    char *end = nullptr;
    long v = std::strtol(argv[i + 1], &end, 10);
    if (*end != '\0' || v <= 0)
      return std::fprintf(stderr, "bad value for %s\n", a.c_str()), 1;
    if (a == "--dim") dim = v;
    else if (a == "--heads") heads = v;
    else if (a == "--intermediate") inter = v;
    else if (a == "--vocab") vocab = v;
    else if (a == "--context") context = v;
    else if (a == "--prelude") prelude = v;
    else if (a == "--core") core = v;
    else if (a == "--coda") coda = v;
    else if (a == "--recurrence") recurrence = v;
    else if (a == "--seed") seed = v;
    else return usage();
  }
  if (!dim || !heads || !inter || !vocab || !context || dim % heads ||
      (dim / heads) % 2)
    return usage();
  ::mkdir(out.c_str(), 0755);

  long hd = dim / heads;
  float s = 1.0f / std::sqrt(float(dim)), si = 1.0f / std::sqrt(float(inter));
  std::vector<Tensor> tensors = {{"transformer.wte.weight", {vocab, dim}, 0.5f, 0},
                                 {"transformer.adapter.weight", {dim, 2 * dim}, s, 0},
                                 {"transformer.ln_f.weight", {dim}, 0.1f, 1}};
  auto block = [&](const std::string &p) {
    for (int n = 1; n <= 4; ++n)
      tensors.push_back({p + "norm_" + std::to_string(n) + ".weight", {dim}, 0.1f, 1});
    tensors.push_back({p + "attn.Wqkv.weight", {3 * dim, dim}, s, 0});
    tensors.push_back({p + "attn.qk_bias", {2, 1, heads, hd}, 0.1f, 0});
    tensors.push_back({p + "attn.proj.weight", {dim, dim}, 0.1f * s, 0});
    tensors.push_back({p + "mlp.fc.weight", {2 * inter, dim}, s, 0});
    tensors.push_back({p + "mlp.proj.weight", {dim, inter}, 0.1f * si, 0});
  };
  for (long i = 0; i < prelude; ++i)
    block("transformer.prelude." + std::to_string(i) + ".");
  for (long i = 0; i < core; ++i)
    block("transformer.core_block." + std::to_string(i) + ".");
  for (long i = 0; i < coda; ++i)
    block("transformer.coda." + std::to_string(i) + ".");

  // Header: offsets in order.
  std::string header = "{";
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint64_t n = 1;
    std::string shape;
    for (size_t d = 0; d < tensors[i].shape.size(); ++d) {
      n *= tensors[i].shape[d];
      shape += (d ? "," : "") + std::to_string(tensors[i].shape[d]);
    }
    header += (i ? "," : "") + std::string("\"") + tensors[i].name +
              "\":{\"dtype\":\"F32\",\"shape\":[" + shape +
              "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + n * 4) + "]}";
    offset += n * 4;
  }
  header += "}";
  while (header.size() % 8)
    header += ' ';
  std::string path = out + "/model.safetensors";
  FILE *f = std::fopen(path.c_str(), "wb");
  if (!f)
    return std::perror(path.c_str()), 1;
  uint64_t len = header.size();
  std::fwrite(&len, 8, 1, f);
  std::fwrite(header.data(), 1, header.size(), f);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> buf;
  for (const Tensor &t : tensors) {
    uint64_t n = 1;
    for (long d : t.shape)
      n *= d;
    buf.resize(n);
    for (float &x : buf)
      x = t.base + t.scale * u(rng);
    std::fwrite(buf.data(), 4, n, f);
  }
  if (std::fclose(f) != 0)
    return std::perror(path.c_str()), 1;

  std::string cpath = out + "/config.json";
  FILE *c = std::fopen(cpath.c_str(), "w");
  if (!c)
    return std::perror(cpath.c_str()), 1;
  std::fprintf(c,
               "{\n  \"architectures\": [\"RavenForCausalLM\"],\n"
               "  \"n_embd\": %ld,\n  \"num_attention_heads\": %ld,\n"
               "  \"num_key_value_heads\": %ld,\n  \"vocab_size\": %ld,\n"
               "  \"block_size\": %ld,\n  \"n_layers_in_prelude\": %ld,\n"
               "  \"n_layers_in_recurrent_block\": %ld,\n"
               "  \"n_layers_in_coda\": %ld,\n  \"intermediate_size\": %ld,\n"
               "  \"mean_recurrence\": %ld,\n  \"rope_base\": 50000.0,\n"
               "  \"norm_eps\": 1e-06,\n  \"qk_bias\": true,\n  \"bias\": false,\n"
               "  \"tie_embeddings\": true,\n  \"injection_type\": \"linear\",\n"
               "  \"block_class_name\": \"SandwichBlock\",\n"
               "  \"mlp_class_name\": \"GatedMLP\",\n  \"nonlin_name\": \"SiLU\",\n"
               "  \"norm_class_name\": \"RMSNorm_llama\"\n}\n",
               dim, heads, heads, vocab, context, prelude, core, coda, inter,
               recurrence);
  return std::fclose(c) == 0 ? 0 : 1;
}
