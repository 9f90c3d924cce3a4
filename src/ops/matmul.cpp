#include "ops/matmul.h"

#include <cblas.h>

#include <vector>

#include "ops/cpu_util.h"

namespace pgolf::ops {

namespace {

struct GemmDims {
  int64_t batch = 1;     // number of C matrices
  bool b_shared = false; // B is 2-D and used by every batch
  int64_t M = 0, N = 0, K = 0;
};

// Checks op(A) (M, K) @ op(B) (K, N) -> C (M, N); batched tensors carry a leading batch dim.
GemmDims check_gemm(const char* op, const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C,
                    bool batched) {
  cpu::check_fb(op, "A", A);
  cpu::check_fb(op, "B", B);
  cpu::check_fb(op, "C", C);
  PG_CHECK(A.dtype() == B.dtype(), "{}: A is {} and B is {}: A and B must share a dtype", op, A.desc(), B.desc());
  PG_CHECK(!(A.dtype() == DType::F32 && C.dtype() == DType::BF16),
           "{}: A is {} and C is {}: f32 inputs need an f32 output", op, A.desc(), C.desc());
  GemmDims g;
  int lead = batched ? 1 : 0;
  check_ndim(op, "A", A, 2 + lead);
  check_ndim(op, "C", C, 2 + lead);
  if (batched) {
    PG_CHECK(B.ndim() == 2 || B.ndim() == 3, "{}: B is {}, expected 2 or 3 dimensions", op, B.desc());
    g.batch = A.dim(0);
    g.b_shared = B.ndim() == 2;
    PG_CHECK(g.b_shared || B.dim(0) == g.batch, "{}: A is {} and B is {}: batch counts differ", op, A.desc(),
             B.desc());
  } else {
    check_ndim(op, "B", B, 2);
  }
  int bl = g.b_shared ? 0 : lead;
  g.M = ta == Trans::N ? A.dim(lead) : A.dim(lead + 1);
  g.K = ta == Trans::N ? A.dim(lead + 1) : A.dim(lead);
  int64_t kb = tb == Trans::N ? B.dim(bl) : B.dim(bl + 1);
  g.N = tb == Trans::N ? B.dim(bl + 1) : B.dim(bl);
  PG_CHECK(kb == g.K, "{}: inner dimensions differ: op(A) of {} (trans {}) is {}x{} but op(B) of {} (trans {}) is {}x{}",
           op, A.desc(), ta == Trans::T ? "T" : "N", g.M, g.K, B.desc(), tb == Trans::T ? "T" : "N", kb, g.N);
  Shape want = batched ? Shape{g.batch, g.M, g.N} : Shape{g.M, g.N};
  check_shape(op, "C", C, want);
  return g;
}

// f32 data of t: its own memory when already f32, else a widened copy in `buf`.
const float* as_f32(const Tensor& t, std::vector<float>& buf) {
  if (t.dtype() == DType::F32) return static_cast<const float*>(t.data());
  buf.resize(static_cast<size_t>(t.numel()));
  const bf16* p = static_cast<const bf16*>(t.data());
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = bf16_to_f32(p[i]);
  return buf.data();
}

void sgemm(const float* A, Trans ta, const float* B, Trans tb, float* C, int64_t M, int64_t N, int64_t K, float alpha,
           float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // empty sum: C = beta C (BLAS rejects lda = 0)
    for (int64_t i = 0; i < M * N; ++i) C[i] = beta == 0.f ? 0.f : beta * C[i];
    return;
  }
  auto lda = static_cast<blasint>(ta == Trans::N ? K : M);
  auto ldb = static_cast<blasint>(tb == Trans::N ? N : K);
  cblas_sgemm(CblasRowMajor, ta == Trans::N ? CblasNoTrans : CblasTrans, tb == Trans::N ? CblasNoTrans : CblasTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A, lda, B, ldb, beta, C,
              static_cast<blasint>(N));
}

void matmul_cpu(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha, float beta,
                const GemmDims& g) {
  std::vector<float> abuf, bbuf, cbuf;
  const float* a = as_f32(A, abuf);
  const float* b = as_f32(B, bbuf);
  float* c = nullptr;
  if (C.dtype() == DType::F32) {
    c = static_cast<float*>(C.data());
  } else if (beta != 0.f) {
    c = const_cast<float*>(as_f32(C, cbuf));
  } else {
    cbuf.assign(static_cast<size_t>(C.numel()), 0.f);
    c = cbuf.data();
  }
  const int64_t sa = g.M * g.K, sb = g.b_shared ? 0 : g.K * g.N, sc = g.M * g.N;
  for (int64_t i = 0; i < g.batch; ++i) sgemm(a + i * sa, ta, b + i * sb, tb, c + i * sc, g.M, g.N, g.K, alpha, beta);
  if (C.dtype() == DType::BF16) {
    bf16* out = static_cast<bf16*>(C.data());
    for (int64_t i = 0, n = C.numel(); i < n; ++i) out[i] = f32_to_bf16(c[i]);
  }
}

// Views a (..., F) tensor as (rows, F).
Tensor as_rows(const Tensor& t) {
  if (t.ndim() == 2) return t;
  int64_t F = t.dim(-1);
  return t.view(Shape{F ? t.numel() / F : 0, F});
}

}  // namespace

void matmul(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha, float beta) {
  const char* op = "matmul";
  GemmDims g = check_gemm(op, A, ta, B, tb, C, false);
  if (check_same_device(op, {&A, &B, &C}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::matmul(A, ta, B, tb, C, alpha, beta));
    return;
  }
  matmul_cpu(A, ta, B, tb, C, alpha, beta, g);
}

void matmul_batched(const Tensor& A, Trans ta, const Tensor& B, Trans tb, const Tensor& C, float alpha, float beta) {
  const char* op = "matmul_batched";
  GemmDims g = check_gemm(op, A, ta, B, tb, C, true);
  if (check_same_device(op, {&A, &B, &C}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::matmul_batched(A, ta, B, tb, C, alpha, beta));
    return;
  }
  matmul_cpu(A, ta, B, tb, C, alpha, beta, g);
}

// x may carry leading dims (B, T, in): they are flattened into rows.
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& y) {
  const char* op = "linear_forward";
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "w", w);
  cpu::check_fb(op, "y", y);
  check_ndim(op, "w", w, 2);
  PG_CHECK(x.ndim() >= 2 && x.dim(-1) == w.dim(1), "{}: x is {} but w is {}: x must be (N, {})", op, x.desc(),
           w.desc(), w.dim(1));
  Shape ys = x.shape();
  ys[-1] = w.dim(0);
  check_shape(op, "y", y, ys);
  PG_CHECK(x.dtype() == w.dtype(), "{}: x is {} and w is {}: they must share a dtype", op, x.desc(), w.desc());
  matmul(as_rows(x), Trans::N, w, Trans::T, as_rows(y));
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                     bool accumulate_dx) {
  const char* op = "linear_backward";
  cpu::check_fb(op, "x", x);
  cpu::check_fb(op, "w", w);
  cpu::check_fb(op, "dy", dy);
  check_ndim(op, "w", w, 2);
  PG_CHECK(x.ndim() >= 2 && x.dim(-1) == w.dim(1), "{}: x is {} but w is {}: x must be (N, {})", op, x.desc(),
           w.desc(), w.dim(1));
  Shape ys = x.shape();
  ys[-1] = w.dim(0);
  check_shape(op, "dy", dy, ys);
  PG_CHECK(x.dtype() == w.dtype() && dy.dtype() == w.dtype(),
           "{}: x is {}, w is {}, dy is {}: they must share a dtype", op, x.desc(), w.desc(), dy.desc());
  if (dx.defined()) {
    cpu::check_fb(op, "dx", dx);
    check_shape(op, "dx", dx, x.shape());
    matmul(as_rows(dy), Trans::N, w, Trans::N, as_rows(dx), 1.f, accumulate_dx ? 1.f : 0.f);
  }
  if (dw.defined()) {
    cpu::check_f32(op, "dw", dw);
    check_shape(op, "dw", dw, w.shape());
    matmul(as_rows(dy), Trans::T, as_rows(x), Trans::N, dw, 1.f, 1.f);
  }
}

}  // namespace pgolf::ops
