// ListenerRegistry: the commit listeners of one store, called in CSN order.
//
// Each commit, once applied (and durable), calls notify(csn, oids) after releasing the store's
// data lock. Listeners see commits strictly in CSN order, one at a time, without any store lock
// held, so a listener may read the store — but it must not commit to it. CSNs must reach
// notify() without gaps. The notifying threads do not wait for one another: a commit whose
// turn has not come is queued, and whichever thread is delivering delivers it in order (so a
// commit may return before its own listeners have run, when another thread is delivering).
// This keeps concurrent committers from waking each other once per commit.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "cairn/store.h"

namespace cairn {

class ListenerRegistry {
 public:
  // `last_csn`: the CSN of the newest commit already made (notifications start after it).
  explicit ListenerRegistry(std::uint64_t last_csn = 0) : last_notified_(last_csn) {}

  Subscription add(CommitListener listener);

  // Sets the CSN after which notifications start: before the first notify(), or between
  // notifications by a store whose CSNs have gaps (commits by other processes, which it does not
  // notify), from its one delivering thread.
  void start_after(std::uint64_t csn) {
    std::lock_guard lk(turn_mu_);
    last_notified_ = csn;
  }

  // Calls (now, or soon on the delivering thread) every active listener for commit `csn`,
  // after those of every earlier commit. Exceptions from listeners are swallowed: the commit
  // has already happened.
  void notify(std::uint64_t csn, std::span<const Oid> oids);

 private:
  struct Entry {
    std::recursive_mutex mu;  // held while the listener runs; cancel takes it too
    bool active = true;
    CommitListener fn;
  };
  // Copied on write: add and cancel are rare, every commit reads the list.
  using EntryList = std::vector<std::shared_ptr<Entry>>;
  struct Shared {
    std::mutex mu;
    std::shared_ptr<const EntryList> entries = std::make_shared<const EntryList>();
    // Whether `entries` is empty, readable without mu: most stores have no listener, and their
    // commits then skip the lock. (A listener added before a commit's lock is taken is seen:
    // the store's own lock orders the two.)
    std::atomic<bool> none{true};
  };

  void deliver(std::uint64_t csn, std::span<const Oid> oids);

  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
  std::mutex turn_mu_;  // guards the three below
  std::map<std::uint64_t, std::vector<Oid>> pending_;
  bool delivering_ = false;
  std::uint64_t last_notified_;
};

}  // namespace cairn
