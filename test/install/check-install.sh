#!/usr/bin/env bash
# Installs this build into a fresh prefix as a user would (`cmake --install`)
# and checks what a deployment relies on (docs/install.md):
#   - the layout: bin/, lib/ with the versioned libloomrt, include/loom/,
#     lib/cmake/Loom/; the runtime component alone has no compiler;
#   - find_package(Loom 0.1) works for a separate project (the C examples,
#     built against the prefix and run), and find_package(Loom 0.2) does not;
#   - the prefix can be moved: the installed loomc and loom-run still run
#     from the new place, give the build tree's text, and loom-run loads the
#     installed libloomrt, without LLVM or MLIR.
# usage: check-install.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
BUILD=$1 SRC=$2 WORK=$3
fail() { echo "check-install: $*" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
P=$WORK/prefix
cmake --install "$BUILD" --prefix "$P" > "$WORK/install.log" \
  || { cat "$WORK/install.log"; fail "cmake --install failed"; }

for f in bin/loom-run bin/loomc bin/loom-opt \
         include/loom/loom.h include/loom/runtime.h include/loom/version.h \
         lib/cmake/Loom/LoomConfig.cmake lib/cmake/Loom/LoomConfigVersion.cmake \
         lib/cmake/Loom/LoomTargets.cmake; do
  [ -e "$P/$f" ] || fail "the prefix lacks $f"
done
# The library chain: the link name -> the soname -> the file.
[ "$(readlink "$P/lib/libloomrt.so")" = libloomrt.so.0.1 ] \
  || fail "lib/libloomrt.so does not point at libloomrt.so.0.1"
[ -f "$P/lib/libloomrt.so.0.1.0" ] || fail "the prefix lacks lib/libloomrt.so.0.1.0"
# Nothing of the build's internals: test binaries, compiler archives.
extra=$(cd "$P" && find . -name 'loom-*-test' -o -name '*.a' -o -name 'loom-write-*')
[ -z "$extra" ] || fail "the prefix holds build internals: $extra"
echo "layout: ok"

# A deployment installs the runtime component only: no compiler, no LLVM.
R=$WORK/runtime-only
cmake --install "$BUILD" --prefix "$R" --component runtime > "$WORK/runtime-only.log"
[ -x "$R/bin/loom-run" ] && [ -e "$R/lib/cmake/Loom/LoomConfig.cmake" ] \
  || fail "the runtime component lacks loom-run or the CMake package"
[ ! -e "$R/bin/loomc" ] && [ ! -e "$R/bin/loom-opt" ] \
  || fail "the runtime component installs the compiler"
echo "runtime component: ok"

# A separate project against the package: the C89 examples.
cmake -S "$SRC/runtime/examples" -B "$WORK/examples" -G Ninja \
  -DCMAKE_PREFIX_PATH="$P" > "$WORK/examples.log" 2>&1 \
  || { cat "$WORK/examples.log"; fail "configuring the examples against the prefix failed"; }
cmake --build "$WORK/examples" >> "$WORK/examples.log" 2>&1 \
  || { cat "$WORK/examples.log"; fail "building the examples against the prefix failed"; }
echo "find_package(Loom 0.1): ok"

# Before 1.0 another minor version is refused.
mkdir -p "$WORK/newer"
printf 'cmake_minimum_required(VERSION 3.20)\nproject(Newer LANGUAGES NONE)\nfind_package(Loom 0.2 REQUIRED)\n' \
  > "$WORK/newer/CMakeLists.txt"
if cmake -S "$WORK/newer" -B "$WORK/newer/build" -DCMAKE_PREFIX_PATH="$P" \
     > "$WORK/newer.log" 2>&1; then
  fail "find_package(Loom 0.2) accepted version 0.1"
fi
grep -q 'The following configuration files were considered but not accepted' "$WORK/newer.log" \
  || { cat "$WORK/newer.log"; fail "find_package(Loom 0.2) failed for another reason"; }
echo "find_package(Loom 0.2): refused"

# The example runs against the installed library (its rpath names the prefix).
model=$SRC/models/stories260K.bin tok=$SRC/models/tok512.bin
"$P/bin/loomc" "$model" --tokenizer "$tok" -o "$WORK/s.loom" --quiet
env -u LD_LIBRARY_PATH "$WORK/examples/loom-generate-example" "$WORK/s.loom" \
  "Once upon a time" 24 > "$WORK/example.txt"
grep -q '^Once upon a time' "$WORK/example.txt" || fail "the example printed: $(cat "$WORK/example.txt")"

# Move the prefix; the tools find their libraries relative to themselves.
mv "$P" "$WORK/moved"
P=$WORK/moved
env -u LD_LIBRARY_PATH "$P/bin/loomc" "$model" --tokenizer "$tok" -o "$WORK/moved.loom" --quiet
cmp -s "$WORK/s.loom" "$WORK/moved.loom" || fail "the moved loomc wrote another artifact"
run=(--prompt "Once upon a time" --steps 24 --temperature 0 --threads 2)
env -u LD_LIBRARY_PATH "$P/bin/loom-run" "$WORK/moved.loom" "${run[@]}" > "$WORK/installed.txt" 2> "$WORK/installed.err"
"$BUILD/bin/loom-run" "$WORK/moved.loom" "${run[@]}" > "$WORK/built.txt" 2> "$WORK/built.err"
cmp -s "$WORK/installed.txt" "$WORK/built.txt" \
  || fail "the installed loom-run printed '$(cat "$WORK/installed.txt")', the build's '$(cat "$WORK/built.txt")'"
libs=$(env -u LD_LIBRARY_PATH ldd "$P/bin/loom-run")
echo "$libs" | grep -q "libloomrt.so.0.1 => $P/\(bin/../\)\?lib/libloomrt.so.0.1" \
  || fail "the moved loom-run does not load the prefix's libloomrt: $libs"
if echo "$libs" | grep -q -e LLVM -e MLIR; then fail "loom-run needs LLVM/MLIR: $libs"; fi
env -u LD_LIBRARY_PATH "$P/bin/loom-run" --version
echo "moved prefix: ok"
