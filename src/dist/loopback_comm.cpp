#include "dist/loopback_comm.h"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "core/error.h"

namespace pgolf::dist {

// One collective at a time: every rank posts its input, the last to arrive computes the result from all inputs
// (still untouched, since their owners are waiting), then every rank copies out its part and departs; the next
// collective starts only when all have departed, so `result` is never overwritten while being read.
class LoopbackHub {
 public:
  using Compute = std::function<void(const std::vector<const void*>& inputs, std::vector<std::byte>& result)>;
  using Read = std::function<void(const std::vector<std::byte>& result)>;

  LoopbackHub(int world, double timeout_s)
      : world_(world), timeout_s_(timeout_s), inputs_(static_cast<size_t>(world)), ops_(static_cast<size_t>(world)),
        bytes_(static_cast<size_t>(world)), arrived_flag_(static_cast<size_t>(world)) {}

  int world() const { return world_; }
  double timeout_s() const { return timeout_s_; }

  void collective(int rank, const std::string& op, const void* input, size_t bytes, const Compute& compute,
                  const Read& read) {
    std::unique_lock<std::mutex> lk(m_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout_s_));
    wait(lk, deadline, rank, op, [&] { return !departing_; });
    const uint64_t gen = gen_;
    inputs_[static_cast<size_t>(rank)] = input;
    ops_[static_cast<size_t>(rank)] = op;
    bytes_[static_cast<size_t>(rank)] = bytes;
    arrived_flag_[static_cast<size_t>(rank)] = 1;
    if (++arrived_ == world_) {
      for (int r = 1; r < world_; ++r) {
        if (ops_[static_cast<size_t>(r)] != ops_[0] || bytes_[static_cast<size_t>(r)] != bytes_[0]) {
          abort_locked(fmt::format("collective mismatch: rank 0 called {} with {} bytes but rank {} called {} with {} "
                                   "bytes (ranks must make the same calls in the same order)",
                                   ops_[0], bytes_[0], r, ops_[static_cast<size_t>(r)], bytes_[static_cast<size_t>(r)]));
          PG_FAIL("loopback comm rank {}: {}", rank, abort_msg_);
        }
      }
      compute(inputs_, result_);
      departing_ = true;
      cv_.notify_all();
    } else {
      wait(lk, deadline, rank, op, [&] { return departing_ && gen_ == gen; });
    }
    read(result_);
    if (++departed_ == world_) {
      arrived_ = departed_ = 0;
      std::fill(arrived_flag_.begin(), arrived_flag_.end(), 0);
      departing_ = false;
      ++gen_;
      cv_.notify_all();
    }
  }

  void abort(const std::string& msg) {
    std::lock_guard<std::mutex> lk(m_);
    abort_locked(msg);
  }

 private:
  template <class Pred>
  void wait(std::unique_lock<std::mutex>& lk, std::chrono::steady_clock::time_point deadline, int rank,
            const std::string& op, Pred ready) {
    while (!ready()) {
      PG_CHECK(abort_msg_.empty(), "loopback comm rank {} in {}: aborted: {}", rank, op, abort_msg_);
      if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && !ready() && abort_msg_.empty()) {
        std::string missing;
        for (int r = 0; r < world_; ++r)
          if (!arrived_flag_[static_cast<size_t>(r)]) missing += fmt::format("{}{}", missing.empty() ? "" : ", ", r);
        const std::string msg = fmt::format("rank {} waited {:.1f} s in {} for rank(s) {} that never arrived (did a "
                                            "rank die or take a different path?)",
                                            rank, timeout_s_, op, missing.empty() ? "?" : missing);
        abort_locked(msg);
        PG_FAIL("loopback comm: {}", msg);
      }
    }
    PG_CHECK(abort_msg_.empty(), "loopback comm rank {} in {}: aborted: {}", rank, op, abort_msg_);
  }

  void abort_locked(const std::string& msg) {
    if (abort_msg_.empty()) abort_msg_ = msg;
    cv_.notify_all();
  }

  const int world_;
  const double timeout_s_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<const void*> inputs_;
  std::vector<std::string> ops_;
  std::vector<size_t> bytes_;
  std::vector<char> arrived_flag_;
  std::vector<std::byte> result_;
  int arrived_ = 0, departed_ = 0;
  bool departing_ = false;
  uint64_t gen_ = 0;
  std::string abort_msg_;
};

namespace {

void check_cpu(const Tensor& t, const char* op, const char* arg) {
  PG_CHECK(t.defined() && t.device() == Device::CPU, "loopback {}: {} {} must be a CPU tensor", op, arg, t.desc());
}
void check_f32(const Tensor& t, const char* op, const char* arg) {
  check_cpu(t, op, arg);
  PG_CHECK(t.dtype() == DType::F32, "loopback {}: {} {} must be f32", op, arg, t.desc());
}

// Sums f32 arrays into `out` in the given order: out = ((start + in_0) + in_1) + ...
void sum_in_order(const float* start, const std::vector<const float*>& ins, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    float acc = start ? start[i] : ins[0][i];
    for (size_t r = start ? 0 : 1; r < ins.size(); ++r) acc += ins[r][i];
    out[i] = acc;
  }
}

class LoopbackComm final : public Communicator {
 public:
  LoopbackComm(std::shared_ptr<LoopbackHub> hub, int rank) : hub_(std::move(hub)), rank_(rank) {}
  int rank() const override { return rank_; }
  int world() const override { return hub_->world(); }
  std::string name() const override { return "loopback"; }
  double timeout_s() const override { return hub_->timeout_s(); }

  void all_reduce_sum(const Tensor& buf) override {
    check_f32(buf, "all_reduce_sum", "buf");
    const size_t n = static_cast<size_t>(buf.numel());
    hub_->collective(
        rank_, "all_reduce_sum", buf.data(), buf.nbytes(),
        [n](const std::vector<const void*>& in, std::vector<std::byte>& res) {
          res.resize(n * sizeof(float));
          sum_in_order(nullptr, as_floats(in), n, reinterpret_cast<float*>(res.data()));
        },
        [&](const std::vector<std::byte>& res) { std::memcpy(buf.data(), res.data(), buf.nbytes()); });
  }

  void reduce_sum_async(const Tensor& buf, int root) override {
    check_f32(buf, "reduce_sum_async", "buf");
    PG_CHECK(root >= 0 && root < world(), "loopback reduce_sum_async: root {} outside [0, {})", root, world());
    const size_t n = static_cast<size_t>(buf.numel());
    hub_->collective(
        rank_, fmt::format("reduce_sum(root {})", root), buf.data(), buf.nbytes(),
        [n](const std::vector<const void*>& in, std::vector<std::byte>& res) {
          res.resize(n * sizeof(float));
          sum_in_order(nullptr, as_floats(in), n, reinterpret_cast<float*>(res.data()));
        },
        [&](const std::vector<std::byte>& res) {
          if (rank_ == root) std::memcpy(buf.data(), res.data(), buf.nbytes());
        });
  }

  void accumulate_sum(const Tensor& acc, const Tensor& contrib) override {
    check_f32(acc, "accumulate_sum", "acc");
    check_f32(contrib, "accumulate_sum", "contrib");
    PG_CHECK(acc.numel() == contrib.numel(), "loopback accumulate_sum: acc {} and contrib {} differ in size",
             acc.desc(), contrib.desc());
    const size_t n = static_cast<size_t>(acc.numel());
    // The hub sees each rank's contrib; rank 0's acc is read through the captured pointer (rank 0 is waiting).
    const float* acc0 = rank_ == 0 ? static_cast<const float*>(acc.data()) : nullptr;
    if (rank_ == 0) acc0_ = acc0;
    hub_->collective(
        rank_, "accumulate_sum", contrib.data(), contrib.nbytes(),
        [n, this](const std::vector<const void*>& in, std::vector<std::byte>& res) {
          res.resize(n * sizeof(float));
          sum_in_order(rank0_acc(), as_floats(in), n, reinterpret_cast<float*>(res.data()));
        },
        [&](const std::vector<std::byte>& res) { std::memcpy(acc.data(), res.data(), acc.nbytes()); });
  }

  void reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    check_f32(in, "reduce_scatter_sum", "in");
    check_f32(out, "reduce_scatter_sum", "out");
    PG_CHECK(in.numel() == out.numel() * world(), "loopback reduce_scatter_sum: in {} must hold world ({}) x out {}",
             in.desc(), world(), out.desc());
    const size_t n = static_cast<size_t>(in.numel());
    hub_->collective(
        rank_, "reduce_scatter_sum", in.data(), in.nbytes(),
        [n](const std::vector<const void*>& ins, std::vector<std::byte>& res) {
          res.resize(n * sizeof(float));
          sum_in_order(nullptr, as_floats(ins), n, reinterpret_cast<float*>(res.data()));
        },
        [&](const std::vector<std::byte>& res) {
          std::memcpy(out.data(), res.data() + static_cast<size_t>(rank_) * out.nbytes(), out.nbytes());
        });
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    check_cpu(in, "all_gather", "in");
    check_cpu(out, "all_gather", "out");
    PG_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * world(),
             "loopback all_gather: out {} must hold world ({}) x in {}", out.desc(), world(), in.desc());
    const size_t b = in.nbytes();
    const int w = world();
    hub_->collective(
        rank_, "all_gather", in.data(), b,
        [b, w](const std::vector<const void*>& ins, std::vector<std::byte>& res) {
          res.resize(b * static_cast<size_t>(w));
          for (size_t r = 0; r < ins.size(); ++r) std::memcpy(res.data() + r * b, ins[r], b);
        },
        [&](const std::vector<std::byte>& res) { std::memcpy(out.data(), res.data(), out.nbytes()); });
  }

  void broadcast(const Tensor& buf, int root) override {
    check_cpu(buf, "broadcast", "buf");
    PG_CHECK(root >= 0 && root < world(), "loopback broadcast: root {} outside [0, {})", root, world());
    const size_t b = buf.nbytes();
    hub_->collective(
        rank_, fmt::format("broadcast(root {})", root), buf.data(), b,
        [b, root](const std::vector<const void*>& ins, std::vector<std::byte>& res) {
          res.resize(b);
          std::memcpy(res.data(), ins[static_cast<size_t>(root)], b);
        },
        [&](const std::vector<std::byte>& res) { std::memcpy(buf.data(), res.data(), b); });
  }

  void barrier() override {
    hub_->collective(
        rank_, "barrier", nullptr, 0, [](const std::vector<const void*>&, std::vector<std::byte>&) {},
        [](const std::vector<std::byte>&) {});
  }

  void set_rank0_acc_source(const LoopbackComm* r0) { rank0_ = r0; }

 private:
  static std::vector<const float*> as_floats(const std::vector<const void*>& in) {
    std::vector<const float*> f(in.size());
    for (size_t i = 0; i < in.size(); ++i) f[i] = static_cast<const float*>(in[i]);
    return f;
  }
  const float* rank0_acc() const { return rank0_ ? rank0_->acc0_ : acc0_; }

  std::shared_ptr<LoopbackHub> hub_;
  int rank_;
  const float* acc0_ = nullptr;          // rank 0: its accumulator during accumulate_sum
  const LoopbackComm* rank0_ = nullptr;  // every rank: rank 0's comm, to find that accumulator
};

}  // namespace

namespace {
std::vector<std::unique_ptr<Communicator>> make_comms(const std::shared_ptr<LoopbackHub>& hub) {
  const int world = hub->world();
  std::vector<std::unique_ptr<Communicator>> comms;
  std::vector<LoopbackComm*> raw;
  for (int r = 0; r < world; ++r) {
    auto c = std::make_unique<LoopbackComm>(hub, r);
    raw.push_back(c.get());
    comms.push_back(std::move(c));
  }
  for (auto* c : raw) c->set_rank0_acc_source(raw[0]);
  return comms;
}
std::shared_ptr<LoopbackHub> make_hub(int world, double timeout_s) {
  PG_CHECK(world >= 1, "loopback: world size must be >= 1 (got {})", world);
  PG_CHECK(timeout_s > 0, "loopback: timeout must be > 0 s (got {})", timeout_s);
  return std::make_shared<LoopbackHub>(world, timeout_s);
}
}  // namespace

std::vector<std::unique_ptr<Communicator>> make_loopback_comms(int world, double timeout_s) {
  return make_comms(make_hub(world, timeout_s));
}

void run_loopback(int world, const std::function<void(Communicator&)>& fn, double timeout_s) {
  auto hub = make_hub(world, timeout_s);
  auto comms = make_comms(hub);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  std::vector<std::string> messages(static_cast<size_t>(world));
  std::mutex first_m;
  int first_failed = -1;
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        try {
          fn(*comms[static_cast<size_t>(r)]);
        } catch (const std::exception& e) {
          {
            std::lock_guard<std::mutex> lk(first_m);
            if (first_failed < 0) first_failed = r;
          }
          messages[static_cast<size_t>(r)] = e.what();
          errors[static_cast<size_t>(r)] = std::current_exception();
          // Wake the others: they would otherwise wait for this rank until the timeout.
          hub->abort(fmt::format("rank {} failed: {}", r, e.what()));
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  if (first_failed >= 0)
    PG_FAIL("loopback rank {} failed: {}", first_failed, messages[static_cast<size_t>(first_failed)]);
}

}  // namespace pgolf::dist
