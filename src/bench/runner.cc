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
  for (Scenario& s : record_scenarios())
    out.push_back(std::move(s));
  // Scenarios whose features do not exist yet: listed, never measured.
  struct Pending {
    const char* name;
    const char* unit;
    const char* peer;
    double goal;
    const char* why;
  };
  static constexpr Pending pending[] = {
      {"server.commit_50", "commits/s", "redis_set_50", 1.0, "cairn serve is not built yet"},
      {"server.durable_commit_50", "commits/s", "redis_aof_always_set_50", 1.0,
       "cairn serve is not built yet"},
      {"server.load_50", "loads/s", "redis_get_50", 1.0, "cairn serve is not built yet"},
      {"redis.commit_1", "commits/s", "redis_set_1", 0.6,
       "RedisStore exists; its scenario and redis-benchmark peer do not yet"},
  };
  for (const Pending& p : pending) {
    out.push_back(
        {p.name, [p](Context&) { return skipped(p.name, p.unit, p.peer, p.goal, p.why); }});
  }
  return out;
}

}  // namespace cairn::bench
