// GPU matrix products through cuBLASLt.
//
// Row-major is handled with the column-major identity: a row-major (R, C) matrix is the same memory
// as a column-major (C, R) one, so C = op(A) op(B) (row-major) is computed as the column-major
// product C^T = op(B)^T op(A)^T, i.e. cuBLASLt's "A" is our B and its "B" is our A, m = N, n = M.
//
// One cublasLt handle and one 32 MiB workspace per device, made at first use. The algorithm that the
// heuristic picks is cached per (shapes, transposes, dtypes, batch, strides, alignment), together with
// the descriptors, so after the first call for a shape a matmul is a single cublasLtMatmul launch: no
// allocation and no heuristic query, hence safe to capture in a CUDA graph.
//
// f32 inputs use plain fp32 compute unless PGOLF_TF32=1 is set in the environment (TF32 tensor cores).
#include <cublasLt.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "core/cuda_check.h"
#include "core/memory.h"
#include "core/stream.h"
#include "ops/matmul.h"

namespace pgolf::ops::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;
constexpr int kMaxDevices = 16;

struct DeviceContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

std::mutex g_mu;  // guards g_devices and g_plans
std::array<DeviceContext, kMaxDevices> g_devices{};

DeviceContext& device_context(int dev) {
  PG_CHECK(dev >= 0 && dev < kMaxDevices, "matmul: device {} out of range", dev);
  DeviceContext& ctx = g_devices[static_cast<size_t>(dev)];
  if (!ctx.handle) {
    PG_CUBLAS_CHECK(cublasLtCreate(&ctx.handle), "creating the cuBLASLt handle");
    ctx.workspace = mem_alloc(kWorkspaceBytes, Device::CUDA, "cuBLASLt workspace");
  }
  return ctx;
}

bool tf32_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("PGOLF_TF32");
    return v && std::strcmp(v, "1") == 0;
  }();
  return on;
}

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// The largest power of two (<= 256) dividing the address: the heuristic must not assume more.
int alignment_of(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && (a % static_cast<uintptr_t>(al)) != 0) al /= 2;
  return al;
}

// Everything the chosen algorithm depends on. Strides are per batch (0 = operand shared).
using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, int, int, int, int, int64_t, int64_t, int64_t, int, int,
                           int, int>;

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

std::map<PlanKey, std::unique_ptr<Plan>> g_plans;

void set_batch(cublasLtMatrixLayout_t l, int batch, int64_t stride) {
  if (batch <= 1) return;
  PG_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)),
                  "setting the matmul batch count");
  PG_CUBLAS_CHECK(
      cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)),
      "setting the matmul batch stride");
}

struct Problem {
  int64_t M, N, K;
  Trans ta, tb;
  DType ab, c;
  int batch;
  int64_t stride_a, stride_b, stride_c;  // elements between batches (0 = shared)
  const void* pa;
  const void* pb;
  void* pc;
};

Plan& plan_for(int dev, const Problem& p, const std::string& desc) {
  int al_a = alignment_of(p.pa), al_b = alignment_of(p.pb), al_c = alignment_of(p.pc);
  PlanKey key{dev, p.M, p.N, p.K, static_cast<int>(p.ta), static_cast<int>(p.tb), static_cast<int>(p.ab),
              static_cast<int>(p.c), p.stride_a, p.stride_b, p.stride_c, p.batch, al_a, al_b, al_c};
  auto it = g_plans.find(key);
  if (it != g_plans.end()) return *it->second;

  DeviceContext& ctx = device_context(dev);
  auto plan = std::make_unique<Plan>();
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  if (p.ab == DType::F32 && tf32_enabled()) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  PG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, compute, CUDA_R_32F), "creating a matmul descriptor");
  // Column-major view (see the file comment): lt_A = our B, lt_B = our A.
  cublasOperation_t op_lt_a = p.tb == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T;
  cublasOperation_t op_lt_b = p.ta == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T;
  PG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a, sizeof(op_lt_a)),
                  "setting matmul transpose A");
  PG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b, sizeof(op_lt_b)),
                  "setting matmul transpose B");
  // Our B as stored: Trans::N → row-major (K, N) = column-major (N, K); Trans::T → column-major (K, N).
  uint64_t a_rows = p.tb == Trans::N ? p.N : p.K, a_cols = p.tb == Trans::N ? p.K : p.N;
  // Our A as stored: Trans::N → row-major (M, K) = column-major (K, M); Trans::T → column-major (M, K).
  uint64_t b_rows = p.ta == Trans::N ? p.K : p.M, b_cols = p.ta == Trans::N ? p.M : p.K;
  PG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, cuda_type(p.ab), a_rows, a_cols, a_rows), "matmul layout");
  PG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, cuda_type(p.ab), b_rows, b_cols, b_rows), "matmul layout");
  PG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, cuda_type(p.c), p.N, p.M, p.N), "matmul layout");
  set_batch(plan->a, p.batch, p.stride_b);
  set_batch(plan->b, p.batch, p.stride_a);
  set_batch(plan->c, p.batch, p.stride_c);

  cublasLtMatmulPreference_t pref;
  PG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref), "creating a matmul preference");
  uint64_t ws = kWorkspaceBytes;
  uint32_t alb = static_cast<uint32_t>(al_b), ala = static_cast<uint32_t>(al_a), alc = static_cast<uint32_t>(al_c);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alb, sizeof(alb));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ala, sizeof(ala));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &alc, sizeof(alc));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &alc, sizeof(alc));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(ctx.handle, plan->op, plan->a, plan->b, plan->c, plan->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  PG_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0,
           "matmul: cuBLASLt has no algorithm for {} (status {}; f32 inputs with a bf16 output are not supported)", desc,
           detail::cublas_status_name(static_cast<int>(st)));
  plan->algo = result.algo;
  Plan& ref = *plan;
  g_plans.emplace(key, std::move(plan));
  return ref;
}

void run(const Problem& p, float alpha, float beta, const std::string& desc) {
  if (p.M == 0 || p.N == 0 || p.batch == 0) return;
  int dev = 0;
  PG_CUDA_CHECK(cudaGetDevice(&dev), "querying the current device for matmul");
  std::lock_guard<std::mutex> lock(g_mu);
  Plan& plan = plan_for(dev, p, desc);
  DeviceContext& ctx = g_devices[static_cast<size_t>(dev)];
  // K == 0 is a valid product (C = beta C); cuBLASLt handles it as long as the layouts are valid.
  PG_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, plan.op, &alpha, p.pb, plan.a, p.pa, plan.b, &beta, p.pc, plan.c, p.pc,
                                 plan.c, &plan.algo, ctx.workspace, kWorkspaceBytes,
                                 static_cast<cudaStream_t>(current_stream())),
                  "running cublasLtMatmul");
}

std::string describe(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C) {
  return fmt::format("A={}{} B={}{} C={}", A.desc(), ta == Trans::T ? "^T" : "", B.desc(), tb == Trans::T ? "^T" : "",
                     C.desc());
}

}  // namespace

void matmul(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha, float beta) {
  PG_CHECK(A.ndim() == 2 && B.ndim() == 2 && C.ndim() == 2, "matmul: expected 2-D tensors, got {}",
           describe(A, ta, B, tb, C));
  Problem p{};
  p.M = ta == Trans::N ? A.dim(0) : A.dim(1);
  p.K = ta == Trans::N ? A.dim(1) : A.dim(0);
  p.N = tb == Trans::N ? B.dim(1) : B.dim(0);
  int64_t kb = tb == Trans::N ? B.dim(0) : B.dim(1);
  PG_CHECK(kb == p.K && C.dim(0) == p.M && C.dim(1) == p.N, "matmul: shapes do not agree: {}",
           describe(A, ta, B, tb, C));
  p.ta = ta, p.tb = tb, p.ab = A.dtype(), p.c = C.dtype(), p.batch = 1;
  p.pa = A.data(), p.pb = B.data(), p.pc = C.data();
  run(p, alpha, beta, describe(A, ta, B, tb, C));
}

void matmul_batched(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha, float beta) {
  std::string desc = describe(A, ta, B, tb, C);
  PG_CHECK(C.ndim() == 3 && (A.ndim() == 3 || A.ndim() == 2) && (B.ndim() == 3 || B.ndim() == 2),
           "matmul_batched: expected C (Bt, M, N) and A, B of 3 (or 2 = shared) dimensions, got {}", desc);
  int64_t bt = C.dim(0);
  auto mat = [](const Tensor& t, int i) { return t.dim(t.ndim() - 2 + i); };
  Problem p{};
  p.M = ta == Trans::N ? mat(A, 0) : mat(A, 1);
  p.K = ta == Trans::N ? mat(A, 1) : mat(A, 0);
  p.N = tb == Trans::N ? mat(B, 1) : mat(B, 0);
  int64_t kb = tb == Trans::N ? mat(B, 0) : mat(B, 1);
  PG_CHECK(kb == p.K && C.dim(1) == p.M && C.dim(2) == p.N && (A.ndim() == 2 || A.dim(0) == bt) &&
               (B.ndim() == 2 || B.dim(0) == bt),
           "matmul_batched: shapes do not agree: {}", desc);
  PG_CHECK(bt <= INT32_MAX, "matmul_batched: batch {} too large", bt);
  p.ta = ta, p.tb = tb, p.ab = A.dtype(), p.c = C.dtype(), p.batch = static_cast<int>(bt);
  p.stride_a = A.ndim() == 3 ? p.M * p.K : 0;
  p.stride_b = B.ndim() == 3 ? p.K * p.N : 0;
  p.stride_c = p.M * p.N;
  p.pa = A.data(), p.pb = B.data(), p.pc = C.data();
  run(p, alpha, beta, desc);
}

}  // namespace pgolf::ops::cuda
