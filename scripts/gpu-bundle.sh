#!/usr/bin/env bash
# Packs what the GPU checks need into one folder (default build-gpu-bundle/)
# for a machine that has an NVIDIA GPU and CUDA 13 but not this build: the
# runtime-only binaries and libraries, the golden artifacts compiled here by
# loomc (f32 and bf16), the golden outputs from ../shared, and the
# skeletons of the benchmark models (header + flatbuffer, no weights: the
# GPU machine fills them with loom-synth-weights). Then, on that machine,
# from the repository root:
#
#   bash scripts/gpu-check.sh build-gpu-bundle
#
# Needs a build with the CUDA backend (build/, LOOM_ENABLE_CUDA=ON) and
# ../shared. About 50 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUTDIR=${1:-build-gpu-bundle}
SHARED=${LOOM_SHARED_DIR:-../shared}
G=$SHARED/golden

for f in "$BUILD/bin/loomc" "$BUILD/bin/loom-run" "$BUILD/bin/loom-cuda-test" \
         "$BUILD/bin/loom-synth-weights" "$BUILD/bin/loom-make-checkpoint" \
         "$BUILD/bin/loom-bench-gemv" "$BUILD/bin/loom-make-huginn" \
         "$BUILD/lib/libloomrt_cuda.so" "$BUILD/lib/libloomrt_cuda_timeline.so"; do
  [ -e "$f" ] || { echo "gpu-bundle: missing $f (build with the CUDA backend first)" >&2; exit 1; }
done
[ -d "$G" ] || { echo "gpu-bundle: missing $G" >&2; exit 1; }

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"/{bin,lib,art,golden,skel}
cp "$BUILD"/bin/{loom-run,loom-cuda-test,loom-synth-weights,loom-bench-gemv} "$OUTDIR/bin/"
# libloomrt with its soname links (loom-run needs libloomrt.so.MAJOR.MINOR).
cp -P "$BUILD"/lib/libloomrt.so* "$BUILD"/lib/libloomrt_cuda{,_timeline}.so "$OUTDIR/lib/"
# oneTBB is not on the GPU machine.
for l in $(ldd "$BUILD/lib/libloomrt.so" | awk '/libtbb/ {print $3}'); do
  cp -L "$l" "$OUTDIR/lib/"
done
# Without their symbol tables (1.6 MB): the bundle and the repository
# travel together under a 64 MiB limit.
for f in "$OUTDIR"/bin/* "$OUTDIR"/lib/*.so*; do
  [ -L "$f" ] || strip --strip-unneeded "$f"
done

echo "gpu-bundle: golden artifacts"
for m in stories260K synthetic_untied; do
  model=models/$m.bin; tok=models/tok512.bin
  if [ "$m" = synthetic_untied ]; then
    model=$SHARED/models/synthetic_untied_v32000.bin; tok=$SHARED/models/tokenizer.bin
  fi
  # f32 in 64- and 3-row steps (prompts prefilled in several chunks), bf16.
  for v in f32:64 f32:3 bf16:64; do
    wt=${v%:*}; mt=${v#*:}
    "$BUILD/bin/loomc" "$model" --tokenizer "$tok" --target cuda --weight-type $wt \
      --max-tokens $mt -o "$OUTDIR/art/$m-$wt-mt$mt.loom" --quiet
  done
done
"$BUILD/bin/loomc" models/stories260K.bin --tokenizer models/tok512.bin --target cuda \
  --weight-type q8_0 -o "$OUTDIR/art/stories260K-q8_0.loom" --quiet
# ggml's K formats (Q4_K matrices, Q6_K and Q5_K ones in some roles, as in
# llama.cpp's Q4_K_M; random blocks), kept as stored.
"${PYTHON:-/usr/bin/python3}" test/frontends/gguf/Inputs/make_gguf.py --tokenizer models/tok512.bin \
  "$OUTDIR/kquant.gguf" --types default=Q4_K,attn_v=Q6_K,ffn_down=Q6_K,ffn_up=Q5_K,token_embd=Q6_K
"$BUILD/bin/loomc" "$OUTDIR/kquant.gguf" --target cuda -o "$OUTDIR/art/kquant.loom" --quiet
rm "$OUTDIR/kquant.gguf"
# A Llama 3-style model: byte-level vocabulary, rope theta 500000 and Llama
# 3.1's rope scaling (per-pair frequency factors).
"${PYTHON:-/usr/bin/python3}" test/frontends/byte-level-bpe/Inputs/bpe_vocab.py \
  "$OUTDIR/llama3-vocab" --pre llama3
"${PYTHON:-/usr/bin/python3}" test/frontends/gguf/Inputs/make_gguf.py \
  --tokenizer "$OUTDIR/llama3-vocab/tokenizer.json" "$OUTDIR/llama3.gguf" --dim 128 \
  --hidden 352 --heads 4 --kv-heads 2 --rope-theta 500000 --rope-scaling 8,1,32,1024
"$BUILD/bin/loomc" "$OUTDIR/llama3.gguf" --target cuda -o "$OUTDIR/art/llama3-rope-scaling.loom" --quiet
# A Qwen 2-style model: q/k/v biases, NEOX-ordered q/k.
"${PYTHON:-/usr/bin/python3}" test/frontends/gguf/Inputs/make_gguf.py \
  --tokenizer "$OUTDIR/llama3-vocab/tokenizer.json" "$OUTDIR/qwen2.gguf" --dim 128 \
  --hidden 352 --heads 4 --kv-heads 2 --rope-theta 1000000 --arch qwen2
"$BUILD/bin/loomc" "$OUTDIR/qwen2.gguf" --target cuda -o "$OUTDIR/art/qwen2.loom" --quiet
# A Phi-3-style model with a sliding window of 16 positions: the window
# cuts the prompt's prefill rows and every decode step.
"${PYTHON:-/usr/bin/python3}" test/frontends/gguf/Inputs/make_gguf.py --tokenizer models/tok512.bin \
  "$OUTDIR/phi3-window.gguf" --dim 128 --hidden 352 --heads 4 --kv-heads 4 --arch phi3 \
  --sliding-window 16
"$BUILD/bin/loomc" "$OUTDIR/phi3-window.gguf" --target cuda -o "$OUTDIR/art/phi3-window.loom" --quiet
# A Qwen 2-style model with YaRN rope scaling (factor 4 over 64 positions):
# per-pair frequency divisors and the rotation's scale.
"${PYTHON:-/usr/bin/python3}" test/frontends/gguf/Inputs/make_gguf.py --tokenizer models/tok512.bin \
  "$OUTDIR/qwen2-yarn.gguf" --dim 128 --hidden 352 --heads 4 --kv-heads 2 --arch qwen2 --yarn 4,64
"$BUILD/bin/loomc" "$OUTDIR/qwen2-yarn.gguf" --target cuda -o "$OUTDIR/art/qwen2-yarn.loom" --quiet
rm -r "$OUTDIR/llama3.gguf" "$OUTDIR/qwen2.gguf" "$OUTDIR/llama3-vocab" "$OUTDIR/phi3-window.gguf" \
  "$OUTDIR/qwen2-yarn.gguf"
"$BUILD/bin/loomc" --format=refrag --decoder models/stories260K.bin \
  --tokenizer models/tok512.bin --bundle "$G/refrag-tiny/refrag_tiny.safetensors" \
  --target cuda -o "$OUTDIR/art/refrag-tiny.loom" --quiet
"$BUILD/bin/loomc" "$G/huginn-tiny" --format=huginn --target cuda \
  -o "$OUTDIR/art/huginn-tiny.loom" --quiet
cp "$G"/stories260K_* "$G"/synthetic_untied_* "$OUTDIR/golden/"
mkdir -p "$OUTDIR/golden/huginn-tiny" "$OUTDIR/golden/tools"
cp "$G"/huginn-tiny/{manifest.json,logits_r*.bin,gen_*,adaptive_*} "$OUTDIR/golden/huginn-tiny/"
cp -r "$G/refrag-tiny" "$OUTDIR/golden/"
# The references, run there on new inputs (the *-general checks), with the
# weights they read: the refrag-tiny bundle and huginn-tiny's checkpoint.
cp "$G"/tools/{llama2c_ref.py,refrag_tiny.py,huginn_ref.py} "$OUTDIR/golden/tools/"
cp "$G"/huginn-tiny/{config.json,model.safetensors} "$OUTDIR/golden/huginn-tiny/"

# Benchmark skeletons: synthetic checkpoints of the stories110M shape and a
# 1B Llama shape, compiled to bf16 for CUDA (512 rows per prefill step),
# their weights dropped.
echo "gpu-bundle: benchmark skeletons"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
skel() {
  local name=$1; shift
  "$BUILD/bin/loom-make-checkpoint" "$tmp/$name.bin" "$@" --tokenizer-out "$tmp/$name.tok"
  "$BUILD/bin/loomc" "$tmp/$name.bin" --tokenizer "$tmp/$name.tok" --target cuda --weight-type bf16 \
    --max-tokens 512 -o "$tmp/$name.loom" --quiet
  "$BUILD/bin/loom-synth-weights" skeleton "$tmp/$name.loom" "$OUTDIR/skel/$name-bf16.skel"
  rm -f "$tmp/$name.bin" "$tmp/$name.loom"
}
# A looped model (Huginn's form) for the looped decode bench: bf16 from
# loomc's f32 artifact.
"$BUILD/bin/loom-make-huginn" "$tmp/looped" --dim 1024 --heads 16 --intermediate 2816 \
  --vocab 32000 --context 2048 --prelude 2 --core 4 --coda 2 --recurrence 16 > /dev/null
"$BUILD/bin/loomc" "$tmp/looped" --format=huginn --target cuda -o "$tmp/looped.loom" --quiet
"$BUILD/bin/loom-synth-weights" skeleton "$tmp/looped.loom" "$OUTDIR/skel/looped-bf16.skel" \
  --weight-type bf16
rm -rf "$tmp/looped" "$tmp/looped.loom"
skel 110m --dim 768 --hidden 2048 --layers 12 --heads 12 --kv-heads 12 --vocab 32000 --seq 1024
skel 1b --dim 2048 --hidden 8192 --layers 16 --heads 32 --kv-heads 8 --vocab 32000 --seq 2048
du -sh "$OUTDIR"
# What a device call carries: the bundle, the tracked files and the others
# that git does not ignore.
travel=$(( $(du -sb "$OUTDIR" | cut -f1) + $( (git ls-files -z; git ls-files -z --others --exclude-standard) | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) ))
echo "gpu-bundle: $((travel / 1048576)) MiB with the working tree (a device call carries at most 64 MiB)"
[ "$travel" -le $((64 * 1048576)) ] || { echo "gpu-bundle: over the 64 MiB a device call carries" >&2; exit 1; }
