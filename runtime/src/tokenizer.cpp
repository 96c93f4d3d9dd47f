// Byte-pair tokenizer compatible with llama2.c's run.c (encode, decode and
// safe_printf). The merge loop uses a priority queue over a linked list of
// symbols instead of run.c's quadratic rescan; it picks the same pair at every
// step (highest score, leftmost on ties), so the ids are identical.
#include "loom/tokenizer.h"

#include "loom/error.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <queue>
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

} // namespace

Tokenizer::Tokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                     uint32_t max_token_length)
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

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool bos,
                                       bool eos) const {
  // Symbols form a doubly linked list; a merge keeps the left node and kills
  // the right one, so node indices stay in text order and "leftmost" is
  // simply "smallest left index". A version per node lets stale queue
  // entries be recognised after either side changed.
  struct Node {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t version;
    bool alive;
  };
  std::vector<Node> nodes;
  nodes.reserve(text.size() + 2);
  auto append = [&](int32_t id) {
    auto index = static_cast<int32_t>(nodes.size());
    nodes.push_back({id, index - 1, -1, 0, true});
    if (index > 0)
      nodes[index - 1].next = index;
  };

  // run.c keeps BOS in the merge scan (it never merges with these vocabs,
  // but a vocabulary could make it), so it goes into the list too.
  if (bos)
    append(kBosId);
  if (!text.empty()) {
    // The SentencePiece dummy prefix. A vocabulary without a " " piece gets
    // the byte fallback, the same rule as for any other character.
    auto space = lookup_.find(" ");
    append(space != lookup_.end() ? space->second : kByteFallbackBase + ' ');
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
      append(it->second);
    } else {
      for (size_t k = i; k < end; ++k)
        append(kByteFallbackBase +
               static_cast<int32_t>(static_cast<unsigned char>(text[k])));
    }
    i = end;
  }

  struct Candidate {
    float score;
    int32_t left;
    int32_t right;
    int32_t merged;
    uint32_t left_version;
    uint32_t right_version;
  };
  // std::priority_queue pops the "largest": highest score, then the smallest
  // left index so that equal scores resolve leftmost, as run.c's strict '>'
  // scan from the left does.
  auto lower = [](const Candidate &a, const Candidate &b) {
    if (a.score != b.score)
      return a.score < b.score;
    return a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> queue(
      lower);

  std::string pair;
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0)
      return;
    const std::string &a = pieces_[nodes[left].id];
    const std::string &b = pieces_[nodes[right].id];
    // No piece is longer than max_token_length (checked at construction), so
    // longer concatenations cannot match and need no hashing.
    if (a.size() + b.size() > max_token_length_)
      return;
    pair.assign(a);
    pair.append(b);
    auto it = lookup_.find(pair);
    if (it == lookup_.end())
      return;
    float score = scores_[it->second];
    if (!(score > kMergeFloor))
      return;
    queue.push({score, left, right, it->second, nodes[left].version,
                nodes[right].version});
  };

  for (size_t i = 0; i + 1 < nodes.size(); ++i)
    consider(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));

  while (!queue.empty()) {
    Candidate c = queue.top();
    queue.pop();
    Node &left = nodes[c.left];
    Node &right = nodes[c.right];
    if (!left.alive || !right.alive || left.next != c.right ||
        left.version != c.left_version || right.version != c.right_version)
      continue;
    left.id = c.merged;
    ++left.version;
    right.alive = false;
    ++right.version;
    left.next = right.next;
    if (right.next >= 0)
      nodes[right.next].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }

  std::vector<int32_t> ids;
  ids.reserve(nodes.size() + 1);
  for (int32_t i = nodes.empty() ? -1 : 0; i >= 0; i = nodes[i].next)
    ids.push_back(nodes[i].id);
  if (eos)
    ids.push_back(kEosId);
  return ids;
}

std::string Tokenizer::decode(int32_t prev, int32_t token) const {
  if (token < 0 || token >= vocabSize())
    throw Error("tokenizer: token id " + std::to_string(token) +
                " out of range [0, " + std::to_string(vocabSize()) + ")");
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
