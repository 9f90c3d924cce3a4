#pragma once
// Error checks for CUDA runtime, cuBLAS(Lt), cuSOLVER and NCCL calls. Each names the call site and
// what was being done, e.g. PG_CUDA_CHECK(cudaMemcpyAsync(...), "copy of logits to host").
#if PGOLF_CUDA
#include <cuda_runtime.h>

#include "core/error.h"

namespace pgolf::detail {
[[noreturn]] void cuda_fail(const char* file, int line, const char* expr, int code, const char* name,
                            const char* what);
const char* cublas_status_name(int status);
}  // namespace pgolf::detail

#define PG_CUDA_CHECK(expr, what)                                                                       \
  do {                                                                                                  \
    cudaError_t pg_err_ = (expr);                                                                       \
    if (pg_err_ != cudaSuccess)                                                                         \
      ::pgolf::detail::cuda_fail(__FILE__, __LINE__, #expr, static_cast<int>(pg_err_),                \
                                 cudaGetErrorString(pg_err_), what);                                    \
  } while (0)

// After a kernel launch: catches bad launch configurations immediately.
#define PG_CUDA_LAUNCH_CHECK(what) PG_CUDA_CHECK(cudaGetLastError(), what)

#define PG_CUBLAS_CHECK(expr, what)                                                                     \
  do {                                                                                                  \
    int pg_st_ = static_cast<int>(expr);                                                                \
    if (pg_st_ != 0)                                                                                    \
      ::pgolf::detail::cuda_fail(__FILE__, __LINE__, #expr, pg_st_,                                   \
                                 ::pgolf::detail::cublas_status_name(pg_st_), what);                    \
  } while (0)

#define PG_CUSOLVER_CHECK(expr, what)                                                                   \
  do {                                                                                                  \
    int pg_st_ = static_cast<int>(expr);                                                                \
    if (pg_st_ != 0) ::pgolf::detail::cuda_fail(__FILE__, __LINE__, #expr, pg_st_, "cusolver error", what); \
  } while (0)

#define PG_NCCL_CHECK(expr, what)                                                                       \
  do {                                                                                                  \
    int pg_st_ = static_cast<int>(expr);                                                                \
    if (pg_st_ != 0)                                                                                    \
      ::pgolf::detail::cuda_fail(__FILE__, __LINE__, #expr, pg_st_,                                   \
                                 ncclGetErrorString(static_cast<ncclResult_t>(pg_st_)), what);          \
  } while (0)
#endif
