// Standalone GPU check + timing of the attention and matmul kernels, independent of the CPU op library:
// its reference is a plain double-precision loop written here. Build with bench/device_check.sh (core
// sources + attention.cu + matmul.cu, linked with cuBLASLt and fmt, into .carry/attn), run with
// `LD_LIBRARY_PATH=.carry/attn .carry/attn/device_check [--time]`. Prints one line per case with the max
// error relative to the largest reference magnitude; exits 1 if any case is over its tolerance.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/matmul.h"

using namespace pgolf;

namespace {

int g_failures = 0;

Tensor random_tensor(const Shape& s, DType dt, std::mt19937& rng, float stddev = 1.f) {
  std::normal_distribution<float> nd(0.f, stddev);
  Tensor h = Tensor::empty(s, dt, Device::CPU);
  if (dt == DType::BF16) {
    auto* p = h.ptr<bf16>();
    for (int64_t i = 0; i < h.numel(); ++i) p[i] = f32_to_bf16(nd(rng));
  } else {
    auto* p = h.ptr<float>();
    for (int64_t i = 0; i < h.numel(); ++i) p[i] = nd(rng);
  }
  return h.to(Device::CUDA);
}

void report(const char* what, const std::vector<float>& got, const std::vector<double>& ref, double tol) {
  double max_ref = 0, max_err = 0;
  bool finite = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(ref[i]));
    if (!std::isfinite(got[i]) && std::isfinite(ref[i])) finite = false;
    if (std::isfinite(ref[i])) max_err = std::max(max_err, std::abs(got[i] - ref[i]));
    else if (got[i] != ref[i]) finite = false;
  }
  double rel = max_ref > 0 ? max_err / max_ref : max_err;
  bool ok = finite && rel <= tol;
  if (!ok) ++g_failures;
  std::printf("  %-6s max|err|/max|ref| = %.3e (tol %.0e) %s\n", what, rel, tol, ok ? "ok" : "FAIL");
}

struct AttnCase {
  int B, T, Hq, Hkv, D;
  bool causal;
  int window;
  bool docs;
  DType dt;
};

// Double-precision reference of forward and backward (same masking rules as attention.h).
void attention_reference(const AttnCase& c, const std::vector<float>& q, const std::vector<float>& k,
                         const std::vector<float>& v, const std::vector<int32_t>& doc, const std::vector<float>& dout,
                         std::vector<double>& out, std::vector<double>& lse, std::vector<double>& dq,
                         std::vector<double>& dk, std::vector<double>& dv) {
  const int B = c.B, T = c.T, Hq = c.Hq, Hkv = c.Hkv, D = c.D, G = Hq / Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  out.assign(q.size(), 0), dq.assign(q.size(), 0), dk.assign(k.size(), 0), dv.assign(v.size(), 0);
  lse.assign(static_cast<size_t>(B) * Hq * T, 0);
  std::vector<double> p(T), dp(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hq; ++h)
      for (int i = 0; i < T; ++i) {
        auto qi = [&](int d) { return q[((static_cast<size_t>(b) * T + i) * Hq + h) * D + d]; };
        auto kv_idx = [&](int j, int d) { return ((static_cast<size_t>(b) * T + j) * Hkv + h / G) * D + d; };
        auto visible = [&](int j) {
          if (c.causal && j > i) return false;
          if (c.window > 0 && (j <= i - c.window || j > i)) return false;
          if (c.docs && j < doc[static_cast<size_t>(b) * T + i]) return false;
          return true;
        };
        double m = -INFINITY;
        for (int j = 0; j < T; ++j) {
          p[j] = -INFINITY;
          if (!visible(j)) continue;
          double s = 0;
          for (int d = 0; d < D; ++d) s += qi(d) * k[kv_idx(j, d)];
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        double l = 0;
        for (int j = 0; j < T; ++j) l += p[j] == -INFINITY ? 0 : std::exp(p[j] - m);
        size_t orow = ((static_cast<size_t>(b) * T + i) * Hq + h) * D;
        lse[(static_cast<size_t>(b) * Hq + h) * T + i] = l > 0 ? m + std::log(l) : -INFINITY;
        for (int j = 0; j < T; ++j) p[j] = p[j] == -INFINITY ? 0 : std::exp(p[j] - m) / l;
        for (int d = 0; d < D; ++d) {
          double o = 0;
          for (int j = 0; j < T; ++j) o += p[j] * v[kv_idx(j, d)];
          out[orow + d] = o;
        }
        // Backward uses the exact (double) output.
        double dsum = 0;
        for (int d = 0; d < D; ++d) dsum += dout[orow + d] * out[orow + d];
        for (int j = 0; j < T; ++j) {
          double s = 0;
          for (int d = 0; d < D; ++d) s += dout[orow + d] * v[kv_idx(j, d)];
          dp[j] = p[j] * (s - dsum);  // dS
        }
        for (int j = 0; j < T; ++j) {
          if (p[j] == 0) continue;
          for (int d = 0; d < D; ++d) {
            dq[orow + d] += dp[j] * k[kv_idx(j, d)] * scale;
            dk[kv_idx(j, d)] += dp[j] * qi(d) * scale;
            dv[kv_idx(j, d)] += p[j] * dout[orow + d];
          }
        }
      }
}

void check_attention(const AttnCase& c, std::mt19937& rng) {
  std::printf("attention B=%d T=%d Hq=%d Hkv=%d D=%d causal=%d window=%d docs=%d %s\n", c.B, c.T, c.Hq, c.Hkv, c.D,
              c.causal, c.window, c.docs, c.dt == DType::BF16 ? "bf16" : "f32");
  Tensor q = random_tensor({c.B, c.T, c.Hq, c.D}, c.dt, rng), k = random_tensor({c.B, c.T, c.Hkv, c.D}, c.dt, rng);
  Tensor v = random_tensor({c.B, c.T, c.Hkv, c.D}, c.dt, rng), dout = random_tensor({c.B, c.T, c.Hq, c.D}, c.dt, rng);
  std::vector<int32_t> doc(static_cast<size_t>(c.B) * c.T, 0);
  if (c.docs) {  // documents of random lengths 1..90
    std::uniform_int_distribution<int> len(1, 90);
    for (int b = 0; b < c.B; ++b)
      for (int t = 0, start = 0, end = len(rng); t < c.T; ++t) {
        if (t == end) start = t, end = t + len(rng);
        doc[static_cast<size_t>(b) * c.T + t] = start;
      }
  }
  Tensor doc_t = c.docs ? Tensor::from_vector(doc, {c.B, c.T}, Device::CUDA) : Tensor();
  Tensor out = Tensor::empty(q.shape(), c.dt, Device::CUDA), lse = Tensor::empty({c.B, c.Hq, c.T}, DType::F32, Device::CUDA);
  Tensor dq = Tensor::empty(q.shape(), c.dt, Device::CUDA), dk = Tensor::empty(k.shape(), c.dt, Device::CUDA);
  Tensor dv = Tensor::empty(v.shape(), c.dt, Device::CUDA);
  ops::AttnParams p;
  p.causal = c.causal, p.window = c.window;
  ops::cuda::attention_forward(q, k, v, doc_t, out, lse, p);
  ops::cuda::attention_backward(q, k, v, doc_t, out, lse, dout, dq, dk, dv, p);
  device_synchronize();
  std::vector<double> r_out, r_lse, r_dq, r_dk, r_dv;
  attention_reference(c, q.to_float_vector(), k.to_float_vector(), v.to_float_vector(), doc, dout.to_float_vector(),
                      r_out, r_lse, r_dq, r_dk, r_dv);
  const double tol = c.dt == DType::BF16 ? 2e-2 : 1e-4;
  report("out", out.to_float_vector(), r_out, tol);
  report("lse", lse.to_float_vector(), r_lse, c.dt == DType::BF16 ? 1e-2 : 1e-5);
  report("dq", dq.to_float_vector(), r_dq, tol);
  report("dk", dk.to_float_vector(), r_dk, tol);
  report("dv", dv.to_float_vector(), r_dv, tol);
}

void check_matmul(int bt, int M, int N, int K, ops::Trans ta, ops::Trans tb, DType dt, DType dc, bool shared_b,
                  float beta, std::mt19937& rng) {
  std::printf("matmul Bt=%d M=%d N=%d K=%d ta=%c tb=%c %s->%s%s beta=%g\n", bt, M, N, K, ta == ops::Trans::T ? 'T' : 'N',
              tb == ops::Trans::T ? 'T' : 'N', dt == DType::BF16 ? "bf16" : "f32", dc == DType::BF16 ? "bf16" : "f32",
              shared_b ? " shared-B" : "", beta);
  auto shape2 = [&](ops::Trans t, int r, int c) { return t == ops::Trans::N ? Shape{r, c} : Shape{c, r}; };
  Shape sa = shape2(ta, M, K), sb = shape2(tb, K, N);
  Shape sa3 = bt > 0 ? Shape{bt, sa[0], sa[1]} : sa, sb3 = bt > 0 && !shared_b ? Shape{bt, sb[0], sb[1]} : sb;
  Shape sc = bt > 0 ? Shape{bt, M, N} : Shape{M, N};
  Tensor A = random_tensor(sa3, dt, rng), B = random_tensor(sb3, dt, rng), C = random_tensor(sc, dc, rng);
  std::vector<float> a = A.to_float_vector(), b = B.to_float_vector(), c0 = C.to_float_vector();
  if (bt > 0)
    ops::cuda::matmul_batched(A, ta, B, tb, C, 1.5f, beta);
  else
    ops::cuda::matmul(A, ta, B, tb, C, 1.5f, beta);
  std::vector<double> ref(c0.size());
  int nb = std::max(bt, 1);
  for (int z = 0; z < nb; ++z)
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        double s = 0;
        for (int kk = 0; kk < K; ++kk) {
          double av = a[static_cast<size_t>(z) * M * K + (ta == ops::Trans::N ? i * K + kk : kk * M + i)];
          size_t boff = shared_b ? 0 : static_cast<size_t>(z) * K * N;
          double bv = b[boff + (tb == ops::Trans::N ? kk * N + j : j * K + kk)];
          s += av * bv;
        }
        size_t ci = static_cast<size_t>(z) * M * N + i * N + j;
        ref[ci] = 1.5 * s + beta * c0[ci];
      }
  report("C", C.to_float_vector(), ref, dc == DType::BF16 || dt == DType::BF16 ? 1e-2 : 1e-5);
}

template <class F>
float median_ms(F&& f, int reps = 20) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> ms;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(e0);
    f();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void time_attention(int B, int T, int Hq, int Hkv, std::mt19937& rng) {
  Tensor q = random_tensor({B, T, Hq, 64}, DType::BF16, rng), k = random_tensor({B, T, Hkv, 64}, DType::BF16, rng);
  Tensor v = random_tensor({B, T, Hkv, 64}, DType::BF16, rng), dout = random_tensor({B, T, Hq, 64}, DType::BF16, rng);
  Tensor out = Tensor::empty(q.shape(), DType::BF16, Device::CUDA), lse = Tensor::empty({B, Hq, T}, DType::F32, Device::CUDA);
  Tensor dq = Tensor::empty(q.shape(), DType::BF16, Device::CUDA), dk = Tensor::empty(k.shape(), DType::BF16, Device::CUDA);
  Tensor dv = Tensor::empty(v.shape(), DType::BF16, Device::CUDA);
  ops::AttnParams p;
  double flop = 4.0 * B * Hq * double(T) * T * 64 / 2;
  float f = median_ms([&] { ops::cuda::attention_forward(q, k, v, Tensor(), out, lse, p); });
  float fb = median_ms([&] {
    ops::cuda::attention_forward(q, k, v, Tensor(), out, lse, p);
    ops::cuda::attention_backward(q, k, v, Tensor(), out, lse, dout, dq, dk, dv, p);
  });
  std::printf("attention B=%d T=%d Hq=%d Hkv=%d causal: fwd %.3f ms %.0f TFLOP/s | fwd+bwd %.3f ms %.0f TFLOP/s\n", B, T,
              Hq, Hkv, f, flop / f / 1e9, fb, 3.5 * flop / fb / 1e9);
}

void time_matmul(int M, int N, int K, ops::Trans ta, ops::Trans tb, std::mt19937& rng) {
  auto shape2 = [&](ops::Trans t, int r, int c) { return t == ops::Trans::N ? Shape{r, c} : Shape{c, r}; };
  Tensor A = random_tensor(shape2(ta, M, K), DType::BF16, rng), B = random_tensor(shape2(tb, K, N), DType::BF16, rng);
  Tensor C = Tensor::empty({M, N}, DType::BF16, Device::CUDA);
  float ms = median_ms([&] { ops::cuda::matmul(A, ta, B, tb, C, 1.f, 0.f); });
  std::printf("matmul (%dx%d)x(%dx%d) ta=%c tb=%c: %.3f ms %.0f TFLOP/s\n", M, K, K, N, ta == ops::Trans::T ? 'T' : 'N',
              tb == ops::Trans::T ? 'T' : 'N', ms, 2.0 * M * N * K / ms / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--time") == 0) {
    std::mt19937 rng(7);
    using ops::Trans;
    time_attention(48, 2048, 8, 4, rng);
    time_attention(48, 1024, 8, 4, rng);
    time_matmul(98304, 512, 512, Trans::N, Trans::T, rng);
    time_matmul(98304, 1536, 512, Trans::N, Trans::T, rng);
    time_matmul(98304, 2048, 512, Trans::N, Trans::T, rng);
    time_matmul(98304, 512, 2048, Trans::N, Trans::T, rng);
    time_matmul(512, 512, 98304, Trans::T, Trans::N, rng);
    time_matmul(2048, 512, 98304, Trans::T, Trans::N, rng);
    time_matmul(8192, 8192, 8192, Trans::N, Trans::N, rng);
    return 0;
  }
  std::mt19937 rng(1234);
  using ops::Trans;
  const DType bf = DType::BF16, f32 = DType::F32;
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T}) check_matmul(0, 33, 70, 45, ta, tb, bf, f32, false, 0.f, rng);
  check_matmul(0, 64, 48, 96, Trans::N, Trans::T, bf, bf, false, 0.5f, rng);
  check_matmul(0, 31, 17, 9, Trans::T, Trans::N, f32, f32, false, 1.f, rng);
  check_matmul(3, 20, 24, 40, Trans::N, Trans::N, bf, f32, false, 0.f, rng);
  check_matmul(3, 20, 24, 40, Trans::T, Trans::T, bf, bf, true, 1.f, rng);
  const AttnCase cases[] = {
      {2, 128, 4, 2, 64, true, 0, false, bf},    {2, 200, 4, 2, 64, true, 0, false, bf},
      {1, 300, 2, 1, 64, false, 0, false, bf},   {2, 260, 4, 4, 64, true, 70, false, bf},
      {2, 333, 4, 1, 64, true, 0, true, bf},     {1, 150, 2, 2, 64, true, 20, true, bf},
      {2, 77, 4, 2, 32, true, 0, true, f32},     {1, 90, 2, 1, 96, false, 0, false, bf},
      {1, 65, 2, 2, 64, true, 0, false, f32},
  };
  for (const AttnCase& c : cases) check_attention(c, rng);
  std::printf("%s: %d failing checks\n", g_failures ? "FAIL" : "OK", g_failures);
  (void)argc, (void)argv;
  return g_failures ? 1 : 0;
}
