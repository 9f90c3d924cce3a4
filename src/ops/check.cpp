#include "ops/check.h"

namespace pgolf::ops {

Device check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  bool have = false;
  Device dev = Device::CPU;
  std::string all;
  bool mixed = false;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    all += (all.empty() ? "" : ", ") + t->desc();
    if (!have) {
      dev = t->device();
      have = true;
    } else if (t->device() != dev) {
      mixed = true;
    }
  }
  PG_CHECK(!mixed, "{}: tensors on different devices ({})", op, all);
  return dev;
}

void check_dtype(const char* op, const char* arg, const Tensor& t, std::initializer_list<DType> allowed) {
  std::string names;
  for (DType d : allowed) {
    if (t.dtype() == d) return;
    names += (names.empty() ? "" : "/") + std::string(dtype_name(d));
  }
  PG_FAIL("{}: {} is {}, expected dtype {}", op, arg, t.desc(), names);
}

void check_shape(const char* op, const char* arg, const Tensor& t, const Shape& expected) {
  PG_CHECK(t.shape() == expected, "{}: {} is {}, expected shape {}", op, arg, t.desc(), expected.str());
}

void check_defined(const char* op, const char* arg, const Tensor& t) {
  PG_CHECK(t.defined(), "{}: {} is missing", op, arg);
}

void check_ndim(const char* op, const char* arg, const Tensor& t, int nd) {
  PG_CHECK(t.ndim() == nd, "{}: {} is {}, expected {} dimensions", op, arg, t.desc(), nd);
}

}  // namespace pgolf::ops
