"""Checks loom-run's byte-level BPE encoding against the references' ids
recorded by record_refs.mjs (llama.cpp and Hugging Face tokenizers agreeing),
and its decoding by the echo of each text.

  check_ids.py EXPECTED.json TOKENIZER.json MODEL.loom [--loom-run loom-run]
      [--gguf MODEL.gguf]

With --gguf (the file MODEL.loom was compiled from), also llama.cpp's
greedy continuations of its prompts under that model. Prints a summary
line each; exits 1 on any difference (each one printed) or when
TOKENIZER.json or MODEL.gguf is not the one the ids were recorded for.
"""
import argparse
import hashlib
import json
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("expected")
    ap.add_argument("tokenizer")
    ap.add_argument("model")
    ap.add_argument("--loom-run", default="loom-run")
    ap.add_argument("--gguf")
    a = ap.parse_args()
    want = json.load(open(a.expected, encoding="utf-8"))
    for path, key in ((a.tokenizer, "tokenizer_sha256"), (a.gguf, "gguf_sha256")):
        if path is None:
            continue
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if digest != want[key]:
            sys.exit("check_ids: %s has sha256 %s, the ids were recorded for %s "
                     "(bpe_vocab.py or make_gguf.py changed? record again)" % (
                         path, digest, want[key]))
    bad_greedy = 0
    for case in want["greedy"] if a.gguf else []:
        run = subprocess.run([a.loom_run, a.model, "--prompt", case["prompt"],
                              "--steps", str(len(case["ids"])), "--temperature", "0",
                              "--print-ids"], capture_output=True, check=True)
        got = [int(x) for x in run.stdout.split()]
        if got != case["ids"]:
            bad_greedy += 1
            print("greedy ids differ for %r: loom %s, llama.cpp %s" % (
                case["prompt"], got, case["ids"]))
    if a.gguf:
        print("%d greedy continuations: %d differ from llama.cpp's" % (
            len(want["greedy"]), bad_greedy))
    bad_ids = bad_text = 0
    for case in want["cases"]:
        text = case["text"]
        run = subprocess.run([a.loom_run, a.model, "--tokenize", "--prompt", text],
                             capture_output=True, check=True)
        got = [int(x) for x in run.stdout.split()]
        if got != case["ids"]:
            bad_ids += 1
            print("ids differ for %r: loom %s, references %s" % (text, got, case["ids"]))
        if not got:
            continue  # nothing to run: an empty prompt without BOS
        echo = subprocess.run([a.loom_run, a.model, "--prompt", text, "--steps", "0"],
                              capture_output=True, check=True).stdout
        if echo != text.encode() + b"\n":
            bad_text += 1
            print("echo differs for %r: %r" % (text, echo))
    print("%d texts: %d with other ids than the references, %d echoed "
          "differently" % (len(want["cases"]), bad_ids, bad_text))
    sys.exit(1 if bad_ids or bad_text or bad_greedy else 0)


if __name__ == "__main__":
    main()
