// Records the ids that llama.cpp (node-llama-cpp 3.22.1's prebuilt library)
// gives texts under a byte-level BPE vocabulary of bpe_vocab.py, for
// check_ids.py, and, where they differ, those of Hugging Face's tokenizers
// (the pure-JS port, @huggingface/tokenizers 0.2.0; its Digits
// pre-tokenizer knows the ASCII digits only, where the Rust tokenizers and
// llama.cpp split every \p{N} character: SmolLM's texts with other digits). Texts: hand-picked cases and seeded random
// mixes of scripts, digits, punctuation, whitespace and contractions.
// Usage (in a folder where
//   npm install node-llama-cpp@3.22.1 @huggingface/tokenizers@0.2.0
// was run, with this file copied there):
//   node record_refs.mjs TOKENIZER.json OUT.json MODEL.gguf [MODEL.gguf ...]
// (TOKENIZER a llama2.c tokenizer.bin instead: the models' ids and logits
// only, for GGUFs of other architectures with that vocabulary.)
// Also records, under each MODEL.gguf (make_gguf.py's random Llamas with
// this vocabulary), by the GGUF's sha256: llama.cpp's greedy continuations
// (24 tokens) of three prompts, and the 16 highest logits at every position
// of a 27-token prompt. The tokenizer.json's sha256 is
// recorded too; check_ids.py checks both.
import { Tokenizer } from "@huggingface/tokenizers";
import { getLlama } from "node-llama-cpp";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";

const [tjPath, outPath, ...ggufPaths] = process.argv.slice(2);
const raw = readFileSync(tjPath);
// A vocabulary that is not a tokenizer.json (a llama2.c tokenizer.bin):
// no texts, only the models' greedy ids and logits.
const tj = tjPath.endsWith(".json") ? JSON.parse(raw.toString("utf8")) : null;
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: ggufPaths[0] });

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
// With loom-run --special ("special_cases"): llama.cpp with parse_special,
// tokenizers with its added tokens.
const hfPlain = tj && new Tokenizer({ ...tj, added_tokens: [] }, {});
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const out = { tokenizer_sha256: sha256(raw),
              bos: model.tokens.bos, add_bos: model.tokens.shouldPrependBosToken,
              greedy: {}, logits: {}, cases: [], special_cases: [] };
const LOGITS_PROMPT = "Once upon a time, there was a little girl named Lily. " +
  "She loved to play outside in the park with her dog.";
const hfSpecial = tj && new Tokenizer(tj, {});
const specialTexts = [
  "<|begin_of_text|>Hello<|eot_id|>", "x<|eot_id|><|eot_id|>y",
  "<|end_of_text|>\n\n<|begin_of_text|> a", "<|eot_id", "<|<|eot_id|>|>",
  "<|reserved_special_token_1|><|reserved_special_token_1",
  "I'm plain text", "", " <|eot_id|> spaced ", "<|eot_id|>'s 123"];
for (const text of tj ? specialTexts : []) {
  const lc = Array.from(model.tokenize(text, true)).map(Number);
  if (out.add_bos) lc.unshift(Number(model.tokens.bos));
  const h = Array.from(hfSpecial.encode(text).ids).map(Number);
  const same = lc.length === h.length && lc.every((x, i) => x === h[i]);
  out.special_cases.push(same ? { text, ids: lc } : { text, ids: lc, tokenizers: h });
}
for (const text of tj ? cases : []) {
  const lc = Array.from(model.tokenize(text, false)).map(Number);
  if (out.add_bos) lc.unshift(Number(model.tokens.bos));
  const h = Array.from(hfPlain.encode(text).ids).map((x) =>
    x === null || x === undefined ? Number(model.tokens.bos) : Number(x));
  const same = lc.length === h.length && lc.every((x, i) => x === h[i]);
  out.cases.push(same ? { text, ids: lc } : { text, ids: lc, tokenizers: h });
}
// Greedy decoding (temperature 0: the highest logit) in llama.cpp.
for (const path of ggufPaths) {
  const m = await llama.loadModel({ modelPath: path });
  const context = await m.createContext({
    contextSize: 256, experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32" });
  const runs = [];
  for (const prompt of ["Once upon a time", "The year 2024 had 366 days;",
                        "Привет, мир!\n"]) {
    const seq = context.getSequence();
    const input = Array.from(m.tokenize(prompt, false));
    if (m.tokens.shouldPrependBosToken) input.unshift(m.tokens.bos);
    const ids = [];
    for await (const t of seq.evaluate(input, { temperature: 0 })) {
      ids.push(Number(t));
      if (ids.length >= 24) break;
    }
    runs.push({ prompt, input: input.map(Number), ids });
    seq.dispose();
  }
  const seq = context.getSequence();
  const input = Array.from(m.tokenize(LOGITS_PROMPT, false));
  if (m.tokens.shouldPrependBosToken) input.unshift(m.tokens.bos);
  const res = await seq.controlledEvaluate(
    input.map((t) => [t, { generateNext: { logits: true } }]));
  const top = res.map((r) => Array.from(r.next.logits.entries()).slice(0, 16)
    .map(([id, v]) => [Number(id), v]));
  seq.dispose();
  const key = sha256(readFileSync(path));
  out.greedy[key] = runs;
  out.logits[key] = { prompt: LOGITS_PROMPT, ids: input.map(Number), top };
}
writeFileSync(outPath, JSON.stringify(out, null, 0).replace(/\},\{/g, "},\n{") + "\n");
const differ = [...out.cases, ...out.special_cases].filter((c) => c.tokenizers);
console.log(`${out.cases.length} texts and ${out.special_cases.length} with special tokens; tokenizers' ids differ from llama.cpp's on ${differ.length}`);
for (const d of differ) console.log(JSON.stringify(d));
process.exit(0);
