#pragma once
// A synthetic run directory shaped like what train/pack/eval write, for the report tests.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

namespace pgolf::report::test_util {

inline void write_text(const std::string& path, const std::string& s) {
  std::ofstream f(path, std::ios::binary);
  f << s;
}

// steps train events with val every 10 steps and a final; hostile text in the log and names so
// escaping is exercised end to end.
inline std::string make_synthetic_run(const std::string& name, int steps = 60, double loss_scale = 1.0) {
  namespace fs = std::filesystem;
  const std::string dir = (fs::temp_directory_path() / fmt::format("pgolf_report_{}_{}", name, ::getpid())).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string m;
  for (int s = 0; s <= steps; ++s) {
    const double t = 0.05 * s;
    if (s % 10 == 0 || s == steps)
      m += fmt::format(R"({{"type":"{}","step":{},"wallclock_s":{},"val_loss":{},"val_bpb":{},"eval_ms":12.5}})",
                       s == steps ? "final" : "val", s, t, loss_scale * (4.0 + 3.0 / (1 + s)), loss_scale * (1.6 + 1.0 / (1 + s))) + "\n";
    if (s == steps) break;
    const double lr = s < steps - 20 ? 1.0 : (steps - s) / 20.0;
    m += fmt::format(R"({{"type":"train","step":{},"wallclock_s":{},"train_loss":{},"lr_mult":{},"step_ms":{},"tokens_per_s":{},"gpu_mem_gib":{}}})",
                     s + 1, t + 0.05, loss_scale * (4.0 + 5.0 / (1 + s) + 0.1 * std::sin(s)), lr, 50.0 + (s % 7),
                     524288.0 / 0.05, 20.0 + 0.01 * s) + "\n";
  }
  m += R"({"type":"checkpoint","step":30,"wallclock_s":1.5,"why":"periodic"})" "\n";
  m += fmt::format(R"({{"type":"summary","step":{},"wallclock_s":{},"val_loss":4.05,"val_bpb":1.62,"tokens_per_s":1.0e7,"int8_zlib_bytes":15000000,"int8_val_loss":4.07,"int8_val_bpb":1.63,"peak_gpu_bytes":21474836480,"n_params":17000000,"mfu":0.41,"peak_flops":9.89e14}})",
                   steps, 0.05 * steps) + "\n";
  write_text(dir + "/metrics.jsonl", m);
  write_text(dir + "/config.toml",
             "[optim]\nmuon_momentum = 0.95\nmuon_momentum_warmup_start = 0.85\nmuon_momentum_warmup_steps = 20\n"
             "[data]\ntokenizer = \"<script>alert('x')</script>\"\n");
  write_text(dir + "/train.log", "step:1/60 train_loss:9.0\n<b>not bold</b> & done\n");
  std::string tensors;
  const char* groups[] = {"attn.c_q.weight", "attn.c_v.weight", "mlp.fc.weight", "mlp.proj.weight"};
  for (int l = 0; l < 4; ++l)
    for (int g = 0; g < 4; ++g)
      tensors += fmt::format(R"({}{{"name":"blocks.{}.{}","bits":{},"bytes":{},"compressor":"{}","rel_error":{},"proxy_error":{}}})",
                             tensors.empty() ? "" : ",", l, groups[g], g < 2 ? 6 : 5, 300000 + 50000 * g,
                             g % 2 ? "brotli" : "zstd", 0.01 * (1 + l) * (1 + g), 0.02 * (1 + g) / (1 + l));
  tensors += R"(,{"name":"tok_emb.weight","bits":8,"bytes":1200000,"compressor":"lzma","rel_error":0.004})";
  write_text(dir + "/pack.json", fmt::format(R"({{"total_bytes":15800000,"code_bytes":60000,"limit_bytes":16000000,"tensors":[{}]}})", tensors));
  write_text(dir + "/eval.json",
             R"({"val_loss":4.01,"val_bpb":1.601,"scored_tokens":62021632,"partial":false,)"
             R"("phases":[{"name":"load","seconds":0.8},{"name":"sliding window","seconds":41.5},{"name":"ttt","ms":120000}]})");
  return dir;
}

}  // namespace pgolf::report::test_util
