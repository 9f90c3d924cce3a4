// GatedDeltaNet ops (src/ops/gdn.h, TECHNIQUES.md §5.18): the chunked form against the recurrent form
// (double and fp32), the chunked backward and the short convolution against finite differences in
// double, the float ops against the double reference, argument checks, and CUDA vs CPU parity (skipped
// without a GPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/memory.h"
#include "ops/gdn.h"
#include "ops/selftest.h"
#include "ops_test_util.h"

namespace pgolf {
namespace {

using namespace testing;

struct Geo {
  int64_t B, T, H, Dk, Dv;
  int C;
};

std::string name(const Geo& g) {
  return "B" + std::to_string(g.B) + " T" + std::to_string(g.T) + " H" + std::to_string(g.H) + " Dk" +
         std::to_string(g.Dk) + " Dv" + std::to_string(g.Dv) + " C" + std::to_string(g.C);
}

// Inputs as the layer makes them: q, k L2-normalized per head (q also / sqrt(Dk)), g = log alpha in
// [-1.2, -0.002] (alpha in (0.3, 1)), beta in (0, 2) (allow_neg_eigval), v ~ N(0, 1).
struct Inputs {
  std::vector<double> q, k, v, g, beta, init;
  Inputs(const Geo& d, uint32_t seed) {
    const size_t rows = static_cast<size_t>(d.B * d.T * d.H);
    q = randn(rows * static_cast<size_t>(d.Dk), seed);
    k = randn(rows * static_cast<size_t>(d.Dk), seed + 1);
    v = randn(rows * static_cast<size_t>(d.Dv), seed + 2);
    for (size_t r = 0; r < rows; ++r) {
      double nq = 0, nk = 0;
      for (int64_t i = 0; i < d.Dk; ++i) {
        nq += q[r * static_cast<size_t>(d.Dk) + static_cast<size_t>(i)] *
              q[r * static_cast<size_t>(d.Dk) + static_cast<size_t>(i)];
        nk += k[r * static_cast<size_t>(d.Dk) + static_cast<size_t>(i)] *
              k[r * static_cast<size_t>(d.Dk) + static_cast<size_t>(i)];
      }
      for (int64_t i = 0; i < d.Dk; ++i) {
        q[r * static_cast<size_t>(d.Dk) + static_cast<size_t>(i)] /=
            std::sqrt(nq) * std::sqrt(static_cast<double>(d.Dk));
        k[r * static_cast<size_t>(d.Dk) + static_cast<size_t>(i)] /= std::sqrt(nk);
      }
    }
    const auto u1 = randn(rows, seed + 3), u2 = randn(rows, seed + 4);
    g.resize(rows);
    beta.resize(rows);
    for (size_t r = 0; r < rows; ++r) {
      g[r] = -0.002 - 1.2 / (1.0 + std::exp(-2.0 * u1[r]));
      beta[r] = 2.0 / (1.0 + std::exp(-u2[r]));
    }
    init = randn(static_cast<size_t>(d.B * d.H * d.Dk * d.Dv), seed + 5, 0.5);
  }
};

size_t nstates(const Geo& d) { return static_cast<size_t>(d.B * d.H * ops::gdn_num_chunks(d.T, d.C) * d.Dk * d.Dv); }
size_t nstate(const Geo& d) { return static_cast<size_t>(d.B * d.H * d.Dk * d.Dv); }

double max_rel(const std::vector<double>& got, const std::vector<double>& want) {
  double m = 1e-30, e = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    m = std::max(m, std::fabs(want[i]));
    e = std::max(e, std::fabs(got[i] - want[i]));
  }
  return e / m;
}

const std::vector<Geo> kGeos = {Geo{1, 7, 1, 4, 3, 4},    Geo{2, 19, 3, 8, 6, 5},   Geo{1, 64, 2, 16, 16, 16},
                                Geo{2, 70, 2, 8, 12, 64}, Geo{1, 33, 1, 32, 32, 8}, Geo{1, 130, 2, 64, 64, 64},
                                Geo{1, 5, 2, 6, 4, 64}};

TEST(OpsGdn, ChunkedEqualsRecurrentDouble) {
  for (const Geo& d : kGeos) {
    const Inputs in(d, 100);
    std::vector<double> o(static_cast<size_t>(d.B * d.T * d.H * d.Dv)), st(nstates(d)), fin(nstate(d));
    ops::ref::gdn_chunk_forward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), in.init.data(),
                                o.data(), st.data(), fin.data(), d.B, d.T, d.H, d.Dk, d.Dv, d.C);
    std::vector<double> o2(o.size()), s2 = in.init;
    ops::ref::gdn_recurrent_forward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), s2.data(),
                                    o2.data(), d.B, d.T, d.H, d.Dk, d.Dv);
    EXPECT_LT(max_rel(o, o2), 1e-12) << name(d);
    EXPECT_LT(max_rel(fin, s2), 1e-12) << name(d);
  }
}

TEST(OpsGdn, ChunkedEqualsRecurrentFp32) {
  double worst = 0;
  for (const Geo& d : kGeos) {
    for (bool with_init : {false, true}) {
      const Inputs in(d, 200);
      const Shape sq{d.B, d.T, d.H, d.Dk}, sv{d.B, d.T, d.H, d.Dv}, sg{d.B, d.T, d.H}, ss{d.B, d.H, d.Dk, d.Dv};
      Tensor q = make_tensor(in.q, sq, DType::F32), k = make_tensor(in.k, sq, DType::F32),
             v = make_tensor(in.v, sv, DType::F32), g = make_tensor(in.g, sg, DType::F32),
             b = make_tensor(in.beta, sg, DType::F32);
      Tensor init = with_init ? make_tensor(in.init, ss, DType::F32) : Tensor();
      Tensor o = Tensor::empty(sv, DType::F32), fin = Tensor::empty(ss, DType::F32);
      Tensor st = Tensor::empty(Shape{d.B, d.H, ops::gdn_num_chunks(d.T, d.C), d.Dk, d.Dv}, DType::F32);
      ops::gdn_chunk_forward(q, k, v, g, b, init, o, st, fin, d.C);
      Tensor state = with_init ? make_tensor(in.init, ss, DType::F32) : Tensor::zeros(ss, DType::F32);
      Tensor o2 = Tensor::empty(sv, DType::F32);
      ops::gdn_recurrent_forward(q, k, v, g, b, state, o2);
      const double eo = max_rel(to_d(o), to_d(o2)), es = max_rel(to_d(fin), to_d(state));
      EXPECT_LE(eo, 1e-4) << name(d) << " output";
      EXPECT_LE(es, 1e-4) << name(d) << " final state";
      worst = std::max({worst, eo, es});
      // The fp32 recurrent op against the double recurrent reference.
      std::vector<double> od(in.v.size()), sd = with_init ? in.init : std::vector<double>(nstate(d), 0.0);
      ops::ref::gdn_recurrent_forward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), sd.data(),
                                      od.data(), d.B, d.T, d.H, d.Dk, d.Dv);
      EXPECT_LE(max_rel(to_d(o2), od), 1e-5) << name(d) << " recurrent fp32 vs double";
      EXPECT_LE(max_rel(to_d(o), od), 1e-4) << name(d) << " chunked fp32 vs double";
    }
  }
  RecordProperty("max_rel_err_chunked_vs_recurrent_fp32", std::to_string(worst));
  std::printf("[gdn] chunked vs recurrent fp32: max relative error %.3g\n", worst);
}

// final_state may alias init (evaluation carries the state window to window); T not a multiple of C.
TEST(OpsGdn, FinalStateMayAliasInit) {
  const Geo d{2, 23, 2, 8, 8, 8};
  const Inputs in(d, 250);
  const Shape sq{d.B, d.T, d.H, d.Dk}, sv{d.B, d.T, d.H, d.Dv}, sg{d.B, d.T, d.H}, ss{d.B, d.H, d.Dk, d.Dv};
  Tensor q = make_tensor(in.q, sq, DType::F32), k = make_tensor(in.k, sq, DType::F32),
         v = make_tensor(in.v, sv, DType::F32), g = make_tensor(in.g, sg, DType::F32),
         b = make_tensor(in.beta, sg, DType::F32);
  Tensor st = Tensor::empty(Shape{d.B, d.H, ops::gdn_num_chunks(d.T, d.C), d.Dk, d.Dv}, DType::F32);
  Tensor s1 = make_tensor(in.init, ss, DType::F32), f1 = Tensor::empty(ss, DType::F32),
         o1 = Tensor::empty(sv, DType::F32);
  ops::gdn_chunk_forward(q, k, v, g, b, s1, o1, st, f1, d.C);
  Tensor s2 = make_tensor(in.init, ss, DType::F32), o2 = Tensor::empty(sv, DType::F32);
  ops::gdn_chunk_forward(q, k, v, g, b, s2, o2, st, s2, d.C);
  expect_close(to_d(s2), to_d(f1), 0.0, "final state in place");
  expect_close(to_d(o2), to_d(o1), 0.0, "output with the state in place");
}

// A different chunk size gives the same output and final state (the states tensor differs).
TEST(OpsGdn, ChunkSizeDoesNotChangeTheResult) {
  const Geo d{2, 45, 2, 8, 8, 1};
  const Inputs in(d, 300);
  std::vector<std::vector<double>> outs;
  for (int C : {1, 4, 16, 45, 64}) {
    Geo e = d;
    e.C = C;
    std::vector<double> o(in.v.size()), st(nstates(e)), fin(nstate(e));
    ops::ref::gdn_chunk_forward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), nullptr, o.data(),
                                st.data(), fin.data(), e.B, e.T, e.H, e.Dk, e.Dv, e.C);
    o.insert(o.end(), fin.begin(), fin.end());
    outs.push_back(o);
  }
  for (size_t i = 1; i < outs.size(); ++i) EXPECT_LT(max_rel(outs[i], outs[0]), 1e-12) << i;
}

// loss = <o, P> + <final, PS>; the analytic gradient of every input against central differences.
TEST(OpsGdn, BackwardFiniteDifferences) {
  double worst_fd = 0;
  for (const Geo& d : {Geo{1, 7, 2, 3, 4, 3}, Geo{2, 5, 1, 4, 2, 8}, Geo{1, 9, 1, 5, 3, 4}}) {
    Inputs in(d, 400);
    const size_t no = in.v.size();
    const auto P = randn(no, 401), PS = randn(nstate(d), 402);
    auto loss = [&](const Inputs& x) {
      std::vector<double> o(no), st(nstates(d)), fin(nstate(d));
      ops::ref::gdn_chunk_forward(x.q.data(), x.k.data(), x.v.data(), x.g.data(), x.beta.data(), x.init.data(),
                                  o.data(), st.data(), fin.data(), d.B, d.T, d.H, d.Dk, d.Dv, d.C);
      return dot(o, P) + dot(fin, PS);
    };
    std::vector<double> o(no), st(nstates(d)), fin(nstate(d));
    ops::ref::gdn_chunk_forward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), in.init.data(),
                                o.data(), st.data(), fin.data(), d.B, d.T, d.H, d.Dk, d.Dv, d.C);
    std::vector<double> dq(in.q.size()), dk(in.k.size()), dv(no), dg(in.g.size()), db(in.g.size()), di(nstate(d));
    ops::ref::gdn_chunk_backward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), st.data(),
                                 P.data(), PS.data(), dq.data(), dk.data(), dv.data(), dg.data(), db.data(), di.data(),
                                 d.B, d.T, d.H, d.Dk, d.Dv, d.C);
    auto field = [&](std::vector<double> Inputs::*f, const std::vector<double>& grad, const char* what) {
      auto fn = [&](const std::vector<double>& x) {
        Inputs y = in;
        y.*f = x;
        return loss(y);
      };
      expect_grad_matches_fd(fn, in.*f, grad, name(d) + " " + what, 1e-6, 1e-6);
      std::vector<double> x = in.*f;
      double gmax = 1e-12;
      for (double e : grad) gmax = std::max(gmax, std::fabs(e));
      for (size_t i = 0; i < x.size(); ++i) {
        const double x0 = x[i];
        x[i] = x0 + 1e-6;
        const double lp = fn(x);
        x[i] = x0 - 1e-6;
        const double lm = fn(x);
        x[i] = x0;
        worst_fd = std::max(worst_fd, std::fabs((lp - lm) / 2e-6 - grad[i]) / gmax);
      }
    };
    field(&Inputs::q, dq, "dq");
    field(&Inputs::k, dk, "dk");
    field(&Inputs::v, dv, "dv");
    field(&Inputs::g, dg, "dg");
    field(&Inputs::beta, db, "dbeta");
    field(&Inputs::init, di, "dinit");
  }
  std::printf("[gdn] chunked backward vs finite differences (double): max error / max |grad| %.3g\n", worst_fd);
}

// The fp32 backward op (with and without dfinal/dinit) against the double reference.
TEST(OpsGdn, FloatBackwardMatchesDoubleReference) {
  double worst = 0;
  for (const Geo& d : {Geo{2, 70, 2, 8, 12, 64}, Geo{1, 33, 3, 16, 8, 8}, Geo{1, 130, 1, 64, 64, 64}}) {
    const Inputs in(d, 500);
    const size_t no = in.v.size();
    const auto P = randn(no, 501), PS = randn(nstate(d), 502);
    std::vector<double> o(no), st(nstates(d)), fin(nstate(d));
    ops::ref::gdn_chunk_forward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), nullptr, o.data(),
                                st.data(), fin.data(), d.B, d.T, d.H, d.Dk, d.Dv, d.C);
    std::vector<double> dq(in.q.size()), dk(in.k.size()), dv(no), dg(in.g.size()), db(in.g.size()), di(nstate(d));
    ops::ref::gdn_chunk_backward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), st.data(),
                                 P.data(), PS.data(), dq.data(), dk.data(), dv.data(), dg.data(), db.data(), di.data(),
                                 d.B, d.T, d.H, d.Dk, d.Dv, d.C);
    const Shape sq{d.B, d.T, d.H, d.Dk}, sv{d.B, d.T, d.H, d.Dv}, sg{d.B, d.T, d.H}, ss{d.B, d.H, d.Dk, d.Dv};
    Tensor q = make_tensor(in.q, sq, DType::F32), k = make_tensor(in.k, sq, DType::F32),
           v = make_tensor(in.v, sv, DType::F32), g = make_tensor(in.g, sg, DType::F32),
           b = make_tensor(in.beta, sg, DType::F32);
    Tensor to = Tensor::empty(sv, DType::F32);
    Tensor tst = Tensor::empty(Shape{d.B, d.H, ops::gdn_num_chunks(d.T, d.C), d.Dk, d.Dv}, DType::F32);
    ops::gdn_chunk_forward(q, k, v, g, b, Tensor(), to, tst, Tensor(), d.C);
    EXPECT_LE(max_rel(to_d(tst), st), 1e-4) << name(d) << " states";
    Tensor tdq = Tensor::empty(sq, DType::F32), tdk = Tensor::empty(sq, DType::F32),
           tdv = Tensor::empty(sv, DType::F32), tdg = Tensor::empty(sg, DType::F32),
           tdb = Tensor::empty(sg, DType::F32), tdi = Tensor::empty(ss, DType::F32);
    ops::gdn_chunk_backward(q, k, v, g, b, tst, make_tensor(P, sv, DType::F32), make_tensor(PS, ss, DType::F32), tdq,
                            tdk, tdv, tdg, tdb, tdi, d.C);
    const std::pair<const Tensor*, const std::vector<double>*> pairs[] = {{&tdq, &dq}, {&tdk, &dk}, {&tdv, &dv},
                                                                          {&tdg, &dg}, {&tdb, &db}, {&tdi, &di}};
    const char* names[] = {"dq", "dk", "dv", "dg", "dbeta", "dinit"};
    for (size_t i = 0; i < 6; ++i) {
      const double e = max_rel(to_d(*pairs[i].first), *pairs[i].second);
      EXPECT_LE(e, 1e-4) << name(d) << " " << names[i];
      worst = std::max(worst, e);
    }
    // Without dfinal and dinit (the training call).
    std::vector<double> dq0(in.q.size()), dk0(in.k.size()), dv0(no), dg0(in.g.size()), db0(in.g.size());
    ops::ref::gdn_chunk_backward(in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(), st.data(),
                                 P.data(), nullptr, dq0.data(), dk0.data(), dv0.data(), dg0.data(), db0.data(), nullptr,
                                 d.B, d.T, d.H, d.Dk, d.Dv, d.C);
    ops::gdn_chunk_backward(q, k, v, g, b, tst, make_tensor(P, sv, DType::F32), Tensor(), tdq, tdk, tdv, tdg, tdb,
                            Tensor(), d.C);
    EXPECT_LE(max_rel(to_d(tdg), dg0), 1e-4) << name(d) << " dg without dfinal";
    EXPECT_LE(max_rel(to_d(tdq), dq0), 1e-4) << name(d) << " dq without dfinal";
  }
  std::printf("[gdn] fp32 chunked backward vs double reference: max relative error %.3g\n", worst);
}

// bf16 storage of q, k, v, o works and stays within bf16 rounding of the f32 result.
TEST(OpsGdn, Bf16Storage) {
  const Geo d{1, 40, 2, 16, 16, 16};
  const Inputs in(d, 600);
  const Shape sq{d.B, d.T, d.H, d.Dk}, sv{d.B, d.T, d.H, d.Dv}, sg{d.B, d.T, d.H};
  Tensor g = make_tensor(in.g, sg, DType::F32), b = make_tensor(in.beta, sg, DType::F32);
  Tensor st = Tensor::empty(Shape{d.B, d.H, ops::gdn_num_chunks(d.T, d.C), d.Dk, d.Dv}, DType::F32);
  Tensor of = Tensor::empty(sv, DType::F32), ob = Tensor::empty(sv, DType::BF16);
  ops::gdn_chunk_forward(make_tensor(in.q, sq, DType::F32), make_tensor(in.k, sq, DType::F32),
                         make_tensor(in.v, sv, DType::F32), g, b, Tensor(), of, st, Tensor(), d.C);
  ops::gdn_chunk_forward(make_tensor(in.q, sq, DType::BF16), make_tensor(in.k, sq, DType::BF16),
                         make_tensor(in.v, sv, DType::BF16), g, b, Tensor(), ob, st, Tensor(), d.C);
  EXPECT_LE(max_rel(to_d(ob), to_d(of)), 3e-2);
}

TEST(OpsGdn, ShortConvForwardAndFiniteDifferences) {
  const int64_t B = 2, T = 9, C = 5, K = 4;
  const auto x = randn(static_cast<size_t>(B * T * C), 700), w = randn(static_cast<size_t>(C * K), 701, 0.5),
             P = randn(static_cast<size_t>(B * T * C), 702);
  for (bool silu : {false, true}) {
    std::vector<double> y(x.size());
    ops::ref::short_conv_forward(x.data(), w.data(), y.data(), B, T, C, K, silu);
    // Direct formula at a few points.
    for (int64_t bi = 0; bi < B; ++bi)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < C; ++c) {
          double z = 0;
          for (int64_t j = 0; j < K; ++j)
            if (t - K + 1 + j >= 0)
              z += w[static_cast<size_t>(c * K + j)] * x[static_cast<size_t>((bi * T + t - K + 1 + j) * C + c)];
          if (silu) z = z / (1 + std::exp(-z));
          EXPECT_NEAR(y[static_cast<size_t>((bi * T + t) * C + c)], z, 1e-12);
        }
    auto loss_x = [&](const std::vector<double>& xx) {
      std::vector<double> yy(xx.size());
      ops::ref::short_conv_forward(xx.data(), w.data(), yy.data(), B, T, C, K, silu);
      return dot(yy, P);
    };
    auto loss_w = [&](const std::vector<double>& ww) {
      std::vector<double> yy(x.size());
      ops::ref::short_conv_forward(x.data(), ww.data(), yy.data(), B, T, C, K, silu);
      return dot(yy, P);
    };
    std::vector<double> dx(x.size()), dw(w.size(), 0.5);  // dw accumulates onto 0.5
    ops::ref::short_conv_backward(x.data(), w.data(), P.data(), dx.data(), dw.data(), B, T, C, K, silu);
    expect_grad_matches_fd(loss_x, x, dx, "short_conv dx");
    for (double& e : dw) e -= 0.5;
    expect_grad_matches_fd(loss_w, w, dw, "short_conv dw");
    // The float op against the reference (f32 and bf16 storage).
    for (DType dt : {DType::F32, DType::BF16}) {
      const Shape s{B, T, C};
      Tensor tx = make_tensor(x, s, dt), tw = make_tensor(w, Shape{C, K}, DType::F32), ty = Tensor::empty(s, dt);
      ops::short_conv_forward(tx, tw, ty, silu);
      const auto xr = to_d(tx);
      std::vector<double> yr(x.size()), dxr(x.size()), dwr(w.size(), 0.5);
      ops::ref::short_conv_forward(xr.data(), w.data(), yr.data(), B, T, C, K, silu);
      expect_close(to_d(ty), yr, tol_for(dt), "short_conv_forward float op");
      Tensor tdy = make_tensor(P, s, dt), tdx = Tensor::empty(s, dt);
      Tensor tdw = make_tensor(std::vector<double>(w.size(), 0.5), Shape{C, K}, DType::F32);
      ops::short_conv_backward(tx, tw, tdy, tdx, tdw, silu);
      const auto pr = to_d(tdy);
      ops::ref::short_conv_backward(xr.data(), w.data(), pr.data(), dxr.data(), dwr.data(), B, T, C, K, silu);
      expect_close(to_d(tdx), dxr, tol_for(dt), "short_conv_backward dx");
      expect_close(to_d(tdw), dwr, 1e-5, "short_conv_backward dw (accumulated)");
    }
  }
}

// g = -exp(A_log) softplus(a + dt_bias), beta = 2 sigmoid(bb): finite differences for all four inputs,
// the float op against the reference, the accumulation of the per-head gradients.
TEST(OpsGdn, GatesForwardBackward) {
  const int64_t B = 2, T = 5, H = 3, rows = B * T * H;
  auto a = randn(static_cast<size_t>(rows), 800, 3.0), bb = randn(static_cast<size_t>(rows), 801, 2.0);
  a[0] = 30.0;  // the large-z branch of softplus
  auto A_log = randn(static_cast<size_t>(H), 802, 1.0), dt = randn(static_cast<size_t>(H), 803, 1.0);
  const auto Pg = randn(static_cast<size_t>(rows), 804), Pb = randn(static_cast<size_t>(rows), 805);
  auto loss = [&](const std::vector<double>& aa, const std::vector<double>& b2, const std::vector<double>& al,
                  const std::vector<double>& d2) {
    std::vector<double> g(static_cast<size_t>(rows)), be(static_cast<size_t>(rows));
    ops::ref::gdn_gates_forward(aa.data(), b2.data(), al.data(), d2.data(), g.data(), be.data(), rows, H, 2.0);
    return dot(g, Pg) + dot(be, Pb);
  };
  std::vector<double> g(static_cast<size_t>(rows)), be(static_cast<size_t>(rows));
  ops::ref::gdn_gates_forward(a.data(), bb.data(), A_log.data(), dt.data(), g.data(), be.data(), rows, H, 2.0);
  for (int64_t r = 0; r < rows; ++r) {
    const size_t i = static_cast<size_t>(r), h = static_cast<size_t>(r % H);
    EXPECT_NEAR(g[i], -std::exp(A_log[h]) * std::log1p(std::exp(a[i] + dt[h])), 1e-9 * (1 + std::fabs(g[i])));
    EXPECT_NEAR(be[i], 2.0 / (1.0 + std::exp(-bb[i])), 1e-12);
  }
  std::vector<double> da(a.size()), dbb(a.size()), dal(static_cast<size_t>(H), 0.0), ddt(static_cast<size_t>(H), 0.0);
  ops::ref::gdn_gates_backward(a.data(), bb.data(), A_log.data(), dt.data(), Pg.data(), Pb.data(), da.data(),
                               dbb.data(), dal.data(), ddt.data(), rows, H, 2.0);
  expect_grad_matches_fd([&](const std::vector<double>& x) { return loss(x, bb, A_log, dt); }, a, da, "gates da");
  expect_grad_matches_fd([&](const std::vector<double>& x) { return loss(a, x, A_log, dt); }, bb, dbb, "gates dbb");
  expect_grad_matches_fd([&](const std::vector<double>& x) { return loss(a, bb, x, dt); }, A_log, dal, "gates dA_log");
  expect_grad_matches_fd([&](const std::vector<double>& x) { return loss(a, bb, A_log, x); }, dt, ddt,
                         "gates ddt_bias");
  for (DType dt_ : {DType::F32, DType::BF16}) {
    const Shape s{B, T, H};
    Tensor ta = make_tensor(a, s, dt_), tb = make_tensor(bb, s, dt_), tal = make_tensor(A_log, Shape{H}, DType::F32),
           tdt = make_tensor(dt, Shape{H}, DType::F32), tg = Tensor::empty(s, DType::F32),
           tbe = Tensor::empty(s, DType::F32);
    ops::gdn_gates_forward(ta, tb, tal, tdt, tg, tbe);
    const auto ar = to_d(ta), br = to_d(tb);
    std::vector<double> gr(g.size()), ber(g.size()), dar(g.size()), dbr(g.size()), dalr(static_cast<size_t>(H), 1.0),
        ddtr(static_cast<size_t>(H), 1.0);
    ops::ref::gdn_gates_forward(ar.data(), br.data(), A_log.data(), dt.data(), gr.data(), ber.data(), rows, H, 2.0);
    expect_close(to_d(tg), gr, 1e-5, "gates g (float op)");
    expect_close(to_d(tbe), ber, 1e-5, "gates beta (float op)");
    Tensor tda = Tensor::empty(s, dt_), tdb = Tensor::empty(s, dt_);
    Tensor tdal = make_tensor(std::vector<double>(static_cast<size_t>(H), 1.0), Shape{H}, DType::F32),
           tddt = make_tensor(std::vector<double>(static_cast<size_t>(H), 1.0), Shape{H}, DType::F32);
    ops::gdn_gates_backward(ta, tb, tal, tdt, make_tensor(Pg, s, DType::F32), make_tensor(Pb, s, DType::F32), tda, tdb,
                            tdal, tddt);
    ops::ref::gdn_gates_backward(ar.data(), br.data(), A_log.data(), dt.data(), Pg.data(), Pb.data(), dar.data(),
                                 dbr.data(), dalr.data(), ddtr.data(), rows, H, 2.0);
    expect_close(to_d(tda), dar, tol_for(dt_), "gates da (float op)");
    expect_close(to_d(tdb), dbr, tol_for(dt_), "gates dbb (float op)");
    expect_close(to_d(tdal), dalr, 1e-5, "gates dA_log (float op, accumulated onto 1)");
    expect_close(to_d(tddt), ddtr, 1e-5, "gates ddt_bias (float op, accumulated onto 1)");
  }
  Tensor x = Tensor::zeros(Shape{1, 2, 3}, DType::F32), h2 = Tensor::zeros(Shape{2}, DType::F32),
         h3 = Tensor::zeros(Shape{3}, DType::F32);
  expect_error_naming(
      [&] {
        ops::gdn_gates_forward(x, x, h2, h3, Tensor::empty(x.shape(), DType::F32),
                               Tensor::empty(x.shape(), DType::F32));
      },
      "A_log");
  expect_error_naming(
      [&] {
        ops::gdn_gates_forward(x, x, h3, h3, Tensor::empty(Shape{1, 2, 2}, DType::F32),
                               Tensor::empty(x.shape(), DType::F32));
      },
      "gdn_gates_forward");
}

TEST(OpsGdn, BadShapesGiveClearErrors) {
  const Shape sq{1, 6, 2, 4}, sv{1, 6, 2, 3}, sg{1, 6, 2}, ss{1, 2, 4, 3};
  Tensor q = rand_tensor(sq, DType::F32, 1), k = rand_tensor(sq, DType::F32, 2), v = rand_tensor(sv, DType::F32, 3);
  Tensor g = Tensor::zeros(sg, DType::F32), b = Tensor::zeros(sg, DType::F32), o = Tensor::empty(sv, DType::F32);
  Tensor st = Tensor::empty(Shape{1, 2, 2, 4, 3}, DType::F32);          // chunk 4: 2 chunks
  ops::gdn_chunk_forward(q, k, v, g, b, Tensor(), o, st, Tensor(), 4);  // the good call works
  expect_error_naming(
      [&] {
        ops::gdn_chunk_forward(q, rand_tensor(Shape{1, 6, 2, 5}, DType::F32, 4), v, g, b, Tensor(), o, st, Tensor(), 4);
      },
      "k");
  expect_error_naming(
      [&] {
        ops::gdn_chunk_forward(q, k, rand_tensor(Shape{1, 5, 2, 3}, DType::F32, 5), g, b, Tensor(), o, st, Tensor(), 4);
      },
      "(B, T, H) must match");
  expect_error_naming(
      [&] {
        ops::gdn_chunk_forward(q, k, v, Tensor::zeros(Shape{1, 6, 3}, DType::F32), b, Tensor(), o, st, Tensor(), 4);
      },
      "g");
  expect_error_naming(
      [&] { ops::gdn_chunk_forward(q, k, v, g, Tensor::zeros(sg, DType::BF16), Tensor(), o, st, Tensor(), 4); },
      "beta");
  expect_error_naming([&] { ops::gdn_chunk_forward(q, k, v, g, b, Tensor(), o, st, Tensor(), 2); }, "states");
  expect_error_naming([&] { ops::gdn_chunk_forward(q, k, v, g, b, Tensor(), o, st, Tensor(), 0); }, "chunk");
  expect_error_naming(
      [&] {
        ops::gdn_chunk_forward(q, k, v, g, b, Tensor::zeros(Shape{1, 2, 3, 4}, DType::F32), o, st, Tensor(), 4);
      },
      "init");
  expect_error_naming([&] { ops::gdn_chunk_forward(q, k, v, g, b, Tensor(), v, st, Tensor(), 4); }, "alias");
  expect_error_naming(
      [&] { ops::gdn_chunk_forward(q, k, v, g, b, Tensor(), Tensor::empty(sq, DType::F32), st, Tensor(), 4); },
      "gdn_chunk_forward");
  Tensor dq = Tensor::empty(sq, DType::F32), dk = Tensor::empty(sq, DType::F32), dv = Tensor::empty(sv, DType::F32),
         dg = Tensor::empty(sg, DType::F32), db = Tensor::empty(sg, DType::F32);
  ops::gdn_chunk_backward(q, k, v, g, b, st, o, Tensor(), dq, dk, dv, dg, db, Tensor(), 4);
  expect_error_naming([&] { ops::gdn_chunk_backward(q, k, v, g, b, st, o, Tensor(), dq, dk, dv, dg, db, Tensor(), 2); },
                      "states");
  expect_error_naming(
      [&] {
        ops::gdn_chunk_backward(q, k, v, g, b, st, Tensor::empty(sq, DType::F32), Tensor(), dq, dk, dv, dg, db,
                                Tensor(), 4);
      },
      "dout");
  expect_error_naming([&] { ops::gdn_chunk_backward(q, k, v, g, b, st, o, Tensor(), dq, dk, dq, dg, db, Tensor(), 4); },
                      "dv");
  expect_error_naming([&] { ops::gdn_chunk_backward(q, k, v, g, b, st, o, Tensor(), dq, dk, dv, g, db, Tensor(), 4); },
                      "alias");
  expect_error_naming([&] { ops::gdn_recurrent_forward(q, k, v, g, b, Tensor(), o); }, "state");
  expect_error_naming(
      [&] {
        ops::gdn_recurrent_forward(q, k, v, g, b, Tensor::zeros(Shape{1, 2, 3, 3}, DType::F32), o);
      },
      "gdn_recurrent_forward");
  Tensor x = rand_tensor(Shape{2, 5, 8}, DType::F32, 6), w = rand_tensor(Shape{8, 4}, DType::F32, 7);
  expect_error_naming(
      [&] {
        ops::short_conv_forward(x, rand_tensor(Shape{7, 4}, DType::F32, 8), Tensor::empty(x.shape(), DType::F32), true);
      },
      "channels");
  expect_error_naming([&] { ops::short_conv_forward(x, w, x, true); }, "alias");
  expect_error_naming(
      [&] {
        ops::short_conv_backward(x, w, x, Tensor::empty(x.shape(), DType::F32), Tensor::empty(Shape{8, 3}, DType::F32),
                                 true);
      },
      "dw");
  // An empty row count is fine (T = 0): nothing to do, the final state is the initial one.
  Tensor q0 = Tensor::empty(Shape{1, 0, 2, 4}, DType::F32), v0 = Tensor::empty(Shape{1, 0, 2, 3}, DType::F32),
         g0 = Tensor::empty(Shape{1, 0, 2}, DType::F32);
  Tensor init = rand_tensor(ss, DType::F32, 9), fin = Tensor::empty(ss, DType::F32);
  ops::gdn_chunk_forward(q0, q0, v0, g0, g0, init, Tensor::empty(Shape{1, 0, 2, 3}, DType::F32),
                         Tensor::empty(Shape{1, 2, 0, 4, 3}, DType::F32), fin, 4);
  expect_close(to_d(fin), to_d(init), 0.0, "T = 0 final state");
}

// CUDA vs CPU through the parity cases of src/ops/selftest_cases_gdn.cpp.
TEST(OpsGdn, CudaMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: GDN GPU parity not run";
  ops::selftest::Options opt;
  opt.seed = 8;
  opt.training_shapes = false;
  opt.time_gpu = false;
  for (const char* f : {"gdn_", "short_conv"}) {  // gdn_ covers gdn_chunk_*, gdn_recurrent, gdn_gates_*
    opt.filter = f;
    const auto results = ops::selftest::run_all(opt);
    EXPECT_GT(results.size(), 3u) << f;
    for (const auto& r : results)
      EXPECT_TRUE(r.pass) << r.op << " " << r.dtype << " " << r.shape << " output " << r.output << ": max rel err "
                          << r.max_rel_err << " > tol " << r.tol << " (" << r.note << ")";
  }
}

TEST(OpsGdn, ParityCasesAreRegistered) {
  int gdn = 0, conv = 0;
  for (const auto& m : ops::selftest::all_cases(1)) {
    gdn += m.op.rfind("gdn_", 0) == 0;
    conv += m.op.rfind("short_conv", 0) == 0;
  }
  EXPECT_GE(gdn, 6);
  EXPECT_GE(conv, 4);
}

// The small parity cases build and run on the CPU, writing finite values into every checked output.
TEST(OpsGdn, ParityCasesRunOnCpu) {
  int ran = 0;
  for (const auto& m : ops::selftest::all_cases(3)) {
    if (m.big || (m.op.rfind("gdn_", 0) != 0 && m.op.rfind("short_conv", 0) != 0)) continue;
    ops::selftest::Case c = m.make();
    c.run(c.init);
    for (const auto& [idx, tol] : c.checks) {
      const auto v = c.init[static_cast<size_t>(idx)].to_float_vector();
      const bool finite = std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
      EXPECT_TRUE(finite) << c.op << " " << c.dtype << " " << c.shape << " " << c.names[static_cast<size_t>(idx)];
    }
    ++ran;
  }
  EXPECT_GE(ran, 10);
}

}  // namespace
}  // namespace pgolf
