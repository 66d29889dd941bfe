// A private redis-server for tests (redis_server.h).
#include "support/redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>
#include "store/redis_ptr.h"

extern char** environ;

namespace cairn::testing {

namespace {

using ContextPtr = RedisContextPtr;
using ReplyPtr = RedisReplyPtr;

// A port nobody listens on right now (the kernel's choice for an ephemeral bind).
std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot find a free port");
  return ntohs(addr.sin_port);
}

ContextPtr connect(std::uint16_t port) {
  timeval tv{1, 0};
  ContextPtr c(redisConnectWithTimeout("127.0.0.1", port, tv));
  if (!c || c->err != 0) return nullptr;
  return c;
}

void flatten(const redisReply* r, std::vector<std::string>& out) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      out.emplace_back(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.push_back(std::to_string(r->integer));
      break;
    case REDIS_REPLY_NIL:
      out.emplace_back("(nil)");
      break;
    case REDIS_REPLY_ARRAY:
      for (std::size_t i = 0; i < r->elements; ++i)
        flatten(r->element[i], out);
      break;
    default:
      throw std::runtime_error("redis error: " + std::string(r->str, r->len));
  }
}

ReplyPtr run(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  void* raw = redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data());
  if (raw == nullptr) throw std::runtime_error("redis command failed: " + std::string(c->errstr));
  return ReplyPtr(static_cast<redisReply*>(raw));
}

}  // namespace

RedisServer::RedisServer(RedisServerOptions options) : options_(options) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (start(free_port())) return;
  }
  throw std::runtime_error("redis-server did not start (see " + dir_.file("redis.log") + ")");
}

RedisServer::~RedisServer() {
  stop();
}

bool RedisServer::start(std::uint16_t port) {
  std::vector<std::string> args = {"redis-server",
                                   "--port",
                                   std::to_string(port),
                                   "--bind",
                                   "127.0.0.1",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   options_.durable ? "yes" : "no",
                                   "--appendfsync",
                                   "always",
                                   "--dir",
                                   dir_.path(),
                                   "--unixsocket",
                                   socket_path(),
                                   "--daemonize",
                                   "no",
                                   "--logfile",
                                   dir_.file("redis.log")};
  std::vector<char*> argv;
  for (std::string& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&pid_, "redis-server", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot run redis-server: is it on PATH?");
  port_ = port;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    if (ContextPtr c = connect(port)) {
      ReplyPtr r(static_cast<redisReply*>(redisCommand(c.get(), "PING")));
      if (r && r->type == REDIS_REPLY_STATUS) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop();
  return false;
}

void RedisServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void RedisServer::restart() {
  if (pid_ > 0) throw std::runtime_error("restart: the test redis-server is still running");
  ::unlink(socket_path().c_str());  // left behind by kill()
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (start(port_)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the port is not free yet
  }
  throw std::runtime_error("redis-server did not restart (see " + dir_.file("redis.log") + ")");
}

void RedisServer::pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void RedisServer::resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

void RedisServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  ::kill(pid_, SIGCONT);  // a paused server must run to act on SIGTERM
  for (int i = 0; i < 500; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string RedisServer::url(std::string_view prefix, int db) const {
  return "redis://127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db) +
         "?prefix=" + std::string(prefix);
}

std::string RedisServer::unix_url(std::string_view prefix) const {
  return "redis+unix://" + socket_path() + "?prefix=" + std::string(prefix);
}

std::vector<std::string> RedisServer::command(const std::vector<std::string>& args, int db) const {
  ContextPtr c = connect(port_);
  if (!c) throw std::runtime_error("cannot connect to the test redis-server");
  if (db != 0) run(c.get(), {"SELECT", std::to_string(db)});
  ReplyPtr r = run(c.get(), args);
  std::vector<std::string> out;
  flatten(r.get(), out);
  return out;
}

}  // namespace cairn::testing
