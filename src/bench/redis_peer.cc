// RedisPeer (redis_peer.h).
#include "bench/redis_peer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cairn/error.h"

extern char** environ;

namespace cairn::bench {

namespace {

using Clock = std::chrono::steady_clock;

// Whether `name` is an executable file in a directory on PATH.
bool on_path(std::string_view name) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  while (true) {
    auto colon = dirs.find(':');
    std::string candidate = fmt::format("{}/{}", dirs.substr(0, colon), name);
    if (::access(candidate.c_str(), X_OK) == 0) return true;
    if (colon == std::string_view::npos) return false;
    dirs.remove_prefix(colon + 1);
  }
}

// A port nobody listens on right now (the kernel's choice for an ephemeral bind).
std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw IoError("bench: socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) throw IoError("bench: cannot find a free port");
  return ntohs(addr.sin_port);
}

RedisContextPtr connect_to(std::uint16_t port) {
  timeval timeout{2, 0};
  RedisContextPtr c(redisConnectWithTimeout("127.0.0.1", port, timeout));
  if (!c || c->err != 0) return nullptr;
  redisSetTimeout(c.get(), timeout);
  return c;
}

// Runs a program to completion and returns what it wrote to stdout.
std::string capture(std::vector<std::string> args) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw IoError("bench: pipe() failed");
  std::vector<char*> argv;
  for (std::string& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw IoError(fmt::format("bench: cannot run {}", args[0]));
  }
  std::string out;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw IoError(fmt::format("bench: {} failed", args[0]));
  }
  return out;
}

}  // namespace

RedisPeer::RedisPeer(const std::string& dir, bool aof_always) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (start(dir, free_port(), aof_always)) return;
  }
  throw IoError(fmt::format("bench: redis-server did not start (see {}/redis.log)", dir));
}

RedisPeer::~RedisPeer() {
  stop();
}

std::string RedisPeer::url(std::string_view prefix) const {
  return fmt::format("redis://127.0.0.1:{}/0?prefix={}", port_, prefix);
}

RedisContextPtr RedisPeer::connect() const {
  return connect_to(port_);
}

bool RedisPeer::start(const std::string& dir, std::uint16_t port, bool aof_always) {
  std::vector<std::string> args = {"redis-server",
                                   "--port",
                                   std::to_string(port),
                                   "--bind",
                                   "127.0.0.1",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   aof_always ? "yes" : "no",
                                   "--appendfsync",
                                   "always",
                                   "--dir",
                                   dir,
                                   "--logfile",
                                   dir + "/redis.log"};
  std::vector<char*> argv;
  for (std::string& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&pid_, "redis-server", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw IoError("bench: cannot run redis-server");
  port_ = port;
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;  // exited: most likely the port was taken meanwhile
      return false;
    }
    if (RedisContextPtr c = connect_to(port)) {
      RedisReplyPtr r(static_cast<redisReply*>(redisCommand(c.get(), "PING")));
      if (r && r->type == REDIS_REPLY_STATUS) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop();
  return false;
}

void RedisPeer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

double RedisPeer::benchmark(const std::string& test, int clients, std::uint64_t requests) const {
  std::string out = capture({"redis-benchmark", "-h", "127.0.0.1", "-p", std::to_string(port_),
                             "-c", std::to_string(clients), "-n", std::to_string(requests), "-t",
                             test, "-P", "1", "-q"});
  // The last line reads "SET: 17301.04 requests per second, p50=0.055 msec".
  std::string label = test;
  for (char& c : label)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto end = out.rfind(" requests per second");
  auto begin = out.rfind(label + ": ", end);
  if (end == std::string::npos || begin == std::string::npos) {
    throw Error(fmt::format("bench: cannot read redis-benchmark's output: {}", out));
  }
  begin += label.size() + 2;
  return std::strtod(out.substr(begin, end - begin).c_str(), nullptr);
}

std::optional<std::string> missing_redis_tools() {
  for (const char* tool : {"redis-server", "redis-benchmark"}) {
    if (!on_path(tool)) return fmt::format("{} is not installed", tool);
  }
  return std::nullopt;
}

}  // namespace cairn::bench
