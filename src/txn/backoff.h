// Backoff: the jittered exponential wait between attempts of work that conflicted, for
// Database::transaction and view, and for record saves and removals, so that writers contending
// for one object spread out instead of retrying in step.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <thread>

#include "cairn/database.h"

namespace cairn::detail {

// Before retry n (0 for the first): a wait uniform in [0, min(retry_delay * 2^n,
// max_retry_delay)] (DatabaseOptions).
class Backoff {
 public:
  explicit Backoff(const DatabaseOptions& options) : options_(options) {}

  void wait(int retry) {
    auto ceiling = std::min(options_.max_retry_delay,
                            options_.retry_delay * (std::int64_t{1} << std::clamp(retry, 0, 30)));
    if (ceiling.count() <= 0) return;
    if (!rng_) rng_.emplace(std::random_device{}());
    std::uniform_int_distribution<std::int64_t> pick(0, ceiling.count());
    std::this_thread::sleep_for(std::chrono::microseconds(pick(*rng_)));
  }

 private:
  const DatabaseOptions& options_;
  std::optional<std::minstd_rand> rng_;  // seeded at the first retry only
};

}  // namespace cairn::detail
