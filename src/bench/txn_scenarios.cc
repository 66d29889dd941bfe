// The object layer's scenarios: reads of cached objects, and what a transaction adds to a
// store's own commit.
#include <fmt/format.h>

#include "bench/bench.h"
#include "cairn/codec.h"
#include "cairn/database.h"
#include "cairn/error.h"

namespace cairn::bench {

namespace {

using Clock = std::chrono::steady_clock;

// Reads of objects already in the cache: get(oid) and its state, in a connection and in a view,
// one thread. The slower of the two is reported.
Result cached_read(Context& ctx) {
  std::uint64_t reads = ctx.size(2'000'000, 20'000'000);
  constexpr std::uint32_t objects = 1000;
  ctx.progress(fmt::format("{} reads of {} cached objects, connection and view", reads, objects));
  Database db(make_memory_store());
  Oid first;
  {
    Connection conn = db.connect();
    for (std::uint32_t i = 0; i < objects; ++i) {
      Object o = conn.create(Value(std::int64_t{i}));
      if (i == 0) first = o.oid();
    }
    conn.commit();
  }
  auto read_loop = [&](auto& source) {
    std::int64_t sum = 0;
    for (std::uint32_t i = 0; i < objects; ++i)  // warm the cache
      sum += source.get(Oid(first.value() + i)).get().as_int();
    auto start = Clock::now();
    for (std::uint64_t i = 0; i < reads; ++i) {
      sum += source.get(Oid(first.value() + i % objects)).get().as_int();
    }
    double rate = static_cast<double>(reads) / seconds_since(start);
    if (sum < 0) throw Error("bench: impossible sum");
    return rate;
  };
  Connection conn = db.connect();
  double in_connection = read_loop(conn);
  double in_view = db.view([&](View& v) { return read_loop(v); });
  return measured("view.cached_read", "reads/s", std::min(in_connection, in_view), "limit", 1,
                  10'000'000);
}

// Single-object transactions through Database::transaction against the same commits made
// directly on a MemoryStore. Goal: at most 15% slower (ratio >= 0.87).
Result commit_overhead(Context& ctx) {
  std::uint64_t n = ctx.size(100'000, 1'000'000);
  ctx.progress(fmt::format("{} one-object transactions vs raw MemoryStore commits", n));
  auto raw = [&] {
    auto store = make_memory_store();
    Oid oid = store->new_oids(1);
    CommitRequest req;
    req.writes.push_back(WriteOp{oid, "", "", encode(Value(std::int64_t{0}))});
    auto start = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
      req.writes[0].data = encode(Value(static_cast<std::int64_t>(i)));
      store->commit(req);
    }
    return static_cast<double>(n) / seconds_since(start);
  };
  auto txn = [&] {
    Database db(make_memory_store());
    Oid oid = db.transaction([](Txn& tx) { return tx.create(Value(std::int64_t{0})).oid(); });
    auto start = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
      db.transaction([&](Txn& tx) { tx.get(oid).set(Value(static_cast<std::int64_t>(i))); });
    }
    return static_cast<double>(n) / seconds_since(start);
  };
  double cairn = 0;
  double peer = 0;
  for (int i = 0; i < (ctx.quick ? 1 : 3); ++i) {
    cairn = std::max(cairn, txn());
    peer = std::max(peer, raw());
  }
  return measured("txn.commit_overhead", "commits/s", cairn, "memory_store_commit", peer, 0.87);
}

}  // namespace

std::vector<Scenario> txn_scenarios() {
  return {{"view.cached_read", cached_read}, {"txn.commit_overhead", commit_overhead}};
}

}  // namespace cairn::bench
