// The one-pass per-channel scale backward against the two ops it replaces (channel_dot_accum and
// mul_channel, plus an add when accumulating), and its argument checks.
#include <gtest/gtest.h>

#include "ops/channel_grad.h"
#include "ops/elementwise.h"
#include "ops_test_util.h"

namespace pgolf {
namespace {

using namespace testing;

Tensor copy_of(const Tensor& t) { return make_tensor(to_d(t), t.shape(), t.dtype()); }

TEST(OpsChannelGrad, EqualsDotAndScaleComposition) {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool acc : {false, true}) {
      const Shape sh{9, 24}, sc{24};
      const Tensor dy = rand_tensor(sh, DType::F32, 1), s = rand_tensor(sc, DType::F32, 2),
                   f = rand_tensor(sh, dt, 3), df0 = rand_tensor(sh, dt, 4), ds0 = rand_tensor(sc, DType::F32, 5);
      // The fused op.
      Tensor ds = copy_of(ds0), df = acc ? copy_of(df0) : Tensor::zeros(sh, dt);
      ops::channel_scale_backward(dy, s, f, ds, df, acc);
      // The composition it replaces.
      Tensor ds_ref = copy_of(ds0), part = Tensor::zeros(sh, DType::F32);
      ops::channel_dot_accum(dy, f, ds_ref);
      ops::mul_channel(dy, s, part);
      std::vector<double> df_ref = to_d(part);
      if (acc) {
        const std::vector<double> before = to_d(df0);
        for (size_t i = 0; i < df_ref.size(); ++i) df_ref[i] += before[i];
      }
      expect_close(to_d(ds), to_d(ds_ref), 1e-5, "ds");
      expect_close(to_d(df), df_ref, tol_for(dt), "df");
    }
  }
}

TEST(OpsChannelGrad, WithoutDfOnlyAccumulatesDs) {
  const Shape sh{5, 8}, sc{8};
  const Tensor dy = rand_tensor(sh, DType::F32, 6), s = rand_tensor(sc, DType::F32, 7), f = rand_tensor(sh, DType::F32, 8);
  Tensor ds = Tensor::zeros(sc, DType::F32), ds_ref = Tensor::zeros(sc, DType::F32);
  ops::channel_scale_backward(dy, s, f, ds, Tensor(), false);
  ops::channel_dot_accum(dy, f, ds_ref);
  expect_close(to_d(ds), to_d(ds_ref), 1e-6, "ds");
}

TEST(OpsChannelGrad, BadInputsNameTheOp) {
  const Tensor dy = Tensor::zeros(Shape{4, 8}, DType::F32), s = Tensor::zeros(Shape{8}, DType::F32);
  const Tensor ds = Tensor::zeros(Shape{8}, DType::F32), f = Tensor::zeros(Shape{4, 8}, DType::F32);
  auto fails_with = [](const std::function<void()>& fn, const std::string& what) {
    try {
      fn();
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("channel_scale_backward"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  fails_with([&] { ops::channel_scale_backward(dy, Tensor::zeros(Shape{7}, DType::F32), f, ds, Tensor(), false); }, "s");
  fails_with([&] { ops::channel_scale_backward(dy, s, Tensor::zeros(Shape{4, 7}, DType::F32), ds, Tensor(), false); },
             "f");
  fails_with([&] { ops::channel_scale_backward(dy, s, f, ds, dy, false); }, "alias");
}

}  // namespace
}  // namespace pgolf
