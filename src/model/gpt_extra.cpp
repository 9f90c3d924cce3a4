// Record-stack modules of the GPT (TECHNIQUES.md §5) that live outside the plain block: document
// isolation (§5.15), SmearGate v1/v2 (§5.8) and the two-lane parallel residual (§5.13). XSA (§5.7)
// is one call in GPT::attention.
#include "model/gpt.h"
#include "model/tape.h"
#include "ops/documents.h"

namespace pgolf::model {

void GPT::build_extra_params() {
  auto control = [this](std::string name, Shape shape, InitKind init, float v = 0.f) {
    params_.add(ParamSpec{std::move(name), shape, OptGroup::AdamScalar, 1.f, QuantRole::Passthrough, init, v});
    return params_.all().size() - 1;
  };
  const int64_t d = cfg_.model_dim, L = cfg_.num_layers;
  if (cfg_.smear_gate == "v1") {
    smear_gate_ = control("smear_gate.gate", Shape{d}, InitKind::Zeros);  // sigmoid(0) = 0.5 / 0.5
  } else if (cfg_.smear_gate == "v2") {
    smear_w_ = control("smear_gate.weight", Shape{cfg_.smear_window}, InitKind::Zeros);
    smear_lambda_ = control("smear_gate.lambda", Shape{1}, InitKind::Zeros);  // identity at init
  }
  if (two_lane()) {
    // rho[l, lane] (lane 0 = A, 1 = M) and pi[l, lane, source] (source 0 = attention, 1 = MLP).
    lane_resid_ = control("lane_resid", Shape{L, 2}, InitKind::Constant, 1.1f);
    lane_route_ = control("lane_route", Shape{L, 2, 2}, InitKind::Ones);
    half_ = Tensor::from_vector(std::vector<float>{0.5f}, Shape{1}, dev_);
  }
  build_extra2_params();  // BigramHash, value embeddings, VRL, attention output gates (gpt_extra2.cpp)
}

void GPT::prepare_documents(Tape& tp, const Tensor& ids) {
  doc_start_ = Tensor();
  if (!cfg_.doc_isolated) return;
  // From the Arena (a training step allocates nothing else); valid until the step's scope ends.
  doc_start_ = tp.arena().alloc(ids.shape(), DType::I32, "doc starts");
  if (!tp.measuring()) ops::doc_starts(ids, cfg_.bos_id, doc_start_, doc_segment_len_);
}

void GPT::set_doc_segment_len(int64_t len) {
  PG_CHECK(len >= 0, "set_doc_segment_len: {} must be >= 0 (0 = cut only at BOS)", len);
  PG_CHECK(len == 0 || cfg_.doc_isolated, "set_doc_segment_len: document segments need model.doc_isolated = true");
  doc_segment_len_ = len;
}

Var GPT::smear_raw(Tape& tp, const Var& e, const Tensor& ids) {
  if (cfg_.smear_gate != "v2") return e;
  return tp.smear_v2(e, ids, p(smear_w_), p(smear_lambda_), cfg_.bos_id);
}

Var GPT::smear_normed(Tape& tp, const Var& x, int64_t T) {
  if (cfg_.smear_gate != "v1") return x;
  return tp.smear_v1(x, p(smear_gate_), T);
}

Var GPT::two_lane_block(Tape& tp, int layer, const Var& a, Var* m, const Var& x0, int64_t B, int64_t T) {
  mark_block(tp, layer);
  const BlockParams& bp = blocks_[static_cast<size_t>(layer)];
  Param& mix = p(bp.resid_mix);
  Var a_in = tp.mix_channel(chan_row(mix, 0), a, chan_row(mix, 1), x0);  // attention reads A with the x0 mix
  Var att = tp.mul_channel(attention(tp, bp, ln_scaled(tp, tp.rmsnorm(a_in), layer), B, T), chan(p(bp.attn_scale)));
  tp.release(a_in);
  Var mlp_out = tp.mul_channel(mlp(tp, bp, ln_scaled(tp, tp.rmsnorm(*m), layer)), chan(p(bp.mlp_scale)));
  Param& rho = p(lane_resid_);
  Param& pi = p(lane_route_);
  const int64_t r = 2LL * layer, q = 4LL * layer;
  Var new_a = tp.scalar_mix({{scalar_at(rho, r), a}, {scalar_at(pi, q), att}, {scalar_at(pi, q + 1), mlp_out}});
  *m = tp.scalar_mix({{scalar_at(rho, r + 1), *m}, {scalar_at(pi, q + 2), att}, {scalar_at(pi, q + 3), mlp_out}});
  return new_a;
}

Var GPT::merge_lanes(Tape& tp, const Var& a, const Var& m) {
  const ChanParam half{half_, Tensor()};  // a constant weight: no gradient
  return tp.scalar_mix({{half, a}, {half, m}});
}

}  // namespace pgolf::model
