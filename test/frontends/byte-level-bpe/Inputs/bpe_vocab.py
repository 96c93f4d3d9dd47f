"""Writes a small byte-level BPE tokenizer (GPT-2 / Llama 3 form) and a random
Llama that uses it, for the loomc / loom-run tests of byte-level vocabularies.

  bpe_vocab.py OUT_DIR --pre llama3|gpt2|smollm|qwen2 [--merges 600] [--seed 1]
               [--specials A,B,...] [--chat-template FILE]
  bpe_vocab.py OUT_DIR --spm tok512.bin --spm-form prepend|first|always
               [--specials A,B,...] [--spm-rstrip] [--chat-template FILE]

OUT_DIR gets a Hugging Face Llama folder (config.json, tokenizer.json,
model.safetensors: dim 64, 2 layers, 4 heads, 2 kv heads, f32 random
weights; for llama3, generation_config.json listing <|eot_id|> as an EOS). The merges are learnt, deterministically, from the corpus below by
the usual BPE training (the most frequent adjacent pair first, ties by the
pair's bytes); the special tokens come after them, Llama 3's way:
<|begin_of_text|> (BOS, put first by the post-processor where --pre llama3),
<|end_of_text|> (EOS), <|eot_id|>, the --specials (chat templates' turn
markers), then reserved ones up to a multiple of 64. --chat-template writes
tokenizer_config.json with that template, bos_token <|begin_of_text|> and
eos_token <|eot_id|> (Llama 3 Instruct's).

--spm writes a SentencePiece-style tokenizer.json instead, from a llama2.c
tokenizer.bin, as transformers converts SentencePiece models: "▁" for
spaces, <unk> <s> </s> as special added tokens (BOS 1, EOS 2), <0xHH> byte
fallback, a merge rule for every split of a piece into two pieces, ranked by
the piece's score; --spm-form picks Llama 2's Prepend normalizer or a
Metaspace pre-tokenizer with prepend_scheme "first" (Mistral v0.3's) or
"always"; the --specials follow as special added tokens (with rstrip where
--spm-rstrip, as Phi-3's). The chat template's bos/eos are then <s>, </s>.
Standard library and numpy.
"""
import argparse
import collections
import json
import os
import re
import struct

import numpy as np

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
                  r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

CORPUS = """Once upon a time, there was a little girl named Lily. She loved to play
outside in the park with her dog, Max. One day, they found a big red ball
under the old tree. "Look, Max!" said Lily. "It's the ball we lost!" They
played until the sun went down, and then they went home for dinner.

The year 2024 had 366 days; 3.14159 is close to pi, and 1,000,000 is a million.
Call 555-0123 before 10:30 a.m. on 2025-01-31. I'm sure you're right; we'll see.
They've said it's fine, but I'd check: don't, won't, can't, shouldn't.

def main():
    for i in range(10):
        print(f"value {i}: {i * i}")   # squares
    return 0

Caf\u00e9, na\u00efve, r\u00e9sum\u00e9, \u00fcber, stra\u00dfe, se\u00f1or, gar\u00e7on.
\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5.
\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002\u4e2d\u6587\u4e5f\u53ef\u4ee5\u3002\ud55c\uad6d\uc5b4 \ubb38\uc7a5.
\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645. \u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e\u0964
Emoji: \U0001F600 \U0001F44B\U0001F3FD \u2764\ufe0f, math: \u2211 x\u00b2 \u2264 \u221e, \u00bd + \u2153.
"""


def bytes_to_unicode():
    """GPT-2's printable spelling of each byte."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD))
            + list(range(0xAE, 0x100)))
    spell, extra = {}, 0
    for b in range(256):
        if b in keep:
            spell[b] = chr(b)
        else:
            spell[b] = chr(256 + extra)
            extra += 1
    return spell


def train(merges_wanted):
    words = collections.Counter(
        re.findall(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+",
                   CORPUS))
    seqs = {w: [bytes([b]) for b in w.encode()] for w in words}
    merges = []
    for _ in range(merges_wanted):
        pairs = collections.Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        for w in words:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def split_pre_tokenizer(pattern, trim_offsets):
    """Llama 3's and Qwen 2's form: Split by the pattern, then ByteLevel."""
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False,
         "trim_offsets": trim_offsets, "use_regex": False}]}


def tokenizer_json(pre, merges, extra_specials=()):
    spell = bytes_to_unicode()
    text = lambda bs: "".join(spell[b] for b in bs)
    vocab = {text(bytes([b])): b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(text(a + b), len(vocab))
    n = len(vocab)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    specials += list(extra_specials)
    total = (n + len(specials) + 63) // 64 * 64
    specials += ["<|reserved_special_token_%d|>" % i
                 for i in range(total - n - len(specials))]
    added = [{"id": n + i, "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, s in enumerate(specials)]
    bos = n
    if pre == "llama3":
        pre_tok = split_pre_tokenizer(LLAMA3_PATTERN, trim_offsets=True)
        post = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": specials[0], "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": specials[0], "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": specials[0], "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {specials[0]: {"id": specials[0], "ids": [bos],
                                              "tokens": [specials[0]]}}}]}
    elif pre == "qwen2":
        pre_tok = split_pre_tokenizer(QWEN2_PATTERN, trim_offsets=False)
        post = {"type": "ByteLevel", "add_prefix_space": False,
                "trim_offsets": False, "use_regex": False}
    else:
        pre_tok = {"type": "ByteLevel", "add_prefix_space": False,
                   "trim_offsets": True, "use_regex": True}
        if pre == "smollm":  # digits one by one first
            pre_tok = {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": True}, pre_tok]}
        post = {"type": "ByteLevel", "add_prefix_space": True,
                "trim_offsets": False, "use_regex": True}
    tj = {"version": "1.0", "truncation": None, "padding": None,
          "added_tokens": added,
          "normalizer": {"type": "NFC"} if pre == "qwen2" else None,
          "pre_tokenizer": pre_tok,
          "post_processor": post,
          "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                      "trim_offsets": True, "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None,
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": False, "byte_fallback": False,
                    "ignore_merges": pre == "llama3", "vocab": vocab,
                    "merges": [[text(a), text(b)] for a, b in merges]}}
    return tj, total, bos


def spm_tokenizer_json(tok_bin, form, extra_specials, rstrip):
    """tokenizer.json of a llama2.c tokenizer.bin's SentencePiece vocabulary
    (see --spm above), and its size."""
    data = open(tok_bin, "rb").read()
    at, pieces, scores = 4, [], []
    while at < len(data):
        score, n = struct.unpack_from("<fi", data, at)
        pieces.append(data[at + 8:at + 8 + n].decode("utf-8"))
        scores.append(score)
        at += 8 + n
    pieces[:3] = ["<unk>", "<s>", "</s>"]
    spelled = [p.replace(" ", "\u2581") for p in pieces]
    vocab = {p: i for i, p in enumerate(spelled)}
    ranked = sorted(range(259, len(spelled)), key=lambda i: (-scores[i], i))
    merges = []
    for i in ranked:
        p = spelled[i]
        merges += [[p[:k], p[k:]] for k in range(1, len(p))
                   if p[:k] in vocab and p[k:] in vocab]
    specials = ["<unk>", "<s>", "</s>"] + list(extra_specials)
    n = len(spelled)
    added = [{"id": i if i < 3 else n + i - 3, "content": s,
              "single_word": False, "lstrip": False,
              "rstrip": rstrip and i >= 3, "normalized": False,
              "special": True} for i, s in enumerate(specials)]
    if form == "prepend":
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        pre = None
    else:
        normalizer = None
        pre = {"type": "Metaspace", "replacement": "\u2581",
               "prepend_scheme": form, "split": False}
    tj = {"version": "1.0", "truncation": None, "padding": None,
          "added_tokens": added, "normalizer": normalizer,
          "pre_tokenizer": pre, "post_processor": None,
          "decoder": {"type": "Sequence", "decoders": [
              {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
              {"type": "ByteFallback"}, {"type": "Fuse"},
              {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
          "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": True, "byte_fallback": True,
                    "ignore_merges": False, "vocab": vocab, "merges": merges}}
    return tj, n + len(extra_specials)


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, x in tensors:
        header[name] = {"dtype": "F32", "shape": list(x.shape),
                        "data_offsets": [offset, offset + x.nbytes]}
        offset += x.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, x in tensors:
            f.write(x.astype("<f4").tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--pre", choices=["llama3", "gpt2", "smollm", "qwen2"])
    ap.add_argument("--spm", help="a llama2.c tokenizer.bin (512 pieces)")
    ap.add_argument("--spm-form", choices=["prepend", "first", "always"],
                    default="prepend")
    ap.add_argument("--spm-rstrip", action="store_true")
    ap.add_argument("--merges", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rope-scaling", metavar="FACTOR,LOW,HIGH,CONTEXT",
                    help="config.json's Llama 3.1 rope_scaling")
    ap.add_argument("--specials", default="",
                    help="more special tokens, comma-separated")
    ap.add_argument("--chat-template", help="tokenizer_config.json's template")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    extra = [s for s in a.specials.split(",") if s]
    if (a.pre is None) == (a.spm is None):
        raise SystemExit("give --pre or --spm")
    if a.spm:
        tj, vocab = spm_tokenizer_json(a.spm, a.spm_form, extra, a.spm_rstrip)
        bos, chat_bos, chat_eos = 1, "<s>", "</s>"
    else:
        tj, vocab, bos = tokenizer_json(a.pre, train(a.merges), extra)
        chat_bos, chat_eos = "<|begin_of_text|>", "<|eot_id|>"
    if a.chat_template:
        with open(a.chat_template, encoding="utf-8") as f:
            template = f.read()
        with open(os.path.join(a.out, "tokenizer_config.json"), "w",
                  encoding="utf-8") as f:
            json.dump({"bos_token": chat_bos, "eos_token": chat_eos,
                       "chat_template": template}, f, ensure_ascii=False,
                      indent=1)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
    D, H, L, heads, kv_heads = 64, 160, 2, 4, 2
    kv = kv_heads * D // heads
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": D, "intermediate_size": H, "num_hidden_layers": L,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "vocab_size": vocab, "max_position_embeddings": 256,
              "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
              "tie_word_embeddings": False, "hidden_act": "silu",
              "bos_token_id": bos, "eos_token_id": bos + 1}
    if a.rope_scaling:
        f, lo, hi, ctx = a.rope_scaling.split(",")
        config["rope_scaling"] = {
            "factor": float(f), "low_freq_factor": float(lo),
            "high_freq_factor": float(hi),
            "original_max_position_embeddings": int(ctx), "rope_type": "llama3"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    if a.pre == "llama3":  # Llama 3 Instruct's: <|end_of_text|>, <|eot_id|>
        with open(os.path.join(a.out, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": bos, "eos_token_id": [bos + 1, bos + 2]}, f)
    rng = np.random.default_rng(a.seed)
    r = lambda *s: (0.05 * rng.standard_normal(s)).astype(np.float32)
    norm = lambda: (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
    tensors = [("model.embed_tokens.weight", r(vocab, D))]
    for l in range(L):
        p = "model.layers.%d." % l
        tensors += [(p + "input_layernorm.weight", norm()),
                    (p + "self_attn.q_proj.weight", r(D, D)),
                    (p + "self_attn.k_proj.weight", r(kv, D)),
                    (p + "self_attn.v_proj.weight", r(kv, D)),
                    (p + "self_attn.o_proj.weight", r(D, D)),
                    (p + "post_attention_layernorm.weight", norm()),
                    (p + "mlp.gate_proj.weight", r(H, D)),
                    (p + "mlp.up_proj.weight", r(H, D)),
                    (p + "mlp.down_proj.weight", r(D, H))]
    tensors += [("model.norm.weight", norm()), ("lm_head.weight", r(vocab, D))]
    write_safetensors(os.path.join(a.out, "model.safetensors"), tensors)


if __name__ == "__main__":
    main()
