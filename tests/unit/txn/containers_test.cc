// PersistentMap and PersistentList: views over an object's state that note their own changes.
#include <gtest/gtest.h>

#include "cairn/database.h"
#include "cairn/error.h"
#include "unit/txn/backends.h"

namespace cairn::testing {
namespace {

class ContainersTest : public OnEachStore<MemoryBackend> {};

TEST_F(ContainersTest, MapOperationsAreCommittedAndSeenElsewhere) {
  Connection conn = db->connect();
  PersistentMap map(conn.create(Value::Map{}));
  conn.root().set("map", map.object().ref());
  map.set("b", 2);
  map.set("a", 1);
  map.set("c", 3);
  EXPECT_EQ(map.size(), 3u);
  EXPECT_TRUE(map.contains("a"));
  EXPECT_EQ(map.get("b"), Value(2));
  EXPECT_EQ(map.find("zzz"), nullptr);
  EXPECT_THROW(map.get("zzz"), NotFound);
  EXPECT_EQ(map.keys(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(map.erase("c"));
  EXPECT_FALSE(map.erase("c"));
  map.set("a", 10);
  conn.commit();

  Connection other = db->connect();
  PersistentMap seen(other.root().object_at("map"));
  EXPECT_EQ(seen.keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(seen.get("a"), Value(10));
}

TEST_F(ContainersTest, ReadingOrErasingAnAbsentKeyChangesNothing) {
  Connection conn = db->connect();
  PersistentMap root = conn.root();
  root.set("a", 1);
  conn.commit();
  EXPECT_FALSE(root.erase("missing"));
  EXPECT_FALSE(root.contains("missing"));
  EXPECT_FALSE(conn.has_changes());
}

TEST_F(ContainersTest, ListOperationsAreCommittedAndSeenElsewhere) {
  Connection conn = db->connect();
  PersistentList list(conn.create(Value::List{}));
  conn.root().set("list", list.object().ref());
  list.push_back("a");
  list.push_back("b");
  list.push_back("c");
  list.set(1, "B");
  list.erase(0);
  EXPECT_EQ(list.size(), 2u);
  EXPECT_EQ(list.at(0), Value("B"));
  EXPECT_THROW(list.at(2), InvalidArgument);
  EXPECT_THROW(list.set(2, 0), InvalidArgument);
  EXPECT_THROW(list.erase(2), InvalidArgument);
  conn.commit();

  Connection other = db->connect();
  PersistentList seen(other.root().object_at("list"));
  EXPECT_EQ(seen.object().get(), Value(Value::List{"B", "c"}));
}

TEST_F(ContainersTest, ListOfReferencesResolvesInTheSameConnection) {
  Connection conn = db->connect();
  PersistentList list(conn.create(Value::List{}));
  Object item = conn.create("item");
  list.push_back(item.ref());
  list.push_back(42);
  EXPECT_EQ(list.object_at(0), item);
  EXPECT_THROW(list.object_at(1), InvalidArgument);
}

TEST_F(ContainersTest, ContainerOfTheWrongKindSaysSo) {
  Connection conn = db->connect();
  Object number = conn.create(7);
  EXPECT_THROW(PersistentMap(number).size(), InvalidArgument);
  EXPECT_THROW(PersistentList(number).push_back(1), InvalidArgument);
  EXPECT_FALSE(conn.get(number.oid()).get().is_list());
}

TEST_F(ContainersTest, AbortRevertsContainerChanges) {
  Connection conn = db->connect();
  PersistentList list(conn.create(Value::List{1, 2}));
  conn.root().set("list", list.object().ref());
  conn.commit();
  list.push_back(3);
  list.erase(0);
  conn.root().erase("list");
  conn.abort();
  EXPECT_EQ(list.object().get(), Value(Value::List{1, 2}));
  EXPECT_TRUE(conn.root().contains("list"));
}

}  // namespace
}  // namespace cairn::testing
