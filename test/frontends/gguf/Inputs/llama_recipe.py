"""Compares a Loom artifact's quantized tensors with a llama.cpp GGUF's,
tensor by tensor: type and bytes.

  llama_recipe.py record LLAMA.gguf INPUT.gguf OUT.json
      every tensor of a GGUF (llama.cpp's quantize output of INPUT.gguf):
      ggml type name and the first 64 bits of the sha256 of its data; and the same of INPUT.gguf's
      tensors, under "input"
  llama_recipe.py check MODEL.loom INPUT.gguf RECORD.json
      first that INPUT.gguf is the recorded input (the test regenerates it
      with make_gguf.py: a change of numpy's random stream would show
      here, not as differing blocks), then each matrix of the artifact
      against the recorded tensors it was made from (Loom's names mapped to
      GGUF's; a packed wqkv split into its q, k and v rows). Prints one line
      per tensor that differs and a summary; exits 1 if any differs.

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


def hashes(path):
    """{name: [type name, sha256 of the data]} of a GGUF's tensors."""
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
        rec[name] = [tname, hashlib.sha256(data).hexdigest()[:16]]
    return rec


def record(path, input_path, out):
    rec = hashes(path)
    rec["input"] = hashes(input_path)
    json.dump(rec, open(out, "w"), indent=1, sort_keys=True)


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
    if hashes(input_path) != rec.pop("input"):
        print("%s is not the model the record was made from (did make_gguf.py or "
              "numpy's random stream change?)" % input_path)
        return 1
    info, blob = read_artifact(artifact)
    differ = checked = 0
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
            want_type, want_sha = rec[n]
            # Rows of this part: the recorded tensor's share of the packed
            # one (q has dim rows, k and v kv_dim: split by the record's
            # order and the artifact's row count).
            rows = rows_of(n, rec, t, names)
            got = data[at:at + rows * row_bytes]
            at += rows * row_bytes
            checked += 1
            if want_type != t["dtype"] or hashlib.sha256(got).hexdigest()[:16] != want_sha:
                print("%s (%s): Loom %s, llama.cpp %s%s" % (
                    t["name"], n, t["dtype"], want_type,
                    "" if want_type != t["dtype"] else ", other bytes"))
                differ += 1
    print("%d tensors compared with llama.cpp's, %d differ" % (checked, differ))
    return 1 if differ else 0


def rows_of(name, rec, t, names):
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
