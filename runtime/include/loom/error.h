// The runtime's error type: every failure (bad artifact, bad input, out of
// memory) is thrown as loom::Error with a one-line message naming the problem.
// The C API (loom.h) turns it into a status code and a message.
#ifndef LOOM_ERROR_H
#define LOOM_ERROR_H

#include <stdexcept>
#include <string>

namespace loom {

class Error : public std::runtime_error {
public:
  explicit Error(const std::string &what) : std::runtime_error(what) {}
};

} // namespace loom

#endif // LOOM_ERROR_H
