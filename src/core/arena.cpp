#include "core/arena.h"

namespace pgolf {

void Arena::reserve(size_t bytes) {
  block_ = Tensor();
  block_ = Tensor::empty(Shape{static_cast<int64_t>(bytes)}, DType::U8, dev_);
  capacity_ = bytes;
  top_ = 0;
  peak_ = 0;
  measuring_ = false;
}

void Arena::begin_measure() {
  measuring_ = true;
  top_ = 0;
  peak_ = 0;
}

size_t Arena::end_measure() {
  measuring_ = false;
  size_t p = peak_;
  top_ = 0;
  peak_ = 0;
  return p;
}

Tensor Arena::alloc(const Shape& shape, DType dtype, const char* what) {
  size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  size_t start = (top_ + kAlign - 1) / kAlign * kAlign;
  size_t end = start + bytes;
  if (!measuring_) {
    PG_CHECK(end <= capacity_,
             "{}: the memory plan is too small for {} {}{} ({} bytes needed at offset {}, capacity {}); "
             "the step allocated more than its planning run measured",
             name_, what, dtype_name(dtype), shape.str(), bytes, start, capacity_);
  }
  top_ = end;
  if (top_ > peak_) peak_ = top_;
  void* p = measuring_ ? nullptr : static_cast<char*>(block_.data()) + start;
  return Tensor::from_blob(p, shape, dtype, dev_);
}

Tensor Arena::zeros(const Shape& shape, DType dtype, const char* what) {
  Tensor t = alloc(shape, dtype, what);
  if (!measuring_) t.zero_();
  return t;
}

void Arena::reset(size_t mark) {
  PG_CHECK(mark <= top_, "{}: reset to {} above top {}", name_, mark, top_);
  top_ = mark;
}

}  // namespace pgolf
