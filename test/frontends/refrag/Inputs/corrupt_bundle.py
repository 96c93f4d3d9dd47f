"""Makes a broken copy of a REFRAG bundle (.safetensors) for the loomc tests,
or a converted one (bf16 tensors; the same values as f32).

    corrupt_bundle.py SRC OUT CASE

SRC is the bundle (../shared/golden/refrag-tiny/refrag_tiny.safetensors), OUT
the file written: SRC with its __metadata__ or tensor table changed as CASE
says (the CASES table and the `case ==` branches of main). The file is
rewritten whole: 8-byte little-endian header length, the JSON header padded
with spaces to a multiple of 8, then the tensors' bytes back to back, so the
data_offsets stay valid. Standard library only.
"""
import json
import struct
import sys


def read_safetensors(path):
    """Returns ({name: [dtype, shape, bytes]} in file order, metadata)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", None)
    data = blob[8 + n:]
    tensors = {}
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = t["data_offsets"]
        tensors[name] = [t["dtype"], list(t["shape"]), data[b:e]]
    return tensors, meta


def write_safetensors(path, tensors, meta):
    header, chunks, offset = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


# Metadata cases: key -> new string value (None deletes the key).
CASES = {
    "no-format": {"format": None},
    "wrong-format": {"format": "gguf-tiny"},
    "missing-key": {"encoder.n_heads": None},
    "not-integer": {"encoder.d_model": "32.0"},
    "negative": {"encoder.ffn_dim": "-64"},
    "vocab": {"encoder.vocab_size": "32000"},
    "decoder-dim": {"decoder.dim": "48"},
    "heads": {"encoder.n_heads": "3"},
    "chunk-len": {"encoder.max_chunk_len": "17"},
    "cls": {"encoder.cls_token_id": "512"},
    "layers-1": {"encoder.n_layers": "1"},
    "layers-3": {"encoder.n_layers": "3"},
}


def main():
    src, out, case = sys.argv[1:4]
    tensors, meta = read_safetensors(src)
    if case in CASES:
        for key, value in CASES[case].items():
            if value is None:
                del meta[key]
            else:
                meta[key] = value
    elif case == "no-metadata":
        meta = None
    elif case == "missing-tensor":
        del tensors["projector.fc2.bias"]
    elif case == "shape":
        # projector.fc1 transposed: the same bytes as [32, 128], not [128, 32].
        tensors["projector.fc1.weight"][1].reverse()
    elif case == "dtype":
        # policy.bias as F64 (1 float: 8 bytes).
        t = tensors["policy.bias"]
        (v,) = struct.unpack("<f", t[2])
        t[0], t[2] = "F64", struct.pack("<d", v)
    elif case == "extra":
        tensors["encoder.extra"] = ["F32", [2], b"\0" * 8]
    elif case == "copy":
        pass
    elif case in ("bf16", "f32-of-bf16"):
        # Every tensor rounded to bf16 (nearest even; no NaNs here), stored
        # as BF16 or as the F32 of the same values.
        for t in tensors.values():
            bits = struct.unpack("<%dI" % (len(t[2]) // 4), t[2])
            halves = [((x + 0x7FFF + ((x >> 16) & 1)) >> 16) & 0xFFFF for x in bits]
            if case == "bf16":
                t[0], t[2] = "BF16", struct.pack("<%dH" % len(halves), *halves)
            else:
                t[2] = struct.pack("<%dI" % len(halves), *(h << 16 for h in halves))
    else:
        sys.exit("corrupt_bundle.py: unknown case " + case)
    write_safetensors(out, tensors, meta)


if __name__ == "__main__":
    main()
