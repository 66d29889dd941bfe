// ReplicaStore: a Store decorator that keeps a local replica of the objects a client subscribed
// to (a whole type, the objects of a type whose key starts with a prefix, or single oids), so
// that reads of them are answered from memory instead of by a round trip. The Database puts one
// in front of every remote store (Store::is_remote()); Database::subscribe_* create the scopes.
//
// Consistency: every state in the replica is its object's state at one CSN, the replica's CSN C.
// Commits arrive through the inner store's subscribe() in CSN order; for commit N the replica
// drops the states N changed (the rest are current at both N-1 and N), then tells its own
// listeners (the Database's ChangeFeed), then moves C to N: no connection learns of a commit
// before the replica reflects it, and none is handed a CSN its ChangeFeed has not reached.
// A refresher thread reloads what was dropped, and checks every changed oid it does not hold
// while a type or key scope is active (the object may have just entered the scope). A state
// loaded at CSN L enters the replica only once C >= L and the oid did not change in (L, C].
//
// The replica answers a load (or a scan or find_key a ready scope covers) only while C is at
// least every CSN this store has reported to its callers (load, commit and changes_since
// results): a caller never holds a snapshot newer than the replica, so a state from the replica
// is never older than what the caller has already seen. Otherwise the call goes to the inner
// store. Without scopes every call goes to the inner store unchanged.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cairn/store.h"
#include "store/listeners.h"

namespace cairn::detail {

struct ReplicaStats {
  std::size_t scopes = 0;         // active subscriptions
  std::size_t objects = 0;        // states held (absent subscribed oids included)
  std::size_t pending = 0;        // oids waiting to be (re)loaded
  std::uint64_t csn = 0;          // the CSN every held state is current at
  std::uint64_t local_loads = 0;  // load() calls answered from memory
  std::uint64_t local_scans = 0;  // scan_type/scan_keys/find_key calls answered from memory
};

class ReplicaStore final : public Store {
 public:
  explicit ReplicaStore(std::unique_ptr<Store> inner);
  ReplicaStore(const ReplicaStore&) = delete;
  ReplicaStore& operator=(const ReplicaStore&) = delete;
  ~ReplicaStore() override;

  // Each returns once the scope's initial contents are in the replica, and stops replicating
  // them when the Subscription is destroyed or reset. Throw InvalidArgument for an empty or
  // over-long type, and what the inner store throws while loading.
  Subscription subscribe_type(std::string type);
  Subscription subscribe_keys(std::string type, std::string prefix);
  Subscription subscribe_objects(std::vector<Oid> oids);

  ReplicaStats stats() const;
  Store& inner() const { return *inner_; }

  LoadResult load(std::span<const Oid> oids) override;
  std::uint64_t commit(const CommitRequest& request) override;
  Changes changes_since(std::uint64_t csn) override;
  Subscription subscribe(CommitListener listener) override;
  Oid new_oids(std::uint32_t count) override { return inner_->new_oids(count); }
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override;
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override;
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override;
  std::optional<std::uint64_t> lock(const LockRequest& request) override {
    return inner_->lock(request);
  }
  bool unlock(std::string_view name, std::string_view owner) override {
    return inner_->unlock(name, owner);
  }
  bool renew(std::string_view name, std::string_view owner,
             std::chrono::milliseconds ttl) override {
    return inner_->renew(name, owner, ttl);
  }
  bool is_remote() const override { return inner_->is_remote(); }
  bool hears_commits() const override { return inner_->hears_commits(); }
  PackStats pack() override { return inner_->pack(); }

  class State;  // the replica itself (replica_store.cc)

 private:
  struct ScopeSpec;
  Subscription add_scope(ScopeSpec spec);
  // Whether the replica may answer reads in its scopes itself (s.mu held).
  bool current(const State& s) const;
  void reported(std::uint64_t csn);

  std::unique_ptr<Store> inner_;
  std::shared_ptr<State> state_;
  std::atomic<std::uint64_t> reported_{0};  // the highest CSN returned to a caller
  ListenerRegistry listeners_;              // ours, told after the replica applied a commit
  std::thread refresher_;
  Subscription inner_subscription_;  // last: its listener uses everything above
};

}  // namespace cairn::detail
