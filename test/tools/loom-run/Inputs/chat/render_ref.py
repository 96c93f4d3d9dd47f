#!/usr/bin/env python3
"""Renders chat templates as Hugging Face transformers does (jinja2's
ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls,
raise_exception, strftime_now, its own tojson), the reference Loom's
renderer is checked against.

  render_ref.py TEMPLATE MESSAGES.json BOS EOS ADD_GENERATION_PROMPT(0|1)

Prints the rendered text, or "ERROR: message" where the template raises.
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class Generation(Extension):
    # transformers' AssistantTracker: {% generation %} renders its body.
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


def environment():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda f: datetime.now().strftime(f)
    return env


def render(compiled, variables, bos, eos):
    variables = dict(variables)
    variables.setdefault("bos_token", bos)
    variables.setdefault("eos_token", eos)
    variables.setdefault("add_generation_prompt", True)
    return compiled.render(**variables)


def main():
    template, messages, bos, eos, add = sys.argv[1:6]
    with open(template, encoding="utf-8") as f:
        compiled = environment().from_string(f.read())
    with open(messages, encoding="utf-8") as f:
        doc = json.load(f)
    variables = dict(doc) if isinstance(doc, dict) else {"messages": doc}
    variables.setdefault("add_generation_prompt", add == "1")
    try:
        out = render(compiled, variables, bos, eos)
    except jinja2.exceptions.TemplateError as e:
        out = "ERROR: " + str(e)
    sys.stdout.buffer.write(out.encode("utf-8"))


if __name__ == "__main__":
    main()
