#include "artifact/format.h"

#include <set>

#include "core/dtype.h"
#include "core/error.h"

namespace pgolf::artifact {

std::string_view storage_kind_name(StorageKind k) {
  switch (k) {
    case StorageKind::F32: return "f32";
    case StorageKind::F16: return "f16";
    case StorageKind::BF16: return "bf16";
    case StorageKind::IntRow: return "int-row";
    case StorageKind::Bytes: return "bytes";
  }
  return "?";
}

int64_t StoredTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void StoredTensor::validate() const {
  const std::string what = fmt::format("tensor '{}'", name);
  PG_CHECK(!name.empty() && name.size() <= 0xffff, "artifact tensor name must be 1..65535 bytes, got {}", name.size());
  PG_CHECK(!shape.empty() && shape.size() <= 8, "{}: rank {} not in [1, 8]", what, shape.size());
  for (int64_t d : shape) PG_CHECK(d >= 0, "{}: negative dimension {}", what, d);
  const size_t n = static_cast<size_t>(numel());
  switch (kind) {
    case StorageKind::F32: PG_CHECK(f32.size() == n, "{}: {} f32 values for {} elements", what, f32.size(), n); break;
    case StorageKind::F16:
    case StorageKind::BF16:
      PG_CHECK(half.size() == n, "{}: {} half values for {} elements", what, half.size(), n);
      break;
    case StorageKind::IntRow:
      PG_CHECK(q.rows == shape[0] && q.rows * q.cols == numel(), "{}: quantized ({}, {}) does not match shape of {} elements",
               what, q.rows, q.cols, n);
      q.validate(what);
      if (lqer) {
        lqer->validate(what);
        PG_CHECK(lqer->rows == q.rows && lqer->cols == q.cols, "{}: LQER ({}, {}) vs matrix ({}, {})", what, lqer->rows,
                 lqer->cols, q.rows, q.cols);
      }
      break;
    case StorageKind::Bytes:
      PG_CHECK(shape.size() == 1 && bytes.size() == n, "{}: {} bytes for shape of {} elements", what, bytes.size(), n);
      break;
    default: PG_FAIL("{}: unknown storage kind {}", what, static_cast<int>(kind));
  }
  PG_CHECK(kind == StorageKind::IntRow || !lqer, "{}: LQER correction on a {} tensor", what, storage_kind_name(kind));
}

StoredTensor StoredTensor::make_f32(std::string name, std::vector<int64_t> shape, std::vector<float> values) {
  StoredTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.kind = StorageKind::F32;
  t.f32 = std::move(values);
  t.validate();
  return t;
}

StoredTensor StoredTensor::make_f16(std::string name, std::vector<int64_t> shape, const std::vector<float>& values) {
  StoredTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.kind = StorageKind::F16;
  t.half = quant::to_f16(values);
  t.validate();
  return t;
}

StoredTensor StoredTensor::make_bf16(std::string name, std::vector<int64_t> shape, const std::vector<float>& values) {
  StoredTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.kind = StorageKind::BF16;
  t.half.resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) t.half[i] = f32_to_bf16(values[i]).bits;
  t.validate();
  return t;
}

StoredTensor StoredTensor::make_int_row(std::string name, std::vector<int64_t> shape, quant::QuantizedMatrix q) {
  StoredTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.kind = StorageKind::IntRow;
  t.q = std::move(q);
  t.validate();
  return t;
}

StoredTensor StoredTensor::make_bytes(std::string name, std::vector<uint8_t> bytes) {
  StoredTensor t;
  t.name = std::move(name);
  t.shape = {static_cast<int64_t>(bytes.size())};
  t.kind = StorageKind::Bytes;
  t.bytes = std::move(bytes);
  t.validate();
  return t;
}

const StoredTensor* Artifact::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const StoredTensor& Artifact::get(std::string_view name) const {
  const StoredTensor* t = find(name);
  PG_CHECK(t != nullptr, "artifact has no tensor '{}' ({} tensors stored)", name, tensors.size());
  return *t;
}

void Artifact::validate() const {
  std::set<std::string_view> names;
  for (const auto& t : tensors) {
    t.validate();
    PG_CHECK(names.insert(t.name).second, "artifact: duplicate tensor name '{}'", t.name);
  }
}

std::vector<float> dequantize(const StoredTensor& t) {
  switch (t.kind) {
    case StorageKind::F32: return t.f32;
    case StorageKind::F16: return quant::from_f16(t.half);
    case StorageKind::BF16: {
      std::vector<float> out(t.half.size());
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_f32(bf16{t.half[i]});
      return out;
    }
    case StorageKind::IntRow: {
      std::vector<float> out = quant::dequantize(t.q);
      if (t.lqer) t.lqer->add_to(out);
      return out;
    }
    case StorageKind::Bytes: PG_FAIL("tensor '{}' holds opaque bytes, not numbers", t.name);
  }
  PG_FAIL("tensor '{}': unknown storage kind {}", t.name, static_cast<int>(t.kind));
}

}  // namespace pgolf::artifact
