#include "data/encode.h"

#include <sentencepiece_processor.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/doc_encoder.h"
#include "data/file_util.h"
#include "data/prefetch.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace pgolf::data {

namespace {

using Clock = std::chrono::steady_clock;

std::string shard_name(const std::string& prefix, const std::string& split, size_t index) {
  return fmt::format("{}_{}_{:06d}.bin", prefix, split, index);
}

// Appends tokens to consecutive shards of at most max_tokens, each written atomically.
class ShardSink {
 public:
  ShardSink(std::string dir, std::string prefix, std::string split, int64_t max_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), split_(std::move(split)), max_(max_tokens) {}

  void append(const uint16_t* p, int64_t n) {
    while (n > 0) {
      if (!cur_) open();
      const int64_t k = std::min(n, max_ - cur_tokens_);
      cur_->write(p, static_cast<size_t>(k) * 2);
      cur_tokens_ += k;
      p += k;
      n -= k;
      if (cur_tokens_ == max_) close();
    }
  }
  void finish() {
    if (cur_) close();
  }
  std::vector<ShardRecord> shards;

 private:
  void open() {
    const std::string name = shard_name(prefix_, split_, shards.size());
    cur_ = std::make_unique<AtomicFile>((std::filesystem::path(dir_) / name).string());
    const int32_t zero_header[kShardHeaderInts] = {};
    cur_->write(zero_header, sizeof zero_header);  // patched with the real header in close()
    cur_tokens_ = 0;
    shards.push_back(ShardRecord{name, 0, ""});
  }
  void close() {
    int32_t header[3] = {kShardMagic, kShardVersion, static_cast<int32_t>(cur_tokens_)};
    cur_->pwrite_at(0, header, sizeof header);
    cur_->commit();
    shards.back().tokens = cur_tokens_;
    shards.back().sha256 = sha256_file(cur_->path());
    cur_.reset();
  }

  std::string dir_, prefix_, split_;
  int64_t max_;
  std::unique_ptr<AtomicFile> cur_;
  int64_t cur_tokens_ = 0;
};

struct DocOut {
  DocStatus status = DocStatus::Ok;
  std::string error;
  std::vector<uint16_t> ids;  // BOS + document tokens
  int64_t bytes = 0;
  uint32_t source = 0;
};

struct Batch {
  uint64_t seq = 0;
  std::vector<RawRecord> records;
  std::vector<DocOut> docs;
};

// State shared by the reader (caller's thread), the workers and the writer.
struct Pipeline {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Batch>> todo;
  std::map<uint64_t, std::unique_ptr<Batch>> done;
  uint64_t next_write = 0;
  uint64_t batches_read = 0;
  bool reader_done = false;
  bool stop = false;  // set on error or when max_docs is reached
  std::exception_ptr error;

  void fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> lk(mu);
    if (!error) error = e;
    stop = true;
    cv.notify_all();
  }
};

void encode_batch(Batch& b, DocEncoder& enc, const std::vector<std::string>& sources, const std::string& field,
                  int bos) {
  b.docs.resize(b.records.size());
  for (size_t i = 0; i < b.records.size(); ++i) {
    DocOut& d = b.docs[i];
    d.source = b.records[i].source;
    ExtractedDoc ex = extract_document(std::move(b.records[i]), sources[d.source], field);
    d.status = ex.status;
    if (ex.status != DocStatus::Ok) {
      d.error = std::move(ex.error);
      continue;
    }
    d.bytes = static_cast<int64_t>(ex.text.size());
    d.ids.push_back(static_cast<uint16_t>(bos));
    enc.encode(ex.text, d.ids, sources[d.source]);
  }
  b.records.clear();
  b.records.shrink_to_fit();
}

nlohmann::ordered_json split_json(const SplitSummary& s) {
  nlohmann::ordered_json j;
  j["documents"] = s.documents;
  j["tokens"] = s.tokens;
  j["bytes"] = s.bytes;
  j["shards"] = nlohmann::ordered_json::array();
  for (const auto& sh : s.shards) j["shards"].push_back({{"file", sh.file}, {"tokens", sh.tokens}, {"sha256", sh.sha256}});
  return j;
}

// Removes <prefix>_<split>_NNNNNN.bin left over from an earlier, larger run so globs see only this run's shards.
void remove_stale_shards(const std::string& dir, const std::string& prefix, const std::string& split, size_t keep) {
  for (size_t i = keep;; ++i) {
    std::filesystem::path p = std::filesystem::path(dir) / shard_name(prefix, split, i);
    std::error_code ec;
    if (!std::filesystem::remove(p, ec)) break;
  }
}

}  // namespace

EncodeSummary encode_corpus(const EncodeOptions& opt) {
  PG_CHECK(!opt.inputs.empty() || !opt.val_inputs.empty(), "data encode: no inputs");
  PG_CHECK(opt.val_inputs.empty() || opt.val_docs == 0, "data encode: give either --val inputs or --val-docs, not both");
  PG_CHECK(opt.shard_tokens >= 1 && opt.shard_tokens <= INT32_MAX, "data encode: --shard-tokens {} out of range",
           opt.shard_tokens);
  PG_CHECK(!opt.out_dir.empty(), "data encode: no output folder");
  const auto t0 = Clock::now();
  auto sp = load_tokenizer(opt.tokenizer);
  const int bos = sp->bos_id();
  PG_CHECK(bos >= 0, "tokenizer {} has no BOS piece (documents are prefixed with BOS)", opt.tokenizer);
  std::filesystem::create_directories(opt.out_dir);

  std::vector<std::string> files = expand_inputs(opt.val_inputs, opt.reader.format);
  const size_t n_val_files = files.size();
  if (!opt.inputs.empty()) {
    auto train_files = expand_inputs(opt.inputs, opt.reader.format);
    files.insert(files.end(), train_files.begin(), train_files.end());
  }
  const int threads = opt.threads > 0 ? opt.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Decompression threads beyond the workers: files are read concurrently but consumed in order. Each may read
  // up to 32 MB ahead so that a large file late in the list is already decompressed when its turn comes
  // (memory bound: threads/2 files x 32 MB).
  PrefetchReader reader(files, opt.reader, std::max(1, threads / 2), 1 << 20, 32);

  EncodeSummary sum;
  ShardSink train_sink(opt.out_dir, opt.prefix, "train", opt.shard_tokens);
  ShardSink val_sink(opt.out_dir, opt.prefix, "val", opt.shard_tokens);
  Pipeline pl;
  const uint64_t max_inflight = static_cast<uint64_t>(threads) * 4;
  std::atomic<int64_t> progress_docs{0};

  auto worker = [&] {
    try {
      DocEncoder enc(*sp, !opt.whole_documents);
      for (;;) {
        std::unique_ptr<Batch> b;
        {
          std::unique_lock<std::mutex> lk(pl.mu);
          pl.cv.wait(lk, [&] { return pl.stop || !pl.todo.empty() || pl.reader_done; });
          if (pl.stop || (pl.todo.empty() && pl.reader_done)) return;
          b = std::move(pl.todo.front());
          pl.todo.pop_front();
        }
        encode_batch(*b, enc, files, opt.reader.field, bos);
        std::lock_guard<std::mutex> lk(pl.mu);
        pl.done.emplace(b->seq, std::move(b));
        pl.cv.notify_all();
      }
    } catch (...) {
      pl.fail(std::current_exception());
    }
  };

  const bool tty_progress = opt.progress;
  auto writer = [&] {
    try {
      int64_t accepted = 0;
      auto last_print = Clock::now();
      for (;;) {
        std::unique_ptr<Batch> b;
        {
          std::unique_lock<std::mutex> lk(pl.mu);
          pl.cv.wait(lk, [&] {
            return pl.stop || pl.done.count(pl.next_write) || (pl.reader_done && pl.next_write == pl.batches_read);
          });
          if (pl.stop) return;
          auto it = pl.done.find(pl.next_write);
          if (it == pl.done.end()) return;  // reader finished and every batch is written
          b = std::move(it->second);
          pl.done.erase(it);
          ++pl.next_write;
          pl.cv.notify_all();  // the reader may be waiting for room
        }
        for (DocOut& d : b->docs) {
          if (d.status != DocStatus::Ok) {
            PG_CHECK(opt.skip_bad, "{} (use --skip-bad to skip and count such documents)", d.error);
            ++sum.skipped[doc_status_name(d.status)];
            continue;
          }
          const bool to_val = opt.val_inputs.empty() ? accepted < opt.val_docs : d.source < n_val_files;
          SplitSummary& split = to_val ? sum.val : sum.train;
          (to_val ? val_sink : train_sink).append(d.ids.data(), static_cast<int64_t>(d.ids.size()));
          split.documents += 1;
          split.tokens += static_cast<int64_t>(d.ids.size());
          split.bytes += d.bytes;
          ++accepted;
          if (opt.max_docs >= 0 && accepted >= opt.max_docs) {
            std::lock_guard<std::mutex> lk(pl.mu);
            pl.stop = true;  // not an error: the reader and workers just stop early
            pl.cv.notify_all();
            return;
          }
        }
        progress_docs = accepted;
        if (tty_progress && Clock::now() - last_print > std::chrono::milliseconds(250)) {
          last_print = Clock::now();
          const double s = std::chrono::duration<double>(last_print - t0).count();
          const double mb = static_cast<double>(sum.train.bytes + sum.val.bytes) / 1e6;
          std::fprintf(stderr, "\r%lld docs  %.0f docs/s  %.1f MB  %.1f MB/s   ", static_cast<long long>(accepted),
                       static_cast<double>(accepted) / s, mb, mb / s);
          std::fflush(stderr);
        }
      }
    } catch (...) {
      pl.fail(std::current_exception());
    }
  };

  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(worker);
  std::thread writer_thread(writer);

  // Reader: the caller's thread takes batches of ~1 MB in input order from the prefetching file readers.
  try {
    std::vector<RawRecord> records;
    while (reader.next(records)) {
      auto b = std::make_unique<Batch>();
      b->records = std::move(records);
      std::unique_lock<std::mutex> lk(pl.mu);
      pl.cv.wait(lk, [&] { return pl.stop || pl.batches_read - pl.next_write < max_inflight; });
      if (pl.stop) break;
      b->seq = pl.batches_read++;
      pl.todo.push_back(std::move(b));
      pl.cv.notify_all();
    }
  } catch (...) {
    pl.fail(std::current_exception());
  }
  {
    std::lock_guard<std::mutex> lk(pl.mu);
    pl.reader_done = true;
    pl.cv.notify_all();
  }
  for (auto& t : pool) t.join();
  writer_thread.join();
  if (tty_progress) std::fprintf(stderr, "\n");
  if (pl.error) std::rethrow_exception(pl.error);

  train_sink.finish();
  val_sink.finish();
  sum.train.shards = train_sink.shards;
  sum.val.shards = val_sink.shards;
  remove_stale_shards(opt.out_dir, opt.prefix, "train", sum.train.shards.size());
  remove_stale_shards(opt.out_dir, opt.prefix, "val", sum.val.shards.size());
  sum.input_bytes = reader.bytes_read();

  nlohmann::ordered_json m;
  m["format"] = "pgolf-shards-1";
  m["tokenizer"] = {{"path", opt.tokenizer},
                    {"sha256", sha256_file(opt.tokenizer)},
                    {"vocab_size", sp->GetPieceSize()},
                    {"bos_id", bos}};
  m["prefix"] = opt.prefix;
  m["shard_tokens"] = opt.shard_tokens;
  m["inputs"] = files;
  m["val"] = split_json(sum.val);
  m["train"] = split_json(sum.train);
  m["skipped"] = sum.skipped;
  sum.manifest_path = (std::filesystem::path(opt.out_dir) / (opt.prefix + "_manifest.json")).string();
  write_file_atomic(sum.manifest_path, m.dump(2) + "\n");
  sum.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return sum;
}

}  // namespace pgolf::data
