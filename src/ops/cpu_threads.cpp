#include "ops/cpu_threads.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"

namespace pgolf::ops::cpu {

namespace {

thread_local bool t_in_pool_task = false;

int threads_from_env() {
  const char* env = std::getenv("PGOLF_CPU_THREADS");
  if (env && *env) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    PG_CHECK(end && *end == '\0' && v >= 1 && v <= 1024, "PGOLF_CPU_THREADS='{}': expected an integer in [1, 1024]",
             env);
    return static_cast<int>(v);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// Workers sleep on a condition variable between jobs; a job is a range split into pieces that
// the workers and the caller claim through an atomic counter, so uneven pieces balance out. A job
// ends only when every piece is done and every worker that joined it has left it, so no worker
// can touch the caller's fn after parallel_for returns.
class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int threads() const { return threads_; }

  // Returns false (without running anything) when another job holds the pool.
  bool try_run(int64_t n, int64_t pieces, const std::function<void(int64_t, int64_t)>& fn) {
    std::unique_lock<std::mutex> job_lock(job_mu_, std::try_to_lock);
    if (!job_lock.owns_lock()) return false;
    Job job{&fn, n, pieces};
    {
      std::lock_guard<std::mutex> lk(mu_);
      next_.store(0);
      pending_ = pieces;
      error_ = nullptr;
      job_ = job;
      ++generation_;
    }
    wake_.notify_all();
    run_pieces(job);
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [this] { return pending_ == 0 && joined_ == 0; });
    job_.fn = nullptr;  // late wakers find no job
    std::exception_ptr err = error_;
    error_ = nullptr;
    lk.unlock();
    if (err) std::rethrow_exception(err);
    return true;
  }

 private:
  struct Job {
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
    int64_t n = 0, pieces = 0;
  };

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (!job_.fn) continue;
        job = job_;
        ++joined_;
      }
      run_pieces(job);
      std::lock_guard<std::mutex> lk(mu_);
      if (--joined_ == 0 && pending_ == 0) done_.notify_all();
    }
  }

  // Claims pieces until none are left; piece p covers [p n / pieces, (p + 1) n / pieces).
  void run_pieces(const Job& job) {
    int64_t finished = 0;
    std::exception_ptr err;
    for (;;) {
      int64_t p = next_.fetch_add(1);
      if (p >= job.pieces) break;
      if (!err) {
        t_in_pool_task = true;
        try {
          (*job.fn)(p * job.n / job.pieces, (p + 1) * job.n / job.pieces);
        } catch (...) {
          err = std::current_exception();
        }
        t_in_pool_task = false;
      }
      ++finished;
    }
    if (finished == 0) return;
    std::lock_guard<std::mutex> lk(mu_);
    if (err && !error_) error_ = err;
    pending_ -= finished;
    if (pending_ == 0 && joined_ == 0) done_.notify_all();
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex job_mu_;  // one job at a time
  std::mutex mu_;      // guards the fields below (next_ is claimed lock-free)
  std::condition_variable wake_, done_;
  bool stop_ = false;
  uint64_t generation_ = 0;
  Job job_;
  int64_t pending_ = 0;  // pieces not yet finished
  int joined_ = 0;       // workers inside the current job
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p(threads_from_env());
  return p;
}

}  // namespace

int num_threads() { return pool().threads(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  Pool& p = pool();
  if (p.threads() == 1 || t_in_pool_task) {
    fn(0, n);
    return;
  }
  // Up to 4 pieces per thread so uneven work (causal rows) balances; each at least `grain` items.
  const int64_t pieces = std::min<int64_t>(n / grain, 4 * static_cast<int64_t>(p.threads()));
  if (pieces < 2) {
    fn(0, n);
    return;
  }
  if (!p.try_run(n, pieces, fn)) fn(0, n);
}

}  // namespace pgolf::ops::cpu
