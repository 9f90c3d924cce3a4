// pgolf selftest: CPU/GPU parity of every op (src/ops/selftest.h).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/memory.h"
#include "ops/selftest.h"

namespace pgolf::cli {

namespace {

struct SelftestArgs {
  bool gpu = false;
  bool quick = false;
  bool no_timing = false;
  int64_t seed = -1;
  std::string json;
  std::string filter;
};

// Temp file + rename, so a reader never sees half a report.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    PG_CHECK(f.good(), "selftest: cannot open {} for writing", tmp);
    f << text << '\n';
    f.flush();
    PG_CHECK(f.good(), "selftest: writing {} failed", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  PG_CHECK(!ec, "selftest: renaming {} to {} failed: {}", tmp, path, ec.message());
}

void run_selftest(const SelftestArgs& a) {
  if (!a.gpu) {
    std::printf("selftest: GPU parity skipped (pass --gpu to compare every op's CUDA kernel with the CPU reference)\n");
    return;
  }
  if (!cuda_available()) {
    std::printf("selftest: GPU parity skipped: %s\n",
#if PGOLF_CUDA
                "no CUDA device is visible");
#else
                "this pgolf was built without CUDA");
#endif
    PG_FAIL("selftest --gpu: no GPU to test");
  }
  ops::selftest::Options opt;
  opt.seed = a.seed >= 0 ? static_cast<uint64_t>(a.seed)
                         : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  opt.training_shapes = !a.quick;
  opt.time_gpu = !a.no_timing;
  opt.filter = a.filter;
  std::printf("selftest: GPU parity, seed %llu%s%s\n", static_cast<unsigned long long>(opt.seed),
              a.quick ? " (quick: small shapes only)" : " (small and training shapes)",
              a.filter.empty() ? "" : (", filter '" + a.filter + "'").c_str());
  std::fflush(stdout);
  const auto results = ops::selftest::run_all(opt, [](const ops::selftest::Result& r) {
    std::printf("  %-4s %-26s %-10s %-22s %-9s err %.3e (tol %.1e)%s%s\n", r.pass ? "ok" : "FAIL", r.op.c_str(),
                r.dtype.c_str(), r.shape.c_str(), r.output.c_str(), r.max_rel_err, r.tol, r.pass ? "" : "  ",
                r.pass ? "" : r.note.c_str());
    std::fflush(stdout);
  });
  if (!a.json.empty()) write_atomically(a.json, ops::selftest::to_json(results, opt.seed));
  std::printf("\n%s", ops::selftest::format_table(results).c_str());
  size_t fails = 0;
  for (const auto& r : results) fails += r.pass ? 0 : 1;
  PG_CHECK(!results.empty(), "selftest: no case matched filter '{}'", a.filter);
  PG_CHECK(fails == 0, "selftest: {} of {} checks FAILED (rerun with --seed {} to reproduce)", fails, results.size(),
           opt.seed);
  std::printf("selftest: all %zu checks passed\n", results.size());
}

}  // namespace

void add_selftest_command(CLI::App& app) {
  auto args = std::make_shared<SelftestArgs>();
  auto* sub = app.add_subcommand("selftest", "Check every op's CUDA kernel against the CPU reference (GPU parity)");
  sub->add_flag("--gpu", args->gpu, "Run the GPU parity checks (needs a CUDA device)");
  sub->add_option("--seed", args->seed, "Input seed (default: random; printed so a failure can be reproduced)");
  sub->add_option("--json", args->json, "Also write the results as JSON to this file");
  sub->add_flag("--quick", args->quick, "Small shapes only (skip the training-step shapes)");
  sub->add_option("--filter", args->filter, "Only ops whose name contains this string");
  sub->add_flag("--no-timing", args->no_timing, "Do not time the GPU kernels on training shapes");
  sub->callback([args] { run_selftest(*args); });
}

}  // namespace pgolf::cli
