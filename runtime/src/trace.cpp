#include "trace.h"

#include "loom/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace loom::rt {

void TraceRecorder::record(std::string_view name, std::string_view kernel,
                           int64_t rows, int64_t start_pos,
                           Clock::time_point begin, Clock::time_point end) {
  using us = std::chrono::duration<double, std::micro>;
  events_.push_back({name, kernel, rows, start_pos, us(begin - epoch_).count(),
                     us(end - begin).count()});
}

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
size_t utf8Length(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80           ? 1
             : (c >> 5) == 0x6  ? 2
             : (c >> 4) == 0xE  ? 3
             : (c >> 3) == 0x1E ? 4
                                : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
      return 0;
  return n;
}

} // namespace

void appendJsonString(std::string &out, std::string_view s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = utf8Length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  out += '"';
}

void TraceRecorder::write(const std::string &path) const {
  std::string json = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[";
  char num[96];
  for (size_t i = 0; i < events_.size(); ++i) {
    const Event &e = events_[i];
    json += i ? ",\n" : "\n";
    json += "{\"name\":";
    appendJsonString(json, e.name);
    json += ",\"cat\":\"dispatch\",\"ph\":\"X\",\"pid\":1,\"tid\":1";
    std::snprintf(num, sizeof num, ",\"ts\":%.3f,\"dur\":%.3f", e.ts_us,
                  e.dur_us);
    json += num;
    json += ",\"args\":{\"kernel\":";
    appendJsonString(json, e.kernel);
    std::snprintf(num, sizeof num, ",\"rows\":%lld,\"start_pos\":%lld}}",
                  static_cast<long long>(e.rows),
                  static_cast<long long>(e.start_pos));
    json += num;
  }
  json += "\n]}\n";

  std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "wb"),
                                           &std::fclose);
  if (!f)
    throw Error("cannot write trace '" + path + "': " + std::strerror(errno));
  if (std::fwrite(json.data(), 1, json.size(), f.get()) != json.size() ||
      std::fflush(f.get()) != 0)
    throw Error("cannot write trace '" + path + "': " + std::strerror(errno));
}

} // namespace loom::rt
