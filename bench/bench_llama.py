#!/usr/bin/env python3
"""Prefill and decode speed of compiled Llama models at 1 and 2 threads.

For each shape it writes a llama2.c checkpoint with seeded random weights
(bench/make_checkpoint.cpp), compiles it with loomc, and runs
`loom-run --bench --threads N` in a fresh process per thread count (so each
peak RSS is its own). Prints tokens/s, peak memory, the 2-over-1-thread
speed-up (both measured in this same run) and, for decode, the weight bytes
streamed per second: every decode step reads all weights once, so
GB/s = weight bytes x tokens/s, shown as a fraction of the machine's read
bandwidth (bench/membw.cpp, measured in the same run). Models that fit in
the last-level cache can exceed 100%.

Each shape is compiled with f32, bf16, Q8_0 and Q4_0 weights (loomc
--weight-type: the CPU kernels read bf16 matrices and Q8_0 / Q4_0 blocks
as stored and decode them in registers, so decode streams half / about a
quarter / an eighth of the bytes); the ratios over f32 are printed per
thread count. The K formats (q2_k .. q6_k, and llama.cpp's mixes
q4_k_m, q5_k_m) are decoded in registers too.

With --isas (e.g. avx2,portable) every point also runs under each CPU
kernel table (LOOM_ISA), alternating, and the speed of each ISA over the
last one listed is printed per type and thread count.

usage: bench/bench_llama.py [--bin build/bin] [--work /tmp/loom-bench]
                            [--shapes 15M,110M]
                            [--weight-types f32,bf16,q8_0,q4_0[,f16,q2_k..q6_k,q4_k_m,q5_k_m]]
                            [--isas avx512,avx2,portable] [--repeat 3]
"""
import argparse
import os
import struct
import subprocess
import sys

SHAPES = {
    # name: dim, hidden, layers, heads, kv_heads, vocab, seq
    "15M": (288, 768, 6, 6, 6, 32000, 1024),
    "110M": (768, 2048, 12, 12, 12, 32000, 1024),
}


def run(cmd, isa=None):
    env = dict(os.environ, LOOM_ISA=isa) if isa else None
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        sys.exit("bench: %s failed (exit %d): %s" % (" ".join(cmd), p.returncode, p.stderr))
    return p.stdout


def weights_bytes(artifact):
    with open(artifact, "rb") as f:
        header = f.read(64)
    return struct.unpack_from("<Q", header, 56)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin"))
    ap.add_argument("--work", default="/tmp/loom-bench")
    ap.add_argument("--shapes", default="15M,110M")
    ap.add_argument("--weight-types", default="f32,bf16,q8_0,q4_0")
    ap.add_argument("--repeat", type=int, default=3, help="runs per point; the best is kept")
    ap.add_argument("--isas", default="",
                    help="CPU kernel tables to compare (LOOM_ISA values); default: the native one")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    tool = lambda n: os.path.join(a.bin, n)

    # The roofline: this machine's read bandwidth, measured in the same run.
    roof = {}
    for line in run([tool("loom-membw"), "1024", "2"]).splitlines():
        t, gbs = line.split(": ")
        roof[int(t.split()[1])] = float(gbs.split()[0])
    print("read bandwidth (roofline): 1 thread %.1f GB/s, 2 threads %.1f GB/s" % (roof[1], roof[2]))
    isas = a.isas.split(",") if a.isas else [None]
    for isa in isas:
        if isa not in (None, "portable", "avx2", "avx512"):
            sys.exit("bench: --isas takes portable, avx2, avx512, not %r" % isa)
    print("%-5s %-6s %-3s %12s %12s %11s %9s %9s %s" % ("model", "type", "thr", "prefill t/s",
                                                       "decode t/s", "decode GB/s", "roofline",
                                                       "peak MiB", "isa"))
    types = a.weight_types.split(",")
    known = ("f32", "bf16", "f16", "q8_0", "q4_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
             "q4_k_m", "q5_k_m")
    for t in types:
        if t not in known:
            sys.exit("bench: --weight-types takes %s, not %r" % (", ".join(known), t))
    for name in a.shapes.split(","):
        dim, hidden, layers, heads, kv, vocab, seq = SHAPES[name]
        ckpt = os.path.join(a.work, name + ".bin")
        tok = os.path.join(a.work, name + "-tok.bin")
        arts = {t: os.path.join(a.work, "%s-%s.loom" % (name, t)) for t in types}
        if not all(os.path.exists(p) for p in arts.values()):
            run([tool("loom-make-checkpoint"), ckpt, "--dim", str(dim), "--hidden", str(hidden),
                 "--layers", str(layers), "--heads", str(heads), "--kv-heads", str(kv),
                 "--vocab", str(vocab), "--seq", str(seq), "--seed", "1",
                 "--tokenizer-out", tok])
            for t, art in arts.items():
                run([tool("loomc"), ckpt, "--tokenizer", tok, "-o", art, "--quiet",
                     "--weight-type=" + t])
            os.remove(ckpt)
        # The weight types' runs alternate, so that a neighbour's load
        # spreads over both sides of the ratio.
        every, isa_names = {}, {}
        for threads in (1, 2):
            for _ in range(a.repeat):
                for t in types:
                    for isa in isas:
                        out = run([tool("loom-run"), arts[t], "--bench", "--threads",
                                   str(threads)], isa)
                        m = dict(line.split(": ", 1) for line in out.strip().splitlines())
                        isa_names[isa] = m["isa"]
                        r = (float(m["prefill_tokens_per_s"]), float(m["decode_tokens_per_s"]),
                             float(m["peak_rss_mib"]), int(m["prefill_tokens"]))
                        best = every.get((t, threads, isa))
                        every[t, threads, isa] = r if best is None else (
                            max(best[0], r[0]), max(best[1], r[1]), max(best[2], r[2]), r[3])
        # The first ISA's results (the native one by default) for the
        # thread and weight-type ratios.
        results = {(t, threads): every[t, threads, isas[0]] for t in types
                   for threads in (1, 2)}
        for t in types:
            wbytes = weights_bytes(arts[t])
            for isa in isas:
                for threads in (1, 2):
                    pf, dc, rss, n = every[t, threads, isa]
                    gbs = dc * wbytes / 1e9
                    print("%-5s %-6s %-3d %12.1f %12.1f %11.1f %8.0f%% %9.1f %s" % (
                        name, t, threads, pf, dc, gbs, 100 * gbs / roof[threads], rss,
                        isa_names[isa]))
            s_pf = results[t, 2][0] / results[t, 1][0]
            s_dc = results[t, 2][1] / results[t, 1][1]
            print("%-5s %-6s speed-up 2 vs 1 thread: prefill %.2fx, decode %.2fx "
                  "(prompt %d tokens, weights %.1f MB)" % (name, t, s_pf, s_dc,
                                                          results[t, 1][3], wbytes / 1e6))
        for isa in isas[:-1]:
            base = isas[-1]
            for t in types:
                for threads in (1, 2):
                    x, y = every[t, threads, isa], every[t, threads, base]
                    print("%-5s %-6s %s vs %s, %d thread%s: prefill %.2fx, decode %.2fx" % (
                        name, t, isa_names[isa], isa_names[base], threads,
                        "s" if threads > 1 else "", x[0] / y[0], x[1] / y[1]))
        for t in types:
            if t == "f32" or "f32" not in types:
                continue
            for threads in (1, 2):
                f, b = results["f32", threads], results[t, threads]
                print("%-5s %s vs f32, %d thread%s: prefill %.2fx, decode %.2fx, peak memory "
                      "%.2fx" % (name, t, threads, "s" if threads > 1 else "", b[0] / f[0],
                                 b[1] / f[1], b[2] / f[2]))


if __name__ == "__main__":
    main()
