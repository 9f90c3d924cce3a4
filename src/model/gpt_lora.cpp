// Hooks of the test-time adapters (per-document LoRA TTT, TECHNIQUES.md §8.4; the adapters themselves are in
// eval/lora_ttt.cpp). Kept apart from the forward so the model's own code only gains one adapt() call per site.
#include "model/gpt.h"
#include "model/tape.h"
#include "ops/reduce.h"

namespace pgolf::model {

Var GPT::adapt(Tape& tp, AdapterSite site, const Var& in, const Var& out) {
  if (adapter_ == nullptr) return out;
  return adapter_->apply(tp, site, site == AdapterSite::Head ? -1 : adapter_slot_, in, out);
}

void GPT::forward_backward_losses(const Tensor& ids, const Tensor& targets, float grad_scale, Arena& arena,
                                  const Tensor& losses) {
  PG_CHECK(ids.ndim() == 2 && ids.dtype() == DType::I32 && ids.device() == dev_ && targets.shape() == ids.shape() &&
               targets.dtype() == DType::I32 && targets.device() == dev_,
           "forward_backward_losses: ids {} and targets {} must be (B, T) i32 on {}", ids.desc(), targets.desc(),
           device_name(dev_));
  const int64_t N = ids.numel();
  PG_CHECK(losses.numel() == N && losses.dtype() == DType::F32 && losses.device() == dev_,
           "forward_backward_losses: losses {} must be ({}) f32", losses.desc(), N);
  PG_CHECK(arena.device() == dev_, "forward_backward_losses: arena on {} but model on {}",
           device_name(arena.device()), device_name(dev_));
  const size_t mark = arena.mark();
  struct Reset {
    Arena& a;
    size_t m;
    ~Reset() { a.reset(m); }
  } reset{arena, mark};
  Tape tp(arena, cfg_.act_dtype, cfg_.norm_eps, /*record_grads=*/true);
  std::vector<SkipGateMix> gates;
  Var logits = forward(tp, ids, &gates);
  tp.softcap_cross_entropy(logits, targets.view(Shape{N}), cfg_.logit_softcap, losses.view(Shape{N}), grad_scale);
  tp.backward();
  apply_skip_gate_grads(gates, arena);
}

}  // namespace pgolf::model
