#!/usr/bin/env python3
"""Writes a damaged copy of a Loom artifact for the loom-run error tests.

  corrupt.py IN OUT ACTION

ACTION is one of
  truncate:N             keep the first N bytes (N may be 'middle-of-weights'
                         or 'end-1')
  flip:SECTION[:K]       xor 0xFF into one byte: SECTION is 'header' (byte K,
                         default 40 = fb_checksum), 'weights' (the middle of
                         the weights section) or 'flatbuffer' (the middle of
                         the flatbuffer)
  magic                  replace the 8-byte magic
  version:V              set the header's format_version to V
  identifier:XXXX        replace the flatbuffer's file identifier (the 4 bytes
                         at fb_offset + 4) and re-seal the flatbuffer checksum,
                         so only the identifier check can catch it
  fbflip:K               xor 0xFF into flatbuffer byte K and re-seal the
                         checksum (reaches the verifier and semantic checks)

The header layout and checksum come from scripts/loom_artifact.py.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "..", "scripts"))
from loom_artifact import HEADER, checksum64  # noqa: E402


def header(data):
    (magic, version, header_size, file_size, fb_offset, fb_size, fb_checksum,
     weights_offset, weights_size) = HEADER.unpack_from(data, 0)
    return dict(fb_offset=fb_offset, fb_size=fb_size,
                weights_offset=weights_offset, weights_size=weights_size)


def reseal(data):
    h = header(data)
    fb = bytes(data[h["fb_offset"]:h["fb_offset"] + h["fb_size"]])
    struct.pack_into("<Q", data, 40, checksum64(fb))


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, dst, action = sys.argv[1:]
    data = bytearray(open(src, "rb").read())
    h = header(data)
    # The bundled artifact must still verify before we damage it.
    fb = bytes(data[h["fb_offset"]:h["fb_offset"] + h["fb_size"]])
    assert checksum64(fb) == struct.unpack_from("<Q", data, 40)[0], \
        "checksum64 disagrees with the artifact writer"
    kind, _, arg = action.partition(":")
    if kind == "truncate":
        if arg == "middle-of-weights":
            n = h["weights_offset"] + h["weights_size"] // 2
        elif arg == "end-1":
            n = len(data) - 1
        else:
            n = int(arg)
        data = data[:n]
    elif kind == "flip":
        section, _, k = arg.partition(":")
        if section == "header":
            pos = int(k) if k else 40
        elif section == "weights":
            pos = h["weights_offset"] + h["weights_size"] // 2
        elif section == "flatbuffer":
            pos = h["fb_offset"] + h["fb_size"] // 2
        else:
            sys.exit("unknown section " + section)
        data[pos] ^= 0xFF
    elif kind == "magic":
        data[0:8] = b"NOTLOOM\0"
    elif kind == "version":
        struct.pack_into("<I", data, 8, int(arg))
    elif kind == "identifier":
        assert len(arg) == 4
        pos = h["fb_offset"] + 4
        data[pos:pos + 4] = arg.encode()
        reseal(data)
    elif kind == "fbflip":
        data[h["fb_offset"] + int(arg)] ^= 0xFF
        reseal(data)
    else:
        sys.exit("unknown action " + action)
    open(dst, "wb").write(data)


if __name__ == "__main__":
    main()
