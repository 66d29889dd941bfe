// The scenario list, and how results are judged.
#include <utility>

#include "bench/bench.h"

namespace cairn::bench {

Result measured(std::string scenario, std::string unit, double cairn, std::string peer_name,
                double peer, double goal, bool lower_is_better) {
  Result r;
  r.scenario = std::move(scenario);
  r.unit = std::move(unit);
  r.cairn = cairn;
  r.peer_name = std::move(peer_name);
  r.peer = peer;
  r.goal = goal;
  r.lower_is_better = lower_is_better;
  r.ratio = r.peer != 0 ? r.cairn / r.peer : 0;
  r.pass = r.peer != 0 && (r.lower_is_better ? r.ratio <= r.goal : r.ratio >= r.goal);
  return r;
}

Result skipped(std::string scenario, std::string unit, std::string peer_name, double goal,
               std::string why) {
  Result r;
  r.scenario = std::move(scenario);
  r.unit = std::move(unit);
  r.peer_name = std::move(peer_name);
  r.goal = goal;
  r.skipped = std::move(why);
  return r;
}

std::vector<Scenario> all_scenarios() {
  std::vector<Scenario> out = file_scenarios();
  for (Scenario& s : txn_scenarios())
    out.push_back(std::move(s));
  for (Scenario& s : server_scenarios())
    out.push_back(std::move(s));
  for (Scenario& s : redis_scenarios())
    out.push_back(std::move(s));
  for (Scenario& s : record_scenarios())
    out.push_back(std::move(s));
  return out;
}

}  // namespace cairn::bench
