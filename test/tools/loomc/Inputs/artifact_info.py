#!/usr/bin/env python3
"""Prints what a .loom artifact records, for FileCheck: the target, the
weights section size and one line per tensor (name, dtype, shape, bytes).

  artifact_info.py MODEL.loom

Reads the header and the flatbuffer tables it needs (Model, Tensor) with
scripts/loom_artifact.py, so the tests need no flatbuffers package. Also imported by
test/e2e/Inputs/check_bf16.py (read_artifact). Standard library only.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "..", "scripts"))
from loom_artifact import Table  # noqa: E402,F401 (re-exported)

DTYPES = {0: "F32", 1: "BF16"}


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
    info = {
        "format_version": version,
        "generator": model.string(1),
        "target": model.string(2),
        "weights_offset": weights_offset,
        "weights_size": weights_size,
        "tensors": tensors,
    }
    return info, data


def main():
    info, _ = read_artifact(sys.argv[1])
    print("generator: %s" % info["generator"])
    print("target: %s" % info["target"])
    print("weights: %d bytes" % info["weights_size"])
    for t in info["tensors"]:
        print("tensor %s %s [%s] %d bytes" % (
            t["name"], t["dtype"], ", ".join(str(d) for d in t["shape"]), t["size"]))


if __name__ == "__main__":
    main()
