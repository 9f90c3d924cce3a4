#include "core/shape.h"

#include "core/error.h"

namespace pgolf {

Shape::Shape(std::initializer_list<int64_t> dims) {
  for (int64_t v : dims) push(v);
}

void Shape::push(int64_t v) {
  PG_CHECK(nd < kMaxDims, "shape has more than {} dimensions", kMaxDims);
  PG_CHECK(v >= 0, "negative dimension {}", v);
  d[static_cast<size_t>(nd++)] = v;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < nd; ++i) n *= d[static_cast<size_t>(i)];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (nd != o.nd) return false;
  for (int i = 0; i < nd; ++i)
    if (d[static_cast<size_t>(i)] != o.d[static_cast<size_t>(i)]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < nd; ++i) {
    if (i) s += ", ";
    s += std::to_string(d[static_cast<size_t>(i)]);
  }
  return s + "]";
}

}  // namespace pgolf
