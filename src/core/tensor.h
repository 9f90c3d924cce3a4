#pragma once
// Tensor: a typed, shaped, contiguous view of memory on one device. Owning tensors keep their
// storage alive through a shared pointer; views (arena slices, from_blob) do not own.
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/shape.h"

namespace pgolf {

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype, Device dev = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype, Device dev = Device::CPU);
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device dev);
  // Host vector → tensor on `dev` (f32 / i32 helpers for tests and small tables).
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape, Device dev = Device::CPU);
  static Tensor from_vector(const std::vector<int32_t>& v, const Shape& shape, Device dev = Device::CPU);

  bool defined() const { return data_ != nullptr || (shape_.nd > 0 && shape_.numel() == 0); }
  explicit operator bool() const { return defined(); }
  void* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int ndim() const { return shape_.nd; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::CUDA; }

  template <class T> T* ptr() const {
    PG_CHECK(dtype_of<T>() == dtype_, "tensor {} accessed as {}", desc(), dtype_name(dtype_of<T>()));
    return static_cast<T*>(data_);
  }

  // Same memory, new shape (numel must match).
  Tensor view(const Shape& s) const;
  // Rows [begin, end) of dim 0.
  Tensor slice(int64_t begin, int64_t end) const;
  // Fresh owning copy on `dev`.
  Tensor to(Device dev) const;
  // Copy contents from `src` (same shape and dtype; any devices).
  void copy_from(const Tensor& src) const;
  void zero_() const;

  // Host copy as float / int32 (converts bf16/f16/u16/...); for tests, logging, checkpoints.
  std::vector<float> to_float_vector() const;
  std::vector<int32_t> to_int_vector() const;

  std::string desc() const;  // "bf16[4, 8]@cuda"

 private:
  std::shared_ptr<void> owner_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

}  // namespace pgolf
