#pragma once
// Random fills through the counter-based RNG (core/rng.h): identical values on CPU and GPU.
#include <cstdint>

#include "core/tensor.h"

namespace pgolf::ops {

// Element i gets rng::uniform(seed, offset + i, lo, hi) / mean + std * rng::normal(seed, offset + i).
void fill_uniform(const Tensor& x, uint64_t seed, uint64_t offset, float lo, float hi);
void fill_normal(const Tensor& x, uint64_t seed, uint64_t offset, float mean, float std);

#if PGOLF_CUDA
namespace cuda {
void fill_uniform(const Tensor& x, uint64_t seed, uint64_t offset, float lo, float hi);
void fill_normal(const Tensor& x, uint64_t seed, uint64_t offset, float mean, float std);
}  // namespace cuda
#endif

}  // namespace pgolf::ops
