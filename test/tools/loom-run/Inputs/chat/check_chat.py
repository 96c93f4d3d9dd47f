#!/usr/bin/env python3
"""Renders every template x conversation x add_generation_prompt through
`loom-run --chat --render-chat` and through jinja2 as transformers
configures it (render_ref.py), and compares them byte for byte. Where the
reference refuses (the template's raise_exception, an undefined value, a
type error), loom-run must exit 1 naming the same problem.

  check_chat.py LOOM_RUN ARTIFACT BOS EOS TEMPLATE_DIR CONVERSATION_DIR

Prints one summary line; exits 1 on the first disagreement.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

import jinja2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render_ref  # noqa: E402


def main():
    loom_run, artifact, bos, eos, templates, conversations = sys.argv[1:7]
    env = render_ref.environment()
    same = refused = 0
    for template in sorted(glob.glob(os.path.join(templates, "*.jinja"))):
        with open(template, encoding="utf-8") as f:
            compiled = env.from_string(f.read())
        for conv in sorted(glob.glob(os.path.join(conversations, "*.json"))):
            with open(conv, encoding="utf-8") as f:
                doc = json.load(f)
            for gen in (True, False):
                variables = dict(doc) if isinstance(doc, dict) else {"messages": doc}
                variables["add_generation_prompt"] = gen
                with tempfile.NamedTemporaryFile("w", suffix=".json",
                                                 delete=False) as tmp:
                    json.dump(variables, tmp, ensure_ascii=False)
                name = "%s x %s (add_generation_prompt %s)" % (
                    os.path.basename(template), os.path.basename(conv), gen)
                try:
                    want, why = render_ref.render(compiled, variables, bos, eos), None
                except (jinja2.exceptions.TemplateError, TypeError) as e:
                    want, why = None, e
                got = subprocess.run(
                    [loom_run, artifact, "--chat", "--chat-template", template,
                     "--messages", tmp.name, "--render-chat"],
                    capture_output=True)
                os.unlink(tmp.name)
                if why is None:
                    if got.returncode != 0 or got.stdout != want.encode("utf-8"):
                        print("MISMATCH %s\n--- jinja2:\n%s\n--- loom-run (exit %d):\n%s%s"
                              % (name, want, got.returncode,
                                 got.stdout.decode("utf-8", "replace"),
                                 got.stderr.decode("utf-8", "replace")))
                        sys.exit(1)
                    same += 1
                    continue
                message = got.stderr.decode("utf-8", "replace")
                # jinja2's own words, where it has them (TypeErrors are
                # Python's; any refusal with exit 1 agrees with those).
                words = str(why) if isinstance(why, jinja2.exceptions.TemplateError) else ""
                if got.returncode != 1 or not message.startswith("loom-run: ") or \
                        words not in message:
                    print("MISMATCH %s: jinja2 refuses (%s), loom-run exits %d: %s"
                          % (name, why, got.returncode, message))
                    sys.exit(1)
                refused += 1
    print("chat templates: %d renders equal jinja2's, %d refusals agree"
          % (same, refused))


if __name__ == "__main__":
    main()
