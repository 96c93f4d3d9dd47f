// Access to ../shared (golden outputs and the larger checkpoints), which is
// present in the development tree but not in a user checkout. Tests that need
// it skip with a printed reason instead of failing or passing silently.
#ifndef LOOM_TEST_SUPPORT_SHARED_H
#define LOOM_TEST_SUPPORT_SHARED_H

#include <gtest/gtest.h>

#include <string>
#include <sys/stat.h>

#ifndef LOOM_SHARED_DIR
#error "LOOM_SHARED_DIR must be defined (see test/unit/CMakeLists.txt)"
#endif

namespace loom::test {

// The configured ../shared folder (CMake cache variable LOOM_SHARED_DIR).
inline std::string sharedDir() { return LOOM_SHARED_DIR; }

// sharedDir()/relpath.
inline std::string sharedPath(const std::string &relpath) {
  return sharedDir() + "/" + relpath;
}

inline bool sharedFileExists(const std::string &relpath) {
  struct stat info;
  return ::stat(sharedPath(relpath).c_str(), &info) == 0 &&
         S_ISREG(info.st_mode);
}

#ifdef LOOM_SOURCE_DIR
// The source tree root, for files bundled with the repository.
inline std::string sourceDir() { return LOOM_SOURCE_DIR; }
#endif

} // namespace loom::test

// Skips the current test, with the reason printed, when sharedDir()/relpath
// is not a file. Use it at the top of a TEST body or in SetUp().
#define LOOM_REQUIRE_SHARED(relpath)                                           \
  do {                                                                         \
    if (!::loom::test::sharedFileExists(relpath)) {                            \
      GTEST_SKIP() << "needs ../shared/" << (relpath)                          \
                   << " (not in a user checkout)";                             \
    }                                                                          \
  } while (0)

#endif // LOOM_TEST_SUPPORT_SHARED_H
