// Records the ids that Hugging Face's tokenizers (the pure-JS port,
// @huggingface/tokenizers 0.2.0) and llama.cpp (node-llama-cpp 3.22.1's
// prebuilt library) give texts under a byte-level BPE vocabulary of
// bpe_vocab.py, for check_ids.py. Texts: hand-picked cases and seeded random
// mixes of scripts, digits, punctuation, whitespace and contractions.
// Usage (in a folder where
//   npm install node-llama-cpp@3.22.1 @huggingface/tokenizers@0.2.0
// was run, with this file copied there):
//   node record_refs.mjs TOKENIZER.json MODEL.gguf OUT.json
// Also records llama.cpp's greedy continuations (24 tokens) of three
// prompts under MODEL.gguf (make_gguf.py's random Llama with this
// vocabulary). The tokenizer.json's and the GGUF's sha256 are recorded;
// check_ids.py checks them first.
import { Tokenizer } from "@huggingface/tokenizers";
import { getLlama } from "node-llama-cpp";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";

const [tjPath, ggufPath, outPath] = process.argv.slice(2);
const raw = readFileSync(tjPath);
const tj = JSON.parse(raw.toString("utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: ggufPath });

const cases = [
  "", "a", " ", "  ", "\n", "\r\n", "\t", "Hello world",
  "Once upon a time, there was a little girl named Lily.",
  "I'm sure you're right; we'll see. They've said it's fine, I'd check.",
  "I'M SURE YOU'RE RIGHT; WE'LL SEE. THEY'VE SAID IT'S FINE, I'D CHECK.",
  "don't won't can't 'tis rock'n'roll ''s 's", "x's'S'T'Re'vE'M'lL'D",
  "12345 6789 3.14159 1,000,000 007", "2025-01-31 10:30", "a1b22c333d4444",
  "  leading and trailing  ", "a   b\tc\t\td", "line one\nline two\n\nline four\n",
  "a \n b  \n\n  c\r\n\r\nd", "trailing newlines\n\n\n", "   \n   ", "x\n \n",
  "!!!", "...\n", "?!", " (parenthesised) [bracketed] {braced}", "a+b=c*d/e",
  "\"quoted\" 'single' `back`", "<|begin_of_text|>Hello<|eot_id|>",
  "def main():\n    for i in range(10):\n        print(f\"{i}\")\n",
  "Café, naïve, résumé, über, straße, señor, garçon.",
  "Привет, мир! Καλημέρα κόσμε.", "日本語のテキストです。中文也可以。한국어 문장.",
  "مرحبا بالعالم. नमस्ते दुनिया।", "Emoji: 😀 👋🏽 ❤️, math: ∑ x² ≤ ∞, ½ + ⅓.",
  "Ⅻ ⅷ ①②③ １２３ ٣٤٥ ५६७", "non\u00a0breaking\u3000ideographic\u2002en\u2028sep",
  "ＡＢＣ ａｂｃ", "e\u0301 a\u0308 n\u0303", "🏳️‍🌈👨‍👩‍👧", "\u200bzero\u200dwidth",
];

// Seeded random mixes (mulberry32).
let seed = 20261127;
const rand = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pools = [
  "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
  " ", " ", " ", "\n", "\r", "\t", "'", "'sStTmMdDrReEvVlL", ".,;:!?-_()[]{}\"/\\@#$%^&*+=<>|~`",
  "àéîõüßçñøåæœ", "αβγδεζηθΑΒΓΔ", "абвгдежзАБВГ", "日本語中文字", "가나다라한국",
  "नमस्ते दुनिया", "مرحبا", "😀👋🏽❤️🏳️‍🌈", "\u0301\u0308\u0303", "１２３٣४Ⅻ½²",
  "\u00a0\u3000\u2002\u2028\u2029",
];
for (let n = 0; n < 160; ++n) {
  const len = 1 + Math.floor(rand() * 40);
  let s = "";
  for (let i = 0; i < len; ++i) {
    const pool = Array.from(pools[Math.floor(rand() * pools.length)]);
    s += pool[Math.floor(rand() * pool.length)];
  }
  cases.push(s);
}

// Special tokens' text is encoded as plain text (Loom's rule): llama.cpp
// without parse_special; tokenizers through a copy without added tokens
// (its post-processor's BOS then has no id: the added token's is used).
const hfPlain = new Tokenizer({ ...tj, added_tokens: [] }, {});
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const out = { tokenizer_sha256: sha256(raw), gguf_sha256: sha256(readFileSync(ggufPath)),
              bos: model.tokens.bos, add_bos: model.tokens.shouldPrependBosToken,
              greedy: [], cases: [], disagreements: [] };
for (const text of cases) {
  const lc = Array.from(model.tokenize(text, false)).map(Number);
  if (out.add_bos) lc.unshift(Number(model.tokens.bos));
  const h = Array.from(hfPlain.encode(text).ids).map((x) =>
    x === null || x === undefined ? Number(model.tokens.bos) : Number(x));
  const same = lc.length === h.length && lc.every((x, i) => x === h[i]);
  if (same) out.cases.push({ text, ids: lc });
  else out.disagreements.push({ text, llama_cpp: lc, tokenizers: h });
}
// Greedy decoding (temperature 0: the highest logit) in llama.cpp.
const context = await model.createContext({ contextSize: 256 });
for (const prompt of ["Once upon a time", "The year 2024 had 366 days;",
                      "Привет, мир!\n"]) {
  const seq = context.getSequence();
  const input = Array.from(model.tokenize(prompt, false));
  if (out.add_bos) input.unshift(model.tokens.bos);
  const ids = [];
  for await (const t of seq.evaluate(input, { temperature: 0 })) {
    ids.push(Number(t));
    if (ids.length >= 24) break;
  }
  out.greedy.push({ prompt, ids });
  seq.dispose();
}
writeFileSync(outPath, JSON.stringify(out, null, 0).replace(/\},\{/g, "},\n{") + "\n");
console.log(`${out.cases.length} texts, references agree; ${out.disagreements.length} disagree`);
for (const d of out.disagreements) console.log(JSON.stringify(d));
process.exit(0);
