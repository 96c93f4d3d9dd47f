#!/usr/bin/env python3
"""Checks loomc + loom-run against golden outputs of an independent reference.

For each golden JSON (../shared/golden/<model>_<prompt>.json, described in
../shared/golden/README.md) it compiles the checkpoint and checks:
  * greedy ids: loom-run --prompt-ids ... --temperature 0 --print-ids equals
    every recorded `generated_ids` list (each steps value);
  * logits: --dump-logits rows equal the stored rows within
    |d| <= ATOL + RTOL * |ref| (README: atol = rtol = 1e-4 is safe for fp32);
  * text: loom-run --prompt TEXT prints byte-identical stdout to run.c's.
Also compiles with a tiny --max-tokens so prompts are prefilled in several
chunks, and checks the ids again. Standard library only.

--device cuda runs every loom-run on the GPU; --artifacts-from DIR takes
artifacts compiled earlier (DIR/NAME-mt64.loom and DIR/NAME-mt3.loom, NAME
given by --name) instead of running loomc: for machines with only the
runtime (scripts/gpu-check.sh).
"""
import json
import os
import sys

from checklib import ATOL, RTOL, compare_row, read_f32, run, tool_args


def main():
    ap = tool_args(__doc__, artifact=False)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", help="llama2.c tokenizer.bin (not for a "
                    "Hugging Face folder, whose tokenizer.json loomc reads)")
    ap.add_argument("--loomc-args", default="", help="more loomc flags, space-separated")
    ap.add_argument("--artifacts-from")
    ap.add_argument("--name", default="model")
    ap.add_argument("golden", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)

    artifacts = {}
    for max_tokens in (64, 3):
        if a.artifacts_from:
            artifacts[max_tokens] = os.path.join(
                a.artifacts_from, "%s-mt%d.loom" % (a.name, max_tokens))
            continue
        out = os.path.join(a.workdir, "model-mt%d.loom" % max_tokens)
        tok = ["--tokenizer", a.tokenizer] if a.tokenizer else []
        run([a.loomc, a.model] + tok + a.loomc_args.split() + ["-o", out,
             "--max-tokens", str(max_tokens), "--quiet"])
        artifacts[max_tokens] = out
    loom_run = [a.loom_run, "--device", a.device]

    checks = 0
    worst = 0.0
    for gpath in a.golden:
        g = json.load(open(gpath))
        gdir = os.path.dirname(gpath)
        name = os.path.basename(gpath)
        ids = ",".join(str(i) for i in g["prompt_ids"])
        for steps_key, rec in sorted(g["runs"].items(), key=lambda kv: int(kv[0])):
            want = rec["generated_ids"]
            for mt, art in artifacts.items():
                got = run(loom_run + [art, "--prompt-ids", ids, "--steps",
                           str(len(want)), "--temperature", "0", "--print-ids"])
                got = [int(x) for x in got.split()]
                if got != want:
                    first = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y),
                                 min(len(got), len(want)))
                    sys.exit("FAILED %s steps=%s max_tokens=%d: ids differ at %d\n got  %s\n want %s"
                             % (name, steps_key, mt, first, got, want))
                checks += 1
            # Text exactly as run.c printed it (prompt echo + generated + "\n").
            text = run(loom_run + [artifacts[64], "--prompt", g["prompt"], "--steps",
                        str(len(want)), "--temperature", "0"])
            if text != bytes.fromhex(rec["text_bytes_hex"]):
                sys.exit("FAILED %s steps=%s: text differs\n got  %r\n want %r"
                         % (name, steps_key, text[:200], bytes.fromhex(rec["text_bytes_hex"])[:200]))
            checks += 1

        # Logits: rows after feeding each of logits_input_ids.
        lf = g["logits_file"]
        rows, vocab = lf["shape"]
        ref = read_f32(os.path.join(gdir, lf["file"]))
        n_prompt = len(g["prompt_ids"])
        dump = os.path.join(a.workdir, name + ".logits")
        steps = max(1, g["logits_positions"] - n_prompt + 1)
        run(loom_run + [artifacts[64], "--prompt-ids", ids, "--steps", str(steps),
             "--temperature", "0", "--dump-logits", dump])
        got = read_f32(dump)
        if len(got) < rows * vocab:
            sys.exit("FAILED %s: dumped %d logits rows, need %d" % (name, len(got) // vocab, rows))
        for r in range(rows):
            worst = max(worst, compare_row(name + " logits", got, r,
                                           ref[r * vocab:(r + 1) * vocab], vocab))
        checks += 1
    print("golden (%s): %d checks passed over %d files; max |logit diff| %.3g (tolerance %g + %g*|ref|)"
          % (a.device, checks, len(a.golden), worst, ATOL, RTOL))


if __name__ == "__main__":
    main()
