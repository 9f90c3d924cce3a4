#include "core/arena.h"

#include <algorithm>
#include <cstdint>

namespace pgolf {

void Arena::reserve(size_t bytes) {
  block_ = Tensor();
  block_ = Tensor::empty(Shape{static_cast<int64_t>(bytes)}, DType::U8, dev_);
  capacity_ = bytes;
  top_ = 0;
  peak_ = 0;
  holes_.clear();
  measuring_ = false;
}

void Arena::begin_measure() {
  measuring_ = true;
  top_ = 0;
  peak_ = 0;
  holes_.clear();
}

size_t Arena::end_measure() {
  measuring_ = false;
  size_t p = peak_;
  top_ = 0;
  peak_ = 0;
  holes_.clear();
  return p;
}

size_t Arena::hole_bytes() const {
  size_t n = 0;
  for (const Hole& h : holes_) n += h.size;
  return n;
}

size_t Arena::take_hole(size_t extent) {
  size_t best = SIZE_MAX;
  for (size_t i = 0; i < holes_.size(); ++i)
    if (holes_[i].size >= extent && (best == SIZE_MAX || holes_[i].size < holes_[best].size)) best = i;
  if (best == SIZE_MAX) return SIZE_MAX;
  Hole& h = holes_[best];
  const size_t offset = h.offset;
  h.offset += extent;
  h.size -= extent;
  if (h.size == 0) holes_.erase(holes_.begin() + static_cast<std::ptrdiff_t>(best));
  return offset;
}

Arena::Block Arena::alloc_block(const Shape& shape, DType dtype, const char* what) {
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  size_t start = bytes > 0 && !holes_.empty() ? take_hole(round_up(bytes)) : SIZE_MAX;
  if (start == SIZE_MAX) {
    start = round_up(top_);
    const size_t end = start + bytes;
    if (!measuring_) {
      PG_CHECK(end <= capacity_,
               "{}: the memory plan is too small for {} {}{} ({} bytes needed at offset {}, capacity {}); "
               "the step allocated more than its planning run measured",
               name_, what, dtype_name(dtype), shape.str(), bytes, start, capacity_);
    }
    top_ = end;
    if (top_ > peak_) peak_ = top_;
  }
  if (trace_) trace_->push_back(Event{true, start, bytes, what});
  void* p = measuring_ ? nullptr : static_cast<char*>(block_.data()) + start;
  return Block{Tensor::from_blob(p, shape, dtype, dev_), start, bytes};
}

Tensor Arena::zeros(const Shape& shape, DType dtype, const char* what) {
  Tensor t = alloc(shape, dtype, what);
  if (!measuring_) t.zero_();
  return t;
}

void Arena::free(const Block& b) {
  if (trace_) trace_->push_back(Event{false, b.offset, b.bytes, ""});
  if (b.bytes == 0) return;
  const size_t extent = round_up(b.bytes);
  PG_CHECK(b.offset % kAlign == 0 && b.offset + b.bytes <= top_,
           "{}: free of {} bytes at offset {} outside the allocated range (top {}); freed twice or after a reset?",
           name_, b.bytes, b.offset, top_);
  // The first hole after the block; the block must end before it and start after the one before it.
  auto next = std::lower_bound(holes_.begin(), holes_.end(), b.offset,
                               [](const Hole& h, size_t off) { return h.offset < off; });
  const bool overlaps_next = next != holes_.end() && next->offset < b.offset + extent;
  const bool overlaps_prev = next != holes_.begin() && std::prev(next)->offset + std::prev(next)->size > b.offset;
  PG_CHECK(!overlaps_next && !overlaps_prev, "{}: free of {} bytes at offset {} overlaps freed memory (freed twice?)",
           name_, b.bytes, b.offset);
  if (b.offset + extent >= top_) {  // the topmost block: the top comes down instead of leaving a hole
    top_ = b.offset;
    lower_top_over_trailing_holes();
    return;
  }
  size_t offset = b.offset, size = extent;
  if (next != holes_.begin() && std::prev(next)->offset + std::prev(next)->size == offset) {
    --next;
    offset = next->offset;
    size += next->size;
    next = holes_.erase(next);
  }
  if (next != holes_.end() && next->offset == offset + size) {
    size += next->size;
    next = holes_.erase(next);
  }
  holes_.insert(next, Hole{offset, size});
}

void Arena::lower_top_over_trailing_holes() {
  while (!holes_.empty() && holes_.back().offset + holes_.back().size >= top_) {
    top_ = holes_.back().offset;
    holes_.pop_back();
  }
}

void Arena::reset(size_t mark) {
  // After frees the top may already lie below a mark taken earlier: nothing above it is live then.
  PG_CHECK(mark <= top_ || mark <= peak_, "{}: reset to {} above top {}", name_, mark, top_);
  if (mark >= top_) return;
  top_ = mark;
  while (!holes_.empty() && holes_.back().offset >= top_) holes_.pop_back();
  if (!holes_.empty() && holes_.back().offset + holes_.back().size > top_)
    holes_.back().size = round_up(top_) - holes_.back().offset;
  lower_top_over_trailing_holes();
}

}  // namespace pgolf
