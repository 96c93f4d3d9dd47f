#!/usr/bin/env python3
"""Looped-block (Huginn) decode speed and KV memory per iteration count and
KV policy.

For the tiny golden model (../shared/golden/huginn-tiny, when present) and a
synthetic model of stories15M-like size in the same checkpoint format (dim
288, 6 heads, MLP 768, vocab 32000, 2 prelude + 4 core + 2 coda layers, seeded
random weights written by bench/make_huginn.cpp), runs
`loom-run --bench --iterations R --kv-policy P` for R in 4, 16, 32 and each
policy, and prints decode tokens/s, KV bytes per token and the KV memory the
session allocated. Under a fixed-budget policy (compress-s4) the KV memory
must not grow with R; the script checks that and exits 1 if it does.

usage: bench/bench_huginn.py [--bin build/bin] [--work /tmp/loom-bench-huginn]
                             [--policies full,compress-s4,latest-m4]
"""
import argparse
import os
import sys
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("bench: %s failed (exit %d): %s" % (" ".join(cmd), p.returncode, p.stderr))
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "bin"))
    ap.add_argument("--work", default="/tmp/loom-bench-huginn")
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared"))
    ap.add_argument("--policies", default="full,compress-s4,compress-s8,latest-m4")
    ap.add_argument("--iterations", default="4,16,32")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    tool = lambda n: os.path.join(a.bin, n)

    models = []
    tiny = os.path.join(a.shared, "golden", "huginn-tiny")
    if os.path.isdir(tiny):
        models.append(("tiny", tiny))
    else:
        print("bench: %s not found: skipping the tiny model" % tiny)
    synth = os.path.join(a.work, "huginn-15M")
    if not os.path.exists(os.path.join(synth, "model.safetensors")):
        run([tool("loom-make-huginn"), synth, "--dim", "288", "--heads", "6",
             "--intermediate", "768", "--vocab", "32000", "--context", "1024"])
    models.append(("15M-like", synth))

    failed = False
    print("%-9s %-13s %4s %12s %14s %16s" % ("model", "policy", "r", "decode t/s",
                                             "KV bytes/tok", "KV allocated"))
    for name, folder in models:
        art = os.path.join(a.work, name + ".loom")
        run([tool("loomc"), folder, "--format=huginn", "-o", art, "--quiet"])
        for policy in a.policies.split(","):
            allocated = []
            for r in [int(x) for x in a.iterations.split(",")]:
                out = run([tool("loom-run"), art, "--bench", "--iterations", str(r),
                           "--kv-policy", policy, "--threads", "2"])
                m = dict(line.split(": ", 1) for line in out.strip().splitlines())
                allocated.append(int(m["kv_bytes_allocated"]))
                print("%-9s %-13s %4d %12.1f %14s %16s" % (
                    name, policy, r, float(m["decode_tokens_per_s"]),
                    m["kv_bytes_per_token"], m["kv_bytes_allocated"]))
            if policy.startswith("compress-s") and len(set(allocated)) != 1:
                print("bench: FAILED: %s KV memory grows with r: %s" % (policy, allocated))
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
