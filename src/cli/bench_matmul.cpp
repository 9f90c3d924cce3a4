// `pgolf bench matmul`: cuBLASLt matmul speed at the training shapes of ANCHORS.md §3, as a fraction of
// the rate PyTorch reached on the same H100.
#include "core/error.h"
#include "cli/bench_kernels.h"
#include "ops/matmul.h"

namespace pgolf::cli::bench {

namespace {

struct MatmulCase {
  const char* what;
  int64_t M, N, K;
  ops::Trans ta, tb;
  DType out;
  float beta;
  double anchor;  // TFLOP/s, PyTorch bf16 on H100 (ANCHORS.md §3)
};

// Forward shapes are x (M, K) times w^T with w stored (N, K) as in linear_forward; weight gradients
// are dy^T x with dy (K, M), x (K, N), accumulated into an f32 gradient (beta = 1) as linear_backward does.
const MatmulCase kCases[] = {
    {"fwd", 98304, 512, 512, ops::Trans::N, ops::Trans::T, DType::BF16, 0.f, 557},
    {"fwd", 98304, 256, 512, ops::Trans::N, ops::Trans::T, DType::BF16, 0.f, 413},
    {"fwd", 98304, 1536, 512, ops::Trans::N, ops::Trans::T, DType::BF16, 0.f, 576},
    {"fwd", 98304, 2048, 512, ops::Trans::N, ops::Trans::T, DType::BF16, 0.f, 608},
    {"fwd", 98304, 512, 2048, ops::Trans::N, ops::Trans::T, DType::BF16, 0.f, 605},
    {"fwd", 98304, 8192, 512, ops::Trans::N, ops::Trans::T, DType::BF16, 0.f, 548},
    {"dgrad", 98304, 512, 2048, ops::Trans::N, ops::Trans::N, DType::BF16, 0.f, 0},
    {"wgrad", 512, 512, 98304, ops::Trans::T, ops::Trans::N, DType::F32, 1.f, 560},
    {"wgrad", 2048, 512, 98304, ops::Trans::T, ops::Trans::N, DType::F32, 1.f, 688},
    {"square", 8192, 8192, 8192, ops::Trans::N, ops::Trans::N, DType::BF16, 0.f, 737},
};

}  // namespace

std::vector<Row> bench_matmul(const Options& o) {
  std::vector<Row> rows;
  uint64_t seed = 77;
  for (const MatmulCase& c : kCases) {
    auto stored = [](ops::Trans t, int64_t r, int64_t k) { return t == ops::Trans::N ? Shape{r, k} : Shape{k, r}; };
    Tensor A = random_cuda(stored(c.ta, c.M, c.K), DType::BF16, seed++);
    Tensor B = random_cuda(stored(c.tb, c.K, c.N), DType::BF16, seed++);
    Tensor C = Tensor::zeros({c.M, c.N}, c.out, Device::CUDA);
    double ms = median_ms(o, [&] { ops::matmul(A, c.ta, B, c.tb, C, 1.f, c.beta); });
    std::string name = fmt::format("{:<6} ({}x{})x({}x{}) {}{} -> {}", c.what, c.M, c.K, c.K, c.N,
                                   c.ta == ops::Trans::T ? "T" : "N", c.tb == ops::Trans::T ? "T" : "N",
                                   dtype_name(c.out));
    rows.push_back({name, ms, 2.0 * c.M * c.N * c.K / ms / 1e9, c.anchor, c.beta != 0.f ? "beta=1" : ""});
  }
  return rows;
}

}  // namespace pgolf::cli::bench
