// The FileStore scenarios and their peers: a raw write+fdatasync loop, LMDB and SQLite, each
// doing the same work on the same disk in the same run.
#include <fcntl.h>
#include <fmt/format.h>
#include <lmdb.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include "bench/bench.h"
#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "store/file_format.h"

namespace cairn::bench {

namespace {

using Clock = std::chrono::steady_clock;

const std::string& payload() {
  static const std::string bytes = encode(Value(std::string(100, 'x')));
  return bytes;
}

std::unique_ptr<FileStore> open_store(const std::string& path, FsyncPolicy policy) {
  FileStoreOptions options;
  options.fsync = policy;
  return FileStore::open(path, options);
}

void remove_db(const std::string& path) {
  std::filesystem::remove(path);
  std::filesystem::remove(path + ".lock");
}

// ---- cairn ----

double cairn_commits(const std::string& path, FsyncPolicy policy, int threads,
                     std::uint64_t per_thread) {
  remove_db(path);
  auto db = open_store(path, policy);
  Oid first = db->new_oids(static_cast<std::uint32_t>(threads * per_thread));
  auto start = Clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      CommitRequest req;
      req.writes.push_back(WriteOp{Oid(), "", "", payload()});
      for (std::uint64_t i = 0; i < per_thread; ++i) {
        req.writes[0].oid = Oid(first.value() + static_cast<std::uint64_t>(t) * per_thread + i);
        db->commit(req);
      }
    });
  }
  for (auto& w : workers)
    w.join();
  double rate = static_cast<double>(threads * per_thread) / seconds_since(start);
  db.reset();
  remove_db(path);
  return rate;
}

void fill_store(FileStore& db, std::uint64_t n) {
  Oid first = db.new_oids(static_cast<std::uint32_t>(n));
  CommitRequest req;
  req.writes.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    req.writes.push_back(WriteOp{Oid(first.value() + i), "", "", payload()});
  }
  db.commit(req);
}

// ---- peers ----

// The disk's limit: append a frame-sized record and fdatasync, n times.
double raw_fdatasync(const std::string& path, std::uint64_t n) {
  std::filesystem::remove(path);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError("bench: cannot create " + path);
  std::string record(logfmt::txn_header_size + logfmt::record_size(0, 0, payload().size()) +
                         logfmt::txn_trailer_size,
                     'r');
  auto start = Clock::now();
  for (std::uint64_t i = 0; i < n; ++i) {
    if (::write(fd, record.data(), record.size()) != static_cast<ssize_t>(record.size()) ||
        ::fdatasync(fd) != 0) {
      ::close(fd);
      throw IoError("bench: write/fdatasync failed on " + path);
    }
  }
  double rate = static_cast<double>(n) / seconds_since(start);
  ::close(fd);
  std::filesystem::remove(path);
  return rate;
}

void lmdb_check(int rc, const char* what) {
  if (rc != 0) throw Error(fmt::format("bench: LMDB {}: {}", what, mdb_strerror(rc)));
}

class Lmdb {
 public:
  Lmdb(const std::string& dir, unsigned flags) : dir_(dir) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    lmdb_check(mdb_env_create(&env_), "env_create");
    lmdb_check(mdb_env_set_mapsize(env_, std::size_t{8} << 30), "set_mapsize");
    lmdb_check(mdb_env_open(env_, dir_.c_str(), flags, 0644), "env_open");
    MDB_txn* txn = nullptr;
    lmdb_check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    lmdb_check(mdb_dbi_open(txn, nullptr, 0, &dbi_), "dbi_open");
    lmdb_check(mdb_txn_commit(txn), "txn_commit");
  }
  Lmdb(const Lmdb&) = delete;
  Lmdb& operator=(const Lmdb&) = delete;
  ~Lmdb() {
    mdb_env_close(env_);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  // Puts keys [from, to) in one transaction.
  void put_range(std::uint64_t from, std::uint64_t to) {
    MDB_txn* txn = nullptr;
    lmdb_check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    for (std::uint64_t k = from; k < to; ++k) {
      MDB_val key{sizeof k, &k};
      MDB_val val{payload().size(), const_cast<char*>(payload().data())};
      lmdb_check(mdb_put(txn, dbi_, &key, &val, 0), "put");
    }
    lmdb_check(mdb_txn_commit(txn), "txn_commit");
  }
  MDB_env* env() const { return env_; }
  MDB_dbi dbi() const { return dbi_; }

 private:
  std::string dir_;
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
};

double lmdb_nosync_puts(const std::string& dir, std::uint64_t n) {
  Lmdb db(dir, MDB_NOSYNC);
  auto start = Clock::now();
  for (std::uint64_t k = 1; k <= n; ++k)
    db.put_range(k, k + 1);
  return static_cast<double>(n) / seconds_since(start);
}

void sqlite_check(int rc, sqlite3* db, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    throw Error(fmt::format("bench: SQLite {}: {}", what, sqlite3_errmsg(db)));
  }
}

// SQLite in WAL mode (default synchronous), n rows inserted in one transaction.
double sqlite_wal_batch(const std::string& path, std::uint64_t n) {
  std::filesystem::remove(path);
  sqlite3* db = nullptr;
  sqlite_check(sqlite3_open(path.c_str(), &db), db, "open");
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(db, sqlite3_close);
  sqlite_check(sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr), db,
               "journal_mode");
  sqlite_check(sqlite3_exec(db,
                            "CREATE TABLE objects(oid INTEGER PRIMARY KEY, type TEXT, key TEXT, "
                            "data BLOB)",
                            nullptr, nullptr, nullptr),
               db, "create");
  auto start = Clock::now();
  sqlite_check(sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr), db, "begin");
  sqlite3_stmt* stmt = nullptr;
  sqlite_check(
      sqlite3_prepare_v2(db, "INSERT INTO objects VALUES(?, '', '', ?)", -1, &stmt, nullptr), db,
      "prepare");
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt_guard(stmt, sqlite3_finalize);
  for (std::uint64_t i = 1; i <= n; ++i) {
    sqlite3_bind_int64(stmt, 1, static_cast<sqlite3_int64>(i));
    sqlite3_bind_blob(stmt, 2, payload().data(), static_cast<int>(payload().size()), SQLITE_STATIC);
    sqlite_check(sqlite3_step(stmt), db, "insert");
    sqlite3_reset(stmt);
  }
  sqlite_check(sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr), db, "commit");
  double rate = static_cast<double>(n) / seconds_since(start);
  stmt_guard.reset();
  guard.reset();
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
  return rate;
}

std::vector<std::uint64_t> random_keys(std::uint64_t n, std::uint64_t count) {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::uint64_t> pick(1, n);
  std::vector<std::uint64_t> keys(count);
  for (auto& k : keys)
    k = pick(rng);
  return keys;
}

// ---- scenarios ----

Result durable_commit(Context& ctx) {
  std::uint64_t n = ctx.size(200, 2000);
  ctx.progress(fmt::format("{} durable commits, cairn (fsync=always) and write+fdatasync", n));
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3,
      [&] { return cairn_commits(ctx.dir + "/durable.cairn", FsyncPolicy::always, 1, n); },
      [&] { return raw_fdatasync(ctx.dir + "/raw.log", n); });
  return measured("file.durable_commit", "commits/s", cairn, "raw_fdatasync", peer, 1.2);
}

Result group_commit(Context& ctx) {
  std::uint64_t n = ctx.size(100, 1000);
  ctx.progress(fmt::format("16 threads x {} commits (fsync=batch) vs one durable writer", n));
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3,
      [&] { return cairn_commits(ctx.dir + "/group.cairn", FsyncPolicy::batch, 16, n); },
      [&] { return cairn_commits(ctx.dir + "/single.cairn", FsyncPolicy::batch, 1, n); });
  return measured("file.group_commit_16", "commits/s", cairn, "file.durable_commit", peer, 7);
}

Result nosync_commit(Context& ctx) {
  std::uint64_t n = ctx.size(50'000, 500'000);
  ctx.progress(fmt::format("{} commits, cairn fsync=never vs LMDB MDB_NOSYNC", n));
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3,
      [&] { return cairn_commits(ctx.dir + "/nosync.cairn", FsyncPolicy::never, 1, n); },
      [&] { return lmdb_nosync_puts(ctx.dir + "/lmdb", n); });
  return measured("file.nosync_commit", "commits/s", cairn, "lmdb_nosync", peer, 2);
}

Result bulk(Context& ctx) {
  std::uint64_t n = ctx.size(100'000, 1'000'000);
  ctx.progress(fmt::format("one transaction of {} objects vs SQLite WAL", n));
  std::string path = ctx.dir + "/bulk.cairn";
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 2,
      [&] {
        remove_db(path);
        auto db = open_store(path, FsyncPolicy::batch);
        auto start = Clock::now();
        fill_store(*db, n);
        double rate = static_cast<double>(n) / seconds_since(start);
        db.reset();
        remove_db(path);
        return rate;
      },
      [&] { return sqlite_wal_batch(ctx.dir + "/bulk.sqlite", n); });
  return measured("file.bulk_1m", "objects/s", cairn, "sqlite_wal_batch", peer, 1.5);
}

Result random_load(Context& ctx) {
  std::uint64_t n = ctx.size(100'000, 1'000'000);
  std::uint64_t gets = ctx.size(200'000, 1'000'000);
  ctx.progress(fmt::format("{} random loads of {} objects vs LMDB random gets", gets, n));
  std::string path = ctx.dir + "/load.cairn";
  remove_db(path);
  {
    auto db = open_store(path, FsyncPolicy::never);
    fill_store(*db, n);
  }
  Lmdb lmdb(ctx.dir + "/lmdb", MDB_NOSYNC);
  lmdb.put_range(1, n + 1);
  std::vector<std::uint64_t> keys = random_keys(n, gets);
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3,
      [&] {
        auto db = open_store(path, FsyncPolicy::never);  // cold: a fresh process-side cache
        std::uint64_t found = 0;
        auto start = Clock::now();
        for (std::uint64_t k : keys) {
          Oid oid[] = {Oid(k)};
          found += db->load(oid).objects[0].exists() ? 1 : 0;
        }
        double rate = static_cast<double>(gets) / seconds_since(start);
        if (found != gets) throw Error("bench: random_load missed objects");
        return rate;
      },
      [&] {
        // One read transaction per get, as cairn's load() is one consistent read per call.
        MDB_txn* txn = nullptr;
        lmdb_check(mdb_txn_begin(lmdb.env(), nullptr, MDB_RDONLY, &txn), "txn_begin");
        mdb_txn_reset(txn);
        std::uint64_t found = 0;
        auto start = Clock::now();
        for (std::uint64_t k : keys) {
          lmdb_check(mdb_txn_renew(txn), "txn_renew");
          MDB_val key{sizeof k, &k};
          MDB_val val;
          if (mdb_get(txn, lmdb.dbi(), &key, &val) == 0) {
            std::string copy(static_cast<const char*>(val.mv_data), val.mv_size);
            found += copy.size() == payload().size() ? 1 : 0;
          }
          mdb_txn_reset(txn);
        }
        double rate = static_cast<double>(gets) / seconds_since(start);
        mdb_txn_abort(txn);
        if (found != gets) throw Error("bench: LMDB random gets missed keys");
        return rate;
      });
  remove_db(path);
  return measured("file.random_load", "loads/s", cairn, "lmdb_random_get", peer, 0.5);
}

// Opening a database of n objects, and the index's memory per object once open.
std::pair<double, double> open_and_index(Context& ctx) {
  std::uint64_t n = ctx.size(100'000, 1'000'000);
  ctx.progress(fmt::format("opening a database of {} objects", n));
  std::string path = ctx.dir + "/open.cairn";
  remove_db(path);
  {
    auto db = open_store(path, FsyncPolicy::never);
    fill_store(*db, n);
  }
  double best = 1e9;
  double per_object = 0;
  for (int i = 0; i < (ctx.quick ? 1 : 3); ++i) {
    auto start = Clock::now();
    auto db = open_store(path, FsyncPolicy::never);
    best = std::min(best, seconds_since(start));
    FileStoreInfo info = db->info();
    per_object = static_cast<double>(info.index_bytes) / static_cast<double>(info.objects);
  }
  remove_db(path);
  return {best, per_object};
}

Result open_1m(Context& ctx) {
  return measured("file.open_1m", "s", open_and_index(ctx).first, "limit", 1, 1, true);
}

Result index_bytes(Context& ctx) {
  return measured("memory.index_bytes_per_object", "bytes/object", open_and_index(ctx).second,
                  "limit", 1, 64, true);
}

}  // namespace

std::vector<Scenario> file_scenarios() {
  return {
      {"file.durable_commit", durable_commit},
      {"file.group_commit_16", group_commit},
      {"file.nosync_commit", nosync_commit},
      {"file.bulk_1m", bulk},
      {"file.random_load", random_load},
      {"file.open_1m", open_1m},
      {"memory.index_bytes_per_object", index_bytes},
  };
}

}  // namespace cairn::bench
