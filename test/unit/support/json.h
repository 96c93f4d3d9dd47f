// A small, strict, header-only JSON reader for the tests' golden files.
//
// Values are immutable trees: parse once, then navigate with operator[] and
// the as*() accessors, which throw std::runtime_error on a type mismatch or a
// missing key so a broken golden file fails the test loudly instead of
// reading as zero. Strings are UTF-8 (\uXXXX escapes, surrogate pairs
// included, are converted); numbers are doubles, and integer literals also
// keep their exact int64 value for asInt().
#ifndef LOOM_TEST_SUPPORT_JSON_H
#define LOOM_TEST_SUPPORT_JSON_H

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace loom::test {

class Json {
public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Json() = default;

  // Parses a whole document; anything but whitespace after the value is an
  // error. Messages give line and column.
  static Json parse(std::string_view text);
  // Reads and parses a file; errors name the path.
  static Json parseFile(const std::string &path);

  Type type() const { return type_; }
  bool isNull() const { return type_ == Type::Null; }
  bool isBool() const { return type_ == Type::Bool; }
  bool isNumber() const { return type_ == Type::Number; }
  bool isString() const { return type_ == Type::String; }
  bool isArray() const { return type_ == Type::Array; }
  bool isObject() const { return type_ == Type::Object; }

  bool asBool() const {
    expect(Type::Bool);
    return bool_;
  }
  double asDouble() const {
    expect(Type::Number);
    return number_;
  }
  // The exact value of an integer literal; a number with a fraction or
  // exponent is accepted only if it is integral and in range.
  int64_t asInt() const {
    expect(Type::Number);
    if (exact_int_)
      return int_;
    if (!std::isfinite(number_) || std::trunc(number_) != number_ ||
        number_ < -9223372036854775808.0 || number_ >= 9223372036854775808.0)
      throw std::runtime_error("json: " + std::to_string(number_) +
                               " is not an int64");
    return static_cast<int64_t>(number_);
  }
  const std::string &asString() const {
    expect(Type::String);
    return string_;
  }

  // Element count of an array or member count of an object.
  size_t size() const {
    if (type_ != Type::Array && type_ != Type::Object)
      throw std::runtime_error(std::string("json: size() of a ") +
                               typeName(type_));
    return items_.size();
  }

  const Json &operator[](size_t index) const {
    expect(Type::Array);
    if (index >= items_.size())
      throw std::runtime_error("json: index " + std::to_string(index) +
                               " out of range (array has " +
                               std::to_string(items_.size()) + ")");
    return items_[index];
  }
  const Json &operator[](std::string_view key) const {
    expect(Type::Object);
    const Json *value = find(key);
    if (!value)
      throw std::runtime_error("json: no key \"" + std::string(key) + "\"");
    return *value;
  }
  bool contains(std::string_view key) const {
    return type_ == Type::Object && find(key) != nullptr;
  }

  // Array elements, or object values in file order.
  const std::vector<Json> &items() const {
    if (type_ != Type::Array && type_ != Type::Object)
      throw std::runtime_error(std::string("json: items() of a ") +
                               typeName(type_));
    return items_;
  }
  // Object keys in file order (keys()[i] belongs to items()[i]).
  const std::vector<std::string> &keys() const {
    expect(Type::Object);
    return keys_;
  }

  // Conveniences for the common golden-file shapes: arrays of numbers.
  std::vector<int64_t> asIntVector() const {
    expect(Type::Array);
    std::vector<int64_t> out;
    out.reserve(items_.size());
    for (const Json &item : items_)
      out.push_back(item.asInt());
    return out;
  }
  std::vector<double> asDoubleVector() const {
    expect(Type::Array);
    std::vector<double> out;
    out.reserve(items_.size());
    for (const Json &item : items_)
      out.push_back(item.asDouble());
    return out;
  }

  static const char *typeName(Type type) {
    switch (type) {
    case Type::Null:
      return "null";
    case Type::Bool:
      return "bool";
    case Type::Number:
      return "number";
    case Type::String:
      return "string";
    case Type::Array:
      return "array";
    case Type::Object:
      return "object";
    }
    return "?";
  }

private:
  class Parser;

  void expect(Type type) const {
    if (type_ != type)
      throw std::runtime_error(std::string("json: expected ") + typeName(type) +
                               ", found " + typeName(type_));
  }

  const Json *find(std::string_view key) const {
    // by_key_ holds member indices sorted by key, so lookups stay
    // logarithmic in large objects.
    auto it = std::lower_bound(by_key_.begin(), by_key_.end(), key,
                               [this](uint32_t index, std::string_view k) {
                                 return keys_[index] < k;
                               });
    if (it == by_key_.end() || keys_[*it] != key)
      return nullptr;
    return &items_[*it];
  }

  Type type_ = Type::Null;
  bool bool_ = false;
  bool exact_int_ = false;
  double number_ = 0.0;
  int64_t int_ = 0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::string> keys_;
  std::vector<uint32_t> by_key_;
};

class Json::Parser {
public:
  explicit Parser(std::string_view text) : text_(text) {}

  Json document() {
    skipSpace();
    Json value = parseValue(0);
    skipSpace();
    if (pos_ != text_.size())
      fail("unexpected data after the top-level value");
    return value;
  }

private:
  // Deep enough for any real file, shallow enough that recursion cannot
  // overflow the stack on hostile input.
  static constexpr int kMaxDepth = 512;

  [[noreturn]] void fail(const std::string &what) const {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    throw std::runtime_error("json: " + what + " at line " +
                             std::to_string(line) + ", column " +
                             std::to_string(column));
  }

  bool atEnd() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  void skipSpace() {
    while (!atEnd() && (peek() == ' ' || peek() == '\t' || peek() == '\n' ||
                        peek() == '\r'))
      ++pos_;
  }

  void expectChar(char c) {
    if (atEnd() || peek() != c)
      fail(std::string("expected '") + c + "'");
    ++pos_;
  }

  void expectWord(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word)
      fail("invalid literal");
    pos_ += word.size();
  }

  Json parseValue(int depth) {
    if (depth > kMaxDepth)
      fail("nesting deeper than " + std::to_string(kMaxDepth));
    if (atEnd())
      fail("unexpected end of input");
    Json value;
    switch (peek()) {
    case '{':
      parseObject(value, depth);
      break;
    case '[':
      parseArray(value, depth);
      break;
    case '"':
      value.type_ = Type::String;
      value.string_ = parseString();
      break;
    case 't':
      expectWord("true");
      value.type_ = Type::Bool;
      value.bool_ = true;
      break;
    case 'f':
      expectWord("false");
      value.type_ = Type::Bool;
      break;
    case 'n':
      expectWord("null");
      break;
    default:
      parseNumber(value);
      break;
    }
    return value;
  }

  void parseObject(Json &value, int depth) {
    value.type_ = Type::Object;
    ++pos_; // '{'
    skipSpace();
    if (!atEnd() && peek() == '}') {
      ++pos_;
      return;
    }
    while (true) {
      skipSpace();
      if (atEnd() || peek() != '"')
        fail("expected a string key");
      value.keys_.push_back(parseString());
      skipSpace();
      expectChar(':');
      skipSpace();
      value.items_.push_back(parseValue(depth + 1));
      skipSpace();
      if (atEnd())
        fail("unterminated object");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        break;
      }
      fail("expected ',' or '}'");
    }
    std::vector<uint32_t> &order = value.by_key_;
    order.resize(value.keys_.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = static_cast<uint32_t>(i);
    const std::vector<std::string> &keys = value.keys_;
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return keys[a] < keys[b]; });
    // A repeated key would make lookups depend on which copy is found; a
    // golden file with one is broken, so say so.
    for (size_t i = 1; i < order.size(); ++i)
      if (keys[order[i]] == keys[order[i - 1]])
        fail("duplicate key \"" + keys[order[i]] + "\" in object");
  }

  void parseArray(Json &value, int depth) {
    value.type_ = Type::Array;
    ++pos_; // '['
    skipSpace();
    if (!atEnd() && peek() == ']') {
      ++pos_;
      return;
    }
    while (true) {
      skipSpace();
      value.items_.push_back(parseValue(depth + 1));
      skipSpace();
      if (atEnd())
        fail("unterminated array");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return;
      }
      fail("expected ',' or ']'");
    }
  }

  unsigned parseHex4() {
    if (text_.size() - pos_ < 4)
      fail("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_++];
      code <<= 4;
      if (c >= '0' && c <= '9')
        code |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        code |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        code |= static_cast<unsigned>(c - 'A' + 10);
      else
        fail("invalid hex digit in \\u escape");
    }
    return code;
  }

  static void appendUtf8(std::string &out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string parseString() {
    ++pos_; // opening quote
    std::string out;
    while (true) {
      // Copy the run up to the next quote, backslash or control character in
      // one go; golden files are mostly plain text.
      size_t start = pos_;
      while (!atEnd() && peek() != '"' && peek() != '\\' &&
             static_cast<unsigned char>(peek()) >= 0x20)
        ++pos_;
      out.append(text_.data() + start, pos_ - start);
      if (atEnd())
        fail("unterminated string");
      char c = peek();
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c != '\\')
        fail("unescaped control character in string");
      ++pos_;
      if (atEnd())
        fail("unterminated escape");
      char e = text_[pos_++];
      switch (e) {
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        unsigned cp = parseHex4();
        if (cp >= 0xDC00 && cp <= 0xDFFF)
          fail("unpaired low surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (text_.substr(pos_, 2) != "\\u")
            fail("high surrogate not followed by a \\u low surrogate");
          pos_ += 2;
          unsigned low = parseHex4();
          if (low < 0xDC00 || low > 0xDFFF)
            fail("high surrogate not followed by a low surrogate");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        appendUtf8(out, cp);
        break;
      }
      default:
        --pos_;
        fail(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  void parseNumber(Json &value) {
    // Validate the JSON grammar first: from_chars alone would also accept
    // "inf", "nan", leading zeros and a leading '+'.
    size_t start = pos_;
    bool integral = true;
    if (!atEnd() && peek() == '-')
      ++pos_;
    if (atEnd() || !isDigit(peek()))
      fail("invalid value");
    if (peek() == '0') {
      ++pos_;
      if (!atEnd() && isDigit(peek()))
        fail("leading zero in number");
    } else {
      while (!atEnd() && isDigit(peek()))
        ++pos_;
    }
    if (!atEnd() && peek() == '.') {
      integral = false;
      ++pos_;
      if (atEnd() || !isDigit(peek()))
        fail("expected a digit after '.'");
      while (!atEnd() && isDigit(peek()))
        ++pos_;
    }
    if (!atEnd() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++pos_;
      if (!atEnd() && (peek() == '+' || peek() == '-'))
        ++pos_;
      if (atEnd() || !isDigit(peek()))
        fail("expected a digit in exponent");
      while (!atEnd() && isDigit(peek()))
        ++pos_;
    }
    const char *first = text_.data() + start;
    const char *last = text_.data() + pos_;
    value.type_ = Type::Number;
    // from_chars is locale-independent, unlike strtod.
    auto [end, ec] = std::from_chars(first, last, value.number_);
    if (ec == std::errc::result_out_of_range) {
      // from_chars reports overflow and underflow alike and leaves the value
      // unset; strtod tells them apart (the text is already validated, and
      // JSON's '.' is what the "C" locale the tests run in expects).
      std::string copy(first, last);
      double v = std::strtod(copy.c_str(), nullptr);
      if (std::isinf(v))
        fail("number out of range");
      value.number_ = v;
    } else if (ec != std::errc() || end != last) {
      fail("invalid number");
    }
    if (integral) {
      int64_t exact = 0;
      auto [iend, iec] = std::from_chars(first, last, exact);
      if (iec == std::errc() && iend == last) {
        value.exact_int_ = true;
        value.int_ = exact;
      }
    }
  }

  static bool isDigit(char c) { return c >= '0' && c <= '9'; }

  std::string_view text_;
  size_t pos_ = 0;
};

inline Json Json::parse(std::string_view text) {
  return Parser(text).document();
}

inline Json Json::parseFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("json: cannot open " + path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad())
    throw std::runtime_error("json: error reading " + path);
  std::string text = buffer.str();
  try {
    return parse(text);
  } catch (const std::runtime_error &e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

} // namespace loom::test

#endif // LOOM_TEST_SUPPORT_JSON_H
