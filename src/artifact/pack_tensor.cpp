#include "artifact/pack_tensor.h"

#include "core/error.h"

namespace pgolf::artifact {

StoredTensor pack_tensor(const std::string& name, const std::vector<int64_t>& shape, std::span<const float> values,
                         model::QuantRole role, const quant::QuantPolicy& policy, const std::vector<double>* hessian,
                         PackTensorReport* report) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  PG_CHECK(!shape.empty() && static_cast<int64_t>(values.size()) == numel, "pack '{}': {} values for shape of {} elements",
           name, values.size(), numel);
  PackTensorReport local;
  PackTensorReport& rep = report ? *report : local;
  rep = PackTensorReport{};
  const quant::RolePolicy rp = policy.for_role(role);
  rep.method = rp.method;
  rep.bits = rp.bits;
  if (rp.method == quant::QuantMethod::F16) {
    StoredTensor t = StoredTensor::make_f16(name, shape, std::vector<float>(values.begin(), values.end()));
    t.group = static_cast<uint8_t>(role);
    const auto back = dequantize(t);
    rep.sse = quant::squared_error(values, back);
    return t;
  }
  PG_CHECK(shape.size() >= 2 && shape[0] > 0, "pack '{}': role {} needs a matrix, got rank {}", name,
           quant::quant_role_name(role), shape.size());
  const int64_t rows = shape[0], cols = numel / rows;
  auto searched = [&](const quant::GptqOptions& o, std::span<const double> h) {
    quant::ClipSearchOutcome cs = quant::clip_search(values, rows, cols, h, o, policy.clip_search);
    rep.clip_searched = true;
    rep.clip_rows_changed = cs.rows_changed;
    rep.clip_base_error = cs.base_error;
    rep.clip_error = cs.error;
    return std::move(cs.q);
  };
  auto rtn = [&] {  // round-to-nearest with the role's clip, searched when the policy says so
    if (policy.clip_search.mode == quant::ClipSearchMode::Off)
      return quant::quantize_rtn(values, rows, cols, rp.bits, rp.clip);
    quant::GptqOptions o;
    o.bits = rp.bits;
    o.clip = rp.clip;
    return searched(o, {});
  };
  quant::QuantizedMatrix q;
  switch (rp.method) {
    case quant::QuantMethod::Rtn:
      q = rtn();
      break;
    case quant::QuantMethod::ClipSearch: {
      const auto cands = quant::gptq_lite_candidates();
      q = quant::clip_search_rtn(values, rows, cols, rp.bits, cands).q;
      break;
    }
    case quant::QuantMethod::Gptq:
      if (hessian == nullptr) {
        rep.hessian_missing = true;
        rep.method = quant::QuantMethod::Rtn;
        q = rtn();
      } else {
        quant::GptqOptions o;
        o.bits = rp.bits;
        o.clip = rp.clip;
        o.damp_percent = policy.damp_percent;
        o.block_size = policy.block_size;
        o.act_order = policy.act_order;
        if (policy.clip_search.mode != quant::ClipSearchMode::Off) {
          q = searched(o, *hessian);
        } else {
          quant::GptqReport g;
          q = quant::gptq_quantize(values, rows, cols, *hessian, o, &g);
          rep.gptq = g;
        }
      }
      break;
    case quant::QuantMethod::F16: break;  // handled above
  }
  StoredTensor t = StoredTensor::make_int_row(name, shape, std::move(q));
  t.group = static_cast<uint8_t>(role);
  rep.sse = quant::squared_error(values, dequantize(t));
  return t;
}

}  // namespace pgolf::artifact
