// Records llama.cpp's token ids of chat prompts (expected-chat-ids.json):
// each case's text (chat_cases.py: jinja2's rendering) tokenized with its
// vocabulary's GGUF, special tokens picked out of the text (parse_special)
// and nothing added (the template writes BOS), as llama.cpp tokenizes a
// rendered chat prompt. Needs node-llama-cpp 3.22.1 (npm; llama.cpp inside).
//   node record_chat_ids.mjs cases.json OUT.json llama3=A.gguf spm-llama=B.gguf spm-phi3=C.gguf
import { getLlama } from "node-llama-cpp";
import { readFileSync, writeFileSync } from "node:fs";

const [casesPath, outPath, ...named] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesPath, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const models = {};
for (const arg of named) {
  const [name, path] = arg.split("=");
  models[name] = await llama.loadModel({ modelPath: path });
}
const out = cases.map((c) => ({
  ...c, ids: Array.from(models[c.vocab].tokenize(c.text, true)).map(Number) }));
writeFileSync(outPath, "[\n" + out.map((c) => JSON.stringify(c)).join(",\n") + "\n]\n");
console.log(`${out.length} chat prompts tokenized`);
process.exit(0);
