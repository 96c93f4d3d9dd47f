"""Checks loom-run's byte-level BPE encoding against llama.cpp's ids recorded
by record_refs.mjs (Hugging Face tokenizers' JS port gives the same ids,
except where its Digits pre-tokenizer, knowing ASCII digits only, differs
from the Rust original and llama.cpp: those cases are counted), and its
decoding by the echo of each text.

  check_ids.py EXPECTED.json TOKENIZER.json MODEL.loom [--loom-run loom-run]
      [--gguf MODEL.gguf] [--nfc]

With --gguf (the file MODEL.loom was compiled from), also llama.cpp's
greedy continuations of three prompts under that model, and its 16
highest logits at each position of a prompt, within --tolerance (llama.cpp
computes parts of attention in f16: about 1e-3 here). Prints a summary
line each; exits 1 on any difference (each one printed) or when
TOKENIZER.json or MODEL.gguf is not the one the ids were recorded for.

With --nfc (a tokenizer.json that normalizes to NFC, which llama.cpp does
not do), the texts where tokenizers' ids differ from llama.cpp's must get
tokenizers' ids, and echo in NFC.
"""
import unicodedata
import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("expected")
    ap.add_argument("tokenizer")
    ap.add_argument("model")
    ap.add_argument("--loom-run", default="loom-run")
    ap.add_argument("--gguf")
    ap.add_argument("--tolerance", type=float, default=4e-3)
    ap.add_argument("--nfc", action="store_true")
    a = ap.parse_args()
    want = json.load(open(a.expected, encoding="utf-8"))
    sha256 = lambda path: hashlib.sha256(open(path, "rb").read()).hexdigest()
    if sha256(a.tokenizer) != want["tokenizer_sha256"]:
        sys.exit("check_ids: %s has sha256 %s, the ids were recorded for %s "
                 "(bpe_vocab.py changed? record again)" % (
                     a.tokenizer, sha256(a.tokenizer), want["tokenizer_sha256"]))
    greedy = []
    if a.gguf:
        greedy = want["greedy"].get(sha256(a.gguf))
        if greedy is None:
            sys.exit("check_ids: no greedy ids were recorded for %s (sha256 %s; "
                     "make_gguf.py changed? record again)" % (a.gguf, sha256(a.gguf)))
    bad_greedy = near_ties = 0
    for case in greedy:
        # The ids llama.cpp was given (its tokenization is checked apart).
        prompt = [str(i) for i in case["input"]]
        run = subprocess.run([a.loom_run, a.model, "--prompt-ids", ",".join(prompt),
                              "--steps", str(len(case["ids"])), "--temperature", "0",
                              "--print-ids"], capture_output=True, check=True)
        got = [int(x) for x in run.stdout.split()]
        if got == case["ids"]:
            continue
        # Equal up to a near-tie: where they part, llama.cpp's id is within
        # the logit tolerance of Loom's.
        k = next(i for i, (x, y) in enumerate(zip(got, case["ids"])) if x != y)
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "logits.f32")
            ids = ",".join(prompt + [str(i) for i in case["ids"][:k]])
            subprocess.run([a.loom_run, a.model, "--prompt-ids", ids, "--steps", "1",
                            "--print-ids", "--dump-logits", dump],
                           capture_output=True, check=True)
            data = open(dump, "rb").read()
        vocab = len(data) // 4 // (len(prompt) + k)
        last = struct.unpack_from("<%df" % vocab, data, len(data) - 4 * vocab)
        gap = last[got[k]] - last[case["ids"][k]]
        if gap <= a.tolerance:
            near_ties += 1
            continue
        bad_greedy += 1
        print("greedy ids differ for %r: loom %s, llama.cpp %s" % (
            case["prompt"], got, case["ids"]))
    bad_logits = False
    if a.gguf:
        print("%d greedy continuations: %d differ from llama.cpp's%s" % (
            len(greedy), bad_greedy,
            " (%d up to a near-tie)" % near_ties if near_ties else ""))
        ref = want["logits"][sha256(a.gguf)]
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "logits.f32")
            ids = ",".join(str(i) for i in ref["ids"])
            subprocess.run([a.loom_run, a.model, "--prompt-ids", ids, "--steps", "1",
                            "--print-ids", "--dump-logits", dump],
                           capture_output=True, check=True)
            data = open(dump, "rb").read()
        vocab = len(data) // 4 // len(ref["ids"])
        rows = struct.unpack("<%df" % (len(data) // 4), data)
        worst = max(abs(rows[p * vocab + i] - v)
                    for p, top in enumerate(ref["top"]) for i, v in top)
        bad_logits = not worst <= a.tolerance
        print("logits at %d positions: %s llama.cpp's (the 16 highest each)" % (
            len(ref["ids"]), "within %g of" % a.tolerance if not bad_logits
            else "NOT within %g of" % a.tolerance))
        if bad_logits:
            print("max |difference| %.3g" % worst)
    bad_ids = bad_text = normalized = 0
    for case in want["cases"]:
        text = case["text"]
        run = subprocess.run([a.loom_run, a.model, "--tokenize", "--prompt", text],
                             capture_output=True, check=True)
        got = [int(x) for x in run.stdout.split()]
        expected = case["ids"]
        if a.nfc and "tokenizers" in case:
            expected = case["tokenizers"]
            normalized += 1
        if got != expected:
            bad_ids += 1
            print("ids differ for %r: loom %s, %s %s" % (
                text, got, "tokenizers" if expected is not case["ids"]
                else "llama.cpp", expected))
        if not got:
            continue  # nothing to run: an empty prompt without BOS
        echo = subprocess.run([a.loom_run, a.model, "--prompt", text, "--steps", "0"],
                              capture_output=True, check=True).stdout
        shown = unicodedata.normalize("NFC", text) if a.nfc else text
        if echo != shown.encode() + b"\n":
            bad_text += 1
            print("echo differs for %r: %r" % (text, echo))
    bad_special = 0
    for case in want["special_cases"]:
        run = subprocess.run([a.loom_run, a.model, "--tokenize", "--special",
                              "--prompt", case["text"]], capture_output=True, check=True)
        got = [int(x) for x in run.stdout.split()]
        if got != case["ids"]:
            bad_special += 1
            print("--special ids differ for %r: loom %s, llama.cpp %s" % (
                case["text"], got, case["ids"]))
    js = sum(1 for c in want["cases"] + want["special_cases"] if "tokenizers" in c)
    if a.nfc:
        print("%d texts: %d with other ids than llama.cpp's or, for the %d "
              "not in NFC, tokenizers'; %d echoed differently (in NFC); %d "
              "with special tokens: %d differ" % (
                  len(want["cases"]), bad_ids, normalized, bad_text,
                  len(want["special_cases"]), bad_special))
    else:
        print("%d texts: %d with other ids than llama.cpp's, %d echoed "
              "differently; %d with special tokens: %d differ (tokenizers' JS "
              "port agrees on all but %d)" % (
                  len(want["cases"]), bad_ids, bad_text,
                  len(want["special_cases"]), bad_special, js))
    sys.exit(1 if bad_ids or bad_text or bad_special or bad_greedy or bad_logits
             else 0)


if __name__ == "__main__":
    main()
