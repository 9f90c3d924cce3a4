#include "dist/rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "core/error.h"

namespace pgolf::dist {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x50475256;  // "PGRV"
constexpr uint32_t kMaxReply = 1 << 20;

struct Hello {
  uint32_t magic = kMagic;
  int32_t rank = 0;
  int32_t world = 0;
  uint32_t pad = 0;
  uint64_t hash = 0;
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept { std::swap(fd_, o.fd_); return *this; }
  int get() const { return fd_; }
  int release() { const int f = fd_; fd_ = -1; return f; }
 private:
  int fd_;
};

int ms_left(Clock::time_point deadline) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms <= 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

// Full read/write with a deadline; false on timeout or a closed peer.
bool io_all(int fd, void* buf, size_t n, bool reading, Clock::time_point deadline) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    pollfd pfd{fd, static_cast<short>(reading ? POLLIN : POLLOUT), 0};
    const int pr = ::poll(&pfd, 1, ms_left(deadline));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) return false;
    const ssize_t k = reading ? ::recv(fd, p, n, 0) : ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

void send_reply(int fd, bool ok, const std::string& body, Clock::time_point deadline) {
  const uint32_t head[2] = {ok ? 0u : 1u, static_cast<uint32_t>(body.size())};
  if (io_all(fd, const_cast<uint32_t*>(head), sizeof head, false, deadline))
    io_all(fd, const_cast<char*>(body.data()), body.size(), false, deadline);
}

std::string serve(const RankInfo& info, uint64_t hash, const std::string& payload, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  Fd ls(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  PG_CHECK(ls.get() >= 0, "rendezvous: socket(): {}", std::strerror(errno));
  int one = 1;
  ::setsockopt(ls.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(info.master_port));
  PG_CHECK(::bind(ls.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0,
           "rendezvous: rank 0 cannot listen on port {} (MASTER_PORT): {}", info.master_port, std::strerror(errno));
  PG_CHECK(::listen(ls.get(), 128) == 0, "rendezvous: listen(): {}", std::strerror(errno));

  std::vector<Fd> peers;
  std::vector<char> seen(static_cast<size_t>(info.world), 0);
  seen[0] = 1;
  std::string problem;
  int arrived = 1;
  while (arrived < info.world && problem.empty()) {
    pollfd pfd{ls.get(), POLLIN, 0};
    const int pr = ::poll(&pfd, 1, ms_left(deadline));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) break;  // deadline
    Fd c(::accept4(ls.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (c.get() < 0) continue;
    Hello h;
    if (!io_all(c.get(), &h, sizeof h, true, deadline) || h.magic != kMagic) continue;  // not one of ours
    if (h.world != info.world) {
      problem = fmt::format("rank {} was started with world size {} but rank 0 with {}", h.rank, h.world, info.world);
    } else if (h.rank <= 0 || h.rank >= info.world || seen[static_cast<size_t>(h.rank)]) {
      problem = fmt::format("a second process claims rank {} (or it is out of [1, {}))", h.rank, info.world);
    } else if (h.hash != hash) {
      problem = fmt::format("rank {} has config hash {:016x} but rank 0 has {:016x}: the ranks run different "
                            "configs (or builds); refusing to start", h.rank, h.hash, hash);
    } else {
      seen[static_cast<size_t>(h.rank)] = 1;
      ++arrived;
    }
    peers.push_back(std::move(c));
  }
  if (problem.empty() && arrived < info.world) {
    std::string missing;
    for (int r = 1; r < info.world; ++r)
      if (!seen[static_cast<size_t>(r)]) missing += fmt::format("{}{}", missing.empty() ? "" : ", ", r);
    problem = fmt::format("rank(s) {} never arrived at {}:{} within {:.0f} s", missing, info.master_addr,
                          info.master_port, timeout_s);
  }
  const auto reply_deadline = Clock::now() + std::chrono::seconds(2);
  for (auto& p : peers) send_reply(p.get(), problem.empty(), problem.empty() ? payload : problem, reply_deadline);
  PG_CHECK(problem.empty(), "rendezvous (rank 0 of {}): {}", info.world, problem);
  return payload;
}

// Non-blocking connect bounded by the deadline; -1 when not (yet) reachable.
int try_connect(const RankInfo& info, Clock::time_point deadline, std::string& last_error) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(info.master_port);
  const int gai = ::getaddrinfo(info.master_addr.c_str(), port.c_str(), &hints, &res);
  if (gai != 0) {
    last_error = fmt::format("cannot resolve MASTER_ADDR {}: {}", info.master_addr, ::gai_strerror(gai));
    return -1;
  }
  Fd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  int rc = fd.get() < 0 ? -1 : ::connect(fd.get(), res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd pfd{fd.get(), POLLOUT, 0};
    const int pr = ::poll(&pfd, 1, std::min(ms_left(deadline), 1000));
    int err = ETIMEDOUT;
    socklen_t len = sizeof err;
    if (pr > 0) ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    rc = err == 0 ? 0 : -1;
    errno = err;
  }
  if (rc != 0) {
    last_error = std::strerror(errno);
    return -1;
  }
  return fd.release();
}

std::string join(const RankInfo& info, uint64_t hash, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  std::string last_error = "no attempt";
  while (true) {
    Fd fd(try_connect(info, deadline, last_error));
    if (fd.get() >= 0) {
      Hello h;
      h.rank = info.rank;
      h.world = info.world;
      h.hash = hash;
      uint32_t head[2];
      PG_CHECK(io_all(fd.get(), &h, sizeof h, false, deadline) && io_all(fd.get(), head, sizeof head, true, deadline),
               "rendezvous (rank {}): rank 0 at {}:{} accepted the connection but did not answer within {:.0f} s "
               "(did rank 0 die?)", info.rank, info.master_addr, info.master_port, timeout_s);
      PG_CHECK(head[1] <= kMaxReply, "rendezvous (rank {}): malformed answer from {}:{}", info.rank, info.master_addr,
               info.master_port);
      std::string body(head[1], '\0');
      PG_CHECK(io_all(fd.get(), body.data(), body.size(), true, deadline),
               "rendezvous (rank {}): connection to rank 0 lost", info.rank);
      PG_CHECK(head[0] == 0, "rendezvous (rank {}): rank 0 refused: {}", info.rank, body);
      return body;
    }
    PG_CHECK(ms_left(deadline) > 0, "rendezvous (rank {} of {}): could not reach rank 0 at {}:{} within {:.0f} s "
             "(last error: {}); is rank 0 running and MASTER_ADDR/MASTER_PORT right?",
             info.rank, info.world, info.master_addr, info.master_port, timeout_s, last_error);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, ms_left(deadline))));
  }
}

}  // namespace

std::string rendezvous(const RankInfo& info, uint64_t config_hash, const std::string& root_payload, double timeout_s) {
  PG_CHECK(timeout_s > 0, "rendezvous: timeout must be > 0 s");
  if (info.world == 1) return root_payload;
  return info.rank == 0 ? serve(info, config_hash, root_payload, timeout_s) : join(info, config_hash, timeout_s);
}

}  // namespace pgolf::dist
