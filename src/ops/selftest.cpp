#include "ops/selftest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/memory.h"
#include "core/stream.h"

namespace pgolf::ops::selftest {

// ---- inputs ----------------------------------------------------------------------------------
uint64_t Inputs::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float Inputs::u01() { return (static_cast<float>(next() >> 40) + 1.f) * (1.f / 16777216.f); }

namespace {

Tensor from_floats(const std::vector<float>& v, const Shape& s, DType dt) {
  Tensor t = Tensor::empty(s, dt, Device::CPU);
  const size_t n = v.size();
  switch (dt) {
    case DType::F32: std::memcpy(t.data(), v.data(), n * sizeof(float)); break;
    case DType::BF16: {
      bf16* p = static_cast<bf16*>(t.data());
      for (size_t i = 0; i < n; ++i) p[i] = f32_to_bf16(v[i]);
      break;
    }
    case DType::F16: {
      uint16_t* p = static_cast<uint16_t*>(t.data());
      for (size_t i = 0; i < n; ++i) p[i] = f32_to_f16_bits(v[i]);
      break;
    }
    default: PG_FAIL("selftest: cannot make random {} values", dtype_name(dt));
  }
  return t;
}

}  // namespace

Tensor Inputs::normal(const Shape& s, DType dt, float std, float mean) {
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < v.size(); i += 2) {
    const float r = std::sqrt(-2.f * std::log(u01())), a = 6.2831853f * u01();
    v[i] = mean + std * r * std::cos(a);
    if (i + 1 < v.size()) v[i + 1] = mean + std * r * std::sin(a);
  }
  return from_floats(v, s, dt);
}

Tensor Inputs::uniform(const Shape& s, DType dt, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (float& x : v) x = lo + (hi - lo) * (u01() - 1.f / 16777216.f);
  return from_floats(v, s, dt);
}

Tensor Inputs::ids(const Shape& s, int64_t V, double ignore_fraction) {
  std::vector<int32_t> v(static_cast<size_t>(s.numel()));
  for (int32_t& x : v) {
    x = static_cast<int32_t>(next() % static_cast<uint64_t>(V));
    if (ignore_fraction > 0 && u01() <= ignore_fraction) x = -1;
  }
  return Tensor::from_vector(v, s);
}

Tensor Inputs::poison(const Shape& s, DType dt) {
  return from_floats(std::vector<float>(static_cast<size_t>(s.numel()), std::numeric_limits<float>::quiet_NaN()), s,
                     dt);
}

Tensor Inputs::values(const std::vector<float>& v) {
  return Tensor::from_vector(v, Shape{static_cast<int64_t>(v.size())});
}

std::string dtype_label(std::initializer_list<DType> dts) {
  std::string s;
  for (DType d : dts) s += (s.empty() ? "" : ">") + std::string(dtype_name(d));
  return s;
}

// ---- running and comparing -------------------------------------------------------------------
namespace {

// Compares one output; the note names the worst element so a failure can be chased directly.
Result compare(const Case& c, int idx, double tol, const Tensor& cpu, const Tensor& gpu) {
  Result r{c.op, c.dtype, c.shape, c.names[static_cast<size_t>(idx)], 0, tol, false, -1, ""};
  const std::vector<float> a = cpu.to_float_vector(), b = gpu.to_float_vector();
  double ref = 0, worst = -1;
  size_t worst_i = 0, cpu_nan = 0, gpu_nan = 0, first_cpu_nan = 0, first_gpu_nan = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) {
      if (cpu_nan++ == 0) first_cpu_nan = i;
      continue;
    }
    ref = std::max(ref, static_cast<double>(std::fabs(a[i])));
    if (!std::isfinite(b[i])) {
      if (gpu_nan++ == 0) first_gpu_nan = i;
      continue;
    }
    const double d = std::fabs(static_cast<double>(b[i]) - a[i]);
    if (d > worst) {
      worst = d;
      worst_i = i;
    }
  }
  const double denom = std::max(ref, 1e-30);
  if (cpu_nan > 0) {
    r.max_rel_err = std::numeric_limits<double>::infinity();
    r.note = fmt::format("cpu reference has {} non-finite values (first at [{}])", cpu_nan, first_cpu_nan);
  } else if (gpu_nan > 0) {
    r.max_rel_err = std::numeric_limits<double>::infinity();
    r.note = fmt::format("gpu has {} non-finite values (first at [{}], cpu {:.6g}): unwritten or overflow", gpu_nan,
                         first_gpu_nan, a[first_gpu_nan]);
  } else {
    r.max_rel_err = worst < 0 ? 0 : worst / denom;
    if (worst >= 0 && !a.empty())
      r.note = fmt::format("worst [{}] cpu {:.7g} gpu {:.7g}; max|cpu| {:.4g}", worst_i, a[worst_i], b[worst_i], ref);
  }
  r.pass = r.max_rel_err <= tol;
  return r;
}

std::vector<Result> fail_all(const Case& c, const std::string& why) {
  std::vector<Result> out;
  for (const auto& [idx, tol] : c.checks)
    out.push_back(Result{c.op, c.dtype, c.shape, c.names[static_cast<size_t>(idx)],
                         std::numeric_limits<double>::infinity(), tol, false, -1, why});
  if (out.empty()) out.push_back(Result{c.op, c.dtype, c.shape, "-", 0, 0, false, -1, why});
  return out;
}

double time_gpu_ms(const Case& c, const std::vector<Tensor>& gpu) {
  constexpr int kReps = 5;
  c.run(gpu);  // warm-up
  Event start, stop;
  std::vector<float> ms;
  for (int i = 0; i < kReps; ++i) {
    start.record();
    c.run(gpu);
    stop.record();
    stop.synchronize();
    ms.push_back(stop.elapsed_ms(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[kReps / 2];
}

}  // namespace

std::vector<Result> run_case(const Case& c, bool time_gpu) {
  std::vector<Tensor> cpu, gpu;
  try {
    for (const Tensor& t : c.init) {
      cpu.push_back(t.to(Device::CPU));
      gpu.push_back(t.to(Device::CUDA));
    }
  } catch (const std::exception& e) {
    return fail_all(c, std::string("setup failed: ") + e.what());
  }
  try {
    c.run(cpu);
  } catch (const std::exception& e) {
    return fail_all(c, std::string("cpu op threw: ") + e.what());
  }
  try {
    c.run(gpu);
    device_synchronize();
  } catch (const std::exception& e) {
    return fail_all(c, std::string("gpu op threw: ") + e.what());
  }
  std::vector<Result> out;
  try {
    for (const auto& [idx, tol] : c.checks)
      out.push_back(compare(c, idx, tol, cpu[static_cast<size_t>(idx)], gpu[static_cast<size_t>(idx)]));
    if (time_gpu && !out.empty()) out.front().gpu_ms = time_gpu_ms(c, gpu);
  } catch (const std::exception& e) {
    return fail_all(c, std::string("reading back / timing failed: ") + e.what());
  }
  return out;
}

std::vector<CaseMaker> all_cases(uint64_t seed) {
  std::vector<CaseMaker> out;
  add_elementwise_cases(out, seed);
  add_nn_cases(out, seed + 1);
  add_heavy_cases(out, seed + 2);
  add_fused_cases(out, seed + 3);
  add_record_cases(out, seed + 4);
  add_gdn_cases(out, seed + 5);
  add_residual_norm_cases(out, seed + 6);
  return out;
}

std::vector<Result> run_all(const Options& opt, const std::function<void(const Result&)>& progress) {
  PG_CHECK(cuda_available(), "selftest: GPU parity needs a CUDA device (none found, or built without CUDA)");
  std::vector<Result> all;
  for (const CaseMaker& m : all_cases(opt.seed)) {
    if (m.big && !opt.training_shapes) continue;
    if (!opt.filter.empty() && m.op.find(opt.filter) == std::string::npos) continue;
    std::vector<Result> rs;
    try {
      rs = run_case(m.make(), opt.time_gpu && m.big);
    } catch (const std::exception& e) {
      rs = {Result{m.op, "?", "?", "-", 0, 0, false, -1, std::string("building the case failed: ") + e.what()}};
    }
    for (const Result& r : rs) {
      if (progress) progress(r);
      all.push_back(r);
    }
  }
  return all;
}

std::string format_table(const std::vector<Result>& results) {
  std::string s = fmt::format("{:<24} {:<10} {:<22} {:<8} {:>11} {:>9} {:<4} {:>9}  {}\n", "op", "dtype", "shape",
                              "output", "max_rel_err", "tol", "ok", "gpu_ms", "note");
  int fails = 0;
  for (const Result& r : results) {
    fails += r.pass ? 0 : 1;
    s += fmt::format("{:<24} {:<10} {:<22} {:<8} {:>11.3e} {:>9.1e} {:<4} {:>9}  {}\n", r.op, r.dtype, r.shape,
                     r.output, r.max_rel_err, r.tol, r.pass ? "PASS" : "FAIL",
                     r.gpu_ms < 0 ? std::string("-") : fmt::format("{:.3f}", r.gpu_ms), r.pass ? "" : r.note);
  }
  s += fmt::format("{} checks, {} passed, {} FAILED\n", results.size(), results.size() - static_cast<size_t>(fails),
                   fails);
  return s;
}

std::string to_json(const std::vector<Result>& results, uint64_t seed) {
  nlohmann::json j;
  j["seed"] = seed;
  int fails = 0;
  auto& arr = j["results"] = nlohmann::json::array();
  for (const Result& r : results) {
    fails += r.pass ? 0 : 1;
    arr.push_back({{"op", r.op}, {"dtype", r.dtype}, {"shape", r.shape}, {"output", r.output},
                   {"max_rel_err", std::isfinite(r.max_rel_err) ? nlohmann::json(r.max_rel_err) : nlohmann::json("inf")},
                   {"tol", r.tol}, {"pass", r.pass}, {"gpu_ms", r.gpu_ms}, {"note", r.note}});
  }
  j["checks"] = results.size();
  j["failed"] = fails;
  return j.dump(2);
}

}  // namespace pgolf::ops::selftest
