#!/usr/bin/env python3
"""Checks loomc --weight-type=bf16 + loom-run (CPU) against the f32 golden
outputs of a llama2.c checkpoint (../shared/golden, as check_golden.py).

Compiles the checkpoint twice, f32 and bf16, and checks:
  * the artifact: every tensor of rank >= 2 is BF16 (2 bytes a value), every
    rank-1 tensor F32, and the bf16 bytes are exactly the f32 artifact's
    values rounded to nearest even; the weights section is about half the
    f32 one (0.49 .. 0.52: the 1-D tensors stay f32);
  * logits: every stored golden row within the bf16 tolerance
        |d| <= R * u * max|ref row|,   u = 2^-9, R = 2 + 4 * n_layers
    u is bf16's unit roundoff (8 significant bits, round to nearest: a
    stored weight is w (1 + e), |e| <= 2^-9). R counts the rounded matrices
    on the deepest path from the embedding to a logit: the embedding, per
    layer Wqkv -> Wo and W1/W3 -> W2, and the classifier. The bound is
    first order, as if every rounding on that path moved the logits by u of
    the row's scale in the same direction; the errors of independent
    roundings mostly cancel, so the measured error is far below it;
  * greedy ids: equal to the golden ids up to the first near-tie of the
    reference, a position where the f32 top-1 - top-2 gap is below one bf16
    rounding of the row's largest logit (u * max|row|). Past a near-tie
    greedy decoding may legitimately follow the other branch. The reference
    logits along the golden ids come from the f32 artifact, which matches
    the golden logits within 1e-5 (golden-stories260K.test).
--device cuda runs every loom-run on the GPU; --artifacts-from DIR takes
the two artifacts compiled earlier (DIR/NAME-f32-mt64.loom and
DIR/NAME-bf16-mt64.loom) instead of running loomc (scripts/gpu-check.sh).
Standard library only.
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tools", "loomc", "Inputs"))
from artifact_info import read_artifact  # noqa: E402
from checklib import read_f32, run, tool_args  # noqa: E402

U = 2.0 ** -9


def bf16_bits(f32_bits):
    """Round to nearest even, as loomc does; a NaN stays a quiet NaN."""
    if (f32_bits & 0x7fffffff) > 0x7f800000:
        return (f32_bits >> 16) | 0x40
    return ((f32_bits + 0x7fff + ((f32_bits >> 16) & 1)) >> 16) & 0xffff


def check_artifacts(f32_path, bf16_path):
    a, a_bytes = read_artifact(f32_path)
    b, b_bytes = read_artifact(bf16_path)
    if [t["name"] for t in a["tensors"]] != [t["name"] for t in b["tensors"]]:
        sys.exit("FAILED: the f32 and bf16 artifacts have different tensors")
    values = 0
    for ta, tb in zip(a["tensors"], b["tensors"]):
        elems = 1
        for d in tb["shape"]:
            elems *= d
        want = "BF16" if len(tb["shape"]) >= 2 else "F32"
        if tb["dtype"] != want or tb["size"] != elems * (2 if want == "BF16" else 4):
            sys.exit("FAILED: tensor %s is %s with %d bytes, expected %s" %
                     (tb["name"], tb["dtype"], tb["size"], want))
        src = a_bytes[a["weights_offset"] + ta["offset"]:][:ta["size"]]
        got = b_bytes[b["weights_offset"] + tb["offset"]:][:tb["size"]]
        if want == "F32":
            if src != got:
                sys.exit("FAILED: f32 tensor %s differs" % tb["name"])
            continue
        f = struct.unpack("<%dI" % elems, src)
        h = struct.unpack("<%dH" % elems, got)
        for i in range(elems):
            if h[i] != bf16_bits(f[i]):
                sys.exit("FAILED: tensor %s element %d: bf16 %#06x, expected %#06x "
                         "(f32 %#010x rounded to nearest even)"
                         % (tb["name"], i, h[i], bf16_bits(f[i]), f[i]))
        values += elems
    ratio = b["weights_size"] / a["weights_size"]
    if not 0.49 <= ratio <= 0.52:
        sys.exit("FAILED: bf16 weights are %d bytes, %.3f of the f32 %d" %
                 (b["weights_size"], ratio, a["weights_size"]))
    return values, ratio


def main():
    ap = tool_args(__doc__, artifact=False)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--artifacts-from")
    ap.add_argument("--name", default="model")
    ap.add_argument("golden", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)

    arts = {}
    for wt in ("f32", "bf16"):
        if a.artifacts_from:
            arts[wt] = os.path.join(a.artifacts_from, "%s-%s-mt64.loom" % (a.name, wt))
            continue
        arts[wt] = os.path.join(a.workdir, "model-%s.loom" % wt)
        run([a.loomc, a.model, "--tokenizer", a.tokenizer, "-o", arts[wt],
             "--weight-type", wt, "--quiet"])
    values, ratio = check_artifacts(arts["f32"], arts["bf16"])
    print("bf16: %d values rounded to nearest even; weights %.3f of f32" % (values, ratio))

    n_layers = struct.unpack_from("<7i", open(a.model, "rb").read(28))[2]
    R = 2 + 4 * n_layers

    def dump(art, ids, steps, name):
        path = os.path.join(a.workdir, name)
        run([a.loom_run, "--device", a.device, art, "--prompt-ids", ",".join(map(str, ids)), "--steps",
             str(steps), "--temperature", "0", "--dump-logits", path])
        return read_f32(path)

    checks = 0
    worst = worst_u = 0.0
    for gpath in a.golden:
        g = json.load(open(gpath))
        name = os.path.basename(gpath)
        prompt = g["prompt_ids"]
        # Logits at the stored positions.
        lf = g["logits_file"]
        rows, vocab = lf["shape"]
        ref = read_f32(os.path.join(os.path.dirname(gpath), lf["file"]))
        steps = max(1, g["logits_positions"] - len(prompt) + 1)
        got = dump(arts["bf16"], prompt, steps, name + ".bf16.logits")
        if len(got) < rows * vocab:
            sys.exit("FAILED %s: dumped %d logits rows, need %d" % (name, len(got) // vocab, rows))
        for r in range(rows):
            row = ref[r * vocab:(r + 1) * vocab]
            scale = max(abs(x) for x in row)
            tol = R * U * scale
            for v in range(vocab):
                d = abs(got[r * vocab + v] - row[v])
                worst = max(worst, d)
                worst_u = max(worst_u, d / (U * scale))
                if d > tol:
                    sys.exit("FAILED %s: logits row %d id %d: got %.7g want %.7g "
                             "(|d| %.3g > %d u max|row| = %.3g)"
                             % (name, r, v, got[r * vocab + v], row[v], d, R, tol))
        checks += 1
        # Greedy ids up to the first near-tie of each recorded run.
        for steps_key, rec in sorted(g["runs"].items(), key=lambda kv: int(kv[0])):
            want = rec["generated_ids"]
            ids = run([a.loom_run, "--device", a.device, arts["bf16"], "--prompt-ids",
                       ",".join(map(str, prompt)), "--steps", str(len(want)),
                       "--temperature", "0", "--print-ids"])
            ids = [int(x) for x in ids.split()]
            # Reference logits along the golden ids: row len(prompt)-1+i
            # predicts want[i].
            ref_rows = dump(arts["f32"], prompt + want[:-1], 1,
                            "%s.%s.f32.logits" % (name, steps_key))
            tie = len(want)
            for i in range(len(want)):
                r = len(prompt) - 1 + i
                row = sorted(ref_rows[r * vocab:(r + 1) * vocab], reverse=True)
                if row[0] - row[1] < U * max(abs(row[0]), abs(row[-1])):
                    tie = i
                    break
            first = next((i for i, (x, y) in enumerate(zip(ids, want)) if x != y),
                         min(len(ids), len(want)))
            if first < tie:
                sys.exit("FAILED %s steps=%s: ids differ at %d, before the first "
                         "near-tie at %d\n got  %s\n want %s"
                         % (name, steps_key, first, tie, ids, want))
            print("%s steps=%s: ids equal %s" % (
                name, steps_key, "throughout" if first == len(want) else
                "up to %d, near-tie at %d" % (first, tie)))
            checks += 1
    print("bf16 golden: %d checks passed over %d files; max |logit diff| %.3g = %.2f u "
          "max|row| (tolerance %d u max|row|)" % (checks, len(a.golden), worst, worst_u, R))

    # Long prompts: each golden's prompt and longest run fed as one prompt,
    # so every row comes from a prefill step of up to max_tokens rows, whose
    # activations are rounded to bf16 too (docs/artifact-format.md). Against
    # the f32 artifact's rows for the same ids (which match the golden within
    # 1e-4), with the same bound.
    rows_checked = 0
    worst_long = worst_long_u = 0.0
    for gpath in a.golden:
        g = json.load(open(gpath))
        name = os.path.basename(gpath)
        longest = max(g["runs"].values(), key=lambda rec: len(rec["generated_ids"]))
        ids = g["prompt_ids"] + longest["generated_ids"][:-1]
        got = dump(arts["bf16"], ids, 1, name + ".long.bf16.logits")
        ref = dump(arts["f32"], ids, 1, name + ".long.f32.logits")
        for r in range(len(ids)):
            row = ref[r * vocab:(r + 1) * vocab]
            scale = max(abs(x) for x in row)
            d = max(abs(x - y) for x, y in zip(got[r * vocab:(r + 1) * vocab], row))
            worst_long = max(worst_long, d)
            worst_long_u = max(worst_long_u, d / (U * scale))
            if d > R * U * scale:
                sys.exit("FAILED %s as one prompt: row %d |d| %.3g > %d u max|row| = %.3g"
                         % (name, r, d, R, R * U * scale))
            rows_checked += 1
    print("long prompts: %d rows within %d u max|row|; max |logit diff| %.3g = %.2f u "
          "max|row|" % (rows_checked, R, worst_long, worst_long_u))


if __name__ == "__main__":
    main()
