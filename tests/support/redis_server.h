// RedisServer: a private redis-server (from PATH) for tests, on a free TCP port on 127.0.0.1 and
// a unix socket, with a temporary directory (persistence off unless asked for); stopped and
// removed when the object goes out of scope. Fault tests can kill it, restart it on the same port
// and directory, or freeze it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "support/temp_dir.h"

namespace cairn::testing {

struct RedisServerOptions {
  // appendonly yes + appendfsync always: every write acknowledged to a client is in the
  // append-only file, fsynced, so it survives kill() and restart().
  bool durable = false;
};

class RedisServer {
 public:
  // Starts the server and waits until it answers PING. Throws std::runtime_error if it cannot.
  explicit RedisServer(RedisServerOptions options = {});
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer();

  std::uint16_t port() const { return port_; }
  std::string socket_path() const { return dir_.file("redis.sock"); }
  // redis://127.0.0.1:PORT/DB?prefix=PREFIX
  std::string url(std::string_view prefix, int db = 0) const;
  // redis+unix://SOCKET?prefix=PREFIX
  std::string unix_url(std::string_view prefix) const;

  // Runs one command on a connection of its own (database `db`). The reply is flattened to
  // strings: a bulk string or status is one, an integer its decimal form, nil "(nil)", an
  // array its elements (nested arrays flattened). Throws std::runtime_error for an error reply.
  std::vector<std::string> command(const std::vector<std::string>& args, int db = 0) const;

  // Kills the server with SIGKILL (it saves nothing on the way out) and waits for it to exit.
  void kill();
  // Starts the server again on the same port, directory and options, and waits until it
  // answers PING. Throws std::runtime_error if it cannot within 20 s.
  void restart();
  // SIGSTOP and SIGCONT: while paused the server keeps its connections but answers nothing.
  void pause();
  void resume();
  bool running() const { return pid_ > 0; }

 private:
  bool start(std::uint16_t port);  // false if the server exited (port taken)
  void stop();

  RedisServerOptions options_;
  TempDir dir_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

}  // namespace cairn::testing
