// `cairn bench --quick`: the JSON it writes has exactly the documented keys, every measured
// ratio is cairn / peer, and scenarios without their feature say so instead of pretending.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "support/process.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

TEST(Bench, QuickRunWritesOneObjectPerScenarioWithRatiosOfCairnToPeer) {
  TempDir dir;
  std::string json_path = dir.file("bench.json");
  std::string svg_path = dir.file("bench.svg");
  ProcessResult r = run_process({CAIRN_BINARY, "bench", "--quick", "--json", json_path, "--svg",
                                 svg_path, "--dir", dir.path()},
                                "", std::chrono::minutes(5));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string svg = read_file(svg_path);
  EXPECT_NE(svg.find("<svg"), std::string::npos) << "the chart is drawn";
  EXPECT_NE(svg.find("file.durable_commit"), std::string::npos) << "with a bar per scenario";
  nlohmann::json results = nlohmann::json::parse(read_file(json_path));
  ASSERT_TRUE(results.is_array());
  const std::set<std::string> keys = {"scenario", "unit",  "cairn", "peer_name",
                                      "peer",     "ratio", "goal",  "pass"};
  std::set<std::string> measured;
  std::set<std::string> names;
  for (const auto& s : results) {
    std::set<std::string> got;
    for (const auto& [key, value] : s.items())
      got.insert(key);
    EXPECT_EQ(got, keys) << s.dump();
    names.insert(s["scenario"].get<std::string>());
    EXPECT_TRUE(s["goal"].is_number()) << s.dump();
    if (s["pass"] == "skipped") {
      EXPECT_TRUE(s["cairn"].is_null() && s["peer"].is_null() && s["ratio"].is_null());
      continue;
    }
    ASSERT_TRUE(s["pass"].is_boolean()) << s.dump();
    double cairn = s["cairn"].get<double>();
    double peer = s["peer"].get<double>();
    EXPECT_GT(cairn, 0) << s.dump();
    EXPECT_GT(peer, 0) << s.dump();
    EXPECT_NEAR(s["ratio"].get<double>(), cairn / peer, 1e-9 * cairn / peer) << s.dump();
    measured.insert(s["scenario"].get<std::string>());
  }
  // Every feature exists now, and the peers are installed by scripts/setup: all are measured.
  for (const char* name :
       {"file.durable_commit", "file.group_commit_16", "file.nosync_commit", "file.bulk_1m",
        "file.random_load", "file.open_1m", "memory.index_bytes_per_object", "view.cached_read",
        "txn.commit_overhead", "server.commit_50", "server.durable_commit_50", "server.load_50",
        "server.ping_1", "redis.commit_1", "redis.load_100", "query.indexed_eq",
        "record.save_10"}) {
    EXPECT_TRUE(measured.contains(name)) << name << " should be measured";
  }
  EXPECT_EQ(names.size(), results.size()) << "each scenario once";
  EXPECT_NE(r.out.find("file.durable_commit"), std::string::npos) << "the table is printed";
}

TEST(Bench, UnknownScenarioIsAnErrorNamingTheKnownOnes) {
  ProcessResult r = run_process({CAIRN_BINARY, "bench", "--scenario", "file.nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("file.nope"), std::string::npos);
  EXPECT_NE(r.err.find("file.durable_commit"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace cairn::testing
