#include "quant/qat.h"

#include "core/error.h"

namespace pgolf::quant {

bool qat_role_selected(const QatConfig& cfg, model::QuantRole role) {
  using R = model::QuantRole;
  switch (role) {
    case R::AttnQ: case R::AttnK: case R::AttnV: case R::AttnO: return cfg.attn;
    case R::MlpUp: case R::MlpDown: return cfg.mlp;
    case R::Embed: return cfg.embed;
    default: return false;
  }
}

bool qat_active(const QatConfig& cfg, double lr_multiplier) {
  return cfg.enabled && lr_multiplier < cfg.lr_threshold;
}

namespace {

Tensor& buffer(std::vector<Tensor>& v, size_t i, const Shape& shape, Device dev) {
  if (v.size() <= i) v.resize(i + 1);
  Tensor& t = v[i];
  if (!t.defined() || !(t.shape() == shape) || t.device() != dev) t = Tensor::empty(shape, DType::F32, dev);
  return t;
}

}  // namespace

size_t apply_fake_quant(model::ParamTable& params, const QatConfig& cfg, QatStash& stash) {
  PG_CHECK(!stash.active(), "apply_fake_quant: the stash still holds {} tensors; call finish_fake_quant first",
           stash.entries.size());
  auto& all = params.all();
  for (size_t i = 0; i < all.size(); ++i) {
    model::Param& p = all[i];
    if (p.value.ndim() != 2 || !qat_role_selected(cfg, p.spec.quant)) continue;
    const Device dev = p.value.device();
    Tensor& sc = buffer(stash.scales, i, Shape{p.value.dim(0)}, dev);
    QatStash::Entry e;
    e.index = i;
    if (p.compute.defined()) {
      fake_quant_forward(p.value, p.compute, cfg.spec, sc);
    } else {
      Tensor& m = buffer(stash.masters, i, p.value.shape(), dev);
      m.copy_from(p.value);
      e.stashed = true;
      fake_quant_forward(m, p.value, cfg.spec, sc);
    }
    stash.entries.push_back(e);
  }
  return stash.entries.size();
}

void finish_fake_quant(model::ParamTable& params, const QatConfig& cfg, QatStash& stash) {
  auto& all = params.all();
  for (const QatStash::Entry& e : stash.entries) {
    PG_CHECK(e.index < all.size(), "finish_fake_quant: stash index {} outside the table of {}", e.index, all.size());
    model::Param& p = all[e.index];
    const Tensor& master = e.stashed ? stash.masters[e.index] : p.value;
    if (cfg.clipped_ste && p.grad.defined())
      fake_quant_backward(master, stash.scales[e.index], p.grad, p.grad, cfg.spec, true);
    if (e.stashed) p.value.copy_from(master);
  }
  stash.entries.clear();
}

}  // namespace pgolf::quant
