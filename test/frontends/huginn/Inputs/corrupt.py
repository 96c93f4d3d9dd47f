"""Makes a broken copy of a Huginn checkpoint folder for the loomc tests,
or a converted one (bf16 tensors, shards with an index).

    corrupt.py SRC OUT CASE

SRC holds config.json and, for the weight cases, model.safetensors
(../shared/golden/huginn-tiny). OUT is created (or replaced) holding a
config.json and a model.safetensors broken as CASE says (the `case ==`
branches of main). The config cases write only config.json: loomc reads the
config first. Standard library only.
"""
import json
import os
import shutil
import struct
import sys


def read_safetensors(path):
    """Returns (header dict without __metadata__, metadata, data bytes)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", None)
    return header, meta, blob[8 + n:]


def tensors_of(path):
    """name -> [dtype, shape, bytes], in file order."""
    header, meta, data = read_safetensors(path)
    out = {}
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = t["data_offsets"]
        out[name] = [t["dtype"], list(t["shape"]), data[b:e]]
    return out, meta


def write_safetensors(path, tensors, meta=None):
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


def f32_to_f64(raw):
    vals = struct.unpack("<%df" % (len(raw) // 4), raw)
    return struct.pack("<%dd" % len(vals), *vals)


def to_bf16(raw):
    """f32 bytes -> bf16 bytes, rounded to nearest even (no NaNs here)."""
    bits = struct.unpack("<%dI" % (len(raw) // 4), raw)
    return struct.pack("<%dH" % len(bits),
                       *(((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF for b in bits))


def widen_bf16(raw):
    """bf16 bytes -> the f32 bytes of the same values."""
    halves = struct.unpack("<%dH" % (len(raw) // 2), raw)
    return struct.pack("<%dI" % len(halves), *(h << 16 for h in halves))


def write_shards(out, tensors, meta, remap=None, extra=None):
    """Two shards (tensors alternating in file order) and the index that
    maps each name to its shard; remap overrides entries of the map (a
    shard file name, or "other"), extra adds a tensor to the first shard that
    the map leaves out."""
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    parts, weight_map = [{}, {}], {}
    for i, (name, t) in enumerate(tensors.items()):
        parts[i % 2][name] = t
        weight_map[name] = names[i % 2]
    if extra:
        parts[0].update(extra)
    for shard, part in zip(names, parts):
        write_safetensors(os.path.join(out, shard), part, meta)
    for name, shard in (remap or {}).items():
        # "other": the shard that does not hold it.
        weight_map[name] = (names[1 - names.index(weight_map[name])]
                            if shard == "other" else shard)
    total = sum(len(t[2]) for t in tensors.values())
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)


def main():
    src, out, case = sys.argv[1:4]
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    config = os.path.join(src, "config.json")
    weights = os.path.join(src, "model.safetensors")
    with open(config) as f:
        cfg = json.load(f)

    def save_config(c):
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(c, f, indent=1)

    def save_weights(tensors, meta=None):
        write_safetensors(os.path.join(out, "model.safetensors"), tensors, meta)

    def truncated(n):
        with open(weights, "rb") as f:
            blob = f.read()
        with open(os.path.join(out, "model.safetensors"), "wb") as f:
            f.write(blob[:n])

    # Config cases need no weights: the config is read first.
    if case == "config-not-json":
        with open(os.path.join(out, "config.json"), "w") as f:
            f.write('{"n_embd": 64,\n')
        return
    if case == "config-missing-n_embd":
        del cfg["n_embd"]
        return save_config(cfg)
    if case == "config-bias":
        cfg["bias"] = True
        return save_config(cfg)
    if case == "config-gqa":
        cfg["num_key_value_heads"] = 2
        return save_config(cfg)
    if case == "config-n_layers":
        cfg["n_layers"] = 9
        return save_config(cfg)
    if case == "config-heads":
        cfg["num_attention_heads"] = cfg["num_key_value_heads"] = 7
        return save_config(cfg)
    if case == "config-odd-head":
        cfg["n_embd"] = 60
        cfg["num_attention_heads"] = cfg["num_key_value_heads"] = 4
        return save_config(cfg)
    if case == "config-zero-core":
        cfg["n_layers_in_recurrent_block"] = 0
        return save_config(cfg)
    if case == "config-injection":
        cfg["injection_type"] = "add"
        return save_config(cfg)
    if case == "config-missing":
        return  # an empty folder

    save_config(cfg)
    tensors, meta = tensors_of(weights)
    if case == "truncate-4":
        return truncated(4)
    if case == "truncate-100":
        return truncated(100)
    if case == "truncate-mid":
        return truncated(os.path.getsize(weights) // 2)
    if case == "dtype-f64":
        t = tensors["transformer.ln_f.weight"]
        t[0], t[2] = "F64", f32_to_f64(t[2])
        return save_weights(tensors, meta)
    if case == "shape":
        # The adapter transposed: same bytes, [2d, d] instead of [d, 2d].
        t = tensors["transformer.adapter.weight"]
        t[1] = t[1][::-1]
        return save_weights(tensors, meta)
    if case == "missing":
        del tensors["transformer.coda.1.mlp.proj.weight"]
        return save_weights(tensors, meta)
    if case == "extra":
        tensors["transformer.extra.weight"] = ["F32", [2], b"\0" * 8]
        return save_weights(tensors, meta)
    if case == "untied-head-differs":
        wte = tensors["transformer.wte.weight"]
        tensors["lm_head.weight"] = ["F32", wte[1], b"\0" * len(wte[2])]
        return save_weights(tensors, meta)
    if case == "tied-head-copy":
        wte = tensors["transformer.wte.weight"]
        tensors["lm_head.weight"] = ["F32", wte[1], wte[2]]
        return save_weights(tensors, meta)
    if case == "no-freqs":
        del tensors["freqs_cis"]
        return save_weights(tensors, meta)
    if case == "copy":
        return save_weights(tensors, meta)
    # Converted, valid checkpoints: every tensor bf16 (as published), the
    # same values as f32, and the bf16 tensors in two shards with an index.
    bf16 = {n: ["BF16", t[1], to_bf16(t[2])] for n, t in tensors.items()}
    if case == "bf16":
        return save_weights(bf16, meta)
    if case == "f32-of-bf16":
        return save_weights({n: ["F32", t[1], widen_bf16(t[2])] for n, t in bf16.items()}, meta)
    if case == "sharded-bf16":
        return write_shards(out, bf16, meta)
    # Broken indexes: a tensor mapped to a shard that does not exist, or to
    # the other shard, and a shard holding a tensor the index leaves out.
    if case == "sharded-missing-shard":
        return write_shards(out, bf16, meta,
                            remap={"transformer.ln_f.weight": "model-00003-of-00002.safetensors"})
    if case == "sharded-misplaced":
        return write_shards(out, bf16, meta, remap={"transformer.wte.weight": "other"})
    if case == "sharded-no-map":
        write_shards(out, bf16, meta)
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            f.write('{"metadata": {}}')
        return
    if case == "sharded-unmapped":
        return write_shards(out, bf16, meta,
                            extra={"transformer.stray.weight": ["BF16", [2], b"\0" * 4]})
    sys.exit("corrupt.py: unknown case " + case)


if __name__ == "__main__":
    main()
