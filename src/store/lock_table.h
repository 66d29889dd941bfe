// LockTable: the TTL locks with fencing tokens of one store (Store::lock/unlock/renew), shared
// by every backend that keeps its locks in process memory. Thread-safe; waiting for a lock
// blocks only the waiter.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cairn/store.h"

namespace cairn {

class LockTable {
 public:
  std::optional<std::uint64_t> lock(const LockRequest& request);
  bool unlock(std::string_view name, std::string_view owner);
  bool renew(std::string_view name, std::string_view owner, std::chrono::milliseconds ttl);

 private:
  using Clock = std::chrono::steady_clock;
  struct LockState {
    std::string owner;  // "" = free
    Clock::time_point expires;
    std::uint64_t last_token = 0;
    bool held(Clock::time_point now) const { return !owner.empty() && now < expires; }
  };

  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<std::string, LockState> locks_;
};

}  // namespace cairn
