// cairn bench: scenarios that measure cairn and a real peer side by side, in the same run, on
// the same machine and data, and report the ratio against a goal (docs/benchmarks.md).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cairn::bench {

struct Result {
  std::string scenario;
  std::string unit;  // of `cairn` and `peer`: "commits/s", "s", "bytes/object", ...
  double cairn = 0;
  std::string peer_name;  // a peer program or library, or "limit" for an absolute goal
  double peer = 0;
  double ratio = 0;  // cairn / peer
  double goal = 0;
  bool lower_is_better = false;  // the ratio must be <= goal (times, sizes), else >=
  bool pass = false;
  std::string skipped;  // non-empty: not measured, and why
};

struct Context {
  bool quick = false;
  std::string dir;  // a scratch directory the scenario may fill; emptied between scenarios
  std::function<void(std::string_view)> progress;  // one line of what is being measured
  // Quick runs use `small`, full runs `large`.
  std::uint64_t size(std::uint64_t small, std::uint64_t large) const {
    return quick ? small : large;
  }
};

struct Scenario {
  std::string name;
  std::function<Result(Context&)> run;
};

// A measured result: fills ratio (cairn / peer) and pass.
Result measured(std::string scenario, std::string unit, double cairn, std::string peer_name,
                double peer, double goal, bool lower_is_better = false);
// A result for a scenario whose feature this build does not have.
Result skipped(std::string scenario, std::string unit, std::string peer_name, double goal,
               std::string why);

std::vector<Scenario> file_scenarios();
std::vector<Scenario> txn_scenarios();
std::vector<Scenario> server_scenarios();
std::vector<Scenario> redis_scenarios();
std::vector<Scenario> record_scenarios();
// Every scenario, in the order the table shows them.
std::vector<Scenario> all_scenarios();

// The best of `repeats` rates of each of cairn() and peer(), run alternately so that both see
// the same moments of a noisy machine.
template <class A, class B>
std::pair<double, double> best_of(int repeats, A&& cairn, B&& peer) {
  double best_a = 0;
  double best_b = 0;
  for (int i = 0; i < repeats; ++i) {
    best_a = std::max(best_a, cairn());
    best_b = std::max(best_b, peer());
  }
  return {best_a, best_b};
}

// Seconds since `start`.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace cairn::bench
