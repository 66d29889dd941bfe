// Subscriptions and the client replica (src/txn/replica_store.h) against a live in-process
// server: reads of subscribed objects make no round trips, other clients' commits reach the
// replica without syncing, unsubscribing frees it, and views served from it stay consistent.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "cairn/codec.h"
#include "cairn/database.h"
#include "cairn/error.h"
#include "support/eventually.h"
#include "support/served_store.h"
#include "txn/replica_store.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

net::ServerOptions on_the_loop() {
  net::ServerOptions options;
  options.workers = 0;
  return options;
}

// Counts every call that is a round trip to the server.
class CountingStore final : public Store {
 public:
  explicit CountingStore(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {}
  std::atomic<int> loads{0};  // on every thread: the replica's refresher included
  std::atomic<int> scans{0};
  std::atomic<int> changes{0};

  LoadResult load(std::span<const Oid> oids) override {
    count(loads);
    if (std::this_thread::get_id() != owner_) {
      std::unique_lock lock(gate_mu_);
      ++held_;
      gate_cv_.wait(lock, [&] { return !holding_; });
      --held_;
    }
    return inner_->load(oids);
  }
  std::uint64_t commit(const CommitRequest& r) override { return inner_->commit(r); }
  Changes changes_since(std::uint64_t csn) override {
    count(changes);
    return inner_->changes_since(csn);
  }
  Subscription subscribe(CommitListener l) override { return inner_->subscribe(std::move(l)); }
  Oid new_oids(std::uint32_t count) override { return inner_->new_oids(count); }
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override {
    count(scans);
    return inner_->scan_type(type, after, limit);
  }
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override {
    count(scans);
    return inner_->scan_keys(type, prefix, after, limit);
  }
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override {
    count(scans);
    return inner_->find_key(type, key);
  }
  std::optional<std::uint64_t> lock(const LockRequest& r) override { return inner_->lock(r); }
  bool unlock(std::string_view name, std::string_view owner) override {
    return inner_->unlock(name, owner);
  }
  bool renew(std::string_view name, std::string_view owner,
             std::chrono::milliseconds ttl) override {
    return inner_->renew(name, owner, ttl);
  }
  PackStats pack() override { return inner_->pack(); }
  bool is_remote() const override { return inner_->is_remote(); }
  bool hears_commits() const override { return inner_->hears_commits(); }

  // The round trips of the thread that made this store, the test's: what its reads cost. The
  // replica's refresher loads on a thread of its own at moments a test cannot see (a batch it
  // took while a subscription's initial load was under way reaches the server after that load
  // made the replica current), so its loads count in `loads` only.
  int round_trips() const { return own_round_trips_; }

  // From hold_background_loads() until release(), a load on another thread (the refresher)
  // waits once counted, before it goes to the server: as if that thread stalled right there.
  void hold_background_loads() {
    std::lock_guard lock(gate_mu_);
    holding_ = true;
  }
  void release() {
    {
      std::lock_guard lock(gate_mu_);
      holding_ = false;
    }
    gate_cv_.notify_all();
  }
  int held() const {
    std::lock_guard lock(gate_mu_);
    return held_;
  }

 private:
  void count(std::atomic<int>& calls) {
    ++calls;
    if (std::this_thread::get_id() == owner_) ++own_round_trips_;
  }

  std::unique_ptr<Store> inner_;
  std::thread::id owner_ = std::this_thread::get_id();
  std::atomic<int> own_round_trips_{0};
  mutable std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool holding_ = false;
  int held_ = 0;
};

// A server, a writing client A and a subscribing client B whose store calls are counted.
struct Clients {
  TestServer server{make_memory_store(), on_the_loop()};
  Database a{server.connect()};
  CountingStore* counted = nullptr;
  Database b = make_b();

  Database make_b() {
    auto store = std::make_unique<CountingStore>(server.connect());
    counted = store.get();
    return Database(std::move(store));
  }
};

std::vector<Oid> create_all(Database& db, const std::string& type, int n, std::int64_t value) {
  return db.transaction([&](Txn& tx) {
    std::vector<Oid> oids;
    for (int i = 0; i < n; ++i)
      oids.push_back(tx.create(Value(value), type).oid());
    return oids;
  });
}

std::vector<Oid> scan_all(Store& store, std::string_view type) {
  std::vector<Oid> out;
  for (const ScanEntry& e : store.scan_type(type, Oid{}, 100'000))
    out.push_back(e.oid);
  return out;
}

// Waits until B's replica has heard of every commit so far and reloaded what they changed.
bool replica_current(Database& b, Store& server_side) {
  std::uint64_t csn = server_side.load({}).csn;
  return eventually([&] {
    DatabaseStats stats = b.stats();
    return stats.replica_csn >= csn && stats.replica_pending == 0;
  });
}

TEST(Replica, ViewsOfASubscribedTypeMakeNoRoundTrips) {
  Clients c;
  std::vector<Oid> accounts = create_all(c.a, "Account", 50, 100);
  create_all(c.a, "Other", 10, 1);

  Subscription sub = c.b.subscribe_type("Account");
  ASSERT_TRUE(sub.active());
  EXPECT_EQ(c.b.stats().replica_objects, 50u) << "only the subscribed type is replicated";
  // Commits B heard of late may still be checked for new accounts; scans wait for that.
  ASSERT_TRUE(replica_current(c.b, c.server.backing()));

  int before = c.counted->round_trips();
  for (int round = 0; round < 3; ++round) {
    std::int64_t total = c.b.view([&](View& v) {
      std::int64_t sum = 0;
      for (const ScanEntry& e : c.b.store().scan_type("Account", Oid{}, 1000))
        sum += v.get(e.oid).get().as_int();
      return sum;
    });
    EXPECT_EQ(total, 5000);
  }
  // A fresh connection (its cache empty) reads every account from the replica too.
  Connection conn = c.b.connect();
  for (Oid oid : accounts) {
    EXPECT_EQ(conn.get(oid).get().as_int(), 100);
    EXPECT_EQ(conn.get(oid).type(), "Account");
  }
  EXPECT_EQ(c.counted->round_trips(), before) << "loads, scans or changes_since went to the server";
  EXPECT_GE(c.b.stats().replica_reads, 50u + 3u);
}

TEST(Replica, OtherClientsCommitsReachTheReplicaWithoutSync) {
  Clients c;
  std::vector<Oid> items = create_all(c.a, "Item", 5, 0);
  Subscription sub = c.b.subscribe_type("Item");
  auto read_b = [&](Oid oid) -> std::optional<std::int64_t> {
    return c.b.view([&](View& v) -> std::optional<std::int64_t> {
      Object obj = v.get(oid);
      if (!obj.exists()) return std::nullopt;
      return obj.get().as_int();
    });
  };
  auto listed_b = [&](Oid oid) {
    std::vector<Oid> all = scan_all(c.b.store(), "Item");
    return std::find(all.begin(), all.end(), oid) != all.end();
  };

  std::vector<Clock::duration> delays;
  for (std::int64_t i = 1; i <= 10; ++i) {
    // Modify.
    auto start = Clock::now();
    c.a.transaction([&](Txn& tx) { tx.modify(items[0], [&](Value& v) { v = Value(i); }); });
    ASSERT_TRUE(eventually([&] { return read_b(items[0]) == i; })) << "modification " << i;
    delays.push_back(Clock::now() - start);
    // Create.
    start = Clock::now();
    Oid created = c.a.transaction([&](Txn& tx) { return tx.create(Value(i), "Item").oid(); });
    ASSERT_TRUE(eventually([&] { return read_b(created) == i && listed_b(created); }))
        << "creation " << i;
    delays.push_back(Clock::now() - start);
    // Delete.
    start = Clock::now();
    c.a.transaction([&](Txn& tx) { tx.remove(created); });
    ASSERT_TRUE(eventually([&] { return !read_b(created) && !listed_b(created); }))
        << "deletion " << i;
    delays.push_back(Clock::now() - start);
  }
  std::sort(delays.begin(), delays.end());
  EXPECT_LT(delays[delays.size() / 2], 100ms) << "median delay until B's view saw A's commit";

  // Once the refresher has caught up, reads are local again: the new object of the type and
  // the changed one included.
  Oid late = c.a.transaction([&](Txn& tx) { return tx.create(Value(7), "Item").oid(); });
  c.a.transaction([&](Txn& tx) { tx.modify(items[1], [](Value& v) { v = Value(8); }); });
  ASSERT_TRUE(replica_current(c.b, c.server.backing()));
  ASSERT_EQ(c.b.stats().replica_objects, items.size() + 1);
  ASSERT_EQ(read_b(items[1]), 8);
  int before = c.counted->round_trips();
  EXPECT_EQ(read_b(late), 7);
  EXPECT_EQ(read_b(items[0]), 10);
  EXPECT_EQ(c.counted->round_trips(), before);
}

// A subscribe call loads the scope's objects itself; the refresher leaves them to it rather
// than load them a second time.
TEST(Replica, SubscribingLoadsTheInitialObjectsOnce) {
  Clients c;
  create_all(c.a, "Item", 20, 1);
  // The push of that commit first: arriving during the subscribe call, it would rightly make the
  // refresher load what it names.
  ASSERT_TRUE(replica_current(c.b, c.server.backing()));
  int loads = c.counted->loads;
  c.counted->hold_background_loads();  // a refresher load would be counted and then held
  Subscription sub = c.b.subscribe_type("Item");
  ASSERT_EQ(c.b.stats().replica_objects, 20u);
  std::this_thread::sleep_for(100ms);  // time enough for the refresher to have tried
  int held = c.counted->held();
  int after = c.counted->loads;
  c.counted->release();
  EXPECT_EQ(held, 0) << "the refresher loaded what the subscribe call was loading";
  EXPECT_EQ(after, loads + 1);
}

TEST(Replica, UnsubscribeStopsUpdatesAndFreesTheReplica) {
  Clients c;
  std::vector<Oid> items = create_all(c.a, "Item", 20, 1);
  Subscription sub = c.b.subscribe_type("Item");
  ASSERT_EQ(c.b.stats().replica_objects, 20u);

  // Subscribed: A's change is reloaded by the replica on its own, and B reads it from there.
  // Not checked by counting a load after the commit: a load the refresher already had under way
  // (a batch taken during the subscription) may be answered after the commit and bring it, and
  // then none follows (ALoadUnderWayWhenACommitLandsBringsItsState). Current means the refresher
  // has installed what the commit made pending: no load of its is still under way to count below.
  c.a.transaction([&](Txn& tx) { tx.modify(items[0], [](Value& v) { v = Value(2); }); });
  ASSERT_TRUE(replica_current(c.b, c.server.backing()))
      << "the replica did not reload a changed object";
  int before = c.counted->round_trips();
  EXPECT_EQ(c.b.view([&](View& v) { return v.get(items[0]).get().as_int(); }), 2);
  EXPECT_EQ(c.counted->round_trips(), before) << "the changed object was read from the server";
  EXPECT_EQ(c.b.stats().replica_objects, 20u);

  sub.reset();
  EXPECT_FALSE(sub.active());
  EXPECT_EQ(c.b.stats().replica_objects, 0u);

  // Unsubscribed: commits no longer make B load anything, and reads go to the server.
  int loads = c.counted->loads;
  for (std::int64_t i = 3; i < 8; ++i)
    c.a.transaction([&](Txn& tx) { tx.modify(items[1], [&](Value& v) { v = Value(i); }); });
  create_all(c.a, "Item", 3, 1);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(c.counted->loads.load(), loads) << "B still loads what other clients commit";
  EXPECT_EQ(c.b.view([&](View& v) { return v.get(items[1]).get().as_int(); }), 7);
  EXPECT_GT(c.counted->loads.load(), loads);
  EXPECT_EQ(c.b.stats().replica_objects, 0u);
}

// A load the refresher has under way when another commit changes what it loads is answered
// after that commit, so it brings the commit's state itself and no load follows: how the
// replica may catch up with a commit without loading anything after it.
TEST(Replica, ALoadUnderWayWhenACommitLandsBringsItsState) {
  Clients c;
  std::vector<Oid> items = create_all(c.a, "Item", 3, 1);
  c.counted->hold_background_loads();
  struct Release {
    CountingStore& store;
    ~Release() { store.release(); }  // before the replica joins its refresher
  } release{*c.counted};
  Subscription sub = c.b.subscribe_type("Item");
  ASSERT_EQ(c.b.stats().replica_objects, 3u);

  // The refresher loads what this commit changed (or a batch it took during the subscription,
  // which holds the same oid), and is held once that load is counted.
  c.a.transaction([&](Txn& tx) { tx.modify(items[0], [](Value& v) { v = Value(2); }); });
  ASSERT_TRUE(eventually([&] { return c.counted->held() == 1; }));
  int loads = c.counted->loads;
  c.a.transaction([&](Txn& tx) { tx.modify(items[0], [](Value& v) { v = Value(3); }); });
  std::uint64_t csn = c.server.backing().load({}).csn;
  ASSERT_TRUE(eventually([&] { return c.b.stats().replica_csn >= csn; }));
  c.counted->release();

  ASSERT_TRUE(replica_current(c.b, c.server.backing()));
  EXPECT_EQ(c.counted->loads.load(), loads) << "the load under way did not bring commit " << csn;
  int before = c.counted->round_trips();
  EXPECT_EQ(c.b.view([&](View& v) { return v.get(items[0]).get().as_int(); }), 3);
  EXPECT_EQ(c.counted->round_trips(), before);
}

// Cut off from the server, a client serves nothing from its replica as current: the reads a
// subscription covers fail with IoError as any other read does, and once the server is back
// they are answered again (docs/architecture.md). They used to answer from the replica for as
// long as the server was down.
TEST(Replica, ReadsFailWhileTheServerIsDown) {
  Clients c;
  Oid item = c.a.transaction([](Txn& tx) { return tx.create(Value(1), "T", "k").oid(); });
  Subscription sub = c.b.subscribe_type("T");
  ASSERT_TRUE(replica_current(c.b, c.server.backing()));
  Store& store = c.b.store();
  ASSERT_EQ(store.find_key("T", "k"), item);

  c.server.stop();
  ASSERT_TRUE(eventually([&] { return !store.hears_commits(); }));
  std::vector<Oid> one = {item};
  EXPECT_THROW(store.load(one), IoError);
  EXPECT_THROW(store.scan_type("T", Oid{}, 10), IoError);
  EXPECT_THROW(store.scan_keys("T", "", "", 10), IoError);
  EXPECT_THROW(store.find_key("T", "k"), IoError);
  EXPECT_THROW(c.b.view([&](View& v) { return v.get(item).get().as_int(); }), IoError);

  c.server.restart();
  ASSERT_TRUE(eventually([&] { return store.hears_commits(); }, std::chrono::seconds(20)));
  EXPECT_EQ(store.find_key("T", "k"), item);
  EXPECT_EQ(c.b.view([&](View& v) { return v.get(item).get().as_int(); }), 1);
}

// Scans answered from the replica page exactly as the server's: a scan from past the last key
// in scope started again from the first, so paging through keys never ended.
TEST(Replica, ScansFromTheReplicaPageAsTheServersDo) {
  Clients c;
  c.a.transaction([](Txn& tx) {
    for (const char* key : {"a", "b", "c", "d", "p:1", "p:2", "p:3", "q"})
      tx.create(Value(1), "P", key);
  });
  Subscription sub = c.b.subscribe_type("P");
  ASSERT_TRUE(replica_current(c.b, c.server.backing()));
  Store& replica = c.b.store();
  Store& server = c.server.backing();
  auto keys = [](const std::vector<ScanEntry>& entries) {
    std::vector<std::string> out;
    for (const ScanEntry& e : entries)
      out.push_back(e.key);
    return out;
  };
  int before = c.counted->round_trips();
  for (std::string prefix : {"", "p:", "b", "z"}) {
    for (std::string after : {"", "a", "b", "c", "p", "p:1", "p:3", "q", "r", "zz"}) {
      for (std::size_t limit : {1u, 2u, 100u}) {
        EXPECT_EQ(keys(replica.scan_keys("P", prefix, after, limit)),
                  keys(server.scan_keys("P", prefix, after, limit)))
            << "prefix \"" << prefix << "\" after \"" << after << "\" limit " << limit;
      }
    }
    // Paging ends, having listed every key once.
    std::vector<std::string> paged;
    std::string after;
    for (int pages = 0; pages < 20; ++pages) {
      std::vector<ScanEntry> page = replica.scan_keys("P", prefix, after, 3);
      for (const ScanEntry& e : page)
        paged.push_back(e.key);
      if (page.size() < 3) break;
      after = page.back().key;
    }
    EXPECT_EQ(paged, keys(server.scan_keys("P", prefix, "", 100))) << "prefix " << prefix;
  }
  EXPECT_EQ(c.counted->round_trips(), before) << "the scans were not answered by the replica";
}

TEST(Replica, KeyAndObjectScopes) {
  Clients c;
  Oid red1 = c.a.transaction([](Txn& tx) { return tx.create(Value(1), "Idx", "red:1").oid(); });
  c.a.transaction([](Txn& tx) { tx.create(Value(2), "Idx", "red:2"); });
  Oid blue = c.a.transaction([](Txn& tx) { return tx.create(Value(3), "Idx", "blue:1").oid(); });
  Oid plain = c.a.transaction([](Txn& tx) { return tx.create(Value(4)).oid(); });
  Oid never_written = c.a.store().new_oids(1);

  Subscription reds = c.b.subscribe_keys("Idx", "red:");
  Subscription singles = c.b.subscribe_objects({plain, never_written});
  EXPECT_EQ(c.b.stats().replica_objects, 4u);
  ASSERT_TRUE(replica_current(c.b, c.server.backing()));

  int before = c.counted->round_trips();
  Store& store = c.b.store();
  EXPECT_EQ(store.find_key("Idx", "red:1"), red1);
  EXPECT_EQ(store.find_key("Idx", "red:9"), std::nullopt);
  std::vector<ScanEntry> listed = store.scan_keys("Idx", "red:", "", 100);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].key, "red:1");
  EXPECT_EQ(listed[1].key, "red:2");
  EXPECT_EQ(store.scan_keys("Idx", "red:", "red:1", 100).size(), 1u);
  c.b.view([&](View& v) {
    EXPECT_EQ(v.get(red1).get().as_int(), 1);
    EXPECT_EQ(v.get(plain).get().as_int(), 4);
    EXPECT_FALSE(v.get(never_written).exists());
  });
  EXPECT_EQ(c.counted->round_trips(), before);

  // Outside the scopes: the server answers.
  EXPECT_EQ(store.find_key("Idx", "blue:1"), blue);
  EXPECT_EQ(c.b.view([&](View& v) { return v.get(blue).get().as_int(); }), 3);
  EXPECT_GT(c.counted->round_trips(), before);

  // A new key in the scope enters; a key moved out of it leaves.
  Oid red3 = c.a.transaction([](Txn& tx) { return tx.create(Value(5), "Idx", "red:3").oid(); });
  c.a.transaction([&](Txn& tx) { tx.get(red1).set(Value(1), "Idx", "green:1"); });
  ASSERT_TRUE(eventually([&] {
    std::vector<ScanEntry> now = store.scan_keys("Idx", "red:", "", 100);
    return now.size() == 2 && now[0].oid != red1 && now[1].oid == red3;
  }));
  ASSERT_TRUE(eventually([&] { return c.b.stats().replica_objects == 4u; }));

  // The never-written oid comes into being.
  c.a.transaction([&](Txn& tx) { tx.get(never_written).set(Value(6)); });
  ASSERT_TRUE(
      eventually([&] { return c.b.view([&](View& v) { return v.get(never_written).exists(); }); }));
  singles.reset();
  reds.reset();
  EXPECT_EQ(c.b.stats().replica_objects, 0u);
}

TEST(Replica, BankTotalHoldsInViewsServedFromTheReplica) {
  Clients c;
  constexpr int accounts = 10;
  std::vector<Oid> oids = create_all(c.a, "Account", accounts, 100);
  Subscription sub = c.b.subscribe_type("Account");

  std::atomic<bool> stop{false};
  std::atomic<int> transfers{0};
  std::thread writer([&] {
    std::mt19937 rng(7);
    while (!stop) {
      std::size_t from = rng() % accounts;
      std::size_t to = (from + 1 + rng() % (accounts - 1)) % accounts;
      std::int64_t amount = rng() % 20;
      c.a.transaction([&](Txn& tx) {
        tx.modify(oids[from], [&](Value& v) { v = Value(v.as_int() - amount); });
        tx.modify(oids[to], [&](Value& v) { v = Value(v.as_int() + amount); });
      });
      ++transfers;
    }
  });
  // A second reader reads through fresh connections, whose empty caches make every read a load
  // (from the replica when it holds the account, else from the server).
  std::atomic<int> fresh_reads{0};
  std::atomic<int> fresh_errors{0};
  std::thread fresh_reader([&] {
    while (!stop) {
      Connection conn = c.b.connect();
      std::int64_t total = 0;
      try {
        for (Oid oid : oids)
          total += conn.get(oid).get().as_int();
      } catch (const ConflictError&) {
        continue;  // an account changed after others were read: a newer snapshot is needed
      }
      if (total != 100 * accounts) ++fresh_errors;
      ++fresh_reads;
    }
  });
  std::uint64_t local_before = c.b.stats().replica_reads;
  std::set<std::vector<std::int64_t>> states;
  int views = 0;
  for (auto end = Clock::now() + 1500ms; Clock::now() < end; ++views) {
    std::vector<std::int64_t> balances = c.b.view([&](View& v) {
      std::vector<std::int64_t> out;
      for (Oid oid : oids)
        out.push_back(v.get(oid).get().as_int());
      return out;
    });
    std::int64_t total = 0;
    for (std::int64_t b : balances)
      total += b;
    ASSERT_EQ(total, 100 * accounts) << "view " << views << " saw a partly applied transfer";
    states.insert(balances);
  }
  stop = true;
  writer.join();
  fresh_reader.join();
  EXPECT_EQ(fresh_errors.load(), 0) << "of " << fresh_reads.load() << " fresh connections";
  EXPECT_GT(fresh_reads.load(), 10);
  EXPECT_GT(transfers.load(), 10);
  EXPECT_GT(states.size(), 2u) << "the reader never saw the writer's transfers";
  EXPECT_GT(c.b.stats().replica_reads, local_before) << "no view was served from the replica";

  // Quiet again: the replica converges on the final balances.
  std::vector<std::int64_t> final_a = c.a.view([&](View& v) {
    std::vector<std::int64_t> out;
    for (Oid oid : oids)
      out.push_back(v.get(oid).get().as_int());
    return out;
  });
  ASSERT_TRUE(replica_current(c.b, c.server.backing()));
  ASSERT_EQ(c.b.stats().replica_objects, accounts);
  int before = c.counted->round_trips();
  std::vector<std::int64_t> final_b = c.b.view([&](View& v) {
    std::vector<std::int64_t> out;
    for (Oid oid : oids)
      out.push_back(v.get(oid).get().as_int());
    return out;
  });
  EXPECT_EQ(final_b, final_a);
  EXPECT_EQ(c.counted->round_trips(), before);
}

TEST(Replica, OwnCommitsAreReadBackAtOnce) {
  Clients c;
  std::vector<Oid> items = create_all(c.b, "Item", 3, 0);
  Subscription sub = c.b.subscribe_type("Item");
  for (std::int64_t i = 1; i <= 50; ++i) {
    c.b.transaction([&](Txn& tx) { tx.modify(items[i % 3], [&](Value& v) { v = Value(i); }); });
    // Read-your-writes, whether or not the push has reached the replica yet: in a view (whose
    // pooled connection may have cached the write) and in a new connection (which has not).
    EXPECT_EQ(c.b.view([&](View& v) { return v.get(items[i % 3]).get().as_int(); }), i);
    Connection fresh = c.b.connect();
    EXPECT_EQ(fresh.get(items[i % 3]).get().as_int(), i);
  }
}

// A remote-looking store over a shared local one whose commit notifications can be held back,
// as a slow network may deliver a push after the reply to the commit it reports.
class HeldPushStore final : public Store {
 public:
  explicit HeldPushStore(Store& inner) : inner_(inner) {
    subscription_ = inner_.subscribe([this](std::uint64_t csn, std::span<const Oid> oids) {
      std::lock_guard lock(mu_);
      queue_.emplace_back(csn, std::vector<Oid>(oids.begin(), oids.end()));
      if (!hold_) deliver();
    });
  }
  ~HeldPushStore() override { subscription_.reset(); }
  void hold() {
    std::lock_guard lock(mu_);
    hold_ = true;
  }
  void release() {
    std::lock_guard lock(mu_);
    hold_ = false;
    deliver();
  }

  LoadResult load(std::span<const Oid> oids) override { return inner_.load(oids); }
  std::uint64_t commit(const CommitRequest& r) override { return inner_.commit(r); }
  Changes changes_since(std::uint64_t csn) override { return inner_.changes_since(csn); }
  Subscription subscribe(CommitListener l) override {
    std::lock_guard lock(mu_);
    std::uint64_t id = next_++;
    listeners_.emplace(id, std::move(l));
    return Subscription([this, id] {
      std::lock_guard guard(mu_);
      listeners_.erase(id);
    });
  }
  Oid new_oids(std::uint32_t count) override { return inner_.new_oids(count); }
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override {
    return inner_.scan_type(type, after, limit);
  }
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override {
    return inner_.scan_keys(type, prefix, after, limit);
  }
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override {
    return inner_.find_key(type, key);
  }
  std::optional<std::uint64_t> lock(const LockRequest& r) override { return inner_.lock(r); }
  bool unlock(std::string_view name, std::string_view owner) override {
    return inner_.unlock(name, owner);
  }
  bool renew(std::string_view name, std::string_view owner,
             std::chrono::milliseconds ttl) override {
    return inner_.renew(name, owner, ttl);
  }
  PackStats pack() override { return inner_.pack(); }
  bool is_remote() const override { return true; }

 private:
  void deliver() {
    for (auto& [csn, oids] : queue_)
      for (auto& [id, listener] : listeners_)
        listener(csn, oids);
    queue_.clear();
  }

  Store& inner_;
  std::mutex mu_;  // held while listeners run
  bool hold_ = false;
  std::vector<std::pair<std::uint64_t, std::vector<Oid>>> queue_;
  std::map<std::uint64_t, CommitListener> listeners_;
  std::uint64_t next_ = 1;
  Subscription subscription_;
};

std::uint64_t put(Store& store, Oid oid, std::int64_t v, const std::string& type = "T") {
  CommitRequest request;
  request.writes.push_back(WriteOp{oid, type, "", encode(Value(v))});
  return store.commit(request);
}

TEST(Replica, ReadsNeverFallBehindWhatTheStoreHasReported) {
  auto shared = make_memory_store();
  auto held = std::make_unique<HeldPushStore>(*shared);
  HeldPushStore& pushes = *held;
  Database b(std::move(held));
  Oid x = shared->new_oids(1);
  put(*shared, x, 1);
  Subscription sub = b.subscribe_type("T");
  ASSERT_EQ(b.stats().replica_objects, 1u);

  // B's own commit returns before its push arrives: B still reads what it wrote.
  pushes.hold();
  b.transaction([&](Txn& tx) { tx.modify(x, [](Value& v) { v = Value(2); }); });
  Connection fresh = b.connect();
  EXPECT_EQ(fresh.get(x).get().as_int(), 2);
  EXPECT_EQ(b.view([&](View& v) { return v.get(x).get().as_int(); }), 2);

  // Another writer's commit, not pushed yet: B may not see it, but never goes back.
  put(*shared, x, 3);
  std::int64_t seen = b.view([&](View& v) { return v.get(x).get().as_int(); });
  EXPECT_TRUE(seen == 2 || seen == 3) << seen;
  pushes.release();
  ASSERT_TRUE(eventually([&] {
    return b.view([&](View& v) { return v.get(x).get().as_int(); }) == 3 &&
           b.stats().replica_objects == 1 && b.stats().replica_csn == shared->load({}).csn;
  }));
  // Caught up: the replica answers again.
  std::uint64_t local = b.stats().replica_reads;
  Connection again = b.connect();
  EXPECT_EQ(again.get(x).get().as_int(), 3);
  EXPECT_GT(b.stats().replica_reads, local);
}

TEST(Replica, ALoadNewerThanTheReplicaWaitsForItsPushes) {
  auto shared = make_memory_store();
  auto held = std::make_unique<HeldPushStore>(*shared);
  HeldPushStore& pushes = *held;
  Database b(std::move(held));
  Oid x = shared->new_oids(1);
  Oid y = shared->new_oids(1);
  put(*shared, x, 1);
  put(*shared, y, 1);
  Subscription sub = b.subscribe_type("T");
  ASSERT_EQ(b.stats().replica_objects, 2u);

  // Two commits change x; the replica hears of neither yet, and must not answer for x.
  pushes.hold();
  put(*shared, x, 2);
  put(*shared, x, 3);
  EXPECT_EQ(b.stats().replica_objects, 2u) << "the replica dropped x before hearing of a commit";
  pushes.release();
  ASSERT_TRUE(eventually([&] {
    auto stats = b.stats();
    return stats.replica_objects == 2 && stats.replica_csn == shared->load({}).csn;
  }));
  Connection fresh = b.connect();
  std::uint64_t local = b.stats().replica_reads;
  EXPECT_EQ(fresh.get(x).get().as_int(), 3);
  EXPECT_EQ(fresh.get(y).get().as_int(), 1);
  EXPECT_GT(b.stats().replica_reads, local);
}

// A store whose history can be made to forget every commit, as a server's does when it starts
// over a file changed while it was down, or after a pack.
class ForgetfulStore final : public OverMemoryStore {
 public:
  std::atomic<bool> forget{false};
  Changes changes_since(std::uint64_t csn) override {
    Changes changes = inner().changes_since(csn);
    if (forget && csn < changes.csn) {
      changes.oids.clear();
      changes.complete = false;
    }
    return changes;
  }
};

std::uint64_t write_int(Store& store, Oid oid, std::int64_t value, std::string type = "T") {
  CommitRequest request;
  request.writes.push_back(WriteOp{oid, std::move(type), "", encode(Value(value))});
  return store.commit(request);
}

// B is cut off from the server; meanwhile a subscribed object changes, another one enters the
// subscribed type, and the server's history of those commits is lost. When B reconnects it
// cannot learn what changed: its replica must not serve the states it held, and must find the
// new object.
TEST(Replica, AfterAReconnectThatCannotSayWhatChangedTheReplicaStartsAfresh) {
  auto owned = std::make_unique<ForgetfulStore>();
  ForgetfulStore& backing = *owned;
  TestServer server(std::move(owned), on_the_loop());
  auto counting = std::make_unique<CountingStore>(server.connect());
  CountingStore& counted = *counting;
  Database b(std::move(counting));
  Oid x = backing.new_oids(1);
  write_int(backing, x, 1);
  Subscription sub = b.subscribe_type("T");
  auto read_x = [&] { return b.view([&](View& v) { return v.get(x).get().as_int(); }); };
  EXPECT_EQ(read_x(), 1);

  server.stop();
  // Once B has noticed (a call racing with the close would fail with IoError).
  ASSERT_TRUE(eventually([&] { return !b.store().hears_commits(); }));
  write_int(backing, x, 2);
  Oid y = backing.new_oids(1);
  write_int(backing, y, 5);
  backing.forget = true;
  server.restart();
  // B learns that it was cut off at its next call to the server.
  b.store().new_oids(1);

  EXPECT_EQ(read_x(), 2) << "the replica served a state from before the outage";
  ASSERT_TRUE(replica_current(b, backing));
  ASSERT_TRUE(eventually([&] { return b.stats().replica_objects == 2; }))
      << b.stats().replica_objects << " objects in the replica";
  int trips = counted.round_trips();
  std::vector<Oid> both = {x, y};
  std::sort(both.begin(), both.end());
  EXPECT_EQ(scan_all(b.store(), "T"), both);
  EXPECT_EQ(b.view([&](View& v) { return v.get(y).get().as_int(); }), 5);
  EXPECT_EQ(read_x(), 2);
  EXPECT_EQ(counted.round_trips(), trips) << "the replica does not answer for the scope again";
}

// While B is cut off from the server, a view cannot know whether what B holds is current: it
// fails with IoError rather than serve it. Once the server is back, B reads what changed.
TEST(Replica, ViewsFailRatherThanServeWhatMayBeStaleWhileCutOff) {
  TestServer server(make_memory_store(), on_the_loop());
  Database b(server.connect());
  Store& backing = server.backing();
  Oid x = backing.new_oids(1);
  write_int(backing, x, 1);
  Subscription sub = b.subscribe_type("T");
  auto read_x = [&] { return b.view([&](View& v) { return v.get(x).get().as_int(); }); };
  EXPECT_EQ(read_x(), 1);
  EXPECT_TRUE(b.store().hears_commits());

  server.stop();
  ASSERT_TRUE(eventually([&] { return !b.store().hears_commits(); }));
  write_int(backing, x, 2);  // a commit B cannot hear of
  EXPECT_THROW(read_x(), IoError);
  EXPECT_THROW(b.transaction([&](Txn& tx) { return tx.get(x).get().as_int(); }), IoError);

  server.restart();
  // B reconnects by itself: the replica hears again before anyone reads.
  ASSERT_TRUE(eventually([&] { return b.store().hears_commits(); }));
  EXPECT_EQ(read_x(), 2);
  EXPECT_TRUE(b.store().hears_commits());
}

TEST(Replica, SubscriptionsOverALocalStoreDoNothing) {
  Database db(make_memory_store());
  Oid oid = db.transaction([](Txn& tx) { return tx.create(Value(1), "T").oid(); });
  Subscription sub = db.subscribe_type("T");
  EXPECT_TRUE(sub.active());
  Subscription keys = db.subscribe_keys("T", "k");
  Subscription objects = db.subscribe_objects({oid});
  EXPECT_EQ(db.stats().replica_objects, 0u);
  EXPECT_EQ(db.view([&](View& v) { return v.get(oid).get().as_int(); }), 1);
  sub.reset();
  EXPECT_THROW(db.subscribe_type(""), InvalidArgument);
  EXPECT_THROW(db.subscribe_type(std::string(max_type_length + 1, 't')), InvalidArgument);
}

TEST(Replica, BadScopesAreRefusedAndLeaveNothingBehind) {
  Clients c;
  EXPECT_THROW(c.b.subscribe_type(""), InvalidArgument);
  EXPECT_THROW(c.b.subscribe_keys("T", std::string(max_key_length + 1, 'k')), InvalidArgument);
  EXPECT_EQ(c.b.stats().replica_objects, 0u);
}

TEST(Replica, SubscriptionsMayOutliveTheDatabase) {
  Subscription sub;
  {
    Clients c;
    create_all(c.a, "Item", 3, 0);
    sub = c.b.subscribe_type("Item");
  }
  EXPECT_TRUE(sub.active());
  sub.reset();  // nothing left to cancel: must not touch freed memory
}

}  // namespace
}  // namespace cairn::testing
