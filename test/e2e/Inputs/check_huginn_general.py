#!/usr/bin/env python3
"""The Huginn path beyond the recorded golden cases: other prompts (seeded
random ids of 3 to 12 tokens), iteration counts (2, 3, 5, 7), KV policies
(full, latest-m4, compress-s2, compress-r2), warm start and adaptive exits
by other criteria (entropy-diff, latent-diff, argmax-stability), each against
the independent PyTorch reference that made the golden,
../shared/golden/tools/huginn_ref.py, run here in float64 on the same inputs
with the zero initial state.

For each case loomc's artifact run by loom-run must give the reference's
greedy ids, iterations per token (adaptive exits), and the logits of every
prompt position (fixed iterations) and of each generated token within
1e-4 + 1e-4 |ref|. An adaptive case whose reference exit values (real
valued criteria) come within 3 % of the threshold is refused (the exact
iteration count would then be a matter of rounding): pick another
threshold.
"""
import json
import os
import random
import sys

from checklib import ATOL, RTOL, compare_row, load_module, read_f32, run, tool_args

STEPS = 6


def main():
    ap = tool_args(__doc__)
    ap.add_argument("--golden", required=True, help="../shared/golden")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    ref = load_module(os.path.join(a.golden, "tools", "huginn_ref.py"), "huginn_ref")
    import torch

    g = os.path.join(a.golden, "huginn-tiny")
    art = a.artifact or os.path.join(a.workdir, "tiny.loom")
    if not a.artifact:
        run([a.loomc, g, "--format=huginn", "-o", art, "--quiet"])
    cfg = ref.Cfg(json.load(open(os.path.join(g, "config.json"))))
    model = ref.HuginnRef(cfg, ref.load_safetensors(os.path.join(g, "model.safetensors")),
                          torch.float64)
    vocab = cfg.vocab

    rng = random.Random(20261126)
    prompt = lambda n: [rng.randrange(3, vocab) for _ in range(n)]
    # (name, prompt, iterations or None, kv policy, warm start, exit criterion, threshold)
    cases = [
        ("r2 full", prompt(7), 2, "full", False, None, None),
        ("r3 latest-m4", prompt(12), 3, "latest-m4", False, None, None),
        ("r7 compress-s2", prompt(4), 7, "compress-s2", False, None, None),
        ("r5 compress-r2", prompt(9), 5, "compress-r2", False, None, None),
        ("r3 full warm start", prompt(6), 3, "full", True, None, None),
        ("adaptive entropy-diff", prompt(5), None, "full", False, "entropy-diff", 2e-3),
        ("adaptive latent-diff latest-m4", prompt(8), None, "latest-m4", False, "latent-diff", 0.05),
        ("adaptive argmax-stability", prompt(3), None, "full", False, "argmax-stability", 3),
    ]
    worst = 0.0
    for name, ids, r, policy, warm, criterion, threshold in cases:
        dump = os.path.join(a.workdir, name.replace(" ", "_") + ".bin")
        cmd = [a.loom_run, art, "--prompt-ids", ",".join(map(str, ids)), "--init-state", "zero",
               "--temperature", "0", "--steps", str(STEPS), "--print-ids", "--print-steps",
               "--dump-logits", dump, "--kv-policy", policy, "--device", a.device]
        n = len(ids)
        if criterion is None:
            cmd += ["--iterations", str(r)] + (["--warm-start"] if warm else [])
            want_ids, chosen = model.generate_greedy(ids, STEPS, r, strategy=policy,
                                                     warm_start=warm)
            want_steps = [r] * STEPS
            prompt_logits = model.forward(ids, num_steps=r)[0]
        else:
            cmd += ["--iterations", "adaptive", "--exit-criterion", criterion,
                    "--exit-threshold", repr(threshold), "--max-iterations", "16"]
            want_ids, want_steps, traces, chosen = model.generate_adaptive(
                ids, STEPS, max_steps=16, criterion=criterion, threshold=threshold,
                strategy=policy)
            # argmax-stability counts equal argmaxes: an integer, no margin.
            for vals in traces if criterion != "argmax-stability" else []:
                for v in vals:
                    if abs(v - threshold) <= 0.03 * abs(threshold):
                        sys.exit("FAILED %s: the reference's exit value %g is within 3%% of the "
                                 "threshold %g: choose another" % (name, v, threshold))
            prompt_logits = None
        out = run(cmd, text=True).splitlines()
        got_ids = [int(x) for x in out[0].split()]
        got_steps = [int(x) for x in out[1].split()]
        if got_ids != want_ids:
            sys.exit("FAILED %s: ids %s, reference %s" % (name, got_ids, want_ids))
        if got_steps != list(want_steps):
            sys.exit("FAILED %s: iterations per token %s, reference %s"
                     % (name, got_steps, list(want_steps)))
        got = read_f32(dump)
        if len(got) != (n + STEPS - 1) * vocab:
            sys.exit("FAILED %s: %d logit rows, want %d" % (name, len(got) // vocab, n + STEPS - 1))
        w = 0.0
        if prompt_logits is not None:
            for i in range(n):
                w = max(w, compare_row(name, got, i, prompt_logits[i].numpy(), vocab))
        for j in range(STEPS):
            w = max(w, compare_row(name, got, n - 1 + j, chosen[j].numpy(), vocab))
        worst = max(worst, w)
        print("%s: %d prompt tokens, ids and iterations %s equal, max |logit diff| %.3g"
              % (name, n, list(want_steps), w))
    print("huginn general: %d cases passed; max |logit diff| %.3g (tolerance %g + %g*|ref|)"
          % (len(cases), worst, ATOL, RTOL))


if __name__ == "__main__":
    main()
