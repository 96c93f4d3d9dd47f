#!/usr/bin/env python3
"""Prints what a .loom artifact records, for FileCheck: the generator, the
target, the weights section size, one line per tensor (name, dtype, shape,
bytes) and a digest of the tokenizer (piece count and sha256 of its
fields), or "tokenizer: none".

  artifact_info.py MODEL.loom
  artifact_info.py --checksums MODEL.loom   (name, dtype, checksum a line)

Reads the header and the flatbuffer tables it needs (Model, Tensor) with
scripts/loom_artifact.py, so the tests need no flatbuffers package. Also imported by
test/e2e/Inputs/check_bf16.py (read_artifact). Standard library only.
"""
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "..", "scripts"))
from loom_artifact import Table  # noqa: E402,F401 (re-exported)

DTYPES = {0: "F32", 1: "BF16", 2: "Q8_0", 3: "Q4_0", 4: "F16", 5: "Q2_K", 6: "Q3_K",
          7: "Q4_K", 8: "Q5_K", 9: "Q6_K"}


def read_artifact(path):
    """{target, generator, weights_offset, weights_size, tensors: [{name,
    dtype, shape, offset, size, checksum}]} and the file's bytes."""
    data = open(path, "rb").read()
    if data[:8] != b"LOOMART\0":
        sys.exit("%s: not a Loom artifact" % path)
    (version, header_size, file_size, fb_offset, fb_size, fb_checksum,
     weights_offset, weights_size) = struct.unpack_from("<IIQQQQQQ", data, 8)
    fb = data[fb_offset:fb_offset + fb_size]
    model = Table(fb, struct.unpack_from("<I", fb, 0)[0])
    tensors = []
    for t in model.tables(5):
        tensors.append({
            "name": t.string(0),
            "dtype": DTYPES.get(t.scalar(1, "B"), "?"),
            "shape": t.vector(2, "q"),
            "offset": t.scalar(3, "Q"),
            "size": t.scalar(4, "Q"),
            "checksum": t.scalar(5, "Q"),
        })
    tok = model.table(4)
    tokenizer = None
    if tok is not None:
        h = hashlib.sha256()
        h.update(struct.pack("<I", tok.scalar(0, "I")))
        for field, fmt in ((1, "f"), (2, "I"), (3, "B")):
            h.update(struct.pack("<%d%s" % (len(tok.vector(field, fmt)), fmt), *tok.vector(field, fmt)))
        tokenizer = (len(tok.vector(1, "f")), h.hexdigest())
    info = {
        "format_version": version,
        "tokenizer": tokenizer,
        "generator": model.string(1),
        "target": model.string(2),
        "weights_offset": weights_offset,
        "weights_size": weights_size,
        "tensors": tensors,
    }
    return info, data


def main():
    if sys.argv[1] == "--checksums":
        # One line per tensor: name, dtype and the checksum of its bytes.
        info, _ = read_artifact(sys.argv[2])
        for t in info["tensors"]:
            print("%s %s %016x" % (t["name"], t["dtype"], t["checksum"]))
        return
    info, _ = read_artifact(sys.argv[1])
    print("generator: %s" % info["generator"])
    print("target: %s" % info["target"])
    print("weights: %d bytes" % info["weights_size"])
    for t in info["tensors"]:
        print("tensor %s %s [%s] %d bytes" % (
            t["name"], t["dtype"], ", ".join(str(d) for d in t["shape"]), t["size"]))
    tok = info["tokenizer"]
    print("tokenizer: %d pieces, sha256 %s" % tok if tok else "tokenizer: none")


if __name__ == "__main__":
    main()
