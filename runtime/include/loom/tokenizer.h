// Byte-pair tokenizers of two kinds:
//  - SentencePiece-style (Llama 1/2, llama2.c): llama2.c's encoding (run.c
//    `encode`) and decoding rules, merges ranked by piece scores, <0xHH> byte
//    fallback pieces;
//  - byte-level BPE (GPT-2, Llama 3): the text split into words by the
//    pre-tokenizer's regular expression, each word's bytes merged by ranked
//    merge rules, as Hugging Face tokenizers and llama.cpp do.
// Loaded from a checkpoint's vocabulary (compiler side) or from the
// artifact's embedded one (runtime side).
#ifndef LOOM_TOKENIZER_H
#define LOOM_TOKENIZER_H

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace loom {

// How a byte-level BPE splits text into words before merging: the regular
// expression of GPT-2, of Llama 3 or of Qwen 2 (Llama 3's with numbers one
// by one), or SmolLM's (each number character alone, then GPT-2's);
// docs/frontends.md spells them out.
enum class PreTokenizer : uint8_t { Gpt2, Llama3, SmolLm, Qwen2 };

// What a byte-level BPE vocabulary needs besides its pieces.
struct ByteLevelBpe {
  PreTokenizer pre = PreTokenizer::Llama3;
  // Merge rules by rank: (left id, right id); the result is the piece that
  // spells left + right.
  std::vector<std::pair<int32_t, int32_t>> merges;
  // Ids that decode to nothing and are never produced by encoding text
  // (BOS, EOS and other special tokens; ids the checkpoint left unnamed).
  std::vector<int32_t> control;
  // A word that is a piece is that piece, without merging (Llama 3's
  // tokenizer.json `ignore_merges`).
  bool ignore_merges = false;
  // Text is put in Unicode normalization form C first (tokenizer.json's NFC
  // normalizer, Qwen 2's); special tokens are matched before, on the text
  // as given.
  bool nfc = false;
  // encode() with bos=true puts bos_id first only where this is set.
  bool add_bos = false;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
};

// Special tokens whose text encode(..., special=true) picks out of a text
// (chat templates write them), beyond what a byte-level vocabulary names as
// control ids.
struct SpecialTokens {
  // SentencePiece-style vocabularies: the ids picked out (Hugging Face's
  // special added tokens, GGUF's control and user-defined tokens).
  // Byte-level vocabularies pick out their control ids; this stays empty.
  std::vector<int32_t> ids;
  // Picked out with the whitespace before them (lstrip) or after them
  // (rstrip): Hugging Face added tokens' flags (Phi-3's <|user|>, <|end|>).
  std::vector<int32_t> lstrip;
  std::vector<int32_t> rstrip;
  // SentencePiece-style: whether text after a special token gets the dummy
  // prefix, as text at the start does (llama.cpp; tokenizer.json's Prepend
  // normalizer and Metaspace prepend_scheme "always"), or not (Metaspace
  // "first": only text at the start of the input).
  bool prefix_after_special = true;
};

class Tokenizer {
public:
  // pieces[i] is the raw bytes of token i; scores[i] its merge score.
  // Throws loom::Error on inconsistent input (sizes differ, empty vocab,
  // vocab smaller than the 259 ids llama2.c reserves).
  Tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
            uint32_t max_token_length, SpecialTokens special = {});

  // Parses llama2.c tokenizer.bin bytes for a vocabulary of `vocab_size`
  // (the file does not store it). Throws loom::Error naming the problem
  // (truncated record, negative length, piece longer than max_token_length,
  // trailing bytes).
  static Tokenizer fromLlama2cBytes(const void *data, size_t size,
                                    int64_t vocab_size);

  // A byte-level BPE over `pieces` (raw bytes; special tokens their text).
  // Throws loom::Error naming the problem: a byte without a single-byte
  // piece, a merge id out of range or whose result is not a piece, a
  // control or BOS/EOS id out of range.
  Tokenizer(std::vector<std::string> pieces, ByteLevelBpe bpe,
            SpecialTokens special = {});

  // SentencePiece-style, run.c encode(): optional BOS (1), dummy-prefix " "
  // when text is non-empty, UTF-8 code points to pieces (byte fallback id =
  // byte + 3), then greedy highest-score merges (leftmost on ties), optional
  // EOS (2).
  // Byte-level: optional BOS (where add_bos), each pre-tokenizer word merged
  // by rank (leftmost first among equal ranks), optional EOS. Special tokens'
  // text is encoded as plain text, unless `special`: then each occurrence of
  // a special token's text (a byte-level vocabulary's control ids, a
  // SentencePiece-style one's SpecialTokens::ids; leftmost, the longest where
  // several start at one place) is that token, with the whitespace before or
  // after it dropped where it lstrips or rstrips, and each text between is
  // encoded as usual: SentencePiece-style, each with its dummy prefix
  // (llama.cpp's parse_special).
  std::vector<int32_t> encode(std::string_view text, bool bos, bool eos,
                              bool special = false) const;

  // Bytes to print for `token` following `prev`. SentencePiece-style (run.c
  // decode + safe_printf): leading space dropped after BOS, <0xHH> -> raw
  // byte, unprintable single bytes (other than whitespace) -> "".
  // Byte-level: the piece's bytes, nothing for a control id.
  std::string decode(int32_t prev, int32_t token) const;

  bool byteLevel() const { return byte_level_.has_value(); }
  // Whether encode(..., special=true) has special tokens to pick out.
  bool hasSpecialTokens() const { return has_specials_; }
  // Whether a prompt starts with BOS: always for SentencePiece-style
  // vocabularies (run.c), where add_bos says so for byte-level ones.
  bool addsBos() const { return !byte_level_ || byte_level_->add_bos; }
  const ByteLevelBpe *byteLevelBpe() const {
    return byte_level_ ? &*byte_level_ : nullptr;
  }

  int64_t vocabSize() const { return static_cast<int64_t>(pieces_.size()); }
  const std::string &piece(int32_t id) const { return pieces_.at(id); }
  float score(int32_t id) const { return scores_.at(id); }
  uint32_t maxTokenLength() const { return max_token_length_; }

private:
  // Appends the ids of `text`, word by word (byte-level).
  void appendWords(std::string_view text, std::vector<int32_t> &ids) const;
  // Appends run.c's encoding of `text` (BOS first if `bos`, the dummy
  // prefix where text is not empty and `prefix`, merges by score).
  void appendSentencePiece(std::string_view text, bool bos, bool prefix,
                           std::vector<int32_t> &ids) const;
  // Special ids by their text's first byte (longest text first), and each
  // id's whitespace rule (1: lstrip, 2: rstrip; empty: none has one).
  void indexSpecials(const std::vector<int32_t> &ids,
                     const SpecialTokens &special);

  std::vector<std::string> pieces_;
  std::vector<float> scores_; // SentencePiece-style only
  uint32_t max_token_length_ = 0;
  std::unordered_map<std::string, int32_t> lookup_;

  // Special ids with a text, by the text's first byte, longest text first.
  std::vector<std::vector<int32_t>> specials_by_byte_;
  std::vector<uint8_t> strip_;
  bool has_specials_ = false;
  bool prefix_after_special_ = true;

  // Byte-level only.
  std::optional<ByteLevelBpe> byte_level_;
  std::vector<uint8_t> is_control_;
  int32_t byte_ids_[256] = {};
  struct MergeRule {
    int32_t rank;
    int32_t merged;
  };
  std::unordered_map<uint64_t, MergeRule> rules_; // (left << 32 | right)
};

} // namespace loom

#endif // LOOM_TOKENIZER_H
