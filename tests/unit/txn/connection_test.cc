// Connection: Durus-style use of the object layer on each store: the root, commit, abort and
// sync, the identity map, snapshots and optimistic conflicts between connections.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <thread>

#include "cairn/database.h"
#include "cairn/error.h"
#include "cairn/typed.h"
#include "support/forwarding_store.h"
#include "txn/connection_impl.h"
#include "unit/txn/backends.h"

namespace cairn::testing {
namespace {

template <typename Backend>
class ConnectionTest : public OnEachStore<Backend> {};
TYPED_TEST_SUITE(ConnectionTest, Backends, BackendNames);

// A committed counter object referenced from the root; returns its oid.
Oid make_counter(Connection& conn, std::string_view name, int value = 0) {
  Object counter = conn.create(Value::Map{{"n", value}});
  conn.root().set(std::string(name), counter.ref());
  conn.commit();
  return counter.oid();
}

std::int64_t count(Connection& conn, Oid oid) {
  return conn.get(oid).get().find("n")->as_int();
}

TYPED_TEST(ConnectionTest, AbsentRootReadsAsAnEmptyMapAndCommitsOnFirstWrite) {
  {
    Connection conn = this->db->connect();
    PersistentMap root = conn.root();
    EXPECT_EQ(root.size(), 0u);
    EXPECT_FALSE(root.object().exists());
    root.set("greeting", "hello");
    EXPECT_TRUE(conn.has_changes());
    std::uint64_t csn = conn.commit();
    EXPECT_GT(csn, 0u);
    EXPECT_FALSE(conn.has_changes());
    EXPECT_EQ(this->stored(Oid::root()), Value(Value::Map{{"greeting", "hello"}}));
  }

  this->reopen();
  Connection again = this->db->connect();
  EXPECT_EQ(again.root().get("greeting"), Value("hello"));
}

TYPED_TEST(ConnectionTest, StateTypeAndKeyAreTheStoresObject) {
  Connection conn = this->db->connect();
  Object user = conn.create(Value::Map{{"name", "Harry"}}, "User", "harry");
  conn.commit();
  Oid one[] = {user.oid()};
  StoredObject stored = this->db->store().load(one).objects.at(0);
  EXPECT_EQ(stored.type, "User");
  EXPECT_EQ(stored.key, "harry");
  EXPECT_EQ(stored.data, encode(Value::Map{{"name", "Harry"}}));
  EXPECT_EQ(this->db->store().find_key("User", "harry"), user.oid());

  Connection other = this->db->connect();
  Object loaded = other.get(user.oid());
  EXPECT_EQ(loaded.type(), "User");
  EXPECT_EQ(loaded.key(), "harry");
  loaded.set(Value::Map{{"name", "Harry Potter"}});  // keeps type and key
  other.commit();
  EXPECT_EQ(this->db->store().find_key("User", "harry"), user.oid());
  EXPECT_THROW(conn.create(1, std::string(max_type_length + 1, 't')), InvalidArgument);
  EXPECT_THROW(conn.create(1, "T", std::string(max_key_length + 1, 'k')), InvalidArgument);
}

// A key without a type could be taken (keys are unique per type, "" included) but never found,
// since find() needs a type; a typed root would never be listed by a scan of its type, which
// starts after oid 0. Both are refused, and nothing is left changed.
TYPED_TEST(ConnectionTest, AKeyWithoutATypeAndATypedRootAreRefused) {
  Connection conn = this->db->connect();
  EXPECT_THROW(conn.create(1, "", "k"), InvalidArgument);
  Object plain = conn.create(1);
  EXPECT_THROW(plain.set(2, "", "k"), InvalidArgument);
  Object root = conn.get(Oid::root());
  EXPECT_THROW(root.set(Value::Map{}, "app.Root", ""), InvalidArgument);
  EXPECT_THROW(root.set(Value::Map{}, "app.Root", "main"), InvalidArgument);
  EXPECT_NO_THROW(root.set(Value::Map{{"a", 1}}, "", ""));
  conn.commit();
  EXPECT_EQ(this->db->store().load(std::vector<Oid>{Oid::root()}).objects.at(0).type, "");
  EXPECT_EQ(this->db->store().load(std::vector<Oid>{plain.oid()}).objects.at(0).data, encode(1));
}

TYPED_TEST(ConnectionTest, SameOidGivesTheSameObject) {
  Connection conn = this->db->connect();
  Object child = conn.create(Value::Map{{"x", 1}});
  conn.root().set("child", child.ref());
  conn.commit();

  Connection other = this->db->connect();
  Object a = other.get(child.oid());
  Object b = other.get(child.oid());
  EXPECT_EQ(a, b);
  EXPECT_EQ(&a.get(), &b.get());
  Object via_ref = other.root().object_at("child");
  EXPECT_EQ(via_ref, a);
  EXPECT_EQ(other.root().object(), other.get(Oid::root()));
  a.mutate().as_map()["x"] = 2;
  EXPECT_EQ(b.get().find("x")->as_int(), 2);
  EXPECT_FALSE(a == conn.get(child.oid())) << "connections have separate caches";
}

// Durus's quick demo: a commit by one connection is not seen by another until that one syncs,
// aborts or commits.
TYPED_TEST(ConnectionTest, AnotherConnectionsCommitIsSeenAfterSyncAbortOrCommit) {
  const std::pair<const char*, void (*)(Connection&)> refreshes[] = {
      {"sync", [](Connection& c) { c.sync(); }},
      {"abort", [](Connection& c) { c.abort(); }},
      // b only read: its reads were one snapshot, so its commit succeeds and moves it forward.
      {"commit", [](Connection& c) { c.commit(); }},
  };
  int n = 0;
  for (const auto& [name, refresh] : refreshes) {
    std::string field = "a" + std::to_string(n++);
    Connection a = this->db->connect();
    Connection b = this->db->connect();
    EXPECT_FALSE(b.root().contains(field)) << name;
    a.root().set(field, 1);
    a.commit();
    EXPECT_FALSE(b.root().contains(field)) << name << ": seen before b refreshed";
    refresh(b);
    EXPECT_EQ(b.root().get(field), Value(1)) << name;
    EXPECT_EQ(b.snapshot_csn(), a.snapshot_csn()) << name;
  }
}

// A commit moves the connection's snapshot to the commit's CSN: what other connections committed
// in between must be dropped from its cache then, while what it wrote itself stays current.
TYPED_TEST(ConnectionTest, CommitDropsWhatOthersCommittedSinceTheSnapshot) {
  Connection a = this->db->connect();
  Connection b = this->db->connect();
  Oid x = make_counter(a, "x", 1);
  Oid y = make_counter(a, "y", 1);
  b.sync();
  EXPECT_EQ(count(b, x), 1);  // cached in b, then b's read-only transaction ends
  b.abort();
  a.get(x).set(Value::Map{{"n", 2}});
  a.commit();
  // A blind write: b's commit does not read x, so it does not conflict.
  b.get(y).set(Value::Map{{"n", 5}});
  std::uint64_t csn = b.commit();
  EXPECT_EQ(csn, b.snapshot_csn());
  EXPECT_EQ(count(b, x), 2) << "b kept a state of x older than its snapshot";
  EXPECT_EQ(count(b, y), 5);
  EXPECT_EQ(count(a, y), 1) << "a has not synced yet";
  a.sync();
  EXPECT_EQ(count(a, y), 5);
}

TYPED_TEST(ConnectionTest, AbortRevertsToTheLastCommit) {
  Connection conn = this->db->connect();
  PersistentMap root = conn.root();
  root.set("a", 1);
  Object doomed = conn.create("removed below");
  root.set("doomed", doomed.ref());
  conn.commit();

  root.set("a", 2);
  root.set("b", 3);
  doomed.remove();
  Object created = conn.create("never committed");
  root.set("created", created.ref());
  EXPECT_FALSE(doomed.exists());
  conn.abort();

  EXPECT_FALSE(conn.has_changes());
  EXPECT_EQ(root.get("a"), Value(1));
  EXPECT_FALSE(root.contains("b"));
  EXPECT_FALSE(root.contains("created"));
  EXPECT_TRUE(doomed.exists());
  EXPECT_EQ(doomed.get(), Value("removed below"));
  EXPECT_FALSE(created.exists());
  EXPECT_THROW(created.get(), NotFound);
  EXPECT_FALSE(this->stored_exists(created.oid()));
  // The reverted state is what commits next.
  root.set("c", 4);
  conn.commit();
  EXPECT_EQ(this->stored(Oid::root()),
            Value(Value::Map{{"a", 1}, {"c", 4}, {"doomed", doomed.ref()}}));
}

TYPED_TEST(ConnectionTest, RemoveDeletesAtCommit) {
  Connection conn = this->db->connect();
  Object obj = conn.create(1, "Thing", "one");
  conn.commit();
  ASSERT_TRUE(this->stored_exists(obj.oid()));
  obj.remove();
  EXPECT_THROW(obj.get(), NotFound);
  EXPECT_THROW(obj.mutate(), NotFound);
  conn.commit();
  EXPECT_FALSE(this->stored_exists(obj.oid()));
  EXPECT_FALSE(this->db->store().find_key("Thing", "one").has_value());
  EXPECT_FALSE(obj.exists());
  // Writing a removed object brings it back.
  obj.set(2);
  conn.commit();
  EXPECT_EQ(this->stored(obj.oid()), Value(2));
}

TYPED_TEST(ConnectionTest, CreateThenRemoveLeavesNothing) {
  Connection conn = this->db->connect();
  conn.root().set("x", 1);
  conn.commit();
  std::uint64_t before = this->db->store().load({}).csn;

  Object temp = conn.create("temporary", "Temp", "t");
  temp.remove();
  std::uint64_t csn = conn.commit();
  EXPECT_EQ(csn, before) << "nothing to write, so nothing committed";
  EXPECT_FALSE(this->stored_exists(temp.oid()));
  EXPECT_TRUE(this->db->store().scan_type("Temp", Oid(), 10).empty());

  // Alongside a real write, too.
  Object temp2 = conn.create("temporary");
  conn.root().set("y", 2);
  temp2.remove();
  EXPECT_GT(conn.commit(), before);
  EXPECT_FALSE(this->stored_exists(temp2.oid()));
  EXPECT_EQ(this->stored(Oid::root()), Value(Value::Map{{"x", 1}, {"y", 2}}));
}

TYPED_TEST(ConnectionTest, BothReadAndWriteTheSameObjectSecondCommitConflicts) {
  Connection a = this->db->connect();
  Oid x = make_counter(a, "x");
  Connection b = this->db->connect();
  a.get(x).mutate().as_map()["n"] = count(a, x) + 1;
  b.get(x).mutate().as_map()["n"] = count(b, x) + 1;
  a.commit();
  try {
    b.commit();
    FAIL() << "b read x before a's commit changed it";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), std::vector<Oid>{x});
    EXPECT_NE(std::string(e.what()).find(x.str()), std::string::npos) << e.what();
  }
  // b has aborted and synced: it sees a's commit and can retry.
  EXPECT_FALSE(b.has_changes());
  EXPECT_EQ(count(b, x), 1);
  b.get(x).mutate().as_map()["n"] = count(b, x) + 1;
  b.commit();
  EXPECT_EQ(this->stored(x), Value(Value::Map{{"n", 2}}));
}

TYPED_TEST(ConnectionTest, ReadXWriteYConflictsWhenXChanges) {
  Connection a = this->db->connect();
  Oid x = make_counter(a, "x");
  Oid y = make_counter(a, "y");
  Connection b = this->db->connect();
  std::int64_t seen = count(a, x);        // a reads x ...
  a.get(y).set(Value::Map{{"n", seen}});  // ... and writes y from it
  b.get(x).set(Value::Map{{"n", 10}});    // b writes x meanwhile
  b.commit();
  try {
    a.commit();
    FAIL() << "a's write of y depends on a stale x";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), std::vector<Oid>{x});
  }
  EXPECT_EQ(this->stored(y), Value(Value::Map{{"n", 0}}));
}

TYPED_TEST(ConnectionTest, BlindWritesFromBothCommit) {
  Connection a = this->db->connect();
  Oid x = make_counter(a, "x");
  Connection b = this->db->connect();
  a.get(x).set(Value::Map{{"n", 1}});
  b.get(x).set(Value::Map{{"n", 2}});
  a.commit();
  EXPECT_NO_THROW(b.commit());
  EXPECT_EQ(this->stored(x), Value(Value::Map{{"n", 2}}));
  // With type and key given, a blind write need not even load the object.
  a.get(x).set(Value::Map{{"n", 3}}, "Counter", "x");
  b.get(x).set(Value::Map{{"n", 4}}, "Counter", "x");
  b.commit();
  EXPECT_NO_THROW(a.commit());
  EXPECT_EQ(this->stored(x), Value(Value::Map{{"n", 3}}));
}

TYPED_TEST(ConnectionTest, CreatingTheRootTwiceConflicts) {
  Connection a = this->db->connect();
  Connection b = this->db->connect();
  a.root().set("by", "a");
  b.root().set("by", "b");
  a.commit();
  EXPECT_THROW(b.commit(), ConflictError) << "b read the root as absent";
  EXPECT_EQ(b.root().get("by"), Value("a"));
}

TYPED_TEST(ConnectionTest, ReadsStayOneSnapshot) {
  Connection writer = this->db->connect();
  Oid x = make_counter(writer, "x");
  Oid y = make_counter(writer, "y");
  Connection reader = this->db->connect();
  EXPECT_EQ(count(reader, x), 0);  // x is read at the snapshot ...
  writer.get(x).set(Value::Map{{"n", 1}});
  writer.get(y).set(Value::Map{{"n", 1}});
  writer.commit();
  EXPECT_EQ(count(reader, x), 0);  // ... and stays as it was there
  // y changed after the snapshot together with x, which this transaction read: no state of y
  // is consistent with what was read, so the read conflicts and the connection starts over.
  try {
    count(reader, y);
    FAIL() << "loading y would mix two snapshots";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), std::vector<Oid>{x});
  }
  EXPECT_EQ(count(reader, x), 1);
  EXPECT_EQ(count(reader, y), 1);
}

TYPED_TEST(ConnectionTest, SnapshotMovesForwardWhenNothingReadHasChanged) {
  Connection writer = this->db->connect();
  Oid x = make_counter(writer, "x");
  Oid y = make_counter(writer, "y");
  Connection reader = this->db->connect();
  EXPECT_EQ(count(reader, x), 0);
  reader.commit();  // a new transaction: x is cached but not read in it
  writer.get(x).set(Value::Map{{"n", 1}});
  writer.get(y).set(Value::Map{{"n", 1}});
  writer.commit();
  // y is newer than the snapshot; nothing read in this transaction changed, so the snapshot
  // moves to y's, and the cached x, changed in the same commit, is refreshed with it.
  EXPECT_EQ(count(reader, y), 1);
  EXPECT_EQ(count(reader, x), 1);
  EXPECT_EQ(reader.snapshot_csn(), writer.snapshot_csn());
}

TYPED_TEST(ConnectionTest, ObjectDeletedAfterTheSnapshotIsNotReadAsAbsent) {
  Connection writer = this->db->connect();
  Oid x = make_counter(writer, "x");
  Oid y = make_counter(writer, "y");
  Connection reader = this->db->connect();
  EXPECT_EQ(count(reader, x), 0);
  writer.get(x).set(Value::Map{{"n", 1}});
  writer.get(y).remove();
  writer.commit();
  EXPECT_THROW(reader.get(y).exists(), ConflictError);
  EXPECT_FALSE(reader.get(y).exists());
  EXPECT_EQ(count(reader, x), 1);
}

TYPED_TEST(ConnectionTest, SyncKeepsChangesUnlessSomethingReadChanged) {
  Connection a = this->db->connect();
  Oid x = make_counter(a, "x");
  Oid y = make_counter(a, "y");
  Connection b = this->db->connect();
  EXPECT_EQ(count(b, y), 0);
  b.commit();
  b.get(y).set(Value::Map{{"n", 5}});  // blind: y is not read
  a.get(y).set(Value::Map{{"n", 1}});
  a.commit();
  b.sync();
  EXPECT_TRUE(b.has_changes());
  EXPECT_EQ(count(b, y), 5);
  b.commit();
  EXPECT_EQ(this->stored(y), Value(Value::Map{{"n", 5}}));

  EXPECT_EQ(count(b, x), 0);  // read ...
  b.get(y).set(Value::Map{{"n", 6}});
  a.get(x).set(Value::Map{{"n", 1}});  // ... then changed
  a.commit();
  EXPECT_THROW(b.sync(), ConflictError);
  EXPECT_FALSE(b.has_changes()) << "a conflict aborts";
  EXPECT_EQ(count(b, x), 1);
  EXPECT_EQ(count(b, y), 5);
}

TYPED_TEST(ConnectionTest, TakingAKeyAnotherObjectHoldsConflicts) {
  Connection a = this->db->connect();
  Object first = a.create(1, "User", "harry");
  a.commit();
  Object second = a.create(2, "User", "harry");
  a.root().set("second", second.ref());
  EXPECT_THROW(a.commit(), ConflictError);
  EXPECT_FALSE(a.has_changes());
  EXPECT_FALSE(a.root().contains("second"));
  EXPECT_EQ(this->db->store().find_key("User", "harry"), first.oid());
}

// find() sees the transaction's own creations, key changes and removals, both in a small
// transaction and in one that changes more objects than find() scans one by one.
TYPED_TEST(ConnectionTest, FindSeesTheTransactionsOwnKeysInSmallAndLargeTransactions) {
  for (int others : {3, 100}) {
    SCOPED_TRACE(std::to_string(others) + " other changed objects");
    std::string type = "T" + std::to_string(others);
    Connection conn = this->db->connect();
    Object stored = conn.create(1, type, "stored");
    conn.commit();
    std::vector<Object> made;
    for (int i = 0; i < others; ++i)
      made.push_back(conn.create(i, type, "k" + std::to_string(i)));
    for (int i = 0; i < others; ++i)
      EXPECT_EQ(conn.find(type, "k" + std::to_string(i)), made[i]) << i;
    EXPECT_EQ(conn.find(type, "stored"), stored);
    EXPECT_EQ(conn.find("Other", "k1"), std::nullopt) << "keys are per type";

    // New keys, after find() has looked: for a created object and a stored one.
    made[1].set(10, type, "renamed");
    stored.set(20, type, "stored-renamed");
    EXPECT_EQ(conn.find(type, "renamed"), made[1]);
    EXPECT_EQ(conn.find(type, "k1"), std::nullopt);
    EXPECT_EQ(conn.find(type, "stored-renamed"), stored);
    EXPECT_EQ(conn.find(type, "stored"), std::nullopt) << "the store's key is no longer its";
    // Back to the first key.
    made[1].set(11, type, "k1");
    EXPECT_EQ(conn.find(type, "k1"), made[1]);
    EXPECT_EQ(conn.find(type, "renamed"), std::nullopt);

    // Removed, then its key taken by a new object.
    made[2].remove();
    EXPECT_EQ(conn.find(type, "k2"), std::nullopt);
    Object again = conn.create(22, type, "k2");
    EXPECT_EQ(conn.find(type, "k2"), again);

    conn.commit();
    EXPECT_EQ(this->db->store().find_key(type, "k2"), again.oid());
    EXPECT_EQ(this->db->store().find_key(type, "stored-renamed"), stored.oid());
    // A new transaction starts with no index of the last one's changes.
    EXPECT_EQ(conn.find(type, "k1"), made[1]);
    Object fresh = conn.create(0, type, "fresh");
    EXPECT_EQ(conn.find(type, "fresh"), fresh);
    conn.abort();
    EXPECT_EQ(conn.find(type, "fresh"), std::nullopt);
  }
}

TYPED_TEST(ConnectionTest, TypedRefChecksTheStoredType) {
  Connection conn = this->db->connect();
  Object post = conn.create(Value::Map{}, "Post");
  conn.commit();
  EXPECT_EQ(conn.get(Ref{post.oid(), "Post"}), post);
  EXPECT_THROW(conn.get(Ref{post.oid(), "User"}), InvalidArgument);
  EXPECT_THROW(post.resolve(Value(1)), InvalidArgument);
}

TYPED_TEST(ConnectionTest, HandlesStopWorkingWhenTheConnectionCloses) {
  Object kept;
  EXPECT_FALSE(kept.valid());
  EXPECT_THROW(kept.get(), InvalidArgument);
  {
    Connection conn = this->db->connect();
    conn.root().set("a", 1);
    conn.commit();
    kept = conn.root().object();
    EXPECT_EQ(this->db->stats().connections, 1u);
    EXPECT_GT(this->db->stats().cached_objects, 0u);
  }
  EXPECT_THROW(kept.get(), InvalidArgument);
  EXPECT_THROW(kept.set(2), InvalidArgument);
  EXPECT_EQ(this->db->stats().connections, 0u);
  EXPECT_EQ(this->db->stats().cached_objects, 0u);
}

TYPED_TEST(ConnectionTest, NoteChangeWritesChangesMadeThroughAKeptReference) {
  Connection conn = this->db->connect();
  Value& state = conn.get(Oid::root()).mutate();
  state.as_map()["a"] = 1;
  conn.commit();
  state.as_map()["a"] = 2;  // after the commit the root is unchanged as far as conn knows
  EXPECT_FALSE(conn.has_changes());
  conn.get(Oid::root()).note_change();
  conn.commit();
  EXPECT_EQ(this->stored(Oid::root()), Value(Value::Map{{"a", 2}}));
}

TYPED_TEST(ConnectionTest, ConnectionMayOutliveTheDatabaseObject) {
  std::optional<Connection> conn;
  conn.emplace(this->db->connect());
  this->db.reset();
  conn->root().set("still", "works");
  EXPECT_GT(conn->commit(), 0u);
  conn.reset();
}

// ---- blobs and appends ----

std::string blob(std::string_view bytes) {
  return std::string(1, blob_marker) + std::string(bytes);
}

TYPED_TEST(ConnectionTest, BlobIsStoredPlainlyAndReadsAsBytes) {
  Oid oid;
  {
    Connection conn = this->db->connect();
    oid = conn.create_blob("abc").oid();
    conn.root().set("b", Ref{oid, {}});
    conn.commit();
  }
  EXPECT_EQ(this->stored_data(oid), blob("abc"));
  this->reopen();
  Connection again = this->db->connect();
  EXPECT_EQ(again.get(oid).get(), Value(Bytes{"abc"}));
  // Another state makes it an ordinary object; Bytes set on a blob keep it one.
  again.get(oid).set(Value(Bytes{"xyz"}));
  again.commit();
  EXPECT_EQ(this->stored_data(oid), blob("xyz"));
  again.get(oid).set(Value("text"));
  again.commit();
  EXPECT_EQ(this->stored(oid), Value("text"));
  again.get(oid).set(Value(Bytes{"raw"}));
  again.commit();
  EXPECT_EQ(this->stored(oid), Value(Bytes{"raw"}));  // encoded, not a blob
  EXPECT_THROW(again.get(oid).append("x"), InvalidArgument);
}

TYPED_TEST(ConnectionTest, AppendsWithoutReadingDoNotConflict) {
  Connection a = this->db->connect();
  Connection b = this->db->connect();
  Oid oid = a.create_blob("x").oid();
  a.commit();
  b.sync();
  EXPECT_EQ(b.get(oid).get(), Value(Bytes{"x"}));  // cached in b
  b.sync();                                        // a new transaction: nothing read
  a.get(oid).append("a");
  a.commit();
  b.get(oid).append("b");  // blind, onto b's cached "x"
  EXPECT_NO_THROW(b.commit());
  EXPECT_EQ(this->stored_data(oid), blob("xab"));
  // b's commit was not the only one since its snapshot: its cached state is loaded again, not
  // taken to be "x" + "b".
  EXPECT_EQ(b.get(oid).get(), Value(Bytes{"xab"}));
  a.sync();
  EXPECT_EQ(a.get(oid).get(), Value(Bytes{"xab"}));

  // Read, then appended to: the read is validated like any other.
  b.sync();
  EXPECT_EQ(b.get(oid).get(), Value(Bytes{"xab"}));
  a.get(oid).append("c");
  a.commit();
  b.get(oid).append("d");
  EXPECT_EQ(b.get(oid).get(), Value(Bytes{"xabd"}));  // own appends read back
  EXPECT_THROW(b.commit(), ConflictError);
  EXPECT_EQ(this->stored_data(oid), blob("xabc"));
}

TYPED_TEST(ConnectionTest, AppendsSurviveAnotherCommitSeenMidTransaction) {
  Connection a = this->db->connect();
  Connection b = this->db->connect();
  Oid blob_oid = a.create_blob("x").oid();
  Oid other = a.create(Value(1)).oid();
  a.commit();
  b.sync();
  b.get(blob_oid).append("b");  // not loaded: blind
  a.get(blob_oid).append("a");
  a.get(other).set(Value(2));
  a.commit();
  // b loads `other` past its snapshot: it catches up to a's commit, keeping its own append.
  EXPECT_EQ(b.get(other).get(), Value(2));
  EXPECT_EQ(b.get(blob_oid).get(), Value(Bytes{"xab"}));
  b.commit();
  EXPECT_EQ(this->stored_data(blob_oid), blob("xab"));
}

TYPED_TEST(ConnectionTest, AppendFoldsIntoAWriteOfTheSameTransaction) {
  Connection conn = this->db->connect();
  Object b = conn.create_blob("ab");
  b.append("c");
  EXPECT_EQ(b.get(), Value(Bytes{"abc"}));
  conn.commit();
  EXPECT_EQ(this->stored_data(b.oid()), blob("abc"));
  b.append("d");
  b.set(Value(Bytes{"new"}));  // a whole write replaces the appends
  conn.commit();
  EXPECT_EQ(this->stored_data(b.oid()), blob("new"));
  b.append("e");
  b.mutate().as_bytes().data += "f";  // in place, after the append: both kept
  conn.commit();
  EXPECT_EQ(this->stored_data(b.oid()), blob("newef"));
}

TYPED_TEST(ConnectionTest, AbortDropsAppendsAndBadAppendsAreRefused) {
  Connection conn = this->db->connect();
  Oid oid = conn.create_blob("x").oid();
  Oid plain = conn.create(Value(1)).oid();
  Oid never = conn.create_blob("gone").oid();
  conn.get(never).remove();
  conn.commit();
  conn.get(oid).append("y");
  conn.abort();
  EXPECT_FALSE(conn.has_changes());
  EXPECT_EQ(this->stored_data(oid), blob("x"));
  EXPECT_EQ(conn.get(oid).get(), Value(Bytes{"x"}));

  // Loaded here: refused at once.
  EXPECT_EQ(conn.get(plain).get(), Value(1));
  EXPECT_THROW(conn.get(plain).append("z"), InvalidArgument);
  // Not loaded: the store refuses the commit, which applies nothing.
  Connection other = this->db->connect();
  other.get(oid).append("y");
  other.get(plain).append("z");
  EXPECT_THROW(other.commit(), InvalidArgument);
  other.abort();
  other.get(never).append("z");
  EXPECT_THROW(other.commit(), NotFound);
  other.abort();
  EXPECT_EQ(this->stored_data(oid), blob("x"));
  EXPECT_THROW(this->db->view([&](View& v) { v.get(oid).append("v"); }), InvalidArgument);
}

// A MemoryStore that records the commit requests it receives and, when told to, applies a commit
// and then reports a lost connection: the outcome a client of a remote store cannot tell from a
// commit that never arrived.
class RecordingStore final : public OverMemoryStore {
 public:
  std::uint64_t commit(const CommitRequest& r) override {
    requests.push_back(r);
    std::uint64_t csn = ForwardingStore::commit(r);
    if (lose_next) {
      lose_next = false;
      throw IoError("connection lost before the reply");
    }
    return csn;
  }
  LoadResult load(std::span<const Oid> oids) override {
    loads.emplace_back(oids.begin(), oids.end());
    return ForwardingStore::load(oids);
  }
  Oid new_oids(std::uint32_t count) override {
    allocations.push_back(count);
    return ForwardingStore::new_oids(count);
  }
  std::vector<CommitRequest> requests;
  std::vector<std::uint32_t> allocations;  // every new_oids call's count
  std::vector<std::vector<Oid>> loads;     // every load call, with its oids
  bool lose_next = false;
};

// A server answers a load of at most max_load_oids (store.h): a Connection loads more in pieces.
TEST(Loads, AConnectionLoadsAtMostMaxLoadOidsAtATime) {
  auto owned = std::make_unique<RecordingStore>();
  RecordingStore& store = *owned;
  Database db(std::move(owned));
  Connection conn = db.connect();
  Oid first = conn.create(Value(1)).oid();
  conn.commit();
  std::vector<Oid> oids;
  for (std::uint64_t i = 0; i < max_load_oids + 3; ++i)
    oids.push_back(Oid(first.value() + i));  // beyond the first, absent: loaded all the same
  store.loads.clear();
  conn.prefetch(oids);
  // All but `first`, which is cached: max_load_oids + 2 to load.
  ASSERT_EQ(store.loads.size(), 2u);
  EXPECT_EQ(store.loads[0].size(), max_load_oids);
  EXPECT_EQ(store.loads[1].size(), 2u);
  EXPECT_EQ(conn.get(first).get(), Value(1));
}

TEST(Appends, ACommitSendsOnlyTheAppendedBytes) {
  auto owned = std::make_unique<RecordingStore>();
  RecordingStore& store = *owned;
  Database db(std::move(owned));
  Ref ref = db.transaction([](Txn& tx) {
    ByteStream stream = ByteStream::create(tx, 1024);
    stream.append(std::string(1000, 'a'));
    return stream.ref();
  });
  db.transaction([&](Txn& tx) { ByteStream::open(tx, ref).append("0123456789"); });
  const CommitRequest& last = store.requests.back();
  ASSERT_EQ(last.appends.size(), 1u);
  EXPECT_EQ(last.appends[0].data, "0123456789");
  ASSERT_EQ(last.writes.size(), 1u);  // the head, with its new size
  EXPECT_EQ(last.writes[0].oid, ref.oid);
  EXPECT_LT(last.writes[0].data.size(), 100u);
  EXPECT_EQ(db.view([&](View& v) { return ByteStream::open(v, ref).read(); }),
            std::string(1000, 'a') + "0123456789");
}

TEST(Appends, ACommitWhoseOutcomeIsUnknownIsAbortedNotSentTwice) {
  auto owned = std::make_unique<RecordingStore>();
  RecordingStore& store = *owned;
  Database db(std::move(owned));
  Connection conn = db.connect();
  Oid oid = conn.create_blob("abc").oid();
  conn.commit();
  conn.get(oid).append("XY");
  store.lose_next = true;
  EXPECT_THROW(conn.commit(), IoError);
  EXPECT_FALSE(conn.has_changes());
  conn.commit();  // nothing left to send again
  EXPECT_EQ(conn.get(oid).get(), Value(Bytes{"abcXY"}));

  // A blind write alone is kept: sending it again is harmless.
  conn.abort();  // a new transaction: nothing read
  conn.get(oid).set(Value(Bytes{"new"}));
  store.lose_next = true;
  EXPECT_THROW(conn.commit(), IoError);
  EXPECT_TRUE(conn.has_changes());
  conn.commit();
  Connection other = db.connect();
  EXPECT_EQ(other.get(oid).get(), Value(Bytes{"new"}));

  // A creation is not sent again either: its oid, read as absent, would be taken by the commit
  // that did apply, and the conflict would hide that it had.
  Oid created = conn.create(Value("made")).oid();
  conn.get(oid).set(Value(Bytes{"newer"}));
  store.lose_next = true;
  EXPECT_THROW(conn.commit(), IoError);
  EXPECT_FALSE(conn.has_changes());
  other.sync();
  EXPECT_EQ(other.get(created).get(), Value("made")) << "the first commit applied";
}

TYPED_TEST(ConnectionTest, AnAppendToWhatTurnsOutNotToBeABlobIsNotDroppedByAWrite) {
  Connection conn = this->db->connect();
  Oid plain = conn.create(Value::Map{{"a", 1}}).oid();
  Oid blob_oid = conn.create_blob("b").oid();
  conn.commit();
  Connection other = this->db->connect();
  other.get(plain).append("zz");  // not loaded: not known to be no blob yet
  EXPECT_THROW(other.get(plain).mutate(), InvalidArgument);
  EXPECT_THROW(other.commit(), InvalidArgument);  // the store refuses it too
  other.abort();
  EXPECT_EQ(this->stored(plain), Value(Value::Map{{"a", 1}}));

  // set() with a type and key makes an ordinary object, loaded or not.
  EXPECT_EQ(other.get(blob_oid).get(), Value(Bytes{"b"}));
  other.get(blob_oid).set(Value(Bytes{"c"}), "T", "k");
  other.commit();
  EXPECT_EQ(this->stored(blob_oid), Value(Bytes{"c"}));
}

// prefetch() loads every object not cached yet with one store call; reading them then costs
// none, and what was prefetched but not read is not validated at commit.
TEST(Prefetch, LoadsWhatIsNotCachedInOneCallAndReadsNothing) {
  auto owned = std::make_unique<RecordingStore>();
  RecordingStore& store = *owned;
  Database db(std::move(owned));
  std::vector<Oid> oids = db.transaction([](Txn& tx) {
    std::vector<Oid> made;
    for (int i = 0; i < 5; ++i)
      made.push_back(tx.create(Value(i)).oid());
    return made;
  });
  Connection conn = db.connect();
  EXPECT_EQ(conn.get(oids[0]).get(), Value(0));  // cached already
  store.loads.clear();
  std::vector<Oid> asked = {oids[4], oids[0], oids[1], oids[1], oids[2], oids[3]};
  conn.prefetch(asked);
  ASSERT_EQ(store.loads.size(), 1u);
  std::vector<Oid> expected = {oids[1], oids[2], oids[3], oids[4]};
  std::vector<Oid> loaded = store.loads[0];
  std::sort(loaded.begin(), loaded.end());
  EXPECT_EQ(loaded, expected) << "each uncached object once";
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(conn.get(oids[i]).get(), Value(i));
  EXPECT_EQ(store.loads.size(), 1u) << "the prefetched states were read from the cache";
  conn.prefetch(asked);
  EXPECT_EQ(store.loads.size(), 1u) << "all cached: no call";
  conn.prefetch({});
  EXPECT_EQ(store.loads.size(), 1u);

  // Prefetched, not read: another connection's change to it is no conflict.
  conn.abort();
  conn.prefetch(std::vector<Oid>{oids[1]});
  db.transaction([&](Txn& tx) { tx.get(oids[1]).set(Value(10)); });
  conn.get(oids[2]).set(Value(20));
  EXPECT_NO_THROW(conn.commit());
  EXPECT_EQ(conn.get(oids[1]).get(), Value(10));
}

// Reading a ByteStream loads its chunks a group at a time, not one by one.
TEST(Prefetch, AByteStreamReadsItsChunksInOneCall) {
  auto owned = std::make_unique<RecordingStore>();
  RecordingStore& store = *owned;
  Database db(std::move(owned));
  std::string bytes;
  for (int i = 0; i < 1000; ++i)
    bytes += static_cast<char>('a' + i % 26);
  Ref ref = db.transaction([&](Txn& tx) {
    ByteStream stream = ByteStream::create(tx, 100);
    stream.append(bytes);
    return stream.ref();
  });
  Connection conn = db.connect();
  store.loads.clear();
  EXPECT_EQ(ByteStream::open(conn, ref).read(), bytes);
  ASSERT_EQ(store.loads.size(), 2u) << "the head, then its 10 chunks together";
  EXPECT_EQ(store.loads[1].size(), 10u);
}

// A copy of a Txn or View kept past its call used to keep working: writes through it went into
// whichever transaction next leased the pooled connection, and with no pool it read a freed
// connection. Every use now throws, as an Object handle of an ended transaction does.
TEST(Leases, ACopyOfATxnOrViewKeptPastItsCallThrows) {
  for (std::size_t pool : {std::size_t{8}, std::size_t{0}}) {
    DatabaseOptions options;
    options.pool_size = pool;
    Database db(make_memory_store(), options);
    std::optional<Txn> saved_txn;
    std::optional<View> saved_view;
    db.transaction([&](Txn& tx) {
      tx.root().set("a", 1);
      Txn copy = tx;  // a copy works within the call
      copy.root().set("b", 2);
      saved_txn.emplace(tx);
    });
    db.view([&](View& v) { saved_view.emplace(v); });
    try {
      saved_txn->root();
      ADD_FAILURE() << "pool " << pool << ": a Txn worked after its transaction() returned";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("this Txn has ended"), std::string::npos) << e.what();
    }
    EXPECT_THROW(saved_view->get(Oid::root()), InvalidArgument) << "pool " << pool;
    db.transaction([&](Txn& tx) {
      EXPECT_THROW(saved_txn->root().set("leak", 1), InvalidArgument);
      tx.root().set("c", 3);
    });
    Txn again = *saved_txn;  // a copy of an ended one has ended too
    EXPECT_THROW(again.get(Oid::root()), InvalidArgument);
    db.transaction([&](Txn& tx) {
      again = tx;  // assigned, as copied: works in the call, not after
      again = again;
      again.root().set("d", 4);
      saved_txn = tx;
    });
    EXPECT_THROW(again.root(), InvalidArgument);
    EXPECT_THROW(saved_txn->root(), InvalidArgument);
    Value root = db.view([](View& v) { return v.root().object().get(); });
    EXPECT_EQ(root, Value(Value::Map{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}})) << "pool " << pool;
  }
}

// Removing the root used to be accepted: the root then read as empty, and pack() would have
// reclaimed everything it reached.
TEST(RootObject, CannotBeRemoved) {
  Database db(make_memory_store());
  db.transaction([](Txn& tx) { tx.root().set("a", 1); });
  EXPECT_THROW(db.transaction([](Txn& tx) { tx.remove(Oid::root()); }), InvalidArgument);
  Connection c = db.connect();
  EXPECT_THROW(c.get(Oid::root()).remove(), InvalidArgument);
  EXPECT_FALSE(c.has_changes());
  EXPECT_EQ(db.view([](View& v) { return v.root().object().get(); }), Value(Value::Map{{"a", 1}}));
}

// A ByteStream made through a Connection kept a reference to that Connection object: moving the
// Connection (into a vector that grows, say) left it dangling. It now works through its head.
TEST(Appends, AByteStreamKeepsWorkingAfterItsConnectionMoves) {
  Database db(make_memory_store());
  auto holder = std::make_unique<Connection>(db.connect());
  ByteStream stream = ByteStream::create(*holder, 4);
  holder->root().set("s", stream.ref());
  stream.append("ab");
  Connection moved = std::move(*holder);
  holder.reset();
  stream.append("cdefghij");
  EXPECT_EQ(stream.read(), "abcdefghij");
  moved.commit();
  EXPECT_EQ(db.view([&](View& v) { return ByteStream::open(v, stream.ref()).read(); }),
            "abcdefghij");
}

// A store whose new_oids fails once armed: a ByteStream append that needs new chunks fails.
class FailingOids final : public OverMemoryStore {
 public:
  Oid new_oids(std::uint32_t count) override {
    if (fail_after >= 0 && fail_after-- == 0) throw IoError("no oids today");
    return ForwardingStore::new_oids(count);
  }
  std::uint64_t commit(const CommitRequest& r) override {
    ++commits;
    return ForwardingStore::commit(r);
  }
  int fail_after = -1;  // calls to let through before failing one
  int commits = 0;
};

// An append that fails part way used to leave the bytes for the last chunk queued and the head
// unchanged: after the next commit every read and append of the stream failed for good.
TEST(Appends, AByteStreamAppendThatFailsChangesNothing) {
  auto owned = std::make_unique<FailingOids>();
  FailingOids& store = *owned;
  Database db(std::move(owned));
  Connection c = db.connect();
  ByteStream stream = ByteStream::create(c, 4);
  c.root().set("s", stream.ref());
  stream.append("ab");
  c.commit();
  for (int fail_after : {0, 1}) {  // the first new chunk fails; the second does
    store.fail_after = fail_after;
    EXPECT_THROW(stream.append("cdefghijkl"), IoError) << fail_after;  // 2 + 4 + 4 bytes
    store.fail_after = -1;
    int commits = store.commits;
    c.commit();
    EXPECT_EQ(store.commits, commits) << fail_after << ": the failed append left changes";
    EXPECT_EQ(stream.read(), "ab") << fail_after;
  }
  stream.append("cdefghijkl");
  c.commit();
  EXPECT_EQ(db.view([&](View& v) { return ByteStream::open(v, stream.ref()).read(); }),
            "abcdefghijkl");
}

// The commit request a connection reuses keeps a few small writes' room between commits, and
// frees what a large commit made it hold: before, assigning an empty string or `{}` to release
// it kept every buffer, so one 4 MiB state stayed allocated for the connection's lifetime.
TEST(ConnectionRequest, ALargeCommitDoesNotLeaveItsBuffersBehind) {
  std::unique_ptr<Store> store = make_memory_store();
  detail::ConnectionCounters counters;
  detail::ConnectionImpl conn(*store, counters, 100'000, DatabaseOptions{}.cache_bytes);
  constexpr std::size_t small = 64 * 1024;  // far above what a small commit keeps

  Object big = conn.create(Value(std::string(4 << 20, 'x')), {}, {});
  conn.commit();
  EXPECT_LT(conn.retained_request_bytes(), small) << "after a 4 MiB state";

  // Many reads and writes: the request's vectors grow past what it keeps.
  std::vector<Object> objects;
  for (int i = 0; i < 5000; ++i)
    objects.push_back(conn.create(Value(i), {}, {}));
  conn.commit();
  EXPECT_LT(conn.retained_request_bytes(), small) << "after 5000 writes";
  for (Object& o : objects)
    o.set(Value(o.get().as_int() + 1));
  conn.commit();
  EXPECT_LT(conn.retained_request_bytes(), small) << "after 5000 reads and writes";

  // A state that fails to encode after its first 4 MiB (nested too deep) grows the buffer, and
  // the failed commit frees it too.
  Value deep = Value::List{};
  for (std::size_t i = 0; i < max_value_depth + 5; ++i)
    deep = Value(Value::List{std::move(deep)});
  big.set(Value(Value::List{Value(std::string(4 << 20, 'y')), std::move(deep)}));
  EXPECT_THROW(conn.commit(), InvalidArgument);
  EXPECT_LT(conn.retained_request_bytes(), small) << "after a failed commit";
  conn.abort();

  // Small commits keep their room: nothing to free.
  big.set(Value(1));
  conn.commit();
  std::size_t kept = conn.retained_request_bytes();
  big.set(Value(2));
  conn.commit();
  EXPECT_EQ(conn.retained_request_bytes(), kept);
}

// A transaction creating many objects allocates their oids in a few calls (each a round trip to
// a server), not one per object; what it leaves unused is dropped when it ends, and stays little.
TEST(Creates, OidsAreAllocatedInFewCallsAndNeverTwice) {
  auto owned = std::make_unique<RecordingStore>();
  RecordingStore& store = *owned;
  Database db(std::move(owned));
  std::set<Oid> seen;
  std::size_t created = 0;
  for (int round = 0; round < 3; ++round) {
    store.allocations.clear();
    db.transaction([&](Txn& tx) {
      for (int i = 0; i < 5000; ++i) {
        EXPECT_TRUE(seen.insert(tx.create(Value(std::int64_t{i})).oid()).second);
        ++created;
      }
    });
    EXPECT_LE(store.allocations.size(), 16u) << "calls in round " << round;
    std::uint64_t allocated = 0;
    for (std::uint32_t n : store.allocations)
      allocated += n;
    EXPECT_LT(allocated, 2 * 5000u + 1) << "oids left unused in round " << round;
  }
  // One create in a transaction takes one oid.
  store.allocations.clear();
  Oid single = db.transaction([](Txn& tx) { return tx.create(Value(1)).oid(); });
  EXPECT_EQ(store.allocations, std::vector<std::uint32_t>{1});
  EXPECT_TRUE(seen.insert(single).second);
  // Aborted creates give their oids to no later create.
  Connection conn = db.connect();
  std::vector<Oid> dropped;
  for (int i = 0; i < 3; ++i)
    dropped.push_back(conn.create(Value(i)).oid());
  conn.abort();
  for (int i = 0; i < 10; ++i) {
    Oid oid = conn.create(Value(i)).oid();
    EXPECT_EQ(std::count(dropped.begin(), dropped.end(), oid), 0);
    EXPECT_TRUE(seen.insert(oid).second);
  }
  conn.commit();
  EXPECT_EQ(created, 15000u);
  db.view([&](View& v) { EXPECT_EQ(v.get(single).get(), Value(1)); });
}

// Fencing in the object layer: a commit under require_lock() applies only while the lock is held
// under that token. Lost, the commit throws LockLost, drops the transaction's changes, and
// transaction() does not run its function again.
TEST(RequireLock, ACommitUnderALostLockChangesNothing) {
  Database db(make_memory_store());
  Store& store = db.store();
  Connection conn = db.connect();
  Oid oid = conn.create(Value(0)).oid();
  conn.commit();
  auto token = store.lock(LockRequest{"job", "me", std::chrono::milliseconds(300), {}});
  ASSERT_TRUE(token.has_value());
  conn.require_lock("job", *token);
  conn.get(oid).set(Value(1));
  conn.commit();
  // The requirement ended with that transaction: this one is not fenced.
  conn.get(oid).set(Value(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  conn.commit();

  auto theirs = store.lock(LockRequest{"job", "them", std::chrono::seconds(10), {}});
  ASSERT_TRUE(theirs.has_value()) << "the first lock did not expire";
  conn.require_lock("job", *token);
  conn.get(oid).set(Value(3));
  EXPECT_THROW(conn.commit(), LockLost);
  EXPECT_FALSE(conn.has_changes());
  EXPECT_EQ(conn.get(oid).get(), Value(2));

  int runs = 0;
  EXPECT_THROW(db.transaction([&](Txn& tx) {
    ++runs;
    tx.require_lock("job", *token);
    tx.get(oid).set(Value(4));
  }),
               LockLost);
  EXPECT_EQ(runs, 1);
  db.transaction([&](Txn& tx) {
    tx.require_lock("job", *theirs);
    tx.get(oid).set(Value(5));
  });
  EXPECT_EQ(db.view([&](View& v) { return v.get(oid).get(); }), Value(5));
  EXPECT_THROW(conn.require_lock("", 1), InvalidArgument);
  EXPECT_THROW(conn.require_lock("job", 0), InvalidArgument);

  // A run that required a lock and threw before changing anything leaves no check behind for
  // the next transaction on the pooled connection.
  EXPECT_THROW(db.transaction([&](Txn& tx) {
    tx.require_lock("job", *theirs);
    throw std::runtime_error("gave up");
  }),
               std::runtime_error);
  EXPECT_TRUE(store.unlock("job", "them"));
  EXPECT_NO_THROW(db.transaction([&](Txn& tx) { tx.get(oid).set(Value(6)); }));
}

}  // namespace
}  // namespace cairn::testing
