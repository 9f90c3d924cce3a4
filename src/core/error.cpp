#include "core/error.h"

#include <cstring>

namespace pgolf::detail {

void fail_at(const char* file, int line, const std::string& msg) {
  // Keep only the path below src/ so messages stay short and stable across checkouts.
  const char* rel = std::strstr(file, "src/");
  throw Error(fmt::format("{} ({}:{})", msg, rel ? rel : file, line));
}

}  // namespace pgolf::detail
