#pragma once
// Internal helpers of the CPU op implementations (not part of the op contracts): element
// load/store with f32/bf16 conversion, dtype visitors and common argument checks.
#include <cstdint>

#include "core/tensor.h"
#include "ops/check.h"

namespace pgolf::ops::cpu {

// Load an element into the compute scalar S (float or double).
template <class S> inline S ld(float v) { return static_cast<S>(v); }
template <class S> inline S ld(double v) { return static_cast<S>(v); }
template <class S> inline S ld(bf16 v) { return static_cast<S>(bf16_to_f32(v)); }

// Store a compute value into an element (bf16 rounds to nearest even through f32).
template <class S> inline void st(float& d, S v) { d = static_cast<float>(v); }
template <class S> inline void st(double& d, S v) { d = static_cast<double>(v); }
template <class S> inline void st(bf16& d, S v) { d = f32_to_bf16(static_cast<float>(v)); }

// Calls f with the tensor's data as float* or bf16*; any other dtype fails naming the op.
template <class F> inline void visit_fb(const char* op, const char* arg, const Tensor& t, F&& f) {
  switch (t.dtype()) {
    case DType::F32: f(static_cast<float*>(t.data())); return;
    case DType::BF16: f(static_cast<bf16*>(t.data())); return;
    default: PG_FAIL("{}: {} is {}, expected dtype f32/bf16", op, arg, t.desc());
  }
}

inline void check_fb(const char* op, const char* arg, const Tensor& t) {
  check_defined(op, arg, t);
  check_dtype(op, arg, t, {DType::F32, DType::BF16});
}

inline void check_f32(const char* op, const char* arg, const Tensor& t) {
  check_defined(op, arg, t);
  check_dtype(op, arg, t, {DType::F32});
}

inline void check_same_numel(const char* op, const char* an, const Tensor& a, const char* bn, const Tensor& b) {
  PG_CHECK(a.numel() == b.numel(), "{}: {} is {} but {} is {}: element counts differ", op, an, a.desc(), bn,
           b.desc());
}

}  // namespace pgolf::ops::cpu
