#pragma once
// Reads several input files at once (decompression is the slowest single-threaded step: xz runs at ~50 MB/s)
// and hands out their records in batches, strictly in input order, so the encoder's output does not depend on it.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/input.h"

namespace pgolf::data {

class PrefetchReader {
 public:
  // At most `parallel` files are open at once; each keeps at most `max_queued` batches of ~batch_bytes ready.
  PrefetchReader(std::vector<std::string> files, ReaderOptions opt, int parallel, size_t batch_bytes = 1 << 20,
                 size_t max_queued = 4);
  ~PrefetchReader();
  PrefetchReader(const PrefetchReader&) = delete;
  PrefetchReader& operator=(const PrefetchReader&) = delete;

  // The next batch (records' `source` indexes the constructor's file list); false at the end. Rethrows a
  // reader's error (corrupt input) naming the file.
  bool next(std::vector<RawRecord>& batch);
  int64_t bytes_read() const { return bytes_read_.load(); }

 private:
  struct Slot {
    std::thread thread;
    std::deque<std::vector<RawRecord>> queue;
    bool done = false;
    std::exception_ptr error;
  };
  void start(size_t index);
  void produce(size_t index);

  std::vector<std::string> files_;
  ReaderOptions opt_;
  size_t parallel_, batch_bytes_, max_queued_;
  std::vector<std::unique_ptr<Slot>> slots_;
  size_t current_ = 0, started_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<int64_t> bytes_read_{0};
};

}  // namespace pgolf::data
