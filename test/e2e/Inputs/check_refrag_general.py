#!/usr/bin/env python3
"""REFRAG beyond the recorded golden cases: other contexts (a text and
seeded random ids), question lengths, chunk sizes (1, 3, 5, 6, 7, 16, with
short last chunks), policy fractions and explicit expansion lists, each
against the independent numpy reference that made the golden,
../shared/golden/tools/refrag_tiny.py, run here on the same inputs (its
encoder, projector, policy and decoder; this script only assembles the
sequence as the golden README states and feeds the generated tokens back).

For each case loomc's artifact (loom-fuse-chunk-projector's form) run by
loom-run must give the reference's decoder positions, 8 greedy ids, and
the logits of every position and of each generated token within
1e-4 + 1e-4 |ref| (the golden test's tolerance).
"""
import math
import os
import random
import sys

import numpy as np

from checklib import ATOL, RTOL, load_module, read_f32, run, tool_args

STEPS = 8


def reference_case(ref, dec, T, ctx, question, k, policy, listed):
    """The reference's sequence rows, expanded chunks, and logits: every
    position of the sequence, then after each of STEPS - 1 greedy tokens."""
    chunks = [ctx[i:i + k] for i in range(0, len(ctx), k)]
    E = np.stack([ref.encode_chunk(T, c)[0] for c in chunks]).astype(np.float32)
    P = ref.project(T, E).astype(np.float32)
    if policy is not None:
        expanded = ref.policy_select(ref.policy_scores(T, E), policy)[0]
    else:
        expanded = sorted(listed)
    rows = [dec.tok_emb[ref.BOS_ID]]
    for i, c in enumerate(chunks):
        if i in expanded:
            rows += [dec.tok_emb[t] for t in c]
        else:
            rows.append(P[i])
    rows += [dec.tok_emb[t] for t in question]
    seq = np.stack(rows).astype(np.float32)
    logits = dec.forward_embeds(seq)
    all_rows = list(logits)
    ids = []
    last = logits[-1]
    for j in range(STEPS):
        nxt = ref.argmax_first(last)
        ids.append(nxt)
        if j + 1 < STEPS:
            seq = np.concatenate([seq, dec.tok_emb[nxt][None, :]])
            last = dec.forward_embeds(seq)[-1]
            all_rows.append(last)
    return len(rows), expanded, ids, np.stack(all_rows)


def main():
    ap = tool_args(__doc__)
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--golden", required=True, help="../shared/golden")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    ref = load_module(os.path.join(a.golden, "tools", "refrag_tiny.py"), "refrag_tiny")
    bundle = os.path.join(a.golden, "refrag-tiny", "refrag_tiny.safetensors")
    art = a.artifact or os.path.join(a.workdir, "rag.loom")
    if not a.artifact:
        run([a.loomc, "--format=refrag", "--decoder", a.decoder, "--tokenizer", a.tokenizer,
             "--bundle", bundle, "-o", art, "--quiet"])
    dec = ref.Llama(a.decoder)
    tok = ref.Tokenizer(a.tokenizer, dec.vocab)
    T, _ = ref.load_safetensors(bundle)

    rng = random.Random(20261126)
    text = tok.encode("Tom found a small box under the old tree. Inside was a shiny key. "
                      "He ran home to show his mom, and she smiled.", bos=False, eos=False)
    randoms = [[rng.randrange(3, dec.vocab) for _ in range(n)] for n in (37, 50, 45, 29, 61)]
    question = tok.encode("What did Tom find?", bos=False, eos=False)
    # (context, question, k, policy fraction or None, listed chunks)
    cases = [
        (text, question, 1, 0.5, None),          # every token its own chunk
        (randoms[0], [7, 8, 9], 3, 0.0, None),   # all compressed, 13 chunks (last of 1)
        (randoms[1], [400], 5, None, [0, 3, 9]), # listed, first and last chunk
        (randoms[2], question, 16, 0.34, None),  # ceil(0.34 * 3) = 2 expanded
        (text, [5, 6], 6, 1.0, None),            # all expanded
        (randoms[3], question, 7, None, []),     # none listed: all compressed
        (randoms[4], [300, 301, 302, 303], 8, 0.6, None),
    ]
    worst = 0.0
    for n, (ctx, q, k, policy, listed) in enumerate(cases):
        positions, expanded, ids, want = reference_case(ref, dec, T, ctx, q, k, policy, listed)
        dump = os.path.join(a.workdir, "case%d.bin" % n)
        flags = (["--expand-policy", repr(policy)] if policy is not None else
                 ["--expand-chunks", ",".join(map(str, listed))] if listed else
                 ["--expand-policy", "0"])
        cmd = [a.loom_run, art, "--context-ids", ",".join(map(str, ctx)),
               "--prompt-ids", ",".join(map(str, q)), "--chunk-size", str(k),
               "--steps", str(STEPS), "--temperature", "0", "--print-ids",
               "--dump-logits", dump, "--device", a.device] + flags
        out, err = run(cmd, text=True, with_stderr=True)
        name = "case %d (k %d, %d context tokens, %s)" % (
            n, k, len(ctx), "p %s" % policy if policy is not None else "chunks %s" % listed)
        n_chunks = math.ceil(len(ctx) / k)
        expect = "%d chunks of %d, %d expanded -> %d decoder positions" % (
            n_chunks, k, len(expanded), positions)
        if expect not in err:
            sys.exit("FAILED %s: loom-run did not say '%s':\n%s" % (name, expect, err))
        got_ids = [int(x) for x in out.split()]
        if got_ids != ids:
            sys.exit("FAILED %s: ids %s, want %s" % (name, got_ids, ids))
        got = np.array(read_f32(dump), dtype=np.float32).reshape(-1, dec.vocab)
        if got.shape != want.shape:
            sys.exit("FAILED %s: %d logit rows, want %d" % (name, got.shape[0], want.shape[0]))
        diff = np.abs(got - want)
        bad = diff > ATOL + RTOL * np.abs(want)
        if bad.any():
            r, v = np.argwhere(bad)[0]
            sys.exit("FAILED %s: row %d id %d: got %.7g want %.7g"
                     % (name, r, v, got[r, v], want[r, v]))
        worst = max(worst, float(diff.max()))
        print("%s: %d positions, %d expanded, ids equal, max |logit diff| %.3g"
              % (name, positions, len(expanded), float(diff.max())))
    print("refrag general: %d cases passed; max |logit diff| %.3g (tolerance %g + %g*|ref|)"
          % (len(cases), worst, ATOL, RTOL))


if __name__ == "__main__":
    main()
