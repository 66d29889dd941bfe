// Polling for what another thread or process will make true soon.
#pragma once

#include <chrono>
#include <thread>

namespace cairn::testing {

// Polls `done` every millisecond for up to `limit`; returns its last answer.
template <class Fn>
bool eventually(Fn done, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  for (auto deadline = std::chrono::steady_clock::now() + limit;
       std::chrono::steady_clock::now() < deadline;) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done();
}

}  // namespace cairn::testing
