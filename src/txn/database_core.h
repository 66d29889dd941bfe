// DatabaseCore: what a Database and its connections share: the store, the options, the counts
// behind DatabaseStats and the pool of idle connections that transaction() and view() reuse.
// Connections hold it by shared_ptr, so it outlives the Database object while they live.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "cairn/database.h"
#include "cairn/store.h"
#include "txn/change_feed.h"
#include "txn/connection_impl.h"
#include "txn/replica_store.h"

namespace cairn::detail {

class DatabaseCore {
 public:
  DatabaseCore(std::unique_ptr<Store> store, DatabaseOptions options);
  DatabaseCore(const DatabaseCore&) = delete;
  DatabaseCore& operator=(const DatabaseCore&) = delete;
  ~DatabaseCore();

  Store& store() { return *store_; }
  // For a remote store: the replica in front of it (store() is that replica); else null.
  ReplicaStore* replica() { return replica_; }
  const DatabaseOptions& options() const { return options_; }
  DatabaseStats stats() const;

  // A new connection with an empty cache.
  std::unique_ptr<ConnectionImpl> make_connection();
  // An idle connection from the pool (or a new one), begun on the newest snapshot.
  std::unique_ptr<ConnectionImpl> take(bool read_only) {
    std::unique_ptr<ConnectionImpl> conn(idle_.exchange(nullptr, std::memory_order_acquire));
    if (!conn) [[unlikely]]
      conn = take_pooled();
    conn->begin_lease(read_only);
    return conn;
  }
  // Ends the lease and pools the connection, or drops it if the pool is full. Never throws.
  void give_back(std::unique_ptr<ConnectionImpl>& conn) noexcept {
    try {
      conn->end_lease();
    } catch (...) {
      conn.reset();  // the store failed while dropping changes: do not reuse this connection
      return;
    }
    ConnectionImpl* none = nullptr;
    if (options_.pool_size > 0 &&
        idle_.compare_exchange_strong(none, conn.get(), std::memory_order_acq_rel)) [[likely]] {
      conn.release();  // owned by idle_ now
      return;
    }
    pool(std::move(conn));
  }

 private:
  std::unique_ptr<Store> store_;
  ReplicaStore* replica_ = nullptr;  // store_ itself, when it is one
  DatabaseOptions options_;
  // For a remote store: commits pushed to us, so connections rarely ask the store what changed.
  std::unique_ptr<ChangeFeed> feed_;
  // take() and give_back() when idle_ has none, or has one already: the pool, under mu_.
  std::unique_ptr<ConnectionImpl> take_pooled();
  void pool(std::unique_ptr<ConnectionImpl> conn) noexcept;

  ConnectionCounters counters_;
  // One idle connection, taken and given back with one atomic exchange each: a thread running
  // transaction after transaction reuses it without the pool's lock. Owned (freed by the
  // destructor, before the store).
  std::atomic<ConnectionImpl*> idle_{nullptr};
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<ConnectionImpl>> pool_;  // last: its connections use the above
};

}  // namespace cairn::detail
