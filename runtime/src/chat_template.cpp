// The chat-template engine: a lexer, a parser and a tree-walking renderer for
// the part of Jinja (jinja2 3.x semantics, Python values) that chat templates
// use. docs/chat.md lists what is implemented; the rest is refused by name.
#include "loom/chat_template.h"

#include "loom/error.h"
#include "utf8.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <unordered_map>
#include <utility>

namespace loom {
namespace {

// Bounds on what an untrusted template may make the renderer do.
constexpr size_t kMaxOutput = size_t(16) << 20;     // bytes of rendered text
constexpr size_t kMaxValueBytes = size_t(16) << 20; // one string or list
constexpr int kMaxNesting = 200;      // parser recursion, JSON depth
constexpr int kMaxCallDepth = 64;     // macro calls inside macro calls
constexpr int64_t kMaxRange = 100000; // jinja2's sandbox MAX_RANGE
constexpr uint32_t kMaxValueDepth = 256; // lists in lists, namespaces in ...
constexpr int kMaxExprDepth = 256;       // an expression's syntax tree
// Work per render: statements and expressions evaluated, values compared,
// printed or sorted. A chat template needs thousands; this is seconds.
constexpr int64_t kMaxSteps = 10'000'000;

// The render in progress' step budget (per thread: renders are independent).
thread_local int64_t tlStepsLeft = kMaxSteps;

// Spends `n` steps of the budget; throws loom::Error when it runs out.
void spend(int64_t n = 1) {
  if ((tlStepsLeft -= n) < 0)
    throw Error("chat template: rendering takes more than " +
                std::to_string(kMaxSteps) +
                " steps (a loop or recursion that does not end soon)");
}

[[noreturn]] void fail(int line, const std::string &message) {
  throw Error("chat template line " + std::to_string(line) + ": " + message);
}

//===----------------------------------------------------------------------===//
// Values: Python's, as jinja2 sees them.
//===----------------------------------------------------------------------===//

struct Value;
struct DictData;
struct Function;
using List = std::vector<Value>;

struct Value {
  enum class Kind : uint8_t {
    Undefined,
    None,
    Bool,
    Int,
    BigInt, // an integer beyond int64, kept as its decimal text in s
    Float,
    String,
    List,
    Dict,
    Namespace,
    Function
  };
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  // String: the text. Undefined: what jinja2 would say on use ("'x' is
  // undefined", "'dict object' has no attribute 'y'").
  std::string s;
  bool tuple = false;             // a List that is a Python tuple
  uint32_t depth = 0;             // List: 1 + its items' deepest
  std::shared_ptr<List> list;     // List (tuples too)
  std::shared_ptr<DictData> dict; // Dict, Namespace
  std::shared_ptr<Function> fn;

  static Value undefined(std::string why) {
    Value v;
    v.s = std::move(why);
    return v;
  }
  static Value none() {
    Value v;
    v.kind = Kind::None;
    return v;
  }
  static Value boolean(bool b) {
    Value v;
    v.kind = Kind::Bool;
    v.b = b;
    return v;
  }
  static Value integer(int64_t i) {
    Value v;
    v.kind = Kind::Int;
    v.i = i;
    return v;
  }
  static Value real(double f) {
    Value v;
    v.kind = Kind::Float;
    v.f = f;
    return v;
  }
  static Value string(std::string s) {
    Value v;
    v.kind = Kind::String;
    v.s = std::move(s);
    return v;
  }
  static Value makeList(List items = {});
  static Value bigInt(std::string digits) {
    Value v;
    v.kind = Kind::BigInt;
    v.s = std::move(digits);
    return v;
  }
  static Value makeTuple(List items) {
    Value v = makeList(std::move(items));
    v.tuple = true;
    return v;
  }
  static Value makeDict();
  static Value makeNamespace();

  bool isUndefined() const { return kind == Kind::Undefined; }
  bool isString() const { return kind == Kind::String; }
  bool isNumber() const {
    return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool;
  }
  bool isMapping() const { return kind == Kind::Dict; }
};

bool valuesEqual(const Value &l, const Value &r);

uint32_t depthOf(const Value &v);

[[noreturn]] void tooDeep() {
  throw Error("chat template: a value nests more than " +
              std::to_string(kMaxValueDepth) + " deep (or contains itself)");
}

// A Python dict: insertion-ordered, keys compared as Python compares them
// (1, 1.0 and True are one key); string keys indexed.
struct DictData {
  std::vector<std::pair<Value, Value>> items;
  std::unordered_map<std::string, size_t> by_string;
  uint32_t depth = 1; // 1 + its values' deepest

  const Value *find(const Value &key) const {
    if (key.kind == Value::Kind::String)
      return find(std::string_view(key.s));
    for (const auto &[k, v] : items)
      if (k.kind != Value::Kind::String && valuesEqual(k, key))
        return &v;
    return nullptr;
  }
  const Value *find(std::string_view key) const {
    auto it = by_string.find(std::string(key));
    return it == by_string.end() ? nullptr : &items[it->second].second;
  }
  void set(Value key, Value value) {
    depth = std::max(depth, depthOf(value) + 1);
    if (depth > kMaxValueDepth)
      tooDeep();
    if (key.kind == Value::Kind::String) {
      auto [it, inserted] = by_string.try_emplace(key.s, items.size());
      if (!inserted) {
        items[it->second].second = std::move(value);
        return;
      }
    } else {
      for (auto &[k, v] : items)
        if (k.kind != Value::Kind::String && valuesEqual(k, key)) {
          v = std::move(value);
          return;
        }
    }
    items.emplace_back(std::move(key), std::move(value));
  }
  void set(const std::string &key, Value value) {
    set(Value::string(key), std::move(value));
  }
};

uint32_t depthOf(const Value &v) {
  if (v.kind == Value::Kind::List)
    return v.depth;
  if (v.kind == Value::Kind::Dict || v.kind == Value::Kind::Namespace)
    return v.dict->depth;
  return 0;
}

Value Value::makeList(List items) {
  Value v;
  v.kind = Kind::List;
  v.depth = 1;
  for (const Value &item : items)
    v.depth = std::max(v.depth, depthOf(item) + 1);
  if (v.depth > kMaxValueDepth)
    tooDeep();
  v.list = std::make_shared<List>(std::move(items));
  return v;
}

Value Value::makeDict() {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<DictData>();
  return v;
}

Value Value::makeNamespace() {
  Value v;
  v.kind = Kind::Namespace;
  v.dict = std::make_shared<DictData>();
  return v;
}

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;

  // The argument named `name` or at position `index` (or Undefined).
  Value get(size_t index, std::string_view name) const {
    for (const auto &[k, v] : kw)
      if (k == name)
        return v;
    return index < pos.size() ? pos[index] : Value();
  }
  bool has(size_t index, std::string_view name) const {
    for (const auto &[k, v] : kw)
      if (k == name)
        return true;
    return index < pos.size();
  }
};

class Renderer;
struct Function {
  std::string name;
  std::function<Value(Renderer &, CallArgs &, int line)> call;
};

Value makeFunction(std::string name,
                   std::function<Value(Renderer &, CallArgs &, int)> call) {
  Value v;
  v.kind = Value::Kind::Function;
  v.fn = std::make_shared<Function>(Function{std::move(name), std::move(call)});
  return v;
}

const char *typeName(const Value &v) {
  switch (v.kind) {
  case Value::Kind::Undefined:
    return "Undefined";
  case Value::Kind::None:
    return "NoneType";
  case Value::Kind::Bool:
    return "bool";
  case Value::Kind::Int:
  case Value::Kind::BigInt:
    return "int";
  case Value::Kind::Float:
    return "float";
  case Value::Kind::String:
    return "str";
  case Value::Kind::List:
    return "list";
  case Value::Kind::Dict:
    return "dict";
  case Value::Kind::Namespace:
    return "Namespace";
  case Value::Kind::Function:
    return "function";
  }
  return "value";
}

bool truthy(const Value &v) {
  switch (v.kind) {
  case Value::Kind::Undefined:
  case Value::Kind::None:
    return false;
  case Value::Kind::Bool:
    return v.b;
  case Value::Kind::Int:
    return v.i != 0;
  case Value::Kind::BigInt:
    return true;
  case Value::Kind::Float:
    return v.f != 0;
  case Value::Kind::String:
    return !v.s.empty();
  case Value::Kind::List:
    return !v.list->empty();
  case Value::Kind::Dict:
    return !v.dict->items.empty();
  case Value::Kind::Namespace:
  case Value::Kind::Function:
    return true;
  }
  return false;
}

double numberOf(const Value &v) {
  return v.kind == Value::Kind::Float  ? v.f
         : v.kind == Value::Kind::Bool ? double(v.b)
                                       : double(v.i);
}
int64_t integerOf(const Value &v) {
  return v.kind == Value::Kind::Bool ? int64_t(v.b) : v.i;
}

bool valuesEqual(const Value &l, const Value &r, uint32_t depth) {
  spend();
  if (depth > kMaxValueDepth)
    tooDeep();
  if (l.isNumber() && r.isNumber()) {
    if (l.kind == Value::Kind::Float || r.kind == Value::Kind::Float)
      return numberOf(l) == numberOf(r);
    return integerOf(l) == integerOf(r);
  }
  if (l.kind != r.kind || l.tuple != r.tuple)
    return false;
  switch (l.kind) {
  case Value::Kind::Undefined:
  case Value::Kind::None:
    return true;
  case Value::Kind::String:
  case Value::Kind::BigInt:
    return l.s == r.s;
  case Value::Kind::List:
    if (l.list->size() != r.list->size())
      return false;
    for (size_t k = 0; k < l.list->size(); ++k)
      if (!valuesEqual((*l.list)[k], (*r.list)[k], depth + 1))
        return false;
    return true;
  case Value::Kind::Dict:
  case Value::Kind::Namespace:
    if (l.dict == r.dict)
      return true;
    if (l.dict->items.size() != r.dict->items.size())
      return false;
    for (const auto &[k, v] : l.dict->items) {
      const Value *o = r.dict->find(k);
      if (!o || !valuesEqual(v, *o, depth + 1))
        return false;
    }
    return true;
  case Value::Kind::Function:
    return l.fn == r.fn;
  default:
    return false;
  }
}

bool valuesEqual(const Value &l, const Value &r) {
  return valuesEqual(l, r, 0);
}

//===----------------------------------------------------------------------===//
// UTF-8: Python indexes strings by code point.
//===----------------------------------------------------------------------===//

// Byte offsets of each code point of `s`, and s.size() at the end. A byte
// that does not start a valid sequence counts as one code point.
std::vector<size_t> codePoints(std::string_view s) {
  std::vector<size_t> at;
  at.reserve(s.size() + 1);
  size_t i = 0;
  while (i < s.size()) {
    at.push_back(i);
    unsigned char c = s[i];
    size_t n = c < 0x80         ? 1
               : (c >> 5) == 6  ? 2
               : (c >> 4) == 14 ? 3
               : (c >> 3) == 30 ? 4
                                : 1;
    if (i + n > s.size())
      n = 1;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) {
        n = 1;
        break;
      }
    i += n;
  }
  at.push_back(s.size());
  return at;
}

using utf8::append;

// Python's str.isspace() over ASCII and the C1/Latin-1 spaces.
bool isPySpace(std::string_view s, size_t at, size_t *len) {
  unsigned char c = s[at];
  *len = 1;
  if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F))
    return true;
  if (c == 0xC2 && at + 1 < s.size() &&
      (static_cast<unsigned char>(s[at + 1]) == 0x85 ||
       static_cast<unsigned char>(s[at + 1]) == 0xA0)) {
    *len = 2;
    return true;
  }
  if (c == 0xE3 && at + 2 < s.size() && s.compare(at, 3, "\xE3\x80\x80") == 0) {
    *len = 3; // U+3000 ideographic space
    return true;
  }
  if (c == 0xE2 && at + 2 < s.size()) {
    unsigned char c1 = s[at + 1], c2 = s[at + 2];
    if ((c1 == 0x80 &&
         (c2 <= 0x8A || c2 == 0xA8 || c2 == 0xA9 || c2 == 0xAF)) ||
        (c1 == 0x81 && c2 == 0x9F)) {
      *len = 3;
      return true;
    }
  }
  return false;
}

// The code point at s[at] (its bytes in *len); an invalid byte is itself.
uint32_t decodeAt(std::string_view s, size_t at, size_t *len) {
  unsigned char c = s[at];
  size_t n = c < 0x80         ? 1
             : (c >> 5) == 6  ? 2
             : (c >> 4) == 14 ? 3
             : (c >> 3) == 30 ? 4
                              : 1;
  if (at + n > s.size())
    n = 1;
  uint32_t cp = n == 1 ? c : c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    unsigned char b = s[at + k];
    if ((b & 0xC0) != 0x80) {
      *len = 1;
      return c;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  *len = n;
  return cp;
}

struct CaseMapping {
  uint32_t cp;
  uint32_t to[3];
};
constexpr CaseMapping kUpper[] = {
#define LOOM_UNICODE_UPPER
#include "unicode_case.inc"
#undef LOOM_UNICODE_UPPER
};
constexpr CaseMapping kLower[] = {
#define LOOM_UNICODE_LOWER
#include "unicode_case.inc"
#undef LOOM_UNICODE_LOWER
};
constexpr uint32_t kCased[][2] = {
#define LOOM_UNICODE_CASED
#include "unicode_case.inc"
#undef LOOM_UNICODE_CASED
};

// Appends the upper- or lower-case form of one code point (Unicode's full
// mapping, as Python's str.upper() / str.lower()).
void appendCase(std::string &out, std::string_view bytes, uint32_t cp,
                bool upper) {
  const CaseMapping *begin = upper ? std::begin(kUpper) : std::begin(kLower);
  const CaseMapping *end = upper ? std::end(kUpper) : std::end(kLower);
  const CaseMapping *it =
      std::lower_bound(begin, end, cp, [](const CaseMapping &m, uint32_t c) {
        return m.cp < c;
      });
  if (it == end || it->cp != cp) {
    out += bytes;
    return;
  }
  for (uint32_t to : it->to)
    if (to)
      append(out, to);
}

bool isCased(uint32_t cp) {
  const auto *it = std::upper_bound(
      std::begin(kCased), std::end(kCased), cp,
      [](uint32_t c, const uint32_t(&range)[2]) { return c < range[0]; });
  return it != std::begin(kCased) && cp <= (*(it - 1))[1];
}

// Python's str.upper() / str.lower().
std::string changeCase(std::string_view s, bool upper) {
  std::string out;
  out.reserve(s.size());
  for (size_t at = 0, len; at < s.size(); at += len) {
    uint32_t cp = decodeAt(s, at, &len);
    appendCase(out, s.substr(at, len), cp, upper);
  }
  return out;
}

// Python's str.title(): a cased code point after a cased one is lowered,
// after anything else raised.
std::string titleCase(std::string_view s) {
  std::string out;
  bool previousCased = false;
  for (size_t at = 0, len; at < s.size(); at += len) {
    uint32_t cp = decodeAt(s, at, &len);
    appendCase(out, s.substr(at, len), cp, !previousCased);
    previousCased = isCased(cp);
  }
  return out;
}

// Python's str.capitalize(): the first code point raised, the rest lowered.
std::string capitalizeText(std::string_view s) {
  std::string out;
  for (size_t at = 0, len; at < s.size(); at += len) {
    uint32_t cp = decodeAt(s, at, &len);
    appendCase(out, s.substr(at, len), cp, at == 0);
  }
  return out;
}

std::string stripWhitespace(std::string_view s, bool left, bool right) {
  size_t begin = 0, end = s.size(), len;
  if (left)
    while (begin < end && isPySpace(s, begin, &len))
      begin += len;
  if (right) {
    std::vector<size_t> at = codePoints(s.substr(begin));
    size_t k = at.size() - 1;
    while (k > 0 && isPySpace(s, begin + at[k - 1], &len) &&
           begin + at[k - 1] + len == begin + at[k])
      --k;
    end = begin + at[k];
  }
  return std::string(s.substr(begin, end - begin));
}

std::string stripChars(std::string_view s, std::string_view chars, bool left,
                       bool right) {
  std::vector<size_t> at = codePoints(s);
  std::vector<size_t> set = codePoints(chars);
  auto inSet = [&](size_t k) {
    std::string_view c = s.substr(at[k], at[k + 1] - at[k]);
    for (size_t j = 0; j + 1 < set.size(); ++j)
      if (chars.substr(set[j], set[j + 1] - set[j]) == c)
        return true;
    return false;
  };
  size_t b = 0, e = at.size() - 1;
  if (left)
    while (b < e && inSet(b))
      ++b;
  if (right)
    while (e > b && inSet(e - 1))
      --e;
  return std::string(s.substr(at[b], at[e] - at[b]));
}

//===----------------------------------------------------------------------===//
// Printing values as Python does: str(), repr(), json.dumps.
//===----------------------------------------------------------------------===//

std::string pyFloat(double d) {
  if (std::isnan(d))
    return "nan";
  if (std::isinf(d))
    return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto r =
      std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  bool negative = sci[0] == '-';
  if (negative)
    sci.erase(0, 1);
  size_t e = sci.find('e');
  int exponent = std::stoi(sci.substr(e + 1));
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      std::string whole =
          digits.substr(0, std::min<size_t>(digits.size(), exponent + 1));
      whole.append(exponent + 1 - whole.size(), '0');
      std::string frac = digits.size() > size_t(exponent + 1)
                             ? digits.substr(exponent + 1)
                             : "0";
      out += whole + "." + frac;
    } else {
      out += "0." + std::string(-exponent - 1, '0') + digits;
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1)
      out += "." + digits.substr(1);
    out += exponent < 0 ? "e-" : "e+";
    int a = std::abs(exponent);
    if (a < 10)
      out += '0';
    out += std::to_string(a);
  }
  return out;
}

void appendRepr(std::string &out, const Value &v, uint32_t depth);

[[noreturn]] void tooLong() {
  throw Error("chat template: a value grows past " +
              std::to_string(kMaxValueBytes >> 20) + " MiB");
}

// Appends Python's str(v); lists and dicts print their items' repr. Bounded
// in size and depth (a namespace may contain itself).
void appendStr(std::string &out, const Value &v, uint32_t depth = 0) {
  spend();
  if (depth > kMaxValueDepth)
    tooDeep();
  switch (v.kind) {
  case Value::Kind::Undefined:
    break;
  case Value::Kind::None:
    out += "None";
    break;
  case Value::Kind::Bool:
    out += v.b ? "True" : "False";
    break;
  case Value::Kind::Int:
    out += std::to_string(v.i);
    break;
  case Value::Kind::BigInt:
  case Value::Kind::String:
    out += v.s;
    break;
  case Value::Kind::Float:
    out += pyFloat(v.f);
    break;
  case Value::Kind::List:
    out += v.tuple ? "(" : "[";
    for (size_t k = 0; k < v.list->size(); ++k) {
      if (k)
        out += ", ";
      appendRepr(out, (*v.list)[k], depth + 1);
      if (out.size() > kMaxValueBytes)
        tooLong();
    }
    if (v.tuple && v.list->size() == 1)
      out += ",";
    out += v.tuple ? ")" : "]";
    break;
  case Value::Kind::Dict:
  case Value::Kind::Namespace: {
    out += v.kind == Value::Kind::Namespace ? "<Namespace {" : "{";
    bool first = true;
    for (const auto &[k, item] : v.dict->items) {
      if (!first)
        out += ", ";
      appendRepr(out, k, depth + 1);
      out += ": ";
      appendRepr(out, item, depth + 1);
      if (out.size() > kMaxValueBytes)
        tooLong();
      first = false;
    }
    out += v.kind == Value::Kind::Namespace ? "}>" : "}";
    break;
  }
  case Value::Kind::Function:
    out += "<function " + v.fn->name + ">";
    break;
  }
  if (out.size() > kMaxValueBytes)
    tooLong();
}

// Appends Python's repr(v).
void appendRepr(std::string &out, const Value &v, uint32_t depth) {
  if (!v.isString()) {
    appendStr(out, v, depth);
    return;
  }
  const std::string &s = v.s;
  char quote =
      s.find('\'') != std::string::npos && s.find('"') == std::string::npos
          ? '"'
          : '\'';
  out += quote;
  for (unsigned char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  if (out.size() > kMaxValueBytes)
    tooLong();
}

std::string pyStr(const Value &v) {
  if (v.kind == Value::Kind::String)
    return v.s;
  std::string out;
  appendStr(out, v);
  return out;
}

std::string pyRepr(const Value &v) {
  std::string out;
  appendRepr(out, v, 0);
  return out;
}

void jsonString(std::string &out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    default:
      if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += static_cast<char>(c);
      }
    }
  }
  out += '"';
}

// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sortKeys), as
// transformers' tojson filter calls it. indent < 0: none.
void toJson(std::string &out, const Value &v, int indent, bool sortKeys,
            int depth, int line) {
  spend();
  if (depth > kMaxNesting)
    fail(line, "tojson: value nested too deeply");
  if (out.size() > kMaxValueBytes)
    fail(line, "tojson: the JSON grows past " +
                   std::to_string(kMaxValueBytes >> 20) + " MiB");
  auto newline = [&](int level) {
    if (indent >= 0) {
      out += '\n';
      out.append(size_t(indent) * level, ' ');
    }
  };
  const char *comma = indent >= 0 ? "," : ", ";
  switch (v.kind) {
  case Value::Kind::None:
    out += "null";
    return;
  case Value::Kind::Bool:
    out += v.b ? "true" : "false";
    return;
  case Value::Kind::Int:
    out += std::to_string(v.i);
    return;
  case Value::Kind::BigInt:
    out += v.s;
    return;
  case Value::Kind::Float:
    out += std::isnan(v.f)   ? "NaN"
           : std::isinf(v.f) ? (v.f < 0 ? "-Infinity" : "Infinity")
                             : pyFloat(v.f);
    return;
  case Value::Kind::String:
    jsonString(out, v.s);
    return;
  case Value::Kind::List:
    if (v.list->empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t k = 0; k < v.list->size(); ++k) {
      if (k)
        out += comma;
      newline(depth + 1);
      toJson(out, (*v.list)[k], indent, sortKeys, depth + 1, line);
    }
    newline(depth);
    out += ']';
    return;
  case Value::Kind::Dict:
  case Value::Kind::Namespace: {
    if (v.dict->items.empty()) {
      out += "{}";
      return;
    }
    // json.dumps turns str, int, float, bool and None keys into strings.
    std::vector<std::pair<std::string, const Value *>> items;
    for (const auto &[k, item] : v.dict->items) {
      std::string key;
      switch (k.kind) {
      case Value::Kind::String:
      case Value::Kind::BigInt:
        key = k.s;
        break;
      case Value::Kind::Int:
        key = std::to_string(k.i);
        break;
      case Value::Kind::Float:
        key = pyFloat(k.f);
        break;
      case Value::Kind::Bool:
        key = k.b ? "true" : "false";
        break;
      case Value::Kind::None:
        key = "null";
        break;
      default:
        fail(line, std::string("tojson: keys must be str, int, float, bool "
                               "or None, not ") +
                       typeName(k));
      }
      items.emplace_back(std::move(key), &item);
    }
    if (sortKeys)
      std::stable_sort(items.begin(), items.end(),
                       [](auto &a, auto &b) { return a.first < b.first; });
    out += '{';
    for (size_t k = 0; k < items.size(); ++k) {
      if (k)
        out += comma;
      newline(depth + 1);
      jsonString(out, items[k].first);
      out += ": ";
      toJson(out, *items[k].second, indent, sortKeys, depth + 1, line);
    }
    newline(depth);
    out += '}';
    return;
  }
  case Value::Kind::Undefined:
    fail(line, "tojson: " + v.s);
  case Value::Kind::Function:
    fail(line, "tojson: a function is not JSON");
  }
}

//===----------------------------------------------------------------------===//
// JSON input (the conversation).
//===----------------------------------------------------------------------===//

class JsonReader {
public:
  explicit JsonReader(std::string_view text) : s_(text) {}

  Value document() {
    Value v = value(0);
    skipSpace();
    if (at_ != s_.size())
      error("unexpected text after the JSON value");
    return v;
  }

private:
  [[noreturn]] void error(const std::string &what) {
    throw Error("chat messages: malformed JSON at offset " +
                std::to_string(at_) + ": " + what);
  }
  void skipSpace() {
    while (at_ < s_.size() && (s_[at_] == ' ' || s_[at_] == '\n' ||
                               s_[at_] == '\r' || s_[at_] == '\t'))
      ++at_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(at_, word.size()) != word)
      return false;
    at_ += word.size();
    return true;
  }
  uint32_t hex4() {
    if (at_ + 4 > s_.size())
      error("truncated \\u escape");
    uint32_t cp = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[at_++];
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0)
        error("bad \\u escape");
      cp = cp * 16 + d;
    }
    return cp;
  }
  std::string string() {
    ++at_; // "
    std::string out;
    while (true) {
      if (at_ >= s_.size())
        error("unterminated string");
      char c = s_[at_++];
      if (c == '"')
        return out;
      if (static_cast<unsigned char>(c) < 0x20)
        error("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= s_.size())
        error("unterminated string");
      char e = s_[at_++];
      switch (e) {
      case '"':
      case '\\':
      case '/':
        out += e;
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
        uint32_t cp = hex4();
        if (cp >= 0xD800 && cp < 0xDC00 && s_.substr(at_, 2) == "\\u") {
          size_t save = at_;
          at_ += 2;
          uint32_t low = hex4();
          if (low >= 0xDC00 && low < 0xE000)
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          else
            at_ = save;
        }
        append(out, cp);
        break;
      }
      default:
        error(std::string("bad escape \\") + e);
      }
    }
  }
  Value number() {
    size_t begin = at_;
    bool real = false;
    if (s_[at_] == '-')
      ++at_;
    while (at_ < s_.size() &&
           (std::isdigit(static_cast<unsigned char>(s_[at_])) ||
            s_[at_] == '.' || s_[at_] == 'e' || s_[at_] == 'E' ||
            ((s_[at_] == '+' || s_[at_] == '-') &&
             (s_[at_ - 1] == 'e' || s_[at_ - 1] == 'E')))) {
      real |= s_[at_] == '.' || s_[at_] == 'e' || s_[at_] == 'E';
      ++at_;
    }
    std::string_view text = s_.substr(begin, at_ - begin);
    if (!real) {
      int64_t i = 0;
      auto r = std::from_chars(text.data(), text.data() + text.size(), i);
      if (r.ec == std::errc() && r.ptr == text.data() + text.size())
        return Value::integer(i);
      bool digits = text.size() > (text[0] == '-' ? 1u : 0u) &&
                    std::all_of(text.begin() + (text[0] == '-'), text.end(),
                                [](char c) { return c >= '0' && c <= '9'; });
      if (r.ec == std::errc::result_out_of_range && digits)
        return Value::bigInt(std::string(text));
    }
    double d = 0;
    auto r = std::from_chars(text.data(), text.data() + text.size(), d);
    if (r.ec != std::errc() || r.ptr != text.data() + text.size())
      error("bad number '" + std::string(text) + "'");
    return Value::real(d);
  }
  Value value(int depth) {
    if (depth > kMaxNesting)
      error("nested too deeply");
    skipSpace();
    if (at_ >= s_.size())
      error("unexpected end");
    char c = s_[at_];
    if (c == '"')
      return Value::string(string());
    if (c == '-' || (c >= '0' && c <= '9'))
      return number();
    if (literal("true"))
      return Value::boolean(true);
    if (literal("false"))
      return Value::boolean(false);
    if (literal("null"))
      return Value::none();
    if (c == '[') {
      ++at_;
      List items;
      skipSpace();
      if (at_ < s_.size() && s_[at_] == ']') {
        ++at_;
        return Value::makeList();
      }
      while (true) {
        items.push_back(value(depth + 1));
        skipSpace();
        if (at_ < s_.size() && s_[at_] == ',') {
          ++at_;
          continue;
        }
        if (at_ < s_.size() && s_[at_] == ']') {
          ++at_;
          return Value::makeList(std::move(items));
        }
        error("expected ',' or ']'");
      }
    }
    if (c == '{') {
      ++at_;
      Value dict = Value::makeDict();
      skipSpace();
      if (at_ < s_.size() && s_[at_] == '}') {
        ++at_;
        return dict;
      }
      while (true) {
        skipSpace();
        if (at_ >= s_.size() || s_[at_] != '"')
          error("expected a string key");
        std::string key = string();
        skipSpace();
        if (at_ >= s_.size() || s_[at_] != ':')
          error("expected ':'");
        ++at_;
        dict.dict->set(key, value(depth + 1));
        skipSpace();
        if (at_ < s_.size() && s_[at_] == ',') {
          ++at_;
          continue;
        }
        if (at_ < s_.size() && s_[at_] == '}') {
          ++at_;
          return dict;
        }
        error("expected ',' or '}'");
      }
    }
    error(std::string("unexpected character '") + c + "'");
  }

  std::string_view s_;
  size_t at_ = 0;
};

//===----------------------------------------------------------------------===//
// Lexer: text and tags, jinja2's whitespace control with trim_blocks and
// lstrip_blocks (as transformers configures it).
//===----------------------------------------------------------------------===//

enum class Tok {
  Text,
  VarBegin,
  VarEnd,
  BlockBegin,
  BlockEnd,
  Name,
  String,
  Int,
  Float,
  Op,
  End
};

struct Token {
  Tok kind;
  std::string text; // Text, Name, String, Op
  int64_t i = 0;
  double f = 0;
  int line = 1;
  bool big = false; // an Int beyond int64 (its digits in text)
};

class Lexer {
public:
  explicit Lexer(std::string_view source) {
    // jinja2 reads every line ending as "\n" and (keep_trailing_newline
    // off) drops one final newline.
    src_.reserve(source.size());
    for (size_t k = 0; k < source.size(); ++k) {
      if (source[k] == '\r') {
        src_ += '\n';
        if (k + 1 < source.size() && source[k + 1] == '\n')
          ++k;
      } else {
        src_ += source[k];
      }
    }
    if (!src_.empty() && src_.back() == '\n')
      src_.pop_back();
  }

  std::vector<Token> tokens() {
    size_t pos = 0;
    bool stripNext = false;   // the last tag ended with '-'
    bool trimNewline = false; // the last tag was a block or comment
    bool lineStarting = true; // what precedes the text ends a line
    while (true) {
      size_t start = pos;
      while ((start = src_.find('{', start)) != std::string::npos &&
             (start + 1 >= src_.size() ||
              (src_[start + 1] != '{' && src_[start + 1] != '%' &&
               src_[start + 1] != '#')))
        ++start;
      std::string text = src_.substr(
          pos, (start == std::string::npos ? src_.size() : start) - pos);
      int textLine = line_;
      line_ += std::count(text.begin(), text.end(), '\n');
      if (stripNext) {
        size_t k = 0;
        while (k < text.size() &&
               std::isspace(static_cast<unsigned char>(text[k])))
          ++k;
        text.erase(0, k);
      } else if (trimNewline && !text.empty() && text[0] == '\n') {
        text.erase(0, 1);
      }
      if (start == std::string::npos) {
        emitText(std::move(text), textLine);
        break;
      }
      char kind = src_[start + 1];
      char mod = start + 2 < src_.size() ? src_[start + 2] : '\0';
      if (mod == '-') {
        while (!text.empty() &&
               std::isspace(static_cast<unsigned char>(text.back())))
          text.pop_back();
      } else if ((kind == '%' || kind == '#') && mod != '+') {
        size_t lineBegin = text.rfind('\n');
        lineBegin = lineBegin == std::string::npos ? 0 : lineBegin + 1;
        if ((lineBegin > 0 || lineStarting) &&
            std::all_of(text.begin() + lineBegin, text.end(),
                        [](char c) { return c == ' ' || c == '\t'; }))
          text.erase(lineBegin);
      }
      emitText(std::move(text), textLine);
      pos = start + 2 + (mod == '-' || mod == '+' ? 1 : 0);
      if (kind == '#') {
        size_t end = src_.find("#}", pos);
        if (end == std::string::npos)
          fail(line_, "unterminated comment");
        line_ += std::count(src_.begin() + pos, src_.begin() + end, '\n');
        stripNext = end > pos && src_[end - 1] == '-';
        trimNewline = !(end > pos && src_[end - 1] == '+');
        pos = end + 2;
      } else {
        bool block = kind == '%';
        out_.push_back(
            {block ? Tok::BlockBegin : Tok::VarBegin, "", 0, 0, line_});
        pos = tagTokens(pos, block, &stripNext, &trimNewline);
        if (block)
          pos = rawBlock(pos, &stripNext, &trimNewline);
      }
      lineStarting = pos > 0 && (src_[pos - 1] == '\n' ||
                                 (trimNewline && !stripNext &&
                                  pos < src_.size() && src_[pos] == '\n'));
    }
    out_.push_back({Tok::End, "", 0, 0, line_});
    return std::move(out_);
  }

private:
  void emitText(std::string text, int line) {
    if (!text.empty())
      out_.push_back({Tok::Text, std::move(text), 0, 0, line});
  }

  // Tokens of a tag's inside, from `pos` to its closer; returns the offset
  // after the closer.
  size_t tagTokens(size_t pos, bool block, bool *stripNext, bool *trimNewline) {
    const char closeChar = block ? '%' : '}';
    std::string open; // unclosed brackets: no closer is recognised inside
    while (true) {
      while (pos < src_.size() &&
             std::isspace(static_cast<unsigned char>(src_[pos]))) {
        if (src_[pos] == '\n')
          ++line_;
        ++pos;
      }
      if (pos >= src_.size())
        fail(line_, block ? "unterminated '{%' tag" : "unterminated '{{'");
      auto closesAt = [&](size_t at) {
        return at + 1 < src_.size() && src_[at] == closeChar &&
               src_[at + 1] == '}';
      };
      char c = src_[pos];
      if (open.empty() && (c == '-' || c == '+') && closesAt(pos + 1)) {
        *stripNext = c == '-';
        *trimNewline = block && c != '+';
        out_.push_back({block ? Tok::BlockEnd : Tok::VarEnd, "", 0, 0, line_});
        return pos + 3;
      }
      if (open.empty() && closesAt(pos)) {
        *stripNext = false;
        *trimNewline = block;
        out_.push_back({block ? Tok::BlockEnd : Tok::VarEnd, "", 0, 0, line_});
        return pos + 2;
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t end = pos;
        while (end < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[end])) ||
                src_[end] == '_'))
          ++end;
        out_.push_back({Tok::Name, src_.substr(pos, end - pos), 0, 0, line_});
        pos = end;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = numberToken(pos);
      } else if (c == '\'' || c == '"') {
        pos = stringToken(pos);
      } else {
        static const char *const ops[] = {
            "**", "//", "==", "!=", "<=", ">=", "+", "-", "*",
            "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
            "]",  "{",  "}",  ",",  ".",  ":",  "|"};
        const char *match = nullptr;
        for (const char *op : ops)
          if (src_.compare(pos, std::strlen(op), op) == 0) {
            match = op;
            break;
          }
        if (!match)
          fail(line_, std::string("unexpected character '") + c + "'");
        if (*match == '(' || *match == '[' || *match == '{') {
          open += *match;
        } else if (*match == ')' || *match == ']' || *match == '}') {
          char want = *match == ')' ? '(' : *match == ']' ? '[' : '{';
          if (open.empty() || open.back() != want)
            fail(line_, std::string("unexpected '") + *match + "'");
          open.pop_back();
        }
        out_.push_back({Tok::Op, match, 0, 0, line_});
        pos += std::strlen(match);
      }
    }
  }

  size_t numberToken(size_t pos) {
    size_t end = pos;
    bool real = false;
    while (end < src_.size() &&
           (std::isdigit(static_cast<unsigned char>(src_[end])) ||
            src_[end] == '_'))
      ++end;
    if (end + 1 < src_.size() && src_[end] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
      real = true;
      ++end;
      while (end < src_.size() &&
             std::isdigit(static_cast<unsigned char>(src_[end])))
        ++end;
    }
    if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t e = end + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-'))
        ++e;
      if (e < src_.size() &&
          std::isdigit(static_cast<unsigned char>(src_[e]))) {
        real = true;
        end = e;
        while (end < src_.size() &&
               std::isdigit(static_cast<unsigned char>(src_[end])))
          ++end;
      }
    }
    std::string text = src_.substr(pos, end - pos);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    Token t{real ? Tok::Float : Tok::Int, text, 0, 0, line_};
    if (real) {
      auto r = std::from_chars(text.data(), text.data() + text.size(), t.f);
      if (r.ec != std::errc())
        fail(line_, "bad number '" + text + "'");
    } else {
      auto r = std::from_chars(text.data(), text.data() + text.size(), t.i);
      t.big = r.ec == std::errc::result_out_of_range;
      if (r.ec != std::errc() && !t.big)
        fail(line_, "bad integer '" + text + "'");
    }
    out_.push_back(std::move(t));
    return end;
  }

  size_t stringToken(size_t pos) {
    char quote = src_[pos];
    std::string out;
    size_t at = pos + 1;
    while (true) {
      if (at >= src_.size())
        fail(line_, "unterminated string");
      char c = src_[at++];
      if (c == quote)
        break;
      if (c == '\n')
        ++line_;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at >= src_.size())
        fail(line_, "unterminated string");
      char e = src_[at++];
      auto hex = [&](int digits) {
        uint32_t cp = 0;
        for (int k = 0; k < digits; ++k) {
          if (at >= src_.size() ||
              !std::isxdigit(static_cast<unsigned char>(src_[at])))
            fail(line_, "bad escape in a string");
          char h = src_[at++];
          cp = cp * 16 + (std::isdigit(static_cast<unsigned char>(h))
                              ? h - '0'
                              : (std::tolower(h) - 'a' + 10));
        }
        return cp;
      };
      switch (e) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case '0':
        out += '\0';
        break;
      case '\\':
      case '\'':
      case '"':
        out += e;
        break;
      case '\n':
        ++line_;
        break;
      case 'x':
        append(out, hex(2));
        break;
      case 'u':
        append(out, hex(4));
        break;
      case 'U': {
        const uint32_t cp = hex(8);
        if (cp > 0x10FFFF)
          fail(line_, "\\U escape beyond U+10FFFF");
        append(out, cp);
        break;
      }
      default: // Python keeps unknown escapes as written
        out += '\\';
        out += e;
      }
    }
    out_.push_back({Tok::String, std::move(out), 0, 0, line_});
    return at;
  }

  // After `{% raw %}`: the text up to `{% endraw %}` as it is.
  size_t rawBlock(size_t pos, bool *stripNext, bool *trimNewline) {
    size_t n = out_.size();
    if (n < 3 || out_[n - 3].kind != Tok::BlockBegin ||
        out_[n - 2].kind != Tok::Name || out_[n - 2].text != "raw" ||
        out_[n - 1].kind != Tok::BlockEnd)
      return pos;
    out_.resize(n - 3);
    size_t search = pos;
    while (true) {
      size_t open = src_.find("{%", search);
      if (open == std::string::npos)
        fail(line_, "'raw' without 'endraw'");
      size_t k = open + 2;
      bool strip = k < src_.size() && src_[k] == '-';
      if (k < src_.size() && (src_[k] == '-' || src_[k] == '+'))
        ++k;
      while (k < src_.size() && src_[k] == ' ')
        ++k;
      if (src_.compare(k, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      k += 6;
      while (k < src_.size() && src_[k] == ' ')
        ++k;
      bool closeStrip = k < src_.size() && src_[k] == '-';
      if (k < src_.size() && (src_[k] == '-' || src_[k] == '+'))
        ++k;
      if (src_.compare(k, 2, "%}") != 0)
        fail(line_, "malformed 'endraw' tag");
      std::string text = src_.substr(pos, open - pos);
      // trim_blocks does not apply after `{% raw %}` (jinja2's raw_begin).
      if (*stripNext) {
        size_t b = 0;
        while (b < text.size() &&
               std::isspace(static_cast<unsigned char>(text[b])))
          ++b;
        text.erase(0, b);
      }
      if (strip)
        while (!text.empty() &&
               std::isspace(static_cast<unsigned char>(text.back())))
          text.pop_back();
      int textLine = line_;
      line_ += std::count(src_.begin() + pos, src_.begin() + k, '\n');
      emitText(std::move(text), textLine);
      *stripNext = closeStrip;
      *trimNewline = true;
      return k + 2;
    }
  }

  std::string src_;
  std::vector<Token> out_;
  int line_ = 1;
};

//===----------------------------------------------------------------------===//
// Syntax tree and parser (jinja2's grammar and precedence).
//===----------------------------------------------------------------------===//

struct Expr {
  enum class K {
    Literal,
    Name,
    Attr,
    Item,
    Slice,
    Call,
    Filter,
    Test,
    Neg,
    Pos,
    Not,
    And,
    Or,
    Binary,
    Concat,
    Compare,
    Cond,
    ListLit,
    TupleLit,
    DictLit
  };
  K k;
  int line;
  Value literal;
  std::string name; // Name, Attr, Filter, Test, Binary operator
  std::vector<std::unique_ptr<Expr>> a;
  // Call, Filter, Test: the last kwnames.size() arguments are keyword ones.
  std::vector<std::string> kwnames;
  std::vector<std::string> ops; // Compare
  bool negated = false;         // Test
  int depth = 1;                // of the tree below (Parser::addChild)
};
using ExprPtr = std::unique_ptr<Expr>;

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class K {
    Text,
    Print,
    If,
    For,
    Set,
    SetBlock,
    Macro,
    Break,
    Continue,
    Scope
  };
  K k;
  int line;
  std::string text;                 // Text; Macro name
  ExprPtr expr;                     // Print; Set value; For sequence
  ExprPtr filter;                   // For ... if filter
  std::vector<std::string> targets; // For, Set, SetBlock
  std::string attr;                 // Set ns.attr
  std::vector<ExprPtr> conds;       // If
  std::vector<Body> bodies;         // If: per cond (+ else); For: body, else
  std::vector<std::string> params;  // Macro
  std::vector<ExprPtr> defaults;    // Macro (null: none)
};

const std::vector<std::string> &knownFilters() {
  static const std::vector<std::string> names = {
      "abs",     "capitalize", "count",     "d",       "default", "first",
      "float",   "indent",     "int",       "items",   "join",    "last",
      "length",  "list",       "lower",     "map",     "reject",  "rejectattr",
      "replace", "reverse",    "round",     "safe",    "select",  "selectattr",
      "sort",    "string",     "sum",       "title",   "tojson",  "trim",
      "unique",  "upper",      "wordcount", "e",       "escape",  "max",
      "min",     "batch",      "center",    "dictsort"};
  return names;
}

const std::vector<std::string> &knownTests() {
  static const std::vector<std::string> names = {
      "defined", "undefined",   "none",     "boolean",  "true",
      "false",   "number",      "integer",  "float",    "string",
      "mapping", "iterable",    "sequence", "callable", "odd",
      "even",    "divisibleby", "eq",       "equalto",  "==",
      "ne",      "!=",          "lt",       "<",        "lessthan",
      "le",      "<=",          "gt",       ">",        "greaterthan",
      "ge",      ">=",          "in",       "lower",    "upper",
      "sameas",  "filter",      "test",     "escaped"};
  return names;
}

class Parser {
public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Body document() {
    std::string end;
    Body body = parseBody({}, &end);
    return body;
  }

private:
  const Token &cur() const { return t_[p_]; }
  const Token &peek(size_t n = 1) const {
    return t_[std::min(p_ + n, t_.size() - 1)];
  }
  bool isOp(std::string_view op) const {
    return cur().kind == Tok::Op && cur().text == op;
  }
  bool isName(std::string_view name) const {
    return cur().kind == Tok::Name && cur().text == name;
  }
  void expectOp(std::string_view op) {
    if (!isOp(op))
      fail(cur().line,
           "expected '" + std::string(op) + "', found " + describe());
    ++p_;
  }
  std::string expectName() {
    if (cur().kind != Tok::Name)
      fail(cur().line, "expected a name, found " + describe());
    return t_[p_++].text;
  }
  void expectBlockEnd() {
    if (cur().kind != Tok::BlockEnd)
      fail(cur().line,
           "expected the end of the tag ('%}'), found " + describe());
    ++p_;
  }
  std::string describe() const {
    switch (cur().kind) {
    case Tok::Text:
      return "text";
    case Tok::VarBegin:
      return "'{{'";
    case Tok::VarEnd:
      return "'}}'";
    case Tok::BlockBegin:
      return "'{%'";
    case Tok::BlockEnd:
      return "'%}'";
    case Tok::Name:
      return "'" + cur().text + "'";
    case Tok::String:
      return "a string";
    case Tok::Int:
    case Tok::Float:
      return "a number";
    case Tok::Op:
      return "'" + cur().text + "'";
    case Tok::End:
      return "the end of the template";
    }
    return "a token";
  }

  struct DepthGuard {
    DepthGuard(int &depth, int line) : depth(depth) {
      if (++depth > kMaxNesting)
        fail(line, "nested too deeply");
    }
    ~DepthGuard() { --depth; }
    int &depth;
  };

  // Statements until a block tag whose keyword is in `ends` (consumed up
  // to and including the keyword; its name in *end).
  Body parseBody(const std::vector<std::string> &ends, std::string *end) {
    DepthGuard guard(depth_, cur().line);
    Body body;
    while (true) {
      const Token &tok = cur();
      if (tok.kind == Tok::End) {
        if (!ends.empty())
          fail(tok.line, "missing '{% " + ends.back() + " %}'");
        return body;
      }
      if (tok.kind == Tok::Text) {
        auto n = std::make_unique<Node>();
        n->k = Node::K::Text;
        n->line = tok.line;
        n->text = tok.text;
        body.push_back(std::move(n));
        ++p_;
        continue;
      }
      if (tok.kind == Tok::VarBegin) {
        ++p_;
        auto n = std::make_unique<Node>();
        n->k = Node::K::Print;
        n->line = tok.line;
        n->expr = parseTuple(true);
        if (cur().kind != Tok::VarEnd)
          fail(cur().line, "expected '}}', found " + describe());
        ++p_;
        body.push_back(std::move(n));
        continue;
      }
      if (tok.kind != Tok::BlockBegin)
        fail(tok.line, "unexpected " + describe());
      ++p_;
      if (cur().kind != Tok::Name)
        fail(cur().line, "expected a tag name, found " + describe());
      std::string keyword = cur().text;
      if (std::find(ends.begin(), ends.end(), keyword) != ends.end()) {
        ++p_;
        *end = keyword;
        return body;
      }
      body.push_back(statement(keyword));
    }
  }

  std::unique_ptr<Node> statement(const std::string &keyword) {
    int line = cur().line;
    ++p_;
    auto n = std::make_unique<Node>();
    n->line = line;
    if (keyword == "if") {
      n->k = Node::K::If;
      n->conds.push_back(parseTuple(false));
      expectBlockEnd();
      while (true) {
        std::string end;
        n->bodies.push_back(parseBody({"elif", "else", "endif"}, &end));
        if (end == "elif") {
          n->conds.push_back(parseTuple(false));
          expectBlockEnd();
          continue;
        }
        if (end == "else") {
          expectBlockEnd();
          n->bodies.push_back(parseBody({"endif"}, &end));
        }
        expectBlockEnd();
        return n;
      }
    }
    if (keyword == "for") {
      n->k = Node::K::For;
      n->targets.push_back(expectName());
      while (isOp(",")) {
        ++p_;
        n->targets.push_back(expectName());
      }
      if (!isName("in"))
        fail(cur().line, "expected 'in' in a for loop, found " + describe());
      ++p_;
      n->expr = parseTuple(false, /*condExpr=*/false);
      if (isName("if")) {
        ++p_;
        n->filter = parseExpression();
      }
      if (isName("recursive"))
        fail(cur().line, "recursive for loops are not supported");
      expectBlockEnd();
      std::string end;
      n->bodies.push_back(parseBody({"else", "endfor"}, &end));
      if (end == "else") {
        expectBlockEnd();
        n->bodies.push_back(parseBody({"endfor"}, &end));
      }
      expectBlockEnd();
      return n;
    }
    if (keyword == "set") {
      n->targets.push_back(expectName());
      if (isOp(".")) {
        ++p_;
        n->attr = expectName();
      } else {
        while (isOp(",")) {
          ++p_;
          n->targets.push_back(expectName());
        }
      }
      if (isOp("=")) {
        ++p_;
        n->k = Node::K::Set;
        n->expr = parseTuple(true);
        expectBlockEnd();
        return n;
      }
      if (!n->attr.empty() || n->targets.size() != 1)
        fail(line, "a block set ('{% set x %}...{% endset %}') takes one name");
      if (isOp("|"))
        fail(cur().line, "filters on a block set are not supported");
      n->k = Node::K::SetBlock;
      expectBlockEnd();
      std::string end;
      n->bodies.push_back(parseBody({"endset"}, &end));
      expectBlockEnd();
      return n;
    }
    if (keyword == "macro") {
      n->k = Node::K::Macro;
      n->text = expectName();
      expectOp("(");
      while (!isOp(")")) {
        n->params.push_back(expectName());
        if (isOp("=")) {
          ++p_;
          n->defaults.push_back(parseExpression());
        } else {
          n->defaults.push_back(nullptr);
        }
        if (!isOp(","))
          break;
        ++p_;
      }
      expectOp(")");
      expectBlockEnd();
      std::string end;
      n->bodies.push_back(parseBody({"endmacro"}, &end));
      if (cur().kind == Tok::Name)
        ++p_; // {% endmacro name %}
      expectBlockEnd();
      return n;
    }
    if (keyword == "break" || keyword == "continue") {
      n->k = keyword == "break" ? Node::K::Break : Node::K::Continue;
      expectBlockEnd();
      return n;
    }
    if (keyword == "generation") {
      // transformers' AssistantTracker: marks the assistant's text; the
      // rendered text is the body's.
      n->k = Node::K::Scope;
      expectBlockEnd();
      std::string end;
      n->bodies.push_back(parseBody({"endgeneration"}, &end));
      expectBlockEnd();
      return n;
    }
    static const std::vector<std::string> enders = {
        "elif",   "else",     "endif",         "endfor",
        "endset", "endmacro", "endgeneration", "endraw"};
    if (std::find(enders.begin(), enders.end(), keyword) != enders.end())
      fail(line, "unexpected '{% " + keyword + " %}'");
    fail(line, "unsupported tag '" + keyword + "'");
  }

  // Adds child `c` (may be null: an absent part) to `e`, keeping e's depth;
  // an expression tree deeper than kMaxExprDepth is refused (evaluating and
  // freeing it recurses).
  void addChild(Expr &e, ExprPtr c) {
    if (c) {
      e.depth = std::max(e.depth, c->depth + 1);
      if (e.depth > kMaxExprDepth)
        fail(e.line, "expression nested too deeply (over " +
                         std::to_string(kMaxExprDepth) + " levels)");
    }
    e.a.push_back(std::move(c));
  }

  ExprPtr node(Expr::K k, int line) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->line = line;
    return e;
  }

  // An expression, or several separated by commas (a tuple).
  ExprPtr parseTuple(bool allowEmpty, bool condExpr = true) {
    int line = cur().line;
    std::vector<ExprPtr> items;
    bool comma = false;
    while (true) {
      if (!items.empty()) {
        if (!isOp(","))
          break;
        ++p_;
        comma = true;
      }
      if (cur().kind == Tok::VarEnd || cur().kind == Tok::BlockEnd ||
          isOp(")") || isName("if") || isName("in"))
        break;
      items.push_back(condExpr ? parseExpression() : parseOr());
    }
    if (items.empty() && !allowEmpty)
      fail(line, "expected an expression, found " + describe());
    if (items.size() == 1 && !comma)
      return std::move(items[0]);
    if (items.empty())
      fail(line, "expected an expression, found " + describe());
    ExprPtr t = node(Expr::K::TupleLit, line);
    for (ExprPtr &item : items)
      addChild(*t, std::move(item));
    return t;
  }

  ExprPtr parseExpression() {
    DepthGuard guard(depth_, cur().line);
    ExprPtr e = parseOr();
    while (isName("if")) {
      int line = cur().line;
      ++p_;
      ExprPtr c = node(Expr::K::Cond, line);
      ExprPtr cond = parseOr();
      ExprPtr other;
      if (isName("else")) {
        ++p_;
        other = parseExpression();
      }
      addChild(*c, std::move(e));
      addChild(*c, std::move(cond));
      addChild(*c, std::move(other));
      e = std::move(c);
    }
    return e;
  }

  // operand (OP operand)*, left-associative, where `op()` says whether the
  // current token is one of the level's operators; `make(op, l, r)` builds.
  template <typename Op, typename Operand, typename Make>
  ExprPtr leftChain(Op op, Operand operand, Make make) {
    ExprPtr e = operand();
    while (op()) {
      const std::string text = cur().text;
      const int line = cur().line;
      ++p_;
      e = make(text, std::move(e), operand(), line);
    }
    return e;
  }

  ExprPtr logical(Expr::K k, ExprPtr l, ExprPtr r, int line) {
    ExprPtr o = node(k, line);
    addChild(*o, std::move(l));
    addChild(*o, std::move(r));
    return o;
  }

  ExprPtr parseOr() {
    return leftChain([&] { return isName("or"); }, [&] { return parseAnd(); },
                     [&](const std::string &, ExprPtr l, ExprPtr r, int line) {
                       return logical(Expr::K::Or, std::move(l), std::move(r),
                                      line);
                     });
  }

  ExprPtr parseAnd() {
    return leftChain([&] { return isName("and"); }, [&] { return parseNot(); },
                     [&](const std::string &, ExprPtr l, ExprPtr r, int line) {
                       return logical(Expr::K::And, std::move(l), std::move(r),
                                      line);
                     });
  }

  ExprPtr parseNot() {
    if (isName("not")) {
      DepthGuard guard(depth_, cur().line);
      ExprPtr n = node(Expr::K::Not, cur().line);
      ++p_;
      addChild(*n, parseNot());
      return n;
    }
    return parseCompare();
  }

  ExprPtr parseCompare() {
    int line = cur().line;
    ExprPtr first = parseMath1();
    ExprPtr c;
    while (true) {
      std::string op;
      if (cur().kind == Tok::Op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
           cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
        op = cur().text;
        ++p_;
      } else if (isName("in")) {
        op = "in";
        ++p_;
      } else if (isName("not") && peek().kind == Tok::Name &&
                 peek().text == "in") {
        op = "not in";
        p_ += 2;
      } else {
        break;
      }
      if (!c) {
        c = node(Expr::K::Compare, line);
        addChild(*c, std::move(first));
      }
      c->ops.push_back(op);
      addChild(*c, parseMath1());
    }
    return c ? std::move(c) : std::move(first);
  }

  ExprPtr binary(std::string op, ExprPtr l, ExprPtr r, int line) {
    ExprPtr b = node(Expr::K::Binary, line);
    b->name = std::move(op);
    addChild(*b, std::move(l));
    addChild(*b, std::move(r));
    return b;
  }

  auto binaryMaker() {
    return [this](const std::string &op, ExprPtr l, ExprPtr r, int line) {
      return binary(op, std::move(l), std::move(r), line);
    };
  }

  ExprPtr parseMath1() {
    return leftChain([&] { return isOp("+") || isOp("-"); },
                     [&] { return parseConcat(); }, binaryMaker());
  }

  ExprPtr parseConcat() {
    ExprPtr e = parseMath2();
    if (!isOp("~"))
      return e;
    ExprPtr c = node(Expr::K::Concat, cur().line);
    addChild(*c, std::move(e));
    while (isOp("~")) {
      ++p_;
      addChild(*c, parseMath2());
    }
    return c;
  }

  ExprPtr parseMath2() {
    return leftChain(
        [&] { return isOp("*") || isOp("/") || isOp("//") || isOp("%"); },
        [&] { return parsePow(); }, binaryMaker());
  }

  ExprPtr parsePow() {
    return leftChain([&] { return isOp("**"); },
                     [&] { return parseUnary(true); }, binaryMaker());
  }

  ExprPtr parseUnary(bool withFilter) {
    DepthGuard guard(depth_, cur().line);
    ExprPtr e;
    if (isOp("-") || isOp("+")) {
      e = node(isOp("-") ? Expr::K::Neg : Expr::K::Pos, cur().line);
      ++p_;
      addChild(*e, parseUnary(false));
    } else {
      e = parsePrimary();
    }
    e = parsePostfix(std::move(e));
    if (withFilter)
      e = parseFilterExpr(std::move(e));
    return e;
  }

  ExprPtr parsePrimary() {
    const Token &tok = cur();
    int line = tok.line;
    if (tok.kind == Tok::Name) {
      ++p_;
      ExprPtr e = node(Expr::K::Literal, line);
      if (tok.text == "true" || tok.text == "True") {
        e->literal = Value::boolean(true);
      } else if (tok.text == "false" || tok.text == "False") {
        e->literal = Value::boolean(false);
      } else if (tok.text == "none" || tok.text == "None") {
        e->literal = Value::none();
      } else {
        e->k = Expr::K::Name;
        e->name = tok.text;
      }
      return e;
    }
    if (tok.kind == Tok::String) {
      std::string s;
      while (cur().kind == Tok::String)
        s += t_[p_++].text;
      ExprPtr e = node(Expr::K::Literal, line);
      e->literal = Value::string(std::move(s));
      return e;
    }
    if (tok.kind == Tok::Int || tok.kind == Tok::Float) {
      ++p_;
      ExprPtr e = node(Expr::K::Literal, line);
      e->literal = tok.kind == Tok::Float ? Value::real(tok.f)
                   : tok.big              ? Value::bigInt(tok.text)
                                          : Value::integer(tok.i);
      return e;
    }
    if (isOp("(")) {
      ++p_;
      if (isOp(")")) {
        ++p_;
        return node(Expr::K::TupleLit, line);
      }
      ExprPtr e = parseTuple(false);
      expectOp(")");
      return e;
    }
    if (isOp("[")) {
      ++p_;
      ExprPtr e = node(Expr::K::ListLit, line);
      while (!isOp("]")) {
        addChild(*e, parseExpression());
        if (!isOp(","))
          break;
        ++p_;
      }
      expectOp("]");
      return e;
    }
    if (isOp("{")) {
      ++p_;
      ExprPtr e = node(Expr::K::DictLit, line);
      while (!isOp("}")) {
        addChild(*e, parseExpression());
        expectOp(":");
        addChild(*e, parseExpression());
        if (!isOp(","))
          break;
        ++p_;
      }
      expectOp("}");
      return e;
    }
    fail(line, "unexpected " + describe());
  }

  void parseArgs(Expr &e) {
    expectOp("(");
    std::vector<ExprPtr> kwargs;
    while (!isOp(")")) {
      if (isOp("*") || isOp("**"))
        fail(cur().line, "*args and **kwargs in calls are not supported");
      if (cur().kind == Tok::Name && peek().kind == Tok::Op &&
          peek().text == "=") {
        e.kwnames.push_back(cur().text);
        p_ += 2;
        kwargs.push_back(parseExpression());
      } else {
        if (!kwargs.empty())
          fail(cur().line, "a positional argument after keyword arguments");
        addChild(e, parseExpression());
      }
      if (!isOp(","))
        break;
      ++p_;
    }
    expectOp(")");
    for (ExprPtr &k : kwargs)
      addChild(e, std::move(k));
  }

  ExprPtr parsePostfix(ExprPtr e) {
    while (true) {
      int line = cur().line;
      if (isOp(".")) {
        ++p_;
        ExprPtr a;
        if (cur().kind == Tok::Name) {
          a = node(Expr::K::Attr, line);
          a->name = t_[p_++].text;
        } else if (cur().kind == Tok::Int) {
          a = node(Expr::K::Item, line);
          ExprPtr index = node(Expr::K::Literal, line);
          index->literal = Value::integer(t_[p_++].i);
          addChild(*a, std::move(e));
          addChild(*a, std::move(index));
          e = std::move(a);
          continue;
        } else {
          fail(line,
               "expected an attribute name after '.', found " + describe());
        }
        addChild(*a, std::move(e));
        e = std::move(a);
      } else if (isOp("[")) {
        ++p_;
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!isOp(":") && !isOp("]"))
            parts[k] = parseExpression();
          if (k < 2 && isOp(":")) {
            slice = true;
            ++p_;
          } else {
            break;
          }
        }
        expectOp("]");
        ExprPtr s = node(slice ? Expr::K::Slice : Expr::K::Item, line);
        addChild(*s, std::move(e));
        if (!slice && !parts[0])
          fail(line, "empty subscript");
        addChild(*s, std::move(parts[0]));
        if (slice) {
          addChild(*s, std::move(parts[1]));
          addChild(*s, std::move(parts[2]));
        }
        e = std::move(s);
      } else if (isOp("(")) {
        ExprPtr c = node(Expr::K::Call, line);
        addChild(*c, std::move(e));
        parseArgs(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr parseFilterExpr(ExprPtr e) {
    while (true) {
      int line = cur().line;
      if (isOp("|")) {
        ++p_;
        ExprPtr f = node(Expr::K::Filter, line);
        f->name = expectName();
        if (std::find(knownFilters().begin(), knownFilters().end(), f->name) ==
            knownFilters().end())
          fail(line, "unknown filter '" + f->name + "'");
        addChild(*f, std::move(e));
        if (isOp("("))
          parseArgs(*f);
        e = std::move(f);
      } else if (isName("is")) {
        ++p_;
        ExprPtr t = node(Expr::K::Test, line);
        if (isName("not")) {
          t->negated = true;
          ++p_;
        }
        if (cur().kind == Tok::Name) {
          t->name = t_[p_++].text;
        } else if (cur().kind == Tok::Op &&
                   (cur().text == "==" || cur().text == "!=" ||
                    cur().text == "<" || cur().text == ">" ||
                    cur().text == "<=" || cur().text == ">=")) {
          t->name = t_[p_++].text;
        } else {
          fail(line, "expected a test name after 'is', found " + describe());
        }
        if (std::find(knownTests().begin(), knownTests().end(), t->name) ==
            knownTests().end())
          fail(line, "unknown test '" + t->name + "'");
        addChild(*t, std::move(e));
        if (isOp("(")) {
          parseArgs(*t);
        } else if ((cur().kind == Tok::Name || cur().kind == Tok::String ||
                    cur().kind == Tok::Int || cur().kind == Tok::Float ||
                    isOp("[") || isOp("{")) &&
                   !isName("else") && !isName("or") && !isName("and") &&
                   !isName("if") && !isName("in") && !isName("not") &&
                   !isName("is")) {
          addChild(*t, parsePostfix(parsePrimary()));
        }
        e = std::move(t);
      } else if (isOp("(")) {
        ExprPtr c = node(Expr::K::Call, line);
        addChild(*c, std::move(e));
        parseArgs(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  int depth_ = 0;
};

//===----------------------------------------------------------------------===//
// Renderer.
//===----------------------------------------------------------------------===//

class Renderer {
public:
  explicit Renderer(std::shared_ptr<DictData> variables) {
    scopes_.emplace_back();
    for (auto &[k, v] : variables->items)
      scopes_[0][k.s] = v; // a JSON object's keys: strings
    installGlobals();
  }

  // Namespaces may hold each other (ns.x = ns): emptied when the render
  // ends, so that no cycle outlives it.
  ~Renderer() {
    for (const std::shared_ptr<DictData> &ns : namespaces_) {
      ns->items.clear();
      ns->by_string.clear();
    }
  }

  std::string run(const Body &body) {
    tlStepsLeft = kMaxSteps;
    if (exec(body) != Flow::Normal)
      fail(0, "'break' or 'continue' outside a loop");
    return std::move(out_);
  }

private:
  enum class Flow { Normal, Break, Continue };
  using Scope = std::unordered_map<std::string, Value>;

  void emit(std::string_view text, int line) {
    if (out_.size() + text.size() > kMaxOutput)
      fail(line, "the rendered prompt exceeds " +
                     std::to_string(kMaxOutput >> 20) + " MiB");
    out_.append(text);
  }

  Value lookup(const std::string &name) const {
    for (size_t k = scopes_.size(); k-- > 0;) {
      auto it = scopes_[k].find(name);
      if (it != scopes_[k].end())
        return it->second;
    }
    return Value::undefined("'" + name + "' is undefined");
  }

  [[noreturn]] void undefinedUse(const Value &v, int line) {
    fail(line, v.s.empty() ? "an undefined value is used" : v.s);
  }

  //===--------------------------------------------------------------------===//
  // Statements.

  Flow exec(const Body &body) {
    for (const auto &n : body) {
      Flow f = exec(*n);
      if (f != Flow::Normal)
        return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Node &n) {
    spend();
    switch (n.k) {
    case Node::K::Text:
      emit(n.text, n.line);
      return Flow::Normal;
    case Node::K::Print:
      emit(pyStr(eval(*n.expr)), n.line);
      return Flow::Normal;
    case Node::K::If:
      for (size_t k = 0; k < n.conds.size(); ++k)
        if (truthy(eval(*n.conds[k])))
          return exec(n.bodies[k]);
      if (n.bodies.size() > n.conds.size())
        return exec(n.bodies.back());
      return Flow::Normal;
    case Node::K::For:
      return execFor(n);
    case Node::K::Set: {
      Value v = eval(*n.expr);
      if (!n.attr.empty()) {
        Value target = lookup(n.targets[0]);
        if (target.kind != Value::Kind::Namespace)
          fail(n.line, "cannot assign attribute '" + n.attr + "' of '" +
                           n.targets[0] + "': not a namespace()");
        target.dict->set(n.attr, std::move(v));
      } else {
        assign(n.targets, std::move(v), n.line);
      }
      return Flow::Normal;
    }
    case Node::K::SetBlock: {
      std::string saved = std::move(out_);
      out_.clear();
      Flow f = exec(n.bodies[0]);
      std::string captured = std::move(out_);
      out_ = std::move(saved);
      if (f != Flow::Normal)
        return f;
      scopes_.back()[n.targets[0]] = Value::string(std::move(captured));
      return Flow::Normal;
    }
    case Node::K::Macro:
      defineMacro(n);
      return Flow::Normal;
    case Node::K::Break:
      return Flow::Break;
    case Node::K::Continue:
      return Flow::Continue;
    case Node::K::Scope:
      return exec(n.bodies[0]);
    }
    return Flow::Normal;
  }

  void assign(const std::vector<std::string> &targets, Value v, int line) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = std::move(v);
      return;
    }
    List items = iterate(v, line);
    if (items.size() != targets.size())
      fail(line, "cannot unpack " + std::to_string(items.size()) +
                     " values into " + std::to_string(targets.size()) +
                     " names");
    for (size_t k = 0; k < targets.size(); ++k)
      scopes_.back()[targets[k]] = std::move(items[k]);
  }

  Flow execFor(const Node &n) {
    List items = iterate(eval(*n.expr), n.line);
    if (n.filter) {
      List kept;
      for (Value &item : items) {
        scopes_.emplace_back();
        assign(n.targets, item, n.line);
        bool keep = truthy(eval(*n.filter));
        scopes_.pop_back();
        if (keep)
          kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty())
      return n.bodies.size() > 1 ? exec(n.bodies[1]) : Flow::Normal;
    const int64_t length = static_cast<int64_t>(items.size());
    Value loop = Value::makeDict();
    auto current = std::make_shared<int64_t>(0);
    for (int64_t k = 0; k < length; ++k) {
      spend(); // an empty body costs its iterations too
      scopes_.emplace_back();
      assign(n.targets, items[k], n.line);
      // One loop object, advanced in place (as jinja2's LoopContext): its
      // fields sit at the positions they were first set at.
      if (k == 0) {
        DictData &d = *loop.dict;
        for (const char *field :
             {"index", "index0", "revindex", "revindex0", "first", "last",
              "length", "depth", "depth0", "previtem", "nextitem"})
          d.set(field, Value());
        d.set("depth", Value::integer(1));
        d.set("depth0", Value::integer(0));
        d.set("length", Value::integer(length));
        d.set(
            "cycle",
            makeFunction(
                "cycle",
                [at = current](Renderer &, CallArgs &args, int line) -> Value {
                  if (args.pos.empty())
                    fail(line, "loop.cycle() needs at least one value");
                  return args.pos[*at % static_cast<int64_t>(args.pos.size())];
                }));
      }
      *current = k;
      auto &field = loop.dict->items;
      field[0].second = Value::integer(k + 1);
      field[1].second = Value::integer(k);
      field[2].second = Value::integer(length - k);
      field[3].second = Value::integer(length - k - 1);
      field[4].second = Value::boolean(k == 0);
      field[5].second = Value::boolean(k == length - 1);
      field[9].second =
          k > 0 ? items[k - 1] : Value::undefined("there is no previous item");
      field[10].second = k + 1 < length
                             ? items[k + 1]
                             : Value::undefined("there is no next item");
      scopes_.back()["loop"] = loop;
      Flow f = exec(n.bodies[0]);
      scopes_.pop_back();
      if (f == Flow::Break)
        break;
    }
    return Flow::Normal;
  }

  void defineMacro(const Node &n) {
    const Node *def = &n;
    Value macro = makeFunction(
        n.text, [def](Renderer &r, CallArgs &args, int line) -> Value {
          return r.callMacro(*def, args, line);
        });
    scopes_.back()[n.text] = std::move(macro);
  }

  Value callMacro(const Node &def, CallArgs &args, int line) {
    if (callDepth_ >= kMaxCallDepth)
      fail(line, "macro calls nested too deeply (" +
                     std::to_string(kMaxCallDepth) + ")");
    if (args.pos.size() > def.params.size())
      fail(line, "macro '" + def.text + "' takes " +
                     std::to_string(def.params.size()) + " arguments, " +
                     std::to_string(args.pos.size()) + " given");
    Scope locals;
    for (const auto &[k, v] : args.kw)
      if (std::find(def.params.begin(), def.params.end(), k) ==
          def.params.end())
        fail(line, "macro '" + def.text + "' has no argument '" + k + "'");
    // A macro sees the template's top level and its arguments, not the
    // caller's loop variables.
    std::vector<Scope> saved(std::make_move_iterator(scopes_.begin() + 1),
                             std::make_move_iterator(scopes_.end()));
    scopes_.resize(1);
    scopes_.emplace_back();
    struct Restore {
      Renderer &r;
      std::vector<Scope> &saved;
      ~Restore() {
        r.scopes_.resize(1);
        for (Scope &s : saved)
          r.scopes_.push_back(std::move(s));
        --r.callDepth_;
      }
    } restore{*this, saved};
    ++callDepth_;
    for (size_t k = 0; k < def.params.size(); ++k) {
      Value v;
      if (args.has(k, def.params[k]))
        v = args.get(k, def.params[k]);
      else if (def.defaults[k])
        v = eval(*def.defaults[k]);
      else
        v = Value::undefined("'" + def.params[k] + "' is undefined");
      scopes_.back()[def.params[k]] = std::move(v);
    }
    std::string saveOut = std::move(out_);
    out_.clear();
    exec(def.bodies[0]);
    std::string result = std::move(out_);
    out_ = std::move(saveOut);
    return Value::string(std::move(result));
  }

  //===--------------------------------------------------------------------===//
  // Iteration, attributes, items.

  List iterate(const Value &v, int line) {
    switch (v.kind) {
    case Value::Kind::Undefined:
      return {};
    case Value::Kind::List:
      return *v.list;
    case Value::Kind::Dict: {
      List keys;
      for (const auto &[k, item] : v.dict->items)
        keys.push_back(k);
      return keys;
    }
    case Value::Kind::String: {
      std::vector<size_t> at = codePoints(v.s);
      List chars;
      for (size_t k = 0; k + 1 < at.size(); ++k)
        chars.push_back(Value::string(v.s.substr(at[k], at[k + 1] - at[k])));
      return chars;
    }
    default:
      fail(line, std::string("'") + typeName(v) + "' object is not iterable");
    }
  }

  static bool isStringMethod(std::string_view name) {
    static const char *const names[] = {
        "strip",    "lstrip",  "rstrip",  "split",   "startswith",
        "endswith", "upper",   "lower",   "title",   "capitalize",
        "replace",  "find",    "count",   "join",    "splitlines",
        "isdigit",  "isalpha", "isalnum", "isspace", "isupper",
        "islower",  "rsplit",  "format"};
    for (const char *n : names)
      if (name == n)
        return true;
    return false;
  }

  static bool isDictMethod(std::string_view name) {
    return name == "items" || name == "keys" || name == "values" ||
           name == "get";
  }

  Value getAttr(const Value &obj, const std::string &name, int line) {
    switch (obj.kind) {
    case Value::Kind::Undefined:
      undefinedUse(obj, line);
    case Value::Kind::Dict:
      if (isDictMethod(name))
        return boundMethod(obj, name);
      if (const Value *v = obj.dict->find(name))
        return *v;
      return Value::undefined("'dict object' has no attribute '" + name + "'");
    case Value::Kind::Namespace:
      if (const Value *v = obj.dict->find(name))
        return *v;
      return Value::undefined("namespace has no attribute '" + name + "'");
    case Value::Kind::String:
      if (isStringMethod(name))
        return boundMethod(obj, name);
      break;
    case Value::Kind::List:
      if (name == "append" || name == "pop" || name == "extend" ||
          name == "insert" || name == "remove" || name == "clear" ||
          name == "sort" || name == "reverse")
        return boundMethod(obj, name);
      break;
    default:
      break;
    }
    return Value::undefined(std::string("'") + typeName(obj) +
                            " object' has no attribute '" + name + "'");
  }

  Value getItem(const Value &obj, const Value &key, int line) {
    if (obj.isUndefined())
      undefinedUse(obj, line);
    if (key.isUndefined())
      undefinedUse(key, line);
    if (obj.kind == Value::Kind::Dict || obj.kind == Value::Kind::Namespace) {
      if (const Value *v = obj.dict->find(key))
        return *v;
      if (!key.isString())
        return Value::undefined("'dict object' has no element " + pyRepr(key));
      return obj.kind == Value::Kind::Dict && isDictMethod(key.s)
                 ? boundMethod(obj, key.s)
                 : Value::undefined("'dict object' has no attribute '" + key.s +
                                    "'");
    }
    if (key.isString())
      return getAttr(obj, key.s, line);
    if (obj.kind == Value::Kind::List || obj.kind == Value::Kind::String) {
      if (key.kind != Value::Kind::Int && key.kind != Value::Kind::Bool)
        fail(line,
             std::string("indices must be integers, not ") + typeName(key));
      int64_t index = key.kind == Value::Kind::Bool ? key.b : key.i;
      if (obj.kind == Value::Kind::List) {
        int64_t n = static_cast<int64_t>(obj.list->size());
        if (index < 0)
          index += n;
        if (index < 0 || index >= n)
          return Value::undefined("list index out of range");
        return (*obj.list)[index];
      }
      std::vector<size_t> at = codePoints(obj.s);
      int64_t n = static_cast<int64_t>(at.size()) - 1;
      if (index < 0)
        index += n;
      if (index < 0 || index >= n)
        return Value::undefined("string index out of range");
      return Value::string(obj.s.substr(at[index], at[index + 1] - at[index]));
    }
    return Value::undefined(std::string("'") + typeName(obj) +
                            " object' has no element " + pyRepr(key));
  }

  Value slice(const Value &obj, const Expr &e) {
    auto bound = [&](const ExprPtr &x) -> std::optional<int64_t> {
      if (!x)
        return std::nullopt;
      Value v = eval(*x);
      if (v.kind == Value::Kind::None)
        return std::nullopt;
      if (v.kind != Value::Kind::Int)
        fail(e.line, "slice indices must be integers");
      return v.i;
    };
    std::optional<int64_t> start = bound(e.a[1]), stop = bound(e.a[2]),
                           step = bound(e.a[3]);
    int64_t st = step.value_or(1);
    if (st == 0)
      fail(e.line, "slice step cannot be zero");
    std::vector<size_t> at;
    int64_t n;
    if (obj.kind == Value::Kind::List) {
      n = static_cast<int64_t>(obj.list->size());
    } else if (obj.kind == Value::Kind::String) {
      at = codePoints(obj.s);
      n = static_cast<int64_t>(at.size()) - 1;
    } else if (obj.isUndefined()) {
      undefinedUse(obj, e.line);
    } else {
      fail(e.line,
           std::string("'") + typeName(obj) + "' object is not subscriptable");
    }
    // Python's slice.indices().
    auto clamp = [&](std::optional<int64_t> x, int64_t dflt) {
      if (!x)
        return dflt;
      int64_t v = *x;
      if (v < 0)
        v += n;
      if (st > 0)
        return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    int64_t b = clamp(start, st > 0 ? 0 : n - 1);
    int64_t end = clamp(stop, st > 0 ? n : -1);
    List items;
    std::string s;
    // Counted in 128 bits: b + i * st stays in [-1, n], a huge step too.
    const __int128 count =
        st > 0 ? (end > b ? (__int128(end) - b - 1) / st + 1 : 0)
               : (b > end ? (__int128(b) - end - 1) / -__int128(st) + 1 : 0);
    for (__int128 i = 0; i < count; ++i) {
      const int64_t k = static_cast<int64_t>(b + i * st);
      if (obj.kind == Value::Kind::List)
        items.push_back((*obj.list)[k]);
      else
        s.append(obj.s, at[k], at[k + 1] - at[k]);
    }
    if (obj.kind != Value::Kind::List)
      return Value::string(std::move(s));
    Value out = Value::makeList(std::move(items));
    out.tuple = obj.tuple;
    return out;
  }

  //===--------------------------------------------------------------------===//
  // Expressions.

  Value eval(const Expr &e) {
    spend();
    switch (e.k) {
    case Expr::K::Literal:
      return e.literal;
    case Expr::K::Name:
      return lookup(e.name);
    case Expr::K::Attr:
      return getAttr(eval(*e.a[0]), e.name, e.line);
    case Expr::K::Item: {
      Value obj = eval(*e.a[0]);
      return getItem(obj, eval(*e.a[1]), e.line);
    }
    case Expr::K::Slice:
      return slice(eval(*e.a[0]), e);
    case Expr::K::Call: {
      Value callee = eval(*e.a[0]);
      CallArgs args = evalArgs(e, 1);
      return call(callee, args, e.line);
    }
    case Expr::K::Filter: {
      Value obj = eval(*e.a[0]);
      CallArgs args = evalArgs(e, 1);
      return applyFilter(e.name, obj, args, e.line);
    }
    case Expr::K::Test: {
      Value obj = eval(*e.a[0]);
      CallArgs args = evalArgs(e, 1);
      bool r = applyTest(e.name, obj, args, e.line);
      return Value::boolean(e.negated ? !r : r);
    }
    case Expr::K::Neg:
    case Expr::K::Pos: {
      Value v = eval(*e.a[0]);
      if (v.kind == Value::Kind::Bool)
        v = Value::integer(v.b);
      if (v.kind == Value::Kind::BigInt)
        return e.k == Expr::K::Pos ? v
               : v.s[0] == '-'     ? Value::bigInt(v.s.substr(1))
                                   : Value::bigInt("-" + v.s);
      if (v.kind == Value::Kind::Int && e.k == Expr::K::Neg)
        return v.i == INT64_MIN ? Value::bigInt("9223372036854775808")
                                : Value::integer(-v.i);
      if (v.kind == Value::Kind::Int)
        return v;
      if (v.kind == Value::Kind::Float)
        return e.k == Expr::K::Neg ? Value::real(-v.f) : v;
      if (v.isUndefined())
        undefinedUse(v, e.line);
      fail(e.line, std::string("bad operand type for unary ") +
                       (e.k == Expr::K::Neg ? "-" : "+") + ": '" + typeName(v) +
                       "'");
    }
    case Expr::K::Not:
      return Value::boolean(!truthy(eval(*e.a[0])));
    case Expr::K::And: {
      Value l = eval(*e.a[0]);
      return truthy(l) ? eval(*e.a[1]) : l;
    }
    case Expr::K::Or: {
      Value l = eval(*e.a[0]);
      return truthy(l) ? l : eval(*e.a[1]);
    }
    case Expr::K::Binary:
      return binary(e.name, eval(*e.a[0]), eval(*e.a[1]), e.line);
    case Expr::K::Concat: {
      std::string s;
      for (const ExprPtr &x : e.a) {
        s += pyStr(eval(*x));
        checkSize(s.size(), e.line);
      }
      return Value::string(std::move(s));
    }
    case Expr::K::Compare: {
      Value left = eval(*e.a[0]);
      for (size_t k = 0; k < e.ops.size(); ++k) {
        Value right = eval(*e.a[k + 1]);
        if (!compare(e.ops[k], left, right, e.line))
          return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case Expr::K::Cond:
      if (truthy(eval(*e.a[1])))
        return eval(*e.a[0]);
      return e.a[2] ? eval(*e.a[2])
                    : Value::undefined("the condition is false and there is "
                                       "no 'else'");
    case Expr::K::ListLit:
    case Expr::K::TupleLit: {
      List items;
      for (const ExprPtr &x : e.a)
        items.push_back(eval(*x));
      return e.k == Expr::K::TupleLit ? Value::makeTuple(std::move(items))
                                      : Value::makeList(std::move(items));
    }
    case Expr::K::DictLit: {
      Value d = Value::makeDict();
      for (size_t k = 0; k + 1 < e.a.size(); k += 2) {
        Value key = eval(*e.a[k]);
        if (key.kind == Value::Kind::List && !key.tuple)
          fail(e.line, "unhashable type: 'list'");
        if (key.kind == Value::Kind::Dict || key.kind == Value::Kind::Namespace)
          fail(e.line, "unhashable type: 'dict'");
        if (key.isUndefined())
          undefinedUse(key, e.line);
        d.dict->set(std::move(key), eval(*e.a[k + 1]));
      }
      return d;
    }
    }
    return Value();
  }

  CallArgs evalArgs(const Expr &e, size_t first) {
    CallArgs args;
    size_t positional = e.a.size() - e.kwnames.size();
    for (size_t k = first; k < positional; ++k)
      args.pos.push_back(eval(*e.a[k]));
    for (size_t k = 0; k < e.kwnames.size(); ++k)
      args.kw.emplace_back(e.kwnames[k], eval(*e.a[positional + k]));
    return args;
  }

  Value call(const Value &callee, CallArgs &args, int line) {
    if (callee.isUndefined())
      undefinedUse(callee, line);
    if (callee.kind != Value::Kind::Function)
      fail(line,
           std::string("'") + typeName(callee) + "' object is not callable");
    return callee.fn->call(*this, args, line);
  }

  // About the bytes a string or list holds, its items' strings counted
  // (copies of a list share its items' lists but copy their strings).
  static size_t shallowBytes(const Value &v) {
    if (v.isString())
      return v.s.size();
    if (v.kind != Value::Kind::List)
      return 16;
    size_t bytes = 0;
    for (const Value &item : *v.list)
      bytes += 16 + (item.isString() ? item.s.size() : 0);
    return bytes;
  }

  static void checkSize(size_t bytes, int line) {
    if (bytes > kMaxValueBytes)
      fail(line, "a value grows past " + std::to_string(kMaxValueBytes >> 20) +
                     " MiB");
  }

  static double number(const Value &v) {
    return v.kind == Value::Kind::Float  ? v.f
           : v.kind == Value::Kind::Bool ? double(v.b)
                                         : double(v.i);
  }
  static int64_t integer(const Value &v) {
    return v.kind == Value::Kind::Bool ? int64_t(v.b) : v.i;
  }

  Value binary(const std::string &op, const Value &l, const Value &r,
               int line) {
    if (l.isUndefined())
      undefinedUse(l, line);
    if (r.isUndefined())
      undefinedUse(r, line);
    auto typeError = [&]() -> Value {
      fail(line, "unsupported operand types for " + op + ": '" + typeName(l) +
                     "' and '" + typeName(r) + "'");
    };
    for (const Value *v : {&l, &r})
      if (v->kind == Value::Kind::BigInt)
        fail(line, "integer " + v->s +
                       " is beyond the 64-bit integers Loom computes with");
    if (op == "+") {
      if (l.isString() && r.isString()) {
        checkSize(l.s.size() + r.s.size(), line);
        return Value::string(l.s + r.s);
      }
      if (l.kind == Value::Kind::List && r.kind == Value::Kind::List) {
        if (l.tuple != r.tuple)
          fail(line, std::string("can only concatenate ") +
                         (l.tuple ? "tuple" : "list") + " (not \"" +
                         (r.tuple ? "tuple" : "list") + "\") to " +
                         (l.tuple ? "tuple" : "list"));
        checkSize(shallowBytes(l) + shallowBytes(r), line);
        List items = *l.list;
        items.insert(items.end(), r.list->begin(), r.list->end());
        Value out = Value::makeList(std::move(items));
        out.tuple = l.tuple;
        return out;
      }
    }
    if (op == "*" && (l.isString() || l.kind == Value::Kind::List ||
                      r.isString() || r.kind == Value::Kind::List)) {
      const Value &seq = l.isString() || l.kind == Value::Kind::List ? l : r;
      const Value &times = &seq == &l ? r : l;
      if (times.kind != Value::Kind::Int && times.kind != Value::Kind::Bool)
        return typeError();
      int64_t n = std::max<int64_t>(0, integer(times));
      const size_t unit = shallowBytes(seq);
      if (unit == 0 || n == 0) {
        if (seq.isString())
          return Value::string("");
        Value out = Value::makeList();
        out.tuple = seq.tuple;
        return out;
      }
      if (static_cast<uint64_t>(n) > kMaxValueBytes / unit)
        checkSize(kMaxValueBytes + 1, line);
      if (seq.isString()) {
        std::string s;
        for (int64_t k = 0; k < n; ++k)
          s += seq.s;
        return Value::string(std::move(s));
      }
      List items;
      for (int64_t k = 0; k < n; ++k)
        items.insert(items.end(), seq.list->begin(), seq.list->end());
      Value out = Value::makeList(std::move(items));
      out.tuple = seq.tuple;
      return out;
    }
    if (!l.isNumber() || !r.isNumber()) {
      if (op == "%" && l.isString())
        fail(line, "'%' string formatting is not supported");
      return typeError();
    }
    bool ints = l.kind != Value::Kind::Float && r.kind != Value::Kind::Float;
    if (ints) {
      int64_t a = integer(l), b = integer(r), out = 0;
      if (op == "+" && !__builtin_add_overflow(a, b, &out))
        return Value::integer(out);
      if (op == "-" && !__builtin_sub_overflow(a, b, &out))
        return Value::integer(out);
      if (op == "*" && !__builtin_mul_overflow(a, b, &out))
        return Value::integer(out);
      if (op == "//" || op == "%") {
        if (b == 0)
          fail(line, "integer division or modulo by zero");
        if (a == INT64_MIN && b == -1)
          fail(line, "integer overflow");
        int64_t q = a / b, m = a % b;
        if (m != 0 && ((m < 0) != (b < 0))) {
          --q;
          m += b;
        }
        return Value::integer(op == "//" ? q : m);
      }
      if (op == "**" && b >= 0) {
        // By squaring: log2(b) steps. A square that overflows is needed by a
        // later bit, so the power overflows too (0 and +-1 never overflow).
        int64_t p = 1, base = a, e = b;
        bool overflow = false;
        while (e > 0 && !overflow) {
          if (e & 1)
            overflow = __builtin_mul_overflow(p, base, &p);
          e >>= 1;
          if (e > 0 && !overflow)
            overflow = __builtin_mul_overflow(base, base, &base);
        }
        if (!overflow)
          return Value::integer(p);
      }
      if (op == "+" || op == "-" || op == "*" || op == "**")
        fail(line, "integer overflow");
    }
    double a = number(l), b = number(r);
    if (op == "+")
      return Value::real(a + b);
    if (op == "-")
      return Value::real(a - b);
    if (op == "*")
      return Value::real(a * b);
    if (op == "/") {
      if (b == 0)
        fail(line, "division by zero");
      return Value::real(a / b);
    }
    if (op == "//" || op == "%") {
      if (b == 0)
        fail(line, "float division or modulo by zero");
      double m = std::fmod(a, b);
      if (m != 0 && ((m < 0) != (b < 0)))
        m += b;
      return Value::real(op == "%" ? m : std::floor((a - m) / b + 0.5));
    }
    if (op == "**")
      return Value::real(std::pow(a, b));
    return typeError();
  }

  static bool equal(const Value &l, const Value &r) {
    return valuesEqual(l, r);
  }

  // l < r, Python's ordering (numbers, strings, lists).
  bool less(const Value &l, const Value &r, int line) {
    spend();
    for (const Value *v : {&l, &r})
      if (v->kind == Value::Kind::BigInt)
        fail(line, "integer " + v->s +
                       " is beyond the 64-bit integers Loom compares");
    if (l.isNumber() && r.isNumber())
      return number(l) < number(r);
    if (l.isString() && r.isString())
      return l.s < r.s;
    if (l.kind == Value::Kind::List && r.kind == Value::Kind::List) {
      for (size_t k = 0; k < l.list->size() && k < r.list->size(); ++k) {
        if (equal((*l.list)[k], (*r.list)[k]))
          continue;
        return less((*l.list)[k], (*r.list)[k], line);
      }
      return l.list->size() < r.list->size();
    }
    if (l.isUndefined())
      undefinedUse(l, line);
    if (r.isUndefined())
      undefinedUse(r, line);
    fail(line, std::string("'<' not supported between '") + typeName(l) +
                   "' and '" + typeName(r) + "'");
  }

  bool contains(const Value &container, const Value &item, int line) {
    switch (container.kind) {
    case Value::Kind::String:
      if (!item.isString())
        fail(line, std::string("'in <string>' requires a string, not ") +
                       typeName(item));
      return container.s.find(item.s) != std::string::npos;
    case Value::Kind::List:
      for (const Value &v : *container.list)
        if (equal(v, item))
          return true;
      return false;
    case Value::Kind::Dict:
    case Value::Kind::Namespace:
      return container.dict->find(item) != nullptr;
    case Value::Kind::Undefined:
      undefinedUse(container, line);
    default:
      fail(line, std::string("argument of type '") + typeName(container) +
                     "' is not iterable");
    }
  }

  bool compare(const std::string &op, const Value &l, const Value &r,
               int line) {
    if (op == "==")
      return equal(l, r);
    if (op == "!=")
      return !equal(l, r);
    if (op == "<")
      return less(l, r, line);
    if (op == ">")
      return less(r, l, line);
    if (op == "<=")
      return !less(r, l, line);
    if (op == ">=")
      return !less(l, r, line);
    if (op == "in")
      return contains(r, l, line);
    return !contains(r, l, line); // not in
  }

  //===--------------------------------------------------------------------===//
  // Methods of strings, dicts and lists.

  Value boundMethod(const Value &self, const std::string &name) {
    return makeFunction(
        name, [self, name](Renderer &r, CallArgs &args, int line) -> Value {
          return r.callMethod(self, name, args, line);
        });
  }

  static std::string argString(const Value &v, const char *what, int line) {
    if (!v.isString())
      fail(line, std::string(what) + " must be a string, not " + typeName(v));
    return v.s;
  }

  Value callMethod(const Value &self, const std::string &name, CallArgs &args,
                   int line) {
    if (self.kind == Value::Kind::Dict) {
      if (name == "items") {
        List items;
        for (const auto &[k, v] : self.dict->items)
          items.push_back(Value::makeTuple({k, v}));
        return Value::makeList(std::move(items));
      }
      if (name == "keys" || name == "values") {
        List items;
        for (const auto &[k, v] : self.dict->items)
          items.push_back(name == "keys" ? k : v);
        return Value::makeList(std::move(items));
      }
      // get
      if (const Value *v = self.dict->find(args.get(0, "key")))
        return *v;
      return args.has(1, "default") ? args.get(1, "default") : Value::none();
    }
    if (self.kind == Value::Kind::List)
      fail(line, "lists cannot be changed in a chat template (" + name +
                     "); transformers' sandbox refuses it too");
    const std::string &s = self.s;
    auto optChars = [&](size_t index) -> std::optional<std::string> {
      Value v = args.get(index, "chars");
      if (v.isUndefined() || v.kind == Value::Kind::None)
        return std::nullopt;
      return argString(v, "strip characters", line);
    };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      bool left = name != "rstrip", right = name != "lstrip";
      std::optional<std::string> chars = optChars(0);
      return Value::string(chars ? stripChars(s, *chars, left, right)
                                 : stripWhitespace(s, left, right));
    }
    if (name == "split" || name == "rsplit") {
      Value sep = args.get(0, "sep");
      Value maxv = args.get(1, "maxsplit");
      // (Python's maxsplit: negative or beyond any string means no limit.)
      int64_t maxsplit =
          maxv.kind == Value::Kind::Int && maxv.i >= 0 && maxv.i < (1 << 30)
              ? maxv.i
              : -1;
      List parts;
      if (sep.isUndefined() || sep.kind == Value::Kind::None) {
        if (name == "rsplit" && maxsplit >= 0)
          fail(line, "rsplit() with a limit and no separator is not supported");
        size_t k = 0, len;
        while (k < s.size()) {
          while (k < s.size() && isPySpace(s, k, &len))
            k += len;
          if (k >= s.size())
            break;
          if (maxsplit >= 0 && int64_t(parts.size()) == maxsplit) {
            parts.push_back(
                Value::string(stripWhitespace(s.substr(k), false, true)));
            break;
          }
          size_t b = k;
          while (k < s.size() && !isPySpace(s, k, &len))
            ++k;
          parts.push_back(Value::string(s.substr(b, k - b)));
        }
        return Value::makeList(std::move(parts));
      }
      std::string d = argString(sep, "separator", line);
      if (d.empty())
        fail(line, "empty separator");
      std::vector<std::string> pieces;
      size_t b = 0, at;
      while ((at = s.find(d, b)) != std::string::npos) {
        pieces.push_back(s.substr(b, at - b));
        b = at + d.size();
      }
      pieces.push_back(s.substr(b));
      if (maxsplit >= 0 && int64_t(pieces.size()) > maxsplit + 1) {
        std::vector<std::string> joined;
        if (name == "split") {
          joined.assign(pieces.begin(), pieces.begin() + maxsplit);
          std::string rest;
          for (size_t k = maxsplit; k < pieces.size(); ++k)
            rest += (k > size_t(maxsplit) ? d : "") + pieces[k];
          joined.push_back(rest);
        } else {
          size_t keep = pieces.size() - maxsplit;
          std::string rest;
          for (size_t k = 0; k < keep; ++k)
            rest += (k ? d : "") + pieces[k];
          joined.push_back(rest);
          joined.insert(joined.end(), pieces.begin() + keep, pieces.end());
        }
        pieces = std::move(joined);
      }
      for (std::string &p : pieces)
        parts.push_back(Value::string(std::move(p)));
      return Value::makeList(std::move(parts));
    }
    if (name == "startswith" || name == "endswith") {
      Value arg = args.get(0, "prefix");
      List options = arg.kind == Value::Kind::List ? *arg.list : List{arg};
      for (const Value &o : options) {
        std::string p = argString(o, name.c_str(), line);
        bool hit = name == "startswith"
                       ? s.compare(0, p.size(), p) == 0 && s.size() >= p.size()
                       : s.size() >= p.size() &&
                             s.compare(s.size() - p.size(), p.size(), p) == 0;
        if (hit)
          return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "upper" || name == "lower")
      return Value::string(changeCase(s, name == "upper"));
    if (name == "title")
      return Value::string(titleCase(s));
    if (name == "capitalize")
      return Value::string(capitalizeText(s));
    if (name == "replace") {
      std::string from = argString(args.get(0, "old"), "replace()'s old", line);
      std::string to = argString(args.get(1, "new"), "replace()'s new", line);
      Value countv = args.get(2, "count");
      return Value::string(replaceAll(
          s, from, to, countv.kind == Value::Kind::Int ? countv.i : -1, line));
    }
    if (name == "find") {
      std::string sub =
          argString(args.get(0, "sub"), "find()'s argument", line);
      size_t at = s.find(sub);
      if (at == std::string::npos)
        return Value::integer(-1);
      return Value::integer(int64_t(codePoints(s.substr(0, at)).size()) - 1);
    }
    if (name == "count") {
      std::string sub =
          argString(args.get(0, "sub"), "count()'s argument", line);
      if (sub.empty())
        return Value::integer(int64_t(codePoints(s).size()));
      int64_t n = 0;
      for (size_t at = s.find(sub); at != std::string::npos;
           at = s.find(sub, at + sub.size()))
        ++n;
      return Value::integer(n);
    }
    if (name == "join") {
      List items = iterate(args.get(0, "iterable"), line);
      std::string out;
      for (size_t k = 0; k < items.size(); ++k) {
        if (k)
          out += s;
        out += argString(items[k], "join()'s items", line);
        checkSize(out.size(), line);
      }
      return Value::string(out);
    }
    if (name == "splitlines") {
      List parts;
      size_t b = 0;
      for (size_t k = 0; k < s.size(); ++k)
        if (s[k] == '\n' || s[k] == '\r') {
          parts.push_back(Value::string(s.substr(b, k - b)));
          if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n')
            ++k;
          b = k + 1;
        }
      if (b < s.size())
        parts.push_back(Value::string(s.substr(b)));
      return Value::makeList(std::move(parts));
    }
    if (name == "isdigit" || name == "isalpha" || name == "isalnum" ||
        name == "isspace" || name == "isupper" || name == "islower") {
      if (name == "isupper" || name == "islower") {
        bool up = name == "isupper";
        return Value::boolean(s == changeCase(s, up) &&
                              s != changeCase(s, !up));
      }
      if (s.empty())
        return Value::boolean(false);
      bool all = true;
      for (size_t at = 0, len; at < s.size() && all; at += len) {
        unsigned char c = s[at];
        len = 1;
        all = name == "isspace"   ? isPySpace(s, at, &len)
              : name == "isdigit" ? std::isdigit(c) != 0
              : name == "isalpha" ? std::isalpha(c) != 0
                                  : std::isalnum(c) != 0;
      }
      return Value::boolean(all);
    }
    fail(line, "string method '" + name + "' is not supported");
  }

  static std::string replaceAll(const std::string &s, const std::string &from,
                                const std::string &to, int64_t count,
                                int line) {
    std::string out;
    size_t b = 0;
    int64_t done = 0;
    if (from.empty()) {
      std::vector<size_t> at = codePoints(s);
      for (size_t k = 0; k + 1 < at.size(); ++k) {
        if (count < 0 || done < count) {
          out += to;
          ++done;
        }
        out.append(s, at[k], at[k + 1] - at[k]);
        checkSize(out.size(), line);
      }
      if (count < 0 || done < count)
        out += to;
      return out;
    }
    size_t at;
    while ((count < 0 || done < count) &&
           (at = s.find(from, b)) != std::string::npos) {
      out.append(s, b, at - b);
      out += to;
      checkSize(out.size(), line);
      b = at + from.size();
      ++done;
    }
    out.append(s, b, std::string::npos);
    return out;
  }

  //===--------------------------------------------------------------------===//
  // Filters and tests.

  // v[digits] for a numeric attribute path part ("0" in "content.0").
  Value indexOf(const Value &v, const std::string &digits, int line) {
    int64_t index = 0;
    auto r =
        std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (r.ec != std::errc())
      return Value::undefined("no item " + digits);
    return getItem(v, Value::integer(index), line);
  }

  Value attributeOf(const Value &item, const std::string &path, int line) {
    Value v = item;
    size_t b = 0;
    while (true) {
      size_t dot = path.find('.', b);
      std::string part =
          path.substr(b, dot == std::string::npos ? dot : dot - b);
      bool numeric =
          !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
            return std::isdigit(static_cast<unsigned char>(c));
          });
      v = v.isUndefined() ? v
          : numeric       ? indexOf(v, part, line)
                          : getItem(v, Value::string(part), line);
      if (dot == std::string::npos)
        return v;
      b = dot + 1;
    }
  }

  Value applyFilter(const std::string &name, const Value &v, CallArgs &args,
                    int line) {
    auto needString = [&]() -> std::string {
      if (v.isUndefined())
        undefinedUse(v, line);
      return pyStr(v);
    };
    if (name == "default" || name == "d") {
      bool boolean = truthy(args.get(1, "boolean"));
      if (v.isUndefined() || (boolean && !truthy(v)))
        return args.has(0, "default_value") ? args.get(0, "default_value")
                                            : Value::string("");
      return v;
    }
    if (name == "length" || name == "count") {
      switch (v.kind) {
      case Value::Kind::Undefined:
        return Value::integer(0);
      case Value::Kind::String:
        return Value::integer(int64_t(codePoints(v.s).size()) - 1);
      case Value::Kind::List:
        return Value::integer(int64_t(v.list->size()));
      case Value::Kind::Dict:
      case Value::Kind::Namespace:
        return Value::integer(int64_t(v.dict->items.size()));
      default:
        fail(line,
             std::string("object of type '") + typeName(v) + "' has no len()");
      }
    }
    if (name == "trim") {
      Value chars = args.get(0, "chars");
      std::string s = needString();
      return Value::string(chars.isString() ? stripChars(s, chars.s, true, true)
                                            : stripWhitespace(s, true, true));
    }
    if (name == "string")
      return Value::string(pyStr(v));
    if (name == "safe" || name == "e" || name == "escape") {
      if (name != "safe")
        fail(line,
             "the '" + name + "' filter (HTML escaping) is not supported");
      return v;
    }
    if (name == "upper" || name == "lower")
      return Value::string(changeCase(needString(), name == "upper"));
    if (name == "capitalize")
      return Value::string(capitalizeText(needString()));
    if (name == "title") {
      // jinja2's do_title: each word (after '-', whitespace and opening
      // brackets) capitalized.
      std::string s = needString(), out;
      bool begin = true;
      for (size_t at = 0, len; at < s.size(); at += len) {
        uint32_t cp = decodeAt(s, at, &len);
        size_t spaceLen;
        bool sep = isPySpace(s, at, &spaceLen) || cp == '-' || cp == '(' ||
                   cp == '{' || cp == '[' || cp == '<';
        if (sep) {
          len = std::max(len, spaceLen);
          out.append(s, at, len);
          begin = true;
          continue;
        }
        appendCase(out, std::string_view(s).substr(at, len), cp, begin);
        begin = false;
      }
      return Value::string(out);
    }
    if (name == "replace") {
      std::string s = needString();
      Value countv = args.get(2, "count");
      return Value::string(
          replaceAll(s, pyStr(args.get(0, "old")), pyStr(args.get(1, "new")),
                     countv.kind == Value::Kind::Int ? countv.i : -1, line));
    }
    if (name == "first" || name == "last") {
      List items = iterate(v, line);
      if (items.empty())
        return Value::undefined("no " + name + " item, sequence was empty");
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      std::string sep = pyStr(args.get(0, "d"));
      Value attribute = args.get(1, "attribute");
      List items = iterate(v, line);
      std::string out;
      for (size_t k = 0; k < items.size(); ++k) {
        if (k)
          out += sep;
        out += pyStr(attribute.isUndefined()
                         ? items[k]
                         : attributeOf(items[k], pyStr(attribute), line));
        checkSize(out.size(), line);
      }
      return Value::string(out);
    }
    if (name == "list")
      return Value::makeList(iterate(v, line));
    if (name == "items") {
      if (v.isUndefined())
        return Value::makeList();
      if (v.kind != Value::Kind::Dict)
        fail(line, "the 'items' filter needs a mapping");
      CallArgs none;
      return callMethod(v, "items", none, line);
    }
    if (name == "reverse") {
      if (v.isString()) {
        std::vector<size_t> at = codePoints(v.s);
        std::string out;
        for (size_t k = at.size() - 1; k > 0; --k)
          out.append(v.s, at[k - 1], at[k] - at[k - 1]);
        return Value::string(out);
      }
      List items = iterate(v, line);
      std::reverse(items.begin(), items.end());
      return Value::makeList(std::move(items));
    }
    if (name == "tojson") {
      Value indentv = args.get(0, "indent");
      int indent = indentv.kind == Value::Kind::Int
                       ? static_cast<int>(std::clamp<int64_t>(indentv.i, 0, 64))
                       : -1;
      std::string out;
      toJson(out, v, indent, truthy(args.get(3, "sort_keys")), 0, line);
      checkSize(out.size(), line);
      return Value::string(out);
    }
    if (name == "int") {
      Value dflt =
          args.has(0, "default") ? args.get(0, "default") : Value::integer(0);
      if (v.kind == Value::Kind::Int || v.kind == Value::Kind::BigInt)
        return v;
      if (v.kind == Value::Kind::Bool)
        return Value::integer(v.b);
      // Python's int() of a float: its integer part, exactly.
      auto truncated = [](double d) {
        d = std::trunc(d);
        if (d > -9.2e18 && d < 9.2e18)
          return Value::integer(static_cast<int64_t>(d));
        char buf[400];
        std::snprintf(buf, sizeof buf, "%.0f", d);
        return Value::bigInt(buf);
      };
      if (v.kind == Value::Kind::Float)
        return std::isfinite(v.f) ? truncated(v.f) : dflt;
      if (v.isString()) {
        std::string t = stripWhitespace(v.s, true, true);
        int64_t i = 0;
        auto r = std::from_chars(t.data(), t.data() + t.size(), i);
        if (r.ec == std::errc() && r.ptr == t.data() + t.size() && !t.empty())
          return Value::integer(i);
        if (r.ec == std::errc::result_out_of_range &&
            r.ptr == t.data() + t.size()) {
          // Digits beyond 64 bits: kept exact, without leading zeros.
          size_t sign = t[0] == '-', first = t.find_first_not_of('0', sign);
          return Value::bigInt(t.substr(0, sign) + t.substr(first));
        }
        double d = 0;
        auto rd = std::from_chars(t.data(), t.data() + t.size(), d);
        if (rd.ec == std::errc() && rd.ptr == t.data() + t.size() &&
            !t.empty() && std::isfinite(d))
          return truncated(d);
      }
      return dflt;
    }
    if (name == "float") {
      Value dflt =
          args.has(0, "default") ? args.get(0, "default") : Value::real(0);
      if (v.isNumber())
        return Value::real(number(v));
      if (v.kind == Value::Kind::BigInt)
        return Value::real(std::strtod(v.s.c_str(), nullptr));
      if (v.isString()) {
        std::string t = stripWhitespace(v.s, true, true);
        double d = 0;
        auto r = std::from_chars(t.data(), t.data() + t.size(), d);
        if (r.ec == std::errc() && r.ptr == t.data() + t.size() && !t.empty())
          return Value::real(d);
      }
      return dflt;
    }
    if (name == "abs") {
      if (v.kind == Value::Kind::Int && v.i != INT64_MIN)
        return Value::integer(v.i < 0 ? -v.i : v.i);
      if (v.kind == Value::Kind::BigInt)
        return Value::bigInt(v.s[0] == '-' ? v.s.substr(1) : v.s);
      if (v.kind == Value::Kind::Int)
        return Value::bigInt(std::to_string(v.i).substr(1));
      if (v.isNumber())
        return Value::real(std::fabs(number(v)));
      fail(line,
           std::string("bad operand type for abs(): '") + typeName(v) + "'");
    }
    if (name == "round") {
      if (!v.isNumber())
        fail(line, "the 'round' filter needs a number");
      Value precv = args.get(0, "precision");
      int64_t prec = precv.kind == Value::Kind::Int ? precv.i : 0;
      std::string method =
          args.has(1, "method") ? pyStr(args.get(1, "method")) : "common";
      double x = number(v);
      if (method == "common" && prec >= 0 && prec <= 30 && std::isfinite(x)) {
        // Python's round(): the exact binary value, halves to even; glibc's
        // printf rounds the same way.
        char buf[400];
        std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(prec), x);
        return Value::real(std::strtod(buf, nullptr));
      }
      double scale = std::pow(10.0, double(prec));
      x *= scale;
      x = method == "ceil"    ? std::ceil(x)
          : method == "floor" ? std::floor(x)
                              : std::round(x);
      return Value::real(x / scale);
    }
    if (name == "indent") {
      std::string s = needString();
      Value widthv = args.get(0, "width");
      std::string pad =
          widthv.isString()
              ? widthv.s
              : std::string(size_t(std::clamp<int64_t>(
                                widthv.kind == Value::Kind::Int ? widthv.i : 4,
                                0, 256)),
                            ' ');
      bool first = truthy(args.get(1, "first"));
      bool blank = truthy(args.get(2, "blank"));
      std::string out;
      size_t b = 0;
      bool firstLine = true;
      while (true) {
        size_t nl = s.find('\n', b);
        std::string lineText =
            s.substr(b, nl == std::string::npos ? nl : nl - b);
        bool indentIt =
            (firstLine ? first : true) &&
            (blank || !stripWhitespace(lineText, true, true).empty());
        out += (indentIt ? pad : "") + lineText;
        checkSize(out.size(), line);
        if (nl == std::string::npos)
          break;
        out += '\n';
        b = nl + 1;
        firstLine = false;
      }
      return Value::string(out);
    }
    if (name == "wordcount") {
      CallArgs none;
      Value words =
          callMethod(Value::string(needString()), "split", none, line);
      return Value::integer(int64_t(words.list->size()));
    }
    if (name == "center") {
      std::string s = needString();
      Value widthv = args.get(0, "width");
      int64_t width = widthv.kind == Value::Kind::Int ? widthv.i : 80;
      int64_t n = int64_t(codePoints(s).size()) - 1;
      if (width <= n)
        return Value::string(s);
      checkSize(static_cast<size_t>(std::min<int64_t>(width, INT64_MAX / 2)),
                line);
      int64_t total = width - n;
      int64_t left = total / 2 + (total & width & 1);
      return Value::string(std::string(left, ' ') + s +
                           std::string(total - left, ' '));
    }
    if (name == "map" || name == "select" || name == "reject" ||
        name == "selectattr" || name == "rejectattr") {
      List items = iterate(v, line);
      List out;
      if (name == "map") {
        Value attribute;
        for (const auto &[k, a] : args.kw)
          if (k == "attribute")
            attribute = a;
        Value dflt;
        for (const auto &[k, a] : args.kw)
          if (k == "default")
            dflt = a;
        if (!attribute.isUndefined()) {
          for (const Value &item : items) {
            Value a = attributeOf(item, pyStr(attribute), line);
            out.push_back(a.isUndefined() && !dflt.isUndefined() ? dflt : a);
          }
        } else {
          if (args.pos.empty())
            fail(line, "map needs a filter name or attribute=");
          std::string filter = pyStr(args.pos[0]);
          if (std::find(knownFilters().begin(), knownFilters().end(), filter) ==
              knownFilters().end())
            fail(line, "unknown filter '" + filter + "'");
          CallArgs rest;
          rest.pos.assign(args.pos.begin() + 1, args.pos.end());
          rest.kw = args.kw;
          for (const Value &item : items)
            out.push_back(applyFilter(filter, item, rest, line));
        }
        return Value::makeList(std::move(out));
      }
      bool byAttr = name == "selectattr" || name == "rejectattr";
      bool keepWhen = name == "select" || name == "selectattr";
      size_t testAt = byAttr ? 1 : 0;
      if (byAttr && args.pos.empty())
        fail(line, name + " needs an attribute name");
      std::string test =
          args.pos.size() > testAt ? pyStr(args.pos[testAt]) : std::string();
      if (!test.empty() && std::find(knownTests().begin(), knownTests().end(),
                                     test) == knownTests().end())
        fail(line, "unknown test '" + test + "'");
      CallArgs testArgs;
      if (args.pos.size() > testAt + 1)
        testArgs.pos.assign(args.pos.begin() + testAt + 1, args.pos.end());
      for (const Value &item : items) {
        Value subject =
            byAttr ? attributeOf(item, pyStr(args.pos[0]), line) : item;
        bool r = test.empty() ? truthy(subject)
                              : applyTest(test, subject, testArgs, line);
        if (r == keepWhen)
          out.push_back(item);
      }
      return Value::makeList(std::move(out));
    }
    if (name == "unique" || name == "sort" || name == "sum" || name == "max" ||
        name == "min" || name == "dictsort" || name == "batch") {
      if (name == "dictsort")
        return dictsort(v, args, line);
      if (name == "batch")
        fail(line, "the 'batch' filter is not supported");
      List items = iterate(v, line);
      Value attribute = args.get(name == "sort"  ? 2
                                 : name == "sum" ? 0
                                                 : 1,
                                 "attribute");
      auto key = [&](const Value &item) {
        return attribute.isUndefined()
                   ? item
                   : attributeOf(item, pyStr(attribute), line);
      };
      if (name == "sum") {
        Value total =
            args.has(1, "start") ? args.get(1, "start") : Value::integer(0);
        for (const Value &item : items)
          total = binary("+", total, key(item), line);
        return total;
      }
      if (name == "unique") {
        List out;
        for (const Value &item : items) {
          bool seen = false;
          for (const Value &o : out)
            seen |= equal(key(o), key(item));
          if (!seen)
            out.push_back(item);
        }
        return Value::makeList(std::move(out));
      }
      if (name == "sort") {
        bool reverse = truthy(args.get(0, "reverse"));
        std::stable_sort(items.begin(), items.end(),
                         [&](const Value &a, const Value &b) {
                           return reverse ? less(key(b), key(a), line)
                                          : less(key(a), key(b), line);
                         });
        return Value::makeList(std::move(items));
      }
      if (items.empty())
        return Value::undefined("no " + name + " item, sequence was empty");
      Value best = items[0];
      for (const Value &item : items)
        if (name == "max" ? less(key(best), key(item), line)
                          : less(key(item), key(best), line))
          best = item;
      return best;
    }
    fail(line, "the '" + name + "' filter is not supported");
  }

  // jinja2's dictsort: the (key, value) pairs sorted by key or value, strings
  // compared lowercased unless case_sensitive.
  Value dictsort(const Value &v, CallArgs &args, int line) {
    if (v.kind != Value::Kind::Dict)
      fail(line, "dictsort needs a mapping");
    bool caseSensitive = truthy(args.get(0, "case_sensitive"));
    Value by = args.get(1, "by");
    bool byValue = by.isString() && by.s == "value";
    if (by.isString() && by.s != "key" && by.s != "value")
      fail(line, "dictsort: 'by' must be 'key' or 'value'");
    bool reverse = truthy(args.get(2, "reverse"));
    List items;
    for (const auto &[k, x] : v.dict->items)
      items.push_back(Value::makeTuple({k, x}));
    auto key = [&](const Value &pair) {
      Value x = (*pair.list)[byValue ? 1 : 0];
      return x.isString() && !caseSensitive
                 ? Value::string(changeCase(x.s, false))
                 : x;
    };
    std::stable_sort(items.begin(), items.end(),
                     [&](const Value &a, const Value &b) {
                       return reverse ? less(key(b), key(a), line)
                                      : less(key(a), key(b), line);
                     });
    return Value::makeList(std::move(items));
  }

  bool applyTest(const std::string &name, const Value &v, CallArgs &args,
                 int line) {
    Value arg = args.get(0, "value");
    if (name == "defined")
      return !v.isUndefined();
    if (name == "undefined")
      return v.isUndefined();
    if (name == "none")
      return v.kind == Value::Kind::None;
    if (name == "boolean")
      return v.kind == Value::Kind::Bool;
    if (name == "true")
      return v.kind == Value::Kind::Bool && v.b;
    if (name == "false")
      return v.kind == Value::Kind::Bool && !v.b;
    if (name == "number")
      return v.isNumber() || v.kind == Value::Kind::BigInt;
    if (name == "integer")
      return v.kind == Value::Kind::Int || v.kind == Value::Kind::BigInt;
    if (name == "float")
      return v.kind == Value::Kind::Float;
    if (name == "string")
      return v.isString();
    if (name == "mapping")
      return v.kind == Value::Kind::Dict;
    if (name == "iterable")
      return v.isString() || v.kind == Value::Kind::List ||
             v.kind == Value::Kind::Dict || v.isUndefined();
    if (name == "sequence")
      return v.isString() || v.kind == Value::Kind::List ||
             v.kind == Value::Kind::Dict;
    if (name == "callable")
      return v.kind == Value::Kind::Function;
    if (name == "escaped")
      return false;
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (v.kind != Value::Kind::Int && v.kind != Value::Kind::Bool)
        fail(line, "the '" + name + "' test needs an integer");
      int64_t x = integer(v);
      if (name == "divisibleby") {
        if (arg.kind != Value::Kind::Int || arg.i == 0)
          fail(line, "divisibleby needs a non-zero integer");
        return arg.i == -1 || x % arg.i == 0;
      }
      return (x % 2 != 0) == (name == "odd");
    }
    if (name == "lower" || name == "upper") {
      // jinja2: str(value).islower() / .isupper(): some cased code point,
      // and none that the other case would change.
      std::string s = pyStr(v);
      return s != changeCase(s, name == "upper")
                 ? false
                 : s != changeCase(s, name != "upper");
    }
    if (name == "eq" || name == "equalto" || name == "==")
      return equal(v, arg);
    if (name == "ne" || name == "!=")
      return !equal(v, arg);
    if (name == "lt" || name == "<" || name == "lessthan")
      return less(v, arg, line);
    if (name == "le" || name == "<=")
      return !less(arg, v, line);
    if (name == "gt" || name == ">" || name == "greaterthan")
      return less(arg, v, line);
    if (name == "ge" || name == ">=")
      return !less(v, arg, line);
    if (name == "in")
      return contains(arg, v, line);
    if (name == "sameas")
      return v.kind == arg.kind &&
             (v.kind == Value::Kind::None || v.kind == Value::Kind::Undefined ||
              (v.kind == Value::Kind::Bool && v.b == arg.b) ||
              (v.kind == Value::Kind::Int && v.i == arg.i) ||
              (v.list && v.list == arg.list) || (v.dict && v.dict == arg.dict));
    if (name == "filter")
      return std::find(knownFilters().begin(), knownFilters().end(),
                       pyStr(v)) != knownFilters().end();
    if (name == "test")
      return std::find(knownTests().begin(), knownTests().end(), pyStr(v)) !=
             knownTests().end();
    fail(line, "the '" + name + "' test is not supported");
  }

  //===--------------------------------------------------------------------===//
  // Globals: transformers' (raise_exception, strftime_now) and jinja2's.

  void installGlobals() {
    Scope &g = scopes_[0];
    g["raise_exception"] = makeFunction(
        "raise_exception", [](Renderer &, CallArgs &args, int line) -> Value {
          fail(line, "the template refused the conversation: " +
                         pyStr(args.get(0, "message")));
        });
    g["strftime_now"] = makeFunction(
        "strftime_now", [](Renderer &, CallArgs &args, int line) -> Value {
          Value fmt = args.get(0, "format");
          if (!fmt.isString())
            fail(line, "strftime_now needs a format string");
          std::time_t now = std::time(nullptr);
          std::tm tm{};
          localtime_r(&now, &tm);
          char buf[512];
          size_t n = std::strftime(buf, sizeof buf, fmt.s.c_str(), &tm);
          return Value::string(std::string(buf, n));
        });
    g["range"] = makeFunction(
        "range", [](Renderer &, CallArgs &args, int line) -> Value {
          std::vector<int64_t> a;
          for (const Value &v : args.pos) {
            if (v.kind != Value::Kind::Int && v.kind != Value::Kind::Bool)
              fail(line,
                   std::string("range() needs integers, not ") + typeName(v));
            a.push_back(integer(v));
          }
          if (a.empty() || a.size() > 3)
            fail(line, "range() takes 1 to 3 arguments");
          int64_t start = a.size() > 1 ? a[0] : 0;
          int64_t stop = a.size() > 1 ? a[1] : a[0];
          int64_t step = a.size() > 2 ? a[2] : 1;
          if (step == 0)
            fail(line, "range() step must not be zero");
          const __int128 count =
              step > 0
                  ? (stop > start ? (__int128(stop) - start - 1) / step + 1 : 0)
                  : (start > stop
                         ? (__int128(start) - stop - 1) / -__int128(step) + 1
                         : 0);
          if (count > kMaxRange)
            fail(line, "range() of over " + std::to_string(kMaxRange) +
                           " items (the sandbox's limit)");
          List items;
          for (__int128 i = 0; i < count; ++i)
            items.push_back(
                Value::integer(static_cast<int64_t>(start + i * step)));
          return Value::makeList(std::move(items));
        });
    g["namespace"] = makeFunction(
        "namespace", [](Renderer &r, CallArgs &args, int line) -> Value {
          Value ns = Value::makeNamespace();
          r.namespaces_.push_back(ns.dict);
          for (const Value &v : args.pos) {
            if (v.kind != Value::Kind::Dict)
              fail(line, "namespace() takes a mapping and keyword arguments");
            for (const auto &[k, x] : v.dict->items)
              ns.dict->set(k, x);
          }
          for (auto &[k, v] : args.kw)
            ns.dict->set(k, v);
          return ns;
        });
    g["dict"] =
        makeFunction("dict", [](Renderer &, CallArgs &args, int line) -> Value {
          Value d = Value::makeDict();
          for (const Value &v : args.pos) {
            if (v.kind != Value::Kind::Dict)
              fail(line, "dict() takes a mapping and keyword arguments");
            for (const auto &[k, x] : v.dict->items)
              d.dict->set(k, x);
          }
          for (auto &[k, v] : args.kw)
            d.dict->set(k, v);
          return d;
        });
  }

  std::vector<Scope> scopes_;
  std::string out_;
  int callDepth_ = 0;
  std::vector<std::shared_ptr<DictData>> namespaces_;
};

Value messagesValue(const std::vector<ChatMessage> &messages) {
  List list;
  for (const ChatMessage &m : messages) {
    Value d = Value::makeDict();
    d.dict->set("role", Value::string(m.role));
    d.dict->set("content", Value::string(m.content));
    list.push_back(std::move(d));
  }
  return Value::makeList(std::move(list));
}

} // namespace

struct ChatTemplate::Impl {
  Body body;

  std::string render(std::shared_ptr<DictData> variables,
                     const ChatInputs &inputs) const {
    auto setDefault = [&](const char *name, Value v) {
      if (!variables->find(name))
        variables->set(name, std::move(v));
    };
    setDefault("bos_token", Value::string(inputs.bos_token));
    setDefault("eos_token", Value::string(inputs.eos_token));
    setDefault("add_generation_prompt",
               Value::boolean(inputs.add_generation_prompt));
    Renderer renderer(std::move(variables));
    return renderer.run(body);
  }
};

ChatTemplate::ChatTemplate(std::string_view source)
    : impl_(std::make_unique<Impl>()) {
  Lexer lexer(source);
  Parser parser(lexer.tokens());
  impl_->body = parser.document();
}

std::string ChatTemplate::parseError(std::string_view source) {
  try {
    ChatTemplate parsed(source);
  } catch (const Error &e) {
    return e.what();
  }
  return {};
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate &&) noexcept = default;
ChatTemplate &ChatTemplate::operator=(ChatTemplate &&) noexcept = default;

std::string ChatTemplate::render(const std::vector<ChatMessage> &messages,
                                 const ChatInputs &inputs) const {
  auto variables = std::make_shared<DictData>();
  variables->set("messages", messagesValue(messages));
  return impl_->render(std::move(variables), inputs);
}

namespace {
// The variables of a JSON conversation (an array of messages, or an object
// with "messages"; empty: no messages), with `more` messages appended.
std::shared_ptr<DictData>
conversationVariables(std::string_view json,
                      const std::vector<ChatMessage> &more) {
  Value doc = json.empty() ? Value::makeList() : JsonReader(json).document();
  auto variables = std::make_shared<DictData>();
  if (doc.kind == Value::Kind::List) {
    variables->set("messages", doc);
  } else if (doc.kind == Value::Kind::Dict) {
    const Value *messages = doc.dict->find("messages");
    if (!messages || messages->kind != Value::Kind::List)
      throw Error("chat messages: the JSON object has no \"messages\" array");
    variables = doc.dict;
  } else {
    throw Error("chat messages: expected a JSON array of messages or an "
                "object with \"messages\"");
  }
  List &messages = *variables->find("messages")->list;
  for (const Value &m : messages)
    if (m.kind != Value::Kind::Dict || !m.dict->find("role"))
      throw Error("chat messages: every message must be an object with a "
                  "\"role\"");
  const List appended = *messagesValue(more).list;
  messages.insert(messages.end(), appended.begin(), appended.end());
  return variables;
}
} // namespace

std::string
ChatTemplate::renderJson(std::string_view json, const ChatInputs &inputs,
                         const std::vector<ChatMessage> &more) const {
  return impl_->render(conversationVariables(json, more), inputs);
}

std::string ChatTemplate::lastRole(std::string_view json) {
  std::shared_ptr<DictData> variables = conversationVariables(json, {});
  const List &messages = *variables->find("messages")->list;
  if (messages.empty())
    return {};
  const Value *role = messages.back().dict->find("role");
  return role->isString() ? role->s : pyStr(*role);
}

std::string ChatTemplate::appendToJson(std::string_view json,
                                       const std::vector<ChatMessage> &more) {
  std::shared_ptr<DictData> variables = conversationVariables(json, more);
  Value doc;
  if (!json.empty() && JsonReader(json).document().kind == Value::Kind::Dict) {
    doc.kind = Value::Kind::Dict;
    doc.dict = variables;
  } else {
    doc = *variables->find("messages");
  }
  std::string out;
  toJson(out, doc, 1, false, 0, 0);
  return out + "\n";
}

} // namespace loom
