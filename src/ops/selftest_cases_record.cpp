// Parity cases of the record-stack ops (TECHNIQUES.md §5): XSA, SmearGate v1/v2, scalar mix and
// document starts, BigramHash / trigram bucket ids.
#include <cstring>

#include "ops/bigram.h"
#include "ops/documents.h"
#include "ops/scalar_mix.h"
#include "ops/selftest.h"
#include "ops/selftest_util.h"
#include "ops/smear.h"
#include "ops/xsa.h"

namespace pgolf::ops::selftest {

namespace {

constexpr DType kF = DType::F32, kB = DType::BF16;

// Every third (token, kv head) value row zeroed: the clamped norm (vh = 0, no radial term) on every path.
Tensor zero_some_rows(Tensor v) {
  const int64_t rows = v.numel() / v.dim(-1);
  const size_t row_bytes = static_cast<size_t>(v.dim(-1)) * dtype_size(v.dtype());
  for (int64_t r = 1; r < rows; r += 3) std::memset(static_cast<char*>(v.data()) + r * row_bytes, 0, row_bytes);
  return v;
}

// Shapes: D = 8 / 16 / 32 / 64 / 128 / 256 and groups 1 / 2 / 4 / 8 take the vector kernels (team widths 1 to
// 32 lanes; item counts that leave dead lanes in the last block); D = 40 and a group of 3 take the general
// kernel. Modes: 0 plain, 1 in place (out = y; dy = dout), 2 zero value rows (clamped norm).
void xsa_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  struct R {
    Shape y;
    int64_t hkv;
    bool big;
  };
  for (const R& r : {R{Shape{2, 9, 4, 16}, 2, false}, R{Shape{1, 5, 3, 40}, 3, false},
                     R{Shape{2, 7, 8, 64}, 4, false}, R{Shape{3, 5, 4, 64}, 4, false}, R{Shape{2, 9, 8, 32}, 2, false},
                     R{Shape{1, 11, 8, 128}, 1, false}, R{Shape{2, 3, 2, 256}, 1, false}, R{Shape{1, 7, 2, 8}, 2, false},
                     R{Shape{2, 5, 6, 64}, 2, false}, R{Shape{48, 2048, 8, 64}, 4, true}}) {
    const Shape sy = r.y, sv{r.y[0], r.y[1], r.hkv, r.y[3]};
    for (DType dt : {kF, kB}) {
      for (int mode : {0, 1, 2}) {
        if (r.big && mode != 0) continue;
        const char* suffix = mode == 1 ? "(in place)" : mode == 2 ? "(zero v rows)" : "";
        const std::string fop = std::string("xsa_fwd") + suffix, bop = std::string("xsa_bwd") + suffix;
        out.push_back({fop, r.big, [=] {
                         Builder b(fop, dtype_label({dt}), sy, seed);
                         Tensor vh = b.in.normal(sv, dt);
                         int y = b.add("y", b.in.normal(sy, dt)), v = b.add("v", mode == 2 ? zero_some_rows(vh) : vh),
                             o = b.add("out", Inputs::poison(sy, dt));
                         b.check(mode == 1 ? y : o, tol(dt, true));
                         b.run([=](const T& t) { xsa_forward(t[y], t[v], t[mode == 1 ? y : o]); });
                         return b.done();
                       }});
        out.push_back({bop, r.big, [=] {
                         Builder b(bop, dtype_label({dt}), sy, seed);
                         Tensor vh = b.in.normal(sv, dt);
                         int y = b.add("y", b.in.normal(sy, dt)), v = b.add("v", mode == 2 ? zero_some_rows(vh) : vh),
                             g = b.add("dout", b.in.normal(sy, dt)), dy = b.add("dy", Inputs::poison(sy, dt)),
                             dv = b.add("dv", Inputs::poison(sv, dt));
                         b.check(mode == 1 ? g : dy, tol(dt, true));
                         b.check(dv, tol(dt, true));
                         b.run([=](const T& t) { xsa_backward(t[y], t[v], t[g], t[mode == 1 ? g : dy], t[dv]); });
                         return b.done();
                       }});
      }
    }
  }
}

void smear_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  constexpr int kBos = 1;
  for (const auto& [s, big] : {std::pair{Shape{2, 9, 13}, false}, std::pair{Shape{3, 33, 64}, false},
                               std::pair{Shape{48, 2048, 512}, true}}) {
    const Shape sx = s, sc{s[2]}, sbt{s[0], s[1]};
    const int64_t W = s[2] < 12 ? s[2] : 12;
    for (DType dt : {kF, kB}) {
      out.push_back({"smear_v1_fwd", big, [=] {
                       Builder b("smear_v1_fwd", dtype_label({dt}), sx, seed);
                       int x = b.add("x", b.in.normal(sx, dt)), g = b.add("gate", b.in.normal(sc, kF)),
                           o = b.add("out", Inputs::poison(sx, dt));
                       b.check(o, tol(dt, true));
                       b.run([=](const T& t) { smear_v1_forward(t[x], t[g], t[o]); });
                       return b.done();
                     }});
      out.push_back({"smear_v1_bwd", big, [=] {
                       Builder b("smear_v1_bwd", dtype_label({dt}), sx, seed);
                       int x = b.add("x", b.in.normal(sx, dt)), g = b.add("gate", b.in.normal(sc, kF)),
                           go = b.add("dout", b.in.normal(sx, dt)), dx = b.add("dx", Inputs::poison(sx, dt)),
                           dg = b.add("dgate", b.in.normal(sc, kF));
                       b.check(dx, tol(dt, true));
                       b.check(dg, kTolF32Reduce);
                       b.run([=](const T& t) { smear_v1_backward(t[x], t[g], t[go], t[dx], t[dg]); });
                       return b.done();
                     }});
      out.push_back({"smear_v2_fwd", big, [=] {
                       Builder b("smear_v2_fwd", dtype_label({dt}), sx, seed);
                       int e = b.add("e", b.in.normal(sx, dt)), ids = b.add("ids", b.in.ids(sbt, 4)),
                           w = b.add("w", b.in.normal(Shape{W}, kF, 0.3f)), l = b.add("lambda", Inputs::values({0.7f})),
                           o = b.add("out", Inputs::poison(sx, dt));
                       b.check(o, tol(dt, true));
                       b.run([=](const T& t) { smear_v2_forward(t[e], t[ids], t[w], t[l], kBos, t[o]); });
                       return b.done();
                     }});
      out.push_back({"smear_v2_bwd", big, [=] {
                       Builder b("smear_v2_bwd", dtype_label({dt}), sx, seed);
                       int e = b.add("e", b.in.normal(sx, dt)), ids = b.add("ids", b.in.ids(sbt, 4)),
                           w = b.add("w", b.in.normal(Shape{W}, kF, 0.3f)), l = b.add("lambda", Inputs::values({0.7f})),
                           go = b.add("dout", b.in.normal(sx, dt)), de = b.add("de", Inputs::poison(sx, dt)),
                           dw = b.add("dw", b.in.normal(Shape{W}, kF)), dl = b.add("dlambda", Inputs::values({0.25f}));
                       b.check(de, tol(dt, true));
                       b.check(dw, kTolF32Reduce);
                       b.check(dl, kTolF32Reduce);
                       b.run([=](const T& t) {
                         smear_v2_backward(t[e], t[ids], t[w], t[l], kBos, t[go], t[de], t[dw], t[dl]);
                       });
                       return b.done();
                     }});
    }
  }
}

void scalar_mix_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [s, big] : {std::pair{Shape{7, 13}, false}, std::pair{Shape{65536, 512}, true}}) {
    const Shape sx = s;
    for (DType dt : {kF, kB}) {
      out.push_back({"scalar_mix_fwd", big, [=] {
                       Builder b("scalar_mix_fwd", dtype_label({dt, kF}), sx, seed);
                       int a = b.add("x0", b.in.normal(sx, kF)), m = b.add("x1", b.in.normal(sx, dt)),
                           c = b.add("x2", b.in.normal(sx, dt)), s0 = b.add("s0", Inputs::values({1.1f})),
                           s1 = b.add("s1", Inputs::values({0.4f})), s2 = b.add("s2", Inputs::values({-1.3f})),
                           o = b.add("out", Inputs::poison(sx, kF));
                       b.check(o, kTolF32Reduce);
                       b.run([=](const T& t) {
                         scalar_mix_forward({{t[s0], t[a], {}, {}}, {t[s1], t[m], {}, {}}, {t[s2], t[c], {}, {}}}, t[o]);
                       });
                       return b.done();
                     }});
      out.push_back({"scalar_mix_bwd", big, [=] {
                       Builder b("scalar_mix_bwd", dtype_label({dt, kF}), sx, seed);
                       int a = b.add("x0", b.in.normal(sx, kF)), m = b.add("x1", b.in.normal(sx, dt)),
                           s0 = b.add("s0", Inputs::values({1.1f})), s1 = b.add("s1", Inputs::values({0.4f})),
                           g = b.add("dout", b.in.normal(sx, kF)), da = b.add("dx0", Inputs::poison(sx, kF)),
                           dm = b.add("dx1", Inputs::poison(sx, dt)), ds0 = b.add("ds0", Inputs::values({0.5f})),
                           ds1 = b.add("ds1", Inputs::values({-2.f}));
                       b.check(da, kTolF32);
                       b.check(dm, tol(dt));
                       b.check(ds0, 1e-4);
                       b.check(ds1, 1e-4);
                       b.run([=](const T& t) {
                         scalar_mix_backward({{t[s0], t[a], t[da], t[ds0]}, {t[s1], t[m], t[dm], t[ds1]}}, t[g]);
                       });
                       return b.done();
                     }});
    }
  }
}

void doc_start_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  // max_len > 0: documents also cut every max_len tokens (document packing, §2.5); the last case is one packed
  // row of a rank's micro-step at the records' sizes (98,304 tokens, segments of 2048; vocabulary 4096 so
  // documents run long enough to be cut).
  struct Case {
    Shape s;
    int64_t max_len, vocab;
    bool big;
  };
  for (const Case& c : {Case{Shape{3, 17}, 0, 64, false}, Case{Shape{2, 600}, 0, 64, false},
                        Case{Shape{48, 2048}, 0, 64, true}, Case{Shape{3, 17}, 4, 8, false},
                        Case{Shape{2, 600}, 16, 256, false}, Case{Shape{1, 98304}, 2048, 4096, true}}) {
    const Shape sbt = c.s;
    const int64_t max_len = c.max_len, vocab = c.vocab;
    out.push_back({max_len > 0 ? "doc_starts(cut)" : "doc_starts", c.big, [=] {
                     Builder b("doc_starts", "i32", sbt, seed);
                     // ~1 BOS in `vocab` tokens (BOS = 1): documents of varied lengths.
                     int ids = b.add("ids", b.in.ids(sbt, vocab)), o = b.add("out", Tensor::zeros(sbt, DType::I32));
                     b.check(o, 0.0);
                     b.run([=](const T& t) { doc_starts(t[ids], 1, t[o], max_len); });
                     return b.done();
                   }});
  }
}

// BigramHash and trigram bucket ids (§5.9): integer ops, so CUDA must match the CPU exactly.
void hash_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const auto& [s, big] : {std::pair{Shape{3, 17}, false}, std::pair{Shape{48, 2048}, true}}) {
    const Shape sbt = s;
    for (const bool tri : {false, true}) {
      out.push_back({tri ? "trigram_hash" : "bigram_hash", big, [=] {
                       Builder b(tri ? "trigram_hash" : "bigram_hash", "i32", sbt, seed);
                       int ids = b.add("ids", b.in.ids(sbt, 8192)), o = b.add("out", Tensor::zeros(sbt, DType::I32));
                       b.check(o, 0.0);
                       b.run([=](const T& t) {
                         if (tri)
                           trigram_hash(t[ids], 3072, t[o]);
                         else
                           bigram_hash(t[ids], 3072, t[o]);
                       });
                       return b.done();
                     }});
    }
  }
}

}  // namespace

void add_record_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  xsa_cases(out, seed);
  smear_cases(out, seed + 1);
  scalar_mix_cases(out, seed + 2);
  doc_start_cases(out, seed + 3);
  hash_cases(out, seed + 4);
}

}  // namespace pgolf::ops::selftest
