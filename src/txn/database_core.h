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
  // An idle connection, begun on the newest snapshot, leased to the caller until give_back.
  // `slot` says whether the caller now holds the slot (see idle_), which it passes back to
  // give_back. The usual case, inline: the slot's connection, current already.
  ConnectionImpl* take(bool read_only, bool& slot) {
    ConnectionImpl* idle = idle_.exchange(held(), std::memory_order_acquire);
    slot = idle != held();
    if (slot && idle != nullptr && idle->begin_current_lease(read_only)) [[likely]]
      return idle;
    return take_other(slot ? idle : nullptr, read_only, slot);
  }
  // Ends the lease and keeps the connection in the slot (if the caller holds it), in the pool,
  // or drops it if the pool is full. Never throws.
  void give_back(ConnectionImpl* conn, bool slot) noexcept {
    if (slot && options_.pool_size > 0 && conn->end_clean_lease()) [[likely]] {
      // Only the holder writes the slot, so a plain store will do.
      idle_.store(conn, std::memory_order_release);
      return;
    }
    give_back_other(conn, slot);
  }

 private:
  std::unique_ptr<Store> store_;
  ReplicaStore* replica_ = nullptr;  // store_ itself, when it is one
  DatabaseOptions options_;
  // For a remote store: commits pushed to us, so connections rarely ask the store what changed.
  std::unique_ptr<ChangeFeed> feed_;
  // take() and give_back() beyond their usual case.
  ConnectionImpl* take_other(ConnectionImpl* idle, bool read_only, bool slot);
  void give_back_other(ConnectionImpl* conn, bool slot) noexcept;
  // take() and give_back() when idle_ has none, or has one already: the pool, under mu_.
  std::unique_ptr<ConnectionImpl> take_pooled();
  void pool(std::unique_ptr<ConnectionImpl> conn) noexcept;

  ConnectionCounters counters_;
  // One idle connection, for a thread running transaction after transaction without the pool's
  // lock. take() exchanges held() into it, whatever it holds: whoever gets back anything but
  // held() holds the slot until give_back, which stores the connection (or null) there with a
  // plain store, since no one else writes it meanwhile. Others find held() and use the pool.
  // One atomic exchange per transaction. Owns what it holds (freed by the destructor, before
  // the store).
  std::atomic<ConnectionImpl*> idle_{nullptr};
  char held_tag_ = 0;  // its address is held(): never a connection's
  ConnectionImpl* held() const {
    return static_cast<ConnectionImpl*>(const_cast<void*>(static_cast<const void*>(&held_tag_)));
  }
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<ConnectionImpl>> pool_;  // last: its connections use the above
};

}  // namespace cairn::detail
