"""ggml's own decodings of random blocks, to show that ggml_blocks.py (the
tests' twin of Loom's decoder) decodes as ggml does; and ggml's own
quantizations of awkward rows, to show that loomc quantizes as ggml does.

  ggml_vectors.py write LIBGGML_BASE OUT   record ggml's decodings (dev time)
  ggml_vectors.py check VECTORS            ggml_blocks.py against them (CI)
  ggml_vectors.py write-quant LIBGGML_BASE OUT
                                           record ggml's quantizations
  ggml_vectors.py check-quant VECTORS --loomc LOOMC --tokenizer TOK --workdir DIR
                                           loomc --weight-type=T against them

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
import os
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


# The quantizers loomc offers (--weight-type), by ggml type.
QUANT_TYPES = [gb.Q8_0, gb.Q4_0, gb.Q2_K, gb.Q3_K, gb.Q4_K, gb.Q5_K, gb.Q6_K]
QROWS, QCOLS = 64, 256


def awkward_rows(rng):
    """64 rows of 256 values that take the quantizers' corner paths: plain
    normals, one outlier, all positive (no min), all negative, a constant,
    zeros with a few values, tiny values (subnormal scales), huge ones,
    mixed magnitudes per sub-block, and exact small integers (ties)."""
    rows = []
    for r in range(QROWS):
        kind = r % 10
        x = rng.standard_normal(QCOLS) * 0.05
        if kind == 1:
            x[rng.integers(QCOLS)] = 3.0
        elif kind == 2:
            x = np.abs(x) + 0.01
        elif kind == 3:
            x = -np.abs(x) - 0.01
        elif kind == 4:
            x[:] = 0.0371
        elif kind == 5:
            x[:] = 0
            x[rng.integers(QCOLS, size=5)] = rng.standard_normal(5)
        elif kind == 6:
            x *= 1e-6
        elif kind == 7:
            x *= 1e3
        elif kind == 8:
            x *= np.repeat(10.0 ** rng.uniform(-3, 1, QCOLS // 16), 16)
        elif kind == 9:
            x = rng.integers(-8, 8, QCOLS) * 0.5
        rows.append(x)
    return np.asarray(rows, np.float32)


def write_quant(lib, out):
    ggml = ctypes.CDLL(lib)
    x = awkward_rows(np.random.default_rng(20261128))
    with open(out, "wb") as f:
        f.write(struct.pack("<II", QROWS, QCOLS) + x.astype("<f4").tobytes())
        for typ in QUANT_TYPES:
            name = gb.NAMES[typ]
            fn = getattr(ggml, "quantize_row_" + name.lower()[:-1] + name[-1] + "_ref")
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            per, size = gb.BLOCKS[typ]
            y = np.zeros(QROWS * QCOLS // per * size, np.uint8)
            fn(x.ctypes.data, y.ctypes.data, QROWS * QCOLS)
            f.write(struct.pack("<I", typ) + y.tobytes())


def check_quant(path, loomc, tokenizer, workdir):
    """Puts the rows into a model's attn_k (64 rows of 256: dim 256, one kv
    head of 64), compiles it with each --weight-type, and compares the k
    rows of the packed wqkv (rows 256..319) with ggml's blocks."""
    import subprocess
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "..", "tools", "loomc", "Inputs"))
    from artifact_info import read_artifact
    data = open(path, "rb").read()
    rows, cols = struct.unpack_from("<II", data, 0)
    at = 8 + 4 * rows * cols
    raw = os.path.join(workdir, "rows.f32")
    open(raw, "wb").write(data[8:at])
    gguf = os.path.join(workdir, "rows.gguf")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, os.path.join(here, "make_gguf.py"), gguf,
                    "--tokenizer", tokenizer, "--kv-heads", "1", "--layers", "1",
                    "--inject", "blk.0.attn_k=" + raw], check=True)
    bad = 0
    while at < len(data):
        typ = struct.unpack_from("<I", data, at)[0]
        per, size = gb.BLOCKS[typ]
        n = rows * cols // per * size
        want = data[at + 4:at + 4 + n]
        at += 4 + n
        art = os.path.join(workdir, "rows-%s.loom" % gb.NAMES[typ])
        subprocess.run([loomc, gguf, "--weight-type=" + gb.NAMES[typ].lower(), "-o", art,
                        "--quiet"], check=True)
        info, blob = read_artifact(art)
        t = next(t for t in info["tensors"] if t["name"] == "layers.0.wqkv")
        row_bytes = cols // per * size
        start = info["weights_offset"] + t["offset"] + 256 * row_bytes
        got = blob[start:start + n]
        differ = sum(got[i:i + size] != want[i:i + size] for i in range(0, n, size))
        print("%s: %d rows, %d of %d blocks differ from ggml's" % (
            gb.NAMES[typ], rows, differ, n // size))
        bad += differ
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "write-quant":
        write_quant(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "check-quant":
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("vectors")
        ap.add_argument("--loomc", required=True)
        ap.add_argument("--tokenizer", required=True)
        ap.add_argument("--workdir", required=True)
        a = ap.parse_args(sys.argv[2:])
        sys.exit(check_quant(a.vectors, a.loomc, a.tokenizer, a.workdir))
    else:
        sys.exit(check(sys.argv[2]))
