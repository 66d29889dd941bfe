// Database: transaction() with retries, view() snapshots, the connection pool, and the object
// layer under load (concurrent transfers, a 100,000-object transaction, connection cycles).
#include "cairn/database.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <random>
#include <span>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "cairn/error.h"
#include "cairn/json.h"
#include "support/forwarding_store.h"
#include "unit/txn/backends.h"

namespace cairn::testing {
namespace {

template <typename Backend>
class DatabaseTest : public OnEachStore<Backend> {
 protected:
  // A committed {"n": value} object, made through a connection of its own so that the pool
  // used by transaction() and view() has nothing cached.
  Oid make_counter(std::int64_t value = 0) {
    Connection conn = this->db->connect();
    Object counter = conn.create(Value::Map{{"n", value}});
    conn.commit();
    return counter.oid();
  }
};
TYPED_TEST_SUITE(DatabaseTest, Backends, BackendNames);

std::int64_t n_of(const Object& obj) {
  return obj.get().find("n")->as_int();
}

TYPED_TEST(DatabaseTest, TransactionCommitsAndReturnsWhatItsFunctionReturns) {
  Oid oid = this->db->transaction([](Txn& tx) {
    Object user = tx.create(Value::Map{{"name", "Harry"}}, "User", "harry");
    tx.root().set("harry", user.ref());
    return user.oid();
  });
  EXPECT_EQ(this->stored(oid), Value(Value::Map{{"name", "Harry"}}));
  std::string name = this->db->view(
      [&](View& v) { return v.root().object_at("harry").get().find("name")->as_string(); });
  EXPECT_EQ(name, "Harry");
  this->db->transaction([&](Txn& tx) {
    tx.modify(oid, [](Value& state) { state.as_map()["name"] = "Harry Potter"; });
  });
  EXPECT_EQ(this->stored(oid), Value(Value::Map{{"name", "Harry Potter"}}));
  this->db->transaction([&](Txn& tx) { tx.remove(oid); });
  EXPECT_FALSE(this->stored_exists(oid));
  EXPECT_THROW(this->db->transaction([&](Txn& tx) { tx.modify(oid, [](Value&) {}); }), NotFound);
}

TYPED_TEST(DatabaseTest, TransactionRetriesAfterAConflict) {
  Oid x = this->make_counter();
  Connection other = this->db->connect();
  int attempts = 0;
  this->db->transaction([&](Txn& tx) {
    ++attempts;
    Object counter = tx.get(x);
    std::int64_t n = n_of(counter);
    if (attempts == 1) {  // someone else commits between this read and the commit
      other.get(x).set(Value::Map{{"n", 100}});
      other.commit();
    }
    counter.set(Value::Map{{"n", n + 1}});
  });
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(this->stored(x), Value(Value::Map{{"n", 101}}));
}

// A function that caught a ConflictError and went on used to have the rest of its changes
// committed on their own: the conflict had already aborted those made before it.
TYPED_TEST(DatabaseTest, TransactionRunsAgainWhenItsFunctionSwallowsAConflict) {
  Oid x = this->make_counter();
  Oid y = this->make_counter();
  Connection other = this->db->connect();
  int attempts = 0;
  int caught = 0;
  this->db->transaction([&](Txn& tx) {
    ++attempts;
    n_of(tx.get(x));
    tx.root().set("a", attempts);
    if (attempts == 1) {  // x and y change after x was read
      other.get(x).set(Value::Map{{"n", 1}});
      other.get(y).set(Value::Map{{"n", 1}});
      other.commit();
    }
    try {
      n_of(tx.get(y));
    } catch (const ConflictError&) {
      ++caught;  // and carries on, as a body that logs every exception would
    }
    tx.root().set("b", attempts);
  });
  EXPECT_EQ(caught, 1);
  EXPECT_EQ(attempts, 2);
  Value root = this->stored(Oid::root());
  EXPECT_EQ(root, Value(Value::Map{{"a", 2}, {"b", 2}})) << to_json(root);
}

TYPED_TEST(DatabaseTest, ATransactionThatKeepsSwallowingConflictsGivesUpWithNothingCommitted) {
  DatabaseOptions options;
  options.max_retries = 1;
  options.retry_delay = std::chrono::microseconds(0);
  this->open_database(options);
  Oid x = this->make_counter();
  Oid y = this->make_counter();
  Connection other = this->db->connect();
  int attempts = 0;
  try {
    this->db->transaction([&](Txn& tx) {
      ++attempts;
      n_of(tx.get(x));
      other.get(x).set(Value::Map{{"n", attempts}});
      other.get(y).set(Value::Map{{"n", attempts}});
      other.commit();
      try {
        n_of(tx.get(y));
      } catch (const ConflictError&) {
      }
      tx.root().set("b", attempts);
    });
    ADD_FAILURE() << "no ConflictError";
  } catch (const ConflictError& e) {
    EXPECT_NE(std::string(e.what()).find("caught a ConflictError"), std::string::npos) << e.what();
    EXPECT_EQ(e.oids(), std::vector<Oid>{x});
  }
  EXPECT_EQ(attempts, 2);
  EXPECT_FALSE(this->stored_exists(Oid::root()));
}

TYPED_TEST(DatabaseTest, TransactionGivesUpAfterMaxRetries) {
  DatabaseOptions options;
  options.max_retries = 2;
  options.retry_delay = std::chrono::microseconds(0);
  this->open_database(options);
  Oid x = this->make_counter();
  Connection other = this->db->connect();
  int attempts = 0;
  EXPECT_THROW(this->db->transaction([&](Txn& tx) {
    ++attempts;
    Object counter = tx.get(x);
    std::int64_t n = n_of(counter);
    other.get(x).set(Value::Map{{"n", -attempts}});
    other.commit();
    counter.set(Value::Map{{"n", n + 1}});
  }),
               ConflictError);
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(this->stored(x), Value(Value::Map{{"n", -3}}));
  EXPECT_EQ(this->db->stats().pooled_connections, 1u);
  EXPECT_EQ(this->db->stats().connections, 2u);  // the pooled one and `other`
}

TYPED_TEST(DatabaseTest, OtherExceptionsAbortWithoutRetrying) {
  int attempts = 0;
  EXPECT_THROW(this->db->transaction([&](Txn& tx) {
    ++attempts;
    tx.root().set("half", "done");
    tx.create("orphan");
    throw std::runtime_error("changed my mind");
  }),
               std::runtime_error);
  EXPECT_EQ(attempts, 1);
  EXPECT_FALSE(this->stored_exists(Oid::root()));
  // The pooled connection comes back clean.
  this->db->transaction([](Txn& tx) { EXPECT_FALSE(tx.root().contains("half")); });
}

TYPED_TEST(DatabaseTest, CreateThenRemoveInATransactionLeavesNothing) {
  Oid temp = this->db->transaction([](Txn& tx) {
    Object obj = tx.create("temporary", "Temp", "t");
    tx.root().set("kept", 1);
    tx.remove(obj);
    return obj.oid();
  });
  EXPECT_FALSE(this->stored_exists(temp));
  EXPECT_FALSE(this->db->store().find_key("Temp", "t").has_value());
  EXPECT_EQ(this->stored(Oid::root()), Value(Value::Map{{"kept", 1}}));
}

TYPED_TEST(DatabaseTest, ObjectsDoNotOutliveTheirTransactionOrView) {
  Object from_tx = this->db->transaction([](Txn& tx) {
    tx.root().set("a", 1);
    return tx.root().object();
  });
  EXPECT_THROW(from_tx.get(), InvalidArgument);
  Object from_view = this->db->view([](View& v) { return v.root().object(); });
  EXPECT_THROW(from_view.get(), InvalidArgument);
  Connection other = this->db->connect();
  Object foreign = other.root().object();
  EXPECT_THROW(this->db->transaction([&](Txn& tx) { tx.modify(foreign, [](Value&) {}); }),
               InvalidArgument);
}

TYPED_TEST(DatabaseTest, WritesThroughAViewAreRefused) {
  Oid x = this->make_counter(7);
  this->db->view([&](View& v) {
    EXPECT_THROW(v.root().set("a", 1), InvalidArgument);
    EXPECT_THROW(v.get(x).mutate(), InvalidArgument);
    EXPECT_THROW(v.get(x).set(1), InvalidArgument);
    EXPECT_THROW(v.get(x).set(1, "T", "k"), InvalidArgument);
    EXPECT_THROW(v.get(x).note_change(), InvalidArgument);
    EXPECT_THROW(v.get(x).remove(), InvalidArgument);
    EXPECT_EQ(n_of(v.get(x)), 7);
  });
  EXPECT_EQ(this->stored(x), Value(Value::Map{{"n", 7}}));
  EXPECT_FALSE(this->stored_exists(Oid::root()));
  // The same pooled connection writes again in a transaction.
  this->db->transaction([&](Txn& tx) { tx.get(x).set(Value::Map{{"n", 8}}); });
  EXPECT_EQ(this->stored(x), Value(Value::Map{{"n", 8}}));
}

// A view whose second read conflicts runs again, whether the conflict reaches the view or fn
// catches it and reads on from a newer snapshot (that run's result, from two snapshots, must
// not count).
TYPED_TEST(DatabaseTest, ViewRunsAgainRatherThanSeeHalfACommit) {
  Connection writer = this->db->connect();
  for (bool swallow : {false, true}) {
    Oid x = this->make_counter();
    Oid y = this->make_counter();
    int runs = 0;
    auto [seen_x, seen_y] = this->db->view([&](View& v) {
      ++runs;
      std::int64_t a = n_of(v.get(x));
      if (runs == 1) {  // a commit of both lands between the view's two reads
        writer.get(x).set(Value::Map{{"n", 1}});
        writer.get(y).set(Value::Map{{"n", 1}});
        writer.commit();
      }
      if (!swallow) return std::pair(a, n_of(v.get(y)));
      try {
        return std::pair(a, n_of(v.get(y)));
      } catch (const ConflictError&) {
        return std::pair(a, n_of(v.get(y)));
      }
    });
    EXPECT_EQ(runs, 2) << swallow;
    EXPECT_EQ(seen_x, 1) << swallow;
    EXPECT_EQ(seen_y, 1) << swallow;
  }
}

// After a conflict it caught, fn read from a newer snapshot and failed some other way (here a
// reference read before, to an object deleted since): that failure escaped instead of a rerun.
TYPED_TEST(DatabaseTest, AFailureAfterASwallowedConflictRerunsInsteadOfEscaping) {
  Oid y = this->make_counter();
  Oid x;
  {
    Connection maker = this->db->connect();
    x = maker.create(Value::Map{{"to", Value(Ref{y, ""})}}).oid();
    maker.commit();
  }
  Oid z = this->make_counter();
  Connection writer = this->db->connect();
  for (bool in_view : {true, false}) {
    int runs = 0;
    auto body = [&](auto& tx) {
      ++runs;
      const Value* found = tx.get(x).get().find("to");
      Value to = found != nullptr ? *found : Value();
      if (runs == 1) {  // x lets go of y, y goes, z changes
        writer.get(x).set(Value::Map{});
        writer.get(y).remove();
        writer.get(z).set(Value::Map{{"n", 1}});
        writer.commit();
        try {
          n_of(tx.get(z));
        } catch (const ConflictError&) {
        }
      }
      if (to.is_ref()) n_of(tx.get(to.as_ref().oid));  // NotFound in the newer snapshot
    };
    if (in_view) {
      this->db->view(body);
    } else {
      this->db->transaction(body);
    }
    EXPECT_EQ(runs, 2) << (in_view ? "view" : "transaction");
    // Put y and x back for the next round.
    y = writer.create(Value::Map{{"n", 0}}).oid();
    writer.get(x).set(Value::Map{{"to", Value(Ref{y, ""})}});
    writer.commit();
  }
}

TYPED_TEST(DatabaseTest, ViewPassesOnConflictErrorsThatAreNotItsOwn) {
  int runs = 0;
  EXPECT_THROW(this->db->view([&](View&) {
    ++runs;
    throw ConflictError("from elsewhere", {});
  }),
               ConflictError);
  EXPECT_EQ(runs, 1);
}

TYPED_TEST(DatabaseTest, ViewNeverConflictsNorSeesHalfACommitUnderConcurrentWrites) {
  Oid x = this->make_counter();
  Oid y = this->make_counter();
  constexpr int commits = 10000;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    try {
      for (int i = 1; i <= commits; ++i) {
        this->db->transaction([&](Txn& tx) {
          tx.get(x).set(Value::Map{{"n", i}});
          tx.get(y).set(Value::Map{{"n", i}});
        });
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "writer: " << e.what();
    }
    done = true;
  });
  int views = 0;
  int torn = 0;
  std::int64_t last = 0;
  try {
    while (!done.load() || views < 100) {
      auto [a, b] =
          this->db->view([&](View& v) { return std::pair(n_of(v.get(x)), n_of(v.get(y))); });
      if (a != b) ++torn;
      EXPECT_GE(a, last) << "views go forward in time";
      last = a;
      ++views;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "view: " << e.what();
  }
  writer.join();
  EXPECT_EQ(torn, 0) << "of " << views << " views";
  EXPECT_EQ(this->stored(x), Value(Value::Map{{"n", commits}}));
}

// 8 threads × 2,000 random transfers between 100 accounts. Each transfer also appends its
// number to its thread's log, so a transfer applied twice or lost shows up in the logs as well
// as in the balances, which must end exactly as the plan says.
TYPED_TEST(DatabaseTest, ConcurrentTransfersKeepTheTotalAndApplyEachOnce) {
  constexpr int threads = 8;
  constexpr int transfers = 2000;
  constexpr int accounts = 100;
  constexpr int log_chunk = 100;  // ids per log object, so that no object grows large
  constexpr std::int64_t initial = 1000;
  DatabaseOptions options;
  options.max_retries = 1000;  // eight threads on a hundred accounts do collide
  this->open_database(options);

  std::vector<Oid> account_oids;
  std::vector<std::vector<Oid>> log_oids;
  this->db->transaction([&](Txn& tx) {
    account_oids.clear();
    log_oids.assign(threads, {});
    Value::List refs;
    for (int i = 0; i < accounts; ++i) {
      Object account = tx.create(Value::Map{{"balance", initial}}, "Account");
      account_oids.push_back(account.oid());
      refs.push_back(account.ref());
    }
    tx.root().set("accounts", std::move(refs));
    for (int t = 0; t < threads; ++t) {
      for (int c = 0; c < transfers / log_chunk; ++c)
        log_oids[t].push_back(tx.create(Value::List{}, "Log").oid());
    }
  });

  struct Transfer {
    int from;
    int to;
    std::int64_t amount;
  };
  std::vector<std::vector<Transfer>> plans(threads);
  std::vector<std::int64_t> expected(accounts, initial);
  for (int t = 0; t < threads; ++t) {
    std::mt19937 rng(static_cast<unsigned>(t + 1));
    std::uniform_int_distribution<int> pick(0, accounts - 1);
    std::uniform_int_distribution<int> amount(1, 50);
    for (int i = 0; i < transfers; ++i) {
      Transfer tr{pick(rng), pick(rng), amount(rng)};
      if (tr.to == tr.from) tr.to = (tr.from + 1) % accounts;
      expected[tr.from] -= tr.amount;
      expected[tr.to] += tr.amount;
      plans[t].push_back(tr);
    }
  }

  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (int i = 0; i < transfers; ++i) {
          const Transfer& tr = plans[t][i];
          this->db->transaction([&](Txn& tx) {
            auto move = [&](int account, std::int64_t delta) {
              tx.modify(account_oids[account], [&](Value& state) {
                Value& balance = state.as_map().at("balance");
                balance = balance.as_int() + delta;
              });
            };
            move(tr.from, -tr.amount);
            move(tr.to, tr.amount);
            PersistentList(tx.get(log_oids[t][i / log_chunk])).push_back(i);
          });
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << "thread " << t << ": " << e.what();
      }
    });
  }
  for (auto& th : pool)
    th.join();

  this->db->view([&](View& v) {
    PersistentMap root = v.root();
    const Value::List& refs = root.get("accounts").as_list();
    ASSERT_EQ(refs.size(), static_cast<std::size_t>(accounts));
    std::int64_t total = 0;
    for (int a = 0; a < accounts; ++a) {
      std::int64_t balance = v.get(refs[a].as_ref()).get().find("balance")->as_int();
      EXPECT_EQ(balance, expected[a]) << "account " << a;
      total += balance;
    }
    EXPECT_EQ(total, accounts * initial);
    for (int t = 0; t < threads; ++t) {
      for (int c = 0; c < transfers / log_chunk; ++c) {
        Value::List want;
        for (int i = c * log_chunk; i < (c + 1) * log_chunk; ++i)
          want.push_back(i);
        EXPECT_EQ(v.get(log_oids[t][c]).get(), Value(want)) << "thread " << t << " chunk " << c;
      }
    }
  });
  DatabaseStats stats = this->db->stats();
  EXPECT_LE(stats.pooled_connections, options.pool_size);
  EXPECT_EQ(stats.connections, stats.pooled_connections);
}

TYPED_TEST(DatabaseTest, HundredThousandObjectTransactionCommitsAndReloads) {
  constexpr int count = 100'000;
  this->db->transaction([&](Txn& tx) {
    Value::List refs;
    refs.reserve(count);
    for (int i = 0; i < count; ++i)
      refs.push_back(tx.create(Value::Map{{"i", i}}).ref());
    tx.root().set("items", std::move(refs));
  });
  this->reopen();
  Connection conn = this->db->connect();
  EXPECT_EQ(conn.cached_objects(), 0u);
  const Value::List& items = conn.root().get("items").as_list();
  ASSERT_EQ(items.size(), static_cast<std::size_t>(count));
  int wrong = 0;
  for (int i = 0; i < count; ++i) {
    if (conn.get(items[i].as_ref()).get() != Value(Value::Map{{"i", i}})) ++wrong;
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(conn.cached_objects(), static_cast<std::size_t>(count) + 1);
}

TYPED_TEST(DatabaseTest, ConnectionCyclesDoNotAccumulateMemory) {
  constexpr int cycles = 10'000;
  DatabaseOptions options;
  options.cache_size = 100;
  this->open_database(options);
  for (int i = 0; i < cycles; ++i) {
    Connection conn = this->db->connect();
    conn.root().set("n", i);
    Object extra = conn.create(Value::Map{{"i", i}});
    conn.root().set("last", extra.ref());
    conn.commit();
    ASSERT_EQ(this->db->stats().connections, 1u);
    ASSERT_EQ(this->db->stats().cached_objects, 2u);
  }
  EXPECT_EQ(this->db->stats().connections, 0u);
  EXPECT_EQ(this->db->stats().cached_objects, 0u);

  for (int i = 0; i < cycles; ++i) {
    this->db->transaction([&](Txn& tx) {
      tx.root().set("n", i);
      tx.root().set("last", tx.create(Value::Map{{"i", i}}).ref());
    });
    DatabaseStats stats = this->db->stats();
    ASSERT_EQ(stats.connections, 1u);
    ASSERT_EQ(stats.pooled_connections, 1u);
    ASSERT_LE(stats.cached_objects, options.cache_size) << "after " << i + 1 << " objects";
  }
  EXPECT_EQ(this->stored(Oid::root()).find("n")->as_int(), cycles - 1);
}

TYPED_TEST(DatabaseTest, CacheIsTrimmedBetweenTransactions) {
  DatabaseOptions options;
  options.cache_size = 10;
  this->open_database(options);
  this->db->transaction([](Txn& tx) {
    for (int i = 0; i < 100; ++i)
      tx.create(i);
  });
  EXPECT_LE(this->db->stats().cached_objects, 10u);
  // Objects a handle refers to stay: identity holds for as long as anyone can compare.
  Connection conn = this->db->connect();
  std::vector<Object> held;
  for (int i = 0; i < 50; ++i)
    held.push_back(conn.create(i));
  conn.commit();
  EXPECT_EQ(conn.cached_objects(), 50u);
  held.clear();
  for (int i = 0; i < 200; ++i)
    conn.create(i);
  conn.commit();
  EXPECT_LE(conn.cached_objects(), 10u);
}

// Handles held through one trim kept their nodes; once dropped, the nodes used to stay until
// the cache had doubled (a connection that once held 2,000 handles kept 2,000 objects with a
// cache_size of 100). Now a later trim frees them without the cache growing.
TYPED_TEST(DatabaseTest, NodesFreedByDroppedHandlesAreTrimmedWithoutTheCacheGrowing) {
  DatabaseOptions options;
  options.cache_size = 100;
  this->open_database(options);
  Connection conn = this->db->connect();
  {
    std::vector<Object> held;
    for (int i = 0; i < 2000; ++i)
      held.push_back(conn.create(i));
    conn.commit();
    EXPECT_EQ(conn.cached_objects(), 2000u);
  }
  Oid root = Oid::root();
  for (int i = 0; i < 200 && conn.cached_objects() > 100; ++i) {
    conn.get(root).get();
    conn.abort();
  }
  EXPECT_LE(conn.cached_objects(), 100u);
}

// The cache is bounded in bytes too: a view that read 200 blobs of 64 KiB through a pooled
// connection left them all cached (cache_size counts objects), 12.5 MiB per pooled connection
// here, and about 6 GiB for a large ByteStream at the default cache_size.
TYPED_TEST(DatabaseTest, CachedBytesAreBoundedAsWellAsObjects) {
  DatabaseOptions options;
  options.cache_bytes = 1 << 20;
  this->open_database(options);
  const std::string chunk(64 << 10, 'c');
  std::vector<Oid> blobs;
  for (int batch = 0; batch < 10; ++batch) {
    this->db->transaction([&](Txn& tx) {
      for (int i = 0; i < 20; ++i)
        blobs.push_back(tx.create_blob(chunk).oid());
    });
  }
  std::size_t read = this->db->view([&](View& v) {
    std::size_t total = 0;
    for (Oid oid : blobs)
      total += v.get(oid).get().as_bytes().data.size();
    return total;
  });
  EXPECT_EQ(read, blobs.size() * chunk.size());
  // Three quarters of 1 MiB is 12 chunks.
  EXPECT_LE(this->db->stats().cached_objects, 12u);
  Connection conn = this->db->connect();
  for (Oid oid : blobs)
    conn.get(oid).get();
  conn.abort();
  EXPECT_LE(conn.cached_objects(), 12u);
}

// What handles hold counts against the byte limit but cannot go: the rest keeps a quarter of
// the limit beside it, where every trim used to empty the rest of the cache. A removed object
// counts nothing once its removal is committed, where it used to count its old size.
TYPED_TEST(DatabaseTest, HeldAndRemovedObjectsDoNotEmptyTheRestOfTheCache) {
  DatabaseOptions options;
  options.cache_bytes = 1 << 20;
  this->open_database(options);
  Connection conn = this->db->connect();
  std::vector<Object> held;
  for (int i = 0; i < 20; ++i)  // 1.25 MiB held
    held.push_back(conn.create_blob(std::string(64 << 10, 'h')));
  std::vector<Oid> others;
  for (int i = 0; i < 30; ++i)  // 1.9 MiB
    others.push_back(conn.create_blob(std::string(64 << 10, 'o')).oid());
  conn.commit();
  for (Oid oid : others)
    conn.get(oid).get();
  conn.abort();
  EXPECT_GT(conn.cached_objects(), 20u) << "nothing was kept beside the held objects";
  held.clear();
  conn.abort();

  Object big = conn.create_blob(std::string(700 << 10, 'b'));
  conn.commit();
  big.remove();
  conn.commit();  // `big` still refers to its node
  std::vector<Oid> chunks;
  for (int i = 0; i < 8; ++i)
    chunks.push_back(conn.create_blob(std::string(64 << 10, 'c')).oid());
  conn.commit();
  for (Oid oid : chunks)
    conn.get(oid).get();
  conn.abort();
  EXPECT_GE(conn.cached_objects(), 9u) << "the removed object's old size pushed the others out";
}

TYPED_TEST(DatabaseTest, WithoutAPoolNothingStaysBehind) {
  DatabaseOptions options;
  options.pool_size = 0;
  this->open_database(options);
  for (int i = 0; i < 100; ++i) {
    this->db->transaction([&](Txn& tx) { tx.root().set("n", i); });
    std::int64_t n = this->db->view([](View& v) { return v.root().get("n").as_int(); });
    ASSERT_EQ(n, i);
    DatabaseStats stats = this->db->stats();
    ASSERT_EQ(stats.connections, 0u);
    ASSERT_EQ(stats.cached_objects, 0u);
  }
}

// Counts what the object layer asks its store: what changed, and the objects it loads, call by
// call (a load of more than one object may be refused, as a server with a small reply limit would).
class CountingStore final : public ForwardingStore {
 public:
  Changes changes_since(std::uint64_t csn) override {
    ++asked;
    return ForwardingStore::changes_since(csn);
  }
  LoadResult load(std::span<const Oid> oids) override {
    std::lock_guard lk(mu);
    loads.emplace_back(oids.begin(), oids.end());
    if (refuse_batches && oids.size() > 1) throw IoError("load fewer objects at a time");
    return ForwardingStore::load(oids);
  }
  // The loads so far, forgotten.
  std::vector<std::vector<Oid>> taken() {
    std::lock_guard lk(mu);
    return std::exchange(loads, {});
  }
  std::unique_ptr<Store> store = make_memory_store();
  std::atomic<int> asked{0};
  bool refuse_batches = false;
  std::mutex mu;
  std::vector<std::vector<Oid>> loads;

 private:
  Store& inner() const override { return *store; }
};

// A pooled connection starts each transaction and view on the newest snapshot: a commit made
// elsewhere between two of them is seen by the next, though the connection cached the object.
TYPED_TEST(DatabaseTest, APooledConnectionSeesWhatWasCommittedBetweenItsLeases) {
  Oid x = this->make_counter();
  Connection other = this->db->connect();
  for (std::int64_t i = 1; i <= 3; ++i) {
    EXPECT_EQ(this->db->view([&](View& v) { return n_of(v.get(x)); }), i - 1);
    other.get(x).set(Value::Map{{"n", i}});
    other.commit();
    EXPECT_EQ(this->db->transaction([&](Txn& tx) { return n_of(tx.get(x)); }), i);
  }
  EXPECT_EQ(this->db->stats().pooled_connections, 1u);
}

// A commit that is the only one since the transaction's snapshot (its CSN is the snapshot's plus
// one) leaves nothing to learn: the connection does not ask the store what changed. With another
// commit in between it must ask, and does.
TEST(Database, ACommitRightAfterTheSnapshotDoesNotAskWhatChanged) {
  auto owned = std::make_unique<CountingStore>();
  CountingStore& counting = *owned;
  Database db(std::move(owned));
  Oid oid = db.transaction([](Txn& tx) { return tx.create(Value(0)).oid(); });
  Connection conn = db.connect();
  conn.get(oid).set(Value(1));
  int before = counting.asked.load();
  conn.commit();
  EXPECT_EQ(counting.asked.load(), before);

  db.transaction([&](Txn& tx) { tx.get(oid).set(Value(2)); });  // another connection's commit
  conn.get(oid).set(Value(3));
  before = counting.asked.load();
  conn.commit();
  EXPECT_EQ(counting.asked.load(), before + 1);
}

// A store whose changes_since fails while `failing` is set.
class FailingSyncStore final : public ForwardingStore {
 public:
  Changes changes_since(std::uint64_t csn) override {
    if (failing) throw IoError("changes_since: the store is away");
    return ForwardingStore::changes_since(csn);
  }
  std::unique_ptr<Store> store = make_memory_store();
  std::atomic<bool> failing{false};

 private:
  Store& inner() const override { return *store; }
};

// A transaction whose connection fails to begin (its sync throws) gives the pool's fast slot
// back: with a pool of one, the next transaction's connection is kept for the one after.
TEST(Database, ALeaseThatFailsToBeginLeavesThePoolWorking) {
  auto owned = std::make_unique<FailingSyncStore>();
  FailingSyncStore& failing = *owned;
  DatabaseOptions options;
  options.pool_size = 1;
  Database db(std::move(owned), options);
  Oid oid = db.transaction([](Txn& tx) { return tx.create(Value(0)).oid(); });
  EXPECT_EQ(db.stats().pooled_connections, 1u);
  failing.failing = true;
  EXPECT_THROW(db.transaction([&](Txn& tx) { tx.get(oid).set(Value(1)); }), IoError);
  EXPECT_THROW(db.view([&](View& v) { return v.get(oid).get(); }), IoError);
  failing.failing = false;
  for (int i = 2; i < 5; ++i) {
    db.transaction([&](Txn& tx) { tx.get(oid).set(Value(i)); });
    EXPECT_EQ(db.stats().pooled_connections, 1u);
    EXPECT_EQ(db.stats().connections, 1u);
  }
  EXPECT_EQ(db.view([&](View& v) { return v.get(oid).get().as_int(); }), 4);
}

// Over a server each load is a round trip, and a view reading a few dozen objects that others
// kept changing conflicted again on almost every run (a minute of reruns was seen). A rerun now
// loads what the run before it had read in one call first.
TEST(Database, ARerunLoadsWhatTheRunBeforeHadReadInOneCall) {
  auto owned = std::make_unique<CountingStore>();
  CountingStore& counting = *owned;
  Database db(std::move(owned));
  Connection writer = db.connect();
  for (bool in_view : {true, false}) {
    // Made through a connection of their own, so that the pooled one has none of them cached.
    std::vector<Oid> oids;
    for (int i = 0; i < 5; ++i)
      oids.push_back(writer.create(Value(i)).oid());
    writer.commit();
    int runs = 0;
    std::vector<std::vector<Oid>> second_run;
    auto body = [&](auto& tx) {
      ++runs;
      if (runs == 2) counting.taken();  // what the retry loaded before this run is gone
      for (std::size_t i = 0; i < 4; ++i)
        tx.get(oids[i]).get();
      if (runs == 1) {  // everything read so far changes, then the last object is read
        for (std::size_t i = 0; i < 5; ++i)
          writer.get(oids[i]).set(Value(100));
        writer.commit();
      }
      tx.get(oids[4]).get();
      if (runs == 2) second_run = counting.taken();
    };
    counting.taken();
    if (in_view) {
      db.view(body);
    } else {
      db.transaction(body);
    }
    EXPECT_EQ(runs, 2);
    EXPECT_EQ(second_run, (std::vector<std::vector<Oid>>{{oids[4]}}))
        << (in_view ? "view" : "transaction") << ": the first four came from one prefetch";
  }
}

// The prefetch is a help: a store that refuses the batch (a server whose reply limit it
// passes) leaves the rerun to load the objects one by one, as before.
TEST(Database, ARerunWhosePrefetchFailsStillRuns) {
  auto owned = std::make_unique<CountingStore>();
  CountingStore& counting = *owned;
  counting.refuse_batches = true;
  Database db(std::move(owned));
  Connection writer = db.connect();
  std::vector<Oid> oids;
  for (int i = 0; i < 3; ++i)
    oids.push_back(writer.create(Value(i)).oid());
  writer.commit();
  int runs = 0;
  std::int64_t sum = db.view([&](View& v) {
    ++runs;
    std::int64_t total = v.get(oids[0]).get().as_int() + v.get(oids[1]).get().as_int();
    if (runs == 1) {
      for (Oid oid : oids)
        writer.get(oid).set(Value(10));
      writer.commit();
    }
    return total + v.get(oids[2]).get().as_int();
  });
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(sum, 30);
}

// A transaction that gave up left its read set on the pooled connection, and a later one that
// reran after a ConflictError not of its own prefetched those objects.
TEST(Database, ARerunPrefetchesOnlyWhatItsOwnConflictedRunRead) {
  DatabaseOptions options;
  options.max_retries = 1;
  options.retry_delay = std::chrono::microseconds(0);
  auto owned = std::make_unique<CountingStore>();
  CountingStore& counting = *owned;
  Database db(std::move(owned), options);
  Connection writer = db.connect();
  Oid x = writer.create(Value(0)).oid();
  Oid y = writer.create(Value(0)).oid();
  writer.commit();
  int value = 0;
  EXPECT_THROW(db.transaction([&](Txn& tx) {
    tx.get(x).get();
    writer.get(x).set(Value(++value));
    writer.get(y).set(Value(value));
    writer.commit();
    tx.get(y).get();  // conflicts on every run, until the transaction gives up
  }),
               ConflictError);
  counting.taken();
  int runs = 0;
  db.transaction([&](Txn&) {
    if (++runs == 1) throw ConflictError("from elsewhere", {});
  });
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(counting.taken(), std::vector<std::vector<Oid>>{});
}

TEST(Database, OpensAUrlAndRefusesNoStore) {
  Database db = Database::open("memory:");
  db.transaction([](Txn& tx) { tx.root().set("a", 1); });
  EXPECT_EQ(db.view([](View& v) { return v.root().get("a"); }), Value(1));
  EXPECT_THROW(Database(nullptr), InvalidArgument);
  Database moved = std::move(db);
  EXPECT_THROW(db.connect(), InvalidArgument);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(moved.stats().pooled_connections, 1u);
}

}  // namespace
}  // namespace cairn::testing
