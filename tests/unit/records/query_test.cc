// Queries: every condition counts, operators, order_by, limit and offset, indexes kept in step
// with saves and removals, and a property test against a brute-force scan.
#include "cairn/query.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cairn/error.h"
#include "cairn/record.h"

namespace cairn::testing {
namespace {

struct Wizard : Record<Wizard> {
  std::string name;
  std::string house_name;
  std::int64_t age = 0;
  std::string tag;
  static void describe(Schema<Wizard>& s) { s.index("house_name").index("age"); }
};
CAIRN_TYPE(Wizard, "query_test.Wizard", name, house_name, age, tag);

std::vector<std::string> names(const std::vector<std::shared_ptr<Wizard>>& rows) {
  std::vector<std::string> out;
  for (const auto& w : rows)
    out.push_back(w->name);
  return out;
}

class QueryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo = Repository::memory();
    Wizard::set_type_repository(repo);
    add("Harry Potter", "Gryffindor", 17, "seeker");
    add("Ron Weasley", "Gryffindor", 18, "keeper");
    add("Draco Malfoy", "Slytherin", 18, "seeker");
    add("Hermione Granger", "Gryffindor", 19, "prefect");
    add("Cedric Diggory", "Hufflepuff", 18, "seeker");
  }
  void TearDown() override { Wizard::set_type_repository(nullptr); }
  void add(std::string name, std::string house, std::int64_t age, std::string tag) {
    Wizard::create({{"name", name}, {"house_name", house}, {"age", age}, {"tag", tag}});
  }
  std::shared_ptr<Repository> repo;
};

// repocket's filter() honoured only its last keyword: here each condition must narrow.
TEST_F(QueryTest, EveryConditionCounts) {
  auto both = Wizard::find().where("house_name", "Gryffindor").where("age", ">=", 18).all();
  EXPECT_EQ(names(both), (std::vector<std::string>{"Ron Weasley", "Hermione Granger"}));
  // Each condition alone gives a different, larger answer, so neither was ignored.
  EXPECT_EQ(Wizard::find().where("house_name", "Gryffindor").count(), 3u);
  EXPECT_EQ(Wizard::find().where("age", ">=", 18).count(), 4u);
  // The same with the conditions the other way round.
  auto swapped = Wizard::find().where("age", ">=", 18).where("house_name", "Gryffindor").all();
  EXPECT_EQ(names(swapped), names(both));
  // Three conditions, one on a field without an index.
  EXPECT_EQ(names(Wizard::find()
                      .where("house_name", "Gryffindor")
                      .where("age", ">=", 18)
                      .where("tag", "keeper")
                      .all()),
            std::vector<std::string>{"Ron Weasley"});
}

TEST_F(QueryTest, OrderByDescendingAndStable) {
  auto rows = Wizard::find().where("house_name", "Gryffindor").order_by("-name").all();
  EXPECT_EQ(names(rows),
            (std::vector<std::string>{"Ron Weasley", "Hermione Granger", "Harry Potter"}));
  // Ties keep oid (creation) order, ascending or descending.
  auto by_age = Wizard::find().order_by("age").all();
  EXPECT_EQ(names(by_age), (std::vector<std::string>{"Harry Potter", "Ron Weasley", "Draco Malfoy",
                                                     "Cedric Diggory", "Hermione Granger"}));
  auto by_age_desc = Wizard::find().order_by("-age").all();
  EXPECT_EQ(names(by_age_desc),
            (std::vector<std::string>{"Hermione Granger", "Ron Weasley", "Draco Malfoy",
                                      "Cedric Diggory", "Harry Potter"}));
  auto two_keys = Wizard::find().order_by("-age").order_by("name").limit(3).all();
  EXPECT_EQ(names(two_keys),
            (std::vector<std::string>{"Hermione Granger", "Cedric Diggory", "Draco Malfoy"}));
}

TEST_F(QueryTest, Operators) {
  EXPECT_EQ(Wizard::find().where("tag", "in", {"keeper", "prefect"}).count(), 2u);
  EXPECT_EQ(Wizard::find().where("house_name", "in", {"Slytherin", "Hufflepuff"}).count(), 2u);
  EXPECT_EQ(Wizard::find().where("house_name", "not in", {"Gryffindor"}).count(), 2u);
  EXPECT_EQ(Wizard::find().where("age", "<", 18).count(), 1u);
  EXPECT_EQ(Wizard::find().where("age", "<=", 18).count(), 4u);
  EXPECT_EQ(Wizard::find().where("age", ">", 18).count(), 1u);
  EXPECT_EQ(Wizard::find().where("age", "!=", 18).count(), 2u);
  EXPECT_EQ(Wizard::find().where("age", ">", 17).where("age", "<", 19).count(), 3u);
  EXPECT_EQ(Wizard::find().where("name", ">=", "D").where("name", "<", "I").count(), 3u);
  EXPECT_EQ(Wizard::find().where("house_name", "Ravenclaw").count(), 0u);
}

TEST_F(QueryTest, LimitOffsetFirst) {
  EXPECT_EQ(names(Wizard::find().order_by("name").offset(1).limit(2).all()),
            (std::vector<std::string>{"Draco Malfoy", "Harry Potter"}));
  EXPECT_EQ(Wizard::find().where("house_name", "Gryffindor").first()->name, "Harry Potter");
  EXPECT_EQ(Wizard::find().where("house_name", "Ravenclaw").first(), nullptr);
  EXPECT_EQ(Wizard::find().offset(10).count(), 0u);
  EXPECT_EQ(Wizard::find().where("house_name", "Gryffindor").limit(2).count(), 2u);
}

TEST_F(QueryTest, UsesAnIndexWhenOneApplies) {
  detail::QueryPlan plan;
  Wizard::find().where("tag", "seeker").where("house_name", "Slytherin").all(&plan);
  EXPECT_EQ(plan.index, "house_name");
  EXPECT_EQ(plan.candidates, 1u);
  Wizard::find().where("tag", "seeker").all(&plan);
  EXPECT_EQ(plan.index, "");
  EXPECT_EQ(plan.candidates, 5u);
  Wizard::find().where("age", ">", 18).all(&plan);
  EXPECT_EQ(plan.index, "age");
  EXPECT_EQ(plan.candidates, 1u);
  Wizard::find().where("age", ">=", 18).where("age", "<=", 18).all(&plan);
  EXPECT_EQ(plan.candidates, 3u);
}

TEST_F(QueryTest, IndexesFollowSavesAndRemovals) {
  auto harry = Wizard::find().where("name", "Harry Potter").first();
  harry->house_name = "Slytherin";
  harry->save();
  EXPECT_EQ(Wizard::find().where("house_name", "Gryffindor").count(), 2u);
  EXPECT_EQ(Wizard::find().where("house_name", "Slytherin").count(), 2u);
  // Only one index entry per record and field: the old one is gone from the store.
  std::string type = Wizard::spec().index_type(Wizard::spec().at("house_name"));
  EXPECT_EQ(repo->store().scan_keys(type, "", "", 100).size(), 5u);
  EXPECT_EQ(harry->remove(), 1u);
  EXPECT_EQ(Wizard::find().where("house_name", "Slytherin").count(), 1u);
  EXPECT_EQ(repo->store().scan_keys(type, "", "", 100).size(), 4u);
  harry->save();  // saved again after removal: indexed again
  EXPECT_EQ(Wizard::find().where("house_name", "Slytherin").count(), 2u);
}

TEST_F(QueryTest, ResultsAreTheIdentityMappedObjectsReread) {
  auto ron = Wizard::find().where("name", "Ron Weasley").first();
  ron->tag = "local change";
  auto again = Wizard::find().where("house_name", "Gryffindor").where("age", 18).first();
  EXPECT_EQ(again, ron);
  EXPECT_EQ(ron->tag, "keeper");
}

TEST_F(QueryTest, BadQueriesNameTheTypeAndField) {
  try {
    Wizard::find().where("age", ">=", "eighteen");
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("query_test.Wizard.age"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Wizard::find().where("wand", "holly"), InvalidArgument);
  EXPECT_THROW(Wizard::find().where("age", "~", 1), InvalidArgument);
  EXPECT_THROW(Wizard::find().where("age", "in", 1), InvalidArgument);
  EXPECT_THROW(Wizard::find().order_by("-wand"), InvalidArgument);
}

struct Measure : Record<Measure> {
  double d = 0;
  double e = 0;
  Timestamp at;
  Uuid token;
  Decimal amount;
  static void describe(Schema<Measure>& s) { s.index("e"); }
};
CAIRN_TYPE(Measure, "query_test.Measure", d, e, at, token, amount);

// Expects the query condition to be refused with an InvalidArgument naming the field and
// saying `what`.
template <typename Build>
void expect_refused(Build&& build, const std::string& field, const std::string& what) {
  try {
    build();
    FAIL() << "no error for " << field;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("query_test.Measure." + field + ": "), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

// An integer is a query value for a float field only if a double holds it exactly: 2^53 + 1 is
// not 2^53, and must not match it (with an index or without).
TEST_F(QueryTest, IntegersForFloatFieldsMustBeExactlyRepresentable) {
  Measure::set_type_repository(repo);
  Measure::create({{"d", 9007199254740992.0}, {"e", 9007199254740992.0}});
  for (std::string field : {"d", "e"}) {
    EXPECT_EQ(Measure::find().where(field, std::int64_t{9007199254740992}).count(), 1u);
    EXPECT_EQ(Measure::find().where(field, ">", std::numeric_limits<std::int64_t>::min()).count(),
              1u);
    for (std::int64_t inexact : {std::int64_t{9007199254740993}, -std::int64_t{9007199254740993},
                                 std::numeric_limits<std::int64_t>::max()}) {
      expect_refused([&] { Measure::find().where(field, inexact); }, field,
                     std::to_string(inexact));
      expect_refused(
          [&] {
            Measure::find().where(field, "in", {Value(1), Value(inexact)});
          },
          field, std::to_string(inexact));
    }
  }
  Measure::set_type_repository(nullptr);
}

// The same holds where a program sets a float field, and in a record's JSON.
TEST_F(QueryTest, SetAndFromJsonTakeOnlyExactIntegersForFloatFields) {
  auto m = Measure::make();
  m->set("d", std::int64_t{9007199254740992});
  EXPECT_EQ(m->d, 9007199254740992.0);
  expect_refused([&] { m->set("d", std::int64_t{9007199254740993}); }, "d", "9007199254740993");
  EXPECT_EQ(m->d, 9007199254740992.0) << "a refused set changed the field";
  EXPECT_EQ(Measure::from_json(R"({"d": {"type": "float", "value": 9007199254740992}})")->d,
            9007199254740992.0);
  EXPECT_THROW(Measure::from_json(R"({"d": {"type": "float", "value": 9007199254740993}})"),
               InvalidArgument);
}

TEST_F(QueryTest, ConversionErrorsNameTheTypeAndField) {
  expect_refused([] { Measure::find(Repository::memory()).where("at", ""); }, "at",
                 "invalid timestamp");
  expect_refused([] { Measure::find(Repository::memory()).where("token", "not a uuid"); }, "token",
                 "uuid");
  expect_refused([] { Measure::find(Repository::memory()).where("amount", "1.2.3"); }, "amount",
                 "1.2.3");
  expect_refused(
      [] {
        Measure::find(Repository::memory()).where("at", "in", {"", "x"});
      },
      "at", "invalid timestamp");
}

struct Owner : Record<Owner> {
  std::string name;
  Pointer<Measure> measure;
};
CAIRN_TYPE(Owner, "query_test.Owner", name, measure);

// Query values no stored value can be, which would match nothing silently, are refused as
// set() refuses them.
TEST_F(QueryTest, ValuesNoFieldCanHoldAreRefused) {
  auto repository = Repository::memory();
  auto refused = [&](auto build, const std::string& what) {
    try {
      build();
      ADD_FAILURE() << "no error for " << what;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("query_test.Owner."), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  refused([&] { Owner::find(repository).where("name", std::string("\xff\xfe")); },
          "is not valid UTF-8");
  refused(
      [&] {
        Owner::find(repository).where("name", "in", {"ok", "\xff"});
      },
      "is not valid UTF-8");
  refused(
      [&] {
        Owner::find(repository).where("measure", Value(Ref{Oid(1), "other.Type"}));
      },
      "points to a other.Type, the field points to a query_test.Measure");
  refused([&] { Owner::find(repository).where("measure", -1); },
          "cannot compare an int with a pointer field");
  // Other operators may compare with such values: a prefix range, or "anything but".
  EXPECT_NO_THROW(Owner::find(repository).where("name", "<", std::string("abc\xff")).count());
  EXPECT_NO_THROW(Owner::find(repository).where("name", "!=", std::string("\xff")).count());
  auto m = Measure::create({}, {.repository = repository});
  Owner::create({{"name", "o"}, {"measure", Value(m->ref())}}, {.repository = repository});
  EXPECT_EQ(Owner::find(repository).where("measure", Value(m->ref())).count(), 1u);
  EXPECT_EQ(Owner::find(repository).where("measure", Value(Ref{*m->oid(), ""})).count(), 1u);
}

// The same stored type seen by a struct that declares one more index: records saved before it
// existed have no entries until reindex().
struct IndexedWizard : Record<IndexedWizard> {
  std::string name;
  std::string house_name;
  std::int64_t age = 0;
  std::string tag;
  static void describe(Schema<IndexedWizard>& s) {
    s.index("house_name").index("age").index("tag");
  }
};
CAIRN_TYPE(IndexedWizard, "query_test.Wizard", name, house_name, age, tag);

TEST_F(QueryTest, ReindexAddsEntriesForAnIndexAddedLater) {
  auto q = [&] { return IndexedWizard::find(repo).where("tag", "seeker").count(); };
  EXPECT_EQ(q(), 0u);  // answered from the new, empty index
  EXPECT_EQ(IndexedWizard::reindex(repo), 5u);
  EXPECT_EQ(q(), 3u);
  EXPECT_EQ(IndexedWizard::reindex(repo), 0u);  // nothing left to add
}

// ---- property test ----

struct Item : Record<Item> {
  std::string name;
  std::string tag;
  std::int64_t n = 0;
  double x = 0;
  std::optional<std::string> opt;
  bool flag = false;
  static void describe(Schema<Item>& s) { s.index("tag").index("n").index("x").index("opt"); }
};
CAIRN_TYPE(Item, "query_test.Item", name, tag, n, x, opt, flag);

struct Model {
  Oid oid;
  std::vector<Value> fields;  // in the order of `fields` in the test
};

// The query semantics of query.h, written out plainly.
bool brute_match(const Value& v, QueryOp op, const Value& q) {
  switch (op) {
    case QueryOp::eq:
      return v == q;
    case QueryOp::ne:
      return !(v == q);
    case QueryOp::in:
    case QueryOp::not_in: {
      bool found = false;
      for (const Value& item : q.as_list())
        found = found || item == v;
      return op == QueryOp::in ? found : !found;
    }
    default:
      break;
  }
  if (v.kind() != q.kind()) return false;
  auto c = v <=> q;
  switch (op) {
    case QueryOp::lt:
      return c < 0;
    case QueryOp::le:
      return c <= 0;
    case QueryOp::gt:
      return c > 0;
    default:
      return c >= 0;
  }
}

TEST(QueryProperty, RandomQueriesEqualABruteForceScan) {
  auto repo = Repository::memory();
  Item::set_type_repository(repo);
  std::mt19937_64 rng(20261125);
  auto pick = [&](auto n) {
    return static_cast<decltype(n)>(rng() % static_cast<std::uint64_t>(n));
  };
  const std::vector<std::string> words = {"ash",   "birch", "cedar", "elm",   "fir", "hazel",
                                          "larch", "oak",   "pine",  "rowan", "yew", "alder"};
  auto random_value = [&](const std::string& field) -> Value {
    if (field == "name") return words[pick(words.size())] + std::to_string(pick(20));
    if (field == "tag") return "t" + std::to_string(pick(40));
    if (field == "n") return static_cast<std::int64_t>(pick(200)) - 100;
    if (field == "x") return static_cast<double>(static_cast<std::int64_t>(pick(256)) - 128) / 4;
    if (field == "opt") return pick(10) == 0 ? Value() : Value("o" + std::to_string(pick(20)));
    return pick(2) == 0;
  };
  const std::vector<std::string> fields = {"name", "tag", "n", "x", "opt", "flag"};
  auto fill = [&](Item& item) {
    item.name = random_value("name").as_string();
    item.tag = random_value("tag").as_string();
    item.n = random_value("n").as_int();
    item.x = random_value("x").as_double();
    Value opt = random_value("opt");
    item.opt = opt.is_null() ? std::nullopt : std::optional<std::string>(opt.as_string());
    item.flag = random_value("flag").as_bool();
  };

  constexpr int objects = 10'000;
  constexpr int queries = 1'000;
  std::vector<std::shared_ptr<Item>> items;
  for (int i = 0; i < objects; ++i)
    items.push_back(Item::create([&](Item& item) { fill(item); }));
  // Change some and remove some, so that indexes must follow.
  for (int i = 0; i < objects / 10; ++i) {
    auto& item = items[pick(items.size())];
    fill(*item);
    item->save();
  }
  for (int i = 0; i < objects / 20; ++i)
    items[pick(items.size())]->remove();

  std::vector<Model> model;
  for (const auto& item : items) {
    if (!item->saved()) continue;
    Model m{*item->oid(), {}};
    for (const std::string& f : fields)
      m.fields.push_back(item->get(f));
    model.push_back(std::move(m));
  }
  std::sort(model.begin(), model.end(),
            [](const Model& a, const Model& b) { return a.oid < b.oid; });
  items.clear();  // results must come from the store, not from objects kept here

  const std::vector<QueryOp> ops = {QueryOp::eq, QueryOp::ne, QueryOp::lt, QueryOp::le,
                                    QueryOp::gt, QueryOp::ge, QueryOp::in, QueryOp::not_in};
  std::size_t indexed_queries = 0;
  std::size_t nonempty = 0;
  for (int qi = 0; qi < queries; ++qi) {
    Query<Item> query = Item::find();
    struct Cond {
      std::size_t field;
      QueryOp op;
      Value value;
    };
    std::vector<Cond> conds;
    int nconds = 1 + pick(3);
    // Most queries start with a condition an index answers, as real ones do; the rest are
    // random through and through (and often scan the type).
    bool selective = pick(30) != 0;
    for (int c = 0; c < nconds; ++c) {
      std::size_t fi = pick(fields.size());
      QueryOp op = ops[pick(ops.size())];
      if (c == 0 && selective) {
        fi = 1 + pick(4);  // tag, n, x or opt: the indexed fields
        op = pick(3) == 0 ? QueryOp::in : QueryOp::eq;
      }
      const std::string& field = fields[fi];
      Value value;
      if (op == QueryOp::in || op == QueryOp::not_in) {
        Value::List list;
        for (int k = 0, m = 1 + pick(4); k < m; ++k)
          list.push_back(random_value(field));
        value = Value(std::move(list));
      } else {
        value = random_value(field);
      }
      query.where(field, op, value);
      conds.push_back({fi, op, value});
      if (c == 0 && selective && fi == 2 && op == QueryOp::eq && pick(2) == 0) {  // or a range
        conds.back() = {fi, QueryOp::ge, value};
        query = Item::find().where(field, ">=", value).where(field, "<", value.as_int() + 10);
        conds.push_back({fi, QueryOp::lt, Value(value.as_int() + 10)});
      }
    }
    std::vector<std::pair<std::size_t, bool>> order;
    for (int k = 0, m = pick(3); k < m; ++k) {
      std::size_t fi = pick(fields.size());
      bool desc = pick(2) == 0;
      query.order_by((desc ? "-" : "") + fields[fi]);
      order.emplace_back(fi, desc);
    }
    std::size_t offset = pick(4) == 0 ? pick(20) : 0;
    std::size_t limit = pick(2) == 0 ? 1 + pick(50) : SIZE_MAX;
    query.offset(offset).limit(limit);

    std::vector<const Model*> expected;
    for (const Model& m : model) {
      bool ok = true;
      for (const Cond& c : conds)
        ok = ok && brute_match(m.fields.at(c.field), c.op, c.value);
      if (ok) expected.push_back(&m);
    }
    std::stable_sort(expected.begin(), expected.end(), [&](const Model* a, const Model* b) {
      for (const auto& [field, desc] : order) {
        auto c = a->fields.at(field) <=> b->fields.at(field);
        if (c != 0) return desc ? c > 0 : c < 0;
      }
      return false;
    });
    std::vector<Oid> want;
    for (std::size_t i = offset; i < expected.size() && want.size() < limit; ++i)
      want.push_back(expected[i]->oid);

    detail::QueryPlan plan;
    std::vector<Oid> got = query.oids(&plan);
    if (qi % 50 == 0) {  // now and then through record objects too
      std::vector<Oid> via_records;
      for (const auto& item : query.all())
        via_records.push_back(*item->oid());
      ASSERT_EQ(via_records, got) << "query " << qi;
    }
    if (!plan.index.empty()) ++indexed_queries;
    if (!want.empty()) ++nonempty;
    ASSERT_EQ(got, want) << "query " << qi;
  }
  // The generator exercised both paths and found things.
  EXPECT_GT(indexed_queries, static_cast<std::size_t>(queries / 3));
  EXPECT_GT(nonempty, static_cast<std::size_t>(queries / 4));
  Item::set_type_repository(nullptr);
}

}  // namespace
}  // namespace cairn::testing
