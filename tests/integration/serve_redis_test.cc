// `cairn serve --redis`: the server keeps nothing that Redis lacks, so a new server on the same
// Redis has everything; two servers can front one Redis, each pushing the other's commits to its
// own watching clients (through the change stream RedisStore follows). Each test runs a private
// redis-server (support/redis_server.h) and real `cairn serve` processes on free ports.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cairn/database.h>
#include <cairn/store.h>
#include <cairn/value.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "support/child_process.h"
#include "support/process.h"
#include "support/redis_server.h"
#include "support/serve_commands.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Commit pushes one client received: when each came, and what it named.
class PushLog {
 public:
  struct Push {
    Clock::time_point at;
    std::uint64_t csn;
    std::vector<Oid> oids;
  };

  CommitListener listener() {
    return [this](std::uint64_t csn, std::span<const Oid> oids) {
      std::lock_guard lock(mu_);
      pushes_.push_back({Clock::now(), csn, {oids.begin(), oids.end()}});
      cv_.notify_all();
    };
  }

  // Waits at most `timeout` for a push naming `oid` that came at or after `since`; when it came.
  std::optional<Clock::time_point> wait_for(Oid oid, Clock::time_point since,
                                            std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    std::optional<Clock::time_point> found;
    cv_.wait_for(lock, timeout, [&] {
      for (const Push& push : pushes_) {
        if (push.at >= since &&
            std::find(push.oids.begin(), push.oids.end(), oid) != push.oids.end()) {
          found = push.at;
          return true;
        }
      }
      return false;
    });
    return found;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Push> pushes_;
};

Clock::duration median(std::vector<Clock::duration> delays) {
  std::sort(delays.begin(), delays.end());
  return delays[delays.size() / 2];
}

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

class ServeRedis : public ServeTest {
 protected:
  RedisServer redis_;
};

TEST_F(ServeRedis, ANewServerOnTheSameRedisReadsEverythingBack) {
  std::string url = redis_.url("restart:");
  {
    auto server = serve({"--redis", url});
    EXPECT_NE(server->ready_line().find("Redis"), std::string::npos) << server->ready_line();
    ProcessResult a =
        shell_on(*server, R"(set /greeting "hello"; set /list [1, 2, 3]; new /users; )"
                          R"(new /users/harry {"name": "Harry", "age": 17}; commit)");
    ASSERT_EQ(a.exit_code, 0) << a.out << a.err;
    ProcessResult b = shell_on(*server, "set /users/harry/age 18; set /n 42; commit");
    ASSERT_EQ(b.exit_code, 0) << b.out << b.err;
    std::optional<int> status = stop_server(*server);
    ASSERT_TRUE(status.has_value()) << "the server did not exit after --stop:\n" << server->log();
    EXPECT_EQ(*status, 0) << server->log();
  }
  // Nothing of the first server is left but what it wrote to Redis.
  EXPECT_FALSE(redis_.command({"KEYS", "restart:*"}).empty());
  {
    auto again = serve({"--redis", url});
    ProcessResult r = shell_on(*again, "ls; get /greeting; get /list; get /n; get /users/harry/");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, text_of({"greeting", "list", "n", "users", R"("hello")", "[1,2,3]", "42",
                              R"({"age":18,"name":"Harry"})"}));
    // Oids come from Redis too: objects created after the restart do not overwrite older ones.
    ProcessResult more =
        shell_on(*again, R"(new /users/ron {"name": "Ron"}; commit; get /users/ron/; )"
                         R"(get /users/harry/)");
    ASSERT_EQ(more.exit_code, 0) << more.err;
    EXPECT_EQ(lines_of(more.out).back(), R"({"age":18,"name":"Harry"})") << more.out;
    EXPECT_NE(more.out.find(R"({"name":"Ron"})"), std::string::npos) << more.out;
    EXPECT_EQ(stop_server(*again), 0) << again->log();
  }
  // And a program that opens Redis itself, with no server at all, sees the same.
  Database direct = Database::open(url);
  direct.view([](View& v) {
    PersistentMap root = v.root();
    EXPECT_EQ(root.get("greeting"), Value("hello"));
    EXPECT_EQ(root.get("n"), Value(std::int64_t{42}));
  });
}

TEST_F(ServeRedis, TwoServersOnOneRedisSeeAndPushEachOthersCommits) {
  std::string url = redis_.url("pair:");
  auto one = serve({"--redis", url});
  auto two = serve({"--redis", url});

  // A shell of server 1 commits; a shell of server 2, started afterwards, reads it.
  ProcessResult a = shell_on(*one, R"(set /greeting "from one"; commit)");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ProcessResult b = shell_on(*two, "get /greeting");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(b.out, "\"from one\"\n");

  // Clients of server 2 that watch: a subscriber, and a Database whose cache holds the object.
  std::unique_ptr<Store> watcher = cairn::open(two->url());
  PushLog pushes;
  Subscription subscription = watcher->subscribe(pushes.listener());
  Database writer = Database::open(one->url());
  Database reader = Database::open(two->url());
  Oid oid = writer.transaction([](Txn& tx) { return tx.create(Value(std::int64_t{0})).oid(); });
  auto read = [&] { return reader.view([&](View& v) { return v.get(oid).get().as_int(); }); };
  for (auto deadline = Clock::now() + 5s; read() != 0;) {
    ASSERT_LT(Clock::now(), deadline) << "server 2 never saw the object server 1 created";
  }

  // Delays from the start of each commit on server 1 (its round trip included).
  std::vector<Clock::duration> push_delays, view_delays;
  for (std::int64_t i = 1; i <= 10; ++i) {
    auto start = Clock::now();
    writer.transaction([&](Txn& tx) { tx.modify(oid, [&](Value& v) { v = Value(i); }); });
    std::optional<Clock::time_point> pushed = pushes.wait_for(oid, start, 5s);
    ASSERT_TRUE(pushed.has_value()) << "no push from server 2 for commit " << i << " on server 1";
    push_delays.push_back(*pushed - start);
    while (read() != i) {
      ASSERT_LT(Clock::now() - start, 5s) << "server 2's client never saw commit " << i;
      std::this_thread::sleep_for(1ms);
    }
    view_delays.push_back(Clock::now() - start);
  }
  EXPECT_LT(median(push_delays), 200ms) << "median push delay";
  EXPECT_LT(median(view_delays), 200ms) << "median delay until server 2's view saw the commit";
  std::cout << fmt::format(
      "[ redis    ] server 1 commit -> server 2 push: median {:.1f} ms, "
      "view refreshed: median {:.1f} ms\n",
      ms(median(push_delays)), ms(median(view_delays)));

  // The other way round: a shell of server 2 commits, a watcher of server 1 hears of it.
  std::unique_ptr<Store> watcher_one = cairn::open(one->url());
  PushLog pushes_one;
  Subscription subscription_one = watcher_one->subscribe(pushes_one.listener());
  auto start = Clock::now();
  ProcessResult back = shell_on(*two, "set /back 1; commit");
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_TRUE(pushes_one.wait_for(Oid{0}, start, 5s).has_value())
      << "server 1 did not push the root changed through server 2";
  EXPECT_EQ(shell_on(*one, "get /back").out, "1\n");

  subscription.reset();
  subscription_one.reset();
  EXPECT_EQ(stop_server(*one), 0) << one->log();
  // Server 2 goes on serving after the other stopped.
  EXPECT_EQ(shell_on(*two, "get /greeting").out, "\"from one\"\n");
  EXPECT_EQ(stop_server(*two), 0) << two->log();
}

}  // namespace
}  // namespace cairn::testing
