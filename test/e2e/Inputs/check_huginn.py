#!/usr/bin/env python3
"""Checks the Huginn path (loomc --format=huginn + loom-run) against the
huginn-tiny goldens of an independent reference (../shared/golden/huginn-tiny,
README there): prompt logits for r = 1, 4, 16, 32; greedy ids and the logits
that chose them under the full, compress-s4 and compress-s8 KV policies and
with warm start; adaptive exit (KL, threshold 8e-4, max 32) under full and
latest-m4: ids, iterations per token (exactly) and logits. All with the zero
initial state the goldens use. Tolerance |d| <= 1e-4 + 1e-4 |ref|.
"""
import json
import os
import sys

from checklib import ATOL, RTOL, compare_row, read_f32, run, tool_args



def main():
    ap = tool_args(__doc__)
    ap.add_argument("--golden", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    g = a.golden
    art = a.artifact or os.path.join(a.workdir, "tiny.loom")
    if not a.artifact:
        run([a.loomc, g, "--format=huginn", "-o", art, "--quiet"])
    manifest = json.load(open(os.path.join(g, "manifest.json")))
    prompt = manifest["prompt_ids"]
    ids = ",".join(map(str, prompt))
    n = len(prompt)
    vocab = 512
    base = [a.loom_run, art, "--device", a.device, "--prompt-ids", ids, "--init-state", "zero", "--temperature", "0"]
    worst = 0.0
    checks = 0

    for r in (1, 4, 16, 32):
        dump = os.path.join(a.workdir, "r%d.bin" % r)
        run(base + ["--iterations", str(r), "--steps", "0", "--dump-logits", dump, "--print-ids"])
        got, want = read_f32(dump), read_f32(os.path.join(g, "logits_r%d.bin" % r))
        for i in range(n):
            worst = max(worst, compare_row("logits_r%d" % r, got, i,
                                           want[i * vocab:(i + 1) * vocab], vocab))
        checks += 1

    runs = [("gen_r4_full", ["--iterations", "4", "--kv-policy", "full"]),
            ("gen_r4_compress-s4", ["--iterations", "4", "--kv-policy", "compress-s4"]),
            ("gen_r4_compress-s8", ["--iterations", "4", "--kv-policy", "compress-s8"]),
            ("gen_r4_full_warmstart", ["--iterations", "4", "--kv-policy", "full", "--warm-start"]),
            ("adaptive_kl_full", ["--iterations", "adaptive", "--exit-kl", "8e-4",
                                  "--max-iterations", "32", "--kv-policy", "full"]),
            ("adaptive_kl_latest-m4", ["--iterations", "adaptive", "--exit-kl", "8e-4",
                                       "--max-iterations", "32", "--kv-policy", "latest-m4"])]
    for name, flags in runs:
        want = json.load(open(os.path.join(g, name + ".json")))
        dump = os.path.join(a.workdir, name + ".bin")
        out = run(base + flags + ["--steps", str(len(want["generated_ids"])), "--print-ids",
                                  "--print-steps", "--dump-logits", dump], text=True).splitlines()
        got_ids = [int(x) for x in out[0].split()]
        if got_ids != want["generated_ids"]:
            sys.exit("FAILED %s: ids %s, want %s" % (name, got_ids, want["generated_ids"]))
        if "steps_per_token" in want:
            got_steps = [int(x) for x in out[1].split()]
            if got_steps != want["steps_per_token"]:
                sys.exit("FAILED %s: iterations per token %s, want %s"
                         % (name, got_steps, want["steps_per_token"]))
        t = len(want["generated_ids"])
        got, ref = read_f32(dump), read_f32(os.path.join(g, name + "_logits.bin"))
        for i in range(t):
            worst = max(worst, compare_row(name, got, n - 1 + i,
                                           ref[i * vocab:(i + 1) * vocab], vocab))
        checks += 1
    print("huginn golden: %d checks passed; max |logit diff| %.3g (tolerance %g + %g*|ref|)"
          % (checks, worst, ATOL, RTOL))


if __name__ == "__main__":
    main()
