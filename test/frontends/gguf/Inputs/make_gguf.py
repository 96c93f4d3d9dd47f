"""Writes a random Llama model as a GGUF file, its tensors in the ggml types
asked for, for the loomc tests of the quantized formats.

  make_gguf.py --tokenizer tok512.bin OUT [--dim 256 --hidden 512
      --layers 2 --heads 4 --kv-heads 2 --context 256 --seed 1]
      [--types ROLE=TYPE,...] [--untied] [--inject NAME=FILE ...]
  make_gguf.py --tokenizer tokenizer.json OUT ...   (a byte-level BPE)
      [--arch qwen2 [--hf-out DIR]]
  make_gguf.py --tokenizer tok512.bin OUT --spm-specials A,B,...
      [--chat-template FILE]

ROLE is a tensor's name without "blk.N." and ".weight" (attn_q, ffn_down,
token_embd, output, ...), or "default"; TYPE a ggml type name (F32, F16,
BF16, Q4_0, ..., Q6_K). Norm weights are F32 unless named. --inject gives
a tensor (its full name without ".weight", e.g. blk.0.attn_k) the raw
little-endian f32 values of FILE, stored F32. The vocabulary
is the llama2.c tokenizer's (spaces written as SentencePiece's U+2581), or
a byte-level BPE tokenizer.json's (GPT-2, Llama 3 or SmolLM pre-tokenizer,
as test/frontends/byte-level-bpe/Inputs/bpe_vocab.py writes them), written
as convert_hf_to_gguf.py does: model "gpt2", pre "llama-bpe", "gpt-2" or
"smollm",
token types (control for the special tokens), merges, BOS and EOS (the
first two special tokens) and add_bos_token (whether the post-processor
puts BOS first).

--arch phi3 writes a Phi-3 model: phi3.* keys, attn_qkv (q|k|v rows) and
ffn_up (gate|up rows) in place of the separate matrices, q and k in NEOX
order; --sliding-window sets <arch>.attention.sliding_window.
--arch qwen2 writes a Qwen 2 model instead: qwen2.* keys, random q/k/v
biases, its q and k in the rotate-half order of llama.cpp's NEOX rope;
--hf-out also writes the same f32 weights as a Hugging Face Qwen2 folder
(config.json, model.safetensors, the tokenizer.json), whose tensors are the
GGUF's under Hugging Face's names.

--spm-specials appends special tokens (control type) to a llama2.c
vocabulary and writes every token's type as llama.cpp's converter does
(<unk> unknown, <s> and </s> control and spelled so, <0xHH> byte);
general.name is then the architecture's name, so that llama.cpp applies its
Phi-3 rule (special tokens swallow the whitespace after them) to --arch phi3.
--chat-template writes tokenizer.chat_template.

Quantized tensors are random blocks: random bytes, with each block's f16
scale fields set to random weight-like scales (so that the values stay
near +-0.1 whatever the quants are). Other tensors are random normals.
Standard library and numpy.
"""
import argparse
import struct

import numpy as np

import ggml_blocks as gb

TYPE_IDS = {name: t for t, name in gb.NAMES.items()}
# Each block's f16 fields: (byte offset, reach), a field sized AMPLITUDE /
# reach: d by the largest |quant x sub-scale| it multiplies, a min (m,
# dmin) so that it shifts the values by about half the amplitude.
SCALES = {gb.Q4_0: [(0, 8)], gb.Q4_1: [(0, 15), (2, 2)], gb.Q5_0: [(0, 16)],
          gb.Q5_1: [(0, 31), (2, 2)], gb.Q8_0: [(0, 127)],
          gb.Q2_K: [(80, 15 * 3), (82, 2 * 15)], gb.Q3_K: [(108, 32 * 4)],
          gb.Q4_K: [(0, 63 * 15), (2, 2 * 63)], gb.Q5_K: [(0, 63 * 31), (2, 2 * 63)],
          gb.Q6_K: [(208, 128 * 32)]}
AMPLITUDE = 0.1


def read_llama2c_tokenizer(path, vocab):
    data = open(path, "rb").read()
    at = 4
    pieces, scores = [], []
    for _ in range(vocab):
        score, n = struct.unpack_from("<fi", data, at)
        at += 8
        pieces.append(data[at:at + n].replace(b" ", "\u2581".encode()))
        scores.append(score)
        at += n
    return pieces, scores


def read_bpe_tokenizer(path, pre=None, control_ids=()):
    """The metadata of a byte-level tokenizer.json, and its vocabulary size.
    `pre` replaces the pre-tokenizer's name; `control_ids` are written as
    control tokens whatever they are."""
    import json
    tj = json.load(open(path, encoding="utf-8"))
    model = tj["model"]
    tokens = dict((i, t) for t, i in model["vocab"].items())
    types = dict((i, 1) for i in tokens)  # normal
    for t in tj["added_tokens"]:
        tokens[t["id"]] = t["content"]
        types[t["id"]] = 3 if t["special"] else 4  # control, user defined
    for i in control_ids:
        types[i] = 3
    n = len(tokens)
    assert sorted(tokens) == list(range(n)), "ids must be 0..n-1"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    specials = [t["id"] for t in tj["added_tokens"] if t["special"]]
    first = tj["pre_tokenizer"].get("pretokenizers", [tj["pre_tokenizer"]])[0]
    llama3 = first["type"] == "Split" and r"\p{N}{1,3}" in first["pattern"]["Regex"]
    pre_name = (b"llama-bpe" if llama3 else b"qwen2" if first["type"] == "Split"
                else {"Digits": b"smollm", "ByteLevel": b"gpt-2"}[first["type"]])
    post = json.dumps(tj.get("post_processor"))

    def string(s):
        return struct.pack("<Q", len(s)) + s
    meta = [
        ("tokenizer.ggml.model", 8, string(b"gpt2")),
        ("tokenizer.ggml.pre", 8, string(
            pre.encode() if pre else pre_name)),
        ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, n)
         + b"".join(string(tokens[i].encode()) for i in range(n))),
        ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, n)
         + struct.pack("<%di" % n, *[types[i] for i in range(n)])),
        ("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, len(merges))
         + b"".join(string(m.encode()) for m in merges)),
        ("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", specials[0])),
        ("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", specials[1])),
        ("tokenizer.ggml.add_bos_token", 7,
         struct.pack("<?", "TemplateProcessing" in post)),
    ]
    if llama3:  # Llama 3 Instruct's <|eot_id|>, the third special token
        meta.append(("tokenizer.ggml.eot_token_id", 4, struct.pack("<I", specials[2])))
    return meta, n


def llama3_freq_factors(theta, head_dim, factor, low, high, context):
    """Llama 3.1's per-pair frequency divisors, as llama.cpp's
    convert_hf_to_gguf.py computes them (torch float32 ops; here numpy
    float32 arrays, whose Python scalars stay float32)."""
    f32 = np.float32
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=f32) / f32(head_dim)))
    wavelen = f32(2 * np.pi) / freqs
    smooth = (f32(context) / wavelen - f32(low)) / f32(high - low)
    medium = f32(1) / ((f32(1) - smooth) / f32(factor) + smooth)
    out = np.where(wavelen < f32(context / high), f32(1),
                   np.where(wavelen > f32(context / low), f32(factor), medium))
    return out.astype(f32)


def random_tensor(typ, n, rng, norm=False):
    if typ in (gb.F32, gb.F16, gb.BF16):
        x = (1.0 + 0.1 * rng.standard_normal(n)) if norm else 0.05 * rng.standard_normal(n)
        x = x.astype(np.float32)
        if typ == gb.F32:
            return x.astype("<f4").tobytes()
        if typ == gb.F16:
            return x.astype("<f2").tobytes()
        return (x.view(np.uint32) >> 16).astype("<u2").tobytes()
    per, size = gb.BLOCKS[typ]
    nb = n // per
    b = rng.integers(0, 256, (nb, size), dtype=np.uint8)
    for at, reach in SCALES[typ]:
        v = rng.uniform(0.5, 1.0, nb) * (AMPLITUDE / reach) * rng.choice([-1.0, 1.0], nb)
        b[:, at:at + 2] = v.astype("<f2").view(np.uint8).reshape(nb, 2)
    return b.tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--rope-scaling", metavar="FACTOR,LOW,HIGH,CONTEXT",
                    help="Llama 3.1's rope scaling, written as llama.cpp's "
                    "converter does: a rope_freqs tensor")
    ap.add_argument("--yarn", metavar="FACTOR,ORIGINAL_CONTEXT",
                    help="YaRN rope scaling, as llama.cpp's converter writes "
                    "it (rope.scaling.type yarn, .factor, "
                    ".original_context_length); with --hf-out, rope_scaling "
                    "in config.json")
    ap.add_argument("--linear-rope", type=float, metavar="FACTOR",
                    help="linear rope scaling (rope.scaling.type linear)")
    ap.add_argument("--longrope", type=int, metavar="ORIGINAL_CONTEXT",
                    help="LongRoPE as llama.cpp's Phi-3 converter writes it: "
                    "seeded rope_factors_short / _long tensors, "
                    "rope.scaling.original_context_length and .attn_factor")
    ap.add_argument("--bpe-pre", help="tokenizer.ggml.pre to write instead")
    ap.add_argument("--bpe-control", default="",
                    help="ids to write as control tokens (1,2,...)")
    ap.add_argument("--types", default="")
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--inject", action="append", default=[])
    ap.add_argument("--arch", choices=["llama", "qwen2", "phi3"], default="llama")
    ap.add_argument("--sliding-window", type=int, default=0)
    ap.add_argument("--hf-out")
    ap.add_argument("--spm-specials", default="")
    ap.add_argument("--chat-template")
    a = ap.parse_args()
    if a.hf_out and (a.arch != "qwen2" or not a.tokenizer.endswith(".json")
                     or a.types or a.inject):
        raise SystemExit("--hf-out: a qwen2 model of f32 tensors with a "
                         "tokenizer.json only")
    bpe = a.tokenizer.endswith(".json")
    if bpe:
        bpe_meta, a.vocab = read_bpe_tokenizer(
            a.tokenizer, a.bpe_pre,
            [int(i) for i in a.bpe_control.split(",") if i])
    spm_specials = [s for s in a.spm_specials.split(",") if s]
    if spm_specials and bpe:
        raise SystemExit("--spm-specials: a llama2.c vocabulary only")
    base_vocab = a.vocab
    a.vocab += len(spm_specials)
    types = dict(kv.split("=") for kv in a.types.split(",") if kv)
    rng = np.random.default_rng(a.seed)
    D, H, hd = a.dim, a.hidden, a.dim // a.heads
    kv = a.kv_heads * hd

    shapes = [("token_embd", [a.vocab, D])]
    for l in range(a.layers):
        if a.arch == "phi3":  # q|k|v and gate|up packed
            roles = (("attn_norm", [D]), ("attn_qkv", [D + 2 * kv, D]),
                     ("attn_output", [D, D]), ("ffn_norm", [D]),
                     ("ffn_down", [D, H]), ("ffn_up", [2 * H, D]))
        else:
            roles = (("attn_norm", [D]), ("attn_q", [D, D]), ("attn_k", [kv, D]),
                     ("attn_v", [kv, D]), ("attn_output", [D, D]),
                     ("ffn_norm", [D]), ("ffn_gate", [H, D]), ("ffn_down", [D, H]),
                     ("ffn_up", [H, D]))
        for role, shape in roles:
            shapes.append(("blk.%d.%s" % (l, role), shape))
        if a.arch == "qwen2":
            for role, shape in (("attn_q", [D]), ("attn_k", [kv]), ("attn_v", [kv])):
                shapes.append(("blk.%d.%s.bias" % (l, role), shape))
    shapes.append(("output_norm", [D]))
    if a.untied:
        shapes.append(("output", [a.vocab, D]))

    injected = dict(kv.split("=", 1) for kv in a.inject)
    tensors = []  # (name, ne, type, bytes)
    for name, shape in shapes:
        if name.endswith(".bias"):  # large enough to matter
            x = (0.5 * rng.standard_normal(int(np.prod(shape)))).astype("<f4")
            tensors.append((name, list(reversed(shape)), gb.F32, x.tobytes()))
            continue
        if name in injected:
            data = open(injected.pop(name), "rb").read()
            if len(data) != 4 * int(np.prod(shape)):
                raise SystemExit("--inject %s: %d bytes, the tensor needs %d" % (
                    name, len(data), 4 * int(np.prod(shape))))
            tensors.append((name + ".weight", list(reversed(shape)), gb.F32, data))
            continue
        role = name.split(".")[-1]
        norm = role.endswith("norm")
        typ = TYPE_IDS[types.get(role, "F32" if norm else types.get("default", "F32"))]
        n = int(np.prod(shape))
        tensors.append((name + ".weight", list(reversed(shape)), typ,
                        random_tensor(typ, n, rng, norm)))

    if injected:
        raise SystemExit("--inject: no tensor " + ", ".join(injected))
    if a.longrope:
        short = rng.uniform(1.0, 1.5, hd // 2).astype("<f4")
        long_ = rng.uniform(1.0, 12.0, hd // 2).astype("<f4")
        tensors.append(("rope_factors_short.weight", [hd // 2], gb.F32, short.tobytes()))
        tensors.append(("rope_factors_long.weight", [hd // 2], gb.F32, long_.tobytes()))
    if a.rope_scaling:
        factors = llama3_freq_factors(a.rope_theta, hd, *map(float, a.rope_scaling.split(",")))
        tensors.append(("rope_freqs.weight", [hd // 2], gb.F32, factors.astype("<f4").tobytes()))

    def string(s):
        return struct.pack("<Q", len(s)) + s

    if bpe:
        tokenizer_meta = bpe_meta
    else:
        pieces, scores = read_llama2c_tokenizer(a.tokenizer, base_vocab)
        if spm_specials:  # spelled as SentencePiece models spell them
            pieces[1:3] = [b"<s>", b"</s>"]
        pieces += [s.encode() for s in spm_specials]
        scores += [0.0] * len(spm_specials)
        tokenizer_meta = [
            ("tokenizer.ggml.model", 8, string(b"llama")),
            ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(pieces))
             + b"".join(string(p) for p in pieces)),
            ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, len(scores))
             + struct.pack("<%df" % len(scores), *scores)),
            ("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1)),
            ("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 2)),
        ]
        if spm_specials:  # llama.cpp's types: 2 unknown, 3 control, 6 byte
            kinds = [2, 3, 3] + [6] * 256 + [1] * (base_vocab - 259) + \
                [3] * len(spm_specials)
            tokenizer_meta.append(
                ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(kinds))
                 + struct.pack("<%di" % len(kinds), *kinds)))
    if a.chat_template:
        tokenizer_meta.append(("tokenizer.chat_template", 8, string(
            open(a.chat_template, "rb").read())))

    arch = a.arch
    meta = [
        ("general.architecture", 8, string(arch.encode())),
    ] + ([("general.name", 8, string(arch.encode()))] if spm_specials else []) + [
        (arch + ".context_length", 4, struct.pack("<I", a.context)),
        (arch + ".embedding_length", 4, struct.pack("<I", D)),
        (arch + ".feed_forward_length", 4, struct.pack("<I", H)),
        (arch + ".block_count", 4, struct.pack("<I", a.layers)),
        (arch + ".attention.head_count", 4, struct.pack("<I", a.heads)),
        (arch + ".attention.head_count_kv", 4, struct.pack("<I", a.kv_heads)),
        (arch + ".attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
    ] + tokenizer_meta
    if a.rope_theta != 10000.0:
        meta.append((arch + ".rope.freq_base", 6, struct.pack("<f", a.rope_theta)))
    if a.sliding_window:
        meta.append((arch + ".attention.sliding_window", 4,
                     struct.pack("<I", a.sliding_window)))
    if a.yarn:
        factor, original = a.yarn.split(",")
        meta += [(arch + ".rope.scaling.type", 8, string(b"yarn")),
                 (arch + ".rope.scaling.factor", 6, struct.pack("<f", float(factor))),
                 (arch + ".rope.scaling.original_context_length", 4,
                  struct.pack("<I", int(original)))]
    if a.longrope:
        import math
        attn = math.sqrt(1 + math.log(a.context / a.longrope) / math.log(a.longrope))
        meta += [(arch + ".rope.scaling.attn_factor", 6, struct.pack("<f", attn)),
                 (arch + ".rope.scaling.original_context_length", 4,
                  struct.pack("<I", a.longrope))]
    if a.linear_rope:
        meta += [(arch + ".rope.scaling.type", 8, string(b"linear")),
                 (arch + ".rope.scaling.factor", 6, struct.pack("<f", a.linear_rope))]
    out = bytearray(struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(meta)))
    for key, t, v in meta:
        out += string(key.encode()) + struct.pack("<I", t) + v
    offset = 0
    for name, ne, typ, data in tensors:
        out += string(name.encode()) + struct.pack("<I", len(ne))
        out += struct.pack("<%dQ" % len(ne), *ne) + struct.pack("<IQ", typ, offset)
        offset += (len(data) + 31) // 32 * 32
    out += bytes(-len(out) % 32)
    for name, ne, typ, data in tensors:
        out += data + bytes(-len(data) % 32)
    open(a.out, "wb").write(out)
    if a.hf_out:
        write_hf_qwen2(a, tensors)


def write_hf_qwen2(a, tensors):
    """The GGUF's f32 tensors under Hugging Face Qwen2's names."""
    import json
    import os
    import shutil
    names = {"token_embd.weight": "model.embed_tokens.weight",
             "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
    roles = {"attn_norm.weight": "input_layernorm.weight",
             "attn_q.weight": "self_attn.q_proj.weight",
             "attn_k.weight": "self_attn.k_proj.weight",
             "attn_v.weight": "self_attn.v_proj.weight",
             "attn_output.weight": "self_attn.o_proj.weight",
             "attn_q.bias": "self_attn.q_proj.bias",
             "attn_k.bias": "self_attn.k_proj.bias",
             "attn_v.bias": "self_attn.v_proj.bias",
             "ffn_norm.weight": "post_attention_layernorm.weight",
             "ffn_gate.weight": "mlp.gate_proj.weight",
             "ffn_down.weight": "mlp.down_proj.weight",
             "ffn_up.weight": "mlp.up_proj.weight"}
    header, blobs, offset = {}, [], 0
    for name, ne, typ, data in tensors:
        if name.startswith("blk."):
            _, l, role = name.split(".", 2)
            hf = "model.layers.%s.%s" % (l, roles[role])
        else:
            hf = names[name]
        header[hf] = {"dtype": "F32", "shape": list(reversed(ne)),
                      "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(a.hf_out, exist_ok=True)
    with open(os.path.join(a.hf_out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    tj = json.load(open(a.tokenizer, encoding="utf-8"))
    specials = [t["id"] for t in tj["added_tokens"] if t["special"]]
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              "hidden_size": a.dim, "intermediate_size": a.hidden,
              "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
              "num_key_value_heads": a.kv_heads, "vocab_size": a.vocab,
              "max_position_embeddings": a.context, "rms_norm_eps": 1e-5,
              "rope_theta": a.rope_theta, "tie_word_embeddings": not a.untied,
              "hidden_act": "silu", "use_sliding_window": False,
              "bos_token_id": specials[0], "eos_token_id": specials[1]}
    if a.yarn:
        factor, original = a.yarn.split(",")
        config["rope_scaling"] = {"type": "yarn", "factor": float(factor),
                                  "original_max_position_embeddings": int(original)}
    if a.linear_rope:
        config["rope_scaling"] = {"type": "linear", "factor": a.linear_rope}
    with open(os.path.join(a.hf_out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    shutil.copy(a.tokenizer, os.path.join(a.hf_out, "tokenizer.json"))


if __name__ == "__main__":
    main()
