#!/usr/bin/env python3
"""REFRAG time to first token: a long retrieved context as plain tokens
against compressed chunk placeholders (docs/chunk-placeholders.md).

It writes a llama2.c decoder of stories15M shape with seeded random weights
but a 4096-position context (bench/make_checkpoint.cpp, with its synthetic
tokenizer) and a random REFRAG bundle for it (bench/make_refrag_bundle.cpp:
encoder d_model 256, 4 heads of 64, 2 layers, FFN 1024, chunks of up to 32
tokens; projector 256 -> 288 -> 288), compiles the pair with
`loomc --format=refrag`, and runs

    loom-run rag.loom --bench-ttft --context-tokens N --chunk-size 8,16,32 \
        --expand-fractions 0,0.25 --threads T

in a fresh process per thread count. loom-run measures, in that one process,
the uncompressed baseline ([BOS] + context + question) and every (k, p);
time to first token = the policy's choice from precomputed scores, sequence
assembly, prefill and the first greedy token, best of 3. The chunk
embeddings, projections and scores are computed once per k beforehand (a
per-corpus cost, printed as "encode ms"). "pos ratio" is the baseline's
decoder positions over the compressed ones: the speed-up if prefill cost
were linear in the positions (attention makes it superlinear). "fusion" is
loom-fuse-chunk-projector's gain: the same prefill with the placeholder rows
cut to the model dim (layer 0 projects them) over the fused one, where
layer 0's q|k|v come with the rows.

usage: bench/bench_refrag.py [--bin build/bin] [--work /tmp/loom-bench-refrag]
                             [--context-tokens 2048] [--chunk-sizes 8,16,32]
                             [--expand-fractions 0,0.25] [--threads 1,2]
"""
import argparse
import os
import subprocess
import sys

# dim, hidden, layers, heads, kv_heads, vocab, seq
DECODER = (288, 768, 6, 6, 6, 32000, 4096)


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("bench: %s failed (exit %d): %s" % (" ".join(cmd), p.returncode, p.stderr))
    return p.stdout


def parse(out):
    """loom-run --bench-ttft stdout -> (key: value dict, table rows as dicts)."""
    keys, rows, header = {}, [], None
    for line in out.strip().splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            keys[k] = v
        elif header is None:
            header = line.split()
        else:
            rows.append(dict(zip(header, line.split())))
    return keys, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin"))
    ap.add_argument("--work", default="/tmp/loom-bench-refrag")
    ap.add_argument("--context-tokens", type=int, default=2048)
    ap.add_argument("--question-tokens", type=int, default=16)
    ap.add_argument("--chunk-sizes", default="8,16,32")
    ap.add_argument("--expand-fractions", default="0,0.25")
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    tool = lambda n: os.path.join(a.bin, n)

    dim, hidden, layers, heads, kv, vocab, seq = DECODER
    ckpt = os.path.join(a.work, "decoder.bin")
    tok = os.path.join(a.work, "tokenizer.bin")
    bundle = os.path.join(a.work, "bundle.safetensors")
    art = os.path.join(a.work, "rag.loom")
    # Always rebuilt (about a second), so the artifact matches the tools.
    run([tool("loom-make-checkpoint"), ckpt, "--dim", str(dim), "--hidden", str(hidden),
         "--layers", str(layers), "--heads", str(heads), "--kv-heads", str(kv),
         "--vocab", str(vocab), "--seq", str(seq), "--seed", "1", "--tokenizer-out", tok])
    run([tool("loom-make-refrag-bundle"), bundle, "--decoder-dim", str(dim),
         "--vocab", str(vocab), "--d-model", "256", "--heads", "4", "--layers", "2",
         "--ffn", "1024", "--max-chunk-len", "32", "--seed", "2"])
    run([tool("loomc"), "--format=refrag", "--decoder", ckpt, "--tokenizer", tok,
         "--bundle", bundle, "-o", art, "--quiet"])
    for f in (ckpt, bundle):
        os.remove(f)

    print("decoder: dim %d, hidden %d, %d layers, %d heads, vocab %d, context %d (random "
          "weights); encoder: d_model 256, 4x64 heads, 2 layers, FFN 1024, chunks <= 32"
          % (dim, hidden, layers, heads, vocab, seq))
    summary = []
    for threads in [int(t) for t in a.threads.split(",")]:
        keys, rows = parse(run([tool("loom-run"), art, "--bench-ttft",
                                "--context-tokens", str(a.context_tokens),
                                "--question-tokens", str(a.question_tokens),
                                "--chunk-size", a.chunk_sizes,
                                "--expand-fractions", a.expand_fractions,
                                "--threads", str(threads)]))
        if threads == int(a.threads.split(",")[0]):
            print("context %s tokens + question %s tokens; KV %s bytes per position; "
                  "TTFT best of %s; isa %s" % (keys["context_tokens"], keys["question_tokens"],
                                              keys["kv_bytes_per_position"], keys["repeat"],
                                              keys["isa"]))
            print("%-3s %-4s %-5s %9s %9s %9s %9s %8s %8s %9s %7s" % (
                "thr", "k", "p", "positions", "TTFT ms", "speed-up", "pos ratio",
                "KV MB", "full KV", "encode ms", "fusion"))
        p0 = []
        for r in rows:
            full = r["mode"] == "full"
            print("%-3d %-4s %-5s %9s %9.1f %8.2fx %8.2fx %8.2f %8.2f %9s %7s" % (
                threads, "full" if full else r["k"], "" if full else r["p"], r["positions"],
                float(r["ttft_ms"]), float(r["speedup"]), float(r["ratio"]),
                int(r["kv_bytes"]) / 1e6, int(r["full_kv"]) / 1e6,
                "" if full else "%.1f" % float(r["encode_ms"]),
                "" if r["fusion"] == "-" else "%.3fx" % float(r["fusion"])))
            if not full and float(r["p"]) == 0:
                p0.append("k=%s %.1fx" % (r["k"], float(r["speedup"])))
        summary.append("%d thread%s: speed-up at p = 0: %s" % (
            threads, "" if threads == 1 else "s", ", ".join(p0)))
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
