#!/usr/bin/env python3
"""Loom's NFC (a byte-level vocabulary whose tokenizer.json normalizes) on
random texts made to exercise it — combining marks of several classes out
of canonical order, precomposed letters, composition exclusions (U+0958),
singletons (U+212B, U+2126, U+F900), Hangul jamo and syllables, Greek and
Vietnamese stacks, invalid UTF-8 bytes kept as they are — against Python's
unicodedata.normalize("NFC"): loom-run's echo of each prompt (its ids
decoded) must be the normalized text.

  check_nfc.py LOOM_RUN MODEL.loom
"""
import random
import subprocess
import sys
import unicodedata

POOLS = [
    "aeiouyAEIOUnNcCsSzZ", "\u0300\u0301\u0302\u0303\u0308\u0323\u0327\u031b\u0345\u0338",
    "\u05b0\u05b4\u05bc\u0591\u093c\u094d\u0e48\u0f71\u0f72\u0f80\u1dce",
    "\u00e0\u00e9\u00f1\u00fc\u01d6\u1e69\u1ea5\u1ec7\u00c5\u212b\u2126\u1e9b",
    "\u0958\u0959\u095a\u09dc\u0a33\u0f43\ufb1d\u2adc\uf900\uf9ff\u0344\u0f73",
    "\u1100\u1112\u1161\u1175\u11a8\u11c2\uac00\uac01\ud7a3\ub098",
    "\u03b1\u03b9\u03c9\u0391\u1f00\u1f80\u0313\u0314\u0342", " \n\t.,!",
    "\U0001d15e\U0001d160\U0001d165\U0001d16f\U0001f600", "\u3099\u309a\u304b\u30cf",
]


def main():
    loom_run, model = sys.argv[1:3]
    rng = random.Random(20261127)
    texts = []
    for _ in range(300):
        s = "".join(rng.choice(rng.choice(POOLS)) for _ in range(rng.randint(1, 24)))
        texts.append(s)
    bad = changed = 0
    for s in texts:
        want = unicodedata.normalize("NFC", s).encode()
        changed += want != s.encode()
        got = subprocess.run([loom_run, model, "--prompt", s, "--steps", "0"],
                             capture_output=True, check=True).stdout
        if got != want + b"\n":
            bad += 1
            if bad <= 5:
                print("differs for %r: loom %r, unicodedata %r" % (s, got, want))
    # Bytes that are not UTF-8 stay as they are, around normalized text.
    raw = b"e\xcc\x81\xff\xfeA\xcc\x8a\xc3"
    got = subprocess.run([loom_run, model, "--prompt", raw, "--steps", "0"],
                         capture_output=True, check=True).stdout
    if got != b"\xc3\xa9\xff\xfe\xc3\x85\xc3\n":
        bad += 1
        print("invalid UTF-8 around NFC: %r" % got)
    print("NFC: %d random texts (%d changed by it) and one with invalid UTF-8: "
          "%d differ from unicodedata's" % (len(texts), changed, bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
