// RedisStore when Redis misbehaves: killed and restarted under a commit loop, frozen, gone for a
// while, or holding keys of the wrong type. Callers get cairn errors, never a crash or a hang,
// and no acknowledged commit is lost when Redis runs with appendfsync always.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <asio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/store.h"
#include "conformance/store_conformance.h"
#include "support/listener_log.h"
#include "support/redis_server.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The test server's URL with short timeouts, so that a dead or frozen server shows quickly.
std::string url_with_timeouts(const RedisServer& server, const std::string& prefix,
                              int timeout_ms = 1000) {
  return server.url(prefix) + "&timeout_ms=" + std::to_string(timeout_ms) +
         "&connect_timeout_ms=500";
}

// Waits until `done()` or `limit`; returns whether `done()` became true.
template <typename Fn>
bool wait_until(Fn done, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// While its change feed cannot reach Redis a store says it does not hear of commits, so that
// the object layer asks Redis what changed instead of trusting what reached it before.
TEST(RedisStoreFaults, AStoreWhoseFeedIsCutOffSaysItDoesNotHearCommits) {
  // Durable: a Redis restarted without its data is another database, whose history the feed
  // refuses to follow (RedisStoreTest.AFlushTakesTheChangeFeedDown).
  RedisServer server(RedisServerOptions{.durable = true});
  std::unique_ptr<Store> store = open(url_with_timeouts(server, "hearing:"));
  EXPECT_TRUE(store->hears_commits()) << "nobody listens: nothing to miss";
  ListenerLog heard;
  Subscription sub = store->subscribe(heard.listener());
  Oid oid = store->new_oids(1);
  CommitRequest request;
  request.writes.push_back(WriteOp{oid, "", "", encode(Value(1))});
  ASSERT_TRUE(heard.wait_for(store->commit(request), 5s));
  EXPECT_TRUE(store->hears_commits());
  server.kill();
  EXPECT_TRUE(wait_until([&] { return !store->hears_commits(); }, 10s));
  server.restart();
  EXPECT_TRUE(wait_until([&] { return store->hears_commits(); }, 20s));
}

// Runs `call` until it throws Corruption naming a database that went back, retrying over the
// IoErrors of a connection Redis dropped when it restarted. Returns whether it did.
template <typename Fn>
bool refuses_as_gone_back(Fn call) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    try {
      call();
      ADD_FAILURE() << "went on in an older copy of the database";
      return false;
    } catch (const IoError&) {
      std::this_thread::sleep_for(100ms);
    } catch (const Corruption& e) {
      EXPECT_NE(std::string(e.what()).find("went back"), std::string::npos) << e.what();
      return true;
    }
  }
  ADD_FAILURE() << "never reached Redis again";
  return false;
}

// An older copy of the database restored under open stores keeps its epoch, so only its CSN
// tells: it is below what the stores had seen. Going on, a store would validate reads against
// versions that now name other commits and hand out fencing tokens again. A store that meets
// the lower CSN refuses instead, and so does every later call of it, and it says it hears no
// commits, also once the CSNs pass the old ones again. (A store that makes no call until then
// cannot tell: redis-layout.md.)
TEST(RedisStoreFaults, AStoreRefusesToGoOnInAnOlderCopyOfItsDatabase) {
  RedisServer server;  // no persistence but the SAVE below, which restart() reads back
  std::unique_ptr<Store> store = open(url_with_timeouts(server, "restored:"));
  std::unique_ptr<Store> watcher = open(url_with_timeouts(server, "restored:"));
  ListenerLog heard;
  Subscription sub = watcher->subscribe(heard.listener());
  Oid oid = store->new_oids(1);
  auto put = [&](Store& s, int n) {
    CommitRequest request;
    request.writes.push_back(WriteOp{oid, "", "", encode(Value(n))});
    return s.commit(request);
  };
  put(*store, 1);
  ASSERT_EQ(server.command({"SAVE"}), std::vector<std::string>{"OK"});  // the copy
  put(*store, 2);
  std::uint64_t last = put(*store, 3);
  ASSERT_TRUE(heard.wait_for(last, 5s));
  EXPECT_EQ(watcher->load(std::vector<Oid>{oid}).csn, last);
  ASSERT_EQ(store->lock(LockRequest{"job", "me", 60s}), 1u);

  server.kill();
  server.restart();  // from the copy: CSN 1, no fence counter
  ASSERT_EQ(server.command({"GET", "restored:csn"}), std::vector<std::string>{"1"});
  EXPECT_TRUE(refuses_as_gone_back([&] { put(*store, 4); }));
  EXPECT_EQ(server.command({"GET", "restored:csn"}), std::vector<std::string>{"1"})
      << "the refused commit was applied";
  EXPECT_TRUE(refuses_as_gone_back([&] { store->lock(LockRequest{"job", "me", 60s}); }));
  EXPECT_EQ(server.command({"GET", "restored:fence:job"}), std::vector<std::string>{"(nil)"})
      << "a fencing token was handed out again";
  EXPECT_TRUE(refuses_as_gone_back([&] { watcher->load(std::vector<Oid>{oid}); }));
  EXPECT_TRUE(refuses_as_gone_back([&] { watcher->changes_since(0); }));
  EXPECT_FALSE(watcher->hears_commits());

  // A store opened now works in the database as it is; past the old CSNs, the old stores still
  // refuse, and the watcher still hears nothing: its feed, back up, would skip the commits in
  // between.
  std::unique_ptr<Store> fresh = open(url_with_timeouts(server, "restored:"));
  for (int n = 10; n < 15; ++n)
    put(*fresh, n);
  ASSERT_EQ(server.command({"GET", "restored:csn"}), std::vector<std::string>{"6"});
  EXPECT_TRUE(refuses_as_gone_back([&] { put(*store, 5); }));
  EXPECT_TRUE(refuses_as_gone_back([&] { watcher->load(std::vector<Oid>{oid}); }));
  EXPECT_TRUE(refuses_as_gone_back([&] { watcher->changes_since(last); }));
  std::this_thread::sleep_for(2s);  // over a feed's round (1 s): time to come back up, if it did
  EXPECT_FALSE(watcher->hears_commits()) << "the store heard commits of a history that went back";
  EXPECT_EQ(heard.csns().back(), last) << "the feed passed on commits of the restored history";
}

// The CSNs a store learns of without a call count too: those its change feed announced (the
// feed finding the database behind them latches the store, so that even a load answered above
// any CSN the store itself read refuses), and the one a lock was taken at.
TEST(RedisStoreFaults, CsnsLearnedFromTheFeedAndFromLocksCatchAnOlderCopy) {
  RedisServer server;
  std::unique_ptr<Store> writer = open(url_with_timeouts(server, "told:"));
  std::unique_ptr<Store> listening = open(url_with_timeouts(server, "told:"));
  std::unique_ptr<Store> locking = open(url_with_timeouts(server, "told:"));
  Oid oid = writer->new_oids(1);
  auto put = [&](Store& s, int n) {
    CommitRequest request;
    request.writes.push_back(WriteOp{oid, "", "", encode(Value(n))});
    return s.commit(request);
  };
  std::uint64_t first = put(*writer, 1);
  EXPECT_EQ(listening->load(std::vector<Oid>{oid}).csn, first);  // all it reads itself
  ListenerLog heard;
  Subscription sub = listening->subscribe(heard.listener());
  put(*writer, 2);
  ASSERT_EQ(server.command({"SAVE"}), std::vector<std::string>{"OK"});  // the copy, at CSN 2
  put(*writer, 3);
  std::uint64_t last = put(*writer, 4);
  ASSERT_TRUE(heard.wait_for(last, 5s));
  ASSERT_EQ(locking->lock(LockRequest{"job", "me", 60s}), 1u);  // taken at CSN 4

  server.kill();
  server.restart();
  ASSERT_EQ(server.command({"GET", "told:csn"}), std::vector<std::string>{"2"});
  // The feed finds the database behind what it announced and latches the store: its load,
  // answered at CSN 2, above the 1 it read itself, refuses.
  bool refused = wait_until(
      [&] {
        try {
          listening->load(std::vector<Oid>{oid});
        } catch (const Corruption& e) {
          EXPECT_NE(std::string(e.what()).find("went back"), std::string::npos) << e.what();
          return true;
        } catch (const IoError&) {
        }
        return false;
      },
      10s);
  EXPECT_TRUE(refused) << "a store whose feed had announced CSN 4 read the copy at CSN 2";
  EXPECT_FALSE(listening->hears_commits());
  EXPECT_TRUE(refuses_as_gone_back([&] { listening->changes_since(last); }));
  EXPECT_TRUE(refuses_as_gone_back([&] { locking->lock(LockRequest{"job", "me", 60s}); }));
  EXPECT_EQ(server.command({"GET", "told:fence:job"}), std::vector<std::string>{"(nil)"})
      << "fencing token 1 was handed out again";
}

TEST(RedisStoreFaults, AcknowledgedCommitsSurviveRedisKilledAndRestartedMidLoop) {
  RedisServer server(RedisServerOptions{.durable = true});
  const std::string prefix = "faults:";
  std::unique_ptr<Store> store = open(url_with_timeouts(server, prefix));
  // Another store follows the change stream throughout, and must hear every commit.
  std::unique_ptr<Store> follower = open(url_with_timeouts(server, prefix));
  ListenerLog heard;
  Subscription sub = follower->subscribe(heard.listener());

  struct Ack {
    Oid oid;
    std::int64_t value;
    std::uint64_t csn;
  };
  std::mutex mu;  // guards the three below
  std::vector<Ack> acks;
  std::vector<std::string> io_errors;
  std::vector<std::string> other_errors;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> slowest_call_ms{0};

  auto committer = [&](int thread) {
    for (std::int64_t i = 0; !stop; ++i) {
      std::int64_t value = thread * 1'000'000 + i;
      auto start = Clock::now();
      bool failed = false;
      try {
        Oid oid = store->new_oids(1);
        std::uint64_t csn = put(*store, oid, Value::Map{{"n", value}});
        std::lock_guard lk(mu);
        acks.push_back(Ack{oid, value, csn});
      } catch (const IoError& e) {
        failed = true;
        std::lock_guard lk(mu);
        io_errors.emplace_back(e.what());
      } catch (const std::exception& e) {
        failed = true;
        std::lock_guard lk(mu);
        other_errors.emplace_back(e.what());
      }
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      std::int64_t slowest = slowest_call_ms.load();
      while (ms.count() > slowest && !slowest_call_ms.compare_exchange_weak(slowest, ms.count())) {
      }
      if (failed) std::this_thread::sleep_for(5ms);  // pace the retries of a caller
    }
  };
  auto ack_count = [&] {
    std::lock_guard lk(mu);
    return acks.size();
  };

  std::vector<std::thread> pool;
  for (int t = 0; t < 2; ++t)
    pool.emplace_back(committer, t);
  ASSERT_TRUE(wait_until([&] { return ack_count() >= 200; }, 30s));
  server.kill();  // in the middle of commits: some sent, some waiting for a reply
  std::size_t before_restart = ack_count();
  std::this_thread::sleep_for(300ms);  // the outage callers run into
  server.restart();
  bool resumed = wait_until([&] { return ack_count() >= before_restart + 200; }, 30s);
  stop = true;
  for (auto& th : pool)
    th.join();
  ASSERT_TRUE(resumed) << "no commits went through after the restart";

  std::lock_guard lk(mu);
  EXPECT_TRUE(other_errors.empty()) << "first: " << other_errors.front();
  EXPECT_FALSE(io_errors.empty()) << "callers never noticed that Redis was gone";
  EXPECT_LT(slowest_call_ms.load(), 5000) << "a call hung";

  // Everything acknowledged is there, at the version the commit returned, read by a new store.
  std::unique_ptr<Store> reader = open(server.url(prefix));
  std::vector<Oid> oids;
  for (const Ack& a : acks)
    oids.push_back(a.oid);
  LoadResult loaded = reader->load(oids);
  std::size_t lost = 0;
  for (std::size_t i = 0; i < acks.size(); ++i) {
    const StoredObject& obj = loaded.objects[i];
    if (!obj.exists()) {
      ++lost;
      continue;
    }
    EXPECT_EQ(obj.version, acks[i].csn) << "oid " << acks[i].oid.str();
    EXPECT_EQ(decode(obj.data), Value(Value::Map{{"n", acks[i].value}}));
  }
  EXPECT_EQ(lost, 0u) << "of " << acks.size() << " acknowledged commits";

  // The follower reconnected and heard every acknowledged commit, each once, in CSN order.
  std::uint64_t last = 0;
  for (const Ack& a : acks)
    last = std::max(last, a.csn);
  ASSERT_TRUE(heard.wait_for(last, 10s));
  std::vector<std::uint64_t> csns = heard.csns();
  EXPECT_TRUE(std::is_sorted(csns.begin(), csns.end()));
  EXPECT_EQ(std::adjacent_find(csns.begin(), csns.end()), csns.end()) << "a commit heard twice";
  for (const Ack& a : acks) {
    EXPECT_TRUE(std::binary_search(csns.begin(), csns.end(), a.csn)) << "missed CSN " << a.csn;
  }
}

TEST(RedisStoreFaults, FrozenServerGivesTimeoutsNotHangs) {
  RedisServer server;
  std::unique_ptr<Store> store = open(url_with_timeouts(server, "frozen:", 300));
  Oid a = store->new_oids(1);
  Oid b = store->new_oids(1);
  put(*store, a, 1);

  server.pause();
  auto start = Clock::now();
  try {
    get(*store, a);
    ADD_FAILURE() << "a load from a frozen server returned";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("no reply within 300 ms"), std::string::npos) << e.what();
  }
  try {
    put(*store, b, 2);
    ADD_FAILURE() << "a commit to a frozen server returned";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("may or may not have been applied"), std::string::npos)
        << e.what();
  }
  // Two timeouts (a read that timed out is not resent), plus slack for a loaded machine.
  EXPECT_LT(Clock::now() - start, 3s);
  server.resume();

  // The store carries on. (The commit that timed out may yet be applied: Redis may still read
  // it from the abandoned socket. It wrote another object, so it cannot disturb this check.)
  std::uint64_t csn = put(*store, a, 3);
  StoredObject obj = get(*store, a);
  EXPECT_EQ(obj.version, csn);
  EXPECT_EQ(decode(obj.data), Value(3));
}

TEST(RedisStoreFaults, UnreachableServerBacksOffThenReconnects) {
  RedisServer server(RedisServerOptions{.durable = true});
  std::unique_ptr<Store> store = open(url_with_timeouts(server, "gone:"));
  Oid a = store->new_oids(1);
  std::uint64_t first = put(*store, a, 1);

  server.kill();
  // Every call fails with IoError; once a reconnect has failed, calls fail at once until the
  // next attempt is due instead of each trying to connect.
  int backing_off = 0;
  auto start = Clock::now();
  for (int i = 0; i < 20; ++i) {
    try {
      get(*store, a);
      ADD_FAILURE() << "a load succeeded with no server";
    } catch (const IoError& e) {
      if (std::string(e.what()).find("next attempt in") != std::string::npos) ++backing_off;
    }
  }
  EXPECT_GT(backing_off, 0);
  EXPECT_LT(Clock::now() - start, 2s);

  server.restart();
  // Back-off is at most 1 s: within a few seconds a call gets through again.
  std::optional<StoredObject> seen;
  wait_until(
      [&] {
        try {
          seen = get(*store, a);
          return true;
        } catch (const IoError&) {
          return false;
        }
      },
      5s);
  ASSERT_TRUE(seen.has_value()) << "never reconnected";
  EXPECT_EQ(seen->version, first);
  EXPECT_EQ(decode(seen->data), Value(1));
  EXPECT_GT(put(*store, a, 2), first);
}

TEST(RedisStoreFaults, ScriptErrorIsAProtocolErrorAndWritesNothing) {
  RedisServer server;
  const std::string prefix = "script:";
  std::unique_ptr<Store> store = open(server.url(prefix));
  Oid a = store->new_oids(1);
  server.command({"SET", prefix + "csn", "not a number"});
  try {
    put(*store, a, 1, "T", "k");
    ADD_FAILURE() << "committed with a broken CSN counter";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("not an integer"), std::string::npos) << e.what();
  }
  EXPECT_EQ(server.command({"EXISTS", prefix + "o:" + a.str()}), std::vector<std::string>{"0"});
  EXPECT_EQ(server.command({"HGET", prefix + "k:T", "k"}), std::vector<std::string>{"(nil)"});

  server.command({"SET", prefix + "csn", "41"});
  EXPECT_EQ(put(*store, a, 1, "T", "k"), 42u) << "the store works again once the key is fixed";
}

TEST(RedisStoreFaults, KeysOfTheWrongTypeAreProtocolErrors) {
  RedisServer server;
  const std::string prefix = "wrongtype:";
  std::unique_ptr<Store> store = open(server.url(prefix));
  Oid a = store->new_oids(1);
  server.command({"SET", prefix + "o:" + a.str(), "a string, not a hash"});
  EXPECT_THROW(get(*store, a), ProtocolError);
  server.command({"HSET", prefix + "changes", "f", "v"});
  EXPECT_THROW(store->changes_since(0), ProtocolError);
  server.command({"SADD", prefix + "k:T", "k"});
  EXPECT_THROW(store->find_key("T", "k"), ProtocolError);
  // The connection is still in step: a good call after the bad ones gets its own reply.
  Oid b = store->new_oids(1);
  EXPECT_GT(b.value(), a.value());
  EXPECT_FALSE(get(*store, b).exists());
}

TEST(RedisStoreFaults, TimeoutParametersAreValidated) {
  RedisServer server;
  EXPECT_THROW(open(server.url("p:") + "&timeout_ms=soon"), InvalidArgument);
  EXPECT_THROW(open(server.url("p:") + "&connect_timeout_ms=0"), InvalidArgument);
  EXPECT_NO_THROW(open(server.url("p:") + "&timeout_ms=250&connect_timeout_ms=250"));
}

// A Redis that answers every command with LOADING, as one does while it reloads its data
// after a restart: callers get IoError (try again), never a protocol error.
TEST(RedisStoreFaults, ARedisStillLoadingItsDataIsUnavailableNotBroken) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::uint16_t port = acceptor.local_endpoint().port();
  std::atomic<bool> done{false};
  std::thread fake([&] {
    while (!done) {
      asio::error_code ec;
      asio::ip::tcp::socket peer = acceptor.accept(ec);
      if (ec || done) return;
      char buf[4096];
      while (peer.read_some(asio::buffer(buf), ec) > 0 && !ec) {
        asio::write(
            peer,
            asio::buffer(std::string_view("-LOADING Redis is loading the dataset in memory\r\n")),
            ec);
      }
    }
  });
  try {
    std::unique_ptr<Store> store = open(fmt::format("redis://127.0.0.1:{}/0?prefix=t:", port));
    Oid oids[] = {Oid(1)};
    store->load(oids);
    ADD_FAILURE() << "a loading Redis answered a load";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("LOADING"), std::string::npos) << e.what();
  } catch (const Error& e) {
    ADD_FAILURE() << "not an IoError: " << e.what();
  }
  done = true;
  asio::ip::tcp::socket wake(io);
  asio::error_code ignored;
  wake.connect(acceptor.local_endpoint(), ignored);
  fake.join();
}

}  // namespace
}  // namespace cairn::testing
