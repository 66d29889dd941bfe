// The repocket models example against Redis: the example program runs with a redis:// URL on a
// private redis-server, and the real redis-cli then finds a saved User at its readable key
// (cairn:<type>:<id>) with its name and email in plain text.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/redis_server.h"

namespace cairn::testing {
namespace {

ProcessResult redis_cli(const RedisServer& redis, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/env", "redis-cli", "-p", std::to_string(redis.port()),
                                   "--raw"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv);
}

TEST(ExamplesOnRedis, RepocketModelsRunOnRedisAndReadBackWithRedisCli) {
  RedisServer redis;
  ProcessResult run = run_process({CAIRN_EXAMPLE_REPOCKET, redis.url("cairn:")});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_EQ(run.out.find("FAIL"), std::string::npos) << run.out;

  // Ron is still saved (Harry was deleted by the example).
  const std::string ron = "cairn:repocket.User:40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8";
  ProcessResult r = redis_cli(redis, {"HGETALL", ron});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = lines_of(r.out);
  auto value_of = [&](const std::string& field) -> std::string {
    for (std::size_t i = 0; i + 1 < lines.size(); i += 2) {
      if (lines[i] == field) return lines[i + 1];
    }
    ADD_FAILURE() << "no field " << field << " in HGETALL " << ron << ":\n" << r.out;
    return "";
  };
  EXPECT_EQ(value_of("name"), "\"Ron Weasley\"");
  EXPECT_EQ(value_of("email"), R"({"$utf8":"ron@hogwards.uk"})");
  EXPECT_EQ(value_of("house_name"), "\"Gryffindor\"");
  EXPECT_EQ(value_of("_key"), "40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8");
  EXPECT_EQ(value_of("_type"), "repocket.User");

  // Ron's oid key points at his readable key.
  std::string ron_oid = value_of("_oid");
  ProcessResult pointer = redis_cli(redis, {"HGETALL", "cairn:o:" + ron_oid});
  EXPECT_EQ(lines_of(pointer.out), (std::vector<std::string>{"_at", ron}));

  // Harry was deleted: nothing in the database names him any more, whether at a readable key,
  // a pointer, or the key index.
  const std::string harry = "970773fa-4de1-11e5-86f4-6c4008a70392";
  ProcessResult keys = redis_cli(redis, {"--scan", "--pattern", "cairn:*"});
  ASSERT_EQ(keys.exit_code, 0) << keys.err;
  std::vector<std::string> all = lines_of(keys.out);
  EXPECT_NE(std::find(all.begin(), all.end(), ron), all.end()) << keys.out;
  for (const std::string& key : all) {
    EXPECT_EQ(key.find(harry), std::string::npos) << key;
    if (redis_cli(redis, {"TYPE", key}).out != "hash\n") continue;
    ProcessResult fields = redis_cli(redis, {"HGETALL", key});
    EXPECT_EQ(fields.out.find(harry), std::string::npos) << key << ":\n" << fields.out;
  }
}

}  // namespace
}  // namespace cairn::testing
