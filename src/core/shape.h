#pragma once
// A small fixed-capacity shape (up to 6 dims), row-major contiguous.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace pgolf {

struct Shape {
  static constexpr int kMaxDims = 6;
  std::array<int64_t, kMaxDims> d{};
  int nd = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  template <class It> static Shape from(It begin, It end) {
    Shape s;
    for (auto it = begin; it != end; ++it) s.push(static_cast<int64_t>(*it));
    return s;
  }

  void push(int64_t v);
  int64_t numel() const;
  int64_t operator[](int i) const { return d[static_cast<size_t>(i < 0 ? i + nd : i)]; }
  int64_t& operator[](int i) { return d[static_cast<size_t>(i < 0 ? i + nd : i)]; }
  int size() const { return nd; }
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "[4, 8, 64]"
};

}  // namespace pgolf
