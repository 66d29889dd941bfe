// Database: the connection pool, and transaction() and view() with their retries.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "cairn/database.h"
#include "cairn/error.h"
#include "store/store_util.h"
#include "txn/backoff.h"
#include "txn/database_core.h"

namespace cairn::detail {

DatabaseCore::DatabaseCore(std::unique_ptr<Store> store, DatabaseOptions options)
    : store_(std::move(store)), options_(options) {
  if (store_->is_remote()) {
    // The replica sits between the connections and the store, and the feed hears of commits
    // from it, after it has applied them (replica_store.h).
    auto replica = std::make_unique<ReplicaStore>(std::move(store_));
    replica_ = replica.get();
    store_ = std::move(replica);
    feed_ = std::make_unique<ChangeFeed>(*store_);
  }
}

DatabaseCore::~DatabaseCore() {
  // While the store lives. No lease is under way, so the slot is not held().
  ConnectionImpl* idle = idle_.exchange(nullptr);
  std::unique_ptr<ConnectionImpl> owned(idle != held() ? idle : nullptr);
}

DatabaseStats DatabaseCore::stats() const {
  DatabaseStats out;
  out.connections = counters_.connections.load();
  out.cached_objects = counters_.cached_objects.load();
  if (replica_ != nullptr) {
    ReplicaStats replica = replica_->stats();
    out.replica_objects = replica.objects;
    out.replica_csn = replica.csn;
    out.replica_pending = replica.pending;
    out.replica_reads = replica.local_loads + replica.local_scans;
  }
  std::lock_guard lk(mu_);
  ConnectionImpl* idle = idle_.load();
  out.pooled_connections = pool_.size() + (idle != nullptr && idle != held() ? 1 : 0);
  return out;
}

std::unique_ptr<ConnectionImpl> DatabaseCore::make_connection() {
  return std::make_unique<ConnectionImpl>(*store_, counters_, options_.cache_size,
                                          options_.cache_bytes, feed_.get());
}

ConnectionImpl* DatabaseCore::take_other(ConnectionImpl* idle, bool read_only, bool slot) {
  std::unique_ptr<ConnectionImpl> conn(idle);
  try {
    if (!conn) conn = take_pooled();
    conn->begin_lease(read_only);
  } catch (...) {
    if (slot) idle_.store(nullptr, std::memory_order_release);  // conn, if any, is dropped
    throw;
  }
  return conn.release();  // the Lease owns it until give_back
}

void DatabaseCore::give_back_other(ConnectionImpl* leased, bool slot) noexcept {
  std::unique_ptr<ConnectionImpl> conn(leased);
  try {
    conn->end_lease();
  } catch (...) {
    conn.reset();  // the store failed while dropping changes: do not reuse this connection
  }
  if (slot) {
    idle_.store(options_.pool_size > 0 ? conn.release() : nullptr, std::memory_order_release);
    return;
  }
  if (conn) pool(std::move(conn));
}

std::unique_ptr<ConnectionImpl> DatabaseCore::take_pooled() {
  {
    std::lock_guard lk(mu_);
    if (!pool_.empty()) {
      std::unique_ptr<ConnectionImpl> conn = std::move(pool_.back());
      pool_.pop_back();
      return conn;
    }
  }
  return make_connection();
}

void DatabaseCore::pool(std::unique_ptr<ConnectionImpl> conn) noexcept {
  std::lock_guard lk(mu_);
  // idle_ holds one: the pool keeps pool_size in all.
  if (pool_.size() + 1 < options_.pool_size) pool_.push_back(std::move(conn));
  // else: conn is destroyed here, its cache with it
}

namespace {

// A connection leased from the pool for one transaction() or view() call.
class Lease {
 public:
  Lease(DatabaseCore& core, bool read_only) : core_(core), conn_(core.take(read_only, slot_)) {}
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease() { core_.give_back(conn_, slot_); }
  ConnectionImpl& operator*() const { return *conn_; }
  ConnectionImpl* operator->() const { return conn_; }

 private:
  DatabaseCore& core_;
  bool slot_ = false;     // set by take(), before conn_
  ConnectionImpl* conn_;  // owned: give_back keeps it in the slot or the pool, or frees it
};

// Before a retry: loads, in one call, what the run a conflict ended had read, so that the next
// run reads it all from one snapshot. Read one round trip at a time from a server, a view of a
// few dozen objects that others keep changing would conflict again almost every time. Only
// after a conflict of this run's own (`conflicts`: the connection's count when it began), and
// only as a help: if the load fails, fn loads the objects itself and meets the failure there.
void prefetch_reads(ConnectionImpl& conn, std::uint64_t conflicts) {
  std::vector<Oid> reads = conn.take_conflicted_reads();
  if (reads.empty() || conn.conflicts() == conflicts) return;
  try {
    conn.prefetch(reads);
  } catch (const Error&) {
  }
}

}  // namespace
}  // namespace cairn::detail

namespace cairn {

using detail::prefetch_reads;

Database::Database(std::unique_ptr<Store> store, DatabaseOptions options) {
  if (!store) throw InvalidArgument("a Database needs a store");
  core_ = std::make_shared<detail::DatabaseCore>(std::move(store), options);
}

Database Database::open(std::string_view url, DatabaseOptions options) {
  return Database(cairn::open(url), options);
}

Database::Database(Database&&) noexcept = default;
Database& Database::operator=(Database&&) noexcept = default;
Database::~Database() = default;

namespace {
[[noreturn, gnu::cold]] void throw_moved_from() {
  throw InvalidArgument("this Database has been moved from");
}
}  // namespace

detail::DatabaseCore& Database::core() const {
  if (!core_) [[unlikely]]
    throw_moved_from();
  return *core_;
}

Store& Database::store() const {
  return core().store();
}
const DatabaseOptions& Database::options() const {
  return core().options();
}
DatabaseStats Database::stats() const {
  return core().stats();
}

namespace {

// Scopes over a store that is not remote: its reads are already local, so there is nothing to
// replicate. The subscription is active, and cancelling it does nothing.
Subscription local_subscription(std::string_view type) {
  if (type.empty()) throw InvalidArgument("a subscription needs a type");
  if (type.size() > max_type_length) {
    throw InvalidArgument(
        fmt::format("type is {} bytes; the limit is {}", type.size(), max_type_length));
  }
  return Subscription([] {});
}

}  // namespace

Subscription Database::subscribe_type(std::string type) {
  if (detail::ReplicaStore* replica = core().replica()) {
    return replica->subscribe_type(std::move(type));
  }
  return local_subscription(type);
}

Subscription Database::subscribe_keys(std::string type, std::string prefix) {
  if (detail::ReplicaStore* replica = core().replica()) {
    return replica->subscribe_keys(std::move(type), std::move(prefix));
  }
  return local_subscription(type);
}

Subscription Database::subscribe_objects(std::vector<Oid> oids) {
  if (detail::ReplicaStore* replica = core().replica()) {
    return replica->subscribe_objects(std::move(oids));
  }
  return Subscription([] {});
}

Connection Database::connect() {
  return Connection(core_, core().make_connection());
}

void Database::run_transaction(detail::CallbackRef<Txn> fn) {
  detail::DatabaseCore& c = core();
  detail::Lease conn(c, false);
  detail::Backoff backoff(c.options());
  for (int retry = 0;; ++retry) {
    std::uint64_t conflicts = conn->conflicts();
    try {
      Txn tx(*conn, conn->lease());
      fn(tx);
      if (conn->conflicts() != conflicts) {
        // fn caught a ConflictError of its own: that aborted what fn had changed before it, so
        // committing now would apply only what came after. The whole of fn runs again instead.
        throw ConflictError(
            fmt::format("conflict on oids {}: the transaction's function caught a ConflictError "
                        "and went on; nothing was committed",
                        oid_list(conn->conflict_oids())),
            conn->conflict_oids());
      }
      conn->commit();
      return;
    } catch (const ConflictError&) {
      if (retry >= c.options().max_retries) throw;
    } catch (...) {
      // After a conflict fn caught and went on from, anything it then threw may come of mixing
      // two snapshots (a reference read in one, followed in the other): the run does not count.
      if (conn->conflicts() == conflicts || retry >= c.options().max_retries) throw;
    }
    backoff.wait(retry);
    conn->abort();  // start again on the newest snapshot
    prefetch_reads(*conn, conflicts);
  }
}

void Database::run_view(detail::CallbackRef<View> fn) {
  detail::DatabaseCore& c = core();
  detail::Lease conn(c, true);
  detail::Backoff backoff(c.options());
  for (int retry = 0;; ++retry) {
    std::uint64_t conflicts = conn->conflicts();
    try {
      View v(*conn, conn->lease());
      fn(v);
      // Everything fn read was one snapshot, nothing to validate; unless fn caught the view's
      // own ConflictError and went on reading from a newer one.
      if (conn->conflicts() == conflicts) return;
    } catch (...) {
      // Not after a conflict of the view's own: fn's business. After one (fn caught it and went
      // on, then failed, perhaps from mixing two snapshots), the run does not count.
      if (conn->conflicts() == conflicts) throw;
    }
    backoff.wait(retry);
    conn->abort();
    prefetch_reads(*conn, conflicts);
  }
}

}  // namespace cairn
