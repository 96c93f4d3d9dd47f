#!/usr/bin/env python3
"""Prints what a .loom artifact records, for FileCheck: the target, the
weights section size and one line per tensor (name, dtype, shape, bytes).

  artifact_info.py MODEL.loom

A minimal reader of the header (runtime/include/loom/artifact_format.h) and of
the flatbuffer tables it needs (runtime/schema/loom_artifact.fbs: Model,
Tensor), so the tests need no flatbuffers package. Also imported by
test/e2e/Inputs/check_bf16.py (read_artifact). Standard library only.
"""
import struct
import sys

DTYPES = {0: "F32", 1: "BF16"}


class Table:
    """A flatbuffer table at `pos` of `buf`: field i by its vtable slot."""

    def __init__(self, buf, pos):
        self.buf, self.pos = buf, pos
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_size = struct.unpack_from("<H", buf, vt)[0]
        self.vt = vt

    def _field(self, i):
        slot = 4 + 2 * i
        if slot >= self.vt_size:
            return 0
        return struct.unpack_from("<H", self.buf, self.vt + slot)[0]

    def scalar(self, i, fmt, default=0):
        off = self._field(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def _target(self, i):
        off = self._field(i)
        if not off:
            return None
        at = self.pos + off
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def string(self, i):
        at = self._target(i)
        if at is None:
            return None
        n = struct.unpack_from("<I", self.buf, at)[0]
        return self.buf[at + 4:at + 4 + n].decode("utf-8", "replace")

    def vector(self, i, fmt):
        at = self._target(i)
        if at is None:
            return []
        n = struct.unpack_from("<I", self.buf, at)[0]
        return list(struct.unpack_from("<%d%s" % (n, fmt), self.buf, at + 4))

    def tables(self, i):
        at = self._target(i)
        if at is None:
            return []
        n = struct.unpack_from("<I", self.buf, at)[0]
        out = []
        for k in range(n):
            e = at + 4 + 4 * k
            out.append(Table(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]))
        return out


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
    print("target: %s" % info["target"])
    print("weights: %d bytes" % info["weights_size"])
    for t in info["tensors"]:
        print("tensor %s %s [%s] %d bytes" % (
            t["name"], t["dtype"], ", ".join(str(d) for d in t["shape"]), t["size"]))


if __name__ == "__main__":
    main()
