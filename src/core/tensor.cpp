#include "core/tensor.h"

#include <cstring>

#include "core/memory.h"

namespace pgolf {

Tensor Tensor::empty(const Shape& shape, DType dtype, Device dev) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = dev;
  size_t bytes = t.nbytes();
  if (bytes > 0) {
    void* p = mem_alloc(bytes, dev);
    t.owner_ = std::shared_ptr<void>(p, [dev](void* q) { mem_free(q, dev); });
    t.data_ = p;
  }
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.zero_();
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device dev) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = dev;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape, Device dev) {
  PG_CHECK(static_cast<int64_t>(v.size()) == shape.numel(), "from_vector: {} values for shape {}", v.size(),
           shape.str());
  Tensor t = empty(shape, DType::F32, dev);
  if (!v.empty()) mem_copy(t.data_, dev, v.data(), Device::CPU, t.nbytes());
  return t;
}

Tensor Tensor::from_vector(const std::vector<int32_t>& v, const Shape& shape, Device dev) {
  PG_CHECK(static_cast<int64_t>(v.size()) == shape.numel(), "from_vector: {} values for shape {}", v.size(),
           shape.str());
  Tensor t = empty(shape, DType::I32, dev);
  if (!v.empty()) mem_copy(t.data_, dev, v.data(), Device::CPU, t.nbytes());
  return t;
}

Tensor Tensor::view(const Shape& s) const {
  PG_CHECK(s.numel() == numel(), "view {} of tensor {}: element counts differ", s.str(), desc());
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  PG_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= dim(0), "slice [{}, {}) of tensor {}", begin, end,
           desc());
  Tensor t = *this;
  t.shape_[0] = end - begin;
  int64_t row = dim(0) ? numel() / dim(0) : 0;
  t.data_ = static_cast<char*>(data_) + static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::to(Device dev) const {
  Tensor t = empty(shape_, dtype_, dev);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) const {
  PG_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, "copy {} into {}: shape or dtype differ", src.desc(),
           desc());
  if (nbytes()) mem_copy(data_, device_, src.data_, src.device_, nbytes());
}

void Tensor::zero_() const {
  if (nbytes()) mem_zero(data_, device_, nbytes());
}

std::vector<float> Tensor::to_float_vector() const {
  Tensor h = device_ == Device::CPU ? *this : to(Device::CPU);
  std::vector<float> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype_) {
      case DType::F32: out[i] = static_cast<const float*>(h.data_)[i]; break;
      case DType::BF16: out[i] = bf16_to_f32(static_cast<const bf16*>(h.data_)[i]); break;
      case DType::F16: out[i] = f16_bits_to_f32(static_cast<const uint16_t*>(h.data_)[i]); break;
      case DType::I32: out[i] = static_cast<float>(static_cast<const int32_t*>(h.data_)[i]); break;
      case DType::U16: out[i] = static_cast<const uint16_t*>(h.data_)[i]; break;
      case DType::U8: out[i] = static_cast<const uint8_t*>(h.data_)[i]; break;
      case DType::I8: out[i] = static_cast<const int8_t*>(h.data_)[i]; break;
    }
  }
  return out;
}

std::vector<int32_t> Tensor::to_int_vector() const {
  Tensor h = device_ == Device::CPU ? *this : to(Device::CPU);
  std::vector<int32_t> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype_) {
      case DType::I32: out[i] = static_cast<const int32_t*>(h.data_)[i]; break;
      case DType::U16: out[i] = static_cast<const uint16_t*>(h.data_)[i]; break;
      case DType::U8: out[i] = static_cast<const uint8_t*>(h.data_)[i]; break;
      case DType::I8: out[i] = static_cast<const int8_t*>(h.data_)[i]; break;
      default: PG_FAIL("to_int_vector on {} tensor", dtype_name(dtype_));
    }
  }
  return out;
}

std::string Tensor::desc() const {
  return fmt::format("{}{}@{}", dtype_name(dtype_), shape_.str(), device_name(device_));
}

}  // namespace pgolf
