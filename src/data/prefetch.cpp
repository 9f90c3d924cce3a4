#include "data/prefetch.h"

namespace pgolf::data {

PrefetchReader::PrefetchReader(std::vector<std::string> files, ReaderOptions opt, int parallel, size_t batch_bytes,
                               size_t max_queued)
    : files_(std::move(files)),
      opt_(std::move(opt)),
      parallel_(static_cast<size_t>(std::max(parallel, 1))),
      batch_bytes_(batch_bytes),
      max_queued_(std::max<size_t>(max_queued, 1)) {
  slots_.resize(files_.size());
  while (started_ < files_.size() && started_ < parallel_) start(started_++);
}

PrefetchReader::~PrefetchReader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& s : slots_)
    if (s && s->thread.joinable()) s->thread.join();
}

void PrefetchReader::start(size_t index) {
  slots_[index] = std::make_unique<Slot>();
  slots_[index]->thread = std::thread([this, index] { produce(index); });
}

void PrefetchReader::produce(size_t index) {
  Slot& slot = *slots_[index];
  try {
    RecordReader reader({files_[index]}, opt_);
    int64_t reported = 0;
    bool more = true;
    while (more) {
      std::vector<RawRecord> batch;
      size_t bytes = 0;
      RawRecord rec;
      while (bytes < batch_bytes_ && (more = reader.next(rec))) {
        rec.source = static_cast<uint32_t>(index);
        bytes += rec.data.size();
        batch.push_back(std::move(rec));
      }
      bytes_read_ += reader.bytes_read() - reported;
      reported = reader.bytes_read();
      if (batch.empty()) break;
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || slot.queue.size() < max_queued_; });
      if (stop_) return;
      slot.queue.push_back(std::move(batch));
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lk(mu_);
    slot.error = std::current_exception();
  }
  std::lock_guard<std::mutex> lk(mu_);
  slot.done = true;
  cv_.notify_all();
}

bool PrefetchReader::next(std::vector<RawRecord>& batch) {
  for (;;) {
    if (current_ >= files_.size()) return false;
    Slot& slot = *slots_[current_];
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return !slot.queue.empty() || slot.done; });
    if (!slot.queue.empty()) {
      batch = std::move(slot.queue.front());
      slot.queue.pop_front();
      cv_.notify_all();
      return true;
    }
    if (slot.error) std::rethrow_exception(slot.error);
    lk.unlock();
    slot.thread.join();
    ++current_;
    if (started_ < files_.size()) start(started_++);
  }
}

}  // namespace pgolf::data
