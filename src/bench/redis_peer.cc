// RedisPeer (redis_peer.h).
#include "bench/redis_peer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "cairn/error.h"

extern char** environ;

namespace cairn::bench {

namespace {

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw IoError("bench: socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw IoError("bench: cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw IoError(fmt::format("bench: cannot run {}: {}", args[0], std::strerror(rc)));
  return pid;
}

// Runs a command and returns its standard output.
std::string output_of(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), &::pclose);
  if (!pipe) throw IoError(fmt::format("bench: cannot run {}", command));
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), pipe.get()))
    out.append(buf.data(), n);
  return out;
}

}  // namespace

RedisPeer::RedisPeer(const std::string& dir, bool aof_always) {
  port_ = free_port();
  std::vector<std::string> args = {
      "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",  "--dir",  dir,
      "--save",       "",       "--daemonize",         "no",     "--loglevel", "warning"};
  if (aof_always) {
    for (const char* a : {"--appendonly", "yes", "--appendfsync", "always"})
      args.emplace_back(a);
  } else {
    for (const char* a : {"--appendonly", "no"})
      args.emplace_back(a);
  }
  pid_ = spawn(args);
  for (int i = 0; i < 200; ++i) {
    std::string pong = output_of(fmt::format("redis-cli -p {} ping 2>/dev/null", port_));
    if (pong.starts_with("PONG")) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  throw IoError(fmt::format("bench: redis-server did not start on port {}", port_));
}

RedisPeer::~RedisPeer() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  ::waitpid(pid_, nullptr, 0);
}

double RedisPeer::benchmark(const std::string& test, int clients, std::uint64_t requests) const {
  // --csv prints "test","rps",...: the second field is requests per second.
  std::string out =
      output_of(fmt::format("redis-benchmark -h 127.0.0.1 -p {} -c {} -n {} -t {} "
                            "-P 1 --csv 2>/dev/null",
                            port_, clients, requests, test));
  for (std::size_t at = 0; at < out.size();) {
    std::size_t end = out.find('\n', at);
    std::string line = out.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? out.size() : end + 1;
    std::size_t comma = line.find(',');
    if (comma == std::string::npos || line.starts_with("\"test\"")) continue;
    std::string rps = line.substr(comma + 1);
    if (!rps.empty() && rps.front() == '"') rps.erase(0, 1);
    try {
      return std::stod(rps);
    } catch (const std::exception&) {
      continue;
    }
  }
  throw Error(fmt::format("bench: could not read redis-benchmark's output: {}", out));
}

}  // namespace cairn::bench
