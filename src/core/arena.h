#pragma once
// Arena: the memory plan. One block per device is reserved before training starts; every
// activation, gradient and scratch buffer of a step is an allocation inside it. In measuring mode
// nothing is backed: a dry run of the step records the peak, and the arena is then reserved with
// exactly that size. A step never calls cudaMalloc, so it can be captured into a CUDA graph.
//
// Allocation is a bump of the top, unless blocks have been given back with free(): then the
// smallest hole that fits is reused (best fit, lowest offset on ties; neighbouring holes coalesce,
// and a hole reaching the top lowers the top). All of it is host-side bookkeeping on offsets, so
// the same sequence of alloc/free gives the same offsets every time (every training step gets
// identical addresses, and the measuring run sees the exact peak of the real one). Code that
// never frees behaves exactly like a bump allocator.
#include <cstddef>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pgolf {

class Arena {
 public:
  // One allocation: the tensor plus where it lives, which is what free() needs (in measuring mode
  // the tensor has no memory, so its address cannot identify it).
  struct Block {
    Tensor t;
    size_t offset = 0;
    size_t bytes = 0;  // requested size; the extent is rounded up to kAlign
  };
  // What trace() records: every allocation and free, in order.
  struct Event {
    bool alloc = true;
    size_t offset = 0;
    size_t bytes = 0;
    const char* what = "";  // the allocation's label (a string literal); "" for frees
    bool operator==(const Event& o) const { return alloc == o.alloc && offset == o.offset && bytes == o.bytes; }
  };

  explicit Arena(Device dev = Device::CPU, std::string name = "arena") : dev_(dev), name_(std::move(name)) {}

  // Back the arena with `bytes` of memory (frees any previous block; all tensors from it die).
  void reserve(size_t bytes);
  // Measuring mode: allocations return tensors with no memory; only offsets and the peak are tracked.
  void begin_measure();
  size_t end_measure();  // returns the peak bytes of the measured run and leaves measuring mode

  Tensor alloc(const Shape& shape, DType dtype, const char* what = "buffer") { return alloc_block(shape, dtype, what).t; }
  Tensor zeros(const Shape& shape, DType dtype, const char* what = "buffer");
  Block alloc_block(const Shape& shape, DType dtype, const char* what = "buffer");
  // Gives a block back for reuse. Freeing a block twice, or one this arena did not hand out since
  // the last reset, is detected when its range overlaps a hole or lies above the top.
  void free(const Block& b);

  // The top; reset(mark) frees everything at offsets >= mark (holes included). A block that a
  // later allocation placed in a hole BELOW the mark is not released by that reset: a scope that
  // frees blocks should free its own allocations, or start from an arena without holes.
  size_t mark() const { return top_; }
  void reset(size_t mark = 0);
  bool measuring() const { return measuring_; }
  size_t capacity() const { return capacity_; }
  size_t used() const { return top_; }          // extent in use, holes below the top included
  size_t hole_bytes() const;                     // freed bytes below the top, available for reuse
  size_t holes() const { return holes_.size(); }
  size_t peak() const { return peak_; }
  Device device() const { return dev_; }
  // Records every alloc/free into *sink (nullptr stops); for tests of address stability.
  void trace(std::vector<Event>* sink) { trace_ = sink; }

  static constexpr size_t kAlign = 256;

 private:
  struct Hole {
    size_t offset, size;  // both multiples of kAlign
  };
  static size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
  size_t take_hole(size_t extent);  // best-fit; returns SIZE_MAX when no hole fits
  void lower_top_over_trailing_holes();

  Device dev_;
  std::string name_;
  Tensor block_;
  size_t capacity_ = 0;
  size_t top_ = 0;
  size_t peak_ = 0;
  bool measuring_ = false;
  std::vector<Hole> holes_;  // sorted by offset, disjoint, never adjacent, all below top_
  std::vector<Event>* trace_ = nullptr;
};

}  // namespace pgolf
