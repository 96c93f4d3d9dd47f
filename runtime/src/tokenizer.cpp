// Byte-pair tokenizers: SentencePiece-style, compatible with llama2.c's run.c
// (encode, decode and safe_printf), and byte-level BPE (GPT-2, Llama 3), as
// Hugging Face tokenizers and llama.cpp encode. The merge loop uses a priority
// queue over a linked list of symbols instead of run.c's quadratic rescan; it
// picks the same pair at every step (highest score, leftmost on ties), so the
// ids are identical.
#include "loom/tokenizer.h"

#include "loom/error.h"
#include "utf8.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <queue>
#include <tuple>
#include <utility>

namespace loom {
namespace {

// llama2.c reserves ids 0..2 (<unk>, BOS, EOS) and 3..258 (byte fallbacks).
constexpr int32_t kBosId = 1;
constexpr int32_t kEosId = 2;
constexpr int32_t kByteFallbackBase = 3;
constexpr int64_t kReservedIds = 259;

// run.c starts its best-score search at -1e10 and only accepts strictly
// greater scores, so a piece scored at or below this (or NaN) never merges.
constexpr float kMergeFloor = -1e10f;

std::string sizeMessage(size_t need, size_t offset, size_t size) {
  return "need " + std::to_string(need) + " bytes at offset " +
         std::to_string(offset) + ", file has " + std::to_string(size);
}

// Little-endian reads assembled byte by byte so the loader does not depend on
// the host's byte order or on the buffer's alignment.
uint32_t readU32(const unsigned char *p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

int32_t readI32(const unsigned char *p) {
  uint32_t u = readU32(p);
  int32_t v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

float readF32(const unsigned char *p) {
  uint32_t u = readU32(p);
  float v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// The "C"-locale meaning of isprint/isspace, which is what run.c gets since it
// never calls setlocale; spelled out so the host locale cannot change output.
bool isPrintableOrSpace(unsigned char b) {
  return (b >= 0x20 && b <= 0x7e) || b == '\t' || b == '\n' || b == '\v' ||
         b == '\f' || b == '\r';
}

bool isContinuationByte(unsigned char b) { return (b & 0xC0) == 0x80; }

// One symbol of a text being merged: a doubly linked list in which a merge
// keeps the left node and kills the right one, so node indices stay in text
// order and "leftmost" is simply "smallest left index". A version per node
// lets stale queue entries be recognised after either side changed.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t version;
  bool alive;
};

void appendSymbol(std::vector<Symbol> &symbols, int32_t id) {
  auto index = static_cast<int32_t>(symbols.size());
  symbols.push_back({id, index - 1, -1, 0, true});
  if (index > 0)
    symbols[index - 1].next = index;
}

// Merges adjacent symbols until no pair merges: each time the pair of the
// highest priority, the leftmost among equals. `rule(left id, right id,
// &priority, &merged)` says whether a pair merges.
template <typename Rule>
void mergeSymbols(std::vector<Symbol> &symbols, Rule rule) {
  struct Candidate {
    double priority;
    int32_t left;
    int32_t right;
    int32_t merged;
    uint32_t left_version;
    uint32_t right_version;
  };
  // std::priority_queue pops the "largest": highest priority, then the
  // smallest left index.
  auto lower = [](const Candidate &a, const Candidate &b) {
    if (a.priority != b.priority)
      return a.priority < b.priority;
    return a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> queue(
      lower);
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0)
      return;
    double priority;
    int32_t merged;
    if (rule(symbols[left].id, symbols[right].id, priority, merged))
      queue.push({priority, left, right, merged, symbols[left].version,
                  symbols[right].version});
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    consider(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
  while (!queue.empty()) {
    Candidate c = queue.top();
    queue.pop();
    Symbol &left = symbols[c.left];
    Symbol &right = symbols[c.right];
    if (!left.alive || !right.alive || left.next != c.right ||
        left.version != c.left_version || right.version != c.right_version)
      continue;
    left.id = c.merged;
    ++left.version;
    right.alive = false;
    ++right.version;
    left.next = right.next;
    if (right.next >= 0)
      symbols[right.next].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }
}

// --- Byte-level pre-tokenizers ---------------------------------------------

enum class CodePointClass : uint8_t { Other, Letter, Number, Space };

struct CodePointRange {
  uint32_t first;
  uint32_t last;
  CodePointClass cls;
};

constexpr CodePointRange kCodePointRanges[] = {
#include "unicode_classes.inc"
};

CodePointClass classOf(uint32_t cp) {
  const CodePointRange *end = std::end(kCodePointRanges);
  const CodePointRange *it = std::upper_bound(
      std::begin(kCodePointRanges), end, cp,
      [](uint32_t c, const CodePointRange &r) { return c < r.first; });
  if (it == std::begin(kCodePointRanges))
    return CodePointClass::Other;
  --it;
  return cp <= it->last ? it->cls : CodePointClass::Other;
}

// A text as code points, each with its byte offset. A byte that does not
// start a well-formed UTF-8 sequence is a code point of its own, of class
// Other (a symbol, as U+FFFD would be), so that its byte is still encoded.
// Unicode normalization form C (UAX #15) of the valid UTF-8 runs of a text;
// other bytes are kept as they are (the byte-level BPE spells any byte).
struct NfcDecomposition {
  uint32_t cp;
  uint32_t length;
  uint32_t to[4];
};
constexpr NfcDecomposition kNfcDecompositions[] = {
#define LOOM_NFC_DECOMPOSITIONS
#include "unicode_nfc.inc"
#undef LOOM_NFC_DECOMPOSITIONS
};
struct NfcClass {
  uint32_t first, last, ccc;
};
constexpr NfcClass kNfcClasses[] = {
#define LOOM_NFC_CLASSES
#include "unicode_nfc.inc"
#undef LOOM_NFC_CLASSES
};
struct NfcComposition {
  uint32_t first, second, composite;
};
constexpr NfcComposition kNfcCompositions[] = {
#define LOOM_NFC_COMPOSITIONS
#include "unicode_nfc.inc"
#undef LOOM_NFC_COMPOSITIONS
};

// Hangul syllables decompose and compose arithmetically.
constexpr uint32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161,
                   kHangulT = 0x11A7, kHangulVCount = 21, kHangulTCount = 28,
                   kHangulSCount = 11172;

uint32_t combiningClass(uint32_t cp) {
  const NfcClass *it = std::upper_bound(
      std::begin(kNfcClasses), std::end(kNfcClasses), cp,
      [](uint32_t c, const NfcClass &r) { return c < r.first; });
  return it != std::begin(kNfcClasses) && cp <= (it - 1)->last ? (it - 1)->ccc
                                                               : 0;
}

void decomposeInto(uint32_t cp, std::vector<uint32_t> &out) {
  if (cp >= kHangulS && cp < kHangulS + kHangulSCount) {
    const uint32_t s = cp - kHangulS;
    out.push_back(kHangulL + s / (kHangulVCount * kHangulTCount));
    out.push_back(kHangulV +
                  (s % (kHangulVCount * kHangulTCount)) / kHangulTCount);
    if (s % kHangulTCount)
      out.push_back(kHangulT + s % kHangulTCount);
    return;
  }
  const NfcDecomposition *it = std::lower_bound(
      std::begin(kNfcDecompositions), std::end(kNfcDecompositions), cp,
      [](const NfcDecomposition &d, uint32_t c) { return d.cp < c; });
  if (it == std::end(kNfcDecompositions) || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  out.insert(out.end(), it->to, it->to + it->length);
}

// The primary composite of (a, b), or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kHangulL && a < kHangulL + 19 && b >= kHangulV &&
      b < kHangulV + kHangulVCount)
    return kHangulS +
           ((a - kHangulL) * kHangulVCount + (b - kHangulV)) * kHangulTCount;
  if (a >= kHangulS && a < kHangulS + kHangulSCount &&
      (a - kHangulS) % kHangulTCount == 0 && b > kHangulT &&
      b < kHangulT + kHangulTCount)
    return a + (b - kHangulT);
  const NfcComposition *it = std::lower_bound(
      std::begin(kNfcCompositions), std::end(kNfcCompositions), std::pair(a, b),
      [](const NfcComposition &c, std::pair<uint32_t, uint32_t> k) {
        return c.first != k.first ? c.first < k.first : c.second < k.second;
      });
  return it != std::end(kNfcCompositions) && it->first == a && it->second == b
             ? it->composite
             : 0;
}

// A run of decomposed code points: canonically ordered, composed, appended
// to `out` as UTF-8.
void composeInto(std::vector<uint32_t> &run, std::string &out) {
  std::vector<uint32_t> cls(run.size());
  for (size_t i = 0; i < run.size(); ++i)
    cls[i] = combiningClass(run[i]);
  // Canonical ordering: a stable sort of each run of non-starters by class.
  std::vector<std::pair<uint32_t, uint32_t>> marks; // (class, code point)
  for (size_t i = 0; i < run.size();) {
    if (cls[i] == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < run.size() && cls[end] != 0)
      ++end;
    marks.clear();
    for (size_t k = i; k < end; ++k)
      marks.emplace_back(cls[k], run[k]);
    std::stable_sort(marks.begin(), marks.end(),
                     [](auto &a, auto &b) { return a.first < b.first; });
    for (size_t k = i; k < end; ++k)
      std::tie(cls[k], run[k]) = marks[k - i];
    i = end;
  }
  // Canonical composition (UAX #15's algorithm).
  size_t n = 0, starter = 0;
  uint32_t last = 0;
  for (size_t i = 0; i < run.size(); ++i) {
    const uint32_t cp = run[i], c = cls[i];
    if (i == 0) {
      run[n++] = cp;
      last = c ? 256 : 0; // a leading non-starter composes with nothing
      continue;
    }
    const uint32_t composite = compose(run[starter], cp);
    if (composite && (last < c || last == 0)) {
      run[starter] = composite;
      continue;
    }
    if (c == 0)
      starter = n;
    last = c;
    run[n++] = cp;
  }
  for (size_t i = 0; i < n; ++i)
    utf8::append(out, run[i]);
  run.clear();
}

// The code point of a valid UTF-8 sequence at text[i] (no overlongs or
// surrogates), its length in *len; false for anything else.
bool validUtf8At(std::string_view text, size_t i, uint32_t *cp, size_t *len) {
  const unsigned char c = text[i];
  size_t n = c < 0x80         ? 1
             : (c >> 5) == 6  ? 2
             : (c >> 4) == 14 ? 3
             : (c >> 3) == 30 ? 4
                              : 0;
  if (n == 0 || i + n > text.size())
    return false;
  uint32_t v = n == 1 ? c : c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const unsigned char b = text[i + k];
    if ((b & 0xC0) != 0x80)
      return false;
    v = (v << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < kMin[n] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
    return false;
  *cp = v;
  *len = n;
  return true;
}

std::string normalizeNfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
    return std::string(text);
  std::string out;
  out.reserve(text.size());
  std::vector<uint32_t> run;
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    size_t len;
    if (validUtf8At(text, i, &cp, &len)) {
      decomposeInto(cp, run);
      i += len;
    } else {
      composeInto(run, out);
      out += text[i++];
    }
  }
  composeInto(run, out);
  return out;
}

struct CodePoints {
  std::vector<uint32_t> cp;
  std::vector<CodePointClass> cls;
  std::vector<size_t> offset; // offset[n] = text size

  explicit CodePoints(std::string_view text) {
    const auto *s = reinterpret_cast<const unsigned char *>(text.data());
    const size_t n = text.size();
    for (size_t i = 0; i < n;) {
      unsigned char b = s[i];
      uint32_t c = b;
      size_t len = 1;
      if (b >= 0xC2 && b <= 0xF4) {
        size_t want = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        uint32_t v = b & (want == 2 ? 0x1F : want == 3 ? 0x0F : 0x07);
        size_t k = 1;
        for (; k < want && i + k < n && isContinuationByte(s[i + k]); ++k)
          v = v << 6 | (s[i + k] & 0x3F);
        const uint32_t min = want == 2 ? 0x80 : want == 3 ? 0x800 : 0x10000;
        if (k == want && v >= min && v <= 0x10FFFF &&
            !(v >= 0xD800 && v <= 0xDFFF)) {
          c = v;
          len = want;
        }
      }
      const bool single_invalid = len == 1 && b >= 0x80;
      cp.push_back(single_invalid ? 0xFFFD : c);
      cls.push_back(single_invalid ? CodePointClass::Other : classOf(c));
      offset.push_back(i);
      i += len;
    }
    offset.push_back(n);
  }
  size_t size() const { return cp.size(); }
};

uint32_t asciiLower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// The end of a contraction ('s 't 're 've 'm 'll 'd) at i, or i. Llama 3's
// is case-insensitive, GPT-2's is not.
size_t contractionEnd(const CodePoints &t, size_t i, size_t n, bool any_case) {
  if (t.cp[i] != '\'' || i + 1 >= n)
    return i;
  auto at = [&](size_t k) { return any_case ? asciiLower(t.cp[k]) : t.cp[k]; };
  uint32_t a = at(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd')
    return i + 2;
  if (i + 2 < n) {
    uint32_t b = at(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
        (a == 'l' && b == 'l'))
      return i + 3;
  }
  return i;
}

// Llama 3's pattern (Qwen 2's: \p{N} instead of \p{N}{1,3}):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// GPT-2's:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
//   \s+(?!\S)|\s+
// Returns the end of the word that starts at i (leftmost-first alternation),
// the text ending at n (Llama 3 or GPT-2's pattern).
size_t wordEnd(const CodePoints &t, size_t i, size_t n, PreTokenizer pre) {
  auto is = [&](size_t k, CodePointClass c) { return k < n && t.cls[k] == c; };
  auto newline = [&](size_t k) {
    return k < n && (t.cp[k] == '\r' || t.cp[k] == '\n');
  };
  auto symbol = [&](size_t k) { return is(k, CodePointClass::Other); };
  const bool llama3 = pre == PreTokenizer::Llama3 || pre == PreTokenizer::Qwen2;
  const size_t digits = pre == PreTokenizer::Qwen2 ? 1 : 3;
  if (size_t e = contractionEnd(t, i, n, llama3); e != i)
    return e;
  if (llama3) {
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!newline(i) && !is(i, CodePointClass::Number) &&
        (is(i, CodePointClass::Letter) || is(i + 1, CodePointClass::Letter))) {
      size_t k = i + 1;
      while (is(k, CodePointClass::Letter))
        ++k;
      return k;
    }
    // \p{N}{1,3} (Qwen 2: \p{N})
    if (is(i, CodePointClass::Number)) {
      size_t k = i;
      while (k < i + digits && is(k, CodePointClass::Number))
        ++k;
      return k;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    size_t k = i + (t.cp[i] == ' ' && symbol(i + 1) ? 1 : 0);
    if (symbol(k)) {
      while (symbol(k))
        ++k;
      while (newline(k))
        ++k;
      return k;
    }
  } else {
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
    const size_t k0 = i + (t.cp[i] == ' ' && i + 1 < n &&
                                   t.cls[i + 1] != CodePointClass::Space
                               ? 1
                               : 0);
    if (k0 < n && t.cls[k0] != CodePointClass::Space) {
      const CodePointClass c = t.cls[k0];
      size_t k = k0;
      while (is(k, c))
        ++k;
      return k;
    }
  }
  // Whitespace: the run from i, and (Llama 3) the end of its last newline.
  size_t run = i, after_newline = i;
  while (is(run, CodePointClass::Space)) {
    if (newline(run))
      after_newline = run + 1;
    ++run;
  }
  if (llama3 && after_newline > i)
    return after_newline; // \s*[\r\n]+
  if (run - i > 1 && run < n)
    return run - 1; // \s+(?!\S): leave the last space to the next word
  if (run > i)
    return run; // \s+
  return i + 1; // not reached: every code point has a class above
}

} // namespace

Tokenizer::Tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                     uint32_t max_token_length, SpecialTokens special)
    : pieces_(std::move(pieces)), scores_(std::move(scores)),
      max_token_length_(max_token_length) {
  if (pieces_.size() != scores_.size())
    throw Error("tokenizer: " + std::to_string(pieces_.size()) +
                " pieces but " + std::to_string(scores_.size()) + " scores");
  if (pieces_.empty())
    throw Error("tokenizer: empty vocabulary");
  if (static_cast<int64_t>(pieces_.size()) < kReservedIds)
    throw Error("tokenizer: vocabulary of " + std::to_string(pieces_.size()) +
                " is smaller than the " + std::to_string(kReservedIds) +
                " ids llama2.c reserves (<unk>, BOS, EOS, 256 bytes)");
  if (pieces_.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw Error("tokenizer: vocabulary of " + std::to_string(pieces_.size()) +
                " does not fit int32 ids");
  lookup_.reserve(pieces_.size());
  for (size_t i = 0; i < pieces_.size(); ++i) {
    // encode() skips pairs longer than max_token_length without a lookup, so
    // that bound must really hold.
    if (pieces_[i].size() > max_token_length_)
      throw Error("tokenizer: piece " + std::to_string(i) + " is " +
                  std::to_string(pieces_[i].size()) +
                  " bytes, longer than max_token_length " +
                  std::to_string(max_token_length_));
    // Duplicate pieces would make run.c's bsearch pick an arbitrary id; the
    // lowest id is kept here so the choice is at least deterministic.
    lookup_.emplace(pieces_[i], static_cast<int32_t>(i));
  }
  indexSpecials(special.ids, special);
}

void Tokenizer::indexSpecials(const std::vector<int32_t> &ids,
                              const SpecialTokens &special) {
  prefix_after_special_ = special.prefix_after_special;
  const int64_t n = static_cast<int64_t>(pieces_.size());
  std::vector<uint8_t> isSpecial(pieces_.size(), 0);
  for (int32_t id : ids) {
    if (id < 0 || id >= n)
      throw Error("tokenizer: special id " + std::to_string(id) +
                  " out of range [0, " + std::to_string(n) + ")");
    isSpecial[id] = 1;
  }
  for (auto [list, bit] : {std::pair{&special.lstrip, uint8_t(1)},
                           std::pair{&special.rstrip, uint8_t(2)}})
    for (int32_t id : *list) {
      if (id < 0 || id >= n || !isSpecial[id])
        throw Error(
            "tokenizer: " + std::string(bit == 1 ? "lstrip" : "rstrip") +
            " id " + std::to_string(id) + " is not a special token");
      strip_.resize(pieces_.size(), 0);
      strip_[id] |= bit;
    }
  specials_by_byte_.assign(256, {});
  for (int32_t id : ids)
    if (!pieces_[id].empty()) {
      specials_by_byte_[static_cast<unsigned char>(pieces_[id][0])].push_back(
          id);
      has_specials_ = true;
    }
  for (std::vector<int32_t> &list : specials_by_byte_) {
    std::sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      if (pieces_[a].size() != pieces_[b].size())
        return pieces_[a].size() > pieces_[b].size();
      return a < b;
    });
    list.erase(std::unique(list.begin(), list.end()), list.end());
  }
}

Tokenizer Tokenizer::fromLlama2cBytes(const void *data, size_t size,
                                      int64_t vocab_size) {
  if (vocab_size <= 0)
    throw Error("tokenizer: vocab_size must be positive, got " +
                std::to_string(vocab_size));
  if (vocab_size > std::numeric_limits<int32_t>::max())
    throw Error("tokenizer: vocab_size " + std::to_string(vocab_size) +
                " does not fit int32 ids");
  if (data == nullptr && size != 0)
    throw Error("tokenizer: null data with nonzero size");
  const auto *bytes = static_cast<const unsigned char *>(data);

  if (size < 4)
    throw Error("tokenizer: truncated header (" + sizeMessage(4, 0, size) +
                ")");
  int32_t max_len = readI32(bytes);
  if (max_len < 0)
    throw Error("tokenizer: negative max_token_length " +
                std::to_string(max_len));

  std::vector<std::string> pieces;
  std::vector<float> scores;
  // Every record takes at least 8 bytes, which bounds the reservation even if
  // vocab_size is wildly larger than the file.
  size_t plausible =
      std::min<size_t>(static_cast<size_t>(vocab_size), size / 8);
  pieces.reserve(plausible);
  scores.reserve(plausible);

  size_t offset = 4;
  for (int64_t id = 0; id < vocab_size; ++id) {
    if (size - offset < 8)
      throw Error("tokenizer: truncated at token " + std::to_string(id) + " (" +
                  sizeMessage(8, offset, size) + ")");
    float score = readF32(bytes + offset);
    int32_t len = readI32(bytes + offset + 4);
    offset += 8;
    if (len < 0)
      throw Error("tokenizer: token " + std::to_string(id) +
                  " has negative length " + std::to_string(len));
    if (len > max_len)
      throw Error("tokenizer: token " + std::to_string(id) + " is " +
                  std::to_string(len) +
                  " bytes, longer than max_token_length " +
                  std::to_string(max_len));
    if (size - offset < static_cast<size_t>(len))
      throw Error("tokenizer: truncated at token " + std::to_string(id) + " (" +
                  sizeMessage(static_cast<size_t>(len), offset, size) + ")");
    pieces.emplace_back(reinterpret_cast<const char *>(bytes + offset),
                        static_cast<size_t>(len));
    scores.push_back(score);
    offset += static_cast<size_t>(len);
  }
  if (offset != size)
    throw Error("tokenizer: " + std::to_string(size - offset) +
                " trailing bytes after token " +
                std::to_string(vocab_size - 1) + " (records end at offset " +
                std::to_string(offset) + ", file has " + std::to_string(size) +
                "; wrong vocab_size?)");
  return Tokenizer(std::move(pieces), std::move(scores),
                   static_cast<uint32_t>(max_len));
}

Tokenizer::Tokenizer(std::vector<std::string> pieces, ByteLevelBpe bpe,
                     SpecialTokens special)
    : pieces_(std::move(pieces)) {
  const int64_t n = static_cast<int64_t>(pieces_.size());
  if (pieces_.empty())
    throw Error("tokenizer: empty vocabulary");
  if (pieces_.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw Error("tokenizer: vocabulary of " + std::to_string(n) +
                " does not fit int32 ids");
  auto inRange = [&](int64_t id) { return id >= 0 && id < n; };
  is_control_.assign(pieces_.size(), 0);
  for (int32_t id : bpe.control) {
    if (!inRange(id))
      throw Error("tokenizer: control id " + std::to_string(id) +
                  " out of range [0, " + std::to_string(n) + ")");
    is_control_[id] = 1;
  }
  // A negative BOS or EOS id: the model has none.
  for (auto [what, id] : {std::pair<const char *, int32_t>{"BOS", bpe.bos_id},
                          {"EOS", bpe.eos_id}})
    if (id >= n)
      throw Error(std::string("tokenizer: ") + what + " id " +
                  std::to_string(id) + " out of range [0, " +
                  std::to_string(n) + ")");
  if (bpe.add_bos && bpe.bos_id < 0)
    throw Error("tokenizer: add_bos without a BOS id");
  // Control pieces (special tokens' text) are never the result of merging
  // or of a whole word, so they stay out of the lookup.
  lookup_.reserve(pieces_.size());
  for (int64_t i = 0; i < n; ++i) {
    max_token_length_ =
        std::max<uint32_t>(max_token_length_, pieces_[i].size());
    if (!is_control_[i])
      lookup_.emplace(pieces_[i], static_cast<int32_t>(i));
  }
  if (!special.ids.empty())
    throw Error("tokenizer: a byte-level vocabulary's special tokens are its "
                "control ids");
  indexSpecials(bpe.control, special);
  for (int b = 0; b < 256; ++b) {
    auto it = lookup_.find(std::string(1, static_cast<char>(b)));
    if (it == lookup_.end()) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      throw Error(std::string("tokenizer: no piece is the byte ") + hex +
                  " (a byte-level vocabulary spells every byte)");
    }
    byte_ids_[b] = it->second;
  }
  rules_.reserve(bpe.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < bpe.merges.size(); ++rank) {
    auto [left, right] = bpe.merges[rank];
    if (!inRange(left) || !inRange(right))
      throw Error("tokenizer: merge " + std::to_string(rank) + " (" +
                  std::to_string(left) + ", " + std::to_string(right) +
                  ") names an id out of range [0, " + std::to_string(n) + ")");
    joined = pieces_[left] + pieces_[right];
    auto it = lookup_.find(joined);
    if (it == lookup_.end() || is_control_[left] || is_control_[right])
      throw Error("tokenizer: merge " + std::to_string(rank) + " (" +
                  std::to_string(left) + ", " + std::to_string(right) +
                  ") does not make a piece of the vocabulary");
    // A pair listed twice keeps its first (best) rank, as the references do.
    uint64_t key = static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 |
                   static_cast<uint32_t>(right);
    rules_.try_emplace(key, MergeRule{static_cast<int32_t>(rank), it->second});
  }
  byte_level_ = std::move(bpe);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool bos,
                                       bool eos, bool special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() + 2);
  bool bosPending = bos && addsBos();
  size_t begin = 0; // where the text since the last special token starts
  auto plain = [&](std::string_view part) {
    if (byte_level_) {
      if (bosPending)
        ids.push_back(byte_level_->bos_id);
      if (byte_level_->nfc)
        appendWords(normalizeNfc(part), ids);
      else
        appendWords(part, ids);
    } else {
      appendSentencePiece(part, bosPending, begin == 0 || prefix_after_special_,
                          ids);
    }
    bosPending = false;
  };
  auto isSpace = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
  };
  for (size_t i = 0; special && i < text.size(); ++i) {
    for (int32_t id : specials_by_byte_[static_cast<unsigned char>(text[i])]) {
      const std::string &p = pieces_[id];
      if (text.compare(i, p.size(), p) != 0)
        continue;
      const uint8_t strip = strip_.empty() ? 0 : strip_[id];
      size_t end = i;
      if (strip & 1)
        while (end > begin && isSpace(text[end - 1]))
          --end;
      plain(text.substr(begin, end - begin));
      ids.push_back(id);
      i += p.size();
      if (strip & 2)
        while (i < text.size() && isSpace(text[i]))
          ++i;
      begin = i;
      --i; // the loop's ++i
      break;
    }
  }
  plain(text.substr(begin));
  if (eos && (!byte_level_ || byte_level_->eos_id >= 0))
    ids.push_back(byte_level_ ? byte_level_->eos_id : kEosId);
  return ids;
}

void Tokenizer::appendSentencePiece(std::string_view text, bool bos,
                                    bool prefix,
                                    std::vector<int32_t> &ids) const {
  std::vector<Symbol> nodes;
  nodes.reserve(text.size() + 2);

  // run.c keeps BOS in the merge scan (it never merges with these vocabs,
  // but a vocabulary could make it), so it goes into the list too.
  if (bos)
    appendSymbol(nodes, kBosId);
  if (prefix && !text.empty()) {
    // The SentencePiece dummy prefix. A vocabulary without a " " piece gets
    // the byte fallback, the same rule as for any other character.
    auto space = lookup_.find(" ");
    appendSymbol(nodes, space != lookup_.end() ? space->second
                                               : kByteFallbackBase + ' ');
  }

  // A group is a byte plus the continuation bytes after it, at most 4 bytes:
  // run.c's reading of UTF-8, which also fixes how malformed input splits.
  std::string group;
  for (size_t i = 0; i < text.size();) {
    size_t end = i + 1;
    while (end < text.size() && end - i < 4 &&
           isContinuationByte(static_cast<unsigned char>(text[end])))
      ++end;
    group.assign(text.data() + i, end - i);
    auto it = lookup_.find(group);
    if (it != lookup_.end()) {
      appendSymbol(nodes, it->second);
    } else {
      for (size_t k = i; k < end; ++k)
        appendSymbol(nodes, kByteFallbackBase +
                                static_cast<int32_t>(
                                    static_cast<unsigned char>(text[k])));
    }
    i = end;
  }

  // Any adjacent pair whose concatenation is a piece merges, by the piece's
  // score (run.c's rule).
  std::string pair;
  mergeSymbols(nodes, [&](int32_t left, int32_t right, double &priority,
                          int32_t &merged) {
    const std::string &a = pieces_[left];
    const std::string &b = pieces_[right];
    // No piece is longer than max_token_length (checked at
    // construction), so longer concatenations cannot match.
    if (a.size() + b.size() > max_token_length_)
      return false;
    pair.assign(a);
    pair.append(b);
    auto it = lookup_.find(pair);
    if (it == lookup_.end())
      return false;
    float score = scores_[it->second];
    if (!(score > kMergeFloor))
      return false;
    priority = score;
    merged = it->second;
    return true;
  });

  for (int32_t i = nodes.empty() ? -1 : 0; i >= 0; i = nodes[i].next)
    ids.push_back(nodes[i].id);
}

void Tokenizer::appendWords(std::string_view text,
                            std::vector<int32_t> &ids) const {
  const ByteLevelBpe &bpe = *byte_level_;
  const CodePoints points(text);
  const size_t n = points.size();
  std::vector<Symbol> symbols;
  auto rule = [&](int32_t left, int32_t right, double &priority,
                  int32_t &merged) {
    auto it =
        rules_.find(static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 |
                    static_cast<uint32_t>(right));
    if (it == rules_.end())
      return false;
    priority = -static_cast<double>(it->second.rank);
    merged = it->second.merged;
    return true;
  };
  // SmolLM's: each number character alone, then GPT-2's pattern within the
  // text between them (its lookahead ends there too).
  const bool smollm = bpe.pre == PreTokenizer::SmolLm;
  size_t fragment_end = 0;
  for (size_t i = 0; i < n;) {
    size_t end;
    if (smollm) {
      if (i >= fragment_end) {
        fragment_end = i + 1;
        if (points.cls[i] != CodePointClass::Number)
          while (fragment_end < n &&
                 points.cls[fragment_end] != CodePointClass::Number)
            ++fragment_end;
      }
      end = wordEnd(points, i, fragment_end, PreTokenizer::Gpt2);
    } else {
      end = wordEnd(points, i, n, bpe.pre);
    }
    std::string_view word =
        text.substr(points.offset[i], points.offset[end] - points.offset[i]);
    i = end;
    if (bpe.ignore_merges) {
      auto whole = lookup_.find(std::string(word));
      if (whole != lookup_.end()) {
        ids.push_back(whole->second);
        continue;
      }
    }
    symbols.clear();
    for (char c : word)
      appendSymbol(symbols, byte_ids_[static_cast<unsigned char>(c)]);
    mergeSymbols(symbols, rule);
    for (int32_t k = 0; k >= 0; k = symbols[k].next)
      ids.push_back(symbols[k].id);
  }
}

std::string Tokenizer::decode(int32_t prev, int32_t token) const {
  if (token < 0 || token >= vocabSize())
    throw Error("tokenizer: token id " + std::to_string(token) +
                " out of range [0, " + std::to_string(vocabSize()) + ")");
  if (byte_level_)
    return is_control_[token] ? std::string() : pieces_[token];
  std::string_view piece = pieces_[token];
  // After BOS the dummy-prefix space is not printed.
  if (prev == kBosId && !piece.empty() && piece.front() == ' ')
    piece.remove_prefix(1);

  std::string out;
  int hi = -1, lo = -1;
  if (piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>' &&
      (hi = hexDigit(piece[3])) >= 0 && (lo = hexDigit(piece[4])) >= 0)
    out.assign(1, static_cast<char>(hi * 16 + lo));
  else
    out.assign(piece);

  // run.c's safe_printf: a lone control or non-ASCII byte is dropped rather
  // than written to the terminal half-formed.
  if (out.size() == 1 &&
      !isPrintableOrSpace(static_cast<unsigned char>(out[0])))
    return std::string();
  return out;
}

} // namespace loom
