#!/usr/bin/env python3
"""`loom-run --chat` generates from the template's prompt: its greedy ids
equal those of feeding the rendered prompt's ids (--render-chat
--print-ids) with --prompt-ids, and in text mode only the reply is printed
(the ids' text, not the prompt's).

  check_chat_reply.py LOOM_RUN ARTIFACT
"""
import subprocess
import sys


def run(*args):
    got = subprocess.run(list(args), capture_output=True)
    if got.returncode != 0:
        print("FAILED %s: %s" % (" ".join(args), got.stderr.decode()))
        sys.exit(1)
    return got.stdout.decode("utf-8")


def main():
    loom_run, artifact = sys.argv[1:3]
    chat = ["--chat", "--system", "Answer in one word.", "--prompt",
            "Which colour is the sky?"]
    greedy = ["--steps", "12", "--temperature", "0"]
    rendered = run(loom_run, artifact, *chat, "--render-chat", "--print-ids")
    prompt_ids = rendered[:-1].rpartition("\n")[2].split()
    via_chat = run(loom_run, artifact, *chat, *greedy, "--print-ids").split()
    via_ids = run(loom_run, artifact, "--prompt-ids", ",".join(prompt_ids),
                  *greedy, "--print-ids").split()
    if via_chat != via_ids or len(via_chat) != 12:
        print("MISMATCH: --chat gives %s, --prompt-ids of its prompt %s"
              % (via_chat, via_ids))
        sys.exit(1)
    text = run(loom_run, artifact, *chat, *greedy)
    if "Which colour" in text or "Answer in one word" in text:
        print("MISMATCH: --chat echoed the prompt: %r" % text)
        sys.exit(1)
    print("--chat: %d prompt ids, the same 12 greedy ids as --prompt-ids, "
          "reply printed alone" % len(prompt_ids))


if __name__ == "__main__":
    main()
