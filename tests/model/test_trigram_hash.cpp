// The trigram extension of the BigramHash embedding (TECHNIQUES.md §5.9): the bucket formula on
// hand-computed values, the forward (a second row of the same table, summed before the projection) and
// whole-model gradients against finite differences, including a table row only the trigram reaches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "model/gpt.h"
#include "model_test_util.h"
#include "ops/bigram.h"
#include "train/config.h"

namespace pgolf::model {
namespace {

using testing::check_gradients_fd;
using testing::LossBatch;
using testing::random_ids;
using testing::randomize;
using testing::tiny_config;

std::vector<int32_t> values(const Tensor& t) { return std::vector<int32_t>(t.ptr<int32_t>(), t.ptr<int32_t>() + t.numel()); }

TEST(TrigramHash, BucketsFollowTheSpecFormula) {
  // Rows (5, 7, 0, 31) and (9, 9, 2, 8191); N_b = 3072, so the modulus is 3071 and the sentinel 3071.
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{5, 7, 0, 31, 9, 9, 2, 8191}, Shape{2, 4});
  Tensor out = Tensor::zeros(Shape{2, 4}, DType::I32);
  ops::trigram_hash(ids, 3072, out);
  // Worked by hand (products, their XOR, the remainder):
  //   row 0, t = 2: 36313*0 = 0, 27191*7 = 190337, 51497*5 = 257485; XOR 68172 = 22*3071 + 610.
  //   row 0, t = 3: 36313*31 = 1125703, 27191*0 = 0, 51497*7 = 360479; XOR 1355096 = 441*3071 + 785.
  //   row 1, t = 2: 36313*2 = 72626, 27191*9 = 244719, 51497*9 = 463473; XOR 373292 = 121*3071 + 1701.
  //   row 1, t = 3: 36313*8191 = 297439783, 27191*2 = 54382, 51497*9 = 463473; XOR 297620536 = 96913*3071 + 713.
  EXPECT_EQ(values(out), (std::vector<int32_t>{3071, 3071, 610, 785, 3071, 3071, 1701, 713}));
  EXPECT_EQ(ops::ref::trigram_bucket(7, 0, 31, false, 3072), 785);
  EXPECT_EQ(ops::ref::trigram_bucket(123, 456, 789, true, 3072), 3071);
}

TEST(TrigramHash, BadInputsFail) {
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{5, -7, 0, 31}, Shape{1, 4});
  Tensor out = Tensor::zeros(Shape{1, 4}, DType::I32);
  EXPECT_THROW(ops::trigram_hash(ids, 3072, out), Error);  // negative id
  const Tensor ok = Tensor::from_vector(std::vector<int32_t>{5, 7, 0, 31}, Shape{1, 4});
  EXPECT_THROW(ops::trigram_hash(ok, 1, out), Error);  // one bucket leaves no modulus
  Tensor wrong = Tensor::zeros(Shape{2, 2}, DType::I32);
  EXPECT_THROW(ops::trigram_hash(ok, 3072, wrong), Error);
  // Rows shorter than three tokens are all sentinel.
  const Tensor shortrow = Tensor::from_vector(std::vector<int32_t>{4, 9}, Shape{1, 2});
  Tensor o2 = Tensor::zeros(Shape{1, 2}, DType::I32);
  ops::trigram_hash(shortrow, 16, o2);
  EXPECT_EQ(values(o2), (std::vector<int32_t>{15, 15}));
}

ModelConfig trigram_config() {
  ModelConfig c = tiny_config();
  c.num_layers = 4;
  c.rope_dims = 4;
  c.bigram_buckets = 16;
  c.bigram_dim = 8;
  c.bigram_trigram = true;
  return c;
}

TEST(TrigramHash, ConfigNeedsTheBigramTable) {
  ModelConfig c = trigram_config();
  EXPECT_NO_THROW(check_model_config(c));
  c.bigram_buckets = 0;
  EXPECT_THROW(check_model_config(c), Error);
  // The TOML key and the parameter table: no parameters of its own (it shares the bigram table).
  train::Config cfg;
  train::apply_override(cfg, "model.bigram_trigram=true");
  EXPECT_TRUE(cfg.model.bigram_trigram);
  ModelConfig off = trigram_config();
  off.bigram_trigram = false;
  EXPECT_EQ(GPT::describe(off).count_elements(), GPT::describe(trigram_config()).count_elements());
}

// The trigram term is a second lookup in the same table, at the trigram bucket of each position. Checked through
// the whole model with chosen tables: (1) a table that is zero on every trigram bucket gives exactly the bigram
// model's logits; (2) a table that is non-zero on one trigram-only row r changes the logits first at the first
// position whose trigram bucket is r (causal attention: nothing before it can see it) and nowhere before.
std::vector<float> logits_of(GPT& m, const Tensor& ids) {
  Tensor out = Tensor::zeros(Shape{ids.numel(), m.config().vocab_size}, DType::F32);
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(ids.dim(0), ids.dim(1), false));
  m.forward_logits(ids, arena, out);
  return out.to_float_vector();
}

TEST(TrigramHash, ForwardLooksUpTheTrigramRowOfTheSameTable) {
  ModelConfig on = trigram_config(), off = on;
  off.bigram_trigram = false;
  GPT a(on, Device::CPU), b(off, Device::CPU);
  randomize(a, 5);
  const Tensor ids = random_ids(2, 8, 32, 6);
  Tensor b2 = Tensor::zeros(ids.shape(), DType::I32), b3 = Tensor::zeros(ids.shape(), DType::I32);
  ops::bigram_hash(ids, 16, b2);
  ops::trigram_hash(ids, 16, b3);
  const auto h2 = values(b2), h3 = values(b3);
  const std::set<int32_t> s2(h2.begin(), h2.end()), s3(h3.begin(), h3.end());
  std::vector<int32_t> tri_only;
  for (int32_t v : s3)
    if (!s2.count(v)) tri_only.push_back(v);
  ASSERT_FALSE(tri_only.empty()) << "pick another seed: every trigram bucket is also a bigram bucket";
  const std::vector<float> table = a.params().get("bigram.embed.weight").value.to_float_vector();
  // Copies a's weights into both models with the bigram table's rows outside `keep` zeroed.
  auto load = [&](const std::set<int32_t>& keep) {
    for (GPT* m : {&a, &b}) {
      for (size_t i = 0; i < a.params().all().size(); ++i)
        if (m != &a) m->params().all()[i].value.copy_from(a.params().all()[i].value);
      float* t = m->params().get("bigram.embed.weight").value.ptr<float>();
      for (int32_t r = 0; r < 16; ++r)
        for (int k = 0; k < 8; ++k) t[r * 8 + k] = keep.count(r) ? table[static_cast<size_t>(r * 8 + k)] : 0.f;
      m->params().sync_compute();
    }
  };
  std::set<int32_t> bigram_only;
  for (int32_t v : s2)
    if (!s3.count(v)) bigram_only.insert(v);
  load(bigram_only);
  EXPECT_EQ(logits_of(a, ids), logits_of(b, ids)) << "zero rows at every trigram bucket: the bigram model";

  const int32_t r = tri_only.front();
  load({r});
  const std::vector<float> la = logits_of(a, ids), lb = logits_of(b, ids);
  for (int64_t row = 0; row < 2; ++row) {
    int64_t first = 8;
    for (int64_t t = 0; t < 8; ++t)
      if (h3[static_cast<size_t>(row * 8 + t)] == r) {
        first = t;
        break;
      }
    for (int64_t t = 0; t < 8; ++t) {
      double diff = 0;
      for (int64_t v = 0; v < 32; ++v) {
        const size_t i = static_cast<size_t>((row * 8 + t) * 32 + v);
        diff = std::max(diff, std::fabs(double(la[i]) - lb[i]));
      }
      if (t < first)
        EXPECT_EQ(diff, 0.0) << "row " << row << " t " << t << ": before the first trigram bucket " << r;
      else if (t == first)
        EXPECT_GT(diff, 1e-5) << "row " << row << " t " << t << ": the trigram row is looked up here";
    }
  }
}

TEST(TrigramHash, GradientsMatchFiniteDifferences) {
  ModelConfig c = trigram_config();
  GPT m(c, Device::CPU);
  randomize(m, 71);
  LossBatch b{random_ids(2, 8, 32, 72), random_ids(2, 8, 32, 73)};
  int checked = 0;
  EXPECT_EQ(check_gradients_fd(m, b, &checked, 1e-2f, true), 0);
  EXPECT_GT(checked, 0);
  // A table row only the trigram reaches: its gradient comes from the trigram lookup alone.
  Tensor b2 = Tensor::zeros(b.ids.shape(), DType::I32), b3 = Tensor::zeros(b.ids.shape(), DType::I32);
  ops::bigram_hash(b.ids, 16, b2);
  ops::trigram_hash(b.ids, 16, b3);
  std::set<int32_t> tri_only;
  for (int32_t v : values(b3)) tri_only.insert(v);
  for (int32_t v : values(b2)) tri_only.erase(v);
  ASSERT_FALSE(tri_only.empty());
  const int32_t row = *tri_only.begin();
  Arena arena(Device::CPU);
  arena.reserve(m.plan_bytes(2, 8));
  m.params().zero_grads();
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32);
  m.forward_backward(b.ids, b.targets, 1.f / 16.f, arena, loss_sum);
  Param& table = m.params().get("bigram.embed.weight");
  const auto grad = table.grad.to_float_vector();
  float* w = table.value.ptr<float>();
  for (int k = 0; k < 8; k += 3) {
    const size_t i = static_cast<size_t>(row * 8 + k);
    ASSERT_NE(grad[i], 0.f) << "a trigram-only row must receive a gradient";
    const float saved = w[i], h = 1e-2f;
    w[i] = saved + h;
    const double up = testing::mean_loss(m, b, arena);
    w[i] = saved - h;
    const double down = testing::mean_loss(m, b, arena);
    w[i] = saved;
    const double fd = (up - down) / (2.0 * h);
    EXPECT_NEAR(grad[i], fd, 3e-2 * std::fabs(fd) + 3e-4) << "row " << row << " col " << k;
  }
}

}  // namespace
}  // namespace pgolf::model
