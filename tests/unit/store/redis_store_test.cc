// RedisStore: the conformance suite against a private redis-server, plus what only Redis
// promises: a layout people can read, atomic commits seen from outside, and several stores (or
// processes) sharing one server.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <array>
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
#include "cairn/json.h"
#include "cairn/store.h"
#include "conformance/store_conformance.h"
#include "support/eventually.h"
#include "support/listener_log.h"
#include "support/process.h"
#include "support/redis_server.h"

namespace cairn::testing {
namespace {

RedisServer& server() {
  static RedisServer instance;
  return instance;
}

// Every store a test opens lives under a prefix of its own, so tests never see each other.
std::string fresh_prefix() {
  static std::atomic<int> counter{0};
  return "test" + std::to_string(counter++) + ":";
}

struct RedisFactory {
  static std::unique_ptr<Store> make() { return open(server().url(fresh_prefix())); }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Redis, StoreConformance, RedisFactory);

// HGETALL as a field -> value map.
std::map<std::string, std::string> hgetall(const std::string& key, int db = 0) {
  std::vector<std::string> flat = server().command({"HGETALL", key}, db);
  std::map<std::string, std::string> out;
  for (std::size_t i = 0; i + 1 < flat.size(); i += 2)
    out[flat[i]] = flat[i + 1];
  return out;
}

std::string one(const std::vector<std::string>& reply) {
  EXPECT_EQ(reply.size(), 1u);
  return reply.empty() ? "" : reply[0];
}

class RedisStoreTest : public ::testing::Test {
 protected:
  std::string prefix = fresh_prefix();
  std::unique_ptr<Store> store = open(server().url(prefix));
};

TEST_F(RedisStoreTest, MapObjectsAreHashesOfPlainJsonFields) {
  Oid oid = store->new_oids(1);
  Value user = Value::Map{{"name", "Harry Potter"},
                          {"email", "harry@hogwarts.example"},
                          {"age", 17},
                          {"tags", Value::List{"wizard", "seeker"}}};
  std::uint64_t csn = put(*store, oid, user, "User", "harry");
  auto fields = hgetall(prefix + "User:harry");
  EXPECT_EQ(fields["name"], "\"Harry Potter\"");
  EXPECT_EQ(fields["email"], "\"harry@hogwarts.example\"");
  EXPECT_EQ(fields["age"], "17");
  EXPECT_EQ(fields["tags"], "[\"wizard\",\"seeker\"]");
  EXPECT_EQ(fields["_type"], "User");
  EXPECT_EQ(fields["_key"], "harry");
  EXPECT_EQ(fields["_version"], std::to_string(csn));
  EXPECT_EQ(fields["_oid"], oid.str());
  EXPECT_EQ(fields.size(), 8u) << "a map must not also be stored whole";
  EXPECT_EQ(get(*store, oid).data, encode(user));
  // The oid's own key points there.
  EXPECT_EQ(hgetall(prefix + "o:" + oid.str()),
            (std::map<std::string, std::string>{{"_at", prefix + "User:harry"}}));

  // The indexes are plain Redis structures too.
  EXPECT_EQ(one(server().command({"HGET", prefix + "k:User", "harry"})), oid.str());
  EXPECT_EQ(one(server().command({"ZSCORE", prefix + "t:User", oid.str()})), oid.str());
  EXPECT_EQ(one(server().command({"ZRANGEBYLEX", prefix + "ks:User", "-", "+"})), "harry");
  EXPECT_EQ(one(server().command({"GET", prefix + "csn"})), std::to_string(csn));
}

TEST_F(RedisStoreTest, EveryKindOfDataRoundTripsByteForByte) {
  std::string invalid_utf8 = "caf\xff";
  struct Case {
    std::string data;
    std::string field;  // where the data must land
  };
  std::vector<Case> cases = {
      {encode(Value(42)), "_value"},
      {encode(Value("just a string")), "_value"},
      {encode(Value(Value::List{1, "two", 3.5})), "_value"},
      {encode(Value(Value::Map{})), "_value"},
      {encode(Value(Value::Map{{"_private", 1}, {"name", "x"}})), "_value"},
      {encode(Value(Value::Map{{"ratio", 0.1}, {"big", 1e300}, {"neg", -0.0}})), "ratio"},
      {encode(Value(Value::Map{{"nested", Value::Map{{"a", Value::List{}}}}})), "nested"},
      {encode(Value(invalid_utf8)), "_raw"},  // JSON would turn the byte into U+FFFD
      {std::string("\x00\xffnot a value at all", 20), "_raw"},
      {"", "_raw"},
  };
  for (const Case& c : cases) {
    Oid oid = store->new_oids(1);
    CommitRequest req;
    req.writes.push_back(WriteOp{oid, "", "", c.data});
    store->commit(req);
    EXPECT_EQ(get(*store, oid).data, c.data) << "field " << c.field;
    auto fields = hgetall(prefix + "o:" + oid.str());
    EXPECT_TRUE(fields.contains(c.field)) << "expected field " << c.field;
    if (c.field == "_raw") {
      EXPECT_EQ(fields["_raw"], c.data);
    }
  }
}

TEST_F(RedisStoreTest, ConflictingCommitLeavesNothingWritten) {
  Oid x = store->new_oids(1), y = store->new_oids(1), z = store->new_oids(1);
  std::uint64_t v1 = put(*store, x, 1);
  put(*store, z, "keep me", "Thing", "z");
  std::uint64_t csn = put(*store, x, 2);
  std::string stream_len = one(server().command({"XLEN", prefix + "changes"}));

  CommitRequest req;
  req.reads.push_back(ReadCheck{x, v1});
  req.writes.push_back(WriteOp{y, "Thing", "y", encode(Value(Value::Map{{"name", "new"}}))});
  req.writes.push_back(WriteOp{x, "", "", encode(Value(3))});
  req.deletes.push_back(z);
  EXPECT_THROW(store->commit(req), ConflictError);

  EXPECT_EQ(one(server().command({"EXISTS", prefix + "o:" + y.str()})), "0");
  EXPECT_EQ(one(server().command({"HGET", prefix + "k:Thing", "y"})), "(nil)");
  EXPECT_EQ(one(server().command({"HGET", prefix + "k:Thing", "z"})), z.str());
  EXPECT_EQ(one(server().command({"ZSCORE", prefix + "t:Thing", y.str()})), "(nil)");
  EXPECT_EQ(one(server().command({"GET", prefix + "csn"})), std::to_string(csn));
  EXPECT_EQ(one(server().command({"XLEN", prefix + "changes"})), stream_len);
  EXPECT_EQ(decode(get(*store, x).data), Value(2));
  EXPECT_TRUE(get(*store, z).exists());

  // A key conflict is checked in the same script, before anything is applied.
  CommitRequest key_clash;
  key_clash.writes.push_back(WriteOp{y, "Thing", "z", encode(Value(1))});
  key_clash.writes.push_back(WriteOp{x, "", "", encode(Value(4))});
  try {
    store->commit(key_clash);
    FAIL() << "took a key another object holds";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), (std::vector<Oid>{y, z}));
  }
  EXPECT_EQ(decode(get(*store, x).data), Value(2));
  EXPECT_EQ(one(server().command({"GET", prefix + "csn"})), std::to_string(csn));
}

// A person deleting an object's `P o:<oid>` with redis-cli left its key index entry behind,
// and every later write of that type and key conflicted with an object that was not there: a
// record of that id could never be saved again.
TEST_F(RedisStoreTest, AKeyEntryWhoseObjectWasDeletedByHandDoesNotHoldTheKey) {
  Oid a = store->new_oids(1), b = store->new_oids(1);
  put(*store, a, Value::Map{{"v", 1}}, "User", "harry");
  ASSERT_EQ(one(server().command({"DEL", prefix + "o:" + a.str()})), "1");
  put(*store, b, Value::Map{{"v", 2}}, "User", "harry");
  EXPECT_EQ(store->find_key("User", "harry"), b);
  EXPECT_EQ(decode(get(*store, b).data), Value(Value::Map{{"v", 2}}));
  EXPECT_EQ(hgetall(prefix + "User:harry").at("_oid"), b.str());
  // A live holder still holds it.
  Oid c = store->new_oids(1);
  CommitRequest taken;
  taken.writes.push_back(WriteOp{c, "User", "harry", encode(Value(3))});
  EXPECT_THROW(store->commit(taken), ConflictError);
}

// The same for an object's readable hash deleted by hand: its pointer `P o:<oid>` and index
// entries stay, but name no object. find_key and the scans pass over it (as load does), and a
// write of that type and key takes the key over.
TEST_F(RedisStoreTest, AKeyWhoseReadableHashWasDeletedByHandIsFree) {
  using Entries = std::vector<std::pair<Oid, std::string>>;
  auto entries = [](const std::vector<ScanEntry>& scanned) {
    Entries out;
    for (const ScanEntry& e : scanned)
      out.emplace_back(e.oid, e.key);
    return out;
  };
  Oid a = store->new_oids(1), b = store->new_oids(1), c = store->new_oids(1);
  put(*store, a, Value::Map{{"v", 1}}, "User", "harry");
  put(*store, c, Value::Map{{"v", 3}}, "User", "hermione");
  ASSERT_EQ(one(server().command({"DEL", prefix + "User:harry"})), "1");
  EXPECT_EQ(get(*store, a).version, 0u);
  EXPECT_EQ(store->find_key("User", "harry"), std::nullopt);
  EXPECT_EQ(entries(store->scan_type("User", Oid(0), 10)), (Entries{{c, "hermione"}}));
  EXPECT_EQ(entries(store->scan_keys("User", "", "", 10)), (Entries{{c, "hermione"}}));
  // A page whose first entries are dead still fills from the live ones after them.
  EXPECT_EQ(entries(store->scan_type("User", Oid(0), 1)), (Entries{{c, "hermione"}}));
  EXPECT_EQ(entries(store->scan_keys("User", "", "", 1)), (Entries{{c, "hermione"}}));
  put(*store, b, Value::Map{{"v", 2}}, "User", "harry");
  EXPECT_EQ(store->find_key("User", "harry"), b);
  EXPECT_EQ(decode(get(*store, b).data), Value(Value::Map{{"v", 2}}));
  EXPECT_EQ(entries(store->scan_keys("User", "", "", 10)),
            (Entries{{b, "harry"}, {c, "hermione"}}));
  // The old oid is gone for good: not an alias of the object that took its key (its pointer
  // led to the same readable key), and deleting it leaves that object alone.
  auto fresh = open(server().url(prefix));
  EXPECT_FALSE(get(*fresh, a).exists());
  CommitRequest del;
  del.deletes.push_back(a);
  store->commit(del);
  EXPECT_EQ(store->find_key("User", "harry"), b);
  EXPECT_EQ(decode(get(*fresh, b).data), Value(Value::Map{{"v", 2}}));
  EXPECT_EQ(entries(store->scan_type("User", Oid(0), 10)),
            (Entries{{b, "harry"}, {c, "hermione"}}));
}

// A Redis database flushed under an open store starts another history, whose CSNs and versions
// repeat the old ones: a read validated at "version 1" would pass against another commit's
// version 1, and that commit would be lost. The store refuses to commit or sync across it.
TEST_F(RedisStoreTest, AStoreRefusesToGoOnInAFlushedDatabase) {
  Oid a = store->new_oids(1);
  std::uint64_t v1 = put(*store, a, Value::Map{{"n", 1}});
  ASSERT_EQ(one(server().command({"FLUSHALL"})), "OK");
  auto after = open(server().url(prefix));  // another client, after the flush
  after->new_oids(1);
  EXPECT_EQ(put(*after, a, Value::Map{{"n", 2}}), v1) << "the new history repeats the CSN";
  CommitRequest stale;
  stale.reads.push_back(ReadCheck{a, v1});
  stale.writes.push_back(WriteOp{a, "", "", encode(Value(Value::Map{{"n", 3}}))});
  try {
    store->commit(stale);
    FAIL() << "a commit validated against the old history was applied";
  } catch (const Corruption& e) {
    EXPECT_NE(std::string(e.what()).find("flushed or replaced"), std::string::npos) << e.what();
  }
  EXPECT_EQ(decode(get(*after, a).data), Value(Value::Map{{"n", 2}}));
  EXPECT_THROW(store->changes_since(0), Corruption);
  // Found once, for good: the calls that cannot tell by themselves refuse too (a lookup by key
  // answered "none", and a query nothing, from the other history).
  EXPECT_THROW(store->find_key("User", "harry"), Corruption);
  EXPECT_THROW(store->scan_type("User", Oid(0), 10), Corruption);
  EXPECT_THROW(store->scan_keys("User", "", "", 10), Corruption);
  EXPECT_FALSE(store->hears_commits());
  // Opened again, a store works in the new history.
  auto reopened = open(server().url(prefix));
  EXPECT_NO_THROW(put(*reopened, a, Value::Map{{"n", 4}}));
  EXPECT_EQ(reopened->changes_since(0).csn, v1 + 1);
}

// A load answered below the CSNs a store has seen, in a flushed database, names the flush: the
// epoch tells, not the CSN (which would say "went back", an older copy).
TEST_F(RedisStoreTest, ALoadInAFlushedDatabaseSaysItWasFlushed) {
  Oid a = store->new_oids(1);
  for (int i = 0; i < 3; ++i)
    put(*store, a, Value::Map{{"n", i}});
  ASSERT_EQ(one(server().command({"FLUSHALL"})), "OK");
  auto after = open(server().url(prefix));
  after->new_oids(1);
  put(*after, a, Value::Map{{"n", 9}});
  try {
    store->load(std::vector<Oid>{a});
    FAIL() << "a load in another history was answered";
  } catch (const Corruption& e) {
    EXPECT_NE(std::string(e.what()).find("flushed or replaced"), std::string::npos) << e.what();
  }
}

// A store following the change stream stops saying it hears of commits once the database is
// flushed: the stream goes quiet (its new CSNs are below the feed's), and the object layer,
// trusting a quiet feed, served cached states as current. Now it asks changes_since(), which
// refuses.
TEST_F(RedisStoreTest, AFlushTakesTheChangeFeedDown) {
  std::atomic<int> heard{0};
  Subscription sub = store->subscribe([&](std::uint64_t, std::span<const Oid>) { ++heard; });
  Oid a = store->new_oids(1);
  put(*store, a, Value::Map{{"n", 1}});
  ASSERT_TRUE(eventually([&] { return heard.load() == 1 && store->hears_commits(); }));
  ASSERT_EQ(one(server().command({"FLUSHALL"})), "OK");
  EXPECT_TRUE(eventually([&] { return !store->hears_commits(); }, std::chrono::seconds(10)))
      << "the feed did not notice the flush";
  auto after = open(server().url(prefix));
  after->new_oids(1);
  put(*after, a, Value::Map{{"n", 2}});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(store->hears_commits()) << "the feed came back in another history";
  EXPECT_THROW(store->changes_since(0), Corruption);
}

// After a flush the fence counters start again: a store that went on locking would hand out
// tokens it had handed out before, and a holder of the old token 3 would pass as current.
TEST_F(RedisStoreTest, AStoreRefusesToLockInAFlushedDatabase) {
  for (std::uint64_t expected = 1; expected <= 3; ++expected) {
    EXPECT_EQ(store->lock(LockRequest{"fenced", "w", std::chrono::seconds(10)}), expected);
    ASSERT_TRUE(store->unlock("fenced", "w"));
  }
  ASSERT_EQ(one(server().command({"FLUSHALL"})), "OK");
  EXPECT_THROW(store->lock(LockRequest{"fenced", "w", std::chrono::seconds(10)}), Corruption);
  EXPECT_TRUE(server().command({"KEYS", prefix + "lock:*"}).empty()) << "the refused lock was set";
  // Opened again, a store works in the new history.
  auto reopened = open(server().url(prefix));
  EXPECT_EQ(reopened->lock(LockRequest{"fenced", "w", std::chrono::seconds(10)}), 1u);
}

// A CSN past the newest that the store never answered is the caller's mistake: refused, and the
// store goes on. (Taken for a database gone back, it used to stop the store for every caller.)
TEST_F(RedisStoreTest, ChangesSinceACsnNeverSeenIsRefusedAndTheStoreGoesOn) {
  Oid a = store->new_oids(1);
  std::uint64_t csn = put(*store, a, Value::Map{{"n", 1}});
  EXPECT_THROW(store->changes_since(csn + 1000), InvalidArgument);
  EXPECT_EQ(put(*store, a, Value::Map{{"n", 2}}), csn + 1);
  EXPECT_TRUE(store->changes_since(csn + 1).oids.empty());
  EXPECT_TRUE(store->hears_commits());
}

// A CSN counter the lock script cannot read back fails the lock before anything is written: it
// used to set the lock and take a token, and the client then failed parsing the reply.
TEST_F(RedisStoreTest, AnUnreadableCsnFailsALockBeforeTakingIt) {
  ASSERT_EQ(one(server().command({"SET", prefix + "csn", "not a number"})), "OK");
  EXPECT_THROW(store->lock(LockRequest{"x", "w", std::chrono::seconds(60)}), Error);
  EXPECT_TRUE(server().command({"KEYS", prefix + "lock:*"}).empty()) << "a lock was set";
  EXPECT_TRUE(server().command({"KEYS", prefix + "fence:*"}).empty()) << "a token was taken";
}

// A fence counter edited by hand into something INCR refuses fails the lock, and leaves no lock
// behind that nobody holds a token for.
TEST_F(RedisStoreTest, ABrokenFenceCounterLeavesTheLockFree) {
  ASSERT_EQ(one(server().command({"SET", prefix + "fence:x", "not a number"})), "OK");
  EXPECT_THROW(store->lock(LockRequest{"x", "w", std::chrono::seconds(60)}), Error);
  EXPECT_TRUE(server().command({"KEYS", prefix + "lock:*"}).empty()) << "a lock without a token";
  ASSERT_EQ(one(server().command({"SET", prefix + "fence:x", "41"})), "OK");
  EXPECT_EQ(store->lock(LockRequest{"x", "other", std::chrono::seconds(60)}), 42u);
}

TEST_F(RedisStoreTest, TwoStoresOnOneRedisSeeEachOthersCommits) {
  std::unique_ptr<Store> other = open(server().url(prefix));
  Oid a = store->new_oids(1);
  Oid b = other->new_oids(1);
  EXPECT_NE(a, b);
  std::uint64_t start = put(*store, a, Value::Map{{"name", "from the first"}}, "User", "first");
  // `b` was allocated by the other store: this one must accept a write to it.
  std::uint64_t second = put(*store, b, "written by the first store");
  EXPECT_GT(second, start);

  StoredObject seen = get(*other, a);
  EXPECT_EQ(seen.version, start);
  EXPECT_EQ(decode(seen.data), Value(Value::Map{{"name", "from the first"}}));
  EXPECT_EQ(other->find_key("User", "first"), a);

  Changes changes = other->changes_since(start);
  EXPECT_TRUE(changes.complete);
  EXPECT_EQ(changes.csn, second);
  EXPECT_EQ(changes.oids, std::vector<Oid>{b});

  // The other store commits on top; the first store's stale read now conflicts.
  std::uint64_t third = put(*other, a, Value::Map{{"name", "changed"}}, "User", "first");
  CommitRequest stale;
  stale.reads.push_back(ReadCheck{a, start});
  stale.writes.push_back(WriteOp{a, "User", "first", encode(Value(0))});
  EXPECT_THROW(store->commit(stale), ConflictError);
  EXPECT_EQ(store->changes_since(second).oids, std::vector<Oid>{a});
  EXPECT_EQ(get(*store, a).version, third);
  EXPECT_THROW(put(*other, b, "x", "User", "first"), ConflictError);  // keys are shared too

  // Locks are shared: the other store cannot take a lock this one holds.
  ASSERT_TRUE(store->lock(LockRequest{"shared", "alice", std::chrono::seconds(10)}));
  EXPECT_FALSE(other->lock(LockRequest{"shared", "bob", std::chrono::seconds(10)}));
  EXPECT_TRUE(other->unlock("shared", "alice"));
}

TEST_F(RedisStoreTest, ListenersHearCommitsOfOtherStoresWithin100Ms) {
  std::unique_ptr<Store> other = open(server().url(prefix));
  ListenerLog heard;
  Subscription sub = other->subscribe(heard.listener());
  Oid a = store->new_oids(1);
  Oid b = store->new_oids(1);
  for (int round = 0; round < 5; ++round) {
    CommitRequest req;
    req.writes.push_back(WriteOp{a, "", "", encode(Value(round))});
    req.writes.push_back(WriteOp{b, "", "", encode(Value(-round))});
    std::uint64_t csn = store->commit(req);
    auto committed = std::chrono::steady_clock::now();
    ASSERT_TRUE(heard.wait_for(csn, std::chrono::milliseconds(100)))
        << "round " << round << ": the other store's listener did not hear CSN " << csn;
    EXPECT_LE(std::chrono::steady_clock::now() - committed, std::chrono::milliseconds(100));
    EXPECT_EQ(heard.oids_of(csn), (std::vector<Oid>{a, b}));
    Changes changes = other->changes_since(csn - 1);
    EXPECT_TRUE(changes.complete);
    EXPECT_EQ(changes.csn, csn);
    EXPECT_EQ(changes.oids, (std::vector<Oid>{a, b}));
  }
}

TEST_F(RedisStoreTest, ListenersHearEveryCommitOnceInCsnOrder) {
  std::unique_ptr<Store> other = open(server().url(prefix));
  Oid a = store->new_oids(1);
  std::uint64_t before = put(*store, a, 0);  // made before subscribing: never heard
  ListenerLog heard;
  Subscription sub = store->subscribe(heard.listener());
  // Local and foreign commits from several threads at once.
  constexpr int per_thread = 50;
  std::vector<std::uint64_t> made;
  std::mutex made_mu;
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&, t] {
      Store& s = t % 2 == 0 ? *store : *other;
      for (int i = 0; i < per_thread; ++i) {
        std::uint64_t csn = put(s, a, t * 1000 + i);
        std::lock_guard lk(made_mu);
        made.push_back(csn);
      }
    });
  }
  for (auto& th : pool)
    th.join();
  std::sort(made.begin(), made.end());
  ASSERT_TRUE(heard.wait_for(made.back(), std::chrono::seconds(5)));
  EXPECT_EQ(heard.csns(), made) << "each commit heard once, in CSN order";
  EXPECT_GT(made.front(), before);
}

TEST_F(RedisStoreTest, ClosingAStoreStopsItsFeedPromptly) {
  ListenerLog heard;
  Subscription sub = store->subscribe(heard.listener());
  Oid a = store->new_oids(1);
  ASSERT_TRUE(heard.wait_for(put(*store, a, 1), std::chrono::seconds(5)));
  auto start = std::chrono::steady_clock::now();
  store.reset();  // its feed is blocked in XREAD
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900))
      << "the feed waited out its XREAD instead of being interrupted";
  EXPECT_TRUE(sub.active());
  sub.reset();  // the subscription outlives the store
}

TEST_F(RedisStoreTest, TransfersThroughTwoStoresKeepTheSum) {
  std::unique_ptr<Store> other = open(server().url(prefix));
  constexpr int counters = 5, per_thread = 200, initial = 100;
  std::vector<Oid> ids;
  for (int i = 0; i < counters; ++i) {
    ids.push_back(store->new_oids(1));
    put(*store, ids.back(), initial);
  }
  std::atomic<int> applied{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    Store& s = t % 2 == 0 ? *store : *other;
    pool.emplace_back([&, t] {
      for (int done = 0; done < per_thread;) {
        auto i = static_cast<std::size_t>((t + done) % counters);
        auto j = static_cast<std::size_t>((t + done + 1 + t % 3) % counters);
        Oid pair[] = {ids[i], ids[j]};
        LoadResult r = s.load(pair);
        CommitRequest req;
        req.reads = {ReadCheck{ids[i], r.objects[0].version},
                     ReadCheck{ids[j], r.objects[1].version}};
        req.writes.push_back(
            WriteOp{ids[i], "", "", encode(Value(decode(r.objects[0].data).as_int() - 1))});
        req.writes.push_back(
            WriteOp{ids[j], "", "", encode(Value(decode(r.objects[1].data).as_int() + 1))});
        try {
          s.commit(req);
          ++applied;
          ++done;
        } catch (const ConflictError&) {
        }
      }
    });
  }
  for (auto& th : pool)
    th.join();
  EXPECT_EQ(applied.load(), 4 * per_thread);
  std::int64_t sum = 0;
  for (const auto& obj : other->load(ids).objects)
    sum += decode(obj.data).as_int();
  EXPECT_EQ(sum, counters * initial);
}

// The bank invariant through the transaction layer: 16 threads transfer money between accounts
// with Database::transaction (retried on conflict) on one RedisStore, while a reader sums all
// balances in views. Every view sees the initial total, and the balances end as planned.
TEST_F(RedisStoreTest, BankTransfersFrom16ThreadsKeepTheTotalInEveryView) {
  constexpr int threads = 16;
  constexpr int transfers = 40;
  constexpr int accounts = 20;
  constexpr std::int64_t initial = 1000;
  DatabaseOptions options;
  options.max_retries = 1000;  // sixteen threads on twenty accounts collide often
  options.pool_size = threads + 1;
  Database db(std::move(store), options);

  std::vector<Oid> ids = db.transaction([&](Txn& tx) {
    std::vector<Oid> out;
    Value::List refs;
    for (int i = 0; i < accounts; ++i) {
      Object account = tx.create(Value::Map{{"balance", initial}}, "Account");
      out.push_back(account.oid());
      refs.push_back(account.ref());
    }
    tx.root().set("accounts", std::move(refs));
    return out;
  });
  auto total_in_view = [&] {
    return db.view([&](View& v) {
      std::int64_t total = 0;
      for (const Value& ref : v.root().get("accounts").as_list())
        total += v.get(ref.as_ref()).get().find("balance")->as_int();
      return total;
    });
  };

  std::vector<std::int64_t> expected(accounts, initial);
  std::vector<std::vector<std::array<int, 3>>> plans(threads);  // from, to, amount
  for (int t = 0; t < threads; ++t) {
    std::mt19937 rng(static_cast<unsigned>(t + 1));
    std::uniform_int_distribution<int> pick(0, accounts - 1);
    std::uniform_int_distribution<int> amount(1, 50);
    for (int i = 0; i < transfers; ++i) {
      int from = pick(rng);
      int to = pick(rng);
      if (to == from) to = (from + 1) % accounts;
      int sum = amount(rng);
      expected[from] -= sum;
      expected[to] += sum;
      plans[t].push_back({from, to, sum});
    }
  }

  std::atomic<int> writers_left{threads};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (const auto& [from, to, sum] : plans[t]) {
          db.transaction([&](Txn& tx) {
            auto move = [&](int account, std::int64_t delta) {
              tx.modify(ids[account], [&](Value& state) {
                Value& balance = state.as_map().at("balance");
                balance = balance.as_int() + delta;
              });
            };
            move(from, -sum);
            move(to, sum);
          });
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << "thread " << t << ": " << e.what();
      }
      --writers_left;
    });
  }
  int views = 0;
  int wrong = 0;
  try {
    while (writers_left.load() > 0 || views < 20) {
      if (total_in_view() != accounts * initial) ++wrong;
      ++views;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "view: " << e.what();
  }
  for (auto& th : pool)
    th.join();
  EXPECT_EQ(wrong, 0) << "of " << views << " views saw another total";
  EXPECT_EQ(total_in_view(), accounts * initial);

  // A store opened afresh on the same Redis reads the planned balances.
  std::unique_ptr<Store> fresh = open(server().url(prefix));
  LoadResult loaded = fresh->load(ids);
  for (int a = 0; a < accounts; ++a) {
    auto i = static_cast<std::size_t>(a);
    EXPECT_EQ(decode(loaded.objects[i].data).find("balance")->as_int(), expected[i])
        << "account " << a;
  }
}

// load() pipelines its reads between two GETs of the CSN and falls back to MULTI when a commit
// slipped in between: either way every load is one snapshot. A writer moves units between
// counters while a reader checks that each load sums to the total. The loads are large, so
// that Redis reads each pipeline in several pieces and commits can land between them.
TEST_F(RedisStoreTest, LoadsAreSnapshotsWhileCommitsRunAlongside) {
  std::unique_ptr<Store> writer_store = open(server().url(prefix));
  constexpr int counters = 2000;
  constexpr std::int64_t initial = 10;
  const std::string padding(20, 'p');
  auto counter = [&](std::int64_t n) { return Value::Map{{"n", n}, {"padding", padding}}; };
  Oid first = store->new_oids(counters);
  std::vector<Oid> ids;
  CommitRequest fill;
  for (int i = 0; i < counters; ++i) {
    ids.emplace_back(first.value() + static_cast<std::uint64_t>(i));
    fill.writes.push_back(WriteOp{ids.back(), "", "", encode(Value(counter(initial)))});
  }
  store->commit(fill);

  std::atomic<bool> stop{false};
  std::atomic<int> moves{0};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      Oid pair[] = {ids[static_cast<std::size_t>(i % counters)],
                    ids[static_cast<std::size_t>((i * 7 + 1) % counters)]};
      if (pair[0] == pair[1]) continue;
      LoadResult r = writer_store->load(pair);
      std::int64_t a = decode(r.objects[0].data).find("n")->as_int();
      std::int64_t b = decode(r.objects[1].data).find("n")->as_int();
      CommitRequest req;
      req.reads = {ReadCheck{pair[0], r.objects[0].version},
                   ReadCheck{pair[1], r.objects[1].version}};
      req.writes = {WriteOp{pair[0], "", "", encode(Value(counter(a - 1)))},
                    WriteOp{pair[1], "", "", encode(Value(counter(b + 1)))}};
      writer_store->commit(req);
      ++moves;
    }
  });
  int loads = 0;
  int torn = 0;
  while (loads < 20 || moves.load() < 50) {
    LoadResult r = store->load(ids);
    std::int64_t sum = 0;
    for (const StoredObject& obj : r.objects) {
      sum += decode(obj.data).find("n")->as_int();
      EXPECT_LE(obj.version, r.csn) << "an object newer than the snapshot's CSN";
    }
    if (sum != counters * initial) ++torn;
    ++loads;
  }
  stop = true;
  writer.join();
  EXPECT_EQ(torn, 0) << "of " << loads << " loads";
}

TEST_F(RedisStoreTest, ChangesSinceIsIncompleteOnceTheStreamIsTrimmed) {
  Oid a = store->new_oids(1);
  std::uint64_t first = put(*store, a, 1);
  put(*store, a, 2);
  std::uint64_t last = put(*store, a, 3);
  EXPECT_TRUE(store->changes_since(first).complete);
  server().command({"XTRIM", prefix + "changes", "MAXLEN", "1"});
  Changes old = store->changes_since(first);
  EXPECT_FALSE(old.complete);
  EXPECT_EQ(old.csn, last);
  Changes recent = store->changes_since(last - 1);
  EXPECT_TRUE(recent.complete);
  EXPECT_EQ(recent.oids, std::vector<Oid>{a});
  Changes none = store->changes_since(last);
  EXPECT_TRUE(none.complete);
  EXPECT_TRUE(none.oids.empty());
}

// Entries trimmed from the change stream before the feed read them: the listeners hear that
// commits up to the first one left are unknown (a call with no oids, store.h), then that one.
TEST_F(RedisStoreTest, ListenersHearWhenTheStreamWasTrimmedPastWhatTheFeedRead) {
  std::unique_ptr<Store> other = open(server().url(prefix));
  Oid a = store->new_oids(1);
  std::mutex mu;
  std::condition_variable cv;
  bool first_heard = false;
  bool released = false;
  std::vector<std::pair<std::uint64_t, std::vector<Oid>>> heard;
  Subscription sub = store->subscribe([&](std::uint64_t csn, std::span<const Oid> oids) {
    std::unique_lock lk(mu);
    heard.emplace_back(csn, std::vector<Oid>(oids.begin(), oids.end()));
    first_heard = true;
    cv.notify_all();
    // The feed waits here, on its first commit, while the test commits and trims behind it.
    cv.wait(lk, [&] { return released; });
  });
  std::uint64_t c1 = put(*other, a, 1);
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(5), [&] { return first_heard; }));
  }
  put(*other, a, 2);
  std::uint64_t c3 = put(*other, a, 3);
  std::uint64_t c4 = put(*other, a, 4);
  server().command({"XTRIM", prefix + "changes", "MAXLEN", "1"});
  {
    std::lock_guard lk(mu);
    released = true;
  }
  cv.notify_all();
  std::unique_lock lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(5), [&] { return heard.size() >= 3; }));
  ASSERT_EQ(heard.size(), 3u);
  EXPECT_EQ(heard[0].first, c1);
  EXPECT_EQ(heard[0].second, std::vector<Oid>{a});
  EXPECT_EQ(heard[1].first, c3) << "the commits before the first one left are unknown";
  EXPECT_TRUE(heard[1].second.empty());
  EXPECT_EQ(heard[2].first, c4);
  EXPECT_EQ(heard[2].second, std::vector<Oid>{a});
}

// The calls of one Redis command the server has run so far (INFO commandstats).
std::uint64_t calls_of(std::string_view command) {
  std::string info = server().command({"INFO", "commandstats"}).at(0);
  std::string tag = "cmdstat_" + std::string(command) + ":calls=";
  auto at = info.find(tag);
  if (at == std::string::npos) return 0;
  return std::stoull(info.substr(at + tag.size()));
}

TEST_F(RedisStoreTest, KeyedObjectsLiveAtReadableKeysThatFollowEveryChange) {
  Oid a = store->new_oids(1);
  Value v = Value::Map{{"name", "Harry"}};
  put(*store, a, v, "User", "harry");
  EXPECT_EQ(hgetall(prefix + "User:harry")["name"], "\"Harry\"");

  // A new key moves the hash; the old key is gone and the pointer follows.
  put(*store, a, v, "User", "harold");
  EXPECT_EQ(one(server().command({"EXISTS", prefix + "User:harry"})), "0");
  EXPECT_EQ(hgetall(prefix + "User:harold")["_oid"], a.str());
  EXPECT_EQ(one(server().command({"HGET", prefix + "o:" + a.str(), "_at"})),
            prefix + "User:harold");

  // A key may hold ':' and look like the store's own keys: it stays under its type.
  put(*store, a, v, "User", "o:5");
  EXPECT_EQ(hgetall(prefix + "User:o:5")["_oid"], a.str());
  EXPECT_EQ(one(server().command({"EXISTS", prefix + "User:harold"})), "0");

  // Types that would be ambiguous or clash with the store's keys keep the hash at o:<oid>.
  for (const char* type : {"a:b", "o", "t", "k", "ks", "lock", "fence"}) {
    put(*store, a, v, type, "5");
    auto fields = hgetall(prefix + "o:" + a.str());
    EXPECT_EQ(fields["_type"], type);
    EXPECT_EQ(fields["name"], "\"Harry\"") << type;
    EXPECT_FALSE(fields.contains("_oid")) << type;
    EXPECT_EQ(one(server().command({"EXISTS", prefix + "User:o:5"})), "0") << type;
    EXPECT_EQ(one(server().command({"EXISTS", prefix + "a:b:5"})), "0") << type;
    EXPECT_EQ(store->find_key(type, "5"), a) << type;
  }
  // An empty key or type: no readable key either.
  put(*store, a, v, "User", "");
  EXPECT_EQ(hgetall(prefix + "o:" + a.str())["_type"], "User");
  put(*store, a, v, "", "harry");
  EXPECT_EQ(hgetall(prefix + "o:" + a.str())["_key"], "harry");

  // Back to a readable key, then deleted: both keys go.
  put(*store, a, v, "User", "harry");
  EXPECT_EQ(hgetall(prefix + "User:harry")["_oid"], a.str());
  CommitRequest del;
  del.deletes.push_back(a);
  store->commit(del);
  EXPECT_EQ(one(server().command({"EXISTS", prefix + "User:harry"})), "0");
  EXPECT_EQ(one(server().command({"EXISTS", prefix + "o:" + a.str()})), "0");
  EXPECT_FALSE(get(*store, a).exists());
  EXPECT_FALSE(store->find_key("User", "harry").has_value());
}

TEST_F(RedisStoreTest, ReadableKeysMoveBetweenObjectsInOneCommit) {
  Oid a = store->new_oids(1), b = store->new_oids(1);
  put(*store, a, Value::Map{{"name", "A"}}, "User", "first");
  put(*store, b, Value::Map{{"name", "B"}}, "User", "second");
  CommitRequest swap;
  swap.writes.push_back(WriteOp{a, "User", "second", encode(Value(Value::Map{{"name", "A"}}))});
  swap.writes.push_back(WriteOp{b, "User", "first", encode(Value(Value::Map{{"name", "B"}}))});
  store->commit(swap);
  EXPECT_EQ(hgetall(prefix + "User:first")["_oid"], b.str());
  EXPECT_EQ(hgetall(prefix + "User:first")["name"], "\"B\"");
  EXPECT_EQ(hgetall(prefix + "User:second")["_oid"], a.str());
  auto fresh = open(server().url(prefix));
  EXPECT_EQ(fresh->find_key("User", "first"), b);
  EXPECT_EQ(decode(get(*fresh, a).data), Value(Value::Map{{"name", "A"}}));
  EXPECT_EQ(get(*fresh, a).key, "second");
  EXPECT_EQ(get(*fresh, b).key, "first");
}

TEST_F(RedisStoreTest, LoadsByOidFindObjectsMovedByAnotherStore) {
  Oid a = store->new_oids(1), b = store->new_oids(1);
  put(*store, a, Value::Map{{"n", 1}}, "User", "harry");
  ASSERT_EQ(get(*store, a).key, "harry");  // this store now reads a at User:harry

  // Another store moves a to another key and gives harry to b.
  auto other = open(server().url(prefix));
  CommitRequest move;
  move.writes.push_back(WriteOp{a, "User", "harold", encode(Value(Value::Map{{"n", 2}}))});
  move.writes.push_back(WriteOp{b, "User", "harry", encode(Value(Value::Map{{"n", 3}}))});
  other->commit(move);
  StoredObject seen = get(*store, a);
  EXPECT_EQ(seen.key, "harold");
  EXPECT_EQ(decode(seen.data), Value(Value::Map{{"n", 2}}));
  EXPECT_EQ(decode(get(*store, b).data), Value(Value::Map{{"n", 3}}));

  // ... then makes it unkeyed, then deletes it.
  put(*other, a, Value::Map{{"n", 4}});
  EXPECT_EQ(decode(get(*store, a).data), Value(Value::Map{{"n", 4}}));
  EXPECT_EQ(get(*store, a).key, "");
  put(*other, a, Value::Map{{"n", 5}}, "User", "harold");
  EXPECT_EQ(decode(get(*store, a).data), Value(Value::Map{{"n", 5}}));
  CommitRequest del;
  del.deletes.push_back(a);
  other->commit(del);
  EXPECT_FALSE(get(*store, a).exists());
}

TEST_F(RedisStoreTest, AKeyedObjectFoundByKeyLoadsInOnePipelinedRoundTrip) {
  Oid a = store->new_oids(1);
  put(*store, a, Value::Map{{"name", "Harry"}}, "User", "harry");
  auto fresh = open(server().url(prefix));
  std::optional<Oid> found = fresh->find_key("User", "harry");
  ASSERT_EQ(found, a);
  std::uint64_t scripts = calls_of("evalsha");
  std::uint64_t hgetalls = calls_of("hgetall");
  EXPECT_EQ(decode(get(*fresh, a).data), Value(Value::Map{{"name", "Harry"}}));
  EXPECT_EQ(calls_of("evalsha"), scripts) << "the load went through the script";
  EXPECT_EQ(calls_of("hgetall"), hgetalls + 1);

  // Without knowing the key, the pointer is followed by the load script: still right.
  auto blind = open(server().url(prefix));
  Oid oids[] = {a, Oid(0)};
  LoadResult r = blind->load(oids);
  EXPECT_EQ(r.objects[0].key, "harry");
  EXPECT_EQ(decode(r.objects[0].data), Value(Value::Map{{"name", "Harry"}}));
  EXPECT_FALSE(r.objects[1].exists());
}

TEST_F(RedisStoreTest, BytesOfTextReadAsText) {
  Oid a = store->new_oids(1);
  Value user = Value::Map{{"email", Bytes{"harry@hogwarts.example"}},
                          {"blob", Bytes{std::string("\xff\x00", 2)}},
                          {"nested", Value::List{Bytes{"x"}}}};
  put(*store, a, user, "User", "harry");
  auto fields = hgetall(prefix + "User:harry");
  EXPECT_EQ(fields["email"], R"({"$utf8":"harry@hogwarts.example"})");
  EXPECT_EQ(fields["blob"], R"({"$bytes":"/wA="})");
  EXPECT_EQ(fields["nested"], R"([{"$bytes":"eA=="}])");
  EXPECT_EQ(get(*store, a).data, encode(user));
  // A hand edit in the same form, with a space, is bytes too.
  server().command(
      {"HSET", prefix + "User:harry", "email", R"({"$utf8": "ron@hogwarts.example"})"});
  EXPECT_EQ(*decode(get(*store, a).data).find("email"), Value(Bytes{"ron@hogwarts.example"}));
}

TEST_F(RedisStoreTest, HandEditsAtAReadableKeyAreWhatLoads) {
  Oid a = store->new_oids(1);
  put(*store, a, Value::Map{{"name", "Harry"}}, "User", "harry");
  server().command({"HSET", prefix + "User:harry", "name", "\"Harry Potter\""});
  auto fresh = open(server().url(prefix));
  EXPECT_EQ(decode(get(*fresh, a).data), Value(Value::Map{{"name", "Harry Potter"}}));
  EXPECT_EQ(decode(get(*store, a).data), Value(Value::Map{{"name", "Harry Potter"}}));
}

TEST_F(RedisStoreTest, SimpleFieldsLoadAsTheCodecsExactBytes) {
  // Loads encode plain strings and integers straight from the reply when a hash comes back in
  // key order (a small hash, in Redis's compact encoding, keeps the order it was written in):
  // every length and size boundary must give what encode() gives. With Redis's default limits a
  // hash holding a value over 64 bytes is a hash table, returned in no particular order, and
  // loads through a Value instead: run both, the second with the compact encoding allowed for
  // every size here. (hash-max-ziplist-value is also the name Redis 7 accepts.)
  const std::string limit = "hash-max-ziplist-value";
  std::vector<std::string> saved = server().command({"CONFIG", "GET", limit});
  ASSERT_EQ(saved.size(), 2u);
  struct Restore {
    std::string name, value;
    ~Restore() { server().command({"CONFIG", "SET", name, value}); }
  } restore{limit, saved[1]};
  const std::int64_t ints[] = {0,
                               1,
                               127,
                               128,
                               255,
                               256,
                               65535,
                               65536,
                               4294967295,
                               4294967296,
                               -1,
                               -32,
                               -33,
                               -128,
                               -129,
                               -32768,
                               -32769,
                               -2147483648LL,
                               -2147483649LL,
                               999999999999999999LL,
                               -999999999999999999LL};
  for (const char* max_value : {"64", "100000"}) {
    SCOPED_TRACE(limit + " " + max_value);
    server().command({"CONFIG", "SET", limit, max_value});
    Value::Map fields;
    int i = 0;
    for (std::int64_t n : ints)
      fields.emplace("i" + std::to_string(i++), n);
    for (std::size_t len : {0u, 31u, 32u, 255u, 256u, 65535u, 65536u})
      fields.emplace("s" + std::to_string(len), std::string(len, 'x'));
    fields.emplace("t", true);
    fields.emplace("f", false);
    fields.emplace("z", nullptr);
    Oid a = store->new_oids(1);
    std::string key = std::string("many") + max_value;
    put(*store, a, fields, "Thing", key);
    ASSERT_GE(fields.size(), 16u) << "a map 16 header";
    EXPECT_EQ(get(*store, a).data, encode(Value(fields)));
    auto fresh = open(server().url(prefix));
    EXPECT_EQ(get(*fresh, a).data, encode(Value(fields)));

    // A field added by hand comes after the others in the hash: the map is still canonical.
    server().command({"HSET", prefix + "Thing:" + key, "a", "1"});
    fields.emplace("a", 1);
    EXPECT_EQ(get(*fresh, a).data, encode(Value(fields)));
  }
}

TEST_F(RedisStoreTest, DeletingAnObjectWhoseReadableHashWasDeletedByHandFreesItsKey) {
  Oid a = store->new_oids(1), b = store->new_oids(1);
  put(*store, a, Value::Map{{"n", 1}}, "User", "harry");
  server().command({"DEL", prefix + "User:harry"});
  CommitRequest del;
  del.deletes.push_back(a);
  store->commit(del);
  EXPECT_EQ(one(server().command({"EXISTS", prefix + "o:" + a.str()})), "0");
  EXPECT_EQ(one(server().command({"HGET", prefix + "k:User", "harry"})), "(nil)");
  EXPECT_EQ(one(server().command({"ZSCORE", prefix + "t:User", a.str()})), "(nil)");
  put(*store, b, Value::Map{{"n", 2}}, "User", "harry");  // no conflict with a ghost
  EXPECT_EQ(store->find_key("User", "harry"), b);
}

// A CSN counter deleted by hand would make the next CSN one the change stream already has: the
// commit is refused as Corruption with nothing written (the counter used to be bumped first).
TEST_F(RedisStoreTest, ACsnCounterDeletedByHandRefusesCommitsAndWritesNothing) {
  Oid a = store->new_oids(1);
  put(*store, a, 1);
  std::uint64_t last = put(*store, a, 2);
  server().command({"DEL", prefix + "csn"});
  try {
    put(*store, a, 3);
    FAIL() << "a commit went through with the CSN counter gone";
  } catch (const Corruption& e) {
    EXPECT_NE(std::string(e.what()).find("changed by hand"), std::string::npos) << e.what();
  }
  EXPECT_EQ(one(server().command({"EXISTS", prefix + "csn"})), "0") << "the counter was written";
  // A load answered with a CSN below the store's is told from a database gone back by the
  // stream, which did not go back: the same advice, and the store is not given up on.
  try {
    store->load(std::vector<Oid>{a});
    FAIL() << "a load answered at CSN 0 after CSN " << last;
  } catch (const Corruption& e) {
    EXPECT_NE(std::string(e.what()).find("changed by hand"), std::string::npos) << e.what();
  }
  auto fresh = open(server().url(prefix));
  EXPECT_EQ(decode(get(*fresh, a).data), Value(2));
  // Set back to the stream's last CSN, as the message says, commits go on.
  server().command({"SET", prefix + "csn", std::to_string(last)});
  EXPECT_EQ(put(*store, a, 3), last + 1);
  EXPECT_EQ(store->load(std::vector<Oid>{a}).csn, last + 1);
}

TEST_F(RedisStoreTest, AnEmptyPrefixIsRefused) {
  // Its keys (csn, changes, o:1...) would start every other store's prefix.
  EXPECT_THROW(open(server().url("")), InvalidArgument);
  EXPECT_THROW(open(server().unix_url("")), InvalidArgument);
}

TEST_F(RedisStoreTest, CommitsSurviveAFlushedScriptCache) {
  Oid a = store->new_oids(1);
  put(*store, a, 1);
  server().command({"SCRIPT", "FLUSH"});
  std::uint64_t csn = put(*store, a, 2);
  EXPECT_EQ(get(*store, a).version, csn);
  EXPECT_EQ(decode(get(*store, a).data), Value(2));
}

TEST_F(RedisStoreTest, HandEditedBadJsonIsCorruption) {
  Oid a = store->new_oids(1);
  put(*store, a, Value::Map{{"name", "Harry"}});
  server().command({"HSET", prefix + "o:" + a.str(), "name", "not json"});
  EXPECT_THROW(get(*store, a), Corruption);
}

TEST_F(RedisStoreTest, HandEditedJsonIsWhatLoads) {
  Oid a = store->new_oids(1);
  put(*store, a, Value::Map{{"name", "Harry"}});
  server().command({"HSET", prefix + "o:" + a.str(), "name", "\"Harry Potter\""});
  EXPECT_EQ(decode(get(*store, a).data), Value(Value::Map{{"name", "Harry Potter"}}));
}

// A blob: the marker byte followed by `bytes`.
std::string blob(std::string_view bytes) {
  std::string data(1, blob_marker);
  data += bytes;
  return data;
}

CommitRequest append_to(Oid oid, std::string bytes) {
  CommitRequest req;
  req.appends.push_back(AppendOp{oid, std::move(bytes)});
  return req;
}

bool exists(const std::string& key) {
  return one(server().command({"EXISTS", key})) == "1";
}

// The real redis-cli, as a person would run it, on the test server.
ProcessResult redis_cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/env", "redis-cli", "-p",
                                   std::to_string(server().port()), "--raw"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv);
}

// A write to a connection Redis has closed must be an IoError (and a load is then sent again on
// a new connection), not a SIGPIPE, which kills a program that has not set SIGPIPE to SIG_IGN:
// this test leaves it at the default action. Redis closes the store's idle connection; a load
// too big for the socket's buffer then takes several writes, and the ones after Redis's reset
// meet a closed socket.
TEST_F(RedisStoreTest, WritingToAConnectionRedisClosedIsAnErrorNotASignal) {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  struct sigaction old {};
  ASSERT_EQ(sigaction(SIGPIPE, &default_action, &old), 0);
  struct Restore {
    struct sigaction action;
    ~Restore() { sigaction(SIGPIPE, &action, nullptr); }
  } restore{old};

  Oid first = store->new_oids(1);  // connected
  put(*store, first, Value(1));
  std::vector<Oid> oids;
  for (std::uint64_t i = 0; i < 200'000; ++i)
    oids.push_back(Oid(first.value() + i % 4));
  server().command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // its FIN arrives
  LoadResult result = store->load(oids);
  ASSERT_EQ(result.objects.size(), oids.size());
  EXPECT_EQ(decode(result.objects[0].data), Value(1));
}

TEST_F(RedisStoreTest, BlobBytesAreAPlainStringThatAppendsGrow) {
  Oid oid = store->new_oids(1);
  const std::string bytes_key = prefix + "b:" + oid.str();
  CommitRequest create;
  create.writes.push_back(WriteOp{oid, "", "", blob("first line\n")});
  store->commit(create);
  store->commit(append_to(oid, "second "));
  // Bytes that are no text, not even UTF-8, come out of redis-cli as they went in.
  const std::string binary("line\x01\xff", 6);
  std::uint64_t csn = store->commit(append_to(oid, binary));
  const std::string all = "first line\nsecond " + binary;

  ProcessResult cli = redis_cli({"GET", bytes_key});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(cli.out, all + "\n") << "redis-cli --raw prints the bytes, then a newline";
  EXPECT_EQ(one(server().command({"STRLEN", bytes_key})), std::to_string(all.size()));
  EXPECT_EQ(
      hgetall(prefix + "o:" + oid.str()),
      (std::map<std::string, std::string>{
          {"_version", std::to_string(csn)}, {"_type", ""}, {"_key", ""}, {"_bytes", bytes_key}}))
      << "the hash holds the metadata and where the bytes are, none of the bytes";
  StoredObject got = get(*store, oid);
  EXPECT_EQ(got.data, blob(all));
  EXPECT_EQ(got.version, csn);

  // Overwriting the blob with a value leaves no string behind; a blob again brings one back.
  put(*store, oid, Value::Map{{"n", 1}});
  EXPECT_FALSE(exists(bytes_key));
  EXPECT_FALSE(hgetall(prefix + "o:" + oid.str()).contains("_bytes"));
  EXPECT_EQ(decode(get(*store, oid).data), Value(Value::Map{{"n", 1}}));
  CommitRequest again;
  again.writes.push_back(WriteOp{oid, "", "", blob("")});
  store->commit(again);
  EXPECT_EQ(one(server().command({"GET", bytes_key})), "") << "an empty blob is an empty string";
  EXPECT_EQ(get(*store, oid).data, blob(""));

  // Deleting it deletes its string too.
  CommitRequest del;
  del.deletes.push_back(oid);
  store->commit(del);
  EXPECT_FALSE(exists(bytes_key));
  EXPECT_FALSE(exists(prefix + "o:" + oid.str()));
}

TEST_F(RedisStoreTest, AKeyedBlobKeepsItsBytesAtItsOidWhereverItsHashMoves) {
  Oid oid = store->new_oids(1);
  const std::string bytes_key = prefix + "b:" + oid.str();
  CommitRequest create;
  create.writes.push_back(WriteOp{oid, "Log", "today", blob("ab")});
  store->commit(create);
  store->commit(append_to(oid, "cd"));
  auto fields = hgetall(prefix + "Log:today");
  EXPECT_EQ(fields["_bytes"], bytes_key);
  EXPECT_EQ(fields["_oid"], oid.str());
  EXPECT_EQ(fields.size(), 5u);
  EXPECT_EQ(one(server().command({"GET", bytes_key})), "abcd");

  // Another key moves the hash, not the bytes, which the write replaces.
  CommitRequest move;
  move.writes.push_back(WriteOp{oid, "Log", "yesterday", blob("xyz")});
  store->commit(move);
  EXPECT_FALSE(exists(prefix + "Log:today"));
  EXPECT_EQ(hgetall(prefix + "Log:yesterday")["_bytes"], bytes_key);
  EXPECT_EQ(one(server().command({"GET", bytes_key})), "xyz");
  store->commit(append_to(oid, "!"));
  EXPECT_EQ(get(*store, oid).data, blob("xyz!"));

  // As a value at `P o:<oid>`, then deleted: no string is left at any point.
  put(*store, oid, Value(7));
  EXPECT_FALSE(exists(bytes_key));
  EXPECT_FALSE(exists(prefix + "Log:yesterday"));
  CommitRequest del;
  del.deletes.push_back(oid);
  store->commit(del);
  EXPECT_FALSE(exists(bytes_key));
}

TEST_F(RedisStoreTest, AStoreAppendsToAndDeletesBlobsAnotherCreated) {
  Oid oid = store->new_oids(1);
  CommitRequest create;
  create.writes.push_back(WriteOp{oid, "", "", blob("a")});
  store->commit(create);
  // This store has allocated nothing: it asks Redis whether the oid was, rather than refusing.
  auto other = open(server().url(prefix));
  other->commit(append_to(oid, "b"));
  EXPECT_EQ(get(*store, oid).data, blob("ab"));
  auto third = open(server().url(prefix));
  CommitRequest del;
  del.deletes.push_back(oid);
  third->commit(del);
  EXPECT_FALSE(get(*store, oid).exists());
}

TEST_F(RedisStoreTest, RefusedAppendsSayWhatEveryStoreSays) {
  auto memory = make_memory_store();
  for (Store* s : {store.get(), memory.get()}) {
    (void)s->new_oids(2);
  }
  Oid value(1), small(2);
  for (Store* s : {store.get(), memory.get()}) {
    CommitRequest create;
    create.writes.push_back(WriteOp{value, "", "", encode(Value(1))});
    create.writes.push_back(WriteOp{small, "", "", blob("abc")});
    s->commit(create);
  }
  auto message = [](Store& s, const CommitRequest& req) {
    try {
      s.commit(req);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CommitRequest absent = append_to(Oid(0), "x");
  CommitRequest not_blob = append_to(value, "x");
  CommitRequest too_big = append_to(small, std::string(max_object_bytes - 3, 'x'));
  for (const CommitRequest* req : {&absent, &not_blob, &too_big}) {
    EXPECT_EQ(message(*store, *req), message(*memory, *req));
  }
  EXPECT_THROW(store->commit(absent), NotFound);
  EXPECT_NE(message(*store, too_big).find("67108865 bytes, past the limit of 67108864"),
            std::string::npos)
      << message(*store, too_big);
  // At the limit exactly, it applies.
  too_big.appends[0].data.pop_back();
  store->commit(too_big);
  EXPECT_EQ(one(server().command({"STRLEN", prefix + "b:" + small.str()})),
            std::to_string(max_object_bytes - 1));
}

// A blob written in `_raw` (before blobs had their string) loads as it is, and its first append
// moves its bytes to the string.
TEST_F(RedisStoreTest, AnAppendMovesABlobFromRawToItsString) {
  Oid oid = store->new_oids(1);
  const std::string okey = prefix + "o:" + oid.str();
  server().command({"HSET", okey, "_version", "1", "_type", "", "_key", "", "_raw", blob("ab")});
  EXPECT_EQ(get(*store, oid).data, blob("ab"));
  std::uint64_t csn = store->commit(append_to(oid, "cd"));
  EXPECT_EQ(one(server().command({"GET", prefix + "b:" + oid.str()})), "abcd");
  auto fields = hgetall(okey);
  EXPECT_FALSE(fields.contains("_raw"));
  EXPECT_EQ(fields["_bytes"], prefix + "b:" + oid.str());
  EXPECT_EQ(fields["_version"], std::to_string(csn));
  EXPECT_EQ(get(*store, oid).data, blob("abcd"));
}

TEST_F(RedisStoreTest, BlobsLoadInOneRoundTripOnceTheStoreKnowsThem) {
  Oid oid = store->new_oids(1), plain = store->new_oids(1);
  CommitRequest create;
  create.writes.push_back(WriteOp{oid, "", "", blob("bytes")});
  create.writes.push_back(WriteOp{plain, "", "", encode(Value(Value::Map{{"n", 1}}))});
  store->commit(create);
  Oid both[] = {oid, plain};

  // The writer knows it wrote a blob: its bytes come with its hash, in the one pipeline.
  std::uint64_t scripts = calls_of("evalsha"), gets = calls_of("get");
  LoadResult r = store->load(both);
  EXPECT_EQ(r.objects[0].data, blob("bytes"));
  EXPECT_EQ(calls_of("evalsha"), scripts);
  EXPECT_EQ(calls_of("get"), gets + 3) << "GET csn, GET P b:<oid>, GET csn";

  // A store that never saw it finds out from the hash and reads the bytes in a second round,
  // checked by the CSN; from then on it knows.
  auto fresh = open(server().url(prefix));
  scripts = calls_of("evalsha");
  gets = calls_of("get");
  r = fresh->load(both);
  EXPECT_EQ(r.objects[0].data, blob("bytes"));
  EXPECT_EQ(decode(r.objects[1].data), Value(Value::Map{{"n", 1}}));
  EXPECT_EQ(calls_of("evalsha"), scripts);
  EXPECT_EQ(calls_of("get"), gets + 4);
  gets = calls_of("get");
  EXPECT_EQ(fresh->load(both).objects[0].data, blob("bytes"));
  EXPECT_EQ(calls_of("get"), gets + 3);

  // Once it is no longer a blob, the store stops asking for its bytes.
  put(*store, oid, Value(5));
  gets = calls_of("get");
  EXPECT_EQ(decode(fresh->load(both).objects[0].data), Value(5));
  EXPECT_EQ(calls_of("get"), gets + 3) << "one GET of bytes that are no longer there";
  gets = calls_of("get");
  fresh->load(both);
  EXPECT_EQ(calls_of("get"), gets + 2);
}

// However a load reads a blob (with its hash, in a second round, or by the load script), its
// bytes are those of the version it reports, while appends run alongside. One writer appends a
// byte per commit, so the blob's size grows exactly as its version does.
TEST_F(RedisStoreTest, LoadsOfAGrowingBlobPairItsBytesWithItsVersion) {
  auto writer_store = open(server().url(prefix));
  constexpr int padding_objects = 1000;
  Oid oid = store->new_oids(1);
  Oid first = store->new_oids(padding_objects);
  CommitRequest fill;
  fill.writes.push_back(WriteOp{oid, "", "", blob("")});
  std::vector<Oid> ids = {oid};
  for (int i = 0; i < padding_objects; ++i) {
    ids.emplace_back(first.value() + static_cast<std::uint64_t>(i));
    fill.writes.push_back(WriteOp{ids.back(), "", "", encode(Value(Value::Map{{"n", i}}))});
  }
  ids.push_back(oid);  // the blob also after the others, so that appends can land in between
  std::uint64_t created = store->commit(fill);

  std::atomic<bool> stop{false};
  std::atomic<int> appends{0};
  std::thread writer([&] {
    while (!stop) {
      writer_store->commit(append_to(oid, "x"));
      ++appends;
    }
  });
  int loads = 0, mismatched = 0;
  while (loads < 60 || appends.load() < 200) {
    // Every third load by a store that has never seen the blob.
    std::unique_ptr<Store> fresh = loads % 3 == 0 ? open(server().url(prefix)) : nullptr;
    LoadResult r = (fresh ? *fresh : *store).load(ids);
    for (const StoredObject* obj : {&r.objects.front(), &r.objects.back()}) {
      if (obj->data.size() - 1 != obj->version - created) ++mismatched;
      EXPECT_LE(obj->version, r.csn);
    }
    EXPECT_EQ(r.objects.front().version, r.objects.back().version);
    ++loads;
  }
  stop = true;
  writer.join();
  EXPECT_EQ(mismatched, 0) << "of " << loads << " loads";
}

TEST_F(RedisStoreTest, PackKeepsAReachableBlobAndDropsAnUnreachableOneWithItsBytes) {
  Oid kept = store->new_oids(1), dropped = store->new_oids(1);
  CommitRequest create;
  create.writes.push_back(WriteOp{kept, "", "", blob("kept")});
  create.writes.push_back(WriteOp{dropped, "", "", blob("dropped")});
  store->commit(create);
  store->commit(append_to(kept, "!"));
  put(*store, Oid::root(), Value::Map{{"log", Value(kept)}});

  PackStats stats = store->pack();
  EXPECT_EQ(stats.objects_before, 3u);
  EXPECT_EQ(stats.objects_after, 2u);
  EXPECT_EQ(stats.bytes_before - stats.bytes_after, blob("dropped").size());
  EXPECT_TRUE(exists(prefix + "b:" + kept.str()));
  EXPECT_FALSE(exists(prefix + "b:" + dropped.str()));
  EXPECT_FALSE(exists(prefix + "o:" + dropped.str()));
  EXPECT_EQ(get(*store, kept).data, blob("kept!"));
  EXPECT_FALSE(get(*store, dropped).exists());
}

TEST(RedisStore, UnixSocketUrlOpensTheSameData) {
  std::string prefix = fresh_prefix();
  auto tcp = open(server().url(prefix));
  auto unix_store = open(server().unix_url(prefix));
  Oid a = unix_store->new_oids(1);
  std::uint64_t csn = put(*unix_store, a, "over a socket");
  EXPECT_EQ(get(*tcp, a).version, csn);
}

TEST(RedisStore, DefaultPrefixAndDatabaseComeFromTheUrl) {
  constexpr int db = 3;
  server().command({"FLUSHDB"}, db);
  auto store =
      open("redis://127.0.0.1:" + std::to_string(server().port()) + "/" + std::to_string(db));
  Oid a = store->new_oids(1);
  put(*store, a, Value::Map{{"name", "default"}});
  EXPECT_EQ(hgetall("cairn:o:" + a.str(), db)["name"], "\"default\"");
  EXPECT_EQ(one(server().command({"EXISTS", "cairn:o:" + a.str()})), "0") << "wrote to db 0";
}

TEST(RedisStore, PrefixesIsolateStores) {
  auto one_store = open(server().url(fresh_prefix()));
  auto two_store = open(server().url(fresh_prefix()));
  Oid a = one_store->new_oids(1);
  put(*one_store, a, 1, "T", "k");
  EXPECT_EQ(two_store->new_oids(1), a) << "each prefix counts its own oids";
  EXPECT_FALSE(get(*two_store, a).exists());
  EXPECT_FALSE(two_store->find_key("T", "k").has_value());
}

TEST(RedisStore, UnreachableServerIsAnIoError) {
  RedisServer& s = server();
  (void)s;
  // A port just released by a throwaway server is very likely closed; any port with nothing
  // listening gives the same error.
  std::uint16_t closed_port;
  {
    RedisServer temporary;
    closed_port = temporary.port();
  }
  EXPECT_THROW(open("redis://127.0.0.1:" + std::to_string(closed_port)), IoError);
}

TEST(RedisStore, WrongPasswordIsAnAuthError) {
  EXPECT_THROW(open("redis://:wrong@127.0.0.1:" + std::to_string(server().port())), AuthError);
}

}  // namespace
}  // namespace cairn::testing
