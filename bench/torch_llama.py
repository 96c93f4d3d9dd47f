#!/usr/bin/env python3
"""PyTorch eager baseline on the weights of a Loom artifact.

Reads a llama artifact written by loomc (or loom-synth-weights fill): the
64-byte header (runtime/include/loom/artifact_format.h) and the flatbuffer
(runtime/schema/loom_artifact.fbs, parsed here by hand with struct, so only
torch is needed), maps the tensors by the names loomc gives llama2.c weights,
and runs a plain Llama decoder in eager PyTorch in the artifact's dtype
(bf16 weights -> bf16 compute, f32 -> f32): RMSNorm (in f32, as Meta's
reference), interleaved-pair RoPE as llama2.c (pairs (2i, 2i+1) of each head,
freq = 1/theta^(2i/head_dim), rotation in f32), grouped-query attention over a
preallocated KV cache, SiLU-gated FFN, greedy argmax on the device.

  python3 bench/torch_llama.py ART.loom [--device cuda] [--prompt-tokens 128]
          [--decode-tokens 128] [--repeats 5] [--json]
  python3 bench/torch_llama.py ART.loom --device cpu --dump-logits 1,403,407
          [--logits-out FILE] [--feed-chunk N]

The benchmark prompt is loom-run --bench's: id 3 + i % (vocab - 3) at
position i. Prefill tok/s is one forward over the prompt (logits of its last
row only, as Loom computes), decode tok/s is one token per step with the KV
cache (batch 1, greedy); both are the median over --repeats runs after
--warmup runs, timed with CUDA events on a GPU. The greedy ids of the first 16
decode steps after the prompt are printed for comparison with
`loom-run ART --prompt-ids <the prompt> --steps 16 --temperature 0 --print-ids`.

--dump-logits IDS feeds IDS (comma- or space-separated; in chunks of
--feed-chunk tokens, 0 = all at once) and prints the last position's logits,
one value a line; --logits-out FILE also writes every fed position's logits as
float32 [positions, vocab], the layout of loom-run --dump-logits.
"""
import argparse
import json
import math
import mmap
import os
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from loom_artifact import HEADER, MAGIC, Table, checksum64  # noqa: E402

FORMAT_VERSION = 1
DTYPES = {0: ("f32", 4), 1: ("bf16", 2)}  # loom.artifact.DType
KERNELS = {0: "Embed", 1: "RmsNorm", 2: "MatMul", 3: "Rope", 4: "Attention",
           5: "SiluMul", 6: "Add", 7: "Logits", 8: "FusedQkvAttention"}


class ArtifactError(Exception):
    pass


class Artifact:
    """Header, config, tensors and the forward program's dispatches."""

    def __init__(self, path):
        self.path = path
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ArtifactError("cannot open artifact '%s': %s" % (path, e.strerror))
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                raise ArtifactError("'%s' is not a Loom artifact (shorter than the header)" % path)
            (magic, version, hsize, fsize, self.fb_offset, fb_size, fb_sum,
             self.weights_offset, self.weights_size) = HEADER.unpack(head)
            if magic != MAGIC:
                what = "a skeleton (fill it with loom-synth-weights fill)" \
                    if magic == b"LOOMSKL\0" else "not a Loom artifact (bad magic)"
                raise ArtifactError("'%s' is %s" % (path, what))
            if version != FORMAT_VERSION or hsize != HEADER.size:
                raise ArtifactError("'%s' has format version %d, expected %d"
                                    % (path, version, FORMAT_VERSION))
            if fsize != size:
                raise ArtifactError("'%s' is %d bytes, its header says %d" % (path, size, fsize))
            if self.fb_offset + fb_size > size or \
                    self.weights_offset + self.weights_size > size:
                raise ArtifactError("'%s' has an inconsistent header" % path)
            f.seek(self.fb_offset)
            fb = f.read(fb_size)
        if checksum64(fb) != fb_sum:
            raise ArtifactError("'%s' is corrupt: the flatbuffer checksum does not match" % path)
        if fb[4:8] != b"LOOM":
            raise ArtifactError("'%s' has no LOOM flatbuffer" % path)
        model = Table(fb, struct.unpack_from("<I", fb, 0)[0])
        c = model.table(3)
        self.config = {
            "architecture": c.string(0), "dim": c.scalar(1, "q"),
            "hidden_dim": c.scalar(2, "q"), "n_layers": c.scalar(3, "q"),
            "n_heads": c.scalar(4, "q"), "n_kv_heads": c.scalar(5, "q"),
            "head_dim": c.scalar(6, "q"), "vocab_size": c.scalar(7, "q"),
            "max_seq": c.scalar(8, "q"), "rope_theta": c.scalar(9, "f", 10000.0),
            "norm_eps": c.scalar(10, "f", 1e-5), "bos_id": c.scalar(11, "i", 1),
            "eos_id": c.scalar(12, "i", 2),
        }
        self.tensors = {}
        self.tensor_names = []
        for t in model.tables(5):
            name = t.string(0)
            dtype = t.scalar(1, "B", 0)
            if dtype not in DTYPES:
                raise ArtifactError("tensor '%s' has unknown dtype %d" % (name, dtype))
            shape = t.vector(2, "q")
            offset, nbytes = t.scalar(3, "Q"), t.scalar(4, "Q")
            if nbytes != math.prod(shape) * DTYPES[dtype][1] or \
                    offset + nbytes > self.weights_size:
                raise ArtifactError("tensor '%s' has a bad size or offset" % name)
            self.tensors[name] = (DTYPES[dtype][0], shape, offset, nbytes)
            self.tensor_names.append(name)
        self.forward = None
        for p in model.tables(8):
            if p.string(0) == "forward":
                if p.table(3) is not None:
                    raise ArtifactError("'%s' has a looped block: not a plain llama" % path)
                self.forward = [(d.scalar(0, "H", 0), [self.tensor_names[w] for w in d.vector(4, "I")],
                                 d.vector(6, "f")) for d in p.tables(1)]
        if self.forward is None:
            raise ArtifactError("'%s' has no forward program" % path)


class Llama:
    def __init__(self, art, device, dtype_name, attention):
        import torch
        self.torch = torch
        self.F = torch.nn.functional
        cfg = art.config
        if cfg["architecture"] != "llama":
            raise ArtifactError("architecture '%s' is not llama" % cfg["architecture"])
        kinds = {KERNELS.get(k, str(k)) for k, _, _ in art.forward}
        extra = kinds - set(KERNELS.values())
        if extra:
            raise ArtifactError("forward uses kernels %s that a plain llama has not"
                                % sorted(extra))
        for k, w, fp in art.forward:
            if KERNELS.get(k) == "FusedQkvAttention" and len(w) != 2:
                raise ArtifactError("attention with a qk bias is not supported")
            if KERNELS.get(k) == "Embed" and fp and fp[0] != 1.0:
                raise ArtifactError("a scaled embedding is not supported")
        self.dim, self.hidden = cfg["dim"], cfg["hidden_dim"]
        self.n_layers, self.n_heads = cfg["n_layers"], cfg["n_heads"]
        self.n_kv, self.hd = cfg["n_kv_heads"], cfg["head_dim"]
        self.vocab, self.max_seq = cfg["vocab_size"], cfg["max_seq"]
        self.eps = cfg["norm_eps"]
        self.device = torch.device(device)
        stored = {v[0] for k, v in art.tensors.items() if len(v[1]) >= 2}
        if dtype_name == "auto":
            dtype_name = "bf16" if stored == {"bf16"} else "f32"
        self.dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
        self.dtype_name = dtype_name

        f = open(art.path, "rb")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        f.close()

        def load(name, dtype=None):
            if name not in art.tensors:
                raise ArtifactError("tensor '%s' not found (have: %s ...)"
                                    % (name, ", ".join(art.tensor_names[:6])))
            kind, shape, offset, nbytes = art.tensors[name]
            tdt = torch.bfloat16 if kind == "bf16" else torch.float32
            t = torch.frombuffer(mm, dtype=tdt, count=nbytes // (2 if kind == "bf16" else 4),
                                 offset=art.weights_offset + offset).view(*shape)
            return t.to(device=self.device, dtype=dtype or self.dtype, copy=True)

        f32 = torch.float32
        self.tok = load("tok_embeddings")
        cls = [w[0] for k, w, _ in art.forward if KERNELS.get(k) == "Logits"]
        self.cls_name = cls[0] if cls else "tok_embeddings"
        self.cls = self.tok if self.cls_name == "tok_embeddings" else load(self.cls_name)
        self.layers = []
        for i in range(self.n_layers):
            p = "layers.%d." % i
            if p + "wqkv" in art.tensors:
                wqkv = load(p + "wqkv")
            else:
                wqkv = torch.cat([load(p + "wq"), load(p + "wk"), load(p + "wv")], 0)
            self.layers.append({
                "attention_norm": load(p + "attention_norm", f32), "wqkv": wqkv,
                "wo": load(p + "wo"), "ffn_norm": load(p + "ffn_norm", f32),
                "w1": load(p + "w1"), "w2": load(p + "w2"), "w3": load(p + "w3")})
        self.norm = load("norm", f32)
        del mm
        # RoPE tables as llama2.c computes them in float32: freq =
        # 1/powf(theta, j/hd), angle = pos * freq; cos/sin of that f32 angle.
        j = torch.arange(0, self.hd, 2, dtype=torch.float64)
        freq = (1.0 / torch.pow(float(cfg["rope_theta"]), j / self.hd)).to(f32)
        pos = torch.arange(self.max_seq, dtype=f32)
        angle = (pos[:, None] * freq[None, :]).to(torch.float64)
        self.cos = torch.cos(angle).to(f32).to(self.device)  # [max_seq, hd/2]
        self.sin = torch.sin(angle).to(f32).to(self.device)
        self.k_cache = torch.zeros(self.n_layers, self.n_kv, self.max_seq, self.hd,
                                   dtype=self.dtype, device=self.device)
        self.v_cache = torch.zeros_like(self.k_cache)
        if attention == "auto":
            attention = "sdpa" if hasattr(self.F, "scaled_dot_product_attention") else "math"
        if attention == "sdpa" and not hasattr(self.F, "scaled_dot_product_attention"):
            raise ArtifactError("this torch %s has no scaled_dot_product_attention" % torch.__version__)
        self.attention = attention

    def rmsnorm(self, x, w):
        xf = x.float()
        xf = xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * w).to(self.dtype)

    def rope(self, x, p0):
        # x [T, heads, hd]: rotate pairs (2i, 2i+1) in f32.
        T = x.shape[0]
        c = self.cos[p0:p0 + T, None, :]
        s = self.sin[p0:p0 + T, None, :]
        xf = x.float().reshape(T, x.shape[1], self.hd // 2, 2)
        x0, x1 = xf[..., 0], xf[..., 1]
        return self.torch.stack((x0 * c - x1 * s, x1 * c + x0 * s), -1).flatten(2).to(self.dtype)

    def attend(self, q, k, v, p0):
        # q [H, T, hd]; k, v [KV, L, hd] with L = p0 + T; causal by position.
        torch = self.torch
        H, T, hd = q.shape
        L = k.shape[1]
        rep = H // self.n_kv
        if rep > 1:
            k = k[:, None].expand(self.n_kv, rep, L, hd).reshape(H, L, hd)
            v = v[:, None].expand(self.n_kv, rep, L, hd).reshape(H, L, hd)
        mask = None
        if T > 1:
            qpos = torch.arange(p0, p0 + T, device=q.device)[:, None]
            kpos = torch.arange(L, device=q.device)[None, :]
            mask = kpos > qpos  # True: masked out
        if self.attention == "sdpa":
            if mask is None:
                o = self.F.scaled_dot_product_attention(q[None], k[None], v[None])
            elif p0 == 0:
                o = self.F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)
            else:
                o = self.F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=~mask)
            return o[0]
        scores = torch.matmul(q, k.transpose(1, 2)).float() / math.sqrt(hd)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        return torch.matmul(torch.softmax(scores, -1).to(self.dtype), v)

    def forward(self, ids, p0, all_logits=False):
        """ids: 1-D long tensor on the device; returns f32 logits [T or 1, V]."""
        F = self.F
        T = ids.shape[0]
        if p0 + T > self.max_seq:
            raise ArtifactError("positions %d..%d exceed the context %d" % (p0, p0 + T - 1, self.max_seq))
        H, KV, hd = self.n_heads, self.n_kv, self.hd
        x = F.embedding(ids, self.tok)
        for i, L in enumerate(self.layers):
            h = self.rmsnorm(x, L["attention_norm"])
            qkv = F.linear(h, L["wqkv"])
            q, k, v = qkv.split([H * hd, KV * hd, KV * hd], -1)
            q = self.rope(q.view(T, H, hd), p0)
            k = self.rope(k.view(T, KV, hd), p0)
            self.k_cache[i, :, p0:p0 + T] = k.transpose(0, 1)
            self.v_cache[i, :, p0:p0 + T] = v.view(T, KV, hd).transpose(0, 1)
            o = self.attend(q.transpose(0, 1), self.k_cache[i, :, :p0 + T],
                            self.v_cache[i, :, :p0 + T], p0)
            x = x + F.linear(o.transpose(0, 1).reshape(T, H * hd), L["wo"])
            h = self.rmsnorm(x, L["ffn_norm"])
            x = x + F.linear(F.silu(F.linear(h, L["w1"])) * F.linear(h, L["w3"]), L["w2"])
        if not all_logits:
            x = x[-1:]
        return F.linear(self.rmsnorm(x, self.norm), self.cls).float()


def parse_ids(items):
    out = []
    for item in items:
        for s in item.split(","):
            if s.strip():
                out.append(int(s))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "f32", "bf16"],
                    help="compute dtype (auto: bf16 for a bf16 artifact, else f32)")
    ap.add_argument("--attention", default="auto", choices=["auto", "sdpa", "math"],
                    help="scaled_dot_product_attention (torch >= 2) or matmul + softmax")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--prompt-ids", default=None, help="comma list instead of the bench prompt")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dump-logits", nargs="+", default=None, metavar="IDS")
    ap.add_argument("--logits-out", default=None)
    ap.add_argument("--feed-chunk", type=int, default=0)
    a = ap.parse_args()

    try:
        import torch
    except ImportError:
        sys.exit("torch_llama: this python (%s) has no torch" % sys.executable)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("torch_llama: no CUDA device")
    cuda = device.startswith("cuda")
    # An f32 baseline in f32 (no TF32 matmuls; torch's default, made explicit).
    torch.set_float32_matmul_precision("highest")

    try:
        art = Artifact(a.artifact)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model = Llama(art, device, a.dtype, a.attention)
        load_s = time.perf_counter() - t0
    except ArtifactError as e:
        sys.exit("torch_llama: %s" % e)
    V = model.vocab
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    if a.dump_logits is not None:
        ids = parse_ids(a.dump_logits)
        if not ids or any(i < 0 or i >= V for i in ids):
            sys.exit("torch_llama: --dump-logits needs ids in 0..%d" % (V - 1))
        chunk = a.feed_chunk if a.feed_chunk > 0 else len(ids)
        rows = []
        with torch.inference_mode():
            for p0 in range(0, len(ids), chunk):
                part = torch.tensor(ids[p0:p0 + chunk], dtype=torch.long, device=device)
                rows.append(model.forward(part, p0, all_logits=True).cpu())
        logits = torch.cat(rows, 0)
        if a.logits_out:
            import array
            with open(a.logits_out, "wb") as f:
                f.write(array.array("f", logits.flatten().tolist()).tobytes())
        sys.stdout.write("".join("%.9g\n" % v for v in logits[-1].tolist()))
        return

    P, D = a.prompt_tokens, a.decode_tokens
    if a.prompt_ids:
        prompt = parse_ids([a.prompt_ids])
        P = len(prompt)
    else:
        prompt = [3 + i % (V - 3) if V > 3 else i % V for i in range(P)]
    if P < 1 or D < 1 or P + D > model.max_seq:
        sys.exit("torch_llama: prompt %d + decode %d tokens must be >= 1 each and fit "
                 "the context %d" % (P, D, model.max_seq))
    ids = torch.tensor(prompt, dtype=torch.long, device=device)

    def timed(fn):
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            out = fn()
            e.record()
            e.synchronize()
            return out, s.elapsed_time(e) / 1e3
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t

    def decode(logits):
        out = torch.empty(D, dtype=torch.long, device=device)
        tok = logits[-1].argmax()
        for i in range(D):
            out[i] = tok
            tok = model.forward(tok.view(1), P + i)[-1].argmax()
        return out

    prefill_s, decode_s, greedy = [], [], None
    with torch.inference_mode():
        for r in range(a.warmup + a.repeats):
            sync()
            logits, tp = timed(lambda: model.forward(ids, 0))
            greedy, td = timed(lambda: decode(logits))
            if r >= a.warmup:
                prefill_s.append(tp)
                decode_s.append(td)
        greedy = greedy.tolist()
    tp, td = statistics.median(prefill_s), statistics.median(decode_s)
    res = {
        "artifact": a.artifact, "device": device,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__, "dtype": model.dtype_name, "attention": model.attention,
        "shape": {k: art.config[k] for k in ("dim", "hidden_dim", "n_layers", "n_heads",
                                             "n_kv_heads", "vocab_size", "max_seq")},
        "weights_bytes": art.weights_size, "load_s": round(load_s, 3),
        "prompt": "3 + i %% (vocab - 3), i < %d" % P if not a.prompt_ids else a.prompt_ids,
        "prompt_tokens": P, "decode_tokens": D, "repeats": a.repeats, "warmup": a.warmup,
        "prefill_s": tp, "prefill_tokens_per_s": P / tp,
        "decode_s": td, "decode_tokens_per_s": D / td,
        # Every decode step reads all weights once.
        "decode_weight_gb_per_s": art.weights_size * D / td / 1e9,
        "greedy_ids": greedy[:16],
    }
    if cuda:
        res["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if a.json:
        print(json.dumps(res))
        return
    for k in ("device_name", "torch", "dtype", "attention", "prompt", "prompt_tokens",
              "decode_tokens"):
        print("%s: %s" % (k, res[k]))
    print("prefill_tokens_per_s: %.1f" % res["prefill_tokens_per_s"])
    print("decode_tokens_per_s: %.1f" % res["decode_tokens_per_s"])
    print("prefill_ms: %.3f (median of %d)" % (tp * 1e3, a.repeats))
    print("decode_ms_per_token: %.3f (median of %d)" % (td * 1e3 / D, a.repeats))
    print("decode_weight_gb_per_s: %.1f (weights %.3f GB)" % (res["decode_weight_gb_per_s"],
                                                             art.weights_size / 1e9))
    if cuda:
        print("peak_mem_mib: %.1f" % res["peak_mem_mib"])
    print("greedy_ids: %s" % " ".join(map(str, res["greedy_ids"])))


if __name__ == "__main__":
    try:
        main()
    except ArtifactError as e:
        sys.exit("torch_llama: %s" % e)
