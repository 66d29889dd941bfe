// ChangeFeed (change_feed.h).
#include "txn/change_feed.h"

#include <algorithm>

namespace cairn::detail {

ChangeFeed::ChangeFeed(Store& store, std::size_t capacity) : store_(store), capacity_(capacity) {
  // Subscribe first, then read the CSN: every commit after that CSN is delivered to the
  // listener (a remote store's pushes start no later than its subscribe() returns).
  subscription_ = store.subscribe(
      [this](std::uint64_t csn, std::span<const Oid> oids) { on_commit(csn, oids); });
  std::uint64_t now = store.load({}).csn;
  std::lock_guard lock(mu_);
  known_after_ = now;
  latest_ = std::max(latest_, now);
}

void ChangeFeed::on_commit(std::uint64_t csn, std::span<const Oid> oids) {
  std::lock_guard lock(mu_);
  if (csn <= latest_) return;  // already reflected in the starting CSN
  if (csn > latest_ + 1) {
    // A gap: CSNs count commits one by one, so commits were missed (a reconnect whose catch-up
    // merged them, or one that could not list them all). Forget the history before this one:
    // questions about it go to the store, which knows whether its own history is complete.
    log_.clear();
    known_after_ = csn - 1;
  }
  latest_ = csn;
  if (oids.empty()) {
    // Commits up to csn changed what the store can no longer say (store.h): questions about
    // them go to the store, whose answer is incomplete.
    log_.clear();
    known_after_ = csn;
    return;
  }
  log_.emplace_back(csn, std::vector<Oid>(oids.begin(), oids.end()));
  while (log_.size() > capacity_) {
    known_after_ = log_.front().first;
    log_.pop_front();
  }
}

void ChangeFeed::note_own_commit(std::uint64_t csn) const {
  std::lock_guard lock(mu_);
  own_ = std::max(own_, csn);
}

std::optional<Changes> ChangeFeed::changes_since(std::uint64_t csn, std::uint64_t at_least) const {
  // Cut off from the commits of others: what the feed holds may be all there is only because
  // the rest has not reached it.
  if (!store_.hears_commits()) return std::nullopt;
  std::lock_guard lock(mu_);
  if (csn < known_after_ || latest_ < std::max(at_least, own_)) return std::nullopt;
  Changes out;
  out.csn = latest_;
  auto first = std::upper_bound(log_.begin(), log_.end(), csn,
                                [](std::uint64_t c, const auto& entry) { return c < entry.first; });
  for (auto it = first; it != log_.end(); ++it)
    out.oids.insert(out.oids.end(), it->second.begin(), it->second.end());
  std::sort(out.oids.begin(), out.oids.end());
  out.oids.erase(std::unique(out.oids.begin(), out.oids.end()), out.oids.end());
  return out;
}

std::uint64_t ChangeFeed::latest() const {
  std::lock_guard lock(mu_);
  return latest_;
}

}  // namespace cairn::detail
