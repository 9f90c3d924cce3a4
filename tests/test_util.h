#pragma once
// Helpers shared by the test files (tests/ is on the test target's include path).
#include <exception>
#include <functional>
#include <string>

namespace pgolf::test {

// The message of the exception `f` throws, or "" when it throws none: for checking that an error
// names the file, key or argument at fault.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace pgolf::test
