"""Compares a Loom artifact's quantized tensors with a llama.cpp GGUF's,
tensor by tensor: type and bytes.

  llama_recipe.py record LLAMA.gguf INPUT.gguf OUT.json
      the matrices of a GGUF (llama.cpp's quantize output of INPUT.gguf):
      each one's ggml type name ("types"), and one sha256 over all their
      data in name order ("bytes"); the same digest of INPUT.gguf's
      matrices ("input"). One small line of JSON.
  llama_recipe.py check MODEL.loom INPUT.gguf RECORD.json
      first that INPUT.gguf is the recorded input (the test regenerates it
      with make_gguf.py: a change of numpy's random stream would show
      here, not as differing blocks), then the type of each matrix of the
      artifact against the recorded tensors it was made from (Loom's names
      mapped to GGUF's; a packed wqkv split into its q, k and v rows), and
      the digest of their bytes. Prints one line per tensor whose type
      differs, and a summary; exits 1 if anything differs.

Standard library only (the artifact is read with artifact_info.py).
"""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "tools", "loomc", "Inputs"))
from artifact_info import read_artifact  # noqa: E402

# ggml type id -> (name, values per block, bytes per block)
TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
         6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
         10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
         13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2)}
BLOCK = {name: (per, size) for name, per, size in TYPES.values()}
LAYER_ROLES = {"wo": "attn_output", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up",
               "wq": "attn_q", "wk": "attn_k", "wv": "attn_v"}


def matrices(path):
    """{name: (type name, data)} of a GGUF's 2-D tensors."""
    b = open(path, "rb").read()
    at = [24]
    _, _, n_tensors, n_kv = struct.unpack_from("<IIQQ", b, 0)
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def take(fmt):
        v = struct.unpack_from("<" + fmt, b, at[0])[0]
        at[0] += struct.calcsize("<" + fmt)
        return v

    def skip(t):
        if t == 8:
            n = take("Q")  # (not at[0] += take(): take moves at[0])
            at[0] += n
        elif t == 9:
            et, n = take("I"), take("Q")
            for _ in range(n):
                skip(et)
        else:
            at[0] += sizes[t]

    align = 32
    for _ in range(n_kv):
        key = b[at[0] + 8:at[0] + 8 + struct.unpack_from("<Q", b, at[0])[0]]
        at[0] += 8 + len(key)
        t = take("I")
        if key == b"general.alignment":
            align = take("I")
        else:
            skip(t)
    infos = []
    for _ in range(n_tensors):
        n = take("Q")
        name = b[at[0]:at[0] + n].decode()
        at[0] += n
        ne = [take("Q") for _ in range(take("I"))]
        infos.append((name, ne, take("I"), take("Q")))
    start = (at[0] + align - 1) // align * align
    rec = {}
    for name, ne, typ, off in infos:
        tname, per, size = TYPES[typ]
        count = 1
        for d in ne:
            count *= d
        data = b[start + off:start + off + count // per * size]
        if len(ne) == 2:
            rec[name] = (tname, data)
    return rec


def digest(parts):
    """sha256 over the data of {name: data}, in name order."""
    h = hashlib.sha256()
    for name in sorted(parts):
        h.update(parts[name])
    return h.hexdigest()


def record(path, input_path, out):
    m = matrices(path)
    rec = {"types": {n: t for n, (t, _) in m.items()},
           "bytes": digest({n: d for n, (_, d) in m.items()}),
           "input": digest({n: d for n, (_, d) in matrices(input_path).items()})}
    json.dump(rec, open(out, "w"), sort_keys=True, separators=(",", ":"))
    open(out, "a").write("\n")


def gguf_names(loom_name):
    if loom_name == "tok_embeddings":
        return ["token_embd.weight"]
    if loom_name == "output":
        return ["output.weight"]
    parts = loom_name.split(".")
    if len(parts) == 3 and parts[0] == "layers":
        i, role = parts[1], parts[2]
        if role == "wqkv":
            return ["blk.%s.%s.weight" % (i, r) for r in ("attn_q", "attn_k", "attn_v")]
        if role in LAYER_ROLES:
            return ["blk.%s.%s.weight" % (i, LAYER_ROLES[role])]
    return None


def check(artifact, input_path, rec_path):
    rec = json.load(open(rec_path))
    if digest({n: d for n, (_, d) in matrices(input_path).items()}) != rec["input"]:
        print("%s is not the model the record was made from (did make_gguf.py or "
              "numpy's random stream change?)" % input_path)
        return 1
    types = rec["types"]
    info, blob = read_artifact(artifact)
    differ = 0
    parts = {}  # GGUF name -> the artifact's bytes of it
    for t in info["tensors"]:
        names = gguf_names(t["name"])
        if names is None or len(t["shape"]) != 2:
            continue
        data = blob[info["weights_offset"] + t["offset"]:][:t["size"]]
        if t["dtype"] not in BLOCK:
            print("%s: stored %s" % (t["name"], t["dtype"]))
            differ += 1
            continue
        per, size = BLOCK[t["dtype"]]
        row_bytes = t["shape"][1] // per * size
        at = 0
        for n in names:
            # Rows of this part: q has dim rows, k and v share the rest.
            rows = rows_of(n, t, names)
            parts[n] = data[at:at + rows * row_bytes]
            at += rows * row_bytes
            if types.get(n) != t["dtype"]:
                print("%s (%s): Loom %s, llama.cpp %s" % (t["name"], n, t["dtype"],
                                                         types.get(n)))
                differ += 1
    if sorted(parts) != sorted(types):
        print("tensors: Loom %d, llama.cpp %d" % (len(parts), len(types)))
        differ += 1
    elif not differ and digest(parts) != rec["bytes"]:
        print("the types agree but the bytes differ from llama.cpp's")
        differ += 1
    print("%d tensors compared with llama.cpp's, %d differ" % (len(parts), differ))
    return 1 if differ else 0


def rows_of(name, t, names):
    if len(names) == 1:
        return t["shape"][0]
    # wqkv: q is dim rows (the row length), k and v share the rest.
    dim = t["shape"][1]
    return dim if name.endswith("attn_q.weight") else (t["shape"][0] - dim) // 2


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(check(sys.argv[2], sys.argv[3], sys.argv[4]))
