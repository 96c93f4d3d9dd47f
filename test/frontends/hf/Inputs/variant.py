"""Makes a changed copy of a Hugging Face Llama folder for the loomc tests.

    variant.py SRC OUT CASE

SRC is ../shared/models/hf-stories260K. OUT is created (or replaced) with
config.json, model.safetensors and tokenizer.json, changed as CASE says (the
branches of main): "bf16" takes model.bf16.safetensors as the weights,
"sharded" splits the weights into two shards with an index, and every other
case breaks one thing. Standard library only.
"""
import json
import os
import shutil
import struct
import sys

# The safetensors reader and writer of the Huginn tests' corrupt.py.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "huginn", "Inputs"))
from corrupt import tensors_of, write_safetensors  # noqa: E402


def read_safetensors(path):
    return tensors_of(path)[0]



def main():
    src, out, case = sys.argv[1:4]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    config = json.load(open(os.path.join(src, "config.json")))
    tok = json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8"))
    tensors = read_safetensors(os.path.join(src, "model.safetensors"))
    weights = os.path.join(out, "model.safetensors")
    layer0 = "model.layers.0."

    if case == "bf16":
        tensors = read_safetensors(os.path.join(src, "model.bf16.safetensors"))
    elif case == "sharded":
        names = list(tensors)
        shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        for shard, part in shards.items():
            write_safetensors(os.path.join(out, shard), {n: tensors[n] for n in part})
        json.dump({"metadata": {}, "weight_map": {n: s for s, p in shards.items() for n in p}},
                  open(os.path.join(out, "model.safetensors.index.json"), "w"))
        weights = None
    elif case == "untied":
        # An lm_head of its own: the embedding scaled by 2 (exact in f32).
        dtype, shape, raw = tensors["model.embed_tokens.weight"]
        vals = struct.unpack("<%df" % (len(raw) // 4), raw)
        tensors["lm_head.weight"] = [dtype, shape, struct.pack("<%df" % len(vals), *[2 * v for v in vals])]
        config["tie_word_embeddings"] = False
    elif case == "untied-no-head":
        config["tie_word_embeddings"] = False
    elif case == "tied-head-differs":
        dtype, shape, raw = tensors["model.embed_tokens.weight"]
        tensors["lm_head.weight"] = [dtype, shape, raw[:-4] + struct.pack("<f", 1.5)]
    elif case == "inv-freq":
        # Older exports store rope's inverse frequencies per layer.
        tensors[layer0 + "self_attn.rotary_emb.inv_freq"] = ["F32", [4], struct.pack("<4f", 1, .1, .01, .001)]
    elif case == "missing-k":
        del tensors[layer0 + "self_attn.k_proj.weight"]
    elif case == "bad-shape":
        dtype, shape, raw = tensors[layer0 + "mlp.up_proj.weight"]
        tensors[layer0 + "mlp.up_proj.weight"] = [dtype, [shape[1], shape[0]], raw]
    elif case == "f64":
        dtype, shape, raw = tensors["model.norm.weight"]
        vals = struct.unpack("<%df" % (len(raw) // 4), raw)
        tensors["model.norm.weight"] = ["F64", shape, struct.pack("<%dd" % len(vals), *vals)]
    elif case in ("f16", "f32-of-f16"):
        # Every tensor rounded to f16 (nearest even; these values are in
        # range), stored as F16 or as the F32 of the same values.
        for name, (dtype, shape, raw) in list(tensors.items()):
            vals = struct.unpack("<%df" % (len(raw) // 4), raw)
            halves = struct.pack("<%de" % len(vals), *vals)
            if case == "f16":
                tensors[name] = ["F16", shape, halves]
            else:
                back = struct.unpack("<%de" % len(vals), halves)
                tensors[name] = ["F32", shape, struct.pack("<%df" % len(back), *back)]
    elif case == "extra-tensor":
        tensors["model.layers.0.self_attn.q_norm.weight"] = ["F32", [8], bytes(32)]
    elif case == "model-type":
        config["model_type"] = "gemma"
    elif case == "mistral":  # v0.2 on: no sliding window
        config["model_type"] = "mistral"
        config["sliding_window"] = None
    elif case == "mistral-window":  # v0.1's form, a window under the context
        config["model_type"] = "mistral"
        config["sliding_window"] = 64
    elif case in ("phi3", "phi3-longrope"):  # q|k|v and gate|up packed, Phi-3's EOS
        config["model_type"] = "phi3"
        if case == "phi3-longrope":  # Phi-3 128k's form, in proportion
            config["original_max_position_embeddings"] = 256
            config["rope_scaling"] = {"type": "longrope",
                                      "short_factor": [1.0, 1.5, 1.0, 1.25],
                                      "long_factor": [2.0, 3.0, 4.0, 5.0]}
        config["sliding_window"] = 511  # Phi-3 mini 4k's 2047, in proportion
        config["eos_token_id"] = 7
        for name in [n for n in tensors if n.endswith("self_attn.q_proj.weight")]:
            p = name[: -len("q_proj.weight")]
            parts = [tensors.pop(p + x + "_proj.weight") for x in "qkv"]
            tensors[p + "qkv_proj.weight"] = [
                parts[0][0], [sum(t[1][0] for t in parts), parts[0][1][1]],
                b"".join(t[2] for t in parts)]
            m = p.replace("self_attn.", "mlp.")
            parts = [tensors.pop(m + x + "_proj.weight") for x in ("gate", "up")]
            tensors[m + "gate_up_proj.weight"] = [
                parts[0][0], [2 * parts[0][1][0], parts[0][1][1]],
                b"".join(t[2] for t in parts)]
    elif case == "rope-scaling":
        config["rope_scaling"] = {"type": "dynamic", "factor": 2.0}
    elif case == "qwen2-window":  # sliding windows from layer 2 on
        config["model_type"] = "qwen2"
        config["use_sliding_window"] = True
        config["sliding_window"] = 64
        config["max_window_layers"] = 2
        # Qwen 2's q/k/v biases, zero: the model stays stories260K's.
        for name in [n for n in tensors if n.endswith("_proj.weight")
                     and ".self_attn." in n and n.split(".")[-2][0] in "qkv"]:
            rows = tensors[name][1][0]
            tensors[name[: -len("weight")] + "bias"] = ["F32", [rows],
                                                        bytes(4 * rows)]
    elif case == "qwen2-layer-types":  # transformers' newer form of it
        config["model_type"] = "qwen2"
        config["use_sliding_window"] = True
        config["sliding_window"] = 64
        config["layer_types"] = ["full_attention"] * 3 + ["sliding_attention"] * 2
        for name in [n for n in tensors if n.endswith("_proj.weight")
                     and ".self_attn." in n and n.split(".")[-2][0] in "qkv"]:
            rows = tensors[name][1][0]
            tensors[name[: -len("weight")] + "bias"] = ["F32", [rows],
                                                        bytes(4 * rows)]
    elif case == "longrope-short-list":
        config["rope_scaling"] = {"type": "longrope", "short_factor": [1.0, 1.0],
                                  "long_factor": [2.0, 2.0, 2.0, 2.0]}
    elif case == "layer-types-mixed":
        config["model_type"] = "mistral"
        config["sliding_window"] = 64
        config["layer_types"] = ["sliding_attention", "full_attention"] * 2 + ["full_attention"]
    elif case == "zero-window":
        config["model_type"] = "mistral"
        config["sliding_window"] = 0
    elif case == "attention-bias":
        config["attention_bias"] = True
    elif case == "head-dim":
        config["head_dim"] = 16
    elif case == "eos-list":
        config["eos_token_id"] = [2, 7]
    elif case == "eos-list-outside":
        config["eos_token_id"] = [2, 512]
    elif case == "no-layers":
        del config["num_hidden_layers"]
    elif case == "gelu":
        config["hidden_act"] = "gelu"
    elif case == "tok-unigram":
        tok["model"]["type"] = "Unigram"
    elif case == "tok-byte-level":
        tok["normalizer"] = None
        tok["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False,
                                "trim_offsets": True, "use_regex": True}
    elif case == "tok-metaspace":
        # The newer spelling of the same pre-tokenization: same ids.
        tok["normalizer"] = None
        tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                                "prepend_scheme": "first", "split": False}
    elif case == "tok-merges-arrays":
        # The newer [left, right] spelling of the merges: same ids.
        tok["model"]["merges"] = [m.split(" ") for m in tok["model"]["merges"]]
    elif case == "tok-no-byte-fallback":
        tok["model"]["byte_fallback"] = False
    elif case == "tok-bad-merge":
        tok["model"]["merges"][3] = "\u2581q zz"
    elif case == "tok-missing-rule":
        # Drop one of the two rules of "▁the": Loom can still merge it.
        tok["model"]["merges"] = [m for m in tok["model"]["merges"] if m != "\u2581th e"]
    elif case == "tok-swapped-bos":
        v = tok["model"]["vocab"]
        v["<s>"], v["</s>"] = v["</s>"], v["<s>"]
        for t in tok["added_tokens"]:
            t["id"] = v[t["content"]]
    elif case == "tok-gap":
        del tok["model"]["vocab"]["\u2581the"]
    elif case == "no-tokenizer":
        tok = None
    elif case == "tok-huge-id":
        tok["added_tokens"].append({"id": 2000000000, "content": "<big>", "special": True})
    elif case == "bos-0":
        config["bos_token_id"] = 0
    elif case == "empty-index":
        json.dump({"metadata": {}, "weight_map": {}},
                  open(os.path.join(out, "model.safetensors.index.json"), "w"))
        weights = None
    else:
        sys.exit("unknown case " + case)

    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=1)
    if tok is not None:
        json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8"),
                  ensure_ascii=False)
    if weights:
        write_safetensors(weights, tensors)


if __name__ == "__main__":
    main()
