// The forward pass of the GPT family, written once for training and evaluation (TECHNIQUES.md
// §4.2 and the §5 switches): U-Net over the virtual layer list (depth recurrence, §5.12), optional
// sigmoid skip gates (§5.5), layer-wise LN scale (§5.6), GPT-J parallel residuals (§5.13).
#include <cmath>

#include "model/gpt.h"
#include "model/tape.h"
#include "ops/elementwise.h"

namespace pgolf::model {

namespace {

ops::Act parse_activation(const std::string& name) {
  if (name == "relu2") return ops::Act::Relu2;
  if (name == "leaky_relu2") return ops::Act::LeakyRelu2;
  PG_FAIL("model: unknown activation '{}' (expected relu2 or leaky_relu2)", name);
}

}  // namespace

Var GPT::forward(Tape& tp, const Tensor& ids, std::vector<SkipGateMix>* gates) {
  const int64_t B = ids.dim(0), T = ids.dim(1);
  adapter_slot_ = -1;                                          // test-time adapters (gpt_lora.cpp)
  prepare_documents(tp, ids);                                  // §5.15 (doc_start_ when doc_isolated)
  Var x = tp.embedding(ids.view(Shape{B * T}), p(tok_emb_));  // (B*T, d)
  x = embed_extras(tp, x, ids);                                // BigramHash (§5.9), VE prep (§5.10)
  x = smear_raw(tp, x, ids);                                   // SmearGate v2 (§5.8), else identity
  x = tp.rmsnorm(x);
  x = smear_normed(tp, x, T);                                  // SmearGate v1 (§5.8), else identity
  const Var x0 = x;
  const std::vector<int> layers = schedule();  // virtual slot -> physical block
  const int n_enc = cfg_.unet ? static_cast<int>(layers.size()) / 2 : 0;  // no U-Net: every slot a "decoder"
  const int n_dec = static_cast<int>(layers.size()) - n_enc;
  std::vector<Var> skips;  // encoder outputs, consumed LIFO by the decoder
  skips.reserve(static_cast<size_t>(n_enc));
  int loop_pass = 0;  // visits of the loop's first layer so far (§5.12 loop embeddings)
  for (int i = 0; i < n_enc; ++i) {
    x = loop_embed(tp, x, layers[static_cast<size_t>(i)], &loop_pass);
    x = block(tp, layers[static_cast<size_t>(i)], x, x0, B, T);
    skips.push_back(x);
  }
  Var lane_m;              // two-lane (§5.13): lane M; x is lane A once `lanes` is set
  bool lanes = false;
  for (int j = 0; j < n_dec; ++j) {
    const int layer = layers[static_cast<size_t>(n_enc + j)];
    if (two_lane() && !lanes && layer >= cfg_.parallel_start) {
      lanes = true;
      lane_m = x;
    }
    if (!skips.empty()) {
      if (cfg_.skip_gates) {
        SkipGateMix m = skip_gate_mix(tp, j);
        x = tp.mix_channel(ChanParam{m.keep, m.keep_grad}, x, ChanParam{m.skip, m.skip_grad}, skips.back());
        if (gates != nullptr) gates->push_back(m);
      } else {
        x = tp.add_mul_channel(x, chan_row(p(skip_weights_), j), skips.back());  // x + w_j * skip
      }
      skips.pop_back();
    }
    x = loop_embed(tp, x, layer, &loop_pass);
    x = lanes ? two_lane_block(tp, layer, x, &lane_m, x0, B, T) : block(tp, layer, x, x0, B, T);
  }
  if (lanes) x = merge_lanes(tp, x, lane_m);
  if (head_tail_ > 0 && head_tail_ < T) {  // forward_losses_tail: the head sees the last head_tail_ rows only
    const int64_t d = x.t.dim(1);
    Tensor kept = tp.arena().alloc(Shape{B * head_tail_, d}, x.t.dtype(), "head rows");
    if (!tp.measuring())
      for (int64_t b = 0; b < B; ++b)
        ops::copy(x.t.slice(b * T + T - head_tail_, (b + 1) * T), kept.slice(b * head_tail_, (b + 1) * head_tail_));
    x = tp.constant(kept);  // forward only: no gradient flows through the selection
  }
  x = tp.rmsnorm(x);
  return adapt(tp, AdapterSite::Head, x, tp.linear(x, p(tok_emb_)));  // (B*T, V) tied head
}

Var GPT::loop_embed(Tape& tp, const Var& x, int layer, int* pass) {
  if (!cfg_.loop_embeddings || layer != cfg_.loop_start) return x;
  const int k = (*pass)++;
  PG_CHECK(k <= cfg_.loop_passes, "loop_embed: pass {} of a loop with {} extra passes", k, cfg_.loop_passes);
  // x + e_k as a per-channel mix of already GPU-checked ops: 1 (.) x + e_k (.) ones. The "1" side's scale gradient
  // lands in a scratch vector nobody reads; e_k's gradient is the column sum of dy.
  // One set of constants per forward (made at pass 0, reused by the later passes; they live to the end of the
  // forward_backward's arena scope, as the backward closures read them).
  if (k == 0) {
    Arena& a = tp.arena();
    const Shape d{cfg_.model_dim};
    loop_unit_ = a.alloc(d, DType::F32, "loop embedding unit scale");
    loop_unit_grad_ = a.alloc(d, DType::F32, "loop embedding unit scale grad (unused)");
    loop_ones_ = a.alloc(x.shape(), DType::F32, "loop embedding ones");
    if (!tp.measuring()) {
      ops::fill(loop_unit_, 1.f);
      ops::fill(loop_unit_grad_, 0.f);
      ops::fill(loop_ones_, 1.f);
    }
  }
  PG_CHECK(loop_ones_.shape() == x.shape(), "loop_embed: residual {} vs constants {}", x.t.desc(), loop_ones_.desc());
  return tp.mix_channel(ChanParam{loop_unit_, loop_unit_grad_}, x, chan_row(p(loop_emb_), k), tp.constant(loop_ones_));
}

GPT::SkipGateMix GPT::skip_gate_mix(Tape& tp, int slot) {
  Arena& a = tp.arena();
  const Shape d{cfg_.model_dim};
  const Tensor g = chan_row(p(skip_gates_), slot).value, w = chan_row(p(skip_weights_), slot).value;  // (d)
  SkipGateMix m{slot, a.alloc(d, DType::F32, "skip gate keep"), Tensor(), a.alloc(d, DType::F32, "skip gate skip"),
                Tensor()};
  Tensor neg = a.alloc(d, DType::F32, "skip gate -g");  // allocated in every mode so plans match runs
  if (tp.recording()) {
    m.keep_grad = a.zeros(d, DType::F32, "skip gate keep grad");
    m.skip_grad = a.zeros(d, DType::F32, "skip gate skip grad");
  }
  if (!tp.measuring()) {
    ops::sigmoid_gate_forward(g, ones_d_, m.keep);  // sigmoid(g)
    ops::scale(g, -1.f, neg);
    ops::sigmoid_gate_forward(neg, w, m.skip);  // (1 - sigmoid(g)) w
  }
  return m;
}

void GPT::apply_skip_gate_grads(const std::vector<SkipGateMix>& mixes, Arena& arena) {
  if (params_.frozen()) return;  // nothing to fold into (the tape state is the same while measuring)
  const Shape d{cfg_.model_dim};
  for (const SkipGateMix& m : mixes) {
    const ChanParam g = chan_row(p(skip_gates_), m.slot), w = chan_row(p(skip_weights_), m.slot);
    Tensor dx = arena.alloc(d, DType::F32, "skip gate dx");
    Tensor neg = arena.alloc(d, DType::F32, "skip gate -g");
    Tensor dneg = arena.zeros(d, DType::F32, "skip gate d(-g)");
    if (arena.measuring()) continue;
    ops::sigmoid_gate_backward(g.value, ones_d_, m.keep_grad, dx, g.grad);  // dg += dkeep s(1-s)
    ops::scale(g.value, -1.f, neg);
    ops::sigmoid_gate_backward(neg, w.value, m.skip_grad, dx, dneg);  // dx = s(-g) dskip = dw
    ops::add(w.grad, dx, w.grad);
    ops::axpby(-1.f, dneg, 1.f, g.grad);  // d(-g) enters g with a minus sign
  }
}

Var GPT::ln_scaled(Tape& tp, const Var& n, int layer) {
  if (!cfg_.ln_scale) return n;
  // A (1)-"head" gain broadcast to all d channels: n * 1/sqrt(layer + 1), in the activation dtype.
  return tp.mul_head(n, ln_scales_[static_cast<size_t>(layer)], row_expand_);
}

Var GPT::block(Tape& tp, int layer, const Var& x, const Var& x0, int64_t B, int64_t T) {
  mark_block(tp, layer);
  const BlockParams& bp = blocks_[static_cast<size_t>(layer)];
  Param& mix = p(bp.resid_mix);
  const bool gptj = cfg_.parallel_residual == "gptj" && layer >= cfg_.parallel_start;
  if (cfg_.fuse_residual_norm) return fused_block(tp, layer, bp, mix, gptj, x, x0, B, T);
  Var x_in = tp.mix_channel(chan_row(mix, 0), x, chan_row(mix, 1), x0);  // (B*T, d)
  if (gptj) {
    // GPT-J form (§5.13): both sublayers read the same normed input.
    const Var n = ln_scaled(tp, tp.rmsnorm(x_in), layer);
    Var x1 = tp.add_mul_channel(x_in, chan(p(bp.attn_scale)), attention(tp, bp, n, B, T));
    tp.release(x_in);
    Var out = tp.add_mul_channel(x1, chan(p(bp.mlp_scale)), mlp(tp, bp, n));
    tp.release(x1);
    return out;
  }
  // The f32 residual values inside the block are read by no backward (norms differentiate through
  // their outputs), so they are given back as soon as the forward is past them.
  Var x1 = tp.add_mul_channel(x_in, chan(p(bp.attn_scale)),
                              attention(tp, bp, ln_scaled(tp, tp.rmsnorm(x_in), layer), B, T));
  tp.release(x_in);
  Var out = tp.add_mul_channel(x1, chan(p(bp.mlp_scale)), mlp(tp, bp, ln_scaled(tp, tp.rmsnorm(x1), layer)));
  tp.release(x1);
  return out;
}

Var GPT::fused_block(Tape& tp, int layer, const BlockParams& bp, Param& mix, bool gptj, const Var& x, const Var& x0,
                     int64_t B, int64_t T) {
  // block() with each residual update fused with the norm that reads it (Tape::mix_rmsnorm /
  // add_rmsnorm: one pass over the f32 stream instead of two or three); the LN scale (§5.6) is the
  // norms' gain. The last update of the block has no norm after it inside the block.
  const float g = ln_gain(layer);
  const Tape::Normed in = tp.mix_rmsnorm(chan_row(mix, 0), x, chan_row(mix, 1), x0, g);
  if (gptj) {  // GPT-J form (§5.13): both sublayers read in.n; only the entry has a norm to fuse
    Var x1 = tp.add_mul_channel(in.y, chan(p(bp.attn_scale)), attention(tp, bp, in.n, B, T));
    tp.release(in.y);
    Var out = tp.add_mul_channel(x1, chan(p(bp.mlp_scale)), mlp(tp, bp, in.n));
    tp.release(x1);
    return out;
  }
  const Tape::Normed mid = tp.add_rmsnorm(in.y, chan(p(bp.attn_scale)), attention(tp, bp, in.n, B, T), g);
  tp.release(in.y);
  Var out = tp.add_mul_channel(mid.y, chan(p(bp.mlp_scale)), mlp(tp, bp, mid.n));
  tp.release(mid.y);
  return out;
}

Var GPT::attention(Tape& tp, const BlockParams& bp, const Var& n, int64_t B, int64_t T) {
  ++adapter_slot_;  // one attention call per virtual slot
  if (bp.gdn >= 0)  // §5.18: a GatedDeltaNet token mixer (gdn_layer.cpp)
    return gdn_mixer(tp, [this](size_t i) -> Param& { return p(i); }, gdn_[static_cast<size_t>(bp.gdn)], cfg_, n, B, T);
  const int64_t H = cfg_.num_heads, Hkv = cfg_.num_kv_heads, D = cfg_.head_dim(), N = B * T;
  const int rot = cfg_.rope_dims > 0 ? cfg_.rope_dims : static_cast<int>(D);
  Var q = adapt(tp, AdapterSite::Q, n, tp.linear(n, p(bp.c_q)));  // (N, H*D)
  Var k = adapt(tp, AdapterSite::K, n, tp.linear(n, p(bp.c_k)));  // (N, Hkv*D)
  Var v = value_extras(tp, bp, adapt(tp, AdapterSite::V, n, tp.linear(n, p(bp.c_v))));  // VE (§5.10), VRL (§5.11)
  // Per-head RMSNorm, RoPE and (q only) the QK gain in one fused op each (§5.2, §5.3).
  q = tp.qk_prep(tp.view(q, Shape{B, T, H, D}), &p(bp.q_gain), rot, cfg_.rope_base);
  k = tp.qk_prep(tp.view(k, Shape{B, T, Hkv, D}), nullptr, rot, cfg_.rope_base);
  ops::AttnParams ap;  // causal, scale 1/sqrt(D)
  ap.window = cfg_.attn_window;  // 0 = full causal (§5.17)
  Var y = tp.attention(tp.view(q, Shape{B, T, H, D}), k, tp.view(v, Shape{B, T, Hkv, D}), ap, doc_start_);
  if (bp.xsa) y = tp.xsa(y, tp.view(v, Shape{B, T, Hkv, D}));  // §5.7
  y = out_gate(tp, bp, n, y);                                   // §5.14 (identity when off)
  return adapt(tp, AdapterSite::O, n, tp.linear(tp.view(y, Shape{N, H * D}), p(bp.attn_proj)));  // (N, d)
}

Var GPT::mlp(Tape& tp, const BlockParams& bp, const Var& n) {
  Var h = tp.linear(n, p(bp.fc));  // (N, hidden)
  // act(h), the largest activation of the block, is kept for the backward or recomputed there (mlp_keep_act).
  return adapt(tp, AdapterSite::Mlp, n,
               tp.act_linear(h, parse_activation(cfg_.activation), cfg_.leaky_slope, p(bp.mlp_proj),
                             cfg_.mlp_keep_act));  // (N, d)
}

}  // namespace pgolf::model
