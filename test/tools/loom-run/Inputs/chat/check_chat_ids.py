#!/usr/bin/env python3
"""Checks the token ids of rendered chat prompts against llama.cpp's (GGUF
vocabularies) and Hugging Face tokenizers' (tokenizer.json ones)
(expected-chat-ids.json, recorded by record_chat_ids.mjs): for each case,
`loom-run ARTIFACT --chat --chat-template T --messages C --render-chat
--print-ids` must print jinja2's text and the reference's ids.

  check_chat_ids.py LOOM_RUN EXPECTED.json VOCAB=ARTIFACT ...

Prints one summary line; exits 1 at the first difference.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    loom_run, expected = sys.argv[1:3]
    artifacts = dict(arg.split("=", 1) for arg in sys.argv[3:])
    with open(expected, encoding="utf-8") as f:
        cases = json.load(f)
    checked = 0
    for c in cases:
        if c["vocab"] not in artifacts:
            continue
        got = subprocess.run(
            [loom_run, artifacts[c["vocab"]], "--chat", "--chat-template",
             os.path.join(HERE, "templates", c["template"] + ".jinja"),
             "--messages",
             os.path.join(HERE, "conversations", c["conversation"] + ".json"),
             "--render-chat", "--print-ids"], capture_output=True)
        name = "%s / %s / %s" % (c["vocab"], c["template"], c["conversation"])
        out = got.stdout.decode("utf-8")
        text, _, ids = out[:-1].rpartition("\n")
        if got.returncode != 0 or text != c["text"]:
            print("MISMATCH %s: text differs from jinja2's (exit %d)\n%s%s"
                  % (name, got.returncode, out, got.stderr.decode()))
            sys.exit(1)
        ids = [int(x) for x in ids.split()]
        if ids != c["ids"]:
            at = next(i for i in range(min(len(ids), len(c["ids"])) + 1)
                      if i >= len(ids) or i >= len(c["ids"]) or ids[i] != c["ids"][i])
            print("MISMATCH %s: ids differ from the reference's at %d\nreference: %s\nloom-run:  %s"
                  % (name, at, c["ids"][max(0, at - 5):at + 10], ids[max(0, at - 5):at + 10]))
            sys.exit(1)
        checked += 1
    if checked == 0:
        print("no case matched the artifacts given")
        sys.exit(1)
    print("%d chat prompts: text equal to jinja2's, ids equal to the "
          "references'" % checked)


if __name__ == "__main__":
    main()
