// Commit listeners in CSN order (see listeners.h).
#include "store/listeners.h"

#include <vector>

namespace cairn {

Subscription ListenerRegistry::add(CommitListener listener) {
  auto entry = std::make_shared<Entry>();
  entry->fn = std::move(listener);
  {
    std::lock_guard lk(shared_->mu);
    auto entries = std::make_shared<EntryList>(*shared_->entries);
    entries->push_back(entry);
    shared_->entries = std::move(entries);
    shared_->none.store(false, std::memory_order_release);
  }
  std::weak_ptr<Shared> weak = shared_;
  return Subscription([weak, entry] {
    // After this returns the listener is not running and never runs again (unless this is
    // called from inside the listener itself, which the recursive mutex allows).
    {
      std::lock_guard lk(entry->mu);
      entry->active = false;
    }
    if (auto shared = weak.lock()) {
      std::lock_guard lk(shared->mu);
      auto entries = std::make_shared<EntryList>(*shared->entries);
      std::erase(*entries, entry);
      shared->none.store(entries->empty(), std::memory_order_release);
      shared->entries = std::move(entries);
    }
  });
}

void ListenerRegistry::notify(std::uint64_t csn, std::span<const Oid> oids) {
  std::unique_lock turn(turn_mu_);
  if (!delivering_ && pending_.empty() && csn == last_notified_ + 1) {
    // Its turn has come and nobody is delivering (the usual case): deliver it from the caller's
    // span, without queueing a copy.
    delivering_ = true;
    turn.unlock();
    deliver(csn, oids);
    turn.lock();
    last_notified_ = csn;
  } else {
    pending_.emplace(csn, std::vector<Oid>(oids.begin(), oids.end()));
    if (delivering_) return;  // the thread delivering will reach this commit in its turn
    delivering_ = true;
  }
  while (!pending_.empty() && pending_.begin()->first <= last_notified_ + 1) {
    auto next = pending_.extract(pending_.begin());
    turn.unlock();
    deliver(next.key(), next.mapped());
    turn.lock();
    last_notified_ = std::max(last_notified_, next.key());
  }
  delivering_ = false;
}

void ListenerRegistry::deliver(std::uint64_t csn, std::span<const Oid> oids) {
  if (shared_->none.load(std::memory_order_acquire)) return;
  std::shared_ptr<const EntryList> entries;
  {
    std::lock_guard lk(shared_->mu);
    entries = shared_->entries;
  }
  for (const auto& entry : *entries) {
    std::lock_guard lk(entry->mu);
    if (!entry->active) continue;
    try {
      entry->fn(csn, oids);
    } catch (...) {
      // The commit is durable whatever a listener does; a failing listener cannot undo it.
    }
  }
}

}  // namespace cairn
