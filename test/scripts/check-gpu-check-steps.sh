#!/usr/bin/env bash
# scripts/gpu-check.sh's step runner, without a GPU: its checks run on the
# GPU machine only, so a broken runner would cost a session's device time.
# A stand-in loom-cuda-test (it records how many of its runs are alive at
# once, then fails for LOOM_CUDA_GEMV=8,4 and skips otherwise) runs as the
# four cuda-unit-gemv-* steps, 3 at a time, in LOOM_CHECK_DEVICE=cpu mode.
# Checks: the outcomes (3 SKIP, 1 FAIL), their order, the failure count and
# exit status, and that the runs overlapped but never more than 3 at once;
# and that a malformed GPU_CHECK_JOBS is refused before any step.
#   check-gpu-check-steps.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
BUILD=$1 SRC=$2 WORK=$3
rm -rf "$WORK"
mkdir -p "$WORK/bundle/bin" "$WORK/bundle/art"
ln -s "$BUILD/bin/loom-run" "$WORK/bundle/bin/loom-run"
ln -s "$BUILD/lib" "$WORK/bundle/lib"
# The script's smoke run before its steps.
"$BUILD/bin/loomc" "$SRC/models/stories260K.bin" --tokenizer "$SRC/models/tok512.bin" \
  -o "$WORK/bundle/art/stories260K-f32-mt64.loom" --max-tokens 64 --quiet
cat > "$WORK/bundle/bin/loom-cuda-test" <<STANDIN
#!/usr/bin/env bash
( flock 9
  n=\$((\$(cat "$WORK/alive" 2>/dev/null || echo 0) + 1)); echo \$n > "$WORK/alive"
  [ \$n -le \$(cat "$WORK/most" 2>/dev/null || echo 0) ] || echo \$n > "$WORK/most"
) 9> "$WORK/lock"
echo "stand-in run \${LOOM_CUDA_GEMV:-}"
sleep 1
( flock 9; echo \$((\$(cat "$WORK/alive") - 1)) > "$WORK/alive" ) 9> "$WORK/lock"
[ "\${LOOM_CUDA_GEMV:-}" = 8,4 ] && exit 1
exit 77
STANDIN
chmod +x "$WORK/bundle/bin/loom-cuda-test"

rc=0
(cd "$SRC" && LOOM_CHECK_DEVICE=cpu GPU_CHECK_JOBS=3 GPU_CHECK_ONLY='^cuda-unit-gemv-[0-9]' \
  OUT="$WORK/out" bash scripts/gpu-check.sh "$WORK/bundle") > "$WORK/log" 2>&1 || rc=$?
cat "$WORK/log"
fail() { echo "check-gpu-check-steps: $*"; exit 1; }
[ $rc = 1 ] || fail "exit status $rc, not 1"
got=$(grep -E '^=== (PASS|FAIL|SKIP)' "$WORK/log" | sed 's/ (.*//' | tr '\n' ' ')
want="=== SKIP cuda-unit-gemv-4,1 === SKIP cuda-unit-gemv-8,2 === FAIL cuda-unit-gemv-8,4 === SKIP cuda-unit-gemv-4,4 "
[ "$got" = "$want" ] || fail "outcomes '$got', not '$want'"
grep -q '^gpu-check: 1 failures' "$WORK/log" || fail "no '1 failures' line"
grep -q '^gpu-check: failed: cuda-unit-gemv-8,4$' "$WORK/log" || fail "the failed step not named"
# Each step's output under its own heading.
[ "$(grep -A1 '^=== cuda-unit-gemv-8,2$' "$WORK/log" | tail -1)" = "stand-in run 8,2" ] ||
  fail "step output not under its heading"
most=$(cat "$WORK/most")
[ "$most" -ge 2 ] && [ "$most" -le 3 ] || fail "$most runs alive at once, not 2 or 3"
# A malformed job count is refused before any step runs.
rc=0
(cd "$SRC" && LOOM_CHECK_DEVICE=cpu GPU_CHECK_JOBS=four OUT="$WORK/out-bad" \
  bash scripts/gpu-check.sh "$WORK/bundle") > "$WORK/log-bad" 2>&1 || rc=$?
[ $rc = 2 ] || fail "GPU_CHECK_JOBS=four: exit status $rc, not 2"
grep -q "GPU_CHECK_JOBS must be a positive integer, not 'four'" "$WORK/log-bad" ||
  fail "GPU_CHECK_JOBS=four: no error naming it"
! grep -q '^=== ' "$WORK/log-bad" || fail "GPU_CHECK_JOBS=four: steps ran"
echo "check-gpu-check-steps: ok ($most runs at once at most)"
