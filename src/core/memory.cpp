#include "core/memory.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "core/error.h"
#include "core/stream.h"
#if PGOLF_CUDA
#include "core/cuda_check.h"
#endif

namespace pgolf {

namespace {
std::atomic<size_t> g_cuda_in_use{0};
std::atomic<size_t> g_cuda_peak{0};
std::mutex g_sizes_mu;
std::unordered_map<void*, size_t> g_sizes;
}  // namespace

#if PGOLF_CUDA
namespace detail {
void cuda_fail(const char* file, int line, const char* expr, int code, const char* name, const char* what) {
  fail_at(file, line, fmt::format("CUDA error while {}: {} returned {} ({})", what, expr, code, name));
}
const char* cublas_status_name(int s) {
  switch (s) {
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}
}  // namespace detail
#endif

static constexpr size_t kAlign = 256;

void* mem_alloc(size_t bytes, Device dev, const char* what) {
  if (bytes == 0) bytes = 1;
  if (dev == Device::CPU) {
    size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded);
    PG_CHECK(p, "out of host memory allocating {} bytes for {}", bytes, what);
    return p;
  }
#if PGOLF_CUDA
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    PG_FAIL("out of GPU memory allocating {:.1f} MiB for {} ({:.1f} MiB free of {:.1f} MiB; {})", bytes / 1048576.0,
            what, free_b / 1048576.0, total_b / 1048576.0, cudaGetErrorString(err));
  }
  {
    std::lock_guard<std::mutex> lock(g_sizes_mu);
    g_sizes[p] = bytes;
  }
  size_t now = g_cuda_in_use.fetch_add(bytes) + bytes;
  size_t peak = g_cuda_peak.load();
  while (now > peak && !g_cuda_peak.compare_exchange_weak(peak, now)) {
  }
  return p;
#else
  PG_FAIL("cannot allocate {} bytes on cuda for {}: this pgolf was built without CUDA", bytes, what);
#endif
}

void mem_free(void* p, Device dev) {
  if (!p) return;
  if (dev == Device::CPU) {
    std::free(p);
    return;
  }
#if PGOLF_CUDA
  {
    std::lock_guard<std::mutex> lock(g_sizes_mu);
    auto it = g_sizes.find(p);
    if (it != g_sizes.end()) {
      g_cuda_in_use.fetch_sub(it->second);
      g_sizes.erase(it);
    }
  }
  cudaFree(p);
#endif
}

void mem_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    std::memmove(dst, src, bytes);
    return;
  }
#if PGOLF_CUDA
  cudaStream_t s = static_cast<cudaStream_t>(current_stream());
  PG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s), "copying a tensor");
  if (dst_dev == Device::CPU || src_dev == Device::CPU)
    PG_CUDA_CHECK(cudaStreamSynchronize(s), "waiting for a host<->device copy");
#else
  PG_FAIL("copy involving a cuda tensor: this pgolf was built without CUDA");
#endif
}

void mem_zero(void* p, Device dev, size_t bytes) {
  if (bytes == 0) return;
  if (dev == Device::CPU) {
    std::memset(p, 0, bytes);
    return;
  }
#if PGOLF_CUDA
  PG_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, static_cast<cudaStream_t>(current_stream())), "zeroing a tensor");
#endif
}

bool cuda_available() { return cuda_device_count() > 0; }

int cuda_device_count() {
#if PGOLF_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

size_t cuda_bytes_in_use() { return g_cuda_in_use.load(); }
size_t cuda_peak_bytes() { return g_cuda_peak.load(); }

}  // namespace pgolf
