#!/usr/bin/env python3
"""Checks the tokenizer loomc converts from a tokenizer.json.

Encodes texts with `loom-run ARTIFACT --tokenize` and compares the ids with
  * run.c's recorded ids (../shared/golden/tokenizer_encode.json, tok512);
  * the llama2.c artifact of the same model (tok512.bin), on fuzz strings;
  * HFTokenizer of ../shared/golden/tools/llama2c_to_hf.py, an independent
    implementation of what Hugging Face `tokenizers` does with the file, in
    its split_special_tokens mode (special-token text is ordinary text, as
    in run.c), on the same strings.
Prints one summary line per comparison. Standard library only (plus the
reference's numpy).
"""
import argparse
import importlib.util
import json
import random
import subprocess
import sys


def tokenize(loom_run, artifact, texts):
    out = subprocess.run([loom_run, artifact, "--tokenize"], input="\n".join(texts) + "\n",
                         capture_output=True, text=True, check=True).stdout
    lines = out.split("\n")[:-1]
    assert len(lines) == len(texts), (len(lines), len(texts))
    return [[int(x) for x in line.split()] for line in lines]


def fuzz(pieces, n, seed):
    # Vocabulary pieces and odd characters; no newline (one text a line) and
    # no U+2581, which tokenizers maps to the space piece and run.c does not.
    rng = random.Random(seed)
    extra = list(" \t.,!?'\"<>sx") + ["é", "ü", "ß", "你", "🦙", "\u00a0", "<s>", "</s>", "<unk>", "  "]
    out = []
    for _ in range(n):
        k = rng.randint(1, 11)
        out.append("".join(rng.choice(pieces) if rng.random() < 0.8 else rng.choice(extra)
                           for _ in range(k)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loom-run", required=True)
    ap.add_argument("--hf-artifact", required=True)
    ap.add_argument("--llama2c-artifact", required=True)
    ap.add_argument("--tokenizer-json", required=True)
    ap.add_argument("--encode-golden", required=True)
    ap.add_argument("--reference", required=True, help="llama2c_to_hf.py")
    ap.add_argument("--fuzz", type=int, default=2000)
    a = ap.parse_args()

    spec = importlib.util.spec_from_file_location("llama2c_to_hf", a.reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    hf = ref.HFTokenizer(a.tokenizer_json)

    cases = [c for c in json.load(open(a.encode_golden))["tokenizers"]["tok512.bin"]["cases"]
             if "\n" not in c["text"]]
    got = tokenize(a.loom_run, a.hf_artifact, [c["text"] for c in cases])
    bad = [c["text"] for c, g in zip(cases, got) if g != c["ids"]]
    print("run.c golden: %d texts, %d differ%s" % (len(cases), len(bad),
          "".join("\n  differs: %r" % t for t in bad)))

    pieces = [p for p, i in hf.vocab.items() if i > 258]
    pieces = [p.replace("\u2581", " ") for p in pieces]
    texts = fuzz(pieces, a.fuzz, 7)
    got = tokenize(a.loom_run, a.hf_artifact, texts)
    l2c = tokenize(a.loom_run, a.llama2c_artifact, texts)
    bad = [t for t, g, w in zip(texts, got, l2c) if g != w]
    print("llama2.c artifact: %d fuzz texts, %d differ%s" % (len(texts), len(bad),
          "".join("\n  differs: %r" % t for t in bad[:5])))
    bad = [t for t, g in zip(texts, got) if g != hf.encode(t, split_special=True)]
    print("tokenizers (reference): %d fuzz texts, %d differ%s" % (len(texts), len(bad),
          "".join("\n  differs: %r" % t for t in bad[:5])))


if __name__ == "__main__":
    sys.exit(main())
