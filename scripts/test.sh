#!/usr/bin/env bash
# Set up, build, and run every test (GoogleTest suites and lit tests) through
# ctest; ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd build
ctest --output-on-failure --timeout 900 -j2
