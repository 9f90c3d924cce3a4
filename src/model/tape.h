#pragma once
// The autograd tape. A model's forward is ordinary code calling the wrappers below; each wrapper
// allocates its outputs from the Arena, runs the forward op and records a backward closure.
// backward() runs the closures in reverse order, allocating activation gradients from the Arena
// and ACCUMULATING parameter gradients into Param::grad (f32), so a parameter used several times
// (looped layers, the tied embedding) accumulates naturally.
//
// Dtypes: values feeding matmuls (norm outputs, projections, attention, activations) are in the
// activation dtype (bf16 on GPU); the residual stream (outputs of add_mul_channel / mix_channel) is
// f32, as PyTorch promotes fp32 control parameters times bf16 activations. A gradient has its
// value's dtype.
//
// Measuring mode (arena.measuring()): nothing is computed, only allocations are made, so a dry run
// of forward+backward records the exact peak the memory plan needs. No memory outside the Arena is
// touched on the device during forward/backward, so a step can be captured in a CUDA graph.
//
// Lifetimes: every buffer the tape allocates (op outputs, saved statistics, gradients) is given
// back to the Arena as soon as nothing can read it any more:
//   - a forward value once the last backward closure that reads it has run (each op declares what
//     its closure reads when it records it); a value no closure reads, when backward() starts;
//   - a gradient once its producer's closure has consumed it (aliases move ownership along);
//   - per-op temporaries (extra gradient contributions, scratch) right after use.
// Frees are host bookkeeping in a fixed order, so every step repeats the same addresses and the
// measuring run still sees the exact peak. The model can help further: release(v) in forward
// when it will never read v again (frees it at once if no closure needs it), and keep(v) for a
// value it wants to read after backward().
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "core/arena.h"
#include "core/profile.h"
#include "core/tensor.h"
#include "model/params.h"
#include "ops/activation.h"
#include "ops/attention.h"

namespace pgolf::model {

// A value on the tape: the tensor plus the id of the gradient node it feeds (views share the node).
// node < 0: a constant (no gradient is tracked).
struct Var {
  Tensor t;
  int node = -1;
  const Shape& shape() const { return t.shape(); }
};

// A per-channel parameter (or a row of one): f32 value (C) and its f32 gradient (C).
struct ChanParam {
  Tensor value;
  Tensor grad;
};
ChanParam chan(Param& p);              // the whole parameter, viewed as a vector
ChanParam chan_row(Param& p, int64_t row);  // row `row` of a 2-D parameter (e.g. resid_mix[0])
ChanParam scalar_at(Param& p, int64_t index);  // element `index` of p (flattened) as a (1) vector

// A batch of low-rank factors (tape_lora.cpp, per-document LoRA TTT): value (G, ., .) in the activation dtype
// (what the matmuls read), grad (G, ., .) f32 that ACCUMULATES (undefined: no gradient).
struct LoraWeight {
  Tensor value;
  Tensor grad;
};

class Tape {
 public:
  // record_grads=false: forward only (no closures, no gradient nodes), for evaluation.
  Tape(Arena& arena, DType act_dtype, float norm_eps, bool record_grads);

  bool measuring() const { return arena_.measuring(); }
  bool recording() const { return record_; }
  DType act_dtype() const { return act_; }
  Arena& arena() { return arena_; }

  Var constant(const Tensor& t) { return Var{t, -1}; }
  // Same memory and gradient node, new shape.
  Var view(const Var& x, const Shape& s);

  // Parameter gradients ACCUMULATE into Param::grad (ChanParam::grad); an undefined grad is a frozen parameter
  // (ParamTable::set_frozen): the ops compute no gradient for it, only the activations' gradients.
  // ids: (N) i32 ; table: (V, C) -> (N, C). The gradient accumulates into table.grad.
  Var embedding(const Tensor& ids, Param& table);
  // Weightless RMSNorm over the last dim of x viewed as (rows, C).
  Var rmsnorm(const Var& x);
  // x: (N, in) ; w: (out, in) -> (N, out) = x w^T (uses w.compute when defined, else w.value).
  Var linear(const Var& x, Param& w);
  // y = act(h) w^T. keep_act = false: act(h) is computed into a temporary for the matmul and again in the
  // backward (saves the (N, hidden) activation per MLP at the cost of one elementwise pass); true: act(h) is
  // kept until the backward (one (N, hidden) buffer per MLP more, the recompute pass saved).
  Var act_linear(const Var& h, ops::Act act, float slope, Param& w, bool keep_act = false);
  // x: (B, T, H, D) rotary embedding on the first rot_dims dims of each head.
  Var rope(const Var& x, int rot_dims, float base);
  // x: (B, T, H, D) -> (B, T, H, D): per-head RMSNorm, partial RoPE and the optional per-head gain
  // (null = none) fused (ops/qk_prep.h); the gain gradient accumulates into gain->grad.
  Var qk_prep(const Var& x, Param* gain, int rot_dims, float base);
  // x: (N, H*D) ; gain: (H) f32 ; expand: (H, H*D) f32 0/1 matrix (expand[h, h*D + d] = 1).
  // y[n, h*D + d] = gain[h] * x[n, h*D + d].
  Var mul_head(const Var& x, Param& gain, const Tensor& expand);
  // q: (B, T, Hq, D), k, v: (B, T, Hkv, D) -> (B, T, Hq, D).
  // doc_start: undefined or (B, T) i32 (ops/attention.h; document isolation, §5.15); it must stay
  // valid until backward() has run.
  Var attention(const Var& q, const Var& k, const Var& v, const ops::AttnParams& p,
                const Tensor& doc_start = Tensor());
  Var activation(const Var& x, ops::Act act, float slope);
  // out = x + s * f (x, f: (N, C), s: (C)); out is f32 (the residual stream).
  Var add_mul_channel(const Var& x, const ChanParam& s, const Var& f);
  // out = s0 * x0 + s1 * x1; out is f32.
  Var mix_channel(const ChanParam& s0, const Var& x0, const ChanParam& s1, const Var& x1);
  // --- The residual update fused with the norm that reads it (tape_resnorm.cpp, ops/residual_norm.h) ---
  // y = x + s * f (f32, as add_mul_channel) and n = g * rmsnorm(y) (activation dtype) in one pass; the
  // backward reads n and its rstd, not y (release y once the forward is past it). g: a constant gain
  // (the §5.6 LN scale), non-zero; 1 = a plain norm. Equals add_mul_channel, rmsnorm, and mul_head by g.
  struct Normed {
    Var y;  // the residual stream value
    Var n;  // its norm, the sublayer input
  };
  Normed add_rmsnorm(const Var& x, const ChanParam& s, const Var& f, float g);
  // y = a * x + b * x0 (f32, as mix_channel) and n = g * rmsnorm(y) likewise.
  Normed mix_rmsnorm(const ChanParam& a, const Var& x, const ChanParam& b, const Var& x0, float g);
  // --- Record-stack ops (tape_extra.cpp; TECHNIQUES.md §5) ---
  // XSA (§5.7): y (B, T, Hq, D) attention output, v (B, T, Hkv, D) its values -> (B, T, Hq, D).
  Var xsa(const Var& y, const Var& v);
  // SmearGate v1 (§5.8): x (B*T, C) -> (1 - s) x_t + s x_{t-1} per row of length T, s = sigmoid(gate).
  Var smear_v1(const Var& x, Param& gate, int64_t T);
  // SmearGate v2 (§5.8): e (B*T, C), ids (B, T) i32 (valid until backward()) -> e_t + lambda *
  // sigmoid(w . e_t[0:W]) e_{t-1}, except at t = 0 and at BOS tokens.
  Var smear_v2(const Var& e, const Tensor& ids, Param& w, Param& lambda, int bos);
  // out = x * s (x: (N, C), s: (C)); out is f32 (a residual-stream contribution).
  Var mul_channel(const Var& x, const ChanParam& s);
  // out = sum_i s_i x_i over 1..3 terms with (1)-element scalars (scalar_at); out is f32 (or
  // out_dtype). A term whose scalar has no grad tensor is a constant weight.
  struct ScalarTerm {
    ChanParam s;
    Var x;
  };
  Var scalar_mix(const std::vector<ScalarTerm>& terms, DType out_dtype = DType::F32);
  // --- More record-stack ops (tape_extra2.cpp) ---
  // Attention output gate (§5.14): x (N, C) the normed attention input, w (H, W) its gate weights,
  // y (N, H, D) -> amp * sigmoid(c * w . x[:, 0:W]) per head times y (ops/attn_gate.h).
  Var attn_gate(const Var& x, Param& w, const Var& y, float amp, float c);
  // (1 - sigmoid(a)) x + sigmoid(a) y with a (1) parameter element (value residual, §5.11); out in
  // the activation dtype.
  Var sigmoid_lerp(const ChanParam& a, const Var& x, const Var& y);
  // --- GatedDeltaNet ops (tape_gdn.cpp; TECHNIQUES.md §5.18, ops/gdn.h, docs/GDN.md) ---
  // x (B, T, C) -> (B, T, C): causal depthwise convolution with the (C, K) f32 weight w, then SiLU when
  // silu; w's gradient accumulates into w.grad.
  Var short_conv(const Var& x, Param& w, bool silu);
  // x (B, T, H, D) -> scale * x / sqrt(sum_D x^2 + 1e-6) per head (the L2 normalisation of q and k).
  Var l2norm_heads(const Var& x, float scale);
  // a, bb (B, T, H) -> (g, beta), (B, T, H) f32 each: g = -exp(A_log) softplus(a + dt_bias), beta =
  // beta_scale sigmoid(bb); A_log, dt_bias (H) f32 parameters (gradients accumulate).
  std::pair<Var, Var> gdn_gates(const Var& a, const Var& bb, Param& A_log, Param& dt_bias, float beta_scale);
  // The gated delta rule, chunked form: q, k (B, T, H, Dk), v (B, T, H, Dv), g, beta (B, T, H) f32 ->
  // o (B, T, H, Dv); the chunk-start states are saved for the backward (zero initial state per row).
  Var gdn_chunk(const Var& q, const Var& k, const Var& v, const Var& g, const Var& beta, int chunk);
  // y, z (same numel) -> y * SiLU(z), in the activation dtype (the GDN output gate).
  Var silu_gate(const Var& y, const Var& z);

  // --- Per-document LoRA (tape_lora.cpp; TECHNIQUES.md §8.4) ---
  // y + scale * (x A_g^T) B_g^T where row group g = rows [g T, (g + 1) T) of x (N = G T rows) uses its own
  // A_g (r, in) and B_g (out, r): y (N, out), x (N, in) in the activation dtype, a (G, r, in), b (G, out, r).
  // Returns a new (N, out) value; the gradient flows to y, x, a.grad and b.grad (batched matmuls only).
  Var lora_add(const Var& y, const Var& x, const LoraWeight& a, const LoraWeight& b, float scale);

  // Terminal op: losses (N) f32 receive the per-token CE of the soft-capped logits (N, V); when
  // recording, d(grad_scale * sum(losses))/dlogits is computed in the same pass and seeds backward().
  void softcap_cross_entropy(const Var& logits, const Tensor& targets, float cap, const Tensor& losses,
                             float grad_scale);

  // Runs every recorded closure in reverse order, freeing what is dead along the way (see top).
  void backward();
  // Runs `fn` during backward() once every closure recorded after this call has run (so the gradients
  // of whatever the model uses only from here on are final). Not run in measuring mode or on a forward-only
  // tape. Takes no values and no gradients, so the memory plan is unchanged.
  void on_backward(std::function<void()> fn);

  // The model will read v no more in forward (a later op taking v fails with a clear error). If no
  // recorded closure reads v, its buffer is freed now; otherwise it dies with its last reader.
  void release(const Var& v);
  // v stays valid after backward() (until the Arena is reset); e.g. a value read after the step.
  // Both are no-ops on a forward-only tape (it tracks nothing; the Arena reset frees it all).
  void keep(const Var& v);

  // Process-wide default of whether new tapes free dead buffers (on). Off reproduces the old
  // keep-everything plan; for tests comparing the two and for debugging a suspected early free.
  static bool& free_dead_default();

  // Calibration hook (quant/calibrate.cpp collects GPTQ Hessians with it): when set, linear() calls
  // it with the weight's name and its input x (N, in) right after the forward op (never while
  // measuring). Thread-local, so models on other threads are unaffected.
  using LinearInputHook = std::function<void(const std::string& weight_name, const Tensor& x)>;
  static LinearInputHook& linear_input_hook();

 private:
  struct Node {
    Shape shape;
    DType dtype;
    Tensor grad;  // valid once has_grad
    bool has_grad = false;
    int value_buf = -1;  // the tracked buffer holding the value (-1: none)
    int grad_buf = -1;   // the tracked buffer holding the gradient, while this node owns a hold on it
  };
  // One tracked Arena block. It is freed when its holds reach zero: a value hold (released when
  // the value is dead), one per gradient node owning it, one for keep().
  struct Buf {
    Arena::Block block;
    int holds = 0;
    int first_reader = -1;  // the first closure recorded that reads it = the last to run
    bool value_held = false;
    bool released = false;  // release() was called: the model may not read it any more
  };
  // One recorded op: its backward closure, the nodes it produced (their gradients die after it)
  // and, filled at backward(), the values whose last reader it is.
  struct Step {
    std::function<void()> fn;
    std::vector<int> outputs;
    std::vector<int> dead_values;
    std::string label;  // profiler label of the op (empty unless profiling)
  };
  // A buffer receiving one gradient contribution for x: the node's own buffer when this is the
  // first contribution (ops OVERWRITE it), else a temporary that end_grad adds in and frees.
  struct GradSink {
    Tensor t;
    bool temp = false;
    Arena::Block block;  // the temporary's block
  };

  // Times an op's forward under "fwd:<label>" when profiling, and names its backward closure (the
  // next record()) "<label>". A no-op when the profiler is off.
  prof::Scope fwd_scope(const std::string& label) {
    if (prof::enabled()) op_label_ = label;
    return prof::Scope("fwd:", label);
  }
  Var make(const Shape& s, const char* what, DType dt);  // a new output var with its own node
  Var make(const Shape& s, const char* what) { return make(s, what, act_); }
  Tensor alloc(const Shape& s, DType dt, const char* what) { return arena_.alloc(s, dt, what); }
  // A saved tensor (statistics a closure reads); *buf receives its id for record()'s read list.
  Tensor alloc_saved(const Shape& s, DType dt, const char* what, int* buf);
  bool needs_grad(const Var& x) const { return record_ && x.node >= 0; }
  bool has_grad(const Var& x) const { return x.node >= 0 && nodes_[static_cast<size_t>(x.node)].has_grad; }
  Tensor grad_of(const Var& x) const;  // the node's gradient viewed as x's shape
  GradSink begin_grad(const Var& x);
  void end_grad(const Var& x, const GradSink& g);
  // For ops that always write the gradients of all their inputs: begin_grad, or a scratch block when
  // x needs none; end_grad_or_scratch adds it in or gives the scratch back.
  GradSink begin_grad_or_scratch(const Var& x);
  void end_grad_or_scratch(const Var& x, const GradSink& g);
  // x's gradient buffer for an op that can add in place (no temporary): allocated on the first
  // contribution (*accumulate = false: the op OVERWRITES), else the existing one (*accumulate = true).
  Tensor grad_into(const Var& x, bool* accumulate);
  // Adds dy (y's complete gradient) to x's gradient; aliases y's buffer when x has none.
  void pass_grad(const Var& x, const Var& y);
  // `reads`: tracked buffers the closure reads (value_of(x) for inputs/outputs, saved ids).
  void record(std::function<void()> fn, std::initializer_list<int> reads);
  // The tracked value buffer of x (-1 for constants); fails if the model released x.
  int value_of(const Var& x, const char* op) const;
  void check_input(const Var& x, const char* op) const { (void)value_of(x, op); }

  int track(const Arena::Block& b, bool value);
  void hold(int buf) { ++bufs_[static_cast<size_t>(buf)].holds; }
  void drop(int buf);
  void drop_value(int buf);
  void drop_grad(int node);
  void give_back(const Arena::Block& b) {
    if (free_dead_) arena_.free(b);
  }
  // Frozen parameters (ParamTable::set_frozen) have an undefined grad. Ops whose kernel can leave a
  // parameter gradient out skip it (linear's dW, the embedding, mul_head's gain); for a kernel that always
  // accumulates one (the fused per-channel reductions, where it costs no extra pass) this returns `grad`, or
  // for a frozen parameter a scratch shaped like `value` that nothing reads (*scratch, for give_scratch).
  Tensor param_grad_or_scratch(const Tensor& grad, const Tensor& value, Arena::Block* scratch);
  void give_scratch(const Arena::Block& b) {
    if (b.bytes > 0) give_back(b);
  }

  Arena& arena_;
  DType act_;
  float eps_;
  bool record_;
  bool free_dead_;
  std::vector<Node> nodes_;
  std::vector<Buf> bufs_;
  std::vector<Step> steps_;
  std::vector<int> unrecorded_outputs_;
  std::string op_label_;  // label of the op being recorded (profiling only)  // nodes made since the last record()
};

}  // namespace pgolf::model
