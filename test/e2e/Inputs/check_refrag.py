#!/usr/bin/env python3
"""Checks REFRAG end to end (loomc --format=refrag + loom-run) against
../shared/golden/refrag-tiny: for chunk sizes 4 and 8 and each case
(all compressed, the bundle's policy at p = 0.25, all expanded), the 16
greedy ids and the logits of every position of the assembled sequence
(logits_all) and of each generated token (gen_logits).
Tolerance |d| <= 1e-4 + 1e-4 |ref| (the golden README allows 1e-3).
"""
import json
import os
import sys

from checklib import ATOL, RTOL, compare_row, read_f32, run, tool_args



def main():
    ap = tool_args(__doc__)
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--golden", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    g = a.golden
    art = a.artifact or os.path.join(a.workdir, "rag.loom")
    if not a.artifact:
        run([a.loomc, "--format=refrag", "--decoder", a.decoder, "--tokenizer", a.tokenizer,
             "--bundle", os.path.join(g, "refrag_tiny.safetensors"), "-o", art, "--quiet"])
    inputs = json.load(open(os.path.join(g, "inputs.json")))
    ctx = ",".join(map(str, inputs["context_ids"]))
    q = ",".join(map(str, inputs["question_ids"]))
    vocab = 512
    worst = 0.0
    checks = 0
    for k in (4, 8):
        for case, flags in (("compressed", ["--expand-policy", "0"]),
                            ("policy_p0.25", ["--expand-policy", "0.25"]),
                            ("expanded", ["--expand-policy", "1"])):
            d = os.path.join(g, "k%d" % k, case)
            want = json.load(open(os.path.join(d, "case.json")))
            dump = os.path.join(a.workdir, "k%d_%s.bin" % (k, case))
            out, err = run(with_stderr=True, text=True, cmd=[a.loom_run, art, "--context-ids", ctx, "--prompt-ids", q,
                            "--chunk-size", str(k), "--steps", "16", "--temperature", "0",
                            "--print-ids", "--dump-logits", dump, "--device", a.device] + flags)
            ids = [int(x) for x in out.split()]
            if ids != want["generated_ids"]:
                sys.exit("FAILED k%d %s: ids %s, want %s" % (k, case, ids, want["generated_ids"]))
            positions = want["n_decoder_positions"]
            if "-> %d decoder positions" % positions not in err:
                sys.exit("FAILED k%d %s: expected %d decoder positions: %s" % (k, case, positions, err))
            got = read_f32(dump)
            ref_all = read_f32(os.path.join(d, "logits_all.bin"))
            ref_gen = read_f32(os.path.join(d, "gen_logits.bin"))
            # Dump rows: the sequence's positions, then each generated token
            # fed back; generated token j was chosen from row positions-1+j.
            rows = [(r, ref_all, r) for r in range(positions)]
            rows += [(positions - 1 + j, ref_gen, j) for j in range(16)]
            for gr, ref, rr in rows:
                worst = max(worst, compare_row("k%d %s" % (k, case), got, gr,
                                               ref[rr * vocab:(rr + 1) * vocab], vocab))
            checks += 1
    print("refrag golden: %d cases passed; max |logit diff| %.3g (tolerance %g + %g*|ref|)"
          % (checks, worst, ATOL, RTOL))


if __name__ == "__main__":
    main()
