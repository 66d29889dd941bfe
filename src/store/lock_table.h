// LockTable: the TTL locks with fencing tokens of one store (Store::lock/unlock/renew), shared
// by every backend that keeps its locks in process memory. The locks die with the process; the
// tokens need not: a FileStore draws them from a counter its file keeps. Thread-safe; waiting
// for a lock blocks only the waiter.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cairn/store.h"

namespace cairn {

class LockTable {
 public:
  // Where a table with tokens kept outside it draws them (FileStore: a counter its file keeps).
  struct TokenSource {
    // The next token if one is at hand, or none if more must be reserved first. Called with the
    // table's mutex held, so that a name's tokens increase in the order its locks are taken;
    // it must not wait for the disk. It may throw: lock() then throws it, and takes nothing.
    std::function<std::optional<std::uint64_t>()> next;
    // Makes tokens available to `next`, waiting for the disk if it must. Called without the
    // table's mutex, so that unlocks, renewals and waits go on meanwhile. It may throw: lock()
    // then throws it, and takes nothing.
    std::function<void()> reserve;
  };

  // Tokens count up per name, in memory, from first_token.
  explicit LockTable(std::uint64_t first_token = 1) : first_token_(first_token) {}
  explicit LockTable(TokenSource tokens) : tokens_(std::move(tokens)) {}

  std::optional<std::uint64_t> lock(const LockRequest& request);
  bool unlock(std::string_view name, std::string_view owner);
  bool renew(std::string_view name, std::string_view owner, std::chrono::milliseconds ttl);
  // Throws LockLost for the first check whose lock is not held now, unexpired, under its token
  // (a commit's CommitRequest::locks).
  void check_held(std::span<const LockCheck> checks);

 private:
  using Clock = std::chrono::steady_clock;
  struct LockState {
    std::string owner;  // "" = free
    Clock::time_point expires;
    std::uint64_t last_token = 0;
    bool held(Clock::time_point now) const { return !owner.empty() && now < expires; }
  };

  TokenSource tokens_;  // empty: tokens per name, in memory, from first_token_
  std::uint64_t first_token_ = 1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<std::string, LockState> locks_;
};

}  // namespace cairn
