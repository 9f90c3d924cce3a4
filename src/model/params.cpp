#include "model/params.h"

#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "core/rng.h"
#include "ops/elementwise.h"
#include "ops/random.h"

namespace pgolf::model {

namespace {

// Each parameter draws from its own counter range, so a value depends only on (seed, index,
// element) and never on the device or on which other parameters exist after it.
uint64_t counter_offset(size_t index) { return static_cast<uint64_t>(index) << 40; }

// torch.nn.init.orthogonal_: QR of a Gaussian matrix (the tall orientation), Q with the signs of
// diag(R) folded in. Done on the host in double (init runs once) and copied to the device.
void init_orthogonal(const Param& p, uint64_t seed, uint64_t offset) {
  PG_CHECK(p.value.ndim() == 2, "init {}: orthogonal init needs a 2-D parameter, got {}", p.spec.name,
           p.value.desc());
  const int64_t rows = p.value.dim(0), cols = p.value.dim(1);
  const bool transposed = rows < cols;
  const int64_t m = transposed ? cols : rows, n = transposed ? rows : cols;  // m >= n
  std::vector<double> a(static_cast<size_t>(m * n));                         // (m, n) row-major
  for (size_t i = 0; i < a.size(); ++i) a[i] = rng::normal(seed, offset + i);
  std::vector<double> tau(static_cast<size_t>(n));
  int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, static_cast<int>(m), static_cast<int>(n), a.data(),
                            static_cast<int>(n), tau.data());
  PG_CHECK(info == 0, "init {}: QR factorisation failed (info {})", p.spec.name, info);
  std::vector<double> rdiag(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) rdiag[static_cast<size_t>(j)] = a[static_cast<size_t>(j * n + j)];
  info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, static_cast<int>(m), static_cast<int>(n), static_cast<int>(n), a.data(),
                        static_cast<int>(n), tau.data());
  PG_CHECK(info == 0, "init {}: forming Q failed (info {})", p.spec.name, info);
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double q = a[static_cast<size_t>(i * n + j)] * (rdiag[static_cast<size_t>(j)] < 0 ? -1.0 : 1.0);
      size_t dst = transposed ? static_cast<size_t>(j * cols + i) : static_cast<size_t>(i * cols + j);
      out[dst] = static_cast<float>(q);
    }
  p.value.copy_from(Tensor::from_vector(out, p.value.shape(), p.value.device()));
}

// GatedDeltaNet gate parameters (§5.18), drawn on the host in double and copied to the device:
// A_log = log U(0, init_value) (u kept >= 1e-4 init_value, no log 0); dt_bias = dt + log(-expm1(-dt)) =
// softplus^-1(dt), dt = exp(U(log 1e-3, log 1e-1)) floored at 1e-4 (the FLA initialisation).
void init_gdn_gate_param(const Param& p, uint64_t seed, uint64_t offset) {
  std::vector<float> out(static_cast<size_t>(p.value.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    const double u = rng::uniform(seed, offset + i, 0.f, 1.f);
    if (p.spec.init == InitKind::LogUniform) {
      PG_CHECK(p.spec.init_value > 0.f, "init {}: log-uniform bound {} must be > 0", p.spec.name, p.spec.init_value);
      out[i] = static_cast<float>(std::log(std::max(u, 1e-4) * p.spec.init_value));
    } else {
      const double dt = std::max(std::exp(std::log(1e-3) + u * (std::log(1e-1) - std::log(1e-3))), 1e-4);
      out[i] = static_cast<float>(dt + std::log(-std::expm1(-dt)));
    }
  }
  p.value.copy_from(Tensor::from_vector(out, p.value.shape(), p.value.device()));
}

}  // namespace

Param& ParamTable::add(ParamSpec spec) {
  PG_CHECK(!spec.name.empty(), "parameter table: empty parameter name");
  PG_CHECK(find(spec.name) == nullptr, "parameter table: duplicate parameter name {}", spec.name);
  PG_CHECK(spec.shape.nd > 0 && spec.shape.numel() > 0, "parameter table: {} has empty shape {}", spec.name,
           spec.shape.str());
  params_.push_back(Param{std::move(spec), Tensor(), Tensor(), Tensor()});
  return params_.back();
}

Param* ParamTable::find(const std::string& name) {
  for (Param& p : params_)
    if (p.spec.name == name) return &p;
  return nullptr;
}

const Param* ParamTable::find(const std::string& name) const {
  return const_cast<ParamTable*>(this)->find(name);
}

Param& ParamTable::get(const std::string& name) {
  Param* p = find(name);
  PG_CHECK(p != nullptr, "parameter table: no parameter named {}", name);
  return *p;
}

const Param& ParamTable::get(const std::string& name) const { return const_cast<ParamTable*>(this)->get(name); }

int64_t ParamTable::count_elements() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.spec.shape.numel();
  return n;
}

void ParamTable::allocate(Device dev, DType compute_dtype) {
  PG_CHECK(compute_dtype == DType::F32 || compute_dtype == DType::BF16,
           "parameter table: compute dtype must be f32 or bf16, got {}", dtype_name(compute_dtype));
  dev_ = dev;
  for (Param& p : params_) {
    p.value = Tensor::zeros(p.spec.shape, DType::F32, dev);
    p.compute = compute_dtype == DType::BF16 ? Tensor::zeros(p.spec.shape, DType::BF16, dev) : Tensor();
  }
  if (!frozen_) allocate_grads();
}

void ParamTable::allocate_grads() {
  grad_ranges_.clear();
  int64_t flat_n = 0;
  for (const Param& p : params_) {
    const int64_t n = p.spec.shape.numel();
    grad_ranges_.emplace_back(flat_n, flat_n + n);
    flat_n += (n + kGradAlign - 1) / kGradAlign * kGradAlign;
  }
  grad_flat_ = Tensor::zeros(Shape{std::max<int64_t>(flat_n, 1)}, DType::F32, dev_);
  for (size_t i = 0; i < params_.size(); ++i)
    params_[i].grad = grad_flat_.slice(grad_ranges_[i].first, grad_ranges_[i].second).view(params_[i].spec.shape);
}

void ParamTable::set_frozen(bool frozen) {
  if (frozen == frozen_) return;
  frozen_ = frozen;
  if (!frozen) {
    PG_CHECK(params_.empty() || params_.front().value.defined(), "parameter table: unfreezing an unallocated table");
    allocate_grads();
    return;
  }
  // Dropping the views releases the buffer (unless someone else still holds a view of it).
  for (Param& p : params_) p.grad = Tensor();
  grad_flat_ = Tensor();
}

void ParamTable::zero_grads() {
  if (grad_flat_.defined()) {
    grad_flat_.zero_();  // one memset: the grads are views into it
    return;
  }
  for (Param& p : params_)
    if (p.grad.defined()) p.grad.zero_();
}

void ParamTable::sync_compute() {
  for (Param& p : params_)
    if (p.compute.defined()) ops::copy(p.value, p.compute);
}

void ParamTable::init(uint64_t seed) {
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    PG_CHECK(p.value.defined(), "init {}: the parameter table is not allocated", p.spec.name);
    const uint64_t off = counter_offset(i);
    switch (p.spec.init) {
      case InitKind::Zeros: p.value.zero_(); break;
      case InitKind::Ones: ops::fill(p.value, 1.f); break;
      case InitKind::Constant: ops::fill(p.value, p.spec.init_value); break;
      case InitKind::Normal: ops::fill_normal(p.value, seed, off, 0.f, p.spec.init_value); break;
      case InitKind::KaimingUniform: {
        PG_CHECK(p.value.ndim() == 2, "init {}: Kaiming-uniform needs a 2-D (out, in) parameter, got {}",
                 p.spec.name, p.value.desc());
        const float bound = 1.f / std::sqrt(static_cast<float>(p.value.dim(1)));
        ops::fill_uniform(p.value, seed, off, -bound, bound);
        break;
      }
      case InitKind::Orthogonal: init_orthogonal(p, seed, off); break;
      case InitKind::FirstRowOnes:
        p.value.zero_();
        ops::fill(p.value.slice(0, 1), 1.f);
        break;
      case InitKind::LogUniform:
      case InitKind::InvSoftplusLogUniformDt: init_gdn_gate_param(p, seed, off); break;
    }
  }
  sync_compute();
}

}  // namespace pgolf::model
