"""ggml's own decodings of random blocks, to show that ggml_blocks.py (the
tests' twin of Loom's decoder) decodes as ggml does.

  ggml_vectors.py write LIBGGML_BASE OUT   record ggml's outputs (dev time)
  ggml_vectors.py check VECTORS            ggml_blocks.py against them (CI)

`write` calls dequantize_row_<type> of ggml's shared library
(libggml-base.so; the one used for ggml_vectors.bin is llama.cpp's, as
shipped in npm's @node-llama-cpp/linux-x64 3.22.1) on 16 random blocks of
each quantized type: random bytes, with the f16 scale fields (d, dmin, m)
drawn from every finite half (normal, subnormal, zero, negative) and from
plausible weight scales. The file is, for each type: u32 ggml type, u32
block count, the blocks, then ggml's float32 values. `check` decodes the
same blocks with ggml_blocks.decode and compares bit for bit.
"""
import ctypes
import struct
import sys

import numpy as np

import ggml_blocks as gb

TYPES = [gb.Q4_0, gb.Q4_1, gb.Q5_0, gb.Q5_1, gb.Q8_0, gb.Q2_K, gb.Q3_K, gb.Q4_K,
         gb.Q5_K, gb.Q6_K]
# Byte offsets of the f16 scale fields in each block.
HALVES = {gb.Q4_0: [0], gb.Q4_1: [0, 2], gb.Q5_0: [0], gb.Q5_1: [0, 2], gb.Q8_0: [0],
          gb.Q2_K: [80, 82], gb.Q3_K: [108], gb.Q4_K: [0, 2], gb.Q5_K: [0, 2],
          gb.Q6_K: [208]}
NBLOCKS = 16


def random_blocks(typ, rng):
    per, size = gb.BLOCKS[typ]
    b = rng.integers(0, 256, (NBLOCKS, size), dtype=np.uint8)
    for i in range(NBLOCKS):
        for at in HALVES[typ]:
            if i % 2:  # any finite half
                h = rng.integers(0, 0x7c00) | (rng.integers(0, 2) << 15)
            else:      # a weight-like scale
                h = int(np.float16(rng.uniform(-0.05, 0.05)).view(np.uint16))
            b[i, at:at + 2] = np.frombuffer(struct.pack("<H", h), np.uint8)
    return b


def write(lib, out):
    ggml = ctypes.CDLL(lib)
    rng = np.random.default_rng(20261127)
    with open(out, "wb") as f:
        for typ in TYPES:
            fn = getattr(ggml, "dequantize_row_" + gb.NAMES[typ].lower()[:-1] + gb.NAMES[typ][-1])
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            blocks = random_blocks(typ, rng)
            n = NBLOCKS * gb.BLOCKS[typ][0]
            y = np.zeros(n, np.float32)
            fn(blocks.ctypes.data, y.ctypes.data, n)
            f.write(struct.pack("<II", typ, NBLOCKS) + blocks.tobytes() + y.astype("<f4").tobytes())


def read(path):
    """[(type, raw blocks, ggml's float32 values)]."""
    data, at, out = open(path, "rb").read(), 0, []
    while at < len(data):
        typ, nb = struct.unpack_from("<II", data, at)
        per, size = gb.BLOCKS[typ]
        at += 8
        raw = data[at:at + nb * size]
        at += nb * size
        out.append((typ, raw, np.frombuffer(data, "<f4", nb * per, at)))
        at += 4 * nb * per
    return out


def check(path):
    bad = 0
    for typ, raw, want in read(path):
        got = gb.decode(typ, raw, len(want))
        same = got.view(np.uint32) == want.view(np.uint32)
        same |= np.isnan(got) & np.isnan(want)
        print("%s: %d values, %d differ from ggml" % (gb.NAMES[typ], len(want), (~same).sum()))
        bad += (~same).sum()
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    else:
        sys.exit(check(sys.argv[2]))
