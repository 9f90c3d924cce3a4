#include "cli/bench_util.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "core/stream.h"

namespace pgolf::cli::bench {

double median_ms(const Options& o, const std::function<void()>& fn, Device dev) {
  PG_CHECK(o.reps > 0 && o.warmup >= 0, "bench: --reps must be > 0 and --warmup >= 0 (got {}, {})", o.reps, o.warmup);
  for (int i = 0; i < o.warmup; ++i) fn();
  std::vector<double> ms;
  if (dev == Device::CPU) {
    for (int i = 0; i < o.reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }
  device_synchronize();
  Event start, stop;
  for (int i = 0; i < o.reps; ++i) {
    start.record();
    fn();
    stop.record();
    stop.synchronize();
    ms.push_back(stop.elapsed_ms(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Tensor random_tensor(const Shape& s, DType dt, uint64_t seed, Device dev) {
  PG_CHECK(dt == DType::BF16 || dt == DType::F32, "bench: random inputs are bf16 or f32, not {}", dtype_name(dt));
  Tensor h = Tensor::empty(s, dt, Device::CPU);
  const int64_t n = h.numel();
  bf16* pb = dt == DType::BF16 ? h.ptr<bf16>() : nullptr;
  float* pf = dt == DType::F32 ? h.ptr<float>() : nullptr;
  // Philox gives four words per counter: one counter fills four elements.
  for (int64_t i = 0; i < n; i += 4) {
    rng::U4 w = rng::bits(seed, static_cast<uint64_t>(i / 4));
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    for (int64_t j = i; j < std::min(n, i + 4); ++j) {
      float u = rng::u01(words[j - i]) * 2.f - 1.f;
      if (pb)
        pb[j] = f32_to_bf16(u);
      else
        pf[j] = u;
    }
  }
  return dev == Device::CPU ? h : h.to(dev);
}

void print_table(const std::string& title, const std::vector<Row>& rows) {
  std::printf("\n%s\n", title.c_str());
  std::printf("%-52s %10s %10s %12s  %s\n", "case", "ms", "TFLOP/s", "% of anchor", "note");
  for (const Row& r : rows) {
    std::string pct = r.anchor_tflops > 0 ? fmt::format("{:.0f}% of {:.0f}", 100 * r.tflops / r.anchor_tflops,
                                                        r.anchor_tflops)
                                          : "-";
    std::printf("%-52s %10.3f %10.1f %12s  %s\n", r.name.c_str(), r.ms, r.tflops, pct.c_str(), r.note.c_str());
  }
}

void write_json(const std::string& path, const std::string& title, const std::vector<Row>& rows) {
  nlohmann::json j;
  j["bench"] = title;
  j["rows"] = nlohmann::json::array();
  for (const Row& r : rows)
    j["rows"].push_back({{"name", r.name}, {"ms", r.ms}, {"tflops", r.tflops}, {"anchor_tflops", r.anchor_tflops},
                         {"note", r.note}});
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    PG_CHECK(f.good(), "bench: cannot write {}", tmp);
    f << j.dump(2) << "\n";
    PG_CHECK(f.good(), "bench: error writing {}", tmp);
  }
  std::filesystem::rename(tmp, path);
  std::printf("wrote %s\n", path.c_str());
}

}  // namespace pgolf::cli::bench
