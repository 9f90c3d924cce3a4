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
#include <functional>
#include <vector>

#include "core/arena.h"
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

  // ids: (N) i32 ; table: (V, C) -> (N, C). The gradient accumulates into table.grad.
  Var embedding(const Tensor& ids, Param& table);
  // Weightless RMSNorm over the last dim of x viewed as (rows, C).
  Var rmsnorm(const Var& x);
  // x: (N, in) ; w: (out, in) -> (N, out) = x w^T (uses w.compute when defined, else w.value).
  Var linear(const Var& x, Param& w);
  // x: (B, T, H, D) rotary embedding on the first rot_dims dims of each head.
  Var rope(const Var& x, int rot_dims, float base);
  // x: (N, H*D) ; gain: (H) f32 ; expand: (H, H*D) f32 0/1 matrix (expand[h, h*D + d] = 1).
  // y[n, h*D + d] = gain[h] * x[n, h*D + d].
  Var mul_head(const Var& x, Param& gain, const Tensor& expand);
  // q: (B, T, Hq, D), k, v: (B, T, Hkv, D) -> (B, T, Hq, D).
  Var attention(const Var& q, const Var& k, const Var& v, const ops::AttnParams& p);
  Var activation(const Var& x, ops::Act act, float slope);
  // out = x + s * f (x, f: (N, C), s: (C)); out is f32 (the residual stream).
  Var add_mul_channel(const Var& x, const ChanParam& s, const Var& f);
  // out = s0 * x0 + s1 * x1; out is f32.
  Var mix_channel(const ChanParam& s0, const Var& x0, const ChanParam& s1, const Var& x1);
  // Terminal op: losses (N) f32 receive the per-token CE of the soft-capped logits (N, V); when
  // recording, d(grad_scale * sum(losses))/dlogits is computed in the same pass and seeds backward().
  void softcap_cross_entropy(const Var& logits, const Tensor& targets, float cap, const Tensor& losses,
                             float grad_scale);

  // Runs every recorded closure in reverse order.
  void backward();

 private:
  struct Node {
    Shape shape;
    DType dtype;
    Tensor grad;  // valid once has_grad
    bool has_grad = false;
  };
  // A buffer receiving one gradient contribution for x: the node's own buffer when this is the
  // first contribution (ops OVERWRITE it), else a temporary that end_grad adds in.
  struct GradSink {
    Tensor t;
    bool temp = false;
  };

  Var make(const Shape& s, const char* what, DType dt);  // a new output var with its own node
  Var make(const Shape& s, const char* what) { return make(s, what, act_); }
  Tensor alloc(const Shape& s, DType dt, const char* what) { return arena_.alloc(s, dt, what); }
  bool needs_grad(const Var& x) const { return record_ && x.node >= 0; }
  bool has_grad(const Var& x) const { return x.node >= 0 && nodes_[static_cast<size_t>(x.node)].has_grad; }
  Tensor grad_of(const Var& x) const;  // the node's gradient viewed as x's shape
  GradSink begin_grad(const Var& x);
  void end_grad(const Var& x, const GradSink& g);
  // Adds dy (already complete, owned by a finished node) to x's gradient; aliases it when x has none.
  void pass_grad(const Var& x, const Tensor& dy);
  void record(std::function<void()> fn);

  Arena& arena_;
  DType act_;
  float eps_;
  bool record_;
  std::vector<Node> nodes_;
  std::vector<std::function<void()>> closures_;
};

}  // namespace pgolf::model
