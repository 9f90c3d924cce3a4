#pragma once
// GPU parity self-test: every op runs on the CPU (the reference) and on the GPU from copies of the
// same random inputs, and each output is compared by
//   max relative error = max |gpu - cpu| / max(max |cpu|, tiny)
// against a tolerance chosen by the output's dtype and the kind of op. Outputs are poisoned with NaN
// before each run (accumulated outputs start from the same random values instead), so an element an
// op forgets to write fails. Used by `pgolf selftest --gpu` and tests/ops/test_gpu_parity.cpp.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace pgolf::ops::selftest {

struct Result {
  std::string op, dtype, shape, output;  // output: which tensor of the op was compared
  double max_rel_err = 0, tol = 0;
  bool pass = false;
  double gpu_ms = -1;  // < 0: not timed
  std::string note;    // where the worst element is, or why the case failed outright
};

// One parity case: named host tensors with their initial contents, the ones compared after the
// run, and a function that runs the op on a set of tensors (all on one device). Tensors an op
// reads and writes (in place, accumulated) are simply listed once and passed twice by `run`.
struct Case {
  std::string op, dtype, shape;
  std::vector<std::string> names;
  std::vector<Tensor> init;                    // host tensors
  std::vector<std::pair<int, double>> checks;  // (tensor index, tolerance)
  std::function<void(const std::vector<Tensor>&)> run;
};

// Cases are built lazily (training shapes hold hundreds of MB of inputs).
struct CaseMaker {
  std::string op;
  bool big;  // a training-shape case: timed on the GPU; skipped by quick runs
  std::function<Case()> make;
};

struct Options {
  uint64_t seed = 0;
  bool training_shapes = true;
  bool time_gpu = true;
  std::string filter;  // only cases whose op name contains this (empty: all)
};

// Every case, in order (selftest_cases_*.cpp). `seed` makes the inputs.
std::vector<CaseMaker> all_cases(uint64_t seed);
void add_elementwise_cases(std::vector<CaseMaker>& out, uint64_t seed);  // elementwise, reduce, embedding
void add_nn_cases(std::vector<CaseMaker>& out, uint64_t seed);           // rmsnorm, rope, activation, CE
void add_heavy_cases(std::vector<CaseMaker>& out, uint64_t seed);        // optim, random, matmul, attention
void add_fused_cases(std::vector<CaseMaker>& out, uint64_t seed);        // qk_prep (fused norm/rope/gain)
void add_record_cases(std::vector<CaseMaker>& out, uint64_t seed);       // xsa, smear gates, scalar mix, doc starts
void add_gdn_cases(std::vector<CaseMaker>& out, uint64_t seed);          // GatedDeltaNet chunked/recurrent, short conv
void add_residual_norm_cases(std::vector<CaseMaker>& out, uint64_t seed);  // fused residual update + RMSNorm

// Runs one case on CPU and GPU and compares; never throws (failures become FAIL results).
std::vector<Result> run_case(const Case& c, bool time_gpu);

// Runs the selected cases (needs a GPU); `progress` sees each result as it lands.
std::vector<Result> run_all(const Options& opt, const std::function<void(const Result&)>& progress = {});

// Table: op, dtype, shape, output, max rel err, tolerance, PASS/FAIL, gpu ms, note.
std::string format_table(const std::vector<Result>& results);
std::string to_json(const std::vector<Result>& results, uint64_t seed);

// Tolerances by output dtype: exact-formula elementwise ops, and fp32 reductions/transcendentals.
constexpr double kTolF32 = 2e-6, kTolF32Reduce = 5e-5, kTolBF16 = 1e-2;

// Random host inputs (a fast splitmix64 stream; values depend only on the seed and call order).
class Inputs {
 public:
  explicit Inputs(uint64_t seed) : state_(seed ^ 0x9E3779B97F4A7C15ull) {}
  Tensor normal(const Shape& s, DType dt, float std = 1.f, float mean = 0.f);
  Tensor uniform(const Shape& s, DType dt, float lo, float hi);
  Tensor ids(const Shape& s, int64_t V, double ignore_fraction = 0.0);  // i32 in [0, V), some -1
  static Tensor poison(const Shape& s, DType dt);                      // NaN everywhere
  static Tensor values(const std::vector<float>& v);                   // small f32 vector

 private:
  uint64_t state_;
  uint64_t next();
  float u01();  // (0, 1]
};

std::string dtype_label(std::initializer_list<DType> dts);  // "f32", "bf16", "bf16>f32"

}  // namespace pgolf::ops::selftest
