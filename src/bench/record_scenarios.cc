// The records layer's scenarios: queries answered from a secondary index.
#include <fmt/format.h>

#include <filesystem>
#include <random>

#include "bench/bench.h"
#include "cairn/codec.h"
#include "cairn/file_store.h"
#include "cairn/record.h"
#include "records/index_key.h"

namespace cairn::bench {

namespace {

using Clock = std::chrono::steady_clock;

struct Reading : Record<Reading> {
  std::string sensor;
  std::int64_t group = 0;
  double value = 0;
  static void describe(Schema<Reading>& s) { s.index("group"); }
};
CAIRN_TYPE(Reading, "bench.Reading", sensor, group, value);

// Writes `count` records of ten per group in large commits, laid out as Record::save() lays them
// out (the record, keyed by its id, and its index entry), which is far quicker to set up than a
// million single saves.
void bulk_load(Store& store, std::uint64_t count) {
  const TypeSpec& spec = Reading::spec();
  const std::string index_type = spec.index_type(spec.at("group"));
  constexpr std::uint64_t batch = 5000;
  for (std::uint64_t done = 0; done < count;) {
    std::uint64_t n = std::min(batch, count - done);
    Oid first = store.new_oids(static_cast<std::uint32_t>(2 * n));
    CommitRequest request;
    for (std::uint64_t i = 0; i < n; ++i) {
      std::uint64_t k = done + i;
      Oid record(first.value() + 2 * i);
      auto group = static_cast<std::int64_t>(k / 10);
      Value::Map state{{"sensor", "s" + std::to_string(k)},
                       {"group", group},
                       {"value", static_cast<double>(k) / 3},
                       {"$gen", spec.generation}};
      request.writes.push_back(
          WriteOp{record, spec.name, "r" + std::to_string(k), encode(Value(std::move(state)))});
      request.writes.push_back(WriteOp{Oid(record.value() + 1), index_type,
                                       *detail::index_key(Value(group), record),
                                       encode(Value(Ref{record, spec.name}))});
    }
    store.commit(request);
    done += n;
  }
}

// An equality query on an indexed field that returns 10 of `records` records, on a FileStore,
// as record objects. Goal: at most 50 µs a query.
Result indexed_eq(Context& ctx) {
  std::uint64_t records = ctx.size(20'000, 1'000'000);
  std::uint64_t queries = ctx.size(2'000, 20'000);
  ctx.progress(fmt::format("{} queries returning 10 of {} records (FileStore)", queries, records));
  FileStoreOptions options;
  options.fsync = FsyncPolicy::never;
  options.log = [](std::string_view) {};
  auto repo =
      std::make_shared<Repository>(Database(FileStore::open(ctx.dir + "/records.cairn", options)));
  bulk_load(repo->store(), records);
  std::mt19937_64 rng(42);
  const std::uint64_t groups = records / 10;
  auto run = [&](std::uint64_t n) {
    std::size_t found = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      auto group = static_cast<std::int64_t>(rng() % groups);
      found += Reading::find(repo).where("group", group).all().size();
    }
    if (found != 10 * n) throw Error("bench: a query did not return its 10 records");
  };
  run(std::min<std::uint64_t>(queries / 10, 1000));  // warm up
  auto start = Clock::now();
  run(queries);
  double micros = seconds_since(start) * 1e6 / static_cast<double>(queries);
  return measured("query.indexed_eq", "us/query", micros, "limit", 1, 50, true);
}

// A record of ten fields of the usual kinds, no indexes.
struct Profile : Record<Profile> {
  std::string name;
  std::string email;
  std::string city;
  std::string bio;
  std::int64_t age = 0;
  std::int64_t visits = 0;
  double score = 0;
  bool active = true;
  std::string plan;
  std::int64_t updated = 0;
};
CAIRN_TYPE(Profile, "bench.Profile", name, email, city, bio, age, visits, score, active, plan,
           updated);

// The embedded default: durable commits, the batch policy.
FileStoreOptions durable() {
  FileStoreOptions options;
  options.log = [](std::string_view) {};
  return options;
}

// save() of one 10-field record, changing one field each time, against commits of the same
// stored bytes (type, key, encoded state) made directly on the same kind of store: a FileStore
// with its default, durable policy, as a record's repository has by default.
Result save_10(Context& ctx) {
  std::uint64_t n = ctx.size(2'000, 20'000);
  ctx.progress(fmt::format("{} saves of a 10-field record vs raw commits of its bytes", n));
  auto saves = [&] {
    auto repo = std::make_shared<Repository>(
        Database(FileStore::open(ctx.dir + "/saves.cairn", durable())));
    auto p = Profile::make(
        [](Profile& r) {
          r.name = "Harry Potter";
          r.email = "harry@hogwarts.example";
          r.city = "Little Whinging";
          r.bio = "The boy who lived.";
          r.age = 17;
          r.plan = "wizard";
        },
        {.id = "harry", .repository = repo});
    auto start = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
      p->updated = static_cast<std::int64_t>(i);
      p->save();
    }
    double rate = static_cast<double>(n) / seconds_since(start);
    Oid one[] = {*p->oid()};
    StoredObject stored = repo->store().load(one).objects.at(0);
    p.reset();
    repo.reset();
    std::filesystem::remove(ctx.dir + "/saves.cairn");
    std::filesystem::remove(ctx.dir + "/saves.cairn.lock");
    return std::make_pair(rate, stored);
  };
  auto [cairn, stored] = saves();
  auto raw = [&, stored = stored] {
    auto store = FileStore::open(ctx.dir + "/raw.cairn", durable());
    CommitRequest request;
    request.writes.push_back(WriteOp{store->new_oids(1), stored.type, stored.key, stored.data});
    auto start = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i)
      store->commit(request);
    double rate = static_cast<double>(n) / seconds_since(start);
    store.reset();
    std::filesystem::remove(ctx.dir + "/raw.cairn");
    std::filesystem::remove(ctx.dir + "/raw.cairn.lock");
    return rate;
  };
  double peer = raw();
  auto [again, unused] = saves();
  (void)unused;
  return measured("record.save_10", "saves/s", std::max(cairn, again), "file_store_commit",
                  std::max(peer, raw()), 0.8);
}

}  // namespace

std::vector<Scenario> record_scenarios() {
  return {{"query.indexed_eq", indexed_eq}, {"record.save_10", save_10}};
}

}  // namespace cairn::bench
