#!/usr/bin/env python3
"""`loom-run --chat --interactive` against one conversation per run: each
greedy reply of an interactive session (the KV cache kept across turns)
equals the reply `loom-run --chat --messages` gives to the conversation up
to that turn, read back from --save-messages.

  check_chat_interactive.py LOOM_RUN ARTIFACT TEMPLATE WORKDIR [ARGS...]

ARGS go to every loom-run call (a looped model's iteration settings).

Prints the interactive run's summary line and one line of results.
"""
import json
import os
import subprocess
import sys

LINES = ["Once upon a time there was a cat.", "", "The dog barked.",
         "Lily went to the park with her mom.", "They saw a big red ball."]
STEPS = ["--steps", "24", "--temperature", "0", "--print-ids"]


def main():
    loom_run, artifact, template, workdir = sys.argv[1:5]
    steps = STEPS + sys.argv[5:]
    os.makedirs(workdir, exist_ok=True)
    saved = os.path.join(workdir, "saved.json")
    got = subprocess.run(
        [loom_run, artifact, "--chat", "--chat-template", template,
         "--interactive", "--system", "A story.", "--save-messages", saved]
        + steps, input="\n".join(LINES).encode(), capture_output=True)
    if got.returncode != 0:
        print("FAILED: " + got.stderr.decode())
        sys.exit(1)
    replies = got.stdout.decode().splitlines()
    messages = json.load(open(saved, encoding="utf-8"))
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if len(replies) != 4 or len(turns) != 4:
        print("MISMATCH: %d replies, %d assistant turns saved for 4 user lines"
              % (len(replies), len(turns)))
        sys.exit(1)
    distinct = set()
    for n, at in enumerate(turns):
        prefix = os.path.join(workdir, "turn%d.json" % n)
        json.dump(messages[:at], open(prefix, "w", encoding="utf-8"))
        one = subprocess.run(
            [loom_run, artifact, "--chat", "--chat-template", template,
             "--messages", prefix] + steps, capture_output=True)
        if one.returncode != 0 or one.stdout.decode().strip() != replies[n]:
            print("MISMATCH at reply %d: interactive %s, one-shot %s %s"
                  % (n, replies[n], one.stdout.decode().strip(),
                     one.stderr.decode()))
            sys.exit(1)
        distinct.add(replies[n])
    print(got.stderr.decode().strip())
    print("4 interactive replies (%d distinct) equal one-shot --messages "
          "replies" % len(distinct))


if __name__ == "__main__":
    main()
