// The tensor-core GatedDeltaNet kernels (src/ops/gdn_tc*.cuh, docs/GDN.md "GPU kernels") without a GPU: the
// tf32 fragment maps and the shared-memory swizzle (coverage, bank conflicts), the triangular job table, and the
// kernels' own source run on the CPU under the host execution policy (every warp and lane in turn, the mma
// emulated through the fragment maps) against the double-precision reference: with exact fp32 products (the
// algorithm, loop bounds and layouts), in reverse warp/thread order (no phase reads what another warp writes in
// it), and with tf32 rounding (the error the GPU parity cases allow).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>

#include "ops/gdn.h"
#include "ops/gdn_tc_bwd.cuh"
#include "ops/gdn_tc_fwd.cuh"
#include "ops_test_util.h"

namespace pgolf {
namespace {

using namespace ops::gdn_tc;
using namespace ops::tf32;

// ---- maps --------------------------------------------------------------------------------------------------

TEST(GdnTcMaps, FragmentsCoverEveryElementOnce) {
  int a[16][8] = {}, b[8][8] = {}, c[16][8] = {};
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 4; ++i) {
      ASSERT_LT(frag_a_row(l, i), 16);
      ASSERT_LT(frag_a_col(l, i), 8);
      ++a[frag_a_row(l, i)][frag_a_col(l, i)];
      ++c[frag_c_row(l, i)][frag_c_col(l, i)];
    }
    for (int i = 0; i < 2; ++i) ++b[frag_b_row(l, i)][frag_b_col(l)];
  }
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 8; ++k) {
      EXPECT_EQ(a[r][k], 1) << "A " << r << "," << k;
      EXPECT_EQ(c[r][k], 1) << "C " << r << "," << k;
      if (r < 8) { EXPECT_EQ(b[r][k], 1) << "B " << r << "," << k; }
    }
  // The PTX layout itself at a few points: lane 5 (g 1, q 1).
  EXPECT_EQ(frag_a_row(5, 3), 9);
  EXPECT_EQ(frag_a_col(5, 3), 5);
  EXPECT_EQ(frag_b_row(5, 1), 5);
  EXPECT_EQ(frag_b_col(5), 1);
  EXPECT_EQ(frag_c_row(5, 2), 9);
  EXPECT_EQ(frag_c_col(5, 1), 3);
}

int bank(int r, int c) { return tile_at(r, c) % 32; }

TEST(GdnTcMaps, TileSwizzleIsABijectionWithoutBankConflicts) {
  std::set<int> seen;
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 64; ++c) {
      const int p = tile_at(r, c);
      EXPECT_GE(p, r * 64);  // stays in its row
      EXPECT_LT(p, r * 64 + 64);
      seen.insert(p);
      if (c % 2 == 0) { EXPECT_EQ(tile_at(r, c + 1), p + 1); }  // C-fragment pairs: one float2
      if (c % 4 == 0) {
        EXPECT_EQ(p % 4, 0);  // float4 groups: aligned, in order
        for (int u = 1; u < 4; ++u) EXPECT_EQ(tile_at(r, c + u), p + u);
      }
    }
  EXPECT_EQ(seen.size(), 4096u);
  // A-type loads (rows r0 + g, columns c0 + q) and B-type loads (rows r0 + q, columns c0 + g): 32 banks.
  for (int r0 = 0; r0 < 64; r0 += 4)
    for (int c0 = 0; c0 < 64; c0 += 4) {
      std::set<int> ba, bb;
      for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, q = l & 3;
        if (r0 % 8 == 0) ba.insert(bank(r0 + g, c0 + q));
        if (c0 % 8 == 0) bb.insert(bank(r0 + q, c0 + g));
      }
      if (r0 % 8 == 0) { EXPECT_EQ(ba.size(), 32u) << "A-type at " << r0 << "," << c0; }
      if (c0 % 8 == 0) { EXPECT_EQ(bb.size(), 32u) << "B-type at " << r0 << "," << c0; }
    }
  // Accumulator pairs stored as float2: each half-warp covers 16 different bank pairs.
  for (int r0 = 0; r0 < 64; r0 += 8)
    for (int c0 = 0; c0 < 64; c0 += 8)
      for (int half = 0; half < 2; ++half) {
        std::set<int> pairs;
        for (int l = 16 * half; l < 16 * half + 16; ++l) pairs.insert(bank(r0 + (l >> 2), c0 + 2 * (l & 3)) / 2);
        EXPECT_EQ(pairs.size(), 16u) << r0 << "," << c0;
      }
}

// The triangular warp jobs cover every 16 x 16 block on or below the diagonal exactly once and nothing above.
TEST(GdnTcMaps, TriangleJobsCoverTheBlockLowerTriangleOnce) {
  int cover[4][8] = {};  // (16-row block, 8-column n-tile)
  for (int j = 0; j < kTriJobs; ++j) {
    ASSERT_GT(tri_ntc(j), 0);
    for (int nt = 0; nt < tri_ntc(j); ++nt) ++cover[tri_mi(j)][4 * tri_half(j) + nt];
  }
  for (int mi = 0; mi < 4; ++mi)
    for (int nt = 0; nt < 8; ++nt) EXPECT_EQ(cover[mi][nt], nt < 2 * mi + 2 ? 1 : 0) << mi << "," << nt;
}

TEST(GdnTcMaps, Tf32RoundingIsNearestTiesAway) {
  auto r = [](float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    b = tf32_round_bits(b);
    std::memcpy(&x, &b, 4);
    return x;
  };
  EXPECT_EQ(r(1.f), 1.f);
  EXPECT_EQ(r(1.f + std::ldexp(1.f, -12)), 1.f);                          // below half an ulp (2^-10)
  EXPECT_EQ(r(1.f + std::ldexp(1.f, -11)), 1.f + std::ldexp(1.f, -10));  // a tie rounds away
  EXPECT_EQ(r(-1.f - std::ldexp(1.f, -11)), -1.f - std::ldexp(1.f, -10));
  EXPECT_EQ(r(1.f + 3 * std::ldexp(1.f, -12)), 1.f + std::ldexp(1.f, -10));
  for (float x : {0.1f, -3.7f, 123.456f, 1e-20f}) EXPECT_LE(std::fabs(r(x) - x), std::fabs(x) * std::ldexp(1.f, -11));
}

// ---- the kernels under emulation -----------------------------------------------------------------------------

struct Prob {
  const char* name;
  int64_t B, T, H;
  bool init, dfinal;
  double beta_lo, beta_hi, g_lo, g_hi;
};

// Inputs as the layer makes them (q, k L2-normalized, q / sqrt(64)), in float so that both sides see the same.
struct Data {
  Prob p;
  int NC;
  std::vector<float> q, k, v, g, beta, init, dout, dfin;
  Data(const Prob& pr, uint32_t seed) : p(pr), NC(static_cast<int>(ops::gdn_num_chunks(pr.T, kC))) {
    const size_t rows = static_cast<size_t>(p.B * p.T * p.H);
    auto f = [](const std::vector<double>& d) { return std::vector<float>(d.begin(), d.end()); };
    q = f(testing::randn(rows * kC, seed));
    k = f(testing::randn(rows * kC, seed + 1));
    for (size_t r = 0; r < rows; ++r)
      for (auto* x : {&q, &k}) {
        double n = 0;
        for (int i = 0; i < kC; ++i) n += double((*x)[r * kC + i]) * (*x)[r * kC + i];
        const double s = (x == &q ? 8.0 : 1.0) * std::sqrt(n);
        for (int i = 0; i < kC; ++i) (*x)[r * kC + i] = static_cast<float>((*x)[r * kC + i] / s);
      }
    v = f(testing::randn(rows * kC, seed + 2));
    dout = f(testing::randn(rows * kC, seed + 3));
    const auto u1 = testing::randn(rows, seed + 4), u2 = testing::randn(rows, seed + 5);
    for (size_t r = 0; r < rows; ++r) {
      g.push_back(static_cast<float>(p.g_lo + (p.g_hi - p.g_lo) / (1.0 + std::exp(-2.0 * u1[r]))));
      beta.push_back(static_cast<float>(p.beta_lo + (p.beta_hi - p.beta_lo) / (1.0 + std::exp(-2.0 * u2[r]))));
    }
    const size_t ns = static_cast<size_t>(p.B * p.H) * kTileFloats;
    if (p.init) init = f(testing::randn(ns, seed + 6, 0.5));
    if (p.dfinal) dfin = f(testing::randn(ns, seed + 7));
  }
  size_t n_act() const { return q.size(); }
  size_t n_state() const { return static_cast<size_t>(p.B * p.H) * kTileFloats; }
};

std::vector<double> dv(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

struct Outs {  // forward and backward results, as double
  std::vector<double> o, states, fin, dq, dk, dv, dg, dbeta, dinit;
};

// The double reference; the backward is given the reference forward's states (as the kernels are below).
Outs reference(const Data& d) {
  const int64_t B = d.p.B, T = d.p.T, H = d.p.H;
  Outs r;
  r.o.resize(d.n_act());
  r.states.resize(static_cast<size_t>(B * H * d.NC) * kTileFloats);
  r.fin.resize(d.n_state());
  const auto q = dv(d.q), k = dv(d.k), v = dv(d.v), g = dv(d.g), beta = dv(d.beta), init = dv(d.init),
             dout = dv(d.dout), dfin = dv(d.dfin);
  ops::ref::gdn_chunk_forward(q.data(), k.data(), v.data(), g.data(), beta.data(), d.p.init ? init.data() : nullptr,
                              r.o.data(), r.states.data(), r.fin.data(), B, T, H, kC, kC, kC);
  // The backward's states as the float kernels see them.
  std::vector<double> st(r.states.size());
  for (size_t i = 0; i < st.size(); ++i) st[i] = static_cast<float>(r.states[i]);
  r.dq.resize(d.n_act()), r.dk.resize(d.n_act()), r.dv.resize(d.n_act());
  r.dg.resize(d.g.size()), r.dbeta.resize(d.g.size()), r.dinit.resize(d.n_state());
  ops::ref::gdn_chunk_backward(q.data(), k.data(), v.data(), g.data(), beta.data(), st.data(), dout.data(),
                               d.p.dfinal ? dfin.data() : nullptr, r.dq.data(), r.dk.data(), r.dv.data(),
                               r.dg.data(), r.dbeta.data(), r.dinit.data(), B, T, H, kC, kC, kC);
  return r;
}

template <class S>
std::unique_ptr<S> poisoned_smem() {
  auto s = std::make_unique<S>();
  static_assert(sizeof(S) % sizeof(float) == 0);
  float* f = reinterpret_cast<float*>(s.get());
  std::fill(f, f + sizeof(S) / sizeof(float), NAN);
  return s;
}

// The kernels' source under the host policy X: every output starts as NaN, every (b, h) row gets freshly
// poisoned shared memory, so an element never written or a tile element read before it is written shows.
template <class X>
Outs emulate(const Data& d, const Outs& ref) {
  Data in = d;  // the policy's pointers are mutable
  std::vector<float> o(d.n_act(), NAN), states(ref.states.size(), NAN), fin(d.n_state(), NAN);
  FwdArgs<X> fa{d.p.B, d.p.T, d.p.H, d.NC, in.q.data(), in.k.data(), in.v.data(), o.data(), in.g.data(),
                in.beta.data(), d.p.init ? in.init.data() : nullptr, states.data(), fin.data()};
  for (int bh = 0; bh < d.p.B * d.p.H; ++bh) fwd_row<X>(fa, *poisoned_smem<FwdSmem>(), bh);

  std::vector<float> st(ref.states.begin(), ref.states.end());
  std::vector<float> dq(d.n_act(), NAN), dk(d.n_act(), NAN), dvv(d.n_act(), NAN), dg(d.g.size(), NAN),
      db(d.g.size(), NAN), di(d.n_state(), NAN);
  BwdArgs<X> ba{d.p.B, d.p.T, d.p.H, d.NC, in.q.data(), in.k.data(), in.v.data(), in.dout.data(), dq.data(),
                dk.data(), dvv.data(), in.g.data(), in.beta.data(), st.data(), d.p.dfinal ? in.dfin.data() : nullptr,
                dg.data(), db.data(), di.data()};
  for (int bh = 0; bh < d.p.B * d.p.H; ++bh) bwd_row<X>(ba, *poisoned_smem<BwdSmem>(), bh);
  return Outs{dv(o), dv(states), dv(fin), dv(dq), dv(dk), dv(dvv), dv(dg), dv(db), dv(di)};
}

// max |got - want| / max |want|; infinity when anything is not finite.
double rel_err(const std::vector<double>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double m = 1e-30, e = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    m = std::max(m, std::fabs(want[i]));
    e = std::max(e, std::fabs(got[i] - want[i]));
  }
  return e / m;
}

const char* const kOutNames[] = {"o", "states", "final_state", "dq", "dk", "dv", "dg", "dbeta", "dinit"};
std::vector<const std::vector<double>*> fields(const Outs& o) {
  return {&o.o, &o.states, &o.fin, &o.dq, &o.dk, &o.dv, &o.dg, &o.dbeta, &o.dinit};
}

const Prob kProbs[] = {
    {"T150 init dfinal", 1, 150, 2, true, true, 0.05, 1.95, -1.0, -0.01},
    {"T64 B2 plain", 2, 64, 1, false, false, 0.05, 1.95, -1.0, -0.01},
    {"T37 one partial chunk", 1, 37, 2, true, false, 0.05, 1.95, -1.0, -0.01},
    {"T130 negative beta", 1, 130, 1, true, true, -1.0, 2.0, -1.0, -0.01},
    {"T100 strong decay", 1, 100, 2, false, true, 0.05, 1.95, -8.0, -2.0},
    {"T200 weak decay", 1, 200, 1, true, true, 0.05, 1.95, -0.05, -0.001},
    {"T2048 weak decay", 1, 2048, 1, false, false, 0.05, 1.95, -0.05, -0.001},
    {"T2048", 1, 2048, 1, false, false, 0.05, 1.95, -1.0, -0.01},
};

// Prints and returns the error of every output of every problem.
template <class X>
std::vector<std::vector<double>> errors(const char* what) {
  std::vector<std::vector<double>> all;
  uint32_t seed = 1000;
  for (const Prob& p : kProbs) {
    const Data d(p, seed += 10);
    const Outs ref = reference(d);
    const Outs got = emulate<X>(d, ref);
    std::vector<double> e;
    const auto fr = fields(ref), fg = fields(got);
    std::printf("[gdn_tc %s] %-22s", what, p.name);
    for (size_t i = 0; i < fr.size(); ++i) {
      // Undefined optional outputs: the final state and dinit are always written here, so always compared.
      e.push_back(rel_err(*fg[i], *fr[i]));
      std::printf(" %s %.2g", kOutNames[i], e.back());
    }
    std::printf("\n");
    all.push_back(e);
  }
  return all;
}

TEST(GdnTcEmulation, ExactProductsMatchTheReference) {
  const auto all = errors<HostExec<false, false>>("fp32");
  for (size_t p = 0; p < all.size(); ++p)
    for (size_t i = 0; i < all[p].size(); ++i)
      EXPECT_LE(all[p][i], 1e-4) << kProbs[p].name << " " << kOutNames[i];
}

// Reversed warp, thread and lane order gives bit-identical results: no phase depends on the order of its warps.
TEST(GdnTcEmulation, WarpOrderDoesNotMatter) {
  const Data d(kProbs[0], 77);
  const Outs ref = reference(d);
  const Outs a = emulate<HostExec<true, false>>(d, ref), b = emulate<HostExec<true, true>>(d, ref);
  const auto fa = fields(a), fb = fields(b);
  for (size_t i = 0; i < fa.size(); ++i) {
    size_t diff = 0;
    for (size_t j = 0; j < fa[i]->size(); ++j) diff += (*fa[i])[j] != (*fb[i])[j];
    EXPECT_EQ(diff, 0u) << kOutNames[i];
  }
}

// With tf32 rounding (what the GPU does), within the budgets of the tc parity cases (selftest_cases_gdn.cpp:
// kTolTc*), with margin: the emulation's errors are printed for docs/GDN.md.
TEST(GdnTcEmulation, Tf32ErrorsWithinTheParityTolerances) {
  const auto all = errors<HostExec<true, false>>("tf32");
  //                          o      states final  dq     dk     dv     dg     dbeta  dinit
  const double budget[9] = {5e-3, 5e-3, 5e-3, 5e-3, 5e-3, 5e-3, 1e-2, 1e-2, 5e-3};
  for (size_t p = 0; p < all.size(); ++p)
    for (size_t i = 0; i < all[p].size(); ++i)
      EXPECT_LE(all[p][i], budget[i] / 2) << kProbs[p].name << " " << kOutNames[i];
}

}  // namespace
}  // namespace pgolf
