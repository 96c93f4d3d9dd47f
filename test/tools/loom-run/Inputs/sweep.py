#!/usr/bin/env python3
"""Damages a Loom artifact in many places and runs loom-run on each copy.

  sweep.py LOOM_RUN ARTIFACT WORKDIR [LOOM_RUN_ARGS...]

Sweeps: every header byte flipped; the file cut at 64 points; 32 weight
bytes flipped; 64 flatbuffer bytes flipped as they are (the checksum catches
them); and 256 flatbuffer bytes flipped with the checksum re-sealed, which
reach the flatbuffer verifier and the semantic checks. The first four must
fail; a re-sealed flip may also leave a valid artifact (a changed score or
name) and run. Every failure must be exit code 1 with exactly one stderr
line "loom-run: ..." and nothing on stdout; nothing may crash. Prints one
line per sweep and the first few offenders, and exits 1 if there are any.
LOOM_RUN_ARGS replace the default run (99 prompt ids, 4 sampled steps).
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corrupt  # noqa: E402

ARGS = ["--prompt-ids", ",".join(["1"] + [str(3 + i % 500) for i in range(99)]),
        "--steps", "4", "--temperature", "0.8", "--seed", "1"]


def run(loom_run, path):
    p = subprocess.run([loom_run, path] + (sys.argv[4:] or ARGS),
                       stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def main():
    loom_run, artifact, workdir = sys.argv[1:4]
    os.makedirs(workdir, exist_ok=True)
    data = open(artifact, "rb").read()
    h = corrupt.header(data)
    fb0, fbn = h["fb_offset"], h["fb_size"]
    w0, wn = h["weights_offset"], h["weights_size"]
    path = os.path.join(workdir, "damaged.loom")

    def flipped(pos, reseal=False):
        d = bytearray(data)
        d[pos] ^= 0xFF
        if reseal:
            corrupt.reseal(d)
        return bytes(d)

    sweeps = [
        ("header flips", True,
         [flipped(i) for i in range(64)]),
        ("truncations", True,
         [data[:len(data) * i // 64] for i in range(64)]),
        ("weight flips", True,
         [flipped(w0 + wn * i // 32) for i in range(32)]),
        ("flatbuffer flips", True,
         [flipped(fb0 + fbn * i // 64) for i in range(64)]),
        ("resealed flatbuffer flips", False,
         [flipped(fb0 + fbn * i // 256, reseal=True) for i in range(256)]),
    ]
    bad = []
    for name, must_fail, copies in sweeps:
        failed = ran = 0
        for i, copy in enumerate(copies):
            with open(path, "wb") as f:
                f.write(copy)
            code, out, err = run(loom_run, path)
            lines = err.splitlines()
            if code == 1 and not out and len(lines) == 1 and \
                    lines[0].startswith("loom-run: "):
                failed += 1
            elif code == 0 and not must_fail:
                ran += 1
            else:
                bad.append("%s #%d: exit %d, %d stdout bytes, stderr %r" %
                           (name, i, code, len(out), err[-300:]))
        print("%s: %d copies, %d failed cleanly, %d ran" %
              (name, len(copies), failed, ran))
    for line in bad[:10]:
        print("BAD: " + line)
    print("offenders: %d" % len(bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
