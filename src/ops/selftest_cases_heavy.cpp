// Parity cases: optimizer kernels, random fills, matmul / linear, attention.
#include <algorithm>
#include <cmath>

#include "ops/attention.h"
#include "ops/matmul.h"
#include "ops/optim.h"
#include "ops/random.h"
#include "ops/selftest.h"
#include "ops/selftest_util.h"

namespace pgolf::ops::selftest {

namespace {

constexpr DType kF = DType::F32, kB = DType::BF16;
const std::vector<std::pair<Shape, bool>> kRowShapes = {
    {Shape{7, 13}, false}, {Shape{33, 64}, false}, {Shape{65536, 512}, true}};

// Rows of 16384 and more take row_normalize's block-per-row kernel (Newton–Schulz normalizes each matrix of a
// stack as one row): vector (40000 = four 8192-element spans and a partial fifth) and scalar (odd length)
// forms, and the stack of 11 512 x 2048 matrices.
void long_row_normalize_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [shape, big] : std::vector<std::pair<Shape, bool>>{
           {Shape{3, 40000}, false}, {Shape{2, 16391}, false}, {Shape{11, 512 * 2048}, true}}) {
    const Shape s = shape;
    for (DType ut : {kF, kB}) {
      out.push_back({"row_normalize", big, [=] {
                       Builder b("row_normalize", dtype_label({ut}), s, seed);
                       int x = b.add("x", b.in.normal(s, ut, 2.f));
                       b.check(x, tol(ut, true));
                       b.run([=](const T& t) { row_normalize(t[x], 1e-7f); });
                       return b.done();
                     }});
    }
  }
}

void optim_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [shape, big] : kRowShapes) {
    const Shape s = shape;
    out.push_back({"adam_step", big, [=] {
                     Builder b("adam_step", "f32", s, seed);
                     const float b1 = 0.9f, b2 = 0.95f;
                     int p = b.add("p", b.in.normal(s, kF)), g = b.add("g", b.in.normal(s, kF, 0.1f)),
                         m = b.add("m", b.in.normal(s, kF, 0.05f)), v = b.add("v", b.in.uniform(s, kF, 0.f, 0.01f)),
                         hp = b.add("hp", Inputs::values({3e-3f, b1, b2, 1e-8f, 0.1f, 1.f - b1 * b1 * b1,
                                                          1.f - b2 * b2 * b2, 0.5f}));
                     b.check(p, kTolF32Reduce);
                     b.check(m, kTolF32);
                     b.check(v, kTolF32);
                     b.run([=](const T& t) { adam_step(t[p], t[g], t[m], t[v], t[hp]); });
                     return b.done();
                   }});
    for (DType ut : {kF, kB}) {
      for (bool nesterov : {true, false}) {
        const std::string op = nesterov ? "muon_momentum" : "muon_momentum(plain)";
        out.push_back({op, big, [=] {
                         Builder b(op, dtype_label({ut}), s, seed);
                         int g = b.add("g", b.in.normal(s, kF)), buf = b.add("buf", b.in.normal(s, kF)),
                             u = b.add("u", Inputs::poison(s, ut)), hp = b.add("hp", Inputs::values({0.95f, 0.5f}));
                         b.check(buf, kTolF32);
                         b.check(u, tol(ut));
                         b.run([=](const T& t) { muon_momentum(t[g], t[buf], t[u], t[hp], nesterov); });
                         return b.done();
                       }});
      }
      out.push_back({"row_normalize", big, [=] {
                       Builder b("row_normalize", dtype_label({ut}), s, seed);
                       int x = b.add("x", b.in.normal(s, ut, 2.f));
                       b.check(x, tol(ut, true));
                       b.run([=](const T& t) { row_normalize(t[x], 1e-7f); });
                       return b.done();
                     }});
      out.push_back({"muon_apply", big, [=] {
                       Builder b("muon_apply", dtype_label({ut}), s, seed);
                       int p = b.add("p", b.in.normal(s, kF)), x = b.add("x", b.in.normal(s, ut)),
                           hp = b.add("hp", Inputs::values({0.02f, 0.1f, 1.5f}));
                       b.check(p, kTolF32);
                       b.run([=](const T& t) { muon_apply(t[p], t[x], t[hp]); });
                       return b.done();
                     }});
    }
    out.push_back({"ema_update", big, [=] {
                     Builder b("ema_update", "f32", s, seed);
                     int a = b.add("avg", b.in.normal(s, kF)), p = b.add("p", b.in.normal(s, kF)),
                         hp = b.add("hp", Inputs::values({0.997f}));
                     b.check(a, kTolF32);
                     b.run([=](const T& t) { ema_update(t[a], t[p], t[hp]); });
                     return b.done();
                   }});
    if (!big) {
      // Parts in a permuted order, the scale written to every other hp entry: the double sum in that order, the
      // sqrt and the division are IEEE on both sides, so the GPU must give the CPU's bits (a clipping norm of 1).
      const int64_t n = s.numel();
      out.push_back({"clip_grad_scale", false, [=] {
                       Builder b("clip_grad_scale", "f32", s, seed);
                       std::vector<int32_t> order, slots;
                       for (int64_t i = 0; i < n; ++i) order.push_back(static_cast<int32_t>((i * 7 + 3) % n));
                       for (int64_t i = 0; i < n; i += 2) slots.push_back(static_cast<int32_t>(i));
                       int parts = b.add("parts", b.in.uniform(Shape{n}, kF, 0.f, 0.05f)),
                           ord = b.add("order", Tensor::from_vector(order, Shape{n})),
                           hp = b.add("hp", b.in.normal(Shape{n}, kF)),
                           sl = b.add("slots", Tensor::from_vector(slots, Shape{static_cast<int64_t>(slots.size())})),
                           norm = b.add("norm", Inputs::poison(Shape{1}, kF));
                       b.check(hp, 0.0);
                       b.check(norm, 0.0);
                       b.run([=](const T& t) { clip_grad_scale(t[parts], t[ord], 1.0, t[hp], t[sl], t[norm]); });
                       return b.done();
                     }});
    }
    for (DType dt : {kF, kB}) {
      out.push_back({"fill_uniform", big, [=] {
                       Builder b("fill_uniform", dtype_label({dt}), s, seed);
                       int x = b.add("x", Inputs::poison(s, dt));
                       b.check(x, tol(dt));
                       b.run([=](const T& t) { fill_uniform(t[x], 1234567u, 99u, -0.5f, 2.f); });
                       return b.done();
                     }});
      out.push_back({"fill_normal", big, [=] {
                       Builder b("fill_normal", dtype_label({dt}), s, seed);
                       int x = b.add("x", Inputs::poison(s, dt));
                       b.check(x, tol(dt));
                       b.run([=](const T& t) { fill_normal(t[x], 0xDEADBEEFCAFEull, 1ull << 33, 0.1f, 0.02f); });
                       return b.done();
                     }});
    }
  }
}

void matmul_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct M {
    int64_t m, n, k;
    bool big;
  };
  for (const M mm : {M{7, 5, 13, false}, M{33, 48, 64, false}, M{65536, 512, 512, true}, M{65536, 2048, 512, true}}) {
    for (DType ab : {kF, kB}) {
      for (DType ct : {kF, kB}) {
        for (int form = 0; form < 3; ++form) {  // NN, NT, TN
          if (ab == kF && ct == kB) continue;  // not in the contract: f32 inputs need an f32 output
          if (mm.big && (ct != ab || (mm.n == 2048 && form != 1))) continue;
          const Trans ta = form == 2 ? Trans::T : Trans::N, tb = form == 1 ? Trans::T : Trans::N;
          const char* fname[] = {"matmul_NN", "matmul_NT", "matmul_TN"};
          const std::string op = fname[form];
          const float beta = form == 2 ? 1.f : 0.f;  // TN accumulates (the dW pattern)
          out.push_back({op, mm.big, [=] {
                           const Shape sa = ta == Trans::N ? Shape{mm.m, mm.k} : Shape{mm.k, mm.m};
                           const Shape sb = tb == Trans::N ? Shape{mm.k, mm.n} : Shape{mm.n, mm.k};
                           const Shape sc{mm.m, mm.n};
                           Builder b(op, dtype_label({ab, ct}), sc, seed);
                           b.set_shape(fmt::format("{}x{}x{}", mm.m, mm.n, mm.k));
                           int A = b.add("A", b.in.normal(sa, ab)), B = b.add("B", b.in.normal(sb, ab)),
                               C = b.add("C", beta != 0.f ? b.in.normal(sc, ct) : Inputs::poison(sc, ct));
                           b.check(C, ct == kF ? kTolF32Reduce : kTolBF16);
                           b.run([=](const T& t) { matmul(t[A], ta, t[B], tb, t[C], 0.75f, beta); });
                           return b.done();
                         }});
        }
      }
    }
  }
  for (DType ab : {kF, kB}) {
    out.push_back({"matmul_batched", false, [=] {
                     const Shape sa{3, 9, 16}, sb{16, 24}, sc{3, 9, 24};
                     Builder b("matmul_batched", dtype_label({ab}), sc, seed);
                     int A = b.add("A", b.in.normal(sa, ab)), B = b.add("B", b.in.normal(sb, ab)),
                         C = b.add("C", Inputs::poison(sc, ab));
                     b.check(C, tol(ab, true));
                     b.run([=](const T& t) { matmul_batched(t[A], Trans::N, t[B], Trans::N, t[C]); });
                     return b.done();
                   }});
    out.push_back({"linear_bwd", false, [=] {
                     const Shape sx{37, 24}, sw{40, 24}, sy{37, 40};
                     Builder b("linear_bwd", dtype_label({ab}), sy, seed);
                     int x = b.add("x", b.in.normal(sx, ab)), w = b.add("w", b.in.normal(sw, ab)),
                         dy = b.add("dy", b.in.normal(sy, ab)), dx = b.add("dx", Inputs::poison(sx, ab)),
                         dw = b.add("dw", b.in.normal(sw, kF));
                     b.check(dx, tol(ab, true));
                     b.check(dw, kTolF32Reduce);
                     b.run([=](const T& t) { linear_backward(t[x], t[w], t[dy], t[dx], t[dw]); });
                     return b.done();
                   }});
    out.push_back({"linear_bwd(accumulate dx)", false, [=] {
                     const Shape sx{37, 24}, sw{40, 24}, sy{37, 40};
                     Builder b("linear_bwd(accumulate dx)", dtype_label({ab}), sy, seed);
                     int x = b.add("x", b.in.normal(sx, ab)), w = b.add("w", b.in.normal(sw, ab)),
                         dy = b.add("dy", b.in.normal(sy, ab)), dx = b.add("dx", b.in.normal(sx, ab)),
                         dw = b.add("dw", b.in.normal(sw, kF));
                     b.check(dx, tol(ab, true));
                     b.check(dw, kTolF32Reduce);
                     b.run([=](const T& t) { linear_backward(t[x], t[w], t[dy], t[dx], t[dw], true); });
                     return b.done();
                   }});
  }
}

// doc_start (B, T): documents of random lengths; key j is visible to query i iff j >= doc_start[b, i].
Tensor doc_starts(Inputs& in, int64_t B, int64_t T) {
  const std::vector<int32_t> cut = in.ids(Shape{B * T}, 7).to_int_vector();
  std::vector<int32_t> d(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b) {
    int32_t start = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (t > 0 && cut[b * T + t] == 0) start = static_cast<int32_t>(t);  // a new document about 1 in 7
      d[b * T + t] = start;
    }
  }
  return Tensor::from_vector(d, Shape{B, T});
}

void attention_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct A {
    int64_t B, T, Hq, Hkv, D;
    int window;
    bool docs, big;
    bool causal = true;
  };
  // The flash backward runs every bf16 head_dim-64 case; the shapes below 2048 cover T not a multiple of 64 or 128 (partial key blocks and
  // query tiles), Hq = Hkv and Hq = 4 Hkv, windows and documents (alone, together, and across key blocks),
  // and non-causal attention with and without documents.
  for (const A a : {A{1, 7, 2, 1, 64, 0, false, false}, A{2, 37, 4, 2, 64, 0, false, false},
                    A{1, 130, 4, 1, 64, 24, false, false}, A{2, 96, 2, 2, 64, 0, true, false},
                    A{2, 200, 4, 2, 64, 0, false, false}, A{1, 300, 4, 1, 64, 100, false, false},
                    A{2, 333, 2, 2, 64, 0, true, false}, A{1, 260, 4, 2, 64, 70, true, false},
                    A{1, 200, 2, 1, 64, 0, false, false, false}, A{2, 190, 4, 4, 64, 0, true, false, false},
                    A{1, 2048, 8, 4, 64, 0, false, true}}) {
    for (DType dt : {kF, kB}) {
      const Shape sq{a.B, a.T, a.Hq, a.D}, skv{a.B, a.T, a.Hkv, a.D}, sl{a.B, a.Hq, a.T};
      const std::string tag =
          std::string(a.window ? "(window)" : "") + (a.docs ? "(docs)" : "") + (a.causal ? "" : "(full)");
      // bf16 attention rounds P to bf16 before P.V on the GPU; f32 runs the plain fp32 kernel.
      const double tol_out = dt == kF ? 1e-4 : 2e-2, tol_lse = dt == kF ? 1e-5 : 1e-3;
      const double tol_grad = dt == kF ? 2e-4 : 3e-2;
      AttnParams p;
      p.window = a.window, p.causal = a.causal;
      out.push_back({"attention_fwd" + tag, a.big, [=] {
                       Builder b("attention_fwd" + tag, dtype_label({dt}), sq, seed);
                       int q = b.add("q", b.in.normal(sq, dt)), k = b.add("k", b.in.normal(skv, dt)),
                           v = b.add("v", b.in.normal(skv, dt)),
                           ds = b.add("doc_start", a.docs ? doc_starts(b.in, a.B, a.T) : Tensor::zeros(Shape{1}, DType::I32)),
                           o = b.add("out", Inputs::poison(sq, dt)), l = b.add("lse", Inputs::poison(sl, kF));
                       b.check(o, tol_out);
                       b.check(l, tol_lse);
                       b.run([=](const T& t) {
                         attention_forward(t[q], t[k], t[v], a.docs ? t[ds] : Tensor(), t[o], t[l], p);
                       });
                       return b.done();
                     }});
      out.push_back({"attention_bwd" + tag, a.big, [=] {
                       Builder b("attention_bwd" + tag, dtype_label({dt}), sq, seed);
                       Tensor qh = b.in.normal(sq, dt), kh = b.in.normal(skv, dt), vh = b.in.normal(skv, dt);
                       Tensor dsh = a.docs ? doc_starts(b.in, a.B, a.T) : Tensor::zeros(Shape{1}, DType::I32);
                       Tensor oh = Tensor::empty(sq, dt), lh = Tensor::empty(sl, kF);
                       attention_forward(qh, kh, vh, a.docs ? dsh : Tensor(), oh, lh, p);  // CPU reference
                       int q = b.add("q", qh), k = b.add("k", kh), v = b.add("v", vh), ds = b.add("doc_start", dsh),
                           o = b.add("out", oh), l = b.add("lse", lh), d = b.add("dout", b.in.normal(sq, dt)),
                           dq = b.add("dq", Inputs::poison(sq, dt)), dk = b.add("dk", Inputs::poison(skv, dt)),
                           dv = b.add("dv", Inputs::poison(skv, dt));
                       b.check(dq, tol_grad);
                       b.check(dk, tol_grad);
                       b.check(dv, tol_grad);
                       b.run([=](const T& t) {
                         attention_backward(t[q], t[k], t[v], a.docs ? t[ds] : Tensor(), t[o], t[l], t[d], t[dq],
                                            t[dk], t[dv], p);
                       });
                       return b.done();
                     }});
    }
  }
}

// The flash forward with each CUDA kernel forced (ops/attention.h: AttnFwdKernel), bf16: the wgmma
// kernels on ragged T (partial query and key blocks), GQA, non-causal, window, documents and the
// training shapes. On a device that cannot run wgmma the forcing falls back to mma.sync.
void attention_fwd_kernel_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct W {
    int64_t B, T, Hq, Hkv;
    int window;
    bool docs, causal, big;
  };
  for (AttnFwdKernel kern : {AttnFwdKernel::Wgmma64, AttnFwdKernel::Wgmma128, AttnFwdKernel::Mma}) {
    for (const W w : {W{1, 7, 2, 1, 0, false, true, false}, W{2, 37, 4, 2, 0, false, true, false},
                      W{1, 200, 2, 2, 0, false, false, false}, W{2, 300, 4, 2, 0, false, true, false},
                      W{1, 130, 4, 1, 24, false, true, false}, W{2, 333, 4, 1, 100, true, true, false},
                      W{2, 96, 2, 2, 0, true, true, false}, W{1, 257, 2, 1, 0, true, false, false},
                      W{2, 1024, 4, 2, 0, false, true, false}, W{1, 2048, 8, 4, 0, false, true, true}}) {
      const Shape sq{w.B, w.T, w.Hq, 64}, skv{w.B, w.T, w.Hkv, 64}, sl{w.B, w.Hq, w.T};
      const std::string op = std::string("attention_fwd[") + attn_fwd_kernel_name(kern) + "]" +
                             (w.causal ? "" : "(full)") + (w.window ? "(window)" : "") + (w.docs ? "(docs)" : "");
      AttnParams p;
      p.causal = w.causal, p.window = w.window;
      out.push_back({op, w.big, [=] {
                       Builder b(op, dtype_label({kB}), sq, seed);
                       int q = b.add("q", b.in.normal(sq, kB)), k = b.add("k", b.in.normal(skv, kB)),
                           v = b.add("v", b.in.normal(skv, kB)),
                           ds = b.add("doc_start", w.docs ? doc_starts(b.in, w.B, w.T) : Tensor::zeros(Shape{1}, DType::I32)),
                           o = b.add("out", Inputs::poison(sq, kB)), l = b.add("lse", Inputs::poison(sl, kF));
                       b.check(o, 2e-2);
                       b.check(l, 1e-3);
                       b.run([=](const T& t) {
                         set_attention_fwd_kernel(kern);
                         attention_forward(t[q], t[k], t[v], w.docs ? t[ds] : Tensor(), t[o], t[l], p);
                         set_attention_fwd_kernel(AttnFwdKernel::Auto);
                       });
                       return b.done();
                     }});
    }
  }
}

// The flash backward with each CUDA kernel forced (ops/attention.h: AttnBwdKernel), bf16, against the CPU op
// (dq, dk, dv checked separately, the kernel's name in the case name): ragged T (partial key and query
// blocks, a 128-key block whose second warpgroup has no keys), GQA and Hq = Hkv, non-causal, windows narrower
// than a warpgroup's 64 keys (warpgroups with nothing to do for a query block), documents, window + documents,
// and the training shape. On a device that cannot run wgmma the forcing falls back to v1.
void attention_bwd_kernel_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct W {
    int64_t B, T, Hq, Hkv;
    int window;
    bool docs, causal, big;
  };
  for (AttnBwdKernel kern :
       {AttnBwdKernel::Wgmma128, AttnBwdKernel::Wgmma64, AttnBwdKernel::WgmmaDqMma, AttnBwdKernel::V1}) {
    for (const W w : {W{1, 7, 2, 1, 0, false, true, false}, W{2, 37, 4, 2, 0, false, true, false},
                      W{1, 200, 2, 2, 0, false, false, false}, W{2, 300, 4, 2, 0, false, true, false},
                      W{1, 130, 4, 1, 24, false, true, false}, W{1, 300, 2, 1, 100, false, true, false},
                      W{2, 96, 2, 2, 0, true, true, false}, W{2, 333, 4, 1, 100, true, true, false},
                      W{1, 260, 4, 2, 70, true, true, false}, W{1, 257, 2, 1, 0, true, false, false},
                      W{2, 190, 4, 4, 0, true, false, false}, W{2, 1024, 4, 2, 0, false, true, false},
                      W{1, 2048, 8, 4, 0, false, true, true}}) {
      const Shape sq{w.B, w.T, w.Hq, 64}, skv{w.B, w.T, w.Hkv, 64}, sl{w.B, w.Hq, w.T};
      const std::string op = std::string("attention_bwd[") + attn_bwd_kernel_name(kern) + "]" +
                             (w.causal ? "" : "(full)") + (w.window ? "(window)" : "") + (w.docs ? "(docs)" : "");
      AttnParams p;
      p.causal = w.causal, p.window = w.window;
      out.push_back({op, w.big, [=] {
                       Builder b(op, dtype_label({kB}), sq, seed);
                       Tensor qh = b.in.normal(sq, kB), kh = b.in.normal(skv, kB), vh = b.in.normal(skv, kB);
                       Tensor dsh = w.docs ? doc_starts(b.in, w.B, w.T) : Tensor::zeros(Shape{1}, DType::I32);
                       Tensor oh = Tensor::empty(sq, kB), lh = Tensor::empty(sl, kF);
                       attention_forward(qh, kh, vh, w.docs ? dsh : Tensor(), oh, lh, p);  // CPU reference
                       int q = b.add("q", qh), k = b.add("k", kh), v = b.add("v", vh), ds = b.add("doc_start", dsh),
                           o = b.add("out", oh), l = b.add("lse", lh), d = b.add("dout", b.in.normal(sq, kB)),
                           dq = b.add("dq", Inputs::poison(sq, kB)), dk = b.add("dk", Inputs::poison(skv, kB)),
                           dv = b.add("dv", Inputs::poison(skv, kB));
                       b.check(dq, 3e-2);
                       b.check(dk, 3e-2);
                       b.check(dv, 3e-2);
                       b.run([=](const T& t) {
                         set_attention_bwd_kernel(kern);
                         attention_backward(t[q], t[k], t[v], w.docs ? t[ds] : Tensor(), t[o], t[l], t[d], t[dq],
                                            t[dk], t[dv], p);
                         set_attention_bwd_kernel(AttnBwdKernel::Auto);
                       });
                       return b.done();
                     }});
    }
  }
}

}  // namespace

void add_heavy_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  optim_cases(out, seed);
  long_row_normalize_cases(out, seed + 50);
  matmul_cases(out, seed + 100);
  attention_cases(out, seed + 200);
  attention_fwd_kernel_cases(out, seed + 300);
  attention_bwd_kernel_cases(out, seed + 400);
}

}  // namespace pgolf::ops::selftest
