"""Makes a broken copy of a GGUF file for the loomc tests.

    gguf_variant.py SRC OUT CASE

Parses SRC (metadata with its value types, tensor infos, data) and writes
OUT changed as CASE says (the branches of main), or, for "truncate-N",
SRC's first N bytes. Standard library only.
"""
import struct
import sys

FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class Reader:
    def __init__(self, b):
        self.b, self.at = b, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.at)[0]
        self.at += struct.calcsize("<" + fmt)
        return v

    def string(self):
        n = self.take("Q")
        s = self.b[self.at:self.at + n]
        self.at += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("I"), self.take("Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.take(FMT[t])


def enc_string(s):
    return struct.pack("<Q", len(s)) + s


def enc_value(t, v):
    if t == 8:
        return enc_string(v)
    if t == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(enc_value(et, x) for x in items)
    return struct.pack("<" + FMT[t], v)


def main():
    src, out, case = sys.argv[1:4]
    b = open(src, "rb").read()
    if case.startswith("truncate-"):
        open(out, "wb").write(b[:int(case.split("-")[1])])
        return
    r = Reader(b)
    magic, version, nt, nkv = r.take("I"), r.take("I"), r.take("Q"), r.take("Q")
    meta = []  # [key, type, value]
    for _ in range(nkv):
        k = r.string()
        t = r.take("I")
        meta.append([k, t, r.value(t)])
    infos = []  # [name, ne, type, offset]
    for _ in range(nt):
        name = r.string()
        ne = [r.take("Q") for _ in range(r.take("I"))]
        infos.append([name, ne, r.take("I"), r.take("Q")])
    start = (r.at + 31) // 32 * 32
    data = b[start:]
    key = {m[0]: m for m in meta}
    info = {i[0]: i for i in infos}
    raw_tail = None

    if case == "bad-magic":
        magic = 0x46554746
    elif case == "version-1":
        version = 1
    elif case == "arch":
        key[b"general.architecture"][2] = b"gemma"
    elif case == "tokenizer-gpt2":
        key[b"tokenizer.ggml.model"][2] = b"gpt2"
    elif case == "bos":
        key[b"tokenizer.ggml.bos_token_id"][2] = 5
    elif case == "rope-scaling":
        meta.append([b"llama.rope.scaling.type", 8, b"longrope"])
    elif case == "rope-no-factor":
        meta.append([b"llama.rope.scaling.type", 8, b"yarn"])
    elif case == "rope-factor-only":  # llama.cpp's default type: linear
        meta.append([b"llama.rope.scaling.factor", 6, 2.0])
    elif case == "yarn-attn-factor":
        meta.append([b"llama.rope.scaling.type", 8, b"yarn"])
        meta.append([b"llama.rope.scaling.factor", 6, 4.0])
        meta.append([b"llama.rope.scaling.yarn_attn_factor", 6, 0.5])
    elif case == "partial-rope":
        key[b"llama.rope.dimension_count"][2] = 4
    elif case == "no-heads":
        meta.remove(key[b"llama.attention.head_count"])
    elif case == "heads-string":
        key[b"llama.attention.head_count"][1:] = [8, b"eight"]
    elif case == "duplicate-key":
        meta.append(list(key[b"general.name"]))
    elif case == "scores-short":
        et, items = key[b"tokenizer.ggml.scores"][2]
        key[b"tokenizer.ggml.scores"][2] = (et, items[:-1])
    elif case == "missing-tensor":
        infos.remove(info[b"blk.2.ffn_up.weight"])
    elif case == "wrong-shape":
        info[b"blk.1.attn_k.weight"][1] = [32, 64]
    elif case == "q4k":
        info[b"blk.0.attn_q.weight"][2] = 12
    elif case == "iq4-nl":
        info[b"blk.0.attn_q.weight"][2] = 20
    elif case == "misaligned":
        info[b"blk.0.attn_v.weight"][3] += 4
    elif case == "overlap":
        info[b"blk.0.attn_v.weight"][3] = info[b"blk.0.attn_k.weight"][3]
    elif case == "past-end":
        info[b"output_norm.weight"][3] = len(data) + 64
    elif case == "zero-dim":
        info[b"output_norm.weight"][1] = [0]
    elif case == "five-dims":
        info[b"output_norm.weight"][1] = [64, 1, 1, 1, 1]
    elif case in ("extra-tensor", "rope-freqs-zero"):
        # 4 f32 zeros: an unknown tensor, or rope factors that are not positive.
        name = b"blk.0.attn_q.bias" if case == "extra-tensor" else b"rope_freqs.weight"
        infos.append([name, [4], 0, (len(data) + 31) // 32 * 32])
        raw_tail = bytes(-len(data) % 32) + bytes(16)
    elif case == "huge-array":
        meta.append([b"x.huge", 9, (0, [])])
        huge = True
    else:
        sys.exit("unknown case " + case)

    body = struct.pack("<IIQQ", magic, version, len(infos), len(meta))
    for k, t, v in meta:
        if case == "huge-array" and k == b"x.huge":
            body += enc_string(k) + struct.pack("<IIQ", 9, 0, 1 << 40)
            continue
        body += enc_string(k) + struct.pack("<I", t) + enc_value(t, v)
    for name, ne, t, off in infos:
        body += enc_string(name) + struct.pack("<I", len(ne)) + b"".join(
            struct.pack("<Q", d) for d in ne) + struct.pack("<IQ", t, off)
    body += bytes(-len(body) % 32)
    open(out, "wb").write(body + data + (raw_tail or b""))


if __name__ == "__main__":
    main()
