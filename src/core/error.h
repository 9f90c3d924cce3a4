#pragma once
// Errors: every failure is a pgolf::Error whose message says where (file:line) and what was being done.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace pgolf {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] void fail_at(const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace pgolf

// PG_CHECK(cond, "fmt", args...): throws pgolf::Error naming the source location and the message.
#define PG_CHECK(cond, ...)                                                              \
  do {                                                                                   \
    if (!(cond)) ::pgolf::detail::fail_at(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)

#define PG_FAIL(...) ::pgolf::detail::fail_at(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
