// UTF-8 helpers shared by the tokenizer (NFC) and the chat-template engine.
#ifndef LOOM_RUNTIME_UTF8_H
#define LOOM_RUNTIME_UTF8_H

#include <cstdint>
#include <string>

namespace loom::utf8 {

// Appends code point `cp` (at most 0x10FFFF) encoded as UTF-8.
inline void append(std::string &out, uint32_t cp) {
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

} // namespace loom::utf8

#endif // LOOM_RUNTIME_UTF8_H
