#!/usr/bin/env bash
# The main job: set up, build, compile the bundled stories260K model into an
# artifact and generate text from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./build/bin/loomc models/stories260K.bin --tokenizer models/tok512.bin -o build/stories260K.loom
./build/bin/loom-run build/stories260K.loom --prompt "Once upon a time" --steps 256 --temperature 0
