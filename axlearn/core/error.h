// Errors. `Error` is what a user can cause (bad shapes, axes, dtypes, files, flags) and always
// carries enough context to find the mistake. `AXLEARN_CHECK` guards internal invariants and
// names file:line; it throws `InternalError` rather than aborting.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace axlearn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& what) : std::logic_error(what) {}
};

namespace detail {
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws axlearn::Error with the pieces streamed together: fail("op add: shapes ", a, " and ", b).
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::str_cat(args...));
}

}  // namespace axlearn

#define AXLEARN_CHECK(cond, ...)                                                             \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      throw ::axlearn::InternalError(::axlearn::detail::str_cat(                             \
          __FILE__, ":", __LINE__, ": check failed: " #cond " " __VA_OPT__(, __VA_ARGS__))); \
    }                                                                                        \
  } while (0)
