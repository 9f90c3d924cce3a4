// Parity cases of the fused residual update + RMSNorm (ops/residual_norm.h), forward and backward, add
// and mix forms. Shapes: C = 13 takes the general kernels, C = 64 / 384 / 512 / 768 / 1024 the vector
// kernels (one to four 256-channel groups per lane; 384: a partial second group; 1024: the mix backward's
// 64 KB of shared channel sums, above the default limit), 4500 x 136 enough rows that the backward's
// warps walk several rows each (and a partial first group), and the training shape (64x1024, 512).
// The stream (x, y, dy) is f32; n, dn, f, x0 and their gradients in the activation dtype (f32 or bf16).
#include "ops/residual_norm.h"
#include "ops/selftest.h"
#include "ops/selftest_util.h"

namespace pgolf::ops::selftest {

namespace {

constexpr DType kF = DType::F32;
constexpr float kEps = 1e-6f;
constexpr float kLnGain = 0.57735026f;  // 1/sqrt(3), the LN scale of layer 2

struct Sh {
  Shape s;
  bool big;
};
const Sh kShapes[] = {{Shape{7, 13}, false},    {Shape{33, 64}, false},    {Shape{19, 384}, false},
                      {Shape{5, 768}, false},    {Shape{9, 1024}, false},   {Shape{4500, 136}, false},
                      {Shape{65536, 512}, true}};

std::string name(const char* base, float g, const char* extra = "") {
  return std::string(base) + (g == 1.f ? "" : "(ln gain)") + extra;
}

void forward_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const Sh& sh : kShapes)
    for (DType act : {kF, DType::BF16})
      for (float g : {1.f, kLnGain})
        for (bool mix : {false, true}) {
          const std::string op = name(mix ? "mix_rmsnorm_fwd" : "add_rmsnorm_fwd", g);
          const Shape s = sh.s, sc{s[1]}, sn{s[0]};
          out.push_back({op, sh.big, [=] {
                           Builder b(op, dtype_label({kF, act}), s, seed);
                           int x = b.add("x", b.in.normal(s, kF, 2.f)), o = b.add(mix ? "x0" : "f", b.in.normal(s, act)),
                               sa = b.add(mix ? "a" : "s", b.in.normal(sc, kF, 0.5f, 1.f)),
                               sb = b.add("b", b.in.normal(sc, kF, 0.5f)), y = b.add("y", Inputs::poison(s, kF)),
                               n = b.add("n", Inputs::poison(s, act)), r = b.add("rstd", Inputs::poison(sn, kF));
                           b.check(y, kTolF32);
                           b.check(n, tol(act, true));
                           b.check(r, kTolF32Reduce);
                           b.run([=](const T& t) {
                             if (mix)
                               mix_rmsnorm_forward(t[sa], t[x], t[sb], t[o], t[y], t[n], t[r], g, kEps);
                             else
                               add_rmsnorm_forward(t[x], t[sa], t[o], t[y], t[n], t[r], g, kEps);
                           });
                           return b.done();
                         }});
        }
}

void add_backward_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const Sh& sh : kShapes)
    for (DType act : {kF, DType::BF16})
      for (float g : {1.f, kLnGain})
        for (int mode : {0, 1, 2}) {  // 0: df overwritten, 1: df accumulated, 2: no dn (n unused)
          const std::string op =
              name("add_rmsnorm_bwd", g, mode == 1 ? "(accumulate)" : mode == 2 ? "(no dn)" : "");
          const Shape s = sh.s, sc{s[1]}, sn{s[0]};
          out.push_back({op, sh.big, [=] {
                           Builder b(op, dtype_label({kF, act}), s, seed);
                           int n = b.add("n", b.in.normal(s, act)), r = b.add("rstd", b.in.normal(sn, kF, 0.1f, 1.f)),
                               dn = b.add("dn", b.in.normal(s, act)), sv = b.add("s", b.in.normal(sc, kF, 0.5f, 1.f)),
                               f = b.add("f", b.in.normal(s, act)), dy = b.add("dy", b.in.normal(s, kF)),
                               ds = b.add("ds", b.in.normal(sc, kF)),
                               df = b.add("df", mode == 1 ? b.in.normal(s, act) : Inputs::poison(s, act));
                           b.check(dy, kTolF32Reduce);
                           b.check(ds, kTolF32Reduce);
                           b.check(df, tol(act, true));
                           b.run([=](const T& t) {
                             add_rmsnorm_backward(t[n], t[r], mode == 2 ? Tensor() : t[dn], g, t[sv], t[f], t[dy], t[ds],
                                                  t[df], mode == 1);
                           });
                           return b.done();
                         }});
        }
}

// dy is scratch for the mix form (not compared). mode 2: x and x0 one tensor with one gradient tensor (block 0).
void mix_backward_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  for (const Sh& sh : kShapes)
    for (DType act : {kF, DType::BF16})
      for (float g : {1.f, kLnGain})
        for (int mode : {0, 1, 2}) {  // 0: overwrite dx, dx0 ; 1: accumulate both ; 2: x = x0, dx = dx0
          const std::string op =
              name("mix_rmsnorm_bwd", g, mode == 1 ? "(accumulate)" : mode == 2 ? "(x = x0)" : "");
          const Shape s = sh.s, sc{s[1]}, sn{s[0]};
          const DType xt = mode == 2 ? act : kF;  // block 0's x is the normed embedding
          out.push_back({op, sh.big, [=] {
                           Builder b(op, dtype_label({kF, act}), s, seed);
                           int n = b.add("n", b.in.normal(s, act)), r = b.add("rstd", b.in.normal(sn, kF, 0.1f, 1.f)),
                               dn = b.add("dn", b.in.normal(s, act)), a = b.add("a", b.in.normal(sc, kF, 0.5f, 1.f)),
                               x = b.add("x", b.in.normal(s, xt)), bv = b.add("b", b.in.normal(sc, kF, 0.5f)),
                               x0 = b.add("x0", b.in.normal(s, act)), dy = b.add("dy", b.in.normal(s, kF)),
                               da = b.add("da", b.in.normal(sc, kF)), db = b.add("db", b.in.normal(sc, kF)),
                               dx = b.add("dx", mode == 1 ? b.in.normal(s, xt) : Inputs::poison(s, xt)),
                               dx0 = b.add("dx0", mode == 1 ? b.in.normal(s, act) : Inputs::poison(s, act));
                           b.check(da, kTolF32Reduce);
                           b.check(db, kTolF32Reduce);
                           b.check(dx, tol(xt, true));
                           if (mode != 2) b.check(dx0, tol(act, true));
                           b.run([=](const T& t) {
                             if (mode == 2)
                               mix_rmsnorm_backward(t[n], t[r], t[dn], g, t[a], t[x], t[bv], t[x], t[dy], t[da], t[db],
                                                    t[dx], false, t[dx], true);
                             else
                               mix_rmsnorm_backward(t[n], t[r], t[dn], g, t[a], t[x], t[bv], t[x0], t[dy], t[da], t[db],
                                                    t[dx], mode == 1, t[dx0], mode == 1);
                           });
                           return b.done();
                         }});
        }
}

}  // namespace

void add_residual_norm_cases(std::vector<CaseMaker>& out, uint64_t seed) {
  forward_cases(out, seed);
  add_backward_cases(out, seed + 1);
  mix_backward_cases(out, seed + 2);
}

}  // namespace pgolf::ops::selftest
