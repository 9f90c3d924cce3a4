#include <gtest/gtest.h>

#include "ops/matmul.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;
using ops::Trans;

namespace {

// Plain triple loop: C = alpha op(A) op(B) + beta C, all row-major doubles.
std::vector<double> ref_gemm(const std::vector<double>& A, Trans ta, const std::vector<double>& B, Trans tb,
                             const std::vector<double>& C, int64_t M, int64_t N, int64_t K, double alpha,
                             double beta) {
  std::vector<double> out(M * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) {
        double a = ta == Trans::N ? A[i * K + k] : A[k * M + i];
        double b = tb == Trans::N ? B[k * N + j] : B[j * K + k];
        s += a * b;
      }
      out[i * N + j] = alpha * s + beta * C[i * N + j];
    }
  return out;
}

Shape stored(Trans t, int64_t r, int64_t c) { return t == Trans::N ? Shape{r, c} : Shape{c, r}; }

}  // namespace

TEST(OpsMatmul, AllTransposesDtypesAndBeta) {
  const int64_t M = 7, N = 5, K = 13;
  for (DType tin : {DType::F32, DType::BF16})
    for (DType tc : {DType::F32, DType::BF16})
      for (Trans ta : {Trans::N, Trans::T})
        for (Trans tb : {Trans::N, Trans::T})
          for (float beta : {0.f, 0.5f}) {
            if (tin == DType::F32 && tc == DType::BF16) continue;  // rejected: see F32InputsNeedF32Output
            Tensor A = rand_tensor(stored(ta, M, K), tin, 71), B = rand_tensor(stored(tb, K, N), tin, 72);
            Tensor C = rand_tensor(Shape{M, N}, tc, 73);
            auto want = ref_gemm(to_d(A), ta, to_d(B), tb, to_d(C), M, N, K, 1.5, beta);
            ops::matmul(A, ta, B, tb, C, 1.5f, beta);
            // Sums of K products: allow for f32 accumulation next to the bf16/f32 output rounding.
            expect_close(to_d(C), want, tc == DType::BF16 ? 1e-2 : 1e-5, "matmul");
          }
}

TEST(OpsMatmul, F32InputsNeedF32Output) {
  Tensor A = rand_tensor(Shape{3, 4}, DType::F32, 1), B = rand_tensor(Shape{4, 2}, DType::F32, 2);
  Tensor C = Tensor::empty(Shape{3, 2}, DType::BF16);
  EXPECT_THROW(ops::matmul(A, Trans::N, B, Trans::N, C), Error);
}

TEST(OpsMatmul, BatchedWithSharedAndPerBatchB) {
  const int64_t Bt = 3, M = 4, N = 6, K = 5;
  for (bool shared : {false, true}) {
    Tensor A = rand_tensor(Shape{Bt, M, K}, DType::F32, 74);
    Tensor B = shared ? rand_tensor(Shape{N, K}, DType::F32, 75) : rand_tensor(Shape{Bt, N, K}, DType::F32, 75);
    Tensor C = Tensor::empty(Shape{Bt, M, N}, DType::F32);
    ops::matmul_batched(A, Trans::N, B, Trans::T, C);
    auto av = to_d(A), bv = to_d(B), cv = to_d(C);
    for (int64_t b = 0; b < Bt; ++b) {
      std::vector<double> a(av.begin() + b * M * K, av.begin() + (b + 1) * M * K);
      int64_t bo = shared ? 0 : b * N * K;
      std::vector<double> bb(bv.begin() + bo, bv.begin() + bo + N * K);
      auto want = ref_gemm(a, Trans::N, bb, Trans::T, std::vector<double>(M * N, 0.0), M, N, K, 1, 0);
      expect_close(std::vector<double>(cv.begin() + b * M * N, cv.begin() + (b + 1) * M * N), want, 1e-5,
                   "matmul_batched");
    }
  }
}

TEST(OpsMatmul, LinearForwardBackward) {
  const int64_t Bt = 2, T = 3, In = 7, Out = 5, Nr = Bt * T;
  for (DType t : {DType::F32, DType::BF16}) {
    Tensor x = rand_tensor(Shape{Bt, T, In}, t, 76), w = rand_tensor(Shape{Out, In}, t, 77);
    Tensor y = Tensor::empty(Shape{Bt, T, Out}, t);
    ops::linear_forward(x, w, y);
    auto xv = to_d(x), wv = to_d(w);
    auto want = ref_gemm(xv, Trans::N, wv, Trans::T, std::vector<double>(Nr * Out, 0.0), Nr, Out, In, 1, 0);
    expect_close(to_d(y), want, tol_for(t), "linear_forward");

    // y = x w^T: dx = dy w ; dw += dy^T x (accumulated onto 1.0).
    Tensor dy = rand_tensor(Shape{Bt, T, Out}, t, 78), dx = Tensor::empty(x.shape(), t);
    Tensor dw = Tensor::from_vector(std::vector<float>(Out * In, 1.f), Shape{Out, In});
    ops::linear_backward(x, w, dy, dx, dw);
    auto dyv = to_d(dy);
    expect_close(to_d(dx), ref_gemm(dyv, Trans::N, wv, Trans::N, std::vector<double>(Nr * In, 0.0), Nr, In, Out, 1, 0),
                 tol_for(t), "linear dx");
    expect_close(to_d(dw),
                 ref_gemm(dyv, Trans::T, xv, Trans::N, std::vector<double>(Out * In, 1.0), Out, In, Nr, 1, 1),
                 1e-5, "linear dw");
    Tensor dw_only = Tensor::zeros(Shape{Out, In}, DType::F32);
    ops::linear_backward(x, w, dy, Tensor(), dw_only);  // dx skipped
    // accumulate_dx adds dy w to what dx holds (a second reader of x).
    Tensor dx2 = rand_tensor(x.shape(), t, 79);
    std::vector<double> want_acc = ref_gemm(dyv, Trans::N, wv, Trans::N, to_d(dx2), Nr, In, Out, 1, 1);
    ops::linear_backward(x, w, dy, dx2, Tensor(), /*accumulate_dx=*/true);
    expect_close(to_d(dx2), want_acc, tol_for(t), "linear dx accumulated");
  }
}

TEST(OpsMatmul, BadInputsNameTheOp) {
  Tensor a = Tensor::empty(Shape{3, 4}, DType::F32), b = Tensor::empty(Shape{5, 6}, DType::F32);
  Tensor c = Tensor::empty(Shape{3, 6}, DType::F32);
  expect_error_naming([&] { ops::matmul(a, Trans::N, b, Trans::N, c); }, "matmul");
  expect_error_naming([&] { ops::matmul(a, Trans::N, Tensor::empty(Shape{4, 6}, DType::BF16), Trans::N, c); }, "matmul");
  expect_error_naming([&] { ops::matmul(a, Trans::N, Tensor::empty(Shape{4, 5}, DType::F32), Trans::N, c); }, "matmul");
  expect_error_naming([&] { ops::linear_forward(a, Tensor::empty(Shape{6, 5}, DType::F32), c); }, "linear_forward");
  expect_error_naming(
      [&] {
        ops::linear_backward(a, Tensor::empty(Shape{6, 4}, DType::F32), c, Tensor(), Tensor::empty(Shape{6, 4}, DType::BF16));
      },
      "linear_backward");
}
