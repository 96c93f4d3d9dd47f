#!/usr/bin/env python3
"""Compares the logits a bf16 artifact dumped (loom-run --dump-logits) with
the f32 artifact's, row by row, against the bf16 tolerance
    |d| <= R * u * max|f32 row|,   u = 2^-9 (bf16 unit roundoff)
with R the rounded matrices on the deepest path (see
test/e2e/Inputs/check_bf16.py and docs/artifact-format.md).

  compare_logits.py F32.bin BF16.bin --vocab V --r R
Prints the rows and the largest difference in units of u * max|row|; exits 1
when a row is outside the tolerance. Standard library only.
"""
import argparse
import struct
import sys

U = 2.0 ** -9


def read_f32(path):
    data = open(path, "rb").read()
    return struct.unpack("<%df" % (len(data) // 4), data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("f32")
    ap.add_argument("bf16")
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--r", type=int, required=True)
    a = ap.parse_args()
    ref, got = read_f32(a.f32), read_f32(a.bf16)
    V = a.vocab
    if len(ref) != len(got) or len(ref) == 0 or len(ref) % V:
        sys.exit("FAILED: %d and %d logits (vocab %d)" % (len(ref), len(got), V))
    worst = 0.0
    for r in range(len(ref) // V):
        row = ref[r * V:(r + 1) * V]
        scale = max(abs(x) for x in row)
        d = max(abs(x - y) for x, y in zip(row, got[r * V:(r + 1) * V]))
        worst = max(worst, d / (U * scale))
        if d > a.r * U * scale:
            sys.exit("FAILED: row %d: max |d| %.4g > %d u max|row| = %.4g"
                     % (r, d, a.r, a.r * U * scale))
    print("%d rows within %d u max|row| (largest %.2f u max|row|)"
          % (len(ref) // V, a.r, worst))


if __name__ == "__main__":
    main()
