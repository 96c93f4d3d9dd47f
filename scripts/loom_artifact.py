"""Reading .loom artifacts from Python, standard library only: the 64-byte
file header (runtime/include/loom/artifact_format.h), loomChecksum64, and
flatbuffer tables read by hand (runtime/schema/loom_artifact.fbs), so no
flatbuffers package is needed. Used by the PyTorch baseline
(bench/torch_llama.py) and by test helpers (artifact_info.py, corrupt.py).
"""
import struct

MAGIC = b"LOOMART\0"
# magic, format_version, header_size, file_size, fb_offset, fb_size,
# fb_checksum, weights_offset, weights_size
HEADER = struct.Struct("<8sII6Q")
MASK64 = (1 << 64) - 1


def checksum64(data):
    """loomChecksum64: 8-byte words folded in 4 lanes with a multiply-rotate
    mix, tail bytes one by one, the length mixed in last."""
    k1, k2 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F
    h = [k1, k2, k1 ^ k2, (k2 - k1) & MASK64]
    n = len(data)
    full = n // 32 * 32
    words = struct.unpack_from("<%dQ" % (full // 8), data, 0)
    for i in range(0, len(words), 4):
        for lane in range(4):
            x = h[lane] ^ ((words[i + lane] * k2) & MASK64)
            h[lane] = ((((x << 31) | (x >> 33)) & MASK64) * k1) & MASK64
    r = h[0] ^ ((h[1] * 7) & MASK64) ^ ((h[2] * 13) & MASK64) ^ ((h[3] * 31) & MASK64)
    for b in data[full:]:
        r = ((r ^ b) * 0x100000001B3) & MASK64
    r ^= (n * k1) & MASK64
    r ^= r >> 29
    r = (r * k2) & MASK64
    r ^= r >> 32
    return r


class Table:
    """A flatbuffer table at `pos` of `buf`: field i (schema order) by its
    vtable slot; absent fields read as their default."""

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

    def table(self, i):
        at = self._target(i)
        return None if at is None else Table(self.buf, at)

    def string(self, i):
        at = self._target(i)
        if at is None:
            return None
        n = struct.unpack_from("<I", self.buf, at)[0]
        return bytes(self.buf[at + 4:at + 4 + n]).decode("utf-8", "replace")

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
