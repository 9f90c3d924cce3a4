#pragma once
// Raw memory on a device. The only place that calls cudaMalloc/cudaFree; out-of-memory errors
// name the request, the device and what is free.
#include <cstddef>

#include "core/dtype.h"

namespace pgolf {

void* mem_alloc(size_t bytes, Device dev, const char* what = "tensor");
void mem_free(void* p, Device dev);
// Copies bytes between any two devices (synchronous with respect to the current stream).
void mem_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void mem_zero(void* p, Device dev, size_t bytes);

bool cuda_available();       // built with CUDA and a device is present
int cuda_device_count();     // 0 without CUDA
size_t cuda_bytes_in_use();  // bytes this process holds through mem_alloc on the GPU
size_t cuda_peak_bytes();    // high-water mark of the above

}  // namespace pgolf
