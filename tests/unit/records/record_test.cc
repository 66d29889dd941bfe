// Records: create, save, load (with and without the identity cache), refresh, list, remove,
// repositories per type and per instance, field kinds and their checks, pointers, dependency
// saves, generations, locks and the per-field JSON form.
#include "cairn/record.h"
#include "support/forwarding_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <openssl/sha.h>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/json.h"
#include "support/redis_server.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

using Oids = std::vector<Oid>;

struct Project : Record<Project> {
  std::string name;
  Bytes git_uri;
  Value metadata;
};
CAIRN_TYPE(Project, "records_test.Project", name, git_uri, metadata);

struct Build : Record<Build> {
  Uuid token;
  Pointer<Project> project;
  Timestamp started_at;
  std::optional<Timestamp> ended_at;
  Decimal cost;
  double score = 0;
  std::int64_t attempts = 1;
  bool ok = false;
  std::vector<std::string> tags;
  std::map<std::string, std::int64_t> counts;
  static void describe(Schema<Build>& s) {
    s.field("token").auto_uuid();
    s.field("started_at").auto_now();
    s.field("attempts").check([](const Value& v) { return v.as_int() >= 1; }, "must be >= 1");
  }
};
CAIRN_TYPE(Build, "records_test.Build", token, project, started_at, ended_at, cost, score, attempts,
           ok, tags, counts);

struct Person : Record<Person> {
  std::string name;
  std::string house_name;
  std::int64_t age = 0;
  static void describe(Schema<Person>& s) {
    s.field("name").required();
    s.index("house_name").index("age");
  }
};
CAIRN_TYPE(Person, "records_test.Person", name, house_name, age);

// Each test gets fresh repositories for its types.
class RecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo = Repository::memory();
    Project::set_type_repository(repo);
    Build::set_type_repository(repo);
    Person::set_type_repository(repo);
  }
  void TearDown() override {
    Project::set_type_repository(nullptr);
    Build::set_type_repository(nullptr);
    Person::set_type_repository(nullptr);
  }
  std::shared_ptr<Repository> repo;
};

TEST_F(RecordTest, CreateSavesAndLoadReturnsTheSameObject) {
  auto p = Project::create({{"name", "cairn"}}, {.id = "p1"});
  EXPECT_EQ(p->id(), "p1");
  ASSERT_TRUE(p->oid());
  EXPECT_EQ(Project::load("p1"), p);
  EXPECT_EQ(Project::load(*p->oid()), p);
  // Stored under the type name, keyed by the id.
  EXPECT_EQ(repo->store().find_key("records_test.Project", "p1"), p->oid());
}

TEST_F(RecordTest, LoadWithCacheKeepsLocalChangesWithoutCacheRereads) {
  auto p = Project::create({{"name", "cairn"}}, {.id = "p1"});
  p->name = "local";
  EXPECT_EQ(Project::load("p1")->name, "local");
  auto again = Project::load("p1", {.cache = false});
  EXPECT_EQ(again, p);
  EXPECT_EQ(p->name, "cairn");
}

TEST_F(RecordTest, LoadOfAMissingIdThrowsNotFound) {
  EXPECT_THROW(Project::load("nope"), NotFound);
  EXPECT_EQ(Project::try_load("nope"), nullptr);
}

TEST_F(RecordTest, AutoIdIsAUuid) {
  auto p = Project::create();
  EXPECT_NO_THROW(Uuid::parse(p->id()));
  EXPECT_EQ(Project::load(p->id()), p);
}

TEST_F(RecordTest, RefreshRereadsAndReturnsEmptyWhenDeleted) {
  auto p = Project::create({{"name", "a"}}, {.id = "p"});
  p->name = "b";
  EXPECT_EQ(p->refresh(), p);
  EXPECT_EQ(p->name, "a");
  EXPECT_EQ(p->remove(), 1u);
  p->name = "kept";
  EXPECT_EQ(p->refresh(), nullptr);
  EXPECT_EQ(p->name, "kept");
  EXPECT_EQ(p->remove(), 0u);
  p->save();  // the local copy can be saved again
  EXPECT_EQ(p->refresh(), p);
  EXPECT_EQ(Project::load("p", {.cache = false})->name, "kept");
}

TEST_F(RecordTest, RemoveCountsOnlyWhatWasStored) {
  auto p = Project::create({{"name", "a"}});
  auto copy_oid = *p->oid();
  EXPECT_EQ(p->remove(), 1u);
  EXPECT_FALSE(repo->store().load(std::vector<Oid>{copy_oid}).objects[0].exists());
  EXPECT_EQ(Project::try_load(p->id()), nullptr);
}

TEST_F(RecordTest, ListReturnsCachedObjectsRereadInOidOrder) {
  auto a = Project::create({{"name", "a"}});
  auto b = Project::create({{"name", "b"}});
  a->name = "changed";
  auto all = Project::list();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0], a);
  EXPECT_EQ(all[1], b);
  EXPECT_EQ(a->name, "a");
}

TEST_F(RecordTest, SavingAnExistingIdOverwritesIt) {
  auto a = Project::create({{"name", "first"}}, {.id = "same"});
  auto b = Project::create({{"name", "second"}}, {.id = "same"});
  EXPECT_EQ(a->oid(), b->oid());
  EXPECT_EQ(Project::list().size(), 1u);
  EXPECT_EQ(Project::load("same", {.cache = false})->name, "second");
}

// Records of one id saved for the first time by several threads at once: every save is an
// upsert of the one record, whoever wins the race to create it.
template <typename R>
void concurrent_first_saves(const std::shared_ptr<Repository>& repository) {
  constexpr int threads = 4;
  constexpr int rounds = 20;
  for (int round = 0; round < rounds; ++round) {
    std::string id = "same-" + std::to_string(round);
    std::barrier start(threads);
    std::atomic<int> failures{0};
    std::vector<std::string> errors(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        auto record = R::make({{"name", "thread " + std::to_string(t)}},
                              {.id = id, .repository = repository});
        start.arrive_and_wait();
        try {
          record->save();
        } catch (const std::exception& e) {
          ++failures;
          errors[t] = e.what();
        }
      });
    }
    for (std::thread& thread : pool)
      thread.join();
    for (const std::string& error : errors)
      EXPECT_EQ(error, "") << "round " << round;
    ASSERT_EQ(failures.load(), 0);
  }
  EXPECT_EQ(R::list({.repository = repository}).size(), static_cast<std::size_t>(rounds));
}

TEST_F(RecordTest, ConcurrentFirstSavesOfOneIdAreUpserts) {
  concurrent_first_saves<Project>(Repository::memory());
  concurrent_first_saves<Person>(Repository::memory());
  TempDir dir;
  concurrent_first_saves<Person>(Repository::open("file:" + dir.file("race.cairn")));
  RedisServer server;
  concurrent_first_saves<Project>(Repository::open(server.url("race:")));
  concurrent_first_saves<Person>(Repository::open(server.url("race:")));
}

// Lists and queries in several threads read every stored record into the one cached object per
// record, which no caller shares: the reads must not interleave (they freed strings twice).
TEST_F(RecordTest, ConcurrentListsAndQueriesOfOneRepository) {
  for (int i = 0; i < 50; ++i) {
    Build::create(
        [&](Build& b) {
          b.tags = {std::string(50, 'b'), std::string(60, 'c')};
          b.counts = {{std::string(40, 'k'), i}};
        },
        {.id = std::to_string(i), .repository = repo});
  }
  std::vector<std::thread> pool;
  std::atomic<std::size_t> seen{0};
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&, t] {
      for (int k = 0; k < 150; ++k) {
        seen += t % 2 == 0 ? Build::list({.repository = repo}).size()
                           : Build::find(repo).where("attempts", 1).all().size();
      }
    });
  }
  for (std::thread& thread : pool)
    thread.join();
  EXPECT_EQ(seen.load(), 4u * 150 * 50);
  for (const auto& b : Build::list({.repository = repo}))
    EXPECT_EQ(b->tags.at(1), std::string(60, 'c'));
}

// Threads loading one record that no one holds yet get one object, as one thread would.
TEST_F(RecordTest, ConcurrentLoadsOfOneRecordGetOneObject) {
  constexpr int records = 300;
  constexpr int threads = 6;
  for (int i = 0; i < records; ++i)
    Project::create({{"name", "p"}}, {.id = std::to_string(i), .repository = repo});
  int split = 0;
  for (int round = 0; round < records; ++round) {
    std::vector<std::shared_ptr<Project>> got(threads);
    std::barrier start(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        start.arrive_and_wait();
        got[t] = Project::load(std::to_string(round), {.repository = repo});
      });
    }
    for (std::thread& thread : pool)
      thread.join();
    for (int t = 1; t < threads; ++t) {
      if (got[t] != got[0]) {
        ++split;
        break;
      }
    }
  }
  EXPECT_EQ(split, 0) << "rounds in which one record was handed out as two objects";
}

TEST_F(RecordTest, PerInstanceRepositoryOverridesTheType) {
  auto other = Repository::memory();
  auto p = Project::create({{"name", "elsewhere"}}, {.id = "x", .repository = other});
  EXPECT_EQ(Project::try_load("x"), nullptr);
  auto loaded = Project::load("x", {.repository = other});
  EXPECT_EQ(loaded, p);
  // A record loaded from a repository saves back to it.
  auto fresh = Project::load("x", {.cache = false, .repository = other});
  fresh->name = "again";
  fresh->save();
  EXPECT_EQ(Project::try_load("x"), nullptr);
}

// set_repository on a record moves that record only; the type's repository has its own name.
// (A static set_repository once hid the record's: the call set the whole type's repository.)
TEST_F(RecordTest, SetRepositoryOnARecordMovesOnlyThatRecord) {
  auto other = Repository::memory();
  auto p = Project::make({{"name", "moved"}}, {.id = "m"});
  p->set_repository(other);
  EXPECT_EQ(p->repository(), other);
  EXPECT_EQ(Project::type_repository(), repo);
  EXPECT_EQ(Project::make({{"name", "stays"}})->repository(), repo);
  p->save();
  EXPECT_EQ(Project::try_load("m"), nullptr);
  EXPECT_NE(Project::try_load("m", {.repository = other}), nullptr);
}

// A record keeps the oid it was saved at, but in another repository that oid may hold another
// record: saving (or removing) there must find the record by its id, never write over the other.
TEST_F(RecordTest, SaveInAnotherRepositoryNeverOverwritesTheRecordAtItsOid) {
  auto r1 = Repository::memory();
  auto r2 = Repository::memory();
  auto bob = Project::create({{"name", "bob"}}, {.id = "bob", .repository = r2});
  auto alice = Project::create({{"name", "alice"}}, {.id = "alice", .repository = r1});
  ASSERT_EQ(alice->oid(), bob->oid());
  alice->set_repository(r2);
  alice->save();
  auto stored_bob = Project::try_load("bob", {.cache = false, .repository = r2});
  ASSERT_NE(stored_bob, nullptr);
  EXPECT_EQ(stored_bob->name, "bob");
  EXPECT_EQ(stored_bob->oid(), bob->oid());
  EXPECT_NE(alice->oid(), bob->oid());
  EXPECT_EQ(Project::load("alice", {.cache = false, .repository = r2}), alice);
  EXPECT_EQ(Project::list({.repository = r2}).size(), 2u);
  // The same with index entries to keep right.
  auto bob_p = Person::create({{"name", "bob"}, {"age", 30}}, {.id = "bob", .repository = r2});
  auto alice_p = Person::create({{"name", "alice"}, {"age", 20}}, {.id = "alice"});
  auto moved_from = *alice_p->oid();
  alice_p->set_repository(r2);
  r2->store().new_oids(static_cast<std::uint32_t>(moved_from.value()));  // r2 has such an oid now
  alice_p->save();
  EXPECT_EQ(Person::load("bob", {.cache = false, .repository = r2})->name, "bob");
  EXPECT_EQ(Person::find(r2).where("age", 30).count(), 1u);
  EXPECT_EQ(Person::find(r2).where("age", 20).count(), 1u);
  // remove() and refresh() follow the id as well.
  auto carol = Project::create({{"name", "carol"}}, {.id = "carol", .repository = r1});
  carol->set_repository(r2);
  EXPECT_EQ(carol->refresh(), nullptr);
  EXPECT_EQ(carol->remove(), 0u);
  EXPECT_EQ(Project::list({.repository = r2}).size(), 2u);
}

// Moved to a repository where its id is stored already, a record overwrites that one (an
// upsert, as for a new record); moved where its oid is free, it takes a new oid of that
// repository, so that the next record created there does not write over it.
TEST_F(RecordTest, SaveInAnotherRepositoryUsesTheOidOfItsIdThere) {
  auto r1 = Repository::memory();
  auto r2 = Repository::memory();
  Project::create({{"name", "first"}}, {.id = "filler", .repository = r1});
  auto old = Project::create({{"name", "old"}}, {.id = "x", .repository = r2});
  auto x = Project::create({{"name", "new"}}, {.id = "x", .repository = r1});
  ASSERT_NE(x->oid(), old->oid());
  x->set_repository(r2);
  x->save();
  EXPECT_EQ(x->oid(), old->oid());
  EXPECT_EQ(Project::list({.repository = r2}).size(), 1u);
  EXPECT_EQ(Project::load("x", {.cache = false, .repository = r2})->name, "new");

  auto r3 = Repository::memory();
  auto y = Project::create({{"name", "y"}}, {.id = "y", .repository = r1});
  y->set_repository(r3);
  y->save();
  auto z = Project::create({{"name", "z"}}, {.id = "z", .repository = r3});
  EXPECT_NE(y->oid(), z->oid());
  EXPECT_EQ(Project::load("y", {.cache = false, .repository = r3})->name, "y");
  EXPECT_EQ(Project::load("z", {.cache = false, .repository = r3})->name, "z");
  // An oid that holds an object of another type is no place for the record either.
  auto r4 = Repository::memory();
  auto r5 = Repository::memory();
  auto other = Person::create({{"name", "p"}}, {.id = "p", .repository = r4});
  auto w = Project::create({{"name", "w"}}, {.id = "w", .repository = r5});
  ASSERT_EQ(w->oid(), other->oid());
  w->set_repository(r4);
  w->save();
  EXPECT_EQ(Person::load("p", {.cache = false, .repository = r4})->name, "p");
  EXPECT_EQ(Project::load("w", {.cache = false, .repository = r4})->name, "w");
}

// A record moved to another repository leaves the old one's identity map: reading the old
// repository gives another object, and does not overwrite the moved one's fields.
TEST_F(RecordTest, AMovedRecordLeavesItsOldRepositorysIdentityMap) {
  auto a = Repository::memory();
  auto b = Repository::memory();
  auto x = Project::create({{"name", "in b"}}, {.id = "x", .repository = b});
  x->set_repository(a);
  x->name = "in a";
  x->save();
  std::vector<Project::Ptr> in_b = Project::list({.repository = b});
  ASSERT_EQ(in_b.size(), 1u);
  EXPECT_NE(in_b[0], x);
  EXPECT_EQ(in_b[0]->name, "in b");
  EXPECT_EQ(in_b[0]->repository(), b);
  EXPECT_EQ(x->name, "in a");
  EXPECT_EQ(Project::load("x", {.repository = a}), x);
  EXPECT_NE(Project::load("x", {.repository = b}), x);
  x->save();
  EXPECT_EQ(Project::load("x", {.cache = false, .repository = a})->name, "in a");
  EXPECT_EQ(Project::load("x", {.cache = false, .repository = b})->name, "in b");
  // After remove() the record is in neither map.
  EXPECT_EQ(x->remove(), 1u);
  EXPECT_EQ(Project::try_load("x", {.repository = a}), nullptr);
  EXPECT_EQ(a->cached_records(), 0u);
  // A record assigned another's fields (id and repository with them) stays, as an object, where
  // it was mapped until it is saved elsewhere: then its old repository forgets it, instead of
  // handing it out for the record it no longer is.
  auto r = Project::create({{"name", "r"}}, {.id = "r", .repository = a});
  auto other = Project::create({{"name", "s"}}, {.id = "s", .repository = b});
  *r = *other;
  r->save();
  EXPECT_NE(Project::load("r", {.repository = a}), r);
  EXPECT_EQ(Project::load("r", {.repository = a})->name, "r");
}

// A record loaded from its type's repository stays with it when the type's repository changes
// (docs/records.md: "or the one it was loaded from").
TEST_F(RecordTest, ALoadedRecordStaysWithTheRepositoryItWasLoadedFrom) {
  Project::create({{"name", "Harry"}}, {.id = "harry"});
  auto h = Project::load("harry");
  auto listed = Project::list();
  auto other = Repository::memory();
  Project::set_type_repository(other);
  EXPECT_EQ(h->repository(), repo);
  h->name = "Harry Potter";
  h->save();
  EXPECT_EQ(Project::load("harry", {.cache = false, .repository = repo})->name, "Harry Potter");
  EXPECT_EQ(Project::try_load("harry"), nullptr) << "the save went to the type's new repository";
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]->repository(), repo);
}

// A pointer stores only an oid: to a record in another repository it would name whatever that
// oid holds in this one. Such a save is refused, naming the field, and writes nothing.
TEST_F(RecordTest, APointerToARecordInAnotherRepositoryIsRefused) {
  auto a = Repository::memory();
  auto b = Repository::memory();
  Project::create({{"name", "a's own"}}, {.repository = a});
  auto in_b = Project::create({{"name", "b's"}}, {.repository = b});
  auto build = Build::make({}, {.id = "b1", .repository = a});
  build->project = in_b;
  EXPECT_THROW(
      {
        try {
          build->save();
        } catch (const InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("records_test.Build.project"), std::string::npos)
              << e.what();
          throw;
        }
      },
      InvalidArgument);
  EXPECT_FALSE(build->saved());
  EXPECT_EQ(Build::try_load("b1", {.repository = a}), nullptr);
  // With dependencies the target would be saved in its own repository: still another one.
  // Refused before anything is written, the target included.
  auto unsaved = Project::make({{"name", "new"}}, {.repository = b});
  build->project = unsaved;
  EXPECT_THROW(build->save({.dependencies = true}), InvalidArgument);
  EXPECT_FALSE(unsaved->saved());
  // A record moved to another repository cannot take its unresolved pointers along either.
  auto in_a = Project::create({{"name", "a's"}}, {.repository = a});
  build->project = in_a;
  build->save();
  auto loaded = Build::load("b1", {.cache = false, .repository = a});
  loaded->project.reset();
  loaded->set_repository(b);
  EXPECT_THROW(loaded->save(), InvalidArgument);
  // In one repository, pointers save as before.
  loaded->set_repository(a);
  EXPECT_NO_THROW(loaded->save());
  EXPECT_EQ(Build::load("b1", {.cache = false, .repository = a})->project->name, "a's");
}

// A Redis server that lost its data hands out the same oids again: a record saved before the
// loss must not overwrite the record another client created at its oid since. (Repositories
// open across the loss refuse to go on, docs/redis-layout.md: these are opened again.)
TEST_F(RecordTest, SaveAfterTheStoreLostItsDataNeverOverwritesANewerRecord) {
  RedisServer server;
  std::string url = server.url("records:");
  auto mine = Repository::open(url);
  auto alice = Project::create({{"name", "alice"}}, {.id = "alice", .repository = mine});
  server.command({"FLUSHALL"});
  EXPECT_THROW(mine->store().changes_since(0), Corruption);
  auto theirs = Repository::open(url);
  auto bob = Project::create({{"name", "bob"}}, {.id = "bob", .repository = theirs});
  ASSERT_EQ(bob->oid(), alice->oid());
  alice->set_repository(Repository::open(url));
  alice->name = "alice again";
  alice->save();
  EXPECT_EQ(Project::load("bob", {.cache = false, .repository = theirs})->name, "bob");
  EXPECT_EQ(Project::load("alice", {.cache = false, .repository = theirs})->name, "alice again");
  EXPECT_NE(alice->oid(), bob->oid());
}

TEST_F(RecordTest, DefaultRepositoryIsInMemoryAndSharedByTypes) {
  Project::set_type_repository(nullptr);
  auto p = Project::create({{"name", "default"}});
  EXPECT_EQ(p->repository(), RepositoryRegistry::process().default_repository());
  EXPECT_EQ(Project::load(p->id()), p);
  p->remove();
}

TEST_F(RecordTest, FileRepositoryKeepsRecordsAcrossReopen) {
  TempDir dir;
  std::string url = "file:" + dir.file("records.cairn");
  {
    auto file = Repository::open(url);
    Project::create({{"name", "durable"}}, {.id = "d", .repository = file});
  }
  auto file = Repository::open(url);
  EXPECT_EQ(Project::load("d", {.repository = file})->name, "durable");
}

TEST_F(RecordTest, EveryFieldKindRoundTrips) {
  auto project = Project::create({{"name", "p"},
                                  {"git_uri", Bytes{"git@x:y"}},
                                  {"metadata", Value::Map{{"k", Value::List{1, "two"}}}}});
  auto b = Build::make();
  b->project = project;
  b->ended_at = Timestamp{42};
  b->cost = Decimal("1.10");
  b->score = 0.5;
  b->attempts = 3;
  b->ok = true;
  b->tags = {"x", "y"};
  b->counts = {{"a", 1}};
  b->save();
  EXPECT_NE(b->token, Uuid{});         // auto_uuid
  EXPECT_GT(b->started_at.micros, 0);  // auto_now
  Uuid token = b->token;
  auto again = Build::load(b->id(), {.cache = false});
  EXPECT_EQ(again->token, token);
  EXPECT_EQ(again->ended_at, Timestamp{42});
  EXPECT_EQ(again->cost, Decimal("1.1"));
  EXPECT_EQ(again->cost.str(), "1.10");
  EXPECT_EQ(again->score, 0.5);
  EXPECT_EQ(again->attempts, 3);
  EXPECT_TRUE(again->ok);
  EXPECT_EQ(again->tags, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(again->counts.at("a"), 1);
  EXPECT_EQ(again->project->name, "p");
  EXPECT_EQ(again->project.get(), project);  // through the identity map
  EXPECT_EQ(project->git_uri, Bytes{"git@x:y"});
}

TEST_F(RecordTest, SetChecksKindsAndRulesNamingTypeAndField) {
  auto b = Build::make();
  try {
    b->set("attempts", "three");
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("records_test.Build.attempts"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(b->set("attempts", 0), InvalidArgument);  // the check
  EXPECT_EQ(b->attempts, 1);
  EXPECT_THROW(b->set("nope", 1), InvalidArgument);
  EXPECT_THROW(b->set("started_at", nullptr), InvalidArgument);  // not nullable
  b->set("ended_at", nullptr);                                   // nullable
  b->set("score", 2);                                            // an integer for a float
  EXPECT_EQ(b->score, 2.0);
  b->set("attempts", 5);
  EXPECT_EQ(b->get("attempts"), Value(5));
}

TEST_F(RecordTest, SaveChecksRulesAndWritesNothingOnError) {
  auto b = Build::make();
  b->attempts = 0;
  EXPECT_THROW(b->save(), InvalidArgument);
  EXPECT_FALSE(b->saved());
  EXPECT_TRUE(Build::list().empty());
  auto nameless = Person::make();
  try {
    nameless->save();
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("records_test.Person.name"), std::string::npos);
  }
}

// auto_now and auto_uuid fields take their values for the save: a save that fails (here a
// broken check) leaves them, like every other field, as they were.
TEST_F(RecordTest, AFailedSaveLeavesTheRecordUnchanged) {
  auto b = Build::make();
  b->attempts = 0;
  EXPECT_THROW(b->save(), InvalidArgument);
  EXPECT_EQ(b->started_at, Timestamp{});
  EXPECT_EQ(b->token, Uuid{});
  EXPECT_FALSE(b->saved());
  b->attempts = 1;
  b->save();
  const Timestamp started = b->started_at;
  const Uuid token = b->token;
  const std::optional<Oid> oid = b->oid();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  b->attempts = 0;
  EXPECT_THROW(b->save(), InvalidArgument);
  EXPECT_EQ(b->started_at, started);
  EXPECT_EQ(b->token, token);
  EXPECT_EQ(b->oid(), oid);
  EXPECT_EQ(Build::load(b->id(), {.cache = false})->started_at, started);
}

TEST_F(RecordTest, StringsMustBeUtf8BytesNeedNot) {
  auto p = Project::make();
  EXPECT_THROW(p->set("name", std::string("\xff\xfe")), InvalidArgument);
  p->set("git_uri", Bytes{"\xff\xfe"});
  EXPECT_EQ(p->git_uri.data, "\xff\xfe");
}

TEST_F(RecordTest, PointerToAnUnsavedRecordNeedsDependencies) {
  auto project = Project::make({{"name", "later"}});
  auto b = Build::make();
  b->project = project;
  EXPECT_THROW(b->save(), InvalidArgument);
  EXPECT_FALSE(project->saved());
  b->save({.dependencies = true, .depth = 1});
  EXPECT_TRUE(project->saved());
  EXPECT_EQ(Build::load(b->id(), {.cache = false})->project.oid(), project->oid());
}

TEST_F(RecordTest, DanglingPointerGivesAClearError) {
  auto project = Project::create({{"name", "gone"}});
  auto b = Build::make();
  b->project = project;
  b->save();
  project->remove();
  Oid build_oid = *b->oid();
  b.reset();
  project.reset();
  auto loaded = Build::load(build_oid);
  try {
    loaded->project.get();
    FAIL() << "no error";
  } catch (const NotFound& e) {
    EXPECT_NE(std::string(e.what()).find("records_test.Project"), std::string::npos) << e.what();
  }
}

struct Node : Record<Node> {
  std::string label;
  Pointer<Node> next;
};
CAIRN_TYPE(Node, "records_test.Node", label, next);

struct Pair : Record<Pair> {
  Pointer<Node> first;
  Pointer<Node> second;
};
CAIRN_TYPE(Pair, "records_test.Pair", first, second);

// A dependency further down pointing into another repository refuses the whole save before
// any of it is written (here "b" would have been saved first), naming the record.
TEST_F(RecordTest, ASaveWithDependenciesChecksEveryPointerFirst) {
  auto elsewhere = Repository::memory();
  auto c = Node::create({{"label", "c"}}, {.id = "c", .repository = elsewhere});
  auto b = Node::make({{"label", "b"}}, {.id = "b", .repository = repo});
  auto d = Node::make({{"label", "d"}}, {.id = "d", .repository = repo});
  d->next = c;
  auto pair = Pair::make({}, {.id = "pair", .repository = repo});
  pair->first = b;
  pair->second = d;
  try {
    pair->save({.dependencies = true, .depth = 2});
    ADD_FAILURE() << "saved a pointer into another repository";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("records_test.Node.next of \"d\""), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(b->saved());
  EXPECT_EQ(Node::try_load("b", {.repository = repo}), nullptr);
  EXPECT_EQ(Pair::try_load("pair", {.repository = repo}), nullptr);
  d->next.reset();
  pair->save({.dependencies = true, .depth = 2});
  EXPECT_TRUE(b->saved());
  EXPECT_TRUE(d->saved());
}

TEST_F(RecordTest, PointerCyclesSaveAndLoadLazily) {
  Node::set_type_repository(repo);
  auto a = Node::make({{"label", "a"}});
  auto b = Node::make({{"label", "b"}});
  a->next = b;
  b->next = a;
  a->save({.dependencies = true, .depth = 5});
  ASSERT_TRUE(b->saved());
  a->next.reset();  // break the in-memory cycle
  b->next.reset();
  Oid a_oid = *a->oid();
  a.reset();
  b.reset();
  auto la = Node::load(a_oid);
  EXPECT_FALSE(la->next.resolved());
  EXPECT_EQ(la->next->label, "b");
  EXPECT_EQ(la->next->next.get(), la);  // back to the same object
  la->next->next.reset();
  Node::set_type_repository(nullptr);
}

TEST_F(RecordTest, DependencyDepthLimitsWhatIsSaved) {
  Node::set_type_repository(repo);
  auto a = Node::make({{"label", "a"}});
  auto b = Node::make({{"label", "b"}});
  auto c = Node::make({{"label", "c"}});
  a->next = b;
  b->next = c;
  EXPECT_THROW(a->save({.dependencies = true, .depth = 1}), InvalidArgument);  // c is unsaved
  EXPECT_FALSE(a->saved());
  a->save({.dependencies = true, .depth = 2});
  EXPECT_TRUE(c->saved());
  Node::set_type_repository(nullptr);
}

struct Gen0 : Record<Gen0> {
  std::string name;
};
CAIRN_TYPE(Gen0, "records_test.Versioned", name);

struct Gen1 : Record<Gen1> {
  std::string name;
  std::int64_t level = 7;
  static void describe(Schema<Gen1>& s) { s.generation(1); }
};
CAIRN_TYPE(Gen1, "records_test.Versioned", name, level);

struct Gen0Wider : Record<Gen0Wider> {
  std::string name;
  std::int64_t added = 5;
};
CAIRN_TYPE(Gen0Wider, "records_test.Versioned", name, added);

TEST_F(RecordTest, AnotherGenerationRefusesToLoadNamingBoth) {
  auto old = Gen0::create({{"name", "zero"}}, {.id = "v", .repository = repo});
  try {
    Gen1::load("v", {.repository = repo});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("generation 0"), std::string::npos) << what;
    EXPECT_NE(what.find("generation 1"), std::string::npos) << what;
  }
  EXPECT_TRUE(Gen1::list({.repository = repo}).empty());
  // Saving over it is refused as well, with or without indexes, and leaves it as it was.
  auto newer = Gen1::make({{"name", "one"}}, {.id = "v", .repository = repo});
  EXPECT_THROW(newer->save(), InvalidArgument);
  EXPECT_FALSE(newer->saved());
  EXPECT_EQ(Gen0::load("v", {.cache = false, .repository = repo})->name, "zero");
  // The deliberate way: remove through the old generation, then save through the new.
  EXPECT_EQ(old->remove(), 1u);
  newer->save();
  EXPECT_EQ(Gen1::load("v", {.cache = false, .repository = repo})->name, "one");
}

struct Gen1Holder : Record<Gen1Holder> {
  Pointer<Gen1> first;
  Pointer<Gen1> second;
};
CAIRN_TYPE(Gen1Holder, "records_test.Gen1Holder", first, second);

// A save with dependencies that would replace a record of another generation is refused before
// it writes anything: the refusal came at that record's own commit, after the dependencies saved
// before it had been committed.
TEST_F(RecordTest, ASaveWithDependenciesOverAnotherGenerationWritesNothing) {
  Gen0::create({{"name", "zero"}}, {.id = "old", .repository = repo});
  auto holder = Gen1Holder::make({}, {.id = "h", .repository = repo});
  holder->first = Gen1::make({{"name", "fresh"}}, {.id = "fresh", .repository = repo});
  holder->second = Gen1::make({{"name", "one"}}, {.id = "old", .repository = repo});
  try {
    holder->save({.dependencies = true});
    FAIL() << "saved over a record of another generation";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("first remove it"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(Gen1::list({.repository = repo}).empty()) << "a dependency was saved";
  EXPECT_TRUE(Gen1Holder::list({.repository = repo}).empty());
  EXPECT_FALSE(holder->first->saved());
  EXPECT_EQ(Gen0::load("old", {.cache = false, .repository = repo})->name, "zero");
}

TEST_F(RecordTest, AddedFieldsTakeDefaultsAndUnknownFieldsSurviveASave) {
  auto wide = Gen0Wider::create({{"name", "w"}, {"added", 9}}, {.id = "w", .repository = repo});
  auto narrow = Gen0::load("w", {.repository = repo});
  EXPECT_EQ(narrow->name, "w");
  EXPECT_EQ(narrow->unknown_fields().at("added"), Value(9));
  narrow->name = "renamed";
  narrow->save();
  auto back = Gen0Wider::load("w", {.cache = false, .repository = repo});
  EXPECT_EQ(back->name, "renamed");
  EXPECT_EQ(back->added, 9);
  // A record written without the field loads with the default.
  auto plain = Gen0::create({{"name", "p"}}, {.id = "p", .repository = repo});
  EXPECT_EQ(Gen0Wider::load("p", {.repository = repo})->added, 5);
}

// Nested structs evolve like records: a program whose nested struct lacks a field keeps that
// field's stored value on save, in a nested field and inside a map of structs.
struct AddressNarrow {
  std::string street;
};
CAIRN_TYPE(AddressNarrow, "records_test.Address", street);
struct AddressWide {
  std::string street;
  std::string zip;
};
CAIRN_TYPE(AddressWide, "records_test.Address", street, zip);
struct HomeNarrow : Record<HomeNarrow> {
  AddressNarrow address;
  std::map<std::string, AddressNarrow> others;
};
CAIRN_TYPE(HomeNarrow, "records_test.Home", address, others);
struct HomeWide : Record<HomeWide> {
  AddressWide address;
  std::map<std::string, AddressWide> others;
};
CAIRN_TYPE(HomeWide, "records_test.Home", address, others);

TEST_F(RecordTest, UnknownFieldsOfNestedStructsSurviveASave) {
  HomeWide::create(
      [](HomeWide& h) {
        h.address = {"Privet Drive", "GU1"};
        h.others["burrow"] = {"Ottery", "EX11"};
      },
      {.id = "h", .repository = repo});
  auto narrow = HomeNarrow::load("h", {.repository = repo});
  EXPECT_EQ(narrow->address.street, "Privet Drive");
  narrow->address.street = "4 Privet Drive";
  narrow->others["hogwarts"] = {"Highlands"};
  narrow->save();
  auto back = HomeWide::load("h", {.cache = false, .repository = repo});
  EXPECT_EQ(back->address.street, "4 Privet Drive");
  EXPECT_EQ(back->address.zip, "GU1");
  EXPECT_EQ(back->others.at("burrow").zip, "EX11");
  EXPECT_EQ(back->others.at("hogwarts").zip, "");
  // An entry the narrow program removed stays removed.
  narrow->others.erase("burrow");
  narrow->save();
  EXPECT_EQ(HomeWide::load("h", {.cache = false, .repository = repo})->others.count("burrow"), 0u);
}

// set() (and so make(), create() and from_json()) refuses a key a nested struct does not
// declare, naming it, instead of dropping it.
TEST_F(RecordTest, SetRefusesAnUnknownFieldOfANestedStruct) {
  auto h = HomeNarrow::make({}, {.repository = repo});
  try {
    h->set("address", Value::Map{{"street", "x"}, {"zip", "y"}});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("records_test.Home.address.zip"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(h->address.street, "") << "the field changed";
  EXPECT_THROW(h->set("others", Value::Map{{"a", Value::Map{{"zip", "y"}}}}), InvalidArgument);
  EXPECT_NO_THROW(h->set("address", Value::Map{{"street", "x"}}));
  EXPECT_EQ(h->address.street, "x");
  auto wide = HomeWide::make({{"address", Value::Map{{"street", "s"}, {"zip", "z"}}}});
  EXPECT_THROW(HomeNarrow::from_json(wide->to_json()), InvalidArgument);
}

TEST_F(RecordTest, ToJsonDescribesEveryField) {
  auto project = Project::create({{"name", "p"}, {"git_uri", Bytes{"hi"}}}, {.id = "pj"});
  auto b = Build::make({{"cost", Decimal("2.50")}, {"tags", Value::List{"t"}}}, {.id = "b1"});
  b->project = project;
  std::string text = b->to_json();
  Value parsed = from_json(text);
  EXPECT_EQ(*parsed.find("id"), Value(Value::Map{{"type", "id"}, {"value", "b1"}}));
  EXPECT_EQ(*parsed.find("cost"), Value(Value::Map{{"type", "decimal"}, {"value", "2.50"}}));
  EXPECT_EQ(parsed.find("project")->find("type")->as_string(), "pointer");
  EXPECT_EQ(*parsed.find("project")->find("value"),
            Value(static_cast<std::int64_t>(project->oid()->value())));
  EXPECT_EQ(*from_json(project->to_json()).find("git_uri"),
            Value(Value::Map{{"type", "bytes"}, {"value", "aGk="}}));
  auto copy = Build::from_json(text);
  EXPECT_EQ(copy->id(), "b1");
  EXPECT_EQ(copy->cost.str(), "2.50");
  EXPECT_EQ(copy->tags, std::vector<std::string>{"t"});
  EXPECT_EQ(copy->project.oid(), project->oid());
  EXPECT_EQ(Project::from_json(project->to_json())->git_uri, Bytes{"hi"});
  EXPECT_THROW(Build::from_json(R"({"cost": {"type": "string", "value": "x"}})"), InvalidArgument);
  EXPECT_THROW(Build::from_json(R"({"nope": {"type": "string", "value": "x"}})"), InvalidArgument);
  // What to_json writes, and only that: an empty id, a member it never writes, or a pointer's
  // "to" naming another type is refused, not dropped.
  for (const char* bad :
       {R"({"id": {"type": "id", "value": ""}})", R"({"id": {"type": "id", "value": "x", "y": 1}})",
        R"({"score": {"type": "float", "value": 1.5, "extra": 1}})",
        R"({"project": {"type": "pointer", "value": 1, "to": "other.Type"}})",
        R"({"score": {"type": "float", "value": 1.5, "to": "records_test.Project"}})"}) {
    EXPECT_THROW(Build::from_json(bad), InvalidArgument) << bad;
  }
  EXPECT_EQ(Build::from_json(
                R"({"project": {"type": "pointer", "value": 7, "to": "records_test.Project"}})")
                ->project.oid(),
            Oid(7));
}

// Bytes in a record's JSON are base64 as to_json writes it, as in {"$bytes": ...} (json.h): the
// record form's own decoder took "YR==" for "a" and stopped reading at the first "=".
TEST_F(RecordTest, FromJsonTakesOnlyCanonicalBase64) {
  EXPECT_EQ(Project::from_json(R"({"git_uri": {"type": "bytes", "value": "YQ=="}})")->git_uri,
            Bytes{"a"});
  for (const char* bad : {"YR==", "YQ=x", "YWJ=", "Y===", "YQ", "Y Q="}) {
    std::string text = std::string(R"({"git_uri": {"type": "bytes", "value": ")") + bad + "\"}}";
    EXPECT_THROW(Project::from_json(text), InvalidArgument) << bad;
  }
}

TEST_F(RecordTest, LockNeverStealsAndUnlockReleasesOnlyItsOwn) {
  auto p = Project::create({{"name", "locked"}});
  auto other = Project::load(p->id(), {.cache = false});  // the same object (identity)
  EXPECT_TRUE(p->lock({.ttl = std::chrono::milliseconds(300)}));
  EXPECT_FALSE(p->lock());  // not re-entrant, never taken over
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(p->lock({.blocking = true, .wait_timeout = std::chrono::milliseconds(50)}));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(45));
  {
    auto guard = p->lock_context();
    EXPECT_FALSE(guard.acquired());
  }
  // The failed guard did not release the lock.
  EXPECT_FALSE(p->lock());
  EXPECT_TRUE(p->lock({.blocking = true}));  // after the first expires
  EXPECT_TRUE(p->unlock());
  {
    auto guard = p->lock_context({.ttl = std::chrono::seconds(5)});
    EXPECT_TRUE(guard.acquired());
    EXPECT_FALSE(p->lock());
  }
  EXPECT_TRUE(p->lock());
  EXPECT_TRUE(p->unlock());
  EXPECT_FALSE(p->unlock());
}

// Saves and removals under lock() are fenced: once the lock has expired and someone else has
// taken it, the old holder's save is refused instead of overwriting the new holder's work.
TEST_F(RecordTest, ASaveUnderALockThatWasLostIsRefused) {
  auto p = Project::create({{"name", "v1"}});
  ASSERT_TRUE(p->lock({.ttl = std::chrono::milliseconds(300)}));
  p->name = "v2";
  p->save();  // held: saved
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  auto other = Project::make({{"name", "theirs"}}, {.id = p->id()});
  ASSERT_TRUE(other->lock()) << "the first lock did not expire";
  other->save();
  p->name = "v3";
  EXPECT_THROW(p->save(), LockLost);
  EXPECT_THROW(p->remove(), LockLost);
  EXPECT_EQ(Project::load(p->id(), {.cache = false})->name, "theirs");
  EXPECT_TRUE(other->unlock());
  // Without a lock, saves are not fenced.
  EXPECT_FALSE(p->unlock());
  p->name = "v4";
  p->save();
  EXPECT_EQ(Project::load(p->id(), {.cache = false})->name, "v4");
  // The same under a lock_context() guard, until it is released.
  {
    auto guard = p->lock_context({.ttl = std::chrono::milliseconds(300)});
    ASSERT_TRUE(guard.acquired());
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    ASSERT_TRUE(other->lock());
    p->name = "v5";
    EXPECT_THROW(p->save(), LockLost);
    EXPECT_TRUE(other->unlock());
  }
  p->save();
  EXPECT_EQ(Project::load(p->id(), {.cache = false})->name, "v5");
  // unlock() of an expired lock() leaves the fence of a guard taken since.
  ASSERT_TRUE(p->lock({.ttl = std::chrono::milliseconds(300)}));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  {
    auto guard = p->lock_context({.ttl = std::chrono::milliseconds(300)});
    ASSERT_TRUE(guard.acquired());
    EXPECT_FALSE(p->unlock());
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    ASSERT_TRUE(other->lock());
    p->name = "v6";
    EXPECT_THROW(p->save(), LockLost) << "unlock() dropped the guard's fence";
    EXPECT_TRUE(other->unlock());
  }
}

// A save with dependencies under a lock already lost writes nothing: not even the dependencies.
TEST_F(RecordTest, ASaveWithDependenciesUnderALostLockWritesNothing) {
  Node::set_type_repository(repo);
  auto a = Node::create({{"label", "a"}});
  ASSERT_TRUE(a->lock({.ttl = std::chrono::milliseconds(300)}));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  auto theirs = Node::make({{"label", "theirs"}}, {.id = a->id()});
  ASSERT_TRUE(theirs->lock());
  a->next = Node::make({{"label", "b"}});
  EXPECT_THROW(a->save({.dependencies = true}), LockLost);
  EXPECT_FALSE(a->next->saved());
  EXPECT_EQ(Node::list().size(), 1u);
  EXPECT_TRUE(theirs->unlock());
  Node::set_type_repository(nullptr);
}

// A record id may be as long as a key (1024 bytes); its lock name adds the type, so a long id is
// named by its hash: the lock still works, and two long ids that share a prefix are two locks.
TEST_F(RecordTest, RecordsWithTheLongestIdsCanBeLocked) {
  std::string a_id = std::string(max_key_length - 1, 'i') + "a";
  std::string b_id = std::string(max_key_length - 1, 'i') + "b";
  auto a = Project::create({{"name", "long"}}, {.id = a_id});
  auto b = Project::create({{"name", "long"}}, {.id = b_id});
  EXPECT_TRUE(a->lock());
  EXPECT_TRUE(b->lock()) << "two ids with one long prefix share a lock";
  EXPECT_FALSE(a->lock());
  EXPECT_TRUE(a->unlock());
  EXPECT_TRUE(b->unlock());
}

struct ShopOrder : Record<ShopOrder> {
  std::string name;
};
CAIRN_TYPE(ShopOrder, "records_test:Order", name);
struct Shop : Record<Shop> {
  std::string name;
};
CAIRN_TYPE(Shop, "records_test", name);

// Every record has a lock of its own: a type holding ':' does not meet another type's id holding
// one, and an id that looks like a hashed one does not meet the id it is the hash of.
TEST_F(RecordTest, LockNamesOfTwoRecordsNeverMeet) {
  auto a = ShopOrder::create({{"name", "a"}}, {.id = "42", .repository = repo});
  auto b = Shop::create({{"name", "b"}}, {.id = "Order:42", .repository = repo});
  EXPECT_TRUE(a->lock());
  EXPECT_TRUE(b->lock()) << "\"records_test:Order\" 42 and \"records_test\" Order:42";
  std::string long_id(max_key_length, 'L');
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(long_id.data()), long_id.size(), digest);
  std::string hash_id = "sha256:";
  for (unsigned char byte : digest)
    hash_id += fmt::format("{:02x}", byte);
  auto l = Shop::create({{"name", "l"}}, {.id = long_id, .repository = repo});
  auto h = Shop::create({{"name", "h"}}, {.id = hash_id, .repository = repo});
  EXPECT_TRUE(l->lock());
  EXPECT_TRUE(h->lock()) << "an id that is another id's hash";
  // The names, as a person sees them in the store.
  EXPECT_EQ(detail::lock_name(ShopOrder::spec(), "42"), "cairn.record:records_test%3AOrder:42");
  EXPECT_EQ(detail::lock_name(Shop::spec(), "Order:42"), "cairn.record:records_test:Order:42");
  EXPECT_EQ(detail::lock_name(Shop::spec(), long_id), "cairn.record:records_test:" + hash_id);
  EXPECT_TRUE(a->unlock());
  EXPECT_TRUE(b->unlock());
  EXPECT_TRUE(l->unlock());
  EXPECT_TRUE(h->unlock());
}

struct LongNamed : Record<LongNamed> {
  std::string name;
  static void describe(Schema<LongNamed>& s) { s.index("name"); }
};
CAIRN_TYPE(LongNamed,
           "records_test."
           "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
           "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
           "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL",
           name);

// A type name of a legal length can leave no room for its index's store type: that is said when
// the type is first used, naming the field, not at every save as a type nobody wrote.
TEST_F(RecordTest, AnIndexWhoseStoreTypeWouldBeTooLongIsRefusedUpFront) {
  try {
    LongNamed::create({{"name", "x"}}, {.repository = repo});
    ADD_FAILURE() << "saved";
  } catch (const InvalidArgument& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("LLL.name: its index entries"), std::string::npos) << what;
  }
}

struct Job : Record<Job> {
  std::string name;
  StreamField log;
};
CAIRN_TYPE(Job, "records_test.Job", name, log);

// A store that, after the first commit carrying a lock check, lets that lock expire and has
// someone else take it: a holder paused between two commits of one save.
class LockThiefStore final : public OverMemoryStore {
 public:
  std::uint64_t commit(const CommitRequest& r) override {
    std::uint64_t csn = ForwardingStore::commit(r);
    if (!r.locks.empty() && !stolen) {
      stolen = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      taken = inner_->lock(LockRequest{r.locks[0].name, "thief", std::chrono::seconds(10), {}})
                  .has_value();
    }
    return csn;
  }
  bool stolen = false;
  bool taken = false;
};

// Bytes appended before a record's first save are written after the record, in a commit of
// their own: fenced like every other, so a holder whose lock was taken over between the two
// does not write them.
TEST_F(RecordTest, StreamBytesWaitingForTheFirstSaveAreFenced) {
  auto owned = std::make_unique<LockThiefStore>();
  LockThiefStore& store = *owned;
  auto fenced = std::make_shared<Repository>(Database(std::move(owned)));
  auto job = Job::make({{"name", "j"}}, {.id = "j", .repository = fenced});
  ASSERT_TRUE(job->lock({.ttl = std::chrono::milliseconds(100)}));
  job->append("log", "mine");
  EXPECT_THROW(job->save(), LockLost);
  ASSERT_TRUE(store.taken) << "the lock was not taken over";
  EXPECT_EQ(job->read("log"), "mine") << "the bytes wait in the object, stored nowhere";
  // Read again from the store: the stream is there, empty.
  EXPECT_EQ(Job::load("j", {.cache = false, .repository = fenced})->read("log"), "");
}

// A store whose commits that read something conflict for `window` once armed, as they would
// while other writers kept saving the same record.
class BusyRecordStore final : public OverMemoryStore {
 public:
  std::uint64_t commit(const CommitRequest& r) override {
    if (armed && !r.reads.empty()) {
      auto now = std::chrono::steady_clock::now();
      if (!busy_since) busy_since = now;
      if (now - *busy_since < window) {
        ++conflicts;
        throw ConflictError("busy", {r.reads.front().oid});
      }
    }
    return ForwardingStore::commit(r);
  }
  bool armed = false;
  std::chrono::milliseconds window{5};
  std::optional<std::chrono::steady_clock::time_point> busy_since;
  int conflicts = 0;
};

// A save or removal that conflicts waits before it tries again, as transaction() does (jittered,
// doubling from retry_delay). Retried at once, all max_retries + 1 attempts fell within a few
// milliseconds of contention, and savers of one busy record gave up with ConflictError.
TEST_F(RecordTest, SavesAndRemovalsBackOffBeforeTheyRetry) {
  auto owned = std::make_unique<BusyRecordStore>();
  BusyRecordStore& store = *owned;
  DatabaseOptions options;
  options.retry_delay = std::chrono::milliseconds(1);
  options.max_retry_delay = std::chrono::milliseconds(20);
  auto busy = std::make_shared<Repository>(Database(std::move(owned), options));
  auto p = Project::make({{"name", "v1"}}, {.id = "p", .repository = busy});
  p->save();
  store.armed = true;
  p->name = "v2";
  ASSERT_NO_THROW(p->save());
  EXPECT_GT(store.conflicts, 0);
  EXPECT_EQ(Project::load("p", {.cache = false, .repository = busy})->name, "v2");

  store.busy_since.reset();
  store.conflicts = 0;
  ASSERT_NO_THROW(EXPECT_EQ(p->remove(), 1u));
  EXPECT_GT(store.conflicts, 0);
  EXPECT_EQ(Project::try_load("p", {.cache = false, .repository = busy}), nullptr);

  // Past max_retries it still gives up, with ConflictError, having changed nothing.
  store.window = std::chrono::hours(1);
  store.busy_since.reset();
  store.conflicts = 0;
  auto q = Project::make({{"name", "q"}}, {.id = "q", .repository = busy});
  EXPECT_THROW(q->save(), ConflictError);
  EXPECT_EQ(store.conflicts, options.max_retries + 1);
  EXPECT_EQ(Project::try_load("q", {.cache = false, .repository = busy}), nullptr);
}

// A store that is replaced by an empty one, as a memory server started again, right after it
// hands out the next oid (`at_next_oid`), or at the next commit. With `same_next`, the new one
// hands out that same oid next.
class RestartingStore final : public OverMemoryStore {
 public:
  Oid new_oids(std::uint32_t count) override {
    Oid first = ForwardingStore::new_oids(count);
    if (at_next_oid) {
      at_next_oid = false;
      restart(same_next ? first.value() : 1);
    }
    return first;
  }
  std::uint64_t commit(const CommitRequest& r) override {
    if (at_next_commit) {
      at_next_commit = false;
      restart(1);
    }
    return ForwardingStore::commit(r);
  }
  bool at_next_oid = false;
  bool at_next_commit = false;
  bool same_next = false;

 private:
  void restart(std::uint64_t next) {
    inner_ = make_memory_store();
    if (next > 1) inner_->new_oids(static_cast<std::uint32_t>(next - 1));
  }
};

// A new record's oid, taken before the store started again without its data, was reused on a
// retry: the save conflicted until it gave up, or (when the new run handed the same oid to an
// index entry) failed with InvalidArgument for naming an oid twice.
TEST_F(RecordTest, ANewRecordsSaveAcrossARestartOfTheStoreTakesANewOid) {
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    auto owned = std::make_unique<RestartingStore>();
    RestartingStore& store = *owned;
    auto restarting = std::make_shared<Repository>(Database(std::move(owned)));
    Person::make({{"name", "first"}, {"age", 1}}, {.repository = restarting})->save();
    store.at_next_commit = round == 0;
    store.at_next_oid = round > 0;
    store.same_next = round == 2;
    auto p = Person::make({{"name", "harry"}, {"house_name", "G"}, {"age", 11}},
                          {.id = "harry", .repository = restarting});
    ASSERT_NO_THROW(p->save());
    EXPECT_EQ(Person::load("harry", {.cache = false, .repository = restarting})->age, 11);
    EXPECT_EQ(Person::find(restarting).where("age", 11).count(), 1u);
    EXPECT_EQ(Person::find(restarting).where("house_name", "G").count(), 1u);
  }
}

// unlock() releases the lock lock() took even if the record's id changed since.
TEST_F(RecordTest, UnlockReleasesTheLockTakenUnderAnEarlierId) {
  auto p = Project::make({{"name", "renamed"}}, {.id = "before"});
  ASSERT_TRUE(p->lock());
  p->set("id", Value("after"));
  EXPECT_TRUE(p->unlock());
  EXPECT_TRUE(Project::make({}, {.id = "before"})->lock()) << "the lock stayed held";
}

TEST_F(RecordTest, ByteStreamAppendsWithoutRewritingTheRecord) {
  auto job = Job::make({{"name", "build"}}, {.repository = repo});
  job->append("log", "before save;");
  EXPECT_EQ(job->read("log"), "before save;");
  job->save();
  Oids oids{*job->oid()};
  std::uint64_t version = repo->store().load(oids).objects[0].version;
  job->append("log", " one");
  job->append("log", " two");
  EXPECT_EQ(repo->store().load(oids).objects[0].version, version);  // the record is untouched
  auto again = Job::load(job->id(), {.cache = false, .repository = repo});
  EXPECT_EQ(again->read("log"), "before save; one two");
  EXPECT_THROW(job->append("name", "x"), InvalidArgument);
}

// A removed record saved again never refers to its old stream, which a pack drops.
TEST_F(RecordTest, ARemovedRecordSavedAgainStartsANewStream) {
  for (bool appended_between : {false, true}) {
    SCOPED_TRACE(appended_between);
    auto job = Job::make({{"name", "build"}}, {.id = "j", .repository = repo});
    job->save();
    job->append("log", "hello");
    Oid old_head = *job->log.head();
    EXPECT_EQ(job->remove(), 1u);
    repo->store().pack();
    if (appended_between) job->append("log", "after;");
    job->save();
    ASSERT_TRUE(job->log.head().has_value());
    EXPECT_NE(*job->log.head(), old_head);
    std::string expected = appended_between ? "after;" : "";
    EXPECT_EQ(job->read("log"), expected);
    job->append("log", "more");
    auto again = Job::load("j", {.cache = false, .repository = repo});
    EXPECT_EQ(again->read("log"), expected + "more");
    EXPECT_EQ(job->remove(), 1u);
    repo->store().pack();
  }
}

TEST_F(RecordTest, StackRecordsAreRefusedWithAClearError) {
  Project p;
  EXPECT_THROW(p.save(), InvalidArgument);
}

}  // namespace
}  // namespace cairn::testing
