// Writes a REFRAG artifact for loom-run's command-line tests, built with the
// test-only builders (so those tests need no compiler):
//
//   loom-write-refrag-artifact KIND PATH
//
// KIND is refrag-random (a one-layer tiny llama with a small random chunk
// encoder) or refrag-tiny (stories260K from models/ with the golden bundle
// ../shared/golden/refrag-tiny/refrag_tiny.safetensors, 24 rows per step).
// Without ../shared, refrag-tiny prints why and exits 77, the code the tests
// declare as "skipped".
#include "support/refrag_builder.h"

#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

int main(int argc, char **argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: loom-write-refrag-artifact "
                         "refrag-random|refrag-tiny PATH\n");
    return 2;
  }
  const std::string kind = argv[1];
  try {
    loom::test::ArtifactSpec spec;
    if (kind == "refrag-random") {
      loom::test::LlamaArtifactOptions o;
      o.max_tokens = 6;
      spec = loom::test::llamaArtifact(loom::test::tinyLlamaWeights(),
                                       loom::test::syntheticTokenizer(272), o);
      loom::test::addRefragPrograms(spec,
                                    loom::test::randomRefragBundle(272, 16));
    } else if (kind == "refrag-tiny") {
      const std::string bundle =
          LOOM_SHARED_DIR "/golden/refrag-tiny/refrag_tiny.safetensors";
      if (!std::ifstream(bundle)) {
        std::printf("skipped: needs %s (../shared is not in a user "
                    "checkout)\n",
                    bundle.c_str());
        return 77;
      }
      spec = loom::test::refragTinyArtifact(
          LOOM_SOURCE_DIR "/models/stories260K.bin",
          LOOM_SOURCE_DIR "/models/tok512.bin", bundle);
    } else {
      std::fprintf(stderr, "unknown artifact kind '%s'\n", kind.c_str());
      return 2;
    }
    const std::vector<uint8_t> bytes = spec.serialize();
    std::ofstream out(argv[2], std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char *>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) {
      std::fprintf(stderr, "loom-write-refrag-artifact: cannot write %s\n",
                   argv[2]);
      return 1;
    }
  } catch (const std::exception &e) {
    std::fprintf(stderr, "loom-write-refrag-artifact: %s\n", e.what());
    return 1;
  }
  return 0;
}
