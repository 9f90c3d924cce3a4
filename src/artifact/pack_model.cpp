#include "artifact/pack_model.h"

#include <cmath>

#include "artifact/pack_tensor.h"
#include "artifact/model_io.h"
#include "core/error.h"
#include "quant/gptq.h"

namespace pgolf::artifact {

namespace {

std::vector<int64_t> dims_of(const Shape& s) { return std::vector<int64_t>(s.d.begin(), s.d.begin() + s.nd); }

const quant::LinearHessian* hessian_for(const std::map<std::string, quant::LinearHessian>& hs, const std::string& name,
                                        int64_t cols) {
  auto it = hs.find(name);
  if (it == hs.end()) return nullptr;
  PG_CHECK(it->second.cols == cols, "pack '{}': Hessian is ({}, {}) for {} columns", name, it->second.cols, it->second.cols, cols);
  return &it->second;
}

}  // namespace

std::vector<TensorPackStats> quantization_stats(const Artifact& a, const model::GPT& gpt,
                                                const std::map<std::string, quant::LinearHessian>& hessians) {
  std::vector<TensorPackStats> out;
  for (const model::Param& p : gpt.params().all()) {
    const StoredTensor& t = a.get(p.spec.name);
    const std::vector<float> w = p.value.to_float_vector();
    const std::vector<float> q = dequantize(t);
    TensorPackStats s;
    s.name = p.spec.name;
    s.role = std::string(quant::quant_role_name(p.spec.quant));
    s.numel = p.value.numel();
    s.bits = t.kind == StorageKind::IntRow ? t.q.bits : t.kind == StorageKind::F32 ? 32 : 16;
    s.method = t.kind == StorageKind::IntRow ? "int-row" : std::string(storage_kind_name(t.kind));
    s.lqer = t.lqer.has_value();
    double w2 = 0;
    for (float v : w) w2 += static_cast<double>(v) * v;
    const double e2 = quant::squared_error(w, q);
    s.rel_error = w2 > 0 ? std::sqrt(e2 / w2) : std::sqrt(e2);
    if (p.spec.shape.nd == 2) {
      const int64_t rows = p.spec.shape[0], cols = p.spec.shape[1];
      if (const auto* h = hessian_for(hessians, p.spec.name, cols)) {
        s.hessian = true;
        const std::vector<float> zero(w.size(), 0.f);
        const double num = quant::hessian_weighted_error(w, q, rows, cols, h->h);
        const double den = quant::hessian_weighted_error(w, zero, rows, cols, h->h);
        s.rel_proxy = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

PackModelResult pack_model(const model::GPT& gpt, const std::map<std::string, quant::LinearHessian>& hessians,
                           const PackModelOptions& opt) {
  PG_CHECK(opt.code_bytes < opt.counted_limit, "pack: code bytes {} already exceed the counted limit {}", opt.code_bytes,
           opt.counted_limit);
  PackModelResult r;
  r.artifact.config_json = model_config_to_json(gpt.config());
  std::map<std::string, std::vector<float>> originals;
  for (const model::Param& p : gpt.params().all()) {
    std::vector<float> w = p.value.to_float_vector();
    const std::vector<int64_t> shape = dims_of(p.spec.shape);
    const int64_t cols = shape.size() >= 2 ? p.value.numel() / shape[0] : 0;
    const quant::LinearHessian* h = cols > 0 ? hessian_for(hessians, p.spec.name, cols) : nullptr;
    PackTensorReport rep;
    r.artifact.tensors.push_back(
        pack_tensor(p.spec.name, shape, w, p.spec.quant, opt.policy, h ? &h->h : nullptr, &rep));
    if (opt.lqer) originals.emplace(p.spec.name, std::move(w));
  }
  if (opt.lqer) r.lqer_tensors = add_lqer_to_worst(r.artifact, originals, opt.lqer_k, opt.lqer_rank, opt.lqer_group);
  const uint64_t max_file = opt.counted_limit - opt.code_bytes;
  r.budget = fit_to_budget(r.artifact, opt.solver, max_file);
  PG_CHECK(r.budget.reached || opt.allow_over,
           "pack: artifact {} bytes + code {} bytes = {} counted bytes exceeds the limit {} even after pruning {} of "
           "{} ±1 codes; lower the bits or pass --allow-over to write it anyway",
           r.budget.bytes.size(), opt.code_bytes, r.budget.bytes.size() + opt.code_bytes, opt.counted_limit,
           r.budget.prune.pruned, r.budget.prune.candidates);
  r.tensors = quantization_stats(r.artifact, gpt, hessians);
  return r;
}

}  // namespace pgolf::artifact
