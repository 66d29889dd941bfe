// ChangeFeed: the commits a store reports through subscribe(), kept so that connections can
// learn what changed since their snapshot without asking the store. For a remote store this
// turns the round trip of every sync(), view() and transaction() start into a lookup in memory,
// and it is how pushed invalidations reach the connection caches.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "cairn/store.h"

namespace cairn::detail {

class ChangeFeed {
 public:
  // Subscribes to `store`; keeps at most `capacity` commits (older ones are forgotten, and
  // questions about them go to the store). CSNs must count commits one by one (every store's
  // do): a commit reported after a gap makes the feed forget what came before it.
  explicit ChangeFeed(Store& store, std::size_t capacity = 65536);

  // The oids changed after `csn`, up to the newest commit the feed has seen, if the feed knows
  // every commit after `csn`, has seen at least commit `at_least` and the store is hearing of
  // commits as they happen (Store::hears_commits); otherwise nullopt (ask the store).
  std::optional<Changes> changes_since(std::uint64_t csn, std::uint64_t at_least) const;

  std::uint64_t latest() const;

  // A commit of this process: from now on the feed answers only once it has seen it, so a
  // transaction or view that starts after a commit returned always sees that commit (read your
  // own writes), even before its push arrives.
  void note_own_commit(std::uint64_t csn) const;

 private:
  void on_commit(std::uint64_t csn, std::span<const Oid> oids);

  const Store& store_;
  mutable std::mutex mu_;
  std::size_t capacity_;
  std::uint64_t known_after_ = 0;  // every commit with a CSN above this is in log_ (or newer)
  std::uint64_t latest_ = 0;
  mutable std::uint64_t own_ = 0;  // the newest commit made through this process's connections
  std::deque<std::pair<std::uint64_t, std::vector<Oid>>> log_;
  Subscription subscription_;  // last: unsubscribes before the members above go
};

}  // namespace cairn::detail
