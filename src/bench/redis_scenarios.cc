// The RedisStore scenarios and their peers: redis-benchmark and plain hiredis, against a
// redis-server the bench starts for itself on a free port, in the scenario's scratch directory.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <thread>

#include "bench/bench.h"
#include "bench/redis_peer.h"
#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/store.h"
#include "store/redis_ptr.h"

extern char** environ;

namespace cairn::bench {

namespace {

using Clock = std::chrono::steady_clock;

// ---- redis.commit_1 ----

// One thread, n commits of one small object (a one-field map, so one hash field), each its own
// round trip through the commit script.
double cairn_single_commits(const RedisPeer& redis, std::uint64_t n) {
  auto store = open(redis.url("bench_commit:"));
  Oid oid = store->new_oids(1);
  CommitRequest req;
  req.writes.push_back(WriteOp{oid, "", "", encode(Value(Value::Map{{"n", 1}}))});
  auto start = Clock::now();
  for (std::uint64_t i = 0; i < n; ++i)
    store->commit(req);
  return static_cast<double>(n) / seconds_since(start);
}

Result commit_1(Context& ctx) {
  const char* name = "redis.commit_1";
  if (auto why = missing_redis_tools()) return skipped(name, "commits/s", "redis_set_1", 0.6, *why);
  std::uint64_t n = ctx.size(5'000, 50'000);
  ctx.progress(fmt::format("{} one-object commits vs redis-benchmark -c 1 -t set", n));
  RedisPeer redis(ctx.dir, false);
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3, [&] { return cairn_single_commits(redis, n); },
      [&] { return redis.benchmark("set", 1, n); });
  return measured(name, "commits/s", cairn, "redis_set_1", peer, 0.6);
}

// ---- redis.load_100 ----

constexpr std::uint32_t load_batch = 100;

// What a record looks like: a few plain fields.
Value record(std::uint32_t i) {
  return Value::Map{{"name", fmt::format("user {}", i)},
                    {"email", fmt::format("user{}@example.com", i)},
                    {"age", static_cast<std::int64_t>(20 + i % 50)}};
}

// load() of the same 100 objects, `rounds` times: one pipelined round trip each.
double cairn_loads(Store& store, std::span<const Oid> oids, std::uint64_t rounds) {
  std::uint64_t seen = 0;
  auto start = Clock::now();
  for (std::uint64_t i = 0; i < rounds; ++i)
    seen += store.load(oids).objects.size();
  double rate = static_cast<double>(rounds) / seconds_since(start);
  if (seen != rounds * oids.size()) throw Error("bench: a load lost objects");
  return rate;
}

// The same 100 HGETALLs, pipelined by hand with hiredis: one round trip each round.
double hiredis_hgetall(const RedisPeer& redis, const std::vector<std::string>& keys,
                       std::uint64_t rounds) {
  RedisContextPtr c = redis.connect();
  if (!c) throw IoError("bench: cannot connect to the bench redis-server");
  std::uint64_t fields = 0;
  auto start = Clock::now();
  for (std::uint64_t i = 0; i < rounds; ++i) {
    for (const std::string& key : keys) {
      const char* argv[] = {"HGETALL", key.c_str()};
      std::size_t lens[] = {7, key.size()};
      redisAppendCommandArgv(c.get(), 2, argv, lens);
    }
    for (std::size_t k = 0; k < keys.size(); ++k) {
      void* raw = nullptr;
      if (redisGetReply(c.get(), &raw) != REDIS_OK || raw == nullptr) {
        throw IoError("bench: HGETALL failed");
      }
      RedisReplyPtr r(static_cast<redisReply*>(raw));
      fields += r->elements;
    }
  }
  double rate = static_cast<double>(rounds) / seconds_since(start);
  if (fields == 0) throw Error("bench: HGETALL found nothing");
  return rate;
}

Result load_100(Context& ctx) {
  const char* name = "redis.load_100";
  if (auto why = missing_redis_tools()) {
    return skipped(name, "loads/s", "hiredis_hgetall_100", 0.8, *why);
  }
  std::uint64_t rounds = ctx.size(1'000, 10'000);
  ctx.progress(fmt::format("{} loads of {} objects vs {} pipelined HGETALLs", rounds, load_batch,
                           load_batch));
  RedisPeer redis(ctx.dir, false);
  const std::string prefix = "bench_load:";
  auto store = open(redis.url(prefix));
  Oid first = store->new_oids(load_batch);
  CommitRequest fill;
  std::vector<Oid> oids;
  std::vector<std::string> keys;
  for (std::uint32_t i = 0; i < load_batch; ++i) {
    Oid oid(first.value() + i);
    oids.push_back(oid);
    keys.push_back(prefix + "o:" + oid.str());
    fill.writes.push_back(WriteOp{oid, "User", "", encode(record(i))});
  }
  store->commit(fill);
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3, [&] { return cairn_loads(*store, oids, rounds); },
      [&] { return hiredis_hgetall(redis, keys, rounds); });
  return measured(name, "loads/s", cairn, "hiredis_hgetall_100", peer, 0.8);
}

}  // namespace

std::vector<Scenario> redis_scenarios() {
  return {
      {"redis.commit_1", commit_1},
      {"redis.load_100", load_100},
  };
}

}  // namespace cairn::bench
