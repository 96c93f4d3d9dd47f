// Records reference token ids of chat prompts (expected-chat-ids.json):
// each case's text (chat_cases.py: jinja2's rendering) tokenized with its
// vocabulary, special tokens picked out of the text and nothing added (the
// template writes BOS), by llama.cpp for a GGUF (parse_special) and by
// Hugging Face tokenizers for a tokenizer.json (add_special_tokens false), as
// each tokenizes a rendered chat prompt. Needs node-llama-cpp 3.22.1 and
// @huggingface/tokenizers 0.2.0 (npm).
//   node record_chat_ids.mjs cases.json OUT.json NAME=FILE.gguf|FILE.json ...
import { Tokenizer } from "@huggingface/tokenizers";
import { getLlama } from "node-llama-cpp";
import { readFileSync, writeFileSync } from "node:fs";

const [casesPath, outPath, ...named] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesPath, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const tokenize = {};
for (const arg of named) {
  const [name, path] = arg.split("=");
  if (path.endsWith(".json")) {
    const hf = new Tokenizer(JSON.parse(readFileSync(path, "utf8")), {});
    tokenize[name] = (text) =>
      Array.from(hf.encode(text, { add_special_tokens: false }).ids).map(Number);
  } else {
    const model = await llama.loadModel({ modelPath: path });
    tokenize[name] = (text) => Array.from(model.tokenize(text, true)).map(Number);
  }
}
const out = cases.map((c) => ({ ...c, ids: tokenize[c.vocab](c.text) }));
writeFileSync(outPath, "[\n" + out.map((c) => JSON.stringify(c)).join(",\n") + "\n]\n");
console.log(`${out.length} chat prompts tokenized`);
process.exit(0);
