// Writes an artifact for loom-run's command-line tests, built with the
// test-only builders (so those tests need no compiler):
//
//   loom-write-test-artifact KIND PATH
//
// KIND is llama-random (a one-layer tiny llama), huginn-random (a small
// random Huginn, see support/huginn_builder.h) or huginn-tiny (the golden
// checkpoint in ../shared/golden/huginn-tiny). Without ../shared, huginn-tiny
// prints why and exits 77, the code the tests declare as "skipped".
#include "support/artifact_builder.h"
#include "support/huginn_builder.h"

#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

int main(int argc, char **argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: loom-write-test-artifact "
                         "llama-random|huginn-random|huginn-tiny PATH\n");
    return 2;
  }
  const std::string kind = argv[1];
  try {
    loom::test::ArtifactSpec spec;
    if (kind == "llama-random") {
      spec = loom::test::llamaArtifact(loom::test::tinyLlamaWeights(),
                                       loom::test::syntheticTokenizer(272));
    } else if (kind == "huginn-random") {
      spec = loom::test::huginnArtifact(loom::test::randomHuginnCheckpoint(3));
    } else if (kind == "huginn-tiny") {
      const std::string dir = LOOM_SHARED_DIR "/golden/huginn-tiny";
      if (!std::ifstream(dir + "/model.safetensors")) {
        std::printf("skipped: needs %s/model.safetensors (../shared is not "
                    "in a user checkout)\n",
                    dir.c_str());
        return 77;
      }
      spec = loom::test::huginnArtifact(loom::test::readHuginnCheckpoint(dir));
    } else {
      std::fprintf(stderr, "unknown artifact kind '%s'\n", kind.c_str());
      return 2;
    }
    const std::vector<uint8_t> bytes = spec.serialize();
    std::ofstream out(argv[2], std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char *>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) {
      std::fprintf(stderr, "loom-write-test-artifact: cannot write %s\n",
                   argv[2]);
      return 1;
    }
  } catch (const std::exception &e) {
    std::fprintf(stderr, "loom-write-test-artifact: %s\n", e.what());
    return 1;
  }
  return 0;
}
