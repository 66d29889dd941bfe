// The store conformance suite: every backend must pass all of it. A backend's test file defines
// a factory with `static std::unique_ptr<cairn::Store> make();` and adds one line:
//   INSTANTIATE_TYPED_TEST_SUITE_P(Name, StoreConformance, Factory);
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/store.h"

namespace cairn::testing {

using namespace std::chrono_literals;

// One-call helpers for tests of a single store.
inline std::uint64_t put(Store& store, Oid oid, const Value& v, std::string type = "",
                         std::string key = "") {
  CommitRequest req;
  req.writes.push_back(WriteOp{oid, std::move(type), std::move(key), encode(v)});
  return store.commit(req);
}

inline StoredObject get(Store& store, Oid oid) {
  Oid one[] = {oid};
  return store.load(one).objects.at(0);
}

template <typename Factory>
class StoreConformance : public ::testing::Test {
 protected:
  void SetUp() override { store = Factory::make(); }

  static std::string data(const Value& v) { return encode(v); }

  Oid fresh() { return store->new_oids(1); }

  std::uint64_t put(Oid oid, const Value& v, std::string type = "", std::string key = "") {
    CommitRequest req;
    req.writes.push_back(WriteOp{oid, std::move(type), std::move(key), data(v)});
    return store->commit(req);
  }

  StoredObject get(Oid oid) {
    Oid one[] = {oid};
    return store->load(one).objects.at(0);
  }

  Value value(Oid oid) { return decode(get(oid).data); }

  std::unique_ptr<Store> store;
};

TYPED_TEST_SUITE_P(StoreConformance);

TYPED_TEST_P(StoreConformance, LoadOfAbsentObjectHasVersionZero) {
  Oid oid = this->fresh();
  StoredObject obj = this->get(oid);
  EXPECT_EQ(obj.oid, oid);
  EXPECT_EQ(obj.version, 0u);
  EXPECT_FALSE(obj.exists());
  EXPECT_FALSE(this->get(Oid::root()).exists());
}

TYPED_TEST_P(StoreConformance, CommitThenLoadReturnsStateAtCommitCsn) {
  Oid oid = this->fresh();
  std::uint64_t csn = this->put(oid, Value::Map{{"name", "Harry"}}, "User", "harry");
  StoredObject obj = this->get(oid);
  EXPECT_EQ(obj.version, csn);
  EXPECT_EQ(obj.type, "User");
  EXPECT_EQ(obj.key, "harry");
  EXPECT_EQ(decode(obj.data), Value(Value::Map{{"name", "Harry"}}));

  std::uint64_t csn2 = this->put(oid, Value::Map{{"name", "Harry Potter"}}, "User", "harry");
  EXPECT_GT(csn2, csn);
  EXPECT_EQ(this->get(oid).version, csn2);
  Oid both[] = {oid, Oid::root()};
  LoadResult r = this->store->load(both);
  ASSERT_EQ(r.objects.size(), 2u);
  EXPECT_EQ(r.objects[0].oid, oid);
  EXPECT_EQ(r.objects[1].oid, Oid::root());
  EXPECT_GE(r.csn, csn2);
}

TYPED_TEST_P(StoreConformance, StaleReadConflictsAndAppliesNothing) {
  Oid x = this->fresh(), y = this->fresh();
  std::uint64_t v1 = this->put(x, 1);
  this->put(x, 2);  // someone else's commit
  CommitRequest req;
  req.reads.push_back(ReadCheck{x, v1});
  req.writes.push_back(WriteOp{x, "", "", this->data(100)});
  req.writes.push_back(WriteOp{y, "", "", this->data(200)});
  try {
    this->store->commit(req);
    FAIL() << "commit with a stale read must conflict";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), std::vector<Oid>{x});
    EXPECT_EQ(e.code(), ErrorCode::conflict);
  }
  EXPECT_EQ(this->value(x), Value(2));
  EXPECT_FALSE(this->get(y).exists());
}

TYPED_TEST_P(StoreConformance, ReadAsAbsentConflictsOnceCreated) {
  Oid x = this->fresh(), y = this->fresh();
  this->put(x, "created meanwhile");
  CommitRequest req;
  req.reads.push_back(ReadCheck{x, 0});
  req.writes.push_back(WriteOp{y, "", "", this->data(1)});
  EXPECT_THROW(this->store->commit(req), ConflictError);
  EXPECT_FALSE(this->get(y).exists());
}

TYPED_TEST_P(StoreConformance, ReadXWriteYConflictsWhenXChanges) {
  Oid x = this->fresh(), y = this->fresh();
  std::uint64_t vx = this->put(x, 1);
  this->put(x, 2);
  CommitRequest req;
  req.reads.push_back(ReadCheck{x, vx});
  req.writes.push_back(WriteOp{y, "", "", this->data(1)});
  EXPECT_THROW(this->store->commit(req), ConflictError);
}

TYPED_TEST_P(StoreConformance, BlindWritesBothCommit) {
  Oid x = this->fresh();
  this->put(x, 1);
  std::uint64_t a = this->put(x, 2);
  std::uint64_t b = this->put(x, 3);
  EXPECT_LT(a, b);
  EXPECT_EQ(this->value(x), Value(3));
}

TYPED_TEST_P(StoreConformance, EmptyCommitValidatesReadsAndReturnsCurrentCsn) {
  Oid x = this->fresh();
  std::uint64_t v = this->put(x, 1);
  CommitRequest ok;
  ok.reads.push_back(ReadCheck{x, v});
  EXPECT_EQ(this->store->commit(ok), v);
  this->put(x, 2);
  EXPECT_THROW(this->store->commit(ok), ConflictError);
}

TYPED_TEST_P(StoreConformance, DeleteRemovesObjectAndIsIdempotent) {
  Oid x = this->fresh();
  this->put(x, 1, "Thing", "x");
  CommitRequest del;
  del.deletes.push_back(x);
  this->store->commit(del);
  EXPECT_FALSE(this->get(x).exists());
  EXPECT_FALSE(this->store->find_key("Thing", "x").has_value());
  EXPECT_TRUE(this->store->scan_type("Thing", Oid(), 10).empty());
  EXPECT_NO_THROW(this->store->commit(del));  // deleting an absent object changes nothing
  // Create-then-delete: a transaction's net effect is nothing left behind.
  Oid y = this->fresh();
  this->put(y, 1);
  CommitRequest del_y;
  del_y.deletes.push_back(y);
  this->store->commit(del_y);
  EXPECT_FALSE(this->get(y).exists());
}

TYPED_TEST_P(StoreConformance, KeysAreUniquePerType) {
  Oid a = this->fresh(), b = this->fresh(), c = this->fresh();
  this->put(a, "a", "User", "harry");
  try {
    this->put(b, "b", "User", "harry");
    FAIL() << "a second live object took the same key";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), (std::vector<Oid>{a, b}));
  }
  EXPECT_FALSE(this->get(b).exists());
  EXPECT_NO_THROW(this->put(c, "c", "Project", "harry"));  // other type, other key space
  EXPECT_EQ(this->store->find_key("User", "harry"), a);
  EXPECT_EQ(this->store->find_key("Project", "harry"), c);
  // Rewriting the holder under another key frees the key in the same commit.
  CommitRequest move;
  move.writes.push_back(WriteOp{a, "User", "harry.old", this->data("a")});
  move.writes.push_back(WriteOp{b, "User", "harry", this->data("b")});
  this->store->commit(move);
  EXPECT_EQ(this->store->find_key("User", "harry"), b);
  EXPECT_EQ(this->store->find_key("User", "harry.old"), a);
  // Deleting the holder frees its key too.
  CommitRequest take;
  take.deletes.push_back(b);
  take.writes.push_back(WriteOp{c, "User", "harry", this->data("c")});
  this->store->commit(take);
  EXPECT_EQ(this->store->find_key("User", "harry"), c);
}

TYPED_TEST_P(StoreConformance, MalformedCommitsAreRefused) {
  Oid a = this->fresh();
  Oid never(a.value() + 1'000'000);
  CommitRequest unallocated;
  unallocated.writes.push_back(WriteOp{never, "", "", this->data(1)});
  EXPECT_THROW(this->store->commit(unallocated), InvalidArgument);
  // Read as absent, it is a new object's oid from a run of the store started again since without
  // its data (a memory server): a conflict, which the transaction can run again.
  unallocated.reads.push_back(ReadCheck{never, 0});
  try {
    this->store->commit(unallocated);
    ADD_FAILURE() << "committed an oid never allocated";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), std::vector<Oid>{never});
  }
  EXPECT_FALSE(this->get(never).exists());

  CommitRequest twice;
  twice.writes.push_back(WriteOp{a, "", "", this->data(1)});
  twice.deletes.push_back(a);
  EXPECT_THROW(this->store->commit(twice), InvalidArgument);

  Oid b = this->fresh();
  CommitRequest same_key;
  same_key.writes.push_back(WriteOp{a, "T", "k", this->data(1)});
  same_key.writes.push_back(WriteOp{b, "T", "k", this->data(1)});
  EXPECT_THROW(this->store->commit(same_key), InvalidArgument);
  EXPECT_FALSE(this->get(a).exists());
}

TYPED_TEST_P(StoreConformance, LimitsAcceptAtTheLimitAndRefuseOnePast) {
  Oid a = this->fresh();
  EXPECT_NO_THROW(
      this->put(a, 1, std::string(max_type_length, 't'), std::string(max_key_length, 'k')));
  EXPECT_THROW(this->put(a, 1, std::string(max_type_length + 1, 't')), InvalidArgument);
  EXPECT_THROW(this->put(a, 1, "T", std::string(max_key_length + 1, 'k')), InvalidArgument);
  CommitRequest big;
  big.writes.push_back(WriteOp{a, "", "", std::string(max_object_bytes, 'x')});
  EXPECT_NO_THROW(this->store->commit(big));
  EXPECT_EQ(this->get(a).data.size(), max_object_bytes);
  big.writes[0].data.push_back('x');
  EXPECT_THROW(this->store->commit(big), InvalidArgument);
  EXPECT_EQ(this->get(a).data.size(), max_object_bytes);
}

TYPED_TEST_P(StoreConformance, ScanTypeIsOrderedAndPages) {
  std::vector<Oid> users;
  for (int i = 0; i < 25; ++i) {
    Oid oid = this->fresh();
    this->put(oid, i, i % 5 == 0 ? "Project" : "User");
    if (i % 5 != 0) users.push_back(oid);
  }
  std::vector<Oid> seen;
  Oid after;
  for (;;) {
    auto page = this->store->scan_type("User", after, 7);
    EXPECT_LE(page.size(), 7u);
    if (page.empty()) break;
    for (const auto& e : page)
      seen.push_back(e.oid);
    after = page.back().oid;
  }
  EXPECT_EQ(seen, users);
  EXPECT_TRUE(this->store->scan_type("Nobody", Oid(), 10).empty());
}

TYPED_TEST_P(StoreConformance, ScanKeysIsOrderedByKeyWithPrefix) {
  std::vector<std::string> keys = {"b:2", "a", "a:x", "b:10", "a1:x", "b:1", "c"};
  for (const auto& k : keys)
    this->put(this->fresh(), k, "K", k);
  auto all = this->store->scan_keys("K", "", "", 100);
  std::vector<std::string> got;
  for (const auto& e : all)
    got.push_back(e.key);
  EXPECT_EQ(got, (std::vector<std::string>{"a", "a1:x", "a:x", "b:1", "b:10", "b:2", "c"}));

  got.clear();
  std::string after;
  for (;;) {
    auto page = this->store->scan_keys("K", "b:", after, 2);
    if (page.empty()) break;
    for (const auto& e : page) {
      got.push_back(e.key);
      EXPECT_EQ(this->store->find_key("K", e.key), e.oid);
    }
    after = page.back().key;
  }
  EXPECT_EQ(got, (std::vector<std::string>{"b:1", "b:10", "b:2"}));
  EXPECT_TRUE(this->store->scan_keys("K", "zzz", "", 10).empty());
  EXPECT_EQ(this->store->scan_keys("K", "a", "a1:x", 10).size(), 1u);  // only "a:x" is left
  // A page that ends exactly at the last key is followed by an empty one, not by the first page
  // again (a scan that paged by the number of keys never ended).
  EXPECT_TRUE(this->store->scan_keys("K", "", "c", 10).empty());
  EXPECT_TRUE(this->store->scan_keys("K", "", "d", 10).empty());
  EXPECT_TRUE(this->store->scan_keys("K", "b", "c", 10).empty());
  EXPECT_TRUE(this->store->scan_keys("K", "b:", "b:2", 10).empty());
  EXPECT_EQ(this->store->scan_keys("K", "b:", "a", 10).size(), 3u);  // `after` below the prefix
}

TYPED_TEST_P(StoreConformance, ScanIsStableUnderConcurrentDeletes) {
  constexpr int n = 2000;
  std::vector<Oid> oids;
  for (int i = 0; i < n; ++i) {
    oids.push_back(this->fresh());
    this->put(oids.back(), i, "Item");
  }
  // Delete every odd-indexed object while another thread pages through the type.
  std::set<Oid> deleted_set;
  std::thread deleter([&] {
    for (int i = 1; i < n; i += 2) {
      CommitRequest del;
      del.deletes.push_back(oids[static_cast<std::size_t>(i)]);
      this->store->commit(del);
    }
  });
  std::vector<Oid> seen;
  Oid after;
  for (;;) {
    auto page = this->store->scan_type("Item", after, 16);
    if (page.empty()) break;
    for (const auto& e : page)
      seen.push_back(e.oid);
    after = page.back().oid;
  }
  deleter.join();
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << "an oid was repeated";
  std::set<Oid> seen_set(seen.begin(), seen.end());
  for (int i = 0; i < n; i += 2) {
    EXPECT_TRUE(seen_set.contains(oids[static_cast<std::size_t>(i)]))
        << "object " << i << " was never deleted yet the scan skipped it";
  }
}

TYPED_TEST_P(StoreConformance, NewOidsAreUniqueAcrossThreads) {
  constexpr int threads = 4, per_thread = 5000;
  std::vector<std::vector<std::uint64_t>> got(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        std::uint32_t count = static_cast<std::uint32_t>(1 + i % 3);
        Oid first = this->store->new_oids(count);
        for (std::uint32_t k = 0; k < count; ++k)
          got[static_cast<std::size_t>(t)].push_back(first.value() + k);
      }
    });
  }
  for (auto& th : pool)
    th.join();
  std::set<std::uint64_t> all;
  std::size_t total = 0;
  for (const auto& v : got) {
    total += v.size();
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(all.size(), total) << "some oid was handed out twice";
  EXPECT_FALSE(all.contains(0)) << "the root oid was handed out";
  EXPECT_THROW(this->store->new_oids(0), InvalidArgument);
}

TYPED_TEST_P(StoreConformance, ChangesSinceListsChangedOidsOnce) {
  Oid a = this->fresh(), b = this->fresh(), c = this->fresh();
  std::uint64_t start = this->put(a, 0);
  this->put(b, 1);
  this->put(b, 2);
  CommitRequest del;
  del.deletes.push_back(a);
  std::uint64_t last = this->store->commit(del);
  Changes ch = this->store->changes_since(start);
  EXPECT_TRUE(ch.complete);
  EXPECT_EQ(ch.csn, last);
  std::set<Oid> got(ch.oids.begin(), ch.oids.end());
  EXPECT_EQ(got, (std::set<Oid>{a, b}));
  EXPECT_EQ(got.size(), ch.oids.size());
  EXPECT_FALSE(got.contains(c));
  EXPECT_TRUE(this->store->changes_since(last).oids.empty());
}

// A store's CSN watch, if it has one, is its newest CSN after every commit, empty ones
// included; the object layer starts transactions on it without asking changes_since.
TYPED_TEST_P(StoreConformance, CsnWatchFollowsEveryCommit) {
  const std::atomic<std::uint64_t>* watch = this->store->csn_watch();
  if (watch == nullptr) {
    // Only stores in another process have none: their CSNs come from a round trip.
    EXPECT_TRUE(this->store->is_remote());
    return;
  }
  EXPECT_EQ(watch->load(), this->store->load({}).csn);
  Oid a = this->fresh();
  for (int i = 0; i < 3; ++i) {
    std::uint64_t csn = this->put(a, i);
    EXPECT_EQ(watch->load(), csn);
    EXPECT_TRUE(this->store->changes_since(watch->load()).oids.empty());
  }
  CommitRequest del;
  del.deletes.push_back(a);
  std::uint64_t csn = this->store->commit(del);
  EXPECT_EQ(watch->load(), csn);
  EXPECT_EQ(this->store->load({}).csn, csn);
}

TYPED_TEST_P(StoreConformance, SubscribersSeeCommitsInOrderUntilUnsubscribed) {
  std::mutex mu;
  std::vector<std::pair<std::uint64_t, std::vector<Oid>>> events;
  Subscription sub = this->store->subscribe([&](std::uint64_t csn, std::span<const Oid> oids) {
    std::lock_guard lk(mu);
    events.emplace_back(csn, std::vector<Oid>(oids.begin(), oids.end()));
  });
  Oid a = this->fresh();
  std::uint64_t c1 = this->put(a, 1);
  std::uint64_t c2 = this->put(a, 2);
  // A commit whose only op deletes an absent object still names it: a listener call with no
  // oids would mean "unknown changes" (store.h).
  Oid never = this->fresh();
  CommitRequest del;
  del.deletes.push_back(never);
  std::uint64_t c3 = this->store->commit(del);
  auto wait_for = [&](std::size_t n) {
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard lk(mu);
        if (events.size() >= n) return;
      }
      std::this_thread::sleep_for(10ms);
    }
  };
  wait_for(3);
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events[0].first, c1);
    EXPECT_EQ(events[1].first, c2);
    EXPECT_EQ(events[0].second, std::vector<Oid>{a});
    EXPECT_EQ(events[2].first, c3);
    EXPECT_EQ(events[2].second, std::vector<Oid>{never});
  }
  sub.reset();
  EXPECT_FALSE(sub.active());
  this->put(a, 3);
  std::this_thread::sleep_for(50ms);
  std::lock_guard lk(mu);
  EXPECT_EQ(events.size(), 3u) << "an unsubscribed listener was called";
}

// CSNs count commits one by one: with concurrent committers, the CSNs commits return are exactly
// the numbers after the starting CSN, and a subscriber sees each of them once, in order. (The
// object layer relies on it: a commit returning snapshot + 1 means nothing else changed.)
TYPED_TEST_P(StoreConformance, CsnsCountCommitsOneByOneAndSubscribersSeeEach) {
  std::mutex mu;
  std::vector<std::uint64_t> seen;
  Subscription sub = this->store->subscribe([&](std::uint64_t csn, std::span<const Oid>) {
    std::lock_guard lk(mu);
    seen.push_back(csn);
  });
  std::uint64_t start = this->store->load({}).csn;
  constexpr int threads = 4;
  constexpr int commits = 50;
  std::vector<std::vector<std::uint64_t>> returned(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      Oid mine = this->store->new_oids(1);
      for (int i = 0; i < commits; ++i) {
        CommitRequest req;
        req.writes.push_back(WriteOp{mine, "", "", encode(Value(i))});
        returned[t].push_back(this->store->commit(req));
      }
    });
  }
  for (auto& th : pool)
    th.join();
  std::vector<std::uint64_t> all;
  for (const auto& r : returned)
    all.insert(all.end(), r.begin(), r.end());
  std::sort(all.begin(), all.end());
  std::vector<std::uint64_t> expected(threads * commits);
  std::iota(expected.begin(), expected.end(), start + 1);
  EXPECT_EQ(all, expected);
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard lk(mu);
      if (seen.size() >= expected.size()) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::lock_guard lk(mu);
  EXPECT_EQ(seen, expected);
}

TYPED_TEST_P(StoreConformance, LockIsExclusiveWithIncreasingFencingTokens) {
  LockRequest req{"net", "alice", 10s, 0ms};
  auto t1 = this->store->lock(req);
  ASSERT_TRUE(t1.has_value());
  EXPECT_FALSE(this->store->lock(LockRequest{"net", "bob", 10s, 0ms}).has_value());
  EXPECT_FALSE(this->store->lock(req).has_value()) << "locks are not re-entrant";
  EXPECT_TRUE(this->store->lock(LockRequest{"other", "bob", 10s, 0ms}).has_value());
  EXPECT_FALSE(this->store->unlock("net", "bob")) << "only the owner unlocks";
  EXPECT_TRUE(this->store->unlock("net", "alice"));
  EXPECT_FALSE(this->store->unlock("net", "alice")) << "unlocking twice";
  auto t2 = this->store->lock(LockRequest{"net", "bob", 10s, 0ms});
  ASSERT_TRUE(t2.has_value());
  EXPECT_GT(*t2, *t1);
  EXPECT_TRUE(this->store->unlock("net", "bob"));
  auto t3 = this->store->lock(req);
  ASSERT_TRUE(t3.has_value());
  EXPECT_GT(*t3, *t2);
}

TYPED_TEST_P(StoreConformance, LockExpiresAfterTtlAndRenewExtendsIt) {
  auto t1 = this->store->lock(LockRequest{"ttl", "alice", 300ms, 0ms});
  ASSERT_TRUE(t1.has_value());
  EXPECT_FALSE(this->store->lock(LockRequest{"ttl", "bob", 10s, 0ms}).has_value());
  EXPECT_TRUE(this->store->renew("ttl", "alice", 300ms));
  EXPECT_FALSE(this->store->renew("ttl", "bob", 300ms));
  std::this_thread::sleep_for(600ms);
  EXPECT_FALSE(this->store->renew("ttl", "alice", 300ms)) << "renewed an expired lock";
  auto t2 = this->store->lock(LockRequest{"ttl", "bob", 10s, 0ms});
  ASSERT_TRUE(t2.has_value()) << "lock did not expire after its ttl";
  EXPECT_GT(*t2, *t1);
  EXPECT_FALSE(this->store->unlock("ttl", "alice")) << "an expired owner unlocked the new holder";
  EXPECT_TRUE(this->store->unlock("ttl", "bob"));
}

TYPED_TEST_P(StoreConformance, BlockingLockWaitsButNeverSteals) {
  ASSERT_TRUE(this->store->lock(LockRequest{"b", "alice", 10s, 0ms}).has_value());
  // A waiter that times out gets nothing and the holder keeps the lock (the tethys bug).
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(this->store->lock(LockRequest{"b", "bob", 10s, 200ms}).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
  EXPECT_FALSE(this->store->lock(LockRequest{"b", "carol", 10s, 0ms}).has_value());
  EXPECT_TRUE(this->store->renew("b", "alice", 10s)) << "the holder lost its lock";
  // A waiter gets the lock once the holder releases it.
  std::optional<std::uint64_t> got;
  std::thread waiter([&] { got = this->store->lock(LockRequest{"b", "bob", 10s, 10s}); });
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(this->store->unlock("b", "alice"));
  waiter.join();
  EXPECT_TRUE(got.has_value());
  EXPECT_FALSE(this->store->unlock("b", "alice"));
  EXPECT_TRUE(this->store->unlock("b", "bob"));
}

TYPED_TEST_P(StoreConformance, LockRequestsAreValidated) {
  EXPECT_THROW(this->store->lock(LockRequest{"", "a", 1s, 0ms}), InvalidArgument);
  EXPECT_THROW(this->store->lock(LockRequest{"n", "", 1s, 0ms}), InvalidArgument);
  EXPECT_THROW(this->store->lock(LockRequest{"n", "a", 0s, 0ms}), InvalidArgument);
  EXPECT_THROW(this->store->lock(LockRequest{"n", "a", 1s, -1ms}), InvalidArgument);
  EXPECT_NO_THROW(
      this->store->lock(LockRequest{std::string(max_lock_name_length, 'n'), "a", 1s, 0ms}));
  EXPECT_THROW(
      this->store->lock(LockRequest{std::string(max_lock_name_length + 1, 'n'), "a", 1s, 0ms}),
      InvalidArgument);
  // A ttl or wait past the limit is refused: a huge ttl used to overflow the clock, and the
  // lock it granted was free for anyone to take at once.
  using std::chrono::milliseconds;
  EXPECT_THROW(this->store->lock(LockRequest{"big", "a", milliseconds::max(), 0ms}),
               InvalidArgument);
  EXPECT_THROW(this->store->lock(LockRequest{"big", "a", max_lock_duration + 1ms, 0ms}),
               InvalidArgument);
  EXPECT_THROW(this->store->lock(LockRequest{"big", "a", 1s, max_lock_duration + 1ms}),
               InvalidArgument);
  ASSERT_TRUE(this->store->lock(LockRequest{"big", "a", max_lock_duration, 0ms}).has_value());
  EXPECT_FALSE(this->store->lock(LockRequest{"big", "b", 1s, 0ms}).has_value())
      << "a lock taken for the longest ttl was free to take";
  EXPECT_THROW(this->store->renew("big", "a", milliseconds::max()), InvalidArgument);
  EXPECT_THROW(this->store->renew("big", "a", 0ms), InvalidArgument);
  EXPECT_TRUE(this->store->renew("big", "a", max_lock_duration));
  EXPECT_FALSE(this->store->lock(LockRequest{"big", "b", 1s, 0ms}).has_value());
  EXPECT_TRUE(this->store->unlock("big", "a"));
}

TYPED_TEST_P(StoreConformance, PackDropsOnlyUnreachableObjects) {
  Oid child = this->fresh(), grandchild = this->fresh(), orphan = this->fresh();
  Oid typed = this->fresh(), keyed = this->fresh(), typed_child = this->fresh();
  this->put(grandchild, "grandchild");
  this->put(child, Value::List{Value(grandchild), 1});
  this->put(Oid::root(), Value::Map{{"child", Value(child)}});
  this->put(orphan, "nobody refers to me");
  this->put(typed, Value::Map{{"c", Value(typed_child)}}, "User");
  this->put(typed_child, "reached from a typed object");
  this->put(keyed, "has a key", "", "k");
  PackStats stats = this->store->pack();
  EXPECT_EQ(stats.objects_before, 7u);
  EXPECT_EQ(stats.objects_after, 6u);
  EXPECT_LT(stats.bytes_after, stats.bytes_before);
  EXPECT_FALSE(this->get(orphan).exists());
  for (Oid oid : {Oid::root(), child, grandchild, typed, typed_child, keyed}) {
    EXPECT_TRUE(this->get(oid).exists()) << "pack dropped reachable oid " << oid.value();
  }
}

// 4 threads move units between 10 counters with read-validated commits; the sum never changes
// and every successful transfer is applied exactly once.
TYPED_TEST_P(StoreConformance, ConcurrentTransfersKeepTheSum) {
  constexpr int counters = 10, threads = 4, transfers = 500, initial = 1000;
  std::vector<Oid> ids;
  for (int i = 0; i < counters; ++i) {
    ids.push_back(this->fresh());
    this->put(ids.back(), initial);
  }
  std::atomic<int> applied{0}, conflicts{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int done = 0; done < transfers;) {
        auto i = static_cast<std::size_t>(rng() % counters);
        auto j = static_cast<std::size_t>(rng() % counters);
        if (i == j) continue;
        Oid pair[] = {ids[i], ids[j]};
        LoadResult r = this->store->load(pair);
        std::int64_t a = decode(r.objects[0].data).as_int();
        std::int64_t b = decode(r.objects[1].data).as_int();
        CommitRequest req;
        req.reads = {ReadCheck{ids[i], r.objects[0].version},
                     ReadCheck{ids[j], r.objects[1].version}};
        req.writes.push_back(WriteOp{ids[i], "", "", encode(Value(a - 1))});
        req.writes.push_back(WriteOp{ids[j], "", "", encode(Value(b + 1))});
        try {
          this->store->commit(req);
          ++applied;
          ++done;
        } catch (const ConflictError&) {
          ++conflicts;
        }
      }
    });
  }
  for (auto& th : pool)
    th.join();
  EXPECT_EQ(applied.load(), threads * transfers);
  LoadResult all = this->store->load(ids);
  std::int64_t sum = 0;
  for (const auto& obj : all.objects)
    sum += decode(obj.data).as_int();
  EXPECT_EQ(sum, counters * initial);
}

// Appends: bytes added to a blob with no read of it, by commits that do not conflict over it.
TYPED_TEST_P(StoreConformance, AppendsGrowABlobAndNeverConflictOverIt) {
  Oid blob = this->fresh(), other = this->fresh();
  CommitRequest create;
  create.writes.push_back(WriteOp{blob, "Log", "today", std::string(1, blob_marker) + "ab"});
  std::uint64_t v1 = this->store->commit(create);

  // Two appends made without knowing of each other (no reads): both apply, in CSN order.
  CommitRequest first;
  first.appends.push_back(AppendOp{blob, "cd"});
  first.writes.push_back(WriteOp{other, "", "", this->data(1)});
  CommitRequest second;
  second.appends.push_back(AppendOp{blob, "efg"});
  std::uint64_t c1 = this->store->commit(first);
  std::uint64_t c2 = this->store->commit(second);
  EXPECT_EQ(c1, v1 + 1);
  EXPECT_EQ(c2, c1 + 1);  // an append alone is a change: it takes a CSN
  StoredObject got = this->get(blob);
  EXPECT_EQ(got.data, std::string(1, blob_marker) + "abcdefg");
  EXPECT_EQ(got.version, c2);
  EXPECT_EQ(got.type, "Log");  // type and key stay
  EXPECT_EQ(got.key, "today");
  EXPECT_EQ(this->store->find_key("Log", "today"), blob);
  Changes changes = this->store->changes_since(v1);
  std::sort(changes.oids.begin(), changes.oids.end());
  EXPECT_EQ(changes.oids, (std::vector<Oid>{blob, other}));

  // An empty append still changes the object; a read of the old version then conflicts.
  CommitRequest empty;
  empty.appends.push_back(AppendOp{blob, ""});
  std::uint64_t c3 = this->store->commit(empty);
  EXPECT_EQ(this->get(blob).version, c3);
  CommitRequest stale;
  stale.reads.push_back(ReadCheck{blob, c2});
  stale.appends.push_back(AppendOp{blob, "h"});
  EXPECT_THROW(this->store->commit(stale), ConflictError);
  EXPECT_EQ(this->get(blob).data, std::string(1, blob_marker) + "abcdefg");

  // A blob holds no refs: pack keeps it while it is reached and reads it as bytes.
  this->put(Oid::root(), Value::Map{{"log", Value(blob)}});
  this->store->pack();
  EXPECT_EQ(this->get(blob).data, std::string(1, blob_marker) + "abcdefg");
}

TYPED_TEST_P(StoreConformance, AppendsAreRefusedUnlessToAnExistingBlobWithinTheLimit) {
  Oid blob = this->fresh(), value = this->fresh(), absent = this->fresh(),
      bystander = this->fresh();
  CommitRequest create;
  create.writes.push_back(WriteOp{blob, "", "", std::string(1, blob_marker)});
  create.writes.push_back(WriteOp{value, "", "", this->data("not a blob")});
  std::uint64_t csn = this->store->commit(create);

  // Each refused commit also writes `bystander`: nothing of it may apply.
  auto refused = [&](AppendOp append) {
    CommitRequest req;
    req.writes.push_back(WriteOp{bystander, "", "", this->data(1)});
    req.appends.push_back(std::move(append));
    return req;
  };
  EXPECT_THROW(this->store->commit(refused(AppendOp{absent, "x"})), NotFound);
  EXPECT_THROW(this->store->commit(refused(AppendOp{value, "x"})), InvalidArgument);
  EXPECT_THROW(this->store->commit(refused(AppendOp{Oid(absent.value() + 1'000'000), "x"})),
               InvalidArgument);
  CommitRequest twice = refused(AppendOp{blob, "x"});
  twice.writes.push_back(WriteOp{blob, "", "", std::string(1, blob_marker)});
  EXPECT_THROW(this->store->commit(twice), InvalidArgument);
  CommitRequest deleted = refused(AppendOp{blob, "x"});
  deleted.deletes.push_back(blob);
  EXPECT_THROW(this->store->commit(deleted), InvalidArgument);

  // Up to max_object_bytes in all, and not one byte more.
  std::string fill(max_object_bytes - 2, 'x');
  EXPECT_THROW(this->store->commit(refused(AppendOp{blob, fill + "xy"})), InvalidArgument);
  EXPECT_FALSE(this->get(bystander).exists());
  EXPECT_EQ(this->get(blob).version, csn);
  CommitRequest to_the_limit;
  to_the_limit.appends.push_back(AppendOp{blob, fill + "x"});
  this->store->commit(to_the_limit);
  EXPECT_EQ(this->get(blob).data.size(), max_object_bytes);
  EXPECT_THROW(this->store->commit(refused(AppendOp{blob, "y"})), InvalidArgument);
  EXPECT_EQ(this->get(blob).data.size(), max_object_bytes);
  EXPECT_FALSE(this->get(bystander).exists());
}

// Fencing: a commit that names a lock applies only while that lock is held under the token it
// gives. A holder whose lock expired, or was taken over, commits nothing.
TYPED_TEST_P(StoreConformance, CommitsThatCheckALockApplyOnlyWhileItIsHeld) {
  Oid oid = this->fresh();
  std::uint64_t first = this->put(oid, 0);
  auto fenced = [&](std::int64_t v, std::vector<LockCheck> locks) {
    CommitRequest req;
    req.writes.push_back(WriteOp{oid, "", "", this->data(v)});
    req.locks = std::move(locks);
    return this->store->commit(req);
  };
  auto alice = this->store->lock(LockRequest{"job", "alice", 400ms, 0ms});
  ASSERT_TRUE(alice.has_value());
  auto other = this->store->lock(LockRequest{"other", "alice", 10s, 0ms});
  ASSERT_TRUE(other.has_value());
  EXPECT_GT(fenced(1, {{"job", *alice}, {"other", *other}}), first);
  EXPECT_EQ(this->value(oid), Value(1));
  // Read-only commits check them too.
  CommitRequest check_only;
  check_only.locks = {{"job", *alice}};
  EXPECT_NO_THROW(this->store->commit(check_only));

  // A token the lock never had, a lock never taken, one released: refused, nothing applied.
  EXPECT_THROW(fenced(2, {{"job", *alice + 1000}}), LockLost);
  EXPECT_THROW(fenced(2, {{"never", 1}}), LockLost);
  EXPECT_TRUE(this->store->unlock("other", "alice"));
  try {
    fenced(2, {{"job", *alice}, {"other", *other}});
    ADD_FAILURE() << "committed under a released lock";
  } catch (const LockLost& e) {
    EXPECT_NE(std::string(e.what()).find("\"other\""), std::string::npos) << e.what();
  }
  // Checked before the reads: a commit that would also conflict says the lock is lost.
  CommitRequest both;
  both.reads.push_back(ReadCheck{oid, first});
  both.writes.push_back(WriteOp{oid, "", "", this->data(2)});
  both.locks = {{"other", *other}};
  EXPECT_THROW(this->store->commit(both), LockLost);
  EXPECT_EQ(this->value(oid), Value(1));

  // Expired, then taken over by bob: alice's token no longer commits, bob's does.
  std::this_thread::sleep_for(800ms);
  EXPECT_THROW(fenced(3, {{"job", *alice}}), LockLost) << "committed under an expired lock";
  auto bob = this->store->lock(LockRequest{"job", "bob", 10s, 0ms});
  ASSERT_TRUE(bob.has_value());
  EXPECT_THROW(fenced(3, {{"job", *alice}}), LockLost);
  EXPECT_EQ(this->value(oid), Value(1));
  fenced(4, {{"job", *bob}});
  EXPECT_EQ(this->value(oid), Value(4));
  EXPECT_THROW(fenced(5, {{"job", 0}}), InvalidArgument);
  EXPECT_THROW(fenced(5, {{"", *bob}}), InvalidArgument);
  EXPECT_THROW(fenced(5, {{std::string(max_lock_name_length + 1, 'n'), *bob}}), InvalidArgument);
  EXPECT_TRUE(this->store->unlock("job", "bob"));
}

REGISTER_TYPED_TEST_SUITE_P(
    StoreConformance, LoadOfAbsentObjectHasVersionZero, CommitThenLoadReturnsStateAtCommitCsn,
    StaleReadConflictsAndAppliesNothing, ReadAsAbsentConflictsOnceCreated,
    ReadXWriteYConflictsWhenXChanges, BlindWritesBothCommit,
    EmptyCommitValidatesReadsAndReturnsCurrentCsn, DeleteRemovesObjectAndIsIdempotent,
    KeysAreUniquePerType, MalformedCommitsAreRefused, LimitsAcceptAtTheLimitAndRefuseOnePast,
    ScanTypeIsOrderedAndPages, ScanKeysIsOrderedByKeyWithPrefix, ScanIsStableUnderConcurrentDeletes,
    NewOidsAreUniqueAcrossThreads, ChangesSinceListsChangedOidsOnce, CsnWatchFollowsEveryCommit,
    SubscribersSeeCommitsInOrderUntilUnsubscribed, CsnsCountCommitsOneByOneAndSubscribersSeeEach,
    LockIsExclusiveWithIncreasingFencingTokens, LockExpiresAfterTtlAndRenewExtendsIt,
    BlockingLockWaitsButNeverSteals, LockRequestsAreValidated, PackDropsOnlyUnreachableObjects,
    ConcurrentTransfersKeepTheSum, AppendsGrowABlobAndNeverConflictOverIt,
    AppendsAreRefusedUnlessToAnExistingBlobWithinTheLimit,
    CommitsThatCheckALockApplyOnlyWhileItIsHeld);

}  // namespace cairn::testing
