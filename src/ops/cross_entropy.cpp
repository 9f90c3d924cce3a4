#include "ops/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu_threads.h"
#include "ops/cpu_util.h"
#include "ops/reference.h"

namespace pgolf::ops {

using cpu::ld;
using cpu::st;

namespace {

// Capped logits of one row into c (and tanh(z/cap) into th when capping); returns the row's
// log-sum-exp. The whole row is read before anything is written, so outputs may alias logits.
template <class S, class TZ>
S capped_row_lse(const TZ* row, int64_t V, S cap, S* c, S* th) {
  S m = -std::numeric_limits<S>::infinity();
  for (int64_t j = 0; j < V; ++j) {
    S z = ld<S>(row[j]);
    if (cap > S(0)) {
      th[j] = std::tanh(z / cap);
      c[j] = cap * th[j];
    } else {
      c[j] = z;
    }
    m = std::max(m, c[j]);
  }
  S sum = 0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(c[j] - m);
  return m + std::log(sum);
}

// loss = lse - c[t] ; dlogits = grad_scale (softmax(c) - onehot(t)) (1 - tanh^2) when dlogits.
template <class S, class TZ, class TL, class TD>
void ce_kernel(const TZ* logits, const int32_t* targets, int64_t N, int64_t V, S cap, TL* losses, TD* dlogits,
               S grad_scale) {
  std::vector<S> c(static_cast<size_t>(V)), th(static_cast<size_t>(V));
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[n];
    TD* drow = dlogits ? dlogits + n * V : nullptr;
    if (t < 0) {
      st(losses[n], S(0));
      if (drow)
        for (int64_t j = 0; j < V; ++j) st(drow[j], S(0));
      continue;
    }
    S lse = capped_row_lse(logits + n * V, V, cap, c.data(), th.data());
    st(losses[n], lse - c[t]);
    if (!drow) continue;
    for (int64_t j = 0; j < V; ++j) {
      S g = std::exp(c[j] - lse) - (j == t ? S(1) : S(0));
      if (cap > S(0)) g *= S(1) - th[j] * th[j];
      st(drow[j], g * grad_scale);
    }
  }
}

}  // namespace

void softcap_cross_entropy(const Tensor& logits, const Tensor& targets, float cap, const Tensor& losses,
                           const Tensor& dlogits, float grad_scale) {
  const char* op = "softcap_cross_entropy";
  cpu::check_fb(op, "logits", logits);
  check_ndim(op, "logits", logits, 2);
  int64_t N = logits.dim(0), V = logits.dim(1);
  check_defined(op, "targets", targets);
  check_dtype(op, "targets", targets, {DType::I32});
  check_shape(op, "targets", targets, Shape{N});
  cpu::check_f32(op, "losses", losses);
  check_shape(op, "losses", losses, Shape{N});
  if (dlogits.defined()) {
    cpu::check_fb(op, "dlogits", dlogits);
    check_shape(op, "dlogits", dlogits, logits.shape());
  }
  PG_CHECK(cap >= 0.f, "{}: cap {} must be >= 0 (0 disables the soft-cap)", op, cap);
  if (check_same_device(op, {&logits, &targets, &losses, &dlogits}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::softcap_cross_entropy(logits, targets, cap, losses, dlogits, grad_scale));
    return;
  }
  const int32_t* tp = targets.ptr<int32_t>();
  for (int64_t n = 0; n < N; ++n)
    PG_CHECK(tp[n] < V, "{}: targets[{}] = {} is outside the vocabulary of {} ({})", op, n, tp[n], V,
             logits.desc());
  float* lp = losses.ptr<float>();
  // Rows are independent: threads take blocks of rows (each row costs V tanh + exp).
  constexpr int64_t kRowsPerPiece = 16;
  cpu::visit_fb(op, "logits", logits, [&](auto* zp) {
    if (!dlogits.defined()) {
      cpu::parallel_for(N, kRowsPerPiece, [&](int64_t b, int64_t e) {
        ce_kernel<float>(zp + b * V, tp + b, e - b, V, cap, lp + b, static_cast<float*>(nullptr), grad_scale);
      });
      return;
    }
    cpu::visit_fb(op, "dlogits", dlogits, [&](auto* dp) {
      cpu::parallel_for(N, kRowsPerPiece, [&](int64_t b, int64_t e) {
        ce_kernel<float>(zp + b * V, tp + b, e - b, V, cap, lp + b, dp + b * V, grad_scale);
      });
    });
  });
}

void softcap_log_softmax(const Tensor& logits, float cap, const Tensor& logprobs) {
  const char* op = "softcap_log_softmax";
  cpu::check_fb(op, "logits", logits);
  check_ndim(op, "logits", logits, 2);
  cpu::check_f32(op, "logprobs", logprobs);
  check_shape(op, "logprobs", logprobs, logits.shape());
  PG_CHECK(cap >= 0.f, "{}: cap {} must be >= 0 (0 disables the soft-cap)", op, cap);
  if (check_same_device(op, {&logits, &logprobs}) == Device::CUDA) {
    PG_CUDA_DISPATCH(op, cuda::softcap_log_softmax(logits, cap, logprobs));
    return;
  }
  int64_t N = logits.dim(0), V = logits.dim(1);
  float* out = logprobs.ptr<float>();
  cpu::visit_fb(op, "logits", logits, [&](auto* zp) {
    cpu::parallel_for(N, 16, [&](int64_t b, int64_t e) {
      std::vector<float> c(static_cast<size_t>(V)), th(static_cast<size_t>(V));
      for (int64_t n = b; n < e; ++n) {
        float lse = capped_row_lse<float>(zp + n * V, V, cap, c.data(), th.data());
        for (int64_t j = 0; j < V; ++j) out[n * V + j] = c[j] - lse;
      }
    });
  });
}

namespace ref {
void softcap_cross_entropy(const double* logits, const int32_t* targets, int64_t N, int64_t V, double cap,
                           double* losses, double* dlogits, double grad_scale) {
  ce_kernel<double>(logits, targets, N, V, cap, losses, dlogits, grad_scale);
}
}  // namespace ref

}  // namespace pgolf::ops
