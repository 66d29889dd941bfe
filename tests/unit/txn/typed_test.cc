// Typed objects: CAIRN_TYPE structs converted to and from Values, TypedRef fields, and create,
// get, modify, remove and scan through transactions, connections and views on every store.
#include "cairn/typed.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <latch>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cairn/database.h"
#include "cairn/error.h"
#include "unit/txn/backends.h"

namespace cairn::testing {
namespace {

struct Message {
  std::string text;
  Timestamp sent_at;
};
CAIRN_TYPE(Message, "hello_world.Message", text, sent_at);

struct Point {
  std::int32_t x = 0;
  std::int32_t y = 0;
  friend bool operator==(const Point&, const Point&) = default;
};
CAIRN_TYPE(Point, "test.Point", x, y);

struct Everything {
  bool flag = false;
  std::int8_t i8 = 0;
  std::uint16_t u16 = 0;
  std::int32_t i32 = 0;
  std::uint32_t u32 = 0;
  std::int64_t i64 = 0;
  std::uint64_t u64 = 0;
  double real = 0;
  std::string text;
  Bytes blob;
  Decimal price;
  Timestamp when;
  Uuid id;
  Value any;
  std::vector<std::string> tags;
  std::map<std::string, std::int64_t> counts;
  std::optional<std::string> maybe;
  std::optional<std::int64_t> nothing;
  std::vector<std::vector<double>> matrix;
  std::map<std::string, std::vector<Point>> shapes;
  Point origin;
  TypedRef<Message> message;
  TypedRef<Message> no_message;
  std::vector<TypedRef<Point>> points;
  friend bool operator==(const Everything&, const Everything&) = default;
};
CAIRN_TYPE(Everything, "test.Everything", flag, i8, u16, i32, u32, i64, u64, real, text, blob,
           price, when, id, any, tags, counts, maybe, nothing, matrix, shapes, origin, message,
           no_message, points);

Everything sample() {
  Everything e;
  e.flag = true;
  e.i8 = -128;
  e.u16 = 65535;
  e.i32 = -2'000'000'000;
  e.u32 = 4'000'000'000u;
  e.i64 = INT64_MIN;
  e.u64 = static_cast<std::uint64_t>(INT64_MAX);
  e.real = -2.5;
  e.text = "h\xC3\xA9llo";
  e.blob = Bytes{std::string("\0\xff\x01", 3)};
  e.price = Decimal("12.30");
  e.when = Timestamp{1'700'000'000'123'456};
  e.id = Uuid::parse("0123abcd-4567-89ef-0123-456789abcdef");
  e.any = Value::List{1, "two", nullptr};
  e.tags = {"a", "b", ""};
  e.counts = {{"x", 1}, {"y", -2}};
  e.maybe = "here";
  e.matrix = {{1.0, 2.0}, {}, {3.5}};
  e.shapes = {{"tri", {Point{0, 0}, Point{1, 0}, Point{0, 1}}}};
  e.origin = Point{3, -4};
  e.message = TypedRef<Message>(Oid(42));
  e.points = {TypedRef<Point>(Oid(7)), TypedRef<Point>(Oid(8))};
  return e;
}

// A person who may know another: references that can form a cycle.
struct Person {
  std::string name;
  TypedRef<Person> knows;
};
CAIRN_TYPE(Person, "test.Person", name, knows);

struct Counter {
  std::int64_t n = 0;
};
CAIRN_TYPE(Counter, "test.Counter", n);

// Version 1 and version 2 of the same stored type: version 2 gained `email`.
struct UserV1 {
  std::string name;
};
CAIRN_TYPE(UserV1, "test.User", name);

struct UserV2 {
  std::string name;
  std::string email = "unknown";
  std::int64_t logins = 0;
};
CAIRN_TYPE(UserV2, "test.User", name, email, logins);

struct Empty {};
CAIRN_TYPE(Empty, "test.Empty");

// The message of the cairn::Error `fn` throws as E, or "" if it throws nothing.
template <typename E, typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

// ---- conversion, without a store ----

TEST(TypedValueTest, EveryFieldKindRoundTrips) {
  Everything e = sample();
  Value v = to_value(e);
  ASSERT_TRUE(v.is_map());
  EXPECT_EQ(v.as_map().size(), 24u);
  EXPECT_EQ(*v.find("text"), Value("h\xC3\xA9llo"));
  EXPECT_EQ(*v.find("nothing"), Value());
  EXPECT_EQ(*v.find("no_message"), Value());
  EXPECT_EQ(*v.find("message"), Value(Ref{Oid(42), "hello_world.Message"}));
  EXPECT_EQ(*v.find("origin"), Value(Value::Map{{"x", 3}, {"y", -4}}));
  EXPECT_EQ(from_value<Everything>(v), e);
  // Through the codec too, as a store would keep it.
  EXPECT_EQ(from_value<Everything>(decode(encode(v))), e);
}

TEST(TypedValueTest, DefaultsRoundTrip) {
  EXPECT_EQ(from_value<Everything>(to_value(Everything{})), Everything{});
  EXPECT_EQ(to_value(Empty{}), Value(Value::Map{}));
  (void)from_value<Empty>(Value::Map{{"x", 1}});
}

TEST(TypedValueTest, FieldTypesConvertOnTheirOwn) {
  EXPECT_EQ(to_value(std::vector<std::int64_t>{1, 2}), Value(Value::List{1, 2}));
  EXPECT_EQ(from_value<std::optional<std::string>>(Value()), std::nullopt);
  using Flags = std::map<std::string, bool>;
  EXPECT_EQ(from_value<Flags>(Value::Map{{"k", true}}), (Flags{{"k", true}}));
}

TEST(TypedValueTest, MissingFieldsLoadAsDefaults) {
  Value old = to_value(UserV1{"harry"});
  UserV2 user = from_value<UserV2>(old);
  EXPECT_EQ(user.name, "harry");
  EXPECT_EQ(user.email, "unknown");
  EXPECT_EQ(user.logins, 0);
}

TEST(TypedValueTest, UnknownStoredFieldsAreIgnored) {
  Value newer = to_value(UserV2{"harry", "h@example.org", 3});
  EXPECT_EQ(from_value<UserV1>(newer).name, "harry");
}

TEST(TypedValueTest, AStoredIntegerLoadsIntoADouble) {
  Value v = to_value(sample());
  v.as_map()["real"] = 3;
  EXPECT_EQ(from_value<Everything>(v).real, 3.0);
}

TEST(TypedValueTest, AFieldOfTheWrongKindNamesTypeAndField) {
  Value v = to_value(sample());
  v.as_map()["when"] = "yesterday";
  std::string message = error_of<InvalidArgument>([&] { (void)from_value<Everything>(v); });
  EXPECT_NE(message.find("test.Everything.when"), std::string::npos) << message;
  EXPECT_NE(message.find("timestamp"), std::string::npos) << message;
  EXPECT_NE(message.find("string"), std::string::npos) << message;

  v = to_value(sample());
  v.as_map()["tags"].as_list()[1] = 5;
  message = error_of<InvalidArgument>([&] { (void)from_value<Everything>(v); });
  EXPECT_NE(message.find("test.Everything.tags[1]"), std::string::npos) << message;

  v = to_value(sample());
  v.as_map()["shapes"].as_map()["tri"].as_list()[2].as_map()["y"] = 1.5;
  message = error_of<InvalidArgument>([&] { (void)from_value<Everything>(v); });
  EXPECT_NE(message.find("test.Everything.shapes[\"tri\"][2].y"), std::string::npos) << message;

  v = to_value(sample());
  v.as_map()["maybe"] = 1;  // null is an empty optional; anything else must be its kind
  EXPECT_THROW((void)from_value<Everything>(v), InvalidArgument);

  EXPECT_THROW((void)from_value<Everything>(Value("not a map")), InvalidArgument);
  EXPECT_THROW((void)from_value<Message>(Value(Value::Map{{"sent_at", nullptr}})), InvalidArgument);
}

TEST(TypedValueTest, IntegersOutOfTheFieldsRangeAreRefused) {
  Value v = to_value(sample());
  v.as_map()["i8"] = 128;
  std::string message = error_of<InvalidArgument>([&] { (void)from_value<Everything>(v); });
  EXPECT_NE(message.find("test.Everything.i8"), std::string::npos) << message;
  v.as_map()["i8"] = 0;
  v.as_map()["u64"] = -1;
  EXPECT_THROW((void)from_value<Everything>(v), InvalidArgument);

  Everything e;
  e.u64 = UINT64_MAX;
  message = error_of<InvalidArgument>([&] { (void)to_value(e); });
  EXPECT_NE(message.find("test.Everything.u64"), std::string::npos) << message;
}

TEST(TypedValueTest, ARefFieldChecksTheTypeItNames) {
  Value v = to_value(sample());
  v.as_map()["message"] = Ref{Oid(42), "test.Point"};
  std::string message = error_of<InvalidArgument>([&] { (void)from_value<Everything>(v); });
  EXPECT_NE(message.find("test.Everything.message"), std::string::npos) << message;
  EXPECT_NE(message.find("test.Point"), std::string::npos) << message;
  EXPECT_NE(message.find("hello_world.Message"), std::string::npos) << message;
  // An untyped reference is taken at its word.
  v.as_map()["message"] = Ref{Oid(43), {}};
  EXPECT_EQ(from_value<Everything>(v).message, TypedRef<Message>(Oid(43)));
}

TEST(TypedRefTest, IsNullableComparableAndNamesItsType) {
  TypedRef<Message> null;
  EXPECT_TRUE(null.is_null());
  EXPECT_FALSE(null);
  EXPECT_THROW((void)null.oid(), InvalidArgument);
  TypedRef<Message> a(Oid(1));
  TypedRef<Message> b(Oid(2));
  EXPECT_TRUE(a);
  EXPECT_LT(null, a);
  EXPECT_LT(a, b);
  EXPECT_EQ(a, TypedRef<Message>(Oid(1)));
  EXPECT_EQ(a.ref(), (Ref{Oid(1), "hello_world.Message"}));
  EXPECT_EQ(type_name<Message>(), "hello_world.Message");
}

// ---- through the object layer, on every store ----

template <typename Backend>
class TypedTest : public OnEachStore<Backend> {
 protected:
  // The bytes of each chunk of the ByteStream `stream`, as the store holds them: blobs.
  std::vector<std::string> chunks(const Ref& stream) {
    std::vector<std::string> out;
    for (Oid chunk : chunk_oids(stream)) {
      std::string data = this->stored_data(chunk);
      EXPECT_TRUE(is_blob(data)) << "chunk " << chunk.value();
      out.push_back(data.substr(1));
    }
    return out;
  }
  // The oids of its chunks, in order, as the store holds them: the pages' then the head's.
  std::vector<Oid> chunk_oids(const Ref& stream) {
    std::vector<Oid> out;
    Value head = this->stored(stream.oid);
    if (const Value* pages = head.find("pages")) {
      for (const Value& page : pages->as_list()) {
        Value listed = this->stored(page.as_ref().oid);
        for (const Value& chunk : listed.as_list())
          out.push_back(chunk.as_ref().oid);
      }
    }
    for (const Value& chunk : head.find("chunks")->as_list())
      out.push_back(chunk.as_ref().oid);
    return out;
  }
};
TYPED_TEST_SUITE(TypedTest, Backends, BackendNames);

TYPED_TEST(TypedTest, CreateGetModifyRemoveThroughTransactions) {
  Timestamp sent{1'000'000};
  TypedRef<Message> ref = this->db->transaction([&](Txn& tx) {
    TypedRef<Message> created = create(tx, Message{"hello", sent});
    tx.root().set("greeting", created.ref());
    EXPECT_EQ(get(tx, created).text, "hello");  // readable before commit
    return created;
  });
  Value stored = this->stored(ref.oid());
  EXPECT_EQ(stored, Value(Value::Map{{"text", "hello"}, {"sent_at", sent}}));

  this->reopen();
  Message loaded = this->db->view([&](View& v) { return get(v, ref); });
  EXPECT_EQ(loaded.text, "hello");
  EXPECT_EQ(loaded.sent_at, sent);
  std::string type = this->db->view([&](View& v) { return v.get(ref.oid()).type(); });
  EXPECT_EQ(type, "hello_world.Message");

  this->db->transaction([&](Txn& tx) { modify(tx, ref, [](Message& m) { m.text += ", world"; }); });
  this->reopen();
  EXPECT_EQ(from_value<Message>(this->stored(ref.oid())).text, "hello, world");

  this->db->transaction([&](Txn& tx) { remove(tx, ref); });
  EXPECT_FALSE(this->stored_exists(ref.oid()));
  EXPECT_THROW(this->db->view([&](View& v) { return get(v, ref); }), NotFound);
  EXPECT_THROW(this->db->transaction([&](Txn& tx) { modify(tx, ref, [](Message&) {}); }), NotFound);
}

TYPED_TEST(TypedTest, EveryFieldKindRoundTripsThroughTheStore) {
  Everything e = sample();
  TypedRef<Everything> ref = this->db->transaction([&](Txn& tx) { return create(tx, e); });
  this->reopen();
  EXPECT_EQ(this->db->view([&](View& v) { return get(v, ref); }), e);
}

TYPED_TEST(TypedTest, ConnectionsCreateAndGetToo) {
  Connection conn = this->db->connect();
  TypedRef<Point> ref = create(conn, Point{1, 2}, "p1");
  conn.commit();
  EXPECT_EQ(conn.get(ref.oid()).key(), "p1");
  modify(conn, ref, [](Point& p) { p.y = 20; });
  EXPECT_EQ(get(conn, ref), (Point{1, 20}));
  conn.abort();
  EXPECT_EQ(get(conn, ref), (Point{1, 2}));
}

// Handles note their own changes: a mutation through one is committed without modify() or
// note_change(), is seen through every other handle to the object, and only mutate() writes.
TYPED_TEST(TypedTest, HandlesMarkTheirObjectChangedOnMutableAccess) {
  TypedRef<Point> ref = this->db->transaction([&](Txn& tx) { return create(tx, Point{1, 2}); });
  this->db->transaction([&](Txn& tx) {
    Handle<Point> a(tx, ref);
    Handle<Point> b(tx, ref);
    EXPECT_EQ(a->x, 1);
    a.mutate().x = 10;
    EXPECT_EQ(b->x, 10) << "handles to one object share its state";
    b.mutate().y += 5;
    EXPECT_EQ(a.get(), (Point{10, 7}));
    // The Object sees the typed changes too.
    EXPECT_EQ(tx.get(ref.oid()).get(), Value(Value::Map{{"x", 10}, {"y", 7}}));
  });
  this->reopen();
  EXPECT_EQ(this->db->view([&](View& v) { return get(v, ref); }), (Point{10, 7}));

  // Reading through a handle changes nothing: the transaction writes nothing.
  std::uint64_t before = this->db->store().load({}).csn;
  this->db->transaction([&](Txn& tx) { EXPECT_EQ(Handle<Point>(tx, ref)->y, 7); });
  EXPECT_EQ(this->db->store().load({}).csn, before);

  // Through a connection, abort drops the handle's changes.
  Connection conn = this->db->connect();
  Handle<Point> h(conn, ref);
  h.mutate().x = 99;
  EXPECT_TRUE(conn.has_changes());
  conn.abort();
  EXPECT_EQ(Handle<Point>(conn, ref)->x, 10);

  // A view's handles read, and refuse to write.
  this->db->view([&](View& v) {
    Handle<Point> ro(v, ref);
    EXPECT_EQ(ro->x, 10);
    EXPECT_THROW(ro.mutate(), InvalidArgument);
  });
}

// A write through the Object after a handle's change keeps both; an Object::set replaces the
// handle's form, which decodes again from the new state.
TYPED_TEST(TypedTest, HandlesAndObjectWritesCompose) {
  TypedRef<UserV2> ref = this->db->transaction([&](Txn& tx) {
    return create(tx, UserV2{"bo", "bo@example.org", 7});
  });
  this->db->transaction([&](Txn& tx) {
    Handle<UserV1> older(tx, TypedRef<UserV1>(ref.oid()));
    older.mutate().name = "Bo";
    tx.get(ref.oid()).mutate().as_map().insert_or_assign("logins", 8);
    EXPECT_EQ(older->name, "Bo");
    Handle<UserV2> newer(tx, ref);
    EXPECT_EQ(newer->logins, 8);
    newer.mutate().logins = 9;
    tx.get(ref.oid()).set(Value::Map{{"name", "Al"}});
    EXPECT_EQ(newer->name, "Al");
    EXPECT_EQ(newer->logins, 0) << "set() replaced the state the handle had decoded";
  });
  EXPECT_EQ(this->stored(ref.oid()), Value(Value::Map{{"name", "Al"}}));
  this->db->transaction([&](Txn& tx) {
    Handle<UserV1> older(tx, TypedRef<UserV1>(ref.oid()));
    older.mutate().name = "Cy";
  });
  EXPECT_EQ(this->stored(ref.oid()), Value(Value::Map{{"name", "Cy"}}))
      << "fields the struct does not declare are not added";
}

// A reference mutate() returned keeps working after reads in between: every change through it
// is committed, not only those made before the next read.
TYPED_TEST(TypedTest, ChangesThroughAKeptMutateReferenceAreAllCommitted) {
  TypedRef<Point> ref = this->db->transaction([&](Txn& tx) { return create(tx, Point{1, 2}); });
  this->db->transaction([&](Txn& tx) {
    Handle<Point> h(tx, ref);
    Point& p = h.mutate();
    p.x = 10;
    EXPECT_EQ(h->x, 10);
    EXPECT_EQ(tx.get(ref.oid()).get(), Value(Value::Map{{"x", 10}, {"y", 2}}));
    p.y = 20;
  });
  EXPECT_EQ(this->db->view([&](View& v) { return get(v, ref); }), (Point{10, 20}));

  // Through a connection: after a commit the form is current again, and a later change through
  // the same reference is the next commit's.
  Connection conn = this->db->connect();
  Handle<Point> h(conn, ref);
  Point& p = h.mutate();
  p.x = 11;
  conn.commit();
  EXPECT_EQ(this->stored(ref.oid()), Value(Value::Map{{"x", 11}, {"y", 20}}));
  EXPECT_FALSE(conn.has_changes());
  h.mutate().y = 21;
  conn.commit();
  EXPECT_EQ(this->stored(ref.oid()), Value(Value::Map{{"x", 11}, {"y", 21}}));
}

// Handles of two types on one object (two versions of a struct): each sees the other's committed
// changes, the newer form is written back before the other is decoded.
TYPED_TEST(TypedTest, HandlesOfTwoTypesOnOneObjectSeeEachOthersChanges) {
  TypedRef<UserV2> ref = this->db->transaction([&](Txn& tx) {
    return create(tx, UserV2{"bo", "bo@example.org", 7});
  });
  this->db->transaction([&](Txn& tx) {
    Handle<UserV2> newer(tx, ref);
    newer.mutate().logins = 8;
    Handle<UserV1> older(tx, TypedRef<UserV1>(ref.oid()));
    older.mutate().name = "Bo";
    EXPECT_EQ(newer->name, "Bo");
    EXPECT_EQ(newer->logins, 8);
  });
  EXPECT_EQ(this->stored(ref.oid()),
            Value(Value::Map{{"name", "Bo"}, {"email", "bo@example.org"}, {"logins", 8}}));
}

// Concurrent increments through handles conflict and retry like modify(): none is lost.
TYPED_TEST(TypedTest, ConcurrentHandleIncrementsKeepEveryOne) {
  TypedRef<Point> ref = this->db->transaction([&](Txn& tx) { return create(tx, Point{}); });
  constexpr int threads = 4;
  constexpr int each = 50;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < each; ++i)
        this->db->transaction([&](Txn& tx) { ++Handle<Point>(tx, ref).mutate().x; });
    });
  }
  for (auto& th : pool)
    th.join();
  EXPECT_EQ(this->db->view([&](View& v) { return get(v, ref); }).x, threads * each);
}

// find<T> looks a typed object up by key, seeing the transaction's own creations, key changes
// and removals.
TYPED_TEST(TypedTest, FindLooksUpByKeyAsTheTransactionSeesIt) {
  TypedRef<Point> p1 = this->db->transaction([&](Txn& tx) {
    return create(tx, Point{1, 1}, "p1");
  });
  EXPECT_EQ(this->db->view([&](View& v) { return find<Point>(v, "p1"); }), p1);
  EXPECT_EQ(this->db->view([&](View& v) { return find<Point>(v, "p2"); }), std::nullopt);
  EXPECT_EQ(this->db->view([&](View& v) { return find<Message>(v, "p1"); }), std::nullopt)
      << "keys are per type";
  this->db->transaction([&](Txn& tx) {
    TypedRef<Point> p2 = create(tx, Point{2, 2}, "p2");
    EXPECT_EQ(find<Point>(tx, "p2"), p2) << "this transaction's own creation";
    Object o1 = tx.get(p1.oid());
    o1.set(o1.get(), "test.Point", "renamed");
    EXPECT_EQ(find<Point>(tx, "p1"), std::nullopt) << "its key changed in this transaction";
    EXPECT_EQ(find<Point>(tx, "renamed"), p1);
    remove(tx, p2);
    EXPECT_EQ(find<Point>(tx, "p2"), std::nullopt) << "removed in this transaction";
  });
  EXPECT_EQ(this->db->view([&](View& v) { return find<Point>(v, "renamed"); }), p1);
  EXPECT_THROW(this->db->view([&](View& v) { return v.find("", "x"); }), InvalidArgument);
  EXPECT_THROW(this->db->view([&](View& v) { return v.find("test.Point", ""); }), InvalidArgument);
}

// The object find() returns is read: another connection changing it before commit conflicts.
TYPED_TEST(TypedTest, AnObjectFoundByKeyIsValidatedAtCommit) {
  TypedRef<Point> p1 = this->db->transaction([&](Txn& tx) {
    return create(tx, Point{1, 1}, "p1");
  });
  Connection a = this->db->connect();
  Connection b = this->db->connect();
  std::optional<TypedRef<Point>> found = find<Point>(a, "p1");
  ASSERT_EQ(found, p1);
  modify(b, p1, [](Point& p) { p.x = 5; });
  b.commit();
  create(a, Point{9, 9});
  EXPECT_THROW(a.commit(), ConflictError);
}

TYPED_TEST(TypedTest, ReferencesFormingACycleCommitAndReload) {
  auto [a, b] = this->db->transaction([&](Txn& tx) {
    TypedRef<Person> alice = create(tx, Person{"alice", {}});
    TypedRef<Person> bob = create(tx, Person{"bob", alice});
    modify(tx, alice, [&](Person& p) { p.knows = bob; });
    tx.root().set("alice", alice.ref());
    return std::pair{alice, bob};
  });
  this->reopen();
  this->db->view([&](View& v) {
    Person alice = get(v, a);
    EXPECT_EQ(alice.name, "alice");
    EXPECT_EQ(alice.knows, b);
    Person bob = get(v, alice.knows);
    EXPECT_EQ(bob.name, "bob");
    EXPECT_EQ(bob.knows, a);
    EXPECT_EQ(get(v, bob.knows).knows, b);
    // Stored as ordinary Ref values naming the type: untyped code follows them too.
    EXPECT_EQ(v.root().object_at("alice").get().find("knows")->as_ref(),
              (Ref{b.oid(), "test.Person"}));
  });
}

TYPED_TEST(TypedTest, LoadingWithTheWrongTypeNamesBothTypes) {
  TypedRef<Message> ref = this->db->transaction([&](Txn& tx) {
    return create(tx, Message{"hi", {}});
  });
  TypedRef<Point> wrong(ref.oid());
  std::string message =
      error_of<InvalidArgument>([&] { this->db->view([&](View& v) { (void)get(v, wrong); }); });
  EXPECT_NE(message.find("hello_world.Message"), std::string::npos) << message;
  EXPECT_NE(message.find("test.Point"), std::string::npos) << message;
  EXPECT_THROW(
      this->db->transaction([&](Txn& tx) { modify(tx, wrong, [](Point& p) { p.x = 1; }); }),
      InvalidArgument);
  EXPECT_THROW(this->db->transaction([&](Txn& tx) { remove(tx, wrong); }), InvalidArgument);
  EXPECT_TRUE(this->stored_exists(ref.oid()));
  // An untyped object is not a T either.
  Oid plain = this->db->transaction([&](Txn& tx) { return tx.create(Value::Map{}).oid(); });
  EXPECT_THROW(this->db->view([&](View& v) { (void)get(v, TypedRef<Point>(plain)); }),
               InvalidArgument);
  EXPECT_THROW(this->db->view([&](View& v) { (void)get(v, TypedRef<Point>()); }), InvalidArgument);
}

TYPED_TEST(TypedTest, AStructThatGainedFieldsLoadsOldObjects) {
  TypedRef<UserV1> old = this->db->transaction([&](Txn& tx) { return create(tx, UserV1{"ann"}); });
  this->reopen();
  TypedRef<UserV2> ref(old.oid());
  UserV2 user = this->db->view([&](View& v) { return get(v, ref); });
  EXPECT_EQ(user.name, "ann");
  EXPECT_EQ(user.email, "unknown");
  this->db->transaction([&](Txn& tx) { modify(tx, ref, [](UserV2& u) { u.logins = 1; }); });
  EXPECT_EQ(this->stored(ref.oid()),
            Value(Value::Map{{"name", "ann"}, {"email", "unknown"}, {"logins", 1}}));
}

TYPED_TEST(TypedTest, ModifyKeepsStoredFieldsTheStructDoesNotDeclare) {
  TypedRef<UserV2> newer = this->db->transaction([&](Txn& tx) {
    return create(tx, UserV2{"bo", "bo@example.org", 7});
  });
  TypedRef<UserV1> older(newer.oid());
  this->db->transaction([&](Txn& tx) {
    EXPECT_EQ(get(tx, older).name, "bo");
    modify(tx, older, [](UserV1& u) { u.name = "Bo"; });
  });
  EXPECT_EQ(this->stored(newer.oid()),
            Value(Value::Map{{"name", "Bo"}, {"email", "bo@example.org"}, {"logins", 7}}));
}

TYPED_TEST(TypedTest, AStoredFieldOfTheWrongKindFailsTheLoad) {
  Oid oid = this->db->transaction([&](Txn& tx) {
    return tx.create(Value::Map{{"text", 5}}, "hello_world.Message").oid();
  });
  std::string message = error_of<InvalidArgument>(
      [&] { this->db->view([&](View& v) { (void)get(v, TypedRef<Message>(oid)); }); });
  EXPECT_NE(message.find("hello_world.Message.text"), std::string::npos) << message;
}

TYPED_TEST(TypedTest, ScanListsTheObjectsOfAType) {
  std::vector<TypedRef<Point>> made = this->db->transaction([&](Txn& tx) {
    std::vector<TypedRef<Point>> refs;
    for (std::int32_t i = 0; i < 5; ++i)
      refs.push_back(create(tx, Point{i, i}));
    (void)create(tx, Message{"not a point", {}});
    return refs;
  });
  this->db->transaction([&](Txn& tx) { remove(tx, made[2]); });
  made.erase(made.begin() + 2);
  EXPECT_EQ(scan<Point>(*this->db), made);
  EXPECT_EQ(scan<Message>(*this->db).size(), 1u);
  EXPECT_TRUE(scan<Person>(*this->db).empty());
}

TYPED_TEST(TypedTest, ConcurrentModifiesKeepEveryIncrement) {
  DatabaseOptions options;
  options.max_retries = 10'000;  // four threads on one object collide all the time
  options.retry_delay = std::chrono::microseconds(10);
  options.max_retry_delay = std::chrono::microseconds(1'000);
  this->open_database(options);
  TypedRef<Counter> ref = this->db->transaction([&](Txn& tx) { return create(tx, Counter{}); });

  constexpr int threads = 4;
  constexpr int increments = 500;
  std::latch start(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < increments; ++i)
        this->db->transaction([&](Txn& tx) { modify(tx, ref, [](Counter& c) { ++c.n; }); });
    });
  }
  for (std::thread& w : workers)
    w.join();
  EXPECT_EQ(from_value<Counter>(this->stored(ref.oid())).n, threads * increments);
}

// ---- ByteStream ----

TYPED_TEST(TypedTest, ByteStreamAppendsAndReads) {
  Ref ref = this->db->transaction([&](Txn& tx) {
    ByteStream stream = ByteStream::create(tx, 4);
    stream.append("abc");
    stream.append("defgh");
    stream.append("");
    EXPECT_EQ(stream.read(), "abcdefgh");
    tx.root().set("log", stream.ref());
    return stream.ref();
  });
  this->db->transaction([&](Txn& tx) {
    ByteStream stream = ByteStream::open(tx, ref);
    stream.append("ijklmnopq");
    EXPECT_EQ(stream.size(), 17u);
  });
  this->reopen();
  std::string all = this->db->view([&](View& v) { return ByteStream::open(v, ref).read(); });
  EXPECT_EQ(all, "abcdefghijklmnopq");
  // Five chunks of at most four bytes, in order, each a blob holding its bytes plainly.
  Value head = this->stored(ref.oid);
  EXPECT_EQ(head.find("size")->as_int(), 17);
  EXPECT_EQ(this->chunks(ref), (std::vector<std::string>{"abcd", "efgh", "ijkl", "mnop", "q"}));
}

TYPED_TEST(TypedTest, ByteStreamAppendLeavesFullChunksAlone) {
  Ref ref = this->db->transaction([&](Txn& tx) {
    ByteStream stream = ByteStream::create(tx, 3);
    stream.append("abcdefg");  // "abc" "def" "g"
    return stream.ref();
  });
  auto versions = [&] {
    std::vector<Oid> oids = this->chunk_oids(ref);
    std::vector<std::uint64_t> out;
    for (const StoredObject& obj : this->db->store().load(oids).objects)
      out.push_back(obj.version);
    return out;
  };
  std::vector<std::uint64_t> before = versions();
  ASSERT_EQ(before.size(), 3u);
  this->db->transaction([&](Txn& tx) { ByteStream::open(tx, ref).append("hij"); });
  std::vector<std::uint64_t> after = versions();
  ASSERT_EQ(after.size(), 4u);  // "abc" "def" "ghi" "j"
  EXPECT_EQ(after[0], before[0]);
  EXPECT_EQ(after[1], before[1]);
  EXPECT_GT(after[2], before[2]);
  EXPECT_EQ(this->chunks(ref), (std::vector<std::string>{"abc", "def", "ghi", "j"}));
  EXPECT_EQ(this->db->view([&](View& v) { return ByteStream::open(v, ref).read(); }), "abcdefghij");
}

TYPED_TEST(TypedTest, ByteStreamMovesFullRunsOfChunksIntoPages) {
  constexpr std::size_t per_page = ByteStream::page_chunks;
  // One-byte chunks: 2 pages and 3 chunks in the first transaction, then one append that fills
  // the head's run and starts a third page, and one more that lands in the new run.
  std::string bytes;
  for (std::size_t i = 0; i < 3 * per_page + 10; ++i)
    bytes += static_cast<char>('a' + i % 26);
  Ref ref = this->db->transaction([&](Txn& tx) {
    ByteStream stream = ByteStream::create(tx, 1);
    stream.append(std::string_view(bytes).substr(0, 2 * per_page + 3));
    EXPECT_EQ(stream.read(), bytes.substr(0, 2 * per_page + 3));  // before commit, too
    return stream.ref();
  });
  Value head = this->stored(ref.oid);
  ASSERT_NE(head.find("pages"), nullptr);
  EXPECT_EQ(head.find("pages")->as_list().size(), 2u);
  EXPECT_EQ(head.find("paged")->as_int(), static_cast<std::int64_t>(2 * per_page));
  EXPECT_EQ(head.find("chunks")->as_list().size(), 3u);
  for (const Value& page : head.find("pages")->as_list())
    EXPECT_EQ(this->stored(page.as_ref().oid).as_list().size(), per_page);

  this->db->transaction([&](Txn& tx) {
    ByteStream::open(tx, ref).append(std::string_view(bytes).substr(2 * per_page + 3, per_page));
  });
  this->db->transaction([&](Txn& tx) {
    ByteStream::open(tx, ref).append(std::string_view(bytes).substr(3 * per_page + 3));
  });
  this->reopen();
  head = this->stored(ref.oid);
  ASSERT_NE(head.find("pages"), nullptr);
  EXPECT_EQ(head.find("pages")->as_list().size(), 3u);
  EXPECT_EQ(head.find("paged")->as_int(), static_cast<std::int64_t>(3 * per_page));
  EXPECT_EQ(head.find("chunks")->as_list().size(), 10u);
  EXPECT_EQ(head.find("size")->as_int(), static_cast<std::int64_t>(bytes.size()));
  std::vector<std::string> chunks = this->chunks(ref);
  ASSERT_EQ(chunks.size(), bytes.size());
  EXPECT_EQ(chunks.front(), "a");
  EXPECT_EQ(this->db->view([&](View& v) { return ByteStream::open(v, ref).read(); }), bytes);
}

TYPED_TEST(TypedTest, ByteStreamWithoutPagesGrowsIntoThem) {
  // A head as streams were written before pages, with more chunks in it than a page holds:
  // it reads, and its next new chunk moves them all into one page.
  constexpr std::size_t listed = ByteStream::page_chunks + 5;
  Ref ref = this->db->transaction([&](Txn& tx) {
    Value::List chunks;
    for (std::size_t i = 0; i < listed; ++i)
      chunks.emplace_back(tx.create_blob("x").ref());
    return tx
        .create(Value::Map{{"size", static_cast<std::int64_t>(listed)},
                           {"chunk_size", 1},
                           {"chunks", std::move(chunks)}})
        .ref();
  });
  EXPECT_EQ(this->db->view([&](View& v) { return ByteStream::open(v, ref).read(); }),
            std::string(listed, 'x'));
  this->db->transaction([&](Txn& tx) { ByteStream::open(tx, ref).append("yz"); });
  Value head = this->stored(ref.oid);
  ASSERT_NE(head.find("pages"), nullptr);
  EXPECT_EQ(head.find("pages")->as_list().size(), 1u);
  EXPECT_EQ(head.find("paged")->as_int(), static_cast<std::int64_t>(listed));
  EXPECT_EQ(head.find("chunks")->as_list().size(), 2u);
  EXPECT_EQ(this->db->view([&](View& v) { return ByteStream::open(v, ref).read(); }),
            std::string(listed, 'x') + "yz");
}

TYPED_TEST(TypedTest, ByteStreamRefusesBrokenPages) {
  Ref ref = this->db->transaction([&](Txn& tx) {
    ByteStream stream = ByteStream::create(tx, 1);
    stream.append(std::string(ByteStream::page_chunks + 1, 'x'));
    return stream.ref();
  });
  // A head that says its pages list more chunks than they do.
  this->db->transaction([&](Txn& tx) {
    tx.modify(ref, [](Value& head) { head.as_map().insert_or_assign("paged", 1000); });
  });
  EXPECT_THROW(this->db->view([&](View& v) { return ByteStream::open(v, ref).read(); }),
               Corruption);
  EXPECT_THROW(this->db->transaction([&](Txn& tx) { ByteStream::open(tx, ref).append("y"); }),
               Corruption);
}

TYPED_TEST(TypedTest, ByteStreamRefusesWhatIsNotAStream) {
  Oid plain = this->db->transaction([&](Txn& tx) { return tx.create(Value::Map{}).oid(); });
  EXPECT_THROW(this->db->view([&](View& v) {
    (void)ByteStream::open(v, Ref{plain, {}});
  }),
               InvalidArgument);
  EXPECT_THROW(this->db->transaction([&](Txn& tx) { (void)ByteStream::create(tx, 0); }),
               InvalidArgument);
  Ref ref = this->db->transaction([&](Txn& tx) { return ByteStream::create(tx).ref(); });
  EXPECT_THROW(this->db->view([&](View& v) { ByteStream::open(v, ref).append("x"); }),
               InvalidArgument);
  EXPECT_EQ(this->db->view([&](View& v) { return ByteStream::open(v, ref).size(); }), 0u);
}

TYPED_TEST(TypedTest, ConcurrentAppendsKeepEveryByte) {
  DatabaseOptions options;
  options.max_retries = 10'000;
  options.retry_delay = std::chrono::microseconds(10);
  options.max_retry_delay = std::chrono::microseconds(1'000);
  this->open_database(options);
  Ref ref = this->db->transaction([&](Txn& tx) { return ByteStream::create(tx, 16).ref(); });
  constexpr int threads = 4;
  constexpr int appends = 100;
  std::latch start(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      start.arrive_and_wait();
      std::string piece(3, static_cast<char>('a' + t));
      for (int i = 0; i < appends; ++i)
        this->db->transaction([&](Txn& tx) { ByteStream::open(tx, ref).append(piece); });
    });
  }
  for (std::thread& w : workers)
    w.join();
  std::string all = this->db->view([&](View& v) { return ByteStream::open(v, ref).read(); });
  ASSERT_EQ(all.size(), static_cast<std::size_t>(threads * appends * 3));
  for (int t = 0; t < threads; ++t) {
    EXPECT_EQ(std::count(all.begin(), all.end(), static_cast<char>('a' + t)), appends * 3);
  }
  for (std::size_t i = 0; i < all.size(); i += 3)  // no append was split by another
    EXPECT_EQ(all.substr(i, 3), std::string(3, all[i]));
}

}  // namespace
}  // namespace cairn::testing
