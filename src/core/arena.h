#pragma once
// Arena: the memory plan. One block per device is reserved before training starts; every
// activation, gradient and scratch buffer of a step is a bump allocation inside it, released by
// resetting to a mark. In measuring mode nothing is backed: a dry run of the step records the
// peak, and the arena is then reserved with exactly that size. A step never calls cudaMalloc,
// so it can be captured into a CUDA graph, and its addresses are the same every step.
#include <cstddef>
#include <string>

#include "core/tensor.h"

namespace pgolf {

class Arena {
 public:
  explicit Arena(Device dev = Device::CPU, std::string name = "arena") : dev_(dev), name_(std::move(name)) {}

  // Back the arena with `bytes` of memory (frees any previous block; all tensors from it die).
  void reserve(size_t bytes);
  // Measuring mode: allocations return tensors with no memory; only offsets and the peak are tracked.
  void begin_measure();
  size_t end_measure();  // returns the peak bytes of the measured run and leaves measuring mode

  Tensor alloc(const Shape& shape, DType dtype, const char* what = "buffer");
  Tensor zeros(const Shape& shape, DType dtype, const char* what = "buffer");

  size_t mark() const { return top_; }
  void reset(size_t mark = 0);
  bool measuring() const { return measuring_; }
  size_t capacity() const { return capacity_; }
  size_t used() const { return top_; }
  size_t peak() const { return peak_; }
  Device device() const { return dev_; }

  static constexpr size_t kAlign = 256;

 private:
  Device dev_;
  std::string name_;
  Tensor block_;
  size_t capacity_ = 0;
  size_t top_ = 0;
  size_t peak_ = 0;
  bool measuring_ = false;
};

}  // namespace pgolf
