#!/usr/bin/env python3
"""The chat prompts whose token ids expected-chat-ids.json records: each
(vocabulary, template, conversation) case's text as jinja2 renders it
(render_ref.py, add_generation_prompt true), as JSON on stdout, for
record_chat_ids.mjs to tokenize with llama.cpp or Hugging Face tokenizers.

  chat_cases.py > cases.json
"""
import json
import os
import sys

import jinja2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import render_ref  # noqa: E402

# vocabulary -> (BOS text, EOS text, templates); the vocabularies are those
# chat.test builds: bpe_vocab.py --pre llama3 with chat specials; make_gguf.py
# --spm-specials on tok512.bin, llama and phi3 architectures (llama.cpp
# tokenizes those); bpe_vocab.py --spm on tok512.bin as Mistral v0.3's
# tokenizer.json (Metaspace "first"), Llama 2's (Prepend) and Phi-3's
# (Prepend, rstrip specials) (Hugging Face tokenizers tokenizes those).
VOCABS = {
    "llama3": ("<|begin_of_text|>", "<|eot_id|>",
               ["llama3", "llama3.1-tools", "qwen2.5-tools", "qwen3-thinking",
                "smollm2", "jinja-features"]),
    "spm-llama": ("<s>", "</s>", ["llama2-chat", "mistral-instruct", "phi3",
                                  "zephyr", "jinja-features"]),
    "spm-phi3": ("<s>", "</s>", ["phi3", "zephyr"]),
    "hf-first": ("<s>", "</s>", ["mistral-instruct", "llama2-chat", "zephyr"]),
    "hf-prepend": ("<s>", "</s>", ["llama2-chat", "mistral-instruct"]),
    "hf-phi3": ("<s>", "</s>", ["phi3", "zephyr"]),
}
CONVERSATIONS = ["basic", "no-system", "multi-turn", "tools", "thinking"]


def main():
    env = render_ref.environment()
    cases = []
    for vocab, (bos, eos, templates) in VOCABS.items():
        for t in templates:
            with open(os.path.join(HERE, "templates", t + ".jinja"),
                      encoding="utf-8") as f:
                compiled = env.from_string(f.read())
            for c in CONVERSATIONS:
                with open(os.path.join(HERE, "conversations", c + ".json"),
                          encoding="utf-8") as f:
                    doc = json.load(f)
                variables = dict(doc) if isinstance(doc, dict) else {"messages": doc}
                try:
                    text = render_ref.render(compiled, variables, bos, eos)
                except (jinja2.exceptions.TemplateError, TypeError):
                    continue
                cases.append({"vocab": vocab, "template": t,
                              "conversation": c, "text": text})
    json.dump(cases, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
