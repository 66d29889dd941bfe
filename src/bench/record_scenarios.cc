// The records layer's scenarios: queries answered from a secondary index.
#include <fmt/format.h>

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

}  // namespace

std::vector<Scenario> record_scenarios() {
  return {{"query.indexed_eq", indexed_eq}};
}

}  // namespace cairn::bench
