#!/usr/bin/env python3
"""Checks loomc on llama.cpp GGUF files against llama.cpp and the goldens.

For each GGUF (../shared/models/gguf, recorded in
../shared/golden/gguf-stories260K.json) it compiles the file and checks:
  * decoding: an independent numpy reader decodes every tensor
    (ggml_blocks.py) and writes a llama2.c checkpoint;
    loomc's artifact of that checkpoint gives bit for bit the logits of the
    GGUF's artifact;
  * tokenizer: the prompt's ids (loom-run --tokenize) equal llama.cpp's;
  * greedy ids: the 64 generated ids equal llama.cpp's, and the text equals
    llama.cpp's text;
  * logits: on the golden run's 21 positions, the distance to the f32
    golden (run.c) is within the fp32 tolerance for F32 files and at most
    1.5x llama.cpp's own distance for quantized ones.
Prints one line per file. Needs numpy.

  check_gguf.py twin IN.gguf OUT.bin   writes only the llama2.c twin
"""
import argparse
import json
import os
import struct
import subprocess
import sys

import numpy as np

import ggml_blocks as gb

VALUE_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf(path):
    """(metadata dict, {name: float32 array of the row-major shape})."""
    b = open(path, "rb").read()
    magic, version, n_tensors, n_kv = struct.unpack_from("<IIQQ", b, 0)
    assert magic == 0x46554747 and version in (2, 3)
    at = [24]

    def take(fmt):
        v = struct.unpack_from("<" + fmt, b, at[0])
        at[0] += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        n = take("Q")
        s = b[at[0]:at[0] + n].decode("utf-8")
        at[0] += n
        return s

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(VALUE_FMT[t])

    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        ne = [take("Q") for _ in range(take("I"))]
        infos.append((name, ne, take("I"), take("Q")))
    align = meta.get("general.alignment", 32)
    start = (at[0] + align - 1) // align * align
    tensors = {}
    for name, ne, typ, off in infos:
        if typ not in gb.BLOCKS:
            sys.exit("%s: tensor %s has type %d" % (path, name, typ))
        n = int(np.prod(ne))
        x = gb.decode(typ, b[start + off:start + off + n // gb.BLOCKS[typ][0] * gb.BLOCKS[typ][1]], n)
        tensors[name] = x.reshape(list(reversed(ne)))
    return meta, tensors


def write_llama2c(meta, t, path):
    """The decoded model as a llama2.c checkpoint (untied when the GGUF has
    output.weight)."""
    dim = meta["llama.embedding_length"]
    layers = meta["llama.block_count"]
    heads = meta["llama.attention.head_count"]
    seq = meta["llama.context_length"]
    vocab = t["token_embd.weight"].shape[0]
    untied = "output.weight" in t
    header = struct.pack("<7i", dim, meta["llama.feed_forward_length"], layers, heads,
                         meta.get("llama.attention.head_count_kv", heads),
                         -vocab if untied else vocab, seq)
    parts = [t["token_embd.weight"]]
    for name in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                 "ffn_gate", "ffn_down", "ffn_up"):
        parts += [t["blk.%d.%s.weight" % (l, name)] for l in range(layers)]
    parts.append(t["output_norm.weight"])
    parts.append(np.zeros(2 * seq * (dim // heads // 2), np.float32))  # legacy rope tables
    if untied:
        parts.append(t["output.weight"])
    with open(path, "wb") as f:
        f.write(header + b"".join(np.ascontiguousarray(p, "<f4").tobytes() for p in parts))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def write_twin(gguf, out):
    """gguf_twin: the GGUF's decoded weights as a llama2.c checkpoint."""
    meta, t = read_gguf(gguf)
    write_llama2c(meta, t, out)


def main():
    if sys.argv[1] == "twin":
        return write_twin(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loomc", required=True)
    ap.add_argument("--loom-run", required=True)
    ap.add_argument("--tokenizer", required=True, help="tok512.bin, for the llama2.c twin")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--golden-dir", required=True)
    ap.add_argument("gguf", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    rec = json.load(open(os.path.join(a.golden_dir, "gguf-stories260K.json")))
    g = json.load(open(os.path.join(a.golden_dir, "stories260K_once_upon_a_time.json")))
    ref = np.fromfile(os.path.join(a.golden_dir, g["logits_file"]["file"]), "<f4").reshape(
        g["logits_file"]["shape"])
    feed = ",".join(str(i) for i in g["logits_input_ids"])
    failed = 0
    for path in a.gguf:
        name = os.path.basename(path)
        want = rec["models"][name]
        art = os.path.join(a.workdir, name + ".loom")
        run([a.loomc, path, "-o", art, "--quiet"])
        problems = []

        twin_bin = os.path.join(a.workdir, name + ".bin")
        write_llama2c(*read_gguf(path), twin_bin)
        twin = os.path.join(a.workdir, name + ".twin.loom")
        run([a.loomc, twin_bin, "--tokenizer", a.tokenizer, "-o", twin, "--quiet"])
        logits = {}
        for which, artifact in (("gguf", art), ("twin", twin)):
            out = os.path.join(a.workdir, "%s.%s.logits" % (name, which))
            run([a.loom_run, artifact, "--prompt-ids", feed, "--steps", "0", "--dump-logits", out,
                 "--temperature", "0", "--threads", "2"])
            logits[which] = np.fromfile(out, "<f4").reshape(-1, ref.shape[1])
        if not np.array_equal(logits["gguf"].view(np.uint32), logits["twin"].view(np.uint32)):
            problems.append("logits differ from the numpy-decoded twin")

        ids = [int(x) for x in run([a.loom_run, art, "--tokenize"], input=rec["prompt"] + "\n").split()]
        if ids != want["prompt_ids"]:
            problems.append("prompt ids %s, llama.cpp %s" % (ids, want["prompt_ids"]))
        gen = [int(x) for x in run([a.loom_run, art, "--prompt-ids", ",".join(map(str, ids)),
                                    "--steps", "64", "--temperature", "0", "--print-ids",
                                    "--threads", "2"]).split()]
        if gen != want["generated_ids_64"]:
            first = next((i for i, (x, y) in enumerate(zip(gen, want["generated_ids_64"])) if x != y),
                         min(len(gen), 64))
            problems.append("greedy ids differ from llama.cpp's at %d" % first)
        text = run([a.loom_run, art, "--prompt", rec["prompt"], "--steps", "64", "--temperature", "0",
                    "--threads", "2"])
        if text.endswith("\n"):  # loom-run ends the output with a newline
            text = text[:-1]
        if text != want["text_64"]:
            problems.append("text %r, llama.cpp %r" % (text, want["text_64"]))

        d = np.abs(logits["gguf"][:ref.shape[0]] - ref)
        theirs = want["logits_max_abs_vs_golden"]
        if name.endswith("-f32.gguf"):
            bound = "1e-4 + 1e-4 |ref|"
            ok = bool(np.all(d <= 1e-4 + 1e-4 * np.abs(ref)))
        else:
            bound = "1.5 x llama.cpp's %.3g" % theirs
            ok = d.max() <= 1.5 * theirs
        if not ok:
            problems.append("logits exceed %s" % bound)
        print("%s: %s; max |d| vs golden %.3g (llama.cpp %.3g)" % (
            name, "ok" if not problems else "; ".join(problems), d.max(), theirs))
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
