#!/usr/bin/env python3
"""Beyond the recorded golden prompts: the same model compiled with different
prefill chunk sizes (--max-tokens 1 = token by token, 7, 64) must produce the
same logits (within 1e-4) and the same greedy ids, for seeded random prompts
of many lengths, including prompts that fill most of the context.

With --reference DIR (../shared/golden/tools; needs numpy), the first
artifact's logits and ids are also checked against the independent numpy
reference that made the golden (llama2c_ref.py's KV-cached forward, run
here on the same prompts): every logit row within 1e-4 + 1e-4 |ref| and
the same greedy ids.
"""
import os
import random
import sys

from checklib import compare_row, load_module, read_f32, run, tool_args


def check_reference(reference, model, ids, steps, got_ids, logits, vocab):
    """loom-run's greedy ids and dumped logits (prompt rows, then one per
    generated token fed back) against the numpy reference; returns the
    largest |diff|."""
    s = reference.Session(model)
    want_ids, rows = [], []
    token = ids[0]
    for pos in range(len(ids) + steps - 1):
        lg = s.forward(token, pos)
        rows.append(lg)
        if pos + 1 < len(ids):
            token = ids[pos + 1]
        else:
            token = int(lg.argmax())
            want_ids.append(token)
    if [int(x) for x in got_ids.split()] != want_ids:
        sys.exit("FAILED prompt of %d tokens: ids %s, reference %s"
                 % (len(ids), [int(x) for x in got_ids.split()], want_ids))
    if len(logits) != len(rows) * vocab:
        sys.exit("FAILED prompt of %d tokens: %d logit rows, reference %d"
                 % (len(ids), len(logits) // vocab, len(rows)))
    name = "prompt of %d tokens against the reference" % len(ids)
    return max(compare_row(name, logits, r, want, vocab) for r, want in enumerate(rows))


def main():
    ap = tool_args(__doc__, artifact=False)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--context", type=int, required=True)
    ap.add_argument("--reference", help="../shared/golden/tools: also check against llama2c_ref.py")
    ap.add_argument("--artifacts", help="comma-separated artifacts of the model compiled "
                    "earlier with different --max-tokens (loomc is then not run)")
    a = ap.parse_args()
    reference = None
    if a.reference:
        reference = load_module(os.path.join(a.reference, "llama2c_ref.py"), "llama2c_ref")
        ref_model = reference.Model(a.model)
    ref_worst = 0.0
    os.makedirs(a.workdir, exist_ok=True)
    arts = []
    for mt in ((64, 7, 1) if not a.artifacts else ()):
        out = os.path.join(a.workdir, "mt%d.loom" % mt)
        run([a.loomc, a.model, "--tokenizer", a.tokenizer, "-o", out, "--max-tokens", str(mt), "--quiet"])
        arts.append(("max-tokens %d" % mt, out))
    for path in (a.artifacts.split(",") if a.artifacts else ()):
        arts.append((os.path.basename(path), path))
    rng = random.Random(1234)
    worst = 0.0
    cases = 0
    lengths = sorted({n for n in (1, 2, 6, 7, 8, 63, 64, 65, 130, a.context - 20)
                      if 0 < n < a.context - 1})
    for n_prompt in lengths:
        ids = [1] + [rng.randrange(3, a.vocab) for _ in range(n_prompt - 1)]
        steps = min(12, a.context - n_prompt)
        ref_ids = ref_logits = None
        for n_art, (mt, art) in enumerate(arts):
            dump = os.path.join(a.workdir, "l%d.bin" % n_art)
            got = run([a.loom_run, art, "--prompt-ids", ",".join(map(str, ids)), "--steps", str(steps),
                       "--temperature", "0", "--print-ids", "--dump-logits", dump, "--threads", "2",
                       "--device", a.device])
            logits = read_f32(dump)
            if ref_ids is None:
                ref_ids, ref_logits = got, logits
                if reference:
                    ref_worst = max(ref_worst, check_reference(
                        reference, ref_model, ids, steps, got, logits, a.vocab))
                continue
            if got != ref_ids:
                sys.exit("FAILED prompt of %d tokens: %s ids %s != %s ids %s"
                         % (n_prompt, mt, got.split(), arts[0][0], ref_ids.split()))
            if len(logits) != len(ref_logits):
                sys.exit("FAILED prompt of %d tokens: %d logits vs %d" % (n_prompt, len(logits), len(ref_logits)))
            d = max(abs(x - y) for x, y in zip(logits, ref_logits))
            worst = max(worst, d)
            if d > 1e-4:
                sys.exit("FAILED prompt of %d tokens: %s logits differ from %s by %g"
                         % (n_prompt, mt, arts[0][0], d))
        cases += 1
    print("consistency: %d prompt lengths x %d chunk sizes agree; max |logit diff| %.3g"
          % (cases, len(arts), worst))
    if reference:
        print("reference: %d prompt lengths equal llama2c_ref.py (ids, every logit row); "
              "max |logit diff| %.3g (tolerance 1e-4 + 1e-4*|ref|)" % (cases, ref_worst))


if __name__ == "__main__":
    main()
