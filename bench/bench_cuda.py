#!/usr/bin/env python3
"""Loom's CUDA backend against PyTorch eager on the same weights (one GPU).

For each model shape it fills a skeleton artifact (compiled here by loomc,
weights left out: scripts/gpu-bundle.sh) with seeded random bf16 weights
(loom-synth-weights fill), then measures in the same run

  * Loom:    loom-run ART --device cuda --bench   (prefill of the bench
             prompt, then greedy decode steps, each one CUDA graph replay)
  * PyTorch: bench/torch_llama.py ART --device cuda --json (eager, bf16,
             the same prompt, prompt length and decode steps)

and the GPU's memory bandwidth (a device-to-device copy and a read-only
reduction through PyTorch; the larger is the roofline). A decode step reads
every weight once plus the KV cache of the positions so far, so

  roofline tok/s = bandwidth / (weight bytes + KV bytes per position * mean position)

and the fraction of roofline is Loom's decode tok/s over that. Prints one
table and writes bench_cuda.json.

  python3 bench/bench_cuda.py --bundle build-gpu-bundle [--models 110m,1b]
                               [--profile 1b]

--variant NAME[,VAR=VALUE...] (repeatable) also runs Loom's bench with
those environment variables (e.g. nopdl,LOOM_CUDA_PDL=0) and prints its
numbers beside the default's; a NAME alone runs the default again (the
spread between two runs of one configuration). --no-torch skips the PyTorch baseline.

--profile MODEL also runs that model's bench with --trace (dispatch by
dispatch, no graphs, no fusion; each dispatch's GPU time from CUDA events)
and prints the GPU time per decode token and per prefill by kernel.

--timeline MODEL[,MODEL] also runs those models' bench with the timeline
build of the plugin (LOOM_CUDA_TIMELINE: every kernel block of each decode
graph replay records when it started, passed its programmatic wait and
ended), prints where the decode step's time goes on its dependency chain by
kernel class (each launch's chain time = its last block's end - the previous
launch's, split into the wait for its predecessor and its own body), and
writes timeline-MODEL.json (a Chrome / Perfetto trace of the replays and the
summary) to --out. Fails where a replay's records cannot be attributed.
--timeline-variants NAME[,NAME] does the same for those --variant runs of
the --timeline models (their JSON stays in --workdir).

A variant or a timeline that fails is reported on its own line ("...
FAILED: why") and the run goes on; it exits non-zero at the end, after the
table and bench_cuda.json (whose "failed" lists them).

--breakdown MODEL also runs that model's bench once per kernel class with
LOOM_CUDA_OMIT=CLASS (the class left out; outputs are wrong, the timing is
what counts) and once with every class left out, and prints what each
class costs inside the decode graph (microseconds a token) and in the
prefill: the time it adds to the step as it runs, overlap with its
neighbours included, which --profile's serialised per-kernel times miss.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def sh(cmd, env=None, **kw):
    t0 = time.time()
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=full_env, **kw)
    if p.returncode != 0:
        sys.exit("FAILED (exit %d): %s\n%s\n%s" % (p.returncode, " ".join(cmd),
                                                  p.stdout[-2000:], p.stderr[-4000:]))
    sys.stderr.write("  [%.1f s] %s\n" % (time.time() - t0, " ".join(cmd)))
    return p.stdout


# What failed without stopping the benchmark (a variant, a timeline): the
# main numbers are still printed and written, then the run exits non-zero.
problems = []


def attempt(what, fn, *args, **kw):
    """fn(*args, **kw), or None where it fails (sys.exit, as sh and timeline
    do, or an exception: an unreadable timeline file, a missing key), the
    failure printed and recorded in `problems`, so one failed measurement
    does not lose the others."""
    try:
        return fn(*args, **kw)
    except (SystemExit, Exception) as e:
        print("%s FAILED: %s: %s" % (what, type(e).__name__, e), flush=True)
        problems.append(what)
        return None


def keyvals(text):
    out = {}
    for line in text.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            out[k.strip()] = v.strip()
    return out


def variant_env(spec):
    """NAME,VAR=VALUE[,VAR=VALUE...] -> {VAR: VALUE}; a piece without '='
    continues the previous value (LOOM_CUDA_GEMV=qkv:4,4;out:4,1)."""
    env, last = {}, None
    for piece in spec.split(",")[1:]:
        if "=" in piece:
            last, value = piece.split("=", 1)
            env[last] = value
        elif last:
            env[last] += "," + piece
        else:
            sys.exit("--variant %s: expected NAME,VAR=VALUE,..." % spec)
    return env


def bandwidth():
    import torch
    n = 1 << 29  # 2 GiB of f32
    a = torch.randn(n, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
        a.sum()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(True), torch.cuda.Event(True)
    iters = 20
    start.record()
    for _ in range(iters):
        b.copy_(a)
    end.record()
    end.synchronize()
    copy = 2 * 4 * n * iters / (start.elapsed_time(end) / 1e3)
    start.record()
    for _ in range(iters):
        a.sum()
    end.record()
    end.synchronize()
    read = 4 * n * iters / (start.elapsed_time(end) / 1e3)
    name = torch.cuda.get_device_name()
    del a, b
    torch.cuda.empty_cache()
    return name, copy, read


def ncu_profile(loom_run, art, out_dir):
    """Kernel durations of a 3-token prefill and one decode step (the CUDA
    graph's nodes one by one) with Nsight Compute, where it is installed."""
    import csv
    import shutil
    ncu = shutil.which("ncu")
    if not ncu:
        print("ncu profile: skipped (no ncu on this machine)")
        return
    path = os.path.join(out_dir, "ncu.csv")
    text = sh([ncu, "--graph-profiling", "node", "--clock-control", "none",
               "--cache-control", "none", "--metrics", "gpu__time_duration.sum",
               "--csv", "--print-summary", "per-kernel", loom_run, art, "--device",
               "cuda", "--prompt-ids", "1,2,3", "--steps", "2", "--temperature", "0"])
    open(path, "w").write(text)
    rows = list(csv.DictReader(l for l in text.splitlines() if l.startswith('"')))
    def num(v):
        return float(v.replace(",", ""))
    rows = [(r["Kernel Name"].split("(")[0].replace("void ", ""), r["Grid Size"],
             int(r["Invocations"]), num(r["Average"])) for r in rows
            if r.get("Metric Name") == "gpu__time_duration.sum"]
    total = sum(n * a for _, _, n, a in rows)
    print("ncu profile (3-token prefill + 1 decode step, %.0f us of kernels; %s):"
          % (total / 1e3, path))
    for name, grid, n, avg in sorted(rows, key=lambda r: -r[2] * r[3])[:14]:
        print("  %-34s grid %-14s %4d x %8.1f us = %8.1f us"
              % (name[:34], grid, n, avg / 1e3, n * avg / 1e3))


def profile(loom_run, art, workdir):
    trace = os.path.join(workdir, "trace.json")
    sh([loom_run, art, "--device", "cuda", "--bench", "--trace", trace])
    events = json.load(open(trace))["traceEvents"]
    os.remove(trace)
    for phase, pick in (("decode", lambda r: r == 1), ("prefill", lambda r: r > 1)):
        evs = [e for e in events if pick(e["args"]["rows"])]
        steps = sum(1 for e in evs if e["args"]["kernel"] == "Embed")
        if not steps:
            continue
        by = {}
        for e in evs:
            k = e["args"]["kernel"]
            c, d = by.get(k, (0, 0.0))
            by[k] = (c + 1, d + e["dur"])
        total = sum(d for _, d in by.values())
        print("profile (%s, %d steps, unfused, no graphs): %.1f us of GPU time a step"
              % (phase, steps, total / steps))
        for k, (c, d) in sorted(by.items(), key=lambda kv: -kv[1][1]):
            print("  %-18s %5d calls a step  %9.1f us a step  %5.1f%%"
                  % (k, c // steps, d / steps, 100 * d / total))


def timeline(loom_run, art, name, plain_tok_s, out_dir, env=None):
    """The decode graph's dependency chain by kernel class, from the
    timeline build's block records (env: a variant's variables)."""
    path = os.path.join(out_dir, "timeline-%s.json" % name.replace("/", "-"))
    p = subprocess.run([loom_run, art, "--device", "cuda", "--bench"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, **(env or {}), LOOM_CUDA_TIMELINE=path))
    if p.returncode != 0:
        sys.exit("FAILED (exit %d): LOOM_CUDA_TIMELINE=%s %s %s --device cuda --bench\n%s"
                 % (p.returncode, path, loom_run, art, p.stderr[-4000:]))
    out = keyvals(p.stdout)
    t = json.load(open(path))["loomTimeline"]
    # The replays' GPU span beside the plain build's whole decode step,
    # which also holds the host's share: the probes cost at least the
    # difference where it is positive. (The timeline run's own tok/s is no
    # measure: it reads the records back after every replay.)
    plain_us = 1e6 / plain_tok_s
    print("timeline (%s: %d graph replays, %.1f us a replay from the first block's start"
          " to the last block's end; the plain build's decode step %.1f us):"
          % (name, t["replays"], t["step_us"], plain_us))
    print("  %-16s %7s %9s %9s %9s %9s %9s" % ("us a replay", "kernels", "chain", "wait",
                                               "body", "lead", "tail"))
    for c in t["classes"] + [t["total"]]:
        print("  %-16s %7.1f %9.1f %9.1f %9.1f %9.1f %9.1f" % (
            c["label"][:16], c["per_step"], c["chain_us"], c["wait_us"], c["body_us"],
            c["lead_us"], c["tail_us"]))
    # The first launches of the most replayed graph (the embedding, the
    # first layer and the next one's start), one by one.
    print("  its first launches:")
    for c in t["launches"][:12]:
        print("  %-30s %9.1f %9.1f %9.1f %9.1f %9.1f" % (
            c["label"][:30], c["chain_us"], c["wait_us"], c["body_us"], c["lead_us"],
            c["tail_us"]))
    if t["skipped"] or not t["replays"]:
        sys.exit("timeline (%s): %d replays, %d not attributed (%s)"
                 % (name, t["replays"], t["skipped"],
                    [l for l in p.stderr.splitlines() if "not attributed" in l]))
    return t


OMIT_CLASSES = ["norm", "qkv", "attention", "out", "gate_up", "matmul", "logits"]


def breakdown(loom_run, art, base):
    """What each kernel class adds to a decode step and to the prefill."""
    dec0 = 1e6 / float(base["decode_tokens_per_s"])
    pre0 = 1e3 * float(base["prefill_tokens"]) / float(base["prefill_tokens_per_s"])
    print("breakdown (LOOM_CUDA_OMIT; decode step %.1f us, prefill %.2f ms):" % (dec0, pre0))
    rows = {}
    for c in OMIT_CLASSES + [",".join(OMIT_CLASSES)]:
        name = c if "," not in c else "everything"
        p = subprocess.run([loom_run, art, "--device", "cuda", "--bench"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, LOOM_CUDA_OMIT=c))
        if p.returncode != 0:
            # Left-out kernels leave stale buffers; a run they derail is
            # reported, not fatal to the benchmark.
            print("  %-10s failed (exit %d): %s" % (name, p.returncode,
                                                    p.stderr.strip().splitlines()[-1:]))
            continue
        out = keyvals(p.stdout)
        dec = 1e6 / float(out["decode_tokens_per_s"])
        pre = 1e3 * float(out["prefill_tokens"]) / float(out["prefill_tokens_per_s"])
        rows[name] = {"decode_us": dec0 - dec, "prefill_ms": pre0 - pre}
        if name == "everything":
            print("  %-10s left out: decode %7.1f us a token remain, prefill %6.2f ms remain"
                  % (name, dec, pre))
        else:
            print("  %-10s decode %7.1f us a token (%4.1f%%)   prefill %6.2f ms (%4.1f%%)"
                  % (name, dec0 - dec, 100 * (dec0 - dec) / dec0, pre0 - pre,
                     100 * (pre0 - pre) / pre0))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--models", default="110m,1b")
    ap.add_argument("--workdir", default="/tmp/loom-bench-cuda")
    ap.add_argument("--out", default=".")
    ap.add_argument("--profile", default="")
    ap.add_argument("--breakdown", default="")
    ap.add_argument("--timeline", default="")
    ap.add_argument("--timeline-variants", default="")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    b = os.path.abspath(a.bundle)
    os.makedirs(a.workdir, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    gpu, copy_bw, read_bw = bandwidth()
    bw = max(copy_bw, read_bw)
    print("gpu: %s" % gpu)
    print("bandwidth: copy %.0f GB/s (read + write), read %.0f GB/s -> roofline %.0f GB/s"
          % (copy_bw / 1e9, read_bw / 1e9, bw / 1e9))
    results = {"gpu": gpu, "copy_gb_s": copy_bw / 1e9, "read_gb_s": read_bw / 1e9,
               "models": {}}
    rows = []
    for m in a.models.split(","):
        skel = os.path.join(b, "skel", "%s-bf16.skel" % m)
        art = os.path.join(a.workdir, "%s-bf16.loom" % m)
        sh([os.path.join(b, "bin", "loom-synth-weights"), "fill", skel, art, "--seed", "1"])
        loom = keyvals(sh([os.path.join(b, "bin", "loom-run"), art, "--device", "cuda",
                           "--bench"]))
        P = int(loom["prefill_tokens"])
        D = int(loom["decode_tokens"])
        t = {"prefill_tokens_per_s": float("nan"), "decode_tokens_per_s": float("nan")}
        if not a.no_torch:
            torch_out = sh([sys.executable, os.path.join(here, "torch_llama.py"), art,
                            "--device", "cuda", "--prompt-tokens", str(P),
                            "--decode-tokens", str(D), "--json"])
            t = json.loads([l for l in torch_out.splitlines() if l.startswith("{")][-1])
        # Progress lines, flushed: a run cut off by its timeout still shows
        # what it measured (the table below comes at the end).
        print("progress: %s default decode %.1f tok/s, prefill %.0f tok/s; torch decode "
              "%.1f tok/s" % (m, float(loom["decode_tokens_per_s"]),
                              float(loom["prefill_tokens_per_s"]),
                              t["decode_tokens_per_s"]), flush=True)
        r_variants = {}
        for v in a.variant:
            env = variant_env(v)
            name = v.split(",")[0]
            out = attempt("%s variant %s" % (m, name), sh,
                          [os.path.join(b, "bin", "loom-run"), art, "--device", "cuda",
                           "--bench"], env=env)
            if out is None:
                continue
            out = keyvals(out)
            r_variants[name] = {"prefill_tok_s": float(out["prefill_tokens_per_s"]),
                                "decode_tok_s": float(out["decode_tokens_per_s"])}
            print("progress: %s variant %s decode %.1f tok/s (%.2fx the default)"
                  % (m, name, r_variants[name]["decode_tok_s"],
                     r_variants[name]["decode_tok_s"] / float(loom["decode_tokens_per_s"])),
                  flush=True)
        if m == a.profile:
            profile(os.path.join(b, "bin", "loom-run"), art, a.workdir)
            ncu_profile(os.path.join(b, "bin", "loom-run"), art, a.out)
        r_timeline = None
        if m in a.timeline.split(","):
            r_timeline = attempt("%s timeline" % m, timeline,
                                 os.path.join(b, "bin", "loom-run"), art, m,
                                 float(loom["decode_tokens_per_s"]), a.out)
            # The named variants' timelines (their JSON stays in the
            # workdir: a device call brings few files back).
            for v in a.variant:
                name = v.split(",")[0]
                if name in a.timeline_variants.split(",") and name in r_variants:
                    attempt("%s/%s timeline" % (m, name), timeline,
                            os.path.join(b, "bin", "loom-run"), art, "%s/%s" % (m, name),
                            r_variants[name]["decode_tok_s"], a.workdir, variant_env(v))
        r_breakdown = None
        if m == a.breakdown:
            r_breakdown = breakdown(os.path.join(b, "bin", "loom-run"), art, loom)
        os.remove(art)
        weight = int(loom["weight_bytes"])
        kv = int(loom["kv_bytes_per_token"])
        per_token = weight + kv * (P + D / 2.0)
        roof = bw / per_token
        r = {
            "prefill_tokens": P, "decode_tokens": D,
            "loom_prefill_tok_s": float(loom["prefill_tokens_per_s"]),
            "loom_decode_tok_s": float(loom["decode_tokens_per_s"]),
            "torch_prefill_tok_s": float(t["prefill_tokens_per_s"]),
            "torch_decode_tok_s": float(t["decode_tokens_per_s"]),
            "weight_bytes": weight, "bytes_per_decode_token": per_token,
            "roofline_decode_tok_s": roof,
        }
        r["decode_vs_torch"] = r["loom_decode_tok_s"] / r["torch_decode_tok_s"]
        r["prefill_vs_torch"] = r["loom_prefill_tok_s"] / r["torch_prefill_tok_s"]
        r["decode_roofline_fraction"] = r["loom_decode_tok_s"] / roof
        r["variants"] = r_variants
        if r_breakdown is not None:
            r["breakdown"] = r_breakdown
        if r_timeline is not None:
            r["timeline"] = {k: r_timeline[k] for k in ("replays", "step_us", "total",
                                                        "classes")}
        results["models"][m] = r
        rows.append((m, r))
    print()
    print("%-6s %9s %11s %11s %7s %11s %11s %7s %9s" % (
        "model", "weights", "loom pre", "torch pre", "ratio", "loom dec",
        "torch dec", "ratio", "roofline"))
    for m, r in rows:
        print("%-6s %7.2fGB %9.0f/s %9.0f/s %6.2fx %9.1f/s %9.1f/s %6.2fx %8.1f%%" % (
            m, r["weight_bytes"] / 1e9, r["loom_prefill_tok_s"], r["torch_prefill_tok_s"],
            r["prefill_vs_torch"], r["loom_decode_tok_s"], r["torch_decode_tok_s"],
            r["decode_vs_torch"], 100 * r["decode_roofline_fraction"]))
    for m, r in rows:
        for name, v in r["variants"].items():
            print("%-6s variant %-12s prefill %9.0f/s (%.2fx default)  decode %8.1f/s (%.2fx default)"
                  % (m, name, v["prefill_tok_s"], v["prefill_tok_s"] / r["loom_prefill_tok_s"],
                     v["decode_tok_s"], v["decode_tok_s"] / r["loom_decode_tok_s"]))
    results["failed"] = problems
    with open(os.path.join(a.out, "bench_cuda.json"), "w") as f:
        json.dump(results, f, indent=1)
    if problems:
        sys.exit("bench_cuda: failed: %s" % ", ".join(problems))


if __name__ == "__main__":
    main()
