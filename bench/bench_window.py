#!/usr/bin/env python3
"""Sliding-window attention against full attention on the same weights.

Writes two Hugging Face Mistral configs over one checkpoint folder
(default ../shared/models/hf-stories260K: 512 positions, 5 layers): one
with `sliding_window` W (--windows, several allowed), one with none; compiles
each with loomc and runs `loom-run --bench` on each in turn (--repeat
rounds, alternating; the best kept). Prints prefill and decode tokens/s and
each window's ratio over full attention, all measured in this run. The
bench prefills 256 positions and decodes 128 after them, so a window under
256 bounds every decode step's attention. A model this small spends most
of its time in attention; a large one's ratio is nearer 1 until the context
is long.

usage: bench/bench_window.py [--bin build/bin] [--model DIR] [--windows 32,64]
                             [--threads 1] [--repeat 3] [--work /tmp/loom-bench-window]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("bench: %s failed (exit %d): %s" % (" ".join(cmd), p.returncode, p.stderr))
    return p.stdout


def variant(model, work, window):
    out = os.path.join(work, "w%d" % window if window else "full")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(model):
        if name != "config.json" and not os.path.exists(os.path.join(out, name)):
            os.symlink(os.path.abspath(os.path.join(model, name)), os.path.join(out, name))
    config = json.load(open(os.path.join(model, "config.json")))
    config["model_type"] = "mistral"
    config["sliding_window"] = window or None
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=1)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(here, "..", "build", "bin"))
    ap.add_argument("--model", default=os.path.join(here, "..", "..", "shared", "models",
                                                    "hf-stories260K"))
    ap.add_argument("--windows", default="32,64")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/tmp/loom-bench-window")
    a = ap.parse_args()
    if not os.path.isdir(a.model):
        sys.exit("bench: no model folder %s (--model)" % a.model)
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    windows = [0] + [int(w) for w in a.windows.split(",") if w]
    arts = {}
    for w in windows:
        art = os.path.join(a.work, "w%d.loom" % w)
        run([os.path.join(a.bin, "loomc"), variant(a.model, a.work, w), "-o", art, "--quiet"])
        arts[w] = art
    best = {w: {} for w in windows}
    for _ in range(a.repeat):
        for w in windows:
            out = run([os.path.join(a.bin, "loom-run"), arts[w], "--bench",
                       "--threads", str(a.threads)])
            vals = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
            for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):
                best[w][key] = max(best[w].get(key, 0.0), float(vals[key]))
            best[w]["positions"] = "%s + %s" % (vals["prefill_tokens"], vals["decode_tokens"])
    print("%-10s %-10s %14s %14s" % ("window", "positions", "prefill t/s", "decode t/s"))
    for w in windows:
        print("%-10s %-10s %14.1f %14.1f" % (w or "full", best[w]["positions"],
                                            best[w]["prefill_tokens_per_s"],
                                            best[w]["decode_tokens_per_s"]))
    for w in windows[1:]:
        print("window %d vs full attention, %d thread(s): prefill %.2fx, decode %.2fx" % (
            w, a.threads,
            best[w]["prefill_tokens_per_s"] / best[0]["prefill_tokens_per_s"],
            best[w]["decode_tokens_per_s"] / best[0]["decode_tokens_per_s"]))


if __name__ == "__main__":
    main()
