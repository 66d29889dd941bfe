// ListenerRegistry: the commit listeners of one store, called in CSN order.
//
// Each commit, once applied, calls notify(csn, oids) after releasing the store's data lock. The
// registry runs notifications strictly in CSN order (commit N+1 waits for commit N's listeners)
// without holding any store lock, so a listener may read the store — but it must not commit to
// it, since that commit would wait for the turn the listener itself holds.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>

#include "cairn/store.h"

namespace cairn {

class ListenerRegistry {
 public:
  // `last_csn`: the CSN of the newest commit already made (notifications start after it).
  explicit ListenerRegistry(std::uint64_t last_csn = 0) : last_notified_(last_csn) {}

  Subscription add(CommitListener listener);

  // Sets the CSN after which notifications start; call before the first notify().
  void start_after(std::uint64_t csn) {
    std::lock_guard lk(turn_mu_);
    last_notified_ = csn;
  }

  // Calls every active listener for commit `csn`, after those of every earlier commit.
  // Exceptions from listeners are swallowed: the commit has already happened.
  void notify(std::uint64_t csn, std::span<const Oid> oids);

 private:
  struct Entry {
    std::recursive_mutex mu;  // held while the listener runs; cancel takes it too
    bool active = true;
    CommitListener fn;
  };
  struct Shared {
    std::mutex mu;
    std::uint64_t next_id = 0;
    std::map<std::uint64_t, std::shared_ptr<Entry>> entries;
  };

  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
  std::mutex turn_mu_;
  std::condition_variable turn_cv_;
  std::uint64_t last_notified_;
};

}  // namespace cairn
