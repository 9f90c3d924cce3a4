#pragma once
// Run output: human-readable log lines (stdout and RUN_DIR/train.log), a progress bar on a
// terminal (stderr), and RUN_DIR/metrics.jsonl with one JSON object per event.
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace pgolf::train {

class RunLog {
 public:
  // append: keep earlier lines (a resumed run continues the same files). An empty run_dir writes no files
  // (non-zero ranks of a distributed run); pass quiet too to silence stdout.
  RunLog(const std::string& run_dir, bool append, bool quiet);
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  void line(const std::string& text);          // stdout + train.log
  void event(const nlohmann::json& obj);       // metrics.jsonl (flushed)
  void progress(int64_t step, int64_t total, double frac, const std::string& tail);  // TTY only
  void end_progress();

 private:
  std::FILE* log_ = nullptr;
  std::FILE* jsonl_ = nullptr;
  bool quiet_, tty_, bar_shown_ = false;
};

}  // namespace pgolf::train
