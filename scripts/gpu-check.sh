#!/usr/bin/env bash
# The CUDA backend's checks on a machine with an NVIDIA GPU, from the bundle
# scripts/gpu-bundle.sh made on the build machine (docs/cuda.md):
#   1. loom-cuda-test: CUDA vs CPU on the same artifacts (prefill paths,
#      decode graphs, on-device sampling, placeholders, REFRAG programs, bf16),
#      also under each variant (the checks that time nothing run 4 at a
#      time: GPU_CHECK_JOBS);
#   2. the golden outputs on the GPU: stories260K and synthetic_untied in f32
#      (CPU tolerance 1e-4 + 1e-4 |ref|, greedy ids and text equal, prompts
#      prefilled in 64- and 3-row steps), stories260K in bf16 (the bf16 bound
#      of check_bf16.py), refrag-tiny k = 4 and 8, every case, huginn-tiny
#      (iterations 1..32, KV policies, warm start, adaptive exit); and, on
#      new inputs, the references of ../shared/golden/tools run there:
#      random prompts of stories260K (llama2c_ref.py), REFRAG contexts and
#      chunk sizes (refrag_tiny.py), Huginn iteration counts, KV policies
#      and exits (huginn_ref.py, needs PyTorch);
#   3. CPU and CUDA on the same artifacts: logits and greedy ids, and the
#      ids sampled with temperature and top-p (device sampler, and its host
#      fallback for wide nuclei);
#   4. loom-bench-gemv: the decode GEMV in every configuration, and (each
#      on its own) the bulk-copy GEMV experiment and the 1B's GEMV chain as
#      launches against one persistent kernel;
#   5. looped decode piece by piece and as one graph (LOOM_CUDA_LOOP_GRAPH);
#   6. the timeline build of the plugin (LOOM_CUDA_TIMELINE): the same text
#      as the plain build, its unit tests, every replay attributed;
#   7. bench/bench_cuda.py: Loom vs PyTorch eager, 110M and 1B shapes, bf16,
#      with the decode graph's timeline by kernel class and the variants
#      (the experiments: the cluster merge, the early K/V loads alone, with
#      the cluster merge and with 16 warps, per-class GEMV splits, GEMV
#      loads ahead, GEMVs streamed by bulk copies; the unit tests run under
#      most of them too).
# Run from the repository root:  bash scripts/gpu-check.sh [BUNDLE]
# Prints "gpu-check: N failures (S s)" last, after the failed steps'
# names, and exits non-zero on any failure;
# with $OUT set the log and the benchmark's JSON go there too.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
B=$(cd "${1:-build-gpu-bundle}" && pwd)
OUTDIR=${OUT:-$B/out}
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/gpu-check.log") 2>&1
export LD_LIBRARY_PATH="$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1
W=$(mktemp -d)
RUN="$B/bin/loom-run"
G="$B/golden"
A="$B/art"
# LOOM_CHECK_DEVICE=cpu runs the same checks on the CPU (to try the script
# on a machine without a GPU; the unit tests then skip, and what needs the
# GPU itself fails: the CPU-vs-CUDA comparisons, loom-bench-gemv, the bench).
DEV=${LOOM_CHECK_DEVICE:-cuda}
failures=0
failed=""
# GPU_CHECK_SKIP=REGEX leaves out the steps whose names match (a rerun of
# what failed within the device time left), e.g. 'gemv|prefill|bench$';
# GPU_CHECK_ONLY=REGEX runs only those that match (e.g. '^bench$' first,
# then the rest with GPU_CHECK_SKIP='^bench$', when time is short).
# Whether the step named $1 runs (GPU_CHECK_SKIP / GPU_CHECK_ONLY).
selected() {
  if [ -n "${GPU_CHECK_SKIP:-}" ] && [[ $1 =~ $GPU_CHECK_SKIP ]]; then
    echo "=== SKIP $1 (GPU_CHECK_SKIP)"
    return 1
  fi
  ! { [ -n "${GPU_CHECK_ONLY:-}" ] && ! [[ $1 =~ $GPU_CHECK_ONLY ]]; }
}
# The step $1's outcome from its exit status $2 after $3 seconds.
verdict() {
  if [ "$2" = 0 ]; then
    echo "=== PASS $1 ($3 s)"
  elif [ "$2" = 77 ] && [ "$DEV" != cuda ]; then # a CUDA test, no GPU
    echo "=== SKIP $1 ($3 s)"
  else
    echo "=== FAIL $1 ($3 s)"
    failures=$((failures + 1))
    failed="$failed $1"
  fi
}
step() {
  local name=$1
  shift
  selected "$name" || return 0
  echo "=== $name"
  local t0=$SECONDS rc=0
  if declare -F "$1" > /dev/null; then
    "$@" || rc=$?
  else
    timeout "${STEP_TIMEOUT:-240}" "$@" || rc=$?
  fi
  verdict "$name" $rc $((SECONDS - t0))
}
# Steps that may run beside each other (the checks that time nothing:
# independent processes sharing the GPU), GPU_CHECK_JOBS (4) at a time, a
# shell function in a subshell whose $W is a folder of its own. pstep
# starts one; pwait waits for them all and prints each one's output and
# outcome in the order they were started, as step would have. Device time
# is what the checks are short of, and most of them leave the GPU idle
# while their CPU side (a reference, the comparison) runs.
JOBS=${GPU_CHECK_JOBS:-4}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || {
  echo "gpu-check: GPU_CHECK_JOBS must be a positive integer, not '$JOBS'"
  rm -rf "$W"
  exit 2
}
pnames=()
ppids=()
running() {
  local n=0 p
  for p in ${ppids[@]+"${ppids[@]}"}; do
    kill -0 "$p" 2> /dev/null && n=$((n + 1))
  done
  echo $n
}
pstep() {
  local name=$1
  shift
  selected "$name" || return 0
  while [ "$(running)" -ge "$JOBS" ]; do
    sleep 0.5
  done
  (
    log="$W/pstep-$name.log" status="$W/pstep-$name.rc"
    W="$W/pstep-$name.d"
    mkdir -p "$W"
    t0=$SECONDS
    rc=0
    if declare -F "$1" > /dev/null; then
      "$@" > "$log" 2>&1 || rc=$?
    else
      timeout "${STEP_TIMEOUT:-240}" "$@" > "$log" 2>&1 || rc=$?
    fi
    echo "$rc $((SECONDS - t0))" > "$status"
  ) &
  pnames+=("$name")
  ppids+=($!)
}
pwait() {
  local p name rc secs
  for p in ${ppids[@]+"${ppids[@]}"}; do
    wait "$p"
  done
  for name in ${pnames[@]+"${pnames[@]}"}; do
    echo "=== $name"
    cat "$W/pstep-$name.log"
    rc=1 secs=0
    read -r rc secs < "$W/pstep-$name.rc" || echo "(no exit status recorded)"
    verdict "$name" "$rc" "$secs"
  done
  pnames=()
  ppids=()
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
timeout 120 "$RUN" "$A/stories260K-f32-mt64.loom" --device "$DEV" --prompt "Once upon a time" \
  --steps 32 --temperature 0 || { failures=$((failures + 1)); failed="$failed smoke"; }

pstep cuda-unit "$B/bin/loom-cuda-test"
# The same with every GEMV kernel shape forced (loads in flight, warps per
# column: LOOM_CUDA_GEMV=U,S), and with RoPE + append as their own kernel.
for g in 4,1 8,2 8,4 4,4; do
  pstep "cuda-unit-gemv-$g" env LOOM_CUDA_GEMV=$g "$B/bin/loom-cuda-test" --gtest_brief=1
done
pstep cuda-unit-no-rope-fold env LOOM_CUDA_ROPE_FOLD=0 "$B/bin/loom-cuda-test" --gtest_brief=1
# Decode attention's splits merged in a thread block cluster (an experiment).
pstep cuda-unit-attn-cluster env LOOM_CUDA_ATTN_MERGE=cluster "$B/bin/loom-cuda-test" --gtest_brief=1
# Decode attention's cached K/V rows loaded before the programmatic wait,
# batches double-buffered (an experiment).
pstep cuda-unit-attn-early env LOOM_CUDA_ATTN_EARLY=1 "$B/bin/loom-cuda-test" --gtest_brief=1
# The same with blocks of 16 warps (an experiment).
pstep cuda-unit-attn-early-16 env LOOM_CUDA_ATTN_EARLY=1 LOOM_CUDA_ATTN_WARPS=16 \
  "$B/bin/loom-cuda-test" --gtest_brief=1
# One-row GEMVs with two groups of loads before the wait (an experiment).
pstep cuda-unit-gemv-ahead env LOOM_CUDA_GEMV_AHEAD=1 "$B/bin/loom-cuda-test" --gtest_brief=1
# One-row bf16 GEMVs streamed by bulk copies through 6 stages (an experiment).
pstep cuda-unit-gemv-bulk env LOOM_CUDA_GEMV_BULK=6 "$B/bin/loom-cuda-test" --gtest_brief=1
# One-row steps' layers as one persistent kernel (an experiment), at 2 and 1
# blocks a multiprocessor: the whole suite (its models that take the
# kernel's form use it; PersistentDecodeAgrees checks that they do).
for p in 2 1; do
  pstep "cuda-unit-persistent-$p" env LOOM_CUDA_PERSISTENT=$p "$B/bin/loom-cuda-test" --gtest_brief=1
done
# Looped models' one-row steps piece by piece (LOOM_CUDA_LOOP_GRAPH=0; as
# one CUDA graph by default): the loop tests (the graph_* cases keep their
# graphs), and the huginn-tiny golden and references below.
pstep cuda-unit-loop-pieces env LOOM_CUDA_LOOP_GRAPH=0 "$B/bin/loom-cuda-test" \
  --gtest_brief=1 --gtest_filter='*CudaLoop*'
# Both prefill attention kernels (the automatic choice takes the tiled one
# only for steps with enough heads x row tiles to fill the GPU), and the
# tensor-core one (an experiment: head dims 16, 32, 64, 128).
for a in tiled rows tc; do
  pstep "cuda-unit-prefill-$a" env LOOM_CUDA_PREFILL_ATTN=$a "$B/bin/loom-cuda-test" --gtest_brief=1
done
pwait  # nothing else runs while the benchmarks time
# The decode GEMV kernels alone: every configuration checked and timed on
# the benchmark models' matrices.
step bench-gemv "$B/bin/loom-bench-gemv"
# The GEMV streamed through shared memory by bulk copies (an experiment for
# a persistent decode kernel), on its own and briefly: a hang must not cost
# the device time.
STEP_TIMEOUT=60 step bench-gemv-bulk "$B/bin/loom-bench-gemv" --bulk --shapes 1b
# The 1B's GEMVs chained over 16 layers: one programmatic launch each (the
# decode graph's way) against one persistent kernel with grid barriers.
STEP_TIMEOUT=60 step bench-gemv-chain "$B/bin/loom-bench-gemv" --chain
for m in stories260K synthetic_untied; do
  pstep "golden-$m-f32" python3 test/e2e/Inputs/check_golden.py --loomc none \
    --loom-run "$RUN" --model none --tokenizer none --workdir "$W/$m" --device "$DEV" \
    --artifacts-from "$A" --name "$m-f32" "$G/${m}_once_upon_a_time.json" \
    "$G/${m}_the_little_dog.json" "$G/${m}_empty.json"
done
pstep golden-stories260K-bf16 python3 test/e2e/Inputs/check_bf16.py --loomc none \
  --loom-run "$RUN" --model models/stories260K.bin --tokenizer none --workdir "$W/bf16" \
  --device "$DEV" --artifacts-from "$A" --name stories260K \
  "$G/stories260K_once_upon_a_time.json" "$G/stories260K_the_little_dog.json" \
  "$G/stories260K_empty.json"
pstep golden-refrag-tiny python3 test/e2e/Inputs/check_refrag.py --loomc none \
  --loom-run "$RUN" --decoder none --tokenizer none --golden "$G/refrag-tiny" \
  --workdir "$W/refrag" --device "$DEV" --artifact "$A/refrag-tiny.loom"

pstep golden-huginn-tiny python3 test/e2e/Inputs/check_huginn.py --loomc none \
  --loom-run "$RUN" --golden "$G/huginn-tiny" --workdir "$W/huginn" --device "$DEV" \
  --artifact "$A/huginn-tiny.loom"
pstep golden-huginn-tiny-loop-pieces env LOOM_CUDA_LOOP_GRAPH=0 python3 \
  test/e2e/Inputs/check_huginn.py --loomc none --loom-run "$RUN" --golden "$G/huginn-tiny" \
  --workdir "$W/huginn-pieces" --device "$DEV" --artifact "$A/huginn-tiny.loom"

# The references on new inputs (test/e2e/*-general.test on the GPU).
pstep general-stories260K-f32 python3 test/e2e/Inputs/check_consistency.py --loomc none \
  --loom-run "$RUN" --model models/stories260K.bin --tokenizer none --workdir "$W/general" \
  --vocab 512 --context 512 --reference "$G/tools" --device "$DEV" \
  --artifacts "$A/stories260K-f32-mt64.loom,$A/stories260K-f32-mt3.loom"
pstep general-refrag python3 test/e2e/Inputs/check_refrag_general.py --loomc none \
  --loom-run "$RUN" --decoder models/stories260K.bin --tokenizer models/tok512.bin \
  --golden "$G" --workdir "$W/refrag-general" --device "$DEV" --artifact "$A/refrag-tiny.loom"
pstep general-huginn python3 test/e2e/Inputs/check_huginn_general.py --loomc none \
  --loom-run "$RUN" --golden "$G" --workdir "$W/huginn-general" --device "$DEV" \
  --artifact "$A/huginn-tiny.loom"
pstep general-huginn-loop-pieces env LOOM_CUDA_LOOP_GRAPH=0 python3 \
  test/e2e/Inputs/check_huginn_general.py --loomc none --loom-run "$RUN" --golden "$G" \
  --workdir "$W/huginn-general-pieces" --device "$DEV" --artifact "$A/huginn-tiny.loom"

# CPU and CUDA on the same artifact: every position's logits of a prompt
# and 200 greedy steps (|d| <= 1e-4 (1 + |cpu|)), and the greedy ids with
# and without the logits dump (forward graph / decode graph with the
# on-device argmax).
same_artifact() {
  local art=$1 tol=$2 ids
  ids=1,$(seq -s, 3 40)
  timeout 120 "$RUN" "$art" --device cpu --prompt-ids "$ids" --steps 200 --temperature 0 \
    --print-ids --dump-logits "$W/cpu.bin" > "$W/cpu.ids" 2>/dev/null || return 1
  timeout 120 "$RUN" "$art" --device cuda --prompt-ids "$ids" --steps 200 --temperature 0 \
    --print-ids --dump-logits "$W/cuda.bin" > "$W/cuda.ids" 2>/dev/null || return 1
  timeout 120 "$RUN" "$art" --device cuda --prompt-ids "$ids" --steps 200 --temperature 0 \
    --print-ids > "$W/cuda-graph.ids" 2>/dev/null || return 1
  python3 - "$W/cpu.bin" "$W/cuda.bin" "$tol" "$W/cpu.ids" "$W/cuda.ids" "$W/cuda-graph.ids" <<'EOF'
import struct, sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
x = struct.unpack("<%df" % (len(a) // 4), a); y = struct.unpack("<%df" % (len(b) // 4), b)
tol = float(sys.argv[3])
d = max(abs(p - q) / (1 + abs(p)) for p, q in zip(x, y)) if x else 0
m = max(abs(p - q) for p, q in zip(x, y))
ids = [open(f).read().split() for f in sys.argv[4:]]
print("  %d logits, max |d| %.3g, max |d|/(1+|cpu|) %.3g (limit %g); ids cpu == cuda: %s, == cuda graph: %s (first %s)"
      % (len(x), m, d, tol, ids[0] == ids[1], ids[0] == ids[2], " ".join(ids[0][:8])))
sys.exit(0 if len(x) == len(y) and d <= tol and ids[0] == ids[1] == ids[2] else 1)
EOF
}
pstep same-artifact-stories260K-f32 same_artifact "$A/stories260K-f32-mt64.loom" 1e-4
pstep same-artifact-synthetic-f32 same_artifact "$A/synthetic_untied-f32-mt3.loom" 1e-4
# Q8_0 matrices: decoded exactly to f32 at upload on CUDA, in registers on
# the CPU, so within the f32 bound too.
pstep same-artifact-stories260K-q8_0 same_artifact "$A/stories260K-q8_0.loom" 1e-4
# K-format (Q4_K, Q5_K, Q6_K) blocks, likewise decoded at upload.
pstep same-artifact-kquant same_artifact "$A/kquant.loom" 1e-4
# Llama 3-style: Llama 3.1's rope frequency factors, in the prefill's
# rope + append and in the decode attention's folded rope.
pstep same-artifact-llama3-rope-scaling same_artifact "$A/llama3-rope-scaling.loom" 1e-4
# Qwen 2-style: q/k/v biases (the fused attention's qk_bias and v_bias).
pstep same-artifact-qwen2 same_artifact "$A/qwen2.loom" 1e-4
# Phi-3-style: a sliding window of 16 positions (the per-row prefill kernel
# and the split decode kernel over the window).
pstep same-artifact-phi3-window same_artifact "$A/phi3-window.loom" 1e-4
# YaRN rope scaling: frequency divisors and the scale of the rotation.
pstep same-artifact-qwen2-yarn same_artifact "$A/qwen2-yarn.loom" 1e-4
# The persistent decode kernel (an experiment) on loomc's artifacts: the
# decode graph's layers as one kernel, against the CPU as above.
same_artifact_persistent() {
  LOOM_CUDA_PERSISTENT=2 same_artifact "$@"
}
pstep same-artifact-stories260K-f32-persistent same_artifact_persistent \
  "$A/stories260K-f32-mt64.loom" 1e-4
pstep same-artifact-synthetic-f32-persistent same_artifact_persistent \
  "$A/synthetic_untied-f32-mt3.loom" 1e-4
pstep same-artifact-llama3-rope-scaling-persistent same_artifact_persistent \
  "$A/llama3-rope-scaling.loom" 1e-4
pstep same-artifact-phi3-window-persistent same_artifact_persistent "$A/phi3-window.loom" 1e-4
# Each prefill attention forced (tiled, a block per row, tensor cores)
# against the CPU on head_dim-32 models whose 39-token prompt is one long
# step (the golden models' prompts are short, and their head_dim 8 never
# reaches the tensor-core kernel).
same_artifact_prefill() {
  local a=$1
  shift
  LOOM_CUDA_PREFILL_ATTN=$a same_artifact "$@"
}
for a in tiled rows tc; do
  pstep "same-artifact-llama3-prefill-$a" same_artifact_prefill $a "$A/llama3-rope-scaling.loom" 1e-4
  pstep "same-artifact-qwen2-prefill-$a" same_artifact_prefill $a "$A/qwen2.loom" 1e-4
done

# Sampling on the device (the decode graph's sampler) against the CPU's, same
# seed, at four temperature / top-p settings. The nuclei of the first two fit
# the device sort (up to ~700 ids on the synthetic model); at temperature 3
# the synthetic model's nucleus holds ~24000 of its 32000 ids, which the
# host fallback chooses. The two devices' logits and float sums differ in
# the last bits, so where the coin lands within that of a boundary between
# two ids they may pick either: on the synthetic model (32000 ids of
# ~3e-5 each, cumulative sums in f32 over thousands of them) that happens
# every few dozen steps (seen at steps 14 and 37 of 110 on an H100). So the
# ids must be equal until a first difference, if any, and there both
# picks must hold the step's coin (xorshift64*, the sampler's stream,
# replayed here) within 3e-5 of their cumulative interval over the CPU's
# logits for that prefix (float64, in the sampler's order: ids, or the
# nucleus most likely first with the coin times its mass), plus, in a
# nucleus, the mass of the ids tied with the pick within 1e-5 relative
# (their order is the devices' rounding: on an H200, step 51 at
# temperature 3 parted on ids 6274 and 27241 of equal probability, which
# the CPUs of two machines order differently too); an off-by-one or a
# wrong temperature misses that by far more.
same_sampled() {
  local art=$1 ids t p
  ids=1,$(seq -s, 3 20)
  for tp in 0.8:0.9 1.0:0.5 1.2:1.0 3.0:0.95; do
    t=${tp%:*} p=${tp#*:}
    timeout 120 "$RUN" "$art" --device cpu --prompt-ids "$ids" --steps 200 --temperature "$t" \
      --top-p "$p" --seed 11 --print-ids > "$W/cpu-s.ids" 2>/dev/null || return 1
    timeout 120 "$RUN" "$art" --device cuda --prompt-ids "$ids" --steps 200 --temperature "$t" \
      --top-p "$p" --seed 11 --print-ids > "$W/cuda-s.ids" 2>/dev/null || return 1
    python3 - "$W/cpu-s.ids" "$W/cuda-s.ids" "$t" "$p" "$RUN" "$art" "$ids" "$W/flip.bin" <<'PY' || return 1
import math, struct, subprocess, sys
a = open(sys.argv[1]).read().split(); b = open(sys.argv[2]).read().split()
T, P = float(sys.argv[3]), float(sys.argv[4])
run, art, prompt, dump = sys.argv[5:9]
k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
print("  temperature %s top-p %s: %d of %d (cuda: %d) ids equal before the first difference"
      % (sys.argv[3], sys.argv[4], min(len(a), len(b)) if k is None else k, len(a), len(b)))
if not a or not b:
    sys.exit(1)
if k is None:
    # Equal as far as both go; a shorter run stopped at an end token the
    # other did not draw (a difference this check cannot place).
    sys.exit(0 if len(a) == len(b) else 1)
# After a first difference the runs part ways (and may stop at different
# lengths): only the step where they part is checked.
# The coin of step k: xorshift64* from seed 11, the top 24 bits.
M64 = (1 << 64) - 1
st = 11
for _ in range(k + 1):
    st ^= st >> 12; st ^= (st << 25) & M64; st ^= st >> 27
    coin = (((st * 0x2545F4914F6CDD1D) & M64) >> 40) / 16777216.0
subprocess.run([run, art, "--device", "cpu", "--prompt-ids", ",".join([prompt] + a[:k]),
                "--steps", "0", "--dump-logits", dump], check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
raw = open(dump, "rb").read()
# The last row: the distribution of step k.
n_rows = len(",".join([prompt] + a[:k]).split(","))
V = len(raw) // 4 // n_rows
row = [v / T for v in struct.unpack_from("<%df" % V, raw, len(raw) - 4 * V)]
mx = max(row)
w = [math.exp(v - mx) for v in row]
tot = sum(w)
pr = [x / tot for x in w]
eps = 3e-5
if P >= 1.0:
    order, coins = list(range(V)), [coin]
else:
    # The nucleus ends where the mass passes top_p: within eps of it, f32
    # sums may cut one id earlier or later (another mass for the coin).
    order = sorted(range(V), key=lambda i: (-pr[i], i))
    coins, mass = [], 0.0
    for i in order:
        mass += pr[i]
        if mass > P - eps:
            coins.append(coin * mass)
        if mass > P + eps:
            break
lo, where = 0.0, {}
for i in order:
    where[i] = (lo, lo + pr[i]); lo += pr[i]
def miss(i):
    l, h = where[int(i)]
    return min(max(0.0, l - c, c - h) for c in coins)
# In a nucleus the order is by probability: ids the two devices' logits
# cannot order (tied, or within 1e-5 of each other relative: the logits
# differ in the last bits) may stand on either side of the pick and move
# its interval by their mass.
def limit(i):
    if P >= 1.0:
        return eps
    q = pr[int(i)]
    return eps + sum(x for j, x in enumerate(pr) if j != int(i) and abs(x - q) <= 1e-5 * q)
print("    first difference at step %d: cpu %s, cuda %s; coin %.7f misses their intervals by %.2g, %.2g (limits %.2g, %.2g)"
      % (k, a[k], b[k], coins[0], miss(a[k]), miss(b[k]), limit(a[k]), limit(b[k])))
sys.exit(0 if miss(a[k]) <= limit(a[k]) and miss(b[k]) <= limit(b[k]) else 1)
PY
  done
}
pstep sampled-stories260K-f32 same_sampled "$A/stories260K-f32-mt64.loom"
pstep sampled-synthetic-f32 same_sampled "$A/synthetic_untied-f32-mt3.loom"

# Out-of-bounds and race checks of the kernels on a short run (prefill
# over 3-row steps, decode graphs), where compute-sanitizer is installed.
if command -v compute-sanitizer > /dev/null; then
  pstep sanitizer compute-sanitizer --error-exitcode 9 --tool memcheck "$RUN" \
    "$A/stories260K-f32-mt3.loom" --device cuda --prompt-ids 1,3,4,5,6,7,8 --steps 6 \
    --temperature 0 --print-ids
  pstep sanitizer-persistent env LOOM_CUDA_PERSISTENT=2 compute-sanitizer --error-exitcode 9 \
    --tool memcheck "$RUN" "$A/stories260K-f32-mt3.loom" --device cuda \
    --prompt-ids 1,3,4,5,6,7,8 --steps 6 --temperature 0 --print-ids
fi

# Looped decode driven piece by piece (LOOM_CUDA_LOOP_GRAPH=0) and as one
# graph per step (the default): huginn-tiny and a synthetic looped model
# (dim 1024, 16 heads, MLP 2816, vocab 32000, 2 prelude + 4 core + 2 coda
# layers, bf16) at 4 and 16 iterations; decode tokens/s and the ratio.
loop_graph_bench() {
  "$B/bin/loom-synth-weights" fill "$B/skel/looped-bf16.skel" "$W/looped.loom" \
    > /dev/null || return 1
  local art r a b g
  for art in "$A/huginn-tiny.loom" "$W/looped.loom"; do
    for r in 4 16; do
      LOOM_CUDA_LOOP_GRAPH=0 timeout 120 "$RUN" "$art" --device cuda --bench \
        --iterations $r > "$W/piece.txt" || return 1
      LOOM_CUDA_LOOP_GRAPH=1 timeout 120 "$RUN" "$art" --device cuda --bench \
        --iterations $r > "$W/graph.txt" || return 1
      a=$(awk '/^decode_tokens_per_s/ {print $2}' "$W/piece.txt")
      b=$(awk '/^decode_tokens_per_s/ {print $2}' "$W/graph.txt")
      g=$(awk '/^graph_launches/ {print $2}' "$W/graph.txt")
      python3 - "$(basename "$art")" "$r" "$a" "$b" "$g" <<'PY' || return 1
import sys
name, r, a, b, g = sys.argv[1:]
a, b = float(a or 0), float(b or 0)
print("  %s r=%s: decode %.1f tok/s piece by piece, %.1f as one graph (%s), %d graph launches"
      % (name, r, a, b, "%.2fx" % (b / a) if a > 0 else "n/a", int(g or 0)))
sys.exit(0 if a > 0 and b > 0 and int(g or 0) > 0 else 1)
PY
    done
  done
}

# The timeline build (libloomrt_cuda_timeline.so, LOOM_CUDA_TIMELINE=FILE):
# its instrumented kernels give the plain build's text, and every decode
# graph replay's block records are attributed to its launches.
timeline_smoke() {
  local art="$A/stories260K-f32-mt64.loom" args=(--device cuda --prompt "Once upon a time" --steps 48 --temperature 0)
  timeout 120 "$RUN" "$art" "${args[@]}" > "$W/plain.txt" || return 1
  LOOM_CUDA_TIMELINE="$W/smoke-timeline.json" timeout 120 "$RUN" "$art" "${args[@]}" > "$W/timeline.txt" \
    2> "$W/timeline.err" || { cat "$W/timeline.err"; return 1; }
  grep "GPU timeline" "$W/timeline.err"
  cmp "$W/plain.txt" "$W/timeline.txt" || { echo "the timeline build's text differs"; return 1; }
  python3 - "$W/smoke-timeline.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
s = t["loomTimeline"]
print("  %d replays (%d not attributed), %.1f us a replay, %d trace events; longest: %s"
      % (s["replays"], s["skipped"], s["step_us"], len(t["traceEvents"]),
         ", ".join("%s %.1f us" % (c["label"], c["chain_us"]) for c in s["classes"][:3])))
cat = [e for e in t["traceEvents"] if e.get("cat") == "block"]
blocks = len(cat)
print("  the 16th replay's %d blocks on %d multiprocessors" % (blocks, len({e["tid"] for e in cat})))
# The global timer's resolution: the smallest step between block times.
ts = sorted({round(1000 * (e["ts"] + d)) for e in cat for d in (0, e["dur"])})
steps = [b - a for a, b in zip(ts, ts[1:]) if b > a]
print("  %%globaltimer: smallest step between block times %s ns" % (min(steps) if steps else "n/a"))
sys.exit(0 if s["replays"] >= 20 and s["skipped"] == 0 and s["step_us"] > 0
         and blocks > 0 else 1)
PY
}
pstep timeline-smoke timeline_smoke
# The unit suite under the timeline build: the same results, and every
# graph replay of its sessions attributed (the sessions' summaries go to
# stderr: any "not attributed" line fails the step).
unit_timeline() {
  local rc=0
  LOOM_CUDA_TIMELINE="$W/unit-timeline.json" timeout 240 "$B/bin/loom-cuda-test" --gtest_brief=1 \
    2> "$W/unit-timeline.err" || rc=$?
  [ $rc = 0 ] || { tail -40 "$W/unit-timeline.err"; return $rc; } # 77: no GPU, a skip
  grep -c "GPU timeline:" "$W/unit-timeline.err" | sed 's/^/  sessions with a timeline: /'
  ! grep "not attributed" "$W/unit-timeline.err"
}
pstep cuda-unit-timeline unit_timeline
pwait  # nothing else runs while the benchmarks time
step loop-graph-bench loop_graph_bench

# The variants: the experiments (the persistent kernel first: if the step's
# timeout cuts the run, its progress lines say what was measured), then the
# default again (the spread of one configuration between runs).
STEP_TIMEOUT=420 step bench python3 bench/bench_cuda.py --bundle "$B" --out "$OUTDIR" --workdir "$W/bench" --profile 1b --timeline 110m,1b --timeline-variants early-cluster,gemv-bulk-6,qkv41-ahead,persistent-2 \
  --variant persistent-2,LOOM_CUDA_PERSISTENT=2 --variant persistent-1,LOOM_CUDA_PERSISTENT=1 \
  --variant attn-cluster,LOOM_CUDA_ATTN_MERGE=cluster --variant attn-early,LOOM_CUDA_ATTN_EARLY=1 \
  --variant early-cluster,LOOM_CUDA_ATTN_EARLY=1,LOOM_CUDA_ATTN_MERGE=cluster \
  --variant early-16,LOOM_CUDA_ATTN_EARLY=1,LOOM_CUDA_ATTN_WARPS=16 \
  --variant 'gemv-44,LOOM_CUDA_GEMV=qkv:4,4;gate_up:4,4' --variant gemv-ahead,LOOM_CUDA_GEMV_AHEAD=1 \
  --variant gemv-bulk-6,LOOM_CUDA_GEMV_BULK=6 --variant gemv-bulk-12,LOOM_CUDA_GEMV_BULK=12 \
  --variant qkv41-ahead,LOOM_CUDA_GEMV=qkv:4,1,LOOM_CUDA_GEMV_AHEAD=1 \
  --variant default-again
rm -rf "$W"
[ -z "$failed" ] || echo "gpu-check: failed:$failed"
echo "gpu-check: $failures failures (${SECONDS} s)"
exit $((failures > 0))
