// ListenerLog: a commit listener for tests that records what it hears and lets a test wait for
// a given commit.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "cairn/store.h"

namespace cairn::testing {

class ListenerLog {
 public:
  // A listener appending to this log; the log must outlive its subscription.
  CommitListener listener() {
    return [this](std::uint64_t csn, std::span<const Oid> oids) {
      std::lock_guard lk(mu_);
      events_.emplace_back(csn, std::vector<Oid>(oids.begin(), oids.end()));
      cv_.notify_all();
    };
  }

  // Waits until commit `csn` has been heard or `limit` has passed; returns whether it was.
  bool wait_for(std::uint64_t csn, std::chrono::milliseconds limit) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, limit, [&] {
      return std::any_of(events_.begin(), events_.end(),
                         [&](const auto& e) { return e.first == csn; });
    });
  }

  // The CSNs heard, in the order heard.
  std::vector<std::uint64_t> csns() {
    std::lock_guard lk(mu_);
    std::vector<std::uint64_t> out;
    for (const auto& e : events_)
      out.push_back(e.first);
    return out;
  }

  // The oids heard with commit `csn` (empty if it was not heard).
  std::vector<Oid> oids_of(std::uint64_t csn) {
    std::lock_guard lk(mu_);
    for (const auto& e : events_) {
      if (e.first == csn) return e.second;
    }
    return {};
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::uint64_t, std::vector<Oid>>> events_;
};

}  // namespace cairn::testing
