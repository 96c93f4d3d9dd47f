#!/usr/bin/env python3
"""Compares two loom-run --dump-logits files (float32, [positions, vocab]).

  compare_logits.py A B VOCAB TOLERANCE

Prints the row count and the largest absolute difference, and exits 1 if the
files differ in size, hold a non-finite value, or differ by more than
TOLERANCE anywhere.
"""
import array
import math
import sys


def load(path):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    return a


def main():
    a_path, b_path, vocab, tol = sys.argv[1:]
    vocab, tol = int(vocab), float(tol)
    a, b = load(a_path), load(b_path)
    if len(a) != len(b) or len(a) % vocab != 0 or not a:
        sys.exit("compare_logits: sizes differ or are not whole rows: %d vs %d"
                 % (len(a), len(b)))
    worst, at = 0.0, 0
    for i, (x, y) in enumerate(zip(a, b)):
        if not (math.isfinite(x) and math.isfinite(y)):
            sys.exit("compare_logits: non-finite value at %d" % i)
        d = abs(x - y)
        if d > worst:
            worst, at = d, i
    print("rows: %d" % (len(a) // vocab))
    print("max abs diff: %.3g at row %d, id %d" % (worst, at // vocab,
                                                    at % vocab))
    if worst > tol:
        sys.exit("compare_logits: difference %.3g exceeds %g" % (worst, tol))
    print("within %g" % tol)


if __name__ == "__main__":
    main()
