#include <gtest/gtest.h>

#include "ops/embedding.h"
#include "ops/reduce.h"
#include "ops_test_util.h"

using namespace pgolf;
using namespace pgolf::testing;

TEST(OpsReduce, MatchReference) {
  const int64_t N = 7, C = 13;
  for (DType t : {DType::F32, DType::BF16}) {
    Tensor x = rand_tensor(Shape{N, C}, t, 21);
    auto xv = to_d(x);
    double s = 0, ss = 0;
    std::vector<double> rows(N, 0.0), cols(C, 0.5);
    for (int64_t i = 0; i < N * C; ++i) {
      s += xv[i];
      ss += xv[i] * xv[i];
      rows[i / C] += xv[i] * xv[i];
      cols[i % C] += xv[i];
    }
    Tensor out = Tensor::from_vector(std::vector<float>{2.f}, Shape{1});
    ops::sum(x, out);
    expect_close(to_d(out), {s}, 1e-6, "sum");
    ops::sum(x, out, true);
    expect_close(to_d(out), {2 * s}, 1e-6, "sum accumulate");
    ops::sum_squares(x, out);
    expect_close(to_d(out), {ss}, 1e-6, "sum_squares");
    ops::sum_squares(x, out, true);
    expect_close(to_d(out), {2 * ss}, 1e-6, "sum_squares accumulate");
    Tensor r = Tensor::empty(Shape{N}, DType::F32);
    ops::row_sum_squares(x, r);
    expect_close(to_d(r), rows, 1e-6, "row_sum_squares");
    Tensor c = Tensor::from_vector(std::vector<float>(C, 0.5f), Shape{C});
    ops::col_sum_accum(x, c);
    expect_close(to_d(c), cols, 1e-6, "col_sum_accum");
  }
  Tensor x = Tensor::empty(Shape{3, 4}, DType::F32);
  expect_error_naming([&] { ops::sum(x, Tensor::empty(Shape{2}, DType::F32)); }, "sum");
  expect_error_naming([&] { ops::row_sum_squares(x, Tensor::empty(Shape{4}, DType::F32)); }, "row_sum_squares");
  expect_error_naming([&] { ops::col_sum_accum(x, Tensor::empty(Shape{4}, DType::BF16)); }, "col_sum_accum");
}

TEST(OpsEmbedding, ForwardGathersAndBackwardScatterAdds) {
  const int64_t V = 11, C = 5;
  std::vector<int32_t> idv{3, 0, 10, 3, 7, 3};
  const int64_t N = static_cast<int64_t>(idv.size());
  Tensor ids = Tensor::from_vector(idv, Shape{N});
  for (DType tt : {DType::F32, DType::BF16})
    for (DType to : {DType::F32, DType::BF16}) {
      Tensor table = rand_tensor(Shape{V, C}, tt, 31), out = Tensor::empty(Shape{N, C}, to);
      ops::embedding_forward(ids, table, out);
      auto tv = to_d(table);
      std::vector<double> want(N * C);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) want[n * C + c] = tv[idv[n] * C + c];
      expect_close(to_d(out), want, tol_for(to), "embedding_forward");

      Tensor dout = rand_tensor(Shape{N, C}, to, 32);
      Tensor dtable = Tensor::from_vector(std::vector<float>(V * C, 1.f), Shape{V, C});
      ops::embedding_backward(ids, dout, dtable);
      auto dv = to_d(dout);
      std::vector<double> dw(V * C, 1.0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) dw[idv[n] * C + c] += dv[n * C + c];
      expect_close(to_d(dtable), dw, 1e-6, "embedding_backward");
    }
  Tensor table = Tensor::empty(Shape{V, C}, DType::F32);
  Tensor bad_ids = Tensor::from_vector(std::vector<int32_t>{1, 11}, Shape{2});
  expect_error_naming([&] { ops::embedding_forward(bad_ids, table, Tensor::empty(Shape{2, C}, DType::F32)); },
                      "embedding_forward");
  expect_error_naming([&] { ops::embedding_forward(ids, table, Tensor::empty(Shape{N, C + 1}, DType::F32)); },
                      "embedding_forward");
  expect_error_naming(
      [&] { ops::embedding_backward(ids, Tensor::empty(Shape{N, C}, DType::F32), Tensor::empty(Shape{V, C}, DType::BF16)); },
      "embedding_backward");
}
