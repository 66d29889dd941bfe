// Redis as a benchmark peer: a private redis-server the bench starts on a free port, and
// redis-benchmark run against it, both from the Debian packages scripts/setup installs.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace cairn::bench {

class RedisPeer {
 public:
  // Starts redis-server with its data in `dir`: no persistence, or with `appendfsync always`
  // (every write fsynced before the reply). Throws cairn::Error if it does not come up.
  RedisPeer(const std::string& dir, bool aof_always);
  RedisPeer(const RedisPeer&) = delete;
  RedisPeer& operator=(const RedisPeer&) = delete;
  ~RedisPeer();

  std::uint16_t port() const { return port_; }

  // Runs `redis-benchmark -c clients -n requests -t test` (no pipelining) and returns its
  // requests per second.
  double benchmark(const std::string& test, int clients, std::uint64_t requests) const;

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

}  // namespace cairn::bench
