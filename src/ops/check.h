#pragma once
// Argument checks shared by every op: failures name the op, the tensors' shapes/dtypes and the device.
#include <initializer_list>
#include <string>

#include "core/tensor.h"

namespace pgolf::ops {

// All defined tensors in `ts` live on the same device; returns it.
Device check_same_device(const char* op, std::initializer_list<const Tensor*> ts);
void check_dtype(const char* op, const char* arg, const Tensor& t, std::initializer_list<DType> allowed);
void check_shape(const char* op, const char* arg, const Tensor& t, const Shape& expected);
void check_defined(const char* op, const char* arg, const Tensor& t);
void check_ndim(const char* op, const char* arg, const Tensor& t, int nd);

}  // namespace pgolf::ops

// Calls the CUDA implementation, or fails clearly in a CPU-only build.
#if PGOLF_CUDA
#define PG_CUDA_DISPATCH(op, call) call
#else
#define PG_CUDA_DISPATCH(op, call) PG_FAIL("{}: cuda tensors given but this pgolf was built without CUDA", op)
#endif
