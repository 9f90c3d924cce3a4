// GPU parity through gtest: the small-shape cases of `pgolf selftest --gpu` (src/ops/selftest.h),
// each op's CUDA kernel against the CPU reference. Skipped on machines without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "core/memory.h"
#include "ops/selftest.h"

namespace pgolf::ops::selftest {
namespace {

TEST(GpuParity, EveryOpMatchesTheCpuReferenceOnSmallShapes) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: GPU parity not run";
  Options opt;
  opt.seed = 20240611;
  opt.training_shapes = false;
  opt.time_gpu = false;
  const std::vector<Result> results = run_all(opt);
  ASSERT_GT(results.size(), 100u);
  for (const Result& r : results)
    EXPECT_TRUE(r.pass) << r.op << " " << r.dtype << " " << r.shape << " output " << r.output << ": max rel err "
                        << r.max_rel_err << " > tol " << r.tol << " (" << r.note << ")";
}

TEST(GpuParity, PoisonedOutputThatIsNeverWrittenFails) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  // A deliberately broken "op" that writes its output on the CPU only: the GPU copy keeps its NaN
  // poison, and the comparison must flag it.
  Case c;
  c.op = "broken";
  c.dtype = "f32";
  c.shape = "[5]";
  c.names = {"out"};
  c.init = {Inputs::poison(Shape{5}, DType::F32)};
  c.checks = {{0, 1e-3}};
  c.run = [](const std::vector<Tensor>& t) {
    if (!t[0].is_cuda())
      for (int i = 0; i < 5; ++i) t[0].ptr<float>()[i] = 1.f;
  };
  const std::vector<Result> rs = run_case(c, false);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_FALSE(rs[0].pass);
  EXPECT_NE(rs[0].note.find("non-finite"), std::string::npos) << rs[0].note;
}

TEST(GpuParitySetup, CaseListCoversEveryOpFamilyWithUniqueInputs) {
  std::set<std::string> ops;
  size_t small = 0;
  for (const CaseMaker& m : all_cases(1)) {
    ops.insert(m.op);
    small += m.big ? 0 : 1;
  }
  for (const char* want : {"add", "copy", "sigmoid_gate_bwd(C)", "sum_squares", "col_sum_accum", "embedding_bwd",
                           "rmsnorm_bwd", "rope_fwd", "relu2_fwd", "softcap_ce", "adam_step", "row_normalize",
                           "fill_normal", "matmul_NT", "attention_bwd"})
    EXPECT_TRUE(ops.count(want)) << "no parity case for " << want;
  EXPECT_GT(small, 100u);
  // Same seed -> same inputs; another seed -> different ones.
  Inputs a(7), b(7), c(8);
  const auto va = a.normal(Shape{64}, DType::F32).to_float_vector();
  EXPECT_EQ(va, b.normal(Shape{64}, DType::F32).to_float_vector());
  EXPECT_NE(va, c.normal(Shape{64}, DType::F32).to_float_vector());
}

// Every flash backward kernel has its own parity cases (ops/attention.h: AttnBwdKernel), dq, dk and dv checked
// separately; the cases build and their CPU side runs (the kernel forcing is a no-op there).
TEST(GpuParitySetup, EveryAttentionBackwardKernelHasCases) {
  int built = 0;
  for (const char* kern : {"v1", "wgmma128", "wgmma64", "wgmma-dqmma"}) {
    const std::string prefix = std::string("attention_bwd[") + kern + "]";
    int n = 0;
    for (const CaseMaker& m : all_cases(3)) {
      if (m.op.rfind(prefix, 0) != 0) continue;
      ++n;
      if (m.big || m.op != prefix + "(window)(docs)") continue;
      const Case c = m.make();
      ASSERT_EQ(c.checks.size(), 3u);
      std::vector<Tensor> t;
      for (const Tensor& x : c.init) t.push_back(x.to(Device::CPU));
      c.run(t);
      for (const auto& [idx, tol] : c.checks) {
        EXPECT_TRUE(c.names[static_cast<size_t>(idx)] == "dq" || c.names[static_cast<size_t>(idx)] == "dk" ||
                    c.names[static_cast<size_t>(idx)] == "dv");
        for (float v : t[static_cast<size_t>(idx)].to_float_vector()) ASSERT_TRUE(std::isfinite(v)) << m.op;
      }
      ++built;
    }
    EXPECT_GE(n, 10) << prefix;
  }
  EXPECT_GE(built, 4);
}

TEST(GpuParitySetup, TableAndJsonReportFailures) {
  std::vector<Result> rs = {
      Result{"add", "f32", "[7, 13]", "out", 1e-7, 2e-6, true, -1, ""},
      Result{"rope_fwd", "bf16", "[1, 5, 3, 16]", "y", std::numeric_limits<double>::infinity(), 1e-2, false, -1,
             "gpu has 3 non-finite values"}};
  const std::string table = format_table(rs);
  EXPECT_NE(table.find("FAIL"), std::string::npos);
  EXPECT_NE(table.find("gpu has 3 non-finite values"), std::string::npos);
  EXPECT_NE(table.find("2 checks, 1 passed, 1 FAILED"), std::string::npos) << table;
  const std::string json = to_json(rs, 42);
  EXPECT_NE(json.find("\"failed\": 1"), std::string::npos) << json;
  EXPECT_NE(json.find("\"inf\""), std::string::npos) << json;
}

}  // namespace
}  // namespace pgolf::ops::selftest
