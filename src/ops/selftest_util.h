#pragma once
// Internal to the selftest case files: a small builder that names tensors and checks.
#include <functional>
#include <string>
#include <vector>

#include "ops/selftest.h"

namespace pgolf::ops::selftest {

using T = std::vector<Tensor>;

inline double tol(DType out, bool reduce = false) {
  if (out == DType::F32) return reduce ? kTolF32Reduce : kTolF32;
  return kTolBF16;
}

class Builder {
 public:
  // The inputs' stream is seeded by the run seed and the case's identity, so cases are independent.
  Builder(std::string op, std::string dtype, const Shape& shape, uint64_t seed)
      : in(seed * 0x100000001B3ull ^ std::hash<std::string>{}(op + "|" + dtype + "|" + shape.str())) {
    c_.op = std::move(op);
    c_.dtype = std::move(dtype);
    c_.shape = shape.str();
  }
  int add(const std::string& name, Tensor t) {
    c_.names.push_back(name);
    c_.init.push_back(std::move(t));
    return static_cast<int>(c_.init.size()) - 1;
  }
  void check(int idx, double tolerance) { c_.checks.emplace_back(idx, tolerance); }
  void run(std::function<void(const T&)> f) { c_.run = std::move(f); }
  void set_shape(const std::string& s) { c_.shape = s; }
  Case done() { return std::move(c_); }

  Inputs in;

 private:
  Case c_;
};

}  // namespace pgolf::ops::selftest
