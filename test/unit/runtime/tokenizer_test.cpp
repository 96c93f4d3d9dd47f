// Tokenizer tests: run.c-exact encoding (golden ids from ../shared, plus
// hand-checked cases on the bundled tok512.bin that need nothing outside the
// repository), decode rules, round trips, a differential check of the
// priority-queue merge against a plain quadratic one, and rejection of
// malformed tokenizer.bin bytes. Also covers the JSON reader the golden
// tests rely on.
#include "loom/error.h"
#include "loom/tokenizer.h"
#include "support/json.h"
#include "support/shared.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using loom::Tokenizer;
using loom::test::Json;
using Ids = std::vector<int32_t>;

std::string readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Tokenizer loadTokenizer(const std::string &path, int64_t vocab_size) {
  std::string bytes = readBytes(path);
  return Tokenizer::fromLlama2cBytes(bytes.data(), bytes.size(), vocab_size);
}

std::string bundledTok512Path() {
  return loom::test::sourceDir() + "/models/tok512.bin";
}

const Tokenizer &bundledTok512() {
  static const Tokenizer tokenizer = loadTokenizer(bundledTok512Path(), 512);
  return tokenizer;
}

// What run.c prints for a token sequence (the decode + safe_printf loop).
std::string decodeAll(const Tokenizer &tok, const Ids &ids) {
  std::string out;
  for (size_t i = 1; i < ids.size(); ++i)
    out += tok.decode(ids[i - 1], ids[i]);
  return out;
}

// A deliberately plain encoder written from the spec, rescanning every pair
// after each merge like run.c. The fast encoder must agree with it.
Ids referenceEncode(const Tokenizer &tok, const std::string &text) {
  std::unordered_map<std::string, int32_t> ids;
  for (int32_t i = 0; i < tok.vocabSize(); ++i)
    ids.emplace(tok.piece(i), i);
  Ids out = {1};
  if (!text.empty()) {
    auto space = ids.find(" ");
    out.push_back(space != ids.end() ? space->second : ' ' + 3);
  }
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i + 1;
    while (j < text.size() && j - i < 4 &&
           (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80)
      ++j;
    auto it = ids.find(text.substr(i, j - i));
    if (it != ids.end())
      out.push_back(it->second);
    else
      for (size_t k = i; k < j; ++k)
        out.push_back(static_cast<unsigned char>(text[k]) + 3);
    i = j;
  }
  while (true) {
    float best = -1e10f;
    int best_at = -1;
    int32_t best_id = -1;
    for (size_t k = 0; k + 1 < out.size(); ++k) {
      auto it = ids.find(tok.piece(out[k]) + tok.piece(out[k + 1]));
      if (it != ids.end() && tok.score(it->second) > best) {
        best = tok.score(it->second);
        best_at = static_cast<int>(k);
        best_id = it->second;
      }
    }
    if (best_at < 0)
      break;
    out[best_at] = best_id;
    out.erase(out.begin() + best_at + 1);
  }
  return out;
}

// A vocabulary with llama2.c's 259 reserved ids followed by `extra`.
Tokenizer makeVocab(const std::vector<std::pair<std::string, float>> &extra) {
  std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back(name);
  }
  std::vector<float> scores(pieces.size(), 0.0f);
  uint32_t max_len = 6;
  for (const auto &[piece, score] : extra) {
    pieces.push_back(piece);
    scores.push_back(score);
    max_len = std::max(max_len, static_cast<uint32_t>(piece.size()));
  }
  return Tokenizer(std::move(pieces), std::move(scores), max_len);
}

void putI32(std::string &bytes, size_t offset, int32_t value) {
  uint32_t u;
  std::memcpy(&u, &value, 4);
  for (int i = 0; i < 4; ++i)
    bytes[offset + i] = static_cast<char>((u >> (8 * i)) & 0xFF);
}

// Expects fromLlama2cBytes to throw loom::Error whose message has `needle`.
void expectLoadError(const std::string &bytes, int64_t vocab_size,
                     const std::string &needle) {
  try {
    Tokenizer::fromLlama2cBytes(bytes.data(), bytes.size(), vocab_size);
    ADD_FAILURE() << "no error for " << bytes.size() << " bytes, vocab "
                  << vocab_size << " (expected \"" << needle << "\")";
  } catch (const loom::Error &e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
  }
}

// ---------------------------------------------------------------------------
// Bundled tok512.bin: always available.

TEST(TokenizerBundled, LoadsTok512) {
  const Tokenizer &tok = bundledTok512();
  EXPECT_EQ(tok.vocabSize(), 512);
  EXPECT_EQ(tok.maxTokenLength(), 7u);
  EXPECT_EQ(tok.piece(1), "\n<s>\n");
  EXPECT_EQ(tok.piece(2), "\n</s>\n");
  EXPECT_EQ(tok.piece(13), "<0x0A>");
  EXPECT_EQ(tok.piece(403), " Once");
  EXPECT_EQ(tok.piece(410), " ");
  EXPECT_EQ(tok.piece(485), "\xC3\xA9"); // é
  EXPECT_FLOAT_EQ(tok.score(410), -151.0f);
}

// Expected ids copied from ../shared/golden/tokenizer_encode.json (run.c).
TEST(TokenizerBundled, EncodesHandCheckedCases) {
  const Tokenizer &tok = bundledTok512();
  EXPECT_EQ(tok.encode("", true, false), Ids({1}));
  EXPECT_EQ(tok.encode("Once upon a time", true, false),
            Ids({1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("The little dog", true, false),
            Ids({1, 291, 376, 400, 428}));
  EXPECT_EQ(tok.encode("hello", true, false), Ids({1, 281, 306, 414}));
  // The dummy prefix and the text's own space stay separate: "  " is not a
  // tok512 piece.
  EXPECT_EQ(tok.encode(" ", true, false), Ids({1, 410, 410}));
  // é is a piece (485); other accents and CJK fall back to byte + 3.
  EXPECT_EQ(tok.encode("peppermint => menthe poivr\xC3\xA9"
                       "e",
                       true, false),
            Ids({1,   282, 411, 339, 285, 423, 271, 413, 410, 64, 505,
                 284, 377, 260, 282, 414, 417, 435, 420, 485, 411}));
  EXPECT_EQ(tok.encode("\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7"
                       "\x95\x8C",
                       true, false),
            Ids({1, 410, 231, 192, 163, 232, 168, 192, 242, 191, 143, 231, 187,
                 153, 234, 152, 143}));
  Ids xs(41, 444);
  xs.insert(xs.begin(), 1);
  xs[1] = 410;
  EXPECT_EQ(tok.encode(std::string(40, 'x'), true, false), xs);
}

TEST(TokenizerBundled, BosAndEosFlags) {
  const Tokenizer &tok = bundledTok512();
  EXPECT_EQ(tok.encode("hello", false, false), Ids({281, 306, 414}));
  EXPECT_EQ(tok.encode("hello", true, true), Ids({1, 281, 306, 414, 2}));
  EXPECT_EQ(tok.encode("hello", false, true), Ids({281, 306, 414, 2}));
  EXPECT_EQ(tok.encode("", true, true), Ids({1, 2}));
  EXPECT_EQ(tok.encode("", false, false), Ids({}));
}

// run.c groups a byte with up to 3 following continuation bytes, so a stray
// continuation byte after "é" makes a 3-byte group that is not a piece, and
// all three bytes fall back (checked with an independent Python encoder).
TEST(TokenizerBundled, Utf8GroupingFollowsRunC) {
  const Tokenizer &tok = bundledTok512();
  EXPECT_EQ(tok.encode("\xC3\xA9", true, false), Ids({1, 410, 485}));
  EXPECT_EQ(tok.encode("\xC3\xA9\x80", true, false),
            Ids({1, 410, 198, 172, 131}));
  // Text is a byte sequence, not a C string: an embedded NUL is byte 0.
  EXPECT_EQ(tok.encode(std::string_view("x\0x", 3), false, false),
            Ids({410, 444, 3, 444}));
}

TEST(TokenizerBundled, DecodeRules) {
  const Tokenizer &tok = bundledTok512();
  // The dummy-prefix space is dropped only right after BOS.
  EXPECT_EQ(tok.decode(1, 403), "Once");
  EXPECT_EQ(tok.decode(403, 403), " Once");
  EXPECT_EQ(tok.decode(2, 403), " Once");
  EXPECT_EQ(tok.decode(1, 410), "");
  EXPECT_EQ(tok.decode(5, 410), " ");
  // Byte pieces become the raw byte; whitespace and printables are kept.
  EXPECT_EQ(tok.decode(5, 13), "\n");
  EXPECT_EQ(tok.decode(1, 13), "\n");
  EXPECT_EQ(tok.decode(5, 3 + '\t'), "\t");
  EXPECT_EQ(tok.decode(5, 3 + 'A'), "A");
  EXPECT_EQ(tok.decode(5, 3 + '<'), "<");
  // Unprintable single bytes are swallowed, like safe_printf.
  EXPECT_EQ(tok.decode(5, 3), "");
  EXPECT_EQ(tok.decode(5, 3 + 0x07), "");
  EXPECT_EQ(tok.decode(5, 3 + 0x7F), "");
  EXPECT_EQ(tok.decode(5, 3 + 0xC3), "");
  // A multi-byte piece is printed whole.
  EXPECT_EQ(tok.decode(5, 485), "\xC3\xA9");
  // Special pieces print as their text.
  EXPECT_EQ(tok.decode(5, 2), "\n</s>\n");
  EXPECT_THROW(tok.decode(1, 512), loom::Error);
  EXPECT_THROW(tok.decode(1, -1), loom::Error);
}

const char *const kAsciiTexts[] = {
    "Once upon a time",
    "The little dog",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "Lily's mom said, \"Don't worry!\"\nThey played.\n\n        Indented",
    "tab\tseparated\tvalues\r\n",
    "numbers 12345 and 3.14159, UPPER lower MiXeD",
    "<s> and </s> and <0x41> are literal here",
    "~!@#$%^&*()_+`-={}|[]\\:;'<>?,./",
    "x",
    " ",
    "\n",
};

TEST(TokenizerBundled, RoundTripsAsciiText) {
  const Tokenizer &tok = bundledTok512();
  for (const char *text : kAsciiTexts)
    EXPECT_EQ(decodeAll(tok, tok.encode(text, true, false)), text)
        << "text: \"" << text << "\"";
}

std::string randomText(std::mt19937 &rng, size_t fragments) {
  static const char *const kFragments[] = {"a",
                                           "e",
                                           "t",
                                           "th",
                                           "the ",
                                           "x",
                                           " ",
                                           "  ",
                                           "\n",
                                           "\t",
                                           "Once",
                                           "upon",
                                           "1",
                                           "42",
                                           ".",
                                           ",",
                                           "\"",
                                           "'",
                                           "\xC3\xA9",
                                           "\xC3\xAF",
                                           "\xE2\x80\x99",
                                           "\xE4\xBD\xA0",
                                           "\xF0\x9F\xA6\x99",
                                           "\x80",
                                           "\xC3",
                                           "<",
                                           "s>",
                                           "<0x",
                                           "41>",
                                           "\xC2\xA0"};
  std::uniform_int_distribution<size_t> pick(0, std::size(kFragments) - 1);
  std::string text;
  for (size_t i = 0; i < fragments; ++i)
    text += kFragments[pick(rng)];
  return text;
}

TEST(TokenizerBundled, MatchesQuadraticReferenceOnRandomText) {
  const Tokenizer &tok = bundledTok512();
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text = randomText(rng, 1 + trial % 60);
    ASSERT_EQ(tok.encode(text, true, false), referenceEncode(tok, text))
        << "trial " << trial;
  }
}

TEST(TokenizerBundled, LongPromptIsFast) {
  const Tokenizer &tok = bundledTok512();
  std::mt19937 rng(99);
  std::string text = randomText(rng, 20000);
  auto start = std::chrono::steady_clock::now();
  Ids ids = tok.encode(text, true, false);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  EXPECT_GT(ids.size(), 1000u);
  // A quadratic merge loop takes minutes here; the queue takes milliseconds.
  EXPECT_LT(seconds, 5.0) << ids.size() << " tokens";
}

// ---------------------------------------------------------------------------
// Synthetic vocabularies: merge rules that the real files cannot isolate.

TEST(TokenizerSynthetic, EqualScoresMergeLeftmostFirst) {
  // "ab" and "ba" tie; in " aba" the left pair (a,b) must win.
  Tokenizer tok = makeVocab(
      {{" ", 0.0f}, {"a", 0.0f}, {"b", 0.0f}, {"ab", 1.0f}, {"ba", 1.0f}});
  const int32_t a = 260, ab = 262;
  EXPECT_EQ(tok.encode("aba", false, false), Ids({259, ab, a}));
  // A strictly higher score beats position.
  Tokenizer tok2 = makeVocab(
      {{" ", 0.0f}, {"a", 0.0f}, {"b", 0.0f}, {"ab", 1.0f}, {"ba", 2.0f}});
  EXPECT_EQ(tok2.encode("aba", false, false), Ids({259, 260, 263}));
}

TEST(TokenizerSynthetic, MergesCascade) {
  Tokenizer tok = makeVocab({{" ", 0.0f},
                             {"a", 0.0f},
                             {"aa", 3.0f},
                             {"aaaa", 2.0f},
                             {" aaaa", 1.0f}});
  // a a a a -> aa aa -> aaaa, then " " + "aaaa".
  EXPECT_EQ(tok.encode("aaaa", false, false), Ids({263}));
  EXPECT_EQ(tok.encode("aaaaa", false, false), Ids({263, 260}));
}

TEST(TokenizerSynthetic, ScoreFloorMatchesRunC) {
  // run.c starts from -1e10 and needs a strictly greater score: -1e9 merges
  // (tokenizer.bin's "  " relies on this), -1e10 never does.
  Tokenizer merges = makeVocab({{" ", 0.0f}, {"c", 0.0f}, {" c", -1e9f}});
  EXPECT_EQ(merges.encode("c", false, false), Ids({261}));
  Tokenizer stays = makeVocab({{" ", 0.0f}, {"c", 0.0f}, {" c", -1e10f}});
  EXPECT_EQ(stays.encode("c", false, false), Ids({259, 260}));
}

TEST(TokenizerSynthetic, MissingSpacePieceFallsBackToByte) {
  Tokenizer tok = makeVocab({{"q", 0.0f}});
  EXPECT_EQ(tok.encode("q", true, false), Ids({1, ' ' + 3, 259}));
  EXPECT_EQ(tok.encode("z", true, false), Ids({1, ' ' + 3, 'z' + 3}));
}

TEST(TokenizerSynthetic, BosTakesPartInMerges) {
  // run.c scans BOS like any other token; a vocabulary can make it merge.
  Tokenizer tok = makeVocab({{" ", 0.0f}, {"\n<s>\n ", 5.0f}});
  EXPECT_EQ(tok.encode("\n", true, false), Ids({260, 13}));
}

TEST(TokenizerSynthetic, ConstructorValidates) {
  EXPECT_THROW(Tokenizer({}, {}, 8), loom::Error);
  EXPECT_THROW(Tokenizer(std::vector<std::string>(300, "a"),
                         std::vector<float>(299, 0.0f), 8),
               loom::Error);
  try {
    Tokenizer(std::vector<std::string>(100, "a"), std::vector<float>(100), 8);
    ADD_FAILURE() << "vocab of 100 accepted";
  } catch (const loom::Error &e) {
    EXPECT_NE(std::string(e.what()).find("smaller than the 259"),
              std::string::npos)
        << e.what();
  }
  std::vector<std::string> pieces(300, "a");
  pieces[280] = "abcdefghij";
  try {
    Tokenizer(pieces, std::vector<float>(300), 8);
    ADD_FAILURE() << "piece longer than max_token_length accepted";
  } catch (const loom::Error &e) {
    EXPECT_NE(std::string(e.what()).find("piece 280 is 10 bytes"),
              std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------------------
// Byte-level BPE (GPT-2, Llama 3): a hand-made vocabulary. The references'
// ids on many texts are checked by test/frontends/byte-level-bpe.

// Ids 0..255 are the bytes; then the pieces below, in order.
struct ByteLevelVocab {
  std::vector<std::string> pieces;
  loom::ByteLevelBpe bpe;
  int32_t id(const std::string &piece) const {
    auto it = std::find(pieces.begin(), pieces.end(), piece);
    return it == pieces.end() ? -1 : int32_t(it - pieces.begin());
  }
  void merge(const std::string &a, const std::string &b) {
    bpe.merges.emplace_back(id(a), id(b));
  }
};

ByteLevelVocab byteLevelVocab(loom::PreTokenizer pre) {
  ByteLevelVocab v;
  for (int b = 0; b < 256; ++b)
    v.pieces.push_back(std::string(1, char(b)));
  for (const char *p : {"ab", "abc", " ab", "<|bos|>", "<|eos|>", "xyz", "aa",
                        "'S", "123", "1234", " \n\n", "  "})
    v.pieces.push_back(p);
  v.bpe.pre = pre;
  v.merge("a", "b");
  v.merge("ab", "c");
  v.merge(" ", "ab");
  v.merge("a", "a");
  v.merge("'", "S");
  v.bpe.control = {v.id("<|bos|>"), v.id("<|eos|>")};
  v.bpe.bos_id = v.id("<|bos|>");
  v.bpe.eos_id = v.id("<|eos|>");
  return v;
}

Ids bytesOf(const std::string &s) {
  Ids ids;
  for (unsigned char c : s)
    ids.push_back(c);
  return ids;
}

TEST(TokenizerByteLevel, MergesByRankWithinWords) {
  ByteLevelVocab v = byteLevelVocab(loom::PreTokenizer::Llama3);
  Tokenizer tok(v.pieces, v.bpe);
  // " abc": (a,b) first, then (ab,c) of rank 1 before (" ",ab) of rank 2.
  EXPECT_EQ(tok.encode("ab abc", false, false),
            Ids({v.id("ab"), ' ', v.id("abc")}));
  // Equal ranks merge leftmost first.
  EXPECT_EQ(tok.encode("aaa", false, false), Ids({v.id("aa"), 'a'}));
  // Words are merged one by one: "x" and " ab".
  EXPECT_EQ(tok.encode("x ab", false, false), Ids({'x', v.id(" ab")}));
  // A piece no merge makes is reached only with ignore_merges.
  EXPECT_EQ(tok.encode("xyz", false, false), bytesOf("xyz"));
  v.bpe.ignore_merges = true;
  Tokenizer whole(v.pieces, v.bpe);
  EXPECT_EQ(whole.encode("xyz", false, false), Ids({v.id("xyz")}));
}

TEST(TokenizerByteLevel, PreTokenizersSplitAsTheirPatterns) {
  for (auto pre : {loom::PreTokenizer::Llama3, loom::PreTokenizer::Gpt2}) {
    const bool llama3 = pre == loom::PreTokenizer::Llama3;
    SCOPED_TRACE(llama3 ? "llama3" : "gpt2");
    ByteLevelVocab v = byteLevelVocab(pre);
    v.bpe.ignore_merges = true;
    Tokenizer tok(v.pieces, v.bpe);
    // Contractions: Llama 3's ignore case ("'S" a word), GPT-2's do not.
    EXPECT_EQ(tok.encode("x'S", false, false),
              llama3 ? Ids({'x', v.id("'S")}) : Ids({'x', '\'', 'S'}));
    // Digits: at most three a word in Llama 3's, any run in GPT-2's.
    EXPECT_EQ(tok.encode("1234", false, false),
              llama3 ? Ids({v.id("123"), '4'}) : Ids({v.id("1234")}));
    // Whitespace before a newline run: one word up to the last newline in
    // Llama 3's; GPT-2's leaves the last whitespace to the next word.
    EXPECT_EQ(tok.encode("a \n\nb", false, false),
              llama3 ? Ids({'a', v.id(" \n\n"), 'b'})
                     : Ids({'a', ' ', '\n', '\n', 'b'}));
  }
}

TEST(TokenizerByteLevel, SmolLmSplitsNumbersOneByOne) {
  ByteLevelVocab v = byteLevelVocab(loom::PreTokenizer::SmolLm);
  v.bpe.ignore_merges = true;
  Tokenizer tok(v.pieces, v.bpe);
  // Every number character alone (a whole-word piece notwithstanding)...
  EXPECT_EQ(tok.encode("1234", false, false), bytesOf("1234"));
  // ... "\u00bd" (No) too; GPT-2's pattern runs between them, its lookahead
  // ending at the number: "a  1" is "a", "  ", "1" (GPT-2: "a", " ", " 1").
  EXPECT_EQ(tok.encode("a  1", false, false), Ids({'a', v.id("  "), '1'}));
  EXPECT_EQ(tok.encode("x\xC2\xBDy", false, false),
            Ids({'x', 0xC2, 0xBD, 'y'}));
  ByteLevelVocab g = byteLevelVocab(loom::PreTokenizer::Gpt2);
  g.bpe.ignore_merges = true;
  Tokenizer gpt2(g.pieces, g.bpe);
  EXPECT_EQ(gpt2.encode("a  1", false, false), Ids({'a', ' ', ' ', '1'}));
}

TEST(TokenizerByteLevel, BosEosAndDecoding) {
  ByteLevelVocab v = byteLevelVocab(loom::PreTokenizer::Llama3);
  const int32_t bos = v.id("<|bos|>"), eos = v.id("<|eos|>");
  Tokenizer plain(v.pieces, v.bpe);
  EXPECT_FALSE(plain.addsBos());
  EXPECT_EQ(plain.encode("ab", true, true), Ids({v.id("ab"), eos}));
  v.bpe.add_bos = true;
  Tokenizer tok(v.pieces, v.bpe);
  EXPECT_TRUE(tok.addsBos());
  EXPECT_TRUE(tok.byteLevel());
  EXPECT_EQ(tok.encode("ab", true, true), Ids({bos, v.id("ab"), eos}));
  EXPECT_EQ(tok.encode("ab", false, false), Ids({v.id("ab")}));
  // Special tokens' text is plain text.
  Ids special = tok.encode("<|bos|>", false, false);
  EXPECT_EQ(std::count(special.begin(), special.end(), bos), 0);
  // Control ids decode to nothing; others to their bytes, whatever came
  // before (no SentencePiece space rule).
  EXPECT_EQ(tok.decode(0, bos), "");
  EXPECT_EQ(tok.decode(bos, v.id(" ab")), " ab");
  EXPECT_EQ(tok.decode(bos, 0xFF), "\xFF");
}

TEST(TokenizerByteLevel, AnyBytesRoundTrip) {
  ByteLevelVocab v = byteLevelVocab(loom::PreTokenizer::Llama3);
  Tokenizer tok(v.pieces, v.bpe);
  std::mt19937 rng(7);
  for (int n = 0; n < 200; ++n) {
    // Random bytes: malformed UTF-8, NULs and controls included.
    std::string text(rng() % 40, '\0');
    for (char &c : text)
      c = static_cast<char>(rng() % 4 ? "ab c'S1\n\xE2\x80\xA8"[rng() % 12]
                                      : rng() % 256);
    std::string back;
    for (int32_t id : tok.encode(text, false, false))
      back += tok.decode(0, id);
    EXPECT_EQ(back, text);
  }
}

TEST(TokenizerByteLevel, ConstructorValidates) {
  auto rejects = [](ByteLevelVocab v, const std::string &what) {
    try {
      Tokenizer tok(v.pieces, v.bpe);
      ADD_FAILURE() << "accepted; wanted: " << what;
    } catch (const loom::Error &e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos)
          << e.what();
    }
  };
  const auto pre = loom::PreTokenizer::Gpt2;
  ByteLevelVocab v = byteLevelVocab(pre);
  v.pieces['A'] = "AA";
  rejects(v, "no piece is the byte 0x41");
  v = byteLevelVocab(pre);
  v.bpe.merges.emplace_back(3, 9999);
  rejects(v, "merge 5 (3, 9999) names an id out of range");
  v = byteLevelVocab(pre);
  v.bpe.merges.emplace_back('q', 'q');
  rejects(v, "merge 5 (113, 113) does not make a piece");
  v = byteLevelVocab(pre);
  v.bpe.control.push_back(-1);
  rejects(v, "control id -1 out of range");
  v = byteLevelVocab(pre);
  v.bpe.eos_id = 5000;
  rejects(v, "EOS id 5000 out of range");
  v = byteLevelVocab(pre);
  v.bpe.bos_id = -1;
  v.bpe.add_bos = true;
  rejects(v, "add_bos without a BOS id");
  // Negative ids mean "none".
  v = byteLevelVocab(pre);
  v.bpe.bos_id = -3;
  v.bpe.eos_id = -1;
  Tokenizer none(v.pieces, v.bpe);
  EXPECT_EQ(none.encode("ab", true, true), Ids({v.id("ab")}));
}

// ---------------------------------------------------------------------------
// Special tokens picked out of text (chat prompts): SentencePiece-style
// vocabularies name them, each text fragment gets its dummy prefix, and
// lstrip / rstrip tokens drop the whitespace beside them.

TEST(TokenizerSpecial, SentencePiecePicksOutItsSpecialTokens) {
  const Tokenizer plain =
      makeVocab({{" ", 1}, {"<|user|>", 0}, {"<|end|>", 0}});
  const int32_t space = 259, user = 260, end = 261;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  for (int32_t i = 0; i < plain.vocabSize(); ++i) {
    pieces.push_back(plain.piece(i));
    scores.push_back(plain.score(i));
  }
  loom::SpecialTokens special;
  special.ids = {user, end};
  const Tokenizer tok(pieces, scores, plain.maxTokenLength(), special);
  auto bytes = [](const std::string &s) {
    Ids ids;
    for (unsigned char c : s)
      ids.push_back(3 + c);
    return ids;
  };
  // Without `special` the text is text; with it, each fragment is encoded
  // as a text of its own (dummy prefix " " first), BOS before all.
  EXPECT_EQ(tok.encode("<|user|>", false, false),
            plain.encode("<|user|>", false, false));
  Ids want = {1, user, space};
  for (int32_t id : bytes("\nhi"))
    want.push_back(id);
  want.push_back(end);
  EXPECT_EQ(tok.encode("<|user|>\nhi<|end|>", true, false, true), want);
  EXPECT_EQ(tok.encode("<|end|><|end|>", false, true, true),
            Ids({end, end, 2}));
  // A broken special text is text.
  EXPECT_EQ(tok.encode("<|end|", false, false, true),
            plain.encode("<|end|", false, false));

  special.rstrip = {user};
  special.lstrip = {end};
  const Tokenizer strips(pieces, scores, plain.maxTokenLength(), special);
  want = {user, space};
  for (int32_t id : bytes("hi"))
    want.push_back(id);
  want.push_back(end);
  EXPECT_EQ(strips.encode("<|user|>\n \thi \n<|end|>", false, false, true),
            want);
  // Only the whitespace next to the token goes.
  want = {space, 3 + 'a', space, user};
  EXPECT_EQ(strips.encode("a <|user|>", false, false, true), want);

  // Metaspace "first": only text at the start gets the dummy prefix.
  special = {};
  special.ids = {user, end};
  special.prefix_after_special = false;
  const Tokenizer first(pieces, scores, plain.maxTokenLength(), special);
  EXPECT_EQ(first.encode("a<|user|>b<|end|> c", false, false, true),
            Ids({space, 3 + 'a', user, 3 + 'b', end, space, 3 + 'c'}));
  EXPECT_EQ(first.encode("<|user|>b", true, false, true),
            Ids({1, user, 3 + 'b'}));
}

TEST(TokenizerSpecial, ConstructorsValidateSpecialTokens) {
  const Tokenizer plain = makeVocab({{"<|user|>", 0}});
  std::vector<std::string> pieces;
  std::vector<float> scores;
  for (int32_t i = 0; i < plain.vocabSize(); ++i) {
    pieces.push_back(plain.piece(i));
    scores.push_back(plain.score(i));
  }
  auto rejects = [&](loom::SpecialTokens special, const std::string &what) {
    try {
      Tokenizer tok(pieces, scores, plain.maxTokenLength(), special);
      ADD_FAILURE() << "accepted; wanted: " << what;
    } catch (const loom::Error &e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos)
          << e.what();
    }
  };
  rejects({{259, 900}, {}, {}}, "special id 900 out of range");
  rejects({{259}, {}, {258}}, "rstrip id 258 is not a special token");
  rejects({{}, {-1}, {}}, "lstrip id -1 is not a special token");
  ByteLevelVocab v = byteLevelVocab(loom::PreTokenizer::Gpt2);
  try {
    Tokenizer tok(v.pieces, v.bpe, {{1}, {}, {}});
    ADD_FAILURE() << "byte-level vocabulary took special ids";
  } catch (const loom::Error &e) {
    EXPECT_NE(std::string(e.what()).find("control ids"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// Malformed tokenizer.bin bytes.

TEST(TokenizerLoad, RejectsTruncatedFiles) {
  const std::string bytes = readBytes(bundledTok512Path());
  ASSERT_EQ(bytes.size(), 6227u);
  expectLoadError("", 512,
                  "truncated header (need 4 bytes at offset 0, "
                  "file has 0)");
  expectLoadError(bytes.substr(0, 3), 512, "truncated header");
  // Right after the header: token 0's score/len are missing.
  expectLoadError(bytes.substr(0, 4), 512,
                  "truncated at token 0 (need 8 bytes at offset 4, file has "
                  "4)");
  // Inside token 0's bytes ("<unk>" is 5 bytes at offset 12).
  expectLoadError(bytes.substr(0, 14), 512,
                  "truncated at token 0 (need 5 bytes at offset 12, file has "
                  "14)");
  expectLoadError(bytes.substr(0, 17), 512,
                  "truncated at token 1 (need 8 bytes at offset 17, file has "
                  "17)");
  expectLoadError(bytes.substr(0, bytes.size() / 2), 512, "truncated at token");
  expectLoadError(bytes.substr(0, bytes.size() - 1), 512,
                  "truncated at token 511");
  // The vocab size is not in the file: too large reads past the end.
  expectLoadError(bytes, 513, "truncated at token 512");
}

TEST(TokenizerLoad, RejectsBadLengthsAndTrailingBytes) {
  const std::string good = readBytes(bundledTok512Path());
  ASSERT_NO_THROW(Tokenizer::fromLlama2cBytes(good.data(), good.size(), 512));

  std::string negative = good;
  putI32(negative, 8, -1); // token 0's len
  expectLoadError(negative, 512, "token 0 has negative length -1");

  std::string huge = good;
  putI32(huge, 8, 0x7FFFFFFF);
  expectLoadError(huge, 512, "longer than max_token_length 7");

  std::string small_max = good;
  putI32(small_max, 0, 5); // EOS, "\n</s>\n", is 6 bytes
  expectLoadError(small_max, 512,
                  "token 2 is 6 bytes, longer than max_token_length 5");

  std::string negative_max = good;
  putI32(negative_max, 0, -7);
  expectLoadError(negative_max, 512, "negative max_token_length -7");

  expectLoadError(good + "xyz", 512, "3 trailing bytes after token 511");
  expectLoadError(good, 511, "trailing bytes after token 510");
  expectLoadError(good, 0, "vocab_size must be positive");
  expectLoadError(good, -512, "vocab_size must be positive");
}

// ---------------------------------------------------------------------------
// ../shared golden ids: tok512.bin and the 32000-token tokenizer.bin.

struct GoldenTokenizer {
  const char *name;
  int64_t vocab;
};
const GoldenTokenizer kGoldenTokenizers[] = {{"tokenizer.bin", 32000},
                                             {"tok512.bin", 512}};

std::string hexOf(const std::string &bytes) {
  static const char *const kDigits = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex += kDigits[c >> 4];
    hex += kDigits[c & 15];
  }
  return hex;
}

TEST(TokenizerGolden, EncodeMatchesRunC) {
  LOOM_REQUIRE_SHARED("golden/tokenizer_encode.json");
  LOOM_REQUIRE_SHARED("models/tokenizer.bin");
  LOOM_REQUIRE_SHARED("models/tok512.bin");
  Json golden =
      Json::parseFile(loom::test::sharedPath("golden/tokenizer_encode.json"));
  for (const GoldenTokenizer &g : kGoldenTokenizers) {
    SCOPED_TRACE(g.name);
    const Json &entry = golden["tokenizers"][g.name];
    ASSERT_EQ(entry["vocab_size"].asInt(), g.vocab);
    Tokenizer tok = loadTokenizer(
        loom::test::sharedPath(std::string("models/") + g.name), g.vocab);
    EXPECT_EQ(tok.maxTokenLength(),
              static_cast<uint32_t>(entry["max_token_length"].asInt()));
    const Json &cases = entry["cases"];
    // Guards against a silently shortened golden file.
    ASSERT_EQ(cases.size(), 21u);
    for (size_t i = 0; i < cases.size(); ++i) {
      const std::string &text = cases[i]["text"].asString();
      // The hex field proves the JSON reader decoded the \u escapes right.
      ASSERT_EQ(hexOf(text), cases[i]["text_utf8_hex"].asString())
          << "case " << i;
      Ids expected;
      for (int64_t id : cases[i]["ids"].asIntVector())
        expected.push_back(static_cast<int32_t>(id));
      EXPECT_EQ(tok.encode(text, true, false), expected)
          << "case " << i << " text \"" << text << "\"";
      const Json &pieces = cases[i]["pieces"];
      ASSERT_EQ(pieces.size(), expected.size());
      for (size_t k = 0; k < expected.size(); ++k)
        EXPECT_EQ(tok.piece(expected[k]), pieces[k].asString());
    }
  }
}

TEST(TokenizerGolden, BundledTok512IsTheSharedFile) {
  LOOM_REQUIRE_SHARED("models/tok512.bin");
  EXPECT_EQ(readBytes(bundledTok512Path()),
            readBytes(loom::test::sharedPath("models/tok512.bin")));
}

TEST(TokenizerGolden, Vocab32000RoundTripsAndMatchesReference) {
  LOOM_REQUIRE_SHARED("models/tokenizer.bin");
  Tokenizer tok =
      loadTokenizer(loom::test::sharedPath("models/tokenizer.bin"), 32000);
  EXPECT_EQ(tok.piece(29871), " ");
  EXPECT_EQ(tok.piece(259), "  ");
  for (const char *text : kAsciiTexts)
    EXPECT_EQ(decodeAll(tok, tok.encode(text, true, false)), text)
        << "text: \"" << text << "\"";
  // "ï" is a piece, but with a stray continuation byte the 3-byte group is
  // not, so all three bytes fall back.
  EXPECT_EQ(tok.encode("\xC3\xAF", true, false), Ids({1, 29871, 30085}));
  EXPECT_EQ(tok.encode("\xC3\xAF\x80", true, false),
            Ids({1, 29871, 198, 178, 131}));
  std::mt19937 rng(5678);
  for (int trial = 0; trial < 60; ++trial) {
    std::string text = randomText(rng, 1 + trial % 40);
    ASSERT_EQ(tok.encode(text, true, false), referenceEncode(tok, text))
        << "trial " << trial;
  }
  std::string prompt = randomText(rng, 20000);
  auto start = std::chrono::steady_clock::now();
  Ids ids = tok.encode(prompt, true, false);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  EXPECT_GT(ids.size(), 1000u);
  EXPECT_LT(seconds, 5.0) << ids.size() << " tokens";
}

// ---------------------------------------------------------------------------
// The JSON reader (test/unit/support/json.h).

TEST(TestJson, ParsesValues) {
  Json j = Json::parse(R"( {"a": [1, -2.5, 3e2, true, false, null],
      "s": "x\"\\\/\b\f\n\r\tq", "big": 9007199254740993,
      "o": {"k": {}}, "e": [] } )");
  ASSERT_TRUE(j.isObject());
  EXPECT_EQ(j.size(), 5u);
  EXPECT_EQ(j["a"].size(), 6u);
  EXPECT_EQ(j["a"][0].asInt(), 1);
  EXPECT_DOUBLE_EQ(j["a"][1].asDouble(), -2.5);
  EXPECT_EQ(j["a"][2].asInt(), 300);
  EXPECT_TRUE(j["a"][3].asBool());
  EXPECT_FALSE(j["a"][4].asBool());
  EXPECT_TRUE(j["a"][5].isNull());
  EXPECT_EQ(j["s"].asString(), "x\"\\/\b\f\n\r\tq");
  // Integer literals keep their exact value beyond double precision.
  EXPECT_EQ(j["big"].asInt(), 9007199254740993);
  EXPECT_TRUE(j["o"]["k"].isObject());
  EXPECT_EQ(j["e"].size(), 0u);
  EXPECT_TRUE(j.contains("o"));
  EXPECT_FALSE(j.contains("missing"));
  EXPECT_EQ(j.keys(), std::vector<std::string>({"a", "s", "big", "o", "e"}));
  EXPECT_EQ(Json::parse("[1, 2.5, -3]").asDoubleVector(),
            std::vector<double>({1.0, 2.5, -3.0}));
  EXPECT_EQ(Json::parse("[1, 2, -3]").asIntVector(),
            std::vector<int64_t>({1, 2, -3}));
  EXPECT_THROW(j["a"].asIntVector(), std::runtime_error);
}

TEST(TestJson, DecodesUnicodeEscapes) {
  Json j = Json::parse(R"(["\u0041\u00e9\u4f60\ud83e\udd99", "\u00A0"])");
  EXPECT_EQ(j[0].asString(), "A\xC3\xA9\xE4\xBD\xA0\xF0\x9F\xA6\x99");
  EXPECT_EQ(j[1].asString(), "\xC2\xA0");
  // Raw UTF-8 passes through unchanged.
  EXPECT_EQ(Json::parse("\"\xE4\xBD\xA0\"").asString(), "\xE4\xBD\xA0");
}

TEST(TestJson, RejectsMalformedInput) {
  const char *const bad[] = {"",
                             "{",
                             "[1,]",
                             "[1 2]",
                             "{\"a\" 1}",
                             "{\"a\":}",
                             "{a:1}",
                             "\"abc",
                             "\"\\x\"",
                             "\"\\u12\"",
                             "\"\\ud83e\"",
                             "\"\\udd99\"",
                             "01",
                             "1.",
                             "-",
                             ".5",
                             "+1",
                             "1e",
                             "tru",
                             "nul",
                             "[1] 2",
                             "\"a\nb\"",
                             "NaN",
                             "Infinity",
                             "1e999",
                             "{\"k\":1,\"k\":2}"};
  for (const char *text : bad)
    EXPECT_THROW(Json::parse(text), std::runtime_error) << "input: " << text;
  std::string deep(10000, '[');
  EXPECT_THROW(Json::parse(deep), std::runtime_error);
  try {
    Json::parse("[1,\n  x]");
    ADD_FAILURE() << "accepted";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("line 2, column 3"), std::string::npos)
        << e.what();
  }
}

TEST(TestJson, AccessorsCheckTypes) {
  Json j = Json::parse(R"({"n": 1.5, "s": "x", "a": [1]})");
  EXPECT_THROW(j["n"].asInt(), std::runtime_error);
  EXPECT_THROW(j["s"].asDouble(), std::runtime_error);
  EXPECT_THROW(j["a"][1], std::runtime_error);
  EXPECT_THROW(j["missing"], std::runtime_error);
  EXPECT_THROW(j["a"]["k"], std::runtime_error);
  EXPECT_THROW(j["n"].size(), std::runtime_error);
  EXPECT_DOUBLE_EQ(Json::parse("1e-400").asDouble(), 0.0);
  EXPECT_THROW(Json::parseFile("/nonexistent/loom.json"), std::runtime_error);
}

} // namespace
