"""Copies a bpe_vocab.py folder to OUT with one thing broken, for the
error tests: mutate.py SRC OUT CASE (CASE: see MUTATIONS)."""
import json
import shutil
import sys


def pattern(tj):
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = (
        tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"].replace(
            r"\p{N}{1,3}", r"\p{N}{1,2}"))  # no model's


def alphabet(tj):
    tj["model"]["vocab"]["\u65e5"] = tj["model"]["vocab"].pop("he")


def merge(tj):
    tj["model"]["merges"][5] = ["no", "such"]


def appends_eos(tj):
    t = tj["post_processor"]["processors"][1]
    t["single"].append({"SpecialToken": {"id": "<|end_of_text|>", "type_id": 0}})


def bos_differs(tj):
    t = tj["post_processor"]["processors"][1]
    t["special_tokens"]["<|begin_of_text|>"]["ids"] = [3]


def normalizer(tj):
    tj["normalizer"] = {"type": "NFKC"}


MUTATIONS = {"pattern": pattern, "alphabet": alphabet, "merge": merge,
             "appends-eos": appends_eos, "bos-differs": bos_differs,
             "normalizer": normalizer}


def main():
    src, out, case = sys.argv[1:]
    shutil.copytree(src, out, dirs_exist_ok=True)
    if case == "bos-outside":
        c = json.load(open(out + "/config.json"))
        c["bos_token_id"] = c["vocab_size"]
        json.dump(c, open(out + "/config.json", "w"))
        return
    tj = json.load(open(out + "/tokenizer.json", encoding="utf-8"))
    MUTATIONS[case](tj)
    json.dump(tj, open(out + "/tokenizer.json", "w", encoding="utf-8"),
              ensure_ascii=False)


if __name__ == "__main__":
    main()
