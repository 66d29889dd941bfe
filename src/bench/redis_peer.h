// Redis as a benchmark peer: a private redis-server the bench starts on a free port in a scratch
// directory, and redis-benchmark run against it, both from the Debian packages scripts/setup
// installs.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "store/redis_ptr.h"

namespace cairn::bench {

// Why the Redis peers cannot run here (redis-server or redis-benchmark missing), if they cannot.
std::optional<std::string> missing_redis_tools();

class RedisPeer {
 public:
  // Starts redis-server with its data in `dir`: without persistence, or with `appendonly yes`
  // and `appendfsync always` (every write reaches the disk before its reply). Throws IoError if
  // it does not come up.
  RedisPeer(const std::string& dir, bool aof_always);
  RedisPeer(const RedisPeer&) = delete;
  RedisPeer& operator=(const RedisPeer&) = delete;
  ~RedisPeer();

  std::uint16_t port() const { return port_; }
  // redis://127.0.0.1:PORT/0?prefix=PREFIX
  std::string url(std::string_view prefix) const;
  // A hiredis connection (2 s timeouts), or null if it cannot connect.
  RedisContextPtr connect() const;

  // `redis-benchmark -c clients -n requests -t test -q` (no pipelining): requests per second.
  double benchmark(const std::string& test, int clients, std::uint64_t requests) const;

 private:
  bool start(const std::string& dir, std::uint16_t port, bool aof_always);
  void stop();

  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

}  // namespace cairn::bench
