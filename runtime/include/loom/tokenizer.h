// Byte-pair tokenizer with llama2.c's encoding (run.c `encode`) and decoding
// rules. Loaded from a llama2.c tokenizer.bin (compiler side) or from the
// artifact's embedded vocabulary (runtime side).
#ifndef LOOM_TOKENIZER_H
#define LOOM_TOKENIZER_H

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace loom {

class Tokenizer {
public:
  // pieces[i] is the raw bytes of token i; scores[i] its merge score.
  // Throws loom::Error on inconsistent input (sizes differ, empty vocab,
  // vocab smaller than the 259 ids llama2.c reserves).
  Tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
            uint32_t max_token_length);

  // Parses llama2.c tokenizer.bin bytes for a vocabulary of `vocab_size`
  // (the file does not store it). Throws loom::Error naming the problem
  // (truncated record, negative length, piece longer than max_token_length,
  // trailing bytes).
  static Tokenizer fromLlama2cBytes(const void *data, size_t size,
                                    int64_t vocab_size);

  // run.c encode(): optional BOS (1), dummy-prefix " " when text is non-empty,
  // UTF-8 code points to pieces (byte fallback id = byte + 3), then greedy
  // highest-score merges (leftmost on ties), optional EOS (2).
  std::vector<int32_t> encode(std::string_view text, bool bos, bool eos) const;

  // Bytes to print for `token` following `prev` (run.c decode + safe_printf):
  // leading space dropped after BOS, <0xHH> -> raw byte, unprintable
  // single bytes (other than whitespace) -> "".
  std::string decode(int32_t prev, int32_t token) const;

  int64_t vocabSize() const { return static_cast<int64_t>(pieces_.size()); }
  const std::string &piece(int32_t id) const { return pieces_.at(id); }
  float score(int32_t id) const { return scores_.at(id); }
  uint32_t maxTokenLength() const { return max_token_length_; }

private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  uint32_t max_token_length_;
  std::unordered_map<std::string, int32_t> lookup_;
};

} // namespace loom

#endif // LOOM_TOKENIZER_H
