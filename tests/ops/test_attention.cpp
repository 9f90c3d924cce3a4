#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "ops/attention.h"
#include "ops/reference.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

namespace {

struct Cfg {
  int64_t B, T, Hq, Hkv, D;
  int64_t q_n() const { return B * T * Hq * D; }
  int64_t kv_n() const { return B * T * Hkv * D; }
};

// Independent reference: materialises the full mask and score matrix per (b, h).
void naive_attention(const Cfg& c, const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, const std::vector<int32_t>* doc, const ops::AttnParams& p,
                     std::vector<double>* out, std::vector<double>* lse) {
  out->assign(c.q_n(), 0.0);
  lse->assign(c.B * c.Hq * c.T, 0.0);
  double scale = p.scale > 0 ? p.scale : 1.0 / std::sqrt(double(c.D));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h) {
      int64_t kh = h / (c.Hq / c.Hkv);
      for (int64_t i = 0; i < c.T; ++i) {
        std::vector<double> s(c.T, -INFINITY);
        double m = -INFINITY;
        for (int64_t j = 0; j < c.T; ++j) {
          bool vis = true;
          if (p.causal && j > i) vis = false;
          if (p.window > 0 && !(i - p.window < j && j <= i)) vis = false;
          if (doc && j < (*doc)[b * c.T + i]) vis = false;
          if (!vis) continue;
          double d = 0;
          for (int64_t e = 0; e < c.D; ++e)
            d += q[((b * c.T + i) * c.Hq + h) * c.D + e] * k[((b * c.T + j) * c.Hkv + kh) * c.D + e];
          s[j] = scale * d;
          m = std::max(m, s[j]);
        }
        double l = 0;
        for (int64_t j = 0; j < c.T; ++j) l += std::isinf(s[j]) ? 0.0 : std::exp(s[j] - m);
        for (int64_t j = 0; j < c.T; ++j) {
          if (std::isinf(s[j])) continue;
          double pj = std::exp(s[j] - m) / l;
          for (int64_t e = 0; e < c.D; ++e)
            (*out)[((b * c.T + i) * c.Hq + h) * c.D + e] += pj * v[((b * c.T + j) * c.Hkv + kh) * c.D + e];
        }
        (*lse)[(b * c.Hq + h) * c.T + i] = m + std::log(l);
      }
    }
}

std::vector<int32_t> make_docs(const Cfg& c) {
  // Batch 0: documents start at 0, 5, 11 ; batch 1: one document.
  std::vector<int32_t> d(c.B * c.T, 0);
  for (int64_t i = 0; i < c.T; ++i) d[i] = i >= 11 ? 11 : (i >= 5 ? 5 : 0);
  return d;
}

struct AttnRun {
  Tensor q, k, v, out, lse, doc;
};

AttnRun run_forward(const Cfg& c, DType t, const ops::AttnParams& p, bool docs, uint32_t seed) {
  AttnRun r;
  r.q = rand_tensor(Shape{c.B, c.T, c.Hq, c.D}, t, seed);
  r.k = rand_tensor(Shape{c.B, c.T, c.Hkv, c.D}, t, seed + 1);
  r.v = rand_tensor(Shape{c.B, c.T, c.Hkv, c.D}, t, seed + 2);
  r.out = Tensor::empty(r.q.shape(), t);
  r.lse = Tensor::empty(Shape{c.B, c.Hq, c.T}, DType::F32);
  if (docs) r.doc = Tensor::from_vector(make_docs(c), Shape{c.B, c.T});
  ops::attention_forward(r.q, r.k, r.v, r.doc, r.out, r.lse, p);
  return r;
}

}  // namespace

TEST(OpsAttention, ForwardMatchesNaiveReference) {
  for (Cfg c : {Cfg{2, 17, 4, 2, 8}, Cfg{1, 5, 2, 1, 64}})
    for (DType t : {DType::F32, DType::BF16})
      for (int mode = 0; mode < 4; ++mode) {
        ops::AttnParams p;
        p.causal = mode != 3;
        p.window = mode == 1 ? 4 : 0;
        bool docs = mode == 2;
        if (mode == 3) p.scale = 0.3f;  // non-causal with an explicit scale
        AttnRun r = run_forward(c, t, p, docs, 91);
        std::vector<int32_t> dv = make_docs(c);
        std::vector<double> out, lse;
        naive_attention(c, to_d(r.q), to_d(r.k), to_d(r.v), docs ? &dv : nullptr, p, &out, &lse);
        expect_close(to_d(r.out), out, tol_for(t), "attention out (mode " + std::to_string(mode) + ")");
        expect_close(to_d(r.lse), lse, 1e-5, "attention lse");
      }
}

TEST(OpsAttention, MaskedKeysDoNotChangeTheOutput) {
  const Cfg c{2, 17, 4, 2, 8};
  struct Case {
    ops::AttnParams p;
    bool docs;
    int64_t masked_key, query;  // query row in batch 0 that must not see masked_key
  };
  ops::AttnParams causal, window;
  window.window = 3;
  // causal: key 9 is after query 4 ; window 3: query 12 sees 10..12, not 8 ; docs: query 13 (doc from 11) not 7.
  for (Case cs : {Case{causal, false, 9, 4}, Case{window, false, 8, 12}, Case{causal, true, 7, 13}}) {
    AttnRun r = run_forward(c, DType::F32, cs.p, cs.docs, 92);
    auto before = to_d(r.out);
    // Perturb key and value `masked_key` of batch 0 in every kv head.
    for (Tensor* t : {&r.k, &r.v})
      for (int64_t h = 0; h < c.Hkv; ++h)
        for (int64_t e = 0; e < c.D; ++e) t->ptr<float>()[(cs.masked_key * c.Hkv + h) * c.D + e] += 5.f;
    ops::attention_forward(r.q, r.k, r.v, r.doc, r.out, r.lse, cs.p);
    auto after = to_d(r.out);
    int64_t row = c.Hq * c.D;
    bool later_changed = false;
    for (int64_t e = 0; e < row; ++e) {
      EXPECT_EQ(after[cs.query * row + e], before[cs.query * row + e]) << "query " << cs.query << " saw key " << cs.masked_key;
      if (after[cs.masked_key * row + e] != before[cs.masked_key * row + e]) later_changed = true;
    }
    EXPECT_TRUE(later_changed) << "the perturbed key's own row must see it";
  }
}

TEST(OpsAttention, DiagonalOnlyRowsCopyTheirValue) {
  const Cfg c{1, 6, 2, 1, 4};
  ops::AttnParams p;
  p.window = 1;
  AttnRun r = run_forward(c, DType::F32, p, false, 93);
  auto out = to_d(r.out), v = to_d(r.v), lse = to_d(r.lse);
  for (int64_t i = 0; i < c.T; ++i)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t e = 0; e < c.D; ++e) EXPECT_NEAR(out[(i * c.Hq + h) * c.D + e], v[i * c.D + e], 1e-6);
  for (double l : lse) EXPECT_TRUE(std::isfinite(l));
}

TEST(OpsAttention, BackwardFiniteDifferencesAllMasks) {
  const Cfg c{2, 12, 4, 2, 4};
  std::vector<int32_t> docs = make_docs(c);
  for (int mode = 0; mode < 4; ++mode) {
    ops::AttnParams p;
    p.causal = mode != 3;
    p.window = mode == 1 ? 3 : 0;
    const int32_t* doc = mode == 2 ? docs.data() : nullptr;
    auto q = randn(c.q_n(), 94), k = randn(c.kv_n(), 95), v = randn(c.kv_n(), 96), proj = randn(c.q_n(), 97);
    auto loss = [&](const std::vector<double>& qq, const std::vector<double>& kk, const std::vector<double>& vv) {
      std::vector<double> out(c.q_n()), lse(c.B * c.Hq * c.T);
      ops::ref::attention_forward(qq.data(), kk.data(), vv.data(), doc, out.data(), lse.data(), c.B, c.T, c.Hq, c.Hkv,
                                  c.D, p);
      return dot(out, proj);
    };
    std::vector<double> out(c.q_n()), lse(c.B * c.Hq * c.T), dq(c.q_n()), dk(c.kv_n()), dv(c.kv_n());
    ops::ref::attention_forward(q.data(), k.data(), v.data(), doc, out.data(), lse.data(), c.B, c.T, c.Hq, c.Hkv, c.D, p);
    ops::ref::attention_backward(q.data(), k.data(), v.data(), doc, out.data(), lse.data(), proj.data(), dq.data(),
                                 dk.data(), dv.data(), c.B, c.T, c.Hq, c.Hkv, c.D, p);
    std::string m = " (mode " + std::to_string(mode) + ")";
    expect_grad_matches_fd([&](const std::vector<double>& x) { return loss(x, k, v); }, q, dq, "attn dq" + m);
    expect_grad_matches_fd([&](const std::vector<double>& x) { return loss(q, x, v); }, k, dk, "attn dk" + m);
    expect_grad_matches_fd([&](const std::vector<double>& x) { return loss(q, k, x); }, v, dv, "attn dv" + m);

    // The float op agrees with the double backward.
    Tensor tq = make_tensor(q, Shape{c.B, c.T, c.Hq, c.D}, DType::F32);
    Tensor tk = make_tensor(k, Shape{c.B, c.T, c.Hkv, c.D}, DType::F32), tv = make_tensor(v, tk.shape(), DType::F32);
    Tensor tdoc = doc ? Tensor::from_vector(docs, Shape{c.B, c.T}) : Tensor();
    Tensor tout = Tensor::empty(tq.shape(), DType::F32), tlse = Tensor::empty(Shape{c.B, c.Hq, c.T}, DType::F32);
    Tensor tdq = Tensor::empty(tq.shape(), DType::F32), tdk = Tensor::empty(tk.shape(), DType::F32);
    Tensor tdv = Tensor::empty(tk.shape(), DType::F32);
    ops::attention_forward(tq, tk, tv, tdoc, tout, tlse, p);
    ops::attention_backward(tq, tk, tv, tdoc, tout, tlse, make_tensor(proj, tq.shape(), DType::F32), tdq, tdk, tdv, p);
    expect_close(to_d(tdq), dq, 1e-5, "attn dq (float)" + m);
    expect_close(to_d(tdk), dk, 1e-5, "attn dk (float)" + m);
    expect_close(to_d(tdv), dv, 1e-5, "attn dv (float)" + m);
  }
}

// T spans several query blocks of the threaded CPU kernel (64 rows each), with documents that
// straddle block edges, so the packed key ranges and per-(batch, kv head) work items are exercised.
TEST(OpsAttention, MultiBlockFloatMatchesDoubleReference) {
  const Cfg c{2, 150, 4, 2, 16};
  std::vector<int32_t> docs(c.B * c.T);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < c.T; ++i) docs[b * c.T + i] = b == 1 ? (i >= 100 ? 100 : (i >= 60 ? 60 : 0)) : 0;
  for (int mode = 0; mode < 4; ++mode) {
    ops::AttnParams p;
    p.causal = mode != 3;
    p.window = mode == 1 ? 70 : 0;
    const int32_t* doc = mode == 2 ? docs.data() : nullptr;
    auto q = randn(c.q_n(), 191), k = randn(c.kv_n(), 192), v = randn(c.kv_n(), 193), proj = randn(c.q_n(), 194);
    std::vector<double> out(c.q_n()), lse(c.B * c.Hq * c.T), dq(c.q_n()), dk(c.kv_n()), dv(c.kv_n());
    ops::ref::attention_forward(q.data(), k.data(), v.data(), doc, out.data(), lse.data(), c.B, c.T, c.Hq, c.Hkv, c.D, p);
    ops::ref::attention_backward(q.data(), k.data(), v.data(), doc, out.data(), lse.data(), proj.data(), dq.data(),
                                 dk.data(), dv.data(), c.B, c.T, c.Hq, c.Hkv, c.D, p);
    Tensor tq = make_tensor(q, Shape{c.B, c.T, c.Hq, c.D}, DType::F32);
    Tensor tk = make_tensor(k, Shape{c.B, c.T, c.Hkv, c.D}, DType::F32), tv = make_tensor(v, tk.shape(), DType::F32);
    Tensor tdoc = doc ? Tensor::from_vector(docs, Shape{c.B, c.T}) : Tensor();
    Tensor tout = Tensor::empty(tq.shape(), DType::F32), tlse = Tensor::empty(Shape{c.B, c.Hq, c.T}, DType::F32);
    Tensor tdq = Tensor::empty(tq.shape(), DType::F32), tdk = Tensor::empty(tk.shape(), DType::F32);
    Tensor tdv = Tensor::empty(tk.shape(), DType::F32);
    ops::attention_forward(tq, tk, tv, tdoc, tout, tlse, p);
    ops::attention_backward(tq, tk, tv, tdoc, tout, tlse, make_tensor(proj, tq.shape(), DType::F32), tdq, tdk, tdv, p);
    std::string m = " (mode " + std::to_string(mode) + ")";
    expect_close(to_d(tout), out, 1e-5, "attn out (multi-block)" + m);
    expect_close(to_d(tlse), lse, 1e-5, "attn lse (multi-block)" + m);
    expect_close(to_d(tdq), dq, 1e-4, "attn dq (multi-block)" + m);
    expect_close(to_d(tdk), dk, 1e-4, "attn dk (multi-block)" + m);
    expect_close(to_d(tdv), dv, 1e-4, "attn dv (multi-block)" + m);
  }
}

TEST(OpsAttention, Bf16BackwardCloseToF32) {
  const Cfg c{1, 9, 2, 1, 8};
  ops::AttnParams p;
  AttnRun r16 = run_forward(c, DType::BF16, p, false, 98);
  // The same (bf16-representable) inputs in f32.
  Tensor q32 = make_tensor(to_d(r16.q), r16.q.shape(), DType::F32);
  Tensor k32 = make_tensor(to_d(r16.k), r16.k.shape(), DType::F32);
  Tensor v32 = make_tensor(to_d(r16.v), r16.v.shape(), DType::F32);
  Tensor o32 = Tensor::empty(q32.shape(), DType::F32), l32 = Tensor::empty(r16.lse.shape(), DType::F32);
  ops::attention_forward(q32, k32, v32, Tensor(), o32, l32, p);
  auto proj = randn(c.q_n(), 99);
  Tensor d16 = make_tensor(proj, q32.shape(), DType::BF16), d32 = make_tensor(to_d(d16), q32.shape(), DType::F32);
  Tensor dq16 = Tensor::empty(q32.shape(), DType::BF16), dk16 = Tensor::empty(k32.shape(), DType::BF16);
  Tensor dv16 = Tensor::empty(k32.shape(), DType::BF16);
  Tensor dq32 = Tensor::empty(q32.shape(), DType::F32), dk32 = Tensor::empty(k32.shape(), DType::F32);
  Tensor dv32 = Tensor::empty(k32.shape(), DType::F32);
  ops::attention_backward(r16.q, r16.k, r16.v, Tensor(), r16.out, r16.lse, d16, dq16, dk16, dv16, p);
  ops::attention_backward(q32, k32, v32, Tensor(), o32, l32, d32, dq32, dk32, dv32, p);
  expect_close(to_d(dq16), to_d(dq32), 3e-2, "bf16 dq");
  expect_close(to_d(dk16), to_d(dk32), 3e-2, "bf16 dk");
  expect_close(to_d(dv16), to_d(dv32), 3e-2, "bf16 dv");
}

TEST(OpsAttention, BadInputsNameTheOp) {
  Tensor q = Tensor::zeros(Shape{1, 4, 4, 8}, DType::F32), k = Tensor::zeros(Shape{1, 4, 2, 8}, DType::F32);
  Tensor out = Tensor::empty(q.shape(), DType::F32), lse = Tensor::empty(Shape{1, 4, 4}, DType::F32);
  ops::AttnParams p;
  expect_error_naming([&] { ops::attention_forward(q, Tensor::zeros(Shape{1, 4, 3, 8}, DType::F32), k, Tensor(), out, lse, p); },
                      "attention_forward");
  expect_error_naming([&] { ops::attention_forward(q, k, Tensor::zeros(Shape{1, 4, 2, 8}, DType::BF16), Tensor(), out, lse, p); },
                      "attention_forward");
  expect_error_naming([&] { ops::attention_forward(q, k, k, Tensor(), out, Tensor::empty(Shape{1, 4, 5}, DType::F32), p); },
                      "attention_forward");
  expect_error_naming(
      [&] { ops::attention_forward(q, k, k, Tensor::zeros(Shape{1, 4}, DType::F32), out, lse, p); }, "attention_forward");
  expect_error_naming([&] { ops::attention_backward(q, k, k, Tensor(), out, lse, out, out, k, Tensor(), p); },
                      "attention_backward");
}

// The backward kernel override (selftests and `bench attention` force each kernel through it) round-trips, and
// every kernel has its own name: the parity cases and bench rows are told apart by it.
TEST(OpsAttention, BackwardKernelOverrideRoundTrips) {
  ASSERT_EQ(ops::attention_bwd_kernel_override(), ops::AttnBwdKernel::Auto);
  std::set<std::string> names;
  for (ops::AttnBwdKernel k : {ops::AttnBwdKernel::Auto, ops::AttnBwdKernel::V1, ops::AttnBwdKernel::Wgmma128,
                               ops::AttnBwdKernel::Wgmma64, ops::AttnBwdKernel::WgmmaDqMma}) {
    ops::set_attention_bwd_kernel(k);
    EXPECT_EQ(ops::attention_bwd_kernel_override(), k);
    names.insert(ops::attn_bwd_kernel_name(k));
  }
  ops::set_attention_bwd_kernel(ops::AttnBwdKernel::Auto);
  EXPECT_EQ(names.size(), 5u);
  for (const char* n : {"v1", "wgmma128", "wgmma64", "wgmma-dqmma"}) EXPECT_TRUE(names.count(n)) << n;  // PGOLF_ATTN_BWD
}
