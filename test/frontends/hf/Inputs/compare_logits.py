"""compare_logits.py A B [--scale S | --atol T]: loom-run --dump-logits
files A and B are bit for bit equal, or A's values are exactly S times B's,
or within T of B's. Prints "equal: N values" ("within T: N values, max |d|
D") or the first difference (and exits 1)."""
import argparse
import struct
import sys

ap = argparse.ArgumentParser()
ap.add_argument("a")
ap.add_argument("b")
ap.add_argument("--scale", type=float, default=1.0)
ap.add_argument("--atol", type=float)
args = ap.parse_args()
a, b = open(args.a, "rb").read(), open(args.b, "rb").read()
if len(a) != len(b) or not a:
    sys.exit("sizes differ or empty: %d and %d bytes" % (len(a), len(b)))
va = struct.unpack("<%df" % (len(a) // 4), a)
vb = struct.unpack("<%df" % (len(b) // 4), b)
if args.atol is not None:
    worst = max(abs(x - y) for x, y in zip(va, vb))
    if worst > args.atol:
        sys.exit("max |d| %.4g exceeds %g" % (worst, args.atol))
    print("within %g: %d values, max |d| %.3f" % (args.atol, len(va), worst))
    sys.exit(0)
for i, (x, y) in enumerate(zip(va, vb)):
    if x != args.scale * y:
        sys.exit("value %d: %r against %r x %r" % (i, x, args.scale, y))
print("equal: %d values" % len(va))
