"""window_reach.py ARTIFACT --window W --layers L [--full-attention OTHER]:
checks the sliding window of a compiled model through what its last
position sees. With L layers that attend to their last W positions (their
own included), position N - 1 depends only on the last L (W - 1) + 1
tokens: fed alone (from position 0; RoPE sees the same offsets), they give
its logits up to rounding (--atol). OTHER, the same model attending to
every position, gives other logits that way (so the check can fail). Runs
loom-run (from PATH) on seeded random token ids; prints one line per
check, or exits 1 naming the failure. (Whether the window is W or W + 1
positions long shows in the unit tests' random models, not here: in a
trained model the farthest tokens' influence is below rounding.)"""
import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("artifact")
ap.add_argument("--window", type=int, required=True)
ap.add_argument("--layers", type=int, required=True)
ap.add_argument("--full-attention", metavar="OTHER")
ap.add_argument("--positions", type=int, default=400)
ap.add_argument("--vocab", type=int, default=512)
ap.add_argument("--atol", type=float, default=1e-4)
args = ap.parse_args()

rng = random.Random(7)
ids = [1] + [rng.randrange(3, args.vocab) for _ in range(args.positions - 1)]
reach = args.layers * (args.window - 1) + 1
if reach >= len(ids):
    sys.exit("--positions %d is not past the reach of %d" % (len(ids), reach))


def last_logits(artifact, feed):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.bin")
        r = subprocess.run(["loom-run", artifact, "--prompt-ids",
                            ",".join(map(str, feed)), "--steps", "0",
                            "--dump-logits", out], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            sys.exit("loom-run failed: " + r.stderr.strip())
        raw = open(out, "rb").read()
    vals = struct.unpack("<%df" % (len(raw) // 4), raw)
    v = len(vals) // len(feed)
    return vals[-v:]


def gap(artifact):
    full = last_logits(artifact, ids)
    tail = last_logits(artifact, ids[-reach:])
    return max(abs(a - b) for a, b in zip(full, tail))


d = gap(args.artifact)
if d > args.atol:
    sys.exit("position %d from the last %d tokens alone: max |d| %.3g "
             "exceeds %g" % (len(ids) - 1, reach, d, args.atol))
print("position %d from the last %d tokens alone: within %g" %
      (len(ids) - 1, reach, args.atol))
if args.full_attention:
    d = gap(args.full_attention)
    if d <= 10 * args.atol:
        sys.exit("full attention: the last %d tokens alone give the same "
                 "logits too (max |d| %.3g)" % (reach, d))
    print("full attention: other logits")
