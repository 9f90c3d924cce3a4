// Parity cases: elementwise families, reductions, embedding.
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/reduce.h"
#include "ops/selftest.h"
#include "ops/selftest_util.h"

namespace pgolf::ops::selftest {

namespace {

// (N, C) shapes: odd (scalar paths), vector-friendly small, and a training step's B*T x d_model.
const std::vector<std::pair<Shape, bool>> kRowShapes = {
    {Shape{7, 13}, false}, {Shape{33, 64}, false}, {Shape{65536, 512}, true}};
constexpr DType kF = DType::F32, kB = DType::BF16;

void binary_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [shape, big] : kRowShapes) {
    const Shape s = shape;
    for (DType dt : {kF, kB}) {
      const DType ot = dt;
      out.push_back({"fill", big, [=] {
                       Builder b("fill", dtype_label({dt}), s, seed);
                       int x = b.add("x", Inputs::poison(s, dt));
                       b.check(x, 0.0);
                       b.run([=](const T& t) { fill(t[x], 0.375f); });
                       return b.done();
                     }});
      out.push_back({"add", big, [=] {
                       Builder b("add", dtype_label({dt, ot}), s, seed);
                       int a = b.add("a", b.in.normal(s, dt)), c = b.add("b", b.in.normal(s, kB)),
                           o = b.add("out", Inputs::poison(s, ot));
                       b.check(o, tol(ot));
                       b.run([=](const T& t) { add(t[a], t[c], t[o]); });
                       return b.done();
                     }});
      out.push_back({"axpby", big, [=] {
                       Builder b("axpby", dtype_label({dt}), s, seed);
                       int x = b.add("x", b.in.normal(s, kF)), y = b.add("y", b.in.normal(s, dt));
                       b.check(y, tol(dt));
                       b.run([=](const T& t) { axpby(0.7f, t[x], -1.3f, t[y]); });
                       return b.done();
                     }});
      out.push_back({"mul(in-place)", big, [=] {
                       Builder b("mul(in-place)", dtype_label({dt}), s, seed);
                       int a = b.add("a", b.in.normal(s, dt)), c = b.add("b", b.in.normal(s, dt));
                       b.check(a, tol(dt));
                       b.run([=](const T& t) { mul(t[a], t[c], t[a]); });
                       return b.done();
                     }});
      out.push_back({"scale", big, [=] {
                       Builder b("scale", dtype_label({dt, kF}), s, seed);
                       int x = b.add("x", b.in.normal(s, dt)), o = b.add("out", Inputs::poison(s, kF));
                       b.check(o, kTolF32);
                       b.run([=](const T& t) { scale(t[x], -2.5f, t[o]); });
                       return b.done();
                     }});
      const DType other = dt == kF ? kB : kF;
      out.push_back({"copy", big, [=] {
                       Builder b("copy", dtype_label({dt, other}), s, seed);
                       int x = b.add("src", b.in.normal(s, dt)), o = b.add("dst", Inputs::poison(s, other)),
                           o2 = b.add("dst_same", Inputs::poison(s, dt));
                       b.check(o, tol(other));
                       b.check(o2, 0.0);
                       b.run([=](const T& t) {
                         copy(t[x], t[o]);
                         copy(t[x], t[o2]);
                       });
                       return b.done();
                     }});
    }
  }
}

void channel_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [shape, big] : kRowShapes) {
    const Shape s = shape, sc{shape[1]};
    for (DType dt : {kF, kB}) {
      out.push_back({"mul_channel", big, [=] {
                       Builder b("mul_channel", dtype_label({dt}), s, seed);
                       int x = b.add("x", b.in.normal(s, dt)), sv = b.add("s", b.in.normal(sc, kF)),
                           o = b.add("out", Inputs::poison(s, dt));
                       b.check(o, tol(dt));
                       b.run([=](const T& t) { mul_channel(t[x], t[sv], t[o]); });
                       return b.done();
                     }});
      out.push_back({"add_mul_channel", big, [=] {
                       Builder b("add_mul_channel", dtype_label({dt}), s, seed);
                       int x = b.add("x", b.in.normal(s, dt)), sv = b.add("s", b.in.normal(sc, kF)),
                           f = b.add("f", b.in.normal(s, dt));
                       b.check(x, tol(dt));  // in place: x = x + s*f
                       b.run([=](const T& t) { add_mul_channel(t[x], t[sv], t[f], t[x]); });
                       return b.done();
                     }});
      out.push_back({"mix_channel", big, [=] {
                       Builder b("mix_channel", dtype_label({dt}), s, seed);
                       int s0 = b.add("s0", b.in.normal(sc, kF)), x0 = b.add("x0", b.in.normal(s, dt)),
                           s1 = b.add("s1", b.in.normal(sc, kF)), x1 = b.add("x1", b.in.normal(s, dt)),
                           o = b.add("out", Inputs::poison(s, dt));
                       b.check(o, tol(dt));
                       b.run([=](const T& t) { mix_channel(t[s0], t[x0], t[s1], t[x1], t[o]); });
                       return b.done();
                     }});
      out.push_back({"channel_dot_accum", big, [=] {
                       Builder b("channel_dot_accum", dtype_label({dt}), s, seed);
                       int a = b.add("a", b.in.normal(s, dt)), c = b.add("b", b.in.normal(s, dt)),
                           ds = b.add("ds", b.in.normal(sc, kF));
                       b.check(ds, kTolF32Reduce);
                       b.run([=](const T& t) { channel_dot_accum(t[a], t[c], t[ds]); });
                       return b.done();
                     }});
      for (bool per_channel : {true, false}) {
        const Shape gs = per_channel ? sc : s;
        const DType gt = per_channel ? kF : dt;
        const std::string tag = per_channel ? "(C)" : "(N,C)";
        out.push_back({"sigmoid_gate_fwd" + tag, big, [=] {
                         Builder b("sigmoid_gate_fwd" + tag, dtype_label({dt}), s, seed);
                         int g = b.add("g", b.in.normal(gs, gt, 2.f)), x = b.add("x", b.in.normal(s, dt)),
                             o = b.add("out", Inputs::poison(s, dt));
                         b.check(o, tol(dt));
                         b.run([=](const T& t) { sigmoid_gate_forward(t[g], t[x], t[o]); });
                         return b.done();
                       }});
        out.push_back({"sigmoid_gate_bwd" + tag, big, [=] {
                         Builder b("sigmoid_gate_bwd" + tag, dtype_label({dt}), s, seed);
                         int g = b.add("g", b.in.normal(gs, gt, 2.f)), x = b.add("x", b.in.normal(s, dt)),
                             d = b.add("dout", b.in.normal(s, dt)), dx = b.add("dx", Inputs::poison(s, dt)),
                             dg = b.add("dg", b.in.normal(gs, kF));
                         b.check(dx, tol(dt));
                         b.check(dg, kTolF32Reduce);
                         b.run([=](const T& t) { sigmoid_gate_backward(t[g], t[x], t[d], t[dx], t[dg]); });
                         return b.done();
                       }});
      }
    }
  }
}

void reduce_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [shape, big] : kRowShapes) {
    const Shape s = shape, sc{shape[1]}, sn{shape[0]}, one{1};
    for (DType dt : {kF, kB}) {
      for (bool acc : {false, true}) {
        const std::string sfx = acc ? "(accum)" : "";
        out.push_back({"sum" + sfx, big, [=] {
                         Builder b("sum" + sfx, dtype_label({dt}), s, seed);
                         // Mean 1 so the sum is not a cancellation-dominated tiny number.
                         int x = b.add("x", b.in.normal(s, dt, 1.f, 1.f));
                         int o = b.add("out", acc ? b.in.normal(one, kF, 10.f) : Inputs::poison(one, kF));
                         b.check(o, kTolF32Reduce);
                         b.run([=](const T& t) { sum(t[x], t[o], acc); });
                         return b.done();
                       }});
        out.push_back({"sum_squares" + sfx, big, [=] {
                         Builder b("sum_squares" + sfx, dtype_label({dt}), s, seed);
                         int x = b.add("x", b.in.normal(s, dt));
                         int o = b.add("out", acc ? b.in.normal(one, kF, 10.f) : Inputs::poison(one, kF));
                         b.check(o, kTolF32Reduce);
                         b.run([=](const T& t) { sum_squares(t[x], t[o], acc); });
                         return b.done();
                       }});
      }
      out.push_back({"row_sum_squares", big, [=] {
                       Builder b("row_sum_squares", dtype_label({dt}), s, seed);
                       int x = b.add("x", b.in.normal(s, dt)), o = b.add("out", Inputs::poison(sn, kF));
                       b.check(o, kTolF32Reduce);
                       b.run([=](const T& t) { row_sum_squares(t[x], t[o]); });
                       return b.done();
                     }});
      out.push_back({"col_sum_accum", big, [=] {
                       Builder b("col_sum_accum", dtype_label({dt}), s, seed);
                       int x = b.add("x", b.in.normal(s, dt, 1.f, 0.5f)), o = b.add("out", b.in.normal(sc, kF));
                       b.check(o, kTolF32Reduce);
                       b.run([=](const T& t) { col_sum_accum(t[x], t[o]); });
                       return b.done();
                     }});
    }
  }
}

void embedding_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct E {
    int64_t N, V, C;
    bool big;
  };
  // C = 13: scalar kernels; C = 64 and 520 the vector ones (520: a lane's second 512-channel span, partly
  // filled); 50 tokens over 7 rows: many adds into each row.
  for (const E e : {E{7, 5, 13, false}, E{40, 11, 64, false}, E{50, 7, 520, false}, E{65536, 8192, 512, true}}) {
    const Shape sid{e.N}, st{e.V, e.C}, so{e.N, e.C};
    for (DType tt : {kF, kB}) {
      for (DType ot : {kF, kB}) {
        out.push_back({"embedding_fwd", e.big, [=] {
                         Builder b("embedding_fwd", dtype_label({tt, ot}), so, seed);
                         int ids = b.add("ids", b.in.ids(sid, e.V)), tab = b.add("table", b.in.normal(st, tt)),
                             o = b.add("out", Inputs::poison(so, ot));
                         b.check(o, tt == kF && ot == kF ? 0.0 : tol(ot));
                         b.run([=](const T& t) { embedding_forward(t[ids], t[tab], t[o]); });
                         return b.done();
                       }});
      }
      out.push_back({"embedding_bwd", e.big, [=] {
                       Builder b("embedding_bwd", dtype_label({tt}), so, seed);
                       int ids = b.add("ids", b.in.ids(sid, e.V)), d = b.add("dout", b.in.normal(so, tt)),
                           dt = b.add("dtable", b.in.normal(st, kF));
                       b.check(dt, kTolF32Reduce);
                       b.run([=](const T& t) { embedding_backward(t[ids], t[d], t[dt]); });
                       return b.done();
                     }});
    }
  }
}

}  // namespace

void add_elementwise_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  binary_cases(out, seed);
  channel_cases(out, seed + 100);
  reduce_cases(out, seed + 200);
  embedding_cases(out, seed + 300);
}

}  // namespace pgolf::ops::selftest
