#include <gtest/gtest.h>

#include <random>

#include "artifact/pack_tensor.h"
#include "core/error.h"

using namespace pgolf;
using namespace pgolf::artifact;
using model::QuantRole;

namespace {
std::vector<float> gaussian(size_t n, float sd, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
}  // namespace

TEST(PackTensor, RolesPickTheirStorage) {
  quant::QuantPolicy policy;
  auto small = gaussian(8, 1.f, 1);
  PackTensorReport rep;
  StoredTensor p = pack_tensor("scale", {8}, small, QuantRole::Passthrough, policy, nullptr, &rep);
  EXPECT_EQ(p.kind, StorageKind::F16);
  EXPECT_LT(rep.sse, 1e-5);

  const int64_t rows = 16, cols = 32;
  auto w = gaussian(rows * cols, 0.05f, 2);
  StoredTensor g = pack_tensor("gate", {rows, cols}, w, QuantRole::Gate, policy, nullptr, &rep);
  EXPECT_EQ(g.kind, StorageKind::IntRow);
  EXPECT_EQ(g.q.bits, 8);
  EXPECT_EQ(g.group, static_cast<uint8_t>(QuantRole::Gate));

  StoredTensor a = pack_tensor("attn", {rows, cols}, w, QuantRole::AttnQ, policy, nullptr, &rep);
  EXPECT_EQ(a.q.bits, 6);
  EXPECT_TRUE(rep.hessian_missing);
  EXPECT_EQ(rep.method, quant::QuantMethod::Rtn);

  quant::HessianAccumulator acc(cols);
  auto x = gaussian(4 * cols * cols, 1.f, 3);
  acc.add(x, 4 * cols);
  const auto h = acc.hessian();
  StoredTensor e = pack_tensor("embed", {rows, cols}, w, QuantRole::Embed, policy, &h, &rep);
  EXPECT_EQ(e.q.bits, 7);
  EXPECT_EQ(rep.method, quant::QuantMethod::Gptq);
  ASSERT_TRUE(rep.gptq.has_value());
  EXPECT_GT(rep.gptq->proxy_error, 0.0);

  EXPECT_THROW(pack_tensor("vec", {8}, small, QuantRole::MlpUp, policy), Error);
  EXPECT_THROW(pack_tensor("bad", {rows, cols + 1}, w, QuantRole::MlpUp, policy), Error);
}
