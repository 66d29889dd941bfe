// TTL locks (lock_table.h).
#include "store/lock_table.h"

#include <algorithm>

#include "cairn/error.h"
#include "store/store_util.h"

namespace cairn {

std::optional<std::uint64_t> LockTable::lock(const LockRequest& request) {
  validate_lock_request(request);
  auto deadline = Clock::now() + request.wait;
  std::unique_lock lk(mu_);
  LockState& state = locks_[request.name];
  for (;;) {
    auto now = Clock::now();
    if (!state.held(now)) {
      std::optional<std::uint64_t> token = tokens_.next ? tokens_.next()
                                           : state.last_token == 0
                                               ? std::optional(first_token_)
                                               : std::optional(state.last_token + 1);
      if (!token) {
        // Reserving more tokens may wait for the disk: not with the mutex held, which every
        // lock, unlock and renewal of every name needs. The lock may be taken meanwhile, so
        // look again. (`state` stays valid: entries are never erased, and an unordered_map's
        // rehash moves no element.)
        lk.unlock();
        tokens_.reserve();
        lk.lock();
        continue;
      }
      state.last_token = *token;
      state.owner = request.owner;
      state.expires = now + request.ttl;
      return token;
    }
    if (now >= deadline) return std::nullopt;
    // Wake at the deadline, at expiry, or when an unlock notifies.
    cv_.wait_until(lk, std::min(deadline, state.expires));
  }
}

bool LockTable::unlock(std::string_view name, std::string_view owner) {
  std::lock_guard lk(mu_);
  auto it = locks_.find(std::string(name));
  if (it == locks_.end() || !it->second.held(Clock::now()) || it->second.owner != owner) {
    return false;
  }
  it->second.owner.clear();
  cv_.notify_all();
  return true;
}

bool LockTable::renew(std::string_view name, std::string_view owner,
                      std::chrono::milliseconds ttl) {
  check_lock_ttl(ttl);
  std::lock_guard lk(mu_);
  auto it = locks_.find(std::string(name));
  auto now = Clock::now();
  if (it == locks_.end() || !it->second.held(now) || it->second.owner != owner) return false;
  it->second.expires = now + ttl;
  return true;
}

void LockTable::check_held(std::span<const LockCheck> checks) {
  if (checks.empty()) return;
  std::lock_guard lk(mu_);
  auto now = Clock::now();
  for (const LockCheck& check : checks) {
    auto it = locks_.find(check.name);
    // last_token is the token of the newest acquisition, so of the holder if the lock is held.
    if (it == locks_.end() || !it->second.held(now) || it->second.last_token != check.token) {
      throw_lock_lost(check);
    }
  }
}

}  // namespace cairn
