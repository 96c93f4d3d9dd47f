"""sweep.py LOOMC SRC.gguf WORKDIR: damaged copies of a GGUF file (64 cut
points, 256 single-byte flips in the header, metadata and tensor infos);
loomc never crashes, and every failure is exit code 1 with one
`loomc: error:` line and no artifact. Prints a summary. Standard library
only."""
import os
import random
import subprocess
import sys

loomc, src, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
b = open(src, "rb").read()
header_end = 14000  # inside the metadata and tensor infos of these files
rng = random.Random(3)
copies = [("cut", b[:n]) for n in sorted(rng.sample(range(len(b)), 64))]
for _ in range(256):
    at = rng.randrange(header_end)
    flipped = bytearray(b)
    flipped[at] ^= 1 << rng.randrange(8)
    copies.append(("flip", bytes(flipped)))
stats = {"cut": [0, 0, 0], "flip": [0, 0, 0]}  # failed cleanly, ran, offenders
offenders = []
for i, (kind, data) in enumerate(copies):
    path = os.path.join(work, "c%d.gguf" % i)
    out = os.path.join(work, "c%d.loom" % i)
    open(path, "wb").write(data)
    if os.path.exists(out):
        os.remove(out)
    p = subprocess.run([loomc, path, "-o", out, "--quiet"], capture_output=True, text=True)
    lines = p.stderr.splitlines()
    if p.returncode == 0 and os.path.exists(out):
        stats[kind][1] += 1
    elif p.returncode == 1 and len(lines) == 1 and lines[0].startswith("loomc: error: ") \
            and not os.path.exists(out):
        stats[kind][0] += 1
    else:
        stats[kind][2] += 1
        offenders.append("%s %d: exit %d, stderr %r" % (kind, i, p.returncode, p.stderr[:300]))
    os.remove(path)
for kind, name in (("cut", "truncations"), ("flip", "header flips")):
    print("%s: %d failed cleanly, %d compiled, %d offenders" % (name, *stats[kind]))
for o in offenders[:10]:
    print("  " + o)
