#!/usr/bin/env bash
# Installs what Loom needs on Debian 12 (as root, or with sudo) and configures
# and builds it with Ninja in ./build. Safe to re-run: installs only what is
# missing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build g++ python3 llvm-22-dev llvm-22-tools libmlir-22-dev
          mlir-22-tools libtbb-dev libflatbuffers-dev flatbuffers-compiler
          libgtest-dev python3-numpy python3-jinja2)
# ../shared's references (golden/tools) run at test time on new inputs:
# the Huginn one needs PyTorch (Debian's 1.13). Only where ../shared is.
if [ -d ../shared/golden/tools ]; then
  packages+=(python3-torch)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

BUILD_DIR=${BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -G Ninja -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
fi
# Two jobs: each MLIR translation unit needs ~0.5 GB and the machine has 2 cores.
ninja -C "$BUILD_DIR" -j"${JOBS:-2}"
