#!/usr/bin/env python3
"""Checks a loom-run --trace file against the program's dispatch list.

  check_trace.py TRACE.json DISPATCH.txt IDS.txt PROMPT_TOKENS MAX_TOKENS

DISPATCH.txt is `loomc --emit=dispatch` output, IDS.txt the --print-ids
output of the traced run. The session records one "X" event per dispatch
each time it runs the program: a prompt of P tokens runs it ceil(P /
MAX_TOKENS) times (one chunk of at most MAX_TOKENS rows each), and every
generated token except the last is fed back once. So the trace must hold
D x (ceil(P / MAX_TOKENS) + generated - 1) events, step after step in
program order, with the rows and start position of each step.
"""
import json
import re
import sys


def camel(op):
    return {"matmul": "MatMul"}.get(
        op, "".join(w.capitalize() for w in op.split("_")))


def main():
    trace_path, dispatch_path, ids_path, prompt, max_tokens = sys.argv[1:]
    prompt, max_tokens = int(prompt), int(max_tokens)
    with open(trace_path) as f:
        trace = json.load(f)
    events = trace["traceEvents"]

    program = []
    for line in open(dispatch_path):
        m = re.search(r'loom\.dispatch "([^"]*)".*?weights \[([^\]]*)\]', line)
        if not m:
            m = re.search(r'loom\.dispatch "([^"]*)"', line)
            if m:
                program.append((m.group(1), []))
            continue
        weights = [w.strip() for w in m.group(2).split(",") if w.strip()]
        program.append((m.group(1), weights))
    generated = len(open(ids_path).read().split())

    # (T rows, start position, logits rows) of each step.
    steps = []
    pos = 0
    while pos < prompt:
        T = min(max_tokens, prompt - pos)
        steps.append((T, pos, 1 if pos + T == prompt else 0))
        pos += T
    for _ in range(max(0, generated - 1)):
        steps.append((1, pos, 1))
        pos += 1

    expected = len(program) * len(steps)
    print("dispatches: %d" % len(program))
    print("steps: %d" % len(steps))
    print("events: %d (expected %d)" % (len(events), expected))
    if len(events) != expected:
        sys.exit("check_trace: wrong number of events")
    for i, e in enumerate(events):
        step = steps[i // len(program)]
        op, weights = program[i % len(program)]
        name = " ".join([op] + weights)
        want_rows = step[2] if op == "logits" else step[0]
        got = (e.get("ph"), e.get("name"), e["args"].get("kernel"),
               e["args"].get("rows"), e["args"].get("start_pos"))
        want = ("X", name, camel(op), want_rows, step[1])
        if got != want:
            sys.exit("check_trace: event %d is %r, expected %r" % (i, got, want))
        if not (isinstance(e.get("ts"), (int, float)) and
                isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0):
            sys.exit("check_trace: event %d has a bad ts/dur: %r" % (i, e))
        if i and e["ts"] < events[i - 1]["ts"]:
            sys.exit("check_trace: event %d starts before its predecessor" % i)
    print("trace: ok")


if __name__ == "__main__":
    main()
