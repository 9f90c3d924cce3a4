#include "train/run_log.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace pgolf::train {

RunLog::RunLog(const std::string& run_dir, bool append, bool quiet)
    : quiet_(quiet), tty_(!quiet && ::isatty(STDERR_FILENO) != 0) {
  if (run_dir.empty()) return;  // a non-zero rank of a distributed run: no files
  const char* mode = append ? "a" : "w";
  log_ = std::fopen((run_dir + "/train.log").c_str(), mode);
  PG_CHECK(log_, "cannot open {}/train.log: {}", run_dir, std::strerror(errno));
  jsonl_ = std::fopen((run_dir + "/metrics.jsonl").c_str(), mode);
  PG_CHECK(jsonl_, "cannot open {}/metrics.jsonl: {}", run_dir, std::strerror(errno));
}

RunLog::~RunLog() {
  end_progress();
  if (log_) std::fclose(log_);
  if (jsonl_) std::fclose(jsonl_);
}

void RunLog::line(const std::string& text) {
  if (bar_shown_) {
    std::fprintf(stderr, "\r\033[K");
    bar_shown_ = false;
  }
  if (!quiet_) {
    std::fprintf(stdout, "%s\n", text.c_str());
    std::fflush(stdout);
  }
  if (!log_) return;
  std::fprintf(log_, "%s\n", text.c_str());
  std::fflush(log_);
}

void RunLog::event(const nlohmann::json& obj) {
  const std::string s = obj.dump();
  if (!jsonl_) return;
  std::fprintf(jsonl_, "%s\n", s.c_str());
  std::fflush(jsonl_);
}

void RunLog::progress(int64_t step, int64_t total, double frac, const std::string& tail) {
  if (!tty_) return;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(std::clamp(frac, 0.0, 1.0) * kWidth + 0.5);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  std::fprintf(stderr, "\r\033[K[%s] %3.0f%% step %lld/%lld %s", bar.c_str(), frac * 100.0, static_cast<long long>(step),
               static_cast<long long>(total), tail.c_str());
  std::fflush(stderr);
  bar_shown_ = true;
}

void RunLog::end_progress() {
  if (bar_shown_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    bar_shown_ = false;
  }
}

}  // namespace pgolf::train
