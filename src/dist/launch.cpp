#include "dist/launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace pgolf::dist {
namespace {

using Clock = std::chrono::steady_clock;

// The launcher only records a signal here; its loop forwards it to every rank (the trainer's own handler then
// finishes the step, checkpoints and exits 0).
volatile sig_atomic_t g_forward = 0;
extern "C" void on_launch_signal(int sig) { g_forward = sig; }

class SignalForwarding {
 public:
  SignalForwarding() {
    g_forward = 0;
    struct sigaction sa {};
    sa.sa_handler = on_launch_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a signal wakes poll() at once
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalForwarding() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

bool rank_variable(const std::string& entry) {
  static const char* kNames[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                 "GROUP_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                 "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"};
  const std::string name = entry.substr(0, entry.find('='));
  for (const char* n : kNames)
    if (name == n) return true;
  return false;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("ended with wait status {}", status);
}

struct Child {
  int rank = 0;
  pid_t pid = -1;
  int fd = -1;          // read end of the rank's stdout+stderr pipe (-1: inherited or closed)
  std::string partial;  // output after the last newline
  bool running = false;
  int status = 0;
};

// fork + execve. Everything the child needs is built before fork: between fork and exec only async-signal-safe
// calls are allowed (the launcher may have other threads, e.g. under the test runner).
pid_t spawn(const std::string& exe, const std::vector<std::string>& args, const std::vector<std::string>& env,
            int out_fd) {
  std::vector<char*> argv, envp;
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t launcher = ::getpid();
  const pid_t pid = ::fork();
  PG_CHECK(pid >= 0, "launch: fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    // Own process group: a terminal's Ctrl-C reaches the launcher only, which forwards it once to every rank.
    ::setpgid(0, 0);
    // A launcher killed outright (SIGKILL) must not leave ranks behind.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != launcher) ::_exit(126);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGINT, &dfl, nullptr);
    ::sigaction(SIGTERM, &dfl, nullptr);
    if (out_fd >= 0) {
      ::dup2(out_fd, STDOUT_FILENO);
      ::dup2(out_fd, STDERR_FILENO);
      ::close(out_fd);
    }
    ::execve(exe.c_str(), argv.data(), envp.data());
    static const char msg[] = "pgolf launch: execve failed in the child\n";
    [[maybe_unused]] auto w = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  return pid;
}

// Hands complete lines of `c`'s output to the sink; at EOF also the unterminated rest.
void emit_lines(Child& c, const LaunchSpec& spec, bool eof) {
  size_t start = 0;
  for (size_t nl; (nl = c.partial.find('\n', start)) != std::string::npos; start = nl + 1)
    spec.on_line(c.rank, c.partial.substr(start, nl - start));
  c.partial.erase(0, start);
  if (eof && !c.partial.empty()) {
    spec.on_line(c.rank, c.partial);
    c.partial.clear();
  }
}

void read_ready(std::vector<Child>& kids, const LaunchSpec& spec, int timeout_ms) {
  std::vector<pollfd> pfds;
  std::vector<Child*> owners;
  for (auto& c : kids)
    if (c.fd >= 0) {
      pfds.push_back({c.fd, POLLIN, 0});
      owners.push_back(&c);
    }
  if (pfds.empty()) {
    ::usleep(static_cast<useconds_t>(timeout_ms) * 1000);
    return;
  }
  if (::poll(pfds.data(), pfds.size(), timeout_ms) <= 0) return;  // timeout, or EINTR from a forwarded signal
  char buf[4096];
  for (size_t i = 0; i < pfds.size(); ++i) {
    if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    Child& c = *owners[i];
    const ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n > 0) {
      c.partial.append(buf, static_cast<size_t>(n));
      emit_lines(c, spec, false);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      ::close(c.fd);
      c.fd = -1;
      emit_lines(c, spec, true);
    }
  }
}

}  // namespace

std::vector<std::string> rank_environment(const std::vector<std::string>& base, int rank, int nprocs, int port) {
  std::vector<std::string> env;
  bool nvls = false;
  for (const auto& e : base) {
    if (rank_variable(e)) continue;
    if (e.rfind("NCCL_NVLS_ENABLE=", 0) == 0) nvls = true;
    env.push_back(e);
  }
  env.push_back(fmt::format("RANK={}", rank));
  env.push_back(fmt::format("WORLD_SIZE={}", nprocs));
  env.push_back(fmt::format("LOCAL_RANK={}", rank));
  env.push_back(fmt::format("LOCAL_WORLD_SIZE={}", nprocs));
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back(fmt::format("MASTER_PORT={}", port));
  // NVLink multicast (NVLS) stays off unless the user chose otherwise.
  if (!nvls) env.push_back("NCCL_NVLS_ENABLE=0");
  return env;
}

int pick_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  PG_CHECK(fd >= 0, "launch: socket() failed while looking for a free port: {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  ::close(fd);
  PG_CHECK(ok, "launch: could not bind 127.0.0.1:0 to find a free port: {}", std::strerror(err));
  return ntohs(addr.sin_port);
}

void launch_local(const LaunchSpec& spec_in) {
  LaunchSpec spec = spec_in;
  PG_CHECK(spec.nprocs >= 1, "launch: --gpus must be >= 1 (got {})", spec.nprocs);
  PG_CHECK(::access(spec.exe.c_str(), X_OK) == 0, "launch: cannot execute {}: {}", spec.exe, std::strerror(errno));
  if (!spec.on_line)
    spec.on_line = [](int rank, const std::string& line) { std::fprintf(stderr, "[rank %d] %s\n", rank, line.c_str()); };
  const int port = spec.master_port > 0 ? spec.master_port : pick_free_port();
  std::vector<std::string> base;
  for (char** e = environ; *e; ++e) base.emplace_back(*e);

  std::fflush(stdout);
  std::fflush(stderr);
  SignalForwarding forwarding;  // before the first fork, so no signal can slip between spawning ranks
  std::vector<Child> kids(static_cast<size_t>(spec.nprocs));
  for (int r = 0; r < spec.nprocs; ++r) {
    Child& c = kids[static_cast<size_t>(r)];
    c.rank = r;
    int p[2] = {-1, -1};
    const bool piped = r > 0 || spec.pipe_rank0;
    if (piped) PG_CHECK(::pipe2(p, O_CLOEXEC) == 0, "launch: pipe for rank {} failed: {}", r, std::strerror(errno));
    try {
      c.pid = spawn(spec.exe, spec.args, rank_environment(base, r, spec.nprocs, port), piped ? p[1] : -1);
    } catch (...) {
      for (auto& k : kids)
        if (k.running) ::kill(k.pid, SIGKILL);
      throw;
    }
    c.running = true;
    if (piped) {
      ::close(p[1]);
      c.fd = p[0];
    }
  }

  int failed = -1;  // the first rank that failed: its exit is the launcher's error
  bool stopping = false, killed = false;
  Clock::time_point kill_at;
  Clock::time_point all_exited_at;
  bool all_exited = false;
  while (true) {
    read_ready(kids, spec, 50);
    if (const int sig = g_forward) {
      g_forward = 0;
      std::fprintf(stderr, "pgolf launch: forwarding signal %d (%s) to every rank\n", sig, strsignal(sig));
      for (auto& c : kids)
        if (c.running) ::kill(c.pid, sig);
    }
    for (auto& c : kids) {
      if (!c.running) continue;
      int st = 0;
      const pid_t w = ::waitpid(c.pid, &st, WNOHANG);
      if (w != c.pid) continue;
      c.running = false;
      c.status = st;
      const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
      if (!ok && failed < 0 && !stopping) {
        failed = c.rank;
        stopping = true;
        kill_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(spec.grace_s));
        std::fprintf(stderr, "pgolf launch: rank %d (pid %d) %s; stopping the other ranks (SIGTERM, SIGKILL after %.0f s)\n",
                     c.rank, static_cast<int>(c.pid), describe(st).c_str(), spec.grace_s);
        for (auto& o : kids)
          if (o.running) ::kill(o.pid, SIGTERM);
      }
    }
    if (stopping && !killed && Clock::now() >= kill_at) {
      // Ranks stuck in a collective with the dead rank cannot act on SIGTERM.
      killed = true;
      for (auto& o : kids)
        if (o.running) ::kill(o.pid, SIGKILL);
    }
    bool running = false, open = false;
    for (auto& c : kids) {
      running = running || c.running;
      open = open || c.fd >= 0;
    }
    if (!running && !all_exited) {
      all_exited = true;
      all_exited_at = Clock::now();
    }
    // A rank's own children may keep its pipe open: read on for at most a second once every rank has exited.
    if (!running && (!open || Clock::now() - all_exited_at > std::chrono::seconds(1))) break;
  }
  for (auto& c : kids)
    if (c.fd >= 0) {
      emit_lines(c, spec, true);
      ::close(c.fd);
    }
  if (failed >= 0) {
    const Child& f = kids[static_cast<size_t>(failed)];
    std::string others;
    for (const auto& c : kids)
      if (c.rank != failed) others += fmt::format("{}rank {} {}", others.empty() ? "" : ", ", c.rank, describe(c.status));
    PG_FAIL("launch: rank {} of {} (pid {}) {}; the other ranks were stopped ({})", failed, spec.nprocs, f.pid,
            describe(f.status), others.empty() ? "none" : others);
  }
}

}  // namespace pgolf::dist
