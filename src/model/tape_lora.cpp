// The tape wrapper of a batched low-rank update (per-document LoRA test-time training, TECHNIQUES.md §8.4,
// eval/lora_ttt.h). Built from batched matmuls only, so the CUDA path needs no kernel of its own.
#include <string>

#include "model/tape.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace pgolf::model {

using ops::Trans;

Var Tape::lora_add(const Var& y, const Var& x, const LoraWeight& a, const LoraWeight& b, float scale) {
  const prof::Scope timer = fwd_scope(std::string("lora_add"));
  PG_CHECK(a.value.ndim() == 3 && b.value.ndim() == 3 && a.value.dim(0) == b.value.dim(0) &&
               a.value.dim(1) == b.value.dim(2),
           "lora_add: factors A {} and B {} must be (G, r, in) and (G, out, r)", a.value.desc(), b.value.desc());
  const int64_t G = a.value.dim(0), r = a.value.dim(1), in = a.value.dim(2), out = b.value.dim(1);
  PG_CHECK(x.t.ndim() == 2 && y.t.ndim() == 2 && x.t.dim(0) == y.t.dim(0) && x.t.dim(0) % G == 0 &&
               x.t.dim(1) == in && y.t.dim(1) == out,
           "lora_add: input {} and output {} do not fit {} groups of A {} / B {}", x.t.desc(), y.t.desc(), G,
           a.value.desc(), b.value.desc());
  PG_CHECK(x.t.dtype() == act_ && y.t.dtype() == act_ && a.value.dtype() == act_ && b.value.dtype() == act_,
           "lora_add: x {}, y {}, A {}, B {} must all be in the activation dtype {}", x.t.desc(), y.t.desc(),
           a.value.desc(), b.value.desc(), dtype_name(act_));
  const int64_t T = x.t.dim(0) / G;
  const Shape xs{G, T, in}, zs{G, T, out}, us{G, T, r};
  const int x_buf = value_of(x, "lora_add");
  check_input(y, "lora_add");
  int u_buf = -1;
  const Tensor u = alloc_saved(us, act_, "lora_add x A^T", &u_buf);  // dB reads it
  Var z = make(y.shape(), "lora_add out");
  if (!measuring()) {
    ops::matmul_batched(x.t.view(xs), Trans::N, a.value, Trans::T, u);  // u_g = x_g A_g^T
    ops::copy(y.t, z.t);
    ops::matmul_batched(u, Trans::N, b.value, Trans::T, z.t.view(zs), scale, 1.f);  // z = y + s u_g B_g^T
  }
  record([this, x, y, z, u, a, b, scale, xs, zs, us] {
    if (!has_grad(z)) return;
    Arena::Block du = arena_.alloc_block(us, act_, "lora_add du");
    if (!measuring()) {
      const Tensor dz = grad_of(z).view(zs);
      ops::matmul_batched(dz, Trans::N, b.value, Trans::N, du.t, scale);                    // du = s dz B
      if (b.grad.defined()) ops::matmul_batched(dz, Trans::T, u, Trans::N, b.grad, scale, 1.f);  // dB += s dz^T u
      if (a.grad.defined()) ops::matmul_batched(du.t, Trans::T, x.t.view(xs), Trans::N, a.grad, 1.f, 1.f);  // dA += du^T x
    }
    if (needs_grad(x)) {
      bool acc = false;  // x (the normed input) also feeds the base projection: usually accumulate
      const Tensor dx = grad_into(x, &acc);
      if (!measuring()) ops::matmul_batched(du.t, Trans::N, a.value, Trans::N, dx.view(xs), 1.f, acc ? 1.f : 0.f);
    }
    give_back(du);
    pass_grad(y, z);  // last: it may hand z's gradient buffer over to y
  }, {x_buf, u_buf});
  return z;
}

}  // namespace pgolf::model
